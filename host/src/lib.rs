//! The usage-sync host: runs the workflow component in a wasmtime sandbox.
//!
//! A request flows one way (ARCHITECTURE.md has the whole map), and so do the
//! modules' imports: each uses only those below it.
//!
//! ```text
//! cli ──▶ commands ──▶ sandbox ──▶ component (wit/usage-sync.wit) ──▶ egress ──▶ provider
//!          flags        engine, pool, config                          hook, policy, routes
//!          batch        limits, cache, verdict                        provider, transport
//! ```
//!
//! - `cli`: the top-level parser and dispatch;
//! - `commands`: one file per subcommand (`run`, `sync`, `reconcile`,
//!   `serve`, `demo`) with its flags, checks and preparation, and the work
//!   beside it; the flag groups they share (`commands::flags`), the one
//!   builder of a run's configuration (`commands::prepare`), and the
//!   per-batch helpers of `sync` and `reconcile` (`commands::batch`);
//! - `sandbox`: the engine, a fresh instance per run, the workflow's
//!   exports, with the pool, the run's configuration, limits, the cache of
//!   compiled components, the verdict on a run and the guest's stderr;
//! - `egress`: the HTTP boundary: the hook every guest request passes, the
//!   policy (origins, and the routes the Arazzo document declares), each
//!   provider's key, and the transport (pooled connections, TLS, proxy);
//! - the ground floor, used from above: `secrets` (keys and scrubbing),
//!   `logging`, `metrics`, `outcome` (what a run prints, exit statuses),
//!   `inputs`, `options`, `mapping` (rows), `progress`, `interrupt`,
//!   `capped` (reading a file the user names, never past a cap) and `mirror`
//!   (the component's answers as the report's types).
//!
//! The modules are private; what the binary, the benches and the tests use
//! is re-exported here.

mod capped;
mod cli;
mod commands;
mod egress;
mod inputs;
mod interrupt;
mod logging;
mod mapping;
mod metrics;
mod mirror;
mod options;
mod outcome;
mod private_dir;
mod progress;
mod sandbox;
mod secrets;
mod state;

pub use cli::main;
pub use egress::policy::{Endpoint, Policy};
pub use options::default_options;
pub use outcome::{Failure, Outputs, render_outputs};
pub use sandbox::{Limits, Pool, RunConfig, Sandbox};
pub use secrets::{Credentials, Secret};

/// Host bindings for the `usage-sync` world in `wit/`.
pub mod bindings {
    #![allow(missing_docs)] // generated from wit/usage-sync.wit, whose docs they carry

    wasmtime::component::bindgen!({
        path: "../wit",
        world: "usage-sync",
        exports: { default: async },
    });

    pub use exports::usage_sync::workflow::workflow::{
        Cell, CellStatus, CustomerUsage, Delivery, Endpoints, Inputs, Interval, InvoiceCheck,
        InvoicePage, InvoiceReconciliation, LedgerMark, ListedInvoice, ListedInvoices, ListedItem,
        ListedLine, ListedSubscription, Listing, Meter, MeterEvent, Options, Outputs,
        PlannedRequest, Reconciliation, Rounding, Source, Step, StepFailure, StripeRead,
        SubscriptionPage, Unbilled, UsageQuery, Verification, WorkflowError,
    };
}

/// The workflow component built with this host (see `build.rs`), as it ships
/// for any WASI host: the workflow's exports and `wasi:http/incoming-handler`
/// (`POST /run`). `usage-sync serve` runs it.
pub const DEFAULT_COMPONENT: &[u8] = include_bytes!(env!("USAGE_SYNC_COMPONENT"));

/// The same workflow built without the HTTP entry point, which `run`, `sync`,
/// `reconcile`, `close-periods` and `demo` never call: 14 fewer imports to
/// link, so each of a sync's thousands of instances starts about 9 % sooner
/// (BENCHMARKS.md).
pub const WORKFLOW_COMPONENT: &[u8] = include_bytes!(env!("USAGE_SYNC_WORKFLOW_COMPONENT"));
