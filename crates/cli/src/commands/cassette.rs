//! `retrace cassette RUN [-o FILE]`: a run's model replies (and failures) as a cassette the
//! scripted provider plays, so a recorded or imported run becomes an offline eval baseline.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use retrace_events::EventKind;
use retrace_events::reply::ModelReply;
use retrace_providers::{Cassette, ScriptedError, ScriptedReply};
use retrace_store::Store;
use serde_json::Value;

use crate::store_access;

pub fn run(dir: &Path, run: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let run = store.resolve_run(run)?;
    let cassette = cassette_of(store.as_ref(), &run)?;
    let text = serde_json::to_string_pretty(&cassette)? + "\n";
    match output {
        Some(path) if path != Path::new("-") => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} replies of run {run} to {}",
                cassette.replies.len(),
                path.display()
            );
        }
        _ => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The replies and failures of `run`'s model calls, in the order of their steps; summary
/// calls (compactions) are left out, as the scripted provider answers those itself.
fn cassette_of(store: &dyn Store, run: &retrace_events::RunId) -> anyhow::Result<Cassette> {
    let blob = |id: &retrace_events::BlobId| -> anyhow::Result<Vec<u8>> {
        store
            .blob(id)?
            .ok_or_else(|| anyhow::anyhow!("run {run}: blob {id} is missing"))
    };
    let mut replies = Vec::new();
    for (_, event) in store.events(run, 0..=u64::MAX)? {
        match &event.kind {
            EventKind::ModelResponded { response, .. } => {
                let reply: ModelReply = serde_json::from_slice(&blob(response)?)
                    .with_context(|| format!("run {run} seq {}: the reply", event.seq))?;
                replies.push(ScriptedReply {
                    text: reply.text,
                    tool_calls: reply.tool_calls,
                    reasoning: reply.reasoning,
                    usage: Some(reply.usage),
                    stop_reason: Some(reply.stop_reason),
                    ..ScriptedReply::default()
                });
            }
            EventKind::ModelFailed {
                error, transient, ..
            } => {
                let error: Value = serde_json::from_slice(&blob(error)?).unwrap_or_default();
                let message = error["error"]
                    .as_str()
                    .or_else(|| error["message"].as_str())
                    .map_or_else(|| error.to_string(), str::to_owned);
                replies.push(ScriptedReply {
                    error: Some(ScriptedError {
                        transient: *transient,
                        message,
                    }),
                    ..ScriptedReply::default()
                });
            }
            _ => {}
        }
    }
    Ok(Cassette { replies })
}
