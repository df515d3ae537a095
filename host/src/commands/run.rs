//! `usage-sync run`: the workflow once, for one customer and meter, from
//! flags or an inputs file.

use super::flags::{EndpointArgs, SandboxArgs, WindowArgs, WorkflowArgs};
use super::ledger::LedgerState;
use crate::inputs::{self, InputFlags, InputsFile};
use crate::mapping::Row;
use crate::metrics::Tally;
use crate::outcome::{
    Failure, outputs_exit_code, print_failure, progress, render_outputs, summary,
};
use crate::sandbox::{RunConfig, Sandbox};
use crate::secrets::Credentials;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

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
    #[command(flatten)]
    pub(crate) window: WindowArgs,
    #[command(flatten)]
    pub(crate) endpoints: EndpointArgs,
    #[command(flatten)]
    pub(crate) workflow: WorkflowArgs,
    #[command(flatten)]
    pub(crate) sandbox: SandboxArgs,
}

impl RunArgs {
    /// Runs the workflow once; the exit status and what the metrics file says.
    pub(crate) async fn execute(self) -> (u8, Tally) {
        let failed = Tally {
            rows: vec![("failed", 1)],
            ..Tally::default()
        };
        let credentials = match super::credentials(&self.endpoints) {
            Ok(c) => c,
            Err(code) => return (code, failed),
        };
        match self.prepare(&credentials) {
            Ok((sandbox, config, inputs)) => {
                tracing::info!("usage-sync: running the workflow in the sandbox");
                match self.run_ledger(&sandbox, &config, inputs).await {
                    Ok(outputs) => {
                        tracing::info!("usage-sync: {}", credentials.redact(&summary(&outputs)));
                        println!("{}", credentials.redact(&render_outputs(&outputs)));
                        let drift_cells = outputs.drifted().count();
                        let outcome = match () {
                            _ if drift_cells > 0 => "drift",
                            _ if outputs.closed().next().is_some() => "unbilled",
                            _ if !outputs.events.is_empty()
                                && outputs.events.iter().all(|e| e.already_recorded) =>
                            {
                                "already-recorded"
                            }
                            _ => "recorded",
                        };
                        let mut tally = Tally {
                            rows: vec![(outcome, 1)],
                            zero_usage: usize::from(outputs.measured_total == "0"),
                            drift_cells,
                            ..Tally::default()
                        };
                        tally.add_unbilled(&outputs);
                        (outputs_exit_code(&outputs), tally)
                    }
                    Err(failure) => (print_failure(&failure, Some(&credentials)), failed),
                }
            }
            Err(failure) => (print_failure(&failure, Some(&credentials)), failed),
        }
    }

    /// The workflow for one source, under the state directory: a source
    /// mapped to another Stripe customer than it was billed to is refused (a
    /// moved one only for a window that starts at or after the move). This
    /// tool's recent writes to the customer are handed in, since Stripe's
    /// summaries may not show them yet.
    async fn run_ledger(
        &self,
        sandbox: &Sandbox,
        config: &RunConfig,
        inputs: crate::bindings::Inputs,
    ) -> Result<crate::outcome::Outputs, Failure> {
        let row = Row {
            line: 1,
            customer_id: inputs.customer_id.clone(),
            stripe_customer: inputs.stripe_customer.clone(),
            meter_api_name: inputs.meter_api_name.clone(),
            stripe_event_name: inputs.stripe_event_name.clone(),
        };
        // Incomplete inputs are the component's to refuse, with its message.
        let complete = [
            &row.customer_id,
            &row.stripe_customer,
            &row.meter_api_name,
            &row.stripe_event_name,
        ]
        .iter()
        .all(|f| !f.is_empty());
        if !complete {
            return sandbox.run(config, inputs).await;
        }
        let state = LedgerState::open(
            self.workflow.state_dir.clone(),
            self.workflow.move_customers,
        )?;
        state.load(std::slice::from_ref(&row))?;
        let bounds = state.place(std::slice::from_ref(&row))?;
        let bounds = bounds.into_iter().next().unwrap_or_default();
        if let Some((from, until)) = &bounds.from {
            let starts = inputs
                .start_time
                .as_deref()
                .and_then(|t| t.parse::<i64>().ok());
            if starts.is_none_or(|s| s < *until) {
                return Err(Failure::BadInput(format!(
                    "{} moved from {from} to {} at {} (Unix seconds): `run` bills only after the move; give --start-time {until} or later, or use `sync --move-customers`",
                    row.customer_id, row.stripe_customer, until
                )));
            }
        }
        let recent = state.marks(&row.stripe_customer, None);
        // The workflow asks Stripe for the meter first, then Amberflo (unless
        // the quantity is given): Amberflo's connection opens meanwhile.
        if inputs.usage_quantity.is_none() {
            config.transport.open_ahead(&config.endpoints.amberflo_url);
        }
        let outputs = sandbox
            .record_usage(config, inputs, None, None, &recent, None)
            .await?;
        state.record(
            &[(row, bounds)],
            &outputs.meter.id,
            &outputs,
            outputs.window_end,
        )?;
        state.save()?;
        state.prune()?;
        Ok(outputs)
    }

    /// The sandbox, the run's configuration and its inputs (file, then flags).
    fn prepare(
        &self,
        credentials: &Arc<Credentials>,
    ) -> Result<(Sandbox, RunConfig, crate::bindings::Inputs), Failure> {
        let file = match &self.inputs {
            Some(path) => InputsFile::read(path).map_err(Failure::BadInput)?,
            None => InputsFile::default(),
        };
        let inputs = inputs::merge(
            file,
            InputFlags {
                customer_id: self.customer_id.clone(),
                meter_api_name: self.meter_api_name.clone(),
                stripe_customer: self.stripe_customer.clone(),
                stripe_event_name: self.stripe_event_name.clone(),
                usage_quantity: self.usage_quantity.clone(),
                start_time: self.window.start_time.clone(),
                end_time: self.window.end_time.clone(),
            },
        );
        let (sandbox, config) = super::prepare(
            &self.endpoints,
            &self.sandbox,
            || self.workflow.options(),
            credentials.clone(),
            None,
            crate::WORKFLOW_COMPONENT,
        )?;
        let config = config.observed(Arc::new(progress(credentials.clone())));
        Ok((sandbox, config, inputs))
    }
}
