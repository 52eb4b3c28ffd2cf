//! Messaging syscalls: `send`, `reply`, `broadcast`, `receive`,
//! `receive_reply`, `peek`, and `send_receive` (a send then a receive in one
//! call).
//!
//! # Receive protocol
//!
//! 1. Arguments, including both guest buffers, are checked before waiting,
//!    so a message is never taken from the mailbox and then lost because it
//!    could not be written.
//! 2. The first matching message (priority, then FIFO) is taken. If its
//!    payload does not fit, the header is written, `BUFFER_TOO_SMALL` is
//!    returned and the message stays queued — except a kernel
//!    `DELIVERY_FAILURE` notice, which is always taken (its payload written
//!    as far as the buffer goes) and whose code is the result.
//! 3. If nothing matches and this process's last send woke a waiting
//!    receiver, that receiver may run its turn right here (the direct
//!    handoff, [`kernel_loop`](crate::core::kernel_loop#direct-handoff)),
//!    after which the mailbox is looked at again. The look before a handoff
//!    does not park the waker (the process stays running, and an answer
//!    posted during the lent turn is simply found); every look that may be
//!    followed by a wait does.
//! 4. Otherwise the process waits: its mailbox slot is marked waiting (the
//!    slot keeps the process's waker from one wait to the next, so a wait
//!    clones nothing; the first message after that wakes it) and, with a
//!    timeout, a timer is armed (the kernel loop wakes it at the deadline,
//!    when the receive returns `TIMEOUT`).
//!
//! `send_receive` checks everything step 1 checks before it sends, then
//! sends, then receives from step 2 on.
//!
//! # Send protocol
//!
//! 1. The kernel assigns the sequence number and timestamp; a guest can set
//!    only the priority and the `REPLY`/`ACK_REQUESTED` flags.
//! 2. A full `BlockSender` mailbox parks the sender (state `Blocked`) until
//!    the receiver takes a message or ends; the message is then offered
//!    again. Every other refusal is returned at once as a code.

use super::process::YieldOnce;
use super::{
    ProcessContext, SCAN_FUEL, charge, charge_scans, check_guest, guest_bytes, overran,
    pay_host_work, pay_host_work_now, poll_once, read_guest, to_return, unsettled, write_guest,
};
use crate::core::kernel_loop::{
    HandOff, KernelShared, TaskState, deliver_direct, hand_off, hold_for_lender, lender,
    may_deliver_direct, put_back_held, stop_due, take_held,
};
use crate::core::kernel_shared::TimerGuard;
use crate::core::message_router::{Filter, Message, OverflowMode};
use crate::core::process::{Counters, Process};
use crate::core::routing::{PostError, Taken, await_answer, owe_again, put_back, settle, take};
use estalogic_abi::messages::DeliveryFailure;
use estalogic_abi::syscalls::{TIMEOUT_INFINITE, send_options};
use estalogic_abi::{
    ErrorCode, Flags, HEADER_LEN, Header, IMPORT_MODULE, MAX_PAYLOAD_LEN, MessagePriority,
    MessageType, Pid, Syscall,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use wasmtime::{Caller, Linker};

/// Registers this family's syscalls.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Send.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (target, message_type, options, ptr, len): (i64, i32, i32, i32, i32)| {
            Box::new(async move {
                let request = Outgoing {
                    syscall: Syscall::Send,
                    target,
                    correlation: 0,
                    message_type,
                    options,
                    ptr,
                    len,
                    may_block: true,
                    call: false,
                };
                let result = send(&mut caller, request).await;
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Reply.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (target, correlation, message_type, options, ptr, len): (i64, i64, i32, i32, i32, i32)| {
            Box::new(async move {
                let request = Outgoing {
                    syscall: Syscall::Reply,
                    target,
                    correlation,
                    message_type,
                    options,
                    ptr,
                    len,
                    may_block: true,
                    call: false,
                };
                let result = send(&mut caller, request).await;
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Receive.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (filter, timeout_ms, header_ptr, buffer_ptr, buffer_len): (i32, i64, i32, i32, i32)| {
            Box::new(async move {
                let filter = type_filter(filter);
                let buffers = Buffers {
                    header_ptr,
                    buffer_ptr,
                    buffer_len,
                };
                let result =
                    receive(&mut caller, Syscall::Receive, filter, timeout_ms, buffers).await;
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::ReceiveReply.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (correlation, timeout_ms, header_ptr, buffer_ptr, buffer_len): (
            i64,
            i64,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let buffers = Buffers {
                    header_ptr,
                    buffer_ptr,
                    buffer_len,
                };
                let filter = Filter::Answer(correlation as u64);
                let result = receive(
                    &mut caller,
                    Syscall::ReceiveReply,
                    filter,
                    timeout_ms,
                    buffers,
                )
                .await;
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::SendReceive.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (
            target,
            correlation,
            message_type,
            options,
            ptr,
            len,
            wait_for,
            timeout_ms,
            header_ptr,
            buffer_ptr,
            buffer_len,
        ): (i64, i64, i32, i32, i32, i32, i64, i64, i32, i32, i32)| {
            Box::new(async move {
                let request = Outgoing {
                    syscall: Syscall::Send,
                    target,
                    correlation,
                    message_type,
                    options,
                    ptr,
                    len,
                    may_block: true,
                    call: false,
                };
                let buffers = Buffers {
                    header_ptr,
                    buffer_ptr,
                    buffer_len,
                };
                let result =
                    send_receive(&mut caller, request, wait_for, timeout_ms, buffers).await;
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Broadcast.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (message_type, options, ptr, len): (i32, i32, i32, i32)| {
            Box::new(async move {
                let result = match start_broadcast(&mut caller, message_type, options, ptr, len) {
                    Ok(mut fanout) => {
                        while offer_copies(&mut caller, &mut fanout) {
                            YieldOnce::new().await;
                        }
                        Ok(fanout.accepted)
                    }
                    Err(code) => Err(code),
                };
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::Peek.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (filter, header_ptr): (i32, i32)| {
            Box::new(async move {
                let (result, due) = peek(&mut caller, filter, header_ptr);
                if due {
                    YieldOnce::new().await;
                }
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    Ok(())
}

/// Registers this family's syscalls for handler processes: the same calls,
/// all synchronous, none of which waits. A send to a full `BlockSender`
/// mailbox, a receive with a timeout other than 0 and every `send_receive`
/// return `WOULD_BLOCK` (nothing is sent or taken); a receive with timeout
/// 0 takes a queued message or returns `TIMEOUT` at once.
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Send.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         target: i64,
         message_type: i32,
         options: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let request = Outgoing {
                syscall: Syscall::Send,
                target,
                correlation: 0,
                message_type,
                options,
                ptr,
                len,
                may_block: false,
                call: false,
            };
            let result = poll_once(send(&mut caller, request));
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Reply.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         target: i64,
         correlation: i64,
         message_type: i32,
         options: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let request = Outgoing {
                syscall: Syscall::Reply,
                target,
                correlation,
                message_type,
                options,
                ptr,
                len,
                may_block: false,
                call: false,
            };
            let result = poll_once(send(&mut caller, request));
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Receive.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         filter: i32,
         timeout_ms: i64,
         header_ptr: i32,
         buffer_ptr: i32,
         buffer_len: i32|
         -> wasmtime::Result<i64> {
            let filter = type_filter(filter);
            let buffers = Buffers {
                header_ptr,
                buffer_ptr,
                buffer_len,
            };
            let result = receive_now(&mut caller, Syscall::Receive, filter, timeout_ms, buffers);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::ReceiveReply.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         correlation: i64,
         timeout_ms: i64,
         header_ptr: i32,
         buffer_ptr: i32,
         buffer_len: i32|
         -> wasmtime::Result<i64> {
            let buffers = Buffers {
                header_ptr,
                buffer_ptr,
                buffer_len,
            };
            let filter = Filter::Answer(correlation as u64);
            let result = receive_now(
                &mut caller,
                Syscall::ReceiveReply,
                filter,
                timeout_ms,
                buffers,
            );
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::SendReceive.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         target: i64,
         _correlation: i64,
         message_type: i32,
         options: i32,
         ptr: i32,
         len: i32,
         wait_for: i64,
         timeout_ms: i64,
         header_ptr: i32,
         buffer_ptr: i32,
         buffer_len: i32|
         -> wasmtime::Result<i64> {
            let buffers = Buffers {
                header_ptr,
                buffer_ptr,
                buffer_len,
            };
            let payload = (message_type, options, ptr, len);
            let result =
                handler_send_receive(&mut caller, target, payload, wait_for, timeout_ms, buffers);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Broadcast.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         message_type: i32,
         options: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            // A handler's host work is taken off its call's fuel; the
            // copies stop where the budget runs out, and the call traps.
            let result =
                start_broadcast(&mut caller, message_type, options, ptr, len).map(|mut fanout| {
                    offer_copies(&mut caller, &mut fanout);
                    fanout.accepted
                });
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::Peek.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         filter: i32,
         header_ptr: i32|
         -> wasmtime::Result<i64> {
            // What is held for it goes back into the mailbox, where this
            // looks.
            put_back_held(&caller.data().kernel, &caller.data().process);
            let result = peek(&mut caller, filter, header_ptr).0;
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    Ok(())
}

/// A handler's `send_receive`: the checks a task's makes before it would
/// wait, in the same order and with the same codes and counts (the wait's
/// arguments, capability and buffers; a call to itself waiting for ever;
/// the target, alive and within its `messaging:send`; the message's
/// arguments and payload), and then `WOULD_BLOCK`, since a handler never
/// waits. Nothing is sent either way.
fn handler_send_receive(
    caller: &mut Caller<'_, ProcessContext>,
    target: i64,
    (message_type, options, ptr, len): (i32, i32, i32, i32),
    wait_for: i64,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<u64, ErrorCode> {
    if !(-1..=i64::from(u32::MAX)).contains(&wait_for) {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    let syscall = if wait_for == -1 {
        Syscall::ReceiveReply
    } else {
        Syscall::Receive
    };
    check_wait(caller, syscall, timeout_ms, buffers)?;
    let message = |caller: &mut Caller<'_, ProcessContext>| {
        if send_options::unpack(options).is_none() || message_type == 0 || len < 0 {
            return Err(ErrorCode::INVALID_ARGUMENT);
        }
        if len as usize > MAX_PAYLOAD_LEN {
            return Err(ErrorCode::PAYLOAD_TOO_LARGE);
        }
        check_guest(caller, ptr, len)
    };
    let failed_at_once = |caller: &mut Caller<'_, ProcessContext>| {
        caller
            .data()
            .process
            .counters
            .send_failures
            .fetch_add(1, Ordering::Relaxed);
    };
    let target = Pid::from_u64(target as u64);
    // A call to itself waiting for ever, as a task's (`send_receive`):
    // after the send's capability and the message's checks, counted and
    // paid for as a refused send.
    if wait_for == -1 && timeout_ms == TIMEOUT_INFINITE && target == caller.data().process.pid {
        let module = caller.data().process.module.clone();
        caller.data().admit(Syscall::Send, Some(&module))?;
        message(caller)?;
        failed_at_once(caller);
        charge(caller, len as usize + POST_FUEL as usize);
        return Err(ErrorCode::WOULD_DEADLOCK);
    }
    // The target, as a task's `send` looks at it first.
    let Some(receiver) = caller.data().take_peer(target) else {
        caller.data().admit_any_item(Syscall::Send)?;
        failed_at_once(caller);
        return Err(ErrorCode::NO_SUCH_PROCESS);
    };
    if let Err(code) = caller.data().admit(Syscall::Send, Some(&receiver.module)) {
        charge(caller, 0);
        return Err(code);
    }
    message(caller)?;
    caller.data_mut().keep_peer(receiver);
    Err(ErrorCode::WOULD_BLOCK)
}

/// A handler's receive: only with timeout 0, which never waits; no handoff
/// (the handler is in the middle of a call).
fn receive_now(
    caller: &mut Caller<'_, ProcessContext>,
    syscall: Syscall,
    filter: Filter,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<u64, ErrorCode> {
    // Checked as a task's wait is (capability, arguments, buffers) before
    // a wait, which a handler never makes, is WOULD_BLOCK.
    if timeout_ms != 0 {
        check_wait(caller, syscall, timeout_ms, buffers)?;
        return Err(ErrorCode::WOULD_BLOCK);
    }
    // What is held for it goes back into the mailbox, where this looks.
    put_back_held(&caller.data().kernel, &caller.data().process);
    let saved = caller.data_mut().hand_off.take();
    let result = poll_once(receive(caller, syscall, filter, timeout_ms, buffers));
    caller.data_mut().hand_off = saved;
    result
}

/// The next message for a handler process, of any type and size, waiting
/// while there is none. Like a receive, it first runs the process this
/// one's last send woke, if that one is the only process ready (the direct
/// handoff).
///
/// The check and the handoff's target are taken from `context` now; the
/// wait borrows only `process`, `task` and `kernel` (the handler's own
/// references, not its store's), so nothing of the store is held while
/// the process is parked.
pub(crate) fn next_message<'a>(
    context: &mut ProcessContext,
    process: &'a Process,
    task: &'a TaskState,
    kernel: &'a Arc<KernelShared>,
    capacity: usize,
) -> Result<impl Future<Output = Result<Message, impl Sized>> + 'a, ErrorCode> {
    // Through the choke point like any receive: a handler whose
    // `messaging:receive` was revoked or expired gets nothing more.
    context.admit(Syscall::Receive, None)?;
    let hand_off = context.hand_off.take();
    // The answer held for it beside its mailbox is taken first if nothing
    // has come since (it came first); otherwise it goes back into the
    // mailbox, ahead of what came since, and the take below orders them.
    if let Some(held) = take_held(process.pid) {
        let fits =
            held.payload.len() <= capacity || held.header.flags.contains(Flags::DELIVERY_FAILURE);
        if !fits {
            // As the mailbox's take would: reported, not taken.
            kernel.report_failure(&held.header, ErrorCode::BUFFER_TOO_SMALL);
        } else if process.looks_empty() && !stop_due(kernel, task) {
            Counters::bump_own(&process.counters.received, 1);
            return Ok(HandlerWait::Held(Some(held)));
        } else {
            put_back(kernel, process, held);
        }
    }
    let wait = Receive {
        process,
        task,
        kernel,
        filter: Filter::Any,
        deadline: None,
        capacity,
        // A message larger than the inbox is never taken: its sender
        // learns (`BUFFER_TOO_SMALL`), and the next one is looked at.
        discard_unfit: true,
        hand_off,
        on_fiber: false,
        timer_armed: false,
        timer: None,
    };
    // It ends with a message: it has no deadline, and a message too large
    // for the inbox is never its answer (`discard_unfit`).
    Ok(HandlerWait::Wait(wait))
}

/// A handler's wait for its next message: the one held for it, or a
/// receive.
enum HandlerWait<'a> {
    Held(Option<Message>),
    Wait(Receive<'a>),
}

impl Future for HandlerWait<'_> {
    type Output = Result<Message, Missed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            HandlerWait::Held(held) => Poll::Ready(Ok(held.take().expect("polled once"))),
            HandlerWait::Wait(wait) => Pin::new(wait).poll(cx),
        }
    }
}

/// The `type_filter` argument of `receive` and `peek`: 0 any type,
/// otherwise that type.
fn type_filter(filter: i32) -> Filter {
    if filter == 0 {
        Filter::Any
    } else {
        Filter::Type(MessageType(filter as u32))
    }
}

/// The arguments of `send` and `reply`.
struct Outgoing {
    syscall: Syscall,
    target: i64,
    correlation: i64,
    message_type: i32,
    options: i32,
    ptr: i32,
    len: i32,
    /// False for a handler process: a full `BlockSender` mailbox is then
    /// `WOULD_BLOCK` instead of a wait.
    may_block: bool,
    /// A call: the sender waits for the answer (`send_receive` with
    /// `wait_for` -1), so the message carries [`Flags::CALL`].
    call: bool,
}

/// True if `request` is a reply: the `reply` syscall, or `REPLY` in its
/// options.
fn is_reply(request: &Outgoing) -> bool {
    request.syscall == Syscall::Reply
        || send_options::unpack(request.options)
            .is_some_and(|(_, flags)| flags.contains(Flags::REPLY))
}

/// The checked parts of an outgoing message.
struct Parts {
    priority: MessagePriority,
    flags: Flags,
    message_type: MessageType,
    payload: Box<[u8]>,
}

/// Checks what every send checks and copies the payload out of the guest.
fn outgoing_parts(
    caller: &mut Caller<'_, ProcessContext>,
    message_type: i32,
    options: i32,
    ptr: i32,
    len: i32,
) -> Result<Parts, ErrorCode> {
    let (priority, flags) = send_options::unpack(options).ok_or(ErrorCode::INVALID_ARGUMENT)?;
    if message_type == 0 || len < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    if len as usize > MAX_PAYLOAD_LEN {
        return Err(ErrorCode::PAYLOAD_TOO_LARGE);
    }
    let payload = read_guest(caller, ptr, len)?;
    Ok(Parts {
        priority,
        flags,
        message_type: MessageType(message_type as u32),
        payload: payload.into_boxed_slice(),
    })
}

async fn send(
    caller: &mut Caller<'_, ProcessContext>,
    request: Outgoing,
) -> Result<u64, ErrorCode> {
    let target = Pid::from_u64(request.target as u64);
    let context = caller.data();
    // Out of the peer cache, and back into it once posted; a send that
    // fails drops it (the next one looks the target up again).
    let Some(receiver) = context.take_peer(target) else {
        // Only a process that may send at all is told the target is gone.
        context.admit_any_item(request.syscall)?;
        context
            .process
            .counters
            .send_failures
            .fetch_add(1, Ordering::Relaxed);
        // An answer to a caller that has gone: whatever call of its this
        // process took is owed no more.
        if is_reply(&request) {
            settle(&context.process, target, request.correlation as u64);
        }
        return Err(ErrorCode::NO_SUCH_PROCESS);
    };
    if let Err(code) = context.admit(request.syscall, Some(&receiver.module)) {
        // The refusal's search and audit are host work: paid now, so a
        // loop of refused sends passes its checkpoints.
        if charge(caller, 0) {
            YieldOnce::new().await;
        }
        return Err(code);
    }
    // A handler's message to a handler waiting idle, when nothing else is
    // ready: delivered into its inbox and handled at once (see
    // `loader::handler`).
    if !request.may_block
        && receiver.handler
        && receiver.pid != context.process.pid
        // Never ahead of the rest of a higher level's call.
        && receiver.priority >= context.process.priority
        && may_deliver_direct(&receiver)
    {
        let copied = request.len.max(0) as usize;
        if let Some(result) = send_direct(caller, &request, &receiver) {
            // Delivered: the copy into the inbox and the post are paid for
            // (a handler's charge never makes a checkpoint due). A refusal
            // here comes from the send's own checks, before any copy, and
            // is free, as it is on the mailbox's way (`outgoing_parts`).
            if result.is_ok() {
                caller.data_mut().keep_peer(receiver);
                charge(caller, copied + POST_FUEL as usize);
            }
            return result;
        }
    }
    let Parts {
        priority,
        mut flags,
        message_type,
        payload,
    } = outgoing_parts(
        caller,
        request.message_type,
        request.options,
        request.ptr,
        request.len,
    )?;
    if request.syscall == Syscall::Reply {
        flags = flags | Flags::REPLY;
    }
    if request.call {
        flags = flags | Flags::CALL;
    }
    let copied = payload.len();
    // Fields, not the context itself: it is not `Sync`, and these are held
    // across a wait for room.
    let (sender, kernel, task) = {
        let context = caller.data();
        (&context.process, &context.kernel, &context.task)
    };
    let receiver_pid = receiver.pid;
    let sequence = sender.next_sequence();
    if request.call {
        // Before it is posted: whoever answers it must see it awaited.
        if let Err(code) = await_answer(sender, sequence, receiver_pid) {
            sender
                .counters
                .send_failures
                .fetch_add(1, Ordering::Relaxed);
            if charge(caller, copied + POST_FUEL as usize) {
                YieldOnce::new().await;
            }
            return Err(code);
        }
    }
    let now = kernel.clock.now_nanos();
    let mut message = Message {
        header: Header {
            priority,
            flags,
            message_type,
            source: sender.pid,
            target,
            sequence,
            timestamp: now,
            correlation: request.correlation as u64,
        },
        payload,
    };
    // A call delivered directly from its lender's send, answering it: the
    // lender waits in that send, its mailbox empty, and this is its next
    // message. Held for it (no lock, no queue), as if queued and taken
    // first; its sender's counts and the trace as for any message. An
    // acknowledgement needs the mailbox's take.
    if lender() == Some(receiver_pid)
        && receiver.looks_empty()
        && !flags.contains(Flags::ACK_REQUESTED)
        // A call is owed by whoever takes it (`routing::take` notes it).
        && !flags.contains(Flags::CALL)
    {
        let header = message.header;
        match hold_for_lender(receiver_pid, message) {
            Ok(()) => {
                Counters::bump_own(&sender.counters.sent, 1);
                if flags.contains(Flags::REPLY) {
                    settle(sender, receiver_pid, header.correlation);
                }
                kernel.trace_send(&header, copied);
                caller.data_mut().keep_peer(receiver);
                charge(caller, copied + POST_FUEL as usize);
                return Ok(sequence);
            }
            Err(back) => message = back,
        }
    }
    // A reply to a call this process owes is the answer its caller may be
    // waiting for, taking nothing else meanwhile: a full mailbox takes it
    // past its capacity, by one message at most (`Mailbox::push_answer`).
    // Settled first, and owed again if it does not get in (a mailbox
    // already past its capacity, a wait for room there), so that the
    // caller is still told at this process's end.
    let mut owed = if flags.contains(Flags::REPLY) {
        settle(sender, receiver_pid, request.correlation as u64)
    } else {
        None
    };
    loop {
        let posted = match owed {
            Some(call) => kernel.post_answer(&receiver, message).map(|queued| {
                if queued.is_none() {
                    owe_again(sender, call);
                }
                queued.unwrap_or(false)
            }),
            None => kernel.post_to(&receiver, message),
        };
        match posted {
            Ok(woke) => {
                Counters::bump_own(&sender.counters.sent, 1);
                let context = caller.data_mut();
                context.hand_off = woke.then_some(receiver_pid);
                context.keep_peer(receiver);
                // The post is host work whatever became of the message (a
                // full `drop_newest` mailbox drops it and notifies back).
                if charge(caller, copied + POST_FUEL as usize) {
                    YieldOnce::new().await;
                }
                return Ok(sequence);
            }
            Err(PostError::Full(refused, OverflowMode::BlockSender, receiver))
                if receiver.pid != sender.pid && request.may_block =>
            {
                sender
                    .counters
                    .blocked_sends
                    .fetch_add(1, Ordering::Relaxed);
                // Owed while this process waits (it may end waiting).
                if let Some(call) = owed {
                    owe_again(sender, call);
                }
                RoomIn {
                    receiver,
                    task: task.clone(),
                    size: refused.payload.len(),
                    queued: None,
                }
                .await;
                if owed.is_some() {
                    owed = settle(sender, receiver_pid, request.correlation as u64);
                }
                message = refused;
            }
            Err(error) => {
                sender
                    .counters
                    .send_failures
                    .fetch_add(1, Ordering::Relaxed);
                match (&error, owed) {
                    // The caller has gone: nothing is owed.
                    (PostError::NoSuchProcess, None) if flags.contains(Flags::REPLY) => {
                        settle(sender, receiver_pid, request.correlation as u64);
                    }
                    (PostError::NoSuchProcess, _) | (_, None) => {}
                    // Refused: still owed.
                    (_, Some(call)) => owe_again(sender, call),
                }
                // Blocking on one's own full mailbox would never end; a
                // handler never blocks.
                let would_block = |pid| match &error {
                    PostError::Full(_, OverflowMode::BlockSender, receiver) => receiver.pid == pid,
                    _ => false,
                };
                let code = if would_block(sender.pid) {
                    ErrorCode::WOULD_DEADLOCK
                } else if would_block(receiver_pid) {
                    ErrorCode::WOULD_BLOCK
                } else {
                    error.code()
                };
                // The payload was copied and the post tried: paid for as
                // a send that went through is, and the post's own work on
                // top (a refused send would otherwise be a copy for free).
                if charge(caller, copied + POST_FUEL as usize) {
                    YieldOnce::new().await;
                }
                return Err(code);
            }
        }
    }
}

/// A handler's send to the handler `receiver` delivered directly
/// (`kernel_loop::deliver_direct`): the same checks as any send, then the
/// payload goes from the sender's memory straight into the receiver's
/// inbox, with no copy on the heap. `None` if it was not delivered so (the
/// receiver was not waiting idle, something else was ready, the message
/// asks for an acknowledgement or does not fit the inbox): the caller
/// posts it as usual.
fn send_direct(
    caller: &mut Caller<'_, ProcessContext>,
    request: &Outgoing,
    receiver: &Arc<Process>,
) -> Option<Result<u64, ErrorCode>> {
    let checked = send_options::unpack(request.options)
        .filter(|_| request.message_type != 0 && request.len >= 0)
        .ok_or(ErrorCode::INVALID_ARGUMENT)
        .and_then(|parts| {
            if request.len as usize > MAX_PAYLOAD_LEN {
                return Err(ErrorCode::PAYLOAD_TOO_LARGE);
            }
            Ok(parts)
        });
    let (priority, mut flags) = match checked {
        Ok(parts) => parts,
        Err(code) => return Some(Err(code)),
    };
    // The kernel acknowledges as the receiver takes a message from its
    // mailbox; such a message goes through it.
    if flags.contains(Flags::ACK_REQUESTED) {
        return None;
    }
    let bytes = match guest_bytes(caller, request.ptr, request.len) {
        Ok(bytes) => bytes,
        Err(code) => return Some(Err(code)),
    };
    if request.syscall == Syscall::Reply {
        flags = flags | Flags::REPLY;
    }
    // Only handlers send directly, and a handler never calls (its
    // `send_receive` would wait): no `CALL` here, so none bypasses the
    // take that notes it as owed.
    debug_assert!(!request.call);
    let caller = &*caller;
    let context = caller.data();
    let (sender, kernel) = (&context.process, &context.kernel);
    let now = kernel.clock.now_nanos();
    let mut sequence = 0;
    let delivered = deliver_direct(kernel, sender.pid, receiver.pid, |state| {
        let payload = match &bytes {
            Some((memory, range)) => &memory.data(caller)[range.clone()],
            None => &[],
        };
        // Too large for the inbox: the mailbox's way reports it.
        if payload.len() > state.capacity() {
            return None;
        }
        sequence = sender.next_sequence();
        let header = Header {
            priority,
            flags,
            message_type: MessageType(request.message_type as u32),
            source: sender.pid,
            target: receiver.pid,
            sequence,
            timestamp: now,
            correlation: request.correlation as u64,
        };
        // Counted and traced as a message posted and then taken. The
        // receiver's counter is its own, written here while this thread
        // holds its task.
        Counters::bump_own(&sender.counters.sent, 1);
        Counters::bump_own(&receiver.counters.received, 1);
        kernel.trace_send(&header, payload.len());
        Some(state.deliver(&header, payload))
    });
    delivered.then_some(Ok(sequence))
}

/// Waits until `receiver`'s mailbox has room or it has ended; the sender is
/// `Blocked` meanwhile.
struct RoomIn {
    receiver: Arc<Process>,
    task: Arc<TaskState>,
    /// Payload bytes of the message waiting to go in.
    size: usize,
    /// The waker left in the receiver's queue of blocked senders, while
    /// this wait has one there (or was woken through it and has not run).
    queued: Option<Waker>,
}

impl Future for RoomIn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let receiver = self.receiver.clone();
        let mut slot = receiver.lock_mailbox();
        if slot.mailbox.fits(self.size) || !receiver.alive.load(Ordering::Acquire) {
            self.task.set_blocked(false);
            // Woken, or never queued: nothing of this wait is left there.
            if let Some(mine) = self.queued.take() {
                slot.blocked_senders.retain(|waker| !waker.will_wake(&mine));
            }
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        if !slot
            .blocked_senders
            .iter()
            .any(|queued| queued.will_wake(&waker))
        {
            slot.blocked_senders.push_back(waker.clone());
        }
        self.queued = Some(waker);
        self.task.set_blocked(true);
        Poll::Pending
    }
}

/// A sender stopped while it waits for room (its supervisor restarted, a
/// shutdown) leaves no waker behind: a `take` frees one blocked sender per
/// message, and a dead one would use up that wake-up. If it was woken and
/// never ran, the wake-up passes to the next blocked sender.
impl Drop for RoomIn {
    fn drop(&mut self) {
        let Some(mine) = self.queued.take() else {
            return;
        };
        let next = {
            let mut slot = self.receiver.lock_mailbox();
            let before = slot.blocked_senders.len();
            slot.blocked_senders.retain(|waker| !waker.will_wake(&mine));
            if slot.blocked_senders.len() == before {
                slot.blocked_senders.pop_front()
            } else {
                None
            }
        };
        if let Some(next) = next {
            next.wake();
        }
    }
}

/// Fuel units every send pays for its post, besides its payload's bytes
/// (a broadcast per receiver it offers a copy to): about what one post
/// costs next to the guest's own instructions.
const POST_FUEL: u64 = 256;

/// A broadcast under way: the message's parts and the receivers still to
/// be offered a copy. A broadcast's work grows with its receivers (a copy
/// of up to 1 MiB each), so it is done in steps ([`offer_copies`]): a
/// task passes a checkpoint between them for every slice of work, where
/// it may be preempted, and a handler's call stops where its fuel budget
/// runs out.
struct Fanout {
    parts: Parts,
    targets: std::vec::IntoIter<Arc<Process>>,
    /// Copies accepted so far.
    accepted: u64,
}

/// Starts a broadcast: its checks, the payload's copy out of the guest's
/// memory, and the receivers (every other live process that receives),
/// taken once, at the start.
fn start_broadcast(
    caller: &mut Caller<'_, ProcessContext>,
    message_type: i32,
    options: i32,
    ptr: i32,
    len: i32,
) -> Result<Fanout, ErrorCode> {
    caller.data().admit(Syscall::Broadcast, None)?;
    let parts = outgoing_parts(caller, message_type, options, ptr, len)?;
    let context = caller.data();
    let sender = &context.process;
    let targets: Vec<Arc<Process>> = {
        let table = context
            .kernel
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner());
        table
            .iter()
            .filter(|p| p.pid != sender.pid && p.receives)
            .cloned()
            .collect()
    };
    // The payload's copy out of its memory is work made even when no one
    // is there to offer it to.
    context.add_host_work(parts.payload.len() as u64);
    Ok(Fanout {
        parts,
        targets: targets.into_iter(),
        accepted: 0,
    })
}

/// Offers copies of a broadcast's message until every receiver has been
/// offered one (false) or, before the next copy, a checkpoint is due (a
/// task: one for every slice of the work so far, the payload's copy out of
/// memory included) or the call's fuel budget has run out (a handler; see
/// [`overran`]): true, and the next call goes on where this one stopped.
/// Every copy offered is host work for the sender (see [`charge`]),
/// accepted or not: the post, and the notice a dropped copy sends back,
/// cost the kernel the same.
fn offer_copies(caller: &mut Caller<'_, ProcessContext>, fanout: &mut Fanout) -> bool {
    let work = (fanout.parts.payload.len() as u64).saturating_add(POST_FUEL);
    let mut accepted = 0;
    let stopped = loop {
        if owes_a_stop(caller) {
            break true;
        }
        let Some(target) = fanout.targets.next() else {
            break false;
        };
        let context = caller.data();
        let sender = &context.process;
        let kernel = &context.kernel;
        let parts = &fanout.parts;
        let message = Message {
            header: Header {
                priority: parts.priority,
                flags: parts.flags | Flags::BROADCAST,
                message_type: parts.message_type,
                source: sender.pid,
                target: target.pid,
                sequence: sender.next_sequence(),
                timestamp: kernel.clock.now_nanos(),
                correlation: 0,
            },
            payload: parts.payload.clone(),
        };
        // A broadcast never blocks: a full mailbox just does not get a copy
        // in any mode, and is not counted there (`Mailbox::offer_copy`).
        if kernel.post_copy(&target, message).is_ok() {
            accepted += 1;
        }
        context.add_host_work(work);
    };
    // Counted as they go: a process stopped between two steps has sent
    // what it sent.
    Counters::bump_own(&caller.data().process.counters.sent, accepted);
    fanout.accepted += accepted;
    stopped
}

/// Whether a syscall working in steps must stop before its next one: a
/// task owes a checkpoint (a slice of host work since its last; each call
/// takes one slice off, see [`charge`]), a handler's call is past its
/// budget once the work so far is paid.
fn owes_a_stop(caller: &mut Caller<'_, ProcessContext>) -> bool {
    if caller.data().process.handler {
        if unsettled(caller) {
            let _ = charge(caller, 0);
        }
        overran(caller)
    } else {
        unsettled(caller) && charge(caller, 0)
    }
}

/// Peeks; returns the syscall's result and whether the search's work
/// makes a checkpoint due (see [`charge`]).
fn peek(
    caller: &mut Caller<'_, ProcessContext>,
    filter: i32,
    header_ptr: i32,
) -> (Result<u64, ErrorCode>, bool) {
    if let Err(code) = caller
        .data()
        .admit(Syscall::Peek, None)
        .and_then(|()| check_guest(caller, header_ptr, HEADER_LEN as i32))
    {
        return (Err(code), false);
    }
    let filter = type_filter(filter);
    let (found, scanned) = {
        let slot = caller.data().process.lock_mailbox();
        let found = slot
            .mailbox
            .peek(filter)
            .map(|m| (m.header, m.payload.len()));
        (found, slot.mailbox.take_scanned())
    };
    let due = charge_scans(caller, scanned);
    let result = found.ok_or(ErrorCode::NOT_FOUND).and_then(|(header, len)| {
        let encoded = header.encode(len).map_err(|_| ErrorCode::INTERNAL)?;
        write_guest(caller, header_ptr, &encoded)?;
        Ok(len as u64)
    });
    (result, due)
}

/// `send_receive`: checks the wait first (arguments, buffers, the receive
/// capability), so that nothing is sent whose answer could not be taken;
/// then sends, then waits.
async fn send_receive(
    caller: &mut Caller<'_, ProcessContext>,
    request: Outgoing,
    wait_for: i64,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<u64, ErrorCode> {
    let answer = wait_for == -1;
    if !(-1..=i64::from(u32::MAX)).contains(&wait_for) {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    let syscall = if answer {
        Syscall::ReceiveReply
    } else {
        Syscall::Receive
    };
    check_wait(caller, syscall, timeout_ms, buffers)?;
    let target = Pid::from_u64(request.target as u64);
    // A call to itself, waiting for ever: only it could answer, and it
    // waits. Refused as a blocking send to its own full mailbox is: after
    // the send's own checks (its capability, arguments and payload), and
    // counted as a send that failed at once.
    if answer && timeout_ms == TIMEOUT_INFINITE && target == caller.data().process.pid {
        let module = caller.data().process.module.clone();
        caller.data().admit(request.syscall, Some(&module))?;
        let copied = outgoing_parts(
            caller,
            request.message_type,
            request.options,
            request.ptr,
            request.len,
        )?
        .payload
        .len();
        caller
            .data()
            .process
            .counters
            .send_failures
            .fetch_add(1, Ordering::Relaxed);
        // Paid for as a refused send is: the copy and the post.
        if charge(caller, copied + POST_FUEL as usize) {
            YieldOnce::new().await;
        }
        return Err(ErrorCode::WOULD_DEADLOCK);
    }
    let request = Outgoing {
        call: answer,
        ..request
    };
    let sequence = send(caller, request).await?;
    let filter = match wait_for {
        -1 => Filter::AnswerFrom {
            correlation: sequence,
            from: target,
        },
        0 => Filter::Any,
        message_type => Filter::Type(MessageType(message_type as u32)),
    };
    wait_and_take(caller, filter, timeout_ms, buffers).await
}

/// Where a receive writes.
#[derive(Clone, Copy)]
struct Buffers {
    header_ptr: i32,
    buffer_ptr: i32,
    buffer_len: i32,
}

/// What a wait checks before it takes anything: the capability, the
/// arguments, and that both buffers lie in guest memory (memory only grows,
/// so they still will once a message is there).
fn check_wait(
    caller: &mut Caller<'_, ProcessContext>,
    syscall: Syscall,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<(), ErrorCode> {
    caller.data().admit(syscall, None)?;
    if timeout_ms < TIMEOUT_INFINITE || buffers.buffer_len < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    check_guest(caller, buffers.header_ptr, HEADER_LEN as i32)?;
    check_guest(caller, buffers.buffer_ptr, buffers.buffer_len)
}

async fn receive(
    caller: &mut Caller<'_, ProcessContext>,
    syscall: Syscall,
    filter: Filter,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<u64, ErrorCode> {
    check_wait(caller, syscall, timeout_ms, buffers)?;
    wait_and_take(caller, filter, timeout_ms, buffers).await
}

/// The wait of a receive whose arguments [`check_wait`] accepted.
async fn wait_and_take(
    caller: &mut Caller<'_, ProcessContext>,
    filter: Filter,
    timeout_ms: i64,
    buffers: Buffers,
) -> Result<u64, ErrorCode> {
    let hand_off = caller.data_mut().hand_off.take();
    let context = caller.data();
    let kernel = &context.kernel;
    let deadline =
        (timeout_ms != TIMEOUT_INFINITE).then(|| kernel.clock.deadline_after_ms(timeout_ms as u64));
    let taken = Receive {
        process: &context.process,
        task: &context.task,
        kernel,
        filter,
        deadline,
        capacity: buffers.buffer_len as usize,
        discard_unfit: false,
        hand_off,
        on_fiber: true,
        timer_armed: false,
        timer: None,
    }
    .await;
    let (result, due) = hand_over(caller, taken, buffers);
    if due {
        YieldOnce::new().await;
    }
    result
}

/// Writes what a wait found into the guest's buffers and charges the work
/// (see [`charge`]); returns the syscall's result and whether a checkpoint
/// is due.
fn hand_over(
    caller: &mut Caller<'_, ProcessContext>,
    taken: Result<Message, Missed>,
    buffers: Buffers,
) -> (Result<u64, ErrorCode>, bool) {
    let scanned = {
        let process = &caller.data().process;
        let scanned = process.scanned.load(Ordering::Relaxed);
        if scanned > 0 {
            process.scanned.store(0, Ordering::Relaxed);
        }
        scanned
    };
    // One charge for the search and the copy: each `true` stands for one
    // slice taken off, so two charges whose answers were merged into one
    // checkpoint lost a slice.
    let scan_work = scanned.saturating_mul(SCAN_FUEL);
    let mut copied = 0;
    let result = match taken {
        Ok(message) => (|| {
            let header = message
                .header
                .encode(message.payload.len())
                .map_err(|_| ErrorCode::INTERNAL)?;
            write_guest(caller, buffers.header_ptr, &header)?;
            // Only a delivery-failure notice can be longer than the buffer
            // (see `Receive`); it is written as far as the buffer goes.
            let fits = message.payload.len().min(buffers.buffer_len as usize);
            write_guest(caller, buffers.buffer_ptr, &message.payload[..fits])?;
            copied = fits;
            if message.header.flags.contains(Flags::DELIVERY_FAILURE) {
                let notice = DeliveryFailure::decode(&message.payload);
                return Err(notice.map_or(ErrorCode::INTERNAL, |n| n.code));
            }
            Ok(message.payload.len() as u64)
        })(),
        Err(Missed::TooLarge(header, len)) => header
            .encode(len)
            .map_err(|_| ErrorCode::INTERNAL)
            .and_then(|header| write_guest(caller, buffers.header_ptr, &header))
            .and(Err(ErrorCode::BUFFER_TOO_SMALL)),
        Err(Missed::Timeout) => Err(ErrorCode::TIMEOUT),
    };
    let work = usize::try_from(scan_work)
        .unwrap_or(usize::MAX)
        .saturating_add(copied);
    let due = charge(caller, work);
    (result, due)
}

enum Missed {
    TooLarge(Header, usize),
    Timeout,
}

/// Waits for a matching message; see the module docs.
struct Receive<'a> {
    process: &'a Process,
    task: &'a TaskState,
    kernel: &'a Arc<KernelShared>,
    filter: Filter,
    deadline: Option<u64>,
    capacity: usize,
    /// A handler's wait: a first match larger than `capacity` is removed
    /// and reported to its sender (see `routing::take`).
    discard_unfit: bool,
    /// The process to hand the CPU to directly if nothing is there yet.
    hand_off: Option<Pid>,
    /// The waiter runs on its own fiber (a task process's receive), not a
    /// handler's loop on the worker's stack.
    on_fiber: bool,
    timer_armed: bool,
    /// Cancels the deadline's timer when the receive ends, however it ends.
    timer: Option<TimerGuard>,
}

impl Future for Receive<'_> {
    type Output = Result<Message, Missed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A call's target restarted with its mail (a same-state restart):
        // the answer comes from the new process, which holds the request.
        if let Filter::AnswerFrom { correlation, from } = self.filter {
            let holder = self.process.successor_of(from);
            if holder != from {
                self.filter = Filter::AnswerFrom {
                    correlation,
                    from: holder,
                };
            }
        }
        let capacity = self.capacity;
        let expired = self
            .deadline
            .is_some_and(|deadline| self.kernel.clock.now_nanos() >= deadline);
        loop {
            // About to hand the CPU over: nothing to park yet, since this
            // process stays running and looks again after the lent turn
            // (an answer posted meanwhile then wakes nobody, and is found).
            let park = self.hand_off.is_none();
            let taken = take(
                self.kernel,
                self.process,
                self.filter,
                // A delivery-failure notice is taken whatever the buffer:
                // its code is the answer, and a receiver that cannot take
                // it could never learn that its message was lost.
                |m| m.payload.len() <= capacity || m.header.flags.contains(Flags::DELIVERY_FAILURE),
                self.discard_unfit,
                // A handler to stop takes no message (it would be called
                // with it): a checkpoint instead, where `run_turn` stops it.
                || !self.on_fiber && stop_due(self.kernel, self.task),
                |slot| {
                    if expired {
                        slot.unpark();
                        return;
                    }
                    if !park {
                        return;
                    }
                    slot.park(cx.waker());
                },
            );
            match taken {
                Taken::Message(message) => return Poll::Ready(Ok(message)),
                Taken::Halted => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Taken::TooLarge(header, len) => {
                    return Poll::Ready(Err(Missed::TooLarge(header, len)));
                }
                Taken::Discarded(header) => {
                    self.kernel
                        .report_failure(&header, ErrorCode::BUFFER_TOO_SMALL);
                    continue;
                }
                Taken::Nothing if expired => return Poll::Ready(Err(Missed::Timeout)),
                Taken::Nothing => {}
            }
            // Nothing yet: run the process this one just woke here and now,
            // instead of suspending and waiting for the scheduler to.
            let Some(to) = self.hand_off.take() else {
                break;
            };
            match hand_off(self.kernel, self.process.pid, to, self.on_fiber) {
                // Look again, parking this time (the first look did not).
                HandOff::NotTaken => continue,
                HandOff::Ran { others_ready } => {
                    // Whatever woke this process during the lent turn is
                    // answered by looking again, or by the requeue below. A
                    // message after this point is not missed: the next
                    // look parks under the mailbox lock (the one here, or
                    // the first one of the requeued process's next poll).
                    self.task.clear_notified();
                    if others_ready {
                        // Back to the run queue, behind what became ready
                        // meanwhile; the answer waits in the mailbox.
                        self.task.yield_requested.store(true, Ordering::Release);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
        if let Some(deadline) = self.deadline
            && !self.timer_armed
        {
            self.timer = Some(self.kernel.arm_timer(deadline, cx.waker().clone()));
            self.timer_armed = true;
        }
        Poll::Pending
    }
}
