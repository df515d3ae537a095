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
//! once per window. It never exceeds the ceiling (`--concurrency`) and never
//! falls below one.
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
    /// A congestion signal already halved the limit in this window.
    halved: bool,
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
            halved: false,
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
        self.halved = false;
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

    /// The provider pushed back (429, 503, a timeout): half as much at once,
    /// once per window (the rest of a burst is the same signal). Returns the
    /// new limit.
    pub fn congested(&mut self) -> usize {
        if !self.halved {
            self.halved = true;
            self.slow_start = false;
            self.limit = (self.limit / 2).max(1);
            self.window.clear();
        }
        self.limit
    }
}

/// The limit shared by every run of a command: acquire a [`Slot`] per unit
/// of work.
#[derive(Debug)]
pub struct Concurrency {
    permits: Semaphore,
    state: Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    control: Control,
    /// Slots handed out or free: the semaphore's permits plus those held.
    granted: usize,
    /// Slots to retire as they come back, after the limit fell.
    debt: usize,
    /// The highest the limit reached, for the log.
    peak: usize,
}

impl Concurrency {
    /// Starts at `initial` at once, never more than `ceiling`.
    pub fn new(initial: usize, ceiling: usize) -> Concurrency {
        let control = Control::new(initial, ceiling);
        let limit = control.limit();
        Concurrency {
            permits: Semaphore::new(limit),
            state: Mutex::new(Shared {
                control,
                granted: limit,
                debt: 0,
                peak: limit,
            }),
        }
    }

    /// Waits for a place.
    pub async fn acquire(&self) -> Slot<'_> {
        // The semaphore is never closed.
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        Slot {
            owner: self,
            started: Instant::now(),
        }
    }

    /// The provider pushed back.
    pub fn congested(&self) {
        let mut state = self.lock();
        let limit = state.control.congested();
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

    /// Brings the slots granted to `limit`: new ones at once, fewer by
    /// retiring free ones now and held ones as they come back.
    fn steer(&self, state: &mut Shared, limit: usize) {
        state.peak = state.peak.max(limit);
        let effective = state.granted - state.debt;
        if effective < limit {
            let more = limit - effective;
            let repaid = more.min(state.debt);
            state.debt -= repaid;
            state.granted += more - repaid;
            self.permits.add_permits(more - repaid);
        } else if effective > limit {
            let mut excess = effective - limit;
            while excess > 0 {
                match self.permits.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                excess -= 1;
                state.granted -= 1;
            }
            state.debt += excess;
        }
    }

    fn release(&self, latency: Duration) {
        let mut state = self.lock();
        if state.debt > 0 {
            state.debt -= 1;
            state.granted -= 1;
        } else {
            self.permits.add_permits(1);
        }
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
    fn a_push_back_halves_once_per_window_and_never_below_one() {
        let mut control = Control::new(64, 256);
        assert_eq!(control.congested(), 32);
        assert_eq!(control.congested(), 32, "the same burst halves once");
        assert_eq!(
            window(&mut control, ms(50)),
            33,
            "additive after a push-back"
        );
        assert_eq!(control.congested(), 16);
        let mut one = Control::new(1, 1);
        assert_eq!(one.congested(), 1);
        assert_eq!(window(&mut one, ms(5)), 1);
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
        assert!(concurrency.permits.try_acquire().is_err(), "two at once");
        // A push-back to 1: one of the held slots is retired on return.
        concurrency.congested();
        assert_eq!(concurrency.limit(), 1);
        drop(a);
        assert!(
            concurrency.permits.try_acquire().is_err(),
            "b still holds the one"
        );
        drop(b);
        let c = concurrency.acquire().await;
        assert!(concurrency.permits.try_acquire().is_err(), "one at once");
        drop(c);
        // Fast completions grow it again, additively after a push-back.
        for _ in 0..MIN_WINDOW {
            drop(concurrency.acquire().await);
        }
        assert_eq!(concurrency.limit(), 2);
        let held: Vec<_> = vec![concurrency.acquire().await, concurrency.acquire().await];
        assert!(concurrency.permits.try_acquire().is_err(), "two at once");
        drop(held);
    }
}
