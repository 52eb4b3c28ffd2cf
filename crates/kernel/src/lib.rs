//! ESTA Logic: a user-space microkernel that runs sandboxed WebAssembly
//! services as processes, with its own priority-preemptive scheduler and
//! message passing through bounded mailboxes.
//!
//! Embedding in four steps:
//!
//! ```no_run
//! use estalogic_kernel::Kernel;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut kernel = Kernel::builder().build()?;
//! kernel.load_app_dir(std::path::Path::new("examples/ping-pong"))?;
//! kernel.spawn_all()?;
//! let report = kernel.run();
//! for process in &report.processes {
//!     println!("{} {}", process.module, process.status);
//! }
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

pub mod core;
pub mod drivers;
pub mod loader;
pub mod syscalls;

pub use crate::core::init::{
    ExitSubscription, Kernel, KernelBuilder, KernelError, MAX_WORKERS, RunReport, ShutdownHandle,
};
pub use crate::core::kernel_loop::{
    ExitStatus, LoopStats, ProcessReport, RestartRecord, TraceRecord,
};
pub use crate::core::scheduler::SlicePolicy;
pub use crate::drivers::notifications::{Notification, NotificationQueue};
pub use crate::loader::manifest::{Manifest, ManifestError};
pub use crate::loader::preload_manager::{CacheStats, ModuleCache};
pub use crate::loader::wasm_loader::ModuleError;
pub use estalogic_abi as abi;
