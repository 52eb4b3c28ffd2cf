//! The kernel clock: real (monotonic wall time since boot) or virtual
//! (advanced only by the kernel, for deterministic runs).
//!
//! The real clock reads the CPU's time-stamp counter through `quanta`,
//! calibrated once per host process against the OS's monotonic clock
//! (about half a millisecond, at the first kernel's boot). The kernel reads
//! its clock several times per message (timestamps, turn accounting), and
//! a counter read costs about 9 ns here against 22 ns for
//! `clock_gettime` through the vDSO. Where the counter is not invariant
//! (it would drift with power states), `quanta` uses the OS's monotonic
//! clock instead. A reading never goes below zero (nor wraps): a counter
//! value at or before the boot reading counts as zero. Across cores the
//! readings are as monotonic as the counter, which Linux uses as its own
//! clock source only when the cores' counters agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The last instant a deadline may name: 2^63 − 1 ns (about 292 years)
/// after boot. Deadlines are capped here, so a timed wait, however long,
/// stays a wait with a timer (never mistaken for one without), and
/// `clock_now`, which returns an `i64`, can always say what time it is.
pub const END_OF_TIME: u64 = i64::MAX as u64;

/// Nanoseconds since boot, from a real or a virtual source.
#[derive(Debug)]
pub enum Clock {
    /// Monotonic wall time.
    Real {
        /// The calibrated counter.
        counter: quanta::Clock,
        /// Its raw reading at boot.
        start: u64,
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
        let counter = quanta::Clock::new();
        Clock::Real {
            start: counter.raw(),
            counter,
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
            Clock::Real { counter, start } => counter.delta_as_nanos(*start, counter.raw()),
            Clock::Virtual { now } => now.load(Ordering::Acquire),
        }
    }

    /// True for a virtual clock.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }

    /// Moves a virtual clock forward to `nanos` (never backward, never
    /// past [`END_OF_TIME`]). A real clock ignores this.
    pub fn advance_to(&self, nanos: u64) {
        if let Clock::Virtual { now } = self {
            now.fetch_max(nanos.min(END_OF_TIME), Ordering::AcqRel);
        }
    }

    /// Moves a virtual clock forward by `nanos`, stopping at
    /// [`END_OF_TIME`]: what it reads is what `clock_now` says and message
    /// headers carry, so it must stay a valid `i64`. A real clock ignores
    /// this.
    pub fn advance_by(&self, nanos: u64) {
        if let Clock::Virtual { now } = self {
            let _ = now.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(nanos).min(END_OF_TIME))
            });
        }
    }

    /// The deadline `ms` milliseconds from now, capped at [`END_OF_TIME`].
    pub fn deadline_after_ms(&self, ms: u64) -> u64 {
        self.now_nanos()
            .saturating_add(ms.saturating_mul(1_000_000))
            .min(END_OF_TIME)
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
    fn deadlines_and_the_virtual_clock_stop_at_the_end_of_time() {
        let clock = Clock::virtual_clock();
        assert_eq!(clock.deadline_after_ms(5), 5_000_000);
        assert_eq!(clock.deadline_after_ms(u64::MAX), END_OF_TIME);
        clock.advance_to(END_OF_TIME);
        assert_eq!(clock.deadline_after_ms(5), END_OF_TIME);
        clock.advance_by(u64::MAX);
        assert_eq!(clock.now_nanos(), END_OF_TIME);
        clock.advance_by(1);
        clock.advance_to(u64::MAX);
        assert_eq!(
            clock.now_nanos(),
            END_OF_TIME,
            "stops at the end, never past it or wrapping to zero"
        );
        assert!(Clock::real().deadline_after_ms(u64::MAX) <= END_OF_TIME);
    }

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

    #[test]
    fn real_clock_keeps_pace_with_the_os_clock() {
        let clock = Clock::real();
        // The counter's interval lies inside the OS clock's, whatever
        // preempts this thread between the reads.
        let os = std::time::Instant::now();
        let before = clock.now_nanos();
        std::thread::sleep(Duration::from_millis(50));
        let elapsed = clock.now_nanos() - before;
        let reference = os.elapsed().as_nanos() as u64;
        // Calibration is good to a few parts per million; allow 1 %.
        assert!(
            elapsed <= reference + reference / 100,
            "counter {elapsed} ns against OS {reference} ns"
        );
        assert!(
            elapsed >= 50_000_000 - 500_000,
            "{elapsed} ns for a 50 ms sleep"
        );
    }
}
