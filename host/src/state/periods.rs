//! When each ledger's billing period ends (`periods.json` in the state
//! directory), as the last run that read its subscriptions saw it: so the
//! hourly `close-periods` touches only the ledgers whose period just ended,
//! without reading every customer's subscriptions every hour.

use super::lined::Lined;
use super::state_dir::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const FILE: &str = "periods.json";
const LOCK: &str = "periods.lock";
/// What an older release's periods (one JSON document, read whole) may be.
const MAX_BYTES: u64 = 256 << 20;

/// A ledger: its Stripe customer and event name.
pub type Ledger = (String, String);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    version: u32,
    /// `[stripe customer, event name, current period end]`.
    ledgers: Vec<(String, String, i64)>,
}

/// `periods.json`: one ledger a line.
const DOCUMENT: Lined = Lined {
    file: FILE,
    head: "{\"version\":1,\"ledgers\":[\n",
    max_line: 64 << 10,
    max_whole: MAX_BYTES,
    advice: "move it away to start afresh (close-periods then waits for the next sync to \
             see each period)",
};

/// The period ends known, by ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeriodEnds {
    ends: BTreeMap<Ledger, i64>,
}

impl PeriodEnds {
    /// The ledgers whose period ends in `(from, to]`, from `periods.json`
    /// (none: no ledger known), streamed.
    pub fn ending_within(dir: &StateDir, from: i64, to: i64) -> Result<Vec<Ledger>, String> {
        let mut ending = Vec::new();
        each(dir, |(customer, event, end)| {
            if from < end && end <= to {
                ending.push((customer, event));
            }
            Ok(())
        })?;
        Ok(ending)
    }

    /// Records `updates` under the lock, over what other processes saved.
    pub fn save(dir: &StateDir, updates: &[(Ledger, i64)]) -> Result<(), String> {
        if updates.is_empty() {
            return Ok(());
        }
        let _lock = dir.lock(LOCK)?;
        let mut mine: BTreeMap<&Ledger, i64> = updates.iter().map(|(l, e)| (l, *e)).collect();
        DOCUMENT.write::<(String, String, i64)>(dir, |line| {
            let mut failed = None;
            each(dir, |(customer, event, end)| {
                let ledger = (customer, event);
                let end = mine.remove(&ledger).unwrap_or(end);
                if let Err(e) = line(&(ledger.0, ledger.1, end)) {
                    failed = Some(e);
                }
                Ok(())
            })
            .map_err(std::io::Error::other)?;
            if let Some(e) = failed {
                return Err(e);
            }
            for ((customer, event), end) in mine {
                line(&(customer.clone(), event.clone(), end))?;
            }
            Ok(())
        })
    }
}

/// Each ledger of `periods.json`, as it is read.
fn each(
    dir: &StateDir,
    each: impl FnMut((String, String, i64)) -> Result<(), String>,
) -> Result<(), String> {
    let whole = |bytes: &[u8]| {
        serde_json::from_slice::<Document>(bytes)
            .map(|d| d.ledgers)
            .map_err(|e| {
                format!(
                    "{} is not a period list usage-sync wrote ({e}); {}",
                    dir.file(FILE).display(),
                    DOCUMENT.advice
                )
            })
    };
    DOCUMENT.each(dir, whole, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::state_dir::Scratch;

    #[test]
    fn period_ends_are_merged_and_found_by_when_they_end() {
        let scratch = Scratch::new("periods");
        let dir = scratch.open();
        let within = |from, to| PeriodEnds::ending_within(&dir, from, to).unwrap();
        assert!(within(i64::MIN, i64::MAX).is_empty());
        let a = ("cus_A".to_string(), "calls".to_string());
        let b = ("cus_B".to_string(), "calls".to_string());
        PeriodEnds::save(&dir, &[(a.clone(), 100)]).unwrap();
        // Another shard saves its own ledger: both stay.
        PeriodEnds::save(&dir, &[(b.clone(), 200)]).unwrap();
        assert_eq!(within(50, 150), vec![a.clone()]);
        assert_eq!(within(100, 200), vec![b.clone()]);
        // A later period replaces the earlier one.
        PeriodEnds::save(&dir, &[(a.clone(), 300)]).unwrap();
        assert_eq!(within(299, 300), vec![a.clone()]);
        assert!(within(50, 150).is_empty());
        let text = std::fs::read_to_string(dir.file(FILE)).unwrap();
        assert_eq!(text.lines().count(), 4, "one ledger a line: {text}");
        // As an older release wrote it: one document, read whole.
        std::fs::write(
            dir.file(FILE),
            br#"{"version":1,"ledgers":[["cus_C","calls",7]]}"#,
        )
        .unwrap();
        assert_eq!(
            within(0, 7),
            vec![("cus_C".to_string(), "calls".to_string())]
        );
        std::fs::write(dir.file(FILE), b"not json").unwrap();
        let err = PeriodEnds::ending_within(&dir, 0, 1).unwrap_err();
        assert!(err.contains("move it away"), "{err}");
    }
}
