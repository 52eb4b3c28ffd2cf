//! Error codes shared by the kernel and guests, with their categories.
//!
//! Codes are grouped by thousands:
//!
//! | range     | category    | meaning                                        |
//! |-----------|-------------|------------------------------------------------|
//! | 1000–1999 | `User`      | the caller passed something wrong              |
//! | 2000–2999 | `Logic`     | the request is well formed but not allowed now |
//! | 3000–3999 | `Resource`  | a limit was hit: time, memory, queue space     |
//! | 4000–4999 | `Integrity` | a trap: the process broke the machine's rules  |
//! | 5000–5999 | `System`    | the kernel itself failed or is stopping        |
//!
//! A syscall returns an `i64`: zero or positive on success, or the negated
//! error code on failure ([`ErrorCode::to_syscall_return`]). Trap codes are
//! never returned to a guest: a trap ends the process and its supervisor is
//! told the code.

use core::fmt;

/// The category an [`ErrorCode`] belongs to, from its thousands digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// 1000–1999: bad input from the caller.
    User,
    /// 2000–2999: a well-formed request that is not allowed in this state.
    Logic,
    /// 3000–3999: a resource limit (time, memory, queue space).
    Resource,
    /// 4000–4999: a trap; the process broke the rules of the machine.
    Integrity,
    /// 5000–5999: the kernel failed or is shutting down.
    System,
}

/// A numeric error code. See the module docs for the ranges.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// The symbolic name of a known code.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// A syscall argument is out of range or malformed.
    INVALID_ARGUMENT = 1001;
    /// The guest's receive buffer is smaller than the message payload; the
    /// message stays in the mailbox.
    BUFFER_TOO_SMALL = 1002;
    /// A payload is larger than [`crate::MAX_PAYLOAD_LEN`].
    PAYLOAD_TOO_LARGE = 1003;
    /// A pointer/length pair does not lie inside the guest's memory.
    INVALID_POINTER = 1004;
    /// A string argument is not valid UTF-8.
    INVALID_UTF8 = 1005;
    /// A name lookup found nothing.
    NOT_FOUND = 1006;
    /// The target process does not exist (or has exited: stale generation).
    NO_SUCH_PROCESS = 2001;
    /// The caller holds no capability for this operation.
    PERMISSION_DENIED = 2002;
    /// A capability handle is not in the caller's table or has the wrong type.
    INVALID_HANDLE = 2003;
    /// A process may not send to itself with a blocking protocol.
    WOULD_DEADLOCK = 2004;
    /// A handler process made a call that would wait (a receive with a
    /// timeout, `send_receive`, a send to a full `BlockSender` mailbox):
    /// handlers never wait; their messages arrive as calls.
    WOULD_BLOCK = 2005;
    /// A wait ran out of time; also the trap code for a process stopped for
    /// exceeding its run-time limit.
    TIMEOUT = 3001;
    /// Memory limit of the process's class reached.
    OUT_OF_MEMORY = 3002;
    /// The target mailbox is full and its overflow mode is `NotifySender`.
    MAILBOX_FULL = 3003;
    /// The message was dropped by the target mailbox's overflow policy.
    MESSAGE_DROPPED = 3004;
    /// A kernel table is full (capability handles, delegation depth).
    LIMIT_REACHED = 3005;
    /// Trap: `unreachable` executed (also Rust panics in guests).
    TRAP_UNREACHABLE = 4001;
    /// Trap: integer division or remainder by zero.
    TRAP_DIV_BY_ZERO = 4002;
    /// Trap: integer overflow (`i32::MIN / -1`, bad float-to-int conversion).
    TRAP_INTEGER_OVERFLOW = 4003;
    /// Trap: memory or table access out of bounds.
    TRAP_OUT_OF_BOUNDS = 4004;
    /// Trap: indirect call to a null entry or with the wrong signature,
    /// or a call through a null function reference (`call_ref`).
    TRAP_INDIRECT_CALL_TYPE = 4005;
    /// Trap: call stack exhausted.
    TRAP_STACK_OVERFLOW = 4006;
    /// Trap of a kind without its own code.
    TRAP_OTHER = 4099;
    /// The kernel hit an internal error.
    INTERNAL = 5001;
    /// The process was stopped because the kernel is shutting down.
    SHUTDOWN = 5002;
    /// The process waited forever on a receive that nothing could satisfy.
    DEADLOCKED = 5003;
    /// The process was stopped so its supervisor could restart it (with its
    /// supervisor or the whole system).
    RESTARTED = 5004;
}

impl ErrorCode {
    /// The category from the code's thousands digit, or `None` outside
    /// 1000–5999.
    pub const fn category(self) -> Option<ErrorCategory> {
        Some(match self.0 / 1000 {
            1 => ErrorCategory::User,
            2 => ErrorCategory::Logic,
            3 => ErrorCategory::Resource,
            4 => ErrorCategory::Integrity,
            5 => ErrorCategory::System,
            _ => return None,
        })
    }

    /// The syscall return value that carries this error: the negated code.
    pub const fn to_syscall_return(self) -> i64 {
        -(self.0 as i64)
    }

    /// Splits a syscall return value into success or error.
    pub const fn from_syscall_return(raw: i64) -> Result<u64, ErrorCode> {
        if raw >= 0 {
            Ok(raw as u64)
        } else {
            Err(ErrorCode(raw.unsigned_abs() as u32))
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({})", name, self.0),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({})", name, self.0),
            None => write!(f, "error {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_thousands_digit() {
        assert_eq!(
            ErrorCode::INVALID_ARGUMENT.category(),
            Some(ErrorCategory::User)
        );
        assert_eq!(
            ErrorCode::NO_SUCH_PROCESS.category(),
            Some(ErrorCategory::Logic)
        );
        assert_eq!(ErrorCode::TIMEOUT.category(), Some(ErrorCategory::Resource));
        assert_eq!(
            ErrorCode::OUT_OF_MEMORY.category(),
            Some(ErrorCategory::Resource)
        );
        assert_eq!(
            ErrorCode::TRAP_STACK_OVERFLOW.category(),
            Some(ErrorCategory::Integrity)
        );
        assert_eq!(ErrorCode::INTERNAL.category(), Some(ErrorCategory::System));
        assert_eq!(ErrorCode(999).category(), None);
        assert_eq!(ErrorCode(6000).category(), None);
    }

    #[test]
    fn trap_codes_match_the_brief() {
        assert_eq!(ErrorCode::TRAP_UNREACHABLE.0, 4001);
        assert_eq!(ErrorCode::TRAP_DIV_BY_ZERO.0, 4002);
        assert_eq!(ErrorCode::TRAP_INTEGER_OVERFLOW.0, 4003);
        assert_eq!(ErrorCode::TRAP_OUT_OF_BOUNDS.0, 4004);
        assert_eq!(ErrorCode::TRAP_INDIRECT_CALL_TYPE.0, 4005);
        assert_eq!(ErrorCode::TRAP_STACK_OVERFLOW.0, 4006);
        assert_eq!(ErrorCode::TIMEOUT.0, 3001);
        assert_eq!(ErrorCode::OUT_OF_MEMORY.0, 3002);
    }

    #[test]
    fn syscall_return_round_trip() {
        let raw = ErrorCode::MAILBOX_FULL.to_syscall_return();
        assert_eq!(raw, -3003);
        assert_eq!(
            ErrorCode::from_syscall_return(raw),
            Err(ErrorCode::MAILBOX_FULL)
        );
        assert_eq!(ErrorCode::from_syscall_return(42), Ok(42));
        assert_eq!(ErrorCode::MAILBOX_FULL.name(), Some("MAILBOX_FULL"));
    }
}
