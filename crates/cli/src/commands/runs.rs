//! `retrace runs`: the runs in a store, newest last.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::{RunId, unique_prefix_len};
use retrace_store::Store;

use crate::output;
use crate::store_access;

pub fn run(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?;
    let mut runs = store.runs()?;
    runs.sort_by_key(|r| (r.created_at, r.id));
    if json {
        for r in &runs {
            let line = serde_json::json!({
                "run": r.id,
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
            "no runs in {} yet; `retrace demo` records one",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let width = unique_prefix_len(&ids);
    println!(
        "{:<width$}  {:<24}  {:>8}  FORKED FROM",
        "RUN", "CREATED", "EVENTS"
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
        println!(
            "{:<width$}  {:<24}  {:>8}  {origin}",
            &r.id.to_hex()[..width],
            output::time(r.created_at),
            r.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
