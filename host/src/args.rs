//! The command line's arguments: clap types that only parse and validate,
//! and the step that turns them into the run's configuration (limits,
//! options, policy, the sandbox).

use crate::bindings::{self, Endpoints, Options};
use crate::egress::policy::{DEFAULT_AMBERFLO_URL, DEFAULT_STRIPE_URL, Endpoint, Policy};
use crate::options::default_options;
use crate::outcome::Failure;
use crate::sandbox::limits::Limits;
use crate::sandbox::{Pool, Sandbox};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use usage_sync_report::{Interval, Rounding};

#[derive(Parser)]
#[command(
    name = "usage-sync",
    version,
    args_override_self = true,
    about = "Records Amberflo usage on a Stripe billing meter, from a sandboxed WebAssembly component",
    after_help = "Exit status: 0 success, 1 internal error, 2 bad input (nothing written), 3 provider error, 4 sandbox violation or limit, 5 drift (Stripe holds another value; nothing written for it), 130 sync interrupted."
)]
pub(crate) struct Cli {
    /// stderr: lines for a person, or one JSON object per line (run id,
    /// command, step, provider, status, duration...), keys scrubbed either way.
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    pub(crate) log_format: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the workflow: query Amberflo, record one Stripe meter event per interval.
    ///
    /// Keys come from AMBERFLO_API_KEY and STRIPE_API_KEY. stdout gets one JSON object.
    Run(Box<RunArgs>),
    /// Run the workflow for every row of a mapping file, many rows at once, resumably.
    Sync(Box<SyncArgs>),
    /// Compare Amberflo's totals with what Stripe's meter holds, per row and interval; writes nothing.
    ///
    /// stdout gets one JSON line per row and interval, then a summary line (or CSV).
    /// Exit 0 when everything matches, 5 when something drifts.
    Reconcile(Box<ReconcileArgs>),
    /// Run the workflow against local Amberflo and Stripe emulators: no account, no network.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Serve the component's HTTP entry point: `POST /run` with the inputs JSON.
    ///
    /// Each request runs in its own sandboxed instance, with the same egress policy,
    /// key injection and limits as `run`. Keys come from AMBERFLO_API_KEY and STRIPE_API_KEY;
    /// callers present `Authorization: Bearer <token>`, the token from USAGE_SYNC_SERVE_TOKEN
    /// or the file USAGE_SYNC_SERVE_TOKEN_FILE names. SIGTERM or Ctrl-C stops accepting and
    /// lets runs in flight finish.
    Serve(Box<ServeArgs>),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub(crate) listen: std::net::SocketAddr,
    /// Runs at once; a request above the cap gets 503 with Retry-After.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) max_runs: usize,
    /// Cap on a request body, bytes (an inputs object is a few hundred).
    #[arg(long, default_value_t = 64 << 10, value_name = "BYTES")]
    pub(crate) max_body_bytes: usize,
    /// Time a client has to send a request's headers, and then its body, seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) read_timeout: f64,
    /// After SIGTERM or Ctrl-C, how long runs in flight may take to finish, seconds
    /// (under Kubernetes' default terminationGracePeriodSeconds of 30).
    #[arg(long, default_value_t = 25.0, value_name = "SECS")]
    pub(crate) grace_period: f64,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// JSON file of inputs: customerId, meterApiName, stripeCustomer, stripeEventName,
    /// usageQuantity, startTime, endTime.
    #[arg(long, value_name = "FILE")]
    pub(crate) inputs: Option<PathBuf>,
    /// Write metrics for node_exporter's textfile collector here, atomically
    /// (last success kept across failed runs).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
    /// Amberflo customer to query.
    #[arg(long)]
    pub(crate) customer_id: Option<String>,
    /// Amberflo meter to query.
    #[arg(long)]
    pub(crate) meter_api_name: Option<String>,
    /// Stripe customer id (cus_...) the usage is billed to.
    #[arg(long)]
    pub(crate) stripe_customer: Option<String>,
    /// Stripe meter's event name.
    #[arg(long)]
    pub(crate) stripe_event_name: Option<String>,
    /// Whole number to record (one interval only); default: each interval's Amberflo total.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) usage_quantity: Option<String>,
    /// Window start, Unix seconds or RFC 3339 (default: start of the previous UTC day).
    #[arg(long)]
    pub(crate) start_time: Option<String>,
    /// Window end, exclusive (default: end of the previous UTC day).
    #[arg(long)]
    pub(crate) end_time: Option<String>,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) workflow: WorkflowArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

#[derive(Args)]
pub(crate) struct EndpointArgs {
    /// Amberflo API base URL.
    #[arg(long, env = "AMBERFLO_BASE_URL", default_value = DEFAULT_AMBERFLO_URL)]
    pub(crate) amberflo_url: String,
    /// Stripe API base URL.
    #[arg(long, env = "STRIPE_BASE_URL", default_value = DEFAULT_STRIPE_URL)]
    pub(crate) stripe_url: String,
    /// PEM file of certificate authorities HTTPS trusts besides the built-in
    /// roots (a private CA, or a proxy that re-signs TLS).
    #[arg(long, env = "SSL_CERT_FILE", value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Trust only the authorities in --ca-file, not the built-in roots.
    #[arg(long)]
    pub(crate) ca_file_only: bool,
    /// Refuse a Stripe key of the other mode before any request.
    #[arg(long, value_name = "MODE", value_parser = ["live", "test"])]
    pub(crate) expect_mode: Option<String>,
}

impl EndpointArgs {
    /// The Stripe mode the keys must be for, if one was given.
    pub(crate) fn expected_mode(&self) -> Option<crate::secrets::Mode> {
        match self.expect_mode.as_deref() {
            Some("live") => Some(crate::secrets::Mode::Live),
            Some("test") => Some(crate::secrets::Mode::Test),
            _ => None,
        }
    }

    /// Which certificate authorities HTTPS trusts.
    pub(crate) fn trust(&self) -> Result<crate::egress::transport::Trust, Failure> {
        crate::egress::transport::Trust::from_file(self.ca_file.as_deref(), self.ca_file_only)
            .map_err(Failure::BadInput)
    }

    pub(crate) fn resolve(&self) -> Result<(Policy, Endpoints), Failure> {
        let amberflo = Endpoint::parse(&self.amberflo_url)
            .map_err(|e| Failure::BadInput(format!("--amberflo-url {e}")))?;
        let stripe = Endpoint::parse(&self.stripe_url)
            .map_err(|e| Failure::BadInput(format!("--stripe-url {e}")))?;
        let policy = Policy::new(&amberflo, &stripe).map_err(Failure::BadInput)?;
        Ok((
            policy,
            Endpoints {
                amberflo_url: amberflo.base_url,
                stripe_url: stripe.base_url,
            },
        ))
    }
}

/// Each run in flight holds a preallocated slot (a few GiB of address space,
/// not memory): this keeps the pool well inside a 64-bit address space.
pub(crate) const MAX_CONCURRENCY: usize = 4096;

/// Customers in one Amberflo query, as the component takes them.
pub(crate) const MAX_BATCH: usize = usage_sync_report::defaults::MAX_CUSTOMERS_PER_QUERY;

#[derive(Args)]
pub(crate) struct SyncArgs {
    /// Rows to sync: CSV with a header, or a JSON array of objects; fields customerId,
    /// stripeCustomer, and optionally meterApiName and stripeEventName.
    #[arg(long, value_name = "FILE")]
    pub(crate) mapping: PathBuf,
    /// meterApiName of rows that give none.
    #[arg(long)]
    pub(crate) meter_api_name: Option<String>,
    /// stripeEventName of rows that give none.
    #[arg(long)]
    pub(crate) stripe_event_name: Option<String>,
    /// Window start for every row (default: the previous UTC day, fixed when the sync starts).
    #[arg(long)]
    pub(crate) start_time: Option<String>,
    /// Window end for every row.
    #[arg(long)]
    pub(crate) end_time: Option<String>,
    /// Rows running at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) concurrency: usize,
    /// Take only shard K of N of the mapping's rows (a stable hash of customer,
    /// meter and event name), for N machines or an Indexed Job [default:
    /// JOB_COMPLETION_INDEX of USAGE_SYNC_SHARDS, when both are set]. Each shard
    /// paces Stripe at --stripe-rate / N: Stripe's limits are per account.
    #[arg(long, value_name = "K/N")]
    pub(crate) shard: Option<String>,
    /// Customers per Amberflo query (`groupBy` customerId); 1 queries once per row.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) amberflo_batch: usize,
    /// Stripe requests per second across all rows: Stripe's test-mode budget is 25;
    /// live mode allows 1000 meter-event calls per second.
    #[arg(long, default_value_t = 25.0, value_name = "PER_SEC")]
    pub(crate) stripe_rate: f64,
    /// Journal of row outcomes, for resuming [default: one per window next to the
    /// mapping, MAPPING.journal.START-END.jsonl].
    #[arg(long, value_name = "FILE")]
    pub(crate) journal: Option<PathBuf>,
    /// Write metrics for node_exporter's textfile collector here, atomically
    /// (last success kept across failed runs).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) workflow: WorkflowArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

#[derive(Args)]
pub(crate) struct ReconcileArgs {
    /// Rows to compare: the `sync` mapping. Without it, one row from the flags below.
    #[arg(long, value_name = "FILE")]
    pub(crate) mapping: Option<PathBuf>,
    /// Amberflo customer (one row, without --mapping).
    #[arg(long)]
    pub(crate) customer_id: Option<String>,
    /// Stripe customer (one row, without --mapping).
    #[arg(long)]
    pub(crate) stripe_customer: Option<String>,
    /// Amberflo meter (rows that give none).
    #[arg(long)]
    pub(crate) meter_api_name: Option<String>,
    /// Stripe meter's event name (rows that give none).
    #[arg(long)]
    pub(crate) stripe_event_name: Option<String>,
    /// Window start [default: the oldest interval Stripe still accepts events for, 35 days back].
    #[arg(long)]
    pub(crate) start_time: Option<String>,
    /// Window end [default: the end of the last ended interval].
    #[arg(long)]
    pub(crate) end_time: Option<String>,
    /// One cell per UTC day or per UTC hour.
    #[arg(long, default_value = "day", value_parser = names(Interval::NAMES, Interval::from_name))]
    pub(crate) interval: Interval,
    /// Differences up to this many billed units are a match.
    #[arg(long, default_value = "0", value_name = "UNITS")]
    pub(crate) tolerance: String,
    /// A differing interval that ended less than this many hours ago is `settling`.
    #[arg(long, default_value_t = usage_sync_report::defaults::SETTLE_HOURS, value_name = "HOURS")]
    pub(crate) settle_hours: u32,
    /// Multiply Amberflo's totals by this, as for `sync`.
    #[arg(long, value_name = "FACTOR")]
    pub(crate) scale: Option<String>,
    /// Round Amberflo's totals as `sync` would before sending.
    #[arg(long, value_name = "RULE", value_parser = names(Rounding::NAMES, Rounding::from_name))]
    pub(crate) round: Option<Rounding>,
    /// stdout: JSON lines or CSV.
    #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
    pub(crate) format: String,
    /// Also write a self-contained HTML page with a chart per customer.
    #[arg(long, value_name = "FILE")]
    pub(crate) html: Option<PathBuf>,
    /// Write metrics for node_exporter's textfile collector here, atomically
    /// (last success kept across failed runs).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_file: Option<PathBuf>,
    /// Rows read at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub(crate) concurrency: usize,
    /// Customers per Amberflo query.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) amberflo_batch: usize,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

#[derive(Args)]
pub(crate) struct WorkflowArgs {
    /// One meter event per UTC day, per UTC hour, or one for the whole window.
    #[arg(long, default_value = "day", value_parser = names(Interval::NAMES, Interval::from_name))]
    pub(crate) interval: Interval,
    /// Round an Amberflo total that is not a whole number (default: refuse).
    #[arg(long, value_name = "RULE", value_parser = names(Rounding::NAMES, Rounding::from_name))]
    pub(crate) round: Option<Rounding>,
    /// Multiply Amberflo's totals by this before rounding, for a meter billed in
    /// smaller units (1000: GB measured, MB billed).
    #[arg(long, value_name = "FACTOR")]
    pub(crate) scale: Option<String>,
    /// With --usage-quantity: refuse to send when it differs from the Amberflo total.
    #[arg(long)]
    pub(crate) reconcile: bool,
    /// Query Amberflo, print the Stripe requests that would be sent, send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Make Stripe's total for each settled interval equal Amberflo's: a shortfall
    /// is recorded as a correction event instead of reported as drift.
    #[arg(long)]
    pub(crate) true_up: bool,
    /// With --true-up: correct overages too, with a negative value.
    #[arg(long, requires = "true_up")]
    pub(crate) allow_decrease: bool,
    /// An interval that ended less than this many hours ago is still settling at
    /// Amberflo: a true-up leaves it alone.
    #[arg(long, default_value_t = usage_sync_report::defaults::SETTLE_HOURS, value_name = "HOURS")]
    pub(crate) settle_hours: u32,
    /// Retries of one request after its first attempt (as Stripe's clients: 2).
    #[arg(long, default_value_t = default_options().max_retries, value_name = "N")]
    pub(crate) max_retries: u32,
    /// No retry of a request starts later than this after its first attempt, seconds.
    #[arg(long, default_value_t = default_options().retry_budget_ms as f64 / 1000.0, value_name = "SECS")]
    pub(crate) retry_budget: f64,
}

/// A flag that takes one of `names`, which the report's `from_name` reads
/// (the names `POST /run` takes too).
fn names<T: Clone + Send + Sync + 'static>(
    names: [&'static str; 3],
    from_name: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names)
        .try_map(move |name| from_name(&name).ok_or(format!("unknown name `{name}`")))
}

/// The component's interval for a name the CLI took.
fn interval(interval: Interval) -> bindings::Interval {
    match interval {
        Interval::Day => bindings::Interval::Day,
        Interval::Hour => bindings::Interval::Hour,
        Interval::Window => bindings::Interval::Window,
    }
}

/// The component's rounding rule for a name the CLI took.
fn rounding(rounding: Rounding) -> bindings::Rounding {
    match rounding {
        Rounding::Floor => bindings::Rounding::Floor,
        Rounding::Ceil => bindings::Rounding::Ceil,
        Rounding::Nearest => bindings::Rounding::Nearest,
    }
}

/// Settling longer than Stripe's 35-day window would never end.
const MAX_SETTLE_HOURS: u32 = 35 * 24;

fn settle_hours(hours: u32) -> Result<u32, Failure> {
    if hours > MAX_SETTLE_HOURS {
        return Err(Failure::BadInput(format!(
            "--settle-hours must be at most {MAX_SETTLE_HOURS} (Stripe's 35 days)"
        )));
    }
    Ok(hours)
}

impl ReconcileArgs {
    /// The workflow options of a reconciliation: read-only, so no write option.
    pub(crate) fn options(&self) -> Result<Options, Failure> {
        if self.interval == Interval::Window {
            return Err(Failure::BadInput(
                "reconcile compares per day or per hour: --interval day or hour".into(),
            ));
        }
        Ok(Options {
            rounding: self.round.map(rounding),
            scale: self.scale.clone(),
            interval: interval(self.interval),
            settle_hours: settle_hours(self.settle_hours)?,
            ..default_options()
        })
    }
}

impl WorkflowArgs {
    pub(crate) fn options(&self) -> Result<Options, Failure> {
        let budget = Duration::try_from_secs_f64(self.retry_budget)
            .ok()
            .filter(|d| *d <= MAX_RETRY_BUDGET)
            .ok_or_else(|| {
                Failure::BadInput(format!(
                    "--retry-budget must be a number of seconds from 0 to {}",
                    MAX_RETRY_BUDGET.as_secs()
                ))
            })?;
        if self.max_retries > MAX_RETRIES {
            return Err(Failure::BadInput(format!(
                "--max-retries must be at most {MAX_RETRIES}"
            )));
        }
        Ok(Options {
            max_retries: self.max_retries,
            retry_budget_ms: budget.as_millis() as u64,
            rounding: self.round.map(rounding),
            reconcile: self.reconcile,
            dry_run: self.dry_run,
            scale: self.scale.clone(),
            true_up: self.true_up,
            allow_decrease: self.allow_decrease,
            settle_hours: settle_hours(self.settle_hours)?,
            interval: interval(self.interval),
        })
    }
}

#[derive(Args)]
pub(crate) struct SandboxArgs {
    /// Run another build of the workflow component (.wasm).
    #[arg(long, value_name = "PATH")]
    pub(crate) component: Option<PathBuf>,
    /// Where compiled components are kept between runs
    /// [default: $USAGE_SYNC_CACHE_DIR, $XDG_CACHE_HOME/usage-sync or ~/.cache/usage-sync].
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Compile the component on every run.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Guest memory cap, MiB.
    #[arg(long, default_value_t = Limits::default().max_memory_bytes >> 20, value_name = "MIB")]
    pub(crate) max_memory_mib: usize,
    /// Deadline for the whole run, seconds.
    #[arg(long, default_value_t = Limits::default().deadline.as_secs_f64(), value_name = "SECS")]
    pub(crate) timeout: f64,
    /// Connect and read timeout of each request, seconds.
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs_f64(), value_name = "SECS")]
    pub(crate) request_timeout: f64,
    /// Cap on each response body, bytes.
    #[arg(long, default_value_t = Limits::default().max_response_bytes, value_name = "BYTES")]
    pub(crate) max_response_bytes: u64,
    /// Cap on the requests of one run, retries included.
    #[arg(long, default_value_t = Limits::default().max_requests, value_name = "N")]
    pub(crate) max_requests: u32,
}

#[cfg(feature = "demo")]
#[derive(Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

/// Bounds on the numeric flags: every value inside them is one the host can
/// act on (no overflow when turned into clock ticks, no panic in `Duration`).
const MAX_MEMORY_MIB: usize = 4096;
const MAX_RESPONSE_BYTES: u64 = 1 << 30;
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_RETRY_BUDGET: Duration = Duration::from_secs(24 * 3600);
const MAX_RETRIES: u32 = 100;
/// Stripe requests per second: from one a day and a bit, to far above any
/// live-mode limit (the emulator tests run fast).
pub(crate) const STRIPE_RATE: std::ops::RangeInclusive<f64> = 1e-5..=1e6;

impl ServeArgs {
    /// The front door's limits, checked.
    pub(crate) fn door(&self) -> Result<crate::serve::Door, Failure> {
        if !(1..=MAX_CONCURRENCY).contains(&self.max_runs) {
            return Err(Failure::BadInput(format!(
                "--max-runs must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if !(1..=MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(Failure::BadInput(format!(
                "--max-body-bytes must be between 1 and {MAX_BODY_BYTES}"
            )));
        }
        Ok(crate::serve::Door {
            max_runs: self.max_runs,
            max_body_bytes: self.max_body_bytes,
            read_timeout: seconds("read-timeout", self.read_timeout, MAX_REQUEST_TIMEOUT)?,
            grace_period: seconds("grace-period", self.grace_period, MAX_REQUEST_TIMEOUT)?,
        })
    }
}

/// The largest request body `serve` may be told to take.
const MAX_BODY_BYTES: usize = 16 << 20;

/// A positive number of seconds, at most `max`.
fn seconds(name: &str, value: f64, max: Duration) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= max)
        .ok_or_else(|| {
            Failure::BadInput(format!(
                "--{name} must be a positive number of seconds, at most {}",
                max.as_secs()
            ))
        })
}

impl SandboxArgs {
    pub(crate) fn limits(&self) -> Result<Limits, Failure> {
        if !(1..=MAX_MEMORY_MIB).contains(&self.max_memory_mib) {
            return Err(Failure::BadInput(format!(
                "--max-memory-mib must be between 1 and {MAX_MEMORY_MIB} (a 32-bit guest's whole address space)"
            )));
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(Failure::BadInput(format!(
                "--max-response-bytes must be between 1 and {MAX_RESPONSE_BYTES}"
            )));
        }
        if self.max_requests == 0 {
            return Err(Failure::BadInput(
                "--max-requests must be at least 1".into(),
            ));
        }
        Ok(Limits {
            max_memory_bytes: self.max_memory_mib << 20,
            deadline: seconds("timeout", self.timeout, MAX_DEADLINE)?,
            request_timeout: seconds("request-timeout", self.request_timeout, MAX_REQUEST_TIMEOUT)?,
            max_response_bytes: self.max_response_bytes,
            max_requests: self.max_requests,
        })
    }

    /// The sandbox for one run (`pool` None) or for `pool` runs at once, each
    /// within `limits`.
    pub(crate) fn sandbox(&self, pool: Option<usize>, limits: &Limits) -> Result<Sandbox, Failure> {
        let wasm = match &self.component {
            Some(path) => std::fs::read(path).map_err(|e| {
                Failure::BadInput(format!("cannot read the component {}: {e}", path.display()))
            })?,
            None => crate::DEFAULT_COMPONENT.to_vec(),
        };
        let cache_dir = match (self.no_cache, &self.cache_dir) {
            (true, _) => None,
            (false, Some(dir)) => Some(dir.clone()),
            (false, None) => crate::sandbox::cache::default_dir(),
        };
        let pool = pool.map(|n| Pool {
            instances: u32::try_from(n).unwrap_or(u32::MAX),
            max_memory_bytes: limits.max_memory_bytes,
        });
        let (sandbox, source) = Sandbox::load(&wasm, cache_dir.as_deref(), pool).map_err(|e| {
            match &self.component {
                Some(path) => Failure::BadInput(format!("{}: {e:#}", path.display())),
                None => Failure::Internal(format!("the built-in component: {e:#}")),
            }
        })?;
        if source == crate::sandbox::cache::Source::Rebuilt {
            tracing::info!(
                "usage-sync: the cached compiled component was corrupt or unreadable; rebuilt it"
            );
        }
        Ok(sandbox)
    }
}
