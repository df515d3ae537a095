//! The HTTP entry point, `wasi:http/incoming-handler` (the `wasi:http/proxy`
//! world that `wasmtime serve`, Spin, wasmCloud and `usage-sync serve` run):
//! `POST /run` with the inputs JSON answers with the outputs JSON that
//! `usage-sync run` prints, or `{"error": ...}` with 400 (bad input, nothing
//! sent) or 502 (a provider step failed).
//!
//! Only callers presenting `Authorization: Bearer <token>` run anything: the
//! token comes from the platform's variable `usage_sync_serve_token` or from
//! `USAGE_SYNC_SERVE_TOKEN`; with none configured every request gets 500 and
//! nothing runs. A host that checked the token itself (`usage-sync serve`)
//! says so with `USAGE_SYNC_SERVE_AUTH=host` and keeps the token to itself.
//!
//! The provider URLs come from the component's environment (`AMBERFLO_BASE_URL`,
//! `STRIPE_BASE_URL`, as for the `usage-sync` command; production by default),
//! never from the request: a caller must not be able to send the keys elsewhere.

use crate::prelude::*;

use crate::credentials::{self, Caller};
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Inputs, Interval, Options, Rounding,
};
use crate::workflow;
use usage_sync_report::json::Out;
use usage_sync_report::keys::{self, SERVE_TOKEN_ENV};
use usage_sync_report::{self as report, Failure, RunRequest, Scalar, defaults, render_outputs};
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// Larger request bodies are refused: an inputs object is a few hundred bytes.
const MAX_BODY: usize = 64 << 10;

pub struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = respond(request);
        send(out, status, &body);
    }
}

fn respond(request: IncomingRequest) -> (u16, String) {
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    if path != "/run" {
        return (404, error("not-found", "POST /run with the inputs JSON"));
    }
    if !matches!(request.method(), Method::Post) {
        return (
            405,
            error("method-not-allowed", "POST /run with the inputs JSON"),
        );
    }
    if let Err(refused) = authorize(&request) {
        return refused;
    }
    let body = match read_body(request) {
        Ok(body) => body,
        Err(message) => return (400, bad_input(message)),
    };
    let run = match RunRequest::parse(&body) {
        Ok(run) => run,
        Err(e) => {
            return (
                400,
                bad_input(format!("the body is not a valid inputs object: {e}")),
            );
        }
    };
    let options = match options(&run) {
        Ok(options) => options,
        Err(message) => return (400, bad_input(message)),
    };
    let inputs = Inputs {
        customer_id: run.customer_id.unwrap_or_default(),
        meter_api_name: run.meter_api_name.unwrap_or_default(),
        stripe_customer: run.stripe_customer.unwrap_or_default(),
        stripe_event_name: run.stripe_event_name.unwrap_or_default(),
        usage_quantity: run.usage_quantity.as_ref().map(Scalar::text),
        start_time: run.start_time.as_ref().map(Scalar::text),
        end_time: run.end_time.as_ref().map(Scalar::text),
    };
    let endpoints = Endpoints {
        amberflo_url: env_or("AMBERFLO_BASE_URL", defaults::AMBERFLO_URL),
        stripe_url: env_or("STRIPE_BASE_URL", defaults::STRIPE_URL),
    };
    match workflow::run(&endpoints, options, inputs, &[], None) {
        Ok(outputs) => (200, render_outputs(&outputs.into())),
        Err(error) => {
            let failure = Failure::from(report::WorkflowError::from(error));
            (failure.http_status(), failure.render())
        }
    }
}

// The report's mirror types, moved field by field (as the host moves them).
mod wit {
    pub use crate::exports::usage_sync::workflow::workflow::{
        Delivery, Interval, LedgerMark, Meter, MeterEvent, Outputs, PlannedRequest, Step,
        StepFailure, StripeRead, Unbilled, Verification, WorkflowError,
    };
}
usage_sync_report::mirror_from!(wit);

/// Only a caller presenting the configured token runs anything; without a
/// token configured, nobody does (an open endpoint would bill for anyone).
fn authorize(request: &IncomingRequest) -> Result<(), (u16, String)> {
    let token = match credentials::caller() {
        Caller::CheckedByHost => return Ok(()),
        Caller::Token(token) => token,
        Caller::NotConfigured => {
            let variable = if cfg!(any(feature = "spin", feature = "wasmcloud")) {
                " (or the variable usage_sync_serve_token)"
            } else {
                ""
            };
            return Err((
                500,
                error(
                    "not-configured",
                    &format!(
                        "no token is configured for POST /run: set {SERVE_TOKEN_ENV}{variable} where the component runs; nothing was run"
                    ),
                ),
            ));
        }
    };
    let presented = request.headers().get("authorization");
    if keys::bearer_matches(presented.first().map(Vec::as_slice), &token) {
        Ok(())
    } else {
        Err((
            401,
            error(
                "unauthorized",
                "POST /run needs the header `Authorization: Bearer <token>` with the configured token; nothing was run",
            ),
        ))
    }
}

/// The options, with `usage-sync run`'s defaults.
fn options(run: &RunRequest) -> Result<Options, String> {
    Ok(Options {
        max_retries: run.max_retries.unwrap_or(defaults::MAX_RETRIES),
        retry_budget_ms: run.retry_budget_ms.unwrap_or(defaults::RETRY_BUDGET_MS),
        rounding: run.rounding()?.map(|r| match r {
            report::Rounding::Floor => Rounding::Floor,
            report::Rounding::Ceil => Rounding::Ceil,
            report::Rounding::Nearest => Rounding::Nearest,
        }),
        reconcile: run.reconcile.unwrap_or(false),
        dry_run: run.dry_run.unwrap_or(false),
        interval: match run.interval()? {
            report::Interval::Day => Interval::Day,
            report::Interval::Hour => Interval::Hour,
            report::Interval::Window => Interval::Window,
        },
        scale: run.scale.as_ref().map(Scalar::text),
        true_up: run.true_up.unwrap_or(false),
        allow_decrease: run.allow_decrease.unwrap_or(false),
        settle_hours: run.settle_hours.unwrap_or(defaults::SETTLE_HOURS),
        // Only `usage-sync serve` (which says so in this variable) strips the
        // attempt header; on any other host the requests go as they are.
        attempt_header: crate::ambient::var(report::keys::SERVE_AUTH_ENV)
            .is_some_and(|v| v == report::keys::SERVE_AUTH_BY_HOST),
        carry_late_usage: run.carry_late_usage()?,
    })
}

fn env_or(name: &str, default: &str) -> String {
    crate::ambient::var(name)
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn bad_input(message: String) -> String {
    Failure::BadInput(message).render()
}

fn error(kind: &str, message: &str) -> String {
    let error = Out::object().with("kind", kind).with("message", message);
    Out::object().with("error", error).pretty()
}

fn read_body(request: IncomingRequest) -> Result<Vec<u8>, String> {
    let incoming = request
        .consume()
        .map_err(|()| "the request has no body".to_string())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the request body cannot be read".to_string())?;
        loop {
            match stream.blocking_read(MAX_BODY as u64) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading the request body: {}", e.to_debug_string()));
                }
            }
            if body.len() > MAX_BODY {
                return Err(format!("the request body is over {MAX_BODY} bytes"));
            }
        }
    }
    Ok(body)
}

fn send(out: ResponseOutparam, status: u16, body: &str) {
    let json = ("content-type".to_string(), b"application/json".to_vec());
    let length = (
        "content-length".to_string(),
        body.len().to_string().into_bytes(),
    );
    // A host that forbids a header gets the answer without it, never a panic.
    let headers = Fields::from_list(&[json.clone(), length])
        .or_else(|_| Fields::from_list(&[json]))
        .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
