//! `retrace cancel RUN` and `retrace signal RUN`: recorded signals. Through `retrace serve`
//! when it holds the store (the drive that holds the run appends them); otherwise appended
//! here, and a cancelled run is driven to its end at once. A cancel records who sent it
//! (`--as`, else `$USER`) in its payload; other signals' payloads are the sender's own.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use retrace_events::{BlobId, RunId, canonical_json};
use retrace_runtime::executor::{Runner, recorded_spec};
use retrace_runtime::inbox::{CANCEL, USER_MESSAGE};
use retrace_runtime::model::provider;
use retrace_serve::api::{Cancel, RunView, Signal};
use retrace_serve::held::{Held, HoldError};
use retrace_serve::scheduler::append_signal;
use retrace_store::Store;
use serde_json::{Value, json};

use crate::store_access;

/// The lease held while appending (PostgreSQL only), and the store to append through.
type Appending = (Option<Held>, Arc<dyn Store>);

/// On a PostgreSQL store, the run's lease and the store fenced by it for appending the
/// signal (`None` for the lease elsewhere); or, when a worker drives the run, the signal
/// left in the store's inbox for it (said here) and `None`.
fn hold_or_leave(
    access: &retrace_serve::Access,
    store: &Arc<dyn Store>,
    run: RunId,
    name: &str,
    payload: &BlobId,
) -> anyhow::Result<Option<Appending>> {
    match access.hold(run) {
        Ok(held) => {
            let fenced = held.as_ref().map_or_else(|| Arc::clone(store), Held::store);
            Ok(Some((held, fenced)))
        }
        Err(HoldError::Busy { worker, .. }) => {
            access.leave_signal(&run, name, payload)?;
            println!(
                "signal `{name}` to run {} queued for {worker}, which drives it and records it at its next step",
                run.short()
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn cancel(dir: &Path, run: &str, reason: Option<&str>, by: &str) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    if let Some(client) = access.daemon() {
        let accepted = client.cancel(
            &run.to_string(),
            &Cancel {
                reason: reason.map(str::to_owned),
                by: Some(by.to_owned()),
            },
        )?;
        println!(
            "cancel of run {} {}; retrace serve finishes it",
            run.short(),
            accepted.status
        );
        return Ok(ExitCode::SUCCESS);
    }
    let payload = store.put_blob(&canonical_json(&json!({"by": by, "reason": reason})))?;
    let Some((held, store)) = hold_or_leave(&access, &store, run, CANCEL, &payload)? else {
        return Ok(ExitCode::SUCCESS);
    };
    append_signal(store.as_ref(), run, CANCEL, payload)?;
    let spec = recorded_spec(store.as_ref(), &run)?;
    let runner = Runner::new(store.as_ref(), spec.clone(), provider(&spec)?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let inbox = held.as_ref().map(Held::inbox);
    runtime.block_on(runner.drive_with(run, &mut |_| {}, inbox))?;
    let view = RunView::of(store.as_ref(), &store.require_run(&run)?, false)?;
    println!("run {}: {}", run.short(), view.status);
    Ok(ExitCode::SUCCESS)
}

pub fn run(
    dir: &Path,
    run: &str,
    name: Option<&str>,
    message: Option<&str>,
    payload: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let (name, payload) = match (name, message, payload) {
        (None | Some(USER_MESSAGE), Some(text), None) => (USER_MESSAGE, json!(text)),
        (Some(name), None, Some(text)) => (
            name,
            serde_json::from_str::<Value>(text)
                .with_context(|| format!("--payload is not valid JSON: {text}"))?,
        ),
        (Some(name), None, None) => (name, Value::Null),
        _ => bail!("say what to send: --message TEXT, or NAME [--payload JSON]"),
    };
    retrace_serve::api::check_signal(name, &payload).map_err(anyhow::Error::msg)?;
    // a `cancel` records who sent it; any other payload is recorded as given
    let payload = retrace_serve::api::signed(name, payload, by);
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    let status = if let Some(client) = access.daemon() {
        client
            .signal(
                &run.to_string(),
                &Signal {
                    name: name.to_owned(),
                    payload,
                },
            )?
            .status
    } else {
        let payload = store.put_blob(&canonical_json(&payload))?;
        let Some((_held, store)) = hold_or_leave(&access, &store, run, name, &payload)? else {
            return Ok(ExitCode::SUCCESS);
        };
        append_signal(store.as_ref(), run, name, payload)?;
        "recorded".to_owned()
    };
    println!("signal `{name}` to run {} {status}", run.short());
    Ok(ExitCode::SUCCESS)
}
