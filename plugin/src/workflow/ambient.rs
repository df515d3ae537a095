//! The clock and random bytes the workflow takes from WASI: besides its
//! arguments and the providers' answers, its only inputs.

/// Now, Unix seconds.
pub(super) fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_secs() as i64
}

/// Uniform in [0, 1), for backoff jitter.
pub(super) fn jitter() -> f64 {
    (wasip2::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh UUID v4: a key belongs to one run and is never reused by a later
/// one, or Stripe would replay an old answer for 24 hours.
pub(super) fn idempotency_key() -> String {
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
