//! Forks, diffs and run comparison on a store: forks copy no prefix, share state up to the
//! fork point, reflect an edit exactly, and comparisons find the edit's seq.

use retrace_events::{EventKind, RunId, Timestamp};
use retrace_replay::testkit::valid_run;
use retrace_replay::{
    ChangeKind, ForkAt, ForkError, SnapshotPolicy, compare_runs, diff_states, fork, kind_counts,
    lineage, state_at,
};
use retrace_store::{MemoryStore, NewRun, Store};

const RUN: RunId = RunId::from_bytes([1; 16]);

fn run_id(n: u8) -> RunId {
    RunId::from_bytes([n; 16])
}

fn store_with_run(len: u64) -> (MemoryStore, Vec<retrace_events::Event>) {
    let events = valid_run(11, RUN, len, false);
    let store = MemoryStore::new();
    let mut new = NewRun::new(RUN, Timestamp(0));
    new.meta.insert("name".into(), "tidy".into());
    store.create_run(new).expect("create");
    for chunk in events.chunks(5_000) {
        let head = store.run(&RUN).expect("run").expect("exists").head;
        store
            .append(&RUN, head.map(|h| h.id), chunk)
            .expect("append");
    }
    (store, events)
}

#[test]
fn fork_of_a_long_run_copies_no_prefix_and_shares_its_state() {
    let (store, events) = store_with_run(50_000);
    let policy = SnapshotPolicy::default();
    let k = 37_123;
    let before = store.stats().expect("stats");
    let forked = fork(&store, &RUN, ForkAt::After(k), run_id(2), Timestamp(9)).expect("fork");
    let after = store.stats().expect("stats");
    assert_eq!(after.events, before.events, "the fork copied events");
    assert_eq!(after.runs, before.runs + 1);
    assert_eq!(forked.head.map(|h| h.seq), Some(k));
    assert_eq!(forked.meta.get("forked_from"), Some(&format!("{RUN}@{k}")));
    assert_eq!(forked.meta.get("name").map(String::as_str), Some("tidy"));
    let original = state_at(&store, &RUN, k, policy).expect("state").state;
    let shared = state_at(&store, &run_id(2), k, policy)
        .expect("state")
        .state;
    assert_eq!(original.hash(), shared.hash());
    assert_eq!(events.len(), 50_000);
    let cmp = compare_runs(&store, &RUN, &run_id(2)).expect("compare");
    assert_eq!(cmp.common_prefix, k + 1);
    assert_eq!(
        cmp.first_divergence, None,
        "a plain fork is a prefix of its origin"
    );
    let lin = lineage(&store, &run_id(2)).expect("lineage");
    assert_eq!(lin.ancestors, vec![(RUN, k)]);
    assert_eq!(
        lineage(&store, &RUN).expect("lineage").forks,
        vec![(run_id(2), k)]
    );
}

#[test]
fn an_edited_fork_reflects_exactly_the_edit() {
    let (store, events) = store_with_run(600);
    let policy = SnapshotPolicy::default();
    // the last model reply before seq 500
    let (k, original) = events[..500]
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::ModelResponded { .. } => Some((e.seq, e.kind.clone())),
            _ => None,
        })
        .expect("a model reply");
    let EventKind::ModelResponded {
        request_seq, usage, ..
    } = original
    else {
        unreachable!()
    };
    let edited_reply = store.put_blob(br#"{"text":"edited"}"#).expect("blob");
    let edit = EventKind::ModelResponded {
        request_seq,
        response: edited_reply,
        usage,
    };
    let forked = fork(
        &store,
        &RUN,
        ForkAt::Replace { seq: k, kind: edit },
        run_id(3),
        Timestamp(5),
    )
    .expect("fork");
    assert_eq!(forked.head.map(|h| h.seq), Some(k));
    assert_eq!(forked.meta.get("edited").map(String::as_str), Some("true"));

    let before_edit = |run| state_at(&store, &run, k - 1, policy).expect("state").state;
    assert_eq!(before_edit(RUN), before_edit(run_id(3)));
    let a = state_at(&store, &RUN, k, policy).expect("state").state;
    let b = state_at(&store, &run_id(3), k, policy)
        .expect("state")
        .state;
    let changes = diff_states(&a, &b);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].kind, ChangeKind::Changed);
    assert!(
        changes[0].path.starts_with("/conversation/") && changes[0].path.ends_with("/content"),
        "{}",
        changes[0].path
    );
    assert_eq!(changes[0].new, Some(serde_json::json!(edited_reply)));

    let cmp = compare_runs(&store, &RUN, &run_id(3)).expect("compare");
    assert_eq!(cmp.common_prefix, k);
    assert_eq!(cmp.first_divergence.map(|d| d.seq), Some(k));
    // the original is untouched
    assert_eq!(store.run(&RUN).expect("run").expect("exists").len(), 600);
}

#[test]
fn an_edited_reply_s_calls_are_proposed_and_a_fork_after_a_reply_keeps_its_calls() {
    let (store, events) = store_with_run(600);
    let policy = SnapshotPolicy::default();
    // a reply that proposed calls, and one that did not
    let proposed_after = |seq: u64| {
        matches!(
            events.get(usize::try_from(seq + 1).expect("seq")).map(|e| &e.kind),
            Some(EventKind::ToolCallsProposed { response_seq, .. }) if *response_seq == seq
        )
    };
    let replies: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ModelResponded { .. }))
        .map(|e| e.seq)
        .collect();
    let with_calls = *replies
        .iter()
        .find(|&&s| proposed_after(s))
        .expect("a reply with calls");
    let without = *replies
        .iter()
        .find(|&&s| !proposed_after(s))
        .expect("a reply without");

    // forking "after" a reply with calls shares its proposals: the calls are not lost
    let plain = fork(
        &store,
        &RUN,
        ForkAt::After(with_calls),
        run_id(5),
        Timestamp(1),
    )
    .expect("fork");
    assert_eq!(plain.head.map(|h| h.seq), Some(with_calls + 1));
    let state = state_at(&store, &run_id(5), with_calls + 1, policy)
        .expect("state")
        .state;
    assert!(!state.proposed.is_empty(), "the reply's calls are pending");

    // an edit that adds calls to a reply that had none: proposed in the same append
    let reply = retrace_events::reply::ModelReply::from_edit(&serde_json::json!({
        "text": "one more look",
        "tool_calls": [
            {"id": "e1", "name": "fs.read", "arguments": {"path": "a.txt"}},
            {"id": "e2", "name": "fs.list"}
        ]
    }))
    .expect("a reply");
    let Some(EventKind::ModelResponded {
        request_seq, usage, ..
    }) = events
        .get(usize::try_from(without).expect("seq"))
        .map(|e| e.kind.clone())
    else {
        unreachable!()
    };
    let response = store
        .put_blob(&retrace_events::to_canonical_json(&reply).expect("json"))
        .expect("blob");
    let edit = EventKind::ModelResponded {
        request_seq,
        response,
        usage,
    };
    let forked = fork(
        &store,
        &RUN,
        ForkAt::Replace {
            seq: without,
            kind: edit,
        },
        run_id(6),
        Timestamp(2),
    )
    .expect("fork");
    assert_eq!(forked.head.map(|h| h.seq), Some(without + 1));
    let (_, proposed) = store
        .event_at(&run_id(6), without + 1)
        .expect("read")
        .expect("the proposals");
    let EventKind::ToolCallsProposed {
        response_seq,
        calls,
    } = proposed.kind
    else {
        panic!("not proposals: {proposed:?}");
    };
    assert_eq!(response_seq, without);
    let ids: Vec<&str> = calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"]);
    assert_eq!(calls[0].path.as_deref(), Some("a.txt"));
    assert_eq!(
        store.blob(&calls[1].args).expect("read").expect("stored"),
        b"{}"
    );
    let state = state_at(&store, &run_id(6), without + 1, policy)
        .expect("state")
        .state;
    assert_eq!(state.proposed.len(), 2);
}

#[test]
fn bad_edits_are_refused_before_anything_is_written() {
    let (store, events) = store_with_run(200);
    let runs_before = store.runs().expect("runs").len();
    let tool_req = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::ToolRequested { .. }))
        .expect("a tool request");
    let err = fork(
        &store,
        &RUN,
        ForkAt::Replace {
            seq: tool_req.seq,
            kind: tool_req.kind.clone(),
        },
        run_id(4),
        Timestamp(0),
    )
    .expect_err("a tool request is not editable");
    assert!(matches!(err, ForkError::BadEdit { .. }), "{err}");
    // a model reply edited into a reply to another request does not apply
    let reply = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::ModelResponded { .. }))
        .expect("a reply");
    let EventKind::ModelResponded {
        response, usage, ..
    } = reply.kind.clone()
    else {
        unreachable!()
    };
    let wrong = EventKind::ModelResponded {
        request_seq: 9_999,
        response,
        usage,
    };
    let err = fork(
        &store,
        &RUN,
        ForkAt::Replace {
            seq: reply.seq,
            kind: wrong,
        },
        run_id(4),
        Timestamp(0),
    )
    .expect_err("reply to a request that is not pending");
    assert!(err.to_string().contains("does not fit"), "{err}");
    let err = fork(&store, &RUN, ForkAt::After(5_000), run_id(4), Timestamp(0))
        .expect_err("beyond the head");
    assert!(err.to_string().contains("there is no seq 5000"), "{err}");
    assert_eq!(
        store.runs().expect("runs").len(),
        runs_before,
        "a refused fork created a run"
    );
}

#[test]
fn kind_counts_cover_a_range() {
    let (store, events) = store_with_run(300);
    let counts = kind_counts(&store, &RUN, 0..=299).expect("counts");
    assert_eq!(counts.values().sum::<u64>(), 300);
    assert_eq!(counts["run_started"], 1);
    let expected = events[100..=199]
        .iter()
        .filter(|e| e.kind.name() == "model_requested")
        .count() as u64;
    assert_eq!(
        kind_counts(&store, &RUN, 100..=199).expect("counts")["model_requested"],
        expected
    );
}
