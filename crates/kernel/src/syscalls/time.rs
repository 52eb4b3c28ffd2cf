//! Time syscalls: `clock_now` reads the kernel clock (virtual in
//! deterministic mode).

use super::{ProcessContext, charge, checkpoint_soon, to_return};
use estalogic_abi::{IMPORT_MODULE, Syscall};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls. `clock_now` stays synchronous (a
/// waitable call costs four times as much): a check the kernel has not
/// cached is charged (see `syscalls::charge`), and when that makes a
/// task's checkpoint due it passes one soon after the call
/// (`syscalls::checkpoint_soon`); a handler pays from its call's budget.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::ClockNow.import_name(),
        |mut caller: Caller<'_, ProcessContext>| -> i64 {
            let context = caller.data();
            let admitted = context.admit_searching(Syscall::ClockNow, None);
            // Only a check that searched records host work: a cached one
            // leaves the charge's bookkeeping alone.
            let searched = !matches!(admitted, Ok(false));
            let result = admitted.map(|_| context.kernel.clock.now_nanos());
            if searched && charge(&mut caller, 0) {
                checkpoint_soon(&mut caller);
            }
            to_return(result)
        },
    )?;
    Ok(())
}
