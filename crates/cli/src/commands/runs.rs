//! `retrace runs`: the runs in a store, newest last, with where each stands: `running` (a
//! daemon drives it now), `parked: …` (what a human must decide), `needs resume`, or how it
//! finished.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::{RunId, unique_prefix_len};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_serve::api::RunView;
use retrace_store::Store;

use crate::output;
use crate::store_access;

pub fn run(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let mut runs = store.runs()?;
    runs.sort_by_key(|r| (r.created_at, r.id));
    // Only a daemon drives the runs of a store on disk while others read it (a process
    // driving one holds the store's lock); on PostgreSQL, whoever holds a run's lease.
    let driven: Vec<RunId> = match access.daemon() {
        Some(client) => client
            .runs()?
            .into_iter()
            .filter(|v| v.active)
            .filter_map(|v| v.id.parse().ok())
            .collect(),
        None => access.leased_runs()?,
    };
    let runs = parents_first(&runs);
    let mut views = Vec::with_capacity(runs.len());
    for r in &runs {
        let state = state_at_head(&store, &r.id, SnapshotPolicy::default())?.state;
        let view = RunView::from_state(store.as_ref(), r, &state, driven.contains(&r.id));
        views.push((r, state, view));
    }
    if json {
        for (r, state, view) in &views {
            let line = serde_json::json!({
                "run": r.id,
                "name": view.name,
                "standing": view.status,
                "reason": view.reason,
                "status": state.status,
                "totals": state.totals,
                "created_at": r.created_at,
                "events": r.len(),
                "head": r.head.map(|h| h.id),
                "forked_from": r.origin.map(|o| serde_json::json!({"run": o.run, "seq": o.at.seq, "event": o.at.id})),
                "meta": r.meta,
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!(
            "no runs in {} yet; `retrace run SPEC --input TEXT` starts one",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let width = unique_prefix_len(&ids);
    let name_width = views
        .iter()
        .map(|(r, _, v)| v.name.chars().count() + 2 * depth(&runs, r))
        .max()
        .unwrap_or(0)
        .max(4);
    let status_width = views
        .iter()
        .map(|(_, _, v)| v.status.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:<width$}  {:<name_width$}  {:<24}  {:>6}  {:<status_width$}  {:>5}  {:>9}  {:>11}  FORKED FROM",
        "RUN", "NAME", "CREATED", "EVENTS", "STATUS", "STEPS", "TOKENS", "COST"
    );
    for (r, state, view) in &views {
        // a child run (agent.delegate) is listed under its parent, indented per level
        let depth = depth(&runs, r);
        let name = if depth == 0 {
            view.name.clone()
        } else {
            format!("{}└ {}", "  ".repeat(depth - 1), view.name)
        };
        let edited = r.meta.get("edited").is_some_and(|e| e == "true");
        let origin = r
            .origin
            .map(|o| {
                let shared = format!("{}@{}", &o.run.to_hex()[..width], o.at.seq);
                if edited {
                    format!("{shared}, then an edited event")
                } else {
                    shared
                }
            })
            .unwrap_or_default();
        let t = &state.totals;
        println!(
            "{:<width$}  {:<name_width$}  {:<24}  {:>6}  {:<status_width$}  {:>5}  {:>9}  {:>11}  {origin}",
            &r.id.to_hex()[..width],
            name,
            output::time(r.created_at),
            r.len(),
            view.status,
            t.steps,
            t.tokens(),
            output::usd(t.cost_micro_usd),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs` (oldest first) with each child run (meta `parent`) right after its parent and
/// its parent's earlier children: the tree, depth first.
fn parents_first(runs: &[retrace_store::RunInfo]) -> Vec<retrace_store::RunInfo> {
    let parent_of = |r: &retrace_store::RunInfo| {
        r.meta
            .get("parent")
            .and_then(|p| p.parse::<RunId>().ok())
            .filter(|p| runs.iter().any(|o| o.id == *p))
    };
    let mut out: Vec<retrace_store::RunInfo> = Vec::with_capacity(runs.len());
    let mut stack: Vec<&retrace_store::RunInfo> = runs
        .iter()
        .filter(|r| parent_of(r).is_none())
        .rev()
        .collect();
    while let Some(r) = stack.pop() {
        out.push(r.clone());
        stack.extend(runs.iter().filter(|c| parent_of(c) == Some(r.id)).rev());
    }
    out
}

/// How many parents above `r` are among `runs`.
fn depth(runs: &[retrace_store::RunInfo], r: &retrace_store::RunInfo) -> usize {
    let mut depth = 0;
    let mut here = r;
    while let Some(parent) = here
        .meta
        .get("parent")
        .and_then(|p| p.parse::<RunId>().ok())
        .and_then(|p| runs.iter().find(|o| o.id == p))
    {
        depth += 1;
        here = parent;
        if depth > runs.len() {
            break;
        }
    }
    depth
}
