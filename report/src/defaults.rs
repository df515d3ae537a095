//! What a caller may leave out, as both the CLI and `POST /run` fill it in.

/// The providers' production APIs.
pub const AMBERFLO_URL: &str = "https://app.amberflo.io";
/// Stripe's API.
pub const STRIPE_URL: &str = "https://api.stripe.com";
/// Retries of one request after the first attempt (Stripe's clients: 2).
pub const MAX_RETRIES: u32 = 2;
/// No retry of a request starts later than this after its first attempt.
pub const RETRY_BUDGET_MS: u64 = 60_000;
/// Hours after an interval's end before Amberflo's total for it is taken
/// as final (its guide: cloud usage settles 2 to 3 days after the period).
pub const SETTLE_HOURS: u32 = 72;
/// Customers in one batched Amberflo query: Amberflo documents no limit.
pub const MAX_CUSTOMERS_PER_QUERY: usize = 1000;

/// The window when none is given: the previous full UTC day before `now`
/// (Unix seconds), start inclusive, end exclusive.
pub fn previous_utc_day(now: i64) -> (i64, i64) {
    const DAY: i64 = 86_400;
    let today = now.div_euclid(DAY) * DAY;
    (today - DAY, today)
}
