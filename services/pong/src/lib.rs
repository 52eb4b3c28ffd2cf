//! The `pong` service: answers every PING with a PONG carrying the same
//! payload; an empty PING means "stop", and `pong` exits.
#![no_std]

use estalogic_sdk::{self as sdk, MessageType};

/// Entry point: serve PINGs until an empty one arrives.
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let mut buffer = [0u8; 64];
    loop {
        let Ok(ping) = sdk::receive_with(Some(MessageType::PING), sdk::Wait::Forever, &mut buffer)
        else {
            return 3;
        };
        if ping.payload.is_empty() {
            return 0;
        }
        if sdk::send(ping.header.source, MessageType::PONG, ping.payload).is_err() {
            return 2;
        }
    }
}
