//! The `pong` service: answers every PING with a PONG (its reply) carrying
//! the same payload, of any size a message may have (1 MiB); an empty PING
//! means "stop", and `pong` exits. Everything else it receives — another
//! type of message, the kernel's notice that a PONG was not delivered — is
//! taken and skipped, and so is a reply to a client that has exited or
//! that refuses it: no client can stop it but with an empty PING, or fill
//! its mailbox with messages it never takes. Exit codes: 0 stopped, 3 it
//! can no longer receive (its `messaging:receive` capability is gone).
#![no_std]

use core::cell::UnsafeCell;
use estalogic_sdk::{self as sdk, ErrorCode, Message, MessageType};

/// The largest payload a message may carry (`docs/ABI.md`).
const MAX_PAYLOAD: usize = 1 << 20;

/// PINGs up to this size are answered together with the wait for the next
/// message (`sdk::reply_and_receive`: one syscall per round); a larger one
/// is answered straight from the receive buffer, then the wait follows.
const SMALL: usize = 64;

/// The receive buffer: room for the largest payload, so that no message
/// can stay stuck at the head of the mailbox for want of room. Only the
/// pages a message touches are ever resident.
struct Buffer(UnsafeCell<[u8; MAX_PAYLOAD]>);

// SAFETY: a wasm32 guest runs on one thread, and only `run` (called once,
// as the entry point) takes a reference to the buffer.
unsafe impl Sync for Buffer {}

static BUFFER: Buffer = Buffer(UnsafeCell::new([0; MAX_PAYLOAD]));

/// Entry point: serve PINGs until an empty one arrives.
#[unsafe(no_mangle)]
pub extern "C" fn run() -> i32 {
    // SAFETY: see the `Sync` impl: this is the only reference to the buffer.
    let buffer: &mut [u8] = unsafe { &mut *BUFFER.0.get() };
    let mut next = next_ping(buffer);
    loop {
        let Some(ping) = next else {
            return 3;
        };
        let len = ping.payload.len();
        if len == 0 {
            return 0;
        }
        let header = ping.header;
        let answered = if len <= SMALL {
            let mut payload = [0u8; SMALL];
            payload[..len].copy_from_slice(ping.payload);
            sdk::reply_and_receive(
                &header,
                MessageType::PONG,
                &payload[..len],
                None,
                sdk::Wait::Forever,
                buffer,
            )
        } else {
            // A client that left or refuses the answer is not pong's
            // problem: the next PING is served either way.
            let _ = sdk::reply(&header, MessageType::PONG, ping.payload);
            Err(ErrorCode::NOT_FOUND)
        };
        next = match answered {
            Ok(message) if message.header.message_type == MessageType::PING => Some(message),
            // Not a PING, the reply failed (the client left), or the wait
            // took a notice: look for the next PING.
            _ => next_ping(buffer),
        };
    }
}

/// Waits for the next PING, skipping everything else; `None` if this
/// process can no longer receive.
fn next_ping(buffer: &mut [u8]) -> Option<Message<'_>> {
    let (header, len) = loop {
        match sdk::receive_with(None, sdk::Wait::Forever, buffer) {
            Ok(message) if message.header.message_type == MessageType::PING => {
                break (message.header, message.payload.len());
            }
            // Another type of message, or the kernel's notice that one of
            // pong's answers was not delivered: taken, and skipped.
            Ok(_) => {}
            // The receive itself failing (the buffer holds any payload).
            Err(_) => return None,
        }
    };
    Some(Message {
        header,
        payload: &buffer[..len],
    })
}
