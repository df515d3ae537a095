//! Keys for hosts that attach none: Node through jco, `wasmtime serve`, edge
//! platforms. There the component reads `AMBERFLO_API_KEY` and `STRIPE_API_KEY`
//! from its environment and sends them itself.
//!
//! A host that attaches keys reserves the credential headers (the usage-sync
//! host forbids the guest to set them, and gives it no environment): the
//! component then sends no key of its own and leaves the key to the host.

pub const AMBERFLO_ENV: &str = "AMBERFLO_API_KEY";
pub const STRIPE_ENV: &str = "STRIPE_API_KEY";
const AMBERFLO_HEADER: &str = "X-API-KEY";
const STRIPE_HEADER: &str = "Authorization";

/// A key from the platform's variables (the Spin and wasmCloud builds), else
/// from the environment.
fn key(name: &str) -> Option<String> {
    variable(&name.to_ascii_lowercase())
        .or_else(|| std::env::var(name).ok())
        .filter(|k| !k.trim().is_empty())
}

#[cfg(feature = "spin")]
fn variable(name: &str) -> Option<String> {
    crate::wasi::config0_2_0_draft_2024_09_27::store::get(name)
        .ok()
        .flatten()
}

#[cfg(all(feature = "wasmcloud", not(feature = "spin")))]
fn variable(name: &str) -> Option<String> {
    crate::wasi::config0_2_0_draft::store::get(name)
        .ok()
        .flatten()
}

#[cfg(not(any(feature = "spin", feature = "wasmcloud")))]
fn variable(_: &str) -> Option<String> {
    None
}

/// Whether the host keeps `header` to itself: it attaches that credential.
fn host_attaches(header: &str) -> bool {
    wasip2::http::types::Fields::new()
        .append(header, b"probe")
        .is_err()
}

/// Amberflo's credential header, when the component must send the key itself.
pub fn amberflo_header() -> Option<(&'static str, String)> {
    if host_attaches(AMBERFLO_HEADER) {
        return None;
    }
    key(AMBERFLO_ENV).map(|k| (AMBERFLO_HEADER, k))
}

/// Stripe's credential header, when the component must send the key itself.
pub fn stripe_header() -> Option<(&'static str, String)> {
    if host_attaches(STRIPE_HEADER) {
        return None;
    }
    key(STRIPE_ENV).map(|k| (STRIPE_HEADER, format!("Bearer {k}")))
}

/// What to add to a provider's 401 or 403 when nobody sent a key.
pub fn missing_hint(status: u16, env: &str) -> String {
    let header = if env == AMBERFLO_ENV {
        AMBERFLO_HEADER
    } else {
        STRIPE_HEADER
    };
    if matches!(status, 401 | 403) && key(env).is_none() && !host_attaches(header) {
        format!(
            "; the component's environment has no {env} and the host attaches no key: set {env} where the component runs{}",
            if cfg!(any(feature = "spin", feature = "wasmcloud")) {
                format!(" (or the variable {})", env.to_ascii_lowercase())
            } else {
                String::new()
            }
        )
    } else {
        String::new()
    }
}
