//! Child runs (`agent.delegate`) in the inspector, over the shipped `examples/team` (an
//! orchestrator with three reader children): listed under their parent by their agent's
//! name, opened from the delegating call's card, and left again for the parent at that call;
//! and a routed model call's card (`examples/policy`) saying which model answered and why.

use super::*;

use crate::stories::{at, example_run, steps_harness};

#[test]
fn open_a_child_run_from_its_delegate_call_and_come_back_to_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let parent = RunId::from_bytes([31; 16]);
    let (store, stop) = example_run(dir.path(), "team", parent);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    // the call `check` delegated to a reader: its step begins at its `tool_requested`
    let requested = seqs_of(
        store.as_ref(),
        &parent,
        |k| matches!(k, EventKind::ToolRequested { call_id, .. } if call_id == "check"),
    )[0];
    let (_, started) = store.event_at(&parent, requested + 1).unwrap().unwrap();
    let EventKind::ChildStarted { child, agent, .. } = started.kind else {
        panic!("the call's child_started follows it: {started:?}");
    };
    assert_eq!(child, RunId::child(&parent, requested, "check"));
    assert_eq!(agent, "reader");
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let mut harness = steps_harness(Arc::clone(&store), host, at(parent, Some(0)), View::Steps);

    // the runs panel: the three children under the parent, by their agent's name
    let nested = format!("reader {} sub-agent of {}", child.short(), parent.short());
    harness.get_by_label_contains(&nested);
    let children = harness
        .query_all_by_label_contains(&format!(" sub-agent of {}", parent.short()))
        .count();
    assert_eq!(children, 3);
    let top = |label: &str| harness.get_by_label_contains(label).rect().top();
    assert!(top(&format!("orchestrator {}", parent.short())) < top(&nested));

    // select the delegate call: its card says which child it started
    harness.state_mut().apply(Command::MoveTo(requested));
    settle(&mut harness);
    let header = harness.get_by_label("agent.delegate · check").rect();
    harness.get_by_label("agent.delegate · check").click();
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((parent, requested)));
    harness.get_by_label(&format!("child run {} (reader)", child.short()));
    // its "open child run" (the cards of the other delegate calls have one too)
    let open = harness
        .query_all_by_label("open child run")
        .filter(|b| b.rect().top() > header.top())
        .min_by(|a, b| a.rect().top().total_cmp(&b.rect().top()))
        .expect("the check call's card has an \"open child run\" button");
    open.click();
    settle(&mut harness);

    // the child is shown, from its start, with the way back to its parent at the call
    assert_eq!(harness.state().position(), Some((child, 0)));
    let len = store.require_run(&child).unwrap().len();
    harness.get_by_label(&format!("{}@0 of {len}", child.short()));
    harness.get_by_label("task");
    harness.get_by_label("back to parent at check").click();
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((parent, requested)));
    harness.get_by_label(&format!("seq {requested} · tool_requested"));
    harness.get_by_label(&format!("child run {} (reader)", child.short()));
}

#[test]
fn a_hook_decision_reads_as_what_it_decided_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let parent = RunId::from_bytes([32; 16]);
    let (store, stop) = example_run(dir.path(), "team", parent);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    // the hook refused the write outside out/ (with the reason it gave: in a test binary,
    // which cannot start the sandbox's helper, why it could not decide)
    let decided = seqs_of(
        store.as_ref(),
        &parent,
        |k| matches!(k, EventKind::HookDecided { call_id, .. } if call_id == "write-1"),
    )[0];
    let (_, event) = store.event_at(&parent, decided).unwrap().unwrap();
    let EventKind::HookDecided { decision, .. } = event.kind else {
        unreachable!()
    };
    let decision: serde_json::Value =
        serde_json::from_slice(&store.blob(&decision).unwrap().unwrap()).unwrap();
    assert_eq!(decision["decision"], "deny");
    let reason = decision["reason"].as_str().unwrap();
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let harness = steps_harness(store, host, at(parent, Some(decided)), View::Events);
    harness.get_by_label(&format!("seq {decided} · hook_decided"));
    harness.get_by_label(&format!(
        "hook writes-in-out before the call: deny — {reason}"
    ));
}

#[test]
fn a_routed_model_call_says_which_model_answered_and_why() {
    // examples/policy routes its first step to `cheap` by rule, the next to `main`
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([33; 16]);
    let (store, stop) = example_run(dir.path(), "policy", run);
    assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    let routed = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRouted { .. })
    });
    assert_eq!(routed.len(), 2);
    let mut harness = steps_harness(Arc::clone(&store), host, at(run, Some(0)), View::Steps);
    harness.get_by_label("routed to cheap: rule 0: the first step");
    harness.get_by_label("model call · small");
    harness.state_mut().apply(Command::MoveTo(routed[1] + 1));
    settle(&mut harness);
    harness.get_by_label("routed to main: the default");
}
