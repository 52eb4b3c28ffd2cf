//! The `echo` service, a handler process (`sdk::handler!`): the kernel
//! calls its entry point `handle` once per message, and it answers every
//! request with a reply of the same type carrying the same payload. It
//! ignores the kernel's own messages (`STARTED`, notices), and ends with
//! exit code 2 if a reply cannot be sent.
#![no_std]

use estalogic_sdk::{self as sdk, Message, Next, Pid};

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
        Ok(_) => Next::Wait,
        Err(_) => Next::Exit(2),
    }
}

sdk::handler!(handle, on_message, 4096);
