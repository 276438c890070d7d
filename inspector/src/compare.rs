//! Run vs run: two runs' steps side by side. The shared prefix comes from
//! `retrace_replay::compare_runs` (equal event ids at a seq mean equal histories up to it);
//! the steps after it are aligned by what they are (model call, which tool, …) with a
//! longest-common-subsequence diff, and each aligned pair whose contents differ gets a
//! word-level diff of its reply text, arguments and result (both by `similar`).

use retrace_events::RunId;
use retrace_replay::compare_runs;
use retrace_store::{MAX_RANGE, Store};
use similar::{Algorithm, ChangeTag, DiffOp, TextDiff, capture_diff_slices};

use crate::cards::{Body, Card, card};
use crate::steps::{StepIndex, StepKind};

/// Most rows after the shared prefix one comparison holds.
pub const MAX_ROWS: usize = 500;

/// Shared steps shown before the first divergence, for context.
pub const CONTEXT: usize = 2;

/// A piece of text in a diff: whether it changed, and the text.
pub type Piece = (bool, String);

/// One field of a step that differs: its name and each side's text in pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `reply`, `reasoning`, `calls`, `arguments`, `result`, `decision`, `text`.
    pub field: &'static str,
    /// The first run's text; changed pieces are what the second run lacks.
    pub left: Vec<Piece>,
    /// The second run's text; changed pieces are what the first run lacks.
    pub right: Vec<Piece>,
}

/// One row: a step of each run (or of one, where the other has none there).
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The first run's step.
    pub left: Option<Card>,
    /// The second run's step.
    pub right: Option<Card>,
    /// In the shared prefix: the same events.
    pub shared: bool,
    /// The fields that differ (empty: the same content).
    pub changes: Vec<Change>,
}

impl Pair {
    /// Whether the two sides differ (a step missing on one side differs).
    pub fn differs(&self) -> bool {
        !self.changes.is_empty() || self.left.is_none() || self.right.is_none()
    }
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The first run.
    pub a: RunId,
    /// The second run.
    pub b: RunId,
    /// First seq where their logs differ (`None`: one is a prefix of the other).
    pub divergence: Option<u64>,
    /// Steps in the shared prefix.
    pub shared: usize,
    /// The last [`CONTEXT`] shared steps, then the aligned steps after them.
    pub rows: Vec<Pair>,
    /// Index in `rows` of the first pair that differs.
    pub first_difference: Option<usize>,
    /// Rows were cut at [`MAX_ROWS`].
    pub truncated: bool,
}

/// Compare `a` and `b`.
pub fn compare(store: &dyn Store, a: RunId, b: RunId) -> Result<Comparison, String> {
    let ia = index(store, &a).map_err(|e| e.to_string())?;
    let ib = index(store, &b).map_err(|e| e.to_string())?;
    let runs = compare_runs(store, &a, &b).map_err(|e| e.to_string())?;
    let divergence = runs.first_divergence.as_ref().map(|d| d.seq);
    let prefix = runs.common_prefix;
    // a step is shared when all its events are in the common prefix
    let shared_in = |index: &StepIndex| {
        index
            .steps
            .iter()
            .take_while(|s| s.end.is_some_and(|end| end < prefix))
            .count()
    };
    let shared = shared_in(&ia).min(shared_in(&ib));
    let from = shared.saturating_sub(CONTEXT);
    let load = |run: &RunId, index: &StepIndex, i: usize| {
        card(store, run, i, index.steps[i]).map_err(|e| e.to_string())
    };
    let mut rows = Vec::new();
    for i in from..shared {
        rows.push(Pair {
            left: Some(load(&a, &ia, i)?),
            right: Some(load(&b, &ib, i)?),
            shared: true,
            changes: Vec::new(),
        });
    }
    let key = |index: &StepIndex, i: usize| {
        let s = &index.steps[i];
        (s.kind, index.name_of(s).map(str::to_owned))
    };
    let left: Vec<_> = (shared..ia.steps.len()).map(|i| key(&ia, i)).collect();
    let right: Vec<_> = (shared..ib.steps.len()).map(|i| key(&ib, i)).collect();
    let mut truncated = false;
    // steps of different kinds are never compared field by field: each gets a row of its own
    let pairs = aligned(&left, &right)
        .into_iter()
        .flat_map(|(old, new)| match (old, new) {
            (Some(o), Some(n)) if left[o].0 != right[n].0 => vec![(Some(o), None), (None, Some(n))],
            pair => vec![pair],
        });
    for (old, new) in pairs {
        if rows.len() - (shared - from) >= MAX_ROWS {
            truncated = true;
            break;
        }
        let left = old.map(|i| load(&a, &ia, shared + i)).transpose()?;
        let right = new.map(|i| load(&b, &ib, shared + i)).transpose()?;
        let changes = match (&left, &right) {
            (Some(x), Some(y)) => changes(x, y),
            _ => Vec::new(),
        };
        rows.push(Pair {
            left,
            right,
            shared: false,
            changes,
        });
    }
    let first_difference = rows.iter().position(Pair::differs);
    Ok(Comparison {
        a,
        b,
        divergence,
        shared,
        rows,
        first_difference,
        truncated,
    })
}

/// Positions in `left` and `right` paired by a longest-common-subsequence diff (Myers):
/// equal keys side by side, the rest of a replaced stretch paired in order and padded
/// with `None`.
fn aligned<T: Eq + std::hash::Hash + Ord>(
    left: &[T],
    right: &[T],
) -> Vec<(Option<usize>, Option<usize>)> {
    let mut out = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, left, right) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => out.extend((0..len).map(|k| (Some(old_index + k), Some(new_index + k)))),
            DiffOp::Delete {
                old_index, old_len, ..
            } => out.extend((old_index..old_index + old_len).map(|i| (Some(i), None))),
            DiffOp::Insert {
                new_index, new_len, ..
            } => out.extend((new_index..new_index + new_len).map(|i| (None, Some(i)))),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => out.extend((0..old_len.max(new_len)).map(|k| {
                (
                    (k < old_len).then_some(old_index + k),
                    (k < new_len).then_some(new_index + k),
                )
            })),
        }
    }
    out
}

/// The step index of a whole run.
pub fn index(store: &dyn Store, run: &RunId) -> Result<StepIndex, retrace_store::Error> {
    let mut index = StepIndex::new(*run);
    extend(store, run, &mut index)?;
    Ok(index)
}

/// Fold the events of `run` appended since `index` was last extended.
pub fn extend(
    store: &dyn Store,
    run: &RunId,
    index: &mut StepIndex,
) -> Result<(), retrace_store::Error> {
    let len = store.require_run(run)?.len();
    while index.scanned < len {
        let end = (index.scanned + MAX_RANGE - 1).min(len - 1);
        let events = store.events(run, index.scanned..=end)?;
        if events.is_empty() {
            return Err(retrace_store::Error::Corrupt {
                what: format!("run {run} has no event at seq {}", index.scanned),
            });
        }
        for (_, event) in events {
            if index.push(&event).is_err() {
                return Err(retrace_store::Error::Corrupt {
                    what: format!(
                        "run {run} skips from seq {} to {}",
                        index.scanned, event.seq
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The texts of a card a comparison looks at, by field.
fn fields(card: &Card) -> Vec<(&'static str, String)> {
    match &card.body {
        Body::Model {
            text,
            reasoning,
            calls,
            error,
            ..
        } => vec![
            ("reply", text.clone()),
            ("reasoning", reasoning.join("\n")),
            (
                "calls",
                calls
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.args))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            ("error", error.clone().unwrap_or_default()),
        ],
        Body::Tool {
            args,
            output,
            unknown,
            ..
        } => vec![
            ("arguments", crate::cards::pretty(args)),
            (
                "result",
                output.as_ref().map(|o| o.head.clone()).unwrap_or_default(),
            ),
            ("outcome unknown", unknown.clone().unwrap_or_default()),
        ],
        Body::Approval {
            request, decision, ..
        } => vec![
            ("request", request.clone()),
            (
                "decision",
                decision
                    .as_ref()
                    .map(|(d, by, note)| {
                        format!("{d:?} by {by} {}", note.as_deref().unwrap_or_default())
                    })
                    .unwrap_or_default(),
            ),
        ],
        Body::Fork { note, .. } => vec![("note", note.clone().unwrap_or_default())],
        Body::Text { title, text, .. } => vec![("title", title.clone()), ("text", text.clone())],
    }
}

/// The fields of two aligned cards that differ, word by word.
pub fn changes(left: &Card, right: &Card) -> Vec<Change> {
    if left.head.kind == StepKind::Fork || right.head.kind == StepKind::Fork {
        return Vec::new();
    }
    fields(left)
        .into_iter()
        .zip(fields(right))
        .filter(|((_, l), (_, r))| l != r)
        .map(|((field, l), (_, r))| {
            let (left, right) = words(&l, &r);
            Change { field, left, right }
        })
        .collect()
}

/// A word-level diff of `old` and `new`: each side's text as pieces, changed or not.
pub fn words(old: &str, new: &str) -> (Vec<Piece>, Vec<Piece>) {
    let diff = TextDiff::from_words(old, new);
    let (mut left, mut right): (Vec<Piece>, Vec<Piece>) = (Vec::new(), Vec::new());
    let push = |side: &mut Vec<Piece>, changed: bool, text: &str| match side.last_mut() {
        Some((c, t)) if *c == changed => t.push_str(text),
        _ => side.push((changed, text.to_owned())),
    };
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Equal => {
                push(&mut left, false, change.value());
                push(&mut right, false, change.value());
            }
            ChangeTag::Delete => push(&mut left, true, change.value()),
            ChangeTag::Insert => push(&mut right, true, change.value()),
        }
    }
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_diff_marks_only_the_changed_words() {
        let (l, r) = words("the quick brown fox", "the slow brown fox");
        assert_eq!(
            l,
            vec![
                (false, "the ".to_owned()),
                (true, "quick".to_owned()),
                (false, " brown fox".to_owned())
            ]
        );
        assert_eq!(
            r,
            vec![
                (false, "the ".to_owned()),
                (true, "slow".to_owned()),
                (false, " brown fox".to_owned())
            ]
        );
    }
}
