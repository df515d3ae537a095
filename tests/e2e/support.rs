//! Shared test set-up: emulators with canary keys, and the real `usage-sync`
//! binary run as a child process. Every run is scanned for the keys.

use serde_json::Value;
use std::hash::{BuildHasher, RandomState};
use std::process::Command;
use usage_sync_emulators::{Amberflo, MeterSpec, Recorded, Stripe, SubscriptionSpec, UsageRecord};

pub const DAY: i64 = 86_400;

/// The inputs most tests use; the emulators hold usage for `acme` on `api-calls`.
pub const INPUTS: [&str; 8] = [
    "--customer-id",
    "acme",
    "--meter-api-name",
    "api-calls",
    "--stripe-customer",
    "cus_Acme",
    "--stripe-event-name",
    "api_calls",
];

/// `usage-sync run` refuses Amberflo's answer as a provider error naming
/// `expected`, and nothing reaches Stripe's write endpoint.
pub fn refused(p: &Providers, expected: &str) {
    let run = p.run(&INPUTS);
    let error = run.expect(3 /* a provider error */).json()["error"].clone();
    assert_eq!(error["step"], "query-usage", "{error}");
    assert_eq!(error["delivery"], "not-sent");
    assert!(
        run.error_message().contains(expected),
        "{}",
        run.error_message()
    );
    assert!(
        p.stripe_writes().is_empty(),
        "nothing is sent for that customer"
    );
}

/// [`INPUTS`] followed by `extra`.
pub fn with_inputs<S: AsRef<str>>(extra: &[S]) -> Vec<String> {
    INPUTS
        .iter()
        .map(|a| a.to_string())
        .chain(extra.iter().map(|a| a.as_ref().to_string()))
        .collect()
}
pub const BIN: &str = env!("CARGO_BIN_EXE_usage-sync");
pub const PROBE: &str = env!("USAGE_SYNC_PROBE_COMPONENT");

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The previous full UTC day: the default window.
pub fn yesterday() -> (i64, i64) {
    days_ago(1)
}

/// The whole UTC day `n` days back (1: yesterday).
pub fn days_ago(n: i64) -> (i64, i64) {
    let today = now().div_euclid(DAY) * DAY;
    (today - n * DAY, today - (n - 1) * DAY)
}

/// 25 hours: past Stripe's identifier and idempotency-key memory.
pub const DAY_AND_AN_HOUR: i64 = 25 * 3600;

/// The length of the tests' monthly billing periods.
pub const PERIOD: i64 = 30 * DAY;

/// A 30-day subscription of `customer` on `api_calls` that renews at `renewal`.
pub fn subscribe(p: &Providers, customer: &str, renewal: i64) {
    p.stripe.add_subscription(SubscriptionSpec {
        customer: customer.into(),
        event_name: "api_calls".into(),
        anchor: renewal - PERIOD,
        period: PERIOD,
        ended_at: None,
    });
}

/// Runs `run` as it would have run 25 hours ago: Stripe's clock is set back
/// for it, so by now Stripe has forgotten its identifiers and idempotency
/// keys. `days`, what it writes, must have ended 25 hours before any hour of
/// today (three days back or older): Stripe, its clock set back, refuses an
/// event from the future, and two days back had not ended 25 hours earlier
/// during the first hour after midnight UTC. Checked at every hour, so such a
/// test fails where it is written, not only when CI runs after midnight.
pub fn as_25_hours_ago<T>(stripe: &Stripe, days: (i64, i64), run: impl FnOnce() -> T) -> T {
    assert!(
        days.1 <= days_ago(3).1,
        "a run 25 hours ago must write days three days back or older, not up to {}",
        days.1
    );
    stripe.shift_clock(-DAY_AND_AN_HOUR);
    let ran = run();
    stripe.shift_clock(DAY_AND_AN_HOUR);
    ran
}

pub fn usage(customer: &str, meter: &str, time: i64, value: f64) -> UsageRecord {
    UsageRecord {
        customer_id: customer.into(),
        meter_api_name: meter.into(),
        time,
        value,
    }
}

/// Both emulators, each with its own canary key.
pub struct Providers {
    pub amberflo: Amberflo,
    pub stripe: Stripe,
    pub amberflo_key: String,
    pub stripe_key: String,
    /// This test's own state directory (the mapping history, recent writes,
    /// journals), so no two tests share one.
    pub state_dir: std::path::PathBuf,
}

/// A fresh, private state directory for one test.
pub fn fresh_state_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "usage-sync-state-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Drop for Providers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn canary(prefix: &str) -> String {
    format!("{prefix}{:016x}", RandomState::new().hash_one(prefix))
}

impl Providers {
    /// Both emulators, Stripe with a raw `sum` meter for `api_calls`.
    pub fn start(records: Vec<UsageRecord>) -> Providers {
        Providers::with_meters(records, [MeterSpec::sum("api_calls")])
    }

    /// Both emulators, Stripe with these meters.
    pub fn with_meters(
        records: Vec<UsageRecord>,
        meters: impl IntoIterator<Item = MeterSpec>,
    ) -> Providers {
        Providers::serving(records, meters, None)
    }

    /// Both emulators over HTTPS, presenting certificates `ca` signed (or
    /// not: see [`Presented`]); Stripe with a raw `sum` meter.
    pub fn over_tls(
        records: Vec<UsageRecord>,
        ca: &usage_sync_emulators::TestCa,
        presented: usage_sync_emulators::Presented,
    ) -> Providers {
        Providers::serving(
            records,
            [MeterSpec::sum("api_calls")],
            Some(ca.server_config(presented)),
        )
    }

    /// As [`Self::over_tls`], serving with `config` as it is.
    pub fn over_tls_as(
        records: Vec<UsageRecord>,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Providers {
        Providers::serving(records, [MeterSpec::sum("api_calls")], Some(config))
    }

    /// As [`Self::start`], with a live-mode restricted key (`rk_live_`).
    pub fn live(records: Vec<UsageRecord>) -> Providers {
        Providers::keyed(
            records,
            [MeterSpec::sum("api_calls")],
            None,
            "rk_live_canary_",
        )
    }

    fn serving(
        records: Vec<UsageRecord>,
        meters: impl IntoIterator<Item = MeterSpec>,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> Providers {
        Providers::keyed(records, meters, tls, "sk_test_canary_")
    }

    fn keyed(
        records: Vec<UsageRecord>,
        meters: impl IntoIterator<Item = MeterSpec>,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
        stripe_key_prefix: &str,
    ) -> Providers {
        let amberflo_key = canary("amb_canary_");
        let stripe_key = canary(stripe_key_prefix);
        let stripe = Stripe::start_with(&stripe_key, tls.clone()).unwrap();
        for meter in meters {
            stripe.add_meter(meter);
        }
        Providers {
            amberflo: Amberflo::start_with(&amberflo_key, records, tls).unwrap(),
            stripe,
            amberflo_key,
            stripe_key,
            state_dir: fresh_state_dir(),
        }
    }

    /// `usage-sync run` against the emulators, with the right keys.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Run {
        self.run_with_keys(args, &self.amberflo_key, &self.stripe_key)
    }

    /// `usage-sync run` from another machine, or after the state directory
    /// was lost: an empty state directory of its own.
    pub fn run_elsewhere<S: AsRef<str>>(&self, args: &[S]) -> Run {
        self.elsewhere("run", args)
    }

    /// `usage-sync SUBCOMMAND` with an empty state directory of its own.
    pub fn elsewhere<S: AsRef<str>>(&self, subcommand: &str, args: &[S]) -> Run {
        let elsewhere = fresh_state_dir();
        let mut command =
            self.command_with_keys(subcommand, args, &self.amberflo_key, &self.stripe_key);
        let run = Run::exec(command.env("USAGE_SYNC_STATE_DIR", &elsewhere));
        let _ = std::fs::remove_dir_all(&elsewhere);
        self.assert_no_leak(&run);
        run
    }

    /// `usage-sync SUBCOMMAND` as a command, with the right keys.
    pub fn command_for<S: AsRef<str>>(&self, subcommand: &str, args: &[S]) -> Command {
        self.command_with_keys(subcommand, args, &self.amberflo_key, &self.stripe_key)
    }

    /// `usage-sync run` as a command, for tests that start or kill it themselves.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        self.command_with_keys("run", args, &self.amberflo_key, &self.stripe_key)
    }

    /// `usage-sync sync` against the emulators, scanned for the keys.
    pub fn sync<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let run = Run::exec(&mut self.command_with_keys(
            "sync",
            args,
            &self.amberflo_key,
            &self.stripe_key,
        ));
        self.assert_no_leak(&run);
        run
    }

    /// `usage-sync reconcile` against the emulators, scanned for the keys.
    pub fn reconcile<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let run = Run::exec(&mut self.command_with_keys(
            "reconcile",
            args,
            &self.amberflo_key,
            &self.stripe_key,
        ));
        self.assert_no_leak(&run);
        run
    }

    pub fn run_with_keys<S: AsRef<str>>(
        &self,
        args: &[S],
        amberflo_key: &str,
        stripe_key: &str,
    ) -> Run {
        let run = Run::exec(&mut self.command_with_keys("run", args, amberflo_key, stripe_key));
        self.assert_no_leak(&run);
        run
    }

    fn command_with_keys<S: AsRef<str>>(
        &self,
        subcommand: &str,
        args: &[S],
        amberflo_key: &str,
        stripe_key: &str,
    ) -> Command {
        let mut full = vec![
            subcommand,
            "--amberflo-url",
            &self.amberflo.url(),
            "--stripe-url",
            &self.stripe.url(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        let mut command = Command::new(BIN);
        command
            .args(&full)
            .env_clear()
            .env("AMBERFLO_API_KEY", amberflo_key)
            .env("STRIPE_API_KEY", stripe_key)
            .env("USAGE_SYNC_STATE_DIR", &self.state_dir);
        command
    }

    /// `sync`'s default journal for `mapping` whose name ends in `tail` (for
    /// example `shard-0-of-3.START-END.jsonl`): the one file of the state
    /// directory's `journals/` named for the mapping and ending so.
    pub fn journal(&self, mapping: &std::path::Path, tail: &str) -> std::path::PathBuf {
        let name = mapping.file_name().unwrap().to_string_lossy().into_owned();
        let found: Vec<_> = std::fs::read_dir(self.state_dir.join("journals"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|path| {
                        let file = path.file_name().unwrap().to_string_lossy();
                        // MAPPING.DIGEST.TAIL, the digest 12 hex digits.
                        file.strip_prefix(&format!("{name}."))
                            .and_then(|rest| rest.get(13..))
                            .is_some_and(|rest| rest == tail)
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(found.len() <= 1, "{found:?}");
        found.into_iter().next().unwrap_or_else(|| {
            self.state_dir
                .join("journals")
                .join(format!("{name}.?.{tail}"))
        })
    }

    /// The canaries appear nowhere but in the one header of their own provider.
    pub fn assert_no_leak(&self, run: &Run) {
        for key in [&self.amberflo_key, &self.stripe_key] {
            assert!(!run.stdout.contains(key.as_str()), "a key leaked to stdout");
            assert!(!run.stderr.contains(key.as_str()), "a key leaked to stderr");
        }
        let expected = [
            (
                self.amberflo.requests(),
                "x-api-key",
                self.amberflo_key.clone(),
                &self.stripe_key,
            ),
            (
                self.stripe.requests(),
                "authorization",
                format!("Bearer {}", self.stripe_key),
                &self.amberflo_key,
            ),
        ];
        for (requests, header, value, other_key) in expected {
            for request in requests {
                for (name, v) in &request.headers {
                    assert!(
                        !v.contains(other_key.as_str()),
                        "a key reached the wrong host"
                    );
                    if v.contains(value.as_str()) {
                        assert_eq!(name, header, "a key travelled in the wrong header");
                    }
                }
                assert!(!request.body_text().contains(other_key.as_str()));
            }
        }
    }

    pub fn amberflo_requests(&self) -> Vec<Recorded> {
        self.amberflo.requests()
    }

    /// Every request Stripe received, reads included.
    pub fn stripe_all(&self) -> Vec<Recorded> {
        self.stripe.requests()
    }

    /// The writes Stripe received: every POST (the workflow's are
    /// `POST /v1/billing/meter_events`).
    pub fn stripe_writes(&self) -> Vec<Recorded> {
        self.stripe_all()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// The reads Stripe received, as `METHOD path?query`.
    pub fn stripe_reads(&self) -> Vec<String> {
        self.stripe_all()
            .into_iter()
            .filter(|r| r.method == "GET")
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// What Stripe bills in the end for `acme`'s `api_calls` over the window.
    pub fn billed(&self, (start, end): (i64, i64)) -> f64 {
        self.stripe.billed("api_calls", "cus_Acme", start, end)
    }
}

/// What one `usage-sync` process did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn exec(command: &mut Command) -> Run {
        Run::from_output(command.output().expect("usage-sync runs"))
    }

    fn from_output(output: std::process::Output) -> Run {
        Run {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// stdout is exactly one JSON object.
    pub fn json(&self) -> Value {
        let value: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self:#?}"));
        assert!(value.is_object(), "{self:#?}");
        value
    }

    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit status: {self:#?}");
        self
    }

    /// Waits for a process started with [`Providers::command`].
    pub fn wait(child: std::process::Child) -> Run {
        Run::from_output(child.wait_with_output().expect("usage-sync runs"))
    }

    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self:#?}"))
            .to_string()
    }
}

/// Runs the hostile probe component (`tests/components/egress-probe`) in `mode`
/// against `target`.
pub fn probe(p: &Providers, mode: &str, target: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--component",
        PROBE,
        "--meter-api-name",
        mode,
        "--customer-id",
        target,
    ];
    args.extend_from_slice(extra);
    p.run(&args)
}

/// A fresh folder named for `name` holding `mapping.csv`: `n` rows mapping
/// `cust-{i}` to `cus_{i}`. Its path.
pub fn write_mapping(name: &str, n: usize) -> std::path::PathBuf {
    let rows: Vec<(String, String)> = (0..n)
        .map(|i| (format!("cust-{i}"), format!("cus_{i}")))
        .collect();
    write_mapping_of(name, &rows)
}

/// A fresh folder named for `name` holding `mapping.csv` of `rows`
/// (customerId, stripeCustomer). Its path.
pub fn write_mapping_of(
    name: &str,
    rows: &[(impl AsRef<str>, impl AsRef<str>)],
) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("usage-sync-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mapping.csv");
    let mut csv = String::from("customerId,stripeCustomer\n");
    for (customer, stripe) in rows {
        csv.push_str(&format!("{},{}\n", customer.as_ref(), stripe.as_ref()));
    }
    std::fs::write(&path, csv).unwrap();
    path
}

/// Window flags for `run`.
pub fn window_args(start: i64, end: i64) -> [String; 4] {
    [
        "--start-time".into(),
        start.to_string(),
        "--end-time".into(),
        end.to_string(),
    ]
}

/// One HTTP/1.1 request over a fresh connection, with these headers
/// (`Name: value` each) besides its own: the status and the body.
pub fn http_with(
    address: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the server listens");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    parse_answer(&answer)
}

/// The status and body of an HTTP/1.1 answer read to its end.
pub fn parse_answer(answer: &str) -> (u16, String) {
    let (head, rest) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            unchunk(rest)
        } else {
            rest.to_string()
        },
    )
}

fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    body
}

/// A server started as a child process, killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub address: String,
    /// What it printed on stderr, line by line (drained in the background).
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `command` and waits for a line on stderr naming `http://ADDRESS/`.
    pub fn start(command: &mut Command) -> Server {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let seen = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(at) = line.find("http://") {
                    let address = line[at + 7..].split('/').next().unwrap_or("").to_string();
                    let _ = tx.send(address);
                }
                seen.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server never said where it listens: {stderr:?}"));
        Server {
            child,
            address,
            stderr,
        }
    }
}

impl Server {
    /// Sends the process a signal (`-TERM`, `-INT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit: its status, or None.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--mapping MAPPING` with the meter and event the emulators serve
/// (`api-calls` to `api_calls`), then `extra`.
pub fn mapping_args(mapping: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--mapping",
        mapping.to_str().unwrap(),
        "--meter-api-name",
        "api-calls",
        "--stripe-event-name",
        "api_calls",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}
