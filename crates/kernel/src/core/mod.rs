//! The kernel core: scheduler, message router, processes, the kernel loop
//! and boot. Plain data structures where possible; no I/O.

pub mod capabilities_engine;
pub mod init;
pub mod kernel_loop;
pub mod kernel_shared;
pub mod lifecycle;
pub mod message_router;
pub mod module_registry;
pub mod process;
pub mod routing;
pub mod scheduler;
pub mod supervision;
