//! The pace of Stripe requests across the runs of a sync. Stripe's limits are
//! the account's, so one pace serves every row (and shards divide it).
//!
//! Stripe has two limits (`specs/README.md`, "Rate limits"): the basic limit,
//! which reads count against (100 operations a second live, 25 in test mode),
//! and, in live mode only, a separate limit of 1,000 meter-event calls a
//! second. In test mode and sandboxes meter events count against the basic
//! limit. [`StripePace`] keeps one pace per limit the key's mode has, so a
//! live backfill's writes do not wait behind its reads, and a test key's
//! writes still share its one budget.

use crate::egress::routes::Route;
use crate::secrets::Mode;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Requests at a steady pace, shared by concurrent runs. A 429 slows every
/// request of this pace down for a second.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// A pace of `rate` requests per second (positive).
    pub fn per_second(rate: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Takes the next free slot for a request asking at `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (*next).max(now);
        *next = slot + self.interval;
        slot
    }

    /// After a 429 at `now`: no request of this pace for a second.
    pub fn back_off(&self, now: Instant) {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        *next = (*next).max(now + Duration::from_secs(1));
    }
}

/// The paces of Stripe's limits, as the key's mode has them.
pub struct StripePace {
    basic: RateLimiter,
    /// Live mode's own limit for meter events; None where they count against
    /// the basic limit (test mode, or a key whose mode is unknown).
    meter_events: Option<RateLimiter>,
}

impl StripePace {
    /// `basic` requests a second for everything, except that in live mode
    /// meter events go at `meter_events` a second, apart.
    pub fn new(mode: Option<Mode>, basic: f64, meter_events: f64) -> StripePace {
        StripePace {
            basic: RateLimiter::per_second(basic),
            meter_events: (mode == Some(Mode::Live)).then(|| RateLimiter::per_second(meter_events)),
        }
    }

    /// The time a read waits for at this pace, one after another: what a
    /// read the sync does not send saves it.
    pub fn read_interval(&self) -> Duration {
        self.basic.interval
    }

    /// Whether meter events have a pace of their own.
    pub fn meter_events_apart(&self) -> bool {
        self.meter_events.is_some()
    }

    /// The pace a call of `route` counts against.
    pub fn of(&self, route: &Route) -> &RateLimiter {
        match &self.meter_events {
            Some(own) if is_meter_event(route) => own,
            _ => &self.basic,
        }
    }
}

/// `POST /v1/billing/meter_events`, the only call live mode's meter-event
/// limit covers (adjustments and reads count against the basic limit).
fn is_meter_event(route: &Route) -> bool {
    route.method == "POST" && route.path == "/v1/billing/meter_events"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::provider::Provider;
    use crate::egress::routes::find;

    fn route(method: &str, path: &str) -> &'static Route {
        find(Provider::Stripe, method, path, None).expect("a declared route")
    }

    /// When each of `requests`, all asking at `now`, may leave: seconds
    /// after `now`.
    fn slots(pace: &StripePace, now: Instant, requests: &[&'static Route]) -> Vec<f64> {
        requests
            .iter()
            .map(|route| (pace.of(route).reserve(now) - now).as_secs_f64())
            .collect()
    }

    #[test]
    fn a_live_key_paces_meter_events_apart_from_reads() {
        let read = route("GET", "/v1/subscriptions");
        let summaries = route("GET", "/v1/billing/meters/mtr_1/event_summaries");
        let write = route("POST", "/v1/billing/meter_events");
        // A row of a backfill: two reads, then a write per day.
        let row = [read, summaries, write, write, write, write];
        // Each pace is made before `now`: it is free from then on.
        let live = StripePace::new(Some(Mode::Live), 1.0, 100.0);
        let test = StripePace::new(Some(Mode::Test), 1.0, 100.0);
        let unknown = StripePace::new(None, 1.0, 100.0);
        let now = Instant::now();
        assert!(live.meter_events_apart());
        assert_eq!(
            slots(&live, now, &row),
            [0.0, 1.0, 0.0, 0.01, 0.02, 0.03],
            "reads one a second, writes a hundred a second, neither waiting for the other's slots"
        );
        // A test key's writes count against its one budget.
        assert!(!test.meter_events_apart());
        assert_eq!(slots(&test, now, &row), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // So do those of a key whose mode cannot be told.
        assert_eq!(slots(&unknown, now, &row), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn a_429_slows_down_only_its_own_limit() {
        let read = route("GET", "/v1/subscriptions");
        let write = route("POST", "/v1/billing/meter_events");
        let live = StripePace::new(Some(Mode::Live), 10.0, 10.0);
        let test = StripePace::new(Some(Mode::Test), 10.0, 10.0);
        let now = Instant::now();
        live.of(write).back_off(now);
        assert_eq!(
            slots(&live, now, &[read, read, write, write]),
            [0.0, 0.1, 1.0, 1.1],
            "the reads go on while the writes wait out their 429"
        );
        test.of(write).back_off(now);
        assert_eq!(slots(&test, now, &[read, write]), [1.0, 1.1]);
    }
}
