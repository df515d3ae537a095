//! Reconcile: Amberflo's total for each interval against what Stripe's
//! summaries hold, cell by cell, with a status finance can act on. Pure: the
//! reads are the workflow's.

use crate::prelude::*;

use crate::by_time::ByTime;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{Cell, CellStatus};
use crate::inputs::Window;
use core::cmp::Ordering;

/// What decides a cell's status besides its two values.
pub struct Rules {
    /// Now, Unix seconds.
    pub now: i64,
    /// An interval that ended less than this many seconds ago is settling.
    pub settle_secs: i64,
    /// Differences up to this (absolute, billed units) are a match.
    pub tolerance: Decimal,
}

/// One cell per interval: `expected` is Amberflo's (scaled) total per
/// interval, `held` Stripe's value keyed by the interval's start.
pub fn cells(
    intervals: &[Window],
    expected: &[Decimal],
    held: &ByTime<(i64, Decimal)>,
    rules: &Rules,
) -> Result<Vec<Cell>, String> {
    let too_large = || "a difference is too large".to_string();
    intervals
        .iter()
        .zip(expected)
        .map(|(interval, &amberflo)| {
            let stripe = match held.get(interval.start) {
                Some(&(_, value)) => value,
                None => Decimal::ZERO,
            };
            let difference = amberflo.checked_sub(stripe).ok_or_else(too_large)?;
            let within = difference
                .checked_abs()
                .and_then(|d| d.cmp_exact(rules.tolerance))
                .ok_or_else(too_large)?
                != Ordering::Greater;
            let status = if within {
                CellStatus::Match
            } else if rules.now - interval.end < rules.settle_secs {
                CellStatus::Settling
            } else if stripe.is_zero() {
                CellStatus::Missing
            } else if difference.is_negative() {
                CellStatus::Over
            } else {
                CellStatus::Under
            };
            Ok(Cell {
                window_start: interval.start,
                window_end: interval.end,
                amberflo: amberflo.to_string(),
                stripe: stripe.to_string(),
                difference: difference.to_string(),
                status,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn status(amberflo: &str, stripe: Option<&str>, ended_ago: i64, tolerance: &str) -> CellStatus {
        let now = 100 * DAY;
        let interval = Window {
            start: now - ended_ago - DAY,
            end: now - ended_ago,
        };
        let held: ByTime<(i64, Decimal)> = stripe
            .map(|v| (interval.start, (interval.end, Decimal::parse(v).unwrap())))
            .into_iter()
            .collect();
        let rules = Rules {
            now,
            settle_secs: 72 * 3600,
            tolerance: Decimal::parse(tolerance).unwrap(),
        };
        let expected = [Decimal::parse(amberflo).unwrap()];
        cells(&[interval], &expected, &held, &rules).unwrap()[0].status
    }

    #[test]
    fn every_status() {
        let settled = 4 * DAY;
        assert_eq!(status("42", Some("42.0"), settled, "0"), CellStatus::Match);
        assert_eq!(status("42", None, settled, "0"), CellStatus::Missing);
        assert_eq!(status("42", Some("40.0"), settled, "0"), CellStatus::Under);
        assert_eq!(status("42", Some("45.0"), settled, "0"), CellStatus::Over);
        assert_eq!(status("42", Some("40.0"), DAY, "0"), CellStatus::Settling);
        assert_eq!(status("42", Some("40.0"), settled, "2"), CellStatus::Match);
        assert_eq!(status("42", Some("39.0"), settled, "2"), CellStatus::Under);
        assert_eq!(status("0", None, settled, "0"), CellStatus::Match);
        assert_eq!(status("0.5", Some("0.25"), settled, "0"), CellStatus::Under);
    }
}
