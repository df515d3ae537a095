//! What `sync` and `reconcile` both do before each row: look up each event
//! name's meter once, cut the rows into batches of one meter's customers, and
//! query Amberflo once per batch.

use crate::bindings::{CustomerUsage, Meter, UsageQuery};
use crate::mapping::Row;
use crate::outcome::Failure;
use crate::sandbox::{RunConfig, Sandbox};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Each event name's meter, looked up once before any write: a missing or
/// unusable meter stops everything with nothing written.
pub(crate) async fn meters_of(
    sandbox: &Sandbox,
    config: &RunConfig,
    rows: &[Row],
) -> Result<HashMap<String, Arc<Meter>>, Failure> {
    meters_for(
        sandbox,
        config,
        rows.iter().map(|r| r.stripe_event_name.as_str()),
    )
    .await
}

/// [`meters_of`], for these event names.
pub(crate) async fn meters_for(
    sandbox: &Sandbox,
    config: &RunConfig,
    events: impl Iterator<Item = &str>,
) -> Result<HashMap<String, Arc<Meter>>, Failure> {
    // Amberflo comes next: its connection opens while Stripe answers.
    config.transport.open_ahead(&config.endpoints.amberflo_url);
    let mut meters: HashMap<String, Arc<Meter>> = HashMap::new();
    for event in events {
        if !meters.contains_key(event) {
            let meter = sandbox.find_meter(config, event).await?;
            meters.insert(event.to_string(), Arc::new(meter));
        }
    }
    Ok(meters)
}

/// One Amberflo query for a batch's customers (rows of one meter, from
/// [`batches`]) over the window: each customer's answer, checked by the
/// component, by customer.
pub(crate) async fn query_batch(
    sandbox: &Sandbox,
    config: &RunConfig,
    rows: &[&Row],
    start_time: &str,
    end_time: &str,
) -> Result<HashMap<String, CustomerUsage>, Failure> {
    let mut customer_ids: Vec<String> = Vec::new();
    for row in rows {
        if !customer_ids.contains(&row.customer_id) {
            customer_ids.push(row.customer_id.clone());
        }
    }
    let query = UsageQuery {
        customer_ids,
        meter_api_name: rows
            .first()
            .map(|row| row.meter_api_name.clone())
            .unwrap_or_default(),
        start_time: Some(start_time.into()),
        end_time: Some(end_time.into()),
    };
    Ok(sandbox
        .query_usage(config, query)
        .await?
        .into_iter()
        .map(|u| (u.customer_id.clone(), u))
        .collect())
}

/// The answer for a customer without usage (the component answers every
/// customer a query asks for; this stands in should one be missing).
pub(crate) fn no_usage(customer_id: &str) -> CustomerUsage {
    CustomerUsage {
        customer_id: customer_id.into(),
        usage_result: "[]".into(),
        points: Vec::new(),
    }
}

/// Amberflo points one query's answer may hold: about 100 bytes each, so an
/// answer stays near 2.5 MB, well under the response cap (8 MiB by default).
const POINTS_PER_QUERY: i64 = 24_000;

/// Customers per Amberflo query: `batch`, lowered so that one answer over
/// `[start, end)` by `grid` seconds fits ([`POINTS_PER_QUERY`]). 100
/// customers by hour over 30 days is 72,000 points, over the cap: every
/// query of `reconcile --invoices` failed. Bounds that are not Unix seconds
/// leave `batch` as it is.
pub(crate) fn fitting(batch: usize, start: &str, end: &str, grid: i64) -> usize {
    let (Ok(start), Ok(end)) = (start.parse::<i64>(), end.parse::<i64>()) else {
        return batch;
    };
    let points = (end.saturating_sub(start).max(0) / grid.max(1)).max(1) + 1;
    let most = (POINTS_PER_QUERY / points).max(1);
    batch.min(usize::try_from(most).unwrap_or(usize::MAX))
}

/// Rows cut into batches of at most `size` customers of one meter, in order.
pub(crate) fn batches(rows: Vec<Row>, size: usize) -> Vec<Vec<Row>> {
    batches_of(rows, size, |row| row)
}

/// Items (each standing for the row `row_of` gives) cut into batches of at
/// most `size` customers of one meter, in order.
pub(crate) fn batches_of<T>(
    items: Vec<T>,
    size: usize,
    row_of: impl Fn(&T) -> &Row,
) -> Vec<Vec<T>> {
    if size <= 1 {
        return items.into_iter().map(|item| vec![item]).collect();
    }
    let mut by_meter: Vec<(String, Vec<Vec<T>>, HashSet<String>)> = Vec::new();
    for item in items {
        let row = row_of(&item);
        let at = match by_meter.iter().position(|(m, ..)| *m == row.meter_api_name) {
            Some(at) => at,
            None => {
                by_meter.push((row.meter_api_name.clone(), vec![Vec::new()], HashSet::new()));
                by_meter.len() - 1
            }
        };
        let (_, batches, customers) = &mut by_meter[at];
        if !customers.contains(&row.customer_id) && customers.len() == size {
            batches.push(Vec::new());
            customers.clear();
        }
        customers.insert(row.customer_id.clone());
        batches.last_mut().expect("never empty").push(item);
    }
    by_meter.into_iter().flat_map(|(_, b, _)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::fitting;

    #[test]
    fn a_batch_is_lowered_until_one_answer_fits() {
        const DAY: i64 = 86_400;
        // Yesterday, by day or by hour: the flag stands.
        assert_eq!(fitting(100, "0", &DAY.to_string(), DAY), 100);
        assert_eq!(fitting(100, "0", &DAY.to_string(), 3600), 100);
        // 30 days by hour: 721 points a customer, 33 customers a query.
        assert_eq!(fitting(100, "0", &(30 * DAY).to_string(), 3600), 33);
        // A year by hour: one customer a query, never none.
        assert_eq!(fitting(100, "0", &(365 * DAY).to_string(), 3600), 2);
        assert_eq!(fitting(100, "0", &(10_000 * DAY).to_string(), 3600), 1);
        // Bounds it cannot read: the flag.
        assert_eq!(fitting(100, "2026-11-01T00:00:00Z", "x", 3600), 100);
    }
}
