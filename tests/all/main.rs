//! Integration tests with real WASM guests, one module per area.

mod abi_edges;
mod answers;
mod answers_restarts;
mod audit_trace_edges;
mod boot_edges;
mod capabilities;
mod charges_and_panics_edges;
mod dos_edges;
mod handlers;
mod lifecycle;
mod limits_edges;
mod load_edges;
mod loading;
mod messaging;
mod messaging_edges;
mod restart_edges;
mod restart_load_edges;
mod router_edges;
mod scheduling;
mod scheduling_edges;
mod sdk_edges;
mod soak;
mod supervision;
mod supervision_edges;
mod time_edges;
mod waits_edges;
