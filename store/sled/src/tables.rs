//! Index tables: immutable files of sorted, fixed-width index entries, written at
//! checkpoints and merged as they accumulate (a small log-structured merge tree).
//!
//! Why not sled: measured here, sled spends 220–300 bytes of disk per 52-byte index entry
//! written in checkpoint-sized batches; at three entries per agent step that alone was
//! more than half the store's size. A table spends the entry's own size and 1/64th more.
//!
//! File `index/NNNNNNNN.idx`:
//!
//! ```text
//! magic "RTIDX\0\0\x01" | blob count: u64 LE | log count: u64 LE
//! blob entries, sorted: id (32) | Loc (20)
//! log entries, sorted:  run ++ first seq big-endian (24) | Loc (20)
//! blob fences: the id of entries 0, 64, 128, …
//! log fences:  the key of entries 0, 64, 128, …
//! blob filter: a Bloom filter of the blob ids, 10 bits per id (u64 LE words)
//! ```
//!
//! Opening a table reads its header, fences and filter (about 1/30th of it); a lookup
//! checks the filter, binary-searches the fences in memory, then reads one block of at
//! most 64 entries. The filter matters because most blob lookups miss — every new blob is
//! looked up before it is written — and without it each table costs a read.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use retrace_store::{Error, Result};

use crate::files::{Files, SeamWriter};
use crate::layout::Loc;

const MAGIC: &[u8; 8] = b"RTIDX\0\0\x01";
const HEADER_LEN: usize = 24;
const HEADER: u64 = HEADER_LEN as u64;
/// Entries per block: one fence each.
const BLOCK_LEN: usize = 64;
const BLOCK: u64 = BLOCK_LEN as u64;
const LOC: usize = 20;
/// Bloom filter: bits per blob id, and probes per lookup (about 1% false positives).
const FILTER_BITS: u64 = 10;
const PROBES: u64 = 7;

/// 64-bit words of the filter for `count` ids.
fn filter_words(count: u64) -> u64 {
    (count * FILTER_BITS).div_ceil(64)
}

/// The bits a blob id sets: ids are BLAKE3 hashes, so their bytes are already uniform.
fn probes(id: &[u8], words: u64) -> impl Iterator<Item = (usize, u64)> {
    let h1 = u64::from_le_bytes(id[..8].try_into().expect("32-byte ids"));
    let h2 = u64::from_le_bytes(id[8..16].try_into().expect("32-byte ids")) | 1;
    let bits = words * 64;
    (0..PROBES).map(move |i| {
        let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
        (usize::try_from(bit / 64).expect("fits"), 1u64 << (bit % 64))
    })
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |e| Error::backend(op, format!("{path}: {e}"))
}

/// The file of table `n` in `dir`.
pub fn table_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.idx"))
}

/// Table numbers present in `dir`, in order.
pub fn list(dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list index tables", dir))? {
        let name = entry.map_err(io("list index tables", dir))?.file_name();
        if let Some(n) = name
            .to_string_lossy()
            .strip_suffix(".idx")
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One sorted section of a table: entries of `key` bytes plus a [`Loc`].
#[derive(Debug)]
struct Section {
    /// File offset of the first entry.
    at: u64,
    count: u64,
    key: usize,
    /// Keys of entries 0, BLOCK, 2·BLOCK, … concatenated.
    fences: Vec<u8>,
}

impl Section {
    fn width(&self) -> u64 {
        (self.key + LOC) as u64
    }

    fn fence(&self, i: usize) -> &[u8] {
        &self.fences[i * self.key..(i + 1) * self.key]
    }

    fn blocks(&self) -> usize {
        self.fences.len() / self.key
    }
}

/// One open index table.
#[derive(Debug)]
pub struct Table {
    /// The table's number.
    pub number: u32,
    path: PathBuf,
    file: File,
    blobs: Section,
    log: Section,
    /// Bloom filter of the blob ids.
    filter: Vec<u64>,
}

/// Which section.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Blob id → Loc.
    Blobs,
    /// Log key → Loc.
    Log,
}

impl Table {
    /// Write a table of `blobs` and `log` entries (each sorted by key, keys unique) as
    /// table `n` in `dir` through `files`, durably, and open it.
    pub fn write(
        files: &Files,
        dir: &Path,
        n: u32,
        blobs: &[([u8; 32], Loc)],
        log: &[([u8; 24], Loc)],
    ) -> Result<Self> {
        let mut w = Writer::create(files, dir, n, blobs.len() as u64, log.len() as u64)?;
        let mut entry = [0u8; 32 + LOC];
        for (key, loc) in blobs {
            entry[..32].copy_from_slice(key);
            entry[32..].copy_from_slice(&loc.encode());
            w.entry(Kind::Blobs, &entry)?;
        }
        for (key, loc) in log {
            entry[..24].copy_from_slice(key);
            entry[24..24 + LOC].copy_from_slice(&loc.encode());
            w.entry(Kind::Log, &entry[..24 + LOC])?;
        }
        w.finish(files, dir)
    }

    /// Merge `tables` (newest first; on equal keys the newest entry wins) into a new table
    /// `n` in `dir` through `files`, durably, and open it.
    ///
    /// Streamed: a pass counting the merged entries (the header comes first), then a pass
    /// writing them, each reading [`MERGE_BLOCK`] entries of a table at a time. Checkpoints
    /// keep each table at least twice the next newer one, so now and then one merge takes
    /// in the whole index; collecting its entries in memory (as this once did: the raw
    /// table, a `Vec` of boxed keys, a `BTreeMap`, the sorted result — some 250 bytes per
    /// entry at once, ~3.7 entries per agent step) made peak RSS grow with the history
    /// where it must be bounded by the window (issue 20): a debug `retrace run` peaked
    /// 10 MiB higher at 30,000 steps than at 10,000; streamed, 2.4 MiB. What stays in
    /// memory is what [`Table::open`] keeps anyway: fences and filter (~8 bytes a step).
    pub fn merge(files: &Files, dir: &Path, n: u32, tables: &[&Table]) -> Result<Self> {
        let count = |kind| {
            let mut count = 0u64;
            merged(tables, kind, |_| {
                count += 1;
                Ok(())
            })?;
            Ok::<_, Error>(count)
        };
        let (blobs, log) = (count(Kind::Blobs)?, count(Kind::Log)?);
        let mut w = Writer::create(files, dir, n, blobs, log)?;
        merged(tables, Kind::Blobs, |e| w.entry(Kind::Blobs, e))?;
        merged(tables, Kind::Log, |e| w.entry(Kind::Log, e))?;
        w.finish(files, dir)
    }

    /// Open table `n` in `dir`: read its header and fences.
    pub fn open(dir: &Path, n: u32) -> Result<Self> {
        let path = table_path(dir, n);
        let file = File::open(&path).map_err(io("open index table", &path))?;
        let corrupt = |why: &str| Error::Corrupt {
            what: format!("index table {}: {why}", path.display()),
        };
        let size = file
            .metadata()
            .map_err(io("open index table", &path))?
            .len();
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| corrupt("shorter than its header"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt("not an index table"));
        }
        let blob_count = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let log_count = u64::from_le_bytes(header[16..].try_into().expect("8 bytes"));
        let blob_fences = blob_count.div_ceil(BLOCK);
        let log_fences = log_count.div_ceil(BLOCK);
        let entries_end = blob_count
            .checked_mul(32 + LOC as u64)
            .and_then(|b| log_count.checked_mul(24 + LOC as u64).map(|l| (b, l)))
            .and_then(|(b, l)| HEADER.checked_add(b)?.checked_add(l))
            .ok_or_else(|| corrupt("impossible entry counts"))?;
        // counts from a damaged header must not overflow (found by fuzzing)
        let (fences_end, expected) = entries_end
            .checked_add(blob_fences * 32)
            .and_then(|e| e.checked_add(log_fences * 24))
            .and_then(|f| Some((f, f.checked_add(filter_words(blob_count) * 8)?)))
            .ok_or_else(|| corrupt("impossible entry counts"))?;
        if size != expected {
            return Err(corrupt(&format!(
                "{size} bytes where its counts say {expected}"
            )));
        }
        let mut fences = vec![0u8; usize::try_from(expected - entries_end).expect("fits")];
        file.read_exact_at(&mut fences, entries_end)
            .map_err(io("read index table", &path))?;
        let filter = fences
            .split_off(usize::try_from(fences_end - entries_end).expect("fits"))
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        let log_fences = fences.split_off(usize::try_from(blob_fences * 32).expect("fits"));
        Ok(Self {
            number: n,
            blobs: Section {
                at: HEADER,
                count: blob_count,
                key: 32,
                fences,
            },
            log: Section {
                at: HEADER + blob_count * (32 + LOC as u64),
                count: log_count,
                key: 24,
                fences: log_fences,
            },
            filter,
            path,
            file,
        })
    }

    fn section(&self, kind: Kind) -> &Section {
        match kind {
            Kind::Blobs => &self.blobs,
            Kind::Log => &self.log,
        }
    }

    /// Whether the filter lets blob `id` through (false: certainly absent).
    fn may_hold_blob(&self, id: &[u8]) -> bool {
        !self.filter.is_empty()
            && probes(id, self.filter.len() as u64).all(|(word, bit)| self.filter[word] & bit != 0)
    }

    /// Entries `from..to` of a section, raw.
    fn read(&self, section: &Section, from: u64, to: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; usize::try_from((to - from) * section.width()).expect("fits")];
        self.file
            .read_exact_at(&mut out, section.at + from * section.width())
            .map_err(io("read index table", &self.path))?;
        Ok(out)
    }

    /// Index of the first entry whose key is not `before` `key` (`before`: `<` for a lower
    /// bound, `<=` for an upper bound).
    fn bound(&self, section: &Section, key: &[u8], upper: bool) -> Result<u64> {
        let before = |k: &[u8]| if upper { k <= key } else { k < key };
        let blocks = section.blocks();
        let b = partition_point(blocks, |i| before(section.fence(i)));
        if b == 0 {
            return Ok(0);
        }
        let start = (b as u64 - 1) * BLOCK;
        let end = (start + BLOCK).min(section.count);
        let block = self.read(section, start, end)?;
        let width = usize::try_from(section.width()).expect("small");
        let n = usize::try_from(end - start).expect("small");
        let within = partition_point(n, |i| before(&block[i * width..i * width + section.key]));
        Ok(start + within as u64)
    }

    /// The entry for exactly `key`.
    pub fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Loc>> {
        let section = self.section(kind);
        if matches!(kind, Kind::Blobs) && !self.may_hold_blob(key) {
            return Ok(None);
        }
        let i = self.bound(section, key, false)?;
        if i >= section.count {
            return Ok(None);
        }
        let entry = self.read(section, i, i + 1)?;
        if &entry[..section.key] != key {
            return Ok(None);
        }
        self.loc(&entry[section.key..]).map(Some)
    }

    /// The last entry with a key at or below `key`.
    pub fn last_at_or_below(&self, kind: Kind, key: &[u8]) -> Result<Option<(Vec<u8>, Loc)>> {
        let section = self.section(kind);
        let i = self.bound(section, key, true)?;
        if i == 0 {
            return Ok(None);
        }
        let entry = self.read(section, i - 1, i)?;
        Ok(Some((
            entry[..section.key].to_vec(),
            self.loc(&entry[section.key..])?,
        )))
    }

    /// Every entry with a key in `from..=to`, in order.
    pub fn range(&self, kind: Kind, from: &[u8], to: &[u8]) -> Result<Vec<(Vec<u8>, Loc)>> {
        let section = self.section(kind);
        let (lo, hi) = (
            self.bound(section, from, false)?,
            self.bound(section, to, true)?,
        );
        self.entries(section, lo, hi.max(lo))
    }

    /// Every entry of a section.
    pub fn all(&self, kind: Kind) -> Result<Vec<(Vec<u8>, Loc)>> {
        let section = self.section(kind);
        self.entries(section, 0, section.count)
    }

    fn entries(&self, section: &Section, lo: u64, hi: u64) -> Result<Vec<(Vec<u8>, Loc)>> {
        let bytes = self.read(section, lo, hi)?;
        bytes
            .chunks_exact(usize::try_from(section.width()).expect("small"))
            .map(|e| Ok((e[..section.key].to_vec(), self.loc(&e[section.key..])?)))
            .collect()
    }

    fn loc(&self, bytes: &[u8]) -> Result<Loc> {
        Loc::decode(bytes, || format!("an entry of {}", self.path.display()))
    }

    /// Entries in the table.
    pub fn len(&self) -> u64 {
        self.blobs.count + self.log.count
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove the table's file through `files` (it stays readable through handles already
    /// open).
    pub fn remove(&self, files: &Files) -> Result<()> {
        files
            .remove_file(&self.path, "retire merged table")
            .map_err(io("remove index table", &self.path))
    }
}

/// The first `i` in `0..n` for which `pred` is false (`pred` true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Entries read at a time from each table by a merge.
const MERGE_BLOCK: u64 = 4096;

/// Entries of one section of a table, in order, [`MERGE_BLOCK`] at a time.
struct Cursor<'a> {
    table: &'a Table,
    section: &'a Section,
    /// The next entry to read from the file.
    next: u64,
    buf: Vec<u8>,
    /// Byte offset of the current entry in `buf`.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(table: &'a Table, kind: Kind) -> Self {
        Self {
            table,
            section: table.section(kind),
            next: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The current entry (key ++ encoded Loc), or `None` at the end.
    fn head(&mut self) -> Result<Option<&[u8]>> {
        if self.pos == self.buf.len() {
            if self.next == self.section.count {
                return Ok(None);
            }
            let to = (self.next + MERGE_BLOCK).min(self.section.count);
            self.buf = self.table.read(self.section, self.next, to)?;
            self.next = to;
            self.pos = 0;
        }
        let width = usize::try_from(self.section.width()).expect("small");
        Ok(Some(&self.buf[self.pos..self.pos + width]))
    }

    fn advance(&mut self) {
        self.pos += usize::try_from(self.section.width()).expect("small");
    }
}

/// Call `f` with each entry of the `kind` sections of `tables` (newest first) merged in
/// key order, the newest entry of equal keys only.
fn merged(tables: &[&Table], kind: Kind, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut cursors: Vec<Cursor<'_>> = tables.iter().map(|t| Cursor::new(t, kind)).collect();
    let key_len = match kind {
        Kind::Blobs => 32,
        Kind::Log => 24,
    };
    loop {
        // the cursor with the least key, the newest on ties
        let mut least: Option<(usize, [u8; 32])> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some(entry) = cursor.head()? {
                let key = &entry[..key_len];
                if least.is_none_or(|(_, k)| key < &k[..key_len]) {
                    let mut k = [0u8; 32];
                    k[..key_len].copy_from_slice(key);
                    least = Some((i, k));
                }
            }
        }
        let Some((winner, key)) = least else {
            return Ok(());
        };
        f(cursors[winner].head()?.expect("a head"))?;
        for cursor in &mut cursors {
            if cursor
                .head()?
                .is_some_and(|e| e[..key_len] == key[..key_len])
            {
                cursor.advance();
            }
        }
    }
}

/// A table being written: the header, then entries as they come (blobs, then log
/// entries, each section in key order), collecting the fences and filter that follow them.
struct Writer {
    n: u32,
    path: PathBuf,
    out: std::io::BufWriter<SeamWriter>,
    counts: [u64; 2],
    written: [u64; 2],
    fences: [Vec<u8>; 2],
    filter: Vec<u64>,
}

impl Writer {
    fn create(files: &Files, dir: &Path, n: u32, blobs: u64, log: u64) -> Result<Self> {
        let path = table_path(dir, n);
        let file = files
            .create(&path, false, "new index table")
            .map_err(io("write index table", &path))?;
        let mut out = files.writer(file, "index table");
        let header = [&MAGIC[..], &blobs.to_le_bytes(), &log.to_le_bytes()].concat();
        out.write_all(&header)
            .map_err(io("write index table", &path))?;
        Ok(Self {
            n,
            path,
            out,
            counts: [blobs, log],
            written: [0, 0],
            fences: [Vec::new(), Vec::new()],
            filter: vec![0u64; usize::try_from(filter_words(blobs)).expect("fits")],
        })
    }

    /// Append an entry (key ++ encoded Loc) of section `kind`.
    fn entry(&mut self, kind: Kind, entry: &[u8]) -> Result<()> {
        let (s, key) = match kind {
            Kind::Blobs => {
                if self.written[1] != 0 {
                    return Err(self.miscounted());
                }
                (0, &entry[..32])
            }
            Kind::Log => {
                if self.written[0] != self.counts[0] {
                    return Err(self.miscounted());
                }
                (1, &entry[..24])
            }
        };
        if self.written[s] == self.counts[s] {
            return Err(self.miscounted());
        }
        if self.written[s].is_multiple_of(BLOCK) {
            self.fences[s].extend_from_slice(key);
        }
        if s == 0 {
            for (word, bit) in probes(key, self.filter.len() as u64) {
                self.filter[word] |= bit;
            }
        }
        self.written[s] += 1;
        self.out
            .write_all(entry)
            .map_err(io("write index table", &self.path))
    }

    fn miscounted(&self) -> Error {
        Error::backend(
            "write index table",
            format!("{}: entries do not match the counts", self.path.display()),
        )
    }

    /// Write fences and filter, sync, and open the table.
    fn finish(mut self, files: &Files, dir: &Path) -> Result<Table> {
        if self.written != self.counts {
            return Err(self.miscounted());
        }
        let path = self.path.clone();
        let result = (|| {
            self.out.write_all(&self.fences[0])?;
            self.out.write_all(&self.fences[1])?;
            for word in &self.filter {
                self.out.write_all(&word.to_le_bytes())?;
            }
            Ok(())
        })();
        result.map_err(io("write index table", &path))?;
        let out = self
            .out
            .into_inner()
            .map_err(|e| io("write index table", &path)(e.into_error()))?;
        files
            .sync_all(out.file(), "index table")
            .map_err(io("sync index table", &path))?;
        files
            .sync_dir(dir, "index table")
            .map_err(io("sync index directory", dir))?;
        Table::open(dir, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Pos;
    use std::fs::OpenOptions;

    fn loc(n: u64) -> Loc {
        Loc {
            at: Pos {
                segment: 1,
                offset: n,
            },
            len: 7,
            count: 3,
        }
    }

    fn log_key(n: u64) -> [u8; 24] {
        let mut k = [9u8; 24];
        k[16..].copy_from_slice(&(n * 10).to_be_bytes());
        k
    }

    #[test]
    fn lookups_find_every_entry_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        // blob ids 2, 4, 6, … (as the last byte pair), across several blocks
        let blobs: Vec<([u8; 32], Loc)> = (1..=300u64)
            .map(|i| {
                let mut id = [0u8; 32];
                id[24..].copy_from_slice(&(i * 2).to_be_bytes());
                (id, loc(i))
            })
            .collect();
        let log: Vec<([u8; 24], Loc)> = (0..200u64).map(|i| (log_key(i), loc(i))).collect();
        let table = Table::write(&Files::default(), dir.path(), 3, &blobs, &log).unwrap();
        let table = {
            drop(table);
            Table::open(dir.path(), 3).unwrap()
        };
        for (id, l) in &blobs {
            assert_eq!(table.get(Kind::Blobs, id).unwrap(), Some(*l));
            let mut odd = *id;
            odd[31] += 1;
            assert_eq!(table.get(Kind::Blobs, &odd).unwrap(), None);
        }
        assert_eq!(table.get(Kind::Blobs, &[0u8; 32]).unwrap(), None);
        assert_eq!(table.get(Kind::Blobs, &[0xff; 32]).unwrap(), None);
        // seq 15 lies in the chunk starting at 10; seq 5 in the one at 0
        let mut k = log_key(1);
        k[23] += 5;
        let (key, l) = table.last_at_or_below(Kind::Log, &k).unwrap().unwrap();
        assert_eq!((key.as_slice(), l), (&log_key(1)[..], loc(1)));
        assert!(
            table
                .last_at_or_below(Kind::Log, &[0u8; 24])
                .unwrap()
                .is_none()
        );
        let range = table.range(Kind::Log, &log_key(63), &log_key(130)).unwrap();
        assert_eq!(range.len(), 68);
        assert_eq!(range[0].1, loc(63));
        assert_eq!(table.all(Kind::Log).unwrap().len(), 200);
    }

    #[test]
    fn the_filter_keeps_most_absent_blobs_from_costing_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let id = |n: u64| *blake3::hash(&n.to_le_bytes()).as_bytes();
        let mut blobs: Vec<([u8; 32], Loc)> = (0..1000).map(|n| (id(n), loc(n))).collect();
        blobs.sort_unstable_by_key(|(k, _)| *k);
        let table = Table::write(&Files::default(), dir.path(), 1, &blobs, &[]).unwrap();
        assert!(blobs.iter().all(|(k, _)| table.may_hold_blob(k)));
        let passed = (1000..11_000)
            .filter(|&n| table.may_hold_blob(&id(n)))
            .count();
        assert!(
            passed < 300,
            "{passed} of 10000 absent ids passed the filter"
        );
    }

    #[test]
    fn a_merge_streams_both_tables_and_the_newest_entry_wins() {
        let dir = tempfile::tempdir().unwrap();
        let id = |n: u64| *blake3::hash(&n.to_le_bytes()).as_bytes();
        let table = |n: u32, range: std::ops::Range<u64>, offset: u64| {
            let mut blobs: Vec<([u8; 32], Loc)> =
                range.clone().map(|i| (id(i), loc(i + offset))).collect();
            blobs.sort_unstable_by_key(|(k, _)| *k);
            let log: Vec<([u8; 24], Loc)> = range.map(|i| (log_key(i), loc(i + offset))).collect();
            Table::write(&Files::default(), dir.path(), n, &blobs, &log).unwrap()
        };
        // more entries than a merge reads at a time; 9,000..10,000 in both
        let older = table(1, 0..10_000, 0);
        let newer = table(2, 9_000..12_000, 100_000);
        let merged = Table::merge(&Files::default(), dir.path(), 3, &[&newer, &older]).unwrap();
        assert_eq!(merged.len(), 2 * 12_000);
        for i in (0..12_000)
            .step_by(7)
            .chain([8_999, 9_000, 9_999, 10_000, 11_999])
        {
            let want = loc(if i >= 9_000 { i + 100_000 } else { i });
            assert_eq!(
                merged.get(Kind::Blobs, &id(i)).unwrap(),
                Some(want),
                "blob {i}"
            );
            assert_eq!(
                merged.get(Kind::Log, &log_key(i)).unwrap(),
                Some(want),
                "log {i}"
            );
        }
        assert!(
            !merged.may_hold_blob(&id(12_000))
                || merged.get(Kind::Blobs, &id(12_000)).unwrap().is_none()
        );
        let log = merged.all(Kind::Log).unwrap();
        assert!(log.windows(2).all(|w| w[0].0 < w[1].0));
        // as written, byte for byte, by writing the merged entries at once
        let (blobs, log): (Vec<_>, Vec<_>) = (
            merged
                .all(Kind::Blobs)
                .unwrap()
                .into_iter()
                .map(|(k, l)| (<[u8; 32]>::try_from(k).unwrap(), l))
                .collect(),
            log.into_iter()
                .map(|(k, l)| (<[u8; 24]>::try_from(k).unwrap(), l))
                .collect(),
        );
        Table::write(&Files::default(), dir.path(), 4, &blobs, &log).unwrap();
        assert_eq!(
            std::fs::read(table_path(dir.path(), 3)).unwrap(),
            std::fs::read(table_path(dir.path(), 4)).unwrap()
        );
        // and an empty table merges to the other
        let empty = Table::write(&Files::default(), dir.path(), 5, &[], &[]).unwrap();
        let same = Table::merge(&Files::default(), dir.path(), 6, &[&empty, &older]).unwrap();
        assert_eq!(same.len(), older.len());
    }

    #[test]
    fn an_empty_table_and_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::write(&Files::default(), dir.path(), 1, &[], &[]).unwrap();
        assert_eq!(table.get(Kind::Blobs, &[1; 32]).unwrap(), None);
        assert!(
            table
                .range(Kind::Log, &[0; 24], &[9; 24])
                .unwrap()
                .is_empty()
        );
        let path = table_path(dir.path(), 1);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&5u64.to_le_bytes(), 8).unwrap();
        let err = Table::open(dir.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("00000001.idx") && err.contains("counts say"),
            "{err}"
        );
    }
}
