//! Handler processes: an entry point `(i32) -> i32` called once per message
//! (the kernel's `STARTED` first), synchronously, with syscalls that never
//! wait.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, SlicePolicy};
use estalogic_tests::{ALL_CAPS, load_handler, load_wat, manifest};
use std::path::Path;

use estalogic_bench::messaging::{HANDLER_INBOX as INBOX, handler_ping, handler_pong};

/// A handler's process ended trapped: its reason.
fn trap_detail(report: &estalogic_kernel::RunReport, name: &str) -> String {
    match &report.process(name).unwrap().status {
        ExitStatus::Trapped { detail, .. } => detail.clone(),
        other => panic!("{name} ended {other:?}"),
    }
}

/// Loads and spawns the handler pair `pong` and `ping` (`rounds` round
/// trips).
fn spawn_ping_pong(kernel: &mut Kernel, rounds: u64) {
    load_handler(kernel, "pong", &handler_pong());
    load_handler(kernel, "ping", &handler_ping(rounds, "pong"));
    kernel.spawn("pong").unwrap();
    kernel.spawn("ping").unwrap();
}

#[test]
fn two_handlers_play_ping_pong_in_order() {
    for workers in [1, 2] {
        let mut kernel = Kernel::builder().workers(workers).build().unwrap();
        spawn_ping_pong(&mut kernel, 1_000);
        let report = kernel.run();
        for name in ["ping", "pong"] {
            let process = report.process(name).unwrap();
            assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
        }
        assert_eq!(report.process("ping").unwrap().sent, 1_001);
        assert_eq!(report.process("pong").unwrap().received, 1_001);
        // On one worker, nothing else can take the receiver first.
        if workers == 1 {
            assert!(
                report.stats.handoffs >= 900,
                "the receiver ran straight after each send: {} handoffs",
                report.stats.handoffs
            );
        }
    }
}

#[test]
fn handlers_run_with_the_wall_clock_backstop_on() {
    let mut kernel = Kernel::builder().wall_clock_backstop(true).build().unwrap();
    spawn_ping_pong(&mut kernel, 100);
    let report = kernel.run();
    for name in ["ping", "pong"] {
        let process = report.process(name).unwrap();
        assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
    }
}

#[test]
fn a_stopped_handler_reports_the_fuel_it_spent() {
    // About a million units of work for STARTED, then it waits for ever.
    let busy = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 300000))))
    (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_handler(&mut kernel, "busy", &busy);
    kernel.spawn("busy").unwrap();
    let report = kernel.run();
    let busy = report.process("busy").unwrap();
    assert_eq!(busy.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
    assert!(
        busy.fuel_used >= 500_000,
        "its checkpoints count its work: {} fuel",
        busy.fuel_used
    );
    assert!(busy.cpu_ns > 0, "its work counts as its CPU time");
}

#[test]
fn a_stopped_handler_reports_exactly_the_fuel_it_spent() {
    // Less than one checkpoint's worth of work, then it waits for ever: a
    // count made at checkpoints would say 0.
    let brief = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 5000))))
    (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    load_handler(&mut kernel, "brief", &brief);
    kernel.spawn("brief").unwrap();
    let report = kernel.run();
    let brief = report.process("brief").unwrap();
    assert_eq!(brief.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
    assert!(
        (10_000..100_000).contains(&brief.fuel_used),
        "about 4 units an iteration: {}",
        brief.fuel_used
    );
}

#[test]
fn a_handler_whose_receive_capability_is_revoked_gets_nothing_more() {
    // At STARTED: revoke its only capability (messaging:receive).
    let revoker = format!(
        r#"(module
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i64.ne (call $handles (i32.const 2048) (i32.const 4)) (i64.const 1))
      (then (return (i32.const 2))))
    (if (i64.lt_s (call $revoke (i32.load (i32.const 2048)) (i32.const 0)) (i64.const 0))
      (then (return (i32.const 3))))
    (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().build().unwrap();
    kernel
        .load_module(
            manifest("revoker", "handle", &["messaging:receive"], "normal"),
            revoker.as_bytes(),
            Path::new("revoker"),
        )
        .unwrap();
    kernel.spawn("revoker").unwrap();
    let report = kernel.run();
    let detail = trap_detail(&report, "revoker");
    assert!(detail.contains("messaging:receive"), "{detail}");
}

#[test]
fn deterministic_handler_runs_repeat_exactly() {
    let run = || {
        let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
        spawn_ping_pong(&mut kernel, 100);
        let report = kernel.run();
        report
            .processes
            .iter()
            .map(|p| (p.module.clone(), p.status.clone(), p.sent, p.fuel_used))
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 2);
    assert_eq!(first, run());
}

#[test]
fn a_handler_that_never_returns_is_stopped_and_its_peers_go_on() {
    let spinner = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32) (loop $forever (br $forever)) (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_handler(&mut kernel, "spinner", &spinner);
    load_handler(&mut kernel, "pong", &handler_pong());
    load_handler(&mut kernel, "ping", &handler_ping(10, "pong"));
    kernel.spawn("spinner").unwrap();
    kernel.spawn("pong").unwrap();
    kernel.spawn("ping").unwrap();
    let report = kernel.run();
    match &report.process("spinner").unwrap().status {
        ExitStatus::Trapped { code, detail } => {
            assert_eq!(*code, ErrorCode::TIMEOUT);
            assert!(detail.contains("fuel budget"), "{detail}");
        }
        other => panic!("the spinner ended {other:?}"),
    }
    for name in ["ping", "pong"] {
        assert_eq!(
            report.process(name).unwrap().status,
            ExitStatus::Exited(0),
            "{name}"
        );
    }
}

#[test]
fn a_handler_never_waits() {
    // At STARTED: a receive with a timeout, a send_receive, and a send to a
    // full BlockSender mailbox are WOULD_BLOCK; a receive with timeout 0 is
    // TIMEOUT. Exit code: the number of the first check that failed, or 0.
    let checker = format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $call
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "full")
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (local $full i64)
    (if (i64.ne (call $receive (i32.const 0) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64))
                (i64.const -{would_block}))
      (then (return (i32.const 1))))
    (if (i64.ne (call $receive (i32.const 0) (i64.const 10) (i32.const 4096) (i32.const 4160) (i32.const 64))
                (i64.const -{would_block}))
      (then (return (i32.const 2))))
    (if (i64.ne (call $receive (i32.const 0) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64))
                (i64.const -{timeout}))
      (then (return (i32.const 3))))
    (local.set $full (call $lookup (i32.const 0) (i32.const 4)))
    (if (i64.ne (call $call (local.get $full) (i64.const 0) (i32.const 7) (i32.const 0) (i32.const 0)
                            (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 4096)
                            (i32.const 4160) (i32.const 64))
                (i64.const -{would_block}))
      (then (return (i32.const 4))))
    (if (i64.ne (call $yield) (i64.const 0)) (then (return (i32.const 5))))
    ;; A bad timeout is a bad argument before it is a wait.
    (if (i64.ne (call $receive (i32.const 0) (i64.const -2) (i32.const 4096) (i32.const 4160) (i32.const 64))
                (i64.const -{invalid}))
      (then (return (i32.const 8))))
    ;; So is a negative buffer length, and a send_receive's bad wait_for or
    ;; reserved option bit.
    (if (i64.ne (call $receive (i32.const 0) (i64.const 5) (i32.const 4096) (i32.const 4160) (i32.const -1))
                (i64.const -{invalid}))
      (then (return (i32.const 10))))
    (if (i64.ne (call $call (local.get $full) (i64.const 0) (i32.const 7) (i32.const 0) (i32.const 0)
                            (i32.const 0) (i64.const -2) (i64.const -1) (i32.const 4096)
                            (i32.const 4160) (i32.const 64))
                (i64.const -{invalid}))
      (then (return (i32.const 11))))
    (if (i64.ne (call $call (local.get $full) (i64.const 0) (i32.const 7) (i32.const 8) (i32.const 0)
                            (i32.const 0) (i64.const 0) (i64.const -1) (i32.const 4096)
                            (i32.const 4160) (i32.const 64))
                (i64.const -{invalid}))
      (then (return (i32.const 12))))
    ;; Timeout 0 takes what is queued: a 3-byte message to itself.
    (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (if (i64.ne (call $receive (i32.const 9) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64))
                (i64.const 3))
      (then (return (i32.const 9))))
    ;; `full` has room for one message: the first send fits, the second
    ;; would wait.
    (if (i64.lt_s (call $send (local.get $full) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0))
                  (i64.const 0))
      (then (return (i32.const 6))))
    (if (i64.ne (call $send (local.get $full) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0))
                (i64.const -{would_block}))
      (then (return (i32.const 7))))
    (i32.const 100)))"#,
        would_block = ErrorCode::WOULD_BLOCK.0,
        timeout = ErrorCode::TIMEOUT.0,
        invalid = ErrorCode::INVALID_ARGUMENT.0,
    );
    // Waits in receive forever without taking anything: its mailbox (room
    // for one, BlockSender) stays full once one message is in.
    let full = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 99) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64)))
    (i32.const 0)))"#;
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    estalogic_tests::load_wat_with(
        &mut kernel,
        "full",
        full,
        r#""mailbox":{"capacity":1,"overflow":"block_sender"}"#,
    );
    load_handler(&mut kernel, "checker", &checker);
    kernel.spawn("full").unwrap();
    kernel.spawn("checker").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("checker").unwrap().status,
        ExitStatus::Exited(100)
    );
}

#[test]
fn a_message_larger_than_the_inbox_is_reported_to_its_sender() {
    // The handler would exit 7 if it were ever called with the message.
    let handler = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (result i32) (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then (i32.const 0)) (else (i32.const 7)))))"#
    );
    // Sends 100 bytes (the inbox holds 64) asking for an ack, then waits:
    // the first answer must be the notice (exit 1 otherwise), and no ack
    // follows (the message was never taken): the exit code is what the
    // second, 20 ms receive returns.
    let sender = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "handler")
  (func (export "run") (result i32)
    (drop (call $send (call $lookup (i32.const 0) (i32.const 7)) (i32.const 9) (i32.const 512)
                      (i32.const 256) (i32.const 100)))
    (if (i64.ne (call $receive (i32.const 0) (i64.const -1) (i32.const 512) (i32.const 600) (i32.const 64))
                (i64.const -1002))
      (then (return (i32.const 1))))
    (i32.wrap_i64 (call $receive (i32.const 0) (i64.const 20) (i32.const 512) (i32.const 600) (i32.const 64)))))"#;
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_handler(&mut kernel, "handler", &handler);
    load_wat(&mut kernel, "sender", sender, "normal");
    kernel.spawn("handler").unwrap();
    kernel.spawn("sender").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("sender").unwrap().status,
        ExitStatus::Exited(-(ErrorCode::TIMEOUT.0 as i32))
    );
    // The handler was never called with it, nor counted it as received:
    // it waited until nothing could ever arrive, and was stopped.
    let handler = report.process("handler").unwrap();
    assert_eq!(handler.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
    assert_eq!(handler.received, 0, "{handler:?}");
}

#[test]
fn handler_modules_are_checked_at_load() {
    // A failed load keeps the name (state Failed): a fresh kernel each time.
    let load = |wat: &str, capabilities: &[&str]| {
        Kernel::builder()
            .build()
            .unwrap()
            .load_module(
                manifest("h", "handle", capabilities, "normal"),
                wat.as_bytes(),
                Path::new("h"),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let no_inbox = r#"(module (memory (export "memory") 1)
      (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;
    let error = load(no_inbox, ALL_CAPS);
    assert!(error.contains("estalogic_inbox"), "{error}");
    let wrong_inbox = r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i32) (i32.const 0))
      (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;
    let error = load(wrong_inbox, ALL_CAPS);
    assert!(error.contains("() -> i64"), "{error}");
    let no_memory = format!(
        r#"(module {INBOX} (func (export "handle") (param i32) (result i32) (i32.const 0)))"#
    );
    let error = load(&no_memory, ALL_CAPS);
    assert!(error.contains("memory"), "{error}");
    let handler = format!(
        r#"(module (memory (export "memory") 1) {INBOX}
      (func (export "handle") (param i32) (result i32) (i32.const 0)))"#
    );
    let error = load(&handler, &["messaging:send"]);
    assert!(error.contains("messaging:receive"), "{error}");
    let bad_entry = r#"(module (memory (export "memory") 1)
      (func (export "handle") (param i64) (result i32) (i32.const 0)))"#;
    let error = load(bad_entry, ALL_CAPS);
    assert!(error.contains("(i32) -> i32"), "{error}");
}

#[test]
fn a_bad_inbox_ends_the_handler_with_a_clear_reason() {
    for (inbox, why, reason) in [
        // 8 bytes of payload: a DELIVERY_FAILURE notice (16) would not fit.
        (0x0000_0008_0000_0400_u64, "too small", "at least 16"),
        // 64 KiB of memory, inbox at 65,500: the header alone overflows.
        (
            0x0000_0040_0000_FFDC,
            "outside memory",
            "do not lie in its memory",
        ),
        // All ones: the error gives the capacity as declared.
        (
            u64::MAX,
            "declared past 1 MiB",
            "gave 4294967295 bytes of payload at 0xffffffff (of which the kernel would use 1048576)",
        ),
    ] {
        let inbox_value = inbox as i64;
        let handler = format!(
            r#"(module (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const {inbox_value}))
      (func (export "handle") (param i32) (result i32) (i32.const 0)))"#
        );
        let mut kernel = Kernel::builder().build().unwrap();
        load_handler(&mut kernel, "handler", &handler);
        kernel.spawn("handler").unwrap();
        let detail = trap_detail(&kernel.run(), "handler");
        assert!(detail.contains(reason), "{why}: {detail}");
    }
}

#[test]
fn the_bundled_rust_echo_handler_answers_every_request() {
    // Two requests, "hello" and "abc": exits with the sum of the two reply
    // lengths if both replies carry their request's bytes back, else 1.
    let requester = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "echo")
  (data (i32.const 16) "hello")
  (data (i32.const 32) "abc")
  (func $ask (param $echo i64) (param $at i32) (param $len i32) (result i32)
    (local $got i64)
    (local.set $got (call $receive_reply
      (call $send (local.get $echo) (i32.const 0x1001) (i32.const 0) (local.get $at) (local.get $len))
      (i64.const 5000) (i32.const 256) (i32.const 512) (i32.const 64)))
    (if (i64.ne (local.get $got) (i64.extend_i32_s (local.get $len))) (then (return (i32.const -1000))))
    (if (i32.ne (i32.load8_u (i32.const 512)) (i32.load8_u (local.get $at))) (then (return (i32.const -1000))))
    (local.get $len))
  (func (export "run") (result i32)
    (local $echo i64)
    (local $total i32)
    (local.set $echo (call $lookup (i32.const 0) (i32.const 4)))
    (local.set $total (i32.add (call $ask (local.get $echo) (i32.const 16) (i32.const 5))
                               (call $ask (local.get $echo) (i32.const 32) (i32.const 3))))
    (if (result i32) (i32.eq (local.get $total) (i32.const 8)) (then (i32.const 8)) (else (i32.const 1)))))"#;
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    estalogic_tests::load_bundled(&mut kernel, "echo", "handle");
    load_wat(&mut kernel, "requester", requester, "normal");
    kernel.spawn("echo").unwrap();
    kernel.spawn("requester").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("requester").unwrap().status,
        ExitStatus::Exited(8)
    );
    assert_eq!(report.process("echo").unwrap().received, 2);
}

#[test]
fn every_trap_kind_in_a_handler_is_reported_with_its_code_and_peers_go_on() {
    // A handler's call runs on the worker's own stack, not a fiber: a stack
    // overflow there (the `$recurse` case) must end that process only.
    for &(body, code) in estalogic_tests::TRAP_CASES {
        let trapper = format!(
            r#"(module (memory (export "memory") 1) (table 1 funcref)
  {INBOX}
  (func $recurse (call $recurse))
  (func (export "handle") (param i32) (result i32) {body} (i32.const 0)))"#
        );
        for workers in [1, 2] {
            let mut kernel = Kernel::builder().workers(workers).build().unwrap();
            load_handler(&mut kernel, "trapper", &trapper);
            kernel.spawn("trapper").unwrap();
            spawn_ping_pong(&mut kernel, 100);
            let report = kernel.run();
            match &report.process("trapper").unwrap().status {
                ExitStatus::Trapped { code: got, .. } => assert_eq!(*got, code, "{body}"),
                other => panic!("{body}: expected a trap, got {other}"),
            }
            for name in ["ping", "pong"] {
                let status = &report.process(name).unwrap().status;
                assert_eq!(*status, ExitStatus::Exited(0), "{body}: {name}");
            }
        }
    }
}

#[test]
fn a_handler_growing_memory_and_tables_past_their_limits_gets_failures_not_a_crash() {
    // memory.grow and table.grow far past their limits (the user class's
    // 16 MiB, the pool's table slot), up to the largest requests there
    // are, return -1, and the handler exits with 3; 1 or 2 would say which
    // growth was granted (a TIMEOUT, that asking was charged past the
    // call's budget).
    let grower = format!(
        r#"(module (memory (export "memory") 1) (table 1 funcref)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.ne (memory.grow (i32.const 1000)) (i32.const -1)) (then (return (i32.const 1))))
    (if (i32.ne (memory.grow (i32.const 65535)) (i32.const -1)) (then (return (i32.const 1))))
    (if (i32.ne (table.grow (ref.null func) (i32.const 20000)) (i32.const -1))
      (then (return (i32.const 2))))
    (if (i32.ne (table.grow (ref.null func) (i32.const -1)) (i32.const -1))
      (then (return (i32.const 2))))
    (return (i32.const 3))))"#
    );
    let mut kernel = Kernel::builder().build().unwrap();
    load_handler(&mut kernel, "grower", &grower);
    kernel.spawn("grower").unwrap();
    let report = kernel.run();
    let status = &report.process("grower").unwrap().status;
    assert_eq!(*status, ExitStatus::Exited(3), "{status:?}");
}

#[test]
fn a_handler_call_pays_for_its_host_work_from_its_budget() {
    // One call that logs 64 KiB 200 times asks the kernel for 13 MB of
    // copying, twice its call's budget (6.4 million units at one a byte):
    // stopped with TIMEOUT, as the same work done in wasm would be.
    let logger = format!(
        r#"(module
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (memory (export "memory") 2)
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (loop
      (drop (call $log (i32.const 4) (i32.const 0) (i32.const 65536)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 200))))
    (i32.const 1)))"#
    );
    let mut kernel = Kernel::builder().build().unwrap();
    load_handler(&mut kernel, "logger", &logger);
    kernel.spawn("logger").unwrap();
    let report = kernel.run();
    match &report.process("logger").unwrap().status {
        ExitStatus::Trapped { code, detail } => {
            assert_eq!(*code, ErrorCode::TIMEOUT, "{detail}");
            assert!(detail.contains("fuel budget"), "{detail}");
        }
        other => panic!("the logger ended {other:?}"),
    }
}

#[test]
fn a_call_is_answered_by_the_same_state_restart_that_holds_its_request() {
    // `server` traps on type 1; `client` sends it type 1, then calls it
    // with type 2 and waits forever. The restart keeps the mail, so the new
    // `server` answers the call: the client accepts the answer from the
    // process that now holds its request, not only from the pid it called.
    let server = format!(
        r#"(module
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then unreachable))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 2))
      (then (drop (call $reply (i64.load (i32.const 1032)) (i64.load (i32.const 1048))
                              (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)))))
    (i32.const 0)))"#
    );
    let client = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $call
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "server")
  (func (export "run") (result i32) (local $pid i64)
    (local.set $pid (call $lookup (i32.const 0) (i32.const 6)))
    (drop (call $send (local.get $pid) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
    (if (i64.lt_s (call $call (local.get $pid) (i64.const 0) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0)
                             (i64.const -1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64))
                  (i64.const 0))
      (then (return (i32.const 1))))
    ;; The answer: a PONG-like type 3 from the new server.
    (if (i32.ne (i32.load (i32.const 68)) (i32.const 3)) (then (return (i32.const 2))))
    (i32.const 0)))"#;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .deterministic(deterministic)
            .build()
            .unwrap();
        kernel
            .load_module(
                estalogic_kernel::Manifest::parse(
                    r#"{"name":"server","version":"0.1.0","entry_point":"handle","runtime":"wasm32",
                        "restart":"on_failure","capabilities_required":["messaging:send","messaging:receive"]}"#,
                )
                .unwrap(),
                server.as_bytes(),
                Path::new("server"),
            )
            .unwrap();
        load_wat(&mut kernel, "client", client, "normal");
        kernel.spawn("server").unwrap();
        kernel.spawn("client").unwrap();
        // The server waits for more until the run stops it.
        let report = kernel.run();
        let client = report.process("client").unwrap();
        assert_eq!(client.status, ExitStatus::Exited(0), "{client:?}");
        assert_eq!(report.restarts.len(), 1, "the server was restarted once");
    }
}

/// A handler that, at STARTED, sends PING (type 1, 4 bytes) to `answerer`
/// and looks at once (timeout 0) for the answer; then stops `answerer`
/// (type 0x1001) and exits 0 if the answer was already there, 4 if not.
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
    ;; The answer (PONG, type 2) is in the mailbox already, or not.
    (local.set $code (i32.const 4))
    (if (i64.ge_s (call $receive (i32.const 2) (i64.const 0) (i32.const 3000) (i32.const 3100) (i32.const 64)) (i64.const 0))
      (then (local.set $code (i32.const 0))))
    (drop (call $send (local.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $exit (local.get $code))
    (i32.const 0)))"#
    )
}

/// [`asker`], but it sends from 2,000 calls deep in its own stack, so a
/// receiver run inside the send starts with that much of the worker's
/// stack used.
fn deep_asker() -> String {
    asker()
        .replace(
            r#"(func (export "handle") (param i32) (result i32) (local $peer i64) (local $code i32)"#,
            r#"(func (export "handle") (param i32) (result i32) (call $deep (i32.const 2000)))
  (func $deep (param $n i32) (result i32) (local $a i64) (local $b i64) (local $c i64)
    (if (result i32) (local.get $n)
      (then (i32.add (call $deep (i32.sub (local.get $n) (i32.const 1))) (i32.wrap_i64 (local.get $a))))
      (else (call $ask))))
  (func $ask (result i32) (local $peer i64) (local $code i32)"#,
        )
}

fn load_at(kernel: &mut Kernel, name: &str, wat: &str, priority: &str) {
    kernel
        .load_module(
            manifest(name, "handle", ALL_CAPS, priority),
            wat.as_bytes(),
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

#[test]
fn a_message_to_an_idle_handler_is_handled_before_the_send_returns() {
    // Nothing else is ready and the answerer waits idle: its call runs
    // inside the send, so its answer is there when the send returns.
    for deterministic in [false, true] {
        let mut kernel = Kernel::builder()
            .workers(1)
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_at(&mut kernel, "answerer", &handler_pong(), "normal");
        load_at(&mut kernel, "asker", &asker(), "normal");
        kernel.spawn("answerer").unwrap();
        kernel.spawn("asker").unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("asker").unwrap().status,
            ExitStatus::Exited(0)
        );
        let answerer = report.process("answerer").unwrap();
        assert_eq!(answerer.status, ExitStatus::Exited(0));
        // PING and STOP, counted as if taken from its mailbox (STARTED is
        // the kernel's, not a message received).
        assert_eq!(answerer.received, 2, "PING, STOP: {answerer:?}");
        assert_eq!(answerer.sent, 1, "PONG");
        assert_eq!(report.process("asker").unwrap().received, 1, "PONG");
    }
}

#[test]
fn a_handler_never_runs_a_lower_level_handler_inside_its_send() {
    // The asker outranks the answerer: the answerer runs only once the
    // asker stops running, so the answer is not there yet.
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_at(&mut kernel, "answerer", &handler_pong(), "low");
    load_at(&mut kernel, "asker", &asker(), "high");
    kernel.spawn("answerer").unwrap();
    kernel.spawn("asker").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("asker").unwrap().status,
        ExitStatus::Exited(4)
    );
    assert_eq!(
        report.process("answerer").unwrap().status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn a_handler_ended_by_a_message_handled_inside_a_send_is_reported() {
    // The answerer exits 7 on PING, or traps; the asker's send succeeds
    // and it goes on (it finds no answer: exit 4).
    let exits = format!(
        r#"(module
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then (call $exit (i32.const 7))))
    (i32.const 0)))"#
    );
    let traps = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then unreachable))
    (i32.const 0)))"#
    );
    // Overflows its stack, called inside a send that the asker makes near
    // the bottom of its own (see `deep_asker`).
    let overflows = format!(
        r#"(module
  (memory (export "memory") 1)
  {INBOX}
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then (drop (call $down (i32.const 0)))))
    (i32.const 0)))"#
    );
    for (answerer, expected) in [
        (
            overflows,
            ExitStatus::Trapped {
                code: ErrorCode::TRAP_STACK_OVERFLOW,
                detail: String::new(),
            },
        ),
        (exits, ExitStatus::Exited(7)),
        (
            traps,
            ExitStatus::Trapped {
                code: ErrorCode::TRAP_UNREACHABLE,
                detail: String::new(),
            },
        ),
    ] {
        let mut kernel = Kernel::builder().workers(1).build().unwrap();
        load_at(&mut kernel, "answerer", &answerer, "normal");
        load_at(&mut kernel, "asker", &deep_asker(), "normal");
        kernel.spawn("answerer").unwrap();
        kernel.spawn("asker").unwrap();
        let report = kernel.run();
        let status = report.process("answerer").unwrap().status.clone();
        match (&status, &expected) {
            (ExitStatus::Trapped { code, .. }, ExitStatus::Trapped { code: want, .. }) => {
                assert_eq!(code, want, "{status:?}");
            }
            _ => assert_eq!(status, expected),
        }
        // Handled inside the send: the asker exits in the call that sent,
        // so no handoff could have run the answerer.
        assert_eq!(report.stats.handoffs, 1, "{status:?}");
        let asker = report.process("asker").unwrap();
        assert_eq!(asker.status, ExitStatus::Exited(4), "{asker:?}");
        assert_eq!(asker.sent, 2, "PING, and STOP (to an ended process)");
    }
}

#[test]
fn handlers_handling_long_messages_inside_sends_pass_their_checkpoints() {
    // The answerer spends about 200,000 units (two checkpoints) per PING.
    let slow_pong = format!(
        r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param $len i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
      (then
        (loop $spin
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $spin (i32.lt_u (local.get $i) (i32.const 50000))))
        (drop (call $send (i64.load (i32.const 1032)) (i32.const 2) (i32.const 0)
                          (i32.const 1080) (local.get $len)))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001))
      (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    );
    for deterministic in [false, true] {
        let mut kernel = Kernel::builder()
            .workers(1)
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_handler(&mut kernel, "pong", &slow_pong);
        load_handler(&mut kernel, "ping", &handler_ping(100, "pong"));
        kernel.spawn("pong").unwrap();
        kernel.spawn("ping").unwrap();
        let report = kernel.run();
        for name in ["ping", "pong"] {
            let process = report.process(name).unwrap();
            assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
        }
        let pong = report.process("pong").unwrap();
        assert!(
            pong.fuel_used >= 100 * 150_000,
            "its work is counted: {}",
            pong.fuel_used
        );
        assert!(
            report.stats.checkpoints >= 150,
            "its checkpoints were passed: {}",
            report.stats.checkpoints
        );
        assert!(pong.cpu_ns > 0);
    }
}

#[test]
fn sends_to_an_idle_handler_are_handled_as_they_are_sent() {
    // Three sends in one call, at priorities 0, 7 and 3, to a handler that
    // waits idle at a higher level: each is handled inside its send, so in
    // the order sent (priority orders what waits in a mailbox together).
    // The receiver exits 9 on a message out of send order, 0 after three.
    let sender = format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter")
  {INBOX}
  (func $one (param $peer i64) (param $n i32) (param $priority i32)
    (i32.store (i32.const 2048) (local.get $n))
    (drop (call $send (local.get $peer) (i32.const 1) (local.get $priority) (i32.const 2048) (i32.const 4))))
  (func (export "handle") (param i32) (result i32) (local $peer i64)
    (local.set $peer (call $lookup (i32.const 0) (i32.const 7)))
    (call $one (local.get $peer) (i32.const 0) (i32.const 0))
    (call $one (local.get $peer) (i32.const 1) (i32.const 7))
    (call $one (local.get $peer) (i32.const 2) (i32.const 3))
    (call $exit (i32.const 0))
    (i32.const 0)))"#
    );
    let counter = format!(
        r#"(module
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 0))
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 1)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 1080)) (global.get $next)) (then (call $exit (i32.const 9))))
    (global.set $next (i32.add (global.get $next) (i32.const 1)))
    (if (i32.eq (global.get $next) (i32.const 3)) (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    );
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_at(&mut kernel, "counter", &counter, "high");
    load_at(&mut kernel, "sender", &sender, "normal");
    kernel.spawn("counter").unwrap();
    kernel.spawn("sender").unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("sender").unwrap().status,
        ExitStatus::Exited(0)
    );
    assert_eq!(
        report.process("counter").unwrap().status,
        ExitStatus::Exited(0),
        "handled in send order"
    );
    assert_eq!(report.stats.handoffs, 3, "each inside its send");
}

#[test]
fn a_process_woken_during_direct_deliveries_runs_before_the_next_one() {
    // `a` and `b` ping-pong 1,000 times, each ping handled inside its send.
    // At the second ping `b` wakes the task `t`, which then tells `a`
    // (DONE). Once `t` is ready, the next send is not handled directly: `t`
    // runs first, so DONE reaches `a` within a few rounds (exit 0), not
    // after `a`'s next checkpoint, thousands of rounds later (exit 7).
    let a = format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (global $peer (mut i64) (i64.const 0))
  (global $round (mut i32) (i32.const 0))
  (global $done (mut i32) (i32.const -1))
  {INBOX}
  (func $ping
    (i32.store (i32.const 2048) (global.get $round))
    (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4))))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        (call $ping)
        (return (i32.const 0))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2002))
      (then (global.set $done (global.get $round)) (return (i32.const 0))))
    (global.set $round (i32.add (global.get $round) (i32.const 1)))
    (if (i32.eq (global.get $round) (i32.const 1000))
      (then
        (drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
        (call $exit (select (i32.const 0) (i32.const 7)
          (i32.and (i32.ge_s (global.get $done) (i32.const 0)) (i32.lt_s (global.get $done) (i32.const 50)))))))
    (call $ping)
    (i32.const 0)))"#
    );
    let b = format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "t")
  {INBOX}
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
      (then
        (if (i32.eq (i32.load (i32.const 1080)) (i32.const 1))
          (then (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x2001)
                                  (i32.const 0) (i32.const 0) (i32.const 0)))))
        (drop (call $send (i64.load (i32.const 1032)) (i32.const 2) (i32.const 0)
                          (i32.const 1080) (local.get $len)))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    );
    let t = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "a")
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x2001) (i64.const -1) (i32.const 100) (i32.const 200) (i32.const 16)))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x2002)
                      (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#;
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(
            manifest("t", "run", ALL_CAPS, "normal"),
            t.as_bytes(),
            Path::new("t"),
        )
        .unwrap();
    load_at(&mut kernel, "b", &b, "normal");
    load_at(&mut kernel, "a", &a, "normal");
    for name in ["t", "b", "a"] {
        kernel.spawn(name).unwrap();
    }
    let report = kernel.run();
    for name in ["t", "b"] {
        let process = report.process(name).unwrap();
        assert_eq!(process.status, ExitStatus::Exited(0), "{name}: {process:?}");
    }
    assert_eq!(
        report.process("a").unwrap().status,
        ExitStatus::Exited(0),
        "DONE came within a few rounds"
    );
    assert!(report.stats.handoffs >= 900, "{}", report.stats.handoffs);
}

#[test]
fn after_a_shutdown_request_no_handler_is_called_again() {
    // A pair ping-pongs without end on two workers, each ping handled inside
    // its send. `ping` returns 4 (exits) on any message but PONG, such as
    // the delivery-failure notice for a ping that `pong`'s stop failed
    // back. Stopped by a shutdown request, both are reported stopped: no
    // call runs after the request.
    // One pair, four and sixteen (more pairs than workers: some wait
    // queued, and run again after the request; a call running when the
    // request comes sends to peers the other worker stops). `ping` here
    // exits 6 when a send fails.
    let strict_ping = |pong: &str| {
        let ping = handler_ping(2_000_000_000, pong);
        let checked = ping.replace(
            "(drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4)))",
            "(if (i64.lt_s (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4)) (i64.const 0)) (then (call $exit (i32.const 6))))",
        );
        assert_ne!(ping, checked, "handler_ping's send moved");
        checked
    };
    for pairs in [1, 4, 16, 4, 16, 1, 4, 16] {
        let mut kernel = Kernel::builder().workers(2).build().unwrap();
        let names: Vec<(String, String)> = (0..pairs)
            .map(|i| (format!("ping{i}"), format!("pong{i}")))
            .collect();
        for (ping, pong) in &names {
            load_at(&mut kernel, pong, &handler_pong(), "high");
            load_at(&mut kernel, ping, &strict_ping(pong), "low");
        }
        for (ping, pong) in &names {
            kernel.spawn(pong).unwrap();
            kernel.spawn(ping).unwrap();
        }
        let shutdown = kernel.shutdown_handle();
        let runner = std::thread::spawn(move || kernel.run());
        std::thread::sleep(std::time::Duration::from_millis(30));
        shutdown.request();
        let report = runner.join().unwrap();
        for (ping, pong) in &names {
            for name in [ping, pong] {
                assert_eq!(
                    report.process(name).unwrap().status,
                    ExitStatus::Stopped(ErrorCode::SHUTDOWN),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn a_receiver_kept_between_direct_deliveries_is_charged_only_its_own_calls() {
    // `pong` spins 100,000 rounds per PING (below the largest checkpoint,
    // which this kernel uses), `ping` does almost nothing per PONG; 200
    // rounds, each ping handled inside its send with `pong` kept claimed
    // from one to the next. `pong`'s CPU time must be its calls', and
    // `ping`'s must not include them. On the virtual clock, so that the
    // host's speed and load decide nothing (on the real clock, a loaded
    // host's preemptions charged to `ping` once made it fail).
    let busy_pong = format!(
        r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param $len i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
      (then
        (loop $spin
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $spin (i32.lt_u (local.get $i) (i32.const 100000))))
        (drop (call $send (i64.load (i32.const 1032)) (i32.const 2) (i32.const 0)
                          (i32.const 1080) (local.get $len)))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001))
      (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    );
    let policy = SlicePolicy {
        checkpoint_fuel: SlicePolicy::MAX_CHECKPOINT_FUEL,
        ..SlicePolicy::default()
    };
    let mut kernel = Kernel::builder()
        .deterministic(true)
        .slice_policy(policy)
        .build()
        .unwrap();
    load_handler(&mut kernel, "pong", &busy_pong);
    load_handler(&mut kernel, "ping", &handler_ping(200, "pong"));
    kernel.spawn("pong").unwrap();
    kernel.spawn("ping").unwrap();
    let report = kernel.run();
    let (ping, pong) = (
        report.process("ping").unwrap(),
        report.process("pong").unwrap(),
    );
    assert_eq!(ping.status, ExitStatus::Exited(0));
    assert_eq!(pong.status, ExitStatus::Exited(0));
    assert!(report.stats.handoffs >= 190, "{}", report.stats.handoffs);
    // Without the lent time taken off the sender's, the sender's figure
    // would include every one of the receiver's calls, and exceed it.
    assert!(
        pong.cpu_ns > ping.cpu_ns,
        "pong {} ns, ping {} ns",
        pong.cpu_ns,
        ping.cpu_ns
    );
}

#[test]
fn a_receiver_ended_inside_a_send_is_gone_by_the_senders_next_call() {
    // `a`'s first call sends ten pings to `b`, which exits at the second,
    // inside its send; the other pings are queued and failed back. `a` then
    // sends itself NEXT; in that call its ping to `b` must fail at once
    // with NO_SUCH_PROCESS (exit 0), not be queued for a dead process
    // (exit 3) because `b` waits to be reaped until `a`'s turn ends.
    let gone = ErrorCode::NO_SUCH_PROCESS.to_syscall_return();
    let a = format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (global $peer (mut i64) (i64.const 0))
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        (loop $burst
          (i32.store (i32.const 2048) (local.get $i))
          (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $burst (i32.lt_u (local.get $i) (i32.const 10))))
        (drop (call $send (call $self) (i32.const 0x3000) (i32.const 0) (i32.const 0) (i32.const 0)))
        (return (i32.const 0))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x3000))
      (then
        (if (i64.eq (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4))
                    (i64.const {gone}))
          (then (call $exit (i32.const 0))))
        (call $exit (i32.const 3))))
    ;; Delivery-failure notices for the pings queued to `b`.
    (i32.const 0)))"#
    );
    let b = format!(
        r#"(module
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.and (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
                 (i32.eq (i32.load (i32.const 1080)) (i32.const 1)))
      (then (call $exit (i32.const 9))))
    (i32.const 0)))"#
    );
    // On two workers `a` may send its pings before `b` has parked on the
    // other worker: they are then queued, `b` ends in its own turn, and a
    // later ping can still find it (exit 3 is right there). Only the runs
    // where `b` ended inside `a`'s sends (both pings handed off) count, and
    // there must be some.
    let mut counted = 0;
    for (workers, run) in [(1, 0)].into_iter().chain((0..20).map(|run| (2, run))) {
        if workers == 2 && counted >= 4 {
            break;
        }
        let mut kernel = Kernel::builder().workers(workers).build().unwrap();
        load_at(&mut kernel, "b", &b, "high");
        load_at(&mut kernel, "a", &a, "low");
        kernel.spawn("b").unwrap();
        kernel.spawn("a").unwrap();
        let report = kernel.run();
        assert_eq!(report.process("b").unwrap().status, ExitStatus::Exited(9));
        if workers == 1 {
            assert_eq!(
                report.stats.handoffs, 2,
                "one worker: b ends inside a's send"
            );
        } else if report.stats.handoffs < 2 {
            continue;
        } else {
            counted += 1;
        }
        assert_eq!(
            report.process("a").unwrap().status,
            ExitStatus::Exited(0),
            "{workers} workers, run {run}"
        );
    }
    assert!(counted > 0, "on two workers b never ended inside a's send");
}

/// A handler `b` that answers each PING (type 1) with `answers`: WAT
/// statements sending to the PING's source (`$to`), the PING's payload at
/// 1080.
fn answerer_with(answers: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param $len i32) (result i32) (local $to i64)
    (local.set $to (i64.load (i32.const 1032)))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then {answers}))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    )
}

/// A handler `a` that at STARTED sends `pings` PINGs (payload 0, 1, …) to
/// `b` in one call, then records the type and first payload word of each
/// message it gets after (types other than STARTED) at 4096 + 8n, and
/// after `expect` of them stops `b` and exits with `check`'s result (a WAT
/// expression over that record).
fn recorder(pings: u32, expect: u32, check: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (global $peer (mut i64) (i64.const 0))
  (global $got (mut i32) (i32.const 0))
  {INBOX}
  (func (export "handle") (param i32) (result i32) (local $i i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        (loop $each
          (i32.store (i32.const 2048) (local.get $i))
          (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 4)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $each (i32.lt_u (local.get $i) (i32.const {pings}))))
        (return (i32.const 0))))
    (i32.store (i32.add (i32.const 4096) (i32.mul (global.get $got) (i32.const 8))) (i32.load (i32.const 1028)))
    (i32.store (i32.add (i32.const 4100) (i32.mul (global.get $got) (i32.const 8))) (i32.load (i32.const 1080)))
    (global.set $got (i32.add (global.get $got) (i32.const 1)))
    (if (i32.eq (global.get $got) (i32.const {expect}))
      (then
        (drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
        (call $exit {check})))
    (i32.const 0)))"#
    )
}

fn run_pair(a: &str, b: &str) -> estalogic_kernel::RunReport {
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_at(&mut kernel, "b", b, "high");
    load_at(&mut kernel, "a", a, "low");
    kernel.spawn("b").unwrap();
    kernel.spawn("a").unwrap();
    kernel.run()
}

#[test]
fn answers_to_a_sender_come_in_the_order_sent() {
    // Two pings in one call, each handled inside its send; the first
    // answer is held for the sender, the second goes through its mailbox:
    // it gets PONG 0, then PONG 1 (exit 0; 1 if out of order).
    let b = answerer_with(
        "(drop (call $send (local.get $to) (i32.const 2) (i32.const 0) (i32.const 1080) (local.get $len)))",
    );
    let a = recorder(
        2,
        2,
        "(select (i32.const 0) (i32.const 1) (i32.and (i32.eqz (i32.load (i32.const 4100))) (i32.eq (i32.load (i32.const 4108)) (i32.const 1))))",
    );
    let report = run_pair(&a, &b);
    assert_eq!(report.process("a").unwrap().status, ExitStatus::Exited(0));
    assert_eq!(report.process("b").unwrap().status, ExitStatus::Exited(0));
    assert_eq!(
        report.stats.handoffs, 3,
        "two pings and the stop, each inside its send"
    );
}

#[test]
fn a_held_answer_waits_behind_a_higher_priority_message() {
    // `b` answers a ping with type 2 at priority 0 (held for the sender),
    // then type 3 at priority 7 (its mailbox): waiting together, type 3 is
    // taken first (exit 0; 1 if not).
    let b = answerer_with(
        "(drop (call $send (local.get $to) (i32.const 2) (i32.const 0) (i32.const 1080) (local.get $len)))
         (drop (call $send (local.get $to) (i32.const 3) (i32.const 7) (i32.const 1080) (local.get $len)))",
    );
    let a = recorder(
        1,
        2,
        "(select (i32.const 0) (i32.const 1) (i32.and (i32.eq (i32.load (i32.const 4096)) (i32.const 3)) (i32.eq (i32.load (i32.const 4104)) (i32.const 2))))",
    );
    let report = run_pair(&a, &b);
    assert_eq!(report.process("a").unwrap().status, ExitStatus::Exited(0));
    assert_eq!(report.process("b").unwrap().status, ExitStatus::Exited(0));
}

#[test]
fn a_held_answer_is_not_lost_when_its_receiver_exits() {
    // `a` pings `b` (handled inside the send; the PONG is held for `a`)
    // and exits in the same call: the PONG goes back into `a`'s mailbox
    // and is reported to `b` like any mail left behind.
    let b = answerer_with(
        "(drop (call $send (local.get $to) (i32.const 2) (i32.const 0) (i32.const 1080) (local.get $len)))",
    );
    let a = asker().replace(
        ";; The answer (PONG, type 2) is in the mailbox already, or not.",
        "(call $exit (i32.const 0))",
    );
    assert_ne!(a, asker(), "the asker's marker comment moved");
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_at(&mut kernel, "answerer", &b, "high");
    load_at(&mut kernel, "asker", &a, "low");
    kernel.spawn("answerer").unwrap();
    kernel.spawn("asker").unwrap();
    let report = kernel.run();
    let (a, b) = (
        report.process("asker").unwrap(),
        report.process("answerer").unwrap(),
    );
    assert_eq!(a.status, ExitStatus::Exited(0));
    assert_eq!(a.undelivered, 1, "the PONG, left in its mailbox: {a:?}");
    assert_eq!(b.delivery_failures, 1, "told of it: {b:?}");
    assert_eq!(b.status, ExitStatus::Stopped(ErrorCode::DEADLOCKED));
}

#[test]
fn a_receiver_that_looked_at_its_mailbox_inside_a_send_is_still_woken_later() {
    // `b`'s call, run inside `a`'s send, looks at its empty mailbox
    // (receive with timeout 0), which ends that look's wait. Once `a` is
    // done, `b` waits for its next message again: the task `t`'s message,
    // sent later, must wake it (exit 0), not find it deaf (DEADLOCKED).
    let b = format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
      (then (drop (call $receive (i32.const 0) (i64.const 0) (i32.const 3000) (i32.const 3100) (i32.const 64)))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x3000)) (then (call $exit (i32.const 0))))
    (i32.const 0)))"#
    );
    let a = format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  {INBOX}
  (func (export "handle") (param i32) (result i32)
    (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $exit (i32.const 0))
    (i32.const 0)))"#
    );
    let t = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 5) (i32.const 100) (i32.const 200) (i32.const 16)))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x3000)
                      (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#;
    for deterministic in [true, false] {
        let mut kernel = Kernel::builder()
            .workers(1)
            .deterministic(deterministic)
            .build()
            .unwrap();
        load_at(&mut kernel, "b", &b, "high");
        load_at(&mut kernel, "a", &a, "low");
        kernel
            .load_module(
                manifest("t", "run", ALL_CAPS, "normal"),
                t.as_bytes(),
                Path::new("t"),
            )
            .unwrap();
        for name in ["b", "a", "t"] {
            kernel.spawn(name).unwrap();
        }
        let report = kernel.run();
        for name in ["a", "t", "b"] {
            assert_eq!(
                report.process(name).unwrap().status,
                ExitStatus::Exited(0),
                "{name} (deterministic: {deterministic})"
            );
        }
    }
}
