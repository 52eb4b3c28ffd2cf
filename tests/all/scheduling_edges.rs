//! The scheduler, deterministic mode and hostile guests at their edges
//! (from the ninth probe round). Each test cites the document line it holds
//! the kernel to. Model tests drive `core::scheduler::Scheduler` directly
//! on a simulated clock (the same way the kernel loop does: one checkpoint
//! = `checkpoint_ns` of virtual time); the others run real WAT guests in
//! deterministic mode.

use estalogic_kernel::abi::{ErrorCode, Pid, Priority};
use estalogic_kernel::core::scheduler::{Scheduler, Verdict, effective_level};
use estalogic_kernel::{ExitStatus, Kernel, RunReport, SlicePolicy};
use estalogic_tests::{load_wat, load_wat_with, mailbox};
use std::path::Path;

const MS: u64 = 1_000_000;

fn pid(i: u32) -> Pid {
    Pid::new(i, 1)
}

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

/// Counts to `n` (8 fuel units an iteration), then returns 0.
fn counter(n: u32) -> String {
    format!(
        r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const {n}))))
    (i32.const 0)))"#
    )
}

/// One-CPU simulation of spinners (always runnable) on the scheduler
/// model, `horizon` checkpoints long, as the kernel loop drives it.
fn simulate_spinners(levels: &[Priority], horizon: u64) -> (Scheduler, Vec<Pid>) {
    let policy = SlicePolicy::default();
    let step = policy.checkpoint_ns();
    let mut s = Scheduler::new(policy);
    let pids: Vec<Pid> = (0..levels.len()).map(|i| pid(i as u32 + 1)).collect();
    for (p, level) in pids.iter().zip(levels) {
        s.admit(*p, *level, 0);
    }
    let mut now = 0;
    let mut current: Option<Pid> = None;
    for _ in 0..horizon {
        if current.is_none() {
            current = s.next(now).map(|d| d.pid);
        }
        now += step;
        let Some(running) = current else { continue };
        if s.checkpoint(running, now) != Verdict::Continue {
            current = None;
        }
    }
    (s, pids)
}

// ------------------------------------------------------ minimum service

/// BRIEF §3.2: "Minimum service: a READY process gets a slice within ...
/// 25 ms (NORMAL and above)", while no more are ready than a window holds
/// service turns for (`SlicePolicy::served_in_window`, ARCHITECTURE
/// invariant 7); past that, one turn per other ready process at most.
#[test]
fn model_min_service_up_to_and_past_the_bound() {
    let policy = SlicePolicy::default();
    let bound = policy.served_in_window(Priority::Realtime) as usize;
    for n in [bound, bound + 50] {
        let (s, pids) = simulate_spinners(&vec![Priority::Realtime; n], 20_000);
        let worst = pids
            .iter()
            .map(|p| s.account(*p).unwrap().max_wait_ns)
            .max()
            .unwrap();
        let limit = if n <= bound {
            SlicePolicy::service_window_ns(Priority::Realtime)
        } else {
            n as u64 * policy.checkpoint_ns()
        };
        assert!(
            worst <= limit,
            "{n} REALTIME spinners: one waited {worst} ns (limit {limit})"
        );
    }
}

/// The same with real guests: 250 `critical` (REALTIME) workers that
/// became ready together each get the CPU within 25 ms of virtual time.
#[test]
fn min_service_for_250_realtime_guests() {
    let mut kernel = det();
    load_wat(&mut kernel, "rt", &counter(20_000), "critical");
    for _ in 0..250 {
        kernel.spawn("rt").unwrap();
    }
    let report = kernel.run();
    assert_eq!(report.processes.len(), 250);
    for process in &report.processes {
        assert_eq!(process.status, ExitStatus::Exited(0), "{process:?}");
        assert!(process.max_wait_ns <= 25 * MS, "{process:?}");
    }
}

// ------------------------------------------------------ slices, rules

/// Checkpoints until the first verdict that is not `Continue`.
fn run_until_off(s: &mut Scheduler, p: Pid, start: u64, limit: u64) -> (u64, Verdict) {
    let step = SlicePolicy::default().checkpoint_ns();
    for k in 1..=limit {
        let v = s.checkpoint(p, start + k * step);
        if v != Verdict::Continue {
            return (k, v);
        }
    }
    (limit, Verdict::Continue)
}

/// BRIEF §3.2 table: slice and max consecutive slices per level. Alone,
/// a process runs `max` slices then rotates: at checkpoint slice*max.
#[test]
fn model_lone_process_rotates_after_max_consecutive_slices() {
    for (level, slice_ms, max) in [
        (Priority::Idle, 100, 1),
        (Priority::Low, 50, 2),
        (Priority::Normal, 25, 4),
        (Priority::High, 15, 8),
        (Priority::Realtime, 10, 16),
    ] {
        let mut s = Scheduler::new(SlicePolicy::default());
        s.admit(pid(1), level, 0);
        let d = s.next(0).unwrap();
        assert_eq!(d.level, level);
        let expected = slice_ms * 10 * max; // 10 checkpoints a ms
        let (at, v) = run_until_off(&mut s, pid(1), 0, 100_000);
        assert_eq!((at, v), (expected, Verdict::Rotated), "{level:?}");
    }
}

/// BRIEF §3.2 aging: exact steps of `base + floor(wait_ms / 1000)`, at
/// most +2, never above REALTIME; SYSTEM stays SYSTEM.
#[test]
fn aging_formula_is_exact() {
    use Priority::*;
    for (base, wait_ms, want) in [
        (Idle, 999, Idle),
        (Idle, 1000, Low),
        (Idle, 1999, Low),
        (Idle, 2000, Normal),
        (Idle, 10_000, Normal),
        (Normal, 2000, Realtime),
        (High, 1000, Realtime),
        (High, 5000, Realtime),
        (Realtime, 9000, Realtime),
        (System, 0, System),
        (System, 9000, System),
    ] {
        assert_eq!(
            effective_level(base, wait_ms * MS),
            want,
            "{base:?} {wait_ms}"
        );
        // One nanosecond before the step.
        if wait_ms % 1000 == 0 && wait_ms > 0 && wait_ms <= 2000 {
            assert!(effective_level(base, wait_ms * MS - 1) < want || base >= High);
        }
    }
}

/// BRIEF §3.2 "A higher level preempts a lower one": a HIGH process queued
/// while a NORMAL runs takes the CPU at the next checkpoint.
#[test]
fn model_higher_level_preempts_at_next_checkpoint() {
    let mut s = Scheduler::new(SlicePolicy::default());
    s.admit(pid(1), Priority::Normal, 0);
    s.next(0).unwrap();
    let step = SlicePolicy::default().checkpoint_ns();
    for k in 1..=7 {
        assert_eq!(s.checkpoint(pid(1), k * step), Verdict::Continue);
    }
    s.admit(pid(2), Priority::High, 7 * step + 1);
    assert_eq!(s.checkpoint(pid(1), 8 * step), Verdict::Preempted);
    assert_eq!(s.next(8 * step).unwrap().pid, pid(2));
}

/// SYSTEM "runs to completion": never taken off the CPU, even by starving
/// processes after 10 s.
#[test]
fn model_system_runs_to_completion() {
    let mut s = Scheduler::new(SlicePolicy::default());
    s.admit(pid(1), Priority::System, 0);
    s.admit(pid(2), Priority::Realtime, 0);
    assert_eq!(s.next(0).unwrap().pid, pid(1));
    let (at, v) = run_until_off(&mut s, pid(1), 0, 100_000);
    assert_eq!((at, v), (100_000, Verdict::Continue));
}

/// Round robin within a level: three NORMAL spinners take turns in the
/// order they were admitted, over and over.
#[test]
fn model_round_robin_order() {
    let policy = SlicePolicy::default();
    let step = policy.checkpoint_ns();
    let mut s = Scheduler::new(policy);
    for i in 1..=3 {
        s.admit(pid(i), Priority::Normal, 0);
    }
    let mut now = 0;
    let mut order = Vec::new();
    for _ in 0..9 {
        let d = s.next(now).unwrap();
        order.push(d.pid.index());
        loop {
            now += step;
            if s.checkpoint(d.pid, now) != Verdict::Continue {
                break;
            }
        }
    }
    assert_eq!(order, vec![1, 2, 3, 1, 2, 3, 1, 2, 3]);
}

// ------------------------------------------------------ determinism

fn summary(report: &RunReport) -> String {
    format!(
        "{:#?}\n{:#?}\n{:#?}\n{:#?}\n{}",
        report.processes, report.stats, report.restarts, report.trace, report.trace_dropped
    )
}

/// Sends 200 messages to `sink` (a 4-message mailbox), yielding after
/// each, then exits with the number of failed sends.
const FLOODER: &str = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "yield_now" (func $y (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "sink")
  (func (export "run") (result i32) (local $to i64) (local $i i32) (local $fails i32)
    (local.set $to (call $lookup (i32.const 0) (i32.const 4)))
    (loop
      (if (i64.lt_s (call $send (local.get $to) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 4)) (i64.const 0))
        (then (local.set $fails (i32.add (local.get $fails) (i32.const 1)))))
      (drop (call $y))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 200))))
    (local.get $fails)))"#;

/// Takes a message, works ~50,000 fuel units, until a 5 ms wait times
/// out; exits with the count taken.
const SINK: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $n i32) (local $j i32)
    (block $done (loop
      (br_if $done (i64.lt_s (call $receive (i32.const 0) (i64.const 5) (i32.const 0) (i32.const 64) (i32.const 64)) (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $j (i32.const 0))
      (loop (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br_if 0 (i32.lt_u (local.get $j) (i32.const 6000))))
      (br 0)))
    (local.get $n)))"#;

/// Blocks sending to `bsink` (block_sender, capacity 2) 50 times.
const BLOCKER: &str = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "bsink")
  (func (export "run") (result i32) (local $to i64) (local $i i32)
    (local.set $to (call $lookup (i32.const 0) (i32.const 5)))
    (loop
      (drop (call $send (local.get $to) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 50))))
    (i32.const 0)))"#;

#[test]
fn deterministic_runs_with_floods_blocks_timers_repeat() {
    let scenario = || {
        let mut kernel = Kernel::builder()
            .deterministic(true)
            .trace_ipc(true)
            .build()
            .unwrap();
        load_wat_with(&mut kernel, "sink", SINK, &mailbox(4, "notify_sender"));
        load_wat_with(&mut kernel, "bsink", SINK, &mailbox(2, "block_sender"));
        load_wat(&mut kernel, "flooder", FLOODER, "high");
        load_wat(&mut kernel, "blocker", BLOCKER, "low");
        load_wat(&mut kernel, "spin", &counter(3_000_000), "normal");
        load_wat_with(
            &mut kernel,
            "crasher",
            &estalogic_tests::trapper("(call $recurse)"),
            r#""restart":"on_failure""#,
        );
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        summary(&report)
    };
    let first = scenario();
    for _ in 0..2 {
        let again = scenario();
        if again != first {
            let (a, b): (Vec<_>, Vec<_>) = (first.lines().collect(), again.lines().collect());
            let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            panic!("reports differ at line {at}:\n  {}\n  {}", a[at], b[at]);
        }
    }
}

// ------------------------------------------------------ stats

/// kernel_loop.rs: the virtual clock "moves by `checkpoint_ns` at every
/// checkpoint"; ProcessReport::cpu_ns is "Nanoseconds on a CPU (kernel
/// clock: virtual in deterministic mode)"; fuel_used exact for a process
/// that returned. A lone worker: checkpoints = fuel / 100,000 and
/// cpu_ns = checkpoints * 100 us.
#[test]
fn lone_worker_stats_are_exact() {
    let mut kernel = det();
    load_wat(&mut kernel, "w", &counter(1_000_000), "normal");
    kernel.spawn("w").unwrap();
    let report = kernel.run();
    let w = report.process("w").unwrap();
    assert_eq!(w.status, ExitStatus::Exited(0));
    let checkpoints = w.fuel_used / 100_000;
    // Wasmtime checks fuel at loop heads and calls: the few units after
    // the last check pass no checkpoint.
    let passed = report.stats.checkpoints;
    assert!(
        passed == checkpoints || passed + 1 == checkpoints,
        "{w:?} {:?}",
        report.stats
    );
    assert_eq!(w.cpu_ns, passed * 100_000, "{w:?}");
    assert_eq!(w.max_wait_ns, 0);
    assert_eq!(report.stats.fairness, Some(1.0));
}

/// Two equal NORMAL workers in deterministic mode: fairness (BRIEF
/// "target >= 0.8") and equal CPU.
#[test]
fn two_equal_workers_are_fair() {
    let mut kernel = det();
    load_wat(&mut kernel, "w", &counter(2_000_000), "normal");
    kernel.spawn("w").unwrap();
    kernel.spawn("w").unwrap();
    let report = kernel.run();
    let f = report.stats.fairness.unwrap();
    assert!(f >= 0.8, "fairness {f}: {:#?}", report.processes);
    let cpus: Vec<u64> = report.processes.iter().map(|p| p.cpu_ns).collect();
    assert_eq!(cpus[0], cpus[1], "{:#?}", report.processes);
}

// ------------------------------------------------------ hostile guests

/// Grows memory a page at a time until refused; exits with the page count.
fn grower(initial: u32) -> String {
    format!(
        r#"(module (memory (export "memory") {initial})
  (func (export "run") (result i32)
    (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (memory.size)))"#
    )
}

/// BRIEF §3.5 memory classes: user logic up to 16 MiB (256 pages),
/// system 64 MiB, compliance 32 MiB. Growth stops exactly at the limit.
#[test]
fn memory_grow_stops_exactly_at_the_class_limit() {
    for (class, initial, pages) in [
        ("user", 1, 256),
        ("compliance", 2, 512),
        ("system", 4, 1024),
    ] {
        let mut kernel = det();
        load_wat_with(
            &mut kernel,
            "grower",
            &grower(initial),
            &format!(r#""memory_class":"{class}""#),
        );
        kernel.spawn("grower").unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("grower").unwrap().status,
            ExitStatus::Exited(pages),
            "{class}"
        );
    }
}

/// One huge grow is refused (returns -1, no trap); the process goes on.
#[test]
fn huge_memory_grow_is_refused_not_a_trap() {
    let wat = r#"(module (memory (export "memory") 1)
      (func (export "run") (result i32)
        (if (i32.ne (memory.grow (i32.const 65535)) (i32.const -1)) (then (return (i32.const 1))))
        (if (i32.ne (memory.grow (i32.const 255)) (i32.const 1)) (then (return (i32.const 2))))
        (i32.const 0)))"#;
    let mut kernel = det();
    load_wat(&mut kernel, "g", wat, "normal");
    kernel.spawn("g").unwrap();
    let report = kernel.run();
    assert_eq!(report.process("g").unwrap().status, ExitStatus::Exited(0));
}

/// A module whose declared initial memory exceeds its class's maximum is
/// refused at load (BRIEF §3.5: "validate the binary (... memory limits by
/// class ...)").
#[test]
fn initial_memory_past_the_class_is_refused_at_load() {
    let wat = r#"(module (memory (export "memory") 257) (func (export "run")))"#;
    let mut kernel = det();
    let result = kernel.load_module(
        estalogic_tests::manifest("big", "run", &[], "normal"),
        wat.as_bytes(),
        Path::new("big"),
    );
    assert!(
        result.is_err(),
        "a 257-page memory in the user class loaded"
    );
}

/// A table larger than a process's table slot is refused at load, naming
/// the limit; the kernel and a peer carry on.
#[test]
fn huge_table_is_refused_at_load() {
    let wat =
        r#"(module (memory (export "memory") 1) (table 1000000 funcref) (func (export "run")))"#;
    let mut kernel = det();
    let error = kernel
        .load_module(
            estalogic_tests::manifest("tab", "run", &[], "normal"),
            wat.as_bytes(),
            Path::new("tab"),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("unsupported table"), "{error}");
    load_wat(&mut kernel, "peer", &counter(1000), "normal");
    kernel.spawn("peer").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("peer").unwrap().status,
        ExitStatus::Exited(0)
    );
}

/// table.grow in a loop: refused at the table slot (returns -1), no trap.
#[test]
fn table_grow_loop_is_refused_not_a_trap() {
    let wat = r#"(module (memory (export "memory") 1) (table 1 funcref)
      (func (export "run") (result i32)
        (loop (br_if 0 (i32.ne (table.grow (ref.null func) (i32.const 1000)) (i32.const -1))))
        (table.size)))"#;
    let mut kernel = det();
    load_wat(&mut kernel, "t", wat, "normal");
    kernel.spawn("t").unwrap();
    let report = kernel.run();
    match report.process("t").unwrap().status {
        // 1 + 9 × 1,000: the next growth would pass the 10,000-element slot.
        ExitStatus::Exited(n) => assert_eq!(n, 9_001),
        ref other => panic!("{other:?}"),
    }
}

/// BRIEF §3.6: STACK_OVERFLOW 4006; the process is isolated (a peer
/// finishes).
#[test]
fn stack_overflow_traps_with_4006_and_is_isolated() {
    let mut kernel = det();
    load_wat(
        &mut kernel,
        "deep",
        &estalogic_tests::trapper("(call $recurse)"),
        "critical",
    );
    load_wat(&mut kernel, "peer", &counter(100_000), "low");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    match &report.process("deep").unwrap().status {
        ExitStatus::Trapped { code, .. } => assert_eq!(*code, ErrorCode::TRAP_STACK_OVERFLOW),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        report.process("peer").unwrap().status,
        ExitStatus::Exited(0)
    );
}

/// Exits with (receive result + 3001): 0 when the wait timed out.
fn waiter(timeout: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (i32.wrap_i64 (i64.add (i64.const 3001)
      (call $receive (i32.const 0x7777) (i64.const {timeout}) (i32.const 0) (i32.const 64) (i32.const 0))))))"#
    )
}

/// docs/ABI.md receive: "-1 forever, 0 never"; a negative other than -1
/// is a bad argument (INVALID_ARGUMENT, 1001) not a wait; i64::MAX ms is
/// clamped to the clock's end and times out in deterministic mode.
#[test]
fn timeouts_zero_negative_and_huge() {
    let cases: [(&str, i32); 4] = [
        ("0", 0),
        ("1", 0),
        ("-2", 3001 - 1001),
        ("9223372036854775807", 0),
    ];
    for (timeout, want) in cases {
        let mut kernel = det();
        load_wat(&mut kernel, "w", &waiter(timeout), "normal");
        kernel.spawn("w").unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("w").unwrap().status,
            ExitStatus::Exited(want),
            "timeout {timeout}"
        );
    }
}

/// A tight loop of a cheap syscall passes checkpoints like any loop
/// (ARCHITECTURE invariant 7: "A guest reaches a checkpoint at least every
/// 1,000,000 fuel units"): 2 million `self_pid` calls at HIGH.
#[test]
fn syscall_loop_passes_checkpoints() {
    let wat = r#"(module (import "estalogic" "self_pid" (func $s (result i64)))
      (memory (export "memory") 1) (func (export "run") (local $i i32)
        (loop (drop (call $s))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 2000000))))))"#;
    let mut kernel = det();
    load_wat(&mut kernel, "spin", wat, "high");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let spin = report.process("spin").unwrap();
    assert_eq!(spin.status, ExitStatus::Exited(0));
    assert!(
        report.stats.checkpoints >= spin.fuel_used / 1_000_000,
        "{spin:?} {:?}",
        report.stats
    );
    assert!(
        report.stats.checkpoints + 1 >= spin.fuel_used / 100_000,
        "{spin:?} {:?}",
        report.stats
    );
}

/// `loop {}` at each level with a LOW peer: the peer finishes every time.
#[test]
fn infinite_loop_at_every_level_lets_a_low_peer_finish() {
    let spinner = r#"(module (memory (export "memory") 1) (func (export "run") (loop (br 0))))"#;
    for level in ["lazy", "low", "normal", "high", "critical"] {
        let mut kernel = det();
        load_wat(&mut kernel, "spin", spinner, level);
        load_wat(&mut kernel, "w", &counter(200_000), "low");
        kernel.spawn_all().unwrap();
        let (first, _) = estalogic_tests::first_exit_then_stop(kernel);
        assert_eq!(first.module, "w", "{level}");
        assert_eq!(first.status, ExitStatus::Exited(0));
        assert!(first.max_wait_ns <= 50 * MS, "{level}: {first:?}");
    }
}

/// Deterministic mode: "jumped to the next timer when idle". A lone
/// process waiting 7 ms reads the clock at exactly 7 ms (exit code = ms).
#[test]
fn idle_clock_jumps_exactly_to_the_timer() {
    let wat = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "clock_now" (func $now (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (drop (call $receive (i32.const 0x7777) (i64.const 7) (i32.const 0) (i32.const 64) (i32.const 0)))
        (i32.wrap_i64 (i64.div_u (call $now) (i64.const 1000)))))"#;
    let mut kernel = det();
    load_wat(&mut kernel, "w", wat, "normal");
    kernel.spawn("w").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("w").unwrap().status,
        ExitStatus::Exited(7_000)
    );
}

/// BRIEF §3.2 "A higher level preempts a lower one" at the next
/// checkpoint: a HIGH process sleeping 1 ms at a time, 50 times, beside a
/// NORMAL spinner, never waits more than one checkpoint (100 us virtual).
#[test]
fn a_woken_higher_level_waits_at_most_one_checkpoint() {
    let sleeper = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32) (local $i i32)
        (loop
          (drop (call $receive (i32.const 0x7777) (i64.const 1) (i32.const 0) (i32.const 64) (i32.const 0)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 50))))
        (i32.const 0)))"#;
    let spinner = r#"(module (memory (export "memory") 1) (func (export "run") (loop (br 0))))"#;
    let mut kernel = det();
    load_wat(&mut kernel, "spin", spinner, "normal");
    load_wat(&mut kernel, "sleeper", sleeper, "high");
    kernel.spawn_all().unwrap();
    let (first, _) = estalogic_tests::first_exit_then_stop(kernel);
    assert_eq!(first.module, "sleeper");
    assert_eq!(first.status, ExitStatus::Exited(0));
    assert!(first.max_wait_ns <= 100_000, "{first:?}");
}
