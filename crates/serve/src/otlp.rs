//! `retrace serve --otlp-endpoint URL`: the spans of every run the daemon drives, sent to an
//! OpenTelemetry collector as the run goes (OTLP/HTTP protobuf, `retrace_otel`). A drive
//! feeds each event it appends to its run's [`Tracer`]; the spans an event completes (a
//! model or tool call when its outcome is appended, the run when it finishes) go to one
//! sender task, which batches what has come in and sends it. A collector that is down costs
//! a warning, never a drive: the spans can be sent again from the log with `retrace
//! export-otel`.

use retrace_events::{Event, RunId};
use retrace_otel::{Options, SpanData, Tracer};
use retrace_store::Store;
use tokio::sync::mpsc;

/// Spans sent at once, at most.
const BATCH: usize = 512;

/// Where drives put the spans they complete.
#[derive(Clone, Debug)]
pub struct Spans {
    tx: mpsc::UnboundedSender<Vec<SpanData>>,
    options: Options,
}

impl Spans {
    /// Start the sender task (on the current tokio runtime) for the collector at
    /// `endpoint`; it ends, having sent what it was given, once every [`Spans`] is dropped.
    pub fn start(
        endpoint: String,
        client: reqwest::Client,
        options: Options,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<SpanData>>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = first;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend(more),
                        Err(_) => break,
                    }
                }
                let count = batch.len();
                if let Err(e) = retrace_otel::send(client.clone(), &endpoint, batch).await {
                    tracing::warn!(error = %e, spans = count, "spans not sent (retrace export-otel sends them from the log)");
                }
            }
        });
        (Self { tx, options }, task)
    }

    /// A tracer for `run` that has seen the events the run already has (their spans were
    /// sent by the drives that appended them).
    pub fn tracer(&self, store: &dyn Store, run: &RunId) -> Result<RunSpans, retrace_otel::Error> {
        let mut tracer = Tracer::new(*run, self.options);
        if let Some(head) = store.require_run(run)?.head {
            for (id, event) in store.events(run, 0..=head.seq)? {
                tracer.push(store, &id, &event)?;
            }
        }
        Ok(RunSpans {
            tracer,
            tx: self.tx.clone(),
        })
    }
}

/// One drive's side: told each event it appends.
#[derive(Debug)]
pub struct RunSpans {
    tracer: Tracer,
    tx: mpsc::UnboundedSender<Vec<SpanData>>,
}

impl RunSpans {
    /// `event` was appended: send the spans it completes.
    pub fn appended(&mut self, store: &dyn Store, event: &Event) {
        match self.tracer.push(store, &event.id(), event) {
            Ok(spans) if !spans.is_empty() => {
                let _ = self.tx.send(spans);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, seq = event.seq, "no span for this event"),
        }
    }
}
