//! The run tree: child runs that delegate calls started (`child_started`,
//! `child_finished`), and the checks that tie a tree together.
//!
//! A child's id is derived from the run that recorded the call, the call's request seq and
//! its id ([`RunId::child`]); the child's ref names its parent (meta `parent`), its first event
//! names the child, and a `child_finished` names the child's last event. A fork shares the
//! children of the prefix it shares (their ids derive from the run it forked from).

use retrace_events::{EventId, EventKind, Outcome, RunId, Usage};

use crate::{MAX_RANGE, Result, Store};

/// A delegate call's child run, as its parent's log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// The delegating call.
    pub call_id: String,
    /// The child run.
    pub child: RunId,
    /// The sub-agent it runs.
    pub agent: String,
    /// Seq of the call's `tool_requested` (what the child's id is derived from).
    pub requested_seq: u64,
    /// Seq of the parent's `child_started`.
    pub started_seq: u64,
    /// The parent's `child_finished`, once recorded: its seq, the child's last event, how
    /// the child ended and its totals.
    pub finished: Option<(u64, EventId, Outcome, Usage)>,
}

/// The child runs `run`'s log records, in the order they were started.
pub fn children(store: &(impl Store + ?Sized), run: &RunId) -> Result<Vec<Child>> {
    let len = store.require_run(run)?.len();
    let mut found: Vec<Child> = Vec::new();
    // each call's latest request: its seq
    let mut requested: Vec<(String, u64)> = Vec::new();
    let mut next = 0;
    while next < len {
        let last = (next + MAX_RANGE - 1).min(len - 1);
        for (_, event) in store.events(run, next..=last)? {
            match event.kind {
                EventKind::ToolRequested { call_id, .. } => {
                    requested.retain(|(c, _)| *c != call_id);
                    requested.push((call_id, event.seq));
                }
                EventKind::ChildStarted {
                    call_id,
                    child,
                    agent,
                } => found.push(Child {
                    requested_seq: requested
                        .iter()
                        .find(|(c, _)| *c == call_id)
                        .map_or(event.seq.saturating_sub(1), |(_, s)| *s),
                    call_id,
                    child,
                    agent,
                    started_seq: event.seq,
                    finished: None,
                }),
                EventKind::ChildFinished {
                    child,
                    head,
                    outcome,
                    usage,
                    ..
                } => {
                    if let Some(c) = found.iter_mut().rev().find(|c| c.child == child) {
                        c.finished = Some((event.seq, head, outcome, usage));
                    }
                }
                _ => {}
            }
        }
        next = last + 1;
    }
    Ok(found)
}

/// The run whose drive drives `run`: `run` itself, or for a child run the topmost run above
/// it (following `meta.parent`, at most 8 levels: a tree is at most 4 deep).
pub fn root(store: &(impl Store + ?Sized), run: &RunId) -> Result<RunId> {
    let mut at = *run;
    for _ in 0..8 {
        let parent = store
            .run(&at)?
            .and_then(|info| info.meta.get("parent").and_then(|p| p.parse().ok()));
        match parent {
            Some(parent) => at = parent,
            None => break,
        }
    }
    Ok(at)
}

/// The first link of `run`'s children that does not hold, in words; `None` when every
/// child the log names is the call's derived id, exists, names `run` (or the run the
/// shared prefix came from) as its parent, starts as that child, and — once finished in
/// the parent's log — ends at the event the parent recorded.
pub fn verify_links(store: &(impl Store + ?Sized), run: &RunId) -> Result<Option<String>> {
    let mut lineage = vec![*run];
    while let Some(origin) = store.require_run(lineage.last().unwrap_or(run))?.origin {
        lineage.push(origin.run);
    }
    for c in children(store, run)? {
        let at = format!("{run} seq {} (call {})", c.started_seq, c.call_id);
        let Some(holder) = lineage
            .iter()
            .find(|r| RunId::child(r, c.requested_seq, &c.call_id) == c.child)
        else {
            return Ok(Some(format!(
                "{at}: child {} is not the id derived from the call",
                c.child
            )));
        };
        let Some(info) = store.run(&c.child)? else {
            return Ok(Some(format!("{at}: child run {} does not exist", c.child)));
        };
        if info.meta.get("parent") != Some(&holder.to_string()) {
            return Ok(Some(format!(
                "{at}: child run {} does not name {holder} as its parent",
                c.child
            )));
        }
        match store.event_at(&c.child, 0)? {
            Some((_, first)) if matches!(first.kind, EventKind::RunStarted { run, .. } if run == c.child) =>
                {}
            _ => {
                return Ok(Some(format!(
                    "{at}: child run {} does not start as that run",
                    c.child
                )));
            }
        }
        if let Some((seq, head, ..)) = c.finished {
            let last = info.len().checked_sub(1);
            let ends = match last {
                Some(last) => store.event_id_at(&c.child, last)? == Some(head),
                None => false,
            };
            if !ends {
                return Ok(Some(format!(
                    "{run} seq {seq}: child run {} does not end at event {head}, which the parent recorded",
                    c.child
                )));
            }
        }
    }
    Ok(None)
}
