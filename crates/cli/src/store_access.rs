//! The one way commands reach a store: through `retrace serve` when a daemon holds it,
//! by opening the files otherwise ([`retrace_serve::Access`]). Output is the same either way.

use std::path::Path;

use retrace_serve::Access;

/// Reach the store in `dir`, creating it if needed (for commands that write).
pub fn open_or_create(dir: &Path) -> anyhow::Result<Access> {
    retrace_runtime::spec::guard_store(dir);
    Ok(Access::open(dir, true)?)
}

/// Reach an existing store (for commands that only read): a missing directory is an error,
/// not a silently created empty store.
pub fn open_existing(dir: &Path) -> anyhow::Result<Access> {
    retrace_runtime::spec::guard_store(dir);
    Ok(Access::open(dir, false)?)
}
