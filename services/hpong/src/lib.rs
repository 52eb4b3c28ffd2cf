//! The `hpong` service: `pong` as a handler process (`sdk::handler!`).
//! The kernel calls its entry point `handle` once per message; it answers
//! every PING with a PONG (its reply) carrying the same payload, and an
//! empty PING ends it with exit code 0. Anything else (the kernel's
//! `STARTED`, notices) is ignored. A reply to a client that has exited is
//! skipped; exit code 2: a reply could not be sent for another reason.
#![no_std]

use estalogic_sdk::{self as sdk, ErrorCode, Message, MessageType, Next};

/// One message: answer a PING.
fn on_message(ping: Message<'_>) -> Next {
    if ping.header.message_type != MessageType::PING {
        return Next::Wait;
    }
    if ping.payload.is_empty() {
        return Next::Exit(0);
    }
    match sdk::reply(&ping.header, MessageType::PONG, ping.payload) {
        // The client left before its answer: serve the others.
        Ok(_) | Err(ErrorCode::NO_SUCH_PROCESS) => Next::Wait,
        Err(_) => Next::Exit(2),
    }
}

sdk::handler!(handle, on_message, 64);
