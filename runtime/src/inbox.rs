//! A driven run's inbox: signals from outside the drive (a user's message, a cancel) that
//! the driving executor appends itself, so a run always has one writer, and the stop
//! request of a host that is shutting down.
//!
//! Letters are appended at the top of the executor's next step. A cancel or a stop also
//! interrupts a model call in flight (its intent is durable; a resumed run asks again); a
//! tool call in flight finishes and its result is recorded first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use retrace_events::{BlobId, EventKind};

/// Name of the signal that cancels a run.
pub const CANCEL: &str = "cancel";
/// Name of the signal that adds a user's message to the conversation.
pub const USER_MESSAGE: &str = "user_message";

/// Letters for one run, its stop flag, and how long its host may still act for it.
#[derive(Debug, Default)]
pub struct Inbox {
    letters: Mutex<Vec<EventKind>>,
    cancelled: AtomicBool,
    stopping: AtomicBool,
    wake: tokio::sync::Notify,
    /// After this instant the drive starts no tool call (see [`Inbox::act_before`]).
    act_before: Mutex<Option<Instant>>,
}

impl Inbox {
    /// Queue signal `name` with its payload blob for the drive to append.
    pub fn post(&self, name: &str, payload: BlobId) {
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(EventKind::SignalReceived {
                name: name.to_owned(),
                payload,
            });
        if name == CANCEL {
            self.cancelled.store(true, Ordering::SeqCst);
            self.wake.notify_waiters();
        }
    }

    /// Ask the drive to stop at its next step (the run stays unfinished, to be resumed).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Let the drive start tool calls only before `deadline`: its host holds the run (a
    /// lease) until about then, and renews this as it renews the hold. A host stalled past
    /// it (paused, starved) must not act on a run another host may have taken meanwhile:
    /// the drive stops instead, before the tool runs ([`Inbox::may_act`]).
    pub fn act_before(&self, deadline: Instant) {
        *self
            .act_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(deadline);
    }

    /// The deadline [`Inbox::act_before`] set, if any (a child run's drive follows its
    /// parent's).
    pub fn deadline(&self) -> Option<Instant> {
        *self
            .act_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the drive may start a tool call now (no deadline, or before it).
    pub fn may_act(&self) -> bool {
        self.act_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|deadline| Instant::now() < deadline)
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether letters wait to be appended.
    pub fn has_letters(&self) -> bool {
        !self
            .letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// The letters waiting, in the order posted (taken out).
    pub fn take(&self) -> Vec<EventKind> {
        self.cancelled.store(false, Ordering::SeqCst);
        std::mem::take(
            &mut *self
                .letters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Resolves once a cancel is posted or a stop asked for.
    pub async fn interrupted(&self) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.cancelled.load(Ordering::SeqCst) || self.is_stopping() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_interrupts_a_waiter_and_is_taken_in_order() {
        let inbox = std::sync::Arc::new(Inbox::default());
        let waiter = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.interrupted().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        inbox.post(USER_MESSAGE, BlobId::of(b"\"hi\""));
        inbox.post(CANCEL, BlobId::of(b"{}"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the cancel wakes the waiter")
            .unwrap();
        let names: Vec<_> = inbox
            .take()
            .into_iter()
            .map(|k| match k {
                EventKind::SignalReceived { name, .. } => name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [USER_MESSAGE, CANCEL]);
        assert!(!inbox.has_letters());
        inbox.stop();
        inbox.interrupted().await;
        assert!(inbox.is_stopping());
    }
}
