//! The `noop` service: returns at once with exit code 0. The trivial
//! process of the spawn + run + exit benchmark.
#![no_std]

// Links the SDK so the guest gets its panic handler, like any service.
use estalogic_sdk as _;

/// Entry point: exit code 0.
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    0
}
