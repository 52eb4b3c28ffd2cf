//! `estactl bench`: runs the benchmark suite of `estalogic-bench` (see its
//! docs for what each benchmark measures) and prints a table, or one JSON
//! object for machines: `{"<name>": figure, ..., "repeat": N}` (and
//! `"quick": true` in quick mode) — the shape `benches/peers/compare.sh`
//! reads.
//!
//! Progress goes to stderr. A benchmark that fails is reported with its
//! error — an `error` row and the text under the table; `null` and an
//! `"errors"` member in JSON — and the others still run. The exit status
//! stays 0 (a failed measurement is a result, and `compare.sh` must still
//! get the other figures); a warning on stderr counts the failures.

use anyhow::{Result, bail};
use estalogic_bench::{ALL, Outcome, Settings, Target, measure};

/// Runs the benchmarks `only` selects (all without it: a comma-separated
/// list of name fragments, see [`estalogic_bench::selects`]) and prints
/// their figures; `list` only prints what there is.
pub fn run(repeat: u32, json: bool, only: Option<&str>, quick: bool, list: bool) -> Result<()> {
    if let Some(only) = only {
        let mut patterns = estalogic_bench::filter_patterns(only).peekable();
        if patterns.peek().is_none() {
            bail!("--only {only:?} names no benchmark (see `estactl bench --list`)");
        }
        for pattern in patterns {
            if !ALL.iter().any(|benchmark| benchmark.name.contains(pattern)) {
                bail!("no benchmark name contains {pattern:?} (see `estactl bench --list`)");
            }
        }
    }
    if list {
        print_list(only, json)?;
        return Ok(());
    }
    let settings = Settings {
        repeat: repeat.max(1),
        quick,
    };
    // A bad ESTALOGIC_IDLE_PROCESSES fails the idle benchmarks (each says
    // so in its row); say it now, not after the others have run.
    let idle_selected = ALL.iter().any(|benchmark| {
        benchmark.name.starts_with("idle_")
            && only.is_none_or(|only| estalogic_bench::selects(only, benchmark.name))
    });
    if idle_selected && let Err(error) = estalogic_bench::idle::idle_count(&settings) {
        errln!("bench: warning: {error:#}; the idle benchmarks will fail");
    }
    // A signal stops the run at once: put back what the idle benchmarks
    // changed on the host first (vm.max_map_count), then exit 130.
    ctrlc::set_handler(|| {
        estalogic_bench::idle::restore_map_limit();
        errln!("bench: interrupted");
        std::process::exit(130);
    })
    .map_err(|error| anyhow::anyhow!("cannot install the Ctrl-C handler: {error}"))?;
    let outcomes = estalogic_bench::run_each(&settings, only, |outcome| {
        let status = if outcome.value.is_ok() {
            ""
        } else {
            " (failed)"
        };
        errln!(
            "bench: {} {:.1} s{status}",
            outcome.benchmark.name,
            outcome.took.as_secs_f64()
        );
    });
    if json {
        outln!("{}", estalogic_bench::to_json(&outcomes, &settings))?;
    } else {
        print_table(&outcomes, &settings)?;
    }
    let failed = outcomes.iter().filter(|o| o.value.is_err()).count();
    if failed > 0 {
        errln!("bench: warning: {failed} benchmark(s) failed; see their errors");
    }
    Ok(())
}

/// The benchmarks `only` selects (all without it), a line each, or a
/// JSON array of their names, units, descriptions and targets.
fn print_list(only: Option<&str>, json: bool) -> Result<()> {
    let chosen: Vec<_> = ALL
        .iter()
        .filter(|b| only.is_none_or(|only| estalogic_bench::selects(only, b.name)))
        .collect();
    if json {
        let entries: Vec<_> = chosen
            .iter()
            .map(|b| {
                let target = b.target.map(|target| match target {
                    Target::AtMost(limit) => serde_json::json!({"at_most": limit}),
                    Target::AtLeast(floor) => serde_json::json!({"at_least": floor}),
                });
                serde_json::json!({
                    "name": b.name,
                    "unit": b.unit,
                    "about": b.about,
                    "target": target,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(entries))?;
        return Ok(());
    }
    let width = chosen.iter().map(|b| b.name.len()).max().unwrap_or(0);
    for benchmark in chosen {
        let target = benchmark
            .target
            .map(|t| format!(" [target {t} {}]", benchmark.unit))
            .unwrap_or_default();
        outln!(
            "{:width$}  {:5}  {}{target}",
            benchmark.name,
            benchmark.unit,
            benchmark.about
        )?;
    }
    Ok(())
}

fn print_table(outcomes: &[Outcome], settings: &Settings) -> Result<()> {
    let mut rows = vec![[
        "benchmark".to_string(),
        "value".to_string(),
        "unit".to_string(),
        "target".to_string(),
        "met".to_string(),
    ]];
    for outcome in outcomes {
        let benchmark = outcome.benchmark;
        let value = match &outcome.value {
            Ok(value) => measure::readable(*value),
            Err(_) => "error".to_string(),
        };
        let met = match outcome.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        rows.push([
            benchmark.name.to_string(),
            value,
            benchmark.unit.to_string(),
            benchmark.target.map(|t| t.to_string()).unwrap_or_default(),
            met.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let quick = if settings.quick {
        "; quick mode: small counts, not comparable"
    } else {
        ""
    };
    outln!(
        "ESTA Logic benchmarks: times best of {} runs, memory the median{quick}",
        settings.runs()
    )?;
    for (index, row) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        outln!("{}", line.trim_end())?;
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            outln!("{}", rule.join("  "))?;
        }
    }
    let mut first = true;
    for outcome in outcomes {
        if let Err(error) = &outcome.value {
            if first {
                outln!()?;
                first = false;
            }
            outln!("{}: {error:#}", outcome.benchmark.name)?;
        }
    }
    Ok(())
}
