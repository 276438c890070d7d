//! `retrace approve RUN [CALL] [--deny] [--note TEXT]`: decide a pending approval. The
//! decision is an appended event; `retrace resume RUN` continues the run.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use retrace_events::{Decision, Event, EventKind, canonical_json};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_runtime::entropy::now;
use retrace_store::Store;
use serde_json::json;

use crate::store_access;

pub fn run(
    dir: &Path,
    run: &str,
    call: Option<&str>,
    deny: bool,
    note: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?;
    let run = store.resolve_run(run)?;
    let state = state_at_head(&store, &run, SnapshotPolicy::default())?.state;
    let pending: Vec<&String> = state.approvals_pending.keys().collect();
    let call_id = match (call, pending.as_slice()) {
        (Some(call), _) if state.approvals_pending.contains_key(call) => call.to_owned(),
        (Some(call), []) => bail!(
            "run {} has no pending approval (asked about `{call}`)",
            run.short()
        ),
        (Some(call), some) => bail!(
            "run {} has no pending approval for `{call}`; pending: {}",
            run.short(),
            some.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, [one]) => (*one).clone(),
        (None, []) => bail!("run {} has no pending approval", run.short()),
        (None, many) => bail!(
            "run {} has {} pending approvals; name one: {}",
            run.short(),
            many.len(),
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let note = note
        .map(|n| store.put_blob(&canonical_json(&json!(n))))
        .transpose()?;
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let decision = if deny {
        Decision::Denied
    } else {
        Decision::Approved
    };
    let head = store.require_run(&run)?.head;
    let event = Event::after(
        head,
        now(),
        EventKind::ApprovalDecided {
            call_id: call_id.clone(),
            decision,
            by,
            note,
        },
    );
    store.append(&run, head.map(|h| h.id), &[event])?;
    println!(
        "{} {call_id} of run {}; continue with: retrace resume {}",
        if deny { "denied" } else { "approved" },
        run.short(),
        run.short()
    );
    Ok(ExitCode::SUCCESS)
}
