//! How a step fails: what the caller is told, and whether anything may have
//! been written.

use crate::prelude::*;

use crate::exports::usage_sync::workflow::workflow::{
    Delivery, MeterEvent, Step, StepFailure, WorkflowError,
};
use crate::http::{self, NoAnswer, Reply};
use crate::inputs::Window;
use crate::stripe;

/// A step that writes nothing failed: nothing was recorded.
pub(super) fn step_failed(
    step: Step,
    window: Window,
    status: Option<u16>,
    message: String,
    request_id: Option<String>,
    attempts: u32,
) -> WorkflowError {
    WorkflowError::StepFailed(StepFailure {
        step,
        status,
        message,
        request_id,
        delivery: Delivery::NotSent,
        attempts,
        window_start: window.start,
        window_end: window.end,
        recorded: Vec::new(),
    })
}

/// Stripe's summaries over `window`, added up exactly, overflowed: Stripe
/// answered 200 with more than usage-sync can hold.
pub(super) fn summaries_too_large(window: Window) -> WorkflowError {
    step_failed(
        Step::ReadSummaries,
        window,
        Some(200),
        "Stripe's summaries add up to more than usage-sync can hold".into(),
        None,
        1,
    )
}

/// A meter event's write failed: which step, what came back, and whether
/// the event may be recorded all the same.
pub(super) fn write_failed(
    event: &MeterEvent,
    interval: &Window,
    status: Option<u16>,
    message: String,
    request_id: Option<String>,
    delivery: Delivery,
) -> StepFailure {
    let message = match delivery {
        Delivery::Unknown => format!(
            "{message}; the event may or may not be recorded: rerun the same window, its identifier {} makes that safe",
            event.meter_event_id
        ),
        _ => message,
    };
    StepFailure {
        step: Step::RecordStripeMeter,
        status,
        message,
        request_id,
        delivery,
        attempts: event.attempts,
        window_start: interval.start,
        window_end: interval.end,
        recorded: Vec::new(),
    }
}

/// A failed answer as its status, message and request id; the message is
/// Stripe's error body when it is one.
pub(super) fn describe(result: Result<Reply, NoAnswer>) -> (Option<u16>, String, Option<String>) {
    match result {
        Ok(reply) => {
            let message = match stripe::parse_error(&reply.body) {
                Some(e) => e.describe(),
                None => http::snippet(&reply.body),
            };
            (Some(reply.status), message, reply.request_id())
        }
        Err(f) => (None, f.message, None),
    }
}
