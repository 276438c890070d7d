//! Tools from MCP servers, through the official Rust SDK (`rmcp`). A spec declares servers,
//! each either a child process speaking MCP over stdio or a streamable HTTP endpoint:
//!
//! ```toml
//! [[mcp]]
//! name = "everything"              # tools become `mcp.everything.<tool>`
//! command = "npx"                  # stdio: a child process speaking MCP
//! args = ["-y", "@modelcontextprotocol/server-everything"]
//! env = { LOG_LEVEL = "warn" }     # its environment: PATH and HOME, plus these
//! cwd = "."                        # working directory, relative to the spec (default)
//! tier = "network"                 # tier of its tools (default network: the policy asks)
//! idempotent = false               # whether re-running its tools after a crash is safe
//! timeout_secs = 30                # per call; a call past it is a recorded tool error
//! on_error = "continue"            # continue (the model is told) | stop (the run fails)
//!
//! [[mcp]]
//! name = "search"
//! url = "https://mcp.example.com/mcp"   # streamable HTTP
//! bearer_token_env = "SEARCH_TOKEN"     # sent as `Authorization: Bearer …`; the variable's
//!                                       # name is recorded, never its value
//! headers = { X-Team = "agents" }       # recorded with the spec: nothing secret here
//! headers_env = { X-Api-Key = "SEARCH_KEY" }  # header values read from variables
//! ```
//!
//! At the start of a run the catalog of every server is discovered ([`discover`]) and
//! becomes part of the spec the run records, so a resumed run, a replay or an eval sees
//! exactly the tools the run saw, even if the server changed since. Descriptions and
//! schemas come from a process we do not control: they are cut to a bounded size and marked
//! as coming from the server. Tool names are kept as the server gives them (dots, spaces,
//! Unicode: `calendar.respondToEvent`); the name a model API is sent is derived from the
//! full name `mcp.<server>.<tool>` by `retrace_providers::http::WireNames`. A `tools/list`
//! whose `nextCursor` repeats ends with the tools gathered and a warning.
//!
//! A `tools/call` result is taken as the JSON the server sent where `rmcp` cannot type it
//! (content blocks it does not know, see [`call_result`]): every block is recorded whole.
//!
//! A server is connected on the first call and kept for the run's other calls. If it fails
//! to start, crashes mid-call or times out, the call is a recorded tool error naming the
//! server; the connection (and a stdio server's process) is dropped and the next call
//! connects afresh. Dropping the toolbox kills every server process it started.
//!
//! A stdio server's stderr is read as it writes it, and the last lines of it (at most
//! [`STDERR_LINES`] lines, [`STDERR_BYTES`] bytes) end the error when the server fails to
//! start, to complete the handshake, or to answer: its own words say why (a missing
//! module, a bad flag). The server's environment is `PATH`, `HOME` and its declared `env`,
//! never retrace's own, so its stderr cannot carry a secret of retrace's environment; the
//! lines are shown as written, control characters removed.

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, PaginatedRequestParams, ServerResult,
    Tool,
};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, watch};

use super::{OnError, Output, Tier, ToolError, cut};

/// Longest tool description kept from a server.
pub const MAX_DESCRIPTION: usize = 1024;

/// Most lines of a stdio server's stderr an error quotes (its last ones).
pub const STDERR_LINES: usize = 20;

/// Most bytes of a stdio server's stderr an error quotes (its last ones).
pub const STDERR_BYTES: usize = 2048;

/// How long a failure waits for a server's stderr to end (it usually has exited) before
/// quoting what was read.
const STDERR_WAIT: Duration = Duration::from_millis(500);

/// An MCP server as a spec declares it, with the catalog discovered at run start.
///
/// Fields keep their order and defaults stay out of the serialised form, so a spec written
/// before a field existed has the same canonical bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Its namespace: tools are `mcp.<name>.<tool>`.
    pub name: String,
    /// stdio: the program to start (found on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables set for it (besides `PATH` and `HOME`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: its working directory (relative paths: to the spec's directory, which is also
    /// the default).
    #[serde(default)]
    pub cwd: Option<std::path::PathBuf>,
    /// Streamable HTTP: the endpoint (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Streamable HTTP: headers sent with every request (recorded: nothing secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Streamable HTTP: headers whose values are read from environment variables when
    /// connecting (header name to variable name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_env: BTreeMap<String, String>,
    /// Streamable HTTP: the variable holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// Tier of its tools.
    #[serde(default = "network")]
    pub tier: Tier,
    /// Whether its tools may be re-run after a crash.
    #[serde(default)]
    pub idempotent: bool,
    /// Seconds allowed per call.
    #[serde(default = "thirty")]
    pub timeout_secs: u64,
    /// What an error from one of its tools does to the run.
    #[serde(default, skip_serializing_if = "OnError::is_continue")]
    pub on_error: OnError,
    /// The tools it offered when the run started (filled by [`discover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Vec<CatalogTool>>,
}

fn network() -> Tier {
    Tier::Network
}

fn thirty() -> u64 {
    30
}

/// One tool of a server's catalog, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogTool {
    /// The server's name for it.
    pub name: String,
    /// Its description, cut to [`MAX_DESCRIPTION`].
    pub description: String,
    /// JSON schema of its arguments.
    pub schema: Value,
}

/// Why a server could not be used.
#[derive(Debug, thiserror::Error)]
#[error("MCP server `{server}`: {why}")]
pub struct Error {
    /// The server.
    pub server: String,
    /// What went wrong.
    pub why: String,
}

type Client = RunningService<RoleClient, ()>;

/// The last lines a child process wrote to its stderr, read as it writes them (so the pipe
/// never fills), keeping at most [`STDERR_LINES`] lines and [`STDERR_BYTES`] bytes.
#[derive(Debug, Clone)]
struct StderrTail {
    lines: Arc<std::sync::Mutex<VecDeque<String>>>,
    /// Becomes `true` when the stream ends.
    ended: watch::Receiver<bool>,
}

impl StderrTail {
    /// Start reading `stderr` on a task of the current tokio runtime.
    fn read(stderr: tokio::process::ChildStderr, server: &str) -> Self {
        let lines = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let (done, ended) = watch::channel(false);
        let tail = Self { lines, ended };
        let writer = tail.clone();
        let server = server.to_owned();
        tokio::spawn(async move {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                for &byte in &buf[..n] {
                    if byte == b'\n' {
                        writer.push(&server, &std::mem::take(&mut line));
                    } else if line.len() < STDERR_BYTES {
                        line.push(byte);
                    }
                }
            }
            if !line.is_empty() {
                writer.push(&server, &line);
            }
            let _ = done.send(true);
        });
        tail
    }

    fn push(&self, server: &str, line: &[u8]) {
        let line: String = String::from_utf8_lossy(line)
            .chars()
            .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
            .collect();
        let line = line.trim_end().to_owned();
        tracing::debug!(server, line, "MCP server stderr");
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.push_back(line);
        while lines.len() > STDERR_LINES
            || (lines.len() > 1 && lines.iter().map(String::len).sum::<usize>() > STDERR_BYTES)
        {
            lines.pop_front();
        }
    }

    /// What the server said last, to end an error: waits (at most [`STDERR_WAIT`]) for the
    /// stream to end, then quotes its last lines, or says it wrote nothing.
    async fn report(&self) -> String {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(STDERR_WAIT, ended.wait_for(|&done| done)).await;
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last: Vec<&str> = lines.iter().map(String::as_str).collect();
        while last.first().is_some_and(|l| l.trim().is_empty()) {
            last.remove(0);
        }
        if last.is_empty() {
            return "; it wrote nothing on stderr".to_owned();
        }
        let mut text = last.join("\n    ");
        if text.len() > STDERR_BYTES {
            let mut cut = text.len() - STDERR_BYTES;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text = format!("…{}", &text[cut..]);
        }
        format!("; the end of its stderr:\n    {text}")
    }
}

/// A stdio server's process, killed when this is dropped.
#[derive(Debug)]
struct Process {
    /// The server (`kill_on_drop`).
    _child: tokio::process::Child,
    /// The read end of the server's stdin, kept open here too (see [`connect_stdio`]).
    _stdin: std::io::PipeReader,
    /// What it writes on stderr.
    tail: StderrTail,
}

/// Connect to `server` and complete the MCP handshake; a stdio server's process comes
/// along, to be kept as long as the client.
async fn connect(server: &Server) -> Result<(Client, Option<Process>), Error> {
    match (&server.command, &server.url) {
        (Some(command), _) => connect_stdio(server, command)
            .await
            .map(|(client, process)| (client, Some(process))),
        (None, Some(url)) => connect_http(server, url).await.map(|c| (c, None)),
        (None, None) => Err(server.error("it has neither `command` nor `url`".into())),
    }
}

/// `why`, ended by what a stdio server last wrote on stderr (if it is one).
async fn with_stderr(why: String, process: Option<&Process>) -> String {
    match process {
        Some(process) => format!("{why}{}", process.tail.report().await),
        None => why,
    }
}

/// Start `server` as a child process speaking MCP on its stdin and stdout, reading its
/// stderr ([`StderrTail`]).
///
/// The child's stdin is a pipe whose read end this process keeps open as well. A server
/// that exits before reading what is sent to it (a missing module, a bad flag) would
/// otherwise make that write raise SIGPIPE, which the `retrace` binary leaves at its default
/// (so that `retrace runs | head` ends quietly): retrace would end with no message at all.
/// With a reader left, the write just fills the pipe, and the server's end is seen on its
/// stdout instead.
async fn connect_stdio(server: &Server, program: &str) -> Result<(Client, Process), Error> {
    let io = |what: &str, e: std::io::Error| {
        server.error(format!("cannot set up {what} for `{program}`: {e}"))
    };
    let (stdin_read, stdin_write) = std::io::pipe().map_err(|e| io("a pipe", e))?;
    let kept = stdin_read.try_clone().map_err(|e| io("a pipe", e))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(&server.args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
        )
        .envs(&server.env)
        .stdin(Stdio::from(stdin_read))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &server.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (is it installed, and on PATH?)"
        } else {
            ""
        };
        server.error(format!("cannot start `{program}`: {e}{hint}"))
    })?;
    // dropped on an error below: the child is killed
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let process = Process {
        _child: child,
        _stdin: kept,
        tail: StderrTail::read(stderr, &server.name),
    };
    let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(stdin_write.into())
        .map_err(|e| io("its stdin", e))?;
    match handshake(
        server,
        &format!("`{program}` started but"),
        ().serve((stdout, stdin)),
    )
    .await
    {
        Ok(client) => Ok((client, process)),
        Err(mut e) => {
            e.why = with_stderr(e.why, Some(&process)).await;
            Err(e)
        }
    }
}

/// Open a streamable HTTP session with `server` at `url`. Secrets come from the environment
/// now; they are marked sensitive, so they stay out of debug output, and never recorded.
async fn connect_http(server: &Server, url: &str) -> Result<Client, Error> {
    let secret = |var: &str, what: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| server.error(format!("{what} is read from `{var}`, which is not set")))
    };
    let mut headers = reqwest::header::HeaderMap::new();
    let named = server
        .headers
        .iter()
        .map(|(k, v)| Ok((k, v.clone(), false)))
        .chain(
            server
                .headers_env
                .iter()
                .map(|(k, var)| secret(var, &format!("header `{k}`")).map(|v| (k, v, true))),
        );
    for header in named {
        let (name, value, sensitive) = header?;
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| server.error(format!("header name `{name}`: {e}")))?;
        let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            server.error(format!(
                "header `{name}`: the value is not valid in a header"
            ))
        })?;
        value.set_sensitive(sensitive);
        headers.insert(name, value);
    }
    // A broken response stream is resumed a few times, quickly; a server that stays gone is
    // then an error, not a wait for the call's timeout.
    let mut retry = ExponentialBackoff::default();
    retry.max_times = Some(3);
    retry.base_duration = Duration::from_millis(250);
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    config.retry_config = Arc::new(retry);
    if let Some(var) = &server.bearer_token_env {
        config = config.auth_header(secret(var, "the bearer token")?);
    }
    // No redirects: one would replay the session and headers to wherever it points.
    let client = retrace_providers::http::client_builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .map_err(|e| server.error(format!("cannot set up an HTTP client: {e}")))?;
    let transport = StreamableHttpClientTransport::with_client(client, config);
    handshake(
        server,
        &format!("`{url}` answered but"),
        ().serve(transport),
    )
    .await
}

/// Wait for the MCP handshake, at most the server's timeout.
async fn handshake(
    server: &Server,
    who: &str,
    serving: impl Future<Output = Result<Client, ClientInitializeError>>,
) -> Result<Client, Error> {
    match tokio::time::timeout(server.timeout(), serving).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(server.error(format!("{who} the MCP handshake failed: {e}"))),
        Err(_) => Err(server.error(format!(
            "{} did not complete the MCP handshake within {} s",
            server.endpoint(),
            server.timeout_secs
        ))),
    }
}

impl Server {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    fn error(&self, why: String) -> Error {
        Error {
            server: self.name.clone(),
            why,
        }
    }

    /// What it is reached by: its command or its URL.
    pub fn endpoint(&self) -> &str {
        self.command
            .as_deref()
            .or(self.url.as_deref())
            .unwrap_or_default()
    }

    /// Check a server as declared: a valid name, and one way to reach it with only the
    /// settings that way takes. Secrets stay out of the spec (which is recorded): credential
    /// headers must come from variables.
    pub fn check(&self) -> Result<(), String> {
        let valid = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "MCP server name `{}`: use lowercase letters, digits, `_` and `-` (it becomes the tools' namespace mcp.<name>.)",
                self.name
            ));
        }
        let name = &self.name;
        if self.catalog.is_some() {
            return Err(
                "`catalog` is discovered from the server when a run starts, not written".into(),
            );
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) | (None, None) => Err(format!(
                "MCP server `{name}`: give either `command` (stdio) or `url` (streamable HTTP)"
            )),
            (Some(_), None) => {
                let http_only = !self.headers.is_empty()
                    || !self.headers_env.is_empty()
                    || self.bearer_token_env.is_some();
                if http_only {
                    return Err(format!(
                        "MCP server `{name}`: `headers`, `headers_env` and `bearer_token_env` are for `url` servers"
                    ));
                }
                Ok(())
            }
            (None, Some(url)) => {
                if !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    return Err(format!(
                        "MCP server `{name}`: `args`, `env` and `cwd` are for `command` servers"
                    ));
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "MCP server `{name}`: url `{url}` must start with http:// or https://"
                    ));
                }
                let credential = ["authorization", "proxy-authorization", "cookie"];
                if let Some(h) = self
                    .headers
                    .keys()
                    .find(|h| credential.contains(&h.to_ascii_lowercase().as_str()))
                {
                    return Err(format!(
                        "MCP server `{name}`: header `{h}` would be recorded in the run's log; put a token in a variable and use `bearer_token_env` or `headers_env`"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The full name of its tool `tool` (as the server names it, whatever its characters):
    /// `mcp.<server>.<tool>`.
    pub fn tool_name(&self, tool: &str) -> String {
        format!("mcp.{}.{tool}", self.name)
    }
}

/// Fill in the catalog of every server in `servers` that has none: start it, list its tools,
/// stop it. Run before a run starts, so the catalog is recorded with the spec.
///
/// A tool keeps the name its server gives it, whatever its characters (`docs.getText`,
/// `calendar.respondToEvent`, spaces, Unicode): it becomes `mcp.<server>.<name>`, and what a
/// model API is sent for it is derived from that (`retrace_providers::http::WireNames`).
/// Left out, with a warning: an empty name, one with control characters, and a second tool
/// of the same name (the first is kept).
pub async fn discover(servers: &mut [Server]) -> Result<(), Error> {
    for server in servers.iter_mut().filter(|s| s.catalog.is_none()) {
        let (client, process) = connect(server).await?;
        let listed = tokio::time::timeout(server.timeout(), list_tools(server, &client)).await;
        let _ = client.cancel().await;
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                let why = format!("listing its tools failed: {e}");
                return Err(server.error(with_stderr(why, process.as_ref()).await));
            }
            Err(_) => {
                return Err(server.error(format!(
                    "listing its tools took over {} s",
                    server.timeout_secs
                )));
            }
        };
        let mut catalog: BTreeMap<String, CatalogTool> = BTreeMap::new();
        for tool in tools {
            let name = tool.name.into_owned();
            if name.is_empty() || name.chars().any(char::is_control) {
                tracing::warn!(
                    server = server.name,
                    name = name.escape_debug().to_string(),
                    "MCP server offered a tool whose name is empty or holds control characters; it is left out"
                );
                continue;
            }
            if catalog.contains_key(&name) {
                tracing::warn!(
                    server = server.name,
                    name,
                    "MCP server offered two tools of one name; the first is kept"
                );
                continue;
            }
            let entry = CatalogTool {
                description: untrusted(tool.description.as_deref().unwrap_or_default()),
                schema: Value::Object((*tool.input_schema).clone()),
                name: name.clone(),
            };
            catalog.insert(name, entry);
        }
        server.catalog = Some(catalog.into_values().collect());
    }
    Ok(())
}

/// Every page of `tools/list` (MCP 2025-06-18, "Tools: Listing Tools"; pagination by
/// `nextCursor`). A server that sends a cursor it sent before would page forever: the
/// listing stops there, with the tools gathered so far and a warning.
async fn list_tools(server: &Server, client: &Client) -> Result<Vec<Tool>, rmcp::ServiceError> {
    let mut tools = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = None;
    loop {
        let params = cursor
            .clone()
            .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let page = client.list_tools(params).await?;
        tools.extend(page.tools);
        match page.next_cursor {
            None => return Ok(tools),
            Some(next) if !seen.insert(next.clone()) => {
                tracing::warn!(
                    server = server.name,
                    cursor = next,
                    tools = tools.len(),
                    "MCP server repeated a tools/list cursor; the listing stops with the tools gathered so far"
                );
                return Ok(tools);
            }
            Some(next) => cursor = Some(next),
        }
    }
}

/// A description from a server, cut, without control characters, and marked as such.
fn untrusted(description: &str) -> String {
    let clean: String = description
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "(from an MCP server; untrusted) {}",
        cut(clean.trim(), MAX_DESCRIPTION)
    )
}

/// The JSON of a `tools/call` result, as the server sent it where `rmcp` could not type it.
///
/// `rmcp` types a result by trying each kind it knows (its `ServerResult` is untagged); a
/// tool result with a content block it cannot represent (MCP 2025-06-18, "Tools: Tool
/// Result": a `resource_link` without `name`, an `annotations.audience` other than
/// `user`/`assistant`, a `priority` it cannot hold, a block type newer than it) matches no
/// kind but the catch-all `CustomResult`, which holds the raw JSON: taken as is. A result it
/// did type is turned back into JSON. A task or an input request (not MCP 2025-06-18) is
/// refused, named.
fn call_result(result: ServerResult) -> Result<Value, &'static str> {
    match result {
        ServerResult::CustomResult(raw) => Ok(raw.0),
        ServerResult::CallToolResult(typed) => {
            Ok(serde_json::to_value(typed).unwrap_or_else(|_| json!({})))
        }
        // `{}`: a result with no content
        ServerResult::EmptyResult(_) => Ok(json!({})),
        ServerResult::CreateTaskResult(_) => Err("a task"),
        ServerResult::InputRequiredResult(_) => Err("a request for input"),
        _ => Err("a result of another request"),
    }
}

/// What is recorded of a `tools/call` result `value` (and shown to the model):
/// `{"content": [<blocks, as the server sent them>], "structured": <structuredContent>}`,
/// the second only when the server sent one. Blocks are kept whole, known or not: the text
/// of `text` blocks reaches the model with the rest of the JSON.
fn recorded(mut value: Value) -> Value {
    let content = value
        .get_mut("content")
        .map_or_else(|| json!([]), Value::take);
    let mut out = json!({ "content": content });
    match value.get_mut("structuredContent").map(Value::take) {
        None | Some(Value::Null) => {}
        Some(structured) => out["structured"] = structured,
    }
    out
}

/// A `tools/call` result as recorded ([`recorded`]), and whether the server marked it an
/// error (`isError: true`); what is refused, named (see [`call_result`]).
fn outcome(result: ServerResult) -> Result<(Value, bool), &'static str> {
    let value = call_result(result)?;
    let is_error = value.get("isError") == Some(&Value::Bool(true));
    Ok((recorded(value), is_error))
}

/// The JSON of a `tools/call` result (the `result` member of the JSON-RPC response), typed
/// as `rmcp` types it and taken as a call takes it: the value recorded and whether it is an
/// error. For fuzzing and tests of recorded server answers.
///
/// # Errors
/// The JSON is not a result `rmcp` can type, or is a result retrace does not take.
pub fn decode_call_result(json: &[u8]) -> Result<(Value, bool), String> {
    let result: ServerResult = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    outcome(result).map_err(|what| format!("a tools/call answered with {what}"))
}

/// A server's connection, started on first use and restarted after a failure.
#[derive(Debug)]
pub struct Connection {
    server: Server,
    client: Mutex<Option<(Client, Option<Process>)>>,
}

impl Connection {
    /// Not started yet.
    pub fn new(server: Server) -> Self {
        Self {
            server,
            client: Mutex::new(None),
        }
    }

    /// Call the server's tool `tool` with `args`. A result the server marks as an error is
    /// a tool error; so is any failure to reach it, which also drops (kills) the process.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Output, ToolError> {
        let server = &self.server;
        let failed = |why: String| ToolError::Failed {
            message: format!("MCP server `{}`: {why}", server.name),
        };
        let Value::Object(arguments) = args else {
            return Err(ToolError::Invalid {
                message: "MCP tools take a JSON object as arguments".into(),
            });
        };
        let mut slot = self.client.lock().await;
        if slot.is_none() {
            *slot = Some(connect(server).await.map_err(|e| ToolError::Failed {
                message: e.to_string(),
            })?);
        }
        let (client, process) = slot.as_ref().expect("connected just above");
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(request));
        let result = tokio::time::timeout(server.timeout(), client.send_request(request)).await;
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                let why = with_stderr(
                    format!("the call of `{tool}` failed: {e}"),
                    process.as_ref(),
                )
                .await;
                *slot = None;
                return Err(failed(why));
            }
            Err(_) => {
                *slot = None;
                return Err(failed(format!(
                    "`{tool}` did not answer within {} s; the server was stopped",
                    server.timeout_secs
                )));
            }
        };
        let (value, is_error) = outcome(result).map_err(|what| {
            failed(format!(
                "`{tool}` answered tools/call with {what}, which retrace does not take (it needs a tool result: `content`)"
            ))
        })?;
        if is_error {
            return Err(failed(format!("`{tool}` returned an error: {value}")));
        }
        Ok(Output {
            value,
            attachments: Vec::new(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A stdio server's process is killed as its `Process` drops; the client's task is
        // stopped from a tokio runtime (outside one, given one here).
        let Some((client, _process)) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(client);
        } else if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(async move {
                let _ = client.cancel().await;
            });
        }
    }
}

/// [`discover`], for callers not in an async context (the CLI before it drives a run).
pub fn discover_now(servers: &mut [Server]) -> Result<(), Error> {
    if servers.iter().all(|s| s.catalog.is_some()) {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error {
            server: servers.first().map(|s| s.name.clone()).unwrap_or_default(),
            why: format!("cannot start an async runtime: {e}"),
        })?;
    runtime.block_on(discover(servers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stdio server declared as `sh -c SCRIPT`.
    fn sh(script: &str) -> Server {
        let server: Server = toml::from_str(&format!(
            "name = \"broken\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\ntimeout_secs = 20\n"
        ))
        .expect("server");
        server.check().expect("valid");
        server
    }

    /// A case file of `shared/cases/wire/` (beside the clone).
    fn case(name: &str) -> std::path::PathBuf {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases/wire");
        assert!(
            dir.is_dir(),
            "the wire cases are missing: expected {} (the `shared/` directory beside the clone)",
            dir.display()
        );
        dir.join(name)
    }

    /// A stdio server replaying `jsonl` (tests/fake_mcp_server.py), logging what it is sent
    /// to `log`.
    fn fake(jsonl: &std::path::Path, log: &std::path::Path) -> Server {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fake_mcp_server.py");
        let server = Server {
            name: "work".into(),
            command: Some("python3".into()),
            args: vec![
                script.display().to_string(),
                jsonl.display().to_string(),
                log.display().to_string(),
            ],
            env: BTreeMap::new(),
            cwd: None,
            url: None,
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            bearer_token_env: None,
            tier: Tier::Network,
            idempotent: false,
            timeout_secs: 20,
            on_error: OnError::Continue,
            catalog: None,
        };
        server.check().expect("valid");
        server
    }

    /// `lines` (one JSON-RPC response each) as a case file in `dir`.
    fn variant(dir: &std::path::Path, lines: &[Value]) -> std::path::PathBuf {
        let path = dir.join("variant.jsonl");
        let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
        std::fs::write(&path, text).expect("write");
        path
    }

    fn initialize() -> Value {
        json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}}, "serverInfo": {"name": "variant", "version": "0"}}})
    }

    fn listing(names: &[&str], next: Option<&str>) -> Value {
        let tools: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
            .collect();
        let mut result = json!({"tools": tools});
        if let Some(next) = next {
            result["nextCursor"] = json!(next);
        }
        json!({"jsonrpc": "2.0", "id": 1, "result": result})
    }

    fn names(server: &Server) -> Vec<&str> {
        let catalog = server.catalog.as_ref().expect("discovered");
        catalog.iter().map(|t| t.name.as_str()).collect()
    }

    /// What the fake server was sent by `method`, in order.
    fn sent(log: &std::path::Path, method: &str) -> Vec<Value> {
        std::fs::read_to_string(log)
            .expect("log")
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .filter(|r| r["method"] == method)
            .collect()
    }

    #[tokio::test]
    async fn case_dotted_tool_names_are_all_offered_and_called_by_their_own_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        let mut servers = vec![fake(&case("mcp-dotted-tool-names.jsonl"), &log)];
        discover(&mut servers).await.expect("discovered");
        assert_eq!(
            names(&servers[0]),
            [
                "calendar.respondToEvent",
                "docs.getText",
                "docs_getText",
                "gmail.search",
                "time.getCurrentTime"
            ]
        );
        assert_eq!(
            servers[0].tool_name("docs.getText"),
            "mcp.work.docs.getText"
        );
        let connection = Connection::new(servers.remove(0));
        for tool in ["time.getCurrentTime", "docs.getText", "docs_getText"] {
            let out = connection
                .call(tool, json!({"documentId": "d1"}))
                .await
                .expect("called");
            assert_eq!(
                out.value,
                json!({"content": [{"type": "text", "text": "2025-12-17T10:00:00Z"}]})
            );
        }
        let called: Vec<Value> = sent(&log, "tools/call")
            .into_iter()
            .map(|r| r["params"]["name"].clone())
            .collect();
        assert_eq!(
            called,
            [
                json!("time.getCurrentTime"),
                json!("docs.getText"),
                json!("docs_getText")
            ]
        );
    }

    #[tokio::test]
    async fn case_a_resource_link_without_name_is_kept_and_the_text_goes_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("log");
        let mut servers = vec![fake(&case("mcp-resource-link-without-name.jsonl"), &log)];
        discover(&mut servers).await.expect("discovered");
        assert_eq!(names(&servers[0]), ["fetch"]);
        let connection = Connection::new(servers.remove(0));
        let out = connection
            .call("fetch", json!({"url": "https://example.com"}))
            .await
            .expect("the result is taken");
        assert_eq!(
            out.value,
            json!({"content": [
                {"type": "text", "text": "result with a view"},
                {"type": "resource_link", "uri": "ui://demo/view/v1", "mimeType": "text/html;profile=mcp-app"}
            ]})
        );
    }

    #[tokio::test]
    async fn blocks_rmcp_cannot_type_are_kept_whole_and_an_error_result_names_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let content = json!([
            {"type": "text", "text": "for people", "annotations": {"audience": ["robot"], "priority": 0.5}},
            {"type": "text", "text": "urgent", "annotations": {"priority": "high"}},
            {"type": "widget", "widget": {"kind": "chart", "series": [1, 2, 3]}},
            {"type": "resource_link", "uri": "file:///r.txt", "name": "r.txt"}
        ]);
        let path = variant(
            dir.path(),
            &[
                initialize(),
                listing(&["render"], None),
                json!({"jsonrpc": "2.0", "id": 2, "result": {"content": content,
                    "structuredContent": {"rows": 3}, "isError": false}}),
                json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [
                    {"type": "widget", "error": "no such chart"}], "isError": true}}),
            ],
        );
        let mut servers = vec![fake(&path, &dir.path().join("log"))];
        discover(&mut servers).await.expect("discovered");
        let connection = Connection::new(servers.remove(0));
        let out = connection.call("render", json!({})).await.expect("taken");
        assert_eq!(
            out.value,
            json!({"content": content, "structured": {"rows": 3}})
        );
        let err = connection
            .call("render", json!({}))
            .await
            .expect_err("an error result")
            .to_string();
        assert!(err.contains("`render` returned an error"), "{err}");
        assert!(err.contains(r#""error":"no such chart""#), "{err}");
    }

    #[tokio::test]
    async fn a_repeating_cursor_ends_the_listing_with_the_tools_gathered() {
        let dir = tempfile::tempdir().expect("temp dir");
        // page 1 points at "p2"; page 2 points at "p2" again, forever
        let path = variant(
            dir.path(),
            &[
                initialize(),
                listing(&["a.first", "b second"], Some("p2")),
                listing(&["c/third", "a.first"], Some("p2")),
            ],
        );
        let log = dir.path().join("log");
        let mut servers = vec![fake(&path, &log)];
        let started = std::time::Instant::now();
        discover(&mut servers).await.expect("discovered");
        assert!(started.elapsed() < Duration::from_secs(10));
        // the second `a.first` is the same tool listed twice: kept once
        assert_eq!(names(&servers[0]), ["a.first", "b second", "c/third"]);
        // pages asked for: none, p2, and p2 again (which rmcp may answer from its cache)
        let pages = sent(&log, "tools/list").len();
        assert!((2..=3).contains(&pages), "{pages} pages");
    }

    #[tokio::test]
    async fn a_server_that_fails_to_start_ends_the_error_with_its_last_stderr_lines() {
        let mut servers = vec![sh(
            "echo 'node: starting' >&2; i=1; while [ $i -le 30 ]; do \
             echo \"Error: Cannot find module '@acme/mcp' (line $i)\" >&2; i=$((i+1)); done; exit 3",
        )];
        let err = discover(&mut servers).await.expect_err("fails").to_string();
        assert!(
            err.starts_with("MCP server `broken`: `sh` started but"),
            "{err}"
        );
        assert!(err.contains("the end of its stderr:"), "{err}");
        assert!(
            err.ends_with("Error: Cannot find module '@acme/mcp' (line 30)"),
            "{err}"
        );
        // the last STDERR_LINES lines, no more
        assert!(err.contains("(line 11)"), "{err}");
        assert!(!err.contains("(line 10)"), "{err}");
        assert!(!err.contains("node: starting"), "{err}");
    }

    #[tokio::test]
    async fn a_long_stderr_is_cut_to_its_last_bytes_and_a_silent_server_is_said_to_be() {
        let mut servers = vec![sh(
            "i=1; while [ $i -le 5 ]; do printf '%01000d\\n' $i >&2; i=$((i+1)); done; exit 1",
        )];
        let err = discover(&mut servers).await.expect_err("fails").to_string();
        let (_, tail) = err.split_once("the end of its stderr:").expect("quoted");
        assert!(tail.len() <= STDERR_BYTES + 16, "{} bytes", tail.len());
        assert!(tail.trim_end().ends_with("0005"), "{tail}");

        let mut servers = vec![sh("exit 1")];
        let err = discover(&mut servers).await.expect_err("fails").to_string();
        assert!(err.ends_with("it wrote nothing on stderr"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_named_with_a_hint() {
        let mut server = sh("true");
        server.command = Some("retrace-no-such-mcp-server".into());
        let err = discover(&mut [server])
            .await
            .expect_err("fails")
            .to_string();
        assert!(
            err.contains("cannot start `retrace-no-such-mcp-server`"),
            "{err}"
        );
        assert!(err.contains("on PATH"), "{err}");
    }
}
