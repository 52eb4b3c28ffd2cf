//! The compile budget: limits checked on a module's structure before it is
//! compiled, so that a small module built to make Cranelift slow or hungry
//! (tens of thousands of nested loops, a million functions or data
//! segments) is refused at once with a reason, instead of holding the boot
//! for minutes and gigabytes.
//!
//! Each limit is far above what compilers emit for real services (loops
//! nest a handful deep, a large Rust module has tens of thousands of
//! functions and a few data segments). The scan is one pass over the
//! module's bytes; a module it cannot parse is left to Wasmtime, whose
//! parser is this one (same version and features), to refuse with its own
//! message.

use wasmparser::{
    FuncValidatorAllocations, FunctionBody, Operator, Parser, Payload, ValidPayload, Validator,
    WasmFeatures,
};

/// The most functions a module may define.
pub const MAX_FUNCTIONS: u32 = 50_000;
/// The largest function body, in bytes: under Wasmtime's own limit
/// (7,654,321 bytes) by enough that the fuel check sites the loader adds
/// keep every body within it (`loader::check_sites`): at worst a body of
/// two-byte calls to functions whose tail is the bound, each followed by a
/// three-byte site, grows to two and a half times its size.
pub const MAX_FUNCTION_BYTES: usize = 3_000_000;
/// The most table elements a module's element segments may hold in all:
/// an active segment whose offset is not a plain constant is applied by
/// code compiled element by element (100 segments of 128 elements took
/// about 20 times as long to compile as a function body of their size),
/// and a table holds at most 10,000 (two tables' worth).
pub const MAX_ELEMENTS: u64 = 20_000;
/// The most data segments a module may have.
pub const MAX_DATA_SEGMENTS: u32 = 10_000;
/// The most element segments a module may have.
pub const MAX_ELEMENT_SEGMENTS: u32 = 10_000;
/// The deepest nesting of blocks, loops, ifs and try blocks in a function.
pub const MAX_NESTING: u32 = 50_000;
/// The deepest nesting of loops in a function: compile time grows with its
/// square (10,000 nested loops took 2 s, 40,000 took 27 s).
pub const MAX_LOOP_NESTING: u32 = 1_000;
/// The most the squares of every function's deepest loop nesting may add
/// up to (about 0.2 s of compilation at most).
pub const MAX_LOOP_WORK: u64 = 10_000_000;
/// The most values a function may hold on its operand stack at once:
/// register allocation slows down sharply with simultaneously live values
/// (70,000 took minutes).
pub const MAX_OPERAND_STACK: u32 = 1_000;
/// Operand stack heights up to this are free; the squares of each
/// function's excess over it may add up to [`MAX_OPERAND_WORK`].
pub const FREE_OPERAND_STACK: u32 = 64;
/// See [`FREE_OPERAND_STACK`].
pub const MAX_OPERAND_WORK: u64 = 10_000_000;

/// Checks `wasm` (a binary module) against the limits above; the error
/// names the limit and by how much the module passes it.
pub fn check(wasm: &[u8]) -> Result<(), String> {
    // Every feature this parser knows: the validator only measures here
    // (Wasmtime decides what is allowed), so it must accept whatever
    // Wasmtime might.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut allocations = FuncValidatorAllocations::default();
    let (mut loop_work, mut operand_work) = (0u64, 0u64);
    let mut function = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        // Wasmtime parses with the same parser and says what is wrong.
        let Ok(payload) = payload else {
            return Ok(());
        };
        match &payload {
            Payload::FunctionSection(functions) if functions.count() > MAX_FUNCTIONS => {
                return Err(format!(
                    "it defines {} functions; the kernel compiles at most {MAX_FUNCTIONS}",
                    functions.count()
                ));
            }
            Payload::DataSection(data) if data.count() > MAX_DATA_SEGMENTS => {
                return Err(format!(
                    "it has {} data segments; the kernel compiles at most {MAX_DATA_SEGMENTS}",
                    data.count()
                ));
            }
            Payload::CodeSectionEntry(body) if body.range().len() > MAX_FUNCTION_BYTES => {
                return Err(format!(
                    "function {function} of its code section is {} bytes long; the kernel compiles bodies of at most {MAX_FUNCTION_BYTES}",
                    body.range().len()
                ));
            }
            Payload::ElementSection(elements) if elements.count() <= MAX_ELEMENT_SEGMENTS => {
                let mut total = 0u64;
                for element in elements.clone() {
                    let Ok(element) = element else {
                        return Ok(());
                    };
                    total += u64::from(match element.items {
                        wasmparser::ElementItems::Functions(items) => items.count(),
                        wasmparser::ElementItems::Expressions(_, items) => items.count(),
                    });
                }
                if total > MAX_ELEMENTS {
                    return Err(format!(
                        "its element segments hold {total} table elements; the kernel compiles at most {MAX_ELEMENTS}"
                    ));
                }
            }
            Payload::ElementSection(elements) => {
                return Err(format!(
                    "it has {} element segments; the kernel compiles at most {MAX_ELEMENT_SEGMENTS}",
                    elements.count()
                ));
            }
            _ => {}
        }
        let Ok(valid) = validator.payload(&payload) else {
            return Ok(());
        };
        let ValidPayload::Func(to_validate, body) = valid else {
            continue;
        };
        let mut func = to_validate.into_validator(allocations);
        let Some(shape) = shape_of(&mut func, &body) else {
            return Ok(());
        };
        allocations = func.into_allocations();
        if shape.nesting > MAX_NESTING {
            return Err(format!(
                "function {function} of its code section nests blocks {} deep; the kernel compiles at most {MAX_NESTING}",
                shape.nesting
            ));
        }
        if shape.loops > MAX_LOOP_NESTING {
            return Err(format!(
                "function {function} of its code section nests loops {} deep; the kernel compiles at most {MAX_LOOP_NESTING} (compile time grows with the square)",
                shape.loops
            ));
        }
        if shape.operands > MAX_OPERAND_STACK {
            return Err(format!(
                "function {function} of its code section holds {} values on its operand stack at once; the kernel compiles at most {MAX_OPERAND_STACK}",
                shape.operands
            ));
        }
        loop_work += u64::from(shape.loops).pow(2);
        operand_work += u64::from(shape.operands.saturating_sub(FREE_OPERAND_STACK)).pow(2);
        if loop_work > MAX_LOOP_WORK || operand_work > MAX_OPERAND_WORK {
            return Err(format!(
                "its functions add up to more compilation than the kernel does for a module (deep loops or operand stacks in many functions; the budget ran out at function {function})"
            ));
        }
        function += 1;
    }
    Ok(())
}

/// What makes a function slow to compile.
struct Shape {
    /// Deepest nesting of control blocks.
    nesting: u32,
    /// Deepest nesting of loops.
    loops: u32,
    /// Most values on the operand stack at once.
    operands: u32,
}

/// Validates `body` operator by operator with `func`, measuring it; `None`
/// if it does not validate (Wasmtime will say why).
fn shape_of(
    func: &mut wasmparser::FuncValidator<wasmparser::ValidatorResources>,
    body: &FunctionBody<'_>,
) -> Option<Shape> {
    let mut locals = body.get_locals_reader().ok()?;
    for _ in 0..locals.get_count() {
        let offset = locals.original_position();
        let (count, ty) = locals.read().ok()?;
        func.define_locals(offset, count, ty).ok()?;
    }
    let mut reader = body.get_operators_reader().ok()?;
    // For each open block, whether it is a loop.
    let mut open: Vec<bool> = Vec::new();
    let mut loops = 0u32;
    let mut shape = Shape {
        nesting: 0,
        loops: 0,
        operands: 0,
    };
    while !reader.eof() {
        let offset = reader.original_position();
        let operator = reader.read().ok()?;
        func.op(offset, &operator).ok()?;
        shape.operands = shape.operands.max(func.operand_stack_height());
        match operator {
            Operator::Loop { .. } => {
                open.push(true);
                loops += 1;
                shape.loops = shape.loops.max(loops);
            }
            Operator::Block { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
            | Operator::Try { .. } => open.push(false),
            Operator::End => {
                if open.pop() == Some(true) {
                    loops -= 1;
                }
            }
            _ => continue,
        }
        shape.nesting = shape.nesting.max(open.len() as u32);
    }
    Some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(kind: &str, depth: usize) -> Vec<u8> {
        let body = format!("{}{}", format!("({kind} ").repeat(depth), ")".repeat(depth));
        wat::parse_str(format!("(module (func {body}))")).unwrap()
    }

    #[test]
    fn ordinary_modules_pass() {
        assert_eq!(check(&nested("loop", 20)), Ok(()));
        assert_eq!(check(&nested("block", 5_000)), Ok(()));
        assert_eq!(check(&nested("loop", MAX_LOOP_NESTING as usize)), Ok(()));
        let services = wat::parse_str(
            r#"(module (memory 1) (data (i32.const 0) "a") (data (i32.const 8) "b")
                 (func (export "run") (local i32) (loop (br_if 0 (local.get 0)))))"#,
        )
        .unwrap();
        assert_eq!(check(&services), Ok(()));
    }

    #[test]
    fn deep_loops_are_refused_with_the_limit() {
        let error = check(&nested("loop", MAX_LOOP_NESTING as usize + 1)).unwrap_err();
        assert!(error.contains("nests loops 1001 deep"), "{error}");
        // Many functions just under the limit add up past the budget.
        let function = format!(
            "(func {}{})",
            "(loop ".repeat(MAX_LOOP_NESTING as usize),
            ")".repeat(MAX_LOOP_NESTING as usize)
        );
        let module = format!("(module {})", function.repeat(11));
        let error = check(&wat::parse_str(module).unwrap()).unwrap_err();
        assert!(error.contains("at function 10"), "{error}");
    }

    #[test]
    fn deep_blocks_and_too_many_items_are_refused() {
        let error = check(&nested("block", MAX_NESTING as usize + 1)).unwrap_err();
        assert!(error.contains("nests blocks 50001 deep"), "{error}");
        let functions = format!("(module {})", "(func)".repeat(MAX_FUNCTIONS as usize + 1));
        let error = check(&wat::parse_str(functions).unwrap()).unwrap_err();
        assert!(error.contains("50001 functions"), "{error}");
        let data = format!(
            "(module (memory 1) {})",
            "(data (i32.const 0) \"x\")".repeat(MAX_DATA_SEGMENTS as usize + 1)
        );
        let error = check(&wat::parse_str(data).unwrap()).unwrap_err();
        assert!(error.contains("10001 data segments"), "{error}");
    }

    #[test]
    fn deep_operand_stacks_are_refused() {
        let stack = |height: usize| {
            format!(
                "(func (result i32) {}{})",
                "i32.const 1 ".repeat(height),
                "i32.add ".repeat(height - 1)
            )
        };
        let fits = format!("(module {})", stack(MAX_OPERAND_STACK as usize));
        assert_eq!(check(&wat::parse_str(fits).unwrap()), Ok(()));
        let deep = format!("(module {})", stack(MAX_OPERAND_STACK as usize + 1));
        let error = check(&wat::parse_str(deep).unwrap()).unwrap_err();
        assert!(error.contains("holds 1001 values"), "{error}");
        let many = format!("(module {})", stack(MAX_OPERAND_STACK as usize).repeat(14));
        let error = check(&wat::parse_str(many).unwrap()).unwrap_err();
        assert!(error.contains("at function 11"), "{error}");
    }

    #[test]
    fn what_does_not_parse_is_left_to_wasmtime() {
        assert_eq!(check(b"\0asm\x01\0\0\0\x0a\xff"), Ok(()));
        assert_eq!(check(b"not wasm"), Ok(()));
    }
}
