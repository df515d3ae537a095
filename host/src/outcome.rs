//! What a run prints and its exit status.
//!
//! stdout carries exactly one JSON object: the outputs, or `{"error": {...}}`.
//! stderr carries short human lines. Keys are scrubbed from both.

use crate::bindings::{Delivery, Outputs, Step, WorkflowError};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Exit statuses, documented in README.
pub mod exit {
    pub const OK: u8 = 0;
    /// Something broke inside usage-sync itself.
    pub const INTERNAL: u8 = 1;
    /// Bad input or configuration: nothing was sent.
    pub const BAD_INPUT: u8 = 2;
    /// A provider refused or failed a step.
    pub const PROVIDER: u8 = 3;
    /// The sandbox refused a request or a limit was hit.
    pub const SANDBOX: u8 = 4;
}

#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    BadInput(String),
    Provider {
        step: &'static str,
        status: Option<u16>,
        message: String,
        request_id: Option<String>,
        delivery: &'static str,
    },
    Sandbox(String),
    Internal(String),
}

impl From<WorkflowError> for Failure {
    fn from(error: WorkflowError) -> Failure {
        match error {
            WorkflowError::InvalidInput(message) => Failure::BadInput(message),
            WorkflowError::StepFailed(f) => Failure::Provider {
                step: match f.step {
                    Step::QueryUsage => "query-usage",
                    Step::RecordStripeMeter => "record-stripe-meter",
                },
                status: f.status,
                message: f.message,
                request_id: f.request_id,
                delivery: match f.delivery {
                    Delivery::NotSent => "not-sent",
                    Delivery::Rejected => "rejected",
                    Delivery::Unknown => "unknown",
                },
            },
        }
    }
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => exit::BAD_INPUT,
            Failure::Provider { .. } => exit::PROVIDER,
            Failure::Sandbox(_) => exit::SANDBOX,
            Failure::Internal(_) => exit::INTERNAL,
        }
    }

    /// One line for a person.
    pub fn message(&self) -> String {
        match self {
            Failure::BadInput(m) => format!("invalid input: {m}; nothing was sent"),
            Failure::Provider {
                step,
                status,
                message,
                request_id,
                delivery,
            } => {
                let provider = if *step == "query-usage" {
                    "Amberflo"
                } else {
                    "Stripe"
                };
                let mut line = match status {
                    Some(status) => {
                        format!("step {step} failed: {provider} answered {status}: {message}")
                    }
                    None => format!("step {step} failed: {message}"),
                };
                if let Some(id) = request_id {
                    line.push_str(&format!(" (request {id})"));
                }
                match *delivery {
                    "not-sent" if *step == "query-usage" => {
                        line.push_str("; nothing was sent to Stripe")
                    }
                    "not-sent" | "rejected" => line.push_str("; no meter event was recorded"),
                    _ => {}
                }
                line
            }
            Failure::Sandbox(m) => format!("sandbox: {m}"),
            Failure::Internal(m) => format!("internal error: {m}"),
        }
    }

    pub fn to_json(&self) -> Value {
        let (kind, extra) = match self {
            Failure::BadInput(_) => ("invalid-input", json!({})),
            Failure::Provider {
                step,
                status,
                request_id,
                delivery,
                ..
            } => (
                "step-failed",
                json!({ "step": step, "status": status, "requestId": request_id, "delivery": delivery }),
            ),
            Failure::Sandbox(_) => ("sandbox", json!({})),
            Failure::Internal(_) => ("internal", json!({})),
        };
        let mut error = json!({ "kind": kind, "message": self.message() });
        if let (Value::Object(error), Value::Object(extra)) = (&mut error, extra) {
            error.extend(extra);
        }
        json!({ "error": error })
    }
}

/// The outputs object: the Arazzo outputs first, then what was sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputsJson<'a> {
    /// Amberflo's `clientMeters`, byte for byte.
    usage_result: Box<RawValue>,
    meter_event_id: &'a str,
    event_name: &'a str,
    usage_quantity: &'a str,
    amberflo_total: Option<&'a str>,
    start_time: i64,
    end_time: i64,
    timestamp: i64,
    already_recorded: bool,
}

/// The outputs as pretty JSON text.
pub fn render_outputs(outputs: &Outputs) -> String {
    // The guest parsed it already; a component that lies gets `null`, not broken JSON.
    let usage_result = RawValue::from_string(outputs.usage_result.clone())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
    serde_json::to_string_pretty(&OutputsJson {
        usage_result,
        meter_event_id: &outputs.meter_event_id,
        event_name: &outputs.event_name,
        usage_quantity: &outputs.usage_quantity,
        amberflo_total: outputs.amberflo_total.as_deref(),
        start_time: outputs.window_start,
        end_time: outputs.window_end,
        timestamp: outputs.timestamp,
        already_recorded: outputs.already_recorded,
    })
    .expect("plain data serializes")
}
