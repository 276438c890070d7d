//! The inspector driven through real egui frames (egui_kittest) over a real sled store
//! holding a run recorded by the runtime: select a run, travel by keyboard and by clicking,
//! and check that the detail and state shown are those of the event under the cursor.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use std::sync::Mutex;

use retrace_events::{Decision, Event, EventKind, RunId, Timestamp};
use retrace_inspector::{Command, Host, Inspector, Target, View};
use retrace_replay::{SnapshotPolicy, compare_runs, diff_states, state_at};
use retrace_store::Store;
use retrace_store_sled::SledStore;

mod children;
mod stories;

const AGENT: &str = r#"
name = "tidy"
system = "You tidy repositories."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.list", "fs.read", "fs.search", "fs.write", "fs.edit"]
[[policy]]
tool = "*"
action = "allow"
"#;

const CASSETTE: &str = r#"{"replies": [
  {"tool_calls": [{"id": "c1", "name": "fs.list", "arguments": {}},
                  {"id": "c2", "name": "fs.search", "arguments": {"pattern": "TODO"}}]},
  {"tool_calls": [{"id": "c3", "name": "fs.read", "arguments": {"path": "README.md"}}]},
  {"tool_calls": [{"id": "c4", "name": "fs.edit", "arguments": {"path": "README.md", "old": "TODO: describe", "new": "A demo."}}]},
  {"text": "Done: README tidied."}
]}"#;

/// An agent whose writes need approval: it writes a note, then says it is done.
const ASKING_AGENT: &str = r#"
name = "noter"
system = "You keep notes."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.write"]
"#;

const ASKING_CASSETTE: &str = r#"{"replies": [
  {"tool_calls": [{"id": "w1", "name": "fs.write", "arguments": {"path": "note.md", "content": "hello"}}]},
  {"text": "Noted."}
]}"#;

type Stop = retrace_runtime::executor::Stop;

/// Write an agent directory under `dir/name` and drive a run of it to its stop.
fn drive_agent(dir: &Path, name: &str, agent: &str, cassette: &str, run: RunId) -> Stop {
    let agent_dir = dir.join(name);
    std::fs::create_dir_all(agent_dir.join("ws")).expect("fixture");
    std::fs::write(agent_dir.join("agent.toml"), agent).expect("fixture");
    std::fs::write(agent_dir.join("cassette.json"), cassette).expect("fixture");
    std::fs::write(agent_dir.join("ws/README.md"), "# demo\nTODO: describe\n").expect("fixture");
    let store = SledStore::open(dir.join("store")).expect("fixture");
    drive(&store, &agent_dir, run, true)
}

/// Drive `run` of the agent in `agent_dir` on `store` (starting it first if `start`).
fn drive(store: &dyn Store, agent_dir: &Path, run: RunId, start: bool) -> Stop {
    let spec = retrace_runtime::spec::Spec::load(&agent_dir.join("agent.toml")).expect("fixture");
    let cassette = spec.model.cassette.as_deref().expect("fixture");
    let provider = retrace_providers::Scripted::load(cassette).expect("fixture");
    let runner =
        retrace_runtime::executor::Runner::new(store, spec, Box::new(provider)).expect("fixture");
    if start {
        runner.start(run, "do the task").expect("fixture");
    }
    tokio::runtime::Runtime::new()
        .expect("fixture")
        .block_on(runner.drive(run, &mut |_| {}))
        .expect("fixture")
}

/// A store with one finished run of the scripted agent above.
fn recorded_run(dir: &Path) -> RunId {
    let run = RunId::from_bytes([7; 16]);
    let stop = drive_agent(dir, "agent", AGENT, CASSETTE, run);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    run
}

/// The binary's part, as the tests play it: a real clock, counted run ids, and resume
/// requests written down (the test drives the run itself).
#[derive(Default)]
struct TestHost {
    resumed: Mutex<Vec<RunId>>,
    ids: Mutex<u8>,
}

impl Host for TestHost {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        Timestamp(u64::try_from(ms).expect("ms"))
    }

    fn new_run_id(&self) -> RunId {
        let mut n = self.ids.lock().expect("ids");
        *n += 1;
        RunId::from_bytes([0xf0 | *n; 16])
    }

    fn resume(&self, run: RunId) -> Result<(), String> {
        self.resumed.lock().expect("resumed").push(run);
        Ok(())
    }
}

/// Frames until the background data has arrived and the UI is still.
fn settle(harness: &mut Harness<'_, Inspector>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        harness.step();
        if !harness.state().busy() {
            harness.run_steps(3);
            if !harness.state().busy() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the inspector never settled");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn harness(store: Arc<dyn Store>, target: Target) -> Harness<'static, Inspector> {
    harness_with(store, Arc::new(TestHost::default()), target)
}

/// The inspector over `store` showing the raw event list (the view these tests travel in;
/// the step view has tests of its own in `steps.rs`).
fn harness_with(
    store: Arc<dyn Store>,
    host: Arc<dyn Host>,
    target: Target,
) -> Harness<'static, Inspector> {
    let mut harness = harness_in(store, host, target, View::Events);
    settle(&mut harness);
    harness
}

/// The inspector over `store` in `view`, not yet settled.
fn harness_in(
    store: Arc<dyn Store>,
    host: Arc<dyn Host>,
    target: Target,
    view: View,
) -> Harness<'static, Inspector> {
    let mut inspector = Inspector::new(store, host, target, || {});
    inspector.apply(Command::View(view));
    Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector)
}

/// The heading and state line the detail panel must show for `seq`.
fn expected(store: &dyn Store, run: &RunId, seq: u64) -> (String, String) {
    let (_, event) = store.event_at(run, seq).expect("fixture").expect("fixture");
    let state = state_at(store, run, seq, SnapshotPolicy::default())
        .expect("fixture")
        .state;
    (
        format!("seq {seq} · {}", event.kind.name()),
        format!("hash {}", &state.hash().to_string()[..16]),
    )
}

fn assert_shows(harness: &Harness<'_, Inspector>, store: &dyn Store, run: &RunId, seq: u64) {
    let (heading, hash) = expected(store, run, seq);
    assert_eq!(harness.state().position(), Some((*run, seq)));
    harness.get_by_label(&heading);
    harness.get_by_label_contains(&format!("state at seq {seq}:"));
    harness.get_by_label_contains(&hash);
}

#[test]
fn select_a_run_then_travel_by_keyboard_and_by_click() {
    let dir = tempfile::tempdir().unwrap();
    let run = recorded_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let len = store.require_run(&run).unwrap().len();
    assert!(
        len > 12,
        "the fixture run is long enough to travel ({len} events)"
    );
    let mut harness = harness(Arc::clone(&store), Target::default());

    // the runs panel lists the run; selecting it shows its first event
    harness.get_by_label_contains("tidy ").click();
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 0);
    // in the heading, the timeline row and the event's JSON
    assert!(harness.query_all_by_label_contains("run_started").count() >= 2);

    // keyboard: down three, up one, End, Home
    for _ in 0..3 {
        harness.key_press(egui::Key::ArrowDown);
    }
    harness.key_press(egui::Key::ArrowUp);
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 2);
    harness.key_press(egui::Key::End);
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, len - 1);
    assert!(
        harness
            .query_all_by_label_contains("finished: succeeded")
            .count()
            >= 1
    );
    harness.key_press(egui::Key::Home);
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 0);

    // click the middle of the scrubber: the cursor goes to the middle of the run
    harness.get_by_role(egui::Role::Slider).click();
    settle(&mut harness);
    let (_, mid) = harness.state().position().unwrap();
    assert!(
        (len / 3..=len * 2 / 3).contains(&mid),
        "clicked the middle of the scrubber, went to {mid} of {len}"
    );
    assert_shows(&harness, store.as_ref(), &run, mid);

    // click a row of the timeline
    harness.key_press(egui::Key::Home);
    settle(&mut harness);
    harness.get_by_label_contains("#5 ").click();
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 5);

    // jump to the next tool call from there
    harness.get_by_label("tool call >").click();
    settle(&mut harness);
    let (_, at) = harness.state().position().unwrap();
    let (_, event) = store.event_at(&run, at).unwrap().unwrap();
    assert!(
        at > 5 && event.kind.name().starts_with("tool_"),
        "{at}: {}",
        event.kind.name()
    );
    for seq in 6..at {
        let (_, between) = store.event_at(&run, seq).unwrap().unwrap();
        assert!(
            !between.kind.name().starts_with("tool_"),
            "skipped a tool event at {seq}"
        );
    }
    assert_shows(&harness, store.as_ref(), &run, at);
}

#[test]
fn opening_at_run_and_seq_shows_that_event_and_the_conversation_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let run = recorded_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let len = store.require_run(&run).unwrap().len();
    let harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: Some(len - 2),
        },
    );
    assert_shows(&harness, store.as_ref(), &run, len - 2);
    // the final reply is the answer shown and in the conversation, the tool results before
    // it too
    assert_eq!(
        harness
            .query_all_by_label_contains("Done: README tidied.")
            .count(),
        2
    );
    harness.get_by_label_contains("-> fs.read");
}

#[test]
fn an_unknown_run_and_an_empty_store_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let harness = harness(Arc::clone(&store), Target::default());
    harness.get_by_label_contains("This store has no runs yet");
    drop(harness);
    let harness = harness_for_missing(store);
    harness.get_by_label_contains("not found in this store");
}

fn harness_for_missing(store: Arc<dyn Store>) -> Harness<'static, Inspector> {
    harness(
        store,
        Target {
            run: Some(RunId::from_bytes([9; 16])),
            seq: None,
        },
    )
}

/// Open "edit and fork" on the event under the cursor, replace the content with `json` (select
/// all, type), check it reads as valid JSON, and fork.
fn fork_with_edit_typed(harness: &mut Harness<'_, Inspector>, json: &str) {
    harness.get_by_label("edit and fork").click();
    settle(harness);
    let editor = harness.get_by_label("edited content (JSON)");
    editor.focus();
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness
        .get_by_label("edited content (JSON)")
        .type_text(json);
    settle(harness);
    harness.get_by_label("valid JSON");
    harness.get_by_label("fork with edit").click();
    settle(harness);
}

#[test]
fn fork_with_an_edit_from_the_ui_diverges_at_the_edit_and_the_diff_shows_only_that_path() {
    let dir = tempfile::tempdir().unwrap();
    let run = recorded_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    // the first tool result: fs.list's output
    let k = (0..store.require_run(&run).unwrap().len())
        .find(|&s| {
            matches!(
                store.event_at(&run, s).unwrap().unwrap().1.kind,
                EventKind::ToolReturned { .. }
            )
        })
        .unwrap();
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: Some(k),
        },
    );
    assert_shows(&harness, store.as_ref(), &run, k);
    harness.get_by_label("mark as A").click();
    settle(&mut harness); // the diff button grows: the buttons after it move
    fork_with_edit_typed(&mut harness, r#"{"entries": [], "truncated": false}"#);

    // the inspector now shows the fork at the edited event
    let (fork, at) = harness.state().position().unwrap();
    assert_ne!(fork, run, "{:?}", harness.state().position());
    assert_eq!(at, k);
    assert_eq!(
        host.resumed.lock().unwrap().as_slice(),
        &[fork],
        "the fork was continued"
    );
    let comparison = compare_runs(store.as_ref(), &run, &fork).unwrap();
    assert_eq!(comparison.first_divergence.map(|d| d.seq), Some(k));
    let (_, edited) = store.event_at(&fork, k).unwrap().unwrap();
    let EventKind::ToolReturned { output, .. } = edited.kind else {
        panic!("the edit is a tool result");
    };
    assert_eq!(
        store.blob(&output).unwrap().unwrap(),
        br#"{"entries":[],"truncated":false}"#
    );

    // diff A (the original at k) with here (the fork at k): exactly the edited path
    harness.get_by_label_contains("diff A (").click();
    settle(&mut harness);
    harness.get_by_label(&format!("first divergent event: #{k}"));
    let a = state_at(store.as_ref(), &run, k, SnapshotPolicy::default())
        .unwrap()
        .state;
    let b = state_at(store.as_ref(), &fork, k, SnapshotPolicy::default())
        .unwrap()
        .state;
    let changes = diff_states(&a, &b);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].path.ends_with("/content"), "{changes:?}");
    harness.get_by_label("1 state changes");
    harness.get_by_label_contains(&format!("changed {}:", changes[0].path));
}

#[test]
fn a_reply_edited_in_the_ui_to_call_a_tool_is_followed_by_that_call_when_the_fork_continues() {
    let dir = tempfile::tempdir().unwrap();
    let run = recorded_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    // the final answer: the last model reply
    let k = (0..store.require_run(&run).unwrap().len())
        .rev()
        .find(|&s| {
            matches!(
                store.event_at(&run, s).unwrap().unwrap().1.kind,
                EventKind::ModelResponded { .. }
            )
        })
        .unwrap();
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: Some(k),
        },
    );
    fork_with_edit_typed(
        &mut harness,
        r#"{"text": "One more look.", "tool_calls": [{"id": "c9", "name": "fs.read", "arguments": {"path": "README.md"}}]}"#,
    );
    let (fork, at) = harness.state().position().unwrap();
    assert_ne!(fork, run);
    assert_eq!(at, k);
    assert_eq!(host.resumed.lock().unwrap().as_slice(), &[fork]);
    drop(harness);

    // the host continues the fork (as the binary does); the model has one more reply
    let agent_dir = dir.path().join("agent");
    let mut cassette: serde_json::Value = serde_json::from_str(CASSETTE).unwrap();
    cassette["replies"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"text": "Done, after a second look."}));
    std::fs::write(agent_dir.join("cassette.json"), cassette.to_string()).unwrap();
    let stop = drive(store.as_ref(), &agent_dir, fork, false);
    assert_eq!(
        stop,
        Stop::Finished(retrace_events::Outcome::Succeeded),
        "{stop:?}"
    );
    let kinds: Vec<EventKind> = store
        .events(&fork, k + 1..=k + 3)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    let [
        EventKind::ToolCallsProposed { calls, .. },
        EventKind::ToolRequested { call_id, tool, .. },
        EventKind::ToolReturned {
            call_id: answered,
            is_error: false,
            ..
        },
    ] = kinds.as_slice()
    else {
        panic!("the edited reply's call was not proposed and run: {kinds:?}");
    };
    assert_eq!((calls.len(), calls[0].tool.as_str()), (1, "fs.read"));
    assert_eq!((call_id.as_str(), tool.as_str()), ("c9", "fs.read"));
    assert_eq!(answered, "c9");
}

#[test]
fn a_reply_s_reasoning_is_shown_apart_from_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([9; 16]);
    let thinking = r#"{"replies": [
      {"text": "README first.",
       "reasoning": [{"text": "The task names no file; the README is the place to start.", "signature": "c2ln"},
                     {"redacted": "ZW5jcnlwdGVk"}],
       "tool_calls": [{"id": "c1", "name": "fs.read", "arguments": {"path": "README.md"}}]},
      {"text": "Done."}
    ]}"#;
    let stop = drive_agent(dir.path(), "agent", AGENT, thinking, run);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let k = (0..store.require_run(&run).unwrap().len())
        .find(|&s| {
            matches!(
                store.event_at(&run, s).unwrap().unwrap().1.kind,
                EventKind::ModelResponded { .. }
            )
        })
        .unwrap();
    let harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: Some(k),
        },
    );
    harness.get_by_label("Reasoning (2 blocks)");
    harness.get_by_label("The task names no file; the README is the place to start.");
    harness.get_by_label("(redacted by the provider)");
    harness.get_by_label("README first.");
    harness.get_by_label(r#"c1 fs.read {"path":"README.md"}"#);
}

#[test]
fn approving_from_the_ui_appends_the_decision_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([8; 16]);
    let stop = drive_agent(dir.path(), "noter", ASKING_AGENT, ASKING_CASSETTE, run);
    assert!(matches!(stop, Stop::Parked(_)), "{stop:?}");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let before = store.require_run(&run).unwrap().len();
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: None,
        },
    );
    harness.get_by_label("Pending approvals");
    let note = harness.get_by_label("note for the model");
    note.focus();
    note.type_text("fine by me");
    settle(&mut harness);
    harness.get_by_label("approve w1").click();
    settle(&mut harness);

    let (_, decided) = store.event_at(&run, before).unwrap().unwrap();
    match decided.kind {
        EventKind::ApprovalDecided {
            call_id,
            decision,
            by,
            note,
        } => {
            assert_eq!(
                (call_id.as_str(), decision, by.as_str()),
                ("w1", Decision::Approved, "inspector")
            );
            let note = store.blob(&note.unwrap()).unwrap().unwrap();
            assert_eq!(note, br#""fine by me""#);
        }
        other => panic!("expected the decision, found {other:?}"),
    }
    assert_eq!(host.resumed.lock().unwrap().as_slice(), &[run]);
    // the host continues it: here, the test
    let stop = drive(store.as_ref(), &dir.path().join("noter"), run, false);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("noter/ws/note.md")).unwrap(),
        "hello"
    );
}

#[test]
fn follow_head_picks_up_events_appended_by_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([8; 16]);
    drive_agent(dir.path(), "noter", ASKING_AGENT, ASKING_CASSETTE, run);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    follows_another_writer(&store, Arc::clone(&store), run);
}

/// The same on a PostgreSQL store, the writer another connection (as another process
/// would be): the inspector hears of its appends through LISTEN/NOTIFY.
#[test]
fn follow_head_on_postgres_picks_up_events_another_process_appends() {
    let Some(schema) = retrace_store_postgres::testing::Schema::fresh("inspector on postgres")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([9; 16]);
    drive_agent(dir.path(), "noter", ASKING_AGENT, ASKING_CASSETTE, run);
    let recorded = SledStore::open(dir.path().join("store")).unwrap();
    let store: Arc<dyn Store> = Arc::new(schema.store());
    retrace_eval::bundle::copy(&recorded, &store).unwrap();
    drop(recorded);
    follows_another_writer(&store, Arc::new(schema.store()), run);
}

/// The inspector on `store`, following `run`'s head, while `writer` (the same store or
/// another connection to it) appends three signals from another thread: the cursor
/// follows to the last, which the UI shows.
fn follows_another_writer(store: &Arc<dyn Store>, writer: Arc<dyn Store>, run: RunId) {
    let mut harness = harness(
        Arc::clone(store),
        Target {
            run: Some(run),
            seq: Some(0),
        },
    );
    harness.get_by_label("follow head").click();
    settle(&mut harness);
    let len = store.require_run(&run).expect("run").len();
    assert_eq!(harness.state().position(), Some((run, len - 1)));

    let appending = std::thread::spawn(move || {
        for i in 0..3u64 {
            let head = writer.require_run(&run).expect("run").head;
            let payload = writer
                .put_blob(format!("\"ping {i}\"").as_bytes())
                .expect("blob");
            let event = Event::after(
                head,
                Timestamp(1),
                EventKind::SignalReceived {
                    name: "ping".into(),
                    payload,
                },
            );
            writer
                .append(&run, head.map(|h| h.id), &[event])
                .expect("append");
        }
    });
    appending.join().expect("writer thread");
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness.state().position() != Some((run, len + 2)) {
        assert!(
            Instant::now() < deadline,
            "cursor stayed at {:?}",
            harness.state().position()
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, len + 2);
    assert!(harness.query_all_by_label_contains("signal ping").count() >= 1);
}

/// The inspector's resume, as the binary's is when a daemon holds the store.
struct DaemonHost(retrace_serve::Client);

impl Host for DaemonHost {
    fn now(&self) -> Timestamp {
        TestHost::default().now()
    }

    fn new_run_id(&self) -> RunId {
        retrace_runtime::entropy::new_run_id()
    }

    fn resume(&self, run: RunId) -> Result<(), String> {
        self.0
            .resume(&run.to_string())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[test]
fn follow_head_works_against_a_store_held_by_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([9; 16]);
    let parked = drive_agent(dir.path(), "noter", ASKING_AGENT, ASKING_CASSETTE, run);
    assert!(matches!(parked, Stop::Parked(_)), "{parked:?}");
    // the daemon owns the store now: the inspector reaches it only through its API
    let daemon = retrace_tests::daemon::Served::start(&dir.path().join("store"), 2);
    assert!(
        SledStore::open(dir.path().join("store")).is_err(),
        "the store is held"
    );
    let access = retrace_serve::Access::open(&dir.path().join("store"), false).unwrap();
    let client = access.daemon().expect("a daemon holds the store").clone();
    let store = access.store();
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::new(DaemonHost(client)),
        Target {
            run: Some(run),
            seq: Some(0),
        },
    );
    harness.get_by_label("follow head").click();
    settle(&mut harness);
    let parked_len = store.require_run(&run).unwrap().len();
    assert_eq!(harness.state().position(), Some((run, parked_len - 1)));
    harness.get_by_label("Pending approvals");

    // approve in the UI: the decision goes through the daemon's store, the resume to the
    // daemon, which drives the run to its end while the inspector follows
    harness.get_by_label("approve w1").click();
    settle(&mut harness);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        harness.step();
        let head = store.require_run(&run).unwrap().len() - 1;
        let finished = matches!(
            store.event_at(&run, head).unwrap(),
            Some((
                _,
                Event {
                    kind: EventKind::RunFinished { .. },
                    ..
                }
            ))
        );
        if finished && harness.state().position() == Some((run, head)) {
            settle(&mut harness);
            assert_shows(&harness, store.as_ref(), &run, head);
            harness.get_by_label(&format!("seq {head} · run_finished"));
            // the step index grew with the run as the daemon drove it: the step view has
            // its end, and the decision made here
            harness.state_mut().apply(Command::View(View::Steps));
            settle(&mut harness);
            harness.get_by_label("end of the run: succeeded");
            harness.get_by_label_contains("approved by inspector after ");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cursor stayed at {:?}",
            harness.state().position()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(store.require_run(&run).unwrap().len() > parked_len);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("noter/ws/note.md")).unwrap(),
        "hello"
    );
    drop(harness);
    drop(daemon);
}

#[test]
fn remembered_settings_reopen_the_last_run_of_the_same_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = recorded_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let settings = retrace_inspector::Settings {
        last_store: "/stores/a".into(),
        last_run: Some(run),
        follow_head: true,
        continue_runs: false,
        view: View::Time,
    };
    let mut inspector = Inspector::new(
        Arc::clone(&store),
        Arc::new(TestHost::default()),
        Target::default(),
        || {},
    );
    inspector.restore(&settings, "/stores/a");
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector);
    settle(&mut harness);
    let len = store.require_run(&run).unwrap().len();
    assert_eq!(harness.state().position(), Some((run, len - 1)));
    assert_eq!(harness.state().settings("/stores/a"), settings);

    // another store: the toggles come back, the run is not looked for
    let mut inspector = Inspector::new(
        Arc::clone(&store),
        Arc::new(TestHost::default()),
        Target::default(),
        || {},
    );
    inspector.restore(&settings, "/stores/b");
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector);
    settle(&mut harness);
    assert_eq!(harness.state().position(), None);
    assert!(harness.state().settings("/stores/b").follow_head);
}

/// A store whose every byte is fixed (ids, times, payloads): a 300-event run and a fork of
/// it with one tool result edited, for image snapshots.
fn fixed_store(dir: &Path) -> (Arc<dyn Store>, RunId, RunId, u64) {
    let store = SledStore::open(dir).expect("fixture");
    let run = RunId::from_bytes([3; 16]);
    let mut new = retrace_store::NewRun::new(run, Timestamp(1_795_000_000_000));
    new.meta.insert("name".into(), "snapshot".into());
    store.create_run(new).expect("fixture");
    let events = retrace_replay::testkit::valid_run(11, run, 300, false);
    let mut head = None;
    for event in &events {
        head = Some(
            store
                .append(
                    &run,
                    head.map(|h: retrace_events::Head| h.id),
                    std::slice::from_ref(event),
                )
                .expect("fixture"),
        );
    }
    let k = events
        .iter()
        .find(|e| e.seq > 100 && matches!(e.kind, EventKind::ToolReturned { .. }))
        .expect("fixture")
        .seq;
    let (_, original) = store.event_at(&run, k).expect("fixture").expect("fixture");
    let kind = retrace_replay::edited_kind(
        &store,
        original.kind,
        &serde_json::json!({"edited": true}),
        "snapshot",
    )
    .expect("fixture");
    let fork = retrace_replay::fork(
        &store,
        &run,
        retrace_replay::ForkAt::Replace { seq: k, kind },
        RunId::from_bytes([4; 16]),
        Timestamp(1_795_000_100_000),
    )
    .expect("fixture")
    .id;
    (Arc::new(store), run, fork, k)
}

#[test]
fn image_snapshots_of_the_main_views() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run, fork, k) = fixed_store(dir.path());
    let mut harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: Some(k),
        },
    );
    assert_shows(&harness, store.as_ref(), &run, k);
    harness.snapshot("runs_timeline_state");

    harness.get_by_label("mark as A").click();
    settle(&mut harness);
    harness
        .get_by_label_contains("snapshot 040404040404")
        .click();
    settle(&mut harness);
    harness.state_mut().apply(Command::MoveTo(k));
    settle(&mut harness);
    harness.get_by_label_contains("diff A (").click();
    settle(&mut harness);
    harness.get_by_label(&format!("first divergent event: #{k}"));
    assert_eq!(harness.state().position(), Some((fork, k)));
    harness.snapshot("diff");
}

#[test]
fn the_density_strip_counts_every_event_in_its_class_and_bin() {
    use retrace_inspector::source::{Class, Reply, Request, answer};
    let dir = tempfile::tempdir().unwrap();
    let (store, run, _, _) = fixed_store(dir.path());
    let len = store.require_run(&run).unwrap().len();
    let Reply::Overview { index, bins, .. } = answer(
        store.as_ref(),
        &TestHost::default(),
        &Request::Overview {
            run,
            bins: 7,
            carry: None,
        },
    ) else {
        panic!("no overview");
    };
    assert_eq!((index.expect("the steps").scanned, bins.len()), (len, 7));
    let mut expected = vec![[0u32; retrace_inspector::source::CLASSES]; 7];
    for (_, event) in store.events(&run, 0..=len - 1).unwrap() {
        let bin = usize::try_from(event.seq * 7 / len).unwrap();
        expected[bin][Class::of(&event.kind).index()] += 1;
    }
    assert_eq!(bins, expected);
    assert!(
        expected.iter().all(|b| b[0] > 0),
        "model calls all over the run"
    );
}

/// An agent with a small context window that reads big files: its requests soon no longer
/// fit, so the runtime compacts (a summary call the scripted provider answers).
const COMPACTING_AGENT: &str = r#"
name = "reader"
system = "You read files."
workspace = "ws"
[model]
provider = "scripted"
name = "demo"
cassette = "cassette.json"
[tools]
allow = ["fs.read"]
[context]
window_tokens = 4096
inline_result_tokens = 700
"#;

/// Files the compacting agent reads.
const BIG_FILES: usize = 10;

/// A store with one finished run of the compacting agent, and the run.
fn compacted_run(dir: &Path) -> RunId {
    let agent_dir = dir.join("reader");
    std::fs::create_dir_all(agent_dir.join("ws")).expect("fixture");
    std::fs::write(agent_dir.join("agent.toml"), COMPACTING_AGENT).expect("fixture");
    let mut replies = Vec::new();
    for i in 0..BIG_FILES {
        let text = (0..40)
            .map(|l| format!("file {i} line {l}: the quick brown fox jumps over the lazy dog"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(agent_dir.join(format!("ws/f{i}.txt")), text).expect("fixture");
        replies.push(serde_json::json!({"tool_calls": [
            {"id": format!("r{i}"), "name": "fs.read", "arguments": {"path": format!("f{i}.txt")}}
        ]}));
    }
    replies.push(serde_json::json!({"text": "Read them all."}));
    std::fs::write(
        agent_dir.join("cassette.json"),
        serde_json::json!({ "replies": replies }).to_string(),
    )
    .expect("fixture");
    let store = SledStore::open(dir.join("store")).expect("fixture");
    let run = RunId::from_bytes([9; 16]);
    let stop = drive(&store, &agent_dir, run, true);
    assert!(matches!(stop, Stop::Finished(_)), "{stop:?}");
    run
}

/// Seqs of the events of `run` matching `pick`.
fn seqs_of(store: &dyn Store, run: &RunId, pick: impl Fn(&EventKind) -> bool) -> Vec<u64> {
    let len = store.require_run(run).expect("fixture").len();
    store
        .events(run, 0..=len - 1)
        .expect("fixture")
        .into_iter()
        .filter(|(_, e)| pick(&e.kind))
        .map(|(_, e)| e.seq)
        .collect()
}

/// The model call after `after`: the messages since the previous call are marked new, the
/// last of them (a tool result) included.
fn assert_new_messages_marked(
    harness: &mut Harness<'_, Inspector>,
    store: &dyn Store,
    run: &RunId,
    after: u64,
) {
    let next = seqs_of(store, run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })
    .into_iter()
    .find(|&s| s > after)
    .expect("a second model call after the compaction");
    harness.state_mut().apply(Command::MoveTo(next));
    settle(harness);
    let rebuilt = retrace_replay::request::rebuild(store, run, next).expect("rebuilt");
    assert!(rebuilt.new > 0, "{rebuilt:?}");
    harness.get_by_label_contains(&format!(
        "Messages ({} as sent; {} new since the previous model call)",
        rebuilt.request.messages.len(),
        rebuilt.new
    ));
    harness.get_by_label("  1 user · pinned task  do the task");
    assert_eq!(
        harness.query_all_by_label_contains(" · new  ").count(),
        rebuilt.new,
        "the last {} messages are marked new",
        rebuilt.new
    );
    let last = rebuilt.request.messages.len();
    let Some(retrace_providers::ChatMessage::Tool { call_id, .. }) =
        rebuilt.request.messages.last().map(AsRef::as_ref)
    else {
        panic!("the last message is a tool result: {rebuilt:?}");
    };
    harness.get_by_label_contains(&format!("{last:>3} tool [{call_id}] · new  "));
}

#[test]
fn the_request_tab_shows_a_summary_request_and_later_the_pinned_task_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let run = compacted_run(dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
    let compactions = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ContextCompacted { .. })
    });
    let &compacted = compactions.first().expect("the run compacted");
    let (_, event) = store.event_at(&run, compacted).unwrap().unwrap();
    let EventKind::ContextCompacted {
        request_seq: Some(summary_call),
        evicted,
        ..
    } = event.kind
    else {
        panic!("a summarized compaction: {event:?}");
    };
    let mut harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: Some(compacted),
        },
    );
    assert_shows(&harness, store.as_ref(), &run, compacted);
    // the timeline row, and the legend of the density strip
    harness.get_by_label_contains(&format!(
        "context_compacted    compacted: {evicted} messages"
    ));
    harness.get_by_label("compaction");
    // the event tab shows the state's summary and count
    harness.get_by_label(&format!("compactions so far: {}", 1));
    harness.get_by_label("Summary (of the messages compacted so far)");

    // the request tab: the summary request, exactly as rebuilt
    harness.get_by_label("request").click();
    settle(&mut harness);
    let rebuilt = retrace_replay::request::rebuild(store.as_ref(), &run, compacted).unwrap();
    assert_eq!(rebuilt.seq, summary_call);
    let n = rebuilt.compacts.expect("a summary request");
    harness.get_by_label_contains(&format!(
        "request of model call #{summary_call} · step {} · attempt 1",
        rebuilt.request.step
    ));
    harness.get_by_label(&format!("summary request: compacts {n} messages"));
    let budget = rebuilt.budget.as_ref().expect("a budgeted request");
    harness.get_by_label_contains(&format!(
        "budget: {} of {} tokens",
        budget.tokens(),
        budget.limit
    ));
    harness.get_by_label_contains(&format!("tokenizer {}", budget.tokenizer));
    let messages = rebuilt.request.messages.len();
    harness.get_by_label_contains(&format!("Messages ({messages} as sent;"));
    assert_eq!(
        harness
            .query_all_by_label_contains(" · to summarize  ")
            .count(),
        usize::try_from(n).unwrap()
    );
    harness.get_by_label_contains(&format!("{messages:>3} user · summary instruction  "));

    // a later model call: the pinned task first, then the summary, then the rest
    let later = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })
    .into_iter()
    .find(|&s| s > compacted)
    .expect("a model call after the compaction");
    harness.state_mut().apply(Command::MoveTo(later));
    settle(&mut harness);
    assert_eq!(harness.state().position(), Some((run, later)));
    harness.get_by_label_contains(&format!("request of model call #{later} · "));
    let task = harness.get_by_label("  1 user · pinned task  do the task");
    let summary =
        harness.get_by_label_contains("  2 user · pinned summary  [Context summary of the");
    assert!(task.rect().top() < summary.rect().top());
    assert!(
        harness
            .query_all_by_label_contains("summary request")
            .next()
            .is_none(),
        "a step's request is no summary request"
    );
    // the summary message opens to its whole text
    summary.click();
    settle(&mut harness);
    harness.get_by_label_contains("Scripted summary of ");
    assert_new_messages_marked(&mut harness, store.as_ref(), &run, later);

    // a non-model event has no request tab
    harness.state_mut().apply(Command::MoveTo(0));
    settle(&mut harness);
    assert!(harness.query_by_label("request").is_none());
    harness.get_by_label("Event and payloads");
}

/// Measured durations set to a fixed value, wherever they are in an event's JSON.
fn fix(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "latency_ms" || key == "duration_ms" {
                    *v = serde_json::json!(25);
                } else {
                    fix(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix),
        _ => {}
    }
}

/// The compacting run copied, in the same store, into a run whose every byte is fixed:
/// times and measured durations set, so its frames can be compared with snapshots.
fn fixed_compacted_run(dir: &Path) -> (Arc<dyn Store>, RunId) {
    let original = compacted_run(dir);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.join("store")).expect("fixture"));
    let run = RunId::from_bytes([10; 16]);
    fixed_copy(store.as_ref(), dir, original, run, "reader (fixed)");
    (store, run)
}

/// When the fixed copies begin (ms since the Unix epoch): later than any real run, so they
/// are listed first.
const FIXED_START: u64 = 4_000_000_000_000;

/// `original` copied, in the same store, into run `id` (named `name`) whose every byte is
/// fixed: the agent directory's path in the spec, measured durations, and times — each
/// event recorded after the one before by what it waited for (a model's reply 1.4 s, a
/// tool's result 0.3 s, a human's decision 95 s, anything else 50 ms).
fn fixed_copy(store: &dyn Store, dir: &Path, original: RunId, id: RunId, name: &str) {
    let mut new = retrace_store::NewRun::new(id, Timestamp(FIXED_START));
    new.meta.insert("name".into(), name.into());
    store.create_run(new).expect("fixture");
    let len = store.require_run(&original).expect("fixture").len();
    let mut head: Option<retrace_events::Head> = None;
    let place = dir.to_string_lossy().into_owned();
    let mut at = FIXED_START;
    for (_, mut event) in store.events(&original, 0..=len - 1).expect("fixture") {
        if let EventKind::RunStarted { run, spec, .. } = &mut event.kind {
            // the spec names the agent's directory, a fresh temporary one each time
            let text = String::from_utf8(store.blob(spec).expect("fixture").expect("fixture"))
                .expect("fixture");
            *spec = store
                .put_blob(text.replace(&place, "/fixture").as_bytes())
                .expect("fixture");
            *run = id;
        }
        at += match event.kind {
            EventKind::RunStarted { .. } => 0,
            EventKind::ModelResponded { .. } | EventKind::ContextCompacted { .. } => 1_400,
            EventKind::ToolReturned { .. } => 300,
            EventKind::ApprovalDecided { .. } => 95_000,
            _ => 50,
        };
        let mut kind = serde_json::to_value(&event.kind).expect("fixture");
        fix(&mut kind);
        let event = Event {
            parent: head.map(|h| h.id),
            seq: event.seq,
            at: Timestamp(at),
            kind: serde_json::from_value(kind).expect("fixture"),
        };
        head = Some(
            store
                .append(&id, head.map(|h| h.id), std::slice::from_ref(&event))
                .expect("fixture"),
        );
    }
}

#[test]
fn image_snapshot_of_the_request_tab() {
    let dir = tempfile::tempdir().unwrap();
    let (store, run) = fixed_compacted_run(dir.path());
    let compacted = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ContextCompacted { .. })
    })[0];
    let later = seqs_of(store.as_ref(), &run, |k| {
        matches!(k, EventKind::ModelRequested { .. })
    })
    .into_iter()
    .find(|&s| s > compacted)
    .expect("fixture");
    let mut harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: Some(compacted),
        },
    );
    assert_shows(&harness, store.as_ref(), &run, compacted);
    harness.snapshot("compaction_state");
    harness.get_by_label("request").click();
    settle(&mut harness);
    harness.get_by_label_contains("summary request: compacts ");
    harness.snapshot("request_summary");
    harness.state_mut().apply(Command::MoveTo(later));
    settle(&mut harness);
    harness.get_by_label("  1 user · pinned task  do the task");
    harness.snapshot("request_after_compaction");
}

/// A blob of `value` as canonical JSON.
fn json_blob(store: &dyn Store, value: &serde_json::Value) -> retrace_events::BlobId {
    store
        .put_blob(&retrace_events::canonical_json(value))
        .expect("fixture")
}

/// The plan after `task.set`: one item done, one in progress, one pending, one blocked.
fn plan_set() -> serde_json::Value {
    serde_json::json!({"items": [
        {"id": 1, "title": "Read the docs", "status": "done"},
        {"id": 2, "title": "Pick a topic", "status": "in_progress"},
        {"id": 3, "title": "Write the report", "status": "pending"},
        {"id": 4, "title": "Publish", "status": "blocked", "note": "needs a login"}
    ]})
}

/// A run whose every byte is fixed, written event by event: `task.set` (seq 1, 2), a
/// `task.update` marking item 2 done (seq 3, 4), then a `user.ask` with `question` as its
/// arguments (seq 5) that parks it.
fn asking_run(dir: &Path, run: RunId, question: &serde_json::Value) -> Arc<dyn Store> {
    let store = SledStore::open(dir.join("store")).expect("fixture");
    let mut new = retrace_store::NewRun::new(run, Timestamp(1_795_000_000_000));
    new.meta.insert("name".into(), "asker".into());
    store.create_run(new).expect("fixture");
    let mut plan = plan_set();
    let set_args = serde_json::json!({"items": [
        {"title": "Read the docs", "status": "done"},
        {"title": "Pick a topic", "status": "in_progress"},
        {"title": "Write the report"},
        {"title": "Publish", "status": "blocked", "note": "needs a login"}
    ]});
    let set = plan.clone();
    plan["items"][1]["status"] = "done".into();
    plan["items"][1]["note"] = "sled or wasmtime".into();
    let update = plan;
    let tool = |store: &SledStore, call: &str, name: &str, args: &serde_json::Value| {
        EventKind::ToolRequested {
            call_id: call.into(),
            tool: name.into(),
            args: json_blob(store, args),
            idempotent: false,
        }
    };
    let returned =
        |store: &SledStore, call: &str, output: &serde_json::Value| EventKind::ToolReturned {
            call_id: call.into(),
            output: json_blob(store, output),
            is_error: false,
            duration_ms: 1,
        };
    let kinds = vec![
        EventKind::RunStarted {
            run,
            spec: json_blob(&store, &serde_json::json!({"name": "asker"})),
            input: json_blob(&store, &serde_json::json!("plan, then ask")),
        },
        tool(&store, "t1", "task.set", &set_args),
        returned(&store, "t1", &set),
        tool(
            &store,
            "t2",
            "task.update",
            &serde_json::json!({"id": 2, "status": "done", "note": "sled or wasmtime"}),
        ),
        returned(&store, "t2", &update),
        tool(&store, "ask1", "user.ask", question),
    ];
    let mut head: Option<retrace_events::Head> = None;
    for (i, kind) in kinds.into_iter().enumerate() {
        let at = Timestamp(1_795_000_000_000 + 1_000 * i as u64);
        let event = Event::after(head, at, kind);
        head = Some(
            store
                .append(&run, head.map(|h| h.id), std::slice::from_ref(&event))
                .expect("fixture"),
        );
    }
    let state = retrace_replay::state_at_head(&store, &run, SnapshotPolicy::default())
        .expect("fixture")
        .state;
    assert!(
        matches!(&state.status, retrace_replay::Status::AwaitingAnswer { call_id } if call_id == "ask1"),
        "{:?}",
        state.status
    );
    Arc::new(store)
}

/// The question with two choices the tests ask.
fn topic_question() -> serde_json::Value {
    serde_json::json!({"question": "Which topic?", "choices": ["sled", "wasmtime"]})
}

/// The last event of `run` and the state at its head.
fn head_of(store: &dyn Store, run: &RunId) -> (Event, retrace_replay::State) {
    let len = store.require_run(run).expect("the store reads").len();
    let (_, event) = store
        .event_at(run, len - 1)
        .expect("the store reads")
        .expect("the store reads");
    let state = retrace_replay::state_at_head(store, run, SnapshotPolicy::default())
        .expect("the store reads")
        .state;
    (event, state)
}

/// The head of `run` is the answer "wasmtime" (choice 2) to `ask1`, given in the inspector,
/// and the run no longer waits; that head.
fn answered_wasmtime(store: &dyn Store, run: &RunId) -> Event {
    let (event, state) = head_of(store, run);
    assert_eq!(
        output_of(store, &event),
        (
            "ask1".to_owned(),
            serde_json::json!({"answer": "wasmtime", "choice": 2, "by": "inspector"})
        )
    );
    assert!(!state.is_parked(), "{:?}", state.status);
    event
}

/// The output a `tool_returned` recorded, as JSON.
fn output_of(store: &dyn Store, event: &Event) -> (String, serde_json::Value) {
    match &event.kind {
        EventKind::ToolReturned {
            call_id,
            output,
            is_error: false,
            ..
        } => (
            call_id.clone(),
            serde_json::from_slice(
                &store
                    .blob(output)
                    .expect("the store reads")
                    .expect("the store reads"),
            )
            .expect("the store reads"),
        ),
        other => panic!("expected the answer's tool_returned, found {other:?}"),
    }
}

#[test]
fn the_plan_panel_shows_the_plan_at_the_cursor_and_follows_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([12; 16]);
    let store = asking_run(dir.path(), run, &topic_question());
    let mut harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: None,
        },
    );
    // at the head: the plan after the task.update
    assert_shows(&harness, store.as_ref(), &run, 5);
    harness.get_by_label("Plan 2 of 4 done");
    harness.get_by_label("[x] 1. Read the docs");
    harness.get_by_label("[x] 2. Pick a topic — sled or wasmtime");
    harness.get_by_label("[ ] 3. Write the report");
    harness.get_by_label("[!] 4. Publish — needs a login");

    // back to the task.update's request: its result is not in yet, the plan is task.set's
    harness.key_press(egui::Key::ArrowUp);
    harness.key_press(egui::Key::ArrowUp);
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 3);
    harness.get_by_label("Plan 1 of 4 done");
    harness.get_by_label("[~] 2. Pick a topic");
    assert!(
        harness
            .query_by_label("[x] 2. Pick a topic — sled or wasmtime")
            .is_none()
    );
    // the question is not asked yet here
    assert!(harness.query_by_label("Which topic?").is_none());

    // before task.set returned there is no plan at all
    harness.key_press(egui::Key::Home);
    settle(&mut harness);
    assert_shows(&harness, store.as_ref(), &run, 0);
    assert!(harness.query_by_label_contains("Plan ").is_none());

    // and forward again to the head
    harness.key_press(egui::Key::End);
    settle(&mut harness);
    harness.get_by_label("Plan 2 of 4 done");
}

#[test]
fn clicking_a_choice_records_the_answer_and_the_run_is_no_longer_parked() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([13; 16]);
    let store = asking_run(dir.path(), run, &topic_question());
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: None,
        },
    );
    harness.get_by_label("Question for you");
    harness.get_by_label("Which topic?");
    harness.get_by_role_and_label(egui::accesskit::Role::Button, "sled");
    // a question with choices only takes no free text
    assert!(harness.query_by_label("your answer").is_none());
    harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "wasmtime")
        .click();
    settle(&mut harness);

    let event = answered_wasmtime(store.as_ref(), &run);
    assert_eq!(event.seq, 6);
    assert_eq!(host.resumed.lock().unwrap().as_slice(), &[run]);
    // the cursor follows to the answer; the question is gone
    harness.get_by_label_contains("answer to ask1 recorded; the run continues");
    assert_shows(&harness, store.as_ref(), &run, 6);
    assert!(harness.query_by_label("Question for you").is_none());
}

#[test]
fn a_free_text_answer_is_typed_and_recorded_and_earlier_the_question_only_shows() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([14; 16]);
    let store = asking_run(
        dir.path(),
        run,
        &serde_json::json!({"question": "What should the report be called?"}),
    );
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: None,
        },
    );
    harness.get_by_label("What should the report be called?");
    // nothing typed: nothing to send
    assert!(
        harness
            .get_by_label("Answer")
            .accesskit_node()
            .is_disabled()
    );
    // without "continue with the runtime", the run waits for `retrace resume`
    harness.get_by_label("continue with the runtime").click();
    settle(&mut harness);
    harness.get_by_label_contains("the run then goes on with `retrace resume`");
    let field = harness.get_by_label("your answer");
    field.focus();
    field.type_text("Notes on sled");
    settle(&mut harness);
    harness.get_by_label("Answer").click();
    settle(&mut harness);

    let (event, state) = head_of(store.as_ref(), &run);
    assert_eq!(
        output_of(store.as_ref(), &event),
        (
            "ask1".to_owned(),
            serde_json::json!({"answer": "Notes on sled", "by": "inspector"})
        )
    );
    assert!(!state.is_parked(), "{:?}", state.status);
    assert!(host.resumed.lock().unwrap().is_empty());
    harness.get_by_label_contains(&format!(
        "answer to ask1 recorded; continue the run with `retrace resume {run}`"
    ));

    // at the question's own event the state still waits on it: shown, not answerable there
    harness.state_mut().apply(Command::MoveTo(5));
    settle(&mut harness);
    harness.get_by_label("What should the report be called?");
    harness.get_by_label("answer it at the run's newest event, if it still waits there");
    assert!(harness.query_by_label("your answer").is_none());
}

#[test]
fn image_snapshot_of_the_plan_and_a_question() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([15; 16]);
    let store = asking_run(dir.path(), run, &topic_question());
    let mut harness = harness(
        Arc::clone(&store),
        Target {
            run: Some(run),
            seq: None,
        },
    );
    assert_shows(&harness, store.as_ref(), &run, 5);
    harness.get_by_label("Plan 2 of 4 done");
    harness.snapshot("plan_and_question");
}

#[test]
fn an_answer_goes_through_the_store_a_running_daemon_holds() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunId::from_bytes([16; 16]);
    drop(asking_run(dir.path(), run, &topic_question()));
    // the daemon owns the store now: the inspector reaches it only through its API
    let daemon = retrace_tests::daemon::Served::start(&dir.path().join("store"), 2);
    let access = retrace_serve::Access::open(&dir.path().join("store"), false).unwrap();
    assert!(access.daemon().is_some(), "a daemon holds the store");
    let store = access.store();
    let host = Arc::new(TestHost::default());
    let mut harness = harness_with(
        Arc::clone(&store),
        Arc::clone(&host) as Arc<dyn Host>,
        Target {
            run: Some(run),
            seq: None,
        },
    );
    // the hand-written run has no agent to continue it: record the answer only
    harness.get_by_label("continue with the runtime").click();
    settle(&mut harness);
    harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "wasmtime")
        .click();
    settle(&mut harness);
    answered_wasmtime(store.as_ref(), &run);
    assert!(host.resumed.lock().unwrap().is_empty());
    drop(harness);
    drop(daemon);
}
