//! What we ship runs: every command line of every shipped schedule
//! (`deploy/kubernetes`, `deploy/systemd`), with its exact arguments and
//! environment (paths and URLs substituted, nothing else), against the
//! emulators, on a mapping nothing may write to, two nights in a row. Night
//! two runs under `faketime` a day later, the emulators' clocks moved with
//! it. The files are also checked offline by `systemd-analyze verify` and
//! `kubernetes-validate --strict` (the Kubernetes schemas it carries).

use crate::deploy::{deploy, yaml};
use crate::support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use usage_sync_emulators::{SubscriptionSpec, UsageRecord};

const CUSTOMERS: [(&str, &str); 3] = [
    ("acme", "cus_Acme"),
    ("bravo", "cus_Bravo"),
    ("charlie", "cus_Charlie"),
];

/// Customer `i`'s usage on the day starting at `start`.
fn measured(i: usize, start: i64) -> i64 {
    (i as i64 + 1) * 10 + (start / DAY) % 7
}

/// Usage every day from 40 days back to today (tomorrow's yesterday), and
/// a yearly subscription for each customer: no period ends in the nights.
fn providers() -> Providers {
    let mut records: Vec<UsageRecord> = Vec::new();
    for (i, (customer, _)) in CUSTOMERS.iter().enumerate() {
        for n in 0..=40 {
            let (start, _) = days_ago(n);
            records.push(usage(
                customer,
                "api-calls",
                start + 60,
                measured(i, start) as f64,
            ));
        }
    }
    let p = Providers::start(records);
    for (_, stripe) in CUSTOMERS {
        p.stripe.add_subscription(SubscriptionSpec {
            customer: stripe.into(),
            event_name: "api_calls".into(),
            anchor: days_ago(60).0 + 3600,
            period: 365 * DAY,
            ended_at: None,
        });
    }
    p
}

/// Where the shipped files' paths land in this test: a site with the
/// mapping, the keys and the state volume, each in its own directory.
struct Site {
    root: PathBuf,
    mapping: PathBuf,
    keys: PathBuf,
    volume: PathBuf,
}

impl Site {
    fn new(name: &str, p: &Providers) -> Site {
        let root =
            std::env::temp_dir().join(format!("usage-sync-shipped-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let site = Site {
            mapping: root.join("etc"),
            keys: root.join("secrets"),
            volume: root.join("var-lib"),
            root,
        };
        for dir in [&site.mapping, &site.keys, &site.volume] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let mut csv = String::from("customerId,stripeCustomer\n");
        for (customer, stripe) in CUSTOMERS {
            csv.push_str(&format!("{customer},{stripe}\n"));
        }
        std::fs::write(site.mapping.join("customers.csv"), csv).unwrap();
        // A ConfigMap mount: nothing may be written there.
        read_only(&site.mapping);
        // The Secret's keys, and systemd's credentials.
        for (file, key) in [
            ("amberflo-api-key", &p.amberflo_key),
            ("stripe-api-key", &p.stripe_key),
            ("amberflo_api_key", &p.amberflo_key),
            ("stripe_api_key", &p.stripe_key),
        ] {
            std::fs::write(site.keys.join(file), key).unwrap();
        }
        site
    }

    /// A shipped text with its paths pointed into this site.
    fn substitute(&self, text: &str) -> String {
        text.replace("/usr/local/bin/usage-sync", BIN)
            .replace("/etc/usage-sync", &self.mapping.display().to_string())
            .replace("/run/secrets/usage-sync", &self.keys.display().to_string())
            .replace("/var/lib/usage-sync", &self.volume.display().to_string())
            .replace("%S", &self.volume.display().to_string())
            .replace("%C", &self.root.join("cache").display().to_string())
            .replace("%%", "%")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(unix)]
fn read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("customers.csv"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
}

/// The files under `dir`, for "nothing was written there" (root ignores
/// the mode bits, so the test also compares the listing).
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// One command line of a shipped file, ready to run.
struct Line {
    what: String,
    program: Vec<String>,
    env: BTreeMap<String, String>,
}

/// Runs `line` under faketime `offset` days ahead: its exit status, stderr.
fn run(p: &Providers, line: &Line, offset: i64) -> (i32, String) {
    let faketime = which("faketime").unwrap_or_else(|| {
        panic!("the shipped schedules run under faketime: apt-get install faketime (.ci/run does)")
    });
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut command = Command::new(faketime);
    command
        .args(["-f", &format!("+{offset}d")])
        .args(&line.program)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("AMBERFLO_BASE_URL", p.amberflo.url())
        .env("STRIPE_BASE_URL", p.stripe.url())
        .envs(&line.env);
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for key in [&p.amberflo_key, &p.stripe_key] {
        assert!(
            !stderr.contains(key.as_str()),
            "{}: a key printed",
            line.what
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(key.as_str()));
    }
    (out.status.code().unwrap_or(-1), stderr)
}

/// `name` on the test's PATH, or where Debian and pip put it.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv/shims")))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The lines of a CronJob or Job's container: its command and args, and its
/// env (the Job controller's `JOB_COMPLETION_INDEX` for `index`, and
/// `$(VAR)` expanded as the kubelet does).
fn kubernetes(site: &Site, path: &str, index: Option<u64>) -> Line {
    let doc = yaml(path);
    let pod = &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let value = var["value"].as_str().unwrap();
        env.insert(
            var["name"].as_str().unwrap().to_string(),
            site.substitute(value),
        );
    }
    if let Some(i) = index {
        env.insert("JOB_COMPLETION_INDEX".into(), i.to_string());
    }
    let expand = |text: &str| {
        let mut text = site.substitute(text);
        for (name, value) in &env {
            text = text.replace(&format!("$({name})"), value);
        }
        text
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| expand(s.as_str().unwrap())).collect())
            .unwrap_or_default()
    };
    // No command: the image's entrypoint, usage-sync.
    let mut program = strings(&container["command"]);
    if program.is_empty() {
        program.push(BIN.into());
    }
    program.extend(strings(&container["args"]));
    Line {
        what: format!(
            "{path}{}",
            index.map(|i| format!(" index {i}")).unwrap_or_default()
        ),
        program,
        env,
    }
}

/// The `ExecStart=` lines of a systemd service, each run as systemd would
/// (its words through a shell here: the shipped lines quote as sh does),
/// with its `Environment=` and `$CREDENTIALS_DIRECTORY` for `LoadCredential=`.
fn systemd(site: &Site, name: &str) -> Vec<Line> {
    let text = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    env.insert(
        "CREDENTIALS_DIRECTORY".to_string(),
        site.keys.display().to_string(),
    );
    let mut lines = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(assignment) = line.strip_prefix("Environment=") {
            let (k, v) = assignment.split_once('=').unwrap();
            env.insert(k.to_string(), site.substitute(v));
        }
        if let Some(exec) = line.strip_prefix("ExecStart=") {
            lines.push(site.substitute(exec));
        }
    }
    assert!(!lines.is_empty(), "{name}");
    lines
        .into_iter()
        .enumerate()
        .map(|(i, exec)| Line {
            what: format!("{name} ExecStart #{}", i + 1),
            program: vec!["/bin/sh".into(), "-c".into(), exec],
            env: env.clone(),
        })
        .collect()
}

/// Runs `lines` for two nights; after each, every customer's yesterday is
/// billed exactly once and every line exited 0.
fn two_nights(p: &Providers, site: &Site, lines: &[Line]) {
    let before = listing(&site.mapping);
    for night in 0..2 {
        if night == 1 {
            p.stripe.shift_clock(DAY);
        }
        for line in lines {
            let (code, stderr) = run(p, line, night);
            assert_eq!(code, 0, "night {}: {}: {stderr}", night + 1, line.what);
        }
        // Yesterday, as the night saw it.
        assert_billed_once(p, days_ago(1 - night), &format!("night {}", night + 1));
    }
    assert_eq!(
        listing(&site.mapping),
        before,
        "nothing written beside the mapping"
    );
}

/// Every customer's usage on `day`, billed exactly once.
fn assert_billed_once(p: &Providers, (start, end): (i64, i64), when: &str) {
    for (i, (_, stripe)) in CUSTOMERS.iter().enumerate() {
        assert_eq!(
            p.stripe.billed("api_calls", stripe, start, end),
            measured(i, start) as f64,
            "{when}: {stripe}"
        );
    }
}

/// The true-up's days (35 to 3 back, over both nights), each billed once.
fn assert_true_up_billed_once(p: &Providers) {
    for n in 3..=35 {
        assert_billed_once(p, days_ago(n), &format!("{n} days back"));
    }
}

/// Every step's metrics file, each saying exit 0 under its own step.
fn assert_metrics(dir: &Path, files: &[(&str, &str)]) {
    for (file, step) in files {
        let text =
            std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("usage_sync_last_run_exit_code{")
                    && l.contains(&format!("step=\"{step}\""))
                    && l.rsplit_once("} ").and_then(|(_, v)| v.parse::<f64>().ok()) == Some(0.0)),
            "{file}: {text}"
        );
    }
}

#[test]
fn the_systemd_units_run_two_nights_in_a_row() {
    let p = providers();
    let site = Site::new("systemd", &p);
    let mut lines = systemd(&site, "usage-sync.service");
    lines.extend(systemd(&site, "usage-sync-close-periods.service"));
    assert_eq!(lines.len(), 3, "sync, its true-up, close-periods");
    two_nights(&p, &site, &lines);
    assert_true_up_billed_once(&p);
    assert_metrics(
        &site.volume.join("usage-sync"),
        &[
            ("usage-sync.prom", "sync"),
            ("usage-sync-true-up.prom", "sync-true-up"),
            ("usage-sync-close-periods.prom", "close-periods"),
        ],
    );
}

#[test]
fn the_kubernetes_cronjobs_run_two_nights_in_a_row() {
    let p = providers();
    let site = Site::new("cronjob", &p);
    let lines = [
        kubernetes(&site, "kubernetes/cronjob.yaml", None),
        kubernetes(&site, "kubernetes/close-periods-cronjob.yaml", None),
    ];
    two_nights(&p, &site, &lines);
    assert_true_up_billed_once(&p);
    assert_metrics(
        &site.volume,
        &[
            ("usage-sync.prom", "sync"),
            ("usage-sync-true-up.prom", "sync-true-up"),
        ],
    );
}

#[test]
fn the_kubernetes_indexed_job_runs_every_shard_two_nights_in_a_row() {
    let p = providers();
    let site = Site::new("indexed", &p);
    let job = yaml("kubernetes/indexed-job.yaml");
    let completions = job["spec"]["jobTemplate"]["spec"]["completions"]
        .as_u64()
        .unwrap();
    let lines: Vec<Line> = (0..completions)
        .map(|i| kubernetes(&site, "kubernetes/indexed-job.yaml", Some(i)))
        .collect();
    // The indexed job bills yesterday only; its true-up is cronjob.yaml's.
    two_nights(&p, &site, &lines);
    for i in 0..completions {
        let file = format!("usage-sync-shard-{i}.prom");
        let text = std::fs::read_to_string(site.volume.join(&file)).unwrap();
        assert!(
            text.contains(&format!("shard=\"{i}/{completions}\"")),
            "{file}: {text}"
        );
    }
}

/// `systemd-analyze verify` on the shipped units, the binary they name
/// substituted (verify checks that it exists).
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let analyze =
        which("systemd-analyze").expect("systemd-analyze: apt-get install systemd (.ci/run does)");
    let dir = std::env::temp_dir().join(format!("usage-sync-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for name in [
        "usage-sync.service",
        "usage-sync.timer",
        "usage-sync-close-periods.service",
        "usage-sync-close-periods.timer",
    ] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/usage-sync", BIN)).unwrap();
        units.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Outside a booted systemd, verify also complains about the host's own
    // units; only lines about ours count.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("usage-sync"))
        .collect();
    assert!(ours.is_empty(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every Kubernetes file against the schemas `kubernetes-validate` carries
/// (offline), strictly: an unknown field is an error.
#[test]
fn the_kubernetes_files_pass_the_kubernetes_schemas() {
    let validate = which("kubernetes-validate")
        .expect("kubernetes-validate: pip install kubernetes-validate (.ci/run does)");
    for file in [
        "cronjob.yaml",
        "close-periods-cronjob.yaml",
        "indexed-job.yaml",
        "state-pvc.yaml",
    ] {
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(deploy(&format!("kubernetes/{file}")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
