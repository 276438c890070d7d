//! The [`Store`] trait: the one interface to a retrace store, whatever holds it.
//!
//! Backends implement the primitives (run refs, the events a run wrote itself by seq, blobs,
//! snapshots, subscriptions). Everything that follows from them — reading through a fork
//! into its ancestors, decoding, prefix lookup — is provided here once, so every backend
//! behaves the same way and the conformance suite checks one behaviour.
//!
//! Events are addressed by `(run, seq)` and carry the id they were stored under; there is
//! no lookup by event id alone. Readers that must not trust storage re-hash (see
//! [`verify_run`](crate::verify_run)).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use retrace_events::{BlobId, Event, EventId, Head, RunId, decode_event, resolve_prefix};

use crate::error::{Error, Result};
use crate::run::{NewRun, RunInfo, StoreStats};
use crate::watch::Subscription;

/// An event as a backend holds it: position, the id it was stored under, canonical bytes.
/// Unverified: `verify_run` recomputes the id from the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the run.
    pub seq: u64,
    /// The id it was stored under.
    pub id: EventId,
    /// Its canonical bytes.
    pub bytes: Vec<u8>,
}

/// Largest number of seqs a single `events`/`event_ids` call returns; page through longer
/// ranges so a million-event run never has to sit in memory at once.
pub const MAX_RANGE: u64 = 100_000;

/// A content-addressed, append-only store of runs, events, blobs and snapshots.
///
/// Methods block; async callers use `spawn_blocking`. All methods take `&self` and are safe
/// to call from many threads.
pub trait Store: Send + Sync {
    /// Create a run ref. A fork's origin must name an existing event of the origin run at
    /// that seq; the fork then starts with that event as its head, sharing (not copying)
    /// everything up to it.
    fn create_run(&self, new: NewRun) -> Result<RunInfo>;

    /// The run ref, if it exists.
    fn run(&self, id: &RunId) -> Result<Option<RunInfo>>;

    /// Every run ref, ordered by id.
    fn runs(&self) -> Result<Vec<RunInfo>>;

    /// Set (or with `None`, remove) one label of a run.
    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo>;

    /// Append `events` to `run` if its head is still `expected` (compare-and-swap).
    ///
    /// The events must chain: the first one's parent is `expected` and its seq the next seq,
    /// each following one's parent is the one before. On success every event is durable (it
    /// survives a crash of the process or the machine) and subscribers have been told. A
    /// stale writer gets [`Error::Conflict`] and nothing is written.
    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head>;

    /// Events the run wrote itself within `seqs`, in seq order, as stored: the id each was
    /// stored under and its bytes, unverified. A fork's shared prefix is not among them (it
    /// lives in the origin's log).
    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>>;

    /// Store a blob (once: storing the same bytes again adds nothing). A blob is durable
    /// once a later `append` or `flush` has returned.
    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId>;

    /// A blob's bytes, unverified.
    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>>;

    /// Store a snapshot (a cached, re-derivable state) for the state after event `at`. A
    /// cache: a crash may lose recent snapshots, and readers must check what they get.
    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()>;

    /// The snapshot stored for event `at`, if any (untrusted: callers check it).
    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>>;

    /// Ids of the events that have a snapshot, in id order (to copy a store whole).
    fn snapshot_ids(&self) -> Result<Vec<EventId>>;

    /// A live feed of `run`'s future appends.
    fn subscribe(&self, run: &RunId) -> Result<Subscription>;

    /// Make every write that returned before this call durable (snapshots excepted: they are
    /// a cache).
    fn flush(&self) -> Result<()>;

    /// Counts of what is stored.
    fn stats(&self) -> Result<StoreStats>;

    /// The run ref, or [`Error::RunNotFound`].
    fn require_run(&self, id: &RunId) -> Result<RunInfo> {
        self.run(id)?.ok_or(Error::RunNotFound { run: *id })
    }

    /// The stored events at `seqs` of `run` (clamped to the run's length and to
    /// [`MAX_RANGE`] seqs), following a fork into its ancestors; unverified. In seq order.
    fn stored_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        let info = self.require_run(run)?;
        let Some(head) = info.head else {
            return Ok(Vec::new());
        };
        let start = *seqs.start();
        let end = (*seqs.end())
            .min(head.seq)
            .min(start.saturating_add(MAX_RANGE - 1));
        if start > end {
            return Ok(Vec::new());
        }
        // Walk up the lineage: each run serves the seqs it wrote itself.
        let mut segments = Vec::new();
        let mut current = info;
        let mut hi = end;
        loop {
            let own_from = current.own_from();
            if hi >= own_from {
                segments.push((current.id, own_from.max(start)..=hi));
            }
            match current.origin {
                Some(origin) if start < own_from => {
                    hi = hi.min(origin.at.seq);
                    current = self.run(&origin.run)?.ok_or_else(|| Error::Corrupt {
                        what: format!("run {} forks from missing run {}", current.id, origin.run),
                    })?;
                }
                _ => break,
            }
        }
        let mut out = Vec::with_capacity(usize::try_from(end - start + 1).unwrap_or(0));
        for (owner, range) in segments.into_iter().rev() {
            let events = self.own_events(&owner, range.clone())?;
            let contiguous = events
                .iter()
                .zip(range.clone())
                .all(|(e, seq)| e.seq == seq);
            if !contiguous || events.len() as u64 != range.end() - range.start() + 1 {
                return Err(Error::Corrupt {
                    what: format!(
                        "run {owner} log holds {} events for seqs {range:?}, expected every one",
                        events.len()
                    ),
                });
            }
            out.extend(events);
        }
        Ok(out)
    }

    /// Ids of the events at `seqs` of `run` (see [`Self::stored_events`]).
    fn event_ids(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<(u64, EventId)>> {
        Ok(self
            .stored_events(run, seqs)?
            .into_iter()
            .map(|e| (e.seq, e.id))
            .collect())
    }

    /// The id of the event at `seq` of `run`, following a fork into its ancestors.
    fn event_id_at(&self, run: &RunId, seq: u64) -> Result<Option<EventId>> {
        Ok(self.event_ids(run, seq..=seq)?.first().map(|(_, id)| *id))
    }

    /// The decoded events at `seqs` of `run` with their ids. Checks the encoding, not the
    /// hashes: `verify_run` does that.
    fn events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<(EventId, Event)>> {
        self.stored_events(run, seqs)?
            .into_iter()
            .map(|stored| {
                let event = decode_event(&stored.bytes).map_err(|e| Error::Corrupt {
                    what: format!("run {run} seq {}: event {}: {e}", stored.seq, stored.id),
                })?;
                Ok((stored.id, event))
            })
            .collect()
    }

    /// The decoded event at `seq` of `run`, if the run has one there.
    fn event_at(&self, run: &RunId, seq: u64) -> Result<Option<(EventId, Event)>> {
        Ok(self.events(run, seq..=seq)?.into_iter().next())
    }

    /// Resolve a run id or unambiguous hex prefix of one.
    fn resolve_run(&self, prefix: &str) -> Result<RunId> {
        Ok(resolve_prefix(prefix, self.runs()?.iter().map(|r| r.id))?)
    }

    /// All forks made from `run`, by id.
    fn forks_of(&self, run: &RunId) -> Result<BTreeMap<RunId, RunInfo>> {
        Ok(self
            .runs()?
            .into_iter()
            .filter(|r| r.origin.is_some_and(|o| o.run == *run))
            .map(|r| (r.id, r))
            .collect())
    }
}

/// Check a fork origin against the store; backends call this in `create_run`.
pub fn check_fork_origin(store: &(impl Store + ?Sized), new: &NewRun) -> Result<()> {
    let Some(origin) = new.origin else {
        return Ok(());
    };
    let bad = |reason: String| Error::BadForkOrigin {
        run: origin.run,
        seq: origin.at.seq,
        reason,
    };
    let parent = store
        .run(&origin.run)?
        .ok_or_else(|| bad("no such run".into()))?;
    match store.event_id_at(&parent.id, origin.at.seq)? {
        Some(id) if id == origin.at.id => Ok(()),
        Some(id) => Err(bad(format!(
            "the event there is {}, not {}",
            id.short(),
            origin.at.id.short()
        ))),
        None => Err(bad(format!("the run has only {} events", parent.len()))),
    }
}

/// A shared store is a store (so `&Arc<dyn Store>` goes wherever a store is taken).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        (**self).create_run(new)
    }
    fn run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        (**self).run(id)
    }
    fn runs(&self) -> Result<Vec<RunInfo>> {
        (**self).runs()
    }
    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo> {
        (**self).set_run_meta(id, key, value)
    }
    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        (**self).append(run, expected, events)
    }
    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        (**self).own_events(run, seqs)
    }
    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        (**self).put_blob(bytes)
    }
    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        (**self).blob(id)
    }
    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        (**self).put_snapshot(at, bytes)
    }
    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        (**self).snapshot(at)
    }
    fn snapshot_ids(&self) -> Result<Vec<EventId>> {
        (**self).snapshot_ids()
    }
    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        (**self).subscribe(run)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn stats(&self) -> Result<StoreStats> {
        (**self).stats()
    }
}
