//! The store conformance suite on [`RemoteStore`]: every check goes through a real
//! `retrace serve` (in this process, on its own runtime) over its unix socket, to a real
//! sled store on disk. The same behaviour as a store opened directly is what lets every
//! command work unchanged while a daemon holds the store.

use retrace_serve::RemoteStore;
use retrace_tests::daemon::Served;

fn served() -> ((Served, tempfile::TempDir), RemoteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let served = Served::start(&dir.path().join("store"), 2);
    let store = RemoteStore::new(served.client());
    // the daemon stops before its directory goes
    ((served, dir), store)
}

retrace_store::conformance_suite!(served);
