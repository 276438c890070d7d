//! In-memory backend: the reference implementation of [`Store`], for tests and for tools that
//! need a scratch store. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use retrace_events::{BlobId, Event, EventId, Head, RunId};

use crate::chain::prepare_append;
use crate::error::{Error, Result};
use crate::run::{NewRun, RunInfo, StoreStats};
use crate::store::{Store, check_fork_origin};
use crate::watch::{Appended, Subscription, Watchers};

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<RunId, RunInfo>,
    index: BTreeMap<(RunId, u64), EventId>,
    events: BTreeMap<EventId, Vec<u8>>,
    blobs: BTreeMap<BlobId, Vec<u8>>,
    snapshots: BTreeMap<EventId, Vec<u8>>,
}

/// A [`Store`] held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    watchers: Watchers,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        check_fork_origin(self, &new)?;
        let mut inner = self.write();
        if inner.runs.contains_key(&new.id) {
            return Err(Error::RunExists { run: new.id });
        }
        let info = RunInfo {
            id: new.id,
            head: new.origin.map(|o| o.at),
            origin: new.origin,
            created_at: new.created_at,
            meta: new.meta,
        };
        inner.runs.insert(info.id, info.clone());
        Ok(info)
    }

    fn run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        Ok(self.read().runs.get(id).cloned())
    }

    fn runs(&self) -> Result<Vec<RunInfo>> {
        Ok(self.read().runs.values().cloned().collect())
    }

    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo> {
        let mut inner = self.write();
        let info = inner
            .runs
            .get_mut(id)
            .ok_or(Error::RunNotFound { run: *id })?;
        match value {
            Some(v) => info.meta.insert(key.to_owned(), v.to_owned()),
            None => info.meta.remove(key),
        };
        Ok(info.clone())
    }

    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        let head = {
            let mut inner = self.write();
            let info = inner
                .runs
                .get(run)
                .ok_or(Error::RunNotFound { run: *run })?;
            let (records, head) = prepare_append(info, expected, events)?;
            for record in records {
                inner.index.insert((*run, record.seq), record.id);
                inner.events.entry(record.id).or_insert(record.bytes);
            }
            if let Some(info) = inner.runs.get_mut(run) {
                info.head = Some(head);
            }
            head
        };
        self.watchers.publish(Appended {
            run: *run,
            events: events.iter().map(|e| (e.id(), e.clone())).collect(),
        });
        Ok(head)
    }

    fn event_bytes(&self, id: &EventId) -> Result<Option<Vec<u8>>> {
        Ok(self.read().events.get(id).cloned())
    }

    fn own_event_ids(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<(u64, EventId)>> {
        let (lo, hi) = (*seqs.start(), *seqs.end());
        Ok(self
            .read()
            .index
            .range((*run, lo)..=(*run, hi))
            .map(|(&(_, seq), &id)| (seq, id))
            .collect())
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        let id = BlobId::of(bytes);
        self.write()
            .blobs
            .entry(id)
            .or_insert_with(|| bytes.to_vec());
        Ok(id)
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        Ok(self.read().blobs.get(id).cloned())
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        self.write().snapshots.insert(*at, bytes.to_vec());
        Ok(())
    }

    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        Ok(self.read().snapshots.get(at).cloned())
    }

    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        self.require_run(run)?;
        Ok(self.watchers.subscribe(*run))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats> {
        let inner = self.read();
        Ok(StoreStats {
            runs: inner.runs.len() as u64,
            events: inner.events.len() as u64,
            index_entries: inner.index.len() as u64,
            blobs: inner.blobs.len() as u64,
            blob_bytes: inner.blobs.values().map(|b| b.len() as u64).sum(),
            snapshots: inner.snapshots.len() as u64,
        })
    }
}

impl MemoryStore {
    /// Overwrite stored bytes of an event, bypassing every check. Exists so tests can prove
    /// that verification catches tampering; never use it otherwise.
    #[doc(hidden)]
    pub fn tamper_event(&self, id: &EventId, bytes: Vec<u8>) {
        self.write().events.insert(*id, bytes);
    }

    /// Overwrite stored bytes of a blob, bypassing every check (tests only, like
    /// [`Self::tamper_event`]).
    #[doc(hidden)]
    pub fn tamper_blob(&self, id: &BlobId, bytes: Vec<u8>) {
        self.write().blobs.insert(*id, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_events::decode_event;

    #[test]
    fn decode_helper_is_used_for_reads() {
        // The provided `event` decodes through the canonical codec.
        let store = MemoryStore::new();
        let id = EventId::of_canonical(b"x");
        store.tamper_event(&id, b"x".to_vec());
        assert!(matches!(store.event(&id), Err(Error::Corrupt { .. })));
        assert!(decode_event(b"x").is_err());
    }
}
