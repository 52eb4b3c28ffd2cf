//! Tests for the loader's own checks: what a module's declarations cost in
//! instance state, and the engine's refusal for it named as a limit.

use super::*;

#[test]
fn instance_state_counts_what_grows_with_the_module() {
    let wasm = wat::parse_str(
        r#"(module
          (import "estalogic" "yield_now" (func $y (result i64)))
          (import "estalogic" "yield_now" (func (result i64)))
          (memory (export "memory") 1) (table 2 funcref)
          (global i32 (i32.const 0)) (global funcref (ref.func $a))
          (elem (i32.const 0) $b $y) (elem declare func $a $c)
          (func $a) (func $b) (func $c) (func $d)
          (func (export "run"))
          (data (i32.const 0) "x") (data "y"))"#,
    )
    .unwrap();
    // $a (a global's value and a declaration), $b (a table segment),
    // $c (a declaration) and `run` (an export); $d never escapes, and
    // $y is counted with its import.
    let state = InstanceState::of(&wasm);
    assert_eq!(
        state,
        InstanceState {
            globals: 2,
            imports: 2,
            referenced: 4,
            data_segments: 2
        }
    );
    assert_eq!(
        state.bytes(),
        2 * 16
            + 2 * InstanceState::IMPORT
            + 4 * InstanceState::FUNCTION_REF
            + 2 * InstanceState::DATA_SEGMENT
    );
}

#[test]
fn the_engines_refusal_for_instance_state_is_a_limit_not_invalid() {
    let wasm =
        wat::parse_str(r#"(module (global i64 (i64.const 0)) (func (export "run")))"#).unwrap();
    // Wasmtime 48's words (`validate_core_instance_size`).
    let message = "module instance size does not fit in pooling allocator requirements: \
        instance allocation for this module requires 1048608 bytes which exceeds the \
        configured maximum of 1048576 bytes; breakdown of allocation requirement:\n\n \
        * 99.98% - 1048368 bytes - defined globals\n";
    let declared = 16 + InstanceState::FUNCTION_REF;
    let error = not_compiled(message.to_string(), &wasm);
    assert_eq!(
        error,
        ModuleError::InstanceTooLarge {
            needed: 1_048_608,
            what: format!(
                "1 function exported or referenced at {} bytes each, 1 global at 16 bytes each, and {} bytes of the engine's own",
                InstanceState::FUNCTION_REF,
                1_048_608 - declared
            ),
        }
    );
    assert!(
        error.to_string().starts_with(
            "needs 1048608 bytes of instance state, more than a process's 1048576 (1 MiB): "
        ),
        "{error}"
    );
    assert!(matches!(
        not_compiled("failed to parse WebAssembly module".to_string(), &wasm),
        ModuleError::Invalid(_)
    ));
}
