//! Stripe's `POST /v1/billing/meter_events`, as the API reference describes it,
//! with its identifier dedupe and `Idempotency-Key` replay.

use crate::server::{Fault, Faults, Recorded, Reply, Server};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

const PATH: &str = "/v1/billing/meter_events";
const MAX_AGE: i64 = 35 * 86_400;
const MAX_AHEAD: i64 = 300;

/// A recorded `billing.meter_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    pub identifier: String,
    pub event_name: String,
    pub payload: BTreeMap<String, String>,
    pub timestamp: i64,
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
}

struct State {
    secret_key: String,
    events: Vec<MeterEvent>,
    identifiers: HashSet<String>,
    idempotency: HashMap<String, Saved>,
    faults: Faults,
    ids: RandomState,
    counter: u64,
}

impl State {
    fn new(secret_key: &str) -> State {
        State {
            secret_key: secret_key.into(),
            events: Vec::new(),
            identifiers: HashSet::new(),
            idempotency: HashMap::new(),
            faults: Faults::default(),
            ids: RandomState::new(),
            counter: 0,
        }
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

impl Stripe {
    /// Starts on a free loopback port, accepting `secret_key` as Bearer or Basic auth.
    pub fn start(secret_key: &str) -> std::io::Result<Stripe> {
        let state = Arc::new(Mutex::new(State::new(secret_key)));
        let shared = state.clone();
        let server = Server::start(Arc::new(move |r: &Recorded| {
            let mut state = shared.lock().unwrap();
            let request_id = state.random("req_", 14);
            let fault = state.faults.next();
            handle(&mut state, r, fault)
                .with_header("request-id", request_id)
                .after(fault)
        }))?;
        Ok(Stripe { server, state })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Every meter event recorded so far.
    pub fn events(&self) -> Vec<MeterEvent> {
        self.state.lock().unwrap().events.clone()
    }

    /// Injects `fault` into every following request (`None` to heal).
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().faults.set(fault);
    }

    /// Injects these faults into the next requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.push(faults);
    }
}

fn error(status: u16, kind: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Reply {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = code.into();
        error["doc_url"] = format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        )
        .into();
    }
    if let Some(param) = param {
        error["param"] = param.into();
    }
    Reply::json(status, &json!({ "error": error }))
}

fn invalid(param: &str, message: &str) -> Reply {
    error(400, "invalid_request_error", None, Some(param), message)
}

/// The body Stripe sends for a status it answers on its own.
fn canned(status: u16) -> Reply {
    match status {
        401 => error(
            401,
            "invalid_request_error",
            None,
            None,
            "Invalid API Key provided: sk_test_****************",
        ),
        402 => error(
            402,
            "invalid_request_error",
            None,
            None,
            "The request failed: the parameters were valid but the request could not be completed.",
        ),
        403 => error(
            403,
            "invalid_request_error",
            None,
            None,
            "The provided key does not have the required permissions for this endpoint.",
        ),
        409 => error(
            409,
            "idempotency_error",
            None,
            None,
            "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through).",
        ),
        429 => error(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            None,
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        ),
        s if s >= 500 => error(s, "api_error", None, None, "An unknown error occurred"),
        s => error(
            s,
            "invalid_request_error",
            None,
            None,
            "The request was unacceptable.",
        ),
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
    if request.method != "POST" || request.target != PATH {
        return error(
            404,
            "invalid_request_error",
            None,
            None,
            &format!(
                "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
                request.method, request.target
            ),
        );
    }
    if let Some(reply) = check_auth(&state.secret_key, request.header("authorization")) {
        return reply;
    }
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
    if let Err(reply) = validate(&params) {
        return reply;
    }
    // Validation and auth failures happen before the idempotency layer; from
    // here on Stripe saves the answer under the key and replays it.
    let key = request.header("idempotency-key").map(str::to_string);
    if let Some(saved) = key.as_ref().and_then(|k| state.idempotency.get(k)) {
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
    if let Some(Fault::RecordThenStatus(status)) = fault {
        reply = canned(status);
    }
    if let Some(key) = key {
        state.idempotency.insert(
            key.clone(),
            Saved {
                body: request.body.clone(),
                status: reply.status,
                response: reply.body.clone(),
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
    if !state.identifiers.insert(identifier.clone()) {
        return invalid(
            "identifier",
            &format!("An event already exists with identifier {identifier}."),
        )
        .with_header("stripe-should-retry", "false");
    }
    let now = crate::unix_now();
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
    state.events.push(event);
    Reply::json(200, &body)
}

fn check_auth(secret: &str, header: Option<&str>) -> Option<Reply> {
    let Some(header) = header else {
        return Some(error(
            401,
            "invalid_request_error",
            None,
            None,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
        ));
    };
    let given = if let Some(token) = header.strip_prefix("Bearer ") {
        Some(token.to_string())
    } else if let Some(basic) = header.strip_prefix("Basic ") {
        base64_decode(basic)
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|user_pass| user_pass.split_once(':').map(|(u, _)| u.to_string()))
    } else {
        None
    };
    match given {
        Some(key) if key == secret => None,
        // Stripe echoes the key masked, never whole.
        Some(key) => Some(error(
            401,
            "invalid_request_error",
            None,
            None,
            &format!("Invalid API Key provided: {}", mask(&key)),
        )),
        None => Some(canned(401)),
    }
}

fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len());
    }
    let prefix: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}{}{tail}", "*".repeat(chars.len() - 12))
}

fn validate(params: &BTreeMap<String, String>) -> Result<(), Reply> {
    for key in params.keys() {
        let known = matches!(key.as_str(), "event_name" | "identifier" | "timestamp")
            || key.starts_with("payload[")
            || key.starts_with("expand[");
        if !known {
            return Err(invalid(key, &format!("Received unknown parameter: {key}")));
        }
    }
    let missing = |param: &str| {
        error(
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            Some(param),
            &format!("Missing required param: {param}."),
        )
    };
    let event_name = params
        .get("event_name")
        .ok_or_else(|| missing("event_name"))?;
    if event_name.is_empty() {
        return Err(missing("event_name"));
    }
    if event_name.chars().count() > 100 {
        return Err(invalid(
            "event_name",
            "Invalid string: must be at most 100 characters",
        ));
    }
    if !params.keys().any(|k| k.starts_with("payload[")) {
        return Err(missing("payload"));
    }
    for required in ["payload[stripe_customer_id]", "payload[value]"] {
        if params.get(required).is_none_or(String::is_empty) {
            return Err(missing(required));
        }
    }
    let value = &params["payload[value]"];
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "payload[value]",
            &format!(
                "Invalid value for payload[value]: {value}. Meter event values must be whole numbers."
            ),
        ));
    }
    if digits.trim_start_matches('0').len() > 15 {
        return Err(invalid(
            "payload[value]",
            "Meter event values can have at most 15 significant digits.",
        ));
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
        let now = crate::unix_now();
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

/// Decodes a form body; `payload%5Bvalue%5D` and `payload[value]` are the same key.
fn decode_form(body: &[u8]) -> Option<BTreeMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut params = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(unescape(key)?, unescape(value)?);
    }
    Some(params)
}

fn unescape(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_bracket_spellings() {
        let a = decode_form(b"event_name=a+b%2F&payload[value]=1").unwrap();
        let b = decode_form(b"event_name=a+b%2F&payload%5Bvalue%5D=1").unwrap();
        assert_eq!(a, b);
        assert_eq!(a["event_name"], "a b/");
    }

    #[test]
    fn basic_auth_takes_the_key_as_user() {
        // "sk_test_x:" in base64
        assert_eq!(base64_decode("c2tfdGVzdF94Og==").unwrap(), b"sk_test_x:");
        assert!(check_auth("sk_test_x", Some("Basic c2tfdGVzdF94Og==")).is_none());
        assert!(check_auth("sk_test_x", Some("Bearer sk_test_x")).is_none());
        assert!(check_auth("sk_test_x", Some("Bearer sk_test_y")).is_some());
    }

    fn post(state: &mut State, key: &str, body: &str) -> Reply {
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
        };
        handle(state, &request, None)
    }

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
    fn masks_keys_in_errors() {
        assert_eq!(mask("sk_test_abcdefgh1234"), "sk_test_********1234");
    }
}
