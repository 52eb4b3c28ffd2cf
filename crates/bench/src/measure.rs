//! Measuring helpers: repeat-and-keep-the-best, medians, resident memory,
//! and number formatting.
//!
//! Times keep the best of the runs: on a shared machine noise only ever
//! adds time, so the minimum is the figure closest to the cost itself.
//! Memory keeps the median: it is not biased in one direction (allocator
//! reuse between runs can make later runs read low, page faults high).

use anyhow::{Context as _, Result, bail, ensure};
use std::time::Duration;

/// Runs `measure` `runs` times (at least once) and keeps the smallest
/// figure; the first error ends the runs.
pub fn best_of(runs: u32, mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        best = best.min(measure()?);
    }
    Ok(best)
}

/// Runs `measure` `runs` times (at least once) and keeps the median; the
/// first error ends the runs.
pub fn median_of(runs: u32, mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut figures = Vec::new();
    for _ in 0..runs.max(1) {
        figures.push(measure()?);
    }
    Ok(median(figures))
}

/// The median of `figures` (the upper middle of an even count; NaN if
/// there are none).
pub fn median(figures: impl IntoIterator<Item = f64>) -> f64 {
    let mut figures: Vec<f64> = figures.into_iter().collect();
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The smallest of `figures` (infinity if there are none).
pub fn minimum(figures: impl IntoIterator<Item = f64>) -> f64 {
    figures.into_iter().fold(f64::INFINITY, f64::min)
}

/// Nanoseconds per item of `elapsed` spread over `count` items.
pub fn nanos_per(elapsed: Duration, count: u64) -> f64 {
    elapsed.as_secs_f64() * 1e9 / count.max(1) as f64
}

/// Milliseconds in `elapsed`.
pub fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}

/// This process's resident set size in bytes (`VmRSS` of
/// `/proc/self/status`; Linux only).
pub fn resident_bytes() -> Result<u64> {
    status_bytes("VmRSS")
}

/// What this process's memory costs the host in bytes: its resident set
/// plus the page tables that map it (`VmRSS` + `VmPTE` of
/// `/proc/self/status`; Linux only). Page tables are the kernel's per
/// process cost that RSS leaves out: about 5 KB of them for each idle task
/// process (one page-table page per 64 MiB memory slot, and the stack's).
pub fn footprint_bytes() -> Result<u64> {
    Ok(status_bytes("VmRSS")? + status_bytes("VmPTE")?)
}

/// The `field` line of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (memory is measured on Linux only)")?;
    let Some(line) = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    }) else {
        bail!("/proc/self/status has no {field} line");
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        fields.len() == 3 && fields[2] == "kB",
        "unexpected {field} line {line:?}"
    );
    let kib: u64 = fields[1]
        .parse()
        .with_context(|| format!("unexpected {field} line {line:?}"))?;
    Ok(kib * 1024)
}

/// `value` to three decimals: enough for every figure, no float noise.
pub fn round(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

/// `value` for people: thousands separated, fewer decimals as it grows
/// (`1,234,567`, `523.4`, `1.083`).
pub fn readable(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    if magnitude >= 1_000.0 {
        let digits = format!("{:.0}", magnitude);
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        let sign = if value < 0.0 { "-" } else { "" };
        format!("{sign}{grouped}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_and_median() {
        let mut figures = [5.0, 1.0, 3.0, 4.0].into_iter();
        assert_eq!(best_of(4, || Ok(figures.next().unwrap())).unwrap(), 1.0);
        let mut figures = [5.0, 1.0, 3.0].into_iter();
        assert_eq!(median_of(3, || Ok(figures.next().unwrap())).unwrap(), 3.0);
        assert_eq!(best_of(0, || Ok(7.0)).unwrap(), 7.0);
        assert!(best_of(3, || anyhow::bail!("broken")).is_err());
        assert_eq!(median([2.0, 9.0, 1.0, 4.0]), 4.0);
        assert!(median([]).is_nan());
        assert_eq!(minimum([2.0, 9.0, 1.0]), 1.0);
    }

    #[test]
    fn readable_numbers() {
        assert_eq!(readable(1_234_567.4), "1,234,567");
        assert_eq!(readable(-12_345.0), "-12,345");
        assert_eq!(readable(1_597.0), "1,597");
        assert_eq!(readable(523.44), "523.4");
        assert_eq!(readable(1.0834), "1.083");
        assert_eq!(round(1.234_56), 1.235);
    }

    #[test]
    fn per_item() {
        assert_eq!(nanos_per(Duration::from_millis(1), 1_000), 1_000.0);
        assert_eq!(millis(Duration::from_micros(1_500)), 1.5);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn resident_memory_is_readable() {
        let resident = resident_bytes().unwrap();
        assert!(resident > 0);
        assert!(footprint_bytes().unwrap() >= resident);
    }
}
