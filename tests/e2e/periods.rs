//! The invoice is the bill: usage is stamped inside the billing period it
//! belongs to, a day holding a renewal is cut there, and nothing is written
//! where no invoice will bill it. The emulator keeps subscriptions and
//! invoices as Stripe does: a draft until the period's end plus the grace
//! period, frozen after (`specs/README.md`, "Billing periods and invoices").
//!
//! The matrix is a day D with one unit an hour and a subscription renewing
//! at D 15:00 UTC.

use crate::support::*;
use serde_json::Value;
use usage_sync_emulators::MeterSpec;

const BAD_INPUT: i32 = 2;
const UNBILLED: i32 = 5;

/// One unit an hour for `acme` over `day`.
fn hourly((start, _): (i64, i64)) -> Vec<usage_sync_emulators::UsageRecord> {
    (0..24)
        .map(|h| usage("acme", "api-calls", start + h * 3600 + 60, 1.0))
        .collect()
}

/// A 30-day subscription of `cus_Acme` on `api_calls` that renews at `renewal`.
fn renewing_at(p: &Providers, renewal: i64) {
    subscribe(p, "cus_Acme", renewal);
}

fn day_args(day: (i64, i64)) -> Vec<String> {
    with_inputs(&window_args(day.0, day.1))
}

/// The events Stripe holds: `(timestamp, value)`, in order.
fn stamped(p: &Providers) -> Vec<(i64, String)> {
    let mut events: Vec<(i64, String)> = p
        .stripe
        .events()
        .iter()
        .map(|e| (e.timestamp, e.payload["value"].clone()))
        .collect();
    events.sort();
    events
}

fn reads_of(p: &Providers, path: &str) -> usize {
    p.stripe_reads()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}?")))
        .count()
}

#[test]
fn a_renewal_inside_the_day_with_the_previous_invoice_a_draft_bills_each_part_on_its_invoice() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    // The longest grace Stripe allows: the previous invoice is still a draft.
    p.stripe.set_grace(72 * 3600);
    let renewal = day.0 + 15 * 3600;
    renewing_at(&p, renewal);
    let out = p.run(&day_args(day)).expect(0).json();
    // Before: one event of 24 at 23:59:59, all on the next invoice.
    assert_eq!(
        stamped(&p),
        [(renewal - 1, "15".into()), (day.1 - 1, "9".into())],
        "{out}"
    );
    assert!(out.get("unbilled").is_none(), "{out}");
    // 25 hours later, nothing more.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run(&day_args(day)).expect(0);
    assert_eq!(p.stripe.events().len(), 2);
    // Once both invoices are final: 15 on the previous one, 9 on the next.
    p.stripe.shift_clock(PERIOD + 4 * DAY);
    let invoices = p.stripe.invoices("cus_Acme");
    let of = |end: i64| invoices.iter().find(|i| i.period_end == end).unwrap();
    assert_eq!(
        (of(renewal).status.as_str(), of(renewal).quantity),
        ("open", 15.0)
    );
    assert_eq!(of(renewal + PERIOD).quantity, 9.0);
}

#[test]
fn a_mid_hour_renewal_puts_its_hour_in_the_new_period() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    p.stripe.set_grace(72 * 3600);
    // 15:20:17: the hour from 15:00 goes to the new period, whose invoice is
    // open; none of it is stamped in the old one.
    let renewal = day.0 + 15 * 3600 + 20 * 60 + 17;
    renewing_at(&p, renewal);
    p.run(&day_args(day)).expect(0);
    assert_eq!(
        stamped(&p),
        [
            (day.0 + 15 * 3600 - 1, "15".into()),
            (day.1 - 1, "9".into())
        ]
    );
    // 25 hours later, from another machine, nothing more.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run_elsewhere(&day_args(day)).expect(0);
    assert_eq!(p.stripe.events().len(), 2);
}

#[test]
fn usage_for_a_final_invoice_is_never_written_and_is_named_with_exit_5() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    // The default grace of an hour: the previous invoice finalized at 16:00.
    let renewal = day.0 + 15 * 3600;
    renewing_at(&p, renewal);
    let metrics =
        std::env::temp_dir().join(format!("usage-sync-unbilled-{}.prom", std::process::id()));
    let mut args = day_args(day);
    args.extend(["--metrics-file".to_string(), metrics.display().to_string()]);
    let run = p.run(&args);
    let out = run.expect(UNBILLED).json();
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("usage_sync_last_run_unbilled_units{step=\"run\"} 15"),
        "{text}"
    );
    assert!(
        text.contains("usage_sync_last_run_rows{step=\"run\",outcome=\"unbilled\"} 1"),
        "{text}"
    );
    let _ = std::fs::remove_file(&metrics);
    // Before: exit 0, all 24 in the new period, nothing said.
    assert_eq!(stamped(&p), [(day.1 - 1, "9".into())]);
    let unbilled = out["unbilled"].as_array().unwrap();
    assert_eq!(unbilled.len(), 1, "{out}");
    let invoice = p
        .stripe
        .invoices("cus_Acme")
        .into_iter()
        .find(|i| i.period_end == renewal)
        .unwrap();
    assert_eq!(unbilled[0]["quantity"], "15");
    assert_eq!(unbilled[0]["periodStart"], renewal - PERIOD);
    assert_eq!(unbilled[0]["periodEnd"], renewal);
    assert_eq!(unbilled[0]["invoice"], invoice.id.as_str());
    assert_eq!(unbilled[0]["written"], false);
    assert!(
        run.stderr.contains("UNBILLED, nothing written"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&invoice.id), "{}", run.stderr);
    // A rerun 25 hours later says it again and writes nothing.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run(&day_args(day)).expect(UNBILLED);
    assert_eq!(p.stripe.events().len(), 1);
}

/// The same through `sync`, whose rows take the points of a batch query:
/// only the open period's part is written, and 25 hours later, with no state
/// directory to remember the first run, nothing more.
#[test]
fn a_sync_over_a_renewal_day_with_the_previous_invoice_final_writes_only_the_open_period() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    let renewal = day.0 + 15 * 3600;
    renewing_at(&p, renewal);
    let mapping = write_mapping_of("final-sync", &[("acme", "cus_Acme")]);
    let window = window_args(day.0, day.1);
    let window: Vec<&str> = window.iter().map(String::as_str).collect();
    let args = mapping_args(&mapping, &window);
    let run = p.sync(&args);
    run.expect(UNBILLED);
    assert_eq!(stamped(&p), [(day.1 - 1, "9".into())]);
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.elsewhere("sync", &args).expect(UNBILLED);
    assert_eq!(stamped(&p), [(day.1 - 1, "9".into())]);
    let _ = std::fs::remove_dir_all(mapping.parent().unwrap());
}

#[test]
fn a_day_wholly_inside_a_final_period_is_not_written() {
    // A rerun of a failed night, a backfill: D three days back, the period
    // renewed two days back and its invoice is final.
    let day = days_ago(3);
    let p = Providers::start(hourly(day));
    renewing_at(&p, days_ago(2).0 + 15 * 3600);
    let out = p.run(&day_args(day)).expect(UNBILLED).json();
    // Before: exit 0, "recorded 1 event totalling 24", billed on no invoice.
    assert!(p.stripe_writes().is_empty());
    assert_eq!(out["unbilled"][0]["quantity"], "24");
    assert_eq!(
        out["unbilled"][0]["status"], "paid",
        "a $0 invoice finalizes as paid"
    );
    // And a true-up of that period writes no correction either.
    p.stripe.plant("api_calls", "cus_Acme", day.1 - 1, "6");
    let mut args = day_args(day);
    args.extend(["--true-up", "--settle-hours", "0"].map(String::from));
    let out = p.run(&args).expect(UNBILLED).json();
    assert!(p.stripe_writes().is_empty(), "{out}");
    assert_eq!(out["unbilled"][0]["quantity"], "18", "{out}");
    // 25 hours later, still nothing.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run_elsewhere(&args).expect(UNBILLED);
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn a_window_inside_the_current_period_reads_one_page_of_subscriptions_and_no_invoice() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    renewing_at(&p, days_ago(10).0 + 15 * 3600);
    let out = p.run(&day_args(day)).expect(0).json();
    assert!(out.get("unbilled").is_none(), "{out}");
    assert_eq!(stamped(&p), [(day.1 - 1, "24".into())]);
    assert_eq!(reads_of(&p, "/v1/subscriptions"), 1);
    assert_eq!(reads_of(&p, "/v1/invoices"), 0);
}

#[test]
fn a_customer_without_a_subscription_is_written_and_reported_unbilled_for_now() {
    let day = yesterday();
    let p = Providers::start(hourly(day));
    let run = p.run(&day_args(day));
    let out = run.expect(0).json();
    assert_eq!(stamped(&p), [(day.1 - 1, "24".into())]);
    let unbilled: &Value = &out["unbilled"][0];
    assert_eq!(unbilled["status"], "no-subscription");
    assert_eq!(unbilled["written"], true);
    assert!(
        run.stderr.contains("no subscription item on the meter yet"),
        "{}",
        run.stderr
    );
    // 25 hours later, nothing more.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run_elsewhere(&day_args(day)).expect(0);
    assert_eq!(p.stripe.events().len(), 1);
}

#[test]
fn a_daily_pre_aggregated_meter_cannot_be_cut_and_says_what_to_use() {
    let day = yesterday();
    let daily = MeterSpec {
        event_time_window: Some(DAY),
        ..MeterSpec::sum("api_calls")
    };
    let p = Providers::with_meters(hourly(day), [daily]);
    p.stripe.set_grace(72 * 3600);
    renewing_at(&p, day.0 + 15 * 3600);
    let run = p.run(&day_args(day));
    run.expect(BAD_INPUT);
    let message = run.error_message();
    for needle in ["pre-aggregated by day", "raw sum meter", "mtr_"] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    assert!(p.stripe_writes().is_empty());
}

#[test]
fn a_nightly_sync_lists_subscriptions_once_and_reads_invoices_only_on_renewal_days() {
    let day = yesterday();
    let records: Vec<_> = (0..10)
        .map(|i| usage(&format!("cust-{i}"), "api-calls", day.0 + 60, 1.0))
        .collect();
    let p = Providers::start(records);
    p.stripe.set_grace(72 * 3600);
    for i in 0..10 {
        // Customer 0 renewed yesterday; the others ten days ago.
        let renewal = if i == 0 {
            day.0 + 15 * 3600
        } else {
            days_ago(10).0
        };
        subscribe(&p, &format!("cus_{i}"), renewal);
    }
    let mapping = write_mapping("periods-nightly", 10);
    p.sync(&mapping_args(&mapping, &[])).expect(0);
    // One listing of the account for the ten rows (`listing.rs`), and one
    // of its recent invoices, which holds customer 0's renewal invoice.
    assert_eq!(reads_of(&p, "/v1/subscriptions"), 1);
    assert_eq!(reads_of(&p, "/v1/invoices"), 1);
    assert!(
        p.stripe_reads()
            .iter()
            .any(|r| r.starts_with("GET /v1/invoices?created[gte]=")),
        "{:?}",
        p.stripe_reads()
    );
    // Customer 0's day is cut at its renewal: two events, the second of 0.
    assert_eq!(p.stripe_writes().len(), 11);
}

#[test]
fn close_periods_puts_the_last_piece_of_a_period_on_its_draft_invoice() {
    // The period ended at the last full hour; its invoice, a draft, finalizes
    // 50 minutes from now (a run 10 minutes after the renewal, 1 hour of grace).
    let t = now();
    let renewal = t.div_euclid(3600) * 3600;
    let start = (renewal - 6 * 3600).div_euclid(DAY) * DAY;
    let mut records: Vec<_> = (start..renewal)
        .step_by(3600)
        .map(|h| usage("acme", "api-calls", h + 60, 1.0))
        .collect();
    records.push(usage("other", "api-calls", start + 60, 5.0));
    let p = Providers::start(records);
    p.stripe.set_grace(t - renewal + 50 * 60);
    renewing_at(&p, renewal);
    subscribe(&p, "cus_Other", days_ago(20).0 + PERIOD);
    let mapping = write_mapping_of("close", &[("acme", "cus_Acme"), ("other", "cus_Other")]);
    let args = |extra: &[&str]| mapping_args(&mapping, extra);
    // A sync records each ledger's current period end in the state directory.
    let night = days_ago(5);
    let window = window_args(night.0, night.1);
    let window: Vec<&str> = window.iter().map(String::as_str).collect();
    p.sync(&args(&window)).expect(0);
    let periods: Value =
        serde_json::from_slice(&std::fs::read(p.state_dir.join("periods.json")).unwrap()).unwrap();
    let other_end = days_ago(20).0 + PERIOD;
    assert_eq!(
        periods["ledgers"],
        serde_json::json!([
            ["cus_Acme", "api_calls", renewal + PERIOD],
            ["cus_Other", "api_calls", other_end]
        ])
    );
    // Last night's sync ran before the renewal: it saw the period ending at it.
    // (The component's clock is the machine's, so a sync before the renewal
    // cannot be replayed here; the file is written as that sync wrote it.)
    std::fs::write(
        p.state_dir.join("periods.json"),
        serde_json::json!({
            "version": 1,
            "ledgers": [["cus_Acme", "api_calls", renewal], ["cus_Other", "api_calls", other_end]],
        })
        .to_string(),
    )
    .unwrap();
    let before = p.stripe_all().len();

    let mut command = p.command_for("close-periods", &args(&[]));
    let run = Run::exec(&mut command);
    p.assert_no_leak(&run);
    run.expect(0);
    // Only the ledger whose period ended was touched.
    let touched: Vec<String> = p.stripe_all()[before..]
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        touched.iter().all(|t| !t.contains("cus_Other")),
        "{touched:#?}"
    );
    let hours = (renewal - start) / 3600;
    assert_eq!(p.billed((start, renewal)), hours as f64);
    // Once the draft finalizes, it bills every hour of the period's last day.
    p.stripe.shift_clock(2 * 3600);
    let invoice = p
        .stripe
        .invoices("cus_Acme")
        .into_iter()
        .find(|i| i.period_end == renewal)
        .unwrap();
    assert_eq!(
        (invoice.status.as_str(), invoice.quantity),
        ("open", hours as f64)
    );
    // A rerun has nothing more to write.
    let writes = p.stripe_writes().len();
    let mut command = p.command_for("close-periods", &args(&[]));
    Run::exec(&mut command).expect(0);
    assert_eq!(p.stripe_writes().len(), writes);
}

#[test]
fn reconcile_invoices_finds_an_invoice_that_froze_before_the_usage_arrived() {
    // Both customers used 24 units on D, inside a period that renewed two
    // days ago and whose invoice is final. acme's usage was synced in time;
    // bravo's was not: its invoice bills 0, whatever the meter says now.
    let day = days_ago(3);
    let renewal = days_ago(2).0 + 15 * 3600;
    let mut records = hourly(day);
    records.extend((0..24).map(|h| usage("bravo", "api-calls", day.0 + h * 3600 + 60, 1.0)));
    let p = Providers::start(records);
    for customer in ["cus_Acme", "cus_Bravo"] {
        subscribe(&p, customer, renewal);
    }
    // acme's day, synced while the invoice was a draft (the longest grace);
    // then the grace ends and the invoice freezes.
    p.stripe.set_grace(72 * 3600);
    p.run(&day_args(day)).expect(0);
    p.stripe.shift_clock(3 * DAY);
    let mapping = write_mapping_of("invoices", &[("acme", "cus_Acme"), ("bravo", "cus_Bravo")]);
    let html = mapping.with_file_name("invoices.html");
    let run = p.reconcile(&mapping_args(
        &mapping,
        &["--invoices", "--html", html.to_str().unwrap()],
    ));
    run.expect(UNBILLED);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |customer: &str| {
        lines
            .iter()
            .find(|l| l["stripeCustomer"] == customer)
            .unwrap_or_else(|| panic!("{customer}: {lines:#?}"))
    };
    assert_eq!(of("cus_Acme")["status"], "match", "{lines:#?}");
    assert_eq!(of("cus_Acme")["billed"], "24");
    let bravo = of("cus_Bravo");
    assert_eq!(bravo["status"], "under");
    assert_eq!(
        (bravo["billed"].as_str(), bravo["expected"].as_str()),
        (Some("0"), Some("24"))
    );
    assert_eq!(bravo["periodEnd"], renewal);
    assert!(bravo["invoice"].as_str().unwrap().starts_with("in_"));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        (summary["matched"].as_u64(), summary["under"].as_u64()),
        (Some(1), Some(1))
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<td>under"), "{page}");
    let csv = p.reconcile(&mapping_args(&mapping, &["--invoices", "--format", "csv"]));
    csv.expect(UNBILLED);
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        rows[0],
        "customerId,stripeCustomer,meterApiName,stripeEventName,invoice,invoiceStatus,periodStart,periodEnd,billed,expected,carriedIn,carriedOut,status"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("bravo,cus_Bravo,") && r.ends_with(",0,24,0,0,under")),
        "{rows:#?}"
    );
    assert_eq!(p.stripe_writes().len(), 1, "reconcile writes nothing");
}

#[test]
fn a_long_window_measured_by_day_writes_nothing_of_a_renewal_day() {
    // Five days are measured by day: the renewal day cannot be cut there, so
    // none of it is written (its first 15 hours would land in the new
    // period); a window of up to four days, by hour, cuts it.
    let mut records = Vec::new();
    for n in 3..=7 {
        records.extend(hourly(days_ago(n)));
    }
    let p = Providers::start(records);
    let renewal = days_ago(4).0 + 15 * 3600;
    renewing_at(&p, renewal);
    let run = p.run(&with_inputs(&window_args(days_ago(7).0, days_ago(2).0)));
    let out = run.expect(UNBILLED).json();
    let unbilled = out["unbilled"].as_array().unwrap();
    let blurred: Vec<&Value> = unbilled
        .iter()
        .filter(|u| u["status"] == "renewal-inside-day")
        .collect();
    assert_eq!(blurred.len(), 1, "{out}");
    assert_eq!(blurred[0]["windowStart"], days_ago(4).0);
    assert_eq!(blurred[0]["periodEnd"], renewal);
    assert!(run.stderr.contains("rerun the day alone"), "{}", run.stderr);
    // Only the day wholly in the new period was written.
    assert_eq!(stamped(&p), [(days_ago(3).1 - 1, "24".into())]);
    // The renewal day alone, by hour: 9 written in the new period, 15 named.
    let out = p.run(&day_args(days_ago(4))).expect(UNBILLED).json();
    assert_eq!(out["unbilled"][0]["quantity"], "15");
    assert_eq!(
        stamped(&p),
        [
            (days_ago(4).1 - 1, "9".into()),
            (days_ago(3).1 - 1, "24".into())
        ]
    );
}

/// `--late-usage carry`: what belongs to a final invoice is recorded in the
/// open period, in the carry minute of its origin (README, "Late usage").
fn carrying(args: Vec<String>) -> Vec<String> {
    let mut args = args;
    args.extend(["--late-usage", "carry"].map(String::from));
    args
}

#[test]
fn a_renewal_inside_the_day_with_the_previous_invoice_final_carries_its_part_into_the_open_period()
{
    let day = yesterday();
    let p = Providers::start(hourly(day));
    // The default grace of an hour: the previous invoice finalized at 16:00.
    let renewal = day.0 + 15 * 3600;
    renewing_at(&p, renewal);
    let run = p.run(&carrying(day_args(day)));
    let out = run.expect(0).json();
    // The day's 15 units before the renewal are stamped in the open period's
    // first carry minute (no days back: minute 0), never in the final one.
    let carry_stamp = renewal + 30;
    assert_eq!(
        stamped(&p),
        [(carry_stamp, "15".into()), (day.1 - 1, "9".into())],
        "{out}"
    );
    assert!(out.get("unbilled").is_none(), "{out}");
    let carried = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["carriedInto"].is_i64())
        .expect("a carried event");
    assert_eq!(carried["carriedInto"], renewal);
    assert_eq!(carried["startTime"], day.0);
    assert_eq!(carried["endTime"], renewal);
    assert_eq!(carried["usageQuantity"], "15");
    assert!(carried["meterEventId"].as_str().unwrap().contains("-c"));
    // At once (Stripe's summaries still lag), then 25 hours later from
    // another machine: nothing more is carried or written.
    p.run(&carrying(day_args(day))).expect(0);
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    let again = p.run_elsewhere(&carrying(day_args(day)));
    let again = again.expect(0).json();
    assert_eq!(p.stripe.events().len(), 2, "{again}");
    // And a plain run (no carry) reports nothing unbilled: it was carried.
    let plain = p.run_elsewhere(&day_args(day));
    assert!(plain.expect(0).json().get("unbilled").is_none());
    // Once the open period's invoice freezes it bills all 24; the final one 0.
    p.stripe.shift_clock(PERIOD + 4 * DAY);
    let invoices = p.stripe.invoices("cus_Acme");
    let of = |end: i64| invoices.iter().find(|i| i.period_end == end).unwrap();
    assert_eq!(of(renewal).quantity, 0.0);
    assert_eq!(of(renewal + PERIOD).quantity, 24.0);
    // reconcile --invoices counts the carry: the final invoice bills 0 of
    // D's 15, and should, for all 15 were carried out of it.
    let mapping = write_mapping_of("carry", &[("acme", "cus_Acme")]);
    let run = p.reconcile(&mapping_args(&mapping, &["--invoices"]));
    let line: Value = serde_json::from_str(run.expect(0).stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["periodEnd"], renewal, "{line}");
    assert_eq!(
        [
            &line["billed"],
            &line["expected"],
            &line["carriedOut"],
            &line["carriedIn"],
            &line["status"]
        ],
        ["0", "0", "15", "0", "match"],
        "{line}"
    );
    let _ = std::fs::remove_dir_all(mapping.parent().unwrap());
}

#[test]
fn a_true_up_of_a_final_period_carries_the_correction_and_late_usage_tops_it_up() {
    // D three days back, wholly inside a period whose invoice is final; Stripe
    // holds 6 of its 24 there.
    let day = days_ago(3);
    let p = Providers::start(hourly(day));
    let renewal = days_ago(2).0 + 15 * 3600;
    renewing_at(&p, renewal);
    p.stripe.plant("api_calls", "cus_Acme", day.1 - 1, "6");
    let mut args = carrying(day_args(day));
    args.extend(["--true-up", "--settle-hours", "0"].map(String::from));
    let out = p.run(&args).expect(0).json();
    // One day before the renewal's day: the second minute of the first hour
    // (the renewal is on the hour: the hour it starts).
    let carry_stamp = renewal + 60 + 30;
    let written: Vec<_> = stamped(&p)
        .into_iter()
        .filter(|(t, _)| *t != day.1 - 1)
        .collect();
    assert_eq!(written, [(carry_stamp, "18".into())], "{out}");
    // Amberflo learns of 5 more units on D: the next run carries 5, no more.
    p.amberflo
        .ingest(usage("acme", "api-calls", day.0 + 7200, 5.0));
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    let out = p.run_elsewhere(&args).expect(0).json();
    let written: Vec<_> = stamped(&p)
        .into_iter()
        .filter(|(t, _)| *t == carry_stamp)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(written, ["18", "5"], "{out}");
    // Rerun: nothing more.
    p.stripe.shift_clock(DAY_AND_AN_HOUR);
    p.run_elsewhere(&args).expect(0);
    assert_eq!(p.stripe.events().len(), 3);
    // Without carry, a rerun reports nothing unbilled either: all was carried.
    let mut plain = day_args(day);
    plain.extend(["--true-up", "--settle-hours", "0"].map(String::from));
    let out = p.run_elsewhere(&plain).expect(0).json();
    assert!(out.get("unbilled").is_none(), "{out}");
    // The meter's reconciliation: D is short by what was carried out of it
    // and the renewal day over by what sits there, unless told of the carry.
    let reconcile = |carry: bool| {
        let mut args: Vec<String> = [
            "--customer-id",
            "acme",
            "--stripe-customer",
            "cus_Acme",
            "--meter-api-name",
            "api-calls",
            "--stripe-event-name",
            "api_calls",
            "--settle-hours",
            "0",
            "--start-time",
            &day.0.to_string(),
            "--end-time",
            &days_ago(2).1.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if carry {
            args.extend(["--late-usage", "carry"].map(String::from));
        }
        let run = p.reconcile(&args);
        let statuses: Vec<String> = run
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|c| c["status"].as_str().map(String::from))
            .collect();
        (run.code, statuses)
    };
    assert_eq!(
        reconcile(false),
        (UNBILLED, vec!["under".into(), "over".into()])
    );
    assert_eq!(reconcile(true), (0, vec!["match".into(), "match".into()]));
}

#[test]
fn carry_refuses_a_pre_aggregated_meter_before_writing() {
    let day = yesterday();
    let hourly_meter = MeterSpec {
        event_time_window: Some(3600),
        ..MeterSpec::sum("api_calls")
    };
    let p = Providers::with_meters(hourly(day), [hourly_meter]);
    renewing_at(&p, day.0 + 15 * 3600);
    let mut args = carrying(day_args(day));
    args.extend(["--interval", "hour"].map(String::from));
    let run = p.run(&args);
    run.expect(BAD_INPUT);
    let message = run.error_message();
    assert!(message.contains("carry needs a raw sum meter"), "{message}");
    assert!(p.stripe_writes().is_empty());
}
