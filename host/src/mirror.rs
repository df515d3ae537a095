//! The component's answers as the report's mirror types, moved field by
//! field.
//!
//! Why by hand: a serde round trip (`Serialize` on the generated bindings,
//! `Deserialize` on the mirror) copied every string twice, escaped the
//! verbatim Amberflo answer each output carries, and was about 5 % of a
//! batched sync's CPU (README, "Benchmarks"). Here nothing is copied, and a
//! field added to `wit/usage-sync.wit` but not to the mirror is a compile
//! error rather than an internal error at run time.

use crate::bindings as wit;
use usage_sync_report as report;

impl From<wit::Outputs> for report::Outputs {
    fn from(o: wit::Outputs) -> Self {
        report::Outputs {
            usage_result: o.usage_result,
            event_name: o.event_name,
            window_start: o.window_start,
            window_end: o.window_end,
            measured_total: o.measured_total,
            billed_total: o.billed_total,
            meter: o.meter.into(),
            events: each(o.events),
            planned: each(o.planned),
            reads: each(o.reads),
            sources: o.sources,
            marks: each(o.marks),
            unbilled: each(o.unbilled),
            period_ends: o.period_ends,
            dry_run: o.dry_run,
        }
    }
}

impl From<wit::Meter> for report::Meter {
    fn from(m: wit::Meter) -> Self {
        report::Meter {
            id: m.id,
            event_name: m.event_name,
            customer_key: m.customer_key,
            value_key: m.value_key,
            pre_aggregated: m.pre_aggregated.map(Into::into),
        }
    }
}

impl From<wit::Interval> for report::Interval {
    fn from(i: wit::Interval) -> Self {
        match i {
            wit::Interval::Day => report::Interval::Day,
            wit::Interval::Hour => report::Interval::Hour,
            wit::Interval::Window => report::Interval::Window,
        }
    }
}

impl From<wit::Verification> for report::Verification {
    fn from(v: wit::Verification) -> Self {
        match v {
            wit::Verification::Identifier => report::Verification::Identifier,
            wit::Verification::Summary => report::Verification::Summary,
            wit::Verification::RecentWrite => report::Verification::RecentWrite,
        }
    }
}

impl From<wit::MeterEvent> for report::MeterEvent {
    fn from(e: wit::MeterEvent) -> Self {
        report::MeterEvent {
            meter_event_id: e.meter_event_id,
            event_name: e.event_name,
            usage_quantity: e.usage_quantity,
            amberflo_total: e.amberflo_total,
            window_start: e.window_start,
            window_end: e.window_end,
            timestamp: e.timestamp,
            already_recorded: e.already_recorded,
            verified_by: e.verified_by.map(Into::into),
            stripe_value: e.stripe_value,
            drift: e.drift,
            corrected_to: e.corrected_to,
            carried_into: e.carried_into,
            attempts: e.attempts,
        }
    }
}

impl From<wit::PlannedRequest> for report::PlannedRequest {
    fn from(p: wit::PlannedRequest) -> Self {
        report::PlannedRequest {
            method: p.method,
            url: p.url,
            headers: p.headers,
            body: p.body,
        }
    }
}

impl From<wit::StripeRead> for report::StripeRead {
    fn from(r: wit::StripeRead) -> Self {
        report::StripeRead {
            method: r.method,
            url: r.url,
            status: r.status,
            answer: r.answer,
        }
    }
}

impl From<wit::LedgerMark> for report::LedgerMark {
    fn from(m: wit::LedgerMark) -> Self {
        report::LedgerMark {
            meter_id: m.meter_id,
            day_start: m.day_start,
            through: m.through,
            total: m.total,
            at: m.at,
        }
    }
}

impl From<wit::Unbilled> for report::Unbilled {
    fn from(u: wit::Unbilled) -> Self {
        report::Unbilled {
            window_start: u.window_start,
            window_end: u.window_end,
            quantity: u.quantity,
            period_start: u.period_start,
            period_end: u.period_end,
            invoice: u.invoice,
            status: u.status,
            written: u.written,
        }
    }
}

impl From<wit::Step> for report::Step {
    fn from(s: wit::Step) -> Self {
        match s {
            wit::Step::QueryUsage => report::Step::QueryUsage,
            wit::Step::RecordStripeMeter => report::Step::RecordStripeMeter,
            wit::Step::FindMeter => report::Step::FindMeter,
            wit::Step::ReadSummaries => report::Step::ReadSummaries,
            wit::Step::ReadSubscriptions => report::Step::ReadSubscriptions,
            wit::Step::ReadInvoices => report::Step::ReadInvoices,
        }
    }
}

impl From<wit::Delivery> for report::Delivery {
    fn from(d: wit::Delivery) -> Self {
        match d {
            wit::Delivery::NotSent => report::Delivery::NotSent,
            wit::Delivery::Rejected => report::Delivery::Rejected,
            wit::Delivery::Unknown => report::Delivery::Unknown,
        }
    }
}

impl From<wit::StepFailure> for report::StepFailure {
    fn from(f: wit::StepFailure) -> Self {
        report::StepFailure {
            step: f.step.into(),
            status: f.status,
            message: f.message,
            request_id: f.request_id,
            delivery: f.delivery.into(),
            attempts: f.attempts,
            window_start: f.window_start,
            window_end: f.window_end,
            recorded: each(f.recorded),
        }
    }
}

impl From<wit::WorkflowError> for report::WorkflowError {
    fn from(e: wit::WorkflowError) -> Self {
        match e {
            wit::WorkflowError::InvalidInput(why) => report::WorkflowError::InvalidInput(why),
            wit::WorkflowError::StepFailed(f) => report::WorkflowError::StepFailed(f.into()),
        }
    }
}

/// Every item of a list, converted.
fn each<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A swapped pair of fields of one type would compile: every field here
    /// holds a value of its own, and comes out in the field of its name.
    #[test]
    fn every_field_lands_in_the_field_of_its_name() {
        let event = wit::MeterEvent {
            meter_event_id: "id".into(),
            event_name: "name".into(),
            usage_quantity: "1".into(),
            amberflo_total: Some("2".into()),
            window_start: 3,
            window_end: 4,
            timestamp: 5,
            already_recorded: true,
            verified_by: Some(wit::Verification::RecentWrite),
            stripe_value: Some("6".into()),
            drift: false,
            corrected_to: Some("7".into()),
            carried_into: Some(8),
            attempts: 9,
        };
        let outputs = wit::Outputs {
            usage_result: "[]".into(),
            event_name: "api_calls".into(),
            window_start: 10,
            window_end: 11,
            measured_total: "12".into(),
            billed_total: "13".into(),
            meter: wit::Meter {
                id: "mtr_1".into(),
                event_name: "api_calls".into(),
                customer_key: "stripe_customer_id".into(),
                value_key: "value".into(),
                pre_aggregated: Some(wit::Interval::Hour),
            },
            events: vec![event],
            planned: vec![wit::PlannedRequest {
                method: "POST".into(),
                url: "u".into(),
                headers: vec![("k".into(), "v".into())],
                body: "b".into(),
            }],
            reads: vec![wit::StripeRead {
                method: "GET".into(),
                url: "r".into(),
                status: 200,
                answer: "a".into(),
            }],
            sources: vec!["acme/calls".into()],
            marks: vec![wit::LedgerMark {
                meter_id: "mtr_1".into(),
                day_start: 14,
                through: 15,
                total: "16".into(),
                at: 17,
            }],
            unbilled: vec![wit::Unbilled {
                window_start: 18,
                window_end: 19,
                quantity: "20".into(),
                period_start: 21,
                period_end: Some(22),
                invoice: Some("in_1".into()),
                status: "ended".into(),
                written: true,
            }],
            period_ends: vec![23],
            dry_run: true,
        };
        let o = report::Outputs::from(outputs);
        let e = &o.events[0];
        assert_eq!(
            (&*e.meter_event_id, &*e.event_name, &*e.usage_quantity),
            ("id", "name", "1")
        );
        assert_eq!(e.amberflo_total.as_deref(), Some("2"));
        assert_eq!((e.window_start, e.window_end, e.timestamp), (3, 4, 5));
        assert!(e.already_recorded && !e.drift);
        assert_eq!(e.verified_by, Some(report::Verification::RecentWrite));
        assert_eq!(
            (e.stripe_value.as_deref(), e.corrected_to.as_deref()),
            (Some("6"), Some("7"))
        );
        assert_eq!((e.carried_into, e.attempts), (Some(8), 9));
        assert_eq!((&*o.usage_result, &*o.event_name), ("[]", "api_calls"));
        assert_eq!((o.window_start, o.window_end), (10, 11));
        assert_eq!((&*o.measured_total, &*o.billed_total), ("12", "13"));
        assert_eq!(
            (&*o.meter.customer_key, &*o.meter.value_key),
            ("stripe_customer_id", "value")
        );
        assert_eq!(o.meter.pre_aggregated, Some(report::Interval::Hour));
        let p = &o.planned[0];
        assert_eq!((&*p.method, &*p.url, &*p.body), ("POST", "u", "b"));
        let r = &o.reads[0];
        assert_eq!((&*r.url, r.status, &*r.answer), ("r", 200, "a"));
        let m = &o.marks[0];
        assert_eq!(
            (m.day_start, m.through, &*m.total, m.at),
            (14, 15, "16", 17)
        );
        let u = &o.unbilled[0];
        assert_eq!((u.window_start, u.window_end, &*u.quantity), (18, 19, "20"));
        assert_eq!((u.period_start, u.period_end), (21, Some(22)));
        assert_eq!((u.invoice.as_deref(), &*u.status), (Some("in_1"), "ended"));
        assert!(u.written && o.dry_run);
        assert_eq!(o.period_ends, [23]);
    }

    #[test]
    fn a_step_failure_keeps_its_step_delivery_and_window() {
        let error = wit::WorkflowError::StepFailed(wit::StepFailure {
            step: wit::Step::ReadInvoices,
            status: Some(409),
            message: "m".into(),
            request_id: Some("req_1".into()),
            delivery: wit::Delivery::Unknown,
            attempts: 2,
            window_start: 3,
            window_end: 4,
            recorded: Vec::new(),
        });
        let report::WorkflowError::StepFailed(f) = report::WorkflowError::from(error) else {
            panic!("not a step failure");
        };
        assert_eq!(
            (f.step, f.status, f.delivery),
            (
                report::Step::ReadInvoices,
                Some(409),
                report::Delivery::Unknown
            )
        );
        assert_eq!((&*f.message, f.request_id.as_deref()), ("m", Some("req_1")));
        assert_eq!((f.attempts, f.window_start, f.window_end), (2, 3, 4));
    }
}
