//! The component's HTTP entry point, `POST /run`: served by `usage-sync serve`
//! (our sandbox: the host attaches the keys) and by `wasmtime serve` (a host
//! nobody here wrote: the keys are in the component's environment). Both answer
//! exactly what `usage-sync run` prints for the same inputs.

use crate::support::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use usage_sync_emulators::Fault;

fn inputs(start: i64, end: i64) -> Value {
    json!({
        "customerId": "acme", "meterApiName": "api-calls",
        "stripeCustomer": "cus_Acme", "stripeEventName": "api_calls",
        "startTime": start, "endTime": end,
    })
}

fn records(start: i64) -> Vec<usage_sync_emulators::UsageRecord> {
    vec![usage("acme", "api-calls", start + 60, 42.0)]
}

/// What `POST /run` callers present in these tests.
const TOKEN: &str = "serve-token-for-tests-0001";

/// `usage-sync serve` with the keys and the token in its environment.
fn serve_command(p: &Providers, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--amberflo-url", &p.amberflo.url()])
        .args(["--stripe-url", &p.stripe.url()])
        .args(extra)
        .env_clear()
        .env("AMBERFLO_API_KEY", &p.amberflo_key)
        .env("STRIPE_API_KEY", &p.stripe_key);
    command
}

fn usage_sync_serve(p: &Providers) -> Server {
    Server::start(serve_command(p, &[]).env("USAGE_SYNC_SERVE_TOKEN", TOKEN))
}

/// POSTs `body` to `/run` with the token; checks the answer for keys and the
/// token like every run's output.
fn post_run(p: &Providers, server: &Server, body: &Value) -> (u16, Value) {
    post_run_as(p, server, Some(TOKEN), body)
}

fn post_run_as(p: &Providers, server: &Server, token: Option<&str>, body: &Value) -> (u16, Value) {
    let bearer = token.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = bearer.iter().map(String::as_str).collect();
    let (status, text) = http_with(&server.address, "POST", "/run", &headers, &body.to_string());
    let stderr = server.stderr.lock().unwrap().join("\n");
    p.assert_no_leak(&Run {
        code: 0,
        stdout: text.clone(),
        stderr: stderr.clone(),
    });
    assert!(
        !text.contains(TOKEN) && !stderr.contains(TOKEN),
        "the token leaked"
    );
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

/// `usage-sync run` of the same inputs on its own emulators: what it prints.
fn cli(start: i64, end: i64, extra: &[&str], fault: Option<Fault>) -> (i32, Value, Providers) {
    let p = Providers::start(records(start));
    p.stripe.set_fault(fault);
    let mut args = with_inputs(&window_args(start, end));
    args.extend(extra.iter().map(|a| a.to_string()));
    let run = p.run(&args);
    (run.code, run.json(), p)
}

/// An error object with Stripe's request id (random per emulator) set aside.
fn without_request_id(value: &Value) -> Value {
    let mut text = value.to_string();
    if let Some(id) = value["error"]["requestId"].as_str() {
        text = text.replace(id, "req_");
    }
    serde_json::from_str(&text).unwrap()
}

fn same_stripe_bodies(a: &Providers, b: &Providers) {
    let bodies = |p: &Providers| -> Vec<String> {
        p.stripe_writes().iter().map(|r| r.body_text()).collect()
    };
    assert_eq!(bodies(a), bodies(b));
    assert_eq!(
        a.amberflo_requests()
            .iter()
            .map(|r| r.body_text())
            .collect::<Vec<_>>(),
        b.amberflo_requests()
            .iter()
            .map(|r| r.body_text())
            .collect::<Vec<_>>()
    );
}

/// `POST /run` answers what `usage-sync run` prints for the same inputs, sends
/// the same bytes, and each provider got its own key.
fn answers_as_run_does(p: &Providers, server: &Server, start: i64, end: i64) {
    let (code, expected, ours) = cli(start, end, &[], None);
    assert_eq!(code, 0);
    let (status, answer) = post_run(p, server, &inputs(start, end));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, expected);
    same_stripe_bodies(&ours, p);
    let bearer = format!("Bearer {}", p.stripe_key);
    assert_eq!(
        p.stripe_writes()[0].header("authorization"),
        Some(bearer.as_str())
    );
    let q = &p.amberflo_requests()[0];
    assert_eq!(q.header("x-api-key"), Some(p.amberflo_key.as_str()));
}

#[test]
fn usage_sync_serve_answers_what_usage_sync_run_prints() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let server = usage_sync_serve(&p);
    // The guest had no key: the host attached each to its own provider.
    answers_as_run_does(&p, &server, start, end);

    // The same request again: recorded already, nothing new, as with `run`.
    let (status, again) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 200);
    assert_eq!(again["alreadyRecorded"], true);
    assert_eq!(p.stripe.events().len(), 1);
}

#[test]
fn usage_sync_serve_answers_errors_as_run_prints_them() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let server = usage_sync_serve(&p);

    // Bad input: 400, nothing sent.
    let (code, expected, _) = cli(start, end, &["--stripe-customer", ""], None);
    assert_eq!(code, 2);
    let mut bad = inputs(start, end);
    bad["stripeCustomer"] = json!("");
    let (status, answer) = post_run(&p, &server, &bad);
    assert_eq!((status, &answer), (400, &expected));
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());

    // A provider's refusal: 502 with the step, status and message.
    let (code, expected, _) = cli(start, end, &[], Some(Fault::Status(402)));
    assert_eq!(code, 3);
    p.stripe.set_fault(Some(Fault::Status(402)));
    let (status, answer) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 502);
    assert_eq!(without_request_id(&answer), without_request_id(&expected));

    // A caller cannot point the component, and its keys, somewhere else.
    let mut redirect = inputs(start, end);
    redirect["amberfloUrl"] = json!("http://attacker.invalid");
    let (status, answer) = post_run(&p, &server, &redirect);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `amberfloUrl`"),
        "{answer}"
    );

    // Anything but POST /run.
    let auth = [format!("Authorization: Bearer {TOKEN}")];
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (status, text) = http_with(&server.address, "GET", "/run", &auth, "");
    assert_eq!(status, 405, "{text}");
    let (status, text) = http_with(&server.address, "POST", "/other", &auth, "{}");
    assert_eq!(status, 404, "{text}");
    let (status, text) = http_with(&server.address, "POST", "/run", &auth, "{\"customerId\": 1");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a valid inputs object"), "{text}");
}

/// `wasmtime` from wasmtime-cli, the version of the host's wasmtime: from
/// `$USAGE_SYNC_WASMTIME`, the tools cache `.ci/run` installs into, or PATH.
fn wasmtime() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = [
        std::env::var_os("USAGE_SYNC_WASMTIME").map(PathBuf::from),
        Some(home.join(".cache/usage-sync-tools/wasmtime-48.0.8/bin/wasmtime")),
        Some(PathBuf::from("wasmtime")),
    ];
    candidates.into_iter().flatten().find(|path| {
        Command::new(path)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("48.0.8"))
    })
}

fn wasmtime_serve(p: &Providers, keys: bool, token: Option<&str>) -> Option<Server> {
    let Some(wasmtime) = wasmtime() else {
        // `.ci/run` installs it and requires this test to run; a plain
        // `cargo test` without it says how to get it.
        assert!(
            std::env::var_os("USAGE_SYNC_REQUIRE_WASMTIME").is_none(),
            "wasmtime-cli 48.0.8 is not installed (.ci/run installs it)"
        );
        eprintln!(
            "skipped: wasmtime-cli 48.0.8 not found (cargo install wasmtime-cli@48.0.8, or run .ci/run)"
        );
        return None;
    };
    let dir = std::env::temp_dir().join(format!("usage-sync-wasmtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per server: tests run at once, and a file being written is no component.
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let component = dir.join(format!("usage-sync-{n}.wasm"));
    std::fs::write(&component, usage_sync::DEFAULT_COMPONENT).unwrap();
    let mut command = Command::new(wasmtime);
    command
        .args(["serve", "-S", "cli", "--addr", "127.0.0.1:0"])
        .arg("--env")
        .arg(format!("AMBERFLO_BASE_URL={}", p.amberflo.url()))
        .arg("--env")
        .arg(format!("STRIPE_BASE_URL={}", p.stripe.url()))
        .env_clear();
    if keys {
        // Copied from wasmtime's own environment, so they are not on its command line.
        command
            .args(["--env", "AMBERFLO_API_KEY", "--env", "STRIPE_API_KEY"])
            .env("AMBERFLO_API_KEY", &p.amberflo_key)
            .env("STRIPE_API_KEY", &p.stripe_key);
    }
    if let Some(token) = token {
        command
            .args(["--env", "USAGE_SYNC_SERVE_TOKEN"])
            .env("USAGE_SYNC_SERVE_TOKEN", token);
    }
    command.arg(&component);
    Some(Server::start(&mut command))
}

#[test]
fn wasmtime_serve_answers_what_usage_sync_run_prints() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let Some(server) = wasmtime_serve(&p, true, Some(TOKEN)) else {
        return;
    };
    // No host attached the key here: the component sent it from its environment.
    answers_as_run_does(&p, &server, start, end);

    // A provider's refusal: 502 and the same error object.
    let (_, expected, _) = cli(start, end, &[], Some(Fault::Status(402)));
    p.stripe.set_fault(Some(Fault::Status(402)));
    let (status, answer) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 502);
    assert_eq!(without_request_id(&answer), without_request_id(&expected));
}

#[test]
fn wasmtime_serve_without_keys_says_which_variable_to_set() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let Some(server) = wasmtime_serve(&p, false, Some(TOKEN)) else {
        return;
    };
    let (status, answer) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["kind"], "invalid-input");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no API key for Amberflo and Stripe"),
        "{message}"
    );
    assert!(
        message.contains("set AMBERFLO_API_KEY and STRIPE_API_KEY"),
        "{message}"
    );
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
}

/// On a host that checks no token itself, the component does: no token
/// configured, nobody runs; a wrong or missing one gets 401; nothing is sent.
#[test]
fn wasmtime_serve_runs_only_for_the_token_holder() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let Some(server) = wasmtime_serve(&p, true, None) else {
        return;
    };
    let (status, answer) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["error"]["kind"], "not-configured");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set USAGE_SYNC_SERVE_TOKEN"),
        "{answer}"
    );
    drop(server);

    let Some(server) = wasmtime_serve(&p, true, Some(TOKEN)) else {
        return;
    };
    for token in [None, Some("serve-token-for-tests-0002")] {
        let (status, answer) = post_run_as(&p, &server, token, &inputs(start, end));
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["kind"], "unauthorized");
    }
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
    let (status, _) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 200);
    assert_eq!(p.stripe.events().len(), 1);
}

/// `usage-sync serve` without a token configured does not start: it would
/// bill for anyone who reaches the port. A bad token file is refused too.
#[test]
fn usage_sync_serve_needs_a_token_to_start() {
    let p = Providers::start(vec![]);
    let dir = std::env::temp_dir().join(format!("usage-sync-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file = file.to_str().unwrap();
    for (env, expected) in [
        (
            vec![],
            "serve needs a token for its callers: set USAGE_SYNC_SERVE_TOKEN",
        ),
        (
            vec![
                ("USAGE_SYNC_SERVE_TOKEN", TOKEN),
                ("USAGE_SYNC_SERVE_TOKEN_FILE", file),
            ],
            "both USAGE_SYNC_SERVE_TOKEN and USAGE_SYNC_SERVE_TOKEN_FILE are set",
        ),
        (
            vec![("USAGE_SYNC_SERVE_TOKEN_FILE", "/nonexistent/token")],
            "USAGE_SYNC_SERVE_TOKEN_FILE: cannot read /nonexistent/token",
        ),
        (
            vec![("USAGE_SYNC_SERVE_TOKEN", "short")],
            "USAGE_SYNC_SERVE_TOKEN is shorter than 16 characters",
        ),
    ] {
        let mut command = serve_command(&p, &[]);
        command.envs(env);
        let run = Run::exec(&mut command);
        run.expect(2);
        assert!(
            run.error_message().contains(expected),
            "{}",
            run.error_message()
        );
    }
    // From a file, its trailing newline trimmed.
    let server = Server::start(serve_command(&p, &[]).env("USAGE_SYNC_SERVE_TOKEN_FILE", file));
    let (status, answer) = post_run(&p, &server, &json!({}));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["kind"], "invalid-input");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The batch commands' built-in component has no HTTP entry point: given to
/// `serve`, it is refused before anything listens, naming what is missing.
#[test]
fn usage_sync_serve_refuses_a_component_without_the_http_entry_point() {
    let p = Providers::start(vec![]);
    let dir = std::env::temp_dir().join(format!("usage-sync-no-handler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let component = dir.join("workflow.wasm");
    std::fs::write(&component, usage_sync::WORKFLOW_COMPONENT).unwrap();
    let mut command = serve_command(&p, &["--component", component.to_str().unwrap()]);
    command.env("USAGE_SYNC_SERVE_TOKEN", TOKEN);
    let run = Run::exec(&mut command);
    run.expect(2);
    assert!(
        run.error_message().contains(
            "the component does not export wasi:http/incoming-handler, which serve calls"
        ),
        "{}",
        run.error_message()
    );
    assert!(!run.stderr.contains("serving POST /run"), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_sync_serve_runs_only_for_the_token_holder() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let server = usage_sync_serve(&p);
    for token in [None, Some("serve-token-for-tests-0002"), Some("")] {
        let (status, answer) = post_run_as(&p, &server, token, &inputs(start, end));
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["kind"], "unauthorized");
    }
    // Basic auth, or the token without its scheme, is not the token either.
    for header in [
        format!("Authorization: {TOKEN}"),
        "Authorization: Basic c2VydmU6".into(),
    ] {
        let (status, _) = http_with(&server.address, "POST", "/run", &[&header], "{}");
        assert_eq!(status, 401);
    }
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
    let (status, _) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 200);
    assert_eq!(p.stripe.events().len(), 1);
}

/// Above the cap on runs at once: 503 with Retry-After, and nothing runs.
#[test]
fn usage_sync_serve_caps_the_runs_at_once() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    p.stripe
        .set_fault(Some(Fault::Delay(std::time::Duration::from_secs(2))));
    let server =
        Server::start(serve_command(&p, &["--max-runs", "1"]).env("USAGE_SYNC_SERVE_TOKEN", TOKEN));
    let address = server.address.clone();
    let body = inputs(start, end).to_string();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let first = {
        let (address, body, auth) = (address.clone(), body.clone(), auth.clone());
        std::thread::spawn(move || http_with(&address, "POST", "/run", &[&auth], &body))
    };
    // The first run is in flight once Amberflo has been asked.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.amberflo_requests().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let answer = raw_http(
        &address,
        &format!(
            "POST /run HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"busy\""), "{answer}");
    let (status, text) = first.join().unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        p.amberflo_requests().len(),
        1,
        "the refused request ran nothing"
    );
    assert_eq!(p.stripe.events().len(), 1);
}

/// A body over the cap gets 413 whether it says its length or not; a client
/// that sends its headers or its body too slowly is cut off. Nothing runs.
#[test]
fn usage_sync_serve_limits_the_body_and_slow_clients() {
    let p = Providers::start(vec![]);
    let server = Server::start(
        serve_command(&p, &["--max-body-bytes", "1000", "--read-timeout", "1"])
            .env("USAGE_SYNC_SERVE_TOKEN", TOKEN),
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let big = format!("{{\"customerId\": \"{}\"}}", "x".repeat(2000));
    let (status, text) = http_with(&server.address, "POST", "/run", &[&auth], &big);
    assert_eq!(status, 413, "{text}");
    let chunked = raw_http(
        &server.address,
        &format!(
            "POST /run HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        ),
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

    // Headers that never end: the connection is closed after the read timeout.
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(&server.address).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"POST /run HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the slow client was not cut off"
    );
    // A body that never comes: 408.
    let late = raw_http(
        &server.address,
        &format!(
            "POST /run HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
        ),
    );
    assert!(late.starts_with("HTTP/1.1 408"), "{late}");
    // The server still serves.
    let (status, _) = http_with(&server.address, "POST", "/run", &[&auth], "{}");
    assert_eq!(status, 400);
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
}

/// SIGTERM while a run is in flight: no new connection is taken, the run
/// finishes and is answered, its event is recorded once, and the server exits 0.
#[test]
fn usage_sync_serve_finishes_runs_in_flight_on_sigterm() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    p.stripe
        .set_fault(Some(Fault::Delay(std::time::Duration::from_secs(2))));
    let mut server = usage_sync_serve(&p);
    let address = server.address.clone();
    let body = inputs(start, end).to_string();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let in_flight =
        std::thread::spawn(move || http_with(&address, "POST", "/run", &[&auth], &body));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.stripe_writes().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.signal("-TERM");
    let (status, text) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["usageQuantity"], "42", "{answer}");
    assert_eq!(
        server.wait_exit(std::time::Duration::from_secs(20)),
        Some(0)
    );
    assert!(std::net::TcpStream::connect(&server.address).is_err());
    assert_eq!(p.stripe.events().len(), 1);
    let stderr = server.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("every run in flight finished"), "{stderr}");
}

/// Writes `request` as is, keeps the connection open for writing (as a client
/// that stalls does), and reads the whole answer.
fn raw_http(address: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `GET /healthz` and `GET /metrics` answer without the token and carry no
/// data; the metrics count runs by outcome and provider requests by route.
#[test]
fn usage_sync_serve_exposes_health_and_prometheus_metrics() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let server = usage_sync_serve(&p);
    let (status, text) = http_with(&server.address, "GET", "/healthz", &[], "");
    assert_eq!((status, text.trim()), (200, r#"{"status":"ok"}"#));
    // Stripe asks for a retry once: counted as a 429 and as a retry.
    p.stripe.push_faults([Fault::TooManyRequests {
        retry_after: Some(1),
    }]);
    let (status, _) = post_run(&p, &server, &inputs(start, end));
    assert_eq!(status, 200);
    let (status, _) = post_run_as(&p, &server, None, &inputs(start, end));
    assert_eq!(status, 401);
    let (status, metrics) = http_with(&server.address, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    for expected in [
        "usage_sync_runs_total{outcome=\"ok\"} 1",
        "usage_sync_runs_total{outcome=\"unauthorized\"} 1",
        "usage_sync_runs_in_flight 0",
        "usage_sync_provider_requests_total{provider=\"stripe\",route=\"record-stripe-meter\",status=\"200\"} 1",
        "usage_sync_provider_requests_total{provider=\"amberflo\",route=\"query-usage\",status=\"200\"} 1",
        "usage_sync_provider_request_duration_seconds_count{provider=\"stripe\",route=\"find-meter\"} 1",
        "usage_sync_provider_requests_total{provider=\"stripe\",route=\"record-stripe-meter\",status=\"429\"} 1",
        "usage_sync_provider_retries_total{provider=\"stripe\",route=\"record-stripe-meter\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected}\n{metrics}");
    }
    assert!(!metrics.contains(TOKEN) && !metrics.contains(&p.stripe_key));

    // A run the sandbox stops is counted as such, not as a provider failure.
    let q = Providers::start(records(start));
    let limited = Server::start(
        serve_command(&q, &["--max-requests", "1"]).env("USAGE_SYNC_SERVE_TOKEN", TOKEN),
    );
    let (status, answer) = post_run(&q, &limited, &inputs(start, end));
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["kind"], "sandbox");
    let (_, metrics) = http_with(&limited.address, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("usage_sync_runs_total{outcome=\"sandbox\"} 1"),
        "{metrics}"
    );
}
