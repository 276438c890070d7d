//! The daemon's client, [`RemoteStore`] (the [`Store`] trait through the daemon), and
//! [`Access`]: how a command reaches a store, through the daemon that holds it or, when
//! none does, by opening the files.
//!
//! The client is blocking, so it serves sync code (the CLI, the inspector's loader thread,
//! the [`Store`] trait) from any thread, inside an async runtime or not: requests run on
//! the client's own small runtime and the caller waits on a channel.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use retrace_events::{BlobId, Event, EventId, Head, RunId};
use retrace_store::{
    Appended, NewRun, RunInfo, Store, StoreStats, StoredEvent, Subscription, Watchers,
};
use retrace_store_postgres::{PgStore, Target};
use retrace_store_sled::SledStore;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    Accepted, Answer, Answered, Approve, Cancel, Decided, ErrorBody, EventView, Fork, Forked,
    Health, Resolve, Resolved, RunView, Signal, Submit, Submitted,
};
use crate::server::socket_path;
use crate::wire::{self, Call, Reply, WireError};

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers, or the connection broke.
    #[error("cannot reach retrace serve at {at}: {message}")]
    Unreachable {
        /// Where.
        at: String,
        /// What happened.
        message: String,
    },
    /// The daemon refused the request.
    #[error("{message} (retrace serve answered {status} {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code (`bad_request`, `not_found`, `conflict`, …).
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("retrace serve at {at} sent something unexpected: {what}")]
    Protocol {
        /// Where.
        at: String,
        /// What.
        what: String,
    },
}

/// How long a call may take (the slowest: a submit that discovers MCP catalogs).
const CALL_TIMEOUT: Duration = Duration::from_mins(2);
/// How long the daemon may take to say it is there.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's runtime; shut down without blocking, so a client may be dropped anywhere.
#[derive(Debug)]
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    at: String,
    token: Option<String>,
    rt: Rt,
}

/// A connection to a daemon's API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// One message of a run's event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// An event.
    Event(Box<EventView>),
    /// Text the run's model streamed, just before the event it came before (live only:
    /// never recorded; the reply event holds the whole text).
    Text(String),
    /// The daemon is not driving the run (it parked, stopped or never started): its view.
    Idle(Box<RunView>),
    /// The run finished: its view. The stream ends.
    End(Box<RunView>),
}

/// A run's events as they come (blocking iterator).
#[derive(Debug)]
pub struct EventStream {
    rx: flume::Receiver<Result<StreamItem, Error>>,
    _client: Client,
}

impl Iterator for EventStream {
    type Item = Result<StreamItem, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Client {
    /// A client of the daemon listening on unix socket `socket`.
    pub fn unix(socket: &Path) -> Result<Self, Error> {
        let at = socket.display().to_string();
        Self::new(
            retrace_providers::http::client_builder().unix_socket(socket),
            "http://retrace".into(),
            at,
            None,
        )
    }

    /// A client of the daemon's loopback listener at `addr`, with its token.
    pub fn tcp(addr: SocketAddr, token: String) -> Result<Self, Error> {
        Self::new(
            retrace_providers::http::client_builder(),
            format!("http://{addr}"),
            addr.to_string(),
            Some(token),
        )
    }

    fn new(
        builder: reqwest::ClientBuilder,
        base: String,
        at: String,
        token: Option<String>,
    ) -> Result<Self, Error> {
        let unreachable = |message: String| Error::Unreachable {
            at: at.clone(),
            message,
        };
        let http = builder
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| unreachable(wire::chain(&e)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("retrace-client")
            .enable_all()
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                at,
                token,
                rt: Rt(Some(rt)),
            }),
        })
    }

    /// Where it connects.
    pub fn at(&self) -> &str {
        &self.inner.at
    }

    /// Run `fut` on the client's runtime and wait for it.
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = flume::bounded(1);
        let rt = self
            .inner
            .rt
            .0
            .as_ref()
            .expect("the runtime lives as long as the client");
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Unreachable {
                at: self.inner.at.clone(),
                message: "the client's runtime stopped".into(),
            })
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base));
        match &self.inner.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    fn json<T: DeserializeOwned + Send + 'static>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        // a daemon that hangs is an error, not a hang of every command
        let wait = if path == "/v1/health" {
            HEALTH_TIMEOUT
        } else {
            CALL_TIMEOUT
        };
        let mut req = self.request(method, path).timeout(wait);
        if let Some(body) = body {
            req = req.json(body);
        }
        let at = self.inner.at.clone();
        self.block(async move {
            let response = req.send().await.map_err(|e| unreachable(&at, &e))?;
            let response = check(response, &at).await?;
            response.json::<T>().await.map_err(|e| Error::Protocol {
                at,
                what: wire::chain(&e),
            })
        })
    }

    /// `GET /v1/health`.
    pub fn health(&self) -> Result<Health, Error> {
        self.json(reqwest::Method::GET, "/v1/health", None::<&()>)
    }

    /// `POST /v1/runs`.
    pub fn submit(&self, submit: &Submit) -> Result<Submitted, Error> {
        self.json(reqwest::Method::POST, "/v1/runs", Some(submit))
    }

    /// `GET /v1/runs`.
    pub fn runs(&self) -> Result<Vec<RunView>, Error> {
        self.json(reqwest::Method::GET, "/v1/runs", None::<&()>)
    }

    /// `GET /v1/runs/{run}`.
    pub fn run(&self, run: &str) -> Result<RunView, Error> {
        self.json(
            reqwest::Method::GET,
            &format!("/v1/runs/{run}"),
            None::<&()>,
        )
    }

    /// `POST /v1/runs/{run}/approve`.
    pub fn approve(&self, run: &str, approve: &Approve) -> Result<Decided, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/approve"),
            Some(approve),
        )
    }

    /// `POST /v1/runs/{run}/answer`.
    pub fn answer(&self, run: &str, answer: &Answer) -> Result<Answered, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/answer"),
            Some(answer),
        )
    }

    /// `POST /v1/runs/{run}/resolve`.
    pub fn resolve(&self, run: &str, resolve: &Resolve) -> Result<Resolved, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/resolve"),
            Some(resolve),
        )
    }

    /// `POST /v1/runs/{run}/signal`.
    pub fn signal(&self, run: &str, signal: &Signal) -> Result<Accepted, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/signal"),
            Some(signal),
        )
    }

    /// `POST /v1/runs/{run}/cancel`.
    pub fn cancel(&self, run: &str, cancel: &Cancel) -> Result<Accepted, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/cancel"),
            Some(cancel),
        )
    }

    /// `POST /v1/runs/{run}/resume`.
    pub fn resume(&self, run: &str) -> Result<Accepted, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/resume"),
            None::<&()>,
        )
    }

    /// `POST /v1/runs/{run}/fork`.
    pub fn fork(&self, run: &str, fork: &Fork) -> Result<Forked, Error> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/fork"),
            Some(fork),
        )
    }

    /// `GET /v1/runs/{run}/events?from=…&follow=…`: the run's events from seq `from`, then
    /// (with `follow`) live ones as they are appended.
    pub fn events(&self, run: &str, from: u64, follow: bool) -> Result<EventStream, Error> {
        let (tx, rx) = flume::unbounded();
        let req = self.request(
            reqwest::Method::GET,
            &format!("/v1/runs/{run}/events?from={from}&follow={follow}"),
        );
        let at = self.inner.at.clone();
        let first = tx.clone();
        let rt = self
            .inner
            .rt
            .0
            .as_ref()
            .expect("the runtime lives as long as the client");
        rt.spawn(async move {
            let result = async {
                let response = req.send().await.map_err(|e| unreachable(&at, &e))?;
                let response = check(response, &at).await?;
                let mut stream = response.bytes_stream().eventsource();
                while let Some(message) = stream.next().await {
                    let message = message.map_err(|e| Error::Unreachable {
                        at: at.clone(),
                        message: e.to_string(),
                    })?;
                    let item = parse_item(&message.event, &message.data).map_err(|what| {
                        Error::Protocol {
                            at: at.clone(),
                            what,
                        }
                    })?;
                    let Some(item) = item else { continue };
                    let end = matches!(item, StreamItem::End(_));
                    if tx.send(Ok(item)).is_err() || end {
                        return Ok(());
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = first.send(Err(e));
            }
        });
        Ok(EventStream {
            rx,
            _client: self.clone(),
        })
    }

    /// One store primitive through `POST /v1/store`.
    pub fn store(&self, call: &Call) -> retrace_store::Result<Reply> {
        let body = bincode::encode_to_vec(call, wire::config())
            .map_err(|e| retrace_store::Error::backend("encoding a store call", e))?;
        let req = self
            .request(reqwest::Method::POST, "/v1/store")
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let at = self.inner.at.clone();
        let bytes = self
            .block(async move {
                let response = req.send().await.map_err(|e| unreachable(&at, &e))?;
                let response = check(response, &at).await?;
                response.bytes().await.map_err(|e| unreachable(&at, &e))
            })
            .map_err(|e| retrace_store::Error::backend("a call to retrace serve", e))?;
        let (reply, _): (Result<Reply, WireError>, _) = retrace_events::decode_bounded(&bytes)
            .map_err(|e| retrace_store::Error::backend("decoding retrace serve's answer", e))?;
        reply.map_err(Into::into)
    }
}

fn unreachable(at: &str, e: &reqwest::Error) -> Error {
    Error::Unreachable {
        at: at.to_owned(),
        message: wire::chain(e),
    }
}

/// The response, or the API error it carries.
async fn check(response: reqwest::Response, at: &str) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Error::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => Error::Protocol {
            at: at.to_owned(),
            what: format!("status {status} with body {text:?}"),
        },
    })
}

fn parse_item(event: &str, data: &str) -> Result<Option<StreamItem>, String> {
    let bad = |e: serde_json::Error| format!("a `{event}` message does not decode: {e}");
    Ok(Some(match event {
        "event" => StreamItem::Event(Box::new(serde_json::from_str(data).map_err(bad)?)),
        "text" => {
            #[derive(serde::Deserialize)]
            struct Text {
                text: String,
            }
            StreamItem::Text(serde_json::from_str::<Text>(data).map_err(bad)?.text)
        }
        "idle" => StreamItem::Idle(Box::new(serde_json::from_str(data).map_err(bad)?)),
        "end" => StreamItem::End(Box::new(serde_json::from_str(data).map_err(bad)?)),
        _ => return Ok(None),
    }))
}

/// The [`Store`] trait through a daemon's API: every primitive is one request; a
/// subscription is the run's event stream.
///
/// Blobs are buffered: `put_blob` returns the id at once and the bytes go with the next
/// other call (or once 4 MiB wait), as the trait allows — a blob is durable once a later
/// append or flush returns. A run's events and their blobs then cost one round trip each
/// way, not one per blob.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    client: Client,
    watchers: Arc<Watchers>,
    buffered: Arc<std::sync::Mutex<Buffered>>,
}

/// Blobs not yet sent.
#[derive(Debug, Default)]
struct Buffered {
    blobs: Vec<(BlobId, Vec<u8>)>,
    bytes: usize,
}

/// Buffered blob bytes that make `put_blob` send them at once.
const BUFFER_BYTES: usize = 4 * 1024 * 1024;

impl RemoteStore {
    /// The store behind `client`'s daemon.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            watchers: Arc::default(),
            buffered: Arc::default(),
        }
    }

    /// Its client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn call(&self, call: &Call) -> retrace_store::Result<Reply> {
        self.send_buffered()?;
        self.client.store(call)
    }

    /// Send the buffered blobs (in one call).
    fn send_buffered(&self) -> retrace_store::Result<()> {
        let blobs = {
            let mut buffered = self
                .buffered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            buffered.bytes = 0;
            std::mem::take(&mut buffered.blobs)
        };
        if blobs.is_empty() {
            return Ok(());
        }
        let bytes = blobs.into_iter().map(|(_, bytes)| bytes).collect();
        match self.client.store(&Call::PutBlobs(bytes))? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &Reply) -> retrace_store::Error {
    retrace_store::Error::backend(
        "a call to retrace serve",
        format!("the daemon answered with the wrong kind of reply: {reply:?}"),
    )
}

impl Store for RemoteStore {
    fn create_run(&self, new: NewRun) -> retrace_store::Result<RunInfo> {
        match self.call(&Call::CreateRun {
            id: new.id,
            created_at: new.created_at,
            origin: new.origin,
            meta: new.meta,
        })? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    fn run(&self, id: &RunId) -> retrace_store::Result<Option<RunInfo>> {
        match self.call(&Call::Run(*id))? {
            Reply::Run(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    fn runs(&self) -> retrace_store::Result<Vec<RunInfo>> {
        match self.call(&Call::Runs)? {
            Reply::Runs(runs) => Ok(runs),
            other => Err(unexpected(&other)),
        }
    }

    fn set_run_meta(
        &self,
        id: &RunId,
        key: &str,
        value: Option<&str>,
    ) -> retrace_store::Result<RunInfo> {
        match self.call(&Call::SetRunMeta {
            run: *id,
            key: key.to_owned(),
            value: value.map(str::to_owned),
        })? {
            Reply::Info(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    fn append(
        &self,
        run: &RunId,
        expected: Option<EventId>,
        events: &[Event],
    ) -> retrace_store::Result<Head> {
        match self.call(&Call::Append {
            run: *run,
            expected,
            events: events.to_vec(),
        })? {
            Reply::Head(head) => Ok(head),
            other => Err(unexpected(&other)),
        }
    }

    fn own_events(
        &self,
        run: &RunId,
        seqs: RangeInclusive<u64>,
    ) -> retrace_store::Result<Vec<StoredEvent>> {
        match self.call(&Call::OwnEvents {
            run: *run,
            from: *seqs.start(),
            to: *seqs.end(),
        })? {
            Reply::Events(events) => Ok(events
                .into_iter()
                .map(|(seq, id, bytes)| StoredEvent { seq, id, bytes })
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    fn put_blob(&self, bytes: &[u8]) -> retrace_store::Result<BlobId> {
        let id = BlobId::of(bytes);
        let full = {
            let mut buffered = self
                .buffered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            buffered.bytes += bytes.len();
            buffered.blobs.push((id, bytes.to_vec()));
            buffered.bytes >= BUFFER_BYTES
        };
        if full {
            self.send_buffered()?;
        }
        Ok(id)
    }

    fn blob(&self, id: &BlobId) -> retrace_store::Result<Option<Vec<u8>>> {
        let waiting = self
            .buffered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .blobs
            .iter()
            .find(|(b, _)| b == id)
            .map(|(_, bytes)| bytes.clone());
        if let Some(bytes) = waiting {
            return Ok(Some(bytes));
        }
        match self.call(&Call::Blob(*id))? {
            Reply::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    fn put_snapshot(&self, at: &EventId, bytes: &[u8]) -> retrace_store::Result<()> {
        match self.call(&Call::PutSnapshot {
            at: *at,
            bytes: bytes.to_vec(),
        })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn snapshot(&self, at: &EventId) -> retrace_store::Result<Option<Vec<u8>>> {
        match self.call(&Call::Snapshot(*at))? {
            Reply::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    fn snapshot_ids(&self) -> retrace_store::Result<Vec<EventId>> {
        match self.call(&Call::SnapshotIds)? {
            Reply::EventIds(ids) => Ok(ids),
            other => Err(unexpected(&other)),
        }
    }

    fn subscribe(&self, run: &RunId) -> retrace_store::Result<Subscription> {
        let from = self.require_run(run)?.len();
        let sub = self.watchers.subscribe(*run);
        let stream = self
            .client
            .events(&run.to_string(), from, true)
            .map_err(|e| retrace_store::Error::backend("subscribing through retrace serve", e))?;
        let watchers = Arc::clone(&self.watchers);
        let run = *run;
        std::thread::Builder::new()
            .name(format!("retrace-watch-{}", run.short()))
            .spawn(move || {
                for item in stream {
                    match item {
                        Ok(StreamItem::Event(view)) => {
                            let EventView { id, event, .. } = *view;
                            watchers.publish(Appended {
                                run,
                                events: vec![(id, event)],
                            });
                        }
                        Ok(StreamItem::Idle(_) | StreamItem::Text(_)) => {}
                        Ok(StreamItem::End(_)) | Err(_) => break,
                    }
                    if !watchers.is_watched(&run) {
                        break;
                    }
                }
            })
            .map_err(|e| retrace_store::Error::backend("starting a subscription thread", e))?;
        Ok(sub)
    }

    fn flush(&self) -> retrace_store::Result<()> {
        match self.call(&Call::Flush)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn stats(&self) -> retrace_store::Result<StoreStats> {
        match self.call(&Call::Stats)? {
            Reply::Stats(s) => Ok(wire::stats_from_wire(s)),
            other => Err(unexpected(&other)),
        }
    }
}

/// How a command reaches a store.
#[derive(Clone)]
pub enum Access {
    /// This process opened the store's files.
    Direct(Arc<SledStore>),
    /// A PostgreSQL database that any number of processes share.
    Shared(Arc<PgStore>),
    /// A daemon holds the store; everything goes through its API.
    Daemon(RemoteStore),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("Access::Direct"),
            Self::Shared(store) => f.debug_tuple("Access::Shared").field(store).finish(),
            Self::Daemon(remote) => f.debug_tuple("Access::Daemon").field(remote).finish(),
        }
    }
}

impl Access {
    /// Reach the store in `dir`: through the daemon listening in it, or by opening it
    /// (creating it when `create`). A store held by another process that is not a daemon (a
    /// `retrace run` in another terminal) is an error at once, naming that process (pid and
    /// command line); a daemon that is starting, or a holder that cannot be named, is waited
    /// for, briefly.
    pub fn open(dir: &Path, create: bool) -> Result<Self, AccessError> {
        if let Some(url) = dir
            .to_str()
            .filter(|s| retrace_store_postgres::is_postgres_url(s))
        {
            let target = Target::parse(url)?;
            return PgStore::connect(&target)
                .map(|store| Self::Shared(Arc::new(store)))
                .map_err(|e| AccessError::Open {
                    dir: PathBuf::from(target.to_string()),
                    source: Box::new(e),
                });
        }
        if let Some(client) = daemon_at(dir) {
            return Ok(Self::Daemon(RemoteStore::new(client)));
        }
        if !create && !dir.exists() {
            return Err(AccessError::NoStore(dir.to_owned()));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match SledStore::open(dir) {
                Ok(store) => return Ok(Self::Direct(Arc::new(store))),
                Err(retrace_store::Error::Locked { holder, .. })
                    if holder.as_ref().is_none_or(may_become_a_daemon)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Some(client) = daemon_at(dir) {
                        return Ok(Self::Daemon(RemoteStore::new(client)));
                    }
                }
                Err(e) => {
                    return Err(AccessError::Open {
                        dir: dir.to_owned(),
                        source: Box::new(e),
                    });
                }
            }
        }
    }

    /// The store, whichever way it is reached.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Direct(store) => Arc::clone(store) as Arc<dyn Store>,
            Self::Shared(store) => Arc::clone(store) as Arc<dyn Store>,
            Self::Daemon(remote) => Arc::new(remote.clone()),
        }
    }

    /// For a drive in this process: on a PostgreSQL store, `run`'s lease (so that no
    /// worker takes the run up meanwhile) and the store fenced by it; elsewhere `None` and
    /// [`Self::store`] is what the drive appends through.
    ///
    /// # Errors
    /// When a worker drives the run, or PostgreSQL fails.
    pub fn hold(&self, run: RunId) -> Result<Option<crate::held::Held>, crate::held::HoldError> {
        match self {
            Self::Shared(store) => crate::held::Held::claim(store, run).map(Some),
            Self::Direct(_) | Self::Daemon(_) => Ok(None),
        }
    }

    /// On a PostgreSQL store, the runs some process drives now (an unexpired lease);
    /// elsewhere empty (a daemon says which runs it drives).
    ///
    /// # Errors
    /// When PostgreSQL fails.
    pub fn leased_runs(&self) -> retrace_store::Result<Vec<RunId>> {
        match self {
            Self::Shared(store) => {
                Ok(
                    retrace_store_postgres::Leases::new(store, "cli", Duration::from_secs(30))
                        .held()?
                        .into_iter()
                        .map(|(run, _)| run)
                        .collect(),
                )
            }
            Self::Direct(_) | Self::Daemon(_) => Ok(Vec::new()),
        }
    }

    /// On a PostgreSQL store, leave signal `name` for the worker that drives `run` (it
    /// appends it at its next step); elsewhere an error: no worker reads an inbox there.
    ///
    /// # Errors
    /// When the store is not a PostgreSQL store, or PostgreSQL fails.
    pub fn leave_signal(
        &self,
        run: &RunId,
        name: &str,
        payload: &BlobId,
    ) -> retrace_store::Result<()> {
        match self {
            Self::Shared(store) => {
                retrace_store_postgres::Leases::new(store, "cli", Duration::from_secs(30))
                    .post(run, name, payload)
            }
            Self::Direct(_) | Self::Daemon(_) => Err(retrace_store::Error::Remote {
                message: "only a PostgreSQL store has an inbox for signals".into(),
            }),
        }
    }

    /// The daemon's client, when one holds the store.
    pub fn daemon(&self) -> Option<&Client> {
        match self {
            Self::Direct(_) | Self::Shared(_) => None,
            Self::Daemon(remote) => Some(remote.client()),
        }
    }
}

/// Why a store could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// There is no store there.
    #[error(
        "no retrace store at {}; pass --store DIR (or set RETRACE_STORE), or start a run first with `retrace run SPEC --input TEXT`",
        .0.display()
    )]
    NoStore(PathBuf),
    /// The PostgreSQL URL is refused.
    #[error(transparent)]
    Url(#[from] retrace_store_postgres::TargetError),
    /// Opening it failed.
    #[error("cannot open store {}", dir.display())]
    Open {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<retrace_store::Error>,
    },
}

/// Whether the process holding a store may be a daemon that will answer on its socket
/// soon: `retrace serve` starting (its arguments include `serve`), or this very process (a
/// daemon in-process, or a store this process closed a moment ago).
fn may_become_a_daemon(holder: &retrace_store::Holder) -> bool {
    holder.pid == std::process::id() || holder.command.split(' ').skip(1).any(|a| a == "serve")
}

/// A client of the daemon serving `dir`, if one answers there.
pub fn daemon_at(dir: &Path) -> Option<Client> {
    let socket = socket_path(dir);
    if !socket.exists() {
        return None;
    }
    let client = Client::unix(&socket).ok()?;
    client.health().ok().map(|_| client)
}
