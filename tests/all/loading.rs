//! Loading: manifests and binaries are validated, with errors that name the
//! file and the problem.

use estalogic_kernel::abi::ErrorCode;
use estalogic_kernel::{ExitStatus, Kernel, KernelError, ModuleError};
use estalogic_tests::{load_wat, manifest};
use std::path::Path;

fn load_error(wat: &str) -> KernelError {
    let mut kernel = Kernel::builder().build().unwrap();
    kernel
        .load_module(
            manifest("bad", "run", &[], "normal"),
            wat.as_bytes(),
            Path::new("bad.wasm"),
        )
        .map(|_| ())
        .unwrap_err()
}

#[test]
fn a_module_importing_wasi_is_rejected_with_a_clear_error() {
    let error = load_error(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "run")))"#,
    );
    let text = error.to_string();
    assert!(text.starts_with("bad.wasm: "), "{text}");
    assert!(text.contains("`wasi_snapshot_preview1.fd_write`"), "{text}");
    assert!(text.contains("only the kernel ABI"), "{text}");
    assert!(matches!(
        error,
        KernelError::Module {
            error: ModuleError::ForbiddenImport { .. },
            ..
        }
    ));
}

#[test]
fn unknown_syscalls_wrong_signatures_and_non_function_imports_are_rejected() {
    let unknown =
        load_error(r#"(module (import "estalogic" "format_disk" (func)) (func (export "run")))"#);
    assert!(
        matches!(
            unknown,
            KernelError::Module {
                error: ModuleError::ForbiddenImport { .. },
                ..
            }
        ),
        "{unknown}"
    );

    let signature = load_error(
        r#"(module (import "estalogic" "send" (func (param i32) (result i64))) (func (export "run")))"#,
    );
    assert!(
        signature.to_string().contains("estalogic.send"),
        "{signature}"
    );
    assert!(matches!(
        signature,
        KernelError::Module {
            error: ModuleError::ImportSignature { .. },
            ..
        }
    ));

    let memory =
        load_error(r#"(module (import "estalogic" "memory" (memory 1)) (func (export "run")))"#);
    assert!(
        matches!(
            memory,
            KernelError::Module {
                error: ModuleError::ForbiddenImport { .. },
                ..
            }
        ),
        "{memory}"
    );
}

#[test]
fn entry_point_must_exist_with_a_supported_type() {
    let missing = load_error(r#"(module (func (export "start")))"#);
    assert!(
        matches!(
            missing,
            KernelError::Module {
                error: ModuleError::MissingEntryPoint(_),
                ..
            }
        ),
        "{missing}"
    );
    let typed = load_error(r#"(module (func (export "run") (param i32)))"#);
    assert!(
        matches!(
            typed,
            KernelError::Module {
                error: ModuleError::EntryPointSignature { .. },
                ..
            }
        ),
        "{typed}"
    );
}

#[test]
fn initial_memory_must_fit_the_memory_class() {
    // 300 pages = 18.75 MiB > 16 MiB for the user class.
    let error = load_error(r#"(module (memory (export "memory") 300) (func (export "run")))"#);
    assert!(
        matches!(
            error,
            KernelError::Module {
                error: ModuleError::MemoryOutOfClass { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("memory class `user`"), "{error}");
    // Exported or not: an unexported memory is the process's memory too.
    let error = load_error(r#"(module (memory 512) (func (export "run")))"#);
    assert!(
        matches!(
            error,
            KernelError::Module {
                error: ModuleError::MemoryOutOfClass { .. },
                ..
            }
        ),
        "{error}"
    );
    // 64-bit memories are not supported, exported or not.
    let error = load_error(r#"(module (memory i64 1) (func (export "run")))"#);
    assert!(error.to_string().contains("64"), "{error}");
}

#[test]
fn a_table_or_memory_past_a_process_limit_is_named_not_called_invalid() {
    // Valid WebAssembly that asks for more than a process may have: the
    // error names the limit, and never says "not a valid WebAssembly
    // module" (the engine's pool refused these while compiling, in its
    // own words).
    let cases: [(&str, &str); 4] = [
        (
            r#"(module (memory (export "memory") 1) (table 20000 funcref) (func (export "run")))"#,
            "has an unsupported table: it starts with 20000 elements; a process's table holds at most 10000",
        ),
        (
            r#"(module (memory (export "memory") 1) (table 1 funcref) (table 1 funcref) (func (export "run")))"#,
            "has an unsupported table: 2 tables; a process has at most one",
        ),
        (
            r#"(module (memory (export "memory") 1) (memory 1) (func (export "run")))"#,
            "has an unsupported memory: 2 memories; at most one",
        ),
        (
            r#"(module (memory (export "memory") 2000) (func (export "run")))"#,
            "memory class `user` allows",
        ),
    ];
    for (wat, expected) in cases {
        let error = load_error(wat).to_string();
        assert!(error.contains(expected), "{wat}: {error}");
        assert!(!error.contains("not a valid WebAssembly"), "{wat}: {error}");
    }
    // At the limit, a table loads.
    let mut kernel = Kernel::builder().build().unwrap();
    load_wat(
        &mut kernel,
        "full",
        r#"(module (memory (export "memory") 1) (table 10000 funcref) (func (export "run")))"#,
        "normal",
    );
}

#[test]
fn garbage_bytes_are_rejected_not_panicked_on() {
    let mut kernel = Kernel::builder().build().unwrap();
    let error = kernel
        .load_module(
            manifest("junk", "run", &[], "normal"),
            b"\0asm\x01\0\0\0\xff\xff",
            Path::new("junk.wasm"),
        )
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            error,
            KernelError::Module {
                error: ModuleError::Invalid(_),
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn bytes_that_are_not_webassembly_get_a_short_error() {
    // A 5 MB line of text (or a large file of NUL bytes) was quoted whole
    // in the error: the text parser's message shows the offending line.
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("text", vec![b'x'; 5 << 20]),
        ("zeros", vec![0; 1 << 20]),
    ];
    for (name, bytes) in cases {
        let mut kernel = Kernel::builder().build().unwrap();
        let error = kernel
            .load_module(
                manifest(name, "run", &[], "normal"),
                &bytes,
                Path::new("junk.wasm"),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.len() < 600, "{name}: {} bytes of error", error.len());
        if name == "empty" {
            assert!(error.contains("the module file is empty"), "{error}");
        } else {
            assert!(error.contains("not WebAssembly"), "{name}: {error}");
        }
    }
}

#[test]
fn a_memory_not_exported_as_memory_is_refused_at_load() {
    // It loaded, and its first syscall with a pointer failed with
    // INVALID_POINTER at run time (the kernel finds a guest's memory by
    // the export name `memory`).
    for wat in [
        r#"(module (memory (export "mem") 1) (func (export "run")))"#,
        r#"(module (memory 1) (func (export "run")))"#,
    ] {
        let mut kernel = Kernel::builder().build().unwrap();
        let error = kernel
            .load_module(
                manifest("m", "run", &[], "normal"),
                wat.as_bytes(),
                Path::new("m"),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains("not exported as `memory`"), "{error}");
    }
    // No memory at all is fine: such a guest passes no pointers.
    let mut kernel = Kernel::builder().build().unwrap();
    kernel
        .load_module(
            manifest("m", "run", &[], "normal"),
            br#"(module (func (export "run")))"#,
            Path::new("m"),
        )
        .unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_manifest_missing_a_required_field_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc/manifest.json");
    write(
        &path,
        r#"{"version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#,
    );
    let mut kernel = Kernel::builder().build().unwrap();
    let error = kernel.load_app_dir(dir.path()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("missing field `name`"), "{text}");
}

#[test]
fn an_app_directory_with_a_wasm_file_beside_its_manifest_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("noop/manifest.json"),
        r#"{"name":"noop","version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#,
    );
    std::fs::write(
        dir.path().join("noop/noop.wasm"),
        estalogic_services::get("noop").unwrap(),
    )
    .unwrap();
    let mut kernel = Kernel::builder().build().unwrap();
    assert_eq!(
        kernel.load_app_dir(dir.path()).unwrap(),
        vec!["noop".to_string()]
    );
    kernel.spawn_all().unwrap();
    assert_eq!(
        kernel.run().process("noop").unwrap().status,
        ExitStatus::Exited(0)
    );
}

#[test]
fn a_missing_module_file_and_an_empty_directory_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut kernel = Kernel::builder().build().unwrap();
    let empty = kernel.load_app_dir(dir.path()).unwrap_err();
    assert!(empty.to_string().contains("no manifest.json"), "{empty}");

    write(
        &dir.path().join("ghost/manifest.json"),
        r#"{"name":"ghost","version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#,
    );
    let missing = kernel.load_app_dir(dir.path()).unwrap_err();
    assert!(missing.to_string().contains("ghost.wasm"), "{missing}");
}

#[test]
fn traps_map_to_their_codes() {
    for &(body, code) in estalogic_tests::TRAP_CASES {
        let wat = estalogic_tests::trapper(body);
        let mut kernel = Kernel::builder().build().unwrap();
        load_wat(&mut kernel, "trapper", &wat, "normal");
        kernel.spawn("trapper").unwrap();
        let report = kernel.run();
        match &report.process("trapper").unwrap().status {
            ExitStatus::Trapped { code: got, .. } => assert_eq!(*got, code, "{body}"),
            other => panic!("{body}: expected a trap, got {other}"),
        }
    }
}

#[test]
fn a_second_boot_takes_compiled_modules_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    for (boot, expect_hits, expect_misses) in [(1, 0, 2), (2, 2, 0)] {
        let mut kernel = Kernel::builder()
            .module_cache(cache.path())
            .build()
            .unwrap();
        estalogic_tests::load_bundled(&mut kernel, "pong", "run");
        estalogic_tests::load_bundled(&mut kernel, "ping", "run");
        let stats = kernel.cache_stats().unwrap();
        assert_eq!(
            (stats.hits, stats.misses),
            (expect_hits, expect_misses),
            "boot {boot}: {stats:?}"
        );
        kernel.spawn_all().unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("ping").unwrap().status,
            ExitStatus::Exited(0),
            "boot {boot}"
        );
    }
}

#[test]
fn the_boot_report_walks_the_init_phases() {
    use estalogic_kernel::core::lifecycle::{InitPhase, SubsystemState};
    let mut kernel = Kernel::builder().build().unwrap();
    estalogic_tests::load_bundled(&mut kernel, "pong", "run");
    assert_eq!(kernel.boot_report().phase, InitPhase::ServiceInit);
    kernel.spawn_all().unwrap();
    let report = kernel.boot_report();
    assert_eq!(report.phase, InitPhase::Complete);
    for name in [
        "config",
        "engine",
        "capabilities",
        "scheduler",
        "clock",
        "module pong",
        "dependencies",
    ] {
        let status = report
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {report}"));
        assert_eq!(status.state, SubsystemState::Ok, "{name}");
    }

    let mut failing = Kernel::builder().build().unwrap();
    load_wat(
        &mut failing,
        "a",
        r#"(module (func (export "run")))"#,
        "normal",
    );
    let bad = manifest("b", "run", &[], "normal");
    let _ = failing.load_module(bad, b"not wasm", Path::new("b.wasm"));
    assert!(failing.spawn_all().is_err() || failing.boot_report().failure().is_some());
    let text = failing.boot_report().to_string();
    assert!(text.contains("module b"), "{text}");
}

#[test]
fn a_capability_scope_that_escapes_is_a_manifest_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc/manifest.json");
    write(
        &path,
        r#"{"name":"svc","version":"0.1.0","entry_point":"run","runtime":"wasm32",
            "capabilities_required":[{"name":"fs:read","scope":"../etc"}]}"#,
    );
    let mut kernel = Kernel::builder().build().unwrap();
    let text = kernel.load_app_dir(dir.path()).unwrap_err().to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("capabilities_required[0].scope"), "{text}");
    assert!(text.contains("../etc"), "{text}");
}

/// Freed pool slots wait in a batch before their pages go back to the
/// host, and a slot in the batch is not reused until then: a pool that is
/// full of such slots must flush the batch and go on, not refuse to spawn.
/// Two hundred runs of four processes through a four-slot pool (a batch
/// holds far more than four), on two workers: one worker's allocation can
/// find the slots it needs being returned by the other (Wasmtime flushes a
/// batch outside its lock), and then tries again rather than fail.
#[test]
fn a_small_pool_reuses_its_slots_run_after_run() {
    let mut kernel = Kernel::builder()
        .workers(2)
        .max_processes(4)
        .build()
        .unwrap();
    load_wat(
        &mut kernel,
        "touch",
        // Dirties a page of its memory, so its slot has pages to return.
        r#"(module (memory (export "memory") 1)
             (func (export "run") (i32.store (i32.const 4096) (i32.const 7))))"#,
        "normal",
    );
    for run in 0..200 {
        for _ in 0..4 {
            kernel.spawn("touch").unwrap();
        }
        let report = kernel.run();
        assert_eq!(report.processes.len(), 4, "run {run}");
        for process in &report.processes {
            assert_eq!(process.status, ExitStatus::Exited(0), "run {run}");
        }
    }
}

/// Each worker instantiates processes on its own lane of the engine, whose
/// pool holds a share of the process limit; a process whose lane is full
/// takes another lane's slot, so the whole limit stays usable however the
/// workers happen to share the processes out. Here all four are alive at
/// once (each waits 30 ms in `receive`) on pools of two slots a lane.
#[test]
fn every_process_slot_is_usable_whichever_worker_starts_the_process() {
    for workers in [2, 3] {
        let mut kernel = Kernel::builder()
            .workers(workers)
            .max_processes(4)
            .build()
            .unwrap();
        load_wat(
            &mut kernel,
            "waiter",
            r#"(module
                 (import "estalogic" "receive" (func $receive (param i32 i64 i32 i32 i32) (result i64)))
                 (memory (export "memory") 1)
                 (func (export "run") (result i32)
                   (drop (call $receive (i32.const 0) (i64.const 30) (i32.const 0) (i32.const 64) (i32.const 64)))
                   (i32.const 0)))"#,
            "normal",
        );
        // A handler that waits for a message that never comes: stopped at
        // the end of the run, once nothing else can happen.
        load_wat(
            &mut kernel,
            "idler",
            r#"(module
                 (memory (export "memory") 1)
                 (func (export "estalogic_inbox") (result i64) (i64.const 0x0000004000000400))
                 (func (export "run") (param i32) (result i32) (i32.const 0)))"#,
            "normal",
        );
        for run in 0..8 {
            for (name, ended) in [
                ("waiter", ExitStatus::Exited(0)),
                ("idler", ExitStatus::Stopped(ErrorCode::DEADLOCKED)),
            ] {
                for _ in 0..4 {
                    kernel.spawn(name).unwrap();
                }
                let report = kernel.run();
                assert_eq!(report.processes.len(), 4, "{workers} workers, run {run}");
                for process in &report.processes {
                    assert_eq!(
                        process.status, ended,
                        "{name}: {workers} workers, run {run}"
                    );
                }
            }
        }
    }
}

/// A module is compiled once and copied to each lane's engine at its first
/// use there: every lane's copy is its own, made once, and an index past
/// the last lane gets lane 0's.
#[test]
fn a_module_has_one_copy_per_lane_on_that_lanes_engine() {
    let mut kernel = Kernel::builder().workers(3).build().unwrap();
    load_wat(
        &mut kernel,
        "noop",
        r#"(module (memory (export "memory") 1) (func (export "run")))"#,
        "normal",
    );
    let module = &kernel.modules()[0];
    assert_eq!(module.lane_count(), 3);
    let engine = |lane: usize| module.on_lane(lane).pre.module().engine().clone();
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        assert!(
            !wasmtime::Engine::same(&engine(a), &engine(b)),
            "lanes {a} and {b}"
        );
    }
    assert!(std::ptr::eq(module.on_lane(1), module.on_lane(1)));
    assert!(std::ptr::eq(module.on_lane(0), &module.home));
    assert!(std::ptr::eq(module.on_lane(3), &module.home));
    // One worker, one lane.
    let mut kernel = Kernel::builder().workers(1).build().unwrap();
    load_wat(
        &mut kernel,
        "noop",
        r#"(module (memory (export "memory") 1) (func (export "run")))"#,
        "normal",
    );
    assert_eq!(kernel.modules()[0].lane_count(), 1);
}

#[test]
fn module_files_outside_the_app_or_not_regular_files_are_refused() {
    let load = |module: &str| {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("svc/manifest.json"),
            &format!(
                r#"{{"name":"svc","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"{module}"}}"#
            ),
        );
        std::fs::create_dir_all(dir.path().join("svc/adir")).unwrap();
        let mut kernel = Kernel::builder().build().unwrap();
        kernel.load_app_dir(dir.path()).unwrap_err().to_string()
    };
    // /dev/zero would be read forever; a path may not leave the app.
    for outside in ["/dev/zero", "../svc/manifest.json", "adir/../../x.wasm"] {
        let error = load(outside);
        assert!(
            error.contains("module") && error.contains("inside"),
            "{outside}: {error}"
        );
    }
    let error = load("adir");
    assert!(error.contains("not a regular file"), "{error}");
}

#[test]
fn a_manifest_json_that_is_not_a_file_is_an_error_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("svc/manifest.json")).unwrap();
    let mut kernel = Kernel::builder().build().unwrap();
    let error = kernel.load_app_dir(dir.path()).unwrap_err().to_string();
    assert!(error.contains("svc/manifest.json"), "{error}");
    assert!(error.contains("not a readable regular file"), "{error}");
}

#[test]
fn a_shutdown_stops_one_run_and_the_next_run_starts_afresh() {
    let mut kernel = Kernel::builder().build().unwrap();
    load_wat(
        &mut kernel,
        "quick",
        r#"(module (memory (export "memory") 1) (func (export "run")))"#,
        "normal",
    );
    // Requested between runs: the next run stops at once...
    kernel.shutdown_handle().request();
    kernel.spawn("quick").unwrap();
    let stopped = kernel.run();
    let status = &stopped.process("quick").unwrap().status;
    assert!(
        matches!(status, ExitStatus::Stopped(_) | ExitStatus::Exited(0)),
        "{status:?}"
    );
    // ...and uses the request up: the one after runs normally.
    for _ in 0..3 {
        kernel.spawn("quick").unwrap();
        let report = kernel.run();
        assert_eq!(
            report.process("quick").unwrap().status,
            ExitStatus::Exited(0)
        );
    }
}

#[test]
fn a_second_manifest_with_a_loaded_name_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["one", "two"] {
        write(
            &dir.path().join(format!("{sub}/manifest.json")),
            r#"{"name":"same","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"noop.wasm"}"#,
        );
        std::fs::write(
            dir.path().join(format!("{sub}/noop.wasm")),
            estalogic_services::get("noop").unwrap(),
        )
        .unwrap();
    }
    let mut kernel = Kernel::builder().build().unwrap();
    let error = kernel.load_app_dir(dir.path()).unwrap_err().to_string();
    assert!(error.contains("two/manifest.json"), "{error}");
    assert!(error.contains("already in this app"), "{error}");
    assert!(error.contains("one/manifest.json"), "{error}");
    // Every manifest is checked before any module loads: none did.
    assert!(kernel.modules().is_empty());
}

#[test]
fn a_module_built_to_compile_slowly_is_refused_before_compiling() {
    // 30,000 nested loops compile for minutes (the time grows with the
    // square of the nesting); the kernel refuses them at once, saying why.
    let bomb = format!(
        "(module (func (export \"run\") {}{}))",
        "(loop ".repeat(30_000),
        ")".repeat(30_000)
    );
    let mut kernel = Kernel::builder().build().unwrap();
    let error = kernel
        .load_module(
            estalogic_tests::manifest("bomb", "run", &[], "normal"),
            bomb.as_bytes(),
            std::path::Path::new("bomb"),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused before compiling"), "{error}");
    assert!(error.contains("nests loops 30000 deep"), "{error}");
}

#[test]
fn links_out_of_the_app_directory_are_refused() {
    // A module file, a manifest and a whole subdirectory that are links to
    // things outside the app directory: each is refused, naming the link.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.wat"),
        r#"(module (func (export "run") (result i32) (i32.const 42)))"#,
    )
    .unwrap();
    let other_app = outside.path().join("app");
    std::fs::create_dir(&other_app).unwrap();
    let manifest = |module: &str| {
        format!(
            r#"{{"name":"t","version":"0.1.0","entry_point":"run","runtime":"wasm32","module":"{module}"}}"#
        )
    };
    std::fs::write(other_app.join("manifest.json"), manifest("m.wat")).unwrap();
    std::fs::write(other_app.join("m.wat"), r#"(module (func (export "run")))"#).unwrap();
    type MakeApp<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, MakeApp); 3] = [
        ("module", &|app: &Path| {
            std::fs::write(app.join("manifest.json"), manifest("m.wat")).unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret.wat"), app.join("m.wat"))
                .unwrap();
        }),
        ("manifest", &|app: &Path| {
            std::os::unix::fs::symlink(other_app.join("manifest.json"), app.join("manifest.json"))
                .unwrap();
        }),
        ("subdirectory", &|app: &Path| {
            std::os::unix::fs::symlink(&other_app, app.join("sub")).unwrap();
        }),
    ];
    for (what, make) in cases {
        let app = tempfile::tempdir().unwrap();
        make(app.path());
        let mut kernel = Kernel::builder().build().unwrap();
        let error = kernel.load_app_dir(app.path()).unwrap_err().to_string();
        assert!(error.contains("leads outside"), "{what}: {error}");
        assert!(kernel.modules().is_empty(), "{what}: nothing loaded");
    }
}

#[test]
fn a_scoped_capability_whose_syscalls_name_no_module_is_refused_at_load() {
    // A receive takes from any sender and a broadcast reaches every
    // process, and a log line, a clock read and a notification for the
    // host name no resource: a scoped grant of any of them could never be
    // used (every call was PERMISSION_DENIED; notifications:send's was
    // found so by the forty-fourth probe round), so the manifest is
    // refused, naming the field.
    for name in [
        "messaging:receive",
        "messaging:broadcast",
        "log:write",
        "time:read",
        "notifications:send",
    ] {
        let mut kernel = Kernel::builder().build().unwrap();
        let manifest = estalogic_kernel::Manifest::parse(&format!(
            r#"{{"name":"scoped","version":"0.1.0","entry_point":"run","runtime":"wasm32",
                "capabilities_required":[{{"name":"{name}","scope":"pong"}}]}}"#
        ))
        .unwrap();
        let error = kernel
            .load_module(
                manifest,
                br#"(module (memory (export "memory") 1) (func (export "run")))"#,
                Path::new("scoped"),
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("capabilities_required[0].scope"), "{error}");
        assert!(error.contains("cannot be scoped"), "{error}");
    }
}
