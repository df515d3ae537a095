//! The production network path, on loopback: the emulators serve HTTPS with a
//! certificate authority made for the test, as a private CA or a proxy that
//! re-signs TLS would. The workflow runs over it when told to trust that CA,
//! and a certificate it must not trust is refused before any byte of the
//! request is sent, in words, never retried.

use crate::support::*;
use serde_json::Value;
use usage_sync_emulators::{Fault, Presented, TestCa};

const SANDBOX: i32 = 4;

/// The CA's certificate in a file, as an operator would give it.
fn ca_file(ca: &TestCa, name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("usage-sync-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path.to_str().unwrap().to_string()
}

fn providers(ca: &TestCa, presented: Presented) -> Providers {
    let (start, _) = yesterday();
    Providers::over_tls(
        vec![usage("acme", "api-calls", start + 5, 42.0)],
        ca,
        presented,
    )
}

#[test]
fn the_workflow_runs_over_tls_trusting_a_private_ca() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "trusted");
    let p = providers(&ca, Presented::Good);
    assert!(p.stripe.url().starts_with("https://localhost:"));
    let out: Value = p.run(&with_inputs(&["--ca-file", &file])).expect(0).json();
    assert_eq!(out["usageQuantity"], "42");
    assert_eq!(p.billed(yesterday()), 42.0);
    // The keys went inside TLS to their own provider.
    let bearer = format!("Bearer {}", p.stripe_key);
    assert_eq!(
        p.stripe_writes()[0].header("authorization"),
        Some(bearer.as_str())
    );

    // SSL_CERT_FILE, as OpenSSL-based tools read it; and only that CA.
    let p = providers(&ca, Presented::Good);
    let run = Run::exec(p.command(&INPUTS).env("SSL_CERT_FILE", &file));
    run.expect(0);
    let p = providers(&ca, Presented::Good);
    p.run(&with_inputs(&["--ca-file", &file, "--ca-file-only"]))
        .expect(0);
    assert_eq!(p.billed(yesterday()), 42.0);

    // A core row of the fault matrix: Stripe records, then answers 500.
    let p = providers(&ca, Presented::Good);
    p.stripe.push_faults([Fault::RecordThenStatus(500)]);
    let out = p.run(&with_inputs(&["--ca-file", &file])).expect(0).json();
    assert_eq!(out["alreadyRecorded"], true);
    assert_eq!(p.stripe.events().len(), 1);
}

#[test]
fn sync_runs_over_tls_on_pooled_connections() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "sync");
    let (start, _) = yesterday();
    let records = (0..50)
        .map(|i| usage(&format!("cust-{i}"), "api-calls", start + 5, 1.0))
        .collect();
    let p = Providers::over_tls(records, &ca, Presented::Good);
    let dir = std::env::temp_dir().join(format!("usage-sync-tls-mapping-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mapping = dir.join("mapping.csv");
    let mut csv = String::from("customerId,stripeCustomer\n");
    for i in 0..50 {
        csv.push_str(&format!("cust-{i},cus_{i}\n"));
    }
    std::fs::write(&mapping, csv).unwrap();
    let run = p.sync(&[
        "--mapping",
        mapping.to_str().unwrap(),
        "--meter-api-name",
        "api-calls",
        "--stripe-event-name",
        "api_calls",
        "--stripe-rate",
        "100000",
        "--concurrency",
        "8",
        "--ca-file",
        &file,
    ]);
    run.expect(0);
    assert_eq!(p.stripe.events().len(), 50);
    // Keep-alive connections pooled per origin: about one handshake per row
    // in flight, not one per request (51 requests reached Stripe).
    assert_eq!(p.stripe_all().len(), 51);
    assert!(
        p.stripe.connections() <= 8 + 1,
        "{} handshakes",
        p.stripe.connections()
    );
    assert_eq!(p.amberflo.connections(), 1);
}

#[test]
fn an_untrusted_certificate_is_refused_before_sending_and_never_retried() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "refused");
    for (presented, trust, reason) in [
        (
            Presented::Good,
            None,
            "it is not signed by a certificate authority this host trusts",
        ),
        (
            Presented::OtherName,
            Some(&file),
            "it is for another host name",
        ),
        (Presented::Expired, Some(&file), "it has expired"),
    ] {
        let p = providers(&ca, presented);
        let mut args = with_inputs::<&str>(&[]);
        if let Some(file) = trust {
            args.extend(["--ca-file".to_string(), file.clone()]);
        }
        let run = p.run(&args);
        run.expect(SANDBOX);
        let message = run.error_message();
        assert!(
            message.contains("the TLS certificate of localhost was refused")
                && message.contains(reason),
            "{presented:?}: {message}"
        );
        assert_eq!(run.json()["error"]["delivery"], "not-sent");
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
        // The handshake failed: no request reached either emulator.
        assert!(p.stripe_all().is_empty() && p.amberflo_requests().is_empty());
    }
    // Another CA, as a re-signing proxy nobody configured would present.
    let other = TestCa::new("someone else's CA");
    let p = providers(&other, Presented::Good);
    let run = p.run(&with_inputs(&["--ca-file", &file]));
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("not signed by a certificate authority this host trusts")
    );
}

#[test]
fn a_bad_trust_configuration_is_bad_input() {
    let p = Providers::start(vec![]);
    let dir = std::env::temp_dir().join(format!("usage-sync-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for (extra, expected) in [
        (
            vec!["--ca-file", "/nonexistent/ca.pem"],
            "cannot read the CA file /nonexistent/ca.pem",
        ),
        (
            vec!["--ca-file", junk.to_str().unwrap()],
            "holds no certificate",
        ),
        (vec!["--ca-file-only"], "--ca-file-only needs --ca-file"),
    ] {
        let run = p.run(&with_inputs(&extra));
        run.expect(2);
        assert!(
            run.error_message().contains(expected),
            "{}",
            run.error_message()
        );
    }
    assert!(p.stripe_all().is_empty() && p.amberflo_requests().is_empty());
}
