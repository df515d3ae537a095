//! Local Amberflo and Stripe servers for the demo and the tests.
//!
//! Each is a real HTTP/1.1 server on 127.0.0.1 that checks auth, validates the
//! official request shapes and answers with the official response and error
//! bodies (see `specs/README.md`). Every request is recorded exactly as
//! it arrived, so tests can assert the bytes on the wire.

mod amberflo;
mod form;
mod latency;
mod server;
mod stripe;
mod tls;

pub use amberflo::{Amberflo, UsageRecord};
pub use latency::LatencyProxy;
pub use server::{Fault, MAX_STREAMS, Recorded};
pub use stripe::{
    DEDUPE_WINDOW, DEFAULT_GRACE, Formula, Invoice, MeterEvent, MeterSpec, Stripe, SubscriptionSpec,
};
pub use tls::{Presented, TestCa};

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
