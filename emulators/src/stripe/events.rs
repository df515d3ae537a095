//! Meter events (`POST /v1/billing/meter_events`): validation, recording,
//! identifier dedupe and `Idempotency-Key` replay, both forgotten after
//! 24 hours; and planting events as another writer would have.

use super::State;
use super::errors::{canned, error, invalid, parameter_missing};
use crate::form::decode_form;
use crate::server::{Fault, Recorded, Reply};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// How far back a timestamp may be: 35 days.
const MAX_AGE: i64 = 35 * 86_400;
/// How far ahead a timestamp may be: 5 minutes.
const MAX_AHEAD: i64 = 300;
/// Stripe enforces identifier uniqueness "within a rolling period of at least
/// 24 hours", and idempotency keys "can be pruned once they are at least 24
/// hours old": the emulator forgets both at exactly 24 hours, the least it may.
pub const DEDUPE_WINDOW: i64 = 86_400;

/// A recorded `billing.meter_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    /// The event's identifier (sent, or generated when none was).
    pub identifier: String,
    /// The meter's event name it was sent for.
    pub event_name: String,
    /// `payload[...]` as sent, keys without the brackets.
    pub payload: BTreeMap<String, String>,
    /// The `timestamp` sent (or the time received).
    pub timestamp: i64,
    /// When Stripe received it, on the emulator's clock.
    pub created: i64,
}

impl MeterEvent {
    /// The `billing.meter_event` object Stripe answers.
    fn to_json(&self) -> Value {
        json!({
            "object": "billing.meter_event",
            "created": self.created,
            "event_name": self.event_name,
            "identifier": self.identifier,
            "livemode": false,
            "payload": self.payload,
            "timestamp": self.timestamp,
        })
    }
}

/// An answer saved under an `Idempotency-Key`, with the body it answered.
pub(super) struct Saved {
    body: Vec<u8>,
    status: u16,
    response: Vec<u8>,
    created: i64,
}

/// A meter event call, one at a time per customer and meter: the call is in
/// flight for the state's `meter_event_time`, and another for the same
/// customer and meter arriving meanwhile gets 429, before validation and the
/// idempotency layer (nothing is recorded or saved).
pub(super) fn one_at_a_time(
    state: &mut State,
    request: &Recorded,
    record: impl FnOnce(&mut State) -> Reply,
) -> Reply {
    let time = state.meter_event_time;
    if time.is_zero() {
        return record(state);
    }
    let ledger = decode_form(&request.body).and_then(|params| {
        let event_name = params.get("event_name")?.clone();
        let (customer_key, _) = state.payload_keys(&event_name);
        let customer = params.get(&format!("payload[{customer_key}]"))?.clone();
        Some((event_name, customer))
    });
    let Some(ledger) = ledger else {
        return record(state);
    };
    let now = std::time::Instant::now();
    if state.writing.get(&ledger).is_some_and(|until| now < *until) {
        state.refused_overlapping += 1;
        return canned(429);
    }
    state.writing.insert(ledger, now + time);
    let mut reply = record(state);
    // Answered once the call's time is up: a client that waits for the
    // answer before its next call never overlaps.
    reply.delay = reply.delay.max(time);
    reply
}

/// `POST /v1/billing/meter_events`: validated, then saved under its
/// `Idempotency-Key` and replayed for 24 hours; `fault` may record the event
/// and answer otherwise.
pub(super) fn record_event(state: &mut State, request: &Recorded, fault: Option<Fault>) -> Reply {
    if !request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        return invalid(
            "",
            "Invalid request: the body must be application/x-www-form-urlencoded.",
        );
    }
    let Some(params) = decode_form(&request.body) else {
        return invalid("", "Invalid request: the body is not valid form encoding.");
    };
    if let Err(reply) = validate(state, &params) {
        return reply;
    }
    // Validation and auth failures happen before the idempotency layer; from
    // here on Stripe saves the answer under the key and replays it, for 24 hours.
    let now = state.now();
    let key = request.header("idempotency-key").map(str::to_string);
    // A key older than 24 hours is pruned: as if never seen.
    let saved = key
        .as_ref()
        .and_then(|k| state.idempotency.get(k))
        .filter(|saved| now - saved.created < DEDUPE_WINDOW);
    if let Some(saved) = saved {
        if saved.body != request.body {
            return error(
                400,
                "idempotency_error",
                None,
                None,
                &format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{}' if you meant to execute a different request.",
                    key.as_deref().unwrap_or_default()
                ),
            );
        }
        return Reply {
            status: saved.status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: saved.response.clone(),
            delay: Default::default(),
            reset: false,
            endless: false,
        }
        .with_header("idempotent-replayed", "true")
        .with_header("idempotency-key", key.unwrap_or_default());
    }
    let mut reply = record(state, &params);
    match fault {
        Some(Fault::RecordThenStatus(status)) => reply = canned(status),
        Some(Fault::RecordThenRetryAfter(secs)) => {
            reply = canned(503).with_header("retry-after", secs.to_string())
        }
        Some(Fault::RecordThenOtherEvent) if reply.status == 200 => {
            let mut other: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            other["identifier"] = "someone-elses-event".into();
            reply = Reply::json(200, &other);
        }
        _ => {}
    }
    if let Some(key) = key {
        state.idempotency.insert(
            key.clone(),
            Saved {
                body: request.body.clone(),
                status: reply.status,
                response: reply.body.clone(),
                created: now,
            },
        );
        return reply.with_header("idempotency-key", key);
    }
    reply
}

/// Records the event unless its identifier was accepted within the last
/// 24 hours, indexing it by each payload value for summaries.
fn record(state: &mut State, params: &BTreeMap<String, String>) -> Reply {
    let identifier = match params.get("identifier") {
        Some(id) => id.clone(),
        None => state.random("", 24),
    };
    let now = state.now();
    // Unique only within the rolling window: after it, the same identifier is
    // a new event.
    if let Some(&seen) = state.identifiers.get(&identifier)
        && now - seen < DEDUPE_WINDOW
    {
        return invalid(
            "identifier",
            &format!("An event already exists with identifier {identifier}."),
        )
        .with_header("stripe-should-retry", "false");
    }
    state.identifiers.insert(identifier.clone(), now);
    // An event without the meter's keys, or for no meter, is accepted here and
    // only reported later (an error report); it never counts.
    let event = MeterEvent {
        identifier,
        event_name: params["event_name"].clone(),
        payload: params
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("payload[")?.strip_suffix(']')?;
                Some((key.to_string(), v.clone()))
            })
            .collect(),
        timestamp: params
            .get("timestamp")
            .map_or(Ok(now), |t| t.parse())
            .unwrap_or(now),
        created: now,
    };
    let body = event.to_json();
    let at = state.events.len();
    let mut values: Vec<&String> = event.payload.values().collect();
    values.sort();
    values.dedup();
    for value in values {
        state
            .by_payload
            .entry((event.event_name.clone(), value.clone()))
            .or_default()
            .push(at);
    }
    state.events.push(event);
    Reply::json(200, &body)
}

/// Stripe's synchronous checks: known parameters, `event_name`, a payload,
/// a whole-number value of at most 15 digits, the identifier's length, and a
/// timestamp within the past 35 days and at most 5 minutes ahead.
fn validate(state: &State, params: &BTreeMap<String, String>) -> Result<(), Reply> {
    for key in params.keys() {
        let known = matches!(key.as_str(), "event_name" | "identifier" | "timestamp")
            || key.starts_with("payload[")
            || key.starts_with("expand[");
        if !known {
            return Err(invalid(key, &format!("Received unknown parameter: {key}")));
        }
    }
    let event_name = params
        .get("event_name")
        .ok_or_else(|| parameter_missing("event_name"))?;
    if event_name.is_empty() {
        return Err(parameter_missing("event_name"));
    }
    if event_name.chars().count() > 100 {
        return Err(invalid(
            "event_name",
            "Invalid string: must be at most 100 characters",
        ));
    }
    if !params.keys().any(|k| k.starts_with("payload[")) {
        return Err(parameter_missing("payload"));
    }
    // The value is checked synchronously where the meter reads it.
    let (_, value_key) = state.payload_keys(event_name);
    let value_param = format!("payload[{value_key}]");
    if let Some(value) = params.get(&value_param) {
        let digits = value.strip_prefix('-').unwrap_or(value);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                &value_param,
                &format!(
                    "Invalid value for {value_param}: {value}. Meter event values must be whole numbers."
                ),
            ));
        }
        if digits.trim_start_matches('0').len() > 15 {
            return Err(invalid(
                &value_param,
                "Meter event values can have at most 15 significant digits.",
            ));
        }
    }
    if let Some(id) = params.get("identifier")
        && (id.is_empty() || id.chars().count() > 100)
    {
        return Err(invalid(
            "identifier",
            "Invalid string: identifier must be 1 to 100 characters",
        ));
    }
    if let Some(ts) = params.get("timestamp") {
        let ts: i64 = ts
            .parse()
            .map_err(|_| invalid("timestamp", &format!("Invalid integer: {ts}")))?;
        let now = state.now();
        if ts < now - MAX_AGE {
            return Err(invalid(
                "timestamp",
                "Timestamp must be within the past 35 calendar days.",
            ));
        }
        if ts > now + MAX_AHEAD {
            return Err(invalid(
                "timestamp",
                "Timestamp must not be more than 5 minutes in the future.",
            ));
        }
    }
    Ok(())
}

/// Records an event as another writer would have, already processed (it counts
/// in summaries at once), with the keys of the active meter of `event_name`.
pub(super) fn plant(
    state: &mut State,
    event_name: &str,
    customer: &str,
    timestamp: i64,
    value: &str,
) {
    let (customer_key, value_key) = state.payload_keys(event_name);
    let params: BTreeMap<String, String> = [
        ("event_name".to_string(), event_name.to_string()),
        ("timestamp".into(), timestamp.to_string()),
        (format!("payload[{customer_key}]"), customer.to_string()),
        (format!("payload[{value_key}]"), value.to_string()),
    ]
    .into_iter()
    .collect();
    record(state, &params);
    let lag = state.processing_lag;
    if let Some(event) = state.events.last_mut() {
        event.created -= lag + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{event, post};
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn dedupes_identifiers_and_replays_idempotency_keys() {
        let mut state = State::new("sk_test_x");
        let body = format!(
            "event_name=calls&payload[stripe_customer_id]=cus_1&payload[value]=5&identifier=id-1&timestamp={}",
            crate::unix_now() - 60
        );
        let first = post(&mut state, "key-1", &body);
        assert_eq!(first.status, 200);
        let event: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(event["object"], "billing.meter_event");
        assert_eq!(event["identifier"], "id-1");
        assert_eq!(event["payload"]["value"], "5");

        // Same key, same body: the first answer again, marked as a replay.
        let replay = post(&mut state, "key-1", &body);
        assert_eq!((replay.status, &replay.body), (200, &first.body));
        assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));

        // Another key, same identifier: Stripe's duplicate answer.
        let duplicate = post(&mut state, "key-2", &body);
        assert_eq!(duplicate.status, 400);
        let error: Value = serde_json::from_slice(&duplicate.body).unwrap();
        assert_eq!(
            error["error"]["message"],
            "An event already exists with identifier id-1."
        );
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(header(&duplicate, "stripe-should-retry"), Some("false"));

        // Same key, other parameters: an idempotency error.
        let misuse = post(&mut state, "key-1", &body.replace("value]=5", "value]=6"));
        assert_eq!(misuse.status, 400);
        let error: Value = serde_json::from_slice(&misuse.body).unwrap();
        assert_eq!(error["error"]["type"], "idempotency_error");

        assert_eq!(state.events.len(), 1);
    }

    #[test]
    fn validates_the_documented_constraints() {
        let mut state = State::new("sk_test_x");
        let now = crate::unix_now();
        for (body, param) in [
            (
                "payload[stripe_customer_id]=c&payload[value]=1".to_string(),
                "event_name",
            ),
            ("event_name=e".to_string(), "payload"),
            (
                "event_name=e&payload[stripe_customer_id]=c&payload[value]=1.5".to_string(),
                "payload[value]",
            ),
            (
                "event_name=e&payload[stripe_customer_id]=c&payload[value]=1234567890123456"
                    .to_string(),
                "payload[value]",
            ),
            (
                format!(
                    "event_name=e&payload[stripe_customer_id]=c&payload[value]=1&identifier={}",
                    "i".repeat(101)
                ),
                "identifier",
            ),
            (
                format!(
                    "event_name=e&payload[stripe_customer_id]=c&payload[value]=1&timestamp={}",
                    now - 36 * 86_400
                ),
                "timestamp",
            ),
            (
                format!(
                    "event_name=e&payload[stripe_customer_id]=c&payload[value]=1&timestamp={}",
                    now + 600
                ),
                "timestamp",
            ),
            (
                "event_name=e&payload[stripe_customer_id]=c&payload[value]=1&bogus=1".to_string(),
                "bogus",
            ),
        ] {
            let reply = post(&mut state, &body, &body);
            assert_eq!(reply.status, 400, "{body}");
            let error: Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(error["error"]["param"], param, "{body}");
        }
        assert!(state.events.is_empty());
        assert!(
            state.idempotency.is_empty(),
            "validation errors are not saved"
        );
    }

    #[test]
    fn forgets_identifiers_and_idempotency_keys_after_24_hours() {
        let mut state = State::new("sk_test_x");
        let ts = crate::unix_now() - 2 * 86_400;
        let payload = "payload[stripe_customer_id]=cus_1&payload[value]=5";
        assert_eq!(event(&mut state, "k1", "id-1", payload, ts), 200);
        state.clock_offset = DEDUPE_WINDOW - 1;
        assert_eq!(event(&mut state, "k2", "id-1", payload, ts), 400);
        state.clock_offset = DEDUPE_WINDOW;
        // A day later the same identifier is a new event, and the old key is gone.
        assert_eq!(event(&mut state, "k1", "id-1", payload, ts), 200);
        assert_eq!(state.events.len(), 2);
    }
}
