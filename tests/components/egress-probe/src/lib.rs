//! A hostile stand-in for the workflow: it exports the same world, but `run`
//! does whatever the test asks and reports what happened in `usage-result`.
//!
//! `meter-api-name` is the mode, `customer-id` the target:
//! - `get`: a plain GET of the URL; `headers` is the same (it reports every
//!   response header and the body it was given);
//! - `own-authorization` / `own-api-key`: a GET that sets the credential header itself;
//! - `exfiltrate`: a GET of the URL, then a POST of everything it saw to the URL
//!   in `stripe-customer`;
//! - `many`: 200 GETs of the URL at once;
//! - `raw`: one request built field by field: scheme `stripe-event-name`,
//!   authority `customer-id` (`<none>` leaves it unset), path `stripe-customer`;
//! - `call`: one request with method `stripe-event-name` to the URL in
//!   `customer-id`, its path and query sent exactly as written, with the
//!   form body in `stripe-customer` (a refund, a payout, an ingest...);
//! - `spin`: loops forever; `allocate`: asks for far more memory than any cap;
//!   `panic`: panics;
//! - `ambient`: tries environment variables, arguments, files and a raw socket
//!   to the `host:port` target.

#![allow(missing_docs)] // a test component, not part of the product

wit_bindgen::generate!({
    path: "../../../wit",
    world: "usage-sync",
});

use exports::usage_sync::workflow::workflow::{
    CustomerUsage, Delivery, Endpoints, Guest, Inputs, InvoicePage, InvoiceReconciliation,
    LedgerMark, Listing, Meter, Options, Outputs, Reconciliation, Source, Step, StepFailure,
    SubscriptionPage, UsageQuery, WorkflowError,
};
use serde_json::{Value, json};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

#[allow(dead_code)]
struct Probe;

impl Guest for Probe {
    fn run(_: Endpoints, _: Options, inputs: Inputs) -> Result<Outputs, WorkflowError> {
        let target = inputs.customer_id.as_str();
        let report = match inputs.meter_api_name.as_str() {
            "spin" => loop {
                std::hint::black_box(0);
            },
            "allocate" => {
                let huge: Vec<u8> = vec![1; 1 << 30];
                std::hint::black_box(&huge);
                Value::Null
            }
            "panic" => panic!("the probe panics on purpose"),
            "ambient" => ambient(target),
            "many" => many(target, 200),
            "raw" => raw(&inputs.stripe_event_name, target, &inputs.stripe_customer),
            "call" => call(&inputs.stripe_event_name, target, &inputs.stripe_customer),
            "exfiltrate" => {
                let seen = get(target, None)?;
                post(&inputs.stripe_customer, seen.to_string())?
            }
            "own-authorization" => get(target, Some(("Authorization", "Bearer sk_guest_forged")))?,
            "own-api-key" => get(target, Some(("X-API-KEY", "guest-forged")))?,
            _ => get(target, None)?,
        };
        Ok(outputs(report.to_string()))
    }

    // The batch steps behave as `run` does, so `sync` can be attacked the same way.
    fn query_usage(
        endpoints: Endpoints,
        options: Options,
        query: UsageQuery,
    ) -> Result<Vec<CustomerUsage>, WorkflowError> {
        let inputs = Inputs {
            customer_id: query.customer_ids.first().cloned().unwrap_or_default(),
            meter_api_name: query.meter_api_name,
            stripe_customer: String::new(),
            stripe_event_name: String::new(),
            usage_quantity: None,
            start_time: None,
            end_time: None,
        };
        let report = Probe::run(endpoints, options, inputs)?.usage_result;
        Ok(query
            .customer_ids
            .into_iter()
            .map(|customer_id| CustomerUsage {
                customer_id,
                usage_result: report.clone(),
                points: Vec::new(),
            })
            .collect())
    }

    // Any meter will do: the probe attacks, it does not bill.
    fn find_meter(_: Endpoints, _: Options, event_name: String) -> Result<Meter, WorkflowError> {
        Ok(meter(event_name))
    }

    // An empty, complete listing: every row then reads (and attacks) alone.
    fn list_subscriptions(
        _: Endpoints,
        _: Options,
        _: Vec<String>,
        _: Option<String>,
    ) -> Result<SubscriptionPage, WorkflowError> {
        Ok(SubscriptionPage {
            subscriptions: Vec::new(),
            next: None,
        })
    }

    // An empty, complete listing of invoices, likewise.
    fn list_invoices(
        _: Endpoints,
        _: Options,
        _: i64,
        _: Option<String>,
    ) -> Result<InvoicePage, WorkflowError> {
        Ok(InvoicePage {
            invoices: Vec::new(),
            next: None,
        })
    }

    fn record_usage(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        _: Option<Vec<Source>>,
        _: Option<Meter>,
        _: Vec<LedgerMark>,
        _: Option<Listing>,
    ) -> Result<Outputs, WorkflowError> {
        Probe::run(endpoints, options, inputs)
    }

    fn reconcile_invoices(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        _: CustomerUsage,
        _: Meter,
        _: Option<Listing>,
    ) -> Result<InvoiceReconciliation, WorkflowError> {
        Probe::run(endpoints, options, inputs)?;
        Ok(InvoiceReconciliation {
            checks: Vec::new(),
            reads: Vec::new(),
        })
    }

    // A reconciliation is read-only by contract; the probe shows the host
    // holds it to the same policy whatever the export.
    fn reconcile(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        _: CustomerUsage,
        meter: Meter,
        _: String,
    ) -> Result<Reconciliation, WorkflowError> {
        Probe::run(endpoints, options, inputs)?;
        Ok(Reconciliation {
            meter,
            cells: Vec::new(),
            reads: Vec::new(),
        })
    }
}

fn meter(event_name: String) -> Meter {
    Meter {
        id: "mtr_probe".into(),
        event_name,
        customer_key: "stripe_customer_id".into(),
        value_key: "value".into(),
        pre_aggregated: None,
    }
}

fn failed(message: String) -> WorkflowError {
    WorkflowError::StepFailed(StepFailure {
        step: Step::QueryUsage,
        status: None,
        message,
        request_id: None,
        delivery: Delivery::NotSent,
        attempts: 1,
        window_start: 0,
        window_end: 0,
        recorded: Vec::new(),
    })
}

fn report(response: waki::Response) -> Value {
    let status = response.status_code();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = String::from_utf8_lossy(&response.body().unwrap_or_default()).into_owned();
    json!({ "status": status, "headers": headers, "body": body })
}

fn get(url: &str, header: Option<(&'static str, &'static str)>) -> Result<Value, WorkflowError> {
    let mut request = waki::Client::new().get(url);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .map_err(|e| failed(format!("probe request failed: {e}")))?;
    Ok(report(response))
}

fn post(url: &str, body: String) -> Result<Value, WorkflowError> {
    // Chunked on purpose: with a Content-Length, waki's send races the host
    // closing a fully read body stream (see plugin/src/http.rs).
    let response = waki::Client::new()
        .post(url)
        .body(body)
        .send()
        .map_err(|e| failed(format!("probe request failed: {e}")))?;
    Ok(report(response))
}

/// Starts `n` requests before waiting for any.
fn many(url: &str, n: usize) -> Value {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let pending: Vec<_> = (0..n)
        .map(|_| {
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&if scheme == "https" {
                Scheme::Https
            } else {
                Scheme::Http
            }));
            let _ = request.set_authority(Some(authority));
            let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
            outgoing_handler::handle(request, None)
        })
        .collect();
    let (mut answered, mut failed) = (0, 0);
    for future in pending {
        match future {
            Ok(future) => {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(_))) => answered += 1,
                    _ => failed += 1,
                }
            }
            Err(_) => failed += 1,
        }
    }
    json!({ "answered": answered, "failed": failed })
}

/// One request built field by field, as a hostile guest may.
fn raw(scheme: &str, authority: &str, path: &str) -> Value {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let set_scheme = request.set_scheme(Some(&scheme)).is_ok();
    let set_authority = match authority {
        "<none>" => request.set_authority(None).is_ok(),
        a => request.set_authority(Some(a)).is_ok(),
    };
    let set_path = request.set_path_with_query(Some(path)).is_ok();
    let body = request.body().ok();
    let result = match outgoing_handler::handle(request, None) {
        Err(code) => format!("refused at handle: {code:?}"),
        Ok(future) => {
            if let Some(body) = body {
                let _ = OutgoingBody::finish(body, None);
            }
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("answered {}", response.status()),
                Some(Ok(Err(code))) => format!("failed: {code:?}"),
                _ => "no answer".to_string(),
            }
        }
    };
    json!({
        "setScheme": set_scheme,
        "setAuthority": set_authority,
        "setPath": set_path,
        "result": result,
    })
}

/// One request as a hostile guest would send it: any method, the path exactly
/// as written (no URL parser normalises it on the way out), a form body.
fn call(method: &str, url: &str, body: &str) -> Value {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/x-www-form-urlencoded");
    let request = OutgoingRequest::new(headers);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        other => Method::Other(other.to_string()),
    };
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let set_path = request.set_path_with_query(Some(path)).is_ok();
    let outgoing = request.body().ok();
    let result = match outgoing_handler::handle(request, None) {
        Err(code) => format!("refused at handle: {code:?}"),
        Ok(future) => {
            if let Some(outgoing) = outgoing {
                if let Ok(stream) = outgoing.write() {
                    let _ = stream.blocking_write_and_flush(body.as_bytes());
                }
                let _ = OutgoingBody::finish(outgoing, None);
            }
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("answered {}", response.status()),
                Some(Ok(Err(code))) => format!("failed: {code:?}"),
                _ => "no answer".to_string(),
            }
        }
    };
    json!({ "setPath": set_path, "result": result })
}

/// What ambient authority the guest can find.
fn ambient(address: &str) -> Value {
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "allowed".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    json!({
        "env": std::env::vars().count(),
        "args": std::env::args().count(),
        "files": outcome(std::fs::read_dir("/").map(drop)),
        "cwd": outcome(std::fs::read("secrets.txt").map(drop)),
        "socket": outcome(std::net::TcpStream::connect(address).map(drop)),
    })
}

fn outputs(usage_result: String) -> Outputs {
    Outputs {
        usage_result,
        event_name: String::new(),
        window_start: 0,
        window_end: 0,
        measured_total: String::new(),
        billed_total: String::new(),
        meter: meter(String::new()),
        events: Vec::new(),
        planned: Vec::new(),
        reads: Vec::new(),
        sources: Vec::new(),
        marks: Vec::new(),
        unbilled: Vec::new(),
        period_ends: Vec::new(),
        dry_run: false,
    }
}

#[cfg(target_arch = "wasm32")]
export!(Probe);
