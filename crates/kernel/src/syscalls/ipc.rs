//! Messaging syscalls: `send` and `receive`.
//!
//! # Receive protocol
//!
//! 1. Arguments, including both guest buffers, are checked before waiting,
//!    so a message is never taken from the mailbox and then lost because it
//!    could not be written.
//! 2. The first matching message (priority, then FIFO) is taken. If its
//!    payload does not fit, the header is written, `BUFFER_TOO_SMALL` is
//!    returned and the message stays queued.
//! 3. Otherwise the process waits: its waker is parked in its mailbox slot
//!    (a sender wakes it) and, with a timeout, a timer is armed (the kernel
//!    loop wakes it at the deadline, when the receive returns `TIMEOUT`).

use super::{ProcessContext, check_guest, read_guest, to_return, write_guest};
use crate::core::kernel_loop::KernelShared;
use crate::core::message_router::{Delivery, Message};
use crate::core::process::{Process, RouteError, route};
use estalogic_abi::syscalls::{TIMEOUT_INFINITE, send_options};
use estalogic_abi::{
    ErrorCode, HEADER_LEN, Header, IMPORT_MODULE, MAX_PAYLOAD_LEN, MessageType, Pid, Syscall,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Send.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         target: i64,
         message_type: i32,
         options: i32,
         ptr: i32,
         len: i32|
         -> i64 { to_return(send(&mut caller, target, message_type, options, ptr, len)) },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Receive.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (filter, timeout_ms, header_ptr, buffer_ptr, buffer_len): (i32, i64, i32, i32, i32)| {
            Box::new(async move {
                let result =
                    receive(&mut caller, filter, timeout_ms, header_ptr, buffer_ptr, buffer_len)
                        .await;
                Ok(to_return(result))
            })
        },
    )?;
    Ok(())
}

fn send(
    caller: &mut Caller<'_, ProcessContext>,
    target: i64,
    message_type: i32,
    options: i32,
    ptr: i32,
    len: i32,
) -> Result<u64, ErrorCode> {
    caller.data().admit(Syscall::Send)?;
    let (priority, flags) = send_options::unpack(options).ok_or(ErrorCode::INVALID_ARGUMENT)?;
    if message_type == 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    if len < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    if len as usize > MAX_PAYLOAD_LEN {
        return Err(ErrorCode::PAYLOAD_TOO_LARGE);
    }
    let payload = read_guest(caller, ptr, len)?;
    let context = caller.data();
    let sender = &context.process;
    let target_pid = Pid::from_u64(target as u64);
    let result = send_message(
        &context.kernel,
        sender,
        target_pid,
        MessageType(message_type as u32),
        priority,
        flags,
        payload.into_boxed_slice(),
    );
    match &result {
        Ok(_) => sender.counters.sent.fetch_add(1, Ordering::Relaxed),
        Err(_) => sender
            .counters
            .send_failures
            .fetch_add(1, Ordering::Relaxed),
    };
    result
}

/// Builds the header and routes a message from `sender` to `target`;
/// returns its sequence number.
pub(crate) fn send_message(
    kernel: &KernelShared,
    sender: &Process,
    target: Pid,
    message_type: MessageType,
    priority: estalogic_abi::MessagePriority,
    flags: estalogic_abi::Flags,
    payload: Box<[u8]>,
) -> Result<u64, ErrorCode> {
    let receiver = {
        let table = kernel.table.read().unwrap_or_else(|p| p.into_inner());
        table
            .get(target)
            .cloned()
            .ok_or(ErrorCode::NO_SUCH_PROCESS)?
    };
    let sequence = sender.next_sequence();
    let header = Header {
        priority,
        flags,
        message_type,
        source: sender.pid,
        target,
        sequence,
        timestamp: kernel.clock.now_nanos(),
        correlation: 0,
    };
    kernel.trace_send(&header, payload.len());
    match route(&receiver, Message { header, payload }) {
        Ok(Delivery::Queued)
        | Ok(Delivery::QueuedDroppingOldest(_))
        | Ok(Delivery::DroppedNewest) => Ok(sequence),
        Err(RouteError::MailboxFull(_)) => Err(ErrorCode::MAILBOX_FULL),
        Err(RouteError::NoSuchProcess(_)) => Err(ErrorCode::NO_SUCH_PROCESS),
    }
}

async fn receive(
    caller: &mut Caller<'_, ProcessContext>,
    filter: i32,
    timeout_ms: i64,
    header_ptr: i32,
    buffer_ptr: i32,
    buffer_len: i32,
) -> Result<u64, ErrorCode> {
    caller.data().admit(Syscall::Receive)?;
    if timeout_ms < TIMEOUT_INFINITE || buffer_len < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    // Both buffers must lie in guest memory before anything is taken from
    // the mailbox (memory only grows, so they still will afterwards).
    check_guest(caller, header_ptr, HEADER_LEN as i32)?;
    check_guest(caller, buffer_ptr, buffer_len)?;
    let context = caller.data();
    let kernel = context.kernel.clone();
    let deadline = (timeout_ms != TIMEOUT_INFINITE).then(|| {
        kernel
            .clock
            .now_nanos()
            .saturating_add((timeout_ms as u64).saturating_mul(1_000_000))
    });
    let taken = Receive {
        process: context.process.clone(),
        kernel,
        only: (filter != 0).then_some(MessageType(filter as u32)),
        deadline,
        capacity: buffer_len as usize,
        timer_armed: false,
    }
    .await;
    match taken {
        Ok(message) => {
            let header = message
                .header
                .encode(message.payload.len())
                .map_err(|_| ErrorCode::INTERNAL)?;
            write_guest(caller, header_ptr, &header)?;
            write_guest(caller, buffer_ptr, &message.payload)?;
            caller
                .data()
                .process
                .counters
                .received
                .fetch_add(1, Ordering::Relaxed);
            Ok(message.payload.len() as u64)
        }
        Err(Taken::TooSmall(header, len)) => {
            let header = header.encode(len).map_err(|_| ErrorCode::INTERNAL)?;
            write_guest(caller, header_ptr, &header)?;
            Err(ErrorCode::BUFFER_TOO_SMALL)
        }
        Err(Taken::Timeout) => Err(ErrorCode::TIMEOUT),
    }
}

enum Taken {
    TooSmall(Header, usize),
    Timeout,
}

/// Waits for a matching message; see the module docs.
struct Receive {
    process: Arc<Process>,
    kernel: Arc<KernelShared>,
    only: Option<MessageType>,
    deadline: Option<u64>,
    capacity: usize,
    timer_armed: bool,
}

impl Future for Receive {
    type Output = Result<Message, Taken>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut slot = self.process.lock_mailbox();
            if let Some(first) = slot.mailbox.peek(self.only) {
                if first.payload.len() > self.capacity {
                    return Poll::Ready(Err(Taken::TooSmall(first.header, first.payload.len())));
                }
                let message = slot
                    .mailbox
                    .take(self.only)
                    .expect("peeked message is there");
                slot.waiter = None;
                return Poll::Ready(Ok(message));
            }
            if let Some(deadline) = self.deadline
                && self.kernel.clock.now_nanos() >= deadline
            {
                slot.waiter = None;
                return Poll::Ready(Err(Taken::Timeout));
            }
            match &slot.waiter {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => slot.waiter = Some(cx.waker().clone()),
            }
        }
        if let Some(deadline) = self.deadline
            && !self.timer_armed
        {
            self.kernel.arm_timer(deadline, cx.waker().clone());
            self.timer_armed = true;
        }
        Poll::Pending
    }
}
