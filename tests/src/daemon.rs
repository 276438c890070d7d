//! `retrace serve` in the test's own process, on a runtime of its own, over a store on disk:
//! for tests that need a daemon holding a store without spawning the binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use retrace_serve::server::{Config, serve};

/// A daemon serving a store; stops gracefully when dropped.
#[derive(Debug)]
pub struct Served {
    /// Its unix socket.
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serve the store in `dir` with `workers` workers; returns once it listens.
    pub fn start(dir: &Path, workers: usize) -> Self {
        Self::with_config(Config {
            workers,
            grace: Duration::from_secs(10),
            ..Config::new(dir)
        })
    }

    /// Serve as `config` says (it must listen on a unix socket); returns once it listens.
    pub fn with_config(config: Config) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, socket) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(serve(
                    config,
                    async {
                        let _ = stopped.await;
                    },
                    |started| {
                        let _ = ready.send(started.socket.clone().expect("a unix socket"));
                    },
                ))
                .expect("serve");
        });
        let socket = socket
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon starts");
        Self {
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A client of it.
    pub fn client(&self) -> retrace_serve::Client {
        retrace_serve::Client::unix(&self.socket).expect("client")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
