//! A drive in a command's own process (`retrace run`, `resume`, `cancel`) on a PostgreSQL
//! store holds the run's lease like a worker does, so that no `retrace serve` worker takes
//! the run up meanwhile, and appends through a store fenced by that lease.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use retrace_events::RunId;
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
        if leases.claim(&run)?.is_none() {
            let worker = leases
                .holder(&run)?
                .unwrap_or_else(|| "another worker".to_owned());
            return Err(HoldError::Busy { run, worker });
        }
        let (stop, stopped) = channel::<()>();
        let renewing = Arc::clone(&leases);
        let renewer = std::thread::Builder::new()
            .name(format!("retrace-lease-{}", run.short()))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TTL / 3) {
                    match renewing.renew(&[run]) {
                        Ok(kept) if kept.is_empty() => {
                            tracing::warn!(run = %run.short(), "lease lost; the drive's next append will be refused");
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(run = %run.short(), error = %e, "cannot renew the run's lease"),
                    }
                }
            })
            .map_err(|e| retrace_store::Error::backend("starting the lease renewer", e))?;
        Ok(Self {
            leases,
            run,
            stop: Some(stop),
            renewer: Some(renewer),
        })
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
        if let Err(e) = self.leases.release(&self.run) {
            tracing::warn!(run = %self.run.short(), error = %e, "cannot release the run's lease; it expires by itself");
        }
    }
}
