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
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<[&'static str; 1]>,
    filter: Filter<'a>,
    /// With `groupBy`: Amberflo returns only the top `limit` groups, and its
    /// default is undocumented, so a customer cut from the answer would look
    /// like zero usage. Ask for every customer of the batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    take: Option<Take>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Take {
    limit: usize,
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
    customer_id: &'a [&'a str],
}

/// The query for the whole window; buckets of `grouping` (`DAY` or `HOUR`)
/// line up with the events' intervals.
pub fn request_body(plan: &Plan, grouping: &'static str) -> Vec<u8> {
    body(
        &[&plan.customer_id],
        &plan.meter_api_name,
        plan.window,
        grouping,
        false,
    )
}

/// The same query for many customers at once, one group per customer.
pub fn batch_request_body(
    customer_ids: &[&str],
    meter_api_name: &str,
    window: Window,
    grouping: &'static str,
) -> Vec<u8> {
    body(customer_ids, meter_api_name, window, grouping, true)
}

fn body(
    customer_ids: &[&str],
    meter_api_name: &str,
    window: Window,
    grouping: &'static str,
    by_customer: bool,
) -> Vec<u8> {
    let query = Query {
        meter_api_name,
        aggregation: "SUM",
        time_grouping_interval: grouping,
        time_range: TimeRange {
            start_time_in_seconds: window.start,
            end_time_in_seconds: window.end,
        },
        group_by: by_customer.then_some(["customerId"]),
        filter: Filter {
            customer_id: customer_ids,
        },
        take: by_customer.then_some(Take {
            limit: customer_ids.len(),
        }),
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
    Ok(client_meters(raw.get()))
}

/// `clientMeters` as step 2 uses it. The documented shape is an array of
/// groups; anything else still passes through verbatim, it just has no total.
pub fn client_meters(raw: &str) -> Usage {
    let points = serde_json::from_str::<Vec<Group>>(raw).ok().map(|groups| {
        groups
            .iter()
            .flat_map(|g| &g.values)
            .map(|p| (p.seconds_since_epoch_utc, p.value))
            .collect()
    });
    Usage {
        client_meters: raw.to_string(),
        points,
    }
}

/// A batch answer cut into each customer's `clientMeters` (an array holding
/// its group); a customer without usage has no group, so `[]`.
pub fn split_by_customer(body: &[u8], customer_ids: &[&str]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Tagged {
        group: Option<GroupInfo>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct GroupInfo {
        group_info: std::collections::HashMap<String, String>,
    }
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let raw = response
        .client_meters
        .ok_or("the response has no `clientMeters`")?;
    let groups: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| "`clientMeters` is not an array of groups".to_string())?;
    let mut by_customer = std::collections::HashMap::new();
    for group in groups {
        let customer = serde_json::from_str::<Tagged>(group.get())
            .ok()
            .and_then(|t| t.group)
            .and_then(|mut g| g.group_info.remove("customerId"))
            .ok_or("a group of `clientMeters` names no customerId")?;
        if by_customer.insert(customer.clone(), group).is_some() {
            return Err(format!("customer `{customer}` has two groups"));
        }
    }
    let usage = customer_ids
        .iter()
        .map(|id| match by_customer.remove(*id) {
            Some(group) => format!("[{}]", group.get()),
            None => "[]".to_string(),
        })
        .collect();
    if let Some(stray) = by_customer.keys().next() {
        return Err(format!(
            "the answer has a group for `{stray}`, which was not asked for"
        ));
    }
    Ok(usage)
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
    fn batch_body_groups_by_customer() {
        let window = Window {
            start: 0,
            end: 86_400,
        };
        assert_eq!(
            String::from_utf8(batch_request_body(&["a", "b"], "m", window, "DAY")).unwrap(),
            r#"{"meterApiName":"m","aggregation":"SUM","timeGroupingInterval":"DAY","timeRange":{"startTimeInSeconds":0,"endTimeInSeconds":86400},"groupBy":["customerId"],"filter":{"customerId":["a","b"]},"take":{"limit":2}}"#
        );
    }

    #[test]
    fn a_batch_answer_splits_by_customer() {
        let body = br#"{"clientMeters":[{"group":{"groupInfo":{"customerId":"b"}},"values":[{"value":2.0,"secondsSinceEpochUtc":0}]}]}"#;
        let usage = split_by_customer(body, &["a", "b"]).unwrap();
        assert_eq!(usage[0], "[]");
        assert_eq!(
            usage[1],
            r#"[{"group":{"groupInfo":{"customerId":"b"}},"values":[{"value":2.0,"secondsSinceEpochUtc":0}]}]"#
        );
        let day = [Window {
            start: 0,
            end: 86_400,
        }];
        assert_eq!(client_meters(&usage[0]).totals(&day), Some(vec![0.0]));
        assert_eq!(client_meters(&usage[1]).totals(&day), Some(vec![2.0]));
        assert!(
            split_by_customer(body, &["a"])
                .unwrap_err()
                .contains("not asked for")
        );
        let ungrouped = br#"{"clientMeters":[{"group":null,"values":[]}]}"#;
        assert!(
            split_by_customer(ungrouped, &["a"])
                .unwrap_err()
                .contains("customerId")
        );
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
