//! The message wire format: a fixed 56-byte little-endian header followed by
//! the payload, plus the registry of message types.
//!
//! # Header layout
//!
//! Every multi-byte field is little-endian.
//!
//! | offset | size | field          | rules                                            |
//! |-------:|-----:|----------------|--------------------------------------------------|
//! |      0 |    1 | version        | must be [`WIRE_VERSION`] (1)                     |
//! |      1 |    1 | priority       | 0 (lowest) ..= 7 (highest)                       |
//! |      2 |    2 | flags          | only bits defined in [`Flags`] may be set        |
//! |      4 |    4 | message type   | see [`MessageType`]                              |
//! |      8 |    8 | source pid     | [`Pid::to_u64`](crate::Pid::to_u64) of the sender |
//! |     16 |    8 | target pid     | the receiver                                     |
//! |     24 |    8 | sequence       | per-sender counter, assigned by the kernel       |
//! |     32 |    8 | timestamp      | kernel clock at send, nanoseconds since boot     |
//! |     40 |    8 | correlation id | request/reply pairing; 0 means none              |
//! |     48 |    4 | payload length | bytes that follow the header; ≤ [`MAX_PAYLOAD_LEN`] |
//! |     52 |    4 | reserved       | must be zero                                     |
//!
//! The whole message is exactly `HEADER_LEN + payload length` bytes; a
//! decoder rejects anything shorter or longer.

use crate::types::{MessagePriority, Pid};
use core::fmt;

/// Size of the encoded header in bytes.
pub const HEADER_LEN: usize = 56;
/// The only wire version this crate encodes and accepts.
pub const WIRE_VERSION: u8 = 1;
/// Largest payload a message may carry: 1 MiB.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// A message type. Types below [`MessageType::FIRST_SERVICE_TYPE`] are
/// defined by this ABI; services register their own above it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageType(pub u32);

impl MessageType {
    /// Liveness probe.
    pub const PING: MessageType = MessageType(0x0001);
    /// Answer to [`MessageType::PING`].
    pub const PONG: MessageType = MessageType(0x0002);
    /// Ask an accrual engine to compute earned sick time.
    pub const ACCRUAL_REQUEST: MessageType = MessageType(0x0010);
    /// The accrual engine's answer.
    pub const ACCRUAL_RESPONSE: MessageType = MessageType(0x0011);
    /// Opens an audit stream.
    pub const AUDIT_START: MessageType = MessageType(0x0020);
    /// One audit record.
    pub const AUDIT_RECORD: MessageType = MessageType(0x0021);
    /// Closes an audit stream.
    pub const AUDIT_END: MessageType = MessageType(0x0022);
    /// A supervised process ended. Sent by the kernel to the supervisor;
    /// payload: [`ExitNotice`].
    pub const EXIT_NOTIFICATION: MessageType = MessageType(0xFF01);
    /// A handler process started: the kernel's first message to every
    /// handler process (source: the kernel, empty payload).
    pub const STARTED: MessageType = MessageType(0xFF02);
    /// The kernel is shutting down; finish up and exit.
    pub const SYSTEM_SHUTDOWN: MessageType = MessageType(0xFFFF);
    /// The first type number services may register for themselves.
    pub const FIRST_SERVICE_TYPE: u32 = 0x1000;

    /// The registered name of an ABI-defined type.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0001 => "PING",
            0x0002 => "PONG",
            0x0010 => "ACCRUAL_REQUEST",
            0x0011 => "ACCRUAL_RESPONSE",
            0x0020 => "AUDIT_START",
            0x0021 => "AUDIT_RECORD",
            0x0022 => "AUDIT_END",
            0xFF01 => "EXIT_NOTIFICATION",
            0xFF02 => "STARTED",
            0xFFFF => "SYSTEM_SHUTDOWN",
            _ => return None,
        })
    }
}

/// The name of a registered type, else `MessageType(0x1234)`; padded to
/// the formatter's width, so `{:<16?}` lines a column up.
impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.pad(name),
            None => {
                // `MessageType(0xffffffff)` at most; no allocation, as the
                // crate may be built without `alloc`.
                let mut text = StackText::<24>::new();
                fmt::Write::write_fmt(&mut text, format_args!("MessageType({:#06x})", self.0))?;
                f.pad(text.as_str())
            }
        }
    }
}

/// A string of at most `N` bytes on the stack, written with
/// [`fmt::Write`] (which fails once it is full).
struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are appended, so the bytes are UTF-8.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Header flag bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// This message answers the request named by its correlation id.
    pub const REPLY: Flags = Flags(1 << 0);
    /// The sender asks for an acknowledgement when the message is received.
    pub const ACK_REQUESTED: Flags = Flags(1 << 1);
    /// This message is an acknowledgement.
    pub const ACK: Flags = Flags(1 << 2);
    /// The message was sent to every process that accepts its type.
    pub const BROADCAST: Flags = Flags(1 << 3);
    /// A kernel notice that an earlier message could not be delivered.
    pub const DELIVERY_FAILURE: Flags = Flags(1 << 4);
    /// Set by the kernel on a call (`send_receive` waiting for the answer):
    /// the sender waits for this message's answer. A receiver that takes
    /// it and ends without replying has it answered for it, with a
    /// `DELIVERY_FAILURE` notice (`NO_SUCH_PROCESS`). Guests cannot set it.
    pub const CALL: Flags = Flags(1 << 5);
    /// Every defined flag.
    pub const ALL: Flags = Flags(0x3F);

    /// Builds flags from raw bits, or `None` if an undefined bit is set.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True if every flag in `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#06x})", self.0)
    }
}

/// Payload of a kernel `DELIVERY_FAILURE` notice (16 bytes, little-endian):
/// the error code (`u32`), the intended target's pid (`u64`), and the
/// original message type (`u32`). The notice's correlation id is the failed
/// message's sequence number and its type is the original type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// Why the message was not delivered.
    pub code: crate::ErrorCode,
    /// Where it was going.
    pub target: Pid,
    /// Its type.
    pub message_type: MessageType,
}

impl DeliveryFailure {
    /// Encoded size.
    pub const LEN: usize = 16;

    /// Encodes the notice payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&self.code.0.to_le_bytes());
        out[4..12].copy_from_slice(&self.target.to_u64().to_le_bytes());
        out[12..16].copy_from_slice(&self.message_type.0.to_le_bytes());
        out
    }

    /// Decodes a notice payload.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        Some(DeliveryFailure {
            code: crate::ErrorCode(u32_at(bytes, 0)),
            target: Pid::from_u64(u64_at(bytes, 4)),
            message_type: MessageType(u32_at(bytes, 12)),
        })
    }
}

/// Payload of an `EXIT_NOTIFICATION` (16 bytes, little-endian): the pid
/// that ended (`u64`), how (`u32`: 0 exited, 1 trapped, 2 stopped), and the
/// exit code or error code (`i32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitNotice {
    /// The process that ended.
    pub pid: Pid,
    /// 0 exited, 1 trapped, 2 stopped by the kernel.
    pub kind: u32,
    /// The exit code (kind 0) or error code (kinds 1 and 2).
    pub code: i32,
}

impl ExitNotice {
    /// Encoded size.
    pub const LEN: usize = 16;

    /// Encodes the notice payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..8].copy_from_slice(&self.pid.to_u64().to_le_bytes());
        out[8..12].copy_from_slice(&self.kind.to_le_bytes());
        out[12..16].copy_from_slice(&self.code.to_le_bytes());
        out
    }

    /// Decodes a notice payload.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        Some(ExitNotice {
            pid: Pid::from_u64(u64_at(bytes, 0)),
            kind: u32_at(bytes, 8),
            code: u32_at(bytes, 12) as i32,
        })
    }
}

/// A decoded message header (everything but the payload length, which is
/// implied by the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Delivery priority.
    pub priority: MessagePriority,
    /// Flag bits.
    pub flags: Flags,
    /// What the payload means.
    pub message_type: MessageType,
    /// The sender.
    pub source: Pid,
    /// The receiver.
    pub target: Pid,
    /// Per-sender sequence number.
    pub sequence: u64,
    /// Kernel clock at send, nanoseconds since boot.
    pub timestamp: u64,
    /// Request/reply pairing; 0 means none.
    pub correlation: u64,
}

/// Why bytes could not be decoded as a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The version byte is not [`WIRE_VERSION`].
    UnknownVersion(u8),
    /// A flag bit outside [`Flags::ALL`] is set.
    UnknownFlags(u16),
    /// The priority byte is above 7.
    PriorityOutOfRange(u8),
    /// The reserved word is not zero.
    ReservedNotZero(u32),
    /// The declared payload length is over [`MAX_PAYLOAD_LEN`].
    PayloadTooLarge(u32),
    /// The bytes after the header do not match the declared payload length.
    LengthMismatch {
        /// Length in the header.
        declared: u32,
        /// Bytes actually present after the header.
        actual: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { needed, got } => {
                write!(
                    f,
                    "truncated message: header needs {needed} bytes, got {got}"
                )
            }
            DecodeError::UnknownVersion(v) => {
                write!(f, "unknown wire version {v} (expected {WIRE_VERSION})")
            }
            DecodeError::UnknownFlags(bits) => write!(f, "unknown flag bits {bits:#06x}"),
            DecodeError::PriorityOutOfRange(p) => write!(f, "priority {p} is above 7"),
            DecodeError::ReservedNotZero(v) => write!(f, "reserved header word is {v:#x}, not 0"),
            DecodeError::PayloadTooLarge(len) => {
                write!(
                    f,
                    "payload of {len} bytes is over the {MAX_PAYLOAD_LEN}-byte limit"
                )
            }
            DecodeError::LengthMismatch { declared, actual } => write!(
                f,
                "header declares a {declared}-byte payload but {actual} bytes follow"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is over [`MAX_PAYLOAD_LEN`].
    PayloadTooLarge(usize),
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::PayloadTooLarge(len) => {
                write!(
                    f,
                    "payload of {len} bytes is over the {MAX_PAYLOAD_LEN}-byte limit"
                )
            }
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl Header {
    /// Encodes the header for a payload of `payload_len` bytes.
    pub fn encode(&self, payload_len: usize) -> Result<[u8; HEADER_LEN], EncodeError> {
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(EncodeError::PayloadTooLarge(payload_len));
        }
        let mut out = [0u8; HEADER_LEN];
        out[0] = WIRE_VERSION;
        out[1] = self.priority.get();
        out[2..4].copy_from_slice(&self.flags.bits().to_le_bytes());
        out[4..8].copy_from_slice(&self.message_type.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.source.to_u64().to_le_bytes());
        out[16..24].copy_from_slice(&self.target.to_u64().to_le_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.timestamp.to_le_bytes());
        out[40..48].copy_from_slice(&self.correlation.to_le_bytes());
        out[48..52].copy_from_slice(&(payload_len as u32).to_le_bytes());
        // 52..56 reserved, zero.
        Ok(out)
    }

    /// Decodes just the header; returns it with the declared payload length.
    /// Bytes beyond the header are not looked at.
    pub fn decode(bytes: &[u8]) -> Result<(Header, u32), DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        if bytes[0] != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let priority =
            MessagePriority::new(bytes[1]).ok_or(DecodeError::PriorityOutOfRange(bytes[1]))?;
        let flag_bits = u16_at(bytes, 2);
        let flags = Flags::from_bits(flag_bits).ok_or(DecodeError::UnknownFlags(flag_bits))?;
        let reserved = u32_at(bytes, 52);
        if reserved != 0 {
            return Err(DecodeError::ReservedNotZero(reserved));
        }
        let payload_len = u32_at(bytes, 48);
        if payload_len as usize > MAX_PAYLOAD_LEN {
            return Err(DecodeError::PayloadTooLarge(payload_len));
        }
        let header = Header {
            priority,
            flags,
            message_type: MessageType(u32_at(bytes, 4)),
            source: Pid::from_u64(u64_at(bytes, 8)),
            target: Pid::from_u64(u64_at(bytes, 16)),
            sequence: u64_at(bytes, 24),
            timestamp: u64_at(bytes, 32),
            correlation: u64_at(bytes, 40),
        };
        Ok((header, payload_len))
    }
}

/// Encodes a whole message into `out`; returns the number of bytes written.
pub fn encode_into(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let encoded = header.encode(payload.len())?;
    let needed = HEADER_LEN + payload.len();
    if out.len() < needed {
        return Err(EncodeError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    out[..HEADER_LEN].copy_from_slice(&encoded);
    out[HEADER_LEN..needed].copy_from_slice(payload);
    Ok(needed)
}

/// Encodes a whole message into a new vector.
#[cfg(feature = "alloc")]
pub fn encode(header: &Header, payload: &[u8]) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let encoded = header.encode(payload.len())?;
    let mut out = alloc::vec::Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a whole message: the header and its payload, which must fill the
/// rest of `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let (header, declared) = Header::decode(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != declared as usize {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn sample() -> Header {
        Header {
            priority: MessagePriority::new(5).unwrap(),
            flags: Flags::REPLY | Flags::ACK_REQUESTED,
            message_type: MessageType::ACCRUAL_REQUEST,
            source: Pid::new(3, 1),
            target: Pid::new(9, 2),
            sequence: 77,
            timestamp: 123_456_789,
            correlation: 42,
        }
    }

    /// `{:<16?}` (estactl's readable trace) pads a named type and an
    /// unnamed one alike; width, fill, alignment and precision all apply.
    #[test]
    fn message_type_debug_honours_width_and_alignment() {
        use alloc::format;
        assert_eq!(format!("{:?}", MessageType::PING), "PING");
        assert_eq!(format!("{:<16?}|", MessageType::PING), "PING            |");
        assert_eq!(format!("{:>6?}", MessageType::PONG), "  PONG");
        assert_eq!(format!("{:*^8?}", MessageType::PING), "**PING**");
        assert_eq!(format!("{:.2?}", MessageType::PING), "PI");
        assert_eq!(format!("{:?}", MessageType(0x1234)), "MessageType(0x1234)");
        assert_eq!(format!("{:?}", MessageType(0x7)), "MessageType(0x0007)");
        assert_eq!(
            format!("{:<22?}|", MessageType(0x1234)),
            "MessageType(0x1234)   |"
        );
        assert_eq!(
            format!("{:>24?}", MessageType(u32::MAX)),
            " MessageType(0xffffffff)"
        );
        // Narrower than the text: nothing cut, as for a `str`.
        assert_eq!(
            format!("{:<4?}", MessageType(0x1234)),
            "MessageType(0x1234)"
        );
    }

    #[test]
    fn layout_is_byte_exact() {
        let bytes = encode(&sample(), b"hi").unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 2);
        assert_eq!(bytes[0], 1, "version");
        assert_eq!(bytes[1], 5, "priority");
        assert_eq!(&bytes[2..4], &[0x03, 0x00], "flags");
        assert_eq!(&bytes[4..8], &[0x10, 0, 0, 0], "type");
        assert_eq!(&bytes[8..16], &[3, 0, 0, 0, 1, 0, 0, 0], "source pid");
        assert_eq!(&bytes[16..24], &[9, 0, 0, 0, 2, 0, 0, 0], "target pid");
        assert_eq!(bytes[24], 77, "sequence");
        assert_eq!(&bytes[48..52], &[2, 0, 0, 0], "payload length");
        assert_eq!(&bytes[52..56], &[0, 0, 0, 0], "reserved");
        assert_eq!(&bytes[56..], b"hi");
    }

    #[test]
    fn truncated_header_is_rejected() {
        let bytes = encode(&sample(), b"").unwrap();
        assert_eq!(
            decode(&bytes[..HEADER_LEN - 1]),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: HEADER_LEN - 1
            })
        );
        assert_eq!(
            decode(&[]),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: 0
            })
        );
    }

    #[test]
    fn payload_length_mismatch_is_rejected() {
        let mut bytes = encode(&sample(), b"abc").unwrap();
        bytes.push(0);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::LengthMismatch {
                declared: 3,
                actual: 4
            })
        );
        bytes.truncate(HEADER_LEN + 2);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::LengthMismatch {
                declared: 3,
                actual: 2
            })
        );
    }

    #[test]
    fn oversized_payload_is_rejected_both_ways() {
        let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
        assert_eq!(
            encode(&sample(), &big),
            Err(EncodeError::PayloadTooLarge(MAX_PAYLOAD_LEN + 1))
        );
        let mut bytes = encode(&sample(), b"").unwrap();
        bytes[48..52].copy_from_slice(&((MAX_PAYLOAD_LEN as u32) + 1).to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::PayloadTooLarge(MAX_PAYLOAD_LEN as u32 + 1))
        );
        // Exactly 1 MiB is allowed.
        let max = vec![7u8; MAX_PAYLOAD_LEN];
        let bytes = encode(&sample(), &max).unwrap();
        assert_eq!(decode(&bytes).unwrap().1.len(), MAX_PAYLOAD_LEN);
    }

    #[test]
    fn unknown_version_flags_priority_and_reserved_are_rejected() {
        let good = encode(&sample(), b"").unwrap();
        let mut bytes = good.clone();
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownVersion(2)));
        let mut bytes = good.clone();
        bytes[2..4].copy_from_slice(&0x0040u16.to_le_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownFlags(0x0040)));
        let mut bytes = good.clone();
        bytes[1] = 8;
        assert_eq!(decode(&bytes), Err(DecodeError::PriorityOutOfRange(8)));
        let mut bytes = good;
        bytes[55] = 1;
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::ReservedNotZero(0x0100_0000))
        );
    }

    #[test]
    fn encode_into_checks_the_buffer() {
        let mut small = [0u8; HEADER_LEN];
        assert_eq!(
            encode_into(&sample(), b"x", &mut small),
            Err(EncodeError::BufferTooSmall {
                needed: HEADER_LEN + 1,
                available: HEADER_LEN
            })
        );
    }

    fn any_header() -> impl Strategy<Value = Header> {
        (
            0u8..=7,
            0u16..=Flags::ALL.bits(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(priority, flags, ty, src, dst, seq, ts, corr)| Header {
                priority: MessagePriority::new(priority).unwrap(),
                flags: Flags::from_bits(flags).unwrap(),
                message_type: MessageType(ty),
                source: Pid::from_u64(src),
                target: Pid::from_u64(dst),
                sequence: seq,
                timestamp: ts,
                correlation: corr,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(header in any_header(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let bytes = encode(&header, &payload).unwrap();
            let (decoded, decoded_payload) = decode(&bytes).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(decoded_payload, &payload[..]);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Any input either decodes to a header that re-encodes to the
            // same bytes, or is rejected with a typed error.
            if let Ok((header, payload)) = decode(&bytes) {
                let again: Vec<u8> = encode(&header, payload).unwrap();
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
