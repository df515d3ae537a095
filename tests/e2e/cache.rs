//! The compiled component is cached on disk between runs; a corrupt copy is
//! detected and rebuilt, and another component never loads the cached one.

use crate::support::*;
use std::path::{Path, PathBuf};

fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usage-sync-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cached(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn run_cached(p: &Providers, dir: &Path, extra: &[&str]) -> Run {
    let run = Run::exec(
        p.command(&with_inputs(extra))
            .env("USAGE_SYNC_CACHE_DIR", dir),
    );
    p.assert_no_leak(&run);
    run
}

#[test]
fn the_compiled_component_is_cached_and_a_corrupt_copy_rebuilt() {
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 3.0)]);
    let dir = cache_dir("corrupt");

    run_cached(&p, &dir, &["--dry-run"]).expect(0);
    let files = cached(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".cwasm"));
    let first = std::fs::read(&files[0]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the cache directory is private");
    }

    // A second run loads it: the file is left as it was.
    let run = run_cached(&p, &dir, &["--dry-run"]);
    run.expect(0);
    assert!(!run.stderr.contains("rebuilt"), "{}", run.stderr);
    assert_eq!(std::fs::read(&files[0]).unwrap(), first);

    // Flip a byte of the compiled code: detected, rebuilt, and the run still right.
    let mut corrupt = first.clone();
    corrupt[first.len() / 2] ^= 0xff;
    std::fs::write(&files[0], &corrupt).unwrap();
    let run = run_cached(&p, &dir, &[]);
    let out = run.expect(0).json();
    assert_eq!(out["usageQuantity"], "3");
    assert!(
        run.stderr.contains("corrupt or unreadable; rebuilt it"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), first);

    // A truncated file too.
    std::fs::write(&files[0], &first[..100]).unwrap();
    run_cached(&p, &dir, &["--dry-run"]).expect(0);
    assert_eq!(std::fs::read(&files[0]).unwrap(), first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn another_component_gets_its_own_cache_entry() {
    let p = Providers::start(vec![]);
    let dir = cache_dir("other");
    run_cached(&p, &dir, &["--dry-run"]).expect(0);
    let url = format!("{}/v1/billing/meters", p.stripe.url());
    run_cached(&p, &dir, &["--component", PROBE, "--customer-id", &url]).expect(0);
    assert_eq!(cached(&dir).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
