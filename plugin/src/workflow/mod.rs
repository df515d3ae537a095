//! The workflow's steps, in order: find the Stripe meter, query Amberflo
//! (step 1), read what Stripe already holds for intervals past its dedupe
//! window, then record one meter event per interval (step 2). Nothing is
//! written when a step before the writes fails; a backfill stops at the first
//! failed write.

use crate::prelude::*;

use crate::ambient::now;
use crate::credentials::Needed;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    CustomerUsage, Endpoints, Inputs, Interval, InvoiceCheck, InvoicePage, InvoiceReconciliation,
    LedgerMark, Listing, Meter, Options, Outputs, Reconciliation, Source as WitSource, Step,
    StripeRead, SubscriptionPage, UsagePoint, UsageQuery, WorkflowError,
};
use crate::inputs::{self, Plan, Window};
use crate::retry;
use crate::{amberflo, credentials, reconcile, time};
use calls::query_amberflo;
use core::time::Duration;
use failure::{step_failed, summaries_too_large};
use ledger::{
    Source, carried_by_day, carried_through, read_invoice_lines, read_summaries, record_all,
};
use usage_sync_report::defaults::MAX_CUSTOMERS_PER_QUERY;
use values::expected;

mod calls;
mod failure;
mod ledger;
mod listing;
mod meter;
mod values;

/// The whole workflow: the meter, step 1, step 2; `recent` is this tool's
/// recent writes to the Stripe customer (on any meter); `listed`, the sync's
/// listing for the customer, if any.
pub fn run(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    recent: &[LedgerMark],
    listed: Option<&Listing>,
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
    query_and_record(
        endpoints, &options, &plan, &retry, &meter, recent, listed, reads,
    )
}

/// [`run`] with the meter already found (by [`find_meter`]), this tool's
/// recent writes to the ledger, and the customer's subscriptions from the
/// sync's listing, if any.
pub fn run_with_meter(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    meter: Meter,
    recent: &[LedgerMark],
    listed: Option<&Listing>,
) -> Result<Outputs, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Amberflo, Needed::Stripe], |o| {
        inputs::validate(inputs, o, now())
    })?;
    query_and_record(
        endpoints,
        &options,
        &plan,
        &retry,
        &meter,
        recent,
        listed,
        Vec::new(),
    )
}

#[allow(clippy::too_many_arguments)]
fn query_and_record(
    endpoints: &Endpoints,
    options: &Options,
    plan: &Plan,
    retry: &retry::Policy,
    meter: &Meter,
    recent: &[LedgerMark],
    listed: Option<&Listing>,
    reads: Vec<StripeRead>,
) -> Result<Outputs, WorkflowError> {
    // From the first day's start: the ledger compares whole days' prefixes.
    let window = plan.window.from_day_start();
    let grid = inputs::grid(options.interval, plan.window);
    let body = amberflo::request_body(plan, window, grouping(grid));
    let (reply, attempts) = query_amberflo(endpoints, &body, window, retry)?;
    let usage =
        amberflo::parse_response(&reply.body, &plan.customer_id, window, grid).map_err(|m| {
            step_failed(
                Step::QueryUsage,
                plan.window,
                Some(200),
                m,
                reply.request_id(),
                attempts,
            )
        })?;
    let source = Source {
        name: format!("{}/{}", plan.customer_id, plan.meter_api_name),
        usage,
        from: None,
        until: None,
    };
    record_all(
        endpoints,
        options,
        plan,
        retry,
        vec![source],
        meter,
        recent,
        listed,
        reads,
    )
}

/// Step 2 alone for one ledger: the meter and step 1's answer for each of its
/// sources given (from [`find_meter`] and [`query_many`]).
pub fn record_usage(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    sources: Vec<WitSource>,
    meter: Meter,
    recent: &[LedgerMark],
    listed: Option<&Listing>,
) -> Result<Outputs, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Stripe], |o| {
        if sources.is_empty() {
            return Err("a ledger needs at least one source".into());
        }
        inputs::validate(inputs, o, now())
    })?;
    let mut checked = Vec::with_capacity(sources.len());
    for source in sources {
        let usage = given_usage(&options, &plan, source.usage_result, &source.points)?;
        checked.push(Source {
            name: format!("{}/{}", source.customer_id, source.meter_api_name),
            usage,
            from: source.billed_from,
            until: source.billed_until,
        });
    }
    record_all(
        endpoints,
        &options,
        &plan,
        &retry,
        checked,
        &meter,
        recent,
        listed,
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
    usage: CustomerUsage,
    meter: Meter,
    tolerance: &str,
) -> Result<Reconciliation, WorkflowError> {
    let ((plan, tolerance), retry) = prepare(&options, &[Needed::Stripe], |o| {
        let plan = inputs::validate(inputs, o, now())?;
        same_customer(&plan, &usage)?;
        Ok((plan, parse_tolerance(tolerance)?))
    })?;
    let usage = given_usage(&options, &plan, usage.usage_result, &usage.points)?;
    let totals = usage
        .totals(&plan.intervals)
        .map_err(|m| step_failed(Step::QueryUsage, plan.window, Some(200), m, None, 1))?;
    let invalid = WorkflowError::InvalidInput;
    let scale = inputs::scale(&options).map_err(invalid)?;
    let expected = expected(&totals, scale, options.rounding).map_err(invalid)?;
    let mut reads = Vec::new();
    let mut held = read_summaries(
        endpoints,
        options.interval,
        &plan,
        &meter,
        &plan.intervals,
        &retry,
        &mut reads,
    )?;
    // Carried usage counts for the day it came out of, not the day it sits in.
    if options.carry_late_usage && options.interval == Interval::Day {
        let carried = carried_by_day(
            endpoints,
            &plan,
            &meter,
            &retry,
            &plan.intervals,
            &mut reads,
        )?;
        for (day, (into, out_of)) in carried {
            if let Some((_, value)) = held.get_mut(day) {
                *value = value
                    .checked_add(out_of)
                    .and_then(|v| v.checked_sub(into))
                    .ok_or_else(|| summaries_too_large(plan.window))?;
            }
        }
    }
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

/// One page of the account's subscriptions with an item on `meter_ids`.
pub fn list_subscriptions(
    endpoints: &Endpoints,
    options: Options,
    meter_ids: Vec<String>,
    after: Option<String>,
) -> Result<SubscriptionPage, WorkflowError> {
    let ((), retry) = prepare(&options, &[Needed::Stripe], |_| {
        match meter_ids.is_empty() {
            true => Err("a listing of subscriptions needs at least one meter".into()),
            false => Ok(()),
        }
    })?;
    listing::page(endpoints, &retry, &meter_ids, after.as_deref())
}

/// One page of the account's invoices created from `created_from` on, kept
/// to subscriptions' invoices with a priced line.
pub fn list_invoices(
    endpoints: &Endpoints,
    options: Options,
    created_from: i64,
    after: Option<String>,
) -> Result<InvoicePage, WorkflowError> {
    let ((), retry) = prepare(&options, &[Needed::Stripe], |_| match created_from < 0 {
        true => Err(format!(
            "a listing of invoices from {created_from}: before 1970"
        )),
        false => Ok(()),
    })?;
    listing::invoice_page(endpoints, &retry, created_from, after.as_deref())
}

/// Step 1 for many customers of one meter: one query, grouped by customer.
pub fn query_many(
    endpoints: &Endpoints,
    options: Options,
    query: UsageQuery,
) -> Result<Vec<CustomerUsage>, WorkflowError> {
    let (window, retry) = prepare(&options, &[Needed::Amberflo], |o| batch_window(&query, o))?;
    // From the first day's start: the ledger compares whole days' prefixes.
    let grid = inputs::grid(options.interval, window);
    let window = window.from_day_start();
    let ids: Vec<&str> = query.customer_ids.iter().map(String::as_str).collect();
    let body = amberflo::batch_request_body(&ids, &query.meter_api_name, window, grouping(grid));
    let (reply, attempts) = query_amberflo(endpoints, &body, window, &retry)?;
    let usage = amberflo::split_by_customer(&reply.body, &ids, window, grid).map_err(|m| {
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
        .map(|(customer_id, usage)| CustomerUsage {
            customer_id,
            points: usage
                .points
                .iter()
                .map(|&(at, value)| UsagePoint {
                    at,
                    value: value.to_string(),
                })
                .collect(),
            usage_result: usage.client_meters,
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
        attempt_header: options.attempt_header,
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

/// Step 1's answer for this customer from a batch query ([`query_many`]
/// checked Amberflo's answer), given back by its caller: its points checked
/// against this run's window and grid (`amberflo::given`).
fn given_usage(
    options: &Options,
    plan: &Plan,
    usage_result: String,
    points: &[UsagePoint],
) -> Result<amberflo::Usage, WorkflowError> {
    let grid = inputs::grid(options.interval, plan.window);
    let window = plan.window.from_day_start();
    let points = points.iter().map(|p| (p.at, p.value.as_str()));
    amberflo::given(usage_result, points, window, grid)
        .map_err(|m| step_failed(Step::QueryUsage, plan.window, Some(200), m, None, 1))
}

/// Refuses step 1's answer for another customer than the run's.
fn same_customer(plan: &Plan, usage: &CustomerUsage) -> Result<(), String> {
    if usage.customer_id != plan.customer_id {
        return Err(format!(
            "the usage given is customer `{}`'s, not `{}`'s",
            usage.customer_id, plan.customer_id
        ));
    }
    Ok(())
}

/// Reconcile one row's finalized invoices, reading only: each metered line's
/// quantity against what a run bills for its period (Amberflo's total by
/// hour, times the scale, rounded per UTC day when rounding is asked; the
/// hour holding a mid-hour renewal with the new period, as a run cuts it).
pub fn reconcile_invoices(
    endpoints: &Endpoints,
    options: Options,
    inputs: Inputs,
    usage: CustomerUsage,
    meter: Meter,
    listed: Option<&Listing>,
) -> Result<InvoiceReconciliation, WorkflowError> {
    let (plan, retry) = prepare(&options, &[Needed::Stripe], |o| {
        let plan = inputs::validate(inputs, o, now())?;
        same_customer(&plan, &usage)?;
        Ok(plan)
    })?;
    let invalid = WorkflowError::InvalidInput;
    if inputs::grid(options.interval, plan.window) != 3600 {
        return Err(invalid(
            "invoices are reconciled from Amberflo's usage by hour: --interval hour".into(),
        ));
    }
    let usage = given_usage(&options, &plan, usage.usage_result, &usage.points)?;
    let scale = inputs::scale(&options).map_err(invalid)?;
    let mut reads = Vec::new();
    let (lines, current) =
        read_invoice_lines(endpoints, &plan, &meter, &retry, now(), listed, &mut reads)?;
    let hour = |t: i64| t.div_euclid(3600) * 3600;
    let starts: Vec<i64> = lines.iter().map(|l| l.start).chain(current).collect();
    let lines: Vec<_> = lines
        .into_iter()
        .filter(|line| {
            let (start, end) = (hour(line.start), hour(line.end));
            let inside = plan.window.start <= start && end <= plan.window.end && start < end;
            line.status != "draft" && inside
        })
        .collect();
    let periods: Vec<Window> = lines
        .iter()
        .map(|l| Window {
            start: l.start,
            end: l.end,
        })
        .collect();
    let carried = carried_through(
        endpoints, &plan, &meter, &retry, &periods, &starts, &mut reads,
    )?;
    let mut checks = Vec::new();
    for (line, (carried_in, carried_out)) in lines.into_iter().zip(carried) {
        let (start, end) = (hour(line.start), hour(line.end));
        let mut expected = Decimal::ZERO;
        let mut cut = start;
        while cut < end {
            let next = ((cut.div_euclid(time::DAY) + 1) * time::DAY).min(end);
            let total = usage
                .points
                .iter()
                .filter(|(t, _)| cut <= *t && *t < next)
                .try_fold(Decimal::ZERO, |sum, (_, v)| sum.checked_add(*v))
                .ok_or_else(|| invalid("Amberflo's total is too large".into()))?;
            let total = values::scaled(total, scale).map_err(invalid)?;
            let billed = match options.rounding {
                Some(_) => crate::quantity::from_total(total, options.rounding)
                    .and_then(|w| Decimal::parse(&w))
                    .map_err(invalid)?,
                None => total,
            };
            expected = expected
                .checked_add(billed)
                .ok_or_else(|| invalid("Amberflo's total is too large".into()))?;
            cut = next;
        }
        // Carried usage is billed on the invoice of the period it was carried into.
        let expected = expected
            .checked_sub(carried_out)
            .and_then(|e| e.checked_add(carried_in))
            .ok_or_else(|| invalid("Amberflo's total is too large".into()))?;
        let billed = Decimal::parse(&line.quantity.to_string()).map_err(invalid)?;
        let outcome = match billed.cmp_exact(expected) {
            Some(core::cmp::Ordering::Equal) => "match",
            Some(core::cmp::Ordering::Less) => "under",
            _ => "over",
        };
        checks.push(InvoiceCheck {
            invoice: line.invoice,
            status: line.status,
            period_start: line.start,
            period_end: line.end,
            billed: billed.to_string(),
            expected: expected.to_string(),
            carried_in: carried_in.to_string(),
            carried_out: carried_out.to_string(),
            outcome: outcome.into(),
        });
    }
    crate::order::sort_by_times(&mut checks, |c| (c.period_start, 0));
    Ok(InvoiceReconciliation { checks, reads })
}

/// Amberflo's name for a bucket of `grid` seconds (see [`inputs::grid`]).
fn grouping(grid: i64) -> &'static str {
    if grid == time::DAY { "DAY" } else { "HOUR" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_given_for_another_customer_is_refused() {
        let day = Window {
            start: 0,
            end: 86_400,
        };
        let plan = Plan {
            customer_id: "acme".into(),
            meter_api_name: "m".into(),
            stripe_customer: "cus_1".into(),
            stripe_event_name: "e".into(),
            usage_quantity: None,
            window: day,
            intervals: vec![day],
        };
        let usage = |customer_id: &str| CustomerUsage {
            customer_id: customer_id.into(),
            usage_result: "[]".into(),
            points: Vec::new(),
        };
        assert!(same_customer(&plan, &usage("acme")).is_ok());
        assert_eq!(
            same_customer(&plan, &usage("globex")).unwrap_err(),
            "the usage given is customer `globex`'s, not `acme`'s"
        );
    }
}
