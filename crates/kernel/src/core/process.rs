//! Processes and the process table: generational pids, per-process
//! mailboxes, and routing a message to its target.
//!
//! # Invariants
//!
//! 1. A slot's generation grows every time the slot is freed, so a pid held
//!    by anyone after its process exited names nothing: [`ProcessTable::get`]
//!    checks the generation, and a send to it fails with `NO_SUCH_PROCESS`.
//!    A restarted process never receives a stale peer's mail. A slot whose
//!    generation reaches `u32::MAX` is retired rather than wrapped.
//! 2. Slot 0 is the kernel ([`Pid::KERNEL`]) and never holds a process.
//! 3. Messages enter mailboxes only through `crate::core::routing`, which
//!    applies the overflow policy and wakes the target.

use crate::core::kernel_shared::TaskState;
use crate::core::message_router::Mailbox;
use estalogic_abi::{Pid, Priority};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;

/// The lifecycle states of a process (BRIEF §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// Spawned, not yet scheduled.
    Created,
    /// In a run queue.
    Ready,
    /// Executing on a worker.
    Running,
    /// Waiting for a message or a timeout.
    Waiting,
    /// Waiting for I/O or for room in a full mailbox.
    Blocked,
    /// Exited, trapped or was stopped.
    Completed,
}

/// A mailbox together with the waker of a receiver waiting on it and the
/// senders blocked on it (`BlockSender` mode).
#[derive(Debug)]
pub struct MailboxSlot {
    /// The queued messages.
    pub mailbox: Mailbox,
    /// The owner's waker, kept from one wait to the next so that waiting
    /// again clones nothing.
    waker: Option<Waker>,
    /// True while the owner waits in `receive` ([`MailboxSlot::park`]); the
    /// first message after that wakes it ([`MailboxSlot::wake_waiter`]).
    waiting: bool,
    /// Senders waiting for room, oldest first.
    pub blocked_senders: VecDeque<Waker>,
    /// Calls the owner took and has not answered, oldest first (see
    /// [`OwedCall`]).
    pub(crate) owed: VecDeque<OwedCall>,
}

/// A call (a message with [`Flags::CALL`](estalogic_abi::Flags::CALL)) a
/// process took and has not answered: its caller waits for the answer. If
/// the process ends first, the kernel answers it with a
/// `DELIVERY_FAILURE` notice (`routing::close_mailbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OwedCall {
    /// Who waits.
    pub(crate) caller: Pid,
    /// The call's sequence number: the answer's correlation id.
    pub(crate) sequence: u64,
    /// The call's type.
    pub(crate) message_type: estalogic_abi::MessageType,
}

/// The most unanswered calls a process owes at once; past this the oldest
/// is forgotten (its caller's timeout still ends its wait).
pub(crate) const MAX_OWED_CALLS: usize = 4096;

impl MailboxSlot {
    /// An empty slot around `mailbox`.
    pub fn new(mailbox: Mailbox) -> Self {
        MailboxSlot {
            mailbox,
            waker: None,
            waiting: false,
            blocked_senders: VecDeque::new(),
            owed: VecDeque::new(),
        }
    }

    /// The owner waits: the next [`MailboxSlot::wake_waiter`] wakes `waker`.
    pub fn park(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
        self.waiting = true;
    }

    /// The owner stopped waiting (its receive timed out).
    pub fn unpark(&mut self) {
        self.waiting = false;
    }

    /// The owner waits again with the waker it parked with last: a
    /// handler going back to the wait its own loop parked in, after a call
    /// made inside another's send whose own looks (a `receive` with timeout
    /// 0) ended that wait. False if it never parked.
    pub fn rearm(&mut self) -> bool {
        self.waiting = self.waker.is_some();
        self.waiting
    }

    /// True while the owner waits.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Wakes the owner if it waits (once: it is no longer waiting after);
    /// returns whether it did.
    pub fn wake_waiter(&mut self) -> bool {
        if !std::mem::take(&mut self.waiting) {
            return false;
        }
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
        true
    }

    /// Forgets the owner's waker: the mailbox is closed.
    pub fn close(&mut self) {
        self.waiting = false;
        self.waker = None;
    }
}

/// Per-process message counters.
///
/// `sent`, `received`, `send_failures` and `blocked_sends` are written only
/// by the process's own syscalls, which run on one worker at a time (turns
/// are ordered by the kernel loop's lock), so the hot ones (`sent`,
/// `received`) are bumped with [`Counters::bump_own`]: a plain load and
/// store, no atomic read-modify-write. `delivery_failures` is bumped by the
/// kernel on behalf of others and is always a `fetch_add`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages this process sent successfully.
    pub sent: AtomicU64,
    /// Messages this process received.
    pub received: AtomicU64,
    /// Sends by this process that failed at once (full mailbox, no such
    /// process).
    pub send_failures: AtomicU64,
    /// Times a send of this process blocked on a full `BlockSender` mailbox.
    pub blocked_sends: AtomicU64,
    /// Messages this process sent that were later dropped or undeliverable
    /// (each reported back to it with a `DELIVERY_FAILURE` notice).
    pub delivery_failures: AtomicU64,
}

impl Counters {
    /// Adds `n` to one of the counters only the process itself writes (see
    /// the type docs).
    pub fn bump_own(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

/// The shared, kernel-side record of a live process.
#[derive(Debug)]
pub struct Process {
    /// Its pid.
    pub pid: Pid,
    /// The module it runs.
    pub module: Arc<str>,
    /// Its base scheduling level.
    pub priority: Priority,
    /// Its mailbox. A `parking_lot` mutex: the lock every message takes
    /// twice, without `std`'s poisoning bookkeeping.
    pub mailbox: parking_lot::Mutex<MailboxSlot>,
    /// Message counters.
    pub counters: Counters,
    /// False once the process has ended: blocked senders stop waiting.
    pub alive: AtomicBool,
    /// True once its code has ended in a turn lent to it (a handoff, a
    /// direct delivery) whose reap is deferred: [`ProcessTable::lookup`]
    /// then prefers another live process of its module (its mailbox stays
    /// open until the reap, so a same-state restart still inherits what
    /// reaches it meanwhile).
    pub(crate) ended: AtomicBool,
    /// True if it may receive messages (broadcasts skip it otherwise).
    pub receives: bool,
    /// Its manifest asks for a restart when it fails (`restart:
    /// on_failure`).
    pub restart_on_failure: bool,
    /// Its manifest names a supervisor to notify when it exits.
    pub supervised: bool,
    /// It is a handler process: its entry point runs synchronously on
    /// whatever stack polls it, so it is never lent a turn on another
    /// process's fiber.
    pub handler: bool,
    next_sequence: AtomicU64,
    /// Messages its receives' searches looked at past their free
    /// allowance and not yet charged to it (written only by its own
    /// syscalls, like the counters it bumps with [`Counters::bump_own`]).
    pub scanned: AtomicU64,
    /// [`NO_CAPABILITIES`], [`MAY_HOLD_CAPABILITIES`] or
    /// [`CAPABILITIES_CLOSED`]: lets an exit skip the capability engine's
    /// lock when the process never held a capability.
    capabilities: AtomicU8,
    /// Processes it sent messages to that were restarted with their mail
    /// (a same-state restart): `(old, new)` pids, the most recent
    /// [`MAX_SUCCESSORS`], so that a call waiting for an answer from the
    /// old one accepts it from the new one, which now holds the request.
    successors: parking_lot::Mutex<Vec<(Pid, Pid)>>,
    /// `successors` is not empty (read without its lock).
    has_successors: AtomicBool,
    /// Its run state in the kernel loop, set once at spawn: lets a sender
    /// see, without a lock, whether it waits idle (a direct delivery's
    /// first look; the delivery checks again under the loop's lock).
    task: std::sync::OnceLock<Arc<TaskState>>,
    /// Messages in its mailbox as of the last unlock (stored under the
    /// lock by [`MailboxGuard`]): a look without the lock.
    queued: AtomicUsize,
    /// The mailbox slot's `owed` list is not empty (written under the
    /// mailbox lock; read without it by the owner's own replies, the only
    /// other writer being the owner's own takes).
    pub(crate) owes_calls: AtomicBool,
    /// The process its latest call went to (`Pid::to_u64`; 0 before
    /// any): the successor record a call waits on is the last one
    /// [`Process::note_successor`] forgets.
    pub(crate) awaited_from: AtomicU64,
}

/// The lock on a process's mailbox ([`Process::lock_mailbox`]); on unlock
/// it records how many messages the mailbox holds, so that a look without
/// the lock can tell whether it was empty.
pub struct MailboxGuard<'a> {
    slot: parking_lot::MutexGuard<'a, MailboxSlot>,
    queued: &'a AtomicUsize,
}

impl std::ops::Deref for MailboxGuard<'_> {
    type Target = MailboxSlot;

    fn deref(&self) -> &MailboxSlot {
        &self.slot
    }
}

impl std::ops::DerefMut for MailboxGuard<'_> {
    fn deref_mut(&mut self) -> &mut MailboxSlot {
        &mut self.slot
    }
}

impl Drop for MailboxGuard<'_> {
    fn drop(&mut self) {
        self.queued
            .store(self.slot.mailbox.len(), Ordering::Release);
    }
}

/// The most same-state restarts of its peers a process remembers.
pub const MAX_SUCCESSORS: usize = 16;

/// The process was never granted a capability.
const NO_CAPABILITIES: u8 = 0;
/// The process was granted at least one capability.
const MAY_HOLD_CAPABILITIES: u8 = 1;
/// The process exited: it is granted nothing more.
const CAPABILITIES_CLOSED: u8 = 2;

impl Process {
    /// A new process record with an empty mailbox.
    pub fn new(
        pid: Pid,
        module: Arc<str>,
        priority: Priority,
        mailbox: Mailbox,
        receives: bool,
    ) -> Self {
        let queued = AtomicUsize::new(mailbox.len());
        Process {
            queued,
            pid,
            module,
            priority,
            mailbox: parking_lot::Mutex::new(MailboxSlot::new(mailbox)),
            counters: Counters::default(),
            alive: AtomicBool::new(true),
            ended: AtomicBool::new(false),
            receives,
            restart_on_failure: false,
            supervised: false,
            handler: false,
            // From 1: correlation 0 means "none", so no message may have
            // sequence 0 (a reply without a correlation would answer it).
            next_sequence: AtomicU64::new(1),
            scanned: AtomicU64::new(0),
            capabilities: AtomicU8::new(NO_CAPABILITIES),
            successors: parking_lot::Mutex::new(Vec::new()),
            has_successors: AtomicBool::new(false),
            task: std::sync::OnceLock::new(),
            owes_calls: AtomicBool::new(false),
            awaited_from: AtomicU64::new(0),
        }
    }

    /// Records its run state (once, at spawn).
    pub(crate) fn set_task(&self, task: Arc<TaskState>) {
        let _ = self.task.set(task);
    }

    /// True if it waits idle in a receive (parked, no wake pending), as
    /// far as a look without a lock can tell.
    pub(crate) fn looks_idle(&self) -> bool {
        self.task.get().is_some_and(|task| task.is_idle())
    }

    /// Records that `old`, which holds mail of this process, was restarted
    /// as `new` with that mail.
    ///
    /// A record that led to `old` now leads to `new` (so a chain of
    /// restarts is one step). Past [`MAX_SUCCESSORS`] records the oldest
    /// is forgotten, but not one about the process this one's latest call
    /// went to: a wait for that answer accepts it from `new` only through
    /// it.
    pub(crate) fn note_successor(&self, old: Pid, new: Pid) {
        let awaited = Pid::from_u64(self.awaited_from.load(Ordering::Relaxed));
        let mut successors = self.successors.lock();
        for record in successors.iter_mut().filter(|record| record.1 == old) {
            record.1 = new;
        }
        if successors.len() >= MAX_SUCCESSORS {
            let oldest = successors
                .iter()
                .position(|&(from, _)| from != awaited)
                .unwrap_or(0);
            successors.remove(oldest);
        }
        successors.push((old, new));
        self.has_successors.store(true, Ordering::Release);
    }

    /// The process now holding the mail this process sent to `pid`: `pid`
    /// itself, or the latest same-state restart of it.
    pub(crate) fn successor_of(&self, pid: Pid) -> Pid {
        if !self.has_successors.load(Ordering::Acquire) {
            return pid;
        }
        let successors = self.successors.lock();
        let mut current = pid;
        // Each step moves to a later restart; a chain is at most as long
        // as the list.
        for _ in 0..successors.len() {
            match successors.iter().find(|(old, _)| *old == current) {
                Some((_, new)) => current = *new,
                None => break,
            }
        }
        current
    }

    /// Sets what its manifest says happens when it exits: a restart on
    /// failure, a supervisor to notify.
    pub fn with_exit_policy(mut self, restart_on_failure: bool, supervised: bool) -> Self {
        self.restart_on_failure = restart_on_failure;
        self.supervised = supervised;
        self
    }

    /// Marks it as a handler process.
    pub fn as_handler(mut self, handler: bool) -> Self {
        self.handler = handler;
        self
    }

    /// Records that the process is about to be granted a capability.
    /// Returns false if it already exited (grant nothing then). Call with
    /// the capability engine locked, and grant before unlocking it: an exit
    /// that closes the capabilities concurrently then either sees this mark
    /// and revokes under the same lock, after the grant, or closed them
    /// first and this returns false.
    pub(crate) fn open_capabilities(&self) -> bool {
        self.capabilities
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state != CAPABILITIES_CLOSED).then_some(MAY_HOLD_CAPABILITIES)
            })
            .is_ok()
    }

    /// Closes the process's capabilities at exit. Returns true if it may
    /// hold some, which must then be revoked (with the engine locked).
    pub(crate) fn close_capabilities(&self) -> bool {
        self.capabilities
            .swap(CAPABILITIES_CLOSED, Ordering::AcqRel)
            == MAY_HOLD_CAPABILITIES
    }

    /// The next sequence number for a message this process sends. Only the
    /// process's own syscalls (send, broadcast, the acknowledgement of a
    /// message it takes) call this, one worker at a time, so a load and a
    /// store suffice (see [`Counters`]).
    pub fn next_sequence(&self) -> u64 {
        let sequence = self.next_sequence.load(Ordering::Relaxed);
        self.next_sequence
            .store(sequence.wrapping_add(1).max(1), Ordering::Relaxed);
        sequence
    }

    /// Locks the mailbox. Every mutation under it is a single push or
    /// pop, so a thread that panicked while holding it left it consistent.
    pub fn lock_mailbox(&self) -> MailboxGuard<'_> {
        MailboxGuard {
            slot: self.mailbox.lock(),
            queued: &self.queued,
        }
    }

    /// True if its mailbox was empty when last unlocked: a post that
    /// completed before this look (in the caller's view) is counted; one
    /// concurrent with it may not be, and is then ordered after the
    /// caller's action as any concurrent post may be.
    pub(crate) fn looks_empty(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    process: Option<Arc<Process>>,
    /// Its process is queued for its module's name (see [`Name`]).
    waits_for_name: bool,
}

/// All live processes, indexed by pid, plus the module-name directory.
#[derive(Debug)]
pub struct ProcessTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Module name → its registered process and the module's other live
    /// processes that asked for the name. FxHash: names come from loaded
    /// manifests, and every spawn and exit looks one up.
    names: FxHashMap<Arc<str>, Name>,
    live: usize,
}

/// True if `pid` names a live process queued for its module's name (a
/// pid in a [`Name`]'s queue whose process left since is skipped).
fn waits_for_name(slots: &[Slot], pid: Pid) -> bool {
    slots
        .get(pid.index() as usize)
        .is_some_and(|slot| slot.generation == pid.generation() && slot.waits_for_name)
}

/// A module name's registration: the process [`ProcessTable::lookup`]
/// finds, and who takes the name when it leaves.
#[derive(Debug)]
struct Name {
    holder: Pid,
    /// The module's other processes that asked for the name, oldest first:
    /// the first still alive takes it when the holder leaves. Pids that
    /// left are skipped then, and swept out once they outnumber the live
    /// ones, so the queue stays within about twice the module's processes.
    next: VecDeque<Pid>,
    /// How many pids in `next` are of live processes.
    waiting: usize,
}

impl Name {
    fn new(holder: Pid) -> Self {
        Name {
            holder,
            next: VecDeque::new(),
            waiting: 0,
        }
    }
}

impl Default for ProcessTable {
    fn default() -> Self {
        ProcessTable {
            // Slot 0 is the kernel's.
            slots: vec![Slot {
                generation: 0,
                process: None,
                waits_for_name: false,
            }],
            free: Vec::new(),
            names: FxHashMap::default(),
            live: 0,
        }
    }
}

impl ProcessTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allocates a pid and stores the process `make` builds for it. If
    /// `register_name` is set and the name is free, the process becomes the
    /// one [`ProcessTable::lookup`] finds for its module name; if it is
    /// held, the process takes it when the holder and the module's older
    /// processes that asked for it have left.
    pub fn insert(
        &mut self,
        register_name: bool,
        make: impl FnOnce(Pid) -> Arc<Process>,
    ) -> Arc<Process> {
        self.insert_named(register_name, |_| false, make)
    }

    /// [`ProcessTable::insert`], and the process also takes its module's
    /// name from a live holder for which `take_over` is true (a restart
    /// replacing a process still on its way out: the name then stays with
    /// the replacement when the old one is removed).
    pub fn insert_named(
        &mut self,
        register_name: bool,
        take_over: impl Fn(Pid) -> bool,
        make: impl FnOnce(Pid) -> Arc<Process>,
    ) -> Arc<Process> {
        let pid = match self.free.pop() {
            Some(index) => Pid::new(index, self.slots[index as usize].generation),
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 processes");
                self.slots.push(Slot {
                    generation: 1,
                    process: None,
                    waits_for_name: false,
                });
                Pid::new(index, 1)
            }
        };
        let process = make(pid);
        debug_assert_eq!(process.pid, pid);
        let mut waits_for_name = false;
        if register_name {
            match self.names.get_mut(&process.module) {
                None => {
                    self.names.insert(process.module.clone(), Name::new(pid));
                }
                // The one it replaces is on its way out: it never takes
                // the name back.
                Some(name) if take_over(name.holder) => name.holder = pid,
                Some(name) => {
                    name.next.push_back(pid);
                    name.waiting += 1;
                    waits_for_name = true;
                }
            }
        }
        let slot = &mut self.slots[pid.index() as usize];
        slot.process = Some(process.clone());
        slot.waits_for_name = waits_for_name;
        self.live += 1;
        process
    }

    /// The live process with exactly this pid (index and generation).
    pub fn get(&self, pid: Pid) -> Option<&Arc<Process>> {
        let slot = self.slots.get(pid.index() as usize)?;
        match &slot.process {
            Some(process) if slot.generation == pid.generation() => Some(process),
            _ => None,
        }
    }

    /// Removes a process; its slot's generation moves on so the old pid
    /// names nothing from now on.
    pub fn remove(&mut self, pid: Pid) -> Option<Arc<Process>> {
        self.get(pid)?;
        let slot = &mut self.slots[pid.index() as usize];
        let process = slot.process.take();
        let waited_for_name = std::mem::take(&mut slot.waits_for_name);
        self.live -= 1;
        // A slot whose generations are used up is retired, never reused:
        // wrapping would let an old pid name a new process.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(pid.index());
        }
        if let Some(process) = &process {
            self.release_name(process, waited_for_name);
        }
        process
    }

    /// What `process`'s leaving does to its module's name: held, it passes
    /// to the oldest of the module's live processes that asked for it (or
    /// is freed); waiting for it, it stops waiting.
    fn release_name(&mut self, process: &Process, waited_for_name: bool) {
        let pid = process.pid;
        let Some(name) = self.names.get_mut(&process.module) else {
            return;
        };
        let slots = &mut self.slots;
        if name.holder == pid {
            while let Some(next) = name.next.pop_front() {
                if waits_for_name(slots, next) {
                    slots[next.index() as usize].waits_for_name = false;
                    name.holder = next;
                    name.waiting -= 1;
                    return;
                }
            }
            debug_assert_eq!(name.waiting, 0, "every waiting pid is queued");
            self.names.remove(&process.module);
        } else if waited_for_name {
            // Counted out now; skipped when its turn comes (its slot no
            // longer holds it), or swept out once the pids that left
            // outnumber the rest.
            name.waiting -= 1;
            if name.next.len() > 2 * name.waiting + 16 {
                name.next.retain(|&next| waits_for_name(slots, next));
                debug_assert_eq!(name.next.len(), name.waiting);
            }
        }
    }

    /// The running process a module name names: its holder, unless the
    /// holder has ended and waits for its deferred reap
    /// (`Process::ended`); then the oldest other process of the module
    /// that runs on, if any (`lookup`: "the pid of the running process").
    pub fn lookup(&self, name: &str) -> Option<Pid> {
        let name = self.names.get(name)?;
        let running = |pid: Pid| {
            self.get(pid)
                .is_some_and(|process| !process.ended.load(Ordering::Acquire))
        };
        if running(name.holder) {
            return Some(name.holder);
        }
        name.next
            .iter()
            .copied()
            .find(|&pid| waits_for_name(&self.slots, pid) && running(pid))
    }

    /// The process holding a module's name, ended or not: one that ended
    /// in a lent turn keeps its mailbox open until its reap, and what
    /// reaches it then goes to its same-state restart (a kernel notice to
    /// its module, when no process of it runs; see `notify_module`).
    pub fn holder(&self, name: &str) -> Option<Pid> {
        self.names.get(name).map(|name| name.holder)
    }

    /// Every live process.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Process>> {
        self.slots.iter().filter_map(|slot| slot.process.as_ref())
    }

    /// Number of live processes.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True if no process is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message_router::OverflowMode;

    fn spawn(table: &mut ProcessTable, name: &str) -> Pid {
        table
            .insert(true, |pid| {
                Arc::new(Process::new(
                    pid,
                    name.into(),
                    Priority::Normal,
                    Mailbox::new(4, OverflowMode::NotifySender),
                    true,
                ))
            })
            .pid
    }

    fn record() -> Process {
        Process::new(
            Pid::new(1, 1),
            "p".into(),
            Priority::Normal,
            Mailbox::new(4, OverflowMode::NotifySender),
            true,
        )
    }

    /// Counts its wakes.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_replacement_takes_the_name_and_keeps_it_when_the_old_one_goes() {
        let mut table = ProcessTable::new();
        let old = spawn(&mut table, "sup");
        let make = |pid| {
            Arc::new(Process::new(
                pid,
                "sup".into(),
                Priority::Normal,
                Mailbox::new(4, OverflowMode::NotifySender),
                true,
            ))
        };
        let second = table.insert(true, make).pid;
        assert_eq!(
            table.lookup("sup"),
            Some(old),
            "a plain insert leaves the name"
        );
        let unrelated = table
            .insert_named(true, |holder| holder == second, make)
            .pid;
        assert_eq!(
            table.lookup("sup"),
            Some(old),
            "only from the one it replaces"
        );
        let replacement = table.insert_named(true, |holder| holder == old, make).pid;
        assert_eq!(table.lookup("sup"), Some(replacement));
        table.remove(unrelated);
        table.remove(old);
        table.remove(second);
        assert_eq!(
            table.lookup("sup"),
            Some(replacement),
            "kept past the old one"
        );
        table.remove(replacement);
        assert_eq!(table.lookup("sup"), None);
    }

    #[test]
    fn a_parked_owner_is_woken_once_per_wait_and_never_after_close() {
        let count = Arc::new(CountingWaker(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let wakes = || count.0.load(Ordering::Relaxed);
        let mut slot = MailboxSlot::new(Mailbox::new(4, OverflowMode::NotifySender));
        // Nobody waits yet: nothing to wake.
        assert!(!slot.wake_waiter());
        slot.park(&waker);
        assert!(slot.is_waiting());
        assert!(slot.wake_waiter());
        assert_eq!(wakes(), 1);
        // One wake per wait: a second message finds the owner awake.
        assert!(!slot.wake_waiter());
        assert_eq!(wakes(), 1);
        // Waiting again with the same waker reuses it.
        slot.park(&waker);
        assert!(slot.wake_waiter());
        assert_eq!(wakes(), 2);
        // A receive that timed out no longer waits.
        slot.park(&waker);
        slot.unpark();
        assert!(!slot.wake_waiter());
        // A closed mailbox forgets the waker.
        slot.park(&waker);
        slot.close();
        assert!(!slot.is_waiting());
        assert!(!slot.wake_waiter());
        assert_eq!(wakes(), 2);
        drop(slot);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "only the test's waker is left"
        );
    }

    #[test]
    fn an_exit_revokes_only_if_a_capability_was_ever_granted() {
        let never = record();
        assert!(!never.close_capabilities(), "nothing to revoke");
        let granted = record();
        assert!(granted.open_capabilities());
        assert!(granted.open_capabilities(), "a second grant is fine");
        assert!(granted.close_capabilities(), "must revoke");
        assert!(!granted.close_capabilities(), "closing twice revokes once");
    }

    #[test]
    fn nothing_is_granted_after_the_exit_closed_the_capabilities() {
        let exited = record();
        assert!(!exited.close_capabilities());
        assert!(!exited.open_capabilities(), "a delegation to it must fail");
        assert!(!exited.close_capabilities());
    }

    #[test]
    fn the_exit_policy_comes_from_the_manifest() {
        let plain = record();
        assert!(!plain.restart_on_failure && !plain.supervised);
        let policed = record().with_exit_policy(true, true);
        assert!(policed.restart_on_failure && policed.supervised);
    }

    #[test]
    fn a_slot_whose_generations_are_used_up_is_retired() {
        let mut table = ProcessTable::new();
        let make = |pid| {
            Arc::new(Process::new(
                pid,
                "p".into(),
                Priority::Normal,
                Mailbox::new(1, Default::default()),
                false,
            ))
        };
        let first = table.insert(false, make).pid;
        table.remove(first);
        table.slots[first.index() as usize].generation = u32::MAX;
        let last = table.insert(false, make).pid;
        assert_eq!((last.index(), last.generation()), (first.index(), u32::MAX));
        table.remove(last);
        let next = table.insert(false, make).pid;
        assert_ne!(
            next.index(),
            first.index(),
            "the used-up slot is not reused"
        );
        assert!(table.get(last).is_none());
    }

    #[test]
    fn stale_generation_names_nothing() {
        let mut table = ProcessTable::new();
        let first = spawn(&mut table, "a");
        assert_ne!(first.index(), 0, "slot 0 is the kernel's");
        assert!(table.get(first).is_some());
        table.remove(first).unwrap();
        let second = spawn(&mut table, "a");
        assert_eq!(second.index(), first.index(), "the slot is reused");
        assert_ne!(second.generation(), first.generation());
        assert!(
            table.get(first).is_none(),
            "the old pid must not reach the new process"
        );
        assert!(table.get(second).is_some());
        assert_eq!(table.lookup("a"), Some(second));
    }

    #[test]
    fn the_name_passes_to_the_oldest_process_of_the_module_still_alive() {
        let mut table = ProcessTable::new();
        let a = spawn(&mut table, "svc");
        let b = spawn(&mut table, "svc");
        let c = spawn(&mut table, "svc");
        let other = spawn(&mut table, "other");
        table.remove(b);
        table.remove(a);
        assert_eq!(table.lookup("svc"), Some(c), "b left before a did");
        let d = spawn(&mut table, "svc");
        table.remove(c);
        assert_eq!(table.lookup("svc"), Some(d));
        table.remove(d);
        assert_eq!(table.lookup("svc"), None);
        assert_eq!(table.lookup("other"), Some(other));
    }

    #[test]
    fn lookup_prefers_a_running_process_to_an_ended_holder() {
        let mut table = ProcessTable::new();
        let a = spawn(&mut table, "svc");
        let b = spawn(&mut table, "svc");
        let c = spawn(&mut table, "svc");
        let ended = |table: &ProcessTable, pid: Pid| {
            table.get(pid).unwrap().ended.store(true, Ordering::Release);
        };
        ended(&table, a);
        assert_eq!(table.lookup("svc"), Some(b), "a ended, not reaped yet");
        ended(&table, b);
        assert_eq!(table.lookup("svc"), Some(c));
        ended(&table, c);
        assert_eq!(table.lookup("svc"), None, "none runs");
        assert_eq!(table.holder("svc"), Some(a), "its mailbox is still open");
        table.remove(a);
        assert_eq!(table.holder("svc"), Some(b), "the name passes at the reap");
        assert_eq!(table.lookup("svc"), None, "b ended too");
        table.remove(b);
        table.remove(c);
        assert_eq!(table.lookup("svc"), None);
    }

    #[test]
    fn churn_behind_a_long_lived_holder_keeps_the_queue_small() {
        let mut table = ProcessTable::new();
        let holder = spawn(&mut table, "svc");
        for _ in 0..10_000 {
            let passing = spawn(&mut table, "svc");
            table.remove(passing);
        }
        let queued = table.names["svc"].next.len();
        assert!(queued <= 17, "{queued} pids queued for the name");
        let last = spawn(&mut table, "svc");
        table.remove(holder);
        assert_eq!(table.lookup("svc"), Some(last));
    }

    proptest::proptest! {
        /// Without restarts taking a name over, a module's name is held by
        /// its oldest live process, whatever order processes leave in.
        #[test]
        fn the_name_is_held_by_the_oldest_live_process_of_its_module(
            ops in proptest::collection::vec((0u8..3, 0usize..64), 1..200)
        ) {
            let mut table = ProcessTable::new();
            // Live processes per module, oldest first.
            let mut live: [Vec<Pid>; 2] = Default::default();
            for (op, pick) in ops {
                let module = pick % 2;
                let name = ["a", "b"][module];
                if op == 0 || live[module].is_empty() {
                    live[module].push(spawn(&mut table, name));
                } else {
                    let at = pick % live[module].len();
                    let pid = live[module].remove(at);
                    proptest::prop_assert!(table.remove(pid).is_some());
                }
                for (module, name) in ["a", "b"].into_iter().enumerate() {
                    proptest::prop_assert_eq!(table.lookup(name), live[module].first().copied());
                }
            }
        }
    }

    #[test]
    fn names_are_released_on_removal() {
        let mut table = ProcessTable::new();
        let a = spawn(&mut table, "svc");
        let b = spawn(&mut table, "svc");
        assert_eq!(table.lookup("svc"), Some(a), "first registration wins");
        table.remove(b);
        assert_eq!(table.lookup("svc"), Some(a));
        table.remove(a);
        assert_eq!(table.lookup("svc"), None);
        assert!(table.is_empty());
    }
}
