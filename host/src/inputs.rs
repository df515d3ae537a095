//! The workflow inputs: from `--inputs FILE.json` and one flag per input (flags win).
//! Presence and format are checked by the component itself, before any request,
//! so every host that runs it gives the same answers.

use crate::bindings::Inputs;
use std::path::Path;
use usage_sync_report::{RunRequest, Scalar};

/// The inputs file: the inputs JSON the component's `POST /run` reads
/// ([`RunRequest`]), with the inputs only; options are flags here.
#[derive(Debug, Default)]
pub struct InputsFile(RunRequest);

/// An inputs file is a few hundred bytes (`POST /run` takes 64 KiB).
const MAX_INPUTS_FILE: u64 = 1 << 20;

impl InputsFile {
    /// Reads and checks an inputs file; unknown keys, and options, are an error.
    pub fn read(path: &Path) -> Result<InputsFile, String> {
        let bytes = crate::capped::read(path, MAX_INPUTS_FILE, "inputs file")?;
        let invalid = |e: String| format!("the inputs file {} is not valid: {e}", path.display());
        let run = RunRequest::parse(&bytes).map_err(invalid)?;
        if let Some(option) = run.options_given().first() {
            return Err(invalid(format!(
                "`{option}` is an option of `POST /run`; `usage-sync run` takes options as flags"
            )));
        }
        Ok(InputsFile(run))
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

/// The default window of `reconcile`, `(start, end)` in Unix seconds on a
/// `grid` of seconds: every ended interval whose events Stripe still accepts
/// (a timestamp, the interval's last second, at most 35 days old).
pub fn reconcile_window(grid: i64) -> Result<(i64, i64), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    Ok(window_back_from(now, grid))
}

fn window_back_from(now: i64, grid: i64) -> (i64, i64) {
    const MAX_AGE: i64 = 35 * 86_400;
    let end = now.div_euclid(grid) * grid;
    // The first interval whose last second is no older than 35 days.
    let start = (now - MAX_AGE - grid + 1).div_euclid(grid) * grid + grid;
    (start.min(end), end)
}

/// Flags over file; a required input given nowhere becomes empty, which the
/// component reports by name.
pub fn merge(InputsFile(file): InputsFile, flags: InputFlags) -> Inputs {
    let text = |flag: Option<String>, file: Option<String>| flag.or(file).unwrap_or_default();
    Inputs {
        customer_id: text(flags.customer_id, file.customer_id),
        meter_api_name: text(flags.meter_api_name, file.meter_api_name),
        stripe_customer: text(flags.stripe_customer, file.stripe_customer),
        stripe_event_name: text(flags.stripe_event_name, file.stripe_event_name),
        usage_quantity: flags
            .usage_quantity
            .or(file.usage_quantity.as_ref().map(Scalar::text)),
        start_time: flags
            .start_time
            .or(file.start_time.as_ref().map(Scalar::text)),
        end_time: flags.end_time.or(file.end_time.as_ref().map(Scalar::text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> Result<InputsFile, String> {
        let dir = std::env::temp_dir().join(format!("usage-sync-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.json", json.len()));
        std::fs::write(&path, json).unwrap();
        let read = InputsFile::read(&path);
        std::fs::remove_file(&path).unwrap();
        read
    }

    #[test]
    fn flags_win_and_numbers_become_text() {
        let file = file(
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
    fn reconcile_covers_every_ended_interval_stripe_still_accepts() {
        let now = 1_764_120_000; // 2025-11-26 01:20 UTC
        let (start, end) = window_back_from(now, 86_400);
        assert_eq!((end - start) / 86_400, 35);
        assert_eq!(end, 1_764_115_200);
        assert!(start + 86_400 > now - 35 * 86_400);
        let (start, end) = window_back_from(now, 3600);
        assert_eq!(end, 1_764_118_800);
        assert!(start + 3600 > now - 35 * 86_400);
        assert!(start - 1 < now - 35 * 86_400);
    }

    #[test]
    fn unknown_keys_and_options_are_refused() {
        let err = file(r#"{"customerID":"acme"}"#).unwrap_err();
        assert!(err.contains("unknown field `customerID`"), "{err}");
        let err = file(r#"{"customerId":"acme","interval":"hour"}"#).unwrap_err();
        assert!(err.contains("`interval` is an option"), "{err}");
    }
}
