//! The store over the API: one `POST /v1/store` route taking a bincode [`Call`] and
//! answering a bincode `Result<Reply, WireError>`, so a process that does not hold the store
//! reads and writes it through the daemon with the same [`Store`] trait
//! ([`RemoteStore`](crate::RemoteStore)). Events travel in the canonical bincode encoding.

use std::collections::BTreeMap;

use retrace_events::{BlobId, Event, EventId, Head, RunId, Timestamp};
use retrace_store::{Error, ForkOrigin, NewRun, RunInfo, StoreStats};

/// Largest body the store route takes (a blob is at most this big through the daemon).
pub const MAX_STORE_BODY: usize = 256 * 1024 * 1024;

/// One [`Store`](retrace_store::Store) primitive.
#[derive(Clone, Debug, bincode::Encode, bincode::Decode)]
#[allow(missing_docs)]
pub enum Call {
    CreateRun {
        id: RunId,
        created_at: Timestamp,
        origin: Option<ForkOrigin>,
        meta: BTreeMap<String, String>,
    },
    Run(RunId),
    Runs,
    SetRunMeta {
        run: RunId,
        key: String,
        value: Option<String>,
    },
    Append {
        run: RunId,
        expected: Option<EventId>,
        events: Vec<Event>,
    },
    OwnEvents {
        run: RunId,
        from: u64,
        to: u64,
    },
    PutBlob(Vec<u8>),
    /// Blobs a client buffered (see [`RemoteStore`](crate::RemoteStore)).
    PutBlobs(Vec<Vec<u8>>),
    Blob(BlobId),
    PutSnapshot {
        at: EventId,
        bytes: Vec<u8>,
    },
    Snapshot(EventId),
    Flush,
    Stats,
    SnapshotIds,
}

/// What a [`Call`] returns.
#[derive(Clone, Debug, bincode::Encode, bincode::Decode)]
#[allow(missing_docs)]
pub enum Reply {
    Run(Option<RunInfo>),
    Info(RunInfo),
    Runs(Vec<RunInfo>),
    Head(Head),
    /// `(seq, id, canonical bytes)`.
    Events(Vec<(u64, EventId, Vec<u8>)>),
    Blob(BlobId),
    Bytes(Option<Vec<u8>>),
    Done,
    Stats([u64; 6]),
    EventIds(Vec<EventId>),
}

/// A store error as it crosses the wire: the kinds callers act on keep their shape, the
/// rest keep their message.
#[derive(Clone, Debug, bincode::Encode, bincode::Decode)]
#[allow(missing_docs)]
pub enum WireError {
    RunNotFound(RunId),
    RunExists(RunId),
    Conflict {
        run: RunId,
        expected: Option<EventId>,
        actual: Option<Head>,
    },
    InvalidAppend {
        run: RunId,
        seq: u64,
        reason: String,
    },
    BadForkOrigin {
        run: RunId,
        seq: u64,
        reason: String,
    },
    Corrupt(String),
    Other(String),
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        match e {
            Error::RunNotFound { run } => Self::RunNotFound(run),
            Error::RunExists { run } => Self::RunExists(run),
            Error::Conflict {
                run,
                expected,
                actual,
            } => Self::Conflict {
                run,
                expected,
                actual,
            },
            Error::InvalidAppend { run, seq, reason } => Self::InvalidAppend { run, seq, reason },
            Error::BadForkOrigin { run, seq, reason } => Self::BadForkOrigin { run, seq, reason },
            Error::Corrupt { what } => Self::Corrupt(what),
            other => Self::Other(chain(&other)),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::RunNotFound(run) => Self::RunNotFound { run },
            WireError::RunExists(run) => Self::RunExists { run },
            WireError::Conflict {
                run,
                expected,
                actual,
            } => Self::Conflict {
                run,
                expected,
                actual,
            },
            WireError::InvalidAppend { run, seq, reason } => {
                Self::InvalidAppend { run, seq, reason }
            }
            WireError::BadForkOrigin { run, seq, reason } => {
                Self::BadForkOrigin { run, seq, reason }
            }
            WireError::Corrupt(what) => Self::Corrupt { what },
            WireError::Other(message) => Self::Remote { message },
        }
    }
}

/// An error and its sources, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The [`NewRun`] a [`Call::CreateRun`] carries.
pub fn new_run(
    id: RunId,
    created_at: Timestamp,
    origin: Option<ForkOrigin>,
    meta: BTreeMap<String, String>,
) -> NewRun {
    NewRun {
        id,
        created_at,
        origin,
        meta,
    }
}

/// Counts as they travel.
pub fn stats_to_wire(s: StoreStats) -> [u64; 6] {
    [
        s.runs,
        s.events,
        s.log_entries,
        s.blobs,
        s.blob_bytes,
        s.snapshots,
    ]
}

/// Counts as they arrive.
pub fn stats_from_wire(s: [u64; 6]) -> StoreStats {
    StoreStats {
        runs: s[0],
        events: s[1],
        log_entries: s[2],
        blobs: s[3],
        blob_bytes: s[4],
        snapshots: s[5],
    }
}

/// bincode's configuration for the wire (the events codec's).
pub fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}
