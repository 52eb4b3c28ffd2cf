//! Tests for the lifecycle: boot phases and subsystem status, the kernel loop's
//! state machine and its statistics.

use super::*;
use InitPhase::*;

fn ok() -> SubsystemState {
    SubsystemState::Ok
}

#[test]
fn phases_run_in_order() {
    let mut phase = PreInit;
    let mut seen = vec![phase.clone()];
    while let Some(next) = phase.next() {
        seen.push(next.clone());
        phase = next;
    }
    assert_eq!(seen, InitPhase::ORDER.to_vec());
    assert_eq!(Failed("x".into()).next(), None);
    assert!(Complete.is_final() && Failed(String::new()).is_final());
    assert!(!PostInit.is_final());
}

#[test]
fn a_clean_boot_completes() {
    let mut boot = Boot::new();
    assert_eq!(boot.phase(), &PreInit);
    boot.record("config", PreInit, ok()).unwrap();
    assert_eq!(boot.advance(), Ok(CoreInit));
    boot.begin(CoreInit).unwrap(); // already there
    boot.record("scheduler", CoreInit, ok()).unwrap();
    boot.begin(DriverInit).unwrap();
    boot.record_with_detail("clock", DriverInit, ok(), "virtual")
        .unwrap();
    boot.record(
        "net",
        DriverInit,
        SubsystemState::Skipped("no capability".into()),
    )
    .unwrap();
    assert_eq!(boot.advance(), Ok(ServiceInit));
    assert_eq!(boot.advance(), Ok(PostInit)); // a phase may be empty
    assert!(!boot.is_complete());
    assert_eq!(boot.advance(), Ok(Complete));
    assert!(boot.is_complete() && !boot.is_failed());
    assert_eq!(boot.advance(), Err(InitError::Finished(Complete)));
    let report = boot.to_string();
    assert!(report.starts_with("init complete\n"), "{report}");
    assert!(report.contains("clock"), "{report}");
    assert!(report.contains("ok (virtual)"), "{report}");
    assert!(report.contains("skipped: no capability"), "{report}");
    assert_eq!(boot.report().subsystems.len(), 4);
}

#[test]
fn out_of_order_phases_are_refused() {
    let mut boot = Boot::new();
    let refused = boot.begin(DriverInit);
    assert_eq!(
        refused,
        Err(InitError::OutOfOrder {
            current: PreInit,
            asked: DriverInit
        })
    );
    assert_eq!(boot.phase(), &PreInit);
    boot.begin(CoreInit).unwrap();
    assert!(boot.begin(PreInit).is_err(), "no going back");
    assert!(boot.begin(Complete).is_err());
    assert!(boot.begin(Failed("by hand".into())).is_err());
    // Closed phases cannot be written; later ones only planned.
    assert!(matches!(
        boot.record("config", PreInit, ok()),
        Err(InitError::OutOfOrder { .. })
    ));
    assert!(boot.record("fs", DriverInit, ok()).is_err());
    boot.record("fs", DriverInit, SubsystemState::Pending)
        .unwrap();
    assert!(boot.record("x", Complete, SubsystemState::Pending).is_err());
    assert_eq!(
        boot.record("fs", CoreInit, ok()),
        Err(InitError::WrongPhase {
            subsystem: "fs".into(),
            recorded: DriverInit,
            asked: CoreInit
        })
    );
    assert_eq!(boot.phase(), &CoreInit);
}

#[test]
fn a_pending_subsystem_holds_the_phase() {
    let mut boot = Boot::new();
    boot.record("config", PreInit, SubsystemState::Pending)
        .unwrap();
    assert_eq!(
        boot.advance(),
        Err(InitError::Unfinished {
            subsystem: "config".into(),
            phase: PreInit
        })
    );
    assert_eq!(boot.phase(), &PreInit);
    boot.record("config", PreInit, ok()).unwrap();
    assert_eq!(boot.advance(), Ok(CoreInit));
    assert_eq!(boot.report().subsystems.len(), 1, "updated, not added");
}

#[test]
fn a_failure_stops_the_boot_naming_subsystem_and_phase() {
    let mut boot = Boot::new();
    boot.advance().unwrap();
    boot.record("scheduler", CoreInit, ok()).unwrap();
    boot.record("registry", ServiceInit, SubsystemState::Pending)
        .unwrap();
    boot.advance().unwrap();
    boot.record("fs", DriverInit, ok()).unwrap();
    boot.record(
        "clock",
        DriverInit,
        SubsystemState::Failed("no monotonic source".into()),
    )
    .unwrap();
    boot.record("db", DriverInit, SubsystemState::Failed("locked".into()))
        .unwrap();
    let error = boot.advance().unwrap_err();
    assert_eq!(
        error,
        InitError::SubsystemFailed {
            subsystem: "clock".into(),
            phase: DriverInit,
            reason: "no monotonic source".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "init failed in DriverInit: subsystem `clock` — no monotonic source"
    );
    assert!(boot.is_failed() && !boot.is_complete());
    let Failed(reason) = boot.phase() else {
        panic!("not failed: {:?}", boot.phase())
    };
    assert!(reason.contains("`clock`") && reason.contains("DriverInit"));
    // Final: nothing moves any more.
    assert!(matches!(boot.advance(), Err(InitError::Finished(_))));
    assert!(matches!(
        boot.begin(ServiceInit),
        Err(InitError::Finished(_))
    ));
    assert!(matches!(
        boot.record("fs", DriverInit, ok()),
        Err(InitError::Finished(_))
    ));
    let report = boot.report().to_string();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "init failed in DriverInit: subsystem `clock` — no monotonic source"
    );
    assert_eq!(lines.len(), 1 + 5, "{report}");
    assert!(report.contains("FAILED: locked"), "{report}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ServiceInit") && l.contains("pending")),
        "{report}"
    );
    let (status, why) = boot.report().failure().unwrap();
    assert_eq!(
        (status.name.as_str(), why),
        ("clock", "no monotonic source")
    );
    assert_eq!(boot.report().get("fs").unwrap().state, SubsystemState::Ok);
}

#[test]
fn loop_transitions_follow_the_state_machine() {
    use LoopState::*;
    let all = [Initializing, Running, Pausing, ShuttingDown, Stopped];
    let legal = [
        (Initializing, Running),
        (Initializing, ShuttingDown),
        (Running, Pausing),
        (Running, ShuttingDown),
        (Pausing, Running),
        (Pausing, ShuttingDown),
        (ShuttingDown, Stopped),
    ];
    for from in all {
        for to in all {
            let mut state = from;
            let result = state.transition(to);
            if legal.contains(&(from, to)) {
                assert_eq!(result, Ok(()), "{from:?} -> {to:?}");
                assert_eq!(state, to);
            } else {
                assert_eq!(
                    result,
                    Err(LoopError::IllegalTransition { from, to }),
                    "{from:?} -> {to:?}"
                );
                assert_eq!(state, from, "an illegal move changes nothing");
            }
        }
    }
    let mut state = Initializing;
    for to in [Running, Pausing, Running, ShuttingDown, Stopped] {
        state.transition(to).unwrap();
    }
    assert_eq!(
        state.transition(Running).unwrap_err().to_string(),
        "kernel loop: cannot go from Stopped to Running"
    );
}

#[test]
fn stats_count_each_kind() {
    let events = [
        KernelEvent::Tick,
        KernelEvent::Tick,
        KernelEvent::Spawned {
            pid: 1,
            module: "ping".into(),
        },
        KernelEvent::Exited {
            pid: 1,
            module: "ping".into(),
            code: 4001,
        },
        KernelEvent::Message {
            from: 1,
            to: 2,
            message_type: 7,
        },
        KernelEvent::Message {
            from: 2,
            to: 1,
            message_type: 7,
        },
        KernelEvent::Message {
            from: 2,
            to: 1,
            message_type: 8,
        },
        KernelEvent::Syscall { pid: 1, number: 3 },
        KernelEvent::DriverEvent {
            driver: "clock".into(),
            detail: "tick".into(),
        },
        KernelEvent::ShutdownRequested,
        KernelEvent::ConfigChanged {
            key: "log.level".into(),
        },
    ];
    let mut stats = LoopStats::default();
    for event in &events {
        stats.record(event);
    }
    assert_eq!(
        stats,
        LoopStats {
            ticks: 2,
            spawned: 1,
            exited: 1,
            messages: 3,
            syscalls: 1,
            driver_events: 1,
            shutdown_requests: 1,
            config_changes: 1,
        }
    );
    assert_eq!(stats.total(), events.len() as u64);
    assert_eq!(
        stats.to_string(),
        "ticks 2, spawned 1, exited 1, messages 3, syscalls 1, \
         driver events 1, shutdown requests 1, config changes 1"
    );
}
