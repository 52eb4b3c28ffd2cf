//! Fuel check sites: places added to a module's code so that a guest
//! reaches a fuel check after a bounded amount of work, whatever the shape
//! of its code.
//!
//! Wasmtime checks a store's fuel only where a function starts and where a
//! loop's header is; between two checks runs whatever straight-line code
//! lies there. A function can hold millions of instructions without a
//! loop, and a chain of calls returning runs each caller's code after its
//! call without a check: a guest built that way ran 6,000,000 fuel units
//! past three checkpoints (the brief: a yield point at least every
//! 1,000,000 instructions). Before a module is compiled, [`instrument`]
//! therefore adds an empty `loop` (`0x03 0x40 0x0b`: no operands, no
//! results, no back edge, and no fuel of its own) wherever a path could
//! otherwise run [`MAX_UNCHECKED`] units since its last check; Cranelift
//! emits a fuel check (and the epoch check, when on) at every loop header,
//! so each is a check site. Code whose paths are all shorter is left as it
//! was, byte for byte.
//!
//! # The bound
//!
//! One pass over each function body, in order, tracks `m`: the most fuel
//! any path reaching this point can have used since its last check. Fuel
//! is counted as Wasmtime counts it by default (one unit an operator, none
//! for `nop`, `drop`, `block`, `loop`, `end`, `else`, `return` and
//! `unreachable`), a bulk operation as the most Wasmtime adds to its count
//! without a check of its own (128 units, plus one). Control flow is
//! structured and only loops branch back, to a check, so `m` is exact
//! enough in one pass: a block's end takes the largest `m` of its
//! fall-through and of the branches to it, an `if`'s `else` starts again
//! from the `m` at the `if`. A call to a function of the module resets `m`
//! to the callee's *tail* (the most its code can run after its last check
//! before it returns), since the callee's entry is a check, and a tail
//! call gives this function the callee's tail; a call to a kernel import
//! adds one; an indirect call takes the largest tail there is. Tails
//! depend on one another through calls (recursion too), so they are
//! computed from zero in rounds until a round changes none: then each
//! function's walk with those tails gives back its own, and by induction
//! on the depth of calls no run returns from a function with more
//! unchecked work than its tail. Functions whose tails still rise after
//! [`TAIL_ROUNDS`] rounds (recursion through code after a call climbs a
//! little every round) are given the largest tail a function can have,
//! which is always sound: a site is added wherever `m` reaches the bound,
//! so no function returns with more, and a call to one of them is followed
//! by a site. After [`MAX_TAIL_ROUNDS`], every function is.
//!
//! A site adds three bytes, at most one for every two bytes of code (after
//! a call); the compile budget's `MAX_FUNCTION_BYTES` keeps every body
//! with its sites under the engine's limit, and a body that would still
//! pass it is refused, never compiled without its sites.
//!
//! A module this pass cannot read (or one using exceptions, which the
//! engine refuses anyway) is compiled as it is, for Wasmtime to judge.

use std::borrow::Cow;
use wasmparser::{BinaryReaderError, FunctionBody, Operator, Parser, Payload, TypeRef};

/// The most fuel a path may use between two checks before a check site is
/// added: one slice (`checkpoint_fuel`'s default), so a guest passes a
/// checkpoint at most a slice and this much fuel after its slice ends.
pub const MAX_UNCHECKED: u64 = 100_000;

/// Rounds of tail computation before the functions whose tails still rise
/// are given the largest tail.
pub const TAIL_ROUNDS: usize = 8;

/// Rounds of tail computation in all before every function is given the
/// largest tail.
pub const MAX_TAIL_ROUNDS: usize = 64;

/// The instrumentation's version, part of the compiled-module cache's key:
/// bumped whenever its output changes.
pub const VERSION: u32 = 2;

/// The largest cost of a bulk operation Wasmtime adds to its count without
/// checking fuel (see `pre_translate_bulk_op` in wasmtime-cranelift).
const SMALL_BULK_OP_COST: u64 = 128;

/// Wasmtime's largest function body (wasmparser's
/// `MAX_WASM_FUNCTION_SIZE`); the compile budget keeps bodies far enough
/// under it that their sites fit.
const MAX_BODY_BYTES: usize = 7_654_321;

/// An empty loop: `loop (type []) end`.
const SITE: [u8; 3] = [0x03, 0x40, 0x0b];

/// Why a module is compiled as it is, not instrumented.
#[derive(Debug)]
pub enum Skipped {
    /// Its bytes do not parse.
    Unreadable(BinaryReaderError),
    /// It uses an operator the pass does not follow (exception handling,
    /// which the kernel's engine refuses).
    Unsupported(&'static str),
    /// A body with its sites would be larger than the engine compiles (the
    /// defined function's index, and its size with them).
    TooLarge(usize, usize),
}

impl From<BinaryReaderError> for Skipped {
    fn from(error: BinaryReaderError) -> Self {
        Skipped::Unreadable(error)
    }
}

/// `wasm` (a binary module) with check sites added where its paths need
/// them (see the module docs); the same bytes if none does.
pub fn instrument(wasm: &[u8]) -> Result<Cow<'_, [u8]>, Skipped> {
    let mut imported = 0u32;
    let mut bodies: Vec<FunctionBody<'_>> = Vec::new();
    let mut sections: Vec<(u8, std::ops::Range<usize>)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        match &payload {
            Payload::ImportSection(imports) => {
                for import in imports.clone().into_imports() {
                    if matches!(import?.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        imported += 1;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => bodies.push(body.clone()),
            Payload::Version { encoding, .. } if *encoding != wasmparser::Encoding::Module => {
                return Err(Skipped::Unsupported("a component"));
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            sections.push((id, range));
        }
    }
    if bodies.is_empty() {
        return Ok(Cow::Borrowed(wasm));
    }
    let (tails, largest) = tails(&bodies, imported)?;
    let mut code = Vec::with_capacity(bodies.len());
    let mut sites = 0u32;
    for body in &bodies {
        let mut out = Vec::new();
        let walked = walk(body, &tails, imported, largest, Some(&mut out), wasm)?;
        if out.len() > MAX_BODY_BYTES {
            return Err(Skipped::TooLarge(code.len(), out.len()));
        }
        sites += walked.sites;
        code.push(out);
    }
    if sites == 0 {
        return Ok(Cow::Borrowed(wasm));
    }
    Ok(Cow::Owned(rebuild(wasm, &sections, &code)))
}

/// Compiles `bytes` (a binary module, or WAT text) on `engine` with check
/// sites added (see [`instrument`]). A module that does not compile fails
/// with the engine's message about the module as it was given.
pub fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<wasmtime::Module> {
    let binary = if bytes.starts_with(b"\0asm") {
        Cow::Borrowed(bytes)
    } else {
        match wat::parse_bytes(bytes) {
            Ok(binary) => binary,
            // Wasmtime says what is wrong with the text.
            Err(_) => return wasmtime::Module::new(engine, bytes),
        }
    };
    match instrument(&binary) {
        Ok(instrumented) => wasmtime::Module::new(engine, &instrumented).map_err(|error| {
            // The message (and its offsets) should be about the module as
            // given.
            match wasmtime::Module::validate(engine, &binary) {
                Err(original) => original,
                Ok(()) => error,
            }
        }),
        Err(Skipped::TooLarge(function, bytes)) => Err(wasmtime::Error::msg(format!(
            "defined function {function} would be {bytes} bytes long with its fuel check sites, more than the engine compiles ({MAX_BODY_BYTES})"
        ))),
        Err(_) => wasmtime::Module::new(engine, &binary),
    }
}

/// Every function's tail (see the module docs), by defined-function index,
/// and the tail an indirect call is given: at least the largest of them.
///
/// A walk's result does not only rise with its callees' tails (a larger one
/// can move a site earlier and leave less after it), so the tails are not
/// read as a least fixed point: what makes them sound is that the last
/// round changed none, so every function's walk, which the emission
/// repeats with the same tails and the same indirect tail, gives back its
/// own tail.
fn tails(bodies: &[FunctionBody<'_>], imported: u32) -> Result<(Vec<u64>, u64), Skipped> {
    let mut tails = vec![0u64; bodies.len()];
    // Functions given the largest tail: walked no more.
    let mut pinned = vec![false; bodies.len()];
    // The largest tail seen in any round: an indirect call's.
    let mut largest = 0;
    let mut changed_last = vec![false; bodies.len()];
    for round in 0..MAX_TAIL_ROUNDS {
        let mut changed = false;
        for (index, body) in bodies.iter().enumerate() {
            if pinned[index] {
                continue;
            }
            let tail = walk(body, &tails, imported, largest, None, &[])?.tail;
            changed_last[index] = tail != tails[index];
            if changed_last[index] {
                tails[index] = tail;
                largest = largest.max(tail);
                changed = true;
            }
        }
        if !changed {
            return Ok((tails, largest));
        }
        // Still rising after a few rounds: recursion through code after a
        // call, which would climb a little every round. Those functions
        // are given the largest tail a function can have (always sound:
        // a site is added wherever a path reaches it, so none returns with
        // more), and the others go on settling.
        if (round + 1) % TAIL_ROUNDS == 0 {
            for index in 0..bodies.len() {
                if changed_last[index] {
                    pinned[index] = true;
                    tails[index] = MAX_UNCHECKED;
                    largest = MAX_UNCHECKED;
                }
            }
        }
    }
    Ok((vec![MAX_UNCHECKED; bodies.len()], MAX_UNCHECKED))
}

/// What one walk over a body found.
struct Walked {
    /// The most fuel its code can use after its last check before it
    /// returns.
    tail: u64,
    /// Check sites it added.
    sites: u32,
}

/// A block of the body being walked.
struct Frame {
    kind: Kind,
    /// `m` where an `if` branched (where its `else` starts).
    at_if: u64,
    /// `m` where an `if`'s then-arm ended, once its `else` is reached.
    then_end: Option<u64>,
    /// The largest `m` a branch to this block's end carried.
    branch: u64,
}

#[derive(PartialEq)]
enum Kind {
    Function,
    Block,
    Loop,
    If,
}

/// Walks `body`, tracking `m` (see the module docs); with `out`, writes the
/// body (locals and code) there with a check site wherever `m` reaches
/// [`MAX_UNCHECKED`], and counts them.
fn walk(
    body: &FunctionBody<'_>,
    tails: &[u64],
    imported: u32,
    largest: u64,
    mut out: Option<&mut Vec<u8>>,
    wasm: &[u8],
) -> Result<Walked, Skipped> {
    let mut reader = body.get_operators_reader()?;
    let mut copied = reader.original_position();
    if let Some(out) = out.as_deref_mut() {
        out.extend_from_slice(&wasm[body.range().start..copied]);
    }
    let mut frames = vec![Frame {
        kind: Kind::Function,
        at_if: 0,
        then_end: None,
        branch: 0,
    }];
    let mut m = 0u64;
    let mut reachable = true;
    let mut tail = 0u64;
    let mut sites = 0u32;
    while !reader.eof() {
        let op = reader.read()?;
        let end = reader.original_position();
        // Where a branch to `depth` lands: a loop's header is a check.
        let branch_to = |frames: &mut Vec<Frame>, depth: u32, m: u64, tail: &mut u64| {
            let Some(index) = frames.len().checked_sub(1 + depth as usize) else {
                return;
            };
            let frame = &mut frames[index];
            match frame.kind {
                Kind::Loop => {}
                Kind::Function => *tail = (*tail).max(m),
                _ => frame.branch = frame.branch.max(m),
            }
        };
        match op {
            Operator::Nop | Operator::Drop => {}
            Operator::Block { .. } => frames.push(Frame {
                kind: Kind::Block,
                at_if: 0,
                then_end: None,
                branch: 0,
            }),
            Operator::Loop { .. } => {
                frames.push(Frame {
                    kind: Kind::Loop,
                    at_if: 0,
                    then_end: None,
                    branch: 0,
                });
                m = 0;
            }
            Operator::If { .. } => {
                m += 1;
                frames.push(Frame {
                    kind: Kind::If,
                    at_if: m,
                    then_end: None,
                    branch: 0,
                });
            }
            Operator::Else => {
                // Invalid code (an `else` outside an `if`) is the engine's
                // to refuse.
                let Some(frame) = frames.last_mut().filter(|f| f.kind == Kind::If) else {
                    return Err(Skipped::Unsupported("an else outside an if"));
                };
                frame.then_end = Some(if reachable { m } else { 0 });
                m = frame.at_if;
                reachable = true;
            }
            Operator::End => {
                let Some(frame) = frames.pop() else {
                    return Err(Skipped::Unsupported("an end that closes nothing"));
                };
                let fell = if reachable { m } else { 0 };
                m = match frame.kind {
                    Kind::Function => {
                        tail = tail.max(fell);
                        0
                    }
                    Kind::Block => fell.max(frame.branch),
                    Kind::Loop => fell,
                    Kind::If => {
                        let other = frame.then_end.unwrap_or(frame.at_if);
                        fell.max(other).max(frame.branch)
                    }
                };
                reachable = true;
            }
            Operator::Br { relative_depth } => {
                m += 1;
                branch_to(&mut frames, relative_depth, m, &mut tail);
                reachable = false;
            }
            Operator::BrIf { relative_depth }
            | Operator::BrOnNull { relative_depth }
            | Operator::BrOnNonNull { relative_depth } => {
                m += 1;
                branch_to(&mut frames, relative_depth, m, &mut tail);
            }
            Operator::BrTable { targets } => {
                m += 1;
                for depth in targets.targets() {
                    branch_to(&mut frames, depth?, m, &mut tail);
                }
                branch_to(&mut frames, targets.default(), m, &mut tail);
                reachable = false;
            }
            Operator::Return => {
                tail = tail.max(m);
                reachable = false;
            }
            Operator::Unreachable => reachable = false,
            // The callee's entry is a check; its tail is what it may run
            // after its last one.
            // A tail call returns from this function when its callee
            // returns: what the callee runs after its last check is this
            // function's tail too.
            Operator::ReturnCall { function_index } => {
                let after = match function_index.checked_sub(imported) {
                    Some(defined) => tails.get(defined as usize).copied().unwrap_or(largest),
                    None => m + 1,
                };
                tail = tail.max(after);
                reachable = false;
            }
            Operator::ReturnCallIndirect { .. } | Operator::ReturnCallRef { .. } => {
                tail = tail.max((m + 1).max(largest));
                reachable = false;
            }
            Operator::Call { function_index } => {
                m = match function_index.checked_sub(imported) {
                    Some(defined) => tails.get(defined as usize).copied().unwrap_or(largest),
                    None => m + 1,
                };
            }
            Operator::CallIndirect { .. } | Operator::CallRef { .. } => {
                m = (m + 1).max(largest);
            }
            Operator::TryTable { .. }
            | Operator::Try { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. }
            | Operator::Rethrow { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef => return Err(Skipped::Unsupported("exception handling")),
            // Priced by the byte, element or page: Wasmtime folds a
            // constant cost of up to 128 units into its count with no check
            // of its own (a larger or unknown one is checked, but counting
            // it so is never wrong).
            Operator::MemoryGrow { .. }
            | Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. } => m += 1 + SMALL_BULK_OP_COST,
            _ => m += 1,
        }
        if reachable && m >= MAX_UNCHECKED {
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&wasm[copied..end]);
                out.extend_from_slice(&SITE);
                copied = end;
            }
            sites += 1;
            m = 0;
        }
    }
    if let Some(out) = out {
        out.extend_from_slice(&wasm[copied..body.range().end]);
    }
    Ok(Walked { tail, sites })
}

/// The module `wasm` with its code section's bodies replaced by `code`
/// (each a body's locals and code, without its size) and every other
/// section as it was; custom sections that point into code by offset
/// (`metadata.code.*`, e.g. branch hints) are left out.
fn rebuild(wasm: &[u8], sections: &[(u8, std::ops::Range<usize>)], code: &[Vec<u8>]) -> Vec<u8> {
    const CODE: u8 = 10;
    const CUSTOM: u8 = 0;
    let mut out = Vec::with_capacity(wasm.len() + wasm.len() / 8);
    out.extend_from_slice(&wasm[..8]);
    for (id, range) in sections {
        let contents = &wasm[range.clone()];
        if *id == CUSTOM && custom_name(contents).is_some_and(|n| n.starts_with("metadata.code.")) {
            continue;
        }
        if *id == CODE {
            let mut section = Vec::new();
            leb128(&mut section, code.len() as u64);
            for body in code {
                leb128(&mut section, body.len() as u64);
                section.extend_from_slice(body);
            }
            out.push(CODE);
            leb128(&mut out, section.len() as u64);
            out.extend_from_slice(&section);
        } else {
            out.push(*id);
            leb128(&mut out, contents.len() as u64);
            out.extend_from_slice(contents);
        }
    }
    out
}

/// A custom section's name, from its contents.
fn custom_name(contents: &[u8]) -> Option<&str> {
    let mut reader = wasmparser::BinaryReader::new(contents, 0);
    reader.read_string().ok()
}

/// Appends `value` as unsigned LEB128.
fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests;
