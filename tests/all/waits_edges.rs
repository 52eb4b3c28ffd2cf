//! Handler processes and every kind of wait at their edges (from the
//! thirteenth probe round), against the documented behaviour (the line
//! relied on is quoted in each case).

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, ProcessReport, RunReport};
use estalogic_tests::{in_each_run, kernel, neg};

/// Loads `wat` under `name` with entry `entry` (`run` for a task, `handle`
/// for a handler), every capability, and extra manifest members.
fn load(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, extra: &str) {
    estalogic_tests::load_entry(kernel, name, entry, wat, estalogic_tests::ALL_CAPS, extra);
}

const IMPORTS: &str = r#"
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
"#;

/// A task: `data` segments (WAT), `body` in `run` (result i32) with locals
/// $r (i64) $i $n (i32) $peer (i64). Helpers: $pause(ms), $drain (count of
/// messages taken with timeout 0). Receive buffers: header 4096, payload
/// 4160 (1024 bytes).
fn task(pages: u32, data: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") {pages})
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

/// A handler with `pages` of memory, its inbox given by `inbox` (the raw
/// `estalogic_inbox` result); `body` is the handle function's body (param
/// $len, result i32) with local $r (i64) $i (i32), and globals $peer (i64)
/// $count (i32).
fn handler(pages: u32, inbox: u64, data: &str, body: &str) -> String {
    let inbox = inbox as i64;
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") {pages})
  {data}
  (global $peer (mut i64) (i64.const 0))
  (global $count (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32) (local $r i64) (local $i i32)
    {body}))"#
    )
}

/// The usual inbox: header at 1024, 4,096 bytes of payload.
const INBOX: u64 = (4096 << 32) | 1024;

/// The type of the message at the inbox at 1024.
const TYPE: &str = "(i32.load (i32.const 1028))";

fn status(report: &RunReport, name: &str) -> ExitStatus {
    report
        .process(name)
        .unwrap_or_else(|| panic!("{name} ran"))
        .status
        .clone()
}

fn exited(report: &RunReport, name: &str) -> i32 {
    match status(report, name) {
        ExitStatus::Exited(code) => code,
        other => panic!("{name} ended {other}: {:?}", report.process(name)),
    }
}

fn trapped(report: &RunReport, name: &str) -> (ErrorCode, String) {
    match status(report, name) {
        ExitStatus::Trapped { code, detail } => (code, detail),
        other => panic!("{name} ended {other}: {:?}", report.process(name)),
    }
}

/// Spins `n` iterations of a simple loop (uses local $i).
fn spin(n: &str) -> String {
    format!(
        "(local.set $i (i32.const 0))
         (loop $spin
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $spin (i32.lt_u (local.get $i) {n})))"
    )
}

// ---------------------------------------------------------------------------
// Budget: what a call pays.

/// A handler whose STARTED call spins `n` iterations and returns 0, then
/// exits with 5 on the next message after spinning the number of
/// iterations its payload's first word says.
fn spinner() -> String {
    handler(
        20,
        (0x10_0000 << 32) | 1024,
        "",
        &format!(
            "(if (i32.eq {TYPE} (i32.const 0xFF02)) (then (return (i32.const 0))))
             {}
             (i32.const 5)",
            spin("(i32.load (i32.const 1080))")
        ),
    )
}

/// A task that sends `spinner` one message of `len` bytes whose first word
/// is `n`, then waits for it to end.
fn feeder(len: u32, n: u32) -> String {
    task(
        20,
        r#"(data (i32.const 0) "spinner")"#,
        &format!(
            "(i32.store (i32.const 65536) (i32.const {n}))
             (local.set $r (call $send (call $lookup (i32.const 0) (i32.const 7)) (i32.const 0x1001)
                (i32.const 0) (i32.const 65536) (i32.const {len})))
             (call $pause (i64.const 100))
             (i32.wrap_i64 (local.get $r))"
        ),
    )
}

fn run_spinner(len: u32, n: u32) -> ProcessReport {
    let mut k = kernel(true, 1);
    load(&mut k, "spinner", "handle", &spinner(), "");
    load(&mut k, "feeder", "run", &feeder(len, n), "");
    k.spawn_all().unwrap();
    let report = k.run();
    report.process("spinner").unwrap().clone()
}

#[test]
fn the_inbox_copy_is_paid_from_the_call_budget() {
    // ABI, Handler processes 5: "one call may use 64 slices of fuel
    // (6,400,000 units by default); a call that needs more traps with
    // TIMEOUT ... The bytes the kernel copies for a call (a message into
    // the inbox, ...) are paid from the same budget, one unit a byte".
    // The spinner's loop costs 9 units an iteration: 655,000 iterations
    // (5.9 million units) fit in a call with a 4-byte message, but not
    // with a 1 MiB one (5.9 + 1.05 million units).
    let small = run_spinner(4, 655_000);
    assert_eq!(small.status, ExitStatus::Exited(5), "{small:?}");
    let large = run_spinner(1 << 20, 655_000);
    match &large.status {
        ExitStatus::Trapped { code, .. } if *code == ErrorCode::TIMEOUT => {}
        other => panic!(
            "a call that spent {} units (guest work plus a 1 MiB inbox copy) past its 6,400,000 budget ended {other}",
            large.fuel_used
        ),
    }
}

#[test]
fn handler_data_segments_are_paid_from_the_instantiation_budget() {
    // ABI, Handler processes 5: "Instantiation counts as one call (its
    // data segments' bytes, a unit each, and the start function) ...: a
    // handler's data segments must stay well under 6 MiB." A handler with
    // 8 MiB of data segments (past the 6,400,000-unit budget) must end
    // trapped with TIMEOUT before its first call; the report's fuel counts
    // those bytes.
    let data = format!(
        r#"(data (i32.const 0) "{}") (data (i32.const 4194304) "{}")"#,
        "a".repeat(4 << 20),
        "b".repeat(4 << 20)
    );
    let big = handler(160, (4096 << 32) | (9 << 20), &data, "(i32.const 3)");
    let mut k = kernel(true, 1);
    load(&mut k, "big", "handle", &big, "");
    k.spawn_all().unwrap();
    let report = k.run();
    let (code, detail) = trapped(&report, "big");
    assert_eq!(code, ErrorCode::TIMEOUT, "{detail}");
}

// ---------------------------------------------------------------------------
// The inbox at its edges.

/// A handler with inbox `inbox` in one page that exits with 100 + the
/// payload length of its first message after STARTED.
fn measurer(inbox: u64) -> String {
    handler(
        1,
        inbox,
        "",
        "(if (i32.eq (i32.load (i32.const 0)) (i32.const 0)) (then
           (i32.store (i32.const 0) (i32.const 1)) (return (i32.const 0))))
         (i32.add (i32.const 100) (local.get $len))",
    )
    // The header is not at 1024 here: STARTED is told by a flag at 0.
}

/// A task that sends `len` bytes (type 0x1001) to `measurer`, then waits
/// 50 ms and exits with the number of delivery failures it took, or 99
/// if the send failed.
fn measured(len: u32) -> String {
    task(
        1,
        r#"(data (i32.const 0) "measurer")"#,
        &format!(
            "(if (i64.lt_s (call $send (call $lookup (i32.const 0) (i32.const 8)) (i32.const 0x1001) (i32.const 0)
                  (i32.const 8192) (i32.const {len})) (i64.const 0)) (then (return (i32.const 99))))
             (local.set $r (call $receive (i32.const 0) (i64.const 50) (i32.const 4096) (i32.const 4160) (i32.const 64)))
             (if (i64.eq (local.get $r) (i64.const {btl})) (then (return (i32.const 1))))
             (if (i64.eq (local.get $r) (i64.const {to})) (then (return (i32.const 0))))
             (i32.const 98)",
            btl = neg(ErrorCode::BUFFER_TOO_SMALL),
            to = neg(ErrorCode::TIMEOUT),
        ),
    )
}

#[test]
fn an_inbox_ending_at_the_end_of_memory_takes_exactly_its_capacity() {
    // ABI, Handler processes 1: "The kernel writes each message's 56-byte
    // header at pointer and its payload right after, up to capacity bytes
    // ... the range must lie in memory"; 6: "A message whose payload is
    // larger than the inbox is not delivered: the kernel answers its
    // sender with a DELIVERY_FAILURE notice, code BUFFER_TOO_SMALL".
    let at = 65536 - 56 - 40;
    let inbox = (40u64 << 32) | at;
    for (len, handler_exit, sender_exit) in [(40, Some(140), 0), (41, None, 1), (0, Some(100), 0)] {
        in_each_run(|mut k, what| {
            load(&mut k, "measurer", "handle", &measurer(inbox), "");
            load(&mut k, "sender", "run", &measured(len), "");
            k.spawn_all().unwrap();
            let report = k.run();
            assert_eq!(exited(&report, "sender"), sender_exit, "{len}: {what}");
            match handler_exit {
                Some(code) => assert_eq!(exited(&report, "measurer"), code, "{len}: {what}"),
                None => assert_eq!(
                    status(&report, "measurer"),
                    ExitStatus::Stopped(ErrorCode::DEADLOCKED),
                    "{len}: {what}"
                ),
            }
        });
    }
    // One byte past the end of memory: refused, saying so.
    let mut k = kernel(true, 1);
    load(
        &mut k,
        "measurer",
        "handle",
        &measurer((41u64 << 32) | at),
        "",
    );
    k.spawn_all().unwrap();
    let (_, detail) = trapped(&k.run(), "measurer");
    assert!(detail.contains("do not lie in its memory"), "{detail}");
}

#[test]
fn a_handler_return_value_is_its_exit_code() {
    // ABI, Handler processes 3: "The handler returns 0 to wait for the next
    // message; any other value ends the process with that exit code (exit
    // works too, for code 0)".
    for (body, expected) in [
        ("(i32.const -7)", ExitStatus::Exited(-7)),
        ("(i32.const -2147483648)", ExitStatus::Exited(i32::MIN)),
        (
            "(call $exit (i32.const 0)) (i32.const 1)",
            ExitStatus::Exited(0),
        ),
        (
            "(call $exit (i32.const 9)) (i32.const 1)",
            ExitStatus::Exited(9),
        ),
    ] {
        let mut k = kernel(true, 1);
        load(&mut k, "h", "handle", &handler(1, INBOX, "", body), "");
        k.spawn_all().unwrap();
        assert_eq!(status(&k.run(), "h"), expected, "{body}");
    }
}

// ---------------------------------------------------------------------------
// Syscalls inside a call.

#[test]
fn a_message_a_handler_takes_inside_a_call_is_not_delivered_again() {
    // ABI, Handler processes 4: "a receive with timeout 0 takes a queued
    // message"; 2: "Then one call per message, in the order a receive
    // would take them". At STARTED it sends itself 0x2001, 0x2002, 0x2003
    // and takes 0x2002 (peeked first: the same sequence). Exit: 10 * calls
    // for 0x2002 + calls for 0x2001, at 0x2003; other codes name a check.
    let body = "
      (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then
        (local.set $r (call $self))
        (drop (call $send (local.get $r) (i32.const 0x2001) (i32.const 0) (i32.const 0) (i32.const 1)))
        (drop (call $send (local.get $r) (i32.const 0x2002) (i32.const 0) (i32.const 0) (i32.const 2)))
        (drop (call $send (local.get $r) (i32.const 0x2003) (i32.const 0) (i32.const 0) (i32.const 3)))
        (if (i64.ne (call $peek (i32.const 0x2002) (i32.const 8192)) (i64.const 2)) (then (return (i32.const 201))))
        (if (i64.ne (call $receive (i32.const 0x2002) (i64.const 0) (i32.const 8300) (i32.const 8400) (i32.const 64))
                    (i64.const 2)) (then (return (i32.const 202))))
        (if (i64.ne (i64.load (i32.const 8216)) (i64.load (i32.const 8324))) (then (return (i32.const 203))))
        ;; nothing of that type is left
        (if (i64.ne (call $peek (i32.const 0x2002) (i32.const 8192)) (i64.const -1006)) (then (return (i32.const 204))))
        (return (i32.const 0))))
      (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2001))
        (then (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))))
      (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2002))
        (then (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 10)))))
      (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2003))
        (then (return (i32.add (i32.const 1000) (i32.load (i32.const 0))))))
      (i32.const 0)";
    in_each_run(|mut k, what| {
        load(&mut k, "h", "handle", &handler(1, INBOX, "", body), "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "h"), 1001, "{what}");
        assert_eq!(report.process("h").unwrap().received, 3, "{what}");
    });
}

#[test]
fn a_handlers_waits_check_their_arguments_before_would_block() {
    // ABI, Handler processes 4: "a receive or receive_reply with a timeout
    // other than 0, every send_receive ... return WOULD_BLOCK (2005)
    // having done nothing (bad arguments are still INVALID_ARGUMENT
    // first ...)"; Conventions 1: "A range outside memory fails with
    // INVALID_POINTER (1004)"; send_receive: "The wait's arguments and
    // messaging:receive are checked first". What a task gets for each
    // call, a handler must get too (but WOULD_BLOCK for a good one).
    // Each case: (call, what a task gets).
    let cases: &[(&str, i64)] = &[
        // header out of memory, receive with timeout -1
        (
            "(call $receive (i32.const 0) (i64.const -1) (i32.const 65530) (i32.const 4160) (i32.const 64))",
            neg(ErrorCode::INVALID_POINTER),
        ),
        // buffer out of memory, receive_reply with a timeout
        (
            "(call $receive_reply (i64.const 1) (i64.const 5) (i32.const 4096) (i32.const 65500) (i32.const 64))",
            neg(ErrorCode::INVALID_POINTER),
        ),
        // send_receive whose payload is out of memory
        (
            "(call $send_receive (call $self) (i64.const 0) (i32.const 5) (i32.const 0) (i32.const 65530) (i32.const 64)
               (i64.const 0) (i64.const 5) (i32.const 4096) (i32.const 4160) (i32.const 64))",
            neg(ErrorCode::INVALID_POINTER),
        ),
        // send_receive whose header buffer is out of memory
        (
            "(call $send_receive (call $self) (i64.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 4)
               (i64.const 0) (i64.const 5) (i32.const 65530) (i32.const 4160) (i32.const 64))",
            neg(ErrorCode::INVALID_POINTER),
        ),
        // send_receive with a payload past 1 MiB
        (
            "(call $send_receive (call $self) (i64.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0x100001)
               (i64.const 0) (i64.const 5) (i32.const 4096) (i32.const 4160) (i32.const 64))",
            neg(ErrorCode::PAYLOAD_TOO_LARGE),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (call, want)) in cases.iter().enumerate() {
        // What a task gets (the expectation is checked on it too).
        let t = task(1, "", &format!("(i32.wrap_i64 {call})"));
        let h = handler(1, INBOX, "", &format!("(i32.wrap_i64 {call})"));
        let mut k = kernel(true, 1);
        load(&mut k, "t", "run", &t, "");
        load(&mut k, "h", "handle", &h, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(i64::from(exited(&report, "t")), *want, "case {i}: a task");
        let got = i64::from(exited(&report, "h"));
        if got != *want {
            failures.push(format!(
                "case {i}: {call}: a task gets {want}, a handler {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Waits with timeouts, in tasks.

#[test]
fn a_timeout_expires_while_a_peer_keeps_the_worker_busy() {
    // ABI 6: receive "waiting up to timeout_ms". `w` waits 1 ms for type 5;
    // `b` yields and reads the clock until 20 ms have passed, then sends
    // type 5. The wait must end with TIMEOUT (a message taken after the
    // deadline would be a wait of 20 ms). `w` exits 0 for a TIMEOUT, 1 for
    // the message; then it takes the message (exit 2 if it is missing).
    let w = task(
        1,
        "",
        &format!(
            "(local.set $r (call $now))
             (if (i64.ne (call $receive (i32.const 5) (i64.const 1) (i32.const 4096) (i32.const 4160) (i32.const 64))
                         (i64.const {to})) (then (return (i32.const 1))))
             (if (i64.lt_s (i64.sub (call $now) (local.get $r)) (i64.const 1000000)) (then (return (i32.const 3))))
             (if (i64.lt_s (call $receive (i32.const 5) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64))
                           (i64.const 0)) (then (return (i32.const 2))))
             (i32.const 0)",
            to = neg(ErrorCode::TIMEOUT)
        ),
    );
    let b = task(
        1,
        r#"(data (i32.const 0) "w")"#,
        "(local.set $r (call $now))
         (loop $busy
           (drop (call $yield))
           (br_if $busy (i64.lt_s (i64.sub (call $now) (local.get $r)) (i64.const 20000000))))
         (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
         (i32.const 0)",
    );
    in_each_run(|mut k, what| {
        load(&mut k, "w", "run", &w, "");
        load(&mut k, "b", "run", &b, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "w"), 0, "{what}");
        assert_eq!(exited(&report, "b"), 0, "{what}");
    });
}

#[test]
fn a_reply_after_receive_reply_timed_out_is_queued_like_any_message() {
    // ABI 11 / 17: "a wait that times out leaves the message sent (a late
    // answer is queued like any message ...)". The client asks (send, then
    // receive_reply with 10 ms), times out, then takes the late reply with
    // a plain receive: REPLY flag, correlation = its request's sequence.
    let client = task(
        1,
        r#"(data (i32.const 0) "server")"#,
        &format!(
            "(local.set $r (call $send (call $lookup (i32.const 0) (i32.const 6)) (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 0)))
             (if (i64.ne (call $receive_reply (local.get $r) (i64.const 10) (i32.const 4096) (i32.const 4160) (i32.const 64))
                         (i64.const {to})) (then (return (i32.const 1))))
             (if (i64.ne (call $receive (i32.const 0) (i64.const 1000) (i32.const 4096) (i32.const 4160) (i32.const 64))
                         (i64.const 3)) (then (return (i32.const 2))))
             (if (i32.ne (i32.load16_u (i32.const 4098)) (i32.const 1)) (then (return (i32.const 3))))
             (if (i64.ne (i64.load (i32.const 4136)) (local.get $r)) (then (return (i32.const 4))))
             (i32.const 0)",
            to = neg(ErrorCode::TIMEOUT)
        ),
    );
    let server = task(
        1,
        "",
        "(if (i64.lt_s (call $receive (i32.const 0x1001) (i64.const -1) (i32.const 2048) (i32.const 2200) (i32.const 64)) (i64.const 0))
           (then (return (i32.const 1))))
         (call $pause (i64.const 60))
         (drop (call $reply (i64.load (i32.const 2056)) (i64.load (i32.const 2072)) (i32.const 0x1002) (i32.const 0) (i32.const 0) (i32.const 3)))
         (i32.const 0)",
    );
    in_each_run(|mut k, what| {
        load(&mut k, "server", "run", &server, "");
        load(&mut k, "client", "run", &client, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "client"), 0, "{what}");
        assert_eq!(exited(&report, "server"), 0, "{what}");
    });
}

/// A task that sends `n` one-byte type-5 messages to `target` and exits
/// with the result of the last send (clamped to i32).
fn flooder(target: &str, n: u32) -> String {
    task(
        1,
        &format!(r#"(data (i32.const 0) "{target}")"#),
        &format!(
            "(local.set $peer (call $lookup (i32.const 0) (i32.const {len})))
             (local.set $i (i32.const 0))
             (loop $more
               (local.set $r (call $send (local.get $peer) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1)))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.and (i64.ge_s (local.get $r) (i64.const 0)) (i32.lt_u (local.get $i) (i32.const {n})))))
             (i32.wrap_i64 (local.get $r))",
            len = target.len()
        ),
    )
}

#[test]
fn a_sender_blocked_on_a_handler_is_released_as_it_handles() {
    // ABI "Send protocol" (ipc.rs) / ARCHITECTURE 3: a sender blocked on a
    // full block_sender mailbox waits for the receiver to take. A handler
    // with room for 2 that handles each message in its own call: 50
    // messages all get through, in order, none lost.
    let h = handler(
        1,
        INBOX,
        "",
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 5)) (then
           (global.set $count (i32.add (global.get $count) (i32.const 1)))
           (if (i32.eq (global.get $count) (i32.const 50)) (then (return (i32.const 77))))))
         (i32.const 0)",
    );
    in_each_run(|mut k, what| {
        load(
            &mut k,
            "h",
            "handle",
            &h,
            r#""mailbox":{"capacity":2,"overflow":"block_sender"}"#,
        );
        load(&mut k, "f", "run", &flooder("h", 50), "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "h"), 77, "{what}");
        assert!(exited(&report, "f") > 0, "{what}");
        assert!(report.process("f").unwrap().blocked_sends > 0, "{what}");
    });
}

// ---------------------------------------------------------------------------
// A call past its budget, then a restart.

/// `h` (restart on_failure): on 0x2001 tells `t` (0x3001) and spins for
/// ever; on 0x2002 tells `t` (0x3002) and exits 0.
fn budget_breaker() -> String {
    handler(
        1,
        INBOX,
        r#"(data (i32.const 0) "t")"#,
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2001)) (then
           (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x3001) (i32.const 0) (i32.const 0) (i32.const 0)))
           (loop $forever (br $forever))))
         (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2002)) (then
           (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x3002) (i32.const 0) (i32.const 0) (i32.const 0)))
           (return (i32.const 1))))
         (i32.const 0)",
    )
}

#[test]
fn a_call_past_its_budget_keeps_its_sends_and_is_not_handled_again() {
    // ABI, Handler processes 5: "a call that needs more traps with TIMEOUT
    // (3001)"; ARCHITECTURE 5: a same-state restart takes its
    // predecessor's mail ("the taken call is not mail any more"). What
    // the call sent before it ran out stays sent; the message it was
    // handling is not handed to the restart; the next one is.
    let s = task(
        1,
        r#"(data (i32.const 0) "h")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
         (drop (call $send (local.get $peer) (i32.const 0x2001) (i32.const 0) (i32.const 0) (i32.const 0)))
         (drop (call $send (local.get $peer) (i32.const 0x2002) (i32.const 0) (i32.const 0) (i32.const 0)))
         (i32.const 0)",
    );
    let t = task(
        1,
        "",
        "(if (i64.lt_s (call $receive (i32.const 0x3001) (i64.const 5000) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const 0))
           (then (return (i32.const 1))))
         (if (i64.lt_s (call $receive (i32.const 0x3002) (i64.const 5000) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const 0))
           (then (return (i32.const 2))))
         (i32.const 0)",
    );
    in_each_run(|mut k, what| {
        load(&mut k, "t", "run", &t, "");
        load(
            &mut k,
            "h",
            "handle",
            &budget_breaker(),
            r#""restart":"on_failure""#,
        );
        load(&mut k, "s", "run", &s, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exited(&report, "t"), 0, "{what}");
        assert_eq!(report.restarts.len(), 1, "{what}: {:?}", report.restarts);
        let hs: Vec<_> = report
            .processes
            .iter()
            .filter(|p| p.module == "h")
            .collect();
        assert_eq!(hs.len(), 2, "{what}");
        assert!(
            matches!(&hs[0].status, ExitStatus::Trapped { code, .. } if *code == ErrorCode::TIMEOUT),
            "{what}: {:?}",
            hs[0]
        );
        assert_eq!(hs[1].status, ExitStatus::Exited(1), "{what}");
    });
}

// ---------------------------------------------------------------------------
// Determinism.

fn wait_scenario() -> RunReport {
    let mut k = kernel(true, 1);
    // A pair of handlers ping-ponging (direct deliveries), a handler that
    // blocks a flooder, a budget breaker restarted, timers of 1 ms racing
    // a busy peer, and a late reply.
    let pong = handler(
        1,
        INBOX,
        "",
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 1)) (then
           (drop (call $send (i64.load (i32.const 1032)) (i32.const 2) (i32.const 0) (i32.const 1080) (local.get $len)))))
         (i32.const 0)",
    );
    let ping = handler(
        1,
        INBOX,
        r#"(data (i32.const 0) "pong")"#,
        "(if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then
           (global.set $peer (call $lookup (i32.const 0) (i32.const 4)))))
         (global.set $count (i32.add (global.get $count) (i32.const 1)))
         (if (i32.eq (global.get $count) (i32.const 300)) (then (return (i32.const 3))))
         (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 16)))
         (i32.const 0)",
    );
    let sink = handler(
        1,
        INBOX,
        "",
        "(global.set $count (i32.add (global.get $count) (i32.const 1)))
         (if (i32.eq (global.get $count) (i32.const 41)) (then (return (i32.const 4))))
         (i32.const 0)",
    );
    let waiter = task(
        1,
        "",
        "(local.set $i (i32.const 0))
         (loop $more
           (drop (call $receive (i32.const 0) (i64.const 1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $more (i32.lt_u (local.get $i) (i32.const 30))))
         (i32.wrap_i64 (call $now))",
    );
    load(
        &mut k,
        "t",
        "run",
        &task(1, "", "(call $pause (i64.const 200)) (call $drain)"),
        "",
    );
    load(&mut k, "pong", "handle", &pong, "");
    load(&mut k, "ping", "handle", &ping, "");
    load(
        &mut k,
        "sink",
        "handle",
        &sink,
        r#""mailbox":{"capacity":2,"overflow":"block_sender"}"#,
    );
    load(&mut k, "f", "run", &flooder("sink", 40), "");
    load(
        &mut k,
        "h",
        "handle",
        &budget_breaker(),
        r#""restart":"on_failure""#,
    );
    load(
        &mut k,
        "s",
        "run",
        &task(
            1,
            r#"(data (i32.const 0) "h")"#,
            "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
             (drop (call $send (local.get $peer) (i32.const 0x2001) (i32.const 0) (i32.const 0) (i32.const 0)))
             (drop (call $send (local.get $peer) (i32.const 0x2002) (i32.const 0) (i32.const 0) (i32.const 0)))
             (i32.const 0)",
        ),
        "",
    );
    load(&mut k, "waiter", "run", &waiter, "");
    k.spawn_all().unwrap();
    k.run()
}

#[test]
fn deterministic_wait_scenarios_repeat() {
    // ARCHITECTURE, Deterministic mode: "Preemption points depend only on
    // fuel, so a run repeats."
    let first = wait_scenario();
    assert_eq!(exited(&first, "ping"), 3);
    for _ in 0..2 {
        let again = wait_scenario();
        assert_eq!(first.processes, again.processes);
        assert_eq!(
            format!("{:?}", first.restarts),
            format!("{:?}", again.restarts)
        );
        assert_eq!(first.stats.checkpoints, again.stats.checkpoints);
        assert_eq!(first.stats.handoffs, again.stats.handoffs);
    }
}

// ---------------------------------------------------------------------------
// Selective receive against a full mailbox.

#[test]
fn a_selective_wait_behind_a_full_mailbox_ends_by_the_mode() {
    // `r` (room for 2) waits for type 9 only; `s` sends type 1 twice, then
    // type 9. drop_oldest: the oldest type 1 makes room, `r` takes 9 (exit
    // 9), `s` is told of the evicted one. notify_sender: the 9 is refused
    // (MAILBOX_FULL) and `r` times out. block_sender: `s` waits, nothing can
    // wake either; INVARIANT 10 stops them "one at a time in pid order,
    // until one's end lets another run": `r` first, whose end wakes `s`,
    // whose send then fails with NO_SUCH_PROCESS and which exits by itself.
    let r = task(
        1,
        "",
        "(local.set $r (call $receive (i32.const 9) (i64.const 300) (i32.const 4096) (i32.const 4160) (i32.const 64)))
         (if (i64.ge_s (local.get $r) (i64.const 0)) (then (return (i32.load (i32.const 4100)))))
         (i32.wrap_i64 (local.get $r))",
    );
    let r_forever = r.replace("(i64.const 300)", "(i64.const -1)");
    let s = task(
        1,
        r#"(data (i32.const 0) "r")"#,
        "(local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
         (drop (call $send (local.get $peer) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1)))
         (drop (call $send (local.get $peer) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1)))
         (i32.wrap_i64 (call $send (local.get $peer) (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 1)))",
    );
    for (mode, receiver, r_end, s_end) in [
        ("drop_oldest", &r, Some(9), None),
        ("notify_sender", &r, Some(-3001), Some(-3003)),
        ("block_sender", &r_forever, None, Some(-2001)),
    ] {
        in_each_run(|mut k, what| {
            load(
                &mut k,
                "r",
                "run",
                receiver,
                &format!(r#""mailbox":{{"capacity":2,"overflow":"{mode}"}}"#),
            );
            load(&mut k, "s", "run", &s, "");
            k.spawn_all().unwrap();
            let report = k.run();
            match r_end {
                Some(code) => assert_eq!(exited(&report, "r"), code, "{mode} {what}"),
                None => assert_eq!(
                    status(&report, "r"),
                    ExitStatus::Stopped(ErrorCode::DEADLOCKED),
                    "{mode} {what}"
                ),
            }
            match s_end {
                Some(code) => assert_eq!(exited(&report, "s"), code, "{mode} {what}"),
                None => assert!(exited(&report, "s") > 0, "{mode} {what}"),
            }
        });
    }
}

#[test]
fn peek_then_receive_take_the_same_message_in_priority_order() {
    // ABI 9: peek gives "the header of what receive would take, without
    // taking it". Three messages to itself at priorities 1, 6, 6: peek
    // shows the first priority-6 one; receive takes exactly it; a second
    // peek shows the other priority-6 one.
    let t = task(
        1,
        "",
        "(local.set $peer (call $self))
         (drop (call $send (local.get $peer) (i32.const 5) (i32.const 1) (i32.const 0) (i32.const 1)))
         (drop (call $send (local.get $peer) (i32.const 5) (i32.const 6) (i32.const 0) (i32.const 2)))
         (drop (call $send (local.get $peer) (i32.const 5) (i32.const 6) (i32.const 0) (i32.const 3)))
         (if (i64.ne (call $peek (i32.const 5) (i32.const 2048)) (i64.const 2)) (then (return (i32.const 1))))
         (if (i64.ne (call $receive (i32.const 0) (i64.const 0) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const 2))
           (then (return (i32.const 2))))
         (if (i64.ne (i64.load (i32.const 2072)) (i64.load (i32.const 4120))) (then (return (i32.const 3))))
         (if (i64.ne (call $peek (i32.const 0) (i32.const 2048)) (i64.const 3)) (then (return (i32.const 4))))
         (i32.const 0)",
    );
    let mut k = kernel(true, 1);
    load(&mut k, "t", "run", &t, "");
    k.spawn_all().unwrap();
    assert_eq!(exited(&k.run(), "t"), 0);
}
