//! Our own recent writes to Stripe (`recent.jsonl` in the state directory).
//! Stripe's meter event summaries lag behind the events (minutes): a rerun
//! in that lag would take a stale day total for the truth and send the
//! difference again. A mark says what a day's total should be after a write.

use super::state_dir::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;

const FILE: &str = "recent.jsonl";
/// Appenders share it, `prune` holds it alone: a line appended while the
/// file is rewritten would be lost.
const LOCK: &str = "recent.lock";
/// A mark is about 200 bytes: a longer line is not one we wrote.
const MAX_LINE: usize = 4096;

/// What one of our writes made a Stripe customer's day total for a meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// The Stripe customer id.
    pub stripe_customer: String,
    /// The Stripe meter id.
    pub meter_id: String,
    /// The day's start (Unix seconds, UTC midnight).
    pub day_start: i64,
    /// The end (Unix seconds) of the usage the write covered.
    pub through: i64,
    /// The decimal text of what Stripe's day total should be after the write.
    pub total: String,
    /// When the write was made (Unix seconds).
    pub at: i64,
}

/// The marks of the last `keep_secs` seconds, as loaded, by Stripe customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent {
    by_customer: HashMap<String, Vec<Mark>>,
    skipped: usize,
}

impl Recent {
    /// Loads the marks made at or after `now - keep_secs`. Torn or unparsable
    /// lines (a crash mid-write) are skipped and counted, see
    /// [`Recent::skipped`]; a missing file is no marks.
    #[cfg(test)]
    pub fn load(dir: &StateDir, now: i64, keep_secs: i64) -> Result<Recent, String> {
        Recent::load_for(dir, now, keep_secs, |_| true)
    }

    /// The recent marks, holding only those of the Stripe customers
    /// `wanted` takes: the file is streamed, a sync holds its own ledgers'.
    pub fn load_for(
        dir: &StateDir,
        now: i64,
        keep_secs: i64,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Recent, String> {
        let mut recent = Recent::default();
        let oldest = now.saturating_sub(keep_secs);
        each_line(dir, |line| {
            match parse(line) {
                Line::Blank => {}
                Line::Bad => recent.skipped += 1,
                Line::Mark(mark) if mark.at >= oldest && wanted(&mark.stripe_customer) => recent
                    .by_customer
                    .entry(mark.stripe_customer.clone())
                    .or_default()
                    .push(mark),
                Line::Mark(_) => {}
            }
            Ok(())
        })?;
        Ok(recent)
    }

    /// The marks for this customer on `meter_id` (or on any meter), in the
    /// order they were written.
    pub fn marks(&self, stripe_customer: &str, meter_id: Option<&str>) -> Vec<Mark> {
        self.by_customer
            .get(stripe_customer)
            .into_iter()
            .flatten()
            .filter(|m| meter_id.is_none_or(|id| m.meter_id == id))
            .cloned()
            .collect()
    }

    /// How many lines were torn or unparsable, for a warning.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Appends `marks` to `recent.jsonl` (created, mode 0600), each as one line
/// written by one `write_all` on an `O_APPEND` file, so that processes
/// appending at once never interleave within a line. Not synced: [`sync`]
/// does that once for many appends (an fsync a row blocked a runtime
/// worker for each row, measured); a crash of the process loses nothing,
/// a power cut the marks since the last [`sync`], as it loses a mark whose
/// write it interrupted.
pub fn append(dir: &StateDir, marks: &[Mark]) -> Result<(), String> {
    if marks.is_empty() {
        return Ok(());
    }
    let path = dir.file(FILE);
    let shown = path.display();
    let fail = |e: std::io::Error| {
        format!("cannot append to {shown}: {e}; check that the disk is not full")
    };
    // Encoded before anything is written: all the marks or none.
    let mut lines = Vec::with_capacity(marks.len());
    for mark in marks {
        let mut line = serde_json::to_vec(mark)
            .map_err(|e| format!("cannot encode a mark (a bug in usage-sync): {e}"))?;
        line.push(b'\n');
        if line.len() > MAX_LINE {
            return Err(format!(
                "a mark for {} / {} is {} bytes, over the {MAX_LINE}-byte line limit (a bug in usage-sync)",
                mark.stripe_customer,
                mark.meter_id,
                line.len()
            ));
        }
        lines.push(line);
    }
    let _lock = dir.lock_shared(LOCK)?;
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && !meta.is_file()
    {
        return Err(format!("{shown} is not a regular file: move it away"));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(fail)?;
    if !super::state_dir::ends_a_line(&mut file).map_err(fail)?
        && let Some(first) = lines.first_mut()
    {
        first.insert(0, b'\n');
    }
    for line in &lines {
        file.write_all(line).map_err(fail)?;
    }
    Ok(())
}

/// Makes the marks appended so far durable: a mark lost in a power cut
/// would let the next run trust a stale summary.
pub fn sync(dir: &StateDir) -> Result<(), String> {
    let path = dir.file(FILE);
    match std::fs::OpenOptions::new().append(true).open(&path) {
        Ok(file) => file.sync_data().map_err(|e| {
            format!(
                "cannot sync {}: {e}; check that the disk is not full",
                path.display()
            )
        }),
        // Nothing appended yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    }
}

/// Drops the marks made before `now - keep_secs` (and torn lines with them):
/// rewrites `recent.jsonl` atomically, under the lock that appenders share,
/// if it holds any. Returns how many lines were dropped.
pub fn prune(dir: &StateDir, now: i64, keep_secs: i64) -> Result<usize, String> {
    let _lock = dir.lock(LOCK)?;
    let oldest = now.saturating_sub(keep_secs);
    let keep = |line: &[u8]| match parse(line) {
        Line::Blank => None,
        Line::Mark(mark) => Some(mark.at >= oldest),
        Line::Bad => Some(false),
    };
    // Counted first: a file with nothing old is left as it is.
    let (mut dropped, mut old) = (0, 0);
    each_line(dir, |line| {
        if keep(line) == Some(false) {
            dropped += 1;
            old += usize::from(matches!(parse(line), Line::Mark(_)));
        }
        Ok(())
    })?;
    if old == 0 {
        return Ok(0);
    }
    dir.write_atomic_with(FILE, |out| {
        let mut failed = None;
        each_line(dir, |line| {
            // The line as written: a newer usage-sync's fields survive.
            if keep(line) == Some(true)
                && let Err(e) = out.write_all(line).and_then(|()| out.write_all(b"\n"))
            {
                failed = Some(e);
            }
            Ok(())
        })
        .map_err(std::io::Error::other)?;
        failed.map_or(Ok(()), Err)
    })?;
    Ok(dropped)
}

/// Each line of `recent.jsonl`, without its newline, to `each`; an over-long
/// line comes as one that fails to parse. A missing file has no lines.
fn each_line(
    dir: &StateDir,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let advice = |e: String| {
        format!(
            "{e}: move it away. It only holds usage-sync's own writes of the last minutes; \
             before the next run, wait a few minutes for Stripe's summaries to catch up"
        )
    };
    let Some(mut lines) = dir.lines(FILE, MAX_LINE).map_err(advice)? else {
        return Ok(());
    };
    while let Some(line) = lines.next_line().map_err(advice)? {
        match line {
            super::state_dir::Line::Text(text) => each(text)?,
            super::state_dir::Line::TooLong => each(b"\xff")?,
        }
    }
    Ok(())
}

enum Line {
    Blank,
    Bad,
    Mark(Mark),
}

fn parse(line: &[u8]) -> Line {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    if line.len() > MAX_LINE {
        return Line::Bad;
    }
    match serde_json::from_slice::<Mark>(line) {
        Ok(mark) if is_decimal(&mark.total) => Line::Mark(mark),
        _ => Line::Bad,
    }
}

/// `12`, `-3`, `0.25`: what the caller can parse back as a total.
fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && all_digits(frac)
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::super::state_dir::Scratch;
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const NOW: i64 = 1_800_000_000;
    const KEEP: i64 = 3600;

    fn mark(customer: &str, meter: &str, at: i64, total: &str) -> Mark {
        Mark {
            stripe_customer: customer.into(),
            meter_id: meter.into(),
            day_start: NOW - NOW % 86_400,
            through: at,
            total: total.into(),
            at,
        }
    }

    fn raw_append(dir: &StateDir, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.file(FILE))
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    #[test]
    fn round_trip_by_customer_and_meter() {
        let scratch = Scratch::new("recent-round");
        let dir = scratch.open();
        assert_eq!(Recent::load(&dir, NOW, KEEP).unwrap(), Recent::default());
        let a1 = mark("cus_A", "mtr_1", NOW - 10, "12.5");
        let a2 = mark("cus_A", "mtr_2", NOW - 9, "3");
        let b1 = mark("cus_B", "mtr_1", NOW - 8, "0");
        let a1_again = mark("cus_A", "mtr_1", NOW - 7, "20");
        append(&dir, &[a1.clone(), a2.clone()]).unwrap();
        append(&dir, &[b1.clone(), a1_again.clone()]).unwrap();
        append(&dir, &[]).unwrap();
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(
            recent.marks("cus_A", Some("mtr_1")),
            [a1.clone(), a1_again.clone()]
        );
        assert_eq!(recent.marks("cus_A", None), [a1, a2.clone(), a1_again]);
        assert_eq!(recent.marks("cus_A", Some("mtr_2")), [a2]);
        assert_eq!(recent.marks("cus_B", Some("mtr_1")), [b1]);
        assert_eq!(recent.marks("cus_B", Some("mtr_2")), []);
        assert_eq!(recent.skipped(), 0);
        assert_eq!(
            std::fs::metadata(dir.file(FILE)).unwrap().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(dir.file(FILE)).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(
            text.contains("\"stripeCustomer\":\"cus_A\",\"meterId\":\"mtr_1\",\"dayStart\""),
            "{text}"
        );
    }

    #[test]
    fn sync_makes_appends_durable_and_needs_no_file() {
        let scratch = Scratch::new("recent-sync");
        let dir = scratch.open();
        // Nothing appended yet: nothing to sync, no file made.
        sync(&dir).unwrap();
        assert!(!dir.file(FILE).exists());
        let a = mark("cus_A", "mtr_1", NOW - 10, "1");
        append(&dir, std::slice::from_ref(&a)).unwrap();
        sync(&dir).unwrap();
        assert_eq!(
            Recent::load(&dir, NOW, KEEP).unwrap().marks("cus_A", None),
            [a]
        );
        // A directory in its place is an error, not a silent success.
        std::fs::remove_file(dir.file(FILE)).unwrap();
        std::fs::create_dir(dir.file(FILE)).unwrap();
        assert!(sync(&dir).is_err());
    }

    #[test]
    fn a_torn_line_is_skipped_and_counted() {
        let scratch = Scratch::new("recent-torn");
        let dir = scratch.open();
        let good = mark("cus_A", "mtr_1", NOW - 10, "5");
        append(&dir, std::slice::from_ref(&good)).unwrap();
        // A crash mid-line, then a later run appends.
        raw_append(&dir, br#"{"stripeCustomer":"cus_A","meterId":"mt"#);
        let later = mark("cus_A", "mtr_1", NOW - 5, "7");
        append(&dir, std::slice::from_ref(&later)).unwrap();
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(recent.marks("cus_A", Some("mtr_1")), [good, later]);
        assert_eq!(recent.skipped(), 1);
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let scratch = Scratch::new("recent-garbage");
        let dir = scratch.open();
        let good = mark("cus_A", "mtr_1", NOW, "5");
        append(&dir, std::slice::from_ref(&good)).unwrap();
        let long = serde_json::to_vec(&mark(&"x".repeat(MAX_LINE), "mtr_1", NOW, "1")).unwrap();
        let bad_total = serde_json::to_vec(&mark("cus_A", "mtr_1", NOW, "1e5")).unwrap();
        for bad in [
            &b"\xff\xfe\x00 not utf-8"[..],
            b"[1,2]",
            b"{}",
            &long,
            &bad_total,
            b"\n  \n",
        ] {
            raw_append(&dir, bad);
            raw_append(&dir, b"\n");
        }
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(recent.marks("cus_A", Some("mtr_1")), [good]);
        assert_eq!(recent.skipped(), 5);
    }

    #[test]
    fn old_marks_are_ignored() {
        let scratch = Scratch::new("recent-old");
        let dir = scratch.open();
        let old = mark("cus_A", "mtr_1", NOW - KEEP - 1, "1");
        let edge = mark("cus_A", "mtr_1", NOW - KEEP, "2");
        append(&dir, &[old, edge.clone()]).unwrap();
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(recent.marks("cus_A", Some("mtr_1")), [edge]);
        assert_eq!(recent.skipped(), 0);
    }

    #[test]
    fn an_oversized_mark_is_not_written() {
        let scratch = Scratch::new("recent-oversized");
        let dir = scratch.open();
        let ok = mark("cus_A", "mtr_1", NOW, "1");
        let huge = mark(&"x".repeat(MAX_LINE), "mtr_1", NOW, "1");
        assert!(
            append(&dir, &[ok, huge])
                .unwrap_err()
                .contains("line limit")
        );
        assert!(!dir.file(FILE).exists());
    }

    #[test]
    fn an_endless_line_is_skipped_never_held() {
        let scratch = Scratch::new("recent-endless");
        let dir = scratch.open();
        let ok = mark("cus_A", "mtr_1", NOW - 1, "1");
        append(&dir, std::slice::from_ref(&ok)).unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.file(FILE))
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + (64 << 20)).unwrap(); // sparse: costs no disk
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(recent.skipped(), 1);
        assert_eq!(recent.marks("cus_A", None), vec![ok]);
    }

    #[test]
    fn prune_drops_old_lines_only_when_there_are_some() {
        let scratch = Scratch::new("recent-prune");
        let dir = scratch.open();
        assert_eq!(prune(&dir, NOW, KEEP).unwrap(), 0);
        let young = mark("cus_A", "mtr_1", NOW - 1, "2");
        append(&dir, std::slice::from_ref(&young)).unwrap();
        let inode = std::fs::metadata(dir.file(FILE)).unwrap().ino();
        assert_eq!(prune(&dir, NOW, KEEP).unwrap(), 0);
        assert_eq!(
            std::fs::metadata(dir.file(FILE)).unwrap().ino(),
            inode,
            "rewritten for nothing"
        );

        let old = mark("cus_A", "mtr_1", NOW - KEEP - 1, "1");
        append(&dir, &[old]).unwrap();
        raw_append(&dir, b"{torn");
        assert_eq!(prune(&dir, NOW, KEEP).unwrap(), 2);
        let after = Recent::load(&dir, NOW - KEEP * 10, KEEP).unwrap(); // would show old ones
        assert_eq!(after.marks("cus_A", Some("mtr_1")), [young]);
        assert_eq!(after.skipped(), 0);
        assert_eq!(
            std::fs::metadata(dir.file(FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let scratch = Scratch::new("recent-threads");
        let dir = scratch.open();
        std::thread::scope(|s| {
            for t in 0..4 {
                let dir = &dir;
                s.spawn(move || {
                    for i in 0..50 {
                        append(dir, &[mark(&format!("cus_{t}"), "mtr_1", NOW - i, "1")]).unwrap();
                        if i % 10 == 0 {
                            // Something for prune to drop while others append.
                            append(
                                dir,
                                &[mark(&format!("cus_{t}"), "mtr_1", NOW - KEEP - 1, "1")],
                            )
                            .unwrap();
                            prune(dir, NOW, KEEP).unwrap();
                        }
                    }
                });
            }
        });
        let recent = Recent::load(&dir, NOW, KEEP).unwrap();
        assert_eq!(recent.skipped(), 0);
        for t in 0..4 {
            assert_eq!(recent.marks(&format!("cus_{t}"), Some("mtr_1")).len(), 50);
        }
    }

    #[test]
    fn totals_are_decimal_text() {
        for ok in ["0", "12", "-3", "0.25", "100.000"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".5", "5.", "1e5", "1.2.3", "+1", " 1", "NaN"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
