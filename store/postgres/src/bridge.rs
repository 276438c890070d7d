//! The [`Store`](retrace_store::Store) trait blocks; the driver is async. The store owns a
//! small tokio runtime and waits for each operation on the caller's thread, which works
//! from plain threads and from inside another runtime's tasks alike (the caller's thread
//! blocks, as it would on a disk write).

use std::future::Future;

/// A private runtime that runs the driver's futures.
pub(crate) struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    /// Two worker threads: enough to keep a pool of connections busy.
    pub(crate) fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("retrace-postgres")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Run `future` on the private runtime and wait for its output here.
    pub(crate) fn wait<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.handle().spawn(future);
        match futures::executor::block_on(task) {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a PostgreSQL store task was cancelled: {e}"),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // dropping a runtime blocks, which async callers may not do; let it wind down alone
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
