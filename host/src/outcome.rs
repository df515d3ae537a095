//! What a run prints and its exit status.
//!
//! stdout carries exactly one JSON object: the outputs, or `{"error": {...}}`
//! (both built by `usage-sync-report`, which the component's own HTTP entry
//! point shares). stderr carries short human lines. Keys are scrubbed from both.

pub use usage_sync_report::{Failure, Outputs, event_json, render_outputs, summary};

use crate::egress::Exchange;
use crate::secrets::Credentials;
use std::sync::Arc;

/// Exit statuses, documented in README.
pub mod exit {
    /// Everything was recorded, or already was.
    pub const OK: u8 = 0;
    /// Something broke inside usage-sync itself.
    pub const INTERNAL: u8 = 1;
    /// Bad input or configuration: nothing was sent.
    pub const BAD_INPUT: u8 = 2;
    /// A provider refused or failed a step.
    pub const PROVIDER: u8 = 3;
    /// The sandbox refused a request or a limit was hit.
    pub const SANDBOX: u8 = 4;
    /// Stripe already held another value for an interval: nothing was written
    /// for it (the other intervals were synced). Correct it, do not retry.
    pub const DRIFT: u8 = 5;
    /// `sync` stopped by Ctrl-C before every row was sent.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit status of a run that produced outputs: drift is reported, never written.
pub fn outputs_exit_code(outputs: &Outputs) -> u8 {
    if outputs.drifted().next().is_some() || outputs.closed().next().is_some() {
        exit::DRIFT
    } else {
        exit::OK
    }
}

/// The exit status a failure ends the process with.
pub trait ExitStatus {
    /// The status to exit with.
    fn exit_code(&self) -> u8;
}

impl ExitStatus for Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => exit::BAD_INPUT,
            Failure::Provider(_) => exit::PROVIDER,
            Failure::Sandbox(..) => exit::SANDBOX,
            Failure::Internal(_) => exit::INTERNAL,
        }
    }
}

/// A guest's error as the failure it reports.
pub fn guest_failure(error: crate::bindings::WorkflowError) -> Failure {
    Failure::from(usage_sync_report::WorkflowError::from(error))
}

/// A progress line on stderr per request.
pub fn progress(credentials: Arc<Credentials>) -> impl Fn(&Exchange) + Send + Sync {
    move |x: &Exchange| {
        let result = match &x.result {
            Ok(status) => status.to_string(),
            Err(e) => format!("no response ({e})"),
        };
        let status = x.result.as_ref().ok().copied();
        tracing::info!(
            provider = x.provider.name(),
            route = x.route,
            customer = x.customer.as_str(),
            attempt = x.attempt,
            method = %x.method,
            status,
            duration_ms = x.elapsed.as_millis() as u64,
            "{}",
            credentials.redact(&format!(
                "usage-sync: {} {} {} -> {} in {} ms",
                x.provider.name(),
                x.method,
                x.url,
                result,
                x.elapsed.as_millis()
            ))
        );
    }
}

/// Prints a failure (stderr line, stdout JSON) and returns its exit status.
pub fn print_failure(failure: &Failure, credentials: Option<&Credentials>) -> u8 {
    let scrub = |text: String| match credentials {
        Some(c) => c.redact(&text),
        None => text,
    };
    let detail = failure.to_json();
    let error = &detail["error"];
    tracing::error!(
        kind = error["kind"].as_str().unwrap_or_default(),
        step = error["step"].as_str(),
        status = error["status"].as_u64(),
        delivery = error["delivery"].as_str(),
        attempts = error["attempts"].as_u64(),
        exit = failure.exit_code(),
        "usage-sync: {}",
        scrub(failure.message())
    );
    println!("{}", scrub(failure.render()));
    failure.exit_code()
}
