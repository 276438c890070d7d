//! `retrace fork RUN@SEQ [--edit FILE]`: a new run sharing RUN's events up to SEQ, or, with
//! `--edit`, with the event at SEQ replaced.
//!
//! The edit file holds the new content of the event at SEQ:
//! - a model reply (`model_responded`): the new reply JSON;
//! - a tool result (`tool_returned`): the new output JSON (or `{"output": …, "is_error": true}`
//!   is simply stored as the output);
//! - an approval decision (`approval_decided`): `{"decision": "approved"|"denied", "note": "…"}`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use retrace_replay::{ForkAt, fork};
use retrace_runtime::entropy::{new_run_id, now};
use serde_json::Value;

use crate::{store_access, target};

pub fn run(dir: &Path, at: &str, edit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let at = target::resolve(&store, at)?;
    let fork_at = match edit {
        None => ForkAt::After(at.seq),
        Some(file) => {
            let text = std::fs::read(file)
                .with_context(|| format!("cannot read edit file {}", file.display()))?;
            let value: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            ForkAt::edit(&store, &at.run, at.seq, &value, "retrace fork --edit")
                .with_context(|| format!("edit file {}", file.display()))?
        }
    };
    let edited = matches!(fork_at, ForkAt::Replace { .. });
    let new = fork(&store, &at.run, fork_at, new_run_id(), now())?;
    let shared = new.origin.map(|o| o.at.seq);
    let how = if edited {
        " with that event edited".to_owned()
    } else if shared == Some(at.seq + 1) {
        format!(" (and the calls that reply proposed, @{})", at.seq + 1)
    } else {
        String::new()
    };
    println!(
        "forked run {} from {}@{}{how}",
        new.id,
        at.run.short(),
        at.seq
    );
    Ok(ExitCode::SUCCESS)
}
