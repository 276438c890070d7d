//! On-disk layout of a sled store: tree names, key shapes and value encodings.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `events` | EventId (32 bytes) | canonical event bytes |
//! | `blobs` | BlobId (32 bytes) | blob bytes |
//! | `runs` | RunId (16 bytes) | run ref: bincode of `RunInfo` |
//! | `index` | RunId ++ seq (big-endian u64) | EventId — only seqs the run wrote itself |
//! | `snapshots` | EventId | snapshot bytes (a cache; may be dropped) |
//! | `meta` | `format` | [`format_value`] |

use retrace_events::{EventId, RunId};
use retrace_store::{Error, Result, RunInfo};

/// Tree of events by id.
pub const EVENTS: &str = "events";
/// Tree of blobs by id.
pub const BLOBS: &str = "blobs";
/// Tree of run refs by run id.
pub const RUNS: &str = "runs";
/// Tree mapping (run, seq) to event id.
pub const INDEX: &str = "index";
/// Tree of snapshots by event id.
pub const SNAPSHOTS: &str = "snapshots";
/// Tree of store metadata.
pub const META: &str = "meta";
/// Key in [`META`] holding the format.
pub const FORMAT_KEY: &str = "format";

/// What [`FORMAT_KEY`] holds for this build: the layout and the event format version.
pub fn format_value() -> String {
    format!("retrace-sled-1/events-{}", retrace_events::FORMAT_VERSION)
}

/// Index key of `(run, seq)`: big-endian seq keeps a run's entries in seq order.
pub fn index_key(run: &RunId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(run.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Decode one index entry into `(seq, event id)`.
pub fn decode_index_entry(key: &[u8], value: &[u8]) -> Result<(u64, EventId)> {
    let seq = key
        .get(16..24)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes);
    match (seq, EventId::from_slice(value)) {
        (Some(seq), Some(id)) => Ok((seq, id)),
        _ => Err(Error::Corrupt {
            what: format!(
                "index entry with a {}-byte key and a {}-byte value",
                key.len(),
                value.len()
            ),
        }),
    }
}

/// Encode a run ref.
pub fn encode_run(info: &RunInfo) -> Vec<u8> {
    bincode::encode_to_vec(info, bincode::config::standard())
        .expect("encoding a RunInfo into a Vec cannot fail")
}

/// Decode a run ref stored under `id`.
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
