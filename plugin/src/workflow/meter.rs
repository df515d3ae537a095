//! The meter: found by paging through Stripe's meters (there is no filter by
//! event name), then checked for the run's interval.

use crate::prelude::*;

use super::calls::{Page, Paging, read_pages, read_record};
use super::failure::step_failed;
use crate::exports::usage_sync::workflow::workflow::{
    Endpoints, Interval, Meter, Options, Step, StripeRead, WorkflowError,
};
use crate::inputs::Window;
use crate::retry;
use crate::stripe;

/// Pages through `GET /v1/billing/meters` until the active meter of
/// `event_name` turns up (Stripe has no filter by event name).
pub(super) fn lookup(
    endpoints: &Endpoints,
    options: &Options,
    event_name: &str,
    window: Window,
    retry: &retry::Policy,
    reads: &mut Vec<StripeRead>,
) -> Result<Meter, WorkflowError> {
    let base = endpoints.stripe_url.trim_end_matches('/');
    let mut inactive: Option<String> = None;
    let found = read_pages(
        Step::FindMeter,
        window,
        retry,
        None,
        |after| stripe::meters_url(base, after),
        |url, reply, bad_answer| {
            let list = stripe::parse_meters(&reply.body).map_err(bad_answer)?;
            let count = list.data.len();
            let last = list.data.last().map(|m| m.id.clone());
            let mut answer = format!("{count} meter(s)");
            for meter in list.data.into_iter().filter(|m| m.event_name == event_name) {
                if meter.status == "active" {
                    let id = meter.id.clone();
                    let formula = meter.default_aggregation.formula.clone();
                    let checked = meter.check(options.interval);
                    answer.push_str(&format!(
                        "; {id} is the active meter of `{event_name}`: formula {formula}"
                    ));
                    if let Ok(m) = &checked {
                        let kind = match m.pre_aggregated {
                            Some(Interval::Hour) => "pre-aggregated per hour",
                            Some(_) => "pre-aggregated per day",
                            None => "raw events",
                        };
                        answer.push_str(&format!(
                            ", payload keys {} and {}, {kind}",
                            m.customer_key, m.value_key
                        ));
                    }
                    reads.push(read_record(url, answer));
                    return Ok(Page::Done(Some(checked)));
                }
                inactive.get_or_insert(meter.id);
            }
            answer.push_str(&format!(", none active for `{event_name}`"));
            reads.push(read_record(url, answer));
            Ok(match (list.has_more, last) {
                (false, _) => Page::Done(None),
                (true, last) => Page::After(last),
            })
        },
    )
    .map_err(|e| match e {
        Paging::Failed(e) => e,
        Paging::TooMany => step_failed(
            Step::FindMeter,
            window,
            None,
            format!(
                "no active meter for `{event_name}` in the first {} meters",
                stripe::MAX_PAGES * stripe::PAGE_LIMIT
            ),
            None,
            0,
        ),
    })?;
    match found {
        Some(checked) => checked
            .map_err(|why| WorkflowError::InvalidInput(format!("{why}; nothing was written"))),
        None => Err(WorkflowError::InvalidInput(match inactive {
            Some(id) => format!(
                "the Stripe meter {id} for event name `{event_name}` is inactive, so Stripe would not bill its events; nothing was written"
            ),
            None => format!(
                "no active Stripe meter has the event name `{event_name}`: create one, or give the event name of an existing meter; nothing was written"
            ),
        })),
    }
}
