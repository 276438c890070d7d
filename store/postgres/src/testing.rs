//! For tests of any crate that need a PostgreSQL store: the database named by
//! `RETRACE_TEST_PG` (`.ci/with-postgres` starts a throwaway cluster and sets it, with
//! `PGPASSWORD`), and a fresh schema per test, dropped afterwards.
//!
//! Without `RETRACE_TEST_PG`, tests skip with a loud message, except under CI (`CI` set),
//! where a missing database fails the test: CI must never pass on skipped PostgreSQL tests.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::PgStore;
use crate::target::Target;

/// The variable naming the test database.
pub const TEST_DATABASE_ENV: &str = "RETRACE_TEST_PG";

/// The test database, or `None` (after saying so on stderr) when there is none outside CI.
///
/// # Panics
/// Under CI without a database, or when `RETRACE_TEST_PG` does not parse.
pub fn database(test: &str) -> Option<Target> {
    match std::env::var(TEST_DATABASE_ENV) {
        Ok(url) if !url.is_empty() => {
            Some(Target::parse(&url).unwrap_or_else(|e| panic!("{TEST_DATABASE_ENV}: {e}")))
        }
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: {TEST_DATABASE_ENV} is not set under CI; run the tests through \
             `.ci/with-postgres` (as .ci/run does)"
        ),
        _ => {
            eprintln!(
                "\n*** SKIPPED {test}: no PostgreSQL ({TEST_DATABASE_ENV} is not set); run \
                 `.ci/with-postgres cargo test ...` to include it ***\n"
            );
            None
        }
    }
}

/// A schema of its own in the test database, dropped with everything in it on drop.
#[derive(Debug)]
pub struct Schema {
    target: Target,
    name: String,
}

impl Schema {
    /// A fresh schema for `test`, or `None` as [`database`] says.
    pub fn fresh(test: &str) -> Option<Self> {
        let base = database(test)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("t_{}_{}_{nanos}", std::process::id(), next_suffix());
        let target = base.with_options(&format!("-c search_path={name}"));
        Some(Self { target, name })
    }

    /// Where the schema is: the test database with `search_path` set to it.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `--store` URL for a child process: the test database's URL with the schema as
    /// `options` (the password stays in `PGPASSWORD`).
    pub fn url(&self) -> String {
        let base = std::env::var(TEST_DATABASE_ENV).unwrap_or_default();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", self.name)
    }

    /// A store in this schema (created and migrated on first use).
    ///
    /// # Panics
    /// When the store cannot be opened.
    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.target).unwrap_or_else(|e| panic!("open {}: {e}", self.name))
    }
}

impl Schema {
    /// Run `sql` (one or more statements, no parameters) in this schema on a connection of
    /// its own, as an outside client would: to tamper with rows, or look at them. Returns
    /// the first column of each row the last statement returned, as text.
    ///
    /// # Panics
    /// When the database cannot be reached or the statement fails.
    pub fn sql(&self, sql: &str) -> Vec<Option<String>> {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn try_sql(&self, sql: &str) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
        let config = self.target.config.clone();
        let sql = sql.to_owned();
        // a thread of its own: callers may be inside a runtime already
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for test SQL");
            runtime.block_on(async move {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(connection);
                let messages = client.simple_query(&sql).await;
                drop(client);
                let _ = driver.await;
                Ok(messages?
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            Some(row.get(0).map(str::to_owned))
                        }
                        _ => None,
                    })
                    .collect())
            })
        })
        .join()
        .expect("test SQL thread")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop_it = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            crate::schema::quote(&self.name)
        );
        if let Err(e) = self.try_sql(&drop_it) {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

fn next_suffix() -> u32 {
    // distinct across threads of one test binary
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
