//! Message ordering and mailbox accounting on one and two workers (the
//! thirtieth probe round): streams that switch between direct delivery,
//! the mailbox and held answers stay in order, restarts mid-stream, header
//! sequences and timestamps, broadcasts into small mailboxes of every
//! overflow mode. Each case asserts what docs/ABI.md or ARCHITECTURE.md
//! promise (the line relied on is quoted).

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{RUNS, describe, kernel, mailbox, neg};

const CAPS: &[&str] = &[
    "messaging:send",
    "messaging:receive",
    "messaging:broadcast",
    "process:lookup",
    "log:write",
    "time:read",
];

fn load(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, extra: &str) {
    estalogic_tests::load_entry(kernel, name, entry, wat, CAPS, extra);
}

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
"#;

/// A handler with its inbox at 1024 (header; payload at 1080), 256 bytes
/// of payload; `body` is the handle function's body (param $len, result
/// i32), with globals $peer (i64), $count $order $bad (i32), $last (i64).
fn handler(data: &str, body: &str) -> String {
    let inbox = (256u64 << 32) | 1024;
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {data}
  (global $peer (mut i64) (i64.const 0))
  (global $count (mut i32) (i32.const 0))
  (global $order (mut i32) (i32.const 0))
  (global $bad (mut i32) (i32.const 0))
  (global $last (mut i64) (i64.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {inbox}))
  (func (export "handle") (param $len i32) (result i32) (local $r i64)
    {body}))"#
    )
}

fn status(report: &RunReport, name: &str) -> ExitStatus {
    report
        .process(name)
        .unwrap_or_else(|| panic!("{name} ran:\n{}", describe(report)))
        .status
        .clone()
}

// ---------------------------------------------------------------------------
// Direct delivery to a kept handler vs. a message of the same stream that
// went through the mailbox.
//
// Failed before the fix (these two tests and the randomized one below on
// every run; `streams_mixing_paths_with_ack_requests_stay_in_order` under
// load): a handler `b` kept claimed by direct delivery whose call did a
// `receive` with timeout 0 that found nothing had ended the wait it was
// parked in, so the sender's next message that goes through the mailbox
// (ACK_REQUESTED, or a broadcast copy) was queued without waking it, and
// `KernelLoop::may_keep`, which looked only at the task state, let the
// sender's following plain send be delivered directly, ahead of it: b
// took 1, 3, 2, its header sequences going backwards. `may_keep` now also
// requires the kept receiver's mailbox to be empty.

/// `b`: counts the messages of type 0x1001 it is called with, appending
/// the payload's first byte to `$order` (decimal digits) and checking
/// their sequences rise; in its first such call it looks in its mailbox
/// with `receive` (a type no one sends, timeout 0), which ends the wait
/// it is parked in. After three it ends with `$order` as its exit code
/// (123 when in order), plus 9000 if a header sequence went backwards.
fn order_checker(look: bool) -> String {
    let look = if look {
        "(if (i32.eqz (global.get $count))
           (then (drop (call $receive (i32.const 0x7777) (i64.const 0)
                          (i32.const 2048) (i32.const 2200) (i32.const 64)))))"
    } else {
        ""
    };
    handler(
        "",
        &format!(
            "(if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
             {look}
             (if (i64.le_u (i64.load (i32.const 1048)) (global.get $last))
               (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
             (global.set $last (i64.load (i32.const 1048)))
             (global.set $order (i32.add (i32.mul (global.get $order) (i32.const 10))
                                         (i32.load8_u (i32.const 1080))))
             (global.set $count (i32.add (global.get $count) (i32.const 1)))
             (if (i32.eq (global.get $count) (i32.const 3))
               (then (if (global.get $bad)
                       (then (return (i32.add (i32.const 9000) (global.get $order)))))
                     (return (global.get $order))))
             (i32.const 0)"
        ),
    )
}

/// `a`: at STARTED sends `b` three type-0x1001 messages with payload bytes
/// 1, 2, 3 in one call; the second is sent by `middle` (WAT instructions
/// leaving nothing; payload at offset 2).
fn three_sender(middle: &str) -> String {
    handler(
        r#"(data (i32.const 0) "b") (data (i32.const 1) "\01\02\03")"#,
        &format!(
            "(if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
             (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
             (drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 1) (i32.const 1)))
             {middle}
             (drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const 3) (i32.const 1)))
             (i32.const 0)"
        ),
    )
}

fn run_three(middle: &str, look: bool) {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers, look {look}");
        let mut k = kernel(deterministic, workers);
        load(&mut k, "b", "handle", &order_checker(look), "");
        load(&mut k, "a", "handle", &three_sender(middle), "");
        k.spawn("b").unwrap();
        k.spawn("a").unwrap();
        let report = k.run();
        assert_eq!(
            status(&report, "b"),
            ExitStatus::Exited(123),
            "{what}: b took a's messages out of order (exit code = payload order):\n{}",
            describe(&report)
        );
    }
}

#[test]
fn a_direct_delivery_never_overtakes_an_ack_requested_message_in_the_mailbox() {
    // ARCHITECTURE invariant 5: "Delivery is highest priority first among
    // the messages waiting together, FIFO within (source, target,
    // priority); a direct delivery is a message taken as it arrives."
    // ABI "Direct delivery": "A message asking for an acknowledgement ...
    // [goes] through the mailbox", and "several sends of one call to a
    // receiver that is idle again after each are handled in the order
    // sent". Message 2 (ACK_REQUESTED, same priority) is queued in b's
    // mailbox; message 3 must not be handed to b before it.
    let ack = "(drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0x200) (i32.const 2) (i32.const 1)))";
    run_three(ack, false);
    run_three(ack, true);
}

#[test]
fn a_direct_delivery_never_overtakes_a_broadcast_copy_in_the_mailbox() {
    // Same invariant; a broadcast copy is a message of the same sender to
    // the same target at the same priority, queued in the mailbox
    // (broadcast never delivers directly).
    let bcast =
        "(drop (call $broadcast (i32.const 0x1001) (i32.const 0) (i32.const 2) (i32.const 1)))";
    run_three(bcast, false);
    run_three(bcast, true);
}

// ---------------------------------------------------------------------------
// A randomized stream of one handler's sends to another, each a plain send
// (direct when the receiver is idle), an ACK_REQUESTED send or a broadcast
// (both through the mailbox), all at priority 0.

/// `a` sends, in its STARTED call, one message per entry of `kinds` (0
/// plain, 1 ack requested, 2 broadcast), payload byte = its position + 1.
fn stream_sender(kinds: &[u8]) -> String {
    let mut body = String::new();
    for (i, kind) in kinds.iter().enumerate() {
        let at = 16 + i;
        body.push_str(&format!(
            "(i32.store8 (i32.const {at}) (i32.const {}))\n",
            i + 1
        ));
        body.push_str(&match kind {
            0 => format!("(drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0) (i32.const {at}) (i32.const 1)))\n"),
            1 => format!("(drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const 0x200) (i32.const {at}) (i32.const 1)))\n"),
            _ => format!("(drop (call $broadcast (i32.const 0x1001) (i32.const 0) (i32.const {at}) (i32.const 1)))\n"),
        });
    }
    handler(
        r#"(data (i32.const 0) "b")"#,
        &format!(
            "(if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
             (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
             {body}
             (i32.const 0)"
        ),
    )
}

/// `b` expects `n` messages of type 0x1001 with payload bytes 1..=n in
/// that order; it ends with 77 if they came so, else 500 + the number of
/// out-of-order ones. With `look`, each call first looks for a type no one
/// sends (`receive`, timeout 0).
fn stream_checker(n: usize, look: bool) -> String {
    let look = if look {
        "(drop (call $receive (i32.const 0x7777) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)))"
    } else {
        ""
    };
    handler(
        "",
        &format!(
            "(if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
             {look}
             (global.set $count (i32.add (global.get $count) (i32.const 1)))
             (if (i32.ne (i32.load8_u (i32.const 1080)) (global.get $count))
               (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
             (if (i32.eq (global.get $count) (i32.const {n}))
               (then (if (global.get $bad)
                       (then (return (i32.add (i32.const 500) (global.get $bad)))))
                     (return (i32.const 77))))
             (i32.const 0)"
        ),
    )
}

/// A small xorshift generator: randomized cases without a dependency the
/// tests crate does not have (proptest is a dev-dependency of the kernel
/// only; adding it here would change the workspace's lock file).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn one_handlers_randomized_stream_to_another_is_taken_in_the_order_sent() {
    // ARCHITECTURE invariant 5: "FIFO within (source, target, priority);
    // a direct delivery is a message taken as it arrives." 24 random
    // streams of plain, ACK_REQUESTED and broadcast messages (priority 0),
    // the receiver looking in its mailbox in each call or not, on one
    // worker (deterministic) and two. Failing cases are collected and
    // reported together.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    for case in 0..24 {
        let n = 2 + rng.below(8) as usize;
        let kinds: Vec<u8> = (0..n).map(|_| rng.below(3) as u8).collect();
        let look = rng.below(2) == 1;
        let workers = 1 + (case % 2);
        let mut k = kernel(workers == 1, workers);
        load(
            &mut k,
            "b",
            "handle",
            &stream_checker(kinds.len(), look),
            "",
        );
        load(&mut k, "a", "handle", &stream_sender(&kinds), "");
        k.spawn("b").unwrap();
        k.spawn("a").unwrap();
        let report = k.run();
        let got = status(&report, "b");
        if got != ExitStatus::Exited(77) {
            failures.push(format!(
                "kinds {kinds:?} (0 plain, 1 ack, 2 broadcast) look {look} workers {workers}: b {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "out of order:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Two handler senders driven by a ticker, a receiver that answers each
// message, and spinners changing the load: every path (direct delivery,
// mailbox, the answer held for the lender) mixes within each stream.

const TICKS: u32 = 60;
const PER_TICK: u32 = 4;

fn mixing_ticker() -> String {
    let send_retry = |at: u32| {
        format!(
            "(block $ok (loop $again
               (local.set $r (call $send (local.get $p{at}) (i32.const 0x2001) (i32.const 0) (i32.const 0) (i32.const 0)))
               (br_if $ok (i64.ne (local.get $r) (i64.const {full})))
               (drop (call $yield)) (br $again)))",
            full = neg(ErrorCode::MAILBOX_FULL)
        )
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "a1a2")
  (func (export "run") (result i32) (local $p1 i64) (local $p2 i64) (local $i i32) (local $r i64)
    (local.set $p1 (call $lookup (i32.const 0) (i32.const 2)))
    (local.set $p2 (call $lookup (i32.const 2) (i32.const 2)))
    (loop $l
      {s1}
      {s2}
      (if (i32.eqz (i32.and (local.get $i) (i32.const 3))) (then (drop (call $yield))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {TICKS}))))
    (i32.const 0)))"#,
        s1 = send_retry(1),
        s2 = send_retry(2),
    )
}

/// A sender: each tick sends `b` PER_TICK numbered messages (every third
/// one asking for an ack if `ack`); checks `b`'s answers come numbered
/// 1, 2, 3, …; exits 0 after the last, or returns 100 + faults.
fn mixing_sender(ack: bool) -> String {
    let options = if ack {
        "(select (i32.const 0x200) (i32.const 0) (i32.eqz (i32.rem_u (global.get $count) (i32.const 3))))"
    } else {
        "(i32.const 0)"
    };
    let total = TICKS * PER_TICK;
    handler(
        r#"(data (i32.const 0) "b")"#,
        &format!(
            "(local $i i32)
             (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
               (then (global.set $peer (call $lookup (i32.const 0) (i32.const 1))) (return (i32.const 0))))
             (if (i32.and (i32.load16_u (i32.const 1026)) (i32.const 16))
               (then (global.set $bad (i32.add (global.get $bad) (i32.const 1))) (return (i32.const 0))))
             (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x2001))
               (then
                 (loop $more
                   (global.set $count (i32.add (global.get $count) (i32.const 1)))
                   (i32.store (i32.const 16) (global.get $count))
                   (local.set $r (call $send (global.get $peer) (i32.const 0x1001) {options} (i32.const 16) (i32.const 4)))
                   (if (i64.lt_s (local.get $r) (i64.const 0))
                     (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $more (i32.lt_u (local.get $i) (i32.const {PER_TICK}))))
                 (return (i32.const 0))))
             (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1002))
               (then
                 (if (i32.ne (i32.load (i32.const 1080)) (i32.add (global.get $order) (i32.const 1)))
                   (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
                 (global.set $order (i32.load (i32.const 1080)))
                 (if (i32.eq (global.get $order) (i32.const {total}))
                   (then (if (global.get $bad) (then (return (i32.add (i32.const 100) (global.get $bad)))))
                         (call $exit (i32.const 0))))))
             (i32.const 0)"
        ),
    )
}

/// The receiver: checks each source's messages come numbered 1, 2, 3, …
/// and answers each with its own count for that source; with `look`, each
/// call first looks for a type no one sends. Exits 0 after all, or
/// returns 100 + faults.
fn mixing_receiver(look: bool) -> String {
    let look = if look {
        "(drop (call $receive (i32.const 0x7777) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)))"
    } else {
        ""
    };
    let total = 2 * TICKS * PER_TICK;
    handler(
        "",
        &format!(
            "(local $slot i32)
             (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
             {look}
             (local.set $slot (i32.add (i32.const 4096)
               (i32.shl (i32.and (i32.load (i32.const 1032)) (i32.const 255)) (i32.const 2))))
             (if (i32.ne (i32.load (i32.const 1080)) (i32.add (i32.load (local.get $slot)) (i32.const 1)))
               (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
             (i32.store (local.get $slot) (i32.load (i32.const 1080)))
             (i32.store (i32.add (local.get $slot) (i32.const 1024))
               (i32.add (i32.load (i32.add (local.get $slot) (i32.const 1024))) (i32.const 1)))
             (i32.store (i32.const 16) (i32.load (i32.add (local.get $slot) (i32.const 1024))))
             (local.set $r (call $send (i64.load (i32.const 1032)) (i32.const 0x1002) (i32.const 0) (i32.const 16) (i32.const 4)))
             (if (i64.lt_s (local.get $r) (i64.const 0))
               (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
             (global.set $count (i32.add (global.get $count) (i32.const 1)))
             (if (i32.eq (global.get $count) (i32.const {total}))
               (then (if (global.get $bad) (then (return (i32.add (i32.const 100) (global.get $bad)))))
                     (call $exit (i32.const 0))))
             (i32.const 0)"
        ),
    )
}

fn spinner(yields: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop $l
      (drop (call $yield))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {yields}))))
    (i32.const 0)))"#
    )
}

fn run_mixing(
    deterministic: bool,
    workers: usize,
    ack: bool,
    look: bool,
    spinners: usize,
) -> RunReport {
    let mut k = kernel(deterministic, workers);
    let big = mailbox(4096, "notify_sender");
    load(&mut k, "b", "handle", &mixing_receiver(look), &big);
    load(&mut k, "a1", "handle", &mixing_sender(ack), &big);
    load(&mut k, "a2", "handle", &mixing_sender(ack), &big);
    load(&mut k, "t", "run", &mixing_ticker(), "");
    for n in 0..spinners {
        load(
            &mut k,
            &format!("spin{n}"),
            "run",
            &spinner(300 + 200 * n as u32),
            "",
        );
    }
    k.spawn("b").unwrap();
    k.spawn("a1").unwrap();
    k.spawn("a2").unwrap();
    k.spawn("t").unwrap();
    for n in 0..spinners {
        k.spawn(&format!("spin{n}")).unwrap();
    }
    k.run()
}

#[test]
fn streams_mixing_direct_delivery_mailbox_and_held_answers_stay_in_order() {
    // ARCHITECTURE invariant 5 ("FIFO within (source, target, priority)")
    // for two handler streams into one handler and its answers back,
    // with plain sends only: each message goes direct or through the
    // mailbox as the load (spinners, the ticker) allows.
    let mut failures = Vec::new();
    for round in 0..4 {
        for (deterministic, workers) in RUNS {
            let report = run_mixing(deterministic, workers, false, round % 2 == 1, 2);
            for name in ["b", "a1", "a2", "t"] {
                if status(&report, name) != ExitStatus::Exited(0) {
                    failures.push(format!(
                        "round {round} det {deterministic} workers {workers}: {name} {}\n{}",
                        status(&report, name),
                        describe(&report)
                    ));
                }
            }
            let total = u64::from(TICKS * PER_TICK);
            let b = report.process("b").unwrap();
            for name in ["a1", "a2"] {
                let a = report.process(name).unwrap();
                assert_eq!(a.sent, total, "{name}: {}", describe(&report));
                assert_eq!(
                    a.send_failures + a.delivery_failures,
                    0,
                    "{name}: {}",
                    describe(&report)
                );
            }
            assert_eq!(b.sent, 2 * total, "{}", describe(&report));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn streams_mixing_paths_with_ack_requests_stay_in_order() {
    // As above, every third message asking for an acknowledgement (so it
    // goes through the mailbox), the receiver looking into its mailbox in
    // each call (as a handler draining extra mail with timeout 0 would).
    let mut failures = Vec::new();
    for round in 0..3 {
        for (deterministic, workers) in RUNS {
            let report = run_mixing(deterministic, workers, true, true, round);
            for name in ["b", "a1", "a2"] {
                if status(&report, name) != ExitStatus::Exited(0) {
                    failures.push(format!(
                        "round {round} det {deterministic} workers {workers}: {name} {}",
                        status(&report, name)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// A stream to a process that traps and is restarted mid-stream.

const STREAM: u32 = 300;
const TRAP_AT: u32 = 50;

/// `r`: takes type-0x1001 messages (payload: a u32 number); traps on
/// number TRAP_AT; after 200 ms with nothing ends with count × 1000 +
/// first number, or 999999 if the numbers were not consecutive.
fn stream_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $r i64) (local $count i32) (local $first i32) (local $last i32) (local $bad i32) (local $v i32)
    (block $quiet (loop $l
      (local.set $r (call $receive (i32.const 0x1001) (i64.const 200) (i32.const 0) (i32.const 64) (i32.const 64)))
      (br_if $quiet (i64.lt_s (local.get $r) (i64.const 0)))
      (local.set $v (i32.load (i32.const 64)))
      (if (i32.eqz (local.get $count))
        (then (local.set $first (local.get $v)))
        (else (if (i32.ne (local.get $v) (i32.add (local.get $last) (i32.const 1)))
                (then (local.set $bad (i32.const 1))))))
      (local.set $last (local.get $v))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (if (i32.eq (local.get $v) (i32.const {TRAP_AT})) (then unreachable))
      (br $l)))
    (if (local.get $bad) (then (return (i32.const 999999))))
    (i32.add (i32.mul (local.get $count) (i32.const 1000)) (local.get $first))))"#
    )
}

/// `s`: looks `r` up once and sends it STREAM numbered messages (yielding
/// every 4); then takes notices until 300 ms pass with none. Ends with
/// ok sends × 1000 + NO_SUCH_PROCESS notices, or -1 for anything else
/// (another failure code, another notice code).
fn stream_sender_task() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "r")
  (func (export "run") (result i32)
    (local $p i64) (local $i i32) (local $ok i32) (local $other i32) (local $notices i32) (local $r i64)
    (local.set $p (call $lookup (i32.const 0) (i32.const 1)))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (i32.store (i32.const 64) (local.get $i))
      (local.set $r (call $send (local.get $p) (i32.const 0x1001) (i32.const 0) (i32.const 64) (i32.const 4)))
      (if (i64.ge_s (local.get $r) (i64.const 0))
        (then (local.set $ok (i32.add (local.get $ok) (i32.const 1))))
        (else (if (i64.ne (local.get $r) (i64.const {nsp}))
                (then (local.set $other (i32.add (local.get $other) (i32.const 1)))))))
      (if (i32.eqz (i32.and (local.get $i) (i32.const 3))) (then (drop (call $yield))))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {STREAM}))))
    (block $done (loop $d
      (local.set $r (call $receive (i32.const 0) (i64.const 300) (i32.const 128) (i32.const 256) (i32.const 64)))
      (br_if $done (i64.eq (local.get $r) (i64.const {timeout})))
      (if (i32.and (i32.load16_u (i32.const 130)) (i32.const 16))
        (then (if (i64.eq (local.get $r) (i64.const {nsp}))
                (then (local.set $notices (i32.add (local.get $notices) (i32.const 1))))
                (else (local.set $other (i32.add (local.get $other) (i32.const 1))))))
        (else (local.set $other (i32.add (local.get $other) (i32.const 1)))))
      (br $d)))
    (if (local.get $other) (then (return (i32.const -1))))
    (i32.add (i32.mul (local.get $ok) (i32.const 1000)) (local.get $notices))))"#,
        nsp = neg(ErrorCode::NO_SUCH_PROCESS),
        timeout = neg(ErrorCode::TIMEOUT),
    )
}

fn run_restart_stream(
    deterministic: bool,
    workers: usize,
    action: estalogic_kernel::core::supervision::RestartAction,
) -> (RunReport, estalogic_abi::Pid) {
    let mut k = kernel(deterministic, workers);
    k.set_restart_policy(estalogic_tests::Script::boxed(&[action]));
    load(
        &mut k,
        "r",
        "run",
        &stream_receiver(),
        &format!(
            r#""restart":"on_failure",{}"#,
            mailbox(1024, "notify_sender")
        ),
    );
    load(
        &mut k,
        "s",
        "run",
        &stream_sender_task(),
        &mailbox(1024, "notify_sender"),
    );
    let r1 = k.spawn("r").unwrap();
    k.spawn("s").unwrap();
    (k.run(), r1)
}

fn exit_code(report: &RunReport, pid: Option<estalogic_abi::Pid>, name: &str) -> i32 {
    let p = report
        .processes
        .iter()
        .find(|p| p.module == name && pid.is_none_or(|pid| p.pid == pid))
        .unwrap_or_else(|| panic!("{name} ran:\n{}", describe(report)));
    match p.status {
        ExitStatus::Exited(code) => code,
        ref other => panic!("{name} ended {other}:\n{}", describe(report)),
    }
}

#[test]
fn a_stream_to_a_clean_restarted_receiver_reaches_only_the_old_pid_and_the_rest_fails_back() {
    // ARCHITECTURE invariant 4: "an old pid never reaches a new process";
    // 5: "mail left is failed back to the senders"; invariant 5: "every
    // dropped or undeliverable message is reported to its sender with a
    // DELIVERY_FAILURE notice and counted".
    use estalogic_kernel::core::supervision::RestartAction;
    for round in 0..3 {
        for (deterministic, workers) in RUNS {
            let what = format!("round {round} det {deterministic} workers {workers}");
            let (report, r1) =
                run_restart_stream(deterministic, workers, RestartAction::RestartCleanState);
            let old = report
                .processes
                .iter()
                .find(|p| p.pid == r1)
                .expect("old r reported");
            assert!(
                matches!(old.status, ExitStatus::Trapped { .. }),
                "{what}: {}",
                describe(&report)
            );
            assert_eq!(
                old.received,
                u64::from(TRAP_AT),
                "{what}: {}",
                describe(&report)
            );
            let new = report
                .processes
                .iter()
                .find(|p| p.module == "r" && p.pid != r1)
                .unwrap_or_else(|| panic!("{what}: r restarted:\n{}", describe(&report)));
            assert_eq!(
                exit_code(&report, Some(new.pid), "r"),
                0,
                "{what}: the new r got mail sent to the old pid:\n{}",
                describe(&report)
            );
            let code = exit_code(&report, None, "s");
            assert!(
                code >= 0,
                "{what}: s saw an unexpected code or notice:\n{}",
                describe(&report)
            );
            let (ok, notices) = ((code / 1000) as u64, (code % 1000) as u64);
            let s = report.process("s").unwrap();
            assert_eq!(s.sent, ok, "{what}: {}", describe(&report));
            assert_eq!(
                s.send_failures,
                u64::from(STREAM) - ok,
                "{what}: {}",
                describe(&report)
            );
            assert_eq!(
                s.delivery_failures,
                notices,
                "{what}: {}",
                describe(&report)
            );
            assert_eq!(
                ok,
                old.received + notices,
                "{what}: every message sent was taken by the old r or failed back:\n{}",
                describe(&report)
            );
            assert_eq!(old.undelivered, notices, "{what}: {}", describe(&report));
        }
    }
}

#[test]
fn a_stream_to_a_same_state_restarted_receiver_continues_in_order_with_nothing_lost() {
    // ARCHITECTURE 5: "a same-state restart's mail queued before it can be
    // found"; RestartSameState: "its mail queued in the new mailbox";
    // invariant 5: FIFO per (source, target, priority), nothing lost
    // silently. The new r must take numbers TRAP_AT+1 .. (last sent) in
    // order; sends to the old pid after the move fail NO_SUCH_PROCESS.
    use estalogic_kernel::core::supervision::RestartAction;
    for round in 0..3 {
        for (deterministic, workers) in RUNS {
            let what = format!("round {round} det {deterministic} workers {workers}");
            let (report, r1) =
                run_restart_stream(deterministic, workers, RestartAction::RestartSameState);
            let old = report
                .processes
                .iter()
                .find(|p| p.pid == r1)
                .expect("old r reported");
            assert!(
                matches!(old.status, ExitStatus::Trapped { .. }),
                "{what}: {}",
                describe(&report)
            );
            assert_eq!(
                old.received,
                u64::from(TRAP_AT),
                "{what}: {}",
                describe(&report)
            );
            let new = report
                .processes
                .iter()
                .find(|p| p.module == "r" && p.pid != r1)
                .unwrap_or_else(|| panic!("{what}: r restarted:\n{}", describe(&report)));
            let r2 = exit_code(&report, Some(new.pid), "r");
            assert_ne!(
                r2, 999999,
                "{what}: the new r took the moved mail out of order"
            );
            let (count, first) = ((r2 / 1000) as u64, (r2 % 1000) as u32);
            let code = exit_code(&report, None, "s");
            assert!(
                code >= 0,
                "{what}: s saw an unexpected code or notice:\n{}",
                describe(&report)
            );
            let (ok, notices) = ((code / 1000) as u64, (code % 1000) as u64);
            assert_eq!(
                notices,
                0,
                "{what}: moved mail is not failed back:\n{}",
                describe(&report)
            );
            assert_eq!(
                u64::from(TRAP_AT) + count,
                ok,
                "{what}: every message sent to the old pid is taken by one incarnation:\n{}",
                describe(&report)
            );
            if count > 0 {
                assert_eq!(
                    first,
                    TRAP_AT + 1,
                    "{what}: the new r starts where the old stopped"
                );
            }
            let s = report.process("s").unwrap();
            assert_eq!(
                (s.sent, s.delivery_failures),
                (ok, 0),
                "{what}: {}",
                describe(&report)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Header sequence numbers and timestamps along one sender's stream.

const HEADER_STREAM: u32 = 400;

/// `h`: takes HEADER_STREAM type-0x1001 messages; checks payload numbers
/// consecutive, header sequences rising, timestamps never going back.
/// Ends 0, or 1000 × (number faults) + 100 × (sequence faults) + (time
/// faults), capped per kind at 9.
fn header_checker() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $r i64) (local $i i32) (local $seq i64) (local $ts i64) (local $num i32) (local $ts_bad i32)
    (local $seq_bad i32) (local $num_bad i32)
    (loop $l
      (local.set $r (call $receive (i32.const 0x1001) (i64.const 2000) (i32.const 0) (i32.const 64) (i32.const 64)))
      (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const 99999))))
      (if (i32.ne (i32.load (i32.const 64)) (i32.add (local.get $num) (i32.const 1)))
        (then (local.set $num_bad (i32.add (local.get $num_bad) (i32.const 1)))))
      (local.set $num (i32.load (i32.const 64)))
      (if (i64.le_u (i64.load (i32.const 24)) (local.get $seq))
        (then (local.set $seq_bad (i32.add (local.get $seq_bad) (i32.const 1)))))
      (local.set $seq (i64.load (i32.const 24)))
      (if (i64.lt_u (i64.load (i32.const 32)) (local.get $ts))
        (then (local.set $ts_bad (i32.add (local.get $ts_bad) (i32.const 1)))))
      (local.set $ts (i64.load (i32.const 32)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {HEADER_STREAM}))))
    (i32.add (i32.add
      (i32.mul (select (i32.const 9) (local.get $num_bad) (i32.gt_u (local.get $num_bad) (i32.const 9))) (i32.const 1000))
      (i32.mul (select (i32.const 9) (local.get $seq_bad) (i32.gt_u (local.get $seq_bad) (i32.const 9))) (i32.const 100)))
      (select (i32.const 9) (local.get $ts_bad) (i32.gt_u (local.get $ts_bad) (i32.const 9))))))"#
    )
}

/// `g`: sends `h` HEADER_STREAM numbered messages, alternating `send` and
/// `broadcast` (and a failed send to a dead pid every 10, which takes a
/// sequence number or not), yielding every 3. Ends 0, or 1 if a send or
/// broadcast was refused.
fn header_sender() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "h")
  (func (export "run") (result i32) (local $p i64) (local $i i32) (local $r i64) (local $bad i32)
    (local.set $p (call $lookup (i32.const 0) (i32.const 1)))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (i32.store (i32.const 64) (local.get $i))
      (if (i32.and (local.get $i) (i32.const 1))
        (then (local.set $r (call $send (local.get $p) (i32.const 0x1001) (i32.const 0) (i32.const 64) (i32.const 4))))
        (else (local.set $r (call $broadcast (i32.const 0x1001) (i32.const 0) (i32.const 64) (i32.const 4)))
              (if (i64.lt_s (local.get $r) (i64.const 1)) (then (local.set $r (i64.const -1))))))
      (if (i64.lt_s (local.get $r) (i64.const 0)) (then (local.set $bad (i32.const 1))))
      (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 10)))
        (then (drop (call $send (i64.const 0x0000000700000063) (i32.const 0x1001) (i32.const 0) (i32.const 64) (i32.const 4)))))
      (if (i32.eqz (i32.rem_u (local.get $i) (i32.const 3))) (then (drop (call $yield))))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {HEADER_STREAM}))))
    (local.get $bad)))"#
    )
}

#[test]
fn one_senders_stream_mixing_send_and_broadcast_has_rising_sequences_and_timestamps() {
    // ABI header: "sequence (per sender, from 1 ...)", "timestamp, kernel
    // clock ns"; invariant 5: FIFO within (source, target, priority), for
    // a broadcast's copy as for a send. Two workers and spinners, so the
    // sender moves between workers.
    for round in 0..3 {
        for (deterministic, workers) in RUNS {
            let what = format!("round {round} det {deterministic} workers {workers}");
            let mut k = kernel(deterministic, workers);
            load(
                &mut k,
                "h",
                "run",
                &header_checker(),
                &mailbox(4096, "notify_sender"),
            );
            load(&mut k, "g", "run", &header_sender(), "");
            for n in 0..2 {
                load(&mut k, &format!("spin{n}"), "run", &spinner(400), "");
            }
            k.spawn("h").unwrap();
            k.spawn("g").unwrap();
            k.spawn("spin0").unwrap();
            k.spawn("spin1").unwrap();
            let report = k.run();
            assert_eq!(
                exit_code(&report, None, "g"),
                0,
                "{what}:\n{}",
                describe(&report)
            );
            assert_eq!(
                exit_code(&report, None, "h"),
                0,
                "{what}: (1000 x number, 100 x sequence, 1 x timestamp faults)\n{}",
                describe(&report)
            );
            let h = report.process("h").unwrap();
            let g = report.process("g").unwrap();
            assert_eq!(
                h.received,
                u64::from(HEADER_STREAM),
                "{what}: {}",
                describe(&report)
            );
            // Each broadcast's copy to h counts, and so do those the
            // spinners' mailboxes took.
            assert!(
                g.sent >= u64::from(HEADER_STREAM),
                "{what}: {}",
                describe(&report)
            );
            assert_eq!(
                g.send_failures,
                u64::from(HEADER_STREAM / 10),
                "{what}: {}",
                describe(&report)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Many broadcasters at once into small mailboxes of every mode.

const BCASTS: u32 = 40;

/// A broadcaster: BCASTS broadcasts, yielding after each, then 20,000
/// yields more; ends with the sum of what they returned (copies
/// accepted), or -1 on an error.
fn broadcaster() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32) (local $r i64) (local $sum i32)
    (loop $l
      (local.set $r (call $broadcast (i32.const 0x1001) (i32.const 0) (i32.const 0) (i32.const 4)))
      (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.const -1))))
      (local.set $sum (i32.add (local.get $sum) (i32.wrap_i64 (local.get $r))))
      (drop (call $yield))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {BCASTS}))))
    ;; Linger, so that a copy evicted after this process's last broadcast
    ;; still has a sender to tell ("a sender whose mailbox has closed ...
    ;; has no one left to tell", routing.rs).
    (local.set $i (i32.const 0))
    (loop $linger
      (drop (call $yield))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $linger (i32.lt_u (local.get $i) (i32.const 20000))))
    (local.get $sum)))"#
    )
}

/// A receiver: takes type-0x1001 messages as they come, pausing 1 ms
/// after each, until 150 ms pass with none; ends with how many it took.
fn slow_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $n i32)
    (block $quiet (loop $l
      (br_if $quiet (i64.lt_s
        (call $receive (i32.const 0x1001) (i64.const 150) (i32.const 0) (i32.const 64) (i32.const 64))
        (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (drop (call $receive (i32.const 0x7777) (i64.const 1) (i32.const 0) (i32.const 64) (i32.const 64)))
      (br $l)))
    (local.get $n)))"#
    )
}

#[test]
fn concurrent_broadcasts_into_small_mailboxes_add_up_in_every_mode() {
    // ABI 12: broadcast "returns how many mailboxes accepted one. A
    // mailbox that is full refuses its copy (a drop_newest one too; a
    // drop_oldest one makes room): a refused copy is neither counted nor
    // reported". Invariant 5: every message dropped is reported to its
    // sender and counted. So: what the broadcasters were told was accepted
    // = what the receivers took + what drop_oldest evicted, and each
    // eviction is one delivery failure of a broadcaster.
    let modes = estalogic_tests::OVERFLOW_MODES;
    for round in 0..2 {
        for (deterministic, workers) in RUNS {
            let what = format!("round {round} det {deterministic} workers {workers}");
            let mut k = kernel(deterministic, workers);
            for mode in modes {
                load(
                    &mut k,
                    &format!("r_{mode}"),
                    "run",
                    &slow_receiver(),
                    &mailbox(3, mode),
                );
            }
            for n in 0..3 {
                // No messaging:receive: no copies of the others' broadcasts.
                estalogic_tests::load_entry(
                    &mut k,
                    &format!("b{n}"),
                    "run",
                    &broadcaster(),
                    &["messaging:broadcast"],
                    "",
                );
            }
            k.spawn_all().unwrap();
            let report = k.run();
            let (mut accepted, mut sent, mut failures) = (0u64, 0u64, 0u64);
            for n in 0..3 {
                let name = format!("b{n}");
                let code = exit_code(&report, None, &name);
                assert!(code >= 0, "{what}: {name} failed:\n{}", describe(&report));
                let p = report.process(&name).unwrap();
                assert_eq!(
                    p.sent,
                    code as u64,
                    "{what}: {name}: sent vs accepted:\n{}",
                    describe(&report)
                );
                accepted += code as u64;
                sent += p.sent;
                failures += p.delivery_failures;
            }
            let (mut taken, mut undelivered) = (0u64, 0u64);
            for mode in modes {
                let name = format!("r_{mode}");
                let code = exit_code(&report, None, &name) as u64;
                let p = report.process(&name).unwrap();
                assert_eq!(p.received, code, "{what}: {name}:\n{}", describe(&report));
                if mode != "drop_oldest" {
                    assert_eq!(
                        p.undelivered,
                        0,
                        "{what}: {name} counted a refused copy:\n{}",
                        describe(&report)
                    );
                }
                taken += code;
                undelivered += p.undelivered;
            }
            assert_eq!(sent, accepted, "{what}");
            assert_eq!(
                accepted,
                taken + undelivered,
                "{what}: copies accepted = taken + evicted:\n{}",
                describe(&report)
            );
            assert_eq!(
                failures,
                undelivered,
                "{what}: each eviction reported:\n{}",
                describe(&report)
            );
        }
    }
}
