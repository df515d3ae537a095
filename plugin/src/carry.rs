//! Where usage carried out of a period whose invoice is final is stamped
//! (`--late-usage carry`), so that Stripe's summaries, which keep no event
//! identifiers, say on any later night what was carried and from where.
//!
//! A period's carries live in the two hours after its start, one minute per
//! origin: the first hour for a UTC day (or its part before a renewal), the
//! second for a day's part after a renewal; the minute is how many days the
//! origin lies before the period's start day. usage-sync's own events are
//! stamped at an hour's last second (`XX:59:59`), and these minutes stop well
//! before it, so a minute's summary holds carried usage only, and the hour's
//! summary minus the two ranges holds the ledger's own events only.

use crate::inputs::Window;
use crate::time::DAY;

/// The oldest origin a period takes carries from, in days before its start
/// day: Stripe keeps meter events 35 days back, so no origin is older.
pub const MAX_DAYS: i64 = 36;

/// The carry ranges of the period starting at `into`: `[first hour's
/// minutes, second hour's minutes]`. The first hour is the one starting at or
/// after `into`, so every carry is stamped inside the period.
pub fn ranges(into: i64) -> [Window; 2] {
    let first = into.div_euclid(3600) * 3600 + if into % 3600 == 0 { 0 } else { 3600 };
    let minutes = (MAX_DAYS + 1) * 60;
    [0, 3600].map(|offset| Window {
        start: first + offset,
        end: first + offset + minutes,
    })
}

/// Both ranges in one: what a single summary read covers.
pub fn span(into: i64) -> Window {
    let [first, second] = ranges(into);
    Window {
        start: first.start,
        end: second.end,
    }
}

/// The minute of the period starting at `into` that holds what was carried
/// out of the origin starting at `origin` (a UTC day, or a day's part after a
/// renewal); `None` when the origin is not before the period's start day or
/// is older than [`MAX_DAYS`].
pub fn slot(into: i64, origin: i64) -> Option<Window> {
    let days = into.div_euclid(DAY) - origin.div_euclid(DAY);
    if !(0..=MAX_DAYS).contains(&days) || origin >= into {
        return None;
    }
    let hour = ranges(into)[usize::from(origin.rem_euclid(DAY) != 0)];
    let start = hour.start + days * 60;
    Some(Window {
        start,
        end: start + 60,
    })
}

/// The event's timestamp in a slot: its middle, clear of both edges.
pub fn stamp(slot: Window) -> i64 {
    slot.start + 30
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEWAL: i64 = 20_000 * DAY + 15 * 3600 + 1234;

    #[test]
    fn slots_sit_inside_the_period_and_clear_of_every_hour_end() {
        let [first, second] = ranges(RENEWAL);
        assert_eq!(first.start, 20_000 * DAY + 16 * 3600);
        assert_eq!(second.start, first.start + 3600);
        for origin_day in (20_000 - MAX_DAYS)..=20_000 {
            for part in [0, 15 * 3600] {
                let origin = origin_day * DAY + part;
                if origin >= RENEWAL {
                    continue;
                }
                let s = slot(RENEWAL, origin).expect("a slot");
                assert!(s.start >= RENEWAL);
                // Never the minute of an hour's last second, where our own
                // events are stamped.
                assert!(s.start % 3600 < 59 * 60, "{}", s.start % 3600);
                let range = ranges(RENEWAL)[usize::from(part != 0)];
                assert!(range.start <= s.start && s.end <= range.end);
                assert!(span(RENEWAL).start <= s.start && s.end <= span(RENEWAL).end);
            }
        }
    }

    #[test]
    fn every_origin_has_its_own_minute() {
        let mut seen = std::collections::BTreeSet::new();
        for origin_day in (20_000 - MAX_DAYS)..=20_000 {
            for part in [0, 3 * 3600] {
                let s = slot(RENEWAL, origin_day * DAY + part).expect("a slot");
                assert!(seen.insert(s.start));
            }
        }
    }

    #[test]
    fn a_period_on_the_hour_starts_its_slots_there() {
        let into = 20_000 * DAY;
        assert_eq!(ranges(into)[0].start, into);
        assert_eq!(slot(into, into - DAY).map(|s| s.start), Some(into + 60));
    }

    #[test]
    fn no_slot_for_an_origin_after_the_start_or_too_old() {
        assert_eq!(slot(RENEWAL, RENEWAL), None);
        assert_eq!(slot(RENEWAL, RENEWAL + DAY), None);
        assert_eq!(slot(RENEWAL, RENEWAL - (MAX_DAYS + 1) * DAY), None);
    }
}
