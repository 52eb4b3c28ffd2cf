//! A systematic matrix of bad arguments against every
//! syscall of docs/ABI.md, made by a task and by a handler, and for sends
//! to a task (the mailbox path) and to an idle handler (the direct path,
//! `ipc::send_direct`). Each case checks the documented code, that it is
//! the same for every caller and path, and that the counts (`sent`,
//! `send_failures`, the IPC trace, the peer's `received`) and the fuel
//! (deterministic mode) are the same across paths. From the
//! twenty-eighth probe round; its three "Failed before the fix" cases fail
//! without their fixes.

use estalogic_kernel::core::capabilities_engine::AuditKind;
use estalogic_kernel::{ExitStatus, Kernel, Manifest, RunReport};
use std::path::Path;

const IMPORTS: &str = r#"
  (import "estalogic" "exit" (func $exit (param i32)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive_reply" (func $receive_reply (param i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "broadcast" (func $broadcast (param i32 i32 i32 i32) (result i64)))
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_inspect" (func $inspect (param i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
"#;

const INVALID_ARGUMENT: i64 = -1001;
const PAYLOAD_TOO_LARGE: i64 = -1003;
const INVALID_POINTER: i64 = -1004;
const INVALID_UTF8: i64 = -1005;
const NOT_FOUND: i64 = -1006;
const NO_SUCH_PROCESS: i64 = -2001;
const PERMISSION_DENIED: i64 = -2002;
const INVALID_HANDLE: i64 = -2003;
const WOULD_DEADLOCK: i64 = -2004;
const WOULD_BLOCK: i64 = -2005;
const TIMEOUT: i64 = -3001;

/// Added to a result to make it an exit code that is never 0 (a handler
/// returning 0 would wait for its next message instead of ending).
const OFFSET: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Task,
    Handler,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Task,
    Handler,
}

/// The probe: globals `$peer` (the pid of `peer`), `$dead` (a later
/// generation of it, never alive), `$me`; memory one page; "peer" at
/// 60000, an invalid UTF-8 byte at 60010, "nobody" at 60020. `expr` (an
/// i64 expression) is evaluated once, in `run` for a task or at STARTED
/// for a handler, and its value plus [`OFFSET`] is the exit code.
fn probe(who: Who, expr: &str) -> String {
    let prologue = r#"
    (global.set $me (call $self))
    (global.set $peer (call $lookup (i32.const 60000) (i32.const 4)))
    (global.set $dead (i64.add (global.get $peer) (i64.const 0x100000000)))"#;
    let entry = match who {
        Who::Task => format!(
            r#"(func (export "run") (result i32) (local $r i64)
    {prologue}
    (local.set $r {expr})
    (i32.add (i32.wrap_i64 (local.get $r)) (i32.const {OFFSET})))"#
        ),
        Who::Handler => format!(
            r#"(func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param $len i32) (result i32) (local $r i64)
    {prologue}
    (local.set $r {expr})
    (i32.add (i32.wrap_i64 (local.get $r)) (i32.const {OFFSET})))"#
        ),
    };
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (global $peer (mut i64) (i64.const 0))
  (global $dead (mut i64) (i64.const 0))
  (global $me (mut i64) (i64.const 0))
  (data (i32.const 60000) "peer")
  (data (i32.const 60010) "\ff\fe")
  (data (i32.const 60020) "nobody")
  {entry})"#
    )
}

/// A task that takes messages until 50 ms pass with none, then exits 0.
const PEER_TASK: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop
      (br_if 0 (i64.ne (call $receive (i32.const 0) (i64.const 50) (i32.const 0) (i32.const 64) (i32.const 8192))
                       (i64.const -3001))))
    (i32.const 0)))"#;

/// A handler that takes every message (inbox of 4,096 bytes) and waits.
const PEER_HANDLER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000100000000400))
  (func (export "handle") (param i32) (result i32) (i32.const 0)))"#;

const CAPS: &[&str] = &[
    r#""messaging:send""#,
    r#""messaging:receive""#,
    r#""process:lookup""#,
    r#""log:write""#,
    r#""time:read""#,
    r#""messaging:broadcast""#,
];

fn load(kernel: &mut Kernel, name: &str, entry: &str, wat: &str, caps: &[&str]) {
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]}}"#,
        caps.join(",")
    ))
    .unwrap();
    kernel
        .load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// What one run of a case showed.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    /// The expression's value, or how the probe ended otherwise.
    result: Result<i64, String>,
    fuel: u64,
    sent: u64,
    send_failures: u64,
    /// Trace records whose source is the probe.
    traced: usize,
    peer_received: u64,
    /// Audit events about the probe (denials, delegations, revocations),
    /// after spawn.
    audits: usize,
}

impl Outcome {
    /// Everything but the fuel.
    fn counts(&self) -> (u64, u64, usize, u64, usize) {
        (
            self.sent,
            self.send_failures,
            self.traced,
            self.peer_received,
            self.audits,
        )
    }
}

fn run_with(who: Who, peer: Peer, expr: &str, caps: &[&str]) -> Outcome {
    let mut k = Kernel::builder()
        .deterministic(true)
        .workers(1)
        .trace_ipc(true)
        .build()
        .unwrap();
    match peer {
        Peer::Task => load(&mut k, "peer", "run", PEER_TASK, CAPS),
        Peer::Handler => load(&mut k, "peer", "handle", PEER_HANDLER, CAPS),
    }
    let entry = if who == Who::Task { "run" } else { "handle" };
    load(&mut k, "probe", entry, &probe(who, expr), caps);
    k.spawn("peer").unwrap();
    let pid = k.spawn("probe").unwrap();
    let _ = k.take_audit();
    let report = k.run();
    let audits = k
        .take_audit()
        .into_iter()
        .filter(|e| e.holder == pid && e.kind != AuditKind::Revoked)
        .count();
    outcome(&report, audits, pid)
}

fn outcome(report: &RunReport, audits: usize, pid: estalogic_abi::Pid) -> Outcome {
    let p = report.process("probe").unwrap();
    let result = match &p.status {
        ExitStatus::Exited(code) => Ok(i64::from(*code) - OFFSET),
        other => Err(format!("{other:?}")),
    };
    Outcome {
        result,
        fuel: p.fuel_used,
        sent: p.sent,
        send_failures: p.send_failures,
        traced: report
            .trace
            .iter()
            .filter(|t| t.header.source == pid)
            .count(),
        peer_received: report.process("peer").map_or(0, |p| p.received),
        audits,
    }
}

fn run(who: Who, peer: Peer, expr: &str) -> Outcome {
    run_with(who, peer, expr, CAPS)
}

const WHO: [Who; 2] = [Who::Task, Who::Handler];
const PEERS: [Peer; 2] = [Peer::Task, Peer::Handler];

/// Runs `cases` (expression, expected value) for every caller and peer:
/// the value must be the expected one everywhere, the counts the same
/// everywhere, and the fuel of one caller kind the same for both peers.
fn matrix(cases: &[(String, i64)], failures: &mut Vec<String>) {
    for (expr, want) in cases {
        let mut seen: Vec<(Who, Peer, Outcome)> = Vec::new();
        for who in WHO {
            for peer in PEERS {
                let got = run(who, peer, expr);
                if got.result != Ok(*want) {
                    failures.push(format!(
                        "{expr}: {who:?} caller, {peer:?} peer: {:?}, ABI says {want}",
                        got.result
                    ));
                }
                seen.push((who, peer, got));
            }
        }
        let (_, _, first) = &seen[0];
        // A payload larger than a handler's inbox is not delivered to it
        // (ABI Handler processes 6): its `received` differs, nothing else.
        let unfit = expr.contains("(i32.const 4097)");
        let counts = |o: &Outcome| {
            let mut c = o.counts();
            if unfit {
                c.3 = 0;
            }
            c
        };
        for (who, peer, got) in &seen[1..] {
            if counts(got) != counts(first) {
                failures.push(format!(
                    "{expr}: {who:?} caller, {peer:?} peer: (sent, send_failures, traced, \
                     peer received, audits) {:?}, a task to a task {:?}",
                    got.counts(),
                    first.counts()
                ));
            }
        }
        for who in WHO {
            let fuels: Vec<u64> = seen
                .iter()
                .filter(|(w, _, _)| *w == who)
                .map(|(_, _, o)| o.fuel)
                .collect();
            if fuels[0] != fuels[1] {
                failures.push(format!(
                    "{expr}: {who:?} caller: fuel {} to a task peer, {} to a handler peer",
                    fuels[0], fuels[1]
                ));
            }
        }
    }
}

fn send(target: &str, ty: &str, options: &str, ptr: &str, len: &str) -> String {
    format!(
        "(call $send {target} (i32.const {ty}) (i32.const {options}) (i32.const {ptr}) (i32.const {len}))"
    )
}

fn reply(target: &str, corr: &str, ty: &str, options: &str, ptr: &str, len: &str) -> String {
    format!(
        "(call $reply {target} (i64.const {corr}) (i32.const {ty}) (i32.const {options}) (i32.const {ptr}) (i32.const {len}))"
    )
}

/// (type, options, ptr, len, expected) for a send to a live peer.
const SEND_ARGS: &[(&str, &str, &str, &str, i64)] = &[
    ("0x1001", "0", "0", "16", 1),
    ("0", "0", "0", "16", INVALID_ARGUMENT),
    ("-1", "0", "0", "16", 1),
    ("0x1001", "8", "0", "16", INVALID_ARGUMENT),
    ("0x1001", "0x1000000", "0", "16", INVALID_ARGUMENT),
    ("0x1001", "-1", "0", "16", INVALID_ARGUMENT),
    ("0x1001", "-2147483648", "0", "16", INVALID_ARGUMENT),
    ("0x1001", "0x400", "0", "16", INVALID_ARGUMENT), // ACK
    ("0x1001", "0x800", "0", "16", INVALID_ARGUMENT), // BROADCAST
    ("0x1001", "0x1000", "0", "16", INVALID_ARGUMENT), // DELIVERY_FAILURE
    ("0x1001", "0x2000", "0", "16", INVALID_ARGUMENT), // CALL
    ("0x1001", "0x800000", "0", "16", INVALID_ARGUMENT), // flag bit 15
    ("0x1001", "0x107", "0", "16", 1),                // REPLY, priority 7
    ("0x1001", "0x0", "0", "-1", INVALID_ARGUMENT),
    ("0x1001", "0x0", "0", "-2147483648", INVALID_ARGUMENT),
    ("0x1001", "0x0", "0", "0x100001", PAYLOAD_TOO_LARGE),
    ("0x1001", "0x0", "0", "2147483647", PAYLOAD_TOO_LARGE),
    ("0x1001", "0x0", "65535", "1", 1),
    ("0x1001", "0x0", "65535", "2", INVALID_POINTER),
    ("0x1001", "0x0", "65536", "1", INVALID_POINTER),
    ("0x1001", "0x0", "65536", "0", 1),
    ("0x1001", "0x0", "-1", "1", INVALID_POINTER),
    ("0x1001", "0x0", "-2147483648", "16", INVALID_POINTER),
    ("0x1001", "0x0", "2147483647", "1", INVALID_POINTER),
    ("0x1001", "0x0", "0", "4096", 1),
    ("0x1001", "0x0", "61439", "4097", 1), // larger than the inbox
    ("0", "0x0", "65536", "16", INVALID_ARGUMENT),
    ("0x1001", "8", "0", "0x100001", INVALID_ARGUMENT),
    ("0x1001", "0", "65536", "0x100001", PAYLOAD_TOO_LARGE),
    ("0", "0", "-1", "-1", INVALID_ARGUMENT),
];

/// ABI "send": the codes of every argument, for a task or a handler
/// caller, to a task or to an idle handler; same counts and fuel on both
/// paths (only the ACK_REQUESTED send and the one larger than the inbox go
/// through the mailbox either way).
#[test]
fn send_and_reply_argument_matrix() {
    let mut cases: Vec<(String, i64)> = Vec::new();
    for (ty, options, ptr, len, want) in SEND_ARGS {
        cases.push((send("(global.get $peer)", ty, options, ptr, len), *want));
        // reply: the same checks, correlation anything.
        for corr in ["0", "-1", "-9223372036854775808"] {
            if *options == "0" || *options == "0x107" {
                cases.push((
                    reply("(global.get $peer)", corr, ty, options, ptr, len),
                    *want,
                ));
            }
        }
    }
    // The acknowledged send: through the mailbox even to a handler.
    cases.push((send("(global.get $peer)", "0x1001", "0x205", "0", "16"), 1));
    // Targets that name nothing, with good and bad arguments: the target
    // comes first.
    for target in [
        "(i64.const 0)",
        "(i64.const -1)",
        "(i64.const -9223372036854775808)",
        "(i64.const 9223372036854775807)",
        "(global.get $dead)",
    ] {
        cases.push((send(target, "0x1001", "0", "0", "16"), NO_SUCH_PROCESS));
        cases.push((send(target, "0", "8", "-1", "-1"), NO_SUCH_PROCESS));
        cases.push((
            reply(target, "5", "0x1001", "0", "0", "16"),
            NO_SUCH_PROCESS,
        ));
    }
    let mut failures = Vec::new();
    matrix(&cases, &mut failures);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn recv(filter: &str, timeout: &str, header: &str, buffer: &str, cap: &str) -> String {
    format!(
        "(call $receive (i32.const {filter}) (i64.const {timeout}) (i32.const {header}) (i32.const {buffer}) (i32.const {cap}))"
    )
}

fn recv_reply(corr: &str, timeout: &str, header: &str, buffer: &str, cap: &str) -> String {
    format!(
        "(call $receive_reply (i64.const {corr}) (i64.const {timeout}) (i32.const {header}) (i32.const {buffer}) (i32.const {cap}))"
    )
}

/// (timeout, header, buffer, capacity, what a task gets with an empty
/// mailbox); a handler gets the same but WOULD_BLOCK where a task would
/// wait (timeout other than 0 and every check passed).
const WAIT_ARGS: &[(&str, &str, &str, &str, i64)] = &[
    ("0", "8192", "8256", "64", TIMEOUT),
    ("5", "8192", "8256", "64", TIMEOUT),
    ("-2", "8192", "8256", "64", INVALID_ARGUMENT),
    (
        "-9223372036854775808",
        "8192",
        "8256",
        "64",
        INVALID_ARGUMENT,
    ),
    ("0", "65480", "8256", "64", TIMEOUT),
    ("0", "65481", "8256", "64", INVALID_POINTER),
    ("5", "65481", "8256", "64", INVALID_POINTER),
    ("0", "-1", "8256", "64", INVALID_POINTER),
    ("0", "-2147483648", "8256", "64", INVALID_POINTER),
    ("0", "2147483647", "8256", "64", INVALID_POINTER),
    ("0", "8192", "65535", "1", TIMEOUT),
    ("0", "8192", "65535", "2", INVALID_POINTER),
    ("5", "8192", "65535", "2", INVALID_POINTER),
    ("0", "8192", "65536", "0", TIMEOUT),
    ("0", "8192", "8256", "-1", INVALID_ARGUMENT),
    ("5", "8192", "8256", "-2147483648", INVALID_ARGUMENT),
    ("0", "8192", "0", "2147483647", INVALID_POINTER),
    ("-2", "65481", "8256", "-1", INVALID_ARGUMENT),
    ("-1", "65481", "8256", "64", INVALID_POINTER),
    ("5", "8192", "-1", "64", INVALID_POINTER),
];

/// ABI "receive", "receive_reply", "peek" and Handler processes 4: the
/// codes of every argument, the same for a task and a handler (but
/// WOULD_BLOCK for a handler's good wait with a timeout).
#[test]
fn wait_argument_matrix() {
    let mut cases: Vec<(String, i64, i64)> = Vec::new();
    for (timeout, header, buffer, cap, want) in WAIT_ARGS {
        let handler_want = if *want == TIMEOUT && *timeout != "0" {
            WOULD_BLOCK
        } else {
            *want
        };
        for filter in ["0", "-1", "0x1001", "-2147483648"] {
            cases.push((
                recv(filter, timeout, header, buffer, cap),
                *want,
                handler_want,
            ));
        }
        for corr in ["0", "1", "-1", "-9223372036854775808"] {
            cases.push((
                recv_reply(corr, timeout, header, buffer, cap),
                *want,
                handler_want,
            ));
        }
    }
    for (filter, header, want) in [
        ("0", "8192", NOT_FOUND),
        ("-1", "65480", NOT_FOUND),
        ("0", "65481", INVALID_POINTER),
        ("0", "-1", INVALID_POINTER),
        ("0x1001", "-2147483648", INVALID_POINTER),
        ("0", "2147483647", INVALID_POINTER),
    ] {
        cases.push((
            format!("(call $peek (i32.const {filter}) (i32.const {header}))"),
            want,
            want,
        ));
    }
    let mut failures = Vec::new();
    for (expr, task_want, handler_want) in &cases {
        let t = run(Who::Task, Peer::Handler, expr);
        let h = run(Who::Handler, Peer::Handler, expr);
        if t.result != Ok(*task_want) {
            failures.push(format!(
                "{expr}: a task gets {:?}, ABI says {task_want}",
                t.result
            ));
        }
        if h.result != Ok(*handler_want) {
            failures.push(format!(
                "{expr}: a handler gets {:?}, ABI says {handler_want}",
                h.result
            ));
        }
        if t.counts() != h.counts() {
            failures.push(format!(
                "{expr}: counts task {:?} handler {:?}",
                t.counts(),
                h.counts()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// ABI "log", "lookup", "broadcast", `cap_*`: the codes of every bad
/// argument, the same for a task and a handler.
#[test]
fn log_lookup_broadcast_and_cap_argument_matrix() {
    let mut cases: Vec<(String, i64)> = Vec::new();
    for (level, ptr, len, want) in [
        ("0", "0", "16", 0),
        ("4", "0", "65536", 0),
        ("-1", "0", "16", INVALID_ARGUMENT),
        ("5", "0", "16", INVALID_ARGUMENT),
        ("-2147483648", "0", "16", INVALID_ARGUMENT),
        ("2147483647", "0", "16", INVALID_ARGUMENT),
        ("2", "0", "65537", INVALID_ARGUMENT),
        ("2", "0", "-1", INVALID_ARGUMENT),
        ("2", "0", "-2147483648", INVALID_ARGUMENT),
        ("2", "65535", "1", 0),
        ("2", "65535", "2", INVALID_POINTER),
        ("2", "65536", "1", INVALID_POINTER),
        ("2", "65536", "0", 0),
        ("2", "-1", "1", INVALID_POINTER),
        ("2", "-2147483648", "16", INVALID_POINTER),
        ("5", "-1", "1", INVALID_ARGUMENT),
        ("2", "60010", "2", 0), // not UTF-8: written as U+FFFD
    ] {
        cases.push((
            format!("(call $log (i32.const {level}) (i32.const {ptr}) (i32.const {len}))"),
            want,
        ));
    }
    for (ptr, len, want) in [
        ("60020", "6", NOT_FOUND),
        ("60010", "2", INVALID_UTF8),
        ("60020", "0", NOT_FOUND),
        ("60020", "-1", INVALID_ARGUMENT),
        ("60020", "257", INVALID_ARGUMENT),
        ("60020", "-2147483648", INVALID_ARGUMENT),
        ("65535", "2", INVALID_POINTER),
        ("65536", "1", INVALID_POINTER),
        ("-1", "4", INVALID_POINTER),
        ("2147483647", "256", INVALID_POINTER),
    ] {
        cases.push((
            format!("(call $lookup (i32.const {ptr}) (i32.const {len}))"),
            want,
        ));
    }
    // broadcast: one copy offered, to the peer.
    for (ty, options, ptr, len, want) in SEND_ARGS {
        if *len == "4097" {
            continue;
        }
        let want = if *want > 0 { 1 } else { *want };
        cases.push((
            format!(
                "(call $broadcast (i32.const {ty}) (i32.const {options}) (i32.const {ptr}) (i32.const {len}))"
            ),
            want,
        ));
    }
    // cap_handles: 6 handles (one per capability).
    for (ptr, max, want) in [
        ("8192", "64", 6),
        ("8192", "0", 6),
        // An empty range past the end of memory is outside it (see
        // `an_empty_range_past_the_end_of_memory_is_outside_it`).
        ("-1", "0", INVALID_POINTER),
        ("8192", "-1", INVALID_ARGUMENT),
        ("8192", "-2147483648", INVALID_ARGUMENT),
        ("65532", "1", 6),
        ("65533", "1", INVALID_POINTER),
        ("65512", "6", 6),
        ("65512", "7", INVALID_POINTER),
        ("0", "2147483647", INVALID_POINTER),
        ("0", "536870912", INVALID_POINTER),
        ("-4", "1", INVALID_POINTER),
    ] {
        cases.push((
            format!("(call $handles (i32.const {ptr}) (i32.const {max}))"),
            want,
        ));
    }
    // cap_inspect: handle 1 is messaging:send "*", a 49-byte record.
    for (h, ptr, len, want) in [
        ("1", "8192", "49", 49),
        ("1", "65487", "49", 49),
        ("1", "65488", "49", INVALID_POINTER),
        ("1", "8192", "-1", INVALID_ARGUMENT),
        ("1", "-1", "49", INVALID_POINTER),
        ("0", "8192", "64", INVALID_HANDLE),
        ("-1", "8192", "64", INVALID_HANDLE),
        ("-2147483648", "8192", "64", INVALID_HANDLE),
        ("2147483647", "8192", "64", INVALID_HANDLE),
        ("7", "8192", "64", INVALID_HANDLE),
    ] {
        cases.push((
            format!("(call $inspect (i32.const {h}) (i32.const {ptr}) (i32.const {len}))"),
            want,
        ));
    }
    // cap_delegate of handle 1 (messaging:send, WRITE|DELEGATE|REVOKE =
    // 194) to the peer.
    let delegate = |h: &str,
                    target: &str,
                    rights: &str,
                    exp: &str,
                    uses: &str,
                    ptr: &str,
                    len: &str| {
        format!(
            "(call $delegate (i32.const {h}) {target} (i32.const {rights}) (i64.const {exp}) (i64.const {uses}) (i32.const {ptr}) (i32.const {len}))"
        )
    };
    let peer = "(global.get $peer)";
    for (h, target, rights, exp, uses, ptr, len, want) in [
        ("1", peer, "2", "-1", "-1", "0", "0", 7),
        ("1", peer, "2", "-1", "-1", "60000", "4", 7),
        ("0", peer, "2", "-1", "-1", "0", "0", INVALID_HANDLE),
        ("-1", peer, "2", "-1", "-1", "0", "0", INVALID_HANDLE),
        (
            "2147483647",
            peer,
            "2",
            "-1",
            "-1",
            "0",
            "0",
            INVALID_HANDLE,
        ),
        ("1", peer, "-1", "-1", "-1", "0", "0", INVALID_ARGUMENT),
        ("1", peer, "65536", "-1", "-1", "0", "0", INVALID_ARGUMENT),
        ("1", peer, "0x8000", "-1", "-1", "0", "0", INVALID_ARGUMENT),
        ("1", peer, "2", "-2", "-1", "0", "0", INVALID_ARGUMENT),
        (
            "1",
            peer,
            "2",
            "-9223372036854775808",
            "-1",
            "0",
            "0",
            INVALID_ARGUMENT,
        ),
        ("1", peer, "2", "-1", "-2", "0", "0", INVALID_ARGUMENT),
        ("1", peer, "2", "-1", "-1", "0", "-1", INVALID_ARGUMENT),
        ("1", peer, "2", "-1", "-1", "0", "1025", INVALID_ARGUMENT),
        ("1", peer, "2", "-1", "-1", "65535", "2", INVALID_POINTER),
        ("1", peer, "2", "-1", "-1", "-1", "4", INVALID_POINTER),
        ("1", peer, "2", "-1", "-1", "60010", "2", INVALID_UTF8),
        (
            "1",
            "(i64.const 0)",
            "2",
            "-1",
            "-1",
            "0",
            "0",
            NO_SUCH_PROCESS,
        ),
        (
            "1",
            "(i64.const -1)",
            "2",
            "-1",
            "-1",
            "0",
            "0",
            NO_SUCH_PROCESS,
        ),
        (
            "1",
            "(global.get $dead)",
            "2",
            "-1",
            "-1",
            "0",
            "0",
            NO_SUCH_PROCESS,
        ),
        (
            "99",
            "(global.get $dead)",
            "2",
            "-1",
            "-1",
            "0",
            "0",
            INVALID_HANDLE,
        ),
    ] {
        cases.push((delegate(h, target, rights, exp, uses, ptr, len), want));
    }
    for (h, mode, want) in [
        ("1", "2", 1),
        ("0", "0", INVALID_HANDLE),
        ("-1", "0", INVALID_HANDLE),
        ("-2147483648", "1", INVALID_HANDLE),
        ("2147483647", "2", INVALID_HANDLE),
        ("1", "3", INVALID_ARGUMENT),
        ("1", "-1", INVALID_ARGUMENT),
        ("1", "-2147483648", INVALID_ARGUMENT),
    ] {
        cases.push((
            format!("(call $revoke (i32.const {h}) (i32.const {mode}))"),
            want,
        ));
    }
    let mut failures = Vec::new();
    for (expr, want) in &cases {
        let t = run(Who::Task, Peer::Task, expr);
        let h = run(Who::Handler, Peer::Task, expr);
        for (who, o) in [("task", &t), ("handler", &h)] {
            if o.result != Ok(*want) {
                failures.push(format!(
                    "{expr}: a {who} gets {:?}, ABI says {want}",
                    o.result
                ));
            }
        }
        if t.counts() != h.counts() {
            failures.push(format!(
                "{expr}: counts task {:?} handler {:?}",
                t.counts(),
                h.counts()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A `send_receive` to `target` with the given arguments (WAT operands),
/// its answer buffer at 8256 (64 bytes).
#[allow(clippy::too_many_arguments)]
fn call(
    target: &str,
    ty: &str,
    options: &str,
    ptr: &str,
    len: &str,
    wait_for: &str,
    timeout: &str,
    header: &str,
) -> String {
    format!(
        "(call $send_receive {target} (i64.const 0) (i32.const {ty}) (i32.const {options}) (i32.const {ptr}) (i32.const {len}) \
         (i64.const {wait_for}) (i64.const {timeout}) (i32.const {header}) (i32.const 8256) (i32.const 64))"
    )
}

/// ABI "send_receive" and Handler processes 4: a handler's `send_receive`
/// is WOULD_BLOCK "having done nothing", but "every check a task's call
/// makes before it would wait comes first, with the same code" (a missing
/// capability PERMISSION_DENIED, ...). A task's call checks its target
/// (NO_SUCH_PROCESS), its send capability for that target
/// (PERMISSION_DENIED) and a call to itself waiting for ever
/// (WOULD_DEADLOCK) before it waits.
// Failed before the fix: a handler's send_receive never looked at its
// target: to a dead pid, to pid 0, to a module its scoped `messaging:send`
// does not cover, and to itself with wait_for -1 and timeout -1, it got
// WOULD_BLOCK where a task gets NO_SUCH_PROCESS, PERMISSION_DENIED or
// WOULD_DEADLOCK.
#[test]
fn a_handlers_send_receive_checks_what_a_tasks_checks_before_waiting() {
    let peer = "(global.get $peer)";
    let cases: Vec<(String, i64, i64)> = vec![
        // Good: a task sends and times out; a handler would block.
        (
            call(peer, "0x1001", "0", "0", "16", "0", "5", "8192"),
            TIMEOUT,
            WOULD_BLOCK,
        ),
        // Bad arguments: the same code for both, nothing sent.
        (
            call(peer, "0", "0", "0", "16", "0", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "8", "0", "16", "0", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0x800", "0", "16", "0", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0", "0", "-1", "0", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0", "65535", "2", "0", "5", "8192"),
            INVALID_POINTER,
            INVALID_POINTER,
        ),
        (
            call(peer, "0x1001", "0", "0", "0x100001", "0", "5", "8192"),
            PAYLOAD_TOO_LARGE,
            PAYLOAD_TOO_LARGE,
        ),
        (
            call(peer, "0x1001", "0", "0", "16", "-2", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0", "0", "16", "4294967296", "5", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(
                peer,
                "0x1001",
                "0",
                "0",
                "16",
                "-9223372036854775808",
                "5",
                "8192",
            ),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0", "0", "16", "0", "-2", "8192"),
            INVALID_ARGUMENT,
            INVALID_ARGUMENT,
        ),
        (
            call(peer, "0x1001", "0", "0", "16", "0", "5", "65481"),
            INVALID_POINTER,
            INVALID_POINTER,
        ),
        (
            call(peer, "0x1001", "0", "0", "16", "0", "5", "-1"),
            INVALID_POINTER,
            INVALID_POINTER,
        ),
        // Targets that name nothing: the send's code.
        (
            call(
                "(global.get $dead)",
                "0x1001",
                "0",
                "0",
                "16",
                "0",
                "5",
                "8192",
            ),
            NO_SUCH_PROCESS,
            NO_SUCH_PROCESS,
        ),
        (
            call("(i64.const 0)", "0x1001", "0", "0", "16", "-1", "5", "8192"),
            NO_SUCH_PROCESS,
            NO_SUCH_PROCESS,
        ),
        (
            call("(i64.const -1)", "0x1001", "0", "0", "16", "7", "5", "8192"),
            NO_SUCH_PROCESS,
            NO_SUCH_PROCESS,
        ),
        // A call to itself waiting for ever.
        (
            call(
                "(global.get $me)",
                "0x1001",
                "0",
                "0",
                "16",
                "-1",
                "-1",
                "8192",
            ),
            WOULD_DEADLOCK,
            WOULD_DEADLOCK,
        ),
    ];
    let mut failures = Vec::new();
    for (expr, task_want, handler_want) in &cases {
        let t = run(Who::Task, Peer::Handler, expr);
        let h = run(Who::Handler, Peer::Handler, expr);
        if t.result != Ok(*task_want) {
            failures.push(format!(
                "{expr}: a task gets {:?}, ABI says {task_want}",
                t.result
            ));
        }
        if h.result != Ok(*handler_want) {
            failures.push(format!(
                "{expr}: a handler gets {:?}, a task {task_want}",
                h.result
            ));
        }
        // Nothing sent by the handler, ever; a send that failed at once
        // is a send failure for both.
        if h.sent != 0 || h.traced != 0 {
            failures.push(format!(
                "{expr}: a handler's send_receive sent {:?}",
                h.counts()
            ));
        }
        if *handler_want != WOULD_BLOCK && h.send_failures != t.send_failures {
            failures.push(format!(
                "{expr}: send_failures task {} handler {}",
                t.send_failures, h.send_failures
            ));
        }
    }
    // A send capability scoped to another module: PERMISSION_DENIED for
    // the call, from a task or a handler.
    let scoped: Vec<&str> = CAPS
        .iter()
        .map(|c| {
            if *c == r#""messaging:send""# {
                r#"{"name":"messaging:send","scope":"nobody"}"#
            } else {
                c
            }
        })
        .collect();
    for wait_for in ["0", "-1"] {
        let expr = call(peer, "0x1001", "0", "0", "16", wait_for, "5", "8192");
        for who in WHO {
            let o = run_with(who, Peer::Handler, &expr, &scoped);
            if o.result != Ok(PERMISSION_DENIED) {
                failures.push(format!(
                    "{expr} with messaging:send scoped to \"nobody\": a {who:?} gets {:?}, \
                     ABI says PERMISSION_DENIED",
                    o.result
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// ABI "Fuel for host work": "every `cap_*` call but `cap_handles` 256
/// units"; a handle never given is INVALID_HANDLE whatever its number. So
/// handles -1, 0, 999 and i32::MAX must give one code and cost the same,
/// also when another argument is bad too, and be audited alike ("every
/// delegation refused from the handle check on ... is an audit event").
// Failed before the fix: a negative handle was refused before anything
// else (no 256 units, no audit, and before the rights/len/mode checks), a
// positive unknown handle only after those checks and the 256 units:
// different codes for the same bad handle with a bad mode, length or
// rights word, and different fuel and audits for the same code.
#[test]
fn a_handle_never_given_is_one_case_whatever_its_number() {
    let peer = "(global.get $peer)";
    let handles = ["-1", "-2147483648", "0", "999", "2147483647"];
    let templates: Vec<(&str, String)> = vec![
        (
            "inspect",
            "(call $inspect (i32.const H) (i32.const 8192) (i32.const 64))".into(),
        ),
        (
            "inspect, len -1",
            "(call $inspect (i32.const H) (i32.const 8192) (i32.const -1))".into(),
        ),
        (
            "inspect, out of memory",
            "(call $inspect (i32.const H) (i32.const 65500) (i32.const 64))".into(),
        ),
        (
            "revoke mode 0",
            "(call $revoke (i32.const H) (i32.const 0))".into(),
        ),
        (
            "revoke mode 1",
            "(call $revoke (i32.const H) (i32.const 1))".into(),
        ),
        (
            "revoke mode 2",
            "(call $revoke (i32.const H) (i32.const 2))".into(),
        ),
        (
            "revoke mode 7",
            "(call $revoke (i32.const H) (i32.const 7))".into(),
        ),
        (
            "delegate",
            format!(
                "(call $delegate (i32.const H) {peer} (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))"
            ),
        ),
        (
            "delegate, rights -1",
            format!(
                "(call $delegate (i32.const H) {peer} (i32.const -1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))"
            ),
        ),
        (
            "delegate, scope out of memory",
            format!(
                "(call $delegate (i32.const H) {peer} (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 65535) (i32.const 2))"
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, template) in &templates {
        let runs: Vec<(&str, Outcome)> = handles
            .iter()
            .map(|h| {
                (
                    *h,
                    run(
                        Who::Task,
                        Peer::Task,
                        &template.replace("(i32.const H)", &format!("(i32.const {h})")),
                    ),
                )
            })
            .collect();
        let (h0, first) = &runs[0];
        for (h, o) in &runs {
            if o.result != first.result || o.fuel != first.fuel || o.audits != first.audits {
                failures.push(format!(
                    "{what}: handle {h} gets {:?} for {} fuel, {} audit events; handle {h0} gets {:?} for {} fuel, {} audit events",
                    o.result, o.fuel, o.audits, first.result, first.fuel, first.audits
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// docs/ABI.md Conventions 1: "A range outside memory fails with
/// `INVALID_POINTER` (1004)". An empty range past the end of memory (at
/// 70000 in a 65,536-byte memory) is outside it, as WebAssembly's own
/// `memory.copy`/`memory.fill` say (they trap on it, while an empty range
/// at exactly 65,536 is in bounds).
// Failed before the fix: every zero-length buffer was accepted wherever it
// pointed, so a send, log, lookup, receive, cap_handles, cap_inspect or
// cap_delegate with an empty buffer at 70000, -1 or i32::MAX succeeded.
#[test]
fn an_empty_range_past_the_end_of_memory_is_outside_it() {
    let peer = "(global.get $peer)";
    let mut failures = Vec::new();
    for ptr in ["65536", "65537", "70000", "-1", "2147483647"] {
        let want = |in_range: i64| {
            if ptr == "65536" {
                in_range
            } else {
                INVALID_POINTER
            }
        };
        let cases = [
            (send(peer, "0x1001", "0", ptr, "0"), want(1)),
            (
                format!("(call $log (i32.const 2) (i32.const {ptr}) (i32.const 0))"),
                want(0),
            ),
            (
                format!("(call $lookup (i32.const {ptr}) (i32.const 0))"),
                want(NOT_FOUND),
            ),
            (recv("0", "0", "8192", ptr, "0"), want(TIMEOUT)),
            (
                format!("(call $handles (i32.const {ptr}) (i32.const 0))"),
                want(6),
            ),
            (
                format!(
                    "(call $delegate (i32.const 1) {peer} (i32.const 2) (i64.const -1) (i64.const -1) (i32.const {ptr}) (i32.const 0))"
                ),
                want(7),
            ),
        ];
        for (expr, want) in cases {
            for who in WHO {
                let o = run(who, Peer::Task, &expr);
                if o.result != Ok(want) {
                    failures.push(format!(
                        "{expr}: a {who:?} gets {:?}, want {want}",
                        o.result
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// ABI "receive": "a deadline past the kernel clock's end, 2^63 − 1 ns
/// after boot, is that end": the longest timeouts are accepted and end
/// (deterministic clock), in receive, receive_reply and send_receive.
#[test]
fn the_longest_timeouts_end_with_timeout() {
    let peer = "(global.get $peer)";
    let mut failures = Vec::new();
    for timeout in ["9223372036854775807", "9223372036854775", "18446744073709"] {
        for expr in [
            recv("0x4444", timeout, "8192", "8256", "64"),
            recv_reply("12345", timeout, "8192", "8256", "64"),
            call(peer, "0x1001", "0", "0", "16", "0x4444", timeout, "8192"),
        ] {
            let mut k = Kernel::builder()
                .deterministic(true)
                .workers(1)
                .build()
                .unwrap();
            load(&mut k, "peer", "handle", PEER_HANDLER, CAPS);
            load(&mut k, "probe", "run", &probe(Who::Task, &expr), CAPS);
            k.spawn_all().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let report = k.run();
                let _ = tx.send(report.process("probe").map(|p| p.status.clone()));
            });
            match rx.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(Some(ExitStatus::Exited(code))) if i64::from(code) - OFFSET == TIMEOUT => {}
                other => failures.push(format!("{expr}: the probe ends {other:?}, want TIMEOUT")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
