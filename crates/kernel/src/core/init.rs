//! Kernel construction and boot: the [`KernelBuilder`], loading modules
//! from an app directory, and spawning processes.
//!
//! # Boot sequence
//!
//! 1. Configure the engine: fuel metering (deterministic slices), the
//!    epoch backstop (real mode only), NaN canonicalisation (deterministic
//!    mode), no WASI or any other host API.
//! 2. Build one linker holding every syscall family.
//! 3. Load modules: parse each manifest, find the binary, validate and
//!    compile it ([`crate::loader::wasm_loader`]).
//! 4. Spawn one process per module, then run the kernel loop until every
//!    process has ended.

use crate::core::capabilities_engine::{
    AuditEvent, CapError, CapabilityEngine, CapabilityInfo, Handle, Token,
};
use crate::core::kernel_loop::{
    KernelLoop, KernelShared, LoopStats, ProcessReport, RestartRecord, Task, TraceRecord,
};
use crate::core::lifecycle::{Boot, InitPhase, InitReport, SubsystemState};
use crate::core::module_registry::{ModuleKey, ModuleRegistry, ModuleState};
use crate::core::scheduler::SlicePolicy;
use crate::core::supervision::{Ladder, RestartPolicy};
use crate::drivers::clock::Clock;
use crate::drivers::notifications::NotificationQueue;
use crate::loader::lifecycle_manager::ProcessFactory;
use crate::loader::manifest::{Manifest, ManifestError, ModuleSource};
use crate::loader::preload_manager::{CacheStats, ModuleCache};
use crate::loader::wasm_loader::{self, Lane, LoadedModule, ModuleError};
use crate::syscalls;
use crate::syscalls::MemoryBudget;
use crate::syscalls::capabilities::capability_for;
use estalogic_abi::Pid;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OperatorCost, PoolingAllocationConfig};

/// The largest default process pool (more with
/// [`KernelBuilder::max_processes`]): creating a pool costs about 2 µs a
/// slot at boot, so the default keeps boot fast.
pub const DEFAULT_MAX_PROCESSES: u32 = 4_096;
/// The most worker threads a kernel runs ([`KernelBuilder::workers`]):
/// each has its own Wasmtime engine and instance pool.
pub const MAX_WORKERS: usize = 256;
/// The smallest default process pool.
const MIN_DEFAULT_PROCESSES: u32 = 1_000;
/// Address space per linear memory: the largest memory class (system,
/// 64 MiB). Smaller than 4 GiB, so the engine keeps bounds checks explicit
/// (`estalogic_bench::preemption` measures their cost apart from fuel's).
pub const MEMORY_SLOT: u64 = 64 << 20;
/// Guard region after each memory slot.
pub const MEMORY_GUARD: u64 = 64 << 10;
/// Wasm call stack per process.
const WASM_STACK: usize = 256 << 10;
/// Stack of each worker thread the kernel starts.
const WORKER_STACK: usize = 8 << 20;
/// Room for host frames (syscalls) on a process's fiber stack.
const HOST_STACK: usize = 256 << 10;
/// Bytes of a reused table slot reset in place.
const KEEP_RESIDENT: usize = 16 << 10;
/// Table slots per process: the most elements a module's table may
/// start with (`wasm_loader` refuses more at load).
pub(crate) const TABLE_ELEMENTS: usize = 10_000;
/// Instance state per process: what the engine keeps for a process's
/// globals, imported and referenced functions and data segments (its
/// `VMContext`). Wasmtime's default, set here so that it is a documented
/// process limit: `wasm_loader` refuses a module past it at load, naming
/// it. Allocated per instance as needed, not reserved per slot.
pub(crate) const INSTANCE_STATE: usize = 1 << 20;
/// Memory mappings a pool slot can take: a guard page splits each stack
/// slot, and an active memory splits its slot.
const MAPPINGS_PER_PROCESS: u64 = 10;

/// The instance pool of one lane, with `slots` processes' worth of each
/// kind of slot.
fn pool_config(slots: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .max_memory_size(MEMORY_SLOT as usize)
        .table_elements(TABLE_ELEMENTS)
        .max_core_instance_size(INSTANCE_STATE)
        .max_unused_warm_slots(1_024)
        // Return freed pages to the host in batches: one
        // `process_madvise` per 256 exits instead of one per exit. A slot
        // waiting in the batch is not reused, but an allocation that
        // finds the pool full flushes the batch and tries again.
        .decommit_batch_size(256)
        // Reset a reused table with memset instead of a system call.
        .table_keep_resident(KEEP_RESIDENT);
    pool
}

fn map_count_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The default pool: [`DEFAULT_MAX_PROCESSES`], or fewer (at least 1,000)
/// if the host's `vm.max_map_count` allows fewer.
fn default_max_processes() -> u32 {
    let Some(limit) = map_count_limit() else {
        return DEFAULT_MAX_PROCESSES;
    };
    let fits = limit.saturating_sub(MAP_RESERVE) / MAPPINGS_PER_PROCESS;
    u32::try_from(fits)
        .unwrap_or(u32::MAX)
        .clamp(MIN_DEFAULT_PROCESSES, DEFAULT_MAX_PROCESSES)
}

/// Mappings left for everything but the pool.
const MAP_RESERVE: u64 = 16_384;

/// Checks the host allows the mappings a pool of `max_processes` needs, so
/// the limit fails loudly at boot instead of as spawn failures later.
fn check_map_count(max_processes: u32) -> Result<(), KernelError> {
    let Some(limit) = map_count_limit() else {
        return Ok(());
    };
    let needed = u64::from(max_processes) * MAPPINGS_PER_PROCESS + MAP_RESERVE;
    // Linux takes at most 2^31 - 1: past it, no sysctl helps.
    let most = i32::MAX as u64;
    if needed > limit && needed > most {
        let fits = most.saturating_sub(MAP_RESERVE) / MAPPINGS_PER_PROCESS;
        return Err(KernelError::Engine(format!(
            "{max_processes} processes need up to {needed} memory mappings, more than Linux \
             allows one process (vm.max_map_count is at most {most}); lower max_processes \
             (at most {fits} fit)"
        )));
    }
    if needed > limit {
        return Err(KernelError::Engine(format!(
            "{max_processes} processes need up to {needed} memory mappings but vm.max_map_count is {limit}; \
             raise it (as root: `sysctl -w vm.max_map_count={needed}`) or lower max_processes"
        )));
    }
    Ok(())
}

/// Period of the wall-clock epoch ticker.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Why the kernel could not boot or load a module.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A manifest is malformed or invalid.
    #[error("{path}: {error}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        error: ManifestError,
    },
    /// A module binary is missing, unreadable or fails validation.
    #[error("{path}: {error}")]
    Module {
        /// The module file (or `bundled:<name>`).
        path: PathBuf,
        /// What is wrong.
        error: ModuleError,
    },
    /// A module binary could not be read.
    #[error("{path}: cannot read the module: {error}")]
    ModuleFile {
        /// The module file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// An app directory problem (missing, no manifests, duplicate names).
    #[error("{path}: {problem}")]
    App {
        /// The directory or file at fault.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The engine could not be configured.
    #[error("engine: {0}")]
    Engine(String),
    /// A spawn would exceed [`KernelBuilder::max_processes`].
    #[error(
        "cannot spawn {module}: the limit of {limit} live process(es) is reached ({live} alive; the kernel's max_processes: `estactl run --max-processes N`, or `KernelBuilder::max_processes` when embedding)"
    )]
    TooManyProcesses {
        /// The module asked for.
        module: String,
        /// Processes alive.
        live: usize,
        /// The limit.
        limit: u32,
    },
    /// No loaded module has this name.
    #[error("no module named {0:?} is loaded")]
    UnknownModule(String),
    /// Module dependencies are missing, mismatched or cyclic.
    #[error("dependencies: {0}")]
    Dependencies(String),
}

impl KernelError {
    /// The file or directory at fault, if the error names one: its text
    /// then starts with this path (a manifest, a module file or
    /// `bundled:<name>`, an app directory).
    pub fn path(&self) -> Option<&Path> {
        match self {
            KernelError::Manifest { path, .. }
            | KernelError::Module { path, .. }
            | KernelError::ModuleFile { path, .. }
            | KernelError::App { path, .. } => Some(path),
            KernelError::Engine(_)
            | KernelError::TooManyProcesses { .. }
            | KernelError::UnknownModule(_)
            | KernelError::Dependencies(_) => None,
        }
    }
}

/// The receiving end of [`Kernel::subscribe_exits`]: a
/// `Receiver<ProcessReport>` (through `Deref`) whose drop tells the kernel
/// to forget the subscription.
#[derive(Debug)]
pub struct ExitSubscription {
    receiver: std::sync::mpsc::Receiver<ProcessReport>,
    open: Arc<AtomicBool>,
}

impl std::ops::Deref for ExitSubscription {
    type Target = std::sync::mpsc::Receiver<ProcessReport>;

    fn deref(&self) -> &Self::Target {
        &self.receiver
    }
}

impl Drop for ExitSubscription {
    fn drop(&mut self) {
        self.open.store(false, Ordering::Release);
    }
}

impl Drop for Kernel {
    /// Closes the notification queue: a host thread waiting in
    /// [`NotificationQueue::take_timeout`] returns once what is queued is
    /// taken, since nothing can be posted any more.
    fn drop(&mut self) {
        self.shared.notifications.close();
    }
}

/// Builds a [`Kernel`].
#[derive(Debug, Clone, Default)]
pub struct KernelBuilder {
    deterministic: bool,
    wall_clock_backstop: bool,
    max_processes: Option<u32>,
    trace_ipc: bool,
    workers: Option<usize>,
    cache_dir: Option<PathBuf>,
    policy: SlicePolicy,
    bundled: &'static [(&'static str, &'static [u8])],
    memory_budget: Option<u64>,
}

impl KernelBuilder {
    /// Deterministic mode: virtual clock, no wall-clock backstop, NaN
    /// canonicalisation; the same inputs preempt at the same instructions.
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    /// Adds Wasmtime's epoch interruption as a wall-clock backstop: a guest
    /// also yields every 10 ms of wall time whatever its fuel says (real
    /// mode only). Off by default: fuel already charges bulk memory work by
    /// the byte, so checkpoints come after bounded work, and the epoch
    /// checks nearly double the run time of tight loops (see
    /// BENCHMARKS.md).
    pub fn wall_clock_backstop(mut self, on: bool) -> Self {
        self.wall_clock_backstop = on;
        self
    }

    /// Records every message offered to a mailbox in
    /// [`RunReport::trace`] (for `estactl trace-ipc`).
    pub fn trace_ipc(mut self, on: bool) -> Self {
        self.trace_ipc = on;
        self
    }

    /// How many processes may be alive at once (default 4,096, fewer if the
    /// host's `vm.max_map_count` allows fewer). Every
    /// process takes a slot of the instance pool, whose address space is
    /// reserved up front (about 64 MiB of virtual memory per slot, committed
    /// only as a process touches it) and up to ten memory mappings while it
    /// lives, so `build` fails with the `sysctl` to run if the host's
    /// `vm.max_map_count` is too low; a spawn past the limit fails with
    /// [`KernelError::TooManyProcesses`]. A count of 0 is taken as 1 (the
    /// CLI refuses 0).
    pub fn max_processes(mut self, count: u32) -> Self {
        self.max_processes = Some(count);
        self
    }

    /// A kernel-wide budget of guest linear memory, in bytes: every
    /// process's memory, at its current size, counts against it (each
    /// memory class's own limit still applies to each process). A growth
    /// past what is left fails as one past the class limit does
    /// (`memory.grow` returns -1, and a trap that follows is `OUT_OF_MEMORY`),
    /// and a process whose initial memory does not fit traps at its start
    /// with `OUT_OF_MEMORY`, after trying again for about 5 ms (a restarted
    /// process's predecessor holds its share until its next checkpoint);
    /// an ended process gives its share back. Without
    /// it (the default) only the classes and the process count bound guest
    /// memory: 4,096 user-class processes may grow to 64 GiB together.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Worker threads that run processes (default: the number of cores;
    /// deterministic mode always uses one). At most [`MAX_WORKERS`]:
    /// [`KernelBuilder::build`] refuses more.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers.max(1));
        self
    }

    /// Keeps compiled modules in `dir`, keyed by content hash and engine
    /// configuration, so a later boot does not recompile
    /// ([`ModuleCache::default_dir`] is the usual place). Off by default.
    pub fn module_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Overrides the slice policy (fuel per checkpoint, fuel per ms). Fuel
    /// per checkpoint is clamped to 1..=[`SlicePolicy::MAX_CHECKPOINT_FUEL`];
    /// fuel per ms outside [`SlicePolicy::FUEL_PER_MS`] is refused by
    /// [`KernelBuilder::build`].
    pub fn slice_policy(mut self, policy: SlicePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Services the host program bundles, found by manifests that say
    /// `"module": "bundled:<name>"`.
    pub fn bundled_modules(mut self, modules: &'static [(&'static str, &'static [u8])]) -> Self {
        self.bundled = modules;
        self
    }

    /// Configures the engine and the linker.
    pub fn build(self) -> Result<Kernel, KernelError> {
        let mut policy = self.policy;
        policy.checkpoint_fuel = policy
            .checkpoint_fuel
            .clamp(1, SlicePolicy::MAX_CHECKPOINT_FUEL);
        let max_processes = match self.max_processes {
            Some(count) => {
                check_map_count(count.max(1))?;
                count.max(1)
            }
            None => default_max_processes(),
        };
        if !SlicePolicy::FUEL_PER_MS.contains(&policy.fuel_per_ms) {
            return Err(KernelError::Engine(format!(
                "slice policy: fuel_per_ms {} is outside {}..={}",
                policy.fuel_per_ms,
                SlicePolicy::FUEL_PER_MS.start(),
                SlicePolicy::FUEL_PER_MS.end()
            )));
        }
        let workers = if self.deterministic {
            1
        } else {
            self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
            })
        };
        if workers > MAX_WORKERS {
            return Err(KernelError::Engine(format!(
                "{workers} worker threads asked for; a kernel runs at most {MAX_WORKERS}"
            )));
        }
        let mut config = Config::new();
        config.consume_fuel(true);
        // 64-bit memories are not supported: a module that declares one is a
        // load error, not a surprise at run time. (Shared memories need the
        // threads proposal, which this build of Wasmtime leaves out.)
        config.wasm_memory64(false);
        // No wasm backtrace is captured when a guest traps or calls `exit`
        // (which unwinds it with an error): a process's report carries the
        // trap's own message only (`lifecycle_manager::classify`), and the
        // capture cost about 300 ns on every exit.
        config.wasm_backtrace_max_frames(None);
        let backstop = self.wall_clock_backstop && !self.deterministic;
        config.epoch_interruption(backstop);
        // Fuel measures work, not instructions: bulk memory and table
        // operations cost per byte or element (Wasmtime's defaults) and
        // growing memory costs per page, so a checkpoint comes after a
        // bounded amount of real work even for `memory.fill` loops. A
        // growth is charged for what it asks before it is granted or
        // refused, so its price stays low enough that the largest request
        // (65,535 pages; 2^32 - 1 table elements) fits in one handler call's
        // budget and fails with -1, as in a task, instead of `TIMEOUT`:
        // granted growth is bounded by the memory class and the table slot
        // anyway, and a page's first touch is paid by the guest's stores.
        let mut costs = OperatorCost::new();
        costs.variable.memory_grow_per_page = 64;
        costs.variable.table_grow_per_element = 0;
        config.operator_cost(costs);
        config.cranelift_nan_canonicalization(self.deterministic);
        // Relaxed SIMD's results may differ by host CPU (a fused
        // multiply-add where the CPU has one): deterministic mode pins
        // them to one answer on every host.
        config.relaxed_simd_deterministic(self.deterministic);
        // Linear memories live in fixed slots of a pool: spawning a process
        // maps nothing and exiting unmaps nothing, and a slot is as large as
        // the largest memory class, so bounds checks stay explicit but cheap.
        config.memory_reservation(MEMORY_SLOT);
        config.memory_guard_size(MEMORY_GUARD);
        config.memory_reservation_for_growth(0);
        config.max_wasm_stack(WASM_STACK);
        config.async_stack_size(WASM_STACK + HOST_STACK);
        // Initialise memories by copying data segments rather than mapping
        // a copy-on-write image: mapping splits the pool's mappings on every
        // spawn and exit.
        config.memory_init_cow(false);
        // One engine per worker, each with its own pool (a lane; see
        // `wasm_loader`): a pool's locks and an engine's registries are
        // then touched by one worker only. The process limit is shared
        // out among them; a spawn whose lane is full takes another's slot.
        let lane_slots = max_processes.div_ceil(workers as u32);
        let lanes = (0..workers)
            .map(|_| {
                let mut lane_config = config.clone();
                lane_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(
                    lane_slots,
                )));
                let engine = Engine::new(&lane_config)?;
                let linkers = syscalls::Linkers::new(&engine)?;
                Ok(Lane { engine, linkers })
            })
            .collect::<wasmtime::Result<Vec<Lane>>>()
            .map_err(|e| KernelError::Engine(format!("{e:#}")))?;
        let cache = match &self.cache_dir {
            Some(dir) => {
                Some(ModuleCache::new(dir).map_err(|e| KernelError::Engine(e.to_string()))?)
            }
            None => None,
        };
        // The tokens' MAC key is random in every mode, deterministic runs
        // included: it changes nothing a run does (token ids are random
        // anyway), only which tokens verify, and a key written in the
        // source would let anyone forge a token from an id in the audit.
        let capabilities = CapabilityEngine::with_random_key()
            .map_err(|e| KernelError::Engine(format!("no randomness for capability keys: {e}")))?;
        let clock = if self.deterministic {
            Clock::virtual_clock()
        } else {
            Clock::real()
        };
        let mut boot = Boot::new();
        let config = format!(
            "{} mode, {} worker(s), checkpoint every {} fuel",
            if self.deterministic {
                "deterministic"
            } else {
                "real-time"
            },
            workers,
            policy.checkpoint_fuel
        );
        let clock_detail = if self.deterministic {
            "virtual"
        } else {
            "monotonic"
        };
        let cache_state = match &cache {
            Some(cache) => (SubsystemState::Ok, cache.dir().display().to_string()),
            None => (
                SubsystemState::Skipped("not configured".into()),
                String::new(),
            ),
        };
        let steps: [(&str, InitPhase, SubsystemState, String); 6] = [
            ("config", InitPhase::PreInit, SubsystemState::Ok, config),
            (
                "engine",
                InitPhase::CoreInit,
                SubsystemState::Ok,
                "fuel metering, no WASI".into(),
            ),
            (
                "capabilities",
                InitPhase::CoreInit,
                SubsystemState::Ok,
                "engine with MAC key".into(),
            ),
            (
                "scheduler",
                InitPhase::CoreInit,
                SubsystemState::Ok,
                "six levels, aging".into(),
            ),
            (
                "clock",
                InitPhase::DriverInit,
                SubsystemState::Ok,
                clock_detail.into(),
            ),
            (
                "module_cache",
                InitPhase::DriverInit,
                cache_state.0,
                cache_state.1,
            ),
        ];
        for (name, phase, state, detail) in steps {
            let _ = boot.begin(phase.clone());
            let _ = boot.record_with_detail(name, phase, state, &detail);
        }
        let _ = boot.begin(InitPhase::ServiceInit);
        let mut shared = KernelShared::new(clock, capabilities, self.trace_ipc);
        shared.memory_budget = self
            .memory_budget
            .map(|bytes| Arc::new(MemoryBudget::new(bytes)));
        let shared = Arc::new(shared);
        let factory = Arc::new(ProcessFactory::new(
            lanes.into(),
            shared.clone(),
            policy.checkpoint_fuel,
            backstop,
            max_processes,
        ));
        Ok(Kernel {
            factory,
            cache,
            policy,
            workers,
            bundled: self.bundled,
            shared,
            registry: ModuleRegistry::new(),
            boot,
            pending: Vec::new(),
            exit_listeners: Vec::new(),
            restart_policy: None,
            pool: None,
        })
    }
}

/// A handle that asks a running kernel to stop (for Ctrl-C handlers).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<KernelShared>);

impl ShutdownHandle {
    /// Stops every process at its next checkpoint; `run` then returns. A
    /// request made while no run is in progress stops the next run at once
    /// (a Ctrl-C during boot is not lost); either way the run it stops
    /// uses it up, and a later run starts afresh.
    pub fn request(&self) {
        self.0.request_shutdown();
    }
}

/// The result of [`Kernel::run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One report per process, in the order they ended.
    pub processes: Vec<ProcessReport>,
    /// How long the run took. In real mode, wall-clock time from the start
    /// of [`Kernel::run`] to its end. In deterministic mode, virtual time:
    /// how far the run moved the kernel's virtual clock (fuel at
    /// checkpoints, yields, jumps to timers), so that two runs of the same
    /// app report the same figure, as they do each process's `cpu_ns`.
    pub elapsed: Duration,
    /// Scheduler figures: fairness, checkpoints, workers.
    pub stats: LoopStats,
    /// Every restart decision the supervisor made, in order.
    pub restarts: Vec<RestartRecord>,
    /// Every message queued in a mailbox, in order (only with
    /// [`KernelBuilder::trace_ipc`]): at most the first 1,000,000.
    pub trace: Vec<TraceRecord>,
    /// Messages queued after the trace was full, not in `trace`.
    pub trace_dropped: u64,
}

impl RunReport {
    /// True if any process trapped.
    pub fn any_trapped(&self) -> bool {
        self.processes.iter().any(|p| p.status.is_trap())
    }

    /// The report of the first process that ran `module`.
    pub fn process(&self, module: &str) -> Option<&ProcessReport> {
        self.processes.iter().find(|p| p.module == module)
    }
}

/// The microkernel: loaded modules and the processes spawned from them.
pub struct Kernel {
    factory: Arc<ProcessFactory>,
    cache: Option<ModuleCache>,
    policy: SlicePolicy,
    workers: usize,
    bundled: &'static [(&'static str, &'static [u8])],
    shared: Arc<KernelShared>,
    registry: ModuleRegistry,
    boot: Boot,
    pending: Vec<Task>,
    /// Exit subscriptions, each with whether its receiver is still held.
    exit_listeners: Vec<(std::sync::mpsc::Sender<ProcessReport>, Arc<AtomicBool>)>,
    restart_policy: Option<Box<dyn RestartPolicy>>,
    /// The worker threads besides the one that calls [`Kernel::run`],
    /// started at the first run and kept for the next ones.
    pool: Option<rayon_core::ThreadPool>,
}

impl Kernel {
    /// A channel that receives each process's report the moment it ends
    /// (during [`Kernel::run`]), for supervisors, tests and tools. It is a
    /// `Receiver` (by `Deref`); dropping it ends the subscription, which the
    /// kernel then forgets (at the next subscription or run).
    pub fn subscribe_exits(&mut self) -> ExitSubscription {
        self.exit_listeners
            .retain(|(_, open)| open.load(Ordering::Acquire));
        let (sender, receiver) = std::sync::mpsc::channel();
        let open = Arc::new(AtomicBool::new(true));
        self.exit_listeners.push((sender, open.clone()));
        ExitSubscription { receiver, open }
    }

    /// The kernel-wide memory budget, if one was set
    /// ([`KernelBuilder::memory_budget`]): its limit and what live
    /// processes hold of it, readable from any thread while the kernel
    /// runs.
    pub fn memory_budget(&self) -> Option<Arc<MemoryBudget>> {
        self.shared.memory_budget.clone()
    }

    /// The host's end of the processes' notifications (the `notify`
    /// syscall, capability `notifications:send`): take them from any
    /// thread, during [`Kernel::run`] or after it. The kernel holds at most
    /// [`MAX_PENDING_NOTIFICATIONS`](crate::drivers::notifications::MAX_PENDING_NOTIFICATIONS)
    /// not taken yet; past that, `notify` fails with `LIMIT_REACHED`.
    pub fn notifications(&self) -> NotificationQueue {
        NotificationQueue(self.shared.notifications.clone())
    }

    /// A builder with defaults: real clock, default slices, nothing bundled.
    pub fn builder() -> KernelBuilder {
        KernelBuilder::default()
    }

    /// A handle to stop [`Kernel::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// The modules loaded so far, in load order.
    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.factory.modules()
    }

    /// The module registry: every registered module and its state.
    pub fn registry(&self) -> &ModuleRegistry {
        &self.registry
    }

    /// The init phases so far with the state of every subsystem (one per
    /// module loaded before the boot completed, in `ServiceInit`); a
    /// failed boot names the subsystem and phase. The first successful
    /// [`Kernel::spawn_all`] completes the boot: a module loaded after it
    /// is not part of the boot, and [`Kernel::registry`] has its state.
    pub fn boot_report(&self) -> &InitReport {
        self.boot.report()
    }

    fn record_module(&mut self, name: &str, state: SubsystemState, detail: &str) {
        let _ = self.boot.record_with_detail(
            &format!("module {name}"),
            InitPhase::ServiceInit,
            state,
            detail,
        );
    }

    /// Replaces the restart policy (default: [`Ladder`], 3 failures in 60 s
    /// climb a rung).
    pub fn set_restart_policy(&mut self, policy: Box<dyn RestartPolicy>) {
        self.restart_policy = Some(policy);
    }

    /// Loads one module from its manifest and binary bytes. `origin` names
    /// the binary in error messages. The module is registered, then
    /// validated and compiled: its registry state ends `Ready` or
    /// `Failed`. A module that failed may be loaded again (fixed): the
    /// failed entry is replaced. While one has failed and is not replaced,
    /// [`Kernel::spawn_all`] refuses to boot.
    pub fn load_module(
        &mut self,
        manifest: Manifest,
        bytes: &[u8],
        origin: &Path,
    ) -> Result<ModuleKey, KernelError> {
        if self.is_loaded(&manifest.name) {
            return Err(KernelError::App {
                path: origin.to_path_buf(),
                problem: format!("a module named {:?} is already loaded", manifest.name),
            });
        }
        check_capability_scopes(&manifest, origin)?;
        self.forget_failed(&manifest.name);
        let key = self
            .registry
            .register(manifest.clone())
            .map_err(|e| KernelError::App {
                path: origin.to_path_buf(),
                problem: e.to_string(),
            })?;
        let _ = self.registry.transition(&key, ModuleState::Loading);
        let loaded = wasm_loader::load(self.factory.lanes(), manifest, bytes, self.cache.as_ref());
        match loaded {
            Ok(loaded) => {
                let _ = self.registry.transition(&key, ModuleState::Ready);
                self.record_module(&key.name, SubsystemState::Ok, &key.to_string());
                self.factory.add(loaded);
                Ok(key)
            }
            Err(error) => {
                let _ = self
                    .registry
                    .transition(&key, ModuleState::Failed(error.to_string()));
                self.record_module(&key.name, SubsystemState::Failed(error.to_string()), "");
                Err(KernelError::Module {
                    path: origin.to_path_buf(),
                    error,
                })
            }
        }
    }

    /// Whether a module named `name` is registered and did not fail to
    /// load (a failed one may be loaded again, see
    /// [`Kernel::load_module`]).
    fn is_loaded(&self, name: &str) -> bool {
        self.registry
            .versions(name)
            .any(|entry| !matches!(entry.state(), ModuleState::Failed(_)))
    }

    /// Removes the entries of `name` that failed to load, so that a new
    /// load of it starts afresh (registry invariant 4: a failed entry may
    /// be unregistered).
    fn forget_failed(&mut self, name: &str) {
        let failed: Vec<ModuleKey> = self
            .registry
            .versions(name)
            .filter(|entry| matches!(entry.state(), ModuleState::Failed(_)))
            .map(|entry| entry.key())
            .collect();
        for key in failed {
            let _ = self.registry.unregister(&key);
        }
    }

    /// Loads the module described by the manifest file at `path`. A
    /// bundled module that fails to load is a [`KernelError::App`] naming
    /// the manifest (and the module), a module file's a
    /// [`KernelError::Module`] naming the file.
    pub fn load_manifest_file(&mut self, path: &Path) -> Result<ModuleKey, KernelError> {
        let manifest = Manifest::load(path).map_err(|error| KernelError::Manifest {
            path: path.to_path_buf(),
            error,
        })?;
        check_capability_scopes(&manifest, path)?;
        if self.is_loaded(&manifest.name) {
            return Err(KernelError::App {
                path: path.to_path_buf(),
                problem: format!(
                    "a module named {:?} is already loaded (from another manifest)",
                    manifest.name
                ),
            });
        }
        let (bytes, origin): (std::borrow::Cow<'static, [u8]>, PathBuf) = match &manifest.module {
            ModuleSource::Bundled(name) => {
                let bytes = self
                    .bundled
                    .iter()
                    .find(|(candidate, _)| candidate == name)
                    .map(|(_, bytes)| *bytes)
                    .ok_or_else(|| KernelError::Manifest {
                        path: path.to_path_buf(),
                        error: ManifestError {
                            field: "module".into(),
                            problem: format!(
                                "no bundled service named {name:?} (bundled: {})",
                                self.bundled
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        },
                    })?;
                (bytes.into(), PathBuf::from(format!("bundled:{name}")))
            }
            ModuleSource::File(relative) => {
                let file = module_path(path, relative)?;
                let bytes = read_module_file(&file).map_err(|error| KernelError::ModuleFile {
                    path: file.clone(),
                    error,
                })?;
                (bytes.into(), file)
            }
        };
        let bundled = matches!(manifest.module, ModuleSource::Bundled(_));
        match self.load_module(manifest, &bytes, &origin) {
            // A bundled module's error names the manifest that chose it:
            // `bundled:NAME` alone does not say which app file is at fault.
            Err(KernelError::Module {
                path: module,
                error,
            }) if bundled => Err(KernelError::App {
                path: path.to_path_buf(),
                problem: format!("module {}: {error}", module.display()),
            }),
            loaded => loaded,
        }
    }

    /// Loads every module of an app directory: each `manifest.json` in the
    /// directory itself or in its immediate subdirectories, in path order.
    ///
    /// Every manifest is read and checked (fields, capability scopes,
    /// module paths, names unique in the app and not loaded yet) before any
    /// module is loaded, so a manifest error loads nothing. A module that
    /// then fails to compile is registered `Failed` (the error names it),
    /// and [`Kernel::spawn_all`] refuses the boot until it is loaded again.
    pub fn load_app_dir(&mut self, dir: &Path) -> Result<Vec<String>, KernelError> {
        let manifests = find_manifests(dir)?;
        let mut seen: Vec<(String, PathBuf)> = Vec::new();
        for path in &manifests {
            let manifest = Manifest::load(path).map_err(|error| KernelError::Manifest {
                path: path.to_path_buf(),
                error,
            })?;
            check_capability_scopes(&manifest, path)?;
            if let ModuleSource::File(relative) = &manifest.module {
                module_path(path, relative)?;
            }
            if let Some((_, first)) = seen.iter().find(|(name, _)| *name == manifest.name) {
                return Err(KernelError::App {
                    path: path.to_path_buf(),
                    problem: format!(
                        "a module named {:?} is already in this app (in {})",
                        manifest.name,
                        first.display()
                    ),
                });
            }
            if self.is_loaded(&manifest.name) {
                return Err(KernelError::App {
                    path: path.to_path_buf(),
                    problem: format!(
                        "a module named {:?} is already loaded (from another manifest)",
                        manifest.name
                    ),
                });
            }
            seen.push((manifest.name.clone(), path.clone()));
        }
        let mut names = Vec::new();
        for manifest in manifests {
            names.push(self.load_manifest_file(&manifest)?.name);
        }
        Ok(names)
    }

    /// Checks what [`Kernel::spawn_all`] checks before it spawns anything
    /// (dependencies, versions, cycles, supervisors), spawning nothing.
    pub fn check_boot(&self) -> Result<(), KernelError> {
        self.boot_order()
            .map(|_| ())
            .map_err(KernelError::Dependencies)
    }

    /// The order to spawn the loaded modules in, or what stops the boot.
    fn boot_order(&self) -> Result<Vec<ModuleKey>, String> {
        let failed: Vec<String> = self
            .registry
            .iter()
            .filter_map(|entry| match entry.state() {
                ModuleState::Failed(reason) => Some(format!(
                    "{} failed to load ({reason}); load it again fixed, or boot without it",
                    entry.key()
                )),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        match self.registry.check_dependencies() {
            Err(errors) => Err(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
            Ok(()) => self
                .check_supervisors()
                .and_then(|()| self.registry.load_order().map_err(|e| e.to_string())),
        }
    }

    /// Checks every dependency and spawns one process of every loaded
    /// module, dependencies first (a topological order, ties by name).
    /// A module that failed to load, missing dependencies, version
    /// mismatches and cycles are errors that name the modules; nothing is
    /// spawned then.
    pub fn spawn_all(&mut self) -> Result<Vec<Pid>, KernelError> {
        let _ = self.boot.begin(InitPhase::PostInit);
        let checked = self.boot_order();
        let order = match checked {
            Ok(order) => {
                let names: Vec<String> = order.iter().map(ToString::to_string).collect();
                let _ = self.boot.record_with_detail(
                    "dependencies",
                    InitPhase::PostInit,
                    SubsystemState::Ok,
                    &format!("load order: {}", names.join(", ")),
                );
                let _ = self.boot.advance();
                order
            }
            Err(problem) => {
                let _ = self.boot.record(
                    "dependencies",
                    InitPhase::PostInit,
                    SubsystemState::Failed(problem.clone()),
                );
                let _ = self.boot.advance();
                return Err(KernelError::Dependencies(problem));
            }
        };
        order.iter().map(|key| self.spawn(&key.name)).collect()
    }

    /// Every `supervisor` a manifest names is another loaded module.
    fn check_supervisors(&self) -> Result<(), String> {
        let problems: Vec<String> = self
            .factory
            .modules()
            .iter()
            .filter_map(|module| {
                let name = &module.manifest.name;
                let supervisor = module.manifest.supervisor.as_deref()?;
                if supervisor == name {
                    Some(format!("{name} names itself as its supervisor"))
                } else if self.registry.latest(supervisor).is_none() {
                    Some(format!(
                        "{name} names supervisor {supervisor:?}, which is not loaded"
                    ))
                } else {
                    None
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Spawns a process running the loaded module `name`; it becomes the
    /// process [`lookup`](estalogic_abi::Syscall::Lookup) finds for that name
    /// if none is registered yet, or else when the registered one and the
    /// module's processes spawned before it have ended (a supervisor or
    /// system restart's replacement of a holder still on its way out takes
    /// the name over instead).
    pub fn spawn(&mut self, name: &str) -> Result<Pid, KernelError> {
        let task = self.factory.spawn(name)?;
        let pid = task.process.pid;
        self.pending.push(task);
        Ok(pid)
    }

    /// Hits and misses of the compiled-module cache, if one is configured.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(ModuleCache::stats)
    }

    /// Exports `pid`'s capability `handle` as a token that can leave the
    /// kernel (CLI, host bridge, another node): a random 128-bit id with a
    /// keyed MAC. Needs the `delegate` right; audited.
    pub fn export_capability(&self, pid: Pid, handle: Handle) -> Result<Token, CapError> {
        let now = self.shared.clock.now_nanos();
        let mut engine = self.shared.capabilities();
        let token = engine.export(pid, handle, now);
        self.shared.flush_audit(&mut engine);
        token
    }

    /// Verifies a token's MAC and that its capability still validates, and
    /// describes the capability. A forged or altered token is `BadToken`;
    /// a revoked capability's token is `Revoked`.
    pub fn redeem_capability(&self, token: &Token) -> Result<CapabilityInfo, CapError> {
        let now = self.shared.clock.now_nanos();
        let mut engine = self.shared.capabilities();
        let info = engine.redeem(token, now);
        self.shared.flush_audit(&mut engine);
        info
    }

    /// The capabilities in `pid`'s handle table.
    pub fn capabilities_of(&self, pid: Pid) -> Vec<(Handle, CapabilityInfo)> {
        self.shared.capabilities().handles(pid)
    }

    /// Timers the kernel holds (deadlines of receives with a timeout, live
    /// or cancelled but not yet compacted away).
    pub fn armed_timers(&self) -> usize {
        self.shared.armed_timers()
    }

    /// Takes the capability audit events recorded so far: every grant,
    /// delegation, export, revocation and denial, oldest first. At most
    /// 100,000 are kept between two takes: past that the oldest are
    /// dropped, and the take starts with one [`AuditKind::Lost`] event
    /// saying how many were dropped since the last take. At most 1,000
    /// denials of one process are kept between two takes; the rest are
    /// counted in one `Denied` event per process, after the others.
    ///
    /// [`AuditKind::Lost`]: crate::core::capabilities_engine::AuditKind::Lost
    pub fn take_audit(&self) -> Vec<AuditEvent> {
        self.shared.take_audit()
    }

    /// Runs every spawned process until all have ended (or a shutdown is
    /// requested) and reports how each ended. The calling thread is one of
    /// the workers; the others are started by the first run and kept for
    /// the next ones, so a kernel run once per batch pays no thread starts.
    /// A run wakes no more of them than it has processes (one process: this
    /// thread alone), and more join if restarts make more processes ready.
    /// Handler calls run on the workers' own stacks, a direct delivery's
    /// inside its sender's (each call up to 256 KiB of wasm stack): the
    /// calling thread needs about 1 MiB of stack (Rust's threads have 2 MiB,
    /// a main thread 8).
    ///
    /// # Panics
    ///
    /// If a worker panics (a kernel bug, or a panic in the restart policy
    /// or a tracing subscriber this run calls), the other workers leave at
    /// their next checkpoint and the first panic is resumed here. The
    /// processes of the run are gone; drop the kernel rather than run it
    /// again.
    pub fn run(&mut self) -> RunReport {
        let started = std::time::Instant::now();
        // Deterministic mode reports virtual time: the wall clock would
        // make two runs' reports differ.
        let virtual_start = self.shared.clock.now_nanos();
        let restart_policy = self
            .restart_policy
            .take()
            .unwrap_or_else(|| Box::new(Ladder::default()));
        let kernel_loop = KernelLoop::new(
            self.shared.clone(),
            self.policy,
            self.factory.clone(),
            restart_policy,
        );
        self.exit_listeners
            .retain(|(_, open)| open.load(Ordering::Acquire));
        for (listener, _) in &self.exit_listeners {
            kernel_loop.notify_exits(listener.clone());
        }
        let ticker_stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let ticker = self.factory.backstop().then(|| {
            let engines: Vec<Engine> = self
                .factory
                .lanes()
                .iter()
                .map(|lane| lane.engine.clone())
                .collect();
            let stop = ticker_stop.0.clone();
            std::thread::Builder::new()
                .name("estalogic-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .expect("spawn the epoch ticker thread")
        });
        if self.workers > 1 && self.pool.is_none() {
            self.pool = Some(
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(self.workers - 1)
                    .thread_name(|n| format!("estalogic-worker-{}", n + 1))
                    // Room for a handler's call and, inside one of its
                    // sends, a direct delivery's call (each up to the wasm
                    // stack limit) with their host frames; reserved, not
                    // resident.
                    .stack_size(WORKER_STACK)
                    .build()
                    .expect("start the kernel's worker threads"),
            );
        }
        let (processes, stats, restarts, restart_policy) =
            kernel_loop.run(self.pool.as_ref(), self.pending.drain(..));
        // A shutdown request is used up by the run it stopped: the next run
        // starts afresh.
        self.shared.clear_shutdown();
        self.shared.drop_cancelled_timers();
        self.restart_policy = Some(restart_policy);
        drop(ticker_stop);
        if let Some(ticker) = ticker {
            let _ = ticker.join();
        }
        let (trace, trace_dropped) = self.shared.take_trace();
        let elapsed = if self.shared.clock.is_virtual() {
            Duration::from_nanos(self.shared.clock.now_nanos().saturating_sub(virtual_start))
        } else {
            started.elapsed()
        };
        RunReport {
            processes,
            elapsed,
            stats,
            restarts,
            trace,
            trace_dropped,
        }
    }
}

/// Sets its flag when dropped: the epoch ticker stops with the run, also
/// when a worker's panic unwinds out of it.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Checks every requested capability maps to one the kernel can grant
/// (scopes parse: no `..` or absolute directory prefixes, no empty lists).
fn check_capability_scopes(manifest: &Manifest, path: &Path) -> Result<(), KernelError> {
    for (index, request) in manifest.capabilities_required.iter().enumerate() {
        if let Err(problem) = capability_for(request) {
            return Err(KernelError::Manifest {
                path: path.to_path_buf(),
                error: ManifestError {
                    field: format!("capabilities_required[{index}].scope"),
                    problem,
                },
            });
        }
    }
    Ok(())
}

/// The largest module file an app directory may hold.
pub const MAX_MODULE_FILE_BYTES: u64 = 256 << 20;

/// The module file a manifest at `manifest` names by `relative`: a path
/// inside the manifest's directory (relative, without `..`), and not
/// through a link to somewhere else. A file that is not there is left to
/// the read, which says so.
fn module_path(manifest: &Path, relative: &Path) -> Result<PathBuf, KernelError> {
    let refuse = |problem: String| KernelError::Manifest {
        path: manifest.to_path_buf(),
        error: ManifestError {
            field: "module".into(),
            problem,
        },
    };
    if !stays_inside(relative) {
        return Err(refuse(format!(
            "{relative:?} must be a path inside the manifest's directory (relative, without `..`)"
        )));
    }
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let file = dir.join(relative);
    // Links are followed only as far as the manifest's own directory: a
    // module that is, or lies under, a link to a file elsewhere is refused.
    if let (Ok(root), Ok(real)) = (dir.canonicalize(), file.canonicalize())
        && !real.starts_with(&root)
    {
        return Err(refuse(format!(
            "{relative:?} leads outside the manifest's directory (through a link, to {})",
            real.display()
        )));
    }
    Ok(file)
}

/// True for a relative path with no `..`, root or prefix component.
fn stays_inside(path: &Path) -> bool {
    path.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    })
}

/// Reads a module file: a regular file (a device or a FIFO would never
/// end) of at most [`MAX_MODULE_FILE_BYTES`].
fn read_module_file(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let metadata = std::fs::metadata(file)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_MODULE_FILE_BYTES} bytes"),
        )
    };
    if metadata.len() > MAX_MODULE_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(file)?
        .take(MAX_MODULE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MODULE_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn find_manifests(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let app_error = |problem: String| KernelError::App {
        path: dir.to_path_buf(),
        problem,
    };
    let root = dir
        .canonicalize()
        .map_err(|e| app_error(format!("cannot read the app directory: {e}")))?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| app_error(format!("cannot read the app directory: {e}")))?;
    let mut manifests = Vec::new();
    // A `manifest.json` that is there but is not a file (a directory, a
    // dangling or looping link), that cannot be looked at, or that is a
    // link out of the app directory is an error, not a module quietly left
    // out or brought in from elsewhere.
    let mut take = |manifest: PathBuf| -> Result<(), KernelError> {
        let problem = match std::fs::symlink_metadata(&manifest) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => format!("cannot be read: {error}"),
            Ok(_) => match manifest.canonicalize() {
                Ok(real) if !real.starts_with(&root) => format!(
                    "leads outside the app directory (through a link, to {})",
                    real.display()
                ),
                Ok(_) if manifest.is_file() => {
                    manifests.push(manifest);
                    return Ok(());
                }
                Ok(_) => "is not a readable regular file".to_string(),
                Err(error) => format!("is not a readable regular file: {error}"),
            },
        };
        Err(KernelError::App {
            path: manifest,
            problem,
        })
    };
    take(dir.join("manifest.json"))?;
    let mut subdirs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| app_error(format!("cannot list the app directory: {e}")))?
            .path();
        if path.is_dir() {
            subdirs.push(path);
        }
    }
    subdirs.sort();
    for subdir in subdirs {
        take(subdir.join("manifest.json"))?;
    }
    if manifests.is_empty() {
        return Err(app_error(
            "no manifest.json in the directory or its subdirectories".to_string(),
        ));
    }
    Ok(manifests)
}
