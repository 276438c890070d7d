//! The determinism check over runs the runtime recorded on a real sled store: every kind of
//! decision (model calls with a transient failure and its retry, allowed tools, an approval
//! asked and granted, a policy denial, a denied approval, the loop guard's warning, finishes)
//! comes out the same under today's `decide`; a deliberately changed `decide` is caught at
//! the right seq with expected and actual spelled out.

use std::path::Path;

use retrace_eval::check::{Action, check_run};
use retrace_events::{Decision, EventKind, Outcome, RunId, Timestamp};
use retrace_providers::Scripted;
use retrace_replay::{State, decide_approval};
use retrace_runtime::decide::{Agent, Next, decide};
use retrace_runtime::executor::{Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store::Store;
use retrace_store_sled::SledStore;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// Every kind of decision in one script: a transient model failure, reads (allowed), the
/// same search three times (the loop guard warns), an edit (denied by a rule), a write (asks;
/// the test decides), then the answer.
const SCRIPT: &str = r#"{"replies": [
  {"error": {"transient": true, "message": "overloaded"}},
  {"tool_calls": [{"id": "r1", "name": "fs.read", "arguments": {"path": "README.md"}}]},
  {"tool_calls": [{"id": "s1", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "s2", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "s3", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "e1", "name": "fs.edit", "arguments": {"path": "README.md", "old": "TODO", "new": "done"}},
                  {"id": "w1", "name": "fs.write", "arguments": {"path": "notes.md", "content": "checked"}}]},
  {"text": "Read, searched, noted."}
]}"#;

/// A run of [`SCRIPT`] with its write approved or denied; the store and the run.
async fn recorded(dir: &Path, approve: bool) -> (SledStore, RunId) {
    write(
        &dir.join("agent.toml"),
        r#"
name = "checked"
system = "You check the readme."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.read", "fs.search", "fs.edit", "fs.write"]
[[policy]]
tool = "fs.edit"
action = "deny"
[budgets]
loop_limit = 3
"#,
    );
    write(&dir.join("cassette.json"), SCRIPT);
    write(&dir.join("ws/README.md"), "# demo\nTODO\n");
    let store = SledStore::open(dir.join("store")).expect("store");
    let run = RunId::from_bytes([if approve { 1 } else { 2 }; 16]);
    {
        let spec = Spec::load(&dir.join("agent.toml")).expect("spec");
        let provider = Scripted::load(&dir.join("cassette.json")).expect("cassette");
        let runner = Runner::new(&store, spec, Box::new(provider)).expect("runner");
        runner.start(run, "check the readme").expect("start");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
        let decision = if approve {
            Decision::Approved
        } else {
            Decision::Denied
        };
        decide_approval(&store, &run, None, decision, "ann", None, Timestamp(1)).expect("decide");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    }
    (store, run)
}

fn names(store: &SledStore, run: &RunId) -> Vec<String> {
    store
        .events(run, 0..=u64::MAX)
        .expect("events")
        .iter()
        .map(|(_, e)| match &e.kind {
            EventKind::SignalReceived { name, .. } => format!("signal:{name}"),
            other => other.name().to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_recorded_decision_comes_out_the_same() {
    for approve in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, run) = recorded(dir.path(), approve).await;
        let kinds = names(&store, &run);
        for kind in [
            "model_failed",
            "approval_requested",
            "approval_decided",
            "signal:loop_warning",
            "run_finished",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        let check = check_run(&store, &run, &decide).expect("checks");
        assert!(check.passed(), "{:#?}", check.divergence);
        assert_eq!(check.events, kinds.len() as u64);
        // 7 model calls, 4 tools run or denied (the 3rd search is not run: the warning
        // comes first), the edit denied, one approval asked, the warning, the finish
        assert!(check.decisions >= 14, "{} decisions", check.decisions);
    }
}

/// Today's `decide`, except that it never asks: what a bug in the policy code would do.
fn never_asks(agent: &Agent, state: &State) -> Next {
    match decide(agent, state) {
        Next::AskApproval { call, .. } => Next::RunTool {
            call_id: call.call_id,
            tool: call.tool,
            args: call.args,
            rerun: false,
        },
        other => other,
    }
}

/// Today's `decide`, except that it stops after three tool results.
fn stops_early(agent: &Agent, state: &State) -> Next {
    match decide(agent, state) {
        Next::CallModel { .. } if state.totals.tool_calls >= 3 => Next::Finish {
            outcome: Outcome::Succeeded,
            reason: "enough".into(),
        },
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_decide_is_caught_at_the_first_decision_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, run) = recorded(dir.path(), true).await;
    let events = store.events(&run, 0..=u64::MAX).expect("events");
    let seq_of = |want: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .find(|(_, e)| want(&e.kind))
            .map(|(_, e)| e.seq)
            .expect("present")
    };

    let check = check_run(&store, &run, &never_asks).expect("checks");
    let d = check.divergence.expect("caught");
    assert_eq!(
        d.seq,
        seq_of(&|k| matches!(k, EventKind::ApprovalRequested { .. }))
    );
    assert_eq!(
        d.actual,
        Action::AskApproval {
            call_id: "w1".into()
        }
    );
    let Action::RunTool { call_id, tool, .. } = &d.expected else {
        panic!("expected a tool run, got {:?}", d.expected)
    };
    assert_eq!((call_id.as_str(), tool.as_str()), ("w1", "fs.write"));
    let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(paths.contains(&"/action"), "{paths:?}");
    assert!(paths.contains(&"/tool"), "{paths:?}");

    // the fourth model call (after three tool results) is where this one parts
    let check = check_run(&store, &run, &stops_early).expect("checks");
    let d = check.divergence.expect("caught");
    let third_result = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::ToolReturned { .. }))
        .nth(2)
        .map(|(_, e)| e.seq)
        .expect("three results");
    let next_call = events
        .iter()
        .find(|(_, e)| e.seq > third_result && matches!(e.kind, EventKind::ModelRequested { .. }))
        .map(|(_, e)| e.seq)
        .expect("a model call after it");
    assert_eq!(d.seq, next_call);
    assert_eq!(d.actual, Action::CallModel);
    assert_eq!(
        d.expected,
        Action::Finish {
            outcome: Outcome::Succeeded
        }
    );
    assert_eq!(d.expected_reason.as_deref(), Some("enough"));
}
