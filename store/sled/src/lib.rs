//! # retrace-store-sled
//!
//! The embedded default backend of the retrace [`Store`]: a directory (`./.retrace/` unless
//! told otherwise) holding a sled database and retrace's write-ahead log, laid out as
//! [`layout`] describes.
//!
//! Guarantees (each one is exercised by the conformance suite or the crash test):
//! - **Durable acknowledgement.** `append`, `create_run` and `set_run_meta` return only once
//!   their write-ahead log record is written and fdatasynced. One committer thread performs
//!   every write and syncs once for everything queued meanwhile (group commit); sled is
//!   flushed at checkpoints and the log replayed into it on open.
//! - **Atomic appends.** An append is one atomic sled batch of log chunks, and a run's head
//!   is read from its log, so a crash leaves each append wholly present or wholly absent.
//! - **Compare-and-swap.** Appends to one run are serialised by a per-run lock, and the head
//!   is checked under it; sled's file lock keeps other processes out.
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

mod committer;
pub mod layout;
mod wal;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use retrace_events::{BlobId, Event, EventId, Head, RunId};
use retrace_store::{
    Appended, Error, NewRun, Result, RunInfo, Store, StoreStats, StoredEvent, Subscription,
    Watchers, check_fork_origin, prepare_append,
};
use sled::Tree;

use committer::{Committer, Trees, Write};
use wal::Op;

/// One lock per run, holding the run's ref once loaded. Writes to a run are serialised under
/// it (that is what makes the head check a compare-and-swap), and since this process is the
/// store's only writer the ref it holds is always current: appends need not read it back.
/// Writes to different runs never wait for each other. Entries are never removed: one run
/// ref per run written by this process.
#[derive(Debug, Default)]
struct RunLocks(Mutex<BTreeMap<RunId, Arc<Mutex<Option<RunInfo>>>>>);

type RunSlot = Arc<Mutex<Option<RunInfo>>>;

impl RunLocks {
    fn get(&self, run: &RunId) -> RunSlot {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(*run).or_default())
    }
}

fn lock(slot: &RunSlot) -> MutexGuard<'_, Option<RunInfo>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`Store`] in a sled database on disk.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    log: Tree,
    blobs: Tree,
    runs: Tree,
    snapshots: Tree,
    run_locks: RunLocks,
    committer: Committer,
    watchers: Watchers,
}

/// A value of `tree`, copied out.
fn read_vec(tree: &Tree, key: &[u8], op: &'static str) -> Result<Option<Vec<u8>>> {
    Ok(tree.get(key).map_err(backend(op))?.map(|v| v.to_vec()))
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
        let opened = layout::sled_config(path).open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                if started.elapsed() > LOCK_PATIENCE {
                    return Err(Error::Locked {
                        path: path.display().to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // sled refuses a database created with other settings (segment size, ...): that
            // is a store of another format, not an IO failure.
            Err(sled::Error::Unsupported(why)) => {
                return Err(Error::FormatVersion {
                    path: path.display().to_string(),
                    found: format!("\"other storage settings\" (sled says: {why})"),
                    expected: retrace_events::FORMAT_VERSION,
                });
            }
            Err(other) => return Err(Error::backend("open", other)),
        }
    }
}

/// Refuse a store of another format before reading it; stamp a new, empty one.
fn check_format(path: &Path, db: &sled::Db, trees: &Trees) -> Result<()> {
    let meta = db.open_tree(layout::META).map_err(backend("open tree"))?;
    let found = meta
        .get(layout::FORMAT_KEY)
        .map_err(backend("read format"))?;
    let expected = layout::format_value();
    match found {
        Some(v) if v.as_ref() == expected.as_bytes() => Ok(()),
        Some(v) => Err(Error::FormatVersion {
            path: path.display().to_string(),
            found: String::from_utf8_lossy(&v).into_owned(),
            expected: retrace_events::FORMAT_VERSION,
        }),
        None if trees.runs.is_empty() && trees.log.is_empty() && trees.blobs.is_empty() => {
            meta.insert(layout::FORMAT_KEY, expected.as_bytes())
                .map_err(backend("write format"))?;
            db.flush().map_err(backend("write format"))?;
            Ok(())
        }
        None => Err(Error::NotAStore {
            path: path.display().to_string(),
            reason: "its database has data but no retrace format recorded".to_owned(),
        }),
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
        layout::check_dir(&path)?;
        let db = open_db(&path.join(layout::SLED_DIR))?;
        let tree = |name: &str| db.open_tree(name).map_err(backend("open tree"));
        let trees = Trees {
            db: db.clone(),
            log: tree(layout::LOG)?,
            blobs: tree(layout::BLOBS)?,
            runs: tree(layout::RUNS)?,
            snapshots: tree(layout::SNAPSHOTS)?,
        };
        // The format guard runs before anything (the WAL replay included) touches the data.
        check_format(&path, &db, &trees)?;
        let committer = Committer::start(trees.clone(), &path.join(layout::WAL_FILE))?;
        Ok(Self {
            log: trees.log,
            blobs: trees.blobs,
            runs: trees.runs,
            snapshots: trees.snapshots,
            run_locks: RunLocks::default(),
            committer,
            watchers: Watchers::default(),
            path,
            db,
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many durable group writes (WAL fdatasyncs) the store has performed.
    pub fn syncs(&self) -> u64 {
        self.committer.syncs()
    }

    /// Writes replayed from the write-ahead log when the store opened: non-zero after a
    /// crash or kill.
    pub fn replayed_on_open(&self) -> usize {
        self.committer.replayed()
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        let wal = std::fs::metadata(self.path.join(layout::WAL_FILE)).map_or(0, |m| m.len());
        Ok(self.db.size_on_disk().map_err(backend("size_on_disk"))? + wal)
    }

    fn durable(&self) -> Result<()> {
        self.committer.submit(Write::Flush).map(drop)
    }

    /// The run ref with its head, which is the last event of the run's last chunk (or the
    /// fork point, for a fork that has appended nothing yet).
    fn load_run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        let Some(bytes) = self.runs.get(id.as_bytes()).map_err(backend("read run"))? else {
            return Ok(None);
        };
        let mut info = layout::decode_run(id, &bytes)?;
        let last_chunk = self
            .log
            .range(layout::log_key(id, 0)..=layout::log_key(id, u64::MAX))
            .next_back()
            .transpose()
            .map_err(backend("read log"))?;
        info.head = match last_chunk {
            Some((key, chunk)) => {
                let first = layout::log_key_seq(&key)?;
                layout::decode_chunk(id, first, &chunk)?
                    .last()
                    .map(|e| Head {
                        id: e.id,
                        seq: e.seq,
                    })
            }
            None => info.origin.map(|o| o.at),
        };
        Ok(Some(info))
    }
}

impl SledStore {
    /// The run ref held in a run's lock slot, loading it on first use.
    fn cached_run(&self, id: &RunId, cached: &mut Option<RunInfo>) -> Result<RunInfo> {
        if let Some(info) = cached {
            return Ok(info.clone());
        }
        let info = self.require_run(id)?;
        *cached = Some(info.clone());
        Ok(info)
    }
}

impl Store for SledStore {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        check_fork_origin(self, &new)?;
        let info = new.into_info();
        let slot = self.run_locks.get(&info.id);
        let mut cached = lock(&slot);
        let created = self.committer.submit(Write::Op(Op::CreateRun {
            key: *info.id.as_bytes(),
            value: layout::encode_run(&info),
        }))?;
        if !created {
            return Err(Error::RunExists { run: info.id });
        }
        *cached = Some(info.clone());
        Ok(info)
    }

    fn run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        self.load_run(id)
    }

    fn runs(&self) -> Result<Vec<RunInfo>> {
        let mut out = Vec::new();
        for key in self.runs.iter().keys() {
            let key = key.map_err(backend("list runs"))?;
            let id = RunId::from_slice(&key).ok_or_else(|| Error::Corrupt {
                what: format!("run key of {} bytes", key.len()),
            })?;
            out.extend(self.load_run(&id)?);
        }
        Ok(out)
    }

    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo> {
        let slot = self.run_locks.get(id);
        let mut cached = lock(&slot);
        let mut info = self.cached_run(id, &mut cached)?;
        match value {
            Some(v) => info.meta.insert(key.to_owned(), v.to_owned()),
            None => info.meta.remove(key),
        };
        self.committer.submit(Write::Op(Op::PutRun {
            key: *id.as_bytes(),
            value: layout::encode_run(&info),
        }))?;
        *cached = Some(info.clone());
        Ok(info)
    }

    #[tracing::instrument(name = "store_append", level = "debug", skip_all, fields(run = %run.short(), events = events.len()))]
    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        let slot = self.run_locks.get(run);
        let mut cached = lock(&slot);
        let mut info = self.cached_run(run, &mut cached)?;
        let (records, head) = prepare_append(&info, expected, events)?;

        // One log entry per chunk of up to CHUNK_EVENTS events (atomic through the WAL).
        let chunks = records
            .chunks(layout::CHUNK_EVENTS)
            .map(|chunk| {
                let key = layout::log_key(run, chunk[0].seq);
                (
                    key,
                    layout::encode_chunk(chunk.iter().map(|r| (&r.id, r.bytes.as_slice()))),
                )
            })
            .collect();
        // Durable when the committer answers; then tell subscribers, still under the run
        // lock so they see appends in order.
        self.committer.submit(Write::Op(Op::Log { chunks }))?;
        info.head = Some(head);
        *cached = Some(info);
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

    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        let (lo, hi) = (*seqs.start(), *seqs.end());
        if lo > hi {
            return Ok(Vec::new());
        }
        // Start at the chunk holding `lo`: the last chunk of this run starting at or before it.
        let start = self
            .log
            .range(layout::log_key(run, 0)..=layout::log_key(run, lo))
            .next_back()
            .transpose()
            .map_err(backend("read log"))?
            .map_or(layout::log_key(run, lo), |(key, _)| {
                let mut k = [0u8; 24];
                k.copy_from_slice(&key);
                k
            });
        let mut out = Vec::new();
        for entry in self.log.range(start..=layout::log_key(run, hi)) {
            let (key, chunk) = entry.map_err(backend("read log"))?;
            let first = layout::log_key_seq(&key)?;
            out.extend(
                layout::decode_chunk(run, first, &chunk)?
                    .into_iter()
                    .filter(|e| (lo..=hi).contains(&e.seq)),
            );
        }
        Ok(out)
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        let id = BlobId::of(bytes);
        // Content-addressed: if the id is present, so are the bytes. Skipping the write keeps
        // a repeated payload from growing the store.
        if !self
            .blobs
            .contains_key(id.as_bytes())
            .map_err(backend("read blob"))?
        {
            committer::put_blob(&self.blobs, *id.as_bytes(), bytes)?;
            self.committer.log_blob(*id.as_bytes(), bytes.to_vec())?;
        }
        Ok(id)
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        read_vec(&self.blobs, id.as_bytes(), "read blob")
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        self.committer.submit(Write::Snapshot {
            key: *at.as_bytes(),
            bytes: bytes.to_vec(),
        })?;
        Ok(())
    }

    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        read_vec(&self.snapshots, at.as_bytes(), "read snapshot")
    }

    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        self.require_run(run)?;
        Ok(self.watchers.subscribe(*run))
    }

    fn flush(&self) -> Result<()> {
        self.durable()
    }

    fn stats(&self) -> Result<StoreStats> {
        let mut events = 0;
        for chunk in self.log.iter().values() {
            events += layout::chunk_len(&chunk.map_err(backend("stats"))?);
        }
        let mut blob_bytes = 0;
        for blob in self.blobs.iter().values() {
            blob_bytes += blob.map_err(backend("stats"))?.len() as u64;
        }
        Ok(StoreStats {
            runs: self.runs.len() as u64,
            events,
            log_entries: self.log.len() as u64,
            blobs: self.blobs.len() as u64,
            blob_bytes,
            snapshots: self.snapshots.len() as u64,
        })
    }
}
