//! Helpers shared by retrace's integration tests and their helper programs.
//!
//! The test binaries live in `tests/tests/` (one per area, see `Cargo.toml`); programs the
//! tests start as real child processes live in `src/bin/`.

use retrace_events::RunId;

/// The runs the crash appender writes to: fixed ids so the parent test can check them.
pub fn crash_runs() -> [RunId; 3] {
    [1u8, 2, 3].map(|n| RunId::from_bytes([n; 16]))
}

/// Events per append in the crash appender's third run: more than one log chunk, so the
/// crash test checks that a multi-chunk append is all-or-nothing.
pub const LARGE_APPEND: u64 = 300;

/// Payload size of each event written by the crash appender (the benchmark's size too).
pub const PAYLOAD_BYTES: usize = 1024;

/// Deterministic 1 KiB payload for `(run, seq)`: distinct per event, so every blob is new.
pub fn payload(run: &RunId, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAYLOAD_BYTES);
    let mut key = run.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_le_bytes());
    let seed = *retrace_events::BlobId::of(&key).as_bytes();
    while out.len() < PAYLOAD_BYTES {
        out.extend_from_slice(&seed);
    }
    out.truncate(PAYLOAD_BYTES);
    out
}

/// Damage a closed sled store the way a bad disk or an attacker would: straight through the
/// sled files, bypassing every retrace check.
pub mod loopback;

/// Every file under `dir`, raw bytes, searched for `needle`; the files that hold it.
pub fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .expect("read")
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                out.push(path);
            }
        }
    }
    out
}

pub mod tamper {
    use std::path::Path;
    use std::time::Duration;

    use retrace_events::{BlobId, RunId};
    use retrace_store_sled::layout;

    /// Open the sled database of the store in `dir` directly. Retries while sled's IO pool
    /// still holds the lock of a store closed a moment ago. (A store closed cleanly has an
    /// empty write-ahead log, so sled holds everything.)
    pub fn open_raw(dir: &Path) -> sled::Db {
        let db_dir = dir.join(layout::SLED_DIR);
        for _ in 0..100 {
            if let Ok(db) = layout::sled_config(&db_dir).open() {
                return db;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        layout::sled_config(&db_dir)
            .open()
            .expect("open sled files")
    }

    /// Flip one bit of byte `at` (clamped) of the stored event at `seq` of `run`'s own log.
    pub fn flip_event_byte(dir: &Path, run: &RunId, seq: u64, at: usize) {
        let db = open_raw(dir);
        let log = db.open_tree(layout::LOG).expect("log tree");
        let (key, chunk) = log
            .range(layout::log_key(run, 0)..=layout::log_key(run, seq))
            .next_back()
            .expect("run has a chunk at or before seq")
            .expect("read chunk");
        let first = layout::log_key_seq(&key).expect("key");
        let mut events = layout::decode_chunk(run, first, &chunk).expect("chunk decodes");
        let event = events
            .iter_mut()
            .find(|e| e.seq == seq)
            .expect("seq in chunk");
        let at = at.min(event.bytes.len() - 1);
        event.bytes[at] ^= 0x01;
        let damaged = layout::encode_chunk(events.iter().map(|e| (&e.id, e.bytes.as_slice())));
        log.insert(key, damaged).expect("write chunk");
        db.flush().expect("flush");
    }

    /// Flip one bit of byte `at` (clamped) of a stored blob.
    pub fn flip_blob_byte(dir: &Path, blob: &BlobId, at: usize) {
        let db = open_raw(dir);
        let blobs = db.open_tree(layout::BLOBS).expect("blobs tree");
        let mut value = blobs
            .get(blob.as_bytes())
            .expect("read")
            .expect("blob stored")
            .to_vec();
        let at = at.min(value.len() - 1);
        value[at] ^= 0x01;
        blobs.insert(blob.as_bytes(), value).expect("write blob");
        db.flush().expect("flush");
    }
}
