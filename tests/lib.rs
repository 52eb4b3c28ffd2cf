//! Helpers for the integration tests: kernels with guests from WAT text or
//! the bundled services.

use estalogic_kernel::{Kernel, Manifest};
use std::path::Path;

/// A manifest for `name` with the given entry point and capabilities.
pub fn manifest(name: &str, entry: &str, capabilities: &[&str], priority: &str) -> Manifest {
    let capabilities: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "priority":"{priority}","capabilities_required":[{}]}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid")
}

/// Every capability a test guest might need.
pub const ALL_CAPS: &[&str] = &[
    "messaging:send",
    "messaging:receive",
    "process:lookup",
    "log:write",
    "time:read",
];

/// Loads a module from WAT text (or wasm bytes) under `name`.
pub fn load_wat(kernel: &mut Kernel, name: &str, wat: &str, priority: &str) {
    kernel
        .load_module(
            manifest(name, "run", ALL_CAPS, priority),
            wat.as_bytes(),
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads the bundled `testkit` module under `name`, running `entry`, with
/// extra manifest fields (JSON members, e.g. `"mailbox":{...}`).
pub fn load_testkit(kernel: &mut Kernel, name: &str, entry: &str, extra: &str) {
    let capabilities: Vec<String> = ALL_CAPS
        .iter()
        .chain(["messaging:broadcast"].iter())
        .map(|c| format!("{c:?}"))
        .collect();
    let separator = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]{separator}{extra}}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    let bytes = estalogic_services::get("testkit").expect("testkit is bundled");
    kernel
        .load_module(manifest, bytes, Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads the bundled `testkit` module under `name`, running `entry`, with
/// exactly the given capabilities (each a JSON value: a name string or a
/// `{"name":..,"scope":..}` object).
pub fn load_testkit_with(kernel: &mut Kernel, name: &str, entry: &str, capabilities: &[&str]) {
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    let bytes = estalogic_services::get("testkit").expect("testkit is bundled");
    kernel
        .load_module(manifest, bytes, Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads WAT text under `name` (entry `run`, every test capability) with
/// extra manifest fields (JSON members, e.g. `"restart":"on_failure"`).
pub fn load_wat_with(kernel: &mut Kernel, name: &str, wat: &str, extra: &str) {
    let capabilities: Vec<String> = ALL_CAPS.iter().map(|c| format!("{c:?}")).collect();
    let separator = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32",
            "capabilities_required":[{}]{separator}{extra}}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    kernel
        .load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads a bundled service with entry point `entry`.
pub fn load_bundled(kernel: &mut Kernel, name: &str, entry: &str) {
    let bytes = estalogic_services::get(name).expect("bundled service");
    kernel
        .load_module(
            manifest(name, entry, ALL_CAPS, "normal"),
            bytes,
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}
