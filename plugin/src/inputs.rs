//! Input validation: everything is checked before the first request.

use crate::exports::usage_sync::workflow::workflow::Inputs;
use crate::time::{self, DAY};

/// Stripe accepts meter events up to 35 days old...
pub const MAX_AGE: i64 = 35 * DAY;
/// ...and at most 5 minutes ahead (clock drift).
pub const MAX_AHEAD: i64 = 300;
/// Stripe's limit on `event_name` and `identifier`.
pub const MAX_STRIPE_STRING: usize = 100;
/// Stripe refuses values with more than 15 significant digits.
pub const MAX_DIGITS: usize = 15;

/// A usage window in Unix seconds: start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The Stripe `timestamp`: the window's last second, so the event lands in
    /// the billing period that holds the usage.
    pub fn timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// Validated inputs: what the two requests are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub customer_id: String,
    pub meter_api_name: String,
    pub stripe_customer: String,
    pub stripe_event_name: String,
    /// A canonical whole number, when given.
    pub usage_quantity: Option<String>,
    pub window: Window,
}

pub fn validate(inputs: Inputs, now: i64) -> Result<Plan, String> {
    let customer_id = required("customerId", inputs.customer_id)?;
    let meter_api_name = required("meterApiName", inputs.meter_api_name)?;
    let stripe_customer = required("stripeCustomer", inputs.stripe_customer)?;
    let stripe_event_name = required("stripeEventName", inputs.stripe_event_name)?;
    if stripe_event_name.chars().count() > MAX_STRIPE_STRING {
        return Err(format!(
            "`stripeEventName` is longer than Stripe's limit of {MAX_STRIPE_STRING} characters"
        ));
    }
    let usage_quantity = inputs
        .usage_quantity
        .map(|q| whole_number(&q).map_err(|why| format!("`usageQuantity` {why}")))
        .transpose()?;
    let window = window(inputs.start_time, inputs.end_time, now)?;
    Ok(Plan {
        customer_id,
        meter_api_name,
        stripe_customer,
        stripe_event_name,
        usage_quantity,
        window,
    })
}

fn required(name: &str, value: String) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("`{name}` is required"));
    }
    if value.trim() != value {
        return Err(format!("`{name}` has leading or trailing spaces"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{name}` contains control characters"));
    }
    Ok(value)
}

/// Stripe takes whole numbers only, as plain digits (`42`, `-3`), at most 15 of them.
pub fn whole_number(text: &str) -> Result<String, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return Err(format!("must be a whole number like 42 (got `{text}`)"));
    }
    if (digits.len() > 1 && digits.starts_with('0')) || text == "-0" {
        return Err(format!(
            "must be written without leading zeros or a negative zero (got `{text}`)"
        ));
    }
    if digits.len() > MAX_DIGITS {
        return Err(format!(
            "has more than Stripe's {MAX_DIGITS} significant digits (got `{text}`)"
        ));
    }
    Ok(text.to_string())
}

fn window(start: Option<String>, end: Option<String>, now: i64) -> Result<Window, String> {
    let window = match (start, end) {
        (None, None) => {
            let today = now.div_euclid(DAY) * DAY;
            Window {
                start: today - DAY,
                end: today,
            }
        }
        (Some(start), Some(end)) => Window {
            start: time::parse(&start).map_err(|why| format!("`startTime` {why}"))?,
            end: time::parse(&end).map_err(|why| format!("`endTime` {why}"))?,
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err(
                "give both `startTime` and `endTime`, or neither for the previous full UTC day"
                    .into(),
            );
        }
    };
    if window.start >= window.end {
        return Err(format!(
            "the window must end after it starts (startTime {}, endTime {})",
            time::format(window.start),
            time::format(window.end)
        ));
    }
    let ts = window.timestamp();
    if ts > now + MAX_AHEAD {
        return Err(format!(
            "the window ends at {}, in the future: Stripe takes events at most 5 minutes ahead, and usage for an open window is incomplete",
            time::format(window.end)
        ));
    }
    if ts < now - MAX_AGE {
        return Err(format!(
            "the window ends at {}, more than 35 days ago: Stripe refuses meter events that old",
            time::format(window.end)
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_732_540_000; // 2024-11-25T13:06:40Z

    fn inputs() -> Inputs {
        Inputs {
            customer_id: "acme".into(),
            meter_api_name: "api-calls".into(),
            stripe_customer: "cus_123".into(),
            stripe_event_name: "api_calls".into(),
            usage_quantity: None,
            start_time: None,
            end_time: None,
        }
    }

    #[test]
    fn defaults_to_the_previous_utc_day() {
        let plan = validate(inputs(), NOW).unwrap();
        assert_eq!(
            plan.window,
            Window {
                start: 1_732_406_400,
                end: 1_732_492_800
            }
        );
        assert_eq!(plan.window.timestamp(), 1_732_492_799);
    }

    #[test]
    fn quantities_are_plain_whole_numbers() {
        for ok in ["0", "42", "-3", "999999999999999"] {
            assert_eq!(whole_number(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "-",
            "42.0",
            "4.2",
            "1e3",
            "+4",
            " 4",
            "042",
            "-0",
            "0x10",
            "1000000000000000",
        ] {
            assert!(whole_number(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refuses_missing_or_odd_fields() {
        let mut i = inputs();
        i.customer_id = String::new();
        assert_eq!(validate(i, NOW).unwrap_err(), "`customerId` is required");
        let mut i = inputs();
        i.stripe_event_name = "x".repeat(101);
        assert!(validate(i, NOW).unwrap_err().contains("100 characters"));
        let mut i = inputs();
        i.meter_api_name = " api".into();
        assert!(validate(i, NOW).unwrap_err().contains("spaces"));
    }

    #[test]
    fn windows_must_fit_stripes_range() {
        let with = |s: &str, e: &str| {
            let mut i = inputs();
            i.start_time = Some(s.into());
            i.end_time = Some(e.into());
            validate(i, NOW)
        };
        assert!(with("2024-11-24T00:00:00Z", "2024-11-25T00:00:00Z").is_ok());
        // Ends inside Stripe's 5-minute allowance for drift.
        assert!(with("1732536000", &(NOW + 300).to_string()).is_ok());
        let err = with("1732536000", &(NOW + 302).to_string()).unwrap_err();
        assert!(err.contains("in the future"), "{err}");
        let err = with("2024-10-01T00:00:00Z", "2024-10-02T00:00:00Z").unwrap_err();
        assert!(err.contains("35 days"), "{err}");
        let err = with("2024-11-25T00:00:00Z", "2024-11-25T00:00:00Z").unwrap_err();
        assert!(err.contains("must end after it starts"), "{err}");
        let mut i = inputs();
        i.start_time = Some("2024-11-24T00:00:00Z".into());
        assert!(validate(i, NOW).unwrap_err().contains("both"));
    }
}
