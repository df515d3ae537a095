//! Usage values: Stripe takes whole numbers as plain digits, at most 15 of them.

use crate::prelude::*;

use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::Rounding;

/// Stripe refuses values with more than 15 significant digits.
pub const MAX_DIGITS: usize = 15;

/// Checks a given value: plain digits (`42`, `-3`), no leading zeros.
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

/// The value to send for an exact total: as is when whole, else by the
/// chosen rounding; without one, an error (never rounded silently).
pub fn from_total(total: Decimal, rounding: Option<Rounding>) -> Result<String, String> {
    let whole = match rounding {
        _ if total.is_integer() => total.round(Rounding::Floor),
        Some(rule) => total.round(rule),
        None => {
            return Err(format!(
                "the Amberflo total {total} is not a whole number, which Stripe requires: give usageQuantity, choose a rounding (--round floor|ceil|nearest), or bill in smaller units (--scale)"
            ));
        }
    };
    whole_number(&whole.to_string()).map_err(|why| format!("the Amberflo total {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_values_are_plain_whole_numbers() {
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
    fn totals_are_rounded_only_when_asked() {
        let d = |t: &str| Decimal::parse(t).unwrap();
        assert_eq!(from_total(d("42.0"), None).unwrap(), "42");
        assert_eq!(from_total(d("0"), None).unwrap(), "0");
        let err = from_total(d("12.5"), None).unwrap_err();
        assert!(err.contains("12.5 is not a whole number"), "{err}");
        assert_eq!(from_total(d("12.5"), Some(Rounding::Floor)).unwrap(), "12");
        assert_eq!(from_total(d("12.2"), Some(Rounding::Ceil)).unwrap(), "13");
        assert_eq!(
            from_total(d("12.5"), Some(Rounding::Nearest)).unwrap(),
            "13"
        );
        assert_eq!(
            from_total(d("-12.5"), Some(Rounding::Nearest)).unwrap(),
            "-13"
        );
        assert!(from_total(d("1e16"), None).is_err());
    }
}
