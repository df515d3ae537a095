//! Unix seconds and RFC 3339 timestamps, without a date library in the component.

use crate::prelude::*;

/// Seconds in a day; windows default to whole UTC days.
pub const DAY: i64 = 86_400;

/// The last second of year 9999: later times are refused, not wrapped.
pub const MAX: i64 = 253_402_300_799;

/// Parses Unix seconds (`1732492800`) or an RFC 3339 date-time
/// (`2024-11-25T00:00:00Z`, `2024-11-25T01:00:00+01:00`). A leap second
/// (`23:59:60`) is refused: read as `23:59:59` it would name another window.
pub fn parse(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("is empty".into());
    }
    let out_of_range = || format!("`{s}` is out of range (1970 to 9999)");
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .ok()
            .filter(|t| *t <= MAX)
            .ok_or_else(out_of_range);
    }
    if s.get(17..19) == Some("60") {
        return Err(format!(
            "`{s}` is a leap second: give the next minute's first second instead"
        ));
    }
    let t = parse_rfc3339(s).ok_or_else(|| {
        format!("`{s}` is neither Unix seconds nor an RFC 3339 date-time like 2024-11-25T00:00:00Z")
    })?;
    if !(0..=MAX).contains(&t) {
        return Err(out_of_range());
    }
    Ok(t)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num_in(s, 0..4)?, num_in(s, 5..7)?, num_in(s, 8..10)?);
    let (hour, minute, second) = (num_in(s, 11..13)?, num_in(s, 14..16)?, num_in(s, 17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        // Windows are whole seconds: a fraction would silently move a boundary.
        if digits == 0 || frac[..digits].bytes().any(|c| c != b'0') {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            if o.len() != 6 || !matches!(o[0], b'+' | b'-') || o[3] != b':' {
                return None;
            }
            let (h, m) = (num_in(rest, 1..3)?, num_in(rest, 4..6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if o[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    Some(days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second - offset)
}

fn num_in(s: &str, r: core::ops::Range<usize>) -> Option<i64> {
    let part = s.get(r)?;
    part.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| part.parse().ok())?
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 text (UTC) for Unix seconds, for messages.
pub use usage_sync_report::rfc3339 as format;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_seconds_and_rfc3339() {
        assert_eq!(parse("1732492800"), Ok(1_732_492_800));
        assert_eq!(parse("2024-11-25T00:00:00Z"), Ok(1_732_492_800));
        assert_eq!(parse("2024-11-25t01:00:00+01:00"), Ok(1_732_492_800));
        assert_eq!(parse("2024-11-24T19:00:00-05:00"), Ok(1_732_492_800));
        assert_eq!(parse("2024-11-25T00:00:00.000Z"), Ok(1_732_492_800));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("2000-03-01T00:00:00Z"), Ok(951_868_800));
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2024-11-25",
            "2024-11-25T00:00:00",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-11-25T24:00:00Z",
            "2024-11-25T00:00:00.5Z",
            "2024-11-25T00:00:00+1:00",
            "-5",
            "99999999999999999999",
            "253402300800",
            "2026-11-23T23:59:60Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_back() {
        for t in [0, 951_868_800, 1_732_492_800, 1_732_579_199] {
            assert_eq!(parse(&format(t)), Ok(t));
        }
        assert_eq!(format(1_732_492_800), "2024-11-25T00:00:00Z");
    }
}
