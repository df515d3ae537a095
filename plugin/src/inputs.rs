//! Input validation: everything is checked before the first request.

use crate::prelude::*;

use crate::decimal::Decimal;
use crate::exports::usage_sync::workflow::workflow::{Inputs, Interval, Options};
use crate::quantity;
use crate::time::{self, DAY};

/// Stripe accepts meter events up to 35 days old. (It also takes timestamps
/// up to 5 minutes ahead, for clock drift; usage-sync never needs that, as
/// it records only windows that have ended.)
pub const MAX_AGE: i64 = 35 * DAY;
/// Stripe's limit on `event_name` and `identifier`.
pub const MAX_STRIPE_STRING: usize = 100;
/// More events than this in one run is a mistake (35 days of hours is 840).
pub const MAX_EVENTS: usize = 1000;

/// A usage window in Unix seconds: start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds, inclusive.
    pub start: i64,
    /// Unix seconds, exclusive.
    pub end: i64,
}

impl Window {
    /// The Stripe `timestamp`: the window's last second, so the event lands in
    /// the billing period that holds the usage.
    pub fn timestamp(&self) -> i64 {
        self.end - 1
    }

    /// The window from the start of its first UTC day: what a ledger compares
    /// (Stripe holds each day as a prefix from its start, see `ledger::day`).
    pub fn from_day_start(&self) -> Window {
        Window {
            start: self.start.div_euclid(DAY) * DAY,
            end: self.end,
        }
    }

    /// Cuts the window at multiples of `step` (UTC days or hours).
    pub fn split(&self, step: Option<i64>) -> Vec<Window> {
        let Some(step) = step else {
            return vec![*self];
        };
        let mut intervals = Vec::new();
        let mut start = self.start;
        while start < self.end {
            let end = ((start.div_euclid(step) + 1) * step).min(self.end);
            intervals.push(Window { start, end });
            start = end;
        }
        intervals
    }
}

/// Validated inputs: what the requests are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The Amberflo customer.
    pub customer_id: String,
    /// The Amberflo meter.
    pub meter_api_name: String,
    /// The Stripe customer.
    pub stripe_customer: String,
    /// The Stripe meter's event name.
    pub stripe_event_name: String,
    /// A canonical whole number, when given.
    pub usage_quantity: Option<String>,
    /// The whole window.
    pub window: Window,
    /// One meter event each, in order.
    pub intervals: Vec<Window>,
}

/// Checks the inputs against `options` at time `now` (Unix seconds); any error names the input.
pub fn validate(inputs: Inputs, options: &Options, now: i64) -> Result<Plan, String> {
    let customer_id = required("customerId", inputs.customer_id)?;
    let meter_api_name = required("meterApiName", inputs.meter_api_name)?;
    let stripe_customer = required("stripeCustomer", inputs.stripe_customer)?;
    let stripe_event_name = stripe_event_name(inputs.stripe_event_name)?;
    let usage_quantity = inputs
        .usage_quantity
        .map(|q| quantity::whole_number(&q).map_err(|why| format!("`usageQuantity` {why}")))
        .transpose()?;
    let window = window(inputs.start_time, inputs.end_time, now)?;
    on_the_grid(window, options.interval)?;
    scale(options)?;
    let intervals = window.split(Some(step(options.interval)));
    if intervals.len() > MAX_EVENTS {
        return Err(format!(
            "the window makes {} events, more than {MAX_EVENTS}: choose a shorter window or a longer interval",
            intervals.len()
        ));
    }
    if usage_quantity.is_some() && intervals.len() > 1 {
        return Err(format!(
            "`usageQuantity` is one value but the window makes {} events: leave it out to send each interval's Amberflo total, or give a window within one UTC day with --interval window",
            intervals.len()
        ));
    }
    // Every event must be acceptable to Stripe before anything is sent.
    let too_old = |p: &&Window| p.timestamp() < now - MAX_AGE;
    if let Some(old) = intervals.iter().find(too_old) {
        let mut err = format!(
            "the interval {} to {} ends more than 35 days ago: Stripe refuses meter events that old",
            time::format(old.start),
            time::format(old.end),
        );
        if let Some(first) = intervals.iter().find(|p| !too_old(p)) {
            err.push_str(&format!(
                "; start at {} or later",
                time::format(first.start)
            ));
        }
        return Err(err);
    }
    Ok(Plan {
        customer_id,
        meter_api_name,
        stripe_customer,
        stripe_event_name,
        usage_quantity,
        window,
        intervals,
    })
}

/// What Amberflo's totals are multiplied by before rounding: a positive
/// decimal, 1 when not given.
pub fn scale(options: &Options) -> Result<Decimal, String> {
    let Some(text) = &options.scale else {
        return Ok(Decimal::from_int(1));
    };
    let scale = Decimal::parse(text).map_err(|why| format!("the scale {why}"))?;
    if scale.is_zero() || scale.is_negative() {
        return Err(format!("the scale must be positive, not {scale}"));
    }
    Ok(scale)
}

/// Checks a Stripe event name: present, plain, and within Stripe's limit.
pub fn stripe_event_name(name: String) -> Result<String, String> {
    let name = required("stripeEventName", name)?;
    if name.chars().count() > MAX_STRIPE_STRING {
        return Err(format!(
            "`stripeEventName` is longer than Stripe's limit of {MAX_STRIPE_STRING} characters"
        ));
    }
    Ok(name)
}

/// Up to this many days, a window is measured and read back by hour: one
/// page of Stripe's 100 summary buckets holds it, and a billing period that
/// renews inside a day can be cut at its hour.
pub const HOURLY_DAYS: i64 = 4;

/// What a window's bounds must be aligned to: the interval's unit (days or
/// hours), and for `window` whole days when it is made of them, else hours.
pub fn alignment(interval: Interval, window: Window) -> i64 {
    match interval {
        Interval::Day => DAY,
        Interval::Hour => 3600,
        Interval::Window if window.start % DAY == 0 && window.end % DAY == 0 => DAY,
        Interval::Window => 3600,
    }
}

/// Amberflo's bucket for a window: hours for a window of up to
/// [`HOURLY_DAYS`] days (so a day can be cut where a billing period renews),
/// else the window's alignment.
pub fn grid(interval: Interval, window: Window) -> i64 {
    match window.end - window.start <= HOURLY_DAYS * DAY {
        true => 3600,
        false => alignment(interval, window),
    }
}

/// A window must start and end on the grid of its buckets: a misaligned one
/// would get identifiers of its own and bill its days a second time next to
/// the nightly run's, and Amberflo's buckets would spill over its edges.
fn on_the_grid(window: Window, interval: Interval) -> Result<(), String> {
    let grid = alignment(interval, window);
    if window.start % grid == 0 && window.end % grid == 0 {
        return Ok(());
    }
    let nearest = |t: i64| (t + grid / 2).div_euclid(grid) * grid;
    let start = nearest(window.start);
    let end = nearest(window.end).max(start + grid);
    let (unit, name) = match interval {
        Interval::Day => ("day", "day"),
        Interval::Hour => ("hour", "hour"),
        Interval::Window => ("hour", "window"),
    };
    Err(format!(
        "the window {} to {} is not on the UTC {unit} grid of --interval {name}: use {} to {}",
        time::format(window.start),
        time::format(window.end),
        time::format(start),
        time::format(end)
    ))
}

/// The length of one event's interval, or `None` for the whole window.
/// The ledger is kept per UTC day, so even `window` is cut at midnights: an
/// event for several days would sit in its last day's summary and make the
/// others look unbilled.
pub fn step(interval: Interval) -> i64 {
    match interval {
        Interval::Day | Interval::Window => DAY,
        Interval::Hour => 3600,
    }
}

fn required(name: &str, value: String) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("`{name}` is required"));
    }
    if value.trim() != value {
        return Err(format!("`{name}` has leading or trailing spaces"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{name}` contains control characters"));
    }
    Ok(value)
}

fn window(start: Option<String>, end: Option<String>, now: i64) -> Result<Window, String> {
    let window = match (start, end) {
        (None, None) => {
            let (start, end) = usage_sync_report::defaults::previous_utc_day(now);
            Window { start, end }
        }
        (Some(start), Some(end)) => Window {
            start: time::parse(&start).map_err(|why| format!("`startTime` {why}"))?,
            end: time::parse(&end).map_err(|why| format!("`endTime` {why}"))?,
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err(
                "give both `startTime` and `endTime`, or neither for the previous full UTC day"
                    .into(),
            );
        }
    };
    if window.start >= window.end {
        return Err(format!(
            "the window must end after it starts (startTime {}, endTime {})",
            time::format(window.start),
            time::format(window.end)
        ));
    }
    // An open window's total is partial, and its identifier would lock that
    // partial total in: the rest of its usage would never be billed.
    if window.end > now {
        return Err(format!(
            "the window has not ended yet: it ends at {}, in the future (now is {}), and usage for an open window is incomplete",
            time::format(window.end),
            time::format(now)
        ));
    }
    Ok(window)
}

/// Valid inputs and options, for the component's unit tests.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: i64 = 1_732_540_000; // 2024-11-25T13:06:40Z

    pub fn inputs() -> Inputs {
        Inputs {
            customer_id: "acme".into(),
            meter_api_name: "api-calls".into(),
            stripe_customer: "cus_123".into(),
            stripe_event_name: "api_calls".into(),
            usage_quantity: None,
            start_time: None,
            end_time: None,
        }
    }

    pub fn options(interval: Interval) -> Options {
        Options {
            max_retries: 2,
            retry_budget_ms: 60_000,
            rounding: None,
            reconcile: false,
            dry_run: false,
            interval,
            scale: None,
            true_up: false,
            allow_decrease: false,
            settle_hours: 72,
            attempt_header: false,
            carry_late_usage: false,
        }
    }

    fn check(i: Inputs) -> Result<Plan, String> {
        validate(i, &options(Interval::Day), NOW)
    }

    fn with(s: &str, e: &str) -> Inputs {
        let mut i = inputs();
        i.start_time = Some(s.into());
        i.end_time = Some(e.into());
        i
    }

    #[test]
    fn defaults_to_the_previous_utc_day() {
        let plan = check(inputs()).unwrap();
        let day = Window {
            start: 1_732_406_400,
            end: 1_732_492_800,
        };
        assert_eq!(plan.window, day);
        assert_eq!(plan.intervals, vec![day]);
        assert_eq!(plan.window.timestamp(), 1_732_492_799);
    }

    #[test]
    fn refuses_missing_or_odd_fields() {
        let mut i = inputs();
        i.customer_id = String::new();
        assert_eq!(check(i).unwrap_err(), "`customerId` is required");
        let mut i = inputs();
        i.stripe_event_name = "x".repeat(101);
        assert!(check(i).unwrap_err().contains("100 characters"));
        let mut i = inputs();
        i.meter_api_name = " api".into();
        assert!(check(i).unwrap_err().contains("spaces"));
        let mut i = inputs();
        i.usage_quantity = Some("4.5".into());
        assert!(check(i).unwrap_err().contains("whole number"));
    }

    #[test]
    fn windows_must_fit_stripes_range() {
        assert!(check(with("2024-11-24T00:00:00Z", "2024-11-25T00:00:00Z")).is_ok());
        let err = check(with("2024-10-01T00:00:00Z", "2024-10-02T00:00:00Z")).unwrap_err();
        assert!(err.contains("35 days"), "{err}");
        let err = check(with("2024-11-25T00:00:00Z", "2024-11-25T00:00:00Z")).unwrap_err();
        assert!(err.contains("must end after it starts"), "{err}");
        let mut i = inputs();
        i.start_time = Some("2024-11-24T00:00:00Z".into());
        assert!(check(i).unwrap_err().contains("both"));
    }

    #[test]
    fn only_ended_windows_are_accepted() {
        // An hour that ends 4 minutes from now: its total is still growing.
        // Stripe's 5-minute allowance for clock drift is about event
        // timestamps, not about usage that has not happened yet.
        let hour_end = (NOW / 3600 + 1) * 3600;
        let hourly = |now: i64| {
            validate(
                with(&(hour_end - 3600).to_string(), &hour_end.to_string()),
                &options(Interval::Hour),
                now,
            )
        };
        let err = hourly(hour_end - 240).unwrap_err();
        assert_eq!(
            err,
            "the window has not ended yet: it ends at 2024-11-25T14:00:00Z, in the future \
             (now is 2024-11-25T13:56:00Z), and usage for an open window is incomplete"
        );
        let err = hourly(hour_end - 1).unwrap_err();
        assert!(err.contains("has not ended yet"), "{err}");
        assert!(hourly(hour_end).is_ok());
        assert!(hourly(hour_end + 1).is_ok());
        // A day, and the default window at midnight.
        let err = check(with("2024-11-25T00:00:00Z", "2024-11-26T00:00:00Z")).unwrap_err();
        assert!(err.contains("ends at 2024-11-26T00:00:00Z"), "{err}");
        assert!(err.contains("now is 2024-11-25T13:06:40Z"), "{err}");
        let midnight = 1_732_492_800;
        let plan = validate(inputs(), &options(Interval::Day), midnight).unwrap();
        assert_eq!(plan.window.end, midnight);
    }

    #[test]
    fn backfills_make_one_event_per_interval() {
        let plan = check(with("2024-11-20T00:00:00Z", "2024-11-25T00:00:00Z")).unwrap();
        assert_eq!(plan.intervals.len(), 5);
        assert_eq!(
            plan.intervals[0].start,
            time::parse("2024-11-20T00:00:00Z").unwrap()
        );
        assert_eq!(plan.intervals[4].end, plan.window.end);
        assert!(plan.intervals.windows(2).all(|w| w[0].end == w[1].start));
        // A window off the grid is refused, naming the nearest one on it.
        let err = check(with("2024-11-23T12:00:00Z", "2024-11-24T06:00:00Z")).unwrap_err();
        assert!(
            err.contains("not on the UTC day grid of --interval day: use 2024-11-24T00:00:00Z to 2024-11-25T00:00:00Z"),
            "{err}"
        );
        let err = check(with("2024-11-23T00:00:00Z", "2024-11-23T23:59:59Z")).unwrap_err();
        assert!(
            err.contains("use 2024-11-23T00:00:00Z to 2024-11-24T00:00:00Z"),
            "{err}"
        );
        let window = |s: &str, e: &str| validate(with(s, e), &options(Interval::Window), NOW);
        assert!(window("2024-11-23T12:00:00Z", "2024-11-24T06:00:00Z").is_ok());
        assert!(
            window("2024-11-23T12:30:00Z", "2024-11-24T06:00:00Z")
                .unwrap_err()
                .contains("UTC hour grid of --interval window")
        );
        let hourly = validate(
            with("2024-11-24T00:00:00Z", "2024-11-25T00:00:00Z"),
            &options(Interval::Hour),
            NOW,
        )
        .unwrap();
        assert_eq!(hourly.intervals.len(), 24);
        let whole = validate(
            with("2024-11-20T00:00:00Z", "2024-11-25T00:00:00Z"),
            &options(Interval::Window),
            NOW,
        )
        .unwrap();
        // One event per UTC day: the ledger's unit.
        assert_eq!(whole.intervals, whole.window.split(Some(DAY)));
        assert_eq!(whole.intervals.len(), 5);
        let within = validate(
            with("2024-11-20T03:00:00Z", "2024-11-20T09:00:00Z"),
            &options(Interval::Window),
            NOW,
        )
        .unwrap();
        assert_eq!(within.intervals, vec![within.window]);
    }

    #[test]
    fn backfills_refuse_days_stripe_would_refuse() {
        // Day 36 back is too old, even though the window's end is recent.
        let err = check(with("2024-10-20T00:00:00Z", "2024-11-25T00:00:00Z")).unwrap_err();
        assert!(
            err.contains("2024-10-20T00:00:00Z to 2024-10-21T00:00:00Z"),
            "{err}"
        );
        assert!(
            err.contains("start at 2024-10-21T00:00:00Z or later"),
            "{err}"
        );
        assert!(check(with("2024-10-21T00:00:00Z", "2024-11-25T00:00:00Z")).is_ok());
        let mut i = with("2024-11-20T00:00:00Z", "2024-11-25T00:00:00Z");
        i.usage_quantity = Some("5".into());
        assert!(
            check(i)
                .unwrap_err()
                .contains("one value but the window makes 5 events")
        );
    }
}
