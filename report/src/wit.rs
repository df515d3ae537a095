//! The mirror types of `wit/usage-sync.wit`'s records: what the component
//! returns, as this crate reads it. Each side moves its generated bindings
//! into them field by field (the host's `mirror` module, the component's
//! `handler`), so this crate needs neither wasmtime nor wit-bindgen.

use crate::prelude::*;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// A step of the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Amberflo `POST /usage`.
    QueryUsage,
    /// Stripe `POST /v1/billing/meter_events`.
    RecordStripeMeter,
    /// Stripe `GET /v1/billing/meters`.
    FindMeter,
    /// Stripe `GET /v1/billing/meters/{id}/event_summaries`.
    ReadSummaries,
    /// Stripe `GET /v1/subscriptions`.
    ReadSubscriptions,
    /// Stripe `GET /v1/invoices`.
    ReadInvoices,
}

/// How a window is cut into meter events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// One event per UTC day.
    Day,
    /// One event per UTC hour.
    Hour,
    /// One event for the whole window.
    Window,
}

/// How a run knew Stripe already held an interval's event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Stripe refused the identifier as a duplicate.
    Identifier,
    /// Stripe's summary already held the value.
    Summary,
    /// This tool's own write of the last hour, not yet in Stripe's summary.
    RecentWrite,
}

/// The Stripe meter the events went to.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing was sent, or the step does not write.
    NotSent,
    /// Stripe answered and refused: nothing recorded.
    Rejected,
    /// The answer was lost: the event may be recorded.
    Unknown,
}

/// One meter event of a run.
#[derive(Clone, Debug)]
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
    /// Carried out of a period whose invoice is final: the start of the open
    /// period it was recorded in (the window is the closed interval it bills).
    pub carried_into: Option<i64>,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// A request a dry run would send.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
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
    /// The Amberflo sources summed into the events (`customer/meter`).
    pub sources: Vec<String>,
    /// What each UTC day written to now holds, for the next run's lag check.
    pub marks: Vec<LedgerMark>,
    /// Usage no invoice bills now.
    pub unbilled: Vec<Unbilled>,
    /// When the current periods of the items on the meter end.
    pub period_ends: Vec<i64>,
    /// Nothing was sent: a dry run.
    pub dry_run: bool,
}

/// Usage no invoice bills now.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Deserialize, Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all(serialize = "camelCase")))]
pub struct Unbilled {
    /// The piece's start.
    pub window_start: i64,
    /// The piece's end (exclusive).
    pub window_end: i64,
    /// The quantity (decimal text).
    pub quantity: String,
    /// The billing period it belongs to.
    pub period_start: i64,
    /// Its end; `None` after the subscription ended.
    pub period_end: Option<i64>,
    /// The invoice of that period.
    pub invoice: Option<String>,
    /// The invoice's status, `ended` or `no-subscription`.
    pub status: String,
    /// Written anyway (no subscription item yet).
    pub written: bool,
}

/// What one UTC day of a ledger holds after this tool wrote to it.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(Deserialize, Serialize))]
pub struct LedgerMark {
    /// The Stripe meter's id.
    pub meter_id: String,
    /// The UTC day's first second.
    pub day_start: i64,
    /// The end of the last piece written for the day.
    pub through: i64,
    /// Stripe's total for the day after the write (decimal text).
    pub total: String,
    /// When it was written.
    pub at: i64,
}

impl Outputs {
    /// The intervals where Stripe held another value: nothing was written for them.
    pub fn drifted(&self) -> impl Iterator<Item = &MeterEvent> {
        self.events.iter().filter(|e| e.drift)
    }

    /// The usage no invoice would bill, left unwritten.
    pub fn closed(&self) -> impl Iterator<Item = &Unbilled> {
        self.unbilled.iter().filter(|u| !u.written)
    }
}

/// A step that failed, as the component tells it.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
pub enum WorkflowError {
    /// Bad input: nothing was sent.
    InvalidInput(String),
    /// A step failed.
    StepFailed(StepFailure),
}

impl Step {
    /// The step's `stepId` in the workflow's Arazzo document.
    pub fn name(self) -> &'static str {
        match self {
            Step::QueryUsage => "query-usage",
            Step::RecordStripeMeter => "record-stripe-meter",
            Step::FindMeter => "find-meter",
            Step::ReadSummaries => "read-summaries",
            Step::ReadSubscriptions => "read-subscriptions",
            Step::ReadInvoices => "read-invoices",
        }
    }
}
