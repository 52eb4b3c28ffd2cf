//! Tests for manifest parsing: a full manifest, defaults, each bad field named,
//! mailbox settings, and malformed JSON.

use super::*;

const GOOD: &str = r#"{
        "name": "pong",
        "version": "1.2.3",
        "description": "answers pings",
        "entry_point": "main",
        "runtime": "wasm32",
        "module": "bundled:pong",
        "dependencies": {"clock": "^1"},
        "capabilities_required": ["messaging:send", {"name": "fs:read", "scope": "data/"}],
        "priority": "high",
        "preload": true,
        "memory_class": "compliance"
    }"#;

#[test]
fn a_full_manifest_parses() {
    let manifest = Manifest::parse(GOOD).unwrap();
    assert_eq!(manifest.name, "pong");
    assert_eq!(manifest.version, semver::Version::new(1, 2, 3));
    assert_eq!(manifest.module, ModuleSource::Bundled("pong".into()));
    assert_eq!(manifest.priority.level(), Priority::High);
    assert_eq!(manifest.memory_class, MemoryClass::Compliance);
    assert!(manifest.requires("fs:read"));
    assert_eq!(
        manifest.capabilities_required[1].scope.as_deref(),
        Some("data/")
    );
}

#[test]
fn defaults_apply() {
    let manifest = Manifest::parse(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32"}"#,
    )
    .unwrap();
    assert_eq!(manifest.module, ModuleSource::File("a.wasm".into()));
    assert_eq!(manifest.priority, ModulePriority::Normal);
    assert_eq!(manifest.memory_class, MemoryClass::User);
    assert!(!manifest.preload);
}

fn error_of(json: &str) -> ManifestError {
    Manifest::parse(json).unwrap_err()
}

#[test]
fn each_bad_field_is_named() {
    let missing = error_of(r#"{"version":"0.1.0","entry_point":"main","runtime":"wasm32"}"#);
    assert!(
        missing.problem.contains("missing field `name`"),
        "{missing}"
    );

    let unknown = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","colour":"red"}"#,
    );
    assert!(
        unknown.problem.contains("unknown field `colour`"),
        "{unknown}"
    );

    let version =
        error_of(r#"{"name":"a","version":"1.0","entry_point":"main","runtime":"wasm32"}"#);
    assert_eq!(version.field, "version");

    let priority = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","priority":"urgent"}"#,
    );
    assert_eq!(priority.field, "priority", "{priority}");

    let capability = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","capabilities_required":["messaging:send","disk:format"]}"#,
    );
    assert_eq!(capability.field, "capabilities_required[1]");

    let runtime =
        error_of(r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasi"}"#);
    assert_eq!(runtime.field, "runtime");

    let name =
        error_of(r#"{"name":"A B","version":"0.1.0","entry_point":"main","runtime":"wasm32"}"#);
    assert_eq!(name.field, "name");

    let dependency = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","dependencies":{"b":"not a req"}}"#,
    );
    assert_eq!(dependency.field, "dependencies.b");

    let class = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","memory_class":"huge"}"#,
    );
    assert_eq!(class.field, "memory_class");
}

#[test]
fn mailbox_settings_default_by_level_and_are_checked() {
    let high = Manifest::parse(
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","priority":"high"}"#,
    )
    .unwrap();
    assert_eq!(high.mailbox.capacity, 4096);
    assert_eq!(high.mailbox.overflow, OverflowMode::NotifySender);
    let custom = Manifest::parse(
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32",
                "mailbox":{"capacity":8,"overflow":"block_sender"}}"#,
    )
    .unwrap();
    assert_eq!(custom.mailbox.capacity, 8);
    assert_eq!(custom.mailbox.overflow, OverflowMode::BlockSender);
    let zero = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","mailbox":{"capacity":0}}"#,
    );
    assert_eq!(zero.field, "mailbox.capacity");
    let mode = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","mailbox":{"overflow":"explode"}}"#,
    );
    assert_eq!(mode.field, "mailbox.overflow", "{mode}");
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    let error = error_of("{\"name\": ");
    assert!(error.problem.contains("EOF"), "{error}");
}

#[test]
fn anything_after_the_manifest_is_an_error() {
    let base = r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32"}"#;
    for trailer in [r#" {"name":"other"}"#, ",,, garbage {{{"] {
        let error = error_of(&format!("{base}{trailer}"));
        assert!(error.problem.contains("not valid JSON"), "{error}");
        assert!(error.problem.contains("trailing characters"), "{error}");
    }
    assert!(
        Manifest::parse(&format!("{base}\n  \n")).is_ok(),
        "whitespace is fine"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_named_as_such_not_as_bad_json() {
    for (field, value) in [
        ("priority", "5"),
        ("priority", "null"),
        ("restart", "5"),
        ("memory_class", "true"),
    ] {
        let error = error_of(&format!(
            r#"{{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","{field}":{value}}}"#
        ));
        assert_eq!(error.field, field, "{error}");
        assert!(!error.problem.contains("not valid JSON"), "{error}");
    }
}

#[test]
fn a_dependency_listed_twice_is_an_error() {
    let error = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"run","runtime":"wasm32","dependencies":{"b":"9.9.9","b":"0.1.0"}}"#,
    );
    assert_eq!(error.field, "dependencies", "{error}");
    assert!(error.problem.contains("\"b\" is listed twice"), "{error}");
}

#[test]
fn objects_must_be_objects_and_a_capabilitys_unknown_field_is_named() {
    // serde fills a struct from an array (fields by position), which
    // skipped the unknown- and repeated-field checks: an array manifest
    // loaded and ran.
    let array = error_of(r#"["pong","0.1.0","","run","wasm32","bundled:noop"]"#);
    assert_eq!(array.field, ".");
    // The whole document is no field worth naming in the message.
    assert_eq!(
        array.to_string(),
        "must be a JSON object, not an array",
        "{array:?}"
    );
    assert!(
        array
            .problem
            .contains("must be a JSON object, not an array"),
        "{array}"
    );
    assert!(error_of("null").problem.contains("not null"));
    let mailbox = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","mailbox":[4,"drop_oldest"]}"#,
    );
    assert_eq!(mailbox.field, "mailbox", "{mailbox}");
    let scop = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","capabilities_required":[{"name":"messaging:send","scop":"x"}]}"#,
    );
    assert_eq!(scop.field, "capabilities_required[0].scop", "{scop}");
    let number = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","capabilities_required":[5]}"#,
    );
    assert_eq!(number.field, "capabilities_required[0]", "{number}");
    assert!(number.problem.contains("not a number"), "{number}");
}

#[test]
fn a_capability_asked_for_twice_is_named() {
    let twice = error_of(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","capabilities_required":["messaging:send","time:read","messaging:send"]}"#,
    );
    assert_eq!(twice.field, "capabilities_required[2]");
    assert!(
        twice.problem.contains("repeats capabilities_required[0]"),
        "{twice}"
    );
    // The same name with another scope is another grant.
    Manifest::parse(
        r#"{"name":"a","version":"0.1.0","entry_point":"main","runtime":"wasm32","capabilities_required":["messaging:send",{"name":"messaging:send","scope":"b"}]}"#,
    )
    .unwrap();
}
