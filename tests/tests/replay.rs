//! Replay across processes: the same log folded in two separate processes yields identical
//! state hashes after every event, equal to an in-process fold.

use std::fmt::Write;
use std::process::Command;

use retrace_events::{RunId, Timestamp};
use retrace_replay::State;
use retrace_replay::testkit::valid_run;
use retrace_store::{NewRun, Store};
use retrace_store_sled::SledStore;

fn fold_in_child(dir: &std::path::Path, run: &RunId) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fold_hashes"))
        .arg(dir)
        .arg(run.to_hex())
        .output()
        .expect("run fold_hashes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn two_processes_derive_identical_state_hashes_after_every_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = RunId::from_bytes([0x42; 16]);
    let events = valid_run(2026, run, 3_000, false);
    {
        let store = SledStore::open(dir.path()).expect("open");
        store
            .create_run(NewRun::new(run, Timestamp(0)))
            .expect("create");
        store.append(&run, None, &events).expect("append");
    }
    let mut expected = String::new();
    let mut state = State::default();
    for event in &events {
        retrace_replay::apply(&mut state, event).expect("valid run");
        let _ = writeln!(expected, "{} {}", event.seq, state.hash());
    }
    let first = fold_in_child(dir.path(), &run);
    let second = fold_in_child(dir.path(), &run);
    assert_eq!(events.len(), 3_000);
    assert_eq!(first.lines().count(), events.len());
    assert_eq!(first, second, "two processes disagree");
    assert_eq!(first, expected, "a child process disagrees with this one");
}
