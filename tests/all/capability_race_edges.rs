//! Capabilities under concurrency and their audit trail (the
//! twenty-ninth probe round).
//! Delegation chains and shared use limits consumed from two workers,
//! revocation cascades reaching a process on the other worker while it
//! uses a cached decision, delegation racing a revocation, same-state
//! restarts inheriting a use-limited capability, and the audit trail's
//! order ("oldest first") and exactly-once accounting.

use estalogic_abi::Pid;
use estalogic_kernel::core::capabilities_engine::{
    AuditDetail, AuditEvent, AuditKind, CapabilityId, RevokeReason,
};
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{Script, kernel, load_entry};
use std::collections::HashMap;

const IMPORTS: &str = r#"
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_inspect" (func $inspect (param i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
"#;

/// Module names every guest can look up, at fixed offsets from 4096.
const NAMES: &[(&str, u32)] = &[
    ("p", 4096),
    ("q", 4100),
    ("q1", 4104),
    ("q2", 4108),
    ("r", 4112),
    ("g", 4116),
    ("a", 4120),
    ("b", 4124),
];

fn lk(name: &str) -> String {
    let at = NAMES.iter().find(|(n, _)| *n == name).unwrap().1;
    format!("(call $lookup (i32.const {at}) (i32.const {}))", name.len())
}

/// A task: memory 2 pages (header at 0, buffer 64..1088, inspect records at
/// 2048, handle lists from 8192), the names above, `body` in `run` (result
/// i32, 0 if it falls through), locals $r $p $t (i64), $i $j $k (i32).
fn task(body: &str) -> String {
    let data: String = NAMES
        .iter()
        .map(|(n, at)| format!(r#"(data (i32.const {at}) "{n}")"#))
        .collect();
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 2)
  {data}
  (func $pause (param $ms i64)
    (drop (call $receive (i32.const 0x7777) (local.get $ms) (i32.const 60000) (i32.const 60064) (i32.const 64))))
  (func (export "run") (result i32) (local $r i64) (local $p i64) (local $t i64) (local $i i32) (local $j i32) (local $k i32)
    {body}
    (i32.const 0)))"#
    )
}

/// Sets $p to the pid of `name`'s process, waiting until it runs.
fn wait_pid(name: &str) -> String {
    format!(
        r#"
  (block $found (loop $again
    (local.set $p {})
    (br_if $found (i64.ge_s (local.get $p) (i64.const 0)))
    (drop (call $yield))
    (br $again)))"#,
        lk(name)
    )
}

/// Waits until the caller's table holds at least `n` handles.
fn wait_handles(n: u32) -> String {
    format!(
        r#"
  (block $got (loop $again
    (br_if $got (i64.ge_u (call $handles (i32.const 0) (i32.const 0)) (i64.const {n})))
    (drop (call $yield))
    (br $again)))"#
    )
}

fn load(k: &mut Kernel, name: &str, body: &str, caps: &[&str], extra: &str) {
    load_entry(k, name, "run", &task(body), caps, extra);
}

fn status(report: &RunReport, module: &str) -> ExitStatus {
    report
        .process(module)
        .unwrap_or_else(|| panic!("{module} ran"))
        .status
        .clone()
}

fn pid(report: &RunReport, module: &str) -> Pid {
    report.process(module).unwrap().pid
}

fn count(audit: &[AuditEvent], kind: AuditKind, holder: Pid) -> usize {
    audit
        .iter()
        .filter(|e| e.kind == kind && e.holder == holder)
        .count()
}

/// Every capability's life in the audit trail: created once (granted,
/// delegated) before anything else is said about it, revoked at most once,
/// closed at most once and never before it was revoked.
fn check_lives(audit: &[AuditEvent], what: &str) {
    #[derive(Default)]
    struct Life {
        created: usize,
        revoked: usize,
        closed: usize,
    }
    let mut lives: HashMap<CapabilityId, Life> = HashMap::new();
    for (at, e) in audit.iter().enumerate() {
        let Some(id) = e.capability else { continue };
        let life = lives.entry(id).or_default();
        match e.kind {
            AuditKind::Granted | AuditKind::Delegated => {
                assert_eq!(
                    (life.created, life.revoked, life.closed),
                    (0, 0, 0),
                    "{what}: event {at} creates {id} a second time or after its end: {e:?}"
                );
                life.created += 1;
            }
            AuditKind::Revoked => {
                assert_eq!(life.revoked, 0, "{what}: {id} revoked twice (event {at})");
                life.revoked += 1;
            }
            AuditKind::Closed => {
                assert_eq!(life.closed, 0, "{what}: {id} closed twice (event {at})");
                assert_eq!(life.revoked, 1, "{what}: {id} closed before it was revoked");
                life.closed += 1;
            }
            _ => {}
        }
        if e.kind != AuditKind::Granted && e.kind != AuditKind::Delegated {
            assert_eq!(
                life.created, 1,
                "{what}: event {at} about {id} before its creation: {e:?}"
            );
        }
    }
}

/// "Takes the capability audit events recorded so far ... oldest first"
/// (`Kernel::take_audit`); an event's `at` is "The kernel clock when it
/// happened". Returns the first pair out of order, if any.
fn first_out_of_order(audit: &[AuditEvent]) -> Option<(usize, u64, u64)> {
    audit
        .windows(2)
        .enumerate()
        .find(|(_, w)| w[1].at < w[0].at && w[1].kind != AuditKind::Lost)
        .map(|(i, w)| (i + 1, w[0].at, w[1].at))
}

// Rights bits.
const READ: i32 = 1;
const WRITE: i32 = 2;
const DELEGATE: i32 = 64;
const REVOKE: i32 = 128;

// ---------------------------------------------------------------------
// 1. A use limit shared down the tree, consumed from two workers at once
// ---------------------------------------------------------------------

/// Engine invariant 1: "Uses are shared down the tree: a use counts
/// against the capability and every ancestor, so a whole subtree never
/// exceeds its root's `max_uses`"; crates/abi/src/capabilities.rs: "Every
/// check of a limited capability ... is one, so for those it is exact".
/// `p` limits a copy of its clock capability to 3,000 uses and gives
/// `q1` and `q2` each a copy keeping what is left (-1); both read the
/// clock as fast as they can until refused. Together they get exactly
/// 3,000 reads, each copy's record counts exactly its holder's reads, the
/// limited source's counts 3,000, and each reader's refusal is one denial.
#[test]
fn a_shared_use_limit_is_never_exceeded_from_two_workers() {
    const LIMIT: i64 = 3_000;
    let reader = format!(
        r#"
  {wait}
  ;; handles 1-3 from the manifest, 4 the copy
  (block $out (loop $spin
    (local.set $r (call $now))
    (br_if $out (i64.lt_s (local.get $r) (i64.const 0)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br $spin)))
  (if (i64.ne (local.get $r) (i64.const -2002)) (then (return (i32.const -5))))
  (if (i64.lt_s (call $inspect (i32.const 4) (i32.const 2048) (i32.const 256)) (i64.const 48))
    (then (return (i32.const -6))))
  ;; uses at 8: exactly this holder's reads
  (if (i64.ne (i64.load (i32.const 2056)) (i64.extend_i32_u (local.get $i)))
    (then (return (i32.const -7))))
  {p}
  (drop (call $send (local.get $p) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))
  (return (local.get $i))"#,
        wait = wait_handles(4),
        p = wait_pid("p"),
    );
    let owner = format!(
        r#"
  ;; handle 1 time:read; 5 = a copy limited to {LIMIT} uses
  (local.set $r (call $delegate (i32.const 1) (call $self) (i32.const {rdr}) (i64.const -1) (i64.const {LIMIT}) (i32.const 0) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 5)) (then (return (i32.const 101))))
  {q1}
  (local.set $t (local.get $p))
  {q2}
  (if (i64.lt_s (call $delegate (i32.const 5) (local.get $t) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 102))))
  (if (i64.lt_s (call $delegate (i32.const 5) (local.get $p) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 103))))
  ;; stay alive (an exit revokes the copies) until both readers are done
  (drop (call $receive (i32.const 0x1000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (drop (call $receive (i32.const 0x1000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (drop (call $inspect (i32.const 5) (i32.const 2048) (i32.const 256)))
  (if (i64.ne (i64.load (i32.const 2056)) (i64.const {LIMIT})) (then (return (i32.add (i32.const 1000) (i32.wrap_i64 (i64.load (i32.const 2056)))))))
  (if (i64.ne (i64.load (i32.const 2080)) (i64.const {LIMIT})) (then (return (i32.const 104))))"#,
        rdr = READ | DELEGATE | REVOKE,
        q1 = wait_pid("q1"),
        q2 = wait_pid("q2"),
    );
    let reader_caps = ["messaging:receive", "messaging:send", "process:lookup"];
    let owner_caps = [
        "time:read",
        "process:lookup",
        "messaging:receive",
        "messaging:send",
    ];
    let mut runs = vec![(true, 1)];
    runs.extend(std::iter::repeat_n((false, 2), 6));
    runs.push((false, 1));
    for (round, (det, workers)) in runs.into_iter().enumerate() {
        let what = format!("round {round}: deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        load(&mut k, "q1", &reader, &reader_caps, "");
        load(&mut k, "q2", &reader, &reader_caps, "");
        load(&mut k, "p", &owner, &owner_caps, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(status(&report, "p"), ExitStatus::Exited(0), "{what}");
        let reads: Vec<i32> = ["q1", "q2"]
            .iter()
            .map(|q| match status(&report, q) {
                ExitStatus::Exited(n) if n >= 0 => n,
                other => panic!("{what}: {q}: {other:?}"),
            })
            .collect();
        assert_eq!(
            reads.iter().sum::<i32>() as i64,
            LIMIT,
            "{what}: reads {reads:?} of a capability allowing {LIMIT}"
        );
        let audit = k.take_audit();
        for q in ["q1", "q2"] {
            assert_eq!(
                count(&audit, AuditKind::Denied, pid(&report, q)),
                1,
                "{what}: {q}'s one refused read is one denial"
            );
            assert_eq!(count(&audit, AuditKind::Delegated, pid(&report, q)), 1);
        }
        assert_eq!(count(&audit, AuditKind::Denied, pid(&report, "p")), 0);
        check_lives(&audit, &what);
    }
}

// ---------------------------------------------------------------------
// 2. "max_uses -1 gives the copy the uses its source has left", while
//    another worker uses the source's subtree
// ---------------------------------------------------------------------

/// docs/ABI.md, `cap_*`: "`cap_delegate`'s `max_uses` -1 gives the copy
/// the uses its source has left". `p` holds a copy of its clock
/// capability limited to 10^12 uses (handle 4) and has given `q` a copy
/// of it; while `q` reads the clock in a loop on the other worker
/// (each read is a use of p's handle 4 too), `p` delegates handle 4 to
/// itself 20,000 times with `max_uses` -1 and closes each copy. Each such
/// delegation must succeed: the source is live with about 10^12 uses left
/// and -1 asks for no more than it has. The exit code is how many were
/// refused (0 expected), the audit holds no denial of `p`.
///
/// Failed before the fix (3,621 to 10,484 of the 20,000 refused):
/// `cap_delegate` read the source's uses left under one hold of the
/// engine's lock and asked for a copy with that many under a second, so
/// a use on the other worker in between made the copy "not an
/// attenuation". It now holds the lock from the source's check to the
/// copy.
#[test]
fn delegating_the_uses_left_is_not_refused_by_a_concurrent_use() {
    const ROUNDS: u32 = 20_000;
    let delegator = format!(
        r#"
  ;; handles: 1 time:read, 2 lookup, 3 receive; 4 = limited copy
  (local.set $r (call $delegate (i32.const 1) (call $self) (i32.const {rdr}) (i64.const -1) (i64.const 1000000000000) (i32.const 0) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const -101))))
  {q}
  (if (i64.lt_s (call $delegate (i32.const 4) (local.get $p) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const -102))))
  ;; wait until q reads through it
  (block $used (loop $again
    (drop (call $inspect (i32.const 4) (i32.const 2048) (i32.const 256)))
    (br_if $used (i64.ne (i64.load (i32.const 2056)) (i64.const 0)))
    (drop (call $yield))
    (br $again)))
  (loop $round
    (local.set $r (call $delegate (i32.const 4) (call $self) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (local.get $r) (i64.const 0))
      (then
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (if (i64.ne (local.get $r) (i64.const -2002)) (then (return (i32.const -103)))))
      (else
        (if (i64.ne (call $revoke (i32.wrap_i64 (local.get $r)) (i32.const 2)) (i64.const 1))
          (then (return (i32.const -104))))))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $round (i32.lt_u (local.get $i) (i32.const {ROUNDS}))))
  (return (local.get $j))"#,
        rdr = READ | DELEGATE | REVOKE,
        q = wait_pid("q"),
    );
    // q: handle 1 receive, 2 the copy; reads until the copy dies with p.
    let reader = format!(
        r#"
  {wait}
  (block $out (loop $spin
    (br_if $out (i64.lt_s (call $now) (i64.const 0)))
    (br $spin)))"#,
        wait = wait_handles(2)
    );
    let mut refused_runs = Vec::new();
    // Two workers only: on one, q's loop of unchecked-cache clock reads
    // never lets p run (see
    // `a_loop_of_limited_clock_reads_lets_its_peer_run_and_stops`).
    for round in 0..3 {
        let (det, workers) = (false, 2);
        let what = format!("round {round}: deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        load(&mut k, "q", &reader, &["messaging:receive"], "");
        load(
            &mut k,
            "p",
            &delegator,
            &["time:read", "process:lookup", "messaging:receive"],
            "",
        );
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(
            status(&report, "q"),
            ExitStatus::Exited(0),
            "{what}: {:?}",
            report.processes
        );
        let refused = match status(&report, "p") {
            ExitStatus::Exited(n) if n >= 0 => n,
            other => panic!("{what}: p: {other:?}"),
        };
        let audit = k.take_audit();
        let p = pid(&report, "p");
        let denials: Vec<String> = audit
            .iter()
            .filter(|e| e.kind == AuditKind::Denied && e.holder == p)
            .take(2)
            .map(|e| e.detail.to_string())
            .collect();
        check_lives(&audit, &what);
        if refused != 0 {
            refused_runs.push(format!(
                "{what}: {refused} of {ROUNDS} delegations with max_uses -1 refused \
                 (PERMISSION_DENIED); audited as {denials:?}"
            ));
        }
    }
    assert!(refused_runs.is_empty(), "{refused_runs:#?}");
}

// ---------------------------------------------------------------------
// 3. A cascade reaching a cached decision on the other worker
// ---------------------------------------------------------------------

/// ARCHITECTURE invariant 6: "revocation cascades through the derivation
/// tree"; `ProcessContext::admit`: a positive answer about an unlimited
/// capability "is remembered until the engine's generation moves (any
/// revocation that reaches a live holder)". `r` gives `p` a copy of a
/// copy of its lookup capability (unlimited: p's lookups are answered
/// from p's cache); `p` looks `r` up in a loop on the other worker. `r`
/// revokes the middle copy (mode 0: it and p's copy, 2), then mails `p`
/// with its own root capability. Once `p` has that mail its next lookup
/// must be refused (PERMISSION_DENIED), and its copy's record says
/// revoked. Audited: the two revocations once each, by `r`, the copy's
/// derived from the middle one; every denial of `p` after its copy's
/// revocation.
#[test]
fn a_cascade_reaches_a_cached_decision_on_the_other_worker() {
    // r: 1 lookup, 2 send, 3 receive; 4 = middle copy.
    let revoker = format!(
        r#"
  (local.set $r (call $delegate (i32.const 1) (call $self) (i32.const {rdr}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 101))))
  {p}
  (if (i64.lt_s (call $delegate (i32.const 4) (local.get $p) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 102))))
  ;; let p look up for a while (from its cache after the first, which
  ;; counts a use of the middle copy too)
  (block $used (loop $again
    (drop (call $inspect (i32.const 4) (i32.const 2048) (i32.const 256)))
    (br_if $used (i64.ne (i64.load (i32.const 2056)) (i64.const 0)))
    (drop (call $yield))
    (br $again)))
  (call $pause (i64.const 2))
  (local.set $r (call $revoke (i32.const 4) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 2)) (then (return (i32.add (i32.const 110) (i32.wrap_i64 (local.get $r))))))
  (if (i64.lt_s (call $send (local.get $p) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 103))))"#,
        rdr = READ | DELEGATE | REVOKE,
        p = wait_pid("p"),
    );
    // p: 1 receive; 2 the copy. Exit codes: 0 as expected; 50 a lookup
    // allowed after the revocation was known; 51 an unexpected error after
    // it (54 before);
    // 52 the copy's record not revoked; 53 never a successful lookup.
    let user = format!(
        r#"
  {wait}
  (loop $spin
    (local.set $t (call $receive (i32.const 0x3000) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 1024)))
    (local.set $r {lookup})
    (if (i64.ge_s (local.get $r) (i64.const 0)) (then (local.set $j (i32.add (local.get $j) (i32.const 1)))))
    (if (i64.ge_s (local.get $t) (i64.const 0))
      (then
        (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 50))))
        (if (i64.ne (local.get $r) (i64.const -2002)) (then (return (i32.const 51))))
        (drop (call $inspect (i32.const 2) (i32.const 2048) (i32.const 256)))
        (if (i32.ne (i32.load8_u (i32.const 2049)) (i32.const 1)) (then (return (i32.const 52))))
        (if (i32.eqz (local.get $j)) (then (return (i32.const 53))))
        (return (i32.const 0))))
    ;; Before the mail: refused, or NOT_FOUND (the check came before the
    ;; revocation and r ended before the name was looked at).
    (if (i64.lt_s (local.get $r) (i64.const 0))
      (then (if (i32.and (i64.ne (local.get $r) (i64.const -2002)) (i64.ne (local.get $r) (i64.const -1006)))
        (then (return (i32.const 54))))))
    (br $spin))"#,
        wait = wait_handles(2),
        lookup = lk("r"),
    );
    let mut runs = vec![(true, 1), (false, 1)];
    runs.extend(std::iter::repeat_n((false, 2), 8));
    for (round, (det, workers)) in runs.into_iter().enumerate() {
        let what = format!("round {round}: deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        load(&mut k, "p", &user, &["messaging:receive"], "");
        load(
            &mut k,
            "r",
            &revoker,
            &["process:lookup", "messaging:send", "messaging:receive"],
            "",
        );
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(status(&report, "r"), ExitStatus::Exited(0), "{what}");
        assert_eq!(status(&report, "p"), ExitStatus::Exited(0), "{what}");
        let audit = k.take_audit();
        check_lives(&audit, &what);
        let (p, r) = (pid(&report, "p"), pid(&report, "r"));
        let by_r: Vec<(usize, &AuditEvent)> = audit
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.kind == AuditKind::Revoked
                    && matches!(e.detail, AuditDetail::Revoked { reason: RevokeReason::RevokedBy(by), .. } if by == r)
            })
            .collect();
        assert_eq!(by_r.len(), 2, "{what}: {audit:#?}");
        let middle = by_r
            .iter()
            .find(|(_, e)| e.holder == r)
            .expect("the middle copy's revocation")
            .1
            .capability;
        let (copy_at, copy) = *by_r.iter().find(|(_, e)| e.holder == p).unwrap();
        assert!(
            matches!(copy.detail, AuditDetail::Revoked { derived_from: Some(root), .. } if Some(root) == middle),
            "{what}: {copy:?}"
        );
        let denials: Vec<usize> = audit
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == AuditKind::Denied && e.holder == p)
            .map(|(i, _)| i)
            .collect();
        assert!(!denials.is_empty(), "{what}");
        assert!(
            denials.iter().all(|&i| i > copy_at),
            "{what}: a denial of p before its copy's revocation: {audit:#?}"
        );
    }
}

// ---------------------------------------------------------------------
// 4. Delegation racing a revocation: no live descendant survives
// ---------------------------------------------------------------------

/// Engine invariant 2: "Revoking a capability revokes everything derived
/// from it, at once and for good (a revoked capability never has a live
/// descendant)". `r` gives `a` a delegable copy of a copy of its lookup
/// capability; `a` delegates it to `b` over and over on one worker while
/// `r` revokes the middle copy on the other. Once `r`'s revoke has
/// returned (it then mails `b`), every copy `b` holds is revoked, `a`'s
/// delegations are refused from then on, and each copy was created and
/// revoked once in the audit trail.
#[test]
fn a_delegation_racing_a_revocation_leaves_no_live_descendant() {
    let revoker = format!(
        r#"
  (local.set $r (call $delegate (i32.const 1) (call $self) (i32.const {rdr}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 101))))
  {a}
  (if (i64.lt_s (call $delegate (i32.const 4) (local.get $p) (i32.const {rdr}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 102))))
  (call $pause (i64.const 1))
  (local.set $r (call $revoke (i32.const 4) (i32.const 0)))
  (if (i64.lt_s (local.get $r) (i64.const 2)) (then (return (i32.const 103))))
  {b}
  (if (i64.lt_s (call $send (local.get $p) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)) (i64.const 0))
    (then (return (i32.const 104))))"#,
        rdr = READ | DELEGATE | REVOKE,
        a = wait_pid("a"),
        b = wait_pid("b"),
    );
    // a: 1 receive, 2 lookup; 3 the copy. Delegates to b until refused
    // (to b the first 3,000 times, then to itself, closing each copy);
    // exits with how many it gave b.
    let a = format!(
        r#"
  {wait}
  {b}
  (block $out (loop $again
    (if (i32.lt_u (local.get $i) (i32.const 3000))
      (then
        (local.set $r (call $delegate (i32.const 3) (local.get $p) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
        (br_if $out (i64.lt_s (local.get $r) (i64.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 1))))
      (else
        (local.set $r (call $delegate (i32.const 3) (call $self) (i32.const {READ}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
        (br_if $out (i64.lt_s (local.get $r) (i64.const 0)))
        (drop (call $revoke (i32.wrap_i64 (local.get $r)) (i32.const 2)))))
    (br $again)))
  ;; PERMISSION_DENIED: the source's check and the copy are one hold of
  ;; the engine's lock, so a delegation whose source passed its check
  ;; was made before the revocation, while b was alive (before the fix
  ;; it could be NO_SUCH_PROCESS: the source checked under one hold, b,
  ;; told of the revocation, ended before the second).
  (if (i64.ne (local.get $r) (i64.const -2002))
    (then (return (i32.wrap_i64 (local.get $r)))))
  (return (local.get $i))"#,
        wait = wait_handles(3),
        b = wait_pid("b"),
    );
    // b: 1 receive. Waits for r's mail, then inspects every handle past
    // 1: exits with the first one not revoked, or 0.
    let b = r#"
  (drop (call $receive (i32.const 0x3000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (local.set $k (i32.wrap_i64 (call $handles (i32.const 8192) (i32.const 4096))))
  (local.set $i (i32.const 0))
  (block $done (loop $each
    (br_if $done (i32.ge_u (local.get $i) (local.get $k)))
    (local.set $j (i32.load (i32.add (i32.const 8192) (i32.shl (local.get $i) (i32.const 2)))))
    (if (i32.gt_u (local.get $j) (i32.const 1))
      (then
        (if (i64.lt_s (call $inspect (local.get $j) (i32.const 2048) (i32.const 256)) (i64.const 0))
          (then (return (i32.const -3))))
        (if (i32.ne (i32.load8_u (i32.const 2049)) (i32.const 1)) (then (return (local.get $j))))))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br $each)))"#;
    for round in 0..6 {
        let (det, workers) = if round == 0 { (true, 1) } else { (false, 2) };
        let what = format!("round {round}: deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        load(&mut k, "b", b, &["messaging:receive"], "");
        load(
            &mut k,
            "a",
            &a,
            &["messaging:receive", "process:lookup"],
            "",
        );
        load(
            &mut k,
            "r",
            &revoker,
            &["process:lookup", "messaging:send", "messaging:receive"],
            "",
        );
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(status(&report, "r"), ExitStatus::Exited(0), "{what}");
        assert_eq!(status(&report, "b"), ExitStatus::Exited(0), "{what}");
        let made = match status(&report, "a") {
            ExitStatus::Exited(n) if n >= 0 => n as usize,
            other => panic!("{what}: a: {other:?}"),
        };
        let audit = k.take_audit();
        check_lives(&audit, &what);
        let b_pid = pid(&report, "b");
        assert_eq!(
            count(&audit, AuditKind::Delegated, b_pid),
            made,
            "{what}: one Delegated event per copy a made"
        );
        assert_eq!(
            count(&audit, AuditKind::Denied, pid(&report, "a")),
            1,
            "{what}: a's one refused delegation"
        );
    }
}

// ---------------------------------------------------------------------
// 5. A same-state restart keeps counting a limited capability's uses
// ---------------------------------------------------------------------

/// ARCHITECTURE "How a process runs" 5: a same-state restart "takes its
/// table over under the same handles"; engine invariant 1: a whole
/// subtree never exceeds its root's `max_uses`. `g` gives `p` a clock
/// capability limited to 100 uses; `p` reads the clock 40 times, mails
/// itself a marker and traps; its same-state restart finds the marker and
/// reads until refused: 60 more (exit code), and the copy's record says
/// 100 uses of 100. Audited: one `Inherited` per handle, no grant, no
/// revocation at the restart, one denial (the refused read).
#[test]
fn a_same_state_restart_inherits_the_uses_left_of_a_limited_capability() {
    let giver = format!(
        r#"
  {p}
  (local.set $r (call $delegate (i32.const 1) (local.get $p) (i32.const {READ}) (i64.const -1) (i64.const 100) (i32.const 0) (i32.const 0)))
  (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.add (i32.const 100) (i32.wrap_i64 (local.get $r))))))
  (drop (call $receive (i32.const 0x3000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))"#,
        p = wait_pid("p"),
    );
    // p: 1 receive, 2 send, 3 lookup; 4 the copy.
    let user = format!(
        r#"
  (local.set $r (call $receive (i32.const 0x3001) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (if (i64.lt_s (local.get $r) (i64.const 0))
    (then
      {wait}
      (loop $first
        (if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const -70))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $first (i32.lt_u (local.get $i) (i32.const 40))))
      (drop (call $send (call $self) (i32.const 0x3001) (i32.const 0) (i32.const 0) (i32.const 0)))
      unreachable))
  (if (i64.ne (call $handles (i32.const 8192) (i32.const 16)) (i64.const 4)) (then (return (i32.const -71))))
  (block $out (loop $spin
    (local.set $r (call $now))
    (br_if $out (i64.lt_s (local.get $r) (i64.const 0)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $out (i32.gt_u (local.get $i) (i32.const 1000)))
    (br $spin)))
  (if (i64.ne (local.get $r) (i64.const -2002)) (then (return (i32.const -72))))
  (drop (call $inspect (i32.const 4) (i32.const 2048) (i32.const 256)))
  (if (i64.ne (i64.load (i32.const 2056)) (i64.const 100)) (then (return (i32.sub (i32.const -1000) (i32.wrap_i64 (i64.load (i32.const 2056)))))))
  (if (i64.ne (i64.load (i32.const 2080)) (i64.const 100)) (then (return (i32.const -73))))
  {g}
  (drop (call $send (local.get $p) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
  (return (local.get $i))"#,
        wait = wait_handles(4),
        g = wait_pid("g"),
    );
    for (det, workers) in [(true, 1), (false, 1), (false, 2), (false, 2)] {
        let what = format!("deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        k.set_restart_policy(Script::boxed(&[RestartAction::RestartSameState]));
        load(
            &mut k,
            "p",
            &user,
            &["messaging:receive", "messaging:send", "process:lookup"],
            r#""restart":"on_failure""#,
        );
        load(
            &mut k,
            "g",
            &giver,
            &["time:read", "process:lookup", "messaging:receive"],
            "",
        );
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(status(&report, "g"), ExitStatus::Exited(0), "{what}");
        let ps: Vec<&estalogic_kernel::ProcessReport> = report
            .processes
            .iter()
            .filter(|p| p.module == "p")
            .collect();
        assert_eq!(ps.len(), 2, "{what}: {:?}", report.processes);
        assert!(
            matches!(ps[0].status, ExitStatus::Trapped { .. }),
            "{what}: {:?}",
            ps[0].status
        );
        assert_eq!(
            ps[1].status,
            ExitStatus::Exited(60),
            "{what}: the restart reads what its predecessor left"
        );
        let audit = k.take_audit();
        check_lives(&audit, &what);
        let (first, second) = (ps[0].pid, ps[1].pid);
        assert_eq!(count(&audit, AuditKind::Inherited, second), 4, "{what}");
        assert_eq!(count(&audit, AuditKind::Granted, second), 0, "{what}");
        assert_eq!(count(&audit, AuditKind::Revoked, first), 0, "{what}");
        assert_eq!(count(&audit, AuditKind::Denied, first), 0, "{what}");
        assert_eq!(count(&audit, AuditKind::Denied, second), 1, "{what}");
        assert_eq!(count(&audit, AuditKind::Revoked, second), 4, "{what}");
    }
}

// ---------------------------------------------------------------------
// 6. The audit trail's order on two workers
// ---------------------------------------------------------------------

/// `Kernel::take_audit`: "Takes the capability audit events recorded so
/// far: every grant, delegation, export, revocation and denial, oldest
/// first"; `AuditEvent::at`: "The kernel clock when it happened". Two
/// processes on two workers each delegate their send capability to
/// themselves and close the copy 3,000 times (three events a round: a
/// delegation, a revocation, a close), then exit. Every capability's life
/// is in order (created, revoked, closed, each once: passes), and the
/// events come oldest first: no event's `at` is earlier than the one
/// before it.
///
/// Failed before the fix (2 to about 4,300 steps back, up to 11 ms): the
/// syscalls read the clock before they took the engine's lock, so a
/// worker that read it first and waited for the lock recorded its events
/// after another worker's later ones. The engine now stamps an event no
/// earlier than the one before it.
#[test]
fn audit_events_on_two_workers_come_oldest_first() {
    const ROUNDS: u32 = 3_000;
    let churner = format!(
        r#"
  (local.set $p (call $self))
  (loop $round
    (local.set $r (call $delegate (i32.const 1) (local.get $p) (i32.const {WRITE}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
    (if (i64.le_s (local.get $r) (i64.const 0)) (then (return (i32.const 1))))
    (if (i64.ne (call $revoke (i32.wrap_i64 (local.get $r)) (i32.const 2)) (i64.const 1))
      (then (return (i32.const 2))))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $round (i32.lt_u (local.get $i) (i32.const {ROUNDS}))))"#
    );
    let caps = ["messaging:send", "messaging:receive"];
    // The deterministic run as a control: one worker, exact counts.
    let mut failures = Vec::new();
    for (round, (det, workers)) in [(true, 1), (false, 2), (false, 2), (false, 2)]
        .into_iter()
        .enumerate()
    {
        let what = format!("round {round}: deterministic {det}, {workers} workers");
        let mut k = kernel(det, workers);
        load(&mut k, "a", &churner, &caps, "");
        load(&mut k, "b", &churner, &caps, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(status(&report, "a"), ExitStatus::Exited(0), "{what}");
        assert_eq!(status(&report, "b"), ExitStatus::Exited(0), "{what}");
        let audit = k.take_audit();
        // 2 x (2 grants + 3 per round + 2 exit revocations)
        assert_eq!(audit.len(), 2 * (2 + 3 * ROUNDS as usize + 2), "{what}");
        check_lives(&audit, &what);
        for m in ["a", "b"] {
            let p = pid(&report, m);
            assert_eq!(count(&audit, AuditKind::Delegated, p), ROUNDS as usize);
            assert_eq!(count(&audit, AuditKind::Closed, p), ROUNDS as usize);
            assert_eq!(count(&audit, AuditKind::Revoked, p), ROUNDS as usize + 2);
        }
        if let Some((at, before, after)) = first_out_of_order(&audit) {
            let backwards = audit.windows(2).filter(|w| w[1].at < w[0].at).count();
            failures.push(format!(
                "{what}: event {at} at {after} ns follows one at {before} ns \
                 ({backwards} steps backwards in {} events): {:?} after {:?}",
                audit.len(),
                audit[at],
                audit[at - 1]
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------
// 7. A loop of checks the kernel cannot cache (a use-limited capability)
//    still passes its checkpoints
// ---------------------------------------------------------------------

/// ARCHITECTURE "How a process runs" 2: "`clock_now` ... when its
/// uncached checks (denials, limited capabilities) make a task's
/// checkpoint due, it shortens the store's fuel interval so the guest
/// passes one within 1,000 units of its own work"; invariant 7: "A guest
/// reaches a checkpoint at least every 1,000,000 fuel units; an infinite
/// loop cannot stop the kernel or its peers." On one worker, `q` reads
/// the clock 200,000 times through a copy of its clock capability limited
/// to 10^12 uses (every check goes to the engine, none is cached: the
/// root is closed), then exits; `p`, of the same level, yields once and
/// exits. `p` must end first: it needs one turn, `q` runs for hundreds of
/// slices. With a plain loop instead of the reads (the control) it does.
/// A denied read (no clock capability at all) is the same case.
///
/// Failed before the fix (and a shutdown requested meanwhile was not
/// honoured for minutes): `checkpoint_soon` shortened the fuel interval
/// to 1,000 units, and the first `charge` after those units were spent
/// set it back, inside the very `clock_now` call that spent them, before
/// the guest's next fuel check could yield: the due checkpoint was
/// dropped every time. The interval is now restored only after the
/// checkpoint passed.
#[test]
fn a_loop_of_limited_clock_reads_lets_its_peer_run_and_stops() {
    let mut failures = Vec::new();
    for (label, read) in [
        ("plain loop (control)", "(nop)"),
        ("limited clock reads", "(drop (call $now))"),
        ("denied clock reads", "(drop (call $now))"),
    ] {
        let limited = label.starts_with("limited");
        // g gives q a clock capability limited to 10^12 uses (limited
        // case), then waits for q's end.
        let giver = format!(
            r#"
  {q}
  {give}
  (drop (call $receive (i32.const 0x1000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))"#,
            q = wait_pid("q"),
            give = if limited {
                "(if (i64.lt_s (call $delegate (i32.const 1) (local.get $p) (i32.const 1) (i64.const -1) (i64.const 1000000000000) (i32.const 0) (i32.const 0)) (i64.const 0)) (then (return (i32.const 1))))"
            } else {
                ""
            },
        );
        // Each loop is worth more than a NORMAL slice (25 ms, 25 M units)
        // and the peer's service window: 5,000,000 plain iterations of
        // about 8 units; 1,000,000 limited reads of about 74 (own work
        // and the check's host work); 200,000 denied reads of about 1,080.
        let n = if label.starts_with("plain") {
            5_000_000
        } else if limited {
            1_000_000
        } else {
            200_000
        };
        // q: 1 receive, 2 send, 3 lookup (4 the limited copy). Tells p it
        // starts, spins, tells g it is done.
        let spinner = format!(
            r#"
  {wait}
  {p}
  (drop (call $send (local.get $p) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))
  (block $out (loop $spin
    {read}
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $out (i32.gt_u (local.get $i) (i32.const {n})))
    (br $spin)))
  {g}
  (drop (call $send (local.get $p) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))"#,
            wait = if limited {
                wait_handles(4)
            } else {
                String::new()
            },
            p = wait_pid("p"),
            g = wait_pid("g"),
        );
        // p: once q spins, one yield, then it ends.
        let peer = r#"
  (drop (call $receive (i32.const 0x1000) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (drop (call $yield))"#;
        for (det, workers) in [(true, 1), (false, 1)] {
            let what = format!("{label}, deterministic {det}, {workers} worker");
            let mut k = kernel(det, workers);
            load(
                &mut k,
                "q",
                &spinner,
                &["messaging:receive", "messaging:send", "process:lookup"],
                "",
            );
            load(&mut k, "p", peer, &["messaging:receive"], "");
            load(
                &mut k,
                "g",
                &giver,
                &["time:read", "process:lookup", "messaging:receive"],
                "",
            );
            k.spawn_all().unwrap();
            let exits = k.subscribe_exits();
            let report = k.run();
            let order: Vec<String> = exits.try_iter().map(|e| e.module).collect();
            for m in ["p", "q", "g"] {
                assert_eq!(status(&report, m), ExitStatus::Exited(0), "{what}: {m}");
            }
            let p_at = order.iter().position(|m| m == "p").unwrap();
            let q_at = order.iter().position(|m| m == "q").unwrap();
            if p_at > q_at {
                failures.push(format!(
                    "{what}: p (one turn needed) ended after q, which ran {} fuel units without letting it",
                    report.process("q").unwrap().fuel_used
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
