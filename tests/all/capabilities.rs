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
