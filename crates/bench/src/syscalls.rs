//! The syscall path: a capability check on the host alone, and a guest's
//! round trip into the kernel with and without the capability choke point.
//!
//! - **`capability_check_ns`** (host only, no WASM): a
//!   `CapabilityEngine` holds the four root capabilities a ping-like
//!   manifest grants (`messaging:receive`, `process:lookup`, `time:read`,
//!   then `messaging:send` scoped to `pong`, in that handle order), and
//!   `find(pid, Channel, WRITE, Some("pong"), now)` runs 1,000,000 times:
//!   it skips the other resources, validates and rejects the channel READ,
//!   matches the last handle and counts a use. What `admit` adds around it
//!   (a clock read, the engine mutex) is in `checked_syscall_ns`.
//! - **`noop_syscall_ns`**: a guest loop calls `self_pid` (no capability
//!   needed) 10,000,000 times and sums the results; the same loop summing
//!   its counter instead is the baseline. Both run as kernel processes
//!   (fuel and epoch checks included, equal on both sides); the figure is
//!   the median over paired rounds of the difference of their
//!   `Kernel::run` times / 10,000,000: entering the host function from WASM
//!   and coming back. `self_pid` is the cheapest syscall there is (a read
//!   of the caller's pid: no capability, no count, no charge), so this is
//!   the engine's floor for any syscall, not the choke point's cost.
//! - **`checked_syscall_ns`**: the same with `clock_now`, which passes the
//!   capability choke point (`ProcessContext::admit`: a syscall counter, a
//!   clock read, the engine mutex and a `find` of `time:read`, the
//!   process's only capability) before reading the clock. The guest traps
//!   if a call is refused.
//!
//! Quick mode uses 10,000 checks and 1,000,000 calls.

use crate::harness::{self, Guest};
use crate::{Settings, measure};
use anyhow::{Result, ensure};
use estalogic_kernel::Kernel;
use estalogic_kernel::abi::{Pid, Rights};
use estalogic_kernel::core::capabilities_engine::{CapabilityEngine, Resource};
use estalogic_kernel::loader::manifest::CapabilityRequest;
use estalogic_kernel::syscalls::capabilities::capability_for;
use std::hint::black_box;
use std::time::Instant;

/// Checks per run of `capability_check_ns`.
pub const CHECKS: u64 = 1_000_000;
/// Calls per run of the syscall benchmarks.
pub const CALLS: u64 = 10_000_000;

/// `capability_check_ns`: one `CapabilityEngine::find`.
pub fn capability_check(settings: &Settings) -> Result<f64> {
    let checks = settings.count(CHECKS, 10_000);
    let pid = Pid::new(1, 1);
    let mut engine = CapabilityEngine::new([7; 32]);
    let requests = [
        ("messaging:receive", None),
        ("process:lookup", None),
        ("time:read", None),
        ("messaging:send", Some("pong")),
    ];
    for (name, scope) in requests {
        let request = CapabilityRequest {
            name: name.into(),
            scope: scope.map(Into::into),
        };
        let capability = capability_for(&request).map_err(anyhow::Error::msg)?;
        engine.grant(pid, capability, 0)?;
    }
    ensure!(
        engine
            .find(pid, &Resource::Channel, Rights::WRITE, Some("pong"), 1)
            .is_ok(),
        "the send capability does not allow writing to pong"
    );
    let _ = engine.drain_audit();
    measure::best_of(settings.runs(), || {
        let started = Instant::now();
        for now in 0..checks {
            let found = engine.find(
                black_box(pid),
                black_box(&Resource::Channel),
                black_box(Rights::WRITE),
                black_box(Some("pong")),
                now,
            );
            black_box(found).ok();
        }
        Ok(measure::nanos_per(started.elapsed(), checks))
    })
}

/// A guest whose `run` loops `calls` times, adding the result of the
/// imported syscall `import` (`() -> i64`) to a sum — or, for the
/// baseline, its loop counter — and returns the sum's low bits. A negative
/// syscall result (an error code) traps.
pub fn syscall_loop(import: &str, calls: u64, baseline: bool) -> String {
    let body = if baseline {
        "(local.set $sum (i64.add (local.get $sum) (local.get $i)))".to_string()
    } else {
        "(local.set $result (call $syscall))
      (if (i64.lt_s (local.get $result) (i64.const 0)) (then unreachable))
      (local.set $sum (i64.add (local.get $sum) (local.get $result)))"
            .to_string()
    };
    format!(
        r#"(module
  (import "estalogic" "{import}" (func $syscall (result i64)))
  (func (export "run") (result i32)
    (local $i i64) (local $sum i64) (local $result i64)
    (loop $again
      {body}
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $again (i64.lt_u (local.get $i) (i64.const {calls}))))
    (i32.wrap_i64 (local.get $sum))))"#
    )
}

/// Wall time of one `Kernel::run` of one process of `text`, in ns.
fn run_ns(text: &str, capabilities: &'static [&'static str]) -> Result<f64> {
    let guests = [Guest::wat("syscaller", text, "run", capabilities)];
    let mut kernel = harness::boot(Kernel::builder(), &guests)?;
    let (elapsed, _) = harness::run_timed(&mut kernel)?;
    Ok(elapsed.as_secs_f64() * 1e9)
}

/// The median over paired rounds (the loop with the call and the loop
/// without, back to back, which goes first alternating) of (time with −
/// time without) / calls, in ns: a median of pairs is not biased the way
/// a difference of two best times, or a retry until it comes out
/// positive, is.
fn per_call(
    settings: &Settings,
    import: &str,
    capabilities: &'static [&'static str],
) -> Result<f64> {
    let calls = settings.count(CALLS, 1_000_000);
    let with_call = syscall_loop(import, calls, false);
    let without = syscall_loop(import, calls, true);
    let mut differences = Vec::new();
    // At least five pairs: a call costs a nanosecond or two.
    for round in 0..settings.runs().max(5) {
        let (with_ns, without_ns) = if round % 2 == 0 {
            let with_ns = run_ns(&with_call, capabilities)?;
            (with_ns, run_ns(&without, capabilities)?)
        } else {
            let without_ns = run_ns(&without, capabilities)?;
            (run_ns(&with_call, capabilities)?, without_ns)
        };
        differences.push((with_ns - without_ns) / calls as f64);
    }
    let per_call = measure::median(differences.iter().copied());
    ensure!(
        per_call > 0.0,
        "{import}: the loop with the call was not slower than without in the median of \
         {} pairs ({differences:?} ns a call); too much noise to measure",
        differences.len()
    );
    Ok(per_call)
}

/// `noop_syscall_ns`: one `self_pid` round trip.
pub fn noop_syscall(settings: &Settings) -> Result<f64> {
    per_call(settings, "self_pid", &[])
}

/// `checked_syscall_ns`: one `clock_now` round trip, capability check
/// included.
pub fn checked_syscall(settings: &Settings) -> Result<f64> {
    per_call(settings, "clock_now", &["time:read"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_compile() {
        let engine = wasmtime::Engine::default();
        for import in ["self_pid", "clock_now"] {
            for baseline in [false, true] {
                let text = syscall_loop(import, 10, baseline);
                wasmtime::Module::new(&engine, &text).unwrap();
            }
        }
        wasmtime::Module::new(&engine, crate::preemption::Workload::Lcg.wat(10)).unwrap();
    }
}
