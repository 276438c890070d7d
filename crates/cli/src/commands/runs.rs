//! `retrace runs`: the runs in a store, newest last.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::{RunId, unique_prefix_len};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_store::Store;

use crate::output;
use crate::store_access;

pub fn run(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let mut runs = store.runs()?;
    runs.sort_by_key(|r| (r.created_at, r.id));
    if json {
        for r in &runs {
            let state = state_at_head(&store, &r.id, SnapshotPolicy::default())?.state;
            let line = serde_json::json!({
                "run": r.id,
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
    println!(
        "{:<width$}  {:<24}  {:>8}  {:<18}  {:>6}  {:>9}  {:>11}  FORKED FROM",
        "RUN", "CREATED", "EVENTS", "STATUS", "STEPS", "TOKENS", "COST"
    );
    for r in &runs {
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
        let state = state_at_head(&store, &r.id, SnapshotPolicy::default())?.state;
        let t = &state.totals;
        println!(
            "{:<width$}  {:<24}  {:>8}  {:<18}  {:>6}  {:>9}  {:>11}  {origin}",
            &r.id.to_hex()[..width],
            output::time(r.created_at),
            r.len(),
            output::status(&state.status),
            t.steps,
            t.input_tokens + t.output_tokens,
            output::usd(t.cost_micro_usd),
        );
    }
    Ok(ExitCode::SUCCESS)
}
