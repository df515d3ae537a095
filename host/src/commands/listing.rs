//! One listing of the account's subscriptions for a whole `sync` (or
//! `reconcile --invoices`), so a row need not read its customer's (README,
//! "One listing per sync"): about one read per hundred customers instead of
//! one per customer. Beside it, one listing of the account's recent invoices,
//! so a row whose window reaches before its current period (a backfill, the
//! nightly true-up) need not read its subscription's.

use crate::bindings::{ListedInvoice, ListedInvoices, ListedSubscription, Listing, Meter};
use crate::sandbox::{RunConfig, Sandbox};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a sync lists again while it runs: half the 10 minutes a row
/// trusts a listing for (the component's `listing::MAX_AGE`), so a sync
/// longer than that keeps one (`USAGE_SYNC_LISTING_REFRESH_SECS` overrides).
const REFRESH: Duration = Duration::from_secs(5 * 60);

/// The most pages a listing reads (100 subscriptions each): what the host
/// then holds stays a few megabytes.
pub(crate) const MAX_PAGES: usize = 1_000;

/// The most subscription items a listing holds: 1,000 pages of subscriptions
/// with one item on the meter each. A subscription may hold 20 items, so an
/// answer past this (a provider that lies, or an account of many-item
/// subscriptions on one meter) ends the listing instead of filling memory.
pub(crate) const MAX_ITEMS: usize = 100_000;

/// How far back the account's invoices are listed: Stripe refuses meter
/// events older than 35 days, and a ledger's window reaches back to its
/// first UTC day's start; a run whose window starts earlier reads its own
/// (the component's `listing::INVOICES_REACH`).
pub(crate) const INVOICES_BACK: i64 = 37 * 86_400;

/// The pages a sync of `rows` rows may spend on the listing: a tenth of a
/// read per row, so an account with many more subscriptions than the mapping
/// has customers costs at most a tenth more than reading each customer's.
pub(crate) fn page_budget(rows: usize) -> usize {
    (rows / 10).min(MAX_PAGES)
}

/// Whether a listing of at least `rows / 100` pages, each taking about
/// `page`, one after another, ends sooner than the `rows` reads it saves take
/// at the pace of one every `read`. It saves requests because Stripe limits
/// them; where the pace does not (a raised `--stripe-rate`), each row's own
/// read, sent beside the others, is the quicker. `USAGE_SYNC_LISTING=always`
/// lists whatever the pace (the request-budget bench).
pub(crate) fn pays(rows: usize, page: Duration, read: Duration) -> bool {
    let pages = rows.div_ceil(100) as f64;
    let always = std::env::var("USAGE_SYNC_LISTING").is_ok_and(|v| v == "always");
    always || page.as_secs_f64() * pages <= read.as_secs_f64() * rows as f64
}

/// The sync's current listing, listed again every [`REFRESH`] while the
/// sync runs; none when the first listing was not made.
pub(crate) struct Listings {
    current: Arc<RwLock<Option<Arc<Listed>>>>,
    /// Whether the first listing has ended (made or not).
    first: watch::Receiver<bool>,
    /// The task listing (aborted when the sync's listings are dropped).
    task: JoinHandle<()>,
}

impl Listings {
    /// Starts listing in the background, and returns at once: the sync's
    /// Amberflo queries go out while the listing's pages are read (a round
    /// trip or more sooner to the first row), and each row waits for it in
    /// [`Listings::of`]. Lists again every [`REFRESH`] while the returned
    /// value lives. A later listing that fails or runs past the budget
    /// leaves the previous one, which the rows stop trusting once it is 10
    /// minutes old; when the first is not made, there is none.
    pub(crate) fn start(
        sandbox: Arc<Sandbox>,
        config: RunConfig,
        meters: HashMap<String, Arc<Meter>>,
        rows: usize,
    ) -> Arc<Listings> {
        let budget = page_budget(rows);
        let every = std::env::var("USAGE_SYNC_LISTING_REFRESH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(REFRESH, Duration::from_secs)
            .max(Duration::from_secs(1));
        let current: Arc<RwLock<Option<Arc<Listed>>>> = Arc::default();
        let (done, first) = watch::channel(false);
        let shared = Arc::clone(&current);
        let task = tokio::spawn(async move {
            let listed = Listed::list(&sandbox, &config, &meters, budget, Some(rows)).await;
            let made = listed.is_some();
            *shared.write().unwrap_or_else(|e| e.into_inner()) = listed.map(Arc::new);
            let _ = done.send(true);
            if !made {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                if let Some(next) = Listed::list(&sandbox, &config, &meters, budget, None).await {
                    *shared.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(next));
                }
            }
        });
        Arc::new(Listings {
            current,
            first,
            task,
        })
    }

    /// What the current listing holds for `customer` (see [`Listed::of`]),
    /// once the first listing has ended.
    pub(crate) async fn of(&self, customer: &str) -> Option<Listing> {
        // An error: the task ended without saying (it cannot panic by
        // design, and is aborted only on drop); there is then no listing.
        let _ = self.first.clone().wait_for(|ended| *ended).await;
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().and_then(|l| l.of(customer))
    }
}

impl Drop for Listings {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A complete listing of the account's subscriptions on the sync's meters,
/// by Stripe customer.
pub(crate) struct Listed {
    /// When its first page was asked for (Unix seconds).
    at: i64,
    by_customer: HashMap<String, Vec<ListedSubscription>>,
    /// The account's recent invoices, when they were listed too.
    invoices: Option<Invoices>,
}

/// A complete listing of the account's invoices created from a time on,
/// with their lines on the listed subscriptions' prices, by Stripe customer.
struct Invoices {
    /// When its first page was asked for (Unix seconds).
    at: i64,
    created_from: i64,
    by_customer: HashMap<String, Vec<ListedInvoice>>,
}

impl Listed {
    /// Lists the account's subscriptions on `meters`, page by page, each in a
    /// fresh instance, and beside them the account's recent invoices
    /// ([`Invoices::list`]): the two listings do not wait for each other.
    /// `None`: no listing (budget of zero pages, more pages than the budget,
    /// or a failed read); every row then reads its own, as it would without a
    /// listing, so nothing is lost but the saving. `Some(rows)`: a sync's
    /// first listing, given up after its first page when it would take
    /// longer than the reads of `rows` rows at the pace ([`pays`]).
    pub(crate) async fn list(
        sandbox: &Sandbox,
        config: &RunConfig,
        meters: &HashMap<String, Arc<Meter>>,
        budget: usize,
        first_for: Option<usize>,
    ) -> Option<Listed> {
        if budget == 0 || meters.is_empty() {
            return None;
        }
        let at = super::ledger::now();
        // The invoices listing starts once the subscriptions listing has a
        // page worth going on with, and keeps the lines on the listed
        // subscriptions' prices, told them once they are all listed.
        let (prices, known) = watch::channel(Prices::Unknown);
        let subscriptions = async {
            let by_customer =
                Self::subscriptions(sandbox, config, meters, budget, first_for, &prices).await?;
            let listed = by_customer
                .values()
                .flatten()
                .flat_map(|s| &s.items)
                .map(|i| i.price.clone())
                .collect();
            let _ = prices.send(Prices::Known(Arc::new(listed)));
            Some(by_customer)
        };
        let invoices = Invoices::list(sandbox, config, known, budget);
        tokio::pin!(subscriptions, invoices);
        let mut invoices_done = None;
        // A subscriptions listing given up ends the invoices one too (dropped).
        let by_customer = loop {
            tokio::select! {
                listed = &mut subscriptions => break listed?,
                listed = &mut invoices, if invoices_done.is_none() => invoices_done = Some(listed),
            }
        };
        let invoices = match invoices_done {
            Some(listed) => listed,
            None => invoices.await,
        };
        Some(Listed {
            at,
            by_customer,
            invoices,
        })
    }

    /// The subscriptions part of [`Listed::list`]; `prices` is told
    /// [`Prices::Coming`] once a page that is not the last held an item and
    /// the listing goes on.
    async fn subscriptions(
        sandbox: &Sandbox,
        config: &RunConfig,
        meters: &HashMap<String, Arc<Meter>>,
        budget: usize,
        first_for: Option<usize>,
        prices: &watch::Sender<Prices>,
    ) -> Option<HashMap<String, Vec<ListedSubscription>>> {
        let mut meter_ids: Vec<String> = meters.values().map(|m| m.id.clone()).collect();
        meter_ids.sort_unstable();
        let mut by_customer: HashMap<String, Vec<ListedSubscription>> = HashMap::new();
        let mut after = None;
        let mut items = 0;
        for pages in 1..=budget {
            let began = std::time::Instant::now();
            let page = match sandbox
                .list_subscriptions(config, &meter_ids, after.as_deref())
                .await
            {
                Ok(page) => page,
                Err(failure) => {
                    tracing::warn!(
                        "listing the account's subscriptions failed; each customer's are read on their own: {}",
                        config.credentials.redact(&failure.to_json().to_string())
                    );
                    return None;
                }
            };
            if !gather(&mut by_customer, &mut items, page.subscriptions, MAX_ITEMS) {
                tracing::info!(
                    "the account's subscriptions hold more than {MAX_ITEMS} items on the meters; each customer's are read on their own"
                );
                return None;
            }
            let read = config
                .stripe_pace
                .as_ref()
                .map_or(Duration::ZERO, |p| p.read_interval());
            if let (1, Some(rows), Some(_)) = (pages, first_for, &page.next)
                && !pays(rows, began.elapsed(), read)
            {
                tracing::info!(
                    "the account's subscriptions take a page ({} ms) per 100 rows, longer than their reads take at the pace ({} ms a read); each customer's are read on their own",
                    began.elapsed().as_millis(),
                    read.as_millis()
                );
                return None;
            }
            match page.next {
                None => {
                    tracing::info!(
                        "listed the account's subscriptions on {} meter(s) in {pages} page(s): {} customer(s)",
                        meter_ids.len(),
                        by_customer.len()
                    );
                    return Some(by_customer);
                }
                Some(next) => {
                    if items > 0 && pages < budget {
                        prices.send_if_modified(|p| match p {
                            Prices::Unknown => {
                                *p = Prices::Coming;
                                true
                            }
                            _ => false,
                        });
                    }
                    after = Some(next)
                }
            }
        }
        tracing::info!(
            "the account's subscriptions run past {budget} page(s) (a tenth of the rows); each customer's are read on their own"
        );
        None
    }

    /// What the listing holds for `customer`. `None`: nothing; the row reads
    /// its own (a customer on a test clock is never listed, nor is one
    /// subscribed since).
    pub(crate) fn of(&self, customer: &str) -> Option<Listing> {
        self.by_customer.get(customer).map(|subscriptions| Listing {
            listed_at: self.at,
            subscriptions: subscriptions.clone(),
            invoices: self.invoices.as_ref().map(|i| ListedInvoices {
                listed_at: i.at,
                created_from: i.created_from,
                invoices: i.by_customer.get(customer).cloned().unwrap_or_default(),
            }),
        })
    }
}

/// What the invoices listing knows of the subscriptions listing's prices.
#[derive(Clone, Debug)]
enum Prices {
    /// Nothing yet: the invoices listing waits, so an account with no
    /// subscription on the meters, or a listing given up after its first
    /// page, costs no invoice page.
    Unknown,
    /// Some are listed and more pages are coming: the invoices listing goes.
    Coming,
    /// All of them.
    Known(Arc<HashSet<String>>),
}

impl Prices {
    fn known(&self) -> Option<Arc<HashSet<String>>> {
        match self {
            Prices::Known(prices) => Some(prices.clone()),
            _ => None,
        }
    }
}

impl Invoices {
    /// Lists the account's invoices of the last [`INVOICES_BACK`] with a line
    /// on one of the listed subscriptions' `prices`, page by page, each in a
    /// fresh instance, from when the subscriptions listing has a page worth
    /// going on with. The pages that come before the prices are known are
    /// held as they are, up to [`MAX_ITEMS`] lines, then the listing waits
    /// for the prices. `None`: no listing (nothing to list, more pages than
    /// the budget, a failed read, or no subscriptions listing); each row then
    /// reads the invoices it needs on its own, as it would without a listing.
    async fn list(
        sandbox: &Sandbox,
        config: &RunConfig,
        mut prices: watch::Receiver<Prices>,
        budget: usize,
    ) -> Option<Invoices> {
        let start = prices
            .wait_for(|p| !matches!(p, Prices::Unknown))
            .await
            .ok()?
            .known();
        if budget == 0 || start.is_some_and(|p| p.is_empty()) {
            return None;
        }
        let at = super::ledger::now();
        let created_from = at - INVOICES_BACK;
        let mut kept = Kept::default();
        let (mut held, mut held_lines) = (Vec::new(), 0);
        let mut after = None;
        for pages in 1..=budget {
            let page = match sandbox
                .list_invoices(config, created_from, after.as_deref())
                .await
            {
                Ok(page) => page,
                Err(failure) => {
                    tracing::warn!(
                        "listing the account's invoices failed; each subscription's are read on their own: {}",
                        config.credentials.redact(&failure.to_json().to_string())
                    );
                    return None;
                }
            };
            held_lines += page.invoices.iter().map(|i| i.lines.len()).sum::<usize>();
            held.extend(page.invoices);
            let last = page.next.is_none();
            let known = match last || held_lines > MAX_ITEMS {
                true => Some(
                    prices
                        .wait_for(|p| matches!(p, Prices::Known(_)))
                        .await
                        .ok()?
                        .known()?,
                ),
                false => prices.borrow().known(),
            };
            if let Some(known) = known {
                if known.is_empty() {
                    return None;
                }
                kept.add(held.drain(..), &known)?;
                held_lines = 0;
            }
            match page.next {
                None => {
                    tracing::info!(
                        "listed the account's invoices of the last {} days in {pages} page(s): {} invoice(s)",
                        INVOICES_BACK / 86_400,
                        kept.count
                    );
                    return Some(Invoices {
                        at,
                        created_from,
                        by_customer: kept.by_customer,
                    });
                }
                Some(next) => after = Some(next),
            }
        }
        tracing::info!(
            "the account's invoices run past {budget} page(s) (a tenth of the rows); each subscription's are read on their own"
        );
        None
    }
}

/// The listed invoices kept so far, with their lines on the listed prices.
#[derive(Default)]
struct Kept {
    by_customer: HashMap<String, Vec<ListedInvoice>>,
    lines: usize,
    count: usize,
}

impl Kept {
    /// Keeps `invoices`' lines on `prices`, and the invoices that have one;
    /// `None` once they are more than [`MAX_ITEMS`] lines.
    fn add(
        &mut self,
        invoices: impl Iterator<Item = ListedInvoice>,
        prices: &HashSet<String>,
    ) -> Option<()> {
        for mut invoice in invoices {
            invoice.lines.retain(|l| prices.contains(&l.price));
            if invoice.lines.is_empty() {
                continue;
            }
            self.lines += invoice.lines.len();
            self.count += 1;
            if self.lines > MAX_ITEMS {
                tracing::info!(
                    "the account's invoices hold more than {MAX_ITEMS} lines on the meters; each subscription's are read on their own"
                );
                return None;
            }
            self.by_customer
                .entry(invoice.customer.clone())
                .or_default()
                .push(invoice);
        }
        Some(())
    }
}

/// Adds a page's subscriptions by customer, counting their items into
/// `items`; false once they are more than `max_items`.
fn gather(
    by_customer: &mut HashMap<String, Vec<ListedSubscription>>,
    items: &mut usize,
    page: Vec<ListedSubscription>,
    max_items: usize,
) -> bool {
    for sub in page {
        *items += sub.items.len();
        if *items > max_items {
            return false;
        }
        by_customer
            .entry(sub.customer.clone())
            .or_default()
            .push(sub);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::ListedItem;

    fn sub(customer: &str, items: usize) -> ListedSubscription {
        let item = ListedItem {
            id: "si_1".into(),
            price: "price_1".into(),
            meter: "mtr_1".into(),
            current_period_start: 0,
            current_period_end: 1,
        };
        ListedSubscription {
            id: "sub_1".into(),
            customer: customer.into(),
            ended_at: None,
            items: vec![item; items],
        }
    }

    #[test]
    fn pages_are_gathered_by_customer_until_the_items_run_past_the_cap() {
        let (mut by_customer, mut items) = (HashMap::new(), 0);
        assert!(gather(
            &mut by_customer,
            &mut items,
            vec![sub("cus_1", 2), sub("cus_2", 1)],
            5
        ));
        assert!(gather(
            &mut by_customer,
            &mut items,
            vec![sub("cus_1", 2)],
            5
        ));
        assert_eq!(by_customer["cus_1"].len(), 2);
        assert_eq!(items, 5);
        assert!(!gather(
            &mut by_customer,
            &mut items,
            vec![sub("cus_3", 1)],
            5
        ));
    }

    #[test]
    fn a_listing_pays_when_its_pages_take_less_than_the_reads_at_the_pace() {
        let ms = Duration::from_millis;
        // The default pace (25 reads a second): even a page of 2 s pays.
        assert!(pays(1_000, ms(2_000), ms(40)));
        assert!(pays(10, ms(300), ms(40)));
        // Unpaced: the rows' own reads, sent at once, are quicker.
        assert!(!pays(5_000, ms(60), Duration::from_micros(1)));
        assert!(!pays(10, ms(1), Duration::ZERO));
        // At the edge: 10 pages of 100 ms against 1,000 reads of 1 ms.
        assert!(pays(1_000, ms(100), ms(1)));
        assert!(!pays(1_000, ms(101), ms(1)));
    }

    #[test]
    fn the_budget_is_a_tenth_of_a_read_per_row_up_to_a_cap() {
        assert_eq!(page_budget(9), 0);
        assert_eq!(page_budget(10), 1);
        assert_eq!(page_budget(1_000), 100);
        assert_eq!(page_budget(10_000_000), MAX_PAGES);
    }
}
