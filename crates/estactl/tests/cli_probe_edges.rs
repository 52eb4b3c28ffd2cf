//! `estactl` CLI edge cases, end to end on the real binary (from the
//! thirty-eighth probe round): escaping of an app's text, deterministic
//! output, option errors, the readable trace's layout and boot errors, each
//! quoting the promise it holds the tool to; then manifests, inspection,
//! JSON summaries, trace limits, full devices, the compiled-module cache
//! and signals, which held.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const SEVEN: &str = r#"(module (func (export "run") (result i32) i32.const 7))"#;
const WAIT_FOREVER: &str = r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (drop (call $receive (i32.const 0) (i64.const -1)
                                           (i32.const 0) (i32.const 64) (i32.const 1024)))))"#;

// =============================================== failed before their fixes

/// output.rs, `printable`: "what an app's files put in names, paths and
/// scopes reaches the terminal as text, never as an escape sequence or a
/// forged line." `show-capabilities` prints the request column
/// (`CapabilityRequest`'s Display, `name [scope]`) escaped, like its last
/// column: a scope holding an ESC and a newline neither colours the
/// terminal nor forges a line.
// Failed before the fix: inspect.rs show_capabilities printed
// `request.to_string()` raw, so the ESC reached stdout and "FAKE: granted
// everything" began a line of its own.
#[test]
fn show_capabilities_escapes_control_characters_of_a_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(
        &app,
        "a",
        r#","capabilities_required":[{"name":"messaging:send","scope":"pong\u001b[31mRED\nFAKE: granted everything"}]"#,
        OK,
    );
    let out = estactl(
        tmp.path(),
        &["show-capabilities", app.to_str().unwrap(), "a"],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "raw ESC on stdout: {stdout:?}");
    assert!(
        !stdout.lines().any(|line| line.starts_with("FAKE")),
        "a forged line: {stdout:?}"
    );
}

/// ARCHITECTURE.md, "Deterministic mode": "a virtual clock ... Preemption
/// points depend only on fuel, so a run repeats"; README: "`--deterministic`
/// uses the virtual clock". Two deterministic runs of the same app print
/// identical summaries, as text and as JSON: every figure (fuel, the
/// virtual `cpu_ns`, checkpoints, handoffs) and the run's elapsed time
/// (`elapsed_ms`, "N processes in X ms"), which is virtual time too.
// Failed before the fix: everything repeated but `elapsed_ms` (97.07 ms
// against 98.04 ms): the kernel's RunReport::elapsed came from a wall-clock
// `Instant` (init.rs, `elapsed: started.elapsed()`) even in deterministic
// mode.
#[test]
fn two_deterministic_runs_print_identical_summaries() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let run = |json: bool| {
        let mut args = vec!["run", "--deterministic", app.as_str()];
        if json {
            args.push("--json");
        }
        let out = estactl(tmp.path(), &args);
        no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let (first, second) = (run(true), run(true));
    let a: serde_json::Value = serde_json::from_str(&first).unwrap();
    let b: serde_json::Value = serde_json::from_str(&second).unwrap();
    // Everything but the elapsed time (the figure that differed) first.
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    a2["elapsed_ms"] = 0.into();
    b2["elapsed_ms"] = 0.into();
    assert_eq!(a2, b2, "more than the elapsed time differs");
    assert_eq!(
        first, second,
        "two deterministic runs printed different JSON summaries"
    );
    assert_eq!(
        run(false),
        run(false),
        "two deterministic runs printed different text summaries"
    );
}

/// crates/estactl/src/output.rs `print_trace` lays the readable trace out
/// in columns (`{:<16?}` for the message type), README: trace-ipc prints
/// "the messages of a run, readably". The message type column is 16
/// characters wide, so the columns after it line up.
// Failed before the fix: the line read "PING seq 1": abi messages.rs
// `impl Debug for MessageType` wrote the name with `f.write_str` (and an
// unnamed type with `write!`), which ignore the width `{:<16?}` asks for.
#[test]
fn the_readable_trace_pads_the_message_type_column() {
    let tmp = tempfile::tempdir().unwrap();
    let out = estactl(
        tmp.path(),
        &[
            "trace-ipc",
            "--deterministic",
            "--limit",
            "2",
            &examples("ping-pong"),
        ],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap();
    assert!(first.contains("PING"), "{stdout}");
    assert!(
        first.contains(&format!("{:<16} seq", "PING")),
        "the type column is not 16 wide: {first:?}"
    );
}

/// crates/estactl/src/main.rs `cannot_boot`: errors read "cannot boot DIR:
/// ERROR", naming the directory once (left out only when the error
/// already starts with the path of a file in it). An app directory called
/// `ca` (or `c`, `a`, `no` ...) whose error names no file ("cannot spawn
/// b: ...") is still named.
// Failed before the fix: "cannot boot: cannot spawn b ...": cannot_boot
// tested the error's text with `str::starts_with("ca")`, a string prefix
// rather than a path under the directory.
#[test]
fn a_boot_error_names_the_app_dir_whatever_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    module(&tmp.path().join("ca"), "a", "", OK);
    module(&tmp.path().join("ca"), "b", "", OK);
    let out = command(tmp.path())
        .current_dir(tmp.path())
        .args(["run", "--max-processes", "1", "ca"])
        .output()
        .unwrap();
    no_panic(&out);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot spawn b"), "{stderr}");
    assert!(
        stderr.contains("cannot boot ca: cannot spawn b"),
        "the error does not name the app directory: {stderr}"
    );
}

/// The brief: errors name what is wrong; commit 07eac81 made `bench
/// --repeat -1` name the option (`allow_negative_numbers`), "--repeat -1
/// names the option". `trace-ipc --limit -1` and `run --max-processes -1`
/// name `--limit` / `--max-processes` the same way (exit 2).
// Failed before the fix: both said "unexpected argument '-1' found" with
// the tip "to pass '-1' as a value, use '-- -1'", naming neither option
// (and that advice failed in turn: "a value is required for '--limit
// <LIMIT>'"): `TraceIpc::limit` and `BootOptions::max_processes` lacked
// `allow_negative_numbers = true`, so clap read "-1" as an unknown flag.
#[test]
fn a_negative_number_option_error_names_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "a", "", OK);
    let app = app.to_str().unwrap();
    for (args, option) in [
        (vec!["trace-ipc", "--limit", "-1", app], "--limit"),
        (vec!["run", "--max-processes", "-1", app], "--max-processes"),
    ] {
        let out = estactl(tmp.path(), &args);
        no_panic(&out);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(option),
            "{args:?}: the error does not name {option}: {stderr}"
        );
    }
    // The model the brief's fix set: bench names its option.
    let out = estactl(tmp.path(), &["bench", "--repeat", "-1", "--list"]);
    assert!(text(&out.stderr).contains("--repeat"));
}

// ============================================================ what held

/// README: "Unknown fields and bad values are errors that name the file
/// and the field"; "2 if the app did not load"; nothing on stdout.
#[test]
fn bad_manifests_exit_2_naming_the_file_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            r#","priority":"urgent""#,
            "priority: unknown variant `urgent`",
        ),
        (
            r#","mailbox":{"capacity":-1}"#,
            "mailbox.capacity: invalid value: integer `-1`",
        ),
        (
            r#","mailbox":{"capacity":1e30}"#,
            "mailbox.capacity: invalid type",
        ),
        (
            r#","mailbox":{"capacity":99999999999999999999999}"#,
            "mailbox.capacity",
        ),
        (
            r#","mailbox":{"capacity":0}"#,
            "mailbox.capacity: 0 is outside 1..=65536",
        ),
        (
            r#","mailbox":{"capacity":65537}"#,
            "mailbox.capacity: 65537 is outside",
        ),
        (
            r#","capabilities_required":["messaging:sendd"]"#,
            "capabilities_required[0]: unknown capability \"messaging:sendd\"",
        ),
        (
            r#","capabilities_required":["messaging:send","messaging:send"]"#,
            "capabilities_required[1]: repeats capabilities_required[0]",
        ),
        (
            r#","capabilities_required":[{"name":"messaging:receive","scope":"pong"}]"#,
            "capabilities_required[0].scope: messaging:receive cannot be scoped",
        ),
        (
            r#","capabilities_required":[{"name":"messaging:send","scope":" , ,"}]"#,
            "the scope is empty",
        ),
        (r#","name":"b""#, "duplicate field `name`"),
        (
            r#","restart":"always""#,
            "restart: unknown variant `always`",
        ),
        (
            r#","memory_class":"huge""#,
            "memory_class: unknown variant `huge`",
        ),
        (r#","preload":"yes""#, "preload: invalid type"),
        (
            r#","dependencies":{"zz":"not a req"}"#,
            "dependencies.zz: \"not a req\" is not a semver requirement",
        ),
        (
            r#","dependencies":{"a":"*"}"#,
            "dependencies.a: a module cannot depend on itself",
        ),
        (
            r#","supervisor":"Bad Name""#,
            "supervisor: \"Bad Name\" is not a module name",
        ),
        (r#","frobnicate":1"#, "unknown field `frobnicate`"),
    ];
    for (index, (extra, expected)) in cases.iter().enumerate() {
        let app = tmp.path().join(format!("app{index}"));
        module(&app, "a", extra, OK);
        for sub in ["run", "list-modules"] {
            let out = estactl(tmp.path(), &[sub, "--json", app.to_str().unwrap()]);
            no_panic(&out);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
            assert!(stderr.contains(expected), "{extra}: {stderr}");
            assert!(
                stderr.contains(&app.join("a/manifest.json").display().to_string()),
                "{extra}: the file is not named: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{extra}: {}", text(&out.stdout));
        }
    }
    // Manifest-level shapes: not an object, a BOM, unicode names, an empty
    // entry point, an unknown runtime.
    let whole: &[(&str, &str)] = &[
        ("[1,2,3]", "must be a JSON object, not an array"),
        ("\u{feff}{}", "not valid JSON"),
        (
            r#"{"name":"módulo","version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#,
            "name: \"módulo\" is not a module name",
        ),
        (
            r#"{"name":"a","version":"0.1.0","entry_point":"","runtime":"wasm32"}"#,
            "entry_point: must name an exported function",
        ),
        (
            r#"{"name":"a","version":"01.0.0","entry_point":"run","runtime":"wasm32"}"#,
            "version: \"01.0.0\" is not semver",
        ),
        (
            r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm64"}"#,
            "runtime: \"wasm64\" is not supported",
        ),
    ];
    for (index, (json, expected)) in whole.iter().enumerate() {
        let app = tmp.path().join(format!("whole{index}"));
        write(&app.join("manifest.json"), json);
        let out = estactl(tmp.path(), &["run", app.to_str().unwrap()]);
        no_panic(&out);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{json}: {stderr}");
        assert!(stderr.contains(expected), "{json}: {stderr}");
    }
}

/// README: "`estactl run DIR` loads and validates every module, checks
/// dependencies"; "2 if the app did not load". Duplicate names across
/// subdirectories, a missing module file, an entry point that is not
/// exported (or not a function), a missing dependency, a version
/// mismatch, a three-module cycle: exit 2, named.
#[test]
fn apps_that_cannot_boot_exit_2_naming_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dup = tmp.path().join("dup");
    write(
        &dup.join("x/manifest.json"),
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"}"#,
    );
    write(&dup.join("x/m.wat"), OK);
    write(
        &dup.join("y/manifest.json"),
        r#"{"name":"a","version":"0.2.0","entry_point":"run","runtime":"wasm32","module":"m.wat"}"#,
    );
    write(&dup.join("y/m.wat"), OK);
    let missing = tmp.path().join("missing");
    write(
        &missing.join("a/manifest.json"),
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#,
    );
    let unexported = tmp.path().join("unexported");
    module(&unexported, "a", "", r#"(module (func (export "main")))"#);
    let not_func = tmp.path().join("notfunc");
    module(&not_func, "a", "", r#"(module (memory (export "run") 1))"#);
    let nodep = tmp.path().join("nodep");
    module(&nodep, "a", r#","dependencies":{"zz":"^1"}"#, OK);
    let version = tmp.path().join("version");
    module(&version, "a", r#","dependencies":{"b":"^2"}"#, OK);
    module(&version, "b", "", OK);
    let cycle = tmp.path().join("cycle");
    module(&cycle, "a", r#","dependencies":{"b":"*"}"#, OK);
    module(&cycle, "b", r#","dependencies":{"c":"*"}"#, OK);
    module(&cycle, "c", r#","dependencies":{"a":"*"}"#, OK);
    let cases = [
        (
            &dup,
            "a module named \"a\" is already in this app".to_string(),
        ),
        (
            &missing,
            format!(
                "{}: cannot read the module",
                missing.join("a/a.wasm").display()
            ),
        ),
        (
            &unexported,
            "does not export the entry point function `run`".to_string(),
        ),
        (&not_func, "`run`".to_string()),
        (&nodep, "no module named \"zz\"".to_string()),
        (&version, "^2".to_string()),
        (&cycle, "dependency cycle".to_string()),
    ];
    for (dir, expected) in cases {
        for sub in ["run", "trace-ipc"] {
            let out = estactl(tmp.path(), &[sub, dir.to_str().unwrap()]);
            no_panic(&out);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}: {stderr}", dir.display());
            assert!(stderr.contains(&expected), "{}: {stderr}", dir.display());
            assert!(out.stdout.is_empty());
        }
    }
}

/// README: `module` is "a regular file inside the manifest's directory";
/// find_manifests: a link out of the app directory is an error. Links
/// out (subdirectory, manifest, module file, a directory on the module's
/// path, /dev/zero), absolute and `..` paths, a FIFO and a link loop are
/// refused, exit 2, without hanging.
#[test]
fn links_and_odd_files_out_of_the_app_are_refused() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    module(&outside, "a", "", OK);
    let plain =
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"}"#;
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    let s1 = tmp.path().join("s1");
    std::fs::create_dir_all(&s1).unwrap();
    symlink(outside.join("a"), s1.join("a")).unwrap();
    cases.push((s1, "leads outside the app directory"));
    let s2 = tmp.path().join("s2");
    std::fs::create_dir_all(s2.join("a")).unwrap();
    symlink(outside.join("a/manifest.json"), s2.join("a/manifest.json")).unwrap();
    write(&s2.join("a/m.wat"), OK);
    cases.push((s2, "leads outside the app directory"));
    let s3 = tmp.path().join("s3");
    write(&s3.join("a/manifest.json"), plain);
    symlink(outside.join("a/m.wat"), s3.join("a/m.wat")).unwrap();
    cases.push((s3, "leads outside the manifest's directory"));
    let s4 = tmp.path().join("s4");
    write(
        &s4.join("a/manifest.json"),
        &plain.replace("m.wat", "sub/m.wat"),
    );
    symlink(outside.join("a"), s4.join("a/sub")).unwrap();
    cases.push((s4, "leads outside the manifest's directory"));
    let s5 = tmp.path().join("s5");
    write(&s5.join("a/manifest.json"), plain);
    symlink("/dev/zero", s5.join("a/m.wat")).unwrap();
    cases.push((s5, "leads outside the manifest's directory"));
    let s6 = tmp.path().join("s6");
    write(
        &s6.join("a/manifest.json"),
        &plain.replace("m.wat", "../../outside/a/m.wat"),
    );
    cases.push((s6, "must be a path inside the manifest's directory"));
    let s7 = tmp.path().join("s7");
    write(
        &s7.join("a/manifest.json"),
        &plain.replace("m.wat", &outside.join("a/m.wat").display().to_string()),
    );
    cases.push((s7, "must be a path inside the manifest's directory"));
    let s8 = tmp.path().join("s8");
    write(&s8.join("a/manifest.json"), plain);
    let fifo = std::ffi::CString::new(s8.join("a/m.wat").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    cases.push((s8, "not a regular file"));
    let s9 = tmp.path().join("s9");
    write(&s9.join("a/manifest.json"), plain);
    symlink("m.wat", s9.join("a/m.wat")).unwrap();
    cases.push((s9, "symbolic links"));
    let s10 = tmp.path().join("s10");
    std::fs::create_dir_all(s10.join("a")).unwrap();
    let fifo = std::ffi::CString::new(s10.join("a/manifest.json").to_str().unwrap()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    cases.push((s10, "not a readable regular file"));
    for (dir, expected) in cases {
        for sub in ["run", "list-modules"] {
            let started = Instant::now();
            let out = estactl(tmp.path(), &[sub, dir.to_str().unwrap()]);
            assert!(started.elapsed() < Duration::from_secs(8));
            no_panic(&out);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}: {stderr}", dir.display());
            assert!(stderr.contains(expected), "{}: {stderr}", dir.display());
        }
    }
}

fn check_process_fields(p: &serde_json::Value) {
    for field in [
        "pid",
        "module",
        "priority",
        "status",
        "sent",
        "received",
        "send_failures",
        "delivery_failures",
        "undelivered",
        "fuel_used",
        "cpu_ns",
        "preemptions",
        "requeues",
    ] {
        assert!(p.get(field).is_some(), "no {field} in {p}");
    }
    assert!(p["status"]["kind"].is_string(), "{p}");
    assert!(p["status"]["code"].is_i64(), "{p}");
}

fn check_summary_fields(summary: &serde_json::Value) {
    for field in [
        "elapsed_ms",
        "workers",
        "fairness",
        "checkpoints",
        "handoffs",
        "notices_unsupervised",
        "processes",
        "restarts",
    ] {
        assert!(summary.get(field).is_some(), "no {field} in {summary}");
    }
    for p in summary["processes"].as_array().unwrap() {
        check_process_fields(p);
    }
}

/// README: exit "1 if one trapped, exited with another code or was stopped
/// as deadlocked"; "`--json` prints the summary for machines, `--trace`
/// adds the IPC trace". With a trap, an exit code 7 and a deadlock in one
/// app, `run --json [--trace]` is one valid JSON document with every field,
/// the status of each, and exit 1; the supervised example's restarts are
/// listed.
#[test]
fn json_summaries_of_traps_deadlocks_and_restarts_are_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "trap", "", TRAP);
    module(&app, "seven", "", SEVEN);
    module(
        &app,
        "wait",
        r#","capabilities_required":["messaging:receive"]"#,
        WAIT_FOREVER,
    );
    for trace in [false, true] {
        let mut args = vec!["run", "--json", app.to_str().unwrap()];
        if trace {
            args.push("--trace");
        }
        let out = estactl(tmp.path(), &args);
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("one JSON document");
        check_summary_fields(&summary);
        if trace {
            assert!(summary["trace"].is_array(), "{summary}");
            assert_eq!(summary["trace_dropped"], 0);
        }
        let by_module = |name: &str| {
            summary["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["module"] == name)
                .unwrap_or_else(|| panic!("no {name} in {summary}"))
                .clone()
        };
        let trap = by_module("trap");
        assert_eq!(trap["status"]["kind"], "trapped");
        assert_eq!(trap["status"]["name"], "TRAP_UNREACHABLE");
        assert!(
            trap["status"]["detail"]
                .as_str()
                .unwrap()
                .contains("unreachable")
        );
        assert_eq!(by_module("seven")["status"]["kind"], "exited");
        assert_eq!(by_module("seven")["status"]["code"], 7);
        assert_eq!(by_module("wait")["status"]["kind"], "stopped");
        assert_eq!(by_module("wait")["status"]["name"], "DEADLOCKED");
    }
    // A deadlock alone is 1, with the readable reason.
    let alone = tmp.path().join("alone");
    module(
        &alone,
        "wait",
        r#","capabilities_required":["messaging:receive"]"#,
        WAIT_FOREVER,
    );
    let out = estactl(tmp.path(), &["run", alone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("stopped: waiting for a message no process could send"));
    // Restarts.
    let out = estactl(
        tmp.path(),
        &["run", "--json", "--deterministic", &examples("supervised")],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    check_summary_fields(&summary);
    let restarts = summary["restarts"].as_array().unwrap();
    assert!(!restarts.is_empty(), "{summary}");
    for r in restarts {
        for field in ["module", "pid", "code", "action", "new_pid"] {
            assert!(r.get(field).is_some(), "no {field} in {r}");
        }
    }
    assert_eq!(restarts.last().unwrap()["action"], "GiveUp");
}

/// README: trace-ipc prints "the first 200, all with `--limit 0`". `--limit
/// 0` and `--limit usize::MAX` print every message with no "more" line;
/// overflowing and non-numeric limits are usage errors naming `--limit`
/// (exit 2); `run --trace` prints every message after the summary.
/// (Negative limits: see `a_negative_number_option_error_names_the_option`.)
#[test]
fn trace_limits_at_their_edges() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("supervised");
    let count = |limit: &str| {
        let out = estactl(
            tmp.path(),
            &[
                "trace-ipc",
                "--deterministic",
                "--json",
                "--limit",
                limit,
                &app,
            ],
        );
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{limit}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for line in stdout.lines() {
            let _: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        }
        (
            stdout.lines().count(),
            text(&out.stderr).contains("more messages not shown"),
        )
    };
    let (all, more) = count("0");
    assert!(all > 0 && !more);
    assert_eq!(count(&usize::MAX.to_string()), (all, false));
    assert_eq!(count("1"), (1, all > 1));
    for bad in ["18446744073709551616", "1e3", "", "+-1"] {
        let out = estactl(tmp.path(), &["trace-ipc", "--limit", bad, &app]);
        no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).contains("--limit"), "{bad:?}");
        assert!(out.stdout.is_empty());
    }
    let out = estactl(tmp.path(), &["run", "--trace", "--deterministic", &app]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("more messages"), "{stdout}");
}

/// README: "74 if its output could not be written (a full device; a closed
/// stdout, on Linux ...)", also for a run that fails, a deadlock, `--trace`
/// and trace-ipc with the trace's note.
#[test]
fn a_full_stdout_exits_74_for_failing_runs_and_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "trap", "", TRAP);
    module(
        &app,
        "wait",
        r#","capabilities_required":["messaging:receive"]"#,
        WAIT_FOREVER,
    );
    let app = app.to_str().unwrap().to_string();
    let sup = examples("supervised");
    let cases: [&[&str]; 5] = [
        &["run", &app],
        &["run", "--json", "--trace", &app],
        &["run", "--trace", &sup],
        &["trace-ipc", "--limit", "1", &sup],
        &["list-modules", "--json", &sup],
    ];
    for args in cases {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = command(tmp.path())
            .args(args)
            .stdout(Stdio::from(full))
            .output()
            .unwrap();
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("cannot write to standard output"));
    }
}

/// A way to damage the cache's entries: what it is, and the damage.
type Corruption<'a> = (&'static str, Box<dyn Fn() + 'a>);

/// preload_manager invariant 4: "A corrupt, truncated, misplaced or
/// refused entry is deleted and rebuilt"; invariant 3: "Nothing
/// unverified is deserialized". Each module of the app returns its own
/// exit code (0 and 7), so running the other's code would show. Flipped
/// bytes, truncation, swapped entries, an entry that is a directory, a
/// link, a FIFO (must not block) or group-writable: the run is right, no
/// panic, and the entries are rebuilt as private regular files.
#[test]
fn corrupted_cache_entries_never_run_wrong_code() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "a", "", OK);
    module(&app, "b", "", SEVEN);
    let cache = tmp.path().join("cache");
    let run = || {
        let started = Instant::now();
        let out = estactl(tmp.path(), &["run", "--json", app.to_str().unwrap()]);
        assert!(started.elapsed() < Duration::from_secs(8));
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut codes: Vec<(String, i64)> = summary["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["module"].as_str().unwrap().to_string(),
                    p["status"]["code"].as_i64().unwrap(),
                )
            })
            .collect();
        codes.sort();
        assert_eq!(codes, vec![("a".into(), 0), ("b".into(), 7)]);
        text(&out.stderr)
    };
    run();
    let entries = || {
        let mut e: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        e.sort();
        e
    };
    let files = entries();
    assert_eq!(files.len(), 2);
    let good: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let restore = || {
        for (f, bytes) in files.iter().zip(&good) {
            let _ = std::fs::remove_file(f);
            let _ = std::fs::remove_dir_all(f);
            std::fs::write(f, bytes).unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    };
    let corruptions: Vec<Corruption<'_>> = vec![
        (
            "flipped payload byte",
            Box::new(|| {
                for (f, bytes) in files.iter().zip(&good) {
                    let mut b = bytes.clone();
                    let middle = b.len() / 2;
                    b[middle] ^= 0xff;
                    std::fs::write(f, b).unwrap();
                }
            }),
        ),
        (
            "flipped header byte",
            Box::new(|| {
                for (f, bytes) in files.iter().zip(&good) {
                    let mut b = bytes.clone();
                    b[3] ^= 1;
                    b[50] ^= 1;
                    std::fs::write(f, b).unwrap();
                }
            }),
        ),
        (
            "truncated",
            Box::new(|| {
                for (i, (f, bytes)) in files.iter().zip(&good).enumerate() {
                    let len = if i == 0 { 10 } else { bytes.len() - 1 };
                    std::fs::write(f, &bytes[..len]).unwrap();
                }
            }),
        ),
        (
            "swapped",
            Box::new(|| {
                std::fs::write(&files[0], &good[1]).unwrap();
                std::fs::write(&files[1], &good[0]).unwrap();
            }),
        ),
        (
            "a directory and a link",
            Box::new(|| {
                std::fs::remove_file(&files[0]).unwrap();
                std::fs::create_dir(&files[0]).unwrap();
                std::fs::write(files[0].join("x"), b"x").unwrap();
                std::fs::remove_file(&files[1]).unwrap();
                let elsewhere = tmp.path().join("elsewhere.cwasm");
                std::fs::write(&elsewhere, &good[1]).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &files[1]).unwrap();
            }),
        ),
        (
            "a FIFO and a group-writable entry",
            Box::new(|| {
                std::fs::remove_file(&files[0]).unwrap();
                let fifo = std::ffi::CString::new(files[0].to_str().unwrap()).unwrap();
                // SAFETY: mkfifo(3) on a NUL-terminated path we own.
                assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
                std::fs::set_permissions(&files[1], std::fs::Permissions::from_mode(0o620))
                    .unwrap();
            }),
        ),
    ];
    for (what, corrupt) in corruptions {
        restore();
        corrupt();
        let stderr = run();
        assert!(stderr.contains("rejected"), "{what}: {stderr}");
        for f in entries() {
            let meta = std::fs::symlink_metadata(&f).unwrap();
            assert!(meta.file_type().is_file(), "{what}: {f:?} not rebuilt");
            assert_eq!(meta.permissions().mode() & 0o077, 0, "{what}: {f:?}");
        }
        // And the rebuilt entries are hits the next time.
        let stderr = run();
        assert!(!stderr.contains("rejected"), "{what}: {stderr}");
    }
}

/// preload_manager: "several processes may use one directory at once";
/// invariant 2: "Only whole entries are visible". Eight runs at once on a
/// cold cache all succeed, with no warning, and leave two whole entries
/// and no temporary files.
#[test]
fn concurrent_runs_share_one_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let children: Vec<_> = (0..8)
        .map(|_| {
            command(tmp.path())
                .args(["run", "--deterministic", &app])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("WARN"), "{}", text(&out.stderr));
    }
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".cwasm")), "{names:?}");
}

/// README: the cache "must be a directory of your own that others cannot
/// write, or the run goes on without it and says why"; `--no-cache` skips
/// it (nothing created, nothing said).
#[test]
fn unusable_cache_dirs_are_named_and_skipped() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "a", "", OK);
    let file = tmp.path().join("a-file");
    write(&file, "x");
    let world = tmp.path().join("world");
    std::fs::create_dir(&world).unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sticky = tmp.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let group = tmp.path().join("group");
    std::fs::create_dir(&group).unwrap();
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
    for (dir, reason) in [
        (file.clone(), "it exists and is not a directory"),
        (file.join("sub"), "Not a directory"),
        (world.clone(), "mode 777"),
        (sticky.clone(), "mode 1777"),
        (group.clone(), "mode 770"),
        (PathBuf::from("/dev/null"), "not a directory"),
    ] {
        for sub in ["run", "list-modules"] {
            let out = Command::new(env!("CARGO_BIN_EXE_estactl"))
                .env("ESTALOGIC_CACHE_DIR", &dir)
                .args([sub, app.to_str().unwrap()])
                .output()
                .unwrap();
            no_panic(&out);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{}: {stderr}", dir.display());
            assert!(
                stderr.contains("running without the compiled-module cache")
                    && stderr.contains(&dir.display().to_string())
                    && stderr.contains(reason),
                "{}: {stderr}",
                dir.display()
            );
        }
    }
    assert_eq!(std::fs::read_dir(&world).unwrap().count(), 0);
    let unused = tmp.path().join("unused");
    let out = Command::new(env!("CARGO_BIN_EXE_estactl"))
        .env("ESTALOGIC_CACHE_DIR", &unused)
        .args(["run", "--no-cache", app.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!unused.exists());
    assert!(
        !text(&out.stderr).contains("cache"),
        "{}",
        text(&out.stderr)
    );
}

/// README: "130 if a signal stopped the run" and the run "prints a summary
/// per process": after SIGINT the readable summary is printed (each
/// process "stopped at shutdown"), and `--trace` still prints; a module
/// whose start function spins (it runs at instantiation, before the entry
/// point) is stopped too.
#[test]
fn sigint_prints_the_summary_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let spin = tmp.path().join("spin");
    module(&spin, "spin", "", LOOP);
    module(&spin, "zok", "", OK);
    let start = tmp.path().join("start");
    module(
        &start,
        "st",
        "",
        r#"(module (func $s (loop br 0)) (start $s) (func (export "run")))"#,
    );
    for (app, args) in [
        (&spin, vec!["run"]),
        (&spin, vec!["run", "--trace"]),
        (&start, vec!["run", "--deterministic"]),
    ] {
        let mut all = args.clone();
        all.push(app.to_str().unwrap());
        let out = signalled(tmp.path(), &all, libc::SIGINT, Duration::from_millis(1200));
        no_panic(&out);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(130),
            "{all:?}: {}",
            text(&out.stderr)
        );
        assert!(stdout.starts_with("pid "), "{all:?}: {stdout}");
        assert!(stdout.contains("stopped at shutdown"), "{all:?}: {stdout}");
        assert!(stdout.contains("processes in"), "{all:?}: {stdout}");
    }
}

/// Start functions: a trap in one is a trapped process (exit 1), an `exit`
/// from one is the process's exit code.
#[test]
fn start_functions_trap_and_exit_like_entry_points() {
    let tmp = tempfile::tempdir().unwrap();
    let trap = tmp.path().join("trap");
    module(
        &trap,
        "a",
        "",
        r#"(module (func $s unreachable) (start $s) (func (export "run")))"#,
    );
    let exit = tmp.path().join("exit");
    module(
        &exit,
        "a",
        "",
        r#"(module (import "estalogic" "exit" (func $exit (param i32)))
             (func $s i32.const 5 call $exit) (start $s) (func (export "run")))"#,
    );
    let out = estactl(tmp.path(), &["run", "--json", trap.to_str().unwrap()]);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["processes"][0]["status"]["kind"], "trapped");
    let out = estactl(tmp.path(), &["run", "--json", exit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["processes"][0]["status"]["code"], 5);
}

/// `show-capabilities` of a module that does not exist, and inspection of
/// a file instead of a directory: exit 2, named, nothing on stdout; an
/// unknown module's name with control characters is escaped.
#[test]
fn inspecting_what_is_not_there_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "a", "", OK);
    let file = tmp.path().join("file");
    write(&file, "{}");
    let app = app.to_str().unwrap();
    for args in [
        vec!["show-capabilities", app, "ghost"],
        vec!["show-capabilities", "--json", app, "ghost"],
        vec!["show-capabilities", app, "\u{1b}[31mred\nFAKE"],
        vec!["show-capabilities", file.to_str().unwrap(), "a"],
        vec!["list-modules", file.to_str().unwrap()],
        vec!["list-modules", "--json", file.to_str().unwrap()],
    ] {
        let out = estactl(tmp.path(), &args);
        no_panic(&out);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains("no module named") || stderr.contains("Not a directory"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains('\u{1b}'), "{args:?}: {stderr:?}");
        if stderr.contains("no module named") {
            assert!(stderr.contains("(modules: a)"), "{stderr}");
        }
    }
}
