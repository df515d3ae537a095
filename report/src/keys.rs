//! The providers' keys as the host and the component both name them: where
//! they come from, the header each travels in, and how Stripe's is written.

use crate::prelude::*;

/// The environment variable holding Amberflo's key.
pub const AMBERFLO_ENV: &str = "AMBERFLO_API_KEY";
/// The environment variable holding Stripe's key.
pub const STRIPE_ENV: &str = "STRIPE_API_KEY";
/// The header Amberflo reads its key from (lowercase, as HTTP compares it).
pub const AMBERFLO_HEADER: &str = "x-api-key";
/// The header Stripe reads its key from.
pub const STRIPE_HEADER: &str = "authorization";
/// The header each provider request of the component carries its attempt
/// number in (1, then 2, 3 for its retries): the component decides retries, and
/// the host reads this header (and strips it before sending) instead of
/// guessing. Sent only when the options say the host strips it
/// (`attempt-header`), so no provider ever sees it. Lowercase, as HTTP
/// compares it.
pub const ATTEMPT_HEADER: &str = "usage-sync-attempt";
/// What stands in a printed text where a key was.
pub const REDACTED: &str = "[redacted]";

/// Stripe's header value for `key` (Bearer, as stripe-python sends it).
pub fn stripe_bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// The environment variable holding the token `POST /run` callers present.
pub const SERVE_TOKEN_ENV: &str = "USAGE_SYNC_SERVE_TOKEN";
/// The environment variable naming a file that holds that token.
pub const SERVE_TOKEN_FILE_ENV: &str = "USAGE_SYNC_SERVE_TOKEN_FILE";
/// Set to [`SERVE_AUTH_BY_HOST`] in the component's environment by a host
/// that checked the token itself (`usage-sync serve`, which never hands
/// the token to the component).
pub const SERVE_AUTH_ENV: &str = "USAGE_SYNC_SERVE_AUTH";
/// See [`SERVE_AUTH_ENV`].
pub const SERVE_AUTH_BY_HOST: &str = "host";

/// Whether an `Authorization` header value is `Bearer <token>`, in time
/// that depends on neither value: both are hashed, and the digests compared
/// byte by byte without stopping early.
pub fn bearer_matches(presented: Option<&[u8]>, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let expected = Sha256::digest(format!("Bearer {token}").as_bytes());
    let presented = Sha256::digest(presented.unwrap_or_default());
    let differ = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    core::hint::black_box(differ) == 0
}
