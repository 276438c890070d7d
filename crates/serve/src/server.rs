//! `retrace serve`: open the store (taking sled's lock), listen on `serve.sock` in the
//! store directory (and, if asked, on a loopback TCP port behind a bearer token), take up
//! unfinished runs, and serve the API until told to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use retrace_store::Store;
use retrace_store_sled::SledStore;

use crate::routes::{Daemon, router};
use crate::scheduler::Scheduler;

/// The socket's file name in the store directory.
pub const SOCKET: &str = "serve.sock";
/// Where the loopback listener's token is written, in the store directory.
pub const TOKEN_FILE: &str = "serve.token";

/// How to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store directory.
    pub store: PathBuf,
    /// Runs driven at once, at most.
    pub workers: usize,
    /// Also listen on this loopback address (HTTP, bearer token required).
    pub http: Option<SocketAddr>,
    /// The token for `http` (default: a fresh random one, written to `serve.token`).
    pub token: Option<String>,
    /// How long a shutdown waits for drives to reach a step boundary.
    pub grace: Duration,
}

/// What a started daemon listens on.
#[derive(Clone, Debug)]
pub struct Started {
    /// The unix socket.
    pub socket: PathBuf,
    /// The loopback listener, if any.
    pub http: Option<SocketAddr>,
    /// The file holding its token.
    pub token_file: Option<PathBuf>,
    /// Unfinished runs taken up.
    pub resumed: usize,
}

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store cannot be opened (another process holds it, …).
    #[error("cannot open the store for serving: {0}")]
    Store(#[from] retrace_store::Error),
    /// A listener cannot be set up.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// Where.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
    /// Taking up unfinished runs failed.
    #[error("cannot take up unfinished runs: {0}")]
    Resume(#[from] retrace_replay::Error),
}

/// The socket path of the daemon for `store`.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET)
}

/// Serve `config.store` until `shutdown` resolves; `on_start` is told where it listens once
/// it does. Then stop drives at their next step (waiting up to `config.grace`), close
/// connections, flush, and remove the socket.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    on_start: impl FnOnce(&Started),
) -> Result<(), Error> {
    let sled = SledStore::open(&config.store)?;
    retrace_runtime::spec::guard_store(&config.store);
    let store: Arc<dyn Store> = Arc::new(sled);
    let socket = socket_path(&config.store);
    // We hold the store's lock, so a socket file left here belongs to a dead daemon.
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket).map_err(|source| Error::Listen {
        what: socket.display().to_string(),
        source,
    })?;
    restrict(&socket)?;
    let (tcp, token_file, token) = match config.http {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                return Err(Error::Config(format!(
                    "--http {addr}: only loopback addresses (127.0.0.1, ::1) are served; put a proxy in front for anything else"
                )));
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    what: addr.to_string(),
                    source,
                })?;
            let token = config
                .token
                .clone()
                .unwrap_or_else(retrace_runtime::entropy::secret_token);
            let file = config.store.join(TOKEN_FILE);
            std::fs::write(&file, &token).map_err(|source| Error::Listen {
                what: file.display().to_string(),
                source,
            })?;
            restrict(&file)?;
            (Some(listener), Some(file), Some(token))
        }
        None => (None, None, None),
    };
    let scheduler = Scheduler::new(Arc::clone(&store), config.workers);
    let daemon = Arc::new(Daemon {
        store: Arc::clone(&store),
        scheduler: Arc::clone(&scheduler),
        dir: config.store.clone(),
    });
    let resumed = scheduler.resume_unfinished()?.len();
    let stopping = scheduler.stopping();
    let mut servers = Vec::new();
    let http = match tcp {
        Some(listener) => {
            let addr = listener.local_addr().ok();
            let app = router(Arc::clone(&daemon), token);
            let stop = stopping.clone();
            servers.push(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }));
            addr
        }
        None => None,
    };
    {
        let app = router(Arc::clone(&daemon), None);
        let stop = stopping.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }));
    }
    tracing::info!(socket = %socket.display(), resumed, workers = scheduler.workers(), "serving");
    on_start(&Started {
        socket: socket.clone(),
        http,
        token_file: token_file.clone(),
        resumed,
    });
    shutdown.await;
    tracing::info!("shutting down: stopping drives at their next step");
    let clean = scheduler.shutdown(config.grace).await;
    if !clean {
        tracing::warn!(grace = ?config.grace, "some drives did not stop in time; their runs continue from the log on the next start");
    }
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    store.flush()?;
    let _ = std::fs::remove_file(&socket);
    if let Some(file) = token_file {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Only the owner may use the socket or read the token.
fn restrict(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Listen {
            what: path.display().to_string(),
            source,
        }
    })
}
