//! Usage measured for a closed period (its invoice final, or about to be):
//! never stamped there. Reported as unbilled (exit 5), or with
//! `--late-usage carry` recorded in the open period's carry minute for its
//! origin (see [`crate::carry`]), at most what was not carried before.

use crate::prelude::*;

use super::carried::{Carried, Reader};
use super::{send, total, unbilled};
use crate::billing::Period;
use crate::by_time::ByTime;
use crate::carry;
use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{
    MeterEvent, Options, Outputs, Verification, WorkflowError,
};
use crate::inputs::{Plan, Window};
use crate::{retry, stripe};

/// One day (or its part in one period) of a closed period: the pieces the
/// ledger would write there.
pub(super) struct Late {
    /// The day's part in the closed period: the carry's origin.
    pub day: Window,
    /// The closed period.
    pub period: Period,
    /// `(interval, value)` the ledger found missing, true-up corrections too.
    pub pieces: Vec<(Window, Decimal)>,
}

/// What to do with one origin.
pub(super) struct Carry<'a> {
    pub late: Late,
    /// The open period to carry into; `None`: report only.
    pub open: Option<&'a Period>,
    /// The origin has settled (a true-up may correct it down).
    pub settled: bool,
}

impl Carry<'_> {
    /// Carries what is missing beyond what was carried before, or reports it.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        self,
        reader: &Reader,
        carried: &Carried,
        url: &str,
        plan: &Plan,
        buckets: &ByTime<Decimal>,
        options: &Options,
        retry: &retry::Policy,
        now: i64,
        outputs: &mut Outputs,
    ) -> Result<(), WorkflowError> {
        let late = self.late;
        let too_large = || WorkflowError::InvalidInput("the late usage is too large".into());
        let target = late
            .pieces
            .iter()
            .try_fold(Decimal::ZERO, |sum, p| sum.checked_add(p.1))
            .ok_or_else(too_large)?;
        let before = carried.out_of(reader, late.day.start, &mut outputs.reads)?;
        // A subscription that ended has no open period of its own; a carry
        // minute still ahead is taken on a later run.
        let into = self
            .open
            .filter(|_| late.period.status != "ended")
            .and_then(|open| Some((open, carry::slot(open.start, late.day.start)?)))
            .filter(|(_, slot)| slot.end <= now);
        let Some((open, slot)) = into else {
            report(late, before, target, outputs)?;
            return Ok(());
        };
        let origin = Window {
            start: late.day.start,
            end: late.day.end.min(plan.window.end),
        };
        let value = target.checked_sub(before).ok_or_else(too_large)?;
        let mut event = MeterEvent {
            meter_event_id: stripe::carry_identifier(plan, &origin, &target.to_string()),
            event_name: plan.stripe_event_name.clone(),
            usage_quantity: value.to_string(),
            amberflo_total: total(buckets, origin).map(|t| t.to_string()),
            window_start: origin.start,
            window_end: origin.end,
            timestamp: carry::stamp(slot),
            already_recorded: false,
            verified_by: None,
            stripe_value: Some(before.to_string()),
            drift: false,
            corrected_to: None,
            carried_into: Some(open.start),
            attempts: 0,
        };
        // The run measured the whole origin: what was carried must equal it.
        let whole = plan.window.end >= late.day.end;
        let decrease = whole && options.true_up && options.allow_decrease && self.settled;
        if value.is_zero() || (value.is_negative() && !decrease) {
            event.usage_quantity = before.to_string();
            match value.is_negative() && whole {
                // Carried more than the origin now measures.
                true => {
                    event.usage_quantity = target.to_string();
                    event.drift = true;
                }
                // What was carried covers this prefix of the origin (or all of it).
                false => {
                    event.already_recorded = true;
                    event.verified_by = Some(Verification::Summary);
                }
            }
            outputs.events.push(event);
            return Ok(());
        }
        send(url, plan, reader.meter, options, retry, event, outputs)?;
        Ok(())
    }
}

/// Reports what is still unbilled of `late`: each piece, or, when some of
/// the origin was carried before, what remains of it.
fn report(
    late: Late,
    before: Decimal,
    target: Decimal,
    outputs: &mut Outputs,
) -> Result<(), WorkflowError> {
    if before.is_zero() {
        for (window, value) in late.pieces {
            let piece = unbilled(window, value, Some(late.period.clone()), false);
            outputs.unbilled.push(piece);
        }
        return Ok(());
    }
    let remains = target
        .checked_sub(before)
        .ok_or_else(|| WorkflowError::InvalidInput("the late usage is too large".into()))?;
    if let (Some(first), Some(last)) = (late.pieces.first(), late.pieces.last())
        && !remains.is_negative()
        && !remains.is_zero()
    {
        let window = Window {
            start: first.0.start,
            end: last.0.end,
        };
        outputs
            .unbilled
            .push(unbilled(window, remains, Some(late.period), false));
    }
    Ok(())
}
