//! Fuel check sites (`loader::check_sites`) seen from guests: straight-line
//! code without loops, in tasks and handlers, reaches its checkpoints and
//! its handler budget like any other.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel};
use estalogic_tests::wasm_bytes::{leb, section, sleb};
use estalogic_tests::{load_bytes as load, report_of, trapped};

fn det() -> Kernel {
    Kernel::builder().deterministic(true).build().unwrap()
}

/// Fuel units in `$big`: straight-line code, no loop, no call.
const STRAIGHT_UNITS: usize = 1_500_000;

/// A binary module (WAT text of this size is slow to parse): `$big` is
/// `i32.const 0`, [`STRAIGHT_UNITS`] times `i32.eqz` (one fuel unit each)
/// and a `drop` (free); `run` (a task) calls it `task_calls` times and
/// returns 0, `handle` (a handler) calls it `handler_calls` times and
/// returns 7.
fn straight_line(task_calls: usize, handler_calls: usize) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 () -> i32, 1 () -> (), 2 (i32) -> i32, 3 () -> i64.
    section(
        1,
        vec![
            4, 0x60, 0, 1, 0x7f, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 0, 1, 0x7e,
        ],
        &mut m,
    );
    // Functions: big, run, handle, inbox.
    section(3, vec![4, 1, 0, 2, 3], &mut m);
    section(5, vec![1, 0, 1], &mut m);
    let mut exports = vec![4];
    for (name, kind, index) in [
        ("memory", 2u8, 0u8),
        ("run", 0, 1),
        ("handle", 0, 2),
        ("estalogic_inbox", 0, 3),
    ] {
        exports.push(name.len() as u8);
        exports.extend(name.as_bytes());
        exports.extend([kind, index]);
    }
    section(7, exports, &mut m);
    // One byte a unit (`i32.eqz` on one value), to stay within the compile
    // budget's largest body.
    let mut big = vec![0u8, 0x41, 0x00];
    big.extend(std::iter::repeat_n(0x45u8, STRAIGHT_UNITS));
    big.push(0x1a);
    big.push(0x0b);
    let calls = |n: usize, result: u8| {
        let mut body = vec![0u8];
        for _ in 0..n {
            body.extend([0x10, 0x00]);
        }
        body.extend([0x41, result, 0x0b]);
        body
    };
    let mut inbox = vec![0u8, 0x42];
    sleb(0x0000_0040_0000_0400, &mut inbox);
    inbox.push(0x0b);
    let mut code = vec![4];
    for body in [big, calls(task_calls, 0), calls(handler_calls, 7), inbox] {
        leb(body.len() as u64, &mut code);
        code.extend(body);
    }
    section(10, code, &mut m);
    m
}

/// BRIEF 3.2: "Guests reach a yield point at least every 1,000,000
/// instructions"; ARCHITECTURE invariant 7: "A guest reaches a checkpoint
/// at least every 1,000,000 fuel units". Wasmtime checks fuel only at
/// function entries and loop headers, so one call of a loop-free function
/// ran 1.5 M fuel units without a check. Failed before the fix: 6,000,010
/// fuel units passed 3 checkpoints (at least 5 were needed even at 1 M
/// apart); the check sites the loader now adds keep them at most 200,000
/// apart.
#[test]
fn straight_line_code_reaches_a_checkpoint_every_million_fuel_units() {
    let mut k = det();
    load(&mut k, "straight", "run", &straight_line(4, 0));
    k.spawn("straight").unwrap();
    let r = k.run();
    let p = report_of(&r, "straight");
    assert_eq!(p.status, ExitStatus::Exited(0), "setup: {p:?}");
    assert!(p.fuel_used >= 4 * STRAIGHT_UNITS as u64, "setup: {p:?}");
    // A checkpoint at the first check site after each slice (100,000
    // units) ends: sites at most 100,000 units apart make every interval
    // at most 200,000 units.
    let least = p.fuel_used / 200_000 - 1;
    assert!(
        r.stats.checkpoints >= least,
        "{} fuel units with {} checkpoints: some interval between checkpoints was over \
         200,000 units (at least {least} checkpoints needed); the virtual clock charged \
         the process {} ns of CPU for them",
        p.fuel_used,
        r.stats.checkpoints,
        p.cpu_ns
    );
}

/// docs/ABI.md, "Handler processes" 5: "one call may use 64 slices of
/// fuel (6,400,000 units by default); a call that needs more traps with
/// `TIMEOUT` (3001)"; ARCHITECTURE invariant 7: "one call is bounded by 64
/// slices of fuel". A call of five 1.5 M-unit straight-line calls (7.5 M
/// units, no syscall) was checked for fuel only at each callee's entry.
/// Failed before the fix: the call returned normally (`Exited(7)`) 1.1 M
/// units past its budget, its report counting 6,400,002.
#[test]
fn a_handler_call_past_its_fuel_budget_traps_with_timeout_even_without_loops() {
    let mut k = det();
    load(&mut k, "straight", "handle", &straight_line(0, 5));
    k.spawn("straight").unwrap();
    let r = k.run();
    let p = report_of(&r, "straight");
    assert_eq!(
        trapped(&p.status),
        Some(ErrorCode::TIMEOUT),
        "a 7.5 M-unit call against a 6.4 M budget: {:?}, its report counting {} fuel units",
        p.status,
        p.fuel_used
    );
    assert!(p.fuel_used <= 6_400_000 + 4_095 + 256 + (1 << 20), "{p:?}");
}
