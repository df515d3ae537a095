//! The two providers the workflow talks to, and how each one's key travels.

use crate::secrets::Credentials;
use http::header::{HeaderName, HeaderValue};
use usage_sync_report::keys;

/// One of the two providers the workflow talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Amberflo, queried for usage.
    Amberflo,
    /// Stripe, where meter events are recorded.
    Stripe,
}

impl Provider {
    /// The provider's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Amberflo => "Amberflo",
            Provider::Stripe => "Stripe",
        }
    }

    /// The header that carries this provider's key.
    pub fn credential_header(self) -> HeaderName {
        match self {
            Provider::Amberflo => HeaderName::from_static(keys::AMBERFLO_HEADER),
            Provider::Stripe => HeaderName::from_static(keys::STRIPE_HEADER),
        }
    }

    /// The header value carrying this provider's key (marked sensitive).
    pub fn credential(self, credentials: &Credentials) -> HeaderValue {
        let value = match self {
            Provider::Amberflo => credentials.amberflo.expose().to_string(),
            Provider::Stripe => keys::stripe_bearer(credentials.stripe.expose()),
        };
        let mut value = HeaderValue::from_str(&value).expect("Secret::new checked the characters");
        value.set_sensitive(true);
        value
    }
}
