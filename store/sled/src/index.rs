//! The index from blob ids and `(run, first seq)` to [`Loc`]s in the segment files.
//!
//! Entries for records written since the last checkpoint are held in memory (the *tail*);
//! a checkpoint writes them as a new [index table](crate::tables), merges tables so that
//! each is at least twice the size of the next newer one (so there are O(log n) of them),
//! and the store records the table list with the segment position it covers. Opening
//! rebuilds the tail by scanning the segments from that position, so the tail is never
//! lost.
//!
//! Readers look in the tail first, then in the tables, newest first: a checkpoint installs
//! its tables before it empties the tail, under the tail's lock, so an entry is always in
//! at least one of the places a reader looks when it looks there.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use retrace_events::{BlobId, RunId};
use retrace_store::{Error, Result};

use crate::files::Files;
use crate::layout::{self, Loc};
use crate::tables::{self, Kind, Table};

/// In-memory entries since the last checkpoint.
#[derive(Debug, Default)]
struct Tail {
    blobs: HashMap<BlobId, Loc>,
    log: BTreeMap<[u8; 24], Loc>,
    /// Segment bytes written since the checkpoint.
    bytes: u64,
}

type Tables = Arc<Vec<Arc<Table>>>;

/// Blob and log index: the tail in memory, the rest in tables.
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    tail: Mutex<Tail>,
    /// Newest first.
    tables: RwLock<Tables>,
    files: Files,
}

/// Tables written by a checkpoint, not yet in use: the store records
/// [`Self::numbers`] durably, then [`Index::install`]s them.
#[derive(Debug)]
pub struct Prepared {
    tables: Vec<Arc<Table>>,
    retired: Vec<Arc<Table>>,
}

impl Prepared {
    /// The table numbers to record, newest first.
    pub fn numbers(&self) -> Vec<u32> {
        self.tables.iter().map(|t| t.number).collect()
    }
}

fn loc_of_key(key: &[u8]) -> Result<[u8; 24]> {
    key.try_into().map_err(|_| Error::Corrupt {
        what: format!("log index key of {} bytes", key.len()),
    })
}

impl Index {
    /// Open the index tables `numbers` (newest first) in `dir`, with an empty tail, writing
    /// through `files`; any other table there is left over from an interrupted checkpoint
    /// and is removed.
    pub fn open(dir: &Path, numbers: &[u32], files: Files) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::backend("create index directory", format!("{}: {e}", dir.display()))
        })?;
        for stale in tables::list(dir)? {
            if !numbers.contains(&stale) {
                let path = tables::table_path(dir, stale);
                files
                    .remove_file(&path, "recovery: unrecorded table")
                    .map_err(|e| {
                        Error::backend("remove index table", format!("{}: {e}", path.display()))
                    })?;
            }
        }
        let tables = numbers
            .iter()
            .map(|&n| Table::open(dir, n).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tail: Mutex::new(Tail::default()),
            tables: RwLock::new(Arc::new(tables)),
            files,
        })
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tables(&self) -> Tables {
        Arc::clone(&self.tables.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Where blob `id` is stored.
    pub fn blob(&self, id: &BlobId) -> Result<Option<Loc>> {
        if let Some(loc) = self.tail().blobs.get(id) {
            return Ok(Some(*loc));
        }
        for table in self.tables().iter() {
            if let Some(loc) = table.get(Kind::Blobs, id.as_bytes())? {
                return Ok(Some(loc));
            }
        }
        Ok(None)
    }

    /// Whether blob `id` was written since the last checkpoint.
    pub fn in_tail(&self, id: &BlobId) -> bool {
        self.tail().blobs.contains_key(id)
    }

    /// Record a blob written at `loc`, in a record of `bytes` bytes.
    pub fn add_blob(&self, id: BlobId, loc: Loc, bytes: u64) {
        let mut tail = self.tail();
        tail.blobs.insert(id, loc);
        tail.bytes += bytes;
    }

    /// Record the chunks of an append, `(log key, loc)`, in a record of `bytes` bytes.
    pub fn add_chunks(&self, chunks: impl IntoIterator<Item = ([u8; 24], Loc)>, bytes: u64) {
        let mut tail = self.tail();
        tail.log.extend(chunks);
        tail.bytes += bytes;
    }

    /// Count `bytes` of a record that adds no entries (a run ref) towards the checkpoint.
    pub fn add_bytes(&self, bytes: u64) {
        self.tail().bytes += bytes;
    }

    /// Segment bytes written since the last checkpoint.
    pub fn tail_bytes(&self) -> u64 {
        self.tail().bytes
    }

    /// The chunks with keys in `from..=to`, in order.
    pub fn chunks(&self, from: [u8; 24], to: [u8; 24]) -> Result<Vec<([u8; 24], Loc)>> {
        let mut out: BTreeMap<[u8; 24], Loc> = self
            .tail()
            .log
            .range(from..=to)
            .map(|(k, v)| (*k, *v))
            .collect();
        for table in self.tables().iter() {
            for (key, loc) in table.range(Kind::Log, &from, &to)? {
                out.entry(loc_of_key(&key)?).or_insert(loc);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The last chunk of `run` starting at or before `seq`.
    pub fn chunk_at_or_before(&self, run: &RunId, seq: u64) -> Result<Option<([u8; 24], Loc)>> {
        let (from, to) = (layout::log_key(run, 0), layout::log_key(run, seq));
        let mut best = self
            .tail()
            .log
            .range(from..=to)
            .next_back()
            .map(|(k, v)| (*k, *v));
        for table in self.tables().iter() {
            if let Some((key, loc)) = table.last_at_or_below(Kind::Log, &to)? {
                let key = loc_of_key(&key)?;
                if key >= from && best.is_none_or(|(b, _)| key > b) {
                    best = Some((key, loc));
                }
            }
        }
        Ok(best)
    }

    /// Write the tail as a table and merge (the caller holds the writer lock and has
    /// synced the segments), numbering new tables from `next`.
    pub fn prepare_checkpoint(&self) -> Result<Prepared> {
        let (blobs, log) = {
            let tail = self.tail();
            let mut blobs: Vec<([u8; 32], Loc)> = tail
                .blobs
                .iter()
                .map(|(k, v)| (*k.as_bytes(), *v))
                .collect();
            blobs.sort_unstable_by_key(|(k, _)| *k);
            let log: Vec<([u8; 24], Loc)> = tail.log.iter().map(|(k, v)| (*k, *v)).collect();
            (blobs, log)
        };
        let mut tables: Vec<Arc<Table>> = self.tables().iter().cloned().collect();
        let mut next = tables::list(&self.dir)?.last().map_or(0, |n| n + 1);
        let mut retired = Vec::new();
        if !blobs.is_empty() || !log.is_empty() {
            tables.insert(
                0,
                Arc::new(Table::write(&self.files, &self.dir, next, &blobs, &log)?),
            );
            next += 1;
        }
        // keep each table at least twice the size of the next newer one
        while tables.len() >= 2 && tables[0].len() * 2 >= tables[1].len() {
            let (newer, older) = (tables.remove(0), tables.remove(0));
            tables.insert(
                0,
                Arc::new(Table::merge(
                    &self.files,
                    &self.dir,
                    next,
                    &[&newer, &older],
                )?),
            );
            next += 1;
            for table in [newer, older] {
                retired.push(table);
            }
        }
        Ok(Prepared { tables, retired })
    }

    /// Start using a checkpoint's tables (once recorded) and forget the tail they hold.
    pub fn install(&self, prepared: Prepared) {
        {
            let mut tail = self.tail();
            *self.tables.write().unwrap_or_else(PoisonError::into_inner) =
                Arc::new(prepared.tables);
            *tail = Tail::default();
        }
        for table in prepared.retired {
            // a table merged by this very checkpoint was never recorded; either way it is
            // unused now, and a leftover file is removed at the next open
            if let Err(e) = table.remove(&self.files) {
                tracing::warn!(
                    error = &e as &(dyn std::error::Error + 'static),
                    "could not remove a merged index table"
                );
            }
        }
    }

    /// Every chunk and blob entry: `(events, chunks, blobs, blob bytes)`.
    pub fn totals(&self) -> Result<(u64, u64, u64, u64)> {
        let (mut blobs, mut log): (HashMap<[u8; 32], Loc>, HashMap<[u8; 24], Loc>) = {
            let tail = self.tail();
            (
                tail.blobs
                    .iter()
                    .map(|(k, v)| (*k.as_bytes(), *v))
                    .collect(),
                tail.log.iter().map(|(k, v)| (*k, *v)).collect(),
            )
        };
        for table in self.tables().iter() {
            for (key, loc) in table.all(Kind::Blobs)? {
                if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                    blobs.entry(key).or_insert(loc);
                }
            }
            for (key, loc) in table.all(Kind::Log)? {
                log.entry(loc_of_key(&key)?).or_insert(loc);
            }
        }
        Ok((
            log.values().map(|l| u64::from(l.count)).sum(),
            log.len() as u64,
            blobs.len() as u64,
            blobs.values().map(|l| u64::from(l.count)).sum(),
        ))
    }
}
