//! `estactl` exit codes, JSON output, signals, inspection and odd app
//! directories (from the twenty-first probe round). Each case cites the line it holds the tool to.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

// ---------------------------------------------------------------- defects

/// output.rs, `printable`: "what an app's files put in names, paths and
/// scopes reaches the terminal as text, never as an escape sequence or a
/// forged line." `list-modules` prints a module's file path (its "source"
/// column) raw: an ESC and a newline in the file name reach the terminal.
#[test]
fn list_modules_prints_a_module_path_with_control_characters_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    let file = "m\u{1b}[31mRED\nFAKE: line.wat";
    write(
        &app.join("a/manifest.json"),
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m\u001b[31mRED\nFAKE: line.wat"}"#,
    );
    write(&app.join("a").join(file), OK);
    let out = estactl(tmp.path(), &["list-modules", app.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!stdout.contains('\u{1b}'), "raw ESC on stdout: {stdout:?}");
    assert!(
        !stdout.lines().any(|line| line.starts_with("FAKE")),
        "a forged line: {stdout:?}"
    );
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full"),
    )
}

/// README: "runs until all end (Ctrl-C stops cleanly)"; brief: never a
/// panic. With stderr unwritable (`2>/dev/full`), the first log line (a
/// guest's `log`, a restart decision) makes tracing-subscriber's internal
/// error report `eprintln!` panic on a kernel worker: with one worker the
/// run dies with exit 101; with two the other worker waits for ever for
/// the dead one, and SIGINT/SIGTERM no longer stop it (only SIGKILL).
#[test]
fn an_unwritable_stderr_does_not_panic_a_deterministic_run() {
    run_with_unwritable_stderr(&["run", "--deterministic", "--no-cache"]);
}

/// As above, with two workers: the run hangs and ignores SIGINT.
#[test]
fn an_unwritable_stderr_does_not_hang_a_run() {
    run_with_unwritable_stderr(&["run", "--no-cache"]);
}

fn run_with_unwritable_stderr(args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut child = command(tmp.path())
            .args(args)
            .arg(examples("ping-pong"))
            .stdout(Stdio::null())
            .stderr(dev_full())
            .spawn()
            .expect("run estactl");
        let started = Instant::now();
        let mut interrupted = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            let waited = started.elapsed();
            if waited > Duration::from_secs(20) && !interrupted {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGINT);
                }
                interrupted = true;
            }
            if waited > Duration::from_secs(35) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let Some(status) = status else {
            panic!("{args:?}: hung for 20 s, then ignored SIGINT for 15 s more");
        };
        assert_eq!(status.code(), Some(0), "{args:?}: {status}");
    }
}

/// README: "74 if its output could not be written". With stdout on a full
/// device every printing command exits 74 and says why on stderr; before,
/// `println!` panicked (exit 101) in `run`, `run --json`, `list-modules`
/// and `bench --list`.
#[test]
fn an_unwritable_stdout_exits_74_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let cases: [&[&str]; 7] = [
        &["run", "--deterministic", &app],
        &["run", "--json", &app],
        &["trace-ipc", &app],
        &["list-modules", &app],
        &["show-capabilities", &app, "ping"],
        &["bench", "--list"],
        &["bench", "--list", "--json"],
    ];
    for args in cases {
        let out = command(tmp.path())
            .args(args)
            .stdout(dev_full())
            .output()
            .expect("run estactl");
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr)
                .contains("error: cannot write to standard output: No space left on device"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

// ------------------------------------------------------------ what held

/// README: "130 if a signal stopped the run" (Ctrl-C, SIGTERM, SIGHUP),
/// for `run`, `run --json` (valid JSON still) and `trace-ipc`; a process
/// spinning or waiting an hour is stopped promptly.
#[test]
fn a_signal_stops_the_run_with_130() {
    let tmp = tempfile::tempdir().unwrap();
    let spin = tmp.path().join("spin");
    module(&spin, "spin", "", LOOP);
    let sleep = tmp.path().join("sleep");
    module(
        &sleep,
        "sl",
        r#","capabilities_required":["messaging:receive"]"#,
        r#"(module
  (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (drop (call $receive (i32.const 0) (i64.const 3600000)
                                           (i32.const 0) (i32.const 64) (i32.const 1024)))))"#,
    );
    let (spin, sleep) = (spin.to_str().unwrap(), sleep.to_str().unwrap());
    let wait = Duration::from_millis(1500);
    for (args, signal) in [
        (vec!["run", spin], libc::SIGINT),
        (vec!["run", "--deterministic", spin], libc::SIGTERM),
        (vec!["run", sleep], libc::SIGHUP),
        (vec!["trace-ipc", sleep], libc::SIGINT),
    ] {
        let out = signalled(tmp.path(), &args, signal, wait);
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(130),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("stopping: interrupted"));
    }
    let out = signalled(tmp.path(), &["run", "--json", spin], libc::SIGINT, wait);
    assert_eq!(out.status.code(), Some(130));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["processes"][0]["status"]["kind"], "stopped");
}

/// README: 130 only if "nothing failed before": a trap then a signal is 1;
/// an exit 0 then a signal is 130.
#[test]
fn a_signal_after_a_failure_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    for (other, expected) in [(TRAP, 1), (OK, 130)] {
        let app = tmp.path().join(format!("app{expected}"));
        module(&app, "spin", "", LOOP);
        module(&app, "other", "", other);
        let out = signalled(
            tmp.path(),
            &["run", app.to_str().unwrap()],
            libc::SIGINT,
            Duration::from_millis(1500),
        );
        no_panic(&out);
        assert_eq!(out.status.code(), Some(expected), "{}", text(&out.stdout));
    }
}

/// README: "2 if the app did not load": a module that does not compile
/// among good ones, a supervisor that is not loaded, an app dir that is a
/// file, an empty dir, a missing dir; the error names the file at fault
/// and nothing goes to stdout, with or without `--json`.
#[test]
fn apps_that_do_not_load_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let mixed = tmp.path().join("mixed");
    module(&mixed, "a", "", OK);
    module(
        &mixed,
        "b",
        "",
        r#"(module (func (export "run") i32.const 1))"#,
    );
    let unsupervised = tmp.path().join("unsupervised");
    module(
        &unsupervised,
        "a",
        r#","restart":"on_failure","supervisor":"ghost""#,
        OK,
    );
    let file = tmp.path().join("a file");
    write(&file, "not a directory");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // A bundled module without the entry point its manifest names: the
    // error named `bundled:pong` alone, not the manifest at fault.
    let bundled = tmp.path().join("bundled");
    write(
        &bundled.join("manifest.json"),
        r#"{"name":"pong","version":"0.1.0","entry_point":"nope","runtime":"wasm32","module":"bundled:pong"}"#,
    );
    // A manifest that is not JSON: the message named a field ".".
    let garbled = tmp.path().join("garbled");
    write(&garbled.join("manifest.json"), r#"{"name": "#);
    let cases = [
        (
            bundled.clone(),
            format!(
                "{}: module bundled:pong: does not export the entry point function `nope`",
                bundled.join("manifest.json").display()
            ),
        ),
        (
            garbled.clone(),
            format!(
                "{}: not valid JSON: EOF while parsing",
                garbled.join("manifest.json").display()
            ),
        ),
        (mixed.clone(), mixed.join("b/m.wat").display().to_string()),
        (
            unsupervised,
            "supervisor \"ghost\", which is not loaded".into(),
        ),
        (file.clone(), "Not a directory".into()),
        (empty, "no manifest.json".into()),
        (tmp.path().join("missing"), "No such file".into()),
    ];
    for (dir, expected) in cases {
        for command in ["run", "trace-ipc", "list-modules"] {
            for json in [false, true] {
                let mut args = vec![command, dir.to_str().unwrap()];
                if json {
                    args.push("--json");
                }
                let out = estactl(tmp.path(), &args);
                let stderr = text(&out.stderr);
                no_panic(&out);
                assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
                assert!(stderr.contains(&expected), "{args:?}: {stderr}");
                if command != "list-modules" {
                    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
                }
            }
        }
    }
}

/// Paths with spaces and non-ASCII characters, and a directory name that is
/// not UTF-8, run and list.
#[test]
fn odd_paths_work() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let spaced = tmp.path().join("sp ace/ünï cødé");
    module(&spaced, "a", "", OK);
    let raw = tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"non-utf8-\xff"));
    module(&raw, "a", "", OK);
    for dir in [spaced, raw] {
        for command in ["run", "list-modules"] {
            let out = command_with(tmp.path(), command, &dir);
            no_panic(&out);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
    }
}

fn command_with(tmp: &Path, subcommand: &str, dir: &Path) -> Output {
    command(tmp)
        .arg(subcommand)
        .arg(dir)
        .output()
        .expect("run estactl")
}

/// Clear usage errors, exit 2, for unknown subcommands and flags and bad
/// values; `show-capabilities` of an unknown module exits 2 naming it.
#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "a", "", OK);
    let app = app.to_str().unwrap();
    for args in [
        vec!["frobnicate"],
        vec!["run", "--frob", app],
        vec!["run"],
        vec![],
        vec!["trace-ipc", "--limit", "-1", app],
        vec!["trace-ipc", "--limit", "99999999999999999999999", app],
        vec!["run", "--max-processes", "0", app],
        vec!["bench", "--repeat", "0", "--list"],
        vec!["bench", "--list", "--only", ","],
        vec!["bench", "--list", "--only", "nosuchbench"],
        vec!["show-capabilities", app, "nope"],
    ] {
        let out = estactl(tmp.path(), &args);
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        // Bare `estactl` prints the help instead of an error line.
        let said = if args.is_empty() { "Usage" } else { "error" };
        assert!(text(&out.stderr).contains(said), "{args:?}");
    }
}

/// `trace-ipc --json --limit N` prints N JSON lines on stdout, the note
/// about the rest on stderr.
#[test]
fn trace_ipc_json_limit_keeps_stdout_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/supervised");
    let out = estactl(
        tmp.path(),
        &[
            "trace-ipc",
            "--json",
            "--limit",
            "3",
            examples.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for line in stdout.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(record["to_module"].is_string(), "{record}");
    }
    assert!(text(&out.stderr).contains("more messages not shown"));
}
