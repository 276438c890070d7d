//! Helpers shared by retrace's integration tests and their helper programs.
//!
//! The test binaries live in `tests/tests/` (one per area, see `Cargo.toml`); programs the
//! tests start as real child processes live in `src/bin/`.

use retrace_events::RunId;

/// The runs the crash appender writes to: fixed ids so the parent test can check them.
pub fn crash_runs() -> [RunId; 3] {
    [1u8, 2, 3].map(|n| RunId::from_bytes([n; 16]))
}

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
