//! Module loading: manifests, binary validation and compilation.

pub mod manifest;
pub mod wasm_loader;
