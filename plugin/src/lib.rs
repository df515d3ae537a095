//! The `usage-to-stripe-meter` Arazzo workflow, compiled to a WASI 0.2 component.
//!
//! Under the usage-sync host the guest holds no credentials: the host attaches
//! them at the HTTP boundary. Hosts that attach none give them as environment
//! variables (see [`credentials`]).
//! Everything that decides what goes on the wire lives here, so any WASI host
//! that runs this component sends the same bytes.
//!
//! The component is built without `std`: only `core` and `alloc`, WASI through
//! the `wasip2` bindings (`ambient`), and the allocator and panic handler of
//! `runtime`. `std` would link its runtime too: a panic hook that reads
//! `RUST_BACKTRACE` and writes through wasi-libc's stdio, at `wasi:*@0.2.0`,
//! a second set of imports beside the bindings' `@0.2.12` that every instance
//! links when it starts. Native builds (the unit tests) use `std`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod amberflo;
mod ambient;
pub mod billing;
mod by_time;
pub mod carry;
pub mod credentials;
pub mod decimal;
pub mod form;
mod maps;
// The HTTP entry point exists only in the component, and only in a build
// with the `http-handler` feature (the default).
#[cfg(all(target_arch = "wasm32", feature = "http-handler"))]
mod handler;
pub mod http;
pub mod inputs;
mod order;
pub mod quantity;
pub mod reconcile;
pub mod retry;
#[cfg(target_arch = "wasm32")]
mod runtime;
pub mod stripe;
mod text;
pub mod time;
mod workflow;

mod prelude {
    //! What `std`'s prelude holds beyond `core`'s, from `alloc`.
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// The bindings generated from `wit/usage-sync.wit` (which documents them),
/// re-exported at the crate root where the code and the export macro use them.
mod bindings {
    #![allow(missing_docs)]

    #[cfg(not(any(feature = "spin", feature = "wasmcloud")))]
    wit_bindgen::generate!({
        path: "../wit",
        world: "usage-sync",
        default_bindings_module: "crate::bindings",
    });
    #[cfg(feature = "spin")]
    wit_bindgen::generate!({
        path: "../wit",
        world: "usage-sync-spin",
        generate_all,
        default_bindings_module: "crate::bindings",
    });
    #[cfg(all(feature = "wasmcloud", not(feature = "spin")))]
    wit_bindgen::generate!({
        path: "../wit",
        world: "usage-sync-wasmcloud",
        generate_all,
        default_bindings_module: "crate::bindings",
    });
}
pub use bindings::*;
use prelude::*;

use exports::usage_sync::workflow::workflow::{
    CustomerUsage, Endpoints, Guest, Inputs, InvoicePage, InvoiceReconciliation, LedgerMark,
    Listing, Meter, Options, Outputs, Reconciliation, Source, SubscriptionPage, UsageQuery,
    WorkflowError,
};

#[allow(dead_code)]
struct Component;

impl Guest for Component {
    fn run(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
    ) -> Result<Outputs, WorkflowError> {
        workflow::run(&endpoints, options, inputs, &[], None)
    }

    fn query_usage(
        endpoints: Endpoints,
        options: Options,
        query: UsageQuery,
    ) -> Result<Vec<CustomerUsage>, WorkflowError> {
        workflow::query_many(&endpoints, options, query)
    }

    fn find_meter(
        endpoints: Endpoints,
        options: Options,
        event_name: String,
    ) -> Result<Meter, WorkflowError> {
        workflow::find_meter(&endpoints, options, event_name)
    }

    fn list_subscriptions(
        endpoints: Endpoints,
        options: Options,
        meter_ids: Vec<String>,
        starting_after: Option<String>,
    ) -> Result<SubscriptionPage, WorkflowError> {
        workflow::list_subscriptions(&endpoints, options, meter_ids, starting_after)
    }

    fn list_invoices(
        endpoints: Endpoints,
        options: Options,
        created_from: i64,
        starting_after: Option<String>,
    ) -> Result<InvoicePage, WorkflowError> {
        workflow::list_invoices(&endpoints, options, created_from, starting_after)
    }

    fn record_usage(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        sources: Option<Vec<Source>>,
        meter: Option<Meter>,
        recent: Vec<LedgerMark>,
        listed: Option<Listing>,
    ) -> Result<Outputs, WorkflowError> {
        let (endpoints, listed) = (&endpoints, listed.as_ref());
        match (sources, meter) {
            (None, None) => workflow::run(endpoints, options, inputs, &recent, listed),
            (None, Some(meter)) => {
                workflow::run_with_meter(endpoints, options, inputs, meter, &recent, listed)
            }
            (Some(sources), Some(meter)) => {
                workflow::record_usage(endpoints, options, inputs, sources, meter, &recent, listed)
            }
            (Some(_), None) => Err(WorkflowError::InvalidInput(
                "record-usage: sources were given without the meter they were queried for (from find-meter)".into(),
            )),
        }
    }

    fn reconcile_invoices(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        usage: CustomerUsage,
        meter: Meter,
        listed: Option<Listing>,
    ) -> Result<InvoiceReconciliation, WorkflowError> {
        let listed = listed.as_ref();
        workflow::reconcile_invoices(&endpoints, options, inputs, usage, meter, listed)
    }

    fn reconcile(
        endpoints: Endpoints,
        options: Options,
        inputs: Inputs,
        usage: CustomerUsage,
        meter: Meter,
        tolerance: String,
    ) -> Result<Reconciliation, WorkflowError> {
        workflow::reconcile(&endpoints, options, inputs, usage, meter, &tolerance)
    }
}

// Native builds (unit tests) link no component exports.
#[cfg(target_arch = "wasm32")]
export!(Component);
#[cfg(all(target_arch = "wasm32", feature = "http-handler"))]
use handler::Handler;
#[cfg(all(target_arch = "wasm32", feature = "http-handler"))]
wasip2::http::proxy::export!(Handler);

#[cfg(test)]
mod tests {
    use super::*;
    use exports::usage_sync::workflow::workflow::Interval;

    #[test]
    fn record_usage_refuses_sources_without_their_meter_before_sending_anything() {
        let endpoints = Endpoints {
            amberflo_url: "https://amberflo.invalid".into(),
            stripe_url: "https://stripe.invalid".into(),
        };
        let options = inputs::tests::options(Interval::Day);
        let inputs = inputs::tests::inputs();
        let sources = Some(Vec::new());
        match Component::record_usage(endpoints, options, inputs, sources, None, vec![], None) {
            Err(WorkflowError::InvalidInput(why)) => {
                assert!(why.contains("without the meter"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}
