//! `sync`'s journal: one line per row outcome, so a rerun of the same mapping
//! and window skips the rows already done. The first line says which mapping
//! and window the journal belongs to.

use crate::mapping::RowKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// Opens (or starts) the journal; returns it and the rows it says are done.
/// A journal of another mapping is an error, or with `replace_foreign` started
/// afresh.
pub fn open_journal(
    path: &Path,
    header: &Header,
    replace_foreign: bool,
) -> Result<(std::fs::File, HashSet<RowKey>), String> {
    let mut done = HashSet::new();
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    if let Ok(text) = std::fs::read_to_string(path) {
        let mut lines = text.lines();
        if let Some(first) = lines.next() {
            let found: Header = serde_json::from_str(first)
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
            // A line cut short by a crash is simply not done.
            for entry in lines.filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
                if matches!(
                    entry["status"].as_str(),
                    Some("recorded" | "already-recorded")
                ) {
                    let text = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
                    done.insert((
                        text("customerId"),
                        text("meterApiName"),
                        text("stripeEventName"),
                    ));
                }
            }
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(fail)?;
            return Ok((file, done));
        }
    }
    start_journal(path, header).map(|file| (file, done))
}

fn start_journal(path: &Path, header: &Header) -> Result<std::fs::File, String> {
    let fail = |e: std::io::Error| format!("the journal {}: {e}", path.display());
    let mut file = std::fs::File::create(path).map_err(fail)?;
    writeln!(
        file,
        "{}",
        serde_json::to_string(header).expect("serializes")
    )
    .map_err(fail)?;
    Ok(file)
}
