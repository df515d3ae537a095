//! The mirror types of `wit/usage-sync.wit`'s records: what the component
//! returns, as this crate reads it. Each side moves its generated bindings
//! into them field by field with [`mirror_from!`], so this crate needs
//! neither wasmtime nor wit-bindgen.

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

/// The conversions from a side's generated bindings into these mirror
/// types, moving every field: `mirror_from!(wit)` where `wit` names the
/// module holding that side's `Outputs`, `StepFailure`, ... (the host's
/// wasmtime bindings, the component's wit-bindgen ones). One definition for
/// both sides, so they cannot map a field differently; a WIT field the
/// mirror lacks fails to compile on either side.
#[macro_export]
macro_rules! mirror_from {
    ($wit:ident) => {
        impl ::core::convert::From<$wit::Outputs> for $crate::Outputs {
            fn from(o: $wit::Outputs) -> Self {
                $crate::Outputs {
                    usage_result: o.usage_result,
                    event_name: o.event_name,
                    window_start: o.window_start,
                    window_end: o.window_end,
                    measured_total: o.measured_total,
                    billed_total: o.billed_total,
                    meter: o.meter.into(),
                    events: $crate::mirror_each(o.events),
                    planned: $crate::mirror_each(o.planned),
                    reads: $crate::mirror_each(o.reads),
                    sources: o.sources,
                    marks: $crate::mirror_each(o.marks),
                    unbilled: $crate::mirror_each(o.unbilled),
                    period_ends: o.period_ends,
                    dry_run: o.dry_run,
                }
            }
        }

        impl ::core::convert::From<$wit::Meter> for $crate::Meter {
            fn from(m: $wit::Meter) -> Self {
                $crate::Meter {
                    id: m.id,
                    event_name: m.event_name,
                    customer_key: m.customer_key,
                    value_key: m.value_key,
                    pre_aggregated: m.pre_aggregated.map(::core::convert::Into::into),
                }
            }
        }

        impl ::core::convert::From<$wit::Interval> for $crate::Interval {
            fn from(i: $wit::Interval) -> Self {
                match i {
                    $wit::Interval::Day => $crate::Interval::Day,
                    $wit::Interval::Hour => $crate::Interval::Hour,
                    $wit::Interval::Window => $crate::Interval::Window,
                }
            }
        }

        impl ::core::convert::From<$wit::Verification> for $crate::Verification {
            fn from(v: $wit::Verification) -> Self {
                match v {
                    $wit::Verification::Identifier => $crate::Verification::Identifier,
                    $wit::Verification::Summary => $crate::Verification::Summary,
                    $wit::Verification::RecentWrite => $crate::Verification::RecentWrite,
                }
            }
        }

        impl ::core::convert::From<$wit::MeterEvent> for $crate::MeterEvent {
            fn from(e: $wit::MeterEvent) -> Self {
                $crate::MeterEvent {
                    meter_event_id: e.meter_event_id,
                    event_name: e.event_name,
                    usage_quantity: e.usage_quantity,
                    amberflo_total: e.amberflo_total,
                    window_start: e.window_start,
                    window_end: e.window_end,
                    timestamp: e.timestamp,
                    already_recorded: e.already_recorded,
                    verified_by: e.verified_by.map(::core::convert::Into::into),
                    stripe_value: e.stripe_value,
                    drift: e.drift,
                    corrected_to: e.corrected_to,
                    carried_into: e.carried_into,
                    attempts: e.attempts,
                }
            }
        }

        impl ::core::convert::From<$wit::PlannedRequest> for $crate::PlannedRequest {
            fn from(p: $wit::PlannedRequest) -> Self {
                $crate::PlannedRequest {
                    method: p.method,
                    url: p.url,
                    headers: p.headers,
                    body: p.body,
                }
            }
        }

        impl ::core::convert::From<$wit::StripeRead> for $crate::StripeRead {
            fn from(r: $wit::StripeRead) -> Self {
                $crate::StripeRead {
                    method: r.method,
                    url: r.url,
                    status: r.status,
                    answer: r.answer,
                }
            }
        }

        impl ::core::convert::From<$wit::LedgerMark> for $crate::LedgerMark {
            fn from(m: $wit::LedgerMark) -> Self {
                $crate::LedgerMark {
                    meter_id: m.meter_id,
                    day_start: m.day_start,
                    through: m.through,
                    total: m.total,
                    at: m.at,
                }
            }
        }

        impl ::core::convert::From<$wit::Unbilled> for $crate::Unbilled {
            fn from(u: $wit::Unbilled) -> Self {
                $crate::Unbilled {
                    window_start: u.window_start,
                    window_end: u.window_end,
                    quantity: u.quantity,
                    period_start: u.period_start,
                    period_end: u.period_end,
                    invoice: u.invoice,
                    status: u.status,
                    written: u.written,
                }
            }
        }

        impl ::core::convert::From<$wit::Step> for $crate::Step {
            fn from(s: $wit::Step) -> Self {
                match s {
                    $wit::Step::QueryUsage => $crate::Step::QueryUsage,
                    $wit::Step::RecordStripeMeter => $crate::Step::RecordStripeMeter,
                    $wit::Step::FindMeter => $crate::Step::FindMeter,
                    $wit::Step::ReadSummaries => $crate::Step::ReadSummaries,
                    $wit::Step::ReadSubscriptions => $crate::Step::ReadSubscriptions,
                    $wit::Step::ReadInvoices => $crate::Step::ReadInvoices,
                }
            }
        }

        impl ::core::convert::From<$wit::Delivery> for $crate::Delivery {
            fn from(d: $wit::Delivery) -> Self {
                match d {
                    $wit::Delivery::NotSent => $crate::Delivery::NotSent,
                    $wit::Delivery::Rejected => $crate::Delivery::Rejected,
                    $wit::Delivery::Unknown => $crate::Delivery::Unknown,
                }
            }
        }

        impl ::core::convert::From<$wit::StepFailure> for $crate::StepFailure {
            fn from(f: $wit::StepFailure) -> Self {
                $crate::StepFailure {
                    step: f.step.into(),
                    status: f.status,
                    message: f.message,
                    request_id: f.request_id,
                    delivery: f.delivery.into(),
                    attempts: f.attempts,
                    window_start: f.window_start,
                    window_end: f.window_end,
                    recorded: $crate::mirror_each(f.recorded),
                }
            }
        }

        impl ::core::convert::From<$wit::WorkflowError> for $crate::WorkflowError {
            fn from(e: $wit::WorkflowError) -> Self {
                match e {
                    $wit::WorkflowError::InvalidInput(why) => {
                        $crate::WorkflowError::InvalidInput(why)
                    }
                    $wit::WorkflowError::StepFailed(f) => {
                        $crate::WorkflowError::StepFailed(f.into())
                    }
                }
            }
        }
    };
}

/// Every item of a list, converted (for [`mirror_from!`]).
#[doc(hidden)]
pub fn mirror_each<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}
