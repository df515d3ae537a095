//! `usage-sync close-periods`: meant to run hourly, beside the nightly
//! `sync`. Stripe finalizes a period's invoice an hour (the default grace
//! period) after the period ends, and the nightly job runs after midnight: on
//! the day a customer's period renews, the part of the day before the renewal
//! would be written when its invoice is already final, and billed nowhere.
//! This syncs only the ledgers whose period ended within `--lookback` (as the
//! last sync saw their periods, in the state directory), from that day's
//! start to the last full hour, while the invoice is still a draft.

use super::sync::{Closing, SyncArgs};
use crate::metrics::Tally;
use clap::Args;

#[derive(Args)]
pub(crate) struct ClosePeriodsArgs {
    /// Look for billing periods that ended this long ago at most, e.g. 6h or 90m.
    #[arg(long, default_value = "6h", value_parser = parse_lookback)]
    pub(crate) lookback: i64,
    #[command(flatten)]
    pub(crate) sync: SyncArgs,
}

impl ClosePeriodsArgs {
    /// Syncs the ledgers whose period just ended.
    pub(crate) async fn execute(self) -> (u8, Tally) {
        let closing = Closing {
            lookback: self.lookback,
        };
        self.sync.execute_closing(Some(closing)).await
    }
}

/// `6h`, `90m` or `3600s`: between a minute and 3 days (Stripe's longest grace).
fn parse_lookback(text: &str) -> Result<i64, String> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let scale = match unit {
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err("give a number of hours, minutes or seconds: 6h, 90m, 3600s".into()),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of {unit}"))?;
    match n.checked_mul(scale) {
        Some(secs @ 60..=259_200) => Ok(secs),
        _ => Err("the lookback must be between a minute and 72 hours".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lookback_is_hours_minutes_or_seconds_within_three_days() {
        assert_eq!(super::parse_lookback("6h"), Ok(21_600));
        assert_eq!(super::parse_lookback("90m"), Ok(5_400));
        assert_eq!(super::parse_lookback("3600s"), Ok(3_600));
        for bad in ["", "6", "0h", "73h", "-1h", "1.5h", "h"] {
            assert!(super::parse_lookback(bad).is_err(), "{bad}");
        }
    }
}
