//! The lifecycle manager: turns loaded modules into running processes —
//! spawning, restarting and reloading — and classifies how a process ended.
//!
//! # Spawning a process
//!
//! 1. Allocate a pid in the process table (the module name is registered
//!    for `lookup` if free) with a mailbox sized by the manifest.
//! 2. Grant one root capability per manifest request.
//! 3. Build the process future: a fresh `wasmtime::Store` with the memory
//!    limiter of the module's class, fuel with a checkpoint every
//!    `checkpoint_fuel` units, the epoch backstop in real mode; instantiate;
//!    call the entry point; classify the result ([`classify`]).
//!
//! The kernel loop calls `ProcessFactory::spawn` again to restart a
//! process and [`ProcessFactory::reload`] to reload a module first.

use crate::core::init::KernelError;
use crate::core::kernel_loop::{ExitStatus, KernelShared, Outcome, ProcessFuture, Task};
use crate::core::message_router::{Delivery, Mailbox, MailboxFull, Message};
use crate::core::process::Process;
use crate::loader::handler::{HandlerCell, run_handler};
use crate::loader::manifest::RestartMode;
use crate::loader::wasm_loader::{self, EntryKind, Lane, LaneModule, LoadedModule, ModuleError};
use crate::syscalls::capabilities::capability_for;
use crate::syscalls::process::YieldOnce;
use crate::syscalls::{Linkers, MemoryLimiter, ProcessContext, ProcessExit};
use estalogic_abi::{ErrorCode, Pid};
use std::cell::Cell;
use std::sync::{Arc, RwLock};
use wasmtime::{Engine, Linker, PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};

/// Fuel given to each process: effectively unlimited; slices, not the
/// budget, bound how long a process runs at a time.
const FUEL_BUDGET: u64 = u64::MAX / 4;
/// Epoch ticks a guest may run between yields, whatever its fuel says.
pub(crate) const BACKSTOP_TICKS: u64 = 10;

/// Everything needed to start processes of the loaded modules.
pub struct ProcessFactory {
    lanes: Arc<[Lane]>,
    shared: Arc<KernelShared>,
    modules: RwLock<Vec<Arc<LoadedModule>>>,
    checkpoint_fuel: u64,
    backstop: bool,
    max_processes: u32,
}

impl ProcessFactory {
    pub(crate) fn new(
        lanes: Arc<[Lane]>,
        shared: Arc<KernelShared>,
        checkpoint_fuel: u64,
        backstop: bool,
        max_processes: u32,
    ) -> Self {
        ProcessFactory {
            lanes,
            shared,
            modules: RwLock::new(Vec::new()),
            checkpoint_fuel,
            backstop,
            max_processes,
        }
    }

    /// Lane 0's engine: the one modules are compiled on.
    pub fn engine(&self) -> &Engine {
        &self.lanes[0].engine
    }

    /// Every lane, one per worker (lane 0 first).
    pub fn lanes(&self) -> &Arc<[Lane]> {
        &self.lanes
    }

    /// True if processes run with the epoch wall-clock backstop.
    pub fn backstop(&self) -> bool {
        self.backstop
    }

    /// Lane 0's linker holding every syscall, for task processes.
    pub fn linker(&self) -> &Linker<ProcessContext> {
        &self.lanes[0].linkers.task
    }

    /// Lane 0's linkers: task and handler processes'.
    pub fn linkers(&self) -> &Linkers {
        &self.lanes[0].linkers
    }

    /// Adds a loaded module.
    pub(crate) fn add(&self, module: LoadedModule) {
        self.modules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(module));
    }

    /// A snapshot of the loaded modules, in load order.
    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The loaded module `name`.
    pub fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.manifest.name == name)
            .cloned()
    }

    /// Reloads module `name`: checks its compiled code again and resolves
    /// its imports anew, and replaces it, so later spawns use the fresh
    /// one. It is not recompiled: the same bytes compile to the same code,
    /// and this runs under the kernel loop's lock, where a module built to
    /// compile slowly would stop every process for as long as it took.
    pub fn reload(&self, name: &str) -> Result<(), ModuleError> {
        let Some(old) = self.module(name) else {
            return Err(ModuleError::Invalid(format!(
                "no module named {name:?} is loaded"
            )));
        };
        let fresh = wasm_loader::reload(&old)?;
        let mut modules = self.modules.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = modules.iter_mut().find(|m| m.manifest.name == name) {
            *slot = Arc::new(fresh);
        }
        Ok(())
    }

    /// Creates a process of module `name`, ready to hand to the kernel loop.
    pub(crate) fn spawn(&self, name: &str) -> Result<Task, KernelError> {
        self.spawn_with(name, &mut Vec::new(), &[], None)
    }

    /// [`ProcessFactory::spawn`] for a restart: the process starts with
    /// `inherited` in its mailbox, queued before the process can be found
    /// (so no sender gets in ahead of them), and takes its module's name
    /// from a holder in `replacing` (predecessors still on their way out).
    /// A message the new mailbox refuses is reported to its sender; if the
    /// spawn fails, `inherited` is left for the caller to report. With
    /// `capabilities_of`, the ended process of a same-state restart, the
    /// new process takes over that one's capability table (the same
    /// handles) instead of its manifest's grants; if the spawn fails, that
    /// table is left for the caller to revoke.
    pub(crate) fn spawn_with(
        &self,
        name: &str,
        inherited: &mut Vec<Message>,
        replacing: &[Pid],
        capabilities_of: Option<Pid>,
    ) -> Result<Task, KernelError> {
        let loaded = self
            .module(name)
            .ok_or_else(|| KernelError::UnknownModule(name.to_string()))?;
        let live = self
            .shared
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if live >= self.max_processes as usize {
            return Err(KernelError::TooManyProcesses {
                module: name.to_string(),
                live,
                limit: self.max_processes,
            });
        }
        let level = loaded.manifest.priority.level();
        let mailbox = loaded.manifest.mailbox;
        let receives = loaded.manifest.requires("messaging:receive");
        let mut refused = Vec::new();
        // Who sent the inherited mail, and to which pid.
        let mut moved: Vec<(Pid, Pid)> = Vec::new();
        let process = self
            .shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert_named(
                true,
                |holder| replacing.contains(&holder),
                |pid| {
                    let mut queue = Mailbox::new(mailbox.capacity, mailbox.overflow);
                    for mut message in inherited.drain(..) {
                        let sent_to = (message.header.source, message.header.target);
                        if sent_to.0 != Pid::KERNEL && !moved.contains(&sent_to) {
                            moved.push(sent_to);
                        }
                        message.header.target = pid;
                        // As the old mailbox held it: one past the capacity
                        // if an answer had taken it there (its sender, the
                        // process being restarted, could not be told).
                        match queue.push_answer(message) {
                            Ok(Delivery::Queued) => {}
                            Ok(Delivery::DroppedNewest(message)) | Err(MailboxFull(message)) => {
                                refused.push(message.header);
                            }
                            Ok(Delivery::QueuedDroppingOldest(dropped)) => {
                                refused.extend(dropped.into_iter().map(|message| message.header));
                            }
                        }
                    }
                    Arc::new(
                        Process::new(
                            pid,
                            loaded.manifest.name.as_str().into(),
                            level,
                            queue,
                            receives,
                        )
                        .with_exit_policy(
                            loaded.manifest.restart == RestartMode::OnFailure,
                            loaded.manifest.supervisor.is_some(),
                        )
                        .as_handler(loaded.entry == EntryKind::Handler),
                    )
                },
            );
        // A sender waiting for an answer from the process this one
        // replaces accepts it from this one, which holds its request now.
        // Recorded before the new process can run (it is not admitted yet).
        for (sender, old) in moved {
            if let Some(sender) = self.shared.process(sender) {
                sender.note_successor(old, process.pid);
            }
        }
        // Reported once the table's lock is released (a report looks the
        // sender up in it).
        for header in &refused {
            self.shared
                .report_failure(header, ErrorCode::MESSAGE_DROPPED);
        }
        let pid = process.pid;
        if let Some(predecessor) = capabilities_of {
            let now = self.shared.clock.now_nanos();
            let mut engine = self.shared.capabilities();
            // Not yet running, so not yet exited: this cannot fail.
            let _ = process.open_capabilities();
            engine.transfer_table(predecessor, pid, now);
            self.shared.flush_audit(&mut engine);
        } else if !loaded.manifest.capabilities_required.is_empty() {
            // Validated at load, so every request maps to a capability.
            let now = self.shared.clock.now_nanos();
            let mut engine = self.shared.capabilities();
            // Not yet running, so not yet exited: this cannot fail.
            let _ = process.open_capabilities();
            for request in &loaded.manifest.capabilities_required {
                if let Ok(capability) = capability_for(request) {
                    let _ = engine.grant(pid, capability, now);
                }
            }
            self.shared.flush_audit(&mut engine);
        }
        let state = self.shared.new_task_state(pid);
        process.set_task(state.clone());
        let context = ProcessContext {
            process: process.clone(),
            kernel: self.shared.clone(),
            task: state.clone(),
            limiter: MemoryLimiter::with_budget(
                loaded.manifest.memory_class.max_bytes(),
                self.shared.memory_budget.clone(),
            ),
            admitted: Default::default(),
            memory: None,
            last_peer: Default::default(),
            hand_off: None,
            syscalls: Default::default(),
            host_work: Default::default(),
            overran: Default::default(),
            host_fuel: Default::default(),
            checkpoint_fuel: self.checkpoint_fuel,
        };
        if loaded.entry == EntryKind::Handler {
            let cell = Arc::new(HandlerCell::default());
            let future: ProcessFuture = Box::pin(run_handler(
                cell.clone(),
                loaded,
                context,
                self.checkpoint_fuel,
                self.backstop,
            ));
            return Ok(Task::new(process, state, future).with_handler(cell));
        }
        let future: ProcessFuture = Box::pin(run_process(
            loaded,
            context,
            self.checkpoint_fuel,
            self.backstop,
        ));
        Ok(Task::new(process, state, future))
    }
}

thread_local! {
    /// The lane of the worker this thread is, while it is one; 0 on any
    /// other thread.
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread lane `index`'s worker until the guard drops.
pub(crate) fn enter_lane(index: usize) -> LaneGuard {
    LaneGuard(LANE.replace(index))
}

/// Restores the thread's previous lane when dropped.
pub(crate) struct LaneGuard(usize);

impl Drop for LaneGuard {
    fn drop(&mut self) {
        LANE.set(self.0);
    }
}

/// The lane a process first run on this thread starts on.
pub(crate) fn current_lane() -> usize {
    LANE.get()
}

/// The lane to try after `attempt` tries (from 0) found a pool full, the
/// first on `first`: every other lane once, then `first` again.
pub(crate) fn lane_after(first: usize, attempt: u32, lanes: usize) -> usize {
    (first + attempt as usize) % lanes.max(1)
}

/// The future that is one process: instantiate, run the entry point, and
/// classify how it ended.
async fn run_process(
    loaded: Arc<LoadedModule>,
    context: ProcessContext,
    checkpoint_fuel: u64,
    backstop: bool,
) -> Outcome {
    let lanes = loaded.lane_count();
    let first = current_lane() % lanes;
    let mut lane = loaded.on_lane(first);
    let mut store = match task_store(lane, context, checkpoint_fuel, backstop) {
        Ok(store) => store,
        Err(outcome) => return outcome,
    };
    // Instantiate, moving to another lane's pool while this one is full
    // (the process limit is shared out among the lanes' pools).
    let mut attempt = 0;
    let mut budget_tries = 0;
    let instance = loop {
        // Boxed for the moment it runs: instantiation's future is about
        // 1 KB, five times the call's, and unboxed it would size the state
        // that every process keeps for its whole life (a parked process
        // would carry it).
        match Box::pin(lane.pre.instantiate_async(&mut store)).await {
            Err(error) if may_retry(attempt, lanes) && is_pool_full(&error) => {
                attempt += 1;
                if lanes > 1 {
                    lane = loaded.on_lane(lane_after(first, attempt, lanes));
                    store = match task_store(lane, store.into_data(), checkpoint_fuel, backstop) {
                        Ok(store) => store,
                        Err(outcome) => return outcome,
                    };
                }
                pool_backoff(attempt, lanes).await;
            }
            Err(error) if budget_tries < BUDGET_RETRIES && is_budget_refusal(&error, &store) => {
                budget_tries += 1;
                store.data_mut().limiter.forget_refusal();
                budget_backoff(budget_tries).await;
            }
            result => break result,
        }
    };
    let result = match instance {
        Ok(instance) => call_entry(&mut store, lane, loaded.entry, instance).await,
        Err(error) => Err(error),
    };
    let fuel_used =
        FUEL_BUDGET - store.get_fuel().unwrap_or(FUEL_BUDGET) + store.data().host_fuel.get();
    let status = match result {
        Ok(code) => ExitStatus::Exited(code),
        Err(error) => classify(&error, store.data().limiter.refused()),
    };
    Outcome { status, fuel_used }
}

/// A task process's store on `lane`'s engine: its limiter, fuel and
/// backstop set.
fn task_store(
    lane: &LaneModule,
    context: ProcessContext,
    checkpoint_fuel: u64,
    backstop: bool,
) -> Result<Store<ProcessContext>, Outcome> {
    // The module's own engine, borrowed: no per-process clone of the
    // engine's shared reference count.
    let mut store = Store::new(lane.pre.module().engine(), context);
    store.limiter(|context| &mut context.limiter);
    let configured = store
        .set_fuel(FUEL_BUDGET)
        .and_then(|()| store.fuel_async_yield_interval(Some(checkpoint_fuel)));
    if let Err(error) = configured {
        return Err(Outcome {
            status: ExitStatus::Trapped {
                code: ErrorCode::INTERNAL,
                detail: format!("could not configure fuel: {error:#}"),
            },
            fuel_used: 0,
        });
    }
    if backstop {
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(BACKSTOP_TICKS)));
        store.set_epoch_deadline(BACKSTOP_TICKS);
    }
    Ok(store)
}

/// Slices of fuel one handler call may use. A call is never preempted, so
/// this bounds how long it holds its worker; a call that needs more traps
/// with `TIMEOUT`.
pub const HANDLER_CALL_SLICES: u64 = 64;

/// The least payload an inbox must hold: the kernel's own notices
/// (`DELIVERY_FAILURE`, `EXIT_NOTIFICATION`) are 16 bytes, and a notice is
/// never dropped for want of room.
pub const MIN_INBOX_CAPACITY: usize = 16;

/// How many times a process tries again to instantiate when the pool has
/// no free slot. The kernel admits at most `max_processes` processes and
/// the pool holds a slot of each kind for every one, so "no slot" means one
/// is on its way back: Wasmtime returns a batch of freed slots
/// (`decommit_batch_size`) after letting go of its queue's lock, and an
/// allocation on another worker that finds the queue already taken fails
/// rather than wait. A try after that worker is done succeeds.
pub(crate) const POOL_RETRIES: u32 = 50;

/// How many times a process tries again to instantiate when its memory
/// does not fit the kernel's memory budget, before it traps with
/// `OUT_OF_MEMORY`: shares may be on their way back (a restart's
/// predecessor, told to stop, holds its memory until its next checkpoint,
/// on another worker). Each try after the second waits 50 µs, so a budget
/// that is simply spent costs a worker about 5 ms once.
pub(crate) const BUDGET_RETRIES: u32 = 100;

/// True if `error` ended an instantiation because the memory budget was
/// spent: not a trap, and the limiter refused (at instantiation only a
/// budget can: a module's memory is checked against its class at load).
pub(crate) fn is_budget_refusal(error: &wasmtime::Error, store: &Store<ProcessContext>) -> bool {
    let limiter = &store.data().limiter;
    limiter.has_budget()
        && limiter.refused()
        && error.downcast_ref::<Trap>().is_none()
        && !is_pool_full(error)
}

/// Before try `attempt` (from 1) of an instantiation the memory budget
/// refused: a checkpoint, so others run (the one giving memory back
/// among them), and from the third on a 50 µs wait.
pub(crate) async fn budget_backoff(attempt: u32) {
    YieldOnce::new().await;
    if attempt > 2 {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

pub(crate) fn is_pool_full(error: &wasmtime::Error) -> bool {
    error.downcast_ref::<PoolConcurrencyLimitError>().is_some()
}

/// True if an instantiation that found its pool full may try again: up to
/// [`POOL_RETRIES`] rounds over the `lanes`.
pub(crate) fn may_retry(attempt: u32, lanes: usize) -> bool {
    attempt < POOL_RETRIES * lanes as u32
}

/// Before try `attempt` (from 1) over `lanes` pools: nothing while other
/// lanes are left to try in this round; after a round that found every
/// pool full, a checkpoint, so other processes run meanwhile, and from the
/// third round on a short sleep, since the slots are a system call away
/// on another worker (at most 50 × 20 µs in all).
pub(crate) async fn pool_backoff(attempt: u32, lanes: usize) {
    let lanes = lanes.max(1) as u32;
    if !attempt.is_multiple_of(lanes) {
        return;
    }
    YieldOnce::new().await;
    if attempt / lanes > 2 {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

async fn call_entry(
    store: &mut Store<ProcessContext>,
    loaded: &LaneModule,
    entry_kind: EntryKind,
    instance: wasmtime::Instance,
) -> wasmtime::Result<i32> {
    store.data_mut().memory = loaded
        .memory_export
        .as_ref()
        .and_then(|export| instance.get_module_export(&mut *store, export))
        .and_then(wasmtime::Extern::into_memory);
    let entry = instance
        .get_module_export(&mut *store, &loaded.entry_export)
        .and_then(wasmtime::Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("the entry point export is missing"))?;
    match entry_kind {
        EntryKind::Unit => {
            entry
                .typed::<(), ()>(&*store)?
                .call_async(&mut *store, ())
                .await?;
            Ok(0)
        }
        EntryKind::ExitCode => {
            entry
                .typed::<(), i32>(&*store)?
                .call_async(&mut *store, ())
                .await
        }
        // Spawned by `run_handler`, never here.
        EntryKind::Handler => Err(wasmtime::Error::msg(
            "a handler's entry point is called once per message",
        )),
    }
}

/// Maps a Wasmtime error to how the process ended: `exit` is an exit, an
/// abort (`unreachable`) after a refused memory growth is `OUT_OF_MEMORY`,
/// and each trap kind has its code ([`trap_code`]).
pub fn classify(error: &wasmtime::Error, memory_refused: bool) -> ExitStatus {
    if let Some(ProcessExit(code)) = error.downcast_ref::<ProcessExit>() {
        return ExitStatus::Exited(*code);
    }
    let detail = first_line(error);
    let trap = error.downcast_ref::<Trap>().copied();
    // A refused growth explains a guest's later abort (its allocator
    // failed and it aborted: `unreachable`, as Rust's allocation-failure
    // handler compiles to), not any other trap: a division by zero after
    // a refusal the guest handled keeps its own code.
    if memory_refused && trap == Some(Trap::UnreachableCodeReached) {
        return ExitStatus::Trapped {
            code: ErrorCode::OUT_OF_MEMORY,
            detail: format!("aborted after a memory growth was refused: {detail}"),
        };
    }
    // Not a trap, with a refusal before it: the instance's own memory did
    // not fit (the kernel's memory budget was spent), so it never started.
    if memory_refused
        && trap.is_none()
        && error.downcast_ref::<PoolConcurrencyLimitError>().is_none()
    {
        return ExitStatus::Trapped {
            code: ErrorCode::OUT_OF_MEMORY,
            detail: format!("its memory does not fit the kernel's memory budget: {detail}"),
        };
    }
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return ExitStatus::Trapped {
            code: ErrorCode::LIMIT_REACHED,
            detail,
        };
    }
    let code = trap.map_or(ErrorCode::TRAP_OTHER, trap_code);
    ExitStatus::Trapped { code, detail }
}

/// The error code of each Wasmtime trap kind.
///
/// `INDIRECT_CALL_TYPE` is every call that finds no function of the right
/// type: `call_indirect` (or `return_call_indirect`) of a null element or
/// of one with another signature, and `call_ref` (or `return_call_ref`)
/// of a null function reference (Wasmtime's `NullReference`, which with
/// the GC proposal off is also what `ref.as_non_null` of a null raises).
pub fn trap_code(trap: Trap) -> ErrorCode {
    match trap {
        Trap::UnreachableCodeReached => ErrorCode::TRAP_UNREACHABLE,
        Trap::IntegerDivisionByZero => ErrorCode::TRAP_DIV_BY_ZERO,
        Trap::IntegerOverflow | Trap::BadConversionToInteger => ErrorCode::TRAP_INTEGER_OVERFLOW,
        Trap::MemoryOutOfBounds | Trap::HeapMisaligned | Trap::TableOutOfBounds => {
            ErrorCode::TRAP_OUT_OF_BOUNDS
        }
        Trap::IndirectCallToNull | Trap::BadSignature | Trap::NullReference => {
            ErrorCode::TRAP_INDIRECT_CALL_TYPE
        }
        Trap::StackOverflow => ErrorCode::TRAP_STACK_OVERFLOW,
        Trap::OutOfFuel | Trap::Interrupt => ErrorCode::TIMEOUT,
        Trap::AllocationTooLarge => ErrorCode::OUT_OF_MEMORY,
        _ => ErrorCode::TRAP_OTHER,
    }
}

/// A one-line description: the trap's own message when there is one
/// (Wasmtime's first line is only "error while executing at wasm
/// backtrace:"), else the first line of the error chain.
fn first_line(error: &wasmtime::Error) -> String {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return trap.to_string();
    }
    let text = format!("{error:#}");
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.ends_with("backtrace:"))
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trapped(trap: Trap, memory_refused: bool) -> ErrorCode {
        match classify(&wasmtime::Error::new(trap), memory_refused) {
            ExitStatus::Trapped { code, .. } => code,
            other => panic!("{trap:?} classified as {other:?}"),
        }
    }

    #[test]
    fn a_refused_growth_explains_an_abort_but_not_a_budget_stop() {
        assert_eq!(
            trapped(Trap::UnreachableCodeReached, false),
            ErrorCode::TRAP_UNREACHABLE
        );
        assert_eq!(
            trapped(Trap::UnreachableCodeReached, true),
            ErrorCode::OUT_OF_MEMORY
        );
        assert_eq!(trapped(Trap::OutOfFuel, false), ErrorCode::TIMEOUT);
        assert_eq!(trapped(Trap::OutOfFuel, true), ErrorCode::TIMEOUT);
        assert_eq!(trapped(Trap::Interrupt, true), ErrorCode::TIMEOUT);
        assert_eq!(
            classify(&wasmtime::Error::new(ProcessExit(7)), true),
            ExitStatus::Exited(7)
        );
        // Any other trap after a refusal (one the guest handled) keeps its
        // own code: it was OUT_OF_MEMORY, its detail saying otherwise.
        assert_eq!(
            trapped(Trap::IntegerDivisionByZero, true),
            ErrorCode::TRAP_DIV_BY_ZERO
        );
        assert_eq!(
            trapped(Trap::MemoryOutOfBounds, true),
            ErrorCode::TRAP_OUT_OF_BOUNDS
        );
    }

    #[test]
    fn every_call_to_no_function_of_its_type_is_an_indirect_call_fault() {
        // A null table element, a wrong signature, and a `call_ref` of a
        // null function reference: one fault, one code.
        for trap in [
            Trap::IndirectCallToNull,
            Trap::BadSignature,
            Trap::NullReference,
        ] {
            assert_eq!(
                trap_code(trap),
                ErrorCode::TRAP_INDIRECT_CALL_TYPE,
                "{trap:?}"
            );
            assert_eq!(
                trapped(trap, false),
                ErrorCode::TRAP_INDIRECT_CALL_TYPE,
                "{trap:?}"
            );
        }
        assert_eq!(trap_code(Trap::CastFailure), ErrorCode::TRAP_OTHER);
    }
}
