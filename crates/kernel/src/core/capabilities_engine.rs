//! The capability engine: per-process handle tables over a derivation tree of
//! capabilities, with attenuating delegation, cascading revocation, validity
//! windows, exported tokens and an audit trail. Pure data: no I/O, no WASM.
//!
//! A [`Capability`] grants [`Rights`] on a [`Resource`] within a [`Scope`]
//! during a [`Validity`] window on the kernel clock (nanoseconds). The
//! kernel issues root capabilities with [`CapabilityEngine::grant`]; a holder
//! with the `DELEGATE` right hands narrower copies to other processes with
//! [`CapabilityEngine::delegate`]. Every copy records its parent, so the
//! capabilities form a derivation tree (one tree per grant). Processes name
//! capabilities through [`Handle`]s, small integers indexing their own table
//! (like Zircon handles or seL4 slots); the syscall layer's choke point calls
//! [`CapabilityEngine::check`] or [`CapabilityEngine::find`] before a
//! request reaches a driver.
//!
//! # Invariants
//!
//! 1. **Attenuation.** A delegated capability never allows more than its
//!    source: the same resource, rights ⊆, scope ⊆
//!    ([`Scope::is_subset_of`]), a validity window inside the source's, and
//!    no more uses than the source has left. A request that widens anything
//!    fails with [`CapError::NotAnAttenuation`] naming the part. Uses are
//!    shared down the tree: a use counts against the capability and every
//!    ancestor, so a whole subtree never exceeds its root's `max_uses`.
//! 2. **Cascading revocation.** Revoking a capability revokes everything
//!    derived from it, at once and for good (a revoked capability never has
//!    a live descendant). Closing a handle and process exit
//!    ([`CapabilityEngine::revoke_all_of`]) revoke the same way. A check also
//!    walks the ancestors, so nothing under a revoked node validates.
//! 3. **Validity.** A capability validates only while
//!    `not_before <= now < expires_at` and while it and every ancestor have
//!    uses left. Every successful check counts one use; denials count none.
//! 4. **Tokens.** A capability that leaves the kernel (CLI, bridge, other
//!    nodes) is a [`Token`]: a random 128-bit id and a keyed BLAKE3 MAC of
//!    it. The MAC is verified in constant time on every redemption, before
//!    the id is looked up, and the capability behind it must still validate.
//!    Only the engine holds the key, so tokens cannot be forged; a token of
//!    a revoked capability answers [`CapError::Revoked`].
//! 5. **Handles.** A process can only name capabilities in its own table;
//!    anything else is [`CapError::InvalidHandle`]. Handle numbers start at 1
//!    (0 is never valid) and are never reused within a table: a revoked
//!    capability's handle answers [`CapError::Revoked`] until its holder
//!    closes it, and [`CapError::InvalidHandle`] after. Tables hold at most
//!    [`MAX_HANDLES`] handles and delegation is at most [`MAX_DEPTH`] deep,
//!    so a guest cannot grow kernel memory or check cost without bound.
//! 6. **Audit.** Every grant, delegation, export, revocation and denial
//!    appends an [`AuditEvent`]; the kernel drains them with
//!    [`CapabilityEngine::drain_audit`] into the durable audit log.
//!
//! Tables are keyed by [`Pid`], whose generation changes when a slot is
//! reused, so a new process never inherits an old table. The kernel must call
//! [`CapabilityEngine::revoke_all_of`] when a process exits and must only
//! grant or delegate to live processes; the engine does not know which
//! processes exist.

use estalogic_abi::{ErrorCode, Pid, ResourceKind, Rights};
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The most handles one process's table holds at a time.
pub const MAX_HANDLES: usize = 4_096;

/// The most delegation steps between a capability and its root grant.
pub const MAX_DEPTH: u32 = 16;

/// What a capability refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A region of memory.
    Memory,
    /// Message channels to processes; the scope names their modules or pids.
    Channel,
    /// Files under the scope's directories.
    File,
    /// A document store; the scope names collections.
    Database,
    /// Processes to spawn, signal or inspect.
    Process,
    /// The audit log.
    AuditLog,
    /// Configuration values.
    Config,
    /// Clock and timers.
    Timer,
    /// Network hosts; the scope is a host allow-list.
    Network,
    /// A service-defined resource with its name.
    Custom(String),
}

impl Resource {
    /// The ABI resource kind; every [`Resource::Custom`] is
    /// [`ResourceKind::Custom`].
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Memory => ResourceKind::Memory,
            Resource::Channel => ResourceKind::Channel,
            Resource::File => ResourceKind::File,
            Resource::Database => ResourceKind::Database,
            Resource::Process => ResourceKind::Process,
            Resource::AuditLog => ResourceKind::AuditLog,
            Resource::Config => ResourceKind::Config,
            Resource::Timer => ResourceKind::Timer,
            Resource::Network => ResourceKind::Network,
            Resource::Custom(_) => ResourceKind::Custom,
        }
    }
}

/// A prefix that is not a normalized relative path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scope prefix {prefix:?} is not a normalized relative path: {reason}")]
pub struct ScopeError {
    /// The rejected prefix.
    pub prefix: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks that `path` is normalized: relative, non-empty segments separated
/// by single `/`, no `.` or `..` segment, no `\` and no NUL.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    if path.starts_with('/') {
        return Err("it is absolute (starts with '/')");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("it has an empty segment"),
            "." | ".." => return Err("it has a '.' or '..' segment"),
            _ if segment.contains(['\\', '\0']) => return Err("it contains '\\' or NUL"),
            _ => {}
        }
    }
    Ok(())
}

/// A set of normalized path prefixes; built only by [`PathPrefixes::new`],
/// so every prefix in it is valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathPrefixes(BTreeSet<String>);

impl PathPrefixes {
    /// Builds the set, rejecting any prefix that is empty, absolute, or has
    /// an empty, `.` or `..` segment (or a `\` or NUL).
    pub fn new<I, S>(prefixes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut set = BTreeSet::new();
        for prefix in prefixes {
            let prefix = prefix.into();
            if let Err(reason) = check_path(&prefix) {
                return Err(ScopeError { prefix, reason });
            }
            set.insert(prefix);
        }
        Ok(PathPrefixes(set))
    }

    /// The prefixes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True if the normalized `path` equals a prefix or lies below one
    /// (`prefix + "/" + ...`).
    fn covers(&self, path: &str) -> bool {
        self.0.contains(path)
            || path
                .match_indices('/')
                .any(|(at, _)| self.0.contains(&path[..at]))
    }
}

/// Which items of a resource a capability reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every item, and operations on the resource as a whole.
    All,
    /// Paths: an item is in scope if it is a normalized path equal to a
    /// prefix or below one. `data` covers `data/x` but not `database/x`.
    Prefixes(PathPrefixes),
    /// Exact names: module names, collections, hosts, pids as strings.
    Names(BTreeSet<String>),
}

impl Scope {
    /// A [`Scope::Prefixes`] scope; see [`PathPrefixes::new`].
    pub fn prefixes<I, S>(prefixes: I) -> Result<Scope, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PathPrefixes::new(prefixes).map(Scope::Prefixes)
    }

    /// A [`Scope::Names`] scope.
    pub fn names<I, S>(names: I) -> Scope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Scope::Names(names.into_iter().map(Into::into).collect())
    }

    /// True if `item` is in scope. For prefixes, an item that is not a
    /// normalized path (`data/../x`, `/data`, `data//x`) is never in scope.
    pub fn contains(&self, item: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Names(names) => names.contains(item),
            Scope::Prefixes(prefixes) => check_path(item).is_ok() && prefixes.covers(item),
        }
    }

    /// True if everything `self` reaches, `other` reaches too: `All` only
    /// under `All`; names by set inclusion; each prefix under some prefix of
    /// `other`; names under prefixes if each name is contained. Prefixes
    /// are never under names, except an empty set, which is under
    /// everything.
    pub fn is_subset_of(&self, other: &Scope) -> bool {
        match (self, other) {
            (_, Scope::All) => true,
            (Scope::All, _) => false,
            (Scope::Names(mine), Scope::Names(theirs)) => mine.is_subset(theirs),
            (Scope::Names(mine), Scope::Prefixes(_)) => mine.iter().all(|n| other.contains(n)),
            (Scope::Prefixes(mine), Scope::Prefixes(theirs)) => {
                mine.0.iter().all(|p| theirs.covers(p))
            }
            (Scope::Prefixes(mine), Scope::Names(_)) => mine.0.is_empty(),
        }
    }
}

/// When and how often a capability may be used. Times are on the kernel
/// clock in nanoseconds; `None` means no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Validity {
    /// The first instant the capability is valid.
    pub not_before: Option<u64>,
    /// The first instant it is no longer valid.
    pub expires_at: Option<u64>,
    /// How many successful checks it allows, with its descendants'.
    pub max_uses: Option<u64>,
}

impl Validity {
    /// No time bounds and no use limit.
    pub const UNLIMITED: Validity = Validity {
        not_before: None,
        expires_at: None,
        max_uses: None,
    };

    fn check_time(&self, now: u64) -> Result<(), CapError> {
        if self.not_before.is_some_and(|start| now < start) {
            return Err(CapError::NotYetValid);
        }
        if self.expires_at.is_some_and(|end| now >= end) {
            return Err(CapError::Expired);
        }
        Ok(())
    }
}

/// Rights on a resource within a scope during a validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// What it refers to.
    pub resource: Resource,
    /// What it allows.
    pub rights: Rights,
    /// Which items it reaches.
    pub scope: Scope,
    /// When and how often.
    pub validity: Validity,
}

impl Capability {
    /// A capability with unlimited validity.
    pub fn new(resource: Resource, rights: Rights, scope: Scope) -> Self {
        Capability {
            resource,
            rights,
            scope,
            validity: Validity::UNLIMITED,
        }
    }

    /// The same capability with `validity`.
    pub fn with_validity(self, validity: Validity) -> Self {
        Capability { validity, ..self }
    }
}

/// A slot number in one process's handle table. Meaningless in any other
/// process's table; 0 is never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

/// The engine's internal name for a capability, used in audit events and
/// [`CapabilityInfo`]. Never reused; never given to guests as a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapabilityId(u64);

impl CapabilityId {
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cap#{}", self.0)
    }
}

/// A snapshot of one capability, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityInfo {
    /// The internal id.
    pub id: CapabilityId,
    /// The process whose table holds it.
    pub holder: Pid,
    /// Its handle in the holder's table.
    pub handle: Handle,
    /// Resource, rights, scope and validity.
    pub capability: Capability,
    /// Successful checks of it and of everything derived from it.
    pub uses: u64,
    /// Uses left, counting every ancestor's limit; `None` if unlimited.
    pub uses_left: Option<u64>,
    /// The capability it was delegated from; `None` for a root grant.
    pub parent: Option<CapabilityId>,
    /// Delegation steps from its root grant (0 for a root).
    pub depth: u32,
    /// True if it or an ancestor has been revoked.
    pub revoked: bool,
}

/// Why a capability operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The handle names nothing in the caller's table.
    #[error("no capability at this handle in the caller's table")]
    InvalidHandle,
    /// The capability is for a different resource.
    #[error("the capability is for a different resource")]
    WrongResource,
    /// The capability does not grant the required right.
    #[error("the capability does not grant the required right")]
    MissingRight,
    /// The item is outside the capability's scope.
    #[error("the item is outside the capability's scope")]
    OutOfScope,
    /// The capability's `not_before` is still ahead.
    #[error("the capability is not valid yet")]
    NotYetValid,
    /// The capability's `expires_at` has passed.
    #[error("the capability has expired")]
    Expired,
    /// The capability (or an ancestor) has no uses left.
    #[error("the capability has no uses left")]
    UsedUp,
    /// The capability (or an ancestor) has been revoked.
    #[error("the capability has been revoked")]
    Revoked,
    /// A delegation asked for more than its source holds.
    #[error("not an attenuation: {0}")]
    NotAnAttenuation(String),
    /// The token is malformed or its MAC does not verify.
    #[error("the token is malformed or its MAC does not verify")]
    BadToken,
    /// A bound on handle tables or delegation depth was reached.
    #[error("capability limit reached: {0}")]
    LimitReached(&'static str),
}

impl CapError {
    /// The code a guest sees: `INVALID_HANDLE` for a handle that names
    /// nothing or the wrong resource, `LIMIT_REACHED` for a full table or
    /// too deep a delegation, `PERMISSION_DENIED` for the rest.
    pub const fn code(&self) -> ErrorCode {
        match self {
            CapError::InvalidHandle | CapError::WrongResource => ErrorCode::INVALID_HANDLE,
            CapError::LimitReached(_) => ErrorCode::LIMIT_REACHED,
            _ => ErrorCode::PERMISSION_DENIED,
        }
    }

    /// How close a refused candidate came to allowing a use; [`find`]
    /// reports the closest.
    ///
    /// [`find`]: CapabilityEngine::find
    fn closeness(&self) -> u8 {
        match self {
            CapError::MissingRight => 1,
            CapError::OutOfScope => 2,
            CapError::NotYetValid | CapError::Expired => 3,
            CapError::UsedUp => 4,
            _ => 0,
        }
    }
}

/// A capability that has left the kernel: a random id and its keyed MAC.
/// Written as `<32 hex digits>.<64 hex digits>`, lower case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// A random 128-bit id.
    pub id: u128,
    /// `blake3::keyed_hash(key, id.to_le_bytes())`.
    pub mac: [u8; 32],
}

impl Token {
    /// Parses the written form; anything else is [`CapError::BadToken`].
    pub fn parse(text: &str) -> Result<Token, CapError> {
        fn lower_hex(text: &str, len: usize) -> bool {
            text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        let (id, mac) = text.split_once('.').ok_or(CapError::BadToken)?;
        if !lower_hex(id, 32) || !lower_hex(mac, 64) {
            return Err(CapError::BadToken);
        }
        let id = u128::from_str_radix(id, 16).map_err(|_| CapError::BadToken)?;
        let mut bytes = [0u8; 32];
        for (at, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&mac[2 * at..2 * at + 2], 16).map_err(|_| CapError::BadToken)?;
        }
        Ok(Token { id, mac: bytes })
    }
}

impl FromStr for Token {
    type Err = CapError;

    fn from_str(text: &str) -> Result<Token, CapError> {
        Token::parse(text)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}.", self.id)?;
        self.mac.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Shows the id only: the MAC is the secret half of a bearer credential.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:032x}.<mac>)", self.id)
    }
}

/// What an [`AuditEvent`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// The kernel issued a root capability.
    Granted,
    /// A holder delegated an attenuated copy.
    Delegated,
    /// A check, find, delegation, revocation, export or redemption was
    /// refused.
    Denied,
    /// A capability was revoked (directly, by cascade, closed or at exit).
    Revoked,
    /// A capability left the kernel as a token.
    Exported,
}

/// One entry of the capability audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The kernel clock when it happened.
    pub at: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The process concerned: the new holder for grants and delegations,
    /// the holder for revocations and exports, the caller for denials
    /// ([`Pid::KERNEL`] for a token that names nothing).
    pub holder: Pid,
    /// The capability concerned, if the request named one that exists.
    pub capability: Option<CapabilityId>,
    /// A human-readable account.
    pub detail: String,
}

#[derive(Debug)]
struct Node {
    capability: Capability,
    holder: Pid,
    handle: Handle,
    parent: Option<CapabilityId>,
    children: Vec<CapabilityId>,
    depth: u32,
    uses: u64,
    revoked: bool,
    tokens: Vec<u128>,
}

#[derive(Debug, Default)]
struct Table {
    slots: BTreeMap<Handle, CapabilityId>,
    last: u32,
}

/// What a check asks for.
struct Want<'a> {
    resource: &'a Resource,
    right: Rights,
    item: Option<&'a str>,
}

impl fmt::Display for Want<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} on {:?}", self.right, self.resource)?;
        match self.item {
            Some(item) => write!(f, " item {item:?}"),
            None => f.write_str(" as a whole"),
        }
    }
}

/// The capability tables of every process, the derivation tree behind them,
/// exported tokens and the pending audit events. See the module docs for
/// the invariants.
pub struct CapabilityEngine {
    key: [u8; 32],
    nodes: HashMap<CapabilityId, Node>,
    tables: HashMap<Pid, Table>,
    tokens: HashMap<u128, CapabilityId>,
    next_id: u64,
    fallback_ids: u64,
    audit: Vec<AuditEvent>,
    /// Bumped by every revocation: a positive decision taken at an older
    /// generation may no longer hold.
    generation: u64,
}

/// Counts only: the MAC key never appears in logs.
impl fmt::Debug for CapabilityEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapabilityEngine")
            .field("capabilities", &self.nodes.len())
            .field("tables", &self.tables.len())
            .field("tokens", &self.tokens.len())
            .field("pending_audit", &self.audit.len())
            .finish_non_exhaustive()
    }
}

impl CapabilityEngine {
    /// An empty engine whose tokens are authenticated with `mac_key`.
    pub fn new(mac_key: [u8; 32]) -> Self {
        CapabilityEngine {
            key: mac_key,
            nodes: HashMap::default(),
            tables: HashMap::default(),
            tokens: HashMap::default(),
            next_id: 1,
            fallback_ids: 0,
            audit: Vec::new(),
            generation: 0,
        }
    }

    /// An empty engine with a MAC key from the operating system's random
    /// source.
    pub fn with_random_key() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(CapabilityEngine::new(key))
    }

    /// Issues a root capability to `holder` and returns its handle. Fails
    /// only with [`CapError::LimitReached`] when the holder's table is full.
    pub fn grant(
        &mut self,
        holder: Pid,
        capability: Capability,
        now: u64,
    ) -> Result<Handle, CapError> {
        let summary = format!(
            "root {:?} {:?} scope {:?}",
            capability.resource, capability.rights, capability.scope
        );
        match self.insert(holder, capability, None) {
            Ok((handle, id)) => {
                let detail = format!("{summary} as handle {}", handle.0);
                self.record(now, AuditKind::Granted, holder, Some(id), detail);
                Ok(handle)
            }
            Err(error) => Err(self.denied(now, holder, None, format!("grant {summary}"), error)),
        }
    }

    /// Gives `to` an attenuated copy of `from`'s capability at `handle`.
    ///
    /// The source must be live (not revoked, inside its window, uses left)
    /// and hold `DELEGATE`; `narrowed` must be an attenuation of it
    /// (invariant 1). The copy records the source as its parent.
    pub fn delegate(
        &mut self,
        from: Pid,
        handle: Handle,
        to: Pid,
        narrowed: Capability,
        now: u64,
    ) -> Result<Handle, CapError> {
        let what = || format!("delegate handle {} to {to}", handle.0);
        let id = self
            .lookup(from, handle)
            .map_err(|error| self.denied(now, from, None, what(), error))?;
        let checked = self
            .require(id, Rights::DELEGATE, now)
            .and_then(|()| self.check_attenuation(id, &narrowed))
            .and_then(|()| self.insert(to, narrowed, Some(id)));
        match checked {
            Ok((child_handle, child)) => {
                let detail = format!(
                    "from {from} handle {} ({id}) as handle {}",
                    handle.0, child_handle.0
                );
                self.record(now, AuditKind::Delegated, to, Some(child), detail);
                Ok(child_handle)
            }
            Err(error) => Err(self.denied(now, from, Some(id), what(), error)),
        }
    }

    /// Revokes the capability at `handle` and everything derived from it;
    /// returns how many capabilities were revoked. Needs the `REVOKE` right
    /// on it. The handle stays in the table and answers
    /// [`CapError::Revoked`] until closed.
    pub fn revoke(&mut self, by: Pid, handle: Handle, now: u64) -> Result<usize, CapError> {
        self.revoke_at(by, handle, true, now)
    }

    /// Revokes everything derived from the capability at `handle`, keeping
    /// it; returns how many were revoked. Needs the `REVOKE` right on it.
    pub fn revoke_derived(&mut self, by: Pid, handle: Handle, now: u64) -> Result<usize, CapError> {
        self.revoke_at(by, handle, false, now)
    }

    /// Drops `handle` from `pid`'s table, revoking its capability and
    /// everything derived from it (as exit would); returns how many were
    /// revoked. Needs no right. The number is never reused.
    pub fn close(&mut self, pid: Pid, handle: Handle, now: u64) -> Result<usize, CapError> {
        let id = self.lookup(pid, handle).map_err(|error| {
            self.denied(now, pid, None, format!("close handle {}", handle.0), error)
        })?;
        let revoked = self.revoke_subtree(id, true, "closed by its holder", now);
        if let Some(table) = self.tables.get_mut(&pid) {
            table.slots.remove(&handle);
        }
        self.free(id);
        Ok(revoked)
    }

    /// Process exit: drops `holder`'s table, revoking each of its
    /// capabilities and everything derived from them; returns how many were
    /// revoked.
    pub fn revoke_all_of(&mut self, holder: Pid, now: u64) -> usize {
        let Some(table) = self.tables.remove(&holder) else {
            return 0;
        };
        let revoked = table
            .slots
            .values()
            .map(|&id| self.revoke_subtree(id, true, "its holder exited", now))
            .sum();
        for &id in table.slots.values() {
            self.free(id);
        }
        revoked
    }

    /// Checks that `pid`'s capability at `handle` allows `right` on
    /// `resource` for `item` now, and counts one use. `item: None` asks for
    /// the resource as a whole, which only [`Scope::All`] allows.
    pub fn check(
        &mut self,
        pid: Pid,
        handle: Handle,
        resource: &Resource,
        right: Rights,
        item: Option<&str>,
        now: u64,
    ) -> Result<(), CapError> {
        let want = Want {
            resource,
            right,
            item,
        };
        let what = |want: &Want<'_>| format!("check {want} via handle {}", handle.0);
        let id = match self.lookup(pid, handle) {
            Ok(id) => id,
            Err(error) => return Err(self.denied(now, pid, None, what(&want), error)),
        };
        if let Err(error) = self.validate(id, &want, now) {
            return Err(self.denied(now, pid, Some(id), what(&want), error));
        }
        self.count_use(id);
        Ok(())
    }

    /// Finds the first capability, in handle order, in `pid`'s table that
    /// allows `right` on `resource` for `item` now; counts one use of it.
    /// When none does, the error is the one from the candidate of that
    /// resource that came closest, or [`CapError::MissingRight`] if the
    /// table holds nothing for that resource.
    pub fn find(
        &mut self,
        pid: Pid,
        resource: &Resource,
        right: Rights,
        item: Option<&str>,
        now: u64,
    ) -> Result<Handle, CapError> {
        let want = Want {
            resource,
            right,
            item,
        };
        let mut found = None;
        let mut closest: Option<(CapabilityId, CapError)> = None;
        let no_slots = BTreeMap::new();
        let slots = self.tables.get(&pid).map_or(&no_slots, |t| &t.slots);
        for (&handle, &id) in slots {
            if self.node(id).capability.resource != *resource {
                continue;
            }
            match self.validate(id, &want, now) {
                Ok(()) => {
                    found = Some((handle, id));
                    break;
                }
                Err(error) => {
                    if closest
                        .as_ref()
                        .is_none_or(|(_, best)| error.closeness() > best.closeness())
                    {
                        closest = Some((id, error));
                    }
                }
            }
        }
        if let Some((handle, id)) = found {
            self.count_use(id);
            return Ok(handle);
        }
        let (id, error) = match closest {
            Some((id, error)) => (Some(id), error),
            None => (None, CapError::MissingRight),
        };
        Err(self.denied(now, pid, id, format!("find {want}"), error))
    }

    /// Changes with every revocation (including process exit and closing a
    /// handle). A positive decision about an [unlimited] capability stays
    /// true while the generation is unchanged, so the kernel may cache it.
    ///
    /// [unlimited]: CapabilityEngine::is_unlimited
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True if the capability at `handle` and every ancestor have no time
    /// window and no use limit, and none is revoked: only a revocation can
    /// change a decision about it.
    pub fn is_unlimited(&self, pid: Pid, handle: Handle) -> bool {
        let Ok(id) = self.lookup(pid, handle) else {
            return false;
        };
        !self.is_revoked(id)
            && self.lineage(id).all(|node| {
                node.is_some_and(|node| node.capability.validity == Validity::UNLIMITED)
            })
    }

    /// A snapshot of `pid`'s capability at `handle`, revoked or not.
    pub fn inspect(&self, pid: Pid, handle: Handle) -> Result<CapabilityInfo, CapError> {
        self.lookup(pid, handle).map(|id| self.info(id))
    }

    /// Every handle in `pid`'s table with a snapshot of its capability, in
    /// handle order.
    pub fn handles(&self, pid: Pid) -> Vec<(Handle, CapabilityInfo)> {
        self.tables
            .get(&pid)
            .map(|table| {
                table
                    .slots
                    .iter()
                    .map(|(&handle, &id)| (handle, self.info(id)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Issues a token for `pid`'s capability at `handle`, so it can be used
    /// from outside the kernel. A token carries the capability's full
    /// authority, so this needs the `DELEGATE` right and a live capability;
    /// uses through the token count against it.
    pub fn export(&mut self, pid: Pid, handle: Handle, now: u64) -> Result<Token, CapError> {
        let what = || format!("export handle {}", handle.0);
        let id = self
            .lookup(pid, handle)
            .map_err(|error| self.denied(now, pid, None, what(), error))?;
        if let Err(error) = self.require(id, Rights::DELEGATE, now) {
            return Err(self.denied(now, pid, Some(id), what(), error));
        }
        let token_id = loop {
            let candidate = self.fresh_token_id();
            if !self.tokens.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tokens.insert(token_id, id);
        self.node_mut(id).tokens.push(token_id);
        let detail = format!("handle {} as token {token_id:032x}", handle.0);
        self.record(now, AuditKind::Exported, pid, Some(id), detail);
        Ok(Token {
            id: token_id,
            mac: *self.mac(token_id).as_bytes(),
        })
    }

    /// Verifies `token` (MAC first, in constant time) and that its
    /// capability is live now; returns a snapshot. Counts no use.
    pub fn redeem(&mut self, token: &Token, now: u64) -> Result<CapabilityInfo, CapError> {
        let id = self.verify(token, now, "redeem")?;
        if let Err(error) = self.live(id, now) {
            let holder = self.node(id).holder;
            let what = format!("redeem token {:032x}", token.id);
            return Err(self.denied(now, holder, Some(id), what, error));
        }
        Ok(self.info(id))
    }

    /// [`CapabilityEngine::check`] through a token instead of a handle:
    /// verifies the MAC, then checks the capability and counts one use.
    pub fn check_token(
        &mut self,
        token: &Token,
        resource: &Resource,
        right: Rights,
        item: Option<&str>,
        now: u64,
    ) -> Result<(), CapError> {
        let id = self.verify(token, now, "check")?;
        let want = Want {
            resource,
            right,
            item,
        };
        if let Err(error) = self.validate(id, &want, now) {
            let holder = self.node(id).holder;
            let what = format!("check {want} via token {:032x}", token.id);
            return Err(self.denied(now, holder, Some(id), what, error));
        }
        self.count_use(id);
        Ok(())
    }

    /// Takes the audit events recorded since the last drain, oldest first.
    pub fn drain_audit(&mut self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.audit)
    }

    // ----- internals -----

    fn lookup(&self, pid: Pid, handle: Handle) -> Result<CapabilityId, CapError> {
        self.tables
            .get(&pid)
            .and_then(|table| table.slots.get(&handle))
            .copied()
            .ok_or(CapError::InvalidHandle)
    }

    /// A node named by a table slot or a token; both are removed before
    /// their node is freed.
    fn node(&self, id: CapabilityId) -> &Node {
        self.nodes.get(&id).expect("a referenced capability exists")
    }

    fn node_mut(&mut self, id: CapabilityId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .expect("a referenced capability exists")
    }

    /// The node and its ancestors, nearest first, stopping at a missing
    /// (freed, hence revoked) ancestor, which is reported as `None`.
    fn lineage(&self, id: CapabilityId) -> impl Iterator<Item = Option<&Node>> {
        let mut next = Some(id);
        std::iter::from_fn(move || {
            let current = next?;
            let node = self.nodes.get(&current);
            next = node.and_then(|n| n.parent);
            Some(node)
        })
    }

    fn is_revoked(&self, id: CapabilityId) -> bool {
        self.lineage(id)
            .any(|node| node.is_none_or(|node| node.revoked))
    }

    /// Uses left under the tightest limit on the lineage; `None` if none.
    fn uses_left(&self, id: CapabilityId) -> Option<u64> {
        self.lineage(id)
            .flatten()
            .filter_map(|node| {
                let max = node.capability.validity.max_uses?;
                Some(max.saturating_sub(node.uses))
            })
            .min()
    }

    fn count_use(&mut self, id: CapabilityId) {
        let mut next = Some(id);
        while let Some(node) = next.and_then(|current| self.nodes.get_mut(&current)) {
            node.uses = node.uses.saturating_add(1);
            next = node.parent;
        }
    }

    /// Not revoked, inside its window, uses left.
    fn live(&self, id: CapabilityId, now: u64) -> Result<(), CapError> {
        if self.is_revoked(id) {
            return Err(CapError::Revoked);
        }
        self.node(id).capability.validity.check_time(now)?;
        if self.uses_left(id) == Some(0) {
            return Err(CapError::UsedUp);
        }
        Ok(())
    }

    /// Live and holding `right` (for delegate and export).
    fn require(&self, id: CapabilityId, right: Rights, now: u64) -> Result<(), CapError> {
        if self.is_revoked(id) {
            return Err(CapError::Revoked);
        }
        if !self.node(id).capability.rights.contains(right) {
            return Err(CapError::MissingRight);
        }
        self.live(id, now)
    }

    /// The full check, in order: revoked, resource, right, scope, window,
    /// uses.
    fn validate(&self, id: CapabilityId, want: &Want<'_>, now: u64) -> Result<(), CapError> {
        if self.is_revoked(id) {
            return Err(CapError::Revoked);
        }
        let capability = &self.node(id).capability;
        if capability.resource != *want.resource {
            return Err(CapError::WrongResource);
        }
        if !capability.rights.contains(want.right) {
            return Err(CapError::MissingRight);
        }
        let in_scope = match want.item {
            Some(item) => capability.scope.contains(item),
            None => capability.scope == Scope::All,
        };
        if !in_scope {
            return Err(CapError::OutOfScope);
        }
        self.live(id, now)
    }

    /// Invariant 1: `narrowed` allows nothing the source does not.
    fn check_attenuation(
        &self,
        source: CapabilityId,
        narrowed: &Capability,
    ) -> Result<(), CapError> {
        let held = &self.node(source).capability;
        let widened = |part: String| Err(CapError::NotAnAttenuation(part));
        if narrowed.resource != held.resource {
            return widened(format!(
                "resource {:?} is not the source's {:?}",
                narrowed.resource, held.resource
            ));
        }
        if !held.rights.contains(narrowed.rights) {
            return widened(format!(
                "rights {:?} are not within the source's {:?}",
                narrowed.rights, held.rights
            ));
        }
        if !narrowed.scope.is_subset_of(&held.scope) {
            return widened(format!(
                "scope {:?} is not within the source's {:?}",
                narrowed.scope, held.scope
            ));
        }
        let (wanted, limit) = (narrowed.validity, held.validity);
        if let Some(end) = limit.expires_at
            && wanted.expires_at.is_none_or(|wanted_end| wanted_end > end)
        {
            return widened(format!(
                "expires_at {:?} is later than the source's {end}",
                wanted.expires_at
            ));
        }
        if let Some(start) = limit.not_before
            && wanted
                .not_before
                .is_none_or(|wanted_start| wanted_start < start)
        {
            return widened(format!(
                "not_before {:?} is earlier than the source's {start}",
                wanted.not_before
            ));
        }
        if let Some(left) = self.uses_left(source)
            && wanted.max_uses.is_none_or(|wanted_uses| wanted_uses > left)
        {
            return widened(format!(
                "max_uses {:?} is more than the source's {left} uses left",
                wanted.max_uses
            ));
        }
        Ok(())
    }

    fn insert(
        &mut self,
        holder: Pid,
        capability: Capability,
        parent: Option<CapabilityId>,
    ) -> Result<(Handle, CapabilityId), CapError> {
        let depth = parent.map_or(0, |p| self.node(p).depth + 1);
        if depth > MAX_DEPTH {
            return Err(CapError::LimitReached("delegation is too deep"));
        }
        let table = self.tables.entry(holder).or_default();
        if table.slots.len() >= MAX_HANDLES {
            return Err(CapError::LimitReached("the handle table is full"));
        }
        let number = table.last.checked_add(1).ok_or(CapError::LimitReached(
            "the table's handle numbers are used up",
        ))?;
        table.last = number;
        let handle = Handle(number);
        let id = CapabilityId(self.next_id);
        self.next_id += 1;
        table.slots.insert(handle, id);
        if let Some(parent) = parent {
            self.node_mut(parent).children.push(id);
        }
        self.nodes.insert(
            id,
            Node {
                capability,
                holder,
                handle,
                parent,
                children: Vec::new(),
                depth,
                uses: 0,
                revoked: false,
                tokens: Vec::new(),
            },
        );
        Ok((handle, id))
    }

    fn revoke_at(
        &mut self,
        by: Pid,
        handle: Handle,
        include_self: bool,
        now: u64,
    ) -> Result<usize, CapError> {
        let what = || {
            let target = if include_self {
                ""
            } else {
                "what derives from "
            };
            format!("revoke {target}handle {}", handle.0)
        };
        let id = self
            .lookup(by, handle)
            .map_err(|error| self.denied(now, by, None, what(), error))?;
        let refusal = if self.is_revoked(id) {
            Some(CapError::Revoked)
        } else if !self.node(id).capability.rights.contains(Rights::REVOKE) {
            Some(CapError::MissingRight)
        } else {
            None
        };
        if let Some(error) = refusal {
            return Err(self.denied(now, by, Some(id), what(), error));
        }
        let reason = format!("revoked by {by}");
        Ok(self.revoke_subtree(id, include_self, &reason, now))
    }

    /// Bumps the generation: positive decisions cached by the kernel at an
    /// older generation are stale.
    fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Marks `root` (if `include_root`) and its descendants revoked,
    /// auditing each; returns how many were newly revoked. A node already
    /// revoked has its whole subtree revoked (invariant 2), so it is skipped.
    fn revoke_subtree(
        &mut self,
        root: CapabilityId,
        include_root: bool,
        reason: &str,
        now: u64,
    ) -> usize {
        self.invalidate();
        let mut pending = if include_root {
            vec![root]
        } else {
            self.node(root).children.clone()
        };
        let mut revoked = 0;
        while let Some(id) = pending.pop() {
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            if node.revoked {
                continue;
            }
            node.revoked = true;
            pending.extend_from_slice(&node.children);
            let (holder, handle) = (node.holder, node.handle);
            revoked += 1;
            let detail = if id == root {
                format!("handle {}: {reason}", handle.0)
            } else {
                format!("handle {}: derived from {root}, {reason}", handle.0)
            };
            self.record(now, AuditKind::Revoked, holder, Some(id), detail);
        }
        revoked
    }

    /// Forgets a revoked capability whose table slot is gone. Its tokens go
    /// too (a valid MAC for an unknown id then answers Revoked); children
    /// keep its id as their parent and count as revoked through it.
    fn free(&mut self, id: CapabilityId) {
        let Some(node) = self.nodes.remove(&id) else {
            return;
        };
        debug_assert!(node.revoked, "only revoked capabilities are freed");
        for token in &node.tokens {
            self.tokens.remove(token);
        }
        if let Some(parent) = node.parent.and_then(|p| self.nodes.get_mut(&p)) {
            parent.children.retain(|&child| child != id);
        }
    }

    fn info(&self, id: CapabilityId) -> CapabilityInfo {
        let node = self.node(id);
        CapabilityInfo {
            id,
            holder: node.holder,
            handle: node.handle,
            capability: node.capability.clone(),
            uses: node.uses,
            uses_left: self.uses_left(id),
            parent: node.parent,
            depth: node.depth,
            revoked: self.is_revoked(id),
        }
    }

    fn mac(&self, token_id: u128) -> blake3::Hash {
        blake3::keyed_hash(&self.key, &token_id.to_le_bytes())
    }

    /// The capability behind a token whose MAC verifies. The comparison of
    /// `blake3::Hash` values is constant time. A verified id we no longer
    /// know was ours and has been revoked and forgotten.
    fn verify(&mut self, token: &Token, now: u64, action: &str) -> Result<CapabilityId, CapError> {
        let outcome = if self.mac(token.id) != blake3::Hash::from_bytes(token.mac) {
            Err(CapError::BadToken)
        } else {
            self.tokens.get(&token.id).copied().ok_or(CapError::Revoked)
        };
        outcome.map_err(|error| {
            let what = format!("{action} token {:032x}", token.id);
            self.denied(now, Pid::KERNEL, None, what, error)
        })
    }

    /// 128 bits from the operating system. Should that source fail, ids
    /// come from a keyed hash of a counter under a key derived from the MAC
    /// key: still unique and unguessable without the key.
    fn fresh_token_id(&mut self) -> u128 {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            self.fallback_ids += 1;
            let id_key = blake3::derive_key("estalogic capability token ids v1", &self.key);
            let hash = blake3::keyed_hash(&id_key, &self.fallback_ids.to_le_bytes());
            bytes.copy_from_slice(&hash.as_bytes()[..16]);
        }
        u128::from_le_bytes(bytes)
    }

    fn record(
        &mut self,
        at: u64,
        kind: AuditKind,
        holder: Pid,
        capability: Option<CapabilityId>,
        detail: String,
    ) {
        self.audit.push(AuditEvent {
            at,
            kind,
            holder,
            capability,
            detail,
        });
    }

    /// Audits a refusal and hands the error back.
    fn denied(
        &mut self,
        now: u64,
        holder: Pid,
        capability: Option<CapabilityId>,
        what: String,
        error: CapError,
    ) -> CapError {
        let detail = format!("{what}: {error}");
        self.record(now, AuditKind::Denied, holder, capability, detail);
        error
    }
}

#[cfg(test)]
mod tests {
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

        fn read(
            &mut self,
            holder: u32,
            handle: Handle,
            item: Option<&str>,
        ) -> Result<(), CapError> {
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
    fn find_picks_the_first_capability_that_allows_the_use() {
        let mut world = World::new();
        let channel = |list| Capability::new(Resource::Channel, Rights::WRITE, names(list));
        world.grant(1, Capability::new(Resource::Timer, Rights::ALL, Scope::All));
        let to_pong = world.grant(1, channel(&["pong"]));
        let until_10 = window(None, Some(10), None);
        let to_db = world.grant(1, channel(&["db"]).with_validity(until_10));
        let mut find =
            |resource, right, item, now| world.0.find(pid(1), &resource, right, item, now);
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
            events[2].detail.contains("required right"),
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
}
