//! Process creation: spawn + run + exit of a trivial process (the bundled
//! `noop`, whose entry point returns 0 at once).
//!
//! - **Many at once** (`spawn_run_exit_ns`): on a kernel with `noop`
//!   loaded, the clock starts before the first of 1,000 spawns and stops
//!   when `Kernel::run` returns with all of them reaped. Per process: pid
//!   and mailbox allocation, capability grants, a `Store`, instantiation,
//!   the call, exit and cleanup. Like Erlang's figure (spawn M, await M
//!   `'DOWN'`s), this is throughput, not the latency of one spawn. Every
//!   run uses the same kernel, so after the first run the instance pool's
//!   slots are warm, as in a long-running system (and in Erlang's VM,
//!   which reuses its heaps); the best run is reported. Brief §5: at most
//!   Erlang's (`benches/peers/compare.sh`).
//! - **Handlers at once** (`handler_spawn_run_exit_ns`): the same with a
//!   trivial handler process (WAT) whose first call exits: instantiation
//!   and calls without a fiber.
//! - **One at a time** (`spawn_run_exit_single_ns`): 200 times, spawn one
//!   `noop` and run the kernel until it exited, on one kernel with the
//!   default workers, after 300 cycles not measured (see [`WARM_UP`]);
//!   total / 200. This adds what one `Kernel::run` costs by itself
//!   (starting the loop and returning its report; a run of one process
//!   starts no second worker).

use crate::harness::{self, Guest};
use crate::{Settings, measure};
use anyhow::{Result, ensure};
use estalogic_kernel::Kernel;
use std::time::Instant;

/// Processes per run of the many-at-once benchmark.
pub const AT_ONCE: u64 = 1_000;
/// Spawn-and-run cycles per run of the one-at-a-time benchmark.
pub const ONE_AT_A_TIME: u64 = 200;

fn noop() -> Guest {
    Guest::bundled("noop", "run", &[])
}

/// A trivial handler process: its first call (the kernel's `STARTED`)
/// exits with code 0.
const NOOP_HANDLER: &str = r#"(module
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
  (func (export "handle") (param i32) (result i32) (call $exit (i32.const 0)) (i32.const 0)))"#;

/// `spawn_run_exit_ns`: per process, 1,000 spawned at once (quick: 100).
pub fn many_at_once(settings: &Settings) -> Result<f64> {
    many_of(settings, noop())
}

/// `handler_spawn_run_exit_ns`: the same with a trivial handler process.
pub fn many_handlers_at_once(settings: &Settings) -> Result<f64> {
    many_of(
        settings,
        Guest::wat("noop", NOOP_HANDLER, "handle", &["messaging:receive"]),
    )
}

/// 1,000 processes of `guest` (named `noop`) spawned at once and run until
/// all exited; per process (quick: 100).
fn many_of(settings: &Settings, guest: Guest) -> Result<f64> {
    let count = settings.count(AT_ONCE, 100);
    let mut kernel = Kernel::builder().build()?;
    guest.load(&mut kernel)?;
    measure::best_of(settings.runs().max(2), || {
        let started = Instant::now();
        for _ in 0..count {
            harness::spawn(&mut kernel, "noop")?;
        }
        let report = kernel.run();
        let elapsed = started.elapsed();
        ensure!(
            report.processes.len() as u64 == count,
            "{} of {count} noop processes ran",
            report.processes.len()
        );
        harness::expect_success(&report)?;
        Ok(measure::nanos_per(elapsed, count))
    })
}

/// `spawn_run_exit_single_ns`: per cycle of spawn one, run until it
/// exited; 200 cycles on one kernel with the default workers (quick: 20),
/// after [`WARM_UP`] cycles not measured.
pub fn one_at_a_time(settings: &Settings) -> Result<f64> {
    let cycles = settings.count(ONE_AT_A_TIME, 20);
    let mut kernel = Kernel::builder().build()?;
    noop().load(&mut kernel)?;
    let cycle = |kernel: &mut Kernel| -> Result<()> {
        harness::spawn(kernel, "noop")?;
        let report = kernel.run();
        ensure!(report.processes.len() == 1, "the noop process did not run");
        harness::expect_success(&report)
    };
    for _ in 0..settings.count(WARM_UP, 0) {
        cycle(&mut kernel)?;
    }
    measure::best_of(settings.runs(), || {
        let started = Instant::now();
        for _ in 0..cycles {
            cycle(&mut kernel)?;
        }
        Ok(measure::nanos_per(started.elapsed(), cycles))
    })
}

/// Cycles run before the one-at-a-time benchmark measures: a fresh
/// kernel's pool gives each of its first spawns a slot never used before
/// (a freed slot waits for the next batch of 256 decommits), and opening
/// one costs an `mprotect` (about 2 µs a spawn on this VM); the benchmark
/// measures a kernel past that, as the many-at-once one does (its first
/// runs open slots, its best is a later one).
pub const WARM_UP: u64 = 300;
