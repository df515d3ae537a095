//! Reads what bills the ledger: the customer's subscriptions (one page for
//! almost every customer), and a subscription's invoices only when the window
//! reaches before an item's current period.

use crate::prelude::*;

use super::super::calls::{Page, Paging, read_pages, read_record};
use super::super::failure::step_failed;
use super::super::listing;
use crate::billing::{self, Invoice, Periods, Subscription};
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Listing, Meter, Step, StripeRead, WorkflowError,
};
use crate::inputs::{Plan, Window};
use crate::{retry, stripe, time};

/// The periods of the items priced on `meter` for the plan's Stripe customer:
/// from the sync's listing of its subscriptions when it may be trusted, else
/// from a read of its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_periods(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    now: i64,
    listed: Option<&Listing>,
    reads: &mut Vec<StripeRead>,
) -> Result<Periods, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let window = plan.window;
    let subscriptions = of_customer(base, plan, meter, retry, now, listed, reads)?;
    let mut invoice_reads = Vec::new();
    let periods = billing::periods(&subscriptions, &meter.id, window, now, |subscription| {
        if let Some(invoices) = listed_invoices(base, plan, meter, subscription, now, listed) {
            invoice_reads.push(invoices.0);
            return Ok(invoices.1);
        }
        invoices(base, plan, &subscription.id, retry, &mut invoice_reads).map_err(|e| match e {
            WorkflowError::StepFailed(f) => f.message,
            WorkflowError::InvalidInput(m) => m,
        })
    })
    .map_err(|m| step_failed(Step::ReadInvoices, window, Some(200), m, None, 1))?;
    reads.extend(invoice_reads);
    Ok(periods)
}

/// The customer's subscriptions: from the sync's listing when it may be
/// trusted (`listing::trusted`), else from a read of its own.
#[allow(clippy::too_many_arguments)]
fn of_customer(
    base: &str,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    now: i64,
    listed: Option<&Listing>,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<Subscription>, WorkflowError> {
    if let Some(listed) = listed {
        match listing::trusted(listed, &meter.id, &plan.stripe_customer, now) {
            Ok(subscriptions) => {
                let url = billing::account_subscriptions_url(base, None);
                let answer = format!(
                    "the account's listing of {}: {}",
                    time::format(listed.listed_at),
                    on_meter(&subscriptions, meter)
                );
                reads.push(read_record(url, answer));
                return Ok(subscriptions);
            }
            Err(why) => crate::ambient::warn(format_args!(
                "usage-sync: reading the subscriptions of {}: {why}",
                plan.stripe_customer
            )),
        }
    }
    subscriptions(base, plan, meter, retry, reads)
}

/// The invoices of `subscription` from the sync's listing of the account's
/// invoices, with the trace of what it held, when they may be trusted
/// (`listing::trusted_invoices`); else `None`, and the run reads its own.
fn listed_invoices(
    base: &str,
    plan: &Plan,
    meter: &Meter,
    subscription: &Subscription,
    now: i64,
    listed: Option<&Listing>,
) -> Option<(StripeRead, Vec<Invoice>)> {
    let listed = listed?;
    match listing::trusted_invoices(listed, subscription, &meter.id, plan.window.start, now) {
        Ok(None) => None,
        Ok(Some(invoices)) => {
            let from = listed.invoices.as_ref().map_or(0, |i| i.created_from);
            let at = listed.invoices.as_ref().map_or(0, |i| i.listed_at);
            let url = billing::account_invoices_url(base, from, None);
            let answer = format!(
                "the account's listing of {} for {}: {}",
                time::format(at),
                subscription.id,
                statuses(&invoices)
            );
            Some((read_record(url, answer), invoices))
        }
        Err(why) => {
            crate::ambient::warn(format_args!(
                "usage-sync: reading the invoices of {}: {why}",
                subscription.id
            ));
            None
        }
    }
}

/// Each invoice and its status, for the trace.
fn statuses(page: &[Invoice]) -> String {
    page.iter()
        .map(|i| format!("{} {}", i.id, i.status.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan's Stripe customer's subscriptions, every status, each page
/// traced with the items on `meter` and their current periods.
fn subscriptions(
    base: &str,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<Subscription>, WorkflowError> {
    list(
        Step::ReadSubscriptions,
        plan.window,
        retry,
        |after| billing::subscriptions_url(base, &plan.stripe_customer, after),
        billing::parse_subscriptions,
        |s: &Subscription| s.id.clone(),
        |page: &[Subscription]| on_meter(page, meter),
        reads,
    )
}

/// The items on `meter` and their current periods, for the trace.
fn on_meter(subscriptions: &[Subscription], meter: &Meter) -> String {
    let on_meter = subscriptions
        .iter()
        .flat_map(|s| &s.items.data)
        .filter(|i| i.on_meter(&meter.id))
        .map(|i| {
            format!(
                "{} {} to {}",
                i.id,
                time::format(i.current_period_start),
                time::format(i.current_period_end)
            )
        })
        .collect::<Vec<_>>();
    match on_meter.is_empty() {
        true => format!("no subscription item on {}", meter.id),
        false => on_meter.join(", "),
    }
}

/// The invoices of `subscription`, newest first, each page traced.
fn invoices(
    base: &str,
    plan: &Plan,
    subscription: &str,
    retry: &retry::Policy,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<Invoice>, WorkflowError> {
    list(
        Step::ReadInvoices,
        plan.window,
        retry,
        |after| billing::invoices_url(base, &plan.stripe_customer, subscription, after),
        billing::parse_invoices,
        |i: &Invoice| i.id.clone(),
        |page: &[Invoice]| statuses(page),
        reads,
    )
}

/// Every page of a Stripe list, each traced in `reads`.
#[allow(clippy::too_many_arguments)]
fn list<T>(
    step: Step,
    window: Window,
    retry: &retry::Policy,
    url_of: impl Fn(Option<&str>) -> String,
    parse: impl Fn(&[u8]) -> Result<billing::List<T>, String>,
    id_of: impl Fn(&T) -> String,
    describe: impl Fn(&[T]) -> String,
    reads: &mut Vec<StripeRead>,
) -> Result<Vec<T>, WorkflowError> {
    let mut found = Vec::new();
    read_pages(
        step,
        window,
        retry,
        None,
        url_of,
        |url, reply, bad_answer| {
            let page = parse(&reply.body).map_err(bad_answer)?;
            reads.push(read_record(url, describe(&page.data)));
            let last = page.data.last().map(&id_of);
            found.extend(page.data);
            Ok(match page.has_more {
                false => Page::Done(()),
                true => Page::After(last),
            })
        },
    )
    .map_err(|e| match e {
        Paging::Failed(e) => e,
        Paging::TooMany => step_failed(
            step,
            window,
            None,
            format!("more than {} pages", stripe::MAX_PAGES),
            None,
            0,
        ),
    })?;
    Ok(found)
}

/// One metered invoice line of the ledger's meter: the invoice, its status,
/// the line's period and quantity.
pub(in crate::workflow) struct InvoiceLine {
    pub invoice: String,
    pub status: String,
    pub start: i64,
    pub end: i64,
    pub quantity: i64,
}

/// Every invoice line billing `meter` for the plan's Stripe customer: the
/// subscriptions, then each one's invoices (for `reconcile-invoices`); and
/// the starts of the items' current periods. From the sync's listings when
/// they may be trusted: the invoices listing then holds only the lines of
/// the last 37 days, every one that ends inside the window.
#[allow(clippy::too_many_arguments)]
pub(in crate::workflow) fn read_invoice_lines(
    endpoints: &Endpoints,
    plan: &Plan,
    meter: &Meter,
    retry: &retry::Policy,
    now: i64,
    listed: Option<&Listing>,
    reads: &mut Vec<StripeRead>,
) -> Result<(Vec<InvoiceLine>, Vec<i64>), WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let subscriptions = of_customer(base, plan, meter, retry, now, listed, reads)?;
    let mut lines = Vec::new();
    let current = subscriptions
        .iter()
        .flat_map(|s| &s.items.data)
        .filter(|i| i.on_meter(&meter.id))
        .map(|i| i.current_period_start)
        .collect();
    for sub in &subscriptions {
        let prices: Vec<&str> = sub
            .items
            .data
            .iter()
            .filter(|i| i.on_meter(&meter.id))
            .map(|i| i.price.id.as_str())
            .collect();
        if prices.is_empty() {
            continue;
        }
        let invoices = match listed_invoices(base, plan, meter, sub, now, listed) {
            Some((read, invoices)) => {
                reads.push(read);
                invoices
            }
            None => invoices(base, plan, &sub.id, retry, reads)?,
        };
        for invoice in invoices {
            for line in &invoice.lines.data {
                if line.price().is_some_and(|p| prices.contains(&p)) {
                    lines.push(InvoiceLine {
                        invoice: invoice.id.clone(),
                        status: invoice.status.clone().unwrap_or_default(),
                        start: line.period.start,
                        end: line.period.end,
                        quantity: line.quantity.unwrap_or(0),
                    });
                }
            }
        }
    }
    Ok((lines, current))
}
