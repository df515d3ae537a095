//! Step 1, `query-usage`: Amberflo `POST /usage`.

use crate::decimal::Decimal;
use crate::http::USER_AGENT;
use crate::inputs::{Plan, Window};
use crate::time;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Amberflo's usage query endpoint.
pub const PATH: &str = "/usage";

/// The headers of a query, then `credential` (the key, when the component
/// sends it itself: [`crate::credentials::amberflo_header`]).
pub fn headers<'a>(credential: Option<&'a (&'static str, String)>) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("User-Agent", USER_AGENT),
    ];
    headers.extend(credential.map(|(n, v)| (*n, v.as_str())));
    headers
}

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

/// What step 1 yields: Amberflo's answer for one customer, checked.
#[derive(Debug)]
pub struct Usage {
    /// `clientMeters`, verbatim.
    pub client_meters: String,
    /// Every `(secondsSinceEpochUtc, value)`: each inside the window, on the
    /// bucket grid, and an exact number.
    pub points: Vec<(i64, Decimal)>,
}

impl Usage {
    /// The total of each window: the values of the buckets that start in it.
    pub fn totals(&self, windows: &[Window]) -> Result<Vec<Decimal>, String> {
        let mut totals = vec![Decimal::ZERO; windows.len()];
        for &(t, value) in &self.points {
            if let Some(at) = windows.iter().position(|w| w.start <= t && t < w.end) {
                totals[at] = totals[at]
                    .checked_add(value)
                    .ok_or("Amberflo's values add up to more than usage-sync can hold")?;
            }
        }
        Ok(totals)
    }
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "clientMeters", borrow)]
    client_meters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Group<'a> {
    #[serde(default)]
    group: Option<GroupInfo>,
    #[serde(borrow)]
    values: Option<Vec<Point<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupInfo {
    group_info: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Point<'a> {
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    seconds_since_epoch_utc: Option<i64>,
}

/// Step 1's answer for `customer` over `window` in buckets of `grid` seconds.
pub fn parse_response(
    body: &[u8],
    customer: &str,
    window: Window,
    grid: i64,
) -> Result<Usage, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let raw = response
        .client_meters
        .ok_or("the response has no `clientMeters`")?;
    client_meters(raw.get(), customer, window, grid)
}

/// `clientMeters` for `customer`, believed only as far as it proves itself: at
/// most one group, and it names this customer or none; every bucket inside
/// `window` and on the `grid`; every value a number. No group: no usage.
pub fn client_meters(
    raw: &str,
    customer: &str,
    window: Window,
    grid: i64,
) -> Result<Usage, String> {
    let groups: Vec<Group> = serde_json::from_str(raw)
        .map_err(|e| format!("`clientMeters` is not an array of groups: {e}"))?;
    if groups.len() > 1 {
        return Err(format!(
            "`clientMeters` has {} groups for the one customer `{customer}`",
            groups.len()
        ));
    }
    let mut points = Vec::new();
    for (g, group) in groups.into_iter().enumerate() {
        if let Some(other) = group
            .group
            .as_ref()
            .and_then(|info| info.group_info.get("customerId"))
            .filter(|id| *id != customer)
        {
            return Err(format!(
                "`clientMeters[{g}]` is the usage of customer `{other}`, not of `{customer}`"
            ));
        }
        let values = group
            .values
            .ok_or_else(|| format!("`clientMeters[{g}]` has no `values`"))?;
        for (i, point) in values.into_iter().enumerate() {
            let at = format!("`clientMeters[{g}].values[{i}]`");
            let t = point
                .seconds_since_epoch_utc
                .ok_or_else(|| format!("{at} has no `secondsSinceEpochUtc`"))?;
            if t < window.start || t >= window.end {
                return Err(format!(
                    "{at} is a bucket at {}, outside the window {} to {}",
                    time::format(t),
                    time::format(window.start),
                    time::format(window.end)
                ));
            }
            if t.rem_euclid(grid) != 0 {
                return Err(format!(
                    "{at} is a bucket at {}, not on the {} grid asked for",
                    time::format(t),
                    if grid == time::DAY {
                        "UTC day"
                    } else {
                        "UTC hour"
                    }
                ));
            }
            let value = point.value.ok_or_else(|| format!("{at} has no `value`"))?;
            let value = Decimal::parse(value.get()).map_err(|why| format!("{at}.value {why}"))?;
            points.push((t, value));
        }
    }
    Ok(Usage {
        client_meters: raw.to_string(),
        points,
    })
}

/// A batch answer cut into each customer's `clientMeters` (an array holding
/// its group); a customer without usage has no group, so `[]`.
pub fn split_by_customer(body: &[u8], customer_ids: &[&str]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Tagged {
        group: Option<GroupInfo>,
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
            intervals: Vec::new(),
        };
        assert_eq!(
            String::from_utf8(request_body(&plan, "DAY")).unwrap(),
            r#"{"meterApiName":"api-calls","aggregation":"SUM","timeGroupingInterval":"DAY","timeRange":{"startTimeInSeconds":1732406400,"endTimeInSeconds":1732492800},"filter":{"customerId":["acme \"co\""]}}"#
        );
    }

    const DAY: Window = Window {
        start: 0,
        end: 86_400,
    };

    fn totals(usage: &Usage, windows: &[Window]) -> Vec<String> {
        let totals = usage.totals(windows).unwrap();
        totals.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn keeps_client_meters_verbatim_and_sums_values_exactly() {
        let body = br#"{"metadata":{},"secondsSinceEpochIntervals":[0,3600],"clientMeters":[ {"group":null,"groupValue":1.0,"values":[{"value":0.2,"secondsSinceEpochUtc":0},{"value":0.7,"secondsSinceEpochUtc":3600},{"value":0.1,"secondsSinceEpochUtc":7200}]} ]}"#;
        let usage = parse_response(body, "acme", DAY, 3600).unwrap();
        assert_eq!(
            usage.client_meters,
            r#"[ {"group":null,"groupValue":1.0,"values":[{"value":0.2,"secondsSinceEpochUtc":0},{"value":0.7,"secondsSinceEpochUtc":3600},{"value":0.1,"secondsSinceEpochUtc":7200}]} ]"#
        );
        assert_eq!(totals(&usage, &[DAY]), ["1"]);
        let hours = DAY.split(Some(3600));
        assert_eq!(totals(&usage, &hours[..3]), ["0.2", "0.7", "0.1"]);
        let empty = parse_response(br#"{"clientMeters":[]}"#, "acme", DAY, 3600).unwrap();
        assert_eq!(totals(&empty, &[DAY]), ["0"]);
    }

    #[test]
    fn an_answer_that_does_not_prove_itself_is_refused() {
        let check = |client_meters: &str| {
            let body = format!(r#"{{"clientMeters":{client_meters}}}"#);
            parse_response(body.as_bytes(), "acme", DAY, 3600).unwrap_err()
        };
        let point = |v: &str, t: i64| format!(r#"{{"value":{v},"secondsSinceEpochUtc":{t}}}"#);
        let group = |customer: &str, points: &[String]| {
            format!(
                r#"{{"group":{{"groupInfo":{{"customerId":"{customer}"}}}},"values":[{}]}}"#,
                points.join(",")
            )
        };
        for (client_meters, expected) in [
            (
                format!("[{}]", group("globex", &[point("1000", 0)])),
                "customer `globex`",
            ),
            (
                format!("[{},{}]", group("acme", &[]), group("acme", &[])),
                "2 groups",
            ),
            (
                format!("[{}]", group("acme", &[point("1", 86_400)])),
                "outside the window",
            ),
            (
                format!("[{}]", group("acme", &[point("1", -3600)])),
                "outside the window",
            ),
            (
                format!("[{}]", group("acme", &[point("1", 60)])),
                "not on the UTC hour grid",
            ),
            (r#"[{"group":null}]"#.to_string(), "has no `values`"),
            (
                format!("[{}]", group("acme", &[point("\"42\"", 0)])),
                "values[0]`.value `\"42\"` is not a number",
            ),
            (
                format!("[{}]", group("acme", &[point("1e309", 0)])),
                "out of range",
            ),
            (
                format!("[{}]", group("acme", &[point("null", 0)])),
                "has no `value`",
            ),
            (
                r#"{"m":[{"records":[]}]}"#.to_string(),
                "not an array of groups",
            ),
        ] {
            let err = check(&client_meters);
            assert!(err.contains(expected), "{client_meters}: {err}");
        }
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
        let b = client_meters(&usage[1], "b", DAY, DAY.end).unwrap();
        assert_eq!(totals(&b, &[DAY]), ["2"]);
        let a = client_meters(&usage[0], "a", DAY, DAY.end).unwrap();
        assert_eq!(totals(&a, &[DAY]), ["0"]);
        assert!(client_meters(&usage[1], "a", DAY, DAY.end).is_err());
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
    fn malformed_bodies_are_errors() {
        let parse = |body: &[u8]| parse_response(body, "acme", DAY, 3600).unwrap_err();
        assert!(parse(b"{not json").contains("not valid JSON"));
        assert!(parse(b"{}").contains("clientMeters"));
    }
}
