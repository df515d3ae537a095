//! The two Arazzo steps, in order. Step 2 never runs when step 1 fails.

use crate::exports::usage_sync::workflow::workflow::{
    Delivery, Endpoints, Inputs, Outputs, Step, StepFailure, WorkflowError,
};
use crate::inputs::{self, Plan};
use crate::{amberflo, http, stripe};

const USER_AGENT: &str = concat!("usage-sync/", env!("CARGO_PKG_VERSION"));

pub fn run(endpoints: &Endpoints, inputs: Inputs) -> Result<Outputs, WorkflowError> {
    let plan = inputs::validate(inputs, now()).map_err(WorkflowError::InvalidInput)?;
    let usage = query_usage(endpoints, &plan)?;
    let quantity = match &plan.usage_quantity {
        Some(q) => q.clone(),
        None => quantity_from_total(usage.total).map_err(WorkflowError::InvalidInput)?,
    };
    record_meter_event(endpoints, &plan, usage, quantity)
}

fn query_usage(endpoints: &Endpoints, plan: &Plan) -> Result<amberflo::Usage, WorkflowError> {
    let fail = |status, message, request_id| {
        WorkflowError::StepFailed(StepFailure {
            step: Step::QueryUsage,
            status,
            message,
            request_id,
            delivery: Delivery::NotSent,
        })
    };
    let url = join(&endpoints.amberflo_url, amberflo::PATH);
    let reply = http::post(
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("User-Agent", USER_AGENT),
        ],
        &amberflo::request_body(plan),
    )
    .map_err(|f| fail(None, f.message, None))?;
    if reply.status != 200 {
        return Err(fail(
            Some(reply.status),
            amberflo::error_message(&reply.body),
            reply.request_id,
        ));
    }
    amberflo::parse_response(&reply.body).map_err(|m| fail(Some(200), m, reply.request_id))
}

/// With no `usageQuantity`, Stripe gets the Amberflo total, if it is a whole number.
fn quantity_from_total(total: Option<f64>) -> Result<String, String> {
    let total = total.ok_or(
        "`usageQuantity` is absent and Amberflo's clientMeters has no values to total: give usageQuantity",
    )?;
    let text = format_number(total);
    if total.fract() != 0.0 || !total.is_finite() {
        return Err(format!(
            "`usageQuantity` is absent and the Amberflo total {text} is not a whole number, which Stripe requires: give usageQuantity"
        ));
    }
    inputs::whole_number(&text).map_err(|why| format!("the Amberflo total {why}"))
}

fn record_meter_event(
    endpoints: &Endpoints,
    plan: &Plan,
    usage: amberflo::Usage,
    quantity: String,
) -> Result<Outputs, WorkflowError> {
    let identifier = stripe::identifier(plan);
    let fail = |status, message: String, request_id, delivery| {
        let message = match delivery {
            Delivery::Unknown => format!(
                "{message}; the event may or may not be recorded: rerun the same window, its identifier {identifier} makes that safe"
            ),
            _ => message,
        };
        WorkflowError::StepFailed(StepFailure {
            step: Step::RecordStripeMeter,
            status,
            message,
            request_id,
            delivery,
        })
    };
    let url = join(&endpoints.stripe_url, stripe::PATH);
    let idempotency_key = idempotency_key();
    let reply = http::post(
        &url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Idempotency-Key", &idempotency_key),
            ("Stripe-Version", stripe::API_VERSION),
            ("User-Agent", USER_AGENT),
        ],
        stripe::request_body(plan, &quantity, &identifier).as_bytes(),
    )
    .map_err(|f| {
        let delivery = if f.maybe_sent {
            Delivery::Unknown
        } else {
            Delivery::NotSent
        };
        fail(None, f.message, None, delivery)
    })?;

    let outputs = |meter_event_id, event_name, already_recorded| Outputs {
        usage_result: usage.client_meters.clone(),
        meter_event_id,
        event_name,
        usage_quantity: quantity.clone(),
        amberflo_total: usage.total.map(format_number),
        window_start: plan.window.start,
        window_end: plan.window.end,
        timestamp: plan.window.timestamp(),
        already_recorded,
    };
    match reply.status {
        200 => {
            let event = stripe::parse_event(&reply.body)
                .map_err(|m| fail(Some(200), m, reply.request_id.clone(), Delivery::Unknown))?;
            Ok(outputs(event.identifier, event.event_name, false))
        }
        status => {
            let error = stripe::parse_error(&reply.body);
            if status == 400
                && error
                    .as_ref()
                    .is_some_and(|e| e.is_duplicate_of(&identifier))
            {
                return Ok(outputs(identifier, plan.stripe_event_name.clone(), true));
            }
            let message = match error {
                Some(e) => e.describe(),
                None => http::snippet(&reply.body),
            };
            // A 5xx or 409 may follow a write; any other answer refused it.
            let delivery = if status >= 500 || status == 409 {
                Delivery::Unknown
            } else {
                Delivery::Rejected
            };
            Err(fail(Some(status), message, reply.request_id, delivery))
        }
    }
}

/// `base` may carry a path prefix; a trailing slash must not double up.
fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e17 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_secs() as i64
}

/// A fresh UUID v4 per run: a key must never be reused by a later run, or
/// Stripe would replay an old answer for 24 hours.
fn idempotency_key() -> String {
    let mut b = wasip2::random::random::get_random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_must_be_whole() {
        assert_eq!(quantity_from_total(Some(42.0)).unwrap(), "42");
        assert_eq!(quantity_from_total(Some(0.0)).unwrap(), "0");
        assert!(
            quantity_from_total(Some(12.5))
                .unwrap_err()
                .contains("12.5 is not a whole number")
        );
        assert!(quantity_from_total(None).is_err());
        assert!(quantity_from_total(Some(1e16)).is_err());
    }

    #[test]
    fn joins_without_double_slashes() {
        assert_eq!(
            join("https://api.stripe.com/", "/v1/x"),
            "https://api.stripe.com/v1/x"
        );
        assert_eq!(
            join("http://127.0.0.1:9/p", "/usage"),
            "http://127.0.0.1:9/p/usage"
        );
    }
}
