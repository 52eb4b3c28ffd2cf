//! Capability syscalls (`cap_handles`, `cap_inspect`, `cap_delegate`,
//! `cap_revoke`), the capability each syscall needs, and the translation of
//! manifest capability requests into root grants.
//!
//! # Where authority comes from
//!
//! 1. At spawn, every entry of the manifest's `capabilities_required` becomes
//!    one root capability in the process's handle table
//!    ([`capability_for`]): a resource, rights (always including `delegate`
//!    and `revoke`, so a holder can share attenuated copies and take them
//!    back) and a scope (the manifest's `scope`: comma-separated names, or
//!    directory prefixes for files; none means everything).
//! 2. A syscall that touches anything outside the caller needs a capability
//!    ([`requirement`]); the choke point
//!    ([`ProcessContext::admit`](super::ProcessContext::admit)) asks the
//!    engine to find one in the caller's table, with the item the syscall
//!    names (a target module, a looked-up name).
//! 3. More authority only ever arrives by delegation from a holder, and only
//!    attenuated; revocation cascades; process exit revokes everything the
//!    process held.

use super::{
    DENIAL_FUEL, FIND_FUEL, ProcessContext, check_guest, pay_host_work, pay_host_work_now,
    read_guest, to_return, write_guest,
};
use crate::core::capabilities_engine::{
    Capability, CapabilityEngine, CapabilityInfo, Handle, MAX_HANDLES, MAX_LIVE_DELEGATIONS,
    Resource, Scope, Validity,
};
use crate::loader::manifest::CapabilityRequest;
use estalogic_abi::capabilities::CapabilityRecord;
use estalogic_abi::{ErrorCode, IMPORT_MODULE, Pid, Rights, Syscall};
use wasmtime::{Caller, Linker};

/// The resource and rights a syscall needs; `None` for syscalls that touch
/// nothing outside the caller (or name their capability by handle).
pub fn requirement(syscall: Syscall) -> Option<(Resource, Rights)> {
    Some(match syscall {
        Syscall::Exit | Syscall::Yield | Syscall::SelfPid => return None,
        Syscall::CapHandles | Syscall::CapInspect | Syscall::CapDelegate | Syscall::CapRevoke => {
            return None;
        }
        // Checked as what it is made of: its send and its receive.
        Syscall::SendReceive => return None,
        Syscall::Send | Syscall::Reply => (Resource::Channel, Rights::WRITE),
        Syscall::Receive | Syscall::ReceiveReply | Syscall::Peek => {
            (Resource::Channel, Rights::READ)
        }
        // LIST alone: a broadcast reaches every process, but grants no
        // send to any one of them (WRITE on its name).
        Syscall::Broadcast => (Resource::Channel, Rights::LIST),
        Syscall::Lookup => (Resource::Process, Rights::READ),
        Syscall::Log => (Resource::Custom("log".into()), Rights::WRITE),
        Syscall::ClockNow => (Resource::Timer, Rights::READ),
        Syscall::Notify => (Resource::Custom("notifications".into()), Rights::WRITE),
    })
}

/// True if `syscall` needs a capability ([`requirement`] is `Some`),
/// without building the resource: the capability check's cached path asks
/// only this.
pub(crate) fn is_checked(syscall: Syscall) -> bool {
    !matches!(
        syscall,
        Syscall::Exit
            | Syscall::Yield
            | Syscall::SelfPid
            | Syscall::CapHandles
            | Syscall::CapInspect
            | Syscall::CapDelegate
            | Syscall::CapRevoke
            | Syscall::SendReceive
    )
}

fn scope_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses a scope for `resource`: `*` is everything, otherwise a
/// comma-separated list of directory prefixes (files) or names.
pub fn parse_scope(resource: &Resource, text: &str) -> Result<Scope, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(Scope::All);
    }
    let items = scope_list(text);
    if items.is_empty() {
        return Err("the scope is empty".to_string());
    }
    match resource {
        Resource::File => Scope::prefixes(items).map_err(|e| e.to_string()),
        _ => Ok(Scope::names(items)),
    }
}

/// The root capability a manifest request grants.
pub fn capability_for(request: &CapabilityRequest) -> Result<Capability, String> {
    let (resource, rights) = match request.name.as_str() {
        "messaging:send" => (Resource::Channel, Rights::WRITE),
        "messaging:receive" => (Resource::Channel, Rights::READ),
        "messaging:broadcast" => (Resource::Channel, Rights::LIST),
        "process:lookup" => (Resource::Process, Rights::READ),
        "process:spawn" => (Resource::Process, Rights::CREATE | Rights::EXECUTE),
        "time:read" => (Resource::Timer, Rights::READ),
        "timer:create" => (Resource::Timer, Rights::CREATE),
        "log:write" => (Resource::Custom("log".into()), Rights::WRITE),
        "fs:read" => (Resource::File, Rights::READ),
        "fs:write" => (Resource::File, Rights::WRITE | Rights::CREATE),
        "fs:delete" => (Resource::File, Rights::DELETE),
        "fs:list" => (Resource::File, Rights::LIST),
        "db:read" => (Resource::Database, Rights::READ | Rights::LIST),
        "db:write" => (Resource::Database, Rights::WRITE | Rights::CREATE),
        "db:delete" => (Resource::Database, Rights::DELETE),
        "net:request" => (Resource::Network, Rights::WRITE | Rights::READ),
        "audit:read" => (Resource::AuditLog, Rights::READ),
        "audit:write" => (Resource::AuditLog, Rights::WRITE),
        "config:read" => (Resource::Config, Rights::READ),
        "host_events:subscribe" => (Resource::Custom("host_events".into()), Rights::READ),
        "notifications:send" => (Resource::Custom("notifications".into()), Rights::WRITE),
        other => return Err(format!("unknown capability {other:?}")),
    };
    let scope = match &request.scope {
        None => Scope::All,
        Some(text) => parse_scope(&resource, text)?,
    };
    // A receive takes from any sender and a broadcast reaches every
    // process: both are checked against the whole channel resource, so a
    // scoped grant could never be used; nor could one of the syscalls that
    // name no resource (a log line, the clock, a notification for the
    // host). Refused at load, not a silent PERMISSION_DENIED at every call.
    let unscoped = match request.name.as_str() {
        "messaging:receive" | "messaging:broadcast" => Some("it covers every module"),
        "log:write" | "time:read" | "notifications:send" => Some("its syscall names nothing"),
        _ => None,
    };
    if let Some(why) = unscoped
        && scope != Scope::All
    {
        return Err(format!(
            "{} cannot be scoped ({why}); remove the scope or use \"*\"",
            request.name
        ));
    }
    Ok(Capability::new(
        resource,
        rights | Rights::DELEGATE | Rights::REVOKE,
        scope,
    ))
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::All => "*".to_string(),
        Scope::Names(names) => {
            format!(
                "names:{}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        }
        Scope::Prefixes(prefixes) => {
            format!("prefixes:{}", prefixes.iter().collect::<Vec<_>>().join(","))
        }
    }
}

/// Encodes what `cap_inspect` writes.
pub fn encode_record(info: &CapabilityInfo) -> Vec<u8> {
    let scope = scope_text(&info.capability.scope);
    let validity = info.capability.validity;
    let record = CapabilityRecord {
        resource_kind: info.capability.resource.kind() as u8,
        revoked: info.revoked,
        rights: info.capability.rights,
        depth: info.depth,
        uses: info.uses,
        not_before: validity.not_before,
        expires_at: validity.expires_at,
        max_uses: validity.max_uses,
        scope_len: scope.len() as u32,
    };
    let mut out = record.encode_head().to_vec();
    out.extend_from_slice(scope.as_bytes());
    out
}

/// The arguments of `cap_delegate`.
struct Delegation {
    handle: i32,
    target: i64,
    rights: i32,
    expires_at: i64,
    max_uses: i64,
    scope_ptr: i32,
    scope_len: i32,
}

/// Registers this family's syscalls for task processes: each charges its
/// host work (see `syscalls::charge`) and, when that makes a checkpoint due, passes
/// one before it returns, where the scheduler may preempt the caller.
pub fn add_to_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::CapHandles.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (ptr, max): (i32, i32)| {
            Box::new(async move {
                let result = cap_handles(&mut caller, ptr, max);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::CapInspect.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (handle, ptr, len): (i32, i32, i32)| {
            Box::new(async move {
                let result = cap_inspect(&mut caller, handle, ptr, len);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::CapDelegate.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         (handle, target, rights, expires_at, max_uses, scope_ptr, scope_len): (
            i32,
            i64,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let request = Delegation {
                    handle,
                    target,
                    rights,
                    expires_at,
                    max_uses,
                    scope_ptr,
                    scope_len,
                };
                let result = cap_delegate(&mut caller, request);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    linker.func_wrap_async(
        IMPORT_MODULE,
        Syscall::CapRevoke.import_name(),
        |mut caller: Caller<'_, ProcessContext>, (handle, mode): (i32, i32)| {
            Box::new(async move {
                let result = cap_revoke(&mut caller, handle, mode);
                pay_host_work(&mut caller).await;
                Ok(to_return(result))
            })
        },
    )?;
    Ok(())
}

/// Registers this family's syscalls for handler processes: synchronous,
/// their host work paid from the call's fuel budget (see `syscalls::charge`).
pub fn add_to_handler_linker(linker: &mut Linker<ProcessContext>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::CapHandles.import_name(),
        |mut caller: Caller<'_, ProcessContext>, ptr: i32, max: i32| -> wasmtime::Result<i64> {
            let result = cap_handles(&mut caller, ptr, max);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::CapInspect.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         handle: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let result = cap_inspect(&mut caller, handle, ptr, len);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::CapDelegate.import_name(),
        |mut caller: Caller<'_, ProcessContext>,
         handle: i32,
         target: i64,
         rights: i32,
         expires_at: i64,
         max_uses: i64,
         scope_ptr: i32,
         scope_len: i32|
         -> wasmtime::Result<i64> {
            let request = Delegation {
                handle,
                target,
                rights,
                expires_at,
                max_uses,
                scope_ptr,
                scope_len,
            };
            let result = cap_delegate(&mut caller, request);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        Syscall::CapRevoke.import_name(),
        |mut caller: Caller<'_, ProcessContext>, handle: i32, mode: i32| -> wasmtime::Result<i64> {
            let result = cap_revoke(&mut caller, handle, mode);
            pay_host_work_now(&mut caller)?;
            Ok(to_return(result))
        },
    )?;
    Ok(())
}

/// Fuel units every capability syscall pays besides its copies: the
/// engine's lock, a lookup in the caller's table and an audit record
/// (about what one post costs; compare `ipc::POST_FUEL`).
const CAP_CALL_FUEL: u64 = 256;

/// Fuel units a revocation pays per capability it revokes (each is marked,
/// invalidates cached decisions and is audited).
const REVOKE_FUEL: u64 = 256;

/// Fuel units a delegation pays per byte of the scope it parses (the
/// names become a set of strings in the engine).
const SCOPE_BYTE_FUEL: u64 = 4;

/// The longest scope a delegation may name, in bytes.
pub const MAX_DELEGATED_SCOPE_BYTES: i32 = 1_024;

/// The most names or prefixes a delegated scope may list: with
/// [`MAX_DELEGATED_SCOPE_BYTES`], this bounds what one capability holds in
/// kernel memory, and so what a full table of them can (another process
/// can delegate into any table).
pub const MAX_DELEGATED_SCOPE_ITEMS: usize = 32;

/// The handle a guest names. A negative one names a number above
/// `i32::MAX`, which no table ever gives out
/// ([`crate::core::capabilities_engine::MAX_HANDLE_NUMBER`]): it is then
/// refused as any handle never given is, at the same point, with the same
/// charge and audit event (it was refused before the call's other checks
/// and its charge, so the same mistake cost and answered differently).
fn handle_of(raw: i32) -> Handle {
    Handle(raw as u32)
}

/// Fuel units `cap_handles` pays per handle in the table it snapshots.
const HANDLE_FUEL: u64 = 64;

fn cap_handles(
    caller: &mut Caller<'_, ProcessContext>,
    ptr: i32,
    max: i32,
) -> Result<u64, ErrorCode> {
    if max < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    // The whole output range lies in memory (ABI convention 1), however
    // few handles there are to write.
    let len =
        i32::try_from(u64::from(max.unsigned_abs()) * 4).map_err(|_| ErrorCode::INVALID_POINTER)?;
    check_guest(caller, ptr, len)?;
    let handles: Vec<Handle> = {
        let context = caller.data();
        let engine = context.kernel.capabilities();
        engine.handle_numbers(context.process.pid)
    };
    let bytes: Vec<u8> = handles
        .iter()
        .take(max as usize)
        .flat_map(|h| h.0.to_le_bytes())
        .collect();
    // Host work (see `charge`): the table's snapshot and the copy.
    caller.data().add_host_work(
        (handles.len() as u64)
            .saturating_mul(HANDLE_FUEL)
            .saturating_add(bytes.len() as u64),
    );
    write_guest(caller, ptr, &bytes)?;
    Ok(handles.len() as u64)
}

fn cap_inspect(
    caller: &mut Caller<'_, ProcessContext>,
    handle: i32,
    ptr: i32,
    len: i32,
) -> Result<u64, ErrorCode> {
    let handle = handle_of(handle);
    if len < 0 {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    // The whole output range lies in memory (ABI convention 1), however
    // short the record.
    check_guest(caller, ptr, len)?;
    caller.data().add_host_work(CAP_CALL_FUEL);
    let record = {
        let context = caller.data();
        let engine = context.kernel.capabilities();
        let info = engine
            .inspect(context.process.pid, handle)
            .map_err(|e| e.code())?;
        encode_record(&info)
    };
    // The record and its copy into the guest.
    caller.data().add_host_work(record.len() as u64);
    if (len as usize) < record.len() {
        return Err(ErrorCode::BUFFER_TOO_SMALL);
    }
    write_guest(caller, ptr, &record)?;
    Ok(record.len() as u64)
}

fn inherit_or(raw: i64, inherited: Option<u64>) -> Result<Option<u64>, ErrorCode> {
    match raw {
        -1 => Ok(inherited),
        value if value >= 0 => Ok(Some(value as u64)),
        _ => Err(ErrorCode::INVALID_ARGUMENT),
    }
}

fn cap_delegate(
    caller: &mut Caller<'_, ProcessContext>,
    request: Delegation,
) -> Result<u64, ErrorCode> {
    let handle = handle_of(request.handle);
    let rights = u16::try_from(request.rights)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(ErrorCode::INVALID_ARGUMENT)?;
    if !(0..=MAX_DELEGATED_SCOPE_BYTES).contains(&request.scope_len) {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    caller
        .data()
        .add_host_work(CAP_CALL_FUEL + (request.scope_len as u64).saturating_mul(SCOPE_BYTE_FUEL));
    let scope_bytes = read_guest(caller, request.scope_ptr, request.scope_len)?;
    let scope_text = std::str::from_utf8(&scope_bytes).map_err(|_| ErrorCode::INVALID_UTF8)?;
    if scope_list(scope_text).len() > MAX_DELEGATED_SCOPE_ITEMS {
        return Err(ErrorCode::INVALID_ARGUMENT);
    }
    let context = caller.data();
    let kernel = &context.kernel;
    let from = context.process.pid;
    let target = Pid::from_u64(request.target as u64);
    // Looked up before the engine's lock (the process table has a lock of
    // its own), but told to no one unless the handle may be delegated.
    let target_process = kernel.process(target);
    // One hold of the engine's lock from the source's check to the copy:
    // a use of the source on another worker cannot make its `max_uses`
    // -1 (the uses it has left) more than it has, and a revocation of the
    // source cannot come between its check and the copy.
    let mut engine = kernel.capabilities();
    let now = kernel.clock.now_nanos();
    // The handle first, so a caller with nothing to delegate learns
    // nothing about the target (whether it is alive) and its refusal is
    // audited.
    let source = match engine.delegation_source(from, handle, target, now) {
        Ok(source) => source,
        Err(error) => {
            kernel.flush_audit(&mut engine);
            return Err(error.code());
        }
    };
    // A refusal from here on is the caller's to know (it may delegate
    // this handle) and a denial like the engine's own: audited, its
    // event paid for as a refused check's is.
    let refuse = |engine: &mut CapabilityEngine, code: ErrorCode, why: &str| {
        context.add_host_work(DENIAL_FUEL);
        engine.refuse_delegation(from, handle, target, why, now);
        code
    };
    let result = (|| {
        let Some(target_process) = target_process else {
            return Err(refuse(
                &mut engine,
                ErrorCode::NO_SUCH_PROCESS,
                "no such process",
            ));
        };
        // A target that exited meanwhile gets nothing (its capabilities
        // would outlive it); see `Process::open_capabilities`.
        if !target_process.open_capabilities() {
            return Err(refuse(
                &mut engine,
                ErrorCode::NO_SUCH_PROCESS,
                "the target has exited",
            ));
        }
        let (source, uses_left) = source;
        let scope = if scope_text.is_empty() {
            source.scope.clone()
        } else {
            parse_scope(&source.resource, scope_text).map_err(|error| {
                let why = format!("bad scope: {error}");
                refuse(&mut engine, ErrorCode::INVALID_ARGUMENT, &why)
            })?
        };
        let expires_at =
            inherit_or(request.expires_at, source.validity.expires_at).map_err(|code| {
                let why = format!("expires_at {} is neither -1 nor a time", request.expires_at);
                refuse(&mut engine, code, &why)
            })?;
        // Kept: what the source has left (a use counts against it and
        // every ancestor, so the copy can have no more).
        let max_uses = inherit_or(request.max_uses, uses_left).map_err(|code| {
            let why = format!("max_uses {} is neither -1 nor a count", request.max_uses);
            refuse(&mut engine, code, &why)
        })?;
        let validity = Validity {
            not_before: source.validity.not_before,
            expires_at,
            max_uses,
        };
        let narrowed =
            Capability::new(source.resource.clone(), rights, scope).with_validity(validity);
        // A full target table is searched for handles that can never
        // validate again before it refuses (see `CapabilityEngine::delegate`).
        let searched = engine.table_len(target);
        if searched >= MAX_HANDLES {
            context.add_host_work((searched as u64).saturating_mul(FIND_FUEL));
        }
        // So is the caller's set of live delegations at its limit.
        let delegated = engine.live_delegations_of(from);
        if delegated >= MAX_LIVE_DELEGATIONS {
            context.add_host_work((delegated as u64).saturating_mul(FIND_FUEL));
        }
        // The engine audits every refusal of its own (not an attenuation,
        // a full table, the delegation limit): paid for as `refuse`'s.
        engine
            .delegate(from, handle, target, narrowed, now)
            .map(|h| u64::from(h.0))
            .map_err(|e| {
                context.add_host_work(DENIAL_FUEL);
                e.code()
            })
    })();
    kernel.flush_audit(&mut engine);
    result
}

fn cap_revoke(
    caller: &mut Caller<'_, ProcessContext>,
    handle: i32,
    mode: i32,
) -> Result<u64, ErrorCode> {
    let handle = handle_of(handle);
    let context = caller.data();
    context.add_host_work(CAP_CALL_FUEL);
    let kernel = &context.kernel;
    let now = kernel.clock.now_nanos();
    let mut engine = kernel.capabilities();
    let pid = context.process.pid;
    let result = match mode {
        0 => engine.revoke(pid, handle, now),
        1 => engine.revoke_derived(pid, handle, now),
        2 => engine.close(pid, handle, now),
        _ => return Err(ErrorCode::INVALID_ARGUMENT),
    };
    kernel.flush_audit(&mut engine);
    drop(engine);
    let revoked = result.map_err(|e| e.code())?;
    context.add_host_work((revoked as u64).saturating_mul(REVOKE_FUEL));
    Ok(revoked as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_checked_says_what_requirement_says() {
        for syscall in Syscall::ALL {
            assert_eq!(
                is_checked(syscall),
                requirement(syscall).is_some(),
                "{syscall:?}"
            );
        }
        // The messaging syscalls are checked (a wrong `is_checked` would
        // let them through unchecked).
        assert!(is_checked(Syscall::Send) && is_checked(Syscall::Receive));
    }
}
