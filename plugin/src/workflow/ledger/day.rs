//! The decision for one UTC day of one ledger (a Stripe customer and meter):
//! pure, so every case is tested without a provider.
//!
//! Stripe bills a customer and meter by the events' timestamps, whoever sent
//! them and whatever interval they stood for. usage-sync stamps each event at
//! the last second of what it covers and always covers a day from where
//! Stripe's day already reaches, so what Stripe holds for a day is a prefix:
//! `[day start, reach)`. A run compares that prefix with what every source
//! measured over it, and writes only what lies beyond it. The interval shape
//! of earlier runs (day, hour, window) does not matter: only the day's total
//! and how far it reaches do.

use crate::prelude::*;

use crate::by_time::ByTime;
use crate::decimal::Decimal;
use crate::inputs::Window;

/// What the sources measured, as whole values to bill: the cumulative total
/// from the day's start to each point of Amberflo's grid (rounded as a whole,
/// so cutting a day differently never changes its total).
#[derive(Debug, Default, Clone)]
pub(crate) struct Measured {
    /// Instant → whole total billed from the day's start up to it.
    pub points: ByTime<Decimal>,
}

impl Measured {
    /// The whole total from the day's start to `t`, when `t` is on the grid.
    pub fn at(&self, t: i64) -> Option<Decimal> {
        self.points.get(t).copied()
    }
}

/// What Stripe holds for the day: its summaries' buckets (hour or day), every
/// writer's events.
#[derive(Debug, Default, Clone)]
pub(crate) struct Held {
    /// `(start, end, value)`, in order.
    pub buckets: Vec<(i64, i64, Decimal)>,
}

impl Held {
    /// The day's total.
    pub fn total(&self) -> Option<Decimal> {
        self.buckets
            .iter()
            .try_fold(Decimal::ZERO, |sum, b| sum.checked_add(b.2))
    }

    /// Where Stripe's day reaches: the end of its last bucket holding
    /// anything (`day_start` when it holds nothing).
    pub fn reach(&self, day_start: i64) -> i64 {
        self.buckets
            .iter()
            .filter(|b| !b.2.is_zero())
            .map(|b| b.1)
            .max()
            .unwrap_or(day_start)
    }

    /// What Stripe holds before `t`; `None` when a bucket holding anything
    /// straddles `t` (the summaries cannot tell on which side it lies).
    pub fn before(&self, t: i64) -> Option<Decimal> {
        let mut sum = Decimal::ZERO;
        for &(start, end, value) in &self.buckets {
            if end <= t {
                sum = sum.checked_add(value)?;
            } else if start < t && !value.is_zero() {
                return None;
            }
        }
        Some(sum)
    }

    /// Counts `value` as held in the bucket holding `t` (a write of ours that
    /// Stripe's summary does not show yet).
    pub fn add_at(&mut self, t: i64, value: Decimal) {
        match self.buckets.iter_mut().find(|b| b.0 <= t && t < b.1) {
            Some(bucket) => bucket.2 = bucket.2.checked_add(value).unwrap_or(bucket.2),
            None => {
                // After any bucket starting at `t`, as a stable sort would put it.
                let at = self.buckets.partition_point(|b| b.0 <= t);
                self.buckets.insert(at, (t, t + 1, value));
            }
        }
    }
}

/// What the options allow for a day Stripe holds another value for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// `--true-up`, and the day has settled: correct instead of reporting.
    pub correct: bool,
    /// `--allow-decrease`: a correction may be negative.
    pub allow_decrease: bool,
}

/// One piece of the decision, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Stripe already holds it.
    Held { window: Window, value: Decimal },
    /// Write `value` for `window`. A correction carries the total it brings
    /// the window to (its identifier depends on it).
    Write {
        window: Window,
        value: Decimal,
        correction: Option<Correction>,
    },
    /// Stripe holds `held` where the sources measured `measured`: reported,
    /// nothing written.
    Drift {
        window: Window,
        held: Decimal,
        measured: Decimal,
    },
}

/// What a true-up correction changes: Stripe's value for the window before
/// it, and the total it brings the window to (its identifier depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Correction {
    pub from: Decimal,
    pub to: Decimal,
}

/// One UTC day of a raw (`sum`) ledger, as the run sees it.
pub(crate) struct Day<'a> {
    /// The UTC day.
    pub day: Window,
    /// The run's intervals inside it, in order, contiguous (`[a, e)`).
    pub intervals: &'a [Window],
    /// The sources' cumulative totals from the day's start.
    pub measured: &'a Measured,
    /// Stripe's summaries of the day.
    pub held: &'a Held,
}

/// Decides one day of a raw ledger: what is held, what to write, what drifted.
pub(crate) fn decide(day: &Day, rules: Rules) -> Result<Vec<Piece>, String> {
    let (Some(first), Some(last)) = (day.intervals.first(), day.intervals.last()) else {
        return Ok(Vec::new());
    };
    let d = day.day.start;
    let (a, e) = (first.start, last.end);
    let missing = |t: i64| format!("no measured total at {t}: the usage does not reach it");
    let measured_at = |t: i64| day.measured.at(t).ok_or_else(|| missing(t));
    let held_total = day
        .held
        .total()
        .ok_or("Stripe's values add up past what usage-sync holds")?;
    let reach = day.held.reach(d);
    let me = measured_at(e)?;
    let interval_value = |i: &Window| -> Result<Decimal, String> {
        measured_at(i.end)?
            .checked_sub(measured_at(i.start)?)
            .ok_or_else(|| "a measured total is too large".to_string())
    };
    let mut pieces = Vec::new();
    if reach > e {
        // Stripe's day reaches past this run (a later part of the day was
        // synced, or the day was corrected as a whole at its end). What lies
        // after the run's end may stand for usage before it, so nothing is
        // written from here: the day holds at least this prefix, or drift.
        if me.cmp_exact(held_total) == Some(core::cmp::Ordering::Greater) {
            pieces.push(Piece::Drift {
                window: Window { start: d, end: e },
                held: held_total,
                measured: me,
            });
        } else {
            for i in day.intervals {
                pieces.push(Piece::Held {
                    window: *i,
                    value: interval_value(i)?,
                });
            }
        }
        return Ok(pieces);
    }
    let Some(mx) = day.measured.at(reach) else {
        // Stripe's day ends inside one of Amberflo's buckets (an hourly run
        // reached there, this one runs by day): compare the day as a whole,
        // assuming the part Stripe holds was synced from the same usage.
        let whole = Window { start: d, end: e };
        match me.cmp_exact(held_total) {
            Some(core::cmp::Ordering::Equal) => {
                for i in day.intervals {
                    pieces.push(Piece::Held {
                        window: *i,
                        value: interval_value(i)?,
                    });
                }
            }
            Some(core::cmp::Ordering::Greater) => pieces.push(Piece::Write {
                window: Window {
                    start: reach.max(a),
                    end: e,
                },
                value: me.checked_sub(held_total).ok_or("too large")?,
                correction: None,
            }),
            _ => pieces.push(mismatch(whole, held_total, me, rules)?),
        }
        return Ok(pieces);
    };
    if mx == held_total {
        for i in day.intervals.iter().filter(|i| i.end <= reach) {
            pieces.push(Piece::Held {
                window: *i,
                value: interval_value(i)?,
            });
        }
    } else {
        pieces.push(mismatch(
            Window {
                start: d,
                end: reach,
            },
            held_total,
            mx,
            rules,
        )?);
    }
    // Beyond the reach: from there to the run's end, cut where the run's
    // intervals end (a gap before the run's start is one piece of its own).
    let mut cuts = vec![reach];
    if reach < a {
        cuts.push(a);
    }
    cuts.extend(day.intervals.iter().map(|i| i.end).filter(|&t| t > reach));
    for pair in cuts.windows(2) {
        let window = Window {
            start: pair[0],
            end: pair[1],
        };
        let value = measured_at(window.end)?
            .checked_sub(measured_at(window.start)?)
            .ok_or("a measured total is too large")?;
        // A gap the run did not ask for is written only when it holds usage.
        if window.end <= a && value.is_zero() {
            continue;
        }
        pieces.push(Piece::Write {
            window,
            value,
            correction: None,
        });
    }
    Ok(pieces)
}

/// One bucket of a pre-aggregated ledger (Stripe keeps the last event of it):
/// the total, written again only where Stripe holds nothing or, as a
/// correction, another value.
pub(crate) fn decide_bucket(
    window: Window,
    held: Decimal,
    measured: Decimal,
    rules: Rules,
) -> Result<Piece, String> {
    if held == measured && !held.is_zero() {
        return Ok(Piece::Held {
            window,
            value: measured,
        });
    }
    if held.is_zero() {
        return Ok(Piece::Write {
            window,
            value: measured,
            correction: None,
        });
    }
    Ok(match mismatch(window, held, measured, rules)? {
        // Stripe keeps the last event: the correction is the total again.
        Piece::Write { window, .. } => Piece::Write {
            window,
            value: measured,
            correction: Some(Correction {
                from: held,
                to: measured,
            }),
        },
        other => other,
    })
}

/// Stripe holds another value than measured for `window`: a correction when
/// the rules allow one, else drift.
fn mismatch(
    window: Window,
    held: Decimal,
    measured: Decimal,
    rules: Rules,
) -> Result<Piece, String> {
    let difference = measured
        .checked_sub(held)
        .ok_or("a difference is too large")?;
    let allowed = !difference.is_negative() || rules.allow_decrease;
    if rules.correct && allowed && held.is_integer() {
        return Ok(Piece::Write {
            window,
            value: difference,
            correction: Some(Correction {
                from: held,
                to: measured,
            }),
        });
    }
    Ok(Piece::Drift {
        window,
        held,
        measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;

    fn n(v: i64) -> Decimal {
        Decimal::from_int(v)
    }

    /// One unit an hour from the day's start, on an hour grid.
    fn hourly() -> Measured {
        Measured {
            points: (0..=24).map(|h| (h * H, n(h))).collect(),
        }
    }

    fn hours(from: i64, to: i64) -> Vec<Window> {
        (from..to)
            .map(|h| Window {
                start: h * H,
                end: (h + 1) * H,
            })
            .collect()
    }

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    const PLAIN: Rules = Rules {
        correct: false,
        allow_decrease: false,
    };

    fn writes(pieces: &[Piece]) -> Vec<(Window, Decimal)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Write { window, value, .. } => Some((*window, *value)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_fresh_day_is_written_interval_by_interval() {
        let (m, h) = (hourly(), Held::default());
        let hours = hours(0, 24);
        let day = Day {
            day: w(0, D),
            intervals: &hours,
            measured: &m,
            held: &h,
        };
        let pieces = decide(&day, PLAIN).unwrap();
        assert_eq!(pieces.len(), 24);
        assert!(writes(&pieces).iter().all(|(_, v)| *v == n(1)));
    }

    #[test]
    fn a_day_held_by_a_day_event_is_not_written_again_by_hour() {
        let m = hourly();
        // The day event sits at 23:59:59: the hourly summary puts it in the last hour.
        let held = Held {
            buckets: (0..24)
                .map(|h| (h * H, (h + 1) * H, if h == 23 { n(24) } else { n(0) }))
                .collect(),
        };
        let hours = hours(0, 24);
        let day = Day {
            day: w(0, D),
            intervals: &hours,
            measured: &m,
            held: &held,
        };
        let pieces = decide(&day, PLAIN).unwrap();
        assert!(writes(&pieces).is_empty(), "{pieces:?}");
        assert_eq!(pieces.len(), 24);
    }

    #[test]
    fn the_first_hours_of_a_day_held_whole_are_held_not_drift() {
        let m = hourly();
        let held = Held {
            buckets: vec![(23 * H, D, n(24))],
        };
        let first = hours(0, 10);
        let day = Day {
            day: w(0, D),
            intervals: &first,
            measured: &m,
            held: &held,
        };
        let pieces = decide(&day, PLAIN).unwrap();
        assert!(pieces.iter().all(|p| matches!(p, Piece::Held { .. })));
    }

    #[test]
    fn the_rest_of_a_day_synced_by_hour_is_written_by_a_day_run() {
        let m = Measured {
            points: [(0, n(0)), (D, n(24))].into_iter().collect(),
        };
        let held = Held {
            buckets: vec![(0, D, n(10))],
        };
        // Reach is the day's end: the day compared whole.
        let day = [w(0, D)];
        let d = Day {
            day: w(0, D),
            intervals: &day,
            measured: &m,
            held: &held,
        };
        // A day bucket that holds 10 of 24: drift (the day is held whole).
        assert!(matches!(decide(&d, PLAIN).unwrap()[0], Piece::Drift { .. }));
        // Hourly summaries locate it: held through 10:00, the rest is written.
        let held = Held {
            buckets: (0..24)
                .map(|h| (h * H, (h + 1) * H, if h < 10 { n(1) } else { n(0) }))
                .collect(),
        };
        let m = hourly();
        let d = Day {
            day: w(0, D),
            intervals: &day,
            measured: &m,
            held: &held,
        };
        assert_eq!(
            writes(&decide(&d, PLAIN).unwrap()),
            vec![(w(10 * H, D), n(14))]
        );
    }

    #[test]
    fn a_run_that_starts_after_the_reach_writes_the_gap_first() {
        let m = hourly();
        let held = Held {
            buckets: (0..24)
                .map(|h| (h * H, (h + 1) * H, if h < 5 { n(1) } else { n(0) }))
                .collect(),
        };
        let late = hours(8, 10);
        let d = Day {
            day: w(0, D),
            intervals: &late,
            measured: &m,
            held: &held,
        };
        assert_eq!(
            writes(&decide(&d, PLAIN).unwrap()),
            vec![
                (w(5 * H, 8 * H), n(3)),
                (w(8 * H, 9 * H), n(1)),
                (w(9 * H, 10 * H), n(1))
            ]
        );
    }

    #[test]
    fn a_lower_prefix_is_drift_and_a_true_up_corrects_it() {
        let m = hourly();
        let held = Held {
            buckets: (0..24)
                .map(|h| (h * H, (h + 1) * H, if h == 9 { n(7) } else { n(0) }))
                .collect(),
        };
        let hours = hours(0, 12);
        let d = Day {
            day: w(0, D),
            intervals: &hours,
            measured: &m,
            held: &held,
        };
        let pieces = decide(&d, PLAIN).unwrap();
        assert_eq!(
            pieces[0],
            Piece::Drift {
                window: w(0, 10 * H),
                held: n(7),
                measured: n(10)
            }
        );
        // The new hours are still written.
        assert_eq!(writes(&pieces).len(), 2);
        let correct = Rules {
            correct: true,
            allow_decrease: false,
        };
        let pieces = decide(&d, correct).unwrap();
        assert_eq!(
            pieces[0],
            Piece::Write {
                window: w(0, 10 * H),
                value: n(3),
                correction: Some(Correction {
                    from: n(7),
                    to: n(10)
                })
            }
        );
    }

    #[test]
    fn an_overage_is_corrected_only_when_decreases_are_allowed() {
        let m = hourly();
        let held = Held {
            buckets: vec![(23 * H, D, n(30))],
        };
        let day = [w(0, D)];
        let d = Day {
            day: w(0, D),
            intervals: &day,
            measured: &m,
            held: &held,
        };
        let up = Rules {
            correct: true,
            allow_decrease: false,
        };
        assert!(matches!(decide(&d, up).unwrap()[0], Piece::Drift { .. }));
        let down = Rules {
            correct: true,
            allow_decrease: true,
        };
        assert_eq!(writes(&decide(&d, down).unwrap()), vec![(w(0, D), n(-6))]);
    }

    #[test]
    fn pre_aggregated_buckets_resend_the_total() {
        let correct = Rules {
            correct: true,
            allow_decrease: false,
        };
        let day = w(0, D);
        assert!(matches!(
            decide_bucket(day, n(24), n(24), PLAIN).unwrap(),
            Piece::Held { .. }
        ));
        assert!(matches!(
            decide_bucket(day, n(0), n(24), PLAIN).unwrap(),
            Piece::Write {
                correction: None,
                ..
            }
        ));
        assert!(matches!(
            decide_bucket(day, n(20), n(24), PLAIN).unwrap(),
            Piece::Drift { .. }
        ));
        assert_eq!(
            decide_bucket(day, n(20), n(24), correct).unwrap(),
            Piece::Write {
                window: day,
                value: n(24),
                correction: Some(Correction {
                    from: n(20),
                    to: n(24)
                })
            }
        );
    }

    #[test]
    fn a_write_the_summary_does_not_show_yet_counts_as_held() {
        let m = hourly();
        let mut held = Held {
            buckets: (0..24).map(|h| (h * H, (h + 1) * H, n(0))).collect(),
        };
        // Our own day event, minutes ago: 24 through the day's end.
        held.add_at(D - 1, n(24));
        let hours = hours(0, 24);
        let d = Day {
            day: w(0, D),
            intervals: &hours,
            measured: &m,
            held: &held,
        };
        assert!(writes(&decide(&d, PLAIN).unwrap()).is_empty());
    }

    /// A run's shape over one day: by day, a run of hours, or one window.
    #[derive(Debug, Clone)]
    enum Shape {
        /// By day, reading the summaries by hour (a window of a few days).
        Day,
        /// By day in a long window, reading the summaries by day.
        DayInLongWindow,
        Hours(i64, i64),
        Window(i64, i64),
    }

    fn shape() -> impl proptest::strategy::Strategy<Value = Shape> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Shape::Day),
            Just(Shape::DayInLongWindow),
            (0i64..24, 1i64..=24).prop_map(|(a, n)| Shape::Hours(a, (a + n).min(24))),
            (0i64..24, 1i64..=24).prop_map(|(a, n)| Shape::Window(a, (a + n).min(24))),
        ]
    }

    /// Runs one shape against Stripe's per-hour holdings; returns the pieces.
    fn run_once(
        shape: &Shape,
        usage: &[i64; 24],
        stripe: &mut [i64; 24],
        rules: Rules,
    ) -> Vec<Piece> {
        // Amberflo is asked by day for whole days; Stripe's summaries are
        // read by hour but in a long window of whole days.
        let (intervals, by_day, held_by_day) = match *shape {
            Shape::Day => (vec![w(0, D)], true, false),
            Shape::DayInLongWindow => (vec![w(0, D)], true, true),
            Shape::Hours(a, e) => (hours(a, e), false, false),
            Shape::Window(a, e) => (vec![w(a * H, e * H)], a == 0 && e == 24, false),
        };
        let step = if by_day { 24 } else { 1 };
        let mut points = ByTime::new();
        let mut sum = 0;
        for h in 0..=24 {
            if h % step == 0 {
                points.insert(h * H, n(sum));
            }
            if h < 24 {
                sum += usage[h as usize];
            }
        }
        let measured = Measured { points };
        let held = if held_by_day {
            Held {
                buckets: vec![(0, D, n(stripe.iter().sum()))],
            }
        } else {
            Held {
                buckets: (0..24)
                    .map(|h| (h * H, (h + 1) * H, n(stripe[h as usize])))
                    .collect(),
            }
        };
        let day = Day {
            day: w(0, D),
            intervals: &intervals,
            measured: &measured,
            held: &held,
        };
        let pieces = decide(&day, rules).unwrap();
        for (window, value) in writes(&pieces) {
            let hour = ((window.end - 1) / H) as usize;
            stripe[hour] += value.to_string().parse::<i64>().unwrap();
        }
        pieces
    }

    proptest::proptest! {
        /// Any sequence of runs over one day, by day, by hour or by window,
        /// with sources added between them (raw meter), never bills more
        /// than measured, and a final true-up leaves Stripe holding exactly
        /// the sum of the sources.
        #[test]
        fn any_mix_of_shapes_and_sources_bills_each_unit_once(
            sources in proptest::collection::vec(proptest::array::uniform24(0i64..4), 1..4),
            runs in proptest::collection::vec((shape(), 1usize..3, proptest::bool::ANY), 1..8),
        ) {
            let mut stripe = [0i64; 24];
            // Rows are added to the mapping, never taken away (a removed
            // source's billed usage is drift, reported, as it should be).
            let mut mapped = 0;
            for (shape, more, correct) in &runs {
                mapped = (mapped + more - 1).clamp(1, sources.len());
                let mut usage = [0i64; 24];
                for source in &sources[..mapped] {
                    for h in 0..24 {
                        usage[h] += source[h];
                    }
                }
                let rules = Rules { correct: *correct, allow_decrease: false };
                run_once(shape, &usage, &mut stripe, rules);
                let held: i64 = stripe.iter().sum();
                let measured: i64 = usage.iter().sum();
                proptest::prop_assert!(held <= measured, "{held} billed for {measured} after {shape:?}");
            }
            let mut usage = [0i64; 24];
            for source in &sources {
                for h in 0..24 {
                    usage[h] += source[h];
                }
            }
            let rules = Rules { correct: true, allow_decrease: false };
            run_once(&Shape::Day, &usage, &mut stripe, rules);
            proptest::prop_assert_eq!(stripe.iter().sum::<i64>(), usage.iter().sum::<i64>());
        }

        /// A source moved from one Stripe customer to another (`--move-
        /// customers`, at the end of what the old customer was billed), with
        /// runs of any shape after the move: each customer's ledger counts the
        /// source on its side of the move only, so together they bill it once,
        /// and each ends holding exactly its part.
        #[test]
        fn a_source_moved_between_customers_is_billed_once_in_all(
            moving in proptest::array::uniform24(0i64..4),
            staying in proptest::array::uniform24(0i64..4),
            at in 0i64..=24,
            after in proptest::collection::vec(shape(), 1..5),
        ) {
            let plain = Rules { correct: false, allow_decrease: false };
            let at_hour = at as usize;
            // Ledger A: `staying`, and `moving` before the move; B: `moving` from it.
            let mut a_usage = staying;
            let mut b_usage = [0i64; 24];
            for h in 0..24 {
                match h < at_hour {
                    true => a_usage[h] += moving[h],
                    false => b_usage[h] = moving[h],
                }
            }
            let (mut a, mut b) = ([0i64; 24], [0i64; 24]);
            // Before the move, A was synced up to it with everything it had.
            let mut before = staying;
            for h in 0..24 {
                before[h] += moving[h];
            }
            if at > 0 {
                run_once(&Shape::Hours(0, at), &before, &mut a, plain);
            }
            for shape in &after {
                run_once(shape, &a_usage, &mut a, plain);
                run_once(shape, &b_usage, &mut b, plain);
                let billed: i64 = a.iter().chain(&b).sum();
                let measured: i64 = staying.iter().chain(&moving).sum();
                proptest::prop_assert!(billed <= measured, "{billed} billed for {measured}");
            }
            run_once(&Shape::Day, &a_usage, &mut a, plain);
            run_once(&Shape::Day, &b_usage, &mut b, plain);
            proptest::prop_assert_eq!(a.iter().sum::<i64>(), a_usage.iter().sum::<i64>());
            proptest::prop_assert_eq!(b.iter().sum::<i64>(), b_usage.iter().sum::<i64>());
        }
    }
}
