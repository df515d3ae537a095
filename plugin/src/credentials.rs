//! Keys for hosts that attach none: Node through jco, `wasmtime serve`, edge
//! platforms. There the component reads `AMBERFLO_API_KEY` and `STRIPE_API_KEY`
//! from its environment and sends them itself.
//!
//! A host that attaches keys reserves the credential headers (the usage-sync
//! host forbids the guest to set them, and gives it no environment): the
//! component then sends no key of its own and leaves the key to the host.

use crate::prelude::*;

use crate::text::join;
use once_cell::race::OnceBox;

use usage_sync_report::keys::{
    AMBERFLO_ENV, AMBERFLO_HEADER, SERVE_AUTH_BY_HOST, SERVE_AUTH_ENV, SERVE_TOKEN_ENV, STRIPE_ENV,
    STRIPE_HEADER, stripe_bearer,
};

/// A key from the platform's variables (the Spin and wasmCloud builds), else
/// from the environment.
fn key(name: &str) -> Option<String> {
    variable(&name.to_ascii_lowercase())
        .or_else(|| crate::ambient::var(name))
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
enum KeySource {
    /// The host reserves the credential header: it attaches the key.
    Host,
    /// The header value the component sends itself.
    Own(String),
    Missing,
}

fn source(header: &str, env: &str, value: impl FnOnce(String) -> String) -> KeySource {
    let host_attaches = wasip2::http::types::Fields::new()
        .append(header, b"probe")
        .is_err();
    match key(env) {
        _ if host_attaches => KeySource::Host,
        Some(key) => KeySource::Own(value(key)),
        None => KeySource::Missing,
    }
}

fn amberflo() -> &'static KeySource {
    static SOURCE: OnceBox<KeySource> = OnceBox::new();
    SOURCE.get_or_init(|| Box::new(source(AMBERFLO_HEADER, AMBERFLO_ENV, |key| key)))
}

fn stripe() -> &'static KeySource {
    static SOURCE: OnceBox<KeySource> = OnceBox::new();
    SOURCE.get_or_init(|| Box::new(source(STRIPE_HEADER, STRIPE_ENV, |key| stripe_bearer(&key))))
}

fn header(name: &'static str, source: &KeySource) -> Option<(&'static str, String)> {
    match source {
        KeySource::Own(value) => Some((name, value.clone())),
        KeySource::Host | KeySource::Missing => None,
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

/// Who may call `POST /run`.
pub enum Caller {
    /// The host checked the token before the request reached the component.
    CheckedByHost,
    /// Callers must present this token.
    Token(String),
    /// No token is configured: nobody may run.
    NotConfigured,
}

/// The `POST /run` rule of this instance: the token from the platform's
/// variable `usage_sync_serve_token` or the environment's `USAGE_SYNC_SERVE_TOKEN`.
pub fn caller() -> Caller {
    if crate::ambient::var(SERVE_AUTH_ENV).as_deref() == Some(SERVE_AUTH_BY_HOST) {
        return Caller::CheckedByHost;
    }
    match key(SERVE_TOKEN_ENV) {
        Some(token) => Caller::Token(token),
        None => Caller::NotConfigured,
    }
}

/// A provider whose key a run needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Amberflo's key (`X-API-KEY`).
    Amberflo,
    /// Stripe's key (`Authorization: Bearer`).
    Stripe,
}

/// Before the first request: every key the run needs is either attached by
/// the host or at hand. A missing one is bad input, named, and nothing is sent.
pub fn check(needed: &[Needed]) -> Result<(), String> {
    let mut missing = Vec::new();
    if needed.contains(&Needed::Amberflo) && matches!(amberflo(), KeySource::Missing) {
        missing.push(AMBERFLO_ENV);
    }
    if needed.contains(&Needed::Stripe) && matches!(stripe(), KeySource::Missing) {
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
        join(
            missing.iter().map(|m| if *m == AMBERFLO_ENV {
                "Amberflo"
            } else {
                "Stripe"
            }),
            " and "
        ),
        join(missing.iter().copied(), " and "),
    ))
}
