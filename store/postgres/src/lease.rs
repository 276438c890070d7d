//! Run leases: which worker drives which run.
//!
//! A lease is a row `(run, worker, epoch, expires_at)` in `retrace_leases`. A worker takes a
//! free or expired lease ([`Leases::claim`], [`Leases::claim_expired`], the latter with
//! `FOR UPDATE SKIP LOCKED` so that workers scanning together never wait on each other or
//! take the same run), keeps it by renewing it well before its TTL ([`Leases::renew`]), and
//! gives it up when the drive ends ([`Leases::release`]). Expiry is judged by PostgreSQL's
//! clock alone, so workers' clocks need not agree.
//!
//! A worker that stalls past its TTL (a long GC pause, SIGSTOP, a partition) loses the lease;
//! another worker resumes the run from the log. When the stalled worker wakes, its next
//! append is refused with [`Error::LeaseLost`]: appends through a [`PgStore::fenced`] store
//! check, inside the append's transaction, that the worker still holds an unexpired lease.
//! Together with the head's compare-and-swap this is the one-writer rule across machines.
//!
//! Signals for a run another worker drives wait in `retrace_inbox` ([`Leases::post`]) until
//! the holder takes them ([`Leases::take_letters`]) and appends them at a step boundary.

use std::sync::Arc;
use std::time::Duration;

use retrace_events::{BlobId, RunId};
use retrace_store::{Error, Result};

use crate::rows::{run_id, uint};
use crate::store::PgStore;

fn backend(op: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::backend(op, e)
}

/// The worker an append is made for; see [`PgStore::fenced`].
#[derive(Clone, Debug)]
pub struct Fence {
    worker: Arc<str>,
}

impl Fence {
    /// The fence of worker `worker`.
    pub fn new(worker: &str) -> Self {
        Self {
            worker: worker.into(),
        }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Inside an append's transaction: the worker must hold the unexpired lease of `run`
    /// or of a run above it (a child run of `agent.delegate` names its parent in its meta,
    /// `parent`, hex; the drive of the tree's root appends to its children).
    pub(crate) async fn check(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        run: RunId,
    ) -> Result<()> {
        let statement = tx
            .prepare_cached(
                "WITH RECURSIVE tree(id, depth) AS ( \
                     SELECT $1::bytea, 0 \
                     UNION ALL \
                     SELECT decode(r.meta->>'parent', 'hex'), t.depth + 1 \
                     FROM retrace_runs r JOIN tree t ON r.id = t.id \
                     WHERE r.meta ? 'parent' AND t.depth < 8) \
                 SELECT 1 FROM retrace_leases \
                 WHERE run IN (SELECT id FROM tree) AND worker = $2 \
                   AND expires_at > clock_timestamp() LIMIT 1 FOR SHARE",
            )
            .await
            .map_err(backend("preparing a lease check"))?;
        let held = tx
            .query_opt(&statement, &[&run.as_bytes().as_slice(), &&*self.worker])
            .await
            .map_err(backend("checking the run's lease"))?;
        match held {
            Some(_) => Ok(()),
            None => Err(Error::LeaseLost {
                run,
                worker: self.worker.to_string(),
            }),
        }
    }
}

/// A lease taken: the run, and the lease's epoch (one more than the previous holder's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The run.
    pub run: RunId,
    /// How many times the lease has been taken, this time included.
    pub epoch: u64,
}

/// A signal waiting for the holder of its run's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    /// The run it is for.
    pub run: RunId,
    /// The signal's name (`cancel`, `approve`, ...).
    pub name: String,
    /// Its payload blob.
    pub payload: BlobId,
}

/// One worker's leases in a PostgreSQL store.
#[derive(Debug)]
pub struct Leases {
    store: PgStore,
    worker: Arc<str>,
    ttl: Duration,
}

impl Leases {
    /// Leases of `store` for worker `worker`, each lasting `ttl` from its last renewal.
    pub fn new(store: &PgStore, worker: &str, ttl: Duration) -> Self {
        Self {
            store: store.fenced(Fence::new(worker)),
            worker: worker.into(),
            ttl,
        }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// How long a lease lasts after its last renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store, fenced by this worker's leases: its appends succeed only on runs whose
    /// lease the worker holds.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Take `run`'s lease if nobody holds it, it expired, or this worker holds it already
    /// (then it is renewed). `None` while another worker holds it.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails; [`Error::RunNotFound`] for an unknown run.
    pub fn claim(&self, run: &RunId) -> Result<Option<Claim>> {
        let (run, worker, ttl) = (*run, self.worker.clone(), self.ttl_ms());
        self.store.wait(|s| async move {
            let row = s
                .durably(
                    "claiming a run's lease",
                    "INSERT INTO retrace_leases AS l (run, worker, epoch, expires_at) \
                     SELECT id, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond' \
                       FROM retrace_runs WHERE id = $1 \
                     ON CONFLICT (run) DO UPDATE \
                       SET worker = excluded.worker, expires_at = excluded.expires_at, \
                           epoch = CASE WHEN l.worker = excluded.worker AND l.expires_at > clock_timestamp() \
                                        THEN l.epoch ELSE l.epoch + 1 END \
                       WHERE l.worker = excluded.worker OR l.expires_at <= clock_timestamp() \
                     RETURNING epoch",
                    &[&run.as_bytes().as_slice(), &&*worker, &ttl],
                )
                .await?;
            let row = row.first();
            match row {
                Some(row) => Ok(Some(Claim {
                    run,
                    epoch: uint(row.get(0), "a lease epoch")?,
                })),
                None if s.run_exists(run).await? => Ok(None),
                None => Err(Error::RunNotFound { run }),
            }
        })
    }

    /// Take up to `max` leases that expired (their workers died or stalled), oldest first,
    /// skipping rows another worker is taking at this moment.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn claim_expired(&self, max: usize) -> Result<Vec<Claim>> {
        let (worker, ttl) = (self.worker.clone(), self.ttl_ms());
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.store.wait(|s| async move {
            let rows = s
                .durably(
                    "taking over expired leases",
                    "WITH free AS ( \
                       SELECT run FROM retrace_leases WHERE expires_at <= clock_timestamp() \
                       ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     UPDATE retrace_leases AS l \
                        SET worker = $1, epoch = l.epoch + 1, \
                            expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond' \
                       FROM free WHERE l.run = free.run \
                     RETURNING l.run, l.epoch",
                    &[&&*worker, &ttl, &max],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(Claim {
                        run: run_id(row.get(0))?,
                        epoch: uint(row.get(1), "a lease epoch")?,
                    })
                })
                .collect()
        })
    }

    /// Extend this worker's unexpired leases on `runs` by the TTL; returns the runs whose
    /// lease it still holds (the others were lost: stop driving them).
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails (then assume nothing was renewed).
    pub fn renew(&self, runs: &[RunId]) -> Result<Vec<RunId>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let (worker, ttl) = (self.worker.clone(), self.ttl_ms());
        let ids: Vec<Vec<u8>> = runs.iter().map(|r| r.as_bytes().to_vec()).collect();
        self.store.wait(|s| async move {
            let rows = s
                .durably(
                    "renewing leases",
                    "UPDATE retrace_leases \
                        SET expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond' \
                      WHERE worker = $1 AND run = ANY($3) AND expires_at > clock_timestamp() \
                     RETURNING run",
                    &[&&*worker, &ttl, &ids],
                )
                .await?;
            rows.iter().map(|row| run_id(row.get(0))).collect()
        })
    }

    /// Give up this worker's lease of `run` (its drive ended); a lease another worker took
    /// meanwhile is left alone.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn release(&self, run: &RunId) -> Result<()> {
        let (run, worker) = (*run, self.worker.clone());
        self.store.wait(|s| async move {
            s.durably(
                "releasing a lease",
                "DELETE FROM retrace_leases WHERE run = $1 AND worker = $2",
                &[&run.as_bytes().as_slice(), &&*worker],
            )
            .await?;
            Ok(())
        })
    }

    /// The worker holding `run`'s unexpired lease, if any.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn holder(&self, run: &RunId) -> Result<Option<String>> {
        let run = *run;
        self.store.wait(|s| async move {
            let client = s.client().await?;
            Ok(client
                .query_opt(
                    "SELECT worker FROM retrace_leases WHERE run = $1 AND expires_at > clock_timestamp()",
                    &[&run.as_bytes().as_slice()],
                )
                .await
                .map_err(backend("reading a lease"))?
                .map(|row| row.get(0)))
        })
    }

    /// Every run with an unexpired lease, with its worker.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn held(&self) -> Result<Vec<(RunId, String)>> {
        self.store.wait(|s| async move {
            let rows = s
                .durably(
                    "listing leases",
                    "SELECT run, worker FROM retrace_leases WHERE expires_at > clock_timestamp() ORDER BY run",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| Ok((run_id(row.get(0))?, row.get(1))))
                .collect()
        })
    }

    /// Leave signal `name` for whoever holds `run`'s lease.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn post(&self, run: &RunId, name: &str, payload: &BlobId) -> Result<()> {
        let (run, name, payload) = (*run, name.to_owned(), *payload);
        self.store.wait(|s| async move {
            s.durably(
                "posting a signal",
                "INSERT INTO retrace_inbox (run, name, payload) VALUES ($1, $2, $3)",
                &[
                    &run.as_bytes().as_slice(),
                    &name,
                    &payload.as_bytes().as_slice(),
                ],
            )
            .await?;
            Ok(())
        })
    }

    /// Runs with signals waiting and no unexpired lease.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn unheard(&self) -> Result<Vec<RunId>> {
        self.store.wait(|s| async move {
            let client = s.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT i.run FROM retrace_inbox i WHERE NOT EXISTS ( \
                       SELECT 1 FROM retrace_leases l \
                       WHERE l.run = i.run AND l.expires_at > clock_timestamp())",
                    &[],
                )
                .await
                .map_err(backend("reading the inbox"))?;
            rows.iter().map(|row| run_id(row.get(0))).collect()
        })
    }

    /// Take (and remove) the signals waiting for any of `runs`, oldest first.
    ///
    /// # Errors
    /// [`Error::Backend`] when PostgreSQL fails.
    pub fn take_letters(&self, runs: &[RunId]) -> Result<Vec<Letter>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Vec<u8>> = runs.iter().map(|r| r.as_bytes().to_vec()).collect();
        self.store.wait(|s| async move {
            let rows = s
                .durably(
                    "taking signals",
                    "WITH taken AS (DELETE FROM retrace_inbox WHERE run = ANY($1) RETURNING id, run, name, payload) \
                     SELECT run, name, payload FROM taken ORDER BY id",
                    &[&ids],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let payload: &[u8] = row.get(2);
                    Ok(Letter {
                        run: run_id(row.get(0))?,
                        name: row.get(1),
                        payload: BlobId::from_slice(payload).ok_or_else(|| Error::Corrupt {
                            what: "a signal's payload is not a blob id".into(),
                        })?,
                    })
                })
                .collect()
        })
    }
}
