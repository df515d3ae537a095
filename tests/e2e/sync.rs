//! `usage-sync sync`: many rows, one command, resumable.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use usage_sync_emulators::Fault;

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;

/// `n` customers with `i + 1` units of usage yesterday, and their mapping file.
fn customers(n: usize, name: &str) -> (Providers, PathBuf) {
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
    let dir = std::env::temp_dir().join(format!("usage-sync-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mapping = dir.join("mapping.csv");
    let mut csv = String::from("customerId,stripeCustomer\n");
    for i in 0..n {
        csv.push_str(&format!("cust-{i},cus_{i}\n"));
    }
    std::fs::write(&mapping, csv).unwrap();
    (Providers::start(records), mapping)
}

fn sync_args(mapping: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--meter-api-name",
        "api-calls",
        "--stripe-event-name",
        "api_calls",
        "--stripe-rate",
        "2000",
        "--concurrency",
        "8",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
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
    let journal = std::fs::read_to_string(format!("{}.journal.jsonl", mapping.display())).unwrap();
    assert_eq!(journal.lines().count(), 41, "a header, then a line per row");

    let again = p.sync(&sync_args(&mapping, &[]));
    again.expect(0);
    let out = lines(&again);
    assert_eq!(out[40]["summary"]["skipped"], 40);
    assert_eq!(p.stripe_requests().len(), 40, "nothing sent again");
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
    assert!(p.stripe_requests().is_empty());
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
        p.stripe_requests().len(),
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
    assert_eq!(p.stripe.events().len(), 10_000);
    eprintln!("10,000 rows in {:?}", started.elapsed());
}

#[test]
fn ctrl_c_finishes_rows_in_flight_and_records_the_rest_as_not_sent() {
    let (p, mapping) = customers(6, "interrupt");
    // Each Stripe answer takes a while, so the interrupt lands mid-sync.
    p.stripe
        .set_fault(Some(Fault::Delay(std::time::Duration::from_millis(400))));
    let mut command = std::process::Command::new(BIN);
    command
        .arg("sync")
        .args([
            "--amberflo-url",
            &p.amberflo.url(),
            "--stripe-url",
            &p.stripe.url(),
        ])
        .args(sync_args(&mapping, &["--concurrency", "2"]))
        .env_clear()
        .env("AMBERFLO_API_KEY", &p.amberflo_key)
        .env("STRIPE_API_KEY", &p.stripe_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.stripe.events().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let run = Run::wait(child);
    p.assert_no_leak(&run);
    run.expect(130);
    let summary = lines(&run).last().unwrap()["summary"].clone();
    let sent = summary["recorded"].as_u64().unwrap();
    assert!(summary["notSent"].as_u64().unwrap() > 0, "{summary}");
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
