//! Where each source was billed, and through when, so that a source whose
//! mapping now names another Stripe customer is not billed again from the
//! start on the new one (`history.json` in the state directory).

use super::lined::Lined;
use super::state_dir::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use usage_sync_report::rfc3339;

const FILE: &str = "history.json";
const LOCK: &str = "history.lock";
const VERSION: u32 = 1;
/// What an older usage-sync's history (one JSON document, parsed whole) may
/// be; this one's is streamed, a source a line.
const MAX_BYTES: u64 = 64 << 20;

/// One source of usage: an Amberflo customer's meter, sent as one Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceKey {
    /// The Amberflo customer id.
    pub customer_id: String,
    /// The Amberflo meter's API name.
    pub meter_api_name: String,
    /// The Stripe meter's event name.
    pub stripe_event_name: String,
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "customer {} (meter {}, event {})",
            self.customer_id, self.meter_api_name, self.stripe_event_name
        )
    }
}

/// Where a source stands against the Stripe customer it is now mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Never billed anywhere.
    New,
    /// Billed to this customer before, and never anywhere else.
    Same,
    /// Billed to `from` through `until`: this customer's ledger for the
    /// source starts after `until`. Returned on every run after a move, not
    /// only the first.
    MovedFrom {
        /// The Stripe customer it was billed to before.
        from: String,
        /// The end (Unix seconds) of what was billed to `from`.
        until: i64,
    },
}

/// A refusal: the source was last billed to another Stripe customer and the
/// move was not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The source.
    pub source: SourceKey,
    /// The Stripe customer it was billed to.
    pub from: String,
    /// The Stripe customer the mapping now names.
    pub to: String,
    /// The end (Unix seconds) of what was billed to `from`.
    pub through: i64,
}

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let through = rfc3339(self.through);
        write!(
            f,
            "{} was billed to {} through {through} and is now mapped to {}: nothing was written \
             for it. If the move is meant, rerun with --move-customers; {}'s ledger will start \
             after {through}",
            self.source, self.from, self.to, self.to
        )
    }
}

impl std::error::Error for Moved {}

/// What the history knows of one source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    /// This process changed it: only such entries override the file at
    /// save, so a stale copy of another shard's source never reverts it.
    #[serde(skip)]
    touched: bool,
    /// The Stripe customer it is billed to now.
    stripe_customer: String,
    /// The end (Unix seconds) of the last interval billed or verified on it.
    through: i64,
    /// The customers it left, oldest first; each move's destination is the
    /// next move's `from`, or `stripe_customer` for the last.
    #[serde(default)]
    moves: Vec<Move>,
}

/// What is saved: whether this process changed it is not.
impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (&self.stripe_customer, self.through, &self.moves)
            == (&other.stripe_customer, other.through, &other.moves)
    }
}

impl Eq for Entry {}

/// A customer the source left, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Move {
    from: String,
    until: i64,
}

#[derive(Serialize, Deserialize)]
struct Row {
    source: SourceKey,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    sources: Vec<Row>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Where each source was billed: loaded from and saved to the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    entries: BTreeMap<SourceKey, Entry>,
    /// The sources with moves: the only ones a ledger may have lost.
    moved: BTreeSet<SourceKey>,
}

impl History {
    /// Loads `history.json`; none yet is an empty history. A file that cannot
    /// be read or parsed is an error, never an empty history: that would
    /// forget the moves and bill moved sources again.
    #[cfg(test)]
    pub fn load(dir: &StateDir) -> Result<History, String> {
        History::load_for(dir, |_| true)
    }

    /// The history, holding only the sources `wanted` takes and those
    /// that ever moved (a ledger they left still counts them): the file is
    /// streamed, and a sync of a million sources holds the ones it runs.
    pub fn load_for(
        dir: &StateDir,
        wanted: impl Fn(&SourceKey) -> bool,
    ) -> Result<History, String> {
        let path = dir.file(FILE);
        let mut entries = BTreeMap::new();
        let mut moved = BTreeSet::new();
        each_entry(dir, |row| {
            if !wanted(&row.source) && row.entry.moves.is_empty() {
                return Ok(());
            }
            if !row.entry.moves.is_empty() {
                moved.insert(row.source.clone());
            }
            let shown = row.source.to_string();
            match entries.insert(row.source, row.entry) {
                Some(_) => Err(format!("{} lists {shown} twice: {RESTORE}", path.display())),
                None => Ok(()),
            }
        })?;
        Ok(History { entries, moved })
    }

    /// Each source of the saved history with the Stripe customer it is
    /// billed to now, streamed: nothing is held.
    pub fn each_customer(
        dir: &StateDir,
        mut each: impl FnMut(&SourceKey, &str),
    ) -> Result<(), String> {
        each_entry(dir, |row| {
            each(&row.source, &row.entry.stripe_customer);
            Ok(())
        })
    }

    /// Where `source` stands against `stripe_customer`, the customer its
    /// mapping names now. Last billed to another customer: refused, unless
    /// `allow_move`, which gives that customer and how far it was billed.
    #[allow(clippy::result_large_err, reason = "called once per source per run")]
    pub fn place(
        &self,
        source: &SourceKey,
        stripe_customer: &str,
        allow_move: bool,
    ) -> Result<Placement, Moved> {
        let Some(entry) = self.entries.get(source) else {
            return Ok(Placement::New);
        };
        if entry.stripe_customer == stripe_customer {
            // The last move's destination is the current customer: the bound
            // it set holds for as long as the source stays here.
            return Ok(match entry.moves.last() {
                Some(m) => Placement::MovedFrom {
                    from: m.from.clone(),
                    until: m.until,
                },
                None => Placement::Same,
            });
        }
        if allow_move {
            return Ok(Placement::MovedFrom {
                from: entry.stripe_customer.clone(),
                until: entry.through,
            });
        }
        Err(Moved {
            source: source.clone(),
            from: entry.stripe_customer.clone(),
            to: stripe_customer.to_string(),
            through: entry.through,
        })
    }

    /// Records that `source` was billed (or verified) on `stripe_customer`
    /// through `through`. A source last on another customer is recorded as
    /// moved from it, at the end of what it was billed there.
    pub fn billed(&mut self, source: &SourceKey, stripe_customer: &str, through: i64) {
        match self.entries.get_mut(source) {
            Some(entry) if entry.stripe_customer == stripe_customer => {
                entry.through = entry.through.max(through);
            }
            Some(entry) => {
                let until = entry.through;
                let from = entry.stripe_customer.clone();
                self.moved(source, &from, stripe_customer, until);
                self.billed(source, stripe_customer, through);
                return;
            }
            None => {
                let entry = Entry {
                    touched: true,
                    stripe_customer: stripe_customer.to_string(),
                    through,
                    moves: Vec::new(),
                };
                self.entries.insert(source.clone(), entry);
            }
        }
        if let Some(entry) = self.entries.get_mut(source) {
            entry.touched = true;
        }
    }

    /// Records that `source` left `from` for `to`, `from` having been billed
    /// through `until`. `until` is raised to what the history knows was
    /// billed on `from`, so the new ledger never overlaps the old one.
    /// Recording the same move again changes nothing.
    pub fn moved(&mut self, source: &SourceKey, from: &str, to: &str, until: i64) {
        if from == to {
            return;
        }
        let entry = self.entries.entry(source.clone()).or_insert_with(|| Entry {
            touched: true,
            stripe_customer: from.to_string(),
            through: until,
            moves: Vec::new(),
        });
        if entry.stripe_customer == to {
            match entry.moves.last_mut() {
                // Already recorded: keep the later bound.
                Some(last) if last.from == from => {
                    last.until = last.until.max(until);
                    entry.through = entry.through.max(last.until);
                }
                // Already there by another road: its recorded bound stands.
                _ => {}
            }
        } else {
            // The history's current customer is the one left, whatever the
            // caller thought: it is the one billed through `entry.through`.
            let until = until.max(entry.through);
            entry.moves.push(Move {
                from: entry.stripe_customer.clone(),
                until,
            });
            self.moved.insert(source.clone());
            entry.stripe_customer = to.to_string();
            entry.through = until;
        }
        entry.touched = true;
    }

    /// Saves the history: under `history.lock`, re-reads `history.json`,
    /// merges this process's changes into it (other processes', e.g. other
    /// shards', stay) and writes it atomically. Both are streamed, one source
    /// a line: a million sources are never held at once.
    pub fn save(&self, dir: &StateDir) -> Result<(), String> {
        let _lock = dir.lock(LOCK)?;
        // The touched sources the file had, as references: 8 bytes each.
        let mut written = std::collections::HashSet::new();
        DOCUMENT.write(dir, |line| {
            let mut failed = None;
            each_entry(dir, |theirs| {
                let row = match self.entries.get_key_value(&theirs.source) {
                    Some((source, mine)) if mine.touched => {
                        written.insert(source);
                        Row {
                            entry: merge(theirs.entry, mine),
                            source: theirs.source,
                        }
                    }
                    _ => theirs,
                };
                if let Err(e) = line(&row) {
                    failed = Some(e);
                }
                Ok(())
            })
            .map_err(std::io::Error::other)?;
            if let Some(e) = failed {
                return Err(e);
            }
            for (source, mine) in &self.entries {
                if mine.touched && !written.contains(source) {
                    line(&Row {
                        source: source.clone(),
                        entry: mine.clone(),
                    })?;
                }
            }
            Ok(())
        })
    }

    /// Sources billed to `stripe_customer` under `stripe_event_name` that
    /// moved away, with when they last left it: the ledger keeps counting
    /// them up to then (or it would look over-billed), found among the few
    /// sources that ever moved.
    pub fn departed_from(
        &self,
        stripe_customer: &str,
        stripe_event_name: &str,
    ) -> Vec<(SourceKey, i64)> {
        self.moved
            .iter()
            .filter(|source| source.stripe_event_name == stripe_event_name)
            .filter_map(|source| {
                let entry = self.entries.get(source)?;
                if entry.stripe_customer == stripe_customer {
                    return None;
                }
                let until = entry
                    .moves
                    .iter()
                    .filter(|m| m.from == stripe_customer)
                    .map(|m| m.until)
                    .max()?;
                Some((source.clone(), until))
            })
            .collect()
    }
}

/// `history.json`: one source a line.
const DOCUMENT: Lined = Lined {
    file: FILE,
    head: "{\"version\":1,\"sources\":[\n",
    max_line: 1 << 20,
    max_whole: MAX_BYTES,
    advice: RESTORE,
};

const RESTORE: &str = "restore it from a backup; do not delete it, it is what stops usage-sync \
                       from billing a moved customer twice";

/// Each source of `history.json` to `each`, as it is read.
fn each_entry(dir: &StateDir, each: impl FnMut(Row) -> Result<(), String>) -> Result<(), String> {
    let path = dir.file(FILE);
    let whole = |bytes: &[u8]| {
        let corrupt = |e: serde_json::Error| {
            format!(
                "{} is not a usage-sync history ({e}): {RESTORE}",
                path.display()
            )
        };
        let version = serde_json::from_slice::<VersionOnly>(bytes)
            .map_err(corrupt)?
            .version;
        if version != VERSION {
            return Err(format!(
                "{} is a version {version} history, this usage-sync reads version {VERSION}: \
                 use the usage-sync that wrote it, or {RESTORE}",
                path.display()
            ));
        }
        let document: Document = serde_json::from_slice(bytes).map_err(corrupt)?;
        Ok(document.sources)
    };
    DOCUMENT.each(dir, whole, each)
}

/// Our entry wins on the current customer (it is the one we just billed);
/// `through` and the moves keep what either side knows.
fn merge(theirs: Entry, mine: &Entry) -> Entry {
    let mut moves = theirs.moves;
    moves.extend(mine.moves.iter().cloned());
    if theirs.stripe_customer != mine.stripe_customer {
        // They billed a customer we moved away from: that move's bound must
        // cover what they billed there.
        for m in moves
            .iter_mut()
            .filter(|m| m.from == theirs.stripe_customer)
        {
            m.until = m.until.max(theirs.through);
        }
    }
    moves.sort_by_key(|m| m.until);
    // One customer cannot be left twice in a row: same move seen twice.
    moves.dedup_by(|later, earlier| {
        let same = later.from == earlier.from;
        if same {
            earlier.until = earlier.until.max(later.until);
        }
        same
    });
    let through = if theirs.stripe_customer == mine.stripe_customer {
        theirs.through.max(mine.through)
    } else {
        mine.through
    };
    Entry {
        touched: true,
        stripe_customer: mine.stripe_customer.clone(),
        through,
        moves,
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::super::state_dir::Scratch;
    use super::*;

    const NOV30: i64 = 1_795_996_800; // 2026-11-30T00:00:00Z
    const DAY: i64 = 86_400;

    fn acme() -> SourceKey {
        source("acme-eu")
    }

    fn source(customer: &str) -> SourceKey {
        SourceKey {
            customer_id: customer.into(),
            meter_api_name: "api-calls".into(),
            stripe_event_name: "api_calls".into(),
        }
    }

    #[test]
    fn a_missing_file_is_an_empty_history() {
        let scratch = Scratch::new("hist-empty");
        let history = History::load(&scratch.open()).unwrap();
        assert_eq!(history.place(&acme(), "cus_A", false), Ok(Placement::New));
    }

    #[test]
    fn round_trip() {
        let scratch = Scratch::new("hist-round");
        let dir = scratch.open();
        let mut history = History::load(&dir).unwrap();
        history.billed(&acme(), "cus_A", NOV30);
        history.billed(&acme(), "cus_A", NOV30 - DAY); // never goes back
        history.billed(&source("globex"), "cus_G", 7);
        history.save(&dir).unwrap();
        let loaded = History::load(&dir).unwrap();
        assert_eq!(loaded.entries, history.entries);
        assert_eq!(loaded.entries[&acme()].through, NOV30);
        assert_eq!(loaded.place(&acme(), "cus_A", false), Ok(Placement::Same));
        let text = std::fs::read_to_string(dir.file(FILE)).unwrap();
        assert!(
            text.starts_with("{\"version\":1,\"sources\":[\n{"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4, "one source a line: {text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let scratch = Scratch::new("hist-corrupt");
        let dir = scratch.open();
        let path = dir.file(FILE).display().to_string();
        for bad in [
            &b"{\"version\":1,\"sources\":[{"[..],
            b"\xff\xfe garbage",
            b"[]",
            b"",
        ] {
            std::fs::write(dir.file(FILE), bad).unwrap();
            let err = History::load(&dir).unwrap_err();
            assert!(err.contains(&path) && err.contains("restore it"), "{err}");
        }
        std::fs::write(dir.file(FILE), br#"{"version":2,"sources":{}}"#).unwrap();
        let err = History::load(&dir).unwrap_err();
        assert!(err.contains("version 2") && err.contains(&path), "{err}");
    }

    #[test]
    fn a_move_is_refused_with_what_to_do() {
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        let moved = history.place(&acme(), "cus_NEW", false).unwrap_err();
        assert_eq!(
            moved.to_string(),
            "customer acme-eu (meter api-calls, event api_calls) was billed to cus_OLD through \
             2026-11-30T00:00:00Z and is now mapped to cus_NEW: nothing was written for it. If \
             the move is meant, rerun with --move-customers; cus_NEW's ledger will start after \
             2026-11-30T00:00:00Z"
        );
    }

    #[test]
    fn an_allowed_move_starts_after_the_old_bound() {
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        assert_eq!(
            history.place(&acme(), "cus_NEW", true),
            Ok(Placement::MovedFrom {
                from: "cus_OLD".into(),
                until: NOV30
            })
        );
    }

    #[test]
    fn the_bound_is_kept_on_every_later_run() {
        let scratch = Scratch::new("hist-bound");
        let dir = scratch.open();
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        history.save(&dir).unwrap();

        // Run 1, with --move-customers: moves, bills nothing yet.
        let mut run = History::load(&dir).unwrap();
        let Ok(Placement::MovedFrom { from, until }) = run.place(&acme(), "cus_NEW", true) else {
            panic!()
        };
        run.moved(&acme(), &from, "cus_NEW", until);
        run.save(&dir).unwrap();
        let bound = Ok(Placement::MovedFrom {
            from: "cus_OLD".into(),
            until: NOV30,
        });

        // Runs 2 and 3, without --move-customers: the bound still holds.
        for day in 1..=2 {
            let mut run = History::load(&dir).unwrap();
            assert_eq!(run.place(&acme(), "cus_NEW", false), bound);
            run.moved(&acme(), "cus_OLD", "cus_NEW", NOV30); // idempotent
            run.billed(&acme(), "cus_NEW", NOV30 + day * DAY);
            run.save(&dir).unwrap();
        }
        let last = History::load(&dir).unwrap();
        assert_eq!(last.place(&acme(), "cus_NEW", false), bound);
        assert_eq!(last.entries[&acme()].moves.len(), 1);
        assert_eq!(last.entries[&acme()].through, NOV30 + 2 * DAY);
        // Moving on again is refused from the new customer's end.
        let moved = last.place(&acme(), "cus_THIRD", false).unwrap_err();
        assert_eq!(
            (moved.from.as_str(), moved.through),
            ("cus_NEW", NOV30 + 2 * DAY)
        );
    }

    #[test]
    fn billing_another_customer_records_the_move() {
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        history.billed(&acme(), "cus_NEW", NOV30 + DAY);
        assert_eq!(
            history.place(&acme(), "cus_NEW", false),
            Ok(Placement::MovedFrom {
                from: "cus_OLD".into(),
                until: NOV30
            })
        );
    }

    #[test]
    fn a_move_never_starts_before_what_was_billed() {
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        history.moved(&acme(), "cus_OLD", "cus_NEW", NOV30 - DAY);
        assert_eq!(
            history.place(&acme(), "cus_NEW", false),
            Ok(Placement::MovedFrom {
                from: "cus_OLD".into(),
                until: NOV30
            })
        );
    }

    #[test]
    fn departed_sources_are_counted_until_they_left() {
        let mut history = History::default();
        history.billed(&acme(), "cus_OLD", NOV30);
        history.moved(&acme(), "cus_OLD", "cus_NEW", NOV30);
        history.billed(&source("globex"), "cus_OLD", NOV30 + DAY);
        let other_event = SourceKey {
            stripe_event_name: "storage".into(),
            ..acme()
        };
        history.billed(&other_event, "cus_OLD", 1);
        // The departed ones, from the moved sources alone.
        assert_eq!(
            history.departed_from("cus_OLD", "api_calls"),
            [(acme(), NOV30)]
        );
        assert_eq!(history.departed_from("cus_NEW", "api_calls"), []);
        assert_eq!(history.departed_from("cus_OLD", "storage"), []);
    }

    #[test]
    fn a_history_an_older_usage_sync_wrote_is_read_and_rewritten_a_source_a_line() {
        let scratch = Scratch::new("hist-legacy");
        let dir = scratch.open();
        let mut old = History::default();
        old.billed(&acme(), "cus_OLD", NOV30);
        old.moved(&acme(), "cus_OLD", "cus_NEW", NOV30);
        old.billed(&source("globex"), "cus_G", NOV30);
        // As the previous release wrote it: one pretty-printed document.
        let document = Document {
            version: VERSION,
            sources: old
                .entries
                .iter()
                .map(|(source, entry)| Row {
                    source: source.clone(),
                    entry: entry.clone(),
                })
                .collect(),
        };
        std::fs::write(
            dir.file(FILE),
            serde_json::to_vec_pretty(&document).unwrap(),
        )
        .unwrap();
        let mut loaded = History::load(&dir).unwrap();
        assert_eq!(loaded.entries, old.entries);
        loaded.billed(&source("globex"), "cus_G", NOV30 + DAY);
        loaded.save(&dir).unwrap();
        let text = std::fs::read_to_string(dir.file(FILE)).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        // Still one JSON document, as the older release reads it.
        let again: Document = serde_json::from_str(&text).unwrap();
        assert_eq!(again.sources.len(), 2);

        // A run holds the sources it wants, and every moved one.
        let only = History::load_for(&dir, |s| *s == source("globex")).unwrap();
        assert_eq!(only.entries.len(), 2);
        let only = History::load_for(&dir, |_| false).unwrap();
        assert_eq!(only.entries.keys().collect::<Vec<_>>(), [&acme()]);
        assert_eq!(
            only.departed_from("cus_OLD", "api_calls"),
            [(acme(), NOV30)]
        );
        // What it did not hold is kept at save, untouched.
        only.save(&dir).unwrap();
        let all = History::load(&dir).unwrap();
        assert_eq!(all.entries[&source("globex")].through, NOV30 + DAY);
    }

    #[test]
    fn an_empty_history_reads_back() {
        let scratch = Scratch::new("hist-none");
        let dir = scratch.open();
        History::default().save(&dir).unwrap();
        assert_eq!(History::load(&dir).unwrap(), History::default());
    }

    #[test]
    fn a_streamed_history_cut_short_is_an_error() {
        let scratch = Scratch::new("hist-cut");
        let dir = scratch.open();
        let mut history = History::default();
        history.billed(&acme(), "cus_A", NOV30);
        history.billed(&source("globex"), "cus_G", NOV30);
        history.save(&dir).unwrap();
        let text = std::fs::read_to_string(dir.file(FILE)).unwrap();
        let cut = &text[..text.len() - 4];
        std::fs::write(dir.file(FILE), cut).unwrap();
        let err = History::load(&dir).unwrap_err();
        assert!(err.contains("restore it"), "{err}");
    }

    #[test]
    fn two_saves_one_after_the_other_keep_both() {
        let scratch = Scratch::new("hist-merge");
        let dir = scratch.open();
        let mut seed = History::default();
        seed.billed(&acme(), "cus_A", NOV30);
        seed.save(&dir).unwrap();

        let mut shard1 = History::load(&dir).unwrap();
        let mut shard2 = History::load(&dir).unwrap();
        shard1.billed(&source("one"), "cus_1", 10);
        shard1.billed(&acme(), "cus_A", NOV30 + 2 * DAY);
        shard2.billed(&source("two"), "cus_2", 20);
        shard2.billed(&acme(), "cus_A", NOV30 + DAY); // behind shard 1
        shard1.save(&dir).unwrap();
        shard2.save(&dir).unwrap();

        let merged = History::load(&dir).unwrap();
        assert_eq!(merged.entries[&source("one")].through, 10);
        assert_eq!(merged.entries[&source("two")].through, 20);
        assert_eq!(merged.entries[&acme()].through, NOV30 + 2 * DAY);
    }

    #[test]
    fn a_stale_copy_does_not_undo_another_shards_move() {
        let scratch = Scratch::new("hist-stale");
        let dir = scratch.open();
        let mut seed = History::default();
        seed.billed(&acme(), "cus_OLD", NOV30);
        seed.save(&dir).unwrap();

        let mut mover = History::load(&dir).unwrap();
        let mut other = History::load(&dir).unwrap(); // still sees cus_OLD
        mover.moved(&acme(), "cus_OLD", "cus_NEW", NOV30);
        mover.save(&dir).unwrap();
        other.billed(&source("globex"), "cus_G", 1);
        other.save(&dir).unwrap();

        let merged = History::load(&dir).unwrap();
        assert_eq!(
            merged.place(&acme(), "cus_NEW", false),
            Ok(Placement::MovedFrom {
                from: "cus_OLD".into(),
                until: NOV30
            })
        );
        assert!(merged.entries.contains_key(&source("globex")));
    }

    #[test]
    fn a_move_merged_over_later_billing_of_the_old_customer_covers_it() {
        let theirs = Entry {
            touched: false,
            stripe_customer: "cus_OLD".into(),
            through: NOV30 + DAY,
            moves: vec![],
        };
        let mine = Entry {
            touched: true,
            stripe_customer: "cus_NEW".into(),
            through: NOV30,
            moves: vec![Move {
                from: "cus_OLD".into(),
                until: NOV30,
            }],
        };
        let merged = merge(theirs, &mine);
        assert_eq!(merged.stripe_customer, "cus_NEW");
        assert_eq!(
            merged.moves,
            [Move {
                from: "cus_OLD".into(),
                until: NOV30 + DAY
            }]
        );
    }

    #[test]
    fn concurrent_saves_from_threads_all_land() {
        let scratch = Scratch::new("hist-threads");
        let dir = scratch.open();
        std::thread::scope(|s| {
            for i in 0..8 {
                let dir = &dir;
                s.spawn(move || {
                    let mut history = History::load(dir).unwrap();
                    history.billed(&source(&format!("c{i}")), "cus_X", i);
                    history.save(dir).unwrap();
                });
            }
        });
        assert_eq!(History::load(&dir).unwrap().entries.len(), 8);
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(NOV30), "2026-11-30T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
