//! State the kernel loop shares with every syscall: the process table, the
//! clock, the capability engine and its audit buffer, timers, the wake inbox,
//! the shutdown flag and the IPC trace; and each task's scheduling state,
//! which is also its waker.
//!
//! # Task states and wakeups
//!
//! Each task has an atomic state: `IDLE` (waiting, in no queue), `QUEUED`
//! (in the inbox or a run queue), `RUNNING`, `NOTIFIED` (woken while
//! running). A wake moves `IDLE → QUEUED` and pushes the pid to the inbox,
//! or `RUNNING → NOTIFIED`. What the kernel loop does with the state after a
//! poll is in [`kernel_loop`][task-states].
//!
//! [task-states]: crate::core::kernel_loop#task-states-and-wakeups
//!
//! # Wakes made during a turn
//!
//! A wake made on a worker thread while it runs a turn of the same kernel
//! (a send to a waiting process, a timer fired at a checkpoint) is kept on
//! that thread instead (`Inbox::keep_wakes_local`): the same worker
//! drains it with the inbox, under the core lock, at the turn's next
//! checkpoint, block or end. A worker's loop (`Inbox::enter_worker`)
//! sets aside what another kernel's loop further up the same thread kept
//! (a restart policy that runs a kernel of its own, called inside a
//! turn), and gives it back when it ends. Under load (many pairs exchanging messages on
//! two workers) every message woke its receiver through the shared queue's
//! lock and cache line, which the other worker drained; a third of a
//! handler round trip went there (BENCHMARKS.md, log step 55). A drain
//! gives the thread's own wakes first, then the shared queue's; on one
//! worker (deterministic mode) both are filled by that worker alone, in
//! an order the run fixes, so a run repeats. What the other workers
//! cannot see is a wake whose waker still runs: a task's is collected,
//! and an idle worker told, at the waker's next checkpoint (100,000 fuel
//! units by default); a handler's call passes no checkpoint while it runs
//! (it counts them, and passes them when it returns), so what a call
//! wakes is collected when the call returns, at most a call's budget
//! (`HANDLER_CALL_SLICES` checkpoints' fuel) later.

use crate::core::capabilities_engine::{AuditDetail, AuditEvent, AuditKind, CapabilityEngine};
use crate::core::process::ProcessTable;
use crate::drivers::clock::Clock;
use crate::drivers::notifications::Notifications;
use crate::syscalls::MemoryBudget;
use estalogic_abi::{Header, Pid};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::task::{Wake, Waker};
use std::time::Duration;

pub(crate) const IDLE: u8 = 0;
pub(crate) const QUEUED: u8 = 1;
pub(crate) const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;

/// Pids of tasks woken since the loop last looked, with a condition
/// variable to sleep on when nothing is ready.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<Vec<Pid>>,
    /// Mirrors `queue.len()`, so the loop can skip the lock when empty.
    len: AtomicUsize,
    signal: Condvar,
    /// Notifications so far, counted under `queue`'s lock: a worker notes
    /// the count when it decides to sleep (under the core lock) and does
    /// not sleep if it moved on by the time it waits, so a notification
    /// sent in between is not lost (it would otherwise sleep through it,
    /// until its timeout, with work queued or the run over).
    notified: AtomicU64,
}

impl Inbox {
    /// Queues a woken pid. Idle workers are not signalled here: the worker
    /// that caused the wake collects it at its next block or checkpoint,
    /// and signals an idle worker then if there is more ready work than it
    /// can run (see `KernelLoop::work`).
    fn push(&self, pid: Pid) {
        if !LOCAL_WAKES.with_borrow_mut(|local| local.push(self, pid)) {
            self.push_shared(pid);
        }
    }

    pub(crate) fn notify_one(&self) {
        let _guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.notified.fetch_add(1, Ordering::Release);
        self.signal.notify_one();
    }

    /// Notifications so far: what a worker about to sleep passes to
    /// [`Inbox::wait`].
    pub(crate) fn notifications(&self) -> u64 {
        self.notified.load(Ordering::Acquire)
    }

    pub(crate) fn drain_into(&self, out: &mut Vec<Pid>) {
        LOCAL_WAKES.with_borrow_mut(|local| local.drain_into(self, out));
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut queue);
        self.len.store(0, Ordering::Release);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pids queued, as of the last push or drain: in the shared queue, and
    /// in this thread's own wakes (see [`LocalWakes`]).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) + LOCAL_WAKES.with_borrow(|local| local.len_for(self))
    }

    /// Makes this thread a worker of this inbox's kernel for as long as the
    /// guard lives (a worker's loop): the turns it runs meanwhile keep
    /// their wakes here ([`Inbox::keep_wakes_local`]). What another
    /// kernel's worker loop further up this thread's stack kept (an
    /// embedder's restart policy, called inside a turn, may run a kernel
    /// of its own) is set aside meanwhile and given back at the end.
    pub(crate) fn enter_worker(&self) -> WorkerWakes<'_> {
        let saved = LOCAL_WAKES.with_borrow_mut(|local| {
            std::mem::replace(
                local,
                LocalWakes {
                    inbox: std::ptr::from_ref(self),
                    active: false,
                    pids: Vec::new(),
                },
            )
        });
        WorkerWakes {
            inbox: self,
            saved: Some(saved),
        }
    }

    /// Makes this worker keep the wakes it makes for this inbox's kernel to
    /// itself until it drains them, for as long as the guard lives (a
    /// turn). Outside [`Inbox::enter_worker`] for this inbox, it keeps
    /// none.
    pub(crate) fn keep_wakes_local(&self) -> LocalWakesGuard {
        LOCAL_WAKES.with_borrow_mut(|local| {
            let previous = local.active;
            local.active = local.is_for(self);
            debug_assert!(local.active, "a turn runs inside its kernel's worker loop");
            LocalWakesGuard { previous }
        })
    }

    /// Queues `pid` in the shared queue, whatever this thread is.
    fn push_shared(&self, pid: Pid) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push(pid);
        self.len.store(queue.len(), Ordering::Release);
    }

    /// Sleeps until something is pushed, `stop` is set, a notification
    /// comes, or `timeout` passes; returns at once if a notification came
    /// since [`Inbox::notifications`] returned `seen`.
    pub(crate) fn wait(&self, timeout: Option<Duration>, stop: &AtomicBool, seen: u64) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !queue.is_empty()
            || stop.load(Ordering::Acquire)
            || self.notified.load(Ordering::Acquire) != seen
        {
            return;
        }
        match timeout {
            Some(timeout) => drop(self.signal.wait_timeout(queue, timeout)),
            None => drop(self.signal.wait(queue)),
        }
    }

    pub(crate) fn notify(&self) {
        let _guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.notified.fetch_add(1, Ordering::Release);
        self.signal.notify_all();
    }
}

/// The wakes a worker thread made during a turn, kept here rather than in
/// the shared queue: the worker collects them itself under the core lock
/// when the turn blocks, passes a checkpoint or ends, so a wake costs no
/// lock and no cache line shared with the other workers.
#[derive(Debug)]
struct LocalWakes {
    /// The inbox whose kernel the wakes are for (compared, never read).
    inbox: *const Inbox,
    /// True while a turn runs on this thread.
    active: bool,
    pids: Vec<Pid>,
}

impl LocalWakes {
    /// True if these are (or would be) wakes for `inbox`'s kernel.
    fn is_for(&self, inbox: &Inbox) -> bool {
        std::ptr::eq(self.inbox, inbox)
    }

    fn push(&mut self, inbox: &Inbox, pid: Pid) -> bool {
        if self.active && self.is_for(inbox) {
            self.pids.push(pid);
            true
        } else {
            false
        }
    }

    fn drain_into(&mut self, inbox: &Inbox, out: &mut Vec<Pid>) {
        if self.is_for(inbox) {
            out.append(&mut self.pids);
        }
    }

    fn len_for(&self, inbox: &Inbox) -> usize {
        if self.is_for(inbox) {
            self.pids.len()
        } else {
            0
        }
    }
}

thread_local! {
    static LOCAL_WAKES: std::cell::RefCell<LocalWakes> = const {
        std::cell::RefCell::new(LocalWakes { inbox: std::ptr::null(), active: false, pids: Vec::new() })
    };
}

/// Ends [`Inbox::enter_worker`]: gives back what another kernel's worker
/// loop on this thread had kept. Wakes this one kept and never drained (a
/// run that ended in a panic) go to its shared queue, not lost.
pub(crate) struct WorkerWakes<'a> {
    inbox: &'a Inbox,
    saved: Option<LocalWakes>,
}

impl Drop for WorkerWakes<'_> {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        let mine = LOCAL_WAKES.with_borrow_mut(|local| std::mem::replace(local, saved));
        if mine.is_for(self.inbox) {
            for pid in mine.pids {
                self.inbox.push_shared(pid);
            }
        }
    }
}

/// Ends [`Inbox::keep_wakes_local`]: the wakes kept stay for the worker's
/// next drain.
pub(crate) struct LocalWakesGuard {
    previous: bool,
}

impl Drop for LocalWakesGuard {
    fn drop(&mut self) {
        LOCAL_WAKES.with_borrow_mut(|local| local.active = self.previous);
    }
}

/// The scheduler-facing state of one task; also its waker.
#[derive(Debug)]
pub(crate) struct TaskState {
    pid: Pid,
    pub(crate) state: AtomicU8,
    /// Set by `yield_now`: the next `Pending` ends the slice.
    pub(crate) yield_requested: AtomicBool,
    /// Set while the process waits for room in a full mailbox, so the
    /// scheduler records it as `Blocked` rather than `Waiting`.
    pub(crate) blocked: AtomicBool,
    /// Set to stop the process at its next checkpoint or block (a system
    /// restart while it runs on another worker).
    pub(crate) kill: AtomicBool,
    inbox: Arc<Inbox>,
}

impl TaskState {
    /// Takes back a `NOTIFIED` state of a running task whose wait was
    /// answered without suspending (a direct handoff ran the sender here).
    /// No wake is lost: every wait checks its condition before parking.
    pub(crate) fn clear_notified(&self) {
        let _ = self
            .state
            .compare_exchange(NOTIFIED, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// True if parked (`IDLE`): not running, queued or notified.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) == IDLE
    }

    /// Marks the process as blocked on a full mailbox (or not).
    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Release);
    }
}

impl Wake for TaskState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = match current {
                IDLE => QUEUED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if next == QUEUED {
                        self.inbox.push(self.pid);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// A timer: wake `waker` at `deadline`; `sequence` keeps equal deadlines in
/// arming order.
struct TimerEntry {
    deadline: u64,
    sequence: u64,
    waker: Waker,
    /// Set when the wait it bounds ended early; the entry is then skipped
    /// and eventually compacted away.
    cancelled: Arc<AtomicBool>,
}

/// Cancels an armed timer when dropped (or explicitly): a receive that got
/// its message before the deadline leaves nothing live in the timer heap.
#[derive(Debug)]
pub(crate) struct TimerGuard {
    cancelled: Arc<AtomicBool>,
    shared: Arc<KernelShared>,
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.shared.cancelled_timers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.sequence) == (other.deadline, other.sequence)
    }
}

impl Eq for TimerEntry {}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.sequence).cmp(&(other.deadline, other.sequence))
    }
}

#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
    next_sequence: u64,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("armed", &self.heap.len())
            .finish()
    }
}

/// The most IPC trace records kept for one run.
const MAX_TRACE: usize = 1_000_000;

/// The IPC trace: the messages queued so far, at most [`MAX_TRACE`], and
/// how many more were not recorded.
#[derive(Debug, Default)]
struct Trace {
    records: Vec<TraceRecord>,
    dropped: u64,
}

/// One message queued in a mailbox, as the IPC trace records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// The message header (source, target, type, sequence, time, flags).
    pub header: Header,
    /// Payload bytes.
    pub payload_len: usize,
}

/// The most capability audit events kept in memory between two takes;
/// past it the oldest are dropped and counted, and the next take starts
/// with one [`AuditKind::Lost`] event saying how many.
const AUDIT_BUFFER: usize = 100_000;

/// State shared by the kernel loop and every syscall.
#[derive(Debug)]
pub struct KernelShared {
    /// Live processes.
    pub(crate) table: RwLock<ProcessTable>,
    /// The kernel clock.
    pub(crate) clock: Clock,
    capabilities: Mutex<CapabilityEngine>,
    audit: Mutex<AuditBuffer>,
    timers: Mutex<Timers>,
    /// The earliest armed deadline (`u64::MAX` if none), readable without
    /// the timers lock.
    next_deadline: AtomicU64,
    /// Cancelled entries still in the timer heap (an estimate).
    cancelled_timers: AtomicUsize,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) shutdown: AtomicBool,
    /// Capability-checked syscalls of the processes reaped in this run (a
    /// process's count is added as its context drops; the run's end takes
    /// the sum into its report and starts again from 0).
    pub(crate) syscalls: AtomicU64,
    /// The capability engine's generation as of its last change.
    pub(crate) capability_generation: AtomicU64,
    trace: Option<Mutex<Trace>>,
    /// What processes posted for the host (`notify`), not taken yet.
    pub(crate) notifications: Arc<Notifications>,
    /// The kernel-wide budget of guest linear memory, if one is set.
    pub(crate) memory_budget: Option<Arc<MemoryBudget>>,
}

/// The most denials of one process the audit buffer keeps between two
/// drains: a guest that loops on refused requests would otherwise push
/// everything else (others' grants, revocations, denials) out of the
/// bounded buffer. Past it, its denials are counted and reported as one
/// event when the buffer is drained.
const AUDIT_DENIALS_PER_PROCESS: usize = 1_000;

/// Capability audit events not yet taken by the embedder.
#[derive(Debug, Default)]
struct AuditBuffer {
    events: std::collections::VecDeque<AuditEvent>,
    /// Events dropped from the full buffer since the last drain.
    overflowed: u64,
    /// When the newest of them happened.
    overflowed_until: u64,
    /// Denials in `events`, by process.
    denials: rustc_hash::FxHashMap<Pid, usize>,
    /// Denials not kept, by process (see [`AUDIT_DENIALS_PER_PROCESS`]).
    suppressed: rustc_hash::FxHashMap<Pid, u64>,
}

impl AuditBuffer {
    fn push(&mut self, event: AuditEvent) {
        if event.kind == AuditKind::Denied {
            let kept = self.denials.entry(event.holder).or_default();
            if *kept >= AUDIT_DENIALS_PER_PROCESS {
                *self.suppressed.entry(event.holder).or_default() += 1;
                return;
            }
            *kept += 1;
        }
        if self.events.len() >= AUDIT_BUFFER
            && let Some(oldest) = self.events.pop_front()
        {
            self.overflowed += 1;
            self.overflowed_until = oldest.at;
            if oldest.kind == AuditKind::Denied
                && let Some(kept) = self.denials.get_mut(&oldest.holder)
            {
                *kept = kept.saturating_sub(1);
            }
        }
        self.events.push_back(event);
    }

    /// One [`AuditKind::Lost`] event if the buffer overflowed (how many
    /// older events it dropped), then every event kept, oldest first, then
    /// one per process whose denials were not all kept; the buffer starts
    /// afresh.
    fn drain(&mut self, now: u64) -> Vec<AuditEvent> {
        let mut events = Vec::with_capacity(self.events.len() + 1);
        if self.overflowed > 0 {
            let count = std::mem::take(&mut self.overflowed);
            events.push(AuditEvent {
                at: self.overflowed_until,
                kind: AuditKind::Lost,
                holder: Pid::KERNEL,
                capability: None,
                detail: AuditDetail::Text(format!(
                    "{count} older audit events dropped before they were taken (the buffer keeps at most {AUDIT_BUFFER} between takes)"
                )),
            });
        }
        events.extend(self.events.drain(..));
        self.denials.clear();
        let mut suppressed: Vec<(Pid, u64)> = self.suppressed.drain().collect();
        suppressed.sort_by_key(|(pid, _)| pid.to_u64());
        events.extend(suppressed.into_iter().map(|(holder, count)| AuditEvent {
            at: now,
            kind: AuditKind::Denied,
            holder,
            capability: None,
            detail: AuditDetail::Text(format!(
                "{count} more denials not recorded one by one (at most {AUDIT_DENIALS_PER_PROCESS} per process are kept between drains)"
            )),
        }));
        events
    }
}

impl KernelShared {
    pub(crate) fn new(clock: Clock, capabilities: CapabilityEngine, trace: bool) -> Self {
        KernelShared {
            table: RwLock::new(ProcessTable::new()),
            clock,
            capabilities: Mutex::new(capabilities),
            audit: Mutex::new(AuditBuffer::default()),
            timers: Mutex::new(Timers::default()),
            next_deadline: AtomicU64::new(u64::MAX),
            cancelled_timers: AtomicUsize::new(0),
            inbox: Arc::new(Inbox::default()),
            shutdown: AtomicBool::new(false),
            syscalls: AtomicU64::new(0),
            capability_generation: AtomicU64::new(0),
            trace: trace.then(|| Mutex::new(Trace::default())),
            notifications: Arc::new(Notifications::default()),
            memory_budget: None,
        }
    }

    /// Locks the capability engine.
    pub(crate) fn capabilities(&self) -> MutexGuard<'_, CapabilityEngine> {
        self.capabilities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the engine's new audit events into the kernel's buffer (and the
    /// `estalogic::audit` trace).
    pub(crate) fn flush_audit(&self, engine: &mut CapabilityEngine) {
        // Published while the engine is still locked, so no decision cached
        // against the old generation is trusted after the change it missed.
        // Stored only when it moved, so that exits that change nothing leave
        // the shared cache line alone.
        let generation = engine.generation();
        if self.capability_generation.load(Ordering::Relaxed) != generation {
            self.capability_generation
                .store(generation, Ordering::Release);
        }
        let events = engine.drain_audit();
        if events.is_empty() {
            return;
        }
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            tracing::debug!(
                target: "estalogic::audit",
                at_ns = event.at,
                kind = ?event.kind,
                holder = %event.holder,
                capability = ?event.capability,
                "{}",
                event.detail
            );
            audit.push(event);
        }
    }

    /// Takes the capability audit events recorded so far (see
    /// [`AuditBuffer::drain`]).
    pub(crate) fn take_audit(&self) -> Vec<AuditEvent> {
        let mut engine = self.capabilities();
        self.flush_audit(&mut engine);
        drop(engine);
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.drain(self.clock.now_nanos())
    }

    /// Calls `waker` at `deadline` on the kernel clock.
    pub(crate) fn arm_timer(self: &Arc<Self>, deadline: u64, waker: Waker) -> TimerGuard {
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        // Cancelled entries are skipped when they come due; once they are
        // the majority of a large heap, drop them all (amortised O(1)).
        let stale = self.cancelled_timers.load(Ordering::Relaxed);
        if timers.heap.len() > 1_024 && stale * 2 > timers.heap.len() {
            timers
                .heap
                .retain(|Reverse(entry)| !entry.cancelled.load(Ordering::Acquire));
            self.cancelled_timers.store(0, Ordering::Relaxed);
        }
        let sequence = timers.next_sequence;
        timers.next_sequence += 1;
        timers.heap.push(Reverse(TimerEntry {
            // `u64::MAX` means "no timer" in `next_deadline`.
            deadline: deadline.min(crate::drivers::clock::END_OF_TIME),
            sequence,
            waker,
            cancelled: cancelled.clone(),
        }));
        self.next_deadline.fetch_min(deadline, Ordering::AcqRel);
        TimerGuard {
            cancelled,
            shared: self.clone(),
        }
    }

    /// The earliest deadline of a live timer, if any. Cancelled timers at
    /// the top of the heap are dropped first, so a cancelled long timeout
    /// never keeps an otherwise deadlocked kernel waiting.
    pub(crate) fn next_timer(&self) -> Option<u64> {
        if self.next_deadline.load(Ordering::Acquire) == u64::MAX {
            return None;
        }
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        while timers
            .heap
            .peek()
            .is_some_and(|Reverse(entry)| entry.cancelled.load(Ordering::Acquire))
        {
            timers.heap.pop();
            let _ = self
                .cancelled_timers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        let next = timers.heap.peek().map(|Reverse(entry)| entry.deadline);
        self.next_deadline
            .store(next.unwrap_or(u64::MAX), Ordering::Release);
        next
    }

    /// True if a timer may be due at `now` (a look without the timers'
    /// lock).
    pub(crate) fn timer_due(&self, now: u64) -> bool {
        self.next_deadline.load(Ordering::Acquire) <= now
    }

    /// Fires every live timer due at `now`.
    pub(crate) fn fire_timers(&self, now: u64) {
        if self.next_deadline.load(Ordering::Acquire) > now {
            return;
        }
        let mut due = Vec::new();
        {
            let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            while timers
                .heap
                .peek()
                .is_some_and(|Reverse(entry)| entry.deadline <= now)
            {
                let Reverse(entry) = timers.heap.pop().expect("peeked");
                if entry.cancelled.load(Ordering::Acquire) {
                    let _ = self.cancelled_timers.fetch_update(
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                        |n| Some(n.saturating_sub(1)),
                    );
                } else {
                    due.push(entry.waker);
                }
            }
            let next = timers
                .heap
                .peek()
                .map_or(u64::MAX, |Reverse(entry)| entry.deadline);
            self.next_deadline.store(next, Ordering::Release);
        }
        for waker in due {
            waker.wake();
        }
    }

    /// Timers armed and not yet fired or dropped (live and cancelled).
    pub(crate) fn armed_timers(&self) -> usize {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heap
            .len()
    }

    /// Forgets a shutdown request (the run it stopped has returned).
    pub(crate) fn clear_shutdown(&self) {
        self.shutdown.store(false, Ordering::Release);
    }

    /// Drops the timers whose wait ended (at the end of a run, every one:
    /// they would keep ended processes' wakers until the next run).
    pub(crate) fn drop_cancelled_timers(&self) {
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers
            .heap
            .retain(|Reverse(entry)| !entry.cancelled.load(Ordering::Acquire));
        self.cancelled_timers.store(0, Ordering::Relaxed);
        let next = timers.heap.peek().map(|Reverse(entry)| entry.deadline);
        self.next_deadline
            .store(next.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Asks the kernel loop to stop every process and return.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.inbox.notify();
    }

    pub(crate) fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn new_task_state(&self, pid: Pid) -> Arc<TaskState> {
        Arc::new(TaskState {
            pid,
            state: AtomicU8::new(QUEUED),
            yield_requested: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            inbox: self.inbox.clone(),
        })
    }

    /// Records a message send for IPC tracing (`estactl run --trace`).
    pub(crate) fn trace_send(&self, header: &Header, payload_len: usize) {
        let Some(trace) = &self.trace else { return };
        let mut trace = trace.lock().unwrap_or_else(|p| p.into_inner());
        if trace.records.len() < MAX_TRACE {
            trace.records.push(TraceRecord {
                header: *header,
                payload_len,
            });
        } else {
            trace.dropped += 1;
        }
    }

    /// Takes the IPC trace recorded so far (empty unless tracing is on)
    /// and how many messages went past [`MAX_TRACE`] unrecorded.
    pub(crate) fn take_trace(&self) -> (Vec<TraceRecord>, u64) {
        self.trace.as_ref().map_or_else(Default::default, |trace| {
            let trace = std::mem::take(&mut *trace.lock().unwrap_or_else(|p| p.into_inner()));
            (trace.records, trace.dropped)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn closed(at: u64) -> AuditEvent {
        AuditEvent {
            at,
            kind: AuditKind::Closed,
            holder: Pid::from_u64(1),
            capability: None,
            detail: AuditDetail::Text(String::new()),
        }
    }

    fn idle_task(pid: u64, inbox: &Arc<Inbox>) -> Arc<TaskState> {
        Arc::new(TaskState {
            pid: Pid::from_u64(pid),
            state: AtomicU8::new(IDLE),
            yield_requested: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            inbox: inbox.clone(),
        })
    }

    fn drained(inbox: &Inbox) -> Vec<u64> {
        let mut out = Vec::new();
        inbox.drain_into(&mut out);
        out.into_iter().map(Pid::to_u64).collect()
    }

    /// During a turn a worker's wakes for its own kernel stay on its
    /// thread: counted there, invisible to other threads, drained there
    /// (in the order made, before the shared queue's); a wake for another
    /// kernel, or made outside a turn or a worker loop, goes to the shared
    /// queue.
    #[test]
    fn wakes_made_during_a_turn_stay_with_the_worker_until_it_drains_them() {
        let inbox = Arc::new(Inbox::default());
        let other = Arc::new(Inbox::default());
        idle_task(1, &inbox).wake_by_ref();
        assert_eq!(inbox.len(), 1, "made outside a worker loop: shared");
        let worker = inbox.enter_worker();
        idle_task(5, &inbox).wake_by_ref();
        assert_eq!(drained(&inbox), vec![1, 5], "outside a turn: shared");
        idle_task(1, &inbox).wake_by_ref();
        {
            let _turn = inbox.keep_wakes_local();
            idle_task(2, &inbox).wake_by_ref();
            idle_task(3, &inbox).wake_by_ref();
            idle_task(9, &other).wake_by_ref();
            assert_eq!(inbox.len(), 3, "this thread counts its own");
            assert_eq!(other.len(), 1, "another kernel's: shared");
            let seen = std::thread::scope(|scope| {
                scope
                    .spawn(|| (inbox.len(), drained(&inbox)))
                    .join()
                    .unwrap()
            });
            assert_eq!(
                seen,
                (1, vec![1]),
                "another thread sees the shared queue only"
            );
        }
        // Kept after the turn, until this thread drains them.
        idle_task(4, &inbox).wake_by_ref();
        assert_eq!(inbox.len(), 3);
        assert_eq!(drained(&inbox), vec![2, 3, 4]);
        assert!(inbox.is_empty());
        assert_eq!(drained(&other), vec![9]);
        drop(worker);
    }

    /// A worker loop of another kernel inside a turn (a restart policy
    /// running a kernel) sets aside what the outer turn kept and gives it
    /// back, and what a loop kept and never drained goes to its shared
    /// queue when the loop ends: no wake of either is lost or mixed.
    #[test]
    fn a_kernel_run_inside_a_turn_keeps_its_wakes_apart() {
        let outer = Arc::new(Inbox::default());
        let inner = Arc::new(Inbox::default());
        let outer_worker = outer.enter_worker();
        let turn = outer.keep_wakes_local();
        idle_task(1, &outer).wake_by_ref();
        {
            let _inner_worker = inner.enter_worker();
            assert_eq!(outer.len(), 0, "set aside");
            let _inner_turn = inner.keep_wakes_local();
            idle_task(7, &inner).wake_by_ref();
            idle_task(2, &outer).wake_by_ref();
            assert_eq!(inner.len(), 1);
            assert_eq!(outer.len(), 1, "the outer kernel's wake made here: shared");
        }
        assert_eq!(
            inner.len(),
            1,
            "left by the inner loop: in its shared queue"
        );
        assert_eq!(drained(&inner), vec![7]);
        idle_task(3, &outer).wake_by_ref();
        assert_eq!(drained(&outer), vec![1, 3, 2]);
        drop(turn);
        idle_task(4, &outer).wake_by_ref();
        drop(outer_worker);
        assert_eq!(drained(&outer), vec![4]);
    }

    /// A full audit buffer drops its oldest events, and the next drain
    /// starts with one `Lost` event saying how many (at the time of the
    /// newest dropped); the drain after it has none.
    #[test]
    fn an_audit_overflow_is_reported_once_by_the_next_drain() {
        let mut buffer = AuditBuffer::default();
        let made = AUDIT_BUFFER as u64 + 7;
        for at in 0..made {
            buffer.push(closed(at));
        }
        let events = buffer.drain(made);
        assert_eq!(events.len(), AUDIT_BUFFER + 1);
        let lost = &events[0];
        assert_eq!(
            (lost.kind, lost.holder, lost.at),
            (AuditKind::Lost, Pid::KERNEL, 6)
        );
        assert!(
            lost.detail
                .to_string()
                .starts_with("7 older audit events dropped"),
            "{}",
            lost.detail
        );
        assert_eq!(events[1].at, 7);
        assert_eq!(events.last().unwrap().at, made - 1);
        buffer.push(closed(made));
        let events = buffer.drain(made + 1);
        assert_eq!(events, [closed(made)]);
    }

    /// A worker that decided to sleep (and noted the notifications then)
    /// but was notified before it began to wait does not sleep through it.
    #[test]
    fn a_notification_between_deciding_to_sleep_and_waiting_is_not_lost() {
        let inbox = Inbox::default();
        let stop = AtomicBool::new(false);
        for notify in [Inbox::notify_one as fn(&Inbox), Inbox::notify] {
            let seen = inbox.notifications();
            notify(&inbox);
            let started = Instant::now();
            inbox.wait(Some(Duration::from_secs(120)), &stop, seen);
            assert!(started.elapsed() < Duration::from_secs(60));
        }
    }
}
