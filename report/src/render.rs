//! The outputs object as printed (`usage-sync run`'s stdout, the component's
//! `POST /run` answer), and the one line for stderr saying what a run did.

use crate::prelude::*;

use crate::json::{self, Out};
use crate::keys;
use crate::wit::{Interval, Meter, MeterEvent, Outputs, PlannedRequest, Unbilled, Verification};

fn verification_name(v: Verification) -> &'static str {
    match v {
        Verification::Identifier => "identifier",
        Verification::Summary => "summary",
        Verification::RecentWrite => "recent-write",
    }
}

/// One meter event, as printed.
pub fn event_json(e: &MeterEvent) -> Out {
    Out::object()
        .with("meterEventId", &e.meter_event_id)
        .with("eventName", &e.event_name)
        .with("usageQuantity", &e.usage_quantity)
        .with("amberfloTotal", e.amberflo_total.as_deref())
        .with("startTime", e.window_start)
        .with("endTime", e.window_end)
        .with("timestamp", e.timestamp)
        .with("alreadyRecorded", e.already_recorded)
        // How `alreadyRecorded` was known: `identifier` or `summary`.
        .with("verifiedBy", e.verified_by.map(verification_name))
        // What Stripe held for the interval before this run, when it was read.
        .with("stripeValue", e.stripe_value.as_deref())
        // Stripe held another value: nothing was written.
        .with("drift", e.drift)
        // A true-up correction: Stripe's value for the interval once it is
        // counted (`stripeValue` is the value before).
        .with_some("correctedTo", e.corrected_to.as_deref())
        // Carried out of a closed period: the start of the open period it
        // was recorded in (`timestamp` lies there; the interval is what it
        // bills).
        .with_some("carriedInto", e.carried_into)
        .with("attempts", e.attempts)
}

/// The meter, as printed.
fn meter_json(m: &Meter) -> Out {
    Out::object()
        .with("id", &m.id)
        .with("eventName", &m.event_name)
        .with("customerKey", &m.customer_key)
        .with("valueKey", &m.value_key)
        // `day` or `hour` for a pre-aggregated meter.
        .with_some(
            "preAggregated",
            m.pre_aggregated.map(|i| match i {
                Interval::Day => "day",
                Interval::Hour => "hour",
                Interval::Window => "window",
            }),
        )
}

/// A Stripe request a dry run would send; the credential shown redacted.
fn planned_json(r: &PlannedRequest) -> Out {
    let mut headers = Out::object();
    for (name, value) in &r.headers {
        headers = headers.with(name.clone(), value);
    }
    // The host attaches it at the HTTP boundary; the guest never had it.
    let headers = headers.with("Authorization", keys::stripe_bearer(keys::REDACTED));
    Out::object()
        .with("method", &r.method)
        .with("url", &r.url)
        // Sorted, each name once: as printed since the first release.
        .with("headers", headers.sorted())
        .with("body", &r.body)
}

/// Usage no invoice bills now, as printed.
fn unbilled_json(u: &Unbilled) -> Out {
    Out::object()
        .with("windowStart", u.window_start)
        .with("windowEnd", u.window_end)
        .with("quantity", &u.quantity)
        .with("periodStart", u.period_start)
        .with("periodEnd", u.period_end)
        .with("invoice", u.invoice.as_deref())
        .with("status", &u.status)
        .with("written", u.written)
}

/// The outputs as pretty JSON text: the Arazzo outputs first, then what was
/// sent. With exactly one event its fields also stand at the top, as in the
/// Arazzo outputs.
pub fn render_outputs(outputs: &Outputs) -> String {
    let dry_run = outputs.dry_run;
    // Amberflo's `clientMeters`, byte for byte. The guest parsed it already;
    // a component that lies gets `null`, not broken JSON.
    let usage_result = match json::parse(outputs.usage_result.as_bytes()) {
        Ok(checked) => Out::Raw(checked.raw().to_owned()),
        Err(_) => Out::Null,
    };
    let single = match outputs.events.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    let mut top = Out::object()
        .with("usageResult", usage_result)
        .with_some("meterEventId", single.map(|e| e.meter_event_id.as_str()))
        .with("eventName", &outputs.event_name)
        .with_some("usageQuantity", single.map(|e| e.usage_quantity.as_str()))
        .with_some(
            "amberfloTotal",
            single.and_then(|e| e.amberflo_total.as_deref()),
        )
        .with("startTime", outputs.window_start)
        .with("endTime", outputs.window_end)
        .with_some("timestamp", single.map(|e| e.timestamp))
        .with_some("alreadyRecorded", single.map(|e| e.already_recorded))
        .with_some(
            "verifiedBy",
            single.map(|e| e.verified_by.map(verification_name)),
        )
        .with_some("stripeValue", single.map(|e| e.stripe_value.as_deref()))
        .with_some("drift", single.map(|e| e.drift))
        // A true-up correction of the single event: Stripe's value after it.
        .with_some(
            "correctedTo",
            single.and_then(|e| e.corrected_to.as_deref()),
        )
        .with_some("attempts", single.map(|e| e.attempts))
        // Amberflo's total for the window (times `--scale`), exactly.
        .with("measuredTotal", &outputs.measured_total)
        // The sum of the events' whole values.
        .with("billedTotal", &outputs.billed_total)
        .with("meter", meter_json(&outputs.meter))
        // The Amberflo sources of a ledger fed by more than one.
        .with_some(
            "sources",
            (outputs.sources.len() > 1).then(|| outputs.sources.clone()),
        )
        .with(
            "events",
            outputs.events.iter().map(event_json).collect::<Vec<_>>(),
        );
    // Usage no invoice bills now (a closed period, or no subscription yet).
    if !outputs.unbilled.is_empty() {
        let unbilled: Vec<Out> = outputs.unbilled.iter().map(unbilled_json).collect();
        top = top.with("unbilled", unbilled);
    }
    if dry_run {
        top = top.with("dryRun", true);
        // The reads a dry run made (the meter, the summaries) and their answers.
        if !outputs.reads.is_empty() {
            let reads: Vec<Out> = outputs
                .reads
                .iter()
                .map(|r| {
                    Out::object()
                        .with("method", &r.method)
                        .with("url", &r.url)
                        .with("status", r.status)
                        .with("answer", &r.answer)
                })
                .collect();
            top = top.with("stripeReads", reads);
        }
    }
    if !outputs.planned.is_empty() {
        let planned: Vec<Out> = outputs.planned.iter().map(planned_json).collect();
        top = top.with("stripeRequests", planned);
    }
    top.pretty()
}

/// One line for stderr saying what a successful run did.
pub fn summary(outputs: &Outputs) -> String {
    let mut line = if outputs.dry_run {
        format!(
            "dry run: {} Stripe read(s) made, {} Stripe write(s) shown on stdout, nothing written",
            outputs.reads.len(),
            outputs.planned.len()
        )
    } else {
        let recorded: Vec<&MeterEvent> = outputs
            .events
            .iter()
            .filter(|e| !e.already_recorded && !e.drift)
            .collect();
        let total: i128 = recorded
            .iter()
            .filter_map(|e| e.usage_quantity.parse::<i128>().ok())
            .sum();
        format!(
            "recorded {} event(s) on {} totalling {total}",
            recorded.len(),
            outputs.event_name
        )
    };
    let already = outputs.events.iter().filter(|e| e.already_recorded).count();
    if already > 0 {
        line.push_str(&format!(
            "; {already} already recorded in Stripe, nothing new sent for them"
        ));
    }
    if outputs.measured_total != outputs.billed_total {
        line.push_str(&format!(
            "; rounding each UTC day bills {} of the {} measured (see --scale)",
            outputs.billed_total, outputs.measured_total
        ));
    }
    let drifted: Vec<String> = outputs
        .drifted()
        .map(|e| {
            format!(
                "{}..{} Stripe holds {} where Amberflo measured {}",
                e.window_start,
                e.window_end,
                e.stripe_value.as_deref().unwrap_or("?"),
                e.usage_quantity
            )
        })
        .collect();
    if !drifted.is_empty() {
        line.push_str(&format!(
            "; DRIFT in {} interval(s), nothing written for them: {}",
            drifted.len(),
            drifted.join("; ")
        ));
    }
    let closed: Vec<String> = outputs
        .closed()
        .map(|u| match u.status.as_str() {
            "renewal-inside-day" => format!(
                "{} for {}..{}: a billing period renews at {} inside that UTC day, which this long window measures by day; rerun the day alone (measured by hour) to bill each part on its invoice",
                u.quantity,
                u.window_start,
                u.window_end,
                u.period_end.unwrap_or(u.window_end)
            ),
            _ => format!(
                "{} for {}..{} belongs to the period from {} whose invoice {} is {}",
                u.quantity,
                u.window_start,
                u.window_end,
                u.period_start,
                u.invoice.as_deref().unwrap_or("(none)"),
                u.status
            ),
        })
        .collect();
    if !closed.is_empty() {
        line.push_str(&format!(
            "; UNBILLED, nothing written: {}",
            closed.join("; ")
        ));
    }
    let pending: usize = outputs.unbilled.iter().filter(|u| u.written).count();
    if pending > 0 {
        line.push_str(&format!(
            "; {pending} event(s) written for a customer with no subscription item on the meter yet: no invoice bills them until one does"
        ));
    }
    line
}

/// The serde rendering this module's writer replaced (2026-12-04), kept as
/// the reference the printed bytes are compared with.
#[cfg(test)]
pub(crate) mod serde_reference {
    use super::verification_name;
    use crate::keys;
    use crate::wit::{Interval, Meter, MeterEvent, Outputs, PlannedRequest};
    use serde_json::Value;
    use serde_json::value::RawValue;

    /// One meter event, as printed.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct EventJson<'a> {
        meter_event_id: &'a str,
        event_name: &'a str,
        usage_quantity: &'a str,
        amberflo_total: Option<&'a str>,
        start_time: i64,
        end_time: i64,
        timestamp: i64,
        already_recorded: bool,
        /// How `already_recorded` was known: `identifier` or `summary`.
        verified_by: Option<&'static str>,
        /// What Stripe held for the interval before this run, when it was read.
        stripe_value: Option<&'a str>,
        /// Stripe held another value: nothing was written.
        drift: bool,
        /// A true-up correction: Stripe's value for the interval once it is
        /// counted (`stripeValue` is the value before).
        #[serde(skip_serializing_if = "Option::is_none")]
        corrected_to: Option<&'a str>,
        /// Carried out of a closed period: the start of the open period it was
        /// recorded in (`timestamp` lies there; the interval is what it bills).
        #[serde(skip_serializing_if = "Option::is_none")]
        carried_into: Option<i64>,
        attempts: u32,
    }

    impl<'a> From<&'a MeterEvent> for EventJson<'a> {
        fn from(e: &'a MeterEvent) -> EventJson<'a> {
            EventJson {
                meter_event_id: &e.meter_event_id,
                event_name: &e.event_name,
                usage_quantity: &e.usage_quantity,
                amberflo_total: e.amberflo_total.as_deref(),
                start_time: e.window_start,
                end_time: e.window_end,
                timestamp: e.timestamp,
                already_recorded: e.already_recorded,
                verified_by: e.verified_by.map(verification_name),
                stripe_value: e.stripe_value.as_deref(),
                drift: e.drift,
                corrected_to: e.corrected_to.as_deref(),
                carried_into: e.carried_into,
                attempts: e.attempts,
            }
        }
    }

    /// The meter, as printed.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct MeterJson<'a> {
        id: &'a str,
        event_name: &'a str,
        customer_key: &'a str,
        value_key: &'a str,
        /// `day` or `hour` for a pre-aggregated meter.
        #[serde(skip_serializing_if = "Option::is_none")]
        pre_aggregated: Option<&'static str>,
    }

    impl<'a> From<&'a Meter> for MeterJson<'a> {
        fn from(m: &'a Meter) -> MeterJson<'a> {
            MeterJson {
                id: &m.id,
                event_name: &m.event_name,
                customer_key: &m.customer_key,
                value_key: &m.value_key,
                pre_aggregated: m.pre_aggregated.map(|i| match i {
                    Interval::Day => "day",
                    Interval::Hour => "hour",
                    Interval::Window => "window",
                }),
            }
        }
    }

    /// A read of Stripe, as a dry run shows it.
    #[derive(serde::Serialize)]
    struct ReadJson<'a> {
        method: &'a str,
        url: &'a str,
        status: u16,
        answer: &'a str,
    }

    /// A Stripe request a dry run would send; the credential shown redacted.
    #[derive(serde::Serialize)]
    struct PlannedJson<'a> {
        method: &'a str,
        url: &'a str,
        headers: serde_json::Map<String, Value>,
        body: &'a str,
    }

    impl<'a> From<&'a PlannedRequest> for PlannedJson<'a> {
        fn from(r: &'a PlannedRequest) -> PlannedJson<'a> {
            let mut headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::from(v.as_str())))
                .collect();
            // The host attaches it at the HTTP boundary; the guest never had it.
            headers.insert(
                "Authorization".into(),
                keys::stripe_bearer(keys::REDACTED).into(),
            );
            PlannedJson {
                method: &r.method,
                url: &r.url,
                headers,
                body: &r.body,
            }
        }
    }

    /// The outputs object: the Arazzo outputs first, then what was sent. With
    /// exactly one event its fields also stand at the top, as in the Arazzo outputs.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutputsJson<'a> {
        /// Amberflo's `clientMeters`, byte for byte.
        usage_result: Box<RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        meter_event_id: Option<&'a str>,
        event_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage_quantity: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        amberflo_total: Option<&'a str>,
        start_time: i64,
        end_time: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        timestamp: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        already_recorded: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        verified_by: Option<Option<&'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stripe_value: Option<Option<&'a str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        drift: Option<bool>,
        /// A true-up correction of the single event: Stripe's value after it.
        #[serde(skip_serializing_if = "Option::is_none")]
        corrected_to: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        attempts: Option<u32>,
        /// Amberflo's total for the window (times `--scale`), exactly.
        measured_total: &'a str,
        /// The sum of the events' whole values.
        billed_total: &'a str,
        meter: MeterJson<'a>,
        /// The Amberflo sources of a ledger fed by more than one.
        #[serde(skip_serializing_if = "Option::is_none")]
        sources: Option<&'a [String]>,
        events: Vec<EventJson<'a>>,
        /// Usage no invoice bills now (a closed period, or no subscription yet).
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        unbilled: &'a [crate::Unbilled],
        #[serde(skip_serializing_if = "Option::is_none")]
        dry_run: Option<bool>,
        /// The reads a dry run made (the meter, the summaries) and their answers.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stripe_reads: Vec<ReadJson<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stripe_requests: Vec<PlannedJson<'a>>,
    }

    /// The outputs as pretty JSON text.
    pub(super) fn render_outputs(outputs: &Outputs) -> String {
        let dry_run = outputs.dry_run;
        // The guest parsed it already; a component that lies gets `null`, not broken JSON.
        let usage_result = RawValue::from_string(outputs.usage_result.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        let single = match outputs.events.as_slice() {
            [one] => Some(one),
            _ => None,
        };
        serde_json::to_string_pretty(&OutputsJson {
            usage_result,
            meter_event_id: single.map(|e| e.meter_event_id.as_str()),
            event_name: &outputs.event_name,
            usage_quantity: single.map(|e| e.usage_quantity.as_str()),
            amberflo_total: single.and_then(|e| e.amberflo_total.as_deref()),
            start_time: outputs.window_start,
            end_time: outputs.window_end,
            timestamp: single.map(|e| e.timestamp),
            already_recorded: single.map(|e| e.already_recorded),
            verified_by: single.map(|e| e.verified_by.map(verification_name)),
            stripe_value: single.map(|e| e.stripe_value.as_deref()),
            drift: single.map(|e| e.drift),
            corrected_to: single.and_then(|e| e.corrected_to.as_deref()),
            attempts: single.map(|e| e.attempts),
            measured_total: &outputs.measured_total,
            billed_total: &outputs.billed_total,
            meter: MeterJson::from(&outputs.meter),
            sources: (outputs.sources.len() > 1).then_some(outputs.sources.as_slice()),
            events: outputs.events.iter().map(EventJson::from).collect(),
            unbilled: &outputs.unbilled,
            dry_run: dry_run.then_some(true),
            stripe_reads: if dry_run {
                outputs
                    .reads
                    .iter()
                    .map(|r| ReadJson {
                        method: &r.method,
                        url: &r.url,
                        status: r.status,
                        answer: &r.answer,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            stripe_requests: outputs.planned.iter().map(PlannedJson::from).collect(),
        })
        .expect("plain data serializes")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wit::StripeRead;

    pub(crate) fn event(i: i64, full: bool) -> MeterEvent {
        MeterEvent {
            meter_event_id: format!("usync-{i}\u{1}\"é"),
            event_name: "api_calls".into(),
            usage_quantity: format!("{}", i * 7),
            amberflo_total: full.then(|| format!("{i}.50")),
            window_start: i * 86_400,
            window_end: (i + 1) * 86_400,
            timestamp: (i + 1) * 86_400 - 1,
            already_recorded: i % 2 == 0,
            verified_by: full.then_some(Verification::Summary),
            stripe_value: full.then(|| "3".into()),
            drift: full,
            corrected_to: full.then(|| "10".into()),
            carried_into: full.then_some(i * 3),
            attempts: 2,
        }
    }

    fn outputs(events: Vec<MeterEvent>, dry_run: bool) -> Outputs {
        Outputs {
            usage_result: " [{\"group\":null, \"values\":[1.50]}]\n".into(),
            event_name: "api_calls".into(),
            window_start: 0,
            window_end: 86_400 * 3,
            measured_total: "21.5".into(),
            billed_total: "21".into(),
            meter: Meter {
                id: "mtr_1".into(),
                event_name: "api_calls".into(),
                customer_key: "stripe_customer_id".into(),
                value_key: "value".into(),
                pre_aggregated: None,
            },
            events,
            planned: Vec::new(),
            reads: Vec::new(),
            sources: vec!["acme".into()],
            marks: Vec::new(),
            unbilled: Vec::new(),
            period_ends: Vec::new(),
            dry_run,
        }
    }

    /// Every optional part present and absent, against the serde rendering.
    #[test]
    fn prints_the_bytes_serde_printed() {
        let mut cases = vec![
            outputs(vec![event(1, true)], false),
            outputs(vec![event(2, false)], false),
            outputs(Vec::new(), false),
            outputs(vec![event(1, true), event(2, false), event(3, true)], true),
        ];
        cases[1].usage_result = "not json".into();
        cases[1].meter.pre_aggregated = Some(Interval::Hour);
        let rich = &mut cases[3];
        rich.sources = vec!["acme".into(), "acme-eu\t".into()];
        rich.unbilled = vec![
            Unbilled {
                window_start: 0,
                window_end: 3600,
                quantity: "4".into(),
                period_start: -86_400,
                period_end: Some(0),
                invoice: Some("in_1".into()),
                status: "paid".into(),
                written: false,
            },
            Unbilled {
                window_start: 3600,
                window_end: 7200,
                quantity: "0.5".into(),
                period_start: 0,
                period_end: None,
                invoice: None,
                status: "no-subscription".into(),
                written: true,
            },
        ];
        rich.reads = vec![StripeRead {
            method: "GET".into(),
            url: "https://api.stripe.com/v1/billing/meters?limit=100".into(),
            status: 200,
            answer: "{\"data\":[]}\n".into(),
        }];
        rich.planned = vec![PlannedRequest {
            method: "POST".into(),
            url: "https://api.stripe.com/v1/billing/meter_events".into(),
            headers: vec![
                ("Stripe-Version".into(), "2026-10-28.endive".into()),
                ("Idempotency-Key".into(), "k\u{7f}".into()),
                ("Authorization".into(), "Bearer sk_live_guest".into()),
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("Idempotency-Key".into(), "second".into()),
            ],
            body: "event_name=api_calls&payload[value]=7".into(),
        }];
        let mut reads_without_dry_run = outputs(vec![event(4, false)], false);
        reads_without_dry_run.reads = cases[3].reads.clone();
        cases.push(reads_without_dry_run);
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                render_outputs(case),
                serde_reference::render_outputs(case),
                "case {i}"
            );
        }
        assert!(render_outputs(&cases[1]).contains("\"usageResult\": null"));
    }
}
