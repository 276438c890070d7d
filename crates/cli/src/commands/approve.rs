//! `retrace approve RUN [CALL] [--deny] [--note TEXT]`: decide a pending approval. The
//! decision is an appended event; `retrace resume RUN` continues the run.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::Decision;
use retrace_replay::decide_approval;
use retrace_runtime::entropy::now;
use retrace_serve::api::Approve;
use retrace_store::Store;

use crate::store_access;

pub fn run(
    dir: &Path,
    run: &str,
    call: Option<&str>,
    deny: bool,
    note: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    // on a PostgreSQL store, appended under the run's lease, so no worker drives it meanwhile
    let held = access.hold(run)?;
    let store = held
        .as_ref()
        .map_or(store, retrace_serve::held::Held::store);
    if let Some(client) = access.daemon() {
        let decided = client.approve(
            &run.to_string(),
            &Approve {
                call: call.map(str::to_owned),
                deny,
                note: note.map(str::to_owned),
                by: Some(by.to_owned()),
            },
        )?;
        println!(
            "{} {} of run {}; retrace serve continues it",
            decided.decision,
            decided.call_id,
            run.short()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let decision = if deny {
        Decision::Denied
    } else {
        Decision::Approved
    };
    let (call_id, _) = decide_approval(&store, &run, call, decision, by, note, now())?;
    let next = if matches!(access, retrace_serve::Access::Shared(_)) {
        "a `retrace serve` worker of this store continues it; without one"
    } else {
        "continue with:"
    };
    println!(
        "{} {call_id} of run {}; {next} retrace resume {}",
        if deny { "denied" } else { "approved" },
        run.short(),
        crate::target::to_resume(&store, &run)
    );
    Ok(ExitCode::SUCCESS)
}
