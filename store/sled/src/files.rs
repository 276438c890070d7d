//! The file operations of the store's own engine, through one seam where tests inject
//! faults.
//!
//! Every write, truncation, sync, file creation, removal and directory sync made by the
//! segment writer, the index-table writer and the checkpoint goes through [`Files`]; so does
//! the checkpoint's commit into sled (its record of the tables in use, made durable by
//! `sled::Db::flush`). A store opened with [`Options::faults`](crate::Options) numbers these
//! operations from 1 as they happen, and a [`Faults`] plan makes the N-th fail the way real
//! disks fail: `EIO`, `ENOSPC`, or a short write (half of the bytes written, then `ENOSPC`).
//! `ENOSPC` and short writes model a full disk: every later write-like operation fails too,
//! until the plan is [`lifted`](Faults::lift). `EIO` fails the one operation.
//!
//! A failed sync also loses what it was to make durable: the writes to that file since its
//! last successful sync are undone (their bytes put back as they were before them: zeros
//! for an append over preallocated space), as the disk holds them when the kernel dropped
//! the dirty pages (Linux marks them clean after a writeback error, so a later read may see
//! the old contents; see the PostgreSQL "fsyncgate" discussion, 2018). A store that
//! acknowledged a write after a failed sync is caught losing it.
//!
//! What is not behind the seam: reads (a failed read fails the call and changes nothing),
//! `create_dir_all` on open, and sled's own files (sled is tested by its authors; the seam
//! covers the one moment retrace depends on it, the commit). The store renames nothing.
//!
//! Without a plan (every store outside tests) each call is the plain `std::fs` call.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A kind of file operation the seam counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Creating a file (a new segment or index table).
    Create,
    /// Writing bytes (`pwrite`: records, zero-fill, table contents).
    Write,
    /// Truncating a file (`ftruncate`: a closed or recovered segment).
    Truncate,
    /// Syncing a file (`fsync` or `fdatasync`).
    Sync,
    /// Syncing a directory (after a file was created in it).
    SyncDir,
    /// Removing a file (a merged index table, an empty segment after a crash).
    Remove,
    /// The checkpoint's commit into sled (`flush`).
    Commit,
}

impl Op {
    /// Whether the operation can need space (and so fails on a full disk).
    pub fn allocates(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Write | Self::Truncate | Self::Commit
        )
    }
}

/// How an injected fault fails its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `EIO` on this operation only.
    Eio,
    /// `ENOSPC` on this operation and on every later one that allocates, until lifted.
    Enospc,
    /// A write stores the first half of its bytes and fails with `ENOSPC`; later
    /// operations as for [`Fault::Enospc`]. On an operation that is not a write, `ENOSPC`.
    ShortWrite,
}

/// One operation that passed the seam: what it was and where in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The operation.
    pub op: Op,
    /// The engine step making it (e.g. `"segment record"`).
    pub site: &'static str,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.op, self.site)
    }
}

/// A fault plan: counts operations and fails the N-th (none, when only counting).
#[derive(Debug, Default)]
pub struct Faults {
    /// Operations seen so far.
    seen: AtomicU64,
    /// Fail operation `.0` (1-based) with `.1`.
    at: Option<(u64, Fault)>,
    /// A full disk: allocating operations fail until lifted.
    full: AtomicBool,
    lifted: AtomicBool,
    points: Mutex<Vec<Point>>,
    tripped: Mutex<Option<Point>>,
    /// Per file (device, inode): writes since its last successful sync.
    unsynced: Mutex<Unsynced>,
}

/// Writes since the last sync, by file `(device, inode)`, in order: each one's offset and
/// the bytes it overwrote.
type Unsynced = HashMap<(u64, u64), Vec<(u64, Vec<u8>)>>;

impl Faults {
    /// A plan that only counts and records the operations.
    pub fn counting() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A plan that fails operation `n` (counted from 1) with `fault`.
    pub fn fail_at(n: u64, fault: Fault) -> Arc<Self> {
        Arc::new(Self {
            at: Some((n, fault)),
            ..Self::default()
        })
    }

    /// Stop failing: later operations succeed (the disk was freed or replaced).
    pub fn lift(&self) {
        self.lifted.store(true, Ordering::SeqCst);
    }

    /// Operations seen so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Every operation seen, in order.
    pub fn points(&self) -> Vec<Point> {
        self.points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The operation the plan failed, once it has.
    pub fn tripped(&self) -> Option<Point> {
        self.tripped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Count `point`; the fault to inject there, if any.
    fn pass(&self, point: Point) -> Option<Fault> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        self.points
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(point.clone());
        if self.lifted.load(Ordering::SeqCst) {
            return None;
        }
        if self.full.load(Ordering::SeqCst) && point.op.allocates() {
            return Some(Fault::Enospc);
        }
        let (at, fault) = self.at?;
        if n != at {
            return None;
        }
        if fault != Fault::Eio {
            self.full.store(true, Ordering::SeqCst);
        }
        *self.tripped.lock().unwrap_or_else(PoisonError::into_inner) = Some(point);
        Some(fault)
    }
}

/// A file's identity, for [`Faults::unsynced`].
fn identity(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

impl Faults {
    /// Write `buf` at `offset`, remembering the bytes it overwrites (zeros past the end).
    fn write(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let key = identity(file)?;
        let mut before = vec![0u8; buf.len()];
        let mut read = 0;
        while read < before.len() {
            match file.read_at(&mut before[read..], offset + read as u64)? {
                0 => break,
                n => read += n,
            }
        }
        file.write_all_at(buf, offset)?;
        self.unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push((offset, before));
        Ok(())
    }

    /// The file's writes since its last sync, taken as a sync starts: what it covers (a
    /// write made while it runs is left for the next).
    fn syncing(&self, file: &File) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let key = identity(file)?;
        Ok(self
            .unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .unwrap_or_default())
    }

    /// The writes a sync covered (from [`Self::syncing`]): kept (`lose == false`, the sync
    /// succeeded) or undone, last first (it failed).
    fn synced(file: &File, writes: Vec<(u64, Vec<u8>)>, lose: bool) -> io::Result<()> {
        if lose {
            let size = file.metadata()?.len();
            for (offset, before) in writes.into_iter().rev() {
                let end = (offset + before.len() as u64).min(size);
                if end > offset {
                    let keep = usize::try_from(end - offset).unwrap_or(0);
                    file.write_all_at(&before[..keep], offset)?;
                }
            }
        }
        Ok(())
    }
}

fn error(fault: Fault) -> io::Error {
    match fault {
        Fault::Eio => io::Error::from_raw_os_error(5),
        Fault::Enospc | Fault::ShortWrite => io::Error::from_raw_os_error(28),
    }
}

/// The seam: plain file calls, or calls counted and failed by a [`Faults`] plan.
#[derive(Debug, Clone, Default)]
pub struct Files(Option<Arc<Faults>>);

impl Files {
    /// File calls under `faults` (plain calls for `None`).
    pub fn new(faults: Option<Arc<Faults>>) -> Self {
        Self(faults)
    }

    fn fault(&self, op: Op, site: &'static str) -> Option<Fault> {
        self.0.as_ref()?.pass(Point { op, site })
    }

    fn check(&self, op: Op, site: &'static str) -> io::Result<()> {
        self.fault(op, site).map_or(Ok(()), |f| Err(error(f)))
    }

    /// `pwrite` all of `buf` at `offset`.
    pub fn write_all_at(
        &self,
        file: &File,
        buf: &[u8],
        offset: u64,
        site: &'static str,
    ) -> io::Result<()> {
        let Some(faults) = &self.0 else {
            return file.write_all_at(buf, offset);
        };
        let written = match self.fault(Op::Write, site) {
            None => buf.len(),
            Some(Fault::ShortWrite) => buf.len() / 2,
            Some(fault) => return Err(error(fault)),
        };
        faults.write(file, &buf[..written], offset)?;
        if written < buf.len() {
            return Err(error(Fault::ShortWrite));
        }
        Ok(())
    }

    /// `fdatasync` (`all == false`) or `fsync`.
    fn sync(&self, file: &File, all: bool, site: &'static str) -> io::Result<()> {
        let covered = match &self.0 {
            Some(faults) => faults.syncing(file)?,
            None => Vec::new(),
        };
        let result = self.check(Op::Sync, site).and_then(|()| {
            if all {
                file.sync_all()
            } else {
                file.sync_data()
            }
        });
        if self.0.is_some() {
            Faults::synced(file, covered, result.is_err())?;
        }
        result
    }

    /// `fdatasync`.
    pub fn sync_data(&self, file: &File, site: &'static str) -> io::Result<()> {
        self.sync(file, false, site)
    }

    /// `fsync`.
    pub fn sync_all(&self, file: &File, site: &'static str) -> io::Result<()> {
        self.sync(file, true, site)
    }

    /// `ftruncate` to `len` bytes.
    pub fn set_len(&self, file: &File, len: u64, site: &'static str) -> io::Result<()> {
        self.check(Op::Truncate, site)?;
        file.set_len(len)
    }

    /// Create `path` for reading and writing; with `new`, fail if it exists, otherwise
    /// truncate it.
    pub fn create(&self, path: &Path, new: bool, site: &'static str) -> io::Result<File> {
        self.check(Op::Create, site)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if new {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        options.open(path)
    }

    /// `fsync` the directory `dir` (making the files created in it durable).
    pub fn sync_dir(&self, dir: &Path, site: &'static str) -> io::Result<()> {
        self.check(Op::SyncDir, site)?;
        File::open(dir).and_then(|d| d.sync_all())
    }

    /// Remove the file `path`.
    pub fn remove_file(&self, path: &Path, site: &'static str) -> io::Result<()> {
        self.check(Op::Remove, site)?;
        std::fs::remove_file(path)
    }

    /// Make sled's writes so far durable (the checkpoint's commit).
    pub fn commit(&self, db: &sled::Db) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.check(Op::Commit, "checkpoint commit")?;
        db.flush()?;
        Ok(())
    }

    /// A buffered writer of `file` from offset 0 whose writes pass the seam.
    pub fn writer(&self, file: File, site: &'static str) -> io::BufWriter<SeamWriter> {
        io::BufWriter::with_capacity(
            1 << 20,
            SeamWriter {
                files: self.clone(),
                file,
                offset: 0,
                site,
            },
        )
    }
}

/// A file written from the start, each write through the seam.
#[derive(Debug)]
pub struct SeamWriter {
    files: Files,
    file: File,
    offset: u64,
    site: &'static str,
}

impl SeamWriter {
    /// The file written.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl io::Write for SeamWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.files
            .write_all_at(&self.file, buf, self.offset, self.site)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
