//! How much work runs at once against the providers: a limit that finds the
//! ceiling instead of being told it (additive increase, multiplicative
//! decrease, as TCP and Envoy's adaptive concurrency do).
//!
//! Each unit of work (a row's run, an Amberflo query) holds a [`Slot`]; the
//! time it held it is the latency the limit watches. Every window of as many
//! completions as the limit, the window's median latency is compared with the
//! lowest seen: while it holds (within [`TOLERANCE`]) more at once means more
//! done per second (Little's law), so the limit grows, doubling at first (slow
//! start), then by one. When it rises, the extra work only queues (at the
//! pace, the server or the CPU): the limit stops growing, and shrinks a
//! little past twice the lowest. A 429, a 503 or a timeout halves it at once,
//! once per burst (a push-back halves only if its request left after the
//! last halving). It never exceeds the ceiling (`--concurrency`) and never
//! falls below one.
//!
//! The egress hook holds a [`RequestSlot`] for each request, two per unit
//! the limit allows, so the retries of work that holds its slot through a
//! push-back do not go out above the limit.
//!
//! The decisions are in [`Control`], a plain state machine the tests drive
//! with made-up latencies; [`Concurrency`] wraps it around a semaphore.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A window's median latency within this factor of the lowest seen "holds".
pub const TOLERANCE: f64 = 1.5;
/// Past this factor of the lowest seen, the limit shrinks by [`EASE`].
const QUEUEING: f64 = 2.0;
/// The shrink factor when latency shows queueing (not congestion).
const EASE: f64 = 0.9;
/// The most requests a unit of work sends at once: a row's summaries read
/// goes beside its subscriptions read. Requests in flight are held to this
/// many per unit the limit allows, so they never exceed what the limit's
/// units would send, and do not slow the units down while no push-back came.
pub const REQUESTS_PER_UNIT: usize = 2;
/// The fewest completions a window judges on, so a limit of 1 or 2 is not
/// steered by a single slow run.
const MIN_WINDOW: usize = 8;

/// The limit's state machine: no clock, no tasks; fed completions and
/// congestion, it says what the limit is.
#[derive(Debug)]
pub struct Control {
    ceiling: usize,
    limit: usize,
    slow_start: bool,
    /// The lowest window median seen: the latency with no queue.
    best: Option<Duration>,
    window: Vec<Duration>,
    /// Halvings so far: a push-back halves only if its request left after
    /// the last one (the rest of a burst is the same signal, as TCP halves
    /// once per round trip).
    round: u64,
}

impl Control {
    /// Starts at `initial` (at most `ceiling`, at least 1).
    pub fn new(initial: usize, ceiling: usize) -> Control {
        let ceiling = ceiling.max(1);
        Control {
            ceiling,
            limit: initial.clamp(1, ceiling),
            slow_start: true,
            best: None,
            window: Vec::new(),
            round: 0,
        }
    }

    /// Work allowed at once now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A unit of work finished after `latency`; at a window's end the limit
    /// may move. Returns the new limit.
    pub fn completed(&mut self, latency: Duration) -> usize {
        self.window.push(latency);
        if self.window.len() < self.limit.max(MIN_WINDOW) {
            return self.limit;
        }
        self.window.sort_unstable();
        let median = self.window[self.window.len() / 2];
        self.window.clear();
        let best = *self.best.get_or_insert(median);
        if median < best {
            self.best = Some(median);
        }
        let ratio = median.as_secs_f64() / best.as_secs_f64().max(1e-9);
        if ratio <= TOLERANCE {
            self.limit = match self.slow_start {
                true => self.limit.saturating_mul(2),
                false => self.limit + 1,
            }
            .min(self.ceiling);
        } else {
            self.slow_start = false;
            if ratio > QUEUEING {
                self.limit = ((self.limit as f64 * EASE) as usize).max(1);
            }
        }
        self.limit
    }

    /// Whether the limit says something learned: a window of work was judged
    /// (it set the lowest latency) or the provider pushed back (it ended the
    /// slow start), not only where the limit started.
    pub fn judged(&self) -> bool {
        self.best.is_some() || !self.slow_start
    }

    /// The round a request leaving now belongs to.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The provider pushed back (429, 503, a timeout) on a request that left
    /// in `round`: half as much at once, unless the limit already halved
    /// since that request left. Returns the new limit.
    pub fn congested(&mut self, round: u64) -> usize {
        if round == self.round {
            self.round += 1;
            self.slow_start = false;
            self.limit = (self.limit / 2).max(1);
            self.window.clear();
        }
        self.limit
    }
}

/// The limit shared by every run of a command: acquire a [`Slot`] per unit
/// of work, and the egress hook a [`RequestSlot`] per request it sends.
///
/// Both follow the same limit ([`REQUESTS_PER_UNIT`] requests a unit). A
/// unit of work holds its slot through its retries, so after a push-back the
/// work already running stays above the new limit until it ends; its
/// requests do not: the retries of a refused burst go out within the new
/// limit instead of all together again.
#[derive(Debug)]
pub struct Concurrency {
    work: Semaphore,
    requests: Semaphore,
    state: Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    control: Control,
    work: Places,
    requests: Places,
    /// The highest the limit reached, for the log.
    peak: usize,
}

/// A semaphore's bookkeeping under a limit that moves.
#[derive(Debug)]
struct Places {
    /// Places handed out or free: the semaphore's permits plus those held.
    granted: usize,
    /// Places to retire as they come back, after the limit fell.
    debt: usize,
}

impl Places {
    /// Brings the places granted to `limit`: new ones at once, fewer by
    /// retiring free ones now and held ones as they come back.
    fn fit(&mut self, permits: &Semaphore, limit: usize) {
        let effective = self.granted - self.debt;
        if effective < limit {
            let more = limit - effective;
            let repaid = more.min(self.debt);
            self.debt -= repaid;
            self.granted += more - repaid;
            permits.add_permits(more - repaid);
        } else if effective > limit {
            let mut excess = effective - limit;
            while excess > 0 {
                match permits.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                excess -= 1;
                self.granted -= 1;
            }
            self.debt += excess;
        }
    }

    /// A held place comes back: retired if the limit fell, else free again.
    fn give_back(&mut self, permits: &Semaphore) {
        if self.debt > 0 {
            self.debt -= 1;
            self.granted -= 1;
        } else {
            permits.add_permits(1);
        }
    }
}

/// Takes a permit for good; the owner's bookkeeping gives it back.
async fn take(permits: &Semaphore) {
    // The semaphores are never closed.
    if let Ok(permit) = permits.acquire().await {
        permit.forget();
    }
}

impl Concurrency {
    /// Starts at `initial` at once, never more than `ceiling`.
    pub fn new(initial: usize, ceiling: usize) -> Concurrency {
        let control = Control::new(initial, ceiling);
        let limit = control.limit();
        let places = |granted| Places { granted, debt: 0 };
        Concurrency {
            work: Semaphore::new(limit),
            requests: Semaphore::new(limit * REQUESTS_PER_UNIT),
            state: Mutex::new(Shared {
                control,
                work: places(limit),
                requests: places(limit * REQUESTS_PER_UNIT),
                peak: limit,
            }),
        }
    }

    /// Waits for a place for a unit of work.
    pub async fn acquire(&self) -> Slot<'_> {
        take(&self.work).await;
        Slot {
            owner: self,
            started: Instant::now(),
        }
    }

    /// Waits for a place for one request on its way to a provider.
    pub async fn request(&self) -> RequestSlot<'_> {
        take(&self.requests).await;
        RequestSlot {
            owner: self,
            round: self.lock().control.round(),
        }
    }

    /// The provider pushed back on a request that left in `round`.
    fn congested(&self, round: u64) {
        let mut state = self.lock();
        let limit = state.control.congested(round);
        self.steer(&mut state, limit);
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.lock().control.limit()
    }

    /// The most it may ever allow at once (`--concurrency`).
    pub fn ceiling(&self) -> usize {
        self.lock().control.ceiling
    }

    /// The highest the limit reached.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Whether the limit now says something learned (a window of work was
    /// judged, or the provider pushed back), not only where it started.
    pub fn judged(&self) -> bool {
        self.lock().control.judged()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn steer(&self, state: &mut Shared, limit: usize) {
        state.peak = state.peak.max(limit);
        state.work.fit(&self.work, limit);
        state
            .requests
            .fit(&self.requests, limit.saturating_mul(REQUESTS_PER_UNIT));
    }

    fn release(&self, latency: Duration) {
        let mut state = self.lock();
        state.work.give_back(&self.work);
        let limit = state.control.completed(latency);
        self.steer(&mut state, limit);
    }
}

/// A place among the work running at once, given back on drop with the time
/// it was held.
#[derive(Debug)]
pub struct Slot<'a> {
    owner: &'a Concurrency,
    started: Instant,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.owner.release(self.started.elapsed());
    }
}

/// A place among the requests in flight, given back on drop.
#[derive(Debug)]
pub struct RequestSlot<'a> {
    owner: &'a Concurrency,
    round: u64,
}

impl RequestSlot<'_> {
    /// The provider pushed back on this request (429, 503, a timeout).
    pub fn pushed_back(&self) {
        self.owner.congested(self.round);
    }
}

impl Drop for RequestSlot<'_> {
    fn drop(&mut self) {
        let owner = self.owner;
        owner.lock().requests.give_back(&owner.requests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds one window of `latency` completions.
    fn window(control: &mut Control, latency: Duration) -> usize {
        let n = control.limit().max(MIN_WINDOW);
        (0..n)
            .map(|_| control.completed(latency))
            .last()
            .unwrap_or(0)
    }

    #[test]
    fn it_doubles_while_latency_holds_up_to_the_ceiling() {
        let mut control = Control::new(16, 256);
        assert_eq!(window(&mut control, ms(50)), 32);
        assert_eq!(window(&mut control, ms(52)), 64);
        assert_eq!(window(&mut control, ms(55)), 128);
        assert_eq!(window(&mut control, ms(50)), 256);
        assert_eq!(window(&mut control, ms(50)), 256, "never past the ceiling");
    }

    #[test]
    fn rising_latency_ends_slow_start_then_growth_is_by_one() {
        let mut control = Control::new(16, 1000);
        assert_eq!(window(&mut control, ms(50)), 32);
        // Queueing: more at once only waits longer.
        assert_eq!(window(&mut control, ms(90)), 32);
        assert_eq!(window(&mut control, ms(50)), 33);
        assert_eq!(window(&mut control, ms(50)), 34);
    }

    #[test]
    fn latency_past_twice_the_lowest_eases_the_limit() {
        let mut control = Control::new(100, 1000);
        assert_eq!(window(&mut control, ms(10)), 200);
        assert_eq!(window(&mut control, ms(30)), 180);
        assert_eq!(window(&mut control, ms(30)), 162);
    }

    #[test]
    fn a_push_back_halves_once_per_burst_and_never_below_one() {
        let mut control = Control::new(64, 256);
        let burst = control.round();
        assert_eq!(control.congested(burst), 32);
        assert_eq!(control.congested(burst), 32, "the same burst halves once");
        assert_eq!(
            window(&mut control, ms(50)),
            33,
            "additive after a push-back"
        );
        assert_eq!(
            control.congested(burst),
            33,
            "a request that left before the halving is the same burst"
        );
        assert_eq!(control.congested(control.round()), 16);
        // Sent after that halving: a new signal, however soon.
        assert_eq!(control.congested(control.round()), 8);
        let mut one = Control::new(1, 1);
        assert_eq!(one.congested(one.round()), 1);
        assert_eq!(window(&mut one, ms(5)), 1);
    }

    #[tokio::test]
    async fn requests_follow_the_limit_even_while_the_work_holds_its_slots() {
        let concurrency = Concurrency::new(4, 8);
        let work: Vec<_> = vec![
            concurrency.acquire().await,
            concurrency.acquire().await,
            concurrency.acquire().await,
            concurrency.acquire().await,
        ];
        // A push-back: the four keep their slots (they are retrying), but
        // only what two units send goes out at once.
        concurrency.request().await.pushed_back();
        assert_eq!(concurrency.limit(), 2);
        let mut held = Vec::new();
        for _ in 0..2 * REQUESTS_PER_UNIT {
            held.push(concurrency.request().await);
        }
        assert!(concurrency.requests.try_acquire().is_err(), "four at once");
        held.pop();
        held.push(concurrency.request().await);
        assert!(concurrency.requests.try_acquire().is_err(), "still four");
        drop(held);
        drop(work);
    }

    #[test]
    fn a_window_is_judged_on_its_median_not_one_outlier() {
        let mut control = Control::new(16, 256);
        for i in 0..16 {
            control.completed(if i == 0 { ms(5000) } else { ms(50) });
        }
        assert_eq!(control.limit(), 32);
    }

    #[tokio::test]
    async fn slots_follow_the_limit_up_and_down() {
        let concurrency = Concurrency::new(2, 8);
        let a = concurrency.acquire().await;
        let b = concurrency.acquire().await;
        assert!(concurrency.work.try_acquire().is_err(), "two at once");
        // A push-back to 1: one of the held slots is retired on return.
        concurrency.request().await.pushed_back();
        assert_eq!(concurrency.limit(), 1);
        drop(a);
        assert!(
            concurrency.work.try_acquire().is_err(),
            "b still holds the one"
        );
        drop(b);
        let c = concurrency.acquire().await;
        assert!(concurrency.work.try_acquire().is_err(), "one at once");
        drop(c);
        // Fast completions grow it again, additively after a push-back.
        for _ in 0..MIN_WINDOW {
            drop(concurrency.acquire().await);
        }
        assert_eq!(concurrency.limit(), 2);
        let held: Vec<_> = vec![concurrency.acquire().await, concurrency.acquire().await];
        assert!(concurrency.work.try_acquire().is_err(), "two at once");
        drop(held);
    }
}
