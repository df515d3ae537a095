//! Exactly once under every fault we can inject. Each case ends with exactly one
//! event in the Stripe emulator for the window, with the value that was meant,
//! and an exit status and output that tell the truth. README has the matrix.

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use usage_sync_emulators::Fault;

const PROVIDER: i32 = 3;

/// 42 units of usage yesterday for `acme`.
fn providers() -> Providers {
    let (start, _) = yesterday();
    Providers::start(vec![usage("acme", "api-calls", start + 5, 42.0)])
}

fn assert_exactly_one_event(p: &Providers) {
    let events = p.stripe.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].payload["value"], "42");
    let (start, end) = yesterday();
    assert!(
        events[0]
            .identifier
            .starts_with(&format!("usync-{start}-{end}-"))
    );
}

fn keys(p: &Providers) -> Vec<String> {
    p.stripe_writes()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect()
}

fn succeeds(p: &Providers, extra: &[&str]) -> Value {
    let run = p.run(&with_inputs(extra));
    let out = run.expect(0).json();
    assert_exactly_one_event(p);
    out
}

#[test]
fn stripe_records_then_answers_500() {
    let p = providers();
    p.stripe.push_faults([Fault::RecordThenStatus(500)]);
    let out = succeeds(&p, &[]);
    // Stripe stored the 500 under the first key: the retry takes a fresh one, and
    // the identifier tells it the event exists.
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(out["attempts"], 2);
    let keys = keys(&p);
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn stripe_records_then_the_connection_resets() {
    let p = providers();
    p.stripe.push_faults([Fault::RecordThenReset]);
    let out = succeeds(&p, &[]);
    // The answer was lost, so the retry keeps the key and Stripe replays the 200.
    assert_eq!(out["alreadyRecorded"], false);
    assert_eq!(out["attempts"], 2);
    let keys = keys(&p);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
}

#[test]
fn stripe_records_then_the_answer_times_out() {
    let p = providers();
    p.stripe.push_faults([Fault::Delay(Duration::from_secs(5))]);
    let out = succeeds(&p, &["--request-timeout", "0.5"]);
    assert_eq!(out["alreadyRecorded"], false);
    assert_eq!(out["attempts"], 2);
    let keys = keys(&p);
    assert_eq!(keys[0], keys[1]);
}

#[test]
fn rate_limits_with_retry_after_are_waited_out() {
    let p = providers();
    let limited = Fault::TooManyRequests {
        retry_after: Some(1),
    };
    p.stripe.push_faults([limited, limited]);
    let started = Instant::now();
    let run = p.run(&INPUTS);
    let out = run.expect(0).json();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_eq!(out["attempts"], 3);
    assert_eq!(out["alreadyRecorded"], false);
    assert_exactly_one_event(&p);
    assert!(
        run.stderr
            .contains("attempt 1/3: 429 (Request rate limit exceeded."),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("retrying in 1.00 s with the same idempotency key"),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_limits_without_retry_after_back_off() {
    let p = providers();
    let limited = Fault::TooManyRequests { retry_after: None };
    p.stripe.push_faults([limited, limited]);
    let out = succeeds(&p, &[]);
    assert_eq!(out["attempts"], 3);
}

#[test]
fn a_rate_limit_storm_past_the_bound_fails_truthfully() {
    let p = providers();
    p.stripe
        .set_fault(Some(Fault::TooManyRequests { retry_after: None }));
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    let error = &run.json()["error"];
    assert_eq!(error["status"], 429);
    assert_eq!(error["attempts"], 3);
    // A 429 comes before Stripe does anything: nothing was recorded.
    assert_eq!(error["delivery"], "rejected");
    assert!(run.error_message().ends_with("no meter event was recorded"));
    assert!(p.stripe.events().is_empty());

    // A Retry-After beyond the retry budget is not waited for.
    let p = providers();
    p.stripe.set_fault(Some(Fault::TooManyRequests {
        retry_after: Some(600),
    }));
    let started = Instant::now();
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(run.json()["error"]["attempts"], 1);
    assert!(
        run.stderr.contains("giving up after 1 attempts"),
        "{}",
        run.stderr
    );
}

/// A `Retry-After` near `u64::MAX` overflowed the guest's clock arithmetic and
/// trapped it (exit 4). It is beyond the retry budget: exit 3, the truth about
/// delivery, and after a 503 that recorded the event, "may be recorded".
#[test]
fn a_retry_after_near_u64_max_ends_the_retries_truthfully() {
    let p = providers();
    p.stripe.push_faults([
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        Fault::TooManyRequests {
            retry_after: Some(u64::MAX),
        },
    ]);
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    let error = &run.json()["error"];
    assert_eq!(error["step"], "record-stripe-meter");
    assert_eq!(error["status"], 429);
    assert_eq!(error["attempts"], 2);
    assert_eq!(error["delivery"], "rejected");
    assert!(p.stripe.events().is_empty());

    let p = providers();
    p.stripe
        .push_faults([Fault::RecordThenRetryAfter(u64::MAX)]);
    let run = p.run(&INPUTS);
    run.expect(PROVIDER);
    let error = &run.json()["error"];
    assert_eq!(error["status"], 503);
    assert_eq!(error["delivery"], "unknown");
    assert!(
        run.error_message()
            .contains("the event may or may not be recorded"),
        "{}",
        run.error_message()
    );
    assert_exactly_one_event(&p);
    // The rerun the message asks for records nothing twice.
    let out = succeeds(&p, &[]);
    assert_eq!(out["alreadyRecorded"], true);
    assert_exactly_one_event(&p);
}

#[test]
fn amberflo_503_then_success() {
    let p = providers();
    p.amberflo.push_faults([Fault::Status(503)]);
    succeeds(&p, &[]);
    assert_eq!(p.amberflo_requests().len(), 2);
}

#[test]
fn two_runs_of_the_same_period_at_once() {
    let p = providers();
    let children: Vec<_> = (0..2)
        .map(|_| {
            p.command(&INPUTS)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(Run::wait).collect();
    let mut already = Vec::new();
    for run in &runs {
        p.assert_no_leak(run);
        already.push(run.expect(0).json()["alreadyRecorded"].as_bool().unwrap());
    }
    already.sort();
    assert_eq!(
        already,
        [false, true],
        "one recorded it, the other saw it recorded"
    );
    assert_exactly_one_event(&p);
}

/// Starts a run, waits until `reached` holds, then kills the host.
fn kill_when(p: &Providers, reached: impl Fn() -> bool) {
    let mut child = p
        .command(&INPUTS)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reached() {
        assert!(Instant::now() < deadline, "the run never got there");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_between_the_steps_then_run_again() {
    let p = providers();
    p.amberflo
        .set_fault(Some(Fault::Delay(Duration::from_secs(60))));
    kill_when(&p, || !p.amberflo_requests().is_empty());
    assert!(p.stripe_writes().is_empty());
    p.amberflo.set_fault(None);
    let out = succeeds(&p, &[]);
    assert_eq!(out["alreadyRecorded"], false);
}

#[test]
fn killed_after_stripe_recorded_then_run_again() {
    let p = providers();
    p.stripe
        .set_fault(Some(Fault::Delay(Duration::from_secs(60))));
    kill_when(&p, || !p.stripe.events().is_empty());
    p.stripe.set_fault(None);
    let out = succeeds(&p, &[]);
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(out["attempts"], 1);
}

#[test]
fn a_deadline_during_the_stripe_call_says_a_rerun_is_safe() {
    let p = providers();
    p.stripe
        .set_fault(Some(Fault::Delay(Duration::from_secs(60))));
    let run = p.run(&with_inputs(&["--timeout", "1"]));
    run.expect(4);
    assert!(
        run.error_message().contains(
            "deadline of 1 s; Stripe was called, so events may be recorded: rerun the same window"
        ),
        "{}",
        run.error_message()
    );
    // A run cut short after a write says so in the field a program reads.
    assert_eq!(run.json()["error"]["delivery"], "unknown");
    p.stripe.set_fault(None);
    let out = succeeds(&p, &[]);
    assert_eq!(out["alreadyRecorded"], true);
}
