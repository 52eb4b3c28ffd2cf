//! The kernel core: scheduler, message router, processes, the kernel loop
//! and boot. Plain data structures where possible; no I/O.

pub mod init;
pub mod kernel_loop;
pub mod message_router;
pub mod process;
pub mod scheduler;
