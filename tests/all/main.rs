//! Integration tests with real WASM guests, one module per area.

mod capabilities;
mod loading;
mod messaging;
mod scheduling;
mod supervision;
