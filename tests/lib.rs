//! Helpers for the integration tests: kernels with guests from WAT text or
//! the bundled services.

use estalogic_kernel::{Kernel, Manifest, ProcessReport, RunReport};
use std::path::Path;
use std::time::Duration;

/// A manifest for `name` with the given entry point and capabilities.
pub fn manifest(name: &str, entry: &str, capabilities: &[&str], priority: &str) -> Manifest {
    let capabilities: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "priority":"{priority}","capabilities_required":[{}]}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid")
}

/// Every capability a test guest might need.
pub const ALL_CAPS: &[&str] = &[
    "messaging:send",
    "messaging:receive",
    "process:lookup",
    "log:write",
    "time:read",
];

/// Loads a module from WAT text (or wasm bytes) under `name`.
pub fn load_wat(kernel: &mut Kernel, name: &str, wat: &str, priority: &str) {
    kernel
        .load_module(
            manifest(name, "run", ALL_CAPS, priority),
            wat.as_bytes(),
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads a handler module (WAT text or wasm bytes; entry point `handle`)
/// under `name`, with every test capability.
pub fn load_handler(kernel: &mut Kernel, name: &str, wat: &str) {
    kernel
        .load_module(
            manifest(name, "handle", ALL_CAPS, "normal"),
            wat.as_bytes(),
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads the bundled `testkit` module under `name`, running `entry`, with
/// extra manifest fields (JSON members, e.g. `"mailbox":{...}`).
pub fn load_testkit(kernel: &mut Kernel, name: &str, entry: &str, extra: &str) {
    let capabilities: Vec<String> = ALL_CAPS
        .iter()
        .chain(["messaging:broadcast"].iter())
        .map(|c| format!("{c:?}"))
        .collect();
    let separator = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]{separator}{extra}}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    let bytes = estalogic_services::get("testkit").expect("testkit is bundled");
    kernel
        .load_module(manifest, bytes, Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads the bundled `testkit` module under `name`, running `entry`, with
/// exactly the given capabilities (each a JSON value: a name string or a
/// `{"name":..,"scope":..}` object).
pub fn load_testkit_with(kernel: &mut Kernel, name: &str, entry: &str, capabilities: &[&str]) {
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    let bytes = estalogic_services::get("testkit").expect("testkit is bundled");
    kernel
        .load_module(manifest, bytes, Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads WAT text under `name` (entry `run`, every test capability) with
/// extra manifest fields (JSON members, e.g. `"restart":"on_failure"`).
pub fn load_wat_with(kernel: &mut Kernel, name: &str, wat: &str, extra: &str) {
    load_entry(kernel, name, "run", wat, ALL_CAPS, extra);
}

/// Loads `wat` under `name` with `entry`, the capabilities (JSON values,
/// quoted), the level and extra manifest members (JSON members).
pub fn load_leveled(
    k: &mut Kernel,
    name: &str,
    entry: &str,
    wat: &str,
    caps: &[&str],
    priority: &str,
    extra: &str,
) {
    let sep = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "priority":"{priority}","capabilities_required":[{}]{sep}{extra}}}"#,
        caps.join(",")
    ))
    .unwrap_or_else(|e| panic!("{name}: manifest: {e}"));
    k.load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads WAT text under `name` with entry point `entry` (`run` for a task,
/// `handle` for a handler), `capabilities` and extra manifest fields (JSON
/// members).
pub fn load_entry(
    kernel: &mut Kernel,
    name: &str,
    entry: &str,
    wat: &str,
    capabilities: &[&str],
    extra: &str,
) {
    let capabilities: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    let separator = if extra.is_empty() { "" } else { "," };
    let manifest = Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"{entry}","runtime":"wasm32",
            "capabilities_required":[{}]{separator}{extra}}}"#,
        capabilities.join(",")
    ))
    .expect("test manifest is valid");
    kernel
        .load_module(manifest, wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Loads a bundled service with entry point `entry`.
pub fn load_bundled(kernel: &mut Kernel, name: &str, entry: &str) {
    let bytes = estalogic_services::get(name).expect("bundled service");
    kernel
        .load_module(
            manifest(name, entry, ALL_CAPS, "normal"),
            bytes,
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Runs `kernel` on a thread until its first process ends (at most 60 s),
/// then asks it to stop; returns that first exit and the final report.
pub fn first_exit_then_stop(mut kernel: Kernel) -> (ProcessReport, RunReport) {
    let exits = kernel.subscribe_exits();
    let shutdown = kernel.shutdown_handle();
    let runner = std::thread::spawn(move || kernel.run());
    let first = exits
        .recv_timeout(Duration::from_secs(60))
        .expect("a process ends within 60 s");
    shutdown.request();
    let report = runner.join().expect("the kernel thread does not panic");
    (first, report)
}

/// A guest whose entry point runs `body` (WAT instructions); it has a memory,
/// a one-slot table and a `$recurse` function for stack overflows.
pub fn trapper(body: &str) -> String {
    format!(
        r#"(module (memory (export "memory") 1) (table 1 funcref)
             (func $recurse (call $recurse))
             (func (export "run") {body}))"#
    )
}

/// One guest body per trap kind with the code it must map to.
pub const TRAP_CASES: &[(&str, estalogic_abi::ErrorCode)] = {
    use estalogic_abi::ErrorCode;
    &[
        ("unreachable", ErrorCode::TRAP_UNREACHABLE),
        (
            "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
            ErrorCode::TRAP_DIV_BY_ZERO,
        ),
        (
            "(drop (i32.div_s (i32.const -2147483648) (i32.const -1)))",
            ErrorCode::TRAP_INTEGER_OVERFLOW,
        ),
        (
            "(drop (i32.trunc_f32_s (f32.const 1e30)))",
            ErrorCode::TRAP_INTEGER_OVERFLOW,
        ),
        (
            "(drop (i32.load (i32.const 70000)))",
            ErrorCode::TRAP_OUT_OF_BOUNDS,
        ),
        (
            "(call_indirect (i32.const 0))",
            ErrorCode::TRAP_INDIRECT_CALL_TYPE,
        ),
        ("(call $recurse)", ErrorCode::TRAP_STACK_OVERFLOW),
        (
            "(loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
            ErrorCode::OUT_OF_MEMORY,
        ),
    ]
};

/// The configurations a scenario runs in: deterministic on one worker,
/// real time on one worker, real time on two.
pub const RUNS: [(bool, usize); 3] = [(true, 1), (false, 1), (false, 2)];

/// Every mailbox overflow mode, as manifests name them.
pub const OVERFLOW_MODES: [&str; 4] = [
    "notify_sender",
    "drop_newest",
    "drop_oldest",
    "block_sender",
];

/// What a syscall returns for `code`.
pub fn neg(code: estalogic_abi::ErrorCode) -> i64 {
    -i64::from(code.0)
}

/// A manifest's `mailbox` member (extra JSON for [`load_wat_with`]).
pub fn mailbox(capacity: u64, mode: &str) -> String {
    format!(r#""mailbox":{{"capacity":{capacity},"overflow":"{mode}"}}"#)
}

/// A kernel in one of the [`RUNS`] configurations.
pub fn kernel(deterministic: bool, workers: usize) -> Kernel {
    Kernel::builder()
        .deterministic(deterministic)
        .workers(workers)
        .build()
        .expect("the kernel builds")
}

/// Runs `scenario` once in each of the [`RUNS`] configurations, on a fresh
/// kernel, with a label naming the configuration for its assertions.
pub fn in_each_run(mut scenario: impl FnMut(Kernel, &str)) {
    for (deterministic, workers) in RUNS {
        let what = format!("deterministic {deterministic}, {workers} workers");
        scenario(kernel(deterministic, workers), &what);
    }
}

/// Runs `scenario` in every overflow mode ([`OVERFLOW_MODES`]) times every
/// configuration ([`RUNS`]), as [`in_each_run`] does, the mode first in
/// the label.
pub fn in_each_mode_and_run(mut scenario: impl FnMut(&str, Kernel, &str)) {
    for mode in OVERFLOW_MODES {
        in_each_run(|kernel, what| scenario(mode, kernel, &format!("{mode} {what}")));
    }
}

/// This process's resident memory in KiB (`VmRSS`; 0 where there is no
/// `/proc`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A restart policy that takes the given actions in order, then gives up.
pub struct Script(Vec<estalogic_kernel::core::supervision::RestartAction>);

impl Script {
    /// The policy, boxed for `Kernel::set_restart_policy`.
    pub fn boxed(actions: &[estalogic_kernel::core::supervision::RestartAction]) -> Box<Self> {
        let mut actions = actions.to_vec();
        actions.reverse();
        Box::new(Script(actions))
    }
}

impl estalogic_kernel::core::supervision::RestartPolicy for Script {
    fn on_failure(
        &mut self,
        _failure: &estalogic_kernel::core::supervision::Failure,
        _now: u64,
    ) -> estalogic_kernel::core::supervision::RestartAction {
        self.0
            .pop()
            .unwrap_or(estalogic_kernel::core::supervision::RestartAction::GiveUp)
    }
}

/// A restart policy that panics, as an embedder's bug would, with the
/// message `"the policy panics"`.
pub struct PanickingPolicy;

impl estalogic_kernel::core::supervision::RestartPolicy for PanickingPolicy {
    fn on_failure(
        &mut self,
        _failure: &estalogic_kernel::core::supervision::Failure,
        _now: u64,
    ) -> estalogic_kernel::core::supervision::RestartAction {
        panic!("the policy panics");
    }
}

/// Runs `kernel` on a thread and returns the run's outcome within 60 s:
/// `Some(Ok(()))` if it returned, `Some(Err(text))` if it panicked (the
/// panic's message), `None` if it did not return in time.
pub fn run_catching_panic(mut kernel: Kernel) -> Option<Result<(), String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kernel.run()));
        let _ = tx.send(outcome.map(|_| ()).map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        }));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).ok()
}

/// A run's processes and restart decisions, a line each, for assertion
/// messages: each process's counts and status, each decision's failure
/// code and action.
pub fn describe(report: &RunReport) -> String {
    let mut s = String::new();
    for p in &report.processes {
        s.push_str(&format!(
            "  {} {} {}: sent {} recv {} sfail {} dfail {} undeliv {} blocked {}\n",
            p.module,
            p.pid,
            p.status,
            p.sent,
            p.received,
            p.send_failures,
            p.delivery_failures,
            p.undelivered,
            p.blocked_sends
        ));
    }
    for r in &report.restarts {
        s.push_str(&format!(
            "  restart {} {} {} {:?} -> {:?}\n",
            r.module, r.pid, r.code, r.action, r.new_pid
        ));
    }
    s
}

/// The report of `module`'s first process in `report` (panics, with the
/// whole report, if it has none).
pub fn report_of<'a>(report: &'a RunReport, module: &str) -> &'a ProcessReport {
    report
        .processes
        .iter()
        .find(|p| p.module == module)
        .unwrap_or_else(|| panic!("no process of {module}:\n{}", describe(report)))
}

/// The trap code of `status`, if it is a trap.
pub fn trapped(status: &estalogic_kernel::ExitStatus) -> Option<estalogic_abi::ErrorCode> {
    match status {
        estalogic_kernel::ExitStatus::Trapped { code, .. } => Some(*code),
        _ => None,
    }
}

/// Loads a module given as bytes (or WAT text) under `name`, entry point
/// `entry`, with every test capability, at NORMAL priority.
pub fn load_bytes(kernel: &mut Kernel, name: &str, entry: &str, bytes: &[u8]) {
    kernel
        .load_module(
            manifest(name, entry, ALL_CAPS, "normal"),
            bytes,
            Path::new(name),
        )
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
}

/// Building blocks of binary modules, for tests that write them as bytes
/// (WAT text of millions of instructions is slow to parse).
pub mod wasm_bytes {
    /// Appends `v` as unsigned LEB128.
    pub fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    /// Appends `v` as signed LEB128.
    pub fn sleb(mut v: i64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0);
            out.push(if done { b } else { b | 0x80 });
            if done {
                break;
            }
        }
    }

    /// Appends a section: its id, its length and `body`.
    pub fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend(body);
    }
}

/// Runs `kernel` on another thread, asks it to shut down after `after`,
/// and gives it back with its report; `None` if the run had not ended
/// `watchdog` later.
pub fn run_and_stop_after(
    mut kernel: Kernel,
    after: Duration,
    watchdog: Duration,
) -> Option<(Kernel, RunReport)> {
    let shutdown = kernel.shutdown_handle();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let report = kernel.run();
        let _ = tx.send((kernel, report));
    });
    std::thread::sleep(after);
    shutdown.request();
    rx.recv_timeout(watchdog).ok()
}

/// What [`raise_map_count`] raises `vm.max_map_count` to: room for the
/// tests that hold 10,000 to 20,000 processes at once (about twelve
/// mappings each; Linux's default, 65,530, holds about 5,600).
pub const TEST_MAP_COUNT: u64 = 262_144;

/// Raises `vm.max_map_count` to [`TEST_MAP_COUNT`] if it is lower and this
/// process may (root), as `estactl bench` does for its idle benchmarks; a
/// kernel that still needs more fails to build with an error naming the
/// `sysctl` to run. Called once as the test binary starts.
pub fn raise_map_count() {
    const LIMIT: &str = "/proc/sys/vm/max_map_count";
    let current = std::fs::read_to_string(LIMIT)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if current.is_some_and(|current| current < TEST_MAP_COUNT) {
        let _ = std::fs::write(LIMIT, TEST_MAP_COUNT.to_string());
    }
}

/// A WebAssembly page, the unit memory budgets are counted in.
pub const PAGE: u64 = 64 << 10;

/// A kernel with a guest memory budget of `bytes`.
pub fn budgeted(deterministic: bool, workers: usize, bytes: u64) -> Kernel {
    Kernel::builder()
        .deterministic(deterministic)
        .workers(workers)
        .memory_budget(bytes)
        .build()
        .expect("the kernel builds")
}

/// What `kernel`'s memory budget holds now (it must have one).
pub fn held(kernel: &Kernel) -> u64 {
    kernel.memory_budget().expect("a budget").held()
}
