//! The ESTA Logic kernel ABI: everything the kernel and a guest must agree on.
//!
//! This crate is `no_std` (with an optional `alloc` feature) so the same
//! definitions compile into the kernel and into wasm32 guests. It holds:
//!
//! - [`messages`]: the message header wire format, byte by byte, with its
//!   encoder and a decoder that rejects malformed input with typed errors;
//!   the message type registry.
//! - [`syscalls`]: the syscall numbers, their import names and signatures.
//! - [`errors`]: error codes, their categories and the trap codes.
//! - [`types`]: process ids with generations, priority levels, rights.
//!
//! Every item here is a lasting promise to guests: numbers and layouts only
//! ever gain new values, they never change meaning.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod capabilities;
pub mod errors;
pub mod messages;
pub mod syscalls;
pub mod types;

pub use errors::{ErrorCategory, ErrorCode};
pub use messages::{DecodeError, Flags, HEADER_LEN, Header, MAX_PAYLOAD_LEN, MessageType};
pub use syscalls::{IMPORT_MODULE, INBOX_EXPORT, Syscall};
pub use types::{MessagePriority, Pid, Priority, ResourceKind, Rights};
