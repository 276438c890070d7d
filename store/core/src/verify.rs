//! Verification (invariant 5): walk a run from its first event to its head, recompute every
//! event hash and the parent chain, check every referenced blob, and report the first
//! mismatch with the run that stores it, the seq and what differs. Stored bytes the backend
//! cannot even decode ([`Error::Corrupt`]) are damage found, reported the same way, not an
//! error of the walk.

use std::collections::BTreeSet;
use std::fmt;

use retrace_events::{BlobId, EventId, Head, RunId, VerifyError, decode_verified};

use crate::error::{Error, Result};
use crate::run::RunInfo;
use crate::store::{MAX_RANGE, Store, StoredEvent};

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
    /// The backend could not decode what it stores for this event or for a blob the event
    /// refers to (a damaged index entry, compressed frame or record).
    Unreadable {
        /// What the backend found, with where it looked.
        what: String,
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
            ProblemKind::Unreadable { what } => write!(f, "unreadable: {what}"),
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

/// Verify `run` (including a fork's shared prefix). Damage found, including bytes the
/// backend reports [`Error::Corrupt`] for, is reported in [`VerifyReport::problem`].
///
/// # Errors
///
/// [`Error::RunNotFound`] for an unknown run; any other storage error (I/O, a connection
/// lost) as the backend reports it.
pub fn verify_run(
    store: &(impl Store + ?Sized),
    run: &RunId,
    options: VerifyOptions,
) -> Result<VerifyReport> {
    let info = store.require_run(run)?;
    let mut walk = Walk {
        store,
        options,
        seen_blobs: BTreeSet::new(),
        prev: None,
        report: VerifyReport {
            run: *run,
            events: 0,
            blobs: 0,
            problem: None,
        },
    };
    let len = info.len();
    let mut next = 0;
    while next < len {
        let batch = match read_batch(store, run, next..=(next + MAX_RANGE - 1).min(len - 1))? {
            Ok(batch) => batch,
            Err((seq, what)) => {
                walk.report.problem = Some(Problem {
                    run: owner_of(store, &info, seq)?,
                    seq,
                    kind: ProblemKind::Unreadable { what },
                });
                return Ok(walk.report);
            }
        };
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        for stored in &batch {
            if let Some(kind) = walk.check(stored)? {
                walk.report.problem = Some(Problem {
                    run: owner_of(store, &info, stored.seq)?,
                    seq: stored.seq,
                    kind,
                });
                return Ok(walk.report);
            }
        }
        next = last + 1;
    }
    if let Some(recorded) = info.head
        && walk.prev != Some(recorded)
    {
        walk.report.problem = Some(Problem {
            run: *run,
            seq: recorded.seq,
            kind: ProblemKind::HeadMismatch {
                recorded,
                walked: walk.prev,
            },
        });
    }
    Ok(walk.report)
}

/// Read the events `seqs` of `run`; when the backend finds them corrupt, the first seq it
/// cannot read on its own and what it found (`Ok(Err(..))`), so the damage is pinned to one
/// event.
fn read_batch(
    store: &(impl Store + ?Sized),
    run: &RunId,
    seqs: std::ops::RangeInclusive<u64>,
) -> Result<Result<Vec<StoredEvent>, (u64, String)>> {
    let what = match store.stored_events(run, seqs.clone()) {
        Ok(batch) => return Ok(Ok(batch)),
        Err(Error::Corrupt { what }) => what,
        Err(e) => return Err(e),
    };
    for seq in seqs.clone() {
        match store.stored_events(run, seq..=seq) {
            Ok(_) => {}
            Err(Error::Corrupt { what }) => return Ok(Err((seq, what))),
            Err(e) => return Err(e),
        }
    }
    // the batch failed but no single event does: blame the batch's first
    Ok(Err((*seqs.start(), what)))
}

/// A blob's bytes, or `Ok(Err(problem))` when it is not stored or the backend cannot decode
/// what it stores.
fn read_blob(store: &(impl Store + ?Sized), blob: BlobId) -> Result<Result<Vec<u8>, ProblemKind>> {
    match store.blob(&blob) {
        Ok(Some(bytes)) => Ok(Ok(bytes)),
        Ok(None) => Ok(Err(ProblemKind::MissingBlob { blob })),
        Err(Error::Corrupt { what }) => Ok(Err(ProblemKind::Unreadable { what })),
        Err(e) => Err(e),
    }
}

/// Which run's own log holds `seq` of the run `info` (an ancestor for a shared prefix).
fn owner_of(store: &(impl Store + ?Sized), info: &RunInfo, seq: u64) -> Result<RunId> {
    let mut current = info.clone();
    while let Some(origin) = current.origin.filter(|_| seq < current.own_from()) {
        current = store.require_run(&origin.run)?;
    }
    Ok(current.id)
}

/// State of one verification walk.
struct Walk<'a, S: Store + ?Sized> {
    store: &'a S,
    options: VerifyOptions,
    seen_blobs: BTreeSet<BlobId>,
    prev: Option<Head>,
    report: VerifyReport,
}

impl<S: Store + ?Sized> Walk<'_, S> {
    /// Check one event against its id, its position and its predecessor, then its blobs.
    fn check(&mut self, stored: &StoredEvent) -> Result<Option<ProblemKind>> {
        let id = stored.id;
        let event = match decode_verified(&id, &stored.bytes) {
            Ok(event) => event,
            Err(error) => return Ok(Some(ProblemKind::BadEvent { id, error })),
        };
        if event.seq != stored.seq {
            return Ok(Some(ProblemKind::SeqMismatch { found: event.seq }));
        }
        let expected_parent = self.prev.map(|h| h.id);
        if event.parent != expected_parent {
            return Ok(Some(ProblemKind::ParentMismatch {
                expected: expected_parent,
                found: event.parent,
            }));
        }
        self.prev = Some(Head {
            id,
            seq: stored.seq,
        });
        self.report.events += 1;
        if self.options.blobs {
            for blob in event.kind.blobs() {
                if !self.seen_blobs.insert(blob) {
                    continue;
                }
                let bytes = match read_blob(self.store, blob)? {
                    Ok(bytes) => bytes,
                    Err(problem) => return Ok(Some(problem)),
                };
                if let Some(problem) = self.check_blob(blob, &bytes)? {
                    return Ok(Some(problem));
                }
            }
        }
        Ok(None)
    }

    /// Check a blob's bytes against its id, then the stored blobs it names (an artifact a
    /// tool result names, a message a request record names), transitively. An id it names
    /// that is not stored is not a problem: it may be text that looks like one.
    fn check_blob(&mut self, blob: BlobId, bytes: &[u8]) -> Result<Option<ProblemKind>> {
        let mut todo = vec![(blob, bytes.to_vec())];
        while let Some((blob, bytes)) = todo.pop() {
            let actual = BlobId::of(&bytes);
            if actual != blob {
                return Ok(Some(ProblemKind::BlobMismatch { blob, actual }));
            }
            self.report.blobs += 1;
            for named in BlobId::mentioned_in(&bytes) {
                // marked seen only when stored: an event naming it must still find it
                if self.seen_blobs.contains(&named) {
                    continue;
                }
                match read_blob(self.store, named)? {
                    Ok(named_bytes) => {
                        self.seen_blobs.insert(named);
                        todo.push((named, named_bytes));
                    }
                    Err(ProblemKind::MissingBlob { .. }) => {}
                    Err(problem) => return Ok(Some(problem)),
                }
            }
        }
        Ok(None)
    }
}
