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
//!    so a guest cannot grow kernel memory or check cost without bound. A
//!    full table drops the handles that can never validate again (revoked,
//!    expired, used up; as if closed) before it refuses a new one, so dead
//!    capabilities never fill it for good. A process may have at most
//!    [`MAX_LIVE_DELEGATIONS`] live delegated capabilities at a time (the
//!    expired and used-up ones are revoked when it reaches the limit), since
//!    anyone may delegate into any table.
//! 6. **Audit.** Every grant, delegation, export, revocation and denial
//!    appends an [`AuditEvent`]; the kernel drains them with
//!    [`CapabilityEngine::drain_audit`] into its bounded audit buffer,
//!    which the embedder takes.
//!
//! Tables are keyed by [`Pid`], whose generation changes when a slot is
//! reused, so a new process never inherits an old table. The kernel must call
//! [`CapabilityEngine::revoke_all_of`] when a process exits and must only
//! grant or delegate to live processes; the engine does not know which
//! processes exist.

use estalogic_abi::{ErrorCode, Pid, ResourceKind, Rights};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The most handles one process's table holds at a time.
pub const MAX_HANDLES: usize = 4_096;

/// The highest handle number a table gives out: a guest names handles as
/// an `i32`, so a number above this could never be named, and a negative
/// `i32` (read as a `u32`, above it) never names a capability.
pub const MAX_HANDLE_NUMBER: u32 = i32::MAX as u32;

/// The most delegation steps between a capability and its root grant.
pub const MAX_DEPTH: u32 = 16;

/// The most live (not revoked) capabilities one process may have delegated
/// at a time: anyone may delegate into any table, so this bounds the kernel
/// memory one process can pin in others' tables, and the work of revoking
/// what it handed out.
pub const MAX_LIVE_DELEGATIONS: usize = 4_096;

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
    /// Successful checks of it and of everything derived from it made by
    /// this engine. (The kernel answers a process's repeated checks of an
    /// unlimited capability from its own cache, uncounted; every check of
    /// a limited one comes here.)
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
        // (A revoked capability ranks by what it would have said, or as
        // `REVOKED_BUT_FIT` above all: see `find`.)
        match self {
            CapError::MissingRight => 1,
            CapError::OutOfScope => 2,
            CapError::NotYetValid | CapError::Expired => 3,
            CapError::UsedUp => 4,
            _ => 0,
        }
    }
}

/// How close a revoked capability that would otherwise have allowed a
/// request comes, in [`CapabilityEngine::find`]'s ranking: closest of all.
const REVOKED_BUT_FIT: u8 = 5;

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
    /// A process restarted with its state took over its predecessor's
    /// capabilities, under the same handles.
    Inherited,
    /// A handle left its holder's table: closed by the holder, or dropped
    /// from a full table because it could never validate again.
    Closed,
    /// Older events were dropped from the kernel's full audit buffer
    /// (100,000 events) before the embedder took them: the first event of
    /// `Kernel::take_audit` when that happened since the last take, its
    /// detail saying how many (holder [`Pid::KERNEL`], no capability, at
    /// the time of the newest event dropped).
    Lost,
}

/// One entry of the capability audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The kernel clock when it happened: read by the caller just before
    /// the engine recorded it, and never earlier than the event before it
    /// (events are in the order they happened, their times agree).
    pub at: u64,
    /// What happened.
    pub kind: AuditKind,
    /// The process concerned: the new holder for grants and delegations,
    /// the holder for revocations and exports, the caller for denials
    /// ([`Pid::KERNEL`] for a token that names nothing, and for a
    /// [`AuditKind::Lost`] count).
    pub holder: Pid,
    /// The capability concerned, if the request named one that exists.
    pub capability: Option<CapabilityId>,
    /// A human-readable account (its `Display`).
    pub detail: AuditDetail,
}

/// The account an [`AuditEvent`] gives. Grants and revocations happen at
/// every spawn and exit of a process that holds a capability, so they are
/// kept as data and written out as text only when read (`Display`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditDetail {
    /// A root capability was issued.
    Granted {
        /// What it refers to.
        resource: Resource,
        /// What it allows.
        rights: Rights,
        /// Which items it reaches.
        scope: Scope,
        /// The holder's handle for it.
        handle: u32,
    },
    /// A capability was revoked.
    Revoked {
        /// The holder's handle for it.
        handle: u32,
        /// The capability whose revocation cascaded to it, if not itself.
        derived_from: Option<CapabilityId>,
        /// Why.
        reason: RevokeReason,
    },
    /// Any other event (delegations, exports, denials), as text.
    Text(String),
}

/// Why a capability was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// Its holder closed it.
    ClosedByHolder,
    /// Its holder exited.
    HolderExited,
    /// A holder of it or of an ancestor with the `REVOKE` right revoked it.
    RevokedBy(Pid),
    /// It could never validate again (expired or used up) and its holder's
    /// full table needed the slot.
    Reclaimed,
}

impl std::fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevokeReason::ClosedByHolder => f.write_str("closed by its holder"),
            RevokeReason::HolderExited => f.write_str("its holder exited"),
            RevokeReason::RevokedBy(pid) => write!(f, "revoked by {pid}"),
            RevokeReason::Reclaimed => {
                f.write_str("expired or used up, reclaimed from its holder's full table")
            }
        }
    }
}

impl std::fmt::Display for AuditDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditDetail::Granted {
                resource,
                rights,
                scope,
                handle,
            } => write!(
                f,
                "root {resource:?} {rights:?} scope {scope:?} as handle {handle}"
            ),
            AuditDetail::Revoked {
                handle,
                derived_from: None,
                reason,
            } => write!(f, "handle {handle}: {reason}"),
            AuditDetail::Revoked {
                handle,
                derived_from: Some(root),
                reason,
            } => write!(f, "handle {handle}: derived from {root}, {reason}"),
            AuditDetail::Text(text) => f.write_str(text),
        }
    }
}

#[derive(Debug)]
struct Node {
    capability: Capability,
    holder: Pid,
    /// The process that delegated it (`None` for a root grant); counted in
    /// [`CapabilityEngine::live_delegations`] until it is revoked.
    delegator: Option<Pid>,
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
    /// The time of the latest event recorded: no event is stamped earlier
    /// (see [`CapabilityEngine::record`]).
    audit_clock: u64,
    /// Bumped by every revocation: a positive decision taken at an older
    /// generation may no longer hold.
    generation: u64,
    /// Live (not revoked) delegated capabilities per delegating process (at
    /// most [`MAX_LIVE_DELEGATIONS`] each).
    live_delegations: HashMap<Pid, HashSet<CapabilityId>>,
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
            audit_clock: 0,
            generation: 0,
            live_delegations: HashMap::default(),
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
        let (resource, rights, scope) = (
            capability.resource.clone(),
            capability.rights,
            capability.scope.clone(),
        );
        match self.insert(holder, capability, None, now) {
            Ok((handle, id)) => {
                let detail = AuditDetail::Granted {
                    resource,
                    rights,
                    scope,
                    handle: handle.0,
                };
                self.record(now, AuditKind::Granted, holder, Some(id), detail);
                Ok(handle)
            }
            Err(error) => {
                let what = format!("grant root {resource:?} {rights:?} scope {scope:?}");
                Err(self.denied(now, holder, None, what, error))
            }
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
            .and_then(|()| {
                if self.live_delegations_of(from) >= MAX_LIVE_DELEGATIONS {
                    self.reclaim_dead_delegations(from, now);
                }
                if self.live_delegations_of(from) >= MAX_LIVE_DELEGATIONS {
                    return Err(CapError::LimitReached(
                        "the delegator has 4,096 live delegations; revoke some first",
                    ));
                }
                self.insert(to, narrowed, Some(id), now)
            });
        match checked {
            Ok((child_handle, child)) => {
                let detail = format!(
                    "from {from} handle {} ({id}) as handle {}",
                    handle.0, child_handle.0
                );
                let detail = AuditDetail::Text(detail);
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
        let revoked = self.revoke_subtree(id, true, RevokeReason::ClosedByHolder, None, now);
        if let Some(table) = self.tables.get_mut(&pid) {
            table.slots.remove(&handle);
        }
        let detail = AuditDetail::Text(format!("handle {} closed by its holder", handle.0));
        self.record(now, AuditKind::Closed, pid, Some(id), detail);
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
            .map(|&id| self.revoke_subtree(id, true, RevokeReason::HolderExited, Some(holder), now))
            .sum();
        for &id in table.slots.values() {
            self.free(id);
        }
        revoked
    }

    /// Hands the table of `from`, a process that ended, to `to`, the
    /// process replacing it in a same-state restart: the same capabilities
    /// under the same handles, nothing revoked, and what `from` delegated
    /// counted as `to`'s delegations. A capability delegated to `to`
    /// before the hand-over (it can be found as soon as it exists) keeps
    /// its capability under a handle numbered after those, so the number
    /// its delegator was told then names another of `to`'s handles (a
    /// known gap of a window of microseconds). Audited once per capability
    /// moved; returns how many moved.
    pub fn transfer_table(&mut self, from: Pid, to: Pid, now: u64) -> usize {
        let Some(mut table) = self.tables.remove(&from) else {
            return 0;
        };
        let moved: Vec<(Handle, CapabilityId)> =
            table.slots.iter().map(|(&h, &id)| (h, id)).collect();
        for &(_, id) in &moved {
            self.node_mut(id).holder = to;
        }
        if let Some(delegated) = self.live_delegations.remove(&from) {
            for &id in &delegated {
                self.node_mut(id).delegator = Some(to);
            }
            self.live_delegations
                .entry(to)
                .or_default()
                .extend(delegated);
        }
        if let Some(early) = self.tables.remove(&to) {
            for id in early.slots.into_values() {
                let number = table.last.saturating_add(1);
                table.last = number;
                table.slots.insert(Handle(number), id);
                self.node_mut(id).handle = Handle(number);
            }
        }
        self.tables.insert(to, table);
        for (handle, id) in &moved {
            let detail = AuditDetail::Text(format!(
                "handle {} of {from} taken over by its same-state restart",
                handle.0
            ));
            self.record(now, AuditKind::Inherited, to, Some(*id), detail);
        }
        moved.len()
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

    /// How many handles `pid`'s table holds (what a [`CapabilityEngine::find`]
    /// for it may look at).
    pub fn table_len(&self, pid: Pid) -> usize {
        self.tables.get(&pid).map_or(0, |table| table.slots.len())
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
        let mut closest: Option<(CapabilityId, CapError, u8)> = None;
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
                    // A revoked capability that would have allowed this is
                    // the closest reason of all (the holder had it and lost
                    // it); one that would not have is as close as what it
                    // lacks.
                    let closeness = match error {
                        CapError::Revoked => match self.validate_unrevoked(id, &want, now) {
                            Ok(()) => REVOKED_BUT_FIT,
                            Err(lacking) => lacking.closeness(),
                        },
                        ref other => other.closeness(),
                    };
                    if closest
                        .as_ref()
                        .is_none_or(|(_, _, best)| closeness > *best)
                    {
                        closest = Some((id, error, closeness));
                    }
                }
            }
        }
        if let Some((handle, id)) = found {
            self.count_use(id);
            return Ok(handle);
        }
        let (id, error) = match closest {
            Some((id, error, _)) => (Some(id), error),
            None => (None, CapError::MissingRight),
        };
        Err(self.denied(now, pid, id, format!("find {want}"), error))
    }

    /// Changes with every revocation that reaches a live holder: `revoke`,
    /// closing a handle, and a process exit whose capabilities had been
    /// delegated to others (an exit that revokes only the exiting process's
    /// own capabilities changes no other process's decisions). A positive
    /// decision about an [unlimited] capability stays true while the
    /// generation is unchanged, so the kernel may cache it.
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

    /// Whether `pid` holds a live capability (not revoked, inside its
    /// window, uses left) on `resource` with `right`, for some item of its
    /// scope. Counts no use and audits nothing: it lets a syscall tell a
    /// caller that may not make it at all apart from one whose target is
    /// gone, before it says which (a caller with no such capability learns
    /// nothing about other processes).
    pub fn holds_any(&self, pid: Pid, resource: &Resource, right: Rights, now: u64) -> bool {
        self.tables.get(&pid).is_some_and(|table| {
            table.slots.values().any(|&id| {
                let capability = &self.node(id).capability;
                capability.resource == *resource
                    && capability.rights.contains(right)
                    && !self.is_revoked(id)
                    && self.in_time_and_uses(id, now).is_ok()
            })
        })
    }

    /// The capability at `from`'s `handle`, to delegate to `to`, and the
    /// uses it has left (the fewest left anywhere up its chain; `None` for
    /// no limit), which is what a copy keeping its use limit may have. A
    /// handle that names nothing, or a capability that is not live or lacks
    /// `DELEGATE`, is refused and audited, as every refused delegation is.
    pub fn delegation_source(
        &mut self,
        from: Pid,
        handle: Handle,
        to: Pid,
        now: u64,
    ) -> Result<(Capability, Option<u64>), CapError> {
        let what = || format!("delegate handle {} to {to}", handle.0);
        let id = self
            .lookup(from, handle)
            .map_err(|error| self.denied(now, from, None, what(), error))?;
        // Live and delegable, or the caller may delegate nothing from it
        // and learns nothing about the target.
        self.require(id, Rights::DELEGATE, now)
            .map_err(|error| self.denied(now, from, Some(id), what(), error))?;
        Ok((self.node(id).capability.clone(), self.uses_left(id)))
    }

    /// Audits a delegation from `from`'s `handle` to `to` that its caller
    /// refused (`why`) after [`CapabilityEngine::delegation_source`]
    /// accepted the source: a target that is not alive, a scope, expiry
    /// or use limit that does not parse. Every refused delegation is a
    /// denial.
    pub fn refuse_delegation(&mut self, from: Pid, handle: Handle, to: Pid, why: &str, now: u64) {
        let capability = self.lookup(from, handle).ok();
        let what = format!("delegate handle {} to {to}: {why}", handle.0);
        self.record(
            now,
            AuditKind::Denied,
            from,
            capability,
            AuditDetail::Text(what),
        );
    }

    /// A snapshot of `pid`'s capability at `handle`, revoked or not.
    pub fn inspect(&self, pid: Pid, handle: Handle) -> Result<CapabilityInfo, CapError> {
        self.lookup(pid, handle).map(|id| self.info(id))
    }

    /// Every handle in `pid`'s table, in handle order, without the
    /// snapshots [`CapabilityEngine::handles`] makes (`cap_handles` needs
    /// the numbers only, and a snapshot of a deep capability with a long
    /// scope costs about fifty times what listing it does).
    pub fn handle_numbers(&self, pid: Pid) -> Vec<Handle> {
        self.tables
            .get(&pid)
            .map(|table| table.slots.keys().copied().collect())
            .unwrap_or_default()
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
        let detail = AuditDetail::Text(format!("handle {} as token {token_id:032x}", handle.0));
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
        self.in_time_and_uses(id, now)
    }

    /// Inside its time window, with a use left.
    fn in_time_and_uses(&self, id: CapabilityId, now: u64) -> Result<(), CapError> {
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
        self.validate_unrevoked(id, want, now)
    }

    /// [`CapabilityEngine::validate`] as if `id` had not been revoked.
    fn validate_unrevoked(
        &self,
        id: CapabilityId,
        want: &Want<'_>,
        now: u64,
    ) -> Result<(), CapError> {
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
        self.in_time_and_uses(id, now)
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
        now: u64,
    ) -> Result<(Handle, CapabilityId), CapError> {
        let depth = parent.map_or(0, |p| self.node(p).depth + 1);
        if depth > MAX_DEPTH {
            return Err(CapError::LimitReached("delegation is too deep"));
        }
        if self
            .tables
            .get(&holder)
            .is_some_and(|table| table.slots.len() >= MAX_HANDLES)
        {
            self.reclaim_dead(holder, now);
        }
        let table = self.tables.entry(holder).or_default();
        if table.slots.len() >= MAX_HANDLES {
            return Err(CapError::LimitReached("the handle table is full"));
        }
        let number = table
            .last
            .checked_add(1)
            .filter(|&number| number <= MAX_HANDLE_NUMBER)
            .ok_or(CapError::LimitReached(
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
        let delegator = parent.map(|p| self.node(p).holder);
        if let Some(delegator) = delegator {
            self.live_delegations
                .entry(delegator)
                .or_default()
                .insert(id);
        }
        self.nodes.insert(
            id,
            Node {
                capability,
                holder,
                delegator,
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
        let reason = RevokeReason::RevokedBy(by);
        Ok(self.revoke_subtree(id, include_self, reason, None, now))
    }

    /// Bumps the generation: positive decisions cached by the kernel at an
    /// older generation are stale.
    fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Marks `root` (if `include_root`) and its descendants revoked,
    /// auditing each; returns how many were newly revoked. A node already
    /// revoked has its whole subtree revoked (invariant 2), so it is skipped.
    /// `exiting`, if set, is a process whose table is going away: revoking
    /// only its own capabilities leaves the generation alone.
    fn revoke_subtree(
        &mut self,
        root: CapabilityId,
        include_root: bool,
        reason: RevokeReason,
        exiting: Option<Pid>,
        now: u64,
    ) -> usize {
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
            let (holder, handle, delegator) = (node.holder, node.handle, node.delegator);
            if let Some(delegator) = delegator
                && let std::collections::hash_map::Entry::Occupied(mut live) =
                    self.live_delegations.entry(delegator)
            {
                live.get_mut().remove(&id);
                if live.get().is_empty() {
                    live.remove();
                }
            }
            if exiting != Some(holder) {
                self.invalidate();
            }
            revoked += 1;
            let detail = AuditDetail::Revoked {
                handle: handle.0,
                derived_from: (id != root).then_some(root),
                reason,
            };
            self.record(now, AuditKind::Revoked, holder, Some(id), detail);
        }
        revoked
    }

    /// Forgets a revoked capability whose table slot is gone. Its tokens go
    /// too (a valid MAC for an unknown id then answers Revoked); children
    /// keep its id as their parent and count as revoked through it.
    /// Drops every capability that can never validate again (revoked,
    /// expired or used up) from `holder`'s full table, as if its holder had
    /// closed each: such handles would otherwise fill a table for good
    /// (another process can delegate to it, and revoke what it delegated,
    /// as often as it likes; a server's clients exit). Their numbers are not
    /// reused and answer `InvalidHandle` from now on.
    fn reclaim_dead(&mut self, holder: Pid, now: u64) {
        let Some(table) = self.tables.get(&holder) else {
            return;
        };
        let dead: Vec<(Handle, CapabilityId)> = table
            .slots
            .iter()
            .map(|(&handle, &id)| (handle, id))
            .filter(|&(_, id)| {
                self.is_revoked(id)
                    || matches!(
                        self.live(id, now),
                        Err(CapError::Expired | CapError::UsedUp)
                    )
            })
            .collect();
        if let Some(table) = self.tables.get_mut(&holder) {
            for (handle, _) in &dead {
                table.slots.remove(handle);
            }
        }
        for (handle, id) in dead {
            if !self.node(id).revoked {
                self.revoke_subtree(id, true, RevokeReason::Reclaimed, None, now);
            }
            let detail = AuditDetail::Text(format!(
                "handle {} dropped from its holder's full table (could never validate again)",
                handle.0
            ));
            self.record(now, AuditKind::Closed, holder, Some(id), detail);
            self.free(id);
        }
    }

    /// How many live (not revoked) capabilities `pid` has delegated.
    pub fn live_delegations_of(&self, pid: Pid) -> usize {
        self.live_delegations.get(&pid).map_or(0, HashSet::len)
    }

    /// Revokes (reason [`RevokeReason::Reclaimed`]) the capabilities `from`
    /// delegated that can never validate again (expired, used up), which
    /// would otherwise count against its [`MAX_LIVE_DELEGATIONS`] until
    /// their holders' tables fill. Their handles answer `Revoked`.
    fn reclaim_dead_delegations(&mut self, from: Pid, now: u64) {
        let Some(live) = self.live_delegations.get(&from) else {
            return;
        };
        let dead: Vec<CapabilityId> = live
            .iter()
            .copied()
            .filter(|&id| {
                matches!(
                    self.live(id, now),
                    Err(CapError::Expired | CapError::UsedUp)
                )
            })
            .collect();
        for id in dead {
            self.revoke_subtree(id, true, RevokeReason::Reclaimed, None, now);
        }
    }

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

    /// Records an event that happened at `at`, as the caller read the
    /// clock: before it took the engine's lock, so another worker that read
    /// the clock later may have recorded first. The events are in the order
    /// they happened (the lock's), and their times are made to agree: an
    /// event is stamped no earlier than the one before it, a time between
    /// the caller's reading and the record.
    fn record(
        &mut self,
        at: u64,
        kind: AuditKind,
        holder: Pid,
        capability: Option<CapabilityId>,
        detail: AuditDetail,
    ) {
        let at = at.max(self.audit_clock);
        self.audit_clock = at;
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
        let detail = AuditDetail::Text(format!("{what}: {error}"));
        self.record(now, AuditKind::Denied, holder, capability, detail);
        error
    }
}

#[cfg(test)]
mod tests;
