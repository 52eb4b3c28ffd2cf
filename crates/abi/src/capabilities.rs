//! The capability record `cap_inspect` writes: a fixed 48-byte little-endian
//! head followed by the scope text.
//!
//! | offset | size | field                                                |
//! |-------:|-----:|------------------------------------------------------|
//! |      0 |    1 | resource kind ([`ResourceKind`] as `u8`)             |
//! |      1 |    1 | revoked (0 or 1)                                     |
//! |      2 |    2 | rights ([`Rights`] bits)                             |
//! |      4 |    4 | delegation depth (0 = granted by the kernel)         |
//! |      8 |    8 | uses so far (see below)                              |
//! |     16 |    8 | not before (kernel clock ns; `u64::MAX` = none)      |
//! |     24 |    8 | expires at (kernel clock ns; `u64::MAX` = none)      |
//! |     32 |    8 | max uses (`u64::MAX` = unlimited)                    |
//! |     40 |    4 | reserved, zero                                       |
//! |     44 |    4 | scope text length in bytes                           |
//! |     48 |    n | scope text: `*` for everything, else `names:a,b` or  |
//! |        |      | `prefixes:data/x,logs`                               |
//!
//! `uses` counts the checks the kernel's capability engine made of the
//! capability and of everything derived from it. Every check of a limited
//! capability (a use limit or a validity window anywhere up its chain) is
//! one, so for those it is exact; a process's repeated checks of an
//! unlimited one are answered from its own cache after the first (until a
//! revocation anywhere) and are not counted.

use crate::types::{ResourceKind, Rights};

/// Size of the fixed head of a record.
pub const RECORD_HEAD_LEN: usize = 48;

/// A decoded `cap_inspect` record (without the scope text, which follows
/// the head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapabilityRecord {
    /// What the capability refers to, as [`ResourceKind`]'s `u8` value.
    pub resource_kind: u8,
    /// Whether it was revoked.
    pub revoked: bool,
    /// What it allows.
    pub rights: Rights,
    /// Delegation steps from the kernel's grant.
    pub depth: u32,
    /// Checks counted so far (exact for limited capabilities; see the
    /// module docs).
    pub uses: u64,
    /// Valid from (ns), if limited.
    pub not_before: Option<u64>,
    /// Valid until (ns, exclusive), if limited.
    pub expires_at: Option<u64>,
    /// Use limit, if any.
    pub max_uses: Option<u64>,
    /// Length of the scope text after the head.
    pub scope_len: u32,
}

fn option(raw: u64) -> Option<u64> {
    (raw != u64::MAX).then_some(raw)
}

impl CapabilityRecord {
    /// The resource kind, if known.
    pub fn resource(&self) -> Option<ResourceKind> {
        Some(match self.resource_kind {
            0 => ResourceKind::Memory,
            1 => ResourceKind::Channel,
            2 => ResourceKind::File,
            3 => ResourceKind::Database,
            4 => ResourceKind::Process,
            5 => ResourceKind::AuditLog,
            6 => ResourceKind::Config,
            7 => ResourceKind::Timer,
            8 => ResourceKind::Network,
            9 => ResourceKind::Custom,
            _ => return None,
        })
    }

    /// Encodes the head.
    pub fn encode_head(&self) -> [u8; RECORD_HEAD_LEN] {
        let mut out = [0u8; RECORD_HEAD_LEN];
        out[0] = self.resource_kind;
        out[1] = self.revoked as u8;
        out[2..4].copy_from_slice(&self.rights.bits().to_le_bytes());
        out[4..8].copy_from_slice(&self.depth.to_le_bytes());
        out[8..16].copy_from_slice(&self.uses.to_le_bytes());
        out[16..24].copy_from_slice(&self.not_before.unwrap_or(u64::MAX).to_le_bytes());
        out[24..32].copy_from_slice(&self.expires_at.unwrap_or(u64::MAX).to_le_bytes());
        out[32..40].copy_from_slice(&self.max_uses.unwrap_or(u64::MAX).to_le_bytes());
        out[44..48].copy_from_slice(&self.scope_len.to_le_bytes());
        out
    }

    /// Decodes a head; `None` if it is short or has undefined bits.
    pub fn decode_head(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < RECORD_HEAD_LEN || bytes[1] > 1 || bytes[40..44] != [0; 4] {
            return None;
        }
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |at: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(word)
        };
        Some(CapabilityRecord {
            resource_kind: bytes[0],
            revoked: bytes[1] == 1,
            rights: Rights::from_bits(u16::from_le_bytes([bytes[2], bytes[3]]))?,
            depth: u32_at(4),
            uses: u64_at(8),
            not_before: option(u64_at(16)),
            expires_at: option(u64_at(24)),
            max_uses: option(u64_at(32)),
            scope_len: u32_at(44),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips() {
        let record = CapabilityRecord {
            resource_kind: ResourceKind::Channel as u8,
            revoked: false,
            rights: Rights::WRITE | Rights::DELEGATE,
            depth: 2,
            uses: 5,
            not_before: None,
            expires_at: Some(1_000),
            max_uses: Some(10),
            scope_len: 7,
        };
        let head = record.encode_head();
        assert_eq!(CapabilityRecord::decode_head(&head), Some(record));
        assert_eq!(record.resource(), Some(ResourceKind::Channel));
        assert_eq!(CapabilityRecord::decode_head(&head[..40]), None);
    }
}
