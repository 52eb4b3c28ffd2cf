//! Handoffs and direct deliveries under load, against invariants 7, 9 and
//! 10 and deterministic repeatability: every pair of levels, mixed task
//! and handler pairs with spinners on two workers, a rerun after a run
//! stopped with processes queued, minimum service beside ping-pong, and
//! shutdowns mid ping-pong. From the twenty-fifth probe round, on the
//! lock-free hint of c68dfe6 (it found no defect).

use estalogic_bench::messaging::{HANDLER_INBOX as INBOX, handler_ping, handler_pong, task_ping};
use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{ALL_CAPS, manifest};
use std::path::Path;
use std::time::Duration;

fn load_as(kernel: &mut Kernel, name: &str, entry: &str, bytes: &[u8], priority: &str) {
    kernel
        .load_module(
            manifest(name, entry, ALL_CAPS, priority),
            bytes,
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

fn handler_pair(kernel: &mut Kernel, tag: &str, rounds: u64, ping_level: &str, pong_level: &str) {
    let (ping, pong) = (format!("hping{tag}"), format!("hpong{tag}"));
    load_as(
        kernel,
        &pong,
        "handle",
        handler_pong().as_bytes(),
        pong_level,
    );
    load_as(
        kernel,
        &ping,
        "handle",
        handler_ping(rounds, &pong).as_bytes(),
        ping_level,
    );
    kernel.spawn(&pong).unwrap();
    kernel.spawn(&ping).unwrap();
}

fn task_pair(kernel: &mut Kernel, tag: &str, rounds: u64, ping_level: &str, pong_level: &str) {
    let (ping, pong) = (format!("tping{tag}"), format!("tpong{tag}"));
    let bytes = estalogic_services::get("pong").expect("bundled pong");
    load_as(kernel, &pong, "run", bytes, pong_level);
    load_as(
        kernel,
        &ping,
        "run",
        task_ping(rounds, &pong).as_bytes(),
        ping_level,
    );
    kernel.spawn(&pong).unwrap();
    kernel.spawn(&ping).unwrap();
}

/// A task spinning `n` iterations (0: for ever), then exiting 0.
fn spinner(n: u64) -> String {
    if n == 0 {
        return r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (loop (br 0)) (i32.const 0)))"#.into();
    }
    format!(
        r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i64)
    (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const {n}))))
    (i32.const 0)))"#
    )
}

fn spin(kernel: &mut Kernel, name: &str, n: u64, level: &str) {
    load_as(kernel, name, "run", spinner(n).as_bytes(), level);
    kernel.spawn(name).unwrap();
}

/// Runs `kernel` on a thread; panics if the run does not end in `limit`.
fn run_within(kernel: Kernel, limit: Duration, what: &str) -> (Kernel, RunReport) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kernel = kernel;
        let report = kernel.run();
        let _ = tx.send((kernel, report));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what}: the run did not end within {limit:?}"))
}

/// Everything a deterministic run should repeat (pids aside).
fn fingerprint(report: &RunReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .processes
        .iter()
        .map(|p| {
            format!(
                "{} {:?} sent={} recv={} fuel={} cpu={} wait={} pre={} req={}",
                p.module,
                p.status,
                p.sent,
                p.received,
                p.fuel_used,
                p.cpu_ns,
                p.max_wait_ns,
                p.preemptions,
                p.requeues
            )
        })
        .collect();
    lines.push(format!(
        "handoffs={} checkpoints={}",
        report.stats.handoffs, report.stats.checkpoints
    ));
    lines
}

fn mixed_load(kernel: &mut Kernel) {
    handler_pair(kernel, "a", 3_000, "normal", "normal");
    handler_pair(kernel, "b", 2_000, "high", "high");
    handler_pair(kernel, "c", 1_000, "low", "critical");
    task_pair(kernel, "a", 2_000, "normal", "normal");
    task_pair(kernel, "b", 1_000, "lazy", "high");
    spin(kernel, "spin_normal", 3_000_000, "normal");
    spin(kernel, "spin_high", 1_000_000, "high");
    spin(kernel, "spin_lazy", 2_000_000, "lazy");
}

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

fn all_exited(report: &RunReport, what: &str) {
    for p in &report.processes {
        assert_eq!(p.status, ExitStatus::Exited(0), "{what}: {p:?}");
    }
}

#[test]
fn deterministic_mixed_load_repeats_bit_for_bit() {
    let mut first: Option<Vec<String>> = None;
    for round in 0..3 {
        let mut kernel = det();
        mixed_load(&mut kernel);
        let (_, report) = run_within(kernel, Duration::from_secs(120), "mixed load");
        all_exited(&report, "mixed load");
        let print = fingerprint(&report);
        if round == 0 {
            for line in &print {
                eprintln!("FP {line}");
            }
        }
        match &first {
            None => first = Some(print),
            Some(first) => assert_eq!(first, &print, "round {round} differs"),
        }
    }
}

#[test]
fn deterministic_rerun_on_the_same_kernel_after_a_shutdown_repeats_a_fresh_run() {
    // A fresh kernel's run of the mixed load...
    let mut fresh = det();
    mixed_load(&mut fresh);
    let (_, fresh_report) = run_within(fresh, Duration::from_secs(120), "fresh");
    // ...and the same load on a kernel whose first run ended stopped by a
    // shutdown with processes still queued (three NORMAL spinners and a
    // ping-pong pair that would never end).
    let mut kernel = det();
    for i in 0..3 {
        spin(&mut kernel, &format!("forever{i}"), 0, "normal");
    }
    handler_pair(&mut kernel, "z", 1_000_000_000, "normal", "normal");
    let shutdown = kernel.shutdown_handle();
    let runner = std::thread::spawn(move || {
        let report = kernel.run();
        (kernel, report)
    });
    std::thread::sleep(Duration::from_millis(50));
    shutdown.request();
    let (mut kernel, stopped) = runner.join().unwrap();
    for p in &stopped.processes {
        assert_eq!(p.status, ExitStatus::Stopped(ErrorCode::SHUTDOWN), "{p:?}");
    }
    mixed_load(&mut kernel);
    let (_, again) = run_within(kernel, Duration::from_secs(120), "again");
    all_exited(&again, "again");
    assert_eq!(fingerprint(&fresh_report), fingerprint(&again));
}

/// One handler pair's handoffs on a fresh one-worker kernel, and after a
/// run on the same kernel stopped by a shutdown with processes queued.
#[test]
fn handoffs_of_a_pair_after_a_run_stopped_with_processes_queued() {
    for deterministic in [false, true] {
        let mut fresh = Kernel::builder()
            .workers(1)
            .deterministic(deterministic)
            .build()
            .unwrap();
        handler_pair(&mut fresh, "", 2_000, "normal", "normal");
        let (_, fresh_report) = run_within(fresh, Duration::from_secs(60), "fresh pair");
        all_exited(&fresh_report, "fresh pair");

        let mut kernel = Kernel::builder()
            .workers(1)
            .deterministic(deterministic)
            .build()
            .unwrap();
        for i in 0..4 {
            spin(&mut kernel, &format!("forever{i}"), 0, "normal");
        }
        handler_pair(&mut kernel, "z", 1_000_000_000, "normal", "normal");
        task_pair(&mut kernel, "z", 1_000_000_000, "normal", "normal");
        let shutdown = kernel.shutdown_handle();
        let runner = std::thread::spawn(move || {
            let report = kernel.run();
            (kernel, report)
        });
        std::thread::sleep(Duration::from_millis(50));
        shutdown.request();
        let (mut kernel, stopped) = runner.join().unwrap();
        assert!(
            stopped
                .processes
                .iter()
                .all(|p| p.status == ExitStatus::Stopped(ErrorCode::SHUTDOWN))
        );
        handler_pair(&mut kernel, "", 2_000, "normal", "normal");
        let (_, again) = run_within(kernel, Duration::from_secs(60), "pair again");
        all_exited(&again, "pair again");
        assert!(
            fresh_report.stats.handoffs >= 1_800,
            "deterministic {deterministic}: fresh {} handoffs",
            fresh_report.stats.handoffs
        );
        assert!(
            again.stats.handoffs >= 1_800,
            "deterministic {deterministic}: after a stopped run {} handoffs (fresh {})",
            again.stats.handoffs,
            fresh_report.stats.handoffs
        );
    }
}

/// Two workers, mixed levels, handlers and tasks, many times: every run
/// ends, every process exits 0 (nothing DEADLOCKED, no lost wake-up).
#[test]
fn two_workers_mixed_load_always_ends_cleanly() {
    for round in 0..12 {
        let mut kernel = Kernel::builder().workers(2).build().unwrap();
        for i in 0..4 {
            let levels = ["critical", "high", "normal", "low", "lazy"];
            let (a, b) = (levels[i % 5], levels[(i + 2) % 5]);
            handler_pair(&mut kernel, &format!("{i}"), 2_000, a, b);
            task_pair(&mut kernel, &format!("{i}"), 500, b, a);
        }
        spin(&mut kernel, "spin_normal", 2_000_000, "normal");
        spin(&mut kernel, "spin_low", 2_000_000, "low");
        spin(&mut kernel, "spin_lazy", 2_000_000, "lazy");
        let (_, report) = run_within(kernel, Duration::from_secs(60), &format!("round {round}"));
        all_exited(&report, &format!("round {round}"));
    }
}

/// Shutdown in the middle of ping-pong under load on two workers: the run
/// ends, every process is stopped with SHUTDOWN; repeated.
#[test]
fn shutdown_mid_ping_pong_under_load_on_two_workers() {
    for round in 0..10u64 {
        let mut kernel = Kernel::builder().workers(2).build().unwrap();
        for i in 0..4 {
            let levels = ["critical", "high", "normal", "low", "lazy"];
            handler_pair(
                &mut kernel,
                &format!("{i}"),
                1_000_000_000,
                levels[i],
                levels[(i + 1) % 5],
            );
            task_pair(
                &mut kernel,
                &format!("{i}"),
                1_000_000_000,
                levels[(i + 3) % 5],
                levels[i],
            );
        }
        spin(&mut kernel, "spin_normal", 0, "normal");
        spin(&mut kernel, "spin_lazy", 0, "lazy");
        let shutdown = kernel.shutdown_handle();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let report = kernel.run();
            let _ = tx.send(report);
        });
        std::thread::sleep(Duration::from_millis(5 + 7 * round));
        shutdown.request();
        let report = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("round {round}: the run did not end after a shutdown"));
        for p in &report.processes {
            assert_eq!(
                p.status,
                ExitStatus::Stopped(ErrorCode::SHUTDOWN),
                "round {round}: {p:?}"
            );
        }
    }
}

/// Minimum service under ping-pong load (invariant 7), virtual time: a
/// LAZY, a LOW and a NORMAL spinner beside four ping-pong pairs (handlers
/// and tasks, NORMAL..CRITICAL) are served within their windows over
/// 300 ms of virtual time (a CRITICAL sleeper's exit ends the look).
#[test]
fn spinners_are_served_beside_ping_pong_pairs() {
    let sleeper = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (drop (call $receive (i32.const 0x7777) (i64.const 300) (i32.const 0) (i32.const 64) (i32.const 0)))
        (i32.const 0)))"#;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .workers(1)
            .build()
            .unwrap();
        handler_pair(&mut kernel, "a", 1_000_000_000, "normal", "normal");
        handler_pair(&mut kernel, "b", 1_000_000_000, "critical", "high");
        task_pair(&mut kernel, "a", 1_000_000_000, "normal", "high");
        task_pair(&mut kernel, "b", 1_000_000_000, "high", "normal");
        spin(&mut kernel, "spin_low", 0, "low");
        spin(&mut kernel, "spin_lazy", 0, "lazy");
        spin(&mut kernel, "spin_normal", 0, "normal");
        load_as(
            &mut kernel,
            "sleeper",
            "run",
            sleeper.as_bytes(),
            "critical",
        );
        kernel.spawn("sleeper").unwrap();
        let (first, report) = estalogic_tests::first_exit_then_stop(kernel);
        assert_eq!(first.module, "sleeper", "{first:?}");
        for p in &report.processes {
            eprintln!(
                "det {deterministic}: {} {:?} wait={} cpu={} fuel={} sent={} recv={}",
                p.module, p.status, p.max_wait_ns, p.cpu_ns, p.fuel_used, p.sent, p.received
            );
        }
        if deterministic {
            for (name, window) in [
                ("spin_low", 50_000_000),
                ("spin_lazy", 100_000_000),
                ("spin_normal", 25_000_000),
            ] {
                let p = report.process(name).unwrap();
                assert!(p.fuel_used > 0, "{name} never ran: {p:?}");
                assert!(
                    p.max_wait_ns <= window,
                    "{name} waited {} ns (window {window}): {p:?}",
                    p.max_wait_ns
                );
            }
        }
    }
}

/// A handler's send never runs a lower-level handler inside it, whatever
/// the two levels, and an equal or higher one is run inside it when
/// nothing else is ready (one worker, where only a delivery inside the send
/// can answer before the asker looks); on two workers the other worker
/// may answer in parallel, and the run ends cleanly either way.
#[test]
fn direct_delivery_respects_levels_at_every_pair_of_levels() {
    let levels = ["critical", "high", "normal", "low", "lazy"];
    for workers in [1, 2] {
        for (i, asker_level) in levels.iter().enumerate() {
            for (j, answerer_level) in levels.iter().enumerate() {
                let mut kernel = Kernel::builder().workers(workers).build().unwrap();
                load_as(
                    &mut kernel,
                    "answerer",
                    "handle",
                    handler_pong().as_bytes(),
                    answerer_level,
                );
                load_as(
                    &mut kernel,
                    "asker",
                    "handle",
                    asker().as_bytes(),
                    asker_level,
                );
                kernel.spawn("answerer").unwrap();
                kernel.spawn("asker").unwrap();
                let (_, report) = run_within(kernel, Duration::from_secs(30), "asker");
                let status = report.process("asker").unwrap().status.clone();
                let what =
                    format!("{workers} workers, asker {asker_level}, answerer {answerer_level}");
                if workers == 2 {
                    // The other worker may run the answerer at once, in
                    // parallel, whatever its level: its answer can then be
                    // there for the asker's look (0) or not (4).
                    assert!(
                        matches!(status, ExitStatus::Exited(0) | ExitStatus::Exited(4)),
                        "{what}: {status:?}"
                    );
                } else if j > i {
                    assert_eq!(
                        status,
                        ExitStatus::Exited(4),
                        "lower level ran inside: {what}"
                    );
                } else {
                    assert_eq!(
                        status,
                        ExitStatus::Exited(0),
                        "not delivered directly: {what}"
                    );
                }
            }
        }
    }
}

fn asker() -> String {
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "answerer")
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $peer i64) (local $code i32)
    (local.set $peer (call $lookup (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 2048) (i32.const 0))
    (if (i64.lt_s (call $send (local.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4)) (i64.const 0))
      (then (call $exit (i32.const 5))))
    (local.set $code (i32.const 4))
    (if (i64.ge_s (call $receive (i32.const 2) (i64.const 0) (i32.const 3000) (i32.const 3100) (i32.const 64)) (i64.const 0))
      (then (local.set $code (i32.const 0))))
    (drop (call $send (local.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $exit (local.get $code))
    (i32.const 0)))"#
    )
}
