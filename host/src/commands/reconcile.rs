//! `usage-sync reconcile`: Amberflo's totals against what Stripe's meter
//! holds, per row and interval, read-only. Here the flags and their checks;
//! [`compare`] reads every row and prints what it found.

pub(crate) mod compare;
pub(crate) mod invoices;

use super::flags::{
    EndpointArgs, FanOutArgs, LateUsage, PaceArgs, SandboxArgs, WindowArgs, WorkflowSettings,
};
use crate::bindings::Options;
use crate::mapping::Row;
use crate::metrics::Tally;
use crate::options::default_options;
use crate::outcome::{Failure, exit, print_failure};
use crate::secrets::Credentials;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use usage_sync_report::Interval;

#[derive(Args)]
#[command(
    mut_arg("start_time", |a| a.help("Window start [default: the oldest interval Stripe still accepts events for, 35 days back]")),
    mut_arg("end_time", |a| a.help("Window end [default: the end of the last ended interval]")),
    mut_arg("interval", |a| a.help("One cell per UTC day or per UTC hour")),
    mut_arg("settle_hours", |a| a.help("A differing interval that ended less than this many hours ago is `settling`")),
    mut_arg("scale", |a| a.help("Multiply Amberflo's totals by this, as for `sync`")),
    mut_arg("round", |a| a.help("Round Amberflo's totals as `sync` would before sending")),
    mut_arg("concurrency", |a| a.help("Rows read at once").default_value("16")),
    mut_arg("amberflo_batch", |a| a.help("Customers per Amberflo query")),
    mut_arg("stripe_rate", |a| a.help("Stripe reads per second across all rows (Stripe's basic limit: 25 in test mode, 100 live)")),
    // Reconcile writes nothing.
    mut_arg("stripe_meter_event_rate", |a| a.hide(true)),
)]
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
    #[command(flatten)]
    pub(crate) window: WindowArgs,
    #[command(flatten)]
    pub(crate) settings: WorkflowSettings,
    /// Compare each finalized invoice whose billing period lies in the window (its
    /// metered line's quantity) with what a run bills for the period, instead of
    /// the meter's summaries per interval. Amberflo is read by hour.
    #[arg(long)]
    pub(crate) invoices: bool,
    /// `carry` when the nightly job runs with --late-usage carry: each day counts
    /// what was carried out of it, and not what was carried into it (--interval
    /// day; costs a subscriptions read per row, and the carry minutes' reads).
    #[arg(long, value_enum, default_value_t = LateUsage::Report, value_name = "WHAT")]
    pub(crate) late_usage: LateUsage,
    /// Differences up to this many billed units are a match.
    #[arg(long, default_value = "0", value_name = "UNITS")]
    pub(crate) tolerance: String,
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
    #[command(flatten)]
    pub(crate) fan_out: FanOutArgs,
    #[command(flatten)]
    pub(crate) pace: PaceArgs,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

impl ReconcileArgs {
    /// Compares every row; the exit status and what the metrics file says.
    pub(crate) async fn execute(self) -> (u8, Tally) {
        let credentials = match super::credentials(&self.endpoints) {
            Ok(c) => c,
            Err(code) => return (code, Tally::default()),
        };
        match self.prepare_and_compare(credentials.clone()).await {
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

    /// The workflow options of a reconciliation: read-only, so no write option.
    fn options(&self) -> Result<Options, Failure> {
        if self.settings.interval == Interval::Window {
            return Err(Failure::BadInput(
                "reconcile compares per day or per hour: --interval day or hour".into(),
            ));
        }
        let mut options = self.settings.apply(default_options())?;
        options.carry_late_usage = self.late_usage == LateUsage::Carry;
        if options.carry_late_usage && !self.invoices && self.settings.interval != Interval::Day {
            return Err(Failure::BadInput(
                "--late-usage carry is counted per UTC day: --interval day".into(),
            ));
        }
        if self.invoices {
            // A renewal's hour is where a run cuts the day.
            options.interval = crate::bindings::Interval::Hour;
        }
        Ok(options)
    }

    /// The mapping's rows, or the one row the flags give.
    fn rows(&self) -> Result<Vec<Row>, Failure> {
        match (&self.mapping, &self.customer_id, &self.stripe_customer) {
            (Some(mapping), None, None) => crate::mapping::read_mapping(
                mapping,
                self.meter_api_name.as_deref(),
                self.stripe_event_name.as_deref(),
            )
            .map_err(Failure::BadInput),
            (None, Some(customer), Some(stripe_customer)) => Ok(vec![Row {
                line: 1,
                customer_id: customer.clone(),
                stripe_customer: stripe_customer.clone(),
                meter_api_name: self.meter_api_name.clone().unwrap_or_default(),
                stripe_event_name: self.stripe_event_name.clone().unwrap_or_default(),
            }]),
            _ => Err(Failure::BadInput(
                "give --mapping, or --customer-id and --stripe-customer for one row".into(),
            )),
        }
    }

    /// The checks, the rows, the window and the sandbox; then every row,
    /// compared.
    async fn prepare_and_compare(
        &self,
        credentials: Arc<Credentials>,
    ) -> Result<compare::Summary, Failure> {
        self.fan_out.check()?;
        self.pace.check()?;
        let options = self.options()?;
        let rows = self.rows()?;
        let grid = match options.interval {
            crate::bindings::Interval::Hour => 3600,
            _ => 86_400,
        };
        let (start_time, end_time) = self
            .window
            .bounds(|| crate::inputs::reconcile_window(grid), "the last 35 days")?;
        let concurrency = self.fan_out.concurrency;
        let (sandbox, config) = super::prepare(
            &self.endpoints,
            &self.sandbox,
            || Ok(options),
            credentials,
            Some(concurrency),
            crate::WORKFLOW_COMPONENT,
        )?;
        // Its reads count against the account's basic limit, as a sync's do.
        let pace = self
            .pace
            .pace(config.credentials.stripe_mode(), 1.0, "reconcile");
        let config = config.paced(Arc::new(pace));
        let batch = crate::commands::batch::fitting(
            self.fan_out.amberflo_batch,
            &start_time,
            &end_time,
            // Amberflo is read by hour for invoices, as a run cuts a renewal day.
            match self.invoices {
                true => 3600,
                false => grid,
            },
        );
        let settings = compare::Settings {
            start_time,
            end_time,
            concurrency,
            batch,
            tolerance: self.tolerance.clone(),
            format: match self.format.as_str() {
                "csv" => compare::Format::Csv,
                _ => compare::Format::Json,
            },
            html: self.html.clone(),
        };
        tracing::info!(
            "reconcile: {} rows, {} to {}, read-only",
            rows.len(),
            settings.start_time,
            settings.end_time
        );
        match self.invoices {
            true => invoices::reconcile(Arc::new(sandbox), config, rows, &settings).await,
            false => compare::reconcile(Arc::new(sandbox), config, rows, &settings).await,
        }
    }
}
