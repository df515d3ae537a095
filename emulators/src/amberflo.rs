//! Amberflo's usage query API (`POST /usage`), as its docs and SDKs describe it.

use crate::server::{Fault, Faults, Recorded, Reply, Server};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// One metered value, as ingested.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// The Amberflo customer the usage belongs to.
    pub customer_id: String,
    /// The Amberflo meter it was measured on.
    pub meter_api_name: String,
    /// Unix seconds.
    pub time: i64,
    /// The amount measured.
    pub value: f64,
}

struct State {
    api_key: String,
    records: Vec<UsageRecord>,
    /// Records by customer, so a filtered query does not scan them all.
    by_customer: HashMap<String, Vec<usize>>,
    faults: Faults,
    /// Bodies the next queries are answered with (200), one each: a provider
    /// that answers badly.
    canned: std::collections::VecDeque<String>,
}

/// The state, even after a handler panicked while holding it: a panic must
/// not turn every later request into another.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running Amberflo emulator.
pub struct Amberflo {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl Amberflo {
    /// Starts on a free loopback port, accepting `api_key` in `X-API-KEY`.
    pub fn start(api_key: &str, records: Vec<UsageRecord>) -> std::io::Result<Amberflo> {
        Amberflo::start_with(api_key, records, None)
    }

    /// [`Amberflo::start`], over HTTPS with `tls` when given.
    pub fn start_with(
        api_key: &str,
        records: Vec<UsageRecord>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Amberflo> {
        let mut by_customer: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            by_customer
                .entry(r.customer_id.clone())
                .or_default()
                .push(i);
        }
        let state = Arc::new(Mutex::new(State {
            api_key: api_key.into(),
            records,
            by_customer,
            faults: Faults::default(),
            canned: Default::default(),
        }));
        let shared = state.clone();
        let server = Server::start_with(
            Arc::new(move |r: &Recorded| handle(&mut lock(&shared), r)),
            tls,
        )?;
        Ok(Amberflo { server, state })
    }

    /// The base URL to give usage-sync (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far, as it arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Connections accepted so far (over HTTPS: TLS handshakes completed).
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// Ingests another record: late usage, which changes a total already
    /// queried (Amberflo accepts backfills up to 60 days back). A record with
    /// the same timestamp and dimensions (customer, meter) replaces the one
    /// ingested before: Amberflo keeps "the value most recently received".
    pub fn ingest(&self, record: UsageRecord) {
        let mut state = lock(&self.state);
        let same = state.by_customer.get(&record.customer_id).and_then(|ids| {
            ids.iter().copied().find(|&i| {
                let r = &state.records[i];
                r.meter_api_name == record.meter_api_name && r.time == record.time
            })
        });
        if let Some(at) = same {
            state.records[at] = record;
            return;
        }
        let at = state.records.len();
        state
            .by_customer
            .entry(record.customer_id.clone())
            .or_default()
            .push(at);
        state.records.push(record);
    }

    /// Cancels the record with this timestamp and dimensions: it no longer
    /// counts in any total. Whether there was one.
    pub fn cancel(&self, customer_id: &str, meter_api_name: &str, time: i64) -> bool {
        let mut state = lock(&self.state);
        let found = state.by_customer.get(customer_id).and_then(|ids| {
            ids.iter().copied().find(|&i| {
                let r = &state.records[i];
                r.meter_api_name == meter_api_name && r.time == time
            })
        });
        match found {
            Some(at) => {
                state.records[at].value = 0.0;
                true
            }
            None => false,
        }
    }

    /// Answers the next query with 200 and this body instead of the stored usage.
    pub fn answer_next_with(&self, body: &str) {
        lock(&self.state).canned.push_back(body.into());
    }

    /// Injects `fault` into every following request (`None` to heal).
    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).faults.set(fault);
    }

    /// Injects these faults into the next requests, one each.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).faults.push(faults);
    }
}

fn message(status: u16, text: &str) -> Reply {
    Reply::json(status, &json!({ "message": text }))
}

fn handle(state: &mut State, request: &Recorded) -> Reply {
    if let Some(body) = state.canned.pop_front() {
        let mut reply = message(200, "");
        reply.body = body.into_bytes();
        return reply;
    }
    let fault = state.faults.next();
    if let Some(reply) = Reply::hostile(fault, request) {
        return reply;
    }
    match fault {
        Some(Fault::Status(status) | Fault::RecordThenStatus(status)) => {
            message(status, "Internal server error")
        }
        Some(Fault::RecordThenRetryAfter(secs)) => {
            message(503, "Service Unavailable").with_header("retry-after", secs.to_string())
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            let reply = message(429, "Too Many Requests");
            match retry_after {
                Some(secs) => reply.with_header("retry-after", secs.to_string()),
                None => reply,
            }
        }
        Some(Fault::MalformedJson) => {
            let mut reply = message(200, "");
            reply.body = br#"{"metadata": {"meterApiName": "#.to_vec();
            reply
        }
        _ => answer(state, request).after(fault),
    }
}

fn answer(state: &State, request: &Recorded) -> Reply {
    if request.method != "POST" || !matches!(request.target.as_str(), "/usage" | "/usage/") {
        return message(404, "Not Found");
    }
    if request.header("x-api-key") != Some(state.api_key.as_str()) {
        return message(401, "Unauthorized");
    }
    if !request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"))
    {
        return message(415, "Content-Type must be application/json");
    }
    let query: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => return message(400, &format!("Invalid JSON body: {e}")),
    };
    let candidates: Vec<&UsageRecord> = match query["filter"]["customerId"].as_array() {
        Some(ids) => ids
            .iter()
            .filter_map(|id| state.by_customer.get(id.as_str()?))
            .flatten()
            .map(|&i| &state.records[i])
            .collect(),
        None => state.records.iter().collect(),
    };
    match aggregate(&candidates, &query) {
        Ok(body) => Reply::json(200, &body),
        Err(why) => message(400, &why),
    }
}

/// Groups a `groupBy` query returns when it gives no `take.limit` (an
/// assumption: Amberflo documents none).
const DEFAULT_TAKE: usize = 10;

/// Aggregates the stored records for a query, filling gaps with zero buckets.
fn aggregate(records: &[&UsageRecord], query: &Value) -> Result<Value, String> {
    let meter = query["meterApiName"]
        .as_str()
        .ok_or("meterApiName is required")?;
    let aggregation = query["aggregation"]
        .as_str()
        .ok_or("aggregation is required")?;
    if !matches!(aggregation, "SUM" | "COUNT" | "MIN" | "MAX") {
        return Err(format!("Invalid aggregation: {aggregation}"));
    }
    let step = match query["timeGroupingInterval"].as_str() {
        Some("HOUR") => 3600,
        Some("DAY") => 86_400,
        Some(other @ ("WEEK" | "MONTH")) => {
            return Err(format!("timeGroupingInterval {other} is not emulated"));
        }
        Some(other) => return Err(format!("Invalid timeGroupingInterval: {other}")),
        None => return Err("timeGroupingInterval is required".into()),
    };
    let range = &query["timeRange"];
    let start = range["startTimeInSeconds"]
        .as_i64()
        .ok_or("timeRange.startTimeInSeconds is required")?;
    let end = match &range["endTimeInSeconds"] {
        Value::Null => crate::unix_now(),
        v => v
            .as_i64()
            .ok_or("timeRange.endTimeInSeconds must be an integer")?,
    };
    let customers: Option<Vec<&str>> = match &query["filter"]["customerId"] {
        Value::Null => None,
        Value::Array(ids) => Some(ids.iter().filter_map(Value::as_str).collect()),
        _ => return Err("filter.customerId must be an array".into()),
    };
    let by_customer = query["groupBy"]
        .as_array()
        .is_some_and(|g| g.iter().any(|d| d == "customerId"));

    let first = start.div_euclid(step) * step;
    let buckets: Vec<i64> = (first..end).step_by(step as usize).collect();
    let mut groups: BTreeMap<Option<&str>, Vec<Vec<f64>>> = BTreeMap::new();
    if !by_customer {
        groups.insert(None, vec![Vec::new(); buckets.len()]);
    }
    for r in records.iter().filter(|r| {
        r.meter_api_name == meter
            && r.time >= start
            && r.time < end
            && customers
                .as_ref()
                .is_none_or(|c| c.contains(&r.customer_id.as_str()))
    }) {
        let key = by_customer.then_some(r.customer_id.as_str());
        let slot = ((r.time.div_euclid(step) * step - first) / step) as usize;
        groups
            .entry(key)
            .or_insert_with(|| vec![Vec::new(); buckets.len()])[slot]
            .push(r.value);
    }
    let aggregate = |values: &[f64]| -> f64 {
        match aggregation {
            "COUNT" => values.len() as f64,
            "MIN" => values.iter().copied().reduce(f64::min).unwrap_or(0.0),
            "MAX" => values.iter().copied().reduce(f64::max).unwrap_or(0.0),
            _ => values.iter().sum(),
        }
    };
    let mut groups: Vec<_> = groups.into_iter().collect();
    if by_customer {
        // `take` keeps the top `limit` groups by value. Amberflo documents no
        // default; the emulator assumes a small one, so a grouped query that
        // leaves `take` out loses customers here as it may in production.
        let limit = match &query["take"]["limit"] {
            Value::Null => DEFAULT_TAKE,
            v => v.as_u64().ok_or("take.limit must be a positive integer")? as usize,
        };
        let ascending = query["take"]["isAscending"].as_bool().unwrap_or(false);
        let total = |slots: &Vec<Vec<f64>>| aggregate(&slots.concat());
        groups.sort_by(|a, b| {
            let order = total(&a.1).total_cmp(&total(&b.1));
            if ascending { order } else { order.reverse() }
        });
        groups.truncate(limit);
    }
    let client_meters: Vec<Value> = groups
        .into_iter()
        .map(|(customer, slots)| {
            let values: Vec<f64> = slots.iter().map(|v| aggregate(v)).collect();
            let all: Vec<f64> = slots.concat();
            json!({
                "group": customer.map(|c| json!({ "groupInfo": { "customerId": c } })),
                "groupValue": aggregate(&all),
                "percentageFromPrevious": 0.0,
                "values": values.iter().zip(&buckets).map(|(v, t)| json!({
                    "value": v,
                    "secondsSinceEpochUtc": t,
                    "percentageFromPrevious": 0.0,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "metadata": query,
        "secondsSinceEpochIntervals": buckets,
        "clientMeters": client_meters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(customer: &str, time: i64, value: f64) -> UsageRecord {
        UsageRecord {
            customer_id: customer.into(),
            meter_api_name: "api-calls".into(),
            time,
            value,
        }
    }

    #[test]
    fn sums_one_customer_per_day_with_gap_filling() {
        let records = [
            rec("acme", 86_400 + 10, 40.0),
            rec("acme", 86_400 + 20, 2.0),
            rec("other", 86_400 + 30, 100.0),
            rec("acme", 3 * 86_400, 7.0),
        ];
        let query = json!({
            "meterApiName": "api-calls", "aggregation": "SUM", "timeGroupingInterval": "DAY",
            "timeRange": {"startTimeInSeconds": 86_400, "endTimeInSeconds": 3 * 86_400},
            "filter": {"customerId": ["acme"]},
        });
        let body = aggregate(&records.iter().collect::<Vec<_>>(), &query).unwrap();
        assert_eq!(body["secondsSinceEpochIntervals"], json!([86_400, 172_800]));
        assert_eq!(body["clientMeters"][0]["group"], Value::Null);
        assert_eq!(body["clientMeters"][0]["groupValue"], json!(42.0));
        assert_eq!(body["clientMeters"][0]["values"][1]["value"], json!(0.0));
    }

    #[test]
    fn requires_a_time_range() {
        let query =
            json!({"meterApiName": "m", "aggregation": "SUM", "timeGroupingInterval": "DAY"});
        assert_eq!(
            aggregate(&[], &query).unwrap_err(),
            "timeRange.startTimeInSeconds is required"
        );
    }
}
