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

pub mod daemon;
pub mod loopback;
pub mod mcp_http;
pub mod window_server;

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

/// Damage a closed sled store the way a bad disk or an attacker would: straight through the
/// sled files, bypassing every retrace check.
pub mod tamper {
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::time::Duration;

    use retrace_events::{BlobId, RunId};
    use retrace_store_sled::SledStore;
    use retrace_store_sled::layout::{self, Pos};
    use retrace_store_sled::segments::segment_path;

    /// Open the sled database of the store in `dir` directly. Retries while sled's IO pool
    /// still holds the lock of a store closed a moment ago.
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

    /// Ask the (closed) store in `dir` where something lies, then close it again.
    fn locate<T>(dir: &Path, find: impl FnOnce(&SledStore) -> T) -> T {
        for _ in 0..100 {
            match SledStore::open(dir) {
                Ok(store) => return find(&store),
                Err(retrace_store::Error::Locked { .. }) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("open store to locate: {e}"),
            }
        }
        panic!("store stayed locked");
    }

    /// Flip one bit of the byte at `at` in the segment files of the store in `dir`.
    fn flip(dir: &Path, at: Pos) {
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
        let (pos, len) = locate(dir, |s| s.locate_event(run, seq))
            .expect("locate event")
            .expect("event stored");
        flip(
            dir,
            Pos {
                offset: pos.offset + at.min(len - 1) as u64,
                ..pos
            },
        );
    }

    /// Flip one bit of byte `at` (clamped) of a stored blob's value, in its segment file
    /// (after the codec byte: for a blob stored raw, a byte of the blob itself).
    pub fn flip_blob_byte(dir: &Path, blob: &BlobId, at: usize) {
        let loc = locate(dir, |s| s.locate_blob(blob))
            .expect("locate blob")
            .expect("blob stored");
        let at = at.min(loc.len as usize - 2) as u64;
        flip(
            dir,
            Pos {
                offset: loc.at.offset + 1 + at,
                ..loc.at
            },
        );
    }
}

/// The repository's WASM tools (`wasm/`), built for `wasm32-wasip2` once per test process;
/// the directory holding `wordcount.wasm`, `jsonx.wasm` and `misbehave.wasm`. Cargo's lock
/// on `target/wasm` serialises test processes that build at once.
pub fn wasm_tools() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace root")
                .to_path_buf();
            let target = root.join("target/wasm");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--release", "--locked", "--quiet"])
                .args(["--target", "wasm32-wasip2", "--manifest-path"])
                .arg(root.join("wasm/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .expect("run cargo to build the WASM tools");
            assert!(
                status.success(),
                "building the WASM tools failed; is the target installed? `rustup target add wasm32-wasip2`"
            );
            target.join("wasm32-wasip2/release")
        })
        .clone()
}

/// The reference MCP server `@modelcontextprotocol/server-everything`, installed under
/// `tests/mcp` from its lock file (`npm ci`, once per test process when missing): the path of
/// its entry script, to run as `node SCRIPT stdio`.
pub fn mcp_server_everything() -> std::path::PathBuf {
    static INSTALLED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp");
            let script =
                dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
            if !script.exists() {
                let status = std::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .status()
                    .expect("run npm (Node.js is needed for the MCP tests)");
                assert!(status.success(), "npm ci in {} failed", dir.display());
            }
            script
        })
        .clone()
}

/// Pids of live processes whose environment holds `marker` (e.g. `RETRACE_TEST_MARK=…`):
/// how a test finds the servers it started, to kill them or to see they are gone.
pub fn pids_with_env(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"));
        if !zombie && environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// `bytes` decompressed (zstd), for tests that open a bundle to damage it.
pub fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    zstd::decode_all(bytes).expect("zstd data")
}

/// `bytes` compressed (zstd).
pub fn zstd_encode(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("compress")
}

/// The case file `name` of `shared/cases/wire/`: server outputs recorded from real model and
/// MCP servers, kept beside the repository (as CI lays it out). Panics, saying where it
/// looked, when the directory or the file is missing.
pub fn wire_case(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases/wire");
    assert!(
        dir.is_dir(),
        "the wire cases are missing: expected {} (the `shared/` directory beside the clone)",
        dir.display()
    );
    let path = dir.join(name);
    assert!(path.is_file(), "missing case file {}", path.display());
    path
}

/// The bytes of [`wire_case`] `name`.
pub fn wire_case_bytes(name: &str) -> Vec<u8> {
    let path = wire_case(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
