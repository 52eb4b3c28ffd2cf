//! Time syscalls: `clock_now` reads the kernel clock (virtual in
//! deterministic mode).

use super::{ProcessContext, to_return};
use estalogic_abi::{IMPORT_MODULE, Syscall};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::ClockNow.import_name(),
        |caller: Caller<'_, ProcessContext>| -> i64 {
            let context = caller.data();
            to_return(
                context
                    .admit(Syscall::ClockNow, None)
                    .map(|()| context.kernel.clock.now_nanos()),
            )
        },
    )?;
    Ok(())
}
