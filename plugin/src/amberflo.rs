//! Step 1, `query-usage`: Amberflo `POST /usage`.

use crate::prelude::*;

use crate::decimal::Decimal;
use crate::http::USER_AGENT;
use crate::inputs::{Plan, Window};
use crate::maps::HashMap;
use crate::time;
use usage_sync_report::json::{self, Json, Out};

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

/// The query for the whole window; buckets of `grouping` (`DAY` or `HOUR`)
/// line up with the events' intervals.
pub fn request_body(plan: &Plan, window: Window, grouping: &'static str) -> Vec<u8> {
    body(
        &[&plan.customer_id],
        &plan.meter_api_name,
        window,
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
    let ids: Vec<Out> = customer_ids.iter().map(|&id| id.into()).collect();
    Out::object()
        .with("meterApiName", meter_api_name)
        .with("aggregation", "SUM")
        .with("timeGroupingInterval", grouping)
        // The real API requires it; the Arazzo payload has none.
        .with(
            "timeRange",
            Out::object()
                .with("startTimeInSeconds", window.start)
                .with("endTimeInSeconds", window.end),
        )
        .with_some("groupBy", by_customer.then(|| vec!["customerId"]))
        .with("filter", Out::object().with("customerId", ids))
        // With `groupBy`: Amberflo returns only the top `limit` groups, and
        // its default is undocumented, so a customer cut from the answer
        // would look like zero usage. Ask for every customer of the batch.
        .with_some(
            "take",
            by_customer.then(|| Out::object().with("limit", customer_ids.len())),
        )
        .compact()
        .into_bytes()
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

/// An answer's `clientMeters` and, when it lists them, its
/// `secondsSinceEpochIntervals`: the buckets every group's values belong to.
fn parse_body<'j, 'a>(doc: &'j Json<'a>) -> Result<(&'j Json<'a>, Option<Listed>), String> {
    let response = doc
        .object()
        .map_err(|e| format!("the response is not a JSON object: {e}"))?;
    let raw = response
        .get("clientMeters")
        .ok_or("the response has no `clientMeters`")?;
    let intervals = response
        .get("secondsSinceEpochIntervals")
        .map(|listed| {
            listed
                .array()
                .and_then(|seconds| seconds.iter().map(Json::integer).collect())
                .map(Listed::new)
                .map_err(|_| {
                    format!(
                        "`secondsSinceEpochIntervals` is not an array of Unix seconds: {}",
                        crate::http::snippet(listed.raw().as_bytes())
                    )
                })
        })
        .transpose()?;
    Ok((raw, intervals))
}

/// The buckets an answer lists, sorted and each once: searched, not hashed
/// (a hash set of its own would cost the component 2 KB).
struct Listed(Vec<i64>);

impl Listed {
    fn new(mut seconds: Vec<i64>) -> Listed {
        seconds.sort_unstable();
        seconds.dedup();
        Listed(seconds)
    }

    fn contains(&self, t: i64) -> bool {
        self.0.binary_search(&t).is_ok()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A group of `clientMeters`: whose usage it is, its values, and the sum
/// Amberflo states for them.
struct Group<'j, 'a> {
    customer: Option<String>,
    group_value: Option<&'j Json<'a>>,
    values: Option<&'j [Json<'a>]>,
}

impl<'j, 'a> Group<'j, 'a> {
    fn read(value: &'j Json<'a>) -> Result<Group<'j, 'a>, String> {
        let group = value.object()?;
        // `group.groupInfo`: names and values, every value a string.
        let mut customer = None;
        if let Some(info) = group.opt_object("group")? {
            json::within("group", || {
                let names = info.object("groupInfo")?;
                json::within("groupInfo", || {
                    for (name, value) in names.members() {
                        let value = value.str().map_err(|why| json::named(name, why))?;
                        if name == "customerId" {
                            customer = Some(value.to_owned());
                        }
                    }
                    Ok(())
                })
            })?;
        }
        Ok(Group {
            customer,
            group_value: group.get("groupValue"),
            values: group.opt_array("values")?,
        })
    }
}

/// Step 1's answer for `customer` over `window` in buckets of `grid` seconds.
pub fn parse_response(
    body: &[u8],
    customer: &str,
    window: Window,
    grid: i64,
) -> Result<Usage, String> {
    let doc = json::parse(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let (raw, intervals) = parse_body(&doc)?;
    checked(raw, customer, window, grid, intervals.as_ref())
}

/// `clientMeters` for `customer`, believed only as far as it proves itself: at
/// most one group, and it names this customer or none; its buckets as
/// [`check_group`] checks them. No group: no usage.
fn checked(
    raw: &Json,
    customer: &str,
    window: Window,
    grid: i64,
    intervals: Option<&Listed>,
) -> Result<Usage, String> {
    let not_groups = |e| format!("`clientMeters` is not an array of groups: {e}");
    let groups = raw.array().map_err(not_groups)?;
    // Counted before any is read: a million empty groups would not fit.
    if groups.len() > 1 {
        return Err(format!(
            "`clientMeters` has {} groups for the one customer `{customer}`",
            groups.len()
        ));
    }
    let groups = json::items(groups, Group::read).map_err(not_groups)?;
    let mut points = Vec::new();
    for (g, group) in groups.into_iter().enumerate() {
        if let Some(other) = group.customer.as_ref().filter(|id| *id != customer) {
            return Err(format!(
                "`clientMeters[{g}]` is the usage of customer `{other}`, not of `{customer}`"
            ));
        }
        points.extend(check_group(g, group, customer, window, grid, intervals)?);
    }
    Ok(Usage {
        client_meters: raw.raw().to_string(),
        points,
    })
}

/// How far a group's `groupValue` may stray from the exact sum of its values,
/// as a fraction of the sum of their magnitudes. Amberflo's numbers are
/// doubles, and so is its sum: 0.2 + 0.7 + 0.1 comes back as
/// 0.9999999999999999, and 24 × 0.05 as 1.2000000000000004. A float sum's
/// rounding is about 1e-16 per term, so a billionth leaves room for millions
/// of records while a bucket missing, doubled or changed by more than a
/// billionth of the total is still refused. What is billed is the values,
/// summed exactly; `groupValue` is only the check.
const GROUP_VALUE_SLACK: f64 = 1e-9;

/// `clientMeters[g].values[i]`, as a message names it.
#[derive(Clone, Copy)]
struct Here(usize, usize);

impl core::fmt::Display for Here {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "`clientMeters[{}].values[{}]`", self.0, self.1)
    }
}

/// The buckets of `clientMeters[g]`, the group of `customer`,
/// believed only as far as they prove themselves: every bucket inside
/// `window`, on the `grid` and listed once; every value a number; every
/// bucket one of the answer's `intervals` when it lists them; and the values
/// adding up to the group's `groupValue` when it states one.
fn check_group(
    g: usize,
    group: Group,
    customer: &str,
    window: Window,
    grid: i64,
    intervals: Option<&Listed>,
) -> Result<Vec<(i64, Decimal)>, String> {
    let values = group
        .values
        .ok_or_else(|| format!("`clientMeters[{g}]` has no `values`"))?;
    let mut points: Vec<(i64, Decimal)> = Vec::with_capacity(values.len());
    for (i, point) in values.iter().enumerate() {
        // Named only when something is wrong: formatted per point, it was a
        // third of the time spent checking an answer (perf).
        let here = Here(g, i);
        let point = point.object().map_err(|e| format!("{here}: {e}"))?;
        let t = point
            .opt_integer::<i64>("secondsSinceEpochUtc")
            .map_err(|e| format!("{here}: {e}"))?
            .ok_or_else(|| format!("{here} has no `secondsSinceEpochUtc`"))?;
        if t < window.start || t >= window.end {
            return Err(format!(
                "{here} is a bucket at {}, outside the window {} to {}",
                time::format(t),
                time::format(window.start),
                time::format(window.end)
            ));
        }
        if t.rem_euclid(grid) != 0 {
            return Err(format!(
                "{here} is a bucket at {}, not on the {} grid asked for",
                time::format(t),
                if grid == time::DAY {
                    "UTC day"
                } else {
                    "UTC hour"
                }
            ));
        }
        let value = point
            .get("value")
            .ok_or_else(|| format!("{here} has no `value`"))?;
        let value = Decimal::parse(value.raw()).map_err(|why| format!("{here}.value {why}"))?;
        points.push((t, value));
    }
    // Summed, two entries for one bucket would bill its usage twice.
    if let Some((first, i)) = repeated(&points) {
        let (t, value) = points[i];
        return Err(format!(
            "{} lists the bucket at {} of customer `{customer}` again (value {value}; `values[{first}]` has it already, value {}): a bucket counted twice bills its usage twice",
            Here(g, i),
            time::format(t),
            points[first].1
        ));
    }
    if let Some(listed) = intervals
        && let Some((i, (t, value))) = points
            .iter()
            .enumerate()
            .find(|(_, (t, _))| !listed.contains(*t))
    {
        return Err(format!(
            "`clientMeters[{g}].values[{i}]` is a bucket at {} of customer `{customer}` (value {value}) that is not one of the answer's {} `secondsSinceEpochIntervals`",
            time::format(*t),
            listed.len()
        ));
    }
    if let Some(stated) = group.group_value {
        group_value_agrees(g, stated.raw(), &points, customer)?;
    }
    Ok(points)
}

/// The first point, in the answer's order, whose bucket an earlier point
/// has already: `(earlier, it)`. Sorted rather than hashed (a hash map of
/// its own would cost the component 2 KB); an answer in time order, the
/// usual one, is not sorted at all.
fn repeated(points: &[(i64, Decimal)]) -> Option<(usize, usize)> {
    if points.windows(2).all(|w| w[0].0 < w[1].0) {
        return None;
    }
    // Equal buckets stay in the answer's order.
    crate::order::sorted_positions(points.iter().map(|p| (p.0, 0)))
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| (w[0].2, w[1].2))
        .min_by_key(|&(_, it)| it)
}

/// Whether the group's `groupValue` (its JSON text, `stated`) is the sum of
/// its `points`: exactly, or within a float sum's rounding
/// ([`GROUP_VALUE_SLACK`]).
fn group_value_agrees(
    g: usize,
    stated: &str,
    points: &[(i64, Decimal)],
    customer: &str,
) -> Result<(), String> {
    // What nearly every group states: its exact sum (first: on wasm a float's
    // parse and the field's name cost more than the rest of the check).
    let sum = Decimal::sum(points.iter().map(|(_, v)| v));
    if sum.is_some_and(|sum| Decimal::parse(stated).is_ok_and(|exact| exact == sum)) {
        return Ok(());
    }
    let field = format!("`clientMeters[{g}].groupValue`");
    // JSON text that Rust reads as a float is a JSON number (`inf` and `NaN`
    // are not JSON); a number too precise for Decimal is still a float.
    let float = stated
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("{field} `{stated}` is not a number"))?;
    let sum = sum.ok_or("Amberflo's values add up to more than usage-sync can hold")?;
    let magnitude: f64 = points.iter().map(|(_, v)| v.to_f64().abs()).sum();
    if (float - sum.to_f64()).abs() <= magnitude * GROUP_VALUE_SLACK {
        return Ok(());
    }
    let buckets = match (
        points.iter().map(|p| p.0).min(),
        points.iter().map(|p| p.0).max(),
    ) {
        (Some(first), Some(last)) => {
            format!(" from {} to {}", time::format(first), time::format(last))
        }
        _ => String::new(),
    };
    Err(format!(
        "the {} buckets of customer `{customer}`{buckets} add up to {sum}, but {field} is {stated}: the answer contradicts itself",
        points.len()
    ))
}

/// A batch answer cut into each customer's usage: its `clientMeters` (an
/// array holding its group; a customer without usage has no group, so `[]`)
/// and its points, each bucket once, in the answer's order. Each group is
/// checked as [`parse_response`] checks a customer's (against the answer's
/// `secondsSinceEpochIntervals` too), so a bad answer fails the query before
/// anything is written.
pub fn split_by_customer(
    body: &[u8],
    customer_ids: &[&str],
    window: Window,
    grid: i64,
) -> Result<Vec<Usage>, String> {
    let doc = json::parse(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let (raw, intervals) = parse_body(&doc)?;
    let groups = raw
        .array()
        .map_err(|_| "`clientMeters` is not an array of groups".to_string())?;
    let mut by_customer = HashMap::default();
    for (g, text) in groups.iter().enumerate() {
        let group =
            Group::read(text).map_err(|e| format!("`clientMeters[{g}]` is not a group: {e}"))?;
        let customer = group
            .customer
            .clone()
            .ok_or("a group of `clientMeters` names no customerId")?;
        if by_customer
            .insert(customer.clone(), (g, text, group))
            .is_some()
        {
            return Err(format!("customer `{customer}` has two groups"));
        }
    }
    let mut found = Vec::with_capacity(customer_ids.len());
    for id in customer_ids {
        found.push(by_customer.remove(*id).map(|group| (*id, group)));
    }
    if let Some(stray) = by_customer.keys().next() {
        return Err(format!(
            "the answer has a group for `{stray}`, which was not asked for"
        ));
    }
    let mut usage = Vec::with_capacity(found.len());
    for found in found {
        usage.push(match found {
            Some((customer, (g, text, group))) => {
                let points = check_group(g, group, customer, window, grid, intervals.as_ref())?;
                let mut one = String::with_capacity(text.raw().len() + 2);
                one.push('[');
                one.push_str(text.raw());
                one.push(']');
                Usage {
                    client_meters: one,
                    points,
                }
            }
            None => Usage {
                client_meters: "[]".into(),
                points: Vec::new(),
            },
        });
    }
    Ok(usage)
}

/// A customer's usage as [`split_by_customer`] gave it, passed back by the
/// caller of a batch query (`points`: `(at, decimal text)`): each point an
/// exact number of a bucket on `grid` inside `window`, each bucket once. Its
/// `clientMeters` were checked when the answer was split; they are carried,
/// not read again (that was half the cost of a batched row's step 2 in the
/// component). Only a caller's mistake fails here, so one message serves.
pub fn given<'p>(
    client_meters: String,
    points: impl ExactSizeIterator<Item = (i64, &'p str)>,
    window: Window,
    grid: i64,
) -> Result<Usage, String> {
    let mut checked: Vec<(i64, Decimal)> = Vec::with_capacity(points.len());
    let mut refused = None;
    for (i, (t, text)) in points.enumerate() {
        let placed = window.start <= t && t < window.end && t.rem_euclid(grid) == 0;
        match Decimal::parse(text) {
            Ok(value) if placed => checked.push((t, value)),
            _ => {
                refused = Some((i, t));
                break;
            }
        }
    }
    // Summed, a bucket given twice would bill its usage twice.
    if let Some((i, t)) = refused.or_else(|| repeated(&checked).map(|(_, i)| (i, checked[i].0))) {
        return Err(format!(
            "point {i} of the usage given, at {}, is not an exact number of a bucket on the run's {grid} s grid, once, inside its window",
            time::format(t)
        ));
    }
    Ok(Usage {
        client_meters,
        points: checked,
    })
}

/// A short message from an error body: Amberflo documents no error schema.
pub fn error_message(body: &[u8]) -> String {
    json::parse(body)
        .and_then(|doc| doc.object()?.string("message"))
        .unwrap_or_else(|_| crate::http::snippet(body))
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
            String::from_utf8(request_body(&plan, plan.window, "DAY")).unwrap(),
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
        let body = br#"{"metadata":{},"secondsSinceEpochIntervals":[0,3600,7200],"clientMeters":[ {"group":null,"groupValue":1.0,"values":[{"value":0.2,"secondsSinceEpochUtc":0},{"value":0.7,"secondsSinceEpochUtc":3600},{"value":0.1,"secondsSinceEpochUtc":7200}]} ]}"#;
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

    /// An answer with these `clientMeters` and, when given, these
    /// `secondsSinceEpochIntervals`.
    fn answer(client_meters: &str, intervals: Option<&str>) -> String {
        match intervals {
            Some(listed) => format!(
                r#"{{"secondsSinceEpochIntervals":{listed},"clientMeters":{client_meters}}}"#
            ),
            None => format!(r#"{{"clientMeters":{client_meters}}}"#),
        }
    }

    /// One group of `customer` (`null` for none) with `groupValue` when
    /// given, and `points` as `(value, secondsSinceEpochUtc)`.
    fn group(customer: Option<&str>, group_value: Option<&str>, points: &[(&str, i64)]) -> String {
        let tag = match customer {
            Some(c) => format!(r#"{{"groupInfo":{{"customerId":"{c}"}}}}"#),
            None => "null".into(),
        };
        let stated = group_value
            .map(|v| format!(r#","groupValue":{v}"#))
            .unwrap_or_default();
        let values: Vec<String> = points
            .iter()
            .map(|(v, t)| format!(r#"{{"value":{v},"secondsSinceEpochUtc":{t}}}"#))
            .collect();
        format!(
            r#"{{"group":{tag}{stated},"values":[{}]}}"#,
            values.join(",")
        )
    }

    /// The single-customer answer for `acme` over [`DAY`] in hours.
    fn acme(body: &str) -> Result<Usage, String> {
        parse_response(body.as_bytes(), "acme", DAY, 3600)
    }

    #[test]
    fn a_bucket_listed_twice_is_refused_not_summed() {
        // Summed, as they were before this check, these billed 20 for 10.
        let twice = format!(
            "[{}]",
            group(Some("acme"), None, &[("10.0", 3600), ("10.0", 3600)])
        );
        let err = acme(&answer(&twice, None)).unwrap_err();
        assert_eq!(
            err,
            "`clientMeters[0].values[1]` lists the bucket at 1970-01-01T01:00:00Z of customer `acme` again \
             (value 10; `values[0]` has it already, value 10): a bucket counted twice bills its usage twice"
        );
        // Apart, on other buckets, the same values are fine.
        let apart = format!(
            "[{}]",
            group(Some("acme"), Some("20"), &[("10.0", 0), ("10.0", 3600)])
        );
        assert_eq!(
            totals(&acme(&answer(&apart, None)).unwrap(), &[DAY]),
            ["20"]
        );
        // Not adjacent, different values, and in the batch path too.
        let spread = format!(
            "[{}]",
            group(Some("acme"), None, &[("1", 0), ("2", 7200), ("3.5", 0)])
        );
        let err = acme(&answer(&spread, None)).unwrap_err();
        assert!(
            err.contains("`clientMeters[0].values[2]` lists the bucket at 1970-01-01T00:00:00Z"),
            "{err}"
        );
        assert!(
            err.contains("(value 3.5; `values[0]` has it already, value 1)"),
            "{err}"
        );
        let err =
            split_by_customer(answer(&spread, None).as_bytes(), &["acme"], DAY, 3600).unwrap_err();
        assert!(err.contains("of customer `acme` again"), "{err}");
        // Two buckets listed twice, out of order: named as a reader meets
        // them, the first repeat first.
        let two = format!(
            "[{}]",
            group(
                Some("acme"),
                None,
                &[("1", 7200), ("2", 7200), ("3", 0), ("4", 0)]
            )
        );
        let err = acme(&answer(&two, None)).unwrap_err();
        assert!(
            err.starts_with("`clientMeters[0].values[1]` lists the bucket at 1970-01-01T02:00:00Z"),
            "{err}"
        );
        assert!(
            err.contains("(value 2; `values[0]` has it already, value 1)"),
            "{err}"
        );
    }

    #[test]
    fn a_value_outside_the_listed_intervals_is_refused() {
        let points = [("4", 0), ("5", 7200)];
        let meters = format!("[{}]", group(Some("acme"), None, &points));
        let err = acme(&answer(&meters, Some("[0,3600]"))).unwrap_err();
        assert_eq!(
            err,
            "`clientMeters[0].values[1]` is a bucket at 1970-01-01T02:00:00Z of customer `acme` (value 5) \
             that is not one of the answer's 2 `secondsSinceEpochIntervals`"
        );
        // Listed: fine; a listed interval without a value is a gap, zero.
        let usage = acme(&answer(&meters, Some("[0,3600,7200]"))).unwrap();
        assert_eq!(totals(&usage, &[DAY]), ["9"]);
        // Not listed at all (the list is optional): nothing to compare with.
        assert!(acme(&answer(&meters, None)).is_ok());
        assert!(acme(&answer(&meters, Some("null"))).is_ok());
        // An empty list disagrees with any value.
        let err = acme(&answer(&meters, Some("[]"))).unwrap_err();
        assert!(
            err.contains("1970-01-01T00:00:00Z of customer `acme` (value 4)"),
            "{err}"
        );
        let err = acme(&answer(&meters, Some(r#"["0"]"#))).unwrap_err();
        assert!(
            err.contains("`secondsSinceEpochIntervals` is not an array of Unix seconds"),
            "{err}"
        );
        // The batch path compares each group with the list.
        let batch = answer(&meters, Some("[0,3600]"));
        let err = split_by_customer(batch.as_bytes(), &["acme"], DAY, 3600).unwrap_err();
        assert!(
            err.contains("1970-01-01T02:00:00Z of customer `acme` (value 5)"),
            "{err}"
        );
        let batch = answer(&meters, Some("[0,3600,7200]"));
        assert!(split_by_customer(batch.as_bytes(), &["acme"], DAY, 3600).is_ok());
    }

    #[test]
    fn values_must_add_up_to_the_group_value() {
        let meters = |stated: &str| {
            format!(
                "[{}]",
                group(Some("acme"), Some(stated), &[("4040.0", 0), ("0.5", 3600)])
            )
        };
        // Float text is read as the values are: 4040.5 is 4040.50.
        for stated in ["4040.5", "4040.50", "4.0405e3"] {
            assert!(acme(&answer(&meters(stated), None)).is_ok(), "{stated}");
        }
        let err = acme(&answer(&meters("4041.0"), None)).unwrap_err();
        assert_eq!(
            err,
            "the 2 buckets of customer `acme` from 1970-01-01T00:00:00Z to 1970-01-01T01:00:00Z \
             add up to 4040.5, but `clientMeters[0].groupValue` is 4041.0: the answer contradicts itself"
        );
        // A value doubled: the total no longer adds up.
        let doubled = format!("[{}]", group(Some("acme"), Some("10.0"), &[("20.0", 0)]));
        let err = acme(&answer(&doubled, None)).unwrap_err();
        assert!(
            err.contains("add up to 20, but `clientMeters[0].groupValue` is 10.0"),
            "{err}"
        );
        // No values, a stated total: refused too.
        let empty = format!("[{}]", group(Some("acme"), Some("7"), &[]));
        let err = acme(&answer(&empty, None)).unwrap_err();
        assert!(
            err.contains("the 0 buckets of customer `acme` add up to 0, but"),
            "{err}"
        );
        // groupValue is optional; when it is not a number, refused.
        let absent = format!("[{}]", group(Some("acme"), None, &[("3", 0)]));
        assert!(acme(&answer(&absent, None)).is_ok());
        let null = format!("[{}]", group(Some("acme"), Some("null"), &[("3", 0)]));
        assert!(acme(&answer(&null, None)).is_ok());
        let text = format!("[{}]", group(Some("acme"), Some(r#""3""#), &[("3", 0)]));
        let err = acme(&answer(&text, None)).unwrap_err();
        assert!(
            err.contains("`clientMeters[0].groupValue` `\"3\"` is not a number"),
            "{err}"
        );
        // The same in the batch path.
        let err =
            split_by_customer(answer(&doubled, None).as_bytes(), &["acme"], DAY, 3600).unwrap_err();
        assert!(err.contains("add up to 20"), "{err}");
    }

    #[test]
    fn a_group_value_that_is_the_float_sum_of_the_values_agrees() {
        // Amberflo's numbers are doubles: 0.2 + 0.7 + 0.1 comes back as
        // 0.9999999999999999, and 24 × 0.05 as 1.2000000000000004. The
        // values are what is billed (exactly 1 and 1.2); the group value
        // agrees with them within a float sum's rounding.
        let days = format!(
            "[{}]",
            group(
                None,
                Some("0.9999999999999999"),
                &[("0.2", 0), ("0.7", 3600), ("0.1", 7200)]
            )
        );
        assert_eq!(totals(&acme(&answer(&days, None)).unwrap(), &[DAY]), ["1"]);
        let hours: Vec<(&str, i64)> = (0..24).map(|h| ("0.05", h * 3600)).collect();
        let hours = format!("[{}]", group(None, Some("1.2000000000000004"), &hours));
        assert_eq!(
            totals(&acme(&answer(&hours, None)).unwrap(), &[DAY]),
            ["1.2"]
        );
        // Beyond that rounding, refused: a millionth off on 1 is not a float sum's error.
        let off = format!(
            "[{}]",
            group(
                None,
                Some("0.999999"),
                &[("0.2", 0), ("0.7", 3600), ("0.1", 7200)]
            )
        );
        let err = acme(&answer(&off, None)).unwrap_err();
        assert!(
            err.contains("add up to 1, but `clientMeters[0].groupValue` is 0.999999"),
            "{err}"
        );
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
        let usage = split_by_customer(body, &["a", "b"], DAY, DAY.end).unwrap();
        assert_eq!(usage[0].client_meters, "[]");
        assert_eq!(
            usage[1].client_meters,
            r#"[{"group":{"groupInfo":{"customerId":"b"}},"values":[{"value":2.0,"secondsSinceEpochUtc":0}]}]"#
        );
        assert_eq!(totals(&usage[1], &[DAY]), ["2"]);
        assert_eq!(totals(&usage[0], &[DAY]), ["0"]);
        assert!(
            split_by_customer(body, &["a"], DAY, DAY.end)
                .unwrap_err()
                .contains("not asked for")
        );
        let twice = br#"{"clientMeters":[{"group":{"groupInfo":{"customerId":"b"}},"values":[]},{"group":{"groupInfo":{"customerId":"b"}},"values":[]}]}"#;
        assert!(
            split_by_customer(twice, &["b"], DAY, DAY.end)
                .unwrap_err()
                .contains("customer `b` has two groups")
        );
        let broken =
            br#"{"clientMeters":[{"group":{"groupInfo":{"customerId":"b"}},"values":{}}]}"#;
        assert!(
            split_by_customer(broken, &["b"], DAY, DAY.end)
                .unwrap_err()
                .contains("`clientMeters[0]` is not a group")
        );
        let ungrouped = br#"{"clientMeters":[{"group":null,"values":[]}]}"#;
        assert!(
            split_by_customer(ungrouped, &["a"], DAY, DAY.end)
                .unwrap_err()
                .contains("customerId")
        );
    }

    #[test]
    fn a_customers_points_are_the_answers_values() {
        let body = br#"{"clientMeters":[{"group":{"groupInfo":{"customerId":"a"}},"values":[{"value":3,"secondsSinceEpochUtc":7200},{"value":1.5,"secondsSinceEpochUtc":0},{"value":2,"secondsSinceEpochUtc":3600}]}]}"#;
        let usage = split_by_customer(body, &["a"], DAY, 3600).unwrap();
        let points: Vec<(i64, String)> = usage[0]
            .points
            .iter()
            .map(|(t, v)| (*t, v.to_string()))
            .collect();
        assert_eq!(
            points,
            [(7200, "3".into()), (0, "1.5".into()), (3600, "2".into())]
        );
        // The text stays as Amberflo wrote it.
        assert!(usage[0].client_meters.contains(r#"[{"value":3,"#));
    }

    #[test]
    fn given_points_are_checked_against_the_window_and_grid() {
        let given = |points: &[(i64, &str)]| {
            given("[]".into(), points.iter().copied(), DAY, 3600).map(|u| totals(&u, &[DAY]))
        };
        assert_eq!(given(&[]).unwrap(), ["0"]);
        // In any order, as Amberflo answered.
        assert_eq!(
            given(&[(3600, "0.7"), (0, "0.2"), (82_800, "0.1")]).unwrap(),
            ["1"]
        );
        let outside = given(&[(0, "1"), (86_400, "1")]).unwrap_err();
        assert_eq!(
            outside,
            "point 1 of the usage given, at 1970-01-02T00:00:00Z, is not an exact number of a bucket on the run's 3600 s grid, once, inside its window"
        );
        assert!(given(&[(-3600, "1")]).is_err());
        let off_grid = given(&[(1800, "1")]).unwrap_err();
        assert!(
            off_grid.starts_with("point 0 of the usage given, at 1970-01-01T00:30:00Z,"),
            "{off_grid}"
        );
        // A bucket twice would bill its usage twice: the second is named.
        let twice = given(&[(0, "1"), (3600, "2"), (0, "3")]).unwrap_err();
        assert!(
            twice.starts_with("point 2 of the usage given, at 1970-01-01T00:00:00Z,"),
            "{twice}"
        );
        let text = given(&[(0, "1e")]).unwrap_err();
        assert!(
            text.starts_with("point 0 of the usage given, at 1970-01-01T00:00:00Z,"),
            "{text}"
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let parse = |body: &[u8]| parse_response(body, "acme", DAY, 3600).unwrap_err();
        assert!(parse(b"{not json").contains("not valid JSON"));
        assert!(parse(b"{}").contains("clientMeters"));
    }
}
