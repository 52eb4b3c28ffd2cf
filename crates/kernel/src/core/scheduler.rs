//! The scheduler: priority levels with aging, time slices measured in fuel,
//! round robin within a level, a minimum-service guarantee, and CPU
//! accounting with a fairness metric.
//!
//! This module is plain data with no I/O and no threads: the kernel loop
//! calls it under one lock with the kernel clock's `now` (nanoseconds), and
//! the property tests drive it with a simulated clock.
//!
//! # Policy
//!
//! 1. **Levels.** `IDLE 0 .. SYSTEM 5`. A ready process is queued FIFO in the
//!    queue of its *base* level; every queue is ordered by the time the
//!    process became ready (`waiting_since`), so its front has waited
//!    longest.
//! 2. **Aging.** A queued process's *effective* level is
//!    `base + floor(wait_ms / 1000)`, at most `base + 2` and never above
//!    `REALTIME` (a `SYSTEM` process stays `SYSTEM`).
//! 3. **Choosing.** [`Scheduler::next`] first serves a *starving* process:
//!    one whose wait has reached its minimum-service window (100 ms IDLE,
//!    50 ms LOW, 25 ms NORMAL and above) less a safety margin, and less one
//!    service turn for every other process queued (those may starve at the
//!    same time, and are served one at a time); it gets a short *service
//!    turn*. The windows hold while no more processes are ready than a
//!    window has service turns ([`SlicePolicy::served_in_window`]); past
//!    that, every ready process starves and they are served one turn each
//!    in order of waiting. A second of waiting is past every window, so a
//!    process has aged only once the windows could not be kept: aging then
//!    raises the level its service turn runs at (what may preempt it). Otherwise it takes the queue front with the
//!    highest effective level (the longest wait breaks ties), for one slice:
//!    its base level's slice, shortened when others of its level or above
//!    are queued so that all of them get a turn within the window
//!    (`(window - margin) / (queued + 1)`, at least one checkpoint). So
//!    round robin within a level meets the minimum-service window by itself
//!    and the starvation rule only has to step in across levels.
//!    `SYSTEM` has no slice.
//! 4. **Checkpoints.** A running guest reaches a checkpoint every
//!    `checkpoint_fuel` units. At each one [`Scheduler::checkpoint`] decides:
//!    - `SYSTEM` runs to completion: always continue;
//!    - a queued process of a higher effective level, or a starving one,
//!      preempts it (it re-enters its queue at the back);
//!    - at the end of a slice, it rotates to the back of its queue if another
//!      process of its effective level or above is ready, or once it has run
//!      its level's maximum consecutive slices; otherwise it starts its next
//!      slice without leaving the CPU.
//! 5. **Accounting.** CPU time (dispatch to stop) and runnable time (ready to
//!    blocked or exited) are kept per process. The fairness metric is
//!    `min over processes of actual_cpu / expected_cpu`, where a process's
//!    expected CPU is its level's total CPU shared in proportion to runnable
//!    time: within a level, CPU should follow the time spent wanting it.

use crate::core::process::ProcessState as State;
use estalogic_abi::{Pid, Priority};
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;

/// Ended processes whose accounts the fairness metric keeps.
pub const MAX_FINISHED: usize = 100_000;

/// Time-slice configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlicePolicy {
    /// Fuel units between two checkpoints (async yields to the kernel);
    /// at most [`SlicePolicy::MAX_CHECKPOINT_FUEL`].
    pub checkpoint_fuel: u64,
    /// Nominal fuel units per millisecond: turns the slice lengths in
    /// milliseconds into fuel, and fuel into virtual time. A kernel takes
    /// [`SlicePolicy::FUEL_PER_MS`]'s range.
    pub fuel_per_ms: u64,
    /// Checkpoints in a minimum-service turn.
    pub service_turn_checkpoints: u64,
    /// How long before its window expires a waiting process counts as
    /// starving, in nanoseconds.
    pub service_margin_ns: u64,
}

impl Default for SlicePolicy {
    fn default() -> Self {
        SlicePolicy {
            checkpoint_fuel: 100_000,
            fuel_per_ms: 1_000_000,
            service_turn_checkpoints: 1,
            service_margin_ns: 2_000_000,
        }
    }
}

const MS: u64 = 1_000_000;

impl SlicePolicy {
    /// The most fuel a guest may burn between checkpoints.
    pub const MAX_CHECKPOINT_FUEL: u64 = 1_000_000;

    /// The fuel per millisecond a kernel accepts (`KernelBuilder::build`
    /// refuses others): a thousand to a billion. At the ends a checkpoint
    /// of the most fuel stands for a second of virtual time, and one of
    /// the default fuel for 100 ns.
    pub const FUEL_PER_MS: std::ops::RangeInclusive<u64> = 1_000..=1_000_000_000;

    /// Base slice length of a level in milliseconds; `None` for `SYSTEM`,
    /// which runs to completion.
    pub const fn base_slice_ms(level: Priority) -> Option<u64> {
        match level {
            Priority::Idle => Some(100),
            Priority::Low => Some(50),
            Priority::Normal => Some(25),
            Priority::High => Some(15),
            Priority::Realtime => Some(10),
            Priority::System => None,
        }
    }

    /// How many slices in a row a process of a level may run before it must
    /// go back through its queue; `None` for `SYSTEM`.
    pub const fn max_consecutive_slices(level: Priority) -> Option<u64> {
        match level {
            Priority::Idle => Some(1),
            Priority::Low => Some(2),
            Priority::Normal => Some(4),
            Priority::High => Some(8),
            Priority::Realtime => Some(16),
            Priority::System => None,
        }
    }

    /// The longest a ready process of a base level may wait for the CPU.
    pub const fn service_window_ns(level: Priority) -> u64 {
        match level {
            Priority::Idle => 100 * MS,
            Priority::Low => 50 * MS,
            _ => 25 * MS,
        }
    }

    /// The slice of a level in fuel units; `None` for `SYSTEM`.
    pub fn slice_fuel(&self, level: Priority) -> Option<u64> {
        Self::base_slice_ms(level).map(|ms| ms.saturating_mul(self.fuel_per_ms))
    }

    /// The slice of a level in checkpoints (at least one).
    pub fn slice_checkpoints(&self, level: Priority) -> Option<u64> {
        self.slice_fuel(level)
            .map(|fuel| (fuel / self.checkpoint_fuel.max(1)).max(1))
    }

    /// Nanoseconds of virtual time one checkpoint stands for.
    pub fn checkpoint_ns(&self) -> u64 {
        self.checkpoint_fuel.saturating_mul(MS) / self.fuel_per_ms.max(1)
    }

    /// How many ready processes (running one included) the minimum-service
    /// window of `level` holds a service turn for: while no more are ready,
    /// each process of that level gets the CPU within its window (policy
    /// step 3). With more, a window cannot be kept by any policy that runs
    /// each of them for at least a turn, and every ready process is served
    /// one turn at a time, in order of waiting: its wait is at most one
    /// turn per other ready process. 250 at NORMAL and above with the
    /// default policy (25 ms of 100 µs turns), 500 LOW, 1,000 IDLE.
    pub fn served_in_window(&self, level: Priority) -> u64 {
        let turn = self
            .checkpoint_ns()
            .saturating_mul(self.service_turn_checkpoints.max(1))
            .max(1);
        Self::service_window_ns(level) / turn
    }
}

/// The effective level of a process of `base` that has waited `wait_ns`.
pub fn effective_level(base: Priority, wait_ns: u64) -> Priority {
    if base == Priority::System {
        return base;
    }
    // Comparisons, not a division: this runs for every dispatch.
    let boost = if wait_ns < 1000 * MS {
        0
    } else if wait_ns < 2000 * MS {
        1
    } else {
        2
    };
    let raised = (base as u8 + boost).min(Priority::Realtime as u8);
    Priority::try_from(raised).expect("a level below SYSTEM")
}

/// What [`Scheduler::next`] hands a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The process to run.
    pub pid: Pid,
    /// The level it runs at (base plus aging).
    pub level: Priority,
    /// True for a minimum-service turn.
    pub service_turn: bool,
}

/// What to do with a running process at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep running it.
    Continue,
    /// Taken off the CPU for a higher-level or starving process; queued.
    Preempted,
    /// Its slice ended and it went to the back of its queue.
    Rotated,
}

/// CPU accounting of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Nanoseconds on a CPU.
    pub cpu_ns: u64,
    /// Nanoseconds ready or running.
    pub runnable_ns: u64,
    /// The longest single wait in a run queue, in nanoseconds.
    pub max_wait_ns: u64,
    /// Turns on a CPU.
    pub turns: u64,
    /// Times it was preempted.
    pub preemptions: u64,
    /// Times it rotated to the back of its queue.
    pub rotations: u64,
}

#[derive(Debug)]
struct Entry {
    base: Priority,
    state: State,
    /// When it last became ready (meaningful while `Ready`).
    waiting_since: u64,
    /// When its current runnable period began.
    runnable_since: u64,
    /// While running: when this turn began, its level and budget.
    turn_started: u64,
    level: Priority,
    service_turn: bool,
    slice: u64,
    checkpoints_in_slice: u64,
    consecutive_slices: u64,
    account: Account,
}

/// Run queues, policy and accounting. See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    policy: SlicePolicy,
    /// Per level (by `Priority as usize`): the slice in checkpoints
    /// (`u64::MAX` for `SYSTEM`), and the wait after which a ready process
    /// counts as starving. Derived from `policy` once: `next` runs for
    /// every dispatch, and these cost divisions.
    full_slices: [u64; 6],
    starving_after: [u64; 6],
    /// `policy.checkpoint_ns()`, at least 1.
    checkpoint_ns: u64,
    /// How long a service turn lasts in the scheduler's model.
    service_turn_ns: u64,
    queues: [VecDeque<(Pid, u64)>; 6],
    /// Bit `level` set when `queues[level]` is not empty: `next` looks at
    /// occupied levels only (most loads use one or two of the six).
    occupied: u8,
    entries: HashMap<Pid, Entry>,
    queued: usize,
    running: usize,
    /// Accounts of ended processes for the fairness metric (the most
    /// recent [`MAX_FINISHED`]).
    finished: VecDeque<(Priority, Account)>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(policy: SlicePolicy) -> Self {
        let level = |index: usize| Priority::try_from(index as u8).expect("six levels");
        Scheduler {
            full_slices: std::array::from_fn(|i| {
                policy.slice_checkpoints(level(i)).unwrap_or(u64::MAX)
            }),
            starving_after: std::array::from_fn(|i| {
                SlicePolicy::service_window_ns(level(i)).saturating_sub(policy.service_margin_ns)
            }),
            checkpoint_ns: policy.checkpoint_ns().max(1),
            service_turn_ns: policy
                .checkpoint_ns()
                .max(1)
                .saturating_mul(policy.service_turn_checkpoints.max(1)),
            policy,
            queues: Default::default(),
            occupied: 0,
            entries: HashMap::default(),
            queued: 0,
            running: 0,
            finished: VecDeque::new(),
        }
    }

    /// The slice policy.
    pub fn policy(&self) -> &SlicePolicy {
        &self.policy
    }

    /// Makes room for `additional` more processes, so that admitting them
    /// does not grow the tables step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// A new process, ready at `now`.
    pub fn admit(&mut self, pid: Pid, base: Priority, now: u64) {
        self.entries.insert(
            pid,
            Entry {
                base,
                state: State::Waiting,
                waiting_since: now,
                runnable_since: now,
                turn_started: now,
                level: base,
                service_turn: false,
                slice: 1,
                checkpoints_in_slice: 0,
                consecutive_slices: 0,
                account: Account::default(),
            },
        );
        self.enqueue(pid, now, true);
    }

    fn enqueue(&mut self, pid: Pid, now: u64, new_runnable_period: bool) {
        let entry = self.entries.get_mut(&pid).expect("known process");
        entry.state = State::Ready;
        entry.waiting_since = now;
        if new_runnable_period {
            entry.runnable_since = now;
        }
        self.queues[entry.base as usize].push_back((pid, now));
        self.occupied |= 1 << entry.base as usize;
        self.queued += 1;
    }

    /// The occupied levels, lowest first (the order the scans ran in over
    /// all six, so ties are broken as before).
    fn occupied_levels(&self) -> impl Iterator<Item = usize> + use<> {
        debug_assert_eq!(
            self.occupied,
            self.queues
                .iter()
                .enumerate()
                .filter(|(_, queue)| !queue.is_empty())
                .fold(0, |bits, (level, _)| bits | 1 << level),
            "the occupied bits match the queues"
        );
        let mut bits = self.occupied;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let level = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                level
            })
        })
    }

    /// Takes the front of `level`'s queue, which is not empty.
    fn pop_front(&mut self, level: usize) -> (Pid, u64) {
        let queue = &mut self.queues[level];
        let front = queue.pop_front().expect("non-empty");
        if queue.is_empty() {
            self.occupied &= !(1 << level);
        }
        self.queued -= 1;
        front
    }

    /// A waiting process became ready (a message or a timer). Returns false
    /// if it was not waiting (already ready or running, or unknown).
    pub fn wake(&mut self, pid: Pid, now: u64) -> bool {
        match self.entries.get(&pid) {
            Some(entry) if matches!(entry.state, State::Waiting | State::Blocked) => {
                self.enqueue(pid, now, true);
                true
            }
            _ => false,
        }
    }

    /// The level whose queue front is starving and has waited longest, if
    /// any. A front starves once its wait reaches its window less the
    /// margin, and earlier by one service turn for every other process
    /// queued: each of those may need a service turn before its own window
    /// ends too, and they are served one at a time, so the last of them is
    /// still served in its window (policy step 3).
    fn starving(&self, now: u64) -> Option<usize> {
        let ahead = self
            .service_turn_ns
            .saturating_mul(self.queued.saturating_sub(1) as u64);
        let mut best: Option<(u64, usize)> = None;
        for level in self.occupied_levels() {
            let Some(&(_, since)) = self.queues[level].front() else {
                continue;
            };
            let trigger = self.starving_after[level].saturating_sub(ahead);
            if now.saturating_sub(since) >= trigger && best.is_none_or(|(b, _)| since < b) {
                best = Some((since, level));
            }
        }
        best.map(|(_, level)| level)
    }

    fn best_front(&self, now: u64) -> Option<(Priority, usize)> {
        let mut best: Option<(Priority, u64, usize)> = None;
        for level in self.occupied_levels() {
            let Some(&(_, since)) = self.queues[level].front() else {
                continue;
            };
            let base = Priority::try_from(level as u8).expect("six levels");
            let effective = effective_level(base, now.saturating_sub(since));
            let better = match best {
                None => true,
                Some((top, top_since, _)) => {
                    effective > top || (effective == top && since < top_since)
                }
            };
            if better {
                best = Some((effective, since, level));
            }
        }
        best.map(|(effective, _, level)| (effective, level))
    }

    /// Picks the next process to run and marks it running.
    pub fn next(&mut self, now: u64) -> Option<Dispatch> {
        if self.queued == 1 {
            return Some(self.next_of_one(now));
        }
        self.next_scanning(now)
    }

    /// [`Scheduler::next`] in general: the starving first, else the best
    /// front.
    fn next_scanning(&mut self, now: u64) -> Option<Dispatch> {
        let (level, queue_index, service_turn) = match self.starving(now) {
            Some(index) => {
                let (_, since) = self.queues[index][0];
                let base = Priority::try_from(index as u8).expect("six levels");
                (
                    effective_level(base, now.saturating_sub(since)),
                    index,
                    true,
                )
            }
            None => {
                let (level, index) = self.best_front(now)?;
                (level, index, false)
            }
        };
        let (pid, since) = self.pop_front(queue_index);
        self.running += 1;
        let base = Priority::try_from(queue_index as u8).expect("six levels");
        let slice = if service_turn {
            self.policy.service_turn_checkpoints.max(1)
        } else {
            let competitors: usize = self
                .occupied_levels()
                .filter(|&level| level >= queue_index)
                .map(|level| self.queues[level].len())
                .sum();
            let full = self.full_slices[level as usize];
            if competitors == 0 {
                full
            } else {
                let window = self.starving_after[base as usize];
                let fair = window / (competitors as u64 + 1) / self.checkpoint_ns;
                fair.clamp(1, full)
            }
        };
        Some(self.dispatch(pid, since, now, level, service_turn, slice))
    }

    /// [`Scheduler::next`] with exactly one process queued (a direct
    /// handoff's, and most dispatches of a lightly loaded kernel): the same
    /// decision without the scans. It starves if its wait has reached its
    /// trigger (a service turn); otherwise it runs at its aged level for a
    /// full slice, since nothing else is queued to share it with.
    fn next_of_one(&mut self, now: u64) -> Dispatch {
        let index = self
            .occupied_levels()
            .next()
            .expect("one process is queued");
        let (pid, since) = self.pop_front(index);
        debug_assert_eq!(self.queued, 0, "one process was queued");
        self.running += 1;
        let wait = now.saturating_sub(since);
        let base = Priority::try_from(index as u8).expect("six levels");
        let level = effective_level(base, wait);
        let service_turn = wait >= self.starving_after[index];
        let slice = self.alone_slice(level, service_turn);
        self.dispatch(pid, since, now, level, service_turn, slice)
    }

    /// The slice of a process dispatched with nothing else queued: a
    /// service turn's, or its level's full slice.
    fn alone_slice(&self, level: Priority, service_turn: bool) -> u64 {
        if service_turn {
            self.policy.service_turn_checkpoints.max(1)
        } else {
            self.full_slices[level as usize]
        }
    }

    /// Marks the process just taken off its queue as running.
    fn dispatch(
        &mut self,
        pid: Pid,
        since: u64,
        now: u64,
        level: Priority,
        service_turn: bool,
        slice: u64,
    ) -> Dispatch {
        let entry = self.entries.get_mut(&pid).expect("queued process is known");
        entry.slice = slice;
        entry.state = State::Running;
        entry.level = level;
        entry.service_turn = service_turn;
        entry.turn_started = now;
        entry.checkpoints_in_slice = 0;
        entry.consecutive_slices = 1;
        entry.account.turns += 1;
        entry.account.max_wait_ns = entry.account.max_wait_ns.max(now.saturating_sub(since));
        Dispatch {
            pid,
            level,
            service_turn,
        }
    }

    fn stop_turn(&mut self, pid: Pid, now: u64) -> &mut Entry {
        let entry = self
            .entries
            .get_mut(&pid)
            .expect("running process is known");
        debug_assert_eq!(entry.state, State::Running);
        entry.account.cpu_ns += now.saturating_sub(entry.turn_started);
        self.running -= 1;
        entry
    }

    /// A running process reached a checkpoint; see policy step 4.
    pub fn checkpoint(&mut self, pid: Pid, now: u64) -> Verdict {
        let (level, service_turn, in_slice, consecutive, slice) = {
            let Some(entry) = self.entries.get_mut(&pid) else {
                return Verdict::Continue;
            };
            entry.checkpoints_in_slice += 1;
            (
                entry.level,
                entry.service_turn,
                entry.checkpoints_in_slice,
                entry.consecutive_slices,
                entry.slice,
            )
        };
        if level == Priority::System {
            return Verdict::Continue;
        }
        if in_slice < slice {
            let higher = self.best_front(now).is_some_and(|(top, _)| top > level);
            if higher || (!service_turn && self.starving(now).is_some()) {
                self.requeue(pid, now, true);
                return Verdict::Preempted;
            }
            return Verdict::Continue;
        }
        // End of a slice.
        let contender = self.best_front(now).is_some_and(|(top, _)| top >= level)
            || self.starving(now).is_some();
        let max = SlicePolicy::max_consecutive_slices(level).unwrap_or(u64::MAX);
        if service_turn || contender || consecutive >= max {
            self.requeue(pid, now, false);
            return Verdict::Rotated;
        }
        let entry = self.entries.get_mut(&pid).expect("known");
        entry.checkpoints_in_slice = 0;
        entry.consecutive_slices += 1;
        entry.slice = self.full_slices[level as usize];
        Verdict::Continue
    }

    fn requeue(&mut self, pid: Pid, now: u64, preempted: bool) {
        let entry = self.stop_turn(pid, now);
        if preempted {
            entry.account.preemptions += 1;
        } else {
            entry.account.rotations += 1;
        }
        self.enqueue(pid, now, false);
    }

    /// The running process stopped running but is still ready (woken
    /// while it ran): back of its queue, neither preempted nor rotated.
    pub fn still_ready(&mut self, pid: Pid, now: u64) {
        self.stop_turn(pid, now);
        self.enqueue(pid, now, false);
    }

    /// The running process gave up the CPU (`yield_now`): back of its queue.
    pub fn yielded(&mut self, pid: Pid, now: u64) {
        self.requeue(pid, now, false);
    }

    /// The running process waits: for a message or timer (`Waiting`) or for
    /// I/O or room in a full mailbox (`Blocked`).
    pub fn blocked(&mut self, pid: Pid, now: u64) {
        self.stop_waiting(pid, now, State::Waiting);
    }

    /// Like [`Scheduler::blocked`] with an explicit waiting state.
    pub fn stop_waiting(&mut self, pid: Pid, now: u64, state: State) {
        debug_assert!(matches!(state, State::Waiting | State::Blocked));
        let entry = self.stop_turn(pid, now);
        entry.account.runnable_ns += now.saturating_sub(entry.runnable_since);
        entry.state = state;
    }

    /// The lifecycle state of a live process.
    pub fn state(&self, pid: Pid) -> Option<State> {
        self.entries.get(&pid).map(|e| e.state)
    }

    /// A process ended (running, ready or waiting); returns its account.
    pub fn exited(&mut self, pid: Pid, now: u64) -> Option<Account> {
        let state = self.entries.get(&pid)?.state;
        match state {
            State::Running => {
                self.stop_turn(pid, now);
            }
            State::Ready => {
                let base = self.entries[&pid].base;
                let queue = &mut self.queues[base as usize];
                if let Some(at) = queue.iter().position(|(p, _)| *p == pid) {
                    queue.remove(at);
                    if queue.is_empty() {
                        self.occupied &= !(1 << base as usize);
                    }
                    self.queued -= 1;
                }
            }
            State::Waiting | State::Blocked | State::Created | State::Completed => {}
        }
        let mut entry = self.entries.remove(&pid)?;
        if matches!(state, State::Ready | State::Running) {
            entry.account.runnable_ns += now.saturating_sub(entry.runnable_since);
        }
        if self.finished.len() >= MAX_FINISHED {
            self.finished.pop_front();
        }
        self.finished.push_back((entry.base, entry.account));
        Some(entry.account)
    }

    /// The only process in the run queues, if exactly one is there: the
    /// one [`Scheduler::next`] would pick.
    pub fn sole_ready(&self) -> Option<Pid> {
        if self.queued != 1 {
            return None;
        }
        let level = self.occupied_levels().next()?;
        self.queues[level].front().map(|&(pid, _)| pid)
    }

    /// The running process `pid` lent `ns` of its turn to a process it
    /// handed the CPU to (whose own turn accounts for that time) while it
    /// waited for an answer: that time counts neither as its CPU time nor
    /// as time it was runnable.
    pub fn lend(&mut self, pid: Pid, ns: u64) {
        if let Some(entry) = self.entries.get_mut(&pid)
            && entry.state == State::Running
        {
            entry.turn_started = entry.turn_started.saturating_add(ns);
            entry.runnable_since = entry.runnable_since.saturating_add(ns);
        }
    }

    /// Runs the waiting process `pid` at once, in a turn lent by the
    /// running process (a direct delivery): exactly what waking it and
    /// dispatching it would do with no other process queued, without the
    /// queue. `None` (nothing changed) if it is not waiting or others are
    /// queued.
    pub fn run_lent(&mut self, pid: Pid, now: u64) -> Option<Dispatch> {
        if self.queued != 0 {
            return None;
        }
        let entry = self.entries.get_mut(&pid)?;
        if !matches!(entry.state, State::Waiting | State::Blocked) {
            return None;
        }
        // Woken now and dispatched now: no wait, so no aging.
        entry.waiting_since = now;
        entry.runnable_since = now;
        let base = entry.base;
        let level = effective_level(base, 0);
        let service_turn = self.starving_after[base as usize] == 0;
        let slice = self.alone_slice(level, service_turn);
        self.running += 1;
        Some(self.dispatch(pid, now, now, level, service_turn, slice))
    }

    /// Processes in run queues.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Processes on a CPU now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Live processes the scheduler knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no process is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The account of a live process.
    pub fn account(&self, pid: Pid) -> Option<Account> {
        self.entries.get(&pid).map(|e| e.account)
    }

    /// `min(actual_cpu / expected_cpu)` over every process with expected CPU
    /// time (live and ended) up to `now`; `None` until some CPU time was
    /// used. See policy step 5.
    pub fn fairness(&self, now: u64) -> Option<f64> {
        // In one pass, without allocating: a process's ratio is
        // (cpu / runnable) * (level runnable / level cpu), so per level
        // the worst is the process with the least cpu / runnable (compared
        // by cross-multiplying), scaled once by its level's sums.
        let mut level_cpu = [0u128; 6];
        let mut level_runnable = [0u128; 6];
        let mut least: [Option<(u128, u128)>; 6] = [None; 6];
        let all = self
            .finished
            .iter()
            .copied()
            .chain(self.entries.values().map(|e| {
                let mut account = e.account;
                if matches!(e.state, State::Ready | State::Running) {
                    account.runnable_ns += now.saturating_sub(e.runnable_since);
                }
                if e.state == State::Running {
                    account.cpu_ns += now.saturating_sub(e.turn_started);
                }
                (e.base, account)
            }));
        for (base, account) in all {
            let level = base as usize;
            let (cpu, runnable) = (account.cpu_ns as u128, account.runnable_ns as u128);
            level_cpu[level] += cpu;
            level_runnable[level] += runnable;
            if runnable == 0 {
                continue;
            }
            if least[level].is_none_or(|(c, r)| cpu * r < c * runnable) {
                least[level] = Some((cpu, runnable));
            }
        }
        let mut worst: Option<f64> = None;
        for level in 0..6 {
            let (cpu_sum, runnable_sum) = (level_cpu[level], level_runnable[level]);
            let Some((cpu, runnable)) = least[level] else {
                continue;
            };
            if cpu_sum == 0 || runnable_sum == 0 {
                continue;
            }
            let expected = cpu_sum as f64 * runnable as f64 / runnable_sum as f64;
            let ratio = cpu as f64 / expected;
            worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
        }
        worst
    }
}

#[cfg(test)]
mod tests;
