//! `cargo bench -p usage-sync-report --bench json`: the JSON reader against
//! `serde_json::Value` on the answers a row reads, in one process: time per
//! parse (medians of alternating rounds, so a noisy machine moves both) and
//! heap allocations per parse (exact: counted by this binary's allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The system allocator, counting every allocation and reallocation.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to `System` unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A page of a day's hourly meter event summaries, as Stripe lists them.
fn summaries() -> String {
    let data: Vec<String> = (0..24)
        .map(|h| {
            let start = 1_796_256_000 + h * 3_600;
            format!(
                r#"{{"id":"mtrusg_{start:x}","object":"billing.meter_event_summary","aggregated_value":{h}.5,"end_time":{},"livemode":false,"meter":"mtr_test_61Q8nQMqIFK9fRQmr41CMAXJrFdZ5MnA","start_time":{start}}}"#,
                start + 3_600
            )
        })
        .collect();
    format!(
        r#"{{"object":"list","data":[{}],"has_more":false,"url":"/v1/billing/meters/mtr_test_61Q8nQMqIFK9fRQmr41CMAXJrFdZ5MnA/event_summaries"}}"#,
        data.join(",")
    )
}

/// Amberflo's answer for 100 customers, a day by hour.
fn usage() -> String {
    let day = 1_796_256_000;
    let intervals: Vec<String> = (0..24).map(|h| (day + h * 3_600).to_string()).collect();
    let groups: Vec<String> = (0..100)
        .map(|c| {
            let values: Vec<String> = (0..24)
                .map(|h| {
                    format!(
                        r#"{{"value":{}.25,"secondsSinceEpochUtc":{},"percentageFromPrevious":0.0}}"#,
                        c + h,
                        day + h * 3_600
                    )
                })
                .collect();
            format!(
                r#"{{"group":{{"groupInfo":{{"customerId":"customer-{c:04}"}}}},"groupValue":{},"percentageFromPrevious":0.0,"values":[{}]}}"#,
                24 * c + 276,
                values.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"metadata":{{"meterApiName":"api-calls","aggregation":"SUM","timeGroupingInterval":"HOUR","groupBy":["customerId"]}},"secondsSinceEpochIntervals":[{}],"clientMeters":[{}]}}"#,
        intervals.join(","),
        groups.join(",")
    )
}

/// A customer's subscriptions: one, with a licensed and a metered item.
fn subscriptions() -> String {
    let item = |id: &str, price: &str, meter: &str| {
        format!(
            r#"{{"id":"{id}","object":"subscription_item","created":1793664000,"current_period_end":1798934400,"current_period_start":1796256000,"metadata":{{}},"price":{{"id":"{price}","object":"price","active":true,"billing_scheme":"per_unit","currency":"usd","livemode":false,"product":"prod_R8x2","recurring":{{"interval":"month","interval_count":1,"meter":{meter},"usage_type":"metered"}},"type":"recurring","unit_amount":2}},"quantity":1,"subscription":"sub_1QF"}}"#
        )
    };
    format!(
        r#"{{"object":"list","data":[{{"id":"sub_1QF","object":"subscription","billing_cycle_anchor":1793664000,"cancel_at_period_end":false,"created":1793664000,"currency":"usd","customer":"cus_NffrFeUfNV2Hib","ended_at":null,"items":{{"object":"list","data":[{},{}],"has_more":false,"total_count":2,"url":"/v1/subscription_items?subscription=sub_1QF"}},"livemode":false,"metadata":{{}},"status":"active"}}],"has_more":false,"url":"/v1/subscriptions"}}"#,
        item("si_A", "price_A", "null"),
        item(
            "si_B",
            "price_B",
            r#""mtr_test_61Q8nQMqIFK9fRQmr41CMAXJrFdZ5MnA""#
        )
    )
}

/// Allocations of one call of `f`.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Nanoseconds per call of `f`, over `runs` calls.
fn per_call(runs: usize, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..runs {
        f();
    }
    started.elapsed().as_nanos() as f64 / runs as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let rounds = 9;
    println!(
        "| answer | bytes | `json::parse` | `serde_json::Value` | ratio | allocations: ours / serde_json's |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, text) in [
        ("a day's hourly summaries (24)", summaries()),
        ("a customer's subscriptions (1, 2 items)", subscriptions()),
        ("Amberflo, 100 customers by hour", usage()),
    ] {
        let bytes = text.as_bytes();
        // Both readers accept it: the comparison is of like work.
        assert!(usage_sync_report::json::parse(bytes).is_ok());
        assert!(serde_json::from_slice::<serde_json::Value>(bytes).is_ok());
        let runs = (2_000_000 / bytes.len()).max(20);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(per_call(runs, || {
                black_box(usage_sync_report::json::parse(black_box(bytes)).is_ok());
            }));
            theirs.push(per_call(runs, || {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(bytes)).is_ok());
            }));
        }
        let (ours, theirs) = (median(ours), median(theirs));
        let our_allocations = allocations(|| {
            black_box(usage_sync_report::json::parse(bytes).is_ok());
        });
        let their_allocations = allocations(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(bytes).is_ok());
        });
        println!(
            "| {name} | {} | {:.1} µs | {:.1} µs | {:.2} | {our_allocations} / {their_allocations} |",
            bytes.len(),
            ours / 1e3,
            theirs / 1e3,
            ours / theirs
        );
    }
}
