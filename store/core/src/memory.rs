//! In-memory backend: the reference implementation of [`Store`], for tests and for tools that
//! need a scratch store. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use retrace_events::{BlobId, Event, EventId, Head, RunId};

use crate::chain::prepare_append;
use crate::error::{Error, Result};
use crate::run::{NewRun, RunInfo, StoreStats};
use crate::store::{Store, StoredEvent, check_fork_origin};
use crate::watch::{Appended, Subscription, Watchers};

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<RunId, RunInfo>,
    /// Each run's own events by seq.
    log: BTreeMap<(RunId, u64), StoredEvent>,
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
        let info = new.into_info();
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
                inner.log.insert(
                    (*run, record.seq),
                    StoredEvent {
                        seq: record.seq,
                        id: record.id,
                        bytes: record.bytes,
                    },
                );
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

    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        let (lo, hi) = (*seqs.start(), *seqs.end());
        if lo > hi {
            return Ok(Vec::new());
        }
        Ok(self
            .read()
            .log
            .range((*run, lo)..=(*run, hi))
            .map(|(_, stored)| stored.clone())
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

    fn snapshot_ids(&self) -> Result<Vec<EventId>> {
        Ok(self.read().snapshots.keys().copied().collect())
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
            events: inner.log.len() as u64,
            log_entries: inner.log.len() as u64,
            blobs: inner.blobs.len() as u64,
            blob_bytes: inner.blobs.values().map(|b| b.len() as u64).sum(),
            snapshots: inner.snapshots.len() as u64,
        })
    }
}

impl MemoryStore {
    /// Overwrite the stored bytes of `run`'s own event at `seq`, bypassing every check.
    /// Exists so tests can prove that verification catches tampering; never use it otherwise.
    #[doc(hidden)]
    pub fn tamper_event(&self, run: &RunId, seq: u64, bytes: Vec<u8>) {
        if let Some(stored) = self.write().log.get_mut(&(*run, seq)) {
            stored.bytes = bytes;
        }
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
    use retrace_events::Timestamp;

    #[test]
    fn undecodable_bytes_are_reported_as_corrupt_not_returned() {
        let store = MemoryStore::new();
        let run = RunId::from_bytes([1; 16]);
        store.create_run(NewRun::new(run, Timestamp(0))).unwrap();
        let events = crate::conformance::chain_after(run, None, 1);
        store.append(&run, None, &events).unwrap();
        store.tamper_event(&run, 0, b"x".to_vec());
        let err = store.events(&run, 0..=0).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("seq 0"), "{err}");
    }
}
