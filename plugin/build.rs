//! Links the component with 2 MiB of initial linear memory instead of the
//! 1 MiB stack plus data (17 pages). A row's run grew that by one page in
//! most instantiations; each grow, and each reuse of the pooled slot after
//! it, is an `mprotect` with a TLB shootdown on the host. Without them a sync
//! takes 3 to 5 % less CPU (BENCHMARKS.md); a page not touched costs
//! nothing, and the sandbox's memory cap is unchanged.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=2097152");
    }
}
