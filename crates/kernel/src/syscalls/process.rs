//! Process syscalls: `exit`, `yield_now`, `self_pid`, `lookup`, `log`.

use super::{
    ProcessContext, ProcessExit, charge, pay_host_work, pay_host_work_now, read_guest, to_return,
};
use estalogic_abi::{ErrorCode, IMPORT_MODULE, Syscall};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Yield.import_name(),
        |caller: Caller<'_, ProcessContext>, (): ()| {
            let task = caller.data().task.clone();
            Box::new(async move {
                task.yield_requested.store(true, Ordering::Relaxed);
                YieldOnce { yielded: false }.await;
                Ok(0i64)
            })
        },
    )?;
    // A task's lookup can make a checkpoint due: an uncached check
    // searches its capability table (see `ProcessContext::admit`).
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Lookup.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (ptr, len): (i32, i32)| {
            Box::new(async move {
                let result = lookup(&mut caller, ptr, len);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    // A task's log line can make a checkpoint due (see `charge`).
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Log.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (level, ptr, len): (i32, i32, i32)| {
            Box::new(async move {
                let result = log(&mut caller, level, ptr, len);
                if let Ok((_, true)) = result {
                    YieldOnce::new().await;
                }
                // A refused line (the check, its audit) is paid too.
                pay_host_work(&mut caller).await;
                Ok(to_return(result.map(|(code, _)| code)))
            })
        },
    )?;
    add_never_waiting(linker)
}

/// Registers this family's syscalls for handler processes: `yield_now`
/// returns at once (a handler gives the CPU up between messages).
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Yield.import_name(),
        |_caller: Caller<'_, ProcessContext>| -> i64 { 0 },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Log.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let result = log(&mut caller, level, ptr, len);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result.map(|(code, _)| code)))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Lookup.import_name(),
        |mut caller: Caller<'_, ProcessContext>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
            let result = lookup(&mut caller, ptr, len);
            // Takes the search's host work off the call's fuel.
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    add_never_waiting(linker)
}

/// The syscalls of this family that never wait, the same for every process.
fn add_never_waiting(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Exit.import_name(),
        |_caller: Caller<'_, ProcessContext>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcessExit(code)))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::SelfPid.import_name(),
        |caller: Caller<'_, ProcessContext>| -> i64 { caller.data().process.pid.to_u64() as i64 },
    )?;
    Ok(())
}

fn lookup(caller: &mut Caller<'_, ProcessContext>, ptr: i32, len: i32) -> Result<u64, ErrorCode> {
    if !(0..=256).contains(&len) {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    let bytes = read_guest(caller, ptr, len)?;
    // The name's copy is host work, paid (one unit a byte) by the charge
    // each wrapper makes after the call, found or not.
    caller.data().add_host_work(bytes.len() as u64);
    let name = std::str::from_utf8(&bytes).map_err(|_| ErrorCode::INVALID_UTF8)?;
    caller.data().admit(Syscall::Lookup, Some(name))?;
    let table = caller
        .data()
        .kernel
        .table
        .read()
        .unwrap_or_else(|p| p.into_inner());
    table
        .lookup(name)
        .map(|pid| pid.to_u64())
        .ok_or(ErrorCode::NOT_FOUND)
}

/// A guest's log text as one line of the kernel log: control characters
/// (a newline, a carriage return, an escape sequence) are written escaped,
/// `\n` or `\u{1b}`, so a guest cannot forge lines or terminal output that
/// look like the kernel's.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    std::borrow::Cow::Owned(line)
}

/// The longest guest log line, in bytes.
const MAX_LOG_LINE: i32 = 64 << 10;

/// Writes a guest's log line; returns 0, and whether its host work makes a
/// checkpoint due (see [`charge`]). The line is decoded only if the level
/// is enabled, but charged either way (the cost does not depend on the
/// host's log settings, so deterministic runs stay deterministic).
fn log(
    caller: &mut Caller<'_, ProcessContext>,
    level: i32,
    ptr: i32,
    len: i32,
) -> Result<(u64, bool), ErrorCode> {
    caller.data().admit(Syscall::Log, None)?;
    // Checked before the line is copied, so a bad call copies nothing.
    if !(0..=MAX_LOG_LINE).contains(&len) || !(0..=4).contains(&level) {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    let bytes = read_guest(caller, ptr, len)?;
    let text = || one_line(&String::from_utf8_lossy(&bytes)).into_owned();
    let process = &caller.data().process;
    let (pid, module) = (process.pid, &process.module);
    match level {
        0 => tracing::error!(target: "guest", %pid, %module, "{}", text()),
        1 => tracing::warn!(target: "guest", %pid, %module, "{}", text()),
        2 => tracing::info!(target: "guest", %pid, %module, "{}", text()),
        3 => tracing::debug!(target: "guest", %pid, %module, "{}", text()),
        4 => tracing::trace!(target: "guest", %pid, %module, "{}", text()),
        _ => return Err(ErrorCode::INVALID_ARGUMENT),
    }
    Ok((0, charge(caller, bytes.len())))
}

/// A future that is pending exactly once, waking itself: it hands control
/// back to the kernel's scheduler, which sees the yield request.
pub(crate) struct YieldOnce {
    yielded: bool,
}

impl YieldOnce {
    /// A yield that has not happened yet.
    pub(crate) fn new() -> Self {
        YieldOnce { yielded: false }
    }
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_guest_log_line_stays_one_line() {
        assert_eq!(one_line("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            one_line("ok\nINFO estalogic::supervision: forged\r\x1b[2K"),
            "ok\\nINFO estalogic::supervision: forged\\r\\u{1b}[2K"
        );
    }
}
