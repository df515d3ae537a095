//! The workflow inputs: from `--inputs FILE.json` and one flag per input (flags win).
//! Presence and format are checked by the component itself, before any request,
//! so every host that runs it gives the same answers.

use crate::bindings::Inputs;
use serde::Deserialize;
use std::path::Path;

/// The inputs file: the Arazzo input names, plus the window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputsFile {
    /// `customerId`.
    pub customer_id: Option<String>,
    /// `meterApiName`.
    pub meter_api_name: Option<String>,
    /// `stripeCustomer`.
    pub stripe_customer: Option<String>,
    /// `stripeEventName`.
    pub stripe_event_name: Option<String>,
    /// `usageQuantity`: a string or a JSON number.
    pub usage_quantity: Option<Scalar>,
    /// `startTime`: Unix seconds (a number or a string) or RFC 3339.
    pub start_time: Option<Scalar>,
    /// `endTime`, as `startTime`.
    pub end_time: Option<Scalar>,
}

/// A string, or a JSON number (`42`, `1732492800`) taken as its text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// As written.
    Text(String),
    /// A JSON number, taken as its text.
    Number(serde_json::Number),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(t) => t,
            Scalar::Number(n) => n.to_string(),
        }
    }
}

impl InputsFile {
    /// Reads and checks an inputs file; unknown keys are an error.
    pub fn read(path: &Path) -> Result<InputsFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the inputs file {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("the inputs file {} is not valid: {e}", path.display()))
    }
}

/// One flag per input; `None` where the flag was not given.
#[derive(Debug, Default, Clone)]
pub struct InputFlags {
    /// `--customer-id`.
    pub customer_id: Option<String>,
    /// `--meter-api-name`.
    pub meter_api_name: Option<String>,
    /// `--stripe-customer`.
    pub stripe_customer: Option<String>,
    /// `--stripe-event-name`.
    pub stripe_event_name: Option<String>,
    /// `--usage-quantity`.
    pub usage_quantity: Option<String>,
    /// `--start-time`.
    pub start_time: Option<String>,
    /// `--end-time`.
    pub end_time: Option<String>,
}

/// The previous full UTC day, `(start, end)` in Unix seconds: the default window.
pub fn previous_utc_day() -> Result<(i64, i64), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    Ok(usage_sync_report::defaults::previous_utc_day(now))
}

/// Flags over file; a required input given nowhere becomes empty, which the
/// component reports by name.
pub fn merge(file: InputsFile, flags: InputFlags) -> Inputs {
    let text = |flag: Option<String>, file: Option<String>| flag.or(file).unwrap_or_default();
    Inputs {
        customer_id: text(flags.customer_id, file.customer_id),
        meter_api_name: text(flags.meter_api_name, file.meter_api_name),
        stripe_customer: text(flags.stripe_customer, file.stripe_customer),
        stripe_event_name: text(flags.stripe_event_name, file.stripe_event_name),
        usage_quantity: flags
            .usage_quantity
            .or(file.usage_quantity.map(Scalar::into_text)),
        start_time: flags.start_time.or(file.start_time.map(Scalar::into_text)),
        end_time: flags.end_time.or(file.end_time.map(Scalar::into_text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_numbers_become_text() {
        let file: InputsFile = serde_json::from_str(
            r#"{"customerId":"acme","meterApiName":"calls","stripeCustomer":"cus_1",
                "stripeEventName":"api_calls","usageQuantity":42,"startTime":1732406400,
                "endTime":"2024-11-25T00:00:00Z"}"#,
        )
        .unwrap();
        let flags = InputFlags {
            customer_id: Some("globex".into()),
            ..InputFlags::default()
        };
        let inputs = merge(file, flags);
        assert_eq!(inputs.customer_id, "globex");
        assert_eq!(inputs.meter_api_name, "calls");
        assert_eq!(inputs.usage_quantity.as_deref(), Some("42"));
        assert_eq!(inputs.start_time.as_deref(), Some("1732406400"));
        assert_eq!(inputs.end_time.as_deref(), Some("2024-11-25T00:00:00Z"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<InputsFile>(r#"{"customerID":"acme"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `customerID`"),
            "{err}"
        );
    }
}
