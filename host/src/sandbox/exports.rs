//! The workflow's exports (wit/usage-sync.wit), one method each: every call
//! a fresh instance under the run's configuration, and the verdict on it.

use crate::bindings::{
    CustomerUsage, Inputs, InvoicePage, InvoiceReconciliation, LedgerMark, Listing, Meter,
    Reconciliation, Source, SubscriptionPage, UsageQuery, WorkflowError,
};
use crate::outcome::{Failure, Outputs};
use crate::sandbox::{RunConfig, Sandbox};
use std::sync::OnceLock;
use wasmtime::component::{Component, ComponentExportIndex};

/// The interface the workflow exports.
const INTERFACE: &str = "usage-sync:workflow/workflow@0.1.0";

/// Where each of the workflow's exports sits in the component, found once.
///
/// The generated bindings type-check all nine exports on every
/// instantiation, about a third of a pooled run's cost in the host; a run
/// calls one, and type-checks it only the first time ([`Sandbox::call`]).
pub(crate) struct Exports {
    run: Export,
    record_usage: Export,
    reconcile: Export,
    reconcile_invoices: Export,
    find_meter: Export,
    query_usage: Export,
    list_subscriptions: Export,
    list_invoices: Export,
}

/// One export of the workflow, and the Rust types it was type-checked
/// against once: a component's export types are the same in every one of
/// its instances, so the check need not be repeated per run.
pub(crate) struct Export {
    pub(crate) index: ComponentExportIndex,
    /// `type_name` of the `(params, results)` the check passed for.
    pub(crate) checked: OnceLock<&'static str>,
}

impl Exports {
    /// Looks every export up by name, or names the first one missing.
    pub(crate) fn find(component: &Component) -> wasmtime::Result<Exports> {
        let interface = component
            .get_export_index(None, INTERFACE)
            .ok_or_else(|| wasmtime::format_err!("no exported instance named `{INTERFACE}`"))?;
        let lookup = |name: &str| {
            let index = component
                .get_export_index(Some(&interface), name)
                .ok_or_else(|| wasmtime::format_err!("`{INTERFACE}` does not export `{name}`"))?;
            Ok::<_, wasmtime::Error>(Export {
                index,
                checked: OnceLock::new(),
            })
        };
        Ok(Exports {
            run: lookup("run")?,
            record_usage: lookup("record-usage")?,
            reconcile: lookup("reconcile")?,
            reconcile_invoices: lookup("reconcile-invoices")?,
            find_meter: lookup("find-meter")?,
            query_usage: lookup("query-usage")?,
            list_subscriptions: lookup("list-subscriptions")?,
            list_invoices: lookup("list-invoices")?,
        })
    }
}

impl Sandbox {
    /// Runs the workflow once, in a fresh instance.
    pub async fn run(&self, config: &RunConfig, inputs: Inputs) -> Result<Outputs, Failure> {
        self.call(
            config,
            &inputs.customer_id,
            |e| &e.run,
            (&config.endpoints, &config.options, &inputs),
            outputs,
        )
        .await
    }

    /// The workflow for one ledger, in a fresh instance, knowing this tool's
    /// recent writes to the Stripe customer (Stripe's summaries may not show
    /// them yet). With `meter` (from [`Self::find_meter`]) it does not look
    /// the meter up; with `sources` too (each source's step 1 answer from
    /// [`Self::query_usage`]) it is step 2 alone. Sources without a meter are
    /// refused by the component.
    pub async fn record_usage(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        sources: Option<Vec<Source>>,
        meter: Option<&Meter>,
        recent: &[LedgerMark],
        listed: Option<&Listing>,
    ) -> Result<Outputs, Failure> {
        self.call(
            config,
            &inputs.customer_id,
            |e| &e.record_usage,
            (
                &config.endpoints,
                &config.options,
                &inputs,
                sources.as_deref(),
                meter,
                recent,
                listed,
            ),
            outputs,
        )
        .await
    }

    /// One row's reconciliation, read-only, in a fresh instance, with the
    /// meter and step 1's answer (from [`Self::query_usage`]) given.
    pub async fn reconcile(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage: CustomerUsage,
        meter: &Meter,
        tolerance: &str,
    ) -> Result<Reconciliation, Failure> {
        self.call(
            config,
            &inputs.customer_id,
            |e| &e.reconcile,
            (
                &config.endpoints,
                &config.options,
                &inputs,
                &usage,
                meter,
                tolerance,
            ),
            Ok,
        )
        .await
    }

    /// One row's finalized invoices against Amberflo's totals for their
    /// periods, read-only, in a fresh instance; `listed`: the customer's
    /// subscriptions from the command's listing.
    pub async fn reconcile_invoices(
        &self,
        config: &RunConfig,
        inputs: Inputs,
        usage: CustomerUsage,
        meter: &Meter,
        listed: Option<&Listing>,
    ) -> Result<InvoiceReconciliation, Failure> {
        self.call(
            config,
            &inputs.customer_id,
            |e| &e.reconcile_invoices,
            (
                &config.endpoints,
                &config.options,
                &inputs,
                &usage,
                meter,
                listed,
            ),
            Ok,
        )
        .await
    }

    /// The Stripe meter of `event_name`, checked for the run's interval, in a
    /// fresh instance.
    pub async fn find_meter(&self, config: &RunConfig, event_name: &str) -> Result<Meter, Failure> {
        self.call(
            config,
            "",
            |e| &e.find_meter,
            (&config.endpoints, &config.options, event_name),
            Ok,
        )
        .await
    }

    /// One page of the account's subscriptions with an item on `meter_ids`,
    /// in a fresh instance.
    pub async fn list_subscriptions(
        &self,
        config: &RunConfig,
        meter_ids: &[String],
        starting_after: Option<&str>,
    ) -> Result<SubscriptionPage, Failure> {
        self.call(
            config,
            "",
            |e| &e.list_subscriptions,
            (
                &config.endpoints,
                &config.options,
                meter_ids,
                starting_after,
            ),
            Ok,
        )
        .await
    }

    /// One page of the account's invoices created from `created_from` on,
    /// kept to subscriptions' invoices with a priced line, in a fresh
    /// instance.
    pub async fn list_invoices(
        &self,
        config: &RunConfig,
        created_from: i64,
        starting_after: Option<&str>,
    ) -> Result<InvoicePage, Failure> {
        self.call(
            config,
            "",
            |e| &e.list_invoices,
            (
                &config.endpoints,
                &config.options,
                created_from,
                starting_after,
            ),
            Ok,
        )
        .await
    }

    /// Step 1 for many customers, in a fresh instance.
    pub async fn query_usage(
        &self,
        config: &RunConfig,
        query: UsageQuery,
    ) -> Result<Vec<CustomerUsage>, Failure> {
        self.call(
            config,
            "",
            |e| &e.query_usage,
            (&config.endpoints, &config.options, &query),
            Ok,
        )
        .await
    }
}

/// A run's answer as the report's outputs.
fn outputs(
    answer: Result<crate::bindings::Outputs, WorkflowError>,
) -> wasmtime::Result<Result<Outputs, WorkflowError>> {
    Ok(answer.map(Outputs::from))
}

#[cfg(test)]
mod tests {
    use crate::sandbox::Sandbox;

    /// A component with nothing in it: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn a_component_without_the_workflow_is_refused_at_load_naming_what_is_missing() {
        let Err(error) = Sandbox::new(EMPTY_COMPONENT) else {
            panic!("an empty component loaded");
        };
        assert_eq!(
            format!("{error:#}"),
            "the component does not export the usage-sync workflow: \
             no exported instance named `usage-sync:workflow/workflow@0.1.0`"
        );
    }

    #[test]
    fn the_shipped_component_exports_every_workflow_function() {
        assert!(Sandbox::new(crate::DEFAULT_COMPONENT).is_ok());
    }

    /// The second run of an export skips the type check the first one did,
    /// and answers as the first did.
    #[tokio::test]
    async fn an_export_is_type_checked_once_and_answers_the_same_after() {
        use crate::bindings::{Endpoints, Inputs};
        use crate::{Credentials, Endpoint, Limits, Policy, RunConfig, Secret, default_options};
        use std::sync::Arc;

        let sandbox = Sandbox::new(crate::DEFAULT_COMPONENT).unwrap();
        // Never reached: the run stops at input validation.
        let amberflo = Endpoint::parse("https://amberflo.invalid").unwrap();
        let stripe = Endpoint::parse("https://stripe.invalid").unwrap();
        let config = RunConfig::new(
            Policy::new(&amberflo, &stripe).unwrap(),
            Endpoints {
                amberflo_url: amberflo.base_url,
                stripe_url: stripe.base_url,
            },
            default_options(),
            Arc::new(Credentials {
                amberflo: Secret::new("A", "amberflo-test-key-0001".into()).unwrap(),
                stripe: Secret::new("S", "sk_test_0000000000000001".into()).unwrap(),
            }),
            Limits::default(),
        );
        let inputs = Inputs {
            customer_id: " padded ".into(),
            meter_api_name: "m".into(),
            stripe_customer: "cus_1".into(),
            stripe_event_name: "e".into(),
            usage_quantity: None,
            start_time: None,
            end_time: None,
        };
        assert!(sandbox.exports.run.checked.get().is_none());
        let first = sandbox.run(&config, inputs.clone()).await.unwrap_err();
        assert!(sandbox.exports.run.checked.get().is_some());
        let second = sandbox.run(&config, inputs).await.unwrap_err();
        assert_eq!(first.render(), second.render());
        let crate::Failure::BadInput(message) = first else {
            panic!("{}", first.render());
        };
        assert!(message.contains("leading or trailing spaces"), "{message}");
    }
}
