//! `retrace check [RUN…|--all]`: the determinism check (see `retrace_eval::check`) over runs
//! of the store, with a line per run, the first divergence of each spelled out as expected
//! against actual, and a summary.
//!
//! Exit status: 0 when every decision of every run comes out the same, 2 when a run
//! diverges, 1 on an error (an unreadable run is an error, not a divergence).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use retrace_eval::check::{RunCheck, check_run};
use retrace_runtime::decide::decide;
use retrace_store::Store;
use serde_json::json;

use crate::store_access;

pub fn run(
    dir: &Path,
    runs: &[String],
    all: bool,
    tree: bool,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let mut ids: Vec<retrace_events::RunId> = if all {
        store.runs()?.into_iter().map(|r| r.id).collect()
    } else if runs.is_empty() {
        bail!("name the runs to check (RUN…), or check them all with --all");
    } else {
        runs.iter()
            .map(|r| store.resolve_run(r))
            .collect::<Result<Vec<_>, _>>()?
    };
    // each run's tree: its children right after it, theirs after them
    let mut i = 0;
    while tree && i < ids.len() {
        let below: Vec<retrace_events::RunId> = retrace_store::tree::children(&store, &ids[i])?
            .into_iter()
            .map(|c| c.child)
            .filter(|c| !ids.contains(c))
            .collect();
        ids.splice(i + 1..=i, below);
        i += 1;
    }
    let started = Instant::now();
    let mut checks = Vec::with_capacity(ids.len());
    for id in &ids {
        // another agent decided what an imported run did: nothing of retrace's to check
        if let Some(format) = store.require_run(id)?.meta.get("imported") {
            if as_json {
                println!(
                    "{}",
                    json!({"run": id, "skipped": format!("imported ({format})")})
                );
            } else {
                println!("skip  {id}  imported from {format}: its decisions were another agent's");
            }
            continue;
        }
        let check = check_run(&store, id, &decide)?;
        if as_json {
            println!("{}", serde_json::to_string(&check)?);
        } else {
            print_check(&check);
        }
        checks.push(check);
    }
    let diverged = checks.iter().filter(|c| !c.passed()).count();
    let decisions: u64 = checks.iter().map(|c| c.decisions).sum();
    let secs = started.elapsed().as_secs_f64();
    if as_json {
        let summary = json!({"summary": {"runs": checks.len(), "diverged": diverged, "decisions": decisions, "seconds": secs}});
        println!("{summary}");
    } else if checks.is_empty() {
        println!("no runs to check in {}", dir.display());
    } else {
        println!(
            "{} runs, {decisions} decisions checked in {secs:.2} s: {}",
            checks.len(),
            if diverged == 0 {
                "all the same".to_owned()
            } else {
                format!("{diverged} diverged")
            }
        );
    }
    Ok(if diverged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print_check(check: &RunCheck) {
    let Some(d) = &check.divergence else {
        println!(
            "ok    {}  {} decisions the same ({} events)",
            check.run, check.decisions, check.events
        );
        return;
    };
    let show = |a| serde_json::to_string(a).unwrap_or_default();
    println!(
        "DIFF  {}  decision {} at seq {} comes out otherwise",
        check.run, check.decisions, d.seq
    );
    println!("        expected (today): {}", show(&d.expected));
    if let Some(reason) = &d.expected_reason {
        println!("                  because {reason}");
    }
    println!("        actual (the run): {}", show(&d.actual));
    for change in &d.changes {
        println!(
            "        {} {}: {} -> {}",
            serde_json::to_value(change.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            if change.path.is_empty() {
                "/"
            } else {
                &change.path
            },
            change.old.as_ref().map_or("-".into(), ToString::to_string),
            change.new.as_ref().map_or("-".into(), ToString::to_string),
        );
    }
}
