//! Module names, `lookup` and restarts with several processes of one
//! module (the thirty-fifth probe round).
//!
//! docs/ABI.md row 4 (`lookup`): "pid of the running process of a module
//! name (`process:lookup`); with several processes of a module alive, the
//! one holding the name: the first spawned while it was free, then, when
//! the holder ends, the oldest of the others (a supervisor or system
//! restart that replaces a holder still on its way out gives the name to
//! the replacement)".
//!
//! `Kernel::spawn`: "it becomes the process lookup finds for that name if
//! none is registered yet, or else when the registered one and the
//! module's processes spawned before it have ended (a supervisor or system
//! restart's replacement of a holder still on its way out takes the name
//! over instead)".
//!
//! The scenarios: a module `svc` with several processes that answer a
//! query (their pid, what `lookup("svc")` says to them, a tag), quit on
//! request and trap on request; a checker `chk` that makes some of them
//! trap (each restart action of the ladder), then drains the module through
//! `lookup`: it asks the looked-up pid, tells it to quit, waits until it
//! has gone, and looks up again, until `lookup` finds nothing. Every
//! process of `svc` must be drained that way (none left for the deadlock
//! stop), in the order the docs give.

use estalogic_abi::{ErrorCode, Pid};
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Kernel, ProcessReport, RunReport};
use estalogic_tests::{Script, describe, load_wat_with, neg, run_and_stop_after};
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use RestartAction::*;

const IMPORTS: &str = r#"
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
"#;

const QUERY: u32 = 0x3000;
const ANSWER: u32 = 0x3001;
const QUIT: u32 = 0x3002;
const TRAP: u32 = 0x3003;
const SVC_TAG: u32 = 0x5e5c;
/// Answer as to QUERY, then return 0.
const BYE: u32 = 0x3005;

/// A process of `svc`: answers QUERY with its pid, what `lookup("svc")`
/// says, and a tag; returns 0 on QUIT; traps on TRAP. `spin`: polls its
/// mailbox and spins between polls (so it is running, on another worker,
/// when a restart stops it) instead of waiting in `receive`.
fn svc(spin: bool) -> String {
    let (timeout, between) = if spin {
        (
            "0",
            r#"(local.set $i (i32.const 3000))
      (loop $s (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $s (local.get $i)))"#,
        )
    } else {
        ("-1", "")
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "svc")
  (func (export "run") (result i32) (local $r i64) (local $t i32) (local $i i32)
    (loop $top
      (local.set $r (call $receive (i32.const 0) (i64.const {timeout}) (i32.const 64) (i32.const 128) (i32.const 64)))
      (if (i64.ge_s (local.get $r) (i64.const 0))
        (then
          (local.set $t (i32.load (i32.const 68)))
          (if (i32.or (i32.eq (local.get $t) (i32.const {QUERY})) (i32.eq (local.get $t) (i32.const {BYE})))
            (then
              (i64.store (i32.const 256) (call $self))
              (i64.store (i32.const 264) (call $lookup (i32.const 0) (i32.const 3)))
              (i32.store (i32.const 272) (i32.const {SVC_TAG}))
              (i32.store (i32.const 276) (i32.wrap_i64 (call $handles (i32.const 1024) (i32.const 64))))
              (drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88))
                (i32.const {ANSWER}) (i32.const 0) (i32.const 256) (i32.const 24)))
              (if (i32.eq (local.get $t) (i32.const {BYE})) (then (return (i32.const 0))))))
          (if (i32.eq (local.get $t) (i32.const {QUIT})) (then (return (i32.const 0))))
          (if (i32.eq (local.get $t) (i32.const {TRAP})) (then unreachable))))
      {between}
      (br $top))
    (i32.const 0)))"#
    )
}

/// A supervisor: counts the exit notices it takes; on QUIT returns the
/// count (plus 100 so that 0 notices is not confused with a plain exit).
fn sup() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $r i64) (local $n i32)
    (loop $top
      (local.set $r (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
      (if (i64.ge_s (local.get $r) (i64.const 0))
        (then
          (if (i32.eq (i32.load (i32.const 68)) (i32.const 0xFF01))
            (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
          (if (i32.eq (i32.load (i32.const 68)) (i32.const {QUIT}))
            (then (return (i32.add (local.get $n) (i32.const 100)))))))
      (br $top))
    (i32.const 0)))"#
    )
}

/// Waits `ms` (a receive of a type nobody sends).
fn sleep(ms: u64) -> String {
    format!(
        "(drop (call $receive (i32.const 0x7777) (i64.const {ms}) (i32.const 512) (i32.const 600) (i32.const 64)))"
    )
}

/// What the checker does before draining.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Tell this pid to trap (a stale pid: the send fails, ignored).
    Trap(Pid),
    /// Tell the current holder to trap.
    TrapHolder,
    /// Wait this long.
    Sleep(u64),
    /// Ask the holder: it must answer, from the looked-up pid, and see
    /// itself as the holder.
    Probe,
}

/// The checker: `steps`, then the drain; returns how many it drained, or
/// an error code >= 1000 (see the body). Then quits `sup` if `quit_sup`.
fn chk(steps: &[Step], quit_sup: bool) -> String {
    let not_found = neg(ErrorCode::NOT_FOUND);
    let mut body = String::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Trap(pid) => body.push_str(&format!(
                "(drop (call $send (i64.const {}) (i32.const {TRAP}) (i32.const 0) (i32.const 0) (i32.const 0)))\n",
                pid.to_u64() as i64
            )),
            Step::TrapHolder => body.push_str(&format!(
                "(drop (call $send (call $lookup (i32.const 0) (i32.const 3)) (i32.const {TRAP}) (i32.const 0) (i32.const 0) (i32.const 0)))\n"
            )),
            Step::Sleep(ms) => body.push_str(&sleep(*ms)),
            Step::Probe => body.push_str(&format!(
                "(local.set $p (call $lookup (i32.const 0) (i32.const 3)))
    (if (i64.lt_s (local.get $p) (i64.const 0)) (then (return (i32.const {}))))
    (local.set $e (i32.const {}))
    (if (call $ask (local.get $p)) (then (return (i32.add (local.get $e) (global.get $why)))))\n",
                2000 + n * 100,
                3000 + n * 100
            )),
        }
    }
    let quit = if quit_sup {
        format!(
            "{}\n(drop (call $send (call $lookup (i32.const 8) (i32.const 3)) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))",
            sleep(30)
        )
    } else {
        String::new()
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "svc")
  (data (i32.const 8) "sup")
  (global $why (mut i32) (i32.const 0))
  ;; Calls $p with QUERY; 0 if the answer is right, else 1 with $why set.
  (func $ask (param $p i64) (result i32) (local $r i64)
    (local.set $r (call $send_receive (local.get $p) (i64.const 0) (i32.const {QUERY}) (i32.const 0)
      (i32.const 0) (i32.const 0) (i64.const -1) (i64.const 3000) (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const 24)) (then (global.set $why (i32.const 1)) (return (i32.const 1))))
    (if (i64.ne (i64.load (i32.const 72)) (local.get $p)) (then (global.set $why (i32.const 2)) (return (i32.const 1))))
    (if (i64.ne (i64.load (i32.const 128)) (local.get $p)) (then (global.set $why (i32.const 3)) (return (i32.const 1))))
    (if (i64.ne (i64.load (i32.const 136)) (local.get $p)) (then (global.set $why (i32.const 4)) (return (i32.const 1))))
    (if (i32.ne (i32.load (i32.const 144)) (i32.const {SVC_TAG})) (then (global.set $why (i32.const 5)) (return (i32.const 1))))
    (i32.const 0))
  (func (export "run") (result i32) (local $p i64) (local $q i64) (local $r i64) (local $n i32) (local $e i32)
    {body}
    (block $done
      (loop $next
        (local.set $p (call $lookup (i32.const 0) (i32.const 3)))
        (br_if $done (i64.eq (local.get $p) (i64.const {not_found})))
        (if (i64.lt_s (local.get $p) (i64.const 0)) (then (return (i32.const 1001))))
        (if (i64.eq (local.get $p) (local.get $q)) (then (return (i32.const 1007))))
        (if (call $ask (local.get $p)) (then (return (i32.add (i32.const 1010) (global.get $why)))))
        (drop (call $send (local.get $p) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))
        ;; A call after the QUIT is failed back once it has gone.
        (local.set $r (call $send_receive (local.get $p) (i64.const 0) (i32.const {QUERY}) (i32.const 0)
          (i32.const 0) (i32.const 0) (i64.const -1) (i64.const 3000) (i32.const 64) (i32.const 128) (i32.const 64)))
        (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 1020))))
        (if (i64.eq (local.get $r) (i64.const {timeout})) (then (return (i32.const 1021))))
        (local.set $q (local.get $p))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $n) (i32.const 900)))))
    {quit}
    (local.get $n)))"#,
        timeout = neg(ErrorCode::TIMEOUT),
    )
}

fn build(deterministic: bool, workers: usize) -> Kernel {
    Kernel::builder()
        .deterministic(deterministic)
        .workers(workers)
        .build()
        .expect("the kernel builds")
}

/// Runs `kernel` on a thread, collecting its exit reports; panics if the
/// run does not return within `secs`.
fn run_watched(mut kernel: Kernel, secs: u64) -> (Kernel, RunReport, Vec<ProcessReport>) {
    let exits = kernel.subscribe_exits();
    let shutdown = kernel.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = kernel.run();
        let _ = tx.send((kernel, report));
    });
    let (kernel, report) = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(done) => done,
        Err(_) => {
            shutdown.request();
            let seen = match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((_, report)) => describe(&report),
                Err(_) => "the run did not end after a shutdown request either".to_string(),
            };
            panic!(
                "the run did not return within {secs} s (a hang); after a shutdown request:\n{seen}"
            )
        }
    };
    let heard: Vec<ProcessReport> = exits.try_iter().collect();
    (kernel, report, heard)
}

/// Exit reports are exactly-once: one per process, the same as the run
/// report's, no pid twice.
fn exactly_once(report: &RunReport, heard: &[ProcessReport], what: &str) {
    let pids: HashSet<Pid> = report.processes.iter().map(|p| p.pid).collect();
    assert_eq!(
        pids.len(),
        report.processes.len(),
        "{what}: a pid reported twice\n{}",
        describe(report)
    );
    let heard_pids: Vec<Pid> = heard.iter().map(|p| p.pid).collect();
    let reported: Vec<Pid> = report.processes.iter().map(|p| p.pid).collect();
    assert_eq!(
        heard_pids,
        reported,
        "{what}: subscribe_exits differs from the report\n{}",
        describe(report)
    );
}

fn status_of(report: &RunReport, pid: Pid) -> Option<ExitStatus> {
    report
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .map(|p| p.status.clone())
}

/// The svc processes drained (exited 0), in the order they exited.
fn drained(report: &RunReport) -> Vec<Pid> {
    report
        .processes
        .iter()
        .filter(|p| p.module == "svc" && p.status == ExitStatus::Exited(0))
        .map(|p| p.pid)
        .collect()
}

/// One scenario: `n` processes of `svc` (spawned with `Kernel::spawn`),
/// supervised by `sup` if `supervised`; `chk` traps the process numbers
/// in `traps` (indices into the spawned pids), one at a time, under a
/// scripted policy answering `actions`.
struct Outcome {
    report: RunReport,
    spawned: Vec<Pid>,
    chk_code: Option<ExitStatus>,
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    deterministic: bool,
    workers: usize,
    n: usize,
    spin: bool,
    supervised: bool,
    traps: &[usize],
    actions: &[RestartAction],
    what: &str,
) -> Outcome {
    let mut k = build(deterministic, workers);
    k.set_restart_policy(Script::boxed(actions));
    let extra = if supervised {
        r#""restart":"on_failure","supervisor":"sup""#
    } else {
        r#""restart":"on_failure""#
    };
    load_wat_with(&mut k, "svc", &svc(spin), extra);
    if supervised {
        load_wat_with(&mut k, "sup", &sup(), "");
        k.spawn("sup").unwrap();
    }
    let spawned: Vec<Pid> = (0..n).map(|_| k.spawn("svc").unwrap()).collect();
    let mut steps = vec![Step::Probe];
    for &t in traps {
        steps.push(if t == HOLDER {
            Step::TrapHolder
        } else {
            Step::Trap(spawned[t])
        });
        steps.push(Step::Sleep(20));
        steps.push(Step::Probe);
    }
    load_wat_with(&mut k, "chk", &chk(&steps, supervised), "");
    let chk_pid = k.spawn("chk").unwrap();
    let (_k, report, heard) = run_watched(k, if spin { 8 } else { 20 });
    exactly_once(&report, &heard, what);
    // Every process of svc was drained or stopped/trapped as planned: none
    // left over for the deadlock stop.
    for p in report.processes.iter().filter(|p| p.module == "svc") {
        assert!(
            !matches!(p.status, ExitStatus::Stopped(code) if code == ErrorCode::DEADLOCKED),
            "{what}: svc {} was never found through lookup while alive\n{}",
            p.pid,
            describe(&report)
        );
    }
    let chk_code = status_of(&report, chk_pid);
    Outcome {
        report,
        spawned,
        chk_code,
    }
}

/// The chk process's final status: the last chk in the report (a system
/// restart replaces it).
fn last_chk(report: &RunReport) -> ExitStatus {
    report
        .processes
        .iter()
        .rfind(|p| p.module == "chk")
        .map(|p| p.status.clone())
        .expect("chk ran")
}

fn restart_new_pids(report: &RunReport) -> Vec<Pid> {
    report.restarts.iter().filter_map(|r| r.new_pid).collect()
}

/// In `traps`: whoever holds the name at the time.
const HOLDER: usize = usize::MAX;

const CONFIGS: [(bool, usize); 3] = [(true, 1), (false, 1), (false, 2)];

/// Same state, clean state, reload: a restart of a process that does not
/// hold the name leaves the holder alone (ABI row 4: the name changes
/// hands only "when the holder ends"). The drain then meets the first
/// spawned, the third, and the restarted second last (the newest).
#[test]
fn restarting_a_non_holder_keeps_the_holder() {
    for (det, workers) in CONFIGS {
        for action in [RestartSameState, RestartCleanState, ReloadModule] {
            let what = format!("{action:?} of a non-holder, det {det}, {workers} workers");
            let out = scenario(det, workers, 3, false, true, &[1], &[action], &what);
            let report = &out.report;
            assert_eq!(
                out.chk_code,
                Some(ExitStatus::Exited(3)),
                "{what}: the checker\n{}",
                describe(report)
            );
            let new = restart_new_pids(report);
            assert_eq!(new.len(), 1, "{what}\n{}", describe(report));
            assert_eq!(
                drained(report),
                vec![out.spawned[0], out.spawned[2], new[0]],
                "{what}: holder order\n{}",
                describe(report)
            );
            // sup heard 4 exits: the trap and three quits.
            assert_eq!(
                report
                    .processes
                    .iter()
                    .find(|p| p.module == "sup")
                    .map(|p| p.status.clone()),
                Some(ExitStatus::Exited(104)),
                "{what}: exit notices to the supervisor\n{}",
                describe(report)
            );
        }
    }
}

/// A restart (same, clean, reload) of the holder: the holder ended, so
/// "when the holder ends, the oldest of the others" takes the name; the
/// replacement (newest) is last.
#[test]
fn restarting_the_holder_passes_the_name_to_the_oldest_other() {
    for (det, workers) in CONFIGS {
        for action in [RestartSameState, RestartCleanState, ReloadModule] {
            let what = format!("{action:?} of the holder, det {det}, {workers} workers");
            let out = scenario(det, workers, 3, false, true, &[0], &[action], &what);
            let report = &out.report;
            assert_eq!(
                out.chk_code,
                Some(ExitStatus::Exited(3)),
                "{what}: the checker\n{}",
                describe(report)
            );
            let new = restart_new_pids(report);
            assert_eq!(
                drained(report),
                vec![out.spawned[1], out.spawned[2], new[0]],
                "{what}: holder order\n{}",
                describe(report)
            );
        }
    }
}

/// Supervisor and system restarts of a module with three processes: one
/// new process each; exactly one holder afterwards (each drained process
/// sees itself as the holder, and the drain finds exactly three); the
/// failed module's replacement is started first, so with every old
/// process parked it takes the free name.
#[test]
fn supervisor_and_system_restarts_leave_one_holder_and_every_process_reachable() {
    for (det, workers) in CONFIGS {
        for action in [RestartSupervisor, RestartSystem] {
            for trapped in [0usize, 1, 2] {
                let what = format!(
                    "{action:?} after svc #{trapped} trapped, det {det}, {workers} workers"
                );
                let out = scenario(det, workers, 3, false, true, &[trapped], &[action], &what);
                let report = &out.report;
                assert_eq!(
                    last_chk(report),
                    ExitStatus::Exited(3),
                    "{what}: the checker\n{}",
                    describe(report)
                );
                let drained = drained(report);
                assert_eq!(drained.len(), 3, "{what}\n{}", describe(report));
                for old in &out.spawned {
                    assert!(
                        !drained.contains(old),
                        "{what}: an old process survived the restart\n{}",
                        describe(report)
                    );
                }
                let new = restart_new_pids(report);
                assert_eq!(
                    drained.first(),
                    new.first(),
                    "{what}: the failed module's replacement, started first into a free name\n{}",
                    describe(report)
                );
            }
        }
    }
}

/// Two workers, processes that are running when a restart stops them
/// (spinning between polls): the holder is "still on its way out", and
/// its replacement must take the name. Repeated, every action, several
/// traps in a row (a storm): the drain must find every live process of
/// svc through lookup, each answering as the holder. (A system restart
/// restarts the checker too, which replays its script: a plan with one
/// system restart among other actions keeps the storm bounded.)
#[test]
fn restart_storms_on_two_workers_with_running_holders() {
    let mixed = [
        RestartSameState,
        RestartSystem,
        RestartCleanState,
        RestartSupervisor,
        ReloadModule,
        RestartSameState,
        RestartSupervisor,
        RestartCleanState,
        RestartSameState,
        RestartSameState,
        RestartSameState,
        RestartSameState,
    ];
    let plans: Vec<(String, Vec<usize>, Vec<RestartAction>)> = vec![
        (
            "same".into(),
            vec![HOLDER, 1, HOLDER, 2, HOLDER],
            vec![RestartSameState; 5],
        ),
        (
            "clean".into(),
            vec![HOLDER, 1, HOLDER, 2, HOLDER],
            vec![RestartCleanState; 5],
        ),
        (
            "reload".into(),
            vec![HOLDER, 1, HOLDER, 2, HOLDER],
            vec![ReloadModule; 5],
        ),
        (
            "supervisor".into(),
            vec![HOLDER, 1, HOLDER, 2, HOLDER],
            vec![RestartSupervisor; 5],
        ),
        ("system".into(), vec![0, 1, 2], vec![RestartSystem; 3]),
        (
            "mixed".into(),
            vec![HOLDER, HOLDER, 1, HOLDER, HOLDER],
            mixed.to_vec(),
        ),
    ];
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for (name, traps, actions) in &plans {
            round += 1;
            let what = format!("round {round}: storm {name}, spinning svc, 2 workers");
            let out = scenario(false, 2, 3, true, true, traps, actions, &what);
            let report = &out.report;
            let code = last_chk(report);
            let live_svc_at_end = drained(report).len();
            assert!(
                matches!(code, ExitStatus::Exited(c) if (c as usize) == live_svc_at_end && c >= 3),
                "{what}: checker ended {code:?}, {live_svc_at_end} drained\n{}",
                describe(report)
            );
            assert!(
                report.restarts.iter().all(|r| r.action != GiveUp),
                "{what}: the plan ran out\n{}",
                describe(report)
            );
        }
    }
}

/// Deterministic mode: the same app twice gives identical reports.
#[test]
fn deterministic_restart_storms_repeat_exactly() {
    for action in [RestartSameState, RestartSupervisor, RestartSystem] {
        let run = || {
            let out = scenario(
                true,
                1,
                4,
                false,
                true,
                &[1, 0, 3],
                &[action, action, action],
                "det",
            );
            describe(&out.report)
        };
        let a = run();
        let b = run();
        assert_eq!(a, b, "{action:?}: two deterministic runs differ");
    }
}

/// Several runs of one kernel: the second run's processes of `svc` (spawned
/// after the first run drained the module) are all found through lookup,
/// first-spawned first; nothing of the first run's names is left.
#[test]
fn a_second_run_starts_with_no_stale_name() {
    for (det, workers) in CONFIGS {
        let what = format!("det {det}, {workers} workers");
        let mut k = build(det, workers);
        k.set_restart_policy(Script::boxed(&[RestartSystem, RestartSystem]));
        load_wat_with(&mut k, "svc", &svc(false), r#""restart":"on_failure""#);
        let a: Vec<Pid> = (0..3).map(|_| k.spawn("svc").unwrap()).collect();
        load_wat_with(
            &mut k,
            "chk",
            &chk(&[Step::Trap(a[2]), Step::Sleep(10), Step::Probe], false),
            "",
        );
        k.spawn("chk").unwrap();
        let (mut k, r1, heard) = run_watched(k, 20);
        exactly_once(&r1, &heard, &what);
        assert_eq!(
            last_chk(&r1),
            ExitStatus::Exited(3),
            "{what}\n{}",
            describe(&r1)
        );
        // Run 2: two of svc and the same checker (its trap goes to a stale
        // pid and is refused).
        let b: Vec<Pid> = (0..2).map(|_| k.spawn("svc").unwrap()).collect();
        k.spawn("chk").unwrap();
        let (_k, r2, heard) = run_watched(k, 20);
        exactly_once(&r2, &heard, &what);
        assert_eq!(
            last_chk(&r2),
            ExitStatus::Exited(2),
            "{what}: second run\n{}",
            describe(&r2)
        );
        assert_eq!(
            drained(&r2),
            b,
            "{what}: second run's holder order\n{}",
            describe(&r2)
        );
    }
}

/// `spawn_all` more than once, with a trap of the holder restarted by a
/// system restart between: every live process found through lookup.
#[test]
fn spawn_all_twice_then_system_restart() {
    for (det, workers) in CONFIGS {
        let what = format!("det {det}, {workers} workers");
        let mut k = build(det, workers);
        k.set_restart_policy(Script::boxed(&[RestartSystem]));
        load_wat_with(&mut k, "svc", &svc(false), r#""restart":"on_failure""#);
        let first = k.spawn_all().unwrap();
        let second = k.spawn_all().unwrap();
        assert_eq!((first.len(), second.len()), (1, 1));
        load_wat_with(
            &mut k,
            "chk",
            &chk(
                &[
                    Step::Probe,
                    Step::Trap(first[0]),
                    Step::Sleep(10),
                    Step::Probe,
                ],
                false,
            ),
            "",
        );
        k.spawn("chk").unwrap();
        let (_k, report, heard) = run_watched(k, 20);
        exactly_once(&report, &heard, &what);
        assert_eq!(
            last_chk(&report),
            ExitStatus::Exited(2),
            "{what}\n{}",
            describe(&report)
        );
    }
}

// ------------------------------------------------------------------ timing

/// `count` processes of one module that wait for a time given by `order`
/// (of their pid's slot index `i`, 1-based in spawn order on a fresh
/// kernel, and `count`), then exit. Returns the run's wall time.
fn exit_storm(modules: usize, per_module: usize, order: &str) -> Duration {
    let count = modules * per_module;
    let mut k = Kernel::builder()
        .deterministic(true)
        .workers(1)
        .max_processes(count as u32 + 8)
        .build()
        .expect("the kernel builds");
    let wait = match order {
        "oldest_first" => "(local.get $i)".to_string(),
        "newest_first" => format!("(i64.sub (i64.const {}) (local.get $i))", count + 1),
        "holder_last" => format!(
            "(select (i64.const {}) (local.get $i) (i64.eq (local.get $i) (i64.const 1)))",
            count + 2
        ),
        "scattered" => {
            format!("(i64.rem_u (i64.mul (local.get $i) (i64.const 7919)) (i64.const {count}))")
        }
        other => panic!("{other}"),
    };
    let guest = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i64)
    (local.set $i (i64.and (call $self) (i64.const 0xffffffff)))
    (drop (call $receive (i32.const 0x7777) {wait} (i32.const 0) (i32.const 64) (i32.const 0)))
    (i32.const 0)))"#
    );
    for m in 0..modules {
        load_wat_with(&mut k, &format!("m{m}"), &guest, "");
    }
    for m in 0..modules {
        for _ in 0..per_module {
            k.spawn(&format!("m{m}")).unwrap();
        }
    }
    let started = Instant::now();
    let (_k, report, _) = run_watched(k, 60);
    let took = started.elapsed();
    assert_eq!(report.processes.len(), count);
    took
}

/// Exits of 20,000 processes of one module, in several orders, against
/// the same number spread over 100 modules: the name's bookkeeping must be
/// O(1) amortized per exit, so no order may cost several times more.
#[test]
fn twenty_thousand_exits_of_one_module_in_any_order_stay_linear() {
    const N: usize = 20_000;
    let spread = exit_storm(100, N / 100, "oldest_first");
    let mut times = vec![("100 modules".to_string(), spread)];
    for order in ["oldest_first", "newest_first", "holder_last", "scattered"] {
        times.push((order.to_string(), exit_storm(1, N, order)));
    }
    eprintln!("exit storms: {times:?}");
    for (order, took) in &times[1..] {
        assert!(
            took.as_secs_f64() < 4.0 * spread.as_secs_f64() + 0.5,
            "{order}: {took:?} against {spread:?} for one process per module in 100 modules: {times:?}"
        );
    }
}

// ------------------------------------------------- lookup after a lent turn

/// A handler process of `svc`: answers nothing; ends (code 7) on QUIT.
fn handler_svc() -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000010000000400))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 0x404)) (i32.const {QUIT})) (then (return (i32.const 7))))
    (i32.const 0)))"#
    )
}

/// A checker that ends the holder of `svc` (`end`: instructions using
/// `$p`), then looks the name up again at once: the holder has ended, so
/// lookup must give the other process of svc (ABI row 4: "when the holder
/// ends, the oldest of the others"), never the pid that just ended.
/// Returns 0; 1 if lookup gave the ended pid and a send to it was
/// accepted, 1000 + code if lookup gave it and the send was refused; 2 if
/// it found nothing, 3 if the first lookup failed, 4 + the send's code if
/// a send to the new holder failed.
fn ender(end: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "svc")
  (func (export "run") (result i32) (local $p i64) (local $q i64) (local $r i64)
    (local.set $p (call $lookup (i32.const 0) (i32.const 3)))
    (if (i64.lt_s (local.get $p) (i64.const 0)) (then (return (i32.const 3))))
    {end}
    (local.set $q (call $lookup (i32.const 0) (i32.const 3)))
    (if (i64.eq (local.get $q) (local.get $p))
      (then
        ;; What a send to it does: accepted (1) or refused (1000 + code).
        (local.set $r (call $send (local.get $q) (i32.const 0x3004) (i32.const 0) (i32.const 0) (i32.const 0)))
        (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 1))))
        (return (i32.sub (i32.const 1000) (i32.wrap_i64 (local.get $r))))))
    (if (i64.lt_s (local.get $q) (i64.const 0)) (then (return (i32.const 2))))
    (local.set $r (call $send (local.get $q) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.sub (i32.const 4) (i32.wrap_i64 (local.get $r))))))
    (i32.const 0)))"#
    )
}

/// A task holder told BYE by a call: it answers, then returns. The call
/// hands the CPU to it (`kernel_loop.rs`, "Direct handoff") and gets its
/// answer without suspending; the holder's reap is deferred "at the
/// lender's next stop". The next lookup must not give the ended holder.
///
/// Failed before the fix (chk exit 1 in every configuration): the holder
/// that ended in the handed-off turn kept its module's name until its
/// deferred reap, so the second lookup gave it, a send to it was accepted
/// and failed back, and the other process of svc was never found.
#[test]
fn lookup_after_the_holder_ended_in_a_handed_off_turn() {
    let mut failures = Vec::new();
    for (det, workers) in CONFIGS {
        let what = format!("det {det}, {workers} workers");
        let mut k = build(det, workers);
        load_wat_with(&mut k, "svc", &svc(false), "");
        let a = k.spawn("svc").unwrap();
        let b = k.spawn("svc").unwrap();
        let end = format!(
            "(local.set $r (call $send_receive (local.get $p) (i64.const 0) (i32.const {BYE}) (i32.const 0)
          (i32.const 0) (i32.const 0) (i64.const -1) (i64.const 3000) (i32.const 64) (i32.const 128) (i32.const 64)))
     (if (i64.ne (local.get $r) (i64.const 24)) (then (return (i32.const 9))))"
        );
        load_wat_with(&mut k, "chk", &ender(&end), "");
        let chk = k.spawn("chk").unwrap();
        let (_k, report, heard) = run_watched(k, 20);
        exactly_once(&report, &heard, &what);
        if status_of(&report, chk) != Some(ExitStatus::Exited(0)) || drained(&report) != vec![a, b]
        {
            failures.push(format!("{what}:\n{}", describe(&report)));
        }
    }
    assert!(
        failures.is_empty(),
        "chk code 1 = lookup gave the holder that had just ended (and a send to it was accepted):\n{}",
        failures.join("\n")
    );
}

/// The same with handler processes of svc and a handler checker: a
/// handler's send to a handler waiting idle, with nothing else ready, runs
/// it inside the send (direct delivery, ARCHITECTURE "Direct delivery
/// between handlers"); the holder ends there (returns 7), so the next
/// lookup must give the other process of svc. One worker only: on two,
/// the other worker may still be running svc when the checker sends, and
/// the message then goes through the mailbox (the holder is alive when
/// looked up again).
///
/// Failed before the fix (chk exit 1): a process that ended in a lent
/// turn (a direct delivery, a handed-off turn) kept its module's name
/// until its deferred reap, so `lookup` gave the ended holder and a send
/// to it was accepted and failed back, while the live second process was
/// never found. `lookup` now skips a holder that ended and waits for its
/// reap (`Process::ended`, set by `KernelLoop::defer_reap`).
#[test]
fn lookup_after_the_holder_ended_in_a_direct_delivery() {
    let checker = format!(
        r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "svc")
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000010000000400))
  (func (export "handle") (param $len i32) (result i32) (local $p i64) (local $q i64) (local $r i64)
    (if (i32.ne (i32.load (i32.const 0x404)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (local.set $p (call $lookup (i32.const 0) (i32.const 3)))
    (if (i64.lt_s (local.get $p) (i64.const 0)) (then (return (i32.const 3))))
    (local.set $r (call $send (local.get $p) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 9))))
    (local.set $q (call $lookup (i32.const 0) (i32.const 3)))
    (if (i64.eq (local.get $q) (local.get $p)) (then (return (i32.const 1))))
    (if (i64.lt_s (local.get $q) (i64.const 0)) (then (return (i32.const 2))))
    (local.set $r (call $send (local.get $q) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.sub (i32.const 4) (i32.wrap_i64 (local.get $r))))))
    (call $exit (i32.const 0))
    (i32.const 0)))"#
    );
    let mut failures = Vec::new();
    for (det, workers) in CONFIGS.into_iter().filter(|&(_, workers)| workers == 1) {
        let what = format!("det {det}, {workers} workers");
        let mut k = build(det, workers);
        estalogic_tests::load_handler(&mut k, "svc", &handler_svc());
        let a = k.spawn("svc").unwrap();
        let b = k.spawn("svc").unwrap();
        estalogic_tests::load_handler(&mut k, "chk", &checker);
        let chk = k.spawn("chk").unwrap();
        let (_k, report, heard) = run_watched(k, 20);
        exactly_once(&report, &heard, &what);
        let ended: Vec<Pid> = report
            .processes
            .iter()
            .filter(|p| p.module == "svc")
            .map(|p| p.pid)
            .collect();
        let undelivered: u64 = report.processes.iter().map(|p| p.undelivered).sum();
        if status_of(&report, chk) != Some(ExitStatus::Exited(0))
            || ended != vec![a, b]
            || undelivered != 0
        {
            failures.push(format!("{what}:\n{}", describe(&report)));
        }
    }
    assert!(
        failures.is_empty(),
        "chk code 1 = lookup gave the holder that had just ended (and a send to it was accepted):\n{}",
        failures.join("\n")
    );
}

// ------------------------------------------------- capability tables

/// Three processes of svc; the checker delegates its `time:read` (handle
/// 5) to the second, which then traps and is restarted with `action`.
/// The drain reads each process's handle count: the first and third keep
/// their 5; the second's replacement has 6 after a same-state restart
/// (RestartAction::RestartSameState: "its capability table, delegated
/// capabilities ... included, taken over under the same handles") and 5
/// after a clean one ("re-granted from its manifest"). The holder never
/// changes hands for the restart of a non-holder. Returns the counts as
/// decimal pairs, in drain order.
fn caps_checker(target: Pid) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "svc")
  (func (export "run") (result i32) (local $p i64) (local $r i64) (local $acc i32) (local $n i32)
    (local.set $r (call $delegate (i32.const 5) (i64.const {target}) (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 9001))))
    {pause}
    (drop (call $send (i64.const {target}) (i32.const {TRAP}) (i32.const 0) (i32.const 0) (i32.const 0)))
    {pause}
    (block $done
      (loop $next
        (local.set $p (call $lookup (i32.const 0) (i32.const 3)))
        (br_if $done (i64.lt_s (local.get $p) (i64.const 0)))
        (local.set $r (call $send_receive (local.get $p) (i64.const 0) (i32.const {QUERY}) (i32.const 0)
          (i32.const 0) (i32.const 0) (i64.const -1) (i64.const 3000) (i32.const 64) (i32.const 128) (i32.const 64)))
        (if (i64.ne (local.get $r) (i64.const 24)) (then (return (i32.const 9002))))
        (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 100)) (i32.load (i32.const 148))))
        (drop (call $send (local.get $p) (i32.const {QUIT}) (i32.const 0) (i32.const 0) (i32.const 0)))
        (local.set $r (call $send_receive (local.get $p) (i64.const 0) (i32.const {QUERY}) (i32.const 0)
          (i32.const 0) (i32.const 0) (i64.const -1) (i64.const 3000) (i32.const 64) (i32.const 128) (i32.const 64)))
        (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.const 9003))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $n) (i32.const 5)))))
    (local.get $acc)))"#,
        target = target.to_u64() as i64,
        pause = sleep(10),
    )
}

#[test]
fn capability_tables_follow_the_restarted_process_not_the_holder() {
    let mut failures = Vec::new();
    for (det, workers) in CONFIGS {
        for (action, expected) in [
            (RestartSameState, 50506),
            (RestartCleanState, 50505),
            (ReloadModule, 50505),
        ] {
            let what = format!("{action:?}, det {det}, {workers} workers");
            let mut k = build(det, workers);
            k.set_restart_policy(Script::boxed(&[action]));
            load_wat_with(&mut k, "svc", &svc(false), r#""restart":"on_failure""#);
            let spawned: Vec<Pid> = (0..3).map(|_| k.spawn("svc").unwrap()).collect();
            load_wat_with(&mut k, "chk", &caps_checker(spawned[1]), "");
            let chk = k.spawn("chk").unwrap();
            let (_k, report, heard) = run_watched(k, 20);
            exactly_once(&report, &heard, &what);
            if status_of(&report, chk) != Some(ExitStatus::Exited(expected)) {
                failures.push(format!(
                    "{what}: expected {expected}\n{}",
                    describe(&report)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A first run stopped by a shutdown request while two processes of svc
/// wait (and a waiter holds the name): a second run of the same kernel
/// finds its own new process through lookup, not a stale holder.
#[test]
fn a_second_run_after_a_shutdown_finds_only_its_own_processes() {
    for (det, workers) in CONFIGS {
        let what = format!("det {det}, {workers} workers");
        let mut k = build(det, workers);
        load_wat_with(&mut k, "svc", &svc(false), "");
        load_wat_with(&mut k, "chk", &chk(&[Step::Probe], false), "");
        // Keeps the first run going until the request.
        load_wat_with(
            &mut k,
            "spin",
            r#"(module (memory (export "memory") 1) (func (export "run") (loop (br 0))))"#,
            "",
        );
        k.spawn("svc").unwrap();
        k.spawn("svc").unwrap();
        k.spawn("spin").unwrap();
        let (mut k, r1) =
            run_and_stop_after(k, Duration::from_millis(100), Duration::from_secs(20))
                .expect("the first run ends after the shutdown request");
        assert_eq!(r1.processes.len(), 3, "{what}\n{}", describe(&r1));
        let fresh = k.spawn("svc").unwrap();
        let chk_pid = k.spawn("chk").unwrap();
        let (_k, r2, heard) = run_watched(k, 20);
        exactly_once(&r2, &heard, &what);
        assert_eq!(
            status_of(&r2, chk_pid),
            Some(ExitStatus::Exited(1)),
            "{what}: second run\n{}",
            describe(&r2)
        );
        assert_eq!(drained(&r2), vec![fresh], "{what}\n{}", describe(&r2));
    }
}
