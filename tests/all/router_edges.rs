//! Message-router semantics and the embedding API at their edges (from
//! the eleventh probe round), each case against a documented line (quoted
//! at the case). Guests record what
//! they take by echoing each message's identity to a sink (in the echo's
//! correlation), which the IPC trace shows in order.

use estalogic_abi::{ErrorCode, Header};
use estalogic_kernel::{Kernel, KernelError, Manifest, RunReport};
use estalogic_tests::{RUNS, kernel, neg};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn load(kernel: &mut Kernel, name: &str, wat: &str, extra: &str) {
    estalogic_tests::load_wat_with(kernel, name, wat, extra);
}

const IMPORTS: &str = r#"
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
"#;

const DATA_TYPE: u32 = 0x1000;
const DONE: u32 = 0x2000;
const ECHO: u32 = 0x3000;
const END: u32 = 0x3001;
const MISMATCH: u32 = 0x3002;

/// A sink that takes everything until an `END` message.
fn sink() -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $more
      (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 1024)))
      (br_if $more (i32.ne (i32.load (i32.const 4100)) (i32.const {END}))))
    (i32.const 0)))"#
    )
}

/// A sender: `count` messages to "r", message `i` at priority `i % 8`,
/// type `DATA_TYPE + (i / 8) % 3`, with `flags` (send option bits 8..);
/// then a `DONE` at priority 7 if `done`; then counts the notices of
/// dropped messages it gets until `linger_ms` pass with none, and returns
/// that count.
fn sender(count: u32, flags: u32, done: bool, linger_ms: u64) -> String {
    let done = if done {
        format!(
            "(drop (call $send (local.get $peer) (i32.const {DONE}) (i32.const 7) (i32.const 0) (i32.const 0)))"
        )
    } else {
        String::new()
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "r")
  (func (export "run") (result i32)
    (local $i i32) (local $n i32) (local $r i64) (local $peer i64)
    (local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
    (block $sent (loop $more
      (br_if $sent (i32.ge_u (local.get $i) (i32.const {count})))
      (drop (call $send (local.get $peer)
        (i32.add (i32.const {DATA_TYPE}) (i32.rem_u (i32.div_u (local.get $i) (i32.const 8)) (i32.const 3)))
        (i32.or (i32.rem_u (local.get $i) (i32.const 8)) (i32.const {flags_bits}))
        (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $more)))
    {done}
    (block $out (loop $more
      (local.set $r (call $receive (i32.const 0) (i64.const {linger_ms}) (i32.const 4096) (i32.const 4160) (i32.const 1024)))
      (br_if $out (i64.eq (local.get $r) (i64.const {timeout})))
      (if (i64.eq (local.get $r) (i64.const {dropped}))
        (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
      (br $more)))
    (local.get $n)))"#,
        flags_bits = flags << 8,
        timeout = neg(ErrorCode::TIMEOUT),
        dropped = neg(ErrorCode::MESSAGE_DROPPED),
    )
}

/// The receiver "r": waits for `dones` `DONE` messages (a selective
/// receive that skips everything else) or, with `dones` 0, `pause_ms`;
/// then takes every message of type `selective` (if not 0), then every
/// message, each with a peek first, echoing each one to the sink (type
/// `ECHO`, or `MISMATCH` if the peek showed another message), its
/// identity in the echo's correlation: source index << 48 | priority <<
/// 40 | type's low byte << 32 | sequence.
fn receiver(dones: u32, pause_ms: u64, selective: u32, drain_ms: u64) -> String {
    let wait = if dones > 0 {
        format!(
            r#"(block $w (loop $more
      (br_if $w (i32.ge_u (local.get $i) (i32.const {dones})))
      (drop (call $receive (i32.const {DONE}) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 1024)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $more)))"#
        )
    } else {
        format!(
            "(drop (call $receive (i32.const 77) (i64.const {pause_ms}) (i32.const 4096) (i32.const 4160) (i32.const 64)))"
        )
    };
    let selective = if selective != 0 {
        format!("(call $drain (i32.const {selective}))")
    } else {
        String::new()
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "sink")
  (global $sink (mut i64) (i64.const 0))
  (func $echo (param $kind i32)
    (drop (call $reply (global.get $sink)
      (i64.or
        (i64.or
          (i64.shl (i64.extend_i32_u (i32.load (i32.const 4104))) (i64.const 48))
          (i64.shl (i64.load8_u (i32.const 4097)) (i64.const 40)))
        (i64.or
          (i64.shl (i64.load8_u (i32.const 4100)) (i64.const 32))
          (i64.load32_u (i32.const 4120))))
      (local.get $kind) (i32.const 0) (i32.const 0) (i32.const 0))))
  (func $drain (param $filter i32)
    (local $p i64) (local $r i64) (local $kind i32)
    (block $out (loop $more
      (local.set $p (call $peek (local.get $filter) (i32.const 8192)))
      (local.set $r (call $receive (local.get $filter) (i64.const {drain_ms}) (i32.const 4096) (i32.const 4160) (i32.const 1024)))
      (if (i64.eq (local.get $r) (i64.const {timeout}))
        (then
          (if (i64.ne (local.get $p) (i64.const {not_found}))
            (then (call $echo (i32.const {MISMATCH}))))
          (br $out)))
      (local.set $kind (i32.const {ECHO}))
      (if (i32.and (i64.ge_s (local.get $p) (i64.const 0))
            (i32.or (i64.ne (i64.load (i32.const 8200)) (i64.load (i32.const 4104)))
                    (i64.ne (i64.load (i32.const 8216)) (i64.load (i32.const 4120)))))
        (then (local.set $kind (i32.const {MISMATCH}))))
      (call $echo (local.get $kind))
      (br $more))))
  (func (export "run") (result i32) (local $i i32)
    (global.set $sink (call $lookup (i32.const 0) (i32.const 4)))
    {wait}
    {selective}
    (call $drain (i32.const 0))
    (drop (call $send (global.get $sink) (i32.const {END}) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#,
        timeout = neg(ErrorCode::TIMEOUT),
        not_found = neg(ErrorCode::NOT_FOUND),
    )
}

/// A message's identity: (source index, priority, type low byte, sequence).
type Id = (u32, u8, u8, u64);

fn id_of(header: &Header) -> Id {
    (
        header.source.index(),
        header.priority.get(),
        header.message_type.0 as u8,
        header.sequence,
    )
}

fn id_of_echo(correlation: u64) -> Id {
    (
        (correlation >> 48) as u32,
        (correlation >> 40) as u8,
        (correlation >> 32) as u8,
        correlation & 0xFFFF_FFFF,
    )
}

/// The ordering scenario's outcome: what the senders got queued in "r"
/// (in trace order), what "r" took (in order), and the report.
struct Scenario {
    queued: Vec<Id>,
    taken: Vec<Id>,
    mismatches: usize,
    report: RunReport,
}

/// Runs `senders` senders of `count` messages each into "r" (manifest
/// extra `r_extra`), "r" built by `receiver`, with the IPC trace on.
fn run_scenario(
    deterministic: bool,
    workers: usize,
    senders: &[String],
    receiver: &str,
    r_extra: &str,
) -> Scenario {
    let mut kernel = Kernel::builder()
        .deterministic(deterministic)
        .workers(workers)
        .trace_ipc(true)
        .build()
        .unwrap();
    load(
        &mut kernel,
        "sink",
        &sink(),
        r#""mailbox":{"capacity":65536}"#,
    );
    load(&mut kernel, "r", receiver, r_extra);
    for (n, wat) in senders.iter().enumerate() {
        load(&mut kernel, &format!("s{n}"), wat, "");
    }
    kernel.spawn("sink").unwrap();
    let r = kernel.spawn("r").unwrap();
    for n in 0..senders.len() {
        kernel.spawn(&format!("s{n}")).unwrap();
    }
    let report = kernel.run();
    let mut queued = Vec::new();
    let mut taken = Vec::new();
    let mut mismatches = 0;
    for record in &report.trace {
        let h = &record.header;
        if h.target == r && (DATA_TYPE..DATA_TYPE + 3).contains(&h.message_type.0) {
            queued.push(id_of(h));
        }
        if h.source == r && h.message_type.0 == ECHO {
            taken.push(id_of_echo(h.correlation));
        }
        if h.source == r && h.message_type.0 == MISMATCH {
            mismatches += 1;
        }
    }
    Scenario {
        queued,
        taken,
        mismatches,
        report,
    }
}

/// Priority never rises, and FIFO per (source, priority).
fn check_order(what: &str, taken: &[Id]) {
    for pair in taken.windows(2) {
        assert!(
            pair[0].1 >= pair[1].1,
            "{what}: priority rose from {:?} to {:?}",
            pair[0],
            pair[1]
        );
    }
    let mut last: HashMap<(u32, u8), u64> = HashMap::new();
    for id in taken {
        if let Some(previous) = last.insert((id.0, id.1), id.3) {
            assert!(
                previous < id.3,
                "{what}: FIFO per (source, priority) broken at {id:?} after {previous}"
            );
        }
    }
}

/// What a take order must be: stable order by priority, highest first,
/// of `queued` (arrival order), those of `first` type first.
fn expected_order(queued: &[Id], first: Option<u8>) -> Vec<Id> {
    let mut phase1: Vec<Id> = queued
        .iter()
        .copied()
        .filter(|id| Some(id.2) == first)
        .collect();
    let mut phase2: Vec<Id> = queued
        .iter()
        .copied()
        .filter(|id| Some(id.2) != first)
        .collect();
    phase1.sort_by_key(|id| std::cmp::Reverse(id.1));
    phase2.sort_by_key(|id| std::cmp::Reverse(id.1));
    phase1.extend(phase2);
    phase1
}

/// BRIEF §3.3: "FIFO per (source, target, priority); higher priority
/// delivered first within a mailbox"; "selective by message type; peek".
/// Three senders, all eight priorities, a selective receive that skips
/// everything while waiting for the senders' DONE, then a selective drain
/// of one type, then the rest, each take preceded by a peek that must
/// show the same message.
#[test]
fn order_many_senders_all_priorities_selective_and_peek() {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let senders: Vec<String> = (0..3).map(|_| sender(48, 0, true, 50)).collect();
        let s = run_scenario(
            deterministic,
            workers,
            &senders,
            &receiver(3, 0, DATA_TYPE + 1, 0),
            "",
        );
        assert_eq!(s.mismatches, 0, "{what}: a peek showed another message");
        assert_eq!(s.queued.len(), 144, "{what}");
        assert_eq!(s.taken.len(), 144, "{what}: everything taken once");
        let selective = s.taken.iter().filter(|id| id.2 == 1).count();
        check_order(&format!("{what}, selective phase"), &s.taken[..selective]);
        check_order(&format!("{what}, second phase"), &s.taken[selective..]);
        assert!(
            s.taken[selective..].iter().all(|id| id.2 != 1),
            "{what}: the selective phase took every message of its type"
        );
        if workers == 1 {
            assert_eq!(s.taken, expected_order(&s.queued, Some(1)), "{what}");
        }
        let r = s.report.process("r").unwrap();
        assert_eq!(r.received, 147, "{what}: {r:?}");
        assert_eq!(r.undelivered, 0, "{what}");
    }
}

/// The documented `DropOldest` rule (message_router.rs: "The oldest message
/// of the lowest non-empty priority is dropped and counted to make room"),
/// replayed on `queued` (arrival order) into a mailbox of `capacity`:
/// what stays, and what was evicted.
fn model_drop_oldest(queued: &[Id], capacity: usize) -> (Vec<Id>, Vec<Id>) {
    let mut queues: Vec<Vec<Id>> = vec![Vec::new(); 8];
    let mut evicted = Vec::new();
    for &id in queued {
        let len: usize = queues.iter().map(Vec::len).sum();
        if len >= capacity {
            let lowest = queues.iter().position(|q| !q.is_empty()).unwrap();
            evicted.push(queues[lowest].remove(0));
        }
        queues[id.1 as usize].push(id);
    }
    let kept = queues.into_iter().rev().flatten().collect();
    (kept, evicted)
}

/// BRIEF §3.3 (`DropOldest`, "Dropped messages are counted and
/// reported"); ARCHITECTURE invariant 5 ("every dropped or undeliverable
/// message is reported to its sender with a DELIVERY_FAILURE notice and
/// counted"). Three senders flood a paused `drop_oldest` mailbox of 10;
/// the survivors come out in priority then FIFO order, and every eviction
/// is reported to, and counted by, its sender, and counted by the
/// receiver.
#[test]
fn drop_oldest_order_and_counts() {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let senders: Vec<String> = (0..3).map(|_| sender(40, 0, false, 400)).collect();
        let s = run_scenario(
            deterministic,
            workers,
            &senders,
            &receiver(0, 200, 0, 0),
            r#""mailbox":{"capacity":10,"overflow":"drop_oldest"}"#,
        );
        assert_eq!(s.mismatches, 0, "{what}");
        assert_eq!(s.queued.len(), 120, "{what}: every message is queued");
        assert_eq!(s.taken.len(), 10, "{what}: a full mailbox's worth taken");
        check_order(&what, &s.taken);
        if workers == 1 {
            let (kept, _) = model_drop_oldest(&s.queued, 10);
            assert_eq!(s.taken, kept, "{what}: the documented survivors");
        }
        let r = s.report.process("r").unwrap();
        assert_eq!(r.undelivered, 110, "{what}: {r:?}");
        let mut failures = 0;
        for n in 0..3 {
            let p = s.report.process(&format!("s{n}")).unwrap();
            assert_eq!(p.sent, 40, "{what}: {p:?}");
            let told = match p.status {
                estalogic_kernel::ExitStatus::Exited(code) => code as u64,
                ref other => panic!("{what}: s{n} {other}"),
            };
            assert_eq!(told, p.delivery_failures, "{what}: s{n} notices vs count");
            failures += p.delivery_failures;
        }
        assert_eq!(failures, 110, "{what}: every eviction reported");
    }
}

/// BRIEF §3.3 (`BlockSender`: "sender goes BLOCKED until space"),
/// "FIFO per (source, target, priority)". Three senders into a paused
/// `block_sender` mailbox of 4: nothing lost, FIFO per (source,
/// priority), every sender blocked. The receiver drains until 2 s pass
/// with nothing new (on a loaded host a blocked sender may take longer
/// than 100 ms to be woken and send again).
#[test]
fn block_sender_nothing_lost_fifo_kept() {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let senders: Vec<String> = (0..3).map(|_| sender(40, 0, false, 10)).collect();
        let s = run_scenario(
            deterministic,
            workers,
            &senders,
            &receiver(0, 100, 0, 2_000),
            r#""mailbox":{"capacity":4,"overflow":"block_sender"}"#,
        );
        // A receive frees room and wakes a blocked sender; on two
        // workers that sender may send a message that outranks the one the
        // receiver's next peek saw before its receive takes one, so a peek
        // and the receive after it agree only where nothing runs between.
        // (A message taken after such a peek is echoed as a mismatch.)
        if workers == 1 {
            assert_eq!(s.mismatches, 0, "{what}");
        }
        assert_eq!(s.taken.len() + s.mismatches, 120, "{what}");
        let mut last: HashMap<(u32, u8), u64> = HashMap::new();
        for id in &s.taken {
            if let Some(previous) = last.insert((id.0, id.1), id.3) {
                assert!(previous < id.3, "{what}: FIFO broken at {id:?}");
            }
        }
        for n in 0..3 {
            let p = s.report.process(&format!("s{n}")).unwrap();
            assert_eq!((p.sent, p.send_failures), (40, 0), "{what}: {p:?}");
            assert!(p.blocked_sends > 0, "{what}: {p:?}");
        }
    }
}

/// A task whose `run` (result i32, locals $r $seq $peer i64, $i $n i32)
/// runs `body`; data "r" at 0, header buffer at 4096, payload at 4160.
fn task(body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "r")
  (func (export "run") (result i32)
    (local $r i64) (local $seq i64) (local $peer i64) (local $i i32) (local $n i32)
    (local.set $peer (call $lookup (i32.const 0) (i32.const 1)))
    {body}))"#
    )
}

fn exit_code(report: &RunReport, name: &str) -> i32 {
    match report
        .process(name)
        .unwrap_or_else(|| panic!("{name} ran"))
        .status
    {
        estalogic_kernel::ExitStatus::Exited(code) => code,
        ref other => panic!("{name} ended {other}: {:?}", report.process(name)),
    }
}

/// BRIEF §3.3: "Bounded mailboxes: 1,024 default, 4,096 for HIGH/REALTIME
/// processes"; manifest.rs: a capacity outside 1..=65,536 is refused.
/// A sender fills a paused receiver of each manifest priority until
/// `MAILBOX_FULL` and returns how many got in.
#[test]
fn capacity_by_process_class_and_override_limits() {
    let filler = task(&format!(
        r#"(block $full (loop $more
      (local.set $r (call $send (local.get $peer) (i32.const {DATA_TYPE}) (i32.const 0) (i32.const 0) (i32.const 0)))
      (br_if $full (i64.lt_s (local.get $r) (i64.const 0)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $n) (i32.const 70000)))))
    (if (i64.ne (local.get $r) (i64.const {full})) (then (return (i32.const -1))))
    (local.get $n)"#,
        full = neg(ErrorCode::MAILBOX_FULL)
    ));
    let paused = task(
        "(drop (call $receive (i32.const 77) (i64.const 300) (i32.const 4096) (i32.const 4160) (i32.const 64))) (i32.const 0)",
    );
    for (extra, expected) in [
        (r#""priority":"lazy""#, 1_024),
        (r#""priority":"low""#, 1_024),
        (r#""priority":"normal""#, 1_024),
        (r#""priority":"high""#, 4_096),
        (r#""priority":"critical""#, 4_096),
        (r#""mailbox":{"capacity":1}"#, 1),
        (r#""priority":"high","mailbox":{"capacity":65536}"#, 65_536),
    ] {
        let mut k = kernel(true, 1);
        load(&mut k, "r", &paused, extra);
        load(&mut k, "s", &filler, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exit_code(&report, "s"), expected, "{extra}");
        assert_eq!(
            report.process("r").unwrap().undelivered,
            expected as u64,
            "{extra}"
        );
    }
    for capacity in [0u64, 65_537, u64::MAX] {
        let parsed = Manifest::parse(&format!(
            r#"{{"name":"r","version":"0.1.0","entry_point":"run","runtime":"wasm32",
                "mailbox":{{"capacity":{capacity}}}}}"#
        ));
        let error = parsed.expect_err("refused");
        assert!(error.to_string().contains("mailbox"), "{capacity}: {error}");
    }
}

/// BRIEF §3.3 "optional acknowledgements with timeout"; ABI `receive_reply`
/// "waits for the reply, ACK or DELIVERY_FAILURE notice answering
/// `correlation`"; routing.rs "answers an ACK_REQUESTED message with an ACK
/// (correlation = the message's sequence)". Steps, each returning its
/// number on failure: an ack arrives from the receiver with the right
/// correlation; a wrong correlation finds nothing; a message the receiver
/// never takes times out, then is failed back (NO_SUCH_PROCESS) when the
/// receiver ends.
#[test]
fn acks_arrive_time_out_and_fail_back() {
    let ack = 2 << 8;
    let timeout = neg(ErrorCode::TIMEOUT);
    let gone = neg(ErrorCode::NO_SUCH_PROCESS);
    let sender = task(&format!(
        r#"
    ;; 1: an ack arrives, correlation = sequence, flag ACK, from r.
    (local.set $seq (call $send (local.get $peer) (i32.const 0x1001) (i32.const {ack}) (i32.const 0) (i32.const 0)))
    (if (i64.le_s (local.get $seq) (i64.const 0)) (then (return (i32.const 1))))
    ;; 2: a wrong correlation finds nothing, the right one the ack.
    (local.set $r (call $receive_reply (i64.add (local.get $seq) (i64.const 1000)) (i64.const 50) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const {timeout})) (then (return (i32.const 2))))
    (local.set $r (call $receive_reply (local.get $seq) (i64.const 2000) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const 0)) (then (return (i32.const 3))))
    (if (i32.ne (i32.and (i32.load16_u (i32.const 4098)) (i32.const 4)) (i32.const 4)) (then (return (i32.const 4))))
    (if (i64.ne (i64.load (i32.const 4136)) (local.get $seq)) (then (return (i32.const 5))))
    (if (i64.ne (i64.load (i32.const 4104)) (local.get $peer)) (then (return (i32.const 6))))
    ;; 3: r takes nothing more: the ack times out, then the message is
    ;; failed back when r ends.
    (local.set $seq (call $send (local.get $peer) (i32.const 0x1002) (i32.const {ack}) (i32.const 0) (i32.const 0)))
    (local.set $r (call $receive_reply (local.get $seq) (i64.const 20) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const {timeout})) (then (return (i32.const 7))))
    (local.set $r (call $receive_reply (local.get $seq) (i64.const 5000) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (if (i64.ne (local.get $r) (i64.const {gone})) (then (return (i32.const 8))))
    (if (i64.ne (i64.load (i32.const 4136)) (local.get $seq)) (then (return (i32.const 9))))
    (i32.const 0)"#
    ));
    let receiver = task(
        r#"(drop (call $receive (i32.const 0x1001) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (drop (call $receive (i32.const 77) (i64.const 200) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (i32.const 0)"#,
    );
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let mut k = kernel(deterministic, workers);
        load(&mut k, "r", &receiver, "");
        load(&mut k, "s", &sender, "");
        k.spawn_all().unwrap();
        let report = k.run();
        assert_eq!(exit_code(&report, "s"), 0, "{what}: {:?}", report.processes);
        let s = report.process("s").unwrap();
        assert_eq!(s.delivery_failures, 1, "{what}: {s:?}");
        assert_eq!(report.process("r").unwrap().undelivered, 1, "{what}");
    }
}

/// BRIEF §3.3 "Every message is delivered or explicitly failed in bounded
/// time"; ARCHITECTURE invariant 10 (processes that can never wake are
/// stopped DEADLOCKED one at a time, in pid order, and one's end lets
/// another run). r never takes its 50 messages (some asking for acks);
/// s waits for ever. r is stopped first: every message is failed back to
/// s, which counts the notices.
#[test]
fn mail_of_a_deadlocked_receiver_is_failed_back_in_bounded_time() {
    let gone = neg(ErrorCode::NO_SUCH_PROCESS);
    let timeout = neg(ErrorCode::TIMEOUT);
    let sender = task(&format!(
        r#"(block $sent (loop $more
      (drop (call $send (local.get $peer) (i32.const 0x1001)
        (i32.shl (i32.and (local.get $i) (i32.const 2)) (i32.const 8)) (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 50)))))
    ;; Waits for ever for anything: the first notice.
    (if (i64.eq (call $receive (i32.const 0) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)) (i64.const {gone}))
      (then (local.set $n (i32.const 1))))
    (block $out (loop $more
      (local.set $r (call $receive (i32.const 0) (i64.const 100) (i32.const 4096) (i32.const 4160) (i32.const 64)))
      (br_if $out (i64.eq (local.get $r) (i64.const {timeout})))
      (if (i64.eq (local.get $r) (i64.const {gone})) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
      (br $more)))
    (local.get $n)"#
    ));
    let receiver = task(
        r#"(drop (call $receive (i32.const 77) (i64.const -1) (i32.const 4096) (i32.const 4160) (i32.const 64)))
    (i32.const 0)"#,
    );
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let mut k = kernel(deterministic, workers);
        load(&mut k, "r", &receiver, "");
        load(&mut k, "s", &sender, "");
        k.spawn("r").unwrap();
        k.spawn("s").unwrap();
        let started = Instant::now();
        let report = k.run();
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        assert_eq!(
            exit_code(&report, "s"),
            50,
            "{what}: {:?}",
            report.processes
        );
        let s = report.process("s").unwrap();
        let r = report.process("r").unwrap();
        assert_eq!((s.sent, s.delivery_failures), (50, 50), "{what}: {s:?}");
        assert_eq!((r.received, r.undelivered), (0, 50), "{what}: {r:?}");
    }
}

/// `KernelBuilder::workers`: "At most `MAX_WORKERS`: `build` refuses
/// more", with an error naming the count, never a panic (`workers(1 << 32)`
/// panicked dividing by a count truncated to 0).
#[test]
fn workers_past_the_limit_are_an_error_not_a_panic() {
    let mut counts = vec![estalogic_kernel::MAX_WORKERS + 1];
    if let Ok(huge) = usize::try_from(1u64 << 32) {
        counts.push(huge);
        counts.push(usize::MAX);
    }
    for workers in counts {
        let built = Kernel::builder().workers(workers).max_processes(4).build();
        match built {
            Err(KernelError::Engine(message)) => {
                assert!(
                    message.contains(&format!("{workers} worker threads")),
                    "{message}"
                );
            }
            other => panic!("workers({workers}): {:?}", other.map(|_| ())),
        }
    }
}

/// The embedding API misused: spawn before loading, `spawn_all` with
/// nothing loaded, runs with nothing to run (twice), loading and running
/// after a run, a shutdown handle used from another thread between runs,
/// `take_audit` taking.
#[test]
fn embedding_misuse() {
    const EXIT7: &str =
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 7)))"#;
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let mut k = kernel(deterministic, workers);
        match k.spawn("nothing") {
            Err(KernelError::UnknownModule(name)) => assert_eq!(name, "nothing"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(k.spawn_all().unwrap().is_empty(), "{what}");
        for _ in 0..2 {
            let started = Instant::now();
            let report = k.run();
            assert!(report.processes.is_empty(), "{what}");
            assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        }
        load(&mut k, "a", EXIT7, "");
        k.spawn("a").unwrap();
        assert_eq!(exit_code(&k.run(), "a"), 7, "{what}");
        // A shutdown requested from another thread between runs stops the
        // next run at once, and only that one.
        let handle = k.shutdown_handle();
        std::thread::spawn(move || handle.request()).join().unwrap();
        k.spawn("a").unwrap();
        let stopped = k.run();
        assert_eq!(stopped.processes.len(), 1, "{what}");
        k.spawn("a").unwrap();
        assert_eq!(
            exit_code(&k.run(), "a"),
            7,
            "{what}: a later run starts afresh"
        );
        let audit = k.take_audit();
        assert!(!audit.is_empty(), "{what}: grants were audited");
        assert!(k.take_audit().is_empty(), "{what}: taken");
    }
}

/// BRIEF §3.3 ("Dropped messages are counted and reported"), the
/// overflow modes' docs (message_router.rs: `DropNewest` "The new message
/// is dropped and counted; the send succeeds"; `NotifySender` "The send
/// fails at once with MAILBOX_FULL"). Three senders flood a paused
/// mailbox of 10: the first 10 queued survive, in priority then FIFO
/// order, and the counts add up between senders and receiver.
#[test]
fn drop_newest_and_notify_sender_counts_add_up() {
    for mode in ["drop_newest", "notify_sender"] {
        for (deterministic, workers) in RUNS {
            let what = format!("{mode}, deterministic {deterministic}, {workers} workers");
            let senders: Vec<String> = (0..3).map(|_| sender(40, 0, false, 400)).collect();
            let s = run_scenario(
                deterministic,
                workers,
                &senders,
                &receiver(0, 200, 0, 0),
                &format!(r#""mailbox":{{"capacity":10,"overflow":"{mode}"}}"#),
            );
            assert_eq!(s.mismatches, 0, "{what}");
            assert_eq!(s.queued.len(), 10, "{what}: only what got in is queued");
            check_order(&what, &s.taken);
            if workers == 1 {
                assert_eq!(s.taken, expected_order(&s.queued, None), "{what}");
            }
            let r = s.report.process("r").unwrap();
            let (mut sent, mut failed_at_once, mut failed_later) = (0, 0, 0);
            for n in 0..3 {
                let p = s.report.process(&format!("s{n}")).unwrap();
                assert_eq!(
                    exit_code(&s.report, &format!("s{n}")) as u64,
                    p.delivery_failures,
                    "{what}: notices vs count"
                );
                sent += p.sent;
                failed_at_once += p.send_failures;
                failed_later += p.delivery_failures;
            }
            if mode == "drop_newest" {
                assert_eq!(
                    (sent, failed_at_once, failed_later),
                    (120, 0, 110),
                    "{what}"
                );
                assert_eq!(r.undelivered, 110, "{what}: {r:?}");
            } else {
                assert_eq!((sent, failed_at_once, failed_later), (10, 110, 0), "{what}");
                assert_eq!(r.undelivered, 0, "{what}: {r:?}");
            }
            assert_eq!(r.received, 10, "{what}: {r:?}");
        }
    }
}

/// `KernelBuilder::slice_policy`: fuel per ms outside
/// `SlicePolicy::FUEL_PER_MS` is refused by `build`, naming the field; the
/// other fields at their extremes give a kernel that runs (a fuel per ms of
/// `u64::MAX` panicked in `Kernel::run` on an overflowing multiply).
#[test]
fn extreme_slice_policies_are_refused_or_run() {
    use estalogic_kernel::SlicePolicy;
    const EXIT0: &str = r#"(module (memory (export "memory") 1) (func (export "run")))"#;
    for fuel_per_ms in [0, 999, 1_000_000_001, u64::MAX] {
        let policy = SlicePolicy {
            fuel_per_ms,
            ..SlicePolicy::default()
        };
        match Kernel::builder()
            .deterministic(true)
            .slice_policy(policy)
            .build()
        {
            Err(KernelError::Engine(message)) => {
                assert!(message.contains("fuel_per_ms"), "{message}");
            }
            other => panic!("fuel_per_ms {fuel_per_ms}: {:?}", other.map(|_| ())),
        }
    }
    let policies = [
        SlicePolicy {
            service_turn_checkpoints: u64::MAX,
            ..SlicePolicy::default()
        },
        SlicePolicy {
            service_margin_ns: u64::MAX,
            ..SlicePolicy::default()
        },
        SlicePolicy {
            checkpoint_fuel: u64::MAX,
            fuel_per_ms: 1_000,
            ..SlicePolicy::default()
        },
        SlicePolicy {
            fuel_per_ms: 1_000_000_000,
            checkpoint_fuel: 0,
            service_turn_checkpoints: 0,
            service_margin_ns: 0,
        },
    ];
    for policy in policies {
        let mut k = Kernel::builder()
            .deterministic(true)
            .slice_policy(policy)
            .build()
            .unwrap();
        load(&mut k, "a", EXIT0, "");
        k.spawn("a").unwrap();
        let report = k.run();
        assert_eq!(
            report.processes[0].status,
            estalogic_kernel::ExitStatus::Exited(0),
            "{policy:?}"
        );
    }
}
