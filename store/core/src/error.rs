//! `store::Error`: what went wrong, where, and what to do about it.

use retrace_events::{EventId, Head, IdError, RunId};

/// A process holding a store (see [`Error::Locked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command line, arguments separated by spaces (empty when unreadable).
    pub command: String,
}

fn fmt_holder(holder: Option<&Holder>) -> String {
    match holder {
        None => "another process".to_owned(),
        Some(Holder { pid, command }) if command.is_empty() => format!("process {pid}"),
        Some(Holder { pid, command }) => format!("process {pid} (`{command}`)"),
    }
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`Store`](crate::Store) operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No run with this id.
    #[error("run {run} not found; `retrace runs` lists the runs in this store")]
    RunNotFound {
        /// The run asked for.
        run: RunId,
    },
    /// A run with this id already exists.
    #[error("run {run} already exists")]
    RunExists {
        /// The duplicate id.
        run: RunId,
    },
    /// Compare-and-swap failed: someone else extended the run first. Re-read the run's
    /// state and decide again; history is never forked by a stale writer.
    #[error(
        "append to run {run} conflicts: expected head {}, but the head is {}; re-read the run and retry",
        fmt_head_id(*.expected), fmt_head(*.actual)
    )]
    Conflict {
        /// The run appended to.
        run: RunId,
        /// The head the writer expected.
        expected: Option<EventId>,
        /// The head the run actually has.
        actual: Option<Head>,
    },
    /// The events given do not continue the run's chain (wrong parent or seq, empty batch,
    /// too large).
    #[error("invalid append to run {run} at seq {seq}: {reason}")]
    InvalidAppend {
        /// The run appended to.
        run: RunId,
        /// The seq of the offending event (or the next seq for an empty batch).
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A fork's origin does not name an event of its run at that seq.
    #[error("cannot fork from run {run} at seq {seq}: {reason}")]
    BadForkOrigin {
        /// The run forked from.
        run: RunId,
        /// The seq forked at.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A run id prefix did not resolve.
    #[error(transparent)]
    Id(#[from] IdError),
    /// Stored data failed a consistency check while being read.
    #[error("store data is corrupt: {what}; run `retrace verify` to locate damage")]
    Corrupt {
        /// What was found.
        what: String,
    },
    /// The store was written by another on-disk format version.
    #[error(
        "store at {path} has format {found}, but this build of retrace reads format version {expected}; \
         use a retrace release that matches it (nothing was read or changed)"
    )]
    FormatVersion {
        /// Where the store is.
        path: String,
        /// Version recorded in the store.
        found: String,
        /// Version this build understands.
        expected: u8,
    },
    /// The directory holds something other than a retrace store.
    #[error(
        "{path} is not a retrace store: {reason}; point --store at a retrace store or an empty directory"
    )]
    NotAStore {
        /// Where.
        path: String,
        /// What was found.
        reason: String,
    },
    /// Another process holds the store (sled allows one process per store).
    #[error(
        "store at {path} is in use by {}; wait for it to finish or stop it, or go through the \
         process that holds the store (e.g. `retrace serve`)",
        fmt_holder(.holder.as_ref())
    )]
    Locked {
        /// Where the store is.
        path: String,
        /// The process holding it, when the system tells.
        holder: Option<Holder>,
    },
    /// A worker's append was refused because it no longer holds the run's lease: it
    /// expired (the worker stalled past its TTL) and another worker may drive the run now.
    /// The worker must stop driving the run; nothing was written.
    #[error(
        "worker {worker} no longer holds the lease of run {run} (it expired or another worker took it); \
         this worker stops driving the run and nothing was written"
    )]
    LeaseLost {
        /// The run.
        run: RunId,
        /// The worker whose append was refused.
        worker: String,
    },
    /// The daemon holding the store (`retrace serve`) refused or failed a call; its message.
    #[error("{message} (from retrace serve, which holds the store)")]
    Remote {
        /// What it said.
        message: String,
    },
    /// The storage engine failed (IO error, disk full, ...). The engine's message is the
    /// error's source (printed after this one by error reporters).
    #[error("storage backend failed during {op}")]
    Backend {
        /// What the store was doing.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wrap an engine error with the operation it interrupted.
    pub fn backend(
        op: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            op,
            source: source.into(),
        }
    }
}

fn fmt_head_id(id: Option<EventId>) -> String {
    id.map_or_else(|| "<empty run>".to_owned(), |id| id.short())
}

fn fmt_head(head: Option<Head>) -> String {
    head.map_or_else(
        || "<empty run>".to_owned(),
        |h| format!("{} (seq {})", h.id.short(), h.seq),
    )
}
