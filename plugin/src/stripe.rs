//! Step 2, `record-stripe-meter`: Stripe `POST /v1/billing/meter_events`.

use crate::form;
use crate::inputs::{Plan, Window};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const PATH: &str = "/v1/billing/meter_events";
/// Pinned as Stripe's official clients pin it, so the account default cannot change the answer.
pub const API_VERSION: &str = "2026-10-28.endive";

/// The event's `identifier`: the same customer, meter, event name and window
/// always give the same one, so Stripe refuses a second event for them.
/// The Stripe customer is left out on purpose: moving usage to another Stripe
/// customer must not bill it again.
pub fn identifier(plan: &Plan, window: &Window) -> String {
    let mut hash = Sha256::new();
    for part in [
        "usage-sync/v1",
        &plan.customer_id,
        &plan.meter_api_name,
        &plan.stripe_event_name,
    ] {
        // Length-prefixed, so no two different inputs hash the same text.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("usync-{}-{}-{hex}", window.start, window.end)
}

/// The form body, field for field what stripe-python sends for
/// `MeterEvent.create(event_name=.., payload={..}, identifier=.., timestamp=..)`.
pub fn request_body(plan: &Plan, window: &Window, value: &str, identifier: &str) -> String {
    form::encode(&[
        ("event_name", plan.stripe_event_name.as_str()),
        ("payload[stripe_customer_id]", plan.stripe_customer.as_str()),
        ("payload[value]", value),
        ("identifier", identifier),
        ("timestamp", &window.timestamp().to_string()),
    ])
}

/// The parts of a `billing.meter_event` the workflow outputs.
#[derive(Debug, Deserialize)]
pub struct MeterEvent {
    pub identifier: String,
    pub event_name: String,
}

pub fn parse_event(body: &[u8]) -> Result<MeterEvent, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "Stripe answered 200 but not with a billing.meter_event ({e}): {}",
            crate::http::snippet(body)
        )
    })
}

/// Stripe's `{"error": {...}}` body.
#[derive(Debug, Default, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
}

pub fn parse_error(body: &[u8]) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Envelope {
        error: ApiError,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

impl ApiError {
    /// True for Stripe's answer to a reused identifier: the event is already recorded.
    pub fn is_duplicate_of(&self, identifier: &str) -> bool {
        self.kind.as_deref() == Some("invalid_request_error")
            && self.message.as_deref()
                == Some(&format!(
                    "An event already exists with identifier {identifier}."
                ))
    }

    pub fn describe(&self) -> String {
        let mut text = self.message.clone().unwrap_or_else(|| "no message".into());
        let details: Vec<String> = [
            self.kind.as_ref().map(|t| format!("type {t}")),
            self.code.as_ref().map(|c| format!("code {c}")),
            self.param.as_ref().map(|p| format!("param {p}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !details.is_empty() {
            text = format!("{text} ({})", details.join(", "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            customer_id: "acme".into(),
            meter_api_name: "api-calls".into(),
            stripe_customer: "cus_123".into(),
            stripe_event_name: "api_calls".into(),
            usage_quantity: None,
            window: DAY,
            pieces: vec![DAY],
        }
    }

    const DAY: Window = Window {
        start: 1_732_406_400,
        end: 1_732_492_800,
    };

    #[test]
    fn identifier_is_deterministic_short_and_specific() {
        let id = identifier(&plan(), &DAY);
        assert_eq!(id, identifier(&plan(), &DAY));
        assert!(id.len() <= 100, "{id}");
        assert!(id.starts_with("usync-1732406400-1732492800-"), "{id}");
        let mut other = plan();
        other.stripe_customer = "cus_999".into();
        assert_eq!(
            identifier(&other, &DAY),
            id,
            "the Stripe customer does not change it"
        );
        for change in [
            |p: &mut Plan| p.customer_id.push('x'),
            |p: &mut Plan| p.meter_api_name.push('x'),
            |p: &mut Plan| p.stripe_event_name.push('x'),
        ] {
            let mut p = plan();
            change(&mut p);
            assert_ne!(identifier(&p, &DAY), id);
        }
        let later = Window {
            start: DAY.start,
            end: DAY.end + 1,
        };
        assert_ne!(identifier(&plan(), &later), id);
        // Field boundaries matter: "ab"+"c" is not "a"+"bc".
        let (mut a, mut b) = (plan(), plan());
        a.customer_id = "ab".into();
        a.meter_api_name = "c".into();
        b.customer_id = "a".into();
        b.meter_api_name = "bc".into();
        assert_ne!(identifier(&a, &DAY), identifier(&b, &DAY));
    }

    #[test]
    fn body_orders_fields_as_the_official_client() {
        let p = plan();
        assert_eq!(
            request_body(&p, &DAY, "42", "usync-x"),
            "event_name=api_calls&payload[stripe_customer_id]=cus_123&payload[value]=42&identifier=usync-x&timestamp=1732492799"
        );
    }

    #[test]
    fn recognises_the_duplicate_identifier_answer() {
        let body = br#"{"error":{"message":"An event already exists with identifier usync-x.","type":"invalid_request_error"}}"#;
        let err = parse_error(body).unwrap();
        assert!(err.is_duplicate_of("usync-x"));
        assert!(!err.is_duplicate_of("usync-y"));
        let other = parse_error(br#"{"error":{"message":"No such customer","type":"invalid_request_error","code":"resource_missing","param":"payload"}}"#).unwrap();
        assert!(!other.is_duplicate_of("usync-x"));
        assert_eq!(
            other.describe(),
            "No such customer (type invalid_request_error, code resource_missing, param payload)"
        );
        assert!(parse_error(b"<html>").is_none());
    }
}
