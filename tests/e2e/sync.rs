//! `usage-sync sync`: many rows, one command, resumable.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use usage_sync_emulators::Fault;

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;

/// `n` customers with `i + 1` units of usage yesterday, and their mapping file.
fn customers(n: usize, name: &str) -> (Providers, PathBuf) {
    customers_of(n, name, Providers::start)
}

/// `n` rows with usage yesterday, on providers `start` serves.
fn customers_of(
    n: usize,
    name: &str,
    start_providers: fn(Vec<usage_sync_emulators::UsageRecord>) -> Providers,
) -> (Providers, PathBuf) {
    let (start, _) = yesterday();
    let records = (0..n)
        .map(|i| {
            usage(
                &format!("cust-{i}"),
                "api-calls",
                start + 60,
                (i + 1) as f64,
            )
        })
        .collect();
    let mapping = write_mapping(&format!("sync-{name}"), n);
    (start_providers(records), mapping)
}

fn sync_args(mapping: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = mapping_args(mapping, &["--stripe-rate", "2000", "--concurrency", "8"]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The default journal of a window: one per window, next to the mapping.
fn journal_of(p: &Providers, mapping: &Path, (start, end): (i64, i64)) -> std::path::PathBuf {
    p.journal(mapping, &format!("{start}-{end}.jsonl"))
}

fn lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn every_row_is_recorded_once_and_a_rerun_skips_them() {
    let (p, mapping) = customers(40, "all");
    let run = p.sync(&sync_args(&mapping, &[]));
    run.expect(0);
    let out = lines(&run);
    assert_eq!(out.len(), 41, "a line per row, then the summary");
    assert!(
        out[..40].iter().all(|l| l["status"] == "recorded"),
        "{out:?}"
    );
    assert_eq!(out[40]["summary"]["recorded"], 40);
    let mut values: Vec<u32> = p
        .stripe
        .events()
        .iter()
        .map(|e| e.payload["value"].parse().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (1..=40).collect::<Vec<_>>());
    // Each event went to its own customer.
    for event in p.stripe.events() {
        let i: u32 = event.payload["stripe_customer_id"]
            .trim_start_matches("cus_")
            .parse()
            .unwrap();
        assert_eq!(event.payload["value"], (i + 1).to_string());
    }
    let journal = std::fs::read_to_string(journal_of(&p, &mapping, yesterday())).unwrap();
    assert_eq!(journal.lines().count(), 41, "a header, then a line per row");

    let again = p.sync(&sync_args(&mapping, &[]));
    again.expect(0);
    let out = lines(&again);
    assert_eq!(out[40]["summary"]["skipped"], 40);
    assert_eq!(p.stripe_writes().len(), 40, "nothing sent again");
}

#[test]
fn a_bad_row_is_named_and_nothing_is_sent() {
    let (p, mapping) = customers(3, "bad");
    std::fs::write(
        &mapping,
        "customerId,stripeCustomer\ncust-0,cus_0\n,cus_1\ncust-0,cus_2\n",
    )
    .unwrap();
    let run = p.sync(&sync_args(&mapping, &[]));
    run.expect(BAD_INPUT);
    let message = run.error_message();
    assert!(
        message.contains("line 3: `customerId` is missing"),
        "{message}"
    );
    assert!(message.contains("line 4: repeats line 2"), "{message}");
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn a_mapping_with_no_line_end_is_refused_not_read_until_memory_runs_out() {
    let (p, _) = customers(1, "endless");
    // `/dev/zero` took every byte of memory there was, then aborted.
    let run = p.sync(&sync_args(Path::new("/dev/zero"), &[]));
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("the mapping's header: a line is over 65536 bytes"),
        "{}",
        run.error_message()
    );
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_all().is_empty());
}

#[test]
fn a_rate_out_of_bounds_is_refused_before_anything_is_sent() {
    let (p, mapping) = customers(2, "rate");
    // 1e-20 per second panicked in Duration::from_secs_f64.
    for flag in ["--stripe-rate", "--stripe-meter-event-rate"] {
        for rate in ["1e-20", "0", "NaN", "1e300"] {
            let run = p.sync(&sync_args(&mapping, &[flag, rate]));
            run.expect(BAD_INPUT);
            let expected =
                format!("{flag} must be between 0.00001 and 1000000 requests per second");
            assert!(
                run.error_message().contains(&expected),
                "{flag} {rate}: {}",
                run.error_message()
            );
        }
    }
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_all().is_empty());
}

#[test]
fn a_failed_row_is_sent_again_by_the_next_run_and_nothing_twice() {
    let (p, mapping) = customers(3, "resume");
    // One row at a time: the second Stripe call is refused.
    p.stripe
        .push_faults([Fault::Delay(std::time::Duration::ZERO), Fault::Status(402)]);
    let run = p.sync(&sync_args(&mapping, &["--concurrency", "1"]));
    run.expect(PROVIDER);
    let out = lines(&run);
    let failed: Vec<&Value> = out.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"]["status"], 402);
    assert_eq!(p.stripe.events().len(), 2);

    let again = p.sync(&sync_args(&mapping, &[]));
    again.expect(0);
    let summary = lines(&again).last().unwrap()["summary"].clone();
    assert_eq!(
        (summary["skipped"].as_u64(), summary["recorded"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(p.stripe.events().len(), 3);
    assert_eq!(
        p.stripe_writes().len(),
        4,
        "only the failed row was sent again"
    );
}

#[test]
fn ten_thousand_rows_in_one_command() {
    let (p, mapping) = customers(10_000, "10k");
    let started = std::time::Instant::now();
    let run = p.sync(&sync_args(
        &mapping,
        &["--stripe-rate", "100000", "--concurrency", "64"],
    ));
    run.expect(0);
    let summary = lines(&run).last().unwrap()["summary"].clone();
    assert_eq!(summary["recorded"], 10_000);
    assert_eq!(summary["partial"], false);
    assert_eq!(p.stripe.events().len(), 10_000);
    eprintln!("10,000 rows in {:?}", started.elapsed());
}

/// Stripe's concurrency limiter answers 429 past a cap. The rows at once
/// start at 16 and would double up to `--concurrency` while latency holds;
/// each push-back halves them, and the rows' requests (retries included)
/// follow the halved limit, so the 429s stay a few per cycle instead of one
/// per row past the cap, and every row is still billed once.
#[test]
fn rows_at_once_adapt_to_a_provider_that_pushes_back() {
    let (p, mapping) = customers(200, "adapt");
    let slow = Fault::Delay(std::time::Duration::from_millis(20));
    p.stripe.set_fault(Some(slow));
    p.stripe.set_read_fault(Some(slow));
    p.stripe.set_concurrency_cap(Some(6));
    let run = p.sync(&sync_args(
        &mapping,
        &["--concurrency", "128", "--max-retries", "10"],
    ));
    run.expect(0);
    assert_eq!(lines(&run).last().unwrap()["summary"]["recorded"], 200);
    let mut customers: Vec<String> = p
        .stripe
        .events()
        .iter()
        .map(|e| e.payload["stripe_customer_id"].clone())
        .collect();
    customers.sort();
    customers.dedup();
    assert_eq!(customers.len(), 200, "each row billed");
    assert_eq!(p.stripe.events().len(), 200, "and once");
    let (requests, refused) = (p.stripe.requests().len(), p.stripe.refused_busy());
    eprintln!(
        "{refused} of {requests} refused; at most {} at once at Stripe",
        p.stripe.peak_in_flight()
    );
    // Most of them are the first burst: 16 rows send 32 requests at once (a
    // row's summaries read goes beside its subscriptions read) against a cap
    // of 6. Measured: about 50 of 650; a limit that never backs off has 1,200
    // of 1,700 refused and fails the sync.
    assert!(
        refused * 5 <= requests,
        "{refused} of {requests} requests were refused as too many at once"
    );
    assert!(
        run.stderr.contains("at most"),
        "the log says how many ran at once: {}",
        run.stderr
    );
}

#[test]
fn ctrl_c_finishes_rows_in_flight_and_records_the_rest_as_not_sent() {
    interrupted_by("-INT", "interrupt");
}

/// Kubernetes and systemd stop a job with SIGTERM: treated as Ctrl-C is.
#[test]
fn sigterm_finishes_rows_in_flight_and_records_the_rest_as_not_sent() {
    interrupted_by("-TERM", "terminate");
}

fn interrupted_by(signal: &str, name: &str) {
    let (p, mapping) = customers(6, name);
    // Each Stripe answer takes a while, so the interrupt lands mid-sync.
    p.stripe
        .set_fault(Some(Fault::Delay(std::time::Duration::from_millis(400))));
    let child = p
        .command_for("sync", &sync_args(&mapping, &["--concurrency", "2"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.stripe.events().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let run = Run::wait(child);
    p.assert_no_leak(&run);
    run.expect(130);
    let summary = lines(&run).last().unwrap()["summary"].clone();
    let sent = summary["recorded"].as_u64().unwrap();
    assert!(summary["notSent"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary["partial"], true,
        "an interrupted sync says it is partial"
    );
    assert_eq!(
        sent as usize,
        p.stripe.events().len(),
        "every row sent was seen through"
    );

    p.stripe.set_fault(None);
    let again = p.sync(&sync_args(&mapping, &[]));
    again.expect(0);
    assert_eq!(p.stripe.events().len(), 6);
}

#[test]
fn a_query_larger_than_one_write_reaches_amberflo_whole() {
    // The component writes a body in pieces of 4,096 bytes (what one
    // `blocking-write-and-flush` takes): 450 customers make one query of more.
    let (p, mapping) = customers(450, "big-query");
    let run = p.sync(&sync_args(&mapping, &["--amberflo-batch", "450"]));
    run.expect(0);
    assert_eq!(lines(&run).last().unwrap()["summary"]["recorded"], 450);
    let queries = p.amberflo_requests();
    assert_eq!(queries.len(), 1);
    assert!(
        queries[0].body.len() > 4096,
        "{} bytes",
        queries[0].body.len()
    );
    let body: Value = serde_json::from_slice(&queries[0].body).unwrap();
    assert_eq!(body["filter"]["customerId"].as_array().unwrap().len(), 450);
}

/// The Stripe bodies a sync sent, sorted (each row's order varies).
fn stripe_bodies(p: &Providers) -> Vec<String> {
    let mut bodies: Vec<String> = p
        .stripe_writes()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    bodies.sort();
    bodies
}

#[test]
fn one_amberflo_query_serves_a_batch_and_stripe_gets_what_per_row_queries_send() {
    // Customers 250..=259 have no usage: Amberflo gives them no group.
    let (batched, mapping) = customers(250, "batch");
    let mut csv = std::fs::read_to_string(&mapping).unwrap();
    for i in 250..260 {
        csv.push_str(&format!("cust-{i},cus_{i}\n"));
    }
    std::fs::write(&mapping, &csv).unwrap();
    let run = batched.sync(&sync_args(&mapping, &["--amberflo-batch", "100"]));
    run.expect(0);
    assert_eq!(lines(&run).last().unwrap()["summary"]["recorded"], 260);
    let queries = batched.amberflo_requests();
    assert_eq!(queries.len(), 3, "100 + 100 + 60 customers");
    let mut asked: Vec<String> = Vec::new();
    for query in &queries {
        let body: Value = serde_json::from_slice(&query.body).unwrap();
        assert_eq!(body["groupBy"], serde_json::json!(["customerId"]));
        let ids = body["filter"]["customerId"].as_array().unwrap();
        // Every customer of the batch, or Amberflo may cut some from the answer.
        assert_eq!(body["take"]["limit"], ids.len());
        assert!(ids.len() <= 100);
        asked.extend(ids.iter().map(|id| id.as_str().unwrap().to_string()));
    }
    asked.sort();
    let mut all: Vec<String> = (0..260).map(|i| format!("cust-{i}")).collect();
    all.sort();
    assert_eq!(asked, all, "every customer asked for once");

    // The same rows with one query each: Stripe gets the same bytes.
    let (per_row, mapping) = customers(250, "per-row");
    std::fs::write(&mapping, &csv).unwrap();
    per_row
        .sync(&sync_args(&mapping, &["--amberflo-batch", "1"]))
        .expect(0);
    assert_eq!(per_row.amberflo_requests().len(), 260);
    assert_eq!(stripe_bodies(&batched), stripe_bodies(&per_row));
    assert!(
        stripe_bodies(&batched)
            .iter()
            .any(|b| b.contains("payload[stripe_customer_id]=cus_255&payload[value]=0&")),
        "a customer without usage gets a 0 event, as per row"
    );
}

/// The next batches' Amberflo queries run beside the rows, not queued behind
/// them (so the row slots never idle while an answer is fetched): each in an
/// instance of its own. Twenty batches of two at a ceiling of four keep
/// queries and rows at once all through the sync; none is refused an
/// instance, and every row is billed once.
#[test]
fn batched_queries_run_beside_the_rows_and_every_row_is_billed_once() {
    let (p, mapping) = customers(40, "batch-beside");
    let run = p.sync(&sync_args(
        &mapping,
        &["--amberflo-batch", "2", "--concurrency", "4"],
    ));
    run.expect(0);
    assert_eq!(lines(&run).last().unwrap()["summary"]["recorded"], 40);
    assert_eq!(p.amberflo_requests().len(), 20);
    let (start, end) = yesterday();
    for i in 0..40 {
        let billed = p
            .stripe
            .billed("api_calls", &format!("cus_{i}"), start, end);
        assert_eq!(billed, (i + 1) as f64, "customer {i}");
    }
}

#[test]
fn a_failed_batch_query_fails_its_rows_and_sends_nothing_for_them() {
    let (p, mapping) = customers(4, "batch-fail");
    p.amberflo.push_faults([Fault::Status(400)]);
    let run = p.sync(&sync_args(
        &mapping,
        &["--amberflo-batch", "2", "--concurrency", "1"],
    ));
    run.expect(PROVIDER);
    let out = lines(&run);
    let failed: Vec<&Value> = out.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{out:?}");
    for row in &failed {
        assert_eq!(row["error"]["step"], "query-usage");
        assert_eq!(row["error"]["status"], 400);
        assert_eq!(row["error"]["delivery"], "not-sent");
    }
    assert_eq!(p.stripe.events().len(), 2, "only the other batch's rows");

    let again = p.sync(&sync_args(&mapping, &["--amberflo-batch", "2"]));
    again.expect(0);
    assert_eq!(p.stripe.events().len(), 4);
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_log_gets_lines() {
    let (p, mapping) = customers(3, "progress");
    let plain = p.sync(&sync_args(&mapping, &[]));
    plain.expect(0);
    assert!(
        plain.stderr.contains("sync: 3/3 rows (3 recorded,"),
        "{}",
        plain.stderr
    );
    assert!(!plain.stderr.contains('\r'));

    // `script` gives the command a pseudo-terminal and copies what it printed.
    std::fs::remove_file(journal_of(&p, &mapping, yesterday())).unwrap();
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let mut line = format!("{} sync", quote(BIN));
    for arg in [
        "--amberflo-url",
        &p.amberflo.url(),
        "--stripe-url",
        &p.stripe.url(),
    ]
    .into_iter()
    .map(String::from)
    .chain(sync_args(&mapping, &[]))
    {
        line.push(' ');
        line.push_str(&quote(&arg));
    }
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AMBERFLO_API_KEY", &p.amberflo_key)
        .env("STRIPE_API_KEY", &p.stripe_key)
        .env("USAGE_SYNC_STATE_DIR", &p.state_dir)
        .output()
        .expect("script(1) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\r\x1b[2Ksync [##############################] 3/3 rows"),
        "{text:?}"
    );
    assert!(!text.contains(&p.stripe_key) && !text.contains(&p.amberflo_key));
}

#[test]
fn a_nightly_sync_looks_the_meter_up_once_and_reads_each_ledger_once() {
    let (p, mapping) = customers(1000, "one-lookup");
    p.sync(&sync_args(&mapping, &[])).expect(0);
    let reads = p.stripe_reads();
    let lookups = reads
        .iter()
        .filter(|r| r.starts_with("GET /v1/billing/meters?"))
        .count();
    assert_eq!(lookups, 1, "one meter lookup per sync");
    // What Stripe holds for each ledger (customer and meter) is read before
    // writing, whatever the day's age: one summary read per ledger.
    let summaries = reads
        .iter()
        .filter(|r| r.contains("/event_summaries"))
        .count();
    assert_eq!(summaries, 1000);
    assert_eq!(p.stripe_writes().len(), 1000);
    assert_eq!(p.amberflo_requests().len(), 10);
}

/// A ledger's summaries read does not depend on its subscriptions read: it is
/// sent beside it, so a row waits two round trips for Stripe, not three. Each
/// read is held at Stripe for a while, so a row's two reads are seen in flight
/// at once; the requests themselves are the same as before, one of each.
#[test]
fn a_ledgers_summaries_are_read_beside_its_subscriptions() {
    let (p, mapping) = customers(1, "beside");
    p.stripe
        .set_read_fault(Some(Fault::Delay(std::time::Duration::from_millis(500))));
    p.sync(&sync_args(&mapping, &[])).expect(0);
    assert_eq!(
        p.stripe.peak_in_flight(),
        2,
        "the summaries and subscriptions reads overlap: {:#?}",
        p.stripe_reads()
    );
    let reads = p.stripe_reads();
    let count = |what: &str| reads.iter().filter(|r| r.contains(what)).count();
    assert_eq!(count("/event_summaries"), 1, "{reads:#?}");
    assert_eq!(count("/v1/subscriptions"), 1, "{reads:#?}");
    assert_eq!(reads.len(), 3, "with the meter lookup: {reads:#?}");
    assert_eq!(p.stripe.events().len(), 1);
}

#[test]
fn the_same_nightly_sync_runs_every_night_and_a_rerun_resumes_its_night() {
    // Three nights, each syncing its previous day; then the second night again.
    let (p, mapping) = customers(3, "nightly");
    for n in [4, 3, 2] {
        let (start, end) = days_ago(n);
        for i in 0..3 {
            p.amberflo
                .ingest(usage(&format!("cust-{i}"), "api-calls", start + 60, 1.0));
        }
        let window = window_args(start, end);
        let window: Vec<&str> = window.iter().map(String::as_str).collect();
        let night = p.sync(&sync_args(&mapping, &window));
        night.expect(0);
        assert_eq!(lines(&night)[3]["summary"]["recorded"], 3, "night {n}");
        assert!(std::path::Path::new(&journal_of(&p, &mapping, (start, end))).exists());
    }
    assert_eq!(p.stripe_writes().len(), 9);
    let window = window_args(days_ago(3).0, days_ago(3).1);
    let window: Vec<&str> = window.iter().map(String::as_str).collect();
    let rerun = p.sync(&sync_args(&mapping, &window));
    rerun.expect(0);
    assert_eq!(
        lines(&rerun)[3]["summary"]["skipped"],
        3,
        "resumed from its journal"
    );
    assert_eq!(p.stripe_writes().len(), 9, "nothing sent again");
    for n in [4, 3, 2] {
        for i in 0..3 {
            let billed = p.stripe.billed(
                "api_calls",
                &format!("cus_{i}"),
                days_ago(n).0,
                days_ago(n).1,
            );
            assert_eq!(billed, 1.0, "customer {i}, night {n}");
        }
    }
}

/// Three shards of one mapping at once, as an Indexed Job runs them: every
/// row is synced exactly once, each shard keeps its own journal, and together
/// they stay within the account's Stripe rate (each takes a third of it).
#[test]
fn three_shards_at_once_sync_every_row_exactly_once_within_the_rate() {
    let (p, mapping) = customers(30, "shards");
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..3)
        .map(|k| {
            let shard = format!("{k}/3");
            let args = sync_args(&mapping, &["--shard", &shard, "--stripe-rate", "20"]);
            // One state directory for the three shards, as on one machine.
            p.command_for("sync", &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(Run::wait).collect();
    let elapsed = started.elapsed();
    let mut recorded = 0;
    for run in &runs {
        p.assert_no_leak(run);
        run.expect(0);
        recorded += lines(run).last().unwrap()["summary"]["recorded"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(recorded, 30, "every row in exactly one shard");
    let events = p.stripe.events();
    assert_eq!(events.len(), 30);
    let customers: std::collections::BTreeSet<_> = events
        .iter()
        .map(|e| e.payload["stripe_customer_id"].clone())
        .collect();
    assert_eq!(customers.len(), 30, "no customer billed twice");
    // 95 Stripe requests (a subscriptions read, a summary read and a write
    // per row, a meter lookup per shard, and a listing of the account's
    // subscriptions per shard of ten rows or more: two of the three; it lists
    // none of these unsubscribed customers, so each is read on its own),
    // each shard paced at 20/3 per second: together no faster than 20 per
    // second.
    let requests = p.stripe_all().len();
    assert_eq!(requests, 95);
    assert!(
        elapsed.as_secs_f64() >= (requests - 3) as f64 / 20.0,
        "{requests} requests in {elapsed:?}"
    );
    for k in 0..3 {
        let (start, end) = yesterday();
        let journal = p.journal(&mapping, &format!("shard-{k}-of-3.{start}-{end}.jsonl"));
        assert!(journal.exists(), "{}", journal.display());
    }
    // A shard of another count for the same window would leave rows no
    // shard covers: refused, naming the count that ran; the same count reruns.
    let other = p.sync(&sync_args(&mapping, &["--shard", "1/2"]));
    other.expect(2);
    let message = other.error_message();
    assert!(
        message.contains("sharded 3 ways (shard 0/3, 1/3, 2/3 ran)")
            && message.contains("they cover every row"),
        "{message}"
    );
    p.sync(&sync_args(&mapping, &["--shard", "2/3"])).expect(0);
    assert_eq!(p.stripe.events().len(), 30);
}

/// A live key's meter events keep to their own limit (live mode's 1,000 a
/// second), paced by `--stripe-meter-event-rate` apart from the reads'
/// `--stripe-rate`; a test key's count against `--stripe-rate`, as in test
/// mode they count against Stripe's basic limit. How fast is for the
/// benchmark; here, that the writes' pace holds (a lower bound on the time,
/// which a slow machine only lengthens) and which pace each key gets.
#[test]
fn a_live_key_paces_meter_events_apart_from_reads() {
    let (p, mapping) = customers_of(9, "live-pace", Providers::live);
    let started = std::time::Instant::now();
    let run = p.sync(&sync_args(
        &mapping,
        &["--stripe-rate", "1000000", "--stripe-meter-event-rate", "4"],
    ));
    let elapsed = started.elapsed();
    p.assert_no_leak(&run);
    run.expect(0);
    assert!(
        run.stderr.contains(
            "Stripe paced at 1000000 requests a second, and apart from them (a live key) 4 meter events a second"
        ),
        "{}",
        run.stderr
    );
    let writes = p.stripe_writes().len();
    assert_eq!(writes, 9, "a write per row");
    assert!(
        elapsed.as_secs_f64() >= (writes - 1) as f64 / 4.0,
        "{writes} meter events in {elapsed:?}, at 4 a second"
    );
    for i in 0..9 {
        let (start, end) = yesterday();
        let billed = p
            .stripe
            .billed("api_calls", &format!("cus_{i}"), start, end);
        assert_eq!(billed, (i + 1) as f64, "customer {i}");
    }
    // The same rows with a test key: one pace, meter events included.
    let (p, mapping) = customers_of(2, "test-pace", Providers::start);
    let run = p.sync(&sync_args(
        &mapping,
        &["--stripe-rate", "1000000", "--stripe-meter-event-rate", "4"],
    ));
    run.expect(0);
    assert!(
        run.stderr.contains(
            "Stripe paced at 1000000 requests a second, meter events included (not a live key)"
        ),
        "{}",
        run.stderr
    );
}

/// Shard 0 of 2 ran; then 1 of 3 is started: refused, naming the rows no
/// shard has covered, the ones shard 1 of 2 would take.
#[test]
fn a_shard_of_another_count_is_refused_naming_the_rows_left_uncovered() {
    let (p, mapping) = customers(12, "reshard");
    let first = p.sync(&sync_args(&mapping, &["--shard", "0/2"]));
    first.expect(0);
    let done = lines(&first).last().unwrap()["summary"]["recorded"]
        .as_u64()
        .unwrap();
    let refused = p.sync(&sync_args(&mapping, &["--shard", "1/3"]));
    refused.expect(2);
    let message = refused.error_message();
    let left = 12 - done;
    assert!(
        message.contains(&format!("{left} row(s) no shard has covered yet")),
        "{message}"
    );
    assert_eq!(
        p.stripe.events().len() as u64,
        done,
        "the refused shard wrote nothing"
    );
}

/// The next sync against the same Stripe starts at half of where the last
/// one ended (at least 16), read from the state directory, instead of
/// climbing from 16 again every night.
#[test]
fn the_next_sync_starts_from_where_the_last_one_ended() {
    let (p, mapping) = customers(300, "warm");
    let args = sync_args(&mapping, &["--concurrency", "128"]);
    let first = p.sync(&args);
    first.expect(0);
    assert!(
        first
            .stderr
            .contains("16 at once at first, adapting up to 128"),
        "{}",
        first.stderr
    );
    let ended: usize = first
        .stderr
        .split("rows at once (now ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the log says where the limit ended: {}", first.stderr));
    // The next night (the same window again here: its rows are found
    // recorded, but the start is what is checked).
    let second = p.sync(&args);
    second.expect(0);
    let start = (ended / 2).clamp(16, 128);
    assert!(
        second.stderr.contains(&format!(
            "{start} at once at first (half of the {ended} the last sync against this Stripe ended with), adapting up to 128"
        )),
        "{}",
        second.stderr
    );
    assert_eq!(p.stripe.events().len(), 300, "each row billed once");
}
