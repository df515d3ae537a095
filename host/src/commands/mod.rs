//! One file per subcommand (as wasmtime's `src/commands/`): its clap
//! arguments, its checks and its preparation, then the work itself beside it.
//! The flag groups several commands share are declared once in [`flags`] and
//! flattened; [`prepare`] is the one way flags become a run's configuration.

pub(crate) mod batch;
pub(crate) mod close_periods;
#[cfg(feature = "demo")]
pub(crate) mod demo;
pub(crate) mod flags;
pub(crate) mod ledger;
pub(crate) mod listing;
pub(crate) mod reconcile;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod sync;

use crate::bindings::Options;
use crate::outcome::{Failure, print_failure};
use crate::sandbox::{RunConfig, Sandbox};
use crate::secrets::Credentials;
use flags::{EndpointArgs, SandboxArgs};
use std::sync::Arc;

/// The keys from the environment (or files), checked against the mode the
/// operator expects; or the exit status of the report saying why not.
pub(crate) fn credentials(endpoints: &EndpointArgs) -> Result<Arc<Credentials>, u8> {
    use crate::secrets::{AMBERFLO_ENV, Mode, STRIPE_ENV};
    // Before the keys are known nothing can leak; after, everything printed is scrubbed.
    let credentials = Credentials::from_env().map(Arc::new).map_err(|e| {
        print_failure(
            &Failure::BadInput(format!(
                "{e}: set {AMBERFLO_ENV} and {STRIPE_ENV} (or {AMBERFLO_ENV}_FILE and {STRIPE_ENV}_FILE) in the environment"
            )),
            None,
        )
    })?;
    crate::logging::scrub_keys(&credentials);
    let name = |mode: Option<Mode>| match mode {
        Some(Mode::Live) => "a live-mode key",
        Some(Mode::Test) => "a test-mode key",
        None => "neither a live nor a test key",
    };
    if let Some(expected) = endpoints.expected_mode()
        && credentials.stripe_mode() != Some(expected)
    {
        let failure = Failure::BadInput(format!(
            "{STRIPE_ENV} is {}, but --expect-mode is {}",
            name(credentials.stripe_mode()),
            match expected {
                Mode::Live => "live",
                Mode::Test => "test",
            }
        ));
        return Err(print_failure(&failure, Some(&credentials)));
    }
    if credentials.is_full_live_key() {
        tracing::warn!(
            "usage-sync: warning: {STRIPE_ENV} is a full live secret key (sk_live_), which can do anything on the account; a restricted key (rk_live_) with write access to meter events and read access to meters is enough"
        );
    }
    Ok(credentials)
}

/// A run's configuration and its sandbox, from the shared flags, checked in
/// this order: endpoints, limits, `options`, trusted CAs, then the component
/// (compiled last: the slowest step waits for every cheap check). `pool`
/// preallocates that many instance slots for runs at once; `built_in` is the
/// component run when `--component` names none.
pub(crate) fn prepare(
    endpoints: &EndpointArgs,
    sandbox: &SandboxArgs,
    options: impl FnOnce() -> Result<Options, Failure>,
    credentials: Arc<Credentials>,
    pool: Option<usize>,
    built_in: &'static [u8],
) -> Result<(Sandbox, RunConfig), Failure> {
    let (policy, resolved) = endpoints.resolve()?;
    let limits = sandbox.limits()?;
    let config = RunConfig::new(policy, resolved, options()?, credentials, limits)
        .trusting(&endpoints.trust()?, endpoints.versions())
        .map_err(Failure::BadInput)?;
    Ok((sandbox.sandbox(pool, &limits, built_in)?, config))
}
