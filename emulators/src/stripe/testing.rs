//! Requests for the unit tests, handed straight to the router as they would
//! arrive over the wire, shared so each module's tests sit beside its code.

use super::{MeterSpec, PATH, State, handle};
use crate::server::{Recorded, Reply};
use serde_json::Value;

/// `POST /v1/billing/meter_events` with `body`, authorized, under
/// `Idempotency-Key: key`.
pub(super) fn post(state: &mut State, key: &str, body: &str) -> Reply {
    let request = Recorded {
        method: "POST".into(),
        target: PATH.into(),
        headers: vec![
            ("authorization".into(), "Bearer sk_test_x".into()),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("idempotency-key".into(), key.into()),
        ],
        body: body.as_bytes().to_vec(),
        version: "HTTP/1.1".into(),
        at: std::time::Instant::now(),
    };
    handle(state, &request, None)
}

/// `GET target`, authorized: the status and the JSON answer.
pub(super) fn get(state: &mut State, target: &str) -> (u16, Value) {
    let request = Recorded {
        method: "GET".into(),
        target: target.into(),
        headers: vec![("authorization".into(), "Bearer sk_test_x".into())],
        body: Vec::new(),
        version: "HTTP/1.1".into(),
        at: std::time::Instant::now(),
    };
    let reply = handle(state, &request, None);
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

/// Creates a meter in `state`; returns its id.
pub(super) fn add_meter(state: &mut State, spec: MeterSpec) -> String {
    state.add_meter(spec)
}

/// Records a `calls` event with `payload` (form-encoded), identifier `id`
/// and timestamp `ts` under `key`: the status.
pub(super) fn event(state: &mut State, key: &str, id: &str, payload: &str, ts: i64) -> u16 {
    let body = format!("event_name=calls&{payload}&identifier={id}&timestamp={ts}");
    post(state, key, &body).status
}
