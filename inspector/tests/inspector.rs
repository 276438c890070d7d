//! The inspector driven through real egui frames (egui_kittest) over a real sled store
//! holding a run recorded by the runtime: select a run, travel by keyboard and by clicking,
//! and check that the detail and state shown are those of the event under the cursor.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use retrace_events::RunId;
use retrace_inspector::{Inspector, Target};
use retrace_replay::{SnapshotPolicy, state_at};
use retrace_store::Store;
use retrace_store_sled::SledStore;

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

/// A store with one finished run of the scripted agent above.
fn recorded_run(dir: &Path) -> RunId {
    std::fs::create_dir_all(dir.join("agent/ws")).expect("fixture");
    std::fs::write(dir.join("agent/agent.toml"), AGENT).expect("fixture");
    std::fs::write(dir.join("agent/cassette.json"), CASSETTE).expect("fixture");
    std::fs::write(dir.join("agent/ws/README.md"), "# demo\nTODO: describe\n").expect("fixture");
    let store = SledStore::open(dir.join("store")).expect("fixture");
    let spec = retrace_runtime::spec::Spec::load(&dir.join("agent/agent.toml")).expect("fixture");
    let provider =
        retrace_providers::Scripted::load(spec.model.cassette.as_deref().expect("fixture")).expect("fixture");
    let runner = retrace_runtime::executor::Runner::new(&store, spec, Box::new(provider)).expect("fixture");
    let run = RunId::from_bytes([7; 16]);
    runner.start(run, "tidy the readme").expect("fixture");
    let stop = tokio::runtime::Runtime::new()
        .expect("fixture")
        .block_on(runner.drive(run, &mut |_| {}))
        .expect("fixture");
    assert!(
        matches!(stop, retrace_runtime::executor::Stop::Finished(_)),
        "{stop:?}"
    );
    run
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
    let inspector = Inspector::new(store, target, || {});
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .build_ui_state(|ui, app: &mut Inspector| app.ui(ui), inspector);
    settle(&mut harness);
    harness
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

    // click a row of the timeline
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
    // the final reply is in the conversation, the tool results before it too
    harness.get_by_label_contains("Done: README tidied.");
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
