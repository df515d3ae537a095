//! What earlier runs carried out of closed periods (`--late-usage carry`,
//! see [`crate::carry`]), read from Stripe's summaries of the carry minutes:
//! so a rerun at any age carries nothing twice, and the days that hold carry
//! minutes are compared without them.

use crate::prelude::*;

use super::day::Held;
use super::read_buckets;
use crate::billing::Periods;
use crate::carry;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Meter, Step, StripeRead, WorkflowError,
};
use crate::inputs::{Plan, Window};
use crate::retry;
use crate::time::DAY;

/// The carry ranges that hold anything, per period start.
#[derive(Debug, Default)]
pub(super) struct Carried {
    into: Vec<(i64, [Decimal; 2])>,
}

/// How the reads reach Stripe.
pub(super) struct Reader<'a> {
    pub endpoints: &'a Endpoints,
    pub plan: &'a Plan,
    pub meter: &'a Meter,
    pub retry: &'a retry::Policy,
}

impl Reader<'_> {
    /// Stripe's total over `range` (minute-aligned), one summary.
    fn total(&self, range: Window, reads: &mut Vec<StripeRead>) -> Result<Decimal, WorkflowError> {
        let buckets = read_buckets(
            self.endpoints,
            self.plan,
            self.meter,
            range,
            None,
            self.retry,
            None,
            reads,
        )?;
        buckets
            .into_iter()
            .try_fold(Decimal::ZERO, |sum, (_, _, v)| {
                sum.checked_add(v)
                    .ok_or_else(|| "a total is too large".into())
            })
            .map_err(|m: String| {
                super::step_failed(Step::ReadSummaries, range, Some(200), m, None, 1)
            })
    }
}

impl Carried {
    /// Reads the carry ranges of every known period whose ranges begin in
    /// `reach` (or after it too, when `later`: where a closed day of the run
    /// may have been carried) and by `now`: one summary over both ranges,
    /// and only when it holds anything, one per range.
    pub fn read(
        reader: &Reader,
        periods: &Periods,
        reach: Window,
        later: bool,
        now: i64,
        reads: &mut Vec<StripeRead>,
    ) -> Result<Carried, WorkflowError> {
        let starts = periods.periods.iter().map(|p| p.start).filter(|&start| {
            let span = carry::span(start);
            span.start >= reach.start && (span.start < reach.end || later)
        });
        Carried::read_starts(reader, starts, now, reads)
    }

    /// Reads the carry ranges of the periods starting at `starts` that have
    /// begun by `now`.
    pub fn read_starts(
        reader: &Reader,
        starts: impl IntoIterator<Item = i64>,
        now: i64,
        reads: &mut Vec<StripeRead>,
    ) -> Result<Carried, WorkflowError> {
        let mut starts: Vec<i64> = starts.into_iter().collect();
        starts.sort_unstable();
        starts.dedup();
        let mut into = Vec::new();
        for start in starts {
            let span = carry::span(start);
            let end = span.end.min(now.div_euclid(60) * 60);
            if end <= span.start {
                continue;
            }
            let span = Window {
                start: span.start,
                end,
            };
            if reader.total(span, reads)?.is_zero() {
                continue;
            }
            let mut held = [Decimal::ZERO; 2];
            for (h, range) in carry::ranges(start).into_iter().enumerate() {
                let range = Window {
                    start: range.start,
                    end: range.end.min(end),
                };
                if range.start < range.end {
                    held[h] = reader.total(range, reads)?;
                }
            }
            into.push((start, held));
        }
        Ok(Carried { into })
    }

    /// What was carried out of `span` (a billing period, or a UTC day cut
    /// at `renewals`): out of each origin a run carries from, the span's
    /// start (from its hour), each midnight inside it, and each renewal
    /// inside it (from its hour).
    pub fn out_of_span(
        &self,
        reader: &Reader,
        span: Window,
        renewals: &[i64],
        reads: &mut Vec<StripeRead>,
    ) -> Result<Decimal, WorkflowError> {
        let hour = |t: i64| t.div_euclid(3600) * 3600;
        let (first, last) = (hour(span.start), hour(span.end));
        let midnights = (first.div_euclid(DAY) + 1..)
            .map(|d| d * DAY)
            .take_while(|&t| t < last);
        let renewals = renewals
            .iter()
            .map(|&b| hour(b))
            .filter(|&t| first < t && t < last);
        let mut origins: Vec<i64> = core::iter::once(first)
            .filter(|&t| t < last)
            .chain(midnights)
            .chain(renewals)
            .collect();
        origins.sort_unstable();
        origins.dedup();
        let mut sum = Decimal::ZERO;
        for origin in origins {
            let v = self.out_of(reader, origin, reads)?;
            sum = sum.checked_add(v).unwrap_or(sum);
        }
        Ok(sum)
    }

    /// What was carried into the period starting at `start`.
    pub fn carried_into(&self, start: i64) -> Decimal {
        self.into
            .iter()
            .filter(|(s, _)| *s == start)
            .flat_map(|(_, v)| v)
            .fold(Decimal::ZERO, |sum, v| sum.checked_add(*v).unwrap_or(sum))
    }

    /// What was carried into `day` (the carry ranges that start in it).
    pub fn carried_into_day(&self, day: Window) -> Decimal {
        let mut sum = Decimal::ZERO;
        for (start, values) in &self.into {
            for (range, value) in carry::ranges(*start).into_iter().zip(values) {
                if day.start <= range.start && range.start < day.end {
                    sum = sum.checked_add(*value).unwrap_or(sum);
                }
            }
        }
        sum
    }

    /// Takes the carries out of the days that hold them: what remains is the
    /// ledger's own.
    pub fn subtract(&self, days: &[Window], held: &mut [Held]) {
        for (start, values) in &self.into {
            for (range, value) in carry::ranges(*start).into_iter().zip(values) {
                let Some(at) = days
                    .iter()
                    .position(|d| d.start <= range.start && range.start < d.end)
                else {
                    continue;
                };
                if let Some(minus) = Decimal::ZERO.checked_sub(*value) {
                    held[at].add_at(range.start, minus);
                }
            }
        }
    }

    /// What was carried out of the origin starting at `origin` into any
    /// period so far: each carry range that holds anything, read at the
    /// origin's minute.
    pub fn out_of(
        &self,
        reader: &Reader,
        origin: i64,
        reads: &mut Vec<StripeRead>,
    ) -> Result<Decimal, WorkflowError> {
        let half = usize::from(origin.rem_euclid(DAY) != 0);
        let mut sum = Decimal::ZERO;
        for (start, values) in &self.into {
            let Some(slot) = carry::slot(*start, origin) else {
                continue;
            };
            if values[half].is_zero() {
                continue;
            }
            let v = reader.total(slot, reads)?;
            sum = sum.checked_add(v).ok_or_else(|| {
                super::step_failed(
                    Step::ReadSummaries,
                    slot,
                    Some(200),
                    "a total is too large".into(),
                    None,
                    1,
                )
            })?;
        }
        Ok(sum)
    }
}
