//! Module loading: manifests, binary validation and compilation.

pub mod check_sites;
pub mod compile_budget;
pub(crate) mod handler;
pub mod lifecycle_manager;
pub mod manifest;
pub mod preload_manager;
pub mod wasm_loader;
