//! Civil (proleptic Gregorian, UTC) dates from Unix seconds: the component's
//! RFC 3339 timestamps and reconcile's day labels both come from here.

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
