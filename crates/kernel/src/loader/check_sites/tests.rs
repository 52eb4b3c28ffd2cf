//! Unit tests of the check-site pass: where sites go, that the output is a
//! valid module computing the same thing, and that short code is untouched.

use super::*;
use proptest::prelude::*;

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test WAT parses")
}

/// Check sites in `bytes` after instrumenting: loops that are empty.
fn sites(bytes: &[u8]) -> usize {
    let out = instrument(bytes).expect("instruments");
    let mut count = 0;
    for payload in Parser::new(0).parse_all(&out) {
        if let Payload::CodeSectionEntry(body) = payload.unwrap() {
            let mut reader = body.get_operators_reader().unwrap();
            let mut previous_loop = false;
            while !reader.eof() {
                let op = reader.read().unwrap();
                if previous_loop && matches!(op, Operator::End) {
                    count += 1;
                }
                previous_loop = matches!(op, Operator::Loop { .. });
            }
        }
    }
    count
}

fn valid(bytes: &[u8]) {
    wasmparser::Validator::new()
        .validate_all(bytes)
        .expect("the instrumented module validates");
}

/// `n` units of straight-line work (2 fuel units each).
fn units(n: usize) -> String {
    "(local.set $a (i32.add (local.get $a) (i32.const 1))) ".repeat(n)
}

/// A function of `n` straight-line units.
fn straight(n: usize) -> String {
    let body = units(n);
    format!(r#"(module (func (export "run") (result i32) (local $a i32) {body} (local.get $a)))"#)
}

#[test]
fn short_code_is_left_byte_for_byte() {
    let bytes = wasm(&straight(1000));
    let out = instrument(&bytes).unwrap();
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(&*out, &bytes[..]);
}

#[test]
fn straight_line_code_gets_a_site_every_max_unchecked_units() {
    // 4 units each (get, const, add, set): 100,000 of them are 400,000
    // units, four sites.
    let bytes = wasm(&straight(100_000));
    let out = instrument(&bytes).unwrap();
    valid(&out);
    assert_eq!(sites(&bytes), 4);
}

#[test]
fn a_loop_header_is_a_check() {
    // Each iteration's body is short: no site, however often it runs.
    let bytes = wasm(
        r#"(module (func (export "run") (local $i i32)
          (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))))"#,
    );
    assert_eq!(sites(&bytes), 0);
}

#[test]
fn a_branch_past_a_site_still_counts_what_it_skipped_to() {
    // 60,000 units before the block; its arm holds 120,000 (a site); the
    // path that branches past the arm runs 60,000 more after the block:
    // 120,000 since the function's entry, so a site goes there too.
    let part = units(15_000);
    let bytes = wasm(&format!(
        r#"(module (func (export "run") (param i32) (local $a i32)
          {part}
          (block $skip (br_if $skip (local.get 0)) {part} {part})
          {part}))"#
    ));
    let out = instrument(&bytes).unwrap();
    valid(&out);
    assert_eq!(sites(&bytes), 2);
}

#[test]
fn code_after_a_call_counts_the_callees_tail() {
    // $callee runs 80,000 units after its entry; the caller's call is
    // followed by 40,000 more: a site after the call's 100,000th unit.
    let callee = units(20_000);
    let after = units(10_000);
    let bytes = wasm(&format!(
        r#"(module
          (func $callee (local $a i32) {callee})
          (func (export "run") (local $a i32) (call $callee) {after}))"#
    ));
    let out = instrument(&bytes).unwrap();
    valid(&out);
    assert_eq!(sites(&bytes), 1);
}

#[test]
fn a_small_callee_adds_no_site_after_its_calls() {
    let bytes = wasm(
        r#"(module
          (func $step (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
          (func (export "run") (result i64) (local $i i64) (local $s i64)
            (loop $l
              (local.set $s (call $step (local.get $s) (local.get $i)))
              (local.set $i (i64.add (local.get $i) (i64.const 1)))
              (br_if $l (i64.lt_u (local.get $i) (i64.const 1000))))
            (local.get $s)))"#,
    );
    assert_eq!(sites(&bytes), 0);
}

#[test]
fn recursion_with_code_after_the_call_gets_a_site_after_it() {
    // Each return runs 1,000 units after the recursive call: unchecked, a
    // 10,000-deep recursion would run 10,000,000 on its way back.
    let after = units(250);
    let bytes = wasm(&format!(
        r#"(module (func $r (export "run") (param i32) (local $a i32)
          (if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1)))))
          {after}))"#
    ));
    let out = instrument(&bytes).unwrap();
    valid(&out);
    assert!(sites(&bytes) >= 1);
}

#[test]
fn other_sections_are_kept() {
    let body = units(100_000);
    let bytes = wasm(&format!(
        r#"(module (memory 1) (data (i32.const 0) "hello") (global i32 (i32.const 7))
          (func $f (export "run") (local $a i32) {body}))"#
    ));
    let out = instrument(&bytes).unwrap();
    valid(&out);
    let kinds = |b: &[u8]| -> Vec<u8> {
        Parser::new(0)
            .parse_all(b)
            .filter_map(|p| p.unwrap().as_section().map(|(id, _)| id))
            .collect()
    };
    assert_eq!(kinds(&bytes), kinds(&out));
    // The name section (a custom section) came through whole.
    assert!(out.windows(4).any(|w| w == b"name"));
}

/// A module of one `() -> ()` function whose body is `code` (no locals).
fn raw(code: &[u8]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend([1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
    m.extend([3, 2, 1, 0]); // function section: one of type 0
    let mut body = vec![0u8]; // no locals
    body.extend(code);
    let mut section = vec![1u8, body.len() as u8];
    section.extend(body);
    m.push(10);
    m.push(section.len() as u8);
    m.extend(section);
    m
}

#[test]
fn unbalanced_code_is_left_to_the_engine_not_a_panic() {
    // An else outside an if (at the top, in a block); an end past the
    // function's; a lone end.
    for code in [
        &[0x05, 0x0b][..],
        &[0x02, 0x40, 0x05, 0x0b, 0x0b][..],
        &[0x0b, 0x0b][..],
        &[0x01, 0x0b, 0x0b, 0x0b][..],
    ] {
        assert!(instrument(&raw(code)).is_err(), "{code:x?}");
        let engine = wasmtime::Engine::default();
        let error = compile(&engine, &raw(code)).expect_err("invalid code does not compile");
        assert!(!format!("{error:#}").is_empty());
    }
}

#[test]
fn exceptions_are_left_to_the_engine() {
    let bytes = wasm(
        r#"(module (tag $t) (func (export "run") (block $b (try_table (catch $t $b) (throw $t)))))"#,
    );
    assert!(matches!(instrument(&bytes), Err(Skipped::Unsupported(_))));
}

/// Runs `run(param)` of `bytes` on a plain engine: its result, or None if
/// it trapped.
fn run(bytes: &[u8], param: i32) -> Option<i32> {
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let module = wasmtime::Module::new(&engine, bytes).unwrap();
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let run = instance
        .get_typed_func::<i32, i32>(&mut store, "run")
        .unwrap();
    run.call(&mut store, param).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Whatever the mix of blocks, ifs, branches, loops and calls, the
    /// output validates and computes what the input computes.
    #[test]
    fn output_validates_and_computes_the_same(
        shape in proptest::collection::vec(0u8..6, 1..10),
        width in 1usize..5_000,
    ) {
        let unit = units(width);
        let mut body = String::new();
        for s in &shape {
            body.push_str(match s {
                0 => "(block $b (br_if $b (local.get 0)) ",
                1 => "(if (local.get 0) (then ",
                2 => "(local.set $a (i32.add (local.get $a) (call $leaf))) ",
                3 => "(loop $l ",
                _ => "",
            });
            body.push_str(&unit);
            body.push_str(match s {
                0 | 3 => ")",
                1 => "))",
                _ => "",
            });
        }
        let text = format!(
            r#"(module
              (func $leaf (result i32) (local $a i32) {unit} (local.get $a))
              (func (export "run") (param i32) (result i32) (local $a i32) {body} (local.get $a)))"#
        );
        let bytes = wasm(&text);
        let out = instrument(&bytes).unwrap();
        valid(&out);
        for param in [0, 1] {
            prop_assert_eq!(run(&bytes, param), run(&out, param));
        }
    }
}
