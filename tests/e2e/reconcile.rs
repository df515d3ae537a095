//! `usage-sync reconcile` (read-only: Amberflo against what Stripe holds) and
//! `--true-up` (make Stripe's total equal Amberflo's). What Stripe holds is
//! planted in its emulator as another writer would have left it; Amberflo's
//! totals change between runs as late, replaced and cancelled usage do.

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use usage_sync_emulators::{MeterSpec, UsageRecord};

const DAY: i64 = 86_400;

/// Amberflo's value for customer `i` on the day starting at `start`.
fn value(i: usize, start: i64) -> i64 {
    (i % 7) as i64 + (start / DAY) % 5 + 1
}

/// The window `reconcile` takes by default: the 35 days before today.
fn last_35_days() -> Vec<(i64, i64)> {
    (1..=35).rev().map(days_ago).collect()
}

fn mapping(name: &str, n: usize) -> PathBuf {
    write_mapping(&format!("reconcile-{name}"), n)
}

/// `n` customers with usage every day of the last 35, and Stripe holding
/// exactly that, but for what the caller plants.
fn in_step(n: usize) -> Providers {
    let mut records: Vec<UsageRecord> = Vec::new();
    for i in 0..n {
        for (start, _) in last_35_days() {
            records.push(usage(
                &format!("cust-{i}"),
                "api-calls",
                start + 60,
                value(i, start) as f64,
            ));
        }
    }
    let p = Providers::start(records);
    for i in 0..n {
        for (start, end) in last_35_days() {
            p.stripe.plant(
                "api_calls",
                &format!("cus_{i}"),
                end - 1,
                &value(i, start).to_string(),
            );
        }
    }
    p
}

/// A planted cell: the customer number, the day, the status expected.
type Planted = (usize, i64, &'static str);

fn lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Plants drift of every kind among `n` customers; returns what was planted.
fn plant_drift(p: &Providers) -> Vec<Planted> {
    let day = |n: i64| days_ago(n);
    // Stripe holds nothing for one day: planted as a second event of minus the value.
    let (s, e) = day(20);
    p.stripe
        .plant("api_calls", "cus_1", e - 1, &(-value(1, s)).to_string());
    // Stripe holds 2 less, and 4 more. (value(2, _) is at least 3, so 2 less
    // is never nothing, whatever today's date.)
    let (s2, e2) = day(10);
    p.stripe.plant("api_calls", "cus_2", e2 - 1, "-2");
    let (s3, e3) = day(30);
    p.stripe.plant("api_calls", "cus_3", e3 - 1, "4");
    // Amberflo learns of late usage, replaces a record, and cancels one.
    let (s5, _) = day(5);
    p.amberflo
        .ingest(usage("cust-5", "api-calls", s5 + 600, 9.0));
    let (s6, _) = day(6);
    p.amberflo.ingest(usage(
        "cust-6",
        "api-calls",
        s6 + 60,
        (value(6, s6) + 2) as f64,
    ));
    let (s7, _) = day(7);
    assert!(p.amberflo.cancel("cust-7", "api-calls", s7 + 60));
    // Stripe holds less for yesterday: Amberflo may still change, so settling.
    let (s8, e8) = day(1);
    p.stripe.plant("api_calls", "cus_8", e8 - 1, "-1");
    vec![
        (1, s, "missing"),
        (2, s2, "under"),
        (3, s3, "over"),
        (5, s5, "under"),
        (6, s6, "under"),
        (7, s7, "over"),
        (8, s8, "settling"),
    ]
}

fn found(cells: &[Value]) -> BTreeSet<(usize, i64, String)> {
    cells
        .iter()
        .filter(|c| c["status"] != "match")
        .map(|c| {
            let customer = c["customerId"].as_str().unwrap();
            let i = customer.trim_start_matches("cust-").parse().unwrap();
            (
                i,
                c["startTime"].as_i64().unwrap(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expected(planted: &[Planted]) -> BTreeSet<(usize, i64, String)> {
    planted
        .iter()
        .map(|&(i, s, st)| (i, s, st.to_string()))
        .collect()
}

#[test]
fn reconcile_over_1000_customers_and_35_days_finds_exactly_the_planted_drift() {
    let p = in_step(1000);
    let planted = plant_drift(&p);
    let mapping = mapping("thousand", 1000);
    let started = std::time::Instant::now();
    // Unpaced here (the default pace is the next test's).
    let run = p.reconcile(&mapping_args(
        &mapping,
        &["--concurrency", "16", "--stripe-rate", "1000000"],
    ));
    eprintln!("reconcile of 1000 x 35 cells in {:?}", started.elapsed());
    run.expect(5);
    let out = lines(&run);
    let (summary, cells) = out.split_last().unwrap();
    assert_eq!(cells.len(), 1000 * 35);
    assert_eq!(found(cells), expected(&planted));
    let summary = &summary["summary"];
    assert_eq!(summary["rows"], 1000);
    assert_eq!(summary["cells"], 35_000);
    assert_eq!(summary["missing"], 1);
    assert_eq!(summary["under"], 3);
    assert_eq!(summary["over"], 2);
    assert_eq!(summary["settling"], 1);
    assert_eq!(summary["matched"], 35_000 - 7);
    // A cell says what each side holds.
    let under = cells
        .iter()
        .find(|c| c["customerId"] == "cust-2" && c["status"] == "under")
        .unwrap();
    let s2 = days_ago(10).0;
    assert_eq!(under["amberflo"], value(2, s2).to_string());
    assert_eq!(under["stripe"], (value(2, s2) - 2).to_string());
    assert_eq!(under["difference"], "2");
    // Read-only: nothing written to Stripe; Amberflo only queried, in batches
    // of 100 customers; Stripe read once per customer, plus the meter.
    assert!(p.stripe_writes().is_empty());
    let queries = p.amberflo_requests();
    assert_eq!(queries.len(), 10);
    assert!(
        queries
            .iter()
            .all(|q| q.method == "POST" && q.target == "/usage")
    );
    assert_eq!(p.stripe_all().len(), 1 + 1000);
}

/// Reconcile's reads count against Stripe's basic limit like a sync's: one
/// account-wide pace, `--stripe-rate`, however many rows read at once (a
/// lower bound on the time, which a slow machine only lengthens).
#[test]
fn reconcile_keeps_to_the_stripe_rate() {
    let p = in_step(10);
    let mapping = mapping("paced", 10);
    let started = std::time::Instant::now();
    let run = p.reconcile(&mapping_args(
        &mapping,
        &["--concurrency", "16", "--stripe-rate", "5"],
    ));
    let elapsed = started.elapsed();
    run.expect(0);
    assert!(
        run.stderr.contains(
            "reconcile: Stripe paced at 5 requests a second, meter events included (not a live key)"
        ),
        "{}",
        run.stderr
    );
    let requests = p.stripe_all().len();
    assert_eq!(requests, 1 + 10, "the meter, then a summaries read a row");
    assert!(
        elapsed.as_secs_f64() >= (requests - 1) as f64 / 5.0,
        "{requests} requests in {elapsed:?}, at 5 a second"
    );
}

#[test]
fn csv_and_html_carry_the_planted_cells() {
    let p = in_step(10);
    let planted = plant_drift(&p);
    let mapping = mapping("formats", 10);
    let html = mapping.with_file_name("report.html");
    let run = p.reconcile(&mapping_args(
        &mapping,
        &["--format", "csv", "--html", html.to_str().unwrap()],
    ));
    run.expect(5);
    let mut reader = csv::Reader::from_reader(run.stdout.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "customerId",
            "stripeCustomer",
            "meterApiName",
            "stripeEventName",
            "startTime",
            "endTime",
            "amberflo",
            "stripe",
            "difference",
            "status"
        ]
    );
    let cells: Vec<Value> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            serde_json::json!({
                "customerId": &r[0],
                "startTime": r[4].parse::<i64>().unwrap(),
                "status": &r[9],
            })
        })
        .collect();
    assert_eq!(cells.len(), 10 * 35);
    assert_eq!(found(&cells), expected(&planted));
    assert!(run.stderr.contains("\"summary\""), "{}", run.stderr);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    // Self-contained: no script, no external asset.
    for outside in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(outside), "{outside}");
    }
    for &(i, start, status) in &planted {
        let section = page
            .split("<section")
            .find(|s| s.contains(&format!("data-customer=\"cust-{i}\"")))
            .unwrap();
        assert!(
            section.contains(&format!("data-start=\"{start}\" data-status=\"{status}\"")),
            "cust-{i} {start} {status}"
        );
    }
    let marked = page.matches("class=\"bar drift\"").count();
    assert_eq!(
        marked, 6,
        "the drifted days are marked, the settling one apart"
    );
    assert!(p.stripe_writes().is_empty());
}

/// One customer, days 10 to 5 back: Amberflo measured 10 units a day.
fn one_customer(meters: Vec<MeterSpec>) -> Providers {
    let records = (5..=10)
        .map(|n| usage("acme", "api-calls", days_ago(n).0 + 60, 10.0))
        .collect();
    Providers::with_meters(records, meters)
}

fn six_days() -> Vec<String> {
    with_inputs(&window_args(days_ago(10).0, days_ago(5).1))
}

fn events(run: &Run) -> Vec<Value> {
    let out = run.json();
    out["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![out])
}

fn billed_each_day(p: &Providers) -> Vec<f64> {
    (5..=10).rev().map(|n| p.billed(days_ago(n))).collect()
}

#[test]
fn a_true_up_corrects_a_shortfall_and_an_allowed_overage_and_a_rerun_writes_nothing() {
    let p = one_customer(vec![MeterSpec::sum("api_calls")]);
    // Stripe holds the right value on most days, 7 on day 8, 13 on day 6, none on day 7.
    for n in [10, 9, 5] {
        p.stripe
            .plant("api_calls", "cus_Acme", days_ago(n).1 - 1, "10");
    }
    p.stripe
        .plant("api_calls", "cus_Acme", days_ago(8).1 - 1, "7");
    p.stripe
        .plant("api_calls", "cus_Acme", days_ago(6).1 - 1, "13");

    // Without --true-up: drift, nothing written for it (day 7 is simply missing).
    let mut args = six_days();
    let plain = p.run(&args);
    plain.expect(5);
    assert_eq!(p.stripe_writes().len(), 1, "only the missing day");

    // A true-up corrects the shortfall; the overage waits for --allow-decrease.
    args.push("--true-up".into());
    let run = p.run(&args);
    run.expect(5);
    let corrected = events(&run);
    let day8 = &corrected[2];
    assert_eq!(day8["usageQuantity"], "3");
    assert_eq!(day8["stripeValue"], "7");
    assert_eq!(day8["correctedTo"], "10");
    assert!(day8["meterEventId"].as_str().unwrap().contains("-t"));
    assert_eq!(
        corrected[4]["drift"], true,
        "an overage is not corrected by default"
    );
    assert_eq!(billed_each_day(&p), [10.0, 10.0, 10.0, 10.0, 13.0, 10.0]);

    args.push("--allow-decrease".into());
    let run = p.run(&args);
    run.expect(0);
    let day6 = &events(&run)[4];
    assert_eq!(day6["usageQuantity"], "-3");
    assert_eq!(day6["stripeValue"], "13");
    assert_eq!(day6["correctedTo"], "10");
    assert_eq!(billed_each_day(&p), [10.0; 6]);

    // Rerun at once: Stripe's summaries lag behind the corrections, so they
    // are sent again, and their identifiers are refused as duplicates.
    p.run(&args).expect(0);
    assert_eq!(billed_each_day(&p), [10.0; 6]);
    // A day later the summaries agree: not one write.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    let writes = p.stripe_writes().len();
    let again = p.run(&args);
    again.expect(0);
    assert!(events(&again).iter().all(|e| e["alreadyRecorded"] == true));
    assert_eq!(
        p.stripe_writes().len(),
        writes,
        "nothing written once Stripe agrees"
    );
    assert_eq!(billed_each_day(&p), [10.0; 6]);
}

#[test]
fn a_true_up_on_a_pre_aggregated_meter_resends_the_total() {
    let p = one_customer(vec![MeterSpec {
        event_time_window: Some(DAY),
        ..MeterSpec::sum("api_calls")
    }]);
    for n in 5..=10 {
        p.stripe.plant(
            "api_calls",
            "cus_Acme",
            days_ago(n).1 - 1,
            if n == 8 { "4" } else { "10" },
        );
    }
    let mut args = six_days();
    args.push("--true-up".into());
    let run = p.run(&args);
    run.expect(0);
    let day8 = &events(&run)[2];
    assert_eq!(
        day8["usageQuantity"], "10",
        "the total again, which replaces the bucket's value"
    );
    assert_eq!(day8["stripeValue"], "4");
    assert_eq!(day8["correctedTo"], "10");
    assert_eq!(billed_each_day(&p), [10.0; 6]);
}

#[test]
fn a_true_up_leaves_settling_days_alone_and_never_reaches_past_35_days() {
    let p = Providers::start(vec![usage("acme", "api-calls", days_ago(2).0 + 60, 10.0)]);
    p.stripe
        .plant("api_calls", "cus_Acme", days_ago(2).1 - 1, "6");
    let day = with_inputs(&window_args(days_ago(2).0, days_ago(2).1));
    let mut args = day.clone();
    args.push("--true-up".into());
    // Two days back is still settling at Amberflo (72 hours by default).
    let run = p.run(&args);
    run.expect(5);
    assert_eq!(run.json()["drift"], true);
    assert!(p.stripe_writes().is_empty());
    // Asked to: settled after a day.
    args.extend(["--settle-hours".to_string(), "24".to_string()]);
    let run = p.run(&args);
    run.expect(0);
    assert_eq!(run.json()["correctedTo"], "10", "{}", run.stdout);
    assert_eq!(p.billed(days_ago(2)), 10.0);

    // Stripe refuses events older than 35 days: a true-up never reaches there.
    let old = with_inputs(&window_args(days_ago(40).0, days_ago(39).1));
    let mut args = old;
    args.push("--true-up".into());
    let run = p.run(&args);
    run.expect(2);
    assert!(
        run.error_message().contains("more than 35 days ago"),
        "{}",
        run.error_message()
    );
}

/// The daily catch-up job: `sync --true-up` over the settled days of a
/// mapping corrects every row that reconcile would flag, and reconcile then
/// finds nothing. Its journal is the day's, so tomorrow's job checks every
/// row again.
#[test]
fn sync_true_up_over_a_mapping_leaves_nothing_for_reconcile_to_find() {
    let p = in_step(20);
    let planted = plant_drift(&p);
    let mapping = mapping("true-up", 20);
    let (start, end) = (days_ago(35).0, days_ago(3).1);
    let window = window_args(start, end);
    let mut args: Vec<String> = vec![
        "--mapping".into(),
        mapping.to_str().unwrap().into(),
        "--meter-api-name".into(),
        "api-calls".into(),
        "--stripe-event-name".into(),
        "api_calls".into(),
    ];
    args.extend(window.iter().cloned());
    let mut true_up = args.clone();
    true_up.extend(["--true-up".into(), "--allow-decrease".into()]);
    let run = p.sync(&true_up);
    run.expect(0);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["summary"]["failed"], 0, "{summary}");
    // Every planted cell but the settling one (yesterday, outside the window) was corrected.
    assert_eq!(p.stripe_writes().len(), planted.len() - 1);
    let today = days_ago(0).0;
    let journal = p.journal(&mapping, &format!("true-up.{today}.{start}-{end}.jsonl"));
    assert!(journal.exists(), "{}", journal.display());

    // Once Stripe has processed the corrections (its summaries lag a minute).
    p.stripe.shift_clock(120);
    let after = p.reconcile(&args);
    after.expect(0);
    let out = lines(&after);
    let summary = &out.last().unwrap()["summary"];
    assert_eq!(summary["cells"], 20 * 33);
    assert_eq!(summary["matched"], 20 * 33);
}
