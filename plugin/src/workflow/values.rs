//! The arithmetic of values: a given quantity's checks, each interval's
//! value, and what reconcile expects. Pure, so it is tested without a provider.

use crate::prelude::*;

use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{Options, Rounding};
use crate::inputs::Plan;
use crate::{quantity, time};

/// The value of each event: the given quantity, or each interval's Amberflo
/// total times the scale, rounded only as asked; with Amberflo's total.
pub(super) fn values(
    plan: &Plan,
    options: &Options,
    scale: Decimal,
    totals: &[Decimal],
) -> Result<Vec<(String, Decimal)>, String> {
    let scaled = |total: Decimal| scaled(total, scale);
    if let Some(given) = &plan.usage_quantity {
        let total = Decimal::sum(totals).ok_or("Amberflo's total is too large")?;
        if options.reconcile {
            let matches =
                quantity::from_total(scaled(total)?, options.rounding).is_ok_and(|t| t == *given);
            if !matches {
                return Err(format!(
                    "`usageQuantity` {given} differs from the Amberflo total {total} for the window; --reconcile refuses to send"
                ));
            }
        }
        return Ok(vec![(given.clone(), total)]);
    }
    plan.intervals
        .iter()
        .zip(totals)
        .map(|(interval, &total)| {
            let value = quantity::from_total(scaled(total)?, options.rounding).map_err(|why| {
                if plan.intervals.len() > 1 {
                    format!(
                        "{why} (interval {} to {})",
                        time::format(interval.start),
                        time::format(interval.end)
                    )
                } else {
                    why
                }
            })?;
            Ok((value, total))
        })
        .collect()
}

/// Reconcile's expected value per interval: each Amberflo total times the
/// scale, rounded only as asked.
pub(super) fn expected(
    totals: &[Decimal],
    scale: Decimal,
    rounding: Option<Rounding>,
) -> Result<Vec<Decimal>, String> {
    totals
        .iter()
        .map(|total| {
            let scaled = scaled(*total, scale)?;
            Ok(match rounding {
                Some(rule) => {
                    let whole = i64::try_from(scaled.round(rule))
                        .map_err(|_| format!("the total {scaled} is too large"))?;
                    Decimal::from_int(whole)
                }
                None => scaled,
            })
        })
        .collect()
}

/// An Amberflo total times the scale; events and reconcile say the same
/// when it overflows.
pub(super) fn scaled(total: Decimal, scale: Decimal) -> Result<Decimal, String> {
    total
        .checked_mul(scale)
        .ok_or_else(|| format!("the Amberflo total {total} times the scale {scale} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::usage_sync::workflow::workflow::Interval;
    use crate::inputs::{self, Window};

    fn plan(intervals: usize, given: Option<&str>) -> Plan {
        let day = |i: i64| Window {
            start: i * 86_400,
            end: (i + 1) * 86_400,
        };
        Plan {
            customer_id: "acme".into(),
            meter_api_name: "m".into(),
            stripe_customer: "cus_1".into(),
            stripe_event_name: "e".into(),
            usage_quantity: given.map(str::to_string),
            window: Window {
                start: 0,
                end: intervals as i64 * 86_400,
            },
            intervals: (0..intervals as i64).map(day).collect(),
        }
    }

    fn options(rounding: Option<Rounding>, reconcile: bool) -> Options {
        Options {
            max_retries: 2,
            retry_budget_ms: 1000,
            rounding,
            reconcile,
            dry_run: false,
            interval: Interval::Day,
            scale: None,
            true_up: false,
            allow_decrease: false,
            settle_hours: 72,
            attempt_header: false,
            carry_late_usage: false,
        }
    }

    fn scale(options: &Options) -> Decimal {
        inputs::scale(options).unwrap()
    }

    /// `values` with the scale the options give.
    fn values_for(
        plan: &Plan,
        options: &Options,
        totals: &[Decimal],
    ) -> Result<Vec<(String, Decimal)>, String> {
        values(plan, options, scale(options), totals)
    }

    fn d(texts: &[&str]) -> Vec<Decimal> {
        texts.iter().map(|t| Decimal::parse(t).unwrap()).collect()
    }

    fn shown(values: Vec<(String, Decimal)>) -> Vec<(String, String)> {
        values
            .into_iter()
            .map(|(v, t)| (v, t.to_string()))
            .collect()
    }

    #[test]
    fn values_come_from_totals_per_interval() {
        let got = values_for(&plan(2, None), &options(None, false), &d(&["3", "4"])).unwrap();
        assert_eq!(
            shown(got),
            [("3".into(), "3".into()), ("4".into(), "4".into())]
        );
        let err = values_for(&plan(2, None), &options(None, false), &d(&["3", "4.5"])).unwrap_err();
        assert!(err.contains("4.5 is not a whole number"), "{err}");
        assert!(err.contains("interval 1970-01-02T00:00:00Z"), "{err}");
        let ceil = options(Some(Rounding::Ceil), false);
        let got = values_for(&plan(1, None), &ceil, &d(&["4.5"])).unwrap();
        assert_eq!(got[0].0, "5");
    }

    #[test]
    fn a_scale_multiplies_before_rounding() {
        let mut scaled = options(Some(Rounding::Nearest), false);
        scaled.scale = Some("1000".into());
        let got = values_for(&plan(2, None), &scaled, &d(&["0.05", "1.2345"])).unwrap();
        assert_eq!(got[0].0, "50");
        assert_eq!(got[1].0, "1235");
    }

    #[test]
    fn reconcile_refuses_a_differing_quantity() {
        let given = plan(1, Some("12"));
        assert_eq!(
            shown(values_for(&given, &options(None, false), &d(&["7"])).unwrap()),
            [("12".into(), "7".into())]
        );
        let err = values_for(&given, &options(None, true), &d(&["7"])).unwrap_err();
        assert!(
            err.contains("`usageQuantity` 12 differs from the Amberflo total 7"),
            "{err}"
        );
        assert!(values_for(&given, &options(None, true), &d(&["12"])).is_ok());
        assert!(values_for(&given, &options(Some(Rounding::Floor), true), &d(&["12.4"])).is_ok());
    }
}
