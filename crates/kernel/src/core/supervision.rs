//! Supervision: the escalation ladder that decides how a failed process is
//! restarted.
//!
//! This module is policy only, and plain data: no I/O, no WASM, no threads.
//! The supervisor calls a [`RestartPolicy`] with each [`Failure`] and the
//! kernel clock's `now` (nanoseconds), and carries out the
//! [`RestartAction`] it answers. [`Ladder`] is the plain default;
//! [`Never`] is for modules whose manifest allows no restarts.
//!
//! # The ladder
//!
//! Rungs, lowest first (the order of [`RestartAction`]): restart with the
//! same state → restart with a clean state → reload the module → restart the
//! supervisor → restart the system → give up. Each key (a module name) has
//! its own rung and its own failures; keys never affect each other.
//!
//! 1. **First failure.** A key with no history starts on the lowest rung:
//!    its first failure answers [`RestartAction::RestartSameState`].
//! 2. **Window.** A key remembers the times of its failures on the current
//!    rung. A failure at `t` is inside the window at `now` while
//!    `now - t < window_ns` (default 60 s); older ones are forgotten.
//! 3. **Climb.** Each failure is recorded and answered with the current rung.
//!    When the failures inside the window reach `threshold` (default 3), the
//!    key climbs one rung instead, the failure is answered with the new
//!    rung, and the window is emptied: the next climb needs `threshold`
//!    more failures on the new rung. A climb is always exactly one rung.
//! 4. **Give up.** Climbing from [`RestartAction::RestartSystem`] reaches
//!    [`RestartAction::GiveUp`]: the system restart failed too. `GiveUp` is
//!    final for the key: it does not decay and every later failure answers
//!    `GiveUp`, until [`Ladder::forget`] clears the key (an operator starting
//!    the module again by hand).
//! 5. **Decay.** Calm brings a key back down *one rung per full window
//!    without a failure*, counted from its last failure, never below the
//!    lowest rung: a key on `RestartSupervisor` whose next failure comes
//!    2.5 windows after its last one restarts with a clean state (and,
//!    its window now holding one failure, stays there). Decay is applied
//!    lazily, at the key's next failure or success, or on demand by
//!    [`Ladder::level_at`]; a key back on the lowest rung with an empty
//!    window is dropped.
//!
//! So while failures keep coming inside the window the rung never goes
//! down, and it never skips a rung upwards; it only goes down after a quiet
//! period of at least one window.

use std::collections::{HashMap, VecDeque};

/// Nanoseconds in a second.
const SECOND: u64 = 1_000_000_000;

/// What the supervisor should do about a failed process: the rungs of the
/// escalation ladder, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RestartAction {
    /// Restart the process keeping its mailbox and capabilities: its mail
    /// queued in the new mailbox, and its capability table, delegated
    /// capabilities and delegations made included, taken over under the
    /// same handles (not re-granted from its manifest). Its memory starts
    /// afresh: a process's state is what the kernel holds for it.
    RestartSameState,
    /// Restart the process with a fresh mailbox and its capabilities
    /// re-granted from its manifest.
    RestartCleanState,
    /// Reload the module (its compiled code checked and its imports
    /// resolved anew; never recompiled, since the same bytes give the same
    /// code), then restart the process with a clean state.
    ReloadModule,
    /// Restart the supervising process and all its children: every live
    /// process of the supervisor's module and of a module whose manifest
    /// names that supervisor, the failed one's siblings included (one new
    /// process each; a supervisor whose process ended stays down).
    RestartSupervisor,
    /// Restart every process of the app still alive, the failed module's
    /// other processes included (one new process for each; a module whose
    /// processes ended, or that gave up, stays down).
    RestartSystem,
    /// Stop restarting: even a system restart did not help (or the policy
    /// allows no restarts). The process stays down.
    GiveUp,
}

impl RestartAction {
    /// Every rung, lowest first.
    pub const LADDER: [RestartAction; 6] = [
        RestartAction::RestartSameState,
        RestartAction::RestartCleanState,
        RestartAction::ReloadModule,
        RestartAction::RestartSupervisor,
        RestartAction::RestartSystem,
        RestartAction::GiveUp,
    ];

    /// The position on the ladder: 0 for `RestartSameState` .. 5 for
    /// `GiveUp`.
    pub const fn rung(self) -> usize {
        self as usize
    }

    /// The rung above this one; `GiveUp` stays `GiveUp`.
    pub const fn escalate(self) -> RestartAction {
        match self {
            RestartAction::RestartSameState => RestartAction::RestartCleanState,
            RestartAction::RestartCleanState => RestartAction::ReloadModule,
            RestartAction::ReloadModule => RestartAction::RestartSupervisor,
            RestartAction::RestartSupervisor => RestartAction::RestartSystem,
            RestartAction::RestartSystem | RestartAction::GiveUp => RestartAction::GiveUp,
        }
    }

    /// `steps` rungs lower, never below `RestartSameState`.
    fn lowered(self, steps: u64) -> RestartAction {
        let rung = (self.rung() as u64).saturating_sub(steps) as usize;
        RestartAction::LADDER[rung]
    }
}

/// A process that trapped (a failure the supervision ladder answers; an
/// exit with a non-zero code is the process's own decision, reported to
/// its supervisor but not restarted, as the manifest's
/// `"restart": "on_failure"` says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the policy counts failures by: the module name.
    pub key: String,
    /// The trap code it ended with.
    pub code: u32,
    /// When it failed on the kernel clock, in nanoseconds.
    pub at: u64,
}

/// Decides how a failed process is restarted. The supervisor owns the
/// policy and calls it; the kernel only carries out the answer.
pub trait RestartPolicy: Send {
    /// A process failed; what now? `now` is the kernel clock in nanoseconds
    /// and never goes backwards between calls.
    fn on_failure(&mut self, failure: &Failure, now: u64) -> RestartAction;

    /// A process of `key` ended normally at `now`: a process of a module
    /// whose manifest says `"restart": "on_failure"` exited with code 0.
    /// The kernel calls it as it reaps the process, under the same lock as
    /// [`RestartPolicy::on_failure`], so the two are never called at once
    /// and `now` never goes backwards between them. The default ignores it.
    fn on_success(&mut self, key: &str, now: u64) {
        let _ = (key, now);
    }
}

/// The failures and rung of one key.
#[derive(Clone, Debug)]
struct KeyState {
    level: RestartAction,
    /// Times of the failures on the current rung still inside the window,
    /// oldest first.
    recent: VecDeque<u64>,
    /// Where calm is counted from: the last failure, moved forward by whole
    /// windows as decay is applied.
    calm_since: u64,
}

impl KeyState {
    /// Applies decay (step 5) and forgets failures that left the window
    /// (step 2), as of `now`.
    fn catch_up(&mut self, now: u64, window_ns: u64) {
        if self.level != RestartAction::GiveUp {
            let steps = now.saturating_sub(self.calm_since) / window_ns;
            if steps > 0 {
                self.level = self.level.lowered(steps);
                self.calm_since = self
                    .calm_since
                    .saturating_add(steps.saturating_mul(window_ns));
            }
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= window_ns)
        {
            self.recent.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.level == RestartAction::RestartSameState && self.recent.is_empty()
    }
}

/// The plain default [`RestartPolicy`]: the escalation ladder of the module
/// docs, `threshold` failures inside `window_ns` climbing one rung.
#[derive(Clone, Debug)]
pub struct Ladder {
    threshold: usize,
    window_ns: u64,
    keys: HashMap<String, KeyState>,
}

impl Default for Ladder {
    /// Three failures within 60 seconds climb a rung.
    fn default() -> Self {
        Ladder::new(3, 60 * SECOND)
    }
}

impl Ladder {
    /// A ladder that climbs when `threshold` failures (at least 1) fall
    /// inside a sliding window of `window_ns` nanoseconds (at least 1).
    pub fn new(threshold: usize, window_ns: u64) -> Self {
        Ladder {
            threshold: threshold.max(1),
            window_ns: window_ns.max(1),
            keys: HashMap::new(),
        }
    }

    /// Failures inside the window that climb a rung.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The window's length in nanoseconds; also the calm that lowers a rung.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    /// The rung of `key` as of its last failure or success (no decay since
    /// then); `RestartSameState` for a key with no history.
    pub fn level(&self, key: &str) -> RestartAction {
        self.keys
            .get(key)
            .map_or(RestartAction::RestartSameState, |state| state.level)
    }

    /// The rung of `key` at `now`, decay included.
    pub fn level_at(&self, key: &str, now: u64) -> RestartAction {
        self.keys
            .get(key)
            .map_or(RestartAction::RestartSameState, |state| {
                let mut state = state.clone();
                state.catch_up(now, self.window_ns);
                state.level
            })
    }

    /// Failures of `key` on its current rung still inside the window at
    /// `now`.
    pub fn failures_in_window(&self, key: &str, now: u64) -> usize {
        self.keys.get(key).map_or(0, |state| {
            state
                .recent
                .iter()
                .filter(|&&t| now.saturating_sub(t) < self.window_ns)
                .count()
        })
    }

    /// Clears the history of `key`, `GiveUp` included: its next failure is
    /// a first failure again.
    pub fn forget(&mut self, key: &str) {
        self.keys.remove(key);
    }
}

impl RestartPolicy for Ladder {
    fn on_failure(&mut self, failure: &Failure, now: u64) -> RestartAction {
        let window_ns = self.window_ns;
        let threshold = self.threshold;
        let state = self
            .keys
            .entry(failure.key.clone())
            .or_insert_with(|| KeyState {
                level: RestartAction::RestartSameState,
                recent: VecDeque::new(),
                calm_since: now,
            });
        state.catch_up(now, window_ns);
        state.calm_since = now;
        if state.level == RestartAction::GiveUp {
            return RestartAction::GiveUp;
        }
        state.recent.push_back(now);
        if state.recent.len() >= threshold {
            state.level = state.level.escalate();
            state.recent.clear();
        }
        state.level
    }

    fn on_success(&mut self, key: &str, now: u64) {
        let window_ns = self.window_ns;
        if let Some(state) = self.keys.get_mut(key) {
            state.catch_up(now, window_ns);
            if state.is_idle() {
                self.keys.remove(key);
            }
        }
    }
}

/// A [`RestartPolicy`] that never restarts: every failure answers
/// [`RestartAction::GiveUp`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Never;

impl RestartPolicy for Never {
    fn on_failure(&mut self, _failure: &Failure, _now: u64) -> RestartAction {
        RestartAction::GiveUp
    }
}

#[cfg(test)]
mod tests;
