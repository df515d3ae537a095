//! Reading a file the user names, never past a cap: the path may be
//! `/dev/zero`, a FIFO or a file still growing, and reading it whole would
//! take the process's memory (a pod's limit, then the OOM killer) before any
//! error could be printed. A file read whole ([`read`]) is capped in bytes; a
//! file streamed by lines (the mapping, the journal) in bytes a line
//! ([`LineCap`]).

use std::io::Read;
use std::path::Path;

/// The file at `path` (the `what` of the messages), up to `cap` bytes; more
/// is an error naming the file and the cap.
pub(crate) fn read(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read the {what} {shown}: {e}");
    let file = std::fs::File::open(path).map_err(cannot)?;
    read_to_cap(file, cap)
        .map_err(cannot)?
        .ok_or_else(|| format!("the {what} {shown} is over {cap} bytes: is it the right file?"))
}

/// All of `reader` when it holds at most `cap` bytes, else `None`; never
/// more than one byte past the cap is read.
pub(crate) fn read_to_cap(reader: impl Read, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// A reader that fails on a line longer than its cap: the csv crate and
/// `BufRead::split` hold a line whole, so a file with no line end
/// (`/dev/zero`, a binary given by mistake) took all the memory there was.
pub(crate) struct LineCap<R> {
    inner: R,
    /// The longest line allowed, in bytes.
    max: usize,
    /// Bytes since the last line end.
    line: usize,
}

impl<R> LineCap<R> {
    /// `inner`, failing on a line over `max` bytes.
    pub(crate) fn new(inner: R, max: usize) -> LineCap<R> {
        LineCap {
            inner,
            max,
            line: 0,
        }
    }
}

impl<R: Read> Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut longest = 0;
        for (i, piece) in buf[..n].split(|&b| b == b'\n').enumerate() {
            // The first piece goes on the line before; each after starts one.
            self.line = if i == 0 { self.line } else { 0 } + piece.len();
            longest = longest.max(self.line);
        }
        if longest > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line is over {} bytes", self.max),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::read;
    use std::path::Path;

    #[test]
    fn a_file_past_the_cap_is_refused_without_reading_it_whole() {
        assert_eq!(
            read(Path::new("/dev/zero"), 1024, "inputs file").unwrap_err(),
            "the inputs file /dev/zero is over 1024 bytes: is it the right file?"
        );
    }

    #[test]
    fn a_file_within_the_cap_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("usage-sync-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read(&file, 10, "file").unwrap(), b"0123456789");
        assert!(
            read(&file, 9, "file")
                .unwrap_err()
                .contains("is over 9 bytes")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_named() {
        let got = read(Path::new("/nonexistent/usage-sync"), 10, "CA file").unwrap_err();
        assert!(
            got.starts_with("cannot read the CA file /nonexistent/usage-sync: "),
            "{got}"
        );
    }
}
