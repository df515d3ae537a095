//! The workflow's exports (wit/usage-sync.wit), one method each: every call
//! a fresh instance under the run's configuration, and the verdict on it.

use crate::bindings::{
    CustomerUsage, Inputs, InvoiceReconciliation, LedgerMark, Meter, Reconciliation, Source,
    UsageQuery, WorkflowError,
};
use crate::outcome::{Failure, Outputs};
use crate::sandbox::{RunConfig, Sandbox};

impl Sandbox {
    /// Runs the workflow once, in a fresh instance.
    pub async fn run(&self, config: &RunConfig, inputs: Inputs) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_run(store, &config.endpoints, &config.options, &inputs)
                .await?;
            outputs(answer)
        })
        .await
    }

    /// The whole workflow, knowing this tool's recent writes to the Stripe
    /// customer (Stripe's summaries may not show them yet).
    pub async fn run_with_recent(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        recent: &[LedgerMark],
    ) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_run_with_recent(store, &config.endpoints, &config.options, &inputs, recent)
                .await?;
            outputs(answer)
        })
        .await
    }

    /// The workflow with the meter already found by [`Self::find_meter`].
    pub async fn run_with_meter(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        meter: &Meter,
        recent: &[LedgerMark],
    ) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_run_with_meter(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    meter,
                    recent,
                )
                .await?;
            outputs(answer)
        })
        .await
    }

    /// Step 2 alone for one ledger, in a fresh instance, with the meter from
    /// [`Self::find_meter`] and each source's step 1 answer from
    /// [`Self::query_usage`].
    pub async fn record_usage(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        sources: Vec<Source>,
        meter: &Meter,
        recent: &[LedgerMark],
    ) -> Result<Outputs, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            let answer = guest
                .call_record_usage(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    &sources,
                    meter,
                    recent,
                )
                .await?;
            outputs(answer)
        })
        .await
    }

    /// One row's reconciliation, read-only, in a fresh instance, with the
    /// meter and step 1's answer given.
    pub async fn reconcile(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage_result: String,
        meter: &Meter,
        tolerance: &str,
    ) -> Result<Reconciliation, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            guest
                .call_reconcile(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    &usage_result,
                    meter,
                    tolerance,
                )
                .await
        })
        .await
    }

    /// One row's finalized invoices against Amberflo's totals for their
    /// periods, read-only, in a fresh instance.
    pub async fn reconcile_invoices(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage_result: String,
        meter: &Meter,
    ) -> Result<InvoiceReconciliation, Failure> {
        self.call(config, &inputs.customer_id, async |guest, store| {
            guest
                .call_reconcile_invoices(
                    store,
                    &config.endpoints,
                    &config.options,
                    &inputs,
                    &usage_result,
                    meter,
                )
                .await
        })
        .await
    }

    /// The Stripe meter of `event_name`, checked for the run's interval, in a
    /// fresh instance.
    pub async fn find_meter(&self, config: &RunConfig, event_name: &str) -> Result<Meter, Failure> {
        self.call(config, "", async |guest, store| {
            guest
                .call_find_meter(store, &config.endpoints, &config.options, event_name)
                .await
        })
        .await
    }

    /// Step 1 for many customers, in a fresh instance.
    pub async fn query_usage(
        &self,
        config: &RunConfig,
        query: UsageQuery,
    ) -> Result<Vec<CustomerUsage>, Failure> {
        self.call(config, "", async |guest, store| {
            guest
                .call_query_usage(store, &config.endpoints, &config.options, &query)
                .await
        })
        .await
    }
}

/// A run's answer as the report's outputs; a mismatch is our bug, an internal error.
fn outputs(
    answer: Result<crate::bindings::Outputs, WorkflowError>,
) -> wasmtime::Result<Result<Outputs, WorkflowError>> {
    match answer {
        Ok(o) => Ok(Ok(
            usage_sync_report::from_wit(&o).map_err(wasmtime::Error::msg)?
        )),
        Err(e) => Ok(Err(e)),
    }
}
