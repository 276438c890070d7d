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
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::time::Duration;

    use retrace_events::{BlobId, RunId};
    use retrace_store_sled::layout::{self, Loc};
    use retrace_store_sled::segments::segment_path;

    /// Open the sled database of the store in `dir` directly. Retries while sled's IO pool
    /// still holds the lock of a store closed a moment ago. (A store closed cleanly has
    /// checkpointed, so sled's index covers every record.)
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

    /// Flip one bit of the byte at `offset` of segment file `segment` of the store in `dir`.
    fn flip(dir: &Path, at: layout::Pos) {
        let path = segment_path(&dir.join(layout::SEGMENTS_DIR), at.segment);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open segment");
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at.offset).expect("read byte");
        byte[0] ^= 0x01;
        file.write_all_at(&byte, at.offset).expect("write byte");
        file.sync_all().expect("sync");
    }

    /// Flip one bit of byte `at` (clamped) of the stored event at `seq` of `run`'s own log,
    /// in its segment file.
    pub fn flip_event_byte(dir: &Path, run: &RunId, seq: u64, at: usize) {
        let (key, loc) = {
            let db = open_raw(dir);
            let log = db.open_tree(layout::LOG).expect("log tree");
            let (key, value) = log
                .range(layout::log_key(run, 0)..=layout::log_key(run, seq))
                .next_back()
                .expect("run has a chunk at or before seq")
                .expect("read index");
            (key, Loc::decode(&value, || "chunk".into()).expect("loc"))
        };
        let first = layout::log_key_seq(&key).expect("key");
        let path = segment_path(&dir.join(layout::SEGMENTS_DIR), loc.at.segment);
        let mut chunk = vec![0u8; loc.len as usize];
        std::fs::File::open(path)
            .expect("segment")
            .read_exact_at(&mut chunk, loc.at.offset)
            .expect("read chunk");
        // walk the chunk (count, then id | len | bytes per event) to the event's bytes
        let mut offset = 4u64;
        for event in layout::decode_chunk(run, first, &chunk).expect("chunk decodes") {
            offset += 32 + 4;
            if event.seq == seq {
                let at = at.min(event.bytes.len() - 1) as u64;
                flip(
                    dir,
                    layout::Pos {
                        segment: loc.at.segment,
                        offset: loc.at.offset + offset + at,
                    },
                );
                return;
            }
            offset += event.bytes.len() as u64;
        }
        panic!("seq {seq} is not in its chunk");
    }

    /// Flip one bit of byte `at` (clamped) of a stored blob's value, in its segment file
    /// (after the codec byte: for a blob stored raw, a byte of the blob itself).
    pub fn flip_blob_byte(dir: &Path, blob: &BlobId, at: usize) {
        let loc = {
            let db = open_raw(dir);
            let blobs = db.open_tree(layout::BLOBS).expect("blobs tree");
            let value = blobs
                .get(blob.as_bytes())
                .expect("read")
                .expect("blob stored");
            Loc::decode(&value, || "blob".into()).expect("loc")
        };
        let at = at.min(loc.len as usize - 2) as u64;
        flip(
            dir,
            layout::Pos {
                segment: loc.at.segment,
                offset: loc.at.offset + 1 + at,
            },
        );
    }
}
