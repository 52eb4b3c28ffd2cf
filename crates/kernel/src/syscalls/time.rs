//! Time syscalls: `clock_now` reads the kernel clock (virtual in
//! deterministic mode).

use super::{ProcessContext, pay_host_work, pay_host_work_now, to_return};
use estalogic_abi::{IMPORT_MODULE, Syscall};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls for task processes. `clock_now` is
/// waitable, like every task syscall that can do host work: a check the
/// kernel has not cached (a denial, a limited capability) is charged (see
/// `syscalls::charge`), and a task passes a checkpoint inside the call for
/// every slice of such work. (It was synchronous, a quarter of the cost,
/// with a shortened fuel interval standing in for the checkpoint: a loop
/// of refused reads on a full table went millions of units past one.)
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::ClockNow.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (): ()| {
            Box::new(async move {
                let result = clock_now(&caller);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    Ok(())
}

/// Registers this family's syscalls for handler processes: synchronous, a
/// check's host work paid from the call's fuel budget.
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::ClockNow.import_name(),
        |mut caller: Caller<'_, ProcessContext>| -> wasmtime::Result<i64> {
            let result = clock_now(&caller);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    Ok(())
}

/// The kernel clock, if the caller may read it.
fn clock_now(caller: &Caller<'_, ProcessContext>) -> Result<u64, estalogic_abi::ErrorCode> {
    let context = caller.data();
    context
        .admit(Syscall::ClockNow, None)
        .map(|()| context.kernel.clock.now_nanos())
}
