//! The state directory: what usage-sync must remember between runs so that it
//! never bills a unit twice. Whoever can write there can make it bill again,
//! so, like ssh with `~/.ssh`, it refuses a directory that is not private.

use crate::private_dir::Purpose;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the state directory (below `--state-dir`).
pub const ENV_STATE_DIR: &str = "USAGE_SYNC_STATE_DIR";

/// A state directory that was checked to be private to this user.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// An exclusive or shared lock on a lock file in the state directory; it is
/// released when this is dropped (closing the file releases the lock).
#[derive(Debug)]
#[must_use = "the lock is released as soon as this is dropped"]
pub struct Lock {
    _file: File,
}

impl StateDir {
    /// Where the state directory is: `flag` (`--state-dir`), else
    /// `$USAGE_SYNC_STATE_DIR`, else `$XDG_STATE_HOME/usage-sync`, else
    /// `$HOME/.local/state/usage-sync`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<PathBuf, String> {
        resolve_with(flag, |name| std::env::var_os(name))
    }

    /// Opens the state directory at `path`, creating it (and missing parents)
    /// with mode 0700. An existing one is refused unless it is a directory
    /// owned by this process's effective uid and not writable by group or
    /// others.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        use crate::private_dir::Unusable;
        match crate::private_dir::open(path, &Purpose::STATE) {
            Ok(real) => Ok(StateDir { path: real }),
            Err(Unusable::Unavailable(e) | Unusable::Refused(e)) => Err(e),
        }
    }

    /// The directory (symlinks resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// [`Self::write_atomic_with`], with these bytes.
    #[cfg(test)]
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.write_atomic_with(name, |file| file.write_all(bytes))
    }

    /// Replaces the file `name` with what `write` writes (through a buffer: a
    /// file of millions of lines is never held whole) so that a reader, or a
    /// crash, sees the old file or the new one, never a mix: a temp file
    /// (mode 0600) in the same directory, fsync, rename, fsync of the
    /// directory.
    pub fn write_atomic_with(
        &self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), String> {
        check_name(name)?;
        let target = self.file(name);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.file(&format!(".{name}.tmp-{}-{n}", std::process::id()));
        let fail = |what: &str, e: std::io::Error| {
            let _ = std::fs::remove_file(&tmp);
            format!(
                "cannot {what} {} (writing {}): {e}; check that the disk is not full \
                 and that you can write there",
                tmp.display(),
                target.display()
            )
        };
        // Our pid and counter are unique among live writers: a file already
        // there was left by a dead process that had our pid.
        let _ = std::fs::remove_file(&tmp);
        let file = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| fail("create", e))?;
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, file);
        write(&mut buffered).map_err(|e| fail("write", e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| fail("write", e.into_error()))?;
        file.sync_all().map_err(|e| fail("fsync", e))?;
        drop(file);
        std::fs::rename(&tmp, &target).map_err(|e| fail("rename", e))?;
        // The rename is durable only once the directory is.
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                format!(
                    "cannot fsync the state directory {}: {e}",
                    self.path.display()
                )
            })
    }

    /// The file `name` line by line, or `None` when there is none; a file that
    /// is not a regular file is an error, as for [`Self::read`]. Lines longer
    /// than `max_line` bytes come as [`Line::TooLong`], never held whole.
    pub fn lines(&self, name: &str, max_line: usize) -> Result<Option<Lines>, String> {
        let Some((path, file)) = self.open_regular(name)? else {
            return Ok(None);
        };
        Ok(Some(Lines {
            reader: std::io::BufReader::with_capacity(1 << 16, file),
            max_line,
            buf: Vec::new(),
            path,
        }))
    }

    /// The file `name` opened for reading, with its path; `None` when there
    /// is none. One that is not a regular file (a symlink, a FIFO) is an
    /// error naming it: usage-sync never writes such a thing there.
    fn open_regular(&self, name: &str) -> Result<Option<(PathBuf, File)>, String> {
        check_name(name)?;
        let path = self.file(name);
        let shown = path.display();
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {shown}: {e}")),
            // Checked before opening: opening a FIFO would block.
            Ok(m) if !m.is_file() => {
                return Err(format!(
                    "{shown} is not a regular file (usage-sync only writes regular files there)"
                ));
            }
            Ok(_) => {}
        }
        let file = File::open(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        Ok(Some((path, file)))
    }

    /// Reads the file `name`, or `None` when there is none. A file larger than
    /// `cap` bytes, or that is not a regular file (a symlink, a FIFO), is an
    /// error naming it: usage-sync never writes such a thing there.
    pub fn read(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>, String> {
        let Some((path, file)) = self.open_regular(name)? else {
            return Ok(None);
        };
        let shown = path.display();
        let len = file
            .metadata()
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .len();
        let too_big =
            |len: u64| format!("{shown} is {len} bytes, more than the {cap} bytes allowed for it");
        if len > cap {
            return Err(too_big(len));
        }
        // The file may grow while we read: never read past the cap.
        let bytes = crate::capped::read_to_cap(file, cap)
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .ok_or_else(|| too_big(cap.saturating_add(1)))?;
        Ok(Some(bytes))
    }

    /// Takes an exclusive lock on the lock file `name` (created, mode 0600),
    /// waiting for whoever holds it.
    pub fn lock(&self, name: &str) -> Result<Lock, String> {
        self.lock_with(name, File::lock)
    }

    /// Takes a shared lock on the lock file `name`: shared holders exclude an
    /// exclusive one, not each other.
    pub fn lock_shared(&self, name: &str) -> Result<Lock, String> {
        self.lock_with(name, File::lock_shared)
    }

    fn lock_with(&self, name: &str, how: fn(&File) -> std::io::Result<()>) -> Result<Lock, String> {
        check_name(name)?;
        let path = self.file(name);
        // The lock file is never removed: removing it would let two processes
        // lock two different files of the same name.
        let file = private_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        how(&file).map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Ok(Lock { _file: file })
    }
}

/// Whether `file` is empty or ends with a newline: a crash mid-line leaves
/// a torn tail, which an appender must end before its first line, or that
/// line would be glued to it and lost with it.
pub fn ends_a_line(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    if file.seek(SeekFrom::End(0))? == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// A state file read line by line, each line at most `max_line` bytes held.
pub struct Lines {
    reader: std::io::BufReader<File>,
    max_line: usize,
    buf: Vec<u8>,
    path: PathBuf,
}

/// One line of a state file.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line, without its newline; the last line may have none (torn).
    Text(&'a [u8]),
    /// A line over the limit: not one usage-sync wrote.
    TooLong,
}

impl Lines {
    /// The next line, `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, String> {
        use std::io::BufRead;
        self.buf.clear();
        let mut too_long = false;
        loop {
            let chunk = self
                .reader
                .fill_buf()
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            if chunk.is_empty() {
                if self.buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (used, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            let take = &chunk[..used - usize::from(end)];
            if !too_long && self.buf.len() + take.len() <= self.max_line {
                self.buf.extend_from_slice(take);
            } else {
                too_long = true;
                self.buf.clear();
            }
            self.reader.consume(used);
            if end {
                break;
            }
        }
        Ok(Some(match too_long {
            true => Line::TooLong,
            false => Line::Text(&self.buf),
        }))
    }
}

fn resolve_with(
    flag: Option<PathBuf>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    // An empty variable counts as unset, as the XDG spec says.
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(path);
    }
    if let Some(path) = set(ENV_STATE_DIR) {
        return Ok(path);
    }
    // The XDG spec says to ignore a relative XDG_STATE_HOME.
    if let Some(path) = set("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return Ok(path.join("usage-sync"));
    }
    match set("HOME") {
        Some(home) => Ok(home.join(".local/state/usage-sync")),
        None => Err(format!(
            "no state directory: HOME is not set; pass --state-dir DIR (or set {ENV_STATE_DIR}) \
             with a directory that only you can write"
        )),
    }
}

fn private_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Names are ours, but a slash or `..` would leave the directory we checked.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "{name:?} is not a file name in the state directory (a bug in usage-sync)"
        ));
    }
    Ok(())
}

/// A directory for one test, removed when dropped.
#[cfg(test)]
pub(crate) struct Scratch(pub(crate) PathBuf);

#[cfg(test)]
impl Scratch {
    /// A fresh, empty directory path (not created) under the system temp dir.
    pub(crate) fn new(name: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("state-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Scratch(path)
    }

    /// The scratch directory opened as a state directory.
    pub(crate) fn open(&self) -> StateDir {
        StateDir::open(&self.0).unwrap()
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn resolve_in(flag: Option<&str>, env: &[(&str, &str)]) -> Result<PathBuf, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve_with(flag.map(PathBuf::from), |name| {
            env.get(name).map(Into::into)
        })
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    /// Chowns to another uid; false when we may not (not root), to skip.
    fn give_away(path: &Path) -> bool {
        std::os::unix::fs::lchown(path, Some(54_321), None).is_ok()
    }

    #[test]
    fn resolve_takes_the_flag_then_the_env_then_xdg_then_home() {
        let all = [
            ("USAGE_SYNC_STATE_DIR", "/env"),
            ("XDG_STATE_HOME", "/xdg"),
            ("HOME", "/home/me"),
        ];
        assert_eq!(resolve_in(Some("/flag"), &all).unwrap(), Path::new("/flag"));
        assert_eq!(resolve_in(None, &all).unwrap(), Path::new("/env"));
        assert_eq!(
            resolve_in(None, &all[1..]).unwrap(),
            Path::new("/xdg/usage-sync")
        );
        assert_eq!(
            resolve_in(None, &all[2..]).unwrap(),
            Path::new("/home/me/.local/state/usage-sync")
        );
        // Empty values and a relative XDG_STATE_HOME count as unset.
        let odd = [
            ("USAGE_SYNC_STATE_DIR", ""),
            ("XDG_STATE_HOME", "rel"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            resolve_in(None, &odd).unwrap(),
            Path::new("/h/.local/state/usage-sync")
        );
    }

    #[test]
    fn resolve_without_home_says_to_pass_state_dir() {
        let err = resolve_in(None, &[("HOME", "")]).unwrap_err();
        assert!(err.contains("--state-dir"), "{err}");
    }

    #[test]
    fn open_creates_the_directory_and_parents_0700() {
        let scratch = Scratch::new("create");
        let leaf = scratch.0.join("a/b");
        let dir = StateDir::open(&leaf).unwrap();
        assert_eq!(mode(&leaf), 0o700);
        assert_eq!(mode(&scratch.0.join("a")), 0o700);
        assert_eq!(dir.path(), std::fs::canonicalize(&leaf).unwrap());
        assert_eq!(dir.file("x.json"), dir.path().join("x.json"));
        // Opening it again is fine.
        StateDir::open(&leaf).unwrap();
    }

    #[test]
    fn a_group_or_other_writable_directory_is_refused() {
        for loose in [0o770, 0o702, 0o777] {
            let scratch = Scratch::new("loose");
            scratch.open();
            std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = StateDir::open(&scratch.0).unwrap_err();
            assert!(
                err.contains(&format!("chmod 700 {}", scratch.0.display())),
                "{err}"
            );
            assert!(err.contains(&format!("{loose:04o}")), "{err}");
        }
        // Readable by others is not a risk to the billing: allowed.
        let scratch = Scratch::new("readable");
        scratch.open();
        std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&scratch.0).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let scratch = Scratch::new("owner");
        scratch.open();
        if !give_away(&scratch.0) {
            eprintln!("skipped: chown needs root");
            return;
        }
        let err = StateDir::open(&scratch.0).unwrap_err();
        assert!(err.contains("uid 54321"), "{err}");
        assert!(err.contains(&scratch.0.display().to_string()), "{err}");
    }

    #[test]
    fn a_file_is_not_a_state_directory() {
        let scratch = Scratch::new("file");
        let parent = scratch.open();
        let file = parent.file("plain");
        std::fs::write(&file, b"x").unwrap();
        let err = StateDir::open(&file).unwrap_err();
        assert!(
            err.contains("not a directory") && err.contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_counts_as_its_target() {
        let scratch = Scratch::new("symlink");
        let parent = scratch.open();
        let mine = parent.file("mine");
        StateDir::open(&mine).unwrap();
        let link = parent.file("link");
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        assert_eq!(StateDir::open(&link).unwrap().path(), mine);

        if !give_away(&mine) {
            eprintln!("skipped: chown needs root");
            return;
        }
        let err = StateDir::open(&link).unwrap_err();
        assert!(
            err.contains("uid 54321") && err.contains(&link.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn write_atomic_replaces_the_file_0600_and_leaves_no_temp_file() {
        let scratch = Scratch::new("atomic");
        let dir = scratch.open();
        dir.write_atomic("f.json", b"one").unwrap();
        dir.write_atomic("f.json", b"two").unwrap();
        assert_eq!(std::fs::read(dir.file("f.json")).unwrap(), b"two");
        assert_eq!(mode(&dir.file("f.json")), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
        for bad in ["", "..", "a/b", "../x"] {
            assert!(dir.write_atomic(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn read_is_capped_and_refuses_what_we_never_write() {
        let scratch = Scratch::new("read");
        let dir = scratch.open();
        assert_eq!(dir.read("none", 10).unwrap(), None);
        dir.write_atomic("small", b"12345").unwrap();
        assert_eq!(dir.read("small", 5).unwrap().unwrap(), b"12345");
        let err = dir.read("small", 4).unwrap_err();
        assert!(err.contains("small") && err.contains("5 bytes"), "{err}");
        std::os::unix::fs::symlink(dir.file("small"), dir.file("link")).unwrap();
        assert!(
            dir.read("link", 10)
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn locks_exclude_each_other() {
        let scratch = Scratch::new("lock");
        let dir = scratch.open();
        let held = dir.lock("x.lock").unwrap();
        let other = File::options()
            .write(true)
            .open(dir.file("x.lock"))
            .unwrap();
        assert!(other.try_lock_shared().is_err());
        drop(held);
        let a = dir.lock_shared("x.lock").unwrap();
        let b = dir.lock_shared("x.lock").unwrap();
        assert!(other.try_lock().is_err());
        drop((a, b));
        other.try_lock().unwrap();
        assert_eq!(mode(&dir.file("x.lock")), 0o600);
    }

    #[test]
    fn the_effective_uid_is_the_second_uid_field() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(crate::private_dir::euid_of_status(status), Some(0));
        assert_eq!(crate::private_dir::euid_of_status("Name: x\n"), None);
        assert_eq!(
            crate::private_dir::effective_uid().unwrap(),
            std::fs::metadata("/proc/self").unwrap().uid()
        );
    }
}
