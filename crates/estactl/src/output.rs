//! How `estactl` prints run summaries and IPC traces, for people and as
//! JSON.

use anyhow::Result;
use estalogic_kernel::abi::{Flags, Pid};
use estalogic_kernel::{ExitStatus, RunReport, TraceRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Standard output could not be written (a full device, a closed
/// descriptor): `estactl` exits 74 (`EX_IOERR`) on it.
#[derive(Debug)]
pub struct OutputError(pub std::io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// Whether descriptor 1 was open when the process started (checked on
/// Linux; elsewhere taken as open). Rust's runtime
/// reopens a closed standard descriptor on `/dev/null` before `main`, so
/// that a later file cannot take its number; a closed stdout (`>&-`) would
/// then swallow a run's summary while the exit code said all was well.
static STDOUT_OPEN_AT_START: AtomicBool = AtomicBool::new(true);

/// Records [`STDOUT_OPEN_AT_START`] before Rust's runtime starts: the C
/// runtime calls the functions of `.init_array` before `main`, which is
/// where Rust's runtime sanitises the descriptors.
#[cfg(target_os = "linux")]
#[used]
// SAFETY: `.init_array` holds pointer-sized pointers to functions the C
// runtime calls before `main`, which this is. glibc passes them `(argc,
// argv, envp)`; under the System V C ABI a function that takes no
// arguments may be called so (the extra registers are ignored). It runs
// before Rust's runtime, so it does nothing that needs it: no allocation,
// no thread-locals, no panic (an atomic store and one system call). A
// constructor of another library that ran earlier and opened a file on
// descriptor 1 would hide a closed stdout; none of ours does.
#[unsafe(link_section = ".init_array")]
static RECORD_STDOUT: extern "C" fn() = {
    extern "C" fn record() {
        // SAFETY: `fcntl(F_GETFD)` on descriptor 1 only reads its flags: no
        // memory arguments, no effect on the descriptor; it needs nothing
        // of Rust's runtime.
        let open = unsafe { libc::fcntl(1, libc::F_GETFD) } != -1;
        STDOUT_OPEN_AT_START.store(open, Ordering::Relaxed);
    }
    record
};

/// Standard output, locked, or why it cannot be written: closed when the
/// program started (see [`STDOUT_OPEN_AT_START`]), which is `EBADF`.
pub fn stdout() -> Result<std::io::StdoutLock<'static>, OutputError> {
    if !STDOUT_OPEN_AT_START.load(Ordering::Relaxed) {
        return Err(OutputError(std::io::Error::from_raw_os_error(libc::EBADF)));
    }
    Ok(std::io::stdout().lock())
}

/// `text` with every control character escaped (`\n`, `\u{1b}`): what an
/// app's files put in names, paths and scopes reaches the terminal as
/// text, never as an escape sequence or a forged line.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The per-process summary table.
pub fn print_summary(report: &RunReport) -> Result<()> {
    outln!(
        "{:<8} {:<16} {:<8} {:>9} {:>9} {:>14}  status",
        "pid",
        "module",
        "priority",
        "sent",
        "received",
        "fuel"
    )?;
    let mut processes: Vec<_> = report.processes.iter().collect();
    processes.sort_by_key(|p| (p.pid.index(), p.pid.generation()));
    for p in processes {
        let mut notes = String::new();
        if p.send_failures > 0 {
            notes.push_str(&format!(" ({} failed sends)", p.send_failures));
        }
        if p.delivery_failures > 0 {
            notes.push_str(&format!(
                " ({} sent messages not delivered)",
                p.delivery_failures
            ));
        }
        if p.undelivered > 0 {
            notes.push_str(&format!(
                " ({} messages not taken: dropped by its mailbox or left at exit)",
                p.undelivered
            ));
        }
        outln!(
            "{:<8} {:<16} {:<8} {:>9} {:>9} {:>14}  {}{}",
            p.pid.to_string(),
            p.module,
            p.priority.name(),
            p.sent,
            p.received,
            p.fuel_used,
            p.status,
            notes
        )?;
    }
    for restart in &report.restarts {
        outln!(
            "restart: {} {} trapped ({}) -> {:?}{}",
            restart.module,
            restart.pid,
            restart.code,
            restart.action,
            restart
                .new_pid
                .map(|pid| format!(", now {pid}"))
                .unwrap_or_default()
        )?;
    }
    let fairness = report
        .stats
        .fairness
        .map_or("n/a".to_string(), |f| format!("{f:.2}"));
    outln!(
        "{} processes in {:.1} ms on {} worker(s); fairness {}; {} checkpoints; {} handoffs",
        report.processes.len(),
        report.elapsed.as_secs_f64() * 1e3,
        report.stats.workers,
        fairness,
        report.stats.checkpoints,
        report.stats.handoffs
    )?;
    if report.stats.notices_unsupervised > 0 {
        outln!(
            "{} exit notification(s) found no live supervisor to take them",
            report.stats.notices_unsupervised
        )?;
    }
    Ok(())
}

/// The run summary as JSON.
pub fn summary_json(report: &RunReport) -> serde_json::Value {
    let processes: Vec<serde_json::Value> = report
        .processes
        .iter()
        .map(|p| {
            let status = match &p.status {
                ExitStatus::Exited(code) => serde_json::json!({"kind": "exited", "code": code}),
                ExitStatus::Trapped { code, detail } => serde_json::json!({
                    "kind": "trapped", "code": code.0, "name": code.name(), "detail": detail
                }),
                ExitStatus::Stopped(code) => {
                    serde_json::json!({"kind": "stopped", "code": code.0, "name": code.name()})
                }
            };
            serde_json::json!({
                "pid": p.pid.to_u64(),
                "module": p.module,
                "priority": p.priority.name(),
                "status": status,
                "sent": p.sent,
                "received": p.received,
                "send_failures": p.send_failures,
                "delivery_failures": p.delivery_failures,
                "undelivered": p.undelivered,
                "fuel_used": p.fuel_used,
                "cpu_ns": p.cpu_ns,
                "preemptions": p.preemptions,
                "requeues": p.requeues,
            })
        })
        .collect();
    let restarts: Vec<serde_json::Value> = report
        .restarts
        .iter()
        .map(|r| {
            serde_json::json!({
                "module": r.module, "pid": r.pid.to_u64(), "code": r.code.0,
                "action": format!("{:?}", r.action), "new_pid": r.new_pid.map(Pid::to_u64),
            })
        })
        .collect();
    serde_json::json!({
        "elapsed_ms": report.elapsed.as_secs_f64() * 1e3,
        "workers": report.stats.workers,
        "fairness": report.stats.fairness,
        "checkpoints": report.stats.checkpoints,
        "handoffs": report.stats.handoffs,
        "notices_unsupervised": report.stats.notices_unsupervised,
        "processes": processes,
        "restarts": restarts,
    })
}

/// Every flag the ABI defines (`Flags::ALL`), with the name the readable
/// trace shows for it.
const FLAG_NAMES: [(Flags, &str); 6] = [
    (Flags::REPLY, "reply"),
    (Flags::ACK_REQUESTED, "ack?"),
    (Flags::ACK, "ack"),
    (Flags::BROADCAST, "broadcast"),
    (Flags::DELIVERY_FAILURE, "delivery-failure"),
    (Flags::CALL, "call"),
];

fn flag_names(flags: Flags) -> String {
    let names: Vec<&str> = FLAG_NAMES
        .into_iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, name)| name)
        .collect();
    names.join(",")
}

/// The IPC trace: one line per message (at most `limit`, 0 = all).
pub fn print_trace(report: &RunReport, limit: usize, json: bool) -> Result<()> {
    let names = module_names(report);
    let name = |pid: Pid| {
        if pid == Pid::KERNEL {
            "kernel".to_string()
        } else {
            format!("{}{}", names.get(&pid).copied().unwrap_or("?"), pid)
        }
    };
    let shown = if limit == 0 {
        report.trace.len()
    } else {
        limit.min(report.trace.len())
    };
    for record in &report.trace[..shown] {
        let h = &record.header;
        if json {
            outln!("{}", record_json(record, &names))?;
        } else {
            let flags = flag_names(h.flags);
            outln!(
                "{:>12.3} µs  {:<18} -> {:<18} {:<16?} seq {:<6} prio {} {:>6} B{}{}",
                h.timestamp as f64 / 1e3,
                name(h.source),
                name(h.target),
                h.message_type,
                h.sequence,
                h.priority.get(),
                record.payload_len,
                if h.correlation != 0 {
                    format!("  corr {}", h.correlation)
                } else {
                    String::new()
                },
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{flags}]")
                },
            )?;
        }
    }
    if shown < report.trace.len() {
        let more = report.trace.len() - shown;
        if json {
            // On stderr: stdout stays one JSON record a line.
            errln!("note: {more} more messages not shown (use --limit 0 for all)");
        } else {
            outln!("... {more} more messages (use --limit 0 for all)")?;
        }
    }
    if report.trace_dropped > 0 {
        errln!(
            "note: the trace holds the first {} messages; {} more were not recorded",
            report.trace.len(),
            report.trace_dropped
        );
    }
    Ok(())
}

/// Module names by pid, for the trace.
fn module_names(report: &RunReport) -> HashMap<Pid, &str> {
    report
        .processes
        .iter()
        .map(|p| (p.pid, p.module.as_str()))
        .collect()
}

/// One trace record as JSON.
fn record_json(record: &TraceRecord, names: &HashMap<Pid, &str>) -> serde_json::Value {
    let h = &record.header;
    serde_json::json!({
        "at_ns": h.timestamp, "from": h.source.to_u64(), "to": h.target.to_u64(),
        "from_module": names.get(&h.source), "to_module": names.get(&h.target),
        "type": h.message_type.0, "sequence": h.sequence, "priority": h.priority.get(),
        "correlation": h.correlation, "flags": h.flags.bits(), "bytes": record.payload_len,
    })
}

/// The whole trace as a JSON array (for `run --json --trace`).
pub fn trace_json(report: &RunReport) -> serde_json::Value {
    let names = module_names(report);
    report
        .trace
        .iter()
        .map(|record| record_json(record, &names))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each flag bit the ABI defines has a name of its own, so the
    /// readable trace hides none.
    #[test]
    fn every_defined_flag_is_named() {
        let named = FLAG_NAMES
            .iter()
            .fold(0u16, |bits, (flag, _)| bits | flag.bits());
        assert_eq!(named, Flags::ALL.bits());
        for (flag, name) in FLAG_NAMES {
            assert_eq!(flag.bits().count_ones(), 1, "{name}");
            assert_eq!(flag_names(flag), name);
        }
        assert_eq!(flag_names(Flags::CALL | Flags::ACK_REQUESTED), "ack?,call");
    }
}
