//! Helpers shared by the CLI test files: the real binary with a private
//! cache, app directories written from WAT, and signals to a run.

// Each test file is its own crate and uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `contents` to `path`, making its directory.
pub fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// The binary, with a private compiled-module cache under `tmp`.
pub fn command(tmp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_estactl"));
    command.env("ESTALOGIC_CACHE_DIR", tmp.join("cache"));
    command
}

/// Runs `estactl args` to its end.
pub fn estactl(tmp: &Path, args: &[&str]) -> Output {
    command(tmp).args(args).output().expect("run estactl")
}

/// Asserts the run did not panic.
pub fn no_panic(out: &Output) {
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// A task module `name` in `dir/name/` whose code is the WAT `wat`;
/// `extra` is appended to the manifest object (starting with a comma).
pub fn module(dir: &Path, name: &str, extra: &str, wat: &str) {
    write(
        &dir.join(name).join("manifest.json"),
        &format!(
            r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"{extra}}}"#
        ),
    );
    write(&dir.join(name).join("m.wat"), wat);
}

/// An example app's directory, by name.
pub fn examples(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .display()
        .to_string()
}

/// A task that exits 0.
pub const OK: &str = r#"(module (func (export "run") (result i32) i32.const 0))"#;
/// A task that spins for ever.
pub const LOOP: &str = r#"(module (func (export "run") (loop br 0)))"#;
/// A task that traps.
pub const TRAP: &str = r#"(module (func (export "run") unreachable))"#;

/// Starts `estactl args`, waits `after`, sends `signal` to the child and
/// waits (at most 20 s) for it to end. Only the child we started is
/// signalled, by its pid.
pub fn signalled(tmp: &Path, args: &[&str], signal: i32, after: Duration) -> Output {
    let child = command(tmp)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run estactl");
    std::thread::sleep(after);
    let id = child.id() as i32;
    // SAFETY: kill(2) on the pid of a child we own and have not reaped.
    unsafe {
        libc::kill(id, signal);
    }
    let started = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(20) {
            // SAFETY: as above; the child has not been reaped yet.
            unsafe {
                libc::kill(id, libc::SIGKILL);
            }
            panic!("estactl did not stop within 20 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().unwrap()
}
