//! Warm instances: task modules instantiated ahead of their spawns, by a
//! thread that runs only when a core has nothing else to run.
//!
//! Creating a `Store` and instantiating a module in it is most of what a
//! short-lived task process costs (about 1.1 µs of a 2.5 µs spawn, run and
//! exit on the benchmark host). Once a module has been spawned
//! [`WARM_AFTER`] times on a lane with no instance of it ready, that lane
//! keeps up to [`STASH`] of its instances ready, made by the *preparer*: a
//! thread at Linux's `SCHED_IDLE` policy, which the host runs only on a
//! core with no other thread to run, so it never takes time from a worker.
//! A process takes a ready instance at its first poll if its lane has one
//! and instantiates itself otherwise; the preparer refills a module's
//! stash when a take leaves fewer than [`LOW`].
//!
//! # Invariants
//!
//! - **No guest code runs before its process owns the store.** A module
//!   with a start function is never prepared (instantiation would run it
//!   for nobody), and an instantiation that does not finish in one poll is
//!   dropped with its store.
//! - **A process starts from its module's initial state.** A ready
//!   instance is a fresh instantiation that nothing has called; the take
//!   replaces the placeholder context it was made with by the process's
//!   own (its pid, capabilities, mailbox) and sets the backstop deadline
//!   anew, before the entry point is called. Fuel and the checkpoint
//!   interval were set on the fresh store exactly as a spawn sets them.
//! - **Ready instances never take a process's pool slot.** Each lane's pool
//!   has [`SLOTS`] slots more than its share of the process limit, and a
//!   lane holds at most [`SLOTS`] ready instances, all modules together
//!   (a module being prepared evicts the oldest of other modules').
//! - **Off in deterministic mode**, so a replay depends on no thread's
//!   timing.
//!
//! The stash of a lane is a lock taken for a few instructions by a spawn
//! (a take or a miss) and by the preparer (a push); the preparer's queue
//! is another lock, taken after the stash's when both are needed, and the
//! preparer is woken only if it sleeps (a wake is a system call).

use crate::core::kernel_loop::{KernelShared, TaskState};
use crate::core::message_router::{Mailbox, OverflowMode};
use crate::core::process::Process;
use crate::loader::lifecycle_manager::task_store;
use crate::loader::wasm_loader::LoadedModule;
use crate::syscalls::{MemoryLimiter, ProcessContext};
use estalogic_abi::{Pid, Priority};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, OnceLock};
use wasmtime::{Instance, Store};

/// Ready instances a lane holds at most, all modules together; each lane's
/// pool has this many slots more than its share of the process limit.
pub const SLOTS: u32 = 32;
/// Ready instances of one module a lane holds at most.
pub const STASH: usize = 16;
/// A take that leaves fewer ready instances of its module asks for more.
pub const LOW: usize = STASH / 2;
/// Spawns of a module on a lane that found no instance ready before the
/// lane prepares it: a module spawned a few times (a service at boot) is
/// never prepared.
pub const WARM_AFTER: u32 = 8;
/// Modules whose misses a lane counts; the oldest is forgotten past this.
const SEEN: usize = 32;

/// An instance made ahead, with the store it lives in.
struct Ready {
    module: Arc<LoadedModule>,
    store: Store<ProcessContext>,
    instance: Instance,
}

/// What a lane knows of one module.
struct Seen {
    /// The module's address: identity only, never dereferenced.
    module: usize,
    /// Spawns that found no instance ready.
    misses: u32,
    /// Asked of the preparer and not yet done.
    pending: bool,
    /// Cannot be prepared (a start function, a failed instantiation).
    never: bool,
}

/// One lane's ready instances and counts.
#[derive(Default)]
struct Stash {
    ready: Vec<Ready>,
    /// Stores of ended processes that started from a ready instance, for
    /// the preparer to drop.
    ended: Vec<Store<ProcessContext>>,
    seen: Vec<Seen>,
}

impl Stash {
    fn seen(&mut self, module: usize) -> &mut Seen {
        let index = match self.seen.iter().position(|s| s.module == module) {
            Some(index) => index,
            None => {
                if self.seen.len() >= SEEN {
                    self.seen.remove(0);
                }
                self.seen.push(Seen {
                    module,
                    misses: 0,
                    pending: false,
                    never: false,
                });
                self.seen.len() - 1
            }
        };
        &mut self.seen[index]
    }

    fn count(&self, module: &Arc<LoadedModule>) -> usize {
        self.ready
            .iter()
            .filter(|r| Arc::ptr_eq(&r.module, module))
            .count()
    }
}

/// The preparer's queue: a module to prepare on a lane.
#[derive(Default)]
struct Work {
    queue: VecDeque<(Arc<LoadedModule>, usize)>,
    /// The preparer waits for work (so a request must wake it).
    sleeping: bool,
    /// The kernel is gone: the preparer ends.
    stop: bool,
}

struct Inner {
    stashes: Box<[Mutex<Stash>]>,
    work: std::sync::Mutex<Work>,
    wake: Condvar,
    shared: Arc<KernelShared>,
    /// The process record a ready instance's placeholder context names:
    /// never admitted, never in the process table.
    placeholder: Arc<Process>,
    placeholder_task: Arc<TaskState>,
    checkpoint_fuel: u64,
    backstop: bool,
    made: AtomicU64,
    taken: AtomicU64,
}

/// Counts of the warm-instance pool since the kernel was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Instances the preparer made.
    pub made: u64,
    /// Processes that started from one.
    pub taken: u64,
}

/// The lanes' ready instances and the preparer that makes them.
pub(crate) struct WarmPool {
    inner: Arc<Inner>,
    preparer: OnceLock<()>,
}

impl WarmPool {
    /// A pool for `lanes` lanes; the preparer starts at the first request.
    pub(crate) fn new(
        lanes: usize,
        shared: Arc<KernelShared>,
        checkpoint_fuel: u64,
        backstop: bool,
    ) -> Self {
        let placeholder = Arc::new(Process::new(
            Pid::KERNEL,
            "warm instance".into(),
            Priority::Normal,
            Mailbox::new(1, OverflowMode::NotifySender),
            false,
        ));
        let placeholder_task = shared.new_task_state(Pid::KERNEL);
        WarmPool {
            inner: Arc::new(Inner {
                stashes: (0..lanes).map(|_| Mutex::default()).collect(),
                work: Default::default(),
                wake: Condvar::new(),
                shared,
                placeholder,
                placeholder_task,
                checkpoint_fuel,
                backstop,
                made: AtomicU64::new(0),
                taken: AtomicU64::new(0),
            }),
            preparer: OnceLock::new(),
        }
    }

    /// A ready instance of `module` on `lane`, if there is one; either way
    /// counts the spawn, asking the preparer for more when the module is
    /// spawned often and its stash runs low.
    pub(crate) fn take(
        &self,
        module: &Arc<LoadedModule>,
        lane: usize,
    ) -> Option<(Store<ProcessContext>, Instance)> {
        let key = Arc::as_ptr(module) as usize;
        let mut stash = self.inner.stashes.get(lane)?.lock();
        let found = stash
            .ready
            .iter()
            .rposition(|r| Arc::ptr_eq(&r.module, module))
            .map(|index| stash.ready.remove(index));
        let left = if found.is_some() {
            stash.count(module)
        } else {
            0
        };
        let seen = stash.seen(key);
        if found.is_none() {
            seen.misses = seen.misses.saturating_add(1);
        }
        let ask = !seen.never
            && !seen.pending
            && seen.misses >= WARM_AFTER
            && (found.is_none() || left < LOW);
        if ask {
            seen.pending = true;
        }
        drop(stash);
        if ask {
            self.request(module.clone(), lane);
        }
        let ready = found?;
        self.inner.taken.fetch_add(1, Ordering::Relaxed);
        Some((ready.store, ready.instance))
    }

    /// Hands the store of an ended process that started from a ready
    /// instance of `lane` to the preparer to drop, if the lane has room
    /// (ready and ended stores together take at most [`SLOTS`] pool
    /// slots); drops it here otherwise.
    pub(crate) fn retire(&self, lane: usize, store: Store<ProcessContext>) {
        let Some(stash) = self.inner.stashes.get(lane) else {
            return;
        };
        // Counted now: the run's figures must not wait for the drop.
        store.data().flush_counts();
        let mut locked = stash.lock();
        if locked.ready.len() + locked.ended.len() < SLOTS as usize {
            locked.ended.push(store);
            return;
        }
        drop(locked);
        drop(store);
    }

    /// Counts so far.
    pub(crate) fn stats(&self) -> WarmStats {
        WarmStats {
            made: self.inner.made.load(Ordering::Relaxed),
            taken: self.inner.taken.load(Ordering::Relaxed),
        }
    }

    fn request(&self, module: Arc<LoadedModule>, lane: usize) {
        self.preparer.get_or_init(|| {
            let inner = self.inner.clone();
            // Without a preparer nothing is ever ready: spawns instantiate
            // themselves, as they would anyway.
            let _ = std::thread::Builder::new()
                .name("estalogic-warm".into())
                .stack_size(PREPARER_STACK)
                .spawn(move || prepare(&inner));
        });
        let mut work = self.inner.work.lock().unwrap_or_else(|p| p.into_inner());
        work.queue.push_back((module, lane));
        let sleeping = std::mem::take(&mut work.sleeping);
        drop(work);
        if sleeping {
            self.inner.wake.notify_one();
        }
    }
}

impl Drop for WarmPool {
    /// Ends the preparer (without waiting for it: at `SCHED_IDLE` it may
    /// wait long for a core on a busy host); it drops what it holds.
    fn drop(&mut self) {
        let mut work = self.inner.work.lock().unwrap_or_else(|p| p.into_inner());
        work.stop = true;
        work.queue.clear();
        drop(work);
        self.inner.wake.notify_one();
        for stash in self.inner.stashes.iter() {
            let mut locked = stash.lock();
            locked.ready.clear();
            locked.ended.clear();
        }
    }
}

/// Stack of the preparer thread: instantiation runs no guest code.
const PREPARER_STACK: usize = 256 << 10;

/// The preparer's loop: take a request, fill that module's stash on that
/// lane, sleep when there is nothing to do, end when the pool is dropped.
fn prepare(inner: &Inner) {
    lower_priority();
    loop {
        let mut work = inner.work.lock().unwrap_or_else(|p| p.into_inner());
        let (module, lane) = loop {
            if work.stop {
                return;
            }
            if let Some(next) = work.queue.pop_front() {
                break next;
            }
            work.sleeping = true;
            work = inner.wake.wait(work).unwrap_or_else(|p| p.into_inner());
        };
        drop(work);
        fill(inner, &module, lane);
    }
}

/// Makes instances of `module` on `lane` until its stash is full, then
/// clears the request.
fn fill(inner: &Inner, module: &Arc<LoadedModule>, lane: usize) {
    let key = Arc::as_ptr(module) as usize;
    let Some(stash) = inner.stashes.get(lane) else {
        return;
    };
    let preparable = !has_start_function(&module.bytes);
    loop {
        let mut evicted = None;
        let ended;
        {
            let mut locked = stash.lock();
            ended = std::mem::take(&mut locked.ended);
            let stopping = inner.work.lock().map_or(true, |work| work.stop);
            if !preparable || stopping || locked.count(module) >= STASH {
                let seen = locked.seen(key);
                seen.pending = false;
                seen.never |= !preparable;
                return;
            }
            if locked.ready.len() + locked.ended.len() >= SLOTS as usize {
                match locked
                    .ready
                    .iter()
                    .position(|r| !Arc::ptr_eq(&r.module, module))
                {
                    Some(index) => evicted = Some(locked.ready.remove(index)),
                    None => {
                        locked.seen(key).pending = false;
                        return;
                    }
                }
            }
        }
        // Dropped outside the lock: a store's teardown is not a few
        // instructions.
        drop(evicted);
        drop(ended);
        match make(inner, module, lane) {
            Made::Ready(ready) => {
                let mut locked = stash.lock();
                locked.ready.push(ready);
                inner.made.fetch_add(1, Ordering::Relaxed);
            }
            Made::NotNow => {
                stash.lock().seen(key).pending = false;
                return;
            }
            Made::Never => {
                let mut locked = stash.lock();
                let seen = locked.seen(key);
                seen.pending = false;
                seen.never = true;
                return;
            }
        }
    }
}

enum Made {
    Ready(Ready),
    /// The pool is full: try again at a later request.
    NotNow,
    /// This module cannot be prepared.
    Never,
}

/// One instance of `module` on `lane`, in a store configured as a spawn
/// configures one, with a placeholder context.
fn make(inner: &Inner, module: &Arc<LoadedModule>, lane: usize) -> Made {
    let lane_module = module.on_lane(lane);
    let context = ProcessContext::new(
        inner.placeholder.clone(),
        inner.shared.clone(),
        inner.placeholder_task.clone(),
        MemoryLimiter::new(module.manifest.memory_class.max_bytes()),
        inner.checkpoint_fuel,
    );
    let Ok(mut store) = task_store(lane_module, context, inner.checkpoint_fuel, inner.backstop)
    else {
        return Made::Never;
    };
    let polled = {
        let instantiation = std::pin::pin!(lane_module.pre.instantiate_async(&mut store));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        instantiation.poll(&mut cx)
    };
    match polled {
        std::task::Poll::Ready(Ok(instance)) => Made::Ready(Ready {
            module: module.clone(),
            store,
            instance,
        }),
        std::task::Poll::Ready(Err(error))
            if crate::loader::lifecycle_manager::is_pool_full(&error) =>
        {
            Made::NotNow
        }
        _ => Made::Never,
    }
}

/// True if `bytes` (binary or text, as modules are loaded) declare a start
/// function, or cannot be parsed (a loaded module's bytes always can).
fn has_start_function(bytes: &[u8]) -> bool {
    let Ok(binary) = wat::parse_bytes(bytes) else {
        return true;
    };
    for payload in wasmparser::Parser::new(0).parse_all(&binary) {
        match payload {
            Ok(wasmparser::Payload::StartSection { .. }) | Err(_) => return true,
            // The start section comes before the code.
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Ok(wasmparser::Payload::End(_)) => {
                return false;
            }
            Ok(_) => {}
        }
    }
    false
}

/// Puts the calling thread at Linux's `SCHED_IDLE` policy: it runs only on
/// a core no other thread wants.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes the calling
        // thread's policy only; `param` is an initialised struct that
        // outlives the call, and priority 0 is the one SCHED_IDLE takes.
        // Failure leaves the thread at its normal policy, which is safe.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_section_is_found_and_its_absence_too() {
        let with = wat::parse_str("(module (func $s) (start $s))").unwrap();
        let without = wat::parse_str("(module (func $f) (export \"f\" (func $f)))").unwrap();
        let empty = wat::parse_str("(module)").unwrap();
        assert!(has_start_function(&with));
        assert!(!has_start_function(&without));
        assert!(has_start_function(b"(module (func $s) (start $s))"));
        assert!(!has_start_function(b"(module (memory 1))"));
        assert!(!has_start_function(&empty));
        assert!(has_start_function(b"not wasm"));
    }
}
