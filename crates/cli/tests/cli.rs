//! The `retrace` binary end to end: demo, runs, verify, and clear errors for bad input.

use std::path::Path;
use std::process::{Command, Output};

fn retrace(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrace"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("RETRACE_STORE")
        .output()
        .expect("run the retrace binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_id_from_demo(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("recording run "))
        .and_then(|rest| rest.split(' ').next())
        .expect("demo prints the run id")
        .to_owned()
}

#[test]
fn demo_records_a_run_that_lists_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = retrace(&store, &["demo"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verified 14 events"), "{}", text(&out));
    let run = run_id_from_demo(&out);

    let out = retrace(&store, &["runs", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["run"], run.as_str());
    assert_eq!(line["events"], 14);

    let out = retrace(&store, &["verify", &run[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("14 events, 15 blobs verified"),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_exits_non_zero_and_names_run_and_seq_of_a_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = retrace(&store, &["demo"]);
    let run = run_id_from_demo(&out);
    // flip one byte of the event at seq 4 directly in the sled files
    let run_id: retrace_events::RunId = run.parse().unwrap();
    retrace_tests::tamper::flip_event_byte(&store, &run_id, 4, usize::MAX);
    let out = retrace(&store, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&format!("run {run} seq 4")), "{msg}");
    assert!(msg.contains("hash to"), "{msg}");
}

#[test]
fn bad_input_gets_a_clear_error_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = retrace(&missing, &["runs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no retrace store at"), "{}", text(&out));
    assert!(!missing.exists(), "a read-only command created a store");

    let store = dir.path().join("store");
    retrace(&store, &["demo"]);
    let out = retrace(&store, &["verify", "zz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a valid run id"), "{}", text(&out));
    let out = retrace(&store, &["verify", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no run id starts with `ffffffff`"),
        "{}",
        text(&out)
    );
}
