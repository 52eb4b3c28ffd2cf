//! Tests for the preload manager: misses and hits, rejecting and repairing
//! corrupted, truncated or foreign entries, unwritable caches, racing writers
//! and the default directory.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use wasmtime::{Config, Instance, Store};

const RUN_SEVEN: &str = r#"(module (func (export "run") (result i32) i32.const 7))"#;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "estalogic-preload-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        // Private whatever the umask: a cache refuses a directory others
        // may write.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        }
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn engine(fuel: bool) -> Engine {
    let mut config = Config::new();
    config.consume_fuel(fuel);
    Engine::new(&config).unwrap()
}

/// The two engine configurations of `KernelBuilder::build`.
fn kernel_engine(deterministic: bool) -> Engine {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(!deterministic);
    config.cranelift_nan_canonicalization(deterministic);
    Engine::new(&config).unwrap()
}

fn run(engine: &Engine, module: &Module, fuel: bool) -> i32 {
    let mut store = Store::new(engine, ());
    if fuel {
        store.set_fuel(10_000).unwrap();
    }
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    let run = instance
        .get_typed_func::<(), i32>(&mut store, "run")
        .unwrap();
    run.call(&mut store, ()).unwrap()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn stats(hits: u64, misses: u64, bypasses: u64, rejected: u64) -> CacheStats {
    CacheStats {
        hits,
        misses,
        bypasses,
        rejected,
    }
}

/// Stores `RUN_SEVEN` in a fresh cache and returns the dir, the entry
/// path and the entry's bytes.
fn stored_entry(engine: &Engine) -> (TempDir, PathBuf, Vec<u8>) {
    let tmp = TempDir::new();
    let cache = ModuleCache::new(&tmp.0).unwrap();
    let (_, outcome) = cache.load_or_compile(engine, RUN_SEVEN.as_bytes()).unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let path = cache.entry_path(engine, RUN_SEVEN.as_bytes());
    let entry = fs::read(&path).unwrap();
    (tmp, path, entry)
}

/// A new cache on `dir` must reject the entry, recompile, and leave a
/// good entry that the next cache hits.
fn assert_rejected_then_repaired(dir: &Path, engine: &Engine, fuel: bool) {
    let cache = ModuleCache::new(dir).unwrap();
    let (module, outcome) = cache.load_or_compile(engine, RUN_SEVEN.as_bytes()).unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(cache.stats(), stats(0, 1, 0, 1));
    assert_eq!(run(engine, &module, fuel), 7);
    let cache = ModuleCache::new(dir).unwrap();
    let (module, outcome) = cache.load_or_compile(engine, RUN_SEVEN.as_bytes()).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(run(engine, &module, fuel), 7);
}

#[test]
fn first_load_is_a_miss_and_stores_one_entry() {
    let tmp = TempDir::new();
    let engine = engine(true);
    let cache = ModuleCache::new(&tmp.0).unwrap();
    let (module, outcome) = cache
        .load_or_compile(&engine, RUN_SEVEN.as_bytes())
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    assert_eq!(cache.stats(), stats(0, 1, 0, 0));
    assert_eq!(run(&engine, &module, true), 7);
    let path = cache.entry_path(&engine, RUN_SEVEN.as_bytes());
    assert!(path.is_file());
    // Exactly the entry, no temporary file left behind.
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(file_names(&tmp.0), vec![name.clone()]);
    assert_eq!(name.len(), 64 + ".cwasm".len());
    let entry = fs::read(&path).unwrap();
    assert_eq!(entry[..8], MAGIC);
}

#[test]
fn second_boot_hits_and_the_module_runs() {
    let tmp = TempDir::new();
    let first = ModuleCache::new(&tmp.0).unwrap();
    let (_, outcome) = first
        .load_or_compile(&engine(true), RUN_SEVEN.as_bytes())
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    // A new engine with the same configuration, a new cache: a reboot.
    let engine = engine(true);
    let second = ModuleCache::new(&tmp.0).unwrap();
    let (module, outcome) = second
        .load_or_compile(&engine, RUN_SEVEN.as_bytes())
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(second.stats(), stats(1, 0, 0, 0));
    assert_eq!(run(&engine, &module, true), 7);
}

#[test]
fn another_engine_configuration_is_another_entry() {
    let tmp = TempDir::new();
    let cache = ModuleCache::new(&tmp.0).unwrap();
    let bytes = RUN_SEVEN.as_bytes();
    let (fuel, no_fuel) = (engine(true), engine(false));
    assert_ne!(
        cache.entry_path(&fuel, bytes),
        cache.entry_path(&no_fuel, bytes)
    );
    assert_eq!(
        cache.load_or_compile(&fuel, bytes).unwrap().1,
        CacheOutcome::Miss
    );
    assert_eq!(
        cache.load_or_compile(&no_fuel, bytes).unwrap().1,
        CacheOutcome::Miss
    );
    let (module, outcome) = cache.load_or_compile(&no_fuel, bytes).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(run(&no_fuel, &module, false), 7);
    let (module, outcome) = cache.load_or_compile(&fuel, bytes).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(run(&fuel, &module, true), 7);
    assert_eq!(file_names(&tmp.0).len(), 2);
    // The kernel's deterministic and normal engines never share.
    let (deterministic, normal) = (kernel_engine(true), kernel_engine(false));
    assert_ne!(
        cache.entry_path(&deterministic, bytes),
        cache.entry_path(&normal, bytes)
    );
    // Other wasm bytes, other entry.
    assert_ne!(
        cache.entry_path(&fuel, bytes),
        cache.entry_path(&fuel, b"(module)")
    );
}

#[test]
fn a_corrupted_entry_is_rejected_recompiled_and_repaired() {
    let engine = engine(true);
    let (tmp, path, good) = stored_entry(&engine);
    // Magic, key, checksum, first, middle and last payload bytes.
    let positions = [
        0,
        8,
        40,
        HEADER_LEN,
        (HEADER_LEN + good.len()) / 2,
        good.len() - 1,
    ];
    for position in positions {
        let mut bad = good.clone();
        bad[position] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        assert_rejected_then_repaired(&tmp.0, &engine, true);
        assert_eq!(fs::read(&path).unwrap(), good, "position {position}");
    }
}

#[test]
fn a_truncated_entry_is_rejected_recompiled_and_repaired() {
    let engine = engine(true);
    let (tmp, path, good) = stored_entry(&engine);
    for len in [0, 10, HEADER_LEN, good.len() / 2, good.len() - 1] {
        fs::write(&path, &good[..len]).unwrap();
        assert_rejected_then_repaired(&tmp.0, &engine, true);
        assert_eq!(fs::read(&path).unwrap(), good, "length {len}");
    }
}

#[test]
fn an_entry_under_another_key_is_rejected() {
    // A whole, well-checksummed entry of the fuel engine, copied to the
    // no-fuel engine's name, is never deserialized.
    let fuel = engine(true);
    let (tmp, fuel_path, _) = stored_entry(&fuel);
    let no_fuel = engine(false);
    let cache = ModuleCache::new(&tmp.0).unwrap();
    let no_fuel_path = cache.entry_path(&no_fuel, RUN_SEVEN.as_bytes());
    fs::copy(&fuel_path, &no_fuel_path).unwrap();
    assert_rejected_then_repaired(&tmp.0, &no_fuel, false);
}

#[test]
fn invalid_wasm_is_a_compile_error_and_stores_nothing() {
    let tmp = TempDir::new();
    let cache = ModuleCache::new(&tmp.0).unwrap();
    for bytes in [
        &b"not wasm"[..],
        b"\0asm\x01\0\0\0\xff",
        b"(module (func (result i32)))",
    ] {
        let error = cache.load_or_compile(&engine(true), bytes).unwrap_err();
        assert!(matches!(error, CacheError::Compile(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("not a valid WebAssembly module: "),
            "{error}"
        );
    }
    assert_eq!(cache.stats(), CacheStats::default());
    assert!(file_names(&tmp.0).is_empty());
}

#[test]
fn an_unwritable_cache_is_bypassed_and_the_module_still_runs() {
    // A file where the directory was: works even as root, where
    // permission bits would not stop a write.
    let tmp = TempDir::new();
    let dir = tmp.0.join("cache");
    let cache = ModuleCache::new(&dir).unwrap();
    fs::remove_dir(&dir).unwrap();
    fs::write(&dir, b"not a directory").unwrap();
    let engine = engine(true);
    let (module, outcome) = cache
        .load_or_compile(&engine, RUN_SEVEN.as_bytes())
        .unwrap();
    let CacheOutcome::Bypassed(reason) = outcome else {
        panic!("expected Bypassed, got {outcome:?}");
    };
    assert!(reason.contains(&*dir.to_string_lossy()), "{reason}");
    assert_eq!(cache.stats(), stats(0, 0, 1, 0));
    assert_eq!(run(&engine, &module, true), 7);
}

#[test]
fn a_directory_that_cannot_be_created_names_its_path() {
    let tmp = TempDir::new();
    let file = tmp.0.join("file");
    fs::write(&file, b"").unwrap();
    let error = ModuleCache::new(file.join("modules")).unwrap_err();
    assert!(matches!(error, CacheError::CreateDir { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*file.to_string_lossy()),
        "{error}"
    );
    // Nested directories are created.
    let nested = tmp.0.join("a").join("b");
    assert_eq!(ModuleCache::new(&nested).unwrap().dir(), nested);
    assert!(nested.is_dir());
}

#[test]
fn racing_caches_leave_one_whole_entry() {
    let tmp = TempDir::new();
    let engine = engine(true);
    let outcomes: Vec<CacheOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let cache = ModuleCache::new(&tmp.0).unwrap();
                    let (module, outcome) = cache
                        .load_or_compile(&engine, RUN_SEVEN.as_bytes())
                        .unwrap();
                    assert_eq!(run(&engine, &module, true), 7);
                    outcome
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, CacheOutcome::Hit | CacheOutcome::Miss)),
        "{outcomes:?}"
    );
    assert_eq!(file_names(&tmp.0).len(), 1, "no temporary file is left");
    let cache = ModuleCache::new(&tmp.0).unwrap();
    let (_, outcome) = cache
        .load_or_compile(&engine, RUN_SEVEN.as_bytes())
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
}

#[test]
fn default_dir_precedence() {
    let lookup = |vars: &[(&str, &str)]| {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        default_dir_from(move |name| vars.get(name).cloned())
    };
    let all = [
        ("ESTALOGIC_CACHE_DIR", "/estalogic"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(lookup(&all), PathBuf::from("/estalogic"));
    assert_eq!(
        lookup(&all[1..]),
        Path::new("/xdg").join("estalogic").join("modules")
    );
    assert_eq!(
        lookup(&all[2..]),
        Path::new("/home/u")
            .join(".cache")
            .join("estalogic")
            .join("modules")
    );
    // Empty and relative values are ignored.
    assert_eq!(
        lookup(&[
            ("ESTALOGIC_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "rel"),
            all[2]
        ]),
        lookup(&all[2..])
    );
    let fallback = lookup(&[]);
    assert_eq!(fallback.parent(), Some(std::env::temp_dir().as_path()));
    let name = fallback.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("estalogic-modules-"), "per user: {name}");
}

#[cfg(unix)]
#[test]
fn a_directory_others_may_write_or_a_strange_entry_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let shared = dir.0.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let Err(error) = ModuleCache::new(&shared) else {
        panic!("a directory others may write is refused");
    };
    let error = error.to_string();
    assert!(error.contains("others may write"), "{error}");

    // A FIFO (opening it would block) or a link at an entry's name is
    // rejected without being opened, and the module is compiled.
    let cache = ModuleCache::new(dir.0.join("private")).unwrap();
    let engine = engine(false);
    let wasm = RUN_SEVEN.as_bytes();
    let path = cache.entry_path(&engine, wasm);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, outcome) = cache.load_or_compile(&engine, wasm).unwrap();
    assert_ne!(outcome, CacheOutcome::Hit, "{outcome:?}");
    let _ = fs::remove_file(&path);
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let (_, outcome) = cache.load_or_compile(&engine, wasm).unwrap();
    assert_ne!(outcome, CacheOutcome::Hit, "{outcome:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Invariant 3: no single corrupted byte anywhere in an entry is
    /// ever deserialized; the load compiles and repairs instead.
    #[test]
    fn any_flipped_byte_is_caught(position in any::<prop::sample::Index>(), flip in 1u8..) {
        let engine = engine(false);
        let (tmp, path, good) = stored_entry(&engine);
        let mut bad = good.clone();
        bad[position.index(good.len())] ^= flip;
        fs::write(&path, &bad).unwrap();
        let cache = ModuleCache::new(&tmp.0).unwrap();
        let (module, outcome) = cache.load_or_compile(&engine, RUN_SEVEN.as_bytes()).unwrap();
        prop_assert_eq!(outcome, CacheOutcome::Miss);
        prop_assert_eq!(cache.stats().rejected, 1);
        prop_assert_eq!(run(&engine, &module, false), 7);
        prop_assert_eq!(fs::read(&path).unwrap(), good);
    }
}

#[test]
fn a_cache_path_that_is_a_file_says_so() {
    // It said "File exists (os error 17)".
    let tmp = TempDir::new();
    let file = tmp.0.join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let Err(error) = ModuleCache::new(&file) else {
        panic!("a file is not a cache directory");
    };
    let error = error.to_string();
    assert!(error.contains("not a directory"), "{error}");
    assert!(error.contains("not-a-dir"), "{error}");
}
