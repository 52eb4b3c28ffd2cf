//! `estactl` boot, cache and inspection at their edges (from the
//! fourteenth probe round).

use std::path::Path;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// An app of two modules, `b` depending on `a`, each a WAT file.
fn app(dir: &Path) {
    write(
        &dir.join("a/manifest.json"),
        r#"{"name":"a","version":"1.2.3","entry_point":"run","runtime":"wasm32","module":"a.wat"}"#,
    );
    write(
        &dir.join("a/a.wat"),
        r#"(module (func (export "run") (result i32) i32.const 0))"#,
    );
    write(
        &dir.join("b/manifest.json"),
        r#"{"name":"b","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"b.wat",
            "dependencies":{"a":"^1.2"}}"#,
    );
    write(
        &dir.join("b/b.wat"),
        r#"(module (func (export "run") (result i32) i32.const 1 i32.const 1 i32.sub))"#,
    );
}

/// Runs estactl through `sh` with `umask` set first and the cache in
/// `cache`.
fn estactl_with_umask(umask: &str, cache: &Path, args: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" {args}",))
        .arg(env!("CARGO_BIN_EXE_estactl"))
        .env("ESTALOGIC_CACHE_DIR", cache)
        .output()
        .expect("run estactl")
}

/// preload_manager "Trust and limits": the cache is trusted like the
/// kernel binary and refuses a directory its group or others may write,
/// because whoever can write an entry can make the kernel run their
/// machine code. The entries it writes itself take their mode from the
/// umask: with a permissive one (002 is the default on Debian-family
/// systems for users with a private group; 000 in some service managers)
/// they are group- or world-writable, in a directory the cache accepted.
#[test]
fn cache_entries_are_not_writable_by_others_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    for umask in ["002", "000"] {
        let tmp = tempfile::tempdir().unwrap();
        app(&tmp.path().join("app"));
        // A directory the cache accepts (its own, 0755: nobody else may write).
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = estactl_with_umask(
            umask,
            &cache,
            &format!("run {}", tmp.path().join("app").display()),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("without the compiled-module cache"),
            "{stderr}"
        );
        let mut modes = Vec::new();
        for entry in std::fs::read_dir(&cache).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            modes.push((entry.file_name(), mode));
        }
        assert_eq!(modes.len(), 2, "{modes:?}");
        for (name, mode) in &modes {
            assert_eq!(
                mode & 0o022,
                0,
                "umask {umask}: cache entry {name:?} has mode {mode:o}: others may rewrite the machine code the kernel runs"
            );
        }
    }
}

/// A cache directory of another user is refused with a warning and the run
/// goes on without the cache (README: "or the run goes on without it and
/// says why").
#[test]
fn a_foreign_cache_dir_is_refused_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    app(&tmp.path().join("app"));
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(4242), Some(4242)).unwrap();
    let out = estactl_with_umask(
        "022",
        &cache,
        &format!("run {}", tmp.path().join("app").display()),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("without the compiled-module cache"),
        "{stderr}"
    );
    assert!(stderr.contains("uid 4242"), "{stderr}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

/// output.rs `printable`: what reaches the terminal is text, "never an
/// escape sequence or a forged line". The cache warning names
/// `$ESTALOGIC_CACHE_DIR`, which may hold control characters: they are
/// escaped like an app's paths (an ESC and a newline came out raw).
#[test]
fn the_cache_warning_escapes_control_characters_of_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    app(&tmp.path().join("app"));
    // A file in the way, so the cache is refused and the warning names it.
    let cache = tmp.path().join("cache\u{1b}[31mRED\nFAKE: warning");
    write(&cache, "x");
    let out = Command::new(env!("CARGO_BIN_EXE_estactl"))
        .env("ESTALOGIC_CACHE_DIR", &cache)
        .args(["run", tmp.path().join("app").to_str().unwrap()])
        .output()
        .expect("run estactl");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("without the compiled-module cache"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(
        stderr.contains(r"cache\u{1b}[31mRED\nFAKE: warning"),
        "{stderr:?}"
    );
    assert!(
        !stderr.lines().any(|line| line.starts_with("FAKE")),
        "a forged line: {stderr:?}"
    );
}

/// `list-modules` prints what the registry holds: every module, its
/// version, state Ready and its dependency requirement.
#[test]
fn list_modules_matches_the_registry() {
    let tmp = tempfile::tempdir().unwrap();
    app(&tmp.path().join("app"));
    let cache = tmp.path().join("cache");
    let out = estactl_with_umask(
        "077",
        &cache,
        &format!("list-modules --json {}", tmp.path().join("app").display()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let modules = json.as_array().unwrap();
    let rows: Vec<(String, String, String)> = modules
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["version"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a".into(), "1.2.3".into(), "Ready".into()),
            ("b".into(), "0.1.0".into(), "Ready".into())
        ]
    );
    assert_eq!(modules[1]["dependencies"][0], "a ^1.2");
}

/// A dependency cycle: `run` exits 2 and prints the boot report naming
/// the failed subsystem and phase; `list-modules` lists and exits 2.
#[test]
fn a_cycle_prints_the_boot_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    app(&dir);
    write(
        &dir.join("a/manifest.json"),
        r#"{"name":"a","version":"1.2.3","entry_point":"run","runtime":"wasm32","module":"a.wat",
            "dependencies":{"b":"*"}}"#,
    );
    let cache = tmp.path().join("cache");
    let out = estactl_with_umask("077", &cache, &format!("run {}", dir.display()));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("init failed in PostInit: subsystem `dependencies`"),
        "{stderr}"
    );
    assert!(stderr.contains("dependency cycle: a -> b -> a"), "{stderr}");
    assert!(out.stdout.is_empty());
    let out = estactl_with_umask("077", &cache, &format!("list-modules {}", dir.display()));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("would not boot"));
}
