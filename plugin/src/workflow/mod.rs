//! The workflow's steps, in order: find the Stripe meter, query Amberflo
//! (step 1), read what Stripe already holds for intervals past its dedupe
//! window, then record one meter event per interval (step 2). Nothing is
//! written when a step before the writes fails; a backfill stops at the first
//! failed write.

use crate::credentials::Needed;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    CustomerUsage, Endpoints, Inputs, Interval, Meter, MeterEvent, Options, Outputs,
    PlannedRequest, Reconciliation, Step, StripeRead, UsageQuery, Verification, WorkflowError,
};
use crate::inputs::{self, Plan, Window};
use crate::retry;
use crate::{amberflo, credentials, quantity, reconcile, stripe, time};
use ambient::{idempotency_key, now};
use calls::{Page, Paging, join, query_amberflo, read_pages, read_record, record};
use failure::step_failed;
use std::collections::HashMap;
use std::time::Duration;
use usage_sync_report::defaults::MAX_CUSTOMERS_PER_QUERY;
use values::{expected, values, window_totals};

mod ambient;
mod calls;
mod failure;
mod meter;
mod values;

/// Stripe dedupes an identifier for "at least 24 hours". An interval that
/// ended longer ago than this may have been sent before that window opened, so
/// what Stripe holds is read before writing it. An hour short of 24, for clock
/// skew; an interval that ended more recently cannot have been sent earlier.
pub const IDENTIFIER_TRUSTED_FOR: i64 = 23 * 3600;

/// The whole workflow: the meter, step 1, step 2.
pub fn run(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
) -> Result<Outputs, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Amberflo, Needed::Stripe], |o| {
        inputs::validate(inputs, o, now())
    })?;
    let mut reads = Vec::new();
    let meter = meter::lookup(
        endpoints,
        &options,
        &plan.stripe_event_name,
        plan.window,
        &retry,
        &mut reads,
    )?;
    query_and_record(endpoints, &options, &plan, &retry, &meter, reads)
}

/// [`run`] with the meter already found (by [`find_meter`]).
pub fn run_with_meter(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    meter: Meter,
) -> Result<Outputs, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Amberflo, Needed::Stripe], |o| {
        inputs::validate(inputs, o, now())
    })?;
    query_and_record(endpoints, &options, &plan, &retry, &meter, Vec::new())
}

fn query_and_record(
    endpoints: &Endpoints,
    options: &Options,
    plan: &Plan,
    retry: &retry::Policy,
    meter: &Meter,
    reads: Vec<StripeRead>,
) -> Result<Outputs, WorkflowError> {
    let grid = inputs::grid(options.interval, plan.window);
    let body = amberflo::request_body(plan, grouping(grid));
    let (reply, attempts) = query_amberflo(endpoints, &body, plan.window, retry)?;
    let usage = amberflo::parse_response(&reply.body, &plan.customer_id, plan.window, grid)
        .map_err(|m| {
            step_failed(
                Step::QueryUsage,
                plan.window,
                Some(200),
                m,
                reply.request_id(),
                attempts,
            )
        })?;
    record_all(endpoints, options, plan, retry, usage, meter, reads)
}

/// Step 2 alone, with the meter and step 1's answer for this customer (from
/// [`find_meter`] and [`query_many`]).
pub fn record_usage(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    usage_result: &str,
    meter: Meter,
) -> Result<Outputs, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Stripe], |o| {
        inputs::validate(inputs, o, now())
    })?;
    let usage = given_usage(&options, &plan, usage_result)?;
    record_all(
        endpoints,
        &options,
        &plan,
        &retry,
        usage,
        &meter,
        Vec::new(),
    )
}

/// Reconcile one row, reading only: Amberflo's totals from step 1's answer,
/// times the scale (rounded only if asked), against Stripe's summaries for
/// every interval of the window. Nothing is written.
pub fn reconcile(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    usage_result: &str,
    meter: Meter,
    tolerance: &str,
) -> Result<Reconciliation, WorkflowError> {
    let ((plan, tolerance), retry) = prepare(&options, &[Needed::Stripe], |o| {
        let plan = inputs::validate(inputs, o, now())?;
        Ok((plan, parse_tolerance(tolerance)?))
    })?;
    let usage = given_usage(&options, &plan, usage_result)?;
    let totals = usage
        .totals(&plan.intervals)
        .map_err(|m| step_failed(Step::QueryUsage, plan.window, Some(200), m, None, 1))?;
    let invalid = WorkflowError::InvalidInput;
    let scale = inputs::scale(&options).map_err(invalid)?;
    let expected = expected(&totals, scale, options.rounding).map_err(invalid)?;
    let mut reads = Vec::new();
    let held = read_summaries(
        endpoints,
        options.interval,
        &plan,
        &meter,
        &plan.intervals,
        &retry,
        &mut reads,
    )?;
    let rules = reconcile::Rules {
        now: now(),
        settle_secs: i64::from(options.settle_hours) * 3600,
        tolerance,
    };
    let cells = reconcile::cells(&plan.intervals, &expected, &held, &rules)
        .map_err(|m| step_failed(Step::ReadSummaries, plan.window, Some(200), m, None, 1))?;
    Ok(Reconciliation {
        meter,
        cells,
        reads,
    })
}

/// The active meter of `event_name`, checked for the run's interval.
pub fn find_meter(
    endpoints: &Endpoints,
    options: Options,
    event_name: String,
) -> Result<Meter, WorkflowError> {
    let (event_name, retry) = prepare(&options, &[Needed::Stripe], |_| {
        inputs::stripe_event_name(event_name)
    })?;
    let no_window = Window { start: 0, end: 0 };
    meter::lookup(
        endpoints,
        &options,
        &event_name,
        no_window,
        &retry,
        &mut Vec::new(),
    )
}

/// Step 1 for many customers of one meter: one query, grouped by customer.
pub fn query_many(
    endpoints: &Endpoints,
    options: Options,
    query: UsageQuery,
) -> Result<Vec<CustomerUsage>, WorkflowError> {
    let (window, retry) = prepare(&options, &[Needed::Amberflo], |o| batch_window(&query, o))?;
    let ids: Vec<&str> = query.customer_ids.iter().map(String::as_str).collect();
    let body = amberflo::batch_request_body(
        &ids,
        &query.meter_api_name,
        window,
        grouping(inputs::grid(options.interval, window)),
    );
    let (reply, attempts) = query_amberflo(endpoints, &body, window, &retry)?;
    let usage = amberflo::split_by_customer(&reply.body, &ids).map_err(|m| {
        step_failed(
            Step::QueryUsage,
            window,
            Some(200),
            m,
            reply.request_id(),
            attempts,
        )
    })?;
    Ok(query
        .customer_ids
        .into_iter()
        .zip(usage)
        .map(|(customer_id, usage_result)| CustomerUsage {
            customer_id,
            usage_result,
        })
        .collect())
}

/// What every entry point does before its first request, in this order:
/// `check` its input, make sure each key in `needed` is at hand, and take the
/// retry policy. Bad input or a missing key is invalid input: nothing is sent.
fn prepare<T>(
    options: &Options,
    needed: &[Needed],
    check: impl FnOnce(&Options) -> Result<T, String>,
) -> Result<(T, retry::Policy), WorkflowError> {
    let checked = check(options).map_err(WorkflowError::InvalidInput)?;
    credentials::check(needed).map_err(WorkflowError::InvalidInput)?;
    let retry = retry::Policy {
        max_retries: options.max_retries,
        budget: Duration::from_millis(options.retry_budget_ms),
    };
    Ok((checked, retry))
}

/// The window of a batch query: each customer is checked as [`run`] would
/// check it, and the window is the same for all.
fn batch_window(query: &UsageQuery, options: &Options) -> Result<Window, String> {
    if query.customer_ids.is_empty() || query.customer_ids.len() > MAX_CUSTOMERS_PER_QUERY {
        return Err(format!(
            "a usage query names 1 to {MAX_CUSTOMERS_PER_QUERY} customers, not {}",
            query.customer_ids.len()
        ));
    }
    let now = now();
    let mut window = None;
    for id in &query.customer_ids {
        let plan = inputs::validate(
            Inputs {
                customer_id: id.clone(),
                meter_api_name: query.meter_api_name.clone(),
                stripe_customer: "-".into(),
                stripe_event_name: "-".into(),
                usage_quantity: None,
                start_time: query.start_time.clone(),
                end_time: query.end_time.clone(),
            },
            options,
            now,
        )?;
        window = Some(plan.window);
    }
    window.ok_or_else(|| "a usage query names no customer".into())
}

/// Reconcile's tolerance: a number of billed units, 0 or more.
fn parse_tolerance(tolerance: &str) -> Result<Decimal, String> {
    Decimal::parse(tolerance)
        .ok()
        .filter(|t| !t.is_negative())
        .ok_or_else(|| format!("the tolerance `{tolerance}` is not a number of units, 0 or more"))
}

/// Step 1's answer for this customer, given by the caller of a batch query,
/// checked as [`run`] checks its own.
fn given_usage(
    options: &Options,
    plan: &Plan,
    usage_result: &str,
) -> Result<amberflo::Usage, WorkflowError> {
    let grid = inputs::grid(options.interval, plan.window);
    amberflo::client_meters(usage_result, &plan.customer_id, plan.window, grid)
        .map_err(|m| step_failed(Step::QueryUsage, plan.window, Some(200), m, None, 1))
}

/// Amberflo's name for a bucket of `grid` seconds (see [`inputs::grid`]).
fn grouping(grid: i64) -> &'static str {
    if grid == time::DAY { "DAY" } else { "HOUR" }
}

/// What Stripe holds for each interval in `old` (keyed by its start: its end
/// and the aggregated value), from one paginated summaries call. An interval
/// Stripe lists no summary for holds nothing.
fn read_summaries(
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
fn record_all(
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
    let settle_secs = i64::from(options.settle_hours) * 3600;
    // Intervals are in order, so the old ones come first. A true-up reads
    // every settled interval too, whatever its age.
    let old: Vec<Window> = plan
        .intervals
        .iter()
        .filter(|p| {
            now - p.end > IDENTIFIER_TRUSTED_FOR || (options.true_up && now - p.end >= settle_secs)
        })
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
        if let Some(&(_, held)) = held.get(&interval.start) {
            event.stripe_value = Some(quantity::format_number(held));
            let wanted: f64 = event.usage_quantity.parse().unwrap_or(f64::NAN);
            if held != 0.0 {
                if held == wanted {
                    event.already_recorded = true;
                    event.verified_by = Some(Verification::Summary);
                } else if let Some(correction) = true_up(
                    options,
                    plan,
                    meter,
                    interval,
                    &event.usage_quantity,
                    held,
                    now,
                ) {
                    // Written below, as any event: the correction, not the total.
                    event.meter_event_id = correction.identifier;
                    event.corrected_to = Some(event.usage_quantity.clone());
                    event.usage_quantity = correction.value;
                } else {
                    event.drift = true;
                }
                if event.corrected_to.is_none() {
                    outputs.events.push(event);
                    continue;
                }
            }
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
