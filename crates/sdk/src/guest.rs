//! The syscall layer: raw imports from the kernel and their safe wrappers
//! (wasm32 only).

use crate::{ErrorCode, Flags, Message, MessagePriority, MessageType, Pid, Wait};
use estalogic_abi::{HEADER_LEN, Header, syscalls::send_options};

mod raw {
    #[link(wasm_import_module = "estalogic")]
    unsafe extern "C" {
        pub safe fn exit(code: i32) -> !;
        pub safe fn yield_now() -> i64;
        pub safe fn self_pid() -> i64;
        pub unsafe fn lookup(name_ptr: *const u8, name_len: usize) -> i64;
        pub unsafe fn send(
            target: i64,
            message_type: u32,
            options: i32,
            payload_ptr: *const u8,
            payload_len: usize,
        ) -> i64;
        pub unsafe fn receive(
            type_filter: u32,
            timeout_ms: i64,
            header_ptr: *mut u8,
            buffer_ptr: *mut u8,
            buffer_len: usize,
        ) -> i64;
        pub unsafe fn log(level: i32, ptr: *const u8, len: usize) -> i64;
        pub unsafe fn notify(kind: i32, ptr: *const u8, len: usize) -> i64;
        pub safe fn clock_now() -> i64;
        pub unsafe fn peek(type_filter: u32, header_ptr: *mut u8) -> i64;
        pub unsafe fn reply(
            target: i64,
            correlation: i64,
            message_type: u32,
            options: i32,
            payload_ptr: *const u8,
            payload_len: usize,
        ) -> i64;
        pub unsafe fn receive_reply(
            correlation: i64,
            timeout_ms: i64,
            header_ptr: *mut u8,
            buffer_ptr: *mut u8,
            buffer_len: usize,
        ) -> i64;
        pub unsafe fn broadcast(
            message_type: u32,
            options: i32,
            payload_ptr: *const u8,
            payload_len: usize,
        ) -> i64;
        pub unsafe fn cap_handles(buffer_ptr: *mut u32, max: usize) -> i64;
        pub unsafe fn cap_inspect(handle: u32, out_ptr: *mut u8, out_len: usize) -> i64;
        pub unsafe fn cap_delegate(
            handle: u32,
            target: i64,
            rights: i32,
            expires_at: i64,
            max_uses: i64,
            scope_ptr: *const u8,
            scope_len: usize,
        ) -> i64;
        pub safe fn cap_revoke(handle: u32, mode: i32) -> i64;
        pub unsafe fn send_receive(
            target: i64,
            correlation: i64,
            message_type: u32,
            options: i32,
            payload_ptr: *const u8,
            payload_len: usize,
            wait_for: i64,
            timeout_ms: i64,
            header_ptr: *mut u8,
            buffer_ptr: *mut u8,
            buffer_len: usize,
        ) -> i64;
    }
}

fn check(raw: i64) -> Result<u64, ErrorCode> {
    ErrorCode::from_syscall_return(raw)
}

/// What a receive-family call waited for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// Any message, or any of one type.
    Message,
    /// The answer to one message this process sent.
    Answer,
}

/// Turns a receive-family result, the header the kernel wrote (zeroed
/// before the call) and the buffer it filled into a [`Message`].
///
/// A negative result with the `DELIVERY_FAILURE` flag in the header is a
/// kernel notice the wait took (ABI `receive`): it is gone from the
/// mailbox, so it is never confused with a message left queued for want of
/// room. Waiting for any message, it is that message (its payload a
/// [`DeliveryFailure`](estalogic_abi::messages::DeliveryFailure), as far as
/// the buffer holds it); waiting for an answer, it is `Err` with its code,
/// where `BUFFER_TOO_SMALL` (the request did not fit its receiver's inbox)
/// becomes `MESSAGE_DROPPED`: so `BUFFER_TOO_SMALL` always means the
/// answer is still queued and a larger buffer takes it.
fn received<'a>(
    raw: i64,
    header: &[u8; HEADER_LEN],
    buffer: &'a [u8],
    waited: Waited,
) -> Result<Message<'a>, ErrorCode> {
    let len = match check(raw) {
        Ok(len) => len as usize,
        Err(code) => {
            let notice = Header::decode(header)
                .ok()
                .filter(|(decoded, _)| decoded.flags.contains(Flags::DELIVERY_FAILURE));
            return match (notice, waited) {
                (Some((header, len)), Waited::Message) => Ok(Message {
                    header,
                    payload: &buffer[..(len as usize).min(buffer.len())],
                }),
                (Some(_), Waited::Answer) if code == ErrorCode::BUFFER_TOO_SMALL => {
                    Err(ErrorCode::MESSAGE_DROPPED)
                }
                _ => Err(code),
            };
        }
    };
    let (header, _) = Header::decode(header).map_err(|_| ErrorCode::INTERNAL)?;
    Ok(Message {
        header,
        payload: &buffer[..len],
    })
}

/// Ends the calling process with `code` (0 means success).
pub fn exit(code: i32) -> ! {
    raw::exit(code)
}

/// Gives up the rest of this time slice.
pub fn yield_now() {
    raw::yield_now();
}

/// The caller's own pid.
pub fn self_pid() -> Pid {
    Pid::from_u64(raw::self_pid() as u64)
}

/// The kernel clock in nanoseconds since boot; `PERMISSION_DENIED`
/// without the `time:read` capability.
pub fn now_nanos() -> Result<u64, ErrorCode> {
    check(raw::clock_now())
}

/// Finds the running process of the module called `name`.
pub fn lookup(name: &str) -> Result<Pid, ErrorCode> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let raw = unsafe { raw::lookup(name.as_ptr(), name.len()) };
    check(raw).map(Pid::from_u64)
}

/// Sends `payload` as a message of type `message_type` at priority 0;
/// returns the message's sequence number.
pub fn send(to: Pid, message_type: MessageType, payload: &[u8]) -> Result<u64, ErrorCode> {
    send_with(
        to,
        message_type,
        MessagePriority::default(),
        Flags::NONE,
        payload,
    )
}

/// Sends with an explicit priority and guest flags (`REPLY`, `ACK_REQUESTED`).
pub fn send_with(
    to: Pid,
    message_type: MessageType,
    priority: MessagePriority,
    flags: Flags,
    payload: &[u8],
) -> Result<u64, ErrorCode> {
    let options = send_options::pack(priority, flags);
    // SAFETY: the pointer and length describe `payload`, which outlives the call.
    let raw = unsafe {
        raw::send(
            to.to_u64() as i64,
            message_type.0,
            options,
            payload.as_ptr(),
            payload.len(),
        )
    };
    check(raw)
}

/// Waits forever for the next message of any type.
pub fn receive(buffer: &mut [u8]) -> Result<Message<'_>, ErrorCode> {
    receive_with(None, Wait::Forever, buffer)
}

/// Waits for the next message, optionally only of one type, up to `wait`.
///
/// If the payload does not fit in `buffer` this fails with
/// `BUFFER_TOO_SMALL` and the message stays queued, so the caller can retry
/// with a larger buffer (payloads are at most 1 MiB). A kernel notice that
/// a message of this process was not delivered comes as a message with
/// the `DELIVERY_FAILURE` flag (its correlation the failed message's
/// sequence number, its payload a
/// [`DeliveryFailure`](estalogic_abi::messages::DeliveryFailure) with the
/// reason), as a handler process sees it.
pub fn receive_with(
    only: Option<MessageType>,
    wait: Wait,
    buffer: &mut [u8],
) -> Result<Message<'_>, ErrorCode> {
    let mut header = [0u8; HEADER_LEN];
    let filter = only.map_or(0, |t| t.0);
    // SAFETY: both pointers describe buffers we own for the duration of the
    // call; the kernel writes at most HEADER_LEN and buffer.len() bytes.
    let raw = unsafe {
        raw::receive(
            filter,
            wait.to_abi(),
            header.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
        )
    };
    received(raw, &header, buffer, Waited::Message)
}

/// Answers `request` (a message this process received) with a `REPLY`
/// carrying the request's sequence number as correlation id.
pub fn reply(
    request: &Header,
    message_type: MessageType,
    payload: &[u8],
) -> Result<u64, ErrorCode> {
    // SAFETY: the pointer and length describe `payload`.
    let raw = unsafe {
        raw::reply(
            request.source.to_u64() as i64,
            request.sequence as i64,
            message_type.0,
            send_options::pack(request.priority, Flags::NONE),
            payload.as_ptr(),
            payload.len(),
        )
    };
    check(raw)
}

/// Waits for the answer to the message this process sent with sequence
/// number `sequence`: a reply, an acknowledgement, or — as `Err` with its
/// code — the kernel's notice that the message was not delivered (a
/// message too large for its receiver's inbox is `MESSAGE_DROPPED`, so
/// that `BUFFER_TOO_SMALL` means only an answer too large for `buffer`,
/// left queued for a retry with a larger one). Any process can send a
/// reply with that correlation: check the answer's `header.source` when it
/// matters ([`call`] accepts only its target).
pub fn receive_reply(
    sequence: u64,
    wait: Wait,
    buffer: &mut [u8],
) -> Result<Message<'_>, ErrorCode> {
    let mut header = [0u8; HEADER_LEN];
    // SAFETY: both pointers describe buffers we own for the duration of the
    // call; the kernel writes at most HEADER_LEN and buffer.len() bytes.
    let raw = unsafe {
        raw::receive_reply(
            sequence as i64,
            wait.to_abi(),
            header.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
        )
    };
    received(raw, &header, buffer, Waited::Answer)
}

/// The `send_receive` syscall: sends (with `correlation` in the header),
/// then waits for `wait_for` (-1: the answer to what was just sent; 0: any
/// message; otherwise that message type).
#[allow(clippy::too_many_arguments)]
fn send_receive<'a>(
    to: Pid,
    correlation: u64,
    message_type: MessageType,
    options: i32,
    payload: &[u8],
    wait_for: i64,
    wait: Wait,
    buffer: &'a mut [u8],
) -> Result<Message<'a>, ErrorCode> {
    let mut header = [0u8; HEADER_LEN];
    // SAFETY: the payload pointer and length describe `payload`; the header
    // and buffer pointers describe buffers we own for the duration of the
    // call, and the kernel writes at most HEADER_LEN and buffer.len() bytes.
    let raw = unsafe {
        raw::send_receive(
            to.to_u64() as i64,
            correlation as i64,
            message_type.0,
            options,
            payload.as_ptr(),
            payload.len(),
            wait_for,
            wait.to_abi(),
            header.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
        )
    };
    let waited = if wait_for == -1 {
        Waited::Answer
    } else {
        Waited::Message
    };
    received(raw, &header, buffer, waited)
}

/// Request/reply in one call: sends `payload` to `to` and waits for its
/// reply (or acknowledgement, or the kernel's notice that it was not
/// delivered, as `Err` with its code, as [`receive_reply`] gives it); only
/// `to` can answer. If `to` takes the request and ends without replying
/// (returns, traps, is stopped), the kernel answers for it:
/// `Err(NO_SUCH_PROCESS)`. A reply too large for `buffer` is
/// `Err(BUFFER_TOO_SMALL)` and stays queued: [`peek`] gives its header
/// (its correlation is the request's sequence number) and
/// [`receive_reply`] takes it with a larger buffer. One syscall,
/// so the kernel can hand the CPU straight to `to` and back. If the wait
/// times out the request was still sent, and a late reply is queued like
/// any message: when that matters, use [`send`] and [`receive_reply`],
/// which keep the sequence number (and check the answer's source: any
/// process may reply to a sequence number it guesses).
pub fn call<'a>(
    to: Pid,
    message_type: MessageType,
    payload: &[u8],
    wait: Wait,
    buffer: &'a mut [u8],
) -> Result<Message<'a>, ErrorCode> {
    let options = send_options::pack(MessagePriority::default(), Flags::NONE);
    send_receive(to, 0, message_type, options, payload, -1, wait, buffer)
}

/// A server's turn in one call: replies to `request` (as [`reply`] does),
/// then waits for the next message, of type `only` if given.
pub fn reply_and_receive<'a>(
    request: &Header,
    message_type: MessageType,
    payload: &[u8],
    only: Option<MessageType>,
    wait: Wait,
    buffer: &'a mut [u8],
) -> Result<Message<'a>, ErrorCode> {
    let options = send_options::pack(request.priority, Flags::REPLY);
    let wait_for = only.map_or(0, |t| i64::from(t.0));
    send_receive(
        request.source,
        request.sequence,
        message_type,
        options,
        payload,
        wait_for,
        wait,
        buffer,
    )
}

/// Sends a copy of `payload` to every other process that may receive;
/// returns how many accepted it.
pub fn broadcast(message_type: MessageType, payload: &[u8]) -> Result<u64, ErrorCode> {
    // SAFETY: the pointer and length describe `payload`.
    let raw = unsafe {
        raw::broadcast(
            message_type.0,
            send_options::pack(MessagePriority::default(), Flags::NONE),
            payload.as_ptr(),
            payload.len(),
        )
    };
    check(raw)
}

/// The header and payload length of the message `receive_with(only, ..)`
/// would take next, without taking it; `NOT_FOUND` if there is none.
pub fn peek(only: Option<MessageType>) -> Result<(Header, usize), ErrorCode> {
    let mut header = [0u8; HEADER_LEN];
    // SAFETY: the pointer describes a HEADER_LEN buffer we own.
    let raw = unsafe { raw::peek(only.map_or(0, |t| t.0), header.as_mut_ptr()) };
    let len = check(raw)? as usize;
    let (header, _) = Header::decode(&header).map_err(|_| ErrorCode::INTERNAL)?;
    Ok((header, len))
}

/// A capability handle: an index into this process's own handle table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Handle(pub u32);

/// Fills `out` with this process's capability handles; returns how many it
/// holds in all (which may be more than fit).
pub fn cap_handles(out: &mut [Handle]) -> Result<usize, ErrorCode> {
    // SAFETY: `Handle` is a transparent `u32`, so `out` is `out.len()`
    // u32 slots, and the kernel writes at most that many.
    let total = check(unsafe { raw::cap_handles(out.as_mut_ptr().cast::<u32>(), out.len()) })?;
    Ok(total as usize)
}

/// Describes a capability: its record and its scope text (in `buffer`).
pub fn cap_inspect(
    handle: Handle,
    buffer: &mut [u8],
) -> Result<(estalogic_abi::capabilities::CapabilityRecord, &str), ErrorCode> {
    use estalogic_abi::capabilities::{CapabilityRecord, RECORD_HEAD_LEN};
    // SAFETY: the kernel writes at most buffer.len() bytes into `buffer`.
    let len =
        check(unsafe { raw::cap_inspect(handle.0, buffer.as_mut_ptr(), buffer.len()) })? as usize;
    let record = CapabilityRecord::decode_head(&buffer[..len]).ok_or(ErrorCode::INTERNAL)?;
    let scope =
        core::str::from_utf8(&buffer[RECORD_HEAD_LEN..len]).map_err(|_| ErrorCode::INTERNAL)?;
    Ok((record, scope))
}

/// Gives `to` an attenuated copy of a capability; returns the copy's handle
/// in `to`'s table (tell `to` about it in a message). `None` keeps the
/// source's expiry or use limit; an empty scope keeps the source's.
pub fn cap_delegate(
    handle: Handle,
    to: Pid,
    rights: estalogic_abi::Rights,
    expires_at: Option<u64>,
    max_uses: Option<u64>,
    scope: &str,
) -> Result<Handle, ErrorCode> {
    let keep = |value: Option<u64>| value.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
    // SAFETY: the pointer and length describe `scope`.
    let raw = unsafe {
        raw::cap_delegate(
            handle.0,
            to.to_u64() as i64,
            rights.bits() as i32,
            keep(expires_at),
            keep(max_uses),
            scope.as_ptr(),
            scope.len(),
        )
    };
    check(raw).map(|h| Handle(h as u32))
}

/// Revokes everything derived from a capability, and with
/// `including_itself` the capability too; returns how many were revoked.
pub fn cap_revoke(handle: Handle, including_itself: bool) -> Result<u64, ErrorCode> {
    check(raw::cap_revoke(
        handle.0,
        if including_itself { 0 } else { 1 },
    ))
}

/// Closes a capability handle: it leaves this process's table, and the
/// capability and everything derived from it are revoked (as at exit);
/// returns how many were revoked. Needs no right.
pub fn cap_close(handle: Handle) -> Result<u64, ErrorCode> {
    check(raw::cap_revoke(handle.0, 2))
}

/// Writes a line to the kernel log (level 2 = info).
pub fn log(message: &str) {
    log_at(2, message);
}

/// Writes a line to the kernel log at `level`: 0 error, 1 warn, 2 info,
/// 3 debug, 4 trace.
pub fn log_at(level: i32, message: &str) {
    // SAFETY: the pointer and length describe `message`.
    unsafe {
        raw::log(level, message.as_ptr(), message.len());
    }
}

/// Hands the host a notification: `kind` (this service's own vocabulary)
/// and `payload` (at most 1 MiB, copied at once). `PERMISSION_DENIED`
/// without `notifications:send`; `LIMIT_REACHED` while the kernel already
/// holds as many notifications as it may that the host has not taken (the
/// notification is not kept: try again later, or give up).
pub fn notify(kind: i32, payload: &[u8]) -> Result<(), ErrorCode> {
    // SAFETY: the pointer and length describe `payload`, which outlives the call.
    check(unsafe { raw::notify(kind, payload.as_ptr(), payload.len()) }).map(|_| ())
}

/// A fixed-size text buffer for formatting log lines without an allocator.
pub struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuffer {
            bytes: [0; 256],
            len: 0,
        }
    }

    /// The text written so far (cut at 256 bytes, on a char boundary).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.bytes[..self.len]) {
            Ok(text) => text,
            Err(error) => {
                // Only a multi-byte character cut at the end can be invalid.
                let valid = error.valid_up_to();
                core::str::from_utf8(&self.bytes[..valid]).unwrap_or("")
            }
        }
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Formats and logs a line at info level: `log!("got {} messages", n)`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let mut line = $crate::LineBuffer::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        $crate::log(line.as_str());
    }};
}

#[cfg(feature = "panic-handler")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = LineBuffer::new();
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("panic: {}", info));
    log_at(0, line.as_str());
    core::arch::wasm32::unreachable()
}
