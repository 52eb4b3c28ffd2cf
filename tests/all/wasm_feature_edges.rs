//! The WebAssembly feature surface a hostile or merely unusual module can
//! use: the proposals the kernel turns off (refused at load, the feature
//! named) and foreign imports, the trap codes of the instructions Wasmtime
//! 48 enables by default (tail calls, reference types, function
//! references, bulk memory) in a task and in a handler, at run time and at
//! instantiation, tail-call loops preempted, deterministic NaNs and relaxed
//! SIMD, deep stacks at syscalls, and the process limits (memory class,
//! table slots, instance state, segments paid from a handler's budget).
//!
//! From the fortieth probe round; its "Failed before the fix" cases fail
//! without their fixes, the others pin what already held.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, ProcessReport};
use estalogic_tests::{
    ALL_CAPS, describe, first_exit_then_stop, load_bundled, manifest, report_of, trapped,
};
use std::path::Path;

// ---------------------------------------------------------------------------
// Helpers.

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

fn try_load(k: &mut Kernel, name: &str, entry: &str, bytes: &[u8]) -> Result<(), String> {
    k.load_module(
        manifest(name, entry, ALL_CAPS, "normal"),
        bytes,
        Path::new(name),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn load(k: &mut Kernel, name: &str, entry: &str, bytes: &[u8]) {
    try_load(k, name, entry, bytes).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads `wat` alone in a deterministic kernel, runs it, returns its report.
fn run_alone(entry: &str, wat: &str) -> ProcessReport {
    let mut k = det();
    load(&mut k, "m", entry, wat.as_bytes());
    k.spawn("m").unwrap();
    let r = k.run();
    report_of(&r, "m").clone()
}

const INBOX: &str =
    r#"(func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))"#;

/// A task module: memory, a 2-slot table, `$rec`, `$g`, and `body` in `run`.
fn task(decls: &str, body: &str) -> String {
    format!(
        r#"(module (memory (export "memory") 1) (table 2 funcref)
  (type $v (func)) (type $i (func (param i32)))
  (func $rec (call $rec)) (func $g)
  {decls}
  (func (export "run") {body}))"#
    )
}

/// The same as a handler: `body` runs in the call for STARTED.
fn handler(decls: &str, body: &str) -> String {
    format!(
        r#"(module (memory (export "memory") 1) (table 2 funcref)
  (type $v (func)) (type $i (func (param i32)))
  (func $rec (call $rec)) (func $g)
  {INBOX}
  {decls}
  (func (export "handle") (param i32) (result i32) {body} (i32.const 0)))"#
    )
}

// ---------------------------------------------------------------------------
// 1. What the loader refuses.

/// ABI.md: "at most one memory, 32-bit and not shared ... a module past
/// these is refused at load, naming the limit"; BRIEF 3.4: "No ambient
/// authority: no WASI, no imports beyond the kernel ABI"; ARCHITECTURE
/// invariant 1: "no imported memories or tables". Proposals the engine has
/// off are refused at load with the feature named.
#[test]
fn proposals_off_and_foreign_imports_are_refused_at_load_naming_why() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "memory64",
            r#"(module (memory (export "memory") i64 1) (func (export "run")))"#,
            "64-bit",
        ),
        (
            "shared",
            r#"(module (memory (export "memory") 1 2 shared) (func (export "run")))"#,
            "shared",
        ),
        (
            "atomics",
            r#"(module (memory (export "memory") 1) (func (export "run") (drop (i32.atomic.load (i32.const 0)))))"#,
            "threads",
        ),
        (
            "multi-memory",
            r#"(module (memory (export "memory") 1) (memory $b 1) (func (export "run")))"#,
            "2 memories",
        ),
        (
            "exceptions",
            r#"(module (memory (export "memory") 1) (tag $t) (func (export "run") (block $h (try_table (catch $t $h) (throw $t)))))"#,
            "exceptions",
        ),
        (
            "gc",
            r#"(module (memory (export "memory") 1) (type $s (struct (field i32))) (func (export "run") (drop (struct.new $s (i32.const 1)))))"#,
            "gc",
        ),
        (
            "wide-arithmetic",
            r#"(module (memory (export "memory") 1) (func (export "run") (drop (drop (i64.add128 (i64.const 1) (i64.const 2) (i64.const 3) (i64.const 4))))))"#,
            "wide arithmetic",
        ),
        (
            "custom-page-sizes",
            r#"(module (memory (export "memory") 65536 (pagesize 1)) (func (export "run")))"#,
            "page size",
        ),
        (
            "stack-switching",
            r#"(module (memory (export "memory") 1) (type $f (func)) (type $c (cont $f)) (func (export "run")))"#,
            "stack switching",
        ),
        (
            "imported-memory",
            r#"(module (import "estalogic" "memory" (memory 1)) (func (export "run")))"#,
            "only the kernel ABI",
        ),
        (
            "imported-table",
            r#"(module (import "estalogic" "send" (table 1 funcref)) (memory (export "memory") 1) (func (export "run")))"#,
            "only the kernel ABI",
        ),
        (
            "imported-global",
            r#"(module (import "estalogic" "self_pid" (global i64)) (memory (export "memory") 1) (func (export "run")))"#,
            "only the kernel ABI",
        ),
        (
            "wasi",
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1) (func (export "run")))"#,
            "only the kernel ABI",
        ),
    ];
    for (what, wat, needle) in cases {
        let mut k = det();
        let error = try_load(&mut k, what, "run", wat.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{what} loaded"));
        assert!(error.contains(needle), "{what}: {error}");
    }
}

// ---------------------------------------------------------------------------
// 2. Trap codes of what runs, task and handler, at run time and at
//    instantiation.

/// BRIEF 3.6: "Traps: UNREACHABLE 4001, DIV_BY_ZERO 4002, INTEGER_OVERFLOW
/// 4003, OUT_OF_BOUNDS 4004, INDIRECT_CALL_TYPE 4005, STACK_OVERFLOW 4006";
/// "A faulting process can never corrupt another's memory or the kernel".
/// Held: tail calls, reference-type table instructions, segments and start
/// functions trap with their codes, in a task and in a handler.
#[test]
fn enabled_proposals_and_instantiation_trap_with_their_codes() {
    let runtime: &[(&str, &str, ErrorCode)] = &[
        (
            "",
            "(call_indirect (type $v) (i32.const 1))",
            ErrorCode::TRAP_INDIRECT_CALL_TYPE,
        ),
        (
            "(elem (i32.const 0) $g) (func $rci (return_call_indirect (type $i) (i32.const 1) (i32.const 0)))",
            "(call $rci)",
            ErrorCode::TRAP_INDIRECT_CALL_TYPE,
        ),
        (
            "",
            "(drop (table.get 0 (i32.const 7)))",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            "",
            "(table.fill 0 (i32.const 1) (ref.null func) (i32.const 2))",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            "",
            "(memory.fill (i32.const 65535) (i32.const 0) (i32.const 2))",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            "",
            "(drop (i32.trunc_f32_s (f32.const nan)))",
            ErrorCode::TRAP_INTEGER_OVERFLOW,
        ),
        (
            "",
            "(drop (i64.rem_s (i64.const 1) (i64.const 0)))",
            ErrorCode::TRAP_DIV_BY_ZERO,
        ),
        (
            "(func $t (param i32) (if (local.get 0) (then (return_call $t (i32.sub (local.get 0) (i32.const 1))))) unreachable)",
            "(call $t (i32.const 100000))",
            ErrorCode::TRAP_UNREACHABLE,
        ),
        ("", "(call $rec)", ErrorCode::TRAP_STACK_OVERFLOW),
        // At instantiation: segments out of range, start functions.
        (
            "(elem (i32.const 1) $g $g)",
            "",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            r#"(data (i32.const 65535) "ab")"#,
            "",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            "(func $s unreachable) (start $s)",
            "",
            ErrorCode::TRAP_UNREACHABLE,
        ),
        (
            "(func $s (drop (i32.div_u (i32.const 1) (i32.const 0)))) (start $s)",
            "",
            ErrorCode::TRAP_DIV_BY_ZERO,
        ),
        (
            "(func $s (call $rec)) (start $s)",
            "",
            ErrorCode::TRAP_STACK_OVERFLOW,
        ),
    ];
    for (decls, body, code) in runtime {
        let t = run_alone("run", &task(decls, body));
        assert_eq!(
            trapped(&t.status),
            Some(*code),
            "task {decls} {body}: {t:?}"
        );
        let h = run_alone("handle", &handler(decls, body));
        assert_eq!(
            trapped(&h.status),
            Some(*code),
            "handler {decls} {body}: {h:?}"
        );
    }
}

/// BRIEF 3.6: "Traps: ... INDIRECT_CALL_TYPE 4005 ..."; ARCHITECTURE
/// invariant 3: "each trap kind has its code". The function-references
/// proposal is on (Wasmtime 48's default; `init.rs` leaves it), so
/// `call_ref` runs (toolchains emit it for typed function pointers), and a
/// call through a null function reference is the fault a `call_indirect`
/// of a null element is. Failed before the fix: it trapped as 4099
/// "other" (Wasmtime's `NullReference` had no arm in `trap_code`), in a
/// task and in a handler, while the same fault through a table was
/// INDIRECT_CALL_TYPE 4005: a supervisor could not tell a bad indirect
/// call from an unknown fault, depending on which instruction the
/// compiler chose.
#[test]
fn call_ref_to_null_traps_as_an_indirect_call_fault() {
    let through_table = run_alone("run", &task("", "(call_indirect (type $v) (i32.const 1))"));
    assert_eq!(
        trapped(&through_table.status),
        Some(ErrorCode::TRAP_INDIRECT_CALL_TYPE),
        "setup: {through_table:?}"
    );
    for (what, entry, wat) in [
        ("task", "run", task("", "(call_ref $v (ref.null $v))")),
        (
            "handler",
            "handle",
            handler("", "(call_ref $v (ref.null $v))"),
        ),
    ] {
        let p = run_alone(entry, &wat);
        assert_eq!(
            trapped(&p.status),
            Some(ErrorCode::TRAP_INDIRECT_CALL_TYPE),
            "{what}: a call_ref of a null function reference is an indirect call to null, \
             as call_indirect of a null element is (4005): {:?}",
            p.status
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Tail calls and preemption.

/// A task looping for ever through `return_call_indirect` (never a `loop`).
const TAIL_SPINNER: &str = r#"(module (memory (export "memory") 1)
  (type $t (func (param i32)))
  (table 2 funcref) (elem (i32.const 0) $a $b)
  (func $a (param i32) (return_call_indirect (type $t) (i32.add (local.get 0) (i32.const 1)) (i32.and (local.get 0) (i32.const 1))))
  (func $b (param i32) (return_call_indirect (type $t) (i32.add (local.get 0) (i32.const 1)) (i32.and (local.get 0) (i32.const 1))))
  (func (export "run") (call $a (i32.const 0))))"#;

const PEER: &str = r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32) (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 3000000))))
    (i32.const 0)))"#;

/// BRIEF 3.2: "Preemption is real: a guest in an infinite loop must not
/// stop the kernel or other processes"; ABI.md handler processes: "a call
/// that needs more traps with TIMEOUT (3001)". Held: a tail-call loop
/// passes fuel checkpoints (a peer of its level finishes; shutdown stops
/// it), and in a handler it is stopped with TIMEOUT.
#[test]
fn tail_call_loops_are_preempted_and_time_out_in_handlers() {
    for (deterministic, workers) in [(true, 1), (false, 1), (false, 2)] {
        let mut k = Kernel::builder()
            .deterministic(deterministic)
            .workers(workers)
            .build()
            .unwrap();
        load(&mut k, "spin", "run", TAIL_SPINNER.as_bytes());
        load(&mut k, "peer", "run", PEER.as_bytes());
        k.spawn("spin").unwrap();
        k.spawn("peer").unwrap();
        let (first, report) = first_exit_then_stop(k);
        assert_eq!(first.module, "peer", "{}", describe(&report));
        assert_eq!(first.status, ExitStatus::Exited(0), "{}", describe(&report));
        assert!(
            matches!(report_of(&report, "spin").status, ExitStatus::Stopped(_)),
            "{}",
            describe(&report)
        );
    }
    let h = run_alone(
        "handle",
        &handler(
            "(func $t (param i32) (return_call $t (i32.add (local.get 0) (i32.const 1))))",
            "(call $t (i32.const 0))",
        ),
    );
    assert_eq!(trapped(&h.status), Some(ErrorCode::TIMEOUT), "{h:?}");
}

// ---------------------------------------------------------------------------
// 4. Determinism: NaNs, relaxed SIMD, growth.

const CANON32: &str = "(i32.const 0x7fc00000)";
const CANON64: &str = "(i64.const 0x7ff8000000000000)";

/// BRIEF 3.8: "Deterministic mode: one worker, virtual clock, fuel-based
/// slices, NaN canonicalisation"; ARCHITECTURE: "NaN canonicalisation,
/// relaxed SIMD pinned to its deterministic results". Held: every NaN an
/// arithmetic instruction makes — scalar, SIMD and relaxed SIMD, fused
/// multiply-adds, promotions and demotions — is the canonical positive
/// quiet NaN, whatever payload or sign the host would have given it.
#[test]
fn deterministic_mode_canonicalises_every_arithmetic_nan() {
    let checks32 = [
        "(f32.div (f32.const 0) (f32.const 0))",
        "(f32.sqrt (f32.const -1))",
        "(f32.add (f32.const nan:0x200000) (f32.const 1))",
        "(f32.sub (f32.const -nan:0x1) (f32.const 1))",
        "(f32.min (f32.const nan:0x1234) (f32.const 1))",
        "(f32.demote_f64 (f64.const nan:0x123456789))",
        "(f32.nearest (f32.const nan:0x1234))",
        "(f32x4.extract_lane 0 (f32x4.div (v128.const f32x4 0 0 0 0) (v128.const f32x4 0 0 0 0)))",
        "(f32x4.extract_lane 1 (f32x4.relaxed_madd (v128.const f32x4 0 0 0 0) (v128.const f32x4 inf inf inf inf) (v128.const f32x4 1 1 1 1)))",
        "(f32x4.extract_lane 2 (f32x4.relaxed_nmadd (v128.const f32x4 0 0 0 0) (v128.const f32x4 inf inf inf inf) (v128.const f32x4 1 1 1 1)))",
        "(f32x4.extract_lane 0 (f32x4.relaxed_min (v128.const f32x4 nan:0x1234 0 0 0) (v128.const f32x4 1 1 1 1)))",
        "(f32x4.extract_lane 0 (f32x4.relaxed_max (v128.const f32x4 -nan:0x1234 0 0 0) (v128.const f32x4 1 1 1 1)))",
        "(f32x4.extract_lane 0 (f32x4.demote_f64x2_zero (v128.const f64x2 nan:0x123456789 0)))",
        "(f32x4.extract_lane 3 (f32x4.sqrt (v128.const f32x4 -1 -1 -1 -1)))",
        "(f32x4.extract_lane 0 (f32x4.max (v128.const f32x4 nan:0x1234 0 0 0) (v128.const f32x4 1 1 1 1)))",
        "(f32x4.extract_lane 0 (f32x4.nearest (v128.const f32x4 nan:0x1234 0 0 0)))",
    ];
    let checks64 = [
        "(f64.div (f64.const 0) (f64.const 0))",
        "(f64.promote_f32 (f32.const nan:0x1234))",
        "(f64.mul (f64.const -nan:0x1234) (f64.const 2))",
        "(f64x2.extract_lane 0 (f64x2.promote_low_f32x4 (v128.const f32x4 nan:0x1234 0 0 0)))",
        "(f64x2.extract_lane 1 (f64x2.relaxed_madd (v128.const f64x2 0 0) (v128.const f64x2 inf inf) (v128.const f64x2 1 1)))",
        "(f64x2.extract_lane 0 (f64x2.sub (v128.const f64x2 inf inf) (v128.const f64x2 inf inf)))",
    ];
    let mut body = String::new();
    let mut index = 1;
    for c in checks32 {
        body.push_str(&format!("(if (i32.ne (i32.reinterpret_f32 {c}) {CANON32}) (then (return (i32.const {index}))))\n"));
        index += 1;
    }
    for c in checks64 {
        body.push_str(&format!("(if (i64.ne (i64.reinterpret_f64 {c}) {CANON64}) (then (return (i32.const {index}))))\n"));
        index += 1;
    }
    let wat = format!(
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) {body} (i32.const 0)))"#
    );
    let p = run_alone("run", &wat);
    assert_eq!(
        p.status,
        ExitStatus::Exited(0),
        "exit code n: check n gave a NaN that is not canonical"
    );
}

/// Computes NaN bit patterns, relaxed SIMD results and growth results and
/// sends them (108 bytes) to `sink`.
const PRODUCER: &str = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1 4)
  (table 1 10 funcref)
  (data (i32.const 0) "sink")
  (func (export "run") (result i32)
    (i32.store (i32.const 100) (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
    (i64.store (i32.const 104) (i64.reinterpret_f64 (f64.sqrt (f64.const -2))))
    (v128.store (i32.const 112) (f32x4.relaxed_madd (v128.const f32x4 1.1 nan:0x1234 -0 inf) (v128.const f32x4 3.3 2 0 0) (v128.const f32x4 1e-8 1 -0 1)))
    (v128.store (i32.const 128) (f32x4.relaxed_min (v128.const f32x4 nan:0x1 -0 0 1) (v128.const f32x4 0 0 -0 nan:0x2)))
    (v128.store (i32.const 144) (i32x4.relaxed_trunc_f32x4_s (v128.const f32x4 nan 3e9 -3e9 1.5)))
    (v128.store (i32.const 160) (i8x16.relaxed_swizzle (v128.const i8x16 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15) (v128.const i8x16 200 17 1 128 0 0 0 0 0 0 0 0 0 0 0 0)))
    (v128.store (i32.const 176) (i16x8.relaxed_q15mulr_s (v128.const i16x8 -32768 -32768 1 2 3 4 5 6) (v128.const i16x8 -32768 32767 1 2 3 4 5 6)))
    (i32.store (i32.const 192) (memory.grow (i32.const 2)))
    (i32.store (i32.const 196) (memory.grow (i32.const 5)))
    (i32.store (i32.const 200) (table.grow (ref.null func) (i32.const 9)))
    (i32.store (i32.const 204) (table.grow (ref.null func) (i32.const 1)))
    (drop (call $send (call $lookup (i32.const 0) (i32.const 4)) (i32.const 0x1000) (i32.const 0) (i32.const 100) (i32.const 108)))
    (i32.const 0)))"#;

/// Takes one message and exits with the FNV-1a hash of its payload.
const SINK_HASH: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (local $n i32) (local $i i32) (local $h i32)
    (local.set $n (i32.wrap_i64 (call $receive (i32.const 0x1000) (i64.const -1) (i32.const 0) (i32.const 1024) (i32.const 1024))))
    (if (i32.ne (local.get $n) (i32.const 108)) (then (return (i32.const -1))))
    (local.set $h (i32.const 0x811c9dc5))
    (loop $l
      (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u offset=1024 (local.get $i))) (i32.const 16777619)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $h)))"#;

/// BRIEF 3.8: "the same inputs give the same outputs ... bit-identical
/// outputs". Held: NaN bits, relaxed SIMD lanes, memory.grow and
/// table.grow results, sent as a payload, hash the same in two
/// deterministic runs, and the runs' reports match.
#[test]
fn deterministic_runs_repeat_nan_bits_relaxed_simd_and_growth() {
    let run = || {
        let mut k = det();
        load(&mut k, "sink", "run", SINK_HASH.as_bytes());
        load(&mut k, "producer", "run", PRODUCER.as_bytes());
        k.spawn("sink").unwrap();
        k.spawn("producer").unwrap();
        let r = k.run();
        r.processes
            .iter()
            .map(|p| {
                format!(
                    "{} {:?} fuel={} cpu={} sent={} recv={}",
                    p.module, p.status, p.fuel_used, p.cpu_ns, p.sent, p.received
                )
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert!(
        a.iter()
            .any(|l| l.starts_with("sink Exited(") && !l.starts_with("sink Exited(-1)")),
        "{a:?}"
    );
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// 5. Deep stacks.

/// Recurses, making `call` at every level, until the stack runs out.
fn deep_task(call: &str) -> String {
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "log" (func $log (param i32 i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $send_receive
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 2)
  (data (i32.const 0) "pong")
  (global $peer (mut i64) (i64.const 0))
  (func $d {call} (call $d))
  (func (export "run") (result i32)
    (global.set $peer (call $lookup (i32.const 0) (i32.const 4)))
    (call $d)
    (i32.const 0)))"#
    )
}

/// A handler that, on STARTED, recurses `depth` levels and sends to `sink`.
fn deep_sender(depth: u32) -> String {
    format!(
        r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "sink")
  {INBOX}
  (func $d (param $n i32) (result i64)
    (if (result i64) (i32.eqz (local.get $n))
      (then (call $send (call $lookup (i32.const 0) (i32.const 4)) (i32.const 0x1000) (i32.const 0) (i32.const 0) (i32.const 0)))
      (else (call $d (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0xFF02))
      (then (return (i32.add (i32.const 100) (i32.wrap_i64 (call $d (i32.const {depth})))))))
    (i32.const 0)))"#
    )
}

/// A handler that recurses for ever on a 0x1000 message.
const OVERFLOWING_SINK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
  (func $rec (call $rec))
  (func (export "handle") (param i32) (result i32)
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 0x1000)) (then (call $rec)))
    (i32.const 0)))"#;

/// BRIEF 3.6: STACK_OVERFLOW 4006; "A faulting process can never corrupt
/// another's memory or the kernel". Held: a task making a call (a direct
/// handoff to a waiting task) or a 60 KB log line at every level of its
/// recursion, down to the last frame before the limit, ends with 4006 and
/// its peer is unharmed; a handler sending at its deepest possible frame
/// directly to a handler that overflows on the same worker stack (two
/// wasm stacks and their host frames nested) — both trap cleanly.
#[test]
fn stack_overflow_at_the_deepest_syscall_and_nested_delivery_is_contained() {
    for (deterministic, workers) in [(true, 1), (false, 2)] {
        for call in [
            "(drop (call $send_receive (global.get $peer) (i64.const 0) (i32.const 1) (i32.const 0) (i32.const 2048) (i32.const 8) (i64.const -1) (i64.const -1) (i32.const 1024) (i32.const 1080) (i32.const 8)))",
            "(drop (call $log (i32.const 4) (i32.const 4096) (i32.const 60000)))",
        ] {
            let mut k = Kernel::builder()
                .deterministic(deterministic)
                .workers(workers)
                .build()
                .unwrap();
            load_bundled(&mut k, "pong", "run");
            load(&mut k, "deep", "run", deep_task(call).as_bytes());
            k.spawn("pong").unwrap();
            k.spawn("deep").unwrap();
            let (first, report) = first_exit_then_stop(k);
            assert_eq!(first.module, "deep", "{}", describe(&report));
            assert_eq!(
                trapped(&first.status),
                Some(ErrorCode::TRAP_STACK_OVERFLOW),
                "{}",
                describe(&report)
            );
            let pong = report_of(&report, "pong");
            assert!(
                matches!(pong.status, ExitStatus::Stopped(_)),
                "{}",
                describe(&report)
            );
            assert_eq!(pong.sent, pong.received, "{}", describe(&report));
        }
    }
    // Find the deepest frame the sender can send from, trying each depth
    // in a fresh kernel: every try past the limit overflows the sender,
    // every one below overflows the sink inside the direct delivery.
    let (mut fits, mut overflows) = (100u32, 100_000u32);
    while fits + 1 < overflows {
        let depth = (fits + overflows) / 2;
        let mut k = det();
        load(&mut k, "sink", "handle", OVERFLOWING_SINK.as_bytes());
        load(&mut k, "deep", "handle", deep_sender(depth).as_bytes());
        k.spawn("sink").unwrap();
        k.spawn("deep").unwrap();
        let r = k.run();
        let (deep, sink) = (report_of(&r, "deep"), report_of(&r, "sink"));
        if trapped(&deep.status) == Some(ErrorCode::TRAP_STACK_OVERFLOW) {
            overflows = depth;
        } else {
            assert_eq!(
                deep.status,
                ExitStatus::Exited(101),
                "depth {depth}: {}",
                describe(&r)
            );
            assert_eq!(
                trapped(&sink.status),
                Some(ErrorCode::TRAP_STACK_OVERFLOW),
                "depth {depth}: {}",
                describe(&r)
            );
            fits = depth;
        }
    }
    assert!(fits > 1_000, "the sender fit only {fits} frames");
}

// ---------------------------------------------------------------------------
// 6. Limits.

/// ABI.md: "its initial size within the manifest's memory class"; BRIEF
/// 3.5: "memory limits by class — user logic 64 KiB..16 MiB"; wasm_loader:
/// "Growth beyond the class maximum is refused at run time by the
/// process's resource limiter"; ARCHITECTURE invariant 3: "a refused
/// memory growth makes a later abort (unreachable ...) OUT_OF_MEMORY".
/// Held: a memory declaring a 4 GiB maximum in the user class grows to
/// 16 MiB and no further (-1, no trap); a table grows to its 10,000-slot
/// limit and no further; a 7 MiB data segment makes a handler's
/// instantiation TIMEOUT (it is paid from one call's budget).
#[test]
fn growth_stops_at_the_class_and_the_table_slot_and_big_segments_are_paid() {
    let p = run_alone(
        "run",
        r#"(module (memory (export "memory") 1 65536) (table 0 funcref)
          (func (export "run") (result i32)
            (if (i32.ne (memory.grow (i32.const 255)) (i32.const 1)) (then (return (i32.const 1))))
            (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 2))))
            (if (i32.ne (memory.grow (i32.const -1)) (i32.const -1)) (then (return (i32.const 3))))
            (if (i32.ne (table.grow (ref.null func) (i32.const 10000)) (i32.const 0)) (then (return (i32.const 4))))
            (if (i32.ne (table.grow (ref.null func) (i32.const 1)) (i32.const -1)) (then (return (i32.const 5))))
            (i32.store (i32.const 16777212) (i32.const 7))
            unreachable))"#,
    );
    assert_eq!(trapped(&p.status), Some(ErrorCode::OUT_OF_MEMORY), "{p:?}");
    let data = "a".repeat(7 << 20);
    let h = run_alone(
        "handle",
        &format!(
            r#"(module (memory (export "memory") 256) (data (i32.const 0) "{data}") {INBOX} (func (export "handle") (param i32) (result i32) (i32.const 5)))"#
        ),
    );
    assert_eq!(trapped(&h.status), Some(ErrorCode::TIMEOUT), "{h:?}");
}

/// tests/all/loading.rs (`a_table_or_memory_past_a_process_limit_
/// is_named_not_called_invalid`): "Valid WebAssembly that asks for more
/// than a process may have: the error names the limit, and never says
/// 'not a valid WebAssembly module' (the engine's pool refused these while
/// compiling, in its own words)"; wasm_loader.rs (`check_declared_limits`):
/// "The process limits a module's declarations must fit, checked on its
/// bytes before compiling". Failed before the fix: a process's instance
/// state was bounded by the pool's default `max_core_instance_size` (1 MiB,
/// not configured in init.rs and documented nowhere), so 80,000 globals —
/// valid WebAssembly (the limit is 1,000,000) — were compiled in full and
/// then refused as "not a valid WebAssembly module: module instance size
/// does not fit in pooling allocator requirements ...". Now docs/ABI.md
/// documents the limit ("at most 1 MiB of instance state"): a module past
/// it by its globals, imports or referenced functions is refused before
/// compiling, one past it only by the engine's own few hundred bytes after
/// compiling, both naming it; one just within it loads.
#[test]
fn a_module_past_the_instance_size_limit_is_named_not_called_invalid() {
    let globals = |n: u32| {
        let mut wat = String::from(r#"(module (memory (export "memory") 1) "#);
        for i in 0..n {
            wat.push_str(&format!("(global i64 (i64.const {i}))"));
        }
        wat.push_str(r#"(func (export "run")))"#);
        wat
    };
    let imports = {
        let mut wat = String::from("(module ");
        for _ in 0..20_000 {
            wat.push_str(r#"(import "estalogic" "yield_now" (func (result i64)))"#);
        }
        wat.push_str(r#"(memory (export "memory") 1) (func (export "run")))"#);
        wat
    };
    // Exported (an element segment of 40,000 would pass the compile
    // budget's MAX_ELEMENTS first).
    let referenced = {
        let mut wat = String::from(r#"(module (memory (export "memory") 1) "#);
        for i in 0..40_000 {
            wat.push_str(&format!(r#"(func (export "f{i}"))"#));
        }
        wat.push_str(r#"(func (export "run")))"#);
        wat
    };
    let limit = "more than a process's 1048576 (1 MiB)";
    let cases = [
        (
            "globals",
            globals(80_000),
            "needs 1280032 bytes of instance state",
            "80000 globals at 16 bytes each, 1 function exported or referenced at 32 bytes each",
        ),
        // Past it only by the engine's own bytes: refused after compiling.
        (
            "edge",
            globals(65_523),
            "bytes of instance state",
            "65523 globals at 16 bytes each, 1 function exported or referenced at 32 bytes each, and ",
        ),
        (
            "imports",
            imports,
            "needs 1280032 bytes of instance state",
            "20000 imported functions at 64 bytes each, 1 function exported or referenced at 32 bytes each",
        ),
        (
            "referenced",
            referenced,
            "needs 1280032 bytes of instance state",
            "40001 functions exported or referenced at 32 bytes each",
        ),
    ];
    for (name, wat, needs, what) in cases {
        let mut k = det();
        let error = try_load(&mut k, name, "run", wat.as_bytes())
            .expect_err("setup: past the 1 MiB of instance state");
        assert!(
            !error.contains("not a valid WebAssembly"),
            "a valid module past a process limit is called invalid: {error}"
        );
        assert!(
            error.contains(needs) && error.contains(limit) && error.contains(what),
            "{name}: {error}"
        );
    }
    // Just within it, a module loads and runs.
    let mut k = det();
    load(&mut k, "within", "run", globals(65_500).as_bytes());
    k.spawn("within").unwrap();
    let r = k.run();
    assert_eq!(
        report_of(&r, "within").status,
        ExitStatus::Exited(0),
        "{}",
        describe(&r)
    );
}
