//! The kernel loop: the kernel's own executor, which runs every process
//! under the scheduler's policy (not tokio's), plus the state it shares with
//! syscalls (process table, clock, timers, the wake inbox).
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
//! Each task has an atomic state: `IDLE` (waiting, in no queue), `QUEUED`
//! (in the inbox or a run queue), `RUNNING`, `NOTIFIED` (woken while
//! running). A wake moves `IDLE → QUEUED` and pushes the pid to the inbox,
//! or `RUNNING → NOTIFIED`. After a poll returns `Pending` the loop moves
//! `RUNNING → IDLE`; if that fails the task was notified and is still
//! runnable, so the loop applies the slice policy:
//!
//! 1. `yield_requested`: back of its run queue.
//! 2. a higher level is ready: front of its run queue (preempted).
//! 3. its slice is used up: back of its run queue (round robin).
//! 4. otherwise: keep polling it.
//!
//! # Ending
//!
//! The loop ends when no process is left. If processes remain but none is
//! ready, no timer is armed and nothing outside can wake them, they are
//! stopped with `DEADLOCKED`. A shutdown request stops every process with
//! `SHUTDOWN` at the next checkpoint.

use crate::core::process::{Process, ProcessState, ProcessTable};
use crate::core::scheduler::{RunQueues, SlicePolicy};
use crate::drivers::clock::Clock;
use estalogic_abi::{ErrorCode, Header, Pid, Priority};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;

/// Pids of tasks woken since the loop last looked, with a condition
/// variable to sleep on when nothing is ready.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<Vec<Pid>>,
    signal: Condvar,
}

impl Inbox {
    fn push(&self, pid: Pid) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid);
        self.signal.notify_one();
    }

    fn drain_into(&self, out: &mut Vec<Pid>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut queue);
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Sleeps until something is pushed, `stop` is set, or `timeout` passes.
    fn wait(&self, timeout: Option<Duration>, stop: &AtomicBool) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !queue.is_empty() || stop.load(Ordering::Acquire) {
            return;
        }
        match timeout {
            Some(timeout) => drop(self.signal.wait_timeout(queue, timeout)),
            None => drop(self.signal.wait(queue)),
        }
    }

    fn notify(&self) {
        let _guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.signal.notify_all();
    }
}

/// The scheduler-facing state of one task; also its waker.
#[derive(Debug)]
pub(crate) struct TaskState {
    pid: Pid,
    state: AtomicU8,
    /// Set by `yield_now`: the next `Pending` ends the slice.
    pub(crate) yield_requested: AtomicBool,
    inbox: Arc<Inbox>,
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

/// State shared by the kernel loop and every syscall.
#[derive(Debug)]
pub struct KernelShared {
    /// Live processes.
    pub(crate) table: RwLock<ProcessTable>,
    /// The kernel clock.
    pub(crate) clock: Clock,
    timers: Mutex<BinaryHeap<Reverse<(u64, Pid)>>>,
    inbox: Arc<Inbox>,
    shutdown: AtomicBool,
}

impl KernelShared {
    pub(crate) fn new(clock: Clock) -> Self {
        KernelShared {
            table: RwLock::new(ProcessTable::new()),
            clock,
            timers: Mutex::new(BinaryHeap::new()),
            inbox: Arc::new(Inbox::default()),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Wakes `pid` at `deadline` on the kernel clock.
    pub(crate) fn arm_timer(&self, deadline: u64, pid: Pid) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse((deadline, pid)));
    }

    fn next_timer(&self) -> Option<u64> {
        let timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers.peek().map(|Reverse((deadline, _))| *deadline)
    }

    fn take_expired_timers(&self, now: u64, out: &mut Vec<Pid>) {
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Reverse((deadline, pid))) = timers.peek().copied() {
            if deadline > now {
                break;
            }
            timers.pop();
            out.push(pid);
        }
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
            inbox: self.inbox.clone(),
        })
    }

    /// Records a message send for IPC tracing (`estactl run --trace`).
    pub(crate) fn trace_send(&self, header: &Header, payload_len: usize) {
        tracing::trace!(
            target: "estalogic::ipc",
            at_ns = header.timestamp,
            from = %header.source,
            to = %header.target,
            kind = ?header.message_type,
            seq = header.sequence,
            priority = header.priority.get(),
            bytes = payload_len,
            "send"
        );
    }
}

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
    /// Sends that failed.
    pub send_failures: u64,
    /// Messages left in its mailbox or dropped by its overflow policy.
    pub undelivered: u64,
    /// Fuel it consumed. Exact for processes that finished on their own;
    /// for stopped ones, counted at checkpoints (a lower bound).
    pub fuel_used: u64,
    /// Times a higher-level process (or a wakeup to look at) took the CPU
    /// from it at a checkpoint.
    pub preemptions: u64,
    /// Times it went to the back of its run queue: slice used up or
    /// `yield_now`.
    pub requeues: u64,
}

pub(crate) type ProcessFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A process as the kernel loop holds it.
pub(crate) struct Task {
    pub(crate) process: Arc<Process>,
    pub(crate) state: Arc<TaskState>,
    pub(crate) future: ProcessFuture,
    pub(crate) level: Priority,
    waker: Waker,
    checkpoints: u64,
    slice_used: u64,
    preemptions: u64,
    requeues: u64,
    lifecycle: ProcessState,
}

impl Task {
    pub(crate) fn new(process: Arc<Process>, state: Arc<TaskState>, future: ProcessFuture) -> Self {
        Task {
            level: process.priority,
            waker: Waker::from(state.clone()),
            process,
            state,
            future,
            checkpoints: 0,
            slice_used: 0,
            preemptions: 0,
            requeues: 0,
            lifecycle: ProcessState::Created,
        }
    }
}

/// The executor: owns every task and runs them to completion.
pub(crate) struct KernelLoop {
    shared: Arc<KernelShared>,
    policy: SlicePolicy,
    tasks: Vec<Option<Task>>,
    live: usize,
    queues: RunQueues,
    scratch: Vec<Pid>,
    reports: Vec<ProcessReport>,
    exit_listeners: Vec<std::sync::mpsc::Sender<ProcessReport>>,
}

enum SliceEnd {
    Finished(Outcome),
    Waiting,
    Yielded,
    Preempted,
    SliceUsed,
}

impl KernelLoop {
    pub(crate) fn new(shared: Arc<KernelShared>, policy: SlicePolicy) -> Self {
        KernelLoop {
            shared,
            policy,
            tasks: Vec::new(),
            live: 0,
            queues: RunQueues::new(),
            scratch: Vec::new(),
            reports: Vec::new(),
            exit_listeners: Vec::new(),
        }
    }

    /// Sends a copy of every process report, as the process ends, to `to`.
    pub(crate) fn notify_exits(&mut self, to: std::sync::mpsc::Sender<ProcessReport>) {
        self.exit_listeners.push(to);
    }

    /// Adds a spawned task; it is ready at once.
    pub(crate) fn add(&mut self, mut task: Task) {
        let pid = task.process.pid;
        let index = pid.index() as usize;
        if self.tasks.len() <= index {
            self.tasks.resize_with(index + 1, || None);
        }
        task.lifecycle = ProcessState::Ready;
        self.queues.push_back(pid, task.level);
        self.tasks[index] = Some(task);
        self.live += 1;
    }

    fn task_mut(&mut self, pid: Pid) -> Option<&mut Task> {
        self.tasks
            .get_mut(pid.index() as usize)?
            .as_mut()
            .filter(|task| task.process.pid == pid)
    }

    /// Moves woken tasks and tasks whose timers expired into the run queues.
    fn collect_wakeups(&mut self) {
        let mut woken = std::mem::take(&mut self.scratch);
        let now = self.shared.clock.now_nanos();
        self.shared.take_expired_timers(now, &mut woken);
        // A timer only matters if its task still waits; going through the
        // waker keeps the state machine in one place.
        for pid in woken.drain(..) {
            if let Some(task) = self.task_mut(pid) {
                task.waker.wake_by_ref();
            }
        }
        self.shared.inbox.drain_into(&mut woken);
        for pid in woken.drain(..) {
            let Some(task) = self.task_mut(pid) else {
                continue;
            };
            if task.lifecycle != ProcessState::Ready {
                task.lifecycle = ProcessState::Ready;
                let level = task.level;
                self.queues.push_back(pid, level);
            }
        }
        self.scratch = woken;
    }

    /// Runs until every process has ended; returns their reports in pid
    /// order of exit.
    pub(crate) fn run(mut self) -> Vec<ProcessReport> {
        loop {
            self.collect_wakeups();
            if self.shared.shutdown_requested() {
                self.stop_all(ErrorCode::SHUTDOWN);
            }
            if self.live == 0 {
                break;
            }
            let Some((pid, _)) = self.queues.pop() else {
                match self.shared.next_timer() {
                    Some(deadline) if self.shared.clock.is_virtual() => {
                        self.shared.clock.advance_to(deadline)
                    }
                    Some(deadline) => {
                        let wait = self.shared.clock.until(deadline);
                        self.shared.inbox.wait(Some(wait), &self.shared.shutdown);
                    }
                    None => self.stop_all(ErrorCode::DEADLOCKED),
                }
                continue;
            };
            self.run_slice(pid);
        }
        self.reports
    }

    fn run_slice(&mut self, pid: Pid) {
        let policy = self.policy;
        let shared = &self.shared;
        let queues = &self.queues;
        let Some(task) = self.tasks[pid.index() as usize].as_mut() else {
            return;
        };
        task.lifecycle = ProcessState::Running;
        task.state.state.store(RUNNING, Ordering::Release);
        let slice = policy.slice_checkpoints(task.level);
        let end = loop {
            let mut cx = Context::from_waker(&task.waker);
            if let Poll::Ready(outcome) = task.future.as_mut().poll(&mut cx) {
                break SliceEnd::Finished(outcome);
            }
            if task
                .state
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                task.lifecycle = ProcessState::Waiting;
                break SliceEnd::Waiting;
            }
            // Notified while running: still runnable.
            task.state.state.store(RUNNING, Ordering::Release);
            if task.state.yield_requested.swap(false, Ordering::AcqRel) {
                break SliceEnd::Yielded;
            }
            task.checkpoints += 1;
            task.slice_used += 1;
            shared
                .clock
                .advance_by(policy.checkpoint_fuel * 1_000_000 / policy.fuel_per_ms.max(1));
            if slice.is_some_and(|slice| task.slice_used >= slice) {
                break SliceEnd::SliceUsed;
            }
            if task.level != Priority::System
                && (queues.has_higher_than(task.level)
                    || !shared.inbox.is_empty()
                    || shared.shutdown_requested())
            {
                break SliceEnd::Preempted;
            }
        };
        match end {
            SliceEnd::Finished(outcome) => self.finish(pid, outcome),
            SliceEnd::Waiting => {}
            SliceEnd::Yielded | SliceEnd::SliceUsed => self.requeue(pid, false),
            SliceEnd::Preempted => self.requeue(pid, true),
        }
    }

    fn requeue(&mut self, pid: Pid, front: bool) {
        let Some(task) = self.task_mut(pid) else {
            return;
        };
        task.state.state.store(QUEUED, Ordering::Release);
        task.lifecycle = ProcessState::Ready;
        if front {
            task.preemptions += 1;
        } else {
            task.requeues += 1;
            task.slice_used = 0;
        }
        let level = task.level;
        if front {
            self.queues.push_front(pid, level);
        } else {
            self.queues.push_back(pid, level);
        }
    }

    fn finish(&mut self, pid: Pid, outcome: Outcome) {
        let Some(task) = self.tasks[pid.index() as usize].take() else {
            return;
        };
        self.live -= 1;
        self.queues.remove(pid);
        let process = self
            .shared
            .table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pid)
            .unwrap_or_else(|| task.process.clone());
        let undelivered = {
            let mut slot = process.lock_mailbox();
            slot.waiter = None;
            slot.mailbox.drain().len() as u64 + slot.mailbox.dropped()
        };
        let counters = &process.counters;
        let report = ProcessReport {
            pid,
            module: process.module.to_string(),
            priority: process.priority,
            status: outcome.status,
            sent: counters.sent.load(Ordering::Relaxed),
            received: counters.received.load(Ordering::Relaxed),
            send_failures: counters.send_failures.load(Ordering::Relaxed),
            undelivered,
            fuel_used: outcome.fuel_used,
            preemptions: task.preemptions,
            requeues: task.requeues,
        };
        self.exit_listeners
            .retain(|listener| listener.send(report.clone()).is_ok());
        self.reports.push(report);
        // Dropping the future drops the Store; a suspended fiber is unwound.
        drop(task);
    }

    fn stop_all(&mut self, reason: ErrorCode) {
        let pids: Vec<Pid> = self.tasks.iter().flatten().map(|t| t.process.pid).collect();
        for pid in pids {
            let checkpoint_fuel = self.policy.checkpoint_fuel;
            let fuel = self
                .task_mut(pid)
                .map_or(0, |task| task.checkpoints * checkpoint_fuel);
            self.finish(
                pid,
                Outcome {
                    status: ExitStatus::Stopped(reason),
                    fuel_used: fuel,
                },
            );
        }
    }
}
