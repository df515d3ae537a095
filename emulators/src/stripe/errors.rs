//! Stripe's error bodies (`{"error": {...}}`), as the emulator answers them.

use crate::server::{Recorded, Reply};
use serde_json::json;
use std::collections::BTreeMap;

pub(crate) fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Reply {
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

pub(crate) fn invalid(param: &str, message: &str) -> Reply {
    error(400, "invalid_request_error", None, Some(param), message)
}

/// The body Stripe sends for a status it answers on its own.
pub(crate) fn canned(status: u16) -> Reply {
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

pub(crate) fn not_found_route(request: &Recorded) -> Reply {
    error(
        404,
        "invalid_request_error",
        None,
        None,
        &format!(
            "Unrecognized request URL ({}: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            request.method, request.target
        ),
    )
}

pub(crate) fn no_such_meter(id: &str) -> Reply {
    error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        Some("id"),
        &format!("No such billing meter: '{id}'"),
    )
}

pub(crate) fn unknown_param(params: &BTreeMap<String, String>) -> Reply {
    let key = params.keys().next().map_or("", String::as_str);
    invalid(key, &format!("Received unknown parameter: {key}"))
}

pub(crate) fn parameter_missing(param: &str) -> Reply {
    error(
        400,
        "invalid_request_error",
        Some("parameter_missing"),
        Some(param),
        &format!("Missing required param: {param}."),
    )
}
