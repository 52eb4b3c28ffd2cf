//! Integration tests with real WASM guests, one module per area.

mod answers;
mod answers_restarts;
mod capabilities;
mod handlers;
mod loading;
mod messaging;
mod scheduling;
mod supervision;
