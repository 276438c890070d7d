//! # retrace-store-sled
//!
//! The embedded default backend of the retrace [`Store`]: one sled database in a directory
//! (`./.retrace/` unless told otherwise), with the layout in [`layout`].
//!
//! Guarantees (each one is exercised by the conformance suite or the crash test):
//! - **Durable acknowledgement.** `append`, `create_run` and `set_run_meta` return only after
//!   sled has flushed and fsynced them; concurrent callers share flushes ([`GroupCommit`]).
//! - **Atomic head moves.** An append's index entries and new head are written in one sled
//!   transaction; the event bytes go in first and are harmless if a crash orphans them.
//! - **Compare-and-swap.** Appends to one run are serialised by an in-process lock, and the
//!   head is checked under it; sled's file lock keeps other processes out.
//! - **Format guard.** Opening a store of another format version fails before anything is
//!   read or written.
//!
//! ```
//! use retrace_events::{Event, EventKind, RunId, Timestamp};
//! use retrace_store::{NewRun, Store};
//! use retrace_store_sled::SledStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path())?;
//! let run = RunId::from_bytes([3; 16]);
//! store.create_run(NewRun::new(run, Timestamp(0)))?;
//! let spec = store.put_blob(b"{}")?;
//! let first = Event::root(Timestamp(1), EventKind::RunStarted { run, spec, input: spec });
//! let head = store.append(&run, None, &[first])?; // durable when this returns
//! drop(store);
//!
//! let reopened = SledStore::open(dir.path())?;
//! assert_eq!(reopened.run(&run)?.and_then(|r| r.head), Some(head));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod group_commit;
pub mod layout;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use retrace_events::{BlobId, Event, EventId, Head, RunId};
use retrace_store::{
    Appended, Error, NewRun, Result, RunInfo, Store, StoreStats, Subscription, Watchers,
    check_fork_origin, prepare_append,
};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};

pub use group_commit::GroupCommit;

/// Appends to one run are serialised by one of these many locks (chosen by run id).
const RUN_LOCK_STRIPES: usize = 64;

/// A [`Store`] in a sled database on disk.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    events: Tree,
    blobs: Tree,
    runs: Tree,
    index: Tree,
    snapshots: Tree,
    run_locks: Vec<Mutex<()>>,
    commit: GroupCommit,
    watchers: Watchers,
}

fn backend(op: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| Error::backend(op, e)
}

/// How long `open` keeps retrying a held lock. sled releases its file lock from its IO
/// thread pool shortly after the last handle drops, so a store closed a moment ago by this
/// or another process can still look held.
const LOCK_PATIENCE: Duration = Duration::from_millis(1_500);

fn open_db(path: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            // We flush on every acknowledged write; a background flusher would only compete.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                if started.elapsed() > LOCK_PATIENCE {
                    return Err(Error::Locked {
                        path: path.display().to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(Error::backend("open", other)),
        }
    }
}

fn is_lock_error(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
}

impl SledStore {
    /// Open (or create) the store in `path`. Fails with [`Error::Locked`] if another process
    /// holds it and [`Error::FormatVersion`] if it was written by another format version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = open_db(&path)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend("open tree"));
        let store = Self {
            events: tree(layout::EVENTS)?,
            blobs: tree(layout::BLOBS)?,
            runs: tree(layout::RUNS)?,
            index: tree(layout::INDEX)?,
            snapshots: tree(layout::SNAPSHOTS)?,
            run_locks: (0..RUN_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            commit: GroupCommit::default(),
            watchers: Watchers::default(),
            path,
            db,
        };
        store.check_format()?;
        Ok(store)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many flushes (fsyncs) the store has performed.
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(backend("size_on_disk"))
    }

    fn check_format(&self) -> Result<()> {
        let meta = self
            .db
            .open_tree(layout::META)
            .map_err(backend("open tree"))?;
        let found = meta
            .get(layout::FORMAT_KEY)
            .map_err(backend("read format"))?;
        let expected = layout::format_value();
        match found {
            Some(v) if v.as_ref() == expected.as_bytes() => Ok(()),
            Some(v) => Err(Error::FormatVersion {
                path: self.path.display().to_string(),
                found: String::from_utf8_lossy(&v).into_owned(),
                expected: retrace_events::FORMAT_VERSION,
            }),
            None if self.runs.is_empty() && self.events.is_empty() && self.blobs.is_empty() => {
                meta.insert(layout::FORMAT_KEY, expected.as_bytes())
                    .map_err(backend("write format"))?;
                self.durable()
            }
            None => Err(Error::FormatVersion {
                path: self.path.display().to_string(),
                found: "none recorded".to_owned(),
                expected: retrace_events::FORMAT_VERSION,
            }),
        }
    }

    fn durable(&self) -> Result<()> {
        self.commit
            .wait_durable(|| self.db.flush().map(drop))
            .map_err(backend("flush"))
    }

    fn lock_run(&self, run: &RunId) -> MutexGuard<'_, ()> {
        let stripe = run
            .as_bytes()
            .iter()
            .fold(0usize, |acc, b| acc.wrapping_mul(31) ^ usize::from(*b));
        self.run_locks[stripe % RUN_LOCK_STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn load_run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        self.runs
            .get(id.as_bytes())
            .map_err(backend("read run"))?
            .map(|bytes| layout::decode_run(id, &bytes))
            .transpose()
    }

    fn save_run(&self, info: &RunInfo) -> Result<()> {
        self.runs
            .insert(info.id.as_bytes(), layout::encode_run(info))
            .map_err(backend("write run"))?;
        Ok(())
    }
}

impl Store for SledStore {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        check_fork_origin(self, &new)?;
        let info = RunInfo {
            id: new.id,
            head: new.origin.map(|o| o.at),
            origin: new.origin,
            created_at: new.created_at,
            meta: new.meta,
        };
        let _guard = self.lock_run(&info.id);
        let created = self
            .runs
            .compare_and_swap(
                info.id.as_bytes(),
                None::<&[u8]>,
                Some(layout::encode_run(&info)),
            )
            .map_err(backend("create run"))?;
        if created.is_err() {
            return Err(Error::RunExists { run: info.id });
        }
        self.durable()?;
        Ok(info)
    }

    fn run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        self.load_run(id)
    }

    fn runs(&self) -> Result<Vec<RunInfo>> {
        self.runs
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(backend("list runs"))?;
                let id = RunId::from_slice(&key).ok_or_else(|| Error::Corrupt {
                    what: format!("run key of {} bytes", key.len()),
                })?;
                layout::decode_run(&id, &value)
            })
            .collect()
    }

    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo> {
        let _guard = self.lock_run(id);
        let mut info = self.require_run(id)?;
        match value {
            Some(v) => info.meta.insert(key.to_owned(), v.to_owned()),
            None => info.meta.remove(key),
        };
        self.save_run(&info)?;
        self.durable()?;
        Ok(info)
    }

    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        let _guard = self.lock_run(run);
        let mut info = self.require_run(run)?;
        let (records, head) = prepare_append(&info, expected, events)?;

        // 1. Event bytes, keyed by their hash: an orphan left by a crash is harmless.
        let mut batch = sled::Batch::default();
        for record in &records {
            batch.insert(record.id.as_bytes(), record.bytes.as_slice());
        }
        self.events
            .apply_batch(batch)
            .map_err(backend("write events"))?;

        // 2. Index entries and the new head, atomically: readers never see one without the other.
        info.head = Some(head);
        let run_bytes = layout::encode_run(&info);
        (&self.index, &self.runs)
            .transaction(|(index, runs)| {
                for record in &records {
                    index.insert(
                        &layout::index_key(run, record.seq)[..],
                        record.id.as_bytes(),
                    )?;
                }
                runs.insert(run.as_bytes(), run_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::backend("append", e),
                TransactionError::Abort(()) => Error::backend("append", "transaction aborted"),
            })?;

        // 3. Durable before acknowledged; 4. then tell subscribers (still under the run lock,
        //    so they see appends in order).
        self.durable()?;
        self.watchers.publish(Appended {
            run: *run,
            events: records
                .iter()
                .zip(events)
                .map(|(r, e)| (r.id, e.clone()))
                .collect(),
        });
        Ok(head)
    }

    fn event_bytes(&self, id: &EventId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .events
            .get(id.as_bytes())
            .map_err(backend("read event"))?
            .map(|v| v.to_vec()))
    }

    fn own_event_ids(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<(u64, EventId)>> {
        let lo = layout::index_key(run, *seqs.start());
        let hi = layout::index_key(run, *seqs.end());
        self.index
            .range(lo..=hi)
            .map(|entry| {
                let (key, value) = entry.map_err(backend("read index"))?;
                layout::decode_index_entry(&key, &value)
            })
            .collect()
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        let id = BlobId::of(bytes);
        // Content-addressed: if the id is present, the bytes are too. Writing nothing keeps
        // a repeated payload from growing the log.
        if !self
            .blobs
            .contains_key(id.as_bytes())
            .map_err(backend("read blob"))?
        {
            let _ = self
                .blobs
                .compare_and_swap(id.as_bytes(), None::<&[u8]>, Some(bytes))
                .map_err(backend("write blob"))?;
        }
        Ok(id)
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .blobs
            .get(id.as_bytes())
            .map_err(backend("read blob"))?
            .map(|v| v.to_vec()))
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        self.snapshots
            .insert(at.as_bytes(), bytes)
            .map_err(backend("write snapshot"))?;
        Ok(())
    }

    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshots
            .get(at.as_bytes())
            .map_err(backend("read snapshot"))?
            .map(|v| v.to_vec()))
    }

    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        self.require_run(run)?;
        Ok(self.watchers.subscribe(*run))
    }

    fn flush(&self) -> Result<()> {
        self.durable()
    }

    fn stats(&self) -> Result<StoreStats> {
        let mut blob_bytes = 0;
        for entry in &self.blobs {
            let (_, value) = entry.map_err(backend("stats"))?;
            blob_bytes += value.len() as u64;
        }
        Ok(StoreStats {
            runs: self.runs.len() as u64,
            events: self.events.len() as u64,
            index_entries: self.index.len() as u64,
            blobs: self.blobs.len() as u64,
            blob_bytes,
            snapshots: self.snapshots.len() as u64,
        })
    }
}
