//! The ESTA Logic benchmark suite: the kernel's basic costs, measured on real
//! guests in this process, behind `estactl bench`.
//!
//! Every benchmark is one [`Benchmark`] in the registry [`ALL`]: a name (the
//! key of `estactl bench --json`, which `benches/peers/compare.sh` matches
//! against the Erlang peer by name), a unit, what it measures, the target of
//! the design brief (§5) if it has one, and a function that measures.
//!
//! # Protocol of a measurement
//!
//! 1. A benchmark function builds everything it needs (kernel, modules,
//!    processes) untimed, then times exactly the work its `about` names.
//! 2. It repeats that [`Settings::repeat`] times and reports the best time
//!    (the least disturbed run on a shared machine) or, for memory, the
//!    median ([`measure::best_of`], [`measure::median_of`]).
//! 3. A failure (a guest that traps, a process that cannot be created) is
//!    an error naming what failed, never a panic and never a silent number.
//! 4. [`Settings::quick`] shrinks every count so the whole suite runs in
//!    seconds, for the smoke test; quick figures are not comparable.
//!
//! There are no timed assertions anywhere: targets are reported, not
//! enforced.
//!
//! # Adding a benchmark for a service
//!
//! A service that answers requests needs no code of its own: boot it and
//! put a [`service::ServiceLoad`] on it, as `service_call_round_trip_ns`
//! does for `echo` ([`service::echo_round_trip`]) and `estactl
//! bench-service` does for any app's service. For an operation that is not
//! a request, give the service an entry point that does it N times, then
//! add an entry to [`ALL`] whose `run` times one process of it with
//! [`harness::time_per_operation`]:
//!
//! ```
//! use estalogic_bench::{Benchmark, harness::{self, Guest}};
//!
//! const MY_SERVICE: Benchmark = Benchmark {
//!     name: "my_service_request_ns",
//!     unit: "ns",
//!     about: "one request to my_service (10,000 per run)",
//!     target: None,
//!     run: |settings| {
//!         let guests = [Guest::bundled("noop", "run", &[])];
//!         harness::time_per_operation(settings, &guests, 10_000)
//!     },
//! };
//! # let _ = MY_SERVICE;
//! ```

pub mod baseline;
pub mod boot;
pub mod fairness;
pub mod harness;
pub mod idle;
pub mod measure;
pub mod messaging;
pub mod preemption;
pub mod service;
pub mod spawning;
pub mod syscalls;

use std::time::{Duration, Instant};

/// A goal from the design brief, checked against a figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The figure must not exceed this value.
    AtMost(f64),
    /// The figure must reach at least this value.
    AtLeast(f64),
}

impl Target {
    /// True if `value` meets the target.
    pub fn is_met(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            Target::AtLeast(floor) => value >= floor,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(limit) => write!(f, "<= {}", measure::readable(*limit)),
            Target::AtLeast(floor) => write!(f, ">= {}", measure::readable(*floor)),
        }
    }
}

/// How to run the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    /// Runs of each measurement; the best time (or median memory) is kept.
    pub repeat: u32,
    /// Much smaller counts, for a smoke test: figures are not comparable.
    pub quick: bool,
}

impl Settings {
    /// `full` normally, `quick` in quick mode.
    pub fn count(&self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    /// The number of runs, at least one.
    pub fn runs(&self) -> u32 {
        self.repeat.max(1)
    }
}

impl Default for Settings {
    /// Five runs at full size, as `estactl bench` does.
    fn default() -> Self {
        Settings {
            repeat: 5,
            quick: false,
        }
    }
}

/// One benchmark of the registry.
#[derive(Clone, Copy, Debug)]
pub struct Benchmark {
    /// Its name: the key of `estactl bench --json`.
    pub name: &'static str,
    /// The unit of the figure (`ns`, `ms`, `bytes`, `ratio`).
    pub unit: &'static str,
    /// What exactly is measured, in one line.
    pub about: &'static str,
    /// The design brief's goal for the figure, if it states one as an
    /// absolute number (peer-relative goals are checked by
    /// `benches/peers/compare.sh` and named in `about`).
    pub target: Option<Target>,
    /// Measures and returns the figure.
    pub run: fn(&Settings) -> anyhow::Result<f64>,
}

/// The result of running one benchmark.
#[derive(Debug)]
pub struct Outcome {
    /// The benchmark that ran.
    pub benchmark: &'static Benchmark,
    /// The figure, or why it could not be measured.
    pub value: anyhow::Result<f64>,
    /// Wall time the benchmark took, all runs included.
    pub took: Duration,
}

impl Outcome {
    /// Whether the figure meets the benchmark's target (`None` without a
    /// target or a figure).
    pub fn met(&self) -> Option<bool> {
        let target = self.benchmark.target?;
        self.value.as_ref().ok().map(|&value| target.is_met(value))
    }
}

/// Every benchmark, in the order `estactl bench` runs them.
pub const ALL: &[Benchmark] = &[
    Benchmark {
        name: "ping_pong_round_trip_ns",
        unit: "ns",
        about: "PING+PONG between the bundled ping and pong, default workers (100,000 per run); \
                brief: <= 0.5x Erlang's, see benches/peers/compare.sh",
        target: None,
        run: messaging::ping_pong_default_workers,
    },
    Benchmark {
        name: "ping_pong_round_trip_1_worker_ns",
        unit: "ns",
        about: "the same round trip with one worker thread",
        target: None,
        run: messaging::ping_pong_one_worker,
    },
    Benchmark {
        name: "spawn_run_exit_ns",
        unit: "ns",
        about: "1,000 noop processes spawned at once and run until all exited, per process; \
                brief: <= 1x Erlang's, see benches/peers/compare.sh",
        target: None,
        run: spawning::many_at_once,
    },
    Benchmark {
        name: "handler_spawn_run_exit_ns",
        unit: "ns",
        about: "1,000 trivial handler processes (exit at their first call) spawned at once \
                and run until all exit",
        target: None,
        run: spawning::many_handlers_at_once,
    },
    Benchmark {
        name: "spawn_run_exit_single_ns",
        unit: "ns",
        about: "spawn one noop then run the kernel until it exited, 200 times on one kernel, \
                default workers, after 300 cycles not measured",
        target: None,
        run: spawning::one_at_a_time,
    },
    Benchmark {
        name: "handler_ping_pong_round_trip_ns",
        unit: "ns",
        about: "PING+PONG between two handler processes (entry point called once per \
                message, no fiber), default workers (100,000 per run)",
        target: None,
        run: messaging::handler_ping_pong_default_workers,
    },
    Benchmark {
        name: "handler_ping_pong_round_trip_1_worker_ns",
        unit: "ns",
        about: "the same handler round trip with one worker thread",
        target: None,
        run: messaging::handler_ping_pong_one_worker,
    },
    Benchmark {
        name: "ping_pong_4_pairs_round_trip_ns",
        unit: "ns",
        about: "4 task ping-pong pairs at once on the default workers, 100,000 round trips \
                each: wall time / all round trips (a round trip under load: the one-pair \
                fast paths mostly cannot apply)",
        target: None,
        run: messaging::task_pairs,
    },
    Benchmark {
        name: "handler_ping_pong_4_pairs_round_trip_ns",
        unit: "ns",
        about: "the same with 4 handler pairs",
        target: None,
        run: messaging::handler_pairs,
    },
    Benchmark {
        name: "wasmtime_ping_pong_ns",
        unit: "ns",
        about: "baseline: the same round trip between two plain Wasmtime async stores, host \
                send/recv on a shared queue, no kernel (100,000 per run)",
        target: None,
        run: baseline::ping_pong,
    },
    Benchmark {
        name: "wasmtime_handoff_ping_pong_ns",
        unit: "ns",
        about: "baseline: the plain Wasmtime round trip with the receiver run inside the \
                sender's recv (two fiber switches, as the kernel's handoff): the engine's \
                floor for blocking receives (100,000 per run)",
        target: None,
        run: baseline::handoff_ping_pong,
    },
    Benchmark {
        name: "wasmtime_spawn_run_exit_ns",
        unit: "ns",
        about: "baseline: a Store, pooled instantiation, call and drop of the bundled noop in \
                plain Wasmtime, no kernel, one thread (1,000 per run)",
        target: None,
        run: baseline::spawn_run_exit,
    },
    Benchmark {
        name: "idle_process_bytes",
        unit: "bytes",
        about: "resident memory and page tables per process with 100,000 idle processes \
                alive (median); brief: 100,000 of them in 24 GiB",
        target: Some(Target::AtMost(idle::BYTES_PER_PROCESS_BUDGET)),
        run: idle::bytes_per_process,
    },
    Benchmark {
        name: "idle_spawn_ns",
        unit: "ns",
        about: "time from the first spawn until 100,000 idle processes all wait in receive, \
                per process",
        target: None,
        run: idle::spawn_ns,
    },
    Benchmark {
        name: "idle_handler_process_bytes",
        unit: "bytes",
        about: "resident memory and page tables per process with 100,000 idle handler \
                processes alive \
                (median): parked between messages, no fiber stack",
        target: None,
        run: idle::handler_bytes_per_process,
    },
    Benchmark {
        name: "preemption_overhead_ratio",
        unit: "ratio",
        about: "the worst of the four CPU-bound guests below: a kernel process (fuel, default \
                config) / the same module unpreempted (plain Wasmtime, the kernel's memory \
                layout, no fuel); median of paired rounds",
        target: Some(Target::AtMost(1.15)),
        run: preemption::overhead_ratio,
    },
    Benchmark {
        name: "preemption_lcg_ratio",
        unit: "ratio",
        about: "the same for a 64-bit LCG loop (dependent multiplies)",
        target: None,
        run: preemption::lcg,
    },
    Benchmark {
        name: "preemption_sum_ratio",
        unit: "ratio",
        about: "the same for a sum += i loop (fuel's worst case)",
        target: None,
        run: preemption::sum,
    },
    Benchmark {
        name: "preemption_memory_ratio",
        unit: "ratio",
        about: "the same for a load-add-store loop over 64 KiB",
        target: None,
        run: preemption::memory,
    },
    Benchmark {
        name: "preemption_calls_ratio",
        unit: "ratio",
        about: "the same for a loop calling a small function",
        target: None,
        run: preemption::calls,
    },
    Benchmark {
        name: "preemption_vs_plain_wasmtime_ratio",
        unit: "ratio",
        about: "the worst of the four guests as a kernel process / in Wasmtime's default \
                config (4 GiB reservations, bounds checks in guard pages): fuel and the \
                kernel's 64 MiB memory slots together",
        target: None,
        run: preemption::against_default_ratio,
    },
    Benchmark {
        name: "fairness_10s",
        unit: "ratio",
        about: "min(actual/expected CPU) of four CPU-bound NORMAL processes after 10 s \
                on the default workers (brief §3.2)",
        target: Some(Target::AtLeast(0.8)),
        run: fairness::fairness,
    },
    Benchmark {
        name: "capability_check_ns",
        unit: "ns",
        about: "CapabilityEngine::find of a channel WRITE in a 4-capability table, host only",
        target: None,
        run: syscalls::capability_check,
    },
    Benchmark {
        name: "noop_syscall_ns",
        unit: "ns",
        about: "a self_pid call (the cheapest syscall: no capability check, the engine's \
                floor) from a guest loop, minus the same loop without it; median of pairs",
        target: None,
        run: syscalls::noop_syscall,
    },
    Benchmark {
        name: "checked_syscall_ns",
        unit: "ns",
        about: "a clock_now call (through the capability choke point), minus the loop; \
                median of pairs",
        target: None,
        run: syscalls::checked_syscall,
    },
    Benchmark {
        name: "service_call_round_trip_ns",
        unit: "ns",
        about: "a client's call to the bundled echo service (a handler), as `estactl \
                bench-service` makes it: median round trip of 20,000, timed in the guest",
        target: None,
        run: service::echo_round_trip,
    },
    Benchmark {
        name: "boot_cold_ms",
        unit: "ms",
        about: "builder to spawn_all with 4 services (noop, ping, pong, testkit), empty \
                compiled-module cache",
        target: None,
        run: boot::cold,
    },
    Benchmark {
        name: "boot_warm_ms",
        unit: "ms",
        about: "the same boot again on the filled cache",
        target: Some(Target::AtMost(20.0)),
        run: boot::warm,
    },
];

/// The benchmark named `name`.
pub fn find(name: &str) -> Option<&'static Benchmark> {
    ALL.iter().find(|benchmark| benchmark.name == name)
}

/// True if `filter` selects the benchmark `name`: `filter` is one or more
/// name fragments separated by commas, and `name` contains one of them.
pub fn selects(filter: &str, name: &str) -> bool {
    filter_patterns(filter).any(|pattern| name.contains(pattern))
}

/// The name fragments of a `filter` (see [`selects`]), empty ones skipped.
pub fn filter_patterns(filter: &str) -> impl Iterator<Item = &str> {
    filter.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Runs the benchmarks `filter` selects (all without one; see
/// [`selects`]), in registry order.
pub fn run_all(settings: &Settings, filter: Option<&str>) -> Vec<Outcome> {
    run_each(settings, filter, |_| {})
}

/// Like [`run_all`], calling `done` with each outcome as it is measured
/// (for progress output).
pub fn run_each(
    settings: &Settings,
    filter: Option<&str>,
    mut done: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for benchmark in ALL {
        if filter.is_some_and(|filter| !selects(filter, benchmark.name)) {
            continue;
        }
        let started = Instant::now();
        // A figure that is not a number (a division by a count of zero)
        // is a failure with a reason, never a silent `null` or `inf`.
        let value = (benchmark.run)(settings).and_then(|value| {
            anyhow::ensure!(
                value.is_finite(),
                "{} measured {value}, not a figure",
                benchmark.name
            );
            Ok(value)
        });
        let outcome = Outcome {
            benchmark,
            value,
            took: started.elapsed(),
        };
        done(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}

/// The outcomes as one JSON object, `{"<name>": figure, ..., "repeat": N}`,
/// the shape `benches/peers/compare.sh` reads, with `"quick": true` in
/// quick mode. A benchmark that failed is `null`, and its error is under
/// `"errors"` (present only if one failed).
pub fn to_json(outcomes: &[Outcome], settings: &Settings) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    let mut errors = serde_json::Map::new();
    for outcome in outcomes {
        let value = match &outcome.value {
            Ok(value) => serde_json::Number::from_f64(measure::round(*value))
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Err(error) => {
                errors.insert(outcome.benchmark.name.into(), format!("{error:#}").into());
                serde_json::Value::Null
            }
        };
        object.insert(outcome.benchmark.name.into(), value);
    }
    object.insert("repeat".into(), settings.runs().into());
    if settings.quick {
        object.insert("quick".into(), true.into());
    }
    if !errors.is_empty() {
        object.insert("errors".into(), errors.into());
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_json_friendly() {
        for (i, benchmark) in ALL.iter().enumerate() {
            assert!(
                benchmark
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                benchmark.name
            );
            assert!(
                ALL[..i].iter().all(|other| other.name != benchmark.name),
                "{} twice",
                benchmark.name
            );
            assert_ne!(benchmark.name, "repeat");
        }
    }

    #[test]
    fn the_peer_comparison_keys_exist() {
        for name in [
            "ping_pong_round_trip_ns",
            "spawn_run_exit_ns",
            "idle_process_bytes",
            "idle_spawn_ns",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_filter_selects_what_any_of_its_fragments_matches() {
        assert!(selects("spawn", "spawn_run_exit_ns"));
        assert!(selects(
            "ping_pong_round_trip_ns, spawn_run",
            "spawn_run_exit_ns"
        ));
        assert!(selects(
            "ping_pong_round_trip_ns,spawn_run",
            "handler_ping_pong_round_trip_ns"
        ));
        assert!(!selects(
            "ping_pong_round_trip_ns,spawn_run",
            "idle_process_bytes"
        ));
        // Empty fragments select nothing, not everything.
        assert!(!selects(",", "idle_process_bytes"));
        assert!(!selects("", "idle_process_bytes"));
        assert_eq!(filter_patterns(" a, ,b ").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn targets_compare_both_ways() {
        assert!(Target::AtMost(1.15).is_met(1.15));
        assert!(!Target::AtMost(1.15).is_met(1.2));
        assert!(Target::AtLeast(0.8).is_met(0.9));
        assert!(!Target::AtLeast(0.8).is_met(0.7));
    }

    #[test]
    fn json_has_the_compare_sh_shape() {
        let outcomes = vec![
            Outcome {
                benchmark: &ALL[0],
                value: Ok(123.456_000_1),
                took: Duration::ZERO,
            },
            Outcome {
                benchmark: &ALL[1],
                value: Err(anyhow::anyhow!("no luck")),
                took: Duration::ZERO,
            },
        ];
        let json = to_json(&outcomes, &Settings::default());
        assert_eq!(json["ping_pong_round_trip_ns"], 123.456);
        assert!(json["ping_pong_round_trip_1_worker_ns"].is_null());
        assert_eq!(json["repeat"], 5);
        assert_eq!(
            json["errors"]["ping_pong_round_trip_1_worker_ns"],
            "no luck"
        );
    }
}
