//! Compiled components cached on disk, so a run does not compile the
//! component again (~150 ms) when nothing changed.
//!
//! A file's name carries the component's SHA-256 and wasmtime's compatibility
//! hash (its version and the engine's settings), so a new component, a new
//! wasmtime or other settings miss the cache instead of loading a stale
//! artifact. The file ends with a SHA-256 of its contents: a truncated or
//! corrupted file is detected before wasmtime sees it, and rebuilt.
//!
//! Loading compiled code trusts the cache directory like the binary itself:
//! it is created private to the user, an existing one owned by another user
//! or writable by group or others is refused ([`open_dir`]), and a cached
//! file is loaded only when it is a regular file of this user's that no one
//! else may write. (The compiled code depends on the CPU features wasmtime
//! finds at run time, so no digest of it can be known when the binary is
//! built: ownership is the trust anchor, as for ssh's `~/.ssh`.)

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where the cache lives: `USAGE_SYNC_CACHE_DIR`, else `$XDG_CACHE_HOME/usage-sync`,
/// else `$HOME/.cache/usage-sync`; none without any of them.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("USAGE_SYNC_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("usage-sync")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("usage-sync")))
}

/// The cache directory to use at `dir`, checked: created `0700` when
/// missing (`None` when it cannot be: no cache, only the compile's cost);
/// refused when it exists and another user owns it or group or others may
/// write it, where a planted file would run as this user's code.
pub fn open_dir(dir: &Path) -> Result<Option<PathBuf>, String> {
    use crate::private_dir::{Purpose, Unusable};
    match crate::private_dir::open(dir, &Purpose::CACHE) {
        Ok(real) => Ok(Some(real)),
        Err(Unusable::Unavailable(_)) => Ok(None),
        Err(Unusable::Refused(e)) => Err(e),
    }
}

/// Whether the file at `path` may be loaded as code: a regular file (not a
/// link) of this user's that group and others cannot write.
fn trusted_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let shown = path.display().to_string();
    meta.is_file()
        && crate::private_dir::check(&meta, path, &crate::private_dir::Purpose::CACHE, &shown)
            .is_ok()
}

/// How a component was obtained, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from a compiled copy on disk.
    Cached,
    /// Compiled now (no copy yet, or no cache), and stored when there is a cache.
    Compiled,
    /// The cached file was corrupt or unreadable by this wasmtime; replaced.
    Rebuilt,
}

/// The component compiled for `engine`, from `dir` when it holds a good copy.
/// `map`: whether a good copy may be mapped from its file rather than read
/// into memory of our own (`perf` names guest functions from a perf map only
/// in memory of our own, so profiling turns it off).
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
    map: bool,
) -> wasmtime::Result<(Component, Source)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, Source::Compiled));
    };
    let path = dir.join(file_name(engine, wasm));
    let mut source = Source::Compiled;
    let trusted = trusted_file(&path);
    if path.exists() && !trusted {
        source = Source::Rebuilt;
    }
    if trusted {
        match cached(engine, &path, map) {
            Some(component) => return Ok((component, Source::Cached)),
            None => source = Source::Rebuilt,
        }
    }
    let component = Component::new(engine, wasm)?;
    // A cache that cannot be written only costs the next run the compile.
    let _ = store(dir, &path, &component.serialize()?);
    Ok((component, source))
}

/// The component compiled in the trusted file at `path`, when its digest
/// matches and this wasmtime can load it.
///
/// Safety of the `deserialize` calls: the file is ours: this user's, in a
/// directory only this user may write (checked by `open_dir` and
/// `trusted_file`), written whole by `store` (then renamed, so a later `store`
/// never changes the pages mapped here) and checked against its digest for
/// truncation.
fn cached(engine: &Engine, path: &Path, map: bool) -> Option<Component> {
    if map {
        if !file_verified(path) {
            return None;
        }
        // Mapped rather than read: no copy of the code (reading and copying
        // it was half of a warm start).
        // SAFETY: as above.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
            return Some(component);
        }
    }
    // Read into memory of our own, and the digest checked of what was read:
    // on a `noexec` mount the mapped file cannot be made executable, and
    // `perf` names code from a perf map only outside files.
    let bytes = std::fs::read(path).ok()?;
    if !verified(&bytes[..]).unwrap_or(false) {
        return None;
    }
    let code = &bytes[..bytes.len() - DIGEST];
    // SAFETY: as above, for the bytes just read and checked.
    unsafe { Component::deserialize(engine, code) }.ok()
}

fn file_name(engine: &Engine, wasm: &[u8]) -> String {
    let component = usage_sync_report::hex(&Sha256::digest(wasm)[..16]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{component}-{:016x}.cwasm", hasher.finish())
}

/// Whether the file at `path` ends with the digest of what comes before it,
/// read through a small buffer (the file is mapped, not copied, afterwards).
/// The digest trails the code: wasmtime reads the ELF image by its headers
/// and ignores the bytes past it.
fn file_verified(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|file| verified(file).unwrap_or(false))
}

/// The length of the digest that ends a cached file (SHA-256).
const DIGEST: usize = 32;

/// Whether `reader` ends with the SHA-256 of what comes before it.
fn verified(mut reader: impl std::io::Read) -> std::io::Result<bool> {
    let mut hasher = Sha256::new();
    // The last DIGEST bytes seen are held back until more arrive.
    let mut buf = vec![0u8; 64 << 10];
    let mut held = 0;
    loop {
        let n = reader.read(&mut buf[held..])?;
        if n == 0 {
            break;
        }
        held += n;
        if held > DIGEST {
            hasher.update(&buf[..held - DIGEST]);
            buf.copy_within(held - DIGEST..held, 0);
            held = DIGEST;
        }
    }
    Ok(held == DIGEST && hasher.finalize().as_slice() == &buf[..DIGEST])
}

fn store(dir: &Path, path: &Path, code: &[u8]) -> std::io::Result<()> {
    crate::private_dir::create(dir)?;
    let mut bytes = code.to_vec();
    bytes.extend_from_slice(&Sha256::digest(code));
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_digest(code: &[u8]) -> Vec<u8> {
        let mut file = code.to_vec();
        file.extend_from_slice(&Sha256::digest(code));
        file
    }

    #[test]
    fn a_good_copy_is_used_mapped_or_read_and_a_bad_one_rebuilt() {
        // The smallest component: a header and nothing else.
        let wasm = b"\0asm\x0d\0\x01\0";
        let engine = Engine::default();
        let dir =
            std::env::temp_dir().join(format!("usage-sync-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = |map| load(&engine, wasm, Some(&dir), map).unwrap().1;
        assert_eq!(source(true), Source::Compiled);
        assert_eq!(source(true), Source::Cached);
        assert_eq!(source(false), Source::Cached);
        let file = dir.join(file_name(&engine, wasm));
        for map in [true, false] {
            let mut bytes = std::fs::read(&file).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(&file, &bytes).unwrap();
            assert_eq!(source(map), Source::Rebuilt, "map: {map}");
            assert_eq!(source(map), Source::Cached, "map: {map}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_digest_guards_the_code() {
        let mut file = with_digest(b"compiled code");
        assert!(verified(&file[..]).unwrap());
        file[3] ^= 1;
        assert!(!verified(&file[..]).unwrap());
        assert!(!verified(&b"short"[..]).unwrap());
        assert!(verified(&with_digest(b"")[..]).unwrap());
    }

    #[test]
    fn the_digest_is_found_across_reads_of_any_size() {
        // Bigger than the buffer, read in odd pieces: the digest straddles them.
        let code: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = with_digest(&code);
        for piece in [1, 7, 31, 32, 33, 4096, 65_535, 1 << 20] {
            let reader = Pieces(&file, piece);
            assert!(verified(reader).unwrap(), "pieces of {piece}");
        }
        let truncated = &file[..file.len() - 1];
        assert!(!verified(truncated).unwrap());
        let mut longer = file.clone();
        longer.push(0);
        assert!(!verified(&longer[..]).unwrap());
    }

    /// A reader that hands out at most `.1` bytes a call.
    struct Pieces<'a>(&'a [u8], usize);

    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
}
