//! Stripe's Billing Meters API as the API reference describes it: meter events
//! (`POST /v1/billing/meter_events`) with identifier dedupe and
//! `Idempotency-Key` replay, both forgotten after 24 hours; meters
//! (`GET /v1/billing/meters[/{id}]`); and event summaries
//! (`GET /v1/billing/meters/{id}/event_summaries`), eventually consistent.
//!
//! The emulator has its own clock, which tests move, so "25 hours later" takes
//! no time. Facts it follows are in `specs/README.md` ("Reading Stripe back").

/// The secret key, as Bearer or as Basic's user.
mod auth;
/// `GET /v1/subscriptions` and `GET /v1/invoices`: periods and what they bill.
mod billing;
/// Stripe's error bodies.
mod errors;
/// `POST /v1/billing/meter_events`: validation, dedupe, replay, planting.
mod events;
/// `GET /v1/billing/meters[/{id}]` and creating meters.
mod meters;
/// Stripe's list envelope, `limit` and `starting_after`.
mod pagination;
/// `GET /v1/billing/meters/{id}/event_summaries` and what is billed.
mod summaries;
/// Requests the unit tests send through the router.
#[cfg(test)]
mod testing;

use crate::form::decode_form;
use crate::server::{Fault, Faults, Recorded, Reply, Server};
use auth::check_auth;
pub use billing::{DEFAULT_GRACE, Invoice, SubscriptionSpec};
use billing::{INVOICES, SUBSCRIPTIONS, Subscription};
use errors::{canned, invalid, not_found_route};
use events::Saved;
pub use events::{DEDUPE_WINDOW, MeterEvent};
use meters::Meter;
pub use meters::{Formula, MeterSpec};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where meter events are recorded.
const PATH: &str = "/v1/billing/meter_events";
/// Where meters are listed; one meter and its summaries are below it.
const METERS: &str = "/v1/billing/meters";
/// How long after it is received an event starts counting in summaries, by
/// default (no figure is published; third parties report minutes).
pub const DEFAULT_PROCESSING_LAG: i64 = 60;

/// Everything the emulator holds, behind one lock: events and what dedupes
/// them, meters, queued faults and the clock.
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
    summary_faults: Faults,
    /// Faults for the reads whose path and query start with a prefix.
    prefixed_faults: Vec<(String, Faults)>,
    ids: RandomState,
    counter: u64,
    /// Added to the real clock.
    clock_offset: i64,
    processing_lag: i64,
    /// Oldest first; listed newest first.
    subscriptions: Vec<Subscription>,
    /// Customers on a test clock: their subscriptions are listed only when
    /// the listing names the customer.
    test_clocks: std::collections::HashSet<String>,
    /// The invoice finalization grace period for usage, in seconds.
    grace: i64,
    /// How long a meter event takes to answer (see [`Stripe::set_meter_event_time`]).
    meter_event_time: std::time::Duration,
    /// Until when each (event name, customer) has a meter event call in flight.
    writing: HashMap<(String, String), std::time::Instant>,
    /// Meter event calls refused for overlapping another of their customer and meter.
    refused_overlapping: usize,
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
            summary_faults: Faults::default(),
            prefixed_faults: Vec::new(),
            ids: RandomState::new(),
            counter: 0,
            clock_offset: 0,
            processing_lag: DEFAULT_PROCESSING_LAG,
            meter_event_time: std::time::Duration::ZERO,
            writing: HashMap::new(),
            refused_overlapping: 0,
            subscriptions: Vec::new(),
            test_clocks: Default::default(),
            grace: DEFAULT_GRACE,
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
            let prefixed = state
                .prefixed_faults
                .iter_mut()
                .filter(|(prefix, _)| r.method == "GET" && r.target.starts_with(prefix.as_str()))
                .find_map(|(_, faults)| faults.next());
            let fault = if prefixed.is_some() {
                prefixed
            } else if r.method == "POST" {
                state.faults.next()
            } else if r.target.contains("/event_summaries") {
                state
                    .summary_faults
                    .next()
                    .or_else(|| state.read_faults.next())
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

    /// At most `cap` requests answered at once; past it, 429 before anything
    /// is done (Stripe's concurrency limiter; no `Retry-After`). `None`: no cap.
    pub fn set_concurrency_cap(&self, cap: Option<usize>) {
        let busy: Arc<crate::server::Handler> = Arc::new(|_: &Recorded| canned(429));
        self.server.gate().set(cap.map(|cap| (cap, busy)));
    }

    /// The most requests it answered at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.server.gate().peak()
    }

    /// Requests refused with 429 for being past the concurrency cap.
    pub fn refused_busy(&self) -> usize {
        self.server.gate().refused()
    }

    /// Each meter event call takes `time` to answer, as Stripe's do: a second
    /// call for the same customer and meter while one is in flight is refused
    /// with 429 before anything is done (live mode allows "one concurrent call
    /// per customer per meter"). Zero, the default, answers at once.
    pub fn set_meter_event_time(&self, time: std::time::Duration) {
        lock(&self.state).meter_event_time = time;
    }

    /// Meter event calls refused for overlapping another of the same customer
    /// and meter.
    pub fn refused_overlapping(&self) -> usize {
        lock(&self.state).refused_overlapping
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
        summaries::aggregate(&state, meter, customer, start, end, i64::MAX)
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
        events::plant(
            &mut lock(&self.state),
            event_name,
            customer,
            timestamp,
            value,
        );
    }

    /// Creates a subscription with one item metered on `spec.event_name`'s
    /// meter (add the meter first); returns its id.
    pub fn add_subscription(&self, spec: SubscriptionSpec) -> String {
        lock(&self.state).add_subscription(spec)
    }

    /// Puts `customer` on a test clock: as at Stripe, a listing of
    /// subscriptions leaves theirs out unless it names the customer.
    pub fn attach_test_clock(&self, customer: &str) {
        lock(&self.state).test_clocks.insert(customer.into());
    }

    /// The invoice finalization grace period for usage (1 hour by default).
    pub fn set_grace(&self, seconds: i64) {
        lock(&self.state).grace = seconds;
    }

    /// `customer`'s invoices now, newest first: what each bills, and whether
    /// it is final.
    pub fn invoices(&self, customer: &str) -> Vec<Invoice> {
        let state = lock(&self.state);
        state
            .invoices(customer)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    /// Injects `fault` into every following read (GET; `None` to heal).
    pub fn set_read_fault(&self, fault: Option<Fault>) {
        lock(&self.state).read_faults.set(fault);
    }

    /// Injects these faults into the next reads (GET), one each.
    pub fn push_read_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).read_faults.push(faults);
    }

    /// Injects these faults into the next summaries reads, one each, whatever
    /// other reads arrive between them (a run sends its summaries read beside
    /// its subscriptions read, so their order is not fixed).
    pub fn push_summary_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).summary_faults.push(faults);
    }

    /// Injects these faults into the next reads whose path and query start
    /// with `prefix`, one each, whatever other reads arrive between them (a
    /// sync lists the subscriptions and the invoices at once).
    pub fn push_faults_on(&self, prefix: &str, faults: impl IntoIterator<Item = Fault>) {
        let mut state = lock(&self.state);
        match state.prefixed_faults.iter_mut().find(|(p, _)| p == prefix) {
            Some((_, queue)) => queue.push(faults),
            None => {
                let mut queue = Faults::default();
                queue.push(faults);
                state.prefixed_faults.push((prefix.to_string(), queue));
            }
        }
    }
}

/// Answers one request: an injected fault first, then the route, auth and
/// the query, then the route's handler.
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
        ("GET", SUBSCRIPTIONS) => Route::ListSubscriptions,
        ("GET", INVOICES) => Route::ListInvoices,
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
        Route::RecordEvent => events::one_at_a_time(state, request, |state| {
            events::record_event(state, request, fault)
        }),
        Route::ListMeters => meters::list_meters(state, &params),
        Route::Meter(id) => meters::retrieve_meter(state, id, &params),
        Route::Summaries(id) => summaries::summaries(state, id, &params),
        Route::ListSubscriptions => billing::list_subscriptions(state, &params),
        Route::ListInvoices => billing::list_invoices(state, &params),
    }
}

/// The endpoints the emulator serves.
enum Route<'a> {
    RecordEvent,
    ListMeters,
    Meter(&'a str),
    Summaries(&'a str),
    ListSubscriptions,
    ListInvoices,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A meter event for `customer` over the wire: the status line's code.
    fn post_event(address: &str, customer: &str, identifier: &str) -> u16 {
        use std::io::{Read, Write};
        let body = format!(
            "event_name=api_calls&identifier={identifier}&payload[stripe_customer_id]={customer}&payload[value]=1"
        );
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "POST /v1/billing/meter_events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer sk_test_x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer[9..12].parse().unwrap()
    }

    #[test]
    fn a_second_meter_event_call_for_a_customer_and_meter_in_flight_gets_429() {
        let stripe = Stripe::start("sk_test_x").unwrap();
        stripe.add_meter(MeterSpec::sum("api_calls"));
        stripe.set_meter_event_time(std::time::Duration::from_millis(400));
        let address = stripe.url().trim_start_matches("http://").to_string();
        let first = {
            let address = address.clone();
            std::thread::spawn(move || post_event(&address, "cus_1", "e1"))
        };
        // Until the first call is recorded and in flight.
        while stripe.events().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(post_event(&address, "cus_1", "e2"), 429);
        assert_eq!(post_event(&address, "cus_2", "e3"), 200);
        assert_eq!(first.join().unwrap(), 200);
        // Once answered, the next call for the same customer and meter goes.
        assert_eq!(post_event(&address, "cus_1", "e4"), 200);
        let recorded: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
        assert_eq!(recorded, ["e1", "e3", "e4"]);
        assert_eq!(stripe.refused_overlapping(), 1);
    }
}
