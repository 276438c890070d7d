//! The one way commands reach a store: through `retrace serve` when a daemon holds it,
//! by opening the files otherwise, or in PostgreSQL when `--store` is a `postgres://` URL
//! ([`retrace_serve::Access`]). Output is the same either way.

use std::path::Path;

use retrace_serve::Access;

/// Reach the store in `dir`, creating it if needed (for commands that write).
pub fn open_or_create(dir: &Path) -> anyhow::Result<Access> {
    guard(dir);
    Ok(Access::open(dir, true)?)
}

/// Reach an existing store (for commands that only read): a missing directory is an error,
/// not a silently created empty store.
pub fn open_existing(dir: &Path) -> anyhow::Result<Access> {
    guard(dir);
    Ok(Access::open(dir, false)?)
}

/// Keep agents' tools out of a store directory (a PostgreSQL store is out of their reach
/// already: their sandbox has no network unless the spec grants it).
fn guard(dir: &Path) {
    if !dir
        .to_str()
        .is_some_and(retrace_store_postgres::is_postgres_url)
    {
        retrace_runtime::spec::guard_store(dir);
    }
}
