//! The `usage-sync` command line.

use crate::bindings::{Endpoints, Interval, Options, Rounding};
use crate::inputs::{self, InputFlags, InputsFile};
use crate::limits::Limits;
use crate::options::default_options;
use crate::outcome::{Failure, exit, outputs_exit_code, render_outputs, summary};
use crate::outcome::{print_failure, progress};
use crate::policy::{DEFAULT_AMBERFLO_URL, DEFAULT_STRIPE_URL, Endpoint, Policy};
use crate::sandbox::{Pool, RunConfig, Sandbox};
use crate::secrets::Credentials;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "usage-sync",
    version,
    args_override_self = true,
    about = "Records Amberflo usage on a Stripe billing meter, from a sandboxed WebAssembly component",
    after_help = "Exit status: 0 success, 1 internal error, 2 bad input (nothing written), 3 provider error, 4 sandbox violation or limit, 5 drift (Stripe holds another value; nothing written for it), 130 sync interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workflow: query Amberflo, record one Stripe meter event per interval.
    ///
    /// Keys come from AMBERFLO_API_KEY and STRIPE_API_KEY. stdout gets one JSON object.
    Run(Box<RunArgs>),
    /// Run the workflow for every row of a mapping file, many rows at once, resumably.
    Sync(Box<SyncArgs>),
    /// Run the workflow against local Amberflo and Stripe emulators: no account, no network.
    Demo(DemoArgs),
    /// Serve the component's HTTP entry point: `POST /run` with the inputs JSON.
    ///
    /// Each request runs in its own sandboxed instance, with the same egress policy,
    /// key injection and limits as `run`. Keys come from AMBERFLO_API_KEY and STRIPE_API_KEY.
    Serve(Box<ServeArgs>),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args)]
struct RunArgs {
    /// JSON file of inputs: customerId, meterApiName, stripeCustomer, stripeEventName,
    /// usageQuantity, startTime, endTime.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Amberflo customer to query.
    #[arg(long)]
    customer_id: Option<String>,
    /// Amberflo meter to query.
    #[arg(long)]
    meter_api_name: Option<String>,
    /// Stripe customer id (cus_...) the usage is billed to.
    #[arg(long)]
    stripe_customer: Option<String>,
    /// Stripe meter's event name.
    #[arg(long)]
    stripe_event_name: Option<String>,
    /// Whole number to record (one interval only); default: each interval's Amberflo total.
    #[arg(long, allow_hyphen_values = true)]
    usage_quantity: Option<String>,
    /// Window start, Unix seconds or RFC 3339 (default: start of the previous UTC day).
    #[arg(long)]
    start_time: Option<String>,
    /// Window end, exclusive (default: end of the previous UTC day).
    #[arg(long)]
    end_time: Option<String>,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    workflow: WorkflowArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args)]
struct EndpointArgs {
    /// Amberflo API base URL.
    #[arg(long, env = "AMBERFLO_BASE_URL", default_value = DEFAULT_AMBERFLO_URL)]
    amberflo_url: String,
    /// Stripe API base URL.
    #[arg(long, env = "STRIPE_BASE_URL", default_value = DEFAULT_STRIPE_URL)]
    stripe_url: String,
}

impl EndpointArgs {
    fn resolve(&self) -> Result<(Policy, Endpoints), Failure> {
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
const MAX_CONCURRENCY: usize = 4096;

/// Customers in one Amberflo query, as the component takes them.
const MAX_BATCH: usize = usage_sync_report::defaults::MAX_CUSTOMERS_PER_QUERY;

#[derive(Args)]
struct SyncArgs {
    /// Rows to sync: CSV with a header, or a JSON array of objects; fields customerId,
    /// stripeCustomer, and optionally meterApiName and stripeEventName.
    #[arg(long, value_name = "FILE")]
    mapping: PathBuf,
    /// meterApiName of rows that give none.
    #[arg(long)]
    meter_api_name: Option<String>,
    /// stripeEventName of rows that give none.
    #[arg(long)]
    stripe_event_name: Option<String>,
    /// Window start for every row (default: the previous UTC day, fixed when the sync starts).
    #[arg(long)]
    start_time: Option<String>,
    /// Window end for every row.
    #[arg(long)]
    end_time: Option<String>,
    /// Rows running at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    concurrency: usize,
    /// Customers per Amberflo query (`groupBy` customerId); 1 queries once per row.
    #[arg(long, default_value_t = 100, value_name = "N")]
    amberflo_batch: usize,
    /// Stripe requests per second across all rows: Stripe's test-mode budget is 25;
    /// live mode allows 1000 meter-event calls per second.
    #[arg(long, default_value_t = 25.0, value_name = "PER_SEC")]
    stripe_rate: f64,
    /// Journal of row outcomes, for resuming [default: one per window next to the
    /// mapping, MAPPING.journal.START-END.jsonl].
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    workflow: WorkflowArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args)]
struct WorkflowArgs {
    /// One meter event per UTC day, per UTC hour, or one for the whole window.
    #[arg(long, value_enum, default_value_t = IntervalArg::Day)]
    interval: IntervalArg,
    /// Round an Amberflo total that is not a whole number (default: refuse).
    #[arg(long, value_enum, value_name = "RULE")]
    round: Option<RoundArg>,
    /// Multiply Amberflo's totals by this before rounding, for a meter billed in
    /// smaller units (1000: GB measured, MB billed).
    #[arg(long, value_name = "FACTOR")]
    scale: Option<String>,
    /// With --usage-quantity: refuse to send when it differs from the Amberflo total.
    #[arg(long)]
    reconcile: bool,
    /// Query Amberflo, print the Stripe requests that would be sent, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Retries of one request after its first attempt (as Stripe's clients: 2).
    #[arg(long, default_value_t = default_options().max_retries, value_name = "N")]
    max_retries: u32,
    /// No retry of a request starts later than this after its first attempt, seconds.
    #[arg(long, default_value_t = default_options().retry_budget_ms as f64 / 1000.0, value_name = "SECS")]
    retry_budget: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum IntervalArg {
    Day,
    Hour,
    Window,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoundArg {
    Floor,
    Ceil,
    Nearest,
}

impl WorkflowArgs {
    fn options(&self) -> Result<Options, Failure> {
        if !(self.retry_budget.is_finite() && self.retry_budget >= 0.0) {
            return Err(Failure::BadInput(
                "--retry-budget must be a number of seconds".into(),
            ));
        }
        Ok(Options {
            max_retries: self.max_retries,
            retry_budget_ms: (self.retry_budget * 1000.0) as u64,
            rounding: self.round.map(|r| match r {
                RoundArg::Floor => Rounding::Floor,
                RoundArg::Ceil => Rounding::Ceil,
                RoundArg::Nearest => Rounding::Nearest,
            }),
            reconcile: self.reconcile,
            dry_run: self.dry_run,
            scale: self.scale.clone(),
            interval: match self.interval {
                IntervalArg::Day => Interval::Day,
                IntervalArg::Hour => Interval::Hour,
                IntervalArg::Window => Interval::Window,
            },
        })
    }
}

#[derive(Args)]
struct SandboxArgs {
    /// Run another build of the workflow component (.wasm).
    #[arg(long, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Where compiled components are kept between runs
    /// [default: $USAGE_SYNC_CACHE_DIR, $XDG_CACHE_HOME/usage-sync or ~/.cache/usage-sync].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile the component on every run.
    #[arg(long)]
    no_cache: bool,
    /// Guest memory cap, MiB.
    #[arg(long, default_value_t = Limits::default().max_memory_bytes >> 20, value_name = "MIB")]
    max_memory_mib: usize,
    /// Deadline for the whole run, seconds.
    #[arg(long, default_value_t = Limits::default().deadline.as_secs_f64(), value_name = "SECS")]
    timeout: f64,
    /// Connect and read timeout of each request, seconds.
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs_f64(), value_name = "SECS")]
    request_timeout: f64,
    /// Cap on each response body, bytes.
    #[arg(long, default_value_t = Limits::default().max_response_bytes, value_name = "BYTES")]
    max_response_bytes: u64,
    /// Cap on the requests of one run, retries included.
    #[arg(long, default_value_t = Limits::default().max_requests, value_name = "N")]
    max_requests: u32,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
}

impl SandboxArgs {
    fn limits(&self) -> Result<Limits, Failure> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Failure::BadInput(format!("--{name} must be a positive number of seconds"))
                })
        };
        if self.max_memory_mib == 0 || self.max_response_bytes == 0 {
            return Err(Failure::BadInput(
                "--max-memory-mib and --max-response-bytes must be positive".into(),
            ));
        }
        Ok(Limits {
            max_memory_bytes: self.max_memory_mib.saturating_mul(1 << 20),
            deadline: secs("timeout", self.timeout)?,
            request_timeout: secs("request-timeout", self.request_timeout)?,
            max_response_bytes: self.max_response_bytes,
            max_requests: self.max_requests,
        })
    }

    /// The sandbox for one run (`pool` None) or for `pool` runs at once, each
    /// within `limits`.
    fn sandbox(&self, pool: Option<usize>, limits: &Limits) -> Result<Sandbox, Failure> {
        let wasm = match &self.component {
            Some(path) => std::fs::read(path).map_err(|e| {
                Failure::BadInput(format!("cannot read the component {}: {e}", path.display()))
            })?,
            None => crate::DEFAULT_COMPONENT.to_vec(),
        };
        let cache_dir = match (self.no_cache, &self.cache_dir) {
            (true, _) => None,
            (false, Some(dir)) => Some(dir.clone()),
            (false, None) => crate::cache::default_dir(),
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
        if source == crate::cache::Source::Rebuilt {
            eprintln!(
                "usage-sync: the cached compiled component was corrupt or unreadable; rebuilt it"
            );
        }
        Ok(sandbox)
    }
}

/// Parses the command line and runs the command; the exit status says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let code = match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)),
        Command::Sync(args) => runtime.block_on(sync(*args)),
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Demo(args) => runtime.block_on(crate::demo::run(
            args.sandbox
                .limits()
                .and_then(|limits| Ok((args.sandbox.sandbox(None, &limits)?, limits))),
        )),
    };
    ExitCode::from(code)
}

/// The keys from the environment, or the exit status of the report saying why not.
fn credentials() -> Result<Arc<Credentials>, u8> {
    // Before the keys are known nothing can leak; after, everything printed is scrubbed.
    Credentials::from_env().map(Arc::new).map_err(|e| {
        print_failure(
            &Failure::BadInput(format!(
                "{e}: set {} and {} in the environment",
                crate::secrets::AMBERFLO_ENV,
                crate::secrets::STRIPE_ENV
            )),
            None,
        )
    })
}

async fn serve(args: ServeArgs) -> u8 {
    let credentials = match credentials() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let prepared = (|| {
        let (policy, endpoints) = args.endpoints.resolve()?;
        let limits = args.sandbox.limits()?;
        // The request body carries the options; these are unused.
        let config = RunConfig::new(
            policy,
            endpoints,
            default_options(),
            credentials.clone(),
            limits,
        );
        Ok::<_, Failure>((
            Arc::new(args.sandbox.sandbox(None, &limits)?),
            Arc::new(config),
        ))
    })();
    let (sandbox, config) = match prepared {
        Ok(p) => p,
        Err(failure) => return print_failure(&failure, Some(&credentials)),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let failure = Failure::BadInput(format!("cannot listen on {}: {e}", args.listen));
            return print_failure(&failure, Some(&credentials));
        }
    };
    let address = listener.local_addr().unwrap_or(args.listen);
    eprintln!("usage-sync: serving POST /run on http://{address}/ (Ctrl-C stops)");
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("usage-sync: accepting a connection: {e}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return exit::OK,
        };
        let (sandbox, config) = (sandbox.clone(), config.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (sandbox, config) = (sandbox.clone(), config.clone());
                async move { Ok::<_, std::convert::Infallible>(sandbox.serve(&config, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(wasmtime_wasi_http::io::TokioIo::new(client), service)
                .await;
        });
    }
}

async fn run(args: RunArgs) -> u8 {
    let credentials = match credentials() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match prepare(&args, &credentials) {
        Ok((sandbox, config, inputs)) => {
            eprintln!("usage-sync: running the workflow in the sandbox");
            let dry_run = config.options.dry_run;
            match sandbox.run(&config, inputs).await {
                Ok(outputs) => {
                    eprintln!(
                        "usage-sync: {}",
                        credentials.redact(&summary(&outputs, dry_run))
                    );
                    println!("{}", credentials.redact(&render_outputs(&outputs, dry_run)));
                    outputs_exit_code(&outputs)
                }
                Err(failure) => print_failure(&failure, Some(&credentials)),
            }
        }
        Err(failure) => print_failure(&failure, Some(&credentials)),
    }
}

fn prepare(
    args: &RunArgs,
    credentials: &Arc<Credentials>,
) -> Result<(Sandbox, RunConfig, crate::bindings::Inputs), Failure> {
    let file = match &args.inputs {
        Some(path) => InputsFile::read(path).map_err(Failure::BadInput)?,
        None => InputsFile::default(),
    };
    let inputs = inputs::merge(
        file,
        InputFlags {
            customer_id: args.customer_id.clone(),
            meter_api_name: args.meter_api_name.clone(),
            stripe_customer: args.stripe_customer.clone(),
            stripe_event_name: args.stripe_event_name.clone(),
            usage_quantity: args.usage_quantity.clone(),
            start_time: args.start_time.clone(),
            end_time: args.end_time.clone(),
        },
    );
    let (policy, endpoints) = args.endpoints.resolve()?;
    let limits = args.sandbox.limits()?;
    let options = args.workflow.options()?;
    let sandbox = args.sandbox.sandbox(None, &limits)?;
    let config = RunConfig::new(policy, endpoints, options, credentials.clone(), limits)
        .observed(Arc::new(progress(credentials.clone())));
    Ok((sandbox, config, inputs))
}

async fn sync(args: SyncArgs) -> u8 {
    let credentials = match credentials() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match sync_all(&args, credentials.clone()).await {
        Ok(summary) => {
            eprintln!(
                "sync: {} recorded, {} already recorded, {} drift, {} failed, {} skipped, {} not sent",
                summary.recorded,
                summary.already_recorded,
                summary.drift,
                summary.failed,
                summary.skipped,
                summary.not_sent
            );
            println!("{}", serde_json::json!({ "summary": summary }));
            // A failure is retried later; drift waits for a person.
            if summary.failed > 0 {
                summary.worst
            } else if summary.not_sent > 0 {
                exit::INTERRUPTED
            } else if summary.drift > 0 {
                exit::DRIFT
            } else {
                exit::OK
            }
        }
        Err(failure) => print_failure(&failure, Some(&credentials)),
    }
}

async fn sync_all(
    args: &SyncArgs,
    credentials: Arc<Credentials>,
) -> Result<crate::sync::Summary, Failure> {
    if args.workflow.dry_run || args.workflow.reconcile {
        return Err(Failure::BadInput(
            "--dry-run and --reconcile are for `run`".into(),
        ));
    }
    if !(args.stripe_rate.is_finite() && args.stripe_rate > 0.0) {
        return Err(Failure::BadInput("--stripe-rate must be positive".into()));
    }
    if !(1..=MAX_BATCH).contains(&args.amberflo_batch) {
        return Err(Failure::BadInput(format!(
            "--amberflo-batch must be between 1 and {MAX_BATCH}"
        )));
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return Err(Failure::BadInput(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    let rows = crate::mapping::read_mapping(
        &args.mapping,
        args.meter_api_name.as_deref(),
        args.stripe_event_name.as_deref(),
    )
    .map_err(Failure::BadInput)?;
    // One window for every row, even when the sync runs past midnight.
    let (start_time, end_time) = match (&args.start_time, &args.end_time) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        (None, None) => {
            let (start, end) = inputs::previous_utc_day().map_err(Failure::Internal)?;
            (start.to_string(), end.to_string())
        }
        _ => {
            return Err(Failure::BadInput(
                "give both --start-time and --end-time, or neither for the previous full UTC day"
                    .into(),
            ));
        }
    };
    let (policy, endpoints) = args.endpoints.resolve()?;
    let limits = args.sandbox.limits()?;
    let config = RunConfig::new(
        policy,
        endpoints,
        args.workflow.options()?,
        credentials,
        limits,
    )
    .paced(Arc::new(crate::egress::RateLimiter::per_second(
        args.stripe_rate,
    )));
    let sandbox = Arc::new(args.sandbox.sandbox(Some(args.concurrency), &limits)?);
    // One journal per window by default, so the same command runs every night
    // and a rerun of any night resumes that night.
    let journal = args.journal.clone().unwrap_or_else(|| {
        let mut name = args.mapping.as_os_str().to_owned();
        name.push(format!(
            ".journal.{}-{}.jsonl",
            file_safe(&start_time),
            file_safe(&end_time)
        ));
        PathBuf::from(name)
    });
    let plan = crate::sync::Settings {
        mapping: args.mapping.clone(),
        journal,
        journal_is_default: args.journal.is_none(),
        start_time,
        end_time,
        concurrency: args.concurrency,
        batch: args.amberflo_batch,
    };
    eprintln!(
        "sync: {} rows, up to {} at once",
        rows.len(),
        args.concurrency
    );
    crate::sync::sync(sandbox, config, rows, &plan).await
}

/// A window bound as part of a file name.
fn file_safe(time: &str) -> String {
    time.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
