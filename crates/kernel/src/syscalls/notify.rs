//! The notification syscall: `notify` hands the host a kind and a payload
//! (capability `notifications:send`), through the
//! [notifications driver](crate::drivers::notifications).

use super::{ProcessContext, charge, pay_host_work, pay_host_work_now, read_guest, to_return};
use crate::drivers::notifications::MAX_NOTIFICATION_LEN;
use crate::syscalls::process::YieldOnce;
use estalogic_abi::{ErrorCode, IMPORT_MODULE, Syscall};
use wasmtime::{Caller, Linker};

/// Registers `notify` for task processes: the payload's copy is host work,
/// and a task passes a checkpoint for every slice of it.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Notify.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (kind, ptr, len): (i32, i32, i32)| {
            Box::new(async move {
                let result = notify(&mut caller, kind, ptr, len);
                if let Ok((_, true)) = result {
                    YieldOnce::new().await;
                }
                // A refused notification (the check, its audit) is paid too.
                pay_host_work(&mut caller).await;
                Ok(to_return(result.map(|(code, _)| code)))
            })
        },
    )?;
    Ok(())
}

/// Registers `notify` for handler processes: synchronous, the copy paid
/// from the call's fuel budget.
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Notify.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         kind: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let result = notify(&mut caller, kind, ptr, len);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result.map(|(code, _)| code)))
        },
    )?;
    Ok(())
}

/// Posts the caller's notification; returns 0, and whether its host work
/// makes a checkpoint due (see [`charge`]). The capability is checked
/// first, then the length (`PAYLOAD_TOO_LARGE` past a message's 1 MiB,
/// `INVALID_ARGUMENT` below zero), then the pointer, so a refused call
/// copies nothing.
fn notify(
    caller: &mut Caller<'_, ProcessContext>,
    kind: i32,
    ptr: i32,
    len: i32,
) -> Result<(u64, bool), ErrorCode> {
    caller.data().admit(Syscall::Notify, None)?;
    let Ok(size) = usize::try_from(len) else {
        return Err(ErrorCode::INVALID_ARGUMENT);
    };
    if size > MAX_NOTIFICATION_LEN {
        return Err(ErrorCode::PAYLOAD_TOO_LARGE);
    }
    let payload = read_guest(caller, ptr, len)?;
    // The copy is paid whether the queue takes it or not.
    let due = charge(caller, size);
    let context = caller.data();
    let process = &context.process;
    let now = context.kernel.clock.now_nanos();
    context
        .kernel
        .notifications
        .post(process.pid, process.module.clone(), now, kind, payload)?;
    Ok((0, due))
}
