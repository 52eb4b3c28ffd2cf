//! `manifest.json`: what a module is, what it needs, and how it runs.
//!
//! Parsing is strict: unknown fields, missing required fields and bad values
//! are errors that name the field. Required: `name`, `version` (semver),
//! `entry_point` (the exported function the process runs) and `runtime`
//! (`"wasm32"`). Optional, with defaults: `description` (`""`), `module`
//! (where the binary is: a path relative to the manifest, or
//! `"bundled:<name>"`; default `"<name>.wasm"`), `dependencies` (module name
//! → semver requirement; `{}`), `capabilities_required` (`[]`), `priority`
//! (`critical|high|normal|low|lazy`; `normal`), `preload` (`false`) and
//! `memory_class` (`user|system|compliance`; `user`).

use crate::core::message_router::{OverflowMode, default_capacity};
use estalogic_abi::Priority;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The largest manifest file [`Manifest::load`] reads.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A manifest that failed to parse or validate, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", if field == "." { String::new() } else { format!("{field}: ") })]
pub struct ManifestError {
    /// The JSON path of the offending field (`.` for the whole document,
    /// which the message leaves out).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ManifestError {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        ManifestError {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// Where a module's WebAssembly binary comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    /// A file, relative to the manifest's directory until resolved.
    File(PathBuf),
    /// A service bundled into the host program, by name.
    Bundled(String),
}

/// The scheduling priority a module asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModulePriority {
    /// Runs at `REALTIME`.
    Critical,
    /// Runs at `HIGH`.
    High,
    /// Runs at `NORMAL`.
    Normal,
    /// Runs at `LOW`.
    Low,
    /// Runs at `IDLE`.
    Lazy,
}

impl ModulePriority {
    /// The word a manifest uses for it.
    pub const fn name(self) -> &'static str {
        match self {
            ModulePriority::Critical => "critical",
            ModulePriority::High => "high",
            ModulePriority::Normal => "normal",
            ModulePriority::Low => "low",
            ModulePriority::Lazy => "lazy",
        }
    }

    /// The scheduler level a process of this module starts at. `SYSTEM` is
    /// reserved for the kernel's own services and cannot be asked for.
    pub fn level(self) -> Priority {
        match self {
            ModulePriority::Critical => Priority::Realtime,
            ModulePriority::High => Priority::High,
            ModulePriority::Normal => Priority::Normal,
            ModulePriority::Low => Priority::Low,
            ModulePriority::Lazy => Priority::Idle,
        }
    }
}

/// A module's memory class: the range its linear memory must stay in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryClass {
    /// User logic: 64 KiB .. 16 MiB.
    User,
    /// System services: 256 KiB .. 64 MiB.
    System,
    /// Compliance engines: 128 KiB .. 32 MiB.
    Compliance,
}

impl MemoryClass {
    /// The smallest initial memory a module of this class may declare.
    pub const fn min_bytes(self) -> u64 {
        match self {
            MemoryClass::User => 64 << 10,
            MemoryClass::System => 256 << 10,
            MemoryClass::Compliance => 128 << 10,
        }
    }

    /// The most memory a process of this class may ever have.
    pub const fn max_bytes(self) -> u64 {
        match self {
            MemoryClass::User => 16 << 20,
            MemoryClass::System => 64 << 20,
            MemoryClass::Compliance => 32 << 20,
        }
    }

    /// The class's name as written in manifests.
    pub const fn name(self) -> &'static str {
        match self {
            MemoryClass::User => "user",
            MemoryClass::System => "system",
            MemoryClass::Compliance => "compliance",
        }
    }
}

/// Capability names a manifest may ask for, as `family:right`.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "messaging:send",
    "messaging:receive",
    "messaging:broadcast",
    "process:lookup",
    "process:spawn",
    "time:read",
    "timer:create",
    "log:write",
    "fs:read",
    "fs:write",
    "fs:delete",
    "fs:list",
    "db:read",
    "db:write",
    "db:delete",
    "net:request",
    "audit:read",
    "audit:write",
    "config:read",
    "host_events:subscribe",
    "notifications:send",
];

/// One requested capability, with an optional scope (a directory, a set of
/// collections, a host allow-list, a set of peer modules...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityRequest {
    /// `family:right`, one of [`KNOWN_CAPABILITIES`].
    pub name: String,
    /// What the capability is limited to; `None` means the family's default.
    pub scope: Option<String>,
}

impl fmt::Display for CapabilityRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Some(scope) => write!(f, "{} [{}]", self.name, scope),
            None => f.write_str(&self.name),
        }
    }
}

/// A parsed and validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Module name: lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// Module version.
    pub version: semver::Version,
    /// What the module does.
    pub description: String,
    /// The exported function the process runs: `() -> ()` or `() -> i32`
    /// (the exit code).
    pub entry_point: String,
    /// Where the binary is.
    pub module: ModuleSource,
    /// Modules this one needs, with version requirements.
    pub dependencies: BTreeMap<String, semver::VersionReq>,
    /// Capabilities the module's processes are granted.
    pub capabilities_required: Vec<CapabilityRequest>,
    /// Scheduling priority.
    pub priority: ModulePriority,
    /// Compile and cache at boot even if not started.
    pub preload: bool,
    /// Memory limits.
    pub memory_class: MemoryClass,
    /// Mailbox capacity and overflow mode.
    pub mailbox: MailboxConfig,
    /// Whether a trap restarts the process.
    pub restart: RestartMode,
    /// The module told about every exit of this module's processes.
    pub supervisor: Option<String>,
}

/// Whether a failed process is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// A trap ends the process for good.
    #[default]
    Never,
    /// A trap restarts it along the supervision ladder.
    OnFailure,
}

/// A process's mailbox settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Messages it holds at most.
    pub capacity: usize,
    /// What a full mailbox does.
    pub overflow: OverflowMode,
}

/// The largest mailbox capacity a manifest may ask for.
pub const MAX_MAILBOX_CAPACITY: usize = 65_536;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    #[serde(default)]
    capacity: Option<usize>,
    #[serde(default)]
    overflow: Option<OverflowMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    entry_point: String,
    runtime: String,
    #[serde(default)]
    module: Option<String>,
    #[serde(default, deserialize_with = "unique_keys")]
    dependencies: BTreeMap<String, String>,
    #[serde(default)]
    capabilities_required: Vec<RawCapability>,
    #[serde(default = "default_priority")]
    priority: ModulePriority,
    #[serde(default)]
    preload: bool,
    #[serde(default = "default_memory_class")]
    memory_class: MemoryClass,
    #[serde(default)]
    mailbox: RawMailbox,
    #[serde(default)]
    restart: RestartMode,
    #[serde(default)]
    supervisor: Option<String>,
}

fn default_priority() -> ModulePriority {
    ModulePriority::Normal
}

fn default_memory_class() -> MemoryClass {
    MemoryClass::User
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCapability {
    Name(String),
    Scoped(ScopedCapability),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopedCapability {
    name: String,
    #[serde(default)]
    scope: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

impl Manifest {
    /// Parses and validates manifest JSON.
    pub fn parse(json: &str) -> Result<Manifest, ManifestError> {
        // Is it JSON at all, one value and nothing after it? (serde_json
        // appends " at line L column C"; keep it, it helps.)
        let value = serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| ManifestError::new(".", format!("not valid JSON: {e}")))?;
        check_shape(&value)?;
        // Then the manifest's shape: what fails now is a field's type or
        // value (serde_json calls some type mismatches syntax errors).
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        let raw: RawManifest = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let problem = match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("not of the expected type: {inner}")
                }
                _ => inner.to_string(),
            };
            ManifestError::new(if path.is_empty() { "." } else { &path }, problem)
        })?;
        raw.validate()
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let cannot = |e: &dyn std::fmt::Display| {
            ManifestError::new(".", format!("cannot read the file: {e}"))
        };
        let metadata = std::fs::metadata(path).map_err(|e| cannot(&e))?;
        if !metadata.is_file() {
            return Err(cannot(&"not a regular file"));
        }
        if metadata.len() > MAX_MANIFEST_BYTES {
            return Err(cannot(&format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let json = std::fs::read_to_string(path).map_err(|e| cannot(&e))?;
        Manifest::parse(&json)
    }
}

/// Checks the manifest's objects are objects: serde would also fill a
/// struct from an array (fields by position), which would skip the checks
/// of unknown and repeated fields; and an object in
/// `capabilities_required` names its unknown field (the untagged entry's
/// own error names none).
fn check_shape(value: &serde_json::Value) -> Result<(), ManifestError> {
    let not_object = |field: &str, what: &str| {
        ManifestError::new(field, format!("must be a JSON object, not {what}"))
    };
    let kind = |value: &serde_json::Value| match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    };
    let Some(root) = value.as_object() else {
        return Err(not_object(".", kind(value)));
    };
    if let Some(mailbox) = root.get("mailbox")
        && !mailbox.is_object()
    {
        return Err(not_object("mailbox", kind(mailbox)));
    }
    if let Some(serde_json::Value::Array(entries)) = root.get("capabilities_required") {
        for (index, entry) in entries.iter().enumerate() {
            let field = format!("capabilities_required[{index}]");
            match entry {
                serde_json::Value::String(_) => {}
                serde_json::Value::Object(members) => {
                    if let Some(unknown) = members
                        .keys()
                        .find(|k| !matches!(k.as_str(), "name" | "scope"))
                    {
                        return Err(ManifestError::new(
                            &format!("{field}.{unknown}"),
                            format!(
                                "unknown field {unknown:?}: a capability has `name` and `scope`"
                            ),
                        ));
                    }
                }
                other => {
                    return Err(ManifestError::new(
                        &field,
                        format!(
                            "must be a capability name or an object with `name` and `scope`, not {}",
                            kind(other)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A JSON object as a map, refusing a key given twice (serde's maps keep
/// the last one silently).
fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of module names to version requirements")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("{key:?} is listed twice")));
                }
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Unique)
}

impl RawManifest {
    fn validate(self) -> Result<Manifest, ManifestError> {
        if !valid_name(&self.name) {
            return Err(ManifestError::new(
                "name",
                format!(
                    "{:?} is not a module name (1-64 of a-z, 0-9, '-', '_', starting with a letter)",
                    self.name
                ),
            ));
        }
        let version = semver::Version::parse(&self.version).map_err(|e| {
            ManifestError::new("version", format!("{:?} is not semver: {e}", self.version))
        })?;
        if self.runtime != "wasm32" {
            return Err(ManifestError::new(
                "runtime",
                format!(
                    "{:?} is not supported; the only runtime is \"wasm32\"",
                    self.runtime
                ),
            ));
        }
        if self.entry_point.is_empty() {
            return Err(ManifestError::new(
                "entry_point",
                "must name an exported function",
            ));
        }
        let module = match self.module {
            None => ModuleSource::File(PathBuf::from(format!("{}.wasm", self.name))),
            Some(text) => match text.strip_prefix("bundled:") {
                Some(name) if valid_name(name) => ModuleSource::Bundled(name.to_string()),
                Some(_) => {
                    return Err(ManifestError::new(
                        "module",
                        format!("{text:?} does not name a bundled service"),
                    ));
                }
                None if text.is_empty() => {
                    return Err(ManifestError::new("module", "must not be empty"));
                }
                None => ModuleSource::File(PathBuf::from(text)),
            },
        };
        let mut dependencies = BTreeMap::new();
        for (name, requirement) in self.dependencies {
            let field = format!("dependencies.{name}");
            if !valid_name(&name) {
                return Err(ManifestError::new(&field, "is not a module name"));
            }
            if name == self.name {
                return Err(ManifestError::new(
                    &field,
                    "a module cannot depend on itself",
                ));
            }
            let requirement = semver::VersionReq::parse(&requirement).map_err(|e| {
                ManifestError::new(
                    &field,
                    format!("{requirement:?} is not a semver requirement: {e}"),
                )
            })?;
            dependencies.insert(name, requirement);
        }
        let mut capabilities_required = Vec::new();
        for (index, raw) in self.capabilities_required.into_iter().enumerate() {
            let (name, scope) = match raw {
                RawCapability::Name(name) => (name, None),
                RawCapability::Scoped(scoped) => (scoped.name, scoped.scope),
            };
            if !KNOWN_CAPABILITIES.contains(&name.as_str()) {
                return Err(ManifestError::new(
                    &format!("capabilities_required[{index}]"),
                    format!(
                        "unknown capability {name:?}; known: {}",
                        KNOWN_CAPABILITIES.join(", ")
                    ),
                ));
            }
            let request = CapabilityRequest { name, scope };
            if let Some(first) = capabilities_required.iter().position(|r| *r == request) {
                return Err(ManifestError::new(
                    &format!("capabilities_required[{index}]"),
                    format!("repeats capabilities_required[{first}]"),
                ));
            }
            capabilities_required.push(request);
        }
        let capacity = self
            .mailbox
            .capacity
            .unwrap_or_else(|| default_capacity(self.priority.level()));
        if !(1..=MAX_MAILBOX_CAPACITY).contains(&capacity) {
            return Err(ManifestError::new(
                "mailbox.capacity",
                format!("{capacity} is outside 1..={MAX_MAILBOX_CAPACITY}"),
            ));
        }
        if let Some(supervisor) = &self.supervisor
            && !valid_name(supervisor)
        {
            return Err(ManifestError::new(
                "supervisor",
                format!("{supervisor:?} is not a module name"),
            ));
        }
        let mailbox = MailboxConfig {
            capacity,
            overflow: self.mailbox.overflow.unwrap_or_default(),
        };
        Ok(Manifest {
            name: self.name,
            version,
            description: self.description,
            entry_point: self.entry_point,
            module,
            dependencies,
            capabilities_required,
            priority: self.priority,
            preload: self.preload,
            memory_class: self.memory_class,
            mailbox,
            restart: self.restart,
            supervisor: self.supervisor,
        })
    }
}

impl Manifest {
    /// True if the manifest asks for the capability `name`.
    pub fn requires(&self, name: &str) -> bool {
        self.capabilities_required.iter().any(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests;
