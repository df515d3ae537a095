//! What the component takes from its host besides its arguments and the
//! providers' answers: the clocks, random bytes, its environment and stderr.
//!
//! In the component these call WASI through the `wasip2` bindings the HTTP
//! code already uses, not through `std`: `std` reaches the same interfaces
//! through wasi-libc at `@0.2.0`, a second set of core imports that every
//! instantiation links, with wasi-libc's stdio and environ code behind them.
//! Native builds (the unit tests) use `std`, since they have no WASI host.

use crate::prelude::*;

use core::fmt;
use core::time::Duration;

/// Now, Unix seconds.
pub fn now() -> i64 {
    #[cfg(target_arch = "wasm32")]
    let seconds = wasip2::clocks::wall_clock::now().seconds;
    #[cfg(not(target_arch = "wasm32"))]
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// A point on the monotonic clock, for measuring how long something took.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    #[cfg(target_arch = "wasm32")]
    at: u64,
    #[cfg(not(target_arch = "wasm32"))]
    at: std::time::Instant,
}

impl Started {
    /// The monotonic clock now.
    pub fn now() -> Started {
        #[cfg(target_arch = "wasm32")]
        let at = wasip2::clocks::monotonic_clock::now();
        #[cfg(not(target_arch = "wasm32"))]
        let at = std::time::Instant::now();
        Started { at }
    }

    /// Time since this point.
    pub fn elapsed(self) -> Duration {
        #[cfg(target_arch = "wasm32")]
        return Duration::from_nanos(
            wasip2::clocks::monotonic_clock::now().saturating_sub(self.at),
        );
        #[cfg(not(target_arch = "wasm32"))]
        return self.at.elapsed();
    }
}

/// Waits `wait`.
pub fn sleep(wait: Duration) {
    #[cfg(target_arch = "wasm32")]
    {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        wasip2::clocks::monotonic_clock::subscribe_duration(nanos).block();
    }
    #[cfg(not(target_arch = "wasm32"))]
    std::thread::sleep(wait);
}

/// Uniform in [0, 1), for backoff jitter.
pub fn jitter() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// 64 random bits.
pub fn random_u64() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wasip2::random::random::get_random_u64();
    #[cfg(not(target_arch = "wasm32"))]
    return std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
}

/// A fresh UUID v4: a key belongs to one run and is never reused by a later
/// one, or Stripe would replay an old answer for 24 hours.
pub fn idempotency_key() -> String {
    let mut b = wasip2::random::random::get_random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = usage_sync_report::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The environment variable `name`, when set and valid UTF-8.
pub fn var(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        // Asked for once per instance, as wasi-libc's `environ` was: the
        // environment does not change while an instance lives.
        static ENVIRONMENT: once_cell::race::OnceBox<Vec<(String, String)>> =
            once_cell::race::OnceBox::new();
        let environment =
            ENVIRONMENT.get_or_init(|| Box::new(wasip2::cli::environment::get_environment()));
        environment
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
    #[cfg(not(target_arch = "wasm32"))]
    return std::env::var(name).ok();
}

/// Writes `line` and a newline on stderr, as `eprintln!` would (a failed
/// write is dropped: stderr is the trace, never the outcome).
pub fn warn(line: fmt::Arguments<'_>) {
    #[cfg(target_arch = "wasm32")]
    {
        let mut text = line.to_string();
        text.push('\n');
        let stderr = wasip2::cli::stderr::get_stderr();
        // The most `blocking-write-and-flush` takes at once.
        for chunk in text.as_bytes().chunks(4096) {
            if stderr.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{line}");
}
