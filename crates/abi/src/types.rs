//! Core ABI types: process ids with generations, scheduling priority levels,
//! message priorities, capability rights and resource kinds.

use core::fmt;

/// A process id: a slot index plus the generation of that slot.
///
/// When a process exits its slot may be reused, but with a higher
/// generation, so a message addressed to the old process can never reach the
/// new one. On the wire a pid is a `u64`: `generation << 32 | index`.
/// Index 0 is the kernel itself ([`Pid::KERNEL`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid {
    index: u32,
    generation: u32,
}

impl Pid {
    /// The kernel's own pid: the source of messages the kernel sends.
    pub const KERNEL: Pid = Pid {
        index: 0,
        generation: 0,
    };

    /// Builds a pid from its slot index and generation.
    pub const fn new(index: u32, generation: u32) -> Self {
        Pid { index, generation }
    }

    /// The slot index.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The generation of the slot when this process was created.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The wire form: `generation << 32 | index`.
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// Parses the wire form; every `u64` is a syntactically valid pid.
    pub const fn from_u64(raw: u64) -> Self {
        Pid {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({}.{})", self.index, self.generation)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.index, self.generation)
    }
}

/// A scheduling priority level. Higher levels preempt lower ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Runs only when nothing else is ready.
    Idle = 0,
    /// Background work.
    Low = 1,
    /// The default for services.
    Normal = 2,
    /// Latency-sensitive services.
    High = 3,
    /// Hard latency bounds; the highest level aging can reach.
    Realtime = 4,
    /// Kernel-owned services; run to completion.
    System = 5,
}

impl Priority {
    /// All levels from lowest to highest.
    pub const ALL: [Priority; 6] = [
        Priority::Idle,
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Realtime,
        Priority::System,
    ];

    /// The level's lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Priority::Idle => "idle",
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Realtime => "realtime",
            Priority::System => "system",
        }
    }
}

impl TryFrom<u8> for Priority {
    type Error = u8;

    fn try_from(raw: u8) -> Result<Self, u8> {
        Ok(match raw {
            0 => Priority::Idle,
            1 => Priority::Low,
            2 => Priority::Normal,
            3 => Priority::High,
            4 => Priority::Realtime,
            5 => Priority::System,
            other => return Err(other),
        })
    }
}

/// A message's delivery priority, 0 (lowest) to 7 (highest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessagePriority(u8);

impl MessagePriority {
    /// The highest message priority.
    pub const MAX: MessagePriority = MessagePriority(7);
    /// The number of distinct message priorities.
    pub const LEVELS: usize = 8;

    /// Builds a message priority, or `None` above 7.
    pub const fn new(raw: u8) -> Option<Self> {
        if raw <= 7 {
            Some(MessagePriority(raw))
        } else {
            None
        }
    }

    /// The numeric priority, 0..=7.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// Rights a capability grants, as bit flags.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u16);

impl Rights {
    /// No rights at all.
    pub const NONE: Rights = Rights(0);
    /// Read the resource.
    pub const READ: Rights = Rights(1 << 0);
    /// Write or send to the resource.
    pub const WRITE: Rights = Rights(1 << 1);
    /// Delete the resource.
    pub const DELETE: Rights = Rights(1 << 2);
    /// Execute or spawn.
    pub const EXECUTE: Rights = Rights(1 << 3);
    /// Create new resources under this one.
    pub const CREATE: Rights = Rights(1 << 4);
    /// List the resource's contents.
    pub const LIST: Rights = Rights(1 << 5);
    /// Hand an attenuated copy of the capability to another process.
    pub const DELEGATE: Rights = Rights(1 << 6);
    /// Revoke capabilities derived from this one.
    pub const REVOKE: Rights = Rights(1 << 7);
    /// Every defined right.
    pub const ALL: Rights = Rights(0xFF);

    /// Builds rights from raw bits, or `None` if an undefined bit is set.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Rights(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True if every right in `other` is also in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in either set.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights in both sets.
    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// True if no right is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The name of each right, in bit order.
    pub const NAMES: [(&'static str, Rights); 8] = [
        ("read", Rights::READ),
        ("write", Rights::WRITE),
        ("delete", Rights::DELETE),
        ("execute", Rights::EXECUTE),
        ("create", Rights::CREATE),
        ("list", Rights::LIST),
        ("delegate", Rights::DELEGATE),
        ("revoke", Rights::REVOKE),
    ];
}

impl core::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        self.union(rhs)
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rights(")?;
        let mut first = true;
        for (name, right) in Rights::NAMES {
            if self.contains(right) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// The kind of resource a capability refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResourceKind {
    /// A region of memory.
    Memory = 0,
    /// A message channel to one or more processes.
    Channel = 1,
    /// A file or directory.
    File = 2,
    /// A database or a set of collections.
    Database = 3,
    /// A process (spawn, signal, inspect).
    Process = 4,
    /// The audit log.
    AuditLog = 5,
    /// Configuration values.
    Config = 6,
    /// Clock and timers.
    Timer = 7,
    /// Network hosts.
    Network = 8,
    /// A service-defined resource, named by its scope.
    Custom = 9,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_round_trips_through_u64() {
        let pid = Pid::new(7, 3);
        assert_eq!(pid.to_u64(), (3 << 32) | 7);
        assert_eq!(Pid::from_u64(pid.to_u64()), pid);
        assert_ne!(Pid::new(7, 4), pid, "a new generation is a new process");
    }

    #[test]
    fn priority_from_u8_rejects_unknown_levels() {
        for level in Priority::ALL {
            assert_eq!(Priority::try_from(level as u8), Ok(level));
        }
        assert_eq!(Priority::try_from(6), Err(6));
    }

    #[test]
    fn rights_subset_and_undefined_bits() {
        let rw = Rights::READ | Rights::WRITE;
        assert!(rw.contains(Rights::READ));
        assert!(!Rights::READ.contains(rw));
        assert_eq!(Rights::from_bits(0x100), None);
        assert_eq!(format!("{:?}", rw), "Rights(read|write)");
    }

    extern crate std;
    use std::format;
}
