//! The sandbox's egress policy, in one place: the guest may reach exactly the
//! routes the workflow declares ([`crate::egress::routes`]) on the two configured
//! provider origins, and each provider's key goes only to its own routes.
//!
//! Matching is on the parsed request, before any DNS lookup: scheme, host
//! (ASCII case-insensitive, nothing else normalised) and effective port must equal
//! a configured origin, and the method, the path (under the base URL's path) and
//! the query one of that provider's routes. HTTPS is required, except plain HTTP
//! to loopback (tests, demo).

pub use crate::egress::provider::Provider;
use crate::egress::routes::{self, Route};
use http::header::HeaderName;
use http::uri::{Scheme, Uri};
use std::fmt;
use std::net::IpAddr;
use usage_sync_report::keys;

pub use usage_sync_report::defaults::{
    AMBERFLO_URL as DEFAULT_AMBERFLO_URL, STRIPE_URL as DEFAULT_STRIPE_URL,
};

/// Headers that carry credentials: only the host sets them.
pub fn is_credential_header(name: &HeaderName) -> bool {
    [
        HeaderName::from_static(keys::STRIPE_HEADER),
        HeaderName::from_static(keys::AMBERFLO_HEADER),
        http::header::PROXY_AUTHORIZATION,
        http::header::COOKIE,
    ]
    .contains(name)
}

/// Scheme, host and port: what a request must match exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `https` (else plain `http`, allowed only to loopback).
    pub https: bool,
    /// Lowercase; IPv6 in brackets, as in a URI.
    pub host: String,
    /// The effective port.
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A provider's configured base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where requests to this provider must go.
    pub origin: Origin,
    /// What the guest builds request URLs from; no trailing slash.
    pub base_url: String,
    /// The base URL's path (empty, or `/prefix` with no trailing slash): the
    /// provider's routes lie under it.
    pub base_path: String,
}

impl Endpoint {
    /// Parses a base URL given by the user (`--amberflo-url`, `--stripe-url`).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let origin = origin_of(&uri).map_err(|why| format!("`{url}`: {why}"))?;
        if !origin.https && !is_loopback(&origin.host) {
            return Err(format!(
                "`{url}`: plain HTTP is allowed only to loopback (127.0.0.1, [::1], localhost); use https"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("`{url}`: a base URL cannot have a query"));
        }
        let path = uri.path().trim_end_matches('/');
        let scheme = if origin.https { "https" } else { "http" };
        let authority = uri.authority().expect("origin_of checked it").as_str();
        Ok(Endpoint {
            base_url: format!("{scheme}://{authority}{path}"),
            base_path: path.to_string(),
            origin,
        })
    }
}

fn origin_of(uri: &Uri) -> Result<Origin, &'static str> {
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        Some(_) => return Err("only http and https are allowed"),
        None => return Err("no scheme"),
    };
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("user info in the authority");
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("no host");
    }
    Ok(Origin {
        https,
        host: host.to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
    })
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a request was refused; names the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The URL (or scheme) refused.
    pub target: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused a request to {}: {}", self.target, self.reason)
    }
}

/// The allowlist: two origins, each bound to its provider and its routes.
#[derive(Clone, Debug)]
pub struct Policy {
    origins: [(Origin, Provider, String); 2],
}

impl Policy {
    /// A policy allowing exactly these two providers' origins.
    pub fn new(amberflo: &Endpoint, stripe: &Endpoint) -> Result<Policy, String> {
        if amberflo.origin == stripe.origin {
            return Err(format!(
                "Amberflo and Stripe share the origin {}: each key must be bound to its own host",
                amberflo.origin
            ));
        }
        Ok(Policy {
            origins: [
                (
                    amberflo.origin.clone(),
                    Provider::Amberflo,
                    amberflo.base_path.clone(),
                ),
                (
                    stripe.origin.clone(),
                    Provider::Stripe,
                    stripe.base_path.clone(),
                ),
            ],
        })
    }

    /// The provider and route a request calls, or why it may not go anywhere.
    pub fn check(&self, method: &str, uri: &Uri) -> Result<(Provider, &'static Route), Refusal> {
        let refuse = |reason: String| Refusal {
            target: shorten(&uri.to_string()),
            reason,
        };
        let origin = origin_of(uri).map_err(|why| refuse(why.to_string()))?;
        let Some((_, provider, base_path)) = self
            .origins
            .iter()
            .find(|(allowed, _, _)| *allowed == origin)
        else {
            return Err(refuse(format!(
                "{origin} is not an allowed host (allowed: {}, {})",
                self.origins[0].0, self.origins[1].0
            )));
        };
        let asked = || shorten(&format!("{method} {}", uri.path()));
        uri.path()
            .strip_prefix(base_path.as_str())
            .and_then(|path| routes::find(*provider, method, path, uri.query()))
            .map(|route| (*provider, route))
            .ok_or_else(|| {
                let query = match uri.query() {
                    Some(_) => " (with that query)",
                    None => "",
                };
                refuse(format!(
                    "{}{query} is not a route of the workflow on {} (it calls {} under `{}`)",
                    asked(),
                    provider.name(),
                    routes::listed(*provider),
                    if base_path.is_empty() { "/" } else { base_path },
                ))
            })
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Credentials, Secret};

    fn test_credentials() -> Credentials {
        Credentials {
            amberflo: Secret::new("A", "amb_test_key_0000".into()).unwrap(),
            stripe: Secret::new("S", "sk_test_key_00000".into()).unwrap(),
        }
    }

    fn policy() -> Policy {
        Policy::new(
            &Endpoint::parse("https://app.amberflo.io").unwrap(),
            &Endpoint::parse("https://api.stripe.com/").unwrap(),
        )
        .unwrap()
    }

    /// The provider of a request, with the method its path's route takes.
    fn check(url: &str) -> Result<Provider, Refusal> {
        let uri: Uri = url.parse().unwrap();
        let method = match uri.path() {
            "/usage" | "/v1/billing/meter_events" => "POST",
            _ => "GET",
        };
        policy().check(method, &uri).map(|(provider, _)| provider)
    }

    #[test]
    fn allows_exactly_the_two_origins() {
        assert_eq!(
            check("https://app.amberflo.io/usage"),
            Ok(Provider::Amberflo)
        );
        assert_eq!(
            check("https://api.stripe.com/v1/billing/meter_events"),
            Ok(Provider::Stripe)
        );
        assert_eq!(
            check("https://API.Stripe.COM:443/v1/billing/meters?limit=100"),
            Ok(Provider::Stripe)
        );
    }

    #[test]
    fn allows_only_the_declared_routes_under_the_base_path() {
        let prefixed = Policy::new(
            &Endpoint::parse("http://127.0.0.1:9/amberflo").unwrap(),
            &Endpoint::parse("http://127.0.0.1:8/stripe/").unwrap(),
        )
        .unwrap();
        let check = |method: &str, url: &str| {
            prefixed
                .check(method, &url.parse().unwrap())
                .map(|(provider, route)| (provider, route.step))
        };
        assert_eq!(
            check("POST", "http://127.0.0.1:9/amberflo/usage"),
            Ok((Provider::Amberflo, "query-usage"))
        );
        assert_eq!(
            check(
                "GET",
                "http://127.0.0.1:8/stripe/v1/billing/meters/mtr_1/event_summaries?customer=cus_1"
            ),
            Ok((Provider::Stripe, "read-summaries"))
        );
        for (method, url) in [
            ("POST", "http://127.0.0.1:9/usage"),
            ("POST", "http://127.0.0.1:9/amberfloevil/usage"),
            ("POST", "http://127.0.0.1:9/amberflo/ingest"),
            ("POST", "http://127.0.0.1:8/stripe/usage"),
            (
                "POST",
                "http://127.0.0.1:9/amberflo/v1/billing/meter_events",
            ),
            ("POST", "http://127.0.0.1:8/stripe/v1/refunds"),
            ("POST", "http://127.0.0.1:8/stripe/v1/payouts"),
            ("GET", "http://127.0.0.1:8/stripe/v1/customers"),
            ("DELETE", "http://127.0.0.1:8/stripe/v1/customers/cus_1"),
            (
                "GET",
                "http://127.0.0.1:8/stripe/v1/billing/meters/../../v1/customers",
            ),
            ("GET", "http://127.0.0.1:8/stripe/../v1/billing/meters"),
        ] {
            let refusal = check(method, url).unwrap_err();
            assert!(
                refusal.reason.contains("is not a route of the workflow")
                    && refusal.reason.contains(method),
                "{method} {url}: {refusal}"
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "http://api.stripe.com/v1/billing/meters",
            "https://api.stripe.com:8443/v1/billing/meters",
            "https://api.stripe.com./v1/billing/meters",
            "https://api.stripe.com.evil.test/v1/billing/meters",
            "https://api.stripe.com@evil.test/v1/billing/meters",
            "https://evil.test@api.stripe.com/v1/billing/meters",
            "https://api.stripe.com/v1/x",
            "https://evil.test/",
            "https://127.0.0.1/",
            "https://54.187.174.169/",
            "ftp://api.stripe.com/",
            "/v1/x",
        ] {
            assert!(check(url).is_err(), "{url} should be refused");
        }
        let refusal = check("https://evil.test/steal").unwrap_err();
        assert_eq!(refusal.target, "https://evil.test/steal");
        assert!(
            refusal
                .to_string()
                .contains("evil.test:443 is not an allowed host")
        );
    }

    #[test]
    fn endpoints_need_https_unless_loopback() {
        assert!(Endpoint::parse("http://127.0.0.1:8080").is_ok());
        assert!(Endpoint::parse("http://[::1]:8080").is_ok());
        assert!(Endpoint::parse("http://localhost:8080").is_ok());
        assert!(Endpoint::parse("http://api.stripe.com").is_err());
        assert!(Endpoint::parse("http://10.0.0.1").is_err());
        assert!(Endpoint::parse("https://user:pw@api.stripe.com").is_err());
        assert!(Endpoint::parse("api.stripe.com").is_err());
        let e = Endpoint::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(e.base_url, "http://127.0.0.1:9/prefix");
        assert_eq!(e.origin.port, 9);
    }

    #[test]
    fn keys_are_bound_to_their_provider() {
        let creds = test_credentials();
        assert_eq!(Provider::Amberflo.credential_header(), "x-api-key");
        assert_eq!(Provider::Amberflo.credential(&creds), "amb_test_key_0000");
        assert_eq!(
            Provider::Stripe.credential_header(),
            http::header::AUTHORIZATION
        );
        assert_eq!(
            Provider::Stripe.credential(&creds),
            "Bearer sk_test_key_00000"
        );
        let same = Endpoint::parse("http://127.0.0.1:9").unwrap();
        assert!(Policy::new(&same, &same).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn cases() -> ProptestConfig {
            ProptestConfig {
                cases: std::env::var("PROPTEST_CASES")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(4000),
                ..ProptestConfig::default()
            }
        }

        /// Hosts near the allowed ones: case, dots, labels, look-alike letters.
        fn host() -> impl Strategy<Value = String> {
            let base = prop_oneof![
                Just("api.stripe.com".to_string()),
                Just("app.amberflo.io".to_string()),
                "[a-z0-9.-]{1,20}",
            ];
            (base, 0u8..6, "[a-z]{1,6}").prop_map(|(host, tweak, label)| match tweak {
                1 => host.to_uppercase(),
                2 => format!("{host}."),
                3 => format!("{label}.{host}"),
                4 => format!("{host}.{label}"),
                5 => host.replacen('a', "4", 1),
                _ => host,
            })
        }

        proptest! {
            #![proptest_config(cases())]

            #[test]
            fn allows_exactly_the_configured_origins(
                scheme in prop_oneof![Just("https"), Just("http"), Just("HTTPS"), Just("ftp")],
                user in proptest::option::of("[a-z]{1,5}"),
                host in host(),
                port in proptest::option::of(prop_oneof![Just(443u16), Just(80), any::<u16>()]),
                route in 0..routes::DECLARED.len(),
            ) {
                let route = routes::DECLARED[route];
                let path = route.path.replace("{id}", "mtr_1");
                let user = user.map(|u| format!("{u}@")).unwrap_or_default();
                let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
                let url = format!("{scheme}://{user}{host}{port_text}{path}");
                let Ok(uri) = url.parse::<Uri>() else { return Ok(()) };
                let https = scheme.eq_ignore_ascii_case("https");
                let expected = match host.to_ascii_lowercase().as_str() {
                    "app.amberflo.io" => Some(Provider::Amberflo),
                    "api.stripe.com" => Some(Provider::Stripe),
                    _ => None,
                }
                .filter(|_| https && user.is_empty() && port.is_none_or(|p| p == 443))
                .filter(|provider| *provider == route.provider);
                let checked = policy().check(route.method, &uri).ok().map(|(p, _)| p);
                prop_assert_eq!(checked, expected, "{} {}", route.method, url);
            }

            #[test]
            fn anything_allowed_is_a_configured_origin(text in "\\PC{0,40}") {
                if let Ok(uri) = text.parse::<Uri>()
                    && policy().check("GET", &uri).is_ok()
                {
                    let origin = origin_of(&uri).unwrap();
                    prop_assert!(origin.https && origin.port == 443);
                    prop_assert!(["app.amberflo.io", "api.stripe.com"].contains(&origin.host.as_str()));
                }
            }

            /// A declared route's path, played with as a hostile guest would:
            /// allowed only when the result is that same path, or the route
            /// with another well-formed id.
            #[test]
            fn only_a_declared_route_is_allowed(
                route in 0..routes::DECLARED.len(),
                id in prop_oneof![Just("mtr_1".to_string()), "[A-Za-z0-9_.%/;?-]{0,8}"],
                trick in 0u8..9,
                at in any::<proptest::sample::Index>(),
            ) {
                let route = routes::DECLARED[route];
                let clean = route.path.replace("{id}", &id);
                // After the leading slash: the authority is not what is played with here.
                let at = 1 + at.index(clean.len());
                let mut path = clean.clone();
                match trick {
                    1 => path.insert_str(at, "/.."),
                    2 => path.insert_str(at, "%2F"),
                    3 => path.insert_str(at, "%2e"),
                    4 => path.insert(at, '/'),
                    5 => path.push(';'),
                    6 => path = path.to_uppercase(),
                    7 => path.insert_str(at, "%3F"),
                    8 => path.insert(at, '.'),
                    _ => {}
                }
                let url = format!("https://api.stripe.com{path}");
                let Ok(uri) = url.parse::<Uri>() else { return Ok(()) };
                let allowed = policy().check(route.method, &uri).is_ok();
                let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                let well_formed = uri.query().is_none()
                    && route.provider == Provider::Stripe
                    && (uri.path() == clean && (id_ok || !route.path.contains('{')));
                prop_assert_eq!(allowed, well_formed, "{} {}", route.method, url);
            }
        }
    }
}
