//! Tests for the module registry: state transitions, versions and lookup,
//! dependency checks, load order and cycle detection.

use super::*;
use proptest::prelude::*;

fn manifest(name: &str, version: &str, dependencies: &[(&str, &str)]) -> Manifest {
    let dependencies: Vec<String> = dependencies
        .iter()
        .map(|(dependency, requirement)| format!("{dependency:?}: {requirement:?}"))
        .collect();
    let json = format!(
        r#"{{"name": {name:?}, "version": {version:?}, "entry_point": "main",
                "runtime": "wasm32", "dependencies": {{{}}}}}"#,
        dependencies.join(", ")
    );
    Manifest::parse(&json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn key(name: &str, version: &str) -> ModuleKey {
    ModuleKey::new(name, Version::parse(version).unwrap())
}

fn requirement(text: &str) -> VersionReq {
    VersionReq::parse(text).unwrap()
}

type Module<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn registry(modules: &[Module<'_>]) -> ModuleRegistry {
    let mut registry = ModuleRegistry::new();
    for (name, version, dependencies) in modules {
        registry
            .register(manifest(name, version, dependencies))
            .unwrap();
    }
    registry
}

fn failed() -> ModuleState {
    ModuleState::Failed("no entry point".into())
}

fn all_states() -> Vec<ModuleState> {
    use ModuleState::*;
    vec![Registered, Loading, Ready, failed(), Unloading, Unloaded]
}

/// Legal moves that take a fresh entry to `state`.
fn path_to(state: &ModuleState) -> Vec<ModuleState> {
    use ModuleState::*;
    match state {
        Registered => vec![],
        Loading => vec![Loading],
        Ready => vec![Loading, Ready],
        Failed(_) => vec![Loading, state.clone()],
        Unloading => vec![Loading, Ready, Unloading],
        Unloaded => vec![Loading, Ready, Unloading, Unloaded],
    }
}

/// A registry with one entry, `m@1.0.0`, driven to `state`.
fn one_in(state: &ModuleState) -> (ModuleRegistry, ModuleKey) {
    let mut registry = ModuleRegistry::new();
    let key = registry.register(manifest("m", "1.0.0", &[])).unwrap();
    for step in path_to(state) {
        registry.transition(&key, step).unwrap();
    }
    assert_eq!(registry.get(&key).unwrap().state(), state);
    (registry, key)
}

#[test]
fn module_keys_display_as_name_at_version() {
    assert_eq!(key("ping", "1.2.3-beta.1").to_string(), "ping@1.2.3-beta.1");
    assert_eq!(
        ModuleKey::of(&manifest("pong", "0.1.0", &[])),
        key("pong", "0.1.0")
    );
}

#[test]
fn registering_starts_registered_without_payload() {
    let mut registry = ModuleRegistry::<u32>::new();
    assert!(registry.is_empty());
    let key = registry.register(manifest("ping", "1.0.0", &[])).unwrap();
    assert_eq!(key, self::key("ping", "1.0.0"));
    let entry = registry.get(&key).unwrap();
    assert_eq!(entry.state(), &ModuleState::Registered);
    assert_eq!(entry.payload(), None);
    assert_eq!(entry.manifest().entry_point, "main");
    assert_eq!(entry.key(), key);
    assert_eq!(registry.len(), 1);
}

#[test]
fn every_legal_transition_is_allowed() {
    use ModuleState::*;
    let legal = [
        (Registered, Loading),
        (Loading, Ready),
        (Loading, failed()),
        (Ready, Unloading),
        (Unloading, Unloaded),
        (failed(), Loading),
        (failed(), Unloaded),
        (Unloaded, Loading),
    ];
    for (from, to) in legal {
        let (mut registry, key) = one_in(&from);
        assert_eq!(
            registry.transition(&key, to.clone()),
            Ok(from.clone()),
            "{from} -> {to}"
        );
        assert_eq!(registry.get(&key).unwrap().state(), &to);
    }
}

#[test]
fn every_other_transition_is_refused_and_changes_nothing() {
    let mut refused = 0;
    for from in all_states() {
        for to in all_states() {
            let (mut registry, key) = one_in(&from);
            let result = registry.transition(&key, to.clone());
            if from.can_become(&to) {
                assert_eq!(result, Ok(from.clone()));
                continue;
            }
            refused += 1;
            assert_eq!(
                result,
                Err(RegistryError::IllegalTransition {
                    key: key.clone(),
                    from: from.clone(),
                    to: to.clone(),
                })
            );
            assert_eq!(registry.get(&key).unwrap().state(), &from);
        }
    }
    // 36 pairs, 8 legal edges.
    assert_eq!(refused, 28);
}

#[test]
fn illegal_transitions_name_the_module_and_both_states() {
    let (mut registry, key) = one_in(&ModuleState::Ready);
    let error = registry.transition(&key, ModuleState::Loading).unwrap_err();
    assert_eq!(
        error.to_string(),
        "m@1.0.0: state: cannot go from Ready to Loading"
    );

    let (mut registry, key) = one_in(&ModuleState::Registered);
    let error = registry.transition(&key, ModuleState::Ready).unwrap_err();
    assert_eq!(
        error.to_string(),
        "m@1.0.0: state: cannot go from Registered to Ready"
    );

    let (mut registry, key) = one_in(&failed());
    let error = registry.transition(&key, failed()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "m@1.0.0: state: cannot go from Failed (no entry point) to Failed (no entry point)"
    );

    let (mut registry, key) = one_in(&ModuleState::Unloading);
    assert!(registry.transition(&key, ModuleState::Ready).is_err());
    let (mut registry, key) = one_in(&ModuleState::Unloaded);
    assert!(registry.transition(&key, ModuleState::Registered).is_err());
}

#[test]
fn unknown_keys_are_not_registered() {
    let mut registry = registry(&[("m", "1.0.0", &[])]);
    let missing = key("m", "2.0.0");
    let expected = RegistryError::NotRegistered {
        key: missing.clone(),
    };
    assert_eq!(
        registry.transition(&missing, ModuleState::Loading),
        Err(expected.clone())
    );
    assert_eq!(registry.attach(&missing, ()), Err(expected.clone()));
    assert_eq!(registry.detach(&missing), Err(expected.clone()));
    assert_eq!(registry.unregister(&missing), Err(expected.clone()));
    assert_eq!(expected.to_string(), "m@2.0.0: not registered");
    assert!(registry.get(&missing).is_none());
}

#[test]
fn unregister_only_when_nothing_runs() {
    for state in all_states() {
        let (mut registry, key) = one_in(&state);
        let result = registry.unregister(&key);
        if state.is_removable() {
            let entry = result.unwrap();
            assert_eq!(entry.state(), &state);
            assert!(registry.get(&key).is_none());
            assert!(registry.is_empty());
            assert_eq!(registry.versions("m").count(), 0);
            // The name is free again.
            registry.register(manifest("m", "1.0.0", &[])).unwrap();
        } else {
            let error = result.unwrap_err();
            assert_eq!(
                error,
                RegistryError::NotRemovable {
                    key: key.clone(),
                    state: state.clone()
                }
            );
            assert!(error.to_string().contains("cannot unregister while"));
            assert_eq!(registry.get(&key).unwrap().state(), &state);
        }
    }
    let removable: Vec<&str> = all_states()
        .iter()
        .filter(|s| s.is_removable())
        .map(ModuleState::name)
        .collect();
    assert_eq!(removable, ["Registered", "Failed", "Unloaded"]);
}

#[test]
fn payloads_survive_transitions_and_come_back_on_unregister() {
    let mut registry = ModuleRegistry::<Vec<u8>>::new();
    let key = registry.register(manifest("m", "1.0.0", &[])).unwrap();
    registry.transition(&key, ModuleState::Loading).unwrap();
    assert_eq!(registry.attach(&key, vec![1]), Ok(None));
    assert_eq!(registry.attach(&key, vec![2]), Ok(Some(vec![1])));
    registry.transition(&key, ModuleState::Ready).unwrap();
    registry.transition(&key, ModuleState::Unloading).unwrap();
    registry.transition(&key, ModuleState::Unloaded).unwrap();
    assert_eq!(registry.get(&key).unwrap().payload(), Some(&vec![2]));
    let (removed, payload) = registry.unregister(&key).unwrap().into_parts();
    assert_eq!(removed.name, "m");
    assert_eq!(payload, Some(vec![2]));

    let key = registry.register(manifest("m", "1.0.0", &[])).unwrap();
    registry.attach(&key, vec![3]).unwrap();
    assert_eq!(registry.detach(&key), Ok(Some(vec![3])));
    assert_eq!(registry.detach(&key), Ok(None));
}

#[test]
fn the_same_name_and_version_twice_is_a_duplicate() {
    let mut registry = registry(&[("ping", "1.0.0", &[])]);
    let error = registry
        .register(manifest("ping", "1.0.0", &[("pong", "^1")]))
        .unwrap_err();
    assert_eq!(
        error,
        RegistryError::Duplicate {
            key: key("ping", "1.0.0")
        }
    );
    assert_eq!(error.to_string(), "ping@1.0.0: already registered");
    // The first registration is untouched.
    let entry = registry.get(&key("ping", "1.0.0")).unwrap();
    assert!(entry.manifest().dependencies.is_empty());
    assert_eq!(registry.len(), 1);
}

#[test]
fn several_versions_of_one_name_coexist() {
    let mut registry = registry(&[("ping", "1.0.0", &[]), ("ping", "2.0.0", &[])]);
    registry.register(manifest("ping", "1.5.0", &[])).unwrap();
    assert_eq!(registry.len(), 3);
    let versions: Vec<String> = registry
        .versions("ping")
        .map(|e| e.key().version.to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "1.5.0", "2.0.0"]);
    // Each has its own state.
    registry
        .transition(&key("ping", "1.5.0"), ModuleState::Loading)
        .unwrap();
    assert_eq!(
        registry.get(&key("ping", "1.0.0")).unwrap().state(),
        &ModuleState::Registered
    );
    let all: Vec<String> = registry.iter().map(|e| e.key().to_string()).collect();
    assert_eq!(all, ["ping@1.0.0", "ping@1.5.0", "ping@2.0.0"]);
}

#[test]
fn lookup_picks_the_highest_matching_version() {
    let registry = registry(&[
        ("db", "1.2.0", &[]),
        ("db", "1.10.0", &[]),
        ("db", "1.0.0", &[]),
        ("db", "2.0.0", &[]),
        ("db", "2.1.0-beta.1", &[]),
    ]);
    let found = |text: &str| {
        registry
            .lookup("db", &requirement(text))
            .map(|e| e.key().version.to_string())
    };
    // Numeric, not lexical: 1.10.0 > 1.2.0.
    assert_eq!(found("^1").as_deref(), Some("1.10.0"));
    assert_eq!(found("~1.2").as_deref(), Some("1.2.0"));
    assert_eq!(found("=1.0.0").as_deref(), Some("1.0.0"));
    assert_eq!(found("<1.2").as_deref(), Some("1.0.0"));
    // A plain requirement never picks a pre-release.
    assert_eq!(found("^2").as_deref(), Some("2.0.0"));
    assert_eq!(found(">=2.1.0-beta").as_deref(), Some("2.1.0-beta.1"));
    assert_eq!(found(">=3"), None);
    assert!(registry.lookup("cache", &requirement("*")).is_none());
    // `latest` is the highest version outright.
    assert_eq!(
        registry.latest("db").unwrap().key(),
        key("db", "2.1.0-beta.1")
    );
    assert!(registry.latest("cache").is_none());
}

#[test]
fn satisfied_dependencies_check_out() {
    let registry = registry(&[
        ("app", "1.0.0", &[("db", "^1"), ("log", ">=0.2")]),
        ("db", "1.4.0", &[("log", "0.3")]),
        // An older version satisfies a requirement the latest does not.
        ("db", "2.0.0", &[]),
        ("log", "0.3.1", &[]),
    ]);
    assert_eq!(registry.check_dependencies(), Ok(()));
    assert_eq!(ModuleRegistry::<()>::new().check_dependencies(), Ok(()));
}

#[test]
fn a_missing_dependency_is_named() {
    let registry = registry(&[("app", "1.0.0", &[("db", "^1")])]);
    let errors = registry.check_dependencies().unwrap_err();
    assert_eq!(
        errors,
        [RegistryError::MissingDependency {
            module: key("app", "1.0.0"),
            dependency: "db".into(),
            requirement: requirement("^1"),
        }]
    );
    assert_eq!(
        errors[0].to_string(),
        "app@1.0.0: dependencies.db: requires ^1, but no module named \"db\" is registered"
    );
}

#[test]
fn a_version_mismatch_lists_what_is_available() {
    let registry = registry(&[
        ("app", "1.0.0", &[("db", "^2")]),
        ("db", "1.4.0", &[]),
        ("db", "1.0.0", &[]),
        ("db", "3.0.0", &[]),
    ]);
    let errors = registry.check_dependencies().unwrap_err();
    assert_eq!(
        errors,
        [RegistryError::VersionMismatch {
            module: key("app", "1.0.0"),
            dependency: "db".into(),
            requirement: requirement("^2"),
            available: vec![
                Version::new(1, 0, 0),
                Version::new(1, 4, 0),
                Version::new(3, 0, 0)
            ],
        }]
    );
    assert_eq!(
        errors[0].to_string(),
        "app@1.0.0: dependencies.db: requires ^2, but only 1.0.0, 1.4.0, 3.0.0 are registered"
    );
    let single = self::registry(&[("app", "1.0.0", &[("db", "^2")]), ("db", "1.0.0", &[])]);
    assert!(
        single.check_dependencies().unwrap_err()[0]
            .to_string()
            .ends_with("but only 1.0.0 is registered")
    );
}

#[test]
fn every_failure_of_every_version_is_reported_in_key_order() {
    let registry = registry(&[
        ("b", "1.0.0", &[("x", "*")]),
        ("a", "2.0.0", &[("c", "^1"), ("y", "*")]),
        ("a", "1.0.0", &[("c", "^2")]),
        ("c", "1.0.0", &[]),
    ]);
    let errors = registry.check_dependencies().unwrap_err();
    let described: Vec<String> = errors
        .iter()
        .map(|error| match error {
            RegistryError::MissingDependency {
                module, dependency, ..
            } => format!("{module} missing {dependency}"),
            RegistryError::VersionMismatch {
                module, dependency, ..
            } => format!("{module} mismatch {dependency}"),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        described,
        [
            "a@1.0.0 mismatch c",
            "a@2.0.0 missing y",
            "b@1.0.0 missing x"
        ]
    );
}

fn order_of(registry: &ModuleRegistry) -> Vec<String> {
    registry
        .load_order()
        .unwrap()
        .iter()
        .map(ModuleKey::to_string)
        .collect()
}

#[test]
fn a_diamond_loads_its_base_first_and_its_top_last() {
    let registry = registry(&[
        ("app", "1.0.0", &[("left", "^1"), ("right", "^1")]),
        ("left", "1.0.0", &[("base", "^1")]),
        ("right", "1.0.0", &[("base", "^1")]),
        ("base", "1.0.0", &[]),
    ]);
    assert_eq!(
        order_of(&registry),
        ["base@1.0.0", "left@1.0.0", "right@1.0.0", "app@1.0.0"]
    );
    assert_eq!(registry.load_order(), registry.load_order());
}

#[test]
fn ties_go_to_the_smallest_name_whose_dependencies_are_loaded() {
    // `a` waits for `z`; `b` is free, so it goes first.
    let registry = registry(&[
        ("z", "1.0.0", &[]),
        ("a", "1.0.0", &[("z", "*")]),
        ("b", "1.0.0", &[]),
    ]);
    assert_eq!(order_of(&registry), ["b@1.0.0", "z@1.0.0", "a@1.0.0"]);
    assert_eq!(order_of(&ModuleRegistry::new()), Vec::<String>::new());
}

#[test]
fn load_order_takes_the_latest_of_each_name_and_what_it_resolves_to() {
    let registry = registry(&[
        // Only the latest `app` is loaded, so its old broken dependency
        // does not matter.
        ("app", "1.0.0", &[("gone", "*")]),
        ("app", "2.0.0", &[("db", "^1")]),
        ("db", "1.0.0", &[]),
        ("db", "1.1.0", &[]),
        ("db", "2.0.0", &[]),
    ]);
    assert_eq!(order_of(&registry), ["db@1.1.0", "app@2.0.0", "db@2.0.0"]);
}

#[test]
fn load_order_fails_on_an_unresolved_dependency() {
    let missing = registry(&[("app", "1.0.0", &[("db", "^1")])]);
    assert!(matches!(
        missing.load_order(),
        Err(RegistryError::MissingDependency { dependency, .. }) if dependency == "db"
    ));
    let mismatch = registry(&[("app", "1.0.0", &[("db", "^1")]), ("db", "2.0.0", &[])]);
    assert!(matches!(
        mismatch.load_order(),
        Err(RegistryError::VersionMismatch { available, .. }) if available == [Version::new(2, 0, 0)]
    ));
}

#[test]
fn a_self_dependency_cannot_even_be_written() {
    let error = Manifest::parse(
        r#"{"name":"a","version":"1.0.0","entry_point":"main","runtime":"wasm32","dependencies":{"a":"*"}}"#,
    )
    .unwrap_err();
    assert_eq!(error.field, "dependencies.a");
}

fn cycle_of(registry: &ModuleRegistry) -> Vec<String> {
    match registry.load_order() {
        Err(RegistryError::Cycle(names)) => names,
        other => panic!("expected a cycle, got {other:?}"),
    }
}

#[test]
fn a_two_module_cycle_is_named() {
    let registry = registry(&[("b", "1.0.0", &[("a", "*")]), ("a", "1.0.0", &[("b", "*")])]);
    assert_eq!(cycle_of(&registry), ["a", "b", "a"]);
    assert_eq!(
        registry.load_order().unwrap_err().to_string(),
        "dependency cycle: a -> b -> a"
    );
}

#[test]
fn a_three_module_cycle_is_named_in_dependency_order() {
    // c needs a, a needs b, b needs c: reported from the smallest name.
    let registry = registry(&[
        ("c", "1.0.0", &[("a", "*")]),
        ("a", "1.0.0", &[("b", "*")]),
        ("b", "1.0.0", &[("c", "*")]),
    ]);
    assert_eq!(cycle_of(&registry), ["a", "b", "c", "a"]);
}

#[test]
fn a_cycle_behind_other_modules_is_named_without_them() {
    // `app` and `tool` are stuck because of the cycle but not on it; `base`
    // loads fine.
    let registry = registry(&[
        ("app", "1.0.0", &[("tool", "*"), ("base", "*")]),
        ("tool", "1.0.0", &[("y", "*")]),
        ("x", "1.0.0", &[("base", "*"), ("y", "*")]),
        ("y", "1.0.0", &[("z", "*")]),
        ("z", "1.0.0", &[("x", "*")]),
        ("base", "1.0.0", &[]),
    ]);
    assert_eq!(cycle_of(&registry), ["x", "y", "z", "x"]);
}

// Property tests: random dependency graphs over `n` modules.

/// A graph: module names, and for each module the indices it depends on.
#[derive(Debug, Clone)]
struct Graph {
    names: Vec<String>,
    needs: Vec<BTreeSet<usize>>,
}

impl Graph {
    fn registry(&self) -> ModuleRegistry {
        let mut registry = ModuleRegistry::new();
        for (index, needs) in self.needs.iter().enumerate() {
            let dependencies: Vec<(&str, &str)> = needs
                .iter()
                .map(|&dependency| (self.names[dependency].as_str(), "^1"))
                .collect();
            registry
                .register(manifest(&self.names[index], "1.0.0", &dependencies))
                .unwrap();
        }
        registry
    }

    fn by_name(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        self.needs
            .iter()
            .enumerate()
            .map(|(index, needs)| {
                let needs = needs.iter().map(|&d| self.names[d].as_str()).collect();
                (self.names[index].as_str(), needs)
            })
            .collect()
    }

    /// Reference check: repeatedly remove modules with no remaining
    /// dependencies.
    fn is_acyclic(&self) -> bool {
        let mut left: BTreeSet<usize> = (0..self.needs.len()).collect();
        while let Some(&free) = left
            .iter()
            .find(|&&i| self.needs[i].iter().all(|d| !left.contains(d)))
        {
            left.remove(&free);
        }
        left.is_empty()
    }
}

/// Names `m00..` shuffled, so that name order is unrelated to edge
/// direction.
fn names(n: usize) -> impl Strategy<Value = Vec<String>> {
    Just((0..n).map(|i| format!("m{i:02}")).collect::<Vec<_>>()).prop_shuffle()
}

/// Edges only from a higher to a lower index: acyclic.
fn dag() -> impl Strategy<Value = Graph> {
    (1usize..12).prop_flat_map(|n| {
        let edges = proptest::collection::vec((0..n, 0..n), 0..3 * n);
        (names(n), edges).prop_map(move |(names, edges)| {
            let mut needs = vec![BTreeSet::new(); n];
            for (a, b) in edges {
                if a != b {
                    needs[a.max(b)].insert(a.min(b));
                }
            }
            Graph { names, needs }
        })
    })
}

/// A DAG plus a chain `hi → hi-1 → … → lo` and the back edge `lo → hi`:
/// certainly cyclic.
fn cyclic() -> impl Strategy<Value = Graph> {
    dag()
        .prop_filter("a cycle needs two modules", |g| g.names.len() >= 2)
        .prop_flat_map(|graph| {
            let n = graph.names.len();
            (Just(graph), 0..n, 0..n)
        })
        .prop_filter_map("two distinct ends", |(mut graph, a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            if lo == hi {
                return None;
            }
            for i in lo + 1..=hi {
                graph.needs[i].insert(i - 1);
            }
            graph.needs[lo].insert(hi);
            Some(graph)
        })
}

/// Any edges but self-loops.
fn any_graph() -> impl Strategy<Value = Graph> {
    (1usize..10).prop_flat_map(|n| {
        let edges = proptest::collection::vec((0..n, 0..n), 0..2 * n);
        (names(n), edges).prop_map(move |(names, edges)| {
            let mut needs = vec![BTreeSet::new(); n];
            for (a, b) in edges {
                if a != b {
                    needs[a].insert(b);
                }
            }
            Graph { names, needs }
        })
    })
}

/// Every module exactly once, dependencies first, and at each step the
/// smallest ready name.
fn check_order(graph: &Graph, order: &[ModuleKey]) -> Result<(), TestCaseError> {
    let needs = graph.by_name();
    prop_assert_eq!(order.len(), graph.names.len());
    let mut loaded: BTreeSet<&str> = BTreeSet::new();
    for key in order {
        prop_assert_eq!(&key.version, &Version::new(1, 0, 0));
        let ready: BTreeSet<&str> = needs
            .iter()
            .filter(|(name, deps)| !loaded.contains(*name) && deps.is_subset(&loaded))
            .map(|(name, _)| *name)
            .collect();
        prop_assert_eq!(
            ready.first().copied(),
            Some(key.name.as_str()),
            "{} loaded while {:?} were ready",
            key,
            ready
        );
        prop_assert!(loaded.insert(key.name.as_str()), "{} twice", key);
    }
    Ok(())
}

/// A closed loop of distinct modules, each depending on the next.
fn check_cycle(graph: &Graph, cycle: &[String]) -> Result<(), TestCaseError> {
    let needs = graph.by_name();
    prop_assert!(cycle.len() >= 3, "{:?}", cycle);
    prop_assert_eq!(cycle.first(), cycle.last());
    let members: BTreeSet<&String> = cycle[1..].iter().collect();
    prop_assert_eq!(members.len(), cycle.len() - 1, "{:?} repeats", cycle);
    prop_assert_eq!(members.first().copied(), cycle.first());
    for pair in cycle.windows(2) {
        prop_assert!(
            needs[pair[0].as_str()].contains(pair[1].as_str()),
            "{} does not depend on {} in {:?}",
            pair[0],
            pair[1],
            cycle
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn a_dag_loads_every_module_once_dependencies_first(graph in dag()) {
        let registry = graph.registry();
        prop_assert_eq!(registry.check_dependencies(), Ok(()));
        let order = registry.load_order().unwrap();
        check_order(&graph, &order)?;
        prop_assert_eq!(registry.load_order().unwrap(), order);
    }

    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(graph in cyclic()) {
        match graph.registry().load_order() {
            Err(RegistryError::Cycle(cycle)) => check_cycle(&graph, &cycle)?,
            other => prop_assert!(false, "expected a cycle, got {:?}", other),
        }
    }

    #[test]
    fn any_graph_is_ordered_or_has_a_real_cycle(graph in any_graph()) {
        match graph.registry().load_order() {
            Ok(order) => {
                prop_assert!(graph.is_acyclic());
                check_order(&graph, &order)?;
            }
            Err(RegistryError::Cycle(cycle)) => {
                prop_assert!(!graph.is_acyclic());
                check_cycle(&graph, &cycle)?;
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}
