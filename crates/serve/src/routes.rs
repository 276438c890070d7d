//! The API's routes (see `docs/guide/serve.md`): runs, their live events and the text their
//! models stream (SSE), approvals, signals, cancel, resume, fork, and the store itself for [`RemoteStore`](crate::RemoteStore).
//! Every error answers `{"error": {"code", "message"}}` with a 4xx or 5xx status. Who
//! calls and what their role allows is [`crate::auth`]'s: the router identifies the caller
//! (401 without a known token), then refuses a route its role does not allow (403) before the
//! handler runs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use retrace_events::{Decision, RunId, canonical_json};
use retrace_replay::{
    AnswerError, DecideError, ForkAt, ForkError, answer_question, decide_approval, fork,
};
use retrace_runtime::entropy::{new_run_id, now};
use retrace_runtime::executor::Runner;
use retrace_runtime::inbox::CANCEL;
use retrace_runtime::model::provider;
use retrace_runtime::spec::Spec;
use retrace_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{
    Accepted, Answer, Answered, Approve, Cancel, Decided, ErrorBody, ErrorDetail, EventView, Fork,
    Forked, Health, Resolve, Resolved, RunView, Signal, Submit, Submitted,
};
use crate::auth::{self, Caller, Tokens};
use crate::scheduler::{DeliverError, Delivery, Scheduler};
use crate::streamed::Streamed;
use crate::wire::{self, Call, Reply, WireError, chain};

/// Largest JSON body the API takes.
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// What every handler shares.
pub struct Daemon {
    /// The store it owns.
    pub store: Arc<dyn Store>,
    /// Its workers.
    pub scheduler: Arc<Scheduler>,
    /// The store directory.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("dir", &self.dir)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

type Shared = State<Arc<Daemon>>;

/// The API. Without `tokens` (the unix socket) every request is the store owner's
/// ([`Caller::socket`]); with them, every request must carry `Authorization: Bearer
/// <token>` of one of them (401 otherwise), and a route its caller's role does not allow
/// answers 403 `forbidden` before anything is done ([`crate::auth`]).
pub fn router(daemon: Arc<Daemon>, tokens: Option<Arc<Tokens>>) -> Router {
    let api = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/runs", get(list).post(submit))
        .route("/v1/runs/{run}", get(show))
        .route("/v1/runs/{run}/events", get(events))
        .route("/v1/runs/{run}/approve", post(approve))
        .route("/v1/runs/{run}/answer", post(answer))
        .route("/v1/runs/{run}/resolve", post(resolve_call))
        .route("/v1/runs/{run}/signal", post(signal))
        .route("/v1/runs/{run}/cancel", post(cancel))
        .route("/v1/runs/{run}/resume", post(resume))
        .route("/v1/runs/{run}/fork", post(fork_run))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .route(
            "/v1/store",
            post(store_call).layer(DefaultBodyLimit::max(wire::MAX_STORE_BODY)),
        )
        // on matched routes only (an unknown one is a 404 for everyone with a token)
        .route_layer(middleware::from_fn(permitted))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; the API lives under /v1 (see docs/guide/serve.md)",
            )
        })
        .with_state(daemon);
    api.layer(middleware::from_fn(move |mut req: Request, next: Next| {
        let tokens = tokens.clone();
        async move {
            let caller = match &tokens {
                None => Caller::socket(),
                Some(tokens) => {
                    let given = req.headers().get(header::AUTHORIZATION);
                    match given.and_then(|v| tokens.caller(v.as_bytes())) {
                        Some(caller) => caller.clone(),
                        None => return unauthorized().into_response(),
                    }
                }
            };
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }))
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "send `Authorization: Bearer <token>`: the token is in serve.token in the store \
         directory, or the RETRACE_API_TOKEN the daemon was started with, or one named in its \
         --tokens file",
    )
}

/// 403 unless the caller's role allows the matched route.
async fn permitted(req: Request, next: Next) -> Response {
    let (needed, what) = auth::route_needs(req.method(), req.uri().path());
    match req
        .extensions()
        .get::<Caller>()
        .map(|c| c.may(needed, &what))
    {
        Some(Ok(())) => next.run(req).await,
        Some(Err(message)) => ApiError::forbidden(message).into_response(),
        None => ApiError::internal_message("no caller was identified").into_response(),
    }
}

/// Who decides, for a request body naming `claimed`: 403 when a named token claims
/// another name, 400 for a malformed name.
fn decider(caller: &Caller, claimed: Option<&str>) -> Result<String, ApiError> {
    if let Some(name) = claimed {
        auth::check_name(name).map_err(|e| ApiError::bad(format!("`by`: {e}")))?;
    }
    caller.decider(claimed).map_err(ApiError::forbidden)
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    fn internal(e: &dyn std::error::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, chain(e))
    }

    fn internal_message(message: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<retrace_store::Error> for ApiError {
    fn from(e: retrace_store::Error) -> Self {
        use retrace_store::Error as E;
        match &e {
            E::RunNotFound { .. } | E::Id(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            E::Conflict { .. } | E::RunExists { .. } => Self::conflict(e.to_string()),
            _ => Self::internal(&e),
        }
    }
}

impl From<retrace_replay::Error> for ApiError {
    fn from(e: retrace_replay::Error) -> Self {
        match e {
            retrace_replay::Error::Store(e) => e.into(),
            retrace_replay::Error::NoSuchSeq { .. } => {
                Self::new(StatusCode::NOT_FOUND, e.to_string())
            }
            other @ retrace_replay::Error::Apply { .. } => Self::internal(&other),
        }
    }
}

/// A JSON body, or a 4xx naming what is wrong with it.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => {
            let status = match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            let message = match status {
                StatusCode::PAYLOAD_TOO_LARGE => format!(
                    "the request body is larger than {} MiB",
                    MAX_JSON_BODY / (1024 * 1024)
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    "send the body as JSON with `Content-Type: application/json`".into()
                }
                _ => format!(
                    "the request body is not what this route takes: {}",
                    rejection.body_text()
                ),
            };
            Err(ApiError::new(status, message))
        }
    }
}

/// Run blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
}

fn run_id(d: &Daemon, text: &str) -> Result<RunId, ApiError> {
    Ok(d.store.resolve_run(text)?)
}

fn view(d: &Daemon, run: &RunId) -> Result<RunView, ApiError> {
    let info = d.store.require_run(run)?;
    // on a shared store another worker (or a command) may be driving it: its lease says so
    let active =
        d.scheduler.is_active(run) || d.scheduler.cluster().is_some_and(|c| c.is_leased(run));
    let mut view = RunView::of(d.store.as_ref(), &info, active)?;
    view.drive_error = d.scheduler.drive_error(run);
    Ok(view)
}

async fn health(State(d): Shared) -> Json<Health> {
    Json(Health {
        version: env!("CARGO_PKG_VERSION").into(),
        store: d.dir.display().to_string(),
        pid: std::process::id(),
        workers: d.scheduler.workers(),
        active: d.scheduler.active(),
    })
}

async fn list(State(d): Shared) -> Result<Json<Vec<RunView>>, ApiError> {
    blocking(move || {
        let runs = d.store.runs()?;
        runs.iter()
            .map(|info| view(&d, &info.id))
            .collect::<Result<Vec<_>, _>>()
            .map(Json)
    })
    .await
}

async fn show(State(d): Shared, Path(run): Path<String>) -> Result<Json<RunView>, ApiError> {
    blocking(move || view(&d, &run_id(&d, &run)?).map(Json)).await
}

async fn submit(
    State(d): Shared,
    req: Result<Json<Submit>, JsonRejection>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let req = body(req)?;
    if req.input.trim().is_empty() {
        return Err(ApiError::bad(
            "`input` is empty: say what the agent should do",
        ));
    }
    let spec = match (req.spec, req.spec_path) {
        (Some(value), None) => {
            let spec = serde_json::from_value::<Spec>(value)
                .map_err(|e| ApiError::bad(format!("`spec` is not an agent spec: {e}")))?;
            if let Some((what, path)) = spec.relative_paths().into_iter().next() {
                return Err(ApiError::bad(format!(
                    "`spec`: its {what} `{}` is relative; the daemon does not know your working \
                     directory, so every path in a spec must be absolute (`retrace run` sends \
                     them so)",
                    path.display()
                )));
            }
            spec
        }
        (None, Some(path)) if path.is_relative() => {
            return Err(ApiError::bad(format!(
                "`spec_path` `{}` is relative; the daemon does not know your working directory: \
                 give an absolute path",
                path.display()
            )));
        }
        (None, Some(path)) => {
            blocking(move || {
                let mut spec = Spec::load(&path).map_err(|e| ApiError::bad(chain(&e)))?;
                retrace_runtime::tools::mcp::discover_now(&mut spec.mcp)
                    .map_err(|e| ApiError::bad(chain(&e)))?;
                Ok(spec)
            })
            .await?
        }
        _ => {
            return Err(ApiError::bad(
                "give exactly one of `spec` (the spec as JSON) and `spec_path` (a TOML file)",
            ));
        }
    };
    let (run, resumed) = blocking(move || {
        let model = provider(&spec).map_err(|e| ApiError::bad(chain(&e)))?;
        let runner =
            Runner::new(d.store.as_ref(), spec, model).map_err(|e| ApiError::bad(chain(&e)))?;
        let unfinished = if req.new {
            None
        } else {
            runner
                .unfinished_run(&req.input)
                .map_err(|e| ApiError::internal(&e))?
        };
        let (run, resumed) = if let Some(run) = unfinished {
            (run, true)
        } else {
            let run = new_run_id();
            runner
                .start(run, &req.input)
                .map_err(|e| ApiError::internal(&e))?;
            (run, false)
        };
        if !d.scheduler.schedule(run) {
            return Err(shutting_down());
        }
        Ok((run, resumed))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Submitted {
            run: run.to_string(),
            resumed,
        }),
    ))
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon is shutting down; the run continues when it is started again",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// First seq to send (default 0).
    from: Option<u64>,
    /// Keep the stream open for live events (default true).
    follow: Option<bool>,
}

async fn events(
    State(d): Shared,
    Path(run): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let run = run_id(&d, &run)?;
    // subscribe before reading the backlog: what is appended in between comes twice and is
    // sent once; streamed text goes between the events it came between
    let sub = d.store.subscribe(&run)?;
    let mut streamed = d.scheduler.streamed(run);
    let stops = d.scheduler.stops();
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let feed = RunFeed {
        texts: streamed.take_kept(),
        d,
        run,
        sub,
        streamed,
        next: query.from.unwrap_or(0),
        tx,
    };
    tokio::spawn(feed.send_all(query.follow.unwrap_or(true), stops));
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One event stream of a run: what it listens to and how far it has sent.
struct RunFeed {
    d: Arc<Daemon>,
    run: RunId,
    sub: retrace_store::Subscription,
    streamed: crate::streamed::Feed,
    /// Streamed text not sent yet, oldest first.
    texts: VecDeque<Streamed>,
    /// The next seq to send.
    next: u64,
    tx: tokio::sync::mpsc::Sender<SseEvent>,
}

impl RunFeed {
    /// The stored events from `next`, then (with `follow`) live events and streamed text,
    /// `idle` when no drive holds the run, `end` when it finishes.
    async fn send_all(mut self, follow: bool, stops: tokio::sync::broadcast::Receiver<RunId>) {
        let Some(finished) = self.backlog().await else {
            return;
        };
        if finished || !follow {
            if let Some(e) = self.state_event(if finished { "end" } else { "idle" }) {
                let _ = self.tx.send(e).await;
            }
            return;
        }
        // text of a model call under way
        self.streamed.take_published(&mut self.texts);
        let mut out = Vec::new();
        texts_before(&mut self.texts, self.next, &mut out);
        if !self.send(out).await {
            return;
        }
        if !self.d.scheduler.is_active(&self.run)
            && let Some(e) = self.state_event("idle")
            && self.tx.send(e).await.is_err()
        {
            return;
        }
        self.live(stops).await;
    }

    /// The stored events, in pages: whether the run has finished (`None`: the client left
    /// or the store failed).
    async fn backlog(&mut self) -> Option<bool> {
        let mut finished = false;
        loop {
            let info = self.d.store.run(&self.run).ok()??;
            let Some(head) = info.head.filter(|h| h.seq >= self.next) else {
                return Some(finished);
            };
            let to = head.seq.min(self.next + 999);
            let page = self.d.store.events(&self.run, self.next..=to).ok()?;
            let (out, done) = self.events(page);
            finished |= done;
            if !self.send(out).await {
                return None;
            }
        }
    }

    /// Live: events as they become durable, streamed text between them, `idle` when a drive
    /// parks or stops, until the run finishes, the client leaves or the daemon stops.
    async fn live(&mut self, mut stops: tokio::sync::broadcast::Receiver<RunId>) {
        let stopping = self.d.scheduler.stopping();
        loop {
            let (out, done) = tokio::select! {
                biased;
                appended = self.sub.recv_async() => {
                    let Some(appended) = appended else { return };
                    self.events(appended.events.clone())
                }
                text = self.streamed.recv() => {
                    // the events it came after were published before it: they go first
                    self.texts.push_back(text);
                    let (mut out, mut done) = (Vec::new(), false);
                    while self.texts.back().is_some_and(|t| t.before > self.next) {
                        let Some(appended) = self.sub.try_recv() else { break };
                        let (sent, finished) = self.events(appended.events.clone());
                        out.extend(sent);
                        done |= finished;
                    }
                    texts_before(&mut self.texts, self.next, &mut out);
                    (out, done)
                }
                stopped = stops.recv() => {
                    if !matches!(stopped, Ok(r) if r == self.run) {
                        continue;
                    }
                    let (mut out, mut done) = (Vec::new(), false);
                    while let Some(appended) = self.sub.try_recv() {
                        let (sent, finished) = self.events(appended.events.clone());
                        out.extend(sent);
                        done |= finished;
                    }
                    if !done && !self.d.scheduler.is_active(&self.run) {
                        out.extend(self.state_event("idle"));
                    }
                    (out, done)
                }
                () = stopping.cancelled() => return,
                () = self.tx.closed() => return,
            };
            if !self.send(out).await {
                return;
            }
            if done {
                if let Some(e) = self.state_event("end") {
                    let _ = self.tx.send(e).await;
                }
                return;
            }
        }
    }

    /// `events` not sent yet as messages, each after the text streamed before it; whether
    /// one finished the run.
    fn events(
        &mut self,
        events: Vec<(retrace_events::EventId, retrace_events::Event)>,
    ) -> (Vec<SseEvent>, bool) {
        // an event's text was published before it
        self.streamed.take_published(&mut self.texts);
        let mut out = Vec::new();
        let mut finished = false;
        for (id, event) in events {
            if event.seq < self.next {
                continue;
            }
            texts_before(&mut self.texts, event.seq, &mut out);
            self.next = event.seq + 1;
            finished |= matches!(event.kind, retrace_events::EventKind::RunFinished { .. });
            out.push(sse("event", &EventView::of(id, event)));
        }
        (out, finished)
    }

    /// The run's view as message `name`.
    fn state_event(&self, name: &str) -> Option<SseEvent> {
        view(&self.d, &self.run).ok().map(|v| sse(name, &v))
    }

    /// Send `out`; `false` once the client has left.
    async fn send(&self, out: Vec<SseEvent>) -> bool {
        for e in out {
            if self.tx.send(e).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Move the streamed text that comes before event `seq` (not yet sent) into `out` as
/// `text` messages; older text, whose event was sent already, is dropped.
fn texts_before(texts: &mut VecDeque<Streamed>, seq: u64, out: &mut Vec<SseEvent>) {
    while let Some(text) = texts.pop_front() {
        if text.before > seq {
            texts.push_front(text);
            break;
        }
        if text.before == seq {
            out.push(sse("text", &json!({"text": &*text.text})));
        }
    }
}

fn sse(name: &str, data: &impl serde::Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().event(name))
}

async fn approve(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Approve>, JsonRejection>,
) -> Result<Json<Decided>, ApiError> {
    let req = body(req)?;
    let by = decider(&caller, req.by.as_deref())?;
    let run = run_id(&d, &run)?;
    let decision = if req.deny {
        Decision::Denied
    } else {
        Decision::Approved
    };
    let word = if req.deny { "denied" } else { "approved" };
    let decided = when_parked(&d, run, "has no approval to decide", move |d| {
        decide_approval(
            d.store.as_ref(),
            &run,
            req.call.as_deref(),
            decision,
            &by,
            req.note.as_deref(),
            now(),
        )
        .map_err(|e| match e {
            DecideError::Replay(e) => e.into(),
            e => ApiError::conflict(e.to_string()),
        })
    })
    .await?;
    Ok(Json(Decided {
        call_id: decided.0,
        decision: word.into(),
    }))
}

async fn answer(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Answer>, JsonRejection>,
) -> Result<Json<Answered>, ApiError> {
    let req = body(req)?;
    let by = decider(&caller, req.by.as_deref())?;
    let run = run_id(&d, &run)?;
    let given = req.given().map_err(ApiError::bad)?;
    let answered = when_parked(&d, run, "asks nothing", move |d| {
        answer_question(
            d.store.as_ref(),
            &run,
            req.call.as_deref(),
            &given,
            &by,
            now(),
        )
        .map_err(|e| match e {
            AnswerError::Replay(e) => e.into(),
            e => ApiError::conflict(e.to_string()),
        })
    })
    .await?;
    Ok(Json(Answered {
        call_id: answered.0,
    }))
}

async fn resolve_call(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Resolve>, JsonRejection>,
) -> Result<Json<Resolved>, ApiError> {
    let req = body(req)?;
    let by = decider(&caller, req.by.as_deref())?;
    let run = run_id(&d, &run)?;
    let settled = when_parked(&d, run, "has no call of unknown outcome", move |d| {
        crate::resolve::settle(
            d.store.as_ref(),
            &run,
            req.call.as_deref(),
            &req.how,
            &by,
            req.note.as_deref(),
            now(),
        )
        .map_err(|e| match e {
            crate::resolve::Error::Replay(e) => e.into(),
            crate::resolve::Error::Store(e) => e.into(),
            e => ApiError::conflict(e.to_string()),
        })
    })
    .await?;
    Ok(Json(Resolved { call_id: settled.0 }))
}

/// A human's act on a parked run (`act`: append a decision or an answer), done while no
/// worker drives the run, which then continues. A run that just parked may still be leaving
/// its worker, so this waits for it up to 2 s; then the run `not_yet` (is being driven and
/// has nothing to act on yet): 409.
async fn when_parked<T: Send + 'static>(
    d: &Arc<Daemon>,
    run: RunId,
    not_yet: &str,
    act: impl Fn(&Daemon) -> Result<T, ApiError> + Send + Sync + 'static,
) -> Result<T, ApiError> {
    let act = Arc::new(act);
    for _ in 0..100 {
        let (d2, act) = (Arc::clone(d), Arc::clone(&act));
        let done = blocking(move || Ok(d2.scheduler.with_idle(&run, || act(&d2)))).await?;
        if let Some(done) = done {
            let done = done?;
            d.scheduler.schedule(run);
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(ApiError::conflict(format!(
        "run {run} is being driven and {not_yet} yet; try again when it parks"
    )))
}

async fn deliver(
    d: Arc<Daemon>,
    run: RunId,
    name: String,
    payload: Value,
) -> Result<Json<Accepted>, ApiError> {
    blocking(move || {
        let blob = d.store.put_blob(&canonical_json(&payload))?;
        let delivery = d.scheduler.deliver(run, &name, blob).map_err(|e| match e {
            DeliverError::Store(e) => e.into(),
            DeliverError::Replay(e) => e.into(),
            e @ DeliverError::Refused { .. } => ApiError::conflict(e.to_string()),
        })?;
        Ok(Json(Accepted {
            run: run.to_string(),
            status: match delivery {
                Delivery::Recorded => "recorded",
                Delivery::Queued => "queued",
            }
            .into(),
        }))
    })
    .await
}

async fn signal(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Signal>, JsonRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let req = body(req)?;
    crate::api::check_signal(&req.name, &req.payload).map_err(ApiError::bad)?;
    let payload = if req.name == CANCEL {
        let by = decider(&caller, req.payload.get("by").and_then(Value::as_str))?;
        crate::api::signed(&req.name, req.payload, &by)
    } else {
        req.payload
    };
    let run = run_id(&d, &run)?;
    deliver(d, run, req.name, payload).await
}

async fn cancel(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Cancel>, JsonRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let req = body(req)?;
    let by = decider(&caller, req.by.as_deref())?;
    let run = run_id(&d, &run)?;
    let payload = json!({"by": by, "reason": req.reason});
    deliver(d, run, CANCEL.into(), payload).await
}

async fn resume(State(d): Shared, Path(run): Path<String>) -> Result<Json<Accepted>, ApiError> {
    let run = run_id(&d, &run)?;
    let v = blocking({
        let d = Arc::clone(&d);
        move || view(&d, &run)
    })
    .await?;
    if v.finished {
        return Err(ApiError::conflict(format!(
            "run {run} has finished ({})",
            v.status
        )));
    }
    if !d.scheduler.schedule(run) {
        return Err(shutting_down());
    }
    Ok(Json(Accepted {
        run: run.to_string(),
        status: "queued".into(),
    }))
}

async fn fork_run(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    req: Result<Json<Fork>, JsonRejection>,
) -> Result<(StatusCode, Json<Forked>), ApiError> {
    let req = body(req)?;
    let by = caller.name.clone();
    let from = run_id(&d, &run)?;
    let forked = blocking({
        let d = Arc::clone(&d);
        move || {
            let store = d.store.as_ref();
            let at = match &req.edit {
                None => ForkAt::After(req.at),
                Some(value) => {
                    ForkAt::edit(store, &from, req.at, value, &by).map_err(fork_error)?
                }
            };
            fork(store, &from, at, new_run_id(), now()).map_err(fork_error)
        }
    })
    .await?;
    if req.continue_run {
        d.scheduler.schedule(forked.id);
    }
    Ok((
        StatusCode::CREATED,
        Json(Forked {
            run: forked.id.to_string(),
        }),
    ))
}

fn fork_error(e: ForkError) -> ApiError {
    match e {
        ForkError::Replay(e) => e.into(),
        other => ApiError::bad(other.to_string()),
    }
}

async fn store_call(
    State(d): Shared,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let octets = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    if !octets {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the store route takes a bincode call as application/octet-stream (RemoteStore speaks it)",
        )
        .into_response();
    }
    let call = match retrace_events::decode_bounded::<Call>(&bytes) {
        Ok((call, _)) => call,
        Err(e) => return ApiError::bad(format!("not a store call: {e}")).into_response(),
    };
    if let Err(message) = caller.may(auth::store_call_needs(&call), "write through /v1/store") {
        return ApiError::forbidden(message).into_response();
    }
    let result = blocking(move || Ok(execute(&d, call))).await;
    match result {
        Ok(reply) => match bincode::encode_to_vec(&reply, wire::config()) {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
            }
            Err(e) => ApiError::internal(&e).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

fn execute(d: &Daemon, call: Call) -> Result<Reply, WireError> {
    let store = d.store.as_ref();
    Ok(match call {
        Call::CreateRun {
            id,
            created_at,
            origin,
            meta,
        } => Reply::Info(store.create_run(wire::new_run(id, created_at, origin, meta))?),
        Call::Run(id) => Reply::Run(store.run(&id)?),
        Call::Runs => Reply::Runs(store.runs()?),
        Call::SetRunMeta { run, key, value } => {
            Reply::Info(store.set_run_meta(&run, &key, value.as_deref())?)
        }
        Call::Append {
            run,
            expected,
            events,
        } => {
            let head = d
                .scheduler
                .with_idle(&run, || store.append(&run, expected, &events))
                .ok_or_else(|| {
                    WireError::Other(format!(
                        "retrace serve is driving run {run}; send it signals through the API (retrace approve, POST /v1/runs/{run}/signal) rather than appending"
                    ))
                })??;
            Reply::Head(head)
        }
        Call::OwnEvents { run, from, to } => Reply::Events(
            store
                .own_events(&run, from..=to)?
                .into_iter()
                .map(|e| (e.seq, e.id, e.bytes))
                .collect(),
        ),
        Call::PutBlob(bytes) => Reply::Blob(store.put_blob(&bytes)?),
        Call::PutBlobs(blobs) => {
            for bytes in blobs {
                store.put_blob(&bytes)?;
            }
            Reply::Done
        }
        Call::Blob(id) => Reply::Bytes(store.blob(&id)?),
        Call::PutSnapshot { at, bytes } => {
            store.put_snapshot(&at, &bytes)?;
            Reply::Done
        }
        Call::Snapshot(at) => Reply::Bytes(store.snapshot(&at)?),
        Call::Flush => {
            store.flush()?;
            Reply::Done
        }
        Call::Stats => Reply::Stats(wire::stats_to_wire(store.stats()?)),
        Call::SnapshotIds => Reply::EventIds(store.snapshot_ids()?),
    })
}
