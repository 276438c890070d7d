//! `retrace serve`: open the store (taking sled's lock), listen on `serve.sock` in the
//! store directory (and, if asked, on a loopback TCP port behind a bearer token), take up
//! unfinished runs, and serve the API until told to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use retrace_store::Store;
use retrace_store_sled::SledStore;

use retrace_store_postgres::{PgStore, Target, is_postgres_url};

use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::routes::{Daemon, router};
use crate::scheduler::Scheduler;

/// The socket's file name in the store directory.
pub const SOCKET: &str = "serve.sock";
/// Where the loopback listener's token is written, in the store directory.
pub const TOKEN_FILE: &str = "serve.token";

/// How to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store: a directory, or a `postgres://` URL (password in `PGPASSWORD`) shared
    /// with other workers.
    pub store: PathBuf,
    /// Runs driven at once, at most.
    pub workers: usize,
    /// Also listen on this loopback address (HTTP, bearer token required).
    pub http: Option<SocketAddr>,
    /// The token for `http` (default: a fresh random one, written to `serve.token`; on a
    /// PostgreSQL store, required: workers of one store share it). It acts as an `admin`
    /// named `serve-token` ([`crate::auth`]).
    pub token: Option<String>,
    /// Instead of `token`: a tokens file naming several tokens, each with a role
    /// ([`Tokens::load`]); no `serve.token` is written.
    pub tokens: Option<PathBuf>,
    /// How long a shutdown waits for drives to reach a step boundary.
    pub grace: Duration,
    /// The unix socket (default: `serve.sock` in the store directory; on a PostgreSQL
    /// store, none unless given).
    pub socket: Option<PathBuf>,
    /// On a PostgreSQL store: this worker's name (default `HOST:PID:NONCE`), as leases record it.
    pub worker: Option<String>,
    /// On a PostgreSQL store: how long a run's lease lasts without a renewal. A worker that
    /// dies loses its runs to the others after this long.
    pub lease_ttl: Duration,
    /// Send the spans of the runs driven to this OpenTelemetry collector (OTLP/HTTP, base
    /// URL or `…/v1/traces`) as they progress.
    pub otlp_endpoint: Option<String>,
    /// With `otlp_endpoint`: leave message contents (the task, replies, tool arguments and
    /// results) out of the spans.
    pub otlp_no_content: bool,
}

impl Config {
    /// Serve `store` with defaults: 16 workers, no HTTP, 30 s grace, 15 s leases.
    pub fn new(store: impl Into<PathBuf>) -> Self {
        Self {
            store: store.into(),
            workers: 16,
            http: None,
            token: None,
            tokens: None,
            grace: Duration::from_secs(30),
            socket: None,
            worker: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            otlp_endpoint: None,
            otlp_no_content: false,
        }
    }
}

/// A lease's life without renewal, unless configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// What a started daemon listens on.
#[derive(Clone, Debug)]
pub struct Started {
    /// The unix socket, if any.
    pub socket: Option<PathBuf>,
    /// The loopback listener, if any.
    pub http: Option<SocketAddr>,
    /// The file holding its token.
    pub token_file: Option<PathBuf>,
    /// How many named tokens its tokens file gave (0 without one).
    pub named_tokens: usize,
    /// Unfinished runs taken up.
    pub resumed: usize,
    /// On a PostgreSQL store: this worker's name.
    pub worker: Option<String>,
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
    let opened = open(&config)?;
    let store = Arc::clone(&opened.store);
    let socket = opened.socket.clone();
    let unix = socket.as_deref().map(unix_listener).transpose()?;
    let (tcp, token_file, tokens) = http_listener(&config, &opened).await?;
    let named_tokens = tokens.as_ref().map_or(0, Tokens::named);
    if unix.is_none() && tcp.is_none() {
        return Err(Error::Config(
            "a worker on a PostgreSQL store listens on nothing: give --http ADDR or --socket PATH"
                .into(),
        ));
    }
    let scheduler = match &opened.cluster {
        Some(cluster) => {
            Scheduler::clustered(Arc::clone(&store), config.workers, Arc::clone(cluster))
        }
        None => Scheduler::new(Arc::clone(&store), config.workers),
    };
    let exporter = span_exporter(&config, &scheduler)?;
    let daemon = Arc::new(Daemon {
        store: Arc::clone(&store),
        scheduler: Arc::clone(&scheduler),
        dir: opened.shown.clone(),
    });
    let resumed = scheduler.resume_unfinished()?.len();
    let stopping = scheduler.stopping();
    let mut servers = Vec::new();
    let http = match tcp {
        Some(listener) => {
            let addr = listener.local_addr().ok();
            let app = router(Arc::clone(&daemon), tokens.map(Arc::new));
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
    if let Some(unix) = unix {
        let app = router(Arc::clone(&daemon), None);
        let stop = stopping.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }));
    }
    let ticking = opened.cluster.as_ref().map(|cluster| {
        tokio::spawn(crate::cluster::keep(
            Arc::clone(&scheduler),
            Arc::clone(cluster),
            stopping.clone(),
        ))
    });
    let worker = opened.cluster.as_ref().map(|c| c.worker().to_owned());
    tracing::info!(store = %opened.shown.display(), ?worker, resumed, workers = scheduler.workers(), "serving");
    on_start(&Started {
        socket: socket.clone(),
        http,
        token_file: token_file.clone(),
        named_tokens,
        resumed,
        worker,
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
    if let Some(ticking) = ticking {
        let _ = ticking.await;
    }
    // the drives are done: the sender ends once it has sent what they completed
    if let Some(exporter) = exporter {
        drop(scheduler.take_spans());
        let _ = tokio::time::timeout(Duration::from_secs(10), exporter).await;
    }
    // drives have stopped: the other workers may take these runs at once (if some did not,
    // one may still run a tool, and its leases expire by themselves)
    if let Some(cluster) = &opened.cluster
        && clean
    {
        cluster.release_all();
    }
    store.flush()?;
    if let Some(socket) = &socket {
        let _ = std::fs::remove_file(socket);
    }
    if let Some(file) = token_file {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

/// With `--otlp-endpoint`: the task sending the spans the scheduler's drives complete.
fn span_exporter(
    config: &Config,
    scheduler: &Scheduler,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let client = retrace_providers::http::client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Config(format!("the OTLP client: {e}")))?;
    let options = retrace_otel::Options {
        content: !config.otlp_no_content,
    };
    let (spans, task) = crate::otlp::Spans::start(endpoint.clone(), client, options);
    scheduler.send_spans(spans);
    Ok(Some(task))
}

/// The unix socket's listener (owner only). We hold the store (its lock, or a socket path
/// of our own): a socket file left there belongs to a dead daemon.
fn unix_listener(socket: &Path) -> Result<tokio::net::UnixListener, Error> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(|source| Error::Listen {
        what: socket.display().to_string(),
        source,
    })?;
    restrict(socket)?;
    Ok(listener)
}

/// The loopback HTTP listener, if asked for, with the file its single token is written to
/// and the tokens it takes.
async fn http_listener(
    config: &Config,
    opened: &Opened,
) -> Result<
    (
        Option<tokio::net::TcpListener>,
        Option<PathBuf>,
        Option<Tokens>,
    ),
    Error,
> {
    let Some(addr) = config.http else {
        if config.tokens.is_some() {
            return Err(Error::Config(
                "--tokens names the tokens of the HTTP listener: give --http ADDR too".into(),
            ));
        }
        return Ok((None, None, None));
    };
    if !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "--http {addr}: only loopback addresses (127.0.0.1, ::1) are served; put a proxy in front for anything else"
        )));
    }
    // the tokens first: a refused file leaves no listener and no serve.token behind
    let named = match (&config.tokens, &config.token) {
        (Some(_), Some(_)) => {
            return Err(Error::Config(
                "both a tokens file (--tokens) and RETRACE_API_TOKEN are given: use one (a \
                 tokens file can name an admin token)"
                    .into(),
            ));
        }
        (Some(file), None) => Some(Tokens::load(file).map_err(|e| Error::Config(e.to_string()))?),
        (None, _) => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            what: addr.to_string(),
            source,
        })?;
    if let Some(named) = named {
        return Ok((Some(listener), None, Some(named)));
    }
    Ok(match (&config.token, &opened.dir) {
        (Some(token), None) => (Some(listener), None, Some(Tokens::single(token))),
        (None, None) => {
            return Err(Error::Config(
                "--http on a PostgreSQL store needs the API token in RETRACE_API_TOKEN (every \
                 worker of the store takes the same one), or a tokens file (--tokens)"
                    .into(),
            ));
        }
        (token, Some(dir)) => {
            let token = token
                .clone()
                .unwrap_or_else(retrace_runtime::entropy::secret_token);
            let file = dir.join(TOKEN_FILE);
            std::fs::write(&file, &token).map_err(|source| Error::Listen {
                what: file.display().to_string(),
                source,
            })?;
            restrict(&file)?;
            (Some(listener), Some(file), Some(Tokens::single(&token)))
        }
    })
}

/// The store a daemon serves, and how it is reached.
struct Opened {
    store: Arc<dyn Store>,
    /// The store directory (`None` for PostgreSQL).
    dir: Option<PathBuf>,
    /// The store as messages show it (a URL without password).
    shown: PathBuf,
    socket: Option<PathBuf>,
    cluster: Option<Arc<Cluster>>,
}

fn open(config: &Config) -> Result<Opened, Error> {
    if let Some(url) = config.store.to_str().filter(|s| is_postgres_url(s)) {
        let target = Target::parse(url).map_err(|e| Error::Config(e.to_string()))?;
        let pg = PgStore::connect(&target)?;
        let worker = config.worker.clone().unwrap_or_else(default_worker);
        if config.lease_ttl < Duration::from_millis(300) {
            return Err(Error::Config(format!(
                "a lease TTL of {:?} is too short to renew in time; give at least 300 ms",
                config.lease_ttl
            )));
        }
        let cluster = Arc::new(Cluster::new(&pg, &worker, config.lease_ttl));
        // the fence knows workers by name: two live processes must not share one
        if cluster.holds_any()? {
            return Err(Error::Config(format!(
                "a worker named `{worker}` holds leases in this store now; give this one \
                 another --worker name (or wait {:?} for a dead one's leases to expire)",
                config.lease_ttl
            )));
        }
        return Ok(Opened {
            store: Arc::new(pg),
            dir: None,
            shown: PathBuf::from(target.to_string()),
            socket: config.socket.clone(),
            cluster: Some(cluster),
        });
    }
    let sled = SledStore::open(&config.store)?;
    retrace_runtime::spec::guard_store(&config.store);
    Ok(Opened {
        store: Arc::new(sled),
        dir: Some(config.store.clone()),
        shown: config.store.clone(),
        socket: Some(
            config
                .socket
                .clone()
                .unwrap_or_else(|| socket_path(&config.store)),
        ),
        cluster: None,
    })
}

/// `HOST:PID:NONCE`, the default worker name.
pub(crate) fn default_worker() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".to_owned(), |h| h.trim().to_owned());
    // and a nonce: replicas of one container image may share the host name and the pid
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
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
