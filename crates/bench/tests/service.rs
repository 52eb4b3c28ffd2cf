//! `service::ServiceLoad` on real guests: the bundled `pong` and `echo`
//! answer every call and the figures count them all; a service that does
//! not answer, answers with another type or does not exist stops the
//! clients with the reason.

use estalogic_bench::harness::{self, Guest};
use estalogic_bench::service::{CLIENT, ClientFailure, Failure, ServiceLoad};
use estalogic_kernel::abi::{ErrorCode, MessageType};
use estalogic_kernel::{ExitStatus, Kernel};

/// A kernel with `guests` loaded and spawned.
fn kernel_with(guests: &[Guest]) -> Kernel {
    harness::boot(Kernel::builder(), guests).expect("the service boots")
}

fn pong() -> Guest {
    Guest::bundled("pong", "run", &["messaging:send", "messaging:receive"])
}

#[test]
fn every_call_to_pong_is_answered_and_counted() {
    let mut kernel = kernel_with(&[pong()]);
    let mut load = ServiceLoad::new("pong", MessageType::PING, b"hello", 500);
    load.expect = Some(MessageType::PONG);
    load.clients = 3;
    load.warmup = 10;
    let figures = load.run(&mut kernel).unwrap();
    assert_eq!(figures.failures, []);
    assert_eq!(figures.calls, 1_500);
    assert_eq!(figures.round_trips_ns.len(), 1_500);
    assert!(figures.round_trips_ns.windows(2).all(|w| w[0] <= w[1]));
    assert!(figures.percentile_ns(0.5) > 0);
    assert!(figures.span_ns > 0 && figures.throughput_per_s() > 0.0);
    // Warm-up calls are made and answered, not measured.
    let pong = figures.report.process("pong").unwrap();
    assert_eq!(pong.received, 1_530, "{pong:?}");
    assert!(figures.service_faults().is_empty());
    let clients: Vec<_> = figures
        .report
        .processes
        .iter()
        .filter(|p| p.module == CLIENT)
        .collect();
    assert_eq!(clients.len(), 3);
    assert!(clients.iter().all(|c| c.status == ExitStatus::Exited(0)));
}

#[test]
fn a_handler_service_is_loaded_the_same_way() {
    let echo = Guest::bundled("echo", "handle", &["messaging:send", "messaging:receive"]);
    let mut kernel = kernel_with(&[echo]);
    let mut load = ServiceLoad::new("echo", MessageType(0x1234), &[7; 3000], 200);
    load.expect = Some(MessageType(0x1234));
    let figures = load.run(&mut kernel).unwrap();
    assert_eq!(figures.failures, []);
    assert_eq!(figures.calls, 200);
}

#[test]
fn an_answer_of_the_wrong_type_stops_the_client() {
    let mut kernel = kernel_with(&[pong()]);
    let mut load = ServiceLoad::new("pong", MessageType::PING, b"x", 100);
    load.expect = Some(MessageType::PING);
    load.warmup = 0;
    let figures = load.run(&mut kernel).unwrap();
    assert_eq!(
        figures.failures,
        [ClientFailure {
            after_calls: 0,
            failure: Failure::UnexpectedType(MessageType::PONG)
        }]
    );
    assert_eq!(figures.calls, 0);
}

#[test]
fn a_service_that_never_answers_times_out() {
    // Takes every message and answers none.
    let sink = Guest::wat(
        "sink",
        r#"(module
          (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
          (memory (export "memory") 1)
          (func (export "run") (result i32)
            (loop (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024))) (br 0))
            (i32.const 0)))"#,
        "run",
        &["messaging:receive"],
    );
    let mut kernel = kernel_with(&[sink]);
    let mut load = ServiceLoad::new("sink", MessageType(0x1001), b"", 10);
    load.timeout_ms = 50;
    let figures = load.run(&mut kernel).unwrap();
    assert_eq!(
        figures.failures,
        [ClientFailure {
            after_calls: 0,
            failure: Failure::Error(ErrorCode::TIMEOUT)
        }]
    );
}

#[test]
fn a_service_that_is_not_running_is_not_found() {
    let mut kernel = Kernel::builder().build().unwrap();
    let load = ServiceLoad::new("nobody", MessageType::PING, b"x", 10);
    let figures = load.run(&mut kernel).unwrap();
    assert_eq!(figures.failures.len(), 1);
    assert_eq!(
        figures.failures[0].failure,
        Failure::Error(ErrorCode::NOT_FOUND)
    );
}

#[test]
fn progress_counts_up_to_the_calls_made() {
    let mut kernel = kernel_with(&[pong()]);
    let mut load = ServiceLoad::new("pong", MessageType::PING, b"x", 10_000);
    load.clients = 2;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let figures = load
        .run_with_progress(&mut kernel, move |calls| record.lock().unwrap().push(calls))
        .unwrap();
    assert_eq!(figures.calls, 20_000);
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() <= 20_000);
}
