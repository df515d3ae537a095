//! Builds the workflow component (and the test probe component) for
//! `wasm32-wasip2`, so `cargo build` and `cargo test` at the root need no extra step.
//!
//! Also the variant builds for Spin and wasmCloud (`deploy/`), and the egress
//! policy's routes, derived from the workflow's Arazzo document (`build_routes.rs`).
//!
//! The nested cargo uses its own target directory: it never waits on the
//! outer build's lock, and its artifacts survive `cargo clean -p usage-sync`.

#[path = "build_routes.rs"]
mod routes;
#[path = "build_shrink.rs"]
mod shrink;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "component";
/// (package, the env var naming its .wasm for the host and the tests)
const COMPONENTS: [(&str, &str); 2] = [
    ("usage-sync-plugin", "USAGE_SYNC_COMPONENT"),
    ("egress-probe", "USAGE_SYNC_PROBE_COMPONENT"),
];
/// Builds of the workflow for platforms whose variables reach a component only
/// through `wasi:config` (see `wit/usage-sync.wit`), and the one the host's
/// batch commands run, without the HTTP entry point: (directory under
/// `target/`, cargo's feature flags, env var, optimised for speed).
const VARIANTS: [(&str, &[&str], &str, bool); 3] = [
    (
        "components-spin",
        &["--features", "spin"],
        "USAGE_SYNC_SPIN_COMPONENT",
        false,
    ),
    (
        "components-wasmcloud",
        &["--features", "wasmcloud"],
        "USAGE_SYNC_WASMCLOUD_COMPONENT",
        false,
    ),
    (
        "components-workflow",
        &["--no-default-features"],
        "USAGE_SYNC_WORKFLOW_COMPONENT",
        true,
    ),
];
/// The optimisation level of the build `run`, `sync` and `reconcile`
/// instantiate for every row: 11 % fewer instructions a row than the
/// profile's `s` (valgrind, BENCHMARKS.md "2026-12-06, 01:10"), 29 KB
/// larger, still under 400 KiB. The builds other hosts run stay at `s`: their
/// size is the goal, and a platform loads them per deployment, not per row.
const FAST: &str = "2";

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = PathBuf::from(manifest)
        .parent()
        .expect("host/ lies inside the workspace")
        .to_path_buf();
    // Everything the components are built from: `report` is the contract
    // the component shares with the host.
    for input in [
        "plugin",
        "report",
        "wit",
        "tests/components",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    routes::generate(&root, &out_dir);
    ensure_target();
    // One cargo each: built together, cargo would unify their dependencies'
    // features, and the probe's `std` would reach the workflow, which is
    // built without it.
    for (package, var) in COMPONENTS {
        let out = build(&root, "components", package, &[], false);
        let wasm = out.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        // The probe is a test tool: its size does not matter.
        if package == "usage-sync-plugin" {
            shrink::shrink(&wasm, &out_dir.join("default"));
        }
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
    // Each in its own target directory: the default build is never rebuilt
    // with other features, and the variants' paths stay fixed for deploy/.
    for (dir, features, var, fast) in VARIANTS {
        let out = build(&root, dir, "usage-sync-plugin", features, fast);
        let wasm = out.join("usage_sync_plugin.wasm");
        assert!(wasm.exists(), "{} was not built", wasm.display());
        shrink::shrink(&wasm, &out_dir.join(dir));
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}

/// `cargo build` of `package` for the component target into `target/<dir>`,
/// with `features` (cargo's flags), at [`FAST`] when `fast`; returns the
/// folder holding the .wasm files.
fn build(root: &Path, dir: &str, package: &str, features: &[&str], fast: bool) -> PathBuf {
    let target_dir = root.join("target").join(dir);
    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(root).args([
        "build",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "-p",
        package,
    ]);
    cargo.args(features);
    // The outer build's flags and wrappers (clippy, coverage) are for the host.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_TARGET_DIR", &target_dir);
    // Each build has its own target directory: no artifacts shared.
    if fast {
        cargo.env("CARGO_PROFILE_COMPONENT_OPT_LEVEL", FAST);
    } else {
        cargo.env_remove("CARGO_PROFILE_COMPONENT_OPT_LEVEL");
    }
    let status = cargo
        .status()
        .expect("could not start cargo to build the component");
    assert!(
        status.success(),
        "building the component failed; is the {TARGET} target installed? (rustup target add {TARGET})"
    );
    target_dir.join(TARGET).join(PROFILE)
}

/// rustup adds the targets in rust-toolchain.toml only when it installs the
/// toolchain; on a machine that already had it, add the target here so a fresh
/// clone builds with one command.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let installed = sysroot.is_some_and(|root| root.join("lib/rustlib").join(TARGET).exists());
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    // Failure is reported below, by the component build itself.
    let _ = rustup.status();
}
