//! Stripe is the ledger: what it holds for each interval (its event
//! summaries), and the one place that decides whether an interval is written,
//! skipped as already held, reported as drift, or corrected by a true-up.

use super::ambient::{idempotency_key, now};
use super::calls::{Page, Paging, join, read_pages, read_record, record};
use super::failure::step_failed;
use super::values::{values, window_totals};
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Interval, Meter, MeterEvent, Options, Outputs, PlannedRequest, Step, StripeRead,
    Verification, WorkflowError,
};
use crate::inputs::{self, Plan, Window};
use crate::{amberflo, quantity, reconcile, retry, stripe, time};
use std::collections::HashMap;

/// Stripe dedupes an identifier for "at least 24 hours". An interval that
/// ended longer ago than this may have been sent before that window opened, so
/// what Stripe holds is read before writing it. An hour short of 24, for clock
/// skew; an interval that ended more recently cannot have been sent earlier.
const IDENTIFIER_TRUSTED_FOR: i64 = 23 * 3600;

/// Whether what Stripe holds for `interval` is read before writing it: it
/// ended longer ago than the identifier is trusted for, or a true-up asks
/// and it has settled, whatever its age.
fn must_read(options: &Options, interval: &Window, now: i64) -> bool {
    let settle_secs = i64::from(options.settle_hours) * 3600;
    now - interval.end > IDENTIFIER_TRUSTED_FOR
        || (options.true_up && now - interval.end >= settle_secs)
}

/// What Stripe holds for each interval in `old` (keyed by its start: its end
/// and the aggregated value), from one paginated summaries call. An interval
/// Stripe lists no summary for holds nothing.
pub(super) fn read_summaries(
    endpoints: &Endpoints,
    interval: Interval,
    plan: &Plan,
    meter: &Meter,
    old: &[Window],
    retry: &retry::Policy,
    reads: &mut Vec<StripeRead>,
) -> Result<HashMap<i64, (i64, f64)>, WorkflowError> {
    let (Some(first), Some(last)) = (old.first(), old.last()) else {
        return Ok(HashMap::new());
    };
    let range = Window {
        start: first.start,
        end: last.end,
    };
    // Summaries start and end on minutes, and on the grouping window's grid.
    let (grouping, grid, unit) = match interval {
        Interval::Day => (Some("day"), time::DAY, "UTC day"),
        Interval::Hour => (Some("hour"), 3600, "UTC hour"),
        Interval::Window => (None, 60, "minute"),
    };
    if let Some(off) = old
        .iter()
        .find(|p| p.start.rem_euclid(grid) != 0 || p.end.rem_euclid(grid) != 0)
    {
        let aligned = Window {
            start: plan.window.start.div_euclid(grid) * grid,
            end: (plan.window.end + grid - 1).div_euclid(grid) * grid,
        };
        return Err(WorkflowError::InvalidInput(format!(
            "the interval {} to {} ended more than 23 hours ago, so what Stripe holds for it must be read first, and Stripe reads only whole {unit}s: use the window {} to {}",
            time::format(off.start),
            time::format(off.end),
            time::format(aligned.start),
            time::format(aligned.end),
        )));
    }
    let mut held: HashMap<i64, (i64, f64)> = old.iter().map(|p| (p.start, (p.end, 0.0))).collect();
    let base = endpoints.stripe_url.trim_end_matches('/');
    read_pages(
        Step::ReadSummaries,
        range,
        retry,
        |after| stripe::summaries_url(base, meter, &plan.stripe_customer, range, grouping, after),
        |url, reply, bad_answer| {
            let list = stripe::parse_summaries(&reply.body).map_err(bad_answer)?;
            let mut answer = Vec::new();
            for summary in &list.data {
                match held.get_mut(&summary.start_time) {
                    Some((end, value)) if *end == summary.end_time => {
                        *value = summary.aggregated_value
                    }
                    _ => {
                        return Err(bad_answer(format!(
                            "Stripe's summary {} covers {} to {}, which is not an interval asked for",
                            summary.id,
                            time::format(summary.start_time),
                            time::format(summary.end_time)
                        )));
                    }
                }
                answer.push(format!(
                    "{}: {}",
                    time::format(summary.start_time),
                    quantity::format_number(summary.aggregated_value)
                ));
            }
            let answer = if answer.is_empty() {
                "no summaries: nothing held".to_string()
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
    Ok(held)
}

/// Step 2: one meter event per interval, in order, stopping at the first
/// failure. An interval past the identifier's dedupe window is first checked
/// against Stripe's summary: already held, it is not written again; holding
/// another value, it is drift, reported and not written.
pub(super) fn record_all(
    endpoints: &Endpoints,
    options: &Options,
    plan: &Plan,
    retry: &retry::Policy,
    usage: amberflo::Usage,
    meter: &Meter,
    mut reads: Vec<StripeRead>,
) -> Result<Outputs, WorkflowError> {
    let totals = usage
        .totals(&plan.intervals)
        .map_err(|m| step_failed(Step::QueryUsage, plan.window, Some(200), m, None, 1))?;
    let scale = inputs::scale(options).map_err(WorkflowError::InvalidInput)?;
    let values = values(plan, options, scale, &totals).map_err(WorkflowError::InvalidInput)?;
    let (measured, billed) =
        window_totals(plan, scale, &totals, &values).map_err(WorkflowError::InvalidInput)?;
    let now = now();
    // Intervals are in order, so the old ones come first.
    let old: Vec<Window> = plan
        .intervals
        .iter()
        .filter(|p| must_read(options, p, now))
        .copied()
        .collect();
    let held = read_summaries(
        endpoints,
        options.interval,
        plan,
        meter,
        &old,
        retry,
        &mut reads,
    )?;
    let mut outputs = Outputs {
        usage_result: usage.client_meters,
        event_name: plan.stripe_event_name.clone(),
        window_start: plan.window.start,
        window_end: plan.window.end,
        measured_total: measured,
        billed_total: billed,
        meter: meter.clone(),
        events: Vec::new(),
        planned: Vec::new(),
        reads,
        dry_run: options.dry_run,
    };
    let url = join(&endpoints.stripe_url, stripe::PATH);
    for (interval, (value, total)) in plan.intervals.iter().zip(values) {
        let identifier = stripe::identifier(plan, interval);
        let mut event = MeterEvent {
            meter_event_id: identifier,
            event_name: plan.stripe_event_name.clone(),
            usage_quantity: value,
            amberflo_total: Some(total.to_string()),
            window_start: interval.start,
            window_end: interval.end,
            timestamp: interval.timestamp(),
            already_recorded: false,
            verified_by: None,
            stripe_value: None,
            drift: false,
            corrected_to: None,
            attempts: 0,
        };
        let held = held.get(&interval.start).map(|&(_, value)| value);
        if !to_write(options, plan, meter, interval, &mut event, held, now) {
            outputs.events.push(event);
            continue;
        }
        let body = stripe::request_body(
            plan,
            meter,
            interval,
            &event.usage_quantity,
            &event.meter_event_id,
        );
        if options.dry_run {
            outputs.planned.push(PlannedRequest {
                method: "POST".into(),
                url: url.clone(),
                headers: stripe::event_headers(&idempotency_key(), None)
                    .iter()
                    .chain(&[("Content-Length", body.len().to_string().as_str())])
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body,
            });
            continue;
        }
        match record(&url, event, &body, interval, retry) {
            Ok(event) => outputs.events.push(event),
            Err(mut failure) => {
                failure.recorded = outputs.events;
                return Err(WorkflowError::StepFailed(failure));
            }
        }
    }
    Ok(outputs)
}

/// Whether `event` is written, given what Stripe holds for its interval
/// (`None`: not read, the identifier alone keeps it exactly once). Held
/// already, or drift: not written. A true-up's correction: written in place
/// of the total. Records on `event` what was found.
fn to_write(
    options: &Options,
    plan: &Plan,
    meter: &Meter,
    interval: &Window,
    event: &mut MeterEvent,
    held: Option<f64>,
    now: i64,
) -> bool {
    let Some(held) = held else {
        return true;
    };
    event.stripe_value = Some(quantity::format_number(held));
    // Nothing held: the interval was never written.
    if held == 0.0 {
        return true;
    }
    let wanted: f64 = event.usage_quantity.parse().unwrap_or(f64::NAN);
    if held == wanted {
        event.already_recorded = true;
        event.verified_by = Some(Verification::Summary);
        return false;
    }
    match true_up(
        options,
        plan,
        meter,
        interval,
        &event.usage_quantity,
        held,
        now,
    ) {
        Some(correction) => {
            // Written as any event: the correction, not the total.
            event.meter_event_id = correction.identifier;
            event.corrected_to = Some(event.usage_quantity.clone());
            event.usage_quantity = correction.value;
            true
        }
        None => {
            event.drift = true;
            false
        }
    }
}

/// A correction event of a true-up.
struct Correction {
    identifier: String,
    value: String,
}

/// The correction that makes Stripe's `held` value for a settled interval
/// equal `wanted`, when the options ask for one: on a raw `sum` meter the
/// difference (negative only with `allow-decrease`), on a pre-aggregated one
/// the total again (Stripe keeps the last event of the bucket). None: leave it
/// as drift (not asked, still settling, a decrease not allowed, or a value
/// Stripe holds that is not a whole number).
fn true_up(
    options: &Options,
    plan: &Plan,
    meter: &Meter,
    interval: &Window,
    wanted: &str,
    held: f64,
    now: i64,
) -> Option<Correction> {
    if !options.true_up || now - interval.end < i64::from(options.settle_hours) * 3600 {
        return None;
    }
    let target = Decimal::parse(wanted).ok()?;
    let held = reconcile::stripe_decimal(held).ok()?;
    let difference = target.checked_sub(held)?;
    if !held.is_integer() || difference.is_zero() {
        return None;
    }
    if difference.is_negative() && !options.allow_decrease {
        return None;
    }
    let value = match meter.pre_aggregated {
        Some(_) => target,
        None => difference,
    };
    Some(Correction {
        identifier: stripe::correction_identifier(plan, interval, wanted),
        value: value.to_string(),
    })
}
