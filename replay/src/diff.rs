//! Differences: between two states (structural, by path) and between two runs (the first
//! event where they part).

use retrace_events::{EventId, RunId};
use retrace_store::Store;
use serde::Serialize;
use serde_json::Value;

use crate::fold::Error;
use crate::state::State;

/// What happened at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second.
    Added,
    /// Only in the first.
    Removed,
    /// In both, different.
    Changed,
}

/// One difference between two JSON trees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// JSON-pointer path (`/conversation/3/content`).
    pub path: String,
    /// Added, removed or changed.
    pub kind: ChangeKind,
    /// The value in the first (absent if added).
    pub old: Option<Value>,
    /// The value in the second (absent if removed).
    pub new: Option<Value>,
}

/// Structural diff of two states: objects by key, lists (messages, ...) by position.
pub fn diff_states(a: &State, b: &State) -> Vec<Change> {
    let mut out = Vec::new();
    diff_json(&a.to_json(), &b.to_json(), &mut String::new(), &mut out);
    out
}

/// Structural diff of two JSON values, appended to `out`.
pub fn diff_json(old: &Value, new: &Value, path: &mut String, out: &mut Vec<Change>) {
    // Children of two containers of the same shape, paired by key or position.
    let children: Vec<(String, Option<&Value>, Option<&Value>)> = match (old, new) {
        (Value::Object(before), Value::Object(after)) => {
            let keys: std::collections::BTreeSet<&String> =
                before.keys().chain(after.keys()).collect();
            keys.into_iter()
                .map(|key| {
                    (
                        key.replace('~', "~0").replace('/', "~1"),
                        before.get(key),
                        after.get(key),
                    )
                })
                .collect()
        }
        (Value::Array(before), Value::Array(after)) => (0..before.len().max(after.len()))
            .map(|i| (i.to_string(), before.get(i), after.get(i)))
            .collect(),
        _ => {
            if old != new {
                out.push(change(path, ChangeKind::Changed, Some(old), Some(new)));
            }
            return;
        }
    };
    for (segment, before, after) in children {
        let len = path.len();
        path.push('/');
        path.push_str(&segment);
        match (before, after) {
            (Some(before), Some(after)) => diff_json(before, after, path, out),
            (Some(before), None) => out.push(change(path, ChangeKind::Removed, Some(before), None)),
            (None, Some(after)) => out.push(change(path, ChangeKind::Added, None, Some(after))),
            (None, None) => {}
        }
        path.truncate(len);
    }
}

fn change(path: &str, kind: ChangeKind, old: Option<&Value>, new: Option<&Value>) -> Change {
    Change {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        },
        kind,
        old: old.cloned(),
        new: new.cloned(),
    }
}

/// How two runs line up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Events the runs share from the start (identical ids, so identical histories).
    pub common_prefix: u64,
    /// Length of the first run.
    pub a_len: u64,
    /// Length of the second run.
    pub b_len: u64,
    /// The first seq where they differ (`None`: identical, or one is a prefix of the other).
    pub first_divergence: Option<Divergence>,
}

/// The first event where two runs differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Its seq.
    pub seq: u64,
    /// The first run's event there.
    pub a: EventId,
    /// The second run's event there.
    pub b: EventId,
}

/// Align two runs by seq and find where they part. An event id commits to every event
/// before it, so equal ids at seq s mean equal prefixes: a binary search finds the first
/// divergence in O(log n) lookups.
pub fn compare_runs(
    store: &(impl Store + ?Sized),
    a: &RunId,
    b: &RunId,
) -> Result<Comparison, Error> {
    let (a_len, b_len) = (store.require_run(a)?.len(), store.require_run(b)?.len());
    let same = |seq: u64| -> Result<bool, Error> {
        Ok(store.event_id_at(a, seq)? == store.event_id_at(b, seq)?)
    };
    // invariant: seqs < lo are equal; seqs >= hi (within the shorter run) differ
    let (mut lo, mut hi) = (0, a_len.min(b_len));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if same(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let first_divergence = if lo < a_len.min(b_len) {
        let id = |run: &RunId, len: u64| -> Result<EventId, Error> {
            store.event_id_at(run, lo)?.ok_or(Error::NoSuchSeq {
                run: *run,
                seq: lo,
                len,
            })
        };
        Some(Divergence {
            seq: lo,
            a: id(a, a_len)?,
            b: id(b, b_len)?,
        })
    } else {
        None
    };
    Ok(Comparison {
        common_prefix: lo,
        a_len,
        b_len,
        first_divergence,
    })
}
