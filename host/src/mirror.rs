//! The component's answers as the report's mirror types, moved field by
//! field (`usage_sync_report::mirror_from!`, which the component's own HTTP
//! entry point uses too).
//!
//! Why not serde: a round trip (`Serialize` on the generated bindings,
//! `Deserialize` on the mirror) copied every string twice, escaped the
//! verbatim Amberflo answer each output carries, and was about 1 % of a
//! sync's instructions a row (BENCHMARKS.md). Here nothing is copied,
//! and a field added to `wit/usage-sync.wit` but not to the mirror is a
//! compile error rather than an internal error at run time.

use crate::bindings as wit;
#[cfg(test)]
use usage_sync_report as report;

usage_sync_report::mirror_from!(wit);

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
