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
    let mapping = write_mapping("tls-mapping", 50);
    // 50 rows over TLS, 8 at once, with `extra` flags and a journal of their
    // own: 152 requests reach Stripe (the meter, a listing of the account's
    // subscriptions that holds none of these unsubscribed customers, then
    // per row its subscriptions, its summary and a write).
    let synced = |offered: &[&[u8]], extra: &[&str], journal: &str| {
        let (start, _) = yesterday();
        let records = (0..50)
            .map(|i| usage(&format!("cust-{i}"), "api-calls", start + 5, 1.0))
            .collect();
        let mut config = (*ca.server_config(Presented::Good)).clone();
        config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let p = Providers::over_tls_as(records, std::sync::Arc::new(config));
        let journal = mapping
            .with_extension(journal)
            .to_string_lossy()
            .into_owned();
        let mut args = vec![
            "--stripe-rate",
            "100000",
            "--concurrency",
            "8",
            "--ca-file",
            &file,
            "--journal",
            &journal,
        ];
        args.extend(extra);
        p.sync(&mapping_args(&mapping, &args)).expect(0);
        assert_eq!(p.stripe.events().len(), 50);
        assert_eq!(p.stripe_all().len(), 152);
        p
    };
    // Every HTTP version both providers were spoken to in.
    let versions = |p: &Providers| {
        let mut v: Vec<String> = p.stripe_all().into_iter().map(|r| r.version).collect();
        v.extend(p.amberflo.requests().into_iter().map(|r| r.version));
        v.sort();
        v.dedup();
        v
    };

    // The emulators offer HTTP/2 by ALPN, as Stripe does: every request
    // rides one connection per provider, but for those opened at the very
    // start, before the first handshake said h2 (at most one per row in
    // flight).
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let p = synced(both, &[], "h2.jsonl");
    assert_eq!(versions(&p), ["HTTP/2.0"]);
    let handshakes = p.stripe.connections();
    eprintln!("HTTP/2: {handshakes} TLS handshakes for 152 Stripe requests");
    assert!(handshakes <= 8, "{handshakes} handshakes");
    assert_eq!(p.amberflo.connections(), 1);

    // `--http1`: keep-alive connections pooled per origin, about one
    // handshake per row in flight (8; under load a connection may be opened
    // while another is on its way back to the pool), far from one per
    // request.
    let p = synced(both, &["--http1"], "http1.jsonl");
    assert_eq!(versions(&p), ["HTTP/1.1"]);
    let handshakes = p.stripe.connections();
    eprintln!("HTTP/1.1: {handshakes} TLS handshakes for 152 Stripe requests");
    assert!(handshakes < 152 / 6, "{handshakes} handshakes");
    assert_eq!(p.amberflo.connections(), 1);

    // A server that offers HTTP/1.1 alone (a proxy that re-signs TLS, say):
    // the default flags fall back to it, on pooled connections; and so does
    // one that names no protocol at all.
    for (offered, journal) in [
        (&[&b"http/1.1"[..]][..], "fallback.jsonl"),
        (&[][..], "none.jsonl"),
    ] {
        let p = synced(offered, &[], journal);
        assert_eq!(versions(&p), ["HTTP/1.1"], "offered {offered:?}");
        let handshakes = p.stripe.connections();
        assert!(handshakes < 152 / 6, "{handshakes} handshakes");
    }
}

/// The emulators allow 100 requests at once on an HTTP/2 connection (the
/// fewest a server should, RFC 9113), as a provider may. One connection then
/// held every row past that waiting for a stream; now, past 100 in flight,
/// the next request opens another connection, alone, and the rest follow on
/// it once it answers: Stripe sees more than 100 at once, on a few
/// connections, and every row is billed once.
#[test]
fn past_a_connections_streams_http2_opens_another_connection() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "lanes");
    let mapping = write_mapping("lanes-mapping", 300);
    let (start, _) = yesterday();
    let records = (0..300)
        .map(|i| usage(&format!("cust-{i}"), "api-calls", start + 5, 1.0))
        .collect();
    let p = Providers::over_tls_as(records, ca.server_config(Presented::Good));
    // Each read held a while, so the rows' reads pile up at Stripe.
    p.stripe
        .set_read_fault(Some(Fault::Delay(std::time::Duration::from_millis(300))));
    let args = ["--stripe-rate", "100000", "--ca-file", &file];
    p.sync(&mapping_args(&mapping, &args)).expect(0);
    assert_eq!(p.stripe.events().len(), 300, "every row billed once");
    let (peak, handshakes) = (p.stripe.peak_in_flight(), p.stripe.connections());
    eprintln!("{peak} requests at once at Stripe on {handshakes} connections");
    assert!(
        peak > usage_sync_emulators::MAX_STREAMS as usize,
        "{peak} at once"
    );
    assert!((2..=8).contains(&handshakes), "{handshakes} connections");
    let versions: Vec<String> = p.stripe_all().into_iter().map(|r| r.version).collect();
    assert!(versions.iter().all(|v| v == "HTTP/2.0"));
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

/// A loopback `CONNECT` proxy that records what it saw: each request head,
/// and every byte the client sent through its tunnels.
struct Proxy {
    address: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tunnelled: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

fn start_proxy() -> Proxy {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let tunnelled = Arc::new(Mutex::new(Vec::new()));
    let (seen_heads, seen_bytes) = (heads.clone(), tunnelled.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (heads, bytes) = (seen_heads.clone(), seen_bytes.clone());
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                heads.lock().unwrap().push(head.clone());
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split(' ').next())
                else {
                    return;
                };
                let Ok(upstream) = std::net::TcpStream::connect(target) else {
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut from_client, mut to_upstream) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut from_upstream, mut to_client) = (upstream, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_upstream, &mut to_client);
                });
                let mut buffer = [0u8; 16 << 10];
                while let Ok(n) = from_client.read(&mut buffer) {
                    if n == 0 || to_upstream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
                let _ = to_upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Proxy {
        address,
        heads,
        tunnelled,
    }
}

/// HTTPS goes through the proxy the environment names, as a `CONNECT`
/// tunnel: the proxy learns the provider's host and port and sees TLS, never
/// a key or a body. Its credentials never show in any output; `NO_PROXY`
/// sends a host around it.
#[test]
fn https_tunnels_through_the_environments_proxy_which_sees_only_tls() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "proxy");
    let p = providers(&ca, Presented::Good);
    let proxy = start_proxy();
    let proxy_url = format!("http://billing:secret-proxy-pass@{}", proxy.address);
    let run = Run::exec(
        p.command(&with_inputs(&["--ca-file", &file]))
            .env("HTTPS_PROXY", &proxy_url),
    );
    p.assert_no_leak(&run);
    run.expect(0);
    assert_eq!(p.billed(yesterday()), 42.0);
    assert!(!run.stdout.contains("secret-proxy-pass") && !run.stderr.contains("secret-proxy-pass"));

    let heads = proxy.heads.lock().unwrap().clone();
    let port = |url: String| url.rsplit(':').next().unwrap().to_string();
    for provider_port in [port(p.stripe.url()), port(p.amberflo.url())] {
        assert!(
            heads
                .iter()
                .any(|h| h.starts_with(&format!("CONNECT localhost:{provider_port} HTTP/1.1"))),
            "{heads:?}"
        );
    }
    // Basic auth of billing:secret-proxy-pass, on the CONNECT only.
    assert!(
        heads
            .iter()
            .all(|h| h.contains("YmlsbGluZzpzZWNyZXQtcHJveHktcGFzcw==")),
        "{heads:?}"
    );
    let tunnelled = proxy.tunnelled.lock().unwrap().clone();
    assert!(!tunnelled.is_empty());
    for plain in [
        p.stripe_key.as_bytes(),
        p.amberflo_key.as_bytes(),
        b"event_name=",
        b"meterApiName",
        b"POST /",
    ] {
        assert!(
            !tunnelled.windows(plain.len()).any(|w| w == plain),
            "the proxy saw {:?} in the clear",
            String::from_utf8_lossy(plain)
        );
    }

    // NO_PROXY: straight to the provider; the proxy sees nothing more.
    let before = proxy.heads.lock().unwrap().len();
    let p = providers(&ca, Presented::Good);
    let run = Run::exec(
        p.command(&with_inputs(&["--ca-file", &file]))
            .env("HTTPS_PROXY", &proxy_url)
            .env("NO_PROXY", "localhost"),
    );
    run.expect(0);
    assert_eq!(proxy.heads.lock().unwrap().len(), before);
}

/// A run asks Stripe for the meter, then Amberflo for the usage: Amberflo's
/// connection (TCP and TLS, two round trips on a real network) is opened
/// while Stripe answers, and Amberflo's request then goes on it: one
/// handshake, made before the request was asked for. Stripe's meter answer
/// is held 3 s, far longer than a loopback handshake takes.
#[test]
fn amberflos_connection_opens_while_stripe_answers_the_meter_lookup() {
    let ca = TestCa::new("usage-sync test CA");
    let file = ca_file(&ca, "ahead");
    let p = providers(&ca, Presented::Good);
    p.stripe
        .push_read_faults([Fault::Delay(std::time::Duration::from_secs(3))]);
    let opened_ahead = std::thread::scope(|s| {
        let run = s.spawn(|| p.run(&with_inputs(&["--ca-file", &file])));
        let mut opened_ahead = false;
        while !run.is_finished() && p.amberflo_requests().is_empty() {
            // Read in this order: a connection seen before any request.
            let connected = p.amberflo.connections() > 0;
            opened_ahead |= connected && p.amberflo_requests().is_empty();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        run.join().unwrap().expect(0);
        opened_ahead
    });
    assert!(
        opened_ahead,
        "Amberflo's connection was open while Stripe held the meter lookup"
    );
    assert_eq!(p.amberflo.connections(), 1, "and the request took it");
    assert_eq!(p.amberflo_requests().len(), 1);
    assert_eq!(p.billed(yesterday()), 42.0);
}
