//! Drivers: the kernel's connections to the outside world. The clock and
//! the host's notifications exist so far; the file system, HTTP, database
//! and host-bridge drivers join them behind the same capability checks.

pub mod clock;
pub mod notifications;
