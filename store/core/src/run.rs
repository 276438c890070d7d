//! Run refs: a run is a named pointer to a head event, with metadata and, for a fork, the
//! point in another run where it branched off.

use std::collections::BTreeMap;

use retrace_events::{Head, RunId, Timestamp};

/// Where a fork branched off: it shares events `0..=at.seq` of `run` without copying them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ForkOrigin {
    /// The run forked from.
    pub run: RunId,
    /// The last shared event.
    pub at: Head,
}

/// A run ref as stored.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct RunInfo {
    /// The run's id.
    pub id: RunId,
    /// The newest event; `None` for a run with no events yet.
    pub head: Option<Head>,
    /// For a fork: where it branched off.
    pub origin: Option<ForkOrigin>,
    /// When the run was created (recorded by the caller).
    pub created_at: Timestamp,
    /// Free-form labels (name, status cache, owner, ...). Not part of any hash.
    pub meta: BTreeMap<String, String>,
}

impl RunInfo {
    /// First seq this run stores itself; lower seqs belong to the fork origin's lineage.
    pub fn own_from(&self) -> u64 {
        self.origin.map_or(0, |o| o.at.seq + 1)
    }

    /// Number of events in the run, including the shared prefix of a fork.
    pub fn len(&self) -> u64 {
        self.head.map_or(0, |h| h.seq + 1)
    }

    /// Whether the run has no events at all.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }
}

/// What `create_run` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// The new run's id (callers in the impure layer generate it).
    pub id: RunId,
    /// When it was created.
    pub created_at: Timestamp,
    /// For a fork: the last shared event of another run. The new run's head starts there.
    pub origin: Option<ForkOrigin>,
    /// Initial labels.
    pub meta: BTreeMap<String, String>,
}

impl NewRun {
    /// A fresh run with no events and no labels.
    pub fn new(id: RunId, created_at: Timestamp) -> Self {
        Self {
            id,
            created_at,
            origin: None,
            meta: BTreeMap::new(),
        }
    }

    /// The run ref this creates: no events of its own, head at the fork point (if any).
    pub fn into_info(self) -> RunInfo {
        RunInfo {
            id: self.id,
            head: self.origin.map(|o| o.at),
            origin: self.origin,
            created_at: self.created_at,
            meta: self.meta,
        }
    }

    /// A fork of `origin.run` sharing its events up to and including `origin.at`.
    pub fn fork(id: RunId, created_at: Timestamp, origin: ForkOrigin) -> Self {
        Self {
            origin: Some(origin),
            ..Self::new(id, created_at)
        }
    }
}

/// Counts that tests and benchmarks use to prove what a store did (e.g. that a fork copied
/// no prefix, that a repeated blob was stored once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Run refs.
    pub runs: u64,
    /// Events stored, each in the log of the run that wrote it (a fork adds none for the
    /// prefix it shares).
    pub events: u64,
    /// Storage records holding those events (the memory backend: one per event; sled: one
    /// chunk per append of up to 256 events).
    pub log_entries: u64,
    /// Distinct blobs stored.
    pub blobs: u64,
    /// Total bytes of distinct blobs.
    pub blob_bytes: u64,
    /// Snapshots stored.
    pub snapshots: u64,
}
