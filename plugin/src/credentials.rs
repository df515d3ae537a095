//! Keys for hosts that attach none: Node through jco, `wasmtime serve`, edge
//! platforms. There the component reads `AMBERFLO_API_KEY` and `STRIPE_API_KEY`
//! from its environment and sends them itself. The usage-sync host gives the
//! guest no environment and attaches the keys at the HTTP boundary instead, so
//! under it the guest never holds a key.

pub const AMBERFLO_ENV: &str = "AMBERFLO_API_KEY";
pub const STRIPE_ENV: &str = "STRIPE_API_KEY";

fn key(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|k| !k.trim().is_empty())
}

/// Amberflo's credential header, when the environment has the key.
pub fn amberflo_header() -> Option<(&'static str, String)> {
    key(AMBERFLO_ENV).map(|k| ("X-API-KEY", k))
}

/// Stripe's credential header, when the environment has the key.
pub fn stripe_header() -> Option<(&'static str, String)> {
    key(STRIPE_ENV).map(|k| ("Authorization", format!("Bearer {k}")))
}

/// What to add to a provider's refusal when no key was sent by anyone we know of.
pub fn missing_hint(status: u16, env: &str) -> String {
    if matches!(status, 401 | 403) && key(env).is_none() {
        format!(
            "; the component's environment has no {env} and the host attached no key: set {env} where the component runs"
        )
    } else {
        String::new()
    }
}
