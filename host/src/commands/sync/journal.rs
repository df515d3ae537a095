//! `sync`'s journal: one line per row outcome, so a rerun of the same mapping
//! and window skips the rows already done. The first line says which mapping
//! and window the journal belongs to.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// The journal's first line: a journal belongs to one mapping and one window.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// The journal format's version.
    pub journal: u32,
    /// The SHA-256 of the mapping file, in hex.
    pub mapping: String,
    /// The window's start, as given to `sync`.
    pub start_time: String,
    /// The window's end, as given to `sync`.
    pub end_time: String,
}

/// The longest journal line: a row of a thousand events, with a source's
/// and a piece's details each, is a few hundred kilobytes.
const MAX_LINE: usize = 16 << 20;

/// Opens (or starts) the journal; returns it and the rows it says are done
/// (each key's digest, [`crate::mapping::key_digest`]: a million-row journal
/// is streamed and costs 16 bytes a done row). A journal of another mapping
/// is an error, or with `replace_foreign` started afresh.
pub fn open_journal(
    path: &Path,
    header: &Header,
    replace_foreign: bool,
) -> Result<(std::fs::File, HashSet<u128>), String> {
    use std::io::BufRead;
    let mut done = HashSet::new();
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    let Ok(file) = std::fs::File::open(path) else {
        return start_journal(path, header).map(|file| (file, done));
    };
    let mut lines =
        std::io::BufReader::new(crate::capped::LineCap::new(file, MAX_LINE)).split(b'\n');
    let Some(first) = lines.next() else {
        return start_journal(path, header).map(|file| (file, done));
    };
    let found: Header = serde_json::from_slice(&first.map_err(fail)?)
        .map_err(|_| format!("{} is not a usage-sync journal", path.display()))?;
    if found != *header && replace_foreign {
        tracing::info!(
            "sync: the journal {} belongs to another mapping; starting it afresh",
            path.display()
        );
        return start_journal(path, header).map(|file| (file, done));
    }
    if found != *header {
        return Err(format!(
            "the journal {} belongs to another mapping or window; give another --journal",
            path.display()
        ));
    }
    /// What a done line says; the rest of it is not read.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        status: String,
        customer_id: String,
        meter_api_name: String,
        stripe_event_name: String,
    }
    // A line cut short by a crash is not done: its row runs again (the
    // ledger makes that harmless); said, and never glued to the next line
    // appended.
    let mut torn = 0;
    for line in lines {
        let line = line.map_err(fail)?;
        let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
            torn += 1;
            continue;
        };
        if matches!(entry.status.as_str(), "recorded" | "already-recorded") {
            done.insert(crate::mapping::key_digest(&crate::mapping::Row {
                line: 0,
                customer_id: entry.customer_id,
                stripe_customer: String::new(),
                meter_api_name: entry.meter_api_name,
                stripe_event_name: entry.stripe_event_name,
            }));
        }
    }
    if torn > 0 {
        tracing::info!(
            "sync: the journal {} has {torn} torn line(s), skipped: their rows run again",
            path.display()
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    if !crate::state::state_dir::ends_a_line(&mut file).map_err(fail)? {
        writeln!(file).map_err(fail)?;
    }
    Ok((file, done))
}

fn start_journal(path: &Path, header: &Header) -> Result<std::fs::File, String> {
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    let mut file = std::fs::File::create(path).map_err(fail)?;
    let mut line = serde_json::to_string(header).expect("serializes");
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(fail)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            journal: 1,
            mapping: "00".into(),
            start_time: "1".into(),
            end_time: "2".into(),
        }
    }

    #[test]
    fn a_journal_line_past_the_cap_is_an_error_not_an_exhausted_memory() {
        let header = header();
        let Err(error) = open_journal(Path::new("/dev/zero"), &header, false) else {
            panic!("/dev/zero opened as a journal");
        };
        assert_eq!(
            error,
            "the journal /dev/zero: a line is over 16777216 bytes"
        );
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_next_entry_starts_on_its_own_line() {
        let dir = std::env::temp_dir().join(format!("usage-sync-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("torn.jsonl");
        let header = header();
        let entry = |customer: &str| {
            serde_json::json!({
                "customerId": customer, "meterApiName": "m",
                "stripeEventName": "e", "status": "recorded"
            })
            .to_string()
        };
        // A crash cut the second entry short: no newline after it.
        let torn = &entry("bravo")[..20];
        std::fs::write(
            &path,
            format!(
                "{}\n{}\n{torn}",
                serde_json::to_string(&header).unwrap(),
                entry("acme")
            ),
        )
        .unwrap();
        let (mut file, done) = open_journal(&path, &header, false).unwrap();
        let key = |c: &str| {
            crate::mapping::key_digest(&crate::mapping::Row {
                line: 0,
                customer_id: c.into(),
                stripe_customer: String::new(),
                meter_api_name: "m".into(),
                stripe_event_name: "e".into(),
            })
        };
        assert!(done.contains(&key("acme")) && !done.contains(&key("bravo")));
        // bravo runs again, and its entry is readable on the next open.
        writeln!(file, "{}", entry("bravo")).unwrap();
        drop(file);
        let (_, done) = open_journal(&path, &header, false).unwrap();
        assert!(
            done.contains(&key("bravo")),
            "{:?}",
            std::fs::read_to_string(&path)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
