//! Stripe: step 2, `record-stripe-meter` (`POST /v1/billing/meter_events`),
//! and the reads that make it exactly once at any age: the meter
//! (`GET /v1/billing/meters`) and what it already holds
//! (`GET /v1/billing/meters/{id}/event_summaries`).

use crate::prelude::*;

use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{Interval, Meter};
use crate::form;
use crate::http::USER_AGENT;
use crate::inputs::{Plan, Window};
use sha2::{Digest, Sha256};
use usage_sync_report::json::{self, Json, Object};

/// Where meter events are recorded.
pub const PATH: &str = "/v1/billing/meter_events";
/// Where meters are listed (and, below it, their summaries).
pub const METERS_PATH: &str = "/v1/billing/meters";
/// Stripe's largest page, for lists and summaries.
pub const PAGE_LIMIT: u32 = 100;
/// Pages read before giving up on a list: 10,000 meters, or 100 pages of summaries.
pub const MAX_PAGES: u32 = 100;
/// Pinned as Stripe's official clients pin it, so the account default cannot change the answer.
pub const API_VERSION: &str = "2026-10-28.endive";

/// The headers of a read (`GET`), then `credential` (the key, when the
/// component sends it itself: [`crate::credentials::stripe_header`]).
pub fn read_headers<'a>(
    credential: Option<&'a (&'static str, String)>,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![("Stripe-Version", API_VERSION), ("User-Agent", USER_AGENT)];
    headers.extend(credential.map(|(n, v)| (*n, v.as_str())));
    headers
}

/// The headers of a meter event, then `credential` as for [`read_headers`].
/// A dry run shows them without the credential.
pub fn event_headers<'a>(
    idempotency_key: &'a str,
    credential: Option<&'a (&'static str, String)>,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Idempotency-Key", idempotency_key),
        ("Stripe-Version", API_VERSION),
        ("User-Agent", USER_AGENT),
    ];
    headers.extend(credential.map(|(n, v)| (*n, v.as_str())));
    headers
}

/// The event's `identifier`: the same ledger (Stripe customer and event
/// name) and window always give the same one, so Stripe refuses a second event
/// for them within its ~24-hour memory. The Amberflo sources are left out: a
/// ledger's events stand for the sum of its sources, and the mapping history
/// (not the identifier) keeps a moved source from being billed twice.
pub fn identifier(plan: &Plan, window: &Window) -> String {
    let hex = ledger_hash(plan, "usage-sync/v2", None);
    format!("usync-{}-{}-{hex}", window.start, window.end)
}

/// The identifier of a correction that brings Stripe's value for `window` to
/// `target`: another event than the window's own, and the same for the same
/// target, so rerunning a true-up writes nothing twice (Stripe dedupes it
/// within a day; after that its summary already holds the target).
pub fn correction_identifier(plan: &Plan, window: &Window, target: &str) -> String {
    let hex = ledger_hash(plan, "usage-sync/true-up/v2", Some(target));
    format!("usync-{}-{}-t{hex}", window.start, window.end)
}

/// The identifier of usage carried out of `origin` (a closed period's
/// interval) into the open period, bringing what was carried out of it to
/// `carried`: the same for the same total, so a rerun writes nothing twice.
pub fn carry_identifier(plan: &Plan, origin: &Window, carried: &str) -> String {
    let hex = ledger_hash(plan, "usage-sync/carry/v1", Some(carried));
    format!("usync-{}-{}-c{hex}", origin.start, origin.end)
}

/// The first 16 bytes of the SHA-256 of the ledger's key, hex.
fn ledger_hash(plan: &Plan, version: &str, target: Option<&str>) -> String {
    let mut hash = Sha256::new();
    let parts = [version, &plan.stripe_customer, &plan.stripe_event_name];
    for part in parts.into_iter().chain(target) {
        // Length-prefixed, so no two different inputs hash the same text.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    usage_sync_report::hex(&digest[..16])
}

/// The form body, field for field what stripe-python sends for
/// `MeterEvent.create(event_name=.., payload={..}, identifier=.., timestamp=..)`,
/// under the payload keys the meter reads (an event without them is accepted,
/// then silently never counted).
pub fn request_body(
    plan: &Plan,
    meter: &Meter,
    timestamp: i64,
    value: &str,
    identifier: &str,
) -> String {
    form::encode(&[
        ("event_name", plan.stripe_event_name.as_str()),
        (
            &format!("payload[{}]", meter.customer_key),
            plan.stripe_customer.as_str(),
        ),
        (&format!("payload[{}]", meter.value_key), value),
        ("identifier", identifier),
        ("timestamp", &timestamp.to_string()),
    ])
}

/// A page of a Stripe list (`{"object":"list","data":[...],"has_more":..}`).
#[derive(Debug)]
pub struct List<T> {
    /// This page's objects.
    pub data: Vec<T>,
    /// Whether more pages follow.
    pub has_more: bool,
}

impl<T> List<T> {
    /// Reads a list page, each object of `data` with `item`.
    pub fn read(
        value: &Json,
        mut item: impl FnMut(Object) -> Result<T, String>,
    ) -> Result<List<T>, String> {
        let page = value.object()?;
        Ok(List {
            data: json::items(page.array("data")?, |object| item(object.object()?))
                .map_err(|why| json::named("data", why))?,
            has_more: page.bool("has_more")?,
        })
    }
}

/// Parses a body with `read`; the error names what Stripe should have sent.
pub fn parse_body<T>(
    body: &[u8],
    what: &str,
    read: impl FnOnce(&Json) -> Result<T, String>,
) -> Result<T, String> {
    json::parse(body)
        .and_then(|doc| read(&doc))
        .map_err(|e| not_with(body, what, e))
}

/// Out of line: `parse_body` is instantiated for every answer type, its
/// message once.
#[inline(never)]
fn not_with(body: &[u8], what: &str, e: String) -> String {
    format!(
        "Stripe answered 200 but not with {what} ({e}): {}",
        crate::http::snippet(body)
    )
}

/// The parts of a `billing.meter` that decide how events must look.
#[derive(Debug)]
pub struct ApiMeter {
    /// `mtr_...`
    pub id: String,
    /// The event name its events carry.
    pub event_name: String,
    /// `active` or `inactive`.
    pub status: String,
    /// The name shown in Stripe's dashboard.
    pub display_name: Option<String>,
    /// How it aggregates events.
    pub default_aggregation: Aggregation,
    /// Which payload key names the customer (default `stripe_customer_id`).
    pub customer_mapping: Option<PayloadKey>,
    /// Which payload key holds the value (default `value`).
    pub value_settings: Option<PayloadKey>,
    /// `day` or `hour` for a pre-aggregated meter; absent for raw events.
    pub event_time_window: Option<String>,
}

/// `default_aggregation`.
#[derive(Debug)]
pub struct Aggregation {
    /// `sum`, `count` or `last`.
    pub formula: String,
}

/// A payload key setting.
#[derive(Debug)]
pub struct PayloadKey {
    /// The key in an event's `payload`.
    pub event_payload_key: String,
}

impl ApiMeter {
    fn read(o: Object) -> Result<ApiMeter, String> {
        let payload_key = |name| -> Result<Option<PayloadKey>, String> {
            o.opt_object(name)?
                .map(|k| {
                    json::within(name, || {
                        Ok(PayloadKey {
                            event_payload_key: k.string("event_payload_key")?,
                        })
                    })
                })
                .transpose()
        };
        let aggregation = o.object("default_aggregation")?;
        Ok(ApiMeter {
            id: o.string("id")?,
            event_name: o.string("event_name")?,
            status: o.string("status")?,
            display_name: o.opt_string("display_name")?,
            default_aggregation: json::within("default_aggregation", || {
                Ok(Aggregation {
                    formula: aggregation.string("formula")?,
                })
            })?,
            customer_mapping: payload_key("customer_mapping")?,
            value_settings: payload_key("value_settings")?,
            event_time_window: o.opt_string("event_time_window")?,
        })
    }
}

/// The URL of one page of meters, after the meter `starting_after`.
pub fn meters_url(stripe_url: &str, starting_after: Option<&str>) -> String {
    let limit = PAGE_LIMIT.to_string();
    let mut query = vec![("limit", limit.as_str())];
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!("{stripe_url}{METERS_PATH}?{}", form::encode(&query))
}

/// Parses one page of `GET /v1/billing/meters`.
pub fn parse_meters(body: &[u8]) -> Result<List<ApiMeter>, String> {
    parse_body(body, "a list of billing.meter", |v| {
        List::read(v, ApiMeter::read)
    })
}

impl ApiMeter {
    fn name(&self) -> String {
        match &self.display_name {
            Some(n) if !n.is_empty() => format!("{} (\"{n}\")", self.id),
            _ => self.id.clone(),
        }
    }

    /// The meter as the workflow uses it, or why events of this run would be
    /// billed wrong on it.
    pub fn check(self, interval: Interval) -> Result<Meter, String> {
        let name = self.name();
        let event = &self.event_name;
        match self.default_aggregation.formula.as_str() {
            "sum" => {}
            "count" => {
                return Err(format!(
                    "the Stripe meter {name} for event name `{event}` counts events (formula `count`): it would bill 1 per interval whatever the usage; usage-sync needs a `sum` meter"
                ));
            }
            "last" => {
                return Err(format!(
                    "the Stripe meter {name} for event name `{event}` bills the last value (formula `last`): only the last interval would be billed; usage-sync needs a `sum` meter"
                ));
            }
            other => {
                return Err(format!(
                    "the Stripe meter {name} for event name `{event}` has the formula `{other}`; usage-sync needs a `sum` meter"
                ));
            }
        }
        let pre_aggregated = match (self.event_time_window.as_deref(), interval) {
            (None, _) => None,
            (Some("day"), Interval::Day) => Some(Interval::Day),
            (Some("hour"), Interval::Hour) => Some(Interval::Hour),
            (Some(window), _) => {
                let asked = match interval {
                    Interval::Day => "day",
                    Interval::Hour => "hour",
                    Interval::Window => "window",
                };
                return Err(format!(
                    "the Stripe meter {name} for event name `{event}` is pre-aggregated per {window} (event_time_window), but --interval is {asked}: Stripe would keep only the last event per {window}; use --interval {window}"
                ));
            }
        };
        let key = |k: Option<PayloadKey>, default: &str| {
            k.map_or_else(|| default.to_string(), |k| k.event_payload_key)
        };
        Ok(Meter {
            id: self.id,
            event_name: self.event_name,
            customer_key: key(self.customer_mapping, "stripe_customer_id"),
            value_key: key(self.value_settings, "value"),
            pre_aggregated,
        })
    }
}

/// One `billing.meter_event_summary`.
#[derive(Debug)]
pub struct Summary {
    /// `mtrusg_...`
    pub id: String,
    /// The window's start, Unix seconds.
    pub start_time: i64,
    /// The window's end, Unix seconds (exclusive).
    pub end_time: i64,
    /// What Stripe aggregated for the window, exactly as Stripe wrote it.
    pub aggregated_value: Decimal,
}

impl Summary {
    fn read(o: Object) -> Result<Summary, String> {
        Ok(Summary {
            id: o.string("id")?,
            start_time: o.integer("start_time")?,
            end_time: o.integer("end_time")?,
            aggregated_value: exact_number(o.required("aggregated_value")?)
                .map_err(|why| json::named("aggregated_value", why))?,
        })
    }
}

/// A JSON number read from its text, not through a float: Stripe's value as
/// it prints it (`0.1` stays `0.1`), and sums of them exact.
pub fn exact_number(value: &Json) -> Result<Decimal, String> {
    match value.value() {
        json::Value::Number => Decimal::parse(value.raw()),
        _ => Err(format!("expected a number, found {}", value.found())),
    }
}

/// The URL of one page of a customer's summaries over `range`, grouped by
/// `grouping` (`day`, `hour`, or one summary for the whole range).
pub fn summaries_url(
    stripe_url: &str,
    meter: &Meter,
    customer: &str,
    range: Window,
    grouping: Option<&str>,
    starting_after: Option<&str>,
) -> String {
    let (start, end, limit) = (
        range.start.to_string(),
        range.end.to_string(),
        PAGE_LIMIT.to_string(),
    );
    let mut query = vec![
        ("customer", customer),
        ("start_time", start.as_str()),
        ("end_time", end.as_str()),
    ];
    query.extend(grouping.map(|g| ("value_grouping_window", g)));
    query.push(("limit", limit.as_str()));
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!(
        "{stripe_url}{METERS_PATH}/{}/event_summaries?{}",
        form::escape(&meter.id),
        form::encode(&query)
    )
}

/// Parses one page of `GET /v1/billing/meters/{id}/event_summaries`.
pub fn parse_summaries(body: &[u8]) -> Result<List<Summary>, String> {
    parse_body(body, "a list of billing.meter_event_summary", |v| {
        List::read(v, Summary::read)
    })
}

/// The parts of a `billing.meter_event` the workflow outputs.
#[derive(Debug)]
pub struct MeterEvent {
    /// The identifier Stripe recorded.
    pub identifier: String,
    /// The event name Stripe recorded.
    pub event_name: String,
}

/// Parses a `billing.meter_event`.
pub fn parse_event(body: &[u8]) -> Result<MeterEvent, String> {
    parse_body(body, "a billing.meter_event", |v| {
        let o = v.object()?;
        Ok(MeterEvent {
            identifier: o.string("identifier")?,
            event_name: o.string("event_name")?,
        })
    })
}

/// Stripe's `{"error": {...}}` body.
#[derive(Debug, Default)]
pub struct ApiError {
    /// `type`: `invalid_request_error`, `api_error`, ...
    pub kind: Option<String>,
    /// `code`, when given.
    pub code: Option<String>,
    /// `message`, when given.
    pub message: Option<String>,
    /// `param`, when given.
    pub param: Option<String>,
}

/// Stripe's `{"error": {...}}`, when the body is one.
pub fn parse_error(body: &[u8]) -> Option<ApiError> {
    let doc = json::parse(body).ok()?;
    let read = || -> Result<ApiError, String> {
        let error = doc.object()?.required("error")?.object()?;
        Ok(ApiError {
            kind: error.opt_string("type")?,
            code: error.opt_string("code")?,
            message: error.opt_string("message")?,
            param: error.opt_string("param")?,
        })
    };
    read().ok()
}

impl ApiError {
    /// True for Stripe's answer to a reused identifier (with a 400): the event
    /// is already recorded. The wording is undocumented, so it is matched on
    /// its sense, not its letters: an `invalid_request_error` whose message
    /// says an event already exists and names this identifier as a whole word.
    pub fn is_duplicate_of(&self, identifier: &str) -> bool {
        let Some(message) = self.message.as_deref() else {
            return false;
        };
        let words: Vec<&str> = message
            .split(|c: char| {
                c.is_whitespace()
                    || matches!(c, '.' | ',' | ':' | ';' | '\'' | '"' | '`' | '(' | ')')
            })
            .filter(|w| !w.is_empty())
            .collect();
        let says = |phrase: &str| {
            let phrase: Vec<&str> = phrase.split(' ').collect();
            words.windows(phrase.len()).any(|w| {
                w.iter()
                    .zip(&phrase)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
        };
        self.kind.as_deref() == Some("invalid_request_error")
            && says("already exists")
            && words.contains(&identifier)
    }

    /// The message, with type, code and param, for a person.
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
            intervals: vec![DAY],
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
        other.customer_id = "another-source".into();
        other.meter_api_name = "another-meter".into();
        assert_eq!(
            identifier(&other, &DAY),
            id,
            "the ledger's sources do not change it"
        );
        for change in [
            |p: &mut Plan| p.stripe_customer.push('x'),
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
        a.stripe_customer = "ab".into();
        a.stripe_event_name = "c".into();
        b.stripe_customer = "a".into();
        b.stripe_event_name = "bc".into();
        assert_ne!(identifier(&a, &DAY), identifier(&b, &DAY));
    }

    fn meter(customer_key: &str, value_key: &str) -> Meter {
        Meter {
            id: "mtr_1".into(),
            event_name: "api_calls".into(),
            customer_key: customer_key.into(),
            value_key: value_key.into(),
            pre_aggregated: None,
        }
    }

    #[test]
    fn body_orders_fields_as_the_official_client() {
        let p = plan();
        assert_eq!(
            request_body(
                &p,
                &meter("stripe_customer_id", "value"),
                DAY.timestamp(),
                "42",
                "usync-x"
            ),
            "event_name=api_calls&payload[stripe_customer_id]=cus_123&payload[value]=42&identifier=usync-x&timestamp=1732492799"
        );
        // The meter's own payload keys, or Stripe never counts the event.
        assert_eq!(
            request_body(
                &p,
                &meter("org id", "calls"),
                DAY.timestamp(),
                "42",
                "usync-x"
            ),
            "event_name=api_calls&payload[org+id]=cus_123&payload[calls]=42&identifier=usync-x&timestamp=1732492799"
        );
    }

    #[test]
    fn headers_keep_their_order_and_put_the_key_last() {
        let key = ("Authorization", "Bearer sk".to_string());
        let names =
            |h: Vec<(&'static str, &str)>| h.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(read_headers(Some(&key))),
            ["Stripe-Version", "User-Agent", "Authorization"]
        );
        assert_eq!(
            names(event_headers("k", None)),
            [
                "Content-Type",
                "Idempotency-Key",
                "Stripe-Version",
                "User-Agent"
            ]
        );
    }

    fn api_meter(text: &str) -> ApiMeter {
        ApiMeter::read(json::parse(text.as_bytes()).unwrap().object().unwrap()).unwrap()
    }

    #[test]
    fn meters_are_checked_for_the_run() {
        let raw = r#"{"id":"mtr_1","object":"billing.meter","event_name":"api_calls","status":"active","display_name":"API","default_aggregation":{"formula":"sum"},"customer_mapping":{"event_payload_key":"org","type":"by_id"},"value_settings":{"event_payload_key":"n"},"event_time_window":null}"#;
        let m = api_meter(raw).check(Interval::Hour).unwrap();
        assert_eq!(
            (m.customer_key.as_str(), m.value_key.as_str()),
            ("org", "n")
        );
        assert!(m.pre_aggregated.is_none());
        let err = api_meter(&raw.replace("\"sum\"", "\"count\""))
            .check(Interval::Day)
            .unwrap_err();
        assert!(
            err.contains("mtr_1 (\"API\")") && err.contains("`count`"),
            "{err}"
        );
        let daily = raw.replace(
            "\"event_time_window\":null",
            "\"event_time_window\":\"day\"",
        );
        assert!(matches!(
            api_meter(&daily)
                .check(Interval::Day)
                .unwrap()
                .pre_aggregated,
            Some(Interval::Day)
        ));
        let err = api_meter(&daily).check(Interval::Hour).unwrap_err();
        assert!(
            err.contains("pre-aggregated per day") && err.contains("--interval is hour"),
            "{err}"
        );
    }

    #[test]
    fn summary_urls_carry_the_documented_parameters() {
        let url = summaries_url(
            "https://api.stripe.com",
            &meter("k", "v"),
            "cus_1",
            DAY,
            Some("day"),
            Some("mtrusg_9"),
        );
        assert_eq!(
            url,
            "https://api.stripe.com/v1/billing/meters/mtr_1/event_summaries?customer=cus_1&start_time=1732406400&end_time=1732492800&value_grouping_window=day&limit=100&starting_after=mtrusg_9"
        );
        assert_eq!(
            meters_url("http://127.0.0.1:9", None),
            "http://127.0.0.1:9/v1/billing/meters?limit=100"
        );
    }

    #[test]
    fn summaries_keep_stripes_numbers_exactly() {
        let page = |value: &str| {
            format!(
                r#"{{"object":"list","has_more":false,"data":[{{"id":"mtrusg_1","start_time":0,"end_time":86400,"aggregated_value":{value}}}]}}"#
            )
        };
        for (value, exact) in [
            ("42.0", "42"),
            ("0.1", "0.1"),
            ("1.0e-05", "0.00001"),
            // Through a float, 2^53 + 1 came back as 2^53.
            ("9007199254740993", "9007199254740993"),
            ("-0.0", "0"),
        ] {
            let list = parse_summaries(page(value).as_bytes()).unwrap();
            assert_eq!(list.data[0].aggregated_value.to_string(), exact, "{value}");
        }
        // Through floats, 0.1 + 0.2 is 0.30000000000000004.
        let sum = ["0.1", "0.2"]
            .iter()
            .map(|v| parse_summaries(page(v).as_bytes()).unwrap().data[0].aggregated_value)
            .try_fold(Decimal::ZERO, |s, v| s.checked_add(v))
            .unwrap();
        assert_eq!(sum.to_string(), "0.3");
        for bad in [r#""42""#, "null", "1e400"] {
            let err = parse_summaries(page(bad).as_bytes()).unwrap_err();
            assert!(
                err.contains("not with a list of billing.meter_event_summary"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn recognises_the_duplicate_identifier_answer() {
        let body = br#"{"error":{"message":"An event already exists with identifier usync-x.","type":"invalid_request_error"}}"#;
        let err = parse_error(body).unwrap();
        assert!(err.is_duplicate_of("usync-x"));
        assert!(!err.is_duplicate_of("usync-y"));
        assert!(
            !err.is_duplicate_of("usync"),
            "the whole identifier, not a part"
        );
        // Punctuation and case aside.
        for message in [
            "An event already exists with identifier usync-x",
            "An event already exists with identifier 'usync-x'.",
            "an event with identifier `usync-x` ALREADY EXISTS",
        ] {
            let body =
                format!(r#"{{"error":{{"message":"{message}","type":"invalid_request_error"}}}}"#);
            assert!(
                parse_error(body.as_bytes())
                    .unwrap()
                    .is_duplicate_of("usync-x"),
                "{message}"
            );
        }
        let other_kind = br#"{"error":{"message":"An event already exists with identifier usync-x.","type":"api_error"}}"#;
        assert!(!parse_error(other_kind).unwrap().is_duplicate_of("usync-x"));
        let other_sense = br#"{"error":{"message":"No event exists with identifier usync-x.","type":"invalid_request_error"}}"#;
        assert!(!parse_error(other_sense).unwrap().is_duplicate_of("usync-x"));
        let other = parse_error(br#"{"error":{"message":"No such customer","type":"invalid_request_error","code":"resource_missing","param":"payload"}}"#).unwrap();
        assert!(!other.is_duplicate_of("usync-x"));
        assert_eq!(
            other.describe(),
            "No such customer (type invalid_request_error, code resource_missing, param payload)"
        );
        assert!(parse_error(b"<html>").is_none());
    }
}
