//! Step 1, `query-usage`: Amberflo `POST /usage`.

use crate::inputs::Plan;
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

pub fn request_body(plan: &Plan) -> Vec<u8> {
    let query = Query {
        meter_api_name: &plan.meter_api_name,
        aggregation: "SUM",
        time_grouping_interval: "DAY",
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
    /// Sum of every value in `clientMeters`, when it has the documented shape.
    pub total: Option<f64>,
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
struct Point {
    value: f64,
}

pub fn parse_response(body: &[u8]) -> Result<Usage, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let raw = response
        .client_meters
        .ok_or("the response has no `clientMeters`")?;
    // The documented shape is an array of groups; anything else still passes
    // through verbatim, it just has no total.
    let total = serde_json::from_str::<Vec<Group>>(raw.get())
        .ok()
        .map(|groups| groups.iter().flat_map(|g| &g.values).map(|p| p.value).sum());
    Ok(Usage {
        client_meters: raw.get().to_string(),
        total,
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
    use crate::inputs::Window;

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
        };
        assert_eq!(
            String::from_utf8(request_body(&plan)).unwrap(),
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
        assert_eq!(usage.total, Some(42.0));
        assert_eq!(
            parse_response(br#"{"clientMeters":[]}"#).unwrap().total,
            Some(0.0)
        );
    }

    #[test]
    fn other_shapes_pass_through_without_a_total() {
        let usage = parse_response(br#"{"clientMeters":{"m":[{"records":[]}]}}"#).unwrap();
        assert_eq!(usage.client_meters, r#"{"m":[{"records":[]}]}"#);
        assert_eq!(usage.total, None);
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
