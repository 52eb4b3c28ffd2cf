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

use crate::core::capabilities_engine::{AuditEvent, CapabilityEngine};
use crate::core::kernel_loop::{
    ExitStatus, KernelLoop, KernelShared, LoopStats, Outcome, ProcessReport, Task,
};
use crate::core::message_router::Mailbox;
use crate::core::process::Process;
use crate::core::scheduler::SlicePolicy;
use crate::drivers::clock::Clock;
use crate::loader::manifest::{Manifest, ManifestError, ModuleSource};
use crate::loader::preload_manager::{CacheStats, ModuleCache};
use crate::loader::wasm_loader::{self, EntryKind, LoadedModule, ModuleError};
use crate::syscalls::capabilities::capability_for;
use crate::syscalls::{self, MemoryLimiter, ProcessContext, ProcessExit};
use estalogic_abi::{ErrorCode, Pid};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, Linker, Store, Trap, UpdateDeadline};

/// Fuel given to each process: effectively unlimited; slices, not the
/// budget, bound how long a process runs at a time.
const FUEL_BUDGET: u64 = u64::MAX / 4;
/// Period of the wall-clock epoch ticker.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Epoch ticks a guest may run between yields, whatever its fuel says.
const BACKSTOP_TICKS: u64 = 10;

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
}

/// Builds a [`Kernel`].
#[derive(Debug, Clone, Default)]
pub struct KernelBuilder {
    deterministic: bool,
    workers: Option<usize>,
    cache_dir: Option<PathBuf>,
    policy: SlicePolicy,
    bundled: &'static [(&'static str, &'static [u8])],
}

impl KernelBuilder {
    /// Deterministic mode: virtual clock, no wall-clock backstop, NaN
    /// canonicalisation; the same inputs preempt at the same instructions.
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    /// Worker threads that run processes (default: the number of cores;
    /// deterministic mode always uses one).
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

    /// Overrides the slice policy (fuel per checkpoint, fuel per ms).
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
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(!self.deterministic);
        config.cranelift_nan_canonicalization(self.deterministic);
        let engine = Engine::new(&config).map_err(|e| KernelError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        syscalls::add_to_linker(&mut linker).map_err(|e| KernelError::Engine(format!("{e:#}")))?;
        let cache = match &self.cache_dir {
            Some(dir) => {
                Some(ModuleCache::new(dir).map_err(|e| KernelError::Engine(e.to_string()))?)
            }
            None => None,
        };
        // Deterministic runs use no host randomness: the MAC key is fixed.
        let capabilities = if self.deterministic {
            CapabilityEngine::new(blake3::derive_key(
                "estalogic 2026-11 deterministic capability key",
                b"",
            ))
        } else {
            CapabilityEngine::with_random_key().map_err(|e| {
                KernelError::Engine(format!("no randomness for capability keys: {e}"))
            })?
        };
        let clock = if self.deterministic {
            Clock::virtual_clock()
        } else {
            Clock::real()
        };
        let workers = if self.deterministic {
            1
        } else {
            self.workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        };
        Ok(Kernel {
            engine,
            linker,
            cache,
            policy,
            workers,
            deterministic: self.deterministic,
            bundled: self.bundled,
            shared: Arc::new(KernelShared::new(clock, capabilities)),
            modules: Vec::new(),
            pending: Vec::new(),
            exit_listeners: Vec::new(),
        })
    }
}

/// A handle that asks a running kernel to stop (for Ctrl-C handlers).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<KernelShared>);

impl ShutdownHandle {
    /// Stops every process at its next checkpoint; `run` then returns.
    pub fn request(&self) {
        self.0.request_shutdown();
    }
}

/// The result of [`Kernel::run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One report per process, in the order they ended.
    pub processes: Vec<ProcessReport>,
    /// Wall-clock time the run took.
    pub elapsed: Duration,
    /// Scheduler figures: fairness, checkpoints, workers.
    pub stats: LoopStats,
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
    engine: Engine,
    linker: Linker<ProcessContext>,
    cache: Option<ModuleCache>,
    policy: SlicePolicy,
    workers: usize,
    deterministic: bool,
    bundled: &'static [(&'static str, &'static [u8])],
    shared: Arc<KernelShared>,
    modules: Vec<LoadedModule>,
    pending: Vec<Task>,
    exit_listeners: Vec<std::sync::mpsc::Sender<ProcessReport>>,
}

impl Kernel {
    /// A channel that receives each process's report the moment it ends
    /// (during [`Kernel::run`]), for supervisors, tests and tools.
    pub fn subscribe_exits(&mut self) -> std::sync::mpsc::Receiver<ProcessReport> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.exit_listeners.push(sender);
        receiver
    }

    /// A builder with defaults: real clock, default slices, nothing bundled.
    pub fn builder() -> KernelBuilder {
        KernelBuilder::default()
    }

    /// A handle to stop [`Kernel::run`] from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// The modules loaded so far.
    pub fn modules(&self) -> &[LoadedModule] {
        &self.modules
    }

    /// Loads one module from its manifest and binary bytes. `origin` names
    /// the binary in error messages.
    pub fn load_module(
        &mut self,
        manifest: Manifest,
        bytes: &[u8],
        origin: &Path,
    ) -> Result<&LoadedModule, KernelError> {
        if self
            .modules
            .iter()
            .any(|m| m.manifest.name == manifest.name)
        {
            return Err(KernelError::App {
                path: origin.to_path_buf(),
                problem: format!("a module named {:?} is already loaded", manifest.name),
            });
        }
        for (index, request) in manifest.capabilities_required.iter().enumerate() {
            if let Err(problem) = capability_for(request) {
                return Err(KernelError::Manifest {
                    path: origin.to_path_buf(),
                    error: ManifestError {
                        field: format!("capabilities_required[{index}].scope"),
                        problem,
                    },
                });
            }
        }
        let loaded = wasm_loader::load(
            &self.engine,
            &self.linker,
            manifest,
            bytes,
            self.cache.as_ref(),
        )
        .map_err(|error| KernelError::Module {
            path: origin.to_path_buf(),
            error,
        })?;
        self.modules.push(loaded);
        Ok(self.modules.last().expect("just pushed"))
    }

    /// Loads the module described by the manifest file at `path`.
    pub fn load_manifest_file(&mut self, path: &Path) -> Result<&LoadedModule, KernelError> {
        let manifest = Manifest::load(path).map_err(|error| KernelError::Manifest {
            path: path.to_path_buf(),
            error,
        })?;
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
                let file = path.parent().unwrap_or(Path::new(".")).join(relative);
                let bytes = std::fs::read(&file).map_err(|error| KernelError::ModuleFile {
                    path: file.clone(),
                    error,
                })?;
                (bytes.into(), file)
            }
        };
        self.load_module(manifest, &bytes, &origin)
    }

    /// Loads every module of an app directory: each `manifest.json` in the
    /// directory itself or in its immediate subdirectories, in path order.
    pub fn load_app_dir(&mut self, dir: &Path) -> Result<Vec<String>, KernelError> {
        let manifests = find_manifests(dir)?;
        let mut names = Vec::new();
        for manifest in manifests {
            names.push(self.load_manifest_file(&manifest)?.manifest.name.clone());
        }
        Ok(names)
    }

    /// Spawns one process of every loaded module, in load order.
    pub fn spawn_all(&mut self) -> Vec<Pid> {
        let names: Vec<String> = self
            .modules
            .iter()
            .map(|m| m.manifest.name.clone())
            .collect();
        names
            .iter()
            .map(|name| self.spawn(name).expect("module is loaded"))
            .collect()
    }

    /// Spawns a process running the loaded module `name`; it becomes the
    /// process [`lookup`](estalogic_abi::Syscall::Lookup) finds for that name
    /// if none is registered yet.
    pub fn spawn(&mut self, name: &str) -> Option<Pid> {
        let loaded = self
            .modules
            .iter()
            .find(|m| m.manifest.name == name)?
            .clone();
        let level = loaded.manifest.priority.level();
        let mailbox = loaded.manifest.mailbox;
        let receives = loaded.manifest.requires("messaging:receive");
        let process = self
            .shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(true, |pid| {
                Arc::new(Process::new(
                    pid,
                    loaded.manifest.name.as_str().into(),
                    level,
                    Mailbox::new(mailbox.capacity, mailbox.overflow),
                    receives,
                ))
            });
        let pid = process.pid;
        {
            // Validated at load, so every request maps to a capability.
            let now = self.shared.clock.now_nanos();
            let mut engine = self.shared.capabilities();
            for request in &loaded.manifest.capabilities_required {
                if let Ok(capability) = capability_for(request) {
                    let _ = engine.grant(pid, capability, now);
                }
            }
            self.shared.flush_audit(&mut engine);
        }
        let state = self.shared.new_task_state(pid);
        let context = ProcessContext {
            process: process.clone(),
            kernel: self.shared.clone(),
            task: state.clone(),
            limiter: MemoryLimiter::new(loaded.manifest.memory_class.max_bytes()),
        };
        let future = run_process(
            self.engine.clone(),
            loaded,
            context,
            self.policy.checkpoint_fuel,
            !self.deterministic,
        );
        self.pending
            .push(Task::new(process, state, Box::pin(future)));
        Some(pid)
    }

    /// Hits and misses of the compiled-module cache, if one is configured.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(ModuleCache::stats)
    }

    /// Takes the capability audit events recorded so far: every grant,
    /// delegation, export, revocation and denial.
    pub fn take_audit(&self) -> Vec<AuditEvent> {
        self.shared.take_audit()
    }

    /// Runs every spawned process until all have ended (or a shutdown is
    /// requested) and reports how each ended.
    pub fn run(&mut self) -> RunReport {
        let started = std::time::Instant::now();
        let kernel_loop = KernelLoop::new(self.shared.clone(), self.policy);
        for task in self.pending.drain(..) {
            kernel_loop.add(task);
        }
        for listener in &self.exit_listeners {
            kernel_loop.notify_exits(listener.clone());
        }
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = (!self.deterministic).then(|| {
            let engine = self.engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("estalogic-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .expect("spawn the epoch ticker thread")
        });
        let (processes, stats) = kernel_loop.run(self.workers);
        ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = ticker {
            let _ = ticker.join();
        }
        RunReport {
            processes,
            elapsed: started.elapsed(),
            stats,
        }
    }
}

fn find_manifests(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let app_error = |problem: String| KernelError::App {
        path: dir.to_path_buf(),
        problem,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| app_error(format!("cannot read the app directory: {e}")))?;
    let mut manifests = Vec::new();
    let top = dir.join("manifest.json");
    if top.is_file() {
        manifests.push(top);
    }
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    subdirs.sort();
    for subdir in subdirs {
        let manifest = subdir.join("manifest.json");
        if manifest.is_file() {
            manifests.push(manifest);
        }
    }
    if manifests.is_empty() {
        return Err(app_error(
            "no manifest.json in the directory or its subdirectories".to_string(),
        ));
    }
    Ok(manifests)
}

/// The future that is one process: instantiate, run the entry point, and
/// classify how it ended.
async fn run_process(
    engine: Engine,
    loaded: LoadedModule,
    context: ProcessContext,
    checkpoint_fuel: u64,
    backstop: bool,
) -> Outcome {
    let mut store = Store::new(&engine, context);
    store.limiter(|context| &mut context.limiter);
    let configured = store
        .set_fuel(FUEL_BUDGET)
        .and_then(|()| store.fuel_async_yield_interval(Some(checkpoint_fuel)));
    if let Err(error) = configured {
        return Outcome {
            status: ExitStatus::Trapped {
                code: ErrorCode::INTERNAL,
                detail: format!("could not configure fuel: {error:#}"),
            },
            fuel_used: 0,
        };
    }
    if backstop {
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(BACKSTOP_TICKS)));
        store.set_epoch_deadline(BACKSTOP_TICKS);
    }
    let result = call_entry(&mut store, &loaded).await;
    let fuel_used = FUEL_BUDGET - store.get_fuel().unwrap_or(FUEL_BUDGET);
    let status = match result {
        Ok(code) => ExitStatus::Exited(code),
        Err(error) => classify(&error, store.data().limiter.refused()),
    };
    Outcome { status, fuel_used }
}

async fn call_entry(
    store: &mut Store<ProcessContext>,
    loaded: &LoadedModule,
) -> wasmtime::Result<i32> {
    let instance = loaded.pre.instantiate_async(&mut *store).await?;
    let name = loaded.manifest.entry_point.as_str();
    match loaded.entry {
        EntryKind::Unit => {
            let entry = instance.get_typed_func::<(), ()>(&mut *store, name)?;
            entry.call_async(&mut *store, ()).await?;
            Ok(0)
        }
        EntryKind::ExitCode => {
            let entry = instance.get_typed_func::<(), i32>(&mut *store, name)?;
            entry.call_async(&mut *store, ()).await
        }
    }
}

/// Maps a Wasmtime error to how the process ended.
fn classify(error: &wasmtime::Error, memory_refused: bool) -> ExitStatus {
    if let Some(ProcessExit(code)) = error.downcast_ref::<ProcessExit>() {
        return ExitStatus::Exited(*code);
    }
    let detail = first_line(error);
    if memory_refused {
        return ExitStatus::Trapped {
            code: ErrorCode::OUT_OF_MEMORY,
            detail,
        };
    }
    let code = match error.downcast_ref::<Trap>() {
        Some(trap) => trap_code(*trap),
        None => ErrorCode::TRAP_OTHER,
    };
    ExitStatus::Trapped { code, detail }
}

/// The error code of each Wasmtime trap kind.
pub fn trap_code(trap: Trap) -> ErrorCode {
    match trap {
        Trap::UnreachableCodeReached => ErrorCode::TRAP_UNREACHABLE,
        Trap::IntegerDivisionByZero => ErrorCode::TRAP_DIV_BY_ZERO,
        Trap::IntegerOverflow | Trap::BadConversionToInteger => ErrorCode::TRAP_INTEGER_OVERFLOW,
        Trap::MemoryOutOfBounds | Trap::HeapMisaligned | Trap::TableOutOfBounds => {
            ErrorCode::TRAP_OUT_OF_BOUNDS
        }
        Trap::IndirectCallToNull | Trap::BadSignature => ErrorCode::TRAP_INDIRECT_CALL_TYPE,
        Trap::StackOverflow => ErrorCode::TRAP_STACK_OVERFLOW,
        Trap::OutOfFuel | Trap::Interrupt => ErrorCode::TIMEOUT,
        Trap::AllocationTooLarge => ErrorCode::OUT_OF_MEMORY,
        _ => ErrorCode::TRAP_OTHER,
    }
}

fn first_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    text.lines().next().unwrap_or("").trim().to_string()
}
