//! Tests for the capability engine: scopes and rights, checks, delegation and
//! attenuation, revocation, limits, tokens, the audit trail, and property tests
//! of the derivation tree.

use super::CapError::*;
use super::*;
use proptest::prelude::*;

const KEY: [u8; 32] = [7; 32];
const RWD: Rights = Rights::READ.union(Rights::WRITE).union(Rights::DELEGATE);
const RWDR: Rights = RWD.union(Rights::REVOKE);

fn pid(index: u32) -> Pid {
    Pid::new(index, 1)
}

fn file(rights: Rights) -> Capability {
    Capability::new(Resource::File, rights, Scope::All)
}

fn scoped(rights: Rights, scope: Scope) -> Capability {
    Capability::new(Resource::File, rights, scope)
}

fn window(not_before: Option<u64>, expires_at: Option<u64>, max: Option<u64>) -> Validity {
    Validity {
        not_before,
        expires_at,
        max_uses: max,
    }
}

fn uses(max: u64) -> Validity {
    window(None, None, Some(max))
}

fn prefixes(list: &[&str]) -> Scope {
    Scope::prefixes(list.iter().copied()).unwrap()
}

fn names(list: &[&str]) -> Scope {
    Scope::names(list.iter().copied())
}

/// The engine with short helpers: processes by index, time 0 unless
/// given, file capabilities, and `READ` checks.
struct World(CapabilityEngine);

impl World {
    fn new() -> World {
        World(CapabilityEngine::new(KEY))
    }

    fn grant(&mut self, holder: u32, capability: Capability) -> Handle {
        self.0.grant(pid(holder), capability, 0).unwrap()
    }

    fn give(&mut self, from: u32, handle: Handle, to: u32, narrowed: Capability) -> Handle {
        self.try_give(from, handle, to, narrowed).unwrap()
    }

    fn try_give(
        &mut self,
        from: u32,
        handle: Handle,
        to: u32,
        narrowed: Capability,
    ) -> Result<Handle, CapError> {
        self.0.delegate(pid(from), handle, pid(to), narrowed, 0)
    }

    fn read(&mut self, holder: u32, handle: Handle, item: Option<&str>) -> Result<(), CapError> {
        self.read_at(holder, handle, item, 0)
    }

    fn read_at(
        &mut self,
        holder: u32,
        handle: Handle,
        item: Option<&str>,
        now: u64,
    ) -> Result<(), CapError> {
        let file = &Resource::File;
        self.0
            .check(pid(holder), handle, file, Rights::READ, item, now)
    }

    fn info(&self, holder: u32, handle: Handle) -> CapabilityInfo {
        self.0.inspect(pid(holder), handle).unwrap()
    }
}

#[test]
fn resource_kinds_match_the_abi() {
    let pairs = [
        (Resource::Memory, ResourceKind::Memory),
        (Resource::Channel, ResourceKind::Channel),
        (Resource::File, ResourceKind::File),
        (Resource::Database, ResourceKind::Database),
        (Resource::Process, ResourceKind::Process),
        (Resource::AuditLog, ResourceKind::AuditLog),
        (Resource::Config, ResourceKind::Config),
        (Resource::Timer, ResourceKind::Timer),
        (Resource::Network, ResourceKind::Network),
        (Resource::Custom("payments".into()), ResourceKind::Custom),
    ];
    for (resource, kind) in pairs {
        assert_eq!(resource.kind(), kind);
    }
}

#[test]
fn prefixes_must_be_normalized() {
    let bad = [
        "", "../x", "a/../b", "a/..", "./a", "a/./b", "/abs", "a//b", "a/", "a\\b", "a\0b",
    ];
    for prefix in bad {
        assert_eq!(Scope::prefixes([prefix]).unwrap_err().prefix, prefix);
    }
    for prefix in ["data", "data/reports", "a.b/c..d", "x/.hidden"] {
        assert!(Scope::prefixes([prefix]).is_ok(), "{prefix}");
    }
    assert!(
        PathPrefixes::new(["ok", "../x"]).is_err(),
        "one bad prefix spoils the set"
    );
}

#[test]
fn prefix_scope_respects_slash_boundaries() {
    let scope = prefixes(&["data", "logs/app"]);
    for inside in ["data", "data/x", "data/x/y", "logs/app", "logs/app/today"] {
        assert!(scope.contains(inside), "{inside}");
    }
    let outside = [
        "database/x",
        "database",
        "dat",
        "logs",
        "logs/application",
        "data/../secret",
        "/data/x",
        "data//x",
        "data/",
        "data/./x",
        "",
        "other",
    ];
    for item in outside {
        assert!(!scope.contains(item), "{item}");
    }
}

#[test]
fn names_scope_is_exact_and_all_contains_everything() {
    let scope = names(&["pong", "db"]);
    assert!(scope.contains("pong"));
    assert!(!scope.contains("pon"));
    assert!(!scope.contains("pong/x"));
    assert!(Scope::All.contains("anything/at/../all"));
    assert!(!names(&[]).contains(""));
}

#[test]
fn scope_subset_rules() {
    let (all, data, data_x) = (Scope::All, prefixes(&["data"]), prefixes(&["data/x"]));
    let (two, ab, a) = (
        prefixes(&["data", "logs"]),
        names(&["a", "b"]),
        names(&["a"]),
    );
    let paths = names(&["data/x", "data"]);
    let cases = [
        (&all, &all, true),
        (&data, &all, true),
        (&ab, &all, true),
        (&all, &data, false),
        (&all, &ab, false),
        (&a, &ab, true),
        (&ab, &a, false),
        (&data_x, &data, true),
        (&data, &data_x, false),
        (&data, &two, true),
        (&two, &data, false),
        (&prefixes(&["database"]), &data, false),
        (&paths, &data, true),
        (&names(&["database"]), &data, false),
        (&names(&["data/../etc"]), &data, false),
        (&data, &paths, false),
        (&names(&[]), &data, true),
        (&prefixes(&[]), &ab, true),
        (&names(&[]), &names(&[]), true),
    ];
    for (i, (small, big, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            small.is_subset_of(big),
            expected,
            "case {i}: {small:?} ⊆ {big:?}"
        );
    }
}

#[test]
fn check_succeeds_and_counts_a_use() {
    let mut world = World::new();
    let handle = world.grant(1, scoped(Rights::READ, prefixes(&["data"])));
    assert_eq!(handle, Handle(1), "handle numbers start at 1");
    assert_eq!(world.read(1, handle, Some("data/a")), Ok(()));
    assert_eq!(world.read(1, handle, Some("data/b")), Ok(()));
    assert_eq!(world.info(1, handle).uses, 2);
}

#[test]
fn every_check_error_variant() {
    let mut world = World::new();
    let in_data = world.grant(1, scoped(Rights::READ, prefixes(&["data"])));
    let timed = Capability::new(Resource::Timer, Rights::READ, Scope::All);
    let timed = world.grant(1, timed.with_validity(window(Some(10), Some(20), Some(1))));
    let revoked = world.grant(1, file(Rights::READ | Rights::REVOKE));
    world.0.revoke(pid(1), revoked, 0).unwrap();
    let engine = &mut world.0;
    let mut check = |handle, resource: Resource, right, item, now| {
        engine.check(pid(1), handle, &resource, right, item, now)
    };
    let (read, timer) = (Rights::READ, Resource::Timer);
    let data = Some("data");
    assert_eq!(
        check(Handle(0), Resource::File, read, data, 0),
        Err(InvalidHandle)
    );
    assert_eq!(
        check(Handle(99), Resource::File, read, data, 0),
        Err(InvalidHandle)
    );
    assert_eq!(
        check(in_data, Resource::Database, read, data, 0),
        Err(WrongResource)
    );
    assert_eq!(
        check(in_data, Resource::File, Rights::WRITE, data, 0),
        Err(MissingRight)
    );
    assert_eq!(
        check(in_data, Resource::File, read | Rights::WRITE, data, 0),
        Err(MissingRight)
    );
    assert_eq!(
        check(in_data, Resource::File, read, Some("database/x"), 0),
        Err(OutOfScope)
    );
    let whole = check(in_data, Resource::File, read, None, 0);
    assert_eq!(
        whole,
        Err(OutOfScope),
        "the resource as a whole needs Scope::All"
    );
    assert_eq!(check(revoked, Resource::File, read, None, 0), Err(Revoked));
    assert_eq!(check(timed, timer.clone(), read, None, 9), Err(NotYetValid));
    assert_eq!(
        check(timed, timer.clone(), read, None, 20),
        Err(Expired),
        "end is exclusive"
    );
    assert_eq!(
        check(timed, timer.clone(), read, None, 10),
        Ok(()),
        "start is inclusive"
    );
    assert_eq!(check(timed, timer, read, None, 11), Err(UsedUp));
    let stranger = world
        .0
        .check(pid(2), in_data, &Resource::File, read, data, 0);
    assert_eq!(
        stranger,
        Err(InvalidHandle),
        "another process's handle names nothing"
    );
    assert_eq!(world.info(1, timed).uses, 1, "denials count no use");
    assert_eq!(world.info(1, in_data).uses, 0);
}

#[test]
fn custom_resources_match_by_name() {
    let mut world = World::new();
    let payments = Resource::Custom("payments".into());
    let handle = world.grant(
        1,
        Capability::new(payments.clone(), Rights::READ, Scope::All),
    );
    let mut check = |resource| {
        world
            .0
            .check(pid(1), handle, &resource, Rights::READ, None, 0)
    };
    assert_eq!(check(payments), Ok(()));
    assert_eq!(
        check(Resource::Custom("payroll".into())),
        Err(WrongResource)
    );
}

#[test]
fn error_codes() {
    assert_eq!(InvalidHandle.code(), ErrorCode::INVALID_HANDLE);
    assert_eq!(WrongResource.code(), ErrorCode::INVALID_HANDLE);
    let denied = [
        MissingRight,
        OutOfScope,
        NotYetValid,
        Expired,
        UsedUp,
        Revoked,
        NotAnAttenuation("rights".into()),
        BadToken,
    ];
    for error in denied {
        assert_eq!(error.code(), ErrorCode::PERMISSION_DENIED, "{error}");
    }
    assert_eq!(LimitReached("x").code(), ErrorCode::LIMIT_REACHED);
}

#[test]
fn delegation_attenuates_and_records_the_parent() {
    let mut world = World::new();
    let root = world.grant(1, scoped(RWD, prefixes(&["data"])));
    let child = world.give(
        1,
        root,
        2,
        scoped(Rights::READ, prefixes(&["data/reports"])),
    );
    assert_eq!(world.read(2, child, Some("data/reports/q1")), Ok(()));
    assert_eq!(world.read(2, child, Some("data/other")), Err(OutOfScope));
    assert_eq!(
        world.try_give(2, child, 3, file(Rights::READ)),
        Err(MissingRight)
    );
    let (info, root_info) = (world.info(2, child), world.info(1, root));
    assert_eq!(
        (info.parent, info.depth, info.holder),
        (Some(root_info.id), 1, pid(2))
    );
    assert_eq!((root_info.parent, root_info.depth), (None, 0));
    assert_eq!(root_info.uses, 1, "a child's use counts against its parent");
    assert_eq!(
        info.uses_left, None,
        "an unlimited source gives unlimited copies"
    );
    let same = root_info.capability;
    assert!(
        world.try_give(1, root, 3, same).is_ok(),
        "an identical copy attenuates"
    );
}

#[test]
fn delegation_needs_the_delegate_right_and_a_live_source() {
    let mut world = World::new();
    let plain = world.grant(1, file(Rights::READ));
    assert_eq!(
        world.try_give(1, plain, 2, file(Rights::READ)),
        Err(MissingRight)
    );
    assert_eq!(
        world.try_give(2, plain, 3, file(Rights::READ)),
        Err(InvalidHandle)
    );

    let limits = window(Some(10), Some(20), Some(1));
    let timed = world.grant(1, file(RWD).with_validity(limits));
    let inside = file(Rights::READ).with_validity(limits);
    let give_at =
        |world: &mut World, now| world.0.delegate(pid(1), timed, pid(2), inside.clone(), now);
    assert_eq!(give_at(&mut world, 5), Err(NotYetValid));
    assert_eq!(give_at(&mut world, 20), Err(Expired));
    world.read_at(1, timed, None, 15).unwrap();
    assert_eq!(give_at(&mut world, 15), Err(UsedUp));

    let revocable = world.grant(1, file(RWDR));
    world.0.revoke(pid(1), revocable, 0).unwrap();
    assert_eq!(
        world.try_give(1, revocable, 2, file(Rights::READ)),
        Err(Revoked)
    );
}

/// An edit to a requested capability.
type Change = dyn Fn(&mut Capability);

#[test]
fn widening_any_part_is_refused_with_its_name() {
    let mut world = World::new();
    let source =
        scoped(RWD, prefixes(&["data"])).with_validity(window(Some(10), Some(100), Some(5)));
    let root = world.grant(1, source.clone());
    let attempt = |world: &mut World, change: &Change| {
        let mut narrowed = source.clone();
        change(&mut narrowed);
        world.0.delegate(pid(1), root, pid(2), narrowed, 50)
    };
    let cases: [(&str, &Change); 10] = [
        ("resource", &|c| c.resource = Resource::Database),
        ("rights", &|c| c.rights = c.rights | Rights::DELETE),
        ("scope", &|c| c.scope = Scope::All),
        ("scope", &|c| c.scope = prefixes(&["database"])),
        ("expires_at", &|c| c.validity.expires_at = Some(101)),
        ("expires_at", &|c| c.validity.expires_at = None),
        ("not_before", &|c| c.validity.not_before = Some(9)),
        ("not_before", &|c| c.validity.not_before = None),
        ("max_uses", &|c| c.validity.max_uses = Some(6)),
        ("max_uses", &|c| c.validity.max_uses = None),
    ];
    for (part, change) in cases {
        match attempt(&mut world, change) {
            Err(NotAnAttenuation(why)) => assert!(why.starts_with(part), "{part}: {why}"),
            other => panic!("{part}: expected NotAnAttenuation, got {other:?}"),
        }
    }
    // Uses already spent shrink what may be delegated.
    for now in 20..23 {
        world.read_at(1, root, Some("data"), now).unwrap();
    }
    let three = attempt(&mut world, &|c| c.validity.max_uses = Some(3));
    assert!(
        matches!(three, Err(NotAnAttenuation(_))),
        "only 2 uses are left"
    );
    assert!(attempt(&mut world, &|c| c.validity.max_uses = Some(2)).is_ok());
    let narrower = attempt(&mut world, &|c| {
        c.rights = Rights::READ;
        c.scope = names(&["data/a"]);
        c.validity = window(Some(60), Some(70), Some(1));
    });
    assert!(narrower.is_ok(), "narrower in every part");
}

#[test]
fn uses_are_shared_down_the_tree() {
    let mut world = World::new();
    let root = world.grant(1, file(RWD).with_validity(uses(3)));
    let a = world.give(1, root, 2, file(Rights::READ).with_validity(uses(3)));
    let b = world.give(1, root, 3, file(Rights::READ).with_validity(uses(3)));
    assert_eq!(world.read(2, a, None), Ok(()));
    assert_eq!(world.read(3, b, None), Ok(()));
    assert_eq!(world.read(1, root, None), Ok(()));
    assert_eq!(
        world.read(2, a, None),
        Err(UsedUp),
        "the root's budget is spent"
    );
    assert_eq!(world.read(1, root, None), Err(UsedUp));
    assert_eq!(world.info(1, root).uses, 3);
    assert_eq!(world.info(2, a).uses_left, Some(0));
}

#[test]
fn revoke_needs_the_right_and_cascades() {
    let mut world = World::new();
    let root = world.grant(1, file(RWDR));
    let other_root = world.grant(1, file(RWDR));
    let a = world.give(1, root, 2, file(RWD));
    let a1 = world.give(2, a, 3, file(Rights::READ));
    let b = world.give(1, root, 3, file(RWDR));
    let unrelated = world.give(1, other_root, 2, file(Rights::READ));

    assert_eq!(
        world.0.revoke(pid(2), a, 1),
        Err(MissingRight),
        "a lacks REVOKE"
    );
    assert_eq!(world.0.revoke(pid(9), root, 1), Err(InvalidHandle));
    assert_eq!(world.0.revoke(pid(1), root, 1), Ok(4));
    for (holder, handle) in [(1, root), (2, a), (3, a1), (3, b)] {
        assert_eq!(world.read(holder, handle, None), Err(Revoked));
        assert!(world.info(holder, handle).revoked);
    }
    assert_eq!(world.read(1, other_root, None), Ok(()));
    assert_eq!(world.read(2, unrelated, None), Ok(()));
    assert_eq!(
        world.0.revoke(pid(1), root, 3),
        Err(Revoked),
        "revoking twice"
    );
    assert_eq!(
        world.0.revoke(pid(3), b, 3),
        Err(Revoked),
        "a revoked REVOKE right is gone"
    );
    let next = world.grant(1, file(Rights::READ));
    assert_eq!(next, Handle(3), "handle numbers are not reused");
    assert_eq!(
        world.read(1, root, None),
        Err(Revoked),
        "the old handle still answers Revoked"
    );
}

#[test]
fn revoke_derived_keeps_the_capability() {
    let mut world = World::new();
    let root = world.grant(1, file(RWDR));
    let child = world.give(1, root, 2, file(RWD));
    let grandchild = world.give(2, child, 3, file(Rights::READ));
    assert_eq!(world.0.revoke_derived(pid(1), root, 1), Ok(2));
    assert_eq!(world.read(1, root, None), Ok(()));
    assert_eq!(world.read(2, child, None), Err(Revoked));
    assert_eq!(world.read(3, grandchild, None), Err(Revoked));
    assert_eq!(world.0.revoke_derived(pid(1), root, 2), Ok(0));
    assert_eq!(world.0.revoke_derived(pid(2), child, 2), Err(Revoked));
}

#[test]
fn close_and_exit_revoke_and_forget() {
    let mut world = World::new();
    let root = world.grant(1, file(RWD));
    let spare = world.grant(1, file(Rights::READ));
    let child = world.give(1, root, 2, file(RWD));
    let grandchild = world.give(2, child, 3, file(Rights::READ));
    let token = world.0.export(pid(1), root, 0).unwrap();

    assert_eq!(
        world.0.close(pid(2), child, 1),
        Ok(2),
        "closing revokes what derives"
    );
    assert_eq!(world.read(2, child, None), Err(InvalidHandle));
    assert_eq!(world.read(3, grandchild, None), Err(Revoked));
    assert_eq!(world.0.close(pid(2), child, 1), Err(InvalidHandle));
    assert_eq!(
        world.0.close(pid(3), grandchild, 1),
        Ok(0),
        "already revoked"
    );
    assert_eq!(
        world.0.nodes.len(),
        2,
        "closed revoked capabilities are forgotten"
    );

    let child = world.give(1, root, 2, file(Rights::READ));
    assert_eq!(world.0.revoke_all_of(pid(1), 3), 3);
    assert!(world.0.handles(pid(1)).is_empty());
    assert_eq!(world.read(1, spare, None), Err(InvalidHandle));
    assert_eq!(world.read(2, child, None), Err(Revoked));
    assert_eq!(
        world.0.redeem(&token, 3),
        Err(Revoked),
        "a forgotten capability's token"
    );
    assert_eq!(world.0.revoke_all_of(pid(1), 3), 0);
    assert_eq!(
        world.0.revoke_all_of(pid(2), 3),
        0,
        "its capability was already revoked"
    );
    assert!(
        world.0.nodes.is_empty() && world.0.tokens.is_empty(),
        "nothing leaks"
    );
}

#[test]
fn the_generation_moves_only_when_a_live_holder_loses_a_capability() {
    let mut world = World::new();
    let lonely = world.grant(1, file(RWD));
    let root = world.grant(2, file(RWD));
    let _child = world.give(2, root, 3, file(Rights::READ));
    let _ = lonely;
    let start = world.0.generation();
    assert_eq!(world.0.revoke_all_of(pid(1), 1), 1);
    assert_eq!(
        world.0.generation(),
        start,
        "an exit that revokes only its own capabilities changes no one else's decisions"
    );
    assert_eq!(world.0.revoke_all_of(pid(2), 2), 2);
    let after_cascade = world.0.generation();
    assert_ne!(
        after_cascade, start,
        "process 3 lost a delegated capability"
    );
    let other = world.grant(4, file(RWD));
    assert_eq!(world.0.close(pid(4), other, 3), Ok(1));
    assert_ne!(
        world.0.generation(),
        after_cascade,
        "closing a handle moves it"
    );
}

#[test]
fn find_picks_the_first_capability_that_allows_the_use() {
    let mut world = World::new();
    let channel = |list| Capability::new(Resource::Channel, Rights::WRITE, names(list));
    world.grant(1, Capability::new(Resource::Timer, Rights::ALL, Scope::All));
    let to_pong = world.grant(1, channel(&["pong"]));
    let until_10 = window(None, Some(10), None);
    let to_db = world.grant(1, channel(&["db"]).with_validity(until_10));
    let mut find = |resource, right, item, now| world.0.find(pid(1), &resource, right, item, now);
    let (write, read) = (Rights::WRITE, Rights::READ);
    assert_eq!(find(Resource::Channel, write, Some("pong"), 0), Ok(to_pong));
    assert_eq!(find(Resource::Channel, write, Some("db"), 0), Ok(to_db));
    let expired = find(Resource::Channel, write, Some("db"), 10);
    assert_eq!(expired, Err(Expired), "the closest refusal");
    assert_eq!(
        find(Resource::Channel, write, Some("logger"), 0),
        Err(OutOfScope)
    );
    assert_eq!(
        find(Resource::Channel, read, Some("pong"), 0),
        Err(MissingRight)
    );
    let network = find(Resource::Network, write, Some("pong"), 0);
    assert_eq!(network, Err(MissingRight), "nothing for that resource");
    assert_eq!(world.info(1, to_db).uses, 1, "find counts a use");
    let nobody = world
        .0
        .find(pid(2), &Resource::Channel, write, Some("pong"), 0);
    assert_eq!(nobody, Err(MissingRight), "no table at all");
}

#[test]
fn find_names_a_revocation_rather_than_an_unrelated_capability() {
    // Process 2 holds a READ channel capability of its own and a WRITE one
    // delegated by process 1, which then revoked it: a write is refused
    // as Revoked (it was MissingRight, from the READ one), and a revoked
    // capability that would not have allowed the use anyway does not win.
    let mut world = World::new();
    let channel = |rights| Capability::new(Resource::Channel, rights, Scope::All);
    world.grant(2, channel(Rights::READ));
    let root = world.grant(
        1,
        channel(Rights::WRITE | Rights::DELEGATE | Rights::REVOKE),
    );
    world.give(1, root, 2, channel(Rights::WRITE));
    assert_eq!(world.0.revoke(pid(1), root, 1), Ok(2));
    let mut find = |right| {
        world
            .0
            .find(pid(2), &Resource::Channel, right, Some("pong"), 0)
    };
    assert_eq!(find(Rights::WRITE), Err(Revoked));
    assert_eq!(find(Rights::DELETE), Err(MissingRight));
}

#[test]
fn inspect_and_handles_describe_the_table() {
    let mut world = World::new();
    let database = |rights, list| Capability::new(Resource::Database, rights, names(list));
    let root = world.grant(1, database(RWDR, &["users", "orders"]));
    let child = world.give(1, root, 2, database(Rights::READ, &["users"]));
    let listed = world.0.handles(pid(2));
    assert_eq!(listed.len(), 1);
    let (handle, info) = &listed[0];
    assert_eq!((*handle, info.handle), (child, child));
    assert_eq!(info.capability, database(Rights::READ, &["users"]));
    assert_eq!((info.depth, info.uses, info.revoked), (1, 0, false));
    world.0.revoke(pid(1), root, 1).unwrap();
    assert!(world.0.handles(pid(2))[0].1.revoked);
    assert!(world.0.handles(pid(7)).is_empty());
    assert_eq!(world.0.inspect(pid(2), Handle(5)), Err(InvalidHandle));
}

#[test]
fn limits_bound_depth_and_tables() {
    let mut world = World::new();
    let mut handle = world.grant(1, file(RWD));
    for depth in 1..=MAX_DEPTH {
        handle = world.give(depth, handle, depth + 1, file(RWD));
    }
    assert_eq!(world.info(MAX_DEPTH + 1, handle).depth, MAX_DEPTH);
    let deeper = world.try_give(MAX_DEPTH + 1, handle, 99, file(RWD));
    assert!(matches!(deeper, Err(LimitReached(_))), "{deeper:?}");

    let mut world = World::new();
    let root = world.grant(1, file(RWD));
    for _ in 1..MAX_HANDLES {
        world.give(1, root, 1, file(Rights::READ));
    }
    let full = world.try_give(1, root, 1, file(Rights::READ));
    assert!(matches!(full, Err(LimitReached(_))), "{full:?}");
    let granted = world.0.grant(pid(1), file(Rights::READ), 0);
    assert!(matches!(granted, Err(LimitReached(_))), "{granted:?}");
    world.0.close(pid(1), Handle(2), 0).unwrap();
    let reopened = world.give(1, root, 1, file(Rights::READ));
    assert_eq!(
        reopened,
        Handle(MAX_HANDLES as u32 + 1),
        "a closed number is not reused"
    );
}

#[test]
fn a_full_table_drops_what_can_never_validate_before_refusing() {
    // Process 1 fills process 2's table with copies, then revokes them:
    // process 2 can still be given a capability, and the revoked handles it
    // lost answer InvalidHandle.
    let mut world = World::new();
    let root = world.grant(1, file(RWDR));
    let spare = world.grant(1, file(RWD));
    let copies: Vec<Handle> = (0..MAX_HANDLES)
        .map(|_| world.give(1, root, 2, file(Rights::READ)))
        .collect();
    let full = world.try_give(1, spare, 2, file(Rights::READ));
    assert!(
        matches!(full, Err(LimitReached(_))),
        "live handles are kept: {full:?}"
    );
    world.0.revoke_derived(pid(1), root, 1).unwrap();
    assert_eq!(
        world.0.handles(pid(2)).len(),
        MAX_HANDLES,
        "listed until needed"
    );
    world.0.drain_audit();
    let given = world.give(1, spare, 2, file(Rights::READ));
    assert_eq!(world.0.handles(pid(2)).len(), 1);
    let closed = world
        .0
        .drain_audit()
        .iter()
        .filter(|e| e.kind == AuditKind::Closed)
        .count();
    assert_eq!(closed, MAX_HANDLES, "each dropped handle is audited");
    assert_eq!(world.read(2, given, Some("x")), Ok(()));
    assert_eq!(world.0.inspect(pid(2), copies[0]), Err(InvalidHandle));

    // Expired and used-up copies are dropped the same way (revoked with
    // the reason in the audit); a not-yet-valid one is kept.
    let mut world = World::new();
    let root = world.grant(1, file(RWD));
    let later = file(Rights::READ).with_validity(window(Some(100), None, None));
    let kept = world.give(1, root, 2, later);
    let expiring = file(Rights::READ).with_validity(window(None, Some(5), None));
    for _ in 1..MAX_HANDLES {
        world.give(1, root, 2, expiring.clone());
    }
    let full = world
        .0
        .delegate(pid(1), root, pid(2), file(Rights::READ), 4);
    assert!(
        matches!(full, Err(LimitReached(_))),
        "not expired yet: {full:?}"
    );
    let given = world
        .0
        .delegate(pid(1), root, pid(2), file(Rights::READ), 5);
    assert!(given.is_ok(), "{given:?}");
    assert_eq!(world.0.handles(pid(2)).len(), 2);
    assert!(world.0.inspect(pid(2), kept).is_ok());
    let audit = world.0.drain_audit();
    assert!(
        audit
            .iter()
            .any(|e| e.detail.to_string().contains("reclaimed")),
        "the reclaim is audited"
    );
}

#[test]
fn tokens_round_trip_and_authenticate() {
    let mut world = World::new();
    let handle = world.grant(1, scoped(RWDR, prefixes(&["data"])));
    let token = world.0.export(pid(1), handle, 1).unwrap();
    let text = token.to_string();
    assert_eq!(text.len(), 32 + 1 + 64);
    assert_eq!(Token::parse(&text), Ok(token.clone()));
    assert_eq!(text.parse::<Token>(), Ok(token.clone()));
    assert!(
        !format!("{token:?}").contains(&text[33..]),
        "Debug hides the MAC"
    );

    let info = world.0.redeem(&token, 2).unwrap();
    assert_eq!(
        (info.handle, info.uses),
        (handle, 0),
        "redeeming counts no use"
    );
    let use_token = |world: &mut World, token: &Token, item, now| {
        world
            .0
            .check_token(token, &Resource::File, Rights::READ, Some(item), now)
    };
    assert_eq!(use_token(&mut world, &token, "data/x", 2), Ok(()));
    assert_eq!(use_token(&mut world, &token, "etc", 2), Err(OutOfScope));
    assert_eq!(world.info(1, handle).uses, 1);

    let mut wrong_id = token.clone();
    wrong_id.id ^= 1;
    let mut wrong_mac = token.clone();
    wrong_mac.mac[31] ^= 0x80;
    for forged in [&wrong_id, &wrong_mac] {
        assert_eq!(world.0.redeem(forged, 3), Err(BadToken));
        assert_eq!(use_token(&mut world, forged, "data", 3), Err(BadToken));
    }
    let mut stranger = CapabilityEngine::new([8; 32]);
    assert_eq!(stranger.redeem(&token, 3), Err(BadToken), "another key");

    world.0.revoke(pid(1), handle, 4).unwrap();
    assert_eq!(world.0.redeem(&token, 5), Err(Revoked));
    assert_eq!(use_token(&mut world, &token, "data", 5), Err(Revoked));
}

#[test]
fn malformed_tokens_are_bad() {
    let good = Token {
        id: 0xabc,
        mac: [0x5a; 32],
    }
    .to_string();
    assert!(Token::parse(&good).is_ok());
    let bad = [
        String::new(),
        ".".into(),
        good[1..].into(),
        good[..good.len() - 1].into(),
        good.replace('.', ":"),
        good.to_uppercase(),
        format!("+{}", &good[1..]),
        format!("{good}0"),
    ];
    for text in bad {
        assert_eq!(Token::parse(&text), Err(BadToken), "{text:?}");
    }
}

#[test]
fn export_needs_delegate_and_a_live_capability() {
    let mut world = World::new();
    let plain = world.grant(1, file(Rights::READ));
    assert_eq!(world.0.export(pid(1), plain, 0), Err(MissingRight));
    assert_eq!(world.0.export(pid(2), plain, 0), Err(InvalidHandle));
    let expiring = world.grant(1, file(RWD).with_validity(window(None, Some(5), None)));
    assert_eq!(world.0.export(pid(1), expiring, 5), Err(Expired));
    let token = world.0.export(pid(1), expiring, 4).unwrap();
    assert_eq!(world.0.redeem(&token, 5), Err(Expired));
    let again = world.0.export(pid(1), expiring, 4).unwrap();
    assert_ne!(token.id, again.id, "each export is a fresh random id");
}

#[test]
fn grants_delegations_denials_exports_and_revocations_are_audited() {
    let mut world = World::new();
    let engine = &mut world.0;
    let root = engine.grant(pid(1), file(RWDR), 10).unwrap();
    let child = engine
        .delegate(pid(1), root, pid(2), file(Rights::READ), 11)
        .unwrap();
    engine
        .check(pid(2), child, &Resource::File, Rights::READ, None, 12)
        .unwrap();
    let _ = engine.check(pid(2), child, &Resource::File, Rights::WRITE, None, 13);
    let _ = engine.delegate(pid(2), child, pid(3), file(Rights::READ), 14);
    let token = engine.export(pid(1), root, 15).unwrap();
    let _ = engine.redeem(
        &Token {
            mac: [0; 32],
            ..token
        },
        16,
    );
    engine.revoke(pid(1), root, 17).unwrap();
    let _ = engine.revoke(pid(1), root, 18);

    let events = engine.drain_audit();
    let summary: Vec<_> = events.iter().map(|e| (e.at, e.kind, e.holder)).collect();
    let expected = vec![
        (10, AuditKind::Granted, pid(1)),
        (11, AuditKind::Delegated, pid(2)),
        (13, AuditKind::Denied, pid(2)),
        (14, AuditKind::Denied, pid(2)),
        (15, AuditKind::Exported, pid(1)),
        (16, AuditKind::Denied, Pid::KERNEL),
        (17, AuditKind::Revoked, pid(1)),
        (17, AuditKind::Revoked, pid(2)),
        (18, AuditKind::Denied, pid(1)),
    ];
    assert_eq!(summary, expected);
    assert!(
        events[2].detail.to_string().contains("required right"),
        "{}",
        events[2].detail
    );
    assert_eq!(
        events[1].capability,
        Some(engine.inspect(pid(2), child).unwrap().id)
    );
    assert_eq!(events[5].capability, None);
    assert!(
        engine.drain_audit().is_empty(),
        "draining empties the trail"
    );
}

#[test]
fn random_keys_and_debug_output() {
    let mut engine = CapabilityEngine::with_random_key().unwrap();
    let handle = engine.grant(pid(1), file(RWD), 0).unwrap();
    let token = engine.export(pid(1), handle, 0).unwrap();
    assert!(engine.redeem(&token, 0).is_ok());
    assert_eq!(CapabilityEngine::new(KEY).redeem(&token, 0), Err(BadToken));
    let shown = format!("{:?}", CapabilityEngine::new([0xee; 32]));
    assert!(!shown.contains("238"), "the key is not shown: {shown}");
}

/// A random tree shape: node `i + 1` is delegated from an earlier node
/// (the index) to one of four processes.
fn tree() -> impl Strategy<Value = Vec<(prop::sample::Index, u32)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), 1u32..5),
        0..MAX_DEPTH as usize,
    )
}

/// A node of a built tree: its parent's position, holder and handle.
type Built = (Option<usize>, u32, Handle);

/// Grants node 0 to process 1 with every right, then delegates the
/// rest in full.
fn build(world: &mut World, shape: &[(prop::sample::Index, u32)]) -> Vec<Built> {
    let root = world.grant(1, file(Rights::ALL));
    let mut nodes = vec![(None, 1, root)];
    for (i, &(parent, holder)) in shape.iter().enumerate() {
        let parent = parent.index(i + 1);
        let (_, from, handle) = nodes[parent];
        let child = world.give(from, handle, holder, file(Rights::ALL));
        nodes.push((Some(parent), holder, child));
    }
    nodes
}

fn descends_from(nodes: &[Built], node: usize, ancestor: usize) -> bool {
    let mut next = Some(node);
    while let Some(current) = next {
        if current == ancestor {
            return true;
        }
        next = nodes[current].0;
    }
    false
}

proptest! {
    /// Along random delegation chains with random requests, a
    /// delegation either fails or yields rights and scope within the
    /// delegator's (and so within the root's).
    #[test]
    fn delegated_rights_never_exceed_the_delegators(
        root_bits in 0u16..=0xFF,
        root_names in prop::collection::btree_set("[a-e]", 0..5),
        steps in prop::collection::vec(
            (0u16..=0xFF, prop::collection::btree_set("[a-f]", 0..5), any::<bool>()),
            1..12,
        ),
    ) {
        let mut world = World::new();
        let root_rights = Rights::from_bits(root_bits).unwrap();
        let root_scope = Scope::Names(root_names);
        let (mut holder, mut handle) = (1, world.grant(1, scoped(root_rights, root_scope.clone())));
        for (step, (bits, wanted_names, narrow)) in steps.into_iter().enumerate() {
            let source = world.info(holder, handle).capability;
            let mut requested = Rights::from_bits(bits).unwrap();
            if narrow {
                requested = requested.intersection(source.rights);
            }
            let scope = Scope::Names(wanted_names);
            let to = step as u32 + 2;
            match world.try_give(holder, handle, to, scoped(requested, scope.clone())) {
                Ok(child) => {
                    let got = world.info(to, child).capability;
                    prop_assert!(source.rights.contains(Rights::DELEGATE));
                    prop_assert!(source.rights.contains(got.rights));
                    prop_assert!(root_rights.contains(got.rights));
                    prop_assert!(got.scope.is_subset_of(&source.scope));
                    prop_assert!(got.scope.is_subset_of(&root_scope));
                    (holder, handle) = (to, child);
                }
                Err(MissingRight) => prop_assert!(!source.rights.contains(Rights::DELEGATE)),
                Err(NotAnAttenuation(_)) => prop_assert!(
                    !source.rights.contains(requested) || !scope.is_subset_of(&source.scope)
                ),
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    /// After revoking a random node of a random tree, no descendant
    /// validates and every other node still does.
    #[test]
    fn revocation_reaches_exactly_the_descendants(
        shape in tree(),
        revoke_at in any::<prop::sample::Index>(),
    ) {
        let mut world = World::new();
        let nodes = build(&mut world, &shape);
        let target = revoke_at.index(nodes.len());
        let (_, holder, handle) = nodes[target];
        let expected = (0..nodes.len()).filter(|&n| descends_from(&nodes, n, target)).count();
        prop_assert_eq!(world.0.revoke(pid(holder), handle, 1), Ok(expected));
        for (n, &(_, holder, handle)) in nodes.iter().enumerate() {
            let wanted = if descends_from(&nodes, n, target) { Err(Revoked) } else { Ok(()) };
            prop_assert_eq!(world.read(holder, handle, Some("x")), wanted, "node {}", n);
        }
    }

    /// When a random process exits, its handles name nothing, whatever
    /// derives from them is revoked, and everything else still works.
    #[test]
    fn exit_revokes_exactly_what_derives_from_the_exited(
        shape in tree(),
        gone in 1u32..5,
    ) {
        let mut world = World::new();
        let nodes = build(&mut world, &shape);
        let owned: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].1 == gone).collect();
        let under = |n: usize| owned.iter().any(|&o| descends_from(&nodes, n, o));
        let expected = (0..nodes.len()).filter(|&n| under(n)).count();
        prop_assert_eq!(world.0.revoke_all_of(pid(gone), 1), expected);
        for (n, &(_, holder, handle)) in nodes.iter().enumerate() {
            let wanted = match (holder == gone, under(n)) {
                (true, _) => Err(InvalidHandle),
                (false, true) => Err(Revoked),
                (false, false) => Ok(()),
            };
            prop_assert_eq!(world.read(holder, handle, Some("x")), wanted, "node {}", n);
        }
    }

    /// A capability validates exactly inside its window while uses
    /// remain: expired, early or used-up capabilities never validate.
    #[test]
    fn expired_early_or_used_up_never_validates(
        not_before in prop::option::of(0u64..100),
        expires_at in prop::option::of(0u64..100),
        max_uses in prop::option::of(0u64..6),
        times in prop::collection::vec(0u64..120, 1..40),
    ) {
        let mut world = World::new();
        let limits = window(not_before, expires_at, max_uses);
        let handle = world.grant(1, file(Rights::READ).with_validity(limits));
        let mut successes = 0u64;
        for now in times {
            let result = world.read_at(1, handle, None, now);
            let expected = if not_before.is_some_and(|start| now < start) {
                Err(NotYetValid)
            } else if expires_at.is_some_and(|end| now >= end) {
                Err(Expired)
            } else if max_uses.is_some_and(|max| successes >= max) {
                Err(UsedUp)
            } else {
                Ok(())
            };
            prop_assert_eq!(&result, &expected, "at {}", now);
            successes += u64::from(result.is_ok());
        }
        prop_assert_eq!(world.info(1, handle).uses, successes);
    }

    /// Parent and child share the parent's budget: the child never
    /// exceeds its own limit and the two together never exceed the
    /// parent's.
    #[test]
    fn shared_uses_never_exceed_any_limit(
        parent_max in 1u64..8,
        child_percent in 0u64..=100,
        users in prop::collection::vec(any::<bool>(), 0..30),
    ) {
        let mut world = World::new();
        let parent = world.grant(1, file(RWD).with_validity(uses(parent_max)));
        let child_max = parent_max * child_percent / 100;
        let child = world.give(1, parent, 2, file(Rights::READ).with_validity(uses(child_max)));
        let (mut total, mut by_child) = (0u64, 0u64);
        for by_the_child in users {
            let (holder, handle) = if by_the_child { (2, child) } else { (1, parent) };
            let allowed = total < parent_max && (!by_the_child || by_child < child_max);
            let result = world.read(holder, handle, None);
            prop_assert_eq!(&result, &if allowed { Ok(()) } else { Err(UsedUp) });
            if result.is_ok() {
                total += 1;
                by_child += u64::from(by_the_child);
            }
        }
        prop_assert!(total <= parent_max && by_child <= child_max);
    }
}

#[test]
fn audit_details_read_as_the_grant_and_revocation_they_record() {
    let mut engine = CapabilityEngine::new([7; 32]);
    let holder = Pid::new(3, 1);
    let handle = engine
        .grant(
            holder,
            Capability::new(Resource::Channel, Rights::WRITE, Scope::All),
            10,
        )
        .unwrap();
    engine.revoke_all_of(holder, 20);
    let events = engine.drain_audit();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].detail.to_string(),
        format!(
            "root Channel {:?} scope All as handle {}",
            Rights::WRITE,
            handle.0
        )
    );
    assert_eq!(
        events[1].detail,
        AuditDetail::Revoked {
            handle: handle.0,
            derived_from: None,
            reason: RevokeReason::HolderExited,
        }
    );
    assert_eq!(
        events[1].detail.to_string(),
        format!("handle {}: its holder exited", handle.0)
    );
    let derived = AuditDetail::Revoked {
        handle: 4,
        derived_from: events[1].capability,
        reason: RevokeReason::RevokedBy(holder),
    };
    assert_eq!(
        derived.to_string(),
        format!(
            "handle 4: derived from {}, revoked by {holder}",
            events[1].capability.unwrap()
        )
    );
}

#[test]
fn a_process_has_at_most_so_many_live_delegations() {
    // Process 1 hands 4,096 copies to processes 2 and 3 (half each): the
    // next delegation, to anyone, is refused until one of them is revoked.
    let mut world = World::new();
    let root = world.grant(1, file(RWDR));
    let mut copies = Vec::new();
    for i in 0..MAX_LIVE_DELEGATIONS {
        let to = 2 + (i % 2) as u32;
        copies.push((to, world.give(1, root, to, file(Rights::READ))));
    }
    assert_eq!(world.0.live_delegations_of(pid(1)), MAX_LIVE_DELEGATIONS);
    let refused = world.try_give(1, root, 4, file(Rights::READ));
    assert!(matches!(refused, Err(LimitReached(_))), "{refused:?}");
    let (holder, handle) = copies[0];
    world.0.close(pid(holder), handle, 0).unwrap();
    let given = world.give(1, root, 4, file(Rights::READ));
    assert_eq!(world.read(4, given, Some("x")), Ok(()));
    // Revoking what it delegated gives the whole allowance back.
    world.0.revoke_derived(pid(1), root, 0).unwrap();
    assert_eq!(world.0.live_delegations_of(pid(1)), 0);
    world.give(1, root, 4, file(Rights::READ));
}

#[test]
fn expired_delegations_stop_counting_once_the_limit_is_reached() {
    let mut world = World::new();
    let root = world.grant(1, file(RWDR));
    let expiring = file(Rights::READ).with_validity(window(None, Some(5), None));
    let copies: Vec<(u32, Handle)> = (0..MAX_LIVE_DELEGATIONS)
        .map(|i| {
            let to = 2 + (i % 2) as u32;
            (to, world.give(1, root, to, expiring.clone()))
        })
        .collect();
    let early = world
        .0
        .delegate(pid(1), root, pid(4), file(Rights::READ), 4);
    assert!(
        matches!(early, Err(LimitReached(_))),
        "still valid: {early:?}"
    );
    let later = world
        .0
        .delegate(pid(1), root, pid(4), file(Rights::READ), 5)
        .unwrap();
    assert_eq!(world.read_at(4, later, Some("x"), 5), Ok(()));
    let (holder, handle) = copies[0];
    assert!(world.0.inspect(pid(holder), handle).unwrap().revoked);
    assert_eq!(world.0.live_delegations_of(pid(1)), 1);
}

#[test]
fn a_same_state_restart_takes_over_the_table_under_the_same_handles() {
    let mut engine = CapabilityEngine::new(KEY);
    let (old, new, other) = (pid(1), pid(2), pid(3));
    let first = engine.grant(old, file(RWDR), 0).unwrap();
    let second = engine.grant(old, file(Rights::READ), 0).unwrap();
    // What the old process delegated stays valid and counts as the new
    // one's delegation.
    let given = engine
        .delegate(old, first, other, file(Rights::READ), 1)
        .unwrap();
    // Delegated to the new process before the hand-over: kept, numbered
    // after the old handles.
    let early = engine.grant(other, file(RWD), 2).unwrap();
    let early_copy = engine
        .delegate(other, early, new, file(Rights::READ), 3)
        .unwrap();
    assert_eq!(early_copy, Handle(1));
    engine.drain_audit();
    assert_eq!(engine.transfer_table(old, new, 4), 2);
    assert!(engine.handles(old).is_empty());
    let handles: Vec<Handle> = engine.handles(new).into_iter().map(|(h, _)| h).collect();
    assert_eq!(handles, vec![first, second, Handle(3)]);
    engine
        .check(new, first, &Resource::File, Rights::WRITE, None, 5)
        .unwrap();
    engine
        .check(new, Handle(3), &Resource::File, Rights::READ, None, 5)
        .unwrap();
    engine
        .check(other, given, &Resource::File, Rights::READ, None, 5)
        .unwrap();
    assert_eq!(engine.live_delegations_of(old), 0);
    assert_eq!(engine.live_delegations_of(new), 1);
    // The new holder revokes what the old one gave.
    assert_eq!(engine.revoke(new, first, 6).unwrap(), 2);
    assert_eq!(
        engine.check(other, given, &Resource::File, Rights::READ, None, 7),
        Err(Revoked)
    );
    let inherited = engine
        .drain_audit()
        .iter()
        .filter(|e| e.kind == AuditKind::Inherited && e.holder == new)
        .count();
    assert_eq!(inherited, 2);
    // Nothing to take over: nothing moves.
    assert_eq!(engine.transfer_table(pid(9), pid(10), 8), 0);
}
