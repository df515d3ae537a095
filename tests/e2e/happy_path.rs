//! The workflow working: the bytes on the wire and the outputs.

use crate::support::*;
use serde_json::json;

fn is_uuid_v4(text: &str) -> bool {
    let b = text.as_bytes();
    text.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && text.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit())
}

#[test]
fn records_the_amberflo_total_on_the_stripe_meter() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![
        usage("acme", "api-calls", start + 60, 40.0),
        usage("acme", "api-calls", start + 3600, 2.0),
        usage("globex", "api-calls", start + 60, 1000.0),
        usage("acme", "other-meter", start + 60, 1000.0),
        usage("acme", "api-calls", end + 60, 1000.0),
    ]);
    let run = p.run(&with_inputs(&window_args(start, end)));
    run.expect(0);

    // Step 1 on the wire.
    let amberflo = p.amberflo_requests();
    assert_eq!(amberflo.len(), 1);
    let q = &amberflo[0];
    assert_eq!((q.method.as_str(), q.target.as_str()), ("POST", "/usage"));
    assert_eq!(q.header("content-type"), Some("application/json"));
    assert_eq!(q.header("x-api-key"), Some(p.amberflo_key.as_str()));
    assert_eq!(q.header("authorization"), None);
    assert_eq!(
        q.header("transfer-encoding"),
        None,
        "bodies are not chunked"
    );
    // By hour: a day can then be cut where a billing period renews.
    let body = format!(
        r#"{{"meterApiName":"api-calls","aggregation":"SUM","timeGroupingInterval":"HOUR","timeRange":{{"startTimeInSeconds":{start},"endTimeInSeconds":{end}}},"filter":{{"customerId":["acme"]}}}}"#
    );
    assert_eq!(q.body_text(), body);
    assert_eq!(
        q.header("content-length"),
        Some(body.len().to_string().as_str())
    );

    // Step 2 on the wire.
    let stripe = p.stripe_writes();
    assert_eq!(stripe.len(), 1);
    let s = &stripe[0];
    assert_eq!(
        (s.method.as_str(), s.target.as_str()),
        ("POST", "/v1/billing/meter_events")
    );
    assert_eq!(
        s.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {}", p.stripe_key).as_str())
    );
    assert_eq!(s.header("x-api-key"), None);
    assert_eq!(s.header("transfer-encoding"), None);
    assert!(is_uuid_v4(s.header("idempotency-key").unwrap()), "{s:?}");
    let out = run.json();
    let identifier = out["meterEventId"].as_str().unwrap();
    assert!(
        identifier.starts_with(&format!("usync-{start}-{end}-")),
        "{identifier}"
    );
    assert!(identifier.len() <= 100);
    let form = format!(
        "event_name=api_calls&payload[stripe_customer_id]=cus_Acme&payload[value]=42&identifier={identifier}&timestamp={}",
        end - 1
    );
    assert_eq!(s.body_text(), form);
    assert_eq!(
        s.header("content-length"),
        Some(form.len().to_string().as_str())
    );

    // The outputs.
    // Amberflo's answer verbatim: the day by hour.
    let group = &out["usageResult"][0];
    assert_eq!(group["group"], json!(null));
    assert_eq!(group["groupValue"], 42.0);
    let values = group["values"].as_array().unwrap();
    assert_eq!(values.len(), 24);
    assert_eq!(values[0]["secondsSinceEpochUtc"], start);
    assert_eq!(values[23]["secondsSinceEpochUtc"], end - 3600);
    let sum: f64 = values.iter().map(|v| v["value"].as_f64().unwrap()).sum();
    assert_eq!(sum, 42.0);
    assert_eq!(out["eventName"], "api_calls");
    assert_eq!(out["usageQuantity"], "42");
    assert_eq!(out["amberfloTotal"], "42");
    assert_eq!(out["startTime"], start);
    assert_eq!(out["endTime"], end);
    assert_eq!(out["timestamp"], end - 1);
    assert_eq!(out["alreadyRecorded"], false);
    assert_eq!(out["attempts"], 1);
    assert_eq!(out["events"].as_array().unwrap().len(), 1);
    assert_eq!(out["events"][0]["meterEventId"], identifier);

    // What Stripe holds.
    let events = p.stripe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].identifier, identifier);
    assert_eq!(events[0].payload["value"], "42");
    assert_eq!(events[0].payload["stripe_customer_id"], "cus_Acme");
    assert_eq!(events[0].timestamp, end - 1);
    assert!(
        run.stderr
            .contains("recorded 1 event(s) on api_calls totalling 42"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_default_window_is_the_previous_utc_day() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 7.0)]);
    let out = p.run(&INPUTS).expect(0).json();
    assert_eq!(
        (out["startTime"].as_i64(), out["endTime"].as_i64()),
        (Some(start), Some(end))
    );
    assert_eq!(out["usageQuantity"], "7");
}

#[test]
fn inputs_come_from_a_file_and_flags_win() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 7.0)]);
    let dir = std::env::temp_dir().join(format!("usage-sync-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("inputs.json");
    std::fs::write(
        &file,
        json!({
            "customerId": "acme",
            "meterApiName": "api-calls",
            "stripeCustomer": "cus_FromFile",
            "stripeEventName": "api_calls",
            "usageQuantity": 5,
            "startTime": start,
            "endTime": end,
        })
        .to_string(),
    )
    .unwrap();
    let run = p.run(&["--inputs", file.to_str().unwrap(), "--usage-quantity", "12"]);
    let out = run.expect(0).json();
    // The given quantity is sent; Amberflo's total is still reported.
    assert_eq!(out["usageQuantity"], "12");
    assert_eq!(out["amberfloTotal"], "7");
    let events = p.stripe.events();
    assert_eq!(events[0].payload["value"], "12");
    assert_eq!(events[0].payload["stripe_customer_id"], "cus_FromFile");
}

#[test]
fn a_rerun_of_the_same_period_records_nothing_new() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 3.0)]);
    let window = window_args(start, end);
    let first = p.run(&with_inputs(&window));
    let second = p.run(&with_inputs(&window));
    let (first, second) = (first.expect(0).json(), second.expect(0).json());
    assert_eq!(first["alreadyRecorded"], false);
    assert_eq!(second["alreadyRecorded"], true);
    assert_eq!(second["meterEventId"], first["meterEventId"]);
    assert_eq!(p.stripe.events().len(), 1, "exactly one event");
    // The state directory knows the write Stripe's summary does not show yet.
    assert_eq!(p.stripe_writes().len(), 1, "the rerun sends nothing");

    // Without it (another machine), the identifier stops the write: the same
    // identifier both times; the idempotency key belongs to one run only.
    let third = p.run_elsewhere(&with_inputs(&window)).expect(0).json();
    assert_eq!(third["alreadyRecorded"], true);
    assert_eq!(third["verifiedBy"], "identifier");
    assert_eq!(p.stripe.events().len(), 1, "exactly one event");
    let requests = p.stripe_writes();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    assert_ne!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key")
    );
}

#[test]
fn the_demo_runs_with_nothing_configured() {
    let run = Run::exec(std::process::Command::new(BIN).arg("demo").env_clear());
    let out = run.expect(0).json();
    assert_eq!(out["usageQuantity"], "4450");
    assert_eq!(out["alreadyRecorded"], false);
    assert!(
        run.stderr.contains("alreadyRecorded = true"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("x-api-key: [redacted]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("authorization: [redacted]"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("sk_test_demo_"), "the demo key leaked");
    assert!(!run.stderr.contains("amb_demo_"), "the demo key leaked");
}
