//! `estactl`: the ESTA Logic command-line tool.
//!
//! - `run <app-dir>` boots the kernel with every module of an app directory,
//!   runs until all processes end (Ctrl-C stops cleanly) and prints a
//!   summary per process; `--trace` adds the IPC trace.
//! - `trace-ipc <app-dir>` runs an app and prints every message, readably.
//! - `list-modules <app-dir>` and `show-capabilities <app-dir> <module>`
//!   inspect an app without running it.
//! - `bench` measures the kernel's basic costs on the bundled services.
//! - `bench-service <app-dir> <module>` puts a load on one service of an app
//!   and prints its clients' round trips and throughput.

/// Writes a line to standard output; a write that fails (a full device, a
/// descriptor closed at start, see [`output::stdout`]) is an
/// [`output::OutputError`], which `main` reports and exits 74 on
/// (`println!` panicked).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        match $crate::output::stdout() {
            Ok(mut out) => writeln!(out, $($arg)*).map_err($crate::output::OutputError),
            Err(error) => Err(error),
        }
    }};
}

/// Writes a line to standard error, dropping it if it cannot be written
/// (`eprintln!` panicked with stderr on a full device).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod allocator;
mod bench;
mod bench_service;
mod inspect;
mod output;

/// mimalloc instead of the system allocator: kernel workers free what
/// another thread allocated (a process is spawned on one thread and reaped
/// on another), which contends on glibc's arena locks.
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use estalogic_bench::service::{self, ServiceLoad};
use estalogic_kernel::abi::MessageType;
use estalogic_kernel::{Kernel, KernelBuilder, KernelError, ModuleCache};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "estactl",
    version,
    about = "Run and inspect ESTA Logic kernel apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that boot a kernel.
#[derive(clap::Args, Clone, Copy)]
struct BootOptions {
    /// Deterministic mode: virtual clock (the summary's elapsed time is
    /// virtual too, the same at every run), fuel-only preemption, one worker.
    #[arg(long)]
    deterministic: bool,
    /// Compile every module afresh instead of using the compiled-module
    /// cache ($ESTALOGIC_CACHE_DIR or ~/.cache/estalogic/modules).
    #[arg(long)]
    no_cache: bool,
    /// How many processes may be alive at once (default 4,096; more may
    /// need a higher vm.max_map_count, which the error names).
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_processes: Option<u32>,
    /// Also preempt on wall-clock time (epoch interruption, every 10 ms),
    /// at a run-time cost for tight loops; fuel alone is the default.
    #[arg(long)]
    wall_clock_backstop: bool,
    /// The most guest memory all processes may hold together (bytes, or
    /// with a suffix: 512MiB, 8GiB, 64K ...): a growth past it fails as one
    /// past a memory class does. Unbounded by default.
    #[arg(long, value_name = "SIZE", value_parser = memory_size)]
    memory_budget: Option<u64>,
}

/// Parses a size: a number of bytes, or one with a binary suffix (K, KiB,
/// M, MiB, G, GiB, T, TiB; any case).
fn memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    if !number.is_empty() && suffix.starts_with(['.', ',']) {
        return Err(format!(
            "{text:?} is not a whole number: give a smaller unit (1.5GiB is 1536MiB)"
        ));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => {
            return Err(format!(
                "{other:?} is not a size unit: use bytes or K, M, G, T (KiB, MiB, GiB, TiB)"
            ));
        }
    };
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size: a number of bytes, e.g. 512MiB"
        ));
    }
    // Only digits are left: a number that does not parse is too large.
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Subcommand)]
enum Command {
    /// Boot an app directory (manifests + modules) and run it to completion.
    Run {
        /// Directory holding `manifest.json` files (itself or one per subdirectory).
        app_dir: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Also print every message sent (the IPC trace) after the summary.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        boot: BootOptions,
    },
    /// Run an app and print a readable trace of every message.
    TraceIpc {
        /// The app directory.
        app_dir: PathBuf,
        /// Print at most this many messages (0 = all).
        #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
        limit: usize,
        /// Print the trace as JSON lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        boot: BootOptions,
    },
    /// List an app's modules: version, priority, memory class, state, needs.
    ListModules {
        /// The app directory.
        app_dir: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the capabilities a module's processes are granted.
    ShowCapabilities {
        /// The app directory.
        app_dir: PathBuf,
        /// The module's name.
        module: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmark suite: messaging, spawning, idle memory,
    /// preemption overhead, syscalls, boot.
    Bench {
        /// Runs of each measurement (the best time, or the median memory,
        /// is reported).
        #[arg(
            long,
            default_value_t = 5,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        repeat: u32,
        /// Print one JSON object on stdout: `{"<name>": value, ..., "repeat": N}`,
        /// with `"quick": true` in quick mode and the failures' reasons under
        /// `"errors"`.
        #[arg(long)]
        json: bool,
        /// Run only the benchmarks whose name contains NAME; several
        /// fragments separated by commas select what any of them matches.
        #[arg(long, value_name = "NAME[,NAME...]")]
        only: Option<String>,
        /// Small counts, to check that everything runs; figures are not
        /// comparable.
        #[arg(long)]
        quick: bool,
        /// List the benchmarks (name, unit, what is measured, target) instead
        /// of running them: those `--only` selects, as JSON with `--json`.
        #[arg(long)]
        list: bool,
    },
    /// Put a load on one service of an app: client processes call it
    /// (request, wait for the answer) and report round trips and throughput.
    BenchService {
        /// The app directory.
        app_dir: PathBuf,
        /// The service's module name; it is spawned with the modules it
        /// depends on and its supervisor, not the rest of the app.
        module: String,
        /// The requests' message type: a name (PING, ACCRUAL_REQUEST, ...)
        /// or a number (4097, 0x1001).
        #[arg(long = "type", default_value = "PING", value_parser = message_type)]
        message_type: MessageType,
        /// The requests' payload, as text.
        #[arg(long, conflicts_with = "payload_file")]
        payload: Option<String>,
        /// The requests' payload, from a file (at most 1 MiB).
        #[arg(long, value_name = "FILE")]
        payload_file: Option<PathBuf>,
        /// Count an answer of another type than this as a failure.
        #[arg(long, value_parser = message_type)]
        expect: Option<MessageType>,
        /// Measured calls per client.
        #[arg(
            long,
            default_value_t = 10_000,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(service::MAX_REQUESTS))
        )]
        requests: u32,
        /// Calls per client before the measured ones.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        warmup: u32,
        /// Client processes calling at once.
        #[arg(
            long,
            default_value_t = 1,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(service::MAX_CLIENTS))
        )]
        clients: u32,
        /// How long a client waits for one answer, in milliseconds.
        #[arg(
            long,
            default_value_t = 10_000,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        timeout_ms: u32,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        boot: BootOptions,
    },
}

/// Parses `--type` and `--expect`.
fn message_type(text: &str) -> Result<MessageType, String> {
    service::parse_message_type(text)
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    init_logging();
    match execute(cli.command) {
        Ok(code) => code,
        Err(error) => {
            errln!("error: {}", output::printable(&format!("{error:#}")));
            if error.downcast_ref::<output::OutputError>().is_some() {
                ExitCode::from(74)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// Output piped into a reader that stops early (`estactl bench --list |
/// head`) ends the program quietly, as for any Unix tool, instead of a
/// panic on the failed write: Rust ignores SIGPIPE by default.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread
    // exists; setting a signal's disposition to its default has no other
    // precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging() {
    let filter = match std::env::var("ESTALOGIC_LOG") {
        Err(_) => tracing_subscriber::EnvFilter::new("info"),
        Ok(spec) => tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|error| {
            errln!(
                "warning: ESTALOGIC_LOG={} is not a log filter ({error}); logging at info",
                output::printable(&format!("{spec:?}"))
            );
            tracing_subscriber::EnvFilter::new("info")
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed or a full
        // device) is dropped: reporting the failure would write to stderr
        // again, and that write's failure panicked a kernel worker.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            app_dir,
            json,
            trace,
            boot,
        } => run(&app_dir, json, trace, boot),
        Command::TraceIpc {
            app_dir,
            limit,
            json,
            boot,
        } => {
            let mut kernel = boot_app(&app_dir, boot, true)?;
            let report = kernel.run();
            output::print_trace(&report, limit, json)?;
            Ok(exit_code(&report))
        }
        Command::ListModules { app_dir, json } => {
            let kernel = load_app(&app_dir, BootOptions::default_inspect(), false)?;
            inspect::list_modules(&kernel, json)?;
            // Loaded is not bootable: say what would stop `run`.
            if let Err(error) = kernel.check_boot() {
                errln!(
                    "error: the app would not boot: {}",
                    output::printable(&error.to_string())
                );
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ShowCapabilities {
            app_dir,
            module,
            json,
        } => {
            let kernel = load_app(&app_dir, BootOptions::default_inspect(), false)?;
            inspect::show_capabilities(&kernel, &module, json)?;
            // As `list-modules`: loaded is not bootable.
            if let Err(error) = kernel.check_boot() {
                errln!(
                    "error: the app would not boot: {}",
                    output::printable(&error.to_string())
                );
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            repeat,
            json,
            only,
            quick,
            list,
        } => bench::run(repeat, json, only.as_deref(), quick, list).map(|()| ExitCode::SUCCESS),
        Command::BenchService {
            app_dir,
            module,
            message_type,
            payload,
            payload_file,
            expect,
            requests,
            warmup,
            clients,
            timeout_ms,
            json,
            boot,
        } => {
            let payload = match (payload, payload_file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(file)) => read_payload(&file)?,
                (None, None) => Vec::new(),
            };
            let load = ServiceLoad {
                module,
                message_type,
                payload,
                expect,
                requests,
                warmup,
                clients,
                timeout_ms,
            };
            bench_service::run(&app_dir, &load, json, boot)
        }
    }
}

/// A payload file's bytes: at most a message's 1 MiB, read no further.
fn read_payload(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let limit = estalogic_kernel::abi::MAX_PAYLOAD_LEN;
    let opened = std::fs::File::open(file)
        .with_context(|| format!("cannot read the payload file {}", file.display()))?;
    let mut bytes = Vec::new();
    opened
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the payload file {}", file.display()))?;
    if bytes.len() > limit {
        anyhow::bail!(
            "the payload file {} is over a message's {limit} bytes",
            file.display()
        );
    }
    Ok(bytes)
}

impl BootOptions {
    fn default_inspect() -> Self {
        BootOptions {
            deterministic: false,
            no_cache: false,
            max_processes: None,
            wall_clock_backstop: false,
            memory_budget: None,
        }
    }
}

fn builder(options: BootOptions, trace: bool) -> KernelBuilder {
    let mut builder = Kernel::builder()
        .deterministic(options.deterministic)
        .wall_clock_backstop(options.wall_clock_backstop)
        .trace_ipc(trace)
        .bundled_modules(estalogic_services::SERVICES);
    if let Some(count) = options.max_processes {
        builder = builder.max_processes(count);
    }
    if let Some(bytes) = options.memory_budget {
        builder = builder.memory_budget(bytes);
    }
    if !options.no_cache {
        // The cache only saves time: if its directory cannot be made, say
        // so and compile afresh rather than refuse to run.
        let dir = ModuleCache::default_dir();
        match ModuleCache::new(&dir) {
            Ok(_) => builder = builder.module_cache(dir),
            // The error names the directory, which comes from the
            // environment: escaped like an app's paths.
            Err(error) => errln!(
                "warning: running without the compiled-module cache: {}",
                output::printable(&error.to_string())
            ),
        }
    }
    builder
}

/// Loads (validates, compiles) every module of an app without spawning.
fn load_app(app_dir: &Path, options: BootOptions, trace: bool) -> Result<Kernel> {
    let mut kernel = builder(options, trace).build()?;
    kernel
        .load_app_dir(app_dir)
        .map_err(|error| cannot_boot(app_dir, error))?;
    Ok(kernel)
}

/// "cannot boot DIR: ERROR", naming the directory once: most errors of an
/// app start with the path of the file at fault, inside it. That path is
/// the error's own ([`KernelError::path`]), compared component by
/// component: a text prefix took "cannot spawn b" for a path in an app
/// directory named `ca`.
fn cannot_boot(app_dir: &Path, error: KernelError) -> anyhow::Error {
    if error.path().is_some_and(|path| path.starts_with(app_dir)) {
        anyhow::anyhow!("cannot boot: {error}")
    } else {
        anyhow::anyhow!("cannot boot {}: {error}", app_dir.display())
    }
}

/// Loads an app, spawns its processes and wires Ctrl-C to a clean stop.
fn boot_app(app_dir: &Path, options: BootOptions, trace: bool) -> Result<Kernel> {
    let mut kernel = load_app(app_dir, options, trace)?;
    if let Err(error) = kernel.spawn_all() {
        errln!("{}", kernel.boot_report());
        return Err(cannot_boot(app_dir, error));
    }
    let shutdown = kernel.shutdown_handle();
    ctrlc::set_handler(move || {
        errln!("stopping: interrupted (Ctrl-C, SIGTERM or SIGHUP)");
        shutdown.request();
    })
    .context("cannot install the Ctrl-C (SIGINT, SIGTERM, SIGHUP) handler")?;
    Ok(kernel)
}

/// 0 if every process exited with code 0; 1 if one trapped, exited with
/// another code, or was stopped as deadlocked; 130 if the run was stopped
/// by a signal (SIGINT, SIGTERM, SIGHUP) and nothing failed before. A
/// process stopped because its supervisor or the system was restarted was
/// replaced, and counts as its replacement does.
fn exit_code(report: &estalogic_kernel::RunReport) -> ExitCode {
    use estalogic_kernel::ExitStatus;
    use estalogic_kernel::abi::ErrorCode;
    let failed = report.processes.iter().any(|p| match p.status {
        ExitStatus::Exited(code) => code != 0,
        ExitStatus::Trapped { .. } => true,
        ExitStatus::Stopped(reason) => {
            reason != ErrorCode::RESTARTED && reason != ErrorCode::SHUTDOWN
        }
    });
    let interrupted = report
        .processes
        .iter()
        .any(|p| p.status == ExitStatus::Stopped(ErrorCode::SHUTDOWN));
    if failed {
        ExitCode::from(1)
    } else if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(app_dir: &Path, json: bool, trace: bool, options: BootOptions) -> Result<ExitCode> {
    let mut kernel = boot_app(app_dir, options, trace)?;
    let report = kernel.run();
    if json {
        let mut summary = output::summary_json(&report);
        if trace {
            summary["trace"] = output::trace_json(&report);
            summary["trace_dropped"] = report.trace_dropped.into();
        }
        outln!("{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        output::print_summary(&report)?;
        if trace {
            outln!()?;
            output::print_trace(&report, 0, false)?;
        }
    }
    Ok(exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cannot_boot` names the app directory once: not again before an
    /// error that starts with a path in it, but before any other error,
    /// whatever the directory's name has in common with the error's text.
    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(memory_size("4096"), Ok(4096));
        assert_eq!(memory_size("64K"), Ok(64 << 10));
        assert_eq!(memory_size("512MiB"), Ok(512 << 20));
        assert_eq!(memory_size("8 gib"), Ok(8 << 30));
        assert!(
            memory_size("12XB")
                .unwrap_err()
                .contains("\"xb\" is not a size unit")
        );
        assert!(memory_size("GiB").unwrap_err().contains("not a size"));
        assert!(memory_size("-1").is_err());
        assert!(memory_size("99999999T").unwrap_err().contains("too large"));
        assert!(
            memory_size("18446744073709551616")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            memory_size("1.5GiB")
                .unwrap_err()
                .contains("not a whole number")
        );
    }

    #[test]
    fn cannot_boot_names_the_directory_once() {
        let app = |path: &str| KernelError::App {
            path: PathBuf::from(path),
            problem: "is not a readable regular file".into(),
        };
        let dir = Path::new("ca");
        assert_eq!(
            cannot_boot(dir, app("ca/a/manifest.json")).to_string(),
            "cannot boot: ca/a/manifest.json: is not a readable regular file"
        );
        assert_eq!(
            cannot_boot(Path::new("ca/"), app("ca")).to_string(),
            "cannot boot: ca: is not a readable regular file"
        );
        // A path that only shares a prefix of its text is elsewhere.
        assert_eq!(
            cannot_boot(dir, app("cab/manifest.json")).to_string(),
            "cannot boot ca: cab/manifest.json: is not a readable regular file"
        );
        let spawn = KernelError::TooManyProcesses {
            module: "b".into(),
            live: 1,
            limit: 1,
        };
        assert!(
            cannot_boot(dir, spawn)
                .to_string()
                .starts_with("cannot boot ca: cannot spawn b: ")
        );
        let missing = KernelError::UnknownModule("ca".into());
        assert_eq!(
            cannot_boot(Path::new("no"), missing).to_string(),
            "cannot boot no: no module named \"ca\" is loaded"
        );
    }
}
