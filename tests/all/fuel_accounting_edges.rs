//! Fuel for host work and checkpoints, from a probe of the thirty-fourth
//! round on the session's own changes: refused clock reads, the fuel
//! interval after them, a receive that searches and copies, and the same
//! app twice in deterministic mode.
//!
//! docs/ABI.md, "Fuel for host work": "Every syscall pays its host work
//! however it returns, refused ones included. A task process whose host
//! work adds up to a slice (`checkpoint_fuel`, 100,000 units) since its
//! last checkpoint passes one inside that syscall for every slice of it".
//! ARCHITECTURE.md invariant 7: "A guest reaches a checkpoint at least
//! every 1,000,000 fuel units".

use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::load_leveled as load;
use std::sync::mpsc;
use std::time::Duration;

const IMPORTS: &str = r#"
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
"#;

fn det() -> Kernel {
    estalogic_tests::kernel(true, 1)
}

/// Runs `kernel` on its own thread; the report if it ends within `limit`,
/// else `None` (after asking it to stop), so a hang is a failure.
fn run_bounded(mut kernel: Kernel, limit: Duration) -> Option<RunReport> {
    let shutdown = kernel.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(kernel.run());
    });
    match rx.recv_timeout(limit) {
        Ok(report) => Some(report),
        Err(_) => {
            shutdown.request();
            None
        }
    }
}

/// A task: `setup`, then `body` looped `k` times, then `tail`; exits 0.
fn task(setup: &str, body: &str, k: i64, tail: &str, pages: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") {pages})
  (func (export "run") (result i32) (local $i i64) (local $r i64) (local $me i64) (local $j i64)
    (local.set $me (call $self))
    {setup}
    (block $out
      (br_if $out (i64.eq (local.get $i) (i64.const {k})))
      (loop $l
      {body}
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $out (i64.eq (local.get $i) (i64.const {k})))
      (br $l)))
    {tail}
    (i32.const 0)))"#
    )
}

/// Setup: fills the caller's table with copies of handle 1 until a
/// delegation is refused (4,096 handles).
const FILL: &str = r#"
    (block $full (loop $fill
      (br_if $full (i64.lt_s (call $delegate (i32.const 1) (local.get $me) (i32.const 1)
        (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0)))
      (br $fill)))"#;

/// Runs one deterministic single-process app; (fuel, run checkpoints).
fn fuel_and_checkpoints(wat: &str, caps: &[&str], extra: &str) -> (u64, u64) {
    let mut k = det();
    load(&mut k, "loop", "run", wat, caps, "normal", extra);
    k.spawn_all().unwrap();
    let report = run_bounded(k, Duration::from_secs(20)).expect("the run ends within 20 s");
    let p = report.process("loop").unwrap();
    assert_eq!(p.status, ExitStatus::Exited(0), "{p:?}");
    (p.fuel_used, report.stats.checkpoints)
}

/// `clock_now` refused after a search of a full table (4,096 handles,
/// 65,536 units of host work and the denial's 1,024 each call): a loop of
/// them must pass a checkpoint at least every 1,000,000 units
/// (invariant 7), and ABI.md says the slices past the one `clock_now`
/// makes due are passed "at the syscalls after".
///
/// Failed before the fix (133,141,999 units in 21 checkpoints):
/// `clock_now` was synchronous, so a checkpoint it made due was a
/// shortened fuel interval, and every further slice a read made due
/// before the guest's 1,000 units ran out was dropped. It is now
/// waitable for tasks and passes a checkpoint for every slice.
#[test]
fn a_loop_of_denied_clock_reads_on_a_full_table_passes_a_checkpoint_per_million_units() {
    // Handle 1 (READ) is copied to fill the table; no `time:read`.
    let caps = &["\"process:lookup\""];
    let (fuel0, cp0) = fuel_and_checkpoints(&task(FILL, "", 0, "", 1), caps, "");
    let body = "(local.set $r (call $now))";
    let (fuel1, cp1) = fuel_and_checkpoints(&task(FILL, body, 2_000, "", 1), caps, "");
    let fuel = fuel1 - fuel0;
    let checkpoints = cp1 - cp0;
    eprintln!("denied clock reads: {fuel} fuel units in {checkpoints} checkpoints");
    assert!(fuel >= 2_000 * 65_536, "the searches are charged: {fuel}");
    assert!(
        checkpoints >= fuel / 1_000_000,
        "{fuel} units of fuel passed {checkpoints} checkpoints: invariant 7 needs {} ({} units between checkpoints)",
        fuel / 1_000_000,
        fuel / checkpoints.max(1)
    );
    assert!(
        checkpoints >= fuel / 200_000,
        "one checkpoint a slice of host work (half that for slack): {fuel} units, {checkpoints} checkpoints"
    );
}

/// A task whose refused `clock_now` calls made a checkpoint due, then
/// computes for 20,000,000 units making no further syscall: its checkpoints
/// should come once a slice (100,000 units) again after the one it owed.
///
/// Failed before the fix (17,859 checkpoints against 179): the
/// shortened interval was restored only by a later charge, so a task that
/// made no further waitable syscall passed a checkpoint every 1,000 units
/// for the rest of its life (a hundredth of a slice, and in deterministic
/// mode a virtual clock running 100 times as fast). No interval is
/// shortened any more.
#[test]
fn a_short_fuel_interval_does_not_outlive_the_checkpoint_it_was_for() {
    let caps = &["\"log:write\""];
    // About 2,000,000 units: a loop of 200,000 iterations of ~10 units.
    let compute = r#"
    (local.set $j (i64.const 0))
    (block $done (loop $c
      (local.set $j (i64.add (local.get $j) (i64.const 1)))
      (br_if $done (i64.ge_u (local.get $j) (i64.const 2000000)))
      (br $c)))"#;
    let denied = r#"(local.set $r (call $now))"#;
    let (fuel0, cp0) = fuel_and_checkpoints(&task("", denied, 0, compute, 1), caps, "");
    let (fuel1, cp1) = fuel_and_checkpoints(&task("", denied, 300, compute, 1), caps, "");
    eprintln!(
        "control: {fuel0} fuel, {cp0} checkpoints; after denied clock reads: {fuel1} fuel, {cp1} checkpoints"
    );
    assert!(
        fuel0 >= 10_000_000,
        "the compute loop is long enough: {fuel0}"
    );
    // 300 refused reads are about 312,000 units of host work: 3 slices,
    // a few checkpoints more at most.
    assert!(
        cp1 <= cp0 + 10,
        "a compute loop of {fuel0} units after refused clock reads passed {cp1} checkpoints, {cp0} without them: the 1,000-unit interval was never restored"
    );
}

/// A selective receive whose search looks at 12,600 queued messages
/// (past the 16 free: about 100,700 units) and then takes a 200,000-byte
/// payload does two slices of host work; ABI.md: one checkpoint "for
/// every slice of it".
///
/// Failed before the fix (160 checkpoints for 200 slices): `hand_over`
/// merged the answers of two charges, each of which had taken a slice
/// off, into one checkpoint. It now charges the search and the copy
/// once.
#[test]
fn a_receive_that_scans_and_copies_passes_a_checkpoint_for_each_slice() {
    let extra = estalogic_tests::mailbox(20_000, "notify_sender");
    let caps = &["\"messaging:send\"", "\"messaging:receive\""];
    // 12,600 empty messages of type 1 to itself; then each round sends
    // itself 200,000 bytes of type 2 and takes them selectively.
    let setup = r#"
    (block $sent (loop $s
      (drop (call $send (local.get $me) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
      (local.set $j (i64.add (local.get $j) (i64.const 1)))
      (br_if $sent (i64.eq (local.get $j) (i64.const 12600)))
      (br $s)))"#;
    let body = r#"
      (local.set $r (call $send (local.get $me) (i32.const 2) (i32.const 0) (i32.const 65536) (i32.const 200000)))
      (if (i64.lt_s (local.get $r) (i64.const 0)) (then unreachable))
      (local.set $r (call $receive (i32.const 2) (i64.const 0) (i32.const 0) (i32.const 300000) (i32.const 200000)))
      (if (i64.ne (local.get $r) (i64.const 200000)) (then unreachable))"#;
    let (fuel0, cp0) = fuel_and_checkpoints(&task(setup, body, 0, "", 8), caps, &extra);
    let (fuel1, cp1) = fuel_and_checkpoints(&task(setup, body, 40, "", 8), caps, &extra);
    let fuel = fuel1 - fuel0;
    let checkpoints = cp1 - cp0;
    eprintln!("scanning receives: {fuel} fuel units in {checkpoints} checkpoints");
    assert!(fuel >= 40 * 500_000, "{fuel}");
    assert!(
        checkpoints + 3 >= fuel / 100_000,
        "{fuel} units of (mostly host) work passed {checkpoints} checkpoints: one a slice is {}",
        fuel / 100_000
    );
}

/// Deterministic mode: the same app twice on fresh kernels gives the same
/// reports (fuel, checkpoints, counts, syscalls), with today's paths in
/// play: carried host work, a shortened interval, selective receives.
#[test]
fn the_same_app_twice_in_deterministic_mode_reports_the_same() {
    fn app() -> Kernel {
        let mut k = det();
        let extra = estalogic_tests::mailbox(20_000, "notify_sender");
        let setup = r#"
    (block $sent (loop $s
      (drop (call $send (local.get $me) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
      (local.set $j (i64.add (local.get $j) (i64.const 1)))
      (br_if $sent (i64.eq (local.get $j) (i64.const 3000)))
      (br $s)))"#;
        let body = r#"
      (drop (call $send (local.get $me) (i32.const 2) (i32.const 0) (i32.const 65536) (i32.const 150000)))
      (drop (call $receive (i32.const 2) (i64.const 0) (i32.const 0) (i32.const 300000) (i32.const 200000)))
      (drop (call $now))"#;
        let caps = &[
            "\"messaging:send\"",
            "\"messaging:receive\"",
            "\"process:lookup\"",
        ];
        load(
            &mut k,
            "scanner",
            "run",
            &task(setup, body, 20, "", 8),
            caps,
            "normal",
            &extra,
        );
        let compute = r#"
    (local.set $j (i64.const 0))
    (block $done (loop $c
      (local.set $j (i64.add (local.get $j) (i64.const 1)))
      (br_if $done (i64.ge_u (local.get $j) (i64.const 300000)))
      (br $c)))"#;
        load(
            &mut k,
            "clocker",
            "run",
            &task("", "(drop (call $now))", 300, compute, 1),
            &["\"log:write\""],
            "normal",
            "",
        );
        k.spawn_all().unwrap();
        k
    }
    let a = run_bounded(app(), Duration::from_secs(20)).expect("ends");
    let b = run_bounded(app(), Duration::from_secs(20)).expect("ends");
    let view = |r: &RunReport| {
        let mut v: Vec<_> = r
            .processes
            .iter()
            .map(|p| {
                (
                    p.module.clone(),
                    format!("{:?}", p.status),
                    p.fuel_used,
                    p.sent,
                    p.received,
                    p.preemptions,
                    p.requeues,
                    p.cpu_ns,
                )
            })
            .collect();
        v.sort();
        (
            v,
            r.stats.checkpoints,
            r.stats.events.syscalls,
            r.stats.handoffs,
        )
    };
    assert_eq!(view(&a), view(&b));
}
