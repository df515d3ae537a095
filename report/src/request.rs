//! The inputs JSON, as `usage-sync run --inputs FILE` and the component's
//! `POST /run` both read it: the Arazzo input names, and for `POST /run` the
//! options `run` takes as flags. One parser, so the two cannot drift apart.

use crate::prelude::*;

use crate::Interval;
use crate::json::{self, Json};

/// The inputs JSON. Every field may be left out: the component names a
/// missing input, and an option left out takes its [`crate::defaults`].
/// Unknown keys are an error.
#[derive(Debug, Default)]
pub struct RunRequest {
    /// `customerId`: the Amberflo customer.
    pub customer_id: Option<String>,
    /// `meterApiName`: the Amberflo meter.
    pub meter_api_name: Option<String>,
    /// `stripeCustomer`: the Stripe customer (`cus_...`).
    pub stripe_customer: Option<String>,
    /// `stripeEventName`: the Stripe meter's event name.
    pub stripe_event_name: Option<String>,
    /// `usageQuantity`: a string or a JSON number.
    pub usage_quantity: Option<Scalar>,
    /// `startTime`: Unix seconds (a number or a string) or RFC 3339.
    pub start_time: Option<Scalar>,
    /// `endTime`, as `startTime`.
    pub end_time: Option<Scalar>,
    /// Option `interval`: one of [`Interval::NAMES`].
    pub interval: Option<String>,
    /// Option `rounding`: one of [`Rounding::NAMES`].
    pub rounding: Option<String>,
    /// Option `reconcile`.
    pub reconcile: Option<bool>,
    /// Option `dryRun`.
    pub dry_run: Option<bool>,
    /// Option `maxRetries`.
    pub max_retries: Option<u32>,
    /// Option `retryBudgetMs`.
    pub retry_budget_ms: Option<u64>,
    /// Option `scale`: a string or a JSON number.
    pub scale: Option<Scalar>,
    /// Option `trueUp`.
    pub true_up: Option<bool>,
    /// Option `allowDecrease`.
    pub allow_decrease: Option<bool>,
    /// Option `settleHours`.
    pub settle_hours: Option<u32>,
    /// Option `lateUsage`: `report` (the default) or `carry`.
    pub late_usage: Option<String>,
}

/// A string, or a JSON number taken exactly as written (`1.50` stays `1.50`).
#[derive(Debug)]
pub struct Scalar(String);

impl Scalar {
    /// The value as text: a string's contents, or a number as written.
    pub fn text(&self) -> String {
        self.0.clone()
    }

    fn read(value: &Json) -> Scalar {
        Scalar(match value.str() {
            Ok(text) => text.to_owned(),
            // Anything else is kept as written, for the component to refuse
            // by name, as it refuses a bad string.
            Err(_) => value.raw().to_owned(),
        })
    }
}

/// The inputs JSON's names, in the order of [`RunRequest`]'s fields.
const FIELDS: [&str; 18] = [
    "customerId",
    "meterApiName",
    "stripeCustomer",
    "stripeEventName",
    "usageQuantity",
    "startTime",
    "endTime",
    "interval",
    "rounding",
    "reconcile",
    "dryRun",
    "maxRetries",
    "retryBudgetMs",
    "scale",
    "trueUp",
    "allowDecrease",
    "settleHours",
    "lateUsage",
];

impl RunRequest {
    /// Parses the inputs JSON; the error says what is wrong with it.
    pub fn parse(text: &[u8]) -> Result<RunRequest, String> {
        let doc = json::parse(text)?;
        let o = doc
            .object()
            .map_err(|why| format!("the inputs JSON is one object: {why}"))?;
        if let Some((unknown, _)) = o
            .members()
            .iter()
            .find(|(name, _)| !FIELDS.contains(&name.as_ref()))
        {
            let known: Vec<String> = FIELDS.iter().map(|f| format!("`{f}`")).collect();
            return Err(format!(
                "unknown field `{unknown}`, expected one of {}",
                known.join(", ")
            ));
        }
        let scalar = |name| o.get(name).map(Scalar::read);
        Ok(RunRequest {
            customer_id: o.opt_string("customerId")?,
            meter_api_name: o.opt_string("meterApiName")?,
            stripe_customer: o.opt_string("stripeCustomer")?,
            stripe_event_name: o.opt_string("stripeEventName")?,
            usage_quantity: scalar("usageQuantity"),
            start_time: scalar("startTime"),
            end_time: scalar("endTime"),
            interval: o.opt_string("interval")?,
            rounding: o.opt_string("rounding")?,
            reconcile: o.opt_bool("reconcile")?,
            dry_run: o.opt_bool("dryRun")?,
            max_retries: o.opt_integer("maxRetries")?,
            retry_budget_ms: o.opt_integer("retryBudgetMs")?,
            scale: scalar("scale"),
            true_up: o.opt_bool("trueUp")?,
            allow_decrease: o.opt_bool("allowDecrease")?,
            settle_hours: o.opt_integer("settleHours")?,
            late_usage: o.opt_string("lateUsage")?,
        })
    }

    /// The JSON names of the options given, for a reader that takes inputs only.
    pub fn options_given(&self) -> Vec<&'static str> {
        [
            ("interval", self.interval.is_some()),
            ("rounding", self.rounding.is_some()),
            ("reconcile", self.reconcile.is_some()),
            ("dryRun", self.dry_run.is_some()),
            ("maxRetries", self.max_retries.is_some()),
            ("retryBudgetMs", self.retry_budget_ms.is_some()),
            ("scale", self.scale.is_some()),
            ("trueUp", self.true_up.is_some()),
            ("allowDecrease", self.allow_decrease.is_some()),
            ("settleHours", self.settle_hours.is_some()),
            ("lateUsage", self.late_usage.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The `interval` option (default: day).
    pub fn interval(&self) -> Result<Interval, String> {
        match self.interval.as_deref() {
            None => Ok(Interval::Day),
            Some(name) => Interval::from_name(name)
                .ok_or_else(|| format!("`interval` is day, hour or window, not `{name}`")),
        }
    }

    /// The `lateUsage` option: whether usage for a period whose invoice is
    /// final is carried into the open period (default: reported, not written).
    pub fn carry_late_usage(&self) -> Result<bool, String> {
        match self.late_usage.as_deref() {
            None | Some("report") => Ok(false),
            Some("carry") => Ok(true),
            Some(other) => Err(format!("`lateUsage` is report or carry, not `{other}`")),
        }
    }

    /// The `rounding` option (default: none, an inexact total is refused).
    pub fn rounding(&self) -> Result<Option<Rounding>, String> {
        match self.rounding.as_deref() {
            None => Ok(None),
            Some(name) => Rounding::from_name(name)
                .map(Some)
                .ok_or_else(|| format!("`rounding` is floor, ceil or nearest, not `{name}`")),
        }
    }
}

impl Interval {
    /// The names the CLI's `--interval` and the JSON's `interval` take, in
    /// the order of the variants.
    pub const NAMES: [&'static str; 3] = ["day", "hour", "window"];

    /// The interval of one of [`Interval::NAMES`].
    pub fn from_name(name: &str) -> Option<Interval> {
        match name {
            "day" => Some(Interval::Day),
            "hour" => Some(Interval::Hour),
            "window" => Some(Interval::Window),
            _ => None,
        }
    }
}

/// How a total that is not a whole number is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Down.
    Floor,
    /// Up.
    Ceil,
    /// To the nearest, halves away from zero.
    Nearest,
}

impl Rounding {
    /// The names the CLI's `--round` and the JSON's `rounding` take.
    pub const NAMES: [&'static str; 3] = ["floor", "ceil", "nearest"];

    /// The rule of one of [`Rounding::NAMES`].
    pub fn from_name(name: &str) -> Option<Rounding> {
        match name {
            "floor" => Some(Rounding::Floor),
            "ceil" => Some(Rounding::Ceil),
            "nearest" => Some(Rounding::Nearest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_taken_as_written() {
        let run = RunRequest::parse(
            br#"{"customerId":"acme","usageQuantity":42,"startTime":1732406400,
                "endTime":"2024-11-25T00:00:00Z","scale":1.50}"#,
        )
        .unwrap();
        assert_eq!(run.customer_id.as_deref(), Some("acme"));
        assert_eq!(run.usage_quantity.unwrap().text(), "42");
        assert_eq!(run.start_time.unwrap().text(), "1732406400");
        assert_eq!(run.end_time.unwrap().text(), "2024-11-25T00:00:00Z");
        assert_eq!(run.scale.as_ref().unwrap().text(), "1.50");
    }

    #[test]
    fn unknown_keys_and_names_are_refused() {
        let err = RunRequest::parse(br#"{"customerID":"acme"}"#).unwrap_err();
        assert!(err.contains("unknown field `customerID`"), "{err}");
        assert_eq!(
            RunRequest::parse(br#"{"maxRetries":-1}"#).unwrap_err(),
            "`maxRetries`: the number -1 is out of range"
        );
        assert_eq!(
            RunRequest::parse(br#"{"dryRun":"yes"}"#).unwrap_err(),
            "`dryRun`: expected a boolean, found a string"
        );
        assert!(RunRequest::parse(br#"{"dryRun":true,"dryRun":false}"#).is_err());
        assert!(RunRequest::parse(b"[]").unwrap_err().contains("one object"));
        let run = RunRequest::parse(br#"{"interval":"week","rounding":"up"}"#).unwrap();
        assert_eq!(
            run.interval().unwrap_err(),
            "`interval` is day, hour or window, not `week`"
        );
        assert_eq!(
            run.rounding().unwrap_err(),
            "`rounding` is floor, ceil or nearest, not `up`"
        );
        assert_eq!(run.options_given(), ["interval", "rounding"]);
    }

    #[test]
    fn every_name_is_read_back() {
        for name in Interval::NAMES {
            assert!(Interval::from_name(name).is_some(), "{name}");
        }
        for name in Rounding::NAMES {
            assert!(Rounding::from_name(name).is_some(), "{name}");
        }
    }
}
