//! Lifecycle under pressure, each case against the documented behaviour:
//! process limits, many short runs, restart storms and the escalation
//! ladder (a system restart brings back the processes that were alive,
//! and a module that gave up stays down), shutdowns at random points,
//! deterministic repeatability, and handlers at scale. Written by an
//! adversarial probe; its two supervision cases fail without their fixes.
//! `ESTALOGIC_TEST_CYCLES`, `ESTALOGIC_TEST_SHUTDOWNS` scale two of them;
//! `ESTALOGIC_TEST_RSS=1` (run alone) adds a memory check to the cycles.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::core::supervision::{Failure, RestartAction, RestartPolicy};
use estalogic_kernel::{ExitStatus, Kernel, KernelError, RunReport};
use estalogic_tests::{
    ALL_CAPS, PanickingPolicy, load_bundled, load_testkit, load_wat, load_wat_with, mailbox,
    rss_kib, run_catching_panic, trapper,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXIT0: &str = r#"(module (memory (export "memory") 1) (func (export "run")))"#;

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

/// Every process reported once (unique pids), and as many reports as spawns.
fn each_reported_once(report: &RunReport) {
    let pids: HashSet<_> = report.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids.len(), report.processes.len(), "a pid reported twice");
    assert_eq!(
        report.stats.events.spawned as usize,
        report.processes.len(),
        "spawned vs reported: {:#?}",
        report.processes
    );
}

fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    for p in &report.processes {
        out.push_str(&format!("  {} {} {}\n", p.pid, p.module, p.status));
    }
    for r in &report.restarts {
        out.push_str(&format!(
            "  restart {} {} {:?} -> {:?}\n",
            r.module, r.pid, r.action, r.new_pid
        ));
    }
    out
}

// ---------------------------------------------------------------- limits

/// init.rs, `max_processes`: "a spawn past the limit fails with
/// [`KernelError::TooManyProcesses`]".
#[test]
fn spawns_past_the_limit_fail_and_slots_come_back_after_a_run() {
    for limit in 1..=4u32 {
        for workers in [1, 2, 3] {
            let mut kernel = Kernel::builder()
                .max_processes(limit)
                .workers(workers)
                .build()
                .unwrap();
            load_wat(&mut kernel, "a", EXIT0, "normal");
            for round in 0..3 {
                for _ in 0..limit {
                    kernel.spawn("a").unwrap();
                }
                match kernel.spawn("a") {
                    Err(KernelError::TooManyProcesses { limit: l, live, .. }) => {
                        assert_eq!((l, live), (limit, limit as usize))
                    }
                    other => panic!("limit {limit} round {round}: {other:?}"),
                }
                let report = kernel.run();
                assert_eq!(report.processes.len(), limit as usize);
                for p in &report.processes {
                    assert_eq!(p.status, ExitStatus::Exited(0), "limit {limit}: {p:?}");
                }
            }
        }
    }
}

/// Many short runs on one kernel: nothing grows (pid slots, reports,
/// timers, memory).
#[test]
fn twenty_thousand_spawn_run_cycles_leak_nothing() {
    let cycles: u32 = std::env::var("ESTALOGIC_TEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut kernel = Kernel::builder()
        .max_processes(2)
        .workers(2)
        .build()
        .unwrap();
    load_wat(&mut kernel, "a", EXIT0, "normal");
    // A handler too: its instance lives in a cell shared with its task.
    let handler = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param i32) (result i32) (i32.const 7)))"#;
    estalogic_tests::load_handler(&mut kernel, "h", handler);
    let mut rss_after_warmup = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let a = kernel.spawn("a").unwrap();
        let h = kernel.spawn("h").unwrap();
        // LIFO free list: the same two slots every time.
        assert!(a.index() <= 2 && h.index() <= 2, "cycle {cycle}: {a} {h}");
        let report = kernel.run();
        assert_eq!(report.processes.len(), 2, "cycle {cycle}");
        assert_eq!(report.process("a").unwrap().status, ExitStatus::Exited(0));
        assert_eq!(report.process("h").unwrap().status, ExitStatus::Exited(7));
        assert_eq!(kernel.armed_timers(), 0);
        if cycle == 1_000.min(cycles / 2) {
            rss_after_warmup = rss_kib();
        }
        if std::env::var("ESTALOGIC_TEST_TAKE_AUDIT").is_ok() {
            kernel.take_audit();
        }
        if cycle % 10_000 == 0 {
            eprintln!("cycle {cycle}: RSS {} KiB", rss_kib());
        }
    }
    let rss_end = rss_kib();
    eprintln!(
        "{cycles} cycles in {:?}; RSS after warm-up {rss_after_warmup} KiB, at end {rss_end} KiB",
        started.elapsed()
    );
    // RSS is the whole test binary's: assert it only when this test runs
    // alone (ESTALOGIC_TEST_RSS=1 ... lifecycle::twenty -- --test-threads 1). The
    // capability audit buffer (100,000 events until taken) accounts for
    // about 12 MiB of plateau unless ESTALOGIC_TEST_TAKE_AUDIT is set.
    assert!(
        std::env::var("ESTALOGIC_TEST_RSS").is_err() || rss_end < rss_after_warmup + 32 * 1024,
        "RSS grew from {rss_after_warmup} to {rss_end} KiB"
    );
}

// ----------------------------------------------------------- supervision

const CRASHER_EXTRA: &str = r#""restart":"on_failure""#;

/// A restart at the limit: with max_processes(1) a trapping on_failure
/// module still climbs the whole ladder (the exit frees its own slot).
/// supervision.rs: "Climbing from RestartSystem reaches GiveUp".
#[test]
fn a_restart_storm_at_a_limit_of_one_climbs_the_whole_ladder() {
    for (deterministic, workers) in estalogic_tests::RUNS {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .workers(workers)
            .max_processes(1)
            .build()
            .unwrap();
        load_wat_with(
            &mut kernel,
            "crasher",
            &trapper("unreachable"),
            CRASHER_EXTRA,
        );
        kernel.spawn_all().unwrap();
        let (_, report) = run_with_watchdog(kernel, 30);
        let actions: Vec<_> = report.restarts.iter().map(|r| r.action).collect();
        assert_eq!(actions.len(), 15, "{actions:?}");
        assert_eq!(*actions.last().unwrap(), RestartAction::GiveUp);
        assert!(report.restarts[..14].iter().all(|r| r.new_pid.is_some()));
        assert_eq!(report.processes.len(), 15);
        each_reported_once(&report);
    }
}

/// A supervisor busy on another worker when its child climbs to
/// RestartSupervisor: the table is full (limit 2) until the old supervisor
/// leaves, so its restart waits. ARCHITECTURE.md: "a module a restart
/// cannot start at the process limit waits ... so a module is never
/// dropped nor started twice".
#[test]
fn a_supervisor_restart_at_the_limit_waits_and_is_never_dropped() {
    // Spins ~ a while, then exits 0.
    let spinner = r#"(module (memory (export "memory") 1)
      (func (export "run") (local $i i32)
        (loop (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if 0 (i32.lt_u (local.get $i) (i32.const 30000000))))))"#;
    for (deterministic, workers) in estalogic_tests::RUNS {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .workers(workers)
            .max_processes(2)
            .build()
            .unwrap();
        load_wat(&mut kernel, "spinner", spinner, "normal");
        load_wat_with(
            &mut kernel,
            "crasher",
            &trapper("unreachable"),
            r#""restart":"on_failure","supervisor":"spinner""#,
        );
        kernel.spawn_all().unwrap();
        let (_, report) = run_with_watchdog(kernel, 30);
        let actions: Vec<_> = report.restarts.iter().map(|r| r.action).collect();
        assert_eq!(actions.len(), 15, "{deterministic} {workers}: {actions:?}");
        assert_eq!(*actions.last().unwrap(), RestartAction::GiveUp);
        let crashers = report
            .processes
            .iter()
            .filter(|p| p.module == "crasher")
            .count();
        assert_eq!(crashers, 15);
        // Each supervisor restart (3) and system restart (3) starts the
        // spinner once more: 1 + 6.
        let spinners: Vec<_> = report
            .processes
            .iter()
            .filter(|p| p.module == "spinner")
            .collect();
        // Supervisor restarts decided while the spinner's restart still
        // waits supersede it (one start, not two): between 2 and 7.
        assert!(
            (2..=7).contains(&spinners.len()),
            "{deterministic} {workers}:\n{}",
            summary(&report)
        );
        if deterministic {
            assert_eq!(spinners.len(), 7, "{}", summary(&report));
        }
        assert_eq!(
            spinners.last().unwrap().status,
            ExitStatus::Exited(0),
            "the last spinner ran to its end"
        );
        each_reported_once(&report);
    }
}

/// Two modules supervising each other, both trapping at once: the storm
/// must end. supervision.rs: "GiveUp is final for the key ... The process
/// stays down."
#[test]
fn two_modules_supervising_each_other_end_their_storm() {
    for (deterministic, workers) in estalogic_tests::RUNS {
        let mut kernel = estalogic_tests::kernel(deterministic, workers);
        load_wat_with(
            &mut kernel,
            "a",
            &trapper("unreachable"),
            r#""restart":"on_failure","supervisor":"b""#,
        );
        load_wat_with(
            &mut kernel,
            "b",
            &trapper("unreachable"),
            r#""restart":"on_failure","supervisor":"a""#,
        );
        kernel.spawn_all().unwrap();
        let (_, report) = run_with_watchdog(kernel, 30);
        each_reported_once(&report);
        for module in ["a", "b"] {
            let decisions: Vec<_> = report
                .restarts
                .iter()
                .filter(|r| r.module == module)
                .map(|r| r.action)
                .collect();
            eprintln!(
                "{deterministic} {workers} {module}: {} decisions",
                decisions.len()
            );
            let give_ups = decisions
                .iter()
                .filter(|a| **a == RestartAction::GiveUp)
                .count();
            // Once given up, does the module stay down? Anything after the
            // first GiveUp is a new process started by the other's restart.
            let first = decisions.iter().position(|a| *a == RestartAction::GiveUp);
            assert!(first.is_some(), "{module}: {decisions:?}");
            assert_eq!(
                give_ups, 1,
                "{deterministic} {workers}: {module} was started again after GiveUp: {decisions:?}"
            );
        }
    }
}

/// A restart policy: `n` same-state restarts, then give up.
struct Limited(u32);
impl RestartPolicy for Limited {
    fn on_failure(&mut self, _: &Failure, _: u64) -> RestartAction {
        if self.0 == 0 {
            RestartAction::GiveUp
        } else {
            self.0 -= 1;
            RestartAction::RestartSameState
        }
    }
}

/// Exit notifications to a supervisor whose mailbox is full are dropped and
/// counted. ABI.md: "Any other kernel message (a notice, an exit
/// notification) that finds a mailbox full is dropped and counted in its
/// owner's report, whatever the mailbox's overflow mode".
#[test]
fn exit_notices_to_a_full_supervisor_mailbox_are_dropped_and_counted() {
    // Waits for a type nobody sends, forever.
    let sink = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run")
        (drop (call $receive (i32.const 0x4321) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64)))))"#;
    for mode in estalogic_tests::OVERFLOW_MODES {
        for (deterministic, workers) in estalogic_tests::RUNS {
            let mut kernel = estalogic_tests::kernel(deterministic, workers);
            kernel.set_restart_policy(Box::new(Limited(5)));
            load_wat_with(&mut kernel, "sink", sink, &mailbox(2, mode));
            load_wat_with(
                &mut kernel,
                "crasher",
                &trapper("unreachable"),
                r#""restart":"on_failure","supervisor":"sink""#,
            );
            kernel.spawn_all().unwrap();
            let (_, report) = run_with_watchdog(kernel, 30);
            each_reported_once(&report);
            assert_eq!(report.restarts.len(), 6);
            let sink = report.process("sink").unwrap();
            assert_eq!(sink.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
            assert_eq!(
                sink.received + sink.undelivered,
                6,
                "{mode} {deterministic} {workers}: six notices, each kept or counted: {sink:?}"
            );
        }
    }
}

// -------------------------------------------------------------- shutdown

/// ShutdownHandle::request: "A request made while no run is in progress
/// stops the next run at once ... either way the run it stops uses it up,
/// and a later run starts afresh."
#[test]
fn a_request_before_a_run_stops_it_at_once_and_is_used_up() {
    for (deterministic, workers) in estalogic_tests::RUNS {
        let mut kernel = estalogic_tests::kernel(deterministic, workers);
        load_bundled(&mut kernel, "pong", "run");
        load_bundled(&mut kernel, "ping", "run");
        kernel.shutdown_handle().request();
        kernel.shutdown_handle().request();
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        assert_eq!(report.processes.len(), 2);
        for p in &report.processes {
            assert_eq!(p.status, ExitStatus::Stopped(ErrorCode::SHUTDOWN), "{p:?}");
            assert_eq!(p.sent, 0, "stopped at once: {p:?}");
        }
        // Used up: the next run goes to the end.
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        for p in &report.processes {
            assert_eq!(p.status, ExitStatus::Exited(0), "{p:?}");
        }
        // Requested after a run: stops the next one.
        kernel.shutdown_handle().request();
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        for p in &report.processes {
            assert_eq!(p.status, ExitStatus::Stopped(ErrorCode::SHUTDOWN), "{p:?}");
        }
        // An empty run uses a request up too?
        kernel.shutdown_handle().request();
        let empty = kernel.run();
        assert!(empty.processes.is_empty());
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        for p in &report.processes {
            assert_eq!(
                p.status,
                ExitStatus::Exited(0),
                "a request used up by an empty run: {p:?}"
            );
        }
    }
}

/// Shutdown at random points of a busy run (ping-pong, a restart storm, a
/// spinner, handlers): every run returns, every process is reported exactly
/// once with a sensible status. ARCHITECTURE.md inv. 10: "a shutdown
/// request stops all of them with SHUTDOWN: nothing new starts after it".
#[test]
fn shutdown_at_random_points_of_a_busy_run() {
    let iterations: u64 = std::env::var("ESTALOGIC_TEST_SHUTDOWNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let spinner = r#"(module (memory (export "memory") 1)
      (func (export "run") (loop (br 0))))"#;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let started = Instant::now();
    for i in 0..iterations {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let workers = [1, 2, 3][(seed % 3) as usize];
        let delay_us = (seed >> 8) % 20_000;
        let limit = [5u32, 8, 64][((seed >> 32) % 3) as usize];
        let mut kernel = Kernel::builder()
            .workers(workers)
            .max_processes(limit)
            .build()
            .unwrap();
        load_bundled(&mut kernel, "pong", "run");
        load_bundled(&mut kernel, "ping", "run");
        load_wat(&mut kernel, "spinner", spinner, "low");
        load_wat_with(
            &mut kernel,
            "crasher",
            &trapper("unreachable"),
            r#""restart":"on_failure","supervisor":"pong""#,
        );
        let mut spawned = kernel.spawn_all().unwrap().len();
        // Fill the table with idle handlers.
        let handler = r#"(module (memory (export "memory") 1)
          (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
          (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;
        estalogic_tests::load_handler(&mut kernel, "h", handler);
        while spawned < limit as usize - 1 && spawned < 20 {
            kernel.spawn("h").unwrap();
            spawned += 1;
        }
        let shutdown = kernel.shutdown_handle();
        let requester = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(delay_us));
            shutdown.request();
        });
        let (_, report) = run_with_watchdog(kernel, 30);
        requester.join().unwrap();
        each_reported_once(&report);
        for p in &report.processes {
            let ok = match (p.module.as_str(), &p.status) {
                (_, ExitStatus::Stopped(c)) if *c == ErrorCode::SHUTDOWN => true,
                (_, ExitStatus::Stopped(c)) if *c == ErrorCode::RESTARTED => true,
                ("crasher", ExitStatus::Trapped { code, .. }) => {
                    *code == ErrorCode::TRAP_UNREACHABLE
                }
                // A system restart of the storm restarts ping's peer too:
                // ping may fail (its own exit code).
                ("ping" | "pong" | "h", ExitStatus::Exited(_)) => true,
                _ => false,
            };
            assert!(
                ok,
                "iteration {i} (workers {workers}, delay {delay_us} us, limit {limit}): {p:?}"
            );
        }
        // The spinner never ends by itself: it must have been stopped.
        assert!(report.process("spinner").is_some());
    }
    eprintln!("{iterations} shutdowns in {:?}", started.elapsed());
}

// ---------------------------------------------------------- determinism

/// ARCHITECTURE.md, "Deterministic mode": "Preemption points depend only on
/// fuel, so a run repeats."
#[test]
fn deterministic_runs_with_restarts_timers_and_traps_repeat_exactly() {
    let scenario = || {
        let mut kernel = Kernel::builder()
            .deterministic(true)
            .trace_ipc(true)
            .max_processes(6)
            .build()
            .unwrap();
        load_testkit(&mut kernel, "watcher", "watcher", "");
        load_wat_with(
            &mut kernel,
            "crasher",
            &trapper("unreachable"),
            r#""restart":"on_failure","supervisor":"watcher""#,
        );
        load_bundled(&mut kernel, "pong", "run");
        load_testkit(&mut kernel, "tping", "timed_ping", "");
        let spinner = r#"(module (memory (export "memory") 1)
          (func (export "run") (local $i i32)
            (loop (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if 0 (i32.lt_u (local.get $i) (i32.const 3000000))))))"#;
        load_wat(&mut kernel, "spinner", spinner, "high");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        let mut text = format!(
            "{:#?}\n{:#?}\n{:#?}\n{:#?}\n{}",
            report.processes, report.stats, report.restarts, report.trace, report.trace_dropped
        );
        // Timestamps in the trace are virtual too; keep them.
        text.push_str(&format!("{}", report.processes.len()));
        text
    };
    let first = scenario();
    for round in 0..3 {
        let again = scenario();
        if again != first {
            let (a, b): (Vec<_>, Vec<_>) = (first.lines().collect(), again.lines().collect());
            let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            panic!(
                "round {round}: reports differ at line {at}:\n  {}\n  {}",
                a.get(at).unwrap_or(&""),
                b.get(at).unwrap_or(&"")
            );
        }
    }
}

// -------------------------------------------------------------- handlers

/// 10,000 idle handler processes receiving a broadcast.
/// ABI.md, broadcast: "returns how many mailboxes accepted one".
#[test]
fn ten_thousand_idle_handlers_receive_a_broadcast() {
    let n = 10_000u32;
    // Counts its calls: exits 0 on the broadcast PING (STARTED first).
    let handler = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param $len i32) (result i32)
        (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
          (then (return (i32.const 42))))
        (i32.const 0)))"#;
    let broadcaster = r#"(module
      (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
      (import "estalogic" "yield_now" (func $yield (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32) (local $i i32)
        (loop (drop (call $yield)) (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if 0 (i32.lt_u (local.get $i) (i32.const 50))))
        (i32.wrap_i64 (call $broadcast (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 3)))))"#;
    for workers in [1, 2] {
        let mut kernel = Kernel::builder()
            .workers(workers)
            .max_processes(n + 1)
            .build()
            .unwrap();
        estalogic_tests::load_handler(&mut kernel, "h", handler);
        let caps: Vec<String> = ALL_CAPS
            .iter()
            .chain(["messaging:broadcast"].iter())
            .map(|c| format!("{c:?}"))
            .collect();
        let m = estalogic_kernel::Manifest::parse(&format!(
            r#"{{"name":"b","version":"0.1.0","entry_point":"run","runtime":"wasm32",
                "priority":"low","capabilities_required":[{}]}}"#,
            caps.join(",")
        ))
        .unwrap();
        kernel
            .load_module(m, broadcaster.as_bytes(), Path::new("b"))
            .unwrap();
        for _ in 0..n {
            kernel.spawn("h").unwrap();
        }
        kernel.spawn("b").unwrap();
        let started = Instant::now();
        let (_, report) = run_with_watchdog(kernel, 60);
        eprintln!("workers {workers}: {:?}", started.elapsed());
        each_reported_once(&report);
        let b = report.process("b").unwrap();
        assert_eq!(b.status, ExitStatus::Exited(n as i32), "{b:?}");
        let handled = report
            .processes
            .iter()
            .filter(|p| p.module == "h" && p.status == ExitStatus::Exited(42))
            .count();
        assert_eq!(handled, n as usize);
    }
}

/// A handler that exits in its first call (STARTED), by returning and by
/// `exit`, under a restart policy and at a limit of 1.
/// ABI.md: "The handler returns 0 to wait for the next message; any other
/// value ends the process with that exit code (`exit` works too, for code
/// 0)."
#[test]
fn a_handler_that_ends_in_its_first_call() {
    let returns = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param i32) (result i32) (i32.const -5)))"#;
    let exits = r#"(module (import "estalogic" "exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param i32) (result i32) (call $exit (i32.const 9)) (i32.const 0)))"#;
    let traps = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
      (func (export "handle") (param i32) (result i32) unreachable))"#;
    for (deterministic, workers) in estalogic_tests::RUNS {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .workers(workers)
            .max_processes(1)
            .build()
            .unwrap();
        for (name, wat) in [("r", returns), ("e", exits), ("t", traps)] {
            let caps: Vec<String> = ALL_CAPS.iter().map(|c| format!("{c:?}")).collect();
            let m = estalogic_kernel::Manifest::parse(&format!(
                r#"{{"name":"{name}","version":"0.1.0","entry_point":"handle","runtime":"wasm32",
                    "restart":"on_failure","capabilities_required":[{}]}}"#,
                caps.join(",")
            ))
            .unwrap();
            kernel
                .load_module(m, wat.as_bytes(), Path::new(name))
                .unwrap();
        }
        for (name, expected) in [("r", ExitStatus::Exited(-5)), ("e", ExitStatus::Exited(9))] {
            for _ in 0..50 {
                kernel.spawn(name).unwrap();
                let report = kernel.run();
                assert_eq!(report.processes.len(), 1);
                assert_eq!(report.processes[0].status, expected, "{name}");
                assert!(report.restarts.is_empty(), "an exit is not a failure");
            }
        }
        kernel.spawn("t").unwrap();
        let (_, report) = run_with_watchdog(kernel, 30);
        assert_eq!(report.restarts.len(), 15);
        assert_eq!(
            report.processes.iter().filter(|p| p.module == "t").count(),
            15,
            "{deterministic} {workers}:\n{}",
            summary(&report)
        );
        each_reported_once(&report);
    }
}

/// A system restart starts modules that had no process in the run (one
/// that ended normally, one never spawned). supervision.rs: "RestartSystem:
/// Restart every process of the app."; ARCHITECTURE.md: "then whatever a
/// supervisor or system restart stops and brings back".
#[test]
fn a_system_restart_restarts_only_processes_that_were_there() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_wat(&mut kernel, "oneshot", EXIT0, "normal");
    load_wat(&mut kernel, "never_spawned", EXIT0, "normal");
    load_wat_with(
        &mut kernel,
        "crasher",
        &trapper("unreachable"),
        CRASHER_EXTRA,
    );
    kernel.spawn("oneshot").unwrap();
    kernel.spawn("crasher").unwrap();
    let report = kernel.run();
    let count = |m: &str| report.processes.iter().filter(|p| p.module == m).count();
    assert_eq!(
        (count("oneshot"), count("never_spawned")),
        (1, 0),
        "a system restart started modules that had no process:\n{}",
        summary(&report)
    );
}

/// A client calling `pong` (which supervises a crasher) in a loop while the
/// restart storm restarts pong (supervisor and system restarts) under it.
/// ABI.md: "If it ends first — returns, exits, traps, is stopped, or is
/// restarted with its mail — the kernel answers each call it still owes
/// with a DELIVERY_FAILURE notice, code NO_SUCH_PROCESS ... so a caller
/// does not wait on a process that has gone."
#[test]
fn calls_in_flight_survive_supervisor_and_system_restarts_of_their_server() {
    let client = r#"(module
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "yield_now" (func $yield (result i64)))
      (import "estalogic" "send_receive" (func $call (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "pong")
      (func (export "run") (result i32) (local $i i32) (local $pid i64) (local $r i64) (local $fails i32)
        (i64.store (i32.const 16) (i64.const 0x0102030405060708))
        (loop $calls
          (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
          (if (i64.lt_s (local.get $pid) (i64.const 0))
            (then (drop (call $yield)) (br $calls)))
          (local.set $r (call $call (local.get $pid) (i64.const 0) (i32.const 1) (i32.const 0)
                                    (i32.const 16) (i32.const 8) (i64.const -1) (i64.const -1)
                                    (i32.const 64) (i32.const 128) (i32.const 64)))
          (if (i64.lt_s (local.get $r) (i64.const 0))
            (then (local.set $fails (i32.add (local.get $fails) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $calls (i32.lt_u (local.get $i) (i32.const 20000))))
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 16) (i32.const 0)))
        (local.get $fails)))"#;
    for (deterministic, workers) in estalogic_tests::RUNS {
        for _ in 0..3 {
            let mut kernel = estalogic_tests::kernel(deterministic, workers);
            load_bundled(&mut kernel, "pong", "run");
            load_wat(&mut kernel, "client", client, "normal");
            // A slow crasher: spins a little before trapping, so the storm
            // overlaps the calls.
            load_wat_with(
                &mut kernel,
                "crasher",
                &trapper(
                    "(local $i i32) (loop (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if 0 (i32.lt_u (local.get $i) (i32.const 200000)))) unreachable",
                ),
                r#""restart":"on_failure","supervisor":"pong""#,
            );
            kernel.spawn_all().unwrap();
            let (_, report) = run_with_watchdog(kernel, 30);
            each_reported_once(&report);
            let clients: Vec<_> = report
                .processes
                .iter()
                .filter(|p| p.module == "client")
                .collect();
            let last = clients.last().unwrap();
            assert!(
                matches!(last.status, ExitStatus::Exited(_)),
                "{deterministic} {workers}: the last client must finish:\n{}",
                summary(&report)
            );
            for p in &report.processes {
                assert_ne!(
                    p.status,
                    ExitStatus::Stopped(ErrorCode::DEADLOCKED),
                    "{deterministic} {workers}: nobody waits for ever:\n{}",
                    summary(&report)
                );
            }
            eprintln!(
                "{deterministic} {workers}: {} clients, last {}, {} pongs",
                clients.len(),
                last.status,
                report
                    .processes
                    .iter()
                    .filter(|p| p.module == "pong")
                    .count()
            );
        }
    }
}

/// init.rs: "A count of 0 is taken as 1"; a limit the host cannot map
/// "fails at boot" with the sysctl to run — never a panic.
#[test]
fn extreme_process_limits_fail_cleanly() {
    let mut kernel = Kernel::builder().max_processes(0).build().unwrap();
    load_wat(&mut kernel, "a", EXIT0, "normal");
    kernel.spawn("a").unwrap();
    let refused = kernel.spawn("a");
    assert!(
        matches!(refused, Err(KernelError::TooManyProcesses { limit: 1, .. })),
        "{refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        message.starts_with("cannot spawn a: the limit of 1 live process(es) is reached (1 alive;"),
        "{message}"
    );
    assert_eq!(kernel.run().processes.len(), 1);
    for limit in [u32::MAX, 50_000_000] {
        let started = Instant::now();
        let built = std::panic::catch_unwind(|| Kernel::builder().max_processes(limit).build());
        match built {
            Ok(Err(e)) => eprintln!("{limit}: {e} ({:?})", started.elapsed()),
            Ok(Ok(_)) => panic!("{limit}: built"),
            Err(_) => panic!("{limit}: build panicked"),
        }
    }
    // The largest the host's map count allows, spread over many workers.
    for (limit, workers) in [(900_000u32, 1usize), (900_000, 64)] {
        let started = Instant::now();
        let built = std::panic::catch_unwind(|| {
            Kernel::builder()
                .max_processes(limit)
                .workers(workers)
                .build()
                .map(|mut kernel| {
                    load_wat(&mut kernel, "a", EXIT0, "normal");
                    kernel.spawn("a").unwrap();
                    kernel.run().processes[0].status.clone()
                })
        });
        eprintln!(
            "{limit} x {workers}: {:?} in {:?}",
            built
                .as_ref()
                .map(|r| r.as_ref().map_err(|e| e.to_string())),
            started.elapsed()
        );
        assert!(built.is_ok(), "{limit} x {workers}: build panicked");
    }
}

/// A panic on a kernel worker (here inside the embedder's restart policy)
/// ends the run: the other workers stop at their next checkpoint and
/// `Kernel::run` resumes the panic on its caller's thread. Before, with two
/// workers, the other worker waited for ever for the process the panicking
/// one had taken, and the run never returned.
#[test]
fn a_panic_on_a_worker_ends_the_run_and_reaches_the_caller() {
    for workers in [1, 2] {
        let mut kernel = Kernel::builder()
            .workers(workers)
            .build()
            .expect("the kernel builds");
        kernel.set_restart_policy(Box::new(PanickingPolicy));
        load_wat(
            &mut kernel,
            "spinner",
            r#"(module (memory (export "memory") 1) (func (export "run") (loop br 0)))"#,
            "normal",
        );
        load_wat_with(
            &mut kernel,
            "crasher",
            &trapper("unreachable"),
            r#""restart":"on_failure""#,
        );
        kernel.spawn_all().expect("both spawn");
        let outcome = run_catching_panic(kernel)
            .unwrap_or_else(|| panic!("{workers} workers: the run did not return within 60 s"));
        assert_eq!(
            outcome,
            Err("the policy panics".to_string()),
            "{workers} workers: the run resumes the worker's panic"
        );
    }
}
