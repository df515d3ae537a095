//! API keys: read by the host, attached at the HTTP boundary, never given to the
//! guest, and scrubbed from everything the host prints.

use std::fmt;

/// A key that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Checks that `value` can travel in an HTTP header and is long enough to
    /// be a key (and to be scrubbed from output without mangling it).
    pub fn new(name: &str, value: String) -> Result<Secret, String> {
        if value.is_empty() {
            return Err(format!("{name} is empty"));
        }
        if value.len() < MIN_KEY_LEN {
            return Err(format!(
                "{name} is shorter than {MIN_KEY_LEN} characters: not an API key"
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{name} has spaces or characters that cannot go in an HTTP header"
            ));
        }
        Ok(Secret(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Stripe's keys run past 100 characters and Amberflo's are UUIDs.
pub const MIN_KEY_LEN: usize = 16;

pub const AMBERFLO_ENV: &str = "AMBERFLO_API_KEY";
pub const STRIPE_ENV: &str = "STRIPE_API_KEY";

/// The two providers' keys.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub amberflo: Secret,
    pub stripe: Secret,
}

impl Credentials {
    /// From `AMBERFLO_API_KEY` and `STRIPE_API_KEY`; never from flags, which
    /// other users can read in the process list.
    pub fn from_env() -> Result<Credentials, String> {
        let read = |name: &str| match std::env::var(name) {
            Ok(value) => Secret::new(name, value),
            Err(std::env::VarError::NotPresent) => Err(format!("{name} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
        };
        Ok(Credentials {
            amberflo: read(AMBERFLO_ENV)?,
            stripe: read(STRIPE_ENV)?,
        })
    }

    /// Replaces every occurrence of a key in `text`.
    pub fn redact(&self, text: &str) -> String {
        [&self.amberflo, &self.stripe]
            .iter()
            .fold(text.to_string(), |text, key| {
                text.replace(key.expose(), "[redacted]")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let creds = Credentials {
            amberflo: Secret::new("A", "amb-canary-000001".into()).unwrap(),
            stripe: Secret::new("S", "sk_test_canary0000".into()).unwrap(),
        };
        assert!(!format!("{creds:?}").contains("canary"));
        assert_eq!(
            creds.redact("x sk_test_canary0000 y amb-canary-000001"),
            "x [redacted] y [redacted]"
        );
        assert!(Secret::new("S", "with space in the key".into()).is_err());
        assert!(Secret::new("S", "sk_short".into()).is_err());
        assert!(Secret::new("S", String::new()).is_err());
    }
}
