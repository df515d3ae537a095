//! Windows of several days, derived quantities, and the dry run.

use crate::support::*;
use usage_sync_emulators::Fault;

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;

/// Three whole days ending yesterday, with 10, 20 and 30 units.
fn three_days() -> (Providers, i64, i64) {
    let (_, end) = yesterday();
    let start = end - 3 * DAY;
    let p = Providers::start(vec![
        usage("acme", "api-calls", start + 100, 10.0),
        usage("acme", "api-calls", start + DAY + 100, 20.0),
        usage("acme", "api-calls", start + 2 * DAY + 100, 30.0),
    ]);
    (p, start, end)
}

#[test]
fn a_backfill_records_one_event_per_day() {
    let (p, start, end) = three_days();
    let window = window_args(start, end);
    let out = p.run(&with_inputs(&window)).expect(0).json();
    let events = out["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    // One Amberflo query for the whole window.
    assert_eq!(p.amberflo_requests().len(), 1);
    let recorded = p.stripe.events();
    assert_eq!(recorded.len(), 3);
    for (day, (event, value)) in events.iter().zip(["10", "20", "30"]).enumerate() {
        let day_start = start + day as i64 * DAY;
        assert_eq!(event["usageQuantity"], value);
        assert_eq!(event["startTime"], day_start);
        assert_eq!(event["timestamp"], day_start + DAY - 1);
        assert_eq!(
            recorded[day].identifier,
            event["meterEventId"].as_str().unwrap()
        );
        assert_eq!(recorded[day].payload["value"], value);
        assert_eq!(recorded[day].timestamp, day_start + DAY - 1);
    }
    // Top-level per-event fields appear only for a single event.
    assert!(out.get("meterEventId").is_none());

    let again = p.run(&with_inputs(&window)).expect(0).json();
    assert!(
        again["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["alreadyRecorded"] == true)
    );
    assert_eq!(p.stripe.events().len(), 3);
}

#[test]
fn hourly_intervals_cut_a_day_into_hours() {
    let (_, end) = yesterday();
    let start = end - DAY;
    let p = Providers::start(vec![
        usage("acme", "api-calls", start + 60, 1.0),
        usage("acme", "api-calls", start + 3600 + 60, 2.0),
    ]);
    let mut args = window_args(start, start + 2 * 3600).to_vec();
    args.extend(["--interval".into(), "hour".into()]);
    let out = p.run(&with_inputs(&args)).expect(0).json();
    let values: Vec<&str> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["usageQuantity"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["1", "2"]);
    let query: serde_json::Value = serde_json::from_slice(&p.amberflo_requests()[0].body).unwrap();
    assert_eq!(query["timeGroupingInterval"], "HOUR");
}

#[test]
fn days_older_than_35_days_are_refused_before_anything_is_sent() {
    let (p, _, end) = three_days();
    let run = p.run(&with_inputs(&window_args(end - 37 * DAY, end)));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message().contains("ends more than 35 days ago"),
        "{}",
        run.error_message()
    );
    assert!(
        run.error_message().contains("start at"),
        "{}",
        run.error_message()
    );
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn a_failed_day_stops_the_backfill_and_says_what_was_recorded() {
    let (p, start, end) = three_days();
    // The first day goes through; the second is refused.
    p.stripe
        .push_faults([Fault::Delay(std::time::Duration::ZERO), Fault::Status(402)]);
    let window = window_args(start, end);
    let run = p.run(&with_inputs(&window));
    run.expect(PROVIDER);
    let error = &run.json()["error"];
    assert_eq!(error["startTime"], start + DAY);
    assert_eq!(error["delivery"], "rejected");
    assert_eq!(error["recorded"].as_array().unwrap().len(), 1);
    assert_eq!(error["recorded"][0]["usageQuantity"], "10");
    assert!(
        run.error_message()
            .contains("1 earlier interval(s) were recorded and later ones not sent"),
        "{}",
        run.error_message()
    );
    assert_eq!(p.stripe_writes().len(), 2, "the third day was not sent");

    // Running the same window again finishes the job, billing nothing twice.
    let out = p.run(&with_inputs(&window)).expect(0).json();
    let already: Vec<bool> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alreadyRecorded"].as_bool().unwrap())
        .collect();
    assert_eq!(already, [true, false, false]);
    let values: Vec<String> = p
        .stripe
        .events()
        .iter()
        .map(|e| e.payload["value"].clone())
        .collect();
    assert_eq!(values, ["10", "20", "30"]);
}

#[test]
fn one_quantity_cannot_cover_several_days() {
    let (p, start, end) = three_days();
    let mut args = window_args(start, end).to_vec();
    args.extend(["--usage-quantity".into(), "5".into()]);
    let run = p.run(&with_inputs(&args));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("one value but the window makes 3 events")
    );
    assert!(p.amberflo_requests().is_empty());
}

#[test]
fn fractional_totals_are_rounded_only_when_asked() {
    for (rule, expected) in [("floor", "12"), ("ceil", "13"), ("nearest", "13")] {
        let (start, _) = yesterday();
        let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 12.5)]);
        let out = p.run(&with_inputs(&["--round", rule])).expect(0).json();
        assert_eq!(out["usageQuantity"], expected);
        assert_eq!(out["amberfloTotal"], "12.5");
        assert_eq!(p.stripe.events()[0].payload["value"], expected);
    }
}

#[test]
fn reconcile_refuses_a_quantity_that_differs_from_amberflo() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 7.0)]);
    let run = p.run(&with_inputs(&["--usage-quantity", "12", "--reconcile"]));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("`usageQuantity` 12 differs from the Amberflo total 7"),
        "{}",
        run.error_message()
    );
    assert_eq!(p.amberflo_requests().len(), 1);
    assert!(p.stripe_writes().is_empty());

    let out = p
        .run(&with_inputs(&["--usage-quantity", "7", "--reconcile"]))
        .expect(0)
        .json();
    assert_eq!(out["usageQuantity"], "7");
}

#[test]
fn a_dry_run_queries_amberflo_and_sends_nothing_to_stripe() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 42.0)]);
    let run = p.run(&with_inputs(&["--dry-run"]));
    let out = run.expect(0).json();
    assert_eq!(out["dryRun"], true);
    assert_eq!(out["events"], serde_json::json!([]));
    assert_eq!(p.amberflo_requests().len(), 1);
    assert!(p.stripe_writes().is_empty());
    let request = &out["stripeRequests"][0];
    assert_eq!(request["method"], "POST");
    assert_eq!(
        request["url"],
        format!("{}/v1/billing/meter_events", p.stripe.url())
    );
    assert_eq!(request["headers"]["Authorization"], "Bearer [redacted]");
    assert_eq!(
        request["headers"]["Content-Type"],
        "application/x-www-form-urlencoded"
    );
    let body = request["body"].as_str().unwrap();
    assert!(body.starts_with("event_name=api_calls&payload[stripe_customer_id]=cus_Acme&payload[value]=42&identifier=usync-"), "{body}");
    assert!(body.ends_with(&format!("&timestamp={}", end - 1)), "{body}");
    assert_eq!(request["headers"]["Content-Length"], body.len().to_string());
    assert!(
        run.stderr
            .contains("1 Stripe write(s) shown on stdout, nothing written")
    );

    // Sending for real puts exactly those bytes on the wire.
    p.run(&INPUTS).expect(0);
    assert_eq!(p.stripe_writes()[0].body_text(), body);
}
