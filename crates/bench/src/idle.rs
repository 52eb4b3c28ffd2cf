//! Idle processes: the memory one costs and the time to create it, with
//! 100,000 of them alive at once (brief §5: 100,000 in 24 GiB; goal
//! 1,000,000).
//!
//! # Method (one run)
//!
//! 1. Build a default kernel with room for all the processes
//!    (`max_processes`) and load three modules: the bundled `idle`
//!    service (its `run` waits in `receive` forever), a `keeper` (WAT that
//!    waits in `receive` with a one-hour timeout) and a `sentinel` (the
//!    bundled `noop`, which returns at once). Spawn the keeper. Its armed
//!    timer is what keeps the kernel from stopping the idle processes as
//!    deadlocked once all of them wait; it never wakes during a run.
//! 2. Read the memory footprint (`VmRSS` + `VmPTE`: resident memory and
//!    the page tables mapping it), start the clock, spawn the
//!    100,000 idle processes, then the sentinel, and run the kernel (on
//!    this thread; a watcher thread follows the exits).
//! 3. The scheduler runs a level first come, first served, and every idle
//!    process parks in `receive` within its first turn, so when the
//!    sentinel's exit report arrives every idle process has been
//!    instantiated and is parked (give or take the one another worker may
//!    be finishing). The clock stops there: **`idle_spawn_ns`** is that
//!    time / 100,000 — host-side spawn (pid, mailbox, capability grant)
//!    plus the first turn (`Store`, instantiation, running to `receive`,
//!    parking). Erlang's figure is the same: spawn K, wait until all K said
//!    they are ready.
//! 4. The watcher waits until the footprint stops moving (two readings 50
//!    ms apart within 1 % of the growth), then **`idle_process_bytes`** is
//!    (footprint − footprint before spawning) / 100,000: everything a
//!    parked process holds on the host — the kernel's records, its `Store`
//!    and instance, the touched pages of its linear memory and of its fiber
//!    stack, and the page tables mapping them (about 5 KB of a task's
//!    16 KB + 5 KB; before 2026-11-30 the figure was RSS alone). If it
//!    kept growing for more than 10 % after the sentinel, the run fails:
//!    the sentinel did not run last, so the time would be wrong.
//! 5. Request shutdown; every idle process must end `SHUTDOWN`.
//!
//! **`idle_handler_process_bytes`** repeats the memory measurement with
//! idle *handler* processes instead (entry point `(i32) -> i32`, called
//! for the kernel's `STARTED` and then parked between messages): no fiber,
//! so no stack pages, while parked.
//!
//! Both figures come from the same runs: bytes are the median, times the
//! best. Memory freed by one run's processes may be reused by the next
//! run's without showing in the footprint, which is why bytes keep the median.
//!
//! A process that ends before the sentinel (say, an instantiation that
//! cannot map its memory) fails the run, with how many could be alive and
//! the first failure's text.

use crate::harness::{self, Guest};
use crate::{Settings, measure};
use anyhow::{Context as _, Result, anyhow, bail, ensure};
use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, ProcessReport};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Growth after the sentinel that never fails a run (see [`watch`]).
const LATE_SLACK: u64 = 1 << 20;

/// Idle processes alive at once.
pub const PROCESSES: u64 = 100_000;
/// Idle processes in quick mode (well inside what a default Linux
/// `vm.max_map_count` allows).
pub const QUICK_PROCESSES: u64 = 3_000;
/// The brief's memory budget per process: 100,000 processes in 24 GiB.
pub const BYTES_PER_PROCESS_BUDGET: f64 = (24u64 << 30) as f64 / PROCESSES as f64;

/// Waits in `receive` with a one-hour timeout, forever: an armed timer, so
/// the kernel never declares the idle processes deadlocked.
const KEEPER: &str = r#"(module
  (import "estalogic" "receive"
    (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (loop $again
      (drop (call $receive (i32.const 0) (i64.const 3600000)
                           (i32.const 0) (i32.const 64) (i32.const 0)))
      (br $again))))"#;

/// The idle *handler* process (`idle_handler_process_bytes`): its entry
/// point is called for the kernel's `STARTED` and returns 0, after which it
/// waits for messages that never come — parked with no fiber stack.
const IDLE_HANDLER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
  (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;

/// How long to wait for all idle processes to park before giving up.
const PATIENCE: Duration = Duration::from_secs(600);
/// Interval between two footprint readings while waiting for it to settle.
const SETTLE_STEP: Duration = Duration::from_millis(50);
/// Give up waiting for the footprint to settle after this long.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The figures of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// Resident bytes per idle process.
    pub bytes_per_process: f64,
    /// Nanoseconds from the first spawn until all were parked, per process.
    pub spawn_ns: f64,
}

/// Runs kept for reuse: the settings they used and their figures (or
/// their error's text).
type KeptRuns = (Settings, Result<Vec<Figures>, String>);

/// The last measurement, so that `idle_spawn_ns` reuses the runs
/// `idle_process_bytes` just made.
static LAST: Mutex<Option<KeptRuns>> = Mutex::new(None);

/// `idle_process_bytes`: median over the runs. Always measures afresh and
/// leaves its runs for [`spawn_ns`].
pub fn bytes_per_process(settings: &Settings) -> Result<f64> {
    let runs = measure_runs(settings);
    let kept = match &runs {
        Ok(runs) => Ok(runs.clone()),
        Err(error) => Err(format!("{error:#}")),
    };
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some((*settings, kept));
    Ok(measure::median(
        runs?.iter().map(|figures| figures.bytes_per_process),
    ))
}

/// `idle_spawn_ns`: best over the runs. Reuses the runs that
/// [`bytes_per_process`] made with the same settings, if it ran just
/// before; measures otherwise.
pub fn spawn_ns(settings: &Settings) -> Result<f64> {
    let last = LAST.lock().unwrap_or_else(|p| p.into_inner()).take();
    let runs = match last {
        Some((used, runs)) if used == *settings => runs.map_err(|error| anyhow!(error))?,
        _ => measure_runs(settings)?,
    };
    Ok(measure::minimum(
        runs.iter().map(|figures| figures.spawn_ns),
    ))
}

/// `idle_handler_process_bytes`: the same measurement with idle handler
/// processes (`IDLE_HANDLER`); median over the runs.
pub fn handler_bytes_per_process(settings: &Settings) -> Result<f64> {
    let runs = (0..settings.runs())
        .map(|_| one_run_of(idle_count(settings)?, idle_handler()))
        .collect::<Result<Vec<_>>>()?;
    Ok(measure::median(
        runs.iter().map(|figures| figures.bytes_per_process),
    ))
}

/// The bundled `idle` service: a task process parked in `receive`.
fn idle_task() -> Guest {
    Guest::bundled("idle", "run", &["messaging:receive"])
}

/// An idle handler process, under the name `idle`.
fn idle_handler() -> Guest {
    Guest::wat("idle", IDLE_HANDLER, "handle", &["messaging:receive"])
}

/// How many idle processes a run has: [`PROCESSES`] ([`QUICK_PROCESSES`]
/// in quick mode) unless `ESTALOGIC_IDLE_PROCESSES` says otherwise; an
/// error naming the variable if it is not a count in range (`estactl
/// bench` checks it before any benchmark runs).
pub fn idle_count(settings: &Settings) -> Result<u64> {
    match std::env::var("ESTALOGIC_IDLE_PROCESSES") {
        // For the brief's 1,000,000 goal: `ESTALOGIC_IDLE_PROCESSES=1000000`.
        Ok(text) => {
            let count: u64 = text
                .parse()
                .with_context(|| format!("ESTALOGIC_IDLE_PROCESSES={text:?} is not a count"))?;
            ensure!(
                (1..=MAX_PROCESSES).contains(&count),
                "ESTALOGIC_IDLE_PROCESSES={count} is out of range: 1 to {MAX_PROCESSES} idle \
                 processes (their memory mappings must fit Linux's vm.max_map_count)"
            );
            Ok(count)
        }
        Err(_) => Ok(settings.count(PROCESSES, QUICK_PROCESSES)),
    }
}

/// The most idle processes a run may ask for: 100,000,000, so that the
/// memory mappings they need (about twelve each) stay under the largest
/// `vm.max_map_count` Linux takes (2^31 - 1).
pub const MAX_PROCESSES: u64 = 100_000_000;

/// Makes `settings.runs()` runs of [`PROCESSES`] idle processes
/// ([`QUICK_PROCESSES`] in quick mode).
pub fn measure_runs(settings: &Settings) -> Result<Vec<Figures>> {
    let count = idle_count(settings)?;
    (0..settings.runs()).map(|_| one_run(count)).collect()
}

/// One run with `count` idle task processes (see the module docs).
pub fn one_run(count: u64) -> Result<Figures> {
    one_run_of(count, idle_task())
}

/// One run with `count` processes of `idle` (a guest named `idle`).
fn one_run_of(count: u64, idle: Guest) -> Result<Figures> {
    // Room for the idle processes, the keeper and the sentinel.
    let room = count
        .checked_add(2)
        .and_then(|room| u32::try_from(room).ok())
        .with_context(|| format!("{count} idle processes: at most {MAX_PROCESSES}"))?;
    let _map_limit = raise_map_limit(u64::from(room) * 10 + 16_384);
    let mut kernel = Kernel::builder()
        .max_processes(room)
        .build()
        .with_context(|| format!("cannot build a kernel for {room} processes{}", map_limit()))?;
    idle.load(&mut kernel)?;
    Guest::wat("keeper", KEEPER, "run", &["messaging:receive"]).load(&mut kernel)?;
    Guest::bundled("noop", "run", &[])
        .named("sentinel")
        .load(&mut kernel)?;
    let exits = kernel.subscribe_exits();
    let shutdown = kernel.shutdown_handle();
    harness::spawn(&mut kernel, "keeper")?;

    let before = measure::footprint_bytes()?;
    let started = Instant::now();
    for _ in 0..count {
        harness::spawn(&mut kernel, "idle")?;
    }
    harness::spawn(&mut kernel, "sentinel")?;
    let (watched, report) = std::thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            let watched = watch(&exits, started, before, count);
            // Stop listening first: the shutdown reports every process.
            drop(exits);
            shutdown.request();
            watched
        });
        let report = kernel.run();
        let watched = watcher
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the watcher thread panicked")));
        (watched, report)
    });
    let figures = watched?;
    // The watcher saw no idle process end before the sentinel; every exit
    // after it is a shutdown. The run keeps only the last
    // `estalogic_kernel::MAX_REPORTS` reports, so the ones it dropped are
    // counted, and the ones it kept are checked.
    for process in &report.processes {
        match (&process.status, process.module.as_str()) {
            (ExitStatus::Stopped(code), "idle" | "keeper") if *code == ErrorCode::SHUTDOWN => {}
            (ExitStatus::Exited(0), "sentinel") => {}
            (status, module) => bail!("{module} ({}) {status}", process.pid),
        }
    }
    let ended = report.processes.len() as u64 + report.stats.reports_dropped;
    ensure!(
        ended == count + 2,
        "{ended} of {} processes ended (the idle ones, the keeper and the sentinel)",
        count + 2
    );
    Ok(figures)
}

/// Follows exits until the sentinel's, then waits for the footprint to settle.
fn watch(
    exits: &Receiver<ProcessReport>,
    started: Instant,
    before: u64,
    count: u64,
) -> Result<Figures> {
    let mut ended_early = 0u64;
    let mut first_failure = None;
    loop {
        match exits.recv_timeout(PATIENCE) {
            Ok(report) if report.module == "sentinel" => break,
            Ok(report) => {
                ended_early += 1;
                first_failure.get_or_insert_with(|| {
                    format!("{} ({}) {}", report.module, report.pid, report.status)
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("the {count} idle processes were not all parked after {PATIENCE:?}")
            }
            Err(RecvTimeoutError::Disconnected) => bail!("the kernel stopped early"),
        }
    }
    let parked = started.elapsed();
    let at_sentinel = measure::footprint_bytes()?;
    let after = settle(before, at_sentinel)?;
    if let Some(failure) = first_failure {
        let alive = count - ended_early;
        bail!(
            "only {alive} of {count} idle processes could be alive at once ({ended_early} ended \
             at start; the first: {failure}); {} bytes of memory and page tables per live process{}",
            measure::readable(after.saturating_sub(before) as f64 / alive.max(1) as f64),
            map_limit()
        );
    }
    let grown = after.saturating_sub(before);
    let late = after.saturating_sub(at_sentinel);
    // A tenth of the growth, and 1 MiB whatever it was: a quick run's few
    // thousand processes may grow the footprint by nothing at all, reusing
    // what earlier benchmarks freed, and a page or two after that is noise.
    ensure!(
        late * 10 <= grown || late <= LATE_SLACK,
        "memory and page tables grew by {late} bytes after the sentinel exited (of {grown}): the \
         sentinel did not run after every idle process had parked, so the time is not valid"
    );
    Ok(Figures {
        bytes_per_process: grown as f64 / count as f64,
        spawn_ns: measure::nanos_per(parked, count),
    })
}

/// The kernel's limit on memory mappings per process, which bounds how
/// many processes' stacks and memories can be mapped (Linux), as a note
/// for error messages.
/// Raises `vm.max_map_count` to `needed` if it is lower and this process
/// may (root), saying so on stderr: a pool of 100,000 processes needs more
/// memory mappings than Linux's default 65,530. Without the right, the
/// kernel's own check reports the limit and how to raise it. The returned
/// guard puts the old value back when the run ends: a benchmark leaves the
/// host's settings as it found them.
fn raise_map_limit(needed: u64) -> MapLimit {
    let Some(current) = read_map_limit() else {
        return MapLimit(false);
    };
    if current >= needed {
        return MapLimit(false);
    }
    match std::fs::write(MAP_LIMIT, needed.to_string()) {
        Ok(()) => {
            note(&format!(
                "bench: raised vm.max_map_count from {current} to {needed} for the run"
            ));
            *RAISED.lock().unwrap_or_else(|p| p.into_inner()) = Some((current, needed));
            MapLimit(true)
        }
        Err(error) => {
            note(&format!(
                "bench: cannot raise vm.max_map_count to {needed}: {error}"
            ));
            MapLimit(false)
        }
    }
}

const MAP_LIMIT: &str = "/proc/sys/vm/max_map_count";

fn read_map_limit() -> Option<u64> {
    std::fs::read_to_string(MAP_LIMIT)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
}

/// A guard that puts `vm.max_map_count` back ([`restore_map_limit`]) when
/// it drops, if the run raised it (what to put back is in [`RAISED`]).
struct MapLimit(bool);

/// The same, process-wide, for [`restore_map_limit`] on a signal.
static RAISED: std::sync::Mutex<Option<(u64, u64)>> = std::sync::Mutex::new(None);

impl Drop for MapLimit {
    fn drop(&mut self) {
        if self.0 {
            restore_map_limit();
        }
    }
}

/// Puts `vm.max_map_count` back to what it was before an idle benchmark
/// raised it, if one did and the value is still the one it set (another
/// run that raised it further since is left alone: it restores its own).
/// `estactl bench` calls it when a signal stops it, as the benchmark's own
/// guard does when it ends.
pub fn restore_map_limit() {
    let Some((previous, set)) = RAISED.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    if read_map_limit() != Some(set) {
        note(&format!(
            "bench: vm.max_map_count changed since this run set it to {set}; left as it is"
        ));
        return;
    }
    if let Err(error) = std::fs::write(MAP_LIMIT, previous.to_string()) {
        note(&format!(
            "bench: cannot restore vm.max_map_count to {previous}: {error}"
        ));
    }
}

/// A line on stderr, dropped if stderr cannot be written (`eprintln!`
/// would panic, with stderr on a full device).
fn note(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn map_limit() -> String {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|limit| format!(" (vm.max_map_count is {})", limit.trim()))
        .unwrap_or_default()
}

/// Reads the footprint every [`SETTLE_STEP`] until two readings differ by at most
/// 1 % of the growth since `before` (or [`SETTLE_LIMIT`] passed); returns
/// the last reading.
fn settle(before: u64, mut last: u64) -> Result<u64> {
    let started = Instant::now();
    loop {
        std::thread::sleep(SETTLE_STEP);
        let now = measure::footprint_bytes().context("reading resident memory")?;
        let grown = now.saturating_sub(before);
        if now.abs_diff(last) * 100 <= grown || started.elapsed() > SETTLE_LIMIT {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_budget_is_24_gib_over_100_000() {
        assert_eq!(super::BYTES_PER_PROCESS_BUDGET.round(), 257_698.0);
    }
}
