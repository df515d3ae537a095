//! `cargo bench -p usage-sync --bench sync`: the sandbox's cost next to the HTTP
//! work, measured in one run on loopback emulators, with medians and ratios
//! against a native baseline. Prints a Markdown table (README has one).

#![allow(clippy::unwrap_used)] // a benchmark that cannot run should stop loudly

use http_body_util::{BodyExt, Full};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usage_sync::bindings::{Endpoints, Inputs};
use usage_sync::{
    Credentials, Endpoint, Limits, Policy, Pool, RunConfig, Sandbox, Secret, default_options,
};
use usage_sync_emulators::{
    Amberflo, LatencyProxy, MeterSpec, Presented, Stripe, SubscriptionSpec, TestCa, UsageRecord,
};

// The allocator of the `usage-sync` binary, so the in-process sandbox
// measures what the binary runs (the emulators and the native baseline use it
// too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BIN: &str = env!("CARGO_BIN_EXE_usage-sync");
const AMBERFLO_KEY: &str = "amb_bench_key_0000000";
const STRIPE_KEY: &str = "sk_test_bench_key_00000";
const DAY: i64 = 86_400;
/// `sync`'s default `--amberflo-batch`.
const BATCH: usize = 100;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn yesterday() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let today = now.div_euclid(DAY) * DAY;
    (today - DAY, today)
}

/// One unit of `api-calls` a day for customers `cust-0` to `cust-{n-1}`, a
/// minute into each of the `days` UTC days from `first_day`.
fn daily_usage(customers: usize, first_day: i64, days: i64) -> Vec<UsageRecord> {
    (0..customers)
        .flat_map(|i| {
            (0..days).map(move |d| UsageRecord {
                customer_id: format!("cust-{i}"),
                meter_api_name: "api-calls".into(),
                time: first_day + d * DAY + 60,
                value: 1.0,
            })
        })
        .collect()
}

fn emulators(rows: usize) -> (Amberflo, Stripe) {
    let (start, _) = yesterday();
    let records = daily_usage(rows, start, 1);
    let stripe = Stripe::start(STRIPE_KEY).unwrap();
    stripe.add_meter(MeterSpec::sum("api_calls"));
    subscribe(&stripe, rows);
    (Amberflo::start(AMBERFLO_KEY, records).unwrap(), stripe)
}

/// `cus_0` to `cus_{n-1}` each on a 30-day subscription to the meter that
/// renewed ten days ago, as a real account's customers are: a sync then lists
/// them once (README, "One listing per sync") and no period ends in the window.
/// `USAGE_SYNC_BENCH_NO_SUBSCRIPTIONS=1`: none, so every row reads its own
/// (the three-request row of before 2026-12-04, for A/B runs).
fn subscribe(stripe: &Stripe, customers: usize) {
    if std::env::var_os("USAGE_SYNC_BENCH_NO_SUBSCRIPTIONS").is_some() {
        return;
    }
    let (start, _) = yesterday();
    for i in 0..customers {
        stripe.add_subscription(SubscriptionSpec {
            customer: format!("cus_{i}"),
            event_name: "api_calls".into(),
            anchor: start - 10 * DAY,
            period: 30 * DAY,
            ended_at: None,
        });
    }
}

fn config(amberflo: &Amberflo, stripe: &Stripe) -> RunConfig {
    let a = Endpoint::parse(&amberflo.url()).unwrap();
    let s = Endpoint::parse(&stripe.url()).unwrap();
    RunConfig::new(
        Policy::new(&a, &s).unwrap(),
        Endpoints {
            amberflo_url: a.base_url,
            stripe_url: s.base_url,
        },
        default_options(),
        Arc::new(Credentials {
            amberflo: Secret::new("A", AMBERFLO_KEY.into()).unwrap(),
            stripe: Secret::new("S", STRIPE_KEY.into()).unwrap(),
        }),
        Limits::default(),
    )
}

/// Where `-- instructions` has valgrind's cachegrind write its counts: set,
/// every `usage-sync` the bench starts runs under it.
static CACHEGRIND: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The instructions of a `sync` of `rows` rows, one row at a time, with
/// `batch` customers a query, counted by cachegrind (the whole process: its
/// start too).
fn instructions(rows: usize, batch: usize) -> u64 {
    let dir = CACHEGRIND.get().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    sync_rows(rows, 1, batch);
    let out = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(out).unwrap();
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap();
    summary.trim().parse().unwrap()
}

/// Instantiate + call, stopping at input validation: no HTTP at all.
async fn overhead(sandbox: &Sandbox, config: &RunConfig) -> Duration {
    let inputs = Inputs {
        customer_id: String::new(),
        meter_api_name: "m".into(),
        stripe_customer: "c".into(),
        stripe_event_name: "e".into(),
        usage_quantity: None,
        start_time: None,
        end_time: None,
    };
    let mut samples = Vec::new();
    let runs = std::env::var("BENCH_RUNS").map_or(2000, |n| n.parse().unwrap());
    for _ in 0..runs {
        let started = Instant::now();
        let result = sandbox.run(config, inputs.clone()).await;
        samples.push(started.elapsed());
        assert!(result.is_err());
    }
    median(samples)
}

/// Where the `sync` runs keep the compiled component: warmed once, as a
/// scheduled sync finds it on every run after its first.
fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("usage-sync-bench-cache-{}", std::process::id()))
}

/// A fresh state directory per command: each measured run meets fresh
/// emulators, and a previous run's recent writes would count as held there.
fn state_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "usage-sync-bench-state-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `usage-sync sync` of `rows` rows as a child process: rows per second, peak RSS.
fn sync_rows(rows: usize, concurrency: usize, batch: usize) -> (f64, u64) {
    let (rate, peak, _) = sync_rows_sent(rows, concurrency, batch);
    (rate, peak)
}

/// [`sync_rows`], and what it sent.
fn sync_rows_sent(rows: usize, concurrency: usize, batch: usize) -> (f64, u64, Sent) {
    let (amberflo, stripe) = emulators(rows);
    let dir = mapping_dir(rows);
    let (elapsed, peak) = sync(&amberflo, &stripe, &dir, concurrency, batch, &[]);
    assert_eq!(stripe.events().len(), rows);
    let _ = std::fs::remove_dir_all(&dir);
    let sent = Sent {
        amberflo: amberflo.requests(),
        stripe: stripe.requests(),
    };
    (rows as f64 / elapsed.as_secs_f64(), peak, sent)
}

/// Two nights of `sync` over `rows` rows with one state directory (the
/// second reads the history and recent writes of the first): rows per
/// second and peak RSS (KiB) of each.
fn two_nights(rows: usize) -> [(f64, u64); 2] {
    let (start, end) = yesterday();
    let records = daily_usage(rows, start - DAY, 2);
    let stripe = Stripe::start(STRIPE_KEY).unwrap();
    stripe.add_meter(MeterSpec::sum("api_calls"));
    let amberflo = Amberflo::start(AMBERFLO_KEY, records).unwrap();
    let dir = mapping_dir(rows);
    let state = state_dir();
    let nights = [(start - DAY, start), (start, end)].map(|(from, to)| {
        let window = [
            "--start-time".to_string(),
            from.to_string(),
            "--end-time".into(),
            to.to_string(),
        ];
        let (elapsed, peak) = sync_in(&state, &amberflo, &stripe, &dir, 64, BATCH, &window);
        (rows as f64 / elapsed.as_secs_f64(), peak)
    });
    assert_eq!(stripe.events().len(), 2 * rows);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);
    nights
}

/// A folder with a mapping of `rows` customers, `cust-{i}` to `cus_{i}`.
fn mapping_dir(rows: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("usage-sync-bench-{}-{rows}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("customerId,stripeCustomer\n");
    for i in 0..rows {
        csv.push_str(&format!("cust-{i},cus_{i}\n"));
    }
    std::fs::write(dir.join("mapping.csv"), csv).unwrap();
    dir
}

/// One `usage-sync sync` of the mapping in `dir` (a fresh journal each time):
/// how long it took and its peak RSS.
fn sync(
    amberflo: &Amberflo,
    stripe: &Stripe,
    dir: &std::path::Path,
    concurrency: usize,
    batch: usize,
    extra: &[String],
) -> (Duration, u64) {
    let state = state_dir();
    let measured = sync_in(&state, amberflo, stripe, dir, concurrency, batch, extra);
    // A big sync's state is tens of MB: not left behind.
    let _ = std::fs::remove_dir_all(&state);
    measured
}

/// [`sync`] with the state directory `state`, kept after it.
fn sync_in(
    state: &std::path::Path,
    amberflo: &Amberflo,
    stripe: &Stripe,
    dir: &std::path::Path,
    concurrency: usize,
    batch: usize,
    extra: &[String],
) -> (Duration, u64) {
    let mapping = dir.join("mapping.csv");
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().contains(".journal.") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // Kept, unless shown (USAGE_SYNC_BENCH_LOG), to say why a sync failed.
    let stderr = state.with_extension("stderr");
    let mut command = usage_sync("sync", amberflo, stripe, state);
    if std::env::var_os("USAGE_SYNC_BENCH_LOG").is_none() {
        command.stderr(std::fs::File::create(&stderr).unwrap());
    }
    let started = Instant::now();
    let mut child = command
        .args(["--mapping", mapping.to_str().unwrap()])
        .args(["--stripe-rate", "1000000"])
        .args(["--amberflo-batch", &batch.to_string()])
        // 0: the default (adaptive, up to 256).
        .args(match concurrency {
            0 => vec![],
            n => vec!["--concurrency".to_string(), n.to_string()],
        })
        .args(extra)
        .spawn()
        .unwrap();
    let peak = watch_rss(&mut child);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    if !status.success() {
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!("the sync exited with {status}; the end of its stderr:\n{tail}");
    }
    (started.elapsed(), peak)
}

/// The CPU (user + system) of every child this process has waited for, so
/// far, and of what they waited for (a wrapper in `USAGE_SYNC_BENCH_BIN`).
fn children_cpu() -> Duration {
    cpu(libc::RUSAGE_CHILDREN)
}

/// The CPU (user + system) of this process so far: the emulators, and the
/// native client when it runs.
fn own_cpu() -> Duration {
    cpu(libc::RUSAGE_SELF)
}

fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0);
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `usage-sync SUBCOMMAND` against the emulators, with the bench's meter,
/// keys, cache and state directory `state`; its output thrown away.
fn usage_sync(
    subcommand: &str,
    amberflo: &Amberflo,
    stripe: &Stripe,
    state: &std::path::Path,
) -> Command {
    // USAGE_SYNC_BENCH_BIN=FILE runs another build of the CLI (an A/B of the host).
    let bin = std::env::var_os("USAGE_SYNC_BENCH_BIN").unwrap_or(BIN.into());
    let mut command = match CACHEGRIND.get() {
        Some(dir) => {
            let mut valgrind = Command::new("valgrind");
            valgrind
                .args(["-q", "--tool=cachegrind", "--cache-sim=no"])
                .arg(format!("--cachegrind-out-file={}/%p.out", dir.display()))
                .arg(bin);
            valgrind
        }
        None => Command::new(bin),
    };
    command
        .arg(subcommand)
        .args([
            "--meter-api-name",
            "api-calls",
            "--stripe-event-name",
            "api_calls",
        ])
        .args([
            "--amberflo-url",
            &amberflo.url(),
            "--stripe-url",
            &stripe.url(),
        ])
        .args(["--cache-dir", cache_dir().to_str().unwrap()])
        // USAGE_SYNC_BENCH_COMPONENT=FILE runs another build (one with names, for `perf`).
        .args(
            std::env::var("USAGE_SYNC_BENCH_COMPONENT")
                .map(|file| vec!["--component".to_string(), file])
                .unwrap_or_default(),
        )
        .env_clear()
        // USAGE_SYNC_PERF_MAP=1 names the guest's functions for `perf`.
        .envs(std::env::var_os("USAGE_SYNC_PERF_MAP").map(|v| ("USAGE_SYNC_PERF_MAP", v)))
        // USAGE_SYNC_LISTING=always lists whatever the pace (an A/B of the pace rule).
        .envs(std::env::var_os("USAGE_SYNC_LISTING").map(|v| ("USAGE_SYNC_LISTING", v)))
        .env("AMBERFLO_API_KEY", AMBERFLO_KEY)
        .env("STRIPE_API_KEY", STRIPE_KEY)
        .env("USAGE_SYNC_STATE_DIR", state)
        .stdout(match std::env::var_os("USAGE_SYNC_BENCH_STDOUT") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        })
        // USAGE_SYNC_BENCH_LOG=1 shows the children's logs (how many ran at once).
        .stderr(match std::env::var_os("USAGE_SYNC_BENCH_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        });
    command
}

/// What a sync asked of each provider.
#[derive(Clone, Copy)]
struct Requests {
    amberflo: usize,
    meter_lookups: usize,
    summary_reads: usize,
    writes: usize,
}

fn requests(amberflo: &Amberflo, stripe: &Stripe) -> Requests {
    let stripe = stripe.requests();
    let count =
        |f: &dyn Fn(&str, &str) -> bool| stripe.iter().filter(|r| f(&r.method, &r.target)).count();
    Requests {
        amberflo: amberflo.requests().len(),
        meter_lookups: count(&|m, t| m == "GET" && t.starts_with("/v1/billing/meters?")),
        summary_reads: count(&|m, t| m == "GET" && t.contains("/event_summaries?")),
        writes: count(&|m, _| m == "POST"),
    }
}

/// Requests of each kind a command sent, per provider and route.
#[derive(Clone, Copy, Default, Debug)]
struct Budget {
    amberflo: usize,
    meters: usize,
    subscriptions: usize,
    invoices: usize,
    summaries: usize,
    writes: usize,
}

impl Budget {
    fn now(amberflo: &Amberflo, stripe: &Stripe) -> Budget {
        let stripe = stripe.requests();
        let count = |f: &dyn Fn(&str, &str) -> bool| {
            stripe.iter().filter(|r| f(&r.method, &r.target)).count()
        };
        Budget {
            amberflo: amberflo.requests().len(),
            meters: count(&|m, t| m == "GET" && t.starts_with("/v1/billing/meters?")),
            subscriptions: count(&|m, t| m == "GET" && t.starts_with("/v1/subscriptions")),
            invoices: count(&|m, t| m == "GET" && t.starts_with("/v1/invoices")),
            summaries: count(&|m, t| m == "GET" && t.contains("/event_summaries?")),
            writes: count(&|m, _| m == "POST"),
        }
    }

    fn since(self, before: Budget) -> Budget {
        Budget {
            amberflo: self.amberflo - before.amberflo,
            meters: self.meters - before.meters,
            subscriptions: self.subscriptions - before.subscriptions,
            invoices: self.invoices - before.invoices,
            summaries: self.summaries - before.summaries,
            writes: self.writes - before.writes,
        }
    }

    /// Seconds these requests take at least at the default paces
    /// (`--stripe-rate 25`, `--stripe-meter-event-rate 250`), computed, not
    /// timed: with a live key the reads and the meter events go at their own
    /// paces at once; with a test key all share one. Amberflo is not paced.
    fn paced(self) -> (f64, f64) {
        let reads = (self.meters + self.subscriptions + self.invoices + self.summaries) as f64;
        let writes = self.writes as f64;
        ((reads / 25.0).max(writes / 250.0), (reads + writes) / 25.0)
    }

    fn total(self) -> usize {
        self.amberflo
            + self.meters
            + self.subscriptions
            + self.invoices
            + self.summaries
            + self.writes
    }
}

/// `usage-sync SUBCOMMAND ARGS` against the emulators with the state
/// directory `state`: its exit code.
fn command(
    subcommand: &str,
    args: &[String],
    amberflo: &Amberflo,
    stripe: &Stripe,
    state: &std::path::Path,
) -> i32 {
    // Unpaced: the requests are counted, not timed; listed as at the default
    // pace, where a listing always pays (README, "One listing per sync").
    let output = usage_sync(subcommand, amberflo, stripe, state)
        .args(args)
        .env("USAGE_SYNC_LISTING", "always")
        .args(["--stripe-rate", "1000000"])
        .args(["--concurrency", "64"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let code = output.status.code().unwrap_or(-1);
    // What failed, said: a table of requests is no use without it.
    if ![0, 5].contains(&code) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!(
            "usage-sync {subcommand} exited {code}: {}",
            stderr
                .lines()
                .filter(|l| l.starts_with("usage-sync:"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    code
}

/// The requests of each command a billing engineer runs, for `customers`
/// customers on monthly subscriptions whose anchors are spread over 30 days
/// (a thirtieth renew on any day), each with one unit a day: the nightly
/// job, a 30-day backfill and its rerun 25 hours later, `reconcile` and
/// `reconcile --invoices` of those 30 days, and an hourly `close-periods`.
fn budget(customers: usize) -> Vec<(&'static str, i32, Budget)> {
    const DAYS: i64 = 30;
    const MONTH: i64 = 30 * DAY;
    let (yesterday_start, yesterday_end) = yesterday();
    let end = yesterday_start - DAY;
    let start = end - DAYS * DAY;
    // The backfill's 30 days, the day before yesterday, yesterday.
    let records = daily_usage(customers, start, DAYS + 2);
    let amberflo = Amberflo::start(AMBERFLO_KEY, records).unwrap();
    let stripe = Stripe::start(STRIPE_KEY).unwrap();
    stripe.add_meter(MeterSpec::sum("api_calls"));
    for i in 0..customers {
        stripe.add_subscription(SubscriptionSpec {
            customer: format!("cus_{i}"),
            event_name: "api_calls".into(),
            // Anchored at noon of one of the last 30 days, months back.
            anchor: start - 3 * MONTH + (i as i64 % DAYS) * DAY + DAY / 2,
            period: MONTH,
            ended_at: None,
        });
    }
    let dir = mapping_dir(customers);
    let state = state_dir();
    let mapping = dir.join("mapping.csv").to_str().unwrap().to_string();
    let window = |from: i64, to: i64| {
        vec![
            "--mapping".to_string(),
            mapping.clone(),
            "--start-time".into(),
            from.to_string(),
            "--end-time".into(),
            to.to_string(),
        ]
    };
    let mut rows = Vec::new();
    let mut measure = |name: &'static str, subcommand: &str, args: Vec<String>| {
        let before = Budget::now(&amberflo, &stripe);
        let code = command(subcommand, &args, &amberflo, &stripe, &state);
        rows.push((name, code, Budget::now(&amberflo, &stripe).since(before)));
    };
    stripe.shift_clock(-25 * 3600);
    measure("a 30-day backfill, first run", "sync", window(start, end));
    stripe.shift_clock(25 * 3600);
    let mut rerun = window(start, end);
    rerun.extend([
        "--journal".to_string(),
        dir.join("rerun.jsonl").to_str().unwrap().into(),
    ]);
    measure("the same backfill rerun 25 h later", "sync", rerun);
    measure(
        "the nightly job (yesterday)",
        "sync",
        window(yesterday_start, yesterday_end),
    );
    measure(
        "`reconcile` of the 30 days",
        "reconcile",
        window(start, end),
    );
    let mut invoices = window(start, end);
    invoices.push("--invoices".into());
    measure(
        "`reconcile --invoices` of the 30 days",
        "reconcile",
        invoices,
    );
    measure(
        "`close-periods` (hourly, default lookback)",
        "close-periods",
        vec!["--mapping".to_string(), mapping.clone()],
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

/// A 30-day backfill of `customers` customers, every day past Stripe's
/// identifier window, synced once, then again "25 hours later" (Stripe's clock
/// moved, so only the summaries stand between the rerun and double billing).
/// Returns both runs' rows/s and requests, then those of a `reconcile` of the
/// same window.
fn backfill(customers: usize) -> (f64, Requests, f64, Requests, f64, Requests) {
    const DAYS: i64 = 30;
    let (_, yesterday_end) = yesterday();
    let end = yesterday_end - 2 * DAY;
    let start = end - DAYS * DAY;
    let records = daily_usage(customers, start, DAYS);
    let amberflo = Amberflo::start(AMBERFLO_KEY, records).unwrap();
    let stripe = Stripe::start(STRIPE_KEY).unwrap();
    stripe.add_meter(MeterSpec::sum("api_calls"));
    let dir = mapping_dir(customers);
    let window = [
        "--start-time".to_string(),
        start.to_string(),
        "--end-time".to_string(),
        end.to_string(),
    ];
    stripe.shift_clock(-25 * 3600);
    let (first, _) = sync(&amberflo, &stripe, &dir, 64, BATCH, &window);
    stripe.shift_clock(25 * 3600);
    assert_eq!(stripe.events().len(), customers * DAYS as usize);
    let before = requests(&amberflo, &stripe);
    let (rerun, _) = sync(&amberflo, &stripe, &dir, 64, BATCH, &window);
    let after = requests(&amberflo, &stripe);
    assert_eq!(
        stripe.events().len(),
        customers * DAYS as usize,
        "billed once"
    );
    let before_reconcile = requests(&amberflo, &stripe);
    let started = Instant::now();
    let status = usage_sync("reconcile", &amberflo, &stripe, &state_dir())
        .args(["--mapping", dir.join("mapping.csv").to_str().unwrap()])
        .args([
            "--concurrency",
            "64",
            "--amberflo-batch",
            &BATCH.to_string(),
            "--stripe-rate",
            "1000000",
        ])
        .args(&window)
        .status()
        .unwrap();
    assert!(status.success(), "everything matches");
    let reconciled = started.elapsed();
    let after_reconcile = requests(&amberflo, &stripe);
    let _ = std::fs::remove_dir_all(&dir);
    let rate = |d: Duration| customers as f64 / d.as_secs_f64();
    (
        rate(first),
        before,
        rate(rerun),
        Requests {
            amberflo: after.amberflo - before.amberflo,
            meter_lookups: after.meter_lookups - before.meter_lookups,
            summary_reads: after.summary_reads - before.summary_reads,
            writes: after.writes - before.writes,
        },
        rate(reconciled),
        Requests {
            amberflo: after_reconcile.amberflo - before_reconcile.amberflo,
            meter_lookups: after_reconcile.meter_lookups - before_reconcile.meter_lookups,
            summary_reads: after_reconcile.summary_reads - before_reconcile.summary_reads,
            writes: after_reconcile.writes - before_reconcile.writes,
        },
    )
}

/// `rows` customers' usage, both emulators over HTTPS with `ca`'s certificates,
/// each behind a proxy adding `one_way` latency each way.
fn far_emulators(
    rows: usize,
    ca: &TestCa,
    one_way: Duration,
) -> (Amberflo, Stripe, LatencyProxy, LatencyProxy) {
    far_emulators_of(rows, 1, ca, one_way)
}

/// [`far_emulators`] with usage on the `days` UTC days up to yesterday.
fn far_emulators_of(
    rows: usize,
    days: i64,
    ca: &TestCa,
    one_way: Duration,
) -> (Amberflo, Stripe, LatencyProxy, LatencyProxy) {
    let (yesterday, _) = yesterday();
    let records = daily_usage(rows, yesterday - (days - 1) * DAY, days);
    let tls = ca.server_config(Presented::Good);
    let amberflo = Amberflo::start_with(AMBERFLO_KEY, records, Some(tls.clone())).unwrap();
    let stripe = Stripe::start_with(STRIPE_KEY, Some(tls)).unwrap();
    stripe.add_meter(MeterSpec::sum("api_calls"));
    subscribe(&stripe, rows);
    let a = LatencyProxy::start(amberflo.address(), one_way).unwrap();
    let s = LatencyProxy::start(stripe.address(), one_way).unwrap();
    (amberflo, stripe, a, s)
}

/// The flags that send usage-sync through the proxies `a` (Amberflo) and `s`
/// (Stripe), trusting `ca`, whose certificate is written into `dir`. Later
/// flags win: the proxies' URLs replace the emulators' own.
fn far_flags(
    ca: &TestCa,
    dir: &std::path::Path,
    a: &LatencyProxy,
    s: &LatencyProxy,
) -> Vec<String> {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    vec![
        "--amberflo-url".to_string(),
        a.https_url(),
        "--stripe-url".to_string(),
        s.https_url(),
        "--ca-file".to_string(),
        ca_file.to_str().unwrap().to_string(),
    ]
}

/// What a far sync did: rows/s, TLS handshakes with Stripe, and the
/// requests each provider received (for the native replay).
struct Far {
    rate: f64,
    handshakes: usize,
    /// The sync's peak RSS, KiB.
    peak: u64,
    sent: Sent,
}

/// The requests a sync sent to each provider, in arrival order.
struct Sent {
    amberflo: Vec<usage_sync_emulators::Recorded>,
    stripe: Vec<usage_sync_emulators::Recorded>,
}

/// `sync` of `rows` rows over TLS, `one_way` away: with `--concurrency N`
/// (`None`: the default), otherwise the bench's flags, and `more`.
fn far_sync(rows: usize, one_way: Duration, concurrency: Option<usize>, more: &[&str]) -> Far {
    let ca = TestCa::new("bench CA");
    let dir = mapping_dir(rows);
    let (amberflo, stripe, a, s) = far_emulators(rows, &ca, one_way);
    let mut extra = far_flags(&ca, &dir, &a, &s);
    extra.extend(more.iter().map(|m| m.to_string()));
    let (elapsed, peak) = sync(
        &amberflo,
        &stripe,
        &dir,
        concurrency.unwrap_or(0),
        BATCH,
        &extra,
    );
    assert_eq!(
        stripe.events().len(),
        rows,
        "events on Stripe after a sync of {rows} rows that exited 0 ({} ms one-way)",
        one_way.as_millis()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Far {
        rate: rows as f64 / elapsed.as_secs_f64(),
        handshakes: stripe.connections(),
        peak,
        sent: Sent {
            amberflo: amberflo.requests(),
            stripe: stripe.requests(),
        },
    }
}

/// Two nights of the same nightly job on one state directory, `one_way`
/// from both providers, default flags: the first starts its rows at once
/// from the default, the second from where the first ended. Rows/s of each.
fn far_nights(rows: usize, one_way: Duration) -> (f64, f64) {
    let ca = TestCa::new("bench CA");
    let dir = mapping_dir(rows);
    let (amberflo, stripe, a, s) = far_emulators_of(rows, 2, &ca, one_way);
    let far = far_flags(&ca, &dir, &a, &s);
    let (yesterday, _) = yesterday();
    let before = yesterday - DAY;
    let state = state_dir();
    let night = |start: i64| {
        let mut extra = far.clone();
        extra.extend(["--start-time".to_string(), start.to_string()]);
        extra.extend(["--end-time".to_string(), (start + DAY).to_string()]);
        let (elapsed, _) = sync_in(&state, &amberflo, &stripe, &dir, 0, BATCH, &extra);
        rows as f64 / elapsed.as_secs_f64()
    };
    let first = night(before);
    let second = night(yesterday);
    assert_eq!(stripe.events().len(), 2 * rows);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);
    (first, second)
}

/// `usage-sync run` of one customer's yesterday, `one_way` from both
/// providers over HTTPS, fresh emulators and state each time: median seconds
/// of `runs`.
fn far_run(one_way: Duration, runs: usize) -> Duration {
    let samples = (0..runs)
        .map(|_| {
            let ca = TestCa::new("bench CA");
            let dir = mapping_dir(1);
            let (amberflo, stripe, a, s) = far_emulators(1, &ca, one_way);
            let state = state_dir();
            let mut command = usage_sync("run", &amberflo, &stripe, &state);
            command.args(far_flags(&ca, &dir, &a, &s)).args([
                "--customer-id",
                "cust-0",
                "--stripe-customer",
                "cus_0",
            ]);
            let started = Instant::now();
            assert!(command.status().unwrap().success());
            let took = started.elapsed();
            assert_eq!(stripe.events().len(), 1);
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_dir_all(&dir);
            took
        })
        .collect();
    median(samples)
}

/// The Stripe customer a request is for (`cus_N` in its target or body).
fn customer_of(request: &usage_sync_emulators::Recorded) -> Option<String> {
    let text = format!("{} {}", request.target, request.body_text());
    let at = text.find("cus_")?;
    let id: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(id)
}

/// The requests `sync` sent, replayed natively with a pooled client
/// (hyper-util's, on hyper-rustls, HTTP/1.1, trusting the same CA) to fresh
/// emulators as far away, `concurrency` at once (see [`replay`]). Rows/s.
async fn far_native(rows: usize, one_way: Duration, concurrency: usize, sent: &Sent) -> f64 {
    use hyper_util::client::legacy::Client;
    let ca = TestCa::new("bench CA");
    let (_amberflo, stripe, a, s) = far_emulators(rows, &ca, one_way);
    let mut roots = rustls::RootCertStore::empty();
    let pem = ca.pem();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            pem.as_bytes(),
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build(https);
    let rate = replay(
        client,
        rows,
        concurrency,
        sent,
        &a.https_url(),
        &s.https_url(),
    )
    .await;
    assert_eq!(stripe.events().len(), rows);
    rate
}

/// The requests `sync` sent on loopback, replayed natively over plain HTTP
/// with hyper-util's pooled client to fresh emulators (see [`replay`]): the
/// baseline, and the emulators' ceiling. Rows/s.
async fn native_rows(rows: usize, concurrency: usize, sent: &Sent) -> f64 {
    use hyper_util::client::legacy::Client;
    let (amberflo, stripe) = emulators(rows);
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let rate = replay(
        client,
        rows,
        concurrency,
        sent,
        &amberflo.url(),
        &stripe.url(),
    )
    .await;
    assert_eq!(stripe.events().len(), rows);
    rate
}

/// Replays `sent` with `client` to the emulators at `amberflo` and `stripe`,
/// `concurrency` at once, as `sync` orders its work: the requests without a
/// customer first (the meter lookup), then per batch its Amberflo query and
/// its rows, each row's Stripe requests in one slot: its first two reads at
/// once (`sync` sends the summaries read beside the subscriptions read), then
/// the rest in order. Rows/s.
async fn replay<C>(
    client: hyper_util::client::legacy::Client<C, Full<bytes::Bytes>>,
    rows: usize,
    concurrency: usize,
    sent: &Sent,
    amberflo: &str,
    stripe: &str,
) -> f64
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    type Request = usage_sync_emulators::Recorded;
    let one = move |client: hyper_util::client::legacy::Client<C, Full<bytes::Bytes>>,
                    base: String,
                    r: Request| async move {
        let mut request = http::Request::builder()
            .method(r.method.as_str())
            .uri(format!("{base}{}", r.target));
        for (name, value) in &r.headers {
            if !["host", "content-length", "connection"].contains(&name.as_str()) {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let answer = client
            .request(request.body(Full::new(bytes::Bytes::from(r.body))).unwrap())
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    };
    let mut per_customer: std::collections::HashMap<String, Vec<Request>> = Default::default();
    let mut once = Vec::new();
    for r in &sent.stripe {
        match customer_of(r) {
            Some(customer) => per_customer.entry(customer).or_default().push(r.clone()),
            None => once.push(r.clone()),
        }
    }
    let per_query = rows.div_ceil(sent.amberflo.len().max(1));
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    // A listing's pages (subscriptions, then invoices) go on after the last
    // object of the page before, whose id these emulators drew afresh.
    let mut last_listed: std::collections::HashMap<String, String> = Default::default();
    for mut r in once {
        let path = r.target.split_once('?').map(|(path, _)| path.to_string());
        let listing = path
            .as_deref()
            .filter(|p| ["/v1/subscriptions", "/v1/invoices"].contains(p));
        if let Some(last) = listing.and_then(|p| last_listed.get(p))
            && let Some((head, tail)) = r.target.split_once("starting_after=")
        {
            let rest = tail.find('&').map_or("", |i| &tail[i..]);
            r.target = format!("{head}starting_after={last}{rest}");
        }
        let listing = listing.map(String::from);
        let body = one(client.clone(), stripe.to_string(), r).await;
        if let Some(path) = listing {
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if let Some(last) = page["data"]
                .as_array()
                .and_then(|d| d.last())
                .and_then(|s| s["id"].as_str())
            {
                last_listed.insert(path, last.to_string());
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (batch, query) in sent.amberflo.iter().enumerate() {
        let (client, permits, query) = (client.clone(), permits.clone(), query.clone());
        let (amberflo_url, stripe_url) = (amberflo.to_string(), stripe.to_string());
        let rows_of_batch: Vec<Vec<Request>> = (batch * per_query
            ..((batch + 1) * per_query).min(rows))
            .map(|i| per_customer.remove(&format!("cus_{i}")).unwrap_or_default())
            .collect();
        tasks.spawn(async move {
            {
                let _permit = permits.acquire().await.unwrap();
                one(client.clone(), amberflo_url, query).await;
            }
            let mut row_tasks = tokio::task::JoinSet::new();
            for requests in rows_of_batch {
                let (client, url, permits) = (client.clone(), stripe_url.clone(), permits.clone());
                row_tasks.spawn(async move {
                    let _permit = permits.acquire().await.unwrap();
                    let mut rest = requests;
                    let reads = rest
                        .iter()
                        .take(2)
                        .take_while(|r| r.method == "GET")
                        .count();
                    let after = rest.split_off(reads);
                    let mut at_once = tokio::task::JoinSet::new();
                    for r in rest {
                        at_once.spawn(one(client.clone(), url.clone(), r));
                    }
                    while let Some(done) = at_once.join_next().await {
                        done.unwrap();
                    }
                    for r in after {
                        one(client.clone(), url.clone(), r).await;
                    }
                });
            }
            while let Some(done) = row_tasks.join_next().await {
                done.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// The child's peak resident set, in KiB, sampled until it exits.
fn watch_rss(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            for line in text.lines() {
                if let Some(kib) = line.strip_prefix("VmHWM:") {
                    peak = peak.max(kib.trim().trim_end_matches(" kB").parse().unwrap_or(0));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// `usage-sync run` from process start to its first request (a closed port).
fn start_up(cache: bool) -> Duration {
    let dir = std::env::temp_dir().join(format!("usage-sync-bench-start-{}", std::process::id()));
    let samples = (0..21)
        .map(|_| {
            let mut command = Command::new(BIN);
            command
                .args([
                    "run",
                    "--amberflo-url",
                    "http://127.0.0.1:9",
                    "--stripe-url",
                    "http://127.0.0.1:10",
                ])
                .args([
                    "--customer-id",
                    "a",
                    "--meter-api-name",
                    "m",
                    "--stripe-customer",
                    "c",
                ])
                .args(["--stripe-event-name", "e", "--max-retries", "0"])
                .env_clear()
                .env("AMBERFLO_API_KEY", AMBERFLO_KEY)
                .env("STRIPE_API_KEY", STRIPE_KEY)
                .env("USAGE_SYNC_STATE_DIR", state_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if cache {
                command.args(["--cache-dir", dir.to_str().unwrap()]);
            } else {
                command.arg("--no-cache");
            }
            let started = Instant::now();
            command.status().unwrap();
            started.elapsed()
        })
        .collect();
    median(samples)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Machine: {cores} cores; {}", std::env::consts::ARCH);
    println!();

    // As `sync` runs it (preallocated slots), and as `run` does (on demand).
    let pool = Pool {
        instances: 64,
        max_memory_bytes: Limits::default().max_memory_bytes,
    };
    // The component `sync` runs (without the HTTP entry point);
    // USAGE_SYNC_BENCH_COMPONENT=FILE: the overhead of another build (A/B with
    // USAGE_SYNC_BENCH_BASELINE, without rebuilding the host).
    let component = match std::env::var_os("USAGE_SYNC_BENCH_COMPONENT") {
        Some(file) => std::fs::read(file).unwrap(),
        None => usage_sync::WORKFLOW_COMPONENT.to_vec(),
    };
    let pooled = Sandbox::load(&component, None, Some(pool)).unwrap().0;
    let on_demand = Sandbox::new(&component).unwrap();
    let (amberflo, stripe) = emulators(1);
    let cfg = config(&amberflo, &stripe);
    let per_run = runtime.block_on(overhead(&pooled, &cfg));
    let per_run_on_demand = runtime.block_on(overhead(&on_demand, &cfg));
    // As `serve` runs it: the shipped component, with its HTTP entry point.
    // Compiled only for the two modes that print it.
    let per_run_shipped = || {
        let shipped = Sandbox::load(usage_sync::DEFAULT_COMPONENT, None, Some(pool))
            .unwrap()
            .0;
        runtime.block_on(overhead(&shipped, &cfg))
    };
    // `cargo bench --bench sync -- overhead`: only the first figures (for profiling).
    if std::env::args().any(|arg| arg == "overhead") {
        println!(
            "sandbox overhead per run: {:.1} µs pooled, {:.1} µs on demand; the shipped component (with its HTTP entry point, as `serve` runs it) {:.1} µs pooled",
            per_run.as_secs_f64() * 1e6,
            per_run_on_demand.as_secs_f64() * 1e6,
            per_run_shipped().as_secs_f64() * 1e6
        );
        // USAGE_SYNC_BENCH_BASELINE=FILE: another build (an older one) against
        // this one, pooled, in alternating rounds of this process.
        if let Some(file) = std::env::var_os("USAGE_SYNC_BENCH_BASELINE") {
            let wasm = std::fs::read(&file).unwrap();
            let baseline = Sandbox::load(&wasm, None, Some(pool)).unwrap().0;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                ours.push(runtime.block_on(overhead(&pooled, &cfg)));
                theirs.push(runtime.block_on(overhead(&baseline, &cfg)));
            }
            let (ours, theirs) = (median(ours), median(theirs));
            println!(
                "pooled, medians of 7 alternating rounds: this build {:.1} µs ({} bytes), baseline {:.1} µs ({} bytes): {:.2} x",
                ours.as_secs_f64() * 1e6,
                component.len(),
                theirs.as_secs_f64() * 1e6,
                wasm.len(),
                ours.as_secs_f64() / theirs.as_secs_f64()
            );
        }
        return;
    }
    sync_rows(10, 8, 1); // warms the cache
    // `cargo bench --bench sync -- memory`: peak RSS of a big sync, against
    // the same sync of 10,000 rows (USAGE_SYNC_BENCH_ROWS, default 100,000).
    if std::env::args().any(|arg| arg == "memory") {
        let rows = std::env::var("USAGE_SYNC_BENCH_ROWS").map_or(100_000, |n| n.parse().unwrap());
        let [(_, small), _] = two_nights(10_000);
        let [(first, big), (second, again)] = two_nights(rows);
        println!(
            "| rows | night | peak RSS | bytes per row above 10,000 rows (night 1) | rows/s |"
        );
        println!("| --- | --- | --- | --- | --- |");
        // `sync_in` reports KiB.
        println!("| 10,000 | 1 | {} MiB | | |", small >> 10);
        println!(
            "| {rows} | 1 (empty state) | {} MiB | {} | {first:.0} |",
            big >> 10,
            (big.saturating_sub(small) << 10) / (rows.saturating_sub(10_000).max(1) as u64)
        );
        println!(
            "| {rows} | 2 (history and recent writes of night 1) | {} MiB | | {second:.0} |",
            again >> 10
        );
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- budget`: the requests of each command,
    // per 1,000 customers.
    if std::env::args().any(|arg| arg == "budget") {
        println!(
            "| per 1,000 customers | exit | Amberflo queries | meter lookups | subscription reads | invoice reads | summary reads | writes | all | at the default paces, live key | test key |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (name, code, b) in budget(1_000) {
            let (live, test) = b.paced();
            println!(
                "| {name} | {code} | {} | {} | {} | {} | {} | {} | {} | {live:.0} s | {test:.0} s |",
                b.amberflo,
                b.meters,
                b.subscriptions,
                b.invoices,
                b.summaries,
                b.writes,
                b.total()
            );
        }
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- instructions`: the instructions a row of
    // the sync, a query per row and batched, counted by valgrind: what an A/B
    // of builds compares on a noisy machine (the same build counts the same
    // to 0.01 %). One row at a time: a pool of instances for more reserves
    // more address space than valgrind manages. Two runs each, so the
    // process's start cancels.
    if std::env::args().any(|arg| arg == "instructions") {
        let dir = std::env::temp_dir().join(format!("usage-sync-bench-cg-{}", std::process::id()));
        CACHEGRIND.set(dir.clone()).unwrap();
        // Under valgrind the CPU has other features: the component is
        // compiled again for them, once, before counting.
        instructions(10, 1);
        let (few, many) = (instructions(100, 1), instructions(300, 1));
        println!(
            "instructions a row (per-row query, one row at a time, valgrind): {} (100 rows: {few}, 300 rows: {many})",
            (many - few) / 200
        );
        let (few, many) = (instructions(100, BATCH), instructions(300, BATCH));
        println!(
            "instructions a row (batched, {BATCH} customers a query, one row at a time, valgrind): {} (100 rows: {few}, 300 rows: {many})",
            (many - few) / 200
        );
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- throughput`: only 10,000 rows (for
    // profiling); USAGE_SYNC_BENCH_ROWS=N another count.
    if std::env::args().any(|arg| arg == "throughput") {
        let rows = std::env::var("USAGE_SYNC_BENCH_ROWS").map_or(10_000, |n| n.parse().unwrap());
        // The sync's CPU a row (its one child's, the emulators run in this
        // process): steadier than rows/s on a machine the emulators share, so
        // what an A/B of builds compares.
        let cpu_per_row = |since: Duration| {
            children_cpu().saturating_sub(since).as_secs_f64() * 1e6 / rows as f64
        };
        let before = children_cpu();
        let (per_row, _) = sync_rows(rows, 64, 1);
        let per_row_cpu = cpu_per_row(before);
        let before = children_cpu();
        let own = own_cpu();
        let (batched, _, sent) = sync_rows_sent(rows, 64, BATCH);
        let batched_cpu = cpu_per_row(before);
        // This process's CPU a row: the emulators serving the batched sync,
        // then the emulators and the native client serving its replay.
        let own_per_row = |since: Duration| (own_cpu() - since).as_secs_f64() * 1e6 / rows as f64;
        let serving = own_per_row(own);
        let own = own_cpu();
        let native = runtime.block_on(native_rows(rows, 64, &sent));
        let replay = own_per_row(own);
        println!(
            "{rows} rows: sync {per_row:.0} rows/s per-row query, {batched:.0} rows/s batched, native {native:.0} rows/s"
        );
        println!(
            "CPU of the sync a row: {per_row_cpu:.0} µs per-row query, {batched_cpu:.0} µs batched"
        );
        // Where both runs are bound by the machine's CPU, the ratio is the
        // CPU a row of the replay over the batched sync's, each with the
        // emulators': what the batched sync's own CPU a row must come to.
        let needed = replay / 0.8 - serving;
        println!(
            "CPU a row, batched: the emulators {serving:.0} µs serving the sync; the emulators and the native client {replay:.0} µs serving the replay; CPU-bound ratio {:.2}; 0.8 needs the sync at {needed:.0} µs a row",
            replay / (serving + batched_cpu)
        );
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- run`: one `usage-sync run` at
    // USAGE_SYNC_BENCH_DELAYS (default 25 ms), with the warm cache.
    if std::env::args().any(|arg| arg == "run") {
        let delays: Vec<u64> = std::env::var("USAGE_SYNC_BENCH_DELAYS").map_or(vec![25], |d| {
            d.split(',').map(|ms| ms.trim().parse().unwrap()).collect()
        });
        println!("| one-way delay | `usage-sync run`, median of 9 |");
        println!("| --- | --- |");
        for ms in delays {
            let took = far_run(Duration::from_millis(ms), 9);
            println!("| {ms} ms | {:.0} ms |", took.as_secs_f64() * 1e3);
        }
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- warm`: two nights of the nightly job on one
    // state directory, default flags, at USAGE_SYNC_BENCH_DELAYS (default 25 ms).
    if std::env::args().any(|arg| arg == "warm") {
        let rows = std::env::var("USAGE_SYNC_BENCH_FAR_ROWS").map_or(1_000, |n| n.parse().unwrap());
        let delays: Vec<u64> = std::env::var("USAGE_SYNC_BENCH_DELAYS").map_or(vec![25], |d| {
            d.split(',').map(|ms| ms.trim().parse().unwrap()).collect()
        });
        println!(
            "| one-way delay | {rows} rows, night 1 (from 16 at once) | night 2 (from where night 1 ended) | ratio |"
        );
        println!("| --- | --- | --- | --- |");
        for ms in delays {
            let (mut first, mut second) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let (one, two) = far_nights(rows, Duration::from_millis(ms));
                first.push(one);
                second.push(two);
            }
            let med = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (one, two) = (med(first), med(second));
            println!("| {ms} ms | {one:.0} | {two:.0} | {:.2} |", two / one);
        }
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    // `cargo bench --bench sync -- latency`: only the realistic-network table.
    let latency_only = std::env::args().any(|arg| arg == "latency");
    if !latency_only {
        print_main_tables(&runtime, per_run, per_run_on_demand, per_run_shipped());
    }
    // `cargo bench --bench sync -- main`: only the loopback tables.
    if std::env::args().any(|arg| arg == "main") {
        let _ = std::fs::remove_dir_all(cache_dir());
        return;
    }
    println!();
    println!(
        "| one-way delay | native pooled rows/s (HTTP/1.1, 64 at once) | sync, --concurrency 64 | ratio | sync, default flags (HTTP/2) | ratio | sync, default flags, --http1 | ratio | TLS handshakes with Stripe (64 / default / --http1) | Stripe requests per row | peak RSS, default flags |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // USAGE_SYNC_BENCH_FAR_ROWS: rows of each far sync (default 1,000).
    let rows = std::env::var("USAGE_SYNC_BENCH_FAR_ROWS").map_or(1_000, |n| n.parse().unwrap());
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // USAGE_SYNC_BENCH_DELAYS=25,50 measures only those.
    let delays: Vec<u64> = std::env::var("USAGE_SYNC_BENCH_DELAYS")
        .map_or(vec![0, 10, 25, 50], |d| {
            d.split(',').map(|ms| ms.trim().parse().unwrap()).collect()
        });
    for ms in delays {
        let one_way = Duration::from_millis(ms);
        let mut rates: [Vec<f64>; 4] = Default::default();
        let mut shakes: [Vec<f64>; 3] = Default::default();
        let mut per_row = 0.0;
        let mut peaks = Vec::new();
        for _ in 0..3 {
            let far = far_sync(rows, one_way, Some(64), &[]);
            rates[0].push(runtime.block_on(far_native(rows, one_way, 64, &far.sent)));
            rates[1].push(far.rate);
            shakes[0].push(far.handshakes as f64);
            per_row = far.sent.stripe.len() as f64 / rows as f64;
            for (i, more) in [(2, &[][..]), (3, &["--http1"][..])] {
                let far = far_sync(rows, one_way, None, more);
                rates[i].push(far.rate);
                shakes[i - 1].push(far.handshakes as f64);
                if i == 2 {
                    peaks.push(far.peak as f64);
                }
            }
        }
        let [native, at_64, h2, h1] = rates.map(med);
        let [s64, sh2, sh1] = shakes.map(med);
        println!(
            "| {ms} ms | {native:.0} | {at_64:.0} | {:.2} | {h2:.0} | {:.2} | {h1:.0} | {:.2} | {s64:.0} / {sh2:.0} / {sh1:.0} | {per_row:.2} | {:.0} MiB |",
            at_64 / native,
            h2 / native,
            h1 / native,
            med(peaks) / 1024.0,
        );
    }
    let _ = std::fs::remove_dir_all(cache_dir());
}

fn print_main_tables(
    runtime: &tokio::runtime::Runtime,
    per_run: Duration,
    per_run_on_demand: Duration,
    per_run_shipped: Duration,
) {
    let cold = start_up(false);
    let warm = start_up(true);
    println!("| measure | median | goal |");
    println!("| --- | --- | --- |");
    println!(
        "| sandbox overhead per run (instantiate + call, no HTTP), pooled as in `sync` | {:.1} µs | ≤ 15 µs |",
        per_run.as_secs_f64() * 1e6
    );
    println!(
        "| the same, instances allocated on demand as in `run` | {:.1} µs | |",
        per_run_on_demand.as_secs_f64() * 1e6
    );
    println!(
        "| the same, pooled, the shipped component (with its HTTP entry point) as in `serve` | {:.1} µs | |",
        per_run_shipped.as_secs_f64() * 1e6
    );
    println!(
        "| `usage-sync run` to its first request, no cache | {:.1} ms | |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| `usage-sync run` to its first request, warm cache | {:.1} ms | ≤ 15 ms |",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "| component size: shipped / run by the batch commands | {} / {} KiB | ≤ 400 KiB |",
        usage_sync::DEFAULT_COMPONENT.len() / 1024,
        usage_sync::WORKFLOW_COMPONENT.len() / 1024
    );
    println!();
    println!(
        "| rows | native rows/s (baseline, emulators' ceiling) | sync rows/s, one Amberflo query per row | ratio | sync rows/s, one query per {BATCH} customers (default) | ratio | sync peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for rows in [100, 1_000, 10_000] {
        let (batched, rss, sent) = sync_rows_sent(rows, 64, BATCH);
        let native = runtime.block_on(native_rows(rows, 64, &sent));
        let (per_row, _) = sync_rows(rows, 64, 1);
        println!(
            "| {rows} | {native:.0} | {per_row:.0} | {:.2} | {batched:.0} | {:.2} | {} MiB |",
            per_row / native,
            batched / native,
            rss / 1024
        );
    }
    let (_, rss) = sync_rows(1_000, 1_000, BATCH);
    println!();
    println!(
        "| peak RSS, 1,000 rows with 1,000 in flight | {} MiB | ≤ 1 GiB |",
        rss / 1024
    );

    // What reading the ledger costs.
    let (amberflo, stripe) = emulators(1_000);
    let dir = mapping_dir(1_000);
    let (nightly, _) = sync(&amberflo, &stripe, &dir, 64, BATCH, &[]);
    let nightly_requests = requests(&amberflo, &stripe);
    let _ = std::fs::remove_dir_all(&dir);
    let (first, wrote, rerun, reread, reconciled, compared) = backfill(1_000);
    println!();
    println!(
        "| sync of 1,000 customers | rows/s | Amberflo queries | meter lookups | summary reads per customer | writes |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| yesterday (the nightly job) | {:.0} | {} | {} | {:.2} | {} |",
        1_000.0 / nightly.as_secs_f64(),
        nightly_requests.amberflo,
        nightly_requests.meter_lookups,
        nightly_requests.summary_reads as f64 / 1_000.0,
        nightly_requests.writes
    );
    println!(
        "| 30-day backfill (30 events a row), first run | {first:.0} | {} | {} | {:.2} | {} |",
        wrote.amberflo,
        wrote.meter_lookups,
        wrote.summary_reads as f64 / 1_000.0,
        wrote.writes
    );
    println!(
        "| the same backfill rerun 25 h later | {rerun:.0} | {} | {} | {:.2} | {} |",
        reread.amberflo,
        reread.meter_lookups,
        reread.summary_reads as f64 / 1_000.0,
        reread.writes
    );
    println!(
        "| `reconcile` of the same 30 days (read-only) | {reconciled:.0} | {} | {} | {:.2} | {} |",
        compared.amberflo,
        compared.meter_lookups,
        compared.summary_reads as f64 / 1_000.0,
        compared.writes
    );
}
