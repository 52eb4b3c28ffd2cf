//! Compiles the guest services in `services/` for wasm32-unknown-unknown and
//! writes `bundled.rs`, which embeds every resulting `.wasm` by name.
//!
//! This is what makes "build the project" also build the guests, with no
//! manual step: the wasm32 target is installed through rustup if it is
//! missing (rustup does not add the targets of `rust-toolchain.toml` to a
//! toolchain that is already installed).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let services = root.join("services");
    let sdk = root.join("crates/sdk");
    let abi = root.join("crates/abi");
    for watched in [&services, &sdk, &abi] {
        for entry in walk(watched) {
            println!("cargo:rerun-if-changed={}", entry.display());
        }
    }

    ensure_target_installed();

    // A target directory of our own: the outer build holds the lock on its
    // own profile directory, and guests must not share host artifacts.
    let target_dir = root.join("target/wasm-services");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(services.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        command.env_remove(var);
    }
    // A 62 KiB shadow stack at the bottom of linear memory instead of Rust's
    // 1 MiB default: a process then touches a page or two of memory, not
    // the top of a megabyte, which keeps spawning cheap and idle processes
    // small. 62 KiB, not 64: the stack's top and the first 2 KiB of static
    // data then share one 4 KiB host page, so a process with a shallow stack
    // and little data (an idle server) touches one page of linear memory,
    // not two. A guest that overflows the stack traps (out of bounds), never
    // corrupts.
    command.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        "-C link-arg=-zstack-size=63488",
    );
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not run {cargo} to build the guest services: {e}"));
    assert!(
        status.success(),
        "building the guest services in {} for {TARGET} failed ({status})",
        services.display()
    );

    let wasm_dir = target_dir.join(TARGET).join("release");
    let mut modules: Vec<(String, PathBuf)> = std::fs::read_dir(&wasm_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", wasm_dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "wasm").then(|| {
                let name = path
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .replace('_', "-");
                (name, path)
            })
        })
        .collect();
    modules.sort();

    let mut out = String::from("/// Every bundled service: (name, wasm bytes), sorted by name.\n");
    out.push_str("pub const SERVICES: &[(&str, &[u8])] = &[\n");
    for (name, path) in &modules {
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("bundled.rs"), out).unwrap();
}

fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        return;
    }
    let mut command = Command::new("rustup");
    command.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        command.args(["--toolchain", &toolchain]);
    }
    let status = command.status().unwrap_or_else(|e| {
        panic!("the {TARGET} target is missing and rustup could not be run to add it: {e}")
    });
    assert!(
        status.success(),
        "`rustup target add {TARGET}` failed ({status})"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
