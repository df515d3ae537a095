//! The wasmtime sandbox: one engine, the component, a fresh instance per run
//! under the run's [`limits`], and what a run's end means ([`verdict`]).
//!
//! The guest gets wasi:http outgoing, clocks, random and stderr. It gets no
//! environment, no arguments, no files and no sockets; its stdout is discarded
//! so it cannot corrupt the host's JSON output. The HTTP boundary is
//! [`crate::egress`]; the sandbox only hands it each run's policy and keys.

pub mod cache;
pub mod config;
mod engine;
mod exports;
pub mod guest_stderr;
pub mod limits;
pub mod pool;
pub(crate) mod verdict;

pub use config::RunConfig;
pub use engine::Sandbox;
pub(crate) use engine::{RunState, take_log};
pub use limits::Limits;
pub use pool::Pool;
