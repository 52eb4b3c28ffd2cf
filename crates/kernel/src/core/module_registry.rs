//! The module registry: which modules exist, at which versions, in which
//! lifecycle state, and in which order they load.
//!
//! Pure data: no I/O, no WASM. The kernel parses manifests, registers them
//! here, moves each entry through its states as it compiles and starts the
//! module, and attaches what it keeps per module (its compiled code) as the
//! payload `T`.
//!
//! # Identity
//!
//! 1. An entry is named by its [`ModuleKey`]: name and version
//!    (`ping@1.2.0`). Several versions of one name may be registered at once;
//!    the same name and version twice is [`RegistryError::Duplicate`].
//!    Versions are `semver::Version` values, compared as that type does.
//! 2. A new entry is [`ModuleState::Registered`] and has no payload.
//!
//! # Lifecycle
//!
//! 3. A state changes only through [`ModuleRegistry::transition`], along
//!    these edges and no others:
//!
//!    ```text
//!    Registered → Loading           the kernel starts compiling it
//!    Loading    → Ready | Failed    compiled and checked, or not (with a reason)
//!    Ready      → Unloading → Unloaded
//!    Failed     → Loading           retry
//!    Failed     → Unloaded          give up
//!    Unloaded   → Loading           reload
//!    ```
//!
//!    Anything else, staying put included, is
//!    [`RegistryError::IllegalTransition`] naming both states, and the
//!    state does not change.
//! 4. An entry can be unregistered only while nothing of it runs:
//!    `Registered`, `Failed` or `Unloaded`. The removed entry is handed back
//!    with its payload.
//! 5. Transitions never touch the payload; the kernel attaches and detaches
//!    it ([`ModuleRegistry::attach`], [`ModuleRegistry::detach`]).
//!
//! # Dependencies
//!
//! 6. A dependency `name → requirement` resolves to the highest registered
//!    version of `name` that matches the requirement, under semver's rules
//!    (`^1` matches `1.9.0` but neither `2.0.0` nor `1.1.0-beta`). With no
//!    version of `name` it is [`RegistryError::MissingDependency`]; with
//!    versions but none matching, [`RegistryError::VersionMismatch`].
//! 7. [`ModuleRegistry::check_dependencies`] resolves every dependency of
//!    every entry, every version, and reports all failures in key order.
//!
//! # Load order
//!
//! 8. [`ModuleRegistry::load_order`] orders the modules to load:
//!    1. Start from the latest (highest) version of every registered name.
//!    2. Add, transitively, the version each of their dependencies resolves
//!       to (rule 6). That version may be older than the latest, and then
//!       both are loaded. The first dependency that does not resolve, in key
//!       order, is the error.
//!    3. Kahn's algorithm: repeatedly emit the smallest key (by name, then
//!       version) whose dependencies have all been emitted. So every
//!       dependency comes before its dependents, ties are broken by name,
//!       and the same registry always gives the same order.
//!    4. If modules remain and none is ready, each remaining one waits on
//!       another remaining one: there is a cycle. From the smallest
//!       remaining key, follow the smallest remaining dependency until a
//!       key repeats. That loop is [`RegistryError::Cycle`], rotated to
//!       start at its smallest key and closed: `["a", "b", "c", "a"]` means
//!       `a` depends on `b`, `b` on `c` and `c` on `a`. (A manifest cannot
//!       depend on itself, so a cycle has at least two modules.)

use crate::loader::manifest::Manifest;
use semver::{Version, VersionReq};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A registered module's identity: its name and version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleKey {
    /// The module name from the manifest.
    pub name: String,
    /// The module version from the manifest.
    pub version: Version,
}

impl ModuleKey {
    /// The key for `name` at `version`.
    pub fn new(name: impl Into<String>, version: Version) -> Self {
        ModuleKey {
            name: name.into(),
            version,
        }
    }

    /// The key a manifest registers under.
    pub fn of(manifest: &Manifest) -> Self {
        ModuleKey::new(manifest.name.clone(), manifest.version.clone())
    }
}

impl fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Where a registered module is in its lifecycle (invariant 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// Known, not loaded yet.
    Registered,
    /// Being compiled and checked.
    Loading,
    /// Compiled; processes may be spawned from it.
    Ready,
    /// Loading failed, for this reason.
    Failed(String),
    /// Being taken down: no new processes.
    Unloading,
    /// Taken down; may be loaded again.
    Unloaded,
}

impl ModuleState {
    /// True if `self → to` is one of the legal edges of invariant 3.
    pub fn can_become(&self, to: &ModuleState) -> bool {
        use ModuleState::*;
        matches!(
            (self, to),
            (Registered, Loading)
                | (Loading, Ready)
                | (Loading, Failed(_))
                | (Ready, Unloading)
                | (Unloading, Unloaded)
                | (Failed(_), Loading)
                | (Failed(_), Unloaded)
                | (Unloaded, Loading)
        )
    }

    /// True if an entry in this state may be unregistered (invariant 4).
    pub fn is_removable(&self) -> bool {
        matches!(
            self,
            ModuleState::Registered | ModuleState::Failed(_) | ModuleState::Unloaded
        )
    }

    /// The state's name, without a failure reason.
    pub fn name(&self) -> &'static str {
        match self {
            ModuleState::Registered => "Registered",
            ModuleState::Loading => "Loading",
            ModuleState::Ready => "Ready",
            ModuleState::Failed(_) => "Failed",
            ModuleState::Unloading => "Unloading",
            ModuleState::Unloaded => "Unloaded",
        }
    }
}

impl fmt::Display for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleState::Failed(reason) => write!(f, "Failed ({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

/// What the registry refused, naming the module, the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// This name and version is already registered.
    #[error("{key}: already registered")]
    Duplicate {
        /// The key registered twice.
        key: ModuleKey,
    },
    /// No entry has this key.
    #[error("{key}: not registered")]
    NotRegistered {
        /// The key looked for.
        key: ModuleKey,
    },
    /// The move is not an edge of the state machine.
    #[error("{key}: state: cannot go from {from} to {to}")]
    IllegalTransition {
        /// The entry.
        key: ModuleKey,
        /// Its state, unchanged.
        from: ModuleState,
        /// The state asked for.
        to: ModuleState,
    },
    /// The entry is loading, ready or unloading and cannot be removed.
    #[error("{key}: state: cannot unregister while {state}; only Registered, Failed or Unloaded")]
    NotRemovable {
        /// The entry.
        key: ModuleKey,
        /// Its state.
        state: ModuleState,
    },
    /// No version of the dependency is registered.
    #[error(
        "{module}: dependencies.{dependency}: requires {requirement}, but no module named {dependency:?} is registered"
    )]
    MissingDependency {
        /// The module with the dependency.
        module: ModuleKey,
        /// The name of the module it needs.
        dependency: String,
        /// The version it needs.
        requirement: VersionReq,
    },
    /// Versions of the dependency are registered, but none matches.
    #[error(
        "{module}: dependencies.{dependency}: requires {requirement}, but only {} registered",
        version_list(.available)
    )]
    VersionMismatch {
        /// The module with the dependency.
        module: ModuleKey,
        /// The name of the module it needs.
        dependency: String,
        /// The version it needs.
        requirement: VersionReq,
        /// The registered versions of the dependency, ascending.
        available: Vec<Version>,
    },
    /// Modules depend on each other in a loop (invariant 8.4).
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

fn version_list(versions: &[Version]) -> String {
    let list: Vec<String> = versions.iter().map(Version::to_string).collect();
    let verb = if versions.len() == 1 { "is" } else { "are" };
    format!("{} {verb}", list.join(", "))
}

/// One registered module: its manifest, state and the kernel's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<T> {
    manifest: Manifest,
    state: ModuleState,
    payload: Option<T>,
}

impl<T> Entry<T> {
    /// The entry's key.
    pub fn key(&self) -> ModuleKey {
        ModuleKey::of(&self.manifest)
    }

    /// The manifest it was registered with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its lifecycle state.
    pub fn state(&self) -> &ModuleState {
        &self.state
    }

    /// What the kernel attached, if anything.
    pub fn payload(&self) -> Option<&T> {
        self.payload.as_ref()
    }

    /// Takes the entry apart: its manifest and payload.
    pub fn into_parts(self) -> (Manifest, Option<T>) {
        (self.manifest, self.payload)
    }
}

/// Registered modules by name and version, with their states and payloads.
#[derive(Clone, Debug)]
pub struct ModuleRegistry<T = ()> {
    /// Name → version → entry. No name maps to an empty set of versions.
    modules: BTreeMap<String, BTreeMap<Version, Entry<T>>>,
}

impl<T> Default for ModuleRegistry<T> {
    fn default() -> Self {
        ModuleRegistry {
            modules: BTreeMap::new(),
        }
    }
}

#[expect(
    clippy::result_large_err,
    reason = "registry calls are rare (boot, load, unload), and an error that names the \
              module, the dependency and the versions on offer is worth its 136 bytes"
)]
impl<T> ModuleRegistry<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries, every version counted.
    pub fn len(&self) -> usize {
        self.modules.values().map(BTreeMap::len).sum()
    }

    /// True if nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Every entry, in key order (name, then version).
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.modules.values().flat_map(BTreeMap::values)
    }

    /// Adds a manifest as a new `Registered` entry without payload.
    pub fn register(&mut self, manifest: Manifest) -> Result<ModuleKey, RegistryError> {
        let key = ModuleKey::of(&manifest);
        let versions = self.modules.entry(key.name.clone()).or_default();
        if versions.contains_key(&key.version) {
            return Err(RegistryError::Duplicate { key });
        }
        versions.insert(
            key.version.clone(),
            Entry {
                manifest,
                state: ModuleState::Registered,
                payload: None,
            },
        );
        Ok(key)
    }

    /// Removes an entry that is `Registered`, `Failed` or `Unloaded` and
    /// hands it back, payload included.
    pub fn unregister(&mut self, key: &ModuleKey) -> Result<Entry<T>, RegistryError> {
        let state = self.entry(key)?.state.clone();
        if !state.is_removable() {
            return Err(RegistryError::NotRemovable {
                key: key.clone(),
                state,
            });
        }
        let versions = self
            .modules
            .get_mut(&key.name)
            .expect("the entry was just found");
        let entry = versions
            .remove(&key.version)
            .expect("the entry was just found");
        if versions.is_empty() {
            self.modules.remove(&key.name);
        }
        Ok(entry)
    }

    /// The entry with this exact key.
    pub fn get(&self, key: &ModuleKey) -> Option<&Entry<T>> {
        self.modules.get(&key.name)?.get(&key.version)
    }

    /// Every registered version of `name`, ascending.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &Entry<T>> {
        self.modules
            .get(name)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// The highest registered version of `name` that matches `requirement`.
    pub fn lookup(&self, name: &str, requirement: &VersionReq) -> Option<&Entry<T>> {
        self.modules
            .get(name)?
            .iter()
            .rev()
            .find(|(version, _)| requirement.matches(version))
            .map(|(_, entry)| entry)
    }

    /// The highest registered version of `name`, pre-releases included.
    pub fn latest(&self, name: &str) -> Option<&Entry<T>> {
        self.modules.get(name)?.values().next_back()
    }

    /// Moves an entry to `to` along a legal edge (invariant 3) and returns
    /// the state it left.
    pub fn transition(
        &mut self,
        key: &ModuleKey,
        to: ModuleState,
    ) -> Result<ModuleState, RegistryError> {
        let entry = self.entry_mut(key)?;
        if !entry.state.can_become(&to) {
            return Err(RegistryError::IllegalTransition {
                key: key.clone(),
                from: entry.state.clone(),
                to,
            });
        }
        Ok(std::mem::replace(&mut entry.state, to))
    }

    /// Attaches the kernel's payload to an entry, in any state, and returns
    /// the one it replaces.
    pub fn attach(&mut self, key: &ModuleKey, payload: T) -> Result<Option<T>, RegistryError> {
        Ok(self.entry_mut(key)?.payload.replace(payload))
    }

    /// Takes the payload off an entry.
    pub fn detach(&mut self, key: &ModuleKey) -> Result<Option<T>, RegistryError> {
        Ok(self.entry_mut(key)?.payload.take())
    }

    /// Checks that every dependency of every entry resolves (invariant 7).
    /// On failure, lists every unresolved dependency in key order.
    pub fn check_dependencies(&self) -> Result<(), Vec<RegistryError>> {
        let errors: Vec<RegistryError> = self
            .iter()
            .flat_map(|entry| {
                let module = entry.key();
                entry
                    .manifest
                    .dependencies
                    .iter()
                    .filter_map(move |(name, requirement)| {
                        self.resolve(&module, name, requirement).err()
                    })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The order in which to load modules, dependencies first, by the
    /// algorithm of invariant 8.
    pub fn load_order(&self) -> Result<Vec<ModuleKey>, RegistryError> {
        // 8.1 and 8.2: the modules to load and their resolved dependencies.
        let mut needs: BTreeMap<ModuleKey, Vec<ModuleKey>> = BTreeMap::new();
        let mut pending: BTreeSet<ModuleKey> = self
            .modules
            .keys()
            .filter_map(|name| self.latest(name))
            .map(Entry::key)
            .collect();
        while let Some(key) = pending.pop_first() {
            let manifest = &self.get(&key).expect("only registered keys").manifest;
            let mut resolved = Vec::with_capacity(manifest.dependencies.len());
            for (name, requirement) in &manifest.dependencies {
                let dependency = self.resolve(&key, name, requirement)?;
                if !needs.contains_key(&dependency) {
                    pending.insert(dependency.clone());
                }
                resolved.push(dependency);
            }
            needs.insert(key, resolved);
        }

        // 8.3: Kahn's algorithm, smallest ready key first.
        let mut waiting: BTreeMap<&ModuleKey, usize> =
            needs.iter().map(|(key, deps)| (key, deps.len())).collect();
        let mut dependents: BTreeMap<&ModuleKey, Vec<&ModuleKey>> = BTreeMap::new();
        for (key, deps) in &needs {
            for dependency in deps {
                dependents.entry(dependency).or_default().push(key);
            }
        }
        let mut ready: BTreeSet<&ModuleKey> = waiting
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(key, _)| *key)
            .collect();
        let mut order = Vec::with_capacity(needs.len());
        while let Some(key) = ready.pop_first() {
            order.push(key.clone());
            for &dependent in dependents.get(key).into_iter().flatten() {
                let count = waiting.get_mut(dependent).expect("every node is counted");
                *count -= 1;
                if *count == 0 {
                    ready.insert(dependent);
                }
            }
        }
        if order.len() == needs.len() {
            return Ok(order);
        }

        // 8.4: what is left waits on itself; name one loop.
        let remaining: BTreeSet<&ModuleKey> = waiting
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(key, _)| key)
            .collect();
        Err(RegistryError::Cycle(find_cycle(&needs, &remaining)))
    }

    /// Resolves one dependency of `module` (invariant 6).
    fn resolve(
        &self,
        module: &ModuleKey,
        dependency: &str,
        requirement: &VersionReq,
    ) -> Result<ModuleKey, RegistryError> {
        if let Some(entry) = self.lookup(dependency, requirement) {
            return Ok(entry.key());
        }
        let available: Vec<Version> = self.versions(dependency).map(|e| e.key().version).collect();
        Err(if available.is_empty() {
            RegistryError::MissingDependency {
                module: module.clone(),
                dependency: dependency.to_string(),
                requirement: requirement.clone(),
            }
        } else {
            RegistryError::VersionMismatch {
                module: module.clone(),
                dependency: dependency.to_string(),
                requirement: requirement.clone(),
                available,
            }
        })
    }

    fn entry(&self, key: &ModuleKey) -> Result<&Entry<T>, RegistryError> {
        self.get(key)
            .ok_or_else(|| RegistryError::NotRegistered { key: key.clone() })
    }

    fn entry_mut(&mut self, key: &ModuleKey) -> Result<&mut Entry<T>, RegistryError> {
        self.modules
            .get_mut(&key.name)
            .and_then(|versions| versions.get_mut(&key.version))
            .ok_or_else(|| RegistryError::NotRegistered { key: key.clone() })
    }
}

/// Invariant 8.4: every key in `remaining` has a dependency in `remaining`,
/// so walking smallest remaining dependencies must come back to a key
/// already on the walk.
fn find_cycle(
    needs: &BTreeMap<ModuleKey, Vec<ModuleKey>>,
    remaining: &BTreeSet<&ModuleKey>,
) -> Vec<String> {
    let start = *remaining.first().expect("Kahn's algorithm stopped early");
    let mut walk: Vec<&ModuleKey> = vec![start];
    loop {
        let current = *walk.last().expect("the walk is never empty");
        let next = needs[current]
            .iter()
            .filter(|dependency| remaining.contains(dependency))
            .min()
            .expect("a stuck module waits on another stuck module");
        if let Some(at) = walk.iter().position(|&key| key == next) {
            let mut cycle = walk.split_off(at);
            let smallest = (0..cycle.len())
                .min_by_key(|&i| cycle[i])
                .expect("a cycle is never empty");
            cycle.rotate_left(smallest);
            let mut names: Vec<String> = cycle.iter().map(|key| key.name.clone()).collect();
            names.push(names[0].clone());
            return names;
        }
        walk.push(next);
    }
}

#[cfg(test)]
mod tests;
