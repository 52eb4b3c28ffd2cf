//! The harness: guests (bundled services or WAT text) with their
//! manifests, kernels booted with them, and timed runs that fail loudly when
//! a guest did not do its job.
//!
//! A benchmark of a service's operation is usually one call:
//! [`time_per_operation`] boots a fresh kernel with the guests (one process
//! each, spawned in order), times `Kernel::run` until every process ended,
//! checks that each exited with code 0, and divides by the operations.

use crate::Settings;
use crate::measure;
use anyhow::{Context as _, Result, bail};
use estalogic_kernel::{ExitStatus, Kernel, KernelBuilder, Manifest, RunReport};
use std::path::Path;
use std::time::{Duration, Instant};

/// The capabilities of a process that sends, receives and looks up peers.
pub const MESSAGING: &[&str] = &["messaging:send", "messaging:receive", "process:lookup"];

/// Where a guest's module comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A service bundled in `estalogic-services`, by name.
    Bundled(&'static str),
    /// WebAssembly text.
    Wat(String),
}

/// A module to load: its manifest's name, entry point and capabilities,
/// and where its code comes from.
#[derive(Clone, Debug)]
pub struct Guest {
    /// The module name in its manifest (what `lookup` finds).
    pub name: &'static str,
    /// The exported entry point.
    pub entry: &'static str,
    /// Manifest capability names, e.g. `"messaging:send"`.
    pub capabilities: &'static [&'static str],
    /// The code.
    pub source: Source,
}

impl Guest {
    /// The bundled service `service`, under its own name.
    pub fn bundled(
        service: &'static str,
        entry: &'static str,
        capabilities: &'static [&'static str],
    ) -> Guest {
        Guest {
            name: service,
            entry,
            capabilities,
            source: Source::Bundled(service),
        }
    }

    /// A module from WebAssembly text.
    pub fn wat(
        name: &'static str,
        text: impl Into<String>,
        entry: &'static str,
        capabilities: &'static [&'static str],
    ) -> Guest {
        Guest {
            name,
            entry,
            capabilities,
            source: Source::Wat(text.into()),
        }
    }

    /// The same guest under another module name.
    pub fn named(self, name: &'static str) -> Guest {
        Guest { name, ..self }
    }

    /// Its manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        let json = serde_json::json!({
            "name": self.name,
            "version": "0.1.0",
            "entry_point": self.entry,
            "runtime": "wasm32",
            "capabilities_required": self.capabilities,
        });
        Manifest::parse(&json.to_string())
            .with_context(|| format!("the manifest of {} is invalid", self.name))
    }

    /// Its module bytes (WAT text is compiled by the kernel as is).
    pub fn bytes(&self) -> Result<&[u8]> {
        match &self.source {
            Source::Bundled(service) => estalogic_services::get(service)
                .with_context(|| format!("no bundled service named {service:?}")),
            Source::Wat(text) => Ok(text.as_bytes()),
        }
    }

    /// Validates, compiles and registers it in `kernel`.
    pub fn load(&self, kernel: &mut Kernel) -> Result<()> {
        let origin = match &self.source {
            Source::Bundled(service) => format!("bundled:{service}"),
            Source::Wat(_) => format!("wat:{}", self.name),
        };
        kernel
            .load_module(self.manifest()?, self.bytes()?, Path::new(&origin))
            .with_context(|| format!("cannot load {}", self.name))?;
        Ok(())
    }
}

/// Builds a kernel, loads `guests` and spawns one process of each, in
/// order.
pub fn boot(builder: KernelBuilder, guests: &[Guest]) -> Result<Kernel> {
    let mut kernel = builder.build().context("cannot build the kernel")?;
    for guest in guests {
        guest.load(&mut kernel)?;
    }
    for guest in guests {
        spawn(&mut kernel, guest.name)?;
    }
    Ok(kernel)
}

/// Spawns one process of the loaded module `name`.
pub fn spawn(kernel: &mut Kernel, name: &str) -> Result<()> {
    kernel.spawn(name)?;
    Ok(())
}

/// Runs `kernel` until every process ended and returns the wall time of
/// `Kernel::run`. Fails if a process did not end by itself (trap, stop).
pub fn run_timed(kernel: &mut Kernel) -> Result<(Duration, RunReport)> {
    let started = Instant::now();
    let report = kernel.run();
    let elapsed = started.elapsed();
    for process in &report.processes {
        if !matches!(process.status, ExitStatus::Exited(_)) {
            bail!("{} ({}) {}", process.module, process.pid, process.status);
        }
    }
    Ok((elapsed, report))
}

/// Fails unless every process of `report` exited with code 0.
pub fn expect_success(report: &RunReport) -> Result<()> {
    for process in &report.processes {
        if process.status != ExitStatus::Exited(0) {
            bail!("{} ({}) {}", process.module, process.pid, process.status);
        }
    }
    Ok(())
}

/// Boots a fresh default kernel with `guests` (one process each), runs it
/// to the end `settings.runs()` times and returns the best run's wall time
/// per operation, in nanoseconds. Every process must exit with code 0.
pub fn time_per_operation(settings: &Settings, guests: &[Guest], operations: u64) -> Result<f64> {
    time_per_operation_with(settings, Kernel::builder, guests, operations)
}

/// [`time_per_operation`] with kernels from `builder`.
pub fn time_per_operation_with(
    settings: &Settings,
    builder: impl Fn() -> KernelBuilder,
    guests: &[Guest],
    operations: u64,
) -> Result<f64> {
    measure::best_of(settings.runs(), || {
        let mut kernel = boot(builder(), guests)?;
        let (elapsed, report) = run_timed(&mut kernel)?;
        expect_success(&report)?;
        Ok(measure::nanos_per(elapsed, operations))
    })
}
