//! Shrinks a built component with Binaryen's `wasm-opt -Oz` (about 15 % of
//! its bytes: rustc's `opt-level = "s"` leaves what only a whole-module
//! optimizer sees, such as duplicate functions and dead globals), and drops
//! its debug names.
//!
//! `wasm-opt` reads core modules, not components, so the component's main
//! core module (the workflow's code; the others are a few hundred bytes of
//! canonical-ABI glue) is optimized alone and put back in place. Its imports
//! and exports are unchanged, so the component's wiring stays valid. A
//! component is a header and a list of `(id, LEB128 size, bytes)` sections;
//! walking that list is a few lines, where a parser crate would be one more
//! build dependency to compile.
//!
//! The result replaces cargo's output at the same path (`deploy/`, README and
//! the host name that path), marked with a custom section so a second pass
//! skips it. Without `wasm-opt` the build goes on with cargo's component
//! (same behaviour, larger) and says so, unless `USAGE_SYNC_REQUIRE_WASM_OPT`
//! is set, as CI sets it. `USAGE_SYNC_WASM_OPT` names the binary; otherwise
//! `wasm-opt` on `PATH` (Debian and Ubuntu: `apt install binaryen`).

use std::env;
use std::path::Path;
use std::process::Command;

/// The custom section that marks a component this pass has shrunk.
const MARK: &str = "usage-sync:wasm-opt";
/// The core-module section's id in a component (0 is custom).
const CORE_MODULE: u8 = 1;
const CUSTOM: u8 = 0;
/// The custom section of a component's debug names.
const NAMES: &str = "component-name";
/// The features rustc enables for `wasm32-wasip2` (LLVM's `generic` CPU);
/// the stripped module no longer lists them, and `wasm-opt` refuses
/// instructions of a feature it was not told of.
const FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// Shrinks the component at `path` in place; `scratch` holds the core
/// module on its way through `wasm-opt`.
pub fn shrink(path: &Path, scratch: &Path) {
    println!("cargo:rerun-if-env-changed=USAGE_SYNC_WASM_OPT");
    println!("cargo:rerun-if-env-changed=USAGE_SYNC_REQUIRE_WASM_OPT");
    let component = std::fs::read(path).expect("reading the built component");
    let mut sections = sections(&component);
    if sections
        .iter()
        .any(|(id, body)| *id == CUSTOM && is_mark(body))
    {
        return;
    }
    let Some(main) = (0..sections.len())
        .filter(|&i| sections[i].0 == CORE_MODULE)
        .max_by_key(|&i| sections[i].1.len())
    else {
        panic!("{} holds no core module", path.display());
    };
    let wasm_opt = env::var_os("USAGE_SYNC_WASM_OPT").unwrap_or_else(|| "wasm-opt".into());
    let input = scratch.with_extension("in.wasm");
    let output = scratch.with_extension("out.wasm");
    std::fs::write(&input, sections[main].1).expect("writing the core module");
    let ran = Command::new(&wasm_opt)
        .arg(&input)
        .arg("-Oz")
        .args(FEATURES)
        .arg("-o")
        .arg(&output)
        .status();
    let optimized = match ran {
        Ok(status) if status.success() => {
            std::fs::read(&output).expect("reading wasm-opt's output")
        }
        failed => {
            let why = match failed {
                Ok(status) => format!("{} failed ({status})", wasm_opt.to_string_lossy()),
                Err(e) => format!("could not run {}: {e}", wasm_opt.to_string_lossy()),
            };
            if env::var_os("USAGE_SYNC_REQUIRE_WASM_OPT").is_some_and(|v| !v.is_empty()) {
                panic!("{why}; USAGE_SYNC_REQUIRE_WASM_OPT is set");
            }
            println!(
                "cargo:warning={why}: {} is not size-optimized (apt install binaryen, or set USAGE_SYNC_WASM_OPT)",
                path.display()
            );
            return;
        }
    };
    sections[main].1 = &optimized;
    // The component's debug names (wit-component's `component-name`: 8 KB,
    // 2 % of the component), as cargo's `strip` drops the core module's.
    sections.retain(|(id, body)| !(*id == CUSTOM && custom_name(body) == Some(NAMES.as_bytes())));
    let mut mark = Vec::new();
    leb128(&mut mark, MARK.len());
    mark.extend_from_slice(MARK.as_bytes());
    sections.push((CUSTOM, &mark));

    let mut out = component[..8].to_vec();
    for (id, body) in sections {
        out.push(id);
        leb128(&mut out, body.len());
        out.extend_from_slice(body);
    }
    // A new file renamed into place: cargo's copy in `deps/`, hard-linked to
    // this path, keeps its own bytes.
    let staged = path.with_extension("shrinking");
    std::fs::write(&staged, &out).expect("writing the shrunk component");
    std::fs::rename(&staged, path).expect("replacing the component");
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}

/// The top-level sections of a component binary, as `(id, body)`.
fn sections(wasm: &[u8]) -> Vec<(u8, &[u8])> {
    assert!(
        wasm.len() >= 8 && wasm[..4] == *b"\0asm",
        "not a WebAssembly binary"
    );
    let mut sections = Vec::new();
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, body) = read_leb128(wasm, at + 1);
        let end = body
            .checked_add(size)
            .filter(|&end| end <= wasm.len())
            .expect("a section runs past the end of the component");
        sections.push((id, &wasm[body..end]));
        at = end;
    }
    sections
}

/// Whether a custom section's body is named [`MARK`].
fn is_mark(body: &[u8]) -> bool {
    custom_name(body) == Some(MARK.as_bytes())
}

/// A custom section's name.
fn custom_name(body: &[u8]) -> Option<&[u8]> {
    let (len, name) = read_leb128(body, 0);
    body.get(name..name.checked_add(len)?)
}

/// An unsigned LEB128 at `at`: the value and where what follows it starts.
fn read_leb128(bytes: &[u8], mut at: usize) -> (usize, usize) {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at).expect("a LEB128 runs past the end");
        at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (value, at);
        }
    }
    panic!("a LEB128 longer than a u32");
}

fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
