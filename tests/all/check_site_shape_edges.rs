//! Code shapes against the check-site bound of `loader::check_sites`
//! (ARCHITECTURE invariant 7, docs/ABI.md "Fuel and check sites", BRIEF
//! 3.2): tail-called recursion, small constant bulk operations, bodies
//! near the engine's size limit, and blocks whose meaning must survive.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::wasm_bytes::{leb, section, sleb};
use estalogic_tests::{ALL_CAPS, describe, load_bytes as load, manifest, report_of, trapped};
use std::path::Path;

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

/// Types of every probe module.
const T_VOID: u8 = 0; // () -> ()
const T_RUN: u8 = 1; // () -> i32
const T_HANDLE: u8 = 2; // (i32) -> i32
const T_INBOX: u8 = 3; // () -> i64
const T_I32: u8 = 4; // (i32) -> ()

/// A binary module: `funcs` (type, code without locals or final `end`) at
/// indices 0.., then `run` (a task entry), `handle` (a handler entry) and
/// the inbox export; memory 1 page (max 1 if `max1`); a funcref table
/// holding `elems` at 0 if any.
fn module(
    funcs: &[(u8, Vec<u8>)],
    run: Vec<u8>,
    handle: Vec<u8>,
    elems: &[u32],
    max1: bool,
) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(
        1,
        vec![
            5, 0x60, 0, 0, 0x60, 0, 1, 0x7f, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 0, 1, 0x7e, 0x60, 1,
            0x7f, 0,
        ],
        &mut m,
    );
    let n = funcs.len() as u32;
    let mut fsec = Vec::new();
    leb(u64::from(n) + 3, &mut fsec);
    for (ty, _) in funcs {
        fsec.push(*ty);
    }
    fsec.extend([T_RUN, T_HANDLE, T_INBOX]);
    section(3, fsec, &mut m);
    if !elems.is_empty() {
        let mut t = vec![1, 0x70, 0];
        leb(elems.len() as u64, &mut t);
        section(4, t, &mut m);
    }
    section(
        5,
        if max1 {
            vec![1, 1, 1, 1]
        } else {
            vec![1, 0, 1]
        },
        &mut m,
    );
    let mut exports = vec![4];
    for (name, kind, index) in [
        ("memory", 2u8, 0u32),
        ("run", 0, n),
        ("handle", 0, n + 1),
        ("estalogic_inbox", 0, n + 2),
    ] {
        exports.push(name.len() as u8);
        exports.extend(name.as_bytes());
        exports.push(kind);
        leb(u64::from(index), &mut exports);
    }
    section(7, exports, &mut m);
    if !elems.is_empty() {
        let mut e = vec![1, 0, 0x41, 0, 0x0b];
        leb(elems.len() as u64, &mut e);
        for f in elems {
            leb(u64::from(*f), &mut e);
        }
        section(9, e, &mut m);
    }
    let mut inbox = vec![0x42];
    sleb(0x0000_0040_0000_0400, &mut inbox);
    let mut code = Vec::new();
    leb(u64::from(n) + 3, &mut code);
    let all = funcs
        .iter()
        .map(|(_, c)| c.clone())
        .chain([run, handle, inbox]);
    for c in all {
        let mut body = vec![0u8];
        body.extend(c);
        body.push(0x0b);
        leb(body.len() as u64, &mut code);
        code.extend(body);
    }
    section(10, code, &mut m);
    m
}

/// `n` units of straight-line work: `i32.const 0; drop` (one fuel unit).
fn units(n: usize) -> Vec<u8> {
    [0x41, 0x00, 0x1a].repeat(n)
}

fn i32_const(v: i32) -> Vec<u8> {
    let mut c = vec![0x41];
    sleb(i64::from(v), &mut c);
    c
}

/// A handler body that burns about `units` fuel in a loop (checked at
/// every iteration: 7 units each) using its parameter as the counter.
fn burn(units: u64) -> Vec<u8> {
    let mut c = vec![0x41, 0x00, 0x21, 0x00]; // local.set 0 (i32.const 0)
    c.extend([0x03, 0x40]); // loop
    c.extend([0x20, 0x00, 0x41, 0x01, 0x6a, 0x22, 0x00]); // get, 1, add, tee
    c.extend(i32_const((units / 7) as i32));
    c.extend([0x49, 0x0d, 0x00, 0x0b]); // lt_u, br_if 0, end
    c
}

// ---------------------------------------------------------------------------
// 1. Tail calls: the callee's tail is not counted.

/// The depth of recursion and the work after each return.
const DEPTH: i32 = 30;
const AFTER: usize = 99_900;

/// `$f (n)`: if n, calls `$g (n - 1)`; then AFTER units. `$g (n)` is one of
/// `return_call $f`, `return_call_indirect` (table [$f]) or
/// `return_call_ref`: its own tail is 0, so the pass thinks `$f`'s call of
/// `$g` returns fresh from a check, but it returns from `$f`'s callee, after
/// all of its code: on the way back every level runs AFTER units with no
/// check in between.
fn tail_chain(kind: &str, run: Vec<u8>, handle: Vec<u8>) -> Vec<u8> {
    let mut f = vec![
        0x20, 0x00, 0x04, 0x40, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x01, 0x0b,
    ];
    f.extend(units(AFTER));
    let g = match kind {
        "return_call" => vec![0x20, 0x00, 0x12, 0x00],
        "return_call_indirect" => vec![0x20, 0x00, 0x41, 0x00, 0x13, T_I32, 0x00],
        // ref.func 0 needs a declaration: the table's element segment is it.
        "return_call_ref" => vec![0x20, 0x00, 0xd2, 0x00, 0x15, T_I32],
        _ => unreachable!(),
    };
    module(&[(T_I32, f), (T_I32, g)], run, handle, &[0], false)
}

/// ARCHITECTURE invariant 7: "A guest reaches a checkpoint at least every
/// 1,000,000 fuel units ... a checkpoint comes at most 200,000 units after
/// its slice began"; docs/ABI.md "Fuel and check sites": "code after a
/// call on the way back from a deep recursion" is covered. A recursion
/// that goes through a tail call (`return_call`, `return_call_indirect`,
/// `return_call_ref`) runs ~3,000,000 units on its way back without a
/// check.
// Failed before the fix: `return_call*` gave the caller no tail (the
// callee's): ~3,097,207 units with 0 checkpoints, for all three kinds.
#[test]
fn tail_called_recursion_returns_millions_without_a_checkpoint() {
    let mut failures = Vec::new();
    for kind in ["return_call", "return_call_indirect", "return_call_ref"] {
        let mut run = i32_const(DEPTH);
        run.extend([0x10, 0x00, 0x41, 0x00]);
        let bytes = tail_chain(kind, run, vec![0x41, 0x00]);
        let mut k = det();
        load(&mut k, "chain", "run", &bytes);
        k.spawn("chain").unwrap();
        let r = k.run();
        let p = report_of(&r, "chain");
        assert_eq!(p.status, ExitStatus::Exited(0), "setup {kind}: {p:?}");
        assert!(
            p.fuel_used >= DEPTH as u64 * AFTER as u64,
            "setup {kind}: {p:?}"
        );
        let least = (p.fuel_used / 200_000).saturating_sub(1);
        eprintln!(
            "{kind}: fuel {} checkpoints {} (need >= {least}) cpu_ns {}",
            p.fuel_used, r.stats.checkpoints, p.cpu_ns
        );
        if r.stats.checkpoints < least {
            failures.push(format!(
                "{kind}: {} fuel units with {} checkpoints (at least {least} needed)",
                p.fuel_used, r.stats.checkpoints
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// docs/ABI.md, "Handler processes": "one call may use 64 slices of fuel
/// (6,400,000 units by default); a call that needs more traps with
/// `TIMEOUT` (3001)". A call whose work is a 100-deep tail-called recursion
/// (~10,000,000 units on the way back) returns normally.
// Failed before the fix: the call returned `Exited(7)`, its report
// counting 6,400,002 units.
#[test]
fn handler_call_through_tail_called_recursion_outruns_its_budget() {
    let mut handle = i32_const(100);
    handle.extend([0x10, 0x00, 0x41, 0x07]);
    let bytes = tail_chain("return_call", vec![0x41, 0x00], handle);
    let mut k = det();
    load(&mut k, "chain", "handle", &bytes);
    k.spawn("chain").unwrap();
    let r = k.run();
    let p = report_of(&r, "chain");
    eprintln!("handler tail chain: {:?} fuel {}", p.status, p.fuel_used);
    assert_eq!(
        trapped(&p.status),
        Some(ErrorCode::TIMEOUT),
        "a ~10 M-unit call against a 6.4 M budget: {:?}, its report counting {} fuel units",
        p.status,
        p.fuel_used
    );
    assert!(p.fuel_used <= 6_400_000 + 4_095 + 256 + (1 << 20), "{p:?}");
}

// ---------------------------------------------------------------------------
// 2. Bulk operations with small constant sizes: more than one unit each,
//    and no check of their own.

/// `$big`: `n` times `ops` (a straight-line function).
fn bulk(ops: &[u8], n: usize, run: Vec<u8>, handle: Vec<u8>) -> Vec<u8> {
    module(&[(T_VOID, ops.repeat(n))], run, handle, &[], true)
}

/// `i32.const 2; memory.grow; drop`: 2 units to the pass, 130 to the
/// engine (64 a page asked for, charged whether or not it is granted;
/// 128 or less is folded in without a check).
const GROW2: [u8; 5] = [0x41, 0x02, 0x40, 0x00, 0x1a];
/// `memory.fill (0, 0, 128)`: 4 units to the pass, 132 to the engine.
const FILL128: [u8; 10] = [0x41, 0x00, 0x41, 0x00, 0x41, 0x80, 0x01, 0xfc, 0x0b, 0x00];
/// `memory.copy (0, 128, 128)`: 4 units to the pass, 132 to the engine
/// (expanded inline).
const COPY128: [u8; 12] = [
    0x41, 0x00, 0x41, 0x80, 0x01, 0x41, 0x80, 0x01, 0xfc, 0x0a, 0x00, 0x00,
];

/// docs/ABI.md "Fuel and check sites": "bulk memory and table operations
/// [cost] by the byte or element, `memory.grow` 64 units a page asked for
/// ... the loader adds an empty `loop` wherever a path could otherwise run
/// 100,000 units without a check ... A guest therefore passes a checkpoint
/// at most 200,000 units after its slice began"; invariant 7: "at least
/// every 1,000,000 fuel units". The pass counts every bulk operation as one
/// unit, and Wasmtime adds no check for one whose constant cost is 128 or
/// less: straight-line code of them runs 1.65 M to 3.25 M units (6.5 M to
/// 13 M per 100,000 units the pass counts) between checks.
// Failed before the fix: the pass counted 1 unit for a bulk operation of
// constant size, which the engine charges by page, byte or element
// without a check of its own (`memory.grow 2`: 3,250,004 units, 0
// checkpoints).
#[test]
fn small_constant_bulk_operations_run_millions_between_checks() {
    let mut failures = Vec::new();
    for (what, ops, n) in [
        ("memory.grow 2", &GROW2[..], 25_000),
        ("memory.fill 128", &FILL128[..], 12_500),
        ("memory.copy 128", &COPY128[..], 12_500),
    ] {
        // `run` calls `$big` once: 50,000 units to the pass (no site).
        let bytes = bulk(ops, n, vec![0x10, 0x00, 0x41, 0x00], vec![0x41, 0x00]);
        let mut k = det();
        load(&mut k, "bulk", "run", &bytes);
        k.spawn("bulk").unwrap();
        let r = k.run();
        let p = report_of(&r, "bulk");
        assert_eq!(p.status, ExitStatus::Exited(0), "setup {what}: {p:?}");
        let least = (p.fuel_used / 200_000).saturating_sub(1);
        eprintln!(
            "{what}: fuel {} checkpoints {} (need >= {least}) cpu_ns {}",
            p.fuel_used, r.stats.checkpoints, p.cpu_ns
        );
        if r.stats.checkpoints < least {
            failures.push(format!(
                "{what}: {} fuel units with {} checkpoints (at least {least} needed)",
                p.fuel_used, r.stats.checkpoints
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// docs/ABI.md, "Handler processes": "a call that needs more traps with
/// `TIMEOUT` (3001)"; invariant 7: "one call is bounded by 64 slices of
/// fuel". A call that burns 6.3 M units in a loop and then calls a
/// straight-line function of 49,999 `memory.grow 2` (99,998 units to the
/// pass: no site; 6.5 M to the engine) returns normally, 12.8 M units into
/// a 6.4 M budget.
// Failed before the fix (the same cause): `Exited(7)` at about 12.8 M
// units.
#[test]
fn handler_call_overshoots_its_budget_by_millions_with_bulk_operations() {
    let mut handle = burn(6_300_000);
    handle.extend([0x10, 0x00, 0x41, 0x07]);
    let bytes = bulk(&GROW2, 49_999, vec![0x41, 0x00], handle);
    let mut k = det();
    load(&mut k, "bulk", "handle", &bytes);
    k.spawn("bulk").unwrap();
    let r = k.run();
    let p = report_of(&r, "bulk");
    eprintln!("handler bulk: {:?} fuel {}", p.status, p.fuel_used);
    assert_eq!(
        trapped(&p.status),
        Some(ErrorCode::TIMEOUT),
        "a ~12.8 M-unit call against a 6.4 M budget: {:?}, its report counting {} fuel units",
        p.status,
        p.fuel_used
    );
}

// ---------------------------------------------------------------------------
// 3. The pass makes a valid module invalid.

/// The brief for the pass (check_sites.rs): "the instrumented module must
/// validate and compute exactly what the original computes"; the module
/// docs: "Code whose paths are all shorter is left as it was". A function
/// body just under Wasmtime's body-size limit (7,654,321 bytes) of
/// one-byte, one-unit operators (`i32.eqz`) gets 76 sites (228 bytes) and
/// passes the limit: a module Wasmtime accepts is refused at load.
// Failed before the fix: the pass grew the body past the engine's limit,
// and the load failed as "not a valid WebAssembly module ... function body
// size count exceeds limit" about the module it made. Now bodies over the
// compile budget's MAX_FUNCTION_BYTES are refused by name, and within it
// the sites always fit.
#[test]
fn a_body_near_the_engines_size_limit_is_refused_by_name_and_one_within_the_budget_instruments() {
    const LIMIT: usize = 7_654_321;
    // Body: locals (1) + i32.const 0 (2) + n eqz + drop (1) + end (1).
    let body = |n: usize| {
        let mut code = vec![0x41, 0x00];
        code.extend(std::iter::repeat_n(0x45u8, n));
        code.push(0x1a);
        module(
            &[(T_VOID, code)],
            vec![0x10, 0x00, 0x41, 0x00],
            vec![0x41, 0x00],
            &[],
            false,
        )
    };
    let engine = wasmtime::Engine::default();
    let near = body(LIMIT - 5 - 10);
    wasmtime::Module::validate(&engine, &near).expect("setup: Wasmtime accepts the module");
    // The pass never hands the engine a body past its limit.
    assert!(matches!(
        estalogic_kernel::loader::check_sites::instrument(&near),
        Err(estalogic_kernel::loader::check_sites::Skipped::TooLarge(
            0,
            _
        ))
    ));
    let mut k = det();
    let error = k
        .load_module(
            manifest("near", "run", ALL_CAPS, "normal"),
            &near,
            Path::new("near"),
        )
        .expect_err("a body past the compile budget is refused")
        .to_string();
    assert!(
        error.contains("bytes long")
            && error.contains(
                &estalogic_kernel::loader::compile_budget::MAX_FUNCTION_BYTES.to_string()
            ),
        "the error names the limit: {error}"
    );
    // Just within the budget: instrumented, valid, and loads and runs.
    let within = body(estalogic_kernel::loader::compile_budget::MAX_FUNCTION_BYTES - 5 - 10);
    let out = estalogic_kernel::loader::check_sites::instrument(&within).expect("instruments");
    assert!(out.len() > within.len(), "it needed sites");
    wasmtime::Module::validate(&engine, &out).expect("the instrumented module validates");
    load(&mut k, "within", "run", &within);
    k.spawn("within").unwrap();
    let r = k.run();
    assert_eq!(
        report_of(&r, "within").status,
        ExitStatus::Exited(0),
        "{}",
        describe(&r)
    );
}

// ---------------------------------------------------------------------------
// 4. Held: blocks with params and results, br_table to every label (the
//    function's too), if/else with branches out of both arms.

/// Runs `run(param)` of `module`: its result, or None if it trapped.
fn plain_run(engine: &wasmtime::Engine, module: &wasmtime::Module, param: i32) -> Option<i32> {
    let mut store = wasmtime::Store::new(engine, ());
    let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
    let run = instance
        .get_typed_func::<i32, i32>(&mut store, "run")
        .unwrap();
    run.call(&mut store, param).ok()
}

/// The pass's promise (check_sites.rs; ARCHITECTURE invariant 7, "its
/// output validates and computes what its input does"). Held.
#[test]
fn multivalue_blocks_and_br_tables_keep_their_meaning() {
    let u = "(local.set $a (i32.add (local.get $a) (i32.const 1))) ".repeat(26_000);
    let wat = format!(
        r#"(module (func (export "run") (param i32) (result i32) (local $a i32)
          (i32.const 5)
          (block $outer (param i32) (result i32)
            (block $mid (param i32) (result i32)
              {u}
              (if (param i32) (result i32) (i32.eq (local.get 0) (i32.const 1))
                (then {u} (br $outer (i32.add (i32.const 100))))
                (else {u} (br_if $mid (i32.const 7) (i32.eq (local.get 0) (i32.const 2))) drop drop (i32.const 9)))
              {u}
              (local.get 0)
              (br_table $mid $outer 2 (i32.add (local.get $a)) (local.get 0)))
            {u}
            (i32.add (local.get $a)))
          {u}
          (i32.add (local.get $a))))"#
    );
    // The original (plain Wasmtime, WAT text) against the pass's output
    // (`check_sites::compile` parses the text and instruments it).
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let original = wasmtime::Module::new(&engine, &wat).expect("setup: the original compiles");
    let instrumented = estalogic_kernel::loader::check_sites::compile(&engine, wat.as_bytes())
        .expect("the instrumented module compiles");
    for p in 0..5 {
        let (a, b) = (
            plain_run(&engine, &original, p),
            plain_run(&engine, &instrumented, p),
        );
        eprintln!("param {p}: {a:?} {b:?}");
        assert_eq!(a, b, "param {p}");
    }
}

/// A `() -> ()` function whose tail is exactly the bound (100,000 units):
/// 99,999 units, then `br 0` to its own end.
fn full_tail() -> Vec<u8> {
    let mut code = vec![0x41, 0x00];
    code.extend(std::iter::repeat_n(0x45u8, 99_998));
    code.extend([0x1a, 0x0c, 0x00]);
    code
}

// compile_budget.rs: MAX_FUNCTION_BYTES keeps "every body with its sites
// under the engine's limit"; a valid module within the budget is never
// refused as "not a valid WebAssembly module". Failed before the fix (the
// budget was 4,000,000 bytes): a 3,200,002-byte body of calls to a
// function whose tail is the bound got a site after every call and was
// refused as invalid, 8,000,002 bytes with its sites. Now the largest body
// of calls the budget admits fits with its sites, loads and runs.
#[test]
fn the_largest_body_of_calls_the_budget_admits_fits_with_its_sites() {
    let budget = estalogic_kernel::loader::compile_budget::MAX_FUNCTION_BYTES;
    // Two bytes a call, within the budget with the body's other bytes.
    let calls = (budget - 8) / 2;
    let mut big = Vec::with_capacity(2 * calls);
    for _ in 0..calls {
        big.extend([0x10, 0x00]);
    }
    // Function 0: the full tail; 1: the calls; run calls 1 once.
    let bytes = module(
        &[(T_VOID, full_tail()), (T_VOID, big)],
        vec![0x10, 0x01, 0x41, 0x00],
        vec![0x41, 0x00],
        &[],
        false,
    );
    assert!(estalogic_kernel::loader::compile_budget::check(&bytes).is_ok());
    let out = estalogic_kernel::loader::check_sites::instrument(&bytes).expect("instruments");
    assert!(out.len() > 2 * bytes.len(), "a site after every call");
    // The engine's validator takes it (compiling a 7.5 MB function takes
    // minutes in a debug build; the engine's size limit is the parser's).
    wasmtime::Module::validate(&wasmtime::Engine::default(), &out)
        .expect("the instrumented module is valid");
    let mut k = det();
    // A body one call larger is refused by the budget, by name.
    let mut over = vec![];
    for _ in 0..budget / 2 + 1 {
        over.extend([0x10, 0x00]);
    }
    let bytes = module(
        &[(T_VOID, full_tail()), (T_VOID, over)],
        vec![0x41, 0x00],
        vec![0x41, 0x00],
        &[],
        false,
    );
    let error = k
        .load_module(
            manifest("over", "run", ALL_CAPS, "normal"),
            &bytes,
            Path::new("over"),
        )
        .expect_err("over the budget")
        .to_string();
    assert!(error.contains("bytes long"), "{error}");
}

// compile_budget.rs: "a small module built to make Cranelift slow or
// hungry ... is refused at once with a reason". Failed before the fix:
// element segments whose offset is not a plain constant compile element
// by element (100 segments of 128 elements took about 20 times as long as
// a function body of their size; 1,000 took 33 s in a debug build), and
// only their number was limited. Now their elements in all are.
#[test]
fn element_segments_past_the_budgets_elements_are_refused_at_once() {
    use estalogic_kernel::loader::compile_budget::{MAX_ELEMENTS, check};
    let limit = MAX_ELEMENTS as usize;
    let bytes = |elements: usize| {
        module(
            &[],
            vec![0x41, 0x00],
            vec![0x41, 0x00],
            &vec![0u32; elements],
            false,
        )
    };
    assert!(check(&bytes(limit)).is_ok());
    let error = check(&bytes(limit + 1)).expect_err("one element too many");
    assert!(error.contains("table elements"), "{error}");
    // The kernel refuses it before compiling anything.
    let mut k = det();
    let error = k
        .load_module(
            manifest("e", "run", ALL_CAPS, "normal"),
            &bytes(limit + 1),
            Path::new("e"),
        )
        .expect_err("refused")
        .to_string();
    assert!(error.contains("table elements"), "{error}");
}
