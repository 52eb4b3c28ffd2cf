//! Wakes a worker keeps to itself during a turn (BENCHMARKS.md log step
//! 55): the process woken mid-turn must still run before that turn ends,
//! from the waker's next checkpoint, on another worker.

use estalogic_kernel::ExitStatus;
use estalogic_tests::load_wat;

/// Waits for one message of any type, answers its source (type 2), exits.
const ECHOER: &str = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (if (i64.lt_s (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 64))
                  (i64.const 0))
      (then (return (i32.const 2))))
    (drop (call $send (i64.load (i32.const 8)) (i32.const 2) (i32.const 0) (i32.const 64) (i32.const 0)))
    (i32.const 0)))"#;

/// Gives the echoer time to wait, sends it a message, then computes for many checkpoints without
/// a syscall, then looks at its mailbox once without waiting: exits 0 if
/// the answer is there, 1 if not.
const SPINNER: &str = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 512) "echoer")
  (func (export "run") (result i32) (local $i i32)
    ;; 20 ms for the echoer to start and wait (a message of type 99 never comes).
    (drop (call $receive (i32.const 99) (i64.const 20) (i32.const 0) (i32.const 64) (i32.const 64)))
    (if (i64.lt_s (call $send (call $lookup (i32.const 512) (i32.const 6))
                              (i32.const 1) (i32.const 0) (i32.const 64) (i32.const 0))
                  (i64.const 0))
      (then (return (i32.const 3))))
    (loop
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 15000000))))
    (if (result i32) (i64.ge_s (call $receive (i32.const 2) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 64))
                  (i64.const 0))
      (then (i32.const 0))
      (else (i32.const 1)))))"#;

/// The spinner runs at REALTIME (`critical`: nothing at its level to rotate
/// with, and its 120,000,000 fuel units, 12 slices, are within its 16 in a row), so
/// only the checkpoint's collection of what its turn woke lets the echoer
/// run on the other worker meanwhile.
#[test]
fn a_process_woken_mid_turn_runs_on_the_other_worker_before_the_turn_ends() {
    for round in 0..3 {
        let mut kernel = estalogic_tests::kernel(false, 2);
        load_wat(&mut kernel, "echoer", ECHOER, "normal");
        load_wat(&mut kernel, "spinner", SPINNER, "critical");
        kernel.spawn("echoer").unwrap();
        kernel.spawn("spinner").unwrap();
        let report = kernel.run();
        for module in ["echoer", "spinner"] {
            let process = report.process(module).unwrap();
            assert_eq!(
                process.status,
                ExitStatus::Exited(0),
                "round {round}: {module} {process:?}"
            );
        }
        let spinner = report.process("spinner").unwrap();
        assert_eq!(spinner.preemptions + spinner.requeues, 0, "{spinner:?}");
    }
}
