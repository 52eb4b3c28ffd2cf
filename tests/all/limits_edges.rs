//! Same-state restarts at the capability limits, chains of supervisors,
//! and what refused or failing syscalls pay for the bytes they copy (from
//! the twentieth probe round).

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::capabilities_engine::{AuditKind, Handle};
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, RunReport};
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
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))"#;

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

fn statuses(report: &RunReport, module: &str) -> Vec<ExitStatus> {
    report
        .processes
        .iter()
        .filter(|p| p.module == module)
        .map(|p| p.status.clone())
        .collect()
}

/// The first incarnation mails itself a marker (type 0x3000) and traps;
/// the same-state restart finds it in its inherited mail. `first` runs
/// before the trap, `second` in the restart (and returns the exit code).
fn two_lives(data: &str, first: &str, second: &str) -> String {
    task(
        data,
        &format!(
            "(local.set $r (call $receive (i32.const 0x3000) (i64.const 0) (i32.const 60000) (i32.const 60064) (i32.const 64)))
             (if (i64.ge_s (local.get $r) (i64.const 0)) (then {second}))
             {first}
             (drop (call $send (call $self_pid) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
             unreachable"
        ),
    )
}

// ---------------------------------------------------------------------------
// 1. Same-state restarts at the capability limits.

/// 2f752da: a same-state restart "takes over its predecessor's capability
/// table under the same handles"; ABI: "a full table (4,096 handles) ...
/// before refusing a new one". `g` fills `p`'s table (5 manifest handles
/// and 4,091 copies of g's time:read); p traps and is restarted with its
/// state: the new p holds exactly 4,096 handles, and g's next delegation
/// to it is refused with LIMIT_REACHED.
#[test]
fn same_state_restart_of_a_full_table_keeps_it_full_and_the_limit_holds() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[RestartSameState]));
    let g = task(
        r#"(data (i32.const 0) "p")"#,
        "(local.set $h (call $lookup (i32.const 0) (i32.const 1)))
         (loop $l
           (local.set $r (call $delegate (i32.const 5) (local.get $h) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
           (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.add (i32.const 10000) (i32.wrap_i64 (local.get $r))))))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 4091))))
         ;; Full: one more is refused before the restart too.
         (local.set $r (call $delegate (i32.const 5) (local.get $h) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.ne (local.get $r) (i64.const -3005)) (then (return (i32.add (i32.const 20000) (i32.wrap_i64 (local.get $r))))))
         (drop (call $send (local.get $h) (i32.const 0x3001) (i32.const 0) (i32.const 0) (i32.const 0)))
         (call $pause (i64.const 20))
         (local.set $h (call $lookup (i32.const 0) (i32.const 1)))
         (local.set $r (call $delegate (i32.const 5) (local.get $h) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.ne (local.get $r) (i64.const -3005)) (then (return (i32.add (i32.const 30000) (i32.wrap_i64 (local.get $r))))))
         (i32.const 0)",
    );
    let p = two_lives(
        "",
        "(drop (call $receive (i32.const 0x3001) (i64.const -1) (i32.const 60000) (i32.const 60064) (i32.const 64)))",
        "(call $pause (i64.const 50))
         (return (i32.wrap_i64 (call $handles (i32.const 0) (i32.const 0))))",
    );
    load_wat_with(&mut k, "p", &p, r#""restart":"on_failure""#);
    load_wat(&mut k, "g", &g, "normal");
    k.spawn("p").unwrap();
    k.spawn("g").unwrap();
    let report = k.run();
    let p = statuses(&report, "p");
    assert!(
        p.len() == 2
            && matches!(&p[0], ExitStatus::Trapped { code, .. } if *code == ErrorCode::TRAP_UNREACHABLE),
        "setup: {p:?}"
    );
    assert_eq!(
        p[1],
        ExitStatus::Exited(4096),
        "the restart holds exactly the 4,096 handles of its predecessor"
    );
    assert_eq!(
        statuses(&report, "g"),
        [ExitStatus::Exited(0)],
        "g's delegation to the restarted, full table is LIMIT_REACHED"
    );
}

/// ABI: "a process may have at most 4,096 live (not revoked) delegations
/// out at a time (LIMIT_REACHED ...)"; 2f752da: "delegations made
/// included". `p` delegates 4,096 copies (2,048 to each of q1, q2), traps,
/// and its same-state restart must still be at the limit: a 4,097th is
/// refused; once it revokes what derives from handle 5 (mode 1), a new one
/// goes through.
#[test]
fn same_state_restart_at_the_delegation_limit_is_still_at_it() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[RestartSameState]));
    let delegate_to = |target: &str| {
        format!(
            "(call $delegate (i32.const 5) {target} (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))"
        )
    };
    let first = format!(
        "(call $pause (i64.const 1))
         (local.set $h (call $lookup (i32.const 0) (i32.const 2)))
         (local.set $i (i32.const 0))
         (loop $l
           (local.set $r {})
           (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.add (i32.const 10000) (i32.wrap_i64 (local.get $r))))))
           (local.set $r {})
           (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.add (i32.const 20000) (i32.wrap_i64 (local.get $r))))))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 2048))))
         (local.set $r {})
         (if (i64.ne (local.get $r) (i64.const -3005)) (then (return (i32.add (i32.const 30000) (i32.wrap_i64 (local.get $r))))))",
        delegate_to("(local.get $h)"),
        delegate_to("(call $lookup (i32.const 2) (i32.const 2))"),
        delegate_to("(local.get $h)"),
    );
    let second = format!(
        "(local.set $r {})
         (if (i64.ne (local.get $r) (i64.const -3005)) (then (return (i32.add (i32.const 40000) (i32.wrap_i64 (local.get $r))))))
         (local.set $r (call $revoke (i32.const 5) (i32.const 1)))
         (if (i64.ne (local.get $r) (i64.const 4096)) (then (return (i32.add (i32.const 50000) (i32.wrap_i64 (local.get $r))))))
         (local.set $r {})
         (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.add (i32.const 60000) (i32.wrap_i64 (local.get $r))))))
         (return (i32.const 0))",
        delegate_to("(call $lookup (i32.const 0) (i32.const 2))"),
        delegate_to("(call $lookup (i32.const 0) (i32.const 2))"),
    );
    let p = two_lives(r#"(data (i32.const 0) "q1q2")"#, &first, &second);
    load_wat_with(&mut k, "p", &p, r#""restart":"on_failure""#);
    let idle = task("", "(call $pause (i64.const 100)) (i32.const 0)");
    for q in ["q1", "q2"] {
        load_entry(&mut k, q, "run", &idle, &["messaging:receive"], "");
    }
    k.spawn("p").unwrap();
    k.spawn("q1").unwrap();
    k.spawn("q2").unwrap();
    let report = k.run();
    let p = statuses(&report, "p");
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[1], ExitStatus::Exited(0), "{p:?}");
}

/// `Kernel::export_capability`: a token "carries the capability's full
/// authority"; a same-state restart takes the capability over (nothing
/// revoked), so the token names the new holder's capability, and is
/// revoked when the new process exits (as at any exit): after the run it
/// does not redeem, and the revocation names the new process.
#[test]
fn an_exported_token_follows_a_same_state_restart_and_dies_with_it() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[RestartSameState]));
    let p = two_lives(
        "",
        "(call $pause (i64.const 2))",
        "(call $pause (i64.const 2)) (return (i32.const 0))",
    );
    load_wat_with(&mut k, "p", &p, r#""restart":"on_failure""#);
    let old = k.spawn("p").unwrap();
    let token = k.export_capability(old, Handle(5)).unwrap();
    assert!(k.redeem_capability(&token).is_ok());
    let _ = k.take_audit();
    let report = k.run();
    let pids: Vec<_> = report
        .processes
        .iter()
        .filter(|p| p.module == "p")
        .map(|p| p.pid)
        .collect();
    assert_eq!(pids.len(), 2, "{:?}", statuses(&report, "p"));
    assert!(
        k.redeem_capability(&token).is_err(),
        "the token outlived the process that held its capability"
    );
    let audit = k.take_audit();
    let revoked_of_old = audit
        .iter()
        .filter(|e| e.kind == AuditKind::Revoked && e.holder == old)
        .count();
    assert_eq!(
        revoked_of_old, 0,
        "nothing of the old table is revoked: {audit:?}"
    );
    let revoked_of_new = audit
        .iter()
        .filter(|e| e.kind == AuditKind::Revoked && e.holder == pids[1])
        .count();
    assert_eq!(revoked_of_new, 5, "the new one's five handles at its exit");
}

// ---------------------------------------------------------------------------
// 3. Copies charged when the call fails after the copy.

/// A task that runs `body` `iterations` times, then exits 0.
fn looper(data: &str, body: &str, iterations: u32) -> String {
    task(
        data,
        &format!(
            "(loop $l
               {body}
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const {iterations}))))
             (i32.const 0)"
        ),
    )
}

/// docs/ABI.md "Fuel for host work": "A syscall that copies bytes into or
/// out of the caller's memory ... charges the caller one fuel unit a
/// byte". `lookup` copies its name (up to 256 bytes, `read_guest`) out of
/// guest memory; a loop of 256-byte lookups (NOT_FOUND) must cost at
/// least 255 units more per call than a loop of 1-byte ones.
#[test]
fn a_task_lookup_pays_for_the_name_it_copied() {
    let iterations = 20_000;
    let run = |len: u32| {
        let mut k = kernel(true, 1);
        let body = format!(
            "(local.set $r (call $lookup (i32.const 1000) (i32.const {len})))
             (if (i64.ne (local.get $r) (i64.const {})) (then (return (i32.const 1))))",
            neg(ErrorCode::NOT_FOUND)
        );
        let data = format!(r#"(data (i32.const 1000) "{}")"#, "z".repeat(256));
        load_wat(&mut k, "l", &looper(&data, &body, iterations), "normal");
        k.spawn("l").unwrap();
        let report = k.run();
        let l = report.process("l").unwrap().clone();
        assert_eq!(l.status, ExitStatus::Exited(0));
        l.fuel_used
    };
    let (short, long) = (run(1), run(256));
    let copied = 255 * u64::from(iterations);
    assert!(
        long >= short + copied,
        "{} KiB more copied out of guest memory by 256-byte lookups, {} fuel units more charged (1 byte: {short}, 256 bytes: {long})",
        copied >> 10,
        long.saturating_sub(short)
    );
}

/// The same for a handler (its call's budget pays, ABI Handler 5: "The
/// bytes the kernel copies for a call ... are paid from the same budget").
#[test]
fn a_handler_lookup_pays_for_the_name_it_copied() {
    let iterations: u32 = 10_000;
    let run = |len: u32| {
        let mut k = kernel(true, 1);
        let inbox = (4096_i64 << 32) | 8192;
        let h = format!(
            r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "{}")
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32) (local $i i32)
    (loop $l
      (drop (call $lookup (i32.const 1000) (i32.const {len})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {iterations}))))
    (i32.const 9)))"#,
            "z".repeat(256)
        );
        load_entry(&mut k, "h", "handle", &h, ALL_CAPS, "");
        k.spawn("h").unwrap();
        let report = k.run();
        let h = report.process("h").unwrap().clone();
        assert_eq!(h.status, ExitStatus::Exited(9));
        h.fuel_used
    };
    let (short, long) = (run(1), run(256));
    let copied = 255 * u64::from(iterations);
    assert!(
        long >= short + copied,
        "{} KiB more copied by a handler's 256-byte lookups, {} fuel units more charged (1 byte: {short}, 256 bytes: {long})",
        copied >> 10,
        long.saturating_sub(short)
    );
}

// ---------------------------------------------------------------------------
// 2. Chains of supervisors.

/// a supervises b, b supervises c, at the process limit (3). c traps at
/// 5 ms each time: `RestartSupervisor` (b's module and its children, one
/// new process each), then `GiveUp`. Every process is reported once: c
/// twice (two traps), b stopped and its successor, a once; two decisions.
#[test]
fn a_supervisor_restart_in_a_chain_at_the_limit_starts_each_once() {
    let mut k = estalogic_kernel::Kernel::builder()
        .deterministic(true)
        .max_processes(3)
        .build()
        .unwrap();
    k.set_restart_policy(Script::boxed(&[RestartSupervisor]));
    let idle = task("", "(call $pause (i64.const 60)) (i32.const 0)");
    let c = task("", "(call $pause (i64.const 5)) unreachable");
    load_wat(&mut k, "a", &idle, "normal");
    load_wat_with(
        &mut k,
        "b",
        &idle,
        r#""restart":"on_failure","supervisor":"a""#,
    );
    load_wat_with(
        &mut k,
        "c",
        &c,
        r#""restart":"on_failure","supervisor":"b""#,
    );
    k.spawn("a").unwrap();
    k.spawn("b").unwrap();
    k.spawn("c").unwrap();
    let report = k.run();
    let actions: Vec<RestartAction> = report.restarts.iter().map(|r| r.action).collect();
    assert_eq!(actions, [RestartSupervisor, GiveUp]);
    assert_eq!(statuses(&report, "a"), [ExitStatus::Exited(0)]);
    assert_eq!(
        statuses(&report, "b"),
        [
            ExitStatus::Stopped(ErrorCode::RESTARTED),
            ExitStatus::Exited(0)
        ]
    );
    assert_eq!(statuses(&report, "c").len(), 2);
    assert_eq!(report.processes.len(), 5);
}

/// b (middle of the chain) gives up; then c's `RestartSystem` restarts
/// every live process but b's module (which gave up and has no process):
/// a once, c once.
#[test]
fn a_system_restart_below_a_supervisor_that_gave_up() {
    let mut k = estalogic_kernel::Kernel::builder()
        .deterministic(true)
        .max_processes(3)
        .build()
        .unwrap();
    k.set_restart_policy(Script::boxed(&[GiveUp, RestartSystem]));
    let idle = task("", "(call $pause (i64.const 60)) (i32.const 0)");
    let b = task("", "(call $pause (i64.const 2)) unreachable");
    let c = task("", "(call $pause (i64.const 5)) unreachable");
    load_wat(&mut k, "a", &idle, "normal");
    load_wat_with(
        &mut k,
        "b",
        &b,
        r#""restart":"on_failure","supervisor":"a""#,
    );
    load_wat_with(
        &mut k,
        "c",
        &c,
        r#""restart":"on_failure","supervisor":"b""#,
    );
    k.spawn("a").unwrap();
    k.spawn("b").unwrap();
    k.spawn("c").unwrap();
    let report = k.run();
    let actions: Vec<(String, RestartAction)> = report
        .restarts
        .iter()
        .map(|r| (r.module.clone(), r.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("b".to_string(), GiveUp),
            ("c".to_string(), RestartSystem),
            ("c".to_string(), GiveUp)
        ]
    );
    assert_eq!(
        statuses(&report, "a"),
        [
            ExitStatus::Stopped(ErrorCode::RESTARTED),
            ExitStatus::Exited(0)
        ]
    );
    assert_eq!(statuses(&report, "b").len(), 1);
    assert_eq!(statuses(&report, "c").len(), 2);
}

/// A same-state restart of a handler: its table is taken over (the five
/// manifest handles, still live, so a delegation from handle 5 to itself
/// succeeds) and its mail inherited (the marker it sent itself before its
/// trap is its next call after STARTED).
#[test]
fn a_same_state_restart_of_a_handler_keeps_its_table_and_mail() {
    let mut k = kernel(true, 1);
    k.set_restart_policy(Script::boxed(&[RestartSameState]));
    let inbox = (4096_i64 << 32) | 1024;
    let h = format!(
        r#"(module {IMPORTS}
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then
      (if (i64.ge_s (call $peek (i32.const 0x3000) (i32.const 8000)) (i64.const 0)) (then
        (if (i64.lt_s (call $delegate (i32.const 5) (call $self_pid) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
          (then (return (i32.const 100))))
        (return (i32.const 0))))
      (drop (call $send (call $self_pid) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
      unreachable))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x3000)) (then
      (return (i32.wrap_i64 (call $handles (i32.const 0) (i32.const 0))))))
    (i32.const 0)))"#
    );
    load_entry(
        &mut k,
        "h",
        "handle",
        &h,
        ALL_CAPS,
        r#""restart":"on_failure""#,
    );
    k.spawn("h").unwrap();
    let report = k.run();
    let h = statuses(&report, "h");
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        h[1],
        ExitStatus::Exited(6),
        "five inherited handles and one new: {h:?}"
    );
}
