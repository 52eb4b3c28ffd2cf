//! Messaging: ping-pong, timeouts, full mailboxes, bad arguments.

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::{load_bundled, load_testkit, load_wat, load_wat_with, manifest};
use std::path::Path;

#[test]
fn ping_pong_ten_thousand_messages_all_arrive_in_order() {
    for deterministic in [false, true] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_bundled(&mut kernel, "pong", "run");
        load_bundled(&mut kernel, "ping", "run");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        let ping = report.process("ping").unwrap();
        let pong = report.process("pong").unwrap();
        // ping exits 4 if any PONG is missing, duplicated or out of order.
        assert_eq!(ping.status, ExitStatus::Exited(0), "ping: {}", ping.status);
        assert_eq!(pong.status, ExitStatus::Exited(0), "pong: {}", pong.status);
        assert_eq!(ping.sent, 10_001, "10,000 PINGs and the stop message");
        assert_eq!(pong.received, 10_001);
        assert_eq!(pong.sent, 10_000);
        assert_eq!(ping.received, 10_000);
        assert_eq!(ping.send_failures + pong.send_failures, 0);
        assert_eq!(ping.undelivered + pong.undelivered, 0);
    }
}

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "sink")
"#;

fn guest(body: &str) -> String {
    format!("(module {IMPORTS} (func (export \"run\") (result i32) (local $r i64) {body}))")
}

fn run_one(name: &str, wat: &str, deterministic: bool) -> ExitStatus {
    let mut kernel = Kernel::builder()
        .deterministic(deterministic)
        .build()
        .unwrap();
    load_wat(&mut kernel, name, wat, "normal");
    kernel.spawn(name).unwrap();
    kernel.run().process(name).unwrap().status.clone()
}

#[test]
fn receive_times_out_with_a_code_not_a_trap() {
    // Wait 5 ms for a message that never comes; return the result code.
    let wat = guest(
        "(i32.wrap_i64 (call $receive (i32.const 0) (i64.const 5) (i32.const 64) (i32.const 128) (i32.const 64)))",
    );
    for deterministic in [false, true] {
        assert_eq!(
            run_one("waiter", &wat, deterministic),
            ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32))
        );
    }
}

#[test]
fn a_wait_longer_than_the_clock_can_count_is_still_a_timed_wait() {
    // Real clock: alone, waiting i64::MAX ms is a wait with a timer, not a
    // deadlock; it lasts until the kernel is stopped.
    let forever = guest(
        "(i32.wrap_i64 (call $receive (i32.const 0) (i64.const 0x7fffffffffffffff) (i32.const 64) (i32.const 128) (i32.const 64)))",
    );
    let mut kernel = Kernel::builder().build().unwrap();
    load_wat(&mut kernel, "waiter", &forever, "normal");
    kernel.spawn("waiter").unwrap();
    let exits = kernel.subscribe_exits();
    let shutdown = kernel.shutdown_handle();
    let runner = std::thread::spawn(move || kernel.run());
    let early = exits.recv_timeout(std::time::Duration::from_millis(300));
    shutdown.request();
    let report = runner.join().unwrap();
    assert!(early.is_err(), "ended early: {early:?}");
    assert_eq!(
        report.process("waiter").unwrap().status,
        ExitStatus::Stopped(ErrorCode::SHUTDOWN)
    );
    // Virtual clock: the longest wait moves time to its end and times out;
    // a 5 ms wait after it still times out, and the clock still reads.
    let timeout = -(ErrorCode::TIMEOUT.0 as i64);
    let twice = format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i64.ne (call $receive (i32.const 0) (i64.const 18446744073709) (i32.const 64) (i32.const 128) (i32.const 64))
                (i64.const {timeout}))
      (then (return (i32.const 1))))
    (if (i64.ne (call $receive (i32.const 0) (i64.const 5) (i32.const 64) (i32.const 128) (i32.const 64))
                (i64.const {timeout}))
      (then (return (i32.const 2))))
    (if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const 3))))
    (i32.const 0)))"#
    );
    assert_eq!(run_one("waiter", &twice, true), ExitStatus::Exited(0));
}

#[test]
fn send_to_an_unknown_pid_fails_with_no_such_process() {
    let wat = guest(
        "(i32.wrap_i64 (call $send (i64.const 0x0000000500000007) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))",
    );
    assert_eq!(
        run_one("sender", &wat, true),
        ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32))
    );
}

#[test]
fn bad_pointers_and_options_are_codes_not_traps() {
    let cases = [
        // Payload range past the end of memory.
        (
            "(call $send (call $self) (i32.const 1) (i32.const 0) (i32.const 65530) (i32.const 100))",
            ErrorCode::INVALID_POINTER,
        ),
        // Reserved option bit.
        (
            "(call $send (call $self) (i32.const 1) (i32.const 8) (i32.const 0) (i32.const 0))",
            ErrorCode::INVALID_ARGUMENT,
        ),
        // Message type 0 is not a type.
        (
            "(call $send (call $self) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
            ErrorCode::INVALID_ARGUMENT,
        ),
        // Payload over 1 MiB.
        (
            "(call $send (call $self) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1048577))",
            ErrorCode::PAYLOAD_TOO_LARGE,
        ),
        // Header buffer past the end of memory: checked before waiting.
        (
            "(call $receive (i32.const 0) (i64.const -1) (i32.const 65500) (i32.const 0) (i32.const 0))",
            ErrorCode::INVALID_POINTER,
        ),
        // Negative timeout other than -1.
        (
            "(call $receive (i32.const 0) (i64.const -2) (i32.const 64) (i32.const 0) (i32.const 0))",
            ErrorCode::INVALID_ARGUMENT,
        ),
        // Unknown name.
        (
            "(call $lookup (i32.const 0) (i32.const 3))",
            ErrorCode::NOT_FOUND,
        ),
    ];
    for (call, code) in cases {
        let wat = guest(&format!("(i32.wrap_i64 {call})"));
        assert_eq!(
            run_one("caller", &wat, true),
            ExitStatus::Exited(-(code.0 as i32)),
            "{call}"
        );
    }
}

#[test]
fn a_full_mailbox_refuses_with_mailbox_full_and_keeps_what_it_accepted() {
    // The sink waits for a message type nobody sends, so its mailbox fills.
    let sink = guest(
        "(drop (call $receive (i32.const 0x7777) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64))) (i32.const 0)",
    );
    // The flooder sends until a send fails and returns that code; it
    // stores the number of successful sends at address 32 (unused here).
    let flooder = guest(
        r#"(local $pid i64) (local $n i32)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (loop
          (local.set $r (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)))
          (if (i64.ge_s (local.get $r) (i64.const 0))
            (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br 1))))
        (if (i32.ne (local.get $n) (i32.const 1024)) (then (return (i32.const 99))))
        (i32.wrap_i64 (local.get $r))"#,
    );
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_wat(&mut kernel, "sink", &sink, "normal");
    load_wat(&mut kernel, "flooder", &flooder, "normal");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let flooder = report.process("flooder").unwrap();
    assert_eq!(
        flooder.status,
        ExitStatus::Exited(-(ErrorCode::MAILBOX_FULL.0 as i32)),
        "exactly 1,024 sends succeed, the next fails with MAILBOX_FULL"
    );
    assert_eq!(flooder.sent, 1024);
    assert_eq!(flooder.send_failures, 1);
    let sink = report.process("sink").unwrap();
    assert_eq!(sink.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
    assert_eq!(
        sink.undelivered, 1024,
        "every accepted message is accounted for"
    );
}

#[test]
fn a_syscall_without_its_capability_is_denied_with_a_code() {
    let wat = guest("(i32.wrap_i64 (call $lookup (i32.const 0) (i32.const 4)))");
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(
            manifest("nocaps", "run", &[], "normal"),
            wat.as_bytes(),
            Path::new("nocaps"),
        )
        .unwrap();
    kernel.spawn("nocaps").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("nocaps").unwrap().status,
        ExitStatus::Exited(-(ErrorCode::PERMISSION_DENIED.0 as i32))
    );
}

/// Runs the testkit programs `(name, entry, extra manifest fields)` in both
/// modes and returns the reports of the last run.
fn run_testkit(programs: &[(&str, &str, &str)]) -> estalogic_kernel::RunReport {
    let mut last = None;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        for (name, entry, extra) in programs {
            load_testkit(&mut kernel, name, entry, extra);
        }
        kernel.spawn_all().unwrap();
        last = Some(kernel.run());
    }
    last.unwrap()
}

fn assert_exited_zero(report: &estalogic_kernel::RunReport, names: &[&str]) {
    for name in names {
        let process = report.process(name).unwrap();
        assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
    }
}

#[test]
fn block_sender_back_pressure_blocks_and_resumes_with_nothing_lost() {
    let report = run_testkit(&[
        (
            "sink",
            "slow_sink",
            r#""mailbox":{"capacity":16,"overflow":"block_sender"}"#,
        ),
        ("flooder", "flood", ""),
    ]);
    assert_exited_zero(&report, &["sink", "flooder"]);
    let flooder = report.process("flooder").unwrap();
    assert_eq!(flooder.sent, 5_000);
    assert_eq!(flooder.send_failures, 0);
    assert!(
        flooder.blocked_sends > 0,
        "the flooder was blocked: {flooder:?}"
    );
    assert_eq!(report.process("sink").unwrap().received, 5_000);
}

#[test]
fn request_reply_pairs_by_correlation() {
    let report = run_testkit(&[
        ("responder", "responder", ""),
        ("requester", "requester", ""),
    ]);
    assert_exited_zero(&report, &["responder", "requester"]);
    assert_eq!(report.process("responder").unwrap().sent, 100);
}

#[test]
fn acknowledgement_reaches_the_sender() {
    let report = run_testkit(&[
        ("ack-receiver", "ack_receiver", ""),
        ("ack-sender", "ack_sender", ""),
    ]);
    assert_exited_zero(&report, &["ack-receiver", "ack-sender"]);
}

#[test]
fn a_dropped_message_is_reported_to_its_sender() {
    let report = run_testkit(&[
        (
            "full-sink",
            "full_sink",
            r#""mailbox":{"capacity":1,"overflow":"drop_newest"}"#,
        ),
        ("reporter", "drop_reporter", ""),
    ]);
    assert_exited_zero(&report, &["reporter"]);
    let reporter = report.process("reporter").unwrap();
    assert_eq!(reporter.delivery_failures, 1);
    let sink = report.process("full-sink").unwrap();
    assert_eq!(sink.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
    assert_eq!(sink.undelivered, 2, "one left in the mailbox, one dropped");
}

#[test]
fn broadcast_reaches_every_receiver() {
    let report = run_testkit(&[
        ("listener-a", "listener", ""),
        ("listener-b", "listener", ""),
        ("listener-c", "listener", ""),
        ("broadcaster", "broadcaster", ""),
    ]);
    assert_exited_zero(
        &report,
        &["listener-a", "listener-b", "listener-c", "broadcaster"],
    );
}

#[test]
fn mail_left_at_exit_is_reported_to_its_sender() {
    let report = run_testkit(&[("leaver", "leaver", ""), ("sender", "abandoned_sender", "")]);
    assert_exited_zero(&report, &["leaver", "sender"]);
    assert_eq!(report.process("sender").unwrap().delivery_failures, 3);
    assert_eq!(report.process("leaver").unwrap().undelivered, 3);
}

#[test]
fn a_flood_of_large_messages_is_bounded_by_bytes_not_just_count() {
    // The sink never reads; the flooder sends 1 MiB payloads until refused.
    let sink = guest(
        "(drop (call $receive (i32.const 0x7777) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64))) (i32.const 0)",
    );
    let flooder = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (memory (export "memory") 17)
      (data (i32.const 0) "sink")
      (func (export "run") (result i32) (local $pid i64) (local $n i32) (local $r i64)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (loop
          (local.set $r (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1048576)))
          (if (i64.ge_s (local.get $r) (i64.const 0))
            (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br 1))))
        (local.get $n)))"#;
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_wat(&mut kernel, "sink", &sink, "normal");
    load_wat(&mut kernel, "flooder", flooder, "normal");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    // 16 MiB of payload per mailbox: the 17th 1 MiB message is refused.
    assert_eq!(
        report.process("flooder").unwrap().status,
        ExitStatus::Exited(16)
    );
    assert_eq!(report.process("sink").unwrap().undelivered, 16);
}

#[test]
fn timers_of_receives_that_ended_early_do_not_pile_up() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_bundled(&mut kernel, "pong", "run");
    load_testkit(&mut kernel, "ping", "timed_ping", "");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("ping").unwrap().status,
        ExitStatus::Exited(0)
    );
    // 10,000 one-hour timeouts were armed and all cancelled early; none is
    // held past the run (they would keep ended processes' wakers).
    assert_eq!(kernel.armed_timers(), 0);
    // And a cancelled one-hour timer does not keep a stuck kernel waiting:
    // this run ended (in virtual time the loop would otherwise jump ahead).
    assert!(report.elapsed < std::time::Duration::from_secs(60));
}

#[test]
fn blocking_on_ones_own_full_mailbox_is_refused_not_a_hang() {
    // Sends to itself until refused: with block_sender it would wait for
    // itself forever, so the kernel answers WOULD_DEADLOCK instead.
    let selfish = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "self_pid" (func $self (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32) (local $r i64)
        (loop
          (local.set $r (call $send (call $self) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
          (br_if 0 (i64.ge_s (local.get $r) (i64.const 0))))
        (i32.wrap_i64 (local.get $r))))"#;
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    estalogic_tests::load_wat_with(
        &mut kernel,
        "selfish",
        selfish,
        r#""mailbox":{"capacity":4,"overflow":"block_sender"}"#,
    );
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("selfish").unwrap().status,
        ExitStatus::Exited(-(ErrorCode::WOULD_DEADLOCK.0 as i32))
    );
}

/// The first WAT block after `heading` in docs/ABI.md.
fn abi_doc_wat(heading: &str) -> &'static str {
    let doc = include_str!("../../docs/ABI.md");
    let section = &doc[doc.find(heading).expect("the heading is in ABI.md")..];
    let start = section.find("```wat\n").expect("a WAT example") + "```wat\n".len();
    &section[start..start + section[start..].find("\n```").unwrap()]
}

/// Sends "hello" to `echo` and waits for the reply: exits with the
/// reply's length.
const ECHO_REQUESTER: &str = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "echo")
      (data (i32.const 16) "hello")
      (func (export "run") (result i32) (local $seq i64)
        (local.set $seq (call $send (call $lookup (i32.const 0) (i32.const 4))
                                    (i32.const 0x1001) (i32.const 0) (i32.const 16) (i32.const 5)))
        (i32.wrap_i64 (call $receive_reply (local.get $seq) (i64.const 5000)
                                           (i32.const 64) (i32.const 128) (i32.const 64)))))"#;

#[test]
fn the_wat_echo_handler_in_the_abi_docs_works() {
    let echo = abi_doc_wat("## Handler processes");
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(
            estalogic_tests::manifest("echo", "handle", estalogic_tests::ALL_CAPS, "normal"),
            echo.as_bytes(),
            std::path::Path::new("echo"),
        )
        .unwrap();
    load_wat(&mut kernel, "requester", ECHO_REQUESTER, "normal");
    kernel.spawn("echo").unwrap();
    kernel.spawn("requester").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("requester").unwrap().status,
        ExitStatus::Exited(5),
        "the reply carries the 5-byte payload back"
    );
}

#[test]
fn the_wat_echo_server_in_the_abi_docs_works() {
    let echo = abi_doc_wat("## A guest in WAT");

    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_wat(&mut kernel, "echo", echo, "normal");
    load_wat(&mut kernel, "requester", ECHO_REQUESTER, "normal");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("requester").unwrap().status,
        ExitStatus::Exited(5),
        "the reply carries the 5-byte payload back"
    );
}

#[test]
fn ping_pong_hands_the_cpu_straight_to_the_waiting_receiver() {
    for deterministic in [false, true] {
        let mut kernel = estalogic_tests::kernel(deterministic, 1);
        load_bundled(&mut kernel, "pong", "run");
        load_bundled(&mut kernel, "ping", "run");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        let ping = report.process("ping").unwrap();
        assert_eq!(ping.status, ExitStatus::Exited(0), "ping: {}", ping.status);
        assert_eq!(ping.received, 10_000, "every PONG arrived, in order");
        // With nothing else ready, (almost) every PING runs pong directly.
        assert!(
            report.stats.handoffs >= 9_000,
            "handoffs: {}",
            report.stats.handoffs
        );
        // Pong's CPU time is its own, not also counted on ping's turns, and
        // ping does not count as runnable while it waits for a PONG: the
        // pair shares the CPU fairly (lent time counted as ping's read
        // about 0.4 here).
        assert!(ping.cpu_ns > 0);
        if !deterministic {
            let fairness = report.stats.fairness.expect("CPU time was accounted");
            assert!(fairness >= 0.7, "fairness {fairness}");
        }
    }
}

/// A NORMAL guest that spins forever.
const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32) (loop (br 0)) (i32.const 0)))"#;

#[test]
fn handoff_does_not_let_a_ping_pong_pair_starve_a_ready_process() {
    // One worker: ping and pong would hand off to each other forever if
    // the handoff ignored that a spinner of the same level is ready.
    let mut kernel = estalogic_tests::kernel(true, 1);
    // 100 PINGs to the bundled pong, each waited for, then the stop PING.
    let ping = guest(
        r#"(local $pid i64) (local $n i32)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (loop
          (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1)))
          (local.set $r (call $receive (i32.const 2) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
          (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 3))))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $n) (i32.const 100))))
        (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.const 0)"#,
    )
    .replace("\"sink\"", "\"pong\"");
    load_wat(&mut kernel, "spinner", SPIN, "normal");
    load_bundled(&mut kernel, "pong", "run");
    load_wat(&mut kernel, "ping", &ping, "normal");
    for name in ["spinner", "pong", "ping"] {
        kernel.spawn(name).unwrap();
    }
    let (first, report) = estalogic_tests::first_exit_then_stop(kernel);
    assert_eq!(first.module, "ping");
    assert_eq!(first.status, ExitStatus::Exited(0));
    let spinner = report.process("spinner").unwrap();
    let ping = report.process("ping").unwrap();
    let pong = report.process("pong").unwrap();
    assert!(
        spinner.cpu_ns >= ping.cpu_ns + pong.cpu_ns,
        "the spinner got its share: spinner {} ns, ping {} ns, pong {} ns",
        spinner.cpu_ns,
        ping.cpu_ns,
        pong.cpu_ns
    );
    assert_eq!(ping.received, 100);
    assert!(
        report.stats.handoffs < 100,
        "no handoff while the spinner is ready: {}",
        report.stats.handoffs
    );
}

/// Traps on its first message.
const CRASHER: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    unreachable))"#;

#[test]
fn a_receiver_that_traps_in_a_handed_off_turn_is_reaped_and_the_sender_goes_on() {
    // The crasher traps on its first message; the sender's receive (run
    // the crasher inline, find nothing) then times out normally.
    let sender = guest(
        r#"(local $pid i64)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 7)))
        (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)))
        (i32.wrap_i64 (call $receive (i32.const 0) (i64.const 20) (i32.const 64) (i32.const 128) (i32.const 64)))"#,
    );
    for deterministic in [false, true] {
        let mut kernel = estalogic_tests::kernel(deterministic, 1);
        load_wat(&mut kernel, "crasher", CRASHER, "normal");
        load_wat(
            &mut kernel,
            "sender",
            &sender.replace("\"sink\"", "\"crasher\""),
            "normal",
        );
        kernel.spawn("crasher").unwrap();
        let report = {
            // Let the crasher reach its receive before the sender sends.
            kernel.spawn("sender").unwrap();
            kernel.run()
        };
        let crasher = report.process("crasher").unwrap();
        assert!(
            matches!(&crasher.status, ExitStatus::Trapped { code, .. } if *code == ErrorCode::TRAP_UNREACHABLE),
            "crasher: {}",
            crasher.status
        );
        let sender = report.process("sender").unwrap();
        assert_eq!(
            sender.status,
            ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32)),
            "the sender's wait ends normally"
        );
        assert_eq!(
            report.stats.handoffs, 1,
            "the crasher ran in the sender's receive"
        );
    }
}

#[test]
fn a_receiver_restarted_after_trapping_in_a_handed_off_turn_serves_again() {
    // Same crasher, now `restart: on_failure`: its reaping and restart run
    // on a worker's own stack after the lent turn; the sender then finds
    // the new instance by name, and it traps in turn.
    let round = r#"
        (drop (call $send (call $lookup (i32.const 0) (i32.const 7)) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)))
        (local.set $r (call $receive (i32.const 0) (i64.const 20) (i32.const 64) (i32.const 128) (i32.const 64)))"#;
    let sender = guest(&format!("{round} {round} (i32.wrap_i64 (local.get $r))"))
        .replace("\"sink\"", "\"crasher\"");
    let mut kernel = estalogic_tests::kernel(true, 1);
    load_wat_with(&mut kernel, "crasher", CRASHER, r#""restart":"on_failure""#);
    load_wat(&mut kernel, "sender", &sender, "normal");
    kernel.spawn("crasher").unwrap();
    kernel.spawn("sender").unwrap();
    let report = kernel.run();
    let sender = report.process("sender").unwrap();
    assert_eq!(
        sender.status,
        ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32))
    );
    assert_eq!(sender.sent, 2, "both sends found a live crasher");
    let traps = report
        .processes
        .iter()
        .filter(|p| p.module == "crasher" && p.status.is_trap())
        .count();
    assert_eq!(traps, 2, "each instance trapped on its message");
    assert_eq!(report.restarts.len(), 2, "{:?}", report.restarts);
    assert!(report.stats.handoffs >= 1);
}

/// A guest whose `run` returns what `send_receive` returns: a 4-byte
/// message of type 1 to `target` (WAT for an `i64`), then the wait given by
/// `wait` (WAT for `wait_for timeout_ms header_ptr buffer_ptr buffer_len`).
fn send_receive_guest(target: &str, wait: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (i32.wrap_i64 (call $send_receive {target} (i64.const 0) (i32.const 1) (i32.const 0)
      (i32.const 0) (i32.const 4) {wait}))))"#
    )
}

/// Runs `wat` alone as `caller` with these capabilities; its report.
fn run_caller(wat: &str, capabilities: &[&str]) -> estalogic_kernel::ProcessReport {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(
            manifest("caller", "run", capabilities, "normal"),
            wat.as_bytes(),
            Path::new("caller"),
        )
        .unwrap();
    kernel.spawn("caller").unwrap();
    kernel.run().process("caller").unwrap().clone()
}

const SEND_AND_RECEIVE: &[&str] = &["messaging:send", "messaging:receive"];

#[test]
fn send_receive_checks_its_wait_before_it_sends_anything() {
    let cases = [
        // Header buffer past the end of memory.
        (
            "(i64.const 0) (i64.const 0) (i32.const 65500) (i32.const 0) (i32.const 0)",
            SEND_AND_RECEIVE,
            ErrorCode::INVALID_POINTER,
        ),
        // Not a wait: -2.
        (
            "(i64.const -2) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64)",
            SEND_AND_RECEIVE,
            ErrorCode::INVALID_ARGUMENT,
        ),
        // A message type above 2^32 - 1.
        (
            "(i64.const 0x100000000) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64)",
            SEND_AND_RECEIVE,
            ErrorCode::INVALID_ARGUMENT,
        ),
        // A negative timeout other than -1.
        (
            "(i64.const 0) (i64.const -2) (i32.const 64) (i32.const 128) (i32.const 64)",
            SEND_AND_RECEIVE,
            ErrorCode::INVALID_ARGUMENT,
        ),
        // No capability to receive.
        (
            "(i64.const 0) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64)",
            &SEND_AND_RECEIVE[..1],
            ErrorCode::PERMISSION_DENIED,
        ),
    ];
    for (wait, capabilities, code) in cases {
        let caller = run_caller(&send_receive_guest("(call $self)", wait), capabilities);
        assert_eq!(
            caller.status,
            ExitStatus::Exited(-(code.0 as i32)),
            "{wait}"
        );
        assert_eq!(caller.sent, 0, "nothing was sent: {wait}");
        assert_eq!(caller.undelivered, 0, "nothing was queued: {wait}");
    }
}

#[test]
fn send_receive_to_no_one_fails_without_waiting_and_to_itself_gets_its_message() {
    // An unknown pid with an infinite wait: the send's code, at once (a
    // wait would have ended as DEADLOCKED instead).
    let wait = "(i64.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)";
    let caller = run_caller(
        &send_receive_guest("(i64.const 0x0000000700000007)", wait),
        SEND_AND_RECEIVE,
    );
    assert_eq!(
        caller.status,
        ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32))
    );
    // To itself, waiting for type 1: it takes its own 4-byte message.
    let wait = "(i64.const 1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)";
    let caller = run_caller(&send_receive_guest("(call $self)", wait), SEND_AND_RECEIVE);
    assert_eq!(caller.status, ExitStatus::Exited(4), "the payload length");
    assert_eq!((caller.sent, caller.received), (1, 1));
}

#[test]
fn a_call_whose_request_is_never_read_gets_the_failure_code_even_with_a_small_buffer() {
    // The caller sends to `quitter` (spawned, not yet run) and waits for the
    // answer with an 8-byte buffer; `quitter` returns without reading, so
    // the answer is the kernel's 16-byte DELIVERY_FAILURE notice. Its code
    // is the result, not BUFFER_TOO_SMALL with the notice stuck in the
    // mailbox.
    let caller = r#"(module
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "quitter")
  (func (export "run") (result i32)
    (i32.wrap_i64 (call $send_receive (call $lookup (i32.const 0) (i32.const 7))
      (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
      (i64.const -1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 8)))))"#;
    let quitter = r#"(module (memory (export "memory") 1)
      (func (export "run") (result i32) (i32.const 0)))"#;
    for deterministic in [true, false] {
        let mut kernel = estalogic_tests::kernel(deterministic, 1);
        load_wat(&mut kernel, "caller", caller, "normal");
        load_wat(&mut kernel, "quitter", quitter, "normal");
        kernel.spawn("caller").unwrap();
        kernel.spawn("quitter").unwrap();
        let report = kernel.run();
        let caller = report.process("caller").unwrap();
        assert_eq!(
            caller.status,
            ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32)),
            "the notice's code"
        );
        assert_eq!(caller.received, 1, "the notice was taken");
        assert_eq!(caller.undelivered, 0, "nothing was left queued");
    }
}

#[test]
fn a_process_flooding_its_own_drop_oldest_mailbox_loses_one_message_per_send() {
    // Each send past the capacity evicts the oldest message, which is the
    // sender's own: its notice finds the mailbox full and is dropped, and
    // evicts nothing (a cascade once emptied the mailbox, and its recursion
    // overflowed the host stack past ~1,000 messages).
    const SENDS: i32 = 5_000;
    const CAPACITY: i32 = 1_024;
    let flooder = format!(
        r#"(module
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop $l
      (if (i64.lt_s (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0))
                    (i64.const 0))
        (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {SENDS}))))
    (i32.const 0)))"#
    );
    for workers in [1, 2] {
        let mut kernel = Kernel::builder().workers(workers).build().unwrap();
        load_wat_with(
            &mut kernel,
            "flooder",
            &flooder,
            &format!(r#""mailbox":{{"capacity":{CAPACITY},"overflow":"drop_oldest"}}"#),
        );
        kernel.spawn("flooder").unwrap();
        let report = kernel.run();
        let flooder = report.process("flooder").unwrap();
        assert_eq!(flooder.status, ExitStatus::Exited(0), "{flooder:?}");
        // Every message failed in the end: the evicted ones were reported
        // when evicted (their notices dropped by the full mailbox, and
        // counted), the last CAPACITY were left at exit, when its own
        // mailbox had closed and there was no one left to tell.
        assert_eq!(flooder.delivery_failures, (SENDS - CAPACITY) as u64);
        assert!(flooder.undelivered >= CAPACITY as u64, "{flooder:?}");
        assert_eq!(flooder.sent, SENDS as u64);
    }
}

#[test]
fn an_ack_for_a_sender_that_exited_is_not_reported_to_the_receiver() {
    // `acker` sends an ACK_REQUESTED message to `sink` and exits. `sink`
    // waits 50 ms (so the sender is gone), takes the message (the kernel's
    // ack then has no one to go to), and must find nothing more: no notice
    // about an ack it never sent itself. Exit: 0, or the failed step.
    let acker = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "sink")
  (func (export "run") (result i32)
    (if (i64.lt_s (call $send (call $lookup (i32.const 0) (i32.const 4)) (i32.const 0x2000)
                              (i32.const 0x200) (i32.const 0) (i32.const 0))
                  (i64.const 0))
      (then (return (i32.const 1))))
    (i32.const 0)))"#;
    let timeout = -(ErrorCode::TIMEOUT.0 as i64);
    let sink = format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 50) (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (i64.ne (call $receive (i32.const 0x2000) (i64.const 1000) (i32.const 64) (i32.const 128) (i32.const 64))
                (i64.const 0))
      (then (return (i32.const 2))))
    (if (i64.ne (call $receive (i32.const 0) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64))
                (i64.const {timeout}))
      (then (return (i32.const 3))))
    (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_wat(&mut kernel, "sink", &sink, "normal");
    load_wat(&mut kernel, "acker", acker, "normal");
    kernel.spawn("sink").unwrap();
    kernel.spawn("acker").unwrap();
    let report = kernel.run();
    for name in ["acker", "sink"] {
        assert_eq!(
            report.process(name).unwrap().status,
            ExitStatus::Exited(0),
            "{name}"
        );
    }
    assert_eq!(report.process("sink").unwrap().delivery_failures, 0);
}

#[test]
fn the_ipc_trace_records_queued_messages_not_refused_attempts() {
    // Three sends into a one-message notify_sender mailbox that is never
    // read: one is queued, two are refused (MAILBOX_FULL). The trace holds
    // the one message.
    let sender = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "sink")
      (func (export "run") (local $pid i64)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (drop (call $send (local.get $pid) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
        (drop (call $send (local.get $pid) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
        (drop (call $send (local.get $pid) (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))))"#;
    let sink = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run")
        (drop (call $receive (i32.const 0x7777) (i64.const 50) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    let mut kernel = Kernel::builder().trace_ipc(true).build().unwrap();
    load_wat_with(&mut kernel, "sink", sink, r#""mailbox":{"capacity":1}"#);
    load_wat(&mut kernel, "sender", sender, "normal");
    kernel.spawn("sink").unwrap();
    kernel.spawn("sender").unwrap();
    let report = kernel.run();
    assert_eq!(report.process("sender").unwrap().send_failures, 2);
    let to_sink: Vec<_> = report
        .trace
        .iter()
        .filter(|r| r.header.message_type.0 == 0x2000)
        .collect();
    assert_eq!(to_sink.len(), 1, "{to_sink:?}");
    assert_eq!(report.trace_dropped, 0);
}

#[test]
fn a_broadcast_pays_for_every_copy_it_offers_accepted_or_not() {
    // Twenty receivers whose one-message drop_newest mailboxes are soon
    // full, and 1,000 empty broadcasts: each offer costs the sender 256
    // fuel units whether or not the copy is kept.
    let listener = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run")
        (drop (call $receive (i32.const 0x7777) (i64.const 200) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    let broadcaster = r#"(module
      (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (local $i i32)
        (loop
          (drop (call $broadcast (i32.const 0x2000) (i32.const 0) (i32.const 0) (i32.const 0)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 1000))))))"#;
    let mut kernel = Kernel::builder().build().unwrap();
    load_wat_with(
        &mut kernel,
        "listener",
        listener,
        r#""mailbox":{"capacity":1,"overflow":"drop_newest"}"#,
    );
    kernel
        .load_module(
            manifest("broadcaster", "run", &["messaging:broadcast"], "normal"),
            broadcaster.as_bytes(),
            Path::new("broadcaster"),
        )
        .unwrap();
    for _ in 0..20 {
        kernel.spawn("listener").unwrap();
    }
    kernel.spawn("broadcaster").unwrap();
    let report = kernel.run();
    let broadcaster = report.process("broadcaster").unwrap();
    assert_eq!(broadcaster.status, ExitStatus::Exited(0));
    assert!(broadcaster.fuel_used >= 1_000 * 20 * 256, "{broadcaster:?}");
    // Each listener kept one copy; the drop_newest mailboxes' refusals
    // are not counted as accepted (`sent` counts accepted copies), nor
    // reported back (the return value already said so).
    assert_eq!(broadcaster.sent, 20, "{broadcaster:?}");
    assert_eq!(broadcaster.delivery_failures, 0);
}

#[test]
fn a_client_that_leaves_before_its_answer_does_not_stop_a_bundled_server() {
    // `leaver` sends one request and exits at once; `stayer` then makes a
    // call after 50 ms and must get its answer: the server skipped the
    // reply it could not deliver. For `pong` (a task) and `echo` (a
    // handler).
    for (server, request_type) in [("pong", 1), ("echo", 0x1000)] {
        let leaver = format!(
            r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{server}")
      (func (export "run")
        (drop (call $send (call $lookup (i32.const 0) (i32.const {len})) (i32.const {request_type})
                          (i32.const 0) (i32.const 0) (i32.const 4)))))"#,
            len = server.len()
        );
        let stayer = format!(
            r#"(module
      (import "estalogic" "send_receive" (func $call
        (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{server}")
      (func (export "run") (result i32)
        (drop (call $receive (i32.const 0x7777) (i64.const 50) (i32.const 64) (i32.const 128) (i32.const 64)))
        (if (i64.ne (call $call (call $lookup (i32.const 0) (i32.const {len})) (i64.const 0)
                                (i32.const {request_type}) (i32.const 0) (i32.const 16) (i32.const 4)
                                (i64.const -1) (i64.const 2000) (i32.const 64) (i32.const 128) (i32.const 64))
                    (i64.const 4))
          (then (return (i32.const 1))))
        (i32.const 0)))"#,
            len = server.len()
        );
        let mut kernel = Kernel::builder().build().unwrap();
        if server == "pong" {
            load_bundled(&mut kernel, "pong", "run");
        } else {
            kernel
                .load_module(
                    manifest(
                        "echo",
                        "handle",
                        &["messaging:send", "messaging:receive"],
                        "normal",
                    ),
                    estalogic_services::get("echo").unwrap(),
                    Path::new("echo"),
                )
                .unwrap();
        }
        load_wat(&mut kernel, "leaver", &leaver, "normal");
        load_wat(&mut kernel, "stayer", &stayer, "normal");
        for name in [server, "leaver", "stayer"] {
            kernel.spawn(name).unwrap();
        }
        let exits = kernel.subscribe_exits();
        let shutdown = kernel.shutdown_handle();
        let runner = std::thread::spawn(move || kernel.run());
        loop {
            let exit = exits
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("the stayer ends");
            if exit.module == "stayer" {
                assert_eq!(exit.status, ExitStatus::Exited(0), "{server}");
                break;
            }
            assert_ne!(exit.module, server, "{server} ended: {exit:?}");
        }
        shutdown.request();
        runner.join().unwrap();
    }
}

#[test]
fn pong_answers_any_size_and_skips_what_is_not_a_ping() {
    // A hostile client sends `pong` 2,000 messages of another type (more
    // than its mailbox holds), then a 100,000-byte PING, then a 3-byte
    // one: `pong` takes and skips the others, answers both PINGs with
    // their payloads, and stops only at the empty PING.
    let client = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "send_receive" (func $call
        (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (import "estalogic" "yield_now" (func $yield (result i64)))
      (memory (export "memory") 5)
      (data (i32.const 0) "pong")
      (data (i32.const 1000) "abc")
      (func (export "run") (result i32) (local $pid i64) (local $i i32)
        (local.set $pid (call $lookup (i32.const 0) (i32.const 4)))
        (loop
          ;; Sent until accepted: the mailbox may be full for a moment.
          (if (i64.lt_s (call $send (local.get $pid) (i32.const 0x4242) (i32.const 0) (i32.const 0) (i32.const 8))
                        (i64.const 0))
            (then (drop (call $yield)) (br 1)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 2000))))
        ;; 100,000 bytes of 7s at 0x10000, answered into 0x30000.
        (memory.fill (i32.const 0x10000) (i32.const 7) (i32.const 100000))
        (if (i64.ne (call $call (local.get $pid) (i64.const 0) (i32.const 1) (i32.const 0)
                                (i32.const 0x10000) (i32.const 100000)
                                (i64.const -1) (i64.const 5000) (i32.const 2000) (i32.const 0x30000) (i32.const 100000))
                    (i64.const 100000))
          (then (return (i32.const 1))))
        (if (i32.ne (i32.load8_u (i32.const 0x30000)) (i32.const 7)) (then (return (i32.const 2))))
        (if (i32.ne (i32.load8_u (i32.const 0x4869f)) (i32.const 7)) (then (return (i32.const 2))))
        (if (i64.ne (call $call (local.get $pid) (i64.const 0) (i32.const 1) (i32.const 0)
                                (i32.const 1000) (i32.const 3)
                                (i64.const -1) (i64.const 5000) (i32.const 2000) (i32.const 3000) (i32.const 64))
                    (i64.const 3))
          (then (return (i32.const 3))))
        (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.const 0)))"#;
    let mut kernel = Kernel::builder().build().unwrap();
    load_bundled(&mut kernel, "pong", "run");
    load_wat(&mut kernel, "client", client, "normal");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    let client = report.process("client").unwrap();
    assert_eq!(client.status, ExitStatus::Exited(0), "{client:?}");
    let pong = report.process("pong").unwrap();
    assert_eq!(pong.status, ExitStatus::Exited(0), "{pong:?}");
    assert_eq!(pong.received, 2_003, "{pong:?}");
    assert_eq!(pong.sent, 2, "{pong:?}");
}

#[test]
fn an_ack_into_a_full_mailbox_is_dropped_and_reported_to_no_one() {
    // `filler` fills `acker`'s one-message drop_oldest mailbox; `acker`
    // asks `sink` to acknowledge a message and sleeps; `sink` takes it, so
    // the kernel acks into the full mailbox. The ack is dropped (it evicts
    // nothing: acker still finds filler's message), and neither filler nor
    // sink hears of it.
    let filler = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "acker")
      (func (export "run")
        (drop (call $send (call $lookup (i32.const 0) (i32.const 5)) (i32.const 0x1001)
                          (i32.const 0) (i32.const 0) (i32.const 0)))
        (drop (call $receive (i32.const 0) (i64.const 50) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    let acker = r#"(module
      (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (import "estalogic" "yield_now" (func $yield (result i64)))
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "sink")
      (func (export "run") (result i32)
        ;; Until filler's message is there (the mailbox is full).
        (loop
          (if (i64.lt_s (call $peek (i32.const 0x1001) (i32.const 64)) (i64.const 0))
            (then (drop (call $yield)) (br 1))))
        ;; ACK_REQUESTED is flag 2, at bit 8 of the options.
        (drop (call $send (call $lookup (i32.const 0) (i32.const 4)) (i32.const 0x1002)
                          (i32.const 512) (i32.const 0) (i32.const 0)))
        (drop (call $receive (i32.const 0x7777) (i64.const 20) (i32.const 64) (i32.const 128) (i32.const 64)))
        (if (i64.lt_s (call $receive (i32.const 0x1001) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64))
                      (i64.const 0))
          (then (return (i32.const 1))))
        (i32.const 0)))"#;
    let sink = r#"(module
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run")
        (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))))"#;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_wat(&mut kernel, "filler", filler, "normal");
        load_wat_with(
            &mut kernel,
            "acker",
            acker,
            r#""mailbox":{"capacity":1,"overflow":"drop_oldest"}"#,
        );
        load_wat(&mut kernel, "sink", sink, "normal");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        let acker = report.process("acker").unwrap();
        assert_eq!(acker.status, ExitStatus::Exited(0), "{acker:?}");
        for name in ["filler", "sink"] {
            let process = report.process(name).unwrap();
            assert_eq!(process.delivery_failures, 0, "{name}: {process:?}");
        }
    }
}

#[test]
fn a_deadlock_is_broken_one_process_at_a_time() {
    // `a` and `b` call each other and wait forever: a deadlock. Stopping
    // `a` fails its mail back, and the notice is the answer `b`'s call
    // waits for: `b` then ends by itself (exit 9), it is not stopped too.
    let caller = |peer: &str, code: i32| {
        format!(
            r#"(module
      (import "estalogic" "send_receive" (func $call
        (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
      (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{peer}")
      (func (export "run") (result i32)
        (drop (call $call (call $lookup (i32.const 0) (i32.const 1)) (i64.const 0) (i32.const 0x1000)
                          (i32.const 0) (i32.const 0) (i32.const 0)
                          (i64.const -1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
        (i32.const {code})))"#
        )
    };
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_wat(&mut kernel, "a", &caller("b", 8), "normal");
        load_wat(&mut kernel, "b", &caller("a", 9), "normal");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        let statuses: Vec<(String, ExitStatus)> = report
            .processes
            .iter()
            .map(|p| (p.module.clone(), p.status.clone()))
            .collect();
        let deadlocked = statuses
            .iter()
            .filter(|(_, s)| *s == ExitStatus::Stopped(ErrorCode::DEADLOCKED))
            .count();
        assert_eq!(deadlocked, 1, "{statuses:?}");
        assert!(
            statuses.contains(&("b".to_string(), ExitStatus::Exited(9)))
                || statuses.contains(&("a".to_string(), ExitStatus::Exited(8))),
            "{statuses:?}"
        );
    }
}

#[test]
fn reports_of_processes_exiting_together_add_up() {
    // Two tasks each send the other 3,000 messages into a 1,024-message
    // mailbox and exit without receiving: at their exits each fails the
    // other's mail back, while the other is exiting too. Over all
    // processes, what was sent plus the notices made equals what was
    // received plus what was not delivered — every report a consistent
    // snapshot (a report once read its drops, or a notice count, a moment
    // before or after the mailbox closed: off by a few in 2-4 % of runs).
    let sender = |peer: &str| {
        format!(
            r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "yield_now" (func $yield_now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 32) "{peer}")
  (func (export "run") (result i32) (local $i i32) (local $to i64)
    (loop $find
      (local.set $to (call $lookup (i32.const 32) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (if (i32.and (i64.lt_s (local.get $to) (i64.const 0)) (i32.lt_u (local.get $i) (i32.const 1000)))
        (then (drop (call $yield_now)) (br $find))))
    (local.set $i (i32.const 0))
    (loop $each
      (drop (call $send (local.get $to) (i32.const 0x2001) (i32.const 0) (i32.const 64) (i32.const 4)))
      (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 7))) (then (drop (call $yield_now))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $i) (i32.const 3000))))
    (i32.const 0)))"#
        )
    };
    for run in 0..60 {
        let mut kernel = Kernel::builder().workers(2).build().unwrap();
        for (name, peer) in [("p", "q"), ("q", "p")] {
            load_wat_with(
                &mut kernel,
                name,
                &sender(peer),
                r#""mailbox":{"capacity":1024}"#,
            );
        }
        kernel.spawn("p").unwrap();
        kernel.spawn("q").unwrap();
        let report = kernel.run();
        let sum = |f: fn(&estalogic_kernel::ProcessReport) -> u64| -> u64 {
            report.processes.iter().map(f).sum()
        };
        let made = sum(|p| p.sent) + sum(|p| p.delivery_failures);
        let accounted = sum(|p| p.received) + sum(|p| p.undelivered);
        assert_eq!(made, accounted, "run {run}: {:#?}", report.processes);
    }
}

#[test]
fn at_a_shutdown_processes_running_together_are_stopped_together() {
    // Two processes on two workers send to each other without end (a
    // full mailbox is no reason to stop); one exits 6 if a send finds the
    // other gone. At the shutdown request both run: whichever reaches its
    // checkpoint first must not close its mailbox while the other still
    // runs, so both are reported stopped by the shutdown. (Before, the
    // first was stopped at its checkpoint and the other, still running,
    // ended on its next send.)
    let gone = ErrorCode::NO_SUCH_PROCESS.to_syscall_return();
    let sender = |peer: &str| {
        format!(
            r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{peer}")
  (func (export "run") (result i32) (local $peer i64)
    (local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
    (loop $again
      (if (i64.eq (call $send (local.get $peer) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0))
                  (i64.const {gone}))
        (then (return (i32.const 6))))
      (br $again))
    (i32.const 0)))"#
        )
    };
    for round in 0..10 {
        let mut kernel = Kernel::builder().workers(2).build().unwrap();
        load_wat(&mut kernel, "a", &sender("b"), "normal");
        load_wat(&mut kernel, "b", &sender("a"), "normal");
        kernel.spawn("a").unwrap();
        kernel.spawn("b").unwrap();
        let shutdown = kernel.shutdown_handle();
        let runner = std::thread::spawn(move || kernel.run());
        std::thread::sleep(std::time::Duration::from_millis(20));
        shutdown.request();
        let report = runner.join().unwrap();
        for name in ["a", "b"] {
            assert_eq!(
                report.process(name).unwrap().status,
                ExitStatus::Stopped(ErrorCode::SHUTDOWN),
                "round {round}: {name}"
            );
        }
    }
}

/// A caller that calls `server` (type 1, 4 bytes, waiting forever) and
/// returns the call's result; if that is the 4-byte reply, it then looks
/// for anything else arriving within 10 ms and returns that receive's
/// result instead (`TIMEOUT` when nothing came).
const CALLER: &str = r#"(module
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "server")
  (func (export "run") (result i32) (local $r i64)
    (local.set $r (call $send_receive (call $lookup (i32.const 0) (i32.const 6))
      (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
      (i64.const -1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const 4))
      (then (return (i32.wrap_i64 (local.get $r)))))
    (i32.wrap_i64 (call $receive (i32.const 0) (i64.const 10)
      (i32.const 64) (i32.const 128) (i32.const 64)))))"#;

/// A task server that takes one message, runs `answer` (WAT; the header is
/// at 64, the payload at 128), then `end` (WAT ending `run`).
fn call_server(answer: &str, end: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    {answer}
    {end}))"#
    )
}

/// The server's reply to the message it took: type 2, the 4 bytes back.
const REPLY: &str = "(drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88))
    (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))";

/// A handler server: waits at `STARTED`, traps on the first real message.
const TRAPPING_HANDLER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000010000000400))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then (return (i32.const 0))))
    unreachable))"#;

/// Loads the module named `server` into a kernel.
type LoadServer = dyn Fn(&mut Kernel);

/// Runs [`CALLER`] against the module `server` loads; the caller's report.
fn call_into(
    server: &LoadServer,
    deterministic: bool,
    workers: usize,
) -> estalogic_kernel::ProcessReport {
    run_call(CALLER, server, deterministic, workers)
}

/// Runs `caller` (a module like [`CALLER`]) against the module `server`
/// loads; the caller's report.
fn run_call(
    caller: &str,
    server: &LoadServer,
    deterministic: bool,
    workers: usize,
) -> estalogic_kernel::ProcessReport {
    run_call_with(caller, "", server, deterministic, workers)
        .process("caller")
        .unwrap()
        .clone()
}

/// [`run_call`] with extra manifest fields for the caller (JSON members);
/// the whole run's report.
fn run_call_with(
    caller: &str,
    caller_extra: &str,
    server: &LoadServer,
    deterministic: bool,
    workers: usize,
) -> estalogic_kernel::RunReport {
    let mut kernel = estalogic_tests::kernel(deterministic, workers);
    load_wat_with(&mut kernel, "caller", caller, caller_extra);
    server(&mut kernel);
    kernel.spawn("server").unwrap();
    kernel.spawn("caller").unwrap();
    kernel.run()
}

#[test]
fn a_call_taken_and_never_answered_fails_back_when_its_receiver_ends() {
    // However the server ends after taking the call without replying —
    // trapping, returning, exiting, trapping into a same-state restart,
    // or a handler trapping on it — the caller's wait ends with the
    // kernel's notice instead of lasting forever (it was stopped as
    // DEADLOCKED before).
    let task = |end: &'static str, extra: &'static str| {
        move |kernel: &mut Kernel| load_wat_with(kernel, "server", &call_server("", end), extra)
    };
    let servers: Vec<(&str, Box<LoadServer>)> = vec![
        ("trap", Box::new(task("unreachable", ""))),
        ("return", Box::new(task("(i32.const 0)", ""))),
        (
            "exit",
            Box::new(task("(call $exit (i32.const 0)) (i32.const 0)", "")),
        ),
        (
            "restart",
            Box::new(task("unreachable", r#""restart":"on_failure""#)),
        ),
        (
            "handler",
            Box::new(|kernel: &mut Kernel| {
                estalogic_tests::load_handler(kernel, "server", TRAPPING_HANDLER)
            }),
        ),
    ];
    for (name, server) in &servers {
        for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
            let caller = call_into(server.as_ref(), deterministic, workers);
            assert_eq!(
                caller.status,
                ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32)),
                "{name}, {workers} workers"
            );
            assert_eq!(caller.received, 1, "{name}: the notice was taken");
            assert_eq!(caller.delivery_failures, 1, "{name}");
        }
    }
}

#[test]
fn a_call_answered_before_its_receiver_ends_gets_only_the_answer() {
    // The server replies, then traps or returns: the answer is owed no
    // more, so the caller gets the reply and nothing after it.
    for end in ["unreachable", "(i32.const 0)"] {
        for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
            let server = |kernel: &mut Kernel| {
                load_wat(kernel, "server", &call_server(REPLY, end), "normal")
            };
            let caller = call_into(&server, deterministic, workers);
            assert_eq!(
                caller.status,
                ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32)),
                "{end}, {workers} workers: the reply, then nothing"
            );
            assert_eq!(caller.received, 1, "{end}");
            assert_eq!(caller.delivery_failures, 0, "{end}");
        }
    }
}

#[test]
fn a_call_asking_for_an_ack_is_answered_by_the_ack_and_owed_no_more() {
    // The caller's call asks for an acknowledgement: the kernel's ack,
    // sent as the server takes it, is the answer (payload length 0). The
    // server then ends without replying, and no late notice follows.
    let caller = CALLER
        .replace(
            "(i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)",
            "(i32.const 1) (i32.const 512) (i32.const 0) (i32.const 4)",
        )
        .replace("(i64.const 4))", "(i64.const 0))");
    assert_ne!(caller, CALLER, "the call asks for an ack");
    let server =
        |kernel: &mut Kernel| load_wat(kernel, "server", &call_server("", "unreachable"), "normal");
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let caller = run_call(&caller, &server, deterministic, workers);
        assert_eq!(
            caller.status,
            ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32)),
            "{workers} workers: the ack, then nothing"
        );
        assert_eq!(caller.received, 1);
        assert_eq!(caller.delivery_failures, 0);
    }
}

#[test]
fn a_reply_without_a_correlation_answers_no_call() {
    // Sequences start at 1, so correlation 0 means none: a plain `send`
    // with REPLY in its options (no correlation argument) does not answer
    // the caller's first call, whose sequence was once 0. The server then
    // traps still owing the call, and the caller gets the notice.
    let server = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (drop (call $send (i64.load (i32.const 72)) (i32.const 2) (i32.const 256) (i32.const 128) (i32.const 4)))
    unreachable))"#;
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let load = |kernel: &mut Kernel| load_wat(kernel, "server", server, "normal");
        let caller = call_into(&load, deterministic, workers);
        assert_eq!(
            caller.status,
            ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32)),
            "{workers} workers"
        );
    }
}

/// [`CALLER`] that first fills its own mailbox (capacity 2, see
/// [`FULL_CALLER_MAILBOX`]) with two 3-byte messages it does not take
/// while it waits for the call's answer.
fn flooded_caller() -> String {
    let flooded = CALLER
        .replace(
            r#"(import "estalogic" "lookup""#,
            r#"(import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup""#,
        )
        .replace(
            "(local.set $r (call $send_receive",
            "(drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (local.set $r (call $send_receive",
        );
    assert_ne!(flooded, CALLER);
    flooded
}

/// The flooded caller's manifest: a mailbox of two, which refuses a third
/// message (the default mode).
const FULL_CALLER_MAILBOX: &str = r#""mailbox":{"capacity":2}"#;

/// Runs [`flooded_caller`] against the module `server` loads.
fn run_flooded_call(
    server: &LoadServer,
    deterministic: bool,
    workers: usize,
) -> estalogic_kernel::ProcessReport {
    let report = run_call_with(
        &flooded_caller(),
        FULL_CALLER_MAILBOX,
        server,
        deterministic,
        workers,
    );
    let server = report.process("server").unwrap();
    assert_eq!(
        server.send_failures, 0,
        "the server's answer was not refused"
    );
    report.process("caller").unwrap().clone()
}

#[test]
fn an_answer_to_a_call_gets_into_the_callers_full_mailbox() {
    // The caller's mailbox is full of messages it does not take while it
    // waits for its call's answer: the server's reply gets in anyway (it
    // was refused with MAILBOX_FULL, and the caller waited until the run
    // stopped it as DEADLOCKED). The caller then takes a 3-byte message
    // left in its mailbox.
    let server = |kernel: &mut Kernel| {
        load_wat(
            kernel,
            "server",
            &call_server(REPLY, "(i32.const 0)"),
            "normal",
        )
    };
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let caller = run_flooded_call(&server, deterministic, workers);
        assert_eq!(
            caller.status,
            ExitStatus::Exited(3),
            "{workers} workers: the reply, then a message of its own"
        );
        assert_eq!(caller.received, 2);
        assert_eq!(caller.send_failures, 0);
    }
}

#[test]
fn a_call_never_answered_fails_back_into_the_callers_full_mailbox() {
    // The server takes the call and traps: the kernel's notice is the
    // answer the caller waits for, and gets into its full mailbox (it was
    // dropped, and the caller waited until the run stopped it).
    let server =
        |kernel: &mut Kernel| load_wat(kernel, "server", &call_server("", "unreachable"), "normal");
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let caller = run_flooded_call(&server, deterministic, workers);
        assert_eq!(
            caller.status,
            ExitStatus::Exited(-(ErrorCode::NO_SUCH_PROCESS.0 as i32)),
            "{workers} workers"
        );
        assert_eq!(caller.received, 1, "the notice was taken");
        assert_eq!(caller.delivery_failures, 1);
    }
}
