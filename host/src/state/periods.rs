//! When each ledger's billing period ends (`periods.json` in the state
//! directory), as the last run that read its subscriptions saw it: so the
//! hourly `close-periods` touches only the ledgers whose period just ended,
//! without reading every customer's subscriptions every hour.

use super::state_dir::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const FILE: &str = "periods.json";
const LOCK: &str = "periods.lock";
/// A ledger's line is under 200 bytes; a million ledgers fit.
const MAX_BYTES: u64 = 256 << 20;

/// A ledger: its Stripe customer and event name.
pub type Ledger = (String, String);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    version: u32,
    /// `[stripe customer, event name, current period end]`.
    ledgers: Vec<(String, String, i64)>,
}

/// The period ends known, by ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeriodEnds {
    ends: BTreeMap<Ledger, i64>,
}

impl PeriodEnds {
    /// Reads `periods.json`; none is no ledger known.
    pub fn load(dir: &StateDir) -> Result<PeriodEnds, String> {
        let Some(bytes) = dir.read(FILE, MAX_BYTES)? else {
            return Ok(PeriodEnds::default());
        };
        let document: Document = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not a period list usage-sync wrote ({e}); move it away to start afresh \
                 (close-periods then waits for the next sync to see each period)",
                dir.file(FILE).display()
            )
        })?;
        Ok(PeriodEnds {
            ends: document
                .ledgers
                .into_iter()
                .map(|(customer, event, end)| ((customer, event), end))
                .collect(),
        })
    }

    /// The ledgers whose period ends in `(from, to]`.
    pub fn ending_within(&self, from: i64, to: i64) -> Vec<Ledger> {
        self.ends
            .iter()
            .filter(|(_, end)| from < **end && **end <= to)
            .map(|(ledger, _)| ledger.clone())
            .collect()
    }

    /// Records `updates` under the lock, over what other processes saved.
    pub fn save(dir: &StateDir, updates: &[(Ledger, i64)]) -> Result<(), String> {
        if updates.is_empty() {
            return Ok(());
        }
        let _lock = dir.lock(LOCK)?;
        let mut merged = PeriodEnds::load(dir)?;
        for (ledger, end) in updates {
            merged.ends.insert(ledger.clone(), *end);
        }
        let document = Document {
            version: 1,
            ledgers: merged
                .ends
                .into_iter()
                .map(|((customer, event), end)| (customer, event, end))
                .collect(),
        };
        let mut bytes = serde_json::to_vec(&document)
            .map_err(|e| format!("cannot encode the periods (a bug in usage-sync): {e}"))?;
        bytes.push(b'\n');
        dir.write_atomic(FILE, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::state_dir::Scratch;

    #[test]
    fn period_ends_are_merged_and_found_by_when_they_end() {
        let scratch = Scratch::new("periods");
        let dir = scratch.open();
        assert_eq!(PeriodEnds::load(&dir).unwrap(), PeriodEnds::default());
        let a = ("cus_A".to_string(), "calls".to_string());
        let b = ("cus_B".to_string(), "calls".to_string());
        PeriodEnds::save(&dir, &[(a.clone(), 100)]).unwrap();
        // Another shard saves its own ledger: both stay.
        PeriodEnds::save(&dir, &[(b.clone(), 200)]).unwrap();
        let ends = PeriodEnds::load(&dir).unwrap();
        assert_eq!(ends.ending_within(50, 150), vec![a.clone()]);
        assert_eq!(ends.ending_within(100, 200), vec![b.clone()]);
        // A later period replaces the earlier one.
        PeriodEnds::save(&dir, &[(a.clone(), 300)]).unwrap();
        let ends = PeriodEnds::load(&dir).unwrap();
        assert_eq!(ends.ending_within(299, 300), vec![a.clone()]);
        assert!(ends.ending_within(50, 150).is_empty());
        std::fs::write(dir.file(FILE), b"not json").unwrap();
        assert!(PeriodEnds::load(&dir).unwrap_err().contains("move it away"));
    }
}
