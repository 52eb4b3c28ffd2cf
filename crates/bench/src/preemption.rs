//! The cost of preemptibility: CPU-bound guests run as kernel processes
//! against the same modules unpreempted.
//!
//! Fuel's cost depends on the code it meters (Wasmtime adds to a counter
//! in every basic block and checks it at every loop header and call), so
//! one guest cannot stand for all: four [`Workload`]s, each a loop of
//! 100,000,000 to 300,000,000 iterations (quick mode: 1% of that) that
//! returns a checksum, no syscall:
//!
//! - `lcg`: a 64-bit linear congruential generator, summing high bits (a
//!   chain of dependent multiplies: fuel's adds run beside it);
//! - `sum`: `sum += i`, the tightest loop there is (fuel's worst case);
//! - `memory`: a load, an add and a store to a 64 KiB buffer each
//!   iteration;
//! - `calls`: a call to a small function each iteration.
//!
//! Three sides run each workload:
//!
//! - **Kernel:** one process on a default kernel — real-time mode, so fuel
//!   metering with a checkpoint every 100,000 units (the scheduler's
//!   chance to preempt); the epoch backstop is off by default. Timed:
//!   `Kernel::run`.
//! - **Unpreempted:** plain Wasmtime with the kernel's memory layout (64
//!   MiB slots, explicit bounds checks; [`MEMORY_SLOT`]) and no fuel or
//!   epochs: the same guest, minus preemption. Timed: a synchronous
//!   instantiation and call. The brief's ≤ 1.15× is judged against it.
//! - **Plain default:** `wasmtime::Engine::default()` (4 GiB reservations,
//!   bounds checks folded into guard pages, no fuel): what the whole
//!   kernel costs against Wasmtime out of the box.
//!
//! Compilation is outside every timing. A round runs the three sides back
//! to back (the order reversed every other round), the checksums must
//! agree, and a figure is the median of the rounds' ratios: a machine's
//! slow spell then hits both sides of a ratio alike. `estactl bench` keeps
//! each workload's figures for the rest of the process, so the per-workload
//! rows and the worst-case rows measure once.

use crate::{Settings, harness, measure};
use anyhow::{Result, bail, ensure};
use estalogic_kernel::core::init::{MEMORY_GUARD, MEMORY_SLOT};
use estalogic_kernel::{ExitStatus, Kernel};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// A CPU-bound guest of the preemption benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// A 64-bit linear congruential generator.
    Lcg,
    /// `sum += i`.
    Sum,
    /// A load, add and store to a 64 KiB buffer.
    Memory,
    /// A call to a small function.
    Calls,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 4] = [
        Workload::Lcg,
        Workload::Sum,
        Workload::Memory,
        Workload::Calls,
    ];

    /// Its name in benchmark names.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Lcg => "lcg",
            Workload::Sum => "sum",
            Workload::Memory => "memory",
            Workload::Calls => "calls",
        }
    }

    /// Iterations of its loop at full size (each takes about 1 ns plain).
    pub fn iterations(self) -> u64 {
        match self {
            Workload::Lcg => 300_000_000,
            Workload::Sum => 300_000_000,
            Workload::Memory => 200_000_000,
            Workload::Calls => 100_000_000,
        }
    }

    /// The guest: `run() -> i32` loops `iterations` times and returns a
    /// checksum of what it computed.
    pub fn wat(self, iterations: u64) -> String {
        let (fields, body, result) = match self {
            Workload::Lcg => (
                "",
                "(local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                                       (i64.const 1442695040888963407)))
                 (local.set $sum (i64.add (local.get $sum) (i64.shr_u (local.get $x) (i64.const 33))))",
                "(i64.xor (local.get $sum) (i64.shr_u (local.get $sum) (i64.const 32)))",
            ),
            Workload::Sum => (
                "",
                "(local.set $sum (i64.add (local.get $sum) (local.get $i)))",
                "(i64.xor (local.get $sum) (i64.shr_u (local.get $sum) (i64.const 32)))",
            ),
            Workload::Memory => (
                r#"(memory (export "memory") 1)"#,
                "(local.set $a (i32.shl (i32.and (i32.wrap_i64 (local.get $i)) (i32.const 0x3fff))
                                       (i32.const 2)))
                 (i32.store (local.get $a)
                   (i32.add (i32.load (local.get $a)) (i32.wrap_i64 (local.get $i))))",
                "(i64.extend_i32_u (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 65532))))",
            ),
            Workload::Calls => (
                "(func $step (param $x i64) (param $i i64) (result i64)
                   (i64.add (i64.rotl (local.get $x) (i64.const 5)) (local.get $i)))",
                "(local.set $sum (call $step (local.get $sum) (local.get $i)))",
                "(i64.xor (local.get $sum) (i64.shr_u (local.get $sum) (i64.const 32)))",
            ),
        };
        format!(
            r#"(module
  {fields}
  (func (export "run") (result i32)
    (local $i i64) (local $x i64) (local $sum i64) (local $a i32)
    (local.set $x (i64.const 88172645463325252))
    (loop $again
      {body}
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $again (i64.lt_u (local.get $i) (i64.const {iterations}))))
    (i32.wrap_i64 {result})))"#
        )
    }
}

/// One workload's figures: medians of the rounds' ratios.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// Kernel / unpreempted (same memory layout, no fuel).
    pub overhead: f64,
    /// Kernel / `Engine::default()`.
    pub against_default: f64,
}

/// Figures measured so far in this process, by workload and settings.
fn measured() -> &'static Mutex<HashMap<(Workload, Settings), Figures>> {
    static MEASURED: OnceLock<Mutex<HashMap<(Workload, Settings), Figures>>> = OnceLock::new();
    MEASURED.get_or_init(Default::default)
}

/// `workload`'s figures, measured once per process and settings.
pub fn figures(workload: Workload, settings: &Settings) -> Result<Figures> {
    let key = (workload, *settings);
    if let Some(figures) = measured()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(*figures);
    }
    let figures = measure_workload(workload, settings)?;
    measured()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, figures);
    Ok(figures)
}

/// `preemption_overhead_ratio`: the worst workload's kernel / unpreempted.
pub fn overhead_ratio(settings: &Settings) -> Result<f64> {
    worst(settings, |figures| figures.overhead)
}

/// `preemption_vs_plain_wasmtime_ratio`: the worst workload's kernel /
/// `Engine::default()`.
pub fn against_default_ratio(settings: &Settings) -> Result<f64> {
    worst(settings, |figures| figures.against_default)
}

fn worst(settings: &Settings, figure: impl Fn(&Figures) -> f64) -> Result<f64> {
    let mut worst = 0.0f64;
    for workload in Workload::ALL {
        let value = figure(&figures(workload, settings)?);
        // `max` would drop a NaN: a workload that measured nothing fails.
        ensure!(
            value.is_finite(),
            "the {} guest measured {value}, not a ratio",
            workload.name()
        );
        worst = worst.max(value);
    }
    Ok(worst)
}

/// `preemption_lcg_ratio`.
pub fn lcg(settings: &Settings) -> Result<f64> {
    Ok(figures(Workload::Lcg, settings)?.overhead)
}

/// `preemption_sum_ratio`.
pub fn sum(settings: &Settings) -> Result<f64> {
    Ok(figures(Workload::Sum, settings)?.overhead)
}

/// `preemption_memory_ratio`.
pub fn memory(settings: &Settings) -> Result<f64> {
    Ok(figures(Workload::Memory, settings)?.overhead)
}

/// `preemption_calls_ratio`.
pub fn calls(settings: &Settings) -> Result<f64> {
    Ok(figures(Workload::Calls, settings)?.overhead)
}

/// A side of a round: returns the time and the checksum.
type Side<'a> = Box<dyn FnMut() -> Result<(f64, i32)> + 'a>;

fn measure_workload(workload: Workload, settings: &Settings) -> Result<Figures> {
    let iterations = settings.count(workload.iterations(), workload.iterations() / 100);
    let text = workload.wat(iterations);
    let name = workload.name();

    let in_kernel: Side = Box::new(|| {
        let guests = [harness::Guest::wat("spinner", text.as_str(), "run", &[])];
        let mut kernel = harness::boot(Kernel::builder(), &guests)?;
        let (elapsed, report) = harness::run_timed(&mut kernel)?;
        match report.processes.first().map(|p| &p.status) {
            Some(ExitStatus::Exited(checksum)) => Ok((elapsed.as_secs_f64(), *checksum)),
            other => bail!("the {name} guest did not exit in the kernel: {other:?}"),
        }
    });
    let mut unpreempted_config = wasmtime::Config::new();
    unpreempted_config
        .memory_reservation(MEMORY_SLOT)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(0);
    let unpreempted = plain(&text, name, &unpreempted_config)?;
    let default = plain(&text, name, &wasmtime::Config::default())?;

    let mut sides = [in_kernel, unpreempted, default];
    let mut overheads = Vec::new();
    let mut against_default = Vec::new();
    for round in 0..settings.runs() {
        let mut times = [0.0; 3];
        let mut checksums = [0; 3];
        let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for side in order {
            (times[side], checksums[side]) = sides[side]()?;
        }
        ensure!(
            checksums[0] == checksums[1] && checksums[1] == checksums[2],
            "the {name} guest's checksums differ: {} in the kernel, {} unpreempted, {} plain",
            checksums[0],
            checksums[1],
            checksums[2]
        );
        overheads.push(times[0] / times[1]);
        against_default.push(times[0] / times[2]);
    }
    Ok(Figures {
        overhead: measure::median(overheads),
        against_default: measure::median(against_default),
    })
}

/// A side running `text` in plain Wasmtime configured by `config`: each
/// call times a fresh store's instantiation and the call.
fn plain<'a>(text: &'a str, name: &'a str, config: &wasmtime::Config) -> Result<Side<'a>> {
    let engine = wasmtime::Engine::new(config).map_err(|e| plain_error("configure", name, e))?;
    let module =
        wasmtime::Module::new(&engine, text).map_err(|e| plain_error("compile", name, e))?;
    Ok(Box::new(move || {
        let mut store = wasmtime::Store::new(&engine, ());
        let started = Instant::now();
        let instance = wasmtime::Instance::new(&mut store, &module, &[])
            .map_err(|e| plain_error("instantiate", name, e))?;
        let run = instance
            .get_typed_func::<(), i32>(&mut store, "run")
            .map_err(|e| plain_error("find run in", name, e))?;
        let checksum = run
            .call(&mut store, ())
            .map_err(|e| plain_error("run", name, e))?;
        Ok((started.elapsed().as_secs_f64(), checksum))
    }))
}

fn plain_error(what: &str, name: &str, error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {what} the {name} guest in plain Wasmtime: {error:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_agrees_with_itself_on_every_side() {
        let settings = Settings {
            repeat: 2,
            quick: true,
        };
        for workload in Workload::ALL {
            let figures = figures(workload, &settings).unwrap();
            assert!(figures.overhead > 0.0 && figures.against_default > 0.0);
            // Measured once: a second ask returns the same figures.
            assert_eq!(super::figures(workload, &settings).unwrap(), figures);
        }
    }
}
