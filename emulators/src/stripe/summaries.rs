//! Meter event summaries, as Stripe computes them: per customer and window,
//! from the events already processed, with the meter's keys and formula.

use super::errors::{invalid, no_such_meter, parameter_missing};
use super::meters::Meter;
use super::pagination::page;
use super::{Formula, METERS, State};
use crate::server::Reply;
use serde_json::json;
use std::collections::BTreeMap;

/// `GET /v1/billing/meters/{id}/event_summaries`: required customer and
/// times, minute-aligned (and hour- or day-aligned with a grouping window),
/// newest window first, values as floats, only events already processed.
pub(super) fn summaries(state: &State, id: &str, params: &BTreeMap<String, String>) -> Reply {
    let Some(meter) = state.meters.iter().find(|m| m.id == id) else {
        return no_such_meter(id);
    };
    if let Some(key) = params.keys().find(|k| {
        !matches!(
            k.as_str(),
            "customer"
                | "start_time"
                | "end_time"
                | "value_grouping_window"
                | "limit"
                | "starting_after"
        )
    }) {
        return invalid(key, &format!("Received unknown parameter: {key}"));
    }
    let Some(customer) = params.get("customer") else {
        return parameter_missing("customer");
    };
    let time = |name: &str| -> Result<i64, Reply> {
        let text = params.get(name).ok_or_else(|| parameter_missing(name))?;
        text.parse()
            .map_err(|_| invalid(name, &format!("Invalid integer: {text}")))
    };
    let (start, end) = match (time("start_time"), time("end_time")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    let grid = match params.get("value_grouping_window").map(String::as_str) {
        None => None,
        Some("hour") => Some(3600),
        Some("day") => Some(86_400),
        Some(other) => {
            return invalid(
                "value_grouping_window",
                &format!("Invalid value_grouping_window: must be one of day or hour (got {other})"),
            );
        }
    };
    for (name, t) in [("start_time", start), ("end_time", end)] {
        if t % 60 != 0 {
            return invalid(
                name,
                &format!("{name} must be aligned to minute boundaries"),
            );
        }
        if let Some(step) = grid
            && t % step != 0
        {
            let unit = if step == 3600 { "hour" } else { "day" };
            return invalid(
                name,
                &format!(
                    "{name} must be aligned to {unit} boundaries when value_grouping_window is {unit}"
                ),
            );
        }
    }
    if start >= end {
        return invalid("end_time", "end_time must be after start_time");
    }
    let windows: Vec<(i64, i64)> = match grid {
        None => vec![(start, end)],
        Some(step) => (start..end)
            .step_by(step as usize)
            .map(|s| (s, s + step))
            .collect(),
    };
    let processed_by = state.now() - state.processing_lag;
    let items = windows
        .into_iter()
        .rev()
        .map(|(s, e)| {
            let id = format!("mtrusg_{s:x}{e:x}");
            let value = aggregate(state, meter, customer, s, e, processed_by);
            let summary = json!({
                "id": id,
                "object": "billing.meter_event_summary",
                "aggregated_value": value,
                "end_time": e,
                "livemode": false,
                "meter": meter.id,
                "start_time": s,
            });
            (id, summary)
        })
        .collect();
    page(items, params, &format!("{METERS}/{id}/event_summaries"))
}

/// The meter's aggregate for `customer` over `[start, end)`, counting the
/// events received by `processed_by`. An event counts only when it carries the
/// meter's customer and value keys and a whole-number value; a pre-aggregated
/// meter keeps only the last event received per customer and bucket.
pub(super) fn aggregate(
    state: &State,
    meter: &Meter,
    customer: &str,
    start: i64,
    end: i64,
    processed_by: i64,
) -> f64 {
    let spec = &meter.spec;
    let candidates = state
        .by_payload
        .get(&(spec.event_name.clone(), customer.to_string()))
        .map_or(&[][..], Vec::as_slice);
    let counted = candidates.iter().map(|&i| &state.events[i]).filter(|e| {
        e.created <= processed_by
            && e.payload.get(&spec.customer_key).map(String::as_str) == Some(customer)
    });
    let valued: Vec<(i64, f64)> = counted
        .filter_map(|e| {
            let value = e.payload.get(&spec.value_key)?.parse::<i64>().ok()?;
            Some((e.timestamp, value as f64))
        })
        .collect();
    // Received order: a later event in the same bucket replaces an earlier one.
    let valued: Vec<(i64, f64)> = match spec.event_time_window {
        None => valued,
        Some(step) => {
            let mut last: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
            for (t, v) in valued {
                last.insert(t.div_euclid(step), (t, v));
            }
            last.into_values().collect()
        }
    };
    let in_range: Vec<(i64, f64)> = valued
        .into_iter()
        .filter(|(t, _)| *t >= start && *t < end)
        .collect();
    match spec.formula {
        // Folded from +0.0: an empty float sum is -0.0, which Stripe never shows.
        Formula::Sum => in_range.iter().fold(0.0, |sum, (_, v)| sum + v),
        Formula::Count => in_range.len() as f64,
        Formula::Last => in_range
            .iter()
            .max_by_key(|(t, _)| *t)
            .map_or(0.0, |(_, v)| *v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{add_meter, event, get};
    use super::super::{DEFAULT_PROCESSING_LAG, MeterSpec};
    use super::*;

    #[test]
    fn summaries_count_processed_events_with_the_meters_keys() {
        let mut state = State::new("sk_test_x");
        let meter = add_meter(
            &mut state,
            MeterSpec {
                customer_key: "org".into(),
                ..MeterSpec::sum("calls")
            },
        );
        let day = (crate::unix_now() / 86_400 - 3) * 86_400;
        assert_eq!(
            event(
                &mut state,
                "a",
                "1",
                "payload[org]=cus_1&payload[value]=5",
                day + 10
            ),
            200
        );
        assert_eq!(
            event(
                &mut state,
                "b",
                "2",
                "payload[org]=cus_1&payload[value]=7",
                day + 86_400 + 10
            ),
            200
        );
        // Accepted, but lacking the meter's customer key: never counted.
        assert_eq!(
            event(
                &mut state,
                "c",
                "3",
                "payload[stripe_customer_id]=cus_1&payload[value]=100",
                day + 10
            ),
            200
        );
        let url = format!(
            "/v1/billing/meters/{meter}/event_summaries?customer=cus_1&start_time={day}&end_time={}&value_grouping_window=day",
            day + 2 * 86_400
        );
        // Not processed yet: eventually consistent.
        let (status, list) = get(&mut state, &url);
        assert_eq!(status, 200);
        assert_eq!(list["data"][0]["aggregated_value"], 0.0);
        state.clock_offset = DEFAULT_PROCESSING_LAG;
        let (_, list) = get(&mut state, &url);
        assert_eq!(list["object"], "list");
        // Newest window first, values as floats.
        assert_eq!(list["data"][0]["start_time"], day + 86_400);
        assert_eq!(list["data"][0]["aggregated_value"], 7.0);
        assert_eq!(list["data"][1]["aggregated_value"], 5.0);
        assert_eq!(list["has_more"], false);
        // Paginated.
        let (_, first) = get(&mut state, &format!("{url}&limit=1"));
        assert_eq!(first["has_more"], true);
        let after = first["data"][0]["id"].as_str().unwrap().to_string();
        let (_, second) = get(&mut state, &format!("{url}&limit=1&starting_after={after}"));
        assert_eq!(second["data"][0]["aggregated_value"], 5.0);
        assert_eq!(second["has_more"], false);
    }

    #[test]
    fn summaries_refuse_what_stripe_refuses() {
        let mut state = State::new("sk_test_x");
        let meter = add_meter(&mut state, MeterSpec::sum("calls"));
        let base = format!("/v1/billing/meters/{meter}/event_summaries");
        for (query, param) in [
            ("start_time=0&end_time=3600", "customer"),
            ("customer=c&end_time=3600", "start_time"),
            ("customer=c&start_time=30&end_time=3600", "start_time"),
            (
                "customer=c&start_time=60&end_time=3600&value_grouping_window=hour",
                "start_time",
            ),
            (
                "customer=c&start_time=0&end_time=3600&value_grouping_window=day",
                "end_time",
            ),
            ("customer=c&start_time=0&end_time=60&limit=101", "limit"),
        ] {
            let (status, body) = get(&mut state, &format!("{base}?{query}"));
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"]["param"], param, "{query}");
        }
        let (status, _) = get(
            &mut state,
            "/v1/billing/meters/mtr_nope/event_summaries?customer=c&start_time=0&end_time=60",
        );
        assert_eq!(status, 404);
    }

    #[test]
    fn a_pre_aggregated_meter_keeps_the_last_event_received_per_bucket() {
        let mut state = State::new("sk_test_x");
        add_meter(
            &mut state,
            MeterSpec {
                event_time_window: Some(86_400),
                ..MeterSpec::sum("calls")
            },
        );
        let day = (crate::unix_now() / 86_400 - 3) * 86_400;
        let payload = |v: u32| format!("payload[stripe_customer_id]=cus_1&payload[value]={v}");
        assert_eq!(event(&mut state, "a", "1", &payload(5), day + 86_000), 200);
        // Received later with an earlier timestamp: it still wins.
        assert_eq!(event(&mut state, "b", "2", &payload(9), day + 10), 200);
        let meter = &state.meters[0];
        assert_eq!(
            aggregate(&state, meter, "cus_1", day, day + 86_400, i64::MAX),
            9.0
        );
    }
}
