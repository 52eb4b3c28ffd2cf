//! Integration tests with real WASM guests, one module per area.

mod answers;
mod capabilities;
mod handlers;
mod loading;
mod messaging;
mod scheduling;
mod supervision;
