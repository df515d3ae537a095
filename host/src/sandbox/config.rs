//! Everything a run needs besides its inputs, built once per command and
//! shared by every run the command makes.

use crate::bindings::{Endpoints, Options};
use crate::egress::policy::Policy;
use crate::egress::transport::{Transport, Trust, Versions};
use crate::egress::{Concurrency, Observer, StripePace};
use crate::sandbox::Limits;
use crate::secrets::Credentials;
use std::sync::Arc;

/// Everything a run needs besides the inputs.
#[derive(Clone)]
pub struct RunConfig {
    /// Where the guest may go, and with which key.
    pub policy: Arc<Policy>,
    /// The providers' base URLs, as the guest sees them.
    pub endpoints: Endpoints,
    /// The workflow's options.
    pub options: Options,
    /// The keys the host attaches.
    pub credentials: Arc<Credentials>,
    /// What one run may use.
    pub limits: Limits,
    /// Called for each request as it completes (progress lines).
    pub observer: Option<Observer>,
    /// Shared pace of Stripe requests, for many runs at once.
    pub stripe_pace: Option<Arc<StripePace>>,
    /// Told of every push-back (429, 503, a timeout), for many runs at once.
    pub concurrency: Option<Arc<Concurrency>>,
    /// The pooled connections every run of this configuration shares.
    pub transport: Transport,
}

impl RunConfig {
    /// A run's configuration, with no progress observer and no shared pace.
    pub fn new(
        policy: Policy,
        endpoints: Endpoints,
        options: Options,
        credentials: Arc<Credentials>,
        limits: Limits,
    ) -> RunConfig {
        RunConfig {
            policy: Arc::new(policy),
            endpoints,
            options,
            credentials,
            limits,
            observer: None,
            stripe_pace: None,
            concurrency: None,
            transport: Transport::new(
                &Trust::default(),
                Versions::default(),
                limits.request_timeout,
            )
            .expect("the built-in roots make a TLS configuration"),
        }
    }

    /// The same, with HTTPS trusting `trust` and offering `versions`.
    pub fn trusting(self, trust: &Trust, versions: Versions) -> Result<RunConfig, String> {
        let transport = Transport::new(trust, versions, self.limits.request_timeout)?;
        Ok(RunConfig { transport, ..self })
    }

    /// The same, with `observer` called for every request.
    pub fn observed(self, observer: Observer) -> RunConfig {
        RunConfig {
            observer: Some(observer),
            ..self
        }
    }

    /// The same, with Stripe requests paced by `pace` (shared by many runs).
    pub fn paced(self, pace: Arc<StripePace>) -> RunConfig {
        RunConfig {
            stripe_pace: Some(pace),
            ..self
        }
    }

    /// The same, telling `concurrency` of every push-back.
    pub fn adapting(self, concurrency: Arc<Concurrency>) -> RunConfig {
        RunConfig {
            concurrency: Some(concurrency),
            ..self
        }
    }
}
