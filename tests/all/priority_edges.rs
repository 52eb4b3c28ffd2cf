//! Message priorities (0–7) on every delivery path, and process levels
//! around them (the thirty-third probe round): the mailbox, the direct
//! handoff between tasks, direct delivery between handlers (and the kept
//! receiver), answers held for a lender, acknowledgements, kernel notices,
//! broadcasts, overflow modes and mail inherited by a same-state restart.
//! Each case asserts what docs/ABI.md or ARCHITECTURE.md promise (the line
//! relied on is quoted).
//!
//! ARCHITECTURE invariant 5: "Delivery is highest priority first among the
//! messages waiting together, FIFO within (source, target, priority); a
//! direct delivery is a message taken as it arrives."
//!
//! The receivers check what they take with one WAT function (`$check`,
//! see [`checker`]): each message's payload byte is its id (1..=n, in the
//! order its sender sent it); a table gives each id's priority. Checked:
//! the header's priority is the one sent with; no message is taken while
//! an earlier one of the same sender with the same or a higher priority
//! has not been taken yet ("weak": a later message overtakes an earlier
//! one only with a strictly higher priority, and only if both waited
//! together); and, where the run is deterministic enough to say, the exact
//! order a model of the documented paths predicts.
//!
//! Exit codes of a checker: 77 all good; 700 + n header priorities wrong;
//! 500 + n overtakings; 10000 + 100 × (position + 1) + id for the first
//! take that differs from the exact order expected.

use estalogic_abi::ErrorCode;
use estalogic_kernel::core::supervision::RestartAction;
use estalogic_kernel::{ExitStatus, Kernel, RunReport};
use estalogic_tests::{Script, describe, kernel, mailbox, neg};

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

fn load_at(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, level: &str, extra: &str) {
    let extra = if extra.is_empty() {
        format!(r#""priority":"{level}""#)
    } else {
        format!(r#""priority":"{level}",{extra}"#)
    };
    estalogic_tests::load_entry(kernel, name, entry, wat, CAPS, &extra);
}

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "exit" (func $exit (param i32)))
"#;

/// Handler inbox: header at 1024, payload at 1080, 256 bytes.
const INBOX: u64 = (256u64 << 32) | 1024;

/// A small xorshift generator (the tests crate has no proptest).
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

/// `bytes` as a WAT string literal body.
fn lit(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// What a checker knows: each id's priority (`prio[id - 1]`), the exact
/// order expected (ids) if any, whether to check overtaking, how many
/// takes end it.
struct Expect {
    prio: Vec<u8>,
    exact: Option<Vec<u8>>,
    weak: bool,
    takes: usize,
}

/// Data segments and the `$check (hdr, payload) -> i32` function (0 to go
/// on; the exit code once `takes` messages were checked). Uses memory
/// 500..1024 and 4096..4352, 5000..5256; globals of its own.
fn checker(e: &Expect) -> String {
    let mut table = vec![0u8];
    table.extend(&e.prio);
    let exact = e.exact.clone().unwrap_or_default();
    format!(
        r#"
  (data (i32.const 500) "{flags}")
  (data (i32.const 512) "{table}")
  (data (i32.const 768) "{exact}")
  (global $ck_count (mut i32) (i32.const 0))
  (global $ck_weak (mut i32) (i32.const 0))
  (global $ck_prio (mut i32) (i32.const 0))
  (global $ck_first (mut i32) (i32.const 0))
  (func $check (param $hdr i32) (param $pl i32) (result i32) (local $id i32) (local $y i32) (local $p i32)
    (local.set $id (i32.load8_u (local.get $pl)))
    (local.set $p (i32.load8_u (i32.add (i32.const 512) (local.get $id))))
    (if (i32.ne (i32.load8_u (i32.add (local.get $hdr) (i32.const 1))) (local.get $p))
      (then (global.set $ck_prio (i32.add (global.get $ck_prio) (i32.const 1)))))
    (if (i32.load8_u (i32.const 501))
      (then
        (if (i32.load8_u (i32.add (i32.const 4096) (local.get $id)))
          (then (global.set $ck_weak (i32.add (global.get $ck_weak) (i32.const 1)))))
        (local.set $y (i32.const 1))
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $y) (local.get $id)))
          (if (i32.eqz (i32.load8_u (i32.add (i32.const 4096) (local.get $y))))
            (then (if (i32.ge_u (i32.load8_u (i32.add (i32.const 512) (local.get $y))) (local.get $p))
              (then (global.set $ck_weak (i32.add (global.get $ck_weak) (i32.const 1)))))))
          (local.set $y (i32.add (local.get $y) (i32.const 1)))
          (br $l)))))
    (i32.store8 (i32.add (i32.const 4096) (local.get $id)) (i32.const 1))
    (if (i32.load8_u (i32.const 500))
      (then (if (i32.and (i32.eqz (global.get $ck_first))
                         (i32.ne (i32.load8_u (i32.add (i32.const 768) (global.get $ck_count))) (local.get $id)))
        (then (global.set $ck_first
                (i32.add (i32.mul (i32.add (global.get $ck_count) (i32.const 1)) (i32.const 100)) (local.get $id)))))))
    (i32.store8 (i32.add (i32.const 5000) (global.get $ck_count)) (local.get $id))
    (global.set $ck_count (i32.add (global.get $ck_count) (i32.const 1)))
    (if (i32.lt_u (global.get $ck_count) (i32.const {takes})) (then (return (i32.const 0))))
    (if (global.get $ck_prio) (then (return (i32.add (i32.const 700) (global.get $ck_prio)))))
    (if (global.get $ck_weak) (then (return (i32.add (i32.const 500) (global.get $ck_weak)))))
    (if (global.get $ck_first) (then (return (i32.add (i32.const 10000) (global.get $ck_first)))))
    (i32.const 77))"#,
        flags = lit(&[u8::from(e.exact.is_some()), u8::from(e.weak)]),
        table = lit(&table),
        exact = lit(&exact),
        takes = e.takes,
    )
}

/// Explains a checker's exit code.
fn explain(code: i32) -> String {
    match code {
        77 => "ok".into(),
        10000.. => {
            let at = (code - 10000) / 100;
            let id = (code - 10000) % 100;
            format!("take #{at} was id {id}, not the one expected")
        }
        700..=799 => format!("{} header priorities wrong", code - 700),
        500..=699 => format!(
            "{} takes overtook an earlier message of the same or a higher priority",
            code - 500
        ),
        other => format!("code {other}"),
    }
}

fn status(report: &RunReport, name: &str) -> ExitStatus {
    report
        .process(name)
        .unwrap_or_else(|| panic!("{name} ran:\n{}", describe(report)))
        .status
        .clone()
}

fn code_of(report: &RunReport, name: &str) -> Option<i32> {
    match status(report, name) {
        ExitStatus::Exited(code) => Some(code),
        _ => None,
    }
}

/// Ids sorted as a mailbox delivers messages that all waited together:
/// highest priority first, then in the order sent.
fn sorted(ids: &[u8], prio: &[u8]) -> Vec<u8> {
    let mut v = ids.to_vec();
    v.sort_by_key(|&id| (std::cmp::Reverse(prio[id as usize - 1]), id));
    v
}

// ---------------------------------------------------------------------------
// 1. One handler's stream to another: plain sends (direct while the
// receiver is idle or kept), ACK_REQUESTED sends and broadcasts (both
// through the mailbox), each with a random priority.

/// A handler `a` that at STARTED sends `b` each message: (id, priority,
/// kind: 0 plain, 1 ack requested, 2 broadcast).
fn stream_sender(msgs: &[(u8, u8, u8)]) -> String {
    let mut body = String::new();
    for (i, &(id, prio, kind)) in msgs.iter().enumerate() {
        let at = 16 + i;
        body.push_str(&format!("(i32.store8 (i32.const {at}) (i32.const {id}))\n"));
        let prio = u32::from(prio);
        body.push_str(&match kind {
            0 => format!("(drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const {prio}) (i32.const {at}) (i32.const 1)))\n"),
            1 => format!("(drop (call $send (global.get $peer) (i32.const 0x1001) (i32.const {}) (i32.const {at}) (i32.const 1)))\n", prio | 0x200),
            _ => format!("(drop (call $broadcast (i32.const 0x1001) (i32.const {prio}) (i32.const {at}) (i32.const 1)))\n"),
        });
    }
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (global $peer (mut i64) (i64.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
    {body}
    (i32.const 0)))"#
    )
}

/// A handler `b` that checks each message of type 0x1001; with `look`,
/// each call first looks for a type no one sends (`receive`, timeout 0).
fn stream_receiver(e: &Expect, look: bool) -> String {
    let look = if look {
        "(drop (call $receive (i32.const 0x7777) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)))"
    } else {
        ""
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {check}
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
    {look}
    (call $check (i32.const 1024) (i32.const 1080))))"#,
        check = checker(e)
    )
}

/// The order one worker gives a handler's stream: plain messages up to the
/// first that goes through the mailbox are taken as they arrive (the
/// receiver is idle, then kept); from there on every message waits in the
/// mailbox (the receiver is queued, and runs once the sender's call ends)
/// and they are taken highest priority first.
fn stream_model(msgs: &[(u8, u8, u8)]) -> Vec<u8> {
    let prio: Vec<u8> = msgs.iter().map(|m| m.1).collect();
    let cut = msgs.iter().position(|m| m.2 != 0).unwrap_or(msgs.len());
    let mut order: Vec<u8> = msgs[..cut].iter().map(|m| m.0).collect();
    let rest: Vec<u8> = msgs[cut..].iter().map(|m| m.0).collect();
    order.extend(sorted(&rest, &prio));
    order
}

fn run_stream(
    msgs: &[(u8, u8, u8)],
    look: bool,
    workers: usize,
    deterministic: bool,
) -> (Option<i32>, RunReport) {
    let prio: Vec<u8> = msgs.iter().map(|m| m.1).collect();
    let e = Expect {
        prio,
        exact: (workers == 1).then(|| stream_model(msgs)),
        weak: true,
        takes: msgs.len(),
    };
    let mut k = kernel(deterministic, workers);
    load(&mut k, "b", "handle", &stream_receiver(&e, look), "");
    load(&mut k, "a", "handle", &stream_sender(msgs), "");
    k.spawn("b").unwrap();
    k.spawn("a").unwrap();
    let report = k.run();
    (code_of(&report, "b"), report)
}

#[test]
fn a_direct_delivery_never_overtakes_a_higher_priority_message_waiting_in_the_mailbox() {
    // a sends b: 1 plain (direct), 2 at priority 7 asking for an ack (the
    // mailbox), 3 plain at priority 0. 3 must not be handed to b while 2
    // waits: b takes 1, 2, 3. And the same with 2 a broadcast copy.
    for kind in [1u8, 2] {
        let msgs = [(1u8, 0u8, 0u8), (2, 7, kind), (3, 0, 0)];
        for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
            for look in [false, true] {
                let (code, report) = run_stream(&msgs, look, workers, deterministic);
                assert_eq!(
                    code,
                    Some(77),
                    "kind {kind} det {deterministic} workers {workers} look {look}: {}\n{}",
                    code.map(explain).unwrap_or_default(),
                    describe(&report)
                );
            }
        }
    }
}

#[test]
fn a_plain_send_at_a_higher_priority_after_a_queued_one_is_taken_first() {
    // 1 plain (direct), 2 at priority 0 asking for an ack (waits in the
    // mailbox), 3 plain at priority 7: 3 arrives while 2 waits, so they
    // wait together and 3 goes first ("highest priority first among the
    // messages waiting together"): 1, 3, 2 on one worker.
    let msgs = [(1u8, 0u8, 0u8), (2, 0, 1), (3, 7, 0)];
    assert_eq!(stream_model(&msgs), vec![1, 3, 2]);
    for deterministic in [true, false] {
        for look in [false, true] {
            let (code, report) = run_stream(&msgs, look, 1, deterministic);
            assert_eq!(
                code,
                Some(77),
                "det {deterministic} look {look}: {}\n{}",
                code.map(explain).unwrap_or_default(),
                describe(&report)
            );
        }
    }
}

#[test]
fn randomized_handler_streams_with_priorities_keep_the_documented_order() {
    // 30 random streams (2..=12 messages, random priorities and paths);
    // one worker: the exact order of the model; two: no overtaking but by
    // a strictly higher priority.
    let mut rng = Rng(0x3333_5EED_0042_1234);
    let mut failures = Vec::new();
    for case in 0..30 {
        let n = 2 + rng.below(11) as usize;
        let msgs: Vec<(u8, u8, u8)> = (0..n)
            .map(|i| {
                let kind = match rng.below(6) {
                    0 => 1,
                    1 => 2,
                    _ => 0,
                };
                ((i + 1) as u8, rng.below(8) as u8, kind)
            })
            .collect();
        let look = rng.below(2) == 1;
        let (deterministic, workers) = match case % 3 {
            0 => (true, 1),
            1 => (false, 1),
            _ => (false, 2),
        };
        let (code, report) = run_stream(&msgs, look, workers, deterministic);
        if code != Some(77) {
            failures.push(format!(
                "msgs (id, prio, kind) {msgs:?} look {look} det {deterministic} workers {workers}: b {} ({})\n{}",
                status(&report, "b"),
                code.map(explain).unwrap_or_default(),
                describe(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 2. Answers to a lender: the first held beside its mailbox, the others
// queued; all wait together, so they are taken highest priority first.

/// `a` (handler): at STARTED pings `b` once per answer (payload: id,
/// priority, ack flag); checks the answers (type 0x1001).
fn pinger(answers: &[(u8, u8, bool)], e: &Expect) -> String {
    let mut body = String::new();
    for (i, &(id, prio, ack)) in answers.iter().enumerate() {
        let at = 16 + 4 * i;
        body.push_str(&format!(
            "(i32.store8 (i32.const {at}) (i32.const {id}))
             (i32.store8 (i32.const {}) (i32.const {prio}))
             (i32.store8 (i32.const {}) (i32.const {}))
             (drop (call $send (global.get $peer) (i32.const 1) (i32.const 0) (i32.const {at}) (i32.const 3)))\n",
            at + 1,
            at + 2,
            u8::from(ack)
        ));
    }
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (global $peer (mut i64) (i64.const 0))
  {check}
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (global.set $peer (call $lookup (i32.const 0) (i32.const 1)))
        {body}
        (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
    (call $check (i32.const 1024) (i32.const 1080))))"#,
        check = checker(e)
    )
}

/// `b` (handler): answers each ping (type 1) with type 0x1001, payload
/// the id, at the priority asked (and ACK_REQUESTED if asked).
fn answerer() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 1)) (then (return (i32.const 0))))
    (drop (call $send (i64.load (i32.const 1032)) (i32.const 0x1001)
      (i32.or (i32.load8_u (i32.const 1081))
              (select (i32.const 0x200) (i32.const 0) (i32.load8_u (i32.const 1082))))
      (i32.const 1080) (i32.const 1)))
    (i32.const 0)))"#
    )
}

fn run_answers(
    answers: &[(u8, u8, bool)],
    workers: usize,
    deterministic: bool,
) -> (Option<i32>, RunReport) {
    let prio: Vec<u8> = answers.iter().map(|a| a.1).collect();
    let ids: Vec<u8> = answers.iter().map(|a| a.0).collect();
    let any_ack = answers.iter().any(|a| a.2);
    let e = Expect {
        exact: (workers == 1 && !any_ack).then(|| sorted(&ids, &prio)),
        prio,
        weak: true,
        takes: answers.len(),
    };
    let mut k = kernel(deterministic, workers);
    load(&mut k, "b", "handle", &answerer(), "");
    load(&mut k, "a", "handle", &pinger(answers, &e), "");
    k.spawn("b").unwrap();
    k.spawn("a").unwrap();
    let report = k.run();
    (code_of(&report, "a"), report)
}

#[test]
fn answers_held_and_queued_for_a_lender_are_taken_highest_priority_first() {
    // Three pings in one call, each handled inside its send: the first
    // answer (priority 0) is held for a, the others (priorities 5 and 7)
    // go through its mailbox; waiting together, they are taken 3, 2, 1.
    let answers = [(1u8, 0u8, false), (2, 5, false), (3, 7, false)];
    for deterministic in [true, false] {
        let (code, report) = run_answers(&answers, 1, deterministic);
        assert_eq!(
            code,
            Some(77),
            "det {deterministic}: {}\n{}",
            code.map(explain).unwrap_or_default(),
            describe(&report)
        );
    }
}

#[test]
fn a_held_answer_goes_back_in_front_of_later_answers_of_its_own_priority() {
    // Held answer 1 at priority 3; answers 2 (priority 3) and 3 (priority
    // 1) queued: 1 came first among the priority-3 ones, so 1, 2, 3.
    let answers = [(1u8, 3u8, false), (2, 3, false), (3, 1, false)];
    for deterministic in [true, false] {
        let (code, report) = run_answers(&answers, 1, deterministic);
        assert_eq!(
            code,
            Some(77),
            "det {deterministic}: {}\n{}",
            code.map(explain).unwrap_or_default(),
            describe(&report)
        );
    }
}

#[test]
fn randomized_answers_to_a_lender_keep_the_documented_order() {
    let mut rng = Rng(0xA5A5_0033_DEAD_BEEF);
    let mut failures = Vec::new();
    for case in 0..24 {
        let n = 2 + rng.below(9) as usize;
        let with_acks = case % 4 == 3;
        let answers: Vec<(u8, u8, bool)> = (0..n)
            .map(|i| {
                (
                    (i + 1) as u8,
                    rng.below(8) as u8,
                    with_acks && rng.below(3) == 0,
                )
            })
            .collect();
        let (deterministic, workers) = match case % 3 {
            0 => (true, 1),
            1 => (false, 1),
            _ => (false, 2),
        };
        let (code, report) = run_answers(&answers, workers, deterministic);
        if code != Some(77) {
            failures.push(format!(
                "answers (id, prio, ack) {answers:?} det {deterministic} workers {workers}: a {} ({})\n{}",
                status(&report, "a"),
                code.map(explain).unwrap_or_default(),
                describe(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. A held answer against a kernel notice or a message of its own that
// reached the lender's mailbox later, at a higher priority; and peek and
// a selective receive agreeing with what the next wait takes.

/// A task `d` that waits for a type no one sends (its mailbox, capacity 1
/// and `drop_newest`, fills with the first message it is sent).
fn sink() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 300) (i32.const 0) (i32.const 64) (i32.const 64)))
    (i32.const 0)))"#
    )
}

/// `a` (handler): at STARTED pings `b` (its PONG, type 0x1001 priority 0,
/// is held for `a`), then makes a priority-7 message reach its own mailbox
/// (`later`), then peeks with `filter`: the header found goes to 3000.
/// Its next call must be for the priority-7 message (flags at 3002 and
/// type at 3004 of the peek agreeing), then the PONG. Exit 0 if so, else
/// 10 × (which check failed).
fn held_then(later: &str, peek_filter: Option<u32>, want_type: u32, want_flag: u32) -> String {
    let peek = match peek_filter {
        Some(filter) => format!(
            "(if (i64.lt_s (call $peek (i32.const {filter}) (i32.const 3000)) (i64.const 0))
               (then (return (i32.const 5))))
             (global.set $peeked (i32.load (i32.const 3004)))"
        ),
        None => format!("(global.set $peeked (i32.const {want_type}))"),
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (data (i32.const 8) "d")
  (global $got (mut i32) (i32.const 0))
  (global $peeked (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32) (local $d i64)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then
        (local.set $d (call $lookup (i32.const 8) (i32.const 1)))
        (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 1) (i32.const 0) (i32.const 16) (i32.const 0)))
        {later}
        {peek}
        (return (i32.const 0))))
    (global.set $got (i32.add (global.get $got) (i32.const 1)))
    (if (i32.eq (global.get $got) (i32.const 1))
      (then
        (if (i32.ne (i32.load (i32.const 1028)) (i32.const {want_type})) (then (return (i32.const 10))))
        (if (i32.eqz (i32.and (i32.load16_u (i32.const 1026)) (i32.const {want_flag}))) (then (return (i32.const 20))))
        (if (i32.ne (i32.load8_u (i32.const 1025)) (i32.const 7)) (then (return (i32.const 30))))
        (if (i32.ne (global.get $peeked) (i32.const {want_type})) (then (return (i32.const 40))))
        (return (i32.const 0))))
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 50))))
    (i32.const 1)))"#
    )
}

/// `b` (handler): answers a ping with type 0x1001 at priority 0.
fn pong0() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 1)) (then (return (i32.const 0))))
    (drop (call $send (i64.load (i32.const 1032)) (i32.const 0x1001) (i32.const 0) (i32.const 1080) (i32.const 0)))
    (i32.const 0)))"#
    )
}

fn run_held_then(later: &str, peek_filter: u32, want_type: u32, want_flag: u32) {
    for peek_filter in [None, Some(peek_filter)] {
        for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
            let mut k = kernel(deterministic, workers);
            load(&mut k, "b", "handle", &pong0(), "");
            load(&mut k, "d", "run", &sink(), &mailbox(1, "drop_newest"));
            load(
                &mut k,
                "a",
                "handle",
                &held_then(later, peek_filter, want_type, want_flag),
                "",
            );
            k.spawn("b").unwrap();
            k.spawn("d").unwrap();
            k.spawn("a").unwrap();
            let report = k.run();
            assert_eq!(
                status(&report, "a"),
                ExitStatus::Exited(1),
                "peek {peek_filter:?} det {deterministic} workers {workers}: a took the held priority-0 answer \
             ahead of a priority-7 message waiting with it (10 type, 20 flag, 30 priority, \
             40 peek disagreed, 50 second message not the PONG)\n{}",
                describe(&report)
            );
        }
    }
}

#[test]
fn a_delivery_failure_notice_goes_ahead_of_a_held_lower_priority_answer() {
    // After the PONG is held, a's two sends to `d` (capacity 1,
    // drop_newest) drop the second: a DELIVERY_FAILURE notice (priority
    // 7, ABI: kernel messages are the highest priority) reaches a's
    // mailbox. Waiting together with the PONG, it goes first; a `peek`
    // (any type) names it.
    let later = "(drop (call $send (local.get $d) (i32.const 0x2002) (i32.const 0) (i32.const 16) (i32.const 0)))
                 (drop (call $send (local.get $d) (i32.const 0x2002) (i32.const 0) (i32.const 16) (i32.const 0)))";
    run_held_then(later, 0, 0x2002, 16);
}

#[test]
fn a_message_to_itself_at_priority_7_goes_ahead_of_a_held_priority_0_answer() {
    // After the PONG (priority 0) is held, a sends itself type 0x2003 at
    // priority 7 (through its mailbox). a peeks for type 0x2003 (found),
    // then its next call must be for 0x2003 (REPLY flag used as a marker
    // via options 0x107), the PONG after.
    let later = "(drop (call $send (call $self) (i32.const 0x2003) (i32.const 0x107) (i32.const 16) (i32.const 0)))";
    run_held_then(later, 0x2003, 0x2003, 1);
}

// ---------------------------------------------------------------------------
// 4. Task paths: a stream into a task's mailbox taken after a direct
// handoff, and into a handler's mailbox from a task.

/// A task `s`: waits 5 ms (so its receiver waits first), sends `r` each
/// message (id, priority, ack requested), then waits 20 ms for a type no
/// one sends (its receive finding nothing runs the woken receiver: the
/// direct handoff), and returns 0.
fn task_sender(msgs: &[(u8, u8, bool)]) -> String {
    let mut body = String::new();
    for (i, &(id, prio, ack)) in msgs.iter().enumerate() {
        let at = 16 + i;
        let options = u32::from(prio) | if ack { 0x200 } else { 0 };
        body.push_str(&format!(
            "(i32.store8 (i32.const {at}) (i32.const {id}))
             (drop (call $send (local.get $p) (i32.const 0x1001) (i32.const {options}) (i32.const {at}) (i32.const 1)))\n"
        ));
    }
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "r")
  (func (export "run") (result i32) (local $p i64)
    (drop (call $receive (i32.const 0x7777) (i64.const 5) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (local.set $p (call $lookup (i32.const 0) (i32.const 1)))
    {body}
    (drop (call $receive (i32.const 0x7777) (i64.const 20) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (i32.const 0)))"#
    )
}

/// A task `r` that takes `takes` messages of type 0x1001 (waiting for
/// each) and checks them; returns the checker's code.
fn task_receiver(e: &Expect) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {check}
  (func (export "run") (result i32) (local $c i32)
    (loop $l
      (if (i64.lt_s (call $receive (i32.const 0x1001) (i64.const -1) (i32.const 1024) (i32.const 1080) (i32.const 64)) (i64.const 0))
        (then (return (i32.const 999))))
      (local.set $c (call $check (i32.const 1024) (i32.const 1080)))
      (br_if $l (i32.eqz (local.get $c))))
    (local.get $c)))"#,
        check = checker(e)
    )
}

fn run_task_stream(
    msgs: &[(u8, u8, bool)],
    handler: bool,
    workers: usize,
    deterministic: bool,
) -> (Option<i32>, RunReport) {
    let prio: Vec<u8> = msgs.iter().map(|m| m.1).collect();
    let ids: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    let e = Expect {
        exact: (workers == 1).then(|| sorted(&ids, &prio)),
        prio,
        weak: true,
        takes: msgs.len(),
    };
    let mut k = kernel(deterministic, workers);
    if handler {
        load(&mut k, "r", "handle", &stream_receiver(&e, false), "");
    } else {
        load(&mut k, "r", "run", &task_receiver(&e), "");
    }
    load(&mut k, "s", "run", &task_sender(msgs), "");
    k.spawn("r").unwrap();
    k.spawn("s").unwrap();
    let report = k.run();
    (code_of(&report, "r"), report)
}

#[test]
fn randomized_task_streams_into_task_and_handler_mailboxes_keep_priority_order() {
    // One worker: the receiver, woken by the first send, runs only when
    // the sender waits (its turn handed over), so all the messages wait
    // together and are taken highest priority first, FIFO within. Two
    // workers: no overtaking but by a higher priority.
    let mut rng = Rng(0x7A5C_0033_1357_9BDF);
    let mut failures = Vec::new();
    for case in 0..24 {
        let n = 2 + rng.below(11) as usize;
        let msgs: Vec<(u8, u8, bool)> = (0..n)
            .map(|i| ((i + 1) as u8, rng.below(8) as u8, rng.below(4) == 0))
            .collect();
        let handler = case % 2 == 1;
        let (deterministic, workers) = match (case / 2) % 3 {
            0 => (true, 1),
            1 => (false, 1),
            _ => (false, 2),
        };
        let (code, report) = run_task_stream(&msgs, handler, workers, deterministic);
        if code != Some(77) {
            failures.push(format!(
                "msgs (id, prio, ack) {msgs:?} handler receiver {handler} det {deterministic} workers {workers}: r {} ({})\n{}",
                status(&report, "r"),
                code.map(explain).unwrap_or_default(),
                describe(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 5. Peek and selective receives agree with receive, over a mailbox of
// mixed priorities, types, acks and notices.

/// `r` (task): sends itself, via `fill` (WAT), a mix of messages; then
/// repeatedly peeks with a filter (any, 0x1001, 0x1002 in turn) and
/// receives with the same filter (timeout 0), comparing the two headers
/// (all 56 bytes). Ends 0, or 100 + disagreements, or 900 if the mailbox
/// never emptied.
fn peek_agreement(fill: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "d")
  (data (i32.const 8) "\00\00\00\00\01\10\00\00\02\10\00\00")
  (func (export "run") (result i32) (local $d i64) (local $me i64) (local $i i32) (local $f i32)
    (local $p i64) (local $r i64) (local $bad i32) (local $w i32)
    (local.set $d (call $lookup (i32.const 0) (i32.const 1)))
    (local.set $me (call $self))
    {fill}
    (block $out (loop $l
      (local.set $f (i32.load (i32.add (i32.const 8) (i32.shl (i32.rem_u (local.get $i) (i32.const 3)) (i32.const 2)))))
      (memory.fill (i32.const 3000) (i32.const 0) (i32.const 56))
      (memory.fill (i32.const 3100) (i32.const 0xEE) (i32.const 56))
      (local.set $p (call $peek (local.get $f) (i32.const 3000)))
      (local.set $r (call $receive (local.get $f) (i64.const 0) (i32.const 3100) (i32.const 3200) (i32.const 256)))
      (if (i64.eq (local.get $p) (i64.const {not_found}))
        (then (if (i64.ne (local.get $r) (i64.const {timeout}))
                (then (local.set $bad (i32.add (local.get $bad) (i32.const 1))))))
        (else
          (local.set $w (i32.const 0))
          (loop $cmp
            (if (i64.ne (i64.load (i32.add (i32.const 3000) (local.get $w))) (i64.load (i32.add (i32.const 3100) (local.get $w))))
              (then (local.set $bad (i32.add (local.get $bad) (i32.const 1)))))
            (local.set $w (i32.add (local.get $w) (i32.const 8)))
            (br_if $cmp (i32.lt_u (local.get $w) (i32.const 56))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $out (i32.gt_u (local.get $i) (i32.const 300)))
      ;; Done once nothing of any type is left.
      (br_if $l (i64.ne (call $peek (i32.const 0) (i32.const 3600)) (i64.const {not_found})))))
    (if (i32.gt_u (local.get $i) (i32.const 300)) (then (return (i32.const 900))))
    (if (local.get $bad) (then (return (i32.add (i32.const 100) (local.get $bad)))))
    (i32.const 0)))"#,
        not_found = neg(ErrorCode::NOT_FOUND),
        timeout = neg(ErrorCode::TIMEOUT),
    )
}

/// `d` (task): takes messages (acknowledging those that asked) until 30 ms
/// pass with none.
fn acker() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop $l
      (if (i64.ge_s (call $receive (i32.const 0) (i64.const 30) (i32.const 0) (i32.const 64) (i32.const 64)) (i64.const 0))
        (then (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l))))
    (local.get $i)))"#
    )
}

#[test]
fn peek_and_selective_receives_agree_with_receive_over_mixed_priorities() {
    // ABI 9: `peek` gives "the header of what `receive` would take", for
    // any type and for one type. r's mailbox: its own messages of types
    // 0x1001 and 0x1002 at random priorities, acks (from d, at the
    // priority of what they acknowledge) and DELIVERY_FAILURE notices
    // (d's mailbox, capacity 2 drop_newest, drops the rest).
    let mut rng = Rng(0x9EE4_0033_0000_0001);
    for round in 0..4 {
        let mut fill = String::new();
        for _ in 0..14 {
            let ty = if rng.below(2) == 0 { 0x1001 } else { 0x1002 };
            let prio = rng.below(8);
            match rng.below(4) {
                0 => {
                    fill.push_str(&format!(
                        "(drop (call $send (local.get $d) (i32.const {ty}) (i32.const {}) (i32.const 16) (i32.const 4)))\n",
                        prio | 0x200
                    ))
                }
                _ => fill.push_str(&format!(
                    "(drop (call $send (local.get $me) (i32.const {ty}) (i32.const {prio}) (i32.const 16) (i32.const 4)))\n"
                )),
            }
        }
        // Let d take what it can and end, and its acks and the notices
        // arrive: nothing reaches r's mailbox after this.
        fill.push_str(
            "(drop (call $receive (i32.const 0x7777) (i64.const 150) (i32.const 2048) (i32.const 2200) (i32.const 64)))\n",
        );
        for (deterministic, workers) in [(true, 1), (false, 2)] {
            let mut k = kernel(deterministic, workers);
            load(&mut k, "d", "run", &acker(), &mailbox(2, "drop_newest"));
            load(
                &mut k,
                "r",
                "run",
                &peek_agreement(&fill),
                &mailbox(64, "notify_sender"),
            );
            k.spawn("d").unwrap();
            k.spawn("r").unwrap();
            let report = k.run();
            assert_eq!(
                code_of(&report, "r"),
                Some(0),
                "round {round} det {deterministic} workers {workers}: peek and receive disagree (100 + n)\n{}",
                describe(&report)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Overflow modes choose what to drop by priority.

/// The queue a mailbox of `capacity` and `mode` holds after `prio` (ids
/// 1..) were offered in order, and how many were dropped or refused.
fn overflow_model(prio: &[u8], capacity: usize, mode: &str) -> (Vec<u8>, usize) {
    let mut queued: Vec<u8> = Vec::new();
    let mut lost = 0;
    for (i, _) in prio.iter().enumerate() {
        let id = (i + 1) as u8;
        if queued.len() < capacity {
            queued.push(id);
            continue;
        }
        lost += 1;
        if mode == "drop_oldest" {
            // "The oldest message of the lowest non-empty priority is
            // dropped and counted to make room."
            let lowest = queued.iter().map(|&q| prio[q as usize - 1]).min().unwrap();
            let at = queued
                .iter()
                .position(|&q| prio[q as usize - 1] == lowest)
                .unwrap();
            queued.remove(at);
            queued.push(id);
        }
    }
    (sorted(&queued, prio), lost)
}

/// `r` (task): waits 30 ms for a type no one sends, then takes `takes`
/// messages and checks them, then one more look must find nothing (else
/// 901).
fn overflow_receiver(e: &Expect) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {check}
  (func (export "run") (result i32) (local $c i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 30) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (loop $l
      (if (i64.lt_s (call $receive (i32.const 0) (i64.const 0) (i32.const 1024) (i32.const 1080) (i32.const 64)) (i64.const 0))
        (then (return (i32.const 999))))
      (local.set $c (call $check (i32.const 1024) (i32.const 1080)))
      (br_if $l (i32.eqz (local.get $c))))
    (if (i64.ge_s (call $receive (i32.const 0) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)) (i64.const 0))
      (then (return (i32.const 901))))
    (local.get $c)))"#,
        check = checker(e)
    )
}

/// `s` (task): sends `r` messages with ids 1.. at the given priorities,
/// then waits 100 ms for notices (and counts them: exit = notices).
fn overflow_sender(prio: &[u8]) -> String {
    let mut body = String::new();
    for (i, p) in prio.iter().enumerate() {
        let at = 16 + i;
        body.push_str(&format!(
            "(i32.store8 (i32.const {at}) (i32.const {}))
             (drop (call $send (local.get $p) (i32.const 0x1001) (i32.const {p}) (i32.const {at}) (i32.const 1)))\n",
            i + 1
        ));
    }
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "r")
  (func (export "run") (result i32) (local $p i64) (local $n i32)
    (local.set $p (call $lookup (i32.const 0) (i32.const 1)))
    {body}
    (block $done (loop $l
      (br_if $done (i64.eq (call $receive (i32.const 0) (i64.const 100) (i32.const 2048) (i32.const 2200) (i32.const 64))
                           (i64.const {timeout})))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    (local.get $n)))"#,
        timeout = neg(ErrorCode::TIMEOUT)
    )
}

#[test]
fn overflow_modes_drop_by_the_documented_priority_rule() {
    // OverflowMode::DropOldest: "The oldest message of the lowest
    // non-empty priority is dropped"; DropNewest: "The new message is
    // dropped"; NotifySender: "The send fails at once". What stays is
    // taken highest priority first; each drop is one notice.
    let mut rng = Rng(0x0F10_0033_2468_ACE0);
    let mut failures = Vec::new();
    for case in 0..18 {
        let mode = ["drop_oldest", "drop_newest", "notify_sender"][case % 3];
        let capacity = 2 + rng.below(4) as usize;
        let n = capacity + 1 + rng.below(5) as usize;
        let prio: Vec<u8> = (0..n).map(|_| rng.below(8) as u8).collect();
        let (expected, lost) = overflow_model(&prio, capacity, mode);
        let e = Expect {
            prio: prio.clone(),
            exact: Some(expected.clone()),
            weak: false,
            takes: expected.len(),
        };
        let (deterministic, workers) = if case % 2 == 0 { (true, 1) } else { (false, 2) };
        let mut k = kernel(deterministic, workers);
        load(
            &mut k,
            "r",
            "run",
            &overflow_receiver(&e),
            &mailbox(capacity as u64, mode),
        );
        load(&mut k, "s", "run", &overflow_sender(&prio), "");
        k.spawn("r").unwrap();
        k.spawn("s").unwrap();
        let report = k.run();
        let r = code_of(&report, "r");
        let s = report.process("s").unwrap();
        let notices = code_of(&report, "s");
        let (want_notices, want_refused) = if mode == "notify_sender" {
            (0, lost as u64)
        } else {
            (lost as i32, 0)
        };
        if r != Some(77) || notices != Some(want_notices) || s.send_failures != want_refused {
            failures.push(format!(
                "{mode} capacity {capacity} prio {prio:?}: expected taken {expected:?}, r {} ({}); s notices {notices:?} (want {want_notices}), refused {} (want {want_refused}) det {deterministic} workers {workers}\n{}",
                status(&report, "r"),
                r.map(explain).unwrap_or_default(),
                s.send_failures,
                describe(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 7. Mail inherited by a same-state restart keeps its priority order.

/// `r` (task, restarted same-state): waits 30 ms for a type no one sends,
/// then takes messages; traps on id `trap` (the first it takes); the
/// restarted one checks the rest.
fn restart_task_receiver(e: &Expect, trap: u8) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {check}
  (func (export "run") (result i32) (local $c i32)
    (drop (call $receive (i32.const 0x7777) (i64.const 30) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (loop $l
      (if (i64.lt_s (call $receive (i32.const 0) (i64.const 200) (i32.const 1024) (i32.const 1080) (i32.const 64)) (i64.const 0))
        (then (return (i32.const 999))))
      (if (i32.eq (i32.load8_u (i32.const 1080)) (i32.const {trap})) (then unreachable))
      (local.set $c (call $check (i32.const 1024) (i32.const 1080)))
      (br_if $l (i32.eqz (local.get $c))))
    (local.get $c)))"#,
        check = checker(e)
    )
}

/// `r` (handler, restarted same-state): traps on id `trap`; checks the
/// rest.
fn restart_handler_receiver(e: &Expect, trap: u8) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {check}
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0x1001)) (then (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (i32.const 1080)) (i32.const {trap})) (then unreachable))
    (call $check (i32.const 1024) (i32.const 1080))))"#,
        check = checker(e)
    )
}

#[test]
fn a_same_state_restart_takes_its_inherited_mail_in_priority_order() {
    // ARCHITECTURE 5: a same-state restart's "mail queued before it can be
    // found"; RestartSameState: "its mail queued in the new mailbox".
    // Invariant 5 holds for it as for any mailbox: the new process takes
    // the inherited messages highest priority first, FIFO within.
    let mut rng = Rng(0x5E57_0033_0BAD_F00D);
    let mut failures = Vec::new();
    for case in 0..8 {
        let n = 3 + rng.below(8) as usize;
        let prio: Vec<u8> = (0..n).map(|_| rng.below(8) as u8).collect();
        let ids: Vec<u8> = (1..=n as u8).collect();
        let all = sorted(&ids, &prio);
        let trap = all[0];
        let e = Expect {
            prio: prio.clone(),
            exact: Some(all[1..].to_vec()),
            weak: false,
            takes: n - 1,
        };
        let handler = case % 2 == 1;
        let deterministic = case % 4 < 2;
        let mut k = kernel(deterministic, 1);
        k.set_restart_policy(Script::boxed(&[RestartAction::RestartSameState]));
        let extra = format!(r#""restart":"on_failure",{}"#, mailbox(64, "notify_sender"));
        if handler {
            load(
                &mut k,
                "r",
                "handle",
                &restart_handler_receiver(&e, trap),
                &extra,
            );
        } else {
            load(&mut k, "r", "run", &restart_task_receiver(&e, trap), &extra);
        }
        let msgs: Vec<(u8, u8, bool)> = ids
            .iter()
            .map(|&id| (id, prio[id as usize - 1], false))
            .collect();
        load(&mut k, "s", "run", &task_sender(&msgs), "");
        k.spawn("r").unwrap();
        k.spawn("s").unwrap();
        let report = k.run();
        let new_r = report
            .processes
            .iter()
            .filter(|p| p.module == "r")
            .find(|p| !matches!(p.status, ExitStatus::Trapped { .. }));
        let code = new_r.and_then(|p| match p.status {
            ExitStatus::Exited(c) => Some(c),
            _ => None,
        });
        if code != Some(77) {
            failures.push(format!(
                "prio {prio:?} trap on {trap} handler {handler} det {deterministic}: expected {:?}, new r {:?} ({})\n{}",
                &all[1..],
                new_r.map(|p| p.status.clone()),
                code.map(explain).unwrap_or_default(),
                describe(&report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 8. Process levels around direct delivery.

/// `a` (handler): at STARTED sends `b` a ping and looks at once (receive
/// timeout 0) for the answer: exit 1 if it is there (b ran inside the
/// send), 2 if not.
fn level_asker() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 1) (i32.const 3) (i32.const 16) (i32.const 0)))
    (if (i64.ge_s (call $receive (i32.const 0x1001) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)) (i64.const 0))
      (then (return (i32.const 1))))
    (i32.const 2)))"#
    )
}

#[test]
fn direct_delivery_runs_a_receiver_at_or_above_the_senders_level_never_below() {
    // ABI 7: "when no process is ready to run and the receiver's priority
    // level is not below the sender's, [the message] is handled before the
    // send returns". ARCHITECTURE invariant 9: "never runs a lower level
    // ahead of the sender".
    let cases = [
        ("low", "high", 1),
        ("low", "low", 1),
        ("lazy", "critical", 1),
        ("normal", "low", 2),
        ("high", "normal", 2),
        ("critical", "lazy", 2),
    ];
    for (sender, receiver, want) in cases {
        for deterministic in [true, false] {
            let mut k = kernel(deterministic, 1);
            load_at(&mut k, "b", "handle", &pong0(), receiver, "");
            load_at(&mut k, "a", "handle", &level_asker(), sender, "");
            k.spawn("b").unwrap();
            k.spawn("a").unwrap();
            let report = k.run();
            assert_eq!(
                status(&report, "a"),
                ExitStatus::Exited(want),
                "sender {sender}, receiver {receiver}, det {deterministic} (1: answered inside the send)\n{}",
                describe(&report)
            );
        }
    }
}

/// `a` (handler, sender): at STARTED sends `b` message 1 (direct: `b`
/// outranks or equals it), then `c` (a lower level than `a`: through its
/// mailbox) message 1 at priority 7, then `b` message 2 — `b` is kept for
/// `a` between the two; `c`'s message must not be run by `b`'s delivery.
/// Then looks (timeout 0) for c's answer: exit 1 if there (c ran inside
/// a's call), 2 if not.
fn three_way() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "bc")
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32) (local $b i64) (local $c i64)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (local.set $b (call $lookup (i32.const 0) (i32.const 1)))
    (local.set $c (call $lookup (i32.const 1) (i32.const 1)))
    (drop (call $send (local.get $b) (i32.const 1) (i32.const 0) (i32.const 16) (i32.const 0)))
    (drop (call $send (local.get $c) (i32.const 1) (i32.const 7) (i32.const 16) (i32.const 0)))
    (drop (call $send (local.get $b) (i32.const 1) (i32.const 0) (i32.const 16) (i32.const 0)))
    (drop (call $receive (i32.const 0x1001) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (drop (call $receive (i32.const 0x1001) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (if (i64.ge_s (call $receive (i32.const 0x1001) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)) (i64.const 0))
      (then (return (i32.const 1))))
    (i32.const 2)))"#
    )
}

#[test]
fn a_lower_level_receivers_message_is_not_run_inside_a_higher_senders_call() {
    // a (high) sends b (high: direct, kept), c (low: its mailbox), b
    // again. Only b's two answers may be there before a's call ends; c's
    // must wait for c's own turn (invariant 9).
    for deterministic in [true, false] {
        let mut k = kernel(deterministic, 1);
        load_at(&mut k, "b", "handle", &pong0(), "high", "");
        load_at(&mut k, "c", "handle", &pong0(), "low", "");
        load_at(&mut k, "a", "handle", &three_way(), "high", "");
        k.spawn("b").unwrap();
        k.spawn("c").unwrap();
        k.spawn("a").unwrap();
        let report = k.run();
        assert_eq!(
            status(&report, "a"),
            ExitStatus::Exited(2),
            "det {deterministic}: c's answer was there inside a's call\n{}",
            describe(&report)
        );
    }
}

// ---------------------------------------------------------------------------
// 9. Two workers: a third process's higher-priority message reaches a
// receiver kept by a sender's stream of direct deliveries.

/// `a` (handler): at STARTED sends `b` a stream of type 0x1001 messages
/// at priority 0 (direct while `b` is idle or kept), looking (timeout 0)
/// between sends for `c`'s "go" (type 0x2001); each message's payload byte
/// says whether "go" had been seen before it was sent. Stops 30 sends
/// after "go" (or after 4,000 sends), then sends `b` the end (0x1003).
fn causal_sender() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "b")
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32) (local $b i64) (local $i i32) (local $after i32)
    (if (i32.ne (i32.load (i32.const 1028)) (i32.const 0xFF02)) (then (return (i32.const 0))))
    (local.set $b (call $lookup (i32.const 0) (i32.const 1)))
    (block $out (loop $l
      (if (i32.eqz (i32.load8_u (i32.const 16)))
        (then (if (i64.ge_s (call $receive (i32.const 0x2001) (i64.const 0) (i32.const 2048) (i32.const 2200) (i32.const 64)) (i64.const 0))
          (then (i32.store8 (i32.const 16) (i32.const 1))))))
      (if (i32.load8_u (i32.const 16)) (then (local.set $after (i32.add (local.get $after) (i32.const 1)))))
      (drop (call $send (local.get $b) (i32.const 0x1001) (i32.const 0) (i32.const 16) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $out (i32.ge_u (local.get $after) (i32.const 30)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 4000)))))
    (drop (call $send (local.get $b) (i32.const 0x1003) (i32.const 0) (i32.const 16) (i32.const 1)))
    (i32.const 0)))"#
    )
}

/// `c` (task): sends `b` type 0x1002 at `prio`, then `a` "go".
fn causal_third(prio: u32, pause_ms: u32) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "ba")
  (func (export "run") (result i32)
    (drop (call $receive (i32.const 0x7777) (i64.const {pause_ms}) (i32.const 2048) (i32.const 2200) (i32.const 64)))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 1)) (i32.const 0x1002) (i32.const {prio}) (i32.const 16) (i32.const 0)))
    (drop (call $send (call $lookup (i32.const 1) (i32.const 1)) (i32.const 0x2001) (i32.const 0) (i32.const 16) (i32.const 0)))
    (i32.const 0)))"#
    )
}

/// `b` (handler): exit 1 if every message `a` sent after "go" (and the
/// end) came after `c`'s message, 3 if `a` never saw "go" before its end,
/// 50 + n for n taken ahead of `c`'s.
fn causal_receiver() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (global $c (mut i32) (i32.const 0))
  (global $after (mut i32) (i32.const 0))
  (global $bad (mut i32) (i32.const 0))
  (func (export "estalogic_inbox") (result i64) (i64.const {INBOX}))
  (func (export "handle") (param $len i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1002)) (then (global.set $c (i32.const 1))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1001))
      (then (if (i32.load8_u (i32.const 1080))
        (then (global.set $after (i32.const 1))
              (if (i32.eqz (global.get $c)) (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))))))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1003))
      (then
        (if (i32.and (i32.load8_u (i32.const 1080)) (i32.eqz (global.get $c)))
          (then (global.set $bad (i32.add (global.get $bad) (i32.const 1)))))
        (if (global.get $bad) (then (return (i32.add (i32.const 50) (global.get $bad)))))
        (if (i32.eqz (global.get $after)) (then (return (i32.const 3))))
        (return (i32.const 1))))
    (i32.const 0)))"#
    )
}

#[test]
fn a_third_processs_message_posted_before_a_direct_delivery_is_taken_before_it() {
    // Invariant 5: "highest priority first among the messages waiting
    // together ... a direct delivery is a message taken as it arrives".
    // c posts to b (priority >= a's), then tells a; every message a sends
    // b after hearing it arrives after c's, which waits (or was taken)
    // already: b must take c's first, whether a's goes direct to a kept b
    // or through the mailbox. Two workers, c's post landing mid-stream.
    let mut conclusive = 0;
    let mut failures = Vec::new();
    for round in 0..12u32 {
        let prio = [7, 0, 3][round as usize % 3];
        let mut k = kernel(false, 2);
        load(
            &mut k,
            "b",
            "handle",
            &causal_receiver(),
            &mailbox(8192, "notify_sender"),
        );
        load(&mut k, "a", "handle", &causal_sender(), "");
        load(&mut k, "c", "run", &causal_third(prio, round % 3), "");
        k.spawn("b").unwrap();
        k.spawn("a").unwrap();
        k.spawn("c").unwrap();
        let report = k.run();
        match code_of(&report, "b") {
            Some(1) => conclusive += 1,
            Some(3) => {}
            other => failures.push(format!(
                "round {round} prio {prio}: b {other:?} (50 + n: taken ahead of c's)\n{}",
                describe(&report)
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("causal rounds conclusive: {conclusive} of 12");
}
