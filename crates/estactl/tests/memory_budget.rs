//! `--memory-budget` end to end: the processes of a run grow together up
//! to it and no further; a size that does not parse is a clear error.

mod common;
use common::*;

/// Grows a page at a time until refused; exits with its size in pages.
const GROWER: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $more (br_if $more (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0))))
    (memory.size)))"#;

#[test]
fn a_run_s_processes_grow_no_further_than_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    module(&app, "grower", "", GROWER);
    let app = app.to_str().unwrap();
    let out = estactl(
        tmp.path(),
        &["run", app, "--json", "--memory-budget", "1MiB"],
    );
    no_panic(&out);
    // Exit code 16 (pages) is not 0: the run says 1, the summary the code.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let pages = |out: &std::process::Output| {
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            summary["processes"][0]["status"]["kind"], "exited",
            "{summary}"
        );
        summary["processes"][0]["status"]["code"].as_i64().unwrap()
    };
    assert_eq!(pages(&out), 16);
    // Without a budget, the class (user: 16 MiB, 256 pages) is the limit.
    let out = estactl(tmp.path(), &["run", app, "--json"]);
    assert_eq!(pages(&out), 256);
}

#[test]
fn a_size_that_does_not_parse_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let app = examples("ping-pong");
    for (size, expected) in [
        ("12XB", "is not a size unit"),
        ("lots", "is not a size"),
        ("99999999T", "too large"),
    ] {
        let out = estactl(tmp.path(), &["run", &app, "--memory-budget", size]);
        no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{size}");
        assert!(
            text(&out.stderr).contains(expected),
            "{size}: {}",
            text(&out.stderr)
        );
    }
}
