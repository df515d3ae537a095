//! Stripe is the ledger, and its unit is what Stripe bills: one Stripe
//! customer and meter over time. This is the one place that decides what is
//! written: it reads what Stripe holds for every UTC day the window touches,
//! sums what every source mapped to the ledger measured, and writes only the
//! difference (`day` decides; this module reads, measures and writes).

use crate::prelude::*;

mod carried;
mod day;
mod late;
mod periods;

pub(in crate::workflow) use periods::read_invoice_lines;

use super::calls::{Ahead, Page, Paging, join, read_pages, read_record, record};
use super::failure::{step_failed, summaries_too_large};
use super::values::{scaled, values};
use crate::ambient::{idempotency_key, now};
use crate::billing::{Billed, Periods};
use crate::by_time::ByTime;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Interval, LedgerMark, Listing, Meter, MeterEvent, Options, Outputs, PlannedRequest,
    Step, StripeRead, Unbilled, Verification, WorkflowError,
};
use crate::inputs::{self, Plan, Window};
use crate::time::{self, DAY};
use crate::{amberflo, quantity, retry, stripe};
use day::{Day, Held, Measured, Piece, Rules};
use late::{Carry, Late};
use usage_sync_report::json;

/// An unbilled piece's status when a renewal falls inside a day measured by
/// day: rerun that day in a window of up to four days, measured by hour.
const RENEWAL_INSIDE_DAY: &str = "renewal-inside-day";

/// How long a write of ours counts as held although Stripe's summary does not
/// show it: Stripe processes meter events asynchronously ("minutes", by third
/// parties' reports; no figure is published), so an hour with a wide margin.
const PROCESSING_MARGIN: i64 = 3600;

/// One source of the ledger: an Amberflo customer and meter, its usage, and
/// the part of time it is billed to this ledger (a moved source's bounds).
pub(in crate::workflow) struct Source {
    /// `customer/meter`, for the outputs.
    pub name: String,
    /// Its checked answer from Amberflo.
    pub usage: amberflo::Usage,
    /// Usage before this instant is billed elsewhere.
    pub from: Option<i64>,
    /// Usage from this instant on is billed elsewhere.
    pub until: Option<i64>,
}

/// Step 2 for one ledger: reads what Stripe holds for each UTC day of the
/// window, then writes what the sources measured beyond it, in order,
/// stopping at the first failed write. Drift is reported, never written
/// unless a true-up asks.
#[allow(clippy::too_many_arguments)]
pub(in crate::workflow) fn record_all(
    endpoints: &Endpoints,
    options: &Options,
    plan: &Plan,
    retry: &retry::Policy,
    sources: Vec<Source>,
    meter: &Meter,
    recent: &[LedgerMark],
    listed: Option<&Listing>,
    mut reads: Vec<StripeRead>,
) -> Result<Outputs, WorkflowError> {
    let invalid = WorkflowError::InvalidInput;
    if options.carry_late_usage && meter.pre_aggregated.is_some() {
        return Err(invalid(format!(
            "--late-usage carry records usage of a closed period as another event in the open one, and the Stripe meter {} keeps one event per bucket (pre-aggregated): the carried event would replace that bucket's own; carry needs a raw sum meter",
            meter.id
        )));
    }
    let now = now();
    let grid = inputs::grid(options.interval, plan.window);
    let scale = inputs::scale(options).map_err(invalid)?;
    let buckets = summed(&sources, grid).map_err(invalid)?;
    let unscaled = total(&buckets, plan.window)
        .ok_or_else(|| invalid("Amberflo's total is too large".into()))?;
    let measured_total = unscaled
        .checked_mul(scale)
        .ok_or_else(|| invalid("the window's total is too large".into()))?;
    if plan.usage_quantity.is_some() {
        // A given quantity is checked as before (`--reconcile`).
        values(plan, options, scale, &[unscaled]).map_err(invalid)?;
    }
    // What Stripe holds is read beside what bills it: the summaries' read does
    // not depend on the periods unless a renewal can cut a day measured by day.
    let uncut = plan.window.from_day_start().split(Some(DAY));
    let ahead = match meter.pre_aggregated.is_some() || grid != DAY {
        true => held_range(plan, meter, &uncut, grid).map(|(range, grouping)| {
            let base = endpoints.stripe_url.trim_end_matches('/');
            let customer = &plan.stripe_customer;
            let url = stripe::summaries_url(base, meter, customer, range, Some(grouping.0), None);
            Ahead::send(url, retry)
        }),
        false => None,
    };
    // What bills the ledger: periods cut the window, closed ones take nothing.
    let periods = periods::read_periods(endpoints, plan, meter, retry, now, listed, &mut reads)?;
    let (cuts, blurred) = cuts_of(plan, meter, &periods, grid).map_err(invalid)?;
    let intervals = cut(&plan.intervals, &cuts);
    // The ledger's unit: a UTC day, or its part in one billing period.
    let days: Vec<Window> = cut(&uncut, &cuts);
    let mut measured = Vec::with_capacity(days.len());
    for day in &days {
        measured.push(
            cumulative(plan, &intervals, options, scale, &buckets, *day, grid).map_err(invalid)?,
        );
    }
    let mut held = read_held(
        endpoints, plan, meter, &days, grid, retry, ahead, &mut reads,
    )?;
    // Carried usage sits in its own minutes: the ledger's days without it.
    let reader = carried::Reader {
        endpoints,
        plan,
        meter,
        retry,
    };
    let closed_days = days
        .iter()
        .any(|d| matches!(periods.billed_at(d.end - 1), Billed::Nowhere(_)));
    let reach = Window {
        start: days.first().map_or(plan.window.start, |d| d.start),
        end: plan.window.end,
    };
    let carried = carried::Carried::read(&reader, &periods, reach, closed_days, now, &mut reads)?;
    carried.subtract(&days, &mut held);
    let settled = |end: i64| now - end >= i64::from(options.settle_hours) * 3600;
    let mut pieces = Vec::new();
    for ((day, measured), mut held) in days.iter().zip(&measured).zip(held) {
        // Where Stripe's summary reaches before this tool's recent writes.
        let shown = held.reach(day.start);
        apply_marks(&mut held, recent, &meter.id, *day, now);
        let intervals: Vec<Window> = intervals
            .iter()
            .filter(|i| i.start >= day.start && i.end <= day.end)
            .copied()
            .collect();
        let rules = |end| Rules {
            correct: options.true_up && settled(end),
            allow_decrease: options.allow_decrease,
        };
        let decided = match meter.pre_aggregated {
            Some(_) => intervals
                .iter()
                .map(|i| {
                    let before = held.before(i.start).unwrap_or(Decimal::ZERO);
                    let held = held.before(i.end).unwrap_or(Decimal::ZERO);
                    let held = held.checked_sub(before).unwrap_or(held);
                    let value = difference(measured, i.start, i.end)?;
                    day::decide_bucket(*i, held, value, rules(i.end))
                })
                .collect::<Result<Vec<_>, String>>(),
            None => {
                let end = intervals.last().map_or(day.end, |i| i.end);
                day::decide(
                    &Day {
                        day: *day,
                        intervals: &intervals,
                        measured,
                        held: &held,
                    },
                    rules(end),
                )
            }
        }
        .map_err(|m| step_failed(Step::ReadSummaries, *day, Some(200), m, None, 1))?;
        let day_total = held.total().unwrap_or(Decimal::ZERO);
        pieces.extend(decided.into_iter().map(|p| (*day, p, shown, day_total)));
    }
    let billed = days
        .iter()
        .zip(&measured)
        .filter_map(|(day, m)| {
            let inside = Window {
                start: plan.window.start.max(day.start),
                end: plan.window.end.min(day.end),
            };
            difference(m, inside.start, inside.end).ok()
        })
        .try_fold(Decimal::ZERO, |sum, v| sum.checked_add(v))
        .ok_or_else(|| invalid("the window's total is too large".into()))?;
    let measured_total = match &plan.usage_quantity {
        // A given quantity is what is meant to be billed.
        Some(_) => billed,
        None => measured_total,
    };
    let mut outputs = Outputs {
        usage_result: usage_result(&sources),
        event_name: plan.stripe_event_name.clone(),
        window_start: plan.window.start,
        window_end: plan.window.end,
        measured_total: measured_total.to_string(),
        billed_total: billed.to_string(),
        meter: meter.clone(),
        events: Vec::new(),
        planned: Vec::new(),
        reads,
        sources: sources.iter().map(|s| s.name.clone()).collect(),
        marks: Vec::new(),
        unbilled: Vec::new(),
        period_ends: periods
            .periods
            .iter()
            .filter(|p| p.invoice.is_none())
            .map(|p| p.end)
            .collect(),
        dry_run: options.dry_run,
    };
    let url = join(&endpoints.stripe_url, stripe::PATH);
    // What each day holds after this run's writes, for the marks.
    let mut written: ByTime<(i64, Decimal)> = ByTime::new();
    // What closed periods' days measured beyond what Stripe holds there.
    let mut late: ByTime<Late> = ByTime::new();
    for (day, piece, shown, day_total) in pieces {
        // Never stamped where no invoice bills it: reported instead (exit 5).
        if let Piece::Write { window, value, .. } = &piece {
            if let Some(&renewal) = blurred
                .iter()
                .find(|&&b| window.start < b && b < window.end)
            {
                let before = crate::billing::Period {
                    start: window.start,
                    end: renewal,
                    invoice: None,
                    status: RENEWAL_INSIDE_DAY.into(),
                    closed: true,
                };
                let piece = unbilled(*window, *value, Some(before), false);
                outputs.unbilled.push(piece);
                continue;
            }
            match periods.billed_at(window.end - 1) {
                Billed::Open => {}
                Billed::NotYet => outputs.unbilled.push(unbilled(*window, *value, None, true)),
                Billed::Nowhere(period) => {
                    let origin = late.entry(day.start, || Late {
                        day,
                        period,
                        pieces: Vec::new(),
                    });
                    origin.pieces.push((*window, *value));
                    continue;
                }
            }
        }
        let (mut event, sent) = event_of(plan, &buckets, piece);
        if matches!(event.verified_by, Some(Verification::Summary)) && event.window_end > shown {
            event.verified_by = Some(Verification::RecentWrite);
        }
        if !sent {
            outputs.events.push(event);
            continue;
        }
        let window = Window {
            start: event.window_start,
            end: event.window_end,
        };
        let value = Decimal::parse(&event.usage_quantity).unwrap_or(Decimal::ZERO);
        if send(&url, plan, meter, options, retry, event, &mut outputs)? {
            let entry = written.entry(day.start, || (window.end, day_total));
            entry.0 = entry.0.max(window.end);
            entry.1 = entry.1.checked_add(value).unwrap_or(entry.1);
        }
    }
    // Usage of closed periods: carried into the open one, or reported.
    let open = periods
        .periods
        .iter()
        .filter(|p| !p.closed && p.start <= now && now < p.end)
        .max_by_key(|p| p.start);
    for late in late.into_values() {
        let carry = Carry {
            settled: settled(late.day.end),
            late,
            open: open.filter(|_| options.carry_late_usage),
        };
        carry.apply(
            &reader,
            &carried,
            &url,
            plan,
            &buckets,
            options,
            retry,
            now,
            &mut outputs,
        )?;
    }
    outputs.marks = written
        .into_iter()
        .map(|(day_start, (through, total))| LedgerMark {
            meter_id: meter.id.clone(),
            day_start,
            through,
            total: total.to_string(),
            at: now,
        })
        .collect();
    Ok(outputs)
}

/// Sends `event` (a dry run plans it): `Ok(true)` once recorded. A failure
/// carries the events recorded before it.
fn send(
    url: &str,
    plan: &Plan,
    meter: &Meter,
    options: &Options,
    retry: &retry::Policy,
    event: MeterEvent,
    outputs: &mut Outputs,
) -> Result<bool, WorkflowError> {
    let window = Window {
        start: event.window_start,
        end: event.window_end,
    };
    let body = stripe::request_body(
        plan,
        meter,
        event.timestamp,
        &event.usage_quantity,
        &event.meter_event_id,
    );
    if options.dry_run {
        outputs.planned.push(PlannedRequest {
            method: "POST".into(),
            url: url.into(),
            headers: stripe::event_headers(&idempotency_key(), None)
                .iter()
                .chain(&[("Content-Length", body.len().to_string().as_str())])
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
        });
        return Ok(false);
    }
    match record(url, event, &body, &window, retry) {
        Ok(event) => {
            outputs.events.push(event);
            Ok(true)
        }
        Err(mut failure) => {
            failure.recorded = core::mem::take(&mut outputs.events);
            Err(WorkflowError::StepFailed(failure))
        }
    }
}

/// The event a piece stands for, and whether it is written.
fn event_of(plan: &Plan, buckets: &ByTime<Decimal>, piece: Piece) -> (MeterEvent, bool) {
    let window = match &piece {
        Piece::Held { window, .. } | Piece::Write { window, .. } | Piece::Drift { window, .. } => {
            *window
        }
    };
    let amberflo_total = total(buckets, window).map(|t| t.to_string());
    let mut event = MeterEvent {
        meter_event_id: stripe::identifier(plan, &window),
        event_name: plan.stripe_event_name.clone(),
        usage_quantity: String::new(),
        amberflo_total,
        window_start: window.start,
        window_end: window.end,
        timestamp: window.timestamp(),
        already_recorded: false,
        verified_by: None,
        stripe_value: None,
        drift: false,
        corrected_to: None,
        carried_into: None,
        attempts: 0,
    };
    let written = match piece {
        Piece::Held { value, .. } => {
            event.usage_quantity = value.to_string();
            event.stripe_value = Some(value.to_string());
            event.already_recorded = true;
            event.verified_by = Some(Verification::Summary);
            false
        }
        Piece::Drift { held, measured, .. } => {
            event.usage_quantity = measured.to_string();
            event.stripe_value = Some(held.to_string());
            event.drift = true;
            false
        }
        Piece::Write {
            value,
            correction: None,
            ..
        } => {
            // A write goes only where Stripe's summaries hold nothing.
            event.usage_quantity = value.to_string();
            event.stripe_value = Some(Decimal::ZERO.to_string());
            true
        }
        Piece::Write {
            value,
            correction: Some(correction),
            ..
        } => {
            let target = correction.to.to_string();
            event.meter_event_id = stripe::correction_identifier(plan, &window, &target);
            event.stripe_value = Some(correction.from.to_string());
            event.corrected_to = Some(target);
            event.usage_quantity = value.to_string();
            true
        }
    };
    (event, written)
}

/// Where the window's intervals are cut so every piece is stamped inside its
/// own billing period: each period boundary inside the window, moved back to
/// Amberflo's grid. The hour (or, in a long window measured by day, the day)
/// that holds a renewal goes to the new period: its usage is billed at most
/// that much later, on an invoice still open, never earlier on one that may
/// already be final.
///
/// Also the renewals a day measured by day (a long window) holds: such a day
/// cannot be cut, so nothing of it is written, lest the part before the
/// renewal be stamped in the new period.
fn cuts_of(
    plan: &Plan,
    meter: &Meter,
    periods: &Periods,
    grid: i64,
) -> Result<(Vec<i64>, Vec<i64>), String> {
    let boundaries = periods.boundaries(plan.window);
    if meter.pre_aggregated == Some(Interval::Day)
        && let Some(inside) = boundaries.iter().find(|b| b.rem_euclid(DAY) != 0)
    {
        return Err(format!(
            "the Stripe meter {} keeps one event per UTC day (pre-aggregated by day), and {}'s billing period renews at {}, inside a UTC day: one event cannot be billed on two invoices; bill this meter's usage with a raw sum meter, or one pre-aggregated by hour with --interval hour",
            meter.id,
            plan.stripe_customer,
            time::format(*inside)
        ));
    }
    let mut cuts: Vec<i64> = boundaries
        .iter()
        .map(|b| b.div_euclid(grid) * grid)
        .filter(|&c| plan.window.start < c && c < plan.window.end && c.rem_euclid(DAY) != 0)
        .collect();
    cuts.dedup();
    if !cuts.is_empty() && plan.usage_quantity.is_some() {
        return Err(format!(
            "`usageQuantity` is one value, but {}'s billing period renews inside the window at {}: leave it out, or end the window there",
            plan.stripe_customer,
            time::format(cuts[0])
        ));
    }
    let blurred = match grid == DAY {
        true => boundaries
            .into_iter()
            .filter(|b| b.rem_euclid(DAY) != 0)
            .collect(),
        false => Vec::new(),
    };
    Ok((cuts, blurred))
}

/// A piece no invoice bills now: in `period` (not written), or with no
/// subscription item on the meter (`None`: written all the same).
fn unbilled(
    window: Window,
    value: Decimal,
    period: Option<crate::billing::Period>,
    written: bool,
) -> Unbilled {
    match period {
        Some(p) => Unbilled {
            window_start: window.start,
            window_end: window.end,
            quantity: value.to_string(),
            period_start: p.start,
            period_end: (p.end != i64::MAX).then_some(p.end),
            invoice: p.invoice,
            status: p.status,
            written,
        },
        None => Unbilled {
            window_start: window.start,
            window_end: window.end,
            quantity: value.to_string(),
            period_start: window.start,
            period_end: Some(window.end),
            invoice: None,
            status: "no-subscription".into(),
            written,
        },
    }
}

/// `windows`, each cut where a cut falls strictly inside it.
fn cut(windows: &[Window], cuts: &[i64]) -> Vec<Window> {
    let mut out = Vec::with_capacity(windows.len() + cuts.len());
    for w in windows {
        let mut start = w.start;
        for &c in cuts.iter().filter(|&&c| w.start < c && c < w.end) {
            out.push(Window { start, end: c });
            start = c;
        }
        out.push(Window { start, end: w.end });
    }
    out
}

/// Every source's buckets summed, each source only where it bills this ledger.
fn summed(sources: &[Source], grid: i64) -> Result<ByTime<Decimal>, String> {
    let mut buckets: ByTime<Decimal> = ByTime::new();
    for source in sources {
        for bound in [source.from, source.until].into_iter().flatten() {
            if bound.rem_euclid(grid) != 0 {
                return Err(format!(
                    "{} moved between Stripe customers at {}, inside one of this run's {} buckets: run that day with --interval hour",
                    source.name,
                    time::format(bound),
                    if grid == DAY { "day" } else { "hour" }
                ));
            }
        }
        for &(t, value) in &source.usage.points {
            let billed_here =
                source.from.is_none_or(|f| t >= f) && source.until.is_none_or(|u| t < u);
            if billed_here {
                let sum = buckets.entry(t, || Decimal::ZERO);
                *sum = sum
                    .checked_add(value)
                    .ok_or("the sources' values add up to more than usage-sync can hold")?;
            }
        }
    }
    Ok(buckets)
}

/// The whole totals billed from `day`'s start to each point of the grid:
/// scaled and rounded as a whole, so no cut of the day changes its total. A
/// given quantity is what the run's one interval bills.
fn cumulative(
    plan: &Plan,
    intervals: &[Window],
    options: &Options,
    scale: Decimal,
    buckets: &ByTime<Decimal>,
    day: Window,
    grid: i64,
) -> Result<Measured, String> {
    let mut points = ByTime::new();
    let mut sum = Decimal::ZERO;
    let mut t = day.start;
    // Where the run cuts the day, the running total must be whole; elsewhere a
    // fraction only means a piece cannot end there.
    let cut = |t: i64| intervals.iter().any(|i| i.start == t || i.end == t);
    while t <= day.end {
        match quantity::from_total(scaled(sum, scale)?, options.rounding) {
            Ok(whole) => {
                let whole = Decimal::parse(&whole).map_err(|why| format!("a total {why}"))?;
                points.insert(t, whole);
            }
            Err(why) if cut(t) => {
                return Err(format!(
                    "{why} (interval {} to {})",
                    time::format(day.start),
                    time::format(t)
                ));
            }
            Err(_) => {}
        }
        if let Some(v) = buckets.get(t) {
            sum = sum.checked_add(*v).ok_or("the day's total is too large")?;
        }
        t += grid;
    }
    if let (Some(given), Some(interval)) = (&plan.usage_quantity, plan.intervals.first())
        && interval.start >= day.start
        && interval.end <= day.end
    {
        let given = Decimal::parse(given)?;
        let before = points
            .get(interval.start)
            .copied()
            .ok_or("the interval does not start on the grid")?;
        points.retain(|t, _| t <= interval.start);
        points.insert(
            interval.end,
            before
                .checked_add(given)
                .ok_or("the quantity is too large")?,
        );
    }
    Ok(Measured { points })
}

/// Amberflo's total over `window`, before the scale (`None`: too large).
fn total(buckets: &ByTime<Decimal>, window: Window) -> Option<Decimal> {
    buckets
        .range(window.start, window.end)
        .iter()
        .try_fold(Decimal::ZERO, |sum, (_, v)| sum.checked_add(*v))
}

/// What the measured totals say for `[start, end)`.
fn difference(measured: &Measured, start: i64, end: i64) -> Result<Decimal, String> {
    let at = |t| {
        measured
            .at(t)
            .ok_or_else(|| format!("no measured total at {}", time::format(t)))
    };
    at(end)?
        .checked_sub(at(start)?)
        .ok_or_else(|| "a total is too large".into())
}

/// `clientMeters` of the sources: verbatim for one, their groups in one array
/// for several.
fn usage_result(sources: &[Source]) -> String {
    if let [one] = sources {
        return one.usage.client_meters.clone();
    }
    // Each was read and checked as an array of groups: its items' text is
    // copied as it came.
    let docs: Vec<_> = sources
        .iter()
        .filter_map(|s| json::parse(s.usage.client_meters.as_bytes()).ok())
        .collect();
    let groups = docs
        .iter()
        .flat_map(|doc| doc.array().unwrap_or_default().iter().map(json::Json::raw));
    format!("[{}]", crate::text::join(groups, ","))
}

/// Counts our own recent write to `day` as held where Stripe's summary does
/// not show it yet (it lags behind, see [`PROCESSING_MARGIN`]).
fn apply_marks(held: &mut Held, recent: &[LedgerMark], meter_id: &str, day: Window, now: i64) {
    let latest = recent
        .iter()
        .filter(|m| m.meter_id == meter_id && m.day_start == day.start)
        .filter(|m| now - m.at <= PROCESSING_MARGIN)
        .max_by_key(|m| (m.at, m.through));
    let Some(mark) = latest else { return };
    let (Ok(total), Some(shown)) = (Decimal::parse(&mark.total), held.total()) else {
        return;
    };
    if let Some(missing) = total
        .checked_sub(shown)
        .filter(|m| !m.is_negative() && !m.is_zero())
    {
        held.add_at(mark.through - 1, missing);
    }
}

/// What Stripe holds for each day, from one paginated summaries read over
/// them all: by hour (so a day's reach is known to the hour), by day where
/// the run and the meter are whole days.
#[allow(clippy::too_many_arguments)]
fn read_held(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    days: &[Window],
    grid: i64,
    retry: &retry::Policy,
    ahead: Option<Ahead>,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<Held>, WorkflowError> {
    let Some((range, grouping)) = held_range(plan, meter, days, grid) else {
        return Ok(Vec::new());
    };
    let buckets = read_buckets(
        endpoints,
        plan,
        meter,
        range,
        Some(grouping),
        retry,
        ahead,
        reads,
    )?;
    let mut held: Vec<Held> = days.iter().map(|_| Held::default()).collect();
    for (start, end, value) in buckets {
        if let Some(at) = days.iter().position(|d| d.start <= start && end <= d.end) {
            held[at].buckets.push((start, end, value));
        }
    }
    for h in &mut held {
        crate::order::sort_by_times(&mut h.buckets, |b| (b.0, 0));
    }
    Ok(held)
}

/// What [`read_held`] reads for `days`: the range and its buckets.
fn held_range(
    plan: &Plan,
    meter: &Meter,
    days: &[Window],
    grid: i64,
) -> Option<(Window, (&'static str, i64))> {
    let (first, last) = (days.first()?, days.last()?);
    // By hour, so a day's reach is known to the hour, unless that takes more
    // than one page (100 buckets): a window measured by day (longer than
    // `inputs::HOURLY_DAYS`) reads by day where its days are whole.
    let by_day = match meter.pre_aggregated {
        Some(window) => window == Interval::Day,
        None => grid == DAY && days.iter().all(|d| d.start % DAY == 0 && d.end % DAY == 0),
    };
    let end = if by_day {
        last.end
    } else {
        // Other writers (and a run by hour) may reach up to now.
        last.end
            .min((now() + 3599).div_euclid(3600) * 3600)
            .max(plan.window.end)
    };
    let range = Window {
        start: first.start,
        end,
    };
    let grouping = if by_day { ("day", DAY) } else { ("hour", 3600) };
    Some((range, grouping))
}

/// Every summary Stripe lists for `range` in buckets of `grouping`, each
/// checked to be one of them: `(start, end, aggregated value)`.
#[allow(clippy::too_many_arguments)]
fn read_buckets(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    range: Window,
    grouping: Option<(&str, i64)>,
    retry: &retry::Policy,
    ahead: Option<Ahead>,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<(i64, i64, Decimal)>, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let mut found = Vec::new();
    read_pages(
        Step::ReadSummaries,
        range,
        retry,
        ahead,
        |after| {
            stripe::summaries_url(
                base,
                meter,
                &plan.stripe_customer,
                range,
                grouping.map(|g| g.0),
                after,
            )
        },
        |url, reply, bad_answer| {
            let list = stripe::parse_summaries(&reply.body).map_err(bad_answer)?;
            let mut answer = Vec::new();
            for summary in &list.data {
                let on_grid = match grouping {
                    Some((_, grid)) => {
                        summary.start_time.rem_euclid(grid) == 0
                            && summary.end_time == summary.start_time + grid
                            && range.start <= summary.start_time
                            && summary.end_time <= range.end
                    }
                    // Without a grouping window, one summary covers the range.
                    None => summary.start_time == range.start && summary.end_time == range.end,
                };
                if !on_grid {
                    return Err(bad_answer(format!(
                        "Stripe's summary {} covers {} to {}, which is not an interval asked for",
                        summary.id,
                        time::format(summary.start_time),
                        time::format(summary.end_time)
                    )));
                }
                found.push((
                    summary.start_time,
                    summary.end_time,
                    summary.aggregated_value,
                ));
                if !summary.aggregated_value.is_zero() {
                    answer.push(format!(
                        "{}: {}",
                        time::format(summary.start_time),
                        summary.aggregated_value
                    ));
                }
            }
            let answer = if answer.is_empty() {
                "nothing held".to_string()
            } else {
                answer.join(", ")
            };
            reads.push(read_record(url, answer));
            Ok(match list.has_more {
                false => Page::Done(()),
                true => Page::After(list.data.last().map(|s| s.id.clone())),
            })
        },
    )
    .map_err(|e| match e {
        Paging::Failed(e) => e,
        Paging::TooMany => step_failed(
            Step::ReadSummaries,
            range,
            None,
            format!("more than {} pages of summaries", stripe::MAX_PAGES),
            None,
            0,
        ),
    })?;
    Ok(found)
}

/// What was carried into and out of each of `periods` (`[start, end)`, all
/// ended), given every period start known (`starts`): `(into, out of)`.
pub(in crate::workflow) fn carried_through(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    periods: &[Window],
    starts: &[i64],
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<(Decimal, Decimal)>, WorkflowError> {
    let reader = carried::Reader {
        endpoints,
        plan,
        meter,
        retry,
    };
    let carried = carried::Carried::read_starts(&reader, starts.iter().copied(), now(), reads)?;
    let mut out = Vec::with_capacity(periods.len());
    for period in periods {
        let into = carried.carried_into(period.start);
        out.push((into, carried.out_of_span(&reader, *period, &[], reads)?));
    }
    Ok(out)
}

/// A UTC day's start, and what was carried into it and out of it.
pub(in crate::workflow) type CarriedDay = (i64, (Decimal, Decimal));

/// What was carried into and out of each UTC day of `days` (reconcile with
/// `--late-usage carry`): `(day start, (into, out of))` in the order of `days`. Reads the customer's
/// periods, then the carry minutes as a run does.
pub(in crate::workflow) fn carried_by_day(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    days: &[Window],
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<CarriedDay>, WorkflowError> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(Vec::new());
    };
    let now = now();
    let periods = periods::read_periods(endpoints, plan, meter, retry, now, None, reads)?;
    let reader = carried::Reader {
        endpoints,
        plan,
        meter,
        retry,
    };
    let reach = Window {
        start: first.start,
        end: last.end,
    };
    let carried = carried::Carried::read(&reader, &periods, reach, true, now, reads)?;
    let mut out = Vec::with_capacity(days.len());
    for day in days {
        let into = carried.carried_into_day(*day);
        let out_of = carried.out_of_span(&reader, *day, &periods.boundaries(*day), reads)?;
        out.push((day.start, (into, out_of)));
    }
    Ok(out)
}

/// Reconcile's read: what Stripe holds for each interval (keyed by its
/// start: its end and the value), one paginated call. An interval Stripe
/// lists no summary for holds nothing.
pub(in crate::workflow) fn read_summaries(
    endpoints: &Endpoints,
    interval: Interval,
    plan: &Plan,
    meter: &Meter,
    intervals: &[Window],
    retry: &retry::Policy,
    reads: &mut Vec<StripeRead>,
) -> Result<ByTime<(i64, Decimal)>, WorkflowError> {
    let (Some(first), Some(last)) = (intervals.first(), intervals.last()) else {
        return Ok(ByTime::new());
    };
    let range = Window {
        start: first.start,
        end: last.end,
    };
    let mut held: ByTime<(i64, Decimal)> = intervals
        .iter()
        .map(|p| (p.start, (p.end, Decimal::ZERO)))
        .collect();
    let grouping = match interval {
        Interval::Day => ("day", DAY),
        Interval::Hour | Interval::Window => ("hour", 3600),
    };
    let mut buckets = read_buckets(
        endpoints,
        plan,
        meter,
        range,
        Some(grouping),
        retry,
        None,
        reads,
    )?;
    if interval == Interval::Window {
        // One interval, the whole window: hours summed.
        let sum =
            Decimal::sum(buckets.iter().map(|b| &b.2)).ok_or_else(|| summaries_too_large(range))?;
        buckets = vec![(range.start, range.end, sum)];
    }
    for (start, end, value) in buckets {
        if let Some((e, v)) = held.get_mut(start)
            && *e == end
        {
            *v = value;
        }
    }
    Ok(held)
}
