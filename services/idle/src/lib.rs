//! The `idle` service: waits in `receive` forever, taking and ignoring
//! whatever arrives. The idle process of the memory-per-process benchmark
//! (`estalogic-bench`): a process that exists, holds its memory and mailbox,
//! and costs no CPU.
#![no_std]

use estalogic_sdk as sdk;

/// Entry point: receive forever. Returns (exit code 1) only if a receive
/// fails — a message too large for the buffer stays queued, so retrying
/// would spin.
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let mut buffer = [0u8; 64];
    loop {
        if sdk::receive(&mut buffer).is_err() {
            return 1;
        }
    }
}
