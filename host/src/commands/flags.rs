//! The flag groups several commands share, declared once and flattened into
//! each command's arguments, with the checks that turn them into the run's
//! parts (policy, limits, options, the sandbox).
//!
//! A command whose help says a shared flag differently (the window's default,
//! say) rewords it with `mut_arg`; its meaning and parsing stay here.

use crate::bindings::{self, Endpoints, Options};
use crate::egress::StripePace;
use crate::egress::policy::{DEFAULT_AMBERFLO_URL, DEFAULT_STRIPE_URL, Endpoint, Policy};
use crate::options::default_options;
use crate::outcome::Failure;
use crate::sandbox::{Limits, Pool, Sandbox};
use crate::secrets::Mode;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use usage_sync_report::{Interval, Rounding};

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
    /// Speak only HTTP/1.1, even to a server that offers HTTP/2.
    #[arg(long)]
    pub(crate) http1: bool,
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

    /// Which HTTP versions HTTPS offers.
    pub(crate) fn versions(&self) -> crate::egress::transport::Versions {
        match self.http1 {
            true => crate::egress::transport::Versions::Http1,
            false => crate::egress::transport::Versions::Negotiated,
        }
    }

    /// Which certificate authorities HTTPS trusts.
    pub(crate) fn trust(&self) -> Result<crate::egress::transport::Trust, Failure> {
        crate::egress::transport::Trust::from_file(self.ca_file.as_deref(), self.ca_file_only)
            .map_err(Failure::BadInput)
    }

    /// The policy the two base URLs allow, and the URLs as the guest sees them.
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

/// The window a command covers; each command says its default in its help.
#[derive(Args)]
pub(crate) struct WindowArgs {
    /// Window start, Unix seconds or RFC 3339 (default: start of the previous UTC day).
    #[arg(long)]
    pub(crate) start_time: Option<String>,
    /// Window end, exclusive (default: end of the previous UTC day).
    #[arg(long)]
    pub(crate) end_time: Option<String>,
}

impl WindowArgs {
    /// Both bounds as given, or `default`'s when neither is (`neither` says
    /// what that default is): one bound alone is refused.
    pub(crate) fn bounds(
        &self,
        default: impl FnOnce() -> Result<(i64, i64), String>,
        neither: &str,
    ) -> Result<(String, String), Failure> {
        match (&self.start_time, &self.end_time) {
            (Some(s), Some(e)) => Ok((s.clone(), e.clone())),
            (None, None) => {
                let (start, end) = default().map_err(Failure::Internal)?;
                Ok((start.to_string(), end.to_string()))
            }
            _ => Err(Failure::BadInput(format!(
                "give both --start-time and --end-time, or neither for {neither}"
            ))),
        }
    }
}

/// Each run in flight holds a preallocated slot (a few GiB of address space,
/// not memory): this keeps the pool well inside a 64-bit address space.
pub(crate) const MAX_CONCURRENCY: usize = 4096;

/// Customers in one Amberflo query, as the component takes them.
const MAX_BATCH: usize = usage_sync_report::defaults::MAX_CUSTOMERS_PER_QUERY;

/// How many rows run at once, and how many customers share an Amberflo query.
#[derive(Args)]
pub(crate) struct FanOutArgs {
    /// The most rows running at once: `sync` starts at 16 and adapts up to
    /// this, growing while latency holds and halving on a 429, 503 or timeout.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub(crate) concurrency: usize,
    /// Customers per Amberflo query (`groupBy` customerId); 1 queries once per row.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) amberflo_batch: usize,
}

impl FanOutArgs {
    /// `--amberflo-batch` and `--concurrency`, checked.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        if !(1..=MAX_BATCH).contains(&self.amberflo_batch) {
            return Err(Failure::BadInput(format!(
                "--amberflo-batch must be between 1 and {MAX_BATCH}"
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Failure::BadInput(format!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        Ok(())
    }
}

/// Stripe requests per second: from one a day and a bit, to far above any
/// live-mode limit (the emulator tests run fast).
const STRIPE_RATE: std::ops::RangeInclusive<f64> = 1e-5..=1e6;

/// The account-wide paces of Stripe requests (`egress::pace`), for the
/// commands that run many rows at once.
#[derive(Args)]
pub(crate) struct PaceArgs {
    /// Stripe requests per second across all rows (Stripe's basic limit: 25 in
    /// test mode, 100 live), except a live key's meter events (see
    /// --stripe-meter-event-rate). A test key's meter events count here too.
    #[arg(long, default_value_t = 25.0, value_name = "PER_SEC")]
    pub(crate) stripe_rate: f64,
    /// Meter events per second across all rows with a live key (rk_live_,
    /// sk_live_), paced apart from --stripe-rate: live mode has a separate
    /// limit of 1000 per second for them. Ignored for a test key.
    #[arg(long, default_value_t = 250.0, value_name = "PER_SEC")]
    pub(crate) stripe_meter_event_rate: f64,
}

impl PaceArgs {
    /// Both rates, checked.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        for (flag, rate) in [
            ("--stripe-rate", self.stripe_rate),
            ("--stripe-meter-event-rate", self.stripe_meter_event_rate),
        ] {
            if !STRIPE_RATE.contains(&rate) {
                return Err(Failure::BadInput(format!(
                    "{flag} must be between {} and {} requests per second",
                    STRIPE_RATE.start(),
                    STRIPE_RATE.end()
                )));
            }
        }
        Ok(())
    }

    /// The paces for a key of `mode`, when `shares` processes (shards)
    /// divide the account's limits; said in the log.
    pub(crate) fn pace(&self, mode: Option<Mode>, shares: f64, command: &str) -> StripePace {
        let (basic, meter_events) = (
            self.stripe_rate / shares,
            self.stripe_meter_event_rate / shares,
        );
        let pace = StripePace::new(mode, basic, meter_events);
        if pace.meter_events_apart() {
            tracing::info!(
                "{command}: Stripe paced at {basic} requests a second, and apart from them (a live key) {meter_events} meter events a second"
            );
        } else {
            tracing::info!(
                "{command}: Stripe paced at {basic} requests a second, meter events included (not a live key)"
            );
        }
        pace
    }
}

/// How Amberflo's totals become cells: the settings `run`, `sync` and
/// `reconcile` share, so a reconciliation compares what a sync would send.
#[derive(Args)]
pub(crate) struct WorkflowSettings {
    /// One meter event per UTC day, per UTC hour, or one for the window within each UTC
    /// day it touches (the ledger is kept per UTC day).
    #[arg(long, default_value = "day", value_parser = names(Interval::NAMES, Interval::from_name))]
    pub(crate) interval: Interval,
    /// Round an Amberflo total that is not a whole number (default: refuse).
    #[arg(long, value_name = "RULE", value_parser = names(Rounding::NAMES, Rounding::from_name))]
    pub(crate) round: Option<Rounding>,
    /// Multiply Amberflo's totals by this before rounding, for a meter billed in
    /// smaller units (1000: GB measured, MB billed).
    #[arg(long, value_name = "FACTOR")]
    pub(crate) scale: Option<String>,
    /// An interval that ended less than this many hours ago is still settling at
    /// Amberflo: a true-up leaves it alone.
    #[arg(long, default_value_t = usage_sync_report::defaults::SETTLE_HOURS, value_name = "HOURS")]
    pub(crate) settle_hours: u32,
}

/// Settling longer than Stripe's 35-day window would never end.
const MAX_SETTLE_HOURS: u32 = 35 * 24;

impl WorkflowSettings {
    /// `options` with these settings, checked.
    pub(crate) fn apply(&self, options: Options) -> Result<Options, Failure> {
        if self.settle_hours > MAX_SETTLE_HOURS {
            return Err(Failure::BadInput(format!(
                "--settle-hours must be at most {MAX_SETTLE_HOURS} (Stripe's 35 days)"
            )));
        }
        Ok(Options {
            rounding: self.round.map(rounding),
            scale: self.scale.clone(),
            interval: interval(self.interval),
            settle_hours: self.settle_hours,
            ..options
        })
    }
}

/// The workflow's flags for the commands that write (`run`, `sync`).
#[derive(Args)]
pub(crate) struct WorkflowArgs {
    #[command(flatten)]
    pub(crate) settings: WorkflowSettings,
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
    /// With --true-up: correct overages too, with a negative value. This assumes the
    /// ledger's sources here are all its sources: `run` has one, so another row
    /// feeding the same Stripe customer and event would be corrected away.
    #[arg(long, requires = "true_up")]
    pub(crate) allow_decrease: bool,
    /// Usage for a billing period whose invoice is final: `report` it as unbilled
    /// (exit 5, nothing written), or `carry` it into the open period of the same
    /// subscription item, as its own event (README, "Late usage").
    #[arg(long, value_enum, default_value_t = LateUsage::Report, value_name = "WHAT")]
    pub(crate) late_usage: LateUsage,
    /// Retries of one request after its first attempt (as Stripe's clients: 2).
    #[arg(long, default_value_t = default_options().max_retries, value_name = "N")]
    pub(crate) max_retries: u32,
    /// No retry of a request starts later than this after its first attempt, seconds.
    #[arg(long, default_value_t = default_options().retry_budget_ms as f64 / 1000.0, value_name = "SECS")]
    pub(crate) retry_budget: f64,
    /// Where usage-sync remembers where each source was billed and its recent
    /// writes [env: USAGE_SYNC_STATE_DIR; default: $XDG_STATE_HOME/usage-sync or
    /// ~/.local/state/usage-sync]. Created 0700; refused when another user may write it.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// A source (Amberflo customer and meter) now mapped to another Stripe customer
    /// than it was billed to: move it (the new customer's ledger starts where the old
    /// one's ends) instead of refusing.
    #[arg(long)]
    pub(crate) move_customers: bool,
}

/// What `--late-usage` does with usage no invoice will bill where it belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LateUsage {
    /// Report it (exit 5), write nothing.
    Report,
    /// Record it in the open period.
    Carry,
}

const MAX_RETRY_BUDGET: Duration = Duration::from_secs(24 * 3600);
const MAX_RETRIES: u32 = 100;

impl WorkflowArgs {
    /// The workflow's options, checked.
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
        self.settings.apply(Options {
            max_retries: self.max_retries,
            retry_budget_ms: budget.as_millis() as u64,
            reconcile: self.reconcile,
            dry_run: self.dry_run,
            true_up: self.true_up,
            allow_decrease: self.allow_decrease,
            carry_late_usage: self.late_usage == LateUsage::Carry,
            ..default_options()
        })
    }
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

#[derive(Args)]
pub(crate) struct SandboxArgs {
    /// Run another build of the workflow component (.wasm) [default: the built-in one;
    /// for `serve`, the built-in one with its HTTP entry point].
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

/// Bounds on the numeric flags: every value inside them is one the host can
/// act on (no overflow when turned into clock ticks, no panic in `Duration`).
const MAX_MEMORY_MIB: usize = 4096;
const MAX_RESPONSE_BYTES: u64 = 1 << 30;
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
pub(crate) const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// A positive number of seconds, at most `max`.
pub(crate) fn seconds(name: &str, value: f64, max: Duration) -> Result<Duration, Failure> {
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
    /// What one run may use, checked.
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
    /// within `limits`, of `--component` or else of `built_in`
    /// ([`crate::WORKFLOW_COMPONENT`] or [`crate::DEFAULT_COMPONENT`]).
    pub(crate) fn sandbox(
        &self,
        pool: Option<usize>,
        limits: &Limits,
        built_in: &'static [u8],
    ) -> Result<Sandbox, Failure> {
        let wasm = match &self.component {
            // The workflow is half a megabyte; a debug build, tens.
            Some(path) => {
                crate::capped::read(path, 256 << 20, "component").map_err(Failure::BadInput)?
            }
            None => built_in.to_vec(),
        };
        let cache_dir = match (self.no_cache, &self.cache_dir) {
            (true, _) => None,
            (false, Some(dir)) => Some(dir.clone()),
            (false, None) => crate::sandbox::cache::default_dir(),
        };
        let cache_dir = match cache_dir {
            Some(dir) => crate::sandbox::cache::open_dir(&dir).map_err(Failure::BadInput)?,
            None => None,
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
