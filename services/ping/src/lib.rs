//! The `ping` service: sends numbered PINGs to `pong` and checks that every
//! PONG comes back, in order, with the same number.
//!
//! Protocol: each PING carries the round number as a little-endian `u64`
//! and is a call (`sdk::call`: send and wait for the reply in one syscall);
//! the PONG is its reply. The final PING has an empty payload and tells
//! `pong` to stop. Exit codes: 0 success, 1 `pong` not found, 2 a send
//! failed, 3 a call failed, 4 a PONG arrived out of order or of the wrong
//! type.
#![no_std]

use estalogic_sdk::{self as sdk, MessageType};

/// Round trips the `main` entry point makes.
pub const ROUNDS: u64 = 10_000;

/// Entry point `run`: [`ROUNDS`] round trips with `pong`.
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    round_trips(ROUNDS)
}

/// Entry point for benchmarks: 100,000 round trips.
#[unsafe(no_mangle)]
pub extern "C" fn bench() -> i32 {
    round_trips(100_000)
}

fn round_trips(rounds: u64) -> i32 {
    let Ok(pong) = sdk::lookup("pong") else {
        sdk::log("ping: no process named pong");
        return 1;
    };
    let mut buffer = [0u8; 8];
    for round in 0..rounds {
        let Ok(reply) = sdk::call(
            pong,
            MessageType::PING,
            &round.to_le_bytes(),
            sdk::Wait::Forever,
            &mut buffer,
        ) else {
            return 3;
        };
        if reply.header.message_type != MessageType::PONG || reply.payload != round.to_le_bytes() {
            sdk::log!("ping: round {} got a PONG for {:?}", round, reply.payload);
            return 4;
        }
    }
    if sdk::send(pong, MessageType::PING, &[]).is_err() {
        return 2;
    }
    sdk::log!("ping: {} round trips, all in order", rounds);
    0
}
