//! What a run's end means: the guest's own answer, or the deadline, the
//! memory cap, a crash or the sandbox's refusals, each saying whether a write
//! may have reached Stripe.

use crate::bindings::WorkflowError;
use crate::egress::RunLog;
use crate::outcome::{Failure, guest_failure};
use crate::sandbox::limits::Limits;
use usage_sync_report::Delivery;
use wasmtime::Trap;

/// Decides what a run's result means, most serious first: a refused request or
/// a hit limit outranks whatever the guest made of it.
pub(crate) fn classify<T>(
    result: Result<wasmtime::Result<Result<T, WorkflowError>>, tokio::time::error::Elapsed>,
    memory_exceeded: bool,
    log: RunLog,
    limits: &Limits,
) -> Result<T, Failure> {
    // A run stopped midway must still say whether Stripe may hold events.
    let (aftermath, delivery) = if log.stripe_written() {
        (
            "; Stripe was called, so events may be recorded: rerun the same window, its identifiers make that safe",
            Delivery::Unknown,
        )
    } else {
        ("; nothing was written to Stripe", Delivery::NotSent)
    };
    let deadline = || {
        Failure::Sandbox(
            format!(
                "the run exceeded its deadline of {} s{aftermath}",
                limits.deadline.as_secs_f64()
            ),
            delivery,
        )
    };
    let guest = match result {
        Err(_) => return Err(deadline()),
        Ok(Err(trap)) if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
            return Err(deadline());
        }
        Ok(Err(_)) if memory_exceeded => {
            return Err(Failure::Sandbox(
                format!(
                    "the component exceeded its memory limit of {} MiB{aftermath}",
                    limits.max_memory_bytes >> 20
                ),
                delivery,
            ));
        }
        Ok(Err(error)) => {
            // A trap is the guest failing inside the sandbox; anything else is ours.
            return Err(match error.downcast_ref::<Trap>() {
                Some(trap) => Failure::Sandbox(
                    format!("the component crashed ({trap}){aftermath}"),
                    delivery,
                ),
                None => Failure::Internal(format!("running the component: {error:#}{aftermath}")),
            });
        }
        Ok(Ok(guest)) => guest,
    };
    let mut problems: Vec<String> = log.refusals.iter().map(|r| r.to_string()).collect();
    problems.extend(log.oversized.iter().map(|url| {
        format!(
            "the response from {url} exceeded the limit of {} bytes",
            limits.max_response_bytes
        )
    }));
    if !problems.is_empty() {
        let mut message = problems.join("; ");
        if let Err(error) = &guest {
            message = format!(
                "{message} (the workflow then reported: {})",
                guest_failure(error.clone()).message()
            );
        }
        return Err(Failure::Sandbox(message, delivery));
    }
    guest.map_err(guest_failure)
}
