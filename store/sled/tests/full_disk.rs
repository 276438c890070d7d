//! A real full disk: the store on a 4 MiB tmpfs that the test mounts in a user and mount
//! namespace of its own (`unshare -Urm`), written until the kernel says `ENOSPC`, then grown
//! (`mount -o remount`) and reopened. Where the system allows no such namespace the test says
//! so loudly and is skipped.

use std::path::Path;
use std::process::Command;

use retrace_events::{Head, Timestamp};
use retrace_store::conformance::{chain_after, run_id};
use retrace_store::{NewRun, Store, VerifyOptions, verify_run};
use retrace_store_sled::{Options, SledStore};

/// Set in the child: the directory to mount the small filesystem on.
const CHILD_ENV: &str = "RETRACE_FULL_DISK_DIR";
/// Events the run ends with; their blobs need about three times the filesystem.
const EVENTS: u64 = 1_500;

fn mount(args: &[&str]) {
    let status = Command::new("mount")
        .args(args)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount {args:?}: {status}");
}

/// 8 KiB that do not compress, for event `seq`.
fn blob(seq: u64) -> Vec<u8> {
    let mut out = vec![0u8; 8 << 10];
    blake3::Hasher::new()
        .update(&seq.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Append events (each with its blob) to the run until `EVENTS`, or until an error.
fn fill(store: &SledStore, acked: &mut Option<Head>) -> retrace_store::Result<()> {
    let run = run_id(1);
    loop {
        let info = store.require_run(&run)?;
        if info.len() >= EVENTS {
            return Ok(());
        }
        let events = chain_after(run, info.head, 1);
        store.put_blob(&blob(events[0].seq))?;
        // the sample kinds refer to blake3(seq bytes)
        store.put_blob(&events[0].seq.to_le_bytes())?;
        *acked = Some(store.append(&run, info.head.map(|h| h.id), &events)?);
    }
}

fn options() -> Options {
    Options {
        checkpoint_bytes: 32 << 10,
        segment_bytes: 256 << 10,
        faults: None,
    }
}

/// The child's work, in its own namespaces.
fn child(dir: &Path) {
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=4m",
        "retrace-full-disk",
        &dir.display().to_string(),
    ]);
    let path = dir.join("store");
    let mut acked = None;
    let err = {
        let store = SledStore::open_with(&path, options()).expect("open on the small filesystem");
        store
            .create_run(NewRun::new(run_id(1), Timestamp(0)))
            .expect("create run");
        fill(&store, &mut acked).expect_err("4 MiB held 12 MiB of blobs")
    };
    let message = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    eprintln!("full disk after {:?}: {message}", acked.map(|h| h.seq));
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        acked.is_some_and(|h| h.seq > 100),
        "the disk filled too early"
    );

    mount(&["-o", "remount,size=64m", &dir.display().to_string()]);
    let store = SledStore::open_with(&path, options()).expect("reopen once there is room");
    let acked = acked.expect("acked");
    let at = store
        .own_events(&run_id(1), acked.seq..=acked.seq)
        .expect("in a fault test");
    assert_eq!(at[0].id, acked.id, "the last acknowledged append was lost");
    let mut resumed = None;
    fill(&store, &mut resumed).expect("resume");
    let expected = chain_after(run_id(1), None, EVENTS)
        .last()
        .expect("in a fault test")
        .head();
    assert_eq!(
        store.require_run(&run_id(1)).expect("in a fault test").head,
        Some(expected)
    );
    let report = verify_run(&store, &run_id(1), VerifyOptions::default()).expect("in a fault test");
    assert!(report.is_ok(), "{:?}", report.problem);
    eprintln!("full disk: reopened, resumed to {EVENTS} events, verified");
}

#[test]
#[ignore = "the child of a_full_disk_fails_writes_loses_nothing_and_the_store_resumes_once_there_is_room"]
fn full_disk_child() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn a_full_disk_fails_writes_loses_nothing_and_the_store_resumes_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Command::new("unshare").args(["-Urm", "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "\n*** SKIPPED a_full_disk_fails_writes…: this system allows no user and mount \
             namespace (`unshare -Urm true`: {probe:?}), so the test cannot mount the small \
             filesystem it fills. ***\n"
        );
        return;
    }
    let output = Command::new("unshare")
        .arg("-Urm")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "full_disk_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stderr.contains("full disk: reopened"), "{stderr}");
    eprintln!("{stderr}");
}
