//! Drivers: the kernel's connections to the outside world. Only the clock
//! exists so far; the file system, HTTP, database and host-bridge drivers
//! join it behind the same capability checks.

pub mod clock;
