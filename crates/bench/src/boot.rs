//! Boot time with the compiled-module cache, cold and warm.
//!
//! A boot is timed from `Kernel::builder()` to `spawn_all` returning:
//! build the kernel (engine, linker, capability key, cache directory),
//! load four bundled services — `noop`, `ping`, `pong` and `testkit` (the
//! largest) — with their manifests, check dependencies and spawn one
//! process each. The processes are never run.
//!
//! - **`boot_cold_ms`**: each run on a fresh, empty cache directory, so
//!   every module is compiled and its artifact written; the cache must
//!   report four misses.
//! - **`boot_warm_ms`**: one cold boot fills a directory (untimed), then
//!   each run boots again on it; every module must be a cache hit
//!   (deserialized, not compiled). Brief §5: at most 20 ms.

use crate::harness::{Guest, MESSAGING};
use crate::{Settings, measure};
use anyhow::{Context as _, Result, ensure};
use estalogic_kernel::{CacheStats, Kernel};
use std::path::Path;
use std::time::{Duration, Instant};

/// The services a boot loads.
pub fn services() -> [Guest; 4] {
    [
        Guest::bundled("noop", "run", &[]),
        Guest::bundled("ping", "run", MESSAGING),
        Guest::bundled("pong", "run", MESSAGING),
        Guest::bundled("testkit", "flood", MESSAGING),
    ]
}

/// One boot on `cache_dir`: its time and the cache's counters.
pub fn boot_once(cache_dir: &Path) -> Result<(Duration, CacheStats)> {
    let guests = services();
    let started = Instant::now();
    let mut kernel = Kernel::builder().module_cache(cache_dir).build()?;
    for guest in &guests {
        guest.load(&mut kernel)?;
    }
    let spawned = kernel.spawn_all().context("spawn_all failed")?;
    let elapsed = started.elapsed();
    ensure!(
        spawned.len() == guests.len(),
        "{} of {} processes spawned",
        spawned.len(),
        guests.len()
    );
    let stats = kernel
        .cache_stats()
        .context("the kernel reports no module cache")?;
    Ok((elapsed, stats))
}

/// `boot_cold_ms`: best boot on an empty cache.
pub fn cold(settings: &Settings) -> Result<f64> {
    measure::best_of(settings.runs(), || {
        let dir = tempfile::tempdir().context("creating a cache directory")?;
        let (elapsed, stats) = boot_once(dir.path())?;
        ensure!(
            stats.misses == 4 && stats.hits == 0,
            "expected 4 cache misses on an empty cache, got {stats:?}"
        );
        Ok(measure::millis(elapsed))
    })
}

/// `boot_warm_ms`: best boot on a filled cache.
pub fn warm(settings: &Settings) -> Result<f64> {
    let dir = tempfile::tempdir().context("creating a cache directory")?;
    boot_once(dir.path())?;
    measure::best_of(settings.runs(), || {
        let (elapsed, stats) = boot_once(dir.path())?;
        ensure!(
            stats.hits == 4 && stats.misses == 0,
            "expected 4 cache hits on a filled cache, got {stats:?}"
        );
        Ok(measure::millis(elapsed))
    })
}
