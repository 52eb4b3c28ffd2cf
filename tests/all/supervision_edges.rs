//! Probe round 10: supervision and fault handling, held to the docs.

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Manifest, ProcessReport, RunReport};
use estalogic_tests::{TRAP_CASES, kernel, load_handler, load_wat, load_wat_with, trapper};
use std::path::Path;

use RestartAction::*;

use estalogic_tests::Script;

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self_pid (result i64)))
  (import "estalogic" "clock_now" (func $clock_now (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))"#;

/// Waits `ms` on the virtual clock (a receive for a type nobody sends).
fn sleep(ms: u64) -> String {
    format!(
        "(drop (call $receive (i32.const 0x7777) (i64.const {ms}) (i32.const 64) (i32.const 128) (i32.const 64)))"
    )
}

/// Sends a 0x2000 message, no payload, to the process named `c`.
const POKE_C: &str = "(drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))";

/// A controller that pokes `c` after each delay (ms, cumulative).
fn controller(delays: &[u64]) -> String {
    let steps: String = delays
        .iter()
        .map(|&ms| format!("{} {POKE_C}\n", sleep(ms)))
        .collect();
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "c")
  (func (export "run") {steps}))"#
    )
}

/// Waits for a 0x2000 message, then traps.
const TRAP_ON_POKE: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x2000) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    unreachable))"#;

/// Runs `c` (trapping at each poke, default ladder) under a controller
/// poking it after `delays`; returns the restart decisions and their times.
fn ladder_run(delays: &[u64]) -> (Vec<RestartAction>, Vec<u64>, RunReport) {
    let mut kernel = kernel(true, 1);
    load_wat_with(&mut kernel, "c", TRAP_ON_POKE, r#""restart":"on_failure""#);
    load_wat(&mut kernel, "ctl", &controller(delays), "normal");
    kernel.spawn("c").unwrap();
    kernel.spawn("ctl").unwrap();
    let report = kernel.run();
    let actions = report.restarts.iter().map(|r| r.action).collect();
    let at = report.restarts.iter().map(|r| r.at).collect();
    (actions, at, report)
}

const MS: u64 = 1_000_000;

/// supervision.rs, "Window": a failure at `t` is inside the window at
/// `now` while `now - t < window_ns` (60 s). Three failures 59.999 s
/// apart climb; 60 s apart they do not.
#[test]
fn window_edges_on_the_virtual_clock() {
    let (actions, at, _) = ladder_run(&[1, 30_000, 29_999]);
    assert_eq!(at.len(), 3, "{actions:?}");
    assert_eq!(at[2] - at[0], 59_999 * MS, "failure times {at:?}");
    assert_eq!(
        actions,
        [RestartSameState, RestartSameState, RestartCleanState]
    );

    let (actions, at, _) = ladder_run(&[1, 30_000, 30_000]);
    assert_eq!(at[2] - at[0], 60_000 * MS, "failure times {at:?}");
    assert_eq!(
        actions,
        [RestartSameState, RestartSameState, RestartSameState],
        "the first failure left the window at exactly 60 s"
    );
    // Spread out: never three inside one window.
    let (actions, _, _) = ladder_run(&[1, 40_000, 40_000, 40_000, 40_000]);
    assert!(
        actions.iter().all(|a| *a == RestartSameState),
        "{actions:?}"
    );
}

/// supervision.rs, "Decay": one rung down per full window without a
/// failure, counted from the last failure.
#[test]
fn decay_at_the_window_edge() {
    let (actions, _, _) = ladder_run(&[1, 1, 1, 59_999]);
    assert_eq!(
        actions,
        [
            RestartSameState,
            RestartSameState,
            RestartCleanState,
            RestartCleanState
        ]
    );
    let (actions, _, _) = ladder_run(&[1, 1, 1, 60_000]);
    assert_eq!(
        actions,
        [
            RestartSameState,
            RestartSameState,
            RestartCleanState,
            RestartSameState
        ]
    );
}

/// supervision.rs: "Each key (a module name) has its own rung and its own
/// failures": two processes of one module count together; another module
/// does not.
#[test]
fn processes_of_one_module_share_a_key() {
    let crasher = |ms: u64| trapper(&format!("{} unreachable", sleep(ms)));
    let with_receive = |wat: String| {
        wat.replace(
            "(module",
            r#"(module (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))"#,
        )
    };
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Box::new(
        estalogic_kernel::core::supervision::Ladder::default(),
    ));
    load_wat_with(
        &mut kernel,
        "m",
        &with_receive(crasher(10)),
        r#""restart":"on_failure""#,
    );
    load_wat_with(
        &mut kernel,
        "n",
        &with_receive(crasher(10)),
        r#""restart":"on_failure""#,
    );
    kernel.spawn("m").unwrap();
    kernel.spawn("m").unwrap();
    kernel.spawn("n").unwrap();
    let report = kernel.run();
    let of = |module: &str| -> Vec<RestartAction> {
        report
            .restarts
            .iter()
            .filter(|r| r.module == module)
            .map(|r| r.action)
            .take(6)
            .collect()
    };
    // m: failures two at a time; the third and fourth are on the clean
    // rung, the sixth climbs again.
    assert_eq!(
        of("m"),
        [
            RestartSameState,
            RestartSameState,
            RestartCleanState,
            RestartCleanState,
            RestartCleanState,
            ReloadModule
        ]
    );
    // n fails once per 10 ms: its own ladder.
    assert_eq!(
        of("n")[..3],
        [RestartSameState, RestartSameState, RestartCleanState]
    );
}

/// supervision.rs: `RestartSameState` — "Restart the process keeping its
/// mailbox and capabilities" (against `RestartCleanState`: "its
/// capabilities re-granted from its manifest"). A capability delegated to
/// the process before it trapped should still be held by its same-state
/// restart.
#[test]
fn same_state_restart_keeps_delegated_capabilities() {
    // h: with time:read (delegated) it returns 0; without it, it waits
    // for `go` (sent after the delegation), checks it has time:read now
    // (returns 2 if not) and traps.
    let holder = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $clock_now (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i64.ge_s (call $clock_now) (i64.const 0)) (then (return (i32.const 0))))
    (drop (call $receive (i32.const 0x2000) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (i64.lt_s (call $clock_now) (i64.const 0)) (then (return (i32.const 2))))
    unreachable))"#;
    // g: after 5 ms, delegates each of its handles (READ) to h, sends
    // `go`, and stays alive for a second.
    let giver = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "h")
  (func (export "run") (local $h i64) (local $i i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 5) (i32.const 64) (i32.const 128) (i32.const 64)))
    (local.set $h (call $lookup (i32.const 0) (i32.const 1)))
    (local.set $i (i32.const 1))
    (loop
      (drop (call $delegate (local.get $i) (local.get $h) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.le_u (local.get $i) (i32.const 8))))
    (drop (call $send (local.get $h) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
    ;; Stays alive (its exit would revoke what it delegated).
    (drop (call $receive (i32.const 0x7777) (i64.const 1000) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Script::boxed(&[RestartSameState]));
    let manifest = Manifest::parse(
        r#"{"name":"h","version":"0.1.0","entry_point":"run","runtime":"wasm32",
            "restart":"on_failure","capabilities_required":["messaging:receive"]}"#,
    )
    .unwrap();
    kernel
        .load_module(manifest, holder.as_bytes(), Path::new("h"))
        .unwrap();
    load_wat(&mut kernel, "g", giver, "normal");
    kernel.spawn("h").unwrap();
    kernel.spawn("g").unwrap();
    let report = kernel.run();
    let statuses: Vec<String> = report
        .processes
        .iter()
        .filter(|p| p.module == "h")
        .map(|p| p.status.to_string())
        .collect();
    assert_eq!(report.restarts.len(), 1, "{:?}", report.processes);
    assert_eq!(report.restarts[0].action, RestartSameState);
    let last = report.processes.iter().rfind(|p| p.module == "h").unwrap();
    assert_eq!(
        last.status,
        ExitStatus::Exited(0),
        "the same-state restart lost the delegated time:read: {statuses:?}"
    );
}

/// supervision.rs: `RestartSupervisor` — "Restart the supervising process
/// and all its children." `b`, another child of `s`, is restarted too.
#[test]
fn supervisor_restart_restarts_all_its_children() {
    let idle = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x7777) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    let crasher = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x7777) (i64.const 10) (i32.const 64) (i32.const 128) (i32.const 64)))
    unreachable))"#;
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Script::boxed(&[RestartSupervisor]));
    load_wat(&mut kernel, "s", idle, "normal");
    load_wat_with(
        &mut kernel,
        "a",
        crasher,
        r#""restart":"on_failure","supervisor":"s""#,
    );
    load_wat_with(&mut kernel, "b", idle, r#""supervisor":"s""#);
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let statuses = |module: &str| -> Vec<ExitStatus> {
        report
            .processes
            .iter()
            .filter(|p| p.module == module)
            .map(|p| p.status.clone())
            .collect()
    };
    assert_eq!(report.restarts[0].action, RestartSupervisor);
    let s = statuses("s");
    assert!(
        s.contains(&ExitStatus::Stopped(ErrorCode::RESTARTED)),
        "the supervisor was restarted: {s:?}"
    );
    let b = statuses("b");
    assert!(
        b.contains(&ExitStatus::Stopped(ErrorCode::RESTARTED)) && b.len() == 2,
        "the supervisor's other child was restarted with it: {b:?}"
    );
}

/// supervision.rs: `RestartSystem` — "Restart every process of the app
/// still alive (one new process for each ...)". A second process of the
/// failed module is alive too.
#[test]
fn system_restart_restarts_the_failed_modules_other_processes() {
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Script::boxed(&[RestartSystem]));
    load_wat_with(&mut kernel, "c", TRAP_ON_POKE, r#""restart":"on_failure""#);
    let idle = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x7777) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    load_wat(&mut kernel, "other", idle, "normal");
    load_wat(&mut kernel, "ctl", &controller(&[5]), "normal");
    let first = kernel.spawn("c").unwrap();
    let sibling = kernel.spawn("c").unwrap();
    kernel.spawn("other").unwrap();
    kernel.spawn("ctl").unwrap();
    let report = kernel.run();
    assert_eq!(report.restarts.len(), 1, "{:?}", report.restarts);
    assert_eq!(report.restarts[0].pid, first);
    let of = |pid| report.processes.iter().find(|p| p.pid == pid).unwrap();
    let other: Vec<_> = report
        .processes
        .iter()
        .filter(|p| p.module == "other")
        .map(|p| p.status.clone())
        .collect();
    assert!(
        other.contains(&ExitStatus::Stopped(ErrorCode::RESTARTED)),
        "{other:?}"
    );
    assert_eq!(
        of(sibling).status,
        ExitStatus::Stopped(ErrorCode::RESTARTED),
        "the failed module's other process is part of the app still alive"
    );
}

/// docs/ABI.md 4xxx traps and ARCHITECTURE invariant 3: each trap kind
/// has its code — in a handler process's call too.
#[test]
fn trap_codes_in_handler_processes() {
    for &(body, code) in TRAP_CASES {
        let wat = format!(
            r#"(module (memory (export "memory") 1) (table 1 funcref)
  (func $recurse (call $recurse))
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) {body} (i32.const 0)))"#
        );
        let mut kernel = kernel(true, 1);
        load_handler(&mut kernel, "h", &wat);
        kernel.spawn("h").unwrap();
        let report = kernel.run();
        match &report.process("h").unwrap().status {
            ExitStatus::Trapped { code: got, .. } => assert_eq!(*got, code, "{body}"),
            other => panic!("{body}: expected a trap, got {other}"),
        }
    }
    // A spinning handler call: TIMEOUT.
    let spin = r#"(module (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (loop (br 0)) (i32.const 0)))"#;
    let mut kernel = kernel(true, 1);
    load_handler(&mut kernel, "h", spin);
    kernel.spawn("h").unwrap();
    let report = kernel.run();
    match &report.process("h").unwrap().status {
        ExitStatus::Trapped { code, .. } => assert_eq!(*code, ErrorCode::TIMEOUT),
        other => panic!("expected TIMEOUT, got {other}"),
    }
}

/// The same, in a task process after syscalls that suspended it (a
/// yield, a timed receive, a clock read) and deep in a call chain.
#[test]
fn trap_codes_after_suspensions_and_deep_in_calls() {
    for &(body, code) in TRAP_CASES {
        let wat = format!(
            r#"(module {IMPORTS}
  (memory (export "memory") 1) (table 1 funcref)
  (func $recurse (call $recurse))
  (func $deep (param $n i32)
    (if (i32.eqz (local.get $n)) (then {body} (return)))
    (drop (call $yield))
    (call $deep (i32.sub (local.get $n) (i32.const 1))))
  (func (export "run")
    (drop (call $yield))
    {sleep}
    (drop (call $clock_now))
    (call $deep (i32.const 40))))"#,
            sleep = sleep(3)
        );
        for (det, workers) in estalogic_tests::RUNS {
            let mut kernel = kernel(det, workers);
            load_wat(&mut kernel, "t", &wat, "normal");
            kernel.spawn("t").unwrap();
            let report = kernel.run();
            match &report.process("t").unwrap().status {
                ExitStatus::Trapped { code: got, .. } => {
                    assert_eq!(*got, code, "{body} det {det}")
                }
                other => panic!("{body}: expected a trap, got {other}"),
            }
        }
    }
}

/// Supervisor `sup` checks the EXIT_NOTIFICATION: source pid 0, type
/// 0xFF01, payload pid = the crasher's (sent by it before trapping),
/// kind 1, code = the trap code. Exit code: 0, or the failed check.
fn notice_checker(code: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    ;; the crasher's pid, sent by it
    (if (i64.lt_s (call $receive (i32.const 0x3000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64)) (i64.const 0))
      (then (return (i32.const 1))))
    (if (i64.ne (call $receive (i32.const 0xFF01) (i64.const 1000) (i32.const 200) (i32.const 300) (i32.const 64)) (i64.const 16))
      (then (return (i32.const 2))))
    (if (i64.ne (i64.load (i32.const 208)) (i64.const 0)) (then (return (i32.const 3))))
    (if (i32.ne (i32.load (i32.const 204)) (i32.const 0xFF01)) (then (return (i32.const 4))))
    (if (i64.ne (i64.load (i32.const 300)) (i64.load (i32.const 64))) (then (return (i32.const 5))))
    (if (i32.ne (i32.load (i32.const 308)) (i32.const 1)) (then (return (i32.const 6))))
    (if (i32.ne (i32.load (i32.const 312)) (i32.const {code})) (then (return (i32.const 7))))
    (i32.const 0)))"#
    )
}

#[test]
fn exit_notification_content() {
    for &(body, code) in TRAP_CASES {
        let crasher = format!(
            r#"(module {IMPORTS}
  (memory (export "memory") 1) (table 1 funcref)
  (data (i32.const 0) "sup")
  (func $recurse (call $recurse))
  (func (export "run")
    (i64.store (i32.const 16) (call $self_pid))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 3)) (i32.const 0x3000) (i32.const 0) (i32.const 16) (i32.const 8)))
    {body}))"#
        );
        for (det, workers) in estalogic_tests::RUNS {
            let mut kernel = kernel(det, workers);
            load_wat(&mut kernel, "sup", &notice_checker(code.0), "normal");
            load_wat_with(&mut kernel, "c", &crasher, r#""supervisor":"sup""#);
            kernel.spawn_all().unwrap();
            let report = kernel.run();
            assert_eq!(
                report.process("sup").unwrap().status,
                ExitStatus::Exited(0),
                "{body} det {det} {workers}"
            );
        }
    }
}

/// After a supervisor restart, the next failure's notification reaches
/// the new supervisor (by name).
#[test]
fn notification_reaches_a_restarted_supervisor() {
    // sup: counts notifications for 200 ms of quiet, exits with the count.
    let counter = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $n i32)
    (block $done (loop
      (br_if $done (i64.lt_s (call $receive (i32.const 0xFF01) (i64.const 200) (i32.const 0) (i32.const 64) (i32.const 64)) (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br 0)))
    (i32.add (i32.const 100) (local.get $n))))"#
    );
    let crasher = trapper(&format!("{} unreachable", sleep(10))).replace(
        "(module",
        r#"(module (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))"#,
    );
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Script::boxed(&[RestartSupervisor, RestartSameState]));
    load_wat(&mut kernel, "sup", &counter, "normal");
    load_wat_with(
        &mut kernel,
        "c",
        &crasher,
        r#""restart":"on_failure","supervisor":"sup""#,
    );
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let sups: Vec<&ProcessReport> = report
        .processes
        .iter()
        .filter(|p| p.module == "sup")
        .collect();
    assert_eq!(sups.len(), 2, "{sups:?}");
    assert_eq!(sups[0].status, ExitStatus::Stopped(ErrorCode::RESTARTED));
    // The new one hears of the two failures after its start.
    assert_eq!(sups[1].status, ExitStatus::Exited(102), "{sups:?}");
}

/// ARCHITECTURE step 5 / BRIEF 3.1: on exit the mail left is failed back
/// to the senders, before the supervisor is notified; counters add up.
#[test]
fn mail_left_is_failed_back_and_counted_before_the_notice() {
    // c takes one message and traps; no restart. `s` (its supervisor)
    // sends it five, then records the order of what comes back:
    // delivery failures (flag 16) then the exit notification.
    let crasher = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x7777) (i64.const 20) (i32.const 64) (i32.const 128) (i32.const 64)))
    (drop (call $receive (i32.const 0x2000) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    unreachable))"#;
    let sender = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "c")
  (func (export "run") (result i32) (local $i i32) (local $failures i32) (local $r i64)
    (loop
      {POKE_C}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 5))))
    (block $done (loop
      (local.set $r (call $receive (i32.const 0) (i64.const 100) (i32.const 200) (i32.const 300) (i32.const 64)))
      (br_if $done (i64.eq (local.get $r) (i64.const -3001)))
      (if (i32.and (i32.load16_u (i32.const 202)) (i32.const 16))
        (then (local.set $failures (i32.add (local.get $failures) (i32.const 1)))))
      (if (i32.eq (i32.load (i32.const 204)) (i32.const 0xFF01))
        (then (return (i32.add (i32.const 100) (local.get $failures)))))
      (br 0)))
    (i32.const 1)))"#
    );
    for (det, workers) in estalogic_tests::RUNS {
        let mut kernel = kernel(det, workers);
        load_wat_with(&mut kernel, "c", crasher, r#""supervisor":"s""#);
        load_wat(&mut kernel, "s", &sender, "normal");
        kernel.spawn("c").unwrap();
        kernel.spawn("s").unwrap();
        let report = kernel.run();
        let c = report.process("c").unwrap();
        let s = report.process("s").unwrap();
        assert_eq!(c.received, 1, "det {det}");
        assert_eq!(c.undelivered, 4, "det {det}: {c:?}");
        assert_eq!(s.sent, 5);
        assert_eq!(s.delivery_failures, 4, "det {det}: {s:?}");
        assert_eq!(
            s.status,
            ExitStatus::Exited(104),
            "det {det}: four failures before the notice"
        );
    }
}

/// A clean-state restart (and a reload, and a supervisor restart, which
/// here has no supervisor to restart) gets a fresh mailbox: the old mail is failed
/// back (and counted) rather than kept or lost.
#[test]
fn clean_state_fails_the_old_mail_back() {
    let sender = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "c")
  (func (export "run") (local $i i32)
    (loop
      {POKE_C}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 5))))
    (drop (call $receive (i32.const 0x7777) (i64.const 100) (i32.const 200) (i32.const 300) (i32.const 64)))))"#
    );
    for action in [RestartCleanState, ReloadModule, RestartSupervisor] {
        let mut kernel = kernel(true, 1);
        kernel.set_restart_policy(Script::boxed(&[action]));
        load_wat_with(&mut kernel, "c", TRAP_ON_POKE, r#""restart":"on_failure""#);
        load_wat(&mut kernel, "s", &sender, "normal");
        kernel.spawn("c").unwrap();
        kernel.spawn("s").unwrap();
        let report = kernel.run();
        let cs: Vec<&ProcessReport> = report
            .processes
            .iter()
            .filter(|p| p.module == "c")
            .collect();
        let s = report.process("s").unwrap();
        let taken: u64 = cs.iter().map(|p| p.received).sum();
        let left: u64 = cs.iter().map(|p| p.undelivered).sum();
        assert_eq!(cs.len(), 2, "{action:?} {cs:?}");
        assert_eq!(cs[1].received, 0, "{action:?}: clean state, nothing kept");
        assert_eq!(
            s.sent,
            taken + s.delivery_failures,
            "{action:?} {cs:?} {s:?}"
        );
        assert_eq!(left, s.delivery_failures, "{action:?} {cs:?} {s:?}");
    }
}

/// ARCHITECTURE invariant 8 / BRIEF 3.6: a faulting process never changes
/// another's results. Deterministic: ping/pong's reports with and without
/// crashers beside them.
#[test]
fn a_peers_report_is_the_same_with_crashers_beside_it() {
    let results = |crashers: bool| -> Vec<(String, String, u64, u64, u64, u64, u64)> {
        let mut kernel = kernel(true, 1);
        estalogic_tests::load_bundled(&mut kernel, "pong", "run");
        estalogic_tests::load_bundled(&mut kernel, "ping", "run");
        if crashers {
            kernel.set_restart_policy(Script::boxed(&[RestartSameState; 12]));
            for (i, (body, _)) in TRAP_CASES.iter().enumerate() {
                load_wat_with(
                    &mut kernel,
                    &format!("t{i}"),
                    &trapper(body),
                    if i % 2 == 0 {
                        r#""restart":"on_failure""#
                    } else {
                        ""
                    },
                );
            }
        }
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        if crashers {
            assert!(report.restarts.len() > 10, "{}", report.restarts.len());
        }
        report
            .processes
            .iter()
            .filter(|p| p.module == "ping" || p.module == "pong")
            .map(|p| {
                (
                    p.module.clone(),
                    p.status.to_string(),
                    p.sent,
                    p.received,
                    p.fuel_used,
                    p.delivery_failures,
                    p.undelivered,
                )
            })
            .collect()
    };
    assert_eq!(results(false), results(true));
}

/// An exit notification that finds no live process of its supervisor is
/// received by no one, and the run's stats count it
/// (`LoopStats::notices_unsupervised`); one taken by a live supervisor is
/// not counted.
#[test]
fn exit_notices_with_no_live_supervisor_are_counted() {
    let waiting = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run")
        (drop (call $receive (i32.const 0) (i64.const 100) (i32.const 0) (i32.const 64) (i32.const 64)))))"#;
    let gone = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
    for (supervisor, unsupervised) in [(waiting, 0), (gone, 1)] {
        let mut k = kernel(true, 1);
        load_wat(&mut k, "s", supervisor, "normal");
        load_wat_with(
            &mut k,
            "crasher",
            &trapper("unreachable"),
            r#""supervisor":"s""#,
        );
        k.spawn("s").unwrap();
        k.spawn("crasher").unwrap();
        let report = k.run();
        let s = report.process("s").unwrap();
        assert_eq!(s.received, 1 - unsupervised, "{s:?}");
        assert_eq!(report.stats.notices_unsupervised, unsupervised);
    }
}

/// `RestartAction::RestartSupervisor`: "a supervisor whose process ended
/// stays down" (as in a system restart): a supervisor that already exited
/// is not started again, and its run's work is not done twice; the failed
/// child is still restarted.
#[test]
fn a_supervisor_restart_leaves_a_supervisor_that_ended_down() {
    let done = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
    let crasher = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0x7777) (i64.const 10) (i32.const 64) (i32.const 128) (i32.const 64)))
    unreachable))"#;
    let mut kernel = kernel(true, 1);
    kernel.set_restart_policy(Script::boxed(&[RestartSupervisor]));
    load_wat(&mut kernel, "s", done, "normal");
    load_wat_with(
        &mut kernel,
        "a",
        crasher,
        r#""restart":"on_failure","supervisor":"s""#,
    );
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(report.restarts.len(), 2, "{:?}", report.restarts);
    assert_eq!(report.restarts[0].action, RestartSupervisor);
    let count = |module: &str| {
        report
            .processes
            .iter()
            .filter(|p| p.module == module)
            .count()
    };
    assert_eq!(count("s"), 1, "the supervisor that ended was started again");
    assert_eq!(count("a"), 2);
}
