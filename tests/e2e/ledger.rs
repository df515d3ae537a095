//! Exactly once at any age: Stripe is the ledger. Its identifier dedupe and
//! idempotency keys last only 24 hours (the emulator forgets them then, and
//! tests move its clock), so a rerun of an older interval reads the meter's
//! summary before writing. Each case asserts what Stripe bills in the end.

use crate::support::*;
use serde_json::Value;
use usage_sync_emulators::{Fault, Formula, MeterSpec};

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;
const DRIFT: i32 = 5;

/// 10, 20 and 30 units on the days 5, 4 and 3 days back, and Stripe with `meters`.
fn old_days(meters: Vec<MeterSpec>) -> Providers {
    let day = |n: i64| days_ago(n).0;
    Providers::with_meters(
        vec![
            usage("acme", "api-calls", day(5) + 100, 10.0),
            usage("acme", "api-calls", day(4) + 100, 20.0),
            usage("acme", "api-calls", day(3) + 100, 30.0),
        ],
        meters,
    )
}

/// The three days 5 to 3 days back, as window flags.
fn three_old_days() -> (i64, i64) {
    (days_ago(5).0, days_ago(3).1)
}

fn window((start, end): (i64, i64)) -> Vec<String> {
    with_inputs(&window_args(start, end))
}

/// Runs `days` as it would have run 25 hours ago (see [`as_25_hours_ago`]).
fn run_a_day_ago(p: &Providers, days: (i64, i64)) -> Run {
    as_25_hours_ago(&p.stripe, days, || p.run(&window(days)))
}

fn events(out: &Value) -> Vec<Value> {
    out["events"].as_array().unwrap().clone()
}

#[test]
fn a_day_rerun_25_hours_later_is_not_billed_again() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    let day = days_ago(3);
    run_a_day_ago(&p, day).expect(0);
    assert_eq!(p.stripe_writes().len(), 1);

    let out = p.run(&window(day)).expect(0).json();
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(out["verifiedBy"], "summary");
    assert_eq!(out["stripeValue"], "30");
    assert_eq!(p.stripe_writes().len(), 1, "nothing written again");
    assert_eq!(p.stripe.events().len(), 1);
    assert_eq!(p.billed(day), 30.0);
}

#[test]
fn the_emulator_forgets_identifiers_after_24_hours() {
    // Without the summary read, this is what a rerun a day later would do:
    // Stripe takes the same identifier again and bills it twice.
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    let day = days_ago(3);
    run_a_day_ago(&p, day).expect(0);
    let body = p.stripe_writes()[0].body_text();
    let status = post_form(&p, &body);
    assert_eq!(status, 200, "a forgotten identifier is a new event");
    assert_eq!(p.billed(day), 60.0);
}

/// A raw POST of a meter event, as another client would send it.
fn post_form(p: &Providers, body: &str) -> u16 {
    use std::io::{Read, Write};
    let address = p.stripe.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /v1/billing/meter_events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        p.stripe_key,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_three_day_backfill_rerun_25_hours_later_stays_three_events() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    let days = three_old_days();
    run_a_day_ago(&p, days).expect(0);
    assert_eq!(p.stripe_writes().len(), 3);

    let out = p.run(&window(days)).expect(0).json();
    for event in events(&out) {
        assert_eq!(event["alreadyRecorded"], true, "{event}");
        assert_eq!(event["verifiedBy"], "summary", "{event}");
    }
    assert_eq!(p.stripe_writes().len(), 3);
    assert_eq!(p.stripe.events().len(), 3);
    for (n, billed) in [(5, 10.0), (4, 20.0), (3, 30.0)] {
        assert_eq!(p.billed(days_ago(n)), billed);
    }
    // One summaries call covers the backfill: the meter, then the summaries.
    let reads = p.stripe_reads();
    let summaries: Vec<&String> = reads
        .iter()
        .filter(|r| r.contains("/event_summaries"))
        .collect();
    assert_eq!(summaries.len(), 2, "one per run: {reads:#?}");
    // By hour: three days fit one page of 100 buckets, and an hour shows
    // how far each day reaches.
    assert!(
        summaries[1].contains(&format!(
            "customer=cus_Acme&start_time={}&end_time={}&value_grouping_window=hour",
            days.0, days.1
        )),
        "{}",
        summaries[1]
    );
}

#[test]
fn late_usage_is_drift_reported_with_both_values_and_never_written() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    run_a_day_ago(&p, three_old_days()).expect(0);
    // Amberflo learns of 5 more units on day 4, and day 2 is new.
    let (day4, day2) = (days_ago(4), days_ago(2));
    p.amberflo
        .ingest(usage("acme", "api-calls", day4.0 + 200, 5.0));
    p.amberflo
        .ingest(usage("acme", "api-calls", day2.0 + 200, 7.0));

    let run = p.run(&window((days_ago(5).0, day2.1)));
    let out = run.expect(DRIFT).json();
    let events = events(&out);
    assert_eq!(events.len(), 4);
    assert_eq!(events[1]["drift"], true);
    assert_eq!(events[1]["stripeValue"], "20");
    assert_eq!(events[1]["usageQuantity"], "25");
    assert_eq!(events[1]["alreadyRecorded"], false);
    for verified in [&events[0], &events[2]] {
        assert_eq!(verified["verifiedBy"], "summary");
        assert_eq!(verified["drift"], false, "{verified}");
    }
    // The other intervals still sync: day 2 is written.
    assert_eq!(events[3]["alreadyRecorded"], false);
    assert_eq!(p.stripe_writes().len(), 4);
    assert_eq!(p.billed(day4), 20.0, "drift is never written");
    assert_eq!(p.billed(day2), 7.0);
    assert!(
        run.stderr.contains(&format!(
            "DRIFT in 1 interval(s), nothing written for them: {}..{} Stripe holds 20 where Amberflo measured 25",
            day4.0, day4.1
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_summary_read_that_keeps_failing_writes_nothing() {
    for (name, fault) in [
        ("500", Fault::Status(500)),
        ("reset", Fault::RecordThenReset),
        ("429", Fault::TooManyRequests { retry_after: None }),
    ] {
        let p = old_days(vec![MeterSpec::sum("api_calls")]);
        // The meter and subscriptions reads go through; every summary read fails.
        p.stripe.push_summary_faults([fault; 3]);
        let run = p.run(&window(days_ago(3)));
        let error = run.expect(PROVIDER).json()["error"].clone();
        assert_eq!(error["step"], "read-summaries", "{name}: {error}");
        assert_eq!(error["delivery"], "not-sent", "{name}");
        assert_eq!(error["attempts"], 3, "{name}");
        assert!(
            run.error_message()
                .contains("nothing was written to Stripe"),
            "{name}: {}",
            run.error_message()
        );
        assert!(p.stripe_writes().is_empty(), "{name}: fail closed");
    }
}

#[test]
fn a_single_429_on_a_read_is_retried_then_the_write_goes_ahead() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    p.stripe.push_read_faults([
        Fault::Delay(std::time::Duration::ZERO),
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
    ]);
    let out = p.run(&window(days_ago(3))).expect(0).json();
    assert_eq!(out["stripeValue"], "0");
    assert_eq!(out["alreadyRecorded"], false);
    assert_eq!(p.billed(days_ago(3)), 30.0);
}

#[test]
fn a_rerun_a_minute_later_is_stopped_by_the_identifier() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    p.stripe.set_processing_lag(600);
    let day = days_ago(3);
    p.run(&window(day)).expect(0);
    p.stripe.shift_clock(60);
    // The summary does not show the event yet; the state directory knows it.
    let out = p.run(&window(day)).expect(0).json();
    assert_eq!(out["stripeValue"], "30");
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(p.stripe_writes().len(), 1, "nothing sent");
    // From another machine, the identifier refuses it.
    let out = p.run_elsewhere(&window(day)).expect(0).json();
    assert_eq!(out["stripeValue"], "0");
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(out["verifiedBy"], "identifier");
    assert_eq!(p.stripe.events().len(), 1);
    assert_eq!(p.billed(day), 30.0);
}

#[test]
fn events_carry_the_meters_own_payload_keys() {
    let (start, _) = yesterday();
    let meter = MeterSpec {
        customer_key: "org_id".into(),
        value_key: "units".into(),
        ..MeterSpec::sum("api_calls")
    };
    let p = Providers::with_meters(vec![usage("acme", "api-calls", start + 5, 42.0)], [meter]);
    let out = p.run(&INPUTS).expect(0).json();
    assert_eq!(out["meter"]["customerKey"], "org_id");
    assert_eq!(out["meter"]["valueKey"], "units");
    let body = p.stripe_writes()[0].body_text();
    assert!(
        body.starts_with("event_name=api_calls&payload[org_id]=cus_Acme&payload[units]=42&"),
        "{body}"
    );
    assert_eq!(p.billed(yesterday()), 42.0, "Stripe counts it");
}

#[test]
fn the_meter_is_found_on_the_second_page() {
    let (start, _) = yesterday();
    let mut meters = vec![MeterSpec::sum("api_calls")];
    // Created later, so listed first: ours is on page 2.
    meters.extend((0..150).map(|i| MeterSpec::sum(&format!("other_{i}"))));
    let p = Providers::with_meters(vec![usage("acme", "api-calls", start + 5, 42.0)], meters);
    p.run(&INPUTS).expect(0);
    let reads = p.stripe_reads();
    let lookups: Vec<&String> = reads
        .iter()
        .filter(|r| r.starts_with("GET /v1/billing/meters?"))
        .collect();
    assert_eq!(lookups.len(), 2, "{reads:#?}");
    assert_eq!(lookups[0], "GET /v1/billing/meters?limit=100");
    assert!(
        lookups[1].starts_with("GET /v1/billing/meters?limit=100&starting_after=mtr_"),
        "{}",
        lookups[1]
    );
    assert_eq!(p.billed(yesterday()), 42.0);
}

#[test]
fn an_unusable_meter_is_refused_before_anything_is_written() {
    let count = MeterSpec {
        formula: Formula::Count,
        ..MeterSpec::sum("api_calls")
    };
    let hourly = MeterSpec {
        event_time_window: Some(3600),
        ..MeterSpec::sum("api_calls")
    };
    let inactive = MeterSpec {
        active: false,
        ..MeterSpec::sum("api_calls")
    };
    for (meters, expected) in [
        (
            vec![MeterSpec::sum("other")],
            "no active Stripe meter has the event name `api_calls`",
        ),
        (vec![count], "counts events (formula `count`)"),
        (
            vec![hourly],
            "is pre-aggregated per hour (event_time_window), but --interval is day",
        ),
        (vec![inactive], "is inactive"),
    ] {
        let (start, _) = yesterday();
        let p = Providers::with_meters(vec![usage("acme", "api-calls", start + 5, 42.0)], meters);
        let run = p.run(&INPUTS);
        run.expect(BAD_INPUT);
        let message = run.error_message();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("nothing was written"), "{message}");
        if !expected.starts_with("no active") {
            assert!(message.contains("the Stripe meter mtr_"), "{message}");
        }
        assert!(p.stripe_writes().is_empty());
        assert!(p.amberflo_requests().is_empty(), "refused before step 1");
    }
}

#[test]
fn a_pre_aggregated_meter_rerun_25_hours_later_bills_the_same() {
    let daily = MeterSpec {
        event_time_window: Some(DAY),
        ..MeterSpec::sum("api_calls")
    };
    let p = old_days(vec![daily]);
    let days = three_old_days();
    let first = run_a_day_ago(&p, days).expect(0).json();
    assert_eq!(first["meter"]["preAggregated"], "day");
    let out = p.run(&window(days)).expect(0).json();
    assert!(
        events(&out)
            .iter()
            .all(|e| e["verifiedBy"] == "summary" && e["alreadyRecorded"] == true)
    );
    for (n, billed) in [(5, 10.0), (4, 20.0), (3, 30.0)] {
        assert_eq!(p.billed(days_ago(n)), billed);
    }
    assert_eq!(p.stripe_writes().len(), 3);
}

#[test]
fn a_dry_run_shows_the_reads_and_their_answers() {
    let p = old_days(vec![MeterSpec::sum("api_calls")]);
    run_a_day_ago(&p, days_ago(5)).expect(0);
    let mut args = window(three_old_days());
    args.push("--dry-run".into());
    let run = p.run(&args);
    let out = run.expect(0).json();
    let reads = out["stripeReads"].as_array().unwrap();
    // The meter, the customer's subscriptions, the summaries.
    assert_eq!(reads.len(), 3, "{reads:#?}");
    assert!(
        reads[1]["url"]
            .as_str()
            .unwrap()
            .contains("/v1/subscriptions?customer=cus_Acme&status=all"),
        "{}",
        reads[1]
    );
    assert_eq!(
        reads[1]["answer"],
        "no subscription item on mtr_test00000000000000000000"
    );
    let reads = &[reads[0].clone(), reads[2].clone()];
    assert_eq!(reads[0]["method"], "GET");
    assert!(
        reads[0]["answer"]
            .as_str()
            .unwrap()
            .contains("is the active meter of `api_calls`: formula sum"),
        "{}",
        reads[0]
    );
    assert!(
        reads[1]["url"]
            .as_str()
            .unwrap()
            .contains("/event_summaries?")
    );
    let day5 = days_ago(5).0;
    assert!(
        reads[1]["answer"]
            .as_str()
            .unwrap()
            .contains(&format!("{}: 10", usage_sync_time(day5 + DAY - 3600))),
        "{}",
        reads[1]
    );
    // Day 5 is already held; days 4 and 3 would be written.
    assert_eq!(events(&out).len(), 1);
    assert_eq!(out["events"][0]["verifiedBy"], "summary");
    assert_eq!(out["stripeRequests"].as_array().unwrap().len(), 2);
    assert_eq!(p.stripe_writes().len(), 1, "the dry run wrote nothing");
    assert!(
        run.stderr
            .contains("dry run: 3 Stripe read(s) made, 2 Stripe write(s) shown on stdout"),
        "{}",
        run.stderr
    );
}

/// RFC 3339 for a Unix time, as usage-sync prints it.
fn usage_sync_time(t: i64) -> String {
    let days = t.div_euclid(DAY);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = t.rem_euclid(DAY);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
