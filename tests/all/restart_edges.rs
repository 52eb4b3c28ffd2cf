//! Restarts and capabilities at their edges (from the nineteenth probe
//! round, on the session's own changes: same-state restarts taking over the
//! capability table, supervisor and system restarts of live processes,
//! `admit_any_item`, the handler budget, refused-send charges).

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::scheduler::SlicePolicy;
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{ALL_CAPS, kernel, load_entry, load_wat, load_wat_with, neg};

use RestartAction::*;

use estalogic_tests::Script;

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self_pid (result i64)))
  (import "estalogic" "clock_now" (func $clock_now (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_inspect" (func $inspect (param i32 i32 i32) (result i64)))"#;

/// A task module: 2 pages of memory, `data`, and `body` in `run` (result
/// i32) with locals $r (i64) $h (i64) $i (i32).
fn task(data: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 2)
  {data}
  (func $pause (param $ms i64)
    (drop (call $receive (i32.const 0x7777) (local.get $ms) (i32.const 60000) (i32.const 60064) (i32.const 64))))
  (func (export "run") (result i32) (local $r i64) (local $h i64) (local $i i32)
    {body}))"#
    )
}

/// Waits for ever (a receive of a type nobody sends).
const IDLE: &str = "(call $pause (i64.const -1)) (i32.const 0)";

fn statuses(report: &RunReport, module: &str) -> Vec<ExitStatus> {
    report
        .processes
        .iter()
        .filter(|p| p.module == module)
        .map(|p| p.status.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// 2. Supervisor and system restarts of live processes.

/// ARCHITECTURE invariant 5: "a module that gave up this run is started by
/// no other's restart" (commit 7075146: "a module whose failure was
/// answered GiveUp is started by no other module's supervisor or system
/// restart in that run"). Since 2f752da a supervisor restart restarts
/// every live process of its children's modules: `m` gave up (its first
/// process trapped) but its second process is alive; a supervisor restart
/// decided for `a` must not start a new `m`.
#[test]
fn supervisor_restart_starts_no_process_of_a_module_that_gave_up() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[GiveUp, RestartSupervisor]));
    load_wat(&mut k, "s", &task("", IDLE), "normal");
    // m: the first process traps at 5 ms, the second stays idle (it
    // knows which it is by the module name lookup: the first one spawned
    // holds the name).
    let m = task(
        r#"(data (i32.const 0) "m")"#,
        "(if (i64.eq (call $lookup (i32.const 0) (i32.const 1)) (call $self_pid))
           (then (call $pause (i64.const 5)) unreachable))
         (call $pause (i64.const -1)) (i32.const 0)",
    );
    load_wat_with(
        &mut k,
        "m",
        &m,
        r#""restart":"on_failure","supervisor":"s""#,
    );
    let a = task("", "(call $pause (i64.const 20)) unreachable");
    load_wat_with(
        &mut k,
        "a",
        &a,
        r#""restart":"on_failure","supervisor":"s""#,
    );
    k.spawn("s").unwrap();
    k.spawn("m").unwrap();
    k.spawn("m").unwrap();
    k.spawn("a").unwrap();
    let report = k.run();
    let actions: Vec<(String, RestartAction)> = report
        .restarts
        .iter()
        .map(|r| (r.module.clone(), r.action))
        .collect();
    assert_eq!(
        actions[..2],
        [
            ("m".to_string(), GiveUp),
            ("a".to_string(), RestartSupervisor)
        ],
        "{actions:?}"
    );
    let m = statuses(&report, "m");
    assert_eq!(
        m.len(),
        2,
        "a new process of m, which gave up, was started by a's supervisor restart: {m:?}"
    );
}

/// The same for a system restart (ARCHITECTURE invariant 5, as above).
#[test]
fn system_restart_starts_no_process_of_a_module_that_gave_up() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[GiveUp, RestartSystem]));
    let m = task(
        r#"(data (i32.const 0) "m")"#,
        "(if (i64.eq (call $lookup (i32.const 0) (i32.const 1)) (call $self_pid))
           (then (call $pause (i64.const 5)) unreachable))
         (call $pause (i64.const -1)) (i32.const 0)",
    );
    load_wat_with(&mut k, "m", &m, r#""restart":"on_failure""#);
    let n = task("", "(call $pause (i64.const 20)) unreachable");
    load_wat_with(&mut k, "n", &n, r#""restart":"on_failure""#);
    k.spawn("m").unwrap();
    k.spawn("m").unwrap();
    k.spawn("n").unwrap();
    let report = k.run();
    let actions: Vec<RestartAction> = report.restarts.iter().map(|r| r.action).collect();
    assert_eq!(actions[..2], [GiveUp, RestartSystem], "{actions:?}");
    let m = statuses(&report, "m");
    assert_eq!(
        m.len(),
        2,
        "a new process of m, which gave up, was started by n's system restart: {m:?}"
    );
}

/// ARCHITECTURE invariant 5 / `RestartAction::RestartSystem`: "Restart
/// every process of the app still alive, the failed module's other
/// processes included (one new process for each ...)". At the process
/// limit the stopped processes hold their slots until their next
/// checkpoint, so the new ones wait for room; two running processes of
/// one module must still come back as two.
#[test]
fn system_restart_at_the_limit_brings_back_every_running_process() {
    // c spins 30 ms of clock then traps (its restart spins and traps too:
    // the script then gives up). m spins 300 ms of clock, then exits 0.
    let spin = |ms: u64| {
        format!(
            "(local.set $r (call $clock_now))
             (loop $l (br_if $l (i64.lt_s (i64.sub (call $clock_now) (local.get $r)) (i64.const {}))))",
            ms * 1_000_000
        )
    };
    let c = task("", &format!("{} unreachable", spin(30)));
    let m = task("", &format!("{} (i32.const 0)", spin(300)));
    let mut k = Kernel::builder()
        .deterministic(false)
        .workers(3)
        .max_processes(3)
        .build()
        .unwrap();
    k.set_restart_policy(Script::boxed(&[RestartSystem]));
    load_wat_with(&mut k, "c", &c, r#""restart":"on_failure""#);
    load_wat(&mut k, "m", &m, "normal");
    k.spawn("m").unwrap();
    k.spawn("m").unwrap();
    k.spawn("c").unwrap();
    let report = k.run();
    let actions: Vec<RestartAction> = report.restarts.iter().map(|r| r.action).collect();
    assert_eq!(actions.first(), Some(&RestartSystem), "{actions:?}");
    let m = statuses(&report, "m");
    let stopped = m
        .iter()
        .filter(|s| **s == ExitStatus::Stopped(ErrorCode::RESTARTED))
        .count();
    assert_eq!(
        m.len() - stopped,
        stopped,
        "every m the system restart stopped comes back, one new process each: {m:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. The handler budget.

/// A handler with 2 pages, inbox at 1024 of 65,536 bytes, `data`, whose
/// handle returns 0 for STARTED and 7 for anything else (no loop, no
/// syscall).
fn plain_handler(data: &str) -> String {
    let inbox = (65_536_i64 << 32) | 1024;
    format!(
        r#"(module
  (memory (export "memory") 2)
  {data}
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (i32.const 7)))"#
    )
}

fn tiny_budget_kernel() -> Kernel {
    // 100 units a checkpoint: a handler's call has 6,400.
    Kernel::builder()
        .deterministic(true)
        .slice_policy(SlicePolicy {
            checkpoint_fuel: 100,
            ..SlicePolicy::default()
        })
        .build()
        .unwrap()
}

/// df79d2b / `metered`: "Host work done for the call before it starts
/// (the message's copy into the inbox) comes off the budget first: a call
/// left with nothing traps with `TIMEOUT` at its first instruction"; ABI
/// Handler 5: "a call ends at most 4,095 units past its budget". A
/// 60,000-byte message into a handler whose call budget is 6,400 units.
#[test]
fn handler_inbox_copy_past_the_whole_budget_traps() {
    let mut k = tiny_budget_kernel();
    load_entry(&mut k, "h", "handle", &plain_handler(""), ALL_CAPS, "");
    let sender = task(
        r#"(data (i32.const 61000) "h")"#,
        "(local.set $r (call $send (call $lookup (i32.const 61000) (i32.const 1)) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 60000)))
         (call $pause (i64.const 50))
         (i32.wrap_i64 (local.get $r))",
    );
    load_wat(&mut k, "s", &sender, "normal");
    k.spawn("h").unwrap();
    k.spawn("s").unwrap();
    let report = k.run();
    let h = report.process("h").unwrap();
    match &h.status {
        ExitStatus::Trapped { code, .. } if *code == ErrorCode::TIMEOUT => {}
        other => panic!(
            "a call whose 60,000-byte inbox copy exceeds its 6,400-unit budget ended {other} (fuel {})",
            h.fuel_used
        ),
    }
}

/// ABI Handler 5: "Instantiation counts as one call (its data segments'
/// bytes, a unit each, and the start function)". With a 6,400-unit
/// budget, 60,000 bytes of data segments cannot be paid for.
#[test]
fn handler_data_segments_past_a_tiny_budget_trap() {
    let mut k = tiny_budget_kernel();
    let data = format!(r#"(data (i32.const 70000) "{}")"#, "d".repeat(60_000));
    load_entry(&mut k, "h", "handle", &plain_handler(&data), ALL_CAPS, "");
    k.spawn("h").unwrap();
    let report = k.run();
    let h = report.process("h").unwrap();
    match &h.status {
        ExitStatus::Trapped { code, .. } if *code == ErrorCode::TIMEOUT => {}
        other => panic!(
            "instantiating 60,000 bytes of data segments on a 6,400-unit budget ended {other} (fuel {})",
            h.fuel_used
        ),
    }
}

// ---------------------------------------------------------------------------
// 3. What a process without the right learns.

/// 914f5ee / cap_delegate: "The handle first, so a caller with nothing to
/// delegate learns nothing about the target (whether it is alive)". `p`
/// holds nothing but a capability delegated to it without the `delegate`
/// right: nothing it can delegate (`PERMISSION_DENIED` to a live target). Its delegation to a live pid and to a pid that
/// names nothing should be refused alike.
fn delegate_without_the_right(to_live: bool) -> (ExitStatus, Vec<ExitStatus>) {
    let mut k = kernel(true, 1);
    // g: delegates its time:read handle (manifest order gives it handle 5)
    // with READ only to p and waits.
    let g = task(
        r#"(data (i32.const 0) "p")"#,
        "(call $pause (i64.const 1))
         (local.set $h (call $lookup (i32.const 0) (i32.const 1)))
         (local.set $r (call $delegate (i32.const 5) (local.get $h) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 90))))
         (call $pause (i64.const 100))
         (i32.const 0)",
    );
    // p, with no capability of its own: yields until its table holds
    // g's copy (handle 1), then delegates it to g (spawned just before
    // it: its pid's index is one less) or to a pid that names nothing;
    // exits with what that returned.
    let target = if to_live {
        "(i64.sub (call $self_pid) (i64.const 1))"
    } else {
        "(i64.const 0x0000000700000033)"
    };
    let p = task(
        "",
        &format!(
            "(loop $wait
               (drop (call $yield))
               (br_if $wait (i64.eq (call $handles (i32.const 0) (i32.const 4)) (i64.const 0))))
             (i32.wrap_i64 (call $delegate (i32.const 1) {target} (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))"
        ),
    );
    load_wat(&mut k, "g", &g, "normal");
    load_entry(&mut k, "p", "run", &p, &[], "");
    k.spawn("g").unwrap();
    k.spawn("p").unwrap();
    let report = k.run();
    (
        report.process("p").unwrap().status.clone(),
        statuses(&report, "g"),
    )
}

#[test]
fn cap_delegate_without_the_right_tells_nothing_about_the_target() {
    let (to_live, g) = delegate_without_the_right(true);
    assert_eq!(g, [ExitStatus::Exited(0)], "setup");
    let (to_nobody, _) = delegate_without_the_right(false);
    assert_eq!(
        to_live,
        to_nobody,
        "a delegation by a process holding nothing it may delegate tells a live pid from one that names nothing (NO_SUCH_PROCESS is {})",
        neg(ErrorCode::NO_SUCH_PROCESS)
    );
}

// ---------------------------------------------------------------------------
// 1. Same-state restarts and the capability table.

/// 2f752da: "a same-state restart takes over its predecessor's capability
/// table under the same handles (... audited as Inherited; delegated
/// capabilities and delegations made included)"; the engine test: "The new
/// holder revokes what the old one gave." `a` delegates its time:read
/// (handle 5; READ and DELEGATE) to `b`, mails itself a marker and traps; its same-state
/// restart finds the marker and revokes what derives from handle 5 (one
/// capability, b's copy, still live). b checks its copy is live after a's
/// restart and revoked after the revoke.
#[test]
fn same_state_restart_revokes_what_its_predecessor_delegated() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[RestartSameState]));
    let a = task(
        r#"(data (i32.const 0) "b")"#,
        "(local.set $r (call $receive (i32.const 0x3000) (i64.const 0) (i32.const 60000) (i32.const 60064) (i32.const 64)))
         (if (i64.ge_s (local.get $r) (i64.const 0)) (then
           (call $pause (i64.const 10))
           (return (i32.wrap_i64 (call $revoke (i32.const 5) (i32.const 1))))))
         (local.set $h (call $lookup (i32.const 0) (i32.const 1)))
         (local.set $r (call $delegate (i32.const 5) (local.get $h) (i32.const 65) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.ne (local.get $r) (i64.const 6)) (then (return (i32.add (i32.const 100) (i32.wrap_i64 (local.get $r))))))
         (drop (call $send (call $self_pid) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
         (call $pause (i64.const 2))
         unreachable",
    );
    // b: at 5 ms (after a's restart, before its revoke) its handle 6 must
    // be live (a delegation from it to itself succeeds; b exits with the
    // code if not); at 30 ms revoked (it fails; 2 if not).
    let b = task(
        "",
        "(call $pause (i64.const 5))
         (local.set $r (call $delegate (i32.const 6) (call $self_pid) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.wrap_i64 (local.get $r)))))
         (call $pause (i64.const 25))
         (local.set $r (call $delegate (i32.const 6) (call $self_pid) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 2))))
         (i32.const 0)",
    );
    load_wat_with(&mut k, "a", &a, r#""restart":"on_failure""#);
    load_wat(&mut k, "b", &b, "normal");
    k.spawn("a").unwrap();
    k.spawn("b").unwrap();
    let report = k.run();
    let a = statuses(&report, "a");
    assert_eq!(a.len(), 2, "{a:?}");
    // b's copy and the copy b made of it.
    assert_eq!(
        a[1],
        ExitStatus::Exited(2),
        "the restart revoked b's copies: {a:?}"
    );
    assert_eq!(statuses(&report, "b"), [ExitStatus::Exited(0)]);
    let inherited = k
        .take_audit()
        .iter()
        .filter(|e| e.kind == estalogic_kernel::core::capabilities_engine::AuditKind::Inherited)
        .count();
    assert_eq!(inherited, 5, "one Inherited event per handle of a's table");
}
