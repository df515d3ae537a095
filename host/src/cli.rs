//! The `usage-sync` command line: the top-level parser, then each command's
//! `execute` (in [`crate::commands`]), with its metrics file written after.

use crate::commands::close_periods::ClosePeriodsArgs;
use crate::commands::reconcile::ReconcileArgs;
use crate::commands::run::RunArgs;
use crate::commands::serve::ServeArgs;
use crate::commands::sync::SyncArgs;
use crate::metrics::Tally;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "usage-sync",
    version,
    args_override_self = true,
    about = "Records Amberflo usage on a Stripe billing meter, from a sandboxed WebAssembly component",
    after_help = "Exit status: 0 success, 1 internal error, 2 bad input (nothing written), 3 provider error, 4 sandbox violation or limit, 5 drift (Stripe holds another value; nothing written for it), 130 sync interrupted."
)]
struct Cli {
    /// stderr: lines for a person, or one JSON object per line (run id,
    /// command, step, provider, status, duration...), keys scrubbed either way.
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
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
    /// Sync, up to the last full hour, only the rows whose billing period just ended
    /// (within --lookback), while their invoice is a draft. Run it hourly.
    ClosePeriods(Box<ClosePeriodsArgs>),
    /// Compare Amberflo's totals with what Stripe's meter holds, per row and interval; writes nothing.
    ///
    /// stdout gets one JSON line per row and interval, then a summary line (or CSV).
    /// Exit 0 when everything matches, 5 when something drifts.
    Reconcile(Box<ReconcileArgs>),
    /// Run the workflow against local Amberflo and Stripe emulators: no account, no network.
    #[cfg(feature = "demo")]
    Demo(crate::commands::demo::DemoArgs),
    /// Serve the component's HTTP entry point: `POST /run` with the inputs JSON.
    ///
    /// Each request runs in its own sandboxed instance, with the same egress policy,
    /// key injection and limits as `run`. Keys come from AMBERFLO_API_KEY and STRIPE_API_KEY;
    /// callers present `Authorization: Bearer <token>`, the token from USAGE_SYNC_SERVE_TOKEN
    /// or the file USAGE_SYNC_SERVE_TOKEN_FILE names. SIGTERM or Ctrl-C stops accepting and
    /// lets runs in flight finish.
    Serve(Box<ServeArgs>),
}

/// Parses the command line and runs the command; the exit status says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match &cli.command {
        Command::Run(_) => "run",
        Command::Sync(_) => "sync",
        Command::ClosePeriods(_) => "close-periods",
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
    let measured = |path: Option<PathBuf>, step: &[(&str, &str)], (code, tally): (u8, Tally)| {
        if let Some(path) = path
            && let Err(e) =
                crate::metrics::write_textfile(&path, step, code, started.elapsed(), &tally)
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
            measured(
                metrics,
                &[("step", "run")],
                runtime.block_on(args.execute()),
            )
        }
        Command::Sync(args) => {
            let metrics = args.metrics_file.clone();
            let step = match args.workflow.true_up {
                true => "sync-true-up",
                false => "sync",
            };
            let shard = args.shard_name();
            let mut labels = vec![("step", step)];
            labels.extend(shard.as_deref().map(|s| ("shard", s)));
            measured(metrics, &labels, runtime.block_on(args.execute()))
        }
        Command::ClosePeriods(args) => {
            let metrics = args.sync.metrics_file.clone();
            measured(
                metrics,
                &[("step", "close-periods")],
                runtime.block_on(args.execute()),
            )
        }
        Command::Serve(args) => runtime.block_on(args.execute()),
        Command::Reconcile(args) => {
            let metrics = args.metrics_file.clone();
            measured(
                metrics,
                &[("step", "reconcile")],
                runtime.block_on(args.execute()),
            )
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime.block_on(args.execute()),
    };
    ExitCode::from(code)
}
