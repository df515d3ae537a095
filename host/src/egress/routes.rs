//! The routes the workflow may call, per provider: the component's whole
//! authority. They are not written here but derived at build time from the
//! operations the steps of `specs/usage-sync.arazzo.yaml` name, in the
//! providers' OpenAPI descriptions (`host/build_routes.rs`).
//!
//! Matching is exact and strict, on the path as sent: segments compare
//! byte for byte (no case folding, no percent-decoding, no dot segments, no
//! empty segments), a path parameter is one segment of ASCII letters, digits
//! and `_` (Stripe ids), and the query may name only the parameters the
//! operation declares. Anything a server might normalise into another route
//! (`..`, `%2F`, `//`, `;`, a `?` in a segment) matches nothing.

use crate::egress::provider::Provider;

/// One operation of a provider API that a step of the workflow calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The Arazzo step that calls it.
    pub step: &'static str,
    /// Whose API.
    pub provider: Provider,
    /// The OpenAPI `operationId`.
    pub operation_id: &'static str,
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, `{name}` for a parameter.
    pub path: &'static str,
    /// The query parameters the operation declares.
    pub query: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/routes.rs"));

/// The longest path parameter taken (Stripe ids are far shorter).
const MAX_PARAMETER: usize = 255;

impl Route {
    /// Whether a request with this method, path (after the provider's base
    /// path) and query is a call of this route.
    pub fn matches(&self, method: &str, path: &str, query: Option<&str>) -> bool {
        method == self.method && path_matches(self.path, path) && self.query_allowed(query)
    }

    fn query_allowed(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return true };
        query.split('&').all(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            self.query.contains(&name)
        })
    }
}

fn path_matches(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.split('/'), path.split('/'));
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) => {
                let ok = if t.starts_with('{') && t.ends_with('}') {
                    is_parameter(p)
                } else {
                    t == p
                };
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn is_parameter(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_PARAMETER
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The route of `provider` a request calls, if any.
pub fn find(
    provider: Provider,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<&'static Route> {
    DECLARED
        .iter()
        .find(|r| r.provider == provider && r.matches(method, path, query))
}

/// The routes of `provider`, as `METHOD /path` for messages.
pub fn listed(provider: Provider) -> String {
    DECLARED
        .iter()
        .filter(|r| r.provider == provider)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the workflow calls, written out by hand: the oracle the document
    /// is checked against. A step that adds a route must add it here too.
    const EXPECTED: [(&str, Provider, &str, &str); 6] = [
        ("find-meter", Provider::Stripe, "GET", "/v1/billing/meters"),
        ("query-usage", Provider::Amberflo, "POST", "/usage"),
        (
            "read-subscriptions",
            Provider::Stripe,
            "GET",
            "/v1/subscriptions",
        ),
        ("read-invoices", Provider::Stripe, "GET", "/v1/invoices"),
        (
            "read-summaries",
            Provider::Stripe,
            "GET",
            "/v1/billing/meters/{id}/event_summaries",
        ),
        (
            "record-stripe-meter",
            Provider::Stripe,
            "POST",
            "/v1/billing/meter_events",
        ),
    ];

    #[test]
    fn the_document_declares_exactly_the_routes_the_workflow_calls() {
        let declared: Vec<_> = DECLARED
            .iter()
            .map(|r| (r.step, r.provider, r.method, r.path))
            .collect();
        assert_eq!(declared, EXPECTED);
    }

    #[test]
    fn every_step_of_the_component_is_a_step_of_the_document() {
        use crate::bindings::Step;
        for step in [
            Step::FindMeter,
            Step::QueryUsage,
            Step::ReadSummaries,
            Step::ReadSubscriptions,
            Step::ReadInvoices,
            Step::RecordStripeMeter,
        ] {
            let name = usage_sync_report::Step::from(step).name();
            assert!(
                DECLARED.iter().any(|r| r.step == name),
                "step {name} calls no declared route"
            );
        }
    }

    #[test]
    fn queries_name_only_declared_parameters() {
        let meters = find(Provider::Stripe, "GET", "/v1/billing/meters", None).unwrap();
        assert!(meters.matches(
            "GET",
            "/v1/billing/meters",
            Some("limit=100&starting_after=mtr_1")
        ));
        assert!(!meters.matches("GET", "/v1/billing/meters", Some("limit=100&expand[]=x")));
        // A range filter's bracketed names, as Stripe's clients send them;
        // nothing else in brackets.
        let invoices = find(Provider::Stripe, "GET", "/v1/invoices", None).unwrap();
        for query in ["created[gte]=1&limit=100", "created[lt]=1", "created=1"] {
            assert!(
                invoices.matches("GET", "/v1/invoices", Some(query)),
                "{query}"
            );
        }
        for query in [
            "created[gte][x]=1",
            "created[eq]=1",
            "customer[gte]=1",
            "expand[]=lines",
        ] {
            assert!(
                !invoices.matches("GET", "/v1/invoices", Some(query)),
                "{query}"
            );
        }
        let events = find(Provider::Stripe, "POST", "/v1/billing/meter_events", None).unwrap();
        assert!(!events.matches("POST", "/v1/billing/meter_events", Some("amount=1")));
    }

    #[test]
    fn normalisation_tricks_match_nothing() {
        for (method, path) in [
            ("GET", "/v1/billing/meters/../../v1/customers"),
            (
                "GET",
                "/v1/billing/meters/mtr_1/../../../customers/event_summaries",
            ),
            ("GET", "/v1/billing/meters/%2e%2e/event_summaries"),
            ("GET", "/v1/billing/meters/mtr_1%2Fx/event_summaries"),
            ("GET", "/v1/billing//meters"),
            ("GET", "//v1/billing/meters"),
            ("GET", "/v1/billing/meters/"),
            ("GET", "/V1/billing/meters"),
            ("get", "/v1/billing/meters"),
            ("POST", "/v1/billing/meter_events;x=1"),
            ("POST", "/v1/billing/meter_events%3Famount=1"),
            ("POST", "/v1/billing/meter_events/."),
            ("POST", "/usage/"),
            ("POST", "/ingest"),
            ("POST", "/v1/refunds"),
            ("GET", "/v1/customers"),
            ("DELETE", "/v1/customers/cus_1"),
        ] {
            for provider in [Provider::Stripe, Provider::Amberflo] {
                assert_eq!(find(provider, method, path, None), None, "{method} {path}");
            }
        }
    }
}
