//! Messaging at its edges, each case against the documented behaviour
//! (the line relied on is quoted): broadcast into full mailboxes, handler
//! direct delivery and capacity, supervision notices, blocked-sender
//! cycles, calls and answers against handlers and restarts, timeouts at
//! their limits, and deterministic repeatability. Written by an
//! adversarial probe; the two cases it found broken (a refused broadcast
//! copy counted, correlation 0 answered) fail without their fixes.

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, Manifest, ProcessReport, RunReport};
use estalogic_tests::{RUNS, in_each_mode_and_run, in_each_run, kernel, mailbox, neg};
use std::path::Path;

const CAPS: &[&str] = &[
    "messaging:send",
    "messaging:receive",
    "messaging:broadcast",
    "process:lookup",
    "log:write",
    "time:read",
];

/// Loads `wat` under `name` with entry `entry` (`run` for a task, `handle`
/// for a handler), every capability, and extra manifest members.
fn load(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, extra: &str) {
    estalogic_tests::load_entry(kernel, name, entry, wat, CAPS, extra);
}

const IMPORTS: &str = r#"
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
"#;

/// A task: `data` segments (WAT), `body` in `run` (result i32) with locals
/// $r $i $n (i64/i32/i32) and $peer (i64). Helpers: $pause(ms), $drain
/// (count of messages taken with timeout 0).
fn task(data: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {data}
  (func $pause (param $ms i64)
    (drop (call $receive (i32.const 77) (local.get $ms) (i32.const 4096) (i32.const 4160) (i32.const 64))))
  (func $drain (result i32) (local $n i32)
    (block $out (loop $more
      (br_if $out (i64.eq
        (call $receive (i32.const 0) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 1024))
        (i64.const {timeout})))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))
    (local.get $n))
  (func (export "run") (result i32)
    (local $r i64) (local $i i32) (local $n i32) (local $peer i64)
    {body}))"#,
        timeout = neg(ErrorCode::TIMEOUT),
    )
}

/// A handler with its inbox at 1024 (header) and `capacity` payload bytes;
/// `body` is the handle function's body (param $len, result i32), with
/// globals $peer (i64) $count (i32).
fn handler(capacity: u32, data: &str, body: &str) -> String {
    let inbox = ((capacity as u64) << 32) | 1024;
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {data}
  (global $peer (mut i64) (i64.const 0))
  (global $count (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32) (local $r i64)
    {body}))"#
    )
}

fn exited(report: &RunReport, name: &str) -> i32 {
    match report
        .process(name)
        .unwrap_or_else(|| panic!("{name} ran"))
        .status
    {
        ExitStatus::Exited(code) => code,
        ref other => panic!("{name} ended {other}: {:?}", report.process(name)),
    }
}

// ---------------------------------------------------------------------------
// Broadcast into full mailboxes.

/// A receiver that fills its own mailbox with `own` 3-byte type-9 messages,
/// pauses 300 ms (taking nothing), then drains and returns the count.
fn full_receiver(own: u32) -> String {
    let mut body = String::new();
    for _ in 0..own {
        body.push_str("(drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))\n");
    }
    body.push_str("(call $pause (i64.const 300)) (call $drain)");
    task("", &body)
}

#[test]
fn a_broadcast_copy_refused_by_drop_newest_is_not_counted() {
    // ABI 12: "A mailbox that is full refuses its copy (a drop_newest one
    // too ...): a refused copy is neither counted nor reported". The
    // same copy refused by a notify_sender mailbox is not counted there.
    let broadcaster = task(
        "",
        "(call $pause (i64.const 50))
         (i32.wrap_i64 (call $broadcast (i32.const 0x1234) (i32.const 0) (i32.const 0) (i32.const 5)))",
    );
    for mode in ["notify_sender", "drop_newest"] {
        let mut k = kernel(true, 1);
        load(&mut k, "full", "run", &full_receiver(1), &mailbox(1, mode));
        load(&mut k, "caster", "run", &broadcaster, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "caster"), 0, "{mode}: refused");
        let full = report.process("full").unwrap();
        assert_eq!(full.undelivered, 0, "{mode}: {full:?}");
    }
}

#[test]
fn broadcast_to_full_mailboxes_counts_what_was_accepted() {
    // ABI 12: "returns how many mailboxes accepted one. A mailbox that is
    // full refuses its copy (a drop_newest one too; a drop_oldest one makes
    // room): a refused copy is neither counted nor reported, and never
    // waits".
    let broadcaster = task(
        "",
        "(call $pause (i64.const 50))
         (local.set $r (call $broadcast (i32.const 0x1234) (i32.const 0) (i32.const 0) (i32.const 5)))
         (i32.wrap_i64 (local.get $r))",
    );
    let idle_handler = handler(
        64,
        "",
        "(global.set $count (i32.add (global.get $count) (i32.const 1))) (i32.const 0)",
    );
    in_each_run(|mut k, what| {
        for mode in [
            "notify_sender",
            "block_sender",
            "drop_newest",
            "drop_oldest",
        ] {
            load(
                &mut k,
                &format!("full_{mode}"),
                "run",
                &full_receiver(1),
                &mailbox(1, mode),
            );
            load(
                &mut k,
                &format!("room_{mode}"),
                "run",
                &full_receiver(1),
                &mailbox(2, mode),
            );
        }
        load(&mut k, "h", "handle", &idle_handler, "");
        load(&mut k, "caster", "run", &broadcaster, "");
        k.spawn_all().unwrap();
        let report = k.run();
        // Accepted: the four "room" mailboxes, the drop_oldest full one
        // (it makes room), and the idle handler.
        let accepted = exited(&report, "caster");
        assert_eq!(accepted, 6, "{what}: {:#?}", report.processes);
        assert_eq!(report.process("caster").unwrap().sent, 6, "{what}");
        assert_eq!(
            report.process("caster").unwrap().delivery_failures,
            0,
            "{what}"
        );
        for mode in [
            "notify_sender",
            "block_sender",
            "drop_newest",
            "drop_oldest",
        ] {
            let full = report.process(&format!("full_{mode}")).unwrap();
            let room = report.process(&format!("room_{mode}")).unwrap();
            assert_eq!(exited(&report, &format!("room_{mode}")), 2, "{what} {mode}");
            assert_eq!(room.undelivered, 0, "{what} {mode}: {room:?}");
            // Each full one drained exactly one message (its own, or the
            // copy that evicted it).
            assert_eq!(exited(&report, &format!("full_{mode}")), 1, "{what} {mode}");
            if mode == "drop_oldest" {
                // Evicted its own message; the notice of that found the
                // mailbox full (the copy), dropped and counted.
                assert_eq!(full.delivery_failures, 1, "{what}: {full:?}");
                assert_eq!(full.received, 1, "{what}: {full:?}");
            } else {
                // "a refused copy is neither counted nor reported"
                assert_eq!(full.delivery_failures, 0, "{what} {mode}: {full:?}");
                assert_eq!(
                    full.undelivered, 0,
                    "{what} {mode}: a refused copy counted in the receiver's report: {full:?}"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Exit notifications into a full supervisor mailbox.

#[test]
fn an_exit_notification_never_evicts_from_a_full_drop_oldest_supervisor() {
    // ABI: "Any other kernel message (a notice, an exit notification) that
    // finds a mailbox full is dropped and counted in its owner's report,
    // whatever the mailbox's overflow mode: it never evicts a message to
    // make room for itself, and never waits."
    let watcher = task(
        "",
        "(drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (call $pause (i64.const 200))
         ;; the kept message is its own type 9
         (if (i64.ne (call $receive (i32.const 9) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const 3))
           (then (return (i32.const 100))))
         (call $drain)",
    );
    let crasher = task("", "(call $pause (i64.const 20)) unreachable");
    for mode in [
        "notify_sender",
        "block_sender",
        "drop_newest",
        "drop_oldest",
    ] {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode} deterministic {deterministic}, {workers} workers");
            let mut k = kernel(deterministic, workers);
            load(&mut k, "watcher", "run", &watcher, &mailbox(1, mode));
            load(
                &mut k,
                "crasher",
                "run",
                &crasher,
                r#""supervisor":"watcher""#,
            );
            k.spawn_all().unwrap();
            let report = k.run();
            assert_eq!(exited(&report, "watcher"), 0, "{what}");
            let w = report.process("watcher").unwrap();
            assert_eq!(
                w.undelivered, 1,
                "{what}: the notification dropped and counted: {w:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Blocked senders.

#[test]
fn a_cycle_of_blocked_senders_ends_deadlocked() {
    // ARCHITECTURE invariant 10: "When processes remain but nothing can
    // ever wake them ... they are stopped with DEADLOCKED".
    let data = |peer: &str| format!(r#"(data (i32.const 0) "{peer}")"#);
    let body = "(call $pause (i64.const 10))
        (local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        (drop (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
        (drop (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
        (i32.const 0)";
    in_each_run(|mut k, what| {
        load(
            &mut k,
            "a",
            "run",
            &task(&data("b"), body),
            &mailbox(1, "block_sender"),
        );
        load(
            &mut k,
            "b",
            "run",
            &task(&data("a"), body),
            &mailbox(1, "block_sender"),
        );
        k.spawn_all().unwrap();
        let report = k.run();
        // The deadlock breaker stops one process at a time until one can
        // run: the first stopped closes its mailbox, which frees the other
        // (its retry fails with NO_SUCH_PROCESS) and it ends by itself.
        let stopped: Vec<_> = ["a", "b"]
            .iter()
            .filter(|n| {
                report.process(n).unwrap().status == ExitStatus::Stopped(ErrorCode::DEADLOCKED)
            })
            .collect();
        assert_eq!(stopped.len(), 1, "{what}: {:#?}", report.processes);
        for name in ["a", "b"] {
            let p = report.process(name).unwrap();
            assert_eq!(p.blocked_sends, 1, "{what}: {p:?}");
            assert_eq!(p.sent, 1, "{what}: {p:?}");
            // The survivor's one message was failed back: counted (the
            // notice itself dropped by its own full mailbox). The stopped
            // one's was failed back after its mailbox closed: no one to tell.
            let survivor = p.status != ExitStatus::Stopped(ErrorCode::DEADLOCKED);
            assert_eq!(p.delivery_failures, u64::from(survivor), "{what}: {p:?}");
        }
    });
}

#[test]
fn a_sender_blocked_on_a_process_that_ends_is_told() {
    // ABI: a process that ends has its mail "failed back to the senders"
    // (ARCHITECTURE 5), and a blocked sender "is woken (its retry fails
    // with NO_SUCH_PROCESS)" (routing::close_mailbox).
    let sender = task(
        r#"(data (i32.const 0) "b")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        (drop (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
        (local.set $r (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
        (if (i64.ne (local.get $r) (i64.const -2001)) (then (return (i32.const 100))))
        ;; the notice for the first one
        (call $pause (i64.const 50))
        (call $drain)",
    );
    let b = task("", "(call $pause (i64.const 100)) (i32.const 0)");
    in_each_run(|mut k, what| {
        load(&mut k, "b", "run", &b, &mailbox(1, "block_sender"));
        load(&mut k, "a", "run", &sender, "");
        k.spawn_all().unwrap();
        let report = k.run();
        // The notice about the message left in b is taken by the drain
        // (a DELIVERY_FAILURE: receive returns its code, counted anyway).
        // $drain counts every message it takes, the notice included.
        assert_eq!(exited(&report, "a"), 1, "{what}");
        let a = report.process("a").unwrap();
        assert_eq!(a.delivery_failures, 1, "{what}: {a:?}");
        assert_eq!(a.blocked_sends, 1, "{what}: {a:?}");
    });
}

// ---------------------------------------------------------------------------
// Handlers.

#[test]
fn direct_delivery_answers_past_a_handlers_capacity_by_one_at_most() {
    // ABI 7: "while the sender's mailbox is empty it is held for it beside
    // the mailbox, which may then hold one message more than its capacity
    // when it is put back". ARCHITECTURE 5: "A mailbox never exceeds its
    // capacity ... but for one answer held for a handler beside it".
    // `a` (mailbox of 1) sends to idle `b`; `b`, in that call, sends `a`
    // three messages: held, queued, refused (MAILBOX_FULL).
    let a = handler(
        64,
        r#"(data (i32.const 0) "b")"#,
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
           (then
             (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
             (drop (call $send (global.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0)))
             (return (i32.const 0))))
         (global.set $count (i32.add (global.get $count) (i32.const 1)))
         (i32.const 0)",
    );
    let b = handler(
        64,
        "",
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 5))
           (then
             (local.set $r (call $send (i64.load (i32.const 1032)) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0)))
             (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 11))))
             (local.set $r (call $send (i64.load (i32.const 1032)) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0)))
             (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 12))))
             (local.set $r (call $send (i64.load (i32.const 1032)) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0)))
             (if (i64.ne (local.get $r) (i64.const -3003)) (then (return (i32.const 13))))))
         (i32.const 0)",
    );
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let mut k = kernel(deterministic, workers);
        load(&mut k, "b", "handle", &b, "");
        load(&mut k, "a", "handle", &a, &mailbox(1, "notify_sender"));
        k.spawn("b").unwrap();
        k.spawn("a").unwrap();
        let report = k.run();
        let pa = report.process("a").unwrap();
        let pb = report.process("b").unwrap();
        // Both wait idle at the end.
        assert_eq!(
            pb.status,
            ExitStatus::Stopped(ErrorCode::DEADLOCKED),
            "{what}: {pb:?}"
        );
        assert_eq!(
            pa.status,
            ExitStatus::Stopped(ErrorCode::DEADLOCKED),
            "{what}: {pa:?}"
        );
        if workers == 1 {
            // Direct: held + queued, the third refused.
            assert_eq!(pb.sent, 2, "{what}: {pb:?}");
            assert_eq!(pb.send_failures, 1, "{what}: {pb:?}");
            assert_eq!(pa.received, 2, "{what}: {pa:?}");
        }
        assert_eq!(
            pa.received + pa.undelivered,
            pb.sent,
            "{what}: {pa:?} {pb:?}"
        );
    }
}

#[test]
fn a_call_owed_by_a_handler_that_traps_inside_a_direct_delivery_is_answered() {
    // ABI: "If it ends first — returns, exits, traps, is stopped ... — the
    // kernel answers each call it still owes with a DELIVERY_FAILURE
    // notice, code NO_SUCH_PROCESS".
    // caller calls h2 (which keeps the call unanswered); kick (task) wakes
    // h1 50 ms later; h1 sends h2 "trap" directly; h2 traps in that call.
    let caller = task(
        r#"(data (i32.const 0) "h2")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 2)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const -2001)) (then (return (i32.add (i32.const 1000) (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $r)))))))
         (i32.const 0)",
    );
    let h2 = handler(
        64,
        "",
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x66)) (then unreachable))
         (i32.const 0)",
    );
    let h1 = handler(
        64,
        r#"(data (i32.const 0) "h2")"#,
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x55))
           (then (drop (call $send (call $lookup (i32.const 0) (i32.const 2)) (i32.const 0x66) (i32.const 0) (i32.const 0) (i32.const 0)))))
         (i32.const 0)",
    );
    let kick = task(
        r#"(data (i32.const 0) "h1")"#,
        "(call $pause (i64.const 50))
         (drop (call $send (call $lookup (i32.const 0) (i32.const 2)) (i32.const 0x55) (i32.const 0) (i32.const 0) (i32.const 0)))
         (i32.const 0)",
    );
    for restart in ["", r#""restart":"on_failure""#] {
        for (deterministic, workers) in RUNS {
            let what = format!("{restart} deterministic {deterministic}, {workers} workers");
            let mut k = kernel(deterministic, workers);
            load(&mut k, "h2", "handle", &h2, restart);
            load(&mut k, "h1", "handle", &h1, "");
            load(&mut k, "caller", "run", &caller, "");
            load(&mut k, "kick", "run", &kick, "");
            k.spawn_all().unwrap();
            let report = k.run();
            assert_eq!(
                exited(&report, "caller"),
                0,
                "{what}: {:#?}",
                report.processes
            );
            assert!(report.process("h2").unwrap().status.is_trap(), "{what}");
        }
    }
}

#[test]
fn a_call_to_a_handler_whose_inbox_is_too_small_is_answered() {
    // ABI Handler 6: "A message whose payload is larger than the inbox is
    // not delivered: the kernel answers its sender with a DELIVERY_FAILURE
    // notice, code BUFFER_TOO_SMALL". ABI 6: the notice is "always taken,
    // whose code is the result". So the call returns BUFFER_TOO_SMALL, and
    // nothing is left queued (unlike a reply too large for the buffer).
    let caller = task(
        r#"(data (i32.const 0) "h")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
         (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 100)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const -1002)) (then (return (i32.const 100))))
         ;; the header says it was the kernel's notice
         (if (i32.eqz (i32.and (i32.load16_u (i32.const 4098)) (i32.const 16))) (then (return (i32.const 101))))
         (call $drain)",
    );
    let h = handler(16, "", "(i32.const 0)");
    in_each_mode_and_run(|mode, mut k, what| {
        load(&mut k, "h", "handle", &h, "");
        load(&mut k, "caller", "run", &caller, &mailbox(1, mode));
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "caller"), 1, "{what}: its own message only");
    });
}

#[test]
fn a_handler_answering_a_waiting_task_caller_gets_past_its_full_mailbox() {
    // ABI: "The answer to a caller's latest call — the reply its receiver
    // owed ... — gets into the caller's mailbox even when it is full,
    // whatever its overflow mode". The handler first sends the caller an
    // ordinary message (refused or dropped), then replies.
    let caller = task(
        r#"(data (i32.const 0) "h")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
         (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 100))))
         (call $drain)",
    );
    let h = handler(
        64,
        "",
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 1))
           (then
             (drop (call $send (i64.load (i32.const 1032)) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 4)))
             (drop (call $reply (i64.load (i32.const 1032)) (i64.load (i32.const 1048)) (i32.const 2) (i32.const 0) (i32.const 1080) (i32.const 4)))))
         (i32.const 0)",
    );
    in_each_mode_and_run(|mode, mut k, what| {
        load(&mut k, "h", "handle", &h, "");
        load(&mut k, "caller", "run", &caller, &mailbox(1, mode));
        k.spawn_all().unwrap();
        let report = k.run();
        let left = exited(&report, "caller");
        assert!(left <= 2, "{what}: {left} left, capacity 1");
        assert_eq!(
            left, 1,
            "{what}: own message (or the handler's in drop_oldest)"
        );
    });
}

// ---------------------------------------------------------------------------
// Timers and receive_reply.

#[test]
fn timeouts_at_the_edges() {
    // ABI 6: "-1 forever, 0 never; a deadline past the kernel clock's end
    // ... is that end"; timeouts below -1 are INVALID_ARGUMENT (ABI
    // Handler 4: "bad arguments are still INVALID_ARGUMENT first").
    let body = format!(
        "(if (i64.ne (call $receive (i32.const 0) (i64.const -2) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {inv}))
           (then (return (i32.const 1))))
         (if (i64.ne (call $receive (i32.const 0) (i64.const 0x8000000000000000) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {inv}))
           (then (return (i32.const 2))))
         (if (i64.ne (call $receive_reply (i64.const 5) (i64.const -7) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {inv}))
           (then (return (i32.const 3))))
         (if (i64.ne (call $receive (i32.const 0) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {to}))
           (then (return (i32.const 4))))
         ;; a send_receive with a bad timeout sends nothing
         (if (i64.ne (call $send_receive (call $self) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
               (i64.const -1) (i64.const -3) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {inv}))
           (then (return (i32.const 5))))
         (if (i64.ne (call $peek (i32.const 0) (i32.const 4096)) (i64.const {nf}))
           (then (return (i32.const 6))))
         ;; the longest wait, then spin a while: the clock never reads negative
         (if (i64.ne (call $receive (i32.const 0) (i64.const 0x7fffffffffffffff) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {to}))
           (then (return (i32.const 7))))
         (local.set $i (i32.const 0))
         (loop $spin
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $spin (i32.lt_u (local.get $i) (i32.const 3000000))))
         (if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const 8))))
         (if (i64.ne (call $receive (i32.const 0) (i64.const 0x7fffffffffffffff) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {to}))
           (then (return (i32.const 9))))
         (if (i64.ne (call $receive (i32.const 0) (i64.const 1) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {to}))
           (then (return (i32.const 10))))
         (i32.const 0)",
        inv = neg(ErrorCode::INVALID_ARGUMENT),
        to = neg(ErrorCode::TIMEOUT),
        nf = neg(ErrorCode::NOT_FOUND),
    );
    for _ in 0..2 {
        let mut k = kernel(true, 1);
        load(&mut k, "t", "run", &task("", &body), "");
        // A peer that spins too, so the scheduler has two processes to
        // weigh at the end of time.
        load(
            &mut k,
            "spin",
            "run",
            &task(
                "",
                "(call $pause (i64.const 0x7fffffffffffffff)) (local.set $i (i32.const 0))
         (loop $spin
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $spin (i32.lt_u (local.get $i) (i32.const 3000000)))) (i32.const 0)",
            ),
            "",
        );
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "t"), 0);
        assert_eq!(exited(&report, "spin"), 0);
    }
}

#[test]
fn receive_reply_for_correlation_zero_names_nothing() {
    // ABI header: "sequence (per sender, from 1: 0 is never a sequence, so
    // correlation 0 names nothing)". A REPLY with correlation 0 (or a
    // broadcast with the REPLY flag) answers no message.
    let body = "(drop (call $reply (call $self) (i64.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0)))
         (local.set $r (call $receive_reply (i64.const 0) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const -3001)) (then (return (i32.const 1))))
         (i32.const 0)";
    let mut k = kernel(true, 1);
    load(&mut k, "t", "run", &task("", body), "");
    k.spawn_all().unwrap();
    let report = k.run();
    assert_eq!(
        exited(&report, "t"),
        0,
        "receive_reply(0) took a reply with correlation 0"
    );
}

// ---------------------------------------------------------------------------
// Deterministic repeatability.

/// A scenario with broadcast, calls that time out, a supervised crasher
/// restarted, handlers and timers.
fn busy_scenario() -> RunReport {
    let mut k = kernel(true, 1);
    let caster = task(
        r#"(data (i32.const 0) "srv")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 3)))
         (local.set $i (i32.const 0))
         (loop $l
           (drop (call $broadcast (i32.const 0x1234) (i32.const 512) (i32.const 0) (i32.const 7)))
           (drop (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
              (i64.const -1) (i64.const 3) (i32.const 4096) (i32.const 4160) (i32.const 64)))
           (call $pause (i64.const 1))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 40))))
         (call $drain)",
    );
    // Replies to every other request, slowly.
    let srv = task(
        "",
        "(loop $l
           (local.set $r (call $receive (i32.const 1) (i64.const 500) (i32.const 4096) (i32.const 4160) (i32.const 64)))
           (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (call $drain))))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (if (i32.and (local.get $i) (i32.const 1))
             (then (drop (call $reply (i64.load (i32.const 4104)) (i64.load (i32.const 4120)) (i32.const 2) (i32.const 0) (i32.const 4160) (i32.const 4)))))
           (call $pause (i64.const 2))
           (br $l))
         (i32.const 0)",
    );
    let crasher = task(
        "",
        "(call $pause (i64.const 7)) (drop (call $drain)) unreachable",
    );
    let h = handler(
        64,
        "",
        "(global.set $count (i32.add (global.get $count) (i32.const 1)))
        (if (i32.gt_u (global.get $count) (i32.const 30)) (then (return (i32.const 3))))
        (i32.const 0)",
    );
    let watcher = task("", "(call $pause (i64.const 400)) (call $drain)");
    load(&mut k, "caster", "run", &caster, &mailbox(4, "drop_oldest"));
    load(&mut k, "srv", "run", &srv, &mailbox(3, "drop_newest"));
    load(
        &mut k,
        "crasher",
        "run",
        &crasher,
        &format!(
            r#""restart":"on_failure","supervisor":"watcher",{}"#,
            mailbox(2, "block_sender")
        ),
    );
    load(&mut k, "h", "handle", &h, &mailbox(2, "notify_sender"));
    load(
        &mut k,
        "watcher",
        "run",
        &watcher,
        &mailbox(2, "drop_oldest"),
    );
    k.spawn_all().unwrap();
    k.run()
}

#[test]
fn deterministic_runs_repeat_every_report_field() {
    // ARCHITECTURE, Deterministic mode: "Preemption points depend only on
    // fuel, so a run repeats."
    let first = busy_scenario();
    assert!(first.processes.len() >= 5, "{:#?}", first.processes);
    for _ in 0..3 {
        let again = busy_scenario();
        assert_eq!(first.processes, again.processes);
        assert_eq!(
            format!("{:?}", first.restarts),
            format!("{:?}", again.restarts)
        );
    }
}

#[allow(dead_code)]
fn show(p: &ProcessReport) -> String {
    format!("{p:?}")
}

// ---------------------------------------------------------------------------
// More answers.

#[test]
fn an_awaited_answer_too_large_for_the_buffer_then_peek_and_receive_reply() {
    // ABI 6: "A payload larger than the buffer: BUFFER_TOO_SMALL, header
    // written, message left queued"; the answer got in past the full
    // mailbox; "A call made while the caller's own mailbox is past its
    // capacity ... fails at once with WOULD_DEADLOCK, nothing sent"; once
    // taken, a call works again.
    let caller = task(
        r#"(data (i32.const 0) "srv")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 3)))
         (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 2)))
         (if (i64.ne (local.get $r) (i64.const -1002)) (then (return (i32.const 100))))
         ;; the header names the reply: its correlation is the call's sequence
         (i64.store (i32.const 8000) (i64.load (i32.const 4136)))
         ;; peek sees the first message in order: its own (type 9)
         (if (i64.ne (call $peek (i32.const 0) (i32.const 5000)) (i64.const 3)) (then (return (i32.const 101))))
         (if (i32.ne (i32.load (i32.const 5004)) (i32.const 9)) (then (return (i32.const 102))))
         ;; a peek for the reply's type finds it
         (if (i64.ne (call $peek (i32.const 2) (i32.const 5000)) (i64.const 4)) (then (return (i32.const 103))))
         ;; past capacity: a call is refused at once
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const -2004)) (then (return (i32.const 104))))
         ;; take the reply
         (if (i64.ne (call $receive_reply (i64.load (i32.const 8000)) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const 4))
           (then (return (i32.const 105))))
         ;; a call works again
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 106))))
         (call $drain)",
    );
    let srv = task(
        "",
        "(loop $l
           (local.set $r (call $receive (i32.const 0) (i64.const 300) (i32.const 4096) (i32.const 4160) (i32.const 64)))
           (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 0))))
           (drop (call $reply (i64.load (i32.const 4104)) (i64.load (i32.const 4120)) (i32.const 2) (i32.const 0) (i32.const 4160) (i32.const 4)))
           (br $l))
         (i32.const 0)",
    );
    in_each_mode_and_run(|mode, mut k, what| {
        load(&mut k, "srv", "run", &srv, "");
        load(&mut k, "caller", "run", &caller, &mailbox(1, mode));
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(
            exited(&report, "caller"),
            1,
            "{what}: {:#?}",
            report.processes
        );
        assert_eq!(report.process("caller").unwrap().send_failures, 1, "{what}");
    });
}

#[test]
fn a_reply_that_is_itself_a_call_is_answered_when_its_receiver_ends() {
    // send_receive with REPLY in options and wait_for -1 is a reply and a
    // call. The caller takes it (it answers its call, past its full
    // mailbox), so it owes the server; it returns without answering: "the
    // kernel answers each call it still owes with a DELIVERY_FAILURE
    // notice, code NO_SUCH_PROCESS".
    let caller = task(
        r#"(data (i32.const 0) "srv")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 3)))
         (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const 4)) (then (return (i32.const 100))))
         ;; REPLY and CALL
         (if (i32.ne (i32.and (i32.load16_u (i32.const 4098)) (i32.const 33)) (i32.const 33)) (then (return (i32.const 101))))
         (call $drain)",
    );
    let srv = task(
        "",
        "(drop (call $receive (i32.const 0) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (local.set $r (call $send_receive (i64.load (i32.const 4104)) (i64.load (i32.const 4120)) (i32.const 2) (i32.const 256) (i32.const 4160) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ne (local.get $r) (i64.const -2001)) (then (return (i32.const 100))))
         (i32.const 0)",
    );
    in_each_mode_and_run(|mode, mut k, what| {
        load(&mut k, "srv", "run", &srv, &mailbox(1, mode));
        load(&mut k, "caller", "run", &caller, &mailbox(1, mode));
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(
            exited(&report, "caller"),
            1,
            "{what}: {:#?}",
            report.processes
        );
        assert_eq!(exited(&report, "srv"), 0, "{what}: {:#?}", report.processes);
    });
}

#[test]
fn a_call_and_a_blocked_send_crossing_end() {
    // ARCHITECTURE 10: "The loop always ends." The caller's block_sender
    // mailbox is full; the server, before taking the call, sends the
    // caller a message and blocks. Neither can go on: one is stopped
    // DEADLOCKED and the other is told (the call's answer is a notice, or
    // the blocked retry fails).
    let caller = task(
        r#"(data (i32.const 0) "srv")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 3)))
         (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $r)))",
    );
    let srv = task(
        r#"(data (i32.const 0) "caller")"#,
        "(call $pause (i64.const 20))
         (local.set $peer (call $lookup (i32.const 0) (i32.const 6)))
         (local.set $r (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
         (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $r)))",
    );
    in_each_run(|mut k, what| {
        load(&mut k, "srv", "run", &srv, "");
        load(
            &mut k,
            "caller",
            "run",
            &caller,
            &mailbox(1, "block_sender"),
        );
        k.spawn_all().unwrap();
        let report = k.run();
        let c = &report.process("caller").unwrap().status;
        let s = &report.process("srv").unwrap().status;
        let dl = ExitStatus::Stopped(ErrorCode::DEADLOCKED);
        assert!(
            (*c == dl && *s == ExitStatus::Exited(2001))
                || (*s == dl && *c == ExitStatus::Exited(2001)),
            "{what}: caller {c}, srv {s}"
        );
    });
}

#[test]
fn a_call_queued_in_a_server_restarted_up_the_ladder_is_answered() {
    // The server pauses, then traps, again and again: the first restarts
    // keep its mail (the call moves with it), the ladder then restarts it
    // clean and finally gives up. ABI: a caller does "not wait on a
    // process that has gone": the call ends with a notice.
    let caller = task(
        r#"(data (i32.const 0) "srv")"#,
        "(call $pause (i64.const 5))
         (local.set $peer (call $lookup (i32.const 0) (i32.const 3)))
         (local.set $r (call $send_receive (local.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
            (i64.const -1) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (i32.wrap_i64 (i64.sub (i64.const 0) (local.get $r)))",
    );
    let srv = task("", "(call $pause (i64.const 20)) unreachable");
    in_each_run(|mut k, what| {
        load(&mut k, "srv", "run", &srv, r#""restart":"on_failure""#);
        load(&mut k, "caller", "run", &caller, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(
            exited(&report, "caller"),
            2001,
            "{what}: {:#?} {:#?}",
            report.processes,
            report.restarts
        );
    });
}

#[test]
fn a_kept_handler_that_revoked_its_receive_capability_gets_nothing_more() {
    // ABI Handler 1: "that capability is checked again before every wait,
    // like a receive, so a handler that lost it ends (trapped, saying
    // so)". `a` sends `b` two messages in one call; on the first, `b`
    // revokes its only capability (messaging:receive). The second must
    // not reach it: `b` exits 42 if it does.
    let a = handler(
        64,
        r#"(data (i32.const 0) "b")"#,
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
           (then
             (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
             (drop (call $send (global.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0)))
             (drop (call $send (global.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0)))))
         (i32.const 0)",
    );
    let b = r#"(module
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (global $seen (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
  (func (export "handle") (param i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 5)) (then (return (i32.const 0))))
    (if (global.get $seen) (then (return (i32.const 42))))
    (global.set $seen (i32.const 1))
    (if (i64.ne (call $handles (i32.const 2048) (i32.const 4)) (i64.const 1))
      (then (return (i32.const 2))))
    (if (i64.lt_s (call $revoke (i32.load (i32.const 2048)) (i32.const 0)) (i64.const 0))
      (then (return (i32.const 3))))
    (i32.const 0)))"#;
    in_each_run(|mut k, what| {
        k.load_module(
            Manifest::parse(
                r#"{"name":"b","version":"0.1.0","entry_point":"handle","runtime":"wasm32",
                    "capabilities_required":["messaging:receive"]}"#,
            )
            .unwrap(),
            b.as_bytes(),
            Path::new("b"),
        )
        .unwrap();
        load(&mut k, "a", "handle", &a, "");
        k.spawn("b").unwrap();
        k.spawn("a").unwrap();
        let report = k.run();
        let pb = report.process("b").unwrap();
        match &pb.status {
            ExitStatus::Trapped { detail, .. } => {
                assert!(detail.contains("messaging:receive"), "{what}: {detail}")
            }
            other => panic!(
                "{what}: b ended {other} (42: called with a message after losing messaging:receive): {pb:?}"
            ),
        }
    });
}
