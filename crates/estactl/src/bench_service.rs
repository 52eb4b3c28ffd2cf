//! `estactl bench-service APP MODULE`: puts a load on one service of an app
//! and prints what its clients saw — round-trip percentiles, throughput,
//! and where and why a client stopped (see `estalogic_bench::service`).
//!
//! Only the service and what it needs are spawned: the modules it depends
//! on, transitively, and its supervisor, in the app's load order. The app's
//! other modules are loaded and checked as `run` does, not started: they
//! could talk to the service while it is measured, or stop it. Exit status
//! 0 if every call was answered and no process of the service trapped, 1
//! otherwise, 2 for an app that does not load or a bad option, 130 if a
//! signal (Ctrl-C) stopped the load, after printing the figures measured
//! until then.

use crate::{BootOptions, cannot_boot, load_app, output};
use anyhow::{Context as _, Result, bail};
use estalogic_bench::measure::readable;
use estalogic_bench::service::{CLIENT, ServiceFigures, ServiceLoad};
use estalogic_kernel::Kernel;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Loads the app, spawns `load.module` with what it needs, puts the load
/// on it and prints the figures.
pub fn run(app_dir: &Path, load: &ServiceLoad, json: bool, boot: BootOptions) -> Result<ExitCode> {
    load.check()?;
    if boot.deterministic {
        bail!(
            "bench-service measures real time, and --deterministic runs on a virtual clock \
             (every round trip would read as the clock's fixed steps): leave it out"
        );
    }
    let mut kernel = load_app(app_dir, boot, false)?;
    if kernel.registry().latest(CLIENT).is_some() {
        bail!(
            "the app has a module named {CLIENT:?}, the benchmark client's own name: \
             rename it to benchmark this app"
        );
    }
    let needed = needed_modules(&kernel, &load.module)
        .with_context(|| format!("cannot benchmark {}", output::printable(&load.module)))?;
    if let Err(error) = kernel.check_boot() {
        return Err(cannot_boot(app_dir, error));
    }
    let order = kernel
        .registry()
        .load_order()
        .map_err(|error| anyhow::anyhow!("cannot boot {}: {error}", app_dir.display()))?;
    for key in order.iter().filter(|key| needed.contains(&key.name)) {
        kernel
            .spawn(&key.name)
            .map_err(|error| cannot_boot(app_dir, error))?;
    }
    let shutdown = kernel.shutdown_handle();
    let interrupted = Arc::new(AtomicBool::new(false));
    let signalled = interrupted.clone();
    ctrlc::set_handler(move || {
        errln!("stopping: interrupted (Ctrl-C, SIGTERM or SIGHUP); the figures so far follow");
        signalled.store(true, Ordering::SeqCst);
        shutdown.request();
    })
    .context("cannot install the Ctrl-C (SIGINT, SIGTERM, SIGHUP) handler")?;
    errln!(
        "bench-service: {} client(s) × {} calls ({} warm-up) of type 0x{:04x} to {}...",
        load.clients,
        load.requests,
        load.warmup,
        load.message_type.0,
        output::printable(&load.module)
    );
    let asked = u64::from(load.requests) * u64::from(load.clients);
    let figures = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // A line that counts, on a terminal only (a log keeps its lines).
        let mut shown = std::time::Instant::now();
        let figures = load.run_with_progress(&mut kernel, move |calls| {
            if shown.elapsed() >= std::time::Duration::from_millis(250) {
                shown = std::time::Instant::now();
                let _ = write!(
                    std::io::stderr(),
                    "\rbench-service: {calls} of {asked} calls"
                );
            }
        })?;
        errln!();
        figures
    } else {
        load.run(&mut kernel)?
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(load, &figures))?
        )?;
    } else {
        print(load, &figures)?;
    }
    let failed = !figures.service_faults().is_empty()
        || (!figures.failures.is_empty() && !interrupted.load(Ordering::SeqCst));
    Ok(if failed {
        ExitCode::from(1)
    } else if interrupted.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// `module`, the modules it depends on (transitively) and the supervisors
/// of all of them: what must run for it to work. Fails if `module` is not
/// loaded, naming the app's modules.
fn needed_modules(kernel: &Kernel, module: &str) -> Result<BTreeSet<String>> {
    if kernel.registry().latest(module).is_none() {
        let names: BTreeSet<&str> = kernel
            .registry()
            .iter()
            .map(|entry| entry.manifest().name.as_str())
            .collect();
        bail!(
            "the app has no module named {:?} (its modules: {})",
            module,
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let mut needed = BTreeSet::new();
    let mut to_visit = vec![module.to_string()];
    while let Some(name) = to_visit.pop() {
        if !needed.insert(name.clone()) {
            continue;
        }
        // A missing dependency is `check_boot`'s to report.
        if let Some(entry) = kernel.registry().latest(&name) {
            let manifest = entry.manifest();
            to_visit.extend(manifest.dependencies.keys().cloned());
            to_visit.extend(manifest.supervisor.iter().cloned());
        }
    }
    Ok(needed)
}

/// Nanoseconds, readably: `812 ns`, `3.4 µs`, `12.5 ms`.
fn duration(ns: f64) -> String {
    if ns < 1e3 {
        format!("{} ns", readable(ns))
    } else if ns < 1e6 {
        format!("{} µs", readable(ns / 1e3))
    } else {
        format!("{} ms", readable(ns / 1e6))
    }
}

fn print(load: &ServiceLoad, figures: &ServiceFigures) -> Result<()> {
    let module = output::printable(&load.module);
    outln!(
        "{module}: {} call(s) answered of {} asked ({} client(s), {}-byte payload)",
        figures.calls,
        u64::from(load.requests) * u64::from(load.clients),
        load.clients,
        load.payload.len()
    )?;
    if figures.calls > 0 {
        outln!(
            "  round trip   mean {}   p50 {}   p90 {}   p99 {}   max {}",
            duration(figures.mean_ns()),
            duration(figures.percentile_ns(0.5) as f64),
            duration(figures.percentile_ns(0.9) as f64),
            duration(figures.percentile_ns(0.99) as f64),
            duration(figures.percentile_ns(1.0) as f64)
        )?;
        outln!(
            "  throughput   {} calls/s",
            readable(figures.throughput_per_s())
        )?;
    }
    for failure in &figures.failures {
        outln!(
            "  a client stopped after {} call(s): {}",
            failure.after_calls,
            failure.failure
        )?;
    }
    for (name, status) in figures.service_faults() {
        outln!("  {} {status}", output::printable(&name))?;
    }
    Ok(())
}

fn to_json(load: &ServiceLoad, figures: &ServiceFigures) -> serde_json::Value {
    let round_trip = if figures.calls > 0 {
        serde_json::json!({
            "mean": figures.mean_ns(),
            "min": figures.percentile_ns(0.0),
            "p50": figures.percentile_ns(0.5),
            "p90": figures.percentile_ns(0.9),
            "p99": figures.percentile_ns(0.99),
            "max": figures.percentile_ns(1.0),
        })
    } else {
        serde_json::Value::Null
    };
    serde_json::json!({
        "module": load.module,
        "message_type": load.message_type.0,
        "payload_bytes": load.payload.len(),
        "clients": load.clients,
        "requests_per_client": load.requests,
        "warmup_per_client": load.warmup,
        "calls": figures.calls,
        "round_trip_ns": round_trip,
        "throughput_per_s": figures.throughput_per_s(),
        "span_ns": figures.span_ns,
        "failures": figures.failures.iter().map(|f| serde_json::json!({
            "after_calls": f.after_calls,
            "reason": f.failure.to_string(),
        })).collect::<Vec<_>>(),
        "service_faults": figures.service_faults().into_iter().map(|(module, status)| {
            serde_json::json!({"module": module, "status": status.to_string()})
        }).collect::<Vec<_>>(),
    })
}
