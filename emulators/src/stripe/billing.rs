//! Subscriptions and their invoices, as far as usage-based billing needs
//! them (`specs/README.md`, "Billing periods and invoices"): a subscription
//! item priced on a meter, with its current period on the item (API version
//! basil and later); and an invoice per ended period, a draft until the
//! period's end plus the grace period, frozen after. The invoice's metered
//! line bills what the meter counted for events stamped in the period and
//! processed before it finalized: what comes later is billed on no invoice.
//!
//! Periods here are a fixed number of seconds from the anchor (the emulator's
//! assumption; Stripe's are calendar months or other intervals), which is all
//! the anchor-to-the-second facts need.

use super::errors::invalid;
use super::pagination::page_of;
use super::{State, summaries};
use crate::server::Reply;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Where subscriptions are listed.
pub(super) const SUBSCRIPTIONS: &str = "/v1/subscriptions";
/// Where invoices are listed.
pub(super) const INVOICES: &str = "/v1/invoices";
/// Stripe's default invoice finalization grace period for usage: one hour.
pub const DEFAULT_GRACE: i64 = 3600;

/// A subscription to create in the emulator: one item, metered on the
/// meter of `event_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The Stripe customer.
    pub customer: String,
    /// The event name of the meter its price bills.
    pub event_name: String,
    /// `billing_cycle_anchor`: the second it started, and renews at.
    pub anchor: i64,
    /// The period's length, in seconds.
    pub period: i64,
    /// When it ended (canceled at a period's end), if it did.
    pub ended_at: Option<i64>,
}

/// A subscription the emulator holds.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub id: String,
    pub item: String,
    pub price: String,
    pub meter: String,
    pub spec: SubscriptionSpec,
}

/// One invoice of a subscription's ended period, as the emulator sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    /// `in_...`, stable for the subscription and period.
    pub id: String,
    /// The Stripe customer.
    pub customer: String,
    /// `draft`, then `open` (or `paid` when it bills nothing).
    pub status: String,
    /// The metered line's period, `[start, end)`.
    pub period_start: i64,
    /// The period's end: the next period's start.
    pub period_end: i64,
    /// What the metered line bills (final once the invoice is).
    pub quantity: f64,
    /// When it finalizes (or finalized): the period's end plus the grace period.
    pub finalizes_at: i64,
}

impl Subscription {
    /// The period `k` (0 is the first): `[start, end)`.
    fn period(&self, k: i64) -> (i64, i64) {
        let start = self.spec.anchor + k * self.spec.period;
        (start, start + self.spec.period)
    }

    /// The index of the period holding `t` (clamped to the last one of an
    /// ended subscription).
    fn period_at(&self, t: i64) -> i64 {
        let t = match self.spec.ended_at {
            Some(end) => t.min(end - 1),
            None => t,
        };
        (t - self.spec.anchor).div_euclid(self.spec.period).max(0)
    }

    /// The periods that ended by `now`, oldest first.
    fn ended_periods(&self, now: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut k = 0;
        loop {
            let (start, end) = self.period(k);
            let over = self.spec.ended_at.is_some_and(|e| start >= e);
            if end > now || over {
                return out;
            }
            out.push((start, end));
            k += 1;
        }
    }

    fn status(&self, now: i64) -> &'static str {
        match self.spec.ended_at {
            Some(end) if now >= end => "canceled",
            _ => "active",
        }
    }

    fn to_json(&self, now: i64) -> Value {
        let (start, end) = self.period(self.period_at(now));
        json!({
            "id": self.id,
            "object": "subscription",
            "customer": self.spec.customer,
            "status": self.status(now),
            "billing_cycle_anchor": self.spec.anchor,
            "created": self.spec.anchor,
            "start_date": self.spec.anchor,
            "ended_at": self.spec.ended_at.filter(|&e| now >= e),
            "items": {
                "object": "list",
                "data": [{
                    "id": self.item,
                    "object": "subscription_item",
                    "subscription": self.id,
                    "current_period_start": start,
                    "current_period_end": end,
                    "quantity": null,
                    "price": {
                        "id": self.price,
                        "object": "price",
                        "type": "recurring",
                        "recurring": {
                            "interval": "day",
                            "interval_count": self.spec.period / 86_400,
                            "meter": self.meter,
                            "usage_type": "metered",
                        },
                    },
                }],
                "has_more": false,
                "url": format!("/v1/subscription_items?subscription={}", self.id),
            },
        })
    }
}

impl State {
    /// Creates a subscription; returns its id.
    pub(super) fn add_subscription(&mut self, spec: SubscriptionSpec) -> String {
        let meter = self
            .meter_of(&spec.event_name)
            .map_or_else(|| "mtr_missing".to_string(), |m| m.id.clone());
        let subscription = Subscription {
            id: self.random("sub_", 14),
            item: self.random("si_", 14),
            price: self.random("price_", 14),
            meter,
            spec,
        };
        let id = subscription.id.clone();
        self.subscriptions.push(subscription);
        id
    }

    /// Every invoice of `customer`'s subscriptions, newest first.
    pub(super) fn invoices(&self, customer: &str) -> Vec<(Invoice, &Subscription)> {
        let now = self.now();
        let mut out = Vec::new();
        for sub in self
            .subscriptions
            .iter()
            .filter(|s| s.spec.customer == customer)
        {
            for (k, (start, end)) in sub.ended_periods(now).into_iter().enumerate() {
                let finalizes_at = end + self.grace;
                let draft = now < finalizes_at;
                // A draft counts what is processed now; a final invoice what
                // was processed when it finalized, and never changes again.
                let processed_by = match draft {
                    true => now - self.processing_lag,
                    false => finalizes_at - self.processing_lag,
                };
                let quantity = self
                    .meters
                    .iter()
                    .find(|m| m.id == sub.meter)
                    .map_or(0.0, |meter| {
                        summaries::aggregate(self, meter, customer, start, end, processed_by)
                    });
                let status = match (draft, quantity == 0.0) {
                    (true, _) => "draft",
                    (false, true) => "paid",
                    (false, false) => "open",
                };
                out.push((
                    Invoice {
                        id: format!("in_{}{k:04}", &sub.id[4..]),
                        customer: customer.into(),
                        status: status.into(),
                        period_start: start,
                        period_end: end,
                        quantity,
                        finalizes_at,
                    },
                    sub,
                ));
            }
        }
        out.sort_by_key(|(i, _)| std::cmp::Reverse((i.period_end, i.id.clone())));
        out
    }
}

fn invoice_json(invoice: &Invoice, sub: &Subscription) -> Value {
    let draft = invoice.status == "draft";
    json!({
        "id": invoice.id,
        "object": "invoice",
        "customer": invoice.customer,
        "status": invoice.status,
        // Created when its period ends (renewal invoices are created at the
        // new period's start).
        "created": invoice.period_end,
        "billing_reason": "subscription_cycle",
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "automatically_finalizes_at": if draft { Some(invoice.finalizes_at) } else { None },
        "status_transitions": {
            "finalized_at": if draft { None } else { Some(invoice.finalizes_at) },
        },
        "parent": {
            "type": "subscription_details",
            "subscription_details": { "subscription": sub.id },
        },
        "lines": {
            "object": "list",
            "data": [{
                "id": format!("il_{}", &invoice.id[3..]),
                "object": "line_item",
                // Stripe's line periods are inclusive at both ends.
                "period": { "start": invoice.period_start, "end": invoice.period_end },
                "quantity": invoice.quantity as i64,
                "pricing": { "type": "price_details", "price_details": { "price": sub.price } },
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": { "subscription_item": sub.item },
                },
            }],
            "has_more": false,
            "url": format!("/v1/invoices/{}/lines", invoice.id),
        },
    })
}

/// `GET /v1/subscriptions`: `customer`, `status` (`all`; by default canceled
/// ones are left out), paged newest first.
pub(super) fn list_subscriptions(state: &State, params: &BTreeMap<String, String>) -> Reply {
    if let Some(key) = params.keys().find(|k| {
        !matches!(
            k.as_str(),
            "customer" | "status" | "limit" | "starting_after" | "price"
        )
    }) {
        return invalid(key, &format!("Received unknown parameter: {key}"));
    }
    let now = state.now();
    let status = params.get("status").map(String::as_str);
    if let Some(s) = status
        && !matches!(
            s,
            "all" | "active" | "canceled" | "ended" | "incomplete" | "past_due" | "trialing"
        )
    {
        return invalid("status", &format!("Invalid status: {s}"));
    }
    let items: Vec<(String, &Subscription)> = state
        .subscriptions
        .iter()
        .rev()
        .filter(|s| match params.get("customer") {
            Some(c) => *c == s.spec.customer,
            // Stripe: "The response will not include subscriptions with test
            // clocks if this and the customer parameter is not set."
            None => !state.test_clocks.contains(&s.spec.customer),
        })
        .filter(|s| params.get("price").is_none_or(|p| *p == s.price))
        .filter(|s| match status {
            Some("all") => true,
            None => s.status(now) != "canceled",
            Some(wanted) => s.status(now) == wanted,
        })
        .map(|s| (s.id.clone(), s))
        .collect();
    page_of(items, |s| s.to_json(now), params, SUBSCRIPTIONS)
}

/// `GET /v1/invoices`: `customer`, `subscription`, `status`, `created` (a
/// Unix time, or the range `created[gt]`, `[gte]`, `[lt]`, `[lte]`), paged
/// newest created first. Without `customer`, the whole account's; this
/// emulator leaves out the invoices of customers on a test clock there, as
/// a subscriptions listing does (Stripe does not say; usage-sync relies on
/// neither).
pub(super) fn list_invoices(state: &State, params: &BTreeMap<String, String>) -> Reply {
    if let Some(key) = params.keys().find(|k| {
        !matches!(
            k.as_str(),
            "customer"
                | "subscription"
                | "status"
                | "limit"
                | "starting_after"
                | "created"
                | "created[gt]"
                | "created[gte]"
                | "created[lt]"
                | "created[lte]"
        )
    }) {
        return invalid(key, &format!("Received unknown parameter: {key}"));
    }
    let mut bounds = Vec::new();
    for (key, value) in params.iter().filter(|(k, _)| k.starts_with("created")) {
        let Ok(t) = value.parse::<i64>() else {
            return invalid(key, &format!("Invalid integer: {value}"));
        };
        bounds.push((key.as_str(), t));
    }
    let created_in = |created: i64| {
        bounds.iter().all(|&(key, t)| match key {
            "created[gt]" => created > t,
            "created[gte]" => created >= t,
            "created[lt]" => created < t,
            "created[lte]" => created <= t,
            _ => created == t,
        })
    };
    let customers: Vec<String> = match params.get("customer") {
        Some(c) => vec![c.clone()],
        None => {
            let mut all: Vec<String> = state
                .subscriptions
                .iter()
                .map(|s| s.spec.customer.clone())
                .filter(|c| !state.test_clocks.contains(c))
                .collect();
            all.sort();
            all.dedup();
            all
        }
    };
    let mut items = Vec::new();
    for customer in &customers {
        for (invoice, sub) in state.invoices(customer) {
            if params.get("subscription").is_some_and(|s| *s != sub.id) {
                continue;
            }
            if params.get("status").is_some_and(|s| *s != invoice.status) {
                continue;
            }
            if !created_in(invoice.period_end) {
                continue;
            }
            items.push((invoice, sub));
        }
    }
    // Newest created first, across the account.
    items.sort_by(|(a, _), (b, _)| (b.period_end, &b.id).cmp(&(a.period_end, &a.id)));
    let items = items
        .into_iter()
        .map(|(invoice, sub)| (invoice.id.clone(), (invoice, sub)))
        .collect();
    page_of(items, |(i, s)| invoice_json(i, s), params, INVOICES)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{add_meter, event, get};
    use super::*;
    use crate::stripe::MeterSpec;

    const DAY: i64 = 86_400;

    #[test]
    fn an_invoice_is_a_draft_until_the_grace_ends_then_never_changes() {
        let mut state = State::new("sk_test_x");
        let meter = add_meter(&mut state, MeterSpec::sum("calls"));
        // Renews every 30 days at 15:00 UTC; the last renewal was 10 days ago.
        let today = crate::unix_now().div_euclid(DAY) * DAY;
        let anchor = today - 40 * DAY + 15 * 3600;
        state.add_subscription(SubscriptionSpec {
            customer: "cus_1".into(),
            event_name: "calls".into(),
            anchor,
            period: 30 * DAY,
            ended_at: None,
        });
        let renewal = anchor + 30 * DAY;
        let payload = "payload[stripe_customer_id]=cus_1&payload[value]=5";
        // Ten days ago, before and after the renewal; received just now.
        assert_eq!(event(&mut state, "a", "1", payload, renewal - 60), 200);
        assert_eq!(event(&mut state, "b", "2", payload, renewal + 60), 200);

        let (status, subs) = get(&mut state, "/v1/subscriptions?customer=cus_1&status=all");
        assert_eq!(status, 200);
        let item = &subs["data"][0]["items"]["data"][0];
        assert_eq!(item["current_period_start"], renewal);
        assert_eq!(item["current_period_end"], renewal + 30 * DAY);
        assert_eq!(item["price"]["recurring"]["meter"], meter.as_str());

        // The first period's invoice finalized ten days ago: the event stamped
        // in it arrived too late and is billed on no invoice.
        let (_, invoices) = get(&mut state, "/v1/invoices?customer=cus_1");
        let invoice = &invoices["data"][0];
        assert_eq!(invoice["status"], "paid");
        assert_eq!(invoice["lines"]["data"][0]["quantity"], 0);
        assert_eq!(invoice["lines"]["data"][0]["period"]["end"], renewal);
        assert!(invoice["automatically_finalizes_at"].is_null());

        // Twenty days on, the second period ended within the grace hour: a
        // draft that bills what is processed, with its finalization time.
        state.clock_offset += renewal + 30 * DAY + 120 - state.now();
        let (_, invoices) = get(&mut state, "/v1/invoices?customer=cus_1");
        let draft = &invoices["data"][0];
        assert_eq!(draft["status"], "draft");
        assert_eq!(draft["lines"]["data"][0]["quantity"], 5);
        assert_eq!(
            draft["automatically_finalizes_at"],
            renewal + 30 * DAY + DEFAULT_GRACE
        );
        // An hour later it is final, and an event stamped in its period
        // arriving now changes nothing.
        state.clock_offset += DEFAULT_GRACE;
        assert_eq!(event(&mut state, "c", "3", payload, renewal + 120), 200);
        let invoices = state.invoices("cus_1");
        assert_eq!(invoices[0].0.status, "open");
        assert_eq!(invoices[0].0.quantity, 5.0);
        let (status, _) = get(&mut state, "/v1/invoices?customer=cus_1&period=1");
        assert_eq!(status, 400, "no period filter on invoices");
    }

    #[test]
    fn an_account_listing_leaves_out_customers_on_a_test_clock() {
        let mut state = State::new("sk_test_x");
        add_meter(&mut state, MeterSpec::sum("calls"));
        for customer in ["cus_1", "cus_2"] {
            state.add_subscription(SubscriptionSpec {
                customer: customer.into(),
                event_name: "calls".into(),
                anchor: crate::unix_now() - DAY,
                period: 30 * DAY,
                ended_at: None,
            });
        }
        state.test_clocks.insert("cus_2".into());
        let customers = |state: &mut State, url: &str| -> Vec<String> {
            let (status, list) = get(state, url);
            assert_eq!(status, 200);
            let data = list["data"].as_array().unwrap();
            data.iter()
                .map(|s| s["customer"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            customers(&mut state, "/v1/subscriptions?status=all"),
            ["cus_1"]
        );
        assert_eq!(
            customers(&mut state, "/v1/subscriptions?customer=cus_2&status=all"),
            ["cus_2"]
        );
    }

    #[test]
    fn the_accounts_invoices_are_listed_newest_created_first_from_a_time_without_test_clocks() {
        let mut state = State::new("sk_test_x");
        add_meter(&mut state, MeterSpec::sum("calls"));
        let today = crate::unix_now().div_euclid(DAY) * DAY;
        // cus_1 renews every 10 days from 35 days ago, cus_2 from 32, cus_3
        // (on a test clock) from 31.
        for (customer, back) in [("cus_1", 35), ("cus_2", 32), ("cus_3", 31)] {
            state.add_subscription(SubscriptionSpec {
                customer: customer.into(),
                event_name: "calls".into(),
                anchor: today - back * DAY,
                period: 10 * DAY,
                ended_at: None,
            });
        }
        state.test_clocks.insert("cus_3".into());
        let from = today - 20 * DAY;
        let (status, page) = get(
            &mut state,
            &format!("/v1/invoices?created[gte]={from}&limit=2"),
        );
        assert_eq!(status, 200);
        let listed = |page: &Value| -> Vec<(String, i64)> {
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["customer"].as_str().unwrap().to_string(),
                        i["created"].as_i64().unwrap(),
                    )
                })
                .collect()
        };
        // Created since -20 days: -5 and -15 (cus_1), -2 and -12 (cus_2);
        // cus_3's -1 and -11 are on a test clock.
        assert_eq!(
            listed(&page),
            [
                ("cus_2".to_string(), today - 2 * DAY),
                ("cus_1".to_string(), today - 5 * DAY)
            ]
        );
        assert_eq!(page["has_more"], true);
        assert_eq!(
            page["data"][0]["parent"]["subscription_details"]["subscription"]
                .as_str()
                .unwrap()
                .len(),
            18
        );
        let last = page["data"][1]["id"].as_str().unwrap().to_string();
        let (_, rest) = get(
            &mut state,
            &format!("/v1/invoices?created[gte]={from}&limit=2&starting_after={last}"),
        );
        assert_eq!(
            listed(&rest),
            [
                ("cus_2".to_string(), today - 12 * DAY),
                ("cus_1".to_string(), today - 15 * DAY)
            ]
        );
        assert_eq!(rest["has_more"], false);
        // A customer's own listing still holds its test-clock invoices.
        let (_, own) = get(&mut state, "/v1/invoices?customer=cus_3");
        assert_eq!(own["data"].as_array().unwrap().len(), 3);
        let (status, _) = get(&mut state, "/v1/invoices?created[gte]=soon");
        assert_eq!(status, 400);
        let (status, _) = get(&mut state, "/v1/invoices?created[eq]=1");
        assert_eq!(status, 400);
    }
}
