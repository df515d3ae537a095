//! One listing of the account's subscriptions per sync (README, "One listing
//! per sync"): a sync of ten or more rows lists `GET /v1/subscriptions` for
//! the whole account, a hundred a page, instead of reading each customer's;
//! and every case where the listing may be wrong or incomplete falls back to
//! the customer's own read, billing exactly as before.

use crate::support::*;
use usage_sync_emulators::Fault;

const CUSTOMERS: usize = 10;

/// `CUSTOMERS` customers with one unit each at yesterday 00:01, each on a
/// 30-day subscription that renewed ten days ago.
fn providers() -> Providers {
    let day = yesterday();
    let records: Vec<_> = (0..CUSTOMERS)
        .map(|i| usage(&format!("cust-{i}"), "api-calls", day.0 + 60, 1.0))
        .collect();
    let p = Providers::start(records);
    p.stripe.set_grace(72 * 3600);
    p
}

fn subscribe_all(p: &Providers) {
    for i in 0..CUSTOMERS {
        subscribe(p, &format!("cus_{i}"), days_ago(10).0);
    }
}

/// `n` subscriptions of customers the mapping does not bill.
fn subscribe_others(p: &Providers, n: usize) {
    for i in 0..n {
        subscribe(p, &format!("cus_other{i}"), days_ago(10).0);
    }
}

/// The subscriptions reads Stripe received, as `GET path?query`.
fn subscription_reads(p: &Providers) -> Vec<String> {
    p.stripe_reads()
        .into_iter()
        .filter(|r| r.starts_with("GET /v1/subscriptions?"))
        .collect()
}

const LISTING: &str = "GET /v1/subscriptions?status=all&limit=100";

/// The subscriptions listing's target, for faults on it alone (the invoices
/// listing goes beside it).
const SUBSCRIPTIONS_LISTING: &str = "/v1/subscriptions?status=all";

fn own_read(customer: &str) -> String {
    format!("GET /v1/subscriptions?customer={customer}&status=all&limit=100")
}

/// Each customer's events: `(timestamp, value)`.
fn billed(p: &Providers, customer: &str) -> Vec<(i64, String)> {
    let mut events: Vec<_> = p
        .stripe
        .events()
        .into_iter()
        .filter(|e| e.payload["stripe_customer_id"] == customer)
        .map(|e| (e.timestamp, e.payload["value"].clone()))
        .collect();
    events.sort();
    events
}

/// Every customer billed its one unit, stamped in its open period.
fn assert_each_billed_once(p: &Providers) {
    let day = yesterday();
    for i in 0..CUSTOMERS {
        let customer = format!("cus_{i}");
        assert_eq!(
            billed(p, &customer),
            [(day.1 - 1, "1".to_string())],
            "{customer}"
        );
    }
}

#[test]
fn a_nightly_sync_lists_the_accounts_subscriptions_once_and_bills_as_each_read_would() {
    let p = providers();
    subscribe_all(&p);
    let mapping = write_mapping("listing-nightly", CUSTOMERS);
    p.sync(&mapping_args(&mapping, &[])).expect(0);
    // The bytes on the wire: one page of the whole account, no customer.
    assert_eq!(subscription_reads(&p), [LISTING]);
    assert_each_billed_once(&p);
}

/// The rows wait for the listing; the sync's Amberflo query does not. On a
/// real network that is a round trip (or a page's worth) sooner to the
/// first row.
#[test]
fn amberflo_is_asked_while_the_listing_is_read() {
    let p = providers();
    subscribe_all(&p);
    // Stripe holds the listing's answer: a query sent only after it would
    // arrive after the hold.
    let hold = std::time::Duration::from_secs(3);
    p.stripe
        .push_faults_on(SUBSCRIPTIONS_LISTING, [Fault::Delay(hold)]);
    let mapping = write_mapping("listing-beside-amberflo", CUSTOMERS);
    p.sync(&mapping_args(&mapping, &[])).expect(0);
    let stripe = p.stripe_all();
    let listing = stripe
        .iter()
        .find(|r| r.target.starts_with(SUBSCRIPTIONS_LISTING))
        .expect("the listing was read");
    let queries = p.amberflo_requests();
    assert_eq!(queries.len(), 1, "one batch of ten customers");
    assert!(
        queries[0].at < listing.at + hold,
        "Amberflo was asked {:?} after the listing, whose answer was held {hold:?}",
        queries[0].at.duration_since(listing.at)
    );
    // And the rows used the listing, once it came.
    assert_eq!(subscription_reads(&p), [LISTING]);
    assert_each_billed_once(&p);
}

/// SIGTERM while the listing is read: the rows waiting for it have not
/// started, so nothing is written and every row is not sent.
#[test]
fn an_interrupt_while_the_listing_is_read_sends_nothing() {
    let p = providers();
    subscribe_all(&p);
    p.stripe.push_faults_on(
        SUBSCRIPTIONS_LISTING,
        [Fault::Delay(std::time::Duration::from_secs(3))],
    );
    let mapping = write_mapping("listing-interrupted", CUSTOMERS);
    let child = p
        .command_for("sync", &mapping_args(&mapping, &[]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Amberflo asked: the rows have their usage and wait for the listing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.amberflo_requests().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let run = Run::wait(child);
    p.assert_no_leak(&run);
    run.expect(130);
    assert!(p.stripe_writes().is_empty(), "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("\"status\":\"not-sent\"").count(),
        CUSTOMERS,
        "{}",
        run.stdout
    );
}

#[test]
fn a_customer_on_a_test_clock_is_not_listed_and_is_read_on_its_own() {
    let p = providers();
    subscribe_all(&p);
    p.stripe.attach_test_clock("cus_3");
    let mapping = write_mapping("listing-test-clock", CUSTOMERS);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    assert_eq!(
        subscription_reads(&p),
        [LISTING.to_string(), own_read("cus_3")]
    );
    // Had the listing been taken as the whole truth, cus_3 would have had no
    // subscription: its usage reported `no-subscription`, no renewal cut and
    // no final invoice seen.
    assert!(!run.stdout.contains("no-subscription"), "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("\"status\":\"recorded\"").count(),
        CUSTOMERS
    );
    assert_each_billed_once(&p);
}

#[test]
fn a_period_ending_within_the_finalization_margin_sends_its_customer_to_its_own_read() {
    let p = providers();
    for i in 0..CUSTOMERS {
        let renewal = match i {
            // Renews in ten minutes: a renewal before the rows run (or
            // before Stripe processes their events) would leave the listing
            // showing a period whose invoice is about to freeze.
            5 => now() + 600,
            _ => days_ago(10).0,
        };
        subscribe(&p, &format!("cus_{i}"), renewal);
    }
    let mapping = write_mapping("listing-margin", CUSTOMERS);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    assert_eq!(
        subscription_reads(&p),
        [LISTING.to_string(), own_read("cus_5")]
    );
    assert!(
        run.stderr
            .contains("reading the subscriptions of cus_5: the period of si_"),
        "{}",
        run.stderr
    );
    assert_each_billed_once(&p);
}

#[test]
fn an_account_with_more_pages_than_a_tenth_of_the_rows_is_read_customer_by_customer() {
    let p = providers();
    subscribe_all(&p);
    // 150 subscriptions of customers the mapping does not bill: two pages,
    // past the budget of one page for ten rows.
    subscribe_others(&p, 150);
    let mapping = write_mapping("listing-budget", CUSTOMERS);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    let mut expected = vec![LISTING.to_string()];
    expected.extend((0..CUSTOMERS).map(|i| own_read(&format!("cus_{i}"))));
    let mut reads = subscription_reads(&p);
    reads.sort();
    expected.sort();
    assert_eq!(reads, expected);
    assert!(run.stderr.contains("run past 1 page(s)"), "{}", run.stderr);
    assert_each_billed_once(&p);
}

#[test]
fn an_unpaced_sync_gives_the_listing_up_when_its_pages_take_longer_than_the_reads() {
    let p = providers();
    subscribe_all(&p);
    // Two pages of subscriptions, within the budget only at Stripe's pace.
    subscribe_others(&p, 95);
    let mapping = write_mapping("listing-unpaced", CUSTOMERS);
    // A pace far above Stripe's: ten reads sent at once take a round trip,
    // the listing's two pages two, one after the other.
    let run = p.sync(&mapping_args(&mapping, &["--stripe-rate", "1000000"]));
    run.expect(0);
    let mut expected = vec![LISTING.to_string()];
    expected.extend((0..CUSTOMERS).map(|i| own_read(&format!("cus_{i}"))));
    let mut reads = subscription_reads(&p);
    reads.sort();
    expected.sort();
    assert_eq!(reads, expected);
    assert!(
        run.stderr
            .contains("longer than their reads take at the pace"),
        "{}",
        run.stderr
    );
    assert_each_billed_once(&p);
    // At the default pace the same account is listed: both pages, no own read.
    let p = providers();
    for i in 0..20 {
        subscribe(&p, &format!("cus_{i}"), days_ago(10).0);
    }
    subscribe_others(&p, 95);
    let mapping = write_mapping("listing-paced", 20);
    p.sync(&mapping_args(&mapping, &[])).expect(0);
    let reads = subscription_reads(&p);
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.iter().all(|r| r.starts_with(LISTING)), "{reads:?}");
}

#[test]
fn a_failed_listing_falls_back_to_each_customers_own_read() {
    let p = providers();
    subscribe_all(&p);
    // The listing gets a body that is not JSON.
    p.stripe
        .push_faults_on(SUBSCRIPTIONS_LISTING, [Fault::MalformedJson]);
    let mapping = write_mapping("listing-failed", CUSTOMERS);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    assert_eq!(subscription_reads(&p).len(), 1 + CUSTOMERS);
    assert!(
        run.stderr
            .contains("listing the account's subscriptions failed"),
        "{}",
        run.stderr
    );
    assert_each_billed_once(&p);
}

#[test]
fn a_listing_page_retried_after_a_500_is_traced_as_read_subscriptions() {
    let p = providers();
    subscribe_all(&p);
    // The listing's first attempt gets a 500.
    p.stripe
        .push_faults_on(SUBSCRIPTIONS_LISTING, [Fault::Status(500)]);
    let mapping = write_mapping("listing-retried", CUSTOMERS);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    // The same page again, then trusted: no customer read on its own.
    assert_eq!(subscription_reads(&p), [LISTING, LISTING]);
    assert!(
        run.stderr.contains("read-subscriptions attempt 1/3: 500 ("),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("read-summaries attempt"),
        "{}",
        run.stderr
    );
    assert_each_billed_once(&p);
}

#[test]
fn fewer_than_ten_rows_read_each_customer_as_before() {
    let p = providers();
    subscribe_all(&p);
    let mapping = write_mapping("listing-few", 9);
    p.sync(&mapping_args(&mapping, &[])).expect(0);
    let mut reads = subscription_reads(&p);
    reads.sort();
    let mut expected: Vec<_> = (0..9).map(|i| own_read(&format!("cus_{i}"))).collect();
    expected.sort();
    assert_eq!(reads, expected);
}

#[test]
fn a_sync_longer_than_the_refresh_lists_again_while_it_runs() {
    let p = providers();
    subscribe_all(&p);
    // One row at a time, each write taking 400 ms: about 4 s, against a
    // refresh every second (5 minutes by default, half of what a row trusts).
    p.stripe
        .set_meter_event_time(std::time::Duration::from_millis(400));
    let mapping = write_mapping("listing-refresh", CUSTOMERS);
    let args = mapping_args(&mapping, &["--concurrency", "1"]);
    let mut command = p.command_for("sync", &args);
    command.env("USAGE_SYNC_LISTING_REFRESH_SECS", "1");
    let run = Run::exec(&mut command);
    p.assert_no_leak(&run);
    run.expect(0);
    // Listed at the start and again while the writes ran; no row read its own.
    // (A listing in flight when the sync ends is dropped unlogged.)
    let reads = subscription_reads(&p);
    assert!(reads.iter().all(|r| r == LISTING), "{reads:?}");
    let listed = run
        .stderr
        .matches("listed the account's subscriptions")
        .count();
    assert!(
        listed >= 3 && reads.len() >= listed,
        "{listed} listed\n{}",
        run.stderr
    );
    assert_each_billed_once(&p);
}

#[test]
fn reconcile_invoices_lists_the_subscriptions_once_and_checks_every_invoice() {
    // Each customer used 1 unit three days ago, in a period that renewed two
    // days ago and whose invoice is final; nothing was synced: each bills 0.
    let day = days_ago(3);
    let renewal = days_ago(2).0 + 15 * 3600;
    let records: Vec<_> = (0..CUSTOMERS)
        .map(|i| usage(&format!("cust-{i}"), "api-calls", day.0 + 60, 1.0))
        .collect();
    let p = Providers::start(records);
    for i in 0..CUSTOMERS {
        subscribe(&p, &format!("cus_{i}"), renewal);
    }
    p.stripe.shift_clock(3 * DAY);
    let mapping = write_mapping("listing-reconcile", CUSTOMERS);
    let run = p.reconcile(&mapping_args(&mapping, &["--invoices"]));
    run.expect(5);
    assert_eq!(subscription_reads(&p), [LISTING]);
    // And one of its recent invoices, which holds every invoice the window
    // checks: no subscription's own read.
    let invoice_reads = invoice_reads(&p);
    assert_eq!(invoice_reads.len(), 1, "{invoice_reads:?}");
    assert!(is_invoices_listing(&invoice_reads[0]), "{invoice_reads:?}");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l.get("invoice").is_some())
        .collect();
    assert_eq!(lines.len(), CUSTOMERS, "{}", run.stdout);
    for line in &lines {
        assert_eq!(line["status"], "under", "{line}");
        assert_eq!(
            (line["billed"].as_str(), line["expected"].as_str()),
            (Some("0"), Some("1"))
        );
        assert_eq!(line["periodEnd"], renewal);
    }
}

#[test]
fn a_sync_without_batched_queries_uses_the_listing_too() {
    // `--amberflo-batch 1`: each row runs the whole workflow (`record-usage`
    // with the meter and no sources).
    let p = providers();
    subscribe_all(&p);
    let mapping = write_mapping("listing-unbatched", CUSTOMERS);
    p.sync(&mapping_args(&mapping, &["--amberflo-batch", "1"]))
        .expect(0);
    assert_eq!(subscription_reads(&p), [LISTING]);
    assert_eq!(p.amberflo.requests().len(), CUSTOMERS);
    assert_each_billed_once(&p);
}

// The account's invoices, listed once for a window that reaches before the
// customers' renewals (a backfill, the nightly true-up).

/// The invoices reads Stripe received, as `GET path?query`.
fn invoice_reads(p: &Providers) -> Vec<String> {
    p.stripe_reads()
        .into_iter()
        .filter(|r| r.starts_with("GET /v1/invoices?"))
        .collect()
}

fn is_invoices_listing(read: &str) -> bool {
    read.starts_with("GET /v1/invoices?created[gte]=") && read.ends_with("&limit=100")
}

/// The ten customers of [`providers`] with a unit more 12 days back, in the
/// period before their renewal 10 days back, whose invoice is final; and a
/// sync of the last 14 days.
fn backfill(name: &str) -> (Providers, Vec<String>) {
    let p = providers();
    for i in 0..CUSTOMERS {
        p.amberflo.ingest(usage(
            &format!("cust-{i}"),
            "api-calls",
            days_ago(12).0 + 60,
            1.0,
        ));
    }
    let mapping = write_mapping(name, CUSTOMERS);
    let window = window_args(days_ago(14).0, yesterday().1);
    let window: Vec<&str> = window.iter().map(String::as_str).collect();
    (p, mapping_args(&mapping, &window))
}

/// What each customer is billed: every unit since its renewal 10 days back,
/// and nothing before it (its invoice is final; reported, exit 5).
fn assert_billed_in_the_open_period_only(p: &Providers, customers: std::ops::Range<usize>) {
    let renewal = days_ago(10).0;
    for i in customers {
        let customer = format!("cus_{i}");
        let events = billed(p, &customer);
        assert!(
            events.iter().all(|(t, _)| *t >= renewal),
            "{customer}: {events:?}"
        );
        let total: i64 = events.iter().map(|(_, v)| v.parse::<i64>().unwrap()).sum();
        assert_eq!(total, 1, "{customer}: {events:?}");
    }
}

#[test]
fn a_backfill_lists_the_accounts_invoices_once_instead_of_each_subscriptions() {
    let (p, args) = backfill("listing-invoices");
    subscribe_all(&p);
    let run = p.sync(&args);
    run.expect(5);
    // The bytes on the wire: one page of the account's recent invoices.
    let reads = invoice_reads(&p);
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(is_invoices_listing(&reads[0]), "{reads:?}");
    assert!(
        run.stderr.contains(
            "listed the account's invoices of the last 37 days in 1 page(s): 10 invoice(s)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("reading the invoices of"),
        "{}",
        run.stderr
    );
    assert_billed_in_the_open_period_only(&p, 0..CUSTOMERS);
    // Each customer's unit of 12 days back is reported, never written.
    assert!(run.stderr.contains(", 10 unbilled,"), "{}", run.stderr);
}

#[test]
fn a_subscription_begun_inside_the_window_reads_its_own_invoices() {
    let (p, args) = backfill("listing-invoices-new");
    for i in 1..CUSTOMERS {
        subscribe(&p, &format!("cus_{i}"), days_ago(10).0);
    }
    // cus_0 subscribed 5 days back: the listing holds no invoice before it,
    // which proves nothing, so its run reads its own.
    let sub = p
        .stripe
        .add_subscription(usage_sync_emulators::SubscriptionSpec {
            customer: "cus_0".into(),
            event_name: "api_calls".into(),
            anchor: days_ago(5).0,
            period: PERIOD,
            ended_at: None,
        });
    let run = p.sync(&args);
    let mut reads = invoice_reads(&p);
    reads.sort();
    assert_eq!(
        reads.iter().filter(|r| is_invoices_listing(r)).count(),
        1,
        "{reads:?}"
    );
    let own = format!("GET /v1/invoices?customer=cus_0&subscription={sub}&limit=100");
    assert_eq!(reads.iter().filter(|r| **r == own).count(), 1, "{reads:?}");
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(
        run.stderr.contains(&format!(
            "reading the invoices of {sub}: the invoices listing holds no invoice of"
        )),
        "{}",
        run.stderr
    );
    assert_billed_in_the_open_period_only(&p, 1..CUSTOMERS);
    assert!(billed(&p, "cus_0").contains(&(yesterday().1 - 1, "1".to_string())));
}

#[test]
fn a_failed_invoices_listing_falls_back_to_each_subscriptions_own_read() {
    let (p, args) = backfill("listing-invoices-failed");
    subscribe_all(&p);
    // The invoices listing gets a body that is not JSON.
    p.stripe
        .push_faults_on("/v1/invoices?created", [Fault::MalformedJson]);
    let run = p.sync(&args);
    run.expect(5);
    let reads = invoice_reads(&p);
    assert_eq!(reads.len(), 1 + CUSTOMERS, "{reads:?}");
    assert!(is_invoices_listing(&reads[0]), "{reads:?}");
    assert!(
        run.stderr.contains("listing the account's invoices failed"),
        "{}",
        run.stderr
    );
    assert_billed_in_the_open_period_only(&p, 0..CUSTOMERS);
}

/// The invoices listing does not wait for the whole subscriptions listing:
/// it starts once the first page held a subscription on the meter and more
/// are coming, so its first page is asked for before the subscriptions'
/// third.
#[test]
fn the_invoices_are_listed_beside_the_subscriptions() {
    let p = providers();
    for i in 0..30 {
        subscribe(&p, &format!("cus_{i}"), days_ago(10).0);
    }
    subscribe_others(&p, 195);
    // Each read takes a while, so the order of arrival shows what waited.
    p.stripe
        .set_read_fault(Some(Fault::Delay(std::time::Duration::from_millis(200))));
    let mapping = write_mapping("listing-beside", 30);
    let run = p.sync(&mapping_args(&mapping, &[]));
    run.expect(0);
    let reads = p.stripe_reads();
    let pages: Vec<usize> = (0..reads.len())
        .filter(|&i| reads[i].starts_with(LISTING))
        .collect();
    assert_eq!(pages.len(), 3, "{reads:?}");
    let invoices = reads
        .iter()
        .position(|r| is_invoices_listing(r))
        .unwrap_or_else(|| panic!("the invoices listed: {reads:?}"));
    assert!(pages[0] < invoices && invoices < pages[2], "{reads:?}");
    assert!(
        subscription_reads(&p)
            .iter()
            .all(|r| r.starts_with(LISTING)),
        "no customer read on its own: {reads:?}"
    );
    assert!(
        run.stderr.contains("listed the account's invoices"),
        "{}",
        run.stderr
    );
}
