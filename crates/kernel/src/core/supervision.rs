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
    /// Restart the process keeping its mailbox and capabilities.
    RestartSameState,
    /// Restart the process with a fresh mailbox and its capabilities
    /// re-granted from its manifest.
    RestartCleanState,
    /// Recompile and reload the module from its source, then restart the
    /// process with a clean state.
    ReloadModule,
    /// Restart the supervising process and all its children.
    RestartSupervisor,
    /// Restart every process of the app.
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

/// A process that ended with a trap or an error exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the policy counts failures by: the module name.
    pub key: String,
    /// The trap or error code it ended with.
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

    /// A process of `key` ended normally (or was seen healthy) at `now`.
    /// The default ignores it.
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
mod tests {
    use super::*;
    use RestartAction::*;
    use proptest::prelude::*;

    fn fail(ladder: &mut Ladder, key: &str, now: u64) -> RestartAction {
        let failure = Failure {
            key: key.to_string(),
            code: 4001,
            at: now,
        };
        ladder.on_failure(&failure, now)
    }

    /// Fails `key` at each time in `times`; returns the answers.
    fn run(ladder: &mut Ladder, key: &str, times: &[u64]) -> Vec<RestartAction> {
        times.iter().map(|&t| fail(ladder, key, t)).collect()
    }

    #[test]
    fn the_ladder_is_in_brief_order() {
        assert!(RestartAction::LADDER.windows(2).all(|w| w[0] < w[1]));
        for (rung, action) in RestartAction::LADDER.iter().enumerate() {
            assert_eq!(action.rung(), rung);
        }
        assert_eq!(RestartSystem.escalate(), GiveUp);
        assert_eq!(GiveUp.escalate(), GiveUp);
        let ladder = Ladder::default();
        assert_eq!((ladder.threshold(), ladder.window_ns()), (3, 60 * SECOND));
    }

    #[test]
    fn first_failure_restarts_with_the_same_state() {
        let mut ladder = Ladder::default();
        assert_eq!(ladder.level("ping"), RestartSameState);
        assert_eq!(fail(&mut ladder, "ping", 0), RestartSameState);
        assert_eq!(fail(&mut ladder, "ping", SECOND), RestartSameState);
        assert_eq!(ladder.failures_in_window("ping", SECOND), 2);
    }

    #[test]
    fn three_failures_in_sixty_seconds_restart_with_a_clean_state() {
        let mut ladder = Ladder::default();
        let answers = run(&mut ladder, "ping", &[0, 20 * SECOND, 59 * SECOND]);
        assert_eq!(
            answers,
            vec![RestartSameState, RestartSameState, RestartCleanState]
        );
        assert_eq!(ladder.level("ping"), RestartCleanState);
        assert_eq!(ladder.failures_in_window("ping", 59 * SECOND), 0);
    }

    #[test]
    fn failing_on_climbs_every_rung_then_gives_up() {
        let mut ladder = Ladder::default();
        let times: Vec<u64> = (0..18).map(|i| i * SECOND).collect();
        let answers = run(&mut ladder, "ping", &times);
        let expected: Vec<RestartAction> = [
            [RestartSameState, RestartSameState, RestartCleanState],
            [RestartCleanState, RestartCleanState, ReloadModule],
            [ReloadModule, ReloadModule, RestartSupervisor],
            [RestartSupervisor, RestartSupervisor, RestartSystem],
            [RestartSystem, RestartSystem, GiveUp],
            [GiveUp, GiveUp, GiveUp],
        ]
        .concat();
        assert_eq!(answers, expected);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_climb() {
        let mut ladder = Ladder::default();
        // Every third failure is 60 s or more after the first of its trio.
        let times: Vec<u64> = (0..20).map(|i| i * 30 * SECOND).collect();
        let answers = run(&mut ladder, "ping", &times);
        assert!(
            answers.iter().all(|a| *a == RestartSameState),
            "{answers:?}"
        );
        // A failure exactly one window old has left the window.
        let mut ladder = Ladder::default();
        let answers = run(&mut ladder, "pong", &[0, 1, 60 * SECOND]);
        assert_eq!(answers, vec![RestartSameState; 3]);
    }

    #[test]
    fn keys_are_independent() {
        let mut ladder = Ladder::default();
        run(&mut ladder, "ping", &[0, 1, 2, 3, 4, 5]);
        assert_eq!(ladder.level("ping"), ReloadModule);
        assert_eq!(fail(&mut ladder, "pong", 6), RestartSameState);
        assert_eq!(ladder.level("pong"), RestartSameState);
        assert_eq!(ladder.failures_in_window("ping", 6), 0);
        assert_eq!(fail(&mut ladder, "ping", 7), ReloadModule);
    }

    #[test]
    fn calm_lowers_one_rung_per_full_window() {
        let mut ladder = Ladder::default();
        let times: Vec<u64> = (0..9).map(|i| i * SECOND).collect();
        run(&mut ladder, "ping", &times);
        let last = 8 * SECOND;
        assert_eq!(ladder.level("ping"), RestartSupervisor);
        assert_eq!(
            ladder.level_at("ping", last + 59 * SECOND),
            RestartSupervisor
        );
        assert_eq!(ladder.level_at("ping", last + 60 * SECOND), ReloadModule);
        assert_eq!(
            ladder.level_at("ping", last + 179 * SECOND),
            RestartCleanState
        );
        assert_eq!(
            ladder.level_at("ping", last + 1000 * SECOND),
            RestartSameState
        );
        // The next failure lands on the decayed rung, with an empty window.
        assert_eq!(
            fail(&mut ladder, "ping", last + 130 * SECOND),
            RestartCleanState
        );
        assert_eq!(ladder.failures_in_window("ping", last + 130 * SECOND), 1);
        // Decay is counted from that failure now.
        assert_eq!(
            ladder.level_at("ping", last + 189 * SECOND),
            RestartCleanState
        );
        assert_eq!(
            ladder.level_at("ping", last + 190 * SECOND),
            RestartSameState
        );
    }

    #[test]
    fn success_applies_decay_and_drops_idle_keys() {
        let mut ladder = Ladder::default();
        run(&mut ladder, "ping", &[0, 1, 2]);
        ladder.on_success("ping", 30 * SECOND);
        assert_eq!(ladder.level("ping"), RestartCleanState);
        ladder.on_success("ping", 70 * SECOND);
        assert_eq!(ladder.level("ping"), RestartSameState);
        assert!(ladder.keys.is_empty());
        // Partial windows are not lost by a success in between.
        run(&mut ladder, "pong", &[0, 1, 2, 3, 4, 5]);
        ladder.on_success("pong", 5 + 50 * SECOND);
        ladder.on_success("pong", 5 + 100 * SECOND);
        assert_eq!(ladder.level("pong"), RestartCleanState);
        ladder.on_success("unknown", 0);
    }

    #[test]
    fn give_up_is_final_until_forgotten() {
        let mut ladder = Ladder::new(1, 60 * SECOND);
        let answers = run(&mut ladder, "ping", &[0, 1, 2, 3, 4]);
        assert_eq!(
            answers,
            vec![
                RestartCleanState,
                ReloadModule,
                RestartSupervisor,
                RestartSystem,
                GiveUp
            ]
        );
        assert_eq!(ladder.level_at("ping", 1_000 * SECOND), GiveUp);
        assert_eq!(fail(&mut ladder, "ping", 1_000 * SECOND), GiveUp);
        ladder.on_success("ping", 2_000 * SECOND);
        assert_eq!(ladder.level("ping"), GiveUp);
        ladder.forget("ping");
        assert_eq!(fail(&mut ladder, "ping", 2_000 * SECOND), RestartCleanState);
    }

    #[test]
    fn configuration_is_clamped() {
        let ladder = Ladder::new(0, 0);
        assert_eq!((ladder.threshold(), ladder.window_ns()), (1, 1));
    }

    #[test]
    fn never_always_gives_up() {
        let mut never = Never;
        let failure = Failure {
            key: "ping".into(),
            code: 4002,
            at: 0,
        };
        assert_eq!(never.on_failure(&failure, 0), GiveUp);
        never.on_success("ping", 1);
        assert_eq!(never.on_failure(&failure, 2), GiveUp);
        let boxed: Box<dyn RestartPolicy> = Box::new(Ladder::default());
        let _ = boxed;
    }

    const WINDOW: u64 = 60 * SECOND;

    proptest! {
        /// Failures that keep arriving inside the window never lower the
        /// rung and never skip one.
        #[test]
        fn inside_the_window_the_rung_never_drops_or_skips(
            gaps in proptest::collection::vec(0u64..WINDOW, 1..60),
        ) {
            let mut ladder = Ladder::default();
            let mut now = 0;
            let mut previous: Option<RestartAction> = None;
            for gap in gaps {
                now += gap;
                let action = fail(&mut ladder, "k", now);
                if let Some(previous) = previous {
                    prop_assert!(action >= previous, "{previous:?} -> {action:?}");
                    prop_assert!(action.rung() <= previous.rung() + 1, "{previous:?} -> {action:?}");
                } else {
                    prop_assert_eq!(action, RestartSameState);
                }
                previous = Some(action);
            }
        }

        /// All failures inside one window: the n-th (from 1) answers rung
        /// `n / threshold`, capped at `GiveUp`.
        #[test]
        fn a_burst_climbs_one_rung_per_threshold(
            threshold in 1usize..5,
            gaps in proptest::collection::vec(0u64..SECOND, 1..40),
        ) {
            let mut ladder = Ladder::new(threshold, WINDOW);
            let mut now = 0;
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                let rung = ((i + 1) / threshold).min(GiveUp.rung());
                prop_assert_eq!(fail(&mut ladder, "k", now), RestartAction::LADDER[rung]);
            }
        }

        /// For any failure times: between quiet periods (gaps of a full
        /// window or more) the answers never go down and climb one rung at
        /// a time; after a quiet period of `q` windows the rung is
        /// exactly `q` lower (never below the lowest), except that `GiveUp`
        /// stays.
        #[test]
        fn answers_are_monotone_between_quiet_periods(
            gaps in proptest::collection::vec(
                prop_oneof![3 => 0u64..WINDOW, 1 => WINDOW..5 * WINDOW],
                1..80,
            ),
            keys in proptest::collection::vec(0usize..2, 80),
        ) {
            let mut ladder = Ladder::default();
            let mut now = 0;
            let mut last: [Option<(u64, RestartAction)>; 2] = [None, None];
            for (gap, key) in gaps.iter().zip(&keys) {
                now += gap;
                let name = ["a", "b"][*key];
                let action = fail(&mut ladder, name, now);
                if let Some((then, previous)) = last[*key] {
                    let quiet = (now - then) / WINDOW;
                    prop_assert!(action.rung() <= previous.rung() + 1, "skipped a rung");
                    if quiet == 0 {
                        prop_assert!(action >= previous, "{previous:?} -> {action:?}");
                    } else if previous == GiveUp {
                        prop_assert_eq!(action, GiveUp);
                    } else {
                        prop_assert_eq!(action, previous.lowered(quiet));
                    }
                }
                last[*key] = Some((now, action));
            }
        }
    }
}
