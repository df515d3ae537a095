//! The contract the usage-sync host and its component share, in one crate both
//! depend on so the two cannot drift apart: what a caller may leave out, the
//! providers' keys, the inputs JSON, the mirror of `wit/usage-sync.wit`, and
//! what a run prints, the same from every host.
//!
//! - [`defaults`]: what `usage-sync run` and `POST /run` fill in alike.
//! - [`keys`]: where the keys come from, the headers they travel in, and the
//!   constant-time bearer check of `POST /run`'s token.
//! - [`RunRequest`]: the inputs JSON of `run --inputs` and `POST /run`.
//! - the mirror types ([`Outputs`], [`WorkflowError`], ...): the component's
//!   answer as this crate reads it. Each side moves its generated bindings
//!   into them, so this crate needs neither wasmtime nor wit-bindgen.
//! - [`render_outputs`] and [`summary`]: the outputs object (`usage-sync run`'s
//!   stdout, the component's `POST /run` answer) and one line for a person.
//! - [`Failure`]: the error object `{"error": {...}}` and its one line.
//! - [`civil`], [`rfc3339`] and [`hex`]: the UTC dates, timestamps and
//!   lowercase hex both sides write.
//! - [`json`]: JSON text read ([`json::parse`]) and written ([`json::Out`])
//!   without serde's derives, for the component's size.

// The component builds this crate without its `serde` feature, and then
// without `std`: only `core` and `alloc`, so `std`'s runtime (its panic and
// stderr machinery, wasi-libc's stdio) is not linked into the component.
#![cfg_attr(not(any(feature = "serde", test)), no_std)]

extern crate alloc;

pub mod defaults;
pub mod keys;

mod civil;
mod failure;
mod hex;
pub mod json;
mod render;
mod request;
mod wit;

mod prelude {
    //! What `std`'s prelude holds beyond `core`'s, from `alloc`.
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
}

pub use civil::{civil, rfc3339};
pub use failure::Failure;
pub use hex::hex;
pub use render::{event_json, render_outputs, summary};
pub use request::{Rounding, RunRequest, Scalar};
#[doc(hidden)]
pub use wit::mirror_each;
pub use wit::{
    Delivery, Interval, LedgerMark, Meter, MeterEvent, Outputs, PlannedRequest, Step, StepFailure,
    StripeRead, Unbilled, Verification, WorkflowError,
};
