//! Replay core: apply's typed errors, fold determinism, snapshots (equivalence, corrupt and
//! foreign snapshots bypassed), and a 1M-case fuzz of `apply`.

use proptest::prelude::*;
use retrace_events::{BlobId, Event, EventKind, Outcome, RunId, Timestamp};
use retrace_replay::testkit::{Rng, valid_run};
use retrace_replay::{
    ApplyError, SnapshotPolicy, State, Status, apply, encode_snapshot, fold, fold_into, state_at,
};
use retrace_store::{MemoryStore, NewRun, Store};

const RUN: RunId = RunId::from_bytes([7; 16]);

fn blob() -> BlobId {
    BlobId::of(b"x")
}

fn started() -> (State, Event) {
    let first = Event::root(
        Timestamp(0),
        EventKind::RunStarted {
            run: RUN,
            spec: blob(),
            input: blob(),
        },
    );
    let state = fold([&first]).expect("a run_started folds");
    (state, first)
}

fn next(prev: &Event, kind: EventKind) -> Event {
    Event::after(Some(prev.head()), Timestamp(prev.seq + 1), kind)
}

#[test]
fn nonsense_events_are_typed_errors_and_leave_the_state_unchanged() {
    let (state, first) = started();
    let cases = [
        (
            EventKind::ToolReturned {
                call_id: "never".into(),
                output: blob(),
                is_error: false,
                duration_ms: 0,
            },
            "tool_returned for tool call `never` that is not pending",
        ),
        (
            EventKind::ModelResponded {
                request_seq: 0,
                response: blob(),
                usage: retrace_events::Usage::default(),
            },
            "model_responded for the model call at seq 0 that is not pending",
        ),
        (
            EventKind::ApprovalDecided {
                call_id: "c".into(),
                decision: retrace_events::Decision::Approved,
                by: "me".into(),
                note: None,
            },
            "approval_decided for approval of `c` that is not pending",
        ),
        (
            EventKind::RunStarted {
                run: RUN,
                spec: blob(),
                input: blob(),
            },
            "run_started may only be the first event",
        ),
    ];
    for (kind, message) in cases {
        let mut after = state.clone();
        let err = apply(&mut after, &next(&first, kind)).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(after, state, "a failed apply changed the state");
    }
    // out of order, and a first event that is not run_started
    let mut after = state.clone();
    let skipped = Event::after(
        Some(first.head()),
        Timestamp(5),
        EventKind::SignalReceived {
            name: "x".into(),
            payload: blob(),
        },
    );
    let mut skipped = skipped;
    skipped.seq = 3;
    assert_eq!(
        apply(&mut after, &skipped),
        Err(ApplyError::OutOfOrder {
            expected: 1,
            found: 3
        })
    );
    let mut empty = State::default();
    let signal = Event::root(
        Timestamp(0),
        EventKind::SignalReceived {
            name: "x".into(),
            payload: blob(),
        },
    );
    assert!(matches!(
        apply(&mut empty, &signal),
        Err(ApplyError::Start(_))
    ));
}

#[test]
fn nothing_may_follow_a_finish_not_even_a_second_finish() {
    let (mut state, first) = started();
    let finish = next(
        &first,
        EventKind::RunFinished {
            outcome: Outcome::Succeeded,
            detail: blob(),
        },
    );
    apply(&mut state, &finish).unwrap();
    assert!(state.is_finished());
    let again = next(
        &finish,
        EventKind::RunFinished {
            outcome: Outcome::Failed,
            detail: blob(),
        },
    );
    assert_eq!(apply(&mut state, &again), Err(ApplyError::AfterFinish));
}

#[test]
fn a_parked_run_accepts_only_what_resolves_it() {
    let (mut state, first) = started();
    let ask = next(
        &first,
        EventKind::ToolRequested {
            call_id: "w".into(),
            tool: "fs.write".into(),
            args: blob(),
            idempotent: false,
        },
    );
    let approval = next(
        &ask,
        EventKind::ApprovalRequested {
            call_id: "w".into(),
            request: blob(),
        },
    );
    fold_into(&mut state, [&ask, &approval]).unwrap();
    assert_eq!(
        state.status,
        Status::AwaitingApproval {
            call_id: "w".into()
        }
    );
    let model = next(
        &approval,
        EventKind::ModelRequested {
            request: blob(),
            attempt: 1,
        },
    );
    assert!(matches!(
        apply(&mut state, &model),
        Err(ApplyError::WrongStatus { .. })
    ));
    let decided = next(
        &approval,
        EventKind::ApprovalDecided {
            call_id: "w".into(),
            decision: retrace_events::Decision::Denied,
            by: "ann".into(),
            note: None,
        },
    );
    apply(&mut state, &decided).unwrap();
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.denials, 1);
}

#[test]
fn apply_never_panics_on_random_events_one_million_cases() {
    // Random events (mostly invalid) thrown at states reached by valid runs.
    let mut rng = Rng::new(42);
    let mut cases = 0u64;
    let mut accepted = 0u64;
    for round in 0..2_000u64 {
        let events = valid_run(round, RUN, rng.below(40), true);
        let base = fold(&events).unwrap();
        let head = events.last().map(Event::head);
        for _ in 0..500 {
            let kind = retrace_store::conformance::sample_kind(RUN, rng.below(1_000));
            let mut event = Event::after(head, Timestamp(rng.next_u64()), kind);
            if rng.below(4) == 0 {
                event.seq = rng.below(50);
            }
            let mut state = base.clone();
            cases += 1;
            match apply(&mut state, &event) {
                Ok(()) => accepted += 1,
                Err(_) => assert_eq!(state, base, "failed apply changed the state"),
            }
        }
    }
    assert_eq!(cases, 1_000_000);
    assert!(
        accepted > 0 && accepted < cases,
        "{accepted} of {cases} accepted"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn state_at_any_seq_from_any_snapshot_equals_folding_from_the_root(
        seed in any::<u64>(),
        len in 1u64..400,
        every in 1u64..50,
        target_frac in 0.0f64..1.0,
    ) {
        let events = valid_run(seed, RUN, len, seed % 2 == 0);
        let store = MemoryStore::new();
        store.create_run(NewRun::new(RUN, Timestamp(0))).unwrap();
        store.append(&RUN, None, &events).unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let target = ((events.len() - 1) as f64 * target_frac) as usize;
        let from_root = fold(&events[..=target]).unwrap();
        let policy = SnapshotPolicy { every, write: true };
        // first call writes snapshots along the way; the second starts from one
        let first = state_at(&store, &RUN, target as u64, policy).unwrap();
        prop_assert_eq!(&first.state, &from_root);
        let second = state_at(&store, &RUN, events.len() as u64 - 1, policy).unwrap();
        prop_assert_eq!(second.state.hash(), fold(&events).unwrap().hash());
        if target as u64 + 1 >= every {
            let again = state_at(&store, &RUN, target as u64, policy).unwrap();
            prop_assert!(again.from_snapshot.is_some());
            prop_assert_eq!(&again.state, &from_root);
        }
    }
}

#[test]
fn corrupt_and_foreign_snapshots_are_detected_bypassed_and_reported() {
    let events = valid_run(9, RUN, 300, false);
    let store = MemoryStore::new();
    store.create_run(NewRun::new(RUN, Timestamp(0))).unwrap();
    store.append(&RUN, None, &events).unwrap();
    let policy = SnapshotPolicy {
        every: 100,
        write: true,
    };
    let truth = fold(&events[..=250]).unwrap();
    state_at(&store, &RUN, 250, policy).unwrap(); // writes snapshots at 99 and 199

    let read_only = SnapshotPolicy {
        write: false,
        ..policy
    };
    let read_250 = || state_at(&store, &RUN, 250, read_only).expect("state at 250");

    // corrupt the snapshot at 199: one byte flipped in its body
    let id199 = events[199].id();
    let mut bytes = store.snapshot(&id199).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    store.put_snapshot(&id199, &bytes).unwrap();
    let at = read_250();
    assert_eq!(at.state, truth);
    assert_eq!(at.from_snapshot, Some(99));
    assert_eq!(at.bypassed.len(), 1);
    assert_eq!(at.bypassed[0].seq, 199);
    assert!(at.bypassed[0].reason.contains("hash"), "{:?}", at.bypassed);

    // a foreign snapshot: a valid one, but of another event, stored under 199's id
    let other = fold(&events[..=150]).unwrap();
    store
        .put_snapshot(&id199, &encode_snapshot(&events[150].id(), &other))
        .unwrap();
    let at = read_250();
    assert_eq!(at.state, truth);
    assert!(
        at.bypassed[0].reason.contains("another event"),
        "{:?}",
        at.bypassed
    );

    // garbage
    store.put_snapshot(&id199, b"junk").unwrap();
    let at = read_250();
    assert_eq!(at.state, truth);
    assert!(at.bypassed[0].reason.contains("not a retrace snapshot"));
}

#[test]
fn state_hash_is_stable_and_sensitive() {
    let events = valid_run(3, RUN, 200, false);
    let a = fold(&events).unwrap();
    let b = fold(&events).unwrap();
    assert_eq!(a.hash(), b.hash());
    let shorter = fold(&events[..199]).unwrap();
    assert_ne!(a.hash(), shorter.hash());
    // JSON form for display and diff
    let json = a.to_json();
    assert!(json["totals"]["steps"].is_u64());
}

#[test]
fn timing_is_recorded_but_left_out_of_the_state_hash() {
    let events = valid_run(5, RUN, 120, false);
    // the same run, slower: every event later, every latency and duration longer
    let slower: Vec<Event> = {
        let mut head = None;
        events
            .iter()
            .map(|e| {
                let mut kind = e.kind.clone();
                match &mut kind {
                    EventKind::ModelResponded { usage, .. } => usage.latency_ms += 1_000,
                    EventKind::ToolReturned { duration_ms, .. } => *duration_ms += 500,
                    _ => {}
                }
                let event = Event::after(head, Timestamp(e.at.0 * 2 + 7), kind);
                head = Some(event.head());
                event
            })
            .collect()
    };
    let (fast, slow) = (fold(&events).unwrap(), fold(&slower).unwrap());
    assert_ne!(fast.timing, slow.timing);
    assert_eq!(fast.hash(), slow.hash(), "timing must not change the hash");
    assert_ne!(fast, slow);
    assert_ne!(fold(&events[..119]).unwrap().hash(), fast.hash());
}

/// The events of one model reply asking for one non-idempotent call, then the call, with
/// `interruption` spliced in between the call's intent and its result; the folded state.
fn one_call(interruption: &[EventKind], run: RunId) -> State {
    let args = BlobId::of(b"args");
    let reply = BlobId::of(b"reply");
    let call = "c1".to_owned();
    let mut kinds = vec![
        EventKind::RunStarted {
            run,
            spec: blob(),
            input: blob(),
        },
        EventKind::ModelRequested {
            request: blob(),
            attempt: 1,
        },
        EventKind::ModelResponded {
            request_seq: 1,
            response: reply,
            usage: retrace_events::Usage::default(),
        },
        EventKind::ToolCallsProposed {
            response_seq: 2,
            calls: vec![retrace_events::ProposedCall {
                call_id: call.clone(),
                tool: "fs.append".into(),
                args,
                path: None,
            }],
        },
        EventKind::ToolRequested {
            call_id: call.clone(),
            tool: "fs.append".into(),
            args,
            idempotent: false,
        },
    ];
    kinds.extend(interruption.iter().cloned());
    kinds.push(EventKind::ToolReturned {
        call_id: call,
        output: BlobId::of(b"appended"),
        is_error: false,
        duration_ms: 3,
    });
    let mut head = None;
    let events: Vec<Event> = kinds
        .into_iter()
        .map(|kind| {
            let event = Event::after(head, Timestamp(10), kind);
            head = Some(event.head());
            event
        })
        .collect();
    fold(&events).expect("a valid log")
}

#[test]
fn state_hash_is_content_not_position_so_a_resolved_unknown_outcome_converges() {
    let unknown = EventKind::ToolOutcomeUnknown {
        call_id: "c1".into(),
        reason: blob(),
    };
    let plain = one_call(&[], RUN);
    // skipped: the human records the result the call had
    let skipped = one_call(std::slice::from_ref(&unknown), RUN);
    // retried: approval, a new intent (which consumes the approval), the result
    let retried = one_call(
        &[
            unknown.clone(),
            EventKind::ApprovalDecided {
                call_id: "c1".into(),
                decision: retrace_events::Decision::Approved,
                by: "ops".into(),
                note: None,
            },
            EventKind::ToolRequested {
                call_id: "c1".into(),
                tool: "fs.append".into(),
                args: BlobId::of(b"args"),
                idempotent: false,
            },
        ],
        RUN,
    );
    assert_eq!(
        retried.retry_approved, None,
        "the retry consumed its approval"
    );
    assert_ne!(plain, skipped, "positions differ");
    assert_eq!(plain.hash(), skipped.hash());
    assert_eq!(plain.hash(), retried.hash());
    assert_eq!(
        retried.recent_calls.len(),
        1,
        "a retry is not a second call for loop detection"
    );
    // another run that did the same has the same content
    let other = one_call(&[], RunId::from_bytes([9; 16]));
    assert_eq!(plain.hash(), other.hash());
    // while a different result does not
    let mut failed = plain.clone();
    failed.conversation.back_mut().expect("a message").is_error = true;
    assert_ne!(plain.hash(), failed.hash());
}
