//! Guest SDK for ESTA Logic services: safe, short wrappers over the kernel ABI.
//!
//! A service is a `cdylib` compiled for `wasm32-unknown-unknown` that exports
//! its entry point (named in its `manifest.json`) and talks to the kernel
//! only through the functions here:
//!
//! ```ignore
//! #![no_std]
//! use estalogic_sdk::{self as sdk, MessageType};
//!
//! #[unsafe(no_mangle)]
//! pub extern "C" fn run() {
//!     let mut buf = [0u8; 64];
//!     let msg = sdk::receive(&mut buf).unwrap();
//!     sdk::send(msg.header.source, MessageType::PONG, msg.payload).unwrap();
//! }
//! ```
//!
//! Every fallible call returns `Result<_, ErrorCode>`; a process ends by
//! returning from its entry point, by `exit`, or by a trap.
//!
//! On targets other than wasm32 only the pure helpers ([`Message`], the ABI
//! re-exports) are available: the syscalls exist only inside the kernel.
#![no_std]

pub use estalogic_abi as abi;
pub use estalogic_abi::{ErrorCode, Flags, Header, MessagePriority, MessageType, Pid};

/// A received message: its header and a view of the payload in the caller's
/// buffer.
#[derive(Debug)]
pub struct Message<'a> {
    /// The decoded header.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// How long `receive_with` may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait until a matching message arrives.
    Forever,
    /// Return `TIMEOUT` if nothing matches within this many milliseconds.
    Millis(u32),
    /// Do not wait: return `TIMEOUT` at once if nothing matches.
    NoWait,
}

impl Wait {
    /// The `timeout_ms` argument of the `receive` syscall.
    pub const fn to_abi(self) -> i64 {
        match self {
            Wait::Forever => abi::syscalls::TIMEOUT_INFINITE,
            Wait::Millis(ms) => ms as i64,
            Wait::NoWait => 0,
        }
    }
}

/// What a handler does after a message (see [`handler!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next message.
    Wait,
    /// End the process with this exit code.
    Exit(i32),
}

/// A handler process's inbox: where the kernel writes each message (the
/// header, then up to `N - HEADER_LEN` bytes of payload) before it calls
/// the handler. Declared by [`handler!`]; not for direct use.
pub struct Inbox<const N: usize>(core::cell::UnsafeCell<[u8; N]>);

// SAFETY: a wasm32 guest runs on one thread, and the kernel writes the
// inbox only between two calls of the handler, never while Rust code holds
// a reference into it.
unsafe impl<const N: usize> Sync for Inbox<N> {}

impl<const N: usize> Inbox<N> {
    /// An empty inbox. `N` must hold the header and the kernel's 16-byte
    /// notices.
    pub const fn new() -> Self {
        assert!(
            N >= abi::HEADER_LEN + 16,
            "an inbox holds at least 16 bytes of payload"
        );
        Inbox(core::cell::UnsafeCell::new([0; N]))
    }

    /// Bytes of payload it holds.
    pub const fn capacity(&self) -> usize {
        N - abi::HEADER_LEN
    }

    /// The value of the module's `estalogic_inbox` export:
    /// `capacity << 32 | address` (addresses are 32-bit on wasm32).
    pub fn abi(&self) -> i64 {
        ((self.capacity() as i64) << 32) | i64::from(self.0.get() as usize as u32)
    }

    /// The message the kernel just wrote, whose payload is `len` bytes.
    pub fn message(&self, len: i32) -> Result<Message<'_>, ErrorCode> {
        // SAFETY: see the `Sync` impl: nothing writes the inbox while the
        // handler runs, so a shared view of it is sound for the call.
        let bytes: &[u8; N] = unsafe { &*self.0.get() };
        let len = usize::try_from(len).map_err(|_| ErrorCode::INTERNAL)?;
        let (header, payload_len) =
            Header::decode(&bytes[..abi::HEADER_LEN]).map_err(|_| ErrorCode::INTERNAL)?;
        if payload_len as usize != len || len > self.capacity() {
            return Err(ErrorCode::INTERNAL);
        }
        Ok(Message {
            header,
            payload: &bytes[abi::HEADER_LEN..abi::HEADER_LEN + len],
        })
    }
}

impl<const N: usize> Default for Inbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes this module a **handler process** (`docs/ABI.md`, "Handler
/// processes"): exports its inbox and the entry point `$export`, which
/// calls `$handler(message) -> Next` once per message — the kernel's
/// `STARTED` first. `$capacity` bytes of payload (at least 16; messages
/// larger are refused to their senders). The manifest names `$export` as
/// its entry point and asks for `messaging:receive`.
///
/// ```ignore
/// fn on_message(message: sdk::Message<'_>) -> sdk::Next {
///     if message.header.message_type == MessageType::PING {
///         let _ = sdk::reply(&message.header, MessageType::PONG, message.payload);
///     }
///     sdk::Next::Wait
/// }
/// sdk::handler!(handle, on_message, 4096);
/// ```
#[macro_export]
macro_rules! handler {
    ($export:ident, $handler:path, $capacity:expr) => {
        static ESTALOGIC_INBOX: $crate::Inbox<{ $crate::abi::HEADER_LEN + $capacity }> =
            $crate::Inbox::new();

        /// Where the kernel writes this handler's messages.
        #[unsafe(no_mangle)]
        pub extern "C" fn estalogic_inbox() -> i64 {
            ESTALOGIC_INBOX.abi()
        }

        /// The entry point: one call per message.
        #[unsafe(no_mangle)]
        pub extern "C" fn $export(len: i32) -> i32 {
            let next = match ESTALOGIC_INBOX.message(len) {
                Ok(message) => $handler(message),
                Err(code) => $crate::Next::Exit(-(code.0 as i32)),
            };
            match next {
                $crate::Next::Wait => 0,
                $crate::Next::Exit(0) => $crate::exit(0),
                $crate::Next::Exit(code) => code,
            }
        }
    };
}

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
pub use guest::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_reads_back_the_message_the_kernel_wrote() {
        let inbox: Inbox<{ abi::HEADER_LEN + 32 }> = Inbox::new();
        assert_eq!(inbox.capacity(), 32);
        assert_eq!(inbox.abi() >> 32, 32);
        let header = Header {
            priority: MessagePriority::default(),
            flags: Flags::NONE,
            message_type: MessageType::PING,
            source: Pid::from_u64(7),
            target: Pid::from_u64(9),
            sequence: 3,
            timestamp: 11,
            correlation: 0,
        };
        // SAFETY: nothing else holds a reference into the inbox here.
        let bytes = unsafe { &mut *inbox.0.get() };
        bytes[..abi::HEADER_LEN].copy_from_slice(&header.encode(5).unwrap());
        bytes[abi::HEADER_LEN..abi::HEADER_LEN + 5].copy_from_slice(b"hello");
        let message = inbox.message(5).unwrap();
        assert_eq!(message.header, header);
        assert_eq!(message.payload, b"hello");
        // A length that disagrees with the header, or that does not fit.
        assert_eq!(inbox.message(4).unwrap_err(), ErrorCode::INTERNAL);
        assert_eq!(inbox.message(-1).unwrap_err(), ErrorCode::INTERNAL);
    }
}
