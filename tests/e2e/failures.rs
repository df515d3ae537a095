//! Every failure path: its exit status, its message, and that nothing is sent
//! that should not be (Stripe is never called after a failed step 1).

use crate::support::*;
use serde_json::Value;
use usage_sync_emulators::Fault;

const BAD_INPUT: i32 = 2;
const PROVIDER: i32 = 3;

fn providers() -> Providers {
    let (start, _) = yesterday();
    Providers::start(vec![usage("acme", "api-calls", start + 5, 42.0)])
}

fn inputs() -> Vec<String> {
    let (start, end) = yesterday();
    with_inputs(&window_args(start, end))
}

fn run(p: &Providers, extra: &[&str]) -> Run {
    let mut args = inputs();
    args.extend(extra.iter().map(|s| s.to_string()));
    p.run(&args)
}

fn without(flag: &str) -> Vec<String> {
    let mut args = inputs();
    let at = args.iter().position(|a| a == flag).unwrap();
    args.drain(at..at + 2);
    args
}

fn assert_nothing_sent(p: &Providers) {
    assert!(p.amberflo_requests().is_empty(), "Amberflo was called");
    assert!(p.stripe_all().is_empty(), "Stripe was called");
}

// Step 1 failures: exit 3, and Stripe is never called.

fn step1_fails(fault: Option<Fault>, wrong_key: bool, attempts: usize) -> (Providers, Run, Value) {
    let p = providers();
    p.amberflo.set_fault(fault);
    let args = inputs();
    let run = if wrong_key {
        p.run_with_keys(&args, "amb_wrong_key_0000", &p.stripe_key)
    } else {
        p.run(&args)
    };
    run.expect(PROVIDER);
    assert_eq!(p.amberflo_requests().len(), attempts);
    assert!(
        p.stripe_writes().is_empty(),
        "Stripe must not be called after step 1 fails"
    );
    let error = run.json()["error"].clone();
    assert_eq!(error["kind"], "step-failed");
    assert_eq!(error["step"], "query-usage");
    assert_eq!(error["delivery"], "not-sent");
    assert_eq!(error["attempts"], attempts);
    (p, run, error)
}

#[test]
fn amberflo_401_stops_before_stripe() {
    let (_, run, error) = step1_fails(None, true, 1);
    assert_eq!(error["status"], 401);
    assert_eq!(
        run.error_message(),
        "step query-usage failed: Amberflo answered 401: Unauthorized; nothing was sent to Stripe"
    );
    assert!(
        run.stderr.contains("Amberflo answered 401: Unauthorized"),
        "{}",
        run.stderr
    );
}

#[test]
fn amberflo_500_stops_before_stripe() {
    // Retried as a read-only query (twice by default), then reported.
    let (_, run, error) = step1_fails(Some(Fault::Status(500)), false, 3);
    assert_eq!(error["status"], 500);
    assert!(
        run.stderr
            .contains("query-usage attempt 1/3: 500; retrying in"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("query-usage attempt 3/3: 500; giving up after 3 attempts"),
        "{}",
        run.stderr
    );
    assert!(
        run.error_message()
            .contains("Amberflo answered 500: Internal server error")
    );
}

#[test]
fn amberflo_malformed_json_stops_before_stripe() {
    let (_, run, error) = step1_fails(Some(Fault::MalformedJson), false, 1);
    assert_eq!(error["status"], 200);
    assert!(
        run.error_message()
            .contains("the response is not valid JSON"),
        "{}",
        run.error_message()
    );
}

// Step 2 failures: exit 3, Stripe's status, message and request id.

fn step2_fails(p: &Providers, run: &Run, status: u16, delivery: &str, attempts: usize) -> Value {
    run.expect(PROVIDER);
    assert_eq!(p.amberflo_requests().len(), 1);
    assert_eq!(p.stripe_writes().len(), attempts);
    assert!(p.stripe.events().is_empty());
    let error = run.json()["error"].clone();
    assert_eq!(error["step"], "record-stripe-meter");
    assert_eq!(error["status"], status);
    assert_eq!(error["delivery"], delivery);
    assert_eq!(error["attempts"], attempts);
    assert_eq!(error["recorded"], serde_json::json!([]));
    let request_id = error["requestId"].as_str().expect("Stripe's Request-Id");
    assert!(request_id.starts_with("req_"), "{request_id}");
    assert!(run.error_message().contains(request_id));
    error
}

#[test]
fn stripe_400_is_reported_with_its_message() {
    let p = providers();
    p.stripe.set_fault(Some(Fault::Status(400)));
    let run = run(&p, &[]);
    step2_fails(&p, &run, 400, "rejected", 1);
    assert!(run.error_message().contains(
        "Stripe answered 400: The request was unacceptable. (type invalid_request_error)"
    ));
    assert!(run.error_message().ends_with("no meter event was recorded"));
}

#[test]
fn stripe_401_names_the_bad_key_masked() {
    let p = providers();
    let run = p.run_with_keys(&inputs(), &p.amberflo_key, "sk_test_wrong_key_0000");
    // The meter lookup is the first request: it fails before Amberflo is asked.
    run.expect(PROVIDER);
    let error = run.json()["error"].clone();
    assert_eq!(error["step"], "find-meter");
    assert_eq!(error["status"], 401);
    assert_eq!(error["delivery"], "not-sent");
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_writes().is_empty());
    assert!(
        run.error_message()
            .ends_with("; nothing was written to Stripe"),
        "{}",
        run.error_message()
    );
    assert!(
        run.error_message()
            .contains("Stripe answered 401: Invalid API Key provided: sk_test_**********0000"),
        "{}",
        run.error_message()
    );
}

#[test]
fn stripe_402_is_reported() {
    let p = providers();
    p.stripe.set_fault(Some(Fault::Status(402)));
    let run = run(&p, &[]);
    step2_fails(&p, &run, 402, "rejected", 1);
    assert!(
        run.error_message()
            .contains("Stripe answered 402: The request failed")
    );
}

#[test]
fn stripe_5xx_leaves_delivery_unknown_and_says_a_rerun_is_safe() {
    for status in [500, 503] {
        let p = providers();
        p.stripe.set_fault(Some(Fault::Status(status)));
        let run = run(&p, &[]);
        step2_fails(&p, &run, status, "unknown", 3);
        // After a 5xx, which Stripe stores under its key, each retry takes a fresh key.
        let keys: std::collections::HashSet<_> = p
            .stripe_writes()
            .iter()
            .map(|r| r.header("idempotency-key").unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), 3);
        let message = run.error_message();
        assert!(
            message.contains("An unknown error occurred (type api_error)"),
            "{message}"
        );
        assert!(message.contains("rerun the same window"), "{message}");
    }
}

// Bad input: exit 2, and no request at all.

#[test]
fn missing_inputs_send_nothing() {
    for (flag, name) in [
        ("--customer-id", "customerId"),
        ("--meter-api-name", "meterApiName"),
        ("--stripe-customer", "stripeCustomer"),
        ("--stripe-event-name", "stripeEventName"),
    ] {
        let p = providers();
        let run = p.run(&without(flag));
        run.expect(BAD_INPUT);
        assert_eq!(
            run.error_message(),
            format!("invalid input: `{name}` is required; nothing was sent")
        );
        assert_nothing_sent(&p);
    }
}

#[test]
fn invalid_inputs_send_nothing() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--usage-quantity", "4.5"],
            "`usageQuantity` must be a whole number like 42 (got `4.5`)",
        ),
        (
            &["--usage-quantity", "1000000000000000"],
            "more than Stripe's 15 significant digits",
        ),
        (
            &["--stripe-event-name", &"e".repeat(101)],
            "longer than Stripe's limit of 100 characters",
        ),
        (
            &["--start-time", "yesterday"],
            "`startTime` `yesterday` is neither Unix seconds nor an RFC 3339",
        ),
        (&["--end-time", "1"], "the window must end after it starts"),
    ];
    for (extra, expected) in cases {
        let p = providers();
        let run = run(&p, extra);
        run.expect(BAD_INPUT);
        assert!(
            run.error_message().contains(expected),
            "{extra:?}: {}",
            run.error_message()
        );
        assert_nothing_sent(&p);
    }
}

#[test]
fn windows_outside_stripes_range_send_nothing() {
    let today = now().div_euclid(DAY) * DAY;
    let old = (today - 40 * DAY).to_string();
    let older = (today - 41 * DAY).to_string();
    let future = (today + 2 * DAY).to_string();
    let today = today.to_string();
    let cases = [
        (older.as_str(), old.as_str(), "more than 35 days ago"),
        (
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "more than 35 days ago",
        ),
        (today.as_str(), future.as_str(), "in the future"),
    ];
    for (start, end, expected) in cases {
        let p = providers();
        let run = run(&p, &["--start-time", start, "--end-time", end]);
        run.expect(BAD_INPUT);
        assert!(
            run.error_message().contains(expected),
            "{}",
            run.error_message()
        );
        assert_nothing_sent(&p);
    }
}

#[test]
fn a_fractional_amberflo_total_is_not_rounded_silently() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 12.5)]);
    let run = run(&p, &[]);
    run.expect(BAD_INPUT);
    assert!(
        run.error_message()
            .contains("the Amberflo total 12.5 is not a whole number"),
        "{}",
        run.error_message()
    );
    assert_eq!(p.amberflo_requests().len(), 1);
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn bad_configuration_sends_nothing() {
    let p = providers();
    let dir = std::env::temp_dir().join(format!("usage-sync-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.json");
    std::fs::write(&typo, r#"{"customerID": "acme"}"#).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--inputs", typo.to_str().unwrap()],
            "unknown field `customerID`",
        ),
        (
            vec!["--inputs", "/nonexistent/inputs.json"],
            "cannot read the inputs file",
        ),
        (
            vec!["--stripe-url", "http://api.stripe.com"],
            "plain HTTP is allowed only to loopback",
        ),
        (
            vec!["--component", "/nonexistent/x.wasm"],
            "cannot read the component",
        ),
        // Files that never end: refused at their cap, not read until the
        // memory runs out.
        (
            vec!["--inputs", "/dev/zero"],
            "the inputs file /dev/zero is over 1048576 bytes",
        ),
        (
            vec!["--ca-file", "/dev/zero"],
            "the CA file /dev/zero is over 16777216 bytes",
        ),
        (
            vec!["--component", "/dev/zero"],
            "the component /dev/zero is over 268435456 bytes",
        ),
        (
            vec!["--timeout", "0"],
            "--timeout must be a positive number of seconds",
        ),
        // Each numeric flag is bounded: these panicked or wrapped around.
        (
            vec!["--timeout", "1e300"],
            "--timeout must be a positive number of seconds, at most 86400",
        ),
        (
            vec!["--request-timeout", "inf"],
            "--request-timeout must be a positive number of seconds",
        ),
        (
            vec!["--retry-budget=-1"],
            "--retry-budget must be a number of seconds from 0 to 86400",
        ),
        (
            vec!["--max-memory-mib", "18446744073709551615"],
            "--max-memory-mib must be between 1 and 4096",
        ),
        (
            vec!["--max-requests", "0"],
            "--max-requests must be at least 1",
        ),
        (
            vec!["--max-retries", "4000000000"],
            "--max-retries must be at most 100",
        ),
    ];
    for (extra, expected) in cases {
        let run = run(&p, &extra);
        run.expect(BAD_INPUT);
        assert!(
            run.error_message().contains(expected),
            "{extra:?}: {}",
            run.error_message()
        );
    }
    // Keys come only from the environment.
    let args = inputs();
    let run = Run::exec(
        std::process::Command::new(BIN)
            .arg("run")
            .args(&args)
            .args([
                "--amberflo-url",
                &p.amberflo.url(),
                "--stripe-url",
                &p.stripe.url(),
            ])
            .env_clear()
            .env("AMBERFLO_API_KEY", &p.amberflo_key),
    );
    run.expect(BAD_INPUT);
    assert!(run.error_message().contains("STRIPE_API_KEY is not set"));
    p.assert_no_leak(&run);
    assert_nothing_sent(&p);
}

#[test]
fn a_provider_that_does_not_answer_in_time_is_a_clear_failure() {
    let p = providers();
    p.amberflo
        .set_fault(Some(Fault::Delay(std::time::Duration::from_secs(5))));
    let run = run(&p, &["--request-timeout", "0.3"]);
    run.expect(PROVIDER);
    assert_eq!(
        run.error_message(),
        "step query-usage failed: no response in time; nothing was sent to Stripe"
    );
    assert!(p.stripe_writes().is_empty());
}

/// Answers under the response cap (8 MiB) made of as many small values as
/// fit, in the shapes that cost the reader most memory a value: each is a
/// step failure that names the answer, never the component running out of
/// its 64 MiB. Past a million values the answer is refused unread; under it,
/// read and refused for what it is.
#[test]
fn answers_of_millions_of_tiny_values_are_refused_by_name() {
    let over = "more than 1048576 values";
    for (items, item, why) in [
        (3_500_000, "0", over),
        (1_500_000, "[0]", over),
        (1_100_000, r#"{"":0}"#, over),
        (1_100_000, "[]", over),
        // Each unescaped into an allocation of its own.
        (900_000, r#""\u0041""#, over),
        // Under the budget: one value each, read whole, then refused.
        (1_000_000, "{}", "groups for the one customer"),
        (500_000, r#"{"":0}"#, "groups for the one customer"),
        (500_000, "[0]", "groups for the one customer"),
    ] {
        let p = providers();
        let many = vec![item; items].join(",");
        p.amberflo
            .answer_next_with(&format!(r#"{{"metadata":{{}},"clientMeters":[{many}]}}"#));
        eprintln!("{items} x {item}");
        refused(&p, why);
    }
    // One object of 600,000 keys (7 MB, under the value limit) ran the
    // component out of memory too.
    let p = providers();
    let keys: Vec<String> = (0..600_000).map(|i| format!(r#""k{i}":0"#)).collect();
    p.amberflo.answer_next_with(&format!(
        r#"{{"metadata":{{}},"clientMeters":[{{{}}}]}}"#,
        keys.join(",")
    ));
    refused(&p, "an object has more than 10000 keys");
}
