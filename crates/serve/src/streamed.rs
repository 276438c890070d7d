//! Text a run's model streams while the daemon drives it, for whoever follows the run
//! (`GET /v1/runs/{run}/events`, message `text`). It is live only, never recorded: the log
//! keeps the whole reply.
//!
//! Each delta carries the seq of the event it comes before (the model's reply, or whatever
//! ended the call), so a follower puts it between the right events. A run's last
//! [`KEPT`] deltas are kept while it is driven or followed and for [`GRACE`] after, so a
//! follower that joins a moment late (`retrace run` follows right after submitting, and a
//! short run may be done by then) still sees the text of the events it is sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use retrace_events::RunId;
use tokio::sync::broadcast;

/// Deltas kept per run for followers who join late (and how far one may fall behind).
pub const KEPT: usize = 4096;
/// How long a run's deltas are kept after its drive ends, for a follower about to join.
pub const GRACE: Duration = Duration::from_secs(30);

/// One delta of streamed text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// The seq of the event it comes before: the first appended after it.
    pub before: u64,
    /// The text.
    pub text: Arc<str>,
}

/// One run's channel and its recent deltas.
#[derive(Debug)]
struct Entry {
    tx: broadcast::Sender<Streamed>,
    recent: VecDeque<Streamed>,
    /// Drives under way.
    drives: usize,
    /// Kept at least until then once no drive holds the run and nobody follows it.
    kept_until: Instant,
}

impl Entry {
    fn new() -> Self {
        Self {
            tx: broadcast::channel(KEPT).0,
            recent: VecDeque::new(),
            drives: 0,
            kept_until: Instant::now(),
        }
    }

    fn unused(&self, now: Instant) -> bool {
        self.drives == 0 && self.tx.receiver_count() == 0 && now >= self.kept_until
    }
}

/// Every run's streamed text.
#[derive(Debug, Default)]
pub struct Streams {
    runs: Mutex<HashMap<RunId, Entry>>,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Entry>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forget the runs nobody drives or follows whose grace has passed.
    fn sweep(runs: &mut HashMap<RunId, Entry>) {
        let now = Instant::now();
        runs.retain(|_, entry| !entry.unused(now));
    }

    /// Follow `run`'s text: the deltas kept so far, then each new one.
    pub fn follow(self: &Arc<Self>, run: RunId) -> Feed {
        let mut runs = self.lock();
        Self::sweep(&mut runs);
        let entry = runs.entry(run).or_insert_with(Entry::new);
        Feed {
            kept: entry.recent.iter().cloned().collect(),
            rx: Some(entry.tx.subscribe()),
            streams: Arc::clone(self),
            run,
        }
    }

    /// Publish the text of a drive of `run`, whose log has `len` events as it starts.
    pub fn publisher(self: &Arc<Self>, run: RunId, len: u64) -> Publisher {
        let mut runs = self.lock();
        Self::sweep(&mut runs);
        let entry = runs.entry(run).or_insert_with(Entry::new);
        entry.drives += 1;
        // text of a call a drive stopped in: this drive asks again
        entry.recent.retain(|t| t.before < len);
        Publisher {
            streams: Arc::clone(self),
            run,
            before: len,
        }
    }

    fn publish(&self, run: RunId, streamed: Streamed) {
        let mut runs = self.lock();
        let entry = runs.entry(run).or_insert_with(Entry::new);
        if entry.recent.len() == KEPT {
            entry.recent.pop_front();
        }
        entry.recent.push_back(streamed.clone());
        // nobody following is no error
        let _ = entry.tx.send(streamed);
    }
}

/// A drive's side: told what it appends and what its model streams.
#[derive(Debug)]
pub struct Publisher {
    streams: Arc<Streams>,
    run: RunId,
    before: u64,
}

impl Publisher {
    /// Event `seq` was appended.
    pub fn appended(&mut self, seq: u64) {
        self.before = seq + 1;
    }

    /// The model streamed `text`.
    pub fn text(&self, text: String) {
        self.streams.publish(
            self.run,
            Streamed {
                before: self.before,
                text: text.into(),
            },
        );
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(entry) = self.streams.lock().get_mut(&self.run) {
            entry.drives = entry.drives.saturating_sub(1);
            entry.kept_until = Instant::now() + GRACE;
        }
    }
}

/// A follower's side: the deltas kept when it joined, then live ones.
#[derive(Debug)]
pub struct Feed {
    kept: VecDeque<Streamed>,
    rx: Option<broadcast::Receiver<Streamed>>,
    streams: Arc<Streams>,
    run: RunId,
}

impl Feed {
    /// The deltas kept when it joined, oldest first (taken once).
    pub fn take_kept(&mut self) -> VecDeque<Streamed> {
        std::mem::take(&mut self.kept)
    }

    /// Move the new deltas already published into `texts` (the text of an event comes
    /// before it: take it before sending the event).
    pub fn take_published(&mut self, texts: &mut VecDeque<Streamed>) {
        let Some(rx) = self.rx.as_mut() else { return };
        loop {
            match rx.try_recv() {
                Ok(streamed) => texts.push_back(streamed),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// The next new delta (pending for ever once none can come). A follower more than
    /// [`KEPT`] deltas behind skips the ones it missed.
    pub async fn recv(&mut self) -> Streamed {
        if let Some(rx) = self.rx.as_mut() {
            loop {
                match rx.recv().await {
                    Ok(streamed) => return streamed,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        std::future::pending().await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut runs = self.streams.lock();
        if runs
            .get(&self.run)
            .is_some_and(|e| e.unused(Instant::now()))
        {
            runs.remove(&self.run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunId {
        RunId::from_bytes([7; 16])
    }

    #[tokio::test]
    async fn a_follower_gets_the_kept_deltas_then_live_ones_tagged_with_their_event() {
        let streams = Arc::new(Streams::default());
        let mut publisher = streams.publisher(run(), 2);
        publisher.text("Let me ".into());
        let mut feed = streams.follow(run());
        publisher.text("look.".into());
        publisher.appended(2);
        publisher.text("Done.".into());
        let kept: Vec<_> = feed.take_kept().into_iter().collect();
        assert_eq!(
            kept,
            vec![Streamed {
                before: 2,
                text: "Let me ".into()
            }]
        );
        assert_eq!(feed.recv().await.text.as_ref(), "look.");
        let done = feed.recv().await;
        assert_eq!((done.before, done.text.as_ref()), (3, "Done."));
        // kept after the drive ends, for a follower about to join
        drop(publisher);
        drop(feed);
        assert_eq!(streams.follow(run()).take_kept().len(), 3);
    }

    #[test]
    fn runs_nobody_drives_or_follows_are_forgotten() {
        let streams = Arc::new(Streams::default());
        drop(streams.follow(run()));
        assert!(streams.lock().is_empty());
        let publisher = streams.publisher(run(), 0);
        publisher.text("hi".into());
        drop(publisher);
        streams.lock().get_mut(&run()).expect("kept").kept_until = Instant::now();
        drop(streams.follow(RunId::from_bytes([8; 16])));
        assert!(streams.lock().is_empty());
    }
}
