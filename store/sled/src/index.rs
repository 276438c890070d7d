//! The index from blob ids and `(run, seq)` to [`Loc`]s in the segment files.
//!
//! Entries for records written since the last checkpoint are held in memory (the *tail*);
//! a checkpoint moves them into sled's `blobs` and `log` trees in one batch and records in
//! `meta` the segment position up to which those trees are complete. Opening rebuilds the
//! tail by scanning the segments from that position, so the tail is never lost.
//!
//! Readers look in the tail first, then in sled: a checkpoint inserts into sled before it
//! empties the tail, so an entry is always in at least one of the places a reader looks
//! when it looks there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use retrace_events::{BlobId, RunId};
use retrace_store::{Error, Result};
use sled::Tree;

use crate::layout::{self, Loc};

/// In-memory entries since the last checkpoint.
#[derive(Debug, Default)]
struct Tail {
    blobs: HashMap<BlobId, Loc>,
    log: BTreeMap<[u8; 24], Loc>,
    /// Segment bytes written since the checkpoint.
    bytes: u64,
}

/// Blob and log index: tail in memory, the rest in sled.
#[derive(Debug)]
pub struct Index {
    tail: Mutex<Tail>,
    blobs: Tree,
    log: Tree,
}

fn backend(op: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| Error::backend(op, e)
}

impl Index {
    /// The index over sled's `blobs` and `log` trees, with an empty tail.
    pub fn new(blobs: Tree, log: Tree) -> Self {
        Self {
            tail: Mutex::new(Tail::default()),
            blobs,
            log,
        }
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where blob `id` is stored.
    pub fn blob(&self, id: &BlobId) -> Result<Option<Loc>> {
        if let Some(loc) = self.tail().blobs.get(id) {
            return Ok(Some(*loc));
        }
        self.blobs
            .get(id.as_bytes())
            .map_err(backend("read blob index"))?
            .map(|v| Loc::decode(&v, || format!("blob {id}")))
            .transpose()
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

    /// The chunks of `run` with keys in `from..=to`, in order.
    pub fn chunks(&self, from: [u8; 24], to: [u8; 24]) -> Result<Vec<([u8; 24], Loc)>> {
        let mut out: BTreeMap<[u8; 24], Loc> = self
            .tail()
            .log
            .range(from..=to)
            .map(|(k, v)| (*k, *v))
            .collect();
        for entry in self.log.range(from..=to) {
            let (key, value) = entry.map_err(backend("read log index"))?;
            let key: [u8; 24] = key.as_ref().try_into().map_err(|_| Error::Corrupt {
                what: format!("log index key of {} bytes", key.len()),
            })?;
            out.entry(key)
                .or_insert(Loc::decode(&value, || log_entry_name(&key))?);
        }
        Ok(out.into_iter().collect())
    }

    /// The last chunk of `run` starting at or before `seq`.
    pub fn chunk_at_or_before(&self, run: &RunId, seq: u64) -> Result<Option<([u8; 24], Loc)>> {
        let (from, to) = (layout::log_key(run, 0), layout::log_key(run, seq));
        let in_tail = self
            .tail()
            .log
            .range(from..=to)
            .next_back()
            .map(|(k, v)| (*k, *v));
        let in_sled = self
            .log
            .range(from..=to)
            .next_back()
            .transpose()
            .map_err(backend("read log index"))?;
        let in_sled = match in_sled {
            Some((key, value)) => {
                let key: [u8; 24] = key.as_ref().try_into().map_err(|_| Error::Corrupt {
                    what: format!("log index key of {} bytes", key.len()),
                })?;
                Some((key, Loc::decode(&value, || log_entry_name(&key))?))
            }
            None => None,
        };
        Ok(match (in_tail, in_sled) {
            (Some(t), Some(s)) => Some(if t.0 >= s.0 { t } else { s }),
            (t, s) => t.or(s),
        })
    }

    /// Move the tail into sled (the caller holds the writer lock, has synced the segments,
    /// and flushes sled afterwards with the new checkpoint position).
    pub fn save_tail(&self) -> Result<()> {
        let (blobs, log) = {
            let tail = self.tail();
            (
                tail.blobs.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
                tail.log.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            )
        };
        let mut batch = sled::Batch::default();
        for (id, loc) in blobs {
            batch.insert(id.as_bytes(), &loc.encode()[..]);
        }
        self.blobs
            .apply_batch(batch)
            .map_err(backend("checkpoint blob index"))?;
        let mut batch = sled::Batch::default();
        for (key, loc) in log {
            batch.insert(&key[..], &loc.encode()[..]);
        }
        self.log
            .apply_batch(batch)
            .map_err(backend("checkpoint log index"))
    }

    /// Forget the tail, once [`Self::save_tail`] is flushed.
    pub fn clear_tail(&self) {
        *self.tail() = Tail::default();
    }

    /// Every chunk and blob entry: `(events, chunks, blobs, blob bytes)`.
    pub fn totals(&self) -> Result<(u64, u64, u64, u64)> {
        let (mut events, mut chunks, mut blobs, mut blob_bytes) = (0, 0, 0, 0);
        let (tail_blobs, tail_log) = {
            let tail = self.tail();
            (tail.blobs.clone(), tail.log.clone())
        };
        for entry in &self.log {
            let (key, value) = entry.map_err(backend("stats"))?;
            let loc = Loc::decode(&value, || "a log chunk".to_owned())?;
            if <[u8; 24]>::try_from(key.as_ref()).is_ok_and(|k| tail_log.contains_key(&k)) {
                continue; // also in the tail, counted below
            }
            events += u64::from(loc.count);
            chunks += 1;
        }
        for entry in &self.blobs {
            let (key, value) = entry.map_err(backend("stats"))?;
            let loc = Loc::decode(&value, || "a blob".to_owned())?;
            if BlobId::from_slice(&key).is_some_and(|id| tail_blobs.contains_key(&id)) {
                continue;
            }
            blobs += 1;
            blob_bytes += u64::from(loc.count);
        }
        for loc in tail_log.values() {
            events += u64::from(loc.count);
            chunks += 1;
        }
        for loc in tail_blobs.values() {
            blobs += 1;
            blob_bytes += u64::from(loc.count);
        }
        Ok((events, chunks, blobs, blob_bytes))
    }
}

fn log_entry_name(key: &[u8; 24]) -> String {
    let run = RunId::from_slice(&key[..16]).map_or_else(|| "?".to_owned(), |r| r.to_string());
    let seq = u64::from_be_bytes(key[16..].try_into().expect("8 bytes"));
    format!("run {run} chunk at seq {seq}")
}
