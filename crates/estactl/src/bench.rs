//! `estactl bench`: the kernel's basic costs, measured on the bundled
//! services in this process.
//!
//! - ping-pong: the `ping` service's `bench` entry makes 100,000 round trips
//!   with `pong`; the figure is wall time / round trips.
//! - spawn: 1,000 `noop` processes are spawned, run and reaped; the figure
//!   is wall time / processes (instantiation included).
//!
//! Each measurement is repeated and the best run is reported, which is the
//! least noisy figure on a shared machine.

use anyhow::{Context as _, Result, ensure};
use estalogic_kernel::{ExitStatus, Kernel, Manifest};
use std::path::Path;
use std::time::{Duration, Instant};

const PING_PONG_ROUNDS: u64 = 100_000;
const SPAWN_COUNT: usize = 1_000;

fn manifest(name: &str, entry: &str) -> Result<Manifest> {
    Ok(Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "module":"bundled:{name}",
            "capabilities_required":["messaging:send","messaging:receive","process:lookup"]}}"#
    ))?)
}

fn bundled(name: &str) -> Result<&'static [u8]> {
    estalogic_services::get(name).with_context(|| format!("service {name} is not bundled"))
}

fn ping_pong_once() -> Result<Duration> {
    let mut kernel = Kernel::builder().build()?;
    kernel.load_module(
        manifest("pong", "run")?,
        bundled("pong")?,
        Path::new("bundled:pong"),
    )?;
    kernel.load_module(
        manifest("ping", "bench")?,
        bundled("ping")?,
        Path::new("bundled:ping"),
    )?;
    kernel.spawn("pong");
    kernel.spawn("ping");
    let started = Instant::now();
    let report = kernel.run();
    let elapsed = started.elapsed();
    for process in &report.processes {
        ensure!(
            process.status == ExitStatus::Exited(0),
            "{} ended badly: {}",
            process.module,
            process.status
        );
    }
    Ok(elapsed / PING_PONG_ROUNDS as u32)
}

fn spawn_once() -> Result<Duration> {
    let mut kernel = Kernel::builder().build()?;
    kernel.load_module(
        manifest("noop", "run")?,
        bundled("noop")?,
        Path::new("bundled:noop"),
    )?;
    let started = Instant::now();
    for _ in 0..SPAWN_COUNT {
        kernel.spawn("noop");
    }
    let report = kernel.run();
    let elapsed = started.elapsed();
    ensure!(
        report.processes.len() == SPAWN_COUNT,
        "not every process ran"
    );
    ensure!(
        report
            .processes
            .iter()
            .all(|p| p.status == ExitStatus::Exited(0)),
        "a noop process failed"
    );
    Ok(elapsed / SPAWN_COUNT as u32)
}

fn best(repeat: u32, mut measure: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..repeat {
        best = best.min(measure()?);
    }
    Ok(best)
}

/// Runs every measurement and prints the figures.
pub fn run(repeat: u32, json: bool) -> Result<()> {
    let round_trip = best(repeat, ping_pong_once)?;
    let spawn = best(repeat, spawn_once)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ping_pong_round_trip_ns": round_trip.as_nanos() as u64,
                "spawn_run_exit_ns": spawn.as_nanos() as u64,
                "repeat": repeat,
            })
        );
    } else {
        println!(
            "ping-pong round trip   {:>10.3} µs  (best of {repeat}, {PING_PONG_ROUNDS} round trips each)",
            round_trip.as_secs_f64() * 1e6
        );
        println!(
            "spawn + run + exit     {:>10.3} µs  (best of {repeat}, {SPAWN_COUNT} processes each)",
            spawn.as_secs_f64() * 1e6
        );
    }
    Ok(())
}
