//! What `run` and `sync` share about a ledger (a Stripe customer and meter):
//! the state directory's mapping history, which bounds or refuses each
//! source before anything is sent, and the recent writes that Stripe's
//! summaries do not show yet.

use crate::bindings::LedgerMark;
use crate::mapping::Row;
use crate::outcome::{Failure, Outputs};
use crate::state::{History, Mark, PeriodEnds, Placement, Recent, SourceKey, StateDir, recent};
use std::path::PathBuf;
use std::sync::Mutex;

/// How long recent writes are kept: past Stripe's identifier memory, so that
/// any write a summary may still miss is known.
const KEEP_RECENT: i64 = 25 * 3600;

/// The state a writing command reads before its first request and records
/// after each ledger.
pub(crate) struct LedgerState {
    dir: StateDir,
    history: Mutex<History>,
    recent: Recent,
    allow_move: bool,
    /// The period ends this run saw, saved with the history.
    period_ends: Mutex<Vec<((String, String), i64)>>,
}

/// Where one source's usage is billed to this ledger: from when, until when.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bounds {
    /// The source moved here then (`--move-customers`): usage before is the
    /// old customer's.
    pub from: Option<(String, i64)>,
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn key_of(row: &Row) -> SourceKey {
    SourceKey {
        customer_id: row.customer_id.clone(),
        meter_api_name: row.meter_api_name.clone(),
        stripe_event_name: row.stripe_event_name.clone(),
    }
}

impl LedgerState {
    /// Opens the state directory (`--state-dir`, `USAGE_SYNC_STATE_DIR`, the
    /// XDG default) and reads the history and recent writes.
    pub(crate) fn open(flag: Option<PathBuf>, allow_move: bool) -> Result<Self, Failure> {
        let path = StateDir::resolve(flag).map_err(Failure::BadInput)?;
        let dir = StateDir::open(&path).map_err(Failure::BadInput)?;
        let history = History::load(&dir).map_err(Failure::BadInput)?;
        let recent = Recent::load(&dir, now(), KEEP_RECENT).map_err(Failure::BadInput)?;
        if recent.skipped() > 0 {
            tracing::warn!(
                "usage-sync: {} torn or unreadable line(s) of {} skipped",
                recent.skipped(),
                dir.file("recent.jsonl").display()
            );
        }
        Ok(LedgerState {
            dir,
            history: Mutex::new(history),
            recent,
            allow_move,
            period_ends: Mutex::new(Vec::new()),
        })
    }

    /// Each row's bounds, before anything is sent; every source mapped to
    /// another Stripe customer than it was billed to is refused, all named at
    /// once, unless moves are allowed.
    pub(crate) fn place(&self, rows: &[Row]) -> Result<Vec<Bounds>, Failure> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut refused = Vec::new();
        let mut bounds = Vec::with_capacity(rows.len());
        for row in rows {
            match history.place(&key_of(row), &row.stripe_customer, self.allow_move) {
                Ok(Placement::MovedFrom { from, until }) => bounds.push(Bounds {
                    from: Some((from, until)),
                }),
                Ok(_) => bounds.push(Bounds::default()),
                Err(moved) => refused.push(moved.to_string()),
            }
        }
        if !refused.is_empty() {
            return Err(Failure::BadInput(refused.join("; ")));
        }
        Ok(bounds)
    }

    /// Sources once billed to this ledger that have moved away, with the
    /// instant they left: the ledger keeps counting them up to there.
    pub(crate) fn departed<'a>(
        &self,
        stripe_customer: &str,
        stripe_event_name: &str,
        present: impl Iterator<Item = &'a Row> + Clone,
    ) -> Vec<(SourceKey, i64)> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history
            .sources_of(stripe_customer, stripe_event_name)
            .into_iter()
            .filter_map(|(key, until)| Some((key, until?)))
            .filter(|(key, _)| !present.clone().any(|r| key_of(r) == *key))
            .collect()
    }

    /// This tool's recent writes to the Stripe customer on `meter_id` (on
    /// any meter when `None`: `run` does not know the meter before it looks).
    pub(crate) fn marks(&self, stripe_customer: &str, meter_id: Option<&str>) -> Vec<LedgerMark> {
        self.recent
            .marks(stripe_customer, meter_id)
            .into_iter()
            .map(|m| LedgerMark {
                meter_id: m.meter_id,
                day_start: m.day_start,
                through: m.through,
                total: m.total,
                at: m.at,
            })
            .collect()
    }

    /// After a ledger's run: its writes are remembered, and each of its
    /// sources is recorded as billed to its customer through `through`.
    pub(crate) fn record(
        &self,
        rows: &[(Row, Bounds)],
        meter_id: &str,
        outputs: &Outputs,
        through: i64,
    ) -> Result<(), Failure> {
        if outputs.dry_run {
            return Ok(());
        }
        let Some((first, _)) = rows.first() else {
            return Ok(());
        };
        let marks: Vec<Mark> = outputs
            .marks
            .iter()
            .map(|m| Mark {
                stripe_customer: first.stripe_customer.clone(),
                meter_id: meter_id.to_string(),
                day_start: m.day_start,
                through: m.through,
                total: m.total.clone(),
                at: m.at,
            })
            .collect();
        if !marks.is_empty() {
            recent::append(&self.dir, &marks).map_err(Failure::Internal)?;
        }
        if let Some(end) = outputs.period_ends.iter().min() {
            let ledger = (
                first.stripe_customer.clone(),
                first.stripe_event_name.clone(),
            );
            self.period_ends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((ledger, *end));
        }
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for (row, bounds) in rows {
            let key = key_of(row);
            if let Some((from, until)) = &bounds.from {
                history.moved(&key, from, &row.stripe_customer, *until);
            }
            history.billed(&key, &row.stripe_customer, through);
        }
        Ok(())
    }

    /// Writes the history back (merged with what other shards saved), and
    /// drops the recent writes no summary can still miss.
    pub(crate) fn save(&self) -> Result<(), Failure> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.save(&self.dir).map_err(Failure::Internal)?;
        let ends = self.period_ends.lock().unwrap_or_else(|p| p.into_inner());
        PeriodEnds::save(&self.dir, &ends).map_err(Failure::Internal)?;
        recent::prune(&self.dir, now(), KEEP_RECENT).map_err(Failure::Internal)?;
        Ok(())
    }

    /// The period ends known from earlier runs.
    pub(crate) fn period_ends(&self) -> Result<PeriodEnds, Failure> {
        PeriodEnds::load(&self.dir).map_err(Failure::BadInput)
    }

    /// Where `sync` keeps a journal named `name` by default: the state
    /// directory's `journals/` (created private), since a mapping may sit on a
    /// read-only mount.
    pub(crate) fn journal(&self, name: &str) -> Result<PathBuf, String> {
        let journals = self.dir.path().join("journals");
        StateDir::open(&journals)?;
        Ok(journals.join(name))
    }
}
