//! The sandbox's promises, with the real host and hostile test components.

use crate::support::*;
use serde_json::Value;
use usage_sync::Sandbox;
use usage_sync::{DEFAULT_COMPONENT, WORKFLOW_COMPONENT};

const PROVIDER: i32 = 3;
const SANDBOX: i32 = 4;

#[test]
fn the_component_imports_only_standard_wasi() {
    for wasm in [DEFAULT_COMPONENT, WORKFLOW_COMPONENT] {
        let sandbox = Sandbox::new(wasm).unwrap();
        let imports = sandbox.imports();
        assert!(
            imports
                .iter()
                .any(|i| i.starts_with("wasi:http/outgoing-handler@0.2"))
        );
        for import in &imports {
            assert!(import.starts_with("wasi:"), "non-standard import {import}");
        }
    }
}

/// The component asks for what the workflow uses and nothing else: no stdin,
/// stdout, terminals or exit, which `std`'s runtime used to bring (and which
/// every instance linked when it started).
#[test]
fn the_component_imports_only_what_the_workflow_uses() {
    let mut expected = vec![
        "wasi:cli/environment",
        "wasi:cli/stderr",
        "wasi:clocks/monotonic-clock",
        "wasi:clocks/wall-clock",
        "wasi:http/outgoing-handler",
        "wasi:http/types",
        "wasi:io/error",
        "wasi:io/poll",
        "wasi:io/streams",
        "wasi:random/random",
    ];
    expected.sort_unstable();
    for wasm in [DEFAULT_COMPONENT, WORKFLOW_COMPONENT] {
        let imports = Sandbox::new(wasm).unwrap().imports();
        let mut interfaces: Vec<&str> = imports
            .iter()
            .map(|i| i.split_once('@').map_or(i.as_str(), |(name, _)| name))
            .collect();
        interfaces.sort_unstable();
        assert_eq!(interfaces, expected, "{imports:?}");
    }
}

/// Every build of the workflow went through `wasm-opt` (`host/build_shrink.rs`
/// marks what it shrank with a custom section, last in the file), so what
/// the rest of these tests run (and `deploy.rs` checks) is what ships. Without Binaryen the build
/// ships cargo's component and says so; CI sets `USAGE_SYNC_REQUIRE_WASM_OPT`.
#[test]
fn every_build_of_the_workflow_is_shrunk_by_wasm_opt() {
    const MARK: &[u8] = b"usage-sync:wasm-opt";
    let builds = [
        ("default", DEFAULT_COMPONENT.to_vec()),
        ("batch", WORKFLOW_COMPONENT.to_vec()),
        (
            "spin",
            std::fs::read(env!("USAGE_SYNC_SPIN_COMPONENT")).unwrap(),
        ),
        (
            "wasmcloud",
            std::fs::read(env!("USAGE_SYNC_WASMCLOUD_COMPONENT")).unwrap(),
        ),
    ];
    if std::env::var_os("USAGE_SYNC_REQUIRE_WASM_OPT").is_none()
        && !DEFAULT_COMPONENT.ends_with(MARK)
    {
        eprintln!("skipped: built without wasm-opt");
        return;
    }
    for (name, wasm) in builds {
        assert!(wasm.ends_with(MARK), "the {name} build was not shrunk");
    }
}

/// What `run`, `sync` and `reconcile` run is the shipped component less its
/// HTTP entry point: the same workflow exports, no import the shipped one
/// lacks.
#[test]
fn the_batch_component_is_the_shipped_one_without_its_http_entry_point() {
    let shipped = Sandbox::new(DEFAULT_COMPONENT).unwrap();
    let batch = Sandbox::new(WORKFLOW_COMPONENT).unwrap();
    assert_eq!(batch.exports(), ["usage-sync:workflow/workflow@0.1.0"]);
    let mut exports = shipped.exports();
    exports.sort();
    assert_eq!(exports.len(), 2, "{exports:?}");
    assert_eq!(exports[0], "usage-sync:workflow/workflow@0.1.0");
    assert!(
        exports[1].starts_with("wasi:http/incoming-handler@0.2"),
        "{exports:?}"
    );
    let shipped_imports = shipped.imports();
    let batch_imports = batch.imports();
    for import in &batch_imports {
        assert!(shipped_imports.contains(import), "{import}");
    }
    assert!(batch_imports.len() <= shipped_imports.len());
}

/// The batch commands compile the batch component: the cache names each
/// compiled file by the digest of what it compiled.
#[test]
fn run_compiles_the_batch_component() {
    use sha2::{Digest, Sha256};
    // As `sandbox::cache` names them.
    let named = |wasm: &[u8]| usage_sync_report::hex(&Sha256::digest(wasm)[..16]);
    let cache = std::env::temp_dir().join(format!("usage-sync-which-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let (start, end) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 60, 5.0)]);
    let mut args = with_inputs(&window_args(start, end));
    args.extend(["--cache-dir".into(), cache.to_str().unwrap().into()]);
    p.run(&args).expect(0);
    let files: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with(&named(WORKFLOW_COMPONENT)),
        "{files:?}"
    );
    assert!(
        !files[0].starts_with(&named(DEFAULT_COMPONENT)),
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn unlisted_hosts_are_refused_before_any_lookup() {
    let p = Providers::start(vec![]);
    let amberflo_port = p.amberflo.url().rsplit(':').next().unwrap().to_string();
    for (url, named) in [
        ("http://evil.test/steal", "http://evil.test/steal"),
        (
            "https://api.stripe.com.evil.test/v1/x",
            "api.stripe.com.evil.test",
        ),
        ("http://127.0.0.1:1/usage", "127.0.0.1:1"),
        (
            &format!("http://localhost:{amberflo_port}/usage"),
            "localhost",
        ),
        (
            &format!("https://127.0.0.1:{amberflo_port}/usage"),
            "https://127.0.0.1",
        ),
    ] {
        let run = probe(&p, "get", url, &[]);
        run.expect(SANDBOX);
        let message = run.error_message();
        assert!(
            message.starts_with("sandbox: refused a request to"),
            "{message}"
        );
        assert!(message.contains(named), "{message}");
        assert!(message.contains("is not an allowed host"), "{message}");
        assert!(run.stderr.contains(named), "{}", run.stderr);
    }
    assert!(p.amberflo_requests().is_empty());
    assert!(p.stripe_all().is_empty());
}

#[test]
fn each_key_goes_only_to_its_own_provider() {
    let p = Providers::start(vec![]);
    // One request to a route of each: only the headers matter.
    let run = probe(
        &p,
        "call",
        &format!("{}/usage", p.amberflo.url()),
        &["--stripe-event-name", "POST", "--stripe-customer", "{}"],
    );
    run.expect(0);
    let run = probe(
        &p,
        "get",
        &format!("{}/v1/billing/meters", p.stripe.url()),
        &[],
    );
    run.expect(0);
    let amberflo = &p.amberflo_requests()[0];
    assert_eq!(amberflo.header("x-api-key"), Some(p.amberflo_key.as_str()));
    assert_eq!(amberflo.header("authorization"), None);
    let stripe = &p.stripe_all()[0];
    assert_eq!(
        stripe.header("authorization"),
        Some(format!("Bearer {}", p.stripe_key).as_str())
    );
    assert_eq!(stripe.header("x-api-key"), None);
}

#[test]
fn the_guest_cannot_set_its_own_credentials() {
    let p = Providers::start(vec![]);
    for (mode, url) in [
        ("own-authorization", p.stripe.url()),
        ("own-api-key", p.amberflo.url()),
    ] {
        let run = probe(&p, mode, &url, &[]);
        run.expect(PROVIDER);
        assert!(
            run.error_message().contains("Forbidden"),
            "{}",
            run.error_message()
        );
    }
    for request in p.amberflo_requests().iter().chain(&p.stripe_all()) {
        for (_, value) in &request.headers {
            assert!(!value.contains("forged"), "a guest-set credential went out");
        }
    }
}

#[test]
fn limits_stop_the_guest_and_say_which() {
    let p = Providers::start(vec![]);
    let run = probe(&p, "spin", "", &["--timeout", "0.5"]);
    run.expect(SANDBOX);
    assert_eq!(
        run.error_message(),
        "sandbox: the run exceeded its deadline of 0.5 s; nothing was written to Stripe"
    );

    let run = probe(&p, "allocate", "", &["--max-memory-mib", "16"]);
    run.expect(SANDBOX);
    assert_eq!(
        run.error_message(),
        "sandbox: the component exceeded its memory limit of 16 MiB; nothing was written to Stripe"
    );
    assert_eq!(run.json()["error"]["delivery"], "not-sent");

    // Stripe's 404 body is longer than 10 bytes.
    let url = format!(
        "{}/v1/billing/meters/mtr_missing/event_summaries",
        p.stripe.url()
    );
    let run = probe(&p, "get", &url, &["--max-response-bytes", "10"]);
    run.expect(SANDBOX);
    let message = run.error_message();
    assert!(
        message.contains("exceeded the limit of 10 bytes"),
        "{message}"
    );
    assert!(message.contains("/mtr_missing/"), "{message}");
}

#[test]
fn the_real_component_is_unaffected_by_a_hostile_run_before_it() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 1, 5.0)]);
    probe(&p, "get", "http://evil.test/", &[]).expect(SANDBOX);
    let out: Value = p.run(&INPUTS).expect(0).json();
    assert_eq!(out["usageQuantity"], "5");
}

#[test]
fn the_guest_gets_no_environment_files_or_sockets() {
    let p = Providers::start(vec![]);
    // A raw TCP connection to a provider, bypassing wasi:http and its policy.
    let address = p.stripe.url().trim_start_matches("http://").to_string();
    let run = probe(&p, "ambient", &address, &[]);
    let out = run.expect(0).json();
    let seen = &out["usageResult"];
    assert_eq!(seen["env"], 0, "{seen}");
    assert_eq!(seen["args"], 0, "{seen}");
    for what in ["files", "cwd", "socket"] {
        let outcome = seen[what].as_str().unwrap();
        assert!(outcome.starts_with("refused"), "{what}: {outcome}");
    }
    assert!(
        p.stripe_all().is_empty(),
        "the raw socket reached the emulator"
    );
}

/// Being over the response cap is not transient: the workflow does not ask
/// again (each retry downloaded the whole cap again), and the run says why.
#[test]
fn a_response_over_the_cap_is_not_fetched_again() {
    let p = Providers::start(vec![]);
    p.stripe
        .set_read_fault(Some(usage_sync_emulators::Fault::EndlessBody));
    let run = p.run(&with_inputs(&["--max-response-bytes", "100000"]));
    run.expect(SANDBOX);
    assert!(
        run.error_message()
            .contains("exceeded the limit of 100000 bytes"),
        "{}",
        run.error_message()
    );
    assert_eq!(
        p.stripe_all().len(),
        1,
        "the meter list was asked for once: {}",
        run.stderr
    );
    assert!(p.amberflo_requests().is_empty());
}
