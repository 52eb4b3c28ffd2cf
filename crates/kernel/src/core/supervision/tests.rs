//! Tests for supervision: the escalation ladder, its window and decay, giving
//! up, and property tests of how the rung moves.

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
