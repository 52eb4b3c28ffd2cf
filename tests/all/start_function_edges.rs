//! What a guest does before or around its entry point (the forty-third
//! probe round, which found no defect; kept as the promises of docs/ABI.md's
//! "Start functions"): start functions (spinning, waiting, making syscalls, trapping,
//! exiting), data and element segments used at instantiation, memory growth
//! in the start function, for task and handler processes, and that a worker
//! busy with such a guest stalls no well-behaved peer.

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{
    ALL_CAPS, describe, in_each_run, kernel, load_entry, load_handler, load_leveled, load_wat,
    report_of, run_and_stop_after, trapped,
};
use std::sync::mpsc;
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(60);

/// Asserts how `module`'s process ended, showing the whole report if not.
fn expect_status(report: &RunReport, module: &str, expected: ExitStatus, what: &str) {
    assert_eq!(
        report_of(report, module).status,
        expected,
        "{what}\n{}",
        describe(report)
    );
}

const IMPORTS: &str = r#"
  (import "estalogic" "exit" (func $exit (param i32)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
"#;

/// A task guest: imports, `decls`, and an entry `run` returning `body`'s i32.
fn task(decls: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS} (memory (export "memory") 1) {decls}
             (func (export "run") (result i32) {body}))"#
    )
}

/// A handler guest: imports, an inbox (header at 1024, 4,096 bytes of
/// payload at 1080), `decls`, and `handle` running `body`.
fn handler(decls: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS} (memory (export "memory") 1)
             (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
             {decls}
             (func (export "handle") (param $len i32) (result i32) {body}))"#
    )
}

/// A start function that never returns.
const SPIN_START: &str = "(func $spin (loop (br 0))) (start $spin)";

/// A well-behaved peer: about 2.4 million units of work (24 slices), then
/// exit code 0.
const PEER: &str = r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 300000))))
    (i32.const 0)))"#;

/// Runs `kernel` on a thread; its report, or a panic if it does not end
/// within the watchdog (a hang).
fn run_watched(mut kernel: Kernel, what: &str) -> RunReport {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(kernel.run());
    });
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("{what}: the run did not end within 60 s"))
}

/// Runs `kernel` on a thread until `module`'s first process ends (within
/// the watchdog), then asks for a shutdown; the final report (within the
/// watchdog too).
fn run_until_exit_of(mut kernel: Kernel, module: &str, what: &str) -> RunReport {
    let exits = kernel.subscribe_exits();
    let shutdown = kernel.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(kernel.run());
    });
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let exit = exits
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{what}: {module} did not end within 60 s"));
        if exit.module == module {
            break;
        }
    }
    shutdown.request();
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("{what}: the run did not end within 60 s of the shutdown"))
}

// ---------------------------------------------------------------------------
// Start functions that never return.

#[test]
fn a_task_start_that_never_returns_is_preempted_and_its_peer_finishes() {
    in_each_run(|mut k, what| {
        load_wat(
            &mut k,
            "stuck",
            &task(SPIN_START, "(i32.const 0)"),
            "normal",
        );
        load_wat(&mut k, "peer", PEER, "normal");
        // The spinner first: on one worker it runs first and must be
        // preempted inside its start for the peer to run at all.
        k.spawn("stuck").unwrap();
        k.spawn("peer").unwrap();
        let report = run_until_exit_of(k, "peer", what);
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
        let stuck = report_of(&report, "stuck");
        assert_eq!(
            stuck.status,
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            "{what}: {stuck:?}"
        );
    });
}

#[test]
fn a_high_priority_task_spinning_in_its_start_does_not_starve_a_normal_peer() {
    in_each_run(|mut k, what| {
        load_leveled(
            &mut k,
            "stuck",
            "run",
            &task(SPIN_START, "(i32.const 0)"),
            &quoted(ALL_CAPS),
            "high",
            "",
        );
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn("stuck").unwrap();
        k.spawn("peer").unwrap();
        let report = run_until_exit_of(k, "peer", what);
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
        expect_status(
            &report,
            "stuck",
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            what,
        );
    });
}

fn quoted(caps: &[&str]) -> Vec<&'static str> {
    caps.iter()
        .map(|c| &*Box::leak(format!("{c:?}").into_boxed_str()))
        .collect()
}

#[test]
fn shutdown_stops_a_lone_task_stuck_in_its_start_and_the_kernel_runs_again() {
    in_each_run(|mut k, what| {
        load_wat(
            &mut k,
            "stuck",
            &task(SPIN_START, "(i32.const 0)"),
            "normal",
        );
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn("stuck").unwrap();
        let (mut k, report) = run_and_stop_after(k, Duration::from_millis(100), WATCHDOG)
            .unwrap_or_else(|| {
                panic!("{what}: shutdown did not stop a process stuck in its start")
            });
        expect_status(
            &report,
            "stuck",
            ExitStatus::Stopped(ErrorCode::SHUTDOWN),
            what,
        );
        // The instance abandoned halfway through its instantiation gave its
        // pool slot back: the next run starts and finishes a process.
        k.spawn("peer").unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
    });
}

#[test]
fn a_handler_start_that_never_returns_times_out_and_its_peer_finishes() {
    in_each_run(|mut k, what| {
        load_handler(&mut k, "hstuck", &handler(SPIN_START, "(i32.const 0)"));
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
        let h = report_of(&report, "hstuck");
        assert_eq!(
            trapped(&h.status),
            Some(ErrorCode::TIMEOUT),
            "{what}: {h:?}"
        );
        // One call's budget (64 slices of 100,000), a few units past at most.
        assert!(
            (6_400_000..6_500_000).contains(&h.fuel_used),
            "{what}: {h:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Syscalls in start functions.

#[test]
fn a_task_start_may_wait_log_and_send_and_its_entry_sees_the_effects() {
    let decls = r#"
      (data (i32.const 100) "abcd")
      (data (i32.const 200) "hello from start")
      (global $timeout (mut i64) (i64.const 0))
      (global $logged (mut i64) (i64.const 0))
      (global $sent (mut i64) (i64.const 0))
      (func $init
        (global.set $timeout (call $receive (i32.const 0) (i64.const 5) (i32.const 0) (i32.const 64) (i32.const 64)))
        (global.set $logged (call $log (i32.const 2) (i32.const 200) (i32.const 16)))
        (global.set $sent (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 100) (i32.const 4))))
      (start $init)"#;
    let body = r#"(local $r i64)
      (if (i64.ne (global.get $timeout) (i64.const -3001)) (then (return (i32.const 1))))
      (if (i64.lt_s (global.get $logged) (i64.const 0)) (then (return (i32.const 2))))
      (if (i64.lt_s (global.get $sent) (i64.const 1)) (then (return (i32.const 3))))
      (local.set $r (call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 64)))
      (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 4))))
      (if (i32.ne (i32.load (i32.const 4)) (i32.const 0x1000)) (then (return (i32.const 5))))
      (if (i32.ne (i32.load (i32.const 64)) (i32.load (i32.const 100))) (then (return (i32.const 6))))
      (i32.const 0)"#;
    in_each_run(|mut k, what| {
        load_wat(&mut k, "early", &task(decls, body), "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        let p = report_of(&report, "early");
        assert_eq!(p.status, ExitStatus::Exited(0), "{what}: {p:?}");
        assert_eq!((p.sent, p.received), (1, 1), "{what}: {p:?}");
    });
}

#[test]
fn a_peer_can_message_a_task_still_in_its_start() {
    let waiter = task(
        r#"(global $got (mut i64) (i64.const 0))
           (func $init (global.set $got (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64))))
           (start $init)"#,
        "(i32.wrap_i64 (global.get $got))",
    );
    let sender = task(
        r#"(data (i32.const 100) "waiter")"#,
        r#"(local $pid i64)
           (local.set $pid (call $lookup (i32.const 100) (i32.const 6)))
           (if (i64.lt_s (local.get $pid) (i64.const 0)) (then (return (i32.const 1))))
           (if (i64.lt_s (call $send (local.get $pid) (i32.const 0x1000) (i32.const 0) (i32.const 200) (i32.const 3)) (i64.const 0))
             (then (return (i32.const 2))))
           (i32.const 0)"#,
    );
    in_each_run(|mut k, what| {
        load_wat(&mut k, "waiter", &waiter, "normal");
        load_wat(&mut k, "sender", &sender, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "sender", ExitStatus::Exited(0), what);
        expect_status(&report, "waiter", ExitStatus::Exited(3), what);
    });
}

#[test]
fn a_task_start_blocked_for_ever_in_receive_is_stopped_as_deadlocked() {
    let waiter = task(
        r#"(func $init (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64))))
           (start $init)"#,
        "(i32.const 0)",
    );
    in_each_run(|mut k, what| {
        load_wat(&mut k, "waiter", &waiter, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(
            &report,
            "waiter",
            ExitStatus::Stopped(ErrorCode::DEADLOCKED),
            what,
        );
    });
}

#[test]
fn exit_in_a_start_function_ends_the_process_with_that_code() {
    let decls = "(func $init (call $exit (i32.const 7))) (start $init)";
    in_each_run(|mut k, what| {
        load_wat(&mut k, "t", &task(decls, "unreachable"), "normal");
        load_handler(&mut k, "h", &handler(decls, "unreachable"));
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "t", ExitStatus::Exited(7), what);
        expect_status(&report, "h", ExitStatus::Exited(7), what);
    });
}

#[test]
fn a_handler_start_may_send_but_never_waits_and_started_comes_first() {
    let decls = r#"
      (data (i32.const 100) "abcd")
      (global $wb (mut i64) (i64.const 0))
      (global $sent (mut i64) (i64.const 0))
      (global $calls (mut i32) (i32.const 0))
      (func $init
        (global.set $wb (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64)))
        (global.set $sent (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 100) (i32.const 4))))
      (start $init)"#;
    let body = r#"
      (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
      (if (i32.eq (global.get $calls) (i32.const 1))
        (then (return (select (i32.const 0) (i32.const 11)
                              (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))))))
      (if (i64.ne (global.get $wb) (i64.const -2005)) (then (return (i32.const 12))))
      (if (i64.lt_s (global.get $sent) (i64.const 1)) (then (return (i32.const 13))))
      (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1000)) (then (return (i32.const 14))))
      (if (i32.ne (local.get $len) (i32.const 4)) (then (return (i32.const 15))))
      (if (i32.ne (i32.load (i32.const 1080)) (i32.load (i32.const 100))) (then (return (i32.const 16))))
      (i32.const 100)"#;
    in_each_run(|mut k, what| {
        load_handler(&mut k, "h", &handler(decls, body));
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        let h = report_of(&report, "h");
        assert_eq!(h.status, ExitStatus::Exited(100), "{what}: {h:?}");
    });
}

#[test]
fn a_handler_start_that_sends_to_an_idle_handler_gets_its_answer_after_started() {
    // The sender is still being instantiated when its send may be
    // delivered directly to the idle receiver, whose answer is for a
    // process with no instance ready yet.
    let pong = handler(
        "",
        r#"(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
           (drop (call $send (i64.load (i32.const 1032)) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
           (i32.const 1)"#,
    );
    let ping = handler(
        r#"(data (i32.const 100) "pong")
           (global $sent (mut i64) (i64.const 0))
           (global $calls (mut i32) (i32.const 0))
           (func $init (global.set $sent (call $send (call $lookup (i32.const 100) (i32.const 4))
                                                     (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0))))
           (start $init)"#,
        r#"(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
           (if (i32.eq (global.get $calls) (i32.const 1))
             (then (return (select (i32.const 0) (i32.const 21)
                                   (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))))))
           (if (i64.lt_s (global.get $sent) (i64.const 1)) (then (return (i32.const 22))))
           (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 23))))
           (i32.const 50)"#,
    );
    in_each_run(|mut k, what| {
        load_handler(&mut k, "pong", &pong);
        load_handler(&mut k, "ping", &ping);
        k.spawn("pong").unwrap();
        k.spawn("ping").unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "ping", ExitStatus::Exited(50), what);
        expect_status(&report, "pong", ExitStatus::Exited(1), what);
    });
}

#[test]
fn host_work_of_a_start_function_is_metered() {
    // 1,000 log lines of 60,000 bytes: 60 MB of host work in the start.
    let decls = r#"
      (func $init (local $i i32)
        (loop
          (drop (call $log (i32.const 4) (i32.const 0) (i32.const 60000)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 1000)))))
      (start $init)"#;
    in_each_run(|mut k, what| {
        load_wat(&mut k, "tlog", &task(decls, "(i32.const 0)"), "normal");
        load_handler(&mut k, "hlog", &handler(decls, "(i32.const 0)"));
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        let t = report_of(&report, "tlog");
        assert_eq!(t.status, ExitStatus::Exited(0), "{what}: {t:?}");
        assert!(t.fuel_used >= 60_000_000, "{what}: {t:?}");
        assert!(
            report.stats.checkpoints >= 300,
            "{what}: {:?}",
            report.stats
        );
        let h = report_of(&report, "hlog");
        assert_eq!(
            trapped(&h.status),
            Some(ErrorCode::TIMEOUT),
            "{what}: {h:?}"
        );
        // The budget, one syscall's step and 4,095 units past it at most.
        assert!(
            h.fuel_used < 6_400_000 + 60_000 + 256 + 4_096,
            "{what}: {h:?}"
        );
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
    });
}

#[test]
fn data_segments_of_a_task_are_paid_like_a_handlers() {
    // ABI "Handler processes" 5: a handler's instantiation pays its data
    // segments' bytes, a unit each. A task copying 12 MiB at
    // instantiation does the same work and should be charged alike.
    let wat = format!(
        r#"(module (memory (export "memory") 256)
             (data (i32.const 0) "{}")
             (func (export "run") (result i32) (i32.const 0)))"#,
        "Q".repeat(12 << 20)
    );
    let mut k = kernel(true, 1);
    load_wat(&mut k, "bigdata", &wat, "normal");
    k.spawn_all().unwrap();
    let report = run_watched(k, "deterministic");
    let p = report_of(&report, "bigdata");
    assert_eq!(p.status, ExitStatus::Exited(0), "{p:?}");
    assert!(p.fuel_used >= 12 << 20, "{p:?}");
}

// ---------------------------------------------------------------------------
// Memory growth, segments and globals at instantiation.

#[test]
fn memory_grow_in_a_start_function_stops_at_the_class_limit() {
    let grow = "(func $grow (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))) (start $grow)";
    let grow_then_abort = "(func $grow (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable) (start $grow)";
    in_each_run(|mut k, what| {
        load_wat(&mut k, "t", &task(grow, "(memory.size)"), "normal");
        load_handler(&mut k, "h", &handler(grow, "(memory.size)"));
        load_wat(
            &mut k,
            "toom",
            &task(grow_then_abort, "(i32.const 0)"),
            "normal",
        );
        load_handler(&mut k, "hoom", &handler(grow_then_abort, "(i32.const 0)"));
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        // The user class: 16 MiB, 256 pages.
        expect_status(&report, "t", ExitStatus::Exited(256), what);
        expect_status(&report, "h", ExitStatus::Exited(256), what);
        for m in ["toom", "hoom"] {
            let p = report_of(&report, m);
            assert_eq!(
                trapped(&p.status),
                Some(ErrorCode::OUT_OF_MEMORY),
                "{what} {m}: {p:?}"
            );
        }
    });
}

/// `decls` for a passive data segment of 32 KiB copied `times` times into
/// memory by the start function.
fn memory_init_start(times: u32) -> String {
    format!(
        r#"(data $p "{}")
           (func $init (local $i i32)
             (loop
               (memory.init $p (i32.const 0) (i32.const 0) (i32.const 32768))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if 0 (i32.lt_u (local.get $i) (i32.const {times})))))
           (start $init)"#,
        "x".repeat(32768)
    )
}

#[test]
fn memory_init_loops_in_a_start_function_are_metered() {
    let decls = memory_init_start(1000); // 32 MiB of copies
    in_each_run(|mut k, what| {
        load_wat(
            &mut k,
            "copier",
            &task(&decls, "(i32.load8_u (i32.const 32767))"),
            "normal",
        );
        load_handler(&mut k, "hcopier", &handler(&decls, "(i32.const 0)"));
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        let copier = report_of(&report, "copier");
        assert_eq!(
            copier.status,
            ExitStatus::Exited(i32::from(b'x')),
            "{what}: {copier:?}"
        );
        assert!(copier.fuel_used >= 32_768_000, "{what}: {copier:?}");
        // A checkpoint at most 200,000 units after its slice began.
        assert!(
            report.stats.checkpoints >= 160,
            "{what}: {:?}",
            report.stats
        );
        let h = report_of(&report, "hcopier");
        assert_eq!(
            trapped(&h.status),
            Some(ErrorCode::TIMEOUT),
            "{what}: {h:?}"
        );
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
    });
}

#[test]
fn table_init_loops_in_a_start_function_are_metered() {
    let decls = format!(
        r#"(table 5000 funcref) (func $f)
           (elem $e func {})
           (func $init (local $i i32)
             (loop
               (table.init $e (i32.const 0) (i32.const 0) (i32.const 5000))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if 0 (i32.lt_u (local.get $i) (i32.const 2000)))))
           (start $init)"#,
        "$f ".repeat(5000)
    );
    in_each_run(|mut k, what| {
        load_wat(&mut k, "tinit", &task(&decls, "(i32.const 0)"), "normal");
        load_handler(&mut k, "htinit", &handler(&decls, "(i32.const 0)"));
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        let t = report_of(&report, "tinit");
        assert_eq!(t.status, ExitStatus::Exited(0), "{what}: {t:?}");
        assert!(t.fuel_used >= 10_000_000, "{what}: {t:?}");
        let h = report_of(&report, "htinit");
        assert_eq!(
            trapped(&h.status),
            Some(ErrorCode::TIMEOUT),
            "{what}: {h:?}"
        );
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
    });
}

#[test]
fn a_twelve_mib_active_data_segment_lands_whole_and_stalls_no_peer() {
    let wat = format!(
        r#"(module (memory (export "memory") 256)
             (data (i32.const 65536) "{}")
             (func (export "run") (result i32)
               (i32.add (i32.load8_u (i32.const 65536))
                        (i32.load8_u (i32.const {last})))))"#,
        "Z".repeat(12 << 20),
        last = 65536 + (12 << 20) - 1
    );
    in_each_run(|mut k, what| {
        load_wat(&mut k, "big", &wat, "normal");
        load_wat(&mut k, "peer", PEER, "normal");
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "big", ExitStatus::Exited(2 * 90), what);
        expect_status(&report, "peer", ExitStatus::Exited(0), what);
    });
}

#[test]
fn globals_initialised_by_constant_expressions() {
    // Extended constant expressions (on by default in Wasmtime 48) and a
    // function reference in a global.
    let decls = r#"
      (type $v (func (result i32)))
      (func $seven (type $v) (i32.const 7))
      (global $a i32 (i32.const 40))
      (global $b i32 (i32.add (global.get $a) (i32.const 2)))
      (global $c i64 (i64.mul (i64.const 1000) (i64.const 1000)))
      (global $f funcref (ref.func $seven))
      (table 1 funcref)
      (elem declare func $seven)
      (func $init (table.set (i32.const 0) (global.get $f)))
      (start $init)"#;
    let body = r#"(i32.add (global.get $b)
                   (i32.add (i32.wrap_i64 (i64.div_u (global.get $c) (i64.const 1000000)))
                            (call_indirect (type $v) (i32.const 0))))"#;
    in_each_run(|mut k, what| {
        load_wat(&mut k, "g", &task(decls, body), "normal");
        load_handler(&mut k, "hg", &handler(decls, body));
        k.spawn_all().unwrap();
        let report = run_watched(k, what);
        expect_status(&report, "g", ExitStatus::Exited(50), what);
        expect_status(&report, "hg", ExitStatus::Exited(50), what);
    });
}

// ---------------------------------------------------------------------------
// Supervision of start functions that fail.

fn assert_ladder_ends(report: &RunReport, module: &str, code: ErrorCode, what: &str) {
    let decisions: Vec<_> = report
        .restarts
        .iter()
        .filter(|r| r.module == module)
        .collect();
    assert!(
        !decisions.is_empty(),
        "{what}: no restart decided\n{}",
        describe(report)
    );
    assert!(
        decisions.len() <= 15,
        "{what}: {} decisions\n{}",
        decisions.len(),
        describe(report)
    );
    assert_eq!(
        decisions.last().unwrap().action,
        RestartAction::GiveUp,
        "{what}\n{}",
        describe(report)
    );
    assert_eq!(
        decisions[0].action,
        RestartAction::RestartSameState,
        "{what}"
    );
    assert!(
        decisions.iter().all(|r| r.code == code),
        "{what}\n{}",
        describe(report)
    );
    let ended = report
        .processes
        .iter()
        .filter(|p| p.module == module)
        .count();
    assert_eq!(
        ended,
        decisions.len(),
        "{what}: one process per decision\n{}",
        describe(report)
    );
    for p in report.processes.iter().filter(|p| p.module == module) {
        assert_eq!(trapped(&p.status), Some(code), "{what}: {p:?}");
    }
}

#[test]
fn a_start_that_always_traps_climbs_the_ladder_to_give_up() {
    let task_crasher = task("(func $s unreachable) (start $s)", "(i32.const 0)");
    let handler_spinner = handler(SPIN_START, "(i32.const 0)");
    let cases: [(&str, &str, &str, ErrorCode); 2] = [
        ("crasher", "run", &task_crasher, ErrorCode::TRAP_UNREACHABLE),
        ("hcrasher", "handle", &handler_spinner, ErrorCode::TIMEOUT),
    ];
    for (module, entry, wat, code) in cases {
        for (deterministic, workers) in [(true, 1), (false, 2)] {
            let what = format!("{module}: deterministic {deterministic}, {workers} workers");
            let mut k = kernel(deterministic, workers);
            load_entry(
                &mut k,
                module,
                entry,
                wat,
                ALL_CAPS,
                r#""restart":"on_failure""#,
            );
            load_wat(&mut k, "peer", PEER, "normal");
            k.spawn_all().unwrap();
            let report = run_watched(k, &what);
            assert_ladder_ends(&report, module, code, &what);
            // A system restart (documented) may stop the peer with
            // RESTARTED; one of its processes still finishes.
            assert!(
                report
                    .processes
                    .iter()
                    .any(|p| p.module == "peer" && p.status == ExitStatus::Exited(0)),
                "{what}\n{}",
                describe(&report)
            );
        }
    }
}
