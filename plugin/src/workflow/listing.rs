//! One listing of the account's subscriptions per sync, in place of one read
//! per customer, and when a run may trust what it holds for its customer
//! (README, "One listing per sync").

use super::calls::read;
use super::failure::step_failed;
use crate::billing::{self, FINALIZATION_MARGIN, Item, List, Price, Recurring, Subscription};
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, ListedItem, ListedSubscription, Listing, Step, SubscriptionPage, WorkflowError,
};
use crate::inputs::Window;
use crate::{retry, time};

/// How long a listing may stand in for a customer's own read: about what
/// Stripe takes to process a meter event once written, the staleness a read
/// just before a write already has.
pub const MAX_AGE: i64 = 10 * 60;

/// One page of the account's subscriptions (every status), each kept only
/// with its items on `meter_ids`, and only if it has one.
pub fn page(
    endpoints: &Endpoints,
    retry: &retry::Policy,
    meter_ids: &[String],
    after: Option<&str>,
) -> Result<SubscriptionPage, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let step = Step::ReadSubscriptions;
    let no_window = Window { start: 0, end: 0 };
    let url = billing::account_subscriptions_url(base, after);
    let (reply, attempts) = read(&url, step, no_window, retry, None)?;
    let bad_answer =
        |m: String| step_failed(step, no_window, Some(200), m, reply.request_id(), attempts);
    let page = billing::parse_subscriptions(&reply.body).map_err(bad_answer)?;
    let next = match (page.has_more, page.data.last()) {
        (false, _) => None,
        (true, Some(last)) => Some(last.id.clone()),
        (true, None) => {
            return Err(bad_answer(
                "Stripe said more follow, but the page was empty".into(),
            ));
        }
    };
    let mut subscriptions = Vec::new();
    for sub in page.data {
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
            return Err(bad_answer(format!(
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

    const NOW: i64 = 1_790_000_000;
    const D: i64 = 86_400;

    fn listing(at: i64, subs: Vec<ListedSubscription>) -> Listing {
        Listing {
            listed_at: at,
            subscriptions: subs,
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
}
