//! Integration tests with real WASM guests, one module per area.

mod abi_edges;
mod answers;
mod answers_restarts;
mod argument_edges;
mod audit_trace_edges;
mod boot_edges;
mod broadcast_step_edges;
mod capabilities;
mod capability_race_edges;
mod charges_and_panics_edges;
mod check_site_edges;
mod check_site_shape_edges;
mod dos_edges;
mod embedding_edges;
mod fanout_edges;
mod fuel_accounting_edges;
mod handlers;
mod host_handle_edges;
mod host_work_edges;
mod lent_turn_edges;
mod lifecycle;
mod limits_edges;
mod load_edges;
mod loading;
mod local_wake_edges;
mod local_wakes;
mod memory_budget;
mod memory_budget_edges;
mod messaging;
mod messaging_edges;
mod name_edges;
mod notifications;
mod notify_edges;
mod ordering_edges;
mod priority_edges;
mod restart_edges;
mod restart_load_edges;
mod router_edges;
mod scheduler_mix_edges;
mod scheduling;
mod scheduling_edges;
mod sdk_edges;
mod soak;
mod start_function_edges;
mod supervision;
mod supervision_edges;
mod time_edges;
mod waits_edges;
mod wasm_feature_edges;

/// Runs [`estalogic_tests::raise_map_count`] as the binary starts, before
/// any test builds a kernel of 10,000 processes.
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` that the
// loader calls once before `main`; this entry is one, and what it calls
// only reads and writes a /proc file (std's file I/O needs no runtime
// set up by `main`).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static RAISE_MAP_COUNT: extern "C" fn() = raise_map_count;

#[cfg(target_os = "linux")]
extern "C" fn raise_map_count() {
    estalogic_tests::raise_map_count();
}
