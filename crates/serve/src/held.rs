//! A drive in a command's own process (`retrace run`, `resume`, `cancel`) on a PostgreSQL
//! store holds the run's lease like a worker does, so that no `retrace serve` worker takes
//! the run up meanwhile, and appends through a store fenced by that lease. Its inbox gets
//! the signals workers left for the run, and the deadline before which the drive may start
//! tool calls, moved on at each renewal as a worker's is.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use retrace_events::RunId;
use retrace_runtime::inbox::Inbox;
use retrace_store::Store;
use retrace_store_postgres::{Fence, Leases, PgStore};

/// How long a command's lease lasts unrenewed; renewed every third of it.
const TTL: Duration = Duration::from_secs(30);

/// Why a run's lease could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// A worker drives the run.
    #[error(
        "run {run} is being driven by {worker}; it continues there (`retrace log {run}` shows its events)"
    )]
    Busy {
        /// The run.
        run: RunId,
        /// Who holds its lease.
        worker: String,
    },
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
}

/// `run`'s lease, held by this process until dropped.
pub struct Held {
    leases: Arc<Leases>,
    run: RunId,
    inbox: Arc<Inbox>,
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("run", &self.run)
            .field("worker", &self.leases.worker())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Claim `run`'s lease as this process (`cli:HOST:PID:NONCE`) and keep renewing it.
    ///
    /// # Errors
    /// [`HoldError::Busy`] when a worker holds it; [`HoldError::Store`] when PostgreSQL fails.
    pub fn claim(store: &PgStore, run: RunId) -> Result<Self, HoldError> {
        let worker = format!("cli:{}", crate::server::default_worker());
        let leases = Arc::new(Leases::new(store, &worker, TTL));
        let claimed_at = Instant::now();
        if leases.claim(&run)?.is_none() {
            let worker = leases
                .holder(&run)?
                .unwrap_or_else(|| "another worker".to_owned());
            return Err(HoldError::Busy { run, worker });
        }
        let inbox = Arc::new(Inbox::default());
        inbox.act_before(claimed_at + TTL * 3 / 4);
        let (stop, stopped) = channel::<()>();
        let renewing = Arc::clone(&leases);
        let letters = Arc::clone(&inbox);
        let renewer = std::thread::Builder::new()
            .name(format!("retrace-lease-{}", run.short()))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TTL / 3) {
                    let at = Instant::now();
                    match renewing.renew(&[run]) {
                        Ok(kept) if kept.is_empty() => {
                            tracing::warn!(run = %run.short(), "lease lost; the drive's next append will be refused");
                            letters.stop();
                            return;
                        }
                        Ok(_) => letters.act_before(at + TTL * 3 / 4),
                        Err(e) => tracing::warn!(run = %run.short(), error = %e, "cannot renew the run's lease"),
                    }
                    match renewing.take_letters(&[run]) {
                        Ok(taken) => {
                            for letter in taken {
                                letters.post(&letter.name, letter.payload);
                            }
                        }
                        Err(e) => tracing::warn!(run = %run.short(), error = %e, "cannot take signals from the inbox"),
                    }
                }
            })
            .map_err(|e| retrace_store::Error::backend("starting the lease renewer", e))?;
        Ok(Self {
            leases,
            run,
            inbox,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }

    /// What the drive takes signals and its deadline from (`Runner::drive_with`).
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// The store, fenced by this lease: what the drive appends through.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.leases.store().fenced(Fence::new(self.leases.worker())))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        // signals the drive did not take: back to the inbox, for whoever drives the run next
        for letter in self.inbox.take() {
            if let retrace_events::EventKind::SignalReceived { name, payload } = letter
                && let Err(e) = self.leases.post(&self.run, &name, &payload)
            {
                tracing::warn!(run = %self.run.short(), signal = %name, error = %e, "signal lost: it could not be put back in the inbox");
            }
        }
        if let Err(e) = self.leases.release(&self.run) {
            tracing::warn!(run = %self.run.short(), error = %e, "cannot release the run's lease; it expires by itself");
        }
    }
}
