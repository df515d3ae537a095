//! Civil (proleptic Gregorian, UTC) dates from Unix seconds: the RFC 3339
//! timestamps of the component and of the host's state, and reconcile's day
//! labels, all come from here.

use crate::prelude::*;

/// The UTC calendar date of Unix seconds `t`, `(year, month, day)`, and the
/// seconds into that day (Howard Hinnant's civil-from-days).
pub fn civil(t: i64) -> (i64, i64, i64, i64) {
    const DAY: i64 = 86_400;
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs)
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-30T00:00:00Z`.
pub fn rfc3339(t: i64) -> String {
    let (y, m, d, secs) = civil(t);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        );
    }
    // By hand: on wasm `format!`'s padded numbers made this about 1 % of a
    // sync's CPU (every bucket and piece is named in a run's output).
    let mut out = String::with_capacity(20);
    for (value, width, then) in [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (secs / 3600, 2, ':'),
        (secs % 3600 / 60, 2, ':'),
        (secs % 60, 2, 'Z'),
    ] {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10i64.pow(place) % 10) as u8));
        }
        out.push(then);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_at_every_width() {
        assert_eq!(rfc3339(1_732_492_800), "2024-11-25T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(-62_167_219_200), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(-62_167_219_201), "-001-12-31T23:59:59Z");
        let reference = |t: i64| {
            let (y, m, d, secs) = civil(t);
            let (h, min, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
        };
        for t in (-62_200_000_000..260_000_000_000).step_by(86_399_999) {
            for t in [t, t + 3_599, t + 7_261] {
                assert_eq!(rfc3339(t), reference(t), "{t}");
            }
        }
    }
}
