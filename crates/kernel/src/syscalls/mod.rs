//! The syscall layer: the per-process context every host function sees, the
//! single capability choke point, guest-memory access, and the composition
//! of the syscall families into one linker.
//!
//! # Protocol of every syscall
//!
//! 1. [`ProcessContext::admit`] checks the caller holds the capability the
//!    syscall needs. This is the only place that decides; handlers never
//!    re-check and drivers never see an unchecked request.
//! 2. Arguments are validated; guest pointers go through `read_guest` /
//!    `write_guest`, which fail with `INVALID_POINTER`, never trap.
//! 3. A recoverable failure returns the negated error code. Only `exit`
//!    unwinds the guest (with [`ProcessExit`]), and only a broken machine
//!    invariant traps.

pub mod capabilities;
pub mod ipc;
pub mod notify;
pub mod process;
pub mod time;

use crate::core::kernel_loop::{KernelShared, TaskState};
use crate::core::process::Process;
use estalogic_abi::{ErrorCode, Pid, Syscall};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

/// Raised (as a Wasmtime error) by the `exit` syscall to unwind the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("process exited with code {0}")]
pub struct ProcessExit(pub i32);

/// The kernel-wide budget of guest linear memory
/// ([`KernelBuilder::memory_budget`](crate::KernelBuilder::memory_budget)):
/// every process's memories together, at their current sizes, stay within
/// it. A process's share is taken as its memory is created or grows and
/// given back when its store is dropped.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    held: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none of it held.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by live processes' memories now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit, all or nothing.
    fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Limits a process's memory to its class (and, with a kernel-wide
/// [`MemoryBudget`], to what is left of it) and remembers a refusal, so
/// that a trap that follows is reported as out-of-memory.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
    budget: Option<Arc<MemoryBudget>>,
    /// What this process holds of the budget.
    held: u64,
    /// The last growth taken from the budget, given back if Wasmtime then
    /// fails it anyway.
    pending: u64,
}

impl MemoryLimiter {
    /// A limiter allowing at most `max_bytes` of linear memory.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_budget(max_bytes, None)
    }

    /// A limiter allowing at most `max_bytes` of linear memory, each byte
    /// of it taken from `budget` too, if there is one.
    pub fn with_budget(max_bytes: u64, budget: Option<Arc<MemoryBudget>>) -> Self {
        MemoryLimiter {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            refused: false,
            budget,
            held: 0,
            pending: 0,
        }
    }

    /// True once a growth past the limit was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Forgets a refusal (before an instantiation is tried again).
    pub(crate) fn forget_refusal(&mut self) {
        self.refused = false;
    }

    /// True if this limiter takes from a kernel-wide budget.
    pub(crate) fn has_budget(&self) -> bool {
        self.budget.is_some()
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.held);
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the module's own declared maximum too: Wasmtime asks here
        // first and refuses such a growth after, and the refusal must be
        // remembered whichever limit made it.
        let mut allowed = desired <= self.max_bytes && maximum.is_none_or(|max| desired <= max);
        self.pending = 0;
        if allowed && let Some(budget) = &self.budget {
            let growth = desired.saturating_sub(current) as u64;
            allowed = budget.take(growth);
            if allowed {
                self.held += growth;
                self.pending = growth;
            }
        }
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed here, failed after (the pool's slot): not held after all.
        if let Some(budget) = &self.budget {
            budget.give_back(self.pending);
            self.held -= self.pending;
        }
        self.pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What every host function sees: the process it serves and the kernel.
pub struct ProcessContext {
    pub(crate) process: Arc<Process>,
    pub(crate) kernel: Arc<KernelShared>,
    pub(crate) task: Arc<TaskState>,
    pub(crate) limiter: MemoryLimiter,
    /// Admission decisions this process may reuse.
    pub(crate) admitted: std::cell::RefCell<AdmitCache>,
    /// The guest's exported memory, found once after instantiation.
    pub(crate) memory: Option<wasmtime::Memory>,
    /// The process this one last sent to: repeated sends to the same peer
    /// skip the process-table lookup.
    pub(crate) last_peer: std::cell::RefCell<Option<Arc<Process>>>,
    /// The process this one's last send woke from a receive: the candidate
    /// for a direct handoff if this process now waits (see
    /// [`kernel_loop`](crate::core::kernel_loop#direct-handoff)).
    pub(crate) hand_off: Option<Pid>,
    /// Capability-checked syscalls made, added to the kernel's count when
    /// the process ends (one shared counter bumped on every syscall was a
    /// cache line every worker fought over).
    pub(crate) syscalls: std::cell::Cell<u64>,
    /// Host work charged (see [`charge`]) and not yet accounted: a task's
    /// since its last checkpoint, a handler's not yet taken off its call's
    /// fuel.
    pub(crate) host_work: std::cell::Cell<u64>,
    /// Set when a handler's host work took its call past the call's fuel
    /// budget (see [`charge`]): the syscall then returns into a `TIMEOUT`
    /// trap ([`pay_host_work_now`]).
    pub(crate) overran: std::cell::Cell<bool>,
    /// A task's host work in all, added to the fuel its report shows (a
    /// handler's is taken off the store's fuel, which already counts it).
    pub(crate) host_fuel: std::cell::Cell<u64>,
    /// Fuel units between two checkpoints.
    pub(crate) checkpoint_fuel: u64,
}

impl Drop for ProcessContext {
    fn drop(&mut self) {
        // Skipped when zero: the shared counter's cache line is then left
        // alone (a trivial process makes no syscalls).
        let syscalls = self.syscalls.get();
        if syscalls > 0 {
            self.kernel
                .syscalls
                .fetch_add(syscalls, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl ProcessContext {
    /// The live process `pid`, moved out of the one-entry peer cache (no
    /// reference count touched: a send takes it and
    /// [`ProcessContext::keep_peer`] puts it back) or else looked up in the
    /// table.
    pub(crate) fn take_peer(&self, pid: Pid) -> Option<Arc<Process>> {
        let cached = self.last_peer.borrow_mut().take_if(|peer| {
            peer.pid == pid && peer.alive.load(std::sync::atomic::Ordering::Acquire)
        });
        cached.or_else(|| self.kernel.process(pid))
    }

    /// Caches `peer` for the next send (see [`ProcessContext::take_peer`]).
    pub(crate) fn keep_peer(&self, peer: Arc<Process>) {
        *self.last_peer.borrow_mut() = Some(peer);
    }

    /// Records `units` of host work done for this process, for the
    /// syscall doing it to charge (see [`charge`]); a task's also counts in
    /// the fuel its report shows.
    pub(crate) fn add_host_work(&self, units: u64) {
        self.host_work
            .set(self.host_work.get().saturating_add(units));
        if !self.process.handler {
            self.host_fuel
                .set(self.host_fuel.get().saturating_add(units));
        }
    }

    /// The capability choke point: may this process make this syscall on
    /// `item` (a target module, a looked-up name; `None` for the syscall's
    /// whole resource)? Every denial is audited by the engine.
    ///
    /// A positive answer about an unlimited capability (no time window, no
    /// use limit) is remembered until the engine's generation moves (any
    /// revocation that reaches a live holder), so repeated sends to the same
    /// peer do not take
    /// the engine lock. Limited capabilities always go to the engine, which
    /// counts their uses and checks their clock.
    pub fn admit(&self, syscall: Syscall, item: Option<&str>) -> Result<(), ErrorCode> {
        self.admit_searching(syscall, item).map(|_| ())
    }

    /// Refuses `syscall` (as [`ProcessContext::admit`] would, audited)
    /// when this process holds no live capability that could allow it for
    /// any item: asked before a syscall says that its target does not
    /// exist, so that a process that may not make it at all learns nothing
    /// about which processes are alive. Counts no use.
    pub(crate) fn admit_any_item(&self, syscall: Syscall) -> Result<(), ErrorCode> {
        let Some((resource, rights)) = capabilities::requirement(syscall) else {
            return Ok(());
        };
        let now = self.kernel.clock.now_nanos();
        let mut engine = self.kernel.capabilities();
        let pid = self.process.pid;
        if engine.holds_any(pid, &resource, rights, now) {
            return Ok(());
        }
        self.add_host_work(
            (engine.table_len(pid) as u64)
                .saturating_mul(FIND_FUEL)
                .saturating_add(DENIAL_FUEL),
        );
        // Nothing fits, so the search fails and audits why.
        let denied = engine.find(pid, &resource, rights, None, now).err();
        self.kernel.flush_audit(&mut engine);
        Err(denied.map_or(ErrorCode::PERMISSION_DENIED, |error| error.code()))
    }

    /// [`ProcessContext::admit`], saying whether the decision searched the
    /// capability engine (`Ok(true)`; a denial always does), which records
    /// host work for the caller (see [`charge`]), or came from the cache.
    pub(crate) fn admit_searching(
        &self,
        syscall: Syscall,
        item: Option<&str>,
    ) -> Result<bool, ErrorCode> {
        if !capabilities::is_checked(syscall) {
            return Ok(false);
        }
        self.syscalls.set(self.syscalls.get() + 1);
        let generation = self
            .kernel
            .capability_generation
            .load(std::sync::atomic::Ordering::Acquire);
        if self.admitted.borrow().allows(generation, syscall, item) {
            return Ok(false);
        }
        let (resource, rights) =
            capabilities::requirement(syscall).expect("a checked syscall has a requirement");
        let now = self.kernel.clock.now_nanos();
        let mut engine = self.kernel.capabilities();
        let pid = self.process.pid;
        // The search is host work for this process (see `charge`), counted
        // here and charged by the syscall: an uncached check looks at
        // every handle of the table (and a denial is never cached).
        self.add_host_work((engine.table_len(pid) as u64).saturating_mul(FIND_FUEL));
        match engine.find(pid, &resource, rights, item, now) {
            Ok(handle) => {
                if engine.is_unlimited(pid, handle) {
                    self.admitted
                        .borrow_mut()
                        .remember(engine.generation(), syscall, item);
                }
                Ok(true)
            }
            Err(error) => {
                // A denial is audited (text formatted, an event kept): host
                // work the caller pays for like a search.
                self.add_host_work(DENIAL_FUEL);
                self.kernel.flush_audit(&mut engine);
                Err(error.code())
            }
        }
    }
}

/// Positive admission decisions about unlimited capabilities, valid for one
/// engine generation.
#[derive(Debug, Default)]
pub(crate) struct AdmitCache {
    generation: u64,
    /// Syscalls allowed on their whole resource (no item), a bit each by
    /// number: a handler's every delivery and a `receive` check one of
    /// these, without a search.
    whole: u64,
    /// Decisions about an item (a target module, a looked-up name), and
    /// any syscall numbered past the bits.
    entries: Vec<(Syscall, Option<Box<str>>)>,
}

impl AdmitCache {
    /// The most decisions about items remembered per process.
    const CAPACITY: usize = 16;

    /// The bit of `syscall` in `whole`, if it has one.
    fn bit(syscall: Syscall) -> Option<u64> {
        1u64.checked_shl(syscall as u32)
    }

    fn allows(&self, generation: u64, syscall: Syscall, item: Option<&str>) -> bool {
        if self.generation != generation {
            return false;
        }
        match (item, Self::bit(syscall)) {
            (None, Some(bit)) => self.whole & bit != 0,
            _ => self
                .entries
                .iter()
                .any(|(s, i)| *s == syscall && i.as_deref() == item),
        }
    }

    fn remember(&mut self, generation: u64, syscall: Syscall, item: Option<&str>) {
        if self.generation != generation {
            self.entries.clear();
            self.whole = 0;
            self.generation = generation;
        }
        if let (None, Some(bit)) = (item, Self::bit(syscall)) {
            self.whole |= bit;
            return;
        }
        if self.entries.len() >= Self::CAPACITY {
            self.entries.remove(0);
        }
        self.entries.push((syscall, item.map(Into::into)));
    }
}

/// Turns a handler's result into the syscall return convention.
pub(crate) fn to_return(result: Result<u64, ErrorCode>) -> i64 {
    match result {
        Ok(value) => value.min(i64::MAX as u64) as i64,
        Err(code) => code.to_syscall_return(),
    }
}

fn guest_range(ptr: i32, len: i32, memory_len: usize) -> Result<std::ops::Range<usize>, ErrorCode> {
    let start = u32::try_from(ptr).map_err(|_| ErrorCode::INVALID_POINTER)? as usize;
    let len = u32::try_from(len).map_err(|_| ErrorCode::INVALID_POINTER)? as usize;
    let end = start.checked_add(len).ok_or(ErrorCode::INVALID_POINTER)?;
    if end > memory_len {
        return Err(ErrorCode::INVALID_POINTER);
    }
    Ok(start..end)
}

fn memory_of(caller: &mut Caller<'_, ProcessContext>) -> Result<wasmtime::Memory, ErrorCode> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(ErrorCode::INVALID_POINTER),
    }
}

/// Checks that `len` bytes at `ptr` lie inside the guest's memory.
pub(crate) fn check_guest(
    caller: &mut Caller<'_, ProcessContext>,
    ptr: i32,
    len: i32,
) -> Result<(), ErrorCode> {
    if len == 0 {
        return check_empty(caller, ptr);
    }
    let memory = memory_of(caller)?;
    guest_range(ptr, len, memory.data_size(&*caller)).map(|_| ())
}

/// An empty range at `ptr`: inside memory if it starts at most at its end,
/// as WebAssembly's own bulk-memory instructions have it (an empty copy
/// past the end traps). Null is always fine, memory or not: what a guest
/// without memory passes for nothing.
fn check_empty(caller: &mut Caller<'_, ProcessContext>, ptr: i32) -> Result<(), ErrorCode> {
    if ptr == 0 {
        return Ok(());
    }
    let memory = memory_of(caller)?;
    guest_range(ptr, 0, memory.data_size(&*caller)).map(|_| ())
}

/// Fuel units an uncached capability check pays per handle of the table it
/// searches.
pub(crate) const FIND_FUEL: u64 = 16;

/// Fuel units a refused capability check pays besides its search: the
/// audit event it records (about a microsecond of formatting and
/// bookkeeping).
pub(crate) const DENIAL_FUEL: u64 = 1_024;

/// Handler host work below this many units gathers in
/// [`ProcessContext::host_work`] until the call ends, so a short message
/// costs no fuel bookkeeping of its own.
const HOST_WORK_BATCH: u64 = 4 << 10;

/// Charges the caller for `bytes` of work a syscall did for it (copying
/// into or out of its memory, a log line) at the price of its own
/// `memory.copy`: one fuel unit a byte. Without this a guest could make
/// the kernel copy megabytes per slice of fuel and hold its worker far
/// past a slice.
///
/// A handler's call pays from its fuel budget, as its own instructions do,
/// in batches of 4 KiB (smaller amounts are taken at the end of the call);
/// work the budget cannot pay marks the call overrun, and its syscall then
/// traps with `TIMEOUT` ([`pay_host_work_now`]).
/// A task's store keeps its fuel (setting it would restart the interval
/// to its next checkpoint); instead, once a slice's worth of host work has
/// gathered since its last checkpoint this returns true, and the syscall
/// passes a checkpoint ([`process::YieldOnce`]) before it returns, where
/// the scheduler may preempt it. Never true for a handler, whose syscalls
/// never wait.
pub(crate) fn charge(caller: &mut Caller<'_, ProcessContext>, bytes: usize) -> bool {
    let context = caller.data();
    context.add_host_work(bytes as u64);
    let work = context.host_work.get();
    if context.process.handler {
        if work >= HOST_WORK_BATCH {
            // Cannot fail: fuel is on for every store.
            let fuel = caller.get_fuel().unwrap_or(0);
            let paid = work.min(fuel);
            let _ = caller.set_fuel(fuel - paid);
            // What the budget could not pay stays counted: the call's
            // report shows it, and the syscall traps (`pay_host_work_now`).
            let context = caller.data();
            context.host_work.set(work - paid);
            if work > fuel {
                context.overran.set(true);
            }
        }
        return false;
    }
    let slice = context.checkpoint_fuel.max(1);
    if work < slice {
        return false;
    }
    // One checkpoint a slice: the rest is carried, so a syscall that did
    // several slices of work passes as many checkpoints (see [`pay_host_work`]).
    context.host_work.set(work - slice);
    true
}

/// True if [`charge`] with nothing more to add would do anything: a
/// task's host work has reached a slice, a handler's a batch. What
/// [`pay_host_work`] and [`pay_host_work_now`] look at first, so the
/// common syscall pays a few loads for them.
fn unsettled(caller: &Caller<'_, ProcessContext>) -> bool {
    let context = caller.data();
    let work = context.host_work.get();
    if context.process.handler {
        work >= HOST_WORK_BATCH
    } else {
        work >= context.checkpoint_fuel.max(1)
    }
}

/// Ends every waitable syscall of a task: charges the host work it
/// recorded (a search of the capability table, a denial's audit, a copy),
/// whichever way it returns, refusals included, and passes a checkpoint
/// for every slice of it, where the scheduler may preempt the caller.
/// Without it a loop of refused calls made the kernel work for nothing.
pub(crate) async fn pay_host_work(caller: &mut Caller<'_, ProcessContext>) {
    while unsettled(caller) && charge(caller, 0) {
        process::YieldOnce::new().await;
    }
}

/// [`pay_host_work`] for a handler's syscall, which never waits: its host
/// work comes off its call's fuel budget (see [`charge`]). Every task
/// syscall that can do host work is waitable and uses [`pay_host_work`].
///
/// A syscall whose host work took the call past its fuel budget (a 1 MiB
/// copy with less than that left; a broadcast, which stops offering copies
/// there) returns into a `TIMEOUT` trap, as the guest's own instructions
/// would have, instead of back to the guest: what the syscall did stands.
#[inline]
pub(crate) fn pay_host_work_now(caller: &mut Caller<'_, ProcessContext>) -> wasmtime::Result<()> {
    debug_assert!(
        caller.data().process.handler,
        "a task's syscall waits to pay"
    );
    if unsettled(caller) || caller.data().overran.get() {
        return settle_now(caller);
    }
    Ok(())
}

/// [`pay_host_work_now`]'s rare part: a batch of host work to take off the
/// call's fuel, or a call already past its budget.
#[cold]
fn settle_now(caller: &mut Caller<'_, ProcessContext>) -> wasmtime::Result<()> {
    let _ = charge(caller, 0);
    if caller.data().overran.get() {
        return Err(wasmtime::Trap::OutOfFuel.into());
    }
    Ok(())
}

/// True once a handler's host work has taken its call past the call's
/// fuel budget (see [`charge`]): a syscall doing work in steps stops there.
pub(crate) fn overran(caller: &Caller<'_, ProcessContext>) -> bool {
    caller.data().overran.get()
}

/// Fuel units per message a search looks at past its free allowance
/// (`message_router::FREE_SCAN`): about what comparing one header costs
/// next to the guest's own instructions.
pub(crate) const SCAN_FUEL: u64 = 8;

/// Charges (see [`charge`]) the messages the caller's searches of its
/// mailbox looked at past their free allowance since the last charge.
pub(crate) fn charge_scans(caller: &mut Caller<'_, ProcessContext>, scanned: u64) -> bool {
    if scanned == 0 {
        return false;
    }
    let work = scanned.saturating_mul(SCAN_FUEL);
    charge(caller, usize::try_from(work).unwrap_or(usize::MAX))
}

/// Copies `len` bytes at `ptr` out of the guest's memory.
pub(crate) fn read_guest(
    caller: &mut Caller<'_, ProcessContext>,
    ptr: i32,
    len: i32,
) -> Result<Vec<u8>, ErrorCode> {
    if len == 0 {
        return check_empty(caller, ptr).map(|()| Vec::new());
    }
    let memory = memory_of(caller)?;
    let data = memory.data(&*caller);
    let range = guest_range(ptr, len, data.len())?;
    Ok(data[range].to_vec())
}

/// Where `len` bytes at `ptr` lie in the guest's memory, checked as
/// [`read_guest`] checks them, without copying: `None` for no bytes.
pub(crate) fn guest_bytes(
    caller: &mut Caller<'_, ProcessContext>,
    ptr: i32,
    len: i32,
) -> Result<Option<(wasmtime::Memory, std::ops::Range<usize>)>, ErrorCode> {
    if len == 0 {
        return check_empty(caller, ptr).map(|()| None);
    }
    let memory = memory_of(caller)?;
    let range = guest_range(ptr, len, memory.data_size(&*caller))?;
    Ok(Some((memory, range)))
}

/// Copies `bytes` into the guest's memory at `ptr`.
pub(crate) fn write_guest(
    caller: &mut Caller<'_, ProcessContext>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), ErrorCode> {
    if bytes.is_empty() {
        return Ok(());
    }
    let memory = memory_of(caller)?;
    let data = memory.data_mut(&mut *caller);
    let len = i32::try_from(bytes.len()).map_err(|_| ErrorCode::INVALID_ARGUMENT)?;
    let range = guest_range(ptr, len, data.len())?;
    data[range].copy_from_slice(bytes);
    Ok(())
}

/// Registers every syscall family with `linker`.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    process::add_to_linker(linker)?;
    ipc::add_to_linker(linker)?;
    time::add_to_linker(linker)?;
    notify::add_to_linker(linker)?;
    capabilities::add_to_linker(linker)?;
    Ok(())
}

/// The kernel's two linkers, one per process model (see
/// [`EntryKind`](crate::loader::wasm_loader::EntryKind)).
pub struct Linkers {
    /// Task processes': a wait suspends the process.
    pub task: Linker<ProcessContext>,
    /// Handler processes': every syscall synchronous, none waits.
    pub handler: Linker<ProcessContext>,
}

impl Linkers {
    /// Both linkers, holding every syscall.
    pub fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut task = Linker::new(engine);
        add_to_linker(&mut task)?;
        let mut handler = Linker::new(engine);
        add_to_handler_linker(&mut handler)?;
        Ok(Linkers { task, handler })
    }
}

/// Composes every syscall family into the linker of handler processes:
/// every syscall synchronous, none waits (see [`ipc::add_to_handler_linker`]).
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    process::add_to_handler_linker(linker)?;
    ipc::add_to_handler_linker(linker)?;
    time::add_to_handler_linker(linker)?;
    notify::add_to_handler_linker(linker)?;
    capabilities::add_to_handler_linker(linker)?;
    Ok(())
}

/// Polls a syscall's future once, for a handler process, whose syscalls are
/// made so that they never wait: one that would is a kernel bug
/// (`INTERNAL`), never a hang.
pub(crate) fn poll_once<F>(future: F) -> Result<u64, ErrorCode>
where
    F: std::future::Future<Output = Result<u64, ErrorCode>>,
{
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(ErrorCode::INTERNAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ranges_are_bounds_checked() {
        assert_eq!(guest_range(0, 4, 4), Ok(0..4));
        assert_eq!(guest_range(1, 4, 4), Err(ErrorCode::INVALID_POINTER));
        assert_eq!(guest_range(-1, 1, 4), Err(ErrorCode::INVALID_POINTER));
        assert_eq!(guest_range(0, -1, 4), Err(ErrorCode::INVALID_POINTER));
        assert_eq!(
            guest_range(i32::MAX, i32::MAX, usize::MAX),
            Ok(i32::MAX as usize..(i32::MAX as usize) * 2)
        );
    }

    /// The cache as a plain list of every decision remembered (evicting
    /// item decisions as the cache does): what the bit set must agree with.
    #[derive(Default)]
    struct ListCache {
        generation: u64,
        whole: Vec<Syscall>,
        items: Vec<(Syscall, Option<String>)>,
    }

    proptest::proptest! {
        /// Item-less decisions kept as bits answer as a list of them
        /// would, through generation changes and evictions.
        #[test]
        fn the_admission_cache_answers_as_a_list_of_decisions(
            steps in proptest::collection::vec(
                (proptest::bool::ANY, 0u64..3, 0usize..Syscall::ALL.len(), proptest::option::of(0u8..20)),
                0..200,
            ),
        ) {
            let mut cache = AdmitCache::default();
            let mut model = ListCache::default();
            for (store, generation, which, item) in steps {
                let syscall = Syscall::ALL[which];
                let item = item.map(|n| format!("m{n}"));
                let item = item.as_deref();
                if store {
                    cache.remember(generation, syscall, item);
                    if model.generation != generation {
                        model = ListCache { generation, ..ListCache::default() };
                    }
                    match item {
                        None => model.whole.push(syscall),
                        Some(name) => {
                            if model.items.len() >= AdmitCache::CAPACITY {
                                model.items.remove(0);
                            }
                            model.items.push((syscall, Some(name.to_string())));
                        }
                    }
                } else {
                    let expected = model.generation == generation
                        && match item {
                            None => model.whole.contains(&syscall),
                            Some(name) => model
                                .items
                                .iter()
                                .any(|(s, i)| *s == syscall && i.as_deref() == Some(name)),
                        };
                    proptest::prop_assert_eq!(cache.allows(generation, syscall, item), expected);
                }
            }
        }
    }

    #[test]
    fn limiter_refuses_and_remembers() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.refused());
        assert!(!limiter.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(limiter.refused());
    }

    const PAGE: usize = 64 << 10;

    #[test]
    fn a_budget_is_shared_and_given_back_at_drop() {
        let budget = Arc::new(MemoryBudget::new(4 * PAGE as u64));
        let mut a = MemoryLimiter::with_budget(u64::MAX, Some(budget.clone()));
        let mut b = MemoryLimiter::with_budget(u64::MAX, Some(budget.clone()));
        assert!(a.memory_growing(0, 3 * PAGE, None).unwrap());
        assert!(!b.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(b.refused());
        assert!(b.memory_growing(0, PAGE, None).unwrap());
        assert_eq!(budget.held(), 4 * PAGE as u64);
        drop(a);
        assert_eq!(budget.held(), PAGE as u64);
        assert!(b.memory_growing(PAGE, 4 * PAGE, None).unwrap());
        // The class limit still applies, and refuses before the budget.
        let mut c = MemoryLimiter::with_budget(PAGE as u64, Some(budget.clone()));
        assert!(!c.memory_growing(0, 2 * PAGE, None).unwrap());
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_growth_wasmtime_fails_after_allowing_it_is_given_back() {
        let budget = Arc::new(MemoryBudget::new(4 * PAGE as u64));
        let mut a = MemoryLimiter::with_budget(u64::MAX, Some(budget.clone()));
        assert!(a.memory_growing(0, PAGE, None).unwrap());
        assert!(a.memory_growing(PAGE, 3 * PAGE, None).unwrap());
        a.memory_grow_failed(wasmtime::Error::msg("the slot is full"))
            .unwrap();
        assert_eq!(budget.held(), PAGE as u64);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    proptest::proptest! {
        /// Whatever limiters grow, fail and drop, the budget holds exactly
        /// what the live ones hold, never more than its limit.
        #[test]
        fn the_budget_holds_what_live_limiters_hold(
            steps in proptest::collection::vec((0usize..4, 0u8..3, 0usize..6), 0..120),
        ) {
            let budget = Arc::new(MemoryBudget::new(10 * PAGE as u64));
            let mut limiters: Vec<Option<(MemoryLimiter, usize)>> =
                (0..4).map(|_| None).collect();
            for (which, action, pages) in steps {
                let slot = &mut limiters[which];
                match action {
                    0 => {
                        let (limiter, size) = slot.get_or_insert_with(|| {
                            (MemoryLimiter::with_budget(u64::MAX, Some(budget.clone())), 0)
                        });
                        let desired = *size + pages * PAGE;
                        if limiter.memory_growing(*size, desired, None).unwrap() {
                            *size = desired;
                        }
                    }
                    1 => {
                        if let Some((limiter, _)) = slot.as_mut() {
                            limiter.memory_grow_failed(wasmtime::Error::msg("x")).unwrap();
                        }
                    }
                    _ => *slot = None,
                }
                let live: u64 = limiters.iter().flatten().map(|(l, _)| l.held).sum();
                proptest::prop_assert_eq!(budget.held(), live);
                proptest::prop_assert!(budget.held() <= budget.limit());
            }
        }
    }
}
