//! The daemon's worker pool: which runs are being driven, the bound on how many at once,
//! and the one-writer rule — while a drive holds a run, signals reach it through its
//! [`Inbox`] and nothing else appends to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use retrace_events::{BlobId, Event, EventKind, RunId};
use retrace_replay::{SnapshotPolicy, apply, state_at_head};
use retrace_runtime::executor::{Progress, Runner, Stop, recorded_spec};
use retrace_runtime::inbox::Inbox;
use retrace_runtime::model::provider;
use retrace_store::Store;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, takes_a_drive};
use crate::streamed::{Feed, Streams};
use crate::wire::chain;

/// On a shared store, how long a worker leaves a run alone after its drive failed there.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(10);

/// A run being driven, or waiting for a worker.
#[derive(Debug, Default)]
struct Slot {
    inbox: Inbox,
    /// Drive it again once this drive ends (something arrived that it may act on).
    again: AtomicBool,
    /// On a shared store: signals posted to `inbox` and not yet seen in the log. A drive
    /// that fails (its lease lost) may have taken them without recording them; they go
    /// back to the store's inbox, for whoever drives the run next.
    outstanding: Mutex<Vec<(String, BlobId)>>,
}

impl Slot {
    fn post(&self, name: &str, payload: BlobId, shared: bool) {
        if shared {
            self.outstanding
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((name.to_owned(), payload));
        }
        self.inbox.post(name, payload);
    }
}

/// Why a signal could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The store failed, or the run does not exist.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
    /// Its state does not fold.
    #[error(transparent)]
    Replay(#[from] retrace_replay::Error),
    /// The signal does not fit the run's state (it has finished).
    #[error("run {run} cannot take signal `{name}`: {why}")]
    Refused {
        /// The run.
        run: RunId,
        /// The signal.
        name: String,
        /// Why.
        why: String,
    },
}

/// Append signal `name` to `run`, which nobody is driving, if its state takes it (not
/// once it has finished).
pub fn append_signal(
    store: &dyn Store,
    run: RunId,
    name: &str,
    payload: BlobId,
) -> Result<retrace_events::Head, DeliverError> {
    let info = store.require_run(&run)?;
    let mut state = state_at_head(store, &run, SnapshotPolicy::default())?.state;
    let event = Event::after(
        info.head,
        retrace_runtime::entropy::now(),
        EventKind::SignalReceived {
            name: name.to_owned(),
            payload,
        },
    );
    apply(&mut state, &event).map_err(|e| DeliverError::Refused {
        run,
        name: name.to_owned(),
        why: e.to_string(),
    })?;
    Ok(store.append(&run, info.head.map(|h| h.id), std::slice::from_ref(&event))?)
}

/// How a signal was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Appended before returning.
    Recorded,
    /// Queued for the drive that holds the run.
    Queued,
}

/// The worker pool.
pub struct Scheduler {
    store: Arc<dyn Store>,
    /// What drives append through: `store`, or on a shared store, `store` fenced by this
    /// worker's leases.
    drives: Arc<dyn Store>,
    /// On a shared store: this worker's leases.
    cluster: Option<Arc<Cluster>>,
    workers: usize,
    permits: Arc<Semaphore>,
    slots: Mutex<HashMap<RunId, Arc<Slot>>>,
    /// Why each run's last drive failed, and when.
    errors: Mutex<HashMap<RunId, (String, std::time::Instant)>>,
    tasks: TaskTracker,
    stopping: CancellationToken,
    stops: broadcast::Sender<RunId>,
    streams: Arc<Streams>,
    /// With `--otlp-endpoint`: where drives send the spans they complete.
    spans: Mutex<Option<crate::otlp::Spans>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.workers)
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A pool driving at most `workers` runs of `store` at once.
    pub fn new(store: Arc<dyn Store>, workers: usize) -> Arc<Self> {
        Self::build(store, workers, None)
    }

    /// A pool of one worker among many sharing a PostgreSQL store: each drive holds its
    /// run's lease and appends through `cluster`'s fenced store.
    pub fn clustered(store: Arc<dyn Store>, workers: usize, cluster: Arc<Cluster>) -> Arc<Self> {
        Self::build(store, workers, Some(cluster))
    }

    fn build(store: Arc<dyn Store>, workers: usize, cluster: Option<Arc<Cluster>>) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            drives: cluster
                .as_ref()
                .map_or_else(|| Arc::clone(&store), |c| c.fenced()),
            cluster,
            store,
            workers,
            permits: Arc::new(Semaphore::new(workers)),
            slots: Mutex::default(),
            errors: Mutex::default(),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            stops: broadcast::channel(1024).0,
            streams: Arc::default(),
            spans: Mutex::default(),
        })
    }

    /// Send the spans of every run driven from now on to `spans` (`--otlp-endpoint`).
    pub fn send_spans(&self, spans: crate::otlp::Spans) {
        *self.spans.lock().unwrap_or_else(PoisonError::into_inner) = Some(spans);
    }

    /// Stop sending spans (at shutdown, once the drives are done), giving back the sender.
    pub fn take_spans(&self) -> Option<crate::otlp::Spans> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Runs driven at once, at most.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs being driven or waiting for a worker.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// Whether `run` is being driven or waits for a worker.
    pub fn is_active(&self, run: &RunId) -> bool {
        self.lock().contains_key(run)
    }

    /// Why the last drive of `run` failed, if it did.
    pub fn drive_error(&self, run: &RunId) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run)
            .map(|(e, _)| e.clone())
    }

    /// Told the id of every run whose drive ends (finished, parked, stopped or failed).
    pub fn stops(&self) -> broadcast::Receiver<RunId> {
        self.stops.subscribe()
    }

    /// The text `run`'s model streams as the daemon drives it (the last deltas, then live).
    pub fn streamed(&self, run: RunId) -> Feed {
        self.streams.follow(run)
    }

    /// Cancelled when the daemon begins to shut down.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Drive `run` until it finishes or parks (again, if a drive is under way and something
    /// new arrived). Returns `false` when shutting down.
    pub fn schedule(self: &Arc<Self>, run: RunId) -> bool {
        if self.stopping.is_cancelled() {
            return false;
        }
        // a child run (`agent.delegate`) is driven by its parent's drive, never beside it:
        // one writer per run
        let run = self.tree_root(run);
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&run) {
            slot.again.store(true, Ordering::SeqCst);
            return true;
        }
        let slot = Arc::new(Slot::default());
        slots.insert(run, Arc::clone(&slot));
        drop(slots);
        self.tasks.spawn(Arc::clone(self).drive_loop(run, slot));
        true
    }

    /// The run whose drive drives `run` ([`retrace_store::tree::root`]); `run` itself if
    /// the store cannot say.
    fn tree_root(&self, run: RunId) -> RunId {
        retrace_store::tree::root(self.store.as_ref(), &run).unwrap_or(run)
    }

    /// Run `f` (which appends to `run`) while no drive holds it (on a shared store: while
    /// this worker holds the run's lease); `None` if one does.
    pub fn with_idle<T>(&self, run: &RunId, f: impl FnOnce() -> T) -> Option<T> {
        let root = self.tree_root(*run);
        let slots = self.lock();
        // a child run is held by its parent's drive
        if slots.contains_key(run) || slots.contains_key(&root) {
            return None;
        }
        if let Some(cluster) = &self.cluster {
            if !cluster.claim(run) {
                return None;
            }
            let out = f();
            cluster.release(run);
            return Some(out);
        }
        let out = f();
        drop(slots);
        Some(out)
    }

    /// On a shared store: this worker's part in the cluster.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Runs being driven or waiting for a worker.
    pub fn driven(&self) -> Vec<RunId> {
        self.lock().keys().copied().collect()
    }

    /// Free worker slots (runs that could start driving now).
    pub fn room(&self) -> usize {
        self.permits.available_permits()
    }

    /// Hand signals other workers left to the drives holding their runs.
    pub fn deliver_letters(&self, letters: Vec<retrace_store_postgres::Letter>) {
        let slots = self.lock();
        for letter in letters {
            match slots.get(&letter.run) {
                Some(slot) => {
                    slot.post(&letter.name, letter.payload, true);
                    slot.again.store(true, Ordering::SeqCst);
                }
                None => {
                    // the drive just ended: back to the inbox, for whoever drives it next
                    if let Some(cluster) = &self.cluster
                        && let Err(e) = cluster.post(&letter.run, &letter.name, &letter.payload)
                    {
                        tracing::warn!(run = %letter.run.short(), error = %e, "signal lost on its way back to the inbox");
                    }
                }
            }
        }
    }

    /// Let the drives of `runs` act until `deadline` (their leases were renewed).
    pub fn renewed(&self, runs: &[RunId], deadline: std::time::Instant) {
        let slots = self.lock();
        for run in runs {
            if let Some(slot) = slots.get(run) {
                slot.inbox.act_before(deadline);
            }
        }
    }

    /// Stop the drives of runs whose lease this worker lost.
    pub fn lost(&self, runs: &[RunId]) {
        let slots = self.lock();
        for run in runs {
            tracing::warn!(run = %run.short(), "lease lost; another worker may drive the run now");
            if let Some(slot) = slots.get(run) {
                slot.inbox.stop();
            }
        }
    }

    /// Deliver signal `name` (payload stored as `payload`) to `run`: queued for the drive
    /// that holds it, or appended now. A cancel also schedules the run, so it finishes.
    pub fn deliver(
        self: &Arc<Self>,
        run: RunId,
        name: &str,
        payload: BlobId,
    ) -> Result<Delivery, DeliverError> {
        let root = self.tree_root(run);
        let slots = self.lock();
        if let Some(slot) = slots.get(&run) {
            slot.post(name, payload, self.cluster.is_some());
            return Ok(Delivery::Queued);
        }
        if root != run && slots.contains_key(&root) {
            return Err(DeliverError::Refused {
                run,
                name: name.to_owned(),
                why: format!(
                    "it is a child run, and its parent run {root} is driving it; signal the parent (a cancel of the parent is passed on to its children)"
                ),
            });
        }
        if let Some(cluster) = &self.cluster {
            if !cluster.claim(&run) {
                // another worker drives it: its holder appends the signal at a step boundary
                cluster.post(&run, name, &payload)?;
                return Ok(Delivery::Queued);
            }
            let appended = append_signal(self.store.as_ref(), run, name, payload);
            cluster.release(&run);
            appended?;
        } else {
            append_signal(self.store.as_ref(), run, name, payload)?;
        }
        drop(slots);
        if name == retrace_runtime::inbox::CANCEL {
            self.schedule(run);
        }
        Ok(Delivery::Recorded)
    }

    /// Schedule every run a daemon should take up on start: unfinished, not parked for a
    /// human (unless cancelled), not an eval case, and not a fork nobody continued.
    pub fn resume_unfinished(self: &Arc<Self>) -> Result<Vec<RunId>, retrace_replay::Error> {
        let candidates: Vec<RunId> = match &self.cluster {
            // a run whose drive just failed here waits before this worker tries again (the
            // others may take it meanwhile): no storm of retries of a run that cannot go on;
            // and no more than this worker has room for, so idle workers get the rest
            Some(cluster) => {
                let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
                cluster
                    .orphans(self.store.as_ref())
                    .into_iter()
                    .filter(|run| {
                        errors
                            .get(run)
                            .is_none_or(|(_, at)| at.elapsed() >= RETRY_FAILED_AFTER)
                    })
                    .take(self.room())
                    .collect()
            }
            None => self
                .store
                .runs()?
                .iter()
                .filter(|info| takes_a_drive(self.store.as_ref(), info))
                .map(|info| info.id)
                .collect(),
        };
        Ok(candidates
            .into_iter()
            .filter(|run| self.schedule(*run))
            .collect())
    }

    /// Stop: queued runs are not started, drives stop at their next step (a tool call in
    /// flight finishes and is recorded; a model call in flight is dropped and asked again on
    /// resume). `true` if every drive ended within `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stopping.cancel();
        for slot in self.lock().values() {
            slot.inbox.stop();
        }
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn drive_loop(self: Arc<Self>, run: RunId, slot: Arc<Slot>) {
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => permit.ok(),
                () = self.stopping.cancelled() => None,
            };
            let mut go_on = false;
            if let Some(permit) = permit {
                // the lease is claimed only with a worker free to drive: a worker with a
                // backlog leaves the runs it cannot start to the others
                if let Some(cluster) = &self.cluster {
                    if !cluster.holds(&run) && !cluster.claim(&run) {
                        drop(permit);
                        let mut slots = self.lock();
                        self.hand_back(cluster, run, &slot);
                        slots.remove(&run);
                        break;
                    }
                    if let Some(deadline) = cluster.acts_until(&run) {
                        slot.inbox.act_before(deadline);
                    }
                    Self::take_letters(cluster, run, &slot);
                }
                slot.again.store(false, Ordering::SeqCst);
                let from = self.store.run(&run).ok().flatten().map_or(0, |r| r.len());
                let result = self.drive_once(run, &slot.inbox).await;
                drop(permit);
                if self.cluster.is_some() {
                    self.seen_in_log(run, &slot, from);
                }
                let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(stop) => {
                        errors.remove(&run);
                        tracing::info!(run = %run.short(), ?stop, "drive ended");
                        go_on = !matches!(stop, Stop::Finished(_) | Stop::Interrupted);
                    }
                    Err(e) => {
                        tracing::warn!(run = %run.short(), error = %e, "drive failed");
                        errors.insert(run, (e, std::time::Instant::now()));
                    }
                }
            }
            if let Some(cluster) = &self.cluster {
                Self::take_letters(cluster, run, &slot);
            }
            let mut slots = self.lock();
            go_on &= !self.stopping.is_cancelled()
                && (slot.again.swap(false, Ordering::SeqCst) || slot.inbox.has_letters());
            if !go_on {
                if let Some(cluster) = &self.cluster {
                    // letters not recorded go back to the store's inbox, for whoever
                    // drives the run next (a worker takes up runs with letters waiting)
                    self.hand_back(cluster, run, &slot);
                    slots.remove(&run);
                    cluster.release(&run);
                } else {
                    // letters no drive will append (it failed, or the daemon stops): record
                    // them now, while the slot still keeps other writers out
                    self.record_left_over(run, &slot.inbox);
                    slots.remove(&run);
                }
                break;
            }
        }
        let _ = self.stops.send(run);
    }

    /// Signals other workers left in the store's inbox for `run`, into its drive's inbox.
    fn take_letters(cluster: &Cluster, run: RunId, slot: &Slot) {
        for letter in cluster.letters_of(&run) {
            slot.post(&letter.name, letter.payload, true);
        }
    }

    /// Forget the outstanding signals the drive recorded (in the log from seq `from`).
    fn seen_in_log(&self, run: RunId, slot: &Slot, from: u64) {
        let mut outstanding = slot
            .outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if outstanding.is_empty() {
            return;
        }
        let Ok(Some(info)) = self.store.run(&run) else {
            return;
        };
        if info.len() <= from {
            return;
        }
        let Ok(events) = self.store.events(&run, from..=info.len() - 1) else {
            return;
        };
        for (_, event) in events {
            if let EventKind::SignalReceived { name, payload } = event.kind
                && let Some(i) = outstanding
                    .iter()
                    .position(|(n, p)| *n == name && *p == payload)
            {
                outstanding.remove(i);
            }
        }
    }

    /// The slot's signals not in the log, back to the store's inbox.
    fn hand_back(&self, cluster: &Cluster, run: RunId, slot: &Slot) {
        drop(slot.inbox.take());
        let outstanding = std::mem::take(
            &mut *slot
                .outstanding
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if outstanding.is_empty() {
            return;
        }
        // a finished run takes no more signals (as `append_signal` refuses them)
        let finished = state_at_head(self.store.as_ref(), &run, SnapshotPolicy::default())
            .is_ok_and(|folded| folded.state.is_finished());
        for (name, payload) in outstanding {
            if finished {
                tracing::warn!(run = %run.short(), signal = %name, "signal not recorded: the run has finished");
                continue;
            }
            if let Err(e) = cluster.post(&run, &name, &payload) {
                tracing::warn!(run = %run.short(), signal = %name, error = %e, "signal lost: it could not be put back in the inbox");
            }
        }
    }

    fn record_left_over(&self, run: RunId, inbox: &Inbox) {
        for letter in inbox.take() {
            if let EventKind::SignalReceived { name, payload } = letter
                && let Err(e) = append_signal(self.drives.as_ref(), run, &name, payload)
            {
                tracing::warn!(run = %run.short(), signal = %name, error = %e, "signal not recorded");
            }
        }
    }

    async fn drive_once(&self, run: RunId, inbox: &Inbox) -> Result<Stop, String> {
        let store = self.drives.as_ref();
        let spec = recorded_spec(store, &run).map_err(|e| chain(&e))?;
        let model = provider(&spec).map_err(|e| chain(&e))?;
        let runner = Runner::new(store, spec, model).map_err(|e| chain(&e))?;
        let len = store.require_run(&run).map_err(|e| chain(&e))?.len();
        let mut streamed = self.streams.publisher(run, len);
        let sender = self
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut spans = match sender {
            Some(spans) => match spans.tracer(store, &run) {
                Ok(tracer) => Some(tracer),
                Err(e) => {
                    tracing::warn!(run = %run.short(), error = %e, "this drive's spans are not sent");
                    None
                }
            },
            None => None,
        };
        let mut progress = |progress: Progress| match progress {
            Progress::Appended(event) => {
                streamed.appended(event.seq);
                if let Some(spans) = &mut spans {
                    spans.appended(store, &event);
                }
            }
            Progress::Text(text) => streamed.text(text),
            // a child run's events reach its own followers through the store
            Progress::Child(..) => {}
        };
        runner
            .drive_with(run, &mut progress, Some(inbox))
            .await
            .map_err(|e| chain(&e))
    }
}
