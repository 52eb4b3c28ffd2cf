//! The cost of preemptibility: a CPU-bound guest run as a kernel process
//! against the same module in plain Wasmtime.
//!
//! The guest ([`spinner`]) runs 300,000,000 iterations of a 64-bit linear
//! congruential generator, summing the high bits, and returns a checksum
//! (quick mode: 3,000,000). It makes no syscall and needs no memory.
//!
//! - **Kernel:** one process on a default kernel — real-time mode, so fuel
//!   metering with a checkpoint every 100,000 units (the scheduler's
//!   chance to preempt); the epoch backstop is off by default. Timed:
//!   `Kernel::run`.
//! - **Plain:** a `wasmtime::Engine` with a default `Config` (no fuel, no
//!   epochs), a `Store`, a synchronous instantiation and call. Timed: the
//!   instantiation and the call.
//!
//! Compilation is outside both timings. Each side keeps its best run, the
//! checksums must agree, and the figure is kernel / plain. Brief §5: at
//! most 1.15.

use crate::harness::{self, Guest};
use crate::{Settings, measure};
use anyhow::{Result, bail, ensure};
use estalogic_kernel::{ExitStatus, Kernel};
use std::time::Instant;

/// Iterations of the spinner's loop.
pub const ITERATIONS: u64 = 300_000_000;

/// The CPU-bound guest: `run() -> i32` loops `iterations` times and returns
/// a checksum of what it computed.
pub fn spinner(iterations: u64) -> String {
    format!(
        r#"(module
  (func (export "run") (result i32)
    (local $i i64) (local $x i64) (local $sum i64)
    (local.set $x (i64.const 88172645463325252))
    (loop $again
      (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                             (i64.const 1442695040888963407)))
      (local.set $sum (i64.add (local.get $sum) (i64.shr_u (local.get $x) (i64.const 33))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $again (i64.lt_u (local.get $i) (i64.const {iterations}))))
    (i32.wrap_i64 (i64.xor (local.get $sum) (i64.shr_u (local.get $sum) (i64.const 32))))))"#
    )
}

/// `preemption_overhead_ratio`: best kernel time / best plain time.
pub fn overhead_ratio(settings: &Settings) -> Result<f64> {
    let text = spinner(settings.count(ITERATIONS, 3_000_000));
    let mut kernel_checksum = None;
    let in_kernel = measure::best_of(settings.runs(), || {
        let guests = [Guest::wat("spinner", text.as_str(), "run", &[])];
        let mut kernel = harness::boot(Kernel::builder(), &guests)?;
        let (elapsed, report) = harness::run_timed(&mut kernel)?;
        match report.processes.first().map(|p| &p.status) {
            Some(ExitStatus::Exited(checksum)) => kernel_checksum = Some(*checksum),
            other => bail!("the spinner did not exit: {other:?}"),
        }
        Ok(elapsed.as_secs_f64())
    })?;

    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, &text).map_err(|e| plain_error("compile", e))?;
    let mut plain_checksum = None;
    let plain = measure::best_of(settings.runs(), || {
        let mut store = wasmtime::Store::new(&engine, ());
        let started = Instant::now();
        let instance = wasmtime::Instance::new(&mut store, &module, &[])
            .map_err(|e| plain_error("instantiate", e))?;
        let run = instance
            .get_typed_func::<(), i32>(&mut store, "run")
            .map_err(|e| plain_error("find run in", e))?;
        let checksum = run
            .call(&mut store, ())
            .map_err(|e| plain_error("run", e))?;
        let elapsed = started.elapsed();
        plain_checksum = Some(checksum);
        Ok(elapsed.as_secs_f64())
    })?;

    ensure!(
        kernel_checksum == plain_checksum,
        "the checksums differ: {kernel_checksum:?} in the kernel, {plain_checksum:?} plain"
    );
    Ok(in_kernel / plain)
}

fn plain_error(what: &str, error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {what} the spinner in plain Wasmtime: {error:#}")
}
