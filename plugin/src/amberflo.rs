//! Step 1, `query-usage`: Amberflo `POST /usage`.

use crate::inputs::{Plan, Window};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const PATH: &str = "/usage";

/// The query body: the Arazzo payload plus the `timeRange` the real API requires.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Query<'a> {
    meter_api_name: &'a str,
    aggregation: &'static str,
    time_grouping_interval: &'static str,
    time_range: TimeRange,
    filter: Filter<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimeRange {
    start_time_in_seconds: i64,
    end_time_in_seconds: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Filter<'a> {
    customer_id: [&'a str; 1],
}

/// The query for the whole window; buckets of `grouping` (`DAY` or `HOUR`)
/// line up with the events' intervals.
pub fn request_body(plan: &Plan, grouping: &'static str) -> Vec<u8> {
    let query = Query {
        meter_api_name: &plan.meter_api_name,
        aggregation: "SUM",
        time_grouping_interval: grouping,
        time_range: TimeRange {
            start_time_in_seconds: plan.window.start,
            end_time_in_seconds: plan.window.end,
        },
        filter: Filter {
            customer_id: [&plan.customer_id],
        },
    };
    serde_json::to_vec(&query).expect("plain structs always serialize")
}

/// What step 1 yields.
#[derive(Debug)]
pub struct Usage {
    /// `clientMeters`, verbatim.
    pub client_meters: String,
    /// Every `(secondsSinceEpochUtc, value)` in `clientMeters`, when it has the
    /// documented shape.
    pub points: Option<Vec<(i64, f64)>>,
}

impl Usage {
    /// The total of each window: the values of the buckets that start in it
    /// (a bucket starting before the first window belongs to the first).
    pub fn totals(&self, windows: &[Window]) -> Option<Vec<f64>> {
        let points = self.points.as_ref()?;
        let mut totals = vec![0.0; windows.len()];
        for &(t, value) in points {
            let at = windows
                .iter()
                .rposition(|w| w.start <= t)
                .unwrap_or_default();
            totals[at] += value;
        }
        Some(totals)
    }
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "clientMeters", borrow)]
    client_meters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    values: Vec<Point>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Point {
    value: f64,
    seconds_since_epoch_utc: i64,
}

pub fn parse_response(body: &[u8]) -> Result<Usage, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let raw = response
        .client_meters
        .ok_or("the response has no `clientMeters`")?;
    // The documented shape is an array of groups; anything else still passes
    // through verbatim, it just has no total.
    let points = serde_json::from_str::<Vec<Group>>(raw.get())
        .ok()
        .map(|groups| {
            groups
                .iter()
                .flat_map(|g| &g.values)
                .map(|p| (p.seconds_since_epoch_utc, p.value))
                .collect()
        });
    Ok(Usage {
        client_meters: raw.get().to_string(),
        points,
    })
}

/// A short message from an error body: Amberflo documents no error schema.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => crate::http::snippet(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_arazzo_payload_with_a_time_range() {
        let plan = Plan {
            customer_id: "acme \"co\"".into(),
            meter_api_name: "api-calls".into(),
            stripe_customer: "cus_1".into(),
            stripe_event_name: "api_calls".into(),
            usage_quantity: None,
            window: Window {
                start: 1_732_406_400,
                end: 1_732_492_800,
            },
            pieces: Vec::new(),
        };
        assert_eq!(
            String::from_utf8(request_body(&plan, "DAY")).unwrap(),
            r#"{"meterApiName":"api-calls","aggregation":"SUM","timeGroupingInterval":"DAY","timeRange":{"startTimeInSeconds":1732406400,"endTimeInSeconds":1732492800},"filter":{"customerId":["acme \"co\""]}}"#
        );
    }

    #[test]
    fn keeps_client_meters_verbatim_and_sums_values() {
        let body = br#"{"metadata":{},"secondsSinceEpochIntervals":[1,2],"clientMeters":[ {"group":null,"groupValue":42.0,"values":[{"value":40.0,"secondsSinceEpochUtc":1},{"value":2.0,"secondsSinceEpochUtc":2}]} ]}"#;
        let usage = parse_response(body).unwrap();
        assert_eq!(
            usage.client_meters,
            r#"[ {"group":null,"groupValue":42.0,"values":[{"value":40.0,"secondsSinceEpochUtc":1},{"value":2.0,"secondsSinceEpochUtc":2}]} ]"#
        );
        let day = [Window { start: 0, end: 10 }];
        assert_eq!(usage.totals(&day), Some(vec![42.0]));
        let halves = [Window { start: 0, end: 2 }, Window { start: 2, end: 10 }];
        assert_eq!(usage.totals(&halves), Some(vec![40.0, 2.0]));
        let empty = parse_response(br#"{"clientMeters":[]}"#).unwrap();
        assert_eq!(empty.totals(&day), Some(vec![0.0]));
    }

    #[test]
    fn buckets_before_the_first_window_belong_to_it() {
        // A DAY bucket starts at midnight, before a window that starts at noon.
        let usage = Usage {
            client_meters: String::new(),
            points: Some(vec![(0, 5.0), (86_400, 7.0)]),
        };
        let windows = [
            Window {
                start: 43_200,
                end: 86_400,
            },
            Window {
                start: 86_400,
                end: 100_000,
            },
        ];
        assert_eq!(usage.totals(&windows), Some(vec![5.0, 7.0]));
    }

    #[test]
    fn other_shapes_pass_through_without_a_total() {
        let usage = parse_response(br#"{"clientMeters":{"m":[{"records":[]}]}}"#).unwrap();
        assert_eq!(usage.client_meters, r#"{"m":[{"records":[]}]}"#);
        assert_eq!(usage.totals(&[Window { start: 0, end: 1 }]), None);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(
            parse_response(b"{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse_response(b"{}").unwrap_err().contains("clientMeters"));
    }
}
