//! Segment files: where every blob, event and run ref of the store is written, once, in
//! order — and what makes an acknowledged write durable.
//!
//! A segment `segments/NNNNNNNN.seg` holds records `len: u32 LE | check | body`, where
//! `check` is the first 8 bytes of BLAKE3(segment number | body) and `body` a
//! [`Record`](crate::layout::Record). Writers append under one lock (a `pwrite`, no sync);
//! [`Segments::wait_durable`] then makes everything written so far durable with one
//! `fdatasync`, shared by every writer waiting meanwhile (group commit: the first waiter
//! syncs for all). A segment grows to [`SEGMENT_LIMIT`], then is truncated to its records,
//! synced, and never written again.
//!
//! The file is kept longer than its records, zero-filled ahead of them: an `fdatasync` that
//! does not change the file's size need not write its metadata, which makes each durable
//! write markedly cheaper (measured here: 0.16–0.27 ms instead of 0.30–0.40 ms for 1 KiB).
//!
//! Opening scans from the last checkpoint to the first record that is short, zero or fails
//! its check — a crash can tear only writes that were never acknowledged, since every
//! acknowledgement follows a sync of everything before it — and truncates the file there,
//! so nothing after a torn write can ever be read back as a record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use retrace_store::{Error, Result};

use crate::files::Files;
use crate::layout::Pos;

/// A segment is closed once it holds this much (a single larger record gets one to itself).
pub const SEGMENT_LIMIT: u64 = 256 << 20;

/// Record header: length and check.
pub const HEADER: usize = 4 + 8;

/// Zero-filled space added ahead of the records at a time.
const GROW: u64 = 2 << 20;

fn check(segment: u32, body: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&segment.to_le_bytes());
    hasher.update(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |e| Error::backend(op, format!("{path}: {e}"))
}

/// The file of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// A record read back when opening: where its body starts, and the body.
#[derive(Debug)]
pub struct Scanned {
    /// Position of the body's first byte.
    pub body_at: Pos,
    /// The record body.
    pub body: Vec<u8>,
}

/// The segment being written.
#[derive(Debug)]
struct Writer {
    segment: u32,
    file: Arc<File>,
    /// End of the records (where the next one goes).
    end: u64,
    /// File size; zeros past `end`.
    capacity: u64,
    /// Bytes written since opening, over all segments: what a durability ticket counts.
    written: u64,
    /// Set when a write or sync failed: later writes could sit on a torn log, so none are
    /// accepted until the store is reopened (which rescans and truncates).
    failed: Option<String>,
}

/// Durability so far.
#[derive(Debug, Default)]
struct Synced {
    /// Every byte below this ticket is durable.
    upto: u64,
    /// A writer is syncing for everyone.
    syncing: bool,
}

/// The open segment files.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    writer: Mutex<Writer>,
    synced: Mutex<Synced>,
    synced_changed: Condvar,
    /// Every sync of a segment runs holding this, one at a time, and records a failure in
    /// `sync_failed` before letting the next start. Linux reports a writeback error to one
    /// `fsync` of an open file only, so a sync that succeeds after another failed proves
    /// nothing for the pages that one lost: none may run between a failure and its
    /// recording, and none succeeds after it.
    sync_serial: Mutex<()>,
    /// The first failed sync; read without waiting for a sync in progress, so appends go on
    /// while a group commit syncs.
    sync_failed: OnceLock<String>,
    /// Read handles by segment number, opened on first use.
    files: RwLock<BTreeMap<u32, Arc<File>>>,
    syncs: AtomicU64,
    /// Size at which a segment is closed.
    limit: u64,
    /// The file seam writes and syncs go through.
    seam: Files,
}

/// The writer lock: records appended through it go one after another.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    segments: &'a Segments,
    writer: MutexGuard<'a, Writer>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stopped(why: &str) -> Error {
    Error::backend(
        "write",
        format!("an earlier write to the store failed ({why}); reopen the store to recover"),
    )
}

/// Scan `bytes` (segment `segment` from offset `from`) for valid records, pushing them to
/// `out`; how many bytes of `bytes` they take (where the records end: the first record that
/// is short, of length zero, or fails its check ends the scan).
pub fn scan(segment: u32, bytes: &[u8], from: u64, out: &mut Vec<Scanned>) -> usize {
    let mut good = 0usize;
    while let Some(size) = record_at(segment, &bytes[good..]) {
        out.push(Scanned {
            body_at: Pos {
                segment,
                offset: from + (good + HEADER) as u64,
            },
            body: bytes[good + HEADER..good + size].to_vec(),
        });
        good += size;
    }
    good
}

/// The size (header included) of the valid record of segment `segment` at the start of
/// `bytes`, if one starts there: its length is not zero, it is whole, and it passes its check.
fn record_at(segment: u32, bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let body = bytes.get(HEADER..HEADER + len)?;
    (len > 0 && header[4..] == check(segment, body)).then_some(HEADER + len)
}

/// Where a killed write can stop: Linux copies a buffered write into the page cache a page
/// (or a naturally aligned folio, a multiple of one) at a time and checks for a fatal signal
/// between them, so a write a kill cut short ends at a multiple of this in the file.
const PAGE: u64 = 4096;

/// Why bytes recovery cut cannot be a torn last write.
///
/// A process killed mid-write leaves a prefix of its record ending at a page boundary
/// ([`PAGE`]), the zeros written ahead after it (the segment's space is zero-filled ahead
/// of the records), and nothing written after it (one writer, one record per write). So a
/// torn record has a page boundary at or after its last non-zero byte and before the end its
/// header states. Anything else is damage: of a record once whole, or of its length. (A
/// power loss may persist a later sector without an earlier one, so after one,
/// unacknowledged records can look damaged too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The record's bytes reach its last page, to or near the end its header states, yet
    /// fail its check.
    WholeButFailsCheck {
        /// Its size, header included.
        size: u64,
        /// Bytes from its start to its last non-zero one.
        through: u64,
    },
    /// Non-zero bytes follow the end the record's header states.
    BytesAfter {
        /// That end, from the start of the record.
        end: u64,
        /// Bytes from the start of the record to the last non-zero one.
        through: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::WholeButFailsCheck { size, through } => write!(
                f,
                "its bytes reach byte {through} of the {size} its header states, past the last \
                 page boundary in it, yet fail its check (a killed write stops at a page \
                 boundary)"
            ),
            Self::BytesAfter { end, through } => write!(
                f,
                "bytes follow the {end} its header states ({through} bytes, to the last \
                 non-zero one; a kill leaves nothing after the record it tore)"
            ),
        }
    }
}

/// Judge `cut`, bytes recovery cut at offset `at` of a segment at a record that failed its
/// check (or was short), trailing zeros or not: `None` when they can be a torn last write,
/// else the [`Damage`]. O(len).
pub fn judge_cut(at: u64, cut: &[u8]) -> Option<Damage> {
    let through = (cut.len() - cut.iter().rev().take_while(|&&b| b == 0).count()) as u64;
    judge(at, cut.get(..4)?.try_into().expect("4 bytes"), through)
}

/// [`judge_cut`] from the cut record's offset and length field, and the count of bytes to
/// the last non-zero one.
fn judge(at: u64, length: [u8; 4], through: u64) -> Option<Damage> {
    let end = HEADER as u64 + u64::from(u32::from_le_bytes(length));
    if through > end {
        return Some(Damage::BytesAfter { end, through });
    }
    // where a kill would have stopped writing: the first page boundary not before the last
    // non-zero byte's end (zeros between are the record's own)
    let stopped = (at + through).next_multiple_of(PAGE);
    (stopped >= at + end).then_some(Damage::WholeButFailsCheck { size: end, through })
}

/// Bytes from the start of `file` (`size` bytes) to its last non-zero one; reads backwards
/// from its end.
fn through_last_nonzero(file: &File, size: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..usize::try_from(end - start).expect("64 KiB")];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// What recovery cut from a segment and kept beside it ([`cut_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCut {
    /// The file that keeps the bytes.
    pub path: PathBuf,
    /// The segment they were cut from.
    pub segment: u32,
    /// The offset in the segment they were cut at.
    pub at: u64,
    /// How many bytes are kept.
    pub bytes: u64,
    /// Why they cannot be a torn last write ([`judge_cut`], on the bytes as they are now);
    /// `None` when they can.
    pub damage: Option<Damage>,
}

/// The bytes recovery cut and kept in the segments directory `dir`, in name order.
///
/// # Errors
///
/// [`Error::Backend`] naming the directory or file that cannot be listed or read.
pub fn kept_cuts(dir: &Path) -> Result<Vec<KeptCut>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list segments", dir))? {
        let path = entry.map_err(io("list segments", dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // `<segment>.seg.cut-at-<offset>`, then `.1`, `.2`, ... for later cuts at the offset
        let Some((segment, rest)) = name.split_once(".seg.cut-at-") else {
            continue;
        };
        let at = rest.split('.').next().unwrap_or_default();
        let (Ok(segment), Ok(at)) = (segment.parse::<u32>(), at.parse::<u64>()) else {
            continue;
        };
        let read = |e| io("read kept cut bytes", &path)(e);
        let file = File::open(&path).map_err(read)?;
        let bytes = file.metadata().map_err(read)?.len();
        let mut length = [0u8; 4];
        let damage = match file.read_exact_at(&mut length, 0) {
            Ok(()) => judge(
                at,
                length,
                through_last_nonzero(&file, bytes).map_err(read)?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(read(e)),
        };
        out.push(KeptCut {
            path,
            segment,
            at,
            bytes,
            damage,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Segment numbers present in `dir`, in order.
pub fn segment_numbers(dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list segments", dir))? {
        if let Some(n) = segment_number(&entry.map_err(io("list segments", dir))?.path()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// After segment `path` whose records end at `end` (a crash's cut): remove the `later`
/// segments, which can only be empty (begun after it was closed and synced); a later one
/// with data means damage.
fn remove_empty_later(
    seam: &Files,
    dir: &Path,
    path: &Path,
    end: u64,
    later: &[u32],
) -> Result<()> {
    for &later in later {
        let later_path = segment_path(dir, later);
        // (a segment whose size cannot be read is not known to be empty: never removed)
        let len = std::fs::metadata(&later_path)
            .map_err(io("open segment", &later_path))?
            .len();
        if len > 0 {
            return Err(Error::Corrupt {
                what: format!(
                    "segment {} ends in a damaged record at offset {end} but is followed \
                     by segment {}, so records acknowledged after the damage would be cut \
                     with it; the store is left as it is: restore it from a copy (see \
                     \"When recovery cuts a segment\" in docs/guide/hardening.md)",
                    path.display(),
                    later_path.display()
                ),
            });
        }
        seam.remove_file(&later_path, "recovery: empty later segment")
            .map_err(io("remove segment", &later_path))?;
    }
    Ok(())
}

/// The number of the segment file `path` (`<number>.seg`).
fn segment_number(path: &Path) -> Option<u32> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// The file beside segment `path` that keeps the bytes recovery cut at `end`.
pub fn cut_path(path: &Path, end: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".cut-at-{end}"));
    PathBuf::from(name)
}

/// Before recovery cuts segment `path` at `end`: if what follows (`cut`) is more than the
/// zeros kept ahead of the records — a torn last write, or a damaged record with intact ones
/// after it — keep those bytes in [`cut_path`] and say so, so that nothing is destroyed
/// unseen. (A scan cannot tell the two apart: a damaged length hides where the next record
/// starts.)
fn keep_what_is_cut(seam: &Files, path: &Path, end: u64, cut: &[u8]) -> Result<()> {
    let len = cut.len() - cut.iter().rev().take_while(|&&b| b == 0).count();
    if len == 0 {
        return Ok(());
    }
    let cut = &cut[..len];
    let site = "recovery: keep the cut bytes";
    // A later crash may cut at the same offset again: an earlier keep with other bytes stays.
    let first = cut_path(path, end);
    let mut kept = first.clone();
    let mut again = 0;
    let file = loop {
        match seam.create(&kept, true, site) {
            Ok(file) => break file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::fs::read(&kept).is_ok_and(|earlier| earlier == cut) {
                    return Ok(());
                }
                again += 1;
                kept = PathBuf::from(format!("{}.{again}", first.display()));
            }
            Err(e) => return Err(io("keep cut bytes", &kept)(e)),
        }
    };
    seam.write_all_at(&file, cut, 0, site)
        .and_then(|()| seam.sync_all(&file, site))
        .map_err(io("keep cut bytes", &kept))?;
    if let Some(dir) = path.parent() {
        seam.sync_dir(dir, site)
            .map_err(io("keep cut bytes", dir))?;
    }
    match judge_cut(end, cut) {
        None => tracing::warn!(
            segment = %path.display(),
            at = end,
            bytes = len,
            kept_in = %kept.display(),
            "recovery cut a torn last write off the segment; its bytes are kept"
        ),
        Some(damage) => tracing::error!(
            segment = %path.display(),
            at = end,
            bytes = len,
            kept_in = %kept.display(),
            "recovery cut a damaged record off the segment, with every record after it: {damage}; acknowledged records may be lost; the bytes are kept, and `retrace verify` fails until they are dealt with (see the hardening guide)"
        ),
    }
    Ok(())
}

/// Make segment `path` (`size` bytes; `bytes` read from `from`, records to `end`) end at
/// its records, durably: keep and cut what follows them, then write the records read past
/// the checkpoint again and sync them.
fn settle_tail(
    seam: &Files,
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    size: u64,
    bytes: &[u8],
) -> Result<()> {
    let records = usize::try_from(end - from).expect("read into memory");
    if size > end {
        keep_what_is_cut(seam, path, end, &bytes[records..])?;
        seam.set_len(file, end, "recovery: cut a torn tail")
            .map_err(io("truncate segment", path))?;
        seam.sync_all(file, "recovery: cut a torn tail")
            .map_err(io("truncate segment", path))?;
    }
    if end > from {
        // What the scan read past the checkpoint may be in the page cache only: after a
        // failed writeback Linux keeps such pages readable but clean, so no later sync
        // would write them, and a power loss would cut every record after them. Write
        // them again and sync before anything new goes after them (at most a
        // segment; nothing after a clean close).
        seam.write_all_at(
            file,
            &bytes[..records],
            from,
            "recovery: rewrite the scanned tail",
        )
        .map_err(io("rewrite segment", path))?;
        seam.sync_data(file, "recovery: rewrite the scanned tail")
            .map_err(io("sync segment", path))?;
    }
    Ok(())
}

impl Segments {
    /// Open (or create) the segments in `dir`, returning them with every record written
    /// after `checkpoint`, in order. A torn tail is cut off.
    pub fn open(dir: &Path, checkpoint: Pos) -> Result<(Self, Vec<Scanned>)> {
        Self::open_with(dir, checkpoint, SEGMENT_LIMIT, Files::default())
    }

    /// [`Self::open`] with segments closed at `limit` bytes, writing through `files`.
    pub fn open_with(
        dir: &Path,
        checkpoint: Pos,
        limit: u64,
        seam: Files,
    ) -> Result<(Self, Vec<Scanned>)> {
        std::fs::create_dir_all(dir).map_err(io("create segments directory", dir))?;
        let present = segment_numbers(dir)?;
        let corrupt = |what: String| Error::Corrupt { what };
        if present
            .last()
            .is_some_and(|&last| last < checkpoint.segment)
            || (present.is_empty() && checkpoint != Pos::default())
        {
            return Err(corrupt(format!(
                "segment {} named by the index checkpoint is missing from {}",
                checkpoint.segment,
                dir.display()
            )));
        }
        let mut scanned = Vec::new();
        let mut current = None;
        let to_scan: Vec<u32> = present
            .iter()
            .copied()
            .filter(|&n| n >= checkpoint.segment)
            .collect();
        for (i, &n) in to_scan.iter().enumerate() {
            let path = segment_path(dir, n);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io("open segment", &path))?;
            let from = if n == checkpoint.segment {
                checkpoint.offset
            } else {
                0
            };
            let size = file.metadata().map_err(io("open segment", &path))?.len();
            if size < from {
                return Err(corrupt(format!(
                    "segment {} is {size} bytes, shorter than the index checkpoint at {from}",
                    path.display()
                )));
            }
            let mut bytes = Vec::new();
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))
                .and_then(|_| file.read_to_end(&mut bytes))
                .map_err(io("read segment", &path))?;
            let end = from + scan(n, &bytes, from, &mut scanned) as u64;
            let last = i + 1 == to_scan.len();
            if end == size && !last {
                continue; // a closed segment, read to its end
            }
            // The end of the records. Later segments were created after this one was closed
            // and synced, so they can only be empty (a crash while starting one).
            remove_empty_later(&seam, dir, &path, end, &to_scan[i + 1..])?;
            settle_tail(&seam, &file, &path, from, end, size, &bytes)?;
            current = Some((n, file, end));
            break;
        }
        let (segment, file, end) = if let Some(current) = current {
            current
        } else {
            let n = present.last().map_or(0, |&last| last + 1);
            (n, create(&seam, dir, n)?, 0)
        };
        let file = Arc::new(file);
        let mut files = BTreeMap::new();
        files.insert(segment, Arc::clone(&file));
        Ok((
            Self {
                dir: dir.to_path_buf(),
                writer: Mutex::new(Writer {
                    segment,
                    file,
                    end,
                    capacity: end,
                    written: 0,
                    failed: None,
                }),
                synced: Mutex::new(Synced::default()),
                synced_changed: Condvar::new(),
                sync_serial: Mutex::new(()),
                sync_failed: OnceLock::new(),
                files: RwLock::new(files),
                syncs: AtomicU64::new(0),
                limit,
                seam,
            },
            scanned,
        ))
    }

    /// Take the writer lock.
    pub fn writer(&self) -> Result<WriteGuard<'_>> {
        let writer = locked(&self.writer);
        if let Some(why) = &writer.failed {
            return Err(stopped(why));
        }
        if let Some(why) = self.sync_failed.get() {
            return Err(stopped(why));
        }
        Ok(WriteGuard {
            segments: self,
            writer,
        })
    }

    /// Run `sync` through the gate: refused once any sync has failed; a failure is recorded
    /// before the next sync can start.
    fn gated(&self, sync: impl FnOnce() -> Result<()>) -> Result<()> {
        let _serial = locked(&self.sync_serial);
        if let Some(why) = self.sync_failed.get() {
            return Err(stopped(why));
        }
        let result = sync();
        if let Err(e) = &result {
            let _ = self.sync_failed.set(e.to_string());
        }
        result
    }

    /// Wait until everything up to `ticket` (from [`WriteGuard::append`]) is durable,
    /// syncing if no one else is.
    pub fn wait_durable(&self, ticket: u64) -> Result<()> {
        let mut synced = locked(&self.synced);
        loop {
            if synced.upto >= ticket {
                return Ok(());
            }
            if synced.syncing {
                synced = self
                    .synced_changed
                    .wait(synced)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            synced.syncing = true;
            drop(synced);
            let (file, target) = {
                let writer = locked(&self.writer);
                if let Some(why) = &writer.failed {
                    let err = stopped(why);
                    drop(writer);
                    let mut synced = locked(&self.synced);
                    synced.syncing = false;
                    self.synced_changed.notify_all();
                    return Err(err);
                }
                (Arc::clone(&writer.file), writer.written)
            };
            // Bytes below `target` are in this file or in closed segments, synced when closed.
            let result = self.gated(|| {
                self.seam
                    .sync_data(&file, "group commit")
                    .map_err(|e| Error::backend("sync segment", e))
            });
            if let Err(e) = &result {
                locked(&self.writer).failed = Some(e.to_string());
            } else {
                self.syncs.fetch_add(1, Ordering::Relaxed);
            }
            synced = locked(&self.synced);
            synced.syncing = false;
            if result.is_ok() {
                synced.upto = synced.upto.max(target);
            }
            self.synced_changed.notify_all();
            result?;
        }
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        let ticket = locked(&self.writer).written;
        self.wait_durable(ticket)
    }

    /// `len` bytes at `at`.
    pub fn read(&self, at: Pos, len: u32) -> Result<Vec<u8>> {
        let file = self.file(at.segment)?;
        let mut out = vec![0u8; len as usize];
        file.read_exact_at(&mut out, at.offset).map_err(|e| {
            Error::backend(
                "read segment",
                format!(
                    "{}: {len} bytes at {}: {e}",
                    segment_path(&self.dir, at.segment).display(),
                    at.offset
                ),
            )
        })?;
        Ok(out)
    }

    /// Read `len` bytes at `at` and `decode` them; a [`Error::Corrupt`] from `decode` names
    /// the segment file and the offset.
    pub fn read_decoded<T>(
        &self,
        at: Pos,
        len: u32,
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        decode(&self.read(at, len)?).map_err(|e| match e {
            Error::Corrupt { what } => Error::Corrupt {
                what: format!(
                    "{what} ({len} bytes at offset {} of {})",
                    at.offset,
                    segment_path(&self.dir, at.segment).display()
                ),
            },
            e => e,
        })
    }

    fn file(&self, segment: u32) -> Result<Arc<File>> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&segment)
        {
            return Ok(Arc::clone(f));
        }
        let path = segment_path(&self.dir, segment);
        let file = Arc::new(File::open(&path).map_err(io("open segment", &path))?);
        self.files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(segment, Arc::clone(&file));
        Ok(file)
    }

    /// Durable writes (fdatasyncs) so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Bytes the segment files occupy.
    pub fn size_on_disk(&self) -> u64 {
        segment_numbers(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .map(|n| std::fs::metadata(segment_path(&self.dir, n)).map_or(0, |m| m.len()))
            .sum()
    }
}

/// Create segment `n`, durably (its directory entry synced).
fn create(seam: &Files, dir: &Path, n: u32) -> Result<File> {
    let path = segment_path(dir, n);
    let file = seam
        .create(&path, true, "new segment")
        .map_err(io("create segment", &path))?;
    seam.sync_dir(dir, "new segment")
        .map_err(io("sync segments directory", dir))?;
    Ok(file)
}

impl WriteGuard<'_> {
    /// Write one record with `body` after the last; where the body starts, and the ticket
    /// to wait on for its durability.
    pub fn append(&mut self, body: &[u8]) -> Result<(Pos, u64)> {
        let result = self.try_append(body);
        if let Err(e) = &result {
            self.writer.failed = Some(e.to_string());
        }
        result
    }

    fn try_append(&mut self, body: &[u8]) -> Result<(Pos, u64)> {
        let len = u32::try_from(body.len())
            .map_err(|_| Error::backend("write", "a single write of 4 GiB or more"))?;
        let size = (HEADER + body.len()) as u64;
        let w = &mut *self.writer;
        if w.end > 0 && w.end + size > self.segments.limit {
            self.roll()?;
        }
        let w = &mut *self.writer;
        let path = || segment_path(&self.segments.dir, w.segment);
        if w.end + size > w.capacity {
            // zero-fill ahead, synced with the records (the size changes this once)
            // (a store told to close segments small zero-fills no more than a segment)
            let step = GROW.min(self.segments.limit).max(4096);
            let grown = (w.end + size).div_ceil(step) * step;
            let zeros = vec![0u8; 1 << 20];
            let mut at = w.capacity;
            while at < grown {
                let n = usize::try_from((grown - at).min(zeros.len() as u64)).expect("1 MiB");
                self.segments
                    .seam
                    .write_all_at(&w.file, &zeros[..n], at, "segment zero-fill")
                    .map_err(io("grow segment", &path()))?;
                at += n as u64;
            }
            w.capacity = grown;
        }
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&check(w.segment, body));
        record.extend_from_slice(body);
        self.segments
            .seam
            .write_all_at(&w.file, &record, w.end, "segment record")
            .map_err(io("write segment", &path()))?;
        let body_at = Pos {
            segment: w.segment,
            offset: w.end + HEADER as u64,
        };
        w.end += size;
        w.written += size;
        Ok((body_at, w.written))
    }

    /// Close the current segment (truncated to its records and synced: everything written
    /// so far becomes durable) and start the next.
    fn roll(&mut self) -> Result<()> {
        self.sync_and_trim()?;
        let next = self.writer.segment + 1;
        let file = create(&self.segments.seam, &self.segments.dir, next)?;
        let file = Arc::new(file);
        self.segments
            .files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(next, Arc::clone(&file));
        let w = &mut *self.writer;
        w.segment = next;
        w.file = file;
        w.end = 0;
        w.capacity = 0;
        Ok(())
    }

    /// Truncate the current segment to its records and sync it: everything written so far
    /// is durable when this returns.
    pub fn sync_and_trim(&mut self) -> Result<()> {
        let result = self.try_sync_and_trim();
        if let Err(e) = &result {
            self.writer.failed = Some(e.to_string());
        }
        result?;
        self.mark_synced();
        Ok(())
    }

    fn try_sync_and_trim(&mut self) -> Result<()> {
        let w = &mut *self.writer;
        let path = segment_path(&self.segments.dir, w.segment);
        let files = &self.segments.seam;
        if w.capacity > w.end {
            files
                .set_len(&w.file, w.end, "close segment")
                .map_err(io("truncate segment", &path))?;
            w.capacity = w.end;
        }
        self.segments.gated(|| {
            files
                .sync_all(&w.file, "close segment")
                .map_err(io("sync segment", &path))
        })
    }

    /// Sync the current segment: everything written so far is durable when this returns.
    pub fn sync(&mut self) -> Result<()> {
        let path = segment_path(&self.segments.dir, self.writer.segment);
        let result = self.segments.gated(|| {
            self.segments
                .seam
                .sync_data(&self.writer.file, "checkpoint sync")
                .map_err(io("sync segment", &path))
        });
        if let Err(e) = &result {
            self.writer.failed = Some(e.to_string());
        }
        result?;
        self.segments.syncs.fetch_add(1, Ordering::Relaxed);
        self.mark_synced();
        Ok(())
    }

    fn mark_synced(&self) {
        let mut synced = locked(&self.segments.synced);
        synced.upto = synced.upto.max(self.writer.written);
        self.segments.synced_changed.notify_all();
    }

    /// Where the next record goes.
    pub fn end(&self) -> Pos {
        Pos {
            segment: self.writer.segment,
            offset: self.writer.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(segments: &Segments, bodies: &[&[u8]]) -> Vec<Pos> {
        let mut w = segments.writer().unwrap();
        let out = bodies.iter().map(|b| w.append(b).unwrap().0).collect();
        drop(w);
        segments.flush().unwrap();
        out
    }

    #[test]
    fn a_damaged_record_is_cut_with_what_follows_and_the_cut_bytes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, _) = Segments::open(dir.path(), Pos::default()).unwrap();
        let at = write(&segments, &[b"one", b"two", b"three"]);
        let end = segments.writer().unwrap().end().offset;
        drop(segments);
        let path = segment_path(dir.path(), 0);
        let whole = std::fs::read(&path).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"T", at[1].offset).unwrap(); // "two" becomes "Two"
        drop(file);

        let (_, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        let bodies: Vec<_> = scanned.iter().map(|s| s.body.as_slice()).collect();
        assert_eq!(bodies, vec![&b"one"[..]]);
        let cut_at = at[1].offset - HEADER as u64;
        let mut expected =
            whole[usize::try_from(cut_at).unwrap()..usize::try_from(end).unwrap()].to_vec();
        expected[HEADER] = b'T';
        assert_eq!(std::fs::read(cut_path(&path, cut_at)).unwrap(), expected);
        assert!(
            segment_numbers(dir.path()).unwrap() == [0],
            "the kept bytes are no segment"
        );
        // "three" follows the damaged record: damage, not a torn last write
        assert_eq!(
            kept_cuts(dir.path()).unwrap(),
            [KeptCut {
                path: cut_path(&path, cut_at),
                segment: 0,
                at: cut_at,
                bytes: expected.len() as u64,
                damage: Some(Damage::BytesAfter {
                    end: (HEADER + 3) as u64,
                    through: expected.len() as u64,
                }),
            }]
        );

        // a later crash cutting at the same offset keeps its bytes beside, not over, these
        let (segments, _) = Segments::open(dir.path(), Pos::default()).unwrap();
        let again = write(&segments, &[b"four"]);
        drop(segments);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"F", again[0].offset).unwrap();
        drop(file);
        let (_, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        assert_eq!(scanned.len(), 1);
        assert_eq!(std::fs::read(cut_path(&path, cut_at)).unwrap(), expected);
        let second = PathBuf::from(format!("{}.1", cut_path(&path, cut_at).display()));
        assert!(std::fs::read(second).unwrap().ends_with(b"Four"));
    }

    #[test]
    fn a_cut_is_judged_a_torn_write_only_when_a_kill_could_have_left_it() {
        let record = |body: &[u8]| {
            let mut r = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
            r.extend_from_slice(&check(0, body));
            r.extend_from_slice(body);
            r
        };
        let zeros_after = |bytes: &[u8]| {
            let mut cut = bytes.to_vec();
            cut.resize(bytes.len() + 8192, 0);
            cut
        };
        // a record over three pages, starting 7 bytes before a page boundary
        let body: Vec<u8> = (0..10_000u32)
            .map(|i| u8::try_from(i % 251 + 1).unwrap())
            .collect();
        let whole = record(&body);
        let size = whole.len() as u64;
        let at = 3 * PAGE - 7;
        // a kill: a prefix to a page boundary, then the zeros written ahead
        for torn in [7, 7 + 4096, 7 + 8192] {
            assert_eq!(
                judge_cut(at, &zeros_after(&whole[..torn])),
                None,
                "torn after {torn} bytes"
            );
        }
        // all of it there, one bit off
        let mut flipped = whole.clone();
        flipped[HEADER + 2] ^= 1;
        let damaged = Some(Damage::WholeButFailsCheck {
            size,
            through: size,
        });
        assert_eq!(judge_cut(at, &zeros_after(&flipped)), damaged);
        // ... also when its body ends in zeros: no kill stops a write short of a boundary
        let mut ends_in_zeros = body.clone();
        ends_in_zeros[9_990..].fill(0);
        let mut flipped = record(&ends_in_zeros);
        flipped[HEADER + 2] ^= 1;
        assert_eq!(
            judge_cut(at, &flipped),
            Some(Damage::WholeButFailsCheck {
                size,
                through: size - 10
            })
        );
        // a small record within one page cannot be torn by a kill at all
        let small = record(b"a record of some length");
        assert!(judge_cut(100, &zeros_after(&small[..20])).is_some());
        assert_eq!(judge_cut(PAGE - 6, &zeros_after(&small[..6])), None);
        // another record after it
        let mut two = whole.clone();
        two[HEADER + 2] ^= 1;
        two.extend_from_slice(&record(b"next"));
        assert_eq!(
            judge_cut(at, &two),
            Some(Damage::BytesAfter {
                end: size,
                through: two.len() as u64
            })
        );
        // a length damaged smaller than the record
        let mut short = whole.clone();
        short[0] -= 4;
        assert_eq!(
            judge_cut(at, &short),
            Some(Damage::BytesAfter {
                end: size - 4,
                through: size
            })
        );
        assert_eq!(judge_cut(at, &[]), None, "nothing cut");
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        assert!(scanned.is_empty());
        let at = write(&segments, &[b"one", b"two"]);
        assert_eq!(segments.read(at[1], 3).unwrap(), b"two");
        let torn_at = segments.writer().unwrap().end();
        drop(segments);
        // a torn third record of 9,000 bytes (over a page boundary): its first bytes, then
        // the zeros written ahead
        let path = segment_path(dir.path(), 0);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(
            &[0x28, 0x23, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'x'],
            torn_at.offset,
        )
        .unwrap();
        drop(file);

        let (segments, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        let bodies: Vec<_> = scanned.iter().map(|s| s.body.as_slice()).collect();
        assert_eq!(bodies, vec![&b"one"[..], b"two"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), torn_at.offset);
        assert_eq!(
            std::fs::read(cut_path(&path, torn_at.offset)).unwrap(),
            [0x28, 0x23, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'x'],
            "what was cut is kept"
        );
        let kept = kept_cuts(dir.path()).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].damage, None, "a torn last write");
        // new records go where the torn one was, and only they are read back
        write(&segments, &[b"three"]);
        drop(segments);
        let (_, scanned) = Segments::open(dir.path(), torn_at).unwrap();
        let bodies: Vec<_> = scanned.iter().map(|s| s.body.as_slice()).collect();
        assert_eq!(
            bodies,
            vec![&b"three"[..]],
            "scanning starts at the checkpoint"
        );
    }

    #[test]
    fn a_record_failing_its_check_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, _) = Segments::open(dir.path(), Pos::default()).unwrap();
        let at = write(&segments, &[b"good", b"flipped", b"after"]);
        drop(segments);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 0))
            .unwrap();
        file.write_all_at(b"F", at[1].offset).unwrap();
        drop(file);
        let (_, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        assert_eq!(scanned.len(), 1);
    }

    #[test]
    fn segments_roll_over_and_are_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, _) =
            Segments::open_with(dir.path(), Pos::default(), 1000, Files::default()).unwrap();
        let big = vec![5u8; 500];
        let at = write(&segments, &[&big, &big, b"small"]);
        assert_eq!(
            at.iter().map(|p| p.segment).collect::<Vec<_>>(),
            vec![0, 1, 1]
        );
        assert_eq!(segments.read(at[2], 5).unwrap(), b"small");
        drop(segments);
        let (_, scanned) = Segments::open(dir.path(), Pos::default()).unwrap();
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[2].body_at, at[2]);
    }
}
