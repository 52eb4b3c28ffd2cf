//! The kernel clock: real (monotonic wall time since boot) or virtual
//! (advanced only by the kernel, for deterministic runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds since boot, from a real or a virtual source.
#[derive(Debug)]
pub enum Clock {
    /// Monotonic wall time.
    Real {
        /// The boot instant.
        start: Instant,
    },
    /// Time that moves only when the kernel advances it.
    Virtual {
        /// The current virtual time in nanoseconds.
        now: AtomicU64,
    },
}

impl Clock {
    /// A real clock starting now.
    pub fn real() -> Self {
        Clock::Real {
            start: Instant::now(),
        }
    }

    /// A virtual clock at zero.
    pub fn virtual_clock() -> Self {
        Clock::Virtual {
            now: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since boot.
    pub fn now_nanos(&self) -> u64 {
        match self {
            Clock::Real { start } => start.elapsed().as_nanos() as u64,
            Clock::Virtual { now } => now.load(Ordering::Acquire),
        }
    }

    /// True for a virtual clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }

    /// Moves a virtual clock forward to `nanos` (never backward). A real
    /// clock ignores this.
    pub fn advance_to(&self, nanos: u64) {
        if let Clock::Virtual { now } = self {
            now.fetch_max(nanos, Ordering::AcqRel);
        }
    }

    /// Moves a virtual clock forward by `nanos`. A real clock ignores this.
    pub fn advance_by(&self, nanos: u64) {
        if let Clock::Virtual { now } = self {
            now.fetch_add(nanos, Ordering::AcqRel);
        }
    }

    /// How long from now until `deadline` (zero if it has passed).
    pub fn until(&self, deadline: u64) -> Duration {
        Duration::from_nanos(deadline.saturating_sub(self.now_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_forward_and_only_when_told() {
        let clock = Clock::virtual_clock();
        assert_eq!(clock.now_nanos(), 0);
        clock.advance_to(500);
        clock.advance_to(100);
        assert_eq!(clock.now_nanos(), 500);
        clock.advance_by(10);
        assert_eq!(clock.now_nanos(), 510);
        assert_eq!(clock.until(400), Duration::ZERO);
    }

    #[test]
    fn real_clock_is_monotonic() {
        let clock = Clock::real();
        let a = clock.now_nanos();
        let b = clock.now_nanos();
        assert!(b >= a);
        assert!(!clock.is_virtual());
    }
}
