//! `retrace resolve RUN [CALL] (--retry | --skip-with FILE | --fail) [--note TEXT]`: settle a
//! tool call whose outcome is unknown (a non-idempotent tool was running when the process
//! stopped). The resolution is an appended event ([`retrace_serve::resolve::settle`], or the
//! daemon's `POST /v1/runs/{run}/resolve` when one holds the store); `retrace resume RUN`
//! continues (or the daemon does).
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

use anyhow::Context;
use retrace_runtime::entropy::now;
use retrace_serve::api::Resolve;
use retrace_serve::resolve::{How, settle};
use retrace_store::Store;

use crate::store_access;

/// How to settle the call, as the command line says it.
#[derive(Debug, Clone, Copy)]
pub enum Given<'a> {
    Retry,
    SkipWith(&'a Path),
    Fail,
}

pub fn run(
    dir: &Path,
    run: &str,
    call: Option<&str>,
    given: Given<'_>,
    note: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let how = match given {
        Given::Retry => How::Retry,
        Given::SkipWith(file) => {
            let text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            How::Skip(
                serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not valid JSON", file.display()))?,
            )
        }
        Given::Fail => How::Fail,
    };
    let what = match how {
        How::Retry => "will be run again",
        How::Skip(_) => "is settled with the given result",
        How::Fail => "ended the run as failed",
    };
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    if let Some(client) = access.daemon() {
        // the daemon appends it while no drive holds the run, then continues the run
        let settled = client.resolve(
            &run.to_string(),
            &Resolve {
                call: call.map(str::to_owned),
                how: how.clone(),
                note: note.map(str::to_owned),
                by: Some(by.to_owned()),
            },
        )?;
        println!("{} of run {} {what}", settled.call_id, run.short());
        if !matches!(how, How::Fail) {
            println!("retrace serve continues it");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // on a PostgreSQL store, appended under the run's lease, so no worker drives it meanwhile
    let lease = access.hold(run)?;
    let store = lease
        .as_ref()
        .map_or(store, retrace_serve::held::Held::store);
    let (call_id, _) = settle(store.as_ref(), &run, call, &how, by, note, now())?;
    println!("{call_id} of run {} {what}", run.short());
    if !matches!(how, How::Fail) {
        println!(
            "continue with: retrace resume {}",
            crate::target::to_resume(&store, &run)
        );
    }
    Ok(ExitCode::SUCCESS)
}
