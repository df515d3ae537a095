//! Where the next `sync` starts its rows at once: from what the last one
//! learned against the same Stripe, as a TCP connection may start from what
//! the last one to the same host learned (RFC 2140), instead of climbing from
//! the default every night.
//!
//! The adaptive limit ([`crate::egress::Concurrency`]) starts at the default
//! and doubles once a round trip while latency holds: on a real network, a
//! nightly job of 1,000 rows spends a third of its time climbing to where the
//! previous night already was. Each sync that moved the limit writes where it
//! ended, per Stripe URL; the next starts at half of it (TCP's `ssthresh` is
//! half the window too), never below the default, never above
//! `--concurrency`, and climbs or falls from there as before. What a week has
//! not refreshed is forgotten: the network, the account's limits or the
//! machine may have changed. A file that cannot be read is not an error, only
//! a start from the default: it steers how fast, never what is billed.

use super::StateDir;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// After this long, a learned limit is forgotten.
pub const MAX_AGE: i64 = 7 * 86_400;

/// What a sync left for the next one against the same Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Learned {
    /// Rows at once when the sync ended.
    pub settled: usize,
    /// When it ended (Unix seconds).
    pub at: i64,
}

/// The file of `stripe_url`'s learned limit: one per Stripe URL, named by its
/// digest (a URL is not a file name).
fn file_name(stripe_url: &str) -> String {
    let digest = Sha256::digest(stripe_url.trim_end_matches('/').as_bytes());
    format!("concurrency.{}.json", usage_sync_report::hex(&digest[..8]))
}

/// The limit learned against `stripe_url` within [`MAX_AGE`] of `now`, if
/// any; why one could not be read is logged, not returned.
pub fn read(state: &StateDir, stripe_url: &str, now: i64) -> Option<Learned> {
    let name = file_name(stripe_url);
    let bytes = match state.read(&name, 4096) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("sync: {e}; starting from the default");
            return None;
        }
    };
    let learned = match serde_json::from_slice::<Learned>(&bytes) {
        Ok(learned) => learned,
        Err(e) => {
            tracing::warn!(
                "sync: {} is not a learned limit ({e}); starting from the default",
                state.file(&name).display()
            );
            return None;
        }
    };
    (learned.settled > 0 && (0..=MAX_AGE).contains(&(now - learned.at))).then_some(learned)
}

/// Remembers that a sync against `stripe_url` ended with `settled` at once.
pub fn remember(
    state: &StateDir,
    stripe_url: &str,
    settled: usize,
    now: i64,
) -> Result<(), String> {
    let learned = Learned { settled, at: now };
    state.write_atomic_with(&file_name(stripe_url), |file| {
        serde_json::to_writer(&mut *file, &learned)?;
        file.write_all(b"\n")
    })
}

/// Where a sync starts: half of what the last one settled at, at least
/// `default`, at most `ceiling`.
pub fn initial(learned: Option<Learned>, default: usize, ceiling: usize) -> usize {
    let start = learned.map_or(default, |l| (l.settled / 2).max(default));
    start.min(ceiling).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::state_dir::Scratch;

    #[test]
    fn the_next_sync_starts_at_half_of_what_the_last_settled_at() {
        let learned = |settled| Some(Learned { settled, at: 0 });
        assert_eq!(initial(None, 16, 256), 16);
        assert_eq!(initial(learned(200), 16, 256), 100);
        // Never below the default, never above the ceiling.
        assert_eq!(initial(learned(10), 16, 256), 16);
        assert_eq!(initial(learned(10_000), 16, 256), 256);
        assert_eq!(initial(learned(200), 16, 8), 8);
    }

    #[test]
    fn learned_per_stripe_url_and_forgotten_after_a_week() {
        let dir = Scratch::new("warm-start");
        let state = StateDir::open(&dir.0).unwrap();
        let stripe = "https://api.stripe.com";
        assert_eq!(read(&state, stripe, 1_000), None);
        remember(&state, stripe, 128, 1_000).unwrap();
        let learned = Learned {
            settled: 128,
            at: 1_000,
        };
        assert_eq!(read(&state, stripe, 1_000 + MAX_AGE), Some(learned));
        assert_eq!(
            read(&state, "https://api.stripe.com/", 2_000),
            Some(learned)
        );
        assert_eq!(read(&state, stripe, 1_001 + MAX_AGE), None);
        // A clock that went back is not trusted either.
        assert_eq!(read(&state, stripe, 999), None);
        assert_eq!(read(&state, "http://127.0.0.1:9", 1_000), None);
    }

    #[test]
    fn an_unreadable_file_is_a_start_from_the_default() {
        let dir = Scratch::new("warm-start");
        let state = StateDir::open(&dir.0).unwrap();
        let stripe = "https://api.stripe.com";
        for bad in [
            &b"{\"settled\": -1}"[..],
            b"not json",
            b"{\"settled\":0,\"at\":0}",
        ] {
            state.write_atomic(&file_name(stripe), bad).unwrap();
            assert_eq!(read(&state, stripe, 0), None);
        }
        state
            .write_atomic(&file_name(stripe), &vec![b' '; 5000])
            .unwrap();
        assert_eq!(read(&state, stripe, 0), None);
    }
}
