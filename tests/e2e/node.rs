//! The same component on a host nobody here wrote: Node.js, through jco's
//! transpiler and its WASI shim (`tests/node`). No host attaches keys there,
//! so the component reads them from its environment.

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

/// The component transpiled to JavaScript, once per test process.
fn transpiled() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = node_dir();
        if !dir.join("node_modules/@bytecodealliance/jco").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm (with Node.js 20.19 or later) installs jco");
            assert!(status.success(), "npm ci in tests/node failed");
        }
        let out = dir.join(".out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let wasm = out.join("usage-sync.wasm");
        std::fs::write(&wasm, usage_sync::DEFAULT_COMPONENT).unwrap();
        let transpile = Command::new(dir.join("node_modules/.bin/jco"))
            .arg("transpile")
            .arg(&wasm)
            .args(["-o", ".out", "--name", "usage-sync", "--no-typescript"])
            .current_dir(&dir)
            .output()
            .expect("jco runs");
        assert!(
            transpile.status.success(),
            "jco transpile: {}",
            String::from_utf8_lossy(&transpile.stderr)
        );
        out
    })
}

/// `run` on Node with `keys` (Amberflo, Stripe) in the component's environment.
fn node_run(p: &Providers, start: i64, end: i64, keys: Option<(&str, &str)>) -> (i32, Value) {
    let request = json!({
        "endpoints": { "amberfloUrl": p.amberflo.url(), "stripeUrl": p.stripe.url() },
        "options": {
            "maxRetries": 2, "retryBudgetMs": 30000, "rounding": null,
            "reconcile": false, "dryRun": false, "interval": "day",
            "trueUp": false, "allowDecrease": false, "settleHours": 72, "attemptHeader": false, "carryLateUsage": false,
        },
        "inputs": {
            "customerId": "acme", "meterApiName": "api-calls",
            "stripeCustomer": "cus_Acme", "stripeEventName": "api_calls",
            "usageQuantity": null, "startTime": start.to_string(), "endTime": end.to_string(),
        },
    });
    let file = transpiled().join(format!(
        "request-{}.json",
        p.stripe.url().replace(['/', ':'], "_")
    ));
    std::fs::write(&file, request.to_string()).unwrap();
    let mut command = Command::new("node");
    command
        .arg(node_dir().join("run.mjs"))
        .arg(transpiled())
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some((amberflo, stripe)) = keys {
        command
            .env("AMBERFLO_API_KEY", amberflo)
            .env("STRIPE_API_KEY", stripe);
    }
    let out = command.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// Headers the component sets: those that differ by run or key, and the
/// transport's own (`host` names the emulator's port, Node adds `connection`), set aside.
fn stable_headers(request: &usage_sync_emulators::Recorded) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "idempotency-key" | "authorization" | "x-api-key" | "host" | "connection"
            )
        })
        .cloned()
        .collect();
    headers.sort();
    headers
}

#[test]
fn node_sends_the_same_bytes_and_returns_the_same_outputs_as_usage_sync_run() {
    let (start, end) = yesterday();
    let records = || vec![usage("acme", "api-calls", start + 60, 42.0)];

    let ours = Providers::start(records());
    let run = ours.run(&with_inputs(&window_args(start, end)));
    run.expect(0);
    let expected = run.json();

    let theirs = Providers::start(records());
    let (code, answer) = node_run(
        &theirs,
        start,
        end,
        Some((&theirs.amberflo_key, &theirs.stripe_key)),
    );
    assert_eq!(code, 0, "{answer}");
    let outputs = &answer["ok"];

    // On the wire: the same bodies and headers; the key each provider expects.
    for (a, b) in [
        (ours.amberflo_requests(), theirs.amberflo_requests()),
        (ours.stripe_writes(), theirs.stripe_writes()),
    ] {
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a[0].body_text(), b[0].body_text());
        assert_eq!(a[0].target, b[0].target);
        assert_eq!(stable_headers(&a[0]), stable_headers(&b[0]));
    }
    let q = &theirs.amberflo_requests()[0];
    assert_eq!(q.header("x-api-key"), Some(theirs.amberflo_key.as_str()));
    let bearer = format!("Bearer {}", theirs.stripe_key);
    assert_eq!(
        theirs.stripe_writes()[0].header("authorization"),
        Some(bearer.as_str())
    );
    theirs.assert_no_leak(&Run {
        code,
        stdout: answer.to_string(),
        stderr: String::new(),
    });

    // The outputs: the typed record on Node, the JSON `usage-sync run` prints.
    let usage: Value = serde_json::from_str(outputs["usageResult"].as_str().unwrap()).unwrap();
    assert_eq!(usage, expected["usageResult"]);
    assert_eq!(outputs["eventName"], expected["eventName"]);
    assert_eq!(outputs["windowStart"], expected["startTime"]);
    assert_eq!(outputs["windowEnd"], expected["endTime"]);
    let events: Vec<Value> = outputs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.as_object().unwrap().clone();
            let start = e.remove("windowStart").unwrap();
            let end = e.remove("windowEnd").unwrap();
            e.insert("startTime".into(), start);
            e.insert("endTime".into(), end);
            // The CLI prints `correctedTo` only for a true-up correction,
            // `carriedInto` only for a carried event.
            for optional in ["correctedTo", "carriedInto"] {
                if e.get(optional) == Some(&Value::Null) {
                    e.remove(optional);
                }
            }
            Value::Object(e)
        })
        .collect();
    assert_eq!(Value::Array(events), expected["events"]);
    assert_eq!(expected["events"][0]["usageQuantity"], "42");
}

#[test]
fn without_keys_in_its_environment_the_component_says_which_is_missing() {
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 60, 42.0)]);
    let (code, answer) = node_run(&p, start, end, None);
    assert_eq!(code, 2, "{answer}");
    assert_eq!(answer["err"]["tag"], "invalid-input");
    let message = answer["err"]["val"].as_str().unwrap();
    assert!(
        message.contains("set AMBERFLO_API_KEY and STRIPE_API_KEY"),
        "{message}"
    );
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
}
