//! One listing of the account's subscriptions per sync, in place of one read
//! per customer, and when a run may trust what it holds for its customer
//! (README, "One listing per sync").

use crate::prelude::*;

use super::calls::read;
use super::failure::step_failed;
use crate::billing::{
    self, FINALIZATION_MARGIN, Invoice, Item, Line, LinePeriod, List, Price, PriceDetails, Pricing,
    Recurring, Subscription,
};
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, InvoicePage, ListedInvoice, ListedItem, ListedLine, ListedSubscription, Listing,
    Step, SubscriptionPage, WorkflowError,
};
use crate::inputs::Window;
use crate::{retry, time};

/// How long a listing may stand in for a customer's own read: about what
/// Stripe takes to process a meter event once written, the staleness a read
/// just before a write already has.
pub const MAX_AGE: i64 = 10 * 60;

/// How far before a run's window the account's invoices must have been
/// listed from: a ledger's days begin at the start of the UTC day holding
/// the window's start, and a period ending there is billed by an invoice
/// created at its end ([I] a metered line's period ends by the time its
/// invoice is created: `specs/README.md`, "One listing per sync").
pub const INVOICES_REACH: i64 = 86_400;

/// One page of the account's subscriptions (every status), each kept only
/// with its items on `meter_ids`, and only if it has one.
pub fn page(
    endpoints: &Endpoints,
    retry: &retry::Policy,
    meter_ids: &[String],
    after: Option<&str>,
) -> Result<SubscriptionPage, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let url = billing::account_subscriptions_url(base, after);
    let (data, next, bad_answer) = account_page(
        &url,
        Step::ReadSubscriptions,
        retry,
        billing::parse_subscriptions,
        |s| &s.id,
    )?;
    let mut subscriptions = Vec::new();
    for sub in data {
        let items: Vec<ListedItem> = sub
            .items
            .data
            .into_iter()
            .filter_map(|i| listed_item(i, meter_ids))
            .collect();
        if items.is_empty() {
            continue;
        }
        let Some(customer) = sub.customer else {
            return Err(bad_answer.fail(format!(
                "Stripe's subscription {} names no customer",
                sub.id
            )));
        };
        subscriptions.push(ListedSubscription {
            id: sub.id,
            customer,
            ended_at: sub.ended_at,
            items,
        });
    }
    Ok(SubscriptionPage {
        subscriptions,
        next,
    })
}

/// One page of the account's invoices created from `created_from` on, each
/// kept only with its priced lines, and only if it bills a subscription and
/// has one. The host keeps the lines on its listed subscriptions' prices: a
/// set it holds once, where each page would take it in and search it again.
pub fn invoice_page(
    endpoints: &Endpoints,
    retry: &retry::Policy,
    created_from: i64,
    after: Option<&str>,
) -> Result<InvoicePage, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let url = billing::account_invoices_url(base, created_from, after);
    let (data, next, bad_answer) = account_page(
        &url,
        Step::ReadInvoices,
        retry,
        billing::parse_invoices,
        |i| &i.id,
    )?;
    let mut invoices = Vec::new();
    for invoice in data {
        let Some(subscription) = invoice.subscription else {
            continue;
        };
        let lines: Vec<ListedLine> = invoice
            .lines
            .data
            .into_iter()
            .filter_map(listed_line)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let Some(customer) = invoice.customer else {
            return Err(
                bad_answer.fail(format!("Stripe's invoice {} names no customer", invoice.id))
            );
        };
        invoices.push(ListedInvoice {
            id: invoice.id,
            customer,
            subscription,
            status: invoice.status,
            automatically_finalizes_at: invoice.automatically_finalizes_at,
            lines,
        });
    }
    Ok(InvoicePage { invoices, next })
}

/// One page of an account-wide list at `url` (no window: it serves every
/// row): its objects, the id to list after (`None`: the list is complete),
/// and how to fail the step for a bad answer, naming Stripe's request.
fn account_page<T>(
    url: &str,
    step: Step,
    retry: &retry::Policy,
    parse: fn(&[u8]) -> Result<List<T>, String>,
    id: fn(&T) -> &String,
) -> Result<(Vec<T>, Option<String>, BadAnswer), WorkflowError> {
    let (reply, attempts) = read(url, step, NO_WINDOW, retry, None)?;
    let bad_answer = BadAnswer {
        step,
        request_id: reply.request_id(),
        attempts,
    };
    let page = parse(&reply.body).map_err(|m| bad_answer.fail(m))?;
    let next = match (page.has_more, page.data.last()) {
        (false, _) => None,
        (true, Some(last)) => Some(id(last).clone()),
        (true, None) => {
            return Err(bad_answer.fail("Stripe said more follow, but the page was empty".into()));
        }
    };
    Ok((page.data, next, bad_answer))
}

/// An account-wide list's window: none.
const NO_WINDOW: Window = Window { start: 0, end: 0 };

/// A page's read, for failing its step on what the answer held.
struct BadAnswer {
    step: Step,
    request_id: Option<String>,
    attempts: u32,
}

impl BadAnswer {
    fn fail(&self, message: String) -> WorkflowError {
        step_failed(
            self.step,
            NO_WINDOW,
            Some(200),
            message,
            self.request_id.clone(),
            self.attempts,
        )
    }
}

fn listed_line(line: Line) -> Option<ListedLine> {
    let price = line.pricing?.price_details?.price;
    Some(ListedLine {
        start: line.period.start,
        end: line.period.end,
        price,
        quantity: line.quantity,
    })
}

fn listed_item(item: Item, meter_ids: &[String]) -> Option<ListedItem> {
    let meter = item.price.recurring?.meter?;
    meter_ids.contains(&meter).then_some(ListedItem {
        id: item.id,
        price: item.price.id,
        meter,
        current_period_start: item.current_period_start,
        current_period_end: item.current_period_end,
    })
}

/// The customer's subscriptions from `listed` when a run at `now` may use
/// them instead of its own read; else why not, and the run reads its own.
///
/// A listing is minutes old when a big sync's last rows use it. It serves
/// while it is younger than [`MAX_AGE`], and while no running subscription's
/// period on `meter_id` ends before `now` plus Stripe's finalization margin:
/// a renewal since the listing would put the run's usage on an invoice the
/// listing does not know is about to freeze.
pub fn trusted(
    listed: &Listing,
    meter_id: &str,
    customer: &str,
    now: i64,
) -> Result<Vec<Subscription>, String> {
    let age = now.saturating_sub(listed.listed_at);
    if !(0..=MAX_AGE).contains(&age) {
        return Err(format!(
            "the listing began at {}, {age} s before this run",
            time::format(listed.listed_at)
        ));
    }
    if listed.subscriptions.is_empty() {
        return Err("the listing holds no subscription of the customer".into());
    }
    for sub in &listed.subscriptions {
        if sub.customer != customer {
            return Err(format!(
                "the listing gave {}'s subscription {} for {customer}",
                sub.customer, sub.id
            ));
        }
        let renewing = sub.items.iter().find(|i| {
            i.meter == meter_id && i.current_period_end <= now.saturating_add(FINALIZATION_MARGIN)
        });
        if let (None, Some(item)) = (sub.ended_at, renewing) {
            return Err(format!(
                "the period of {} ends at {}",
                item.id,
                time::format(item.current_period_end)
            ));
        }
    }
    Ok(listed.subscriptions.iter().map(subscription).collect())
}

/// The invoices of `subscription` from `listed`, when a run at `now` whose
/// window starts at `window_start` may use them instead of its own read:
/// `Ok(None)` when the sync listed no invoices, `Err(why)` when the listing
/// may be wrong for it.
///
/// They serve while the listing is younger than [`MAX_AGE`], reaches back
/// [`INVOICES_REACH`] before the window, and holds, for each of the
/// subscription's items on `meter_id`, the invoice of the period that ended
/// last (the one before the current period; the last one, once it ended).
/// So an invoice created since the listing, or one Stripe left out of it,
/// sends the run to its own read.
pub fn trusted_invoices(
    listed: &Listing,
    subscription: &Subscription,
    meter_id: &str,
    window_start: i64,
    now: i64,
) -> Result<Option<Vec<Invoice>>, String> {
    let Some(invoices) = &listed.invoices else {
        return Ok(None);
    };
    let age = now.saturating_sub(invoices.listed_at);
    if !(0..=MAX_AGE).contains(&age) {
        return Err(format!(
            "the invoices listing began at {}, {age} s before this run",
            time::format(invoices.listed_at)
        ));
    }
    if invoices.created_from > window_start.saturating_sub(INVOICES_REACH) {
        return Err(format!(
            "the invoices listing holds those created from {}, less than a day before the window",
            time::format(invoices.created_from)
        ));
    }
    let held: Vec<&ListedInvoice> = invoices
        .invoices
        .iter()
        .filter(|i| i.subscription == subscription.id)
        .collect();
    for item in subscription
        .items
        .data
        .iter()
        .filter(|i| i.on_meter(meter_id))
    {
        let last_end = match item.current_period_end <= now {
            true => item.current_period_end,
            false => item.current_period_start,
        };
        let invoiced = held
            .iter()
            .flat_map(|i| &i.lines)
            .any(|l| l.price == item.price.id && l.end == last_end);
        if !invoiced {
            return Err(format!(
                "the invoices listing holds no invoice of {} for the period ending at {}",
                item.id,
                time::format(last_end)
            ));
        }
    }
    Ok(Some(held.into_iter().map(invoice).collect()))
}

fn invoice(listed: &ListedInvoice) -> Invoice {
    Invoice {
        id: listed.id.clone(),
        customer: Some(listed.customer.clone()),
        subscription: Some(listed.subscription.clone()),
        status: listed.status.clone(),
        automatically_finalizes_at: listed.automatically_finalizes_at,
        lines: List {
            data: listed
                .lines
                .iter()
                .map(|l| Line {
                    period: LinePeriod {
                        start: l.start,
                        end: l.end,
                    },
                    quantity: l.quantity,
                    pricing: Some(Pricing {
                        price_details: Some(PriceDetails {
                            price: l.price.clone(),
                        }),
                    }),
                })
                .collect(),
            has_more: false,
        },
    }
}

fn subscription(listed: &ListedSubscription) -> Subscription {
    Subscription {
        id: listed.id.clone(),
        customer: Some(listed.customer.clone()),
        ended_at: listed.ended_at,
        items: List {
            data: listed
                .items
                .iter()
                .map(|i| Item {
                    id: i.id.clone(),
                    current_period_start: i.current_period_start,
                    current_period_end: i.current_period_end,
                    price: Price {
                        id: i.price.clone(),
                        recurring: Some(Recurring {
                            meter: Some(i.meter.clone()),
                        }),
                    },
                })
                .collect(),
            has_more: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::usage_sync::workflow::workflow::ListedInvoices;

    const NOW: i64 = 1_790_000_000;
    const D: i64 = 86_400;

    fn listing(at: i64, subs: Vec<ListedSubscription>) -> Listing {
        Listing {
            listed_at: at,
            subscriptions: subs,
            invoices: None,
        }
    }

    fn sub(customer: &str, end: i64, ended_at: Option<i64>) -> ListedSubscription {
        ListedSubscription {
            id: "sub_1".into(),
            customer: customer.into(),
            ended_at,
            items: vec![ListedItem {
                id: "si_1".into(),
                price: "price_1".into(),
                meter: "mtr_1".into(),
                current_period_start: end - 30 * D,
                current_period_end: end,
            }],
        }
    }

    #[test]
    fn a_young_listing_serves_the_customer_it_was_given_for() {
        let l = listing(NOW - 60, vec![sub("cus_1", NOW + 10 * D, None)]);
        let subs = trusted(&l, "mtr_1", "cus_1", NOW).unwrap();
        assert_eq!(subs.len(), 1);
        assert!(subs[0].items.data[0].on_meter("mtr_1"));
        assert_eq!(subs[0].items.data[0].current_period_end, NOW + 10 * D);
    }

    #[test]
    fn an_old_listing_or_one_from_the_future_does_not_serve() {
        let s = || vec![sub("cus_1", NOW + 10 * D, None)];
        assert!(trusted(&listing(NOW - MAX_AGE, s()), "mtr_1", "cus_1", NOW).is_ok());
        let old = trusted(&listing(NOW - MAX_AGE - 1, s()), "mtr_1", "cus_1", NOW);
        assert!(old.unwrap_err().contains("601 s before"));
        assert!(trusted(&listing(NOW + 5, s()), "mtr_1", "cus_1", NOW).is_err());
    }

    #[test]
    fn a_period_ending_within_the_finalization_margin_sends_the_run_to_its_own_read() {
        let soon = listing(
            NOW - 60,
            vec![sub("cus_1", NOW + FINALIZATION_MARGIN, None)],
        );
        let why = trusted(&soon, "mtr_1", "cus_1", NOW).unwrap_err();
        assert!(why.contains("the period of si_1 ends at"), "{why}");
        // Already past its end (renewal pending at Stripe): the same.
        let past = listing(NOW - 60, vec![sub("cus_1", NOW - 10, None)]);
        assert!(trusted(&past, "mtr_1", "cus_1", NOW).is_err());
        // A second later than the margin: served.
        let later = listing(
            NOW - 60,
            vec![sub("cus_1", NOW + FINALIZATION_MARGIN + 1, None)],
        );
        assert!(trusted(&later, "mtr_1", "cus_1", NOW).is_ok());
        // On another meter: not this ledger's period.
        assert!(trusted(&soon, "mtr_2", "cus_1", NOW).is_ok());
    }

    #[test]
    fn an_ended_subscription_does_not_change_and_serves() {
        let ended = listing(NOW - 60, vec![sub("cus_1", NOW - 5 * D, Some(NOW - 5 * D))]);
        assert!(trusted(&ended, "mtr_1", "cus_1", NOW).is_ok());
    }

    #[test]
    fn a_customer_absent_or_another_customers_subscription_does_not_serve() {
        assert!(trusted(&listing(NOW, vec![]), "mtr_1", "cus_1", NOW).is_err());
        let other = listing(NOW, vec![sub("cus_2", NOW + 10 * D, None)]);
        assert!(trusted(&other, "mtr_1", "cus_1", NOW).is_err());
    }

    /// A listing of invoices from `from`, at `at`, for `sub_1`: one invoice
    /// a period ending at each of `ends`.
    fn with_invoices(at: i64, from: i64, ends: &[i64]) -> Listing {
        let invoices = ends
            .iter()
            .map(|&end| ListedInvoice {
                id: format!("in_{end}"),
                customer: "cus_1".into(),
                subscription: "sub_1".into(),
                status: Some("paid".into()),
                automatically_finalizes_at: None,
                lines: vec![ListedLine {
                    start: end - 30 * D,
                    end,
                    price: "price_1".into(),
                    quantity: Some(3),
                }],
            })
            .collect();
        Listing {
            invoices: Some(ListedInvoices {
                listed_at: at,
                created_from: from,
                invoices,
            }),
            ..listing(at, vec![sub("cus_1", NOW + 10 * D, None)])
        }
    }

    /// `sub_1` as read: its item's period ends at `end`.
    fn read_sub(end: i64, ended: bool) -> Subscription {
        let l = listing(NOW, vec![sub("cus_1", end, ended.then_some(end))]);
        subscription(&l.subscriptions[0])
    }

    const WINDOW: i64 = NOW - 30 * D;

    #[test]
    fn listed_invoices_serve_when_they_hold_the_last_renewals_invoice() {
        let renewal = NOW - 20 * D;
        let l = with_invoices(NOW - 60, WINDOW - INVOICES_REACH, &[renewal]);
        let held = trusted_invoices(&l, &read_sub(renewal + 30 * D, false), "mtr_1", WINDOW, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].id, format!("in_{renewal}"));
        assert_eq!(held[0].lines.data[0].price(), Some("price_1"));
        assert_eq!(held[0].lines.data[0].period.end, renewal);
        assert_eq!(held[0].lines.data[0].quantity, Some(3));
        // Another meter's items are not this ledger's to check.
        let no_item = read_sub(NOW + 5 * D, false);
        assert!(trusted_invoices(&l, &no_item, "mtr_2", WINDOW, NOW).is_ok());
    }

    #[test]
    fn no_listing_of_invoices_means_the_runs_own_read_without_a_word() {
        let l = listing(NOW - 60, vec![sub("cus_1", NOW + 10 * D, None)]);
        let read = read_sub(NOW + 10 * D, false);
        assert!(
            trusted_invoices(&l, &read, "mtr_1", WINDOW, NOW)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn listed_invoices_missing_the_last_renewals_invoice_do_not_serve() {
        let renewal = NOW - 20 * D;
        // Renewed since the listing (or Stripe left the invoice out).
        let l = with_invoices(NOW - 60, WINDOW - INVOICES_REACH, &[renewal - 30 * D]);
        let why = trusted_invoices(&l, &read_sub(renewal + 30 * D, false), "mtr_1", WINDOW, NOW)
            .unwrap_err();
        assert!(why.contains("holds no invoice of si_1"), "{why}");
        // An ended subscription needs its last period's invoice.
        let ended = read_sub(NOW - 2 * D, true);
        let l = with_invoices(NOW - 60, WINDOW - INVOICES_REACH, &[NOW - 32 * D]);
        assert!(trusted_invoices(&l, &ended, "mtr_1", WINDOW, NOW).is_err());
        let l = with_invoices(NOW - 60, WINDOW - INVOICES_REACH, &[NOW - 2 * D]);
        assert!(trusted_invoices(&l, &ended, "mtr_1", WINDOW, NOW).is_ok());
    }

    #[test]
    fn listed_invoices_too_old_or_not_reaching_a_day_before_the_window_do_not_serve() {
        let renewal = NOW - 20 * D;
        let read = read_sub(renewal + 30 * D, false);
        let reach = WINDOW - INVOICES_REACH;
        let old = with_invoices(NOW - MAX_AGE - 1, reach, &[renewal]);
        assert!(trusted_invoices(&old, &read, "mtr_1", WINDOW, NOW).is_err());
        let short = with_invoices(NOW - 60, reach + 1, &[renewal]);
        let why = trusted_invoices(&short, &read, "mtr_1", WINDOW, NOW).unwrap_err();
        assert!(why.contains("less than a day before the window"), "{why}");
    }
}
