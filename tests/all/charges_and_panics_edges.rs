//! What a send, a refused delegation and a panicking restart policy cost
//! and do, on every path (direct delivery or the mailbox, the engine's
//! refusals or the syscall's, a handoff's lent turn), and a declared
//! memory maximum for handlers; from the twenty-fourth probe round, on
//! the changes of c292c32, 4d54c15, 3491cd3 and 9c571ad. Its two "Failed
//! before the fix" cases fail without their fixes.

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::capabilities_engine::{AuditEvent, AuditKind};
use estalogic_kernel::{ExitStatus, Kernel, Manifest, RunReport};
use estalogic_tests::{PanickingPolicy, run_catching_panic};
use std::path::Path;
use std::time::Duration;

const IMPORTS: &str = r#"
  (import "estalogic" "exit" (func $exit (param i32)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
"#;

const CAPS: &[&str] = &[
    r#""messaging:send""#,
    r#""messaging:receive""#,
    r#""process:lookup""#,
    r#""log:write""#,
    r#""time:read""#,
];

fn load(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, extra: &str) {
    let separator = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]{separator}{extra}}}"#,
        CAPS.join(",")
    ))
    .unwrap();
    kernel
        .load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

fn det() -> Kernel {
    Kernel::builder()
        .deterministic(true)
        .workers(1)
        .build()
        .unwrap()
}

fn fuel(report: &RunReport, module: &str) -> u64 {
    report.process(module).unwrap().fuel_used
}

fn status(report: &RunReport, module: &str) -> ExitStatus {
    report.process(module).unwrap().status.clone()
}

// ---------------------------------------------------------------------
// 4d54c15: every send pays 256 units for its post
// ---------------------------------------------------------------------

/// A handler that, at STARTED, looks up `target` (name at 4096) and makes
/// `n` sends to it with `options` and a payload of `len` bytes at `ptr`,
/// each of which must return `expect`; then it ends with exit code 7
/// (9 if the lookup failed, 8 if a send returned something else).
fn bad_sender(target: &str, n: u32, options: i32, ptr: i32, len: i32, expect: i64) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 4096) "{target}")
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param $len i32) (result i32) (local $p i64) (local $i i32) (local $r i64)
    (local.set $p (call $lookup (i32.const 4096) (i32.const {tlen})))
    (if (i64.lt_s (local.get $p) (i64.const 0)) (then (return (i32.const 9))))
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (i32.const {n})))
      (local.set $r (call $send (local.get $p) (i32.const 0x1001) (i32.const {options})
                                (i32.const {ptr}) (i32.const {len})))
      (if (i64.ne (local.get $r) (i64.const {expect})) (then (return (i32.const 8))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br 0)))
    (i32.const 7)))"#,
        tlen = target.len()
    )
}

/// A handler that takes every message and waits for the next.
const IDLE_HANDLER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;

/// A task that waits 50 ms for a message and exits 0.
const WAITING_TASK: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (drop (call $receive (i32.const 0) (i64.const 50)
                                           (i32.const 0) (i32.const 64) (i32.const 1024)))))"#;

/// The fuel a handler's `n` refused sends cost, sent to an idle handler
/// (the direct delivery path) or to a task (the mailbox path).
fn refused_sends_fuel(to_handler: bool, options: i32, ptr: i32, len: i32, expect: i64) -> u64 {
    let mut k = det();
    if to_handler {
        load(&mut k, "b", "handle", IDLE_HANDLER, "");
    } else {
        load(&mut k, "b", "run", WAITING_TASK, "");
    }
    load(
        &mut k,
        "a",
        "handle",
        &bad_sender("b", 10, options, ptr, len, expect),
        "",
    );
    k.spawn("b").unwrap();
    k.spawn("a").unwrap();
    let report = k.run();
    assert_eq!(
        status(&report, "a"),
        ExitStatus::Exited(7),
        "to handler {to_handler}: {report:#?}"
    );
    fuel(&report, "a")
}

/// ABI "Fuel for host work": a send pays one unit a byte for the payload
/// it copies and 256 for its post "refused after its payload was copied
/// ... (a `log` with a bad level is refused before it copies)": a send
/// refused for its arguments before anything is copied or posted pays
/// neither, as it does through the mailbox. Sent by a handler to an idle
/// handler (the direct delivery path, `ipc::send` calling `send_direct`),
/// the same refused send paid its whole payload length plus the post:
/// INVALID_ARGUMENT (options with an undefined bit) and INVALID_POINTER
/// (a payload outside memory) cost 256 + len each there, 0 elsewhere. The
/// fuel of the same guest thus depended on whether its target happened
/// to be idle.
// Failed before the fix: the direct path charged `request.len + 256` for
// a refusal from the send's own checks, made before any copy or post.
#[test]
fn a_send_refused_for_its_arguments_costs_the_same_direct_or_not() {
    let invalid = -i64::from(ErrorCode::INVALID_ARGUMENT.0);
    let bad_pointer = -i64::from(ErrorCode::INVALID_POINTER.0);
    // Undefined option bit 3, a 1,000-byte payload in memory.
    let direct = refused_sends_fuel(true, 8, 0, 1_000, invalid);
    let queued = refused_sends_fuel(false, 8, 0, 1_000, invalid);
    // A 60,000-byte payload starting past the end of memory.
    let direct_oob = refused_sends_fuel(true, 0, 65_000, 60_000, bad_pointer);
    let queued_oob = refused_sends_fuel(false, 0, 65_000, 60_000, bad_pointer);
    assert_eq!(
        (direct, direct_oob),
        (queued, queued_oob),
        "10 sends refused before any copy: to an idle handler they cost {} and {} more \
         fuel units than to a task",
        direct as i64 - queued as i64,
        direct_oob as i64 - queued_oob as i64
    );
}

// ---------------------------------------------------------------------
// 3491cd3: refused delegations are audited and pay DENIAL_FUEL
// ---------------------------------------------------------------------

/// A task making `n` delegations of handle 1 (`messaging:send`: WRITE,
/// DELEGATE, REVOKE) to itself with `rights`, `max_uses`, each refused
/// (a negative result); exits 0, or 5 if one was not refused.
fn refused_delegations(n: u32, rights: i32, max_uses: i64) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $p i64) (local $i i32) (local $r i64)
    (local.set $p (call $self))
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (i32.const {n})))
      (local.set $r (call $delegate (i32.const 1) (local.get $p) (i32.const {rights})
                                    (i64.const -1) (i64.const {max_uses}) (i32.const 0) (i32.const 0)))
      (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 5))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br 0)))
    (i32.const 0)))"#
    )
}

/// Fuel, and the `Denied` events of the process, for `n` refusals.
fn delegation_run(n: u32, rights: i32, max_uses: i64) -> (u64, Vec<AuditEvent>) {
    let mut k = det();
    load(
        &mut k,
        "p",
        "run",
        &refused_delegations(n, rights, max_uses),
        "",
    );
    let pid = k.spawn("p").unwrap();
    let _ = k.take_audit();
    let report = k.run();
    assert_eq!(status(&report, "p"), ExitStatus::Exited(0), "{report:#?}");
    let denied = k
        .take_audit()
        .into_iter()
        .filter(|e| e.kind == AuditKind::Denied && e.holder == pid)
        .collect();
    (fuel(&report, "p"), denied)
}

/// ABI "Fuel for host work": "a denial 1,024 more for the audit event it
/// records (so does a `cap_delegate` refused after its handle passed: a
/// target not alive, or a scope, `expires_at` or `max_uses` that does not
/// parse)". A delegation asking for rights its source lacks (READ from a
/// WRITE capability) is refused after its handle passed too, and is
/// audited as a denial (one `Denied` event each, below), but paid no
/// 1,024 units for that event: ten such refusals cost about 10 x 256, ten
/// refused for `max_uses` -5 about 10 x 1,280. The same held for a
/// target table or delegator at its limit (`LIMIT_REACHED`): every
/// refusal by `CapabilityEngine::delegate` was audited and unpaid.
// Failed before the fix: only the syscall's own refusals added
// DENIAL_FUEL, not the engine's.
#[test]
fn every_audited_delegation_refusal_pays_for_its_event() {
    let (fuel_10_rights, denied) = delegation_run(10, 1, -1);
    assert_eq!(denied.len(), 10, "each refusal is audited: {denied:#?}");
    let (fuel_20_rights, _) = delegation_run(20, 1, -1);
    let (fuel_10_uses, denied) = delegation_run(10, 2, -5);
    assert_eq!(denied.len(), 10, "{denied:#?}");
    let (fuel_20_uses, _) = delegation_run(20, 2, -5);
    let rights_each = (fuel_20_rights - fuel_10_rights) / 10;
    let uses_each = (fuel_20_uses - fuel_10_uses) / 10;
    assert!(
        rights_each >= 256 + 1_024,
        "a delegation refused for its rights costs {rights_each} fuel units, one refused \
         for its max_uses {uses_each}: both are audited denials after the handle passed"
    );
}

// ---------------------------------------------------------------------
// c292c32: a worker that panics abandons the run
// ---------------------------------------------------------------------

/// What held: the panic reaches the caller also when the failing process
/// ended inside a lent turn (a direct handoff: its reap is deferred to
/// the worker's own stack), and when several workers hold critical
/// (REALTIME, 16 consecutive slices) spinners that never block: each
/// leaves at the end of its consecutive slices, and the run returns.
#[test]
fn a_policy_panic_after_a_handoff_or_beside_critical_spinners_reaches_the_caller() {
    // The crasher waits for a message and traps; the sender's send wakes
    // it and its receive hands its turn over (1 worker: the only ready).
    let crasher = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
    unreachable))"#;
    let sender = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 4096) "crasher")
  (func (export "run") (local $p i64)
    (local.set $p (call $lookup (i32.const 4096) (i32.const 7)))
    (drop (call $send (local.get $p) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $receive (i32.const 0) (i64.const 200) (i32.const 0) (i32.const 64) (i32.const 1024)))))"#
    );
    for workers in [1, 2] {
        let mut k = Kernel::builder().workers(workers).build().unwrap();
        k.set_restart_policy(Box::new(PanickingPolicy));
        load(
            &mut k,
            "crasher",
            "run",
            crasher,
            r#""restart":"on_failure""#,
        );
        load(&mut k, "sender", "run", &sender, "");
        k.spawn("crasher").unwrap();
        k.spawn("sender").unwrap();
        let outcome = run_catching_panic(k);
        assert_eq!(
            outcome,
            Some(Err("the policy panics".into())),
            "handoff, {workers} workers"
        );
    }
    let spinner = r#"(module (memory (export "memory") 1) (func (export "run") (loop br 0)))"#;
    let mut k = Kernel::builder().workers(3).build().unwrap();
    k.set_restart_policy(Box::new(PanickingPolicy));
    load(&mut k, "spin", "run", spinner, r#""priority":"critical""#);
    load(
        &mut k,
        "crash",
        "run",
        r#"(module (memory (export "memory") 1) (func (export "run") unreachable))"#,
        r#""restart":"on_failure""#,
    );
    k.spawn("spin").unwrap();
    k.spawn("spin").unwrap();
    k.spawn("crash").unwrap();
    let started = std::time::Instant::now();
    let outcome = run_catching_panic(k);
    assert_eq!(outcome, Some(Err("the policy panics".into())));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------
// 9c571ad: growth refused by the module's declared maximum
// ---------------------------------------------------------------------

/// What held: the declared-maximum refusal counts for a handler process
/// too (its own call path, `run_handler`): a growth past `(memory 1 2)`
/// refused, then `unreachable`, ends it OUT_OF_MEMORY, in each run
/// configuration; and a task's growth refused by its maximum, then
/// recovered from (it exits normally), is not reported as a trap.
#[test]
fn a_declared_maximum_refusal_counts_for_handlers_too() {
    let handler = r#"(module
  (memory (export "memory") 1 2)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32)
    (drop (memory.grow (i32.const 5)))
    unreachable))"#;
    let recovers = r#"(module (memory (export "memory") 1 2)
  (func (export "run") (result i32)
    (if (i32.ne (memory.grow (i32.const 5)) (i32.const -1)) (then unreachable))
    (i32.const 3)))"#;
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let mut k = Kernel::builder()
            .deterministic(deterministic)
            .workers(workers)
            .build()
            .unwrap();
        load(&mut k, "h", "handle", handler, "");
        load(&mut k, "t", "run", recovers, "");
        k.spawn("h").unwrap();
        k.spawn("t").unwrap();
        let report = k.run();
        match status(&report, "h") {
            ExitStatus::Trapped { code, .. } => {
                assert_eq!(code, ErrorCode::OUT_OF_MEMORY, "{deterministic} {workers}")
            }
            other => panic!("{deterministic} {workers}: {other:?}"),
        }
        assert_eq!(status(&report, "t"), ExitStatus::Exited(3));
    }
}
