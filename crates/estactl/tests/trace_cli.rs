//! The IPC trace as `estactl trace-ipc` and `run --trace` print it,
//! against the docs and the kernel's own record of it; from the
//! twenty-third probe round. Its "Failed before the fix" case fails
//! without its fix.

use std::path::Path;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn estactl(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estactl"))
        .env("ESTALOGIC_CACHE_DIR", tmp.join("cache"))
        .args(args)
        .output()
        .expect("run estactl")
}

const CAPS: &str =
    r#","capabilities_required":["messaging:send","messaging:receive","process:lookup"]"#;

fn module(dir: &Path, name: &str, wat: &str) {
    write(
        &dir.join(name).join("manifest.json"),
        &format!(
            r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"{CAPS}}}"#
        ),
    );
    write(&dir.join(name).join("m.wat"), wat);
}

const SRV: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (import "estalogic" "reply" (func $reply (param i64 i64 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run")
    (drop (call $receive (i32.const 0) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024)))
    (drop (call $reply (i64.load (i32.const 8)) (i64.load (i32.const 24))
       (i32.const 0x1002) (i32.const 0) (i32.const 2048) (i32.const 3)))))"#;

/// A client that calls `srv` (send_receive, wait_for -1): the call carries
/// the CALL flag (32).
const CLI: &str = r#"(module
  (import "estalogic" "lookup" (func $lookup (param i32 i32) (result i64)))
  (import "estalogic" "send_receive" (func $call (param i64 i64 i32 i32 i32 i32 i64 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 4096) "srv")
  (func (export "run") (result i32)
    (if (i64.ne (call $call (call $lookup (i32.const 4096) (i32.const 3)) (i64.const 0)
          (i32.const 0x1001) (i32.const 0) (i32.const 2048) (i32.const 7)
          (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 64) (i32.const 1024))
          (i64.const 3))
      (then (return (i32.const 1))))
    (i32.const 0)))"#;

fn app(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("app");
    module(&dir, "srv", SRV);
    // "zcli" sorts after "srv": loaded and spawned after it, so its lookup
    // finds it.
    module(&dir, "zcli", CLI);
    dir
}

/// The JSON trace: two records, the call with flags 32 (CALL), the reply
/// with flags 1 (REPLY) and correlation 1.
#[test]
fn trace_ipc_json_shows_the_call_and_its_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = app(tmp.path());
    let out = estactl(
        tmp.path(),
        &[
            "trace-ipc",
            "--json",
            "--deterministic",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out.stdout));
    assert_eq!(lines[0]["flags"], 32);
    assert_eq!(lines[0]["from_module"], "zcli");
    assert_eq!(lines[0]["to_module"], "srv");
    assert_eq!(lines[0]["bytes"], 7);
    assert_eq!(lines[1]["flags"], 1);
    assert_eq!(lines[1]["correlation"], 1);
}

/// `--limit 1` shows one message and says how many more there are.
#[test]
fn trace_ipc_limit_says_what_it_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = app(tmp.path());
    let out = estactl(
        tmp.path(),
        &[
            "trace-ipc",
            "--limit",
            "1",
            "--deterministic",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].contains("1 more messages"), "{stdout}");
}

/// `run --json --trace`: the summary holds the trace and `trace_dropped`.
#[test]
fn run_json_trace_holds_the_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = app(tmp.path());
    let out = estactl(
        tmp.path(),
        &[
            "run",
            "--json",
            "--trace",
            "--deterministic",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["trace"].as_array().unwrap().len(), 2, "{summary}");
    assert_eq!(summary["trace_dropped"], 0);
}

/// The readable trace names each flag a message carries (`output.rs`
/// `flag_names`: reply, ack?, ack, broadcast, delivery-failure). A call
/// carries CALL, the flag that says its sender waits and its receiver owes
/// the answer (ABI "The message header"): its line shows it, as the JSON
/// says flags 32.
// Failed before the fix: `flag_names` (crates/estactl/src/output.rs) had no
// entry for Flags::CALL, so the call's line showed no flag at all and read
// as a plain one-way send.
#[test]
fn the_readable_trace_shows_the_call_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = app(tmp.path());
    let out = estactl(
        tmp.path(),
        &["trace-ipc", "--deterministic", dir.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap();
    assert!(first.contains("zcli"), "{stdout}");
    assert!(
        first.contains('['),
        "the call's flags are not shown: {first}"
    );
    assert!(first.ends_with("[call]"), "{first}");
}
