//! When to try a request again, and how long to wait: Stripe's official clients'
//! rules (stripe-python `_should_retry` / `_sleep_time_seconds`), plus `Retry-After`.

use crate::http::{NoAnswer, Reply};
use core::time::Duration;

/// The first wait, and the cap on the exponential part, as in stripe-python.
const INITIAL: Duration = Duration::from_millis(500);
const MAX: Duration = Duration::from_secs(5);

/// What to do after an attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The answer is final.
    Stop,
    /// Try again. `fresh_key`: Stripe stored this answer under the idempotency
    /// key and would replay it, so the next attempt needs a new key.
    Retry {
        /// Stripe stored this answer under the idempotency key and would replay it: the next attempt needs a new key.
        fresh_key: bool,
        /// How long the provider asked to wait.
        retry_after: Option<Duration>,
    },
}

/// Stripe: obey `Stripe-Should-Retry`; otherwise retry 409, 429 (after its
/// `Retry-After`), 5xx and transport faults, nothing else.
pub fn stripe(result: &Result<Reply, NoAnswer>) -> Next {
    let reply = match result {
        Ok(reply) => reply,
        Err(failure) if failure.retryable => {
            return Next::Retry {
                fresh_key: false,
                retry_after: None,
            };
        }
        Err(_) => return Next::Stop,
    };
    // An answer is final, whatever the header says.
    if (200..300).contains(&reply.status) {
        return Next::Stop;
    }
    let fresh_key = reply.status >= 500;
    let retry = Next::Retry {
        fresh_key,
        retry_after: retry_after(reply),
    };
    match reply.header("stripe-should-retry") {
        Some("false") => return Next::Stop,
        Some("true") => return retry,
        _ => {}
    }
    match reply.status {
        409 | 429 | 500.. => retry,
        _ => Next::Stop,
    }
}

/// Amberflo's query is read-only: retry 429, 5xx and transport faults.
pub fn amberflo(result: &Result<Reply, NoAnswer>) -> Next {
    match result {
        Ok(reply) if matches!(reply.status, 429 | 500..) => Next::Retry {
            fresh_key: false,
            retry_after: retry_after(reply),
        },
        Err(failure) if failure.retryable => Next::Retry {
            fresh_key: false,
            retry_after: None,
        },
        _ => Next::Stop,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs).
fn retry_after(reply: &Reply) -> Option<Duration> {
    reply
        .header("retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The limits on retrying one request.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry starts after this much time since the first attempt.
    pub budget: Duration,
    /// Each request names its attempt in `usage-sync-attempt` (the host
    /// strips it; see `options.attempt-header`).
    pub attempt_header: bool,
}

impl Policy {
    /// The wait before retry number `retry` (1-based), or `None` when the
    /// attempts or the time budget are spent. `jitter` is uniform in [0, 1).
    pub fn wait(
        &self,
        retry: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if retry > self.max_retries {
            return None;
        }
        let wait = backoff(retry, jitter).max(retry_after.unwrap_or_default());
        // A huge Retry-After is beyond the budget, never an overflow.
        elapsed
            .checked_add(wait)
            .is_some_and(|end| end <= self.budget)
            .then_some(wait)
    }
}

/// 0.5 s × 2^(retry−1), capped at 5 s, times a random factor in [0.5, 1],
/// never under 0.5 s.
pub fn backoff(retry: u32, jitter: f64) -> Duration {
    let exponential = INITIAL
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(MAX);
    exponential.mul_f64(0.5 * (1.0 + jitter)).max(INITIAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)]) -> Result<Reply, NoAnswer> {
        Ok(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        })
    }

    fn lost(retryable: bool) -> Result<Reply, NoAnswer> {
        Err(NoAnswer {
            message: "reset".into(),
            maybe_sent: true,
            retryable,
        })
    }

    const SAME: Next = Next::Retry {
        fresh_key: false,
        retry_after: None,
    };
    const FRESH: Next = Next::Retry {
        fresh_key: true,
        retry_after: None,
    };

    #[test]
    fn stripe_rules() {
        assert_eq!(stripe(&reply(200, &[])), Next::Stop);
        assert_eq!(stripe(&reply(400, &[])), Next::Stop);
        assert_eq!(stripe(&reply(401, &[])), Next::Stop);
        assert_eq!(stripe(&reply(402, &[])), Next::Stop);
        assert_eq!(stripe(&reply(409, &[])), SAME);
        assert_eq!(stripe(&reply(500, &[])), FRESH);
        assert_eq!(stripe(&reply(503, &[])), FRESH);
        assert_eq!(
            stripe(&reply(429, &[("retry-after", "2")])),
            Next::Retry {
                fresh_key: false,
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(stripe(&reply(429, &[])), SAME);
        // The header wins both ways.
        assert_eq!(
            stripe(&reply(503, &[("stripe-should-retry", "false")])),
            Next::Stop
        );
        assert_eq!(
            stripe(&reply(400, &[("stripe-should-retry", "true")])),
            SAME
        );
        // A lost answer keeps the key, so Stripe replays what it stored.
        assert_eq!(stripe(&lost(true)), SAME);
        assert_eq!(stripe(&lost(false)), Next::Stop);
    }

    #[test]
    fn amberflo_rules() {
        assert_eq!(amberflo(&reply(200, &[])), Next::Stop);
        assert_eq!(amberflo(&reply(401, &[])), Next::Stop);
        assert_eq!(amberflo(&reply(400, &[])), Next::Stop);
        assert_eq!(amberflo(&reply(503, &[])), SAME);
        assert_eq!(amberflo(&reply(429, &[])), SAME);
        assert_eq!(amberflo(&lost(true)), SAME);
    }

    #[test]
    fn backoff_matches_stripe_python() {
        let ms = |d: Duration| d.as_millis();
        // Without jitter the factor is 0.5; with the most, 1.
        assert_eq!(ms(backoff(1, 0.0)), 500);
        assert_eq!(ms(backoff(1, 0.999_999)), 500);
        assert_eq!(ms(backoff(2, 0.0)), 500);
        assert_eq!(ms(backoff(2, 0.999_999)), 999);
        assert_eq!(ms(backoff(3, 0.0)), 1000);
        assert_eq!(ms(backoff(5, 0.0)), 2500);
        assert_eq!(ms(backoff(20, 0.999_999)), 4999);
    }

    #[test]
    fn attempts_and_time_are_bounded() {
        let policy = Policy {
            max_retries: 2,
            budget: Duration::from_secs(3),
            attempt_header: false,
        };
        let zero = Duration::ZERO;
        assert!(policy.wait(1, zero, None, 0.0).is_some());
        assert!(policy.wait(2, zero, None, 0.0).is_some());
        assert_eq!(policy.wait(3, zero, None, 0.0), None);
        assert_eq!(policy.wait(1, Duration::from_secs(3), None, 0.0), None);
        let after = Some(Duration::from_secs(2));
        assert_eq!(
            policy.wait(1, zero, after, 0.0),
            Some(Duration::from_secs(2))
        );
        // A Retry-After beyond the budget is not waited for.
        assert_eq!(
            policy.wait(1, zero, Some(Duration::from_secs(10)), 0.0),
            None
        );
        // Nor one that would overflow the clock (it trapped the guest).
        let huge = Some(Duration::from_secs(u64::MAX));
        assert_eq!(policy.wait(1, Duration::from_secs(1), huge, 0.0), None);
    }

    #[test]
    fn a_final_answer_is_not_retried_whatever_the_header_says() {
        assert_eq!(
            stripe(&reply(200, &[("stripe-should-retry", "true")])),
            Next::Stop
        );
    }
}
