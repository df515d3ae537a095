//! The HTTP boundary: every request the guest makes passes through [`hook`],
//! which asks the [`policy`] (origins, and the [`routes`] the workflow's
//! Arazzo document declares), attaches each [`provider`]'s key, and sends
//! over the [`transport`]'s pooled connections. How much runs at once adapts
//! to how the providers answer ([`concurrency`]); Stripe's requests keep to
//! the account's limits ([`pace`]).
//!
//! Nothing here knows the sandbox or the commands: they call in, never back.

pub mod concurrency;
pub mod hook;
pub mod pace;
pub mod policy;
pub mod provider;
pub mod routes;
pub mod transport;

pub use concurrency::Concurrency;
pub use hook::{Caps, Egress, Exchange, Observer, RunLog};
pub use pace::StripePace;
