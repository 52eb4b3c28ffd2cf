//! `estactl` with stdout closed or on a full device: exit 74 naming the
//! failed write, never a lost summary (from the twenty-fourth probe round).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .display()
        .to_string()
}

fn cache(tmp: &Path) -> PathBuf {
    tmp.join("cache")
}

/// `estactl args` with its standard output closed (`>&-`), through sh.
fn with_stdout_closed(tmp: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$0" "$@" >&-"#)
        .arg(env!("CARGO_BIN_EXE_estactl"))
        .args(args)
        .env("ESTALOGIC_CACHE_DIR", cache(tmp))
        .output()
        .expect("run estactl through sh")
}

/// `estactl args` with stdout on /dev/full.
fn with_stdout_full(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estactl"))
        .args(args)
        .env("ESTALOGIC_CACHE_DIR", cache(tmp))
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .expect("run estactl")
}

/// `outln!` (crates/estactl/src/main.rs) and `output::OutputError` say a
/// write to standard output "that fails (a full device, a closed
/// descriptor) is an OutputError, which `main` reports and exits 74 on";
/// README: "74 if its output could not be written". With stdout closed,
/// `list-modules`, `run` and `trace-ipc` wrote nothing and exited 0: the
/// summary of the run was lost and the exit code said all was well.
// Failed before the fix: Rust's runtime reopens a closed standard
// descriptor on /dev/null before `main`, so every write "succeeded";
// `output::stdout` now checks what descriptor 1 was at start.
#[test]
fn a_closed_stdout_exits_74_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let cases: [&[&str]; 3] = [
        &["list-modules", &app],
        &["run", "--deterministic", &app],
        &["trace-ipc", &app],
    ];
    let mut codes = Vec::new();
    for args in cases {
        let out = with_stdout_closed(tmp.path(), args);
        codes.push((args[0], out.status.code(), text(&out.stderr)));
    }
    assert!(
        codes.iter().all(|(_, code, _)| *code == Some(74)),
        "exit codes with stdout closed: {codes:#?}"
    );
}

/// What held: the JSON forms and the inspection commands not in the
/// commit's own test exit 74 naming the failed write, with no panic.
#[test]
fn json_and_inspection_output_on_a_full_device_exits_74() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    let cases: [&[&str]; 5] = [
        &["list-modules", "--json", &app],
        &["show-capabilities", "--json", &app, "pong"],
        &["trace-ipc", "--json", &app],
        &["trace-ipc", "--limit", "0", &app],
        &["run", "--deterministic", "--trace", &app],
    ];
    for args in cases {
        let out = with_stdout_full(tmp.path(), args);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(74), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: cannot write to standard output"),
            "{args:?}: {stderr}"
        );
    }
}
