//! `estactl bench-service` end to end on the real binary: a service of an
//! example app answers every call and the figures say so; only the
//! service and what it needs run; a service that fails the load, a module
//! the app does not have and bad options are clear errors.

use std::path::Path;

mod common;
use common::*;

/// The JSON figures of a run that printed them.
fn figures(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn every_call_to_the_example_pong_is_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let out = estactl(
        tmp.path(),
        &[
            "bench-service",
            &app,
            "pong",
            "--payload",
            "hi",
            "--expect",
            "PONG",
            "--requests",
            "2000",
            "--clients",
            "2",
            "--json",
        ],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let figures = figures(&out);
    assert_eq!(figures["calls"], 4_000);
    assert_eq!(figures["failures"], serde_json::json!([]));
    let round_trip = &figures["round_trip_ns"];
    let (p50, p99, max) = (
        round_trip["p50"].as_u64().unwrap(),
        round_trip["p99"].as_u64().unwrap(),
        round_trip["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{round_trip}");
    assert!(figures["throughput_per_s"].as_f64().unwrap() > 0.0);

    // The readable form says the same.
    let out = estactl(
        tmp.path(),
        &[
            "bench-service",
            &app,
            "pong",
            "--requests",
            "100",
            "--payload",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("100 call(s) answered of 100 asked"),
        "{stdout}"
    );
    assert!(stdout.contains("p99"), "{stdout}");
}

#[test]
fn only_the_service_and_its_dependencies_run() {
    // `pinger` would stop `pong` with an empty PING at once if it ran.
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    write(
        &app.join("pong/manifest.json"),
        r#"{"name":"pong","version":"1.0.0","entry_point":"run","runtime":"wasm32",
            "module":"bundled:pong","dependencies":{"base":"^0.1"},
            "capabilities_required":["messaging:send","messaging:receive"]}"#,
    );
    module(
        &app,
        "base",
        r#","capabilities_required":["messaging:receive"]"#,
        WAIT,
    );
    module(
        &app,
        "pinger",
        r#","capabilities_required":["messaging:send","process:lookup"]"#,
        STOP_PONG,
    );
    let app = app.to_str().unwrap();
    let out = estactl(
        tmp.path(),
        &[
            "bench-service",
            app,
            "pong",
            "--requests",
            "500",
            "--payload",
            "x",
            "--json",
        ],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(figures(&out)["calls"], 500);
}

#[test]
fn a_service_that_never_answers_is_a_failure_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(
        &app,
        "sink",
        r#","capabilities_required":["messaging:receive"]"#,
        SINK,
    );
    let out = estactl(
        tmp.path(),
        &[
            "bench-service",
            app.to_str().unwrap(),
            "sink",
            "--timeout-ms",
            "50",
            "--warmup",
            "0",
        ],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("0 call(s) answered of 10000 asked"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a client stopped after 0 call(s): TIMEOUT"),
        "{stdout}"
    );
}

#[test]
fn a_service_that_traps_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(
        &app,
        "crash",
        r#","capabilities_required":["messaging:receive"]"#,
        CRASH_ON_MESSAGE,
    );
    let out = estactl(
        tmp.path(),
        &[
            "bench-service",
            app.to_str().unwrap(),
            "crash",
            "--warmup",
            "0",
            "--json",
        ],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let figures = figures(&out);
    assert_eq!(figures["calls"], 0);
    let reason = figures["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("NO_SUCH_PROCESS"), "{reason}");
    assert_eq!(figures["service_faults"][0]["module"], "crash");
}

#[test]
fn bad_requests_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![0u8; (1 << 20) + 1]).unwrap();
    let big = big.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (
            &["bench-service", &app, "pong", "--deterministic"],
            "bench-service measures real time",
        ),
        (
            &["bench-service", &app, "nobody"],
            "no module named \"nobody\" (its modules: ping, pong)",
        ),
        (
            &["bench-service", &app, "pong", "--type", "PINGG"],
            "\"PINGG\" is not a message type",
        ),
        (
            &["bench-service", &app, "pong", "--type", "0"],
            "0 is not a message type",
        ),
        (
            &["bench-service", &app, "pong", "--requests", "0"],
            "--requests",
        ),
        (
            &["bench-service", &app, "pong", "--clients", "65"],
            "--clients",
        ),
        (
            &["bench-service", &app, "pong", "--payload-file", big],
            "over a message's 1048576 bytes",
        ),
        (
            &[
                "bench-service",
                &app,
                "pong",
                "--payload",
                "x",
                "--payload-file",
                big,
            ],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let out = estactl(tmp.path(), args);
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let missing = tmp.path().join("missing");
    let out = estactl(
        tmp.path(),
        &["bench-service", missing.to_str().unwrap(), "pong"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        Path::new(&missing)
            .to_str()
            .is_some_and(|m| text(&out.stderr).contains(m))
    );
}

/// Waits for ever in `receive` (a dependency with nothing to do).
const WAIT: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (drop (call $receive (i32.const 0) (i64.const -1)
                                           (i32.const 0) (i32.const 64) (i32.const 1024)))))"#;

/// Sends `pong` an empty PING (which stops it).
const STOP_PONG: &str = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send" (func $send (param i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "pong")
  (func (export "run") (result i32)
    (drop (call $send (call $lookup (i32.const 0) (i32.const 4)) (i32.const 1) (i32.const 0)
                      (i32.const 0) (i32.const 0)))
    (i32.const 0)))"#;

/// Takes every message and answers none.
const SINK: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (loop (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
          (br 0))))"#;

/// Traps on its first message.
const CRASH_ON_MESSAGE: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
    unreachable))"#;
