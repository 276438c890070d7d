//! The conformance suite: one behaviour, checked on every backend.
//!
//! Each check takes a fresh, empty store and panics with a message on failure. A backend's
//! test binary instantiates all of them with [`conformance_suite!`](crate::conformance_suite):
//!
//! ```ignore
//! retrace_store::conformance_suite!(|| ((), retrace_store::MemoryStore::new()));
//! ```
//!
//! The closure returns `(guard, store)`; the guard (e.g. a temp dir) lives as long as the test.
#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

use std::sync::Barrier;
use std::time::Duration;

use retrace_events::{BlobId, Decision, Event, EventKind, Head, Outcome, RunId, Timestamp, Usage};

use crate::error::Error;
use crate::run::{ForkOrigin, NewRun};
use crate::store::Store;
use crate::verify::{VerifyOptions, verify_run};

/// Instantiate every conformance check as a `#[test]` for the backend `$make` builds.
///
/// With `optional`, `$make` returns `Option<(guard, store)>`: `None` (a server the backend
/// needs is not available; `$make` says so loudly) ends the check at once.
#[macro_export]
macro_rules! conformance_suite {
    (optional $make:expr) => {
        $crate::conformance_suite!(@tests $make;
            appends_chain_and_reads_back,
            refuses_stale_and_broken_appends,
            concurrent_appenders_get_one_winner_per_seq,
            blobs_are_stored_once,
            fork_shares_prefix_without_copying,
            fork_of_fork_reads_through_lineage,
            fork_origin_must_exist,
            run_meta_and_listing,
            snapshots_round_trip,
            subscribers_see_appends_in_order,
            run_prefixes_resolve,
            verify_accepts_intact_runs,
        );
    };
    ($make:expr) => {
        $crate::conformance_suite!(optional || Some(($make)()));
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                let Some((_guard, store)) = ($make)() else {
                    return;
                };
                $crate::conformance::$name(&store);
            }
        )+
    };
}

/// A run id made from a number (tests only; real ids come from the impure layer).
pub fn run_id(n: u64) -> RunId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8] = 0x5e;
    RunId::from_bytes(bytes)
}

/// A deterministic event kind for position `i`, cycling through every kind.
pub fn sample_kind(run: RunId, i: u64) -> EventKind {
    let blob = BlobId::of(&i.to_le_bytes());
    let call_id = format!("call-{i}");
    match i % 12 {
        0 => EventKind::RunStarted {
            run,
            spec: blob,
            input: blob,
        },
        1 => EventKind::ModelRequested {
            request: blob,
            attempt: 1,
        },
        2 => EventKind::ModelResponded {
            request_seq: i - 1,
            response: blob,
            usage: Usage {
                input_tokens: i,
                output_tokens: 2 * i,
                cost_micro_usd: 3,
                latency_ms: 4,
            },
        },
        3 => EventKind::ModelFailed {
            request_seq: i - 2,
            error: blob,
            transient: true,
        },
        4 => EventKind::ToolRequested {
            call_id,
            tool: "fs.read".into(),
            args: blob,
            idempotent: true,
        },
        5 => EventKind::ToolReturned {
            call_id,
            output: blob,
            is_error: false,
            duration_ms: 7,
        },
        6 => EventKind::ToolOutcomeUnknown {
            call_id,
            reason: blob,
        },
        7 => EventKind::ApprovalRequested {
            call_id,
            request: blob,
        },
        8 => EventKind::ApprovalDecided {
            call_id,
            decision: Decision::Approved,
            by: "tester".into(),
            note: Some(blob),
        },
        9 => EventKind::SignalReceived {
            name: "user_message".into(),
            payload: blob,
        },
        10 => EventKind::Forked {
            from_run: run,
            from_seq: i - 1,
            from_event: retrace_events::EventId::from_bytes([9; 32]),
            note: None,
        },
        _ => EventKind::RunFinished {
            outcome: Outcome::Succeeded,
            detail: blob,
        },
    }
}

/// Build `n` events continuing `head` (sample kinds; blobs not stored).
pub fn chain_after(run: RunId, head: Option<Head>, n: u64) -> Vec<Event> {
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut prev = head;
    for _ in 0..n {
        let seq = prev.map_or(0, |h| h.seq + 1);
        let event = Event::after(prev, Timestamp(1_000 + seq), sample_kind(run, seq));
        prev = Some(event.head());
        out.push(event);
    }
    out
}

/// Append `n` sample events to `run` in batches of `batch`, storing their blobs; returns the
/// new head.
pub fn append_n(store: &dyn Store, run: RunId, n: u64, batch: u64) -> Head {
    let mut head = store.run(&run).unwrap().unwrap().head;
    let mut left = n;
    while left > 0 {
        let take = left.min(batch);
        let events = chain_after(run, head, take);
        for event in &events {
            // sample kinds refer to blake3(seq bytes) as their blob
            if !event.kind.blobs().is_empty() {
                store.put_blob(&event.seq.to_le_bytes()).unwrap();
            }
        }
        head = Some(store.append(&run, head.map(|h| h.id), &events).unwrap());
        left -= take;
    }
    head.unwrap()
}

fn new_run(store: &dyn Store, n: u64) -> RunId {
    let id = run_id(n);
    store.create_run(NewRun::new(id, Timestamp(n))).unwrap();
    id
}

/// Appends chain, heads advance, and reads by id, seq and range return what was written.
pub fn appends_chain_and_reads_back(store: &dyn Store) {
    let run = new_run(store, 1);
    let info = store.run(&run).unwrap().unwrap();
    assert_eq!(info.head, None);
    assert!(info.is_empty());

    let events = chain_after(run, None, 5);
    let mut head = None;
    for event in &events[..2] {
        head = Some(
            store
                .append(&run, head.map(|h: Head| h.id), std::slice::from_ref(event))
                .unwrap(),
        );
    }
    head = Some(
        store
            .append(&run, head.map(|h| h.id), &events[2..])
            .unwrap(),
    );
    let head = head.unwrap();
    assert_eq!(head, events[4].head());
    assert_eq!(store.run(&run).unwrap().unwrap().head, Some(head));
    assert_eq!(store.run(&run).unwrap().unwrap().len(), 5);

    for (seq, event) in events.iter().enumerate() {
        let seq = seq as u64;
        assert_eq!(store.event_id_at(&run, seq).unwrap(), Some(event.id()));
        assert_eq!(
            store.event_at(&run, seq).unwrap(),
            Some((event.id(), event.clone()))
        );
        let stored = store.own_events(&run, seq..=seq).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].seq, stored[0].id), (seq, event.id()));
        assert_eq!(stored[0].bytes, event.to_canonical_bytes());
    }
    assert_eq!(store.event_id_at(&run, 5).unwrap(), None);
    let middle = store.events(&run, 1..=3).unwrap();
    assert_eq!(
        middle.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        events[1..=3].to_vec()
    );
    // ranges past the head are clamped, empty ranges are empty
    assert_eq!(store.events(&run, 3..=99).unwrap().len(), 2);
    assert!(store.events(&run, 9..=20).unwrap().is_empty());
    assert_eq!(store.own_events(&run, 0..=u64::MAX).unwrap().len(), 5);
}

/// Stale heads get a typed conflict; broken chains, empty and oversized batches, unknown
/// runs and duplicate runs are refused; nothing is written by a refused append.
pub fn refuses_stale_and_broken_appends(store: &dyn Store) {
    let run = new_run(store, 2);
    let first = chain_after(run, None, 1);
    let head = store.append(&run, None, &first).unwrap();
    let before = store.stats().unwrap();

    // stale writer: still thinks the run is empty
    let err = store.append(&run, None, &first).unwrap_err();
    match err {
        Error::Conflict {
            run: r,
            expected,
            actual,
        } => {
            assert_eq!((r, expected, actual), (run, None, Some(head)));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    // expected head right, but events chain from somewhere else
    let mut wrong_parent = chain_after(run, Some(head), 1);
    wrong_parent[0].parent = Some(retrace_events::EventId::from_bytes([1; 32]));
    assert!(matches!(
        store.append(&run, Some(head.id), &wrong_parent),
        Err(Error::InvalidAppend { seq: 1, .. })
    ));
    let mut wrong_seq = chain_after(run, Some(head), 2);
    wrong_seq[1].seq = 7;
    let err = store.append(&run, Some(head.id), &wrong_seq).unwrap_err();
    assert!(matches!(err, Error::InvalidAppend { seq: 2, .. }), "{err}");
    assert!(err.to_string().contains("seq 7"), "{err}");
    assert!(matches!(
        store.append(&run, Some(head.id), &[]),
        Err(Error::InvalidAppend { .. })
    ));
    let huge = Event::after(
        Some(head),
        Timestamp(5),
        EventKind::SignalReceived {
            name: "x".repeat(retrace_events::MAX_EVENT_BYTES),
            payload: BlobId::of(b""),
        },
    );
    let err = store.append(&run, Some(head.id), &[huge]).unwrap_err();
    assert!(err.to_string().contains("blob"), "{err}");
    assert!(matches!(
        store.append(&run_id(999), None, &first),
        Err(Error::RunNotFound { .. })
    ));
    assert!(matches!(
        store.create_run(NewRun::new(run, Timestamp(0))),
        Err(Error::RunExists { .. })
    ));
    assert_eq!(
        store.stats().unwrap(),
        before,
        "a refused append wrote something"
    );
    assert_eq!(store.run(&run).unwrap().unwrap().head, Some(head));
}

/// Many writers race for the same seq; exactly one wins each round, the rest get
/// [`Error::Conflict`], and the run stays one chain.
pub fn concurrent_appenders_get_one_winner_per_seq(store: &dyn Store) {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 25;
    let run = new_run(store, 3);
    let barrier = Barrier::new(WRITERS);
    let results: Vec<Vec<bool>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut won = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        // everyone reads the same head, then everyone tries to extend it
                        let head = store.run(&run).unwrap().unwrap().head;
                        barrier.wait();
                        let seq = head.map_or(0, |h| h.seq + 1);
                        let event = Event::after(
                            head,
                            Timestamp(seq),
                            EventKind::SignalReceived {
                                name: format!("writer-{w}"),
                                payload: BlobId::of(b""),
                            },
                        );
                        match store.append(&run, head.map(|h| h.id), &[event]) {
                            Ok(_) => won.push(true),
                            Err(Error::Conflict { .. }) => won.push(false),
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                        barrier.wait();
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for round in 0..ROUNDS {
        let winners = results.iter().filter(|w| w[round]).count();
        assert_eq!(
            winners, 1,
            "round {round}: {winners} writers won the same seq"
        );
    }
    let info = store.run(&run).unwrap().unwrap();
    assert_eq!(info.len(), ROUNDS as u64);
    let report = verify_run(store, &run, VerifyOptions { blobs: false }).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}

/// The same bytes stored many times are kept once.
pub fn blobs_are_stored_once(store: &dyn Store) {
    let payload = vec![0xab_u8; 64 * 1024];
    let before = store.stats().unwrap();
    let id = store.put_blob(&payload).unwrap();
    assert_eq!(id, BlobId::of(&payload));
    for _ in 0..50 {
        assert_eq!(store.put_blob(&payload).unwrap(), id);
    }
    let after = store.stats().unwrap();
    assert_eq!(after.blobs, before.blobs + 1);
    assert_eq!(after.blob_bytes, before.blob_bytes + payload.len() as u64);
    assert_eq!(store.blob(&id).unwrap(), Some(payload));
    assert_eq!(store.blob(&BlobId::of(b"never stored")).unwrap(), None);
    let empty = store.put_blob(b"").unwrap();
    assert_eq!(store.blob(&empty).unwrap(), Some(Vec::new()));
}

/// Forking at seq k of a 100k-event run writes no copy of the prefix (stats prove it); the
/// fork reads the parent's events through its own seqs; the parent is untouched.
pub fn fork_shares_prefix_without_copying(store: &dyn Store) {
    const LEN: u64 = 100_000;
    const K: u64 = 60_000;
    let parent = new_run(store, 4);
    let parent_head = append_n(store, parent, LEN, 5_000);
    let at = Head {
        id: store.event_id_at(&parent, K).unwrap().unwrap(),
        seq: K,
    };
    let before = store.stats().unwrap();
    let fork = run_id(5);
    let info = store
        .create_run(NewRun::fork(
            fork,
            Timestamp(9),
            ForkOrigin { run: parent, at },
        ))
        .unwrap();
    let after = store.stats().unwrap();
    assert_eq!(info.head, Some(at));
    assert_eq!(after.events, before.events, "fork copied events");
    assert_eq!(
        after.log_entries, before.log_entries,
        "fork copied log entries"
    );
    assert_eq!(after.runs, before.runs + 1);

    for seq in [0, 1, K / 2, K - 1, K] {
        assert_eq!(
            store.event_id_at(&fork, seq).unwrap(),
            store.event_id_at(&parent, seq).unwrap(),
            "seq {seq}"
        );
    }
    assert_eq!(store.event_id_at(&fork, K + 1).unwrap(), None);
    // the fork grows on its own; its seq K+1 differs from the parent's
    let new_head = append_n(store, fork, 10, 10);
    assert_eq!(new_head.seq, K + 10);
    assert_eq!(store.own_events(&fork, 0..=u64::MAX).unwrap().len(), 10);
    let across = store.events(&fork, K - 2..=K + 2).unwrap();
    assert_eq!(across.len(), 5);
    assert_eq!(across[2].0, at.id);
    assert_eq!(across[3].1.parent, Some(at.id));
    assert_eq!(store.run(&parent).unwrap().unwrap().head, Some(parent_head));
    assert!(store.forks_of(&parent).unwrap().contains_key(&fork));
}

/// A fork of a fork reads each seq from the run that wrote it.
pub fn fork_of_fork_reads_through_lineage(store: &dyn Store) {
    let a = new_run(store, 6);
    append_n(store, a, 20, 7);
    let at = |run: RunId, seq: u64| Head {
        id: store.event_id_at(&run, seq).unwrap().unwrap(),
        seq,
    };
    let b = run_id(7);
    store
        .create_run(NewRun::fork(
            b,
            Timestamp(1),
            ForkOrigin {
                run: a,
                at: at(a, 9),
            },
        ))
        .unwrap();
    append_n(store, b, 10, 3);
    let c = run_id(8);
    store
        .create_run(NewRun::fork(
            c,
            Timestamp(2),
            ForkOrigin {
                run: b,
                at: at(b, 14),
            },
        ))
        .unwrap();
    append_n(store, c, 5, 5);
    let all = store.event_ids(&c, 0..=u64::MAX).unwrap();
    assert_eq!(all.len(), 20);
    for (seq, id) in &all {
        let from = match seq {
            0..=9 => a,
            10..=14 => b,
            _ => c,
        };
        assert_eq!(
            store.event_id_at(&from, *seq).unwrap(),
            Some(*id),
            "seq {seq}"
        );
    }
    assert_ne!(
        store.event_id_at(&a, 12).unwrap(),
        store.event_id_at(&c, 12).unwrap()
    );
    let report = verify_run(store, &c, VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.events, 20);
}

/// A fork must name a real event at the right seq of an existing run.
pub fn fork_origin_must_exist(store: &dyn Store) {
    let a = new_run(store, 9);
    let head = append_n(store, a, 3, 3);
    let bad = |origin: ForkOrigin| {
        let err = store
            .create_run(NewRun::fork(run_id(10), Timestamp(0), origin))
            .unwrap_err();
        assert!(matches!(err, Error::BadForkOrigin { .. }), "{err}");
    };
    bad(ForkOrigin {
        run: run_id(404),
        at: head,
    });
    bad(ForkOrigin {
        run: a,
        at: Head {
            id: head.id,
            seq: 1,
        },
    });
    bad(ForkOrigin {
        run: a,
        at: Head {
            id: head.id,
            seq: 3,
        },
    });
    assert!(store.run(&run_id(10)).unwrap().is_none());
}

/// Labels can be set and removed; runs are listed by id.
pub fn run_meta_and_listing(store: &dyn Store) {
    let b = new_run(store, 12);
    let a = new_run(store, 11);
    let info = store
        .set_run_meta(&a, "name", Some("nightly refactor"))
        .unwrap();
    assert_eq!(
        info.meta.get("name").map(String::as_str),
        Some("nightly refactor")
    );
    store.set_run_meta(&a, "status", Some("running")).unwrap();
    let info = store.set_run_meta(&a, "status", None).unwrap();
    assert_eq!(info.meta.len(), 1);
    assert_eq!(store.run(&a).unwrap().unwrap().meta, info.meta);
    let ids: Vec<RunId> = store.runs().unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(store.run(&a).unwrap().unwrap().created_at, Timestamp(11));
    assert!(matches!(
        store.set_run_meta(&run_id(77), "k", Some("v")),
        Err(Error::RunNotFound { .. })
    ));
}

/// Snapshots are kept per event id and can be replaced.
pub fn snapshots_round_trip(store: &dyn Store) {
    let run = new_run(store, 13);
    let head = append_n(store, run, 3, 3);
    assert_eq!(store.snapshot(&head.id).unwrap(), None);
    store.put_snapshot(&head.id, b"state v1").unwrap();
    store.put_snapshot(&head.id, b"state v2").unwrap();
    assert_eq!(
        store.snapshot(&head.id).unwrap(),
        Some(b"state v2".to_vec())
    );
    assert_eq!(store.stats().unwrap().snapshots, 1);
    assert_eq!(store.snapshot_ids().unwrap(), vec![head.id]);
}

/// A subscriber sees every append of its run, in order, and nothing of other runs.
pub fn subscribers_see_appends_in_order(store: &dyn Store) {
    let run = new_run(store, 14);
    let other = new_run(store, 15);
    let sub = store.subscribe(&run).unwrap();
    assert!(sub.try_recv().is_none());
    let writer = std::thread::scope(|s| {
        s.spawn(|| {
            append_n(store, other, 2, 2);
            append_n(store, run, 3, 1);
            append_n(store, run, 4, 4)
        })
        .join()
        .unwrap()
    });
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let appended = sub
            .recv_timeout(Duration::from_secs(5))
            .expect("subscriber got no append within 5 s");
        assert_eq!(appended.run, run);
        seen.extend(appended.events.iter().map(|(id, e)| (e.seq, *id)));
    }
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    assert_eq!(seen.last().map(|(_, id)| *id), Some(writer.id));
    assert!(sub.try_recv().is_none());
    assert!(matches!(
        store.subscribe(&run_id(500)),
        Err(Error::RunNotFound { .. })
    ));
}

/// Run ids resolve from unambiguous prefixes; ambiguous and unknown ones are explained.
pub fn run_prefixes_resolve(store: &dyn Store) {
    let a = new_run(store, 0x1111);
    let b = new_run(store, 0x1122);
    assert_eq!(store.resolve_run(&a.to_hex()).unwrap(), a);
    assert_eq!(store.resolve_run(&b.to_hex()[..15]).unwrap(), b);
    let err = store.resolve_run(&a.to_hex()[..12]).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let err = store.resolve_run("ffff").unwrap_err();
    assert!(err.to_string().contains("no run"), "{err}");
}

/// A freshly written run verifies, blobs included.
pub fn verify_accepts_intact_runs(store: &dyn Store) {
    let run = new_run(store, 16);
    append_n(store, run, 250, 100);
    let report = verify_run(store, &run, VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.events, 250);
    // every sample kind but `Forked` refers to one blob, distinct per seq
    assert_eq!(
        report.blobs,
        (0..250u64).filter(|i| i % 12 != 10).count() as u64
    );
}
