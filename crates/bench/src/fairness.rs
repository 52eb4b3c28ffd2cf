//! Fairness under contention: four CPU-bound NORMAL processes share the
//! default workers for 10 s (quick mode: 1 s), then the kernel is stopped
//! and the figure is the scheduler's fairness metric,
//! `min(actual_cpu / expected_cpu)` over the processes (see
//! `estalogic_kernel::core::scheduler`). Brief §3.2: at least 0.8 over 10 s.

use crate::harness::{self, Guest};
use crate::{Settings, preemption};
use anyhow::{Context as _, Result, anyhow};
use estalogic_kernel::Kernel;
use std::time::Duration;

/// Processes competing for the CPU.
pub const SPINNERS: usize = 4;

/// `fairness_10s`: the fairness metric after 10 s of four spinners.
pub fn fairness(settings: &Settings) -> Result<f64> {
    let seconds = settings.count(10, 1);
    let mut kernel = Kernel::builder().build()?;
    // Far more iterations than 10 s allows: the spinners never finish.
    Guest::wat(
        "spinner",
        preemption::Workload::Lcg.wat(u64::MAX / 2),
        "run",
        &[],
    )
    .load(&mut kernel)?;
    for _ in 0..SPINNERS {
        harness::spawn(&mut kernel, "spinner")?;
    }
    let shutdown = kernel.shutdown_handle();
    let runner = std::thread::spawn(move || kernel.run());
    std::thread::sleep(Duration::from_secs(seconds));
    shutdown.request();
    let report = runner
        .join()
        .map_err(|_| anyhow!("the kernel thread panicked"))?;
    report
        .stats
        .fairness
        .context("the scheduler accounted no CPU time")
}
