//! `retrace inspect [RUN[@SEQ]]`: the inspector window over the store.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use retrace_inspector::Target;
use retrace_store::Store;

use crate::{store_access, target};

pub fn run(dir: &Path, at: Option<&str>) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    // A bad RUN[@SEQ] is an error here, before a window opens; `RUN` alone starts at the
    // head, `RUN@SEQ` at that event.
    let target = match at {
        Some(text) => {
            let resolved = target::resolve(&store, text)?;
            Target {
                run: Some(resolved.run),
                seq: Some(resolved.seq),
            }
        }
        None => Target::default(),
    };
    let host = Arc::new(Host {
        store: Arc::clone(&store),
        daemon: access.daemon().cloned(),
    });
    retrace_inspector::run(store, host, &dir.display().to_string(), target)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(
            "could not open the inspector window (is there a display? set DISPLAY, or run \
             under Xvfb)",
        )?;
    Ok(ExitCode::SUCCESS)
}

/// What the inspector asks of the binary: the clock, fresh ids, and running an agent.
struct Host {
    store: Arc<dyn Store>,
    /// The daemon holding the store, which then drives resumed runs.
    daemon: Option<retrace_serve::Client>,
}

impl retrace_inspector::Host for Host {
    fn now(&self) -> retrace_events::Timestamp {
        retrace_runtime::entropy::now()
    }

    fn new_run_id(&self) -> retrace_events::RunId {
        retrace_runtime::entropy::new_run_id()
    }

    fn resume(&self, run: retrace_events::RunId) -> Result<(), String> {
        if let Some(client) = &self.daemon {
            return client
                .resume(&run.to_string())
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        super::run::resume_in_background(Arc::clone(&self.store), run).map_err(|e| format!("{e:#}"))
    }
}
