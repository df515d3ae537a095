//! What a usage-sync run prints, the same from every host: the outputs object
//! (`usage-sync run`'s stdout, the component's `POST /run` answer) and the error
//! object `{"error": {...}}`, plus one line for a person.
//!
//! It also holds the defaults both sides apply to what a caller leaves out
//! ([`defaults`]), so `usage-sync run` and `POST /run` cannot drift apart.
//!
//! The types mirror the records of `wit/usage-sync.wit`. Each side's generated
//! bindings derive `Serialize`, and [`from_wit`] carries a value across, so this
//! crate needs neither wasmtime nor wit-bindgen.

mod request;

pub use request::{Rounding, RunRequest, Scalar};

mod civil;
pub mod defaults;
mod failure;
mod hex;
pub mod keys;
mod render;
mod wit;

pub use civil::civil;
pub use failure::Failure;
pub use hex::hex;
pub use render::{EventJson, render_outputs, summary};
pub use wit::{
    Delivery, Interval, Meter, MeterEvent, Outputs, PlannedRequest, Step, StepFailure, StripeRead,
    Verification, WorkflowError, from_wit,
};
