//! Running it as a scheduled job: keys from files (a mounted Secret, systemd
//! credentials), the key's mode checked before any request, and the
//! scheduling files in deploy/ holding what a billing job needs.

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("usage-sync-operate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn providers() -> Providers {
    let (start, _) = yesterday();
    Providers::start(vec![usage("acme", "api-calls", start + 5, 42.0)])
}

#[test]
fn keys_come_from_files_and_systemd_credentials() {
    let p = providers();
    let d = dir("files");
    // A mounted Secret ends its files with a newline: trimmed.
    std::fs::write(d.join("amberflo"), format!("{}\n", p.amberflo_key)).unwrap();
    std::fs::write(d.join("stripe"), format!("{}\n", p.stripe_key)).unwrap();
    let run = Run::exec(
        p.command(&INPUTS)
            .env_remove("AMBERFLO_API_KEY")
            .env_remove("STRIPE_API_KEY")
            .env("AMBERFLO_API_KEY_FILE", d.join("amberflo"))
            .env("STRIPE_API_KEY_FILE", d.join("stripe")),
    );
    p.assert_no_leak(&run);
    run.expect(0);
    assert_eq!(p.billed(yesterday()), 42.0);

    // systemd's LoadCredential=: files named for the keys, in lower case.
    let creds = dir("credentials");
    std::fs::write(creds.join("amberflo_api_key"), &p.amberflo_key).unwrap();
    std::fs::write(creds.join("stripe_api_key"), format!("{}\n", p.stripe_key)).unwrap();
    let run = Run::exec(
        p.command(&INPUTS)
            .env_remove("AMBERFLO_API_KEY")
            .env_remove("STRIPE_API_KEY")
            .env("CREDENTIALS_DIRECTORY", &creds),
    );
    let out: Value = run.expect(0).json();
    assert_eq!(out["alreadyRecorded"], true);

    // A variable and its file, or a file that cannot be read: exit 2, nothing sent.
    std::fs::write(d.join("huge"), vec![b'k'; 1 << 20]).unwrap();
    let q = providers();
    for (env, expected) in [
        (
            vec![("STRIPE_API_KEY_FILE", d.join("stripe"))],
            "both STRIPE_API_KEY and STRIPE_API_KEY_FILE are set",
        ),
        (
            vec![(
                "AMBERFLO_API_KEY_FILE",
                PathBuf::from("/nonexistent/amberflo"),
            )],
            "AMBERFLO_API_KEY_FILE: cannot read /nonexistent/amberflo",
        ),
        // Read until memory runs out, before: refused unread.
        (
            vec![("AMBERFLO_API_KEY_FILE", PathBuf::from("/dev/zero"))],
            "cannot read /dev/zero: it is a device, not a regular file holding the key",
        ),
        (
            vec![("AMBERFLO_API_KEY_FILE", d.join("huge"))],
            "more than a key file's 4096",
        ),
    ] {
        let mut command = q.command(&INPUTS);
        if env[0].0 == "AMBERFLO_API_KEY_FILE" {
            command.env_remove("AMBERFLO_API_KEY");
        }
        command.envs(env);
        let run = Run::exec(&mut command);
        run.expect(2);
        assert!(
            run.error_message().contains(expected),
            "{}",
            run.error_message()
        );
    }
    assert!(q.amberflo_requests().is_empty() && q.stripe_all().is_empty());
}

#[test]
fn a_key_of_the_other_mode_is_refused_and_a_full_live_key_is_warned_about() {
    let p = providers();
    // The emulator's key is a test-mode key.
    let run = p.run(&with_inputs(&["--expect-mode", "live"]));
    run.expect(2);
    assert!(
        run.error_message()
            .contains("STRIPE_API_KEY is a test-mode key, but --expect-mode is live"),
        "{}",
        run.error_message()
    );
    assert!(p.amberflo_requests().is_empty() && p.stripe_all().is_empty());
    p.run(&with_inputs(&["--expect-mode", "test"])).expect(0);

    // A full live secret key works, with a warning naming the restricted key to use.
    let live = "sk_live_0000000000000000000000";
    let run = p.run_with_keys(&INPUTS, &p.amberflo_key, live);
    assert!(
        run.stderr.contains(
            "warning: STRIPE_API_KEY is a full live secret key (sk_live_), which can do anything on the account; a restricted key (rk_live_)"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(live) && !run.stdout.contains(live));
}

/// `--metrics-file`: node_exporter's textfile, written atomically; a failed
/// run keeps the last success so an alert can fire on staleness, and a
/// customer with no usage is told apart from a failed query.
#[test]
fn the_metrics_file_keeps_the_last_success_across_a_failed_run() {
    let p = providers();
    let d = dir("metrics");
    let file = d.join("usage-sync.prom");
    let metrics = file.to_str().unwrap();
    p.run(&with_inputs(&["--metrics-file", metrics])).expect(0);
    let read = || std::fs::read_to_string(&file).unwrap();
    // Every series names its step: `run` here.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix("{step=\"run\"}")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    let first = read();
    let success = value(&first, "usage_sync_last_success_timestamp_seconds");
    assert!(
        first.contains("usage_sync_last_run_rows{step=\"run\",outcome=\"recorded\"} 1"),
        "{first}"
    );
    assert_eq!(value(&first, "usage_sync_last_run_exit_code"), 0.0);
    assert_eq!(
        value(&first, "usage_sync_last_run_zero_usage_customers"),
        0.0
    );

    // Stripe refuses: exit 3; the last success stays what it was.
    p.stripe
        .set_fault(Some(usage_sync_emulators::Fault::Status(402)));
    p.run(&with_inputs(&[
        "--metrics-file",
        metrics,
        "--start-time",
        &days_ago(2).0.to_string(),
        "--end-time",
        &days_ago(2).1.to_string(),
    ]))
    .expect(3);
    let failed = read();
    assert_eq!(
        value(&failed, "usage_sync_last_success_timestamp_seconds"),
        success
    );
    assert_eq!(value(&failed, "usage_sync_last_run_exit_code"), 3.0);
    assert!(
        failed.contains("usage_sync_last_run_rows{step=\"run\",outcome=\"failed\"} 1"),
        "{failed}"
    );
    p.stripe.set_fault(None);

    // No usage at all: a zero-usage customer, not a failure.
    let run = p.run(&with_inputs(&[
        "--metrics-file",
        metrics,
        "--customer-id",
        "nobody",
        "--start-time",
        &days_ago(3).0.to_string(),
        "--end-time",
        &days_ago(3).1.to_string(),
    ]));
    run.expect(0);
    let quiet = read();
    assert_eq!(
        value(&quiet, "usage_sync_last_run_zero_usage_customers"),
        1.0
    );
    assert!(value(&quiet, "usage_sync_last_success_timestamp_seconds") >= success);
    assert!(
        !d.join("usage-sync.prom.tmp").exists(),
        "written atomically, nothing left over"
    );
}

/// `--log-format json`: every stderr line is one JSON object with the run's
/// id and command, and the fields of what happened; keys scrubbed as ever.
#[test]
fn json_logs_carry_the_run_id_command_and_each_requests_fields() {
    let p = providers();
    p.stripe
        .push_faults([usage_sync_emulators::Fault::TooManyRequests {
            retry_after: Some(1),
        }]);
    let run = p.run(&with_inputs(&["--log-format", "json"]));
    run.expect(0);
    let lines: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 5, "{}", run.stderr);
    let run_id = lines[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(run_id.len(), 20);
    for line in &lines {
        assert_eq!(line["run_id"], run_id.as_str(), "{line}");
        assert_eq!(line["command"], "run", "{line}");
        assert!(line["level"].is_string() && line["time"].is_f64(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let write = lines
        .iter()
        .find(|l| l["route"] == "record-stripe-meter" && l["status"] == 200)
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert_eq!(write["provider"], "Stripe");
    assert_eq!(write["customer"], "acme");
    assert_eq!(write["method"], "POST");
    assert!(write["duration_ms"].is_u64());
    assert!(
        lines
            .iter()
            .any(|l| l["route"] == "record-stripe-meter" && l["status"] == 429)
    );
    // The component's own retry line, through the same layer.
    assert!(
        lines.iter().any(|l| l["target"] == "guest"
            && l["message"].as_str().unwrap().contains("attempt 1/3: 429")),
        "{}",
        run.stderr
    );
}
