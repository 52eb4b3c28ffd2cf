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

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
pub use guest::*;
