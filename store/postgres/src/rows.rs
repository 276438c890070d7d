//! Between rows and retrace's types: ids as `bytea`, u64 as `bigint`, labels as `jsonb`,
//! blobs compressed where it pays.

use std::collections::BTreeMap;

use retrace_events::{BlobId, EventId, Head, RunId, Timestamp};
use retrace_store::{Error, ForkOrigin, Result, RunInfo};
use tokio_postgres::Row;

/// The columns [`run_info`] reads, in order.
pub(crate) const RUN_COLUMNS: &str =
    "id, head_seq, head_id, origin_run, origin_seq, origin_id, created_at, meta::text";

/// A `u64` as PostgreSQL's `bigint`.
pub(crate) fn int(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Corrupt {
        what: format!("{what} {n} does not fit PostgreSQL's bigint"),
    })
}

/// A `bigint` read back as `u64`.
pub(crate) fn uint(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::Corrupt {
        what: format!("{what} is negative ({n}) in PostgreSQL"),
    })
}

fn id_from<T>(bytes: &[u8], what: &str, make: impl Fn(&[u8]) -> Option<T>) -> Result<T> {
    make(bytes).ok_or_else(|| Error::Corrupt {
        what: format!("{what} holds {} bytes, not an id", bytes.len()),
    })
}

pub(crate) fn run_id(bytes: &[u8]) -> Result<RunId> {
    id_from(bytes, "a run id", RunId::from_slice)
}

pub(crate) fn event_id(bytes: &[u8], what: &str) -> Result<EventId> {
    id_from(bytes, what, EventId::from_slice)
}

/// A `retrace_runs` row selected with [`RUN_COLUMNS`].
pub(crate) fn run_info(row: &Row) -> Result<RunInfo> {
    let id = run_id(row.get(0))?;
    let head = match (row.get::<_, Option<i64>>(1), row.get::<_, Option<&[u8]>>(2)) {
        (Some(seq), Some(bytes)) => Some(Head {
            seq: uint(seq, "a head seq")?,
            id: event_id(bytes, "a head")?,
        }),
        _ => None,
    };
    let origin = match (
        row.get::<_, Option<&[u8]>>(3),
        row.get::<_, Option<i64>>(4),
        row.get::<_, Option<&[u8]>>(5),
    ) {
        (Some(run), Some(seq), Some(at)) => Some(ForkOrigin {
            run: run_id(run)?,
            at: Head {
                seq: uint(seq, "a fork origin's seq")?,
                id: event_id(at, "a fork origin")?,
            },
        }),
        _ => None,
    };
    let meta: BTreeMap<String, String> =
        serde_json::from_str(row.get(7)).map_err(|e| Error::Corrupt {
            what: format!("run {id}: labels are not a map of strings: {e}"),
        })?;
    Ok(RunInfo {
        id,
        head,
        origin,
        created_at: Timestamp(uint(row.get(6), "a run's creation time")?),
        meta,
    })
}

/// Blobs shorter than this are stored as they are.
const COMPRESS_FROM: usize = 512;
/// zstd level: fast, and most of what a higher level would save on agent text.
const ZSTD_LEVEL: i32 = 3;
/// Codec column values.
pub(crate) const RAW: i16 = 0;
pub(crate) const ZSTD: i16 = 1;

/// `(codec, stored bytes)` for a blob: zstd when that saves at least an eighth.
pub(crate) fn pack_blob(bytes: &[u8]) -> (i16, Vec<u8>) {
    if bytes.len() >= COMPRESS_FROM
        && let Ok(packed) = zstd::bulk::compress(bytes, ZSTD_LEVEL)
        && packed.len() < bytes.len() - bytes.len() / 8
    {
        return (ZSTD, packed);
    }
    (RAW, bytes.to_vec())
}

/// A blob's bytes from its row (unverified, like every read).
pub(crate) fn unpack_blob(id: &BlobId, codec: i16, len: i64, stored: Vec<u8>) -> Result<Vec<u8>> {
    let corrupt = |why: String| Error::Corrupt {
        what: format!("blob {}: {why}", id.short()),
    };
    match codec {
        RAW => Ok(stored),
        ZSTD => {
            let len = usize::try_from(len).map_err(|_| corrupt(format!("length {len}")))?;
            zstd::bulk::decompress(&stored, len).map_err(|e| corrupt(format!("zstd: {e}")))
        }
        other => Err(corrupt(format!("unknown codec {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_through_both_codecs() {
        let text = "the agent said hello ".repeat(100).into_bytes();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        for bytes in [text, noise, b"short".to_vec(), Vec::new()] {
            let id = BlobId::of(&bytes);
            let (codec, stored) = pack_blob(&bytes);
            let len = i64::try_from(bytes.len()).unwrap();
            assert_eq!(unpack_blob(&id, codec, len, stored).unwrap(), bytes);
        }
        assert_eq!(pack_blob(&"a".repeat(4096).into_bytes()).0, ZSTD);
        let err = unpack_blob(&BlobId::of(b"x"), ZSTD, 10, b"not zstd".to_vec()).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }
}
