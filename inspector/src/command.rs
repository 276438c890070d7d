//! What the panels ask for. Panels only emit [`Command`]s while drawing; the inspector
//! applies them after the frame (conventions: "UI sends commands"), so a frame draws one
//! consistent state and every change goes through one place.

use retrace_events::RunId;
use retrace_replay::Answer;

use crate::app::View;
use crate::source::Class;
use crate::steps::Filter;

/// One thing a user did.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Show this run.
    SelectRun(RunId),
    /// Put the cursor on this seq.
    MoveTo(u64),
    /// Move the cursor by this many events.
    Step(i64),
    /// Cursor to the first event.
    Home,
    /// Cursor to the newest event.
    End,
    /// Cursor to the next (or previous) event of a class.
    Jump {
        /// What to find.
        class: Class,
        /// Direction.
        forward: bool,
    },
    /// Keep the cursor on the newest event as the run grows.
    FollowHead(bool),
    /// Reload the run list and the selected run.
    Refresh,
    /// Remember the cursor as point A of a diff.
    MarkA,
    /// Compare point A with the cursor.
    DiffWithA,
    /// Close the diff.
    CloseDiff,
    /// Start editing the event at the cursor for a fork.
    StartEdit,
    /// Stop editing.
    CancelEdit,
    /// Fork at the cursor: as is, or with the edited content.
    Fork {
        /// Use the edited content.
        edited: bool,
    },
    /// Show the request tab of the detail (what the model saw) on model calls, or the event
    /// and state.
    ShowRequest(bool),
    /// Approve or deny a pending approval of the run shown.
    Decide {
        /// The call.
        call: String,
        /// Approve (else deny).
        approve: bool,
    },
    /// Show this view in the middle of the window.
    View(View),
    /// Show only the steps this filter lets through.
    Filter(Filter),
    /// Page through a tool result in full, from line `from`.
    ShowAll {
        /// What it is the output of.
        title: String,
        /// The output blob.
        blob: retrace_events::BlobId,
        /// First line (0-based).
        from: usize,
    },
    /// Close the tool result being paged through.
    ClosePager,
    /// Find this text in the run's payloads.
    Search(String),
    /// Go to the next (or previous) hit of the search.
    NextHit {
        /// Direction.
        forward: bool,
    },
    /// Compare the run shown with another, side by side (`None`: stop).
    CompareWith(Option<RunId>),
    /// Show `run` at `seq` (a fork's origin, a fork made here).
    Open {
        /// Run.
        run: RunId,
        /// Seq.
        seq: u64,
    },
    /// Answer the question the run shown waits on.
    Answer {
        /// The `user.ask` call.
        call: String,
        /// A choice (from 1) or free text.
        answer: Answer,
    },
}

/// Where `cursor` goes in a run of `len` events after `step` (clamped to the run).
pub fn stepped(cursor: u64, step: i64, len: u64) -> u64 {
    let last = len.saturating_sub(1);
    if step < 0 {
        cursor.saturating_sub(step.unsigned_abs())
    } else {
        cursor.saturating_add(step.unsigned_abs()).min(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_clamped_to_the_run() {
        assert_eq!(stepped(5, -10, 20), 0);
        assert_eq!(stepped(5, 100, 20), 19);
        assert_eq!(stepped(5, 1, 20), 6);
        assert_eq!(stepped(0, 1, 0), 0);
    }
}
