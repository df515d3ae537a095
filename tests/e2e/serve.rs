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

fn usage_sync_serve(p: &Providers) -> Server {
    Server::start(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--amberflo-url", &p.amberflo.url()])
            .args(["--stripe-url", &p.stripe.url()])
            .env_clear()
            .env("AMBERFLO_API_KEY", &p.amberflo_key)
            .env("STRIPE_API_KEY", &p.stripe_key),
    )
}

/// POSTs `body` to `/run`; checks the answer for keys like every run's output.
fn post_run(p: &Providers, server: &Server, body: &Value) -> (u16, Value) {
    let (status, text) = http(&server.address, "POST", "/run", &body.to_string());
    p.assert_no_leak(&Run {
        code: 0,
        stdout: text.clone(),
        stderr: server.stderr.lock().unwrap().join("\n"),
    });
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
    let (status, text) = http(&server.address, "GET", "/run", "");
    assert_eq!(status, 405, "{text}");
    let (status, text) = http(&server.address, "POST", "/other", "{}");
    assert_eq!(status, 404, "{text}");
    let (status, text) = http(&server.address, "POST", "/run", "{\"customerId\": 1");
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

fn wasmtime_serve(p: &Providers, keys: bool) -> Option<Server> {
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
    let component = dir.join("usage-sync.wasm");
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
    command.arg(&component);
    Some(Server::start(&mut command))
}

#[test]
fn wasmtime_serve_answers_what_usage_sync_run_prints() {
    let (start, end) = yesterday();
    let p = Providers::start(records(start));
    let Some(server) = wasmtime_serve(&p, true) else {
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
    let Some(server) = wasmtime_serve(&p, false) else {
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
