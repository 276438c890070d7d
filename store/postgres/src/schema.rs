//! The schema, created and migrated by the program: versioned SQL files in `migrations/`
//! (`V{n}__{name}.sql`), embedded at build time and applied in order by `refinery`, which
//! records what it applied in `refinery_schema_history`. Migrations run under a
//! transaction-independent advisory lock, so that workers starting together migrate once.

use retrace_store::{Error, Result};
use tokio_postgres::Client;

refinery::embed_migrations!("migrations");

/// Key of the advisory lock held while migrating (any constant shared by all retrace
/// processes; "retrace" in ASCII).
const MIGRATION_LOCK: i64 = 0x0072_6574_7261_6365;

/// Bring the schema in the connection's `search_path` up to date, creating the schema
/// itself when it is missing. Returns the schema's name.
pub(crate) async fn migrate(client: &mut Client) -> Result<String> {
    let backend = |op| move |e: tokio_postgres::Error| Error::backend(op, e);
    // held from before the schema is looked for: `CREATE SCHEMA IF NOT EXISTS` is not safe
    // against itself in two sessions at once
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend("waiting for the migration lock"))?;
    let migrated = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let schema = migrated?;
    unlocked.map_err(backend("releasing the migration lock"))?;
    Ok(schema)
}

async fn migrate_locked(client: &mut Client) -> Result<String> {
    let backend = |op| move |e: tokio_postgres::Error| Error::backend(op, e);
    let schema: Option<String> = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(backend("reading the current schema"))?
        .get(0);
    let schema = if let Some(schema) = schema {
        schema
    } else {
        // search_path names a schema that does not exist yet: create the first one
        let wanted: String = client
            .query_one("SELECT current_setting('search_path')", &[])
            .await
            .map_err(backend("reading search_path"))?
            .get(0);
        // the first name as PostgreSQL reads it (unquoted names fold to lower case)
        let first: Option<String> = client
            .query_one(
                "SELECT (parse_ident(trim(split_part(current_setting('search_path'), ',', 1))))[1]",
                &[],
            )
            .await
            .ok()
            .and_then(|row| row.get(0));
        let Some(first) = first.filter(|f| !f.is_empty() && !f.starts_with('$')) else {
            return Err(Error::backend(
                "choosing the store's schema",
                format!(
                    "search_path `{wanted}` names no schema to create the store in; \
                     give one with ?options=-c%20search_path%3DNAME"
                ),
            ));
        };
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&first)))
            .await
            .map_err(backend("creating the store's schema"))?;
        first
    };
    // a schema a newer retrace migrated further (or one edited by hand) is refused, not used
    let report = migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await;
    let report = report.map_err(|e| {
        let text = e.to_string();
        if text.contains("missing from the filesystem") || text.contains("divergent") {
            Error::backend(
                "migrating the schema",
                format!(
                    "the store's schema was migrated by a newer retrace, or changed by hand \
                     ({text}); use the retrace release that migrated it (nothing was changed)"
                ),
            )
        } else {
            Error::backend("migrating the schema", e)
        }
    })?;
    for applied in report.applied_migrations() {
        tracing::info!(schema = %schema, migration = %applied, "schema migrated");
    }
    Ok(schema)
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
