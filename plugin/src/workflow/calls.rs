//! Sending: the retry loop and its trace on stderr, Stripe's reads (one
//! page or a whole list), Amberflo's query and the write of one meter event.

use crate::prelude::*;

use super::failure::{describe, step_failed, write_failed};
use crate::ambient::{self, Started, idempotency_key, jitter};
use crate::exports::usage_sync::workflow::workflow::{
    Delivery, Endpoints, MeterEvent, Step, StepFailure, StripeRead, Verification, WorkflowError,
};
use crate::http::{self, NoAnswer, Reply};
use crate::inputs::Window;
use crate::retry::{self, Next};
use crate::{amberflo, credentials, stripe, time};
use core::time::Duration;
use usage_sync_report::keys::ATTEMPT_HEADER;

/// Sends until the answer is final under `rule`, or the retry policy is spent.
/// `send` is told the attempt's headers so far (the attempt number, which the
/// host reads and strips: the one place a retry is known) and whether the last
/// answer asks for a fresh idempotency key (`keyed`: the requests carry one,
/// which the trace then mentions).
pub(super) fn retrying(
    label: &str,
    retry: &retry::Policy,
    rule: fn(&Result<Reply, NoAnswer>) -> Next,
    keyed: bool,
    mut send: impl FnMut(&[(&str, &str)], bool) -> Result<Reply, NoAnswer>,
) -> (Result<Reply, NoAnswer>, u32) {
    let started = Started::now();
    let mut attempt = 0;
    let mut fresh_key = false;
    loop {
        attempt += 1;
        let number = attempt.to_string();
        let said: &[(&str, &str)] = match retry.attempt_header {
            true => &[(ATTEMPT_HEADER, number.as_str())],
            false => &[],
        };
        let result = send(said, fresh_key);
        let Next::Retry {
            retry_after,
            fresh_key: fresh,
        } = rule(&result)
        else {
            return (result, attempt);
        };
        fresh_key = fresh;
        let wait = retry.wait(attempt, started.elapsed(), retry_after, jitter());
        let how = match (keyed, fresh) {
            (false, _) => "",
            (true, true) => " with a fresh idempotency key",
            (true, false) => " with the same idempotency key",
        };
        trace(label, attempt, retry, &result, wait, how);
        match wait {
            Some(wait) => ambient::sleep(wait),
            None => return (result, attempt),
        }
    }
}

/// A Stripe read's first attempt, sent before the step that reads it: its
/// answer is taken by the read of the same URL, or dropped unread.
pub(super) struct Ahead {
    url: String,
    sent: Result<http::Pending, NoAnswer>,
}

impl Ahead {
    /// Sends `url`'s first attempt now, as [`read`] would send it.
    pub(super) fn send(url: String, retry: &retry::Policy) -> Ahead {
        let auth = credentials::stripe_header();
        let headers = stripe::read_headers(auth.as_ref());
        let sent = http::start_get(&url, &[first_attempt(retry), &headers].concat());
        Ahead { url, sent }
    }

    /// Its first attempt, when it was sent for `url`.
    fn for_url(self, url: &str) -> Option<Result<http::Pending, NoAnswer>> {
        (self.url == url).then_some(self.sent)
    }
}

/// The attempt header of a first try, as [`retrying`] sends it.
fn first_attempt(retry: &retry::Policy) -> &'static [(&'static str, &'static str)] {
    match retry.attempt_header {
        true => &[(ATTEMPT_HEADER, "1")],
        false => &[],
    }
}

/// GETs a Stripe read, retrying as Stripe's clients do (a read is safe to
/// repeat); anything but a 200 fails `step`, and nothing is written. `first`:
/// its first attempt, already sent ([`Ahead`]).
pub(super) fn read(
    url: &str,
    step: Step,
    window: Window,
    retry: &retry::Policy,
    mut first: Option<Result<http::Pending, NoAnswer>>,
) -> Result<(Reply, u32), WorkflowError> {
    let auth = credentials::stripe_header();
    let headers = stripe::read_headers(auth.as_ref());
    let label = match step {
        Step::FindMeter => "find-meter",
        Step::ReadSubscriptions => "read-subscriptions",
        Step::ReadInvoices => "read-invoices",
        _ => "read-summaries",
    };
    let (result, attempts) = retrying(label, retry, retry::stripe, false, |attempt, _| match first
        .take()
    {
        Some(sent) => sent.and_then(http::Pending::wait),
        None => http::get(url, &[attempt, &headers].concat()),
    });
    let failed = |(status, message, request_id)| {
        step_failed(step, window, status, message, request_id, attempts)
    };
    match result {
        Ok(reply) if reply.status == 200 => Ok((reply, attempts)),
        other => Err(failed(describe(other))),
    }
}

/// Posts an Amberflo query, retrying as the Amberflo rules allow; a non-200
/// answer is step 1's failure.
pub(super) fn query_amberflo(
    endpoints: &Endpoints,
    body: &[u8],
    window: Window,
    retry: &retry::Policy,
) -> Result<(Reply, u32), WorkflowError> {
    let url = join(&endpoints.amberflo_url, amberflo::PATH);
    let auth = credentials::amberflo_header();
    let headers = amberflo::headers(auth.as_ref());
    let (result, attempts) = retrying(
        "query-usage",
        retry,
        retry::amberflo,
        false,
        |attempt, _| http::post(&url, &[attempt, &headers].concat(), body),
    );
    let failed = |status, message, request_id| {
        step_failed(
            Step::QueryUsage,
            window,
            status,
            message,
            request_id,
            attempts,
        )
    };
    let reply = result.map_err(|f| failed(None, f.message, None))?;
    if reply.status != 200 {
        return Err(failed(
            Some(reply.status),
            amberflo::error_message(&reply.body),
            reply.request_id(),
        ));
    }
    Ok((reply, attempts))
}

/// Records one event, retrying as Stripe's clients do. The identifier never
/// changes; the idempotency key changes only after a 5xx, which Stripe stores
/// under its key and would replay.
pub(super) fn record(
    url: &str,
    mut event: MeterEvent,
    body: &str,
    interval: &Window,
    retry: &retry::Policy,
) -> Result<MeterEvent, StepFailure> {
    let label = format!(
        "record-stripe-meter {}..{}",
        time::format(interval.start),
        time::format(interval.end)
    );
    let mut key = idempotency_key();
    // Whether any attempt so far may have recorded the event.
    let mut uncertain = false;
    let (result, attempts) = retrying(&label, retry, retry::stripe, true, |attempt, fresh_key| {
        if fresh_key {
            key = idempotency_key();
        }
        let auth = credentials::stripe_header();
        let headers = stripe::event_headers(&key, auth.as_ref());
        let result = http::post(url, &[attempt, &headers].concat(), body.as_bytes());
        uncertain |= match &result {
            Ok(reply) => reply.status >= 500 || reply.status == 409,
            Err(f) => f.maybe_sent,
        };
        result
    });
    event.attempts = attempts;
    if let Ok(reply) = &result {
        if reply.status == 200 {
            let recorded = stripe::parse_event(&reply.body).and_then(|recorded| {
                // A 200 for another event proves nothing about this one.
                if recorded.identifier == event.meter_event_id
                    && recorded.event_name == event.event_name
                {
                    Ok(recorded)
                } else {
                    Err(format!(
                        "Stripe answered 200 for another event (identifier {}, event name {}) than the one sent",
                        recorded.identifier, recorded.event_name
                    ))
                }
            });
            return match recorded {
                Ok(_) => Ok(event),
                Err(m) => Err(write_failed(
                    &event,
                    interval,
                    Some(200),
                    m,
                    reply.request_id(),
                    Delivery::Unknown,
                )),
            };
        }
        if reply.status == 400
            && stripe::parse_error(&reply.body)
                .is_some_and(|e| e.is_duplicate_of(&event.meter_event_id))
        {
            event.already_recorded = true;
            event.verified_by = Some(Verification::Identifier);
            return Ok(event);
        }
    }
    let delivery = match &result {
        _ if uncertain => Delivery::Unknown,
        Ok(_) => Delivery::Rejected,
        Err(_) => Delivery::NotSent,
    };
    let (status, message, request_id) = describe(result);
    Err(write_failed(
        &event, interval, status, message, request_id, delivery,
    ))
}

/// One line on stderr per failed attempt: what happened and what comes next.
fn trace(
    label: &str,
    attempt: u32,
    retry: &retry::Policy,
    result: &Result<Reply, NoAnswer>,
    wait: Option<Duration>,
    how: &str,
) {
    let what = match result {
        Ok(reply) => match stripe::parse_error(&reply.body).and_then(|e| e.message) {
            Some(m) => format!("{} ({m})", reply.status),
            None => reply.status.to_string(),
        },
        Err(f) => f.message.clone(),
    };
    let next = match wait {
        Some(wait) => {
            // Hundredths by integers: formatting a float costs the
            // component 20 KB of float printing (twiggy).
            let hundredths = wait.as_millis().saturating_add(5) / 10;
            let (s, cs) = (hundredths / 100, hundredths % 100);
            format!("retrying in {s}.{cs:02} s{how}")
        }
        None => format!("giving up after {attempt} attempts"),
    };
    ambient::warn(format_args!(
        "usage-sync: {label} attempt {attempt}/{}: {what}; {next}",
        retry.max_retries + 1
    ));
}

/// `base` may carry a path prefix; a trailing slash must not double up.
pub(super) fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Where a page of a Stripe list leaves the reading.
pub(super) enum Page<T> {
    /// Read enough: the answer.
    Done(T),
    /// More follow, after this id (`None`: Stripe said more follow, but the
    /// page was empty).
    After(Option<String>),
}

/// Why a paged read ended without an answer.
pub(super) enum Paging {
    /// A read failed, or a page was not understood.
    Failed(WorkflowError),
    /// More than `stripe::MAX_PAGES` pages.
    TooMany,
}

/// Reads a Stripe list page by page (`starting_after` the last id of the
/// page before) until `page` has its answer. `page` gets the page's URL, the
/// reply and how to fail the step on an answer it cannot take. `ahead`: the
/// first page's first attempt, when it was sent early.
pub(super) fn read_pages<T>(
    step: Step,
    window: Window,
    retry: &retry::Policy,
    mut ahead: Option<Ahead>,
    url_of: impl Fn(Option<&str>) -> String,
    mut page: impl FnMut(
        String,
        &Reply,
        &dyn Fn(String) -> WorkflowError,
    ) -> Result<Page<T>, WorkflowError>,
) -> Result<T, Paging> {
    let mut after: Option<String> = None;
    for _ in 0..stripe::MAX_PAGES {
        let url = url_of(after.as_deref());
        let first = ahead.take().and_then(|a| a.for_url(&url));
        let (reply, attempts) = read(&url, step, window, retry, first).map_err(Paging::Failed)?;
        let bad_answer =
            |m: String| step_failed(step, window, Some(200), m, reply.request_id(), attempts);
        match page(url, &reply, &bad_answer).map_err(Paging::Failed)? {
            Page::Done(answer) => return Ok(answer),
            Page::After(Some(last)) => after = Some(last),
            Page::After(None) => {
                return Err(Paging::Failed(bad_answer(
                    "Stripe said more follow, but the page was empty".into(),
                )));
            }
        }
    }
    Err(Paging::TooMany)
}

/// The trace of one page read, for the outputs' `reads`.
pub(super) fn read_record(url: String, answer: String) -> StripeRead {
    StripeRead {
        method: "GET".into(),
        url,
        status: 200,
        answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_without_double_slashes() {
        assert_eq!(
            join("https://api.stripe.com/", "/v1/x"),
            "https://api.stripe.com/v1/x"
        );
        assert_eq!(
            join("http://127.0.0.1:9/p", "/usage"),
            "http://127.0.0.1:9/p/usage"
        );
    }
}
