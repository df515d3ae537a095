//! The `usage-sync` command line: parse the arguments, run the command.

use crate::args::{
    Cli, Command, EndpointArgs, MAX_BATCH, MAX_CONCURRENCY, ReconcileArgs, RunArgs, STRIPE_RATE,
    ServeArgs, SyncArgs,
};
use crate::inputs::{self, InputFlags, InputsFile};
use crate::metrics::Tally;
use crate::outcome::{Failure, exit, outputs_exit_code, render_outputs, summary};
use crate::outcome::{print_failure, progress};
use crate::sandbox::{RunConfig, Sandbox};
use crate::secrets::{Credentials, ServeToken};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Parses the command line and runs the command; the exit status says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match &cli.command {
        Command::Run(_) => "run",
        Command::Sync(_) => "sync",
        Command::Serve(_) => "serve",
        Command::Reconcile(_) => "reconcile",
        #[cfg(feature = "demo")]
        Command::Demo(_) => "demo",
    };
    let format = match cli.log_format.as_str() {
        "json" => crate::logging::LogFormat::Json,
        _ => crate::logging::LogFormat::Human,
    };
    crate::logging::init(format, command);
    let started = std::time::Instant::now();
    // A command's exit status, after writing its metrics file when asked.
    let measured = |path: Option<PathBuf>, command: &str, (code, tally): (u8, Tally)| {
        if let Some(path) = path
            && let Err(e) =
                crate::metrics::write_textfile(&path, command, code, started.elapsed(), &tally)
        {
            tracing::info!("usage-sync: {e}");
        }
        code
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("starting the async runtime");
    let code = match cli.command {
        Command::Run(args) => {
            let metrics = args.metrics_file.clone();
            measured(metrics, "run", runtime.block_on(run(*args)))
        }
        Command::Sync(args) => {
            let metrics = args.metrics_file.clone();
            measured(metrics, "sync", runtime.block_on(sync(*args)))
        }
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Reconcile(args) => {
            let metrics = args.metrics_file.clone();
            measured(metrics, "reconcile", runtime.block_on(reconcile(*args)))
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime.block_on(crate::demo::run(
            args.sandbox
                .limits()
                .and_then(|limits| Ok((args.sandbox.sandbox(None, &limits)?, limits))),
        )),
    };
    ExitCode::from(code)
}

/// The keys from the environment (or files), checked against the mode the
/// operator expects; or the exit status of the report saying why not.
fn credentials(endpoints: &EndpointArgs) -> Result<Arc<Credentials>, u8> {
    use crate::secrets::{AMBERFLO_ENV, Mode, STRIPE_ENV};
    // Before the keys are known nothing can leak; after, everything printed is scrubbed.
    let credentials = Credentials::from_env().map(Arc::new).map_err(|e| {
        print_failure(
            &Failure::BadInput(format!(
                "{e}: set {AMBERFLO_ENV} and {STRIPE_ENV} (or {AMBERFLO_ENV}_FILE and {STRIPE_ENV}_FILE) in the environment"
            )),
            None,
        )
    })?;
    crate::logging::scrub_keys(&credentials);
    let name = |mode: Option<Mode>| match mode {
        Some(Mode::Live) => "a live-mode key",
        Some(Mode::Test) => "a test-mode key",
        None => "neither a live nor a test key",
    };
    if let Some(expected) = endpoints.expected_mode()
        && credentials.stripe_mode() != Some(expected)
    {
        let failure = Failure::BadInput(format!(
            "{STRIPE_ENV} is {}, but --expect-mode is {}",
            name(credentials.stripe_mode()),
            match expected {
                Mode::Live => "live",
                Mode::Test => "test",
            }
        ));
        return Err(print_failure(&failure, Some(&credentials)));
    }
    if credentials.is_full_live_key() {
        tracing::warn!(
            "usage-sync: warning: {STRIPE_ENV} is a full live secret key (sk_live_), which can do anything on the account; a restricted key (rk_live_) with write access to meter events and read access to meters is enough"
        );
    }
    Ok(credentials)
}

async fn run(args: RunArgs) -> (u8, Tally) {
    let failed = Tally {
        rows: vec![("failed", 1)],
        ..Tally::default()
    };
    let credentials = match credentials(&args.endpoints) {
        Ok(c) => c,
        Err(code) => return (code, failed),
    };
    match prepare(&args, &credentials) {
        Ok((sandbox, config, inputs)) => {
            tracing::info!("usage-sync: running the workflow in the sandbox");
            let dry_run = config.options.dry_run;
            match sandbox.run(&config, inputs).await {
                Ok(outputs) => {
                    tracing::info!(
                        "usage-sync: {}",
                        credentials.redact(&summary(&outputs, dry_run))
                    );
                    println!("{}", credentials.redact(&render_outputs(&outputs, dry_run)));
                    let drift_cells = outputs.drifted().count();
                    let outcome = match () {
                        _ if drift_cells > 0 => "drift",
                        _ if !outputs.events.is_empty()
                            && outputs.events.iter().all(|e| e.already_recorded) =>
                        {
                            "already-recorded"
                        }
                        _ => "recorded",
                    };
                    let tally = Tally {
                        rows: vec![(outcome, 1)],
                        zero_usage: usize::from(outputs.measured_total == "0"),
                        drift_cells,
                    };
                    (outputs_exit_code(&outputs), tally)
                }
                Err(failure) => (print_failure(&failure, Some(&credentials)), failed),
            }
        }
        Err(failure) => (print_failure(&failure, Some(&credentials)), failed),
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
        .trusting(&args.endpoints.trust()?)
        .map_err(Failure::BadInput)?
        .observed(Arc::new(progress(credentials.clone())));
    Ok((sandbox, config, inputs))
}

async fn sync(args: SyncArgs) -> (u8, Tally) {
    let credentials = match credentials(&args.endpoints) {
        Ok(c) => c,
        Err(code) => return (code, Tally::default()),
    };
    match sync_all(&args, credentials.clone()).await {
        Ok(mut summary) => {
            summary.partial = summary.failed > 0 || summary.not_sent > 0;
            tracing::info!(
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
            let code = if summary.failed > 0 {
                summary.worst
            } else if summary.not_sent > 0 {
                exit::INTERRUPTED
            } else if summary.drift > 0 {
                exit::DRIFT
            } else {
                exit::OK
            };
            (code, summary.tally())
        }
        Err(failure) => (
            print_failure(&failure, Some(&credentials)),
            Tally::default(),
        ),
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
    if !STRIPE_RATE.contains(&args.stripe_rate) {
        return Err(Failure::BadInput(format!(
            "--stripe-rate must be between {} and {} requests per second",
            STRIPE_RATE.start(),
            STRIPE_RATE.end()
        )));
    }
    fan_out(args.amberflo_batch, args.concurrency)?;
    let shard = match &args.shard {
        Some(text) => Some(crate::mapping::Shard::parse(text).map_err(Failure::BadInput)?),
        None => crate::mapping::Shard::from_env().map_err(Failure::BadInput)?,
    };
    let mut rows = crate::mapping::read_mapping(
        &args.mapping,
        args.meter_api_name.as_deref(),
        args.stripe_event_name.as_deref(),
    )
    .map_err(Failure::BadInput)?;
    if let Some(shard) = shard {
        rows.retain(|row| shard.holds(row));
    }
    // Stripe's limits are per account: the shards share the rate.
    let stripe_rate = args.stripe_rate / shard.map_or(1.0, |s| s.count as f64);
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
    .trusting(&args.endpoints.trust()?)
    .map_err(Failure::BadInput)?
    .paced(Arc::new(crate::egress::RateLimiter::per_second(
        stripe_rate,
    )));
    let sandbox = Arc::new(args.sandbox.sandbox(Some(args.concurrency), &limits)?);
    // One journal per window by default, so the same command runs every night
    // and a rerun of any night resumes that night.
    // A true-up compares with what Amberflo says today: its journal resumes
    // the same day's run, and tomorrow's checks every row again.
    let true_up_day = match args.workflow.true_up {
        true => {
            let (_, today) = inputs::previous_utc_day().map_err(Failure::Internal)?;
            format!("true-up.{today}.")
        }
        false => String::new(),
    };
    let journal = args.journal.clone().unwrap_or_else(|| {
        let mut name = args.mapping.as_os_str().to_owned();
        let shard = shard.map_or(String::new(), |s| {
            format!("shard-{}-of-{}.", s.index, s.count)
        });
        name.push(format!(
            ".journal.{true_up_day}{shard}{}-{}.jsonl",
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
    tracing::info!(
        "sync: {} rows, up to {} at once",
        rows.len(),
        args.concurrency
    );
    crate::sync::sync(sandbox, config, rows, &plan).await
}

/// `usage-sync serve`: checks the configuration, listens, serves until
/// SIGTERM or Ctrl-C; the exit status says how it ended.
async fn serve(args: ServeArgs) -> u8 {
    let credentials = match credentials(&args.endpoints) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let prepared = (|| {
        let token = ServeToken::from_env().map_err(Failure::BadInput)?;
        let door = args.door()?;
        let (policy, endpoints) = args.endpoints.resolve()?;
        let limits = args.sandbox.limits()?;
        // The request body carries the options; these are unused.
        let config = RunConfig::new(
            policy,
            endpoints,
            crate::options::default_options(),
            credentials.clone(),
            limits,
        )
        .trusting(&args.endpoints.trust()?)
        .map_err(Failure::BadInput)?;
        let sandbox = args.sandbox.sandbox(Some(door.max_runs), &limits)?;
        let metrics = Arc::new(crate::metrics::ServeMetrics::default());
        Ok::<_, Failure>(crate::serve::App::new(
            sandbox, config, token, door, metrics,
        ))
    })();
    let app = match prepared {
        Ok(app) => app,
        Err(failure) => return print_failure(&failure, Some(&credentials)),
    };
    // Listen for signals before accepting anything, so none is missed.
    let mut interrupt = match crate::interrupt::Interrupt::listen() {
        Ok(i) => i,
        Err(e) => {
            let failure = Failure::Internal(format!("listening for SIGTERM and Ctrl-C: {e}"));
            return print_failure(&failure, Some(&credentials));
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let failure = Failure::BadInput(format!("cannot listen on {}: {e}", args.listen));
            return print_failure(&failure, Some(&credentials));
        }
    };
    let address = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(
        "usage-sync: serving POST /run on http://{address}/ to callers with the token (SIGTERM or Ctrl-C stops)"
    );
    let unfinished = crate::serve::run(
        listener,
        Arc::new(app),
        async move { interrupt.recv().await },
    )
    .await;
    match unfinished {
        0 => {
            tracing::info!("usage-sync: stopped; every run in flight finished");
            exit::OK
        }
        n => {
            tracing::info!(
                "usage-sync: stopped; {n} connection(s) still open after the grace period were closed"
            );
            exit::INTERRUPTED
        }
    }
}

async fn reconcile(args: ReconcileArgs) -> (u8, Tally) {
    let credentials = match credentials(&args.endpoints) {
        Ok(c) => c,
        Err(code) => return (code, Tally::default()),
    };
    match reconcile_all(&args, credentials.clone()).await {
        Ok(summary) => {
            let code = if summary.failed > 0 {
                summary.worst
            } else if summary.drifted() > 0 {
                exit::DRIFT
            } else {
                exit::OK
            };
            (code, summary.tally())
        }
        Err(failure) => (
            print_failure(&failure, Some(&credentials)),
            Tally::default(),
        ),
    }
}

async fn reconcile_all(
    args: &ReconcileArgs,
    credentials: Arc<Credentials>,
) -> Result<crate::reconcile::Summary, Failure> {
    fan_out(args.amberflo_batch, args.concurrency)?;
    let options = args.options()?;
    let rows = match (&args.mapping, &args.customer_id, &args.stripe_customer) {
        (Some(mapping), None, None) => crate::mapping::read_mapping(
            mapping,
            args.meter_api_name.as_deref(),
            args.stripe_event_name.as_deref(),
        )
        .map_err(Failure::BadInput)?,
        (None, Some(customer), Some(stripe_customer)) => vec![crate::mapping::Row {
            line: 1,
            customer_id: customer.clone(),
            stripe_customer: stripe_customer.clone(),
            meter_api_name: args.meter_api_name.clone().unwrap_or_default(),
            stripe_event_name: args.stripe_event_name.clone().unwrap_or_default(),
        }],
        _ => {
            return Err(Failure::BadInput(
                "give --mapping, or --customer-id and --stripe-customer for one row".into(),
            ));
        }
    };
    let grid = match options.interval {
        crate::bindings::Interval::Hour => 3600,
        _ => 86_400,
    };
    let (start_time, end_time) = match (&args.start_time, &args.end_time) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        (None, None) => {
            let (start, end) = inputs::reconcile_window(grid).map_err(Failure::Internal)?;
            (start.to_string(), end.to_string())
        }
        _ => {
            return Err(Failure::BadInput(
                "give both --start-time and --end-time, or neither for the last 35 days".into(),
            ));
        }
    };
    let (policy, endpoints) = args.endpoints.resolve()?;
    let limits = args.sandbox.limits()?;
    let config = RunConfig::new(policy, endpoints, options, credentials, limits)
        .trusting(&args.endpoints.trust()?)
        .map_err(Failure::BadInput)?;
    let sandbox = Arc::new(args.sandbox.sandbox(Some(args.concurrency), &limits)?);
    let settings = crate::reconcile::Settings {
        start_time,
        end_time,
        concurrency: args.concurrency,
        batch: args.amberflo_batch,
        tolerance: args.tolerance.clone(),
        format: match args.format.as_str() {
            "csv" => crate::reconcile::Format::Csv,
            _ => crate::reconcile::Format::Json,
        },
        html: args.html.clone(),
    };
    tracing::info!(
        "reconcile: {} rows, {} to {}, read-only",
        rows.len(),
        settings.start_time,
        settings.end_time
    );
    crate::reconcile::reconcile(sandbox, config, rows, &settings).await
}

/// `--amberflo-batch` and `--concurrency` of `sync` and `reconcile`, checked.
fn fan_out(batch: usize, concurrency: usize) -> Result<(), Failure> {
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(Failure::BadInput(format!(
            "--amberflo-batch must be between 1 and {MAX_BATCH}"
        )));
    }
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(Failure::BadInput(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}"
        )));
    }
    Ok(())
}

/// A window bound as part of a file name.
fn file_safe(time: &str) -> String {
    time.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
