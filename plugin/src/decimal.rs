//! Exact decimal numbers for usage: Amberflo's values read as the JSON text
//! they are written in, summed and scaled without floating-point error
//! (0.2 + 0.7 + 0.1 is 1, not 0.9999999999999999).

use crate::prelude::*;

use crate::exports::usage_sync::workflow::workflow::Rounding;
use core::fmt;

/// Digits kept after the point; more is refused rather than cut.
pub const MAX_SCALE: u32 = 18;

/// `units × 10^-scale`, kept with no trailing zeros in `units`' fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    units: i128,
    scale: u32,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal { units: 0, scale: 0 };

    /// A whole number.
    pub fn from_int(n: i64) -> Decimal {
        Decimal {
            units: i128::from(n),
            scale: 0,
        }
    }

    /// Parses a JSON number (`42`, `-0.5`, `4040.0`, `1e3`, `2.5E-2`).
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let bad = || format!("`{text}` is not a number");
        // One pass over the bytes: on wasm each `find`, `split_once` and
        // `strip_prefix` is a scan or a `memcmp` call of its own.
        let bytes = text.as_bytes();
        let negative = bytes.first() == Some(&b'-');
        let digits_from = |mut at: usize| {
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            at
        };
        let int_start = usize::from(negative);
        let mut at = digits_from(int_start);
        let int = &text[int_start..at];
        let mut frac = "";
        if bytes.get(at) == Some(&b'.') {
            let frac_start = at + 1;
            at = digits_from(frac_start);
            frac = &text[frac_start..at];
            if frac.is_empty() {
                return Err(bad());
            }
        }
        if int.is_empty() {
            return Err(bad());
        }
        let exponent = match bytes.get(at) {
            None => 0,
            Some(b'e' | b'E') => {
                let sign = usize::from(matches!(bytes.get(at + 1), Some(b'+' | b'-')));
                let digits_start = at + 1 + sign;
                let end = digits_from(digits_start);
                if end == digits_start || end != bytes.len() {
                    return Err(bad());
                }
                // Beyond this no i128 holds the value anyway.
                text[at + 1..]
                    .parse::<i64>()
                    .map_err(|_| out_of_range(text))?
            }
            Some(_) => return Err(bad()),
        };
        let mut units = digits_value(int, frac).ok_or_else(|| out_of_range(text))?;
        if negative {
            units = -units;
        }
        let scale = frac.len() as i64 - exponent;
        let value = if scale >= 0 {
            Decimal {
                units,
                scale: u32::try_from(scale).map_err(|_| out_of_range(text))?,
            }
            .normalized()
        } else {
            let factor = u32::try_from(-scale)
                .ok()
                .and_then(|p| 10i128.checked_pow(p))
                .ok_or_else(|| out_of_range(text))?;
            Decimal {
                units: units
                    .checked_mul(factor)
                    .ok_or_else(|| out_of_range(text))?,
                scale: 0,
            }
        };
        if value.scale > MAX_SCALE {
            return Err(format!(
                "`{text}` has more than {MAX_SCALE} digits after the point"
            ));
        }
        Ok(value)
    }

    fn normalized(mut self) -> Decimal {
        if self.units == 0 {
            return Decimal::ZERO;
        }
        // Usage fits an `i64`: its division is one instruction on wasm,
        // where an `i128`'s is a call.
        if let Ok(mut units) = i64::try_from(self.units) {
            while self.scale > 0 && units % 10 == 0 {
                units /= 10;
                self.scale -= 1;
            }
            self.units = i128::from(units);
            return self;
        }
        while self.scale > 0 && self.units % 10 == 0 {
            self.units /= 10;
            self.scale -= 1;
        }
        self
    }

    /// `units` at `scale` digits after the point, if it fits.
    fn at_scale(self, scale: u32) -> Option<i128> {
        let up = scale.checked_sub(self.scale)?;
        if up == 0 {
            return Some(self.units);
        }
        // In `i64` when it fits, as in `normalized`.
        if let (Ok(units), Some(factor)) = (i64::try_from(self.units), 10i64.checked_pow(up))
            && let Some(scaled) = units.checked_mul(factor)
        {
            return Some(i128::from(scaled));
        }
        self.units.checked_mul(10i128.checked_pow(up)?)
    }

    /// The sum, if it fits.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let units = self.at_scale(scale)?.checked_add(other.at_scale(scale)?)?;
        Some(Decimal { units, scale }.normalized())
    }

    /// The difference, if it fits.
    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(Decimal {
            units: other.units.checked_neg()?,
            scale: other.scale,
        })
    }

    /// The absolute value, if it fits.
    pub fn checked_abs(self) -> Option<Decimal> {
        Some(Decimal {
            units: self.units.checked_abs()?,
            scale: self.scale,
        })
    }

    /// Orders two values exactly.
    pub fn cmp_exact(self, other: Decimal) -> Option<core::cmp::Ordering> {
        let scale = self.scale.max(other.scale);
        Some(self.at_scale(scale)?.cmp(&other.at_scale(scale)?))
    }

    /// The exact sum of `values`, if it fits.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a Decimal>) -> Option<Decimal> {
        values
            .into_iter()
            .try_fold(Decimal::ZERO, |sum, v| sum.checked_add(*v))
    }

    /// The product, if it fits in at most 18 digits after the point.
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let product = Decimal {
            units: self.units.checked_mul(other.units)?,
            scale: self.scale + other.scale,
        }
        .normalized();
        (product.scale <= MAX_SCALE).then_some(product)
    }

    /// Whether it has no fraction.
    pub fn is_integer(self) -> bool {
        self.scale == 0
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.units == 0
    }

    /// Whether it is below zero.
    pub fn is_negative(self) -> bool {
        self.units < 0
    }

    /// The whole number `rounding` makes of it (`nearest`: halves away from zero).
    pub fn round(self, rounding: Rounding) -> i128 {
        let (divisor, quotient, remainder) =
            match (i64::try_from(self.units), 10i64.checked_pow(self.scale)) {
                // In `i64` when it fits, as in `normalized`.
                (Ok(units), Some(divisor)) => (
                    i128::from(divisor),
                    i128::from(units / divisor),
                    i128::from(units % divisor),
                ),
                _ => {
                    let divisor = 10i128.pow(self.scale);
                    (divisor, self.units / divisor, self.units % divisor)
                }
            };
        if remainder == 0 {
            return quotient;
        }
        let away = if self.units < 0 { -1 } else { 1 };
        match rounding {
            Rounding::Floor if self.units < 0 => quotient - 1,
            Rounding::Floor => quotient,
            Rounding::Ceil if self.units > 0 => quotient + 1,
            Rounding::Ceil => quotient,
            Rounding::Nearest if remainder.abs() * 2 >= divisor => quotient + away,
            Rounding::Nearest => quotient,
        }
    }

    /// As a float, for comparing with Stripe's `aggregated_value`.
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

/// The value of the ASCII digits of `int` then `frac`, if it fits: read 18 at
/// a time in a `u64`, since each `i128` multiplication is a call on wasm
/// (`Decimal::parse` was 8 % of the guest's samples in `-- throughput`).
fn digits_value(int: &str, frac: &str) -> Option<i128> {
    const CHUNK: u32 = 18;
    let (mut value, mut chunk, mut len) = (0i128, 0u64, 0u32);
    for b in int.bytes().chain(frac.bytes()) {
        chunk = chunk * 10 + u64::from(b - b'0');
        len += 1;
        if len == CHUNK {
            value = value
                .checked_mul(10i128.pow(CHUNK))?
                .checked_add(i128::from(chunk))?;
            (chunk, len) = (0, 0);
        }
    }
    // Up to 18 digits, the first chunk is the value: no `i128` arithmetic.
    if value == 0 {
        return Some(i128::from(chunk));
    }
    value
        .checked_mul(10i128.pow(len))?
        .checked_add(i128::from(chunk))
}

fn out_of_range(text: &str) -> String {
    format!("`{text}` is out of range")
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A whole number, what nearly every value sent is: its digits written
        // at once (on wasm each `format!` and `write!` is a round of
        // `core::fmt`'s dynamic calls).
        if self.scale == 0 {
            return match i64::try_from(self.units) {
                Ok(small) => fmt::Display::fmt(&small, f),
                Err(_) => fmt::Display::fmt(&self.units, f),
            };
        }
        let sign = if self.units < 0 { "-" } else { "" };
        // In `u64` when it fits, as in `normalized`.
        let digits = match u64::try_from(self.units.unsigned_abs()) {
            Ok(small) => small.to_string(),
            Err(_) => self.units.unsigned_abs().to_string(),
        };
        let scale = self.scale as usize;
        let digits = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn parses_json_numbers_exactly() {
        for (text, shown) in [
            ("42", "42"),
            ("4040.0", "4040"),
            ("-0.50", "-0.5"),
            ("0", "0"),
            ("-0.0", "0"),
            ("1e3", "1000"),
            ("2.5E-2", "0.025"),
            ("1E+2", "100"),
            ("-12.5e-1", "-1.25"),
            ("007", "7"),
            ("-42", "-42"),
            ("-4.2e1", "-42"),
            (
                "-170141183460469231731687303715884105727",
                "-170141183460469231731687303715884105727",
            ),
            ("0.000000000000000001", "0.000000000000000001"),
        ] {
            assert_eq!(d(text).to_string(), shown, "{text}");
        }
        for bad in [
            "", "-", ".5", "5.", "+1", "1e", "0x10", "1,5", "NaN", "\"42\"", "1.2.3", "--1", "-.5",
            "1.e3", "1e5.0", "1e+", "1e+-5", "1e-+5", " 1", "1 ", "1\u{e9}", "\u{e9}1", "1e\u{e9}",
        ] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            Decimal::parse("1e309")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(Decimal::parse("1e-19").unwrap_err().contains("18 digits"));
        assert!(Decimal::parse("1e99999999999999999999").is_err());
    }

    #[test]
    fn sums_without_float_error() {
        let sum = ["0.2", "0.7", "0.1"]
            .iter()
            .fold(Decimal::ZERO, |s, v| s.checked_add(d(v)).unwrap());
        assert_eq!(sum, Decimal::from_int(1));
        assert!(sum.is_integer());
        assert_eq!(d("0.05").checked_mul(d("1000")).unwrap().to_string(), "50");
    }

    #[test]
    fn arithmetic_past_what_an_i64_holds_stays_exact() {
        // Scaling up overflows an i64 (i64::MAX × 10): done in i128 instead.
        let big = d("9223372036854775807");
        assert_eq!(
            big.checked_add(d("0.1")).unwrap().to_string(),
            "9223372036854775807.1"
        );
        // Units beyond an i64, trailing zeros dropped.
        assert_eq!(
            d("12345678901234567890.10").to_string(),
            "12345678901234567890.1"
        );
        assert_eq!(
            d("99999999999999999999.5")
                .checked_add(d("0.5"))
                .unwrap()
                .to_string(),
            "100000000000000000000"
        );
        // Exactly at the boundary, and one past it.
        assert_eq!(
            d("-9223372036854775808.0").to_string(),
            "-9223372036854775808"
        );
        assert_eq!(
            d("9223372036854775808.50").to_string(),
            "9223372036854775808.5"
        );
        assert_eq!(
            d("0.000000000000000001")
                .checked_add(d("1e-18"))
                .unwrap()
                .to_string(),
            "0.000000000000000002"
        );
        assert_eq!(
            d("99999999999999999999.5").round(Rounding::Nearest),
            100_000_000_000_000_000_000
        );
        assert_eq!(
            d("-9223372036854775808").round(Rounding::Floor),
            -9_223_372_036_854_775_808
        );
        assert_eq!(d("-0.000000000000000005").round(Rounding::Ceil), 0);
        assert_eq!(d("-0.000000000000000005").round(Rounding::Floor), -1);
        // A product past an i64.
        assert_eq!(
            d("4294967296")
                .checked_mul(d("-4294967296.5"))
                .unwrap()
                .to_string(),
            "-18446744075857035264"
        );
    }

    #[test]
    fn rounds_as_asked() {
        for (text, floor, ceil, nearest) in [
            ("12.5", 12, 13, 13),
            ("12.2", 12, 13, 12),
            ("-12.5", -13, -12, -13),
            ("-12.2", -13, -12, -12),
            ("0.05", 0, 1, 0),
            ("7", 7, 7, 7),
        ] {
            assert_eq!(d(text).round(Rounding::Floor), floor, "{text}");
            assert_eq!(d(text).round(Rounding::Ceil), ceil, "{text}");
            assert_eq!(d(text).round(Rounding::Nearest), nearest, "{text}");
        }
    }
}
