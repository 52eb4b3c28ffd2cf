//! `estactl`: the ESTA Logic command-line tool.
//!
//! - `estactl run <app-dir>` boots the kernel with every module of an app
//!   directory, runs until all processes end (Ctrl-C stops cleanly) and
//!   prints a summary per process.
//! - `estactl bench` measures the kernel's basic costs (ping-pong round
//!   trip, spawn + run + exit) on the bundled services.

mod bench;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use estalogic_kernel::{Kernel, ModuleCache, RunReport};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "estactl",
    version,
    about = "Run and inspect ESTA Logic kernel apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot an app directory (manifests + modules) and run it to completion.
    Run {
        /// Directory holding `manifest.json` files (itself or one per subdirectory).
        app_dir: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Print every message send (an IPC trace) on stderr.
        #[arg(long)]
        trace: bool,
        /// Deterministic mode: virtual clock, fuel-only preemption.
        #[arg(long)]
        deterministic: bool,
        /// Compile every module afresh instead of using the compiled-module
        /// cache ($ESTALOGIC_CACHE_DIR or ~/.cache/estalogic/modules).
        #[arg(long)]
        no_cache: bool,
    },
    /// Measure ping-pong round trip and spawn + run + exit.
    Bench {
        /// Repetitions of each measurement (the best is reported).
        #[arg(long, default_value_t = 5)]
        repeat: u32,
        /// Print results as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let trace = matches!(cli.command, Command::Run { trace: true, .. });
    init_logging(trace);
    match execute(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(trace: bool) {
    let default = if trace {
        "info,estalogic::ipc=trace"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ESTALOGIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            app_dir,
            json,
            trace: _,
            deterministic,
            no_cache,
        } => run(app_dir, json, deterministic, !no_cache),
        Command::Bench { repeat, json } => {
            bench::run(repeat.max(1), json).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn run(app_dir: PathBuf, json: bool, deterministic: bool, cache: bool) -> Result<ExitCode> {
    let mut builder = Kernel::builder()
        .deterministic(deterministic)
        .bundled_modules(estalogic_services::SERVICES);
    if cache {
        builder = builder.module_cache(ModuleCache::default_dir());
    }
    let mut kernel = builder.build()?;
    kernel
        .load_app_dir(&app_dir)
        .with_context(|| format!("cannot boot {}", app_dir.display()))?;
    let shutdown = kernel.shutdown_handle();
    ctrlc::set_handler(move || {
        eprintln!("stopping: Ctrl-C");
        shutdown.request();
    })
    .context("cannot install the Ctrl-C handler")?;
    kernel
        .spawn_all()
        .with_context(|| format!("cannot boot {}", app_dir.display()))?;
    let report = kernel.run();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&report))?);
    } else {
        print_summary(&report);
    }
    Ok(if report.any_trapped() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(report: &RunReport) {
    println!(
        "{:<6} {:<16} {:<8} {:>9} {:>9} {:>14}  status",
        "pid", "module", "priority", "sent", "received", "fuel"
    );
    let mut processes: Vec<_> = report.processes.iter().collect();
    processes.sort_by_key(|p| p.pid.index());
    for p in processes {
        let mut notes = String::new();
        if p.send_failures > 0 {
            notes.push_str(&format!(" ({} failed sends)", p.send_failures));
        }
        if p.undelivered > 0 {
            notes.push_str(&format!(" ({} messages undelivered)", p.undelivered));
        }
        println!(
            "{:<6} {:<16} {:<8} {:>9} {:>9} {:>14}  {}{}",
            p.pid.to_string(),
            p.module,
            p.priority.name(),
            p.sent,
            p.received,
            p.fuel_used,
            p.status,
            notes
        );
    }
    println!(
        "{} processes in {:.1} ms",
        report.processes.len(),
        report.elapsed.as_secs_f64() * 1e3
    );
}

fn summary_json(report: &RunReport) -> serde_json::Value {
    use estalogic_kernel::ExitStatus;
    let processes: Vec<serde_json::Value> = report
        .processes
        .iter()
        .map(|p| {
            let status = match &p.status {
                ExitStatus::Exited(code) => serde_json::json!({"kind": "exited", "code": code}),
                ExitStatus::Trapped { code, detail } => serde_json::json!({
                    "kind": "trapped", "code": code.0, "name": code.name(), "detail": detail
                }),
                ExitStatus::Stopped(code) => {
                    serde_json::json!({"kind": "stopped", "code": code.0, "name": code.name()})
                }
            };
            serde_json::json!({
                "pid": p.pid.to_u64(),
                "module": p.module,
                "priority": p.priority.name(),
                "status": status,
                "sent": p.sent,
                "received": p.received,
                "send_failures": p.send_failures,
                "undelivered": p.undelivered,
                "fuel_used": p.fuel_used,
                "preemptions": p.preemptions,
                "requeues": p.requeues,
            })
        })
        .collect();
    serde_json::json!({
        "elapsed_ms": report.elapsed.as_secs_f64() * 1e3,
        "processes": processes,
    })
}
