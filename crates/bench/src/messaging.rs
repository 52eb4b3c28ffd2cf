//! Message passing: the ping-pong round trip between two WASM processes.
//!
//! The bundled `pong` (entry `run`) answers every PING with a PONG; the
//! bundled `ping` (entry `bench`) makes 100,000 numbered round trips with it
//! and checks each answer (quick mode: entry `run`, 10,000). The figure is
//! the wall time of `Kernel::run` — both processes from instantiation to
//! exit — divided by the round trips: a send, a wakeup and a receive each
//! way. Compare with Erlang by `benches/peers/compare.sh` (brief §5: at most
//! half of Erlang's).

use crate::Settings;
use crate::harness::{self, Guest, MESSAGING};
use estalogic_kernel::{Kernel, KernelBuilder};

/// Round trips of `ping`'s `bench` entry point.
pub const ROUND_TRIPS: u64 = 100_000;
/// Round trips of `ping`'s `run` entry point (quick mode).
pub const QUICK_ROUND_TRIPS: u64 = 10_000;

fn ping_pong(settings: &Settings, builder: impl Fn() -> KernelBuilder) -> anyhow::Result<f64> {
    let (entry, rounds) = if settings.quick {
        ("run", QUICK_ROUND_TRIPS)
    } else {
        ("bench", ROUND_TRIPS)
    };
    let guests = [
        Guest::bundled("pong", "run", MESSAGING),
        Guest::bundled("ping", entry, MESSAGING),
    ];
    harness::time_per_operation_with(settings, builder, &guests, rounds)
}

/// `ping_pong_round_trip_ns`: default workers (one per core).
pub fn ping_pong_default_workers(settings: &Settings) -> anyhow::Result<f64> {
    ping_pong(settings, Kernel::builder)
}

/// `ping_pong_round_trip_1_worker_ns`: one worker thread.
pub fn ping_pong_one_worker(settings: &Settings) -> anyhow::Result<f64> {
    ping_pong(settings, || Kernel::builder().workers(1))
}
