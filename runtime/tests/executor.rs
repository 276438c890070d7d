//! The executor end to end on a real sled store with the scripted provider: a run using
//! every built-in tool completes and verifies; approvals park the run and a decision resumes
//! it; a denial reaches the model as a failed tool result.

use std::path::Path;

use retrace_events::{EventKind, Outcome, RunId};
use retrace_providers::Scripted;
use retrace_replay::{SnapshotPolicy, State, fold, state_at};
use retrace_runtime::executor::{Progress, Runner, Stop};
use retrace_runtime::spec::Spec;
use retrace_store::{Store, VerifyOptions, verify_run};
use retrace_store_sled::SledStore;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// An agent directory: spec, cassette, workspace with a README.
fn agent_dir(policy: &str, cassette: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        &dir.path().join("agent.toml"),
        &format!(
            r#"
name = "tidy"
system = "You tidy repositories."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.list", "fs.read", "fs.search", "fs.write", "fs.edit"]
{policy}
"#
        ),
    );
    write(&dir.path().join("cassette.json"), cassette);
    write(&dir.path().join("ws/README.md"), "# demo\nTODO: describe\n");
    dir
}

const EVERY_TOOL: &str = r#"{"replies": [
  {"tool_calls": [{"id": "c1", "name": "fs.list", "arguments": {}},
                  {"id": "c2", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "c3", "name": "fs.read", "arguments": {"path": "README.md"}}]},
  {"tool_calls": [{"id": "c4", "name": "fs.edit", "arguments": {"path": "README.md", "old": "TODO: describe", "new": "A demo."}},
                  {"id": "c5", "name": "fs.write", "arguments": {"path": "out/summary.md", "content": "README tidied."}}]},
  {"text": "Done: README tidied, summary written."}
]}"#;

fn runner<'a>(store: &'a SledStore, dir: &Path) -> Runner<'a> {
    let spec = Spec::load(&dir.join("agent.toml")).expect("spec");
    let provider =
        Scripted::load(spec.model.cassette.as_deref().expect("cassette")).expect("cassette");
    Runner::new(store, spec, Box::new(provider)).expect("runner")
}

fn kinds(store: &SledStore, run: &RunId) -> Vec<&'static str> {
    store
        .events(run, 0..=u64::MAX)
        .expect("events")
        .iter()
        .map(|(_, e)| e.kind.name())
        .collect()
}

#[tokio::test]
async fn a_run_using_every_builtin_tool_completes_verifies_and_rederives() {
    let dir = agent_dir("[[policy]]\ntool = \"*\"\naction = \"allow\"", EVERY_TOOL);
    let store = SledStore::open(dir.path().join("store")).expect("store");
    let runner = runner(&store, dir.path());
    let run = RunId::from_bytes([9; 16]);
    runner.start(run, "tidy the readme").expect("start");
    let mut seen = Vec::new();
    let stop = runner
        .drive(run, &mut |p| {
            if let Progress::Appended(e) = p {
                seen.push(e.kind.name());
            }
        })
        .await
        .expect("drive");
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ws/README.md")).expect("read"),
        "# demo\nA demo.\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ws/out/summary.md")).expect("read"),
        "README tidied."
    );
    let all = kinds(&store, &run);
    assert_eq!(all.iter().filter(|k| **k == "tool_returned").count(), 5);
    assert_eq!(all.iter().filter(|k| **k == "model_requested").count(), 4);
    assert_eq!(all.last(), Some(&"run_finished"));
    assert_eq!(
        &all[1..],
        &seen[..],
        "progress reported every appended event"
    );

    // the log verifies, and the state at every seq re-derives identically
    assert!(
        verify_run(&store, &run, VerifyOptions::default())
            .expect("verify")
            .is_ok()
    );
    let events: Vec<_> = store
        .events(&run, 0..=u64::MAX)
        .expect("events")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for seq in 0..events.len() {
        let folded: State = fold(&events[..=seq]).expect("fold");
        let derived = state_at(
            &store,
            &run,
            seq as u64,
            SnapshotPolicy {
                every: 7,
                write: true,
            },
        )
        .expect("state")
        .state;
        assert_eq!(folded.hash(), derived.hash(), "seq {seq}");
    }
    // driving a finished run does nothing
    let again = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert_eq!(again, Stop::Finished(Outcome::Succeeded));
    assert_eq!(kinds(&store, &run).len(), all.len());
}

const ONE_WRITE: &str = r#"{"replies": [
  {"tool_calls": [{"id": "w1", "name": "fs.write", "arguments": {"path": "notes.md", "content": "hello"}}]},
  {"text": "Finished."}
]}"#;

#[tokio::test]
async fn writes_park_for_approval_and_a_denial_reaches_the_model() {
    for approve in [true, false] {
        let dir = agent_dir("", ONE_WRITE);
        let store = SledStore::open(dir.path().join("store")).expect("store");
        let runner = runner(&store, dir.path());
        let run = RunId::from_bytes([if approve { 1 } else { 2 }; 16]);
        runner.start(run, "write a note").expect("start");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        let Stop::Parked(reason) = stop else {
            panic!("expected a park, got {stop:?}")
        };
        assert!(reason.contains("awaiting approval of w1"), "{reason}");
        assert!(
            !dir.path().join("ws/notes.md").exists(),
            "nothing written before approval"
        );

        // a human decides (what `retrace approve` appends), then the run resumes
        let head = store.require_run(&run).expect("run").head.expect("head");
        let decision = if approve {
            retrace_events::Decision::Approved
        } else {
            retrace_events::Decision::Denied
        };
        let event = retrace_events::Event::after(
            Some(head),
            retrace_events::Timestamp(1),
            EventKind::ApprovalDecided {
                call_id: "w1".into(),
                decision,
                by: "ann".into(),
                note: None,
            },
        );
        store.append(&run, Some(head.id), &[event]).expect("decide");
        let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
        assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
        assert_eq!(dir.path().join("ws/notes.md").exists(), approve);
        let events = store.events(&run, 0..=u64::MAX).expect("events");
        let tool_result = events
            .iter()
            .find_map(|(_, e)| match &e.kind {
                EventKind::ToolReturned {
                    output, is_error, ..
                } => Some((*output, *is_error)),
                _ => None,
            })
            .expect("a tool result");
        assert_eq!(tool_result.1, !approve);
        if !approve {
            let text = String::from_utf8(store.blob(&tool_result.0).expect("read").expect("blob"))
                .expect("utf-8");
            assert!(text.contains("denied by ann"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_drives_many_runs_concurrently() {
    let dir = agent_dir("[[policy]]\ntool = \"*\"\naction = \"allow\"", EVERY_TOOL);
    // every run edits the same README: give each its own workspace copy via its own spec
    let store = SledStore::open(dir.path().join("store")).expect("store");
    let runners: Vec<_> = (0..20u8)
        .map(|i| {
            let ws = dir.path().join(format!("ws{i}"));
            write(&ws.join("README.md"), "# demo\nTODO: describe\n");
            let mut spec = Spec::load(&dir.path().join("agent.toml")).expect("spec");
            spec.workspace = ws;
            let provider = Scripted::load(spec.model.cassette.as_deref().expect("cassette"))
                .expect("cassette");
            (
                RunId::from_bytes([100 + i; 16]),
                Runner::new(&store, spec, Box::new(provider)).expect("runner"),
            )
        })
        .collect();
    for (run, runner) in &runners {
        runner.start(*run, "tidy").expect("start");
    }
    let drives = runners
        .iter()
        .map(|(run, runner)| async move { runner.drive(*run, &mut |_| {}).await });
    let stops = futures::future::join_all(drives).await;
    for ((run, _), stop) in runners.iter().zip(stops) {
        assert_eq!(
            stop.expect("drive"),
            Stop::Finished(Outcome::Succeeded),
            "run {run}"
        );
        assert!(
            verify_run(&store, run, VerifyOptions::default())
                .expect("verify")
                .is_ok()
        );
    }
}

#[tokio::test]
async fn request_records_stay_small_and_rebuild_exactly_what_the_model_saw() {
    const STEPS: usize = 300;
    let mut replies: Vec<serde_json::Value> = (0..STEPS)
        .map(|i| {
            serde_json::json!({"tool_calls": [{"id": format!("a{i}"), "name": "fs.append",
                "arguments": {"path": "log.txt", "text": format!("line {i}: {}\n", "x".repeat(900))}}]})
        })
        .collect();
    replies.push(serde_json::json!({"text": "all logged"}));
    let cassette = serde_json::json!({ "replies": replies }).to_string();
    let dir = agent_dir("[[policy]]\ntool = \"*\"\naction = \"allow\"", &cassette);
    std::fs::write(
        dir.path().join("agent.toml"),
        std::fs::read_to_string(dir.path().join("agent.toml"))
            .expect("read")
            .replace("\"fs.edit\"]", "\"fs.edit\", \"fs.append\"]"),
    )
    .expect("write");
    let store = SledStore::open(dir.path().join("store")).expect("store");
    let runner = runner(&store, dir.path());
    let run = RunId::from_bytes([0x77; 16]);
    runner.start(run, "log").expect("start");
    assert_eq!(
        runner.drive(run, &mut |_| {}).await.expect("drive"),
        Stop::Finished(Outcome::Succeeded)
    );

    let events = store.events(&run, 0..=u64::MAX).expect("events");
    let mut sizes = Vec::new();
    let mut summaries = 0;
    for (_, event) in &events {
        let EventKind::ModelRequested { request, .. } = &event.kind else {
            continue;
        };
        // rebuilding the record gives exactly the window the state held when it was made
        let (record, refs) =
            retrace_replay::request::reconstruct(&store, request).expect("reconstruct");
        let before = state_at(&store, &run, event.seq - 1, SnapshotPolicy::default())
            .expect("state")
            .state;
        let mut sent = retrace_replay::request::pinned(&before);
        let mut window = retrace_replay::request::window(&before);
        if let Some(evict) = record.compacts {
            // a summary request: the messages it summarizes, then the instruction
            window.truncate(usize::try_from(evict).expect("count"));
            window.push(refs.last().expect("instruction").clone());
            summaries += 1;
        } else {
            sizes.push(store.blob(request).expect("read").expect("blob").len());
        }
        sent.extend(window);
        assert_eq!(refs, sent, "request at seq {}", event.seq);
    }
    assert_eq!(sizes.len(), STEPS + 1);
    // 600 messages pass through a state that keeps 256: compacted before any is lost
    assert!(summaries >= 2, "{summaries} summary requests");
    let average = sizes.iter().sum::<usize>() / sizes.len();
    let late = sizes[STEPS - 10];
    // a delta record names the two new messages; a full one (every 128) the whole window
    assert!(average < 2_000, "average request record {average} bytes");
    assert!(
        late < 1_500,
        "a late delta record is {late} bytes: records must not grow with the run"
    );
    assert!(sizes.iter().max().copied().unwrap_or(0) < 64_000);
}

#[tokio::test]
async fn a_model_call_in_flight_at_a_crash_is_reissued_from_its_record_not_recorded_again() {
    let dir = agent_dir("[[policy]]\ntool = \"*\"\naction = \"allow\"", EVERY_TOOL);
    let store = SledStore::open(dir.path().join("store")).expect("store");
    let runner = runner(&store, dir.path());
    let run = RunId::from_bytes([0x55; 16]);
    runner.start(run, "tidy").expect("start");
    // the process recorded its first model call's intent, then died before the reply
    let state = retrace_replay::state_at_head(&store, &run, SnapshotPolicy::default())
        .expect("state")
        .state;
    let put = |v: serde_json::Value| {
        store
            .put_blob(&retrace_events::canonical_json(&v))
            .expect("blob")
    };
    let params = std::collections::BTreeMap::new();
    let header = retrace_replay::request::Header {
        model: "demo",
        system: put(serde_json::json!("You tidy repositories.")),
        tools: put(serde_json::json!([])),
        params: &params,
        step: 0,
        pinned: Vec::new(),
        artifacts: None,
        budget: None,
    };
    let (blob, _) = retrace_replay::request::record(&store, &state, &header, None).expect("record");
    let head = store.require_run(&run).expect("run").head;
    let intent = retrace_events::Event::after(
        head,
        retrace_events::Timestamp(2),
        EventKind::ModelRequested {
            request: blob,
            attempt: 1,
        },
    );
    store
        .append(&run, head.map(|h| h.id), &[intent])
        .expect("append");

    let stop = runner.drive(run, &mut |_| {}).await.expect("drive");
    assert_eq!(stop, Stop::Finished(Outcome::Succeeded));
    let all = kinds(&store, &run);
    assert_eq!(
        all.iter().filter(|k| **k == "model_requested").count(),
        4,
        "the in-flight call was re-issued, not recorded again"
    );
    assert_eq!(all[1], "model_requested");
    assert_eq!(all[2], "model_responded");
    assert!(
        verify_run(&store, &run, VerifyOptions::default())
            .expect("verify")
            .is_ok()
    );
}
