//! The conformance suite on the in-memory backend, plus tampering detection.

use retrace_events::{BlobId, Timestamp};
use retrace_store::conformance::{append_n, run_id};
use retrace_store::{MemoryStore, NewRun, ProblemKind, Store, VerifyOptions, verify_run};

retrace_store::conformance_suite!(|| ((), MemoryStore::new()));

#[test]
fn verification_reports_tampered_event_and_blob_with_run_and_seq() {
    let store = MemoryStore::new();
    let run = run_id(1);
    store.create_run(NewRun::new(run, Timestamp(0))).unwrap();
    append_n(&store, run, 40, 40);

    let victim = store.own_events(&run, 17..=17).unwrap().remove(0);
    let mut bytes = victim.bytes;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    store.tamper_event(&run, 17, bytes);
    let problem = verify_run(&store, &run, VerifyOptions::default())
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((problem.run, problem.seq), (run, 17));
    assert!(matches!(problem.kind, ProblemKind::BadEvent { id, .. } if id == victim.id));

    let store = MemoryStore::new();
    store.create_run(NewRun::new(run, Timestamp(0))).unwrap();
    append_n(&store, run, 40, 40);
    let blob = BlobId::of(&23u64.to_le_bytes());
    let mut payload = store.blob(&blob).unwrap().unwrap();
    payload[0] ^= 0x80;
    store.tamper_blob(&blob, payload);
    let problem = verify_run(&store, &run, VerifyOptions::default())
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((problem.run, problem.seq), (run, 23));
    assert!(matches!(problem.kind, ProblemKind::BlobMismatch { blob: b, .. } if b == blob));
    assert!(problem.to_string().contains("seq 23"), "{problem}");
    // without blob checks the event chain itself is intact
    assert!(
        verify_run(&store, &run, VerifyOptions { blobs: false })
            .unwrap()
            .is_ok()
    );
}

/// A blob named inside another (a tool result's artifact) is verified too; an id-like text
/// that names nothing stored is not a problem.
#[test]
fn verification_reaches_the_blobs_a_payload_names() {
    use retrace_events::{Event, EventKind};
    let store = MemoryStore::new();
    let run = run_id(2);
    store.create_run(NewRun::new(run, Timestamp(0))).unwrap();
    let artifact = store.put_blob(b"the whole output").unwrap();
    let nothing = BlobId::of(b"never stored");
    let result = format!(r#"{{"stdout_artifact":"{artifact}","note":"{nothing}"}}"#);
    let payload = store.put_blob(result.as_bytes()).unwrap();
    let event = Event::root(
        Timestamp(1),
        EventKind::SignalReceived {
            name: "x".into(),
            payload,
        },
    );
    store.append(&run, None, &[event]).unwrap();
    let report = verify_run(&store, &run, VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.blobs, 2, "the payload and the artifact it names");
    store.tamper_blob(&artifact, b"the whole outpuT".to_vec());
    let problem = verify_run(&store, &run, VerifyOptions::default())
        .unwrap()
        .problem
        .unwrap();
    assert_eq!((problem.run, problem.seq), (run, 0));
    assert!(matches!(problem.kind, ProblemKind::BlobMismatch { blob, .. } if blob == artifact));
}
