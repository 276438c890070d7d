//! `retrace resolve RUN [CALL] (--retry | --skip-with FILE | --fail) [--note TEXT]`: settle a
//! tool call whose outcome is unknown (a non-idempotent tool was running when the process
//! stopped). The resolution is an appended event; `retrace resume RUN` continues.
//!
//! - `--retry`: run the tool again (recorded as an approval; the retry's new intent consumes
//!   it, so a crash during the retry asks again instead of repeating silently);
//! - `--skip-with FILE`: do not run it again; FILE (JSON) is its result, as if it had returned;
//! - `--fail`: end the run as failed.
//!
//! Who resolves (`--as`, else `$USER`) is recorded: as the approval's `by` for a retry, as
//! `by` in the finish detail for a failure. A skip records only the given result (the
//! result is what the agent reads, so nothing is added to it).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use retrace_events::{Decision, Event, EventKind, Outcome, canonical_json};
use retrace_replay::{SnapshotPolicy, Status, state_at_head};
use retrace_runtime::entropy::now;
use retrace_store::Store;
use serde_json::json;

use crate::store_access;

/// How to settle the call.
#[derive(Debug, Clone, Copy)]
pub enum How<'a> {
    Retry,
    SkipWith(&'a Path),
    Fail,
}

pub fn run(
    dir: &Path,
    run: &str,
    call: Option<&str>,
    how: How<'_>,
    note: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    // on a PostgreSQL store, appended under the run's lease, so no worker drives it meanwhile
    let lease = access.hold(run)?;
    let store = lease
        .as_ref()
        .map_or(store, retrace_serve::held::Held::store);
    let state = state_at_head(&store, &run, SnapshotPolicy::default())?.state;
    let Status::OutcomeUnknown { call_id } = &state.status else {
        bail!(
            "run {} has no tool call of unknown outcome to resolve",
            run.short()
        );
    };
    if let Some(asked) = call
        && asked != call_id
    {
        bail!(
            "the call of unknown outcome in run {} is {call_id}, not {asked}",
            run.short()
        );
    }
    let kind = match how {
        How::Retry => {
            let note = note
                .map(|n| store.put_blob(&canonical_json(&json!(n))))
                .transpose()?;
            EventKind::ApprovalDecided {
                call_id: call_id.clone(),
                decision: Decision::Approved,
                by: by.to_owned(),
                note,
            }
        }
        How::SkipWith(file) => {
            let text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            EventKind::ToolReturned {
                call_id: call_id.clone(),
                output: store.put_blob(&canonical_json(&value))?,
                is_error: false,
                duration_ms: 0,
            }
        }
        How::Fail => {
            let detail = json!({"reason": format!("the outcome of {call_id} was unknown; {by} ended the run"), "note": note, "by": by});
            EventKind::RunFinished {
                outcome: Outcome::Failed,
                detail: store.put_blob(&canonical_json(&detail))?,
            }
        }
    };
    let head = store.require_run(&run)?.head;
    store.append(&run, head.map(|h| h.id), &[Event::after(head, now(), kind)])?;
    let what = match how {
        How::Retry => "will be run again",
        How::SkipWith(_) => "is settled with the given result",
        How::Fail => "ended the run as failed",
    };
    println!("{call_id} of run {} {what}", run.short());
    if !matches!(how, How::Fail) {
        // as after an approval: a daemon that holds the store continues the run itself
        match access.daemon() {
            Some(client) => {
                client.resume(&run.to_string())?;
                println!("retrace serve continues it");
            }
            None => println!(
                "continue with: retrace resume {}",
                crate::target::to_resume(&store, &run)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
