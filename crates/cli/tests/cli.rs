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
        .unwrap()
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
        .unwrap()
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
    {
        let db = sled::open(&store).unwrap();
        let mut key = [0u8; 24];
        key[..16].copy_from_slice(&hex_bytes(&run));
        key[16..].copy_from_slice(&4u64.to_be_bytes());
        let id = db.open_tree("index").unwrap().get(key).unwrap().unwrap();
        let events = db.open_tree("events").unwrap();
        let mut bytes = events.get(&id).unwrap().unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        events.insert(&id, bytes).unwrap();
        db.flush().unwrap();
    }
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

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
