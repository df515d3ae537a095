//! What `run` and `sync` share about a ledger (a Stripe customer and meter):
//! the state directory's mapping history, which bounds or refuses each
//! source before anything is sent, and the recent writes that Stripe's
//! summaries do not show yet.

use crate::bindings::LedgerMark;
use crate::mapping::Row;
use crate::outcome::{Failure, Outputs};
use crate::state::{History, Mark, PeriodEnds, Placement, Recent, SourceKey, StateDir, recent};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

/// How long recent writes are kept: past Stripe's identifier memory, so that
/// any write a summary may still miss is known.
const KEEP_RECENT: i64 = 25 * 3600;

/// The state a writing command reads before its first request and records
/// after each ledger.
pub(crate) struct LedgerState {
    dir: StateDir,
    history: Mutex<History>,
    recent: RwLock<Recent>,
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

/// A source, digested: what tells two apart, in 16 bytes.
fn source_digest(source: &SourceKey) -> u128 {
    let digest = crate::mapping::digest(&[
        &source.customer_id,
        &source.meter_api_name,
        &source.stripe_event_name,
    ]);
    u128::from_be_bytes(digest[..16].try_into().unwrap_or_default())
}

/// A Stripe customer, digested.
fn customer_digest(customer: &str) -> u64 {
    let digest = crate::mapping::digest(&[customer]);
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
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
    /// XDG default); nothing is read from it until [`Self::load`].
    pub(crate) fn open(flag: Option<PathBuf>, allow_move: bool) -> Result<Self, Failure> {
        let path = StateDir::resolve(flag).map_err(Failure::BadInput)?;
        let dir = StateDir::open(&path).map_err(Failure::BadInput)?;
        Ok(LedgerState {
            dir,
            history: Mutex::default(),
            recent: RwLock::default(),
            allow_move,
            period_ends: Mutex::new(Vec::new()),
        })
    }

    /// Reads what `rows` need of the history and the recent writes (their
    /// sources, their Stripe customers), in place of what was read before:
    /// both files are streamed, and a sync holds only the rows it runs.
    pub(crate) fn load(&self, rows: &[Row]) -> Result<(), Failure> {
        // Digests, not copies: 16 bytes a source.
        let sources: HashSet<u128> = rows.iter().map(|r| source_digest(&key_of(r))).collect();
        let history = History::load_for(&self.dir, |s| sources.contains(&source_digest(s)))
            .map_err(Failure::BadInput)?;
        drop(sources);
        let customers: HashSet<&str> = rows.iter().map(|r| r.stripe_customer.as_str()).collect();
        let recent = Recent::load_for(&self.dir, now(), KEEP_RECENT, |c| customers.contains(c))
            .map_err(Failure::BadInput)?;
        if recent.skipped() > 0 {
            tracing::warn!(
                "usage-sync: {} torn or unreadable line(s) of {} skipped",
                recent.skipped(),
                self.dir.file("recent.jsonl").display()
            );
        }
        *self.history.lock().unwrap_or_else(|p| p.into_inner()) = history;
        *self.recent.write().unwrap_or_else(|p| p.into_inner()) = recent;
        Ok(())
    }

    /// Refuses, before anything is sent, every source of `rows` that the
    /// history places on another Stripe customer than the mapping now names,
    /// unless moves are allowed: with a mapping synced in parts, a move found
    /// in the last part would come after the first parts were written. One
    /// streamed read of the history, holding a digest of each source's
    /// customer; only the suspects are then read whole.
    pub(crate) fn check_moves(
        &self,
        each_row: impl FnOnce(&mut dyn FnMut(&Row)) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if self.allow_move {
            return each_row(&mut |_| {});
        }
        let mut placed: Vec<(u128, u64)> = Vec::new();
        History::each_customer(&self.dir, |source, customer| {
            placed.push((source_digest(source), customer_digest(customer)))
        })
        .map_err(Failure::BadInput)?;
        placed.sort_unstable();
        let mut suspects: Vec<Row> = Vec::new();
        each_row(&mut |row| {
            let source = source_digest(&key_of(row));
            if let Ok(at) = placed.binary_search_by_key(&source, |(s, _)| *s)
                && placed[at].1 != customer_digest(&row.stripe_customer)
            {
                suspects.push(row.clone());
            }
        })?;
        drop(placed);
        if suspects.is_empty() {
            return Ok(());
        }
        self.load(&suspects)?;
        self.place(&suspects).map(|_| ())
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
            .departed_from(stripe_customer, stripe_event_name)
            .into_iter()
            .filter(|(key, _)| !present.clone().any(|r| key_of(r) == *key))
            .collect()
    }

    /// This tool's recent writes to the Stripe customer on `meter_id` (on
    /// any meter when `None`: `run` does not know the meter before it looks).
    pub(crate) fn marks(&self, stripe_customer: &str, meter_id: Option<&str>) -> Vec<LedgerMark> {
        self.recent
            .read()
            .unwrap_or_else(|p| p.into_inner())
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

    /// Makes the recent writes durable, then writes the history back (merged
    /// with what other shards saved), with the period ends seen.
    pub(crate) fn save(&self) -> Result<(), Failure> {
        recent::sync(&self.dir).map_err(Failure::Internal)?;
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.save(&self.dir).map_err(Failure::Internal)?;
        let mut ends = self.period_ends.lock().unwrap_or_else(|p| p.into_inner());
        PeriodEnds::save(&self.dir, &ends).map_err(Failure::Internal)?;
        ends.clear();
        Ok(())
    }

    /// Drops the recent writes no summary can still miss: once a run is done.
    pub(crate) fn prune(&self) -> Result<(), Failure> {
        recent::prune(&self.dir, now(), KEEP_RECENT).map_err(Failure::Internal)?;
        Ok(())
    }

    /// The ledgers whose period ended in `(from, to]`, as earlier runs saw.
    pub(crate) fn ending_within(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String)>, Failure> {
        PeriodEnds::ending_within(&self.dir, from, to).map_err(Failure::BadInput)
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> &StateDir {
        &self.dir
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
