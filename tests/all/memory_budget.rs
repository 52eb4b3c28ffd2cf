//! The kernel-wide memory budget (`KernelBuilder::memory_budget`): guest
//! memories together stay within it, a growth past it fails as one past a
//! memory class does, a start that does not fit traps with OUT_OF_MEMORY,
//! and an ended process gives its share back.

use estalogic_abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::{
    PAGE, RUNS, budgeted, describe, held, load_handler, load_wat, report_of, trapped,
};

/// Yields once (so that every process spawned with it has its memory
/// before any grows: a process's instance is made when it first runs),
/// grows its memory a page at a time until refused, waits `wait_ms` (so
/// that processes hold their memory at the same time), and exits with its
/// size in pages.
fn grower(wait_ms: u64) -> String {
    format!(
        r#"(module
          (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
          (import "estalogic" "yield_now" (func $yield (result i64)))
          (memory (export "memory") 1)
          (func (export "run") (result i32)
            (drop (call $yield))
            (loop $more (br_if $more (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0))))
            (drop (call $receive (i32.const 0) (i64.const {wait_ms}) (i32.const 0) (i32.const 64) (i32.const 64)))
            (memory.size)))"#
    )
}

#[test]
fn processes_grow_together_up_to_the_budget_and_give_it_back() {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        let mut kernel = budgeted(deterministic, workers, 16 * PAGE);
        load_wat(&mut kernel, "a", &grower(200), "normal");
        load_wat(&mut kernel, "b", &grower(200), "normal");
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        // Each has what the other left; with two workers one may take it
        // all before the other's instance is made, which then does not
        // start (OUT_OF_MEMORY). Never more than the budget together.
        let mut total = 0;
        for module in ["a", "b"] {
            match &report_of(&report, module).status {
                ExitStatus::Exited(pages) => total += pages,
                ExitStatus::Trapped { code, .. } if *code == ErrorCode::OUT_OF_MEMORY => {
                    assert!(workers > 1, "{what}\n{}", describe(&report));
                }
                other => panic!("{what}: {module} ended {other:?}\n{}", describe(&report)),
            }
        }
        assert_eq!(total, 16, "{what}\n{}", describe(&report));
        let budget = kernel.memory_budget().unwrap();
        assert_eq!(budget.limit(), 16 * PAGE);
        assert_eq!(
            budget.held(),
            0,
            "{what}: the ended processes gave their shares back"
        );

        // A second run on the same kernel gets the whole budget again.
        load_wat(&mut kernel, "c", &grower(0), "normal");
        kernel.spawn("c").unwrap();
        let report = kernel.run();
        assert_eq!(
            report_of(&report, "c").status,
            ExitStatus::Exited(16),
            "{what}"
        );
    }
}

#[test]
fn a_start_whose_memory_does_not_fit_traps_out_of_memory() {
    let mut kernel = budgeted(false, 1, 2 * PAGE);
    load_wat(
        &mut kernel,
        "big",
        r#"(module (memory (export "memory") 3) (func (export "run") (result i32) (i32.const 0)))"#,
        "normal",
    );
    load_wat(
        &mut kernel,
        "small",
        r#"(module (memory (export "memory") 2) (func (export "run") (result i32) (i32.const 0)))"#,
        "normal",
    );
    kernel.spawn("big").unwrap();
    let report = kernel.run();
    assert_eq!(
        trapped(&report_of(&report, "big").status),
        Some(ErrorCode::OUT_OF_MEMORY),
        "{}",
        describe(&report)
    );
    // What fits still runs, and nothing is left held.
    kernel.spawn("small").unwrap();
    let report = kernel.run();
    assert_eq!(report_of(&report, "small").status, ExitStatus::Exited(0));
    assert_eq!(held(&kernel), 0);
}

#[test]
fn a_trap_after_a_refused_growth_is_out_of_memory() {
    let mut kernel = budgeted(true, 1, 4 * PAGE);
    load_wat(
        &mut kernel,
        "greedy",
        r#"(module (memory (export "memory") 1)
          (func (export "run") (result i32)
            (if (i32.lt_s (memory.grow (i32.const 8)) (i32.const 0)) (then unreachable))
            (i32.const 0)))"#,
        "normal",
    );
    kernel.spawn("greedy").unwrap();
    let report = kernel.run();
    assert_eq!(
        trapped(&report_of(&report, "greedy").status),
        Some(ErrorCode::OUT_OF_MEMORY)
    );
}

#[test]
fn a_handler_s_memory_counts_too() {
    // Grows at its first call (STARTED) until refused, then waits for
    // messages that never come, holding its memory.
    let handler = r#"(module
      (memory (export "memory") 1)
      (func (export "estalogic_inbox") (result i64) (i64.const 0x10000000100))
      (func (export "handle") (param i32) (result i32)
        (loop $more (br_if $more (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0))))
        (i32.const 0)))"#;
    // One worker, the task first: it has its page and yields, the handler
    // takes the other nine, and the task can grow no more.
    let mut kernel = budgeted(true, 1, 10 * PAGE);
    load_wat(&mut kernel, "task", &grower(0), "normal");
    load_handler(&mut kernel, "handler", handler);
    kernel.spawn("task").unwrap();
    kernel.spawn("handler").unwrap();
    let report = kernel.run();
    assert_eq!(
        report_of(&report, "task").status,
        ExitStatus::Exited(1),
        "{}",
        describe(&report)
    );
    assert_eq!(
        report_of(&report, "handler").status,
        ExitStatus::Stopped(ErrorCode::DEADLOCKED)
    );
    assert_eq!(held(&kernel), 0);
}

#[test]
fn without_a_budget_there_is_none_to_see() {
    let kernel = Kernel::builder().build().unwrap();
    assert!(kernel.memory_budget().is_none());
}
