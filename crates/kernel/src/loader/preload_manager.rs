//! The preload manager: an on-disk cache of compiled modules, so a warm
//! start deserializes machine code instead of compiling the WebAssembly again.
//!
//! # Entries
//!
//! One file per compiled module, `<dir>/<key in hex>.cwasm`:
//!
//! ```text
//! offset  size  field
//!      0     8  magic `ESTAMOD\x01` (the entry format and its version)
//!      8    32  the entry's own key
//!     40    32  blake3 of the payload
//!     72     …  payload: `Module::serialize` output
//! ```
//!
//! The key is a blake3 hash, in derive-key mode with a context string of
//! its own, over:
//!
//! 1. this crate's version (a kernel upgrade starts with a cold cache);
//! 2. the WebAssembly bytes;
//! 3. `Engine::precompile_compatibility_hash()`: the target triple, the
//!    Cranelift and ISA flags, the tunables (fuel metering, epoch
//!    interruption, NaN canonicalisation, ...), the enabled WebAssembly
//!    features and Wasmtime's own version (`Config::module_version`, by
//!    default the Wasmtime crate version; Wasmtime exports no `VERSION`
//!    constant of its own).
//!
//! # Protocol of `load_or_compile`
//!
//! 1. Compute the key; read `<key>.cwasm` whole into memory.
//! 2. Absent or unreadable: go to 4.
//! 3. Check the magic, the embedded key and the payload checksum. If they
//!    pass, deserialize the payload: a **hit**. If a check fails, or
//!    Wasmtime refuses the payload, delete the entry (it is **rejected**)
//!    and go to 4.
//! 4. Compile. Invalid WebAssembly is the only error
//!    ([`CacheError::Compile`]).
//! 5. Serialize, write header and payload to a fresh temporary file in the
//!    same directory, rename it over `<key>.cwasm`: a **miss**. If any of
//!    that fails, the compiled module is still returned: **bypassed**.
//!
//! # Invariants
//!
//! 1. **The key names everything that shapes the code.** Two engines share
//!    an entry only if Wasmtime itself calls their artifacts compatible, so a
//!    deterministic-mode engine and a normal one never do, nor do two
//!    Wasmtime versions.
//! 2. **Only whole entries are visible.** Entries are written to a temporary
//!    file (`create_new`, named by key, process id and a counter, so no two
//!    writers share one) and renamed into place; a rename within one
//!    directory is atomic. A reader sees no entry, an old whole entry or a
//!    new whole entry. Processes racing to store one key write equivalent
//!    entries and the last rename wins.
//! 3. **Nothing unverified is deserialized.** The entry is read into memory
//!    once; the magic, the key and the checksum are checked on those bytes,
//!    and exactly those bytes go to `Module::deserialize`. Nothing is mapped
//!    from the file, so it cannot change between the check and the use.
//! 4. **A bad cache never fails a load.** A corrupt, truncated, misplaced or
//!    refused entry is deleted and rebuilt; an unreadable or unwritable
//!    directory costs a compile, nothing more. No `fsync` is needed: an
//!    entry torn by a crash fails its checksum and is rebuilt.
//! 5. **Counters are exact.** Each successful `load_or_compile` counts
//!    exactly one hit, miss or bypass; rejected entries are counted apart.
//!
//! # Trust and limits
//!
//! The directory is trusted like the kernel binary: whoever can write it
//! with a matching checksum can make the kernel run their machine code. On
//! Unix the directories it creates are private (mode 0700). There is no
//! eviction, and a temporary file left by a crash between write and rename
//! stays (it starts with `.` and ends in `.tmp`).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{Engine, Module};

/// Identifies the entry format; bump the last byte when the layout changes.
const MAGIC: [u8; 8] = *b"ESTAMOD\x01";
const KEY_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + KEY_LEN + KEY_LEN;
/// blake3 derive-key context: keys of this cache hash nothing else.
const KEY_CONTEXT: &str = "ESTA Logic kernel 2025-01 compiled module cache key";
const EXTENSION: &str = "cwasm";

/// Makes temporary file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How `load_or_compile` got its module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from a verified entry: nothing was compiled.
    Hit,
    /// Compiled, and stored for the next time.
    Miss,
    /// Compiled, but could not be stored (the reason, naming the path).
    Bypassed(String),
}

/// Counts of outcomes since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from disk.
    pub hits: u64,
    /// Loads compiled and stored.
    pub misses: u64,
    /// Loads compiled but not stored.
    pub bypasses: u64,
    /// Entries found bad (corrupt, truncated, misplaced or refused by
    /// Wasmtime) and deleted. Each is also counted as a miss or a bypass.
    pub rejected: u64,
}

/// Why the cache cannot be opened or a module cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory cannot be created.
    #[error("cannot create the module cache directory `{}`: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The bytes do not compile: the same error as without a cache.
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
}

/// The on-disk cache of compiled modules. Shareable between threads; several
/// processes may use one directory at once.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    rejected: AtomicU64,
}

/// What step 1 of the protocol found on disk.
enum Lookup {
    Absent,
    Unreadable(io::Error),
    Invalid(String),
    /// The whole entry, header included, verified.
    Verified(Vec<u8>),
}

impl ModuleCache {
    /// Opens the cache in `dir`, creating the directory (and its parents)
    /// if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let dir = dir.into();
        create_private_dir(&dir).map_err(|source| CacheError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypasses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The default directory: `$ESTALOGIC_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/estalogic/modules`, else
    /// `$HOME/.cache/estalogic/modules`, else `<temp>/estalogic-modules`.
    /// Empty variables, and a relative `XDG_CACHE_HOME`, are ignored.
    pub fn default_dir() -> PathBuf {
        default_dir_from(|name| std::env::var_os(name))
    }

    /// The directory this cache stores entries in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `bytes` compiled by `engine` lives (it may not
    /// exist).
    pub fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        self.path_for(&cache_key(engine, bytes))
    }

    /// The module for `bytes` under `engine`: from a verified entry if there
    /// is one, otherwise compiled and stored. Fails only if `bytes` do not
    /// compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, CacheOutcome), CacheError> {
        let key = cache_key(engine, bytes);
        let path = self.path_for(&key);
        match read_entry(&path, &key) {
            Lookup::Verified(entry) => {
                // SAFETY: `Module::deserialize` is sound for the unmodified
                // output of `Module::serialize`; arbitrary bytes could
                // carry arbitrary machine code. These bytes are exactly that
                // output:
                // - they come from a directory the kernel owns and trusts
                //   like its own binary (see "Trust and limits"), created
                //   private, written only by `store` below;
                // - `read_entry` checked, on this very buffer, the magic,
                //   that the entry was stored under this key (so from these
                //   wasm bytes and an engine whose compatibility hash
                //   equals this one's), and the blake3 checksum of the
                //   payload, ruling out truncation, torn writes and bit rot;
                //   the buffer is private memory, so the file changing
                //   afterwards cannot affect it;
                // - Wasmtime still checks its own header (version, target,
                //   flags, features) and returns an error, handled below,
                //   on any mismatch.
                match unsafe { Module::deserialize(engine, &entry[HEADER_LEN..]) } {
                    Ok(module) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(path = %path.display(), "module cache hit");
                        return Ok((module, CacheOutcome::Hit));
                    }
                    Err(e) => self.reject(&path, &format!("refused by Wasmtime: {e:#}")),
                }
            }
            Lookup::Invalid(reason) => self.reject(&path, &reason),
            Lookup::Absent => {}
            Lookup::Unreadable(e) => {
                tracing::debug!(path = %path.display(), error = %e, "module cache entry unreadable");
            }
        }
        let module =
            Module::new(engine, bytes).map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        let outcome = match self.store(&key, &path, &module) {
            Ok(()) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), "module cache miss: compiled and stored");
                CacheOutcome::Miss
            }
            Err(reason) => {
                self.bypasses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "module cache bypassed: compiled without storing");
                CacheOutcome::Bypassed(reason)
            }
        };
        Ok((module, outcome))
    }

    /// Counts of outcomes since this cache was opened.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bypasses: self.bypasses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    fn path_for(&self, key: &blake3::Hash) -> PathBuf {
        self.dir.join(format!("{}.{EXTENSION}", key.to_hex()))
    }

    /// Deletes a bad entry. A failure to delete is harmless: the store that
    /// follows renames over it, and until then it keeps failing its checks.
    fn reject(&self, path: &Path, reason: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), %reason, "module cache entry rejected; recompiling");
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a rejected module cache entry");
        }
    }

    /// Step 5: write a temporary file, rename it into place (invariant 2).
    fn store(&self, key: &blake3::Hash, path: &Path, module: &Module) -> Result<(), String> {
        let payload = module
            .serialize()
            .map_err(|e| format!("cannot serialize the compiled module: {e:#}"))?;
        let checksum = blake3::hash(&payload);
        let temp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            key.to_hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let parts: [&[u8]; 4] = [&MAGIC, key.as_bytes(), checksum.as_bytes(), &payload];
        let result = write_new(&temp, &parts)
            .map_err(|e| format!("cannot write `{}`: {e}", temp.display()))
            .and_then(|()| {
                fs::rename(&temp, path).map_err(|e| {
                    format!(
                        "cannot rename `{}` to `{}`: {e}",
                        temp.display(),
                        path.display()
                    )
                })
            });
        if result.is_err() {
            // Best effort: the file may not exist, and a leftover is only
            // clutter (see "Trust and limits").
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Step 1 and the checks of step 3.
fn read_entry(path: &Path, key: &blake3::Hash) -> Lookup {
    let entry = match fs::read(path) {
        Ok(entry) => entry,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Absent,
        Err(e) => return Lookup::Unreadable(e),
    };
    if entry.len() < HEADER_LEN {
        return Lookup::Invalid(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            entry.len()
        ));
    }
    let (magic, rest) = entry.split_at(MAGIC.len());
    let (stored_key, rest) = rest.split_at(KEY_LEN);
    let (checksum, payload) = rest.split_at(KEY_LEN);
    if magic != MAGIC {
        return Lookup::Invalid("not an entry of this cache format (bad magic)".into());
    }
    if stored_key != key.as_bytes() {
        return Lookup::Invalid("stored under another key".into());
    }
    if checksum != blake3::hash(payload).as_bytes() {
        return Lookup::Invalid("checksum mismatch: corrupted or truncated".into());
    }
    Lookup::Verified(entry)
}

/// The key of the module docs: crate version, wasm bytes (both length
/// prefixed, so no two inputs run together), then the engine's hash.
fn cache_key(engine: &Engine, wasm: &[u8]) -> blake3::Hash {
    use std::hash::Hash as _;
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    hasher.update(&(version.len() as u64).to_le_bytes());
    hasher.update(version);
    hasher.update(&(wasm.len() as u64).to_le_bytes());
    hasher.update(wasm);
    engine
        .precompile_compatibility_hash()
        .hash(&mut HashWriter(&mut hasher));
    hasher.finalize()
}

/// Feeds a `std::hash::Hash` value into blake3 (no 64-bit bottleneck).
struct HashWriter<'a>(&'a mut blake3::Hasher);

impl std::hash::Hasher for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let mut first = [0; 8];
        first.copy_from_slice(&self.0.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

fn write_new(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn default_dir_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("ESTALOGIC_CACHE_DIR") {
        return dir;
    }
    if let Some(cache) = set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return cache.join("estalogic").join("modules");
    }
    if let Some(home) = set("HOME") {
        return home.join(".cache").join("estalogic").join("modules");
    }
    std::env::temp_dir().join("estalogic-modules")
}

#[cfg(test)]
mod tests {
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
        assert_eq!(lookup(&[]), std::env::temp_dir().join("estalogic-modules"));
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
}
