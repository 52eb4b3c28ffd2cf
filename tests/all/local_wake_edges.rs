//! The wakes a worker keeps on its thread during a turn
//! (`Inbox::keep_wakes_local`, BENCHMARKS.md log step 55), adopted from
//! the forty-ninth probe round: a wake is never lost or mixed with another
//! kernel's (one run by a restart policy inside a turn, or one whose run
//! ended in a panic), and deterministic runs replay. The round's fifth
//! probe found that what a handler's call wakes is seen by other workers
//! only when the call returns; that bound is documented
//! (`core::kernel_shared`, "Wakes made during a turn").

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::core::supervision::{Failure, RestartAction, RestartPolicy};
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{PanickingPolicy, Script, describe, load_handler, load_wat, load_wat_with};
use std::time::Duration;

/// Runs `kernel` on another thread; panics if it does not end in 60 s.
fn run_bounded(mut kernel: Kernel) -> RunReport {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let report = kernel.run();
        let _ = tx.send(report);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the run ends within 60 s")
}

/// Waits for one message of any type; exits 0 once it has it.
const WAITER: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i64.lt_s (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64))
                  (i64.const 0))
      (then (return (i32.const 2))))
    (i32.const 0)))"#;

/// Sends `waiter` one message (waking it, in the same turn), then traps.
const CRASHER: &str = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 512) "waiter")
  (func (export "run") (result i32)
    (drop (call $send (call $lookup (i32.const 512) (i32.const 6))
                      (i32.const 1) (i32.const 0) (i32.const 64) (i32.const 0)))
    unreachable))"#;

const TRIVIAL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 0)))"#;

/// An embedder's restart policy that runs a small kernel of its own (on
/// the calling thread, a worker of the outer kernel) before it decides.
struct RunsAnotherKernel {
    inner_runs: u32,
}

impl RestartPolicy for RunsAnotherKernel {
    fn on_failure(&mut self, _failure: &Failure, _now: u64) -> RestartAction {
        let mut inner = estalogic_tests::kernel(true, 1);
        load_wat(&mut inner, "inner", TRIVIAL, "normal");
        inner.spawn("inner").unwrap();
        let report = inner.run();
        assert_eq!(
            report.process("inner").unwrap().status,
            ExitStatus::Exited(0)
        );
        self.inner_runs += 1;
        RestartAction::GiveUp
    }
}

fn waiter_and_crasher(deterministic: bool, workers: usize) -> Kernel {
    let mut kernel = estalogic_tests::kernel(deterministic, workers);
    load_wat(&mut kernel, "waiter", WAITER, "normal");
    load_wat_with(&mut kernel, "crasher", CRASHER, r#""restart":"on_failure""#);
    kernel.spawn("waiter").unwrap();
    kernel.spawn("crasher").unwrap();
    kernel
}

/// The crasher's send wakes the waiting `waiter` during its turn, so the
/// wake is kept on the worker's thread; the restart policy, called in that
/// same turn on that thread, runs another kernel. Failed before the fix:
/// the inner kernel's first turn cleared the buffer as "another kernel's,
/// left by a panic", and `waiter`, its message in its mailbox, was stopped
/// as DEADLOCKED.
#[test]
fn a_restart_policy_that_runs_another_kernel_loses_no_wake_of_the_outer_one() {
    let mut lost = Vec::new();
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let mut kernel = waiter_and_crasher(deterministic, workers);
        kernel.set_restart_policy(Box::new(RunsAnotherKernel { inner_runs: 0 }));
        let report = run_bounded(kernel);
        let waiter = report.process("waiter").unwrap();
        if waiter.status != ExitStatus::Exited(0) {
            lost.push(format!(
                "deterministic {deterministic}, {workers} workers: waiter {:?}\n{}",
                waiter.status,
                describe(&report)
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "the waiter's wake was lost:\n{}",
        lost.join("\n")
    );
}

/// The same program with a plain policy: the waiter is woken, in every
/// configuration (the baseline of the test above).
#[test]
fn a_wake_made_just_before_a_supervised_trap_is_collected() {
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let mut kernel = waiter_and_crasher(deterministic, workers);
        kernel.set_restart_policy(Script::boxed(&[]));
        let report = run_bounded(kernel);
        assert_eq!(
            report.process("waiter").unwrap().status,
            ExitStatus::Exited(0),
            "deterministic {deterministic}, {workers} workers\n{}",
            describe(&report)
        );
    }
}

/// A mixed deterministic workload: handler ping-pong, a task echo, a
/// supervised crasher restarted twice (waking its waiter each time).
fn mixed_deterministic() -> Kernel {
    let mut kernel = estalogic_tests::kernel(true, 1);
    load_handler(
        &mut kernel,
        "pong",
        &estalogic_bench::messaging::handler_pong(),
    );
    load_handler(
        &mut kernel,
        "ping",
        &estalogic_bench::messaging::handler_ping(200, "pong"),
    );
    load_wat(&mut kernel, "waiter", WAITER, "normal");
    load_wat_with(&mut kernel, "crasher", CRASHER, r#""restart":"on_failure""#);
    kernel.set_restart_policy(Script::boxed(&[
        RestartAction::RestartCleanState,
        RestartAction::RestartCleanState,
    ]));
    for name in ["pong", "ping", "waiter", "crasher"] {
        kernel.spawn(name).unwrap();
    }
    kernel
}

fn fingerprint(report: &RunReport) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        report.processes, report.elapsed, report.stats, report.restarts
    )
}

/// Deterministic runs replay identically: on fresh threads, and on one
/// thread one after another (with kernels dropped in between), and after a
/// run on that thread ended in a panic of the restart policy with a wake
/// kept locally (the crasher's send woke the waiter in the panicking turn).
#[test]
fn deterministic_runs_replay_on_fresh_and_reused_threads_and_after_a_panic() {
    let reference = fingerprint(&run_bounded(mixed_deterministic()));
    let again = fingerprint(&run_bounded(mixed_deterministic()));
    assert_eq!(reference, again, "two runs on fresh threads differ");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut prints = Vec::new();
        for round in 0..6 {
            // A run that panics in its restart policy, its wake kept here.
            let mut doomed = waiter_and_crasher(true, 1);
            doomed.set_restart_policy(Box::new(PanickingPolicy));
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doomed.run()));
            assert!(outcome.is_err(), "round {round}: the policy panics");
            if round % 2 == 0 {
                drop(doomed);
            }
            // Then ordinary runs on the same thread.
            let mut kernel = mixed_deterministic();
            prints.push(fingerprint(&kernel.run()));
            drop(kernel);
            let mut kernel = mixed_deterministic();
            prints.push(fingerprint(&kernel.run()));
        }
        let _ = tx.send(prints);
    });
    let prints = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the runs end in 120 s");
    for (i, print) in prints.iter().enumerate() {
        assert_eq!(print, &reference, "run {i} on the reused thread differs");
    }
}

/// A process stopped and replaced by a system restart while the wake its
/// predecessor got sits in the worker's buffer: the stale wake must not
/// run the replacement early or twice, and nothing hangs. The second
/// crasher's message reaches the second waiter.
#[test]
fn a_process_replaced_while_its_wake_is_kept_is_reported_once() {
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let mut kernel = waiter_and_crasher(deterministic, workers);
        kernel.set_restart_policy(Script::boxed(&[RestartAction::RestartSystem]));
        let report = run_bounded(kernel);
        let what = format!(
            "deterministic {deterministic}, {workers} workers\n{}",
            describe(&report)
        );
        let waiters: Vec<_> = report
            .processes
            .iter()
            .filter(|p| p.module == "waiter")
            .collect();
        let crashers = report
            .processes
            .iter()
            .filter(|p| p.module == "crasher")
            .count();
        assert_eq!(crashers, 2, "{what}");
        assert!(
            waiters.iter().all(|w| matches!(
                w.status,
                ExitStatus::Exited(0) | ExitStatus::Stopped(ErrorCode::RESTARTED)
            )),
            "{what}"
        );
        assert!(
            waiters.iter().any(|w| w.status == ExitStatus::Exited(0)),
            "{what}"
        );
        assert!(
            !waiters
                .iter()
                .any(|w| w.status == ExitStatus::Stopped(ErrorCode::DEADLOCKED)),
            "{what}"
        );
    }
}
