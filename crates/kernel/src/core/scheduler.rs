//! Scheduling policy data: priority run queues and time slices measured in
//! fuel.
//!
//! # Protocol
//!
//! 1. There is one FIFO run queue per [`Priority`] level. [`RunQueues::pop`]
//!    always takes from the highest non-empty level: a higher level preempts
//!    a lower one.
//! 2. A slice is a number of fuel units ([`SlicePolicy::slice_fuel`]), so the
//!    same run preempts at the same instruction every time. Guests reach a
//!    checkpoint (an async yield back to the kernel) every
//!    [`SlicePolicy::checkpoint_fuel`] units, at most 1,000,000.
//! 3. At each checkpoint the running process is preempted if a higher level
//!    has a ready process (it goes back to the *front* of its queue: it keeps
//!    its turn). When its slice is used up it goes to the *back* of its
//!    queue: round robin within a level.
//! 4. `SYSTEM` processes run to completion: no slice end, no preemption.
//!
//! This module is plain data with no I/O, so it is tested without WASM.

use estalogic_abi::{Pid, Priority};
use std::collections::VecDeque;

/// Time-slice configuration for every level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlicePolicy {
    /// Fuel units between two checkpoints (async yields to the kernel).
    pub checkpoint_fuel: u64,
    /// Nominal fuel units per millisecond, used to turn the brief's slice
    /// lengths into fuel.
    pub fuel_per_ms: u64,
}

impl Default for SlicePolicy {
    fn default() -> Self {
        SlicePolicy {
            checkpoint_fuel: 100_000,
            fuel_per_ms: 1_000_000,
        }
    }
}

impl SlicePolicy {
    /// The most fuel a guest may burn between checkpoints.
    pub const MAX_CHECKPOINT_FUEL: u64 = 1_000_000;

    /// Base slice length of a level in milliseconds; `None` for `SYSTEM`,
    /// which runs to completion.
    pub const fn base_slice_ms(level: Priority) -> Option<u64> {
        match level {
            Priority::Idle => Some(100),
            Priority::Low => Some(50),
            Priority::Normal => Some(25),
            Priority::High => Some(15),
            Priority::Realtime => Some(10),
            Priority::System => None,
        }
    }

    /// How many slices in a row a level may run while others of its level
    /// wait; `None` for `SYSTEM`.
    pub const fn max_consecutive_slices(level: Priority) -> Option<u32> {
        match level {
            Priority::Idle => Some(1),
            Priority::Low => Some(2),
            Priority::Normal => Some(4),
            Priority::High => Some(8),
            Priority::Realtime => Some(16),
            Priority::System => None,
        }
    }

    /// The slice of a level in fuel units; `None` for `SYSTEM`.
    pub fn slice_fuel(&self, level: Priority) -> Option<u64> {
        Self::base_slice_ms(level).map(|ms| ms * self.fuel_per_ms)
    }

    /// The slice of a level in checkpoints (at least one).
    pub fn slice_checkpoints(&self, level: Priority) -> Option<u64> {
        self.slice_fuel(level)
            .map(|fuel| (fuel / self.checkpoint_fuel.max(1)).max(1))
    }
}

/// One FIFO queue of ready processes per priority level.
#[derive(Debug, Default)]
pub struct RunQueues {
    levels: [VecDeque<Pid>; 6],
    len: usize,
}

impl RunQueues {
    /// Empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `pid` at the back of `level` (a new arrival or a used-up slice).
    pub fn push_back(&mut self, pid: Pid, level: Priority) {
        self.levels[level as usize].push_back(pid);
        self.len += 1;
    }

    /// Queues `pid` at the front of `level` (preempted: it keeps its turn).
    pub fn push_front(&mut self, pid: Pid, level: Priority) {
        self.levels[level as usize].push_front(pid);
        self.len += 1;
    }

    /// Takes the first process of the highest non-empty level.
    pub fn pop(&mut self) -> Option<(Pid, Priority)> {
        for level in Priority::ALL.into_iter().rev() {
            if let Some(pid) = self.levels[level as usize].pop_front() {
                self.len -= 1;
                return Some((pid, level));
            }
        }
        None
    }

    /// The highest level with a ready process.
    pub fn highest(&self) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .rev()
            .find(|level| !self.levels[*level as usize].is_empty())
    }

    /// True if a process of a level strictly above `level` is ready.
    pub fn has_higher_than(&self, level: Priority) -> bool {
        self.highest().is_some_and(|top| top > level)
    }

    /// True if another process of exactly `level` is ready.
    pub fn has_at(&self, level: Priority) -> bool {
        !self.levels[level as usize].is_empty()
    }

    /// Number of queued processes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes `pid` wherever it is queued; returns whether it was.
    pub fn remove(&mut self, pid: Pid) -> bool {
        for queue in &mut self.levels {
            if let Some(at) = queue.iter().position(|p| *p == pid) {
                queue.remove(at);
                self.len -= 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pid(i: u32) -> Pid {
        Pid::new(i, 1)
    }

    #[test]
    fn higher_levels_come_first_fifo_within_a_level() {
        let mut queues = RunQueues::new();
        queues.push_back(pid(1), Priority::Normal);
        queues.push_back(pid(2), Priority::Low);
        queues.push_back(pid(3), Priority::High);
        queues.push_back(pid(4), Priority::Normal);
        assert_eq!(queues.pop(), Some((pid(3), Priority::High)));
        assert_eq!(queues.pop(), Some((pid(1), Priority::Normal)));
        assert_eq!(queues.pop(), Some((pid(4), Priority::Normal)));
        assert_eq!(queues.pop(), Some((pid(2), Priority::Low)));
        assert_eq!(queues.pop(), None);
    }

    #[test]
    fn preempted_process_keeps_its_turn() {
        let mut queues = RunQueues::new();
        queues.push_back(pid(1), Priority::Normal);
        queues.push_front(pid(2), Priority::Normal);
        assert_eq!(queues.pop(), Some((pid(2), Priority::Normal)));
        assert!(queues.has_at(Priority::Normal));
        assert!(!queues.has_higher_than(Priority::Normal));
        assert!(queues.has_higher_than(Priority::Low));
    }

    #[test]
    fn slices_follow_the_brief() {
        let policy = SlicePolicy::default();
        assert_eq!(policy.slice_fuel(Priority::Normal), Some(25_000_000));
        assert_eq!(policy.slice_checkpoints(Priority::Normal), Some(250));
        assert_eq!(policy.slice_fuel(Priority::System), None);
        assert_eq!(
            SlicePolicy::max_consecutive_slices(Priority::Realtime),
            Some(16)
        );
        assert!(policy.checkpoint_fuel <= SlicePolicy::MAX_CHECKPOINT_FUEL);
    }

    proptest! {
        /// Whatever is pushed comes out exactly once, highest level first and
        /// FIFO among back-pushes of one level.
        #[test]
        fn pop_order_is_priority_then_fifo(levels in proptest::collection::vec(0u8..6, 0..64)) {
            let mut queues = RunQueues::new();
            for (i, level) in levels.iter().enumerate() {
                queues.push_back(pid(i as u32), Priority::try_from(*level).unwrap());
            }
            prop_assert_eq!(queues.len(), levels.len());
            let mut last: Option<(Priority, u32)> = None;
            let mut seen = 0;
            while let Some((p, level)) = queues.pop() {
                prop_assert_eq!(levels[p.index() as usize], level as u8);
                if let Some((last_level, last_index)) = last {
                    prop_assert!(level < last_level || (level == last_level && p.index() > last_index));
                }
                last = Some((level, p.index()));
                seen += 1;
            }
            prop_assert_eq!(seen, levels.len());
            prop_assert!(queues.is_empty());
        }
    }
}
