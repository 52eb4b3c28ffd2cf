//! Capabilities: guests can use only handles they were given, delegation
//! attenuates, revocation cascades, and every step is audited.

use estalogic_kernel::core::capabilities_engine::AuditKind;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::{load_testkit, load_testkit_with};

#[test]
fn a_guest_cannot_use_a_handle_it_was_not_given() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_testkit(&mut kernel, "forger", "forger", "");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("forger").unwrap().status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn a_delegated_capability_works_until_revoked_and_never_after() {
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        let lookup = r#""process:lookup""#;
        let receive = r#""messaging:receive""#;
        load_testkit_with(&mut kernel, "victim", "victim", &[receive]);
        load_testkit_with(
            &mut kernel,
            "delegator",
            "delegator",
            &[
                lookup,
                receive,
                r#"{"name":"messaging:send","scope":"victim,delegatee"}"#,
            ],
        );
        // The delegatee may only talk to the delegator on its own.
        load_testkit_with(
            &mut kernel,
            "delegatee",
            "delegatee",
            &[
                lookup,
                receive,
                r#"{"name":"messaging:send","scope":"delegator"}"#,
            ],
        );
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        for name in ["delegator", "delegatee"] {
            let process = report.process(name).unwrap();
            assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
        }
        // Exactly one message reached the victim: the one sent before the
        // revocation.
        assert_eq!(
            report.process("victim").unwrap().status,
            ExitStatus::Exited(1)
        );

        let audit = kernel.take_audit();
        let count = |kind: AuditKind| audit.iter().filter(|e| e.kind == kind).count();
        assert_eq!(count(AuditKind::Granted), 7, "one per manifest capability");
        assert_eq!(count(AuditKind::Delegated), 1);
        assert!(count(AuditKind::Revoked) >= 1);
        assert!(
            count(AuditKind::Denied) >= 3,
            "widening, out of scope, after revoke"
        );
    }
}

#[test]
fn exported_tokens_are_verified_on_every_use() {
    use estalogic_kernel::core::capabilities_engine::{CapError, Token};
    let mut kernel = Kernel::builder().build().unwrap();
    load_testkit_with(&mut kernel, "holder", "victim", &[r#""messaging:receive""#]);
    let pid = kernel.spawn("holder").unwrap();
    let (handle, info) = kernel.capabilities_of(pid)[0].clone();
    let token = kernel.export_capability(pid, handle).unwrap();
    let text = token.to_string();
    let parsed = Token::parse(&text).unwrap();
    assert_eq!(kernel.redeem_capability(&parsed).unwrap().id, info.id);
    // Flip one hex digit of the MAC: forged.
    let mut forged = text.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = Token::parse(std::str::from_utf8(&forged).unwrap()).unwrap();
    assert_eq!(
        kernel.redeem_capability(&forged).unwrap_err(),
        CapError::BadToken
    );
    // When the holder exits its capabilities are revoked; the token dies.
    kernel.run();
    assert!(kernel.redeem_capability(&parsed).is_err());
}

#[test]
fn a_guest_can_close_a_handle_and_a_bad_length_is_an_invalid_argument() {
    // Exit code: the number of the first check that failed, or 0.
    let wat = r#"(module
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "cap_inspect" (func $inspect (param i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $copy i32)
    (if (i64.ne (call $inspect (i32.const 1) (i32.const 64) (i32.const -1)) (i64.const -1001))
      (then (return (i32.const 1))))
    (local.set $copy (i32.wrap_i64
      (call $delegate (i32.const 1) (call $self) (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))))
    (if (i32.le_s (local.get $copy) (i32.const 1)) (then (return (i32.const 2))))
    (if (i64.ne (call $revoke (local.get $copy) (i32.const 2)) (i64.const 1))
      (then (return (i32.const 3))))
    (if (i64.ne (call $inspect (local.get $copy) (i32.const 64) (i32.const 256)) (i64.const -2003))
      (then (return (i32.const 4))))
    (if (i64.ne (call $revoke (i32.const 1) (i32.const 3)) (i64.const -1001))
      (then (return (i32.const 5))))
    (if (i64.lt_s (call $inspect (i32.const 1) (i32.const 64) (i32.const 256)) (i64.const 0))
      (then (return (i32.const 6))))
    (i32.const 0)))"#;
    let mut kernel = Kernel::builder().build().unwrap();
    estalogic_tests::load_wat(&mut kernel, "closer", wat, "normal");
    kernel.spawn("closer").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("closer").unwrap().status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn a_token_of_one_deterministic_kernel_is_not_valid_in_another() {
    // The MAC key is random in every mode: a token cannot be rebuilt from
    // its id by someone who knows the source.
    let boot = || {
        let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
        estalogic_tests::load_wat(
            &mut kernel,
            "holder",
            r#"(module (memory (export "memory") 1) (func (export "run")))"#,
            "normal",
        );
        let pid = kernel.spawn("holder").unwrap();
        (kernel, pid)
    };
    let (first, pid) = boot();
    let (second, _) = boot();
    let handle = first.capabilities_of(pid)[0].0;
    let token = first.export_capability(pid, handle).unwrap();
    assert!(first.redeem_capability(&token).is_ok());
    assert_eq!(
        second.redeem_capability(&token).unwrap_err(),
        estalogic_kernel::core::capabilities_engine::CapError::BadToken
    );
}

#[test]
fn a_delegated_scope_is_bounded_in_bytes_and_names() {
    // Handle 1 (messaging:send, every module) delegated to itself with a
    // scope of 32 names (allowed), 33 names, and 1,025 bytes in one name
    // (both INVALID_ARGUMENT): what one capability holds in kernel memory
    // is bounded, so a table of them is.
    let names = |count: usize| {
        (0..count)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let cases = [
        (names(32), true),
        (names(33), false),
        ("x".repeat(1_024), true),
        ("x".repeat(1_025), false),
    ];
    for (scope, allowed) in cases {
        let wat = format!(
            r#"(module
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{scope}")
  (func (export "run") (result i32)
    (i32.wrap_i64 (call $delegate (i32.const 1) (call $self) (i32.const 0) (i64.const -1) (i64.const -1)
                                  (i32.const 0) (i32.const {len})))))"#,
            len = scope.len()
        );
        let mut kernel = Kernel::builder().build().unwrap();
        estalogic_tests::load_wat(&mut kernel, "delegator", &wat, "normal");
        kernel.spawn("delegator").unwrap();
        let report = kernel.run();
        let status = &report.process("delegator").unwrap().status;
        if allowed {
            // The new handle's number (the table held 5).
            assert_eq!(*status, ExitStatus::Exited(6), "{} bytes", scope.len());
        } else {
            assert_eq!(*status, ExitStatus::Exited(-1001), "{} bytes", scope.len());
        }
    }
}

#[test]
fn one_process_denied_over_and_over_cannot_flood_the_audit_trail() {
    // 3,000 denied clock reads: the first 1,000 denials are kept one by
    // one, the rest are counted in one event; everyone else's events stay.
    let wat = r#"(module
      (import "estalogic" "clock_now" (func $now (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (local $i i32)
        (loop
          (drop (call $now))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 3000))))))"#;
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(
            estalogic_tests::manifest("denied", "run", &[], "normal"),
            wat.as_bytes(),
            std::path::Path::new("denied"),
        )
        .unwrap();
    estalogic_tests::load_wat(
        &mut kernel,
        "granted",
        "(module (func (export \"run\")))",
        "normal",
    );
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let denied = report.process("denied").unwrap().pid;
    let granted = report.process("granted").unwrap().pid;
    let audit = kernel.take_audit();
    let denials: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == AuditKind::Denied && e.holder == denied)
        .collect();
    assert_eq!(denials.len(), 1_001, "1,000 kept and one count");
    let summary = denials.last().unwrap().detail.to_string();
    assert!(summary.contains("2000 more denials"), "{summary}");
    assert!(
        audit
            .iter()
            .any(|e| e.kind == AuditKind::Granted && e.holder == granted),
        "the other process's grants are kept"
    );
}

#[test]
fn broadcasting_grants_no_send_to_any_one_process() {
    // `messaging:broadcast` reaches every process but is not a send to
    // any one of them: with `messaging:send` scoped to `a`, a send to `b`
    // is refused (it was allowed: broadcast granted WRITE on every
    // channel, found by a probe), while a broadcast still reaches `b`.
    let sender = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (func (export "run") (result i32)
    (if (i64.ne (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0))
                (i64.const -2002))
      (then (return (i32.const 1))))
    (if (i64.ne (call $broadcast (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0)) (i64.const 1))
      (then (return (i32.const 2))))
    (i32.const 0)))"#;
    // Exits with the type of the one message it gets (the broadcast's 6).
    let receiver = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i64.lt_s (call $receive (i32.const 0) (i64.const 1000) (i32.const 0) (i32.const 64) (i32.const 0)) (i64.const 0))
      (then (return (i32.const -1))))
    (i32.load (i32.const 4))))"#;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        let load = |kernel: &mut Kernel, name: &str, wat: &str, caps: &str| {
            let manifest = estalogic_kernel::Manifest::parse(&format!(
                r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32",
                    "capabilities_required":[{caps}]}}"#
            ))
            .unwrap();
            kernel
                .load_module(manifest, wat.as_bytes(), std::path::Path::new(name))
                .unwrap();
        };
        load(
            &mut kernel,
            "sender",
            sender,
            r#""process:lookup","messaging:broadcast",{"name":"messaging:send","scope":"a"}"#,
        );
        load(&mut kernel, "b", receiver, r#""messaging:receive""#);
        kernel.spawn("b").unwrap();
        kernel.spawn("sender").unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("sender").unwrap().status,
            ExitStatus::Exited(0),
            "deterministic {deterministic}"
        );
        assert_eq!(report.process("b").unwrap().status, ExitStatus::Exited(6));
    }
}
