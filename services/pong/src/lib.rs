//! The `pong` service: answers every PING with a PONG (its reply) carrying
//! the same payload; an empty PING means "stop", and `pong` exits.
//! A reply to a client that has exited is skipped. Exit codes: 0 stopped,
//! 2 a reply or the wait after it failed otherwise, 3 the first receive
//! failed. It takes PINGs of at most 64 bytes: a larger one stays queued
//! and ends it (code 2 or 3).
#![no_std]

use estalogic_sdk::{self as sdk, ErrorCode, MessageType};

/// Entry point: serve PINGs until an empty one arrives. Each PONG is the
/// PING's reply, sent together with the wait for the next PING
/// (`sdk::reply_and_receive`: one syscall per round).
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    let mut buffer = [0u8; 64];
    let Ok(mut ping) = sdk::receive_with(Some(MessageType::PING), sdk::Wait::Forever, &mut buffer)
    else {
        return 3;
    };
    loop {
        if ping.payload.is_empty() {
            return 0;
        }
        let mut payload = [0u8; 64];
        let len = ping.payload.len();
        payload[..len].copy_from_slice(ping.payload);
        let header = ping.header;
        ping = match sdk::reply_and_receive(
            &header,
            MessageType::PONG,
            &payload[..len],
            Some(MessageType::PING),
            sdk::Wait::Forever,
            &mut buffer,
        ) {
            Ok(next) => next,
            // The client left before its answer (nothing was waited for):
            // serve the next one.
            Err(ErrorCode::NO_SUCH_PROCESS) => {
                match sdk::receive_with(Some(MessageType::PING), sdk::Wait::Forever, &mut buffer) {
                    Ok(next) => next,
                    Err(_) => return 2,
                }
            }
            Err(_) => return 2,
        };
    }
}
