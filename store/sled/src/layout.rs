//! On-disk layout of a store directory: `sled/` (the sled database) and `wal` (retrace's
//! write-ahead log, see the `wal` module); in the database, these trees:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `log` | RunId ++ first seq (big-endian u64) | one append's events: a [chunk](encode_chunk) |
//! | `blobs` | BlobId (32 bytes) | blob bytes |
//! | `runs` | RunId (16 bytes) | run ref: bincode of `RunInfo`, head left out |
//! | `snapshots` | EventId | snapshot bytes (a cache; may be dropped) |
//! | `meta` | `format` | [`format_value`] |
//!
//! Why chunks, not one entry per event: sled costs about 17 µs per written entry on the
//! reference machine whatever the entry's size (see `benches/benches/store.rs`), so an
//! append writes one `log` entry for all its events (split every [`CHUNK_EVENTS`]). The
//! chunk insert is a single atomic write, which makes it the commit point: a run's head is
//! the last event of its last chunk, so there is no separate head to keep in step. A seq
//! lookup is one short range scan; a sequential read is a scan over chunks.

use retrace_events::{EventId, RunId};
use retrace_store::{Error, Result, RunInfo, StoredEvent};

/// Subdirectory holding the sled database.
pub const SLED_DIR: &str = "sled";
/// The write-ahead log file.
pub const WAL_FILE: &str = "wal";

/// sled's segment (and IO buffer) size. Opening reads back up to a segment of sled's log,
/// so smaller opens faster, while small segments waste space. Measured (open + state at
/// head; disk per event with a 1 KiB blob): 1 MiB ≈ 5 ms and 3.1 KB; 4 MiB ≈ 8 ms and
/// 1.2 KB; 16 MiB ≈ 25–35 ms and 1.2 KB. Append throughput showed no difference beyond the
/// machine's noise. sled refuses to reopen a database with another value.
pub const SEGMENT_BYTES: usize = 4 << 20;

/// The sled configuration of the database in `sled_dir`. Durability comes from the WAL and
/// checkpoints, so sled's background flusher is off.
pub fn sled_config(sled_dir: &std::path::Path) -> sled::Config {
    sled::Config::new()
        .path(sled_dir)
        .flush_every_ms(None)
        .segment_size(SEGMENT_BYTES)
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

/// Tree of run logs (chunks of events by run and first seq).
pub const LOG: &str = "log";
/// Tree of blobs by id.
pub const BLOBS: &str = "blobs";
/// Tree of run refs by run id.
pub const RUNS: &str = "runs";
/// Tree of snapshots by event id.
pub const SNAPSHOTS: &str = "snapshots";
/// Tree of store metadata.
pub const META: &str = "meta";
/// Key in [`META`] holding the format.
pub const FORMAT_KEY: &str = "format";
/// Most events in one chunk; bounds what a single-seq lookup reads.
pub const CHUNK_EVENTS: usize = 256;

/// What [`FORMAT_KEY`] holds for this build: the layout and the event format version.
pub fn format_value() -> String {
    format!("retrace-sled-1/events-{}", retrace_events::FORMAT_VERSION)
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
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let id = EventId::from_slice(take(32)?).ok_or_else(|| corrupt("bad id"))?;
        let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?);
        let bytes = take(len as usize)?.to_vec();
        out.push(StoredEvent {
            seq: first + i,
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
        bincode::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| corrupt(e.to_string()))?;
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
}
