//! The guest → kernel syscall boundary and the capability engine at their
//! edges (from the eighth probe round), each case against a documented line
//! (quoted in the test). Guests return 0 when every check held, otherwise the number of
//! the first check that failed (or the offending syscall result).

use estalogic_abi::ErrorCode;
use estalogic_abi::{Pid, Rights};
use estalogic_kernel::core::capabilities_engine::{
    CapError, Capability, CapabilityEngine, Handle, Resource, Scope, Token, Validity,
};
use estalogic_kernel::{ExitStatus, Kernel, Manifest, RunReport};
use estalogic_tests::neg;
use std::path::Path;

const IMPORTS: &str = r#"
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (import "estalogic" "self_pid" (func $self (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "peek" (func $peek (param i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "cap_handles" (func $handles (param i32 i32) (result i64)))
  (import "estalogic" "cap_inspect" (func $inspect (param i32 i32 i32) (result i64)))
  (import "estalogic" "cap_delegate" (func $delegate (param i32 i64 i32 i64 i64 i32 i32) (result i64)))
  (import "estalogic" "cap_revoke" (func $revoke (param i32 i32) (result i64)))
"#;

/// A task guest: `data` segments, `body` inside `run` (result i32) with
/// locals $r (i64), $h $i $j (i32), $t (i64). Helper `$wait_handle`
/// yields until the table holds `n` handles and returns the last one.
fn guest(data: &str, body: &str) -> String {
    format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  {data}
  (func $wait_handle (param $n i64) (result i32) (local $i i32) (local $c i64)
    (loop
      (local.set $c (call $handles (i32.const 60000) (i32.const 64)))
      (if (i64.ge_s (local.get $c) (local.get $n))
        (then (return (i32.load (i32.add (i32.const 60000)
                 (i32.mul (i32.const 4) (i32.sub (i32.wrap_i64 (local.get $n)) (i32.const 1))))))))
      (drop (call $yield))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 10000))))
    (i32.const -1))
  (func (export "run") (result i32) (local $r i64) (local $h i32) (local $i i32) (local $j i32) (local $t i64)
    {body}
    (i32.const 0)))"#
    )
}

/// `(if (i64.ne EXPR (i64.const WANT)) (then (return (i32.const CODE))))`.
fn expect(expr: &str, want: i64, code: i32) -> String {
    format!("(if (i64.ne {expr} (i64.const {want})) (then (return (i32.const {code}))))\n")
}

fn load(kernel: &mut Kernel, name: &str, wat: &str, caps: &[&str]) {
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32",
            "capabilities_required":[{}]}}"#,
        caps.join(",")
    ))
    .unwrap();
    kernel
        .load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

fn run(kernel: &mut Kernel) -> RunReport {
    kernel.spawn_all().unwrap();
    kernel.run()
}

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

fn status(report: &RunReport, name: &str) -> ExitStatus {
    report.process(name).unwrap().status.clone()
}

const ALL: &[&str] = &[
    r#""messaging:send""#,
    r#""messaging:receive""#,
    r#""process:lookup""#,
    r#""log:write""#,
    r#""time:read""#,
];

const INVALID_ARGUMENT: i64 = -1001;
const BUFFER_TOO_SMALL: i64 = -1002;
const PAYLOAD_TOO_LARGE: i64 = -1003;
const INVALID_POINTER: i64 = -1004;
const NO_SUCH_PROCESS: i64 = -2001;
const PERMISSION_DENIED: i64 = -2002;
const INVALID_HANDLE: i64 = -2003;
const LIMIT_REACHED: i64 = -3005;

// READ 1, WRITE 2, LIST 32, DELEGATE 64, REVOKE 128.
const R_D_R: i64 = 1 | 64 | 128;
const W_D_R: i64 = 2 | 64 | 128;

#[test]
fn codes_match_the_table() {
    // docs/ABI.md "Error codes": the numbers the probes below rely on.
    assert_eq!(neg(ErrorCode::INVALID_ARGUMENT), INVALID_ARGUMENT);
    assert_eq!(neg(ErrorCode::BUFFER_TOO_SMALL), BUFFER_TOO_SMALL);
    assert_eq!(neg(ErrorCode::PAYLOAD_TOO_LARGE), PAYLOAD_TOO_LARGE);
    assert_eq!(neg(ErrorCode::INVALID_POINTER), INVALID_POINTER);
    assert_eq!(neg(ErrorCode::NO_SUCH_PROCESS), NO_SUCH_PROCESS);
    assert_eq!(neg(ErrorCode::PERMISSION_DENIED), PERMISSION_DENIED);
    assert_eq!(neg(ErrorCode::INVALID_HANDLE), INVALID_HANDLE);
    assert_eq!(neg(ErrorCode::LIMIT_REACHED), LIMIT_REACHED);
}

// ---------------------------------------------------------------------
// cap_inspect: layout and buffers
// ---------------------------------------------------------------------

/// crates/abi/src/capabilities.rs: the 48-byte head, then the scope; a
/// root grant is depth 0, no window, no use limit; "`BUFFER_TOO_SMALL` if
/// it does not fit"; a range outside memory is `INVALID_POINTER`; nothing
/// is written on error.
#[test]
fn inspect_layout_and_buffer_edges() {
    let mut body = String::new();
    // Sentinels over the first 128 bytes and the last 64.
    body += "(memory.fill (i32.const 0) (i32.const 0xAA) (i32.const 128))\n";
    body += "(memory.fill (i32.const 65472) (i32.const 0xAA) (i32.const 64))\n";
    // Too small by one: BUFFER_TOO_SMALL, nothing written.
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 0) (i32.const 48))",
        BUFFER_TOO_SMALL,
        1,
    );
    body += &expect("(i64.load (i32.const 0))", 0xAAAAAAAAAAAAAAAAu64 as i64, 2);
    // Exactly at the end of memory: fits.
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 65487) (i32.const 49))",
        49,
        3,
    );
    // One byte past the end: INVALID_POINTER, nothing written.
    body += "(memory.fill (i32.const 65472) (i32.const 0xAA) (i32.const 64))\n";
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 65488) (i32.const 49))",
        INVALID_POINTER,
        4,
    );
    body += &expect(
        "(i64.load (i32.const 65488))",
        0xAAAAAAAAAAAAAAAAu64 as i64,
        5,
    );
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const -1) (i32.const 49))",
        INVALID_POINTER,
        6,
    );
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 0x7fffffff) (i32.const 0x7fffffff))",
        INVALID_POINTER,
        7,
    );
    // Handles never given.
    body += &expect(
        "(call $inspect (i32.const 0) (i32.const 0) (i32.const 64))",
        INVALID_HANDLE,
        8,
    );
    body += &expect(
        "(call $inspect (i32.const -5) (i32.const 0) (i32.const 64))",
        INVALID_HANDLE,
        9,
    );
    body += &expect(
        "(call $inspect (i32.const 6) (i32.const 0) (i32.const 64))",
        INVALID_HANDLE,
        10,
    );
    // The record of handle 1 (messaging:send, every module).
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 0) (i32.const 128))",
        49,
        11,
    );
    body += &expect("(i64.load8_u (i32.const 0))", 1, 12); // channel
    body += &expect("(i64.load8_u (i32.const 1))", 0, 13); // not revoked
    body += &expect("(i64.load16_u (i32.const 2))", W_D_R, 14);
    body += &expect("(i64.load32_u (i32.const 4))", 0, 15); // depth
    body += &expect("(i64.load (i32.const 16))", -1, 16);
    body += &expect("(i64.load (i32.const 24))", -1, 17);
    body += &expect("(i64.load (i32.const 32))", -1, 18);
    body += &expect("(i64.load32_u (i32.const 40))", 0, 19);
    body += &expect("(i64.load32_u (i32.const 44))", 1, 20);
    body += &expect("(i64.load8_u (i32.const 48))", '*' as i64, 21);
    body += &expect("(i64.load8_u (i32.const 49))", 0xAA, 22); // nothing past the record
    let mut kernel = det();
    load(&mut kernel, "inspector", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "inspector"), ExitStatus::Exited(0));
}

/// `cap_handles(buffer_ptr, max)`: "writes up to `max` of the caller's
/// capability handles (`u32` little-endian each) and returns how many it
/// holds in all"; a range outside memory is `INVALID_POINTER`.
#[test]
fn cap_handles_buffer_edges() {
    let mut body = String::new();
    body += "(memory.fill (i32.const 65472) (i32.const 0xAA) (i32.const 64))\n";
    body += &expect("(call $handles (i32.const 0) (i32.const 0))", 5, 1);
    body += &expect("(call $handles (i32.const 65516) (i32.const 5))", 5, 2);
    body += &expect("(i64.load32_u (i32.const 65532))", 5, 3);
    body += "(memory.fill (i32.const 65472) (i32.const 0xAA) (i32.const 64))\n";
    body += &expect(
        "(call $handles (i32.const 65517) (i32.const 5))",
        INVALID_POINTER,
        4,
    );
    body += &expect(
        "(i64.load (i32.const 65512))",
        0xAAAAAAAAAAAAAAAAu64 as i64,
        5,
    );
    body += &expect(
        "(call $handles (i32.const 0) (i32.const -1))",
        INVALID_ARGUMENT,
        6,
    );
    body += &expect(
        "(call $handles (i32.const -4) (i32.const 1))",
        INVALID_POINTER,
        7,
    );
    body += &expect("(call $handles (i32.const 65532) (i32.const 1))", 5, 8);
    body += &expect("(i64.load32_u (i32.const 65532))", 1, 9);
    let mut kernel = det();
    load(&mut kernel, "lister", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "lister"), ExitStatus::Exited(0));
}

// ---------------------------------------------------------------------
// Pointers and lengths of the messaging, lookup and log syscalls
// ---------------------------------------------------------------------

/// docs/ABI.md Conventions 1: "A range outside memory fails with
/// `INVALID_POINTER` (1004); it never traps." A payload over 1 MiB is
/// `PAYLOAD_TOO_LARGE`. A receive whose buffers are bad takes nothing
/// (ipc.rs: "a message is never taken from the mailbox and then lost").
/// Counters exact: only the sends that returned a sequence count as sent.
#[test]
fn messaging_pointer_edges() {
    let mut body = String::new();
    body += "(local.set $t (call $self))\n";
    // Payload ending exactly at the end of memory: sent.
    body += "(local.set $r (call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 65535) (i32.const 1)))\n";
    body += "(if (i64.le_s (local.get $r) (i64.const 0)) (then (return (i32.const 1))))\n";
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 65536) (i32.const 1))",
        INVALID_POINTER,
        2,
    );
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const -1) (i32.const 2))",
        INVALID_POINTER,
        3,
    );
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 0x7fffffff) (i32.const 0x10))",
        INVALID_POINTER,
        4,
    );
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0x100001))",
        PAYLOAD_TOO_LARGE,
        5,
    );
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0x100000))",
        INVALID_POINTER,
        6,
    );
    body += &expect(
        "(call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const -1))",
        INVALID_ARGUMENT,
        7,
    );
    // Zero bytes at the end of memory: in range.
    body += "(local.set $r (call $send (local.get $t) (i32.const 0x1001) (i32.const 0) (i32.const 65536) (i32.const 0)))\n";
    body += "(if (i64.le_s (local.get $r) (i64.const 0)) (then (return (i32.const 8))))\n";
    // Receive with the header one byte past the end: nothing taken.
    body += &expect(
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 65481) (i32.const 0) (i32.const 16))",
        INVALID_POINTER,
        9,
    );
    body += &expect(
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 65530) (i32.const 16))",
        INVALID_POINTER,
        10,
    );
    body += &expect(
        "(call $peek (i32.const 0) (i32.const 65481))",
        INVALID_POINTER,
        11,
    );
    // Still there: the header ending exactly at the end of memory.
    body += &expect("(call $peek (i32.const 0) (i32.const 65480))", 1, 12);
    body += &expect(
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 65480) (i32.const 100) (i32.const 1))",
        1,
        13,
    );
    body += &expect("(i64.load32_u (i32.const 65484))", 0x1000, 14);
    // The zero-length one: buffer at the end of memory, capacity 0.
    body += &expect(
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 65536) (i32.const 0))",
        0,
        15,
    );
    // Lookup: out of range, overflowing.
    body += &expect(
        "(call $lookup (i32.const 65533) (i32.const 4))",
        INVALID_POINTER,
        16,
    );
    body += &expect(
        "(call $lookup (i32.const -1) (i32.const 4))",
        INVALID_POINTER,
        17,
    );
    // Log: out of range.
    body += &expect(
        "(call $log (i32.const 2) (i32.const 65535) (i32.const 2))",
        INVALID_POINTER,
        18,
    );
    body += &expect(
        "(call $log (i32.const 2) (i32.const 65535) (i32.const 1))",
        0,
        19,
    );
    // Memory grown during the run: the new page is in range.
    body += "(drop (memory.grow (i32.const 1)))\n";
    body += &expect(
        "(call $inspect (i32.const 1) (i32.const 131000) (i32.const 64))",
        49,
        20,
    );
    body += "(local.set $r (call $send (local.get $t) (i32.const 0x1002) (i32.const 0) (i32.const 131071) (i32.const 1)))\n";
    body += "(if (i64.le_s (local.get $r) (i64.const 0)) (then (return (i32.const 21))))\n";
    body += &expect(
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 131016) (i32.const 0) (i32.const 1))",
        1,
        22,
    );
    let mut kernel = det();
    load(&mut kernel, "edges", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "edges"), ExitStatus::Exited(0));
    let edges = report.process("edges").unwrap();
    assert_eq!(edges.sent, 3, "{edges:?}");
    assert_eq!(edges.received, 3, "{edges:?}");
    assert_eq!(edges.undelivered, 0, "{edges:?}");
}

// ---------------------------------------------------------------------
// cap_delegate: attenuation
// ---------------------------------------------------------------------

/// crates/abi/src/syscalls.rs CapDelegate: "`rights` must be a subset of
/// the source's; `-1` for `expires_at` or `max_uses` keeps the source's";
/// ARCHITECTURE invariant 6: "Delegation needs `delegate` and yields a
/// subset (rights, scope, validity, uses)".
#[test]
fn delegation_only_attenuates() {
    let far = 1_000_000_000_000_000i64;
    let d = |h: &str, rights: i64, exp: i64, max: i64| {
        format!(
            "(call $delegate {h} (call $self) (i32.const {rights}) (i64.const {exp}) (i64.const {max}) (i32.const 0) (i32.const 0))"
        )
    };
    let mut body = String::new();
    // Bad rights words.
    body += &expect(&d("(i32.const 1)", 0x100, -1, -1), INVALID_ARGUMENT, 1);
    body += &expect(&d("(i32.const 1)", 0x10000, -1, -1), INVALID_ARGUMENT, 2);
    body += &expect(&d("(i32.const 1)", -1, -1, -1), INVALID_ARGUMENT, 3);
    // Adding a right (READ on a WRITE capability).
    body += &expect(&d("(i32.const 1)", 1 | 2, -1, -1), PERMISSION_DENIED, 4);
    // Bad validity words.
    body += &expect(&d("(i32.const 1)", 2, -2, -1), INVALID_ARGUMENT, 5);
    body += &expect(&d("(i32.const 1)", 2, -1, -2), INVALID_ARGUMENT, 6);
    // Bad handles, bad targets.
    body += &expect(&d("(i32.const 0)", 2, -1, -1), INVALID_HANDLE, 7);
    body += &expect(&d("(i32.const -1)", 2, -1, -1), INVALID_HANDLE, 8);
    body += &expect(&d("(i32.const 77)", 2, -1, -1), INVALID_HANDLE, 9);
    body += &expect(
        "(call $delegate (i32.const 1) (i64.const 0) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))",
        NO_SUCH_PROCESS,
        10,
    );
    body += &expect(
        "(call $delegate (i32.const 1) (i64.add (call $self) (i64.const 0x100000000)) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))",
        NO_SUCH_PROCESS,
        11,
    );
    // WRITE only (no delegate, no revoke): handle 6.
    body += &expect(&d("(i32.const 1)", 2, -1, -1), 6, 12);
    body += &expect(&d("(i32.const 6)", 2, -1, -1), PERMISSION_DENIED, 13);
    body += &expect(
        "(call $revoke (i32.const 6) (i32.const 0))",
        PERMISSION_DENIED,
        14,
    );
    body += &expect(
        "(call $revoke (i32.const 6) (i32.const 1))",
        PERMISSION_DENIED,
        15,
    );
    body += &expect("(call $revoke (i32.const 6) (i32.const 2))", 1, 16);
    // Expiry: no extension, -1 keeps it.
    body += &expect(&d("(i32.const 1)", W_D_R, far, -1), 7, 17);
    body += &expect(
        &d("(i32.const 7)", W_D_R, far + 1, -1),
        PERMISSION_DENIED,
        18,
    );
    body += &expect(&d("(i32.const 7)", W_D_R, -1, -1), 8, 19);
    body += &expect(
        "(call $inspect (i32.const 8) (i32.const 0) (i32.const 64))",
        49,
        20,
    );
    body += &expect("(i64.load (i32.const 24))", far, 21);
    body += &expect("(i64.load32_u (i32.const 4))", 2, 22);
    // Max uses: no more, -1 keeps them.
    body += &expect(&d("(i32.const 1)", W_D_R, -1, 10), 9, 23);
    body += &expect(&d("(i32.const 9)", W_D_R, -1, 11), PERMISSION_DENIED, 24);
    body += &expect(&d("(i32.const 9)", W_D_R, -1, -1), 10, 25);
    body += &expect(
        "(call $inspect (i32.const 10) (i32.const 0) (i32.const 64))",
        49,
        26,
    );
    body += &expect("(i64.load (i32.const 32))", 10, 27);
    let mut kernel = det();
    load(&mut kernel, "attenuator", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "attenuator"), ExitStatus::Exited(0));
}

/// A scoped grant can only be delegated inside its scope.
#[test]
fn delegated_scope_cannot_widen() {
    let d = |ptr: i32, len: i32| {
        format!(
            "(call $delegate (i32.const 1) (call $self) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const {ptr}) (i32.const {len}))"
        )
    };
    let data = r#"(data (i32.const 0) "*") (data (i32.const 16) "a,b") (data (i32.const 32) "a") (data (i32.const 48) "ab")"#;
    let mut body = String::new();
    body += &expect(&d(0, 1), PERMISSION_DENIED, 1);
    body += &expect(&d(16, 3), PERMISSION_DENIED, 2);
    body += &expect(&d(48, 2), PERMISSION_DENIED, 3);
    body += &expect(&d(32, 1), 2, 4);
    body += &expect(&d(32, 0), 3, 5);
    body += &expect(&d(65536, 1), INVALID_POINTER, 6);
    body += &expect(&d(65535, 2), INVALID_POINTER, 7);
    body += &expect(&d(0, -1), INVALID_ARGUMENT, 8);
    let mut kernel = det();
    load(
        &mut kernel,
        "scoped",
        &guest(data, &body),
        &[r#"{"name":"messaging:send","scope":"a"}"#],
    );
    let report = run(&mut kernel);
    assert_eq!(status(&report, "scoped"), ExitStatus::Exited(0));
}

// ---------------------------------------------------------------------
// Revocation, handle numbers, depth
// ---------------------------------------------------------------------

/// docs/ABI.md row 13–16: "mode 0 revokes a capability and what was
/// derived from it, 1 only what was derived ... 2 closes the handle. A
/// revoked capability stays listed and inspectable (its record's `revoked`
/// = 1) until closed"; the engine: handle numbers "are never reused".
#[test]
fn cascading_revocation_and_handle_numbers() {
    let d = |h: &str| {
        format!(
            "(call $delegate {h} (call $self) (i32.const {W_D_R}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))"
        )
    };
    let mut body = String::new();
    body += &expect(&d("(i32.const 1)"), 6, 1);
    body += &expect(&d("(i32.const 6)"), 7, 2);
    body += &expect(&d("(i32.const 7)"), 8, 3);
    body += &expect("(call $revoke (i32.const 6) (i32.const 0))", 3, 4);
    body += &expect(
        "(call $inspect (i32.const 8) (i32.const 0) (i32.const 64))",
        49,
        5,
    );
    body += &expect("(i64.load8_u (i32.const 1))", 1, 6);
    body += &expect(&d("(i32.const 8)"), PERMISSION_DENIED, 7);
    body += &expect("(call $handles (i32.const 0) (i32.const 0))", 8, 8);
    body += &expect("(call $revoke (i32.const 6) (i32.const 2))", 0, 9);
    body += &expect(
        "(call $inspect (i32.const 6) (i32.const 0) (i32.const 64))",
        INVALID_HANDLE,
        10,
    );
    body += &expect(
        "(call $inspect (i32.const 7) (i32.const 0) (i32.const 64))",
        49,
        11,
    );
    body += &expect("(i64.load8_u (i32.const 1))", 1, 12);
    body += &expect("(call $handles (i32.const 0) (i32.const 0))", 7, 13);
    // The next handle is 9, never 6 again.
    body += &expect(&d("(i32.const 1)"), 9, 14);
    // Mode 1 on the root: only 9 goes; the root still sends.
    body += &expect("(call $revoke (i32.const 1) (i32.const 1))", 1, 15);
    body += "(if (i64.le_s (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)) (i64.const 0)) (then (return (i32.const 16))))\n";
    body += &expect(
        "(call $revoke (i32.const 1) (i32.const 3))",
        INVALID_ARGUMENT,
        17,
    );
    body += &expect(
        "(call $revoke (i32.const 1) (i32.const -1))",
        INVALID_ARGUMENT,
        18,
    );
    body += &expect(
        "(call $revoke (i32.const 99) (i32.const 2))",
        INVALID_HANDLE,
        19,
    );
    // Depth: 16 steps allowed, the 17th LIMIT_REACHED.
    body += "(local.set $h (i32.const 1))\n";
    body += "(local.set $i (i32.const 0))\n";
    body += &format!(
        "(loop (local.set $r {}) (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.add (i32.const 100) (local.get $i))))) (local.set $h (i32.wrap_i64 (local.get $r))) (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if 0 (i32.lt_u (local.get $i) (i32.const 16))))\n",
        d("(local.get $h)")
    );
    body += &expect(&d("(local.get $h)"), LIMIT_REACHED, 20);
    let mut kernel = det();
    load(&mut kernel, "revoker", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "revoker"), ExitStatus::Exited(0));
}

// ---------------------------------------------------------------------
// Limited capabilities delegated to another process
// ---------------------------------------------------------------------

/// A giver holding `time:read` (handle 1) and `process:lookup` delegates
/// handle 1 to `taker` with `max_uses`/`expires_at`, then exits 0.
fn giver(max_uses: i64, expires_after_ns: i64) -> String {
    let expires = if expires_after_ns < 0 {
        "(i64.const -1)".to_string()
    } else {
        format!("(i64.add (call $now) (i64.const {expires_after_ns}))")
    };
    let body = format!(
        "(local.set $t (call $lookup (i32.const 0) (i32.const 5)))
         (if (i64.le_s (local.get $t) (i64.const 0)) (then (return (i32.const 1))))
         (local.set $r (call $delegate (i32.const 1) (local.get $t) (i32.const {R_D_R}) {expires} (i64.const {max_uses}) (i32.const 0) (i32.const 0)))
         (if (i64.le_s (local.get $r) (i64.const 0)) (then (return (i32.wrap_i64 (local.get $r)))))
         ;; Stay alive (an exit revokes what was delegated) until the taker ends.
         (local.set $i (i32.const 0))
         (loop
           (drop (call $yield))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if 0 (i32.and (i32.lt_u (local.get $i) (i32.const 2000000))
                             (i64.ne (call $lookup (i32.const 0) (i32.const 5)) (i64.const -1006)))))"
    );
    guest(r#"(data (i32.const 0) "taker")"#, &body)
}

fn limited_pair(max_uses: i64, expires_after_ns: i64, taker_body: &str) -> RunReport {
    let mut kernel = det();
    load(
        &mut kernel,
        "giver",
        &giver(max_uses, expires_after_ns),
        &[r#""time:read""#, r#""process:lookup""#],
    );
    let body = format!(
        "(local.set $h (call $wait_handle (i64.const 1)))
         (if (i32.lt_s (local.get $h) (i32.const 0)) (then (return (i32.const 99))))
         {taker_body}"
    );
    load(&mut kernel, "taker", &guest("", &body), &[]);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "giver"), ExitStatus::Exited(0));
    report
}

/// crates/abi/src/capabilities.rs: "Every check of a limited capability
/// ... is one, so for those it is exact"; the engine: `max_uses` is "How
/// many successful checks it allows". Three uses allowed, the fourth
/// refused, the record says 3 of 3.
#[test]
fn max_uses_are_counted_exactly() {
    let mut body = String::new();
    for i in 0..3 {
        body += &format!(
            "(if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const {}))))\n",
            10 + i
        );
    }
    body += &expect("(call $now)", PERMISSION_DENIED, 20);
    body += &expect("(call $now)", PERMISSION_DENIED, 21);
    body += &expect(
        "(call $inspect (local.get $h) (i32.const 0) (i32.const 64))",
        49,
        22,
    );
    body += &expect("(i64.load8_u (i32.const 0))", 7, 23); // timer
    body += &expect("(i64.load16_u (i32.const 2))", R_D_R, 24);
    body += &expect("(i64.load32_u (i32.const 4))", 1, 25);
    body += &expect("(i64.load (i32.const 8))", 3, 26);
    body += &expect("(i64.load (i32.const 32))", 3, 27);
    // Used up: nothing more can be delegated from it.
    body += &expect(
        "(call $delegate (local.get $h) (call $self) (i32.const 1) (i64.const -1) (i64.const 0) (i32.const 0) (i32.const 0))",
        PERMISSION_DENIED,
        28,
    );
    let report = limited_pair(3, -1, &body);
    assert_eq!(status(&report, "taker"), ExitStatus::Exited(0));
}

/// crates/abi/src/syscalls.rs CapDelegate: "`-1` for `expires_at` ... or
/// `max_uses` keeps the source's". A holder of a capability limited to 5
/// uses that has used 2 asks for a copy keeping the source's limit: the
/// uses are shared down the tree (engine invariant 1: "a use counts against
/// the capability and every ancestor"), so the copy cannot exceed the 3
/// left anyway. Expected: the copy's handle. Returned (exit code): the
/// delegation's result.
#[test]
fn delegate_keeping_max_uses_of_a_partly_used_capability() {
    let body = format!(
        "(if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const 10))))
         (if (i64.lt_s (call $now) (i64.const 0)) (then (return (i32.const 11))))
         (local.set $r (call $delegate (local.get $h) (call $self) (i32.const {R_D_R}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.wrap_i64 (local.get $r)))))"
    );
    let report = limited_pair(5, -1, &body);
    assert_eq!(
        status(&report, "taker"),
        ExitStatus::Exited(0),
        "a delegation with max_uses -1 (keep the source's) of a partly used capability is refused"
    );
}

/// Control for the above: keeping the limit of an unused capability works.
#[test]
fn delegate_keeping_max_uses_of_an_unused_capability() {
    let body = format!(
        "(local.set $r (call $delegate (local.get $h) (call $self) (i32.const {R_D_R}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
         (if (i64.lt_s (local.get $r) (i64.const 0)) (then (return (i32.wrap_i64 (local.get $r)))))"
    );
    let report = limited_pair(5, -1, &body);
    assert_eq!(status(&report, "taker"), ExitStatus::Exited(0));
}

/// Expiry on the kernel clock (deterministic): every successful read is
/// before `expires_at`, the first refusal is `PERMISSION_DENIED` at or
/// after it, and it stays refused.
#[test]
fn expiry_on_the_deterministic_clock() {
    let body = "
         (drop (call $inspect (local.get $h) (i32.const 0) (i32.const 64)))
         (local.set $t (i64.load (i32.const 24)))
         (if (i64.eq (local.get $t) (i64.const -1)) (then (return (i32.const 10))))
         (local.set $i (i32.const 0))
         (loop
           (local.set $r (call $now))
           (if (i64.ge_s (local.get $r) (i64.const 0))
             (then
               (if (i64.ge_u (local.get $r) (local.get $t)) (then (return (i32.const 11))))
               (drop (call $yield))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if 1 (i32.lt_u (local.get $i) (i32.const 1000000))))))
         (if (i64.ne (local.get $r) (i64.const -2002)) (then (return (i32.const 12))))
         (if (i64.ne (call $now) (i64.const -2002)) (then (return (i32.const 13))))
         (local.set $i (i32.const 0))
         (loop (drop (call $yield)) (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if 0 (i32.lt_u (local.get $i) (i32.const 10))))
         (if (i64.ne (call $now) (i64.const -2002)) (then (return (i32.const 14))))";
    let report = limited_pair(-1, 200_000, body);
    assert_eq!(status(&report, "taker"), ExitStatus::Exited(0));
}

// ---------------------------------------------------------------------
// The engine directly: tokens, cascades, uses
// ---------------------------------------------------------------------

fn engine_with_root(max_uses: Option<u64>) -> (CapabilityEngine, Pid, Handle) {
    let mut engine = CapabilityEngine::new([7u8; 32]);
    let a = Pid::from_u64((1u64 << 32) | 1);
    let cap = Capability::new(
        Resource::Channel,
        Rights::WRITE | Rights::DELEGATE | Rights::REVOKE,
        Scope::All,
    )
    .with_validity(Validity {
        max_uses,
        ..Validity::UNLIMITED
    });
    let h = engine.grant(a, cap, 0).unwrap();
    (engine, a, h)
}

/// Engine invariant 4: "The MAC is verified ... on every redemption ... a
/// token of a revoked capability answers Revoked"; a token is `<32 hex>.<64
/// hex>`, lower case; anything else is `BadToken`.
#[test]
fn tokens_tampered_revoked_and_malformed() {
    let (mut engine, a, root) = engine_with_root(None);
    let b = Pid::from_u64((1u64 << 32) | 2);
    let child_cap = Capability::new(
        Resource::Channel,
        Rights::WRITE | Rights::DELEGATE,
        Scope::All,
    );
    let child = engine.delegate(a, root, b, child_cap, 0).unwrap();
    let token = engine.export(b, child, 0).unwrap();
    assert!(engine.redeem(&token, 0).is_ok());
    let text = token.to_string();
    assert_eq!(text.len(), 32 + 1 + 64);
    // Every single-bit change of the id or the MAC is refused.
    for bit in 0..128 {
        let forged = Token {
            id: token.id ^ (1u128 << bit),
            mac: token.mac,
        };
        assert_eq!(
            engine.redeem(&forged, 0).unwrap_err(),
            CapError::BadToken,
            "id bit {bit}"
        );
    }
    for byte in 0..32 {
        let mut mac = token.mac;
        mac[byte] ^= 1;
        let forged = Token { id: token.id, mac };
        assert_eq!(
            engine.redeem(&forged, 0).unwrap_err(),
            CapError::BadToken,
            "mac byte {byte}"
        );
    }
    // Malformed texts.
    for bad in [
        text.to_uppercase(),
        text[1..].to_string(),
        format!("{text}0"),
        text.replace('.', ""),
        format!("+{}", &text[1..]),
        String::new(),
        ".".to_string(),
    ] {
        assert_eq!(
            Token::parse(&bad).unwrap_err(),
            CapError::BadToken,
            "{bad:?}"
        );
    }
    // The parent revoked: the child's token answers Revoked (cascade).
    assert_eq!(engine.revoke(a, root, 1).unwrap(), 2);
    assert_eq!(engine.redeem(&token, 1).unwrap_err(), CapError::Revoked);
    assert_eq!(
        engine
            .check_token(&token, &Resource::Channel, Rights::WRITE, Some("x"), 1)
            .unwrap_err(),
        CapError::Revoked
    );
    // Closed and forgotten: still Revoked, never BadToken or valid.
    engine.close(b, child, 2).unwrap();
    assert_eq!(engine.redeem(&token, 2).unwrap_err(), CapError::Revoked);
}

/// Uses through a token count against the capability (engine `export`:
/// "uses through the token count against it"), and down the tree.
#[test]
fn token_uses_are_counted() {
    let (mut engine, a, root) = engine_with_root(Some(3));
    let token = engine.export(a, root, 0).unwrap();
    for _ in 0..2 {
        engine
            .check_token(&token, &Resource::Channel, Rights::WRITE, Some("x"), 0)
            .unwrap();
    }
    engine
        .check(a, root, &Resource::Channel, Rights::WRITE, Some("x"), 0)
        .unwrap();
    assert_eq!(
        engine
            .check_token(&token, &Resource::Channel, Rights::WRITE, Some("x"), 0)
            .unwrap_err(),
        CapError::UsedUp
    );
    assert_eq!(engine.redeem(&token, 0).unwrap_err(), CapError::UsedUp);
    // Denials count no use.
    let info = engine.inspect(a, root).unwrap();
    assert_eq!(info.uses, 3);
    assert_eq!(info.uses_left, Some(0));
}

/// Delegation without `delegate` and export without `delegate` are refused;
/// a child cannot be given more uses than its parent has left.
#[test]
fn engine_delegate_right_and_uses_left() {
    let (mut engine, a, root) = engine_with_root(Some(4));
    let b = Pid::from_u64((1u64 << 32) | 2);
    let no_delegate =
        Capability::new(Resource::Channel, Rights::WRITE, Scope::All).with_validity(Validity {
            max_uses: Some(4),
            ..Validity::UNLIMITED
        });
    let h = engine.delegate(a, root, b, no_delegate.clone(), 0).unwrap();
    // Inherits the parent's limit through the lineage.
    assert_eq!(engine.inspect(b, h).unwrap().uses_left, Some(4));
    assert!(matches!(
        engine.delegate(b, h, a, no_delegate.clone(), 0),
        Err(CapError::MissingRight)
    ));
    assert!(matches!(
        engine.export(b, h, 0),
        Err(CapError::MissingRight)
    ));
    engine
        .check(b, h, &Resource::Channel, Rights::WRITE, Some("m"), 0)
        .unwrap();
    // 3 left now: 4 more is not an attenuation.
    assert!(matches!(
        engine.delegate(a, root, b, no_delegate.clone(), 0),
        Err(CapError::NotAnAttenuation(_))
    ));
    // Another process's handle number names nothing of the caller's.
    assert_eq!(
        engine
            .check(
                b,
                Handle(root.0 + 100),
                &Resource::Channel,
                Rights::WRITE,
                Some("m"),
                0
            )
            .unwrap_err(),
        CapError::InvalidHandle
    );
}

// ---------------------------------------------------------------------
// Order of checks: what a process with no capability can learn
// ---------------------------------------------------------------------

/// crates/kernel/src/syscalls/mod.rs, "Protocol of every syscall": "1.
/// `ProcessContext::admit` checks the caller holds the capability the
/// syscall needs ... 2. Arguments are validated"; ARCHITECTURE invariant
/// 2: "Every syscall that touches anything outside the caller goes
/// through `ProcessContext::admit`"; BRIEF §3.4: "Every create / delegate
/// / use-denied / revoke is audited". A process holding no capability at
/// all sends to a live pid (itself) and to a pid that names nothing; and
/// delegates a handle it does not have to both. Expected: the same refusal
/// for both targets (it may not send, it has no handle), each audited, so
/// that which pids are live is not learnt without `process:lookup`.
#[test]
fn no_capability_reveals_no_liveness() {
    let body = "
      (local.set $t (call $self))
      (local.set $r (call $send (local.get $t) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))
      (i64.store (i32.const 0) (local.get $r))
      (local.set $r (call $send (i64.add (local.get $t) (i64.const 0x100000000)) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))
      (i64.store (i32.const 8) (local.get $r))
      (local.set $r (call $delegate (i32.const 1) (local.get $t) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
      (i64.store (i32.const 16) (local.get $r))
      (local.set $r (call $delegate (i32.const 1) (i64.add (local.get $t) (i64.const 0x100000000)) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
      (i64.store (i32.const 24) (local.get $r))
      ;; exit code: the four results' codes, 1 digit each: 1 = PERMISSION_DENIED,
      ;; 2 = NO_SUCH_PROCESS, 3 = INVALID_HANDLE, 9 = other.
      (local.set $i (i32.const 0))
      (local.set $j (i32.const 0))
      (loop
        (local.set $r (i64.load (i32.shl (local.get $i) (i32.const 3))))
        (local.set $h (i32.const 9))
        (if (i64.eq (local.get $r) (i64.const -2002)) (then (local.set $h (i32.const 1))))
        (if (i64.eq (local.get $r) (i64.const -2001)) (then (local.set $h (i32.const 2))))
        (if (i64.eq (local.get $r) (i64.const -2003)) (then (local.set $h (i32.const 3))))
        (local.set $j (i32.add (i32.mul (local.get $j) (i32.const 10)) (local.get $h)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if 0 (i32.lt_u (local.get $i) (i32.const 4))))
      (return (local.get $j))";
    let mut kernel = det();
    load(&mut kernel, "nocaps", &guest("", body), &[]);
    let report = run(&mut kernel);
    let pid = report.process("nocaps").unwrap().pid;
    let denials = kernel
        .take_audit()
        .iter()
        .filter(|e| {
            e.kind == estalogic_kernel::core::capabilities_engine::AuditKind::Denied
                && e.holder == pid
        })
        .count();
    // send(live) PERMISSION_DENIED, send(dead) PERMISSION_DENIED,
    // delegate(no handle, live) INVALID_HANDLE, delegate(no handle, dead)
    // INVALID_HANDLE.
    let _ = denials; // see probe_abi_refused_delegation_of_a_bad_handle_is_audited
    assert_eq!(
        status(&report, "nocaps"),
        ExitStatus::Exited(1133),
        "(results as digits: 1 = PERMISSION_DENIED, 2 = NO_SUCH_PROCESS, 3 = INVALID_HANDLE, for send live, \
         send dead, delegate live, delegate dead)"
    );
}

/// docs/ABI.md Conventions 1: "Pointers and lengths are 32-bit offsets
/// into the guest's `memory`. A range outside memory fails with
/// `INVALID_POINTER` (1004)". `receive` holds to it for its whole buffer
/// (`check_wait`), even when the message is smaller; `cap_inspect(handle,
/// out, len)` and `cap_handles(out, max)` are given ranges that run past
/// the end of memory.
#[test]
fn output_ranges_past_memory_are_invalid_pointers() {
    let mut body = String::new();
    // receive: a 1,000-byte buffer 100 bytes before the end, with a message
    // of 1 byte queued: INVALID_POINTER (the range is checked).
    body += "(drop (call $send (call $self) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 1)))\n";
    // Exit code: a bit per check that did not return INVALID_POINTER.
    body += "(local.set $j (i32.const 0))\n";
    for (bit, call) in [
        "(call $receive (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 65436) (i32.const 1000))",
        // cap_inspect: a 1,000-byte buffer 100 bytes before the end.
        "(call $inspect (i32.const 1) (i32.const 65436) (i32.const 1000))",
        // cap_handles: room for 100 handles 100 bytes before the end.
        "(call $handles (i32.const 65436) (i32.const 100))",
    ]
    .iter()
    .enumerate()
    {
        body += &format!(
            "(if (i64.ne {call} (i64.const {INVALID_POINTER})) (then (local.set $j (i32.or (local.get $j) (i32.const {})))))\n",
            1 << bit
        );
    }
    body += "(return (local.get $j))\n";
    let mut kernel = det();
    load(&mut kernel, "ranges", &guest("", &body), ALL);
    let report = run(&mut kernel);
    // 1: receive accepted it, 2: cap_inspect did, 4: cap_handles did.
    assert_eq!(status(&report, "ranges"), ExitStatus::Exited(0));
}

/// BRIEF §3.4: "Every create / delegate / use-denied / revoke is audited";
/// ARCHITECTURE invariant 6. A guest's delegation is one `Delegated` event
/// (holder: the new holder), a widening attempt one `Denied` (holder: the
/// caller), and a cascading revocation one `Revoked` event per capability
/// it returned in its count.
#[test]
fn guest_capability_calls_are_audited() {
    use estalogic_kernel::core::capabilities_engine::AuditKind;
    let d = |h: i32, rights: i64| {
        format!(
            "(call $delegate (i32.const {h}) (call $self) (i32.const {rights}) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))"
        )
    };
    let mut body = String::new();
    body += &expect(&d(1, W_D_R), 6, 1);
    body += &expect(&d(6, W_D_R), 7, 2);
    body += &expect(&d(7, 3), PERMISSION_DENIED, 3);
    body += &expect("(call $revoke (i32.const 6) (i32.const 0))", 2, 4);
    let mut kernel = det();
    load(&mut kernel, "audited", &guest("", &body), ALL);
    kernel.spawn_all().unwrap();
    let pid = kernel.capabilities_of(Pid::KERNEL).len(); // nothing: the kernel holds no table
    assert_eq!(pid, 0);
    let report = kernel.run();
    assert_eq!(status(&report, "audited"), ExitStatus::Exited(0));
    let me = report.process("audited").unwrap().pid;
    let audit = kernel.take_audit();
    let count = |kind: AuditKind| {
        audit
            .iter()
            .filter(|e| e.kind == kind && e.holder == me)
            .count()
    };
    assert_eq!(count(AuditKind::Granted), 5);
    assert_eq!(count(AuditKind::Delegated), 2);
    assert_eq!(count(AuditKind::Denied), 1);
    // 2 by the guest's revocation, then the 5 roots at exit.
    assert_eq!(count(AuditKind::Revoked), 7, "{audit:#?}");
}

/// Engine docs, `AuditKind::Denied`: "A check, find, delegation,
/// revocation, export or redemption was refused"; BRIEF §3.4 "Every ...
/// use-denied ... is audited". A process holding capabilities names a
/// handle it does not have in `cap_revoke` (audited) and in
/// `cap_delegate` (expected audited as well).
#[test]
fn refused_delegation_of_a_bad_handle_is_audited() {
    use estalogic_kernel::core::capabilities_engine::AuditKind;
    let mut body = String::new();
    body += &expect(
        "(call $revoke (i32.const 77) (i32.const 0))",
        INVALID_HANDLE,
        1,
    );
    body += &expect(
        "(call $delegate (i32.const 77) (call $self) (i32.const 2) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0))",
        INVALID_HANDLE,
        2,
    );
    let mut kernel = det();
    load(&mut kernel, "badhandle", &guest("", &body), ALL);
    let report = run(&mut kernel);
    assert_eq!(status(&report, "badhandle"), ExitStatus::Exited(0));
    let me = report.process("badhandle").unwrap().pid;
    let denied: Vec<String> = kernel
        .take_audit()
        .iter()
        .filter(|e| e.kind == AuditKind::Denied && e.holder == me)
        .map(|e| e.detail.to_string())
        .collect();
    assert_eq!(
        denied.len(),
        2,
        "revoke and delegate of handle 77 both refused: {denied:?}"
    );
}
