//! `fuzz-seeds STORE OUT`: the binary part of the seed corpus, taken from a real store (one
//! that `retrace run` wrote; `fuzz/seed.sh` makes it): segment files, index tables, event
//! bytes, snapshots, request records, a bundle of its runs, and the daemon's wire calls and
//! replies carrying them. Each seed is written to `OUT/<target>/<blake3 of it>`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use retrace_events::{EventKind, RunId};
use retrace_serve::wire::{Call, Reply, config};
use retrace_store::Store;
use retrace_store_sled::SledStore;
use retrace_store_sled::layout::{INDEX_DIR, SEGMENTS_DIR};

/// Seeds longer than this are cut (the fuzzer's inputs stay small and fast).
const MAX_SEED: usize = 64 << 10;

struct Out(PathBuf);

impl Out {
    fn seed(&self, target: &str, bytes: &[u8]) -> Result<()> {
        let bytes = &bytes[..bytes.len().min(MAX_SEED)];
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir)?;
        let name = format!("seed-{}", &blake3::hash(bytes).to_hex()[..16]);
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    }
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    out.sort();
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store_dir, out] = args.as_slice() else {
        anyhow::bail!("usage: fuzz-seeds STORE OUT");
    };
    let (store_dir, out) = (Path::new(store_dir), Out(PathBuf::from(out)));
    for file in files_in(&store_dir.join(SEGMENTS_DIR))? {
        let bytes = std::fs::read(&file)?;
        out.seed("segment_records", &bytes)?;
        // and record bodies on their own (past the check a mutant would fail)
        let mut found = Vec::new();
        retrace_store_sled::segments::scan(0, &bytes, 0, &mut found);
        for record in found.iter().step_by(7).take(16) {
            out.seed("segment_records", &record.body)?;
        }
    }
    for file in files_in(&store_dir.join(INDEX_DIR))? {
        out.seed("index_table", &std::fs::read(&file)?)?;
    }
    let store = SledStore::open(store_dir).context("open the store")?;
    let runs = store.runs()?;
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    let mut bundle = Vec::new();
    retrace_eval::bundle::export(&store, &ids, false, &mut bundle)?;
    out.seed("bundle", &bundle)?;
    out.seed("bundle", &zstd::decode_all(&bundle[..])?)?;
    for run in &runs {
        // a snapshot's body: the state's canonical bytes, after its 74-byte header
        let mut state = retrace_replay::State::default();
        let mut last = None;
        retrace_replay::fold_stored(
            &store,
            &run.id,
            &mut state,
            run.len().saturating_sub(1),
            |_, id| {
                last = Some(*id);
                Ok(())
            },
        )?;
        if let Some(at) = last {
            out.seed(
                "snapshot",
                &retrace_replay::encode_snapshot(&at, &state)[74..],
            )?;
        }
    }
    out.seed(
        "wire",
        &bincode::encode_to_vec(
            Ok::<_, retrace_serve::wire::WireError>(Reply::Runs(runs.clone())),
            config(),
        )?,
    )?;
    for run in &runs {
        run_seeds(&store, run, &out)?;
    }
    Ok(())
}

/// Seeds from one run: its event bytes, wire calls and replies carrying its events, and its
/// request records (each with the records it builds on).
fn run_seeds(store: &SledStore, run: &retrace_store::RunInfo, out: &Out) -> Result<()> {
    let len = run.len();
    let events = store.own_events(&run.id, 0..=len.saturating_sub(1).min(40))?;
    for stored in events.iter().take(12) {
        out.seed("event_codec", &stored.bytes)?;
    }
    let decoded: Vec<_> = events
        .iter()
        .filter_map(|e| retrace_events::decode_event(&e.bytes).ok())
        .collect();
    out.seed(
        "wire",
        &bincode::encode_to_vec(
            Call::Append {
                run: run.id,
                expected: None,
                events: decoded.iter().take(6).cloned().collect(),
            },
            config(),
        )?,
    )?;
    let reply: Reply = Reply::Events(
        events
            .iter()
            .take(6)
            .map(|e| (e.seq, e.id, e.bytes.clone()))
            .collect(),
    );
    out.seed(
        "wire",
        &bincode::encode_to_vec(Ok::<_, retrace_serve::wire::WireError>(reply), config())?,
    )?;
    // request records: a record and the records it builds on, cut by 0xff 0xfe
    for event in decoded.iter().take(30) {
        if let EventKind::ModelRequested { request, .. } = &event.kind {
            let mut joined = Vec::new();
            let mut next = Some(*request);
            while let Some(blob) = next.take() {
                let Some(bytes) = store.blob(&blob)? else {
                    break;
                };
                if !joined.is_empty() {
                    joined.extend_from_slice(&[0xff, 0xfe]);
                }
                joined.extend_from_slice(&bytes);
                next = retrace_replay::request::reconstruct(store, &blob)
                    .ok()
                    .and_then(|(record, _)| record.base);
            }
            out.seed("request_record", &joined)?;
        }
    }
    Ok(())
}
