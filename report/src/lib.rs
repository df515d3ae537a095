//! What a usage-sync run prints, the same from every host: the outputs object
//! (`usage-sync run`'s stdout, the component's `POST /run` answer) and the error
//! object `{"error": {...}}`, plus one line for a person.
//!
//! It also holds the defaults both sides apply to what a caller leaves out
//! ([`defaults`]), so `usage-sync run` and `POST /run` cannot drift apart.
//!
//! The types mirror the records of `wit/usage-sync.wit`. Each side's generated
//! bindings derive `Serialize`, and [`from_wit`] carries a value across, so this
//! crate needs neither wasmtime nor wit-bindgen.

mod request;

pub use request::{Rounding, RunRequest, Scalar};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

mod civil;
pub mod defaults;
mod hex;
pub mod keys;

pub use civil::civil;
pub use hex::hex;

/// A generated WIT value as the mirror type here (same field and case names).
/// An error means the mirror types no longer match `wit/usage-sync.wit`: a
/// bug of ours, reported as such rather than a panic.
pub fn from_wit<T: Serialize, U: DeserializeOwned>(value: &T) -> Result<U, String> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("the component's answer does not match the report types: {e}"))
}

/// A step of the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Step {
    /// Amberflo `POST /usage`.
    QueryUsage,
    /// Stripe `POST /v1/billing/meter_events`.
    RecordStripeMeter,
    /// Stripe `GET /v1/billing/meters`.
    FindMeter,
    /// Stripe `GET /v1/billing/meters/{id}/event_summaries`.
    ReadSummaries,
}

/// How a window is cut into meter events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Interval {
    /// One event per UTC day.
    Day,
    /// One event per UTC hour.
    Hour,
    /// One event for the whole window.
    Window,
}

/// How a run knew Stripe already held an interval's event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Verification {
    /// Stripe refused the identifier as a duplicate.
    Identifier,
    /// Stripe's summary already held the value.
    Summary,
}

/// The Stripe meter the events went to.
#[derive(Clone, Debug, Deserialize)]
pub struct Meter {
    /// `mtr_...`
    pub id: String,
    /// The event name.
    pub event_name: String,
    /// The payload key naming the customer.
    pub customer_key: String,
    /// The payload key holding the value.
    pub value_key: String,
    /// `day` or `hour` for a pre-aggregated meter.
    pub pre_aggregated: Option<Interval>,
}

/// A read of Stripe made before writing.
#[derive(Clone, Debug, Deserialize)]
pub struct StripeRead {
    /// `GET`.
    pub method: String,
    /// The URL read.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// What the answer meant, in short.
    pub answer: String,
}

/// What is known about a Stripe write when a step fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Delivery {
    /// Nothing was sent, or the step does not write.
    NotSent,
    /// Stripe answered and refused: nothing recorded.
    Rejected,
    /// The answer was lost: the event may be recorded.
    Unknown,
}

/// One meter event of a run.
#[derive(Clone, Debug, Deserialize)]
pub struct MeterEvent {
    /// Stripe's `identifier`.
    pub meter_event_id: String,
    /// The meter's event name.
    pub event_name: String,
    /// The value sent (or that would have been).
    pub usage_quantity: String,
    /// Amberflo's total for the interval.
    pub amberflo_total: Option<String>,
    /// The interval's start, Unix seconds.
    pub window_start: i64,
    /// The interval's end, Unix seconds (exclusive).
    pub window_end: i64,
    /// The `timestamp` sent.
    pub timestamp: i64,
    /// Stripe already held an event for the interval.
    pub already_recorded: bool,
    /// How that was known.
    pub verified_by: Option<Verification>,
    /// What Stripe's summary held before writing, when read.
    pub stripe_value: Option<String>,
    /// Stripe held another value: nothing was written.
    pub drift: bool,
    /// A true-up correction: Stripe's value after it (`stripe_value` before).
    pub corrected_to: Option<String>,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// A request a dry run would send.
#[derive(Clone, Debug, Deserialize)]
pub struct PlannedRequest {
    /// The HTTP method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Its headers (the key redacted).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
}

/// What a run returns.
#[derive(Clone, Debug, Deserialize)]
pub struct Outputs {
    /// Amberflo's `clientMeters`, verbatim JSON.
    pub usage_result: String,
    /// The meter's event name.
    pub event_name: String,
    /// The window's start.
    pub window_start: i64,
    /// The window's end (exclusive).
    pub window_end: i64,
    /// Amberflo's total for the window, times the scale.
    pub measured_total: String,
    /// The sum of the events' values.
    pub billed_total: String,
    /// The meter the events went to.
    pub meter: Meter,
    /// One per interval.
    pub events: Vec<MeterEvent>,
    /// What a dry run would send.
    pub planned: Vec<PlannedRequest>,
    /// The reads of Stripe made before writing.
    pub reads: Vec<StripeRead>,
}

impl Outputs {
    /// The intervals where Stripe held another value: nothing was written for them.
    pub fn drifted(&self) -> impl Iterator<Item = &MeterEvent> {
        self.events.iter().filter(|e| e.drift)
    }
}

/// A step that failed, as the component tells it.
#[derive(Clone, Debug, Deserialize)]
pub struct StepFailure {
    /// Which step.
    pub step: Step,
    /// The provider's status, when it answered.
    pub status: Option<u16>,
    /// The provider's message, or what went wrong.
    pub message: String,
    /// The provider's request id, when given.
    pub request_id: Option<String>,
    /// What is known about the write.
    pub delivery: Delivery,
    /// Requests made for the step.
    pub attempts: u32,
    /// The failing interval's start.
    pub window_start: i64,
    /// The failing interval's end.
    pub window_end: i64,
    /// Events recorded before the failure.
    pub recorded: Vec<MeterEvent>,
}

/// The component's error.
#[derive(Clone, Debug, Deserialize)]
pub enum WorkflowError {
    /// Bad input: nothing was sent.
    InvalidInput(String),
    /// A step failed.
    StepFailed(StepFailure),
}

/// Why a run did not produce outputs.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Bad input or configuration: nothing was written.
    BadInput(String),
    /// A step failed; the component's own account of it.
    Provider(Box<StepFailure>),
    /// The sandbox refused a request or a limit was hit; and whether a write
    /// may have reached Stripe before (`Unknown`) or none did (`NotSent`).
    Sandbox(String, Delivery),
    /// Something broke inside usage-sync.
    Internal(String),
}

impl From<WorkflowError> for Failure {
    fn from(error: WorkflowError) -> Failure {
        match error {
            WorkflowError::InvalidInput(message) => Failure::BadInput(message),
            WorkflowError::StepFailed(f) => Failure::Provider(Box::new(f)),
        }
    }
}

impl Step {
    /// The step's `stepId` in the workflow's Arazzo document.
    pub fn name(self) -> &'static str {
        match self {
            Step::QueryUsage => "query-usage",
            Step::RecordStripeMeter => "record-stripe-meter",
            Step::FindMeter => "find-meter",
            Step::ReadSummaries => "read-summaries",
        }
    }
}

fn verification_name(v: Verification) -> &'static str {
    match v {
        Verification::Identifier => "identifier",
        Verification::Summary => "summary",
    }
}

fn delivery_name(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::NotSent => "not-sent",
        Delivery::Rejected => "rejected",
        Delivery::Unknown => "unknown",
    }
}

impl Failure {
    /// The HTTP status that answers `POST /run` with this failure.
    pub fn http_status(&self) -> u16 {
        match self {
            Failure::BadInput(_) => 400,
            Failure::Internal(_) => 500,
            Failure::Provider(_) | Failure::Sandbox(..) => 502,
        }
    }

    /// The error object as pretty JSON text.
    pub fn render(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialize")
    }

    /// One line for a person.
    pub fn message(&self) -> String {
        match self {
            Failure::BadInput(m) => format!("invalid input: {m}; nothing was sent"),
            Failure::Provider(f) => {
                let step = f.step.name();
                let provider = match f.step {
                    Step::QueryUsage => "Amberflo",
                    Step::RecordStripeMeter | Step::FindMeter | Step::ReadSummaries => "Stripe",
                };
                let mut line = match f.status {
                    Some(status) => {
                        format!(
                            "step {step} failed: {provider} answered {status}: {}",
                            f.message
                        )
                    }
                    None => format!("step {step} failed: {}", f.message),
                };
                if let Some(id) = &f.request_id {
                    line.push_str(&format!(" (request {id})"));
                }
                match (f.step, f.delivery) {
                    (Step::QueryUsage, _) => line.push_str("; nothing was sent to Stripe"),
                    (Step::FindMeter | Step::ReadSummaries, _) => {
                        line.push_str("; nothing was written to Stripe")
                    }
                    (_, Delivery::NotSent | Delivery::Rejected) if f.recorded.is_empty() => {
                        line.push_str("; no meter event was recorded")
                    }
                    (_, Delivery::NotSent | Delivery::Rejected) => {
                        line.push_str("; no meter event was recorded for this interval")
                    }
                    (_, Delivery::Unknown) => {}
                }
                if !f.recorded.is_empty() {
                    line.push_str(&format!(
                        "; {} earlier interval(s) were recorded and later ones not sent: rerun the same window to finish, the identifiers make that safe",
                        f.recorded.len()
                    ));
                }
                line
            }
            Failure::Sandbox(m, _) => format!("sandbox: {m}"),
            Failure::Internal(m) => format!("internal error: {m}"),
        }
    }

    /// The error object, `{"error": {...}}`.
    pub fn to_json(&self) -> Value {
        let (kind, extra) = match self {
            Failure::BadInput(_) => ("invalid-input", json!({})),
            Failure::Provider(f) => (
                "step-failed",
                json!({
                    "step": f.step.name(),
                    "status": f.status,
                    "requestId": f.request_id,
                    "delivery": delivery_name(f.delivery),
                    "attempts": f.attempts,
                    "startTime": f.window_start,
                    "endTime": f.window_end,
                    "recorded": f.recorded.iter().map(EventJson::from).collect::<Vec<_>>(),
                }),
            ),
            Failure::Sandbox(_, delivery) => {
                ("sandbox", json!({ "delivery": delivery_name(*delivery) }))
            }
            Failure::Internal(_) => ("internal", json!({})),
        };
        let mut error = json!({ "kind": kind, "message": self.message() });
        if let (Value::Object(error), Value::Object(extra)) = (&mut error, extra) {
            error.extend(extra);
        }
        json!({ "error": error })
    }
}

/// One meter event, as printed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson<'a> {
    meter_event_id: &'a str,
    event_name: &'a str,
    usage_quantity: &'a str,
    amberflo_total: Option<&'a str>,
    start_time: i64,
    end_time: i64,
    timestamp: i64,
    already_recorded: bool,
    /// How `already_recorded` was known: `identifier` or `summary`.
    verified_by: Option<&'static str>,
    /// What Stripe held for the interval before this run, when it was read.
    stripe_value: Option<&'a str>,
    /// Stripe held another value: nothing was written.
    drift: bool,
    /// A true-up correction: Stripe's value for the interval once it is
    /// counted (`stripeValue` is the value before).
    #[serde(skip_serializing_if = "Option::is_none")]
    corrected_to: Option<&'a str>,
    attempts: u32,
}

impl<'a> From<&'a MeterEvent> for EventJson<'a> {
    fn from(e: &'a MeterEvent) -> EventJson<'a> {
        EventJson {
            meter_event_id: &e.meter_event_id,
            event_name: &e.event_name,
            usage_quantity: &e.usage_quantity,
            amberflo_total: e.amberflo_total.as_deref(),
            start_time: e.window_start,
            end_time: e.window_end,
            timestamp: e.timestamp,
            already_recorded: e.already_recorded,
            verified_by: e.verified_by.map(verification_name),
            stripe_value: e.stripe_value.as_deref(),
            drift: e.drift,
            corrected_to: e.corrected_to.as_deref(),
            attempts: e.attempts,
        }
    }
}

/// The meter, as printed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MeterJson<'a> {
    id: &'a str,
    event_name: &'a str,
    customer_key: &'a str,
    value_key: &'a str,
    /// `day` or `hour` for a pre-aggregated meter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_aggregated: Option<&'static str>,
}

impl<'a> From<&'a Meter> for MeterJson<'a> {
    fn from(m: &'a Meter) -> MeterJson<'a> {
        MeterJson {
            id: &m.id,
            event_name: &m.event_name,
            customer_key: &m.customer_key,
            value_key: &m.value_key,
            pre_aggregated: m.pre_aggregated.map(|i| match i {
                Interval::Day => "day",
                Interval::Hour => "hour",
                Interval::Window => "window",
            }),
        }
    }
}

/// A read of Stripe, as a dry run shows it.
#[derive(Serialize)]
struct ReadJson<'a> {
    method: &'a str,
    url: &'a str,
    status: u16,
    answer: &'a str,
}

/// A Stripe request a dry run would send; the credential shown redacted.
#[derive(Serialize)]
struct PlannedJson<'a> {
    method: &'a str,
    url: &'a str,
    headers: serde_json::Map<String, Value>,
    body: &'a str,
}

impl<'a> From<&'a PlannedRequest> for PlannedJson<'a> {
    fn from(r: &'a PlannedRequest) -> PlannedJson<'a> {
        let mut headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::from(v.as_str())))
            .collect();
        // The host attaches it at the HTTP boundary; the guest never had it.
        headers.insert(
            "Authorization".into(),
            keys::stripe_bearer(keys::REDACTED).into(),
        );
        PlannedJson {
            method: &r.method,
            url: &r.url,
            headers,
            body: &r.body,
        }
    }
}

/// The outputs object: the Arazzo outputs first, then what was sent. With
/// exactly one event its fields also stand at the top, as in the Arazzo outputs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputsJson<'a> {
    /// Amberflo's `clientMeters`, byte for byte.
    usage_result: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meter_event_id: Option<&'a str>,
    event_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_quantity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amberflo_total: Option<&'a str>,
    start_time: i64,
    end_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    already_recorded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_by: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stripe_value: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<bool>,
    /// A true-up correction of the single event: Stripe's value after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    corrected_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    /// Amberflo's total for the window (times `--scale`), exactly.
    measured_total: &'a str,
    /// The sum of the events' whole values.
    billed_total: &'a str,
    meter: MeterJson<'a>,
    events: Vec<EventJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    /// The reads a dry run made (the meter, the summaries) and their answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stripe_reads: Vec<ReadJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stripe_requests: Vec<PlannedJson<'a>>,
}

/// The outputs as pretty JSON text.
pub fn render_outputs(outputs: &Outputs, dry_run: bool) -> String {
    // The guest parsed it already; a component that lies gets `null`, not broken JSON.
    let usage_result = RawValue::from_string(outputs.usage_result.clone())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
    let single = match outputs.events.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    serde_json::to_string_pretty(&OutputsJson {
        usage_result,
        meter_event_id: single.map(|e| e.meter_event_id.as_str()),
        event_name: &outputs.event_name,
        usage_quantity: single.map(|e| e.usage_quantity.as_str()),
        amberflo_total: single.and_then(|e| e.amberflo_total.as_deref()),
        start_time: outputs.window_start,
        end_time: outputs.window_end,
        timestamp: single.map(|e| e.timestamp),
        already_recorded: single.map(|e| e.already_recorded),
        verified_by: single.map(|e| e.verified_by.map(verification_name)),
        stripe_value: single.map(|e| e.stripe_value.as_deref()),
        drift: single.map(|e| e.drift),
        corrected_to: single.and_then(|e| e.corrected_to.as_deref()),
        attempts: single.map(|e| e.attempts),
        measured_total: &outputs.measured_total,
        billed_total: &outputs.billed_total,
        meter: MeterJson::from(&outputs.meter),
        events: outputs.events.iter().map(EventJson::from).collect(),
        dry_run: dry_run.then_some(true),
        stripe_reads: if dry_run {
            outputs
                .reads
                .iter()
                .map(|r| ReadJson {
                    method: &r.method,
                    url: &r.url,
                    status: r.status,
                    answer: &r.answer,
                })
                .collect()
        } else {
            Vec::new()
        },
        stripe_requests: outputs.planned.iter().map(PlannedJson::from).collect(),
    })
    .expect("plain data serializes")
}

/// One line for stderr saying what a successful run did.
pub fn summary(outputs: &Outputs, dry_run: bool) -> String {
    let mut line = if dry_run {
        format!(
            "dry run: {} Stripe read(s) made, {} Stripe write(s) shown on stdout, nothing written",
            outputs.reads.len(),
            outputs.planned.len()
        )
    } else {
        let recorded: Vec<&MeterEvent> = outputs
            .events
            .iter()
            .filter(|e| !e.already_recorded && !e.drift)
            .collect();
        let total: i128 = recorded
            .iter()
            .filter_map(|e| e.usage_quantity.parse::<i128>().ok())
            .sum();
        format!(
            "recorded {} event(s) on {} totalling {total}",
            recorded.len(),
            outputs.event_name
        )
    };
    let already = outputs.events.iter().filter(|e| e.already_recorded).count();
    if already > 0 {
        line.push_str(&format!(
            "; {already} already recorded in Stripe, nothing new sent for them"
        ));
    }
    if outputs.measured_total != outputs.billed_total {
        line.push_str(&format!(
            "; rounding each interval bills {} of the {} measured (see --scale)",
            outputs.billed_total, outputs.measured_total
        ));
    }
    let drifted: Vec<String> = outputs
        .drifted()
        .map(|e| {
            format!(
                "{}..{} Stripe holds {} where Amberflo measured {}",
                e.window_start,
                e.window_end,
                e.stripe_value.as_deref().unwrap_or("?"),
                e.usage_quantity
            )
        })
        .collect();
    if !drifted.is_empty() {
        line.push_str(&format!(
            "; DRIFT in {} interval(s), nothing written for them: {}",
            drifted.len(),
            drifted.join("; ")
        ));
    }
    line
}
