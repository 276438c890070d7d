//! [`PgStore`]: the [`Store`] trait on PostgreSQL.

use std::ops::RangeInclusive;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use retrace_events::{BlobId, Event, EventId, Head, RunId};
use retrace_store::{
    Error, NewRun, Result, RunInfo, Store, StoreStats, StoredEvent, Subscription,
    check_fork_origin, prepare_append,
};
use tokio_postgres::NoTls;

use crate::bridge::Bridge;
use crate::lease::Fence;
use crate::rows::{RUN_COLUMNS, event_id, int, pack_blob, run_info, uint, unpack_blob};
use crate::tail::{Tail, listen, notice};
use crate::target::Target;

/// A query parameter.
pub(crate) type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// How long a session may sit idle inside a transaction before the server ends it.
pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(2);

/// Connections a store keeps open at most.
const POOL_SIZE: usize = 16;

/// What the store's tasks share.
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) pool: Pool,
    /// `retrace_<md5 of the schema, 24 hex digits>`: where appends are announced.
    pub(crate) channel: String,
    pub(crate) schema: String,
    pub(crate) tail: Tail,
}

fn backend(op: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::backend(op, e)
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    Error::backend("connecting to PostgreSQL", e)
}

impl Shared {
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Run one statement in its own transaction that commits synchronously: it has
    /// reached the disk when this returns.
    pub(crate) async fn durably(
        &self,
        op: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend(op))?;
        let statement = tx.prepare_cached(sql).await.map_err(backend(op))?;
        let ((), rows) = futures::try_join!(
            tx.batch_execute("SET LOCAL synchronous_commit = on"),
            tx.query(&statement, params),
        )
        .map_err(backend(op))?;
        tx.commit().await.map_err(backend(op))?;
        Ok(rows)
    }

    pub(crate) async fn own_events(
        &self,
        run: RunId,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<StoredEvent>> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT seq, id, bytes FROM retrace_events \
                 WHERE run = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            )
            .await
            .map_err(backend("preparing an event read"))?;
        let hi = i64::try_from(hi).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[&run.as_bytes().as_slice(), &int(lo, "a seq")?, &hi],
            )
            .await
            .map_err(backend("reading events"))?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: uint(row.get(0), "an event's seq")?,
                    id: event_id(row.get(1), "an event id")?,
                    bytes: row.get(2),
                })
            })
            .collect()
    }

    pub(crate) async fn run_exists(&self, id: RunId) -> Result<bool> {
        Ok(self.run(id).await?.is_some())
    }

    async fn run(&self, id: RunId) -> Result<Option<RunInfo>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM retrace_runs WHERE id = $1"
            ))
            .await
            .map_err(backend("preparing a run read"))?;
        client
            .query_opt(&statement, &[&id.as_bytes().as_slice()])
            .await
            .map_err(backend("reading a run"))?
            .as_ref()
            .map(run_info)
            .transpose()
    }

    /// The append transaction: lock the run's row, check the head (and the lease, when
    /// fenced), insert, move the head, announce; commit.
    async fn append(
        &self,
        run: RunId,
        expected: Option<EventId>,
        events: Vec<Event>,
        fence: Option<Fence>,
    ) -> Result<Head> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(backend("beginning an append"))?;
        let lock = tx
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM retrace_runs WHERE id = $1 FOR UPDATE"
            ))
            .await
            .map_err(backend("preparing an append"))?;
        let run_bytes = run.as_bytes().as_slice();
        // acknowledged only once on disk, whatever the server's default says
        let lock_params: [Param<'_>; 1] = [&run_bytes];
        let ((), row) = futures::try_join!(
            tx.batch_execute("SET LOCAL synchronous_commit = on"),
            tx.query_opt(&lock, &lock_params),
        )
        .map_err(backend("locking the run for an append"))?;
        let row = row.ok_or(Error::RunNotFound { run })?;
        let info = run_info(&row)?;
        let (records, head) = prepare_append(&info, expected, &events)?;
        if let Some(fence) = &fence {
            fence.check(&tx, run).await?;
        }
        let mut seqs = Vec::with_capacity(records.len());
        let mut ids = Vec::with_capacity(records.len());
        let mut bytes = Vec::with_capacity(records.len());
        for record in &records {
            seqs.push(int(record.seq, "a seq")?);
            ids.push(record.id.as_bytes().as_slice());
            bytes.push(record.bytes.as_slice());
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO retrace_events (run, seq, id, bytes) \
                 SELECT $1, s, i, b FROM unnest($2::bigint[], $3::bytea[], $4::bytea[]) AS t (s, i, b)",
            )
            .await
            .map_err(backend("preparing an append"))?;
        let advance = tx
            .prepare_cached("UPDATE retrace_runs SET head_seq = $2, head_id = $3 WHERE id = $1")
            .await
            .map_err(backend("preparing an append"))?;
        let announce = tx
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(backend("preparing an append"))?;
        let head_seq = int(head.seq, "a seq")?;
        let payload = notice(&run);
        // one round trip for the three: the driver pipelines concurrent queries
        let head_id = head.id.as_bytes().as_slice();
        let insert_params: [Param<'_>; 4] = [&run_bytes, &seqs, &ids, &bytes];
        let advance_params: [Param<'_>; 3] = [&run_bytes, &head_seq, &head_id];
        let announce_params: [Param<'_>; 2] = [&self.channel, &payload];
        futures::try_join!(
            tx.execute(&insert, &insert_params),
            tx.execute(&advance, &advance_params),
            tx.execute(&announce, &announce_params),
        )
        .map_err(backend("writing an append"))?;
        tx.commit().await.map_err(backend("committing an append"))?;
        Ok(head)
    }
}

/// A retrace store in a PostgreSQL database (the tables in the connection's schema).
///
/// Every method blocks the calling thread until PostgreSQL answers; it may be called from
/// plain threads and from async tasks. Dropping the store closes its connections.
pub struct PgStore {
    shared: Arc<Shared>,
    fence: Option<Fence>,
    bridge: Arc<Bridge>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.shared.target)
            .field("schema", &self.shared.schema)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to `target`, create or migrate the schema, and start following appends.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL cannot be reached, refuses the login, or the
    /// schema cannot be migrated (e.g. a newer retrace migrated it further).
    pub fn connect(target: &Target) -> Result<Self> {
        let bridge = Arc::new(
            Bridge::new().map_err(|e| Error::backend("starting the PostgreSQL client", e))?,
        );
        let target = target.clone();
        let shared = bridge.wait(async move {
            let (mut client, connection) = target.config.connect(NoTls).await.map_err(|e| {
                let text = e.to_string();
                if text.contains("password missing") || text.contains("password authentication") {
                    Error::backend(
                        "connecting to PostgreSQL",
                        format!("{text}; the password is read from PGPASSWORD"),
                    )
                } else {
                    Error::backend("connecting to PostgreSQL", e)
                }
            })?;
            let driver = tokio::spawn(connection);
            let schema = crate::schema::migrate(&mut client).await;
            // a channel name is at most 63 bytes, a schema's too: name the channel by a
            // digest of the schema that every retrace process computes alike
            let channel = match &schema {
                Ok(schema) => client
                    .query_one("SELECT 'retrace_' || left(md5($1), 24)", &[schema])
                    .await
                    .map(|row| row.get::<_, String>(0))
                    .map_err(backend("naming the store's channel")),
                Err(_) => Ok(String::new()),
            };
            drop(client);
            let _ = driver.await;
            let schema = schema?;
            let channel = channel?;
            // sessions commit without waiting for the disk by default (blobs, snapshots:
            // durable with the next synchronous commit, which flushes the write-ahead log
            // up to it); appends and every other acknowledged write commit synchronously
            // and a session that sits in a transaction for 2 s is ended by the server: its
            // process stalled (paused, starved) mid-append, and must not keep the run's row
            // and lease locked, nor commit long after its checks
            let mut sessions = target.config.clone();
            let options = sessions.get_options().unwrap_or("").to_owned();
            sessions.options(
                format!(
                    "{options} -c synchronous_commit=off -c idle_in_transaction_session_timeout={}",
                    IDLE_IN_TRANSACTION.as_millis()
                )
                .trim(),
            );
            let manager = Manager::from_config(
                sessions,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| Error::backend("creating the connection pool", e))?;
            Ok::<_, Error>(Arc::new(Shared {
                channel,
                schema,
                target,
                pool,
                tail: Tail::default(),
            }))
        })?;
        bridge.handle().spawn(listen(Arc::downgrade(&shared)));
        Ok(Self {
            shared,
            fence: None,
            bridge,
        })
    }

    /// Parse `url` (password from `PGPASSWORD`) and [`connect`](Self::connect).
    ///
    /// # Errors
    /// As `connect`, and [`Error::Backend`] naming the URL (password removed) when it does
    /// not parse or holds a password.
    pub fn open(url: &str) -> Result<Self> {
        let target = Target::parse(url).map_err(|e| Error::backend("reading the store URL", e))?;
        Self::connect(&target)
    }

    /// The same store, whose appends succeed only while `fence`'s worker holds the run's
    /// lease (checked in the append's transaction). Shares connections and subscribers.
    #[must_use]
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            fence: Some(fence),
            bridge: Arc::clone(&self.bridge),
        }
    }

    /// Where the store is (password removed).
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Run `f` with the store's shared state on its runtime and wait for the result.
    pub(crate) fn wait<T, F>(&self, f: impl FnOnce(Arc<Shared>) -> F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.bridge.wait(f(Arc::clone(&self.shared)))
    }
}

impl Store for PgStore {
    fn create_run(&self, new: NewRun) -> Result<RunInfo> {
        check_fork_origin(self, &new)?;
        let info = new.into_info();
        let row = info.clone();
        let inserted = self.wait(|s| async move {
            let meta = serde_json::to_string(&row.meta).map_err(|e| Error::backend("encoding labels", e))?;
            let origin = row.origin;
            let origin_run = origin.map(|o| o.run.as_bytes().to_vec());
            let origin_seq = origin.map(|o| int(o.at.seq, "a seq")).transpose()?;
            let origin_id = origin.map(|o| o.at.id.as_bytes().to_vec());
            let head_seq = row.head.map(|h| int(h.seq, "a seq")).transpose()?;
            let head_id = row.head.map(|h| h.id.as_bytes().to_vec());
            let created = int(row.created_at.0, "a creation time")?;
            let id = row.id.as_bytes().as_slice();
            let rows = s
                .durably(
                    "creating a run",
                    "INSERT INTO retrace_runs \
                     (id, head_seq, head_id, origin_run, origin_seq, origin_id, created_at, meta) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb) ON CONFLICT (id) DO NOTHING \
                     RETURNING 1",
                    &[&id, &head_seq, &head_id, &origin_run, &origin_seq, &origin_id, &created, &meta],
                )
                .await?;
            Ok::<_, Error>(rows.len())
        })?;
        if inserted == 0 {
            return Err(Error::RunExists { run: info.id });
        }
        Ok(info)
    }

    fn run(&self, id: &RunId) -> Result<Option<RunInfo>> {
        let id = *id;
        self.wait(|s| async move { s.run(id).await })
    }

    fn runs(&self) -> Result<Vec<RunInfo>> {
        self.wait(|s| async move {
            let client = s.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {RUN_COLUMNS} FROM retrace_runs ORDER BY id"),
                    &[],
                )
                .await
                .map_err(backend("listing runs"))?;
            rows.iter().map(run_info).collect()
        })
    }

    fn set_run_meta(&self, id: &RunId, key: &str, value: Option<&str>) -> Result<RunInfo> {
        let (id, key, value) = (*id, key.to_owned(), value.map(str::to_owned));
        self.wait(|s| async move {
            let sql = format!(
                "UPDATE retrace_runs SET meta = CASE WHEN $3::text IS NULL THEN meta - $2::text \
                 ELSE meta || jsonb_build_object($2::text, $3::text) END \
                 WHERE id = $1 RETURNING {RUN_COLUMNS}"
            );
            let rows = s
                .durably(
                    "setting a run label",
                    &sql,
                    &[&id.as_bytes().as_slice(), &key, &value],
                )
                .await?;
            run_info(rows.first().ok_or(Error::RunNotFound { run: id })?)
        })
    }

    fn append(&self, run: &RunId, expected: Option<EventId>, events: &[Event]) -> Result<Head> {
        let (run, batch, fence) = (*run, events.to_vec(), self.fence.clone());
        let head = self.wait(|s| async move { s.append(run, expected, batch, fence).await })?;
        self.shared
            .tail
            .publish(run, events.iter().map(|e| (e.id(), e.clone())).collect());
        Ok(head)
    }

    fn own_events(&self, run: &RunId, seqs: RangeInclusive<u64>) -> Result<Vec<StoredEvent>> {
        let (run, lo, hi) = (*run, *seqs.start(), *seqs.end());
        self.wait(|s| async move { s.own_events(run, lo, hi).await })
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<BlobId> {
        let id = BlobId::of(bytes);
        let (codec, packed) = pack_blob(bytes);
        let len = int(bytes.len() as u64, "a blob length")?;
        self.wait(|s| async move {
            let client = s.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO retrace_blobs (id, codec, len, bytes) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(backend("preparing a blob write"))?;
            client
                .execute(
                    &statement,
                    &[&id.as_bytes().as_slice(), &codec, &len, &packed],
                )
                .await
                .map_err(backend("storing a blob"))?;
            Ok(id)
        })
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        let id = *id;
        self.wait(|s| async move {
            let client = s.client().await?;
            let statement = client
                .prepare_cached("SELECT codec, len, bytes FROM retrace_blobs WHERE id = $1")
                .await
                .map_err(backend("preparing a blob read"))?;
            let row = client
                .query_opt(&statement, &[&id.as_bytes().as_slice()])
                .await
                .map_err(backend("reading a blob"))?;
            row.map(|row| unpack_blob(&id, row.get(0), row.get(1), row.get(2)))
                .transpose()
        })
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> Result<()> {
        let (at, bytes) = (*at, bytes.to_vec());
        self.wait(|s| async move {
            let client = s.client().await?;
            client
                .execute(
                    "INSERT INTO retrace_snapshots (at, bytes) VALUES ($1, $2) \
                     ON CONFLICT (at) DO UPDATE SET bytes = excluded.bytes",
                    &[&at.as_bytes().as_slice(), &bytes],
                )
                .await
                .map_err(backend("storing a snapshot"))?;
            Ok(())
        })
    }

    fn snapshot(&self, at: &EventId) -> Result<Option<Vec<u8>>> {
        let at = *at;
        self.wait(|s| async move {
            let client = s.client().await?;
            Ok(client
                .query_opt(
                    "SELECT bytes FROM retrace_snapshots WHERE at = $1",
                    &[&at.as_bytes().as_slice()],
                )
                .await
                .map_err(backend("reading a snapshot"))?
                .map(|row| row.get(0)))
        })
    }

    fn snapshot_ids(&self) -> Result<Vec<EventId>> {
        self.wait(|s| async move {
            let client = s.client().await?;
            let rows = client
                .query("SELECT at FROM retrace_snapshots ORDER BY at", &[])
                .await
                .map_err(backend("listing snapshots"))?;
            rows.iter()
                .map(|row| event_id(row.get(0), "a snapshot key"))
                .collect()
        })
    }

    fn subscribe(&self, run: &RunId) -> Result<Subscription> {
        let info = self.require_run(run)?;
        Ok(self.shared.tail.subscribe(*run, info.len()))
    }

    fn flush(&self) -> Result<()> {
        // a transaction with an id commits synchronously, flushing the write-ahead log up
        // to its commit record: every earlier commit (blobs, snapshots) is durable with it
        self.wait(|s| async move {
            let mut client = s.client().await?;
            let tx = client.transaction().await.map_err(backend("flushing"))?;
            tx.batch_execute("SET LOCAL synchronous_commit = on; SELECT txid_current()")
                .await
                .map_err(backend("flushing"))?;
            tx.commit().await.map_err(backend("flushing"))
        })
    }

    fn stats(&self) -> Result<StoreStats> {
        self.wait(|s| async move {
            let client = s.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM retrace_runs), \
                            (SELECT count(*) FROM retrace_events), \
                            (SELECT count(*) FROM retrace_blobs), \
                            (SELECT coalesce(sum(len), 0)::bigint FROM retrace_blobs), \
                            (SELECT count(*) FROM retrace_snapshots)",
                    &[],
                )
                .await
                .map_err(backend("counting what is stored"))?;
            let n = |i: usize| uint(row.get(i), "a count");
            Ok(StoreStats {
                runs: n(0)?,
                events: n(1)?,
                log_entries: n(1)?,
                blobs: n(2)?,
                blob_bytes: n(3)?,
                snapshots: n(4)?,
            })
        })
    }
}
