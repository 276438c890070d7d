//! Many `retrace serve` workers on one PostgreSQL store.
//!
//! Every drive of a run holds the run's lease ([`retrace_store_postgres::Leases`]): a
//! worker claims it before driving and gives it up when the drive ends (finished, parked,
//! failed). The worker's drives append through a store fenced by its leases, so a worker
//! that stalled past its TTL cannot append: its next append fails with `LeaseLost`, and the
//! drive stops. A tick, every third of the TTL:
//!
//! 1. renews the leases this worker holds; a lease it failed to renew (another worker took
//!    it, or PostgreSQL could not be reached until the TTL ran out) stops that drive;
//! 2. hands signals other workers left in the inbox for its runs to their drives;
//! 3. takes over runs whose leases expired (their worker died), as many as it has room for;
//! 4. takes up runs that can go on but nobody drives (appended to by a CLI, or whose lease
//!    was released while a signal arrived), judged from the log; runs whose head did not
//!    move since they were last judged are not folded again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use retrace_events::{BlobId, Head, RunId};
use retrace_replay::{SnapshotPolicy, state_at_head};
use retrace_store::Store;
use retrace_store_postgres::{Leases, PgStore};

/// One worker's part in a cluster of workers sharing a PostgreSQL store.
#[derive(Debug)]
pub struct Cluster {
    leases: Leases,
    /// Runs whose lease this worker holds, and when it last renewed them.
    held: Mutex<HashMap<RunId, Instant>>,
    /// Heads of runs judged not to need a drive, so they are not folded again until they move.
    judged: Mutex<HashMap<RunId, Option<Head>>>,
}

impl Cluster {
    /// Worker `worker` of the store, holding leases for `ttl`.
    pub fn new(store: &PgStore, worker: &str, ttl: Duration) -> Self {
        Self {
            leases: Leases::new(store, worker, ttl),
            held: Mutex::default(),
            judged: Mutex::default(),
        }
    }

    /// This worker's name.
    pub fn worker(&self) -> &str {
        self.leases.worker()
    }

    /// The store, fenced by this worker's leases (for drives).
    pub fn fenced(&self) -> Arc<dyn Store> {
        Arc::new(
            self.leases
                .store()
                .fenced(retrace_store_postgres::Fence::new(self.worker())),
        )
    }

    /// How often [`Self::tick`] should run.
    pub fn period(&self) -> Duration {
        (self.leases.ttl() / 3).max(Duration::from_millis(100))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Instant>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claim `run`'s lease for a drive; `false` while another worker holds it.
    pub fn claim(&self, run: &RunId) -> bool {
        let at = Instant::now();
        match self.leases.claim(run) {
            Ok(Some(_)) => {
                self.held().insert(*run, at);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(run = %run.short(), error = %e, "cannot claim the run's lease");
                false
            }
        }
    }

    /// Give up `run`'s lease (its drive ended).
    pub fn release(&self, run: &RunId) {
        self.held().remove(run);
        if let Err(e) = self.leases.release(run) {
            tracing::warn!(run = %run.short(), error = %e, "cannot release the run's lease; it expires by itself");
        }
    }

    /// Whether this worker holds `run`'s lease (as far as it knows).
    pub fn holds(&self, run: &RunId) -> bool {
        self.held().contains_key(run)
    }

    /// Whether this worker's name holds any unexpired lease in the store (a live process
    /// of the same name, or one that died less than a TTL ago).
    ///
    /// # Errors
    /// When PostgreSQL fails.
    pub fn holds_any(&self) -> retrace_store::Result<bool> {
        Ok(self
            .leases
            .held()?
            .iter()
            .any(|(_, worker)| worker == self.worker()))
    }

    /// Whether any process holds `run`'s lease now.
    pub fn is_leased(&self, run: &RunId) -> bool {
        self.holds(run) || self.leases.holder(run).is_ok_and(|h| h.is_some())
    }

    /// Leave a signal for the worker driving `run`.
    pub fn post(&self, run: &RunId, name: &str, payload: &BlobId) -> retrace_store::Result<()> {
        self.leases.post(run, name, payload)
    }

    /// Give up every lease (a clean shutdown: other workers take the runs at once).
    pub fn release_all(&self) {
        let runs: Vec<RunId> = self.held().keys().copied().collect();
        for run in runs {
            self.release(&run);
        }
    }

    /// Until when a drive of `run` may start tool calls: a quarter of the TTL before its
    /// lease, last renewed at the instant recorded, may expire (the margin covers the time
    /// the renewal took to reach PostgreSQL). `None` if this worker does not hold it.
    pub fn acts_until(&self, run: &RunId) -> Option<Instant> {
        let ttl = self.leases.ttl();
        self.held().get(run).map(|at| *at + ttl * 3 / 4)
    }

    /// Renew this worker's leases; returns the runs whose lease is lost.
    pub fn renew(&self) -> Vec<RunId> {
        let runs: Vec<RunId> = self.held().keys().copied().collect();
        // taken before the renewal is sent: PostgreSQL's expiry is later than this + TTL
        let now = Instant::now();
        match self.leases.renew(&runs) {
            Ok(kept) => {
                let kept: HashSet<RunId> = kept.into_iter().collect();
                let mut held = self.held();
                let lost: Vec<RunId> = runs.into_iter().filter(|r| !kept.contains(r)).collect();
                for run in &lost {
                    held.remove(run);
                }
                for run in &kept {
                    if let Some(at) = held.get_mut(run) {
                        *at = now;
                    }
                }
                lost
            }
            Err(e) => {
                // PostgreSQL unreachable: a lease not renewed within its TTL is gone
                tracing::warn!(error = %e, "cannot renew leases");
                let ttl = self.leases.ttl();
                let mut held = self.held();
                let lost: Vec<RunId> = held
                    .iter()
                    .filter(|(_, at)| now.duration_since(**at) >= ttl)
                    .map(|(r, _)| *r)
                    .collect();
                for run in &lost {
                    held.remove(run);
                }
                lost
            }
        }
    }

    /// Signals other workers left for the runs this worker drives.
    pub fn letters(&self) -> Vec<retrace_store_postgres::Letter> {
        let runs: Vec<RunId> = self.held().keys().copied().collect();
        self.take(&runs)
    }

    /// Signals other workers left for `run`.
    pub fn letters_of(&self, run: &RunId) -> Vec<retrace_store_postgres::Letter> {
        self.take(std::slice::from_ref(run))
    }

    fn take(&self, runs: &[RunId]) -> Vec<retrace_store_postgres::Letter> {
        self.leases.take_letters(runs).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot take signals from the inbox");
            Vec::new()
        })
    }

    /// Runs with signals waiting whose lease nobody holds (their holder's drive ended as
    /// the signal was left): they need a drive to append them.
    pub fn unheard(&self) -> Vec<RunId> {
        self.leases.unheard().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the inbox");
            Vec::new()
        })
    }

    /// Take over up to `room` runs whose worker's lease expired.
    pub fn take_over(&self, room: usize) -> Vec<RunId> {
        if room == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        match self.leases.claim_expired(room) {
            Ok(claims) => {
                let mut held = self.held();
                claims
                    .into_iter()
                    .map(|c| {
                        held.insert(c.run, now);
                        c.run
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take over expired leases");
                Vec::new()
            }
        }
    }

    /// Runs that can go on (unfinished, not parked for a human unless cancelled, not eval
    /// cases or forks nobody continued) and that no worker holds.
    pub fn orphans(&self, store: &dyn Store) -> Vec<RunId> {
        let leased: HashSet<RunId> = match self.leases.held() {
            Ok(held) => held.into_iter().map(|(r, _)| r).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list leases");
                return Vec::new();
            }
        };
        let runs = match store.runs() {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list runs");
                return Vec::new();
            }
        };
        let mut judged = self.judged.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for info in runs {
            if leased.contains(&info.id) || judged.get(&info.id) == Some(&info.head) {
                continue;
            }
            if takes_a_drive(store, &info) {
                out.push(info.id);
            } else {
                judged.insert(info.id, info.head);
            }
        }
        out
    }
}

/// Whether a daemon should drive this run: unfinished, not parked for a human (unless
/// cancelled), not an eval case, not a child run (its parent's drive drives it), and not a
/// fork nobody continued.
pub fn takes_a_drive(store: &dyn Store, info: &retrace_store::RunInfo) -> bool {
    let own = info.len().saturating_sub(info.own_from());
    let edited = u64::from(info.meta.get("edited").is_some_and(|e| e == "true"));
    if info.is_empty()
        || info.meta.contains_key("eval")
        || info.meta.contains_key("parent")
        || (info.origin.is_some() && own <= edited)
    {
        return false;
    }
    match state_at_head(store, &info.id, SnapshotPolicy::default()) {
        Ok(folded) => {
            let state = folded.state;
            !(state.is_finished() || (state.is_parked() && state.cancel_requested.is_none()))
        }
        Err(e) => {
            tracing::warn!(run = %info.id.short(), error = %e, "cannot fold the run; leaving it");
            false
        }
    }
}

/// This worker's ticks until `stopping`, each every third of the TTL on the blocking pool:
/// one renews the leases and moves the drives' deadlines (alone, so that no slow scan
/// delays it), the other hands over signals, takes over expired runs and takes up runs
/// nobody drives, as many as there are free worker slots.
pub async fn keep(
    scheduler: Arc<crate::scheduler::Scheduler>,
    cluster: Arc<Cluster>,
    stopping: tokio_util::sync::CancellationToken,
) {
    let renewing = every(&cluster, &stopping, {
        let (scheduler, cluster) = (Arc::clone(&scheduler), Arc::clone(&cluster));
        move || {
            let lost = cluster.renew();
            if !lost.is_empty() {
                scheduler.lost(&lost);
            }
            for run in scheduler.driven() {
                if let Some(deadline) = cluster.acts_until(&run) {
                    scheduler.renewed(&[run], deadline);
                }
            }
        }
    });
    let scanning = every(&cluster, &stopping, {
        let (scheduler, cluster) = (Arc::clone(&scheduler), Arc::clone(&cluster));
        move || {
            scheduler.deliver_letters(cluster.letters());
            for run in cluster.take_over(scheduler.room()) {
                tracing::info!(run = %run.short(), worker = cluster.worker(), "taking over a run whose worker's lease expired");
                scheduler.schedule(run);
            }
            for run in cluster.unheard().into_iter().take(scheduler.room()) {
                scheduler.schedule(run);
            }
            if let Err(e) = scheduler.resume_unfinished() {
                tracing::warn!(error = %e, "cannot look for runs to take up");
            }
        }
    });
    let _ = tokio::join!(renewing, scanning);
}

/// Run `tick` on the blocking pool every period of `cluster` until `stopping`.
async fn every(
    cluster: &Cluster,
    stopping: &tokio_util::sync::CancellationToken,
    tick: impl Fn() + Send + Sync + 'static,
) {
    let tick = Arc::new(tick);
    let mut every = tokio::time::interval(cluster.period());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopping.cancelled() => return,
        }
        let tick = Arc::clone(&tick);
        if let Err(e) = tokio::task::spawn_blocking(move || tick()).await {
            tracing::warn!(error = %e, "a cluster tick failed");
        }
    }
}
