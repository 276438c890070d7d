//! Live tail across processes: every append notifies `retrace_<md5 of the schema>` with the run's id
//! (`pg_notify` in the append's transaction, so the notice goes out on commit). One
//! listening connection per store receives them; for each run someone here follows, it
//! reads the events after the last one handed out and publishes them. Appends made through
//! this store are handed out at once, without waiting for their notice; the seq each run
//! was handed out to keeps every event delivered once, in order.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use retrace_events::{Event, EventId, RunId, decode_event};
use retrace_store::{Appended, Error, Result, StoredEvent, Subscription, Watchers};
use tokio_postgres::AsyncMessage;

use crate::store::Shared;

/// Subscribers of this store and, per followed run, the next seq to hand out.
#[derive(Default)]
pub(crate) struct Tail {
    watchers: Watchers,
    next: Mutex<HashMap<RunId, u64>>,
}

impl Tail {
    /// Follow `run`, whose length is `len` now.
    pub(crate) fn subscribe(&self, run: RunId, len: u64) -> Subscription {
        let mut next = self.lock();
        let sub = self.watchers.subscribe(run);
        next.entry(run).or_insert(len);
        sub
    }

    /// Hand out `events` (consecutive seqs, with ids) if they are the next ones of `run`;
    /// events already handed out are skipped, and a gap is left for the listener to fill.
    pub(crate) fn publish(&self, run: RunId, events: Vec<(EventId, Event)>) {
        let mut next = self.lock();
        let Some(want) = next.get(&run).copied() else {
            return;
        };
        if !self.watchers.is_watched(&run) {
            next.remove(&run);
            return;
        }
        let fresh: Vec<_> = events.into_iter().filter(|(_, e)| e.seq >= want).collect();
        match fresh.first() {
            Some((_, first)) if first.seq == want => {}
            _ => return,
        }
        let last = fresh.last().map_or(want, |(_, e)| e.seq);
        next.insert(run, last + 1);
        self.watchers.publish(Appended { run, events: fresh });
    }

    fn followed(&self) -> Vec<(RunId, u64)> {
        self.lock().iter().map(|(r, n)| (*r, *n)).collect()
    }

    fn wants(&self, run: &RunId) -> Option<u64> {
        self.lock().get(run).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, u64>> {
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The notice payload for an append to `run`.
pub(crate) fn notice(run: &RunId) -> String {
    run.to_hex()
}

/// Listen for appends until the store is dropped, reconnecting after a lost connection and
/// catching up every followed run on each (re)connect, since notices sent while
/// disconnected are gone.
pub(crate) async fn listen(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let connected = strong.target.config.connect(tokio_postgres::NoTls).await;
        let channel = strong.channel.clone();
        drop(strong);
        let (client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "live tail cannot connect to PostgreSQL; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "live tail connection lost; reconnecting");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {}", crate::schema::quote(&channel)))
            .await
        {
            tracing::warn!(error = %e, "LISTEN failed; retrying in 1 s");
            pump.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if let Some(strong) = shared.upgrade() {
            for (run, _) in strong.tail.followed() {
                catch_up(&strong, run).await;
            }
        }
        while let Some(payload) = rx.recv().await {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            let Ok(run) = payload.parse::<RunId>() else {
                continue;
            };
            catch_up(&strong, run).await;
        }
        pump.abort();
    }
}

/// Read and hand out `run`'s events after the last one handed out, if anyone follows it.
async fn catch_up(shared: &Shared, run: RunId) {
    let Some(from) = shared.tail.wants(&run) else {
        return;
    };
    match read_after(shared, run, from).await {
        Ok(events) if !events.is_empty() => shared.tail.publish(run, events),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(run = %run.short(), error = %e, "live tail cannot read new events");
        }
    }
}

async fn read_after(shared: &Shared, run: RunId, from: u64) -> Result<Vec<(EventId, Event)>> {
    let stored: Vec<StoredEvent> = shared.own_events(run, from, u64::MAX).await?;
    stored
        .into_iter()
        .map(|s| {
            let event = decode_event(&s.bytes).map_err(|e| Error::Corrupt {
                what: format!("run {run} seq {}: {e}", s.seq),
            })?;
            Ok((s.id, event))
        })
        .collect()
}
