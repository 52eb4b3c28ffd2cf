//! The kernel loop: the kernel's own executor, which runs every process on
//! N worker threads under the scheduler's policy (not tokio's). The state it
//! shares with syscalls (process table, clock, timers, the wake inbox) is in
//! [`kernel_shared`](crate::core::kernel_shared).
//!
//! # How a process runs
//!
//! A process is one future: instantiate the module in its own
//! `wasmtime::Store`, then call the entry point with `call_async`. Wasmtime
//! runs the guest on a fiber and the future returns `Pending` when:
//!
//! - the guest used up a checkpoint's worth of fuel (it woke itself first),
//!   or the wall-clock epoch backstop fired (real mode only);
//! - the guest called `yield_now` (woke itself and set `yield_requested`);
//! - the guest waits in `receive` (it did not wake itself: a sender or a
//!   timer will).
//!
//! # Task states and wakeups
//!
//! Each task has an atomic state (`IDLE`, `QUEUED`, `RUNNING`, `NOTIFIED`),
//! which wakers move as [`kernel_shared`][task-states] describes. After a
//! poll returns `Pending` the loop moves `RUNNING → IDLE`; if that fails the
//! task was notified and is still runnable: `yield_requested` sends it to the
//! back of its queue, otherwise the scheduler's [`Scheduler::checkpoint`]
//! decides (continue, preempt, rotate).
//!
//! [task-states]: crate::core::kernel_shared#task-states-and-wakeups
//!
//! # Workers and locking
//!
//! 1. One mutex guards the scheduler and the parked tasks (`Core`). A worker
//!    takes it to pick a task, releases it while the guest runs, and takes
//!    it again at every `Pending` (a checkpoint or a block) and at an
//!    exit. An exit that needs no supervision releases the process's
//!    capabilities, mailbox and pid before taking it, so the lock covers
//!    only the scheduler's bookkeeping and the next dispatch.
//! 2. The `RUNNING → IDLE` transition and `Scheduler::blocked` happen under
//!    that lock, and the inbox is drained into the scheduler only under it,
//!    so a wake can never be applied before the block it answers.
//! 3. Wakers never take the core lock: they push to the inbox (its own
//!    small lock), except that a worker keeps the wakes its own turn makes
//!    on its thread, with no lock, and drains them with the inbox's
//!    whenever it collects (at the turn's every checkpoint, block and
//!    end, and in a handoff or direct delivery), so another worker sees
//!    them from the waker's next checkpoint on (see
//!    [`kernel_shared`](crate::core::kernel_shared#wakes-made-during-a-turn));
//!    a worker that finds more ready work than it can run
//!    (when it dispatches, and at its running process's checkpoints)
//!    signals an idle worker, or starts another if none is idle or on its
//!    way and fewer than the kernel's workers take part (a run starts
//!    with no more workers than processes). A worker about to sleep notes the inbox's
//!    notification count under the core lock, where notifiers decide, and
//!    does not sleep if it changed by the time it waits.
//! 4. Deterministic mode runs one worker with the virtual clock, which moves
//!    by `checkpoint_ns` at every checkpoint and [`YIELD_NS`] at every
//!    yield, and jumps to the next timer when nothing is ready.
//!
//! # Direct handoff
//!
//! A process that sends to a waiting receiver and then waits itself (the
//! request/response and ping-pong pattern) would cost two trips through
//! the scheduler and four fiber switches per round. Instead, when its
//! receive finds nothing, it hands the CPU straight to the process its
//! last send woke (`hand_off`), on the same worker, inside its own
//! receive call:
//!
//! 1. Only if that process is the only one ready: the scheduler would pick
//!    it next anyway, so policy is unchanged. Anything else ready, a
//!    shutdown, or a handoff already in progress on this worker (handoffs
//!    never nest) means no handoff; the waiter suspends as usual.
//! 2. The receiver is dispatched exactly as [`Scheduler::next`] would, and
//!    runs one normal turn (checkpoints, preemption, kill and shutdown
//!    checks included); its CPU time is its own, and is taken off the
//!    lender's turn and runnable time ([`Scheduler::lend`]). If the turn
//!    ends the process, reaping it (`finish`: revocation, supervision, a
//!    restart that may reload a module) is deferred to the worker's own
//!    stack, at the lender's next stop or the loop's next turn: the lent
//!    turn runs on the lender's fiber, which has little room for host
//!    frames.
//! 3. Wakes from the lent turn are collected at once, and an idle worker is
//!    signalled if any process is ready. If one is, the waiter goes to the
//!    back of its run queue (its answer waits in its mailbox), as it would
//!    have been queued behind them had it waited; otherwise it looks at its
//!    mailbox again and, if the answer is there, returns without ever
//!    suspending.
//!
//! # Ending
//!
//! The loop ends when no process is left. If processes remain but none is
//! ready or running, no timer is armed and nothing outside can wake them,
//! they are stopped with `DEADLOCKED`, one at a time in pid order: a
//! stopped process's mail is failed back, and the notice may be the answer
//! another one waits for, which then runs instead of being stopped. A
//! shutdown request stops every process with `SHUTDOWN` (a running one at
//! its next checkpoint).

use crate::core::init::KernelError;
use crate::core::kernel_shared::{IDLE, QUEUED, RUNNING};
use crate::core::lifecycle::{KernelEvent, LoopState, LoopStats as EventCounts};
use crate::core::message_router::Message;
use crate::core::process::{Process, ProcessState};
use crate::core::routing::{close_mailbox, take_all};
use crate::core::scheduler::{Scheduler, SlicePolicy, Verdict};
use crate::core::supervision::{Failure, RestartAction, RestartPolicy};
use crate::loader::handler::{HandlerCell, HandlerState, cannot_take};
use crate::loader::lifecycle_manager::{self, ProcessFactory};
use crate::loader::manifest::{Manifest, RestartMode};
use estalogic_abi::MessageType;
use estalogic_abi::messages::ExitNotice;
use estalogic_abi::{ErrorCode, Pid, Priority, Syscall};
use parking_lot::Mutex;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub(crate) use crate::core::kernel_shared::TaskState;
pub use crate::core::kernel_shared::{KernelShared, TraceRecord};

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Returned from its entry point or called `exit`, with this code.
    Exited(i32),
    /// Trapped; `code` is the trap's error code (4xxx, or 3001/3002).
    Trapped {
        /// The trap code.
        code: ErrorCode,
        /// Wasmtime's description of the trap.
        detail: String,
    },
    /// Stopped by the kernel (`SHUTDOWN` or `DEADLOCKED`).
    Stopped(ErrorCode),
}

impl ExitStatus {
    /// True for a trap.
    pub fn is_trap(&self) -> bool {
        matches!(self, ExitStatus::Trapped { .. })
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Trapped { code, detail } => write!(f, "trapped: {code}: {detail}"),
            ExitStatus::Stopped(code) if *code == ErrorCode::DEADLOCKED => {
                write!(f, "stopped: waiting for a message no process could send")
            }
            ExitStatus::Stopped(code) if *code == ErrorCode::SHUTDOWN => {
                write!(f, "stopped at shutdown")
            }
            ExitStatus::Stopped(code) => write!(f, "stopped: {code}"),
        }
    }
}

/// What a process future yields when it finishes.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) fuel_used: u64,
}

/// The final record of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessReport {
    /// Its pid.
    pub pid: Pid,
    /// The module it ran.
    pub module: String,
    /// Its scheduling level.
    pub priority: Priority,
    /// How it ended.
    pub status: ExitStatus,
    /// Messages it sent.
    pub sent: u64,
    /// Messages it received.
    pub received: u64,
    /// Sends that failed at once.
    pub send_failures: u64,
    /// Times it blocked sending to a full `BlockSender` mailbox.
    pub blocked_sends: u64,
    /// Messages it sent that were dropped or undeliverable later (each
    /// reported to it with a `DELIVERY_FAILURE` notice).
    pub delivery_failures: u64,
    /// Messages left in its mailbox or dropped by its overflow policy.
    pub undelivered: u64,
    /// Fuel it consumed. Exact for processes that returned, exited or
    /// trapped on an explicit trap (`unreachable`, a bad indirect call, a
    /// stack overflow); a lower bound for stopped task processes (counted
    /// at checkpoints) and for a trap raised by a faulting instruction (an
    /// out-of-bounds access, a division by zero: Wasmtime loses the fuel
    /// spent since the last checkpoint, or in a handler's call).
    pub fuel_used: u64,
    /// Times a higher-level or starving process took the CPU from it.
    pub preemptions: u64,
    /// Times it went to the back of its run queue: slice used up or
    /// `yield_now`.
    pub requeues: u64,
    /// Nanoseconds on a CPU (kernel clock: virtual in deterministic mode).
    pub cpu_ns: u64,
    /// The longest it waited in a run queue, in nanoseconds.
    pub max_wait_ns: u64,
}

pub(crate) type ProcessFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A process as the kernel loop holds it.
pub(crate) struct Task {
    pub(crate) process: Arc<Process>,
    pub(crate) state: Arc<TaskState>,
    pub(crate) future: ProcessFuture,
    /// A handler process's instance, shared with its future (see
    /// `loader::handler`): what a direct delivery calls.
    handler: Option<Arc<HandlerCell>>,
    waker: Waker,
    checkpoints: u64,
}

impl Task {
    pub(crate) fn new(process: Arc<Process>, state: Arc<TaskState>, future: ProcessFuture) -> Self {
        Task {
            waker: Waker::from(state.clone()),
            process,
            state,
            future,
            handler: None,
            checkpoints: 0,
        }
    }

    /// The same task, of a handler process whose instance `cell` holds.
    pub(crate) fn with_handler(mut self, cell: Arc<HandlerCell>) -> Self {
        self.handler = Some(cell);
        self
    }
}

/// Scheduler-wide figures for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopStats {
    /// Counts of kernel events (spawns, exits, messages, checked syscalls,
    /// scheduler ticks, shutdown requests).
    pub events: EventCounts,
    /// The loop's final state (`Stopped` after a normal run).
    pub state: LoopState,
    /// `min(actual_cpu / expected_cpu)` over all processes (see
    /// [`Scheduler::fairness`]); `None` if no CPU time was accounted.
    pub fairness: Option<f64>,
    /// Checkpoints reached by all guests.
    pub checkpoints: u64,
    /// Turns run by direct handoff from a waiting sender (see the
    /// [module docs](self#direct-handoff)).
    pub handoffs: u64,
    /// Worker threads used.
    pub workers: usize,
    /// Exit reports not kept because more than [`MAX_REPORTS`] processes
    /// ended in the run (listeners still received every one).
    pub reports_dropped: u64,
    /// Restart decisions not kept because more than
    /// [`MAX_RESTART_RECORDS`] were made in the run.
    pub restarts_dropped: u64,
    /// Exit notifications that found no live process of the supervisor
    /// their manifest names (it never started, ended, or was between a
    /// restart's stop and start), so no one received them.
    pub notices_unsupervised: u64,
}

/// One decision of the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartRecord {
    /// The module whose process failed.
    pub module: String,
    /// The process that failed.
    pub pid: Pid,
    /// Its trap code.
    pub code: ErrorCode,
    /// What the restart policy decided.
    pub action: RestartAction,
    /// The new process of the module, if one was started.
    pub new_pid: Option<Pid>,
    /// Kernel clock at the decision.
    pub at: u64,
}

/// Virtual time a `yield_now` stands for in deterministic mode (about what
/// a yield costs on the real clock): a process yielding in a loop moves the
/// clock on, so the processes it keeps waiting age, get their minimum
/// service and see their timers fire.
pub const YIELD_NS: u64 = 1_000;

/// Exit reports a run keeps (the most recent; older ones are counted in
/// [`LoopStats::reports_dropped`]), so a kernel that runs for months does
/// not grow without bound.
pub const MAX_REPORTS: usize = 100_000;

/// Restart decisions a run keeps (the most recent; older ones are counted
/// in [`LoopStats::restarts_dropped`]), for the same reason: a module that
/// fails twice a minute for ever never climbs the ladder.
pub const MAX_RESTART_RECORDS: usize = 100_000;

thread_local! {
    /// The kernel loop this thread is a worker of, while it is one.
    static WORKER: Cell<*const KernelLoop> = const { Cell::new(std::ptr::null()) };
    /// True while this worker runs a handed-off turn (handoffs never nest).
    static HANDING_OFF: Cell<bool> = const { Cell::new(false) };
    /// The receiver of this worker's last direct delivery, still claimed
    /// (see `KernelLoop::deliver_direct`); never kept past the turn of the
    /// process that lent it its time.
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
    /// Set when a direct delivery's receiver ended and waits in the
    /// deferred reaps; cleared when they are reaped.
    static REAP_DUE: Cell<bool> = const { Cell::new(false) };
    /// While a directly delivered call runs: the process that lent its
    /// turn (the sender, inside its send).
    static LENDER: Cell<Option<Pid>> = const { Cell::new(None) };
    /// The answer a directly delivered call sent its lender, held for the
    /// lender (its pid) beside its mailbox (see [`hold_for_lender`]).
    static HELD: Cell<Option<(Pid, Message)>> = const { Cell::new(None) };
}

/// The process whose send the call running here was delivered in, if any.
pub(crate) fn lender() -> Option<Pid> {
    LENDER.get()
}

/// Holds `message`, which the call running here sends to its lender
/// (`lender`), as the lender's next message, beside its mailbox: the
/// lender waits in its send on this thread, and takes it with its next
/// wait ([`take_held`]) unless it looks at its mailbox another way first
/// ([`put_back_held`]). Hands it back if one is held already (the later
/// one then goes through the mailbox, after it).
pub(crate) fn hold_for_lender(lender: Pid, message: Message) -> Result<(), Message> {
    match HELD.take() {
        None => {
            HELD.set(Some((lender, message)));
            Ok(())
        }
        held @ Some(_) => {
            HELD.set(held);
            Err(message)
        }
    }
}

/// The message held for `pid`, if any, taken.
pub(crate) fn take_held(pid: Pid) -> Option<Message> {
    match HELD.take() {
        Some((owner, message)) if owner == pid => Some(message),
        other => {
            HELD.set(other);
            None
        }
    }
}

/// Puts the message held for `process` (if any) back into its mailbox,
/// ahead of what came since: before it looks there another way, passes a
/// checkpoint, or ends, so that nothing is lost or reordered.
pub(crate) fn put_back_held(kernel: &KernelShared, process: &Process) {
    if let Some(message) = take_held(process.pid) {
        crate::core::routing::put_back(kernel, process, message);
    }
}

/// Marks a directly delivered call in progress on this thread, and whose
/// turn it is lent from.
struct Lent;

impl Lent {
    fn enter(lender: Pid) -> Self {
        LENDER.set(Some(lender));
        Lent
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        LENDER.set(None);
    }
}

/// A handler kept claimed after a direct delivery, for its sender's next
/// one: it stays running in the scheduler's view, out of the table, and
/// is parked again (or queued) when the sender's turn ends, the sender
/// sends elsewhere, or something else needs the worker's attention.
struct Kept {
    task: Task,
    /// The process whose turn it runs in.
    lender: Pid,
    /// When it was claimed (its scheduler turn's start).
    since: u64,
    /// Time its calls took since: its own CPU time, lent by the lender.
    busy: u64,
    /// Deliveries made to it while kept (each one a lent turn).
    deliveries: u64,
}

/// Registers the current thread as a worker of a loop for as long as it
/// lives (restoring what was there before, even on unwind).
struct WorkerGuard(*const KernelLoop);

impl WorkerGuard {
    fn enter(kernel_loop: &KernelLoop) -> Self {
        WorkerGuard(WORKER.replace(kernel_loop))
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        WORKER.set(self.0);
    }
}

/// A value alone in its cache lines (two, for the adjacent-line
/// prefetcher), so that writes to its neighbours do not take it from the
/// workers that read it.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The core lock held. Releasing it publishes the scheduler's count of
/// queued processes in `KernelLoop::queued`, so that a handoff can see
/// without the lock that others are ready and it will not be taken.
struct CoreGuard<'a> {
    core: parking_lot::MutexGuard<'a, Core>,
    queued: &'a AtomicUsize,
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        // Written only when it changed: the other workers read it at every
        // send (see `hand_off`), and a write takes the line from them.
        let queued = self.core.scheduler.queued();
        if self.queued.load(Ordering::Relaxed) != queued {
            self.queued.store(queued, Ordering::Relaxed);
        }
    }
}

/// Abandons the run when its worker unwinds from a panic (a kernel bug, or
/// one in the embedder's restart policy or tracing subscriber): the other
/// workers would otherwise wait for ever for the process the panicking one
/// had taken.
struct PanicWatch<'a>(&'a KernelLoop);

impl Drop for PanicWatch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abandoned.store(true, Ordering::Relaxed);
            self.0.shared.inbox.notify();
        }
    }
}

/// Marks a handed-off turn in progress on this thread.
struct HandingOff;

impl HandingOff {
    fn enter() -> Self {
        HANDING_OFF.set(true);
        HandingOff
    }
}

impl Drop for HandingOff {
    fn drop(&mut self) {
        HANDING_OFF.set(false);
    }
}

/// What a direct handoff did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandOff {
    /// The receiver did not run (not the only ready process, a handoff in
    /// progress, a shutdown, or not on a worker of this kernel).
    NotTaken,
    /// The receiver ran a turn. `others_ready`: other processes became
    /// ready meanwhile, so the sender should go back to its run queue
    /// rather than go on (it would have been queued after them had it
    /// waited).
    Ran {
        /// Other processes are ready now.
        others_ready: bool,
    },
}

/// Called by a process `from` of `kernel` whose receive found nothing:
/// runs `to` (which `from` just woke) here and now if the policy allows
/// (see the [module docs](self#direct-handoff)).
///
/// `on_fiber`: the caller runs on its own fiber (a task process's wait); a
/// handler process's turn is then never lent, because a handler's call runs
/// on whatever stack polls it and a fiber has no room for it.
pub(crate) fn hand_off(kernel: &Arc<KernelShared>, from: Pid, to: Pid, on_fiber: bool) -> HandOff {
    if HANDING_OFF.get() {
        return HandOff::NotTaken;
    }
    let worker = WORKER.get();
    if worker.is_null() {
        return HandOff::NotTaken;
    }
    // SAFETY: `WORKER` is non-null only inside `KernelLoop::work` on this
    // thread (its `WorkerGuard` restores the previous value when `work`
    // returns or unwinds), and `work` borrows the loop for that whole time.
    // A syscall of a process runs inside a poll made by `work`, further up
    // this very stack, so the loop is alive and borrowed shared.
    let kernel_loop = unsafe { &*worker };
    if !Arc::ptr_eq(&kernel_loop.shared, kernel) {
        return HandOff::NotTaken;
    }
    kernel_loop.hand_off(from, to, on_fiber)
}

/// Called by a handler process `from` sending to the handler `to`: if `to`
/// waits idle for its next message and nothing else is ready to run,
/// `deliver` runs its call with the message here and now (see
/// `loader::handler`), and `to`'s turn is lent by `from`. `deliver` gets the
/// receiver's instance and returns `None` if it did not deliver (the
/// message does not fit its inbox), or what the call returned. Returns
/// false if nothing was delivered: the caller then posts the message as
/// usual.
pub(crate) fn deliver_direct(
    kernel: &Arc<KernelShared>,
    from: Pid,
    to: Pid,
    deliver: impl FnOnce(&mut HandlerState) -> Option<wasmtime::Result<i32>>,
) -> bool {
    if HANDING_OFF.get() {
        return false;
    }
    let worker = WORKER.get();
    if worker.is_null() {
        return false;
    }
    // SAFETY: as in `hand_off`: `WORKER` is non-null only while `work`
    // borrows the loop on this thread, further up this stack.
    let kernel_loop = unsafe { &*worker };
    if !Arc::ptr_eq(&kernel_loop.shared, kernel) {
        return false;
    }
    kernel_loop.deliver_direct(from, to, deliver)
}

/// True if this thread could deliver to `to` directly now
/// ([`deliver_direct`]): it is a kernel worker, not inside a lent turn, and
/// either it keeps a receiver claimed (`to`, or one the attempt hands back
/// first) or `to` is parked idle and the lock-free hint (see
/// `KernelLoop::hand_off`) says nothing else is ready. A cheap look before
/// the checks a delivery makes (under load, most sends fail it and go
/// straight to the mailbox); `KernelLoop::deliver_direct` decides.
pub(crate) fn may_deliver_direct(to: &Process) -> bool {
    if HANDING_OFF.get() {
        return false;
    }
    let worker = WORKER.get();
    if worker.is_null() {
        return false;
    }
    if KEPT.with_borrow(Option::is_some) {
        return keeps(to.pid) || to.looks_idle();
    }
    // SAFETY: as in `hand_off`: `WORKER` is non-null only while `work`
    // borrows the loop on this thread, further up this stack.
    let kernel_loop = unsafe { &*worker };
    to.looks_idle()
        && kernel_loop.queued.load(Ordering::Relaxed) + kernel_loop.shared.inbox.len() == 0
}

/// True if the process whose run state is `task` is to stop (a shutdown,
/// or a restart that replaces it): a handler then takes no further message
/// and passes a checkpoint, where `run_turn` stops it.
pub(crate) fn stop_due(kernel: &KernelShared, task: &TaskState) -> bool {
    kernel.shutdown_requested() || task.kill.load(Ordering::Acquire)
}

/// True if a direct delivery on this worker ended its receiver, whose reap
/// waits for the end of the current turn (see `KernelLoop::end_claim`).
pub(crate) fn reap_due() -> bool {
    REAP_DUE.get()
}

/// True if this worker keeps `pid` claimed from a direct delivery (see
/// [`Kept`]): it is not idle, but takes its sender's next message the
/// same way.
pub(crate) fn keeps(pid: Pid) -> bool {
    KEPT.with_borrow(|kept| {
        kept.as_ref()
            .is_some_and(|kept| kept.task.process.pid == pid)
    })
}

/// Arms `process`'s wait again if its mailbox is empty (see
/// `MailboxSlot::rearm`); false if mail is there (or it never waited).
fn rearm_if_empty(process: &Process) -> bool {
    let mut slot = process.lock_mailbox();
    slot.mailbox.is_empty() && slot.rearm()
}

/// How a direct delivery's lent turn ended.
enum DirectEnd {
    /// Back to waiting for its next message.
    Park,
    /// Back to waiting, once past the checkpoints its call made due.
    Checkpoints(u64),
    /// Its call ended the process (a trap, `exit`, or a non-zero return).
    Finished(Outcome),
    /// Stopped at a checkpoint or as it went back to waiting.
    Stop(ErrorCode),
}

/// True if an ended process's exit needs its manifest: a trap with
/// `restart: on_failure` (the restart policy decides), or a supervisor to
/// notify.
fn needs_supervision(process: &Process, outcome: &Outcome) -> bool {
    let trapped = matches!(outcome.status, ExitStatus::Trapped { .. });
    (trapped && process.restart_on_failure) || process.supervised
}

/// Tells the restart policy that a process of a module it answers for
/// (`restart: on_failure`) ended normally: it exited with code 0.
fn heard_success(core: &mut Core, process: &Process, status: &ExitStatus, now: u64) {
    if process.restart_on_failure && *status == ExitStatus::Exited(0) {
        core.restart_policy.on_success(&process.module, now);
    }
}

/// Counts an exit, tells the listeners and keeps the report (the most
/// recent [`MAX_REPORTS`]).
fn record_exit(core: &mut Core, report: ProcessReport) {
    core.events.exited += 1;
    core.events.messages += report.sent;
    core.listeners
        .retain(|listener| listener.send(report.clone()).is_ok());
    if core.reports.len() >= MAX_REPORTS {
        core.reports.pop_front();
        core.reports_dropped += 1;
    }
    core.reports.push_back(report);
}

impl ProcessReport {
    /// Fills in the figures of the scheduler's account.
    fn add_account(&mut self, account: &crate::core::scheduler::Account) {
        self.preemptions = account.preemptions;
        self.requeues = account.rotations;
        self.cpu_ns = account.cpu_ns;
        self.max_wait_ns = account.max_wait_ns;
    }
}

/// A live task's pid, process record (for its module name) and scheduling
/// state. Per-process references only: nothing every process shares.
type LiveTask = (Pid, Arc<Process>, Arc<TaskState>);

/// Everything behind the core lock.
struct Core {
    scheduler: Scheduler,
    /// Parked tasks by pid index; `None` while running or after exit.
    tasks: Vec<Option<Task>>,
    live: usize,
    /// The most recent [`MAX_REPORTS`] exit reports.
    reports: std::collections::VecDeque<ProcessReport>,
    /// Reports dropped to keep `reports` bounded.
    reports_dropped: u64,
    /// See [`LoopStats::notices_unsupervised`].
    notices_unsupervised: u64,
    /// See [`LoopStats::restarts_dropped`].
    restarts_dropped: u64,
    listeners: Vec<std::sync::mpsc::Sender<ProcessReport>>,
    woken: Vec<Pid>,
    checkpoints: u64,
    handoffs: u64,
    /// Handed-off turns that ended, waiting to be reaped on a worker's own
    /// stack.
    deferred: Vec<(Task, Outcome)>,
    restart_policy: Box<dyn RestartPolicy>,
    /// The most recent [`MAX_RESTART_RECORDS`] restart decisions.
    restarts: std::collections::VecDeque<RestartRecord>,
    state: LoopState,
    events: EventCounts,
    idle_workers: usize,
    /// Workers that took part in the run so far (this thread included),
    /// and how many may: the others are started on demand (see `work`).
    workers_started: usize,
    workers_allowed: usize,
    /// Workers started that have not yet taken the core lock: neither idle
    /// nor running, but about to take ready work.
    workers_arriving: usize,
    /// The clock as read at the end of the last turn, reused by the next
    /// loop iteration on the same worker.
    fresh_now: Option<u64>,
    /// Every live task's scheduling state by pid index, parked or running,
    /// so a running task can be told to stop.
    states: Vec<Option<LiveTask>>,
    /// Restarts that found the pool full while processes they replace were
    /// still on their way out; retried as those leave.
    pending_respawns: Vec<PendingRespawn>,
    /// Modules whose failure this run was answered `GiveUp`: final (see
    /// `supervision`), so no other module's supervisor or system restart
    /// starts them again.
    given_up: Vec<String>,
    /// True while a restart decision is carried out: the exits of the
    /// processes it stops start no waiting restart (it would start a
    /// module the decision itself is about to start).
    restarting: bool,
}

/// A module a restart could not start yet because the process limit was
/// reached (a process it replaces, told to stop, holds its slot until it
/// leaves; or restarts decided at once on two workers filled the table).
/// It is tried again whenever a process leaves, in the order decided, and
/// a later restart that starts the same module supersedes it.
struct PendingRespawn {
    module: String,
    /// Every process the restart replaces (the new one takes the module's
    /// name from these).
    replacing: Vec<Pid>,
    /// Processes of the module still to start (a system or supervisor
    /// restart starts one per live process, so a module may wait for
    /// several).
    count: usize,
}

enum TurnEnd {
    Finished(Outcome),
    Blocked,
    Requeued,
    Stop(ErrorCode),
}

/// The executor: owns every task and runs them to completion.
pub(crate) struct KernelLoop {
    shared: Arc<KernelShared>,
    factory: Arc<ProcessFactory>,
    checkpoint_ns: u64,
    checkpoint_fuel: u64,
    core: Mutex<Core>,
    /// The scheduler's count of queued processes as of the core lock's
    /// last release (see [`CoreGuard`]): a hint read without the lock.
    queued: CachePadded<AtomicUsize>,
    /// A worker panicked: the others leave at their next pass through the
    /// loop, so the run's scope ends and resumes the panic on its caller.
    abandoned: AtomicBool,
}

impl KernelLoop {
    pub(crate) fn new(
        shared: Arc<KernelShared>,
        policy: SlicePolicy,
        factory: Arc<ProcessFactory>,
        restart_policy: Box<dyn RestartPolicy>,
    ) -> Self {
        KernelLoop {
            shared,
            factory,
            checkpoint_ns: policy.checkpoint_ns(),
            checkpoint_fuel: policy.checkpoint_fuel,
            abandoned: AtomicBool::new(false),
            queued: CachePadded(AtomicUsize::new(0)),
            core: Mutex::new(Core {
                scheduler: Scheduler::new(policy),
                tasks: Vec::new(),
                live: 0,
                reports: std::collections::VecDeque::new(),
                reports_dropped: 0,
                notices_unsupervised: 0,
                restarts_dropped: 0,
                listeners: Vec::new(),
                woken: Vec::new(),
                checkpoints: 0,
                handoffs: 0,
                deferred: Vec::new(),
                restart_policy,
                restarts: std::collections::VecDeque::new(),
                state: LoopState::Initializing,
                events: EventCounts::default(),
                idle_workers: 0,
                workers_started: 1,
                workers_allowed: 1,
                workers_arriving: 0,
                fresh_now: None,
                states: Vec::new(),
                pending_respawns: Vec::new(),
                given_up: Vec::new(),
                restarting: false,
            }),
        }
    }

    fn lock(&self) -> CoreGuard<'_> {
        CoreGuard {
            core: self.core.lock(),
            queued: &self.queued,
        }
    }

    /// Adds spawned tasks, ready at once, all under one hold of the core
    /// lock.
    fn add_all(&self, core: &mut Core, tasks: impl ExactSizeIterator<Item = Task>) {
        // Room for the whole batch at once: a first run of many processes
        // would otherwise grow the scheduler's map and the task tables
        // step by step, rehashing and moving what they hold.
        core.scheduler.reserve(tasks.len());
        let reports = core.reports.len();
        core.reports
            .reserve(tasks.len().min(MAX_REPORTS.saturating_sub(reports)));
        // One clock read for the batch: they are all ready from now.
        let now = self.shared.clock.now_nanos();
        for task in tasks {
            self.admit_at(core, task, now);
        }
    }

    fn admit(&self, core: &mut Core, task: Task) {
        let now = self.shared.clock.now_nanos();
        self.admit_at(core, task, now);
    }

    /// Adds a spawned task, ready at `now`.
    fn admit_at(&self, core: &mut Core, task: Task, now: u64) {
        let pid = task.process.pid;
        let index = pid.index() as usize;
        if core.tasks.len() <= index {
            core.tasks.resize_with(index + 1, || None);
            core.states.resize_with(index + 1, || None);
        }
        core.states[index] = Some((pid, task.process.clone(), task.state.clone()));
        // Counted directly: an event value would allocate the module name.
        core.events.spawned += 1;
        core.scheduler.admit(pid, task.process.priority, now);
        core.tasks[index] = Some(task);
        core.live += 1;
    }

    /// Sends a copy of every process report, as the process ends, to `to`.
    pub(crate) fn notify_exits(&self, to: std::sync::mpsc::Sender<ProcessReport>) {
        self.lock().listeners.push(to);
    }

    /// Fires due timers and moves woken tasks into the scheduler.
    fn collect(&self, core: &mut Core, now: u64) {
        self.shared.fire_timers(now);
        let mut woken = std::mem::take(&mut core.woken);
        self.shared.inbox.drain_into(&mut woken);
        for pid in woken.drain(..) {
            core.scheduler.wake(pid, now);
        }
        core.woken = woken;
    }

    /// Admits `tasks` and runs until every process has ended, on `workers`
    /// threads (this one included); returns the reports in order of exit
    /// and the loop's stats.
    pub(crate) fn run(
        self,
        pool: Option<&rayon_core::ThreadPool>,
        tasks: impl ExactSizeIterator<Item = Task>,
    ) -> (
        Vec<ProcessReport>,
        LoopStats,
        Vec<RestartRecord>,
        Box<dyn RestartPolicy>,
    ) {
        let allowed = 1 + pool.map_or(0, rayon_core::ThreadPool::current_num_threads);
        // No more workers at first than processes to run: a run of one
        // process (one spawn at a time) then pays for no other worker's
        // wake-up and return, 10-30 us here. Should more become ready than
        // the workers run (restarts), `work` starts more, up to `allowed`.
        let upfront = allowed.min(tasks.len().max(1));
        match pool {
            // The other workers are the kernel's own threads, kept from run
            // to run (see `Kernel::run`); this thread is one more. They are
            // woken first and wake (tens of microseconds) while this one
            // admits the batch under the core lock, taken before they
            // exist, so none finds the loop empty and leaves.
            Some(pool) => pool.in_place_scope(|scope| {
                let mut core = self.lock();
                let _ = core.state.transition(LoopState::Running);
                core.workers_allowed = allowed;
                core.workers_started = upfront;
                // This thread too: between admitting the batch and taking
                // the core lock again in `work`, another worker that got
                // the lock first saw the rest of the batch queued, no idle
                // worker and none arriving, and started one more than the
                // processes needed.
                core.workers_arriving = upfront;
                for lane in 1..upfront {
                    let this = &self;
                    scope.spawn(move |scope| this.work(lane, Some(scope)));
                }
                self.add_all(&mut core, tasks);
                drop(core);
                self.work(0, Some(scope));
            }),
            None => {
                let mut core = self.lock();
                let _ = core.state.transition(LoopState::Running);
                self.add_all(&mut core, tasks);
                drop(core);
                self.work(0, None);
            }
        }
        let mut core = self.core.into_inner();
        let workers = core.workers_started;
        if core.state != LoopState::ShuttingDown {
            let _ = core.state.transition(LoopState::ShuttingDown);
        }
        let _ = core.state.transition(LoopState::Stopped);
        // This run's own: every process's count was added as its context
        // dropped, which its reap did before the run could end.
        core.events.syscalls = self.shared.syscalls.swap(0, Ordering::Relaxed);
        let stats = LoopStats {
            events: core.events,
            state: core.state,
            fairness: core.scheduler.fairness(self.shared.clock.now_nanos()),
            checkpoints: core.checkpoints,
            handoffs: core.handoffs,
            workers,
            reports_dropped: core.reports_dropped,
            notices_unsupervised: core.notices_unsupervised,
            restarts_dropped: core.restarts_dropped,
        };
        (
            core.reports.into(),
            stats,
            core.restarts.into(),
            core.restart_policy,
        )
    }

    /// One worker's loop; `lane` is the worker's lane of the engine (see
    /// `wasm_loader`'s "Lanes"): the processes it starts are instantiated
    /// there. `scope` starts another worker when a process is ready, none
    /// is idle or on its way, and fewer than allowed take part.
    fn work<'a>(&'a self, lane: usize, scope: Option<&rayon_core::Scope<'a>>) {
        let _worker = WorkerGuard::enter(self);
        let _wakes = self.shared.inbox.enter_worker();
        let _lane = lifecycle_manager::enter_lane(lane);
        let _watch = PanicWatch(self);
        let mut core = self.lock();
        // Counted as arriving until here, the thread that called `run`
        // included, when the run has other workers (`scope`).
        if scope.is_some() {
            core.workers_arriving -= 1;
        }
        loop {
            if self.abandoned.load(Ordering::Relaxed) {
                return;
            }
            // A turn that just blocked read the clock an instant ago.
            let now = core
                .fresh_now
                .take()
                .unwrap_or_else(|| self.shared.clock.now_nanos());
            self.collect(&mut core, now);
            self.reap_deferred(&mut core);
            let shutting_down = self.shared.shutdown_requested();
            if shutting_down {
                if core.state == LoopState::Running {
                    let _ = core.state.transition(LoopState::ShuttingDown);
                    core.events.record(&KernelEvent::ShutdownRequested);
                }
                // The processes not running are stopped once none runs:
                // one still running (to its next checkpoint) would
                // otherwise find the peers it sends to gone, and end on
                // that rather than be stopped. Meanwhile nothing else is
                // started.
                if core.scheduler.running() == 0 {
                    self.stop_parked(&mut core, ErrorCode::SHUTDOWN);
                }
            }
            if core.live == 0 {
                // The workers that wait are told the run is over; one not
                // yet waiting sees it under the core lock.
                if core.idle_workers > 0 {
                    self.shared.inbox.notify();
                }
                return;
            }
            if let Some(dispatch) = (!shutting_down).then(|| core.scheduler.next(now)).flatten() {
                core.events.record(&KernelEvent::Tick);
                if core.scheduler.queued() > 0 {
                    if core.idle_workers > 0 {
                        self.shared.inbox.notify_one();
                    } else if let Some(scope) = scope
                        && core.workers_arriving == 0
                        && core.workers_started < core.workers_allowed
                    {
                        let lane = core.workers_started;
                        core.workers_started += 1;
                        core.workers_arriving += 1;
                        scope.spawn(move |scope| self.work(lane, Some(scope)));
                    }
                }
                let task = core.tasks[dispatch.pid.index() as usize]
                    .take()
                    .expect("a dispatched task is parked");
                drop(core);
                core = self.run_turn(task);
                continue;
            }
            let next_timer = self.shared.next_timer();
            if core.scheduler.running() == 0 && self.shared.inbox.is_empty() {
                match next_timer {
                    Some(deadline) if self.shared.clock.is_virtual() => {
                        self.shared.clock.advance_to(deadline);
                        continue;
                    }
                    None => {
                        self.stop_deadlocked(&mut core);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            // Nothing to do here now: sleep until a wake, the next timer, or
            // a short while (another worker may requeue a task directly).
            core.idle_workers += 1;
            // Read under the core lock, where every notifier decides to
            // notify: one that counted this worker as idle notifies after.
            let seen = self.shared.inbox.notifications();
            drop(core);
            let mut wait = Duration::from_millis(5);
            if let Some(deadline) = next_timer {
                wait = wait.min(self.shared.clock.until(deadline));
            }
            if shutting_down {
                // Waiting for the processes still running to reach their
                // checkpoints (the shutdown flag would end the wait at once).
                static GO_ON: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                self.shared
                    .inbox
                    .wait(Some(Duration::from_micros(200)), &GO_ON, seen);
            } else {
                self.shared
                    .inbox
                    .wait(Some(wait), &self.shared.shutdown, seen);
            }
            core = self.lock();
            core.idle_workers -= 1;
        }
    }

    /// Runs `to`, just woken by the running process `from`, on this worker
    /// now if it is the only ready process; see the module docs.
    fn hand_off(&self, from: Pid, to: Pid, on_fiber: bool) -> HandOff {
        self.release_kept();
        // Taken only if `to` will be the only ready process: with another
        // queued, or woken besides it, it will not be, and asking under the
        // core lock would only contend for it with the other workers (a
        // hint: one read stale may cost a handoff, never a wrong one).
        if self.queued.load(Ordering::Relaxed) + self.shared.inbox.len() > 1 {
            return HandOff::NotTaken;
        }
        let mut core = self.lock();
        let now = self.shared.clock.now_nanos();
        self.collect(&mut core, now);
        if self.shared.shutdown_requested() || core.scheduler.sole_ready() != Some(to) {
            return HandOff::NotTaken;
        }
        let to_handler = core
            .tasks
            .get(to.index() as usize)
            .and_then(Option::as_ref)
            .is_some_and(|task| task.process.handler);
        if on_fiber && to_handler {
            return HandOff::NotTaken;
        }
        let Some(dispatch) = core.scheduler.next(now) else {
            return HandOff::NotTaken;
        };
        debug_assert_eq!(dispatch.pid, to);
        core.events.record(&KernelEvent::Tick);
        core.handoffs += 1;
        let task = core.tasks[to.index() as usize]
            .take()
            .expect("a dispatched task is parked");
        drop(core);
        let mut core = {
            let _nested = HandingOff::enter();
            self.run_turn(task)
        };
        let ended = core
            .fresh_now
            .take()
            .unwrap_or_else(|| self.shared.clock.now_nanos());
        core.scheduler.lend(from, ended.saturating_sub(now));
        // What the lent turn woke is collected now, and an idle worker is
        // told, as `work` would have done had the sender waited.
        self.collect(&mut core, ended);
        let others_ready = core.scheduler.queued() > 0;
        if others_ready && core.idle_workers > 0 {
            self.shared.inbox.notify_one();
        }
        HandOff::Ran { others_ready }
    }

    /// [`deliver_direct`] on this worker: claims `to` under the core lock
    /// if it is a handler that waits idle (its task parked here, no wake
    /// pending) and no process is ready, makes it the running process as a
    /// handoff would, and calls it without the lock. Then it keeps it
    /// claimed for the same sender's next delivery (no lock, no queue)
    /// while nothing else wants the worker, or parks it again, queues it
    /// if something woke it, or reaps it later if the call ended it or a
    /// checkpoint it made due saw a stop; the lent time is accounted as a
    /// handoff's (see [`Kept`]).
    fn deliver_direct(
        &self,
        from: Pid,
        to: Pid,
        deliver: impl FnOnce(&mut HandlerState) -> Option<wasmtime::Result<i32>>,
    ) -> bool {
        if let Some(mut kept) = KEPT.take() {
            if kept.task.process.pid == to && kept.lender == from {
                let now = self.shared.clock.now_nanos();
                if self.may_keep(&kept.task, now) {
                    let (delivered, end) = self.call_claimed(&mut kept.task, from, deliver);
                    kept.busy += self.shared.clock.now_nanos().saturating_sub(now);
                    kept.deliveries += 1;
                    match end {
                        DirectEnd::Park => KEPT.set(Some(kept)),
                        end => self.end_claim(&mut self.lock(), kept, end),
                    }
                    return delivered;
                }
            }
            self.end_claim(&mut self.lock(), kept, DirectEnd::Park);
        }
        // Not with others queued or woken (see `hand_off`'s hint).
        if self.queued.load(Ordering::Relaxed) + self.shared.inbox.len() > 0 {
            return false;
        }
        let index = to.index() as usize;
        let mut core = self.lock();
        // What was woken meanwhile counts as ready, as for a handoff.
        let now = self.shared.clock.now_nanos();
        self.collect(&mut core, now);
        if self.shared.shutdown_requested() || core.scheduler.queued() > 0 {
            return false;
        }
        let claimable = core
            .tasks
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|task| {
                task.process.pid == to
                    && task.handler.is_some()
                    && !task.state.kill.load(Ordering::Acquire)
            })
            // Waiting (a handler never blocks), with nothing queued: stable
            // while the core lock is held, so the lent turn below cannot
            // be refused once the task is claimed.
            && core.scheduler.state(to) == Some(ProcessState::Waiting);
        // Parked (`IDLE`) means it waits in its next receive with nothing
        // in its mailbox: a post since would have queued it. Claimed, a
        // post meanwhile finds it running and only marks it notified.
        if !claimable
            || core.tasks[index].as_ref().is_some_and(|task| {
                task.state
                    .state
                    .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            })
        {
            return false;
        }
        // It runs as waking and dispatching it would make it run.
        let lent = core.scheduler.run_lent(to, now);
        debug_assert!(lent.is_some(), "waiting, nothing queued");
        core.events.record(&KernelEvent::Tick);
        core.handoffs += 1;
        let task = core.tasks[index].take().expect("claimed above");
        drop(core);
        let mut kept = Kept {
            task,
            lender: from,
            since: now,
            busy: 0,
            deliveries: 0,
        };
        let (delivered, end) = self.call_claimed(&mut kept.task, from, deliver);
        kept.busy = self.shared.clock.now_nanos().saturating_sub(now);
        match end {
            DirectEnd::Park => KEPT.set(Some(kept)),
            end => self.end_claim(&mut self.lock(), kept, end),
        }
        delivered
    }

    /// True if a kept receiver may take its sender's next message at once:
    /// nothing has woken it, its mailbox is empty, it is not to stop, and
    /// nothing else may have become ready (no wake-up waits to be
    /// collected or in a run queue, no timer is due), so it is still what
    /// the scheduler would run. The mailbox is looked at, not only the wake: a receive
    /// that found nothing inside the kept call ended its wait, so a post
    /// since (the same sender's message that asked for an acknowledgement,
    /// or a broadcast copy) queued it without waking it, and a direct
    /// delivery now would overtake that message (invariant 5). The sender's
    /// own posts came before this look on this thread, so they are seen.
    fn may_keep(&self, task: &Task, now: u64) -> bool {
        task.state.state.load(Ordering::Acquire) == RUNNING
            && task.process.looks_empty()
            && !task.state.kill.load(Ordering::Acquire)
            && !self.shared.shutdown_requested()
            && self.shared.inbox.is_empty()
            // Nor queued: another worker may have collected a wake-up it
            // has not run yet (the hint of `hand_off`).
            && self.queued.load(Ordering::Relaxed) == 0
            && !self.shared.timer_due(now)
    }

    /// Calls the claimed handler `task` with what `deliver` writes into
    /// its inbox; returns whether it delivered, and how the call left the
    /// process: `Park` to go back to waiting.
    fn call_claimed(
        &self,
        task: &mut Task,
        lender: Pid,
        deliver: impl FnOnce(&mut HandlerState) -> Option<wasmtime::Result<i32>>,
    ) -> (bool, DirectEnd) {
        let _nested = HandingOff::enter();
        let _lent = Lent::enter(lender);
        let cell = task.handler.as_ref().expect("claimed a handler");
        // SAFETY: this thread holds the task, taken out of the table under
        // the core lock; its future is not polled meanwhile.
        let Some(state) = (unsafe { cell.state() }) else {
            return (false, DirectEnd::Park);
        };
        let Some(result) = deliver(state) else {
            return (false, DirectEnd::Park);
        };
        // Whom its sends woke is queued already; it hands the CPU to no one
        // from inside a lent turn.
        state.context_mut().hand_off = None;
        let end = match result {
            // Back to its next receive, which is checked as the handler's
            // own loop checks it (the receive it stays parked in was
            // checked before this message).
            Ok(0) => match state.context().admit(Syscall::Receive, None) {
                Ok(()) => match state.due_checkpoints() {
                    0 => DirectEnd::Park,
                    due => DirectEnd::Checkpoints(due),
                },
                Err(code) => DirectEnd::Finished(state.outcome(Err(cannot_take(code)))),
            },
            result => DirectEnd::Finished(state.outcome(result)),
        };
        (true, end)
    }

    /// Ends a claim: the receiver's own time is what its calls took (the
    /// rest of the claim was its lender's), the lender lends that time;
    /// then it parks, or is queued if something woke it, or is reaped
    /// later (ended by its call, or stopped at one of the checkpoints its
    /// calls made due, which are passed as `run_turn` passes them).
    fn end_claim(&self, core: &mut Core, kept: Kept, end: DirectEnd) {
        let Kept {
            mut task,
            lender,
            since,
            mut busy,
            deliveries,
        } = kept;
        let to = task.process.pid;
        let index = to.index() as usize;
        core.handoffs += deliveries;
        for _ in 0..deliveries {
            core.events.record(&KernelEvent::Tick);
        }
        let end = match end {
            DirectEnd::Checkpoints(due) => {
                task.checkpoints += due;
                core.checkpoints += due;
                // Deterministic time moves on at them: the receiver's.
                let before = self.shared.clock.now_nanos();
                let end = self.direct_checkpoints(&task, due);
                busy += self.shared.clock.now_nanos().saturating_sub(before);
                end
            }
            end => end,
        };
        let ended = self.shared.clock.now_nanos();
        core.scheduler
            .lend(to, ended.saturating_sub(since).saturating_sub(busy));
        core.scheduler.lend(lender, busy);
        let end = match end {
            // Back to the wait its own loop parked in: armed again first (a
            // look at its mailbox from inside the call, a `receive` with
            // timeout 0, ended it), unless mail came meanwhile, which it
            // then runs for. A post after the arming wakes it, and the
            // exchange below fails.
            DirectEnd::Park
                if rearm_if_empty(&task.process)
                    && task
                        .state
                        .state
                        .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok() =>
            {
                if task.state.kill.load(Ordering::Acquire) {
                    DirectEnd::Stop(ErrorCode::RESTARTED)
                } else {
                    core.scheduler
                        .stop_waiting(to, ended, ProcessState::Waiting);
                    core.tasks[index] = Some(task);
                    return self.after_lent_turn(core, ended);
                }
            }
            DirectEnd::Park => {
                // Woken while it ran, or mail came: it runs again from the
                // queue, where its next receive finds it.
                task.state.state.store(QUEUED, Ordering::Release);
                core.scheduler.still_ready(to, ended);
                core.tasks[index] = Some(task);
                return self.after_lent_turn(core, ended);
            }
            end => end,
        };
        let outcome = match end {
            DirectEnd::Finished(outcome) => outcome,
            DirectEnd::Stop(reason) => self.stopped_outcome(&task, reason),
            DirectEnd::Park | DirectEnd::Checkpoints(_) => unreachable!("handled above"),
        };
        // Reaped later on a worker's own stack, as a handed-off turn's end;
        // the lender passes a checkpoint at its next message for it.
        self.defer_reap(core, task, outcome);
        REAP_DUE.set(true);
        self.after_lent_turn(core, ended);
    }

    /// Leaves a process that ended in a lent turn to be reaped later, on a
    /// worker's own stack. Marked ended now: until the reap `lookup` gives
    /// another running process of its module, or none, so its lender,
    /// still running, does not send to it; a kernel notice to its module
    /// with no process running still reaches its open mailbox, which a
    /// same-state restart inherits (`notify_module`).
    fn defer_reap(&self, core: &mut Core, task: Task, outcome: Outcome) {
        task.process.ended.store(true, Ordering::Release);
        core.deferred.push((task, outcome));
    }

    /// Ends this worker's kept claim, if any (see [`Kept`]): before its
    /// lender's turn ends, and before anything else runs here.
    fn release_kept(&self) {
        if let Some(kept) = KEPT.take() {
            self.end_claim(&mut self.lock(), kept, DirectEnd::Park);
        }
    }

    /// The checkpoints a directly delivered call made due, passed as
    /// `run_turn` passes them (virtual time moves on; a stop request or a
    /// shutdown is seen). The turn ends right after, so no scheduling
    /// decision is due.
    fn direct_checkpoints(&self, task: &Task, due: u64) -> DirectEnd {
        for _ in 0..due {
            self.shared.clock.advance_by(self.checkpoint_ns);
            if self.shared.shutdown_requested() {
                // Parked, and stopped with every other process once none
                // runs (see `run_turn`): its lender still runs, and may
                // send to it again.
                return DirectEnd::Park;
            }
            if task.state.kill.load(Ordering::Acquire) {
                return DirectEnd::Stop(ErrorCode::RESTARTED);
            }
        }
        DirectEnd::Park
    }

    /// After a lent turn: what it woke is collected, and an idle worker is
    /// told if others are ready, as `work` would have done.
    fn after_lent_turn(&self, core: &mut Core, now: u64) {
        self.collect(core, now);
        if core.scheduler.queued() > 0 && core.idle_workers > 0 {
            self.shared.inbox.notify_one();
        }
    }

    /// Reaps the handed-off turns that ended (see `run_turn`); called on a
    /// worker's own stack.
    fn reap_deferred(&self, core: &mut Core) {
        REAP_DUE.set(false);
        // In the order they ended: their restart decisions are carried
        // out in the order of the failures.
        loop {
            let ended = std::mem::take(&mut core.deferred);
            if ended.is_empty() {
                break;
            }
            for (task, outcome) in ended {
                self.finish(core, task, outcome);
            }
        }
    }

    /// Runs `task` until it blocks, ends, or the scheduler takes it off the
    /// CPU; parks or reaps it; returns with the core lock held.
    fn run_turn(&self, mut task: Task) -> CoreGuard<'_> {
        let _local = self.shared.inbox.keep_wakes_local();
        let pid = task.process.pid;
        task.state.state.store(RUNNING, Ordering::Release);
        let (mut core, end) = loop {
            let mut cx = Context::from_waker(&task.waker);
            let poll = task.future.as_mut().poll(&mut cx);
            // A receiver this turn kept claimed goes back before anything
            // else happens here, and so does an answer held for it (its
            // wait takes it within the poll; this is only a guard).
            self.release_kept();
            put_back_held(&self.shared, &task.process);
            if poll.is_ready() {
                // Step 1 of `finish` (the instance and `Store` go first),
                // done before taking the core lock: it is the costliest
                // step and needs nothing the lock guards.
                drop(std::mem::replace(
                    &mut task.future,
                    Box::pin(std::future::pending()),
                ));
            }
            if let Poll::Ready(outcome) = poll {
                // The common exit, reaped here with only its scheduler
                // bookkeeping under the core lock. A handed-off turn's is
                // deferred as below (the lender's fiber has little room).
                if !HANDING_OFF.get() && !needs_supervision(&task.process, &outcome) {
                    return self.finish_unsupervised(task, outcome);
                }
                let mut core = self.lock();
                if !HANDING_OFF.get() {
                    self.reap_deferred(&mut core);
                }
                break (core, TurnEnd::Finished(outcome));
            }
            let mut core = self.lock();
            if !HANDING_OFF.get() {
                self.reap_deferred(&mut core);
            }
            let now = self.shared.clock.now_nanos();
            if task
                .state
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if task.state.kill.load(Ordering::Acquire) {
                    break (core, TurnEnd::Stop(ErrorCode::RESTARTED));
                }
                let state = if task.state.blocked.load(Ordering::Acquire) {
                    ProcessState::Blocked
                } else {
                    ProcessState::Waiting
                };
                core.scheduler.stop_waiting(pid, now, state);
                core.fresh_now = Some(now);
                break (core, TurnEnd::Blocked);
            }
            // Notified while running: still runnable.
            task.state.state.store(RUNNING, Ordering::Release);
            if task.state.yield_requested.swap(false, Ordering::AcqRel) {
                // A yield stands for `YIELD_NS` of virtual time (no-op on
                // the real clock): else a higher level yielding in a loop
                // in deterministic mode kept the clock still, and with it
                // the lower levels' aging, minimum service and timers.
                self.shared.clock.advance_by(YIELD_NS);
                core.scheduler.yielded(pid, self.shared.clock.now_nanos());
                break (core, TurnEnd::Requeued);
            }
            task.checkpoints += 1;
            core.checkpoints += 1;
            self.shared.clock.advance_by(self.checkpoint_ns);
            if self.shared.shutdown_requested() {
                // Set aside, not stopped yet: a shutdown dispatches
                // nothing, and stops every process at once when none runs
                // (`work`). Stopped here, it would close its mailbox while
                // a peer still running on another worker sends to it, and
                // that peer would end on the failed send instead of being
                // stopped.
                core.scheduler
                    .still_ready(pid, self.shared.clock.now_nanos());
                break (core, TurnEnd::Requeued);
            }
            if task.state.kill.load(Ordering::Acquire) {
                break (core, TurnEnd::Stop(ErrorCode::RESTARTED));
            }
            // Another worker panicked: back to the loop, which leaves (a
            // process that never rotates, at SYSTEM, would hold this
            // worker, and the run, for ever).
            if self.abandoned.load(Ordering::Relaxed) {
                break (core, TurnEnd::Requeued);
            }
            let now = self.shared.clock.now_nanos();
            self.collect(&mut core, now);
            // What this turn woke may run on an idle worker now, not when
            // this turn ends (a slice can be 25 ms or more).
            if core.scheduler.queued() > 0 && core.idle_workers > 0 {
                self.shared.inbox.notify_one();
            }
            match core.scheduler.checkpoint(pid, now) {
                Verdict::Continue => drop(core),
                Verdict::Preempted | Verdict::Rotated => break (core, TurnEnd::Requeued),
            }
        };
        match end {
            // A handed-off turn runs on the lender's fiber stack, which has
            // little room for host frames; `finish` (which may reload a
            // module to restart it) runs later on a worker's
            // own stack, at the lender's next stop or the loop's next turn.
            TurnEnd::Finished(outcome) if HANDING_OFF.get() => {
                self.defer_reap(&mut core, task, outcome);
            }
            TurnEnd::Stop(reason) if HANDING_OFF.get() => {
                let outcome = self.stopped_outcome(&task, reason);
                self.defer_reap(&mut core, task, outcome);
            }
            TurnEnd::Finished(outcome) => self.finish(&mut core, task, outcome),
            TurnEnd::Stop(reason) => {
                let outcome = self.stopped_outcome(&task, reason);
                self.finish(&mut core, task, outcome);
            }
            TurnEnd::Blocked => core.tasks[pid.index() as usize] = Some(task),
            TurnEnd::Requeued => {
                task.state.state.store(QUEUED, Ordering::Release);
                core.tasks[pid.index() as usize] = Some(task);
            }
        }
        core
    }

    fn stopped_outcome(&self, task: &Task, reason: ErrorCode) -> Outcome {
        // A handler is stopped between calls and keeps its own exact count;
        // a task process's is counted at its checkpoints.
        let counted = task.handler.as_ref().and_then(|cell| {
            // SAFETY: the caller holds the task (every caller owns it) and
            // its future is not being polled.
            unsafe { cell.state() }.map(|state| state.fuel_used())
        });
        Outcome {
            status: ExitStatus::Stopped(reason),
            fuel_used: counted.unwrap_or(task.checkpoints * self.checkpoint_fuel),
        }
    }

    /// Reaps a process that ended. Resources go in the reverse of the order
    /// `ProcessFactory::spawn` took them:
    ///
    /// 1. its instance and `Store` (the future; a suspended fiber unwinds),
    /// 2. its capabilities (revoked, cascading to what it delegated) —
    ///    unless a same-state restart takes them over,
    /// 3. its mailbox (mail left is failed back to the senders; blocked
    ///    senders are released) — unless a same-state restart inherits it,
    /// 4. its pid and name (the slot's generation moves on).
    ///
    /// Then its supervisor is notified and the restart policy applied.
    fn finish(&self, core: &mut Core, task: Task, outcome: Outcome) {
        // A process a restart told to stop has been replaced already: a
        // trap before it could stop is reported, but decides no restart of
        // its own (that would start a second process of its module).
        let replaced = task.state.kill.load(Ordering::Acquire);
        let Task {
            process, future, ..
        } = task;
        let pid = process.pid;
        drop(future);
        let now = self.shared.clock.now_nanos();
        let account = self.retire(core, pid, now);
        // The manifest is looked up only when the exit needs it.
        let loaded = needs_supervision(&process, &outcome)
            .then(|| self.factory.module(&process.module))
            .flatten();
        let manifest = loaded.as_ref().map(|m| &m.manifest);
        // Decide on a restart before the mailbox is closed: a same-state
        // restart inherits the mail instead of failing it back. After a
        // shutdown request nothing new starts, restarts included: the trap
        // is reported and the policy is not asked.
        let decision = match (&outcome.status, &manifest) {
            (ExitStatus::Trapped { code, .. }, Some(manifest))
                if manifest.restart == RestartMode::OnFailure
                    && !replaced
                    && !self.shared.shutdown_requested() =>
            {
                let failure = Failure {
                    key: process.module.to_string(),
                    code: code.0,
                    at: now,
                };
                Some((*code, core.restart_policy.on_failure(&failure, now)))
            }
            _ => None,
        };
        let same_state = matches!(decision, Some((_, RestartAction::RestartSameState)));
        // Closed either way, so nothing more reaches this pid's table; a
        // same-state restart takes over what it held.
        let kept_capabilities = if same_state {
            process.close_capabilities().then_some(pid)
        } else {
            self.revoke_capabilities(&process, now);
            None
        };
        let inherited = if same_state {
            take_all(&process)
        } else {
            Vec::new()
        };
        let mut report = self.close_out(&process, outcome);
        report.add_account(&account);
        heard_success(core, &process, &report.status, now);
        if let Some(supervisor) = manifest.as_ref().and_then(|m| m.supervisor.as_deref()) {
            let (kind, code) = match &report.status {
                ExitStatus::Exited(code) => (0, *code),
                ExitStatus::Trapped { code, .. } => (1, code.0 as i32),
                ExitStatus::Stopped(code) => (2, code.0 as i32),
            };
            let notice = ExitNotice { pid, kind, code };
            if !self.shared.notify_module(
                supervisor,
                MessageType::EXIT_NOTIFICATION,
                &notice.encode(),
            ) {
                core.notices_unsupervised += 1;
            }
        }
        let module = decision.is_some().then(|| report.module.clone());
        record_exit(core, report);
        // This exit's own restart first: it supersedes a restart of the
        // same module still waiting for room, which would otherwise take
        // the slot just freed and make two.
        if let (Some((code, action)), Some(module)) = (decision, module) {
            if action == RestartAction::GiveUp && !core.given_up.contains(&module) {
                core.pending_respawns.retain(|entry| entry.module != module);
                core.given_up.push(module.clone());
            }
            core.restarting = true;
            let new_pid = self.restart(
                core,
                &module,
                manifest,
                action,
                inherited,
                kept_capabilities,
            );
            core.restarting = false;
            tracing::info!(
                target: "estalogic::supervision",
                %pid, %module, %code, ?action, ?new_pid, "restart decision"
            );
            if core.restarts.len() >= MAX_RESTART_RECORDS {
                core.restarts.pop_front();
                core.restarts_dropped += 1;
            }
            core.restarts.push_back(RestartRecord {
                module,
                pid,
                code,
                action,
                new_pid,
                at: now,
            });
        }
        self.respawn_pending(core);
    }

    /// Takes an ended process off the scheduler and the live-task table;
    /// returns its scheduling account.
    fn retire(&self, core: &mut Core, pid: Pid, now: u64) -> crate::core::scheduler::Account {
        let account = core.scheduler.exited(pid, now).unwrap_or_default();
        core.live -= 1;
        if let Some(slot) = core.states.get_mut(pid.index() as usize)
            && slot.as_ref().is_some_and(|(p, ..)| *p == pid)
        {
            *slot = None;
        }
        account
    }

    /// Revokes what an ended process holds. Most processes never hold a
    /// capability, and their exit leaves the engine's lock alone.
    fn revoke_capabilities(&self, process: &Process, now: u64) {
        if process.close_capabilities() {
            let mut engine = self.shared.capabilities();
            engine.revoke_all_of(process.pid, now);
            self.shared.flush_audit(&mut engine);
        }
    }

    /// Steps 3 and 4 of [`KernelLoop::finish`] (the mailbox, then the pid)
    /// and the process's report, without its scheduling account. Needs
    /// nothing the core lock guards.
    fn close_out(&self, process: &Process, outcome: Outcome) -> ProcessReport {
        // The messages left and those its mode dropped, read as it closes.
        let undelivered = close_mailbox(&self.shared, process);
        self.shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(process.pid);
        let counters = &process.counters;
        ProcessReport {
            pid: process.pid,
            module: process.module.to_string(),
            priority: process.priority,
            status: outcome.status,
            sent: counters.sent.load(Ordering::Relaxed),
            received: counters.received.load(Ordering::Relaxed),
            send_failures: counters.send_failures.load(Ordering::Relaxed),
            delivery_failures: counters.delivery_failures.load(Ordering::Relaxed),
            blocked_sends: counters.blocked_sends.load(Ordering::Relaxed),
            undelivered,
            fuel_used: outcome.fuel_used,
            preemptions: 0,
            requeues: 0,
            cpu_ns: 0,
            max_wait_ns: 0,
        }
    }

    /// Reaps a process that ended on its own and needs no supervision (see
    /// [`needs_supervision`]): everything [`KernelLoop::finish`] does, in
    /// the same order of resources, but only the scheduler's part under
    /// the core lock, which every worker takes for every process it runs.
    /// Returns with the lock held, as `run_turn` does.
    fn finish_unsupervised(&self, task: Task, outcome: Outcome) -> CoreGuard<'_> {
        let Task { process, .. } = task;
        self.revoke_capabilities(&process, self.shared.clock.now_nanos());
        let mut report = self.close_out(&process, outcome);
        let mut core = self.lock();
        self.reap_deferred(&mut core);
        let now = self.shared.clock.now_nanos();
        let account = self.retire(&mut core, process.pid, now);
        report.add_account(&account);
        heard_success(&mut core, &process, &report.status, now);
        record_exit(&mut core, report);
        self.respawn_pending(&mut core);
        core
    }

    /// Carries out a restart decision for `module`; returns the new pid
    /// (none if the module waits for room, see [`PendingRespawn`]). The
    /// caller sets `core.restarting` around it.
    fn restart(
        &self,
        core: &mut Core,
        module: &str,
        manifest: Option<&Manifest>,
        action: RestartAction,
        inherited: Vec<Message>,
        kept_capabilities: Option<Pid>,
    ) -> Option<Pid> {
        // Processes told to stop (a supervisor or system restart; a running
        // one leaves at its next checkpoint) and the modules to start again
        // after the failed one.
        let mut replacing: Vec<Pid> = Vec::new();
        let mut respawn: Vec<String> = Vec::new();
        match action {
            RestartAction::GiveUp => return None,
            RestartAction::RestartSameState | RestartAction::RestartCleanState => {}
            RestartAction::ReloadModule => {
                if let Err(error) = self.factory.reload(module) {
                    tracing::error!(target: "estalogic::supervision", %module, %error, "reload failed");
                    return None;
                }
            }
            RestartAction::RestartSupervisor => {
                if let Some(supervisor) = manifest.and_then(|m| m.supervisor.as_deref())
                    && !core.given_up.iter().any(|m| m == supervisor)
                {
                    // The supervisor and all its children: every live
                    // process of the supervisor's module and of a module
                    // it supervises (the failed one's siblings included),
                    // one new process each. A supervisor whose process
                    // ended stays down, as in a system restart.
                    respawn.extend(self.live_processes_of(core, |name| {
                        name == supervisor
                            || self.factory.module(name).is_some_and(|loaded| {
                                loaded.manifest.supervisor.as_deref() == Some(supervisor)
                            })
                    }));
                }
            }
            RestartAction::RestartSystem => {
                // Every process of the app still alive, one new process
                // for each, the failed module's other processes included:
                // not every loaded module (one never spawned, or whose
                // processes ended well, stays as it was).
                respawn = self.live_processes_of(core, |_| true);
            }
        }
        let mut stopped: Vec<&String> = Vec::new();
        for other in &respawn {
            if !stopped.contains(&other) {
                stopped.push(other);
                replacing.extend(self.stop_module(core, other));
            }
        }
        // The failed module first: its restart is the decision carried out,
        // and in a full pool (a stopped process holds its slot until it
        // leaves) it is the others that wait for a slot. Its
        // inherited mail goes in before it can be found, and each new
        // process takes its name from the one it replaces (see
        // `ProcessFactory::spawn_with`).
        let mut inherited = inherited;
        // A restart that starts a module supersedes one start still
        // waiting for room: one process, not two.
        Self::supersede_pending(core, module);
        let new_pid =
            match self
                .factory
                .spawn_with(module, &mut inherited, &replacing, kept_capabilities)
            {
                Ok(task) => {
                    let pid = task.process.pid;
                    self.admit(core, task);
                    Some(pid)
                }
                Err(error) => {
                    // Its mail is failed back and its capabilities revoked now
                    // rather than held for a start that may wait long.
                    for message in &inherited {
                        self.shared
                            .report_failure(&message.header, ErrorCode::NO_SUCH_PROCESS);
                    }
                    if let Some(predecessor) = kept_capabilities {
                        let mut engine = self.shared.capabilities();
                        engine.revoke_all_of(predecessor, self.shared.clock.now_nanos());
                        self.shared.flush_audit(&mut engine);
                    }
                    self.defer_respawn(core, module, &replacing, error);
                    None
                }
            };
        // Each start supersedes one decided earlier and still waiting, all
        // before any of this decision's own starts waits (two processes of
        // one module are two starts, not one superseding the other).
        for other in &respawn {
            Self::supersede_pending(core, other);
        }
        for other in respawn {
            match self
                .factory
                .spawn_with(&other, &mut Vec::new(), &replacing, None)
            {
                Ok(task) => self.admit(core, task),
                Err(error) => self.defer_respawn(core, &other, &replacing, error),
            }
        }
        new_pid
    }

    /// The module of every live process whose module `wanted` picks, once
    /// per process. A process already told to stop is being replaced by
    /// the restart that told it, and is not counted twice; a module that
    /// gave up this run is started by no other's restart, so its processes
    /// are left as they are.
    fn live_processes_of(&self, core: &Core, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        core.states
            .iter()
            .flatten()
            .filter(|(_, _, state)| !state.kill.load(Ordering::Acquire))
            // Ended in a lent turn, its reap deferred: not alive (its own
            // reap reports it, and decides its own restart).
            .filter(|(_, process, _)| !process.ended.load(Ordering::Acquire))
            .map(|(_, process, _)| &*process.module)
            .filter(|name| !core.given_up.iter().any(|gave_up| gave_up == name))
            .filter(|name| wanted(name))
            .map(str::to_string)
            .collect()
    }

    /// A restart that starts `module` now supersedes one start of it still
    /// waiting for room (one process, not two).
    fn supersede_pending(core: &mut Core, module: &str) {
        if let Some(at) = core
            .pending_respawns
            .iter()
            .position(|e| e.module == module)
        {
            if core.pending_respawns[at].count > 1 {
                core.pending_respawns[at].count -= 1;
            } else {
                core.pending_respawns.remove(at);
            }
        }
    }

    /// A restart of `module` could not start it: at the process limit it
    /// waits for room (see [`PendingRespawn`]; one entry per module);
    /// any other error ends it.
    fn defer_respawn(&self, core: &mut Core, module: &str, replacing: &[Pid], error: KernelError) {
        if !matches!(error, KernelError::TooManyProcesses { .. }) {
            tracing::error!(target: "estalogic::supervision", %module, %error, "restart failed");
            return;
        }
        tracing::warn!(target: "estalogic::supervision", %module, %error, "restart waits for a process to leave");
        match core
            .pending_respawns
            .iter_mut()
            .find(|e| e.module == module)
        {
            Some(entry) => {
                entry.count += 1;
                for pid in replacing {
                    if !entry.replacing.contains(pid) {
                        entry.replacing.push(*pid);
                    }
                }
            }
            None => core.pending_respawns.push(PendingRespawn {
                module: module.to_string(),
                replacing: replacing.to_vec(),
                count: 1,
            }),
        }
    }

    /// A process has left the process table: starts the restarts waiting
    /// for room (see [`PendingRespawn`]), in the order they were decided,
    /// as far as the limit now allows. A shutdown cancels them; inside a
    /// restart decision (the exits of the processes it stops) nothing
    /// starts: the decision's exit does this when it is carried out.
    fn respawn_pending(&self, core: &mut Core) {
        if core.pending_respawns.is_empty() || core.restarting {
            return;
        }
        let pending = std::mem::take(&mut core.pending_respawns);
        if self.shared.shutdown_requested() {
            return;
        }
        for mut entry in pending {
            while entry.count > 0 {
                match self.factory.spawn_with(
                    &entry.module,
                    &mut Vec::new(),
                    &entry.replacing,
                    None,
                ) {
                    Ok(task) => {
                        self.admit(core, task);
                        entry.count -= 1;
                    }
                    Err(KernelError::TooManyProcesses { .. }) => break,
                    Err(error) => {
                        tracing::error!(target: "estalogic::supervision", module = %entry.module, %error, "restart failed");
                        entry.count = 0;
                    }
                }
            }
            if entry.count > 0 {
                core.pending_respawns.push(entry);
            }
        }
    }

    /// Stops every process of `module`: parked ones now, running ones at
    /// their next checkpoint; returns the pids of the running ones (still
    /// in the table for a while).
    fn stop_module(&self, core: &mut Core, module: &str) -> Vec<Pid> {
        let parked: Vec<Pid> = core
            .tasks
            .iter()
            .flatten()
            .filter(|t| &*t.process.module == module)
            .map(|t| t.process.pid)
            .collect();
        for pid in parked {
            if let Some(task) = core.tasks[pid.index() as usize].take() {
                let outcome = self.stopped_outcome(&task, ErrorCode::RESTARTED);
                self.finish(core, task, outcome);
            }
        }
        let mut running_pids = Vec::new();
        for (pid, running, state) in core.states.iter().flatten() {
            // One that ended in a lent turn is not running: its deferred
            // reap reports how it ended, not as replaced.
            if &*running.module == module && !running.ended.load(Ordering::Acquire) {
                state.kill.store(true, Ordering::Release);
                running_pids.push(*pid);
            }
        }
        running_pids
    }

    /// Stops waiting tasks with `DEADLOCKED`, in pid order, until one of
    /// those exits lets another run (its mail failed back answers a call,
    /// its supervisor hears of it): then the loop runs that one, and comes
    /// back here only if everything waits again.
    fn stop_deadlocked(&self, core: &mut Core) {
        for index in 0..core.tasks.len() {
            let Some(task) = core.tasks[index].take() else {
                continue;
            };
            let outcome = self.stopped_outcome(&task, ErrorCode::DEADLOCKED);
            self.finish(core, task, outcome);
            if !self.shared.inbox.is_empty() || core.scheduler.queued() > 0 {
                return;
            }
        }
    }

    /// Stops every parked task (ready or waiting) with `reason`.
    fn stop_parked(&self, core: &mut Core, reason: ErrorCode) {
        let parked: Vec<Task> = core.tasks.iter_mut().filter_map(Option::take).collect();
        for task in parked {
            let outcome = self.stopped_outcome(&task, reason);
            self.finish(core, task, outcome);
        }
    }
}
