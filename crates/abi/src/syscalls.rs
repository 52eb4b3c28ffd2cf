//! Syscall numbers, import names and signatures.
//!
//! A guest reaches the kernel only through functions imported from the
//! [`IMPORT_MODULE`] namespace; each is named by [`Syscall::import_name`] and
//! must have exactly the [`Syscall::signature`] given here. The loader rejects
//! a module that imports anything else.
//!
//! Conventions shared by every syscall:
//!
//! 1. Pointers and lengths are `i32` offsets into the guest's memory 0; a
//!    range that does not fit in memory fails with `INVALID_POINTER`.
//! 2. The result is an `i64`: zero or positive is success; negative is the
//!    negated [`ErrorCode`](crate::ErrorCode). Only `exit` returns nothing.
//! 3. A recoverable failure is always a returned code; only a broken
//!    invariant of the machine (a trap) ends the process.

/// The import module name every kernel syscall lives in.
pub const IMPORT_MODULE: &str = "estalogic";

/// The export a handler process's module must have: a function
/// `() -> i64` returning where the kernel writes each message for it,
/// `capacity << 32 | pointer` — the header ([`crate::HEADER_LEN`] bytes) at
/// the pointer, then up to `capacity` bytes of payload.
pub const INBOX_EXPORT: &str = "estalogic_inbox";

/// `receive` timeout that waits forever.
pub const TIMEOUT_INFINITE: i64 = -1;

/// `receive` type filter that accepts any message type.
pub const ANY_MESSAGE_TYPE: i32 = 0;

/// A WebAssembly value type used in syscall signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmType {
    /// `i32`
    I32,
    /// `i64`
    I64,
}

/// Every syscall, numbered. Numbers are stable forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Syscall {
    /// `exit(code: i32)`: ends the calling process with `code`. Never returns.
    Exit = 1,
    /// `yield_now() -> i64`: gives up the rest of the time slice; returns 0.
    Yield = 2,
    /// `self_pid() -> i64`: the caller's pid in wire form.
    SelfPid = 3,
    /// `lookup(name_ptr: i32, name_len: i32) -> i64`: the pid of the running
    /// process whose module has this name, or `NOT_FOUND`.
    Lookup = 4,
    /// `send(target: i64, message_type: i32, options: i32, payload_ptr: i32,
    /// payload_len: i32) -> i64`: queues a message in the target's mailbox and
    /// returns its sequence number. `options` bits 0–2 are the message
    /// priority (0–7); bits 8–23 are header [`Flags`](crate::Flags) (only
    /// `REPLY` and `ACK_REQUESTED` may be set by guests); other bits must be
    /// zero. Fails with `MAILBOX_FULL` when the target's mailbox is full.
    Send = 5,
    /// `receive(type_filter: i32, timeout_ms: i64, header_ptr: i32,
    /// buffer_ptr: i32, buffer_len: i32) -> i64`: takes the first message
    /// (highest priority first, FIFO within a priority) whose type matches
    /// `type_filter` (0 = any), waiting up to `timeout_ms` (-1 = forever,
    /// 0 = don't wait). Writes the 56-byte header at `header_ptr` and the
    /// payload at `buffer_ptr`; returns the payload length. A payload longer
    /// than `buffer_len` fails with `BUFFER_TOO_SMALL`, the header is still
    /// written (so the guest learns the size) and the message stays queued —
    /// except a kernel `DELIVERY_FAILURE` notice, which is always taken: its
    /// payload is written as far as the buffer goes and its error code
    /// (negated) is the result.
    Receive = 6,
    /// `log(level: i32, ptr: i32, len: i32) -> i64`: writes a UTF-8 line to
    /// the kernel log at level 0 (error) .. 4 (trace), at most 64 KiB.
    /// Bytes that are not UTF-8 are written as U+FFFD, not refused: a log
    /// line is for people, and a guest's half-written line is still news.
    Log = 7,
    /// `clock_now() -> i64`: the kernel clock in nanoseconds since boot
    /// (virtual in deterministic mode).
    ClockNow = 8,
    /// `peek(type_filter: i32, header_ptr: i32) -> i64`: writes the header of
    /// the message the same `receive` would take, without taking it, and
    /// returns its payload length; `NOT_FOUND` if there is none. Never waits.
    Peek = 9,
    /// `reply(target: i64, correlation: i64, message_type: i32, options: i32,
    /// payload_ptr: i32, payload_len: i32) -> i64`: answers a request. The
    /// reply carries the `REPLY` flag and `correlation`, which must be the
    /// request's sequence number. Returns the reply's sequence number.
    Reply = 10,
    /// `receive_reply(correlation: i64, timeout_ms: i64, header_ptr: i32,
    /// buffer_ptr: i32, buffer_len: i32) -> i64`: waits for the answer to the
    /// message whose sequence number is `correlation`: a `REPLY`, an `ACK`, or
    /// a kernel `DELIVERY_FAILURE` notice. For a reply or an ack, returns the
    /// payload length; for a delivery failure, returns the failure's error
    /// code (negated) after writing the notice (as much of it as fits).
    ReceiveReply = 11,
    /// `broadcast(message_type: i32, options: i32, payload_ptr: i32,
    /// payload_len: i32) -> i64`: sends a copy to every other live process
    /// that may receive messages; returns how many mailboxes accepted it.
    Broadcast = 12,
    /// `cap_handles(buffer_ptr: i32, max: i32) -> i64`: writes up to `max`
    /// of the caller's capability handles (`u32` little-endian each) and
    /// returns how many it holds in all, revoked ones included (until
    /// closed, or dropped by a full table).
    CapHandles = 13,
    /// `cap_inspect(handle: i32, out_ptr: i32, out_len: i32) -> i64`: writes
    /// the capability's [`CapabilityRecord`](crate::capabilities::CapabilityRecord)
    /// and returns its length (`BUFFER_TOO_SMALL` if it does not fit,
    /// `INVALID_ARGUMENT` for a negative `out_len`). A revoked
    /// capability's record says so (`revoked` = 1). `INVALID_HANDLE` for a
    /// handle the caller was never given, or closed.
    CapInspect = 14,
    /// `cap_delegate(handle: i32, target: i64, rights: i32, expires_at: i64,
    /// max_uses: i64, scope_ptr: i32, scope_len: i32) -> i64`: gives the
    /// process `target` an attenuated copy and returns the copy's handle in
    /// the target's table. `rights` must be a subset of the source's; `-1`
    /// for `expires_at` (kernel clock, ns) keeps the source's, and for
    /// `max_uses` gives the uses the source has left (a use counts against
    /// the source and every capability it came from, so the fewest left up
    /// its chain); an empty scope keeps the source's, otherwise it is a
    /// comma-separated list (directory prefixes for files, names
    /// otherwise) inside the source's. Needs the `delegate` right. The
    /// handle is checked before the target: a bad one is `INVALID_HANDLE`
    /// (and audited) whatever the target, and only then is a target that
    /// does not exist `NO_SUCH_PROCESS`.
    CapDelegate = 15,
    /// `cap_revoke(handle: i32, mode: i32) -> i64`: mode 0 revokes the
    /// capability and everything derived from it; mode 1 only what was
    /// derived from it (both need the `revoke` right); mode 2 closes the
    /// handle: it leaves the caller's table, and the capability and
    /// everything derived from it are revoked, as at exit (no right
    /// needed; the number is never reused). Returns how many capabilities
    /// were revoked.
    CapRevoke = 16,
    /// `send_receive(target: i64, correlation: i64, message_type: i32,
    /// options: i32, payload_ptr: i32, payload_len: i32, wait_for: i64,
    /// timeout_ms: i64, header_ptr: i32, buffer_ptr: i32, buffer_len: i32)
    /// -> i64`: a send and then a receive in one call, the request/response
    /// pattern's round trip (a client's call, a server's answer-and-wait).
    /// The send is `send`'s, with `correlation` in the header (a reply sets
    /// the `REPLY` flag in `options` and passes the request's sequence
    /// number, as `reply` does). Then it waits as `receive` does for `wait_for` = 0 (any message) or
    /// a message type (1 to 2^32 - 1), or as `receive_reply` does for the
    /// answer to the message just sent with `wait_for` = -1 — a reply or
    /// ack from the process it went to, or the kernel's delivery-failure
    /// notice; no other process can answer in its place. The wait's
    /// arguments and capability are checked first, so a bad one fails with
    /// nothing sent; a send that fails returns its code without waiting.
    /// Returns what the wait returns. A wait that times out leaves the
    /// message sent; an answer that comes later is queued like any message
    /// (use `send` and `receive_reply` to keep the sequence number).
    SendReceive = 17,
    /// `notify(kind: i32, payload_ptr: i32, payload_len: i32) -> i64`: hands
    /// a notification to the host (a desktop shell, a tool embedding the
    /// kernel): `kind` (any `i32`, the service's own vocabulary) and up to
    /// 1 MiB of payload, copied at once. The host takes them in order
    /// (`Kernel::subscribe_notifications`); the kernel holds at most
    /// `MAX_PENDING_NOTIFICATIONS` of them, or 64 MiB, that no host has
    /// taken yet, and refuses one past either with `LIMIT_REACHED`, never
    /// dropping one it accepted. Returns 0.
    Notify = 18,
}

impl Syscall {
    /// Every syscall, in number order.
    pub const ALL: [Syscall; 18] = [
        Syscall::Exit,
        Syscall::Yield,
        Syscall::SelfPid,
        Syscall::Lookup,
        Syscall::Send,
        Syscall::Receive,
        Syscall::Log,
        Syscall::ClockNow,
        Syscall::Peek,
        Syscall::Reply,
        Syscall::ReceiveReply,
        Syscall::Broadcast,
        Syscall::CapHandles,
        Syscall::CapInspect,
        Syscall::CapDelegate,
        Syscall::CapRevoke,
        Syscall::SendReceive,
        Syscall::Notify,
    ];

    /// The function name the guest imports from [`IMPORT_MODULE`].
    pub const fn import_name(self) -> &'static str {
        match self {
            Syscall::Exit => "exit",
            Syscall::Yield => "yield_now",
            Syscall::SelfPid => "self_pid",
            Syscall::Lookup => "lookup",
            Syscall::Send => "send",
            Syscall::Receive => "receive",
            Syscall::Log => "log",
            Syscall::ClockNow => "clock_now",
            Syscall::Peek => "peek",
            Syscall::Reply => "reply",
            Syscall::ReceiveReply => "receive_reply",
            Syscall::Broadcast => "broadcast",
            Syscall::CapHandles => "cap_handles",
            Syscall::CapInspect => "cap_inspect",
            Syscall::CapDelegate => "cap_delegate",
            Syscall::CapRevoke => "cap_revoke",
            Syscall::SendReceive => "send_receive",
            Syscall::Notify => "notify",
        }
    }

    /// Parameter and result types of the import.
    pub const fn signature(self) -> (&'static [WasmType], &'static [WasmType]) {
        use WasmType::{I32, I64};
        match self {
            Syscall::Exit => (&[I32], &[]),
            Syscall::Yield | Syscall::SelfPid | Syscall::ClockNow => (&[], &[I64]),
            Syscall::Lookup => (&[I32, I32], &[I64]),
            Syscall::Send => (&[I64, I32, I32, I32, I32], &[I64]),
            Syscall::Receive => (&[I32, I64, I32, I32, I32], &[I64]),
            Syscall::Log | Syscall::Notify => (&[I32, I32, I32], &[I64]),
            Syscall::Peek => (&[I32, I32], &[I64]),
            Syscall::Reply => (&[I64, I64, I32, I32, I32, I32], &[I64]),
            Syscall::ReceiveReply => (&[I64, I64, I32, I32, I32], &[I64]),
            Syscall::Broadcast => (&[I32, I32, I32, I32], &[I64]),
            Syscall::CapHandles => (&[I32, I32], &[I64]),
            Syscall::CapInspect => (&[I32, I32, I32], &[I64]),
            Syscall::CapDelegate => (&[I32, I64, I32, I64, I64, I32, I32], &[I64]),
            Syscall::CapRevoke => (&[I32, I32], &[I64]),
            Syscall::SendReceive => (
                &[I64, I64, I32, I32, I32, I32, I64, I64, I32, I32, I32],
                &[I64],
            ),
        }
    }

    /// Finds a syscall by its import name.
    pub fn from_import_name(name: &str) -> Option<Syscall> {
        Syscall::ALL.into_iter().find(|s| s.import_name() == name)
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;

    fn try_from(raw: u32) -> Result<Self, u32> {
        Ok(match raw {
            1 => Syscall::Exit,
            2 => Syscall::Yield,
            3 => Syscall::SelfPid,
            4 => Syscall::Lookup,
            5 => Syscall::Send,
            6 => Syscall::Receive,
            7 => Syscall::Log,
            8 => Syscall::ClockNow,
            9 => Syscall::Peek,
            10 => Syscall::Reply,
            11 => Syscall::ReceiveReply,
            12 => Syscall::Broadcast,
            13 => Syscall::CapHandles,
            14 => Syscall::CapInspect,
            15 => Syscall::CapDelegate,
            16 => Syscall::CapRevoke,
            17 => Syscall::SendReceive,
            18 => Syscall::Notify,
            other => return Err(other),
        })
    }
}

/// Decoded `options` argument of [`Syscall::Send`].
pub mod send_options {
    use crate::messages::Flags;
    use crate::types::MessagePriority;

    /// Flags a guest may set itself; the kernel sets the others.
    pub const GUEST_FLAGS: Flags = Flags::from_bits(0b11).unwrap();

    /// Packs a priority and flags into the `options` word.
    pub const fn pack(priority: MessagePriority, flags: Flags) -> i32 {
        (priority.get() as i32) | ((flags.bits() as i32) << 8)
    }

    /// Unpacks the `options` word, or `None` if a reserved bit or a
    /// kernel-only flag is set.
    pub const fn unpack(options: i32) -> Option<(MessagePriority, Flags)> {
        let raw = options as u32;
        if raw & !0x00FF_FF07 != 0 {
            return None;
        }
        let priority = match MessagePriority::new((raw & 0x7) as u8) {
            Some(p) => p,
            None => return None,
        };
        let flags = match Flags::from_bits((raw >> 8) as u16) {
            Some(f) => f,
            None => return None,
        };
        if flags.bits() & !GUEST_FLAGS.bits() != 0 {
            return None;
        }
        Some((priority, flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flags, MessagePriority};

    #[test]
    fn numbers_round_trip_and_names_are_unique() {
        for syscall in Syscall::ALL {
            assert_eq!(Syscall::try_from(syscall as u32), Ok(syscall));
            assert_eq!(
                Syscall::from_import_name(syscall.import_name()),
                Some(syscall)
            );
        }
        assert_eq!(Syscall::try_from(0), Err(0));
        assert_eq!(Syscall::try_from(999), Err(999));
        assert_eq!(Syscall::from_import_name("fd_write"), None);
    }

    #[test]
    fn send_options_pack_and_reject_reserved_bits() {
        let p = MessagePriority::new(6).unwrap();
        let packed = send_options::pack(p, Flags::ACK_REQUESTED);
        assert_eq!(
            send_options::unpack(packed),
            Some((p, Flags::ACK_REQUESTED))
        );
        assert_eq!(send_options::unpack(0x08), None, "bit 3 is reserved");
        assert_eq!(
            send_options::unpack((Flags::BROADCAST.bits() as i32) << 8),
            None,
            "kernel-only flag"
        );
        assert_eq!(send_options::unpack(i32::MIN), None);
    }
}
