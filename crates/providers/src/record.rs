//! Record mode: a provider that passes calls through to another and writes what came back,
//! replies and failures alike, to a cassette the [`Scripted`](crate::Scripted) provider can
//! play. A live session becomes an offline test.
//!
//! Entries are kept at their call's `step` (the index the scripted provider plays by), and
//! the file is rewritten after every call (to a temporary file, then renamed), so a session
//! that is killed still leaves a playable cassette. An existing cassette is extended, so a
//! resumed session records into the same file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::scripted::{Cassette, CassetteError, ScriptedError, ScriptedReply};
use crate::{BoxFuture, Delta, Error, ModelReply, ModelRequest, Provider};

/// Records another provider's replies to a cassette file.
#[derive(Debug)]
pub struct Recorder<P> {
    inner: P,
    path: PathBuf,
    cassette: Mutex<Cassette>,
}

impl<P: Provider> Recorder<P> {
    /// Record `inner`'s replies to `path` (extending the cassette there, if any).
    pub fn new(inner: P, path: &Path) -> Result<Self, CassetteError> {
        let cassette = if path.exists() {
            crate::Scripted::load(path)?.cassette().clone()
        } else {
            Cassette::default()
        };
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            cassette: Mutex::new(cassette),
        })
    }

    fn record(&self, step: u64, entry: ScriptedReply) -> Result<(), Error> {
        let mut cassette = self
            .cassette
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = usize::try_from(step).unwrap_or(usize::MAX);
        if cassette.replies.len() <= at {
            cassette.replies.resize(at + 1, ScriptedReply::default());
        }
        cassette.replies[at] = entry;
        let text = serde_json::to_string_pretty(&*cassette).expect("a cassette serialises");
        let temporary = self.path.with_extension("recording");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &self.path))
            .map_err(|e| Error::Permanent {
                provider: "record".into(),
                message: format!("cannot write the cassette {}: {e}", self.path.display()),
            })
    }
}

impl<P: Provider> Provider for Recorder<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        on_delta: &'a mut (dyn FnMut(Delta) + Send),
    ) -> BoxFuture<'a, Result<ModelReply, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.complete(request, on_delta).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let entry = match &result {
                Ok(reply) => ScriptedReply {
                    text: reply.text.clone(),
                    tool_calls: reply.tool_calls.clone(),
                    reasoning: reply.reasoning.clone(),
                    usage: Some(reply.usage),
                    latency_ms,
                    ..ScriptedReply::default()
                },
                Err(e) => ScriptedReply {
                    latency_ms,
                    error: Some(ScriptedError {
                        transient: e.is_transient(),
                        message: e.to_string(),
                    }),
                    ..ScriptedReply::default()
                },
            };
            self.record(request.step, entry)?;
            result
        })
    }
}
