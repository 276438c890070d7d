//! The conformance suite on the sled backend, each check in a fresh on-disk store.

use retrace_store_sled::SledStore;

retrace_store::conformance_suite!(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open sled store");
    (dir, store)
});
