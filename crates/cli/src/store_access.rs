//! The one way commands reach a store. Today that is opening the sled files directly; when
//! `retrace serve` holds a store, this is where commands will go through its API instead.

use std::path::Path;

use anyhow::{Context, bail};
use retrace_store_sled::SledStore;

/// Open the store in `dir`, creating it if needed (for commands that write).
pub fn open_or_create(dir: &Path) -> anyhow::Result<SledStore> {
    SledStore::open(dir).with_context(|| format!("cannot open store {}", dir.display()))
}

/// Open an existing store (for commands that only read): a missing directory is an error,
/// not a silently created empty store.
pub fn open_existing(dir: &Path) -> anyhow::Result<SledStore> {
    if !dir.exists() {
        bail!(
            "no retrace store at {}; pass --store DIR (or set RETRACE_STORE), or start a run first with `retrace run SPEC --input TEXT`",
            dir.display()
        );
    }
    open_or_create(dir)
}
