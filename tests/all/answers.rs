//! Answers to calls and full mailboxes: the answer a caller waits for
//! (its server's reply, the kernel's ack, or the notice that its server
//! ended) gets past a full mailbox, by one message at most, and a late
//! answer to an earlier call is offered like any message — whatever the
//! caller does (calls that time out, calls to itself, answers it leaves
//! untaken), in every overflow mode. Built from an adversarial probe of
//! the first version of the rule, whose attacks grew a mailbox without
//! bound.

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, ProcessReport};
use estalogic_tests::{OVERFLOW_MODES, RUNS, load_wat_with, mailbox, neg};

const CAPACITY: u64 = 2;
const MODES: [&str; 4] = OVERFLOW_MODES;

/// A caller: `$server` is the pid of "server", `$me` its own. It runs
/// `body` (which may `return` early), then fills its own mailbox with two
/// 3-byte type-9 messages if `fill_after` (else `body` is expected to have
/// done so), then drains its mailbox (receive, any type, timeout 0) and
/// returns how many it took — every message, reply or notice alike.
fn caller(body: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "server")
  (func $fill
    (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3))))
  (func $pause (param $ms i64)
    (drop (call $receive (i32.const 77) (local.get $ms) (i32.const 64) (i32.const 128) (i32.const 64))))
  (func $drain (result i32) (local $n i32)
    (block $out (loop $more
      (br_if $out (i64.eq
        (call $receive (i32.const 0) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64))
        (i64.const {timeout})))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))
    (local.get $n))
  (func (export "run") (result i32)
    (local $r i64) (local $i i32) (local $server i64) (local $me i64)
    (local.set $server (call $lookup (i32.const 0) (i32.const 6)))
    (local.set $me (call $self))
    {body}
    (call $drain)))"#,
        timeout = neg(ErrorCode::TIMEOUT),
    )
}

/// A server that takes `n` messages (any type, waiting forever), keeping
/// each one's source and sequence at 1024 + 16 i, replying at once when
/// `echo`; then, unless `echo`, `after` runs over the kept ones ("reply"
/// answers every one of them in order, "trap" traps owing them).
fn server(n: u32, echo: bool, after: &str) -> String {
    let reply_each = r#"
    (local.set $i (i32.const 0))
    (block $out (loop $each
      (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
      (drop (call $reply
        (i64.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 16))))
        (i64.load (i32.add (i32.const 1032) (i32.mul (local.get $i) (i32.const 16))))
        (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $each)))"#;
    let after = match after {
        "reply" => reply_each.to_string(),
        "trap" => "unreachable".to_string(),
        other => other.to_string(),
    };
    let echo_now = if echo {
        "(drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88)) (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))"
    } else {
        ""
    };
    format!(
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32) (local $n i32)
    (local.set $n (i32.const {n}))
    (block $out (loop $take
      (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
      (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
      (i64.store (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 16))) (i64.load (i32.const 72)))
      (i64.store (i32.add (i32.const 1032) (i32.mul (local.get $i) (i32.const 16))) (i64.load (i32.const 88)))
      {echo_now}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $take)))
    {after}
    (i32.const 0)))"#
    )
}

/// Runs "caller" (mailbox of `CAPACITY` in `mode`) and, if given, "server".
fn run(
    caller_wat: &str,
    server_wat: Option<&str>,
    mode: &str,
    deterministic: bool,
    workers: usize,
) -> (ProcessReport, Option<ProcessReport>) {
    let mut kernel = estalogic_tests::kernel(deterministic, workers);
    load_wat_with(&mut kernel, "caller", caller_wat, &mailbox(CAPACITY, mode));
    if let Some(server_wat) = server_wat {
        load_wat_with(&mut kernel, "server", server_wat, "");
        kernel.spawn("server").unwrap();
    }
    kernel.spawn("caller").unwrap();
    let report = kernel.run();
    (
        report.process("caller").unwrap().clone(),
        report.process("server").cloned(),
    )
}

/// A call, `$r` = its result: waiting for the answer (-1), `timeout` ms, into
/// a receive buffer of `buffer` bytes.
fn call(target: &str, timeout: i64, buffer: u32) -> String {
    format!(
        "(local.set $r (call $send_receive {target} (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)
      (i64.const -1) (i64.const {timeout}) (i32.const 64) (i32.const 128) (i32.const {buffer})))"
    )
}

/// `(return 1000 + $i)` unless `$r` is `expected`.
fn expect_r(expected: i64) -> String {
    format!(
        "(if (i64.ne (local.get $r) (i64.const {expected})) (then (return (i32.add (i32.const 1000) (local.get $i)))))"
    )
}

/// Loops `body` `n` times over `$i`.
fn times(n: u32, body: &str) -> String {
    format!(
        "(local.set $i (i32.const 0))
    (block $out{n} (loop $again{n}
      (br_if $out{n} (i32.ge_u (local.get $i) (i32.const {n})))
      {body}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $again{n})))"
    )
}

/// Calls made before the one the caller waits for.
const K: u32 = 6;

/// Asserts what every run shows: the caller ended by itself, having found
/// at most one message past its capacity when it drained its mailbox.
fn exited_within_one_past(caller: &ProcessReport, what: &str) -> i32 {
    let ExitStatus::Exited(code) = caller.status else {
        panic!("{what}: the caller ended {}", caller.status);
    };
    assert!(
        (0..=CAPACITY as i32 + 1).contains(&code),
        "{what}: the caller's mailbox held {code} messages, capacity {CAPACITY} (1000 + i: call i failed)"
    );
    code
}

#[test]
fn late_answers_do_not_crowd_out_the_awaited_one() {
    // K calls time out at once (timeout 0), then one waits: the server
    // takes all K + 1 and answers them in order. The late answers are
    // offered like any message (refused, dropped or evicting per the
    // mode), and the awaited one gets in. In `block_sender` the server
    // waits for room with its first late answer, so the two deadlock and
    // the awaited call fails back when the server is stopped.
    for mode in MODES {
        let awaited = if mode == "block_sender" {
            neg(ErrorCode::NO_SUCH_PROCESS)
        } else {
            4
        };
        let body = format!(
            "(call $fill)\n{}\n{} {}",
            times(
                K,
                &format!(
                    "{} {}",
                    call("(local.get $server)", 0, 64),
                    expect_r(neg(ErrorCode::TIMEOUT))
                )
            ),
            call("(local.get $server)", -1, 64),
            expect_r(awaited),
        );
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(
                &caller(&body),
                Some(&server(K + 1, false, "reply")),
                mode,
                deterministic,
                workers,
            );
            exited_within_one_past(&caller, &what);
        }
    }
}

#[test]
fn calls_never_answered_fail_back_within_one_past_capacity() {
    // As above, but the server traps owing all K + 1 calls: the notice
    // for the awaited one gets in, the K late ones are dropped and
    // counted, like any kernel message that finds a mailbox full.
    let body = format!(
        "(call $fill)\n{}\n{} {}",
        times(
            K,
            &format!(
                "{} {}",
                call("(local.get $server)", 0, 64),
                expect_r(neg(ErrorCode::TIMEOUT))
            )
        ),
        call("(local.get $server)", -1, 64),
        expect_r(neg(ErrorCode::NO_SUCH_PROCESS)),
    );
    for mode in MODES {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(
                &caller(&body),
                Some(&server(K + 1, false, "trap")),
                mode,
                deterministic,
                workers,
            );
            exited_within_one_past(&caller, &what);
            assert_eq!(caller.delivery_failures, K as u64 + 1, "{what}");
        }
    }
}

#[test]
fn a_process_owing_itself_calls_cannot_overfill_its_mailbox() {
    // It calls itself K times (timeout 0), taking each call at once, so
    // it owes itself K calls; it fills its mailbox, then replies to each.
    let take_call = "(drop (call $receive (i32.const 0) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64)))
      (i64.store (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 8))) (i64.load (i32.const 88)))";
    let reply = "(drop (call $reply (local.get $me)
        (i64.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 8))))
        (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))";
    let body = format!(
        "{}\n(call $fill)\n{}",
        times(
            K,
            &format!(
                "{} {} {take_call}",
                call("(local.get $me)", 0, 64),
                expect_r(neg(ErrorCode::TIMEOUT))
            )
        ),
        times(K, reply),
    );
    for mode in MODES {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(&caller(&body), None, mode, deterministic, workers);
            exited_within_one_past(&caller, &what);
        }
    }
}

#[test]
fn a_call_asking_for_an_ack_gets_it_past_a_full_mailbox() {
    // The kernel's ack answers such a call: it was dropped by the full
    // mailbox, and the caller waited until the run stopped it.
    let body = "(call $fill)
    (local.set $r (call $send_receive (local.get $server) (i64.const 0) (i32.const 1) (i32.const 512) (i32.const 0) (i32.const 4)
      (i64.const -1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const 0)) (then (return (i32.const 1000))))";
    for mode in MODES {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(
                &caller(body),
                Some(&server(1, true, "")),
                mode,
                deterministic,
                workers,
            );
            exited_within_one_past(&caller, &what);
        }
    }
}

#[test]
fn a_second_reply_to_a_call_is_an_ordinary_message() {
    // Only the first reply answers the call: the second is offered like
    // any message to the full mailbox.
    let body = format!(
        "(call $fill) {} {}",
        call("(local.get $server)", -1, 64),
        expect_r(4)
    );
    let twice = server(
        1,
        true,
        "(drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88)) (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))",
    );
    for mode in MODES {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(&caller(&body), Some(&twice), mode, deterministic, workers);
            exited_within_one_past(&caller, &what);
        }
    }
}

#[test]
fn a_call_from_a_mailbox_past_its_capacity_fails_at_once() {
    // A call times out; its late answer gets past the full mailbox while
    // the caller pauses (it answers the latest call). The next call could
    // then never get its answer in: it fails at once with WOULD_DEADLOCK,
    // nothing sent (it waited until the run stopped it), for a reply and
    // for an ack alike. The caller then takes all three messages.
    for options in [0, 512] {
        let body = format!(
            "(call $fill)
    (local.set $i (i32.const 0)) {} {}
    (call $pause (i64.const 50))
    (local.set $i (i32.const 1)) {} {}",
            call_with(options, 0),
            expect_r(neg(ErrorCode::TIMEOUT)),
            call_with(options, -1),
            expect_r(neg(ErrorCode::WOULD_DEADLOCK)),
        );
        for mode in MODES {
            for (deterministic, workers) in RUNS {
                let what = format!(
                    "options {options}, {mode}, deterministic {deterministic}, {workers} workers"
                );
                // The server (which replies unless the call asks for an
                // ack) waits for a second call, which never comes.
                let (caller, _) = run(
                    &caller(&body),
                    Some(&server(2, options == 0, "")),
                    mode,
                    deterministic,
                    workers,
                );
                assert_eq!(exited_within_one_past(&caller, &what), 3, "{what}");
                assert_eq!(caller.send_failures, 1, "{what}");
            }
        }
    }
}

/// A call to "server" with send `options` (512: an ack requested),
/// waiting `timeout` ms for its answer; `$r` is the result.
fn call_with(options: u32, timeout: i64) -> String {
    call("(local.get $server)", timeout, 64).replace(
        "(i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4)",
        &format!("(i32.const 1) (i32.const {options}) (i32.const 0) (i32.const 4)"),
    )
}

#[test]
fn the_notice_for_a_call_never_taken_gets_past_a_full_mailbox() {
    // The server never takes the call (it waits for another type, then
    // returns): the notice for the mail left in its mailbox is the call's
    // answer. So is the notice for a call a full `drop_newest` server drops
    // at its door. Both were dropped by the caller's full mailbox.
    let never_takes = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 77) (i64.const 100) (i32.const 64) (i32.const 128) (i32.const 64)))
    (i32.const 0)))"#;
    let full_server = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $send (call $self) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (drop (call $receive (i32.const 77) (i64.const 200) (i32.const 64) (i32.const 128) (i32.const 64)))
    (i32.const 0)))"#;
    let cases = [
        (never_takes, "", "", ErrorCode::NO_SUCH_PROCESS),
        (
            full_server,
            r#""mailbox":{"capacity":1,"overflow":"drop_newest"}"#,
            "(call $pause (i64.const 30))",
            ErrorCode::MESSAGE_DROPPED,
        ),
    ];
    for (server_wat, server_extra, first, code) in cases {
        let body = format!(
            "{first} (call $fill) (local.set $i (i32.const 0)) {} {}",
            call("(local.get $server)", -1, 64),
            expect_r(neg(code)),
        );
        for mode in MODES {
            for (deterministic, workers) in RUNS {
                let what =
                    format!("{code:?}, {mode}, deterministic {deterministic}, {workers} workers");
                let mut kernel = estalogic_tests::kernel(deterministic, workers);
                load_wat_with(
                    &mut kernel,
                    "caller",
                    &caller(&body),
                    &mailbox(CAPACITY, mode),
                );
                load_wat_with(&mut kernel, "server", server_wat, server_extra);
                kernel.spawn("server").unwrap();
                kernel.spawn("caller").unwrap();
                let report = kernel.run();
                let caller = report.process("caller").unwrap();
                exited_within_one_past(caller, &what);
                assert_eq!(caller.delivery_failures, 1, "{what}");
            }
        }
    }
}

#[test]
fn a_drop_oldest_mailbox_never_evicts_the_awaited_reply() {
    // The caller fills its mailbox at priority 1 and calls; the server
    // replies (priority 0) and then sends it another message. Making room
    // for that one, the mailbox evicted its oldest lowest-priority message:
    // the reply the caller waited for, which then never came.
    let fill_high = "(drop (call $send (local.get $me) (i32.const 9) (i32.const 1) (i32.const 0) (i32.const 3)))
    (drop (call $send (local.get $me) (i32.const 9) (i32.const 1) (i32.const 0) (i32.const 3)))";
    let body = format!(
        "{fill_high} (local.set $i (i32.const 0)) {} {}",
        call("(local.get $server)", -1, 64),
        expect_r(4)
    );
    let server = server(
        1,
        true,
        "(drop (call $send (i64.load (i32.const 72)) (i32.const 5) (i32.const 0) (i32.const 128) (i32.const 4)))",
    )
    .replace(
        "(import \"estalogic\" \"reply\"",
        "(import \"estalogic\" \"send\" (func $send (param i64 i32 i32 i32 i32) (result i64)))\n  (import \"estalogic\" \"reply\"",
    );
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let (caller, _) = run(
            &caller(&body),
            Some(&server),
            "drop_oldest",
            deterministic,
            workers,
        );
        exited_within_one_past(&caller, &what);
        assert_eq!(
            caller.received,
            1 + exited_within_one_past(&caller, &what) as u64,
            "{what}"
        );
    }
}

#[test]
fn a_call_to_itself_waiting_for_ever_is_refused() {
    // Only it could answer, and it waits: WOULD_DEADLOCK, nothing sent
    // (it waited until the run stopped it). With a timeout the call is
    // made and times out.
    for (timeout, result) in [
        (-1, neg(ErrorCode::WOULD_DEADLOCK)),
        (10, neg(ErrorCode::TIMEOUT)),
    ] {
        let body = format!(
            "(local.set $i (i32.const 0)) {} {}",
            call("(local.get $me)", timeout, 64),
            expect_r(result)
        );
        for (deterministic, workers) in RUNS {
            let what =
                format!("timeout {timeout}, deterministic {deterministic}, {workers} workers");
            let (caller, _) = run(
                &caller(&body),
                None,
                "notify_sender",
                deterministic,
                workers,
            );
            // What is left: the call itself when it was sent.
            let left = exited_within_one_past(&caller, &what);
            assert_eq!(left, i32::from(timeout != -1), "{what}");
        }
    }
}
