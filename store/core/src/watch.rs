//! Live tail: subscribers of a run receive its appends, in order, as soon as they are
//! durable, without polling storage. Channels are runtime-agnostic (`flume`): a thread can
//! block on them and async code can await them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use retrace_events::{Event, EventId, RunId};

/// Events appended to a run by one successful append, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The run that grew.
    pub run: RunId,
    /// The new events with their ids.
    pub events: Vec<(EventId, Event)>,
}

/// A live feed of one run's appends. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: flume::Receiver<Arc<Appended>>,
}

impl Subscription {
    /// Wait up to `timeout` for the next append.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Arc<Appended>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next append if one is already waiting.
    pub fn try_recv(&self) -> Option<Arc<Appended>> {
        self.rx.try_recv().ok()
    }

    /// Await the next append (for async callers); `None` once the store is gone.
    pub async fn recv_async(&self) -> Option<Arc<Appended>> {
        self.rx.recv_async().await.ok()
    }
}

/// The subscriber registry a backend embeds.
#[derive(Debug, Default)]
pub struct Watchers {
    subs: Mutex<BTreeMap<RunId, Vec<flume::Sender<Arc<Appended>>>>>,
}

impl Watchers {
    /// Register a subscriber to `run`.
    pub fn subscribe(&self, run: RunId) -> Subscription {
        let (tx, rx) = flume::unbounded();
        self.subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(run)
            .or_default()
            .push(tx);
        Subscription { rx }
    }

    /// Whether anyone still listens to `run` (a subscriber that hung up counts until the
    /// next publish notices).
    pub fn is_watched(&self, run: &RunId) -> bool {
        self.subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run)
            .is_some_and(|list| list.iter().any(|tx| !tx.is_disconnected()))
    }

    /// Deliver an append to the run's subscribers, forgetting the ones that hung up. Call it
    /// only after the append is durable.
    pub fn publish(&self, appended: Appended) {
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = subs.get_mut(&appended.run) else {
            return;
        };
        let run = appended.run;
        let shared = Arc::new(appended);
        list.retain(|tx| tx.send(Arc::clone(&shared)).is_ok());
        if list.is_empty() {
            subs.remove(&run);
        }
    }
}
