//! Smoke test: every benchmark runs in quick mode and yields a positive,
//! finite figure. Nothing here asserts on time.

use estalogic_bench::{ALL, Settings, run_all};

#[test]
fn every_benchmark_runs_in_quick_mode() {
    let outcomes = run_all(
        &Settings {
            repeat: 1,
            quick: true,
        },
        None,
    );
    assert_eq!(outcomes.len(), ALL.len());
    let mut failures = Vec::new();
    for outcome in &outcomes {
        let name = outcome.benchmark.name;
        match &outcome.value {
            Ok(value) if value.is_finite() && *value > 0.0 => {}
            Ok(value) => failures.push(format!("{name}: figure {value}")),
            Err(error) => failures.push(format!("{name}: {error:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
