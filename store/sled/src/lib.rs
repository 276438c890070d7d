//! # retrace-store-sled
//!
//! The embedded default backend of the retrace [`Store`]: a directory (`./.retrace/` unless
//! told otherwise) holding append-only segment files with every blob, event and run ref,
//! and a sled database indexing them, laid out as [`layout`] describes.
//!
//! Guarantees (each one is exercised by the conformance suite or the crash test):
//! - **Durable acknowledgement.** `append`, `create_run` and `set_run_meta` return only once
//!   their record is written to a segment and fdatasynced; writers waiting together share
//!   one sync (group commit). The index is moved into sled at checkpoints and rebuilt from
//!   the segments past the last checkpoint on open.
//! - **Atomic appends.** An append is one segment record, checked on open, so a crash
//!   leaves each append wholly present or wholly absent; a run's head is read from its log.
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

pub mod files;
pub mod holder;
mod index;
pub mod layout;
pub mod segments;
pub mod tables;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use retrace_events::{BlobId, Event, EventId, Head, RunId};
use retrace_store::{
    Appended, Error, NewRun, Result, RunInfo, Store, StoreStats, StoredEvent, Subscription,
    Watchers, check_fork_origin, prepare_append,
};
use sled::Tree;

use index::Index;
use layout::{Checkpoint, Loc, Pos, Record};
use segments::Segments;

/// Settings of an open store (none of them change the format: any store opens with any).
#[derive(Debug, Clone)]
pub struct Options {
    /// Segment bytes written since the last checkpoint that trigger the next one. Bounds
    /// the index held in memory and what opening after a crash scans.
    pub checkpoint_bytes: u64,
    /// Bytes at which a segment file is closed and the next begun
    /// ([`segments::SEGMENT_LIMIT`] by default; tests lower it to make segments roll).
    pub segment_bytes: u64,
    /// A fault plan for the store's file operations ([`files`]); `None` outside tests.
    pub faults: Option<Arc<files::Faults>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_bytes: 2 << 20,
            segment_bytes: segments::SEGMENT_LIMIT,
            faults: None,
        }
    }
}

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

/// A [`Store`] in segment files indexed by a sled database, on disk.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    index: Index,
    runs: Tree,
    snapshots: Tree,
    meta: Tree,
    segments: Segments,
    /// A checkpoint is under way (one at a time; writers do not wait for it).
    checkpointing: AtomicBool,
    options: Options,
    files: files::Files,
    replayed: usize,
    run_locks: RunLocks,
    watchers: Watchers,
}

/// A value of `tree`, copied out.
fn read_vec(tree: &Tree, key: &[u8], op: &'static str) -> Result<Option<Vec<u8>>> {
    Ok(tree.get(key).map_err(backend(op))?.map(|v| v.to_vec()))
}

fn backend(op: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| Error::backend(op, e)
}

/// How long `open` keeps retrying a lock held by this process, or by a process it cannot
/// name. sled releases its file lock from its IO thread pool shortly after the last handle
/// drops, so a store closed a moment ago can still look held.
const LOCK_PATIENCE: Duration = Duration::from_millis(1_500);

/// How long `open` keeps retrying a lock held by another process it can name ([`holder`]):
/// long enough for one that is just closing the store to let go, short enough that a user
/// is told at once who holds it.
const OTHER_HOLDER_PATIENCE: Duration = Duration::from_millis(200);

fn open_db(path: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    let mut cleared = false;
    loop {
        let opened = layout::sled_config(path).open();
        match opened {
            Ok(db) => return Ok(db),
            // sled 0.34 writes a snapshot of its page table on every open, to
            // `snap.<lsn>.generating` before renaming it, but reads the newest `snap.*` file
            // *including* one still generating: a process killed mid-write leaves a torn file
            // that fails every later open. sled holds the store's lock by the time it reads
            // snapshots, so such a file belongs to no live process; the log it summarises is
            // intact, and without the file sled rebuilds from the last whole snapshot.
            Err(corrupt @ sled::Error::Corruption { .. }) if !cleared => {
                cleared = true;
                if remove_torn_snapshots(path)? == 0 {
                    return Err(Error::backend("open", corrupt));
                }
            }
            Err(sled::Error::Io(io)) if is_lock_error(&io) => {
                let holder = holder::of(&path.join(layout::SLED_LOCK_FILE));
                let patience = match &holder {
                    Some(h) if h.pid != std::process::id() => OTHER_HOLDER_PATIENCE,
                    _ => LOCK_PATIENCE,
                };
                if started.elapsed() > patience {
                    return Err(Error::Locked {
                        // the store's directory, not its `sled/` inside
                        path: path.parent().unwrap_or(path).display().to_string(),
                        holder,
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

/// Remove the `snap.*.generating` files in the sled directory `path` (see [`open_db`]);
/// how many there were.
fn remove_torn_snapshots(path: &Path) -> Result<usize> {
    let io = |e: std::io::Error| Error::backend("clear a torn sled snapshot", e);
    let mut removed = 0;
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path()).map_err(io)?;
            tracing::warn!(file = %entry.path().display(), "removed a sled snapshot left half-written by a killed process");
            removed += 1;
        }
    }
    Ok(removed)
}

/// Refuse a store of another format before reading it; stamp a new, empty one.
fn check_format(path: &Path, db: &sled::Db, meta: &Tree) -> Result<()> {
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
        None => {
            let mut names = db.tree_names();
            names.retain(|n| {
                n.as_ref() != b"__sled__default" && n.as_ref() != layout::META.as_bytes()
            });
            for name in names {
                let tree = db.open_tree(&name).map_err(backend("open tree"))?;
                if !tree.is_empty() {
                    return Err(Error::NotAStore {
                        path: path.display().to_string(),
                        reason: "its database has data but no retrace format recorded".to_owned(),
                    });
                }
            }
            if path.join(layout::SEGMENTS_DIR).is_dir() {
                return Err(Error::NotAStore {
                    path: path.display().to_string(),
                    reason: "it has segment files but no retrace format recorded".to_owned(),
                });
            }
            meta.insert(layout::FORMAT_KEY, expected.as_bytes())
                .map_err(backend("write format"))?;
            db.flush().map_err(backend("write format"))?;
            Ok(())
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
        Self::open_with(path, Options::default())
    }

    /// [`Self::open`] with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        layout::check_dir(&path)?;
        let db = open_db(&path.join(layout::SLED_DIR))?;
        let tree = |name: &str| db.open_tree(name).map_err(backend("open tree"));
        let meta = tree(layout::META)?;
        // The format guard runs before anything touches the data.
        check_format(&path, &db, &meta)?;
        let checkpoint = meta
            .get(layout::CHECKPOINT_KEY)
            .map_err(backend("read checkpoint"))?
            .map(|v| Checkpoint::decode(&v))
            .transpose()?
            .unwrap_or_default();
        let files = files::Files::new(options.faults.clone());
        let index = Index::open(
            &path.join(layout::INDEX_DIR),
            &checkpoint.tables,
            files.clone(),
        )?;
        let (segments, scanned) = Segments::open_with(
            &path.join(layout::SEGMENTS_DIR),
            checkpoint.pos,
            options.segment_bytes,
            files.clone(),
        )?;
        let store = Self {
            index,
            runs: tree(layout::RUNS)?,
            snapshots: tree(layout::SNAPSHOTS)?,
            meta,
            segments,
            checkpointing: AtomicBool::new(false),
            options,
            files,
            replayed: scanned.len(),
            run_locks: RunLocks::default(),
            watchers: Watchers::default(),
            path,
            db,
        };
        // Rebuild what the index lacks from the records past the checkpoint.
        for record in scanned {
            store.index_record(record.body_at, &record.body)?;
        }
        Ok(store)
    }

    /// Index one record whose body starts at `body_at` (when written, and when read back on
    /// open), and apply a run ref to the `runs` tree.
    fn index_record(&self, body_at: Pos, body: &[u8]) -> Result<()> {
        let (record, offsets) = Record::decode(body).ok_or_else(|| Error::Corrupt {
            what: format!(
                "segment {} record at offset {} passes its check but does not decode",
                body_at.segment, body_at.offset
            ),
        })?;
        let size = (segments::HEADER + body.len()) as u64;
        let at = |i: usize| Pos {
            segment: body_at.segment,
            offset: body_at.offset + u64::from(offsets[i]),
        };
        match record {
            Record::Blob { id, len, value } => {
                let loc = Loc {
                    at: at(0),
                    len: u32::try_from(value.len()).expect("records are below 4 GiB"),
                    count: len,
                };
                self.index.add_blob(BlobId::from_bytes(id), loc, size);
            }
            Record::Events { run, first, chunks } => {
                let run = RunId::from_bytes(run);
                let mut seq = first;
                let mut entries = Vec::with_capacity(chunks.len());
                for (i, chunk) in chunks.iter().enumerate() {
                    let count = u32::try_from(layout::chunk_len(chunk)).unwrap_or(u32::MAX);
                    entries.push((
                        layout::log_key(&run, seq),
                        Loc {
                            at: at(i),
                            len: u32::try_from(chunk.len()).expect("records are below 4 GiB"),
                            count,
                        },
                    ));
                    seq = seq.saturating_add(u64::from(count)); // damage shows when the chunk is read
                }
                self.index.add_chunks(entries, size);
            }
            Record::CreateRun { run, value } => {
                self.runs
                    .compare_and_swap(run, None::<&[u8]>, Some(value))
                    .map_err(backend("create run"))?
                    .ok();
                self.index.add_bytes(size);
            }
            Record::PutRun { run, value } => {
                self.runs.insert(run, value).map_err(backend("write run"))?;
                self.index.add_bytes(size);
            }
        }
        Ok(())
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many durable group writes (fdatasyncs) the store has performed.
    pub fn syncs(&self) -> u64 {
        self.segments.syncs()
    }

    /// Records read back past the last checkpoint when the store opened: non-zero after a
    /// crash or kill (a clean close checkpoints).
    pub fn replayed_on_open(&self) -> usize {
        self.replayed
    }

    /// Bytes the store occupies on disk: segment files, index tables and the sled
    /// database.
    pub fn size_on_disk(&self) -> Result<u64> {
        let index = std::fs::read_dir(self.path.join(layout::INDEX_DIR))
            .map_err(|e| Error::backend("size_on_disk", e))?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
        Ok(self.db.size_on_disk().map_err(backend("size_on_disk"))?
            + self.segments.size_on_disk()
            + index)
    }

    /// Where blob `id` is stored in the segment files (for tools and tests that inspect
    /// the files themselves).
    pub fn locate_blob(&self, id: &BlobId) -> Result<Option<Loc>> {
        self.index.blob(id)
    }

    /// Where the bytes of the event at `seq` of `run`'s own log are stored, and their
    /// length.
    pub fn locate_event(&self, run: &RunId, seq: u64) -> Result<Option<(Pos, usize)>> {
        let Some((key, loc)) = self.index.chunk_at_or_before(run, seq)? else {
            return Ok(None);
        };
        // walk the chunk: count, then id | len | bytes per event
        let mut offset = 4u64;
        for event in self.read_chunk(run, &key, loc)? {
            offset += 32 + 4;
            if event.seq == seq {
                let at = Pos {
                    segment: loc.at.segment,
                    offset: loc.at.offset + offset,
                };
                return Ok(Some((at, event.bytes.len())));
            }
            offset += event.bytes.len() as u64;
        }
        Ok(None)
    }

    /// Write `record` as one segment record and index it; the durability ticket.
    fn write(&self, guard: &mut segments::WriteGuard<'_>, record: &Record<'_>) -> Result<u64> {
        let (body, _) = record.encode();
        let (body_at, ticket) = guard.append(&body)?;
        self.index_record(body_at, &body)?;
        Ok(ticket)
    }

    /// Move the in-memory index into sled if it has grown large (one checkpoint at a time;
    /// writers meanwhile wait on the writer lock, readers do not).
    fn maybe_checkpoint(&self) -> Result<()> {
        if self.index.tail_bytes() < self.options.checkpoint_bytes
            || self.checkpointing.swap(true, Ordering::AcqRel)
        {
            return Ok(());
        }
        let result = self
            .segments
            .writer()
            .and_then(|mut w| self.checkpoint(&mut w, false));
        self.checkpointing.store(false, Ordering::Release);
        result
    }

    /// Make the index in sled complete up to the end of the segments, durably. With
    /// `close`, also give back the segment's preallocated space.
    #[tracing::instrument(name = "store_checkpoint", level = "debug", skip_all)]
    fn checkpoint(&self, w: &mut segments::WriteGuard<'_>, close: bool) -> Result<()> {
        if close {
            w.sync_and_trim()?;
        } else {
            w.sync()?;
        }
        let prepared = self.index.prepare_checkpoint()?;
        let checkpoint = Checkpoint {
            pos: w.end(),
            tables: prepared.numbers(),
        };
        self.meta
            .insert(layout::CHECKPOINT_KEY, checkpoint.encode())
            .map_err(backend("checkpoint"))?;
        self.files
            .commit(&self.db)
            .map_err(|e| Error::backend("checkpoint", e))?;
        self.index.install(prepared);
        Ok(())
    }

    /// A stored chunk of `run` whose first event has seq `first`.
    fn read_chunk(&self, run: &RunId, key: &[u8; 24], loc: Loc) -> Result<Vec<StoredEvent>> {
        let first = layout::log_key_seq(key)?;
        self.segments.read_decoded(loc.at, loc.len, |bytes| {
            layout::decode_chunk(run, first, bytes)
        })
    }

    /// The run ref with its head, which is the last event of the run's last chunk (or the
    /// fork point, for a fork that has appended nothing yet).
    fn load_run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        let Some(bytes) = self.runs.get(id.as_bytes()).map_err(backend("read run"))? else {
            return Ok(None);
        };
        let mut info = layout::decode_run(id, &bytes)?;
        info.head = match self.index.chunk_at_or_before(id, u64::MAX)? {
            Some((key, loc)) => self.read_chunk(id, &key, loc)?.last().map(|e| Head {
                id: e.id,
                seq: e.seq,
            }),
            None => info.origin.map(|o| o.at),
        };
        Ok(Some(info))
    }

    /// The run ref held in a run's lock slot, loading it on first use.
    fn cached_run(&self, id: &RunId, cached: &mut Option<RunInfo>) -> Result<RunInfo> {
        if let Some(info) = cached {
            return Ok(info.clone());
        }
        let info = self.require_run(id)?;
        *cached = Some(info.clone());
        Ok(info)
    }

    /// Write a run ref record and wait for it to be durable.
    fn write_run(&self, record: &Record<'_>) -> Result<()> {
        let mut guard = self.segments.writer()?;
        let ticket = self.write(&mut guard, record)?;
        drop(guard);
        self.segments.wait_durable(ticket)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing: a checkpoint leaves nothing to scan on the next open, and the segment
        // without its preallocated tail. If it fails, the next open rescans instead.
        if let Ok(mut w) = self.segments.writer()
            && let Err(e) = self.checkpoint(&mut w, true)
        {
            // as a `dyn Error`, so the subscriber prints its sources (the system's message)
            tracing::warn!(
                error = &e as &(dyn std::error::Error + 'static),
                "closing checkpoint failed; the next open rescans"
            );
        }
    }
}

impl Store for SledStore {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        check_fork_origin(self, &new)?;
        let info = new.into_info();
        let slot = self.run_locks.get(&info.id);
        let mut cached = lock(&slot);
        let value = layout::encode_run(&info);
        let mut guard = self.segments.writer()?;
        // under the writer lock: no other create of this id can come between check and write
        if self
            .runs
            .contains_key(info.id.as_bytes())
            .map_err(backend("read run"))?
        {
            return Err(Error::RunExists { run: info.id });
        }
        let ticket = self.write(
            &mut guard,
            &Record::CreateRun {
                run: *info.id.as_bytes(),
                value: &value,
            },
        )?;
        drop(guard);
        self.segments.wait_durable(ticket)?;
        *cached = Some(info.clone());
        drop(cached);
        self.maybe_checkpoint()?;
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
        self.write_run(&Record::PutRun {
            run: *id.as_bytes(),
            value: &layout::encode_run(&info),
        })?;
        *cached = Some(info.clone());
        drop(cached);
        self.maybe_checkpoint()?;
        Ok(info)
    }

    #[tracing::instrument(name = "store_append", level = "debug", skip_all, fields(run = %run.short(), events = events.len()))]
    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        let slot = self.run_locks.get(run);
        let mut cached = lock(&slot);
        let mut info = self.cached_run(run, &mut cached)?;
        let (records, head) = prepare_append(&info, expected, events)?;

        // One record for the whole append (atomic), its events in chunks of CHUNK_EVENTS.
        let chunks: Vec<Vec<u8>> = records
            .chunks(layout::CHUNK_EVENTS)
            .map(|chunk| layout::encode_chunk(chunk.iter().map(|r| (&r.id, r.bytes.as_slice()))))
            .collect();
        let record = Record::Events {
            run: *run.as_bytes(),
            first: records[0].seq,
            chunks: chunks.iter().map(Vec::as_slice).collect(),
        };
        let mut guard = self.segments.writer()?;
        let ticket = self.write(&mut guard, &record)?;
        drop(guard);
        // Durable when this returns; then tell subscribers, still under the run lock so
        // they see appends in order.
        self.segments.wait_durable(ticket)?;
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
        drop(cached);
        self.maybe_checkpoint()?;
        Ok(head)
    }

    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        let (lo, hi) = (*seqs.start(), *seqs.end());
        if lo > hi {
            return Ok(Vec::new());
        }
        // Start at the chunk holding `lo`: the last chunk of this run starting at or before it.
        let start = self
            .index
            .chunk_at_or_before(run, lo)?
            .map_or(layout::log_key(run, lo), |(key, _)| key);
        let mut out = Vec::new();
        for (key, loc) in self.index.chunks(start, layout::log_key(run, hi))? {
            out.extend(
                self.read_chunk(run, &key, loc)?
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
        if self.index.blob(&id)?.is_some() {
            return Ok(id);
        }
        let value = layout::encode_blob_value(bytes);
        let mut guard = self.segments.writer()?;
        if self.index.in_tail(&id) {
            return Ok(id); // written meanwhile by another thread
        }
        // Not synced: durable with the next append or flush, as the trait says.
        self.write(
            &mut guard,
            &Record::Blob {
                id: *id.as_bytes(),
                len: u32::try_from(bytes.len())
                    .map_err(|_| Error::backend("write blob", "a blob of 4 GiB or more"))?,
                value: &value,
            },
        )?;
        drop(guard);
        self.maybe_checkpoint()?;
        Ok(id)
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        let Some(loc) = self.index.blob(id)? else {
            return Ok(None);
        };
        self.segments.read_decoded(loc.at, loc.len, |value| {
            layout::decode_blob_value(id, loc.count, value).map(Some)
        })
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        // A cache: into sled as is, durable at the next checkpoint.
        self.snapshots
            .insert(at.as_bytes(), bytes)
            .map_err(backend("write snapshot"))?;
        Ok(())
    }

    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        read_vec(&self.snapshots, at.as_bytes(), "read snapshot")
    }

    fn snapshot_ids(&self) -> Result<Vec<EventId>> {
        self.snapshots
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(backend("list snapshots"))?;
                EventId::from_slice(&key).ok_or_else(|| Error::Corrupt {
                    what: format!("a snapshot key of {} bytes is not an event id", key.len()),
                })
            })
            .collect()
    }

    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        self.require_run(run)?;
        Ok(self.watchers.subscribe(*run))
    }

    fn flush(&self) -> Result<()> {
        self.segments.flush()
    }

    fn stats(&self) -> Result<StoreStats> {
        let (events, log_entries, blobs, blob_bytes) = self.index.totals()?;
        Ok(StoreStats {
            runs: self.runs.len() as u64,
            events,
            log_entries,
            blobs,
            blob_bytes,
            snapshots: self.snapshots.len() as u64,
        })
    }
}
