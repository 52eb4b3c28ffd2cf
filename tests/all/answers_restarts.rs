//! Answers to calls against eviction and restarts (from the third
//! adversarial probe of the call/answer rules): a `drop_oldest` mailbox
//! keeps the reply its owner waits for; a caller still accepts the answer
//! of its server's restart after many other restarts of processes holding
//! its mail; a restart keeps mail that was one past its capacity; and
//! deterministic runs of all three repeat exactly.

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, ProcessReport, RunReport};
use estalogic_tests::{RUNS, kernel, load_wat_with, neg};

const IMPORTS: &str = r#"
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "server")
  (func $pause (param $ms i64)
    (drop (call $receive (i32.const 77) (local.get $ms) (i32.const 64) (i32.const 128) (i32.const 64))))
  (func $drain (result i32) (local $n i32)
    (block $out (loop $more
      (br_if $out (i64.lt_s
        (call $receive (i32.const 0) (i64.const 0) (i32.const 64) (i32.const 128) (i32.const 64))
        (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))
    (local.get $n))
"#;

fn module(body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (func (export "run") (result i32)
    (local $r i64) (local $i i32) (local $server i64) (local $me i64)
    (local.set $server (call $lookup (i32.const 0) (i32.const 6)))
    (local.set $me (call $self))
    {body}))"#
    )
}

/// A call to `$server`: `$r` = its result.
fn call(options: u32, timeout: i64) -> String {
    format!(
        "(local.set $r (call $send_receive (local.get $server) (i64.const 0) (i32.const 1) (i32.const {options}) (i32.const 0) (i32.const 4)
      (i64.const -1) (i64.const {timeout}) (i32.const 64) (i32.const 128) (i32.const 64)))"
    )
}

/// `(return code)` unless `$r` is `expected`.
fn expect_r(expected: i64, code: i32) -> String {
    format!(
        "(if (i64.ne (local.get $r) (i64.const {expected})) (then (return (i32.const {code}))))"
    )
}

/// The parts of a report that must not change between two deterministic runs.
fn digest(report: &RunReport) -> Vec<String> {
    let mut out: Vec<String> = report
        .processes
        .iter()
        .map(|p| {
            format!(
                "{} {} {} sent {} recv {} sf {} df {} und {} blk {}",
                p.pid,
                p.module,
                p.status,
                p.sent,
                p.received,
                p.send_failures,
                p.delivery_failures,
                p.undelivered,
                p.blocked_sends
            )
        })
        .collect();
    out.sort();
    out
}

fn get<'a>(report: &'a RunReport, module: &str) -> Vec<&'a ProcessReport> {
    report
        .processes
        .iter()
        .filter(|p| p.module == module)
        .collect()
}

/// Replies to one call, then sends its caller `capacity` (2) more
/// messages: a `drop_oldest` mailbox that evicted the reply to make room
/// left the caller waiting for ever.
fn evicting_server() -> String {
    module(
        "(drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88)) (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))
    (drop (call $send (i64.load (i32.const 72)) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (drop (call $send (i64.load (i32.const 72)) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    (i32.const 0)",
    )
}

fn run_a(deterministic: bool, workers: usize) -> RunReport {
    let caller = module(&format!(
        "{} {} (call $drain)",
        call(0, -1),
        expect_r(4, 1000)
    ));
    let mut kernel = kernel(deterministic, workers);
    load_wat_with(
        &mut kernel,
        "caller",
        &caller,
        r#""mailbox":{"capacity":2,"overflow":"drop_oldest"}"#,
    );
    load_wat_with(&mut kernel, "server", &evicting_server(), "");
    kernel.spawn("server").unwrap();
    kernel.spawn("caller").unwrap();
    kernel.run()
}

#[test]
fn a_reply_in_a_drop_oldest_mailbox_outlasts_later_traffic() {
    let mut failures = Vec::new();
    for (deterministic, workers) in RUNS {
        let report = run_a(deterministic, workers);
        let caller = get(&report, "caller")[0];
        let server = get(&report, "server")[0];
        if !matches!(caller.status, ExitStatus::Exited(_)) {
            failures.push(format!(
                "det {deterministic}, {workers} workers: caller ended {} (server df {})",
                caller.status, server.delivery_failures
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Other restarts that overflowed the successor list.
const R: usize = 16;

/// The name of the `i`th other module.
fn r_name(i: usize) -> String {
    format!("r{i:x}")
}

/// A same-state restart of the server holds the call; `rs` more
/// same-state restarts of other processes holding the caller's mail. With
/// 16 of them the server's (old, new) record was pushed out of the
/// caller's successor list (`MAX_SUCCESSORS`): the restart's reply got in
/// but the call's filter refused it, and the caller waited for ever.
fn run_b(deterministic: bool, workers: usize, rs: usize) -> RunReport {
    let mut sends = String::new();
    for i in 0..rs {
        // "rX" at 16 + 2 i
        sends.push_str(&format!(
            "(drop (call $send (call $lookup (i32.const {}) (i32.const 2)) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 3)))\n",
            16 + 2 * i
        ));
    }
    let names: String = (0..rs).map(r_name).collect();
    let caller = module(&format!(
        "{sends} {} {} (call $drain)",
        call(0, -1),
        expect_r(4, 1000)
    ))
    .replace(
        "(data (i32.const 0) \"server\")",
        &format!("(data (i32.const 0) \"server\") (data (i32.const 16) \"{names}\")"),
    );
    // First incarnation: marks itself (type 60 to itself), waits, traps.
    // The restart (it inherits the mark): waits for "go", takes the call,
    // replies.
    let server = module(
        "(if (i64.ge_s (call $peek (i32.const 60) (i32.const 64)) (i64.const 0))
      (then
        (drop (call $receive (i32.const 50) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
        (drop (call $receive (i32.const 1) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
        (drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88)) (i32.const 2) (i32.const 0) (i32.const 128) (i32.const 4)))
        (return (i32.const 0))))
    (drop (call $send (local.get $me) (i32.const 60) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $pause (i64.const 50))
    unreachable",
    );
    // The restart stays a while (its end would tell the caller of the
    // mail left, waking it before the link is pushed out).
    let other = module(
        "(if (i64.ge_s (call $peek (i32.const 60) (i32.const 64)) (i64.const 0))
      (then (call $pause (i64.const 1000)) (return (i32.const 0))))
    (drop (call $send (local.get $me) (i32.const 60) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $pause (i64.const 150))
    unreachable",
    );
    let go = module(
        "(call $pause (i64.const 300))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 6)) (i32.const 50) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 0)",
    );
    let mut kernel = kernel(deterministic, workers);
    load_wat_with(&mut kernel, "caller", &caller, "");
    load_wat_with(&mut kernel, "server", &server, r#""restart":"on_failure""#);
    load_wat_with(&mut kernel, "go", &go, "");
    for i in 0..rs {
        load_wat_with(&mut kernel, &r_name(i), &other, r#""restart":"on_failure""#);
    }
    kernel.spawn("server").unwrap();
    for i in 0..rs {
        kernel.spawn(&r_name(i)).unwrap();
    }
    kernel.spawn("go").unwrap();
    kernel.spawn("caller").unwrap();
    kernel.run()
}

#[test]
fn a_call_is_answered_by_its_restarted_server_after_many_other_restarts() {
    let mut failures = Vec::new();
    for (deterministic, workers) in RUNS {
        // 15 other restarts: the server's link is kept (16 in all), the call is answered.
        let report = run_b(deterministic, workers, R - 1);
        let caller = get(&report, "caller")[0];
        assert!(
            matches!(caller.status, ExitStatus::Exited(_)),
            "control, det {deterministic}, {workers} workers: {caller:?}"
        );
        let report = run_b(deterministic, workers, R);
        let caller = get(&report, "caller")[0];
        if !matches!(caller.status, ExitStatus::Exited(_)) {
            failures.push(format!(
                "det {deterministic}, {workers} workers: the caller did not take the reply its server's restart sent: {}",
                caller.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A caller one past its capacity (the answer to its latest call got in)
/// traps and is restarted with the same state. The restart's mailbox took
/// only `capacity` of the inherited messages; the one refused was the
/// caller's own (a message it sent itself), so it was counted nowhere.
/// Mailbox (capacity 2): a marker (type 60, priority 7) and a filler (type
/// 9, priority 0), both sent to itself, then the reply (priority 7).
fn run_c(mode: &str, deterministic: bool, workers: usize) -> RunReport {
    let caller = module(&format!(
        "(if (i64.ge_s (call $peek (i32.const 60) (i32.const 64)) (i64.const 0))
      (then (return (call $drain))))
    (drop (call $send (local.get $me) (i32.const 60) (i32.const 7) (i32.const 0) (i32.const 3)))
    (drop (call $send (local.get $me) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 3)))
    {} {}
    (call $pause (i64.const 50))
    unreachable",
        call(0, 0),
        expect_r(neg(ErrorCode::TIMEOUT), 1000)
    ));
    let server = module(
        "(drop (call $receive (i32.const 0) (i64.const -1) (i32.const 64) (i32.const 128) (i32.const 64)))
    (drop (call $reply (i64.load (i32.const 72)) (i64.load (i32.const 88)) (i32.const 2) (i32.const 7) (i32.const 128) (i32.const 4)))
    (call $pause (i64.const 300))
    (i32.const 0)",
    );
    let mut kernel = kernel(deterministic, workers);
    load_wat_with(
        &mut kernel,
        "caller",
        &caller,
        &format!(r#""restart":"on_failure","mailbox":{{"capacity":2,"overflow":"{mode}"}}"#),
    );
    load_wat_with(&mut kernel, "server", &server, "");
    kernel.spawn("server").unwrap();
    kernel.spawn("caller").unwrap();
    kernel.run()
}

#[test]
fn a_restart_keeps_mail_one_past_capacity() {
    let mut failures = Vec::new();
    // (drop_oldest evicts the p7 marker to admit t9: a test artifact.)
    for mode in ["notify_sender", "block_sender", "drop_newest"] {
        for (deterministic, workers) in RUNS {
            let report = run_c(mode, deterministic, workers);
            let callers = get(&report, "caller");
            let server = get(&report, "server")[0];
            let what = format!("{mode}, det {deterministic}, {workers} workers");
            let ExitStatus::Exited(taken) = callers.last().unwrap().status else {
                failures.push(format!(
                    "{what}: restart ended {}",
                    callers.last().unwrap().status
                ));
                continue;
            };
            // Three messages were in the mailbox: each was taken, or
            // counted undelivered by an incarnation of the caller.
            let undelivered: u64 = callers.iter().map(|c| c.undelivered).sum();
            if taken as u64 + undelivered != 3 {
                failures.push(format!(
                    "{what}: taken {taken} + undelivered {undelivered} != 3 (server df {}); callers {callers:?}",
                    server.delivery_failures
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deterministic_runs_of_these_cases_are_identical() {
    for run in 0..3 {
        let (a1, a2) = (digest(&run_a(true, 1)), digest(&run_a(true, 1)));
        assert_eq!(a1, a2, "A, round {run}");
        let (c1, c2) = (
            digest(&run_c("notify_sender", true, 1)),
            digest(&run_c("notify_sender", true, 1)),
        );
        assert_eq!(c1, c2, "C, round {run}");
    }
    let (b1, b2) = (digest(&run_b(true, 1, R)), digest(&run_b(true, 1, R)));
    assert_eq!(b1, b2, "B");
}
