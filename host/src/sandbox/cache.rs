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
//! it is created private to the user.

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
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, Source)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, Source::Compiled));
    };
    let path = dir.join(file_name(engine, wasm));
    let mut source = Source::Compiled;
    if let Ok(bytes) = std::fs::read(&path) {
        match verified(&bytes) {
            // SAFETY: the bytes are ours: written by `store` below into a
            // private directory and checked against their digest.
            Some(code) => match unsafe { Component::deserialize(engine, code) } {
                Ok(component) => return Ok((component, Source::Cached)),
                Err(_) => source = Source::Rebuilt,
            },
            None => source = Source::Rebuilt,
        }
    }
    let component = Component::new(engine, wasm)?;
    // A cache that cannot be written only costs the next run the compile.
    let _ = store(dir, &path, &component.serialize()?);
    Ok((component, source))
}

fn file_name(engine: &Engine, wasm: &[u8]) -> String {
    let component = usage_sync_report::hex(&Sha256::digest(wasm)[..16]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{component}-{:016x}.cwasm", hasher.finish())
}

/// The code, when the trailing digest matches it.
fn verified(bytes: &[u8]) -> Option<&[u8]> {
    let (code, digest) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    (Sha256::digest(code).as_slice() == digest).then_some(code)
}

fn store(dir: &Path, path: &Path, code: &[u8]) -> std::io::Result<()> {
    create_private(dir)?;
    let mut bytes = code.to_vec();
    bytes.extend_from_slice(&Sha256::digest(code));
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)
}

fn create_private(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_guards_the_code() {
        let code = b"compiled code".to_vec();
        let mut file = code.clone();
        file.extend_from_slice(&Sha256::digest(&code));
        assert_eq!(verified(&file), Some(&code[..]));
        file[3] ^= 1;
        assert_eq!(verified(&file), None);
        assert_eq!(verified(b"short"), None);
    }
}
