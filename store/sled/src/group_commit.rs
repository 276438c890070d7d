//! Group commit: many writers, one fsync.
//!
//! A writer that has applied its changes in memory takes a ticket and waits until a flush
//! that started after its changes has finished. Whoever finds no flush in progress becomes
//! the leader and flushes for everyone who took a ticket before the flush began; the others
//! wait on a condition variable. So N concurrent appends cost about one fsync, not N, and
//! still none returns before its data is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out so far.
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    flushing: bool,
}

/// Coordinates durable acknowledgement of concurrent writes.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
    flushes: AtomicU64,
}

impl GroupCommit {
    /// Block until everything this thread wrote before the call is durable, flushing with
    /// `flush` if no other thread is already doing so.
    pub fn wait_durable<E>(&self, flush: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead a flush covering every ticket issued so far (their writes are applied).
            state.flushing = true;
            let covers = state.issued;
            drop(state);
            let result = flush();
            self.flushes.fetch_add(1, Ordering::Relaxed);
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.flushing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covers);
            }
            self.done.notify_all();
            // On failure only the leader reports it; waiters retry with a flush of their own.
            result?;
        }
    }

    /// Flushes performed so far (appends ÷ flushes = how much group commit saved).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn concurrent_waiters_share_flushes() {
        let commit = GroupCommit::default();
        let barrier = Barrier::new(16);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    barrier.wait();
                    commit
                        .wait_durable(|| {
                            std::thread::sleep(Duration::from_millis(20));
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                });
            }
        });
        // The first leader flushes alone; everyone arriving during its 20 ms flush shares
        // the next one. Far fewer flushes than writers.
        assert!(
            commit.flushes() <= 8,
            "{} flushes for 16 writers",
            commit.flushes()
        );
    }

    #[test]
    fn failed_flush_is_reported_and_not_counted_durable() {
        let commit = GroupCommit::default();
        assert_eq!(commit.wait_durable(|| Err("disk full")), Err("disk full"));
        assert_eq!(commit.wait_durable(|| Ok::<(), &str>(())), Ok(()));
    }
}
