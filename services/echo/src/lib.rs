//! The `echo` service, a handler process (`sdk::handler!`): the kernel
//! calls its entry point `handle` once per message, and it answers every
//! request with a reply of the same type carrying the same payload. It
//! ignores the kernel's own messages (`STARTED`, notices). A reply to a
//! client that has exited is skipped; any other reply failure ends it with
//! exit code 2.
#![no_std]

use estalogic_sdk::{self as sdk, ErrorCode, Message, Next, Pid};

/// One message: answer it.
fn on_message(message: Message<'_>) -> Next {
    if message.header.source == Pid::KERNEL {
        return Next::Wait;
    }
    match sdk::reply(
        &message.header,
        message.header.message_type,
        message.payload,
    ) {
        // The client left before its answer: serve the others.
        Ok(_) | Err(ErrorCode::NO_SUCH_PROCESS) => Next::Wait,
        Err(_) => Next::Exit(2),
    }
}

sdk::handler!(handle, on_message, 4096);
