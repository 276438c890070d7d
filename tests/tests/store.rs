//! Store guarantees on the real sled backend that need more than one store handle: crash
//! safety with a real child process killed by SIGKILL, tampering detection on disk, the
//! format guard, the one-process lock and on-disk blob deduplication.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use retrace_events::{BlobId, EventId, RunId, Timestamp};
use retrace_store::conformance::{append_n, run_id};
use retrace_store::{Error, ForkOrigin, NewRun, ProblemKind, Store, VerifyOptions, verify_run};
use retrace_store_sled::{SledStore, layout};
use retrace_tests::{LARGE_APPEND, crash_runs, payload, tamper};

/// One acknowledged append, as printed by the child.
#[derive(Debug, Clone, Copy)]
struct Ack {
    run: RunId,
    seq: u64,
    id: EventId,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    Some(Ack {
        run: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        id: parts.next()?.parse().ok()?,
    })
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_append() {
    const KILLS: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<RunId, Ack> = BTreeMap::new();
    let mut total_acks = 0usize;
    let mut replays = 0usize;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for kill in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_appender"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = parse_ack(&line) {
                    let _ = tx.send(ack);
                }
            }
        });
        // Let the child get going, then kill it at a random moment mid-stream.
        let first = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            first.is_ok(),
            "kill {kill}: child acknowledged nothing within 30 s"
        );
        std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        reader.join().unwrap();
        for ack in first.into_iter().chain(rx.try_iter()) {
            total_acks += 1;
            let best = acked.entry(ack.run).or_insert(ack);
            if ack.seq > best.seq {
                *best = ack;
            }
        }

        // The survivor: opens, holds every acknowledged event, verifies, and accepts appends.
        let store = SledStore::open(dir.path())
            .unwrap_or_else(|e| panic!("kill {kill}: reopen failed: {e}"));
        replays += usize::from(store.replayed_on_open() > 0);
        for ack in acked.values() {
            let info = store.require_run(&ack.run).unwrap();
            let head = info.head.unwrap();
            assert!(
                head.seq >= ack.seq,
                "kill {kill}: run {} lost acknowledged seq {} (head is {})",
                ack.run,
                ack.seq,
                head.seq
            );
            assert_eq!(
                store.event_id_at(&ack.run, ack.seq).unwrap(),
                Some(ack.id),
                "kill {kill}"
            );
            if ack.run == crash_runs()[2] {
                assert_eq!(
                    info.len() % LARGE_APPEND,
                    0,
                    "kill {kill}: a {LARGE_APPEND}-event append survived in part"
                );
            }
            let report = verify_run(&store, &ack.run, VerifyOptions::default()).unwrap();
            assert!(report.is_ok(), "kill {kill}: {}", report.problem.unwrap());
            assert_eq!(
                store
                    .blob(&BlobId::of(&payload(&ack.run, ack.seq)))
                    .unwrap()
                    .map(|b| b.len()),
                Some(1024)
            );
        }
    }
    eprintln!(
        "{KILLS} SIGKILLs, {total_acks} acknowledged appends, {replays} opens that re-indexed records past the checkpoint, final heads: {:?}",
        acked.values().map(|a| a.seq).collect::<Vec<_>>()
    );
    assert!(
        replays > KILLS / 2,
        "only {replays} of {KILLS} kills left writes to replay"
    );
    assert_eq!(acked.len(), crash_runs().len(), "every run was appended to");
    // Appending continued across kills: far more acknowledgements than kills.
    assert!(
        total_acks > KILLS * 3,
        "only {total_acks} acknowledged appends in {KILLS} lives"
    );
}

#[test]
fn flipping_one_byte_of_a_stored_event_or_blob_is_reported_with_run_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, fork) = (run_id(1), run_id(2));
    let blob = BlobId::of(&33u64.to_le_bytes());
    let victim = {
        let store = SledStore::open(dir.path()).unwrap();
        store.create_run(NewRun::new(parent, Timestamp(0))).unwrap();
        append_n(&store, parent, 50, 50);
        let at = retrace_events::Head {
            id: store.event_id_at(&parent, 30).unwrap().unwrap(),
            seq: 30,
        };
        store
            .create_run(NewRun::fork(
                fork,
                Timestamp(1),
                ForkOrigin { run: parent, at },
            ))
            .unwrap();
        append_n(&store, fork, 5, 5);
        let report = verify_run(&store, &fork, VerifyOptions::default()).unwrap();
        assert!(report.is_ok());
        store.event_id_at(&parent, 17).unwrap().unwrap()
    };

    // An event in the shared prefix: blamed on the run that stores it, at its seq.
    tamper::flip_event_byte(dir.path(), &parent, 17, 20);
    {
        let store = SledStore::open(dir.path()).unwrap();
        for run in [parent, fork] {
            let problem = verify_run(&store, &run, VerifyOptions::default())
                .unwrap()
                .problem
                .unwrap();
            assert_eq!((problem.run, problem.seq), (parent, 17), "verifying {run}");
            assert!(
                matches!(problem.kind, ProblemKind::BadEvent { id, .. } if id == victim),
                "{problem}"
            );
        }
    }
    tamper::flip_event_byte(dir.path(), &parent, 17, 20); // undo
    tamper::flip_blob_byte(dir.path(), &blob, 3);
    let store = SledStore::open(dir.path()).unwrap();
    let problem = verify_run(&store, &parent, VerifyOptions::default())
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((problem.run, problem.seq), (parent, 33));
    assert!(matches!(problem.kind, ProblemKind::BlobMismatch { blob: b, .. } if b == blob));
    let text = problem.to_string();
    assert!(
        text.contains(&parent.to_string()) && text.contains("seq 33"),
        "{text}"
    );
    // The fork branched at 30, but its own seq 33 refers to the same payload, stored once
    // (content addressing), so it is blamed on the fork's own event.
    let problem = verify_run(&store, &fork, VerifyOptions::default())
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((problem.run, problem.seq), (fork, 33));
    assert!(
        verify_run(&store, &fork, VerifyOptions { blobs: false })
            .unwrap()
            .is_ok()
    );
}

#[test]
fn store_of_another_format_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create_run(NewRun::new(run_id(1), Timestamp(0)))
            .unwrap();
        append_n(&store, run_id(1), 3, 3);
    }
    {
        let db = tamper::open_raw(dir.path());
        db.open_tree(layout::META)
            .unwrap()
            .insert(layout::FORMAT_KEY, "retrace-sled-9/events-9")
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::FormatVersion { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("retrace-sled-9/events-9") && msg.contains("reads format version 1"),
        "{msg}"
    );
    // nothing was changed: the foreign version and the data are still there
    let db = tamper::open_raw(dir.path());
    let format = db
        .open_tree(layout::META)
        .unwrap()
        .get(layout::FORMAT_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(&*format, b"retrace-sled-9/events-9");
    assert_eq!(db.open_tree(layout::RUNS).unwrap().len(), 1);
}

#[test]
fn sled_database_with_data_but_no_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = tamper::open_raw(dir.path());
        db.open_tree(layout::RUNS)
            .unwrap()
            .insert("x", "y")
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    assert!(
        err.to_string().contains("no retrace format recorded"),
        "{err}"
    );
}

#[test]
fn a_directory_of_other_files_is_not_taken_for_a_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("is not a retrace store"), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "opening wrote into a foreign directory");
}

#[test]
fn second_opener_of_a_held_store_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _holder = SledStore::open(dir.path()).unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // the holder (this very process here) is named by its pid, where the system tells
    let named = format!("in use by process {} (`", std::process::id());
    let unnamed = "in use by another process";
    assert!(
        err.to_string().contains(&named) || err.to_string().contains(unnamed),
        "{err}"
    );
    #[cfg(target_os = "linux")]
    assert!(err.to_string().contains(&named), "{err}");
}

#[test]
fn acknowledged_appends_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create_run(NewRun::new(run_id(1), Timestamp(0)))
            .unwrap();
        store
            .set_run_meta(&run_id(1), "name", Some("kept"))
            .unwrap();
        append_n(&store, run_id(1), 1_000, 100)
    };
    let store = SledStore::open(dir.path()).unwrap();
    let info = store.require_run(&run_id(1)).unwrap();
    assert_eq!(info.head, Some(head));
    assert_eq!(info.meta.get("name").map(String::as_str), Some("kept"));
    assert!(
        verify_run(&store, &run_id(1), VerifyOptions::default())
            .unwrap()
            .is_ok()
    );
}

#[test]
fn a_sled_snapshot_torn_by_a_kill_is_cleared_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create_run(NewRun::new(run_id(1), Timestamp(0)))
            .unwrap();
        append_n(&store, run_id(1), 300, 100)
    };
    // sled writes its snapshot when it opens a database with a log past the last one
    drop(SledStore::open(dir.path()).unwrap());
    // What a process SIGKILLed while sled writes its snapshot on open leaves: a newer
    // `snap.<lsn>.generating`, cut short.
    let sled_dir = dir.path().join(layout::SLED_DIR);
    let snapshot = std::fs::read_dir(&sled_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .expect("sled wrote a snapshot");
    let bytes = std::fs::read(&snapshot).unwrap();
    let torn = sled_dir.join("snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
    // sled itself no longer opens it
    let refused = loop {
        match layout::sled_config(&sled_dir).open() {
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other,
        }
    };
    assert!(
        matches!(refused, Err(sled::Error::Corruption { .. })),
        "{refused:?}"
    );
    let store = SledStore::open(dir.path()).expect("opens");
    assert!(!torn.exists(), "the torn snapshot is cleared");
    assert_eq!(store.require_run(&run_id(1)).unwrap().head, Some(head));
    assert!(
        verify_run(&store, &run_id(1), VerifyOptions::default())
            .unwrap()
            .is_ok()
    );
}

#[test]
fn index_survives_many_checkpoints_and_merges_and_stays_a_few_tables() {
    let dir = tempfile::tempdir().unwrap();
    let options = retrace_store_sled::Options {
        checkpoint_bytes: 16 << 10,
        ..retrace_store_sled::Options::default()
    };
    let run = run_id(1);
    let (head, stats) = {
        let store = SledStore::open_with(dir.path(), options.clone()).unwrap();
        store.create_run(NewRun::new(run, Timestamp(0))).unwrap();
        // append_n puts one small blob per event: about 200 checkpoints in all
        let head = append_n(&store, run, 20_000, 7);
        (head, store.stats().unwrap())
    };
    let tables = std::fs::read_dir(dir.path().join(layout::INDEX_DIR))
        .unwrap()
        .count();
    assert!(
        (1..=12).contains(&tables),
        "{tables} index tables for ~200 checkpoints"
    );
    let store = SledStore::open_with(dir.path(), options).unwrap();
    assert_eq!(
        store.replayed_on_open(),
        0,
        "a clean close leaves nothing to scan"
    );
    assert_eq!(store.require_run(&run).unwrap().head, Some(head));
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(stats.events, 20_000);
    let report = verify_run(&store, &run, VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{}", report.problem.unwrap());
    for seq in [0, 1, 6_999, 7_000, 7_001, 19_999] {
        assert!(store.event_id_at(&run, seq).unwrap().is_some(), "seq {seq}");
    }
    assert_eq!(store.event_id_at(&run, 20_000).unwrap(), None);
}

#[test]
fn repeated_blob_does_not_grow_the_store_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    // incompressible, so the store holds it at full size
    let noise = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..1 << 20).map(|_| rng.u8(..)).collect::<Vec<u8>>()
    };
    let payload = noise(7);
    store.put_blob(&payload).unwrap();
    store.flush().unwrap();
    let once = store.size_on_disk().unwrap();
    for _ in 0..100 {
        store.put_blob(&payload).unwrap();
    }
    store.flush().unwrap();
    let after = store.size_on_disk().unwrap();
    // 100 more copies would be 100 MiB; allow only flush bookkeeping
    assert!(
        after < once + (64 << 10),
        "store grew from {once} to {after} bytes for a repeated blob"
    );
    // while a different blob of the same size does take room
    store.put_blob(&noise(8)).unwrap();
    store.flush().unwrap();
    assert!(store.size_on_disk().unwrap() > after + (1 << 19));
}

#[test]
fn a_store_made_with_other_storage_settings_is_a_clear_format_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path().join(layout::SLED_DIR))
            .segment_size(layout::SLED_SEGMENT_BYTES * 2)
            .open()
            .unwrap();
        db.flush().unwrap();
    }
    let err = retry_while_locked(|| SledStore::open(dir.path()));
    assert!(matches!(err, Error::FormatVersion { .. }), "{err}");
    assert!(err.to_string().contains("other storage settings"), "{err}");
}

/// sled releases its lock from a background pool just after close; keep trying briefly.
fn retry_while_locked(open: impl Fn() -> Result<SledStore, Error>) -> Error {
    for _ in 0..100 {
        match open() {
            Err(Error::Locked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(other) => return other,
            Ok(_) => panic!("opened a store made with other settings"),
        }
    }
    panic!("store stayed locked");
}
