//! The usage-sync host: runs the workflow component in a wasmtime sandbox.
//!
//! - [`policy`]: which hosts the guest may reach and which key goes to which host;
//! - [`sandbox`]: the engine, the component, and what a run's result means;
//! - [`limits`]: what one run may use (memory, time, requests, response sizes);
//! - [`egress`]: the HTTP boundary that enforces the policy, attaches keys and
//!   scrubs what comes back;
//! - [`secrets`]: API keys, which never enter the guest and are scrubbed from output;
//! - [`inputs`]: the workflow inputs from a JSON file and flags;
//! - [`options`]: the workflow options a run leaves out, filled in;
//! - [`outcome`]: what a run prints and its exit status;
//! - [`sync`]: many rows at once, with [`mapping`] (the rows), [`journal`]
//!   (what is done), [`progress`] (stderr) and [`interrupt`] (Ctrl-C);
//! - [`cli`] (its arguments in `args`, `serve` apart) and [`demo`]: the
//!   `usage-sync` command line.

mod args;
pub mod cache;
pub mod cli;
pub mod demo;
pub mod egress;
pub mod guest_stderr;
pub mod inputs;
pub mod interrupt;
pub mod journal;
pub mod limits;
pub mod mapping;
pub mod options;
pub mod outcome;
pub mod policy;
pub mod progress;
pub mod sandbox;
pub mod secrets;
mod serve;
pub mod sync;

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
        CustomerUsage, Delivery, Endpoints, Inputs, Interval, Meter, MeterEvent, Options, Outputs,
        PlannedRequest, Rounding, Step, StepFailure, StripeRead, UsageQuery, Verification,
        WorkflowError,
    };
}

/// The workflow component built with this host (see `build.rs`).
pub const DEFAULT_COMPONENT: &[u8] = include_bytes!(env!("USAGE_SYNC_COMPONENT"));
