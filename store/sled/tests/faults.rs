//! I/O fault injection: the store's file operations fail, one at a time, at every point a
//! workload passes, in every way a disk fails (`EIO`, `ENOSPC`, a short write), through the
//! seam of `retrace_store_sled::files`.
//!
//! After each injected fault: the operation that met it reports an error (never a panic);
//! once the fault is lifted the store reopens, holds every acknowledged write, resumes the
//! workload to exactly the state of a run that met no fault, and every run verifies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use retrace_events::{BlobId, Head, RunId, Timestamp};
use retrace_store::conformance::{chain_after, run_id};
use retrace_store::{ForkOrigin, NewRun, Result, Store, VerifyOptions, verify_run};
use retrace_store_sled::files::{Fault, Faults, Op};
use retrace_store_sled::{Options, SledStore};

/// Small checkpoints and segments, so that one short workload passes every kind of point:
/// records, zero-fill, group commits, segment rolls, table writes, merges and commits.
fn options(faults: Option<Arc<Faults>>) -> Options {
    Options {
        checkpoint_bytes: 6 << 10,
        segment_bytes: 16 << 10,
        faults,
    }
}

/// Events each of the two root runs reaches; the fork branches at seq [`FORK_AT`] of run 1.
const TARGET: u64 = 40;
const FORK_AT: u64 = 9;
const FORK_TARGET: u64 = 24;

fn roots() -> [RunId; 2] {
    [run_id(1), run_id(2)]
}

fn fork_id() -> RunId {
    run_id(3)
}

/// A blob of `len` bytes that does not compress, unique to `(run, seq)`.
fn extra_blob(run: &RunId, seq: u64) -> Vec<u8> {
    let len = if seq % 7 == 3 { 3000 } else { 200 };
    let mut hasher = blake3::Hasher::new();
    hasher.update(run.as_bytes());
    hasher.update(&seq.to_le_bytes());
    let mut out = vec![0u8; len];
    hasher.finalize_xof().fill(&mut out);
    out
}

/// What the store acknowledged so far: heads of appends that returned `Ok`, and the meta
/// values of `set_run_meta` calls that did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Acked {
    heads: BTreeMap<RunId, Head>,
    meta: BTreeMap<RunId, String>,
    blobs: BTreeSet<BlobId>,
}

/// One append to `run` continuing it towards `target`: the events' blobs and an extra one,
/// then the events (a batch of 1–4); whether there was anything to do.
fn step(store: &SledStore, run: RunId, target: u64, acked: &mut Acked) -> Result<bool> {
    let info = store.require_run(&run)?;
    let next = info.len();
    if next >= target {
        return Ok(false);
    }
    let take = (1 + next % 4).min(target - next);
    let events = chain_after(run, info.head, take);
    let mut blobs = Vec::new();
    for event in &events {
        // the sample kinds refer to blake3(seq bytes)
        if !event.kind.blobs().is_empty() {
            blobs.push(store.put_blob(&event.seq.to_le_bytes())?);
        }
        blobs.push(store.put_blob(&extra_blob(&run, event.seq))?);
    }
    let head = store.append(&run, info.head.map(|h| h.id), &events)?;
    acked.heads.insert(run, head);
    acked.blobs.extend(blobs); // durable with the append
    Ok(true)
}

/// Drive the workload from whatever the store holds to its end (every root run at
/// [`TARGET`], the fork at [`FORK_TARGET`], a meta label per round), or until `stop_at`
/// events in run 1. Idempotent: it resumes any store this workload wrote.
fn drive(store: &SledStore, stop_at: u64, acked: &mut Acked) -> Result<()> {
    for (i, run) in roots().into_iter().enumerate() {
        if store.run(&run)?.is_none() {
            store.create_run(NewRun::new(run, Timestamp(i as u64)))?;
        }
    }
    loop {
        let mut progressed = false;
        for run in roots() {
            progressed |= step(store, run, TARGET.min(stop_at), acked)?;
        }
        let one = store.require_run(&roots()[0])?;
        if one.len() > FORK_AT {
            if store.run(&fork_id())?.is_none() {
                let shared = &store.own_events(&roots()[0], FORK_AT..=FORK_AT)?[0];
                let at = Head {
                    id: shared.id,
                    seq: shared.seq,
                };
                let origin = ForkOrigin {
                    run: roots()[0],
                    at,
                };
                store.create_run(NewRun::fork(fork_id(), Timestamp(9), origin))?;
            }
            progressed |= step(store, fork_id(), FORK_TARGET.min(stop_at), acked)?;
        }
        // (also after the last round: an append that failed may still have landed)
        let value = format!("{}", store.require_run(&roots()[0])?.len());
        if store.require_run(&roots()[1])?.meta.get("run1-len") != Some(&value) {
            store.set_run_meta(&roots()[1], "run1-len", Some(&value))?;
            acked.meta.insert(roots()[1], value);
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// The store's final state: each run's head and meta.
fn final_state(store: &SledStore) -> BTreeMap<RunId, (Option<Head>, BTreeMap<String, String>)> {
    store
        .runs()
        .expect("in a fault test")
        .into_iter()
        .map(|r| (r.id, (r.head, r.meta)))
        .collect()
}

/// The workload in two halves with a close and reopen between them, under `faults`.
fn workload(dir: &Path, faults: &Arc<Faults>, acked: &mut Acked) -> Result<()> {
    let store = SledStore::open_with(dir, options(Some(Arc::clone(faults))))?;
    drive(&store, TARGET / 2, acked)?;
    drop(store); // the closing checkpoint: segment trimmed, tables written and committed
    let store = SledStore::open_with(dir, options(Some(Arc::clone(faults))))?;
    drive(&store, u64::MAX, acked)
}

/// Sites where a fault need not fail the call that met it: a merged table that could not
/// be removed is garbage a later open removes, and the closing checkpoint runs in `Drop`
/// (a failed one leaves the next open to rescan).
fn may_pass_silently(site: &str, in_close: bool) -> bool {
    site == "retire merged table" || in_close
}

/// Every acknowledged write is in `store`.
fn check_acked(store: &SledStore, acked: &Acked, what: &str) {
    for (run, head) in &acked.heads {
        let at = store
            .stored_events(run, head.seq..=head.seq)
            .expect("in a fault test");
        assert_eq!(
            at.first().map(|e| Head {
                id: e.id,
                seq: e.seq
            }),
            Some(*head),
            "{what}: acknowledged head of run {run} lost"
        );
    }
    for blob in &acked.blobs {
        assert!(
            store.blob(blob).expect("in a fault test").is_some(),
            "{what}: acknowledged blob {blob} lost"
        );
    }
    for (run, value) in &acked.meta {
        let info = store.require_run(run).expect("in a fault test");
        let now: u64 = info.meta["run1-len"].parse().expect("in a fault test");
        assert!(
            now >= value.parse::<u64>().expect("in a fault test"),
            "{what}: acknowledged meta of run {run} went back from {value} to {now}"
        );
    }
}

type Expected = BTreeMap<RunId, (Option<Head>, BTreeMap<String, String>)>;

/// One injected fault: fail operation `n` with `fault`, then lift it and recover.
fn scenario(n: u64, fault: Fault, expected: &Expected, close_points: &BTreeSet<u64>) {
    let dir = tempfile::tempdir().expect("in a fault test");
    let faults = Faults::fail_at(n, fault);
    let mut acked = Acked::default();
    let result = workload(dir.path(), &faults, &mut acked);
    let tripped = faults.tripped().unwrap_or_else(|| {
        panic!("point {n} was never reached (the workload is not deterministic)")
    });
    let what = format!("{fault:?} at point {n}, {tripped}");
    match &result {
        Err(e) => {
            let message = format!(
                "{e}: {}",
                std::error::Error::source(e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            let errno = if fault == Fault::Eio {
                "Input/output error"
            } else {
                "No space left on device"
            };
            assert!(
                message.contains(errno) || message.contains("reopen the store"),
                "{what}: the error does not say what failed: {message}"
            );
        }
        Ok(()) => assert!(
            may_pass_silently(tripped.site, close_points.contains(&n)),
            "{what}: the workload succeeded although an operation failed"
        ),
    }
    faults.lift();
    let store = SledStore::open_with(dir.path(), options(None))
        .unwrap_or_else(|e| panic!("{what}: reopening after the fault was lifted: {e}"));
    check_acked(&store, &acked, &what);
    drive(&store, u64::MAX, &mut acked).unwrap_or_else(|e| panic!("{what}: resuming: {e}"));
    assert_eq!(
        &final_state(&store),
        expected,
        "{what}: resumed to another state"
    );
    for run in store.runs().expect("in a fault test") {
        let report =
            verify_run(&store, &run.id, VerifyOptions::default()).expect("in a fault test");
        assert!(
            report.is_ok(),
            "{what}: run {} fails verification: {:?}",
            run.id,
            report.problem
        );
    }
}

#[test]
fn every_write_and_sync_point_fails_in_every_way_and_nothing_acknowledged_is_lost() {
    // The fault-free run: the points the workload passes, and the state it ends in.
    let dir = tempfile::tempdir().unwrap();
    let counting = Faults::counting();
    let mut acked = Acked::default();
    let store = SledStore::open_with(dir.path(), options(Some(Arc::clone(&counting)))).unwrap();
    drive(&store, TARGET / 2, &mut acked).unwrap();
    let close_from = counting.seen() + 1;
    drop(store);
    let mut close_points: BTreeSet<u64> = (close_from..=counting.seen()).collect();
    let store = SledStore::open_with(dir.path(), options(Some(Arc::clone(&counting)))).unwrap();
    drive(&store, u64::MAX, &mut acked).unwrap();
    let expected = final_state(&store);
    let close_from = counting.seen() + 1;
    drop(store);
    close_points.extend(close_from..=counting.seen());
    let points = counting.points();
    let sites: BTreeSet<(Op, &str)> = points.iter().map(|p| (p.op, p.site)).collect();
    for site in [
        (Op::Write, "segment record"),
        (Op::Write, "segment zero-fill"),
        (Op::Sync, "group commit"),
        (Op::Truncate, "close segment"),
        (Op::Sync, "close segment"),
        (Op::Create, "new segment"),
        (Op::SyncDir, "new segment"),
        (Op::Sync, "checkpoint sync"),
        (Op::Create, "new index table"),
        (Op::Write, "index table"),
        (Op::Sync, "index table"),
        (Op::SyncDir, "index table"),
        (Op::Remove, "retire merged table"),
        (Op::Commit, "checkpoint commit"),
    ] {
        assert!(
            sites.contains(&site),
            "the workload never passes {site:?}: {sites:?}"
        );
    }

    let mut cases = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let n = i as u64 + 1;
        cases.push((n, Fault::Eio));
        cases.push((n, Fault::Enospc));
        if point.op == Op::Write {
            cases.push((n, Fault::ShortWrite));
        }
    }
    eprintln!(
        "fault injection: {} points ({} distinct sites), {} cases",
        points.len(),
        sites.len(),
        cases.len()
    );
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Some(&(n, fault)) = cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    scenario(n, fault, &expected, &close_points);
                }
            });
        }
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("in a fault test");
    for entry in std::fs::read_dir(from).expect("in a fault test") {
        let entry = entry.expect("in a fault test");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("in a fault test").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("in a fault test");
        }
    }
}

#[test]
fn every_write_of_recovery_on_open_fails_in_every_way_and_the_next_open_recovers() {
    use retrace_store_sled::layout::{INDEX_DIR, SEGMENTS_DIR};
    // A store as a crash leaves it: records past the last checkpoint (over two segments), a
    // zero-filled tail past the last record, an empty segment begun after it, and an index
    // table no checkpoint recorded.
    let crashed = tempfile::tempdir().unwrap();
    let expected = {
        let store = SledStore::open_with(crashed.path(), options(None)).unwrap();
        drive(&store, TARGET / 2, &mut Acked::default()).unwrap();
        drop(store);
        let no_checkpoints = Options {
            checkpoint_bytes: u64::MAX,
            ..options(None)
        };
        let store = SledStore::open_with(crashed.path(), no_checkpoints).unwrap();
        drive(&store, u64::MAX, &mut Acked::default()).unwrap();
        let state = final_state(&store);
        // a crash: no closing checkpoint (sled's lock goes with the copies' other inode)
        std::mem::forget(store);
        state
    };
    let segments = crashed.path().join(SEGMENTS_DIR);
    let last = retrace_store_sled::segments::segment_numbers(&segments)
        .unwrap()
        .pop()
        .unwrap();
    let last_path = retrace_store_sled::segments::segment_path(&segments, last);
    let size = std::fs::metadata(&last_path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last_path)
        .unwrap()
        .set_len(size + 8192)
        .unwrap();
    std::fs::File::create(retrace_store_sled::segments::segment_path(
        &segments,
        last + 1,
    ))
    .unwrap();
    std::fs::write(crashed.path().join(INDEX_DIR).join("99999999.idx"), b"torn").unwrap();

    let counting = Faults::counting();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(crashed.path(), copy.path());
    drop(SledStore::open_with(copy.path(), options(Some(Arc::clone(&counting)))).unwrap());
    let points = counting.points();
    let sites: BTreeSet<&str> = points.iter().map(|p| p.site).collect();
    assert!(
        sites.is_superset(&BTreeSet::from([
            "recovery: unrecorded table",
            "recovery: empty later segment",
            "recovery: cut a torn tail",
            "recovery: rewrite the scanned tail",
        ])),
        "{sites:?}"
    );
    // the points of the open itself, not of the closing checkpoint
    let open_points = points
        .iter()
        .take_while(|p| p.site.starts_with("recovery"))
        .count();
    assert_eq!(open_points, 6, "{points:?}");
    for (i, point) in points[..open_points].iter().enumerate() {
        let n = i as u64 + 1;
        for fault in [Fault::Eio, Fault::Enospc] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(crashed.path(), dir.path());
            let faults = Faults::fail_at(n, fault);
            let what = format!("{fault:?} at recovery point {n} ({point})");
            let err = SledStore::open_with(dir.path(), options(Some(Arc::clone(&faults))))
                .err()
                .unwrap_or_else(|| panic!("{what}: the open succeeded"));
            let message = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(message.contains("os error"), "{what}: {message}");
            faults.lift();
            let store = SledStore::open_with(dir.path(), options(None))
                .unwrap_or_else(|e| panic!("{what}: the next open: {e}"));
            assert_eq!(final_state(&store), expected, "{what}");
            for run in store.runs().unwrap() {
                let report = verify_run(&store, &run.id, VerifyOptions::default()).unwrap();
                assert!(report.is_ok(), "{what}: {:?}", report.problem);
            }
        }
    }
}

/// Runs of the concurrent test, and the events each reaches.
const THREADS: u64 = 4;
const CONCURRENT_TARGET: u64 = 30;

/// `THREADS` threads append to a run each, one event per call, while small checkpoints sync
/// the segment under the writer lock between their group commits; under `faults`. Each
/// thread stops at its first error. The heads acknowledged.
fn concurrent_workload(dir: &Path, faults: Option<Arc<Faults>>) -> BTreeMap<RunId, Head> {
    let options = Options {
        checkpoint_bytes: 1 << 10,
        segment_bytes: 16 << 10,
        faults,
    };
    let Ok(store) = SledStore::open_with(dir, options) else {
        return BTreeMap::new();
    };
    let acked = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, acked) = (&store, &acked);
            s.spawn(move || {
                let run = run_id(100 + t);
                if store.create_run(NewRun::new(run, Timestamp(t))).is_err() {
                    return;
                }
                let mut head: Option<Head> = None;
                while head.map_or(0, |h| h.seq + 1) < CONCURRENT_TARGET {
                    let events = chain_after(run, head, 1);
                    // the sample kinds refer to blake3(seq bytes)
                    let blob = events[0].seq.to_le_bytes();
                    if !events[0].kind.blobs().is_empty() && store.put_blob(&blob).is_err() {
                        return;
                    }
                    match store.append(&run, head.map(|h| h.id), &events) {
                        Ok(h) => {
                            head = Some(h);
                            acked.lock().expect("acked").insert(run, h);
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    acked.into_inner().expect("acked")
}

/// Linux reports a writeback error to one `fsync` of a file only: a checkpoint's sync that
/// succeeds after a group commit's failed must not acknowledge what that one lost. With four
/// threads appending and checkpoints syncing between their group commits, each sync point
/// of a fault-free run fails in turn (`EIO`); nothing acknowledged is lost, and every run
/// verifies.
#[test]
fn a_failed_sync_among_concurrent_appenders_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("in a fault test");
    let counting = Faults::counting();
    let clean = concurrent_workload(dir.path(), Some(Arc::clone(&counting)));
    assert_eq!(clean.len() as u64, THREADS, "the fault-free run finished");
    let syncs: Vec<u64> = counting
        .points()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.op == Op::Sync)
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert!(syncs.len() > 20, "only {} syncs", syncs.len());
    for n in syncs {
        let dir = tempfile::tempdir().expect("in a fault test");
        let faults = Faults::fail_at(n, Fault::Eio);
        let acked = concurrent_workload(dir.path(), Some(Arc::clone(&faults)));
        faults.lift();
        let store = SledStore::open_with(dir.path(), options(None))
            .unwrap_or_else(|e| panic!("EIO at point {n}: reopening: {e}"));
        let acked = Acked {
            heads: acked,
            ..Acked::default()
        };
        check_acked(
            &store,
            &acked,
            &format!("EIO at point {n} ({:?})", faults.tripped()),
        );
        for run in store.runs().expect("in a fault test") {
            let report =
                verify_run(&store, &run.id, VerifyOptions::default()).expect("in a fault test");
            assert!(
                report.is_ok(),
                "EIO at point {n}: run {} fails verification",
                run.id
            );
        }
    }
}
