//! `estactl list-modules` and `estactl show-capabilities`: what an app is
//! made of, without running it.

use anyhow::{Result, bail};
use estalogic_kernel::Kernel;
use estalogic_kernel::abi::Rights;
use estalogic_kernel::core::capabilities_engine::Scope;
use estalogic_kernel::loader::manifest::ModuleSource;
use estalogic_kernel::syscalls::capabilities::capability_for;
use estalogic_kernel::syscalls::process::one_line;

fn rights_text(rights: Rights) -> String {
    Rights::NAMES
        .iter()
        .filter(|(_, right)| rights.contains(*right))
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

fn scope_text(scope: &Scope) -> String {
    crate::output::printable(&match scope {
        Scope::All => "everything".to_string(),
        Scope::Names(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        Scope::Prefixes(prefixes) => prefixes
            .iter()
            .map(|p| format!("{p}/"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Prints every module with its registry state.
pub fn list_modules(kernel: &Kernel, json: bool) -> Result<()> {
    let entries: Vec<_> = kernel.registry().iter().collect();
    if json {
        let modules: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                let m = entry.manifest();
                serde_json::json!({
                    "name": m.name, "version": m.version.to_string(), "description": m.description,
                    "state": entry.state().to_string(), "priority": m.priority.name(),
                    "memory_class": m.memory_class.name(), "preload": m.preload,
                    "entry_point": m.entry_point,
                    "dependencies": m.dependencies.iter().map(|(n, r)| format!("{n} {r}")).collect::<Vec<_>>(),
                    "capabilities": m.capabilities_required.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&modules)?)?;
        return Ok(());
    }
    outln!(
        "{:<16} {:<9} {:<9} {:<11} {:<8} {:<14} needs",
        "module",
        "version",
        "priority",
        "memory",
        "state",
        "source"
    )?;
    for entry in entries {
        let m = entry.manifest();
        let source = match &m.module {
            ModuleSource::Bundled(name) => format!("bundled:{name}"),
            ModuleSource::File(path) => crate::output::printable(&path.display().to_string()),
        };
        let needs: Vec<String> = m
            .dependencies
            .iter()
            .map(|(name, req)| format!("{name} {req}"))
            .collect();
        outln!(
            "{:<16} {:<9} {:<9} {:<11} {:<8} {:<14} {}",
            m.name,
            m.version.to_string(),
            m.priority.name(),
            m.memory_class.name(),
            entry.state().name(),
            source,
            if needs.is_empty() {
                "-".to_string()
            } else {
                needs.join(", ")
            }
        )?;
        if !m.description.is_empty() {
            outln!("{:<16} {}", "", one_line(&m.description))?;
        }
    }
    Ok(())
}

/// Prints the capabilities `module`'s processes are granted at spawn.
pub fn show_capabilities(kernel: &Kernel, module: &str, json: bool) -> Result<()> {
    let Some(entry) = kernel.registry().latest(module) else {
        let known: Vec<String> = kernel
            .registry()
            .iter()
            .map(|e| e.manifest().name.clone())
            .collect();
        bail!("no module named {module:?} (modules: {})", known.join(", "));
    };
    let manifest = entry.manifest();
    let mut rows = Vec::new();
    for request in &manifest.capabilities_required {
        let capability = capability_for(request).map_err(anyhow::Error::msg)?;
        // The request as the manifest wrote it: its scope is the app's
        // text, escaped like every other column.
        rows.push((crate::output::printable(&request.to_string()), capability));
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(request, c)| {
                serde_json::json!({
                    "request": request,
                    "resource": format!("{:?}", c.resource),
                    "rights": rights_text(c.rights),
                    "scope": scope_text(&c.scope),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"module": module, "capabilities": list})
            )?
        )?;
        return Ok(());
    }
    outln!("{module} {} is granted, at spawn:", manifest.version)?;
    if rows.is_empty() {
        outln!("  nothing: it can only compute, yield and exit")?;
    }
    for (request, capability) in rows {
        outln!(
            "  {:<28} {:?}: {} on {}",
            request,
            capability.resource,
            rights_text(capability.rights),
            scope_text(&capability.scope)
        )?;
    }
    outln!("Everything else it touches is refused with PERMISSION_DENIED.")?;
    Ok(())
}
