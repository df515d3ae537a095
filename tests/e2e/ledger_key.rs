//! One ledger per Stripe customer and meter: whatever the interval shape, the
//! rows feeding a customer or the mapping's history, Stripe ends up billing
//! each unit Amberflo measured once, at any age. Each case was measured by a
//! red team against the forgetting emulator (exit 0, billed twice or lost);
//! each rerun here runs 25 hours later too, when Stripe's identifier memory
//! is gone.

use crate::support::*;
use serde_json::{Value, json};
use usage_sync_emulators::{Formula, MeterSpec};

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;
const DRIFT: i32 = 5;

/// One unit an hour for `acme` over the day `n` days back.
fn hourly(n: i64) -> Vec<usage_sync_emulators::UsageRecord> {
    let (start, _) = days_ago(n);
    (0..24)
        .map(|h| usage("acme", "api-calls", start + h * 3600 + 60, 1.0))
        .collect()
}

fn window_of((start, end): (i64, i64), interval: &str) -> Vec<String> {
    let mut args = with_inputs(&window_args(start, end));
    args.extend(["--interval".to_string(), interval.to_string()]);
    args
}

/// Runs as it would have run 25 hours ago (see [`as_25_hours_ago`]).
fn a_day_ago(p: &Providers, days: (i64, i64), run: impl FnOnce() -> Run) -> Run {
    as_25_hours_ago(&p.stripe, days, run)
}

fn written(out: &Value) -> Vec<Value> {
    out["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["alreadyRecorded"] == false && e["drift"] == false)
        .cloned()
        .collect()
}

#[test]
fn a_day_synced_by_day_then_by_hour_at_once_is_billed_once() {
    let p = Providers::start(hourly(1));
    let day = yesterday();
    p.run(&window_of(day, "day")).expect(0);
    assert_eq!(p.billed(day), 24.0);
    // Seconds later: Stripe's summary has not processed the day event yet,
    // and the hourly identifiers are new. The state directory's record of
    // the write is what keeps it from being billed again.
    let out = p.run(&window_of(day, "hour")).expect(0).json();
    assert!(written(&out).is_empty(), "{out}");
    assert_eq!(p.stripe.events().len(), 1);
    assert_eq!(p.billed(day), 24.0);
}

#[test]
fn a_settled_day_rerun_by_hour_25_hours_later_is_billed_once() {
    let p = Providers::start(hourly(3));
    let day = days_ago(3);
    a_day_ago(&p, day, || p.run(&window_of(day, "day"))).expect(0);
    let out = p.run(&window_of(day, "hour")).expect(0).json();
    assert!(written(&out).is_empty(), "{out}");
    assert_eq!(p.billed(day), 24.0, "not 47");
    // And the other way round: by hour, then by day.
    let q = Providers::start(hourly(3));
    a_day_ago(&q, day, || q.run(&window_of(day, "hour"))).expect(0);
    assert_eq!(q.billed(day), 24.0);
    let out = q.run(&window_of(day, "day")).expect(0).json();
    assert!(written(&out).is_empty(), "{out}");
    assert_eq!(q.billed(day), 24.0);
}

/// The same through `sync`, whose rows take the points of a batch query
/// (`query-usage` checks them, `record-usage` takes them as they are given):
/// rerun 25 hours later with no state directory to remember the first run,
/// Stripe's summaries are what keeps the day from being billed again.
#[test]
fn a_day_synced_by_day_then_by_hour_25_hours_later_is_billed_once() {
    let day = days_ago(3);
    for (first, then) in [("day", "hour"), ("hour", "day")] {
        let p = Providers::start(hourly(3));
        let rows = write_mapping_of(
            &format!("ledger-sync-{first}-then-{then}"),
            &[("acme", "cus_Acme")],
        );
        let by = |interval| sync_args(&rows, day, &["--interval", interval]);
        a_day_ago(&p, day, || p.sync(&by(first))).expect(0);
        assert_eq!(p.billed(day), 24.0, "by {first}");
        p.elsewhere("sync", &by(then)).expect(0);
        assert_eq!(p.billed(day), 24.0, "by {first}, then by {then}: not 48");
    }
}

#[test]
fn a_window_over_two_synced_days_bills_nothing_more() {
    // Days that had ended 25 hours ago at any time of day: the day before
    // yesterday had not, in the first hour after midnight (UTC).
    let mut records = hourly(4);
    records.extend(hourly(3));
    let p = Providers::start(records);
    let days = (days_ago(4).0, days_ago(3).1);
    a_day_ago(&p, days, || p.run(&window_of(days, "day"))).expect(0);
    assert_eq!(p.billed(days), 48.0);
    let out = p.run(&window_of(days, "window")).expect(0).json();
    assert!(written(&out).is_empty(), "{out}");
    assert_eq!(p.billed(days), 48.0, "not 72");
}

#[test]
fn a_true_up_by_hour_over_synced_days_bills_nothing_more() {
    let mut records = hourly(5);
    records.extend(hourly(4));
    records.extend(hourly(3));
    let p = Providers::start(records);
    let days = (days_ago(5).0, days_ago(3).1);
    a_day_ago(&p, days, || p.run(&window_of(days, "day"))).expect(0);
    let mut args = window_of(days, "hour");
    args.push("--true-up".into());
    let out = p.run(&args).expect(0).json();
    assert!(written(&out).is_empty(), "{out}");
    for n in [5, 4, 3] {
        assert_eq!(p.billed(days_ago(n)), 24.0, "day {n} back, not 47");
    }
}

fn sync_args(mapping: &std::path::Path, (start, end): (i64, i64), extra: &[&str]) -> Vec<String> {
    let mut args = mapping_args(mapping, &[]);
    args.extend(window_args(start, end));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn summary(run: &Run) -> Value {
    let last = run.stdout.lines().last().unwrap();
    serde_json::from_str::<Value>(last).unwrap()["summary"].clone()
}

/// acme-eu 10 and acme-us 20 units on the day `n` days back.
fn two_companies(n: i64) -> Vec<usage_sync_emulators::UsageRecord> {
    let (start, _) = days_ago(n);
    vec![
        usage("acme-eu", "api-calls", start + 60, 10.0),
        usage("acme-us", "api-calls", start + 120, 20.0),
    ]
}

#[test]
fn two_rows_of_one_stripe_customer_bill_their_sum() {
    let day = days_ago(3);
    let both = write_mapping_of(
        "ledger-two-rows",
        &[("acme-eu", "cus_Acme"), ("acme-us", "cus_Acme")],
    );
    let p = Providers::start(two_companies(3));
    let run = p.sync(&sync_args(&both, day, &[]));
    run.expect(0);
    assert_eq!(p.billed(day), 30.0);
    assert_eq!(p.stripe.events().len(), 1, "one event for the ledger");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["sources"],
        json!(["acme-eu/api-calls", "acme-us/api-calls"])
    );
    // 25 hours later, with a fresh journal: nothing more.
    let again = write_mapping_of(
        "ledger-two-rows-again",
        &[("acme-eu", "cus_Acme"), ("acme-us", "cus_Acme")],
    );
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.sync(&sync_args(&again, day, &[])).expect(0);
    assert_eq!(p.billed(day), 30.0);
}

#[test]
fn a_ledger_never_has_two_meter_event_calls_at_once() {
    // Stripe allows one meter event call at a time per customer and meter.
    // Twelve rows feed four Stripe customers, three days each, with Stripe's
    // answers taking 40 ms: the rows run many at once, but a ledger's writes
    // go one after another, whatever the concurrency.
    let first = days_ago(3).0;
    let mut records = Vec::new();
    let mut rows = Vec::new();
    for i in 0..12 {
        let customer = format!("co-{i}");
        for day in 0..3 {
            records.push(usage(
                &customer,
                "api-calls",
                first + day * 86_400 + 60,
                1.0,
            ));
        }
        rows.push((customer, format!("cus_{}", i % 4)));
    }
    let shared = write_mapping_of("ledger-one-at-a-time", &rows);
    let p = Providers::start(records);
    p.stripe
        .set_meter_event_time(std::time::Duration::from_millis(40));
    let window = (first, first + 3 * 86_400);
    p.sync(&sync_args(&shared, window, &["--concurrency", "64"]))
        .expect(0);
    assert_eq!(p.stripe.refused_overlapping(), 0);
    assert_eq!(p.stripe.events().len(), 4 * 3, "one event a ledger a day");
    for customer in 0..4 {
        let billed = p
            .stripe
            .billed("api_calls", &format!("cus_{customer}"), window.0, window.1);
        assert_eq!(billed, 9.0, "cus_{customer}: three rows, three days");
    }
}

#[test]
fn two_rows_on_a_pre_aggregated_meter_send_one_event_with_their_sum() {
    let day = days_ago(3);
    let both = write_mapping_of(
        "ledger-two-rows-daily",
        &[("acme-eu", "cus_Acme"), ("acme-us", "cus_Acme")],
    );
    let daily = MeterSpec {
        formula: Formula::Sum,
        event_time_window: Some(86_400),
        ..MeterSpec::sum("api_calls")
    };
    let p = Providers::with_meters(two_companies(3), [daily]);
    p.sync(&sync_args(&both, day, &[])).expect(0);
    assert_eq!(p.billed(day), 30.0, "not the last row's 20");
    let events = p.stripe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["value"], "30");
}

#[test]
fn a_row_added_later_is_drift_and_a_true_up_bills_only_the_rest() {
    let day = days_ago(4);
    let first = write_mapping_of("ledger-added-first", &[("acme-eu", "cus_Acme")]);
    let p = Providers::start(two_companies(4));
    a_day_ago(&p, day, || p.sync(&sync_args(&first, day, &[]))).expect(0);
    assert_eq!(p.billed(day), 10.0);
    let both = [("acme-eu", "cus_Acme"), ("acme-us", "cus_Acme")];
    let run = p.sync(&sync_args(
        &write_mapping_of("ledger-added-both", &both),
        day,
        &[],
    ));
    run.expect(DRIFT);
    assert_eq!(
        summary(&run)["drift"],
        2,
        "both rows name the ledger's drift"
    );
    assert_eq!(p.billed(day), 10.0, "drift is reported, never written");
    let true_up = ["--true-up", "--settle-hours", "0"];
    p.sync(&sync_args(
        &write_mapping_of("ledger-added-up", &both),
        day,
        &true_up,
    ))
    .expect(0);
    assert_eq!(p.billed(day), 30.0, "not 40: one correction for the ledger");
    let down = ["--true-up", "--settle-hours", "0", "--allow-decrease"];
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.sync(&sync_args(
        &write_mapping_of("ledger-added-down", &both),
        day,
        &down,
    ))
    .expect(0);
    assert_eq!(
        p.billed(day),
        30.0,
        "each row no longer corrects the other to 0"
    );
}

#[test]
fn a_repointed_customer_is_refused_then_moved_without_billing_twice() {
    // The first day had ended 25 hours ago at any time of day.
    let (before, after) = (days_ago(3), days_ago(2));
    let mut records = vec![usage("acme", "api-calls", before.0 + 60, 10.0)];
    records.push(usage("acme", "api-calls", after.0 + 60, 7.0));
    let p = Providers::start(records);
    let old = write_mapping_of("ledger-move-old", &[("acme", "cus_OLD")]);
    a_day_ago(&p, before, || p.sync(&sync_args(&old, before, &[]))).expect(0);
    let billed = |customer: &str| p.stripe.billed("api_calls", customer, before.0, after.1);
    assert_eq!(billed("cus_OLD"), 10.0);

    let new = write_mapping_of("ledger-move-new", &[("acme", "cus_NEW")]);
    let both_days = (before.0, after.1);
    let run = p.sync(&sync_args(&new, both_days, &[]));
    run.expect(BAD_INPUT);
    for needle in ["cus_OLD", "cus_NEW", "--move-customers"] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert_eq!(billed("cus_NEW"), 0.0, "nothing written");

    p.sync(&sync_args(&new, both_days, &["--move-customers"]))
        .expect(0);
    assert_eq!(billed("cus_OLD"), 10.0);
    assert_eq!(billed("cus_NEW"), 7.0, "only the day after the move");
    // 25 hours later, and the old customer's ledger is still whole.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.sync(&sync_args(&new, both_days, &[])).expect(0);
    assert_eq!((billed("cus_OLD"), billed("cus_NEW")), (10.0, 7.0));
}

#[test]
fn a_window_that_has_not_ended_is_refused_with_nothing_sent() {
    let p = Providers::start(vec![]);
    let hour = now().div_euclid(3600) * 3600;
    let open = window_of((hour - 3600, hour + 3600), "hour");
    let run = p.run(&open);
    run.expect(BAD_INPUT);
    assert!(
        run.error_message().contains("has not ended"),
        "{}",
        run.error_message()
    );
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_all().is_empty());
}

#[test]
fn amberflo_listing_a_bucket_twice_is_refused() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 10.0)]);
    let point =
        json!({ "value": 10.0, "secondsSinceEpochUtc": start, "percentageFromPrevious": 0.0 });
    p.amberflo.answer_next_with(
        &json!({
            "metadata": {},
            "clientMeters": [{
                "group": { "groupInfo": { "customerId": "acme" } },
                "values": [point, point],
            }],
        })
        .to_string(),
    );
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    assert!(
        run.error_message().contains("again"),
        "{}",
        run.error_message()
    );
    assert!(p.stripe_writes().is_empty());
}

/// README says what losing the state directory costs; this is that cost,
/// measured, so the sentence stays true.
#[test]
fn losing_the_state_directory_costs_what_readme_says() {
    // A rerun of another shape within the hour, before Stripe's summary
    // shows the first write: billed twice.
    let p = Providers::start(hourly(1));
    let day = yesterday();
    p.run(&window_of(day, "day")).expect(0);
    let out = p.run_elsewhere(&window_of(day, "hour")).expect(0).json();
    assert_eq!(written(&out).len(), 24);
    assert_eq!(p.billed(day), 48.0);
    // Once the summary shows it (the emulator lags a minute), the next run
    // reports it: drift, exit 5, nothing written.
    p.stripe.shift_clock(120);
    let out = p.run_elsewhere(&window_of(day, "day")).expect(DRIFT).json();
    assert_eq!(out["drift"], true);
    assert_eq!(out["stripeValue"], "48");
    assert_eq!(p.billed(day), 48.0);

    // A move made while the history was lost cannot be seen: the new
    // customer is billed for what the old one was.
    // A day that had ended 25 hours ago at any time of day.
    let old_day = days_ago(3);
    let q = Providers::start(vec![usage("acme", "api-calls", old_day.0 + 60, 10.0)]);
    let old = write_mapping_of("ledger-lost-old", &[("acme", "cus_OLD")]);
    a_day_ago(&q, old_day, || q.sync(&sync_args(&old, old_day, &[]))).expect(0);
    let new = write_mapping_of("ledger-lost-new", &[("acme", "cus_NEW")]);
    q.elsewhere("sync", &sync_args(&new, old_day, &[]))
        .expect(0);
    let billed = |customer: &str| q.stripe.billed("api_calls", customer, old_day.0, old_day.1);
    assert_eq!((billed("cus_OLD"), billed("cus_NEW")), (10.0, 10.0));
    // With the history, the same move is refused.
    let kept = q.sync(&sync_args(&new, old_day, &[]));
    kept.expect(BAD_INPUT);
}

/// `sync` with at most `per_part` rows held at once.
fn sync_in_parts(p: &Providers, per_part: usize, args: &[String]) -> Run {
    let run = Run::exec(
        p.command_for("sync", args)
            .env("USAGE_SYNC_ROWS_PER_PART", per_part.to_string()),
    );
    p.assert_no_leak(&run);
    run
}

#[test]
fn a_mapping_synced_in_parts_bills_each_ledger_once_and_checks_every_move_first() {
    let (d3, d2) = (days_ago(3), days_ago(2));
    // Twelve sources, two to each of six Stripe customers.
    let ids: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let mut records = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        records.push(usage(id, "api-calls", d3.0 + 60, (i + 1) as f64));
        records.push(usage(id, "api-calls", d2.0 + 60, 100.0 * (i + 1) as f64));
    }
    let p = Providers::start(records);
    let customer = |i: usize| format!("cus_{}", i / 2);
    let rows: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), customer(i)))
        .collect();
    let night1 = write_mapping_of("ledger-parts-1", &rows);
    let run = a_day_ago(&p, d3, || {
        sync_in_parts(&p, 2, &sync_args(&night1, d3, &[]))
    });
    run.expect(0);
    assert!(
        run.stderr.contains("12 rows in 6 part(s)"),
        "{}",
        run.stderr
    );
    assert_eq!(summary(&run)["recorded"], 12);
    let billed = |c: &str, (start, end): (i64, i64)| p.stripe.billed("api_calls", c, start, end);
    for k in 0..6 {
        let both = (2 * k + 1 + 2 * k + 2) as f64;
        assert_eq!(
            billed(&format!("cus_{k}"), d3),
            both,
            "cus_{k}: its two rows, once"
        );
    }
    assert_eq!(p.stripe.events().len(), 6, "one event a ledger");

    // Night two: c11 is re-pointed. Whichever part holds it, the move is
    // refused before any part is sent.
    let mut moved = rows.clone();
    moved[11].1 = "cus_NEW".into();
    let night2 = write_mapping_of("ledger-parts-2", &moved);
    let run = sync_in_parts(&p, 2, &sync_args(&night2, d2, &[]));
    run.expect(BAD_INPUT);
    assert!(
        run.stderr.contains("cus_5") && run.stderr.contains("cus_NEW"),
        "{}",
        run.stderr
    );
    assert_eq!(p.stripe.events().len(), 6, "nothing sent");

    let run = sync_in_parts(&p, 2, &sync_args(&night2, d2, &["--move-customers"]));
    run.expect(0);
    assert_eq!(billed("cus_NEW", d2), 1200.0);
    assert_eq!(billed("cus_5", d2), 1100.0, "c10 alone from the move on");
    for k in 0..5 {
        let both = 100.0 * (2 * k + 1 + 2 * k + 2) as f64;
        assert_eq!(billed(&format!("cus_{k}"), d2), both);
    }
    // 25 hours later, in parts of another size, from a fresh journal.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    let again = write_mapping_of("ledger-parts-3", &moved);
    let run = sync_in_parts(&p, 5, &sync_args(&again, (d3.0, d2.1), &[]));
    run.expect(0);
    assert!(run.stderr.contains("in 3 part(s)"), "{}", run.stderr);
    assert_eq!(billed("cus_5", d3), 23.0, "both rows, before the move");
    assert_eq!(billed("cus_NEW", (d3.0, d2.1)), 1200.0);
    for line in run.stdout.lines().filter(|l| l.contains("\"events\"")) {
        let line: Value = serde_json::from_str(line).unwrap();
        for event in written(&line) {
            // cus_NEW's day before the move is its own zero.
            assert_eq!(event["usageQuantity"], "0", "nothing more: {line}");
        }
    }
    for k in 0..5 {
        assert_eq!(
            billed(&format!("cus_{k}"), (d3.0, d2.1)),
            101.0 * (4 * k + 3) as f64
        );
    }
}
