//! Why a run did not produce outputs, and how that is told: the error object
//! `{"error": {...}}`, the `POST /run` status, and one line for a person.

use crate::prelude::*;

use crate::json::Out;
use crate::render::event_json;
use crate::wit::{Delivery, Step, StepFailure, WorkflowError};
#[cfg(feature = "serde")]
use serde_json::Value;

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
        self.out().pretty()
    }

    /// One line for a person.
    pub fn message(&self) -> String {
        match self {
            Failure::BadInput(m) => format!("invalid input: {m}; nothing was sent"),
            Failure::Provider(f) => {
                let step = f.step.name();
                let provider = match f.step {
                    Step::QueryUsage => "Amberflo",
                    Step::RecordStripeMeter
                    | Step::FindMeter
                    | Step::ReadSummaries
                    | Step::ReadSubscriptions
                    | Step::ReadInvoices => "Stripe",
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
                    (
                        Step::FindMeter
                        | Step::ReadSummaries
                        | Step::ReadSubscriptions
                        | Step::ReadInvoices,
                        _,
                    ) => line.push_str("; nothing was written to Stripe"),
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

    /// The error object, `{"error": {...}}`, for the host's own JSON.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.out()).unwrap_or_default()
    }

    /// The error object, its keys sorted at every level (as printed since
    /// the first release, when it was a `serde_json::Value`).
    fn out(&self) -> Out {
        let error = Out::object()
            .with("kind", self.kind())
            .with("message", self.message());
        let error = match self {
            Failure::BadInput(_) | Failure::Internal(_) => error,
            Failure::Provider(f) => error
                .with("step", f.step.name())
                .with("status", f.status)
                .with("requestId", f.request_id.as_deref())
                .with("delivery", delivery_name(f.delivery))
                .with("attempts", f.attempts)
                .with("startTime", f.window_start)
                .with("endTime", f.window_end)
                .with(
                    "recorded",
                    f.recorded.iter().map(event_json).collect::<Vec<_>>(),
                ),
            Failure::Sandbox(_, delivery) => error.with("delivery", delivery_name(*delivery)),
        };
        Out::object().with("error", error).sorted()
    }

    /// The error's `kind`.
    fn kind(&self) -> &'static str {
        match self {
            Failure::BadInput(_) => "invalid-input",
            Failure::Provider(_) => "step-failed",
            Failure::Sandbox(..) => "sandbox",
            Failure::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::serde_reference::EventJson;
    use crate::render::tests::event;
    use serde_json::json;

    /// What the error object was built as before it was written by
    /// [`Out`]: a `serde_json::Value`, so every object's keys sorted.
    fn reference(failure: &Failure) -> String {
        let (kind, extra) = match failure {
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
        let mut error = json!({ "kind": kind, "message": failure.message() });
        if let (Value::Object(error), Value::Object(extra)) = (&mut error, extra) {
            error.extend(extra);
        }
        serde_json::to_string_pretty(&json!({ "error": error })).unwrap()
    }

    #[test]
    fn the_error_object_is_printed_as_before() {
        let step = |status, request_id: Option<&str>, recorded| {
            Failure::Provider(Box::new(StepFailure {
                step: Step::RecordStripeMeter,
                status,
                message: "the \"card\"\nwas declined".into(),
                request_id: request_id.map(Into::into),
                delivery: Delivery::Unknown,
                attempts: 3,
                window_start: 0,
                window_end: 86_400,
                recorded,
            }))
        };
        for failure in [
            Failure::BadInput("`customerId` is \u{1} missing".into()),
            Failure::Internal("boom".into()),
            Failure::Sandbox("limit".into(), Delivery::NotSent),
            step(None, None, Vec::new()),
            step(
                Some(429),
                Some("req_1"),
                vec![event(1, true), event(2, false)],
            ),
        ] {
            assert_eq!(failure.render(), reference(&failure), "{failure:?}");
            let value: Value = serde_json::from_str(&failure.render()).unwrap();
            assert_eq!(failure.to_json(), value);
        }
    }
}
