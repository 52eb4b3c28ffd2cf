//! The `notify` syscall and the host's notification queue: what a guest
//! posts reaches the host in order with its source, a refused post keeps
//! nothing and loses nothing, and the host can take while the kernel runs.

use estalogic_abi::ErrorCode;
use estalogic_kernel::drivers::notifications::MAX_PENDING_NOTIFICATIONS;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::{in_each_run, manifest, neg, report_of};
use std::path::Path;
use std::time::Duration;

/// Loads `wat` as task module `name` (entry `run`) with `capabilities`.
fn load(kernel: &mut Kernel, name: &str, wat: &str, capabilities: &[&str]) {
    kernel
        .load_module(
            manifest(name, "run", capabilities, "normal"),
            wat.as_bytes(),
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// A guest whose `run` posts kinds 7, 8 and 9 with payloads "a", "bc" and
/// nothing, and exits with the first failure's result, or 0.
const THREE: &str = r#"(module
  (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "abc")
  (func $post (param $kind i32) (param $ptr i32) (param $len i32)
    (local $r i64)
    (local.set $r (call $notify (local.get $kind) (local.get $ptr) (local.get $len)))
    (if (i64.ne (local.get $r) (i64.const 0))
      (then (call $exit (i32.wrap_i64 (local.get $r))))))
  (func (export "run") (result i32)
    (call $post (i32.const 7) (i32.const 16) (i32.const 1))
    (call $post (i32.const 8) (i32.const 17) (i32.const 2))
    (call $post (i32.const 9) (i32.const 0) (i32.const 0))
    (i32.const 0)))"#;

#[test]
fn a_task_s_notifications_reach_the_host_in_order_with_their_source() {
    in_each_run(|mut kernel, what| {
        load(&mut kernel, "poster", THREE, &["notifications:send"]);
        let pid = kernel.spawn("poster").unwrap();
        let queue = kernel.notifications();
        let report = kernel.run();
        assert_eq!(
            report_of(&report, "poster").status,
            ExitStatus::Exited(0),
            "{what}"
        );
        let taken = queue.take_all();
        let seen: Vec<_> = taken
            .iter()
            .map(|n| (n.sequence, n.kind, n.payload.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (0, 7, b"a".to_vec()),
                (1, 8, b"bc".to_vec()),
                (2, 9, Vec::new())
            ],
            "{what}"
        );
        for n in &taken {
            assert_eq!(n.source, pid, "{what}");
            assert_eq!(&*n.module, "poster", "{what}");
        }
        assert!(
            taken.windows(2).all(|w| w[0].time_ns <= w[1].time_ns),
            "{what}"
        );
        assert!(queue.is_empty());
    });
}

#[test]
fn without_the_capability_a_notification_is_refused_and_not_kept() {
    let mut kernel = Kernel::builder().build().unwrap();
    load(&mut kernel, "poster", THREE, &["log:write"]);
    kernel.spawn("poster").unwrap();
    let queue = kernel.notifications();
    let report = kernel.run();
    assert_eq!(
        report_of(&report, "poster").status,
        ExitStatus::Exited(neg(ErrorCode::PERMISSION_DENIED) as i32)
    );
    assert!(queue.is_empty());
}

#[test]
fn bad_arguments_get_their_code_and_post_nothing() {
    // (pointer, length, expected code)
    let cases: [(i64, i64, ErrorCode); 4] = [
        (0, -1, ErrorCode::INVALID_ARGUMENT),
        (0, (1 << 20) + 1, ErrorCode::PAYLOAD_TOO_LARGE),
        (65_530, 7, ErrorCode::INVALID_POINTER),
        (-1, 1, ErrorCode::INVALID_POINTER),
    ];
    for (ptr, len, code) in cases {
        let wat = format!(
            r#"(module
              (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
              (memory (export "memory") 1)
              (func (export "run") (result i32)
                (i32.wrap_i64 (call $notify (i32.const 1) (i32.const {ptr}) (i32.const {len})))))"#
        );
        let mut kernel = Kernel::builder().build().unwrap();
        load(&mut kernel, "poster", &wat, &["notifications:send"]);
        kernel.spawn("poster").unwrap();
        let queue = kernel.notifications();
        let report = kernel.run();
        assert_eq!(
            report_of(&report, "poster").status,
            ExitStatus::Exited(neg(code) as i32),
            "pointer {ptr}, length {len}"
        );
        assert!(queue.is_empty(), "pointer {ptr}, length {len}");
    }
}

#[test]
fn a_full_queue_refuses_with_limit_reached_and_keeps_every_accepted_one() {
    // Posts until a post fails; exits with the number accepted if the
    // failure was LIMIT_REACHED, -1 otherwise. The payload is the post's
    // number, so the host can check that none was lost or reordered.
    let wat = format!(
        r#"(module
          (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
          (memory (export "memory") 1)
          (func (export "run") (result i32)
            (local $n i32) (local $r i64)
            (loop $more
              (i32.store (i32.const 0) (local.get $n))
              (local.set $r (call $notify (i32.const 1) (i32.const 0) (i32.const 4)))
              (if (i64.eqz (local.get $r))
                (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $more))))
            (if (result i32) (i64.eq (local.get $r) (i64.const {limit}))
              (then (local.get $n)) (else (i32.const -1)))))"#,
        limit = neg(ErrorCode::LIMIT_REACHED)
    );
    let mut kernel = Kernel::builder().build().unwrap();
    load(&mut kernel, "flood", &wat, &["notifications:send"]);
    kernel.spawn("flood").unwrap();
    let queue = kernel.notifications();
    let report = kernel.run();
    assert_eq!(
        report_of(&report, "flood").status,
        ExitStatus::Exited(MAX_PENDING_NOTIFICATIONS as i32)
    );
    let taken = queue.take_all();
    assert_eq!(taken.len(), MAX_PENDING_NOTIFICATIONS);
    for (i, n) in taken.iter().enumerate() {
        assert_eq!(n.payload, (i as u32).to_le_bytes(), "notification {i}");
    }
}

#[test]
fn a_handler_notifies_from_its_calls() {
    // Each call posts the type of the message it is called for (the first
    // is the kernel's STARTED, 0xFF02), then the handler exits with 0.
    let wat = r#"(module
      (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
      (import "estalogic" "exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x10000000100))
      (func (export "handle") (param $len i32) (result i32)
        (if (i64.ne (call $notify (i32.load (i32.const 0x104)) (i32.const 0) (i32.const 0)) (i64.const 0))
          (then (return (i32.const 9))))
        (call $exit (i32.const 0))
        (i32.const 0)))"#;
    let mut kernel = Kernel::builder().build().unwrap();
    kernel
        .load_module(
            manifest(
                "handler",
                "handle",
                &["messaging:receive", "notifications:send"],
                "normal",
            ),
            wat.as_bytes(),
            Path::new("handler"),
        )
        .unwrap();
    kernel.spawn("handler").unwrap();
    let queue = kernel.notifications();
    let report = kernel.run();
    assert_eq!(report_of(&report, "handler").status, ExitStatus::Exited(0));
    let kinds: Vec<i32> = queue.take_all().iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [0xFF02]);
}

#[test]
fn the_host_takes_notifications_while_the_kernel_runs() {
    // Posts one notification, then waits ten minutes for a message that
    // never comes (a timed wait: not a deadlock): only the host, having
    // taken the notification, ends the run.
    let wat = r#"(module
      (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
      (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (drop (call $notify (i32.const 42) (i32.const 0) (i32.const 0)))
        (drop (call $receive (i32.const 0) (i64.const 600000) (i32.const 0) (i32.const 64) (i32.const 64)))
        (i32.const 0)))"#;
    let mut kernel = Kernel::builder().build().unwrap();
    load(
        &mut kernel,
        "waiter",
        wat,
        &["notifications:send", "messaging:receive", "time:read"],
    );
    kernel.spawn("waiter").unwrap();
    let queue = kernel.notifications();
    let shutdown = kernel.shutdown_handle();
    let host = std::thread::spawn(move || {
        let taken = queue.take_timeout(Duration::from_secs(60));
        shutdown.request();
        taken
    });
    let report = kernel.run();
    let taken = host
        .join()
        .unwrap()
        .expect("the host took the notification");
    assert_eq!(taken.kind, 42);
    assert_eq!(
        report_of(&report, "waiter").status,
        ExitStatus::Stopped(ErrorCode::SHUTDOWN)
    );
}
