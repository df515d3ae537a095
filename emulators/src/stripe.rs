//! Stripe's Billing Meters API as the API reference describes it: meter events
//! (`POST /v1/billing/meter_events`) with identifier dedupe and
//! `Idempotency-Key` replay, both forgotten after 24 hours; meters
//! (`GET /v1/billing/meters[/{id}]`); and event summaries
//! (`GET /v1/billing/meters/{id}/event_summaries`), eventually consistent.
//!
//! The emulator has its own clock, which tests move, so "25 hours later" takes
//! no time. Facts it follows are in `specs/README.md` ("Reading Stripe back").

mod auth;
mod errors;
mod meters;
mod pagination;
mod summaries;
#[cfg(test)]
mod testing;

use crate::form::decode_form;
use crate::server::{Fault, Faults, Recorded, Reply, Server};
use auth::check_auth;
use errors::{canned, error, invalid, not_found_route, parameter_missing};
pub use meters::{Formula, MeterSpec};
use meters::{Meter, list_meters, retrieve_meter};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use summaries::{aggregate, summaries};

const PATH: &str = "/v1/billing/meter_events";
const METERS: &str = "/v1/billing/meters";
const MAX_AGE: i64 = 35 * 86_400;
const MAX_AHEAD: i64 = 300;
/// Stripe enforces identifier uniqueness "within a rolling period of at least
/// 24 hours", and idempotency keys "can be pruned once they are at least 24
/// hours old": the emulator forgets both at exactly 24 hours, the least it may.
pub const DEDUPE_WINDOW: i64 = 86_400;
/// How long after it is received an event starts counting in summaries, by
/// default (no figure is published; third parties report minutes).
pub const DEFAULT_PROCESSING_LAG: i64 = 60;

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

struct Saved {
    body: Vec<u8>,
    status: u16,
    response: Vec<u8>,
    created: i64,
}

struct State {
    secret_key: String,
    events: Vec<MeterEvent>,
    /// Events by event name and each payload value, so a summary does not scan
    /// every event (a 30-day backfill of 1,000 customers holds 30,000).
    by_payload: HashMap<(String, String), Vec<usize>>,
    /// When each identifier was last accepted.
    identifiers: HashMap<String, i64>,
    idempotency: HashMap<String, Saved>,
    /// Oldest first; listed newest first.
    meters: Vec<Meter>,
    /// Faults for writes (POST) and for reads (GET), queued apart so a test
    /// aims at one without counting the other.
    faults: Faults,
    read_faults: Faults,
    ids: RandomState,
    counter: u64,
    /// Added to the real clock.
    clock_offset: i64,
    processing_lag: i64,
}

impl State {
    fn new(secret_key: &str) -> State {
        State {
            secret_key: secret_key.into(),
            events: Vec::new(),
            by_payload: HashMap::new(),
            identifiers: HashMap::new(),
            idempotency: HashMap::new(),
            meters: Vec::new(),
            faults: Faults::default(),
            read_faults: Faults::default(),
            ids: RandomState::new(),
            counter: 0,
            clock_offset: 0,
            processing_lag: DEFAULT_PROCESSING_LAG,
        }
    }

    fn now(&self) -> i64 {
        crate::unix_now() + self.clock_offset
    }

    fn random(&mut self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut out = String::from(prefix);
        while out.len() < prefix.len() + len {
            self.counter += 1;
            let mut n = self.ids.hash_one(self.counter);
            for _ in 0..8 {
                out.push(ALPHABET[(n % 62) as usize] as char);
                n /= 62;
            }
        }
        out.truncate(prefix.len() + len);
        out
    }
}

/// A running Stripe emulator.
pub struct Stripe {
    server: Server,
    state: Arc<Mutex<State>>,
}

/// The state, even after a handler panicked while holding it: every handler
/// leaves it consistent between statements, so a later request may go on.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stripe {
    /// Starts on a free loopback port, accepting `secret_key` as Bearer or Basic
    /// auth. It has no meters until [`Stripe::add_meter`].
    pub fn start(secret_key: &str) -> std::io::Result<Stripe> {
        Stripe::start_with(secret_key, None)
    }

    /// [`Stripe::start`], over HTTPS with `tls` when given.
    pub fn start_with(
        secret_key: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Stripe> {
        let state = Arc::new(Mutex::new(State::new(secret_key)));
        let shared = state.clone();
        let handler = Arc::new(move |r: &Recorded| {
            let mut state = lock(&shared);
            let request_id = state.random("req_", 14);
            let fault = if r.method == "POST" {
                state.faults.next()
            } else {
                state.read_faults.next()
            };
            handle(&mut state, r, fault)
                .with_header("request-id", request_id)
                .after(fault)
        });
        let server = Server::start_with(handler, tls)?;
        Ok(Stripe { server, state })
    }

    /// The base URL to give usage-sync (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far, as it arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Connections accepted so far (over HTTPS: TLS handshakes completed).
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// Every meter event accepted so far, counted or not.
    pub fn events(&self) -> Vec<MeterEvent> {
        lock(&self.state).events.clone()
    }

    /// Creates a meter; returns its id. Lists show the newest first.
    pub fn add_meter(&self, spec: MeterSpec) -> String {
        lock(&self.state).add_meter(spec)
    }

    /// Moves the emulator's clock by `seconds` (back when negative): what it
    /// forgets, what it has processed, and the 35-day and 5-minute limits follow.
    pub fn shift_clock(&self, seconds: i64) {
        lock(&self.state).clock_offset += seconds;
    }

    /// How long an event takes to count in summaries.
    pub fn set_processing_lag(&self, seconds: i64) {
        lock(&self.state).processing_lag = seconds;
    }

    /// What Stripe bills in the end for `customer` on the meter of
    /// `event_name` over `[start, end)`, every event processed: the summary.
    pub fn billed(&self, event_name: &str, customer: &str, start: i64, end: i64) -> f64 {
        let state = lock(&self.state);
        let Some(meter) = state.meter_of(event_name) else {
            return 0.0;
        };
        aggregate(&state, meter, customer, start, end, i64::MAX)
    }

    /// Injects `fault` into every following write (POST; `None` to heal).
    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).faults.set(fault);
    }

    /// Injects these faults into the next writes (POST), one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).faults.push(faults);
    }

    /// Records an event as another writer would have, already processed (it
    /// counts in summaries at once): for planting what Stripe holds. The
    /// payload uses the keys of the active meter of `event_name`.
    pub fn plant(&self, event_name: &str, customer: &str, timestamp: i64, value: &str) {
        let mut state = lock(&self.state);
        let (customer_key, value_key) = match state.meter_of(event_name) {
            Some(m) => (m.spec.customer_key.clone(), m.spec.value_key.clone()),
            None => ("stripe_customer_id".into(), "value".into()),
        };
        let params: BTreeMap<String, String> = [
            ("event_name".to_string(), event_name.to_string()),
            ("timestamp".into(), timestamp.to_string()),
            (format!("payload[{customer_key}]"), customer.to_string()),
            (format!("payload[{value_key}]"), value.to_string()),
        ]
        .into_iter()
        .collect();
        record(&mut state, &params);
        let lag = state.processing_lag;
        if let Some(event) = state.events.last_mut() {
            event.created -= lag + 1;
        }
    }

    /// Injects `fault` into every following read (GET; `None` to heal).
    pub fn set_read_fault(&self, fault: Option<Fault>) {
        lock(&self.state).read_faults.set(fault);
    }

    /// Injects these faults into the next reads (GET), one each.
    pub fn push_read_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).read_faults.push(faults);
    }
}

fn handle(state: &mut State, request: &Recorded, fault: Option<Fault>) -> Reply {
    if let Some(reply) = Reply::hostile(fault, request) {
        return reply;
    }
    match fault {
        Some(Fault::Status(status)) => return canned(status),
        Some(Fault::TooManyRequests { retry_after }) => {
            let reply = canned(429);
            return match retry_after {
                Some(secs) => reply.with_header("retry-after", secs.to_string()),
                None => reply,
            };
        }
        Some(Fault::MalformedJson) => {
            let mut reply = canned(200);
            reply.body = br#"{"object": "billing.meter_ev"#.to_vec();
            return reply;
        }
        _ => {}
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let route = match (request.method.as_str(), path) {
        ("POST", PATH) => Route::RecordEvent,
        ("GET", METERS) => Route::ListMeters,
        ("GET", p) => match p.strip_prefix(METERS).and_then(|r| r.strip_prefix('/')) {
            Some(id) if !id.is_empty() && !id.contains('/') => Route::Meter(id),
            Some(rest) => match rest.strip_suffix("/event_summaries") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Summaries(id),
                _ => return not_found_route(request),
            },
            None => return not_found_route(request),
        },
        _ => return not_found_route(request),
    };
    if let Some(reply) = check_auth(&state.secret_key, request.header("authorization")) {
        return reply;
    }
    let Some(params) = decode_form(query.as_bytes()) else {
        return invalid("", "Invalid request: the query is not valid form encoding.");
    };
    match route {
        Route::RecordEvent => record_event(state, request, fault),
        Route::ListMeters => list_meters(state, &params),
        Route::Meter(id) => retrieve_meter(state, id, &params),
        Route::Summaries(id) => summaries(state, id, &params),
    }
}

enum Route<'a> {
    RecordEvent,
    ListMeters,
    Meter(&'a str),
    Summaries(&'a str),
}

fn record_event(state: &mut State, request: &Recorded, fault: Option<Fault>) -> Reply {
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
    let value_key = state
        .meter_of(event_name)
        .map_or("value", |m| m.spec.value_key.as_str());
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

#[cfg(test)]
mod tests {
    use super::testing::{add_meter, event, get, post};
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_handler_that_panicked_holding_the_state_does_not_fail_later_requests() {
        let stripe = Stripe::start("sk_test_x").unwrap();
        stripe.add_meter(MeterSpec::sum("api_calls"));
        let state = stripe.state.clone();
        let panicked = std::thread::spawn(move || {
            let _held = state.lock().unwrap();
            panic!("a handler panics while holding the state");
        })
        .join();
        assert!(panicked.is_err() && stripe.state.is_poisoned());
        // A real request over the wire, then the test API, both still work.
        use std::io::{Read, Write};
        let address = stripe.url().trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /v1/billing/meters HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer sk_test_x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("api_calls"), "{answer}");
        assert!(stripe.events().is_empty());
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

    #[test]
    fn summaries_count_processed_events_with_the_meters_keys() {
        let mut state = State::new("sk_test_x");
        let meter = add_meter(
            &mut state,
            MeterSpec {
                customer_key: "org".into(),
                ..MeterSpec::sum("calls")
            },
        );
        let day = (crate::unix_now() / 86_400 - 3) * 86_400;
        assert_eq!(
            event(
                &mut state,
                "a",
                "1",
                "payload[org]=cus_1&payload[value]=5",
                day + 10
            ),
            200
        );
        assert_eq!(
            event(
                &mut state,
                "b",
                "2",
                "payload[org]=cus_1&payload[value]=7",
                day + 86_400 + 10
            ),
            200
        );
        // Accepted, but lacking the meter's customer key: never counted.
        assert_eq!(
            event(
                &mut state,
                "c",
                "3",
                "payload[stripe_customer_id]=cus_1&payload[value]=100",
                day + 10
            ),
            200
        );
        let url = format!(
            "/v1/billing/meters/{meter}/event_summaries?customer=cus_1&start_time={day}&end_time={}&value_grouping_window=day",
            day + 2 * 86_400
        );
        // Not processed yet: eventually consistent.
        let (status, list) = get(&mut state, &url);
        assert_eq!(status, 200);
        assert_eq!(list["data"][0]["aggregated_value"], 0.0);
        state.clock_offset = DEFAULT_PROCESSING_LAG;
        let (_, list) = get(&mut state, &url);
        assert_eq!(list["object"], "list");
        // Newest window first, values as floats.
        assert_eq!(list["data"][0]["start_time"], day + 86_400);
        assert_eq!(list["data"][0]["aggregated_value"], 7.0);
        assert_eq!(list["data"][1]["aggregated_value"], 5.0);
        assert_eq!(list["has_more"], false);
        // Paginated.
        let (_, first) = get(&mut state, &format!("{url}&limit=1"));
        assert_eq!(first["has_more"], true);
        let after = first["data"][0]["id"].as_str().unwrap().to_string();
        let (_, second) = get(&mut state, &format!("{url}&limit=1&starting_after={after}"));
        assert_eq!(second["data"][0]["aggregated_value"], 5.0);
        assert_eq!(second["has_more"], false);
    }

    #[test]
    fn summaries_refuse_what_stripe_refuses() {
        let mut state = State::new("sk_test_x");
        let meter = add_meter(&mut state, MeterSpec::sum("calls"));
        let base = format!("/v1/billing/meters/{meter}/event_summaries");
        for (query, param) in [
            ("start_time=0&end_time=3600", "customer"),
            ("customer=c&end_time=3600", "start_time"),
            ("customer=c&start_time=30&end_time=3600", "start_time"),
            (
                "customer=c&start_time=60&end_time=3600&value_grouping_window=hour",
                "start_time",
            ),
            (
                "customer=c&start_time=0&end_time=3600&value_grouping_window=day",
                "end_time",
            ),
            ("customer=c&start_time=0&end_time=60&limit=101", "limit"),
        ] {
            let (status, body) = get(&mut state, &format!("{base}?{query}"));
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"]["param"], param, "{query}");
        }
        let (status, _) = get(
            &mut state,
            "/v1/billing/meters/mtr_nope/event_summaries?customer=c&start_time=0&end_time=60",
        );
        assert_eq!(status, 404);
    }

    #[test]
    fn a_pre_aggregated_meter_keeps_the_last_event_received_per_bucket() {
        let mut state = State::new("sk_test_x");
        add_meter(
            &mut state,
            MeterSpec {
                event_time_window: Some(86_400),
                ..MeterSpec::sum("calls")
            },
        );
        let day = (crate::unix_now() / 86_400 - 3) * 86_400;
        let payload = |v: u32| format!("payload[stripe_customer_id]=cus_1&payload[value]={v}");
        assert_eq!(event(&mut state, "a", "1", &payload(5), day + 86_000), 200);
        // Received later with an earlier timestamp: it still wins.
        assert_eq!(event(&mut state, "b", "2", &payload(9), day + 10), 200);
        let meter = &state.meters[0];
        assert_eq!(
            aggregate(&state, meter, "cus_1", day, day + 86_400, i64::MAX),
            9.0
        );
    }
}
