//! The embedding API's contract across the life of one `Kernel` (the
//! thirty-first probe round): capability tokens, exit subscribers,
//! shutdown handles, several runs on one kernel, restart policies that
//! misbehave. Each test asserts what a doc comment promises and quotes it.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::core::capabilities_engine::{AuditKind, CapError, Handle, Token};
use estalogic_kernel::core::module_registry::ModuleState;
use estalogic_kernel::core::supervision::{Failure, RestartAction, RestartPolicy};
use estalogic_kernel::{ExitStatus, Kernel, KernelError, ProcessReport, RunReport};
use estalogic_tests::{load_wat, load_wat_with, trapper};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const IMPORTS: &str = r#"
  (import "estalogic" "exit" (func $exit (param i32)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
"#;

/// A task guest: data, then `body` in `run` (result i32) with locals
/// $r $p (i64), $i (i32); returns 0 unless `body` returns first.
fn task(data: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {data}
  (func (export "run") (result i32) (local $r i64) (local $p i64) (local $i i32)
    {body}
    (i32.const 0)))"#
    )
}

const EXIT0: &str = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
const SPINNER: &str =
    r#"(module (memory (export "memory") 1) (func (export "run") (loop (br 0))))"#;

/// Traps on its first incarnation and exits 0 on a same-state one: with an
/// empty mailbox it mails itself and traps; with the mail it inherited it
/// returns.
fn trap_once_then_exit() -> String {
    task(
        "",
        r#"
  (local.set $r (call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (if (i64.lt_s (local.get $r) (i64.const 0))
    (then
      (drop (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 2048) (i32.const 1)))
      unreachable))
"#,
    )
}

/// Runs `kernel` on a thread; panics if the run does not return in `secs`.
fn run_with_watchdog(mut kernel: Kernel, secs: u64) -> (Kernel, RunReport) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = kernel.run();
        let _ = tx.send((kernel, report));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("the run did not return within {secs} s"))
}

fn unique_pids(report: &RunReport, what: &str) {
    let pids: HashSet<_> = report.processes.iter().map(|p| p.pid).collect();
    assert_eq!(
        pids.len(),
        report.processes.len(),
        "{what}: a pid reported twice: {:#?}",
        report.processes
    );
}

fn summary(report: &RunReport) -> String {
    estalogic_tests::describe(report)
}

// ------------------------------------------------------- restart policies

/// A policy that answers a fixed action for ever and records every call.
struct Recording {
    action: RestartAction,
    failures: Arc<Mutex<Vec<String>>>,
    successes: Arc<Mutex<Vec<String>>>,
    last_now: Arc<Mutex<u64>>,
    backwards: Arc<AtomicBool>,
}

impl RestartPolicy for Recording {
    fn on_failure(&mut self, failure: &Failure, now: u64) -> RestartAction {
        let mut last = self.last_now.lock().unwrap();
        if now < *last {
            self.backwards.store(true, Ordering::SeqCst);
        }
        *last = now;
        self.failures.lock().unwrap().push(failure.key.clone());
        self.action
    }

    fn on_success(&mut self, key: &str, now: u64) {
        let mut last = self.last_now.lock().unwrap();
        if now < *last {
            self.backwards.store(true, Ordering::SeqCst);
        }
        *last = now;
        self.successes.lock().unwrap().push(key.to_string());
    }
}

struct Calls {
    failures: Arc<Mutex<Vec<String>>>,
    successes: Arc<Mutex<Vec<String>>>,
    backwards: Arc<AtomicBool>,
}

fn recording(action: RestartAction) -> (Box<Recording>, Calls) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let successes = Arc::new(Mutex::new(Vec::new()));
    let backwards = Arc::new(AtomicBool::new(false));
    (
        Box::new(Recording {
            action,
            failures: failures.clone(),
            successes: successes.clone(),
            last_now: Arc::new(Mutex::new(0)),
            backwards: backwards.clone(),
        }),
        Calls {
            failures,
            successes,
            backwards,
        },
    )
}

/// `RestartPolicy::on_success`: "A process of `key` ended normally at
/// `now`: a process of a module whose manifest says `"restart":
/// "on_failure"` exited with code 0." Failed before the fix: the kernel
/// never called `on_success`, so a policy that resets its count on a
/// healthy exit never heard of one, and `Ladder` kept the keys of modules
/// that had recovered.
#[test]
fn the_restart_policy_hears_of_processes_that_end_normally() {
    let mut k = estalogic_tests::kernel(true, 1);
    let (policy, calls) = recording(RestartAction::RestartSameState);
    k.set_restart_policy(policy);
    load_wat_with(
        &mut k,
        "flaky",
        &trap_once_then_exit(),
        r#""restart":"on_failure""#,
    );
    load_wat_with(&mut k, "fine", EXIT0, r#""restart":"on_failure""#);
    k.spawn("flaky").unwrap();
    k.spawn("fine").unwrap();
    let report = k.run();
    assert_eq!(report.processes.len(), 3, "{}", summary(&report));
    assert_eq!(
        report
            .processes
            .iter()
            .filter(|p| p.status == ExitStatus::Exited(0))
            .count(),
        2,
        "{}",
        summary(&report)
    );
    assert_eq!(*calls.failures.lock().unwrap(), vec!["flaky".to_string()]);
    let successes = calls.successes.lock().unwrap().clone();
    assert!(
        successes.contains(&"flaky".to_string()) && successes.contains(&"fine".to_string()),
        "on_success was called for {successes:?}; both `flaky` (its restarted process \
         exited 0) and `fine` (exited 0) ended normally"
    );
}

/// Policies that answer odd decisions for ever (a supervisor restart of a
/// module with no supervisor, a system restart with nothing else alive, a
/// reload, a same-state restart): the run never ends by itself; a
/// shutdown from another thread ends it, every incarnation is reported
/// once and to the subscriber exactly as in the report, each decision's
/// new pid is a reported process, and the next run on the same kernel
/// starts afresh (the request used up). `now` never goes backwards, also
/// across the two runs (supervision.rs: "`now` ... never goes backwards
/// between calls").
#[test]
fn restart_for_ever_policies_end_on_shutdown_and_report_every_incarnation() {
    let actions = [
        RestartAction::RestartSameState,
        RestartAction::RestartCleanState,
        RestartAction::ReloadModule,
        RestartAction::RestartSupervisor,
        RestartAction::RestartSystem,
    ];
    for (deterministic, workers) in [(true, 1), (false, 2)] {
        for action in actions {
            let what = format!("{action:?} det {deterministic} workers {workers}");
            let mut k = estalogic_tests::kernel(deterministic, workers);
            let (policy, calls) = recording(action);
            k.set_restart_policy(policy);
            load_wat_with(
                &mut k,
                "crasher",
                &trapper("unreachable"),
                r#""restart":"on_failure""#,
            );
            k.spawn("crasher").unwrap();
            let exits = k.subscribe_exits();
            let shutdown = k.shutdown_handle();
            let requester = std::thread::spawn(move || {
                // Wait for a good number of incarnations, then stop.
                let mut seen = Vec::new();
                while seen.len() < 50 {
                    match exits.recv_timeout(Duration::from_secs(10)) {
                        Ok(r) => seen.push(r),
                        Err(_) => break,
                    }
                }
                shutdown.request();
                (seen, exits)
            });
            let (mut k, report) = run_with_watchdog(k, 20);
            let (mut seen, exits) = requester.join().unwrap();
            // The rest of the run's exits (all sent before `run` returned).
            seen.extend(exits.try_iter());
            unique_pids(&report, &what);
            assert!(report.processes.len() >= 50, "{what}: {}", summary(&report));
            assert_eq!(
                seen, report.processes,
                "{what}: the subscriber saw another story"
            );
            let reported: HashSet<_> = report.processes.iter().map(|p| p.pid).collect();
            for r in &report.restarts {
                let new = r
                    .new_pid
                    .unwrap_or_else(|| panic!("{what}: {r:?} started nothing"));
                assert!(
                    reported.contains(&new),
                    "{what}: {r:?} started an unreported pid"
                );
            }
            // The last process is stopped at shutdown (or trapped after it,
            // restarting nothing); every trap before it decided a restart.
            let trapped = report
                .processes
                .iter()
                .filter(|p| p.status.is_trap())
                .count();
            assert!(
                report.restarts.len() == trapped || report.restarts.len() + 1 == trapped,
                "{what}: {trapped} traps, {} decisions",
                report.restarts.len()
            );
            assert_eq!(
                calls.failures.lock().unwrap().len(),
                report.restarts.len(),
                "{what}"
            );
            assert_eq!(
                report.stats.events.spawned as usize,
                report.processes.len(),
                "{what}"
            );
            assert_eq!(
                report.stats.events.exited as usize,
                report.processes.len(),
                "{what}"
            );
            // Next run: fresh, and the policy's clock still does not go back.
            load_wat(&mut k, "plain", EXIT0, "normal");
            k.spawn("plain").unwrap();
            let (_, next) = run_with_watchdog(k, 20);
            assert_eq!(next.processes.len(), 1, "{what}: {}", summary(&next));
            assert_eq!(next.processes[0].status, ExitStatus::Exited(0), "{what}");
            assert!(
                !calls.backwards.load(Ordering::SeqCst),
                "{what}: now went backwards"
            );
        }
    }
}

// ------------------------------------------------------- several runs

/// `LoopStats`: "Scheduler-wide figures for a run", whose `events` count
/// checked syscalls. Two identical deterministic runs on one kernel count
/// the same. Failed before the fix: the run copied a counter kept for the
/// kernel's whole life, so the second run counted both runs' syscalls.
#[test]
fn a_runs_event_counts_are_that_runs_own() {
    let mut k = estalogic_tests::kernel(true, 1);
    let body = r#"
  (local.set $i (i32.const 10))
  (loop
    (drop (call $now))
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (br_if 0 (local.get $i)))
"#;
    load_wat(&mut k, "clocky", &task("", body), "normal");
    let mut seen = Vec::new();
    for _ in 0..3 {
        k.spawn("clocky").unwrap();
        let report = k.run();
        assert_eq!(report.processes[0].status, ExitStatus::Exited(0));
        seen.push(report.stats.events);
    }
    for events in &seen {
        assert_eq!(events.spawned, 1);
        assert_eq!(events.exited, 1);
    }
    assert!(seen[0].syscalls >= 10, "{:?}", seen[0]);
    assert_eq!(
        (seen[0].syscalls, seen[1].syscalls, seen[2].syscalls),
        (seen[0].syscalls, seen[0].syscalls, seen[0].syscalls),
        "three identical runs counted different checked syscalls: {seen:#?}"
    );
}

/// Pids are never reused: across 40 runs of one kernel on two workers,
/// with restarts and spawns between runs, every pid `spawn` returned and
/// every pid a run reported is distinct from every earlier one, and each
/// spawned pid is reported exactly once, by the next run.
#[test]
fn pids_are_never_reused_across_runs_of_one_kernel() {
    let mut k = Kernel::builder()
        .workers(2)
        .max_processes(8)
        .build()
        .unwrap();
    k.set_restart_policy(estalogic_tests::Script::boxed(
        &[RestartAction::RestartCleanState; 1_000],
    ));
    load_wat(&mut k, "plain", EXIT0, "normal");
    load_wat_with(
        &mut k,
        "flaky",
        &trap_once_then_exit(),
        r#""restart":"on_failure""#,
    );
    let mut all: HashSet<estalogic_abi::Pid> = HashSet::new();
    for round in 0..40 {
        let mut spawned = Vec::new();
        for _ in 0..3 {
            spawned.push(k.spawn("plain").unwrap());
        }
        spawned.push(k.spawn("flaky").unwrap());
        let (back, report) = run_with_watchdog(k, 20);
        k = back;
        unique_pids(&report, &format!("round {round}"));
        for pid in &spawned {
            assert_eq!(
                report.processes.iter().filter(|p| p.pid == *pid).count(),
                1,
                "round {round}: {pid} reported once"
            );
        }
        for p in &report.processes {
            assert!(
                all.insert(p.pid),
                "round {round}: {} reused: {}",
                p.pid,
                summary(&report)
            );
        }
    }
}

/// `max_processes`: "How many processes may be alive at once": processes
/// spawned and not yet run count; a run stopped before it began frees
/// them all; the error says how many are alive.
#[test]
fn the_process_limit_counts_pending_processes_and_frees_them_after_a_stopped_run() {
    let mut k = Kernel::builder()
        .workers(2)
        .max_processes(3)
        .build()
        .unwrap();
    load_wat(&mut k, "plain", EXIT0, "normal");
    for round in 0..3 {
        for _ in 0..3 {
            k.spawn("plain").unwrap();
        }
        match k.spawn("plain") {
            Err(KernelError::TooManyProcesses { live, limit, .. }) => {
                assert_eq!((live, limit), (3, 3), "round {round}");
            }
            other => panic!("round {round}: a fourth spawn: {other:?}"),
        }
        if round % 2 == 0 {
            k.shutdown_handle().request();
        }
        let report = k.run();
        assert_eq!(report.processes.len(), 3, "round {round}");
        let expected = if round % 2 == 0 {
            ExitStatus::Stopped(ErrorCode::SHUTDOWN)
        } else {
            ExitStatus::Exited(0)
        };
        for p in &report.processes {
            assert_eq!(p.status, expected, "round {round}");
        }
    }
}

/// `load_module` of a name already loaded, between runs: refused (an
/// `App` error naming the module), and the module already loaded keeps
/// running its own code.
#[test]
fn loading_a_module_again_between_runs_is_refused_and_the_first_stays() {
    let mut k = estalogic_tests::kernel(true, 1);
    let seven =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 7)))"#;
    let nine =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 9)))"#;
    load_wat(&mut k, "m", seven, "normal");
    k.spawn("m").unwrap();
    assert_eq!(k.run().processes[0].status, ExitStatus::Exited(7));
    let err = k
        .load_module(
            estalogic_tests::manifest("m", "run", estalogic_tests::ALL_CAPS, "normal"),
            nine.as_bytes(),
            Path::new("m2"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, KernelError::App { problem, .. } if problem.contains("\"m\"")),
        "{err}"
    );
    k.spawn("m").unwrap();
    assert_eq!(k.run().processes[0].status, ExitStatus::Exited(7));
    assert_eq!(k.modules().len(), 1);
}

/// `spawn_all` twice spawns two processes of each module. ABI `lookup`:
/// "pid of the running process of a module name". The second process of
/// `srv` waits until the first has gone, then looks its own module up:
/// a process of `srv` is running (itself), so lookup should find it.
///
///
/// Failed before the fix: the name was freed when its holder left and
/// never passed to the module's other live process, so from then on
/// `lookup("srv")` was `NO_SUCH_PROCESS` while a process of `srv` ran.
#[test]
fn lookup_finds_a_modules_remaining_process_after_the_first_left() {
    let mut k = estalogic_tests::kernel(true, 1);
    // The registered one (lookup finds itself) returns at once; the other
    // yields a while, then returns 0 if lookup finds a process, 1 if not.
    let body = r#"
  (local.set $r (call $lookup (i32.const 4096) (i32.const 3)))
  (if (i64.eq (local.get $r) (call $self)) (then (return (i32.const 0))))
  (local.set $i (i32.const 50))
  (loop
    (drop (call $yield))
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (br_if 0 (local.get $i)))
  (local.set $r (call $lookup (i32.const 4096) (i32.const 3)))
  (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 1))))
"#;
    load_wat(
        &mut k,
        "srv",
        &task(r#"(data (i32.const 4096) "srv")"#, body),
        "normal",
    );
    let first = k.spawn_all().unwrap();
    let second = k.spawn_all().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 1);
    assert_ne!(first[0], second[0]);
    let report = k.run();
    assert_eq!(report.processes.len(), 2, "{}", summary(&report));
    assert_eq!(
        report.processes[0].pid, first[0],
        "the registered one ends first"
    );
    assert_eq!(
        report.processes[1].status,
        ExitStatus::Exited(0),
        "the remaining process of srv could not look its module up"
    );
}

// ------------------------------------------------------- tokens

/// `redeem_capability`: "A forged or altered token is `BadToken`": every
/// single bit of the id and of the MAC. `export_capability`: "audited":
/// one `Exported` event per export; every refused redemption one `Denied`
/// event (`take_audit`: "every grant, delegation, export, revocation and
/// denial"). A successful redemption is none of those. Two exports of one
/// handle are two tokens; both die with the process ("a revoked
/// capability's token is `Revoked`"), each refusal audited once. A token
/// of a real-time kernel is refused by another one.
#[test]
fn every_altered_bit_of_a_token_is_refused_and_audited_once() {
    let mut k = estalogic_tests::kernel(false, 2);
    load_wat(&mut k, "holder", EXIT0, "normal");
    let pid = k.spawn("holder").unwrap();
    let handle = k.capabilities_of(pid)[0].0;
    let _ = k.take_audit();
    let token = k.export_capability(pid, handle).unwrap();
    let twin = k.export_capability(pid, handle).unwrap();
    assert_ne!(token.id, twin.id);
    assert_eq!(k.redeem_capability(&token).unwrap().holder, pid);
    assert_eq!(k.redeem_capability(&twin).unwrap().handle, handle);
    let mut refused = 0;
    for bit in 0..128 {
        let mut bad = token.clone();
        bad.id ^= 1u128 << bit;
        assert_eq!(
            k.redeem_capability(&bad).unwrap_err(),
            CapError::BadToken,
            "id bit {bit}"
        );
        refused += 1;
    }
    for byte in 0..32 {
        for bit in 0..8 {
            let mut bad = token.clone();
            bad.mac[byte] ^= 1 << bit;
            assert_eq!(
                k.redeem_capability(&bad).unwrap_err(),
                CapError::BadToken,
                "mac byte {byte} bit {bit}"
            );
            refused += 1;
        }
    }
    // The twin's MAC on the token's id, and the reverse.
    let swapped = Token {
        id: token.id,
        mac: twin.mac,
    };
    assert_eq!(
        k.redeem_capability(&swapped).unwrap_err(),
        CapError::BadToken
    );
    refused += 1;
    // The written form round-trips; one more character or one fewer fails.
    let text = token.to_string();
    assert_eq!(Token::parse(&text).unwrap(), token);
    assert!(Token::parse(&format!("{text}0")).is_err());
    assert!(Token::parse(&text[..text.len() - 1]).is_err());
    let audit = k.take_audit();
    let exported = audit
        .iter()
        .filter(|e| e.kind == AuditKind::Exported)
        .count();
    let denied = audit.iter().filter(|e| e.kind == AuditKind::Denied).count();
    assert_eq!(exported, 2, "{audit:#?}");
    assert_eq!(denied, refused, "one denial per refused redemption");
    assert_eq!(audit.len(), exported + denied, "{audit:#?}");

    // Another kernel's token.
    let mut other = estalogic_tests::kernel(false, 1);
    load_wat(&mut other, "holder", EXIT0, "normal");
    let other_pid = other.spawn("holder").unwrap();
    let foreign = other.export_capability(other_pid, handle).unwrap();
    assert_eq!(
        k.redeem_capability(&foreign).unwrap_err(),
        CapError::BadToken
    );
    let _ = k.take_audit();

    let report = k.run();
    assert_eq!(report.processes[0].status, ExitStatus::Exited(0));
    let _ = k.take_audit();
    assert_eq!(k.redeem_capability(&token).unwrap_err(), CapError::Revoked);
    assert_eq!(k.redeem_capability(&twin).unwrap_err(), CapError::Revoked);
    let audit = k.take_audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(audit.iter().all(|e| e.kind == AuditKind::Denied));
    // Exporting from the gone process: refused, audited once.
    assert_eq!(
        k.export_capability(pid, handle).unwrap_err(),
        CapError::InvalidHandle
    );
    assert_eq!(k.take_audit().len(), 1);
    // A later process of the module gets its own capabilities; the old
    // tokens stay dead.
    let next = k.spawn("holder").unwrap();
    assert_ne!(next, pid);
    assert_eq!(k.redeem_capability(&token).unwrap_err(), CapError::Revoked);
    let fresh = k
        .export_capability(next, k.capabilities_of(next)[0].0)
        .unwrap();
    assert_eq!(k.redeem_capability(&fresh).unwrap().holder, next);
}

/// Tokens of processes that never ran (stopped by a shutdown requested
/// before the run) and of a process restarted with its state (the
/// replacement takes the capability over, then exits): after the run,
/// both are `Revoked`, and no capability table is left behind.
#[test]
fn tokens_die_with_stopped_and_restarted_processes() {
    for (deterministic, workers) in [(true, 1), (false, 2)] {
        let what = format!("det {deterministic} workers {workers}");
        let mut k = estalogic_tests::kernel(deterministic, workers);
        k.set_restart_policy(estalogic_tests::Script::boxed(&[
            RestartAction::RestartSameState,
        ]));
        load_wat_with(
            &mut k,
            "flaky",
            &trap_once_then_exit(),
            r#""restart":"on_failure""#,
        );
        load_wat(&mut k, "idle", EXIT0, "normal");
        let flaky = k.spawn("flaky").unwrap();
        let token = k.export_capability(flaky, Handle(1)).unwrap();
        let report = k.run();
        assert_eq!(report.processes.len(), 2, "{what}: {}", summary(&report));
        let second = report.processes[1].pid;
        assert_eq!(report.restarts[0].new_pid, Some(second), "{what}");
        assert_eq!(
            k.redeem_capability(&token).unwrap_err(),
            CapError::Revoked,
            "{what}"
        );
        assert!(k.capabilities_of(flaky).is_empty(), "{what}");
        assert!(k.capabilities_of(second).is_empty(), "{what}");

        let idle = k.spawn("idle").unwrap();
        let token = k.export_capability(idle, Handle(1)).unwrap();
        k.shutdown_handle().request();
        let report = k.run();
        assert_eq!(
            report.processes[0].status,
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            "{what}"
        );
        assert_eq!(
            k.redeem_capability(&token).unwrap_err(),
            CapError::Revoked,
            "{what}"
        );
        assert!(k.capabilities_of(idle).is_empty(), "{what}");
    }
}

// ------------------------------------------------------- exits, shutdown

/// `subscribe_exits`: "A channel that receives each process's report the
/// moment it ends". Three subscribers, one dropped mid-run, a restart
/// storm beside a spinner and a ping-pong pair, shut down from another
/// thread at varying moments on two workers: the run always ends, every
/// process is reported once, the remaining subscribers each saw exactly
/// the report's processes in the report's order, and a subscriber made
/// between runs sees only the next run's exits.
#[test]
fn subscribers_see_exactly_the_report_through_storms_and_shutdowns() {
    let mut k = Kernel::builder()
        .workers(2)
        .max_processes(16)
        .build()
        .unwrap();
    k.set_restart_policy(estalogic_tests::Script::boxed(
        &[RestartAction::RestartCleanState; 100_000],
    ));
    estalogic_tests::load_bundled(&mut k, "pong", "run");
    estalogic_tests::load_bundled(&mut k, "ping", "run");
    load_wat(&mut k, "spinner", SPINNER, "low");
    load_wat_with(
        &mut k,
        "crasher",
        &trapper("unreachable"),
        r#""restart":"on_failure","supervisor":"pong""#,
    );
    let a = k.subscribe_exits();
    let b = k.subscribe_exits();
    let mut dropped = Some(k.subscribe_exits());
    let started = Instant::now();
    for round in 0..25u64 {
        k.spawn_all().unwrap();
        k.spawn("crasher").unwrap();
        let shutdown = k.shutdown_handle();
        let delay = Duration::from_micros((round * 7_919) % 15_000);
        let requester = std::thread::spawn(move || {
            std::thread::sleep(delay);
            shutdown.request();
        });
        let (back, report) = run_with_watchdog(k, 20);
        k = back;
        requester.join().unwrap();
        let what = format!("round {round}, delay {delay:?}");
        unique_pids(&report, &what);
        assert_eq!(
            report.stats.events.spawned as usize,
            report.processes.len(),
            "{what}"
        );
        let got_a: Vec<ProcessReport> = a.try_iter().collect();
        let got_b: Vec<ProcessReport> = b.try_iter().collect();
        assert_eq!(got_a, report.processes, "{what}: subscriber a");
        assert_eq!(got_b, report.processes, "{what}: subscriber b");
        let spinner = report.process("spinner").expect("spinner reported");
        assert_eq!(
            spinner.status,
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            "{what}"
        );
        for p in &report.processes {
            let ok = match (p.module.as_str(), &p.status) {
                (_, ExitStatus::Stopped(c)) => {
                    *c == ErrorCode::SHUTDOWN || *c == ErrorCode::RESTARTED
                }
                ("crasher", ExitStatus::Trapped { code, .. }) => {
                    *code == ErrorCode::TRAP_UNREACHABLE
                }
                ("ping" | "pong", ExitStatus::Exited(_)) => true,
                _ => false,
            };
            assert!(ok, "{what}: {p:?}");
        }
        if round == 0 {
            // Gone between runs: the kernel keeps its sender.
            dropped.take();
        }
    }
    // A subscriber made now sees the next run only.
    let late = k.subscribe_exits();
    load_wat(&mut k, "plain", EXIT0, "normal");
    let pid = k.spawn("plain").unwrap();
    let (_, report) = run_with_watchdog(k, 20);
    assert_eq!(report.processes.len(), 1);
    let got: Vec<_> = late.try_iter().collect();
    assert_eq!(got, report.processes);
    assert_eq!(got[0].pid, pid);
    assert_eq!(a.try_iter().count(), 1);
    eprintln!("25 storm rounds in {:?}", started.elapsed());
}

/// A subscriber whose receiver is dropped mid-run (by the thread reading
/// it, after its third exit) does not disturb the others nor the run.
#[test]
fn a_subscriber_dropped_mid_run_disturbs_nothing() {
    let mut k = Kernel::builder().workers(2).build().unwrap();
    load_wat(&mut k, "plain", EXIT0, "normal");
    let body = r#"
  (local.set $i (i32.const 200))
  (loop
    (drop (call $yield))
    (local.set $i (i32.sub (local.get $i) (i32.const 1)))
    (br_if 0 (local.get $i)))
"#;
    load_wat(&mut k, "slow", &task("", body), "normal");
    for _ in 0..20 {
        k.spawn("plain").unwrap();
        k.spawn("slow").unwrap();
    }
    let kept = k.subscribe_exits();
    let quitter = k.subscribe_exits();
    let reader = std::thread::spawn(move || {
        for _ in 0..3 {
            quitter.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        drop(quitter);
    });
    let (mut k, report) = run_with_watchdog(k, 20);
    reader.join().unwrap();
    assert_eq!(report.processes.len(), 40);
    assert!(
        report
            .processes
            .iter()
            .all(|p| p.status == ExitStatus::Exited(0))
    );
    assert_eq!(kept.try_iter().collect::<Vec<_>>(), report.processes);
    // The next run still reports to the kept one.
    k.spawn("plain").unwrap();
    let report = k.run();
    assert_eq!(kept.try_iter().collect::<Vec<_>>(), report.processes);
}

/// `ShutdownHandle::request` hammered from another thread (as fast as it
/// can) across 30 runs on two workers: every run ends and reports every
/// process once, stopped or done; once the hammering stops, at most one
/// run is stopped by a request left over ("A request made while no run is
/// in progress stops the next run at once ... a later run starts
/// afresh"), and the run after it runs to its end.
#[test]
fn shutdown_requests_hammered_across_runs() {
    let mut k = Kernel::builder()
        .workers(2)
        .max_processes(16)
        .build()
        .unwrap();
    k.set_restart_policy(estalogic_tests::Script::boxed(
        &[RestartAction::RestartSameState; 100_000],
    ));
    load_wat(&mut k, "spinner", SPINNER, "normal");
    load_wat_with(
        &mut k,
        "crasher",
        &trapper("unreachable"),
        r#""restart":"on_failure""#,
    );
    load_wat(&mut k, "plain", EXIT0, "normal");
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let shutdown = k.shutdown_handle();
        let stop = stop.clone();
        let requests = requests.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                shutdown.request();
                requests.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    for round in 0..30 {
        k.spawn("spinner").unwrap();
        k.spawn("crasher").unwrap();
        k.spawn("plain").unwrap();
        let (back, report) = run_with_watchdog(k, 20);
        k = back;
        let what = format!("round {round}");
        unique_pids(&report, &what);
        assert_eq!(
            report.stats.events.spawned as usize,
            report.processes.len(),
            "{what}"
        );
        let spinner = report.process("spinner").unwrap();
        assert_eq!(
            spinner.status,
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            "{what}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert!(requests.load(Ordering::Relaxed) > 30);
    // At most one leftover request.
    k.spawn("plain").unwrap();
    let first = k.run();
    k.spawn("plain").unwrap();
    let second = k.run();
    assert_eq!(
        second.processes[0].status,
        ExitStatus::Exited(0),
        "first after: {:?}",
        first.processes
    );
}

/// A process waiting in a receive with a long timeout, stopped by a
/// shutdown: its timer goes with the run (`armed_timers`: "live or
/// cancelled but not yet compacted away"; `Kernel::run` compacts at its
/// end), and the next deterministic run's clock does not jump to it: a
/// 5 ms receive timeout there advances the virtual clock by about 5 ms.
#[test]
fn a_stopped_waiters_timer_does_not_outlive_its_run() {
    let mut k = estalogic_tests::kernel(true, 1);
    let waiter = task(
        "",
        r#"(drop (call $receive (i32.const 0) (i64.const 1000000000) (i32.const 0) (i32.const 64) (i32.const 1024)))"#,
    );
    load_wat(&mut k, "waiter", &waiter, "high");
    load_wat(&mut k, "spinner", SPINNER, "low");
    // Exit code: virtual ms a 5 ms receive took.
    let timed = task(
        "",
        r#"
  (local.set $p (call $now))
  (drop (call $receive (i32.const 0) (i64.const 5) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (return (i32.wrap_i64 (i64.div_u (i64.sub (call $now) (local.get $p)) (i64.const 1000000))))
"#,
    );
    load_wat(&mut k, "timed", &timed, "normal");
    k.spawn("waiter").unwrap();
    k.spawn("spinner").unwrap();
    let (exits, shutdown) = (k.subscribe_exits(), k.shutdown_handle());
    let requester = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        shutdown.request();
        exits
    });
    let (mut k, report) = run_with_watchdog(k, 20);
    let _ = requester.join().unwrap();
    assert_eq!(report.processes.len(), 2);
    for p in &report.processes {
        assert_eq!(p.status, ExitStatus::Stopped(ErrorCode::SHUTDOWN), "{p:?}");
    }
    assert_eq!(
        k.armed_timers(),
        0,
        "a dead waiter's timer outlived the run"
    );
    k.spawn("timed").unwrap();
    let report = k.run();
    match report.processes[0].status {
        ExitStatus::Exited(ms) => assert!((5..=6).contains(&ms), "a 5 ms timeout took {ms} ms"),
        ref other => panic!("{other:?}"),
    }
    assert_eq!(k.armed_timers(), 0);
}

/// Supervisor and system restarts decided for ever on two workers, among
/// several live processes (a supervisor, idle handlers, a spinner): each
/// decision stops and restarts the others while they run. A shutdown
/// after 100 exits ends the run; every process is reported once, each to
/// the subscriber as in the report; nothing is left alive (the next run
/// of the same kernel can fill the whole process table again).
#[test]
fn supervisor_and_system_restarts_for_ever_among_running_peers() {
    let handler = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;
    for action in [
        RestartAction::RestartSupervisor,
        RestartAction::RestartSystem,
    ] {
        for round in 0..4 {
            let what = format!("{action:?} round {round}");
            let limit = 12;
            let mut k = Kernel::builder()
                .workers(2)
                .max_processes(limit)
                .build()
                .unwrap();
            let (policy, _calls) = recording(action);
            k.set_restart_policy(policy);
            load_wat(&mut k, "boss", SPINNER, "normal");
            load_wat_with(&mut k, "spinner", SPINNER, r#""supervisor":"boss""#);
            load_wat_with(
                &mut k,
                "crasher",
                &trapper("unreachable"),
                r#""restart":"on_failure","supervisor":"boss""#,
            );
            estalogic_tests::load_handler(&mut k, "h", handler);
            k.spawn_all().unwrap();
            for _ in 0..4 {
                k.spawn("h").unwrap();
            }
            let exits = k.subscribe_exits();
            let shutdown = k.shutdown_handle();
            let requester = std::thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 100 {
                    match exits.recv_timeout(Duration::from_secs(10)) {
                        Ok(r) => seen.push(r),
                        Err(_) => break,
                    }
                }
                shutdown.request();
                (seen, exits)
            });
            let (mut k, report) = run_with_watchdog(k, 20);
            let (mut seen, exits) = requester.join().unwrap();
            seen.extend(exits.try_iter());
            unique_pids(&report, &what);
            assert!(
                report.processes.len() >= 100,
                "{what}: {}",
                summary(&report)
            );
            assert_eq!(seen, report.processes, "{what}");
            assert_eq!(
                report.stats.events.spawned as usize,
                report.processes.len(),
                "{what}"
            );
            let reported: HashSet<_> = report.processes.iter().map(|p| p.pid).collect();
            for r in &report.restarts {
                if let Some(new) = r.new_pid {
                    assert!(reported.contains(&new), "{what}: {r:?}");
                }
            }
            // Everything gone: the table takes `limit` new processes.
            for n in 0..limit {
                k.spawn("h")
                    .unwrap_or_else(|e| panic!("{what}: spawn {n} after the run: {e}"));
            }
            k.shutdown_handle().request();
            let report = k.run();
            assert_eq!(report.processes.len(), limit as usize, "{what}");
        }
    }
}

/// The kernel clock is "ns since boot" (docs/ABI.md, `clock_now`): it
/// does not start again with each run. A deterministic run that sleeps
/// 20 ms, then a second run: the second's first reading is not before
/// the first's last.
#[test]
fn the_kernel_clock_carries_on_from_run_to_run() {
    let mut k = estalogic_tests::kernel(true, 1);
    // Exit code: the clock in microseconds after a 20 ms receive timeout.
    let sleeper = task(
        "",
        r#"
  (drop (call $receive (i32.const 0) (i64.const 20) (i32.const 0) (i32.const 64) (i32.const 1024)))
  (return (i32.wrap_i64 (i64.div_u (call $now) (i64.const 1000))))
"#,
    );
    let reader = task(
        "",
        r#"(return (i32.wrap_i64 (i64.div_u (call $now) (i64.const 1000))))"#,
    );
    load_wat(&mut k, "sleeper", &sleeper, "normal");
    load_wat(&mut k, "reader", &reader, "normal");
    k.spawn("sleeper").unwrap();
    let ExitStatus::Exited(first) = k.run().processes[0].status.clone() else {
        panic!("sleeper did not exit")
    };
    assert!(first >= 20_000, "{first} us");
    k.spawn("reader").unwrap();
    let ExitStatus::Exited(second) = k.run().processes[0].status.clone() else {
        panic!("reader did not exit")
    };
    assert!(
        second >= first,
        "the clock went back from {first} us to {second} us"
    );
}

/// `Kernel::boot_report`: the subsystems of the boot, "one per module
/// loaded before the boot completed"; a module loaded after the first
/// `spawn_all` is not part of the boot, and `Kernel::registry` has its
/// state (the doc said "one per module", which read as every module).
#[test]
fn a_module_loaded_between_runs_is_in_the_registry_not_the_boot_report() {
    let mut k = estalogic_tests::kernel(true, 1);
    load_wat(&mut k, "first", EXIT0, "normal");
    k.spawn_all().unwrap();
    k.run();
    load_wat(&mut k, "second", EXIT0, "normal");
    let bad = k.load_module(
        estalogic_tests::manifest("broken", "run", estalogic_tests::ALL_CAPS, "normal"),
        b"not wasm",
        Path::new("broken"),
    );
    assert!(bad.is_err());
    let names: Vec<String> = k
        .boot_report()
        .subsystems
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(names.contains(&"module first".to_string()), "{names:?}");
    assert!(
        !names.contains(&"module second".to_string())
            && !names.contains(&"module broken".to_string()),
        "modules loaded after the boot are not part of it: {names:?}"
    );
    let state = |name: &str| k.registry().latest(name).map(|entry| entry.state().clone());
    assert_eq!(state("second"), Some(ModuleState::Ready));
    assert!(
        matches!(state("broken"), Some(ModuleState::Failed(_))),
        "{:?}",
        state("broken")
    );
}
