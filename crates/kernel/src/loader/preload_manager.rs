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
//! 1. this crate's version (a kernel upgrade starts with a cold cache) and
//!    the check-site pass's (`check_sites::VERSION`: what is compiled is
//!    the module with its fuel check sites added);
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
//! with a matching checksum can make the kernel run their machine code. So
//! on Unix the directories it creates are private (mode 0700), and a cache
//! refuses to open a directory that is not owned by the user running it or
//! that its group or others may write (a directory someone else created
//! first, at a predictable path, would be theirs to fill); and it reads an
//! entry only if it is a regular file (not a link, a FIFO or a device, which
//! could block or never end) owned by that user, that its group and others
//! may not write (entries are created mode 0600, whatever the umask), of at
//! most [`MAX_ENTRY_BYTES`]. There is no eviction, and a temporary file left by a
//! crash between write and rename stays (it starts with `.` and ends in
//! `.tmp`).

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

/// The largest entry the cache reads (a compiled module is a few times its
/// wasm, and a module file is at most 256 MiB).
pub const MAX_ENTRY_BYTES: u64 = 1 << 30;

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
        // A file (or a device) in the way: say so, not "File exists".
        if let Ok(metadata) = std::fs::metadata(&dir)
            && !metadata.is_dir()
        {
            return Err(CacheError::CreateDir {
                path: dir,
                source: io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "it exists and is not a directory",
                ),
            });
        }
        create_private_dir(&dir)
            .and_then(|()| check_private(&dir))
            .map_err(|source| CacheError::CreateDir {
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
    /// `$HOME/.cache/estalogic/modules`, else `<temp>/estalogic-modules-<uid>`.
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
        let module = super::check_sites::compile(engine, bytes)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
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
        // A directory at an entry's path would refuse every store's rename
        // for ever; it is inside the private cache directory, so removing
        // it (links in it are removed, not followed) harms nothing else.
        let is_dir = fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_dir());
        let removed = if is_dir {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        if let Err(e) = removed
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
    // Looked at before opening: opening a FIFO blocks, and a device or a
    // link could lead anywhere (see "Trust and limits").
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Absent,
        Err(e) => return Lookup::Unreadable(e),
        Ok(meta) => {
            if !meta.file_type().is_file() {
                return Lookup::Invalid("not a regular file".into());
            }
            if meta.len() > MAX_ENTRY_BYTES {
                return Lookup::Invalid(format!("larger than {MAX_ENTRY_BYTES} bytes"));
            }
            if let Err(e) = owned_by_this_user(&meta) {
                return Lookup::Invalid(e.to_string());
            }
            // Others who may rewrite an entry may make the kernel run their
            // code: entries are written 0600, and one that is not private
            // is not trusted.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if mode & 0o022 != 0 {
                    return Lookup::Invalid(format!(
                        "its group or others may write it (mode {:o})",
                        mode & 0o7777
                    ));
                }
            }
        }
    }
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
    hasher.update(&super::check_sites::VERSION.to_le_bytes());
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

/// Writes a new file readable and writable by this user only, whatever
/// the umask.
fn write_new(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
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

/// Refuses a directory another user could write into (see "Trust and
/// limits").
fn check_private(dir: &Path) -> io::Result<()> {
    let meta = fs::metadata(dir)?;
    owned_by_this_user(&meta)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "its group or others may write it (mode {:o}); make it private \
                     (chmod 700) or use another directory",
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Fails unless `meta` belongs to the user this process runs as.
fn owned_by_this_user(meta: &fs::Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = this_user();
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("owned by uid {}, not by this user (uid {uid})", meta.uid()),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// The effective user id of this process.
#[cfg(unix)]
fn this_user() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
    // Per user: a shared name would be whoever's created it first (and the
    // cache refuses a directory that is not the user's own).
    #[cfg(unix)]
    let user = this_user().to_string();
    #[cfg(not(unix))]
    let user = String::from("user");
    std::env::temp_dir().join(format!("estalogic-modules-{user}"))
}

#[cfg(test)]
mod tests;
