//! The WASM loader: compiles a module, checks it may run here, and prepares
//! it for fast instantiation.
//!
//! # Checks, in order
//!
//! 1. The bytes are valid WebAssembly (Wasmtime's validator, at compile).
//! 2. Every import comes from the kernel ABI namespace (`estalogic`), names a
//!    known syscall and has exactly its signature. No WASI, no memory or
//!    table imports: no ambient authority.
//! 3. The entry point named by the manifest is an exported function of type
//!    `() -> ()` or `() -> i32` (a task process), or `(i32) -> i32` (a
//!    handler process, which must also export its inbox,
//!    [`INBOX_EXPORT`]: `() -> i64`, and its memory). The type picks the
//!    linker: a handler's syscalls never wait.
//! 4. The module's initial memory lies inside its memory class's range.
//!    Growth beyond the class maximum is refused at run time by the
//!    process's resource limiter.
//!
//! Before any of these, on the module's bytes: the compile budget
//! (`loader::compile_budget`) and the process limits its declarations
//! must fit (one memory inside its class, one table of at most 10,000
//! elements, at most 1 MiB of instance state: see
//! [`ModuleError::InstanceTooLarge`]).
//!
//! # Lanes
//!
//! The kernel runs one Wasmtime engine per worker, each with its own
//! instance pool (a [`Lane`]): a process is instantiated on the engine of
//! the worker that first runs it, so two workers spawning at once share no
//! pool lock, type registry or reference count of Wasmtime's. A module is
//! compiled once, on lane 0; its copy on another lane ([`LaneModule`]) is
//! made from lane 0's compiled code the first time a process of it starts
//! there.

use crate::loader::manifest::{Manifest, MemoryClass};
use crate::loader::preload_manager::{CacheError, ModuleCache};
use crate::loader::{check_sites, compile_budget};
use crate::syscalls::{Linkers, ProcessContext};
use estalogic_abi::syscalls::WasmType;
use estalogic_abi::{IMPORT_MODULE, INBOX_EXPORT, Syscall};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use wasmtime::{Engine, ExternType, InstancePre, Module, ModuleExport, ValType};

/// Why a module cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Not valid WebAssembly, or Wasmtime could not compile it.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// Past a limit of the compile budget (`loader::compile_budget`):
    /// refused before compiling.
    #[error("refused before compiling: {0}")]
    OverBudget(String),
    /// An import outside the kernel ABI.
    #[error(
        "imports `{module}.{name}`, but only the kernel ABI (`{IMPORT_MODULE}`: {known}) may be imported",
        known = known_syscalls()
    )]
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// A kernel syscall imported with the wrong type.
    #[error("imports `{IMPORT_MODULE}.{name}` as {found}, but its signature is {expected}")]
    ImportSignature {
        /// The syscall name.
        name: String,
        /// The ABI's signature.
        expected: String,
        /// What the module declared.
        found: String,
    },
    /// The entry point is not exported.
    #[error("does not export the entry point function `{0}` named in its manifest")]
    MissingEntryPoint(String),
    /// The entry point has the wrong type.
    #[error(
        "entry point `{name}` has type {found}; it must be `() -> ()` or `() -> i32` (a task) or `(i32) -> i32` (a handler)"
    )]
    EntryPointSignature {
        /// Export name.
        name: String,
        /// What the module declared.
        found: String,
    },
    /// Initial memory outside the memory class's range.
    #[error(
        "declares {declared} bytes of initial memory; memory class `{class}` allows {min}..={max}",
        class = class.name(),
        min = class.min_bytes(),
        max = class.max_bytes()
    )]
    MemoryOutOfClass {
        /// Initial bytes declared.
        declared: u64,
        /// The manifest's memory class.
        class: MemoryClass,
    },
    /// A handler process's module lacks its inbox or memory export, or
    /// exports one with the wrong type.
    #[error("is a handler (its entry point takes an i32) but {0}")]
    HandlerExports(String),
    /// More than one memory, or a 64-bit or shared memory.
    #[error("has an unsupported memory: {0}")]
    UnsupportedMemory(String),
    /// More than one table, or a table that starts larger than a
    /// process's table slot.
    #[error("has an unsupported table: {0}")]
    UnsupportedTable(String),
    /// More instance state than a process may have: the engine keeps, for
    /// each process, 16 bytes per global, 64 per imported function, 32
    /// per other function exported or referenced (by a table segment, a
    /// global or a table's initial value) and 12 per data segment, plus a
    /// few hundred of its own, in at most 1 MiB (about 65,000 globals).
    /// Checked on the module's bytes before compiling; a module within
    /// the engine's few hundred bytes of the limit is refused by the
    /// engine after compiling, with this error too.
    #[error(
        "needs {needed} bytes of instance state, more than a process's {limit} (1 MiB): {what}",
        limit = crate::core::init::INSTANCE_STATE
    )]
    InstanceTooLarge {
        /// The bytes it needs.
        needed: u64,
        /// What they are for.
        what: String,
    },
}

fn known_syscalls() -> String {
    let names: Vec<&str> = Syscall::ALL.iter().map(|s| s.import_name()).collect();
    names.join(", ")
}

/// How the entry point reports its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// `() -> ()`: returning means exit code 0.
    Unit,
    /// `() -> i32`: the return value is the exit code.
    ExitCode,
    /// `(i32) -> i32`: a handler process. The kernel calls it once per
    /// message, with the payload length, after writing the message into
    /// the guest's inbox; 0 means "wait for the next message", anything
    /// else ends the process with that exit code.
    Handler,
}

/// One Wasmtime engine, with its own instance pool, and the kernel's
/// linkers on it: a worker's share of the engine (see "Lanes" above).
pub struct Lane {
    /// The engine; every lane's is configured alike but for its pool's
    /// share of the process limit.
    pub engine: Engine,
    /// The syscalls, linked on this engine.
    pub linkers: Linkers,
}

/// A module on one lane: what a spawn there instantiates and looks up.
#[derive(Clone)]
pub struct LaneModule {
    /// Imports resolved against the lane's linker.
    pub pre: InstancePre<ProcessContext>,
    /// The entry point's export, found once here instead of by name at
    /// every spawn.
    pub entry_export: ModuleExport,
    /// The `memory` export, if there is one.
    pub memory_export: Option<ModuleExport>,
    /// A handler's [`INBOX_EXPORT`] function.
    pub inbox_export: Option<ModuleExport>,
}

/// A module that passed every check, ready to instantiate.
#[derive(Clone)]
pub struct LoadedModule {
    /// Its manifest.
    pub manifest: Manifest,
    /// The compiled module, on lane 0.
    pub module: Module,
    /// The module on lane 0.
    pub home: LaneModule,
    /// How the entry point returns.
    pub entry: EntryKind,
    /// The binary, kept for a reload.
    pub bytes: Arc<[u8]>,
    /// Every lane of the kernel (lane 0 first).
    lanes: Arc<[Lane]>,
    /// The module's copies on lanes 1.., each made at the first spawn on
    /// its lane; `None` if the copy failed (the lane then uses lane 0's).
    copies: Arc<[OnceLock<Option<LaneModule>>]>,
}

impl LoadedModule {
    /// How many lanes the kernel has.
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// The module on lane `index` (lane 0's for an index past the last).
    /// The first call for a lane copies lane 0's compiled code to that
    /// lane's engine; if that fails, lane 0's module serves instead.
    pub fn on_lane(&self, index: usize) -> &LaneModule {
        let Some(slot) = index.checked_sub(1).and_then(|i| self.copies.get(i)) else {
            return &self.home;
        };
        slot.get_or_init(|| self.copy_to(&self.lanes[index]).ok())
            .as_ref()
            .unwrap_or(&self.home)
    }

    /// Lane 0's compiled code, deserialized on `lane`'s engine and resolved
    /// against its linker.
    fn copy_to(&self, lane: &Lane) -> wasmtime::Result<LaneModule> {
        let code = self.module.serialize()?;
        // SAFETY: `code` is what `Module::serialize` made a moment ago, in
        // this process, of a module this kernel compiled (or took from its
        // cache after checking the entry), and it never left memory; the
        // lane's engine is configured as lane 0's in everything compiled
        // code depends on (only the pools' sizes differ), which
        // `deserialize` checks again.
        let module = unsafe { Module::deserialize(&lane.engine, &code)? };
        lane_module(&lane.linkers, &self.manifest, self.entry, &module)
            .map_err(wasmtime::Error::msg)
    }
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.manifest.name)
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

fn describe(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        let mut out = String::new();
        for (i, ty) in types.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{ty}");
        }
        out
    };
    format!("({}) -> ({})", list(params), list(results))
}

fn abi_types(types: &[WasmType]) -> Vec<ValType> {
    types
        .iter()
        .map(|t| match t {
            WasmType::I32 => ValType::I32,
            WasmType::I64 => ValType::I64,
        })
        .collect()
}

fn same_types(a: &[ValType], b: &[ValType]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ValType::eq(x, y))
}

/// Compiles `bytes` (or takes the compiled artifact from `cache`) and runs
/// every check of the module docs.
pub fn load(
    lanes: &Arc<[Lane]>,
    manifest: Manifest,
    bytes: &[u8],
    cache: Option<&ModuleCache>,
) -> Result<LoadedModule, ModuleError> {
    // Refused before anything is compiled (or a cache entry trusted).
    // Text is converted to see its structure.
    let binary = if bytes.starts_with(b"\0asm") {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        wat::parse_bytes(bytes).map_err(|error| not_webassembly(bytes, &error))?
    };
    compile_budget::check(&binary).map_err(ModuleError::OverBudget)?;
    check_declared_limits(&binary, manifest.memory_class)?;
    let engine = &lanes[0].engine;
    let module = match cache {
        Some(cache) => match cache.load_or_compile(engine, bytes) {
            Ok((module, _)) => module,
            Err(CacheError::Compile(message)) => return Err(not_compiled(message, &binary)),
            Err(other) => return Err(ModuleError::Invalid(other.to_string())),
        },
        None => check_sites::compile(engine, &binary)
            .map_err(|e| not_compiled(format!("{e:#}"), &binary))?,
    };
    prepare(lanes, manifest, module, bytes.into())
}

/// The error for a module Wasmtime did not compile: `Invalid`, unless its
/// instance pool refused it for the size of its instance state (a module
/// within the engine's own few hundred bytes of the limit passes
/// [`check_declared_limits`], which counts only what the declarations
/// cost), which is a process limit, not invalid WebAssembly.
fn not_compiled(message: String, binary: &[u8]) -> ModuleError {
    if !message.contains("instance size does not fit in pooling allocator requirements") {
        return ModuleError::Invalid(message);
    }
    // "... instance allocation for this module requires N bytes which
    // exceeds the configured maximum ..."
    let needed = message
        .split_once(" requires ")
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(n, _)| n.parse::<u64>().ok());
    let declared = InstanceState::of(binary);
    match needed {
        Some(needed) if needed > declared.bytes() => ModuleError::InstanceTooLarge {
            needed,
            what: format!(
                "{}, and {} bytes of the engine's own",
                declared.describe(),
                needed - declared.bytes()
            ),
        },
        _ => ModuleError::InstanceTooLarge {
            needed: needed.unwrap_or(declared.bytes()),
            what: declared.describe(),
        },
    }
}

/// The error for bytes that are neither a binary module nor WAT text that
/// parses: what the text parser said and where, in a line of bounded
/// length (its message quotes the offending source line, which for a
/// large file that is not text at all was the whole file).
fn not_webassembly(bytes: &[u8], error: &wat::Error) -> ModuleError {
    if bytes.is_empty() {
        return ModuleError::Invalid("the module file is empty".to_string());
    }
    let message = error.to_string();
    let mut lines = message.lines().map(str::trim);
    let what = lines.next().unwrap_or("");
    let place = lines
        .next()
        .and_then(|line| line.strip_prefix("-->"))
        .map(|place| format!(" at {}", place.trim().trim_start_matches("<anon>:")))
        .unwrap_or_default();
    let what: String = what.chars().take(200).collect();
    ModuleError::Invalid(format!(
        "not WebAssembly: no binary module (no `\\0asm` header) and not WAT text ({what}{place})"
    ))
}

/// A fresh [`LoadedModule`] of the code `old` was compiled to: checked
/// again and resolved against the kernel's linker anew, but not recompiled
/// (the same bytes compile to the same code, and a compilation may take
/// long enough to be a guest's weapon; see `ProcessFactory::reload`).
pub fn reload(old: &LoadedModule) -> Result<LoadedModule, ModuleError> {
    prepare(
        &old.lanes,
        old.manifest.clone(),
        old.module.clone(),
        old.bytes.clone(),
    )
}

/// The checks and the import resolution of a compiled module.
fn prepare(
    lanes: &Arc<[Lane]>,
    manifest: Manifest,
    module: Module,
    bytes: Arc<[u8]>,
) -> Result<LoadedModule, ModuleError> {
    check_imports(&module)?;
    let entry = check_entry_point(&module, &manifest.entry_point)?;
    check_memory(&module, manifest.memory_class)?;
    if entry == EntryKind::Handler {
        if !manifest.requires("messaging:receive") {
            return Err(ModuleError::HandlerExports(
                "its manifest does not ask for `messaging:receive`, and a handler's work is the messages it receives".to_string(),
            ));
        }
        check_handler_exports(&module)?;
    }
    let home = lane_module(&lanes[0].linkers, &manifest, entry, &module)?;
    let copies = (1..lanes.len()).map(|_| OnceLock::new()).collect();
    Ok(LoadedModule {
        manifest,
        module,
        home,
        entry,
        bytes,
        lanes: lanes.clone(),
        copies,
    })
}

/// `module` (checked) resolved against `linkers`, with its exports found.
fn lane_module(
    linkers: &Linkers,
    manifest: &Manifest,
    entry: EntryKind,
    module: &Module,
) -> Result<LaneModule, ModuleError> {
    let linker = if entry == EntryKind::Handler {
        &linkers.handler
    } else {
        &linkers.task
    };
    let pre = linker
        .instantiate_pre(module)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    let entry_export = module
        .get_export_index(&manifest.entry_point)
        .ok_or_else(|| ModuleError::MissingEntryPoint(manifest.entry_point.clone()))?;
    let inbox_export = if entry == EntryKind::Handler {
        module.get_export_index(INBOX_EXPORT)
    } else {
        None
    };
    Ok(LaneModule {
        pre,
        entry_export,
        memory_export: module.get_export_index("memory"),
        inbox_export,
    })
}

fn check_imports(module: &Module) -> Result<(), ModuleError> {
    for import in module.imports() {
        let forbidden = || ModuleError::ForbiddenImport {
            module: import.module().to_string(),
            name: import.name().to_string(),
        };
        if import.module() != IMPORT_MODULE {
            return Err(forbidden());
        }
        let syscall = Syscall::from_import_name(import.name()).ok_or_else(forbidden)?;
        let ExternType::Func(func) = import.ty() else {
            return Err(forbidden());
        };
        let (params, results) = syscall.signature();
        let (want_params, want_results) = (abi_types(params), abi_types(results));
        let got_params: Vec<ValType> = func.params().collect();
        let got_results: Vec<ValType> = func.results().collect();
        if !same_types(&got_params, &want_params) || !same_types(&got_results, &want_results) {
            return Err(ModuleError::ImportSignature {
                name: import.name().to_string(),
                expected: describe(&want_params, &want_results),
                found: describe(&got_params, &got_results),
            });
        }
    }
    Ok(())
}

fn check_entry_point(module: &Module, name: &str) -> Result<EntryKind, ModuleError> {
    let export = module
        .get_export(name)
        .ok_or_else(|| ModuleError::MissingEntryPoint(name.to_string()))?;
    let ExternType::Func(func) = export else {
        return Err(ModuleError::EntryPointSignature {
            name: name.to_string(),
            found: "not a function".to_string(),
        });
    };
    let params: Vec<ValType> = func.params().collect();
    let results: Vec<ValType> = func.results().collect();
    match (params.as_slice(), results.as_slice()) {
        ([], []) => Ok(EntryKind::Unit),
        ([], [ValType::I32]) => Ok(EntryKind::ExitCode),
        ([ValType::I32], [ValType::I32]) => Ok(EntryKind::Handler),
        _ => Err(ModuleError::EntryPointSignature {
            name: name.to_string(),
            found: describe(&params, &results),
        }),
    }
}

/// A handler needs [`INBOX_EXPORT`] (`() -> i64`) and a `memory` export
/// for the kernel to write its messages into.
fn check_handler_exports(module: &Module) -> Result<(), ModuleError> {
    match module.get_export(INBOX_EXPORT) {
        Some(ExternType::Func(func)) => {
            let params: Vec<ValType> = func.params().collect();
            let results: Vec<ValType> = func.results().collect();
            if !matches!(
                (params.as_slice(), results.as_slice()),
                ([], [ValType::I64])
            ) {
                return Err(ModuleError::HandlerExports(format!(
                    "its `{INBOX_EXPORT}` export has type {}; it must be `() -> i64`",
                    describe(&params, &results)
                )));
            }
        }
        Some(_) => {
            return Err(ModuleError::HandlerExports(format!(
                "its `{INBOX_EXPORT}` export is not a function"
            )));
        }
        None => {
            return Err(ModuleError::HandlerExports(format!(
                "it does not export `{INBOX_EXPORT}: () -> i64`, where its messages go"
            )));
        }
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(ModuleError::HandlerExports(
            "it does not export its memory as `memory`".to_string(),
        )),
    }
}

fn check_memory(module: &Module, class: MemoryClass) -> Result<(), ModuleError> {
    // Every memory the module defines, exported or not (imports are refused
    // by `check_imports`; 64-bit and shared memories by the engine, which
    // has those proposals off).
    let required = module.resources_required();
    if required.num_memories > 1 {
        return Err(ModuleError::UnsupportedMemory(format!(
            "{} memories; at most one",
            required.num_memories
        )));
    }
    for export in module.exports() {
        if let ExternType::Memory(memory) = export.ty()
            && (memory.is_64() || memory.is_shared())
        {
            return Err(ModuleError::UnsupportedMemory(
                "64-bit and shared memories are not supported".to_string(),
            ));
        }
    }
    if required.num_memories == 1 {
        let declared = required.max_initial_memory_size.unwrap_or(0) * WASM_PAGE;
        if declared < class.min_bytes() || declared > class.max_bytes() {
            return Err(ModuleError::MemoryOutOfClass { declared, class });
        }
        // The kernel reaches a guest's memory through the export named
        // `memory` (docs/ABI.md): one not exported so would make every
        // syscall with a pointer fail with INVALID_POINTER at run time.
        let exported = module.exports().any(|export| {
            export.name() == "memory" && matches!(export.ty(), ExternType::Memory(_))
        });
        if !exported {
            return Err(ModuleError::UnsupportedMemory(
                "its memory is not exported as `memory`, the name the kernel reads and writes it by"
                    .to_string(),
            ));
        }
    }
    Ok(())
}

/// The process limits a module's declarations must fit, checked on its
/// bytes before compiling: the engine's pool refuses a module past them
/// while compiling it, with a message about its own configuration that
/// read as if the module were not WebAssembly. A section that does not
/// parse is left to the compiler, which says what is wrong with it.
fn check_declared_limits(binary: &[u8], class: MemoryClass) -> Result<(), ModuleError> {
    use wasmparser::{Parser, Payload};
    let (mut memories, mut tables) = (0u64, 0u64);
    for payload in Parser::new(0).parse_all(binary) {
        match payload {
            Ok(Payload::MemorySection(section)) => {
                for memory in section.into_iter().flatten() {
                    memories += 1;
                    if memory.memory64 || memory.shared {
                        return Err(ModuleError::UnsupportedMemory(
                            "64-bit and shared memories are not supported".to_string(),
                        ));
                    }
                    if memory.page_size_log2.is_none() {
                        let declared = memory.initial.saturating_mul(WASM_PAGE);
                        if declared < class.min_bytes() || declared > class.max_bytes() {
                            return Err(ModuleError::MemoryOutOfClass { declared, class });
                        }
                    }
                }
            }
            Ok(Payload::TableSection(section)) => {
                for table in section.into_iter().flatten() {
                    tables += 1;
                    let limit = crate::core::init::TABLE_ELEMENTS as u64;
                    if table.ty.initial > limit {
                        return Err(ModuleError::UnsupportedTable(format!(
                            "it starts with {} elements; a process's table holds at most {limit}",
                            table.ty.initial
                        )));
                    }
                }
            }
            Ok(Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if memories > 1 {
        return Err(ModuleError::UnsupportedMemory(format!(
            "{memories} memories; at most one"
        )));
    }
    if tables > 1 {
        return Err(ModuleError::UnsupportedTable(format!(
            "{tables} tables; a process has at most one"
        )));
    }
    let state = InstanceState::of(binary);
    if state.bytes() > crate::core::init::INSTANCE_STATE as u64 {
        return Err(ModuleError::InstanceTooLarge {
            needed: state.bytes(),
            what: state.describe(),
        });
    }
    Ok(())
}

/// What a module's declarations cost in the instance state the engine
/// keeps for each of its processes (Wasmtime's `VMContext`): the parts
/// that grow with the module. The engine adds a few hundred bytes of its
/// own (its `Instance`, a memory's and a table's definitions, the start
/// function's reference), not counted here, so a module this passes may
/// still be refused by the engine (see `not_compiled`), never the reverse.
#[derive(Debug, Default, PartialEq, Eq)]
struct InstanceState {
    /// Globals defined (16 bytes each: a value of up to 128 bits).
    globals: u64,
    /// Functions imported (the import's record and the function's
    /// reference, four pointers each).
    imports: u64,
    /// Functions defined and exported or referenced (by a table segment,
    /// a global's or a table's initial value; a `ref.func` in code must
    /// name one of these): one reference each, four pointers.
    referenced: u64,
    /// Data segments, active and passive (with copy-on-write images off,
    /// each is copied at instantiation from a pointer and a length).
    data_segments: u64,
}

impl InstanceState {
    const POINTER: u64 = std::mem::size_of::<usize>() as u64;
    const GLOBAL: u64 = 16;
    const FUNCTION_REF: u64 = 4 * Self::POINTER;
    const IMPORT: u64 = 4 * Self::POINTER + Self::FUNCTION_REF;
    const DATA_SEGMENT: u64 = Self::POINTER + 4;

    /// Counts `binary`'s declarations (the sections that parse).
    fn of(binary: &[u8]) -> InstanceState {
        use wasmparser::{ElementItems, ExternalKind, Parser, Payload, TableInit, TypeRef};
        let mut state = InstanceState::default();
        let mut referenced = std::collections::HashSet::new();
        let mut defined = 0u64;
        for payload in Parser::new(0).parse_all(binary) {
            match payload {
                Ok(Payload::ImportSection(section)) => {
                    state.imports += section
                        .into_imports()
                        .flatten()
                        .filter(|import| {
                            matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_))
                        })
                        .count() as u64;
                }
                Ok(Payload::FunctionSection(section)) => defined += u64::from(section.count()),
                Ok(Payload::GlobalSection(section)) => {
                    state.globals += u64::from(section.count());
                    for global in section.into_iter().flatten() {
                        functions_in(&global.init_expr, &mut referenced);
                    }
                }
                Ok(Payload::TableSection(section)) => {
                    for table in section.into_iter().flatten() {
                        if let TableInit::Expr(expr) = table.init {
                            functions_in(&expr, &mut referenced);
                        }
                    }
                }
                Ok(Payload::ExportSection(section)) => {
                    for export in section.into_iter().flatten() {
                        if matches!(export.kind, ExternalKind::Func | ExternalKind::FuncExact) {
                            referenced.insert(export.index);
                        }
                    }
                }
                Ok(Payload::ElementSection(section)) => {
                    for element in section.into_iter().flatten() {
                        match element.items {
                            ElementItems::Functions(functions) => {
                                referenced.extend(functions.into_iter().flatten());
                            }
                            ElementItems::Expressions(_, exprs) => {
                                for expr in exprs.into_iter().flatten() {
                                    functions_in(&expr, &mut referenced);
                                }
                            }
                        }
                    }
                }
                Ok(Payload::DataSection(section)) => {
                    state.data_segments += u64::from(section.count());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // An imported function's reference is counted with its import (an
        // index past the functions is left to the validator).
        let defined = state.imports..state.imports + defined;
        state.referenced = referenced
            .iter()
            .filter(|&&index| defined.contains(&u64::from(index)))
            .count() as u64;
        state
    }

    fn bytes(&self) -> u64 {
        self.globals * Self::GLOBAL
            + self.imports * Self::IMPORT
            + self.referenced * Self::FUNCTION_REF
            + self.data_segments * Self::DATA_SEGMENT
    }

    /// The parts, "80000 globals at 16 bytes each, ...", the largest
    /// first.
    fn describe(&self) -> String {
        let mut parts = [
            (self.globals, Self::GLOBAL, "global", "globals"),
            (
                self.imports,
                Self::IMPORT,
                "imported function",
                "imported functions",
            ),
            (
                self.referenced,
                Self::FUNCTION_REF,
                "function exported or referenced",
                "functions exported or referenced",
            ),
            (
                self.data_segments,
                Self::DATA_SEGMENT,
                "data segment",
                "data segments",
            ),
        ];
        parts.sort_by_key(|&(count, each, _, _)| std::cmp::Reverse(count * each));
        let parts: Vec<String> = parts
            .iter()
            .filter(|&&(count, ..)| count > 0)
            .map(|&(count, each, one, many)| {
                let what = if count == 1 { one } else { many };
                format!("{count} {what} at {each} bytes each")
            })
            .collect();
        if parts.is_empty() {
            "its globals, functions and data segments".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Adds the functions a constant expression takes a reference to.
fn functions_in(expr: &wasmparser::ConstExpr<'_>, into: &mut std::collections::HashSet<u32>) {
    for operator in expr.get_operators_reader().into_iter().flatten() {
        if let wasmparser::Operator::RefFunc { function_index } = operator {
            into.insert(function_index);
        }
    }
}

/// Bytes in a wasm page (memories here are 32-bit, with the default page
/// size).
const WASM_PAGE: u64 = 64 << 10;

#[cfg(test)]
mod tests;
