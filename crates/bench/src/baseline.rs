//! Plain-Wasmtime baselines, measured in the same run as the kernel's
//! figures: what Wasmtime's own machinery costs for a round trip and for a
//! spawn, with none of the kernel around it (no scheduler, capabilities,
//! headers or accounting). They show how much of each kernel figure is the
//! engine's floor and how much is the kernel's.
//!
//! - **Ping-pong** (`wasmtime_ping_pong_ns`): two instances, each in its
//!   own async `Store` with fuel, exchange an `i32` through host `send`
//!   (synchronous) and `recv` (asynchronous: it suspends the fiber when
//!   nothing is queued). A loop polls both `call_async` futures in turn —
//!   the naive embedding: four fiber switches per round trip.
//! - **Ping-pong with a handoff** (`wasmtime_handoff_ping_pong_ns`): the
//!   same two instances, but when ping's `recv` finds its mailbox empty it
//!   polls pong's call itself, inside the host call (pong runs on ping's
//!   fiber until its own `recv` suspends), as the kernel's direct handoff
//!   does: two fiber switches and two async host calls per round trip. This
//!   is the engine's floor for a round trip between two processes that
//!   block in `receive`, with no mailbox, scheduler, capability or header
//!   work at all.
//! - **Spawn** (`wasmtime_spawn_run_exit_ns`): with the kernel's pooling
//!   allocator settings (64 MiB memory slots, copied data segments, batched
//!   decommits, tables reset in place), 1,000
//!   times: a `Store` with fuel, `InstancePre::instantiate_async` of the
//!   bundled `noop` module (the kernel's spawn benchmark runs the same
//!   bytes), `call_async` of its entry point, and dropping the `Store`; one
//!   thread.

use crate::{Settings, measure};
use anyhow::{Result, anyhow, ensure};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    Store, TypedFunc,
};

/// Round trips per run of the ping-pong baseline.
pub const ROUND_TRIPS: u64 = 100_000;
/// Processes per run of the spawn baseline.
pub const SPAWNS: u64 = 1_000;
/// Fuel between async yields, as large as the kernel's checkpoint so that
/// neither side yields in the middle of a round trip.
const YIELD_INTERVAL: u64 = 1_000_000;

const PING: &str = r#"(module
  (import "k" "send" (func $send (param i32 i32)))
  (import "k" "recv" (func $recv (param i32) (result i32)))
  (func (export "run") (param $n i32) (result i32)
    (local $i i32)
    (loop $l
      (call $send (i32.const 1) (local.get $i))
      (if (i32.ne (call $recv (i32.const 0)) (local.get $i)) (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (call $send (i32.const 1) (i32.const -1))
    (i32.const 0)))"#;

const PONG: &str = r#"(module
  (import "k" "send" (func $send (param i32 i32)))
  (import "k" "recv" (func $recv (param i32) (result i32)))
  (func (export "run") (param $n i32) (result i32)
    (local $v i32)
    (loop $l
      (local.set $v (call $recv (i32.const 1)))
      (if (i32.ge_s (local.get $v) (i32.const 0)) (then
        (call $send (i32.const 0) (local.get $v))
        (br $l))))
    (i32.const 0)))"#;

/// The two mailboxes of the ping-pong baseline (index 0: ping's, 1: pong's).
type Queues = RefCell<[VecDeque<i32>; 2]>;

thread_local! {
    static QUEUES: Queues = const { RefCell::new([VecDeque::new(), VecDeque::new()]) };
}

/// Pong's `call_async` future in the handoff baseline, which ping's `recv`
/// polls itself.
type PeerCall = Pin<Box<dyn Future<Output = wasmtime::Result<i32>>>>;

thread_local! {
    /// Pong's call while it has not finished, for ping's `recv` to drive.
    static PEER: RefCell<Option<PeerCall>> = const { RefCell::new(None) };
    /// Pong's exit code once its call finished inside ping's `recv`.
    static PEER_DONE: RefCell<Option<wasmtime::Result<i32>>> = const { RefCell::new(None) };
}

/// `recv`: ready with the next value of mailbox `index`, pending while it is
/// empty (the driving loop polls again).
struct Recv(usize);

/// Ping's `recv` in the handoff baseline: when its mailbox is empty it runs
/// pong (polls pong's call once, on this fiber) and looks again.
struct HandoffRecv;

impl Future for HandoffRecv {
    type Output = wasmtime::Result<i32>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let take = || QUEUES.with(|q| q.borrow_mut()[0].pop_front());
        if let Some(value) = take() {
            return Poll::Ready(Ok(value));
        }
        // Taken out of the cell while it runs: nothing else borrows it then.
        if let Some(mut peer) = PEER.with(|p| p.borrow_mut().take()) {
            match peer.as_mut().poll(cx) {
                Poll::Ready(code) => PEER_DONE.with(|d| *d.borrow_mut() = Some(code)),
                Poll::Pending => PEER.with(|p| *p.borrow_mut() = Some(peer)),
            }
        }
        match take() {
            Some(value) => Poll::Ready(Ok(value)),
            // Pong ended without answering: fail rather than wait forever.
            None if PEER.with(|p| p.borrow().is_none()) => {
                Poll::Ready(Err(wasmtime::Error::msg("pong ended without answering")))
            }
            None => Poll::Pending,
        }
    }
}

impl Future for Recv {
    type Output = wasmtime::Result<i32>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match QUEUES.with(|q| q.borrow_mut()[self.0].pop_front()) {
            Some(value) => Poll::Ready(Ok(value)),
            None => Poll::Pending,
        }
    }
}

fn engine(config: &mut Config) -> Result<Engine> {
    config.consume_fuel(true);
    Engine::new(config).map_err(|e| anyhow!("plain Wasmtime engine: {e:#}"))
}

fn store(engine: &Engine) -> Result<Store<()>> {
    let mut store = Store::new(engine, ());
    store
        .set_fuel(u64::MAX)
        .and_then(|()| store.fuel_async_yield_interval(Some(YIELD_INTERVAL)))
        .map_err(|e| anyhow!("plain Wasmtime fuel: {e:#}"))?;
    Ok(store)
}

/// Polls `future` to completion with a no-op waker (everything here is
/// ready or pending only for an instant).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// The two ping-pong baselines' common setup: an engine, a linker with
/// host `send` and `recv`, and the compiled `ping` and `pong`.
struct Pair {
    engine: Engine,
    linker: Linker<()>,
    ping: Module,
    pong: Module,
}

/// A fuelled store and its instance's `run`.
type Side = (Store<()>, TypedFunc<i32, i32>);

impl Pair {
    /// With `handoff`, ping's `recv` runs pong itself when its mailbox is
    /// empty ([`HandoffRecv`]); otherwise both just wait ([`Recv`]).
    fn new(handoff: bool) -> Result<Pair> {
        let engine = engine(&mut Config::new())?;
        let mut linker: Linker<()> = Linker::new(&engine);
        linker
            .func_wrap("k", "send", |_: Caller<'_, ()>, to: i32, value: i32| {
                QUEUES.with(|q| q.borrow_mut()[to as usize].push_back(value));
            })
            .and_then(|l| {
                l.func_wrap_async(
                    "k",
                    "recv",
                    move |_: Caller<'_, ()>, (me,): (i32,)| -> Box<dyn Future<Output = _> + Send> {
                        if handoff && me == 0 {
                            Box::new(HandoffRecv)
                        } else {
                            Box::new(Recv(me as usize))
                        }
                    },
                )
            })
            .map_err(|e| anyhow!("plain Wasmtime linker: {e:#}"))?;
        let ping = Module::new(&engine, PING).map_err(|e| anyhow!("compile ping: {e:#}"))?;
        let pong = Module::new(&engine, PONG).map_err(|e| anyhow!("compile pong: {e:#}"))?;
        Ok(Pair {
            engine,
            linker,
            ping,
            pong,
        })
    }

    /// Fresh instances of ping and pong, each in its own store.
    fn instantiate(&self) -> Result<(Side, Side)> {
        let side = |module: &Module| -> Result<Side> {
            let mut store = store(&self.engine)?;
            let run = block_on(async {
                let instance = self.linker.instantiate_async(&mut store, module).await?;
                instance.get_typed_func::<i32, i32>(&mut store, "run")
            })
            .map_err(|e| anyhow!("instantiate a ping-pong side: {e:#}"))?;
            Ok((store, run))
        };
        Ok((side(&self.ping)?, side(&self.pong)?))
    }
}

/// `wasmtime_ping_pong_ns`: per round trip, 100,000 per run (quick: 1,000).
pub fn ping_pong(settings: &Settings) -> Result<f64> {
    let rounds = settings.count(ROUND_TRIPS, 1_000);
    let pair = Pair::new(false)?;
    let n = i32::try_from(rounds)?;
    measure::best_of(settings.runs(), || {
        QUEUES.with(|q| q.borrow_mut().iter_mut().for_each(VecDeque::clear));
        let ((mut ping_store, ping_run), (mut pong_store, pong_run)) = pair.instantiate()?;
        let mut a = pin!(ping_run.call_async(&mut ping_store, n));
        let mut b = pin!(pong_run.call_async(&mut pong_store, n));
        let mut cx = Context::from_waker(Waker::noop());
        let (mut ping_code, mut pong_code) = (None, None);
        let started = Instant::now();
        while ping_code.is_none() || pong_code.is_none() {
            if ping_code.is_none()
                && let Poll::Ready(result) = a.as_mut().poll(&mut cx)
            {
                ping_code = Some(result.map_err(|e| anyhow!("ping: {e:#}"))?);
            }
            if pong_code.is_none()
                && let Poll::Ready(result) = b.as_mut().poll(&mut cx)
            {
                pong_code = Some(result.map_err(|e| anyhow!("pong: {e:#}"))?);
            }
        }
        let elapsed = started.elapsed();
        ensure!(
            ping_code == Some(0) && pong_code == Some(0),
            "plain ping-pong lost or reordered a value"
        );
        Ok(measure::nanos_per(elapsed, rounds))
    })
}

/// `wasmtime_handoff_ping_pong_ns`: per round trip, 100,000 per run
/// (quick: 1,000).
pub fn handoff_ping_pong(settings: &Settings) -> Result<f64> {
    let rounds = settings.count(ROUND_TRIPS, 1_000);
    let pair = Pair::new(true)?;
    let n = i32::try_from(rounds)?;
    measure::best_of(settings.runs(), || {
        QUEUES.with(|q| q.borrow_mut().iter_mut().for_each(VecDeque::clear));
        PEER_DONE.with(|d| d.borrow_mut().take());
        let ((mut ping_store, ping_run), (pong_store, pong_run)) = pair.instantiate()?;
        let peer: PeerCall = Box::pin(async move {
            let mut store = pong_store;
            pong_run.call_async(&mut store, n).await
        });
        PEER.with(|p| *p.borrow_mut() = Some(peer));
        let started = Instant::now();
        let ping_code = block_on(ping_run.call_async(&mut ping_store, n));
        let elapsed = started.elapsed();
        let ping_code = ping_code.map_err(|e| anyhow!("ping: {e:#}"))?;
        // Pong still has the stop value to take.
        if let Some(peer) = PEER.with(|p| p.borrow_mut().take()) {
            let code = block_on(peer);
            PEER_DONE.with(|d| *d.borrow_mut() = Some(code));
        }
        let pong_code = PEER_DONE
            .with(|d| d.borrow_mut().take())
            .ok_or_else(|| anyhow!("pong never finished"))?
            .map_err(|e| anyhow!("pong: {e:#}"))?;
        ensure!(
            ping_code == 0 && pong_code == 0,
            "handoff ping-pong lost or reordered a value"
        );
        Ok(measure::nanos_per(elapsed, rounds))
    })
}

/// `wasmtime_spawn_run_exit_ns`: per process, 1,000 per run (quick: 100).
pub fn spawn_run_exit(settings: &Settings) -> Result<f64> {
    let count = settings.count(SPAWNS, 100);
    let mut config = Config::new();
    let mut pool = PoolingAllocationConfig::new();
    let slots = u32::try_from(count)?;
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .max_memory_size(64 << 20)
        .table_elements(10_000)
        .max_unused_warm_slots(1_024)
        .decommit_batch_size(32)
        .table_keep_resident(16 << 10);
    config
        .memory_reservation(64 << 20)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .memory_init_cow(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = engine(&mut config)?;
    let bytes = estalogic_services::get("noop").ok_or_else(|| anyhow!("noop is not bundled"))?;
    let module = Module::new(&engine, bytes).map_err(|e| anyhow!("compile noop: {e:#}"))?;
    let mut linker = Linker::<()>::new(&engine);
    // noop never calls a syscall; its imports (if any) only need to exist.
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(|e| anyhow!("stub noop's imports: {e:#}"))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| anyhow!("pre-instantiate noop: {e:#}"))?;
    measure::best_of(settings.runs().max(2), || {
        let started = Instant::now();
        for _ in 0..count {
            let mut store = store(&engine)?;
            let code = block_on(async {
                let instance = pre.instantiate_async(&mut store).await?;
                let run = instance.get_typed_func::<(), i32>(&mut store, "run")?;
                run.call_async(&mut store, ()).await
            })
            .map_err(|e| anyhow!("plain noop: {e:#}"))?;
            ensure!(code == 0, "plain noop returned {code}");
        }
        Ok(measure::nanos_per(started.elapsed(), count))
    })
}
