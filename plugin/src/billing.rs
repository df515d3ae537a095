//! What bills a meter's usage: the subscription items priced on the meter,
//! their billing periods, and each ended period's invoice (`specs/README.md`,
//! "Billing periods and invoices"). A meter event bills on the invoice of the
//! period its `timestamp` falls in; once that invoice is final, an event
//! stamped there is accepted and billed on no invoice.

use crate::prelude::*;

use crate::form;
use crate::inputs::Window;
use crate::time;
use usage_sync_report::json::{self, Object};

/// Where subscriptions are listed.
pub const SUBSCRIPTIONS_PATH: &str = "/v1/subscriptions";
/// Where invoices are listed.
pub const INVOICES_PATH: &str = "/v1/invoices";
/// A draft that finalizes within this many seconds counts as final: Stripe
/// processes meter events asynchronously (minutes, by third parties'
/// reports), and one processed after finalization is billed nowhere.
pub const FINALIZATION_MARGIN: i64 = 15 * 60;

/// `GET /v1/subscriptions` of `customer`, every status, one page.
pub fn subscriptions_url(stripe_url: &str, customer: &str, starting_after: Option<&str>) -> String {
    let mut query = vec![("customer", customer), ("status", "all"), ("limit", "100")];
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!("{stripe_url}{SUBSCRIPTIONS_PATH}?{}", form::encode(&query))
}

/// `GET /v1/subscriptions` of the whole account, every status, one page.
/// Stripe leaves out subscriptions on a test clock unless `customer` or
/// `test_clock` is given (`specs/README.md`, "One listing per sync").
pub fn account_subscriptions_url(stripe_url: &str, starting_after: Option<&str>) -> String {
    let mut query = vec![("status", "all"), ("limit", "100")];
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!("{stripe_url}{SUBSCRIPTIONS_PATH}?{}", form::encode(&query))
}

/// `GET /v1/invoices` of `customer`'s `subscription`, newest first, one page.
pub fn invoices_url(
    stripe_url: &str,
    customer: &str,
    subscription: &str,
    starting_after: Option<&str>,
) -> String {
    let mut query = vec![
        ("customer", customer),
        ("subscription", subscription),
        ("limit", "100"),
    ];
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!("{stripe_url}{INVOICES_PATH}?{}", form::encode(&query))
}

/// `GET /v1/invoices` of the whole account created from `created_from` on,
/// newest first, one page.
pub fn account_invoices_url(
    stripe_url: &str,
    created_from: i64,
    starting_after: Option<&str>,
) -> String {
    let from = created_from.to_string();
    let mut query = vec![("created[gte]", from.as_str()), ("limit", "100")];
    query.extend(starting_after.map(|id| ("starting_after", id)));
    format!("{stripe_url}{INVOICES_PATH}?{}", form::encode(&query))
}

pub use crate::stripe::List;

/// The parts of a subscription the workflow reads.
#[derive(Debug)]
pub struct Subscription {
    /// `sub_...`
    pub id: String,
    /// `cus_...` (an account's listing groups by it).
    pub customer: Option<String>,
    /// When it ended, if it did: usage after is billed nowhere.
    pub ended_at: Option<i64>,
    /// Its items (a subscription holds at most 20: one page).
    pub items: List<Item>,
}

/// A subscription item: its price and its current period.
#[derive(Debug)]
pub struct Item {
    /// `si_...`
    pub id: String,
    /// `[current_period_start, current_period_end)`.
    pub current_period_start: i64,
    /// The end of the current period.
    pub current_period_end: i64,
    /// The price.
    pub price: Price,
}

impl Item {
    /// Whether its price bills the meter `meter_id`.
    pub fn on_meter(&self, meter_id: &str) -> bool {
        self.price
            .recurring
            .as_ref()
            .and_then(|r| r.meter.as_deref())
            == Some(meter_id)
    }
}

/// The parts of a price that tie it to a meter.
#[derive(Debug)]
pub struct Price {
    /// `price_...`
    pub id: String,
    /// Recurring prices only.
    pub recurring: Option<Recurring>,
}

/// A recurring price's meter, when usage-based.
#[derive(Debug)]
pub struct Recurring {
    /// The meter's id, for a metered price.
    pub meter: Option<String>,
}

/// The parts of an invoice the workflow reads.
#[derive(Debug)]
pub struct Invoice {
    /// `in_...`
    pub id: String,
    /// `cus_...` (an account's listing groups by it).
    pub customer: Option<String>,
    /// `parent.subscription_details.subscription`: the subscription it bills.
    pub subscription: Option<String>,
    /// `draft` until it finalizes; anything else is final.
    pub status: Option<String>,
    /// When a draft finalizes on its own.
    pub automatically_finalizes_at: Option<i64>,
    /// Its lines (the first page; a line of another price is skipped).
    pub lines: List<Line>,
}

/// An invoice line: its period and price.
#[derive(Debug)]
pub struct Line {
    /// The period it bills.
    pub period: LinePeriod,
    /// What it bills (whole units).
    pub quantity: Option<i64>,
    /// Its price, when priced.
    pub pricing: Option<Pricing>,
}

impl Line {
    /// The price the line bills, when it bills one.
    pub fn price(&self) -> Option<&str> {
        self.pricing
            .as_ref()
            .and_then(|p| p.price_details.as_ref())
            .map(|d| d.price.as_str())
    }
}

/// A line's period (Stripe documents both ends as inclusive).
#[derive(Debug)]
pub struct LinePeriod {
    /// Start.
    pub start: i64,
    /// End: the next period's start.
    pub end: i64,
}

/// A line's pricing.
#[derive(Debug)]
pub struct Pricing {
    /// The price, when the line bills one.
    pub price_details: Option<PriceDetails>,
}

/// The price of a line.
#[derive(Debug)]
pub struct PriceDetails {
    /// `price_...`
    pub price: String,
}

impl Subscription {
    fn read(o: Object) -> Result<Subscription, String> {
        Ok(Subscription {
            id: o.string("id")?,
            customer: o.opt_string("customer")?,
            ended_at: o.opt_integer("ended_at")?,
            items: List::read(o.required("items")?, Item::read)
                .map_err(|why| json::named("items", why))?,
        })
    }
}

impl Item {
    fn read(o: Object) -> Result<Item, String> {
        let price = o.object("price")?;
        let price = json::within("price", || {
            let recurring = price.opt_object("recurring")?;
            Ok(Price {
                id: price.string("id")?,
                recurring: match recurring {
                    Some(r) => Some(json::within("recurring", || {
                        Ok(Recurring {
                            meter: r.opt_string("meter")?,
                        })
                    })?),
                    None => None,
                },
            })
        })?;
        Ok(Item {
            id: o.string("id")?,
            current_period_start: o.integer("current_period_start")?,
            current_period_end: o.integer("current_period_end")?,
            price,
        })
    }
}

impl Invoice {
    fn read(o: Object) -> Result<Invoice, String> {
        let subscription = match o.opt_object("parent")? {
            None => None,
            Some(parent) => json::within("parent", || {
                match parent.opt_object("subscription_details")? {
                    None => Ok(None),
                    Some(d) => {
                        json::within("subscription_details", || d.opt_string("subscription"))
                    }
                }
            })?,
        };
        Ok(Invoice {
            id: o.string("id")?,
            customer: o.opt_string("customer")?,
            subscription,
            status: o.opt_string("status")?,
            automatically_finalizes_at: o.opt_integer("automatically_finalizes_at")?,
            lines: List::read(o.required("lines")?, Line::read)
                .map_err(|why| json::named("lines", why))?,
        })
    }
}

impl Line {
    fn read(o: Object) -> Result<Line, String> {
        let period = o.object("period")?;
        let period = json::within("period", || {
            Ok(LinePeriod {
                start: period.integer("start")?,
                end: period.integer("end")?,
            })
        })?;
        let pricing = match o.opt_object("pricing")? {
            None => None,
            Some(pricing) => Some(json::within("pricing", || {
                let price_details = match pricing.opt_object("price_details")? {
                    None => None,
                    Some(d) => Some(json::within("price_details", || {
                        Ok(PriceDetails {
                            price: d.string("price")?,
                        })
                    })?),
                };
                Ok(Pricing { price_details })
            })?),
        };
        Ok(Line {
            period,
            quantity: o.opt_integer("quantity")?,
            pricing,
        })
    }
}

/// Parses one page of `GET /v1/subscriptions`.
pub fn parse_subscriptions(body: &[u8]) -> Result<List<Subscription>, String> {
    crate::stripe::parse_body(body, "a list of subscriptions", |v| {
        List::read(v, Subscription::read)
    })
}

/// Parses one page of `GET /v1/invoices`.
pub fn parse_invoices(body: &[u8]) -> Result<List<Invoice>, String> {
    crate::stripe::parse_body(body, "a list of invoices", |v| List::read(v, Invoice::read))
}

/// A billing period of an item on the meter, `[start, end)`, and its
/// invoice once the period has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Start.
    pub start: i64,
    /// End (exclusive; the next period's start).
    pub end: i64,
    /// The invoice billing it (`None`: the current period, not yet invoiced).
    pub invoice: Option<String>,
    /// The invoice's status (`open` for the current period).
    pub status: String,
    /// Whether an event stamped here now would be billed on no invoice.
    pub closed: bool,
}

/// What bills the meter for one Stripe customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Periods {
    /// Whether any subscription item is priced on the meter.
    pub subscribed: bool,
    /// The known periods, oldest first.
    pub periods: Vec<Period>,
    /// Usage from here on is billed nowhere (the subscription ended).
    pub ended_at: Option<i64>,
}

/// Where an event stamped at some instant is billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Billed {
    /// On a period's invoice that is still open.
    Open,
    /// No subscription item on the meter covers it: Stripe takes it, and a
    /// subscription created or backdated later may bill it.
    NotYet,
    /// On no invoice: the period's invoice is final (or will be before Stripe
    /// processes the event), or the subscription ended.
    Nowhere(Period),
}

impl Periods {
    /// The period boundaries strictly inside `window`: where its intervals
    /// must be cut so each piece is stamped in its own period.
    pub fn boundaries(&self, window: Window) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .periods
            .iter()
            .flat_map(|p| [p.start, p.end])
            .chain(self.ended_at)
            .filter(|&t| window.start < t && t < window.end)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Where an event stamped at `t` is billed: by the period holding it
    /// (of any subscription: a customer may have subscribed again), else
    /// nowhere after a subscription ended, else not yet.
    pub fn billed_at(&self, t: i64) -> Billed {
        match self.periods.iter().find(|p| p.start <= t && t < p.end) {
            Some(p) if p.closed => Billed::Nowhere(p.clone()),
            Some(_) => Billed::Open,
            None => match self.ended_at {
                Some(end) if t >= end => Billed::Nowhere(Period {
                    start: end,
                    end: i64::MAX,
                    invoice: None,
                    status: "ended".into(),
                    closed: true,
                }),
                _ => Billed::NotYet,
            },
        }
    }
}

/// Builds the periods of the items priced on `meter_id` from the customer's
/// subscriptions, and, for the periods before each item's current one, from
/// its invoices' lines (`invoices(subscription)` gives them, only when the
/// window reaches before the current period).
pub fn periods(
    subscriptions: &[Subscription],
    meter_id: &str,
    window: Window,
    now: i64,
    mut invoices: impl FnMut(&Subscription) -> Result<Vec<Invoice>, String>,
) -> Result<Periods, String> {
    let mut out = Periods::default();
    for sub in subscriptions {
        let items: Vec<&Item> = sub
            .items
            .data
            .iter()
            .filter(|i| {
                i.price.recurring.as_ref().and_then(|r| r.meter.as_deref()) == Some(meter_id)
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        out.subscribed = true;
        if let Some(end) = sub.ended_at {
            out.ended_at = Some(out.ended_at.map_or(end, |e: i64| e.min(end)));
        }
        // A current period that has ended (the subscription ended with it)
        // is billed by its invoice like any past one.
        let mut ended = Vec::new();
        for item in &items {
            if item.current_period_end <= item.current_period_start {
                return Err(format!(
                    "Stripe's subscription item {} has a period that ends before it starts",
                    item.id
                ));
            }
            match item.current_period_end <= now {
                true => ended.push((item.current_period_start, item.current_period_end)),
                false => out.periods.push(Period {
                    start: item.current_period_start,
                    end: item.current_period_end,
                    invoice: None,
                    status: "open".into(),
                    closed: false,
                }),
            }
        }
        let earliest = items
            .iter()
            .map(|i| i.current_period_start)
            .min()
            .unwrap_or(i64::MAX);
        if window.start >= earliest && ended.is_empty() {
            continue;
        }
        let known = out.periods.len();
        for invoice in invoices(sub)? {
            let status = invoice.status.clone().unwrap_or_default();
            let closed = status != "draft"
                || invoice
                    .automatically_finalizes_at
                    .is_some_and(|at| at <= now + FINALIZATION_MARGIN);
            for line in &invoice.lines.data {
                if !items
                    .iter()
                    .any(|i| Some(i.price.id.as_str()) == line.price())
                {
                    continue;
                }
                if line.period.end <= line.period.start {
                    continue;
                }
                out.periods.push(Period {
                    start: line.period.start,
                    end: line.period.end,
                    invoice: Some(invoice.id.clone()),
                    status: status.clone(),
                    closed,
                });
            }
        }
        // An ended period no invoice line shows yet: nothing can be said to
        // bill it, so nothing is stamped there (a rerun sees the invoice).
        for (start, end) in ended {
            let invoiced = out.periods[known..]
                .iter()
                .any(|p| p.start <= start && end <= p.end);
            if !invoiced {
                out.periods.push(Period {
                    start,
                    end,
                    invoice: None,
                    status: "no-invoice-yet".into(),
                    closed: true,
                });
            }
        }
    }
    crate::order::sort_by_times(&mut out.periods, |p| (p.start, p.end));
    Ok(out)
}

/// A period for messages: `2026-11-01T15:00:00Z to 2026-12-01T15:00:00Z`.
pub fn describe(period: &Period) -> String {
    match period.end {
        i64::MAX => format!(
            "after the subscription ended at {}",
            time::format(period.start)
        ),
        end => format!("{} to {}", time::format(period.start), time::format(end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 86_400;

    fn read<T>(value: serde_json::Value, read: fn(Object) -> Result<T, String>) -> T {
        let text = serde_json::to_vec(&value).unwrap();
        read(json::parse(&text).unwrap().object().unwrap()).unwrap()
    }

    fn subscription(start: i64, end: i64, meter: &str) -> Subscription {
        read(
            serde_json::json!({
                "id": "sub_1",
                "ended_at": null,
                "items": { "object": "list", "has_more": false, "data": [{
                    "id": "si_1",
                    "current_period_start": start,
                    "current_period_end": end,
                    "price": { "id": "price_1", "recurring": { "meter": meter } },
                }]},
            }),
            Subscription::read,
        )
    }

    fn invoice(status: &str, finalizes: Option<i64>, start: i64, end: i64) -> Invoice {
        read(
            serde_json::json!({
                "id": "in_1",
                "status": status,
                "automatically_finalizes_at": finalizes,
                "lines": { "object": "list", "has_more": false, "data": [{
                    "period": { "start": start, "end": end },
                    "pricing": { "price_details": { "price": "price_1" } },
                }]},
            }),
            Invoice::read,
        )
    }

    #[test]
    fn a_day_holding_a_renewal_is_cut_there_and_the_final_period_bills_nowhere() {
        let anchor = 10 * D + 15 * 3600;
        let subs = [subscription(anchor, anchor + 30 * D, "mtr_1")];
        let day = Window {
            start: 10 * D,
            end: 11 * D,
        };
        let now = 11 * D + 3600;
        let periods = periods(&subs, "mtr_1", day, now, |_| {
            Ok(vec![invoice("open", None, anchor - 30 * D, anchor)])
        })
        .unwrap();
        assert_eq!(periods.boundaries(day), vec![anchor]);
        assert!(matches!(periods.billed_at(anchor - 1), Billed::Nowhere(_)));
        assert_eq!(periods.billed_at(anchor), Billed::Open);
        // A draft is open, unless it finalizes within the margin.
        for (finalizes, open) in [(now + 3600, true), (now + 60, false)] {
            let periods = super::periods(&subs, "mtr_1", day, now, |_| {
                Ok(vec![invoice(
                    "draft",
                    Some(finalizes),
                    anchor - 30 * D,
                    anchor,
                )])
            })
            .unwrap();
            assert_eq!(periods.billed_at(anchor - 1) == Billed::Open, open);
        }
        // A $0 invoice finalizes as paid: final all the same.
        let periods = super::periods(&subs, "mtr_1", day, now, |_| {
            Ok(vec![invoice("paid", None, anchor - 30 * D, anchor)])
        })
        .unwrap();
        assert!(matches!(periods.billed_at(anchor - 1), Billed::Nowhere(_)));
    }

    #[test]
    fn invoices_are_read_only_when_the_window_reaches_before_the_current_period() {
        let subs = [subscription(5 * D, 35 * D, "mtr_1")];
        let window = Window {
            start: 10 * D,
            end: 11 * D,
        };
        let periods = periods(&subs, "mtr_1", window, 11 * D, |_| {
            panic!("no invoice read for a window inside the current period")
        })
        .unwrap();
        assert!(periods.boundaries(window).is_empty());
        assert_eq!(periods.billed_at(10 * D), Billed::Open);
    }

    #[test]
    fn an_ended_subscription_bills_nothing_after_it_and_a_new_one_bills_its_period() {
        let mut ended = subscription(5 * D, 35 * D, "mtr_1");
        ended.ended_at = Some(35 * D);
        let window = Window {
            start: 34 * D,
            end: 40 * D,
        };
        let now = 41 * D;
        // The last period's invoice is still a draft, finalizing in a day.
        let periods = periods(core::slice::from_ref(&ended), "mtr_1", window, now, |_| {
            Ok(vec![invoice("draft", Some(42 * D), 5 * D, 35 * D)])
        })
        .unwrap();
        assert_eq!(periods.billed_at(35 * D - 1), Billed::Open);
        assert!(matches!(periods.billed_at(36 * D), Billed::Nowhere(_)));
        assert_eq!(periods.boundaries(window), vec![35 * D]);
        // No invoice yet for the ended period: nothing is stamped there.
        let periods = super::periods(core::slice::from_ref(&ended), "mtr_1", window, now, |_| {
            Ok(Vec::new())
        })
        .unwrap();
        assert!(matches!(periods.billed_at(35 * D - 1), Billed::Nowhere(_)));
        // Subscribed again on day 38: its period bills from there.
        let again = subscription(38 * D, 68 * D, "mtr_1");
        let both = [ended, again];
        let periods = super::periods(&both, "mtr_1", window, now, |_| {
            Ok(vec![invoice("open", None, 5 * D, 35 * D)])
        })
        .unwrap();
        assert!(matches!(periods.billed_at(37 * D), Billed::Nowhere(_)));
        assert_eq!(periods.billed_at(39 * D), Billed::Open);
    }

    #[test]
    fn a_customer_without_an_item_on_the_meter_is_billed_not_yet() {
        let subs = [subscription(5 * D, 35 * D, "mtr_other")];
        let window = Window {
            start: D,
            end: 2 * D,
        };
        let periods = periods(&subs, "mtr_1", window, 3 * D, |_| Ok(Vec::new())).unwrap();
        assert!(!periods.subscribed);
        assert_eq!(periods.billed_at(D), Billed::NotYet);
    }
}
