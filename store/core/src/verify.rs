//! Verification (invariant 5): walk a run from its first event to its head, recompute every
//! event hash and the parent chain, check every referenced blob, and report the first
//! mismatch with the run that stores it, the seq and what differs.

use std::collections::BTreeSet;
use std::fmt;

use retrace_events::{BlobId, EventId, Head, RunId, VerifyError, decode_verified};

use crate::error::Result;
use crate::store::{MAX_RANGE, Store};

/// What to check besides the event chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Also read and hash every blob the events refer to.
    pub blobs: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { blobs: true }
    }
}

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The run whose log holds the bad event (an ancestor, for a fork's shared prefix).
    pub run: RunId,
    /// Seq of the bad event.
    pub seq: u64,
    /// What differs.
    pub kind: ProblemKind,
}

/// Kinds of damage verification recognises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The index names an event whose bytes are not stored.
    MissingEvent {
        /// The id the index names.
        id: EventId,
    },
    /// The stored bytes hash to another id, or do not decode canonically.
    BadEvent {
        /// The id the bytes are stored under.
        id: EventId,
        /// What is wrong with them.
        error: VerifyError,
    },
    /// The event says it sits at another seq than the index puts it.
    SeqMismatch {
        /// Seq recorded inside the event.
        found: u64,
    },
    /// The event's parent is not the previous event.
    ParentMismatch {
        /// The previous event's id (`None` at seq 0).
        expected: Option<EventId>,
        /// The parent the event names.
        found: Option<EventId>,
    },
    /// A referenced blob is not stored.
    MissingBlob {
        /// The missing blob.
        blob: BlobId,
    },
    /// A blob's bytes hash to another id.
    BlobMismatch {
        /// The id the bytes are stored under.
        blob: BlobId,
        /// What they hash to.
        actual: BlobId,
    },
    /// The run ref's head is not the last event of the chain.
    HeadMismatch {
        /// The head recorded in the run ref.
        recorded: Head,
        /// The last event reached by walking the index.
        walked: Option<Head>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {} seq {}: ", self.run, self.seq)?;
        let short = |id: Option<EventId>| id.map_or_else(|| "none".to_owned(), |i| i.short());
        match &self.kind {
            ProblemKind::MissingEvent { id } => write!(f, "event {id} is indexed but not stored"),
            ProblemKind::BadEvent { id, error } => write!(f, "event {id}: {error}"),
            ProblemKind::SeqMismatch { found } => write!(f, "the event records seq {found}"),
            ProblemKind::ParentMismatch { expected, found } => write!(
                f,
                "parent is {}, but the previous event is {}",
                short(*found),
                short(*expected)
            ),
            ProblemKind::MissingBlob { blob } => {
                write!(f, "blob {blob} is referenced but not stored")
            }
            ProblemKind::BlobMismatch { blob, actual } => {
                write!(f, "blob {blob}: stored bytes hash to {actual}")
            }
            ProblemKind::HeadMismatch { recorded, walked } => write!(
                f,
                "run ref head is {} (seq {}), but the chain ends at {}",
                recorded.id.short(),
                recorded.seq,
                walked.map_or_else(
                    || "nothing".to_owned(),
                    |h| format!("{} (seq {})", h.id.short(), h.seq)
                )
            ),
        }
    }
}

/// What verification checked and the first problem, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The run verified.
    pub run: RunId,
    /// Events whose hash, encoding, seq and parent were checked.
    pub events: u64,
    /// Distinct blobs read and hashed.
    pub blobs: u64,
    /// The first problem; `None` means the run verifies.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// Whether everything checked out.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verify `run` (including a fork's shared prefix). Storage errors are `Err`; damage found
/// is reported in [`VerifyReport::problem`].
pub fn verify_run(
    store: &(impl Store + ?Sized),
    run: &RunId,
    options: VerifyOptions,
) -> Result<VerifyReport> {
    let info = store.require_run(run)?;
    let mut report = VerifyReport {
        run: *run,
        events: 0,
        blobs: 0,
        problem: None,
    };
    let owner_of = |seq: u64| -> Result<RunId> {
        // Which run's own log holds `seq` (for the problem report).
        let mut current = info.clone();
        while let Some(origin) = current.origin.filter(|_| seq < current.own_from()) {
            current = store.require_run(&origin.run)?;
        }
        Ok(current.id)
    };
    let mut seen_blobs = BTreeSet::new();
    let mut prev: Option<Head> = None;
    let len = info.len();
    let mut next = 0;
    while next < len {
        let ids = store.event_ids(run, next..=(next + MAX_RANGE - 1).min(len - 1))?;
        if ids.is_empty() {
            break;
        }
        for (seq, id) in ids {
            if let Some(kind) =
                check_event(store, seq, id, prev, options, &mut seen_blobs, &mut report)?
            {
                report.problem = Some(Problem {
                    run: owner_of(seq)?,
                    seq,
                    kind,
                });
                return Ok(report);
            }
            prev = Some(Head { id, seq });
        }
        next = prev.map_or(len, |h| h.seq + 1);
    }
    if let Some(recorded) = info.head
        && prev != Some(recorded)
    {
        report.problem = Some(Problem {
            run: *run,
            seq: recorded.seq,
            kind: ProblemKind::HeadMismatch {
                recorded,
                walked: prev,
            },
        });
    }
    Ok(report)
}

fn check_event(
    store: &(impl Store + ?Sized),
    seq: u64,
    id: EventId,
    prev: Option<Head>,
    options: VerifyOptions,
    seen_blobs: &mut BTreeSet<BlobId>,
    report: &mut VerifyReport,
) -> Result<Option<ProblemKind>> {
    let Some(bytes) = store.event_bytes(&id)? else {
        return Ok(Some(ProblemKind::MissingEvent { id }));
    };
    let event = match decode_verified(&id, &bytes) {
        Ok(event) => event,
        Err(error) => return Ok(Some(ProblemKind::BadEvent { id, error })),
    };
    if event.seq != seq {
        return Ok(Some(ProblemKind::SeqMismatch { found: event.seq }));
    }
    let expected_parent = prev.map(|h| h.id);
    if event.parent != expected_parent {
        return Ok(Some(ProblemKind::ParentMismatch {
            expected: expected_parent,
            found: event.parent,
        }));
    }
    report.events += 1;
    if options.blobs {
        for blob in event.kind.blobs() {
            if !seen_blobs.insert(blob) {
                continue;
            }
            let Some(bytes) = store.blob(&blob)? else {
                return Ok(Some(ProblemKind::MissingBlob { blob }));
            };
            let actual = BlobId::of(&bytes);
            if actual != blob {
                return Ok(Some(ProblemKind::BlobMismatch { blob, actual }));
            }
            report.blobs += 1;
        }
    }
    Ok(None)
}
