//! Wakes a worker keeps to itself during a turn (BENCHMARKS.md log step
//! 55): the process woken mid-turn must still run before that turn ends,
//! from the waker's next checkpoint, on another worker.

use estalogic_kernel::{ExitStatus, Kernel, SlicePolicy};
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

/// Gives the echoer time to wait, sends it a message, then computes in
/// chunks of about a checkpoint's fuel, looking at its mailbox without
/// waiting after each: exits 0 as soon as the answer is there, 1 if it is
/// not after 3,000 chunks (seconds).
const SPINNER: &str = r#"(module
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 512) "echoer")
  (func (export "run") (result i32) (local $i i32) (local $chunk i32)
    ;; 20 ms for the echoer to start and wait (a message of type 99 never comes).
    (drop (call $receive (i32.const 99) (i64.const 20) (i32.const 0) (i32.const 64) (i32.const 64)))
    (if (i64.lt_s (call $send (call $lookup (i32.const 512) (i32.const 6))
                              (i32.const 1) (i32.const 0) (i32.const 64) (i32.const 0))
                  (i64.const 0))
      (then (return (i32.const 3))))
    (loop $chunks
      (local.set $i (i32.const 0))
      (loop
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if 0 (i32.lt_u (local.get $i) (i32.const 20000))))
      (if (i64.ge_s (call $receive (i32.const 2) (i64.const 0) (i32.const 0) (i32.const 64) (i32.const 64))
                    (i64.const 0))
        (then (return (i32.const 0))))
      (local.set $chunk (i32.add (local.get $chunk) (i32.const 1)))
      (br_if $chunks (i32.lt_u (local.get $chunk) (i32.const 150000))))
    (i32.const 1)))"#;

/// The spinner runs at REALTIME (`critical`) with slices of 10 s of
/// nominal fuel (a billion units a millisecond), so nothing ends its turn
/// while it spins: only the checkpoint's collection of what the turn woke
/// lets the echoer run on the other worker meanwhile.
#[test]
fn a_process_woken_mid_turn_runs_on_the_other_worker_before_the_turn_ends() {
    let policy = SlicePolicy {
        fuel_per_ms: 1_000_000_000,
        ..SlicePolicy::default()
    };
    for round in 0..3 {
        let mut kernel = Kernel::builder()
            .workers(2)
            .slice_policy(policy)
            .build()
            .unwrap();
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
