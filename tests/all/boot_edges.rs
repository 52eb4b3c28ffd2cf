//! The compiled-module cache, manifest validation, the module registry
//! and the boot report at their edges (from the fourteenth probe round).

use estalogic_kernel::core::lifecycle::InitPhase;
use estalogic_kernel::core::module_registry::ModuleState;
use estalogic_kernel::{CacheStats, ExitStatus, Kernel, Manifest};
use std::fs;
use std::path::{Path, PathBuf};

const SEVEN: &str = r#"(module (func (export "run") (result i32) i32.const 7))"#;
const THREE: &str = r#"(module (func (export "run") (result i32) i32.const 3))"#;
const HEADER_LEN: usize = 72;

fn manifest_for(name: &str) -> Manifest {
    Manifest::parse(&format!(
        r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32"}}"#
    ))
    .unwrap()
}

fn cached_kernel(cache: &Path) -> Kernel {
    Kernel::builder()
        .deterministic(true)
        .module_cache(cache)
        .build()
        .unwrap()
}

/// Boots a kernel on `cache` with module `name` = `wat`, runs it, and
/// returns the cache counters and the exit status.
fn boot_one(cache: &Path, name: &str, wat: &str) -> (CacheStats, ExitStatus) {
    let mut kernel = cached_kernel(cache);
    kernel
        .load_module(manifest_for(name), wat.as_bytes(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    let stats = kernel.cache_stats().unwrap();
    kernel.spawn_all().unwrap();
    let status = kernel.run().process(name).unwrap().status.clone();
    (stats, status)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = listing
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    found.sort();
    found
}

/// The one entry a boot of `wat` leaves in a fresh cache directory.
fn only_entry(cache: &Path, name: &str, wat: &str) -> PathBuf {
    let before = entries(cache);
    let (stats, status) = boot_one(cache, name, wat);
    assert_eq!((stats.misses, stats.hits), (1, 0), "{stats:?}");
    assert!(matches!(status, ExitStatus::Exited(_)), "{status:?}");
    let after: Vec<PathBuf> = entries(cache)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    after[0].clone()
}

fn rewrite_checksum(entry: &mut [u8]) {
    let checksum = blake3::hash(&entry[HEADER_LEN..]);
    entry[40..72].copy_from_slice(checksum.as_bytes());
}

fn private_dir(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bad entries of every kind are never deserialized: the module still
/// computes its own answer, the entry is counted rejected, and the next
/// boot is a hit again (the entry was rebuilt).
#[test]
fn bad_cache_entries_are_rejected_and_rebuilt() {
    type Damage = fn(&Path, &Path);
    let cases: &[(&str, Damage)] = &[
        ("zero length", |entry, _| fs::write(entry, b"").unwrap()),
        ("truncated header", |entry, _| {
            let bytes = fs::read(entry).unwrap();
            fs::write(entry, &bytes[..40]).unwrap();
        }),
        ("truncated payload", |entry, _| {
            let bytes = fs::read(entry).unwrap();
            fs::write(entry, &bytes[..bytes.len() - 100]).unwrap();
        }),
        ("bit flip in payload", |entry, _| {
            let mut bytes = fs::read(entry).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x10;
            fs::write(entry, &bytes).unwrap();
        }),
        ("bit flip in magic", |entry, _| {
            let mut bytes = fs::read(entry).unwrap();
            bytes[7] ^= 1;
            fs::write(entry, &bytes).unwrap();
        }),
        ("other module's entry", |entry, other| {
            fs::copy(other, entry).unwrap();
        }),
        ("wasmtime header edited, checksum fixed", |entry, _| {
            // Simulate another Wasmtime version: change the version
            // string Wasmtime embeds, and keep the cache's checksum valid.
            let mut bytes = fs::read(entry).unwrap();
            // `.wasmtime.engine` starts: format byte, then the version
            // length-prefixed ("\x0248", Wasmtime 48), then the target
            // triple length-prefixed.
            let at = bytes[HEADER_LEN..]
                .windows(5)
                .position(|w| w[..3] == *b"\x0248" && w[4].is_ascii_alphabetic())
                .expect("the Wasmtime version is in the artifact")
                + HEADER_LEN;
            bytes[at + 2] = b'9';
            rewrite_checksum(&mut bytes);
            fs::write(entry, &bytes).unwrap();
        }),
        ("symlink to the other module's entry", |entry, other| {
            fs::remove_file(entry).unwrap();
            std::os::unix::fs::symlink(other, entry).unwrap();
        }),
        ("fifo", |entry, _| {
            fs::remove_file(entry).unwrap();
            let ok = std::process::Command::new("mkfifo")
                .arg(entry)
                .status()
                .unwrap();
            assert!(ok.success());
        }),
        ("owned by another user", |entry, _| {
            std::os::unix::fs::chown(entry, Some(4242), Some(4242)).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let other = only_entry(&cache, "three", THREE);
        let entry = only_entry(&cache, "seven", SEVEN);
        damage(&entry, &other);
        let (stats, status) = boot_one(&cache, "seven", SEVEN);
        assert_eq!(status, ExitStatus::Exited(7), "{what}: wrong code ran");
        assert_eq!(stats.hits, 0, "{what}: a damaged entry was used: {stats:?}");
        assert_eq!(stats.rejected, 1, "{what}: {stats:?}");
        let (stats, status) = boot_one(&cache, "seven", SEVEN);
        assert_eq!(status, ExitStatus::Exited(7), "{what}");
        assert_eq!(stats.hits, 1, "{what}: not rebuilt: {stats:?}");
    }
}

/// preload_manager invariant 4: "A corrupt, truncated, misplaced or
/// refused entry is deleted and rebuilt". A directory at an entry's name is
/// refused but never deleted, so the module is never cached again.
#[test]
fn a_directory_at_an_entry_path_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let entry = only_entry(&cache, "seven", SEVEN);
    fs::remove_file(&entry).unwrap();
    fs::create_dir(&entry).unwrap();
    let (stats, status) = boot_one(&cache, "seven", SEVEN);
    assert_eq!(status, ExitStatus::Exited(7));
    assert_eq!(stats.rejected, 1, "{stats:?}");
    let (stats, _) = boot_one(&cache, "seven", SEVEN);
    assert_eq!(
        stats.hits, 1,
        "the bad entry (a directory) was neither deleted nor rebuilt: {stats:?}"
    );
}

/// The cache's trust rule (preload_manager "Trust and limits"): "whoever
/// can write it with a matching checksum can make the kernel run their
/// machine code", so the cache refuses directories others may write. An
/// entry file others may write is the same hole: anyone who can reach it
/// rewrites it (checksum recomputed) and the kernel runs their code.
#[test]
fn an_entry_others_may_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A directory the cache accepts: its own, not writable by others.
    let cache = tmp.path().join("cache");
    private_dir(&cache, 0o755);
    let entry = only_entry(&cache, "seven", SEVEN);
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
    let (stats, status) = boot_one(&cache, "seven", SEVEN);
    assert_eq!(status, ExitStatus::Exited(7));
    assert_eq!(
        stats.hits, 0,
        "an entry any user may rewrite (mode 666, in a 755 directory) was deserialized: {stats:?}"
    );
}

/// Two kernels in threads booting and running on one cache directory
/// get their own modules' answers.
#[test]
fn concurrent_boots_share_one_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    let (name, wat, code) = if (i + round) % 2 == 0 {
                        ("seven", SEVEN, 7)
                    } else {
                        ("three", THREE, 3)
                    };
                    let (_, status) = boot_one(&cache, name, wat);
                    assert_eq!(status, ExitStatus::Exited(code), "thread {i} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(entries(&cache).len(), 2);
    let leftovers: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The cache directory removed in the middle of a boot costs a compile,
/// not the boot; the next boot recreates it.
#[test]
fn cache_dir_removed_during_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut kernel = cached_kernel(&cache);
    kernel
        .load_module(manifest_for("three"), THREE.as_bytes(), Path::new("three"))
        .unwrap();
    fs::remove_dir_all(&cache).unwrap();
    kernel
        .load_module(manifest_for("seven"), SEVEN.as_bytes(), Path::new("seven"))
        .unwrap();
    let stats = kernel.cache_stats().unwrap();
    assert_eq!((stats.misses, stats.bypasses), (1, 1), "{stats:?}");
    kernel.spawn_all().unwrap();
    let report = kernel.run();
    assert_eq!(
        report.process("seven").unwrap().status,
        ExitStatus::Exited(7)
    );
    let (stats, _) = boot_one(&cache, "seven", SEVEN);
    assert_eq!(stats.misses, 1, "{stats:?}");
}

/// A cache directory owned by someone else, or that others may write, is
/// refused at build with a reason naming it.
#[test]
fn foreign_or_shared_cache_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    private_dir(&foreign, 0o700);
    std::os::unix::fs::chown(&foreign, Some(4242), Some(4242)).unwrap();
    let Err(error) = Kernel::builder().module_cache(&foreign).build() else {
        panic!("a directory of uid 4242 was accepted");
    };
    let text = error.to_string();
    assert!(text.contains("uid 4242"), "{text}");
    let group = tmp.path().join("group");
    private_dir(&group, 0o770);
    let Err(error) = Kernel::builder().module_cache(&group).build() else {
        panic!("a group-writable directory was accepted");
    };
    assert!(error.to_string().contains("others may write"), "{error}");
}

// ---------------------------------------------------------------- registry

/// A module that failed validation stays registered `Failed`; spawn_all
/// must then refuse the boot without spawning any process (the boot is
/// already `Failed`).
#[test]
fn spawn_all_after_a_failed_load_spawns_nothing() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel
        .load_module(manifest_for("a"), SEVEN.as_bytes(), Path::new("a.wasm"))
        .unwrap();
    let failed = kernel.load_module(manifest_for("b"), b"not wasm", Path::new("b.wasm"));
    assert!(failed.is_err());
    let error = kernel.spawn_all().expect_err("a boot with a failed module");
    let text = error.to_string();
    assert!(
        matches!(kernel.boot_report().phase, InitPhase::Failed(_)),
        "{}",
        kernel.boot_report()
    );
    let report = kernel.run();
    let ran: Vec<&str> = report.processes.iter().map(|p| &*p.module).collect();
    assert!(
        ran.is_empty(),
        "spawn_all failed ({text}) but these processes were spawned and ran: {ran:?}"
    );
}

/// The registry's state machine has `Failed → Loading` ("retry"); a
/// module whose binary failed validation can be loaded again once fixed.
#[test]
fn a_failed_module_can_be_retried() {
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    assert!(
        kernel
            .load_module(manifest_for("b"), b"not wasm", Path::new("b.wasm"))
            .is_err()
    );
    let key = kernel.registry().latest("b").unwrap().key();
    assert!(matches!(
        kernel.registry().get(&key).unwrap().state(),
        ModuleState::Failed(_)
    ));
    let retry = kernel.load_module(manifest_for("b"), SEVEN.as_bytes(), Path::new("b.wasm"));
    assert!(
        retry.is_ok(),
        "retrying a Failed module: {}",
        retry.unwrap_err()
    );
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn good_module(dir: &Path, name: &str, extra: &str) {
    write(
        &dir.join(name).join("manifest.json"),
        &format!(
            r#"{{"name":"{name}","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"m.wat"{extra}}}"#
        ),
    );
    write(&dir.join(name).join("m.wat"), SEVEN);
}

/// An app whose second manifest is bad does not load; what it loaded
/// before the bad manifest must not boot as if the app were fine.
#[test]
fn a_half_loaded_app_does_not_boot_complete() {
    let tmp = tempfile::tempdir().unwrap();
    good_module(tmp.path(), "a", "");
    write(
        &tmp.path().join("b/manifest.json"),
        r#"{"name":"b","version":"0.1.0","entry_point":"run","runtime":"wasm32","priority":"urgent"}"#,
    );
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    let error = kernel.load_app_dir(tmp.path()).unwrap_err().to_string();
    assert!(error.contains("priority"), "{error}");
    let loaded: Vec<String> = kernel
        .registry()
        .iter()
        .map(|e| e.key().to_string())
        .collect();
    // Every manifest is checked before any module loads: nothing stayed
    // half-loaded, so nothing runs.
    assert!(loaded.is_empty(), "{error}: {loaded:?} stayed loaded");
    let spawned = kernel.spawn_all().unwrap();
    assert!(spawned.is_empty());
    assert_eq!(kernel.run().processes.len(), 0);
}

/// Cycles of two and three modules are refused naming the loop; nothing
/// spawned, the boot report names `dependencies`.
#[test]
fn dependency_cycles_of_two_and_three() {
    for (modules, expected) in [
        (
            &[("a", "b"), ("b", "a")][..],
            "dependency cycle: a -> b -> a",
        ),
        (
            &[("a", "b"), ("b", "c"), ("c", "a")][..],
            "dependency cycle: a -> b -> c -> a",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        good_module(tmp.path(), "z", "");
        for (name, dep) in modules {
            good_module(
                tmp.path(),
                name,
                &format!(r#","dependencies":{{"{dep}":"^0.1"}}"#),
            );
        }
        let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
        kernel.load_app_dir(tmp.path()).unwrap();
        let error = kernel.spawn_all().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        let report = kernel.boot_report();
        assert!(matches!(report.phase, InitPhase::Failed(_)), "{report}");
        assert!(
            report.to_string().contains("subsystem `dependencies`"),
            "{report}"
        );
        assert!(kernel.run().processes.is_empty());
    }
}

/// Missing dependencies and unmatched versions are refused at spawn_all,
/// nothing spawned.
#[test]
fn missing_and_mismatched_dependencies() {
    for (requirement, expected) in [
        (r#""ghost":"^1""#, "no module named \"ghost\" is registered"),
        (r#""z":"^2""#, "only 0.1.0 is registered"),
        (r#""z":">=0.1.1""#, "only 0.1.0 is registered"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        good_module(tmp.path(), "z", "");
        good_module(
            tmp.path(),
            "a",
            &format!(r#","dependencies":{{{requirement}}}"#),
        );
        let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
        kernel.load_app_dir(tmp.path()).unwrap();
        let error = kernel.spawn_all().unwrap_err().to_string();
        assert!(error.contains(expected), "{requirement}: {error}");
        assert!(error.contains("dependencies."), "{requirement}: {error}");
        assert!(kernel.run().processes.is_empty());
    }
}

// --------------------------------------------------------------- manifests

/// Every bad manifest is an error naming the file and the field; nothing is
/// registered; a good app loads in the same kernel afterwards.
#[test]
fn bad_manifests_name_file_and_field() {
    let base = r#""version":"0.1.0","entry_point":"run","runtime":"wasm32""#;
    let deep = format!(
        r#"{{"name":"x",{base},"description":{}"d"{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let huge = format!(
        r#"{{"name":"x",{base},"description":"{}"}}"#,
        "a".repeat(1 << 20)
    );
    let long = "a".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        (format!(r#"{{"name":"a/b",{base}}}"#), "name"),
        (format!(r#"{{"name":"..",{base}}}"#), "name"),
        (format!(r#"{{"name":"café",{base}}}"#), "name"),
        (format!(r#"{{"name":"{long}",{base}}}"#), "name"),
        (format!(r#"{{"name":"",{base}}}"#), "name"),
        (format!(r#"{{"name":7,{base}}}"#), "name"),
        (
            r#"{"name":"x","version":"1.0","entry_point":"run","runtime":"wasm32"}"#.into(),
            "version",
        ),
        (
            r#"{"name":"x","version":" 1.0.0","entry_point":"run","runtime":"wasm32"}"#.into(),
            "version",
        ),
        (format!(r#"{{"name":"x",{base},"bogus":1}}"#), "bogus"),
        (
            format!(r#"{{"name":"x",{base},"dependencies":{{"y":"not a req"}}}}"#),
            "dependencies.y",
        ),
        (
            format!(r#"{{"name":"x",{base},"dependencies":{{"y":""}}}}"#),
            "dependencies.y",
        ),
        (
            format!(r#"{{"name":"x",{base},"dependencies":{{"y":1}}}}"#),
            "dependencies",
        ),
        (
            format!(r#"{{"name":"x",{base},"dependencies":{{"Y/z":"^1"}}}}"#),
            "dependencies.Y/z",
        ),
        (
            format!(r#"{{"name":"x",{base},"dependencies":{{"x":"^0.1"}}}}"#),
            "dependencies.x",
        ),
        (
            format!(r#"{{"name":"x",{base},"dependencies":["y"]}}"#),
            "dependencies",
        ),
        (
            format!(r#"{{"name":"x",{base},"capabilities_required":["db:drop"]}}"#),
            "capabilities_required[0]",
        ),
        (
            format!(
                r#"{{"name":"x",{base},"capabilities_required":[{{"name":"db:read","x":1}}]}}"#
            ),
            "capabilities_required[0].x",
        ),
        (
            format!(r#"{{"name":"x",{base},"priority":"urgent"}}"#),
            "priority",
        ),
        (format!(r#"{{"name":"x",{base},"priority":3}}"#), "priority"),
        (
            format!(r#"{{"name":"x",{base},"priority":"Critical"}}"#),
            "priority",
        ),
        (
            format!(r#"{{"name":"x",{base},"preload":"yes"}}"#),
            "preload",
        ),
        (
            format!(r#"{{"name":"x",{base},"memory_class":"kernel"}}"#),
            "memory_class",
        ),
        (
            format!(r#"{{"name":"x",{base},"mailbox":{{"capacity":0}}}}"#),
            "mailbox.capacity",
        ),
        (
            format!(r#"{{"name":"x",{base},"mailbox":{{"capacity":65537}}}}"#),
            "mailbox.capacity",
        ),
        (
            format!(r#"{{"name":"x",{base},"mailbox":{{"capacity":-1}}}}"#),
            "mailbox.capacity",
        ),
        (
            format!(r#"{{"name":"x",{base},"mailbox":{{"capacity":1.5}}}}"#),
            "mailbox.capacity",
        ),
        (
            format!(r#"{{"name":"x",{base},"mailbox":{{"capacity":1e30}}}}"#),
            "mailbox.capacity",
        ),
        (
            format!(r#"{{"name":"x",{base},"restart":"always"}}"#),
            "restart",
        ),
        (
            format!(r#"{{"name":"x",{base},"supervisor":"X"}}"#),
            "supervisor",
        ),
        (format!(r#"{{"name":"x",{base},"module":""}}"#), "module"),
        (
            format!(r#"{{"name":"x",{base},"module":"../x.wasm"}}"#),
            "module",
        ),
        (
            format!(r#"{{"name":"x",{base},"module":"/etc/passwd"}}"#),
            "module",
        ),
        (
            format!(r#"{{"name":"x",{base},"module":"bundled:../x"}}"#),
            "module",
        ),
        // serde's own message names the field: "duplicate field `name`".
        (
            format!(r#"{{"name":"x",{base},"name":"y"}}"#),
            "duplicate field `name`",
        ),
        // The whole document at fault: the problem follows the path.
        (deep, "not valid JSON: recursion limit exceeded"),
        (huge, "cannot read the file: larger than"),
        ("[]".into(), "must be a JSON object, not an array"),
        ("".into(), "not valid JSON: EOF while parsing"),
        ("\u{feff}{}".into(), "not valid JSON: expected value"),
    ];
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    for (json, field) in &cases {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("svc/manifest.json");
        write(&path, json);
        let shown: String = json.chars().take(80).collect();
        let error = kernel
            .load_app_dir(tmp.path())
            .map(|_| ())
            .expect_err(&shown);
        let text = error.to_string();
        let excerpt: String = text.chars().take(300).collect();
        assert!(
            text.starts_with(&format!("{}: ", path.display())),
            "{shown}: {excerpt}"
        );
        let after_path = &text[path.display().to_string().len() + 2..];
        assert!(
            after_path.starts_with(*field) || after_path.starts_with(&field.replacen(' ', ": ", 1)),
            "{shown}: expected field {field}: {excerpt}"
        );
        assert!(text.len() < 4096, "{shown}: a {}-byte error", text.len());
        assert!(kernel.registry().is_empty(), "{shown}: registered");
        assert!(kernel.modules().is_empty(), "{shown}: loaded");
    }
    let tmp = tempfile::tempdir().unwrap();
    good_module(tmp.path(), "good", "");
    kernel.load_app_dir(tmp.path()).unwrap();
    kernel.spawn_all().unwrap();
    assert_eq!(
        kernel.run().process("good").unwrap().status,
        ExitStatus::Exited(7)
    );
    assert_eq!(kernel.boot_report().phase, InitPhase::Complete);
}

/// Two manifests of one name in an app: the second is refused naming
/// both; nothing of the second is registered.
#[test]
fn duplicate_names_across_an_app() {
    let tmp = tempfile::tempdir().unwrap();
    good_module(tmp.path(), "a", "");
    write(
        &tmp.path().join("b/manifest.json"),
        r#"{"name":"a","version":"0.2.0","entry_point":"run","runtime":"wasm32","module":"m.wat"}"#,
    );
    write(&tmp.path().join("b/m.wat"), THREE);
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    let error = kernel.load_app_dir(tmp.path()).unwrap_err().to_string();
    assert!(error.contains("b/manifest.json"), "{error}");
    assert!(error.contains("already in this app"), "{error}");
    assert!(error.contains("a/manifest.json"), "{error}");
    assert_eq!(kernel.registry().len(), 0);
}

/// Name at the limit (64 characters) loads and runs.
#[test]
fn a_64_character_name_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("a{}", "-".repeat(62) + "z");
    assert_eq!(name.len(), 64);
    good_module(tmp.path(), &name, "");
    let mut kernel = Kernel::builder().deterministic(true).build().unwrap();
    kernel.load_app_dir(tmp.path()).unwrap();
    kernel.spawn_all().unwrap();
    assert_eq!(
        kernel.run().process(&name).unwrap().status,
        ExitStatus::Exited(7)
    );
}
