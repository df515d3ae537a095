//! Builds the workflow component (and the test probe component) for
//! `wasm32-wasip2`, so `cargo build` and `cargo test` at the root need no extra step.
//!
//! The nested cargo uses its own target directory: it never waits on the
//! outer build's lock, and its artifacts survive `cargo clean -p usage-sync`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "component";
/// (package, the env var naming its .wasm for the host and the tests)
const COMPONENTS: [(&str, &str); 2] = [
    ("usage-sync-plugin", "USAGE_SYNC_COMPONENT"),
    ("egress-probe", "USAGE_SYNC_PROBE_COMPONENT"),
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    for input in [
        "plugin",
        "wit",
        "tests/components",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let target_dir = root.join("target").join("components");
    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["build", "--profile", PROFILE, "--target", TARGET]);
    for (package, _) in COMPONENTS {
        cargo.args(["-p", package]);
    }
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
    let status = cargo
        .status()
        .expect("could not start cargo to build the component");
    assert!(
        status.success(),
        "building the component failed; is the {TARGET} target installed? (rustup target add {TARGET})"
    );
    let out = target_dir.join(TARGET).join(PROFILE);
    for (package, var) in COMPONENTS {
        let wasm = out.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}
