//! On-disk layout of a store directory:
//!
//! - `segments/`: append-only files holding every blob, event and run ref (see the
//!   `segments` module), one [`Record`] per write;
//! - `index/`: immutable tables mapping blob ids and `(run, first seq)` to [`Loc`]s in the
//!   segments (see the `tables` module);
//! - `sled/`: a sled database with these trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `runs` | RunId (16 bytes) | run ref: bincode of `RunInfo`, head left out |
//! | `snapshots` | EventId | snapshot bytes (a cache; may be dropped) |
//! | `meta` | `format` | [`format_value`] |
//! | `meta` | `checkpoint` | [`Checkpoint`]: the index tables in use and the segment position they cover |
//!
//! Why payloads and indexes live outside sled: sled costs about 17 µs per written entry,
//! and spends 220–300 bytes of disk per small index entry as it rewrites pages, which made
//! the store use 4–5 KB per agent step holding ~1.5 KB of data (measured on the reference
//! machine). Segment files are written once, in order; index entries are batched into
//! tables at checkpoints (WiscKey-style: values in a log, keys in a sorted index).
//!
//! A record in a segment (see [`Record`]) is one write: an append's events are a single
//! record, however many chunks they fill, so a crash leaves an append wholly present or
//! wholly absent.

use std::cell::RefCell;

use retrace_events::{EventId, RunId};
use retrace_store::{Error, Result, RunInfo, StoredEvent};

/// Subdirectory holding the sled database.
pub const SLED_DIR: &str = "sled";
/// The file in [`SLED_DIR`] that sled holds an exclusive `flock` on while the store is open
/// (see the `holder` module).
pub const SLED_LOCK_FILE: &str = "db";
/// Subdirectory holding the segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Subdirectory holding the index tables.
pub const INDEX_DIR: &str = "index";

/// sled's segment (and IO buffer) size. Opening reads back up to a segment of sled's log,
/// so smaller opens faster; sled holds only run refs, snapshots and metadata.
/// sled refuses to reopen a database with another value.
pub const SLED_SEGMENT_BYTES: usize = 1 << 20;

/// The most memory sled's page cache may hold. sled's default is 1 GiB, and it keeps every
/// page it has written until that is reached: a long run writes a state snapshot into sled
/// every 1,000 events (tens of KiB each at a full window), so without a cap the daemon and
/// `retrace run` grew by the snapshots of the whole history (issue 20: memory must be bounded
/// by the window, not the history). sled holds only run refs, snapshots and metadata, which
/// are read rarely (a run's latest snapshot when its state is folded); a page evicted is read
/// back from sled's log on demand. Not a format setting: changing it changes no file.
pub const SLED_CACHE_BYTES: u64 = 8 << 20;

/// The sled configuration of the database in `sled_dir`. Durability comes from the
/// segment files and checkpoints, so sled's background flusher is off.
pub fn sled_config(sled_dir: &std::path::Path) -> sled::Config {
    sled::Config::new()
        .path(sled_dir)
        .flush_every_ms(None)
        .segment_size(SLED_SEGMENT_BYTES)
        .cache_capacity(SLED_CACHE_BYTES)
}

/// Accept an empty or missing directory (creating it) or one laid out as a store; refuse
/// anything else before writing to it.
pub fn check_dir(dir: &std::path::Path) -> Result<()> {
    let io = |e: std::io::Error| Error::backend("open", format!("{}: {e}", dir.display()));
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(io);
    }
    if dir.join(SLED_DIR).is_dir() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir).map_err(io)?;
    match entries.next() {
        None => Ok(()),
        Some(entry) => Err(Error::NotAStore {
            path: dir.display().to_string(),
            reason: format!(
                "it is not empty (found `{}`) and has no `{SLED_DIR}/` database",
                entry.map_err(io)?.file_name().to_string_lossy()
            ),
        }),
    }
}

/// Tree of run refs by run id.
pub const RUNS: &str = "runs";
/// Tree of snapshots by event id.
pub const SNAPSHOTS: &str = "snapshots";
/// Tree of store metadata.
pub const META: &str = "meta";
/// Key in [`META`] holding the format.
pub const FORMAT_KEY: &str = "format";
/// Key in [`META`] holding the [`Checkpoint`].
pub const CHECKPOINT_KEY: &str = "checkpoint";
/// Most events in one chunk; bounds what a single-seq lookup reads.
pub const CHUNK_EVENTS: usize = 256;

/// What [`FORMAT_KEY`] holds for this build: the layout and the event format version.
pub fn format_value() -> String {
    format!("retrace-sled-2/events-{}", retrace_events::FORMAT_VERSION)
}

/// A place in the segment files: segment number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Segment number.
    pub segment: u32,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl Pos {
    /// 12 bytes: segment, offset (little-endian).
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..].copy_from_slice(&self.offset.to_le_bytes());
        out
    }

    /// Inverse of [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; 12] = bytes.try_into().map_err(|_| Error::Corrupt {
            what: format!("checkpoint position of {} bytes", bytes.len()),
        })?;
        Ok(Self {
            segment: u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(bytes[4..].try_into().expect("8 bytes")),
        })
    }
}

/// What the last checkpoint made durable: the index tables in use (newest first), complete
/// for every record before `pos` in the segments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Where the records not in the tables start.
    pub pos: Pos,
    /// Index table numbers, newest first.
    pub tables: Vec<u32>,
}

impl Checkpoint {
    /// `pos` (12 bytes), then each table number (u32 LE).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.pos.encode().to_vec();
        for n in &self.tables {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Inverse of [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = || Error::Corrupt {
            what: format!("checkpoint record of {} bytes", bytes.len()),
        };
        if bytes.len() < 12 || !(bytes.len() - 12).is_multiple_of(4) {
            return Err(corrupt());
        }
        Ok(Self {
            pos: Pos::decode(&bytes[..12])?,
            tables: bytes[12..]
                .chunks_exact(4)
                .map(|n| u32::from_le_bytes(n.try_into().expect("4 bytes")))
                .collect(),
        })
    }
}

/// Where an indexed value lies in the segment files, and how many items it holds (events
/// of a chunk; a blob's length before compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Start of the value.
    pub at: Pos,
    /// Its length in bytes.
    pub len: u32,
    /// Events in the chunk, or the blob's stored-as length.
    pub count: u32,
}

impl Loc {
    /// 20 bytes: segment, offset, len, count (little-endian).
    pub fn encode(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..12].copy_from_slice(&self.at.encode());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out[16..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Inverse of [`Self::encode`]; `what` names the entry for the error.
    pub fn decode(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Self> {
        if bytes.len() != 20 {
            return Err(Error::Corrupt {
                what: format!("index entry of {}: {} bytes", what(), bytes.len()),
            });
        }
        Ok(Self {
            at: Pos::decode(&bytes[..12])?,
            len: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
            count: u32::from_le_bytes(bytes[16..].try_into().expect("4 bytes")),
        })
    }
}

/// How a stored blob's bytes are encoded (the first byte of its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// As given.
    Raw = 0,
    /// zstd-compressed.
    Zstd = 1,
}

/// Blobs shorter than this are stored raw: compression gains little on them.
pub const COMPRESS_FROM: usize = 256;

/// zstd level for blobs: fast, and most of what a higher level would save on agent text.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    // zstd contexts cost far more to create than a 1 KiB blob costs to (de)compress:
    // one of each per thread, reused.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        slot.as_mut().expect("just set").compress(bytes)
    })
}

fn decompress(packed: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut().expect("just set").decompress(packed, len)
    })
}

/// A blob's stored value: codec byte, then the bytes (compressed when that is smaller).
pub fn encode_blob_value(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() >= COMPRESS_FROM
        && let Ok(packed) = compress(bytes)
        && packed.len() < bytes.len()
    {
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(Codec::Zstd as u8);
        out.extend_from_slice(&packed);
        return out;
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(Codec::Raw as u8);
    out.extend_from_slice(bytes);
    out
}

/// The blob bytes of a stored value whose original length is `len`.
pub fn decode_blob_value(id: &retrace_events::BlobId, len: u32, value: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |why: String| Error::Corrupt {
        what: format!("blob {id}: {why}"),
    };
    match value.split_first() {
        Some((0, raw)) => Ok(raw.to_vec()),
        Some((1, packed)) => {
            // The buffer is sized from `len`; a damaged one must not allocate gigabytes, so
            // it has to agree with the size the zstd frame's own header states.
            if !matches!(zstd::zstd_safe::get_frame_content_size(packed), Ok(Some(n)) if n == u64::from(len))
            {
                return Err(corrupt(format!(
                    "its compressed frame does not declare the recorded length of {len} bytes"
                )));
            }
            decompress(packed, len as usize)
                .map_err(|e| corrupt(format!("its stored bytes do not decompress ({e})")))
        }
        Some((codec, _)) => Err(corrupt(format!("unknown codec {codec}"))),
        None => Err(corrupt("empty stored value".to_owned())),
    }
}

/// One record of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A blob: its id and stored value (see [`encode_blob_value`]), and its length.
    Blob {
        /// Blob id.
        id: [u8; 32],
        /// Length before encoding.
        len: u32,
        /// Stored value.
        value: &'a [u8],
    },
    /// One append: the run, its first seq, and the events as chunks.
    Events {
        /// Run id.
        run: [u8; 16],
        /// Seq of the first event.
        first: u64,
        /// Chunks of at most [`CHUNK_EVENTS`] events.
        chunks: Vec<&'a [u8]>,
    },
    /// A run created (if absent).
    CreateRun {
        /// Run id.
        run: [u8; 16],
        /// Encoded run ref.
        value: &'a [u8],
    },
    /// A run ref overwritten.
    PutRun {
        /// Run id.
        run: [u8; 16],
        /// Encoded run ref.
        value: &'a [u8],
    },
}

const BLOB: u8 = 1;
const EVENTS: u8 = 2;
const CREATE_RUN: u8 = 3;
const PUT_RUN: u8 = 4;

/// Where, in an encoded record, the indexed values start: the blob value, or each chunk.
pub type ValueOffsets = Vec<u32>;

impl<'a> Record<'a> {
    /// The record's bytes and the offsets of its indexed values within them.
    pub fn encode(&self) -> (Vec<u8>, ValueOffsets) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        let at = |out: &Vec<u8>| u32::try_from(out.len()).expect("records are below 4 GiB");
        match self {
            Record::Blob { id, len, value } => {
                out.push(BLOB);
                out.extend_from_slice(id);
                out.extend_from_slice(&len.to_le_bytes());
                offsets.push(at(&out));
                out.extend_from_slice(value);
            }
            Record::Events { run, first, chunks } => {
                out.push(EVENTS);
                out.extend_from_slice(run);
                out.extend_from_slice(&first.to_le_bytes());
                let n = u32::try_from(chunks.len()).expect("chunks fit u32");
                out.extend_from_slice(&n.to_le_bytes());
                for chunk in chunks {
                    let len = u32::try_from(chunk.len()).expect("chunks are below 4 GiB");
                    out.extend_from_slice(&len.to_le_bytes());
                    offsets.push(at(&out));
                    out.extend_from_slice(chunk);
                }
            }
            Record::CreateRun { run, value } | Record::PutRun { run, value } => {
                out.push(if matches!(self, Record::CreateRun { .. }) {
                    CREATE_RUN
                } else {
                    PUT_RUN
                });
                out.extend_from_slice(run);
                out.extend_from_slice(value);
            }
        }
        (out, offsets)
    }

    /// Decode a record's bytes; `None` if they are not a record.
    pub fn decode(bytes: &'a [u8]) -> Option<(Self, ValueOffsets)> {
        let mut at = 1usize;
        let mut take = |n: usize| -> Option<(&'a [u8], u32)> {
            let slice = bytes.get(at..at.checked_add(n)?)?;
            let offset = u32::try_from(at).ok()?;
            at += n;
            Some((slice, offset))
        };
        let kind = *bytes.first()?;
        let rest = |taken: usize| bytes.len().saturating_sub(taken);
        let u32_of = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
        match kind {
            BLOB => {
                let id = take(32)?.0.try_into().ok()?;
                let len = u32_of(take(4)?.0)?;
                let (value, offset) = take(rest(37))?;
                Some((Record::Blob { id, len, value }, vec![offset]))
            }
            EVENTS => {
                let run = take(16)?.0.try_into().ok()?;
                let first = u64::from_le_bytes(take(8)?.0.try_into().ok()?);
                let n = u32_of(take(4)?.0)?;
                let mut chunks = Vec::new();
                let mut offsets = Vec::new();
                for _ in 0..n {
                    let len = u32_of(take(4)?.0)?;
                    let (chunk, offset) = take(len as usize)?;
                    offsets.push(offset);
                    chunks.push(chunk);
                }
                // nothing may follow the last chunk
                let end = offsets
                    .last()
                    .map_or(29, |&o| o as usize + chunks.last().map_or(0, |c| c.len()));
                (end == bytes.len()).then_some((Record::Events { run, first, chunks }, offsets))
            }
            CREATE_RUN | PUT_RUN => {
                let run = take(16)?.0.try_into().ok()?;
                let value = take(rest(17))?.0;
                let record = if kind == CREATE_RUN {
                    Record::CreateRun { run, value }
                } else {
                    Record::PutRun { run, value }
                };
                Some((record, Vec::new()))
            }
            _ => None,
        }
    }
}

/// Log key of `(run, seq)`: big-endian seq keeps a run's chunks in seq order.
pub fn log_key(run: &RunId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(run.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The first seq of the chunk stored under `key`.
pub fn log_key_seq(key: &[u8]) -> Result<u64> {
    key.get(16..24)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Corrupt {
            what: format!("log key of {} bytes", key.len()),
        })
}

/// Encode consecutive events as a chunk: `count: u32 LE`, then per event `id: [u8; 32]`,
/// `len: u32 LE`, `bytes`.
pub fn encode_chunk<'a>(events: impl ExactSizeIterator<Item = (&'a EventId, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + events.len() * 128);
    let count = u32::try_from(events.len()).expect("chunks hold at most CHUNK_EVENTS events");
    out.extend_from_slice(&count.to_le_bytes());
    for (id, bytes) in events {
        out.extend_from_slice(id.as_bytes());
        let len = u32::try_from(bytes.len()).expect("events are at most MAX_EVENT_BYTES long");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Decode a chunk whose first event has seq `first`.
pub fn decode_chunk(run: &RunId, first: u64, chunk: &[u8]) -> Result<Vec<StoredEvent>> {
    let corrupt = |why: &str| Error::Corrupt {
        what: format!("run {run} log chunk at seq {first}: {why}"),
    };
    let mut rest = chunk;
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad count"))?);
    // each event takes at least its id and length: a count the chunk cannot hold is damage,
    // and must not size an allocation (found by fuzzing)
    if count as usize > (chunk.len() - 4) / (32 + 4) {
        return Err(corrupt("holds fewer events than its count"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let id = EventId::from_slice(take(32)?).ok_or_else(|| corrupt("bad id"))?;
        let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?);
        let bytes = take(len as usize)?.to_vec();
        out.push(StoredEvent {
            seq: first
                .checked_add(i)
                .ok_or_else(|| corrupt("seq past the largest"))?,
            id,
            bytes,
        });
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(out)
}

/// Number of events in a chunk, from its header alone.
pub fn chunk_len(chunk: &[u8]) -> u64 {
    chunk
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// Encode a run ref (its head is not stored: the log holds it).
pub fn encode_run(info: &RunInfo) -> Vec<u8> {
    let stored = RunInfo {
        head: None,
        ..info.clone()
    };
    bincode::encode_to_vec(&stored, bincode::config::standard())
        .expect("encoding a RunInfo into a Vec cannot fail")
}

/// Decode a run ref stored under `id` (head still `None`).
pub fn decode_run(id: &RunId, bytes: &[u8]) -> Result<RunInfo> {
    let corrupt = |why: String| Error::Corrupt {
        what: format!("run ref {id}: {why}"),
    };
    let (info, used): (RunInfo, usize) =
        retrace_events::decode_bounded(bytes).map_err(|e| corrupt(e.to_string()))?;
    if used != bytes.len() || info.id != *id {
        return Err(corrupt("does not match its key".to_owned()));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let run = RunId::from_bytes([4; 16]);
        let ids = [EventId::from_bytes([1; 32]), EventId::from_bytes([2; 32])];
        let bodies: [&[u8]; 2] = [b"first", b""];
        let chunk = encode_chunk(ids.iter().zip(bodies));
        let events = decode_chunk(&run, 10, &chunk).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[1].seq, events[1].id, events[1].bytes.as_slice()),
            (11, ids[1], &b""[..])
        );
        assert_eq!(chunk_len(&chunk), 2);
        assert!(decode_chunk(&run, 10, &chunk[..chunk.len() - 1]).is_err());
        let mut longer = chunk.clone();
        longer.push(0);
        assert!(
            decode_chunk(&run, 10, &longer)
                .unwrap_err()
                .to_string()
                .contains("seq 10")
        );
    }

    #[test]
    fn records_round_trip_with_the_offsets_of_their_values() {
        let chunks: Vec<&[u8]> = vec![b"abc", b"", b"defg"];
        let records = [
            Record::Blob {
                id: [7; 32],
                len: 10,
                value: b"\x00payload",
            },
            Record::Events {
                run: [1; 16],
                first: 42,
                chunks,
            },
            Record::CreateRun {
                run: [2; 16],
                value: b"ref",
            },
            Record::PutRun {
                run: [2; 16],
                value: b"",
            },
        ];
        for record in records {
            let (bytes, offsets) = record.encode();
            let (decoded, read_offsets) = Record::decode(&bytes).unwrap();
            assert_eq!(decoded, record);
            assert_eq!(read_offsets, offsets);
            if let Record::Events { chunks, .. } = &record {
                for (chunk, at) in chunks.iter().zip(&offsets) {
                    assert_eq!(&bytes[*at as usize..*at as usize + chunk.len()], *chunk);
                }
                assert!(Record::decode(&bytes[..bytes.len() - 1]).is_none());
                let mut longer = bytes.clone();
                longer.push(0);
                assert!(Record::decode(&longer).is_none());
            }
        }
        assert!(Record::decode(&[9, 1, 2]).is_none());
    }

    #[test]
    fn blob_values_compress_text_and_keep_small_or_random_bytes_raw() {
        let id = retrace_events::BlobId::from_bytes([0; 32]);
        let text = "the model reads a file and writes a summary ".repeat(30);
        let packed = encode_blob_value(text.as_bytes());
        assert_eq!(packed[0], Codec::Zstd as u8);
        assert!(packed.len() < text.len() / 4);
        let len = u32::try_from(text.len()).unwrap();
        assert_eq!(
            decode_blob_value(&id, len, &packed).unwrap(),
            text.as_bytes()
        );
        let small = encode_blob_value(b"tiny");
        assert_eq!(small, b"\x00tiny");
        let mut damaged = packed.clone();
        damaged[5] ^= 0xff;
        let err = decode_blob_value(&id, len, &damaged);
        assert!(
            err.is_err_and(|e| {
                let e = e.to_string();
                e.contains("do not decompress") || e.contains("does not declare")
            }) || decode_blob_value(&id, len, &damaged).is_ok_and(|b| b != text.as_bytes())
        );
        // a damaged length sizes no buffer: it must be the one the frame states
        let err = decode_blob_value(&id, u32::MAX, &packed).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not declare the recorded length of 4294967295 bytes"),
            "{err}"
        );
    }
}
