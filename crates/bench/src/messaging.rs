//! Message passing: the ping-pong round trip between two WASM processes.
//!
//! **Task processes** (`ping_pong_round_trip_ns`, `..._1_worker_ns`):
//! The bundled `pong` (entry `run`) answers every PING with a PONG; the
//! bundled `ping` (entry `bench`) makes 100,000 numbered round trips with it
//! and checks each answer (quick mode: entry `run`, 10,000). The figure is
//! the wall time of `Kernel::run` — both processes from instantiation to
//! exit — divided by the round trips: a send, a wakeup and a receive each
//! way. Compare with Erlang by `benches/peers/compare.sh` (brief §5: at most
//! half of Erlang's).
//!
//! **Handler processes** (`handler_ping_pong_round_trip_ns`): the same
//! exchange between two handler processes (entry point `(i32) -> i32`,
//! called once per message; WAT below): `hping` sends PING *n*, `hpong`
//! answers PONG *n* from its handler, `hping`'s handler checks *n* and sends
//! the next. 100,000 round trips (quick: 10,000); the same wall-time
//! method.
//!
//! **Many pairs** (`ping_pong_4_pairs_round_trip_ns`,
//! `handler_ping_pong_4_pairs_round_trip_ns`): [`PAIRS`] such pairs at
//! once (more than the two workers), each making 100,000 round trips
//! (quick: 10,000) with its own pong; the figure is the wall time divided
//! by all the round trips. One pair alone on a kernel takes the fast paths
//! that need nothing else to be ready (the direct handoff, a handler's
//! direct delivery); here they mostly cannot, so this is the cost of a
//! round trip under load. The task pinger is WAT ([`task_ping`]: the
//! bundled `ping` finds its peer by the fixed name `pong`), the task pongs
//! the bundled `pong` under other names. Erlang's figure is the same: P
//! pingers with a pong each, all at once.

use crate::Settings;
use crate::harness::{self, Guest, MESSAGING};
use estalogic_kernel::abi::syscalls::send_options;
use estalogic_kernel::abi::{Flags, MessagePriority};
use estalogic_kernel::{Kernel, KernelBuilder};

/// Round trips of `ping`'s `bench` entry point.
pub const ROUND_TRIPS: u64 = 100_000;
/// Round trips of `ping`'s `run` entry point (quick mode).
pub const QUICK_ROUND_TRIPS: u64 = 10_000;

fn ping_pong(settings: &Settings, builder: impl Fn() -> KernelBuilder) -> anyhow::Result<f64> {
    let (entry, rounds) = if settings.quick {
        ("run", QUICK_ROUND_TRIPS)
    } else {
        ("bench", ROUND_TRIPS)
    };
    let guests = [
        Guest::bundled("pong", "run", MESSAGING),
        Guest::bundled("ping", entry, MESSAGING),
    ];
    harness::time_per_operation_with(settings, builder, &guests, rounds)
}

/// `ping_pong_round_trip_ns`: default workers (one per core).
pub fn ping_pong_default_workers(settings: &Settings) -> anyhow::Result<f64> {
    ping_pong(settings, Kernel::builder)
}

/// `ping_pong_round_trip_1_worker_ns`: one worker thread.
pub fn ping_pong_one_worker(settings: &Settings) -> anyhow::Result<f64> {
    ping_pong(settings, || Kernel::builder().workers(1))
}

/// The inbox of the handler guests: 64 bytes of payload at 1024 (the
/// header at 1024, the payload at 1080).
pub const HANDLER_INBOX: &str =
    r#"(func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))"#;

/// A handler (entry `handle`) that answers PING with PONG (same payload)
/// and exits 0 on type 0x1001.
pub fn handler_pong() -> String {
    format!(
        r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {HANDLER_INBOX}
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
      (then (drop (call $send (i64.load (i32.const 1032)) (i32.const 2) (i32.const 0)
                              (i32.const 1080) (local.get $len)))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001))
      (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    )
}

/// A handler (entry `handle`) that, on STARTED, looks up `pong` and sends
/// it PING 0; on each PONG checks the number it carries and sends the
/// next; after `rounds` stops `pong` (type 0x1001) and exits 0. Exit 3: a
/// wrong number came back; 4: a message that is neither STARTED nor PONG;
/// 5: a STARTED not from the kernel or with a payload.
pub fn handler_ping(rounds: u64, pong: &str) -> String {
    let len = pong.len();
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{pong}")
  (global $peer (mut i64) (i64.const 0))
  (global $round (mut i32) (i32.const 0))
  {HANDLER_INBOX}
  (func $ping
    (i32.store (i32.const 2048) (global.get $round))
    (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4))))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (if (i32.or (i64.ne (i64.load (i32.const 1032)) (i64.const 0)) (local.get $len))
          (then (return (i32.const 5))))
        (global.set $peer (call $lookup (i32.const 0) (i32.const {len})))
        (call $ping)
        (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 2)) (then (return (i32.const 4))))
    (if (i32.ne (i32.load (i32.const 1080)) (global.get $round)) (then (return (i32.const 3))))
    (global.set $round (i32.add (global.get $round) (i32.const 1)))
    (if (i32.eq (global.get $round) (i32.const {rounds}))
      (then
        (drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
        (call $exit (i32.const 0))))
    (call $ping)
    (i32.const 0)))"#
    )
}

fn handler_ping_pong(
    settings: &Settings,
    builder: impl Fn() -> KernelBuilder,
) -> anyhow::Result<f64> {
    let rounds = settings.count(ROUND_TRIPS, QUICK_ROUND_TRIPS);
    let guests = [
        Guest::wat("hpong", handler_pong(), "handle", MESSAGING),
        Guest::wat("hping", handler_ping(rounds, "hpong"), "handle", MESSAGING),
    ];
    harness::time_per_operation_with(settings, builder, &guests, rounds)
}

/// `handler_ping_pong_round_trip_ns`: two handler processes, default
/// workers.
pub fn handler_ping_pong_default_workers(settings: &Settings) -> anyhow::Result<f64> {
    handler_ping_pong(settings, Kernel::builder)
}

/// `handler_ping_pong_round_trip_1_worker_ns`: the same on one worker.
pub fn handler_ping_pong_one_worker(settings: &Settings) -> anyhow::Result<f64> {
    handler_ping_pong(settings, || Kernel::builder().workers(1))
}

/// Pairs of the many-pairs ping-pong benchmarks.
pub const PAIRS: usize = 4;
const PINGS: [&str; PAIRS] = ["ping1", "ping2", "ping3", "ping4"];
const PONGS: [&str; PAIRS] = ["pong1", "pong2", "pong3", "pong4"];

/// A task (entry `run`) that looks up `pong` and makes `rounds` calls to
/// it, PING carrying the round number as 8 bytes, checking that each
/// answer is a PONG carrying the same; then sends an empty PING (stop) and
/// exits 0. Exit 1: `pong` not found; 3: a call failed; 4: a wrong answer.
/// The bundled `ping` does the same with the fixed name `pong`.
pub fn task_ping(rounds: u64, pong: &str) -> String {
    let len = pong.len();
    let options = send_options::pack(MessagePriority::default(), Flags::NONE);
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{pong}")
  (func (export "run") (result i32) (local $peer i64) (local $round i64)
    (local.set $peer (call $lookup (i32.const 0) (i32.const {len})))
    (if (i64.lt_s (local.get $peer) (i64.const 0)) (then (return (i32.const 1))))
    (loop $again
      (i64.store (i32.const 2048) (local.get $round))
      (if (i64.lt_s (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1)
                      (i32.const {options}) (i32.const 2048) (i32.const 8) (i64.const -1)
                      (i64.const -1) (i32.const 1024) (i32.const 1080) (i32.const 8))
                    (i64.const 0))
        (then (return (i32.const 3))))
      (if (i32.or (i32.ne (i32.load (i32.const 1028)) (i32.const 2))
                  (i64.ne (i64.load (i32.const 1080)) (local.get $round)))
        (then (return (i32.const 4))))
      (local.set $round (i64.add (local.get $round) (i64.const 1)))
      (br_if $again (i64.lt_u (local.get $round) (i64.const {rounds}))))
    (drop (call $send (local.get $peer) (i32.const 1) (i32.const {options}) (i32.const 0)
                      (i32.const 0)))
    (i32.const 0)))"#
    )
}

fn many_pairs(settings: &Settings, handlers: bool) -> anyhow::Result<f64> {
    let rounds = settings.count(ROUND_TRIPS, QUICK_ROUND_TRIPS);
    let mut guests = Vec::new();
    for (ping, pong) in PINGS.into_iter().zip(PONGS) {
        if handlers {
            guests.push(Guest::wat(pong, handler_pong(), "handle", MESSAGING));
            guests.push(Guest::wat(
                ping,
                handler_ping(rounds, pong),
                "handle",
                MESSAGING,
            ));
        } else {
            guests.push(Guest::bundled("pong", "run", MESSAGING).named(pong));
            guests.push(Guest::wat(ping, task_ping(rounds, pong), "run", MESSAGING));
        }
    }
    harness::time_per_operation(settings, &guests, rounds * PAIRS as u64)
}

/// `ping_pong_4_pairs_round_trip_ns`: [`PAIRS`] task pairs at once.
pub fn task_pairs(settings: &Settings) -> anyhow::Result<f64> {
    many_pairs(settings, false)
}

/// `handler_ping_pong_4_pairs_round_trip_ns`: [`PAIRS`] handler pairs at
/// once.
pub fn handler_pairs(settings: &Settings) -> anyhow::Result<f64> {
    many_pairs(settings, true)
}
