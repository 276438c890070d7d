//! `retrace tools SPEC`: every tool the agent would see — built-in, WASM and MCP (each
//! server started to list its catalog) — with its tier,
//! what the policy does with a call (when the call names no path), where it comes from, and
//! what an error from it does to the run, and its argument schema (with `--json`, also the
//! name a model API is sent for it: `wire`). WASM components are loaded as a run would load them, so a tool that
//! would fail to start fails here.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use retrace_providers::ToolDef;
use retrace_providers::http::WireNames;
use retrace_runtime::policy::Policy;
use retrace_runtime::spec::Spec;
use retrace_runtime::tools::{ToolInfo, Toolbox, Workspace};

pub fn run(spec_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut spec = Spec::load(spec_path)?;
    retrace_runtime::tools::mcp::discover_now(&mut spec.mcp)?;
    let workspace = Workspace::new(&spec.workspace)?;
    let toolbox = Toolbox::for_spec(&spec, &workspace)
        .with_context(|| format!("setting up the tools of {}", spec_path.display()))?;
    let policy = Policy::new(&spec.policy)?;
    let infos = toolbox.offered(&spec);
    if json {
        // the name a model API is sent for each (every tool of the agent is offered at once)
        let offered: Vec<ToolDef> = infos.iter().map(ToolInfo::def).collect();
        let wire = WireNames::new(&offered);
        for info in &infos {
            let verdict = policy.check(&info.name, info.tier, None);
            let mut line = serde_json::to_value(info)?;
            line["policy"] = serde_json::to_value(&verdict)?;
            line["wire"] = serde_json::Value::String(wire.wire(&info.name));
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if infos.is_empty() {
        println!(
            "{} declares no tools: add `[tools] allow = [...]` or `wasm = [...]`",
            spec_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let name_width = infos.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<name_width$}  {:<11}  {:<10}  {:<6}  {:<8}  ORIGIN",
        "TOOL", "TIER", "IDEMPOTENT", "POLICY", "ON ERROR"
    );
    for info in &infos {
        let verdict = policy.check(&info.name, info.tier, None);
        println!(
            "{:<name_width$}  {:<11}  {:<10}  {:<6}  {:<8}  {}",
            info.name,
            serde_json::to_value(info.tier)?.as_str().unwrap_or("?"),
            if info.idempotent { "yes" } else { "no" },
            serde_json::to_value(verdict.action)?
                .as_str()
                .unwrap_or("?"),
            serde_json::to_value(info.on_error)?.as_str().unwrap_or("?"),
            info.origin
        );
        println!("{:name_width$}  {}", "", info.description);
        println!("{:name_width$}  args: {}", "", info.schema);
    }
    Ok(ExitCode::SUCCESS)
}
