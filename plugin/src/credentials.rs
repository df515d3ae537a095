//! Keys for hosts that attach none: Node through jco, `wasmtime serve`, edge
//! platforms. There the component reads `AMBERFLO_API_KEY` and `STRIPE_API_KEY`
//! from its environment and sends them itself.
//!
//! A host that attaches keys reserves the credential headers (the usage-sync
//! host forbids the guest to set them, and gives it no environment): the
//! component then sends no key of its own and leaves the key to the host.

use std::sync::OnceLock;

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

/// Where a provider's key comes from, decided once per instance: the
/// environment and the variables do not change during a run, and each request
/// would otherwise ask the host again.
enum Source {
    /// The host reserves the credential header: it attaches the key.
    Host,
    /// The header value the component sends itself.
    Own(String),
    Missing,
}

fn source(header: &str, env: &str, value: impl FnOnce(String) -> String) -> Source {
    let host_attaches = wasip2::http::types::Fields::new()
        .append(header, b"probe")
        .is_err();
    match key(env) {
        _ if host_attaches => Source::Host,
        Some(key) => Source::Own(value(key)),
        None => Source::Missing,
    }
}

fn amberflo() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| source(AMBERFLO_HEADER, AMBERFLO_ENV, |key| key))
}

fn stripe() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| source(STRIPE_HEADER, STRIPE_ENV, |key| format!("Bearer {key}")))
}

fn header(name: &'static str, source: &Source) -> Option<(&'static str, String)> {
    match source {
        Source::Own(value) => Some((name, value.clone())),
        Source::Host | Source::Missing => None,
    }
}

/// Amberflo's credential header, when the component must send the key itself.
pub fn amberflo_header() -> Option<(&'static str, String)> {
    header(AMBERFLO_HEADER, amberflo())
}

/// Stripe's credential header, when the component must send the key itself.
pub fn stripe_header() -> Option<(&'static str, String)> {
    header(STRIPE_HEADER, stripe())
}

/// Before the first request: every key the run needs is either attached by
/// the host or at hand. A missing one is bad input, named, and nothing is sent.
pub fn check(amberflo: bool, stripe: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    if amberflo && matches!(self::amberflo(), Source::Missing) {
        missing.push(AMBERFLO_ENV);
    }
    if stripe && matches!(self::stripe(), Source::Missing) {
        missing.push(STRIPE_ENV);
    }
    if missing.is_empty() {
        return Ok(());
    }
    let variables = if cfg!(any(feature = "spin", feature = "wasmcloud")) {
        let names: Vec<String> = missing.iter().map(|m| m.to_ascii_lowercase()).collect();
        format!(" or the variable(s) {}", names.join(", "))
    } else {
        String::new()
    };
    Err(format!(
        "no API key for {}: this host attaches none, so set {}{variables} where the component runs",
        missing
            .iter()
            .map(|m| if *m == AMBERFLO_ENV {
                "Amberflo"
            } else {
                "Stripe"
            })
            .collect::<Vec<_>>()
            .join(" and "),
        missing.join(" and "),
    ))
}
