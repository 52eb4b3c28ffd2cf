//! Edge cases of broadcasts suspended between copies (a task's checkpoints
//! inside `broadcast`) and of handler calls whose syscalls' host work runs
//! past the call's fuel budget (`TIMEOUT` as the syscall returns).

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{describe, load_leveled as load, mailbox};

const IMPORTS: &str = r#"
  (import "estalogic" "exit" (func $exit (param i32)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
"#;

const ALL: &[&str] = &[
    "\"messaging:send\"",
    "\"messaging:receive\"",
    "\"process:lookup\"",
    "\"log:write\"",
    "\"time:read\"",
    "\"messaging:broadcast\"",
];

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 6_400_000;

fn trapped_timeout(status: &ExitStatus) -> bool {
    matches!(status, ExitStatus::Trapped { code, .. } if *code == ErrorCode::TIMEOUT)
}

/// A task that waits for messages of any type for `idle_ms` each; exits
/// with how many it took once none came for that long.
fn counting_receiver(idle_ms: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 18)
  (func (export "run") (result i32) (local $n i32)
    (block $done (loop $next
      (br_if $done (i64.lt_s
        (call $receive (i32.const 0) (i64.const {idle_ms}) (i32.const 0) (i32.const 64) (i32.const 1048576))
        (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $n)))"#
    )
}

/// A task that waits `delay_ms`, sends type 0x2000 (empty) to the module
/// named `name`, then waits `after_ms` and exits 0.
fn kicker(name: &str, delay_ms: u32, after_ms: u32) -> String {
    let len = name.len();
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 2048) "{name}")
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const {delay_ms}) (i32.const 0) (i32.const 64) (i32.const 0)))
    (drop (call $send (call $lookup (i32.const 2048) (i32.const {len})) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $receive (i32.const 0x7777) (i64.const {after_ms}) (i32.const 0) (i32.const 64) (i32.const 0)))
    (i32.const 0)))"#
    )
}

/// A handler that, called with type 0x2000, spins `spins` loop turns and
/// then runs `tail` (WAT instructions), returning 7 if it gets through.
fn spinning_handler(spins: u32, tail: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 18)
  (data (i32.const 3000) "sink")
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (local $i i32) (local $r i64)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2000))
      (then
        (block $b (loop $l
          (br_if $b (i32.ge_u (local.get $i) (i32.const {spins})))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        {tail}
        (return (i32.const 7))))
    (i32.const 0)))"#
    )
}

fn det_kernel() -> Kernel {
    Kernel::builder()
        .deterministic(true)
        .build()
        .expect("the kernel builds")
}

/// Fuel of one spinning call of `spins` turns with nothing after.
fn spin_fuel(spins: u32) -> u64 {
    let mut k = det_kernel();
    load(
        &mut k,
        "h",
        "handle",
        &spinning_handler(spins, ""),
        ALL,
        "normal",
        "",
    );
    load(
        &mut k,
        "kick",
        "run",
        &kicker("h", 10, 10),
        ALL,
        "normal",
        "",
    );
    k.spawn("h").unwrap();
    k.spawn("kick").unwrap();
    let shutdown = k.shutdown_handle();
    let exits = k.subscribe_exits();
    let t = std::thread::spawn(move || k.run());
    // the handler exits 7 by itself, the kicker too; nothing else runs.
    let _ = exits.recv_timeout(std::time::Duration::from_secs(20));
    let _ = exits.recv_timeout(std::time::Duration::from_secs(20));
    shutdown.request();
    let report = t.join().unwrap();
    let h = report.process("h").unwrap();
    assert_eq!(h.status, ExitStatus::Exited(7), "{}", describe(&report));
    h.fuel_used
}

// docs/ABI.md, "Handler processes" 5: "A syscall whose work the budget
// cannot pay returns into the `TIMEOUT` trap instead of to the guest (what
// it did stands: a message it sent stays sent; a broadcast stops offering
// copies there), so a call ends at most one step of a syscall's work (one
// payload's copy and post, at most 1 MiB and 256 units) plus 4,095 units
// past its budget, and its report's fuel counts all of it."
// ARCHITECTURE.md invariant 7: "a call broadcasting 1 MiB to 8,000
// receivers stops one copy past its budget".
// Failed before the fix: a handler with ~100,000 units of its budget left
// broadcast 1 MiB, and the payload's copy out of its memory and the first
// receiver's copy were both made before the first look at the budget: the
// call ended 1,997,630 units past it (now: the copy out is paid first and
// the broadcast stops there).
#[test]
fn a_handler_broadcast_near_its_budget_ends_at_most_one_copy_past_it() {
    let base = spin_fuel(100_000);
    let per = (spin_fuel(200_000) - base) as f64 / 100_000.0;
    // leave about 100,000 units of the budget to the broadcast
    let spins = ((BUDGET - 100_000) as f64 / per) as u32;
    let left = BUDGET as i64 - spin_fuel(spins) as i64;
    eprintln!("per turn {per}, spins {spins}, left {left}");
    assert!(left > 20_000 && left < 300_000, "calibration: {left} left");
    let tail = format!(
        "(drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const {MIB})))"
    );
    let mut k = det_kernel();
    load(
        &mut k,
        "bc",
        "handle",
        &spinning_handler(spins, &tail),
        ALL,
        "normal",
        "",
    );
    load(
        &mut k,
        "kick",
        "run",
        &kicker("bc", 10, 10),
        ALL,
        "normal",
        "",
    );
    load(
        &mut k,
        "rx",
        "run",
        &counting_receiver(500),
        ALL,
        "normal",
        "",
    );
    for _ in 0..4 {
        k.spawn("rx").unwrap();
    }
    k.spawn("bc").unwrap();
    k.spawn("kick").unwrap();
    let report = k.run();
    let bc = report.process("bc").unwrap();
    eprintln!("{}\n{bc:?}", describe(&report));
    assert!(trapped_timeout(&bc.status), "{:?}", bc.status);
    let one_step = MIB + 256;
    assert!(
        bc.fuel_used <= BUDGET + one_step + 4095,
        "the call ended {} units past its budget of {BUDGET} (one step is {one_step} + 4,095): \
         fuel_used {}, copies accepted {}",
        bc.fuel_used - BUDGET,
        bc.fuel_used,
        bc.sent
    );
}

// docs/ABI.md, "Handler processes" 5: "one call may use 64 slices of fuel
// (6,400,000 units by default); a call that needs more traps with
// `TIMEOUT`". A call whose sends (64 KiB each, 65,792 units with their
// posts) add up to just under the budget returns normally, to a task and
// to an idle handler (direct delivery).
#[test]
fn a_handler_call_whose_sends_stay_just_under_its_budget_returns_normally() {
    // 97 sends: 6,381,824 units of host work, 18,176 left for instructions.
    for direct in [false, true] {
        let tail = r#"
        (local.set $i (i32.const 0))
        (block $s (loop $m
          (br_if $s (i32.ge_u (local.get $i) (i32.const 97)))
          (local.set $r (call $send (call $lookup (i32.const 3000) (i32.const 4)) (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 65536)))
          (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.wrap_i64 (local.get $r)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $m)))"#;
        let mut k = det_kernel();
        load(
            &mut k,
            "tx",
            "handle",
            &spinning_handler(0, tail),
            ALL,
            "normal",
            "",
        );
        load(
            &mut k,
            "kick",
            "run",
            &kicker("tx", 10, 10),
            ALL,
            "normal",
            "",
        );
        if direct {
            // counts its messages; exits with the count at a 0x3000
            let sink = format!(
                r#"(module {IMPORTS}
  (memory (export "memory") 3)
  (global $n (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0001000000000400))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1000))
      (then (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (if (i32.eq (global.get $n) (i32.const 97)) (then (return (i32.const 97))))))
    (i32.const 0)))"#
            );
            load(&mut k, "sink", "handle", &sink, ALL, "normal", "");
        } else {
            load(
                &mut k,
                "sink",
                "run",
                &counting_receiver(200),
                ALL,
                "normal",
                &mailbox(200, "notify_sender"),
            );
        }
        k.spawn("sink").unwrap();
        k.spawn("tx").unwrap();
        k.spawn("kick").unwrap();
        let report = k.run();
        let tx = report.process("tx").unwrap();
        eprintln!("direct {direct}:\n{}\n{tx:?}", describe(&report));
        assert_eq!(
            tx.status,
            ExitStatus::Exited(7),
            "direct {direct}: {:?}",
            tx.status
        );
        assert!(tx.fuel_used <= BUDGET, "direct {direct}: {}", tx.fuel_used);
        assert_eq!(tx.sent, 97);
        assert_eq!(
            report.process("sink").unwrap().status,
            ExitStatus::Exited(97)
        );
    }
}

// ------------------------------------------------------------------
// Task broadcasts suspended between copies.

/// Checks FIFO per source: traps if a message's sequence is not above the
/// last one taken from the same source (pid index at header offset 8).
/// Every message here has priority 0, so "FIFO per (source, target,
/// priority)" means strictly increasing sequences per source.
const FIFO_CHECK: &str = r#"
       (local.set $src (i32.load (i32.const 8)))
       (local.set $seq (i64.load (i32.const 24)))
       (if (i32.ne (local.get $src) (i32.const 0)) (then
         (if (i64.le_u (local.get $seq) (i64.load (i32.add (i32.const 400000) (i32.shl (local.get $src) (i32.const 3)))))
           (then unreachable))
         (i64.store (i32.add (i32.const 400000) (i32.shl (local.get $src) (i32.const 3))) (local.get $seq))))"#;

/// A task receiver: takes any message, checks FIFO per source, spins
/// `work` turns after each; exits with its count once none came for
/// `idle_ms` or after `quit_after` messages (0: never).
fn fifo_receiver(idle_ms: u32, work: u32, quit_after: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 8)
  (func (export "run") (result i32) (local $n i32) (local $len i64) (local $src i32) (local $seq i64) (local $w i32)
    (block $done (loop $next
      (local.set $len (call $receive (i32.const 0) (i64.const {idle_ms}) (i32.const 0) (i32.const 64) (i32.const 300000)))
      (br_if $done (i64.eq (local.get $len) (i64.const -3001)))
      (if (i64.ge_s (local.get $len) (i64.const 0)) (then
        {FIFO_CHECK}
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $done (i32.eq (local.get $n) (i32.const {quit_after})))
        (local.set $w (i32.const 0))
        (block $b (loop $l
          (br_if $b (i32.ge_u (local.get $w) (i32.const {work})))
          (local.set $w (i32.add (local.get $w) (i32.const 1)))
          (br $l)))))
      (br $next)))
    (local.get $n)))"#
    )
}

/// A handler receiver checking FIFO per source (a violation traps); never
/// ends by itself.
fn fifo_handler() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 8)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x00030d4000000000))
  (func (export "handle") (param i32) (result i32) (local $src i32) (local $seq i64)
    (if (i32.ne (i32.load (i32.const 4)) (i32.const 0xFF02)) (then
      (local.set $src (i32.load (i32.const 8)))
      (local.set $seq (i64.load (i32.const 24)))
      (if (i32.ne (local.get $src) (i32.const 0)) (then
        (if (i64.le_u (local.get $seq) (i64.load (i32.add (i32.const 400000) (i32.shl (local.get $src) (i32.const 3)))))
          (then unreachable))
        (i64.store (i32.add (i32.const 400000) (i32.shl (local.get $src) (i32.const 3))) (local.get $seq))))))
    (i32.const 0)))"#
    )
}

/// A task that broadcasts `len` bytes of type `ty` `count` times, after
/// each sending 16 bytes of the same type to the module `r0`; then drains
/// its mailbox (the notices) and exits with the sum of what the
/// broadcasts returned.
fn fifo_broadcaster(ty: u32, len: u32, count: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 8)
  (data (i32.const 2048) "r0")
  (func (export "run") (result i32) (local $i i32) (local $sum i64)
    (block $b (loop $l
      (br_if $b (i32.ge_u (local.get $i) (i32.const {count})))
      (local.set $sum (i64.add (local.get $sum)
        (call $broadcast (i32.const {ty}) (i32.const 0) (i32.const 65536) (i32.const {len}))))
      (drop (call $send (call $lookup (i32.const 2048) (i32.const 2)) (i32.const {ty}) (i32.const 0) (i32.const 0) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (block $d (loop $dl
      (br_if $d (i64.eq (call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 300000)) (i64.const -3001)))
      (br $dl)))
    (i32.wrap_i64 (local.get $sum))))"#
    )
}

/// Sleeps 1 ms `n` times (a higher level waking up in the middle of the
/// broadcasts, preempting them at their checkpoints).
fn ticker(n: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop $l
      (drop (call $receive (i32.const 0x7777) (i64.const 1) (i32.const 0) (i32.const 64) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
    (i32.const 0)))"#
    )
}

/// Two task broadcasters (128 KiB copies: a checkpoint after every copy)
/// interleaving over receivers in every overflow mode, some slow, some
/// leaving mid-stream, two handlers, and a HIGH ticker preempting them.
fn broadcast_scenario(k: &mut Kernel) {
    load(
        k,
        "bc1",
        "run",
        &fifo_broadcaster(0x1001, 131072, 6),
        ALL,
        "normal",
        "",
    );
    load(
        k,
        "bc2",
        "run",
        &fifo_broadcaster(0x1002, 131072, 6),
        ALL,
        "normal",
        "",
    );
    load(
        k,
        "r0",
        "run",
        &fifo_receiver(300, 2000, 0),
        ALL,
        "normal",
        &mailbox(64, "notify_sender"),
    );
    let modes = [
        "notify_sender",
        "drop_newest",
        "drop_oldest",
        "block_sender",
    ];
    for (i, mode) in modes.iter().enumerate() {
        let name = format!("slow{i}");
        load(
            k,
            &name,
            "run",
            &fifo_receiver(300, 200_000, 0),
            ALL,
            "normal",
            &mailbox(3, mode),
        );
        let name = format!("quit{i}");
        load(
            k,
            &name,
            "run",
            &fifo_receiver(300, 10_000, 3 + i as u32),
            ALL,
            "normal",
            &mailbox(4, mode),
        );
    }
    load(
        k,
        "h",
        "handle",
        &fifo_handler(),
        ALL,
        "normal",
        &mailbox(5, "drop_oldest"),
    );
    load(k, "tick", "run", &ticker(40), ALL, "high", "");
    k.spawn("r0").unwrap();
    for i in 0..4 {
        k.spawn(&format!("slow{i}")).unwrap();
        k.spawn(&format!("quit{i}")).unwrap();
    }
    k.spawn("h").unwrap();
    k.spawn("h").unwrap();
    k.spawn("tick").unwrap();
    k.spawn("bc1").unwrap();
    k.spawn("bc2").unwrap();
}

fn check_balance(report: &RunReport, what: &str) {
    let sum = |f: fn(&estalogic_kernel::ProcessReport) -> u64| -> u64 {
        report.processes.iter().map(f).sum()
    };
    let made = sum(|p| p.sent) + sum(|p| p.delivery_failures);
    let accounted = sum(|p| p.received) + sum(|p| p.undelivered);
    assert_eq!(
        made,
        accounted,
        "{what}: sent + delivery failures != received + undelivered\n{}",
        describe(report)
    );
}

/// No process trapped (a FIFO violation traps its receiver) and the
/// counts balance.
fn check_scenario(report: &RunReport, what: &str) {
    for p in &report.processes {
        if p.status.is_trap() {
            panic!(
                "{what}: {} trapped (a FIFO violation traps): {:?}\n{}",
                p.module,
                p.status,
                describe(report)
            );
        }
    }
    check_balance(report, what);
}

// BRIEF.md 3.3: "Ordering: FIFO per (source, target, priority)"; ARCHITECTURE.md
// invariant 5: "every dropped or undeliverable message is reported to its
// sender with a `DELIVERY_FAILURE` notice and counted"; BRIEF.md 3.8 and
// ARCHITECTURE.md "Deterministic mode": "Preemption points depend only on
// fuel, so a run repeats". Two broadcasters suspended between copies,
// preempted by a HIGH ticker, receivers in every mode leaving mid-stream:
// FIFO per source holds at every receiver, the counts balance, and two
// deterministic runs give the same reports and IPC traces.
#[test]
fn interleaved_suspended_broadcasts_keep_fifo_balance_and_repeat() {
    let run = || {
        let mut k = Kernel::builder()
            .deterministic(true)
            .trace_ipc(true)
            .build()
            .unwrap();
        broadcast_scenario(&mut k);
        let report = k.run();
        check_scenario(&report, "deterministic");
        let text = format!(
            "{:#?}\n{:#?}\n{:#?}\n{}\n{:?}",
            report.processes, report.restarts, report.trace, report.trace_dropped, report.stats
        );
        (report, text)
    };
    let (first, a) = run();
    eprintln!("{}", describe(&first));
    eprintln!(
        "checkpoints {} trace {}",
        first.stats.checkpoints,
        first.trace.len()
    );
    for round in 0..2 {
        let (_, b) = run();
        if a != b {
            let (x, y): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
            let at = x.iter().zip(&y).position(|(p, q)| p != q).unwrap_or(0);
            panic!(
                "round {round}: runs differ at line {at}:\n  {}\n  {}",
                x.get(at).unwrap_or(&""),
                y.get(at).unwrap_or(&"")
            );
        }
    }
}

#[test]
fn interleaved_suspended_broadcasts_on_two_workers_keep_fifo_and_balance() {
    for round in 0..3 {
        let mut k = Kernel::builder().workers(2).build().unwrap();
        broadcast_scenario(&mut k);
        let report = k.run();
        check_scenario(&report, &format!("two workers, round {round}"));
    }
}

// ------------------------------------------------------------------
// Direct delivery between handlers at the edge of the sender's budget.

/// Handler `b`: answers a 0x3000 with an empty 0x3001 to its source,
/// exits 9 at a 0x4000. Inbox 1 MiB + 64 KiB at 64 KiB.
fn answering_handler() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 20)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0011000000010000))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 65540)) (i32.const 0x3000))
      (then (drop (call $send (i64.load (i32.const 65544)) (i32.const 0x3001) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (if (i32.eq (i32.load (i32.const 65540)) (i32.const 0x4000))
      (then (return (i32.const 9))))
    (i32.const 0)))"#
    )
}

/// Handler `a`: at a 0x2000 spins `spins` turns then sends 1 MiB of type
/// 0x3000 to `b` and returns 7 if it gets through; exits 42 at a 0x3001.
fn lending_handler(spins: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 18)
  (data (i32.const 3000) "b")
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x3001)) (then (return (i32.const 42))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2000))
      (then
        (block $b (loop $l
          (br_if $b (i32.ge_u (local.get $i) (i32.const {spins})))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        (drop (call $send (call $lookup (i32.const 3000) (i32.const 1)) (i32.const 0x3000) (i32.const 0) (i32.const 65536) (i32.const 1048576)))
        (return (i32.const 7))))
    (i32.const 0)))"#
    )
}

/// Kicks `a` (0x2000) after 10 ms, waits 50 ms, sends `b` a 0x4000, waits
/// 50 ms, exits 0.
fn two_kicks() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 2048) "a")
  (data (i32.const 2056) "b")
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 10) (i32.const 0) (i32.const 64) (i32.const 0)))
    (drop (call $send (call $lookup (i32.const 2048) (i32.const 1)) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $receive (i32.const 0x7777) (i64.const 50) (i32.const 0) (i32.const 64) (i32.const 0)))
    (drop (call $send (call $lookup (i32.const 2056) (i32.const 1)) (i32.const 0x4000) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $receive (i32.const 0x7777) (i64.const 50) (i32.const 0) (i32.const 64) (i32.const 0)))
    (i32.const 0)))"#
    )
}

/// Spins for `a` leaving it about 100,000 units of its budget before its
/// 1 MiB send (which then takes it past).
fn spins_leaving_100k() -> u32 {
    spins_leaving(100_000)
}

/// Spins that leave about `left` units of a call's budget.
fn spins_leaving(left: u64) -> u32 {
    let base = spin_fuel(100_000);
    let per = (spin_fuel(200_000) - base) as f64 / 100_000.0;
    ((BUDGET - left) as f64 / per) as u32
}

// docs/ABI.md, "Handler processes" 5: "A syscall whose work the budget
// cannot pay returns into the `TIMEOUT` trap ... (what it did stands: a
// message it sent stays sent ...)"; 7: "what the receiver sends back may
// already be the sender's next message when its `send` returns ... held
// for it beside the mailbox"; ARCHITECTURE.md 7: "It is put back
// (`put_back_held`) before the sender ... ends ... so it is never lost";
// invariant 5: "a same-state restart takes its predecessor's mail as it
// was". A handler whose direct send to an idle handler takes it past its
// budget traps; the receiver's answer, held for it, reaches its same-state
// restart; the receiver, kept claimed across the send, still runs later.
#[test]
fn a_direct_send_past_the_budget_traps_the_sender_and_its_answer_survives() {
    use estalogic_kernel::core::supervision::RestartAction;
    let spins = spins_leaving_100k();
    for restart in [false, true] {
        let mut k = Kernel::builder()
            .deterministic(true)
            .trace_ipc(true)
            .build()
            .unwrap();
        if restart {
            k.set_restart_policy(estalogic_tests::Script::boxed(&[
                RestartAction::RestartSameState,
            ]));
        }
        let extra = if restart {
            r#""restart":"on_failure""#
        } else {
            ""
        };
        load(
            &mut k,
            "a",
            "handle",
            &lending_handler(spins),
            ALL,
            "normal",
            extra,
        );
        load(
            &mut k,
            "b",
            "handle",
            &answering_handler(),
            ALL,
            "normal",
            "",
        );
        load(&mut k, "kick", "run", &two_kicks(), ALL, "normal", "");
        k.spawn("a").unwrap();
        k.spawn("b").unwrap();
        k.spawn("kick").unwrap();
        let report = k.run();
        eprintln!("restart {restart}:\n{}", describe(&report));
        let first_a = report
            .processes
            .iter()
            .find(|p| p.module == "a" && p.status.is_trap());
        let first_a = first_a.unwrap_or_else(|| panic!("a did not trap:\n{}", describe(&report)));
        assert!(trapped_timeout(&first_a.status), "{:?}", first_a.status);
        assert_eq!(first_a.sent, 1, "the send stands");
        let b = report.process("b").unwrap();
        let big = report
            .trace
            .iter()
            .filter(|t| t.header.message_type.0 == 0x3000)
            .count();
        assert_eq!(
            big,
            1,
            "the 1 MiB message is traced once: {}",
            describe(&report)
        );
        assert_eq!(
            b.received,
            2 + b.delivery_failures,
            "b took the 1 MiB once, the 0x4000 and its notices: {}",
            describe(&report)
        );
        assert_eq!(
            b.status,
            ExitStatus::Exited(9),
            "b still runs after a's trap"
        );
        if restart {
            let next = report
                .processes
                .iter()
                .find(|p| p.module == "a" && p.pid != first_a.pid)
                .expect("a restarted");
            assert_eq!(
                next.status,
                ExitStatus::Exited(42),
                "the answer held for a reached its restart:\n{}",
                describe(&report)
            );
        } else {
            check_balance(&report, "no restart");
            assert_eq!(
                first_a.undelivered, 1,
                "b's answer, left to the trapped a: {first_a:?}"
            );
        }
    }
}

// ------------------------------------------------------------------
// Stops while a broadcast is suspended between its copies.

/// Waits for ever for a type nobody sends (its copies stay queued).
fn waiting_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 0)))
    (i32.const 0)))"#
    )
}

/// Takes every message (up to 128 KiB), for ever.
fn draining_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 4)
  (func (export "run") (result i32)
    (loop $l
      (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 140000)))
      (br $l))
    (i32.const 0)))"#
    )
}

/// Broadcasts 128 KiB for ever.
fn endless_broadcaster() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 4)
  (func (export "run") (result i32)
    (loop $l
      (drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 131072)))
      (br $l))
    (i32.const 0)))"#
    )
}

// ARCHITECTURE.md invariant 10: "a shutdown request stops all of them with
// `SHUTDOWN` ... each running process is set aside at its next
// checkpoint"; invariant 5: "Bounded mailboxes, nothing lost silently ...
// every dropped or undeliverable message is reported to its sender ... and
// counted". A shutdown lands while two broadcasters are suspended inside
// their broadcasts (a checkpoint after every 128 KiB copy): the run ends,
// everything is stopped with SHUTDOWN, and the counts balance.
#[test]
fn a_shutdown_while_broadcasts_are_suspended_stops_them_and_the_counts_balance() {
    for (workers, delay_ms) in [(1usize, 150u64), (2, 150), (2, 400)] {
        let mut k = Kernel::builder().workers(workers).build().unwrap();
        load(
            &mut k,
            "bc",
            "run",
            &endless_broadcaster(),
            ALL,
            "normal",
            "",
        );
        load(
            &mut k,
            "w",
            "run",
            &waiting_receiver(),
            ALL,
            "normal",
            &mailbox(2, "drop_oldest"),
        );
        load(
            &mut k,
            "d",
            "run",
            &draining_receiver(),
            ALL,
            "normal",
            &mailbox(2, "notify_sender"),
        );
        for _ in 0..60 {
            k.spawn("w").unwrap();
            k.spawn("d").unwrap();
        }
        k.spawn("bc").unwrap();
        k.spawn("bc").unwrap();
        let shutdown = k.shutdown_handle();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(k.run());
        });
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        shutdown.request();
        let report = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the run ends after the shutdown request");
        let what = format!("{workers} workers, shutdown after {delay_ms} ms");
        for p in &report.processes {
            assert_eq!(
                p.status,
                ExitStatus::Stopped(ErrorCode::SHUTDOWN),
                "{what}: {} {}",
                p.module,
                p.pid
            );
        }
        let bcs: Vec<_> = report
            .processes
            .iter()
            .filter(|p| p.module == "bc")
            .collect();
        eprintln!(
            "{what}: broadcasters {:?}",
            bcs.iter()
                .map(|p| (p.sent, p.delivery_failures, p.received, p.undelivered))
                .collect::<Vec<_>>()
        );
        assert!(bcs.iter().all(|p| p.sent > 0), "{what}: the broadcasts ran");
        check_balance(&report, &what);
    }
}

// ------------------------------------------------------------------
// A kept receiver (direct delivery) when the sender's call traps.

/// Handler `h2`: counts 0x3000s; exits 5 at a broadcast copy (0x1000)
/// if it had one 0x3000 first, 6 otherwise.
fn kept_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 20)
  (global $n (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0011000000010000))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 65540)) (i32.const 0x3000))
      (then (global.set $n (i32.add (global.get $n) (i32.const 1)))))
    (if (i32.eq (i32.load (i32.const 65540)) (i32.const 0x1000))
      (then (return (select (i32.const 5) (i32.const 6) (i32.eq (global.get $n) (i32.const 1))))))
    (i32.const 0)))"#
    )
}

/// Handler `h1`: at a 0x2000 sends an empty 0x3000 to `h2` (directly:
/// `h2` idle), then `body`, then returns 7.
fn keeping_sender(body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 18)
  (data (i32.const 3000) "h2")
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2000))
      (then
        (drop (call $send (call $lookup (i32.const 3000) (i32.const 2)) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
        {body}
        (return (i32.const 7))))
    (i32.const 0)))"#
    )
}

// ARCHITECTURE.md 7: "Between two deliveries from the same sender the
// receiver stays claimed (`Kept`) ... it is handed back to the table
// (parked, or queued if something woke it) when the sender's turn ends
// ... Handed back to wait, its wait is armed again ... unless mail came
// meanwhile, which it is then queued for"; invariant 5: "nothing lost
// silently". A handler sends directly to an idle handler (kept claimed),
// then broadcasts and its call traps with TIMEOUT (the broadcast's own
// host work past the budget, or its instructions after it): the kept
// receiver still takes its broadcast copy.
#[test]
fn a_kept_receiver_takes_the_broadcast_copy_of_a_sender_whose_call_traps() {
    // About 1.2 M units left: the payload's copy out of memory (1 MiB) is
    // paid, the first receiver's copy (h2's) takes the call past.
    let spins = spins_leaving(1_200_000);
    let cases = [
        (
            "spin, then a 1 MiB broadcast past the budget",
            format!(
                r#"(block $b (loop $l
                  (br_if $b (i32.ge_u (local.get $i) (i32.const {spins})))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br $l)))
                (drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 1048576)))"#
            ),
        ),
        (
            "an empty broadcast, then a spin past the budget",
            r#"(drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 0)))
                (loop $l (br $l))"#
                .to_string(),
        ),
        (
            "an empty broadcast, then a return",
            r#"(drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 0)))"#
                .to_string(),
        ),
    ];
    for (what, body) in &cases {
        for (det, workers) in estalogic_tests::RUNS {
            let mut k = estalogic_tests::kernel(det, workers);
            // h2 first: the first receiver a broadcast offers a copy to.
            load(&mut k, "h2", "handle", &kept_receiver(), ALL, "normal", "");
            load(
                &mut k,
                "h1",
                "handle",
                &keeping_sender(body),
                ALL,
                "normal",
                "",
            );
            load(
                &mut k,
                "kick",
                "run",
                &kicker("h1", 20, 50),
                ALL,
                "normal",
                "",
            );
            k.spawn("h2").unwrap();
            k.spawn("h1").unwrap();
            k.spawn("kick").unwrap();
            let report = k.run();
            let h2 = report.process("h2").unwrap();
            assert_eq!(
                h2.status,
                ExitStatus::Exited(5),
                "{what} ({det}/{workers}): h2 took its copy after the 0x3000:\n{}",
                describe(&report)
            );
        }
    }
}

/// Task `bc`: sends an empty 0x0900 marker to `r0`, then broadcasts 1 MiB
/// (type 0x1000) once, then exits 0.
fn marked_broadcaster() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 18)
  (data (i32.const 2048) "r0")
  (func (export "run") (result i32)
    (drop (call $send (call $lookup (i32.const 2048) (i32.const 2)) (i32.const 0x0900) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $broadcast (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 1048576)))
    (i32.const 0)))"#
    )
}

/// The virtual timestamps of a task's marker and of its 1 MiB broadcast's
/// copies to six receivers, in a deterministic run; and the nanoseconds a
/// checkpoint stands for.
fn copy_timestamps() -> (u64, Vec<u64>, u64) {
    let mut k = Kernel::builder()
        .deterministic(true)
        .trace_ipc(true)
        .build()
        .unwrap();
    load(
        &mut k,
        "r0",
        "run",
        &counting_receiver(50),
        ALL,
        "normal",
        "",
    );
    load(
        &mut k,
        "rx",
        "run",
        &counting_receiver(50),
        ALL,
        "normal",
        "",
    );
    load(
        &mut k,
        "bc",
        "run",
        &marked_broadcaster(),
        ALL,
        "normal",
        "",
    );
    k.spawn("r0").unwrap();
    for _ in 0..5 {
        k.spawn("rx").unwrap();
    }
    k.spawn("bc").unwrap();
    let report = k.run();
    let marker = report
        .trace
        .iter()
        .find(|t| t.header.message_type.0 == 0x0900)
        .expect("the marker is traced")
        .header
        .timestamp;
    let copies: Vec<u64> = report
        .trace
        .iter()
        .filter(|t| t.header.message_type.0 == 0x1000)
        .map(|t| t.header.timestamp)
        .collect();
    assert_eq!(copies.len(), 6, "{}", describe(&report));
    let policy = estalogic_kernel::core::scheduler::SlicePolicy::default();
    (marker, copies, policy.checkpoint_ns())
}

// docs/ABI.md, "Fuel for host work": "A task process whose host work adds
// up to a slice (`checkpoint_fuel`, 100,000 units) since its last
// checkpoint passes one inside that syscall for every slice of it ...
// A `broadcast` passes them between its copies, so however many receivers
// it has, no more than one copy's work runs between two checkpoints";
// ARCHITECTURE.md "Deterministic mode": "a virtual clock (advanced by fuel
// at checkpoints)". Failed before the fix: in a deterministic run the
// payload's copy out of the broadcaster's memory (1 MiB) and the first
// receiver's copy (1 MiB + 256) ran with no checkpoint between them: the
// first copy carried the same virtual timestamp as a marker sent just
// before the broadcast, 2 MiB of host work (about 21 slices) later.
#[test]
fn a_task_broadcast_passes_a_checkpoint_before_its_second_copy_of_work() {
    let (marker, copies, checkpoint_ns) = copy_timestamps();
    eprintln!("marker {marker}, copies {copies:?}, checkpoint {checkpoint_ns} ns");
    assert!(
        copies[0] > marker,
        "the first copy (after 2 MiB + 256 units of host work: the payload's copy out \
         of memory and its own) has the marker's timestamp {marker}: no checkpoint \
         between the two copies' work"
    );
}

// docs/ABI.md, "Fuel for host work" (as above): "passes one inside that
// syscall for every slice of it (a 1 MiB send, ten) ... A `broadcast`
// passes them between its copies". Each 1 MiB copy is 1,048,832 units
// (ten slices and a half). Failed before the fix: only one checkpoint was
// passed between two copies (consecutive copies one checkpoint's virtual
// time apart), the other nine and a half slices of each only after the
// last copy, so the scheduler's slice (a count of checkpoints) spanned ten
// times the work it stands for while a large broadcast ran.
#[test]
fn a_task_broadcast_passes_every_slice_of_a_copy_between_its_copies() {
    let (_, copies, checkpoint_ns) = copy_timestamps();
    let gaps: Vec<u64> = copies.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between copies {gaps:?} ns, checkpoint {checkpoint_ns} ns");
    for gap in &gaps {
        assert!(
            *gap >= 10 * checkpoint_ns,
            "copies of 1,048,832 units of work each are {gaps:?} ns apart on the virtual \
             clock: {} checkpoint(s) between copies, not one per slice (10)",
            gap / checkpoint_ns
        );
    }
}

// ARCHITECTURE.md 5: "a supervisor restart: the supervisor if it is alive
// and every live process of the modules it supervises ... A process it
// stops while it runs leaves at its next checkpoint"; docs/ABI.md "Fuel
// for host work": a broadcast passes checkpoints between its copies. A
// supervisor restart decided while the supervised broadcaster is inside a
// broadcast stops it (RESTARTED) between two copies and its replacement
// broadcasts in turn; the run then ends at a shutdown.
#[test]
fn a_supervisor_restart_stops_a_broadcaster_between_copies_and_replaces_it() {
    use estalogic_kernel::core::supervision::RestartAction;
    for workers in [1usize, 2] {
        let mut k = Kernel::builder().workers(workers).build().unwrap();
        k.set_restart_policy(estalogic_tests::Script::boxed(&[
            RestartAction::RestartSupervisor,
        ]));
        let sup = r#""supervisor":"sup","restart":"on_failure""#;
        load(&mut k, "sup", "run", &waiting_receiver(), ALL, "normal", "");
        load(
            &mut k,
            "bc",
            "run",
            &endless_broadcaster(),
            ALL,
            "normal",
            sup,
        );
        let crash = format!(
            r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 100) (i32.const 0) (i32.const 64) (i32.const 0)))
    unreachable))"#
        );
        load(&mut k, "crash", "run", &crash, ALL, "high", sup);
        load(
            &mut k,
            "d",
            "run",
            &draining_receiver(),
            ALL,
            "normal",
            &mailbox(2, "notify_sender"),
        );
        for _ in 0..30 {
            k.spawn("d").unwrap();
        }
        k.spawn("sup").unwrap();
        k.spawn("bc").unwrap();
        k.spawn("crash").unwrap();
        let shutdown = k.shutdown_handle();
        let exits = k.subscribe_exits();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(k.run());
        });
        // Wait for the crash, then give the new processes time to run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match exits.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(p) if p.module == "crash" => break,
                _ => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        shutdown.request();
        let report = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the run ends after the shutdown request");
        let bcs: Vec<_> = report
            .processes
            .iter()
            .filter(|p| p.module == "bc")
            .collect();
        eprintln!("{workers} workers:\n{}", describe(&report));
        assert_eq!(
            bcs.len(),
            2,
            "{workers}: the broadcaster and its replacement"
        );
        assert!(
            bcs.iter()
                .any(|p| p.status == ExitStatus::Stopped(ErrorCode::RESTARTED) && p.sent > 0),
            "{workers}: the first broadcaster was stopped by the restart"
        );
        assert!(
            bcs.iter()
                .any(|p| p.status == ExitStatus::Stopped(ErrorCode::SHUTDOWN) && p.sent > 0),
            "{workers}: the replacement broadcast until the shutdown"
        );
        assert!(
            !report
                .processes
                .iter()
                .any(|p| p.module == "d" && p.status.is_trap()),
            "{workers}: receivers"
        );
    }
}
