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

/// A planted compiled file would run as this user's code, holding both
/// keys: a cache directory others may write, or one another user owns, is
/// refused before anything runs; a cached file others may write is never
/// loaded, but compiled afresh over.
#[cfg(unix)]
#[test]
fn a_cache_directory_or_file_others_may_write_is_never_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 3.0)]);
    let dir = cache_dir("loose");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = run_cached(&p, &dir, &["--dry-run"]);
    run.expect(2);
    let message = run.error_message();
    assert!(
        message.contains("is writable by group or others (mode 0777)")
            && message.contains("plant compiled code"),
        "{message}"
    );
    assert!(cached(&dir).is_empty() && p.amberflo_requests().is_empty());
    // Owned by another user (only root may give a directory away).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if std::os::unix::fs::chown(&dir, Some(54_321), None).is_ok() {
        let run = run_cached(&p, &dir, &["--dry-run"]);
        run.expect(2);
        assert!(
            run.error_message().contains("is owned by uid 54321"),
            "{}",
            run.error_message()
        );
        std::os::unix::fs::chown(&dir, Some(0), None).unwrap();
    }
    // Our own private directory: the run caches; a cached file made
    // writable by others is replaced, not loaded.
    run_cached(&p, &dir, &["--dry-run"]).expect(0);
    let files = cached(&dir);
    assert_eq!(files.len(), 1);
    let good = std::fs::read(&files[0]).unwrap();
    // A file with a valid digest, but anyone may write it: not loaded.
    std::fs::write(&files[0], &good).unwrap();
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = run_cached(&p, &dir, &[]);
    assert_eq!(run.expect(0).json()["usageQuantity"], "3");
    assert!(run.stderr.contains("rebuilt"), "{}", run.stderr);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o022, 0, "replaced by a file of our own");
    assert_eq!(std::fs::read(&files[0]).unwrap().len(), good.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `command`, run twice inside a mount namespace of its own with `dir` a
/// fresh `noexec` tmpfs (as a hardened host mounts /tmp or /var): the two
/// runs, or `None` when this machine lets no one make such a mount.
fn twice_on_a_noexec_mount(command: &std::process::Command, dir: &Path) -> Option<[Run; 2]> {
    // Root needs only a mount namespace; anyone else maps itself to root in
    // a user namespace of its own, where the kernel allows that.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let namespaces: &[&str] = if root {
        &["--mount"]
    } else {
        &["--map-root-user", "--mount"]
    };
    let probe = std::process::Command::new("unshare")
        .args(namespaces)
        .args(["sh", "-c", "mount -t tmpfs -o noexec tmpfs \"$0\""])
        .arg(dir)
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let err = |n: u8| dir.with_extension(format!("stderr{n}"));
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(namespaces)
        .args(["sh", "-c"])
        .arg(
            "mount -t tmpfs -o noexec tmpfs \"$0\" && shift && \
             \"$@\" 2>\"$ERR1\" >\"$ERR1.out\"; echo $? >\"$ERR1.code\"; \
             \"$@\" 2>\"$ERR2\" >\"$ERR2.out\"; echo $? >\"$ERR2.code\"",
        )
        .arg(dir)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .env("ERR1", err(1))
        .env("ERR2", err(2));
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => unshare.env(name, value),
            None => unshare.env_remove(name),
        };
    }
    let status = unshare.status().expect("unshare runs");
    assert!(status.success(), "{status}");
    let run = |n: u8| {
        let path = err(n);
        let read = |ext: &str| {
            std::fs::read_to_string(path.with_extension(format!("stderr{n}.{ext}"))).unwrap()
        };
        Run {
            code: read("code").trim().parse().unwrap(),
            stdout: read("out"),
            stderr: std::fs::read_to_string(&path).unwrap(),
        }
    };
    Some([run(1), run(2)])
}

#[test]
fn a_cache_on_a_noexec_mount_is_loaded_not_rebuilt_every_run() {
    // Compiled code cannot be mapped executable from a `noexec` mount; it is
    // read instead, not compiled again and again as if corrupt.
    let (start, _) = yesterday();
    let p = Providers::start(vec![usage("acme", "api-calls", start + 5, 3.0)]);
    let dir = cache_dir("noexec");
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = p.command(&with_inputs(&["--dry-run"]));
    command.env("USAGE_SYNC_CACHE_DIR", dir.join("cache"));
    let Some([first, second]) = twice_on_a_noexec_mount(&command, &dir) else {
        eprintln!("skipped: this machine allows no noexec tmpfs in a mount namespace");
        return;
    };
    first.expect(0);
    let second = second.expect(0);
    assert!(
        !second.stderr.contains("rebuilt"),
        "the second run found its cache unusable: {}",
        second.stderr
    );
    p.assert_no_leak(second);
    let _ = std::fs::remove_dir_all(&dir);
}
