//! Hostile components, run by the real host through `--component`: every
//! attempt is stopped with a specific error, nothing reaches a server it should
//! not, and no key is seen (every run is scanned by `Providers::run`).

use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use usage_sync_emulators::Fault;

const SANDBOX: i32 = 4;

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn nothing_received(p: &Providers) {
    assert!(
        p.amberflo_requests().is_empty(),
        "{:?}",
        p.amberflo_requests()
    );
    assert!(p.stripe_all().is_empty(), "{:?}", p.stripe_all());
}

#[test]
fn look_alike_authorities_are_refused() {
    let p = Providers::start(vec![]);
    let sport = port(&p.stripe.url());
    // Stripe by name, so that names can be played with.
    let stripe = format!("http://localhost:{sport}");
    for (url, named) in [
        (format!("http://localhost.:{sport}/v1/x"), "localhost.:"),
        (
            format!("http://localhost.evil.test:{sport}/v1/x"),
            "localhost.evil.test",
        ),
        (
            format!("http://evil.test@localhost:{sport}/v1/x"),
            "evil.test@localhost",
        ),
        (
            format!("http://localhost:{sport}@evil.test/v1/x"),
            "@evil.test",
        ),
        (format!("http://127.0.0.1:{sport}/v1/x"), "127.0.0.1"),
        (format!("http://[::1]:{sport}/v1/x"), "[::1]"),
        (
            format!("https://localhost:{sport}/v1/x"),
            "https://localhost",
        ),
        (format!("http://localhost:{}/v1/x", sport + 1), "localhost:"),
        (
            format!("http://xn--lcalhost-9fg:{sport}/v1/x"),
            "xn--lcalhost-9fg",
        ),
        ("http://192.0.2.1/".to_string(), "192.0.2.1"),
    ] {
        let run = probe(&p, "get", &url, &["--stripe-url", &stripe]);
        run.expect(SANDBOX);
        let message = run.error_message();
        assert!(
            message.starts_with("sandbox: refused a request to"),
            "{url}: {message}"
        );
        assert!(message.contains(named), "{url}: {message}");
    }
    nothing_received(&p);

    // Case does not make another host: mixed case reaches Stripe, with Stripe's key.
    let url = format!("http://LocalHost:{sport}/v1/billing/meters");
    probe(&p, "get", &url, &["--stripe-url", &stripe]).expect(0);
    let requests = p.stripe_all();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {}", p.stripe_key).as_str())
    );
}

#[test]
fn malformed_requests_never_leave_the_host() {
    let p = Providers::start(vec![]);
    let authority = p.stripe.url().trim_start_matches("http://").to_string();
    let cyrillic = authority.replace("127.0.0.1", "lоcalhost");
    for (scheme, authority, path) in [
        ("http", "<none>", "/v1/x"),
        ("http", "", "/v1/x"),
        ("http", cyrillic.as_str(), "/v1/x"),
        ("http", authority.as_str(), "http://evil.test/v1/x"),
    ] {
        let run = probe(
            &p,
            "raw",
            authority,
            &["--stripe-event-name", scheme, "--stripe-customer", path],
        );
        let out = run.expect(0).json();
        let result = out["usageResult"]["result"].as_str().unwrap();
        assert!(
            result.starts_with("refused at handle"),
            "{authority} {path}: {result}"
        );
    }
    // A scheme other than http(s) is the sandbox's to report.
    let run = probe(
        &p,
        "raw",
        &authority,
        &["--stripe-event-name", "ftp", "--stripe-customer", "/v1/x"],
    );
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("refused a request to ftp:: only http and https are allowed"),
        "{}",
        run.error_message()
    );
    nothing_received(&p);
}

#[test]
fn keys_cannot_be_read_back_or_carried_to_the_other_provider() {
    let p = Providers::start(vec![]);
    // Both providers turn hostile and echo every request back, keys included.
    p.amberflo.set_fault(Some(Fault::Echo));
    p.stripe.set_read_fault(Some(Fault::Echo));
    let run = probe(
        &p,
        "exfiltrate",
        &format!("{}/v1/billing/meters", p.stripe.url()),
        &["--stripe-customer", &format!("{}/usage", p.amberflo.url())],
    );
    let out = run.expect(0).json();
    // What the guest saw of Stripe's echo, and then sent to Amberflo.
    let sent: Value = serde_json::from_str(p.amberflo_requests()[0].body_text().as_str()).unwrap();
    assert_eq!(
        sent["headers"]["x-echo-authorization"], "[redacted]",
        "{sent}"
    );
    assert!(
        sent["body"]
            .as_str()
            .unwrap()
            .contains(r#""authorization": "Bearer [redacted]""#),
        "{sent}"
    );
    assert_eq!(out["usageResult"]["status"], 200);
    // Providers::run has already checked that the Amberflo key never reached
    // Stripe and that no key is in stdout or stderr.
}

#[test]
fn hundreds_of_requests_at_once_are_refused() {
    let p = Providers::start(vec![]);
    p.stripe
        .set_read_fault(Some(Fault::Delay(Duration::from_secs(2))));
    let meters = format!("{}/v1/billing/meters", p.stripe.url());
    let run = probe(&p, "many", &meters, &[]);
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("more than 16 requests waiting at once"),
        "{}",
        run.error_message()
    );
    assert!(p.stripe_all().len() <= 16, "{}", p.stripe_all().len());
}

#[test]
fn the_request_budget_of_a_run_is_enforced() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 1.0)]);
    let run = p.run(&with_inputs(&["--max-requests", "1"]));
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("more than 1 requests in one run"),
        "{}",
        run.error_message()
    );
    // The one request allowed was the meter lookup: nothing was written.
    assert_eq!(p.stripe_all().len(), 1);
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn an_endless_response_is_cut_off() {
    let p = Providers::start(vec![]);
    p.stripe.set_read_fault(Some(Fault::EndlessBody));
    let run = probe(
        &p,
        "get",
        &format!("{}/v1/billing/meters", p.stripe.url()),
        &["--max-response-bytes", "1000000"],
    );
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("exceeded the limit of 1000000 bytes"),
        "{}",
        run.error_message()
    );
}

#[test]
fn a_panicking_component_is_contained() {
    let p = Providers::start(vec![]);
    let run = probe(&p, "panic", "", &[]);
    run.expect(SANDBOX);
    assert!(
        run.error_message().starts_with(
            "sandbox: the component crashed (wasm trap: wasm `unreachable` instruction executed); nothing was written to Stripe"
        ),
        "{}",
        run.error_message()
    );
    // The guest's panic message reaches stderr through the host.
    assert!(
        run.stderr.contains("the probe panics on purpose"),
        "{}",
        run.stderr
    );
}

/// The keys reach only the routes the workflow's Arazzo document declares: a
/// stolen component cannot refund, pay out, list or delete customers, or
/// ingest fabricated usage, nor slip past the list with a path a server would
/// normalise. Each is refused before any key is attached or any connection made.
#[test]
fn only_the_declared_routes_are_reachable() {
    let p = Providers::start(vec![]);
    let (stripe, amberflo) = (p.stripe.url(), p.amberflo.url());
    let attempts = [
        ("POST", format!("{stripe}/v1/refunds"), "charge=ch_1"),
        (
            "POST",
            format!("{stripe}/v1/payouts"),
            "amount=100000&currency=usd",
        ),
        ("GET", format!("{stripe}/v1/customers"), ""),
        ("DELETE", format!("{stripe}/v1/customers/cus_1"), ""),
        ("POST", format!("{amberflo}/ingest"), "[]"),
        // A route of one provider, on the other's origin.
        ("POST", format!("{amberflo}/v1/billing/meter_events"), ""),
        ("POST", format!("{stripe}/usage"), "{}"),
        // Normalisation tricks, each around a declared route.
        (
            "GET",
            format!("{stripe}/v1/billing/meters/../../v1/customers"),
            "",
        ),
        (
            "GET",
            format!("{stripe}/v1/billing/meters/%2e%2e/%2e%2e/v1/customers"),
            "",
        ),
        (
            "GET",
            format!("{stripe}/v1/billing/meters/x%2F..%2F..%2Fcustomers/event_summaries"),
            "",
        ),
        ("POST", format!("{stripe}//v1/billing/meter_events"), ""),
        (
            "POST",
            format!("{stripe}/v1/billing/meter_events%3Fidentifier=x"),
            "",
        ),
        (
            "POST",
            format!("{stripe}/v1/billing/meter_events?event_name=x"),
            "",
        ),
        ("GET", format!("{stripe}/V1/billing/meters"), ""),
        ("POST", format!("{stripe}/v1/billing/meter_events;x=1"), ""),
        ("PUT", format!("{stripe}/v1/billing/meter_events"), ""),
    ];
    for (method, url, body) in &attempts {
        let run = probe(
            &p,
            "call",
            url,
            &["--stripe-event-name", method, "--stripe-customer", body],
        );
        run.expect(SANDBOX);
        let message = run.error_message();
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
        let path = path.split('?').next().unwrap();
        assert!(
            message.starts_with("sandbox: refused a request to")
                && message.contains(&format!("{method} {path}"))
                && message.contains("is not a route of the workflow"),
            "{method} {url}: {message}"
        );
    }
    nothing_received(&p);
}
