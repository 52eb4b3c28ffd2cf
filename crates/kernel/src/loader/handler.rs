//! Handler processes: a module whose entry point is `(i32) -> i32`, called
//! once per message on whatever stack runs it (no fiber), with the message
//! written into the inbox the module declares.
//!
//! A handler's instance lives in a [`HandlerCell`] that its future and its
//! kernel-loop task share, so the kernel can reach it in two ways:
//!
//! - **its future** ([`run_handler`]): instantiate, ask for the inbox, then
//!   loop — deliver the next message (the first one the kernel's
//!   `STARTED`), pass a checkpoint per slice of fuel spent, wait for the
//!   next message like a receive (with the direct handoff);
//! - **a direct delivery** (`kernel_loop::deliver_direct`): a handler's send
//!   to a handler that waits idle, when nothing else is ready to run, calls
//!   the receiver's entry point with the message at once, inside the send,
//!   on the same worker: the mailbox, the wake-up and the run queue are
//!   skipped, and the receiver's turn is lent by the sender (as a direct
//!   handoff lends it).
//!
//! Either way a message goes through [`HandlerState::deliver`]: written into
//! the inbox, the call metered by its own fuel budget.

use crate::core::kernel_loop::{ExitStatus, Outcome, put_back_held, reap_due, stop_due};
use crate::core::message_router::Message;
use crate::loader::lifecycle_manager::{
    BACKSTOP_TICKS, BUDGET_RETRIES, budget_backoff, classify, current_lane, is_budget_refusal,
    is_pool_full, lane_after, may_retry, pool_backoff,
};
use crate::loader::lifecycle_manager::{HANDLER_CALL_SLICES, MIN_INBOX_CAPACITY};
use crate::loader::wasm_loader::{LaneModule, LoadedModule};
use crate::syscalls::ProcessContext;
use crate::syscalls::ipc::next_message;
use crate::syscalls::process::YieldOnce;
use estalogic_abi::{
    ErrorCode, Flags, HEADER_LEN, Header, INBOX_EXPORT, MAX_PAYLOAD_LEN, MessagePriority,
    MessageType, Pid,
};
use std::cell::UnsafeCell;
use std::sync::Arc;
use wasmtime::{Memory, Store, TypedFunc, UpdateDeadline};

/// A handler's instance and its metering, once instantiated.
pub(crate) struct HandlerState {
    store: Store<ProcessContext>,
    memory: Memory,
    handle: TypedFunc<i32, i32>,
    /// Where the inbox starts in linear memory (its header, then payload).
    at: usize,
    /// The largest payload the inbox takes.
    capacity: usize,
    /// Fuel one call may spend.
    budget: u64,
    checkpoint_fuel: u64,
    /// Fuel spent in all (calls, instantiation, host work).
    used: u64,
    /// Fuel spent since the last checkpoint.
    turn: u64,
}

impl HandlerState {
    /// The largest payload the inbox takes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fuel spent in all: calls, instantiation, host work.
    pub(crate) fn fuel_used(&self) -> u64 {
        self.used
    }

    /// The process's context.
    pub(crate) fn context(&self) -> &ProcessContext {
        self.store.data()
    }

    /// The process's context, to change.
    pub(crate) fn context_mut(&mut self) -> &mut ProcessContext {
        self.store.data_mut()
    }

    /// Writes a message (`header`, then `payload`, at most
    /// [`HandlerState::capacity`] bytes) into the inbox and calls the entry
    /// point with its length; returns what the call returned (0: go on).
    /// The copy into the inbox is host work for this handler, charged with
    /// its call (see `syscalls::charge`).
    pub(crate) fn deliver(&mut self, header: &Header, payload: &[u8]) -> wasmtime::Result<i32> {
        let encoded = header
            .encode(payload.len())
            .map_err(|e| wasmtime::Error::msg(format!("a message header did not encode: {e}")))?;
        // One look-up of the memory for both writes; `instantiate` checked
        // that the inbox lies in it, and memories never shrink.
        let end = self.at + HEADER_LEN + payload.len();
        let inbox = &mut self.memory.data_mut(&mut self.store)[self.at..end];
        inbox[..HEADER_LEN].copy_from_slice(&encoded);
        inbox[HEADER_LEN..].copy_from_slice(payload);
        self.store.data().add_host_work(payload.len() as u64);
        let handle = &self.handle;
        let len = payload.len() as i32;
        let (result, spent) = metered(&mut self.store, self.budget, |store| {
            handle.call(store, len)
        });
        self.used += spent;
        self.turn += spent;
        result
    }

    /// The checkpoints the fuel spent since the last one makes due (one per
    /// `checkpoint_fuel` units), taken off the count.
    pub(crate) fn due_checkpoints(&mut self) -> u64 {
        let interval = self.checkpoint_fuel.max(1);
        let due = self.turn / interval;
        self.turn %= interval;
        due
    }

    /// How the process ended when a call failed or returned `code` (not 0).
    pub(crate) fn outcome(&self, result: wasmtime::Result<i32>) -> Outcome {
        let status = match result {
            Ok(code) => ExitStatus::Exited(code),
            Err(error) => self.status_of(&error),
        };
        Outcome {
            status,
            fuel_used: self.used,
        }
    }

    fn status_of(&self, error: &wasmtime::Error) -> ExitStatus {
        status_of(error, &self.store, self.budget)
    }
}

/// How a handler ended on `error`: as any process (see [`classify`]), but
/// a `TIMEOUT` says which budget ran out, since a handler's call has its
/// own.
fn status_of(error: &wasmtime::Error, store: &Store<ProcessContext>, budget: u64) -> ExitStatus {
    match classify(error, store.data().limiter.refused()) {
        ExitStatus::Trapped { code, detail } if code == ErrorCode::TIMEOUT => {
            let detail = if store.data().overran.get() {
                "the host work of a syscall (the bytes the kernel copied for it) took it past"
                    .to_string()
            } else {
                detail
            };
            ExitStatus::Trapped {
                code,
                detail: format!(
                    "a call used up its fuel budget ({budget} units, {HANDLER_CALL_SLICES} slices; instantiation, a unit per byte of data segments plus the start function, is one call too): {detail}"
                ),
            }
        }
        other => other,
    }
}

/// Runs `call` with `budget` fuel; returns its result and the fuel it
/// spent, with the host work not yet taken off the store's fuel (see
/// `syscalls::charge`). Host work done for the call before it starts (the
/// message's copy into the inbox) comes off the budget first: a call left
/// with nothing traps with `TIMEOUT` at its first instruction.
fn metered<R>(
    store: &mut Store<ProcessContext>,
    budget: u64,
    call: impl FnOnce(&mut Store<ProcessContext>) -> wasmtime::Result<R>,
) -> (wasmtime::Result<R>, u64) {
    store.data().overran.set(false);
    let before = store.data().host_work.take();
    let fuel = budget.saturating_sub(before);
    if let Err(error) = store.set_fuel(fuel) {
        return (Err(error), before);
    }
    let result = call(store);
    let spent =
        fuel.saturating_sub(store.get_fuel().unwrap_or(0)) + before + store.data().host_work.take();
    (result, spent)
}

/// A handler's [`HandlerState`], shared by its future and its kernel-loop
/// task; empty until the instance is ready, and again once the future has
/// ended or been dropped.
///
/// Access rule: only whoever holds the process's task — the worker polling
/// its future, or a direct delivery that took the parked task out of the
/// loop's table under the core lock — touches the state, and not across a
/// point where the other could. A task is in exactly one place at a time,
/// so the two never overlap.
#[derive(Default)]
pub(crate) struct HandlerCell(UnsafeCell<Option<HandlerState>>);

// SAFETY: the state is reached only through `HandlerCell::state`, whose
// contract (the access rule above) gives one holder at a time: the task
// that owns the future moves between threads, but is held by one at a
// time, and `HandlerState` is `Send` (a `Store` of a `Send` context).
unsafe impl Sync for HandlerCell {}

impl HandlerCell {
    /// The state, if the instance is ready.
    ///
    /// # Safety
    ///
    /// The caller holds the process's task (see the access rule in the type
    /// docs), and no other reference obtained from this cell is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn state(&self) -> Option<&mut HandlerState> {
        // SAFETY: exclusive by the caller's contract.
        unsafe { (*self.0.get()).as_mut() }
    }

    /// Puts the ready state in, or takes it out (`None`).
    ///
    /// # Safety
    ///
    /// As for [`HandlerCell::state`].
    unsafe fn set(&self, state: Option<HandlerState>) -> Option<HandlerState> {
        // SAFETY: exclusive by the caller's contract.
        unsafe { std::mem::replace(&mut *self.0.get(), state) }
    }
}

/// Empties the cell when the future ends or is dropped, so the instance and
/// `Store` go with the future, as a task process's do.
struct Emptied(Arc<HandlerCell>);

impl Drop for Emptied {
    fn drop(&mut self) {
        // SAFETY: the future is being dropped or has ended, by the holder
        // of its task; nothing else of the cell is borrowed at this point.
        drop(unsafe { self.0.set(None) });
    }
}

/// The future that is one handler process: instantiate, learn where its
/// inbox is, then call its entry point once per message (the first one the
/// kernel's `STARTED`), each call synchronous, on no fiber of its own.
/// Between calls it waits like a receive (and takes the direct handoff);
/// for each slice's worth of fuel spent it passes a checkpoint, where the
/// scheduler may preempt it, a stop request is seen, and deterministic time
/// moves on.
pub(crate) async fn run_handler(
    cell: Arc<HandlerCell>,
    loaded: Arc<LoadedModule>,
    context: ProcessContext,
    checkpoint_fuel: u64,
    backstop: bool,
) -> Outcome {
    let cell = Emptied(cell);
    // What waiting needs, held outside the store the cell owns.
    let (process, task, kernel) = (
        context.process.clone(),
        context.task.clone(),
        context.kernel.clone(),
    );
    let ready = instantiate(loaded, context, checkpoint_fuel, backstop).await;
    let mut state = match ready {
        Ok(state) => state,
        Err(outcome) => return outcome,
    };
    let mut message = started(process.pid, kernel.clock.now_nanos());
    // Instantiation (data segments, the start function) and the inbox call
    // count toward the first checkpoint like any call's work.
    state.turn = state.used;
    let capacity = state.capacity;
    // SAFETY (here and below): this future is being polled, so its poller
    // holds the task; the references end before each await.
    unsafe { cell.0.set(Some(state)) };
    loop {
        let due = {
            let state = unsafe { cell.0.state() }.expect("set above");
            match state.deliver(&message.header, &message.payload) {
                Ok(0) => state.due_checkpoints(),
                result => {
                    // An answer held for it beside its mailbox goes back
                    // into it, where the exit reports it to its sender.
                    put_back_held(&kernel, &process);
                    return state.outcome(result);
                }
            }
        };
        // And one now if it is to stop (a shutdown, a restart), checked
        // after those (queued at one of them, it may run again after the
        // request): no call after the request, however little fuel its
        // calls spend, so it never handles mail the stop itself failed
        // back from its peers. The wait below checks again before it takes
        // a message. Likewise when a receiver its direct delivery ended
        // waits to be reaped (`kernel_loop::reap_due`), so that its
        // mailbox closes before long.
        let stopping = || stop_due(&kernel, &task) || reap_due();
        // It may be stopped at a checkpoint: an answer held for it goes
        // back into its mailbox first, so nothing is lost with it.
        if due > 0 {
            put_back_held(&kernel, &process);
        }
        // A checkpoint per slice's worth of work, between messages: the
        // scheduler may preempt here (see `run_turn`).
        for _ in 0..due {
            YieldOnce::new().await;
        }
        if stopping() {
            put_back_held(&kernel, &process);
            YieldOnce::new().await;
        }
        let next = {
            let state = unsafe { cell.0.state() }.expect("set above");
            next_message(state.context_mut(), &process, &task, &kernel, capacity)
        };
        // A message too large for the inbox is never taken: its sender
        // learns (`BUFFER_TOO_SMALL`), the handler is not called with half
        // a message, and it is neither counted as received nor acked.
        let next = match next {
            // Neither a timeout nor a size refusal ends this wait (see
            // `next_message`).
            Ok(wait) => wait.await.map_err(|_| ErrorCode::INTERNAL),
            Err(code) => Err(code),
        };
        message = match next {
            Ok(message) => message,
            Err(code) => {
                put_back_held(&kernel, &process);
                let state = unsafe { cell.0.state() }.expect("set above");
                return state.outcome(Err(cannot_take(code)));
            }
        };
    }
}

/// The error a handler ends with when it may not take its next message.
pub(crate) fn cannot_take(code: ErrorCode) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "cannot take its next message: {code} (a handler needs messaging:receive)"
    ))
}

/// The kernel's `STARTED`, a handler's first message.
fn started(pid: Pid, now: u64) -> Message {
    Message {
        header: Header {
            priority: MessagePriority::MAX,
            flags: Flags::NONE,
            message_type: MessageType::STARTED,
            source: Pid::KERNEL,
            target: pid,
            sequence: 0,
            timestamp: now,
            correlation: 0,
        },
        payload: Box::default(),
    }
}

/// A handler process's store on `lane`'s engine: its limiter and
/// backstop set (its fuel is set per call).
fn handler_store(
    lane: &LaneModule,
    context: ProcessContext,
    backstop: bool,
) -> Store<ProcessContext> {
    let mut store = Store::new(lane.pre.module().engine(), context);
    store.limiter(|context| &mut context.limiter);
    if backstop {
        // A call cannot be suspended: the epoch only moves the deadline on
        // (the per-call fuel budget is what bounds a call).
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(BACKSTOP_TICKS)));
        store.set_epoch_deadline(BACKSTOP_TICKS);
    }
    store
}

/// Creates the store, instantiates (trying again while the pool is
/// momentarily full), and asks the module for its inbox.
async fn instantiate(
    loaded: Arc<LoadedModule>,
    context: ProcessContext,
    checkpoint_fuel: u64,
    backstop: bool,
) -> Result<HandlerState, Outcome> {
    let lanes = loaded.lane_count();
    let first = current_lane() % lanes;
    let mut lane = loaded.on_lane(first);
    let mut store = handler_store(lane, context, backstop);
    let budget = checkpoint_fuel.saturating_mul(HANDLER_CALL_SLICES);
    let mut used = 0;
    let mut attempt = 0;
    let mut budget_tries = 0;
    let failed = |store: &Store<ProcessContext>, used: u64, error: wasmtime::Error| Outcome {
        status: status_of(&error, store, budget),
        fuel_used: used,
    };
    // Instantiate, moving to another lane's pool while this one is full
    // (the process limit is shared out among the lanes' pools).
    let instance = loop {
        let (result, spent) = metered(&mut store, budget, |store| lane.pre.instantiate(store));
        used += spent;
        match result {
            Err(error) if may_retry(attempt, lanes) && is_pool_full(&error) => {
                attempt += 1;
                if lanes > 1 {
                    lane = loaded.on_lane(lane_after(first, attempt, lanes));
                    store = handler_store(lane, store.into_data(), backstop);
                }
                pool_backoff(attempt, lanes).await;
            }
            Err(error) if budget_tries < BUDGET_RETRIES && is_budget_refusal(&error, &store) => {
                budget_tries += 1;
                store.data_mut().limiter.forget_refusal();
                budget_backoff(budget_tries).await;
            }
            // Copying the data segments (a unit a byte) and running the
            // start function is paid from one call's budget too.
            Ok(instance) => break instance,
            Err(error) => return Err(failed(&store, used, error)),
        }
    };
    let exports = (|| {
        let memory = lane
            .memory_export
            .as_ref()
            .and_then(|export| instance.get_module_export(&mut store, export))
            .and_then(wasmtime::Extern::into_memory)
            .ok_or_else(|| wasmtime::Error::msg("the memory export is missing"))?;
        store.data_mut().memory = Some(memory);
        let mut function = |export: Option<&wasmtime::ModuleExport>| {
            export
                .and_then(|export| instance.get_module_export(&mut store, export))
                .and_then(wasmtime::Extern::into_func)
        };
        let handle = function(Some(&lane.entry_export))
            .ok_or_else(|| wasmtime::Error::msg("the entry point export is missing"))?;
        let inbox = function(lane.inbox_export.as_ref()).ok_or_else(|| {
            wasmtime::Error::msg(format!("the `{INBOX_EXPORT}` export is missing"))
        })?;
        let handle = handle.typed::<i32, i32>(&store)?;
        let inbox = inbox.typed::<(), i64>(&store)?;
        Ok::<_, wasmtime::Error>((memory, handle, inbox))
    })();
    let (memory, handle, inbox) = match exports {
        Ok(exports) => exports,
        Err(error) => return Err(failed(&store, used, error)),
    };
    let (result, spent) = metered(&mut store, budget, |store| inbox.call(store, ()));
    used += spent;
    let raw = match result {
        Ok(raw) => raw as u64,
        Err(error) => return Err(failed(&store, used, error)),
    };
    let (at, declared) = ((raw & 0xFFFF_FFFF) as usize, (raw >> 32) as usize);
    // What is used of it: at most one largest payload.
    let capacity = declared.min(MAX_PAYLOAD_LEN);
    let problem = if at
        .checked_add(HEADER_LEN + capacity)
        .is_none_or(|end| end > memory.data_size(&store))
    {
        Some(format!(
            "`{INBOX_EXPORT}` gave {declared} bytes of payload at {at:#x} (of which the kernel would use {capacity}), which do not lie in its memory"
        ))
    } else if capacity < MIN_INBOX_CAPACITY {
        Some(format!(
            "`{INBOX_EXPORT}` gave {capacity} bytes of payload; an inbox holds at least {MIN_INBOX_CAPACITY}"
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(failed(&store, used, wasmtime::Error::msg(problem)));
    }
    Ok(HandlerState {
        store,
        memory,
        handle,
        at,
        capacity,
        budget,
        checkpoint_fuel,
        used,
        turn: 0,
    })
}
