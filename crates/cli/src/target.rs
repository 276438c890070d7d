//! `RUN[@SEQ]` arguments: a run id or unambiguous prefix, optionally a seq (default: head).

use anyhow::{Context, bail};
use retrace_events::RunId;
use retrace_store::Store;

/// A resolved `RUN[@SEQ]`.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub run: RunId,
    pub seq: u64,
}

/// Resolve `text` against the store. Without `@SEQ` the seq is the run's head.
pub fn resolve(store: &dyn Store, text: &str) -> anyhow::Result<Target> {
    let (prefix, seq) = match text.split_once('@') {
        Some((p, s)) => (
            p,
            Some(s.parse::<u64>().with_context(|| {
                format!("`{text}`: `{s}` is not a seq (a whole number from 0)")
            })?),
        ),
        None => (text, None),
    };
    let run = store.resolve_run(prefix)?;
    let info = store.require_run(&run)?;
    let Some(head) = info.head else {
        bail!("run {run} has no events yet");
    };
    let seq = seq.unwrap_or(head.seq);
    if seq > head.seq {
        bail!(
            "run {} has {} events (seqs 0 to {}); there is no seq {seq}",
            run.short(),
            info.len(),
            head.seq
        );
    }
    Ok(Target { run, seq })
}

/// What `retrace resume` should be given to continue `run`: the run itself, or for a child
/// run (`agent.delegate`) its tree's root, whose drive drives it; in words for a hint.
pub fn to_resume(store: &dyn Store, run: &RunId) -> String {
    let root = retrace_store::tree::root(store, run).unwrap_or(*run);
    if root == *run {
        run.short()
    } else {
        format!(
            "{} (the parent run, whose drive continues this child)",
            root.short()
        )
    }
}
