//! Directories only this user can write, as ssh insists on for `~/.ssh`:
//! the state directory (the billing history) and the compiled-component
//! cache (native code that runs holding both keys). A directory is created
//! `0700`; an existing one owned by another user, or writable by group or
//! others, is refused with what to do about it.

use std::path::Path;

/// What a directory holds, for the errors: its name, what another user
/// could do there, and the flag or variable that points elsewhere.
pub struct Purpose {
    pub name: &'static str,
    pub risk: &'static str,
    pub elsewhere: &'static str,
}

impl Purpose {
    /// The state directory.
    pub const STATE: Purpose = Purpose {
        name: "the state directory",
        risk: "rewrite the billing history there",
        elsewhere: "Pass --state-dir with a directory of your own",
    };
    /// The compiled-component cache.
    pub const CACHE: Purpose = Purpose {
        name: "the cache directory",
        risk: "plant compiled code there that would run holding your keys",
        elsewhere: "Pass --cache-dir with a directory of your own (or --no-cache)",
    };
}

/// Why a directory cannot be used.
#[derive(Debug)]
pub enum Unusable {
    /// It is missing and cannot be created, or cannot be read.
    Unavailable(String),
    /// It exists and another user owns it or may write it, or it is no
    /// directory.
    Refused(String),
}

/// The directory at `path` for `purpose`: created (with missing parents)
/// `0700` when missing, then checked. The path returned has its symlinks
/// resolved: a link swapped after the check cannot redirect a caller to a
/// directory that was not checked.
pub fn open(path: &Path, purpose: &Purpose) -> Result<std::path::PathBuf, Unusable> {
    let Purpose {
        name, elsewhere, ..
    } = purpose;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path).map_err(|e| {
            Unusable::Unavailable(format!(
                "cannot create {name} {}: {e}; create it yourself (mkdir -m 700 -p DIR). {elsewhere}",
                path.display()
            ))
        })?,
        Err(e) => {
            return Err(Unusable::Unavailable(format!(
                "cannot read {name} {}: {e}",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    let real = std::fs::canonicalize(path).map_err(|e| {
        Unusable::Unavailable(format!("cannot resolve {name} {}: {e}", path.display()))
    })?;
    let meta = std::fs::symlink_metadata(&real).map_err(|e| {
        Unusable::Unavailable(format!("cannot read {name} {}: {e}", path.display()))
    })?;
    let shown = if real == path {
        path.display().to_string()
    } else {
        format!("{} (-> {})", path.display(), real.display())
    };
    if !meta.is_dir() {
        return Err(Unusable::Refused(format!(
            "{name} {shown} exists and is not a directory: move it away. {elsewhere}"
        )));
    }
    check(&meta, &real, purpose, &shown).map_err(Unusable::Refused)?;
    Ok(real)
}

/// Creates `path` (and missing parents) with mode 0700.
pub fn create(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Refuses `meta` (of `real`, shown as `shown`) unless it is owned by this
/// process's effective uid and not writable by group or others.
#[cfg(unix)]
pub fn check(
    meta: &std::fs::Metadata,
    real: &Path,
    purpose: &Purpose,
    shown: &str,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Purpose {
        name,
        risk,
        elsewhere,
    } = purpose;
    let me = effective_uid()?;
    if meta.uid() != me {
        return Err(format!(
            "{name} {shown} is owned by uid {}, not by you (uid {me}): another user \
             could {risk}. {elsewhere}, or, if it is meant to be yours, run `chown {me} {}`",
            meta.uid(),
            real.display()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{name} {shown} is writable by group or others (mode {mode:04o}): \
             another user could {risk}. Run `chmod {} {}`",
            if meta.is_dir() { "700" } else { "600" },
            real.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check(_: &std::fs::Metadata, _: &Path, _: &Purpose, _: &str) -> Result<(), String> {
    Ok(())
}

/// The effective uid, from `/proc/self/status`: std has no getuid, and
/// reading it has no side effect, unlike creating a file to see its owner
/// (which would need a directory we already trust, and reports the owner
/// the filesystem chose, e.g. not ours on NFS with root squashing).
#[cfg(unix)]
pub fn effective_uid() -> Result<u32, String> {
    const STATUS: &str = "/proc/self/status";
    let text = std::fs::read_to_string(STATUS).map_err(|e| {
        format!("cannot tell which user this is: {STATUS}: {e}; usage-sync needs /proc (Linux) to check its directories")
    })?;
    euid_of_status(&text)
        .ok_or_else(|| format!("cannot tell which user this is: no Uid line in {STATUS}"))
}

/// The effective uid in a `/proc/PID/status` text: the second field of `Uid:`.
#[cfg(unix)]
pub fn euid_of_status(text: &str) -> Option<u32> {
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
