//! Meters: creating them (the test API), listing them
//! (`GET /v1/billing/meters`) and retrieving one (`GET /v1/billing/meters/{id}`),
//! with Stripe's default payload keys.

use super::errors::{invalid, no_such_meter, unknown_param};
use super::pagination::page;
use super::{METERS, State};
use crate::server::Reply;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Stripe's default `customer_mapping.event_payload_key`.
const DEFAULT_CUSTOMER_KEY: &str = "stripe_customer_id";
/// Stripe's default `value_settings.event_payload_key`.
const DEFAULT_VALUE_KEY: &str = "value";

/// `default_aggregation.formula`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formula {
    /// Adds up the values.
    Sum,
    /// Counts events, whatever their values.
    Count,
    /// Bills the last value in the period.
    Last,
}

/// A meter to create in the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSpec {
    /// The `event_name` events must carry.
    pub event_name: String,
    /// The name shown in Stripe's dashboard.
    pub display_name: String,
    /// `default_aggregation.formula`.
    pub formula: Formula,
    /// `customer_mapping.event_payload_key`.
    pub customer_key: String,
    /// `value_settings.event_payload_key`.
    pub value_key: String,
    /// `event_time_window`: `Some(3600)` hourly or `Some(86400)` daily
    /// pre-aggregation; `None` for raw events.
    pub event_time_window: Option<i64>,
    /// `status`: active meters count events; inactive ones do not.
    pub active: bool,
}

impl MeterSpec {
    /// An active raw `sum` meter with Stripe's default payload keys.
    pub fn sum(event_name: &str) -> MeterSpec {
        MeterSpec {
            event_name: event_name.into(),
            display_name: event_name.into(),
            formula: Formula::Sum,
            customer_key: DEFAULT_CUSTOMER_KEY.into(),
            value_key: DEFAULT_VALUE_KEY.into(),
            event_time_window: None,
            active: true,
        }
    }
}

/// A meter as created: its id, its spec and when it was made.
pub(super) struct Meter {
    pub(super) id: String,
    pub(super) spec: MeterSpec,
    pub(super) created: i64,
}

impl Meter {
    /// The `billing.meter` object Stripe answers.
    pub(super) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": { "event_payload_key": self.spec.customer_key, "type": "by_id" },
            "default_aggregation": { "formula": match self.spec.formula {
                Formula::Sum => "sum",
                Formula::Count => "count",
                Formula::Last => "last",
            } },
            "display_name": self.spec.display_name,
            "event_name": self.spec.event_name,
            "event_time_window": match self.spec.event_time_window {
                Some(86_400) => json!("day"),
                Some(_) => json!("hour"),
                None => Value::Null,
            },
            "livemode": false,
            "status": if self.spec.active { "active" } else { "inactive" },
            "status_transitions": { "deactivated_at": Value::Null },
            "updated": self.created,
            "value_settings": { "event_payload_key": self.spec.value_key },
        })
    }
}

impl State {
    /// Creates a meter; returns its id (the same in every emulator).
    pub(super) fn add_meter(&mut self, spec: MeterSpec) -> String {
        let id = meter_id(self.meters.len());
        let created = self.now();
        self.meters.push(Meter {
            id: id.clone(),
            spec,
            created,
        });
        id
    }

    /// The active meter an event name belongs to.
    pub(super) fn meter_of(&self, event_name: &str) -> Option<&Meter> {
        self.meters
            .iter()
            .find(|m| m.spec.active && m.spec.event_name == event_name)
    }

    /// The payload keys (customer, value) an event of `event_name` is read
    /// with: its active meter's, or Stripe's defaults when it has none.
    pub(super) fn payload_keys(&self, event_name: &str) -> (&str, &str) {
        match self.meter_of(event_name) {
            Some(m) => (&m.spec.customer_key, &m.spec.value_key),
            None => (DEFAULT_CUSTOMER_KEY, DEFAULT_VALUE_KEY),
        }
    }
}

/// The id of the `n`th meter: the same in every emulator, so two runs against
/// two emulators print the same outputs.
fn meter_id(n: usize) -> String {
    format!("mtr_test{n:020}")
}

/// `GET /v1/billing/meters`: newest first, optionally by `status`, paged.
pub(super) fn list_meters(state: &State, params: &BTreeMap<String, String>) -> Reply {
    if let Some(key) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "limit" | "starting_after" | "status"))
    {
        return invalid(key, &format!("Received unknown parameter: {key}"));
    }
    if params.contains_key("ending_before") {
        return invalid("ending_before", "ending_before is not emulated");
    }
    let status = params.get("status").map(String::as_str);
    if let Some(s) = status
        && !matches!(s, "active" | "inactive")
    {
        return invalid("status", &format!("Invalid status: {s}"));
    }
    let items = state
        .meters
        .iter()
        .rev()
        .filter(|m| status.is_none_or(|s| (s == "active") == m.spec.active))
        .map(|m| (m.id.clone(), m.to_json()))
        .collect();
    page(items, params, METERS)
}

/// `GET /v1/billing/meters/{id}`: the meter, taking no parameters.
pub(super) fn retrieve_meter(state: &State, id: &str, params: &BTreeMap<String, String>) -> Reply {
    match state.meters.iter().find(|m| m.id == id) {
        Some(meter) if params.is_empty() => Reply::json(200, &meter.to_json()),
        Some(_) => unknown_param(params),
        None => no_such_meter(id),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{add_meter, get};
    use super::*;

    #[test]
    fn meters_are_listed_newest_first_and_retrieved_by_id() {
        let mut state = State::new("sk_test_x");
        let old = add_meter(&mut state, MeterSpec::sum("calls"));
        let new = add_meter(&mut state, MeterSpec::sum("other"));
        let (_, list) = get(&mut state, "/v1/billing/meters?limit=1");
        assert_eq!(list["data"][0]["id"], new.as_str());
        assert_eq!(list["has_more"], true);
        let (_, next) = get(
            &mut state,
            &format!("/v1/billing/meters?limit=1&starting_after={new}"),
        );
        assert_eq!(next["data"][0]["id"], old.as_str());
        assert_eq!(next["data"][0]["default_aggregation"]["formula"], "sum");
        assert_eq!(
            next["data"][0]["customer_mapping"]["event_payload_key"],
            "stripe_customer_id"
        );
        assert_eq!(next["has_more"], false);
        let (status, one) = get(&mut state, &format!("/v1/billing/meters/{old}"));
        assert_eq!((status, one["event_name"].as_str()), (200, Some("calls")));
    }
}
