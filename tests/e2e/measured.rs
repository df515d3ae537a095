//! Bill exactly what was measured: Amberflo's answer is believed only as far as
//! it proves itself, windows lie on the grid, and sums are exact. Each case
//! was a defect that billed what Amberflo never measured and exited 0.

use crate::support::*;
use serde_json::{Value, json};
use usage_sync_emulators::Fault;

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;

/// 42 units for `acme` yesterday.
fn providers() -> Providers {
    let (start, _) = yesterday();
    Providers::start(vec![usage("acme", "api-calls", start + 5, 42.0)])
}

/// An Amberflo answer whose `clientMeters` is `groups`.
fn answer(groups: Value) -> String {
    json!({ "metadata": {}, "secondsSinceEpochIntervals": [], "clientMeters": groups }).to_string()
}

fn group(customer: Option<&str>, points: &[(i64, Value)]) -> Value {
    json!({
        "group": customer.map(|c| json!({ "groupInfo": { "customerId": c } })),
        "groupValue": 0.0,
        "percentageFromPrevious": 0.0,
        "values": points.iter().map(|(t, v)| json!({
            "value": v, "secondsSinceEpochUtc": t, "percentageFromPrevious": 0.0,
        })).collect::<Vec<_>>(),
    })
}

#[test]
fn another_customers_usage_is_refused() {
    let p = providers();
    let (start, _) = yesterday();
    p.amberflo.answer_next_with(&answer(json!([
        group(Some("acme"), &[(start, json!(42.0))]),
        group(Some("globex"), &[(start, json!(1000.0))]),
    ])));
    refused(&p, "2 groups for the one customer `acme`");
    p.amberflo.answer_next_with(&answer(json!([group(
        Some("globex"),
        &[(start, json!(1000.0))]
    )])));
    refused(&p, "the usage of customer `globex`, not of `acme`");
}

#[test]
fn usage_outside_the_window_is_refused() {
    let p = providers();
    let (start, end) = yesterday();
    for t in [start - DAY, end] {
        p.amberflo.answer_next_with(&answer(json!([group(
            None,
            &[(start, json!(42.0)), (t, json!(1507.0))]
        )])));
        refused(&p, "outside the window");
    }
    // A one-day window is measured by hour.
    p.amberflo.answer_next_with(&answer(json!([group(
        None,
        &[(start + 1800, json!(42.0))]
    )])));
    refused(&p, "not on the UTC hour grid");
}

#[test]
fn a_group_without_values_is_refused_not_billed_as_zero() {
    let p = providers();
    p.amberflo
        .answer_next_with(&answer(json!([{ "group": null, "groupValue": 42.0 }])));
    refused(&p, "has no `values`");
    // A later healthy run bills the 42 units.
    let out = p.run(&INPUTS).expect(0).json();
    assert_eq!(out["usageQuantity"], "42");
    assert_eq!(p.billed(yesterday()), 42.0);
}

#[test]
fn a_bad_number_is_the_providers_fault_not_the_users() {
    let (start, _) = yesterday();
    for (value, expected) in [
        (json!("42"), "is not a number"),
        (Value::Null, "has no `value`"),
    ] {
        let p = providers();
        p.amberflo
            .answer_next_with(&answer(json!([group(None, &[(start, value)])])));
        refused(&p, expected);
    }
    // 1e309 cannot even be written by serde_json: send the text itself.
    let p = providers();
    p.amberflo.answer_next_with(&format!(
        r#"{{"clientMeters":[{{"group":null,"values":[{{"value":1e309,"secondsSinceEpochUtc":{start}}}]}}]}}"#
    ));
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn a_window_off_the_grid_or_a_leap_second_is_refused() {
    let p = providers();
    let (start, end) = yesterday();
    let run = p.run(&with_inputs(&window_args(start, end - 1)));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("is not on the UTC day grid of --interval day: use"),
        "{}",
        run.error_message()
    );
    let leap = p.run(&with_inputs(&[
        "--start-time",
        "2026-11-23T00:00:00Z",
        "--end-time",
        "2026-11-23T23:59:60Z",
    ]));
    leap.expect(BAD_INPUT);
    assert!(
        leap.error_message().contains("leap second"),
        "{}",
        leap.error_message()
    );
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
}

#[test]
fn sums_are_exact_decimals() {
    // One event for three hours of a day, which hold 0.2, 0.7 and 0.1.
    let (start, end) = (yesterday().0, yesterday().0 + 3 * 3600);
    let records = || {
        vec![
            usage("acme", "api-calls", start + 5, 0.2),
            usage("acme", "api-calls", start + 3600 + 5, 0.7),
            usage("acme", "api-calls", start + 2 * 3600 + 5, 0.1),
        ]
    };
    let p = Providers::start(records());
    let mut args = window_args(start, end).to_vec();
    args.extend(["--interval", "window"].map(String::from));
    // 0.2 + 0.7 + 0.1 is 1: no rounding asked for, none needed.
    let out = p.run(&with_inputs(&args)).expect(0).json();
    assert_eq!(out["usageQuantity"], "1");
    assert_eq!(out["amberfloTotal"], "1");
    assert_eq!(out["measuredTotal"], "1");
    assert_eq!(p.billed((start, end)), 1.0);
    // And `--round floor` rounds the sum, not each hour: it bills 1, not 0.
    let p = Providers::start(records());
    args.extend(["--round", "floor"].map(String::from));
    p.run(&with_inputs(&args)).expect(0);
    assert_eq!(p.billed((start, end)), 1.0);
}

#[test]
fn a_window_over_days_bills_each_utc_day_whole() {
    // The ledger is kept per UTC day: a window of three days whose days hold
    // 0.2, 0.7 and 0.1 cannot be billed whole without rounding each day.
    let (start, end) = (days_ago(3).0, yesterday().1);
    let p = Providers::start(vec![
        usage("acme", "api-calls", start + 5, 0.2),
        usage("acme", "api-calls", start + DAY + 5, 0.7),
        usage("acme", "api-calls", start + 2 * DAY + 5, 0.1),
    ]);
    let mut args = window_args(start, end).to_vec();
    args.extend(["--interval", "window"].map(String::from));
    let run = p.run(&with_inputs(&args));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("the Amberflo total 0.2 is not a whole number"),
        "{}",
        run.error_message()
    );
    assert!(p.stripe_writes().is_empty(), "nothing was sent");
    // Rounded to the nearest unit each day: 0 + 1 + 0.
    args.extend(["--round", "nearest"].map(String::from));
    let out = p.run(&with_inputs(&args)).expect(0).json();
    assert_eq!(out["measuredTotal"], "1");
    assert_eq!(out["billedTotal"], "1");
    assert_eq!(p.billed((start, end)), 1.0);
    assert_eq!(p.billed(days_ago(2)), 1.0);
}

#[test]
fn rounding_says_what_it_loses_and_a_scale_keeps_it() {
    let (start, end) = yesterday();
    let records = (0..24)
        .map(|h| usage("acme", "api-calls", start + h * 3600 + 1, 0.05))
        .collect();
    let p = Providers::start(records);
    let mut args = window_args(start, end).to_vec();
    args.extend(["--interval", "hour", "--round", "nearest"].map(String::from));
    let run = p.run(&with_inputs(&args));
    let out = run.expect(0).json();
    // Rounded as the day's running total, not hour by hour (which bills 0).
    assert_eq!(out["measuredTotal"], "1.2");
    assert_eq!(out["billedTotal"], "1");
    let hours: Vec<&str> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["usageQuantity"].as_str().unwrap())
        .collect();
    assert_eq!(hours.iter().filter(|q| **q == "1").count(), 1, "{hours:?}");
    assert!(
        run.stderr
            .contains("rounding each UTC day bills 1 of the 1.2 measured (see --scale)"),
        "{}",
        run.stderr
    );

    // Billed in hundredths, nothing is lost.
    let records = (0..24)
        .map(|h| usage("acme", "api-calls", start + h * 3600 + 1, 0.05))
        .collect();
    let p = Providers::start(records);
    args.extend(["--scale", "100"].map(String::from));
    let out = p.run(&with_inputs(&args)).expect(0).json();
    assert_eq!(out["measuredTotal"], "120");
    assert_eq!(out["billedTotal"], "120");
    assert_eq!(p.billed(yesterday()), 120.0);
}

#[test]
fn a_200_for_another_event_is_not_taken_as_success() {
    let p = providers();
    p.stripe.push_faults([Fault::RecordThenOtherEvent]);
    let run = p.run(&INPUTS);
    let error = run.expect(PROVIDER).json()["error"].clone();
    assert_eq!(error["step"], "record-stripe-meter");
    assert_eq!(error["delivery"], "unknown");
    assert!(
        run.error_message()
            .contains("Stripe answered 200 for another event (identifier someone-elses-event"),
        "{}",
        run.error_message()
    );
}
