//! Warm instances: processes started from instances made ahead of their
//! spawns are indistinguishable from processes that instantiated
//! themselves.

use estalogic_kernel::loader::warm::WARM_AFTER;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::load_wat;
use std::time::{Duration, Instant};

/// Exits with `code(its own pid)` if its memory and its global are as the
/// module declares them (zero), with 1 otherwise; then dirties both, so a
/// reused instance would be caught by the next process.
const FRESH: &str = r#"(module
  (import "estalogic" "self_pid" (func $self (result i64)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "run") (result i32) (local $p i64)
    (if (i32.or (i32.load (i32.const 0)) (global.get $g))
      (then (return (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 1))
    (global.set $g (i32.const 1))
    (local.set $p (call $self))
    (i32.wrap_i64 (i64.xor (local.get $p) (i64.shr_u (local.get $p) (i64.const 20))))))"#;

/// What [`FRESH`] exits with when it runs as `pid`.
fn code(pid: estalogic_abi::Pid) -> i32 {
    let raw = pid.to_u64();
    (raw ^ (raw >> 20)) as u32 as i32
}

/// Has a start function, which sets memory[0] to 7; exits 0 if it sees 7.
const STARTED: &str = r#"(module
  (memory (export "memory") 1)
  (func $start (i32.store (i32.const 0) (i32.const 7)))
  (start $start)
  (func (export "run") (result i32)
    (i32.ne (i32.load (i32.const 0)) (i32.const 7))))"#;

/// Spawns `name` and runs the kernel until it exited; returns its pid and
/// how it ended.
fn cycle(kernel: &mut Kernel, name: &str) -> (estalogic_abi::Pid, ExitStatus) {
    let pid = kernel.spawn(name).expect("spawn");
    let report = kernel.run();
    assert_eq!(report.processes.len(), 1, "one process per cycle");
    assert_eq!(report.processes[0].pid, pid);
    (pid, report.processes[0].status.clone())
}

fn started_from_warm_instances_start_fresh_and_as_themselves(workers: usize) {
    let mut kernel = Kernel::builder().workers(workers).build().unwrap();
    load_wat(&mut kernel, "fresh", FRESH, "normal");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cycles = 0;
    // Until enough processes started from ready instances: the preparer
    // runs only on an idle core, so a busy host may take a while.
    while kernel.warm_stats().taken < 40 {
        let (pid, status) = cycle(&mut kernel, "fresh");
        assert_eq!(
            status,
            ExitStatus::Exited(code(pid)),
            "cycle {cycle}: a process must see fresh state and its own pid",
            cycle = cycles
        );
        cycles += 1;
        if cycles >= WARM_AFTER && kernel.warm_stats().made == 0 {
            // Give the preparer an idle core.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            Instant::now() < deadline,
            "no process started from a ready instance in 60 s ({:?} after {cycles} cycles)",
            kernel.warm_stats()
        );
    }
    let stats = kernel.warm_stats();
    assert!(stats.made >= stats.taken, "{stats:?}");
}

#[test]
fn processes_started_from_warm_instances_start_fresh_and_as_themselves() {
    started_from_warm_instances_start_fresh_and_as_themselves(1);
    started_from_warm_instances_start_fresh_and_as_themselves(2);
}

#[test]
fn a_module_with_a_start_function_is_never_made_ahead() {
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_wat(&mut kernel, "started", STARTED, "normal");
    for _ in 0..3 * WARM_AFTER {
        let (_, status) = cycle(&mut kernel, "started");
        assert_eq!(status, ExitStatus::Exited(0));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(kernel.warm_stats().made, 0);
}

#[test]
fn warm_instances_are_off_in_deterministic_mode_and_when_asked() {
    for builder in [
        Kernel::builder().deterministic(true),
        Kernel::builder().workers(1).warm_instances(false),
    ] {
        let mut kernel = builder.build().unwrap();
        load_wat(&mut kernel, "fresh", FRESH, "normal");
        for _ in 0..3 * WARM_AFTER {
            let (pid, status) = cycle(&mut kernel, "fresh");
            assert_eq!(status, ExitStatus::Exited(code(pid)));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(kernel.warm_stats(), Default::default());
    }
}
