//! `estactl` end to end: the real binary on real app directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn estactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estactl"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run estactl")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_ping_pong_example_succeeds_with_a_summary() {
    let out = estactl(&["run", "examples/ping-pong"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for expected in [
        "ping",
        "pong",
        "exited with code 0",
        "10001",
        "10000",
        "fuel",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    assert!(text(&out.stderr).contains("10000 round trips, all in order"));
}

#[test]
fn the_handler_ping_pong_example_runs_a_task_against_a_handler() {
    let out = estactl(&["run", "--json", "examples/handler-ping-pong"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("10000 round trips, all in order"));
    // The handler answered every PING and ended on the empty one.
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let pong = json["processes"]
        .as_array()
        .expect("a process list")
        .iter()
        .find(|p| p["module"] == "pong")
        .expect("pong ran");
    assert_eq!(pong["sent"], 10_000, "{pong}");
    assert_eq!(pong["received"], 10_001, "{pong}");
}

#[test]
fn run_json_summary_is_machine_readable() {
    let out = estactl(&["run", "--json", "examples/ping-pong"]);
    assert_eq!(out.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let processes = summary["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2);
    for process in processes {
        assert_eq!(process["status"]["kind"], "exited");
        assert_eq!(process["status"]["code"], 0);
        assert!(process["fuel_used"].as_u64().unwrap() > 0);
    }
}

#[test]
fn a_bad_manifest_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("svc/manifest.json");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        r#"{"name":"svc","version":"0.1.0","entry_point":"run","runtime":"wasm32","priority":"urgent"}"#,
    )
    .unwrap();
    let out = estactl(&["run", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&manifest.display().to_string()), "{stderr}");
    assert!(stderr.contains("priority"), "{stderr}");
    assert!(out.stdout.is_empty(), "no partial summary");
}

#[test]
fn a_trapping_process_makes_the_exit_code_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("boom");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(
        svc.join("manifest.json"),
        r#"{"name":"boom","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"boom.wat"}"#,
    )
    .unwrap();
    std::fs::write(
        svc.join("boom.wat"),
        r#"(module (func (export "run") unreachable))"#,
    )
    .unwrap();
    let out = estactl(&["run", dir.path().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("TRAP_UNREACHABLE (4001)"), "{stdout}");
}

#[test]
fn list_modules_shows_versions_states_and_dependencies() {
    let out = estactl(&["list-modules", "examples/ping-pong"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ping") && stdout.contains("pong ^0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("Ready"), "{stdout}");
    let json = estactl(&["list-modules", "--json", "examples/ping-pong"]);
    let modules: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(modules.as_array().unwrap().len(), 2);
}

#[test]
fn show_capabilities_lists_what_a_module_is_granted() {
    let out = estactl(&["show-capabilities", "examples/ping-pong", "pong"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("messaging:send"), "{stdout}");
    assert!(stdout.contains("Channel: write"), "{stdout}");
    assert!(
        !stdout.contains("process:lookup"),
        "pong may not look up names: {stdout}"
    );
    let missing = estactl(&["show-capabilities", "examples/ping-pong", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no module named \"nope\""));
}

#[test]
fn trace_ipc_prints_each_message_readably() {
    let out = estactl(&["trace-ipc", "--limit", "4", "examples/ping-pong"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("ping") && lines[0].contains("-> pong") && lines[0].contains("PING"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("pong") && lines[1].contains("-> ping") && lines[1].contains("PONG"),
        "{stdout}"
    );
    assert!(stdout.contains("19997 more messages"), "{stdout}");
}

#[test]
fn the_supervised_example_climbs_the_ladder_and_gives_up() {
    let out = estactl(&["run", "--json", "examples/supervised"]);
    assert_eq!(out.status.code(), Some(1), "processes trapped");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let actions: Vec<&str> = summary["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 15);
    assert_eq!(actions[0], "RestartSameState");
    assert_eq!(actions[14], "GiveUp");
    let traps = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["module"] == "crasher" && p["status"]["code"] == 4001)
        .count();
    assert_eq!(traps, 15);
}

#[test]
fn bench_only_takes_a_list_and_names_a_fragment_that_matches_nothing() {
    let out = estactl(&[
        "bench",
        "--quick",
        "--repeat",
        "1",
        "--json",
        "--only",
        // Neither subtracts two timings, so neither fails under the noise
        // of the tests running beside it.
        "capability_check,wasmtime_spawn",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let measured: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|key| !["repeat", "quick"].contains(key))
        .collect();
    assert_eq!(
        measured,
        ["capability_check_ns", "wasmtime_spawn_run_exit_ns"]
    );

    let out = estactl(&["bench", "--quick", "--only", "noop_syscall,no_such_thing"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("\"no_such_thing\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_json_with_trace_includes_the_trace() {
    let out = estactl(&["run", "--json", "--trace", "examples/supervised"]);
    assert_eq!(out.status.code(), Some(1), "processes trapped");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let trace = summary["trace"].as_array().expect("a trace array");
    assert!(!trace.is_empty(), "the supervisor's exit notifications");
    assert!(trace.iter().all(|r| r["to_module"].is_string()));
    assert_eq!(summary["trace_dropped"], 0);
    let plain = estactl(&["run", "--json", "examples/supervised"]);
    let summary: serde_json::Value = serde_json::from_slice(&plain.stdout).expect("valid JSON");
    assert!(summary.get("trace").is_none(), "only with --trace");
}

#[test]
fn the_exit_code_is_zero_only_if_every_process_exited_with_zero() {
    // One module's entry point returns `code`: 0 succeeds, 7 fails.
    for (code, expected) in [(0, 0), (7, 1)] {
        let app = tempfile::tempdir().unwrap();
        std::fs::write(
            app.path().join("manifest.json"),
            r#"{"name":"t","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"}"#,
        )
        .unwrap();
        std::fs::write(
            app.path().join("m.wat"),
            format!(r#"(module (func (export "run") (result i32) (i32.const {code})))"#),
        )
        .unwrap();
        let out = estactl(&["run", "--no-cache", app.path().to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "exit {code}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_estactl"))
        .args(["trace-ipc", "examples/ping-pong"])
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run estactl");
    // Read a little of 20,000 lines, then stop reading.
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
}

#[test]
fn an_apps_strings_reach_the_terminal_escaped() {
    // An entry point with an escape sequence and a newline came out raw:
    // terminal control codes and a forged line on stderr.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("svc/manifest.json");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        r#"{"name":"svc","version":"0.1.0","entry_point":"r\u001b[31mRED\nFAKE: line","runtime":"wasm32","module":"bundled:noop"}"#,
    )
    .unwrap();
    let out = estactl(&["run", "--no-cache", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains(r"\u{1b}[31mRED\nFAKE: line"), "{stderr:?}");
}

#[test]
fn show_capabilities_of_an_app_that_would_not_boot_fails() {
    // As list-modules: the module's capabilities are shown, then the
    // reason the app would not boot, exit 2 (it exited 0).
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("svc/manifest.json");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    std::fs::write(
        &manifest,
        r#"{"name":"svc","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"bundled:noop","dependencies":{"zz":"^1"}}"#,
    )
    .unwrap();
    let out = estactl(&["show-capabilities", dir.path().to_str().unwrap(), "svc"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("would not boot"), "{stderr}");
    assert!(stderr.contains("zz"), "{stderr}");
}

#[test]
fn bench_list_honours_json_and_only() {
    // `--json` and `--only` were ignored with `--list` (the text table of
    // every benchmark came out).
    let out = estactl(&["bench", "--list", "--json", "--only", "boot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boot_cold_ms", "boot_warm_ms"]);
    assert_eq!(list[1]["target"]["at_most"], 20.0);
    let text_list = estactl(&["bench", "--list", "--only", "boot_warm"]);
    assert_eq!(text(&text_list.stdout).lines().count(), 1);
    let bad = estactl(&["bench", "--list", "--only", "nosuchbench"]);
    assert_eq!(bad.status.code(), Some(2));
}
