//! The usage-sync host: runs the workflow component in a wasmtime sandbox.
//!
//! A request flows one way (ARCHITECTURE.md has the whole map):
//!
//! ```text
//! cli ──▶ sandbox ──▶ component (wit/usage-sync.wit) ──▶ egress hook ──▶ provider
//!          │ limits                                         │ policy, secrets
//!          └ verdict                                        └ pace, caps, scrubbing
//! ```
//!
//! - [`cli`] and [`demo`]: the `usage-sync` command line (its arguments in
//!   `args`; `serve` apart);
//! - [`reconcile`]: every row's intervals, Amberflo against Stripe, read-only;
//! - [`sync`]: many rows at once, with [`mapping`] (the rows), [`journal`]
//!   (what is done), [`progress`] (stderr) and [`interrupt`] (Ctrl-C);
//! - [`inputs`] and [`options`]: the workflow's inputs from a file and flags,
//!   and the options a run leaves out;
//! - [`sandbox`]: the engine, the component, a fresh instance per run (`verdict`:
//!   what a run's end means), with [`limits`], [`cache`] (compiled components
//!   on disk) and [`guest_stderr`];
//! - [`egress`]: the HTTP boundary that enforces the [`policy`](egress::policy) (origins, and
//!   the [`routes`](egress::routes) the workflow's Arazzo document declares), attaches each
//!   [`provider`](egress::provider)'s key ([`secrets`]), sends over pooled connections
//!   ([`transport`](egress::transport)) and scrubs what comes back;
//! - [`outcome`]: what a run prints and its exit status; [`metrics`]: the
//!   same in the Prometheus text format; [`logging`]: every stderr line.

pub mod cli;
mod commands;
pub mod egress;
pub mod inputs;
pub mod interrupt;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod options;
pub mod outcome;
pub mod progress;
pub mod sandbox;
pub mod secrets;

/// Host bindings for the `usage-sync` world in `wit/`.
pub mod bindings {
    #![allow(missing_docs)] // generated from wit/usage-sync.wit, whose docs they carry

    wasmtime::component::bindgen!({
        path: "../wit",
        world: "usage-sync",
        exports: { default: async },
        // For `usage_sync_report::from_wit`.
        additional_derives: [serde::Serialize],
    });

    pub use exports::usage_sync::workflow::workflow::{
        Cell, CellStatus, CustomerUsage, Delivery, Endpoints, Inputs, Interval, Meter, MeterEvent,
        Options, Outputs, PlannedRequest, Reconciliation, Rounding, Step, StepFailure, StripeRead,
        UsageQuery, Verification, WorkflowError,
    };
}

/// The workflow component built with this host (see `build.rs`).
pub const DEFAULT_COMPONENT: &[u8] = include_bytes!(env!("USAGE_SYNC_COMPONENT"));
