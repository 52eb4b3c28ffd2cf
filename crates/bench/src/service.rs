//! Load on one service: client processes call it over and over and report
//! every round trip, the measurement behind `estactl bench-service` (any
//! app's service) and the suite's per-service benchmarks.
//!
//! # Method
//!
//! 1. The service (and what it needs) runs as it would in its app; the
//!    caller spawns it. [`ServiceLoad::run`] adds [`ServiceLoad::clients`]
//!    processes of a generated client module ([`CLIENT`]): real guests
//!    under the same scheduler, mailboxes and capability checks, holding
//!    `messaging:send` for the service's module alone.
//! 2. Each client looks the service up by name, then makes
//!    [`ServiceLoad::warmup`] calls not measured and
//!    [`ServiceLoad::requests`] measured ones: a `send_receive` that waits
//!    for the answer to the request (a reply from the service, or the
//!    kernel's delivery-failure notice), timed with `clock_now` around the
//!    call. So a round trip is what a client of the service sees: the send,
//!    the service's turn, its reply and the client's wake-up.
//! 3. A call fails if it returns an error (the service is gone, its mailbox
//!    is full, no answer within [`ServiceLoad::timeout_ms`], the answer was a
//!    delivery-failure notice) or, with [`ServiceLoad::expect`], if the
//!    answer has another type. A client stops at its first failure and
//!    reports where and why: numbers from a service that does not answer
//!    would mean nothing.
//! 4. A client hands its round trips to the host with `notify`
//!    (`notifications:send`) 4,096 at a time or every 100 ms, whichever
//!    comes first, between two calls, and its
//!    summary at the end; the host ends the run once every client has
//!    ended, whatever the service's own processes still do. A client
//!    stopped before its summary (a shutdown, Ctrl-C) still counts what it
//!    handed over.
//!
//! Throughput is every measured call of every client over the span from
//! the first measured call's start to the last one's end, on the kernel
//! clock.

use crate::harness::{self, Guest};
use crate::{Settings, measure};
use anyhow::{Context as _, Result, anyhow, bail};
use estalogic_kernel::abi::{ErrorCode, MAX_PAYLOAD_LEN, MessageType, Pid};
use estalogic_kernel::{ExitStatus, Kernel, Manifest, Notification, RunReport};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// The module name of the generated client.
pub const CLIENT: &str = "bench-client";

/// The most measured calls one client may make (its round trips are held
/// in its memory, 8 bytes each).
pub const MAX_REQUESTS: u32 = 1_000_000;

/// The most clients one load may have.
pub const MAX_CLIENTS: u32 = 64;

/// Notification kind of a chunk of round trips: the client's first
/// measured call's start (`i64`, kernel clock), then up to [`CHUNK`] round
/// trips (`u64` nanoseconds each).
const ROUND_TRIPS: i32 = 1;
/// Notification kind of a client's summary (five `i64`s: measured calls
/// made, calls made in all, the failure, first measured call's start, last
/// one's end).
const SUMMARY: i32 = 2;
/// Round trips a client hands over at most at a time, between two calls:
/// so what was measured before a stop (Ctrl-C, a shutdown) has reached the
/// host.
const CHUNK: u32 = 4096;
/// A client hands over what it has at least this often (kernel clock).
const FLUSH_NS: u64 = 100_000_000;

/// Where the client keeps things in its memory.
const HEADER: u32 = 0;
const NAME: u32 = 64;
const SUMMARY_AT: u32 = 2048;
const PAYLOAD: u32 = 4096;

/// What load to put on which service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLoad {
    /// The service's module name (what `lookup` finds).
    pub module: String,
    /// The type of every request.
    pub message_type: MessageType,
    /// The payload of every request (at most 1 MiB).
    pub payload: Vec<u8>,
    /// If set, an answer of another type is a failure.
    pub expect: Option<MessageType>,
    /// Measured calls per client (1 to [`MAX_REQUESTS`]).
    pub requests: u32,
    /// Calls per client before the measured ones.
    pub warmup: u32,
    /// Client processes calling at once (1 to [`MAX_CLIENTS`]).
    pub clients: u32,
    /// How long a client waits for one answer, in milliseconds.
    pub timeout_ms: u32,
}

impl ServiceLoad {
    /// A load of `requests` calls of `message_type` with `payload` from one
    /// client, after 100 warm-up calls, waiting 10 s at most for an answer.
    pub fn new(module: &str, message_type: MessageType, payload: &[u8], requests: u32) -> Self {
        ServiceLoad {
            module: module.to_string(),
            message_type,
            payload: payload.to_vec(),
            expect: None,
            requests,
            warmup: 100,
            clients: 1,
            timeout_ms: 10_000,
        }
    }

    /// Checks the load's settings, naming what is wrong.
    pub fn check(&self) -> Result<()> {
        if self.module.is_empty() {
            bail!("the service's module name is empty");
        }
        if self.module == CLIENT {
            bail!("{CLIENT:?} is the benchmark client's own module name");
        }
        if self.message_type.0 == 0 {
            bail!("message type 0 is not a type");
        }
        if self.payload.len() > MAX_PAYLOAD_LEN {
            bail!(
                "the payload is {} bytes; a message carries at most {MAX_PAYLOAD_LEN}",
                self.payload.len()
            );
        }
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            bail!(
                "requests must be 1 to {MAX_REQUESTS} a client, not {}",
                self.requests
            );
        }
        if u64::from(self.warmup) + u64::from(self.requests) > i32::MAX as u64 {
            bail!("warm-up and measured calls together must fit an i32");
        }
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            bail!("clients must be 1 to {MAX_CLIENTS}, not {}", self.clients);
        }
        if self.timeout_ms == 0 {
            bail!("the timeout must be at least 1 ms");
        }
        Ok(())
    }

    /// The client's manifest: `send` to the service alone, `receive`,
    /// `lookup`, the clock and notifications; the system memory class (its
    /// round trips and a 1 MiB answer buffer live in its memory).
    pub fn client_manifest(&self) -> Result<Manifest> {
        let json = serde_json::json!({
            "name": CLIENT,
            "version": "1.0.0",
            "description": "estactl bench-service's client",
            "entry_point": "run",
            "runtime": "wasm32",
            "memory_class": "system",
            "capabilities_required": [
                {"name": "messaging:send", "scope": self.module},
                "messaging:receive",
                "process:lookup",
                "time:read",
                "notifications:send",
            ],
        });
        Manifest::parse(&json.to_string()).context("the benchmark client's manifest is invalid")
    }

    /// The client module, as WebAssembly text with the load's settings in
    /// it.
    pub fn client_wat(&self) -> String {
        let answer = PAYLOAD + align8(self.payload.len() as u32);
        let times = answer + MAX_PAYLOAD_LEN as u32;
        let end = u64::from(times) + 8 + 8 * u64::from(CHUNK);
        let pages = end.div_ceil(65_536);
        let total = self.warmup + self.requests;
        let expect = self.expect.map_or(0, |t| t.0);
        let mut wat = String::new();
        let _ = write!(
            wat,
            r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $call
    (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "clock_now" (func $now (result i64)))
  (import "estalogic" "notify" (func $notify (param i32 i32 i32) (result i64)))
  (import "estalogic" "yield_now" (func $yield (result i64)))
  (memory (export "memory") {pages})
  (data (i32.const {NAME}) "{name}")
  (data (i32.const {PAYLOAD}) "{payload}")
  ;; Hands the host one notification, waiting while its queue is full.
  (func $post (param $kind i32) (param $at i32) (param $len i32)
    (local $r i64)
    (loop $again
      (local.set $r (call $notify (local.get $kind) (local.get $at) (local.get $len)))
      (if (i64.eq (local.get $r) (i64.const {limit}))
        (then (drop (call $yield)) (br $again)))))
  ;; Hands over the chunk's $n round trips, after its start.
  (func $flush (param $n i32)
    (if (local.get $n)
      (then (call $post (i32.const {ROUND_TRIPS}) (i32.const {times})
                        (i32.add (i32.const 8) (i32.shl (local.get $n) (i32.const 3)))))))
  ;; The summary: measured calls, calls in all, failure, start, end.
  (func $summary (param $measured i32) (param $made i32) (param $failure i64)
                 (param $start i64) (param $end i64)
    (i64.store (i32.const {SUMMARY_AT}) (i64.extend_i32_u (local.get $measured)))
    (i64.store (i32.const {s8}) (i64.extend_i32_u (local.get $made)))
    (i64.store (i32.const {s16}) (local.get $failure))
    (i64.store (i32.const {s24}) (local.get $start))
    (i64.store (i32.const {s32}) (local.get $end))
    (call $post (i32.const {SUMMARY}) (i32.const {SUMMARY_AT}) (i32.const 40)))
  (func (export "run") (result i32)
    (local $target i64) (local $i i32) (local $n i32) (local $t0 i64) (local $t1 i64)
    (local $r i64) (local $start i64) (local $failure i64) (local $flushed i64)
    (local.set $target (call $lookup (i32.const {NAME}) (i32.const {name_len})))
    (if (i64.lt_s (local.get $target) (i64.const 0))
      (then
        (call $summary (i32.const 0) (i32.const 0) (local.get $target) (i64.const 0) (i64.const 0))
        (return (i32.const 3))))
    (block $stop
      (loop $each
        (if (i32.eq (local.get $i) (i32.const {warmup}))
          (then (local.set $start (call $now))
                (local.set $flushed (local.get $start))
                (i64.store (i32.const {times}) (local.get $start))))
        (local.set $t0 (call $now))
        (local.set $r (call $call (local.get $target) (i64.const 0) (i32.const {message_type})
          (i32.const 0) (i32.const {PAYLOAD}) (i32.const {payload_len}) (i64.const -1)
          (i64.const {timeout}) (i32.const {HEADER}) (i32.const {answer}) (i32.const {MAX_PAYLOAD_LEN})))
        (local.set $t1 (call $now))
        (if (i64.lt_s (local.get $r) (i64.const 0))
          (then (local.set $failure (local.get $r)) (br $stop)))
        (if (i32.and (i32.ne (i32.const {expect}) (i32.const 0))
                     (i32.ne (i32.load (i32.const {type_at})) (i32.const {expect})))
          (then (local.set $failure (i64.extend_i32_u (i32.load (i32.const {type_at}))))
                (br $stop)))
        (if (i32.ge_u (local.get $i) (i32.const {warmup}))
          (then
            (i64.store
              (i32.add (i32.const {first_time}) (i32.shl (local.get $n) (i32.const 3)))
              (i64.sub (local.get $t1) (local.get $t0)))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (if (i32.or (i32.eq (local.get $n) (i32.const {CHUNK}))
                        (i64.gt_u (i64.sub (local.get $t1) (local.get $flushed))
                                  (i64.const {FLUSH_NS})))
              (then (call $flush (local.get $n)) (local.set $n (i32.const 0))
                    (local.set $flushed (local.get $t1))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $each (i32.lt_u (local.get $i) (i32.const {total})))))
    (call $flush (local.get $n))
    (call $summary
      (select (i32.sub (local.get $i) (i32.const {warmup})) (i32.const 0)
              (i32.gt_u (local.get $i) (i32.const {warmup})))
      (local.get $i) (local.get $failure) (local.get $start) (call $now))
    (i32.const 0)))
"#,
            name = escape(self.module.as_bytes()),
            name_len = self.module.len(),
            payload = escape(&self.payload),
            payload_len = self.payload.len(),
            limit = -i64::from(ErrorCode::LIMIT_REACHED.0),
            s8 = SUMMARY_AT + 8,
            s16 = SUMMARY_AT + 16,
            s24 = SUMMARY_AT + 24,
            s32 = SUMMARY_AT + 32,
            first_time = times + 8,
            warmup = self.warmup,
            message_type = self.message_type.0 as i32,
            timeout = self.timeout_ms,
            expect = expect as i32,
            type_at = HEADER + 4,
        );
        wat
    }

    /// Loads the client into `kernel` (where the service is loaded and
    /// spawned), spawns the clients, runs the kernel until every client has
    /// ended, stops what is left, and returns the figures. Fails if the
    /// load's settings are wrong or the client cannot be loaded; a service
    /// that fails the load is reported in the figures, not as an error.
    pub fn run(&self, kernel: &mut Kernel) -> Result<ServiceFigures> {
        self.run_with_progress(kernel, |_| {})
    }

    /// [`ServiceLoad::run`], calling `progress` (on another thread) with
    /// the measured calls handed over so far, every client's, each time
    /// more arrive (at least every 100 ms while the clients call).
    pub fn run_with_progress(
        &self,
        kernel: &mut Kernel,
        mut progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<ServiceFigures> {
        self.check()?;
        kernel
            .load_module(
                self.client_manifest()?,
                self.client_wat().as_bytes(),
                Path::new("bench-service:client"),
            )
            .context("cannot load the benchmark client")?;
        let mut pids = Vec::new();
        for _ in 0..self.clients {
            pids.push(
                kernel
                    .spawn(CLIENT)
                    .context("cannot spawn the benchmark client")?,
            );
        }
        let exits = kernel.subscribe_exits();
        let queue = kernel.notifications();
        let shutdown = kernel.shutdown_handle();
        let ended = Arc::new(AtomicBool::new(false));
        let run_ended = ended.clone();
        let clients = self.clients;
        // Takes the clients' notifications as they come (the kernel holds
        // only so many), and stops the run when the last client has ended.
        let watcher = std::thread::spawn(move || {
            let mut taken = Vec::new();
            let mut left = clients;
            let mut calls = 0u64;
            loop {
                let before = calls;
                while let Some(notification) = queue.try_take() {
                    if notification.kind == ROUND_TRIPS && &*notification.module == CLIENT {
                        calls += (notification.payload.len() as u64).saturating_sub(8) / 8;
                    }
                    taken.push(notification);
                }
                if calls != before {
                    progress(calls);
                }
                if left == 0 || run_ended.load(Ordering::Acquire) {
                    break;
                }
                match exits.recv_timeout(Duration::from_millis(5)) {
                    Ok(report) if report.module == CLIENT => left -= 1,
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            shutdown.request();
            taken.extend(queue.take_all());
            taken
        });
        let report = kernel.run();
        ended.store(true, Ordering::Release);
        let mut notifications = watcher
            .join()
            .map_err(|_| anyhow!("the benchmark's watcher thread panicked"))?;
        notifications.extend(kernel.notifications().take_all());
        ServiceFigures::collect(self, &pids, notifications, report)
    }
}

/// `service_call_round_trip_ns`: the median round trip of a client's
/// calls to the bundled `echo` (a handler answering with the request's
/// payload); best of the runs.
pub fn echo_round_trip(settings: &Settings) -> Result<f64> {
    measure::best_of(settings.runs(), || {
        let echo = Guest::bundled("echo", "handle", &["messaging:send", "messaging:receive"]);
        let mut kernel = harness::boot(Kernel::builder(), &[echo])?;
        let calls = u32::try_from(settings.count(20_000, 200))?;
        let mut load = ServiceLoad::new("echo", MessageType(0x1001), b"request", calls);
        load.expect = Some(MessageType(0x1001));
        let figures = load.run(&mut kernel)?;
        if let Some(stop) = figures.failures.first() {
            bail!(
                "echo: a client stopped after {} calls: {}",
                stop.after_calls,
                stop.failure
            );
        }
        Ok(figures.percentile_ns(0.5) as f64)
    })
}

/// Where a client stopped, if it did not make all its calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A call returned this error (or the answer was a delivery-failure
    /// notice with this code).
    Error(ErrorCode),
    /// The answer had this type, not the one expected.
    UnexpectedType(MessageType),
    /// The client itself did not end normally (its status).
    Client(String),
}

impl Failure {
    /// The failure a client's summary records: 0 none, a negated error
    /// code, or the type of an unexpected answer.
    fn from_summary(failure: i64) -> Option<Failure> {
        Some(match failure {
            0 => return None,
            f if f < 0 => match u32::try_from(-f) {
                Ok(code) => Failure::Error(ErrorCode(code)),
                Err(_) => Failure::Client(format!("returned {f}")),
            },
            f => Failure::UnexpectedType(MessageType(f as u32)),
        })
    }
}

/// What one client handed over.
#[derive(Default)]
struct Posted {
    /// Its first measured call's start.
    start: Option<u64>,
    /// When it posted its last chunk (kernel clock).
    last_post_ns: u64,
    round_trips: Vec<u64>,
    summary: Option<[i64; 5]>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(code) => write!(f, "{code}"),
            Failure::UnexpectedType(t) => write!(f, "an answer of type {t:?} (0x{:04x})", t.0),
            Failure::Client(status) => write!(f, "the client {status}"),
        }
    }
}

/// One client's stop: after how many calls (warm-up included), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFailure {
    /// Calls that succeeded before it, warm-up included (for a client
    /// stopped before its summary, those whose round trips reached the
    /// host: at least that many).
    pub after_calls: u64,
    /// Why.
    pub failure: Failure,
}

/// The figures of one load.
#[derive(Debug)]
pub struct ServiceFigures {
    /// Measured calls that succeeded, every client's.
    pub calls: u64,
    /// Their round trips in nanoseconds, sorted.
    pub round_trips_ns: Vec<u64>,
    /// From the first measured call's start to the last one's end, ns.
    pub span_ns: u64,
    /// The clients that stopped early.
    pub failures: Vec<ClientFailure>,
    /// The run's report (the service's processes, the clients).
    pub report: RunReport,
}

impl ServiceFigures {
    fn collect(
        load: &ServiceLoad,
        pids: &[Pid],
        notifications: Vec<Notification>,
        report: RunReport,
    ) -> Result<Self> {
        let mut clients: HashMap<Pid, Posted> = HashMap::new();
        for notification in notifications {
            if &*notification.module != CLIENT {
                continue;
            }
            let fields: Vec<i64> = notification
                .payload
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect();
            let client = clients.entry(notification.source).or_default();
            match notification.kind {
                ROUND_TRIPS => {
                    let Some((&start, round_trips)) = fields.split_first() else {
                        bail!("a client posted a chunk of round trips without its start");
                    };
                    client.start = Some(start as u64);
                    client.last_post_ns = notification.time_ns;
                    client
                        .round_trips
                        .extend(round_trips.iter().map(|&t| t as u64));
                }
                SUMMARY => {
                    let summary: [i64; 5] = fields.try_into().map_err(|fields: Vec<i64>| {
                        anyhow!("a client's summary has {} fields, not 5", fields.len())
                    })?;
                    client.summary = Some(summary);
                }
                other => bail!("a client posted a notification of unknown kind {other}"),
            }
        }
        let mut failures = Vec::new();
        let (mut first, mut last) = (u64::MAX, 0u64);
        let mut round_trips_ns = Vec::new();
        for pid in pids {
            let client = clients.remove(pid).unwrap_or_default();
            let measured = client.round_trips.len() as u64;
            let (start, end) = match client.summary {
                Some([counted, made, failure, start, end]) => {
                    if counted as u64 != measured {
                        bail!(
                            "a client counted {counted} calls but handed over {measured} round trips"
                        );
                    }
                    if let Some(failure) = Failure::from_summary(failure) {
                        failures.push(ClientFailure {
                            after_calls: made as u64,
                            failure,
                        });
                    }
                    (start as u64, end as u64)
                }
                // Stopped before its summary (a shutdown, a trap): what it
                // handed over stands, up to its last chunk.
                None => {
                    let status = report
                        .processes
                        .iter()
                        .find(|p| p.pid == *pid)
                        .map_or_else(|| "did not run".to_string(), |p| p.status.to_string());
                    let warmup = if measured > 0 {
                        u64::from(load.warmup)
                    } else {
                        0
                    };
                    failures.push(ClientFailure {
                        after_calls: warmup + measured,
                        failure: Failure::Client(status),
                    });
                    (client.start.unwrap_or(0), client.last_post_ns)
                }
            };
            if measured > 0 {
                first = first.min(start);
                last = last.max(end);
            }
            round_trips_ns.extend(client.round_trips);
        }
        round_trips_ns.sort_unstable();
        Ok(ServiceFigures {
            calls: round_trips_ns.len() as u64,
            round_trips_ns,
            span_ns: last.saturating_sub(first),
            failures,
            report,
        })
    }

    /// The mean round trip, ns (0 without calls).
    pub fn mean_ns(&self) -> f64 {
        if self.round_trips_ns.is_empty() {
            return 0.0;
        }
        self.round_trips_ns.iter().map(|&t| t as f64).sum::<f64>()
            / self.round_trips_ns.len() as f64
    }

    /// The round trip below which `fraction` (0 to 1) of them lie
    /// ([`percentile`]).
    pub fn percentile_ns(&self, fraction: f64) -> u64 {
        percentile(&self.round_trips_ns, fraction)
    }

    /// Measured calls a second, every client's together (0 without a span).
    pub fn throughput_per_s(&self) -> f64 {
        if self.span_ns == 0 {
            return 0.0;
        }
        self.calls as f64 * 1e9 / self.span_ns as f64
    }

    /// The service's processes that trapped during the load (module and
    /// status), which make the figures suspect.
    pub fn service_faults(&self) -> Vec<(String, ExitStatus)> {
        self.report
            .processes
            .iter()
            .filter(|p| p.module != CLIENT && matches!(p.status, ExitStatus::Trapped { .. }))
            .map(|p| (p.module.clone(), p.status.clone()))
            .collect()
    }
}

/// The value below which `fraction` (0 to 1) of `sorted` lie, by nearest
/// rank; 0 for no values.
pub fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let rank = (fraction.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn align8(n: u32) -> u32 {
    n.div_ceil(8) * 8
}

/// Bytes as a WAT string literal's contents.
fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for byte in bytes {
        let _ = write!(text, "\\{byte:02x}");
    }
    text
}

/// Parses a message type: a registered name (`PING`, `ACCRUAL_REQUEST`,
/// any case) or a number, decimal or `0x` hexadecimal, 1 to 2^32 - 1.
pub fn parse_message_type(text: &str) -> Result<MessageType, String> {
    let text = text.trim();
    let named = (0..=0xFFFFu32)
        .map(MessageType)
        .filter_map(|t| t.name().map(|name| (name, t)))
        .find(|(name, _)| name.eq_ignore_ascii_case(text));
    if let Some((_, found)) = named {
        return Ok(found);
    }
    let number = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse::<u32>(),
    };
    match number {
        Ok(0) => Err("0 is not a message type".to_string()),
        Ok(n) => Ok(MessageType(n)),
        Err(_) => Err(format!(
            "{text:?} is not a message type: give a name (PING, ACCRUAL_REQUEST, ...) \
             or a number (4097, 0x1001)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_parse_by_name_and_number() {
        assert_eq!(parse_message_type("PING"), Ok(MessageType::PING));
        assert_eq!(
            parse_message_type("accrual_request"),
            Ok(MessageType::ACCRUAL_REQUEST)
        );
        assert_eq!(parse_message_type("0x1001"), Ok(MessageType(0x1001)));
        assert_eq!(parse_message_type("4097"), Ok(MessageType(4097)));
        assert!(parse_message_type("0").is_err());
        assert!(parse_message_type("PONGG").unwrap_err().contains("PONGG"));
        assert!(parse_message_type("0x1_0000_0000").is_err());
    }

    #[test]
    fn a_load_s_settings_are_checked() {
        let ok = ServiceLoad::new("svc", MessageType::PING, b"x", 10);
        ok.check().unwrap();
        let bad = |change: fn(&mut ServiceLoad)| {
            let mut load = ok.clone();
            change(&mut load);
            load.check().unwrap_err().to_string()
        };
        assert!(bad(|l| l.requests = 0).contains("requests"));
        assert!(bad(|l| l.requests = MAX_REQUESTS + 1).contains("requests"));
        assert!(bad(|l| l.clients = 0).contains("clients"));
        assert!(bad(|l| l.timeout_ms = 0).contains("timeout"));
        assert!(bad(|l| l.payload = vec![0; MAX_PAYLOAD_LEN + 1]).contains("payload"));
        assert!(bad(|l| l.module = CLIENT.to_string()).contains("client"));
        assert!(bad(|l| l.message_type = MessageType(0)).contains("type"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted = [10, 20, 30, 40];
        assert_eq!(percentile(&sorted, 0.5), 20);
        assert_eq!(percentile(&sorted, 0.51), 30);
        assert_eq!(percentile(&sorted, 0.99), 40);
        assert_eq!(percentile(&sorted, 0.0), 10);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
