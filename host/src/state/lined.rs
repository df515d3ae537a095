//! The state directory's JSON documents that grow with the mapping (the
//! history, the period ends): `{"version":1,"KEY":[` on the first line, one
//! array entry a line, `]}` on the last. Still one JSON document, as older
//! releases read it, and read back streamed: a million entries are never
//! held as text, nor all at once.

use super::state_dir::{Line, StateDir};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One such document: its file, its first line, its limits.
pub struct Lined {
    /// The file's name in the state directory.
    pub file: &'static str,
    /// The first line, with its newline: `{"version":1,"KEY":[\n`.
    pub head: &'static str,
    /// The most one entry's line may be.
    pub max_line: usize,
    /// The most a document written whole (by an older release) may be.
    pub max_whole: u64,
    /// What the user should do about a damaged file.
    pub advice: &'static str,
}

impl Lined {
    /// Each entry to `each`, as it is read; a missing file has none. A file
    /// not in lines (an older release wrote it whole) is parsed whole by
    /// `whole` into its entries.
    pub fn each<T: DeserializeOwned>(
        &self,
        dir: &StateDir,
        whole: impl FnOnce(&[u8]) -> Result<Vec<T>, String>,
        mut each: impl FnMut(T) -> Result<(), String>,
    ) -> Result<(), String> {
        let advise = |e: String| format!("{e}: {}", self.advice);
        let corrupt = |e: &dyn std::fmt::Display| {
            format!(
                "{} is not one usage-sync wrote ({e}): {}",
                dir.file(self.file).display(),
                self.advice
            )
        };
        let Some(mut lines) = dir.lines(self.file, self.max_line).map_err(advise)? else {
            return Ok(());
        };
        let head = self.head.as_bytes();
        let in_lines = matches!(
            lines.next_line().map_err(advise)?,
            Some(Line::Text(first)) if Some(first) == head.strip_suffix(b"\n")
        );
        if !in_lines {
            drop(lines);
            let Some(bytes) = dir.read(self.file, self.max_whole).map_err(advise)? else {
                return Ok(());
            };
            return whole(&bytes)?.into_iter().try_for_each(each);
        }
        let mut number = 1;
        loop {
            number += 1;
            let text = match lines.next_line().map_err(advise)? {
                None => return Err(corrupt(&"it ends before its last line")),
                Some(Line::TooLong) => {
                    return Err(corrupt(&format_args!("line {number} is too long")));
                }
                Some(Line::Text(text)) => text,
            };
            if text == b"]}" {
                break;
            }
            let text = text.strip_suffix(b",").unwrap_or(text);
            let entry: T = serde_json::from_slice(text)
                .map_err(|e| corrupt(&format_args!("line {number}: {e}")))?;
            each(entry)?;
        }
        match lines.next_line().map_err(advise)? {
            None => Ok(()),
            Some(_) => Err(corrupt(&"it goes on after its last line")),
        }
    }

    /// Replaces the file atomically with the entries `write` hands to its
    /// writer, one a line.
    pub fn write<T: Serialize>(
        &self,
        dir: &StateDir,
        write: impl FnOnce(&mut dyn FnMut(&T) -> std::io::Result<()>) -> std::io::Result<()>,
    ) -> Result<(), String> {
        dir.write_atomic_with(self.file, |out| {
            let mut first = true;
            write(&mut |entry: &T| {
                out.write_all(match first {
                    true => self.head.as_bytes(),
                    false => b",\n",
                })?;
                first = false;
                serde_json::to_writer(&mut *out, entry).map_err(std::io::Error::other)
            })?;
            match first {
                true => out.write_all(format!("{}]}}\n", self.head).as_bytes()),
                false => out.write_all(b"\n]}\n"),
            }
        })
    }
}
