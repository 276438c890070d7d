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
//! schemas come from a process we do not control: they are cut to a bounded size, marked as
//! coming from the server, and names that do not fit `[A-Za-z0-9_-]` are left out.
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

use rmcp::model::CallToolRequestParams;
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

    /// The full name of its tool `tool`.
    pub fn tool_name(&self, tool: &str) -> String {
        format!("mcp.{}.{tool}", self.name)
    }
}

/// Fill in the catalog of every server in `servers` that has none: start it, list its tools,
/// stop it. Run before a run starts, so the catalog is recorded with the spec.
pub async fn discover(servers: &mut [Server]) -> Result<(), Error> {
    for server in servers.iter_mut().filter(|s| s.catalog.is_none()) {
        let (client, process) = connect(server).await?;
        let listed = tokio::time::timeout(server.timeout(), client.list_all_tools()).await;
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
        let mut catalog: Vec<CatalogTool> = tools
            .into_iter()
            .filter(|t| {
                !t.name.is_empty()
                    && t.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .map(|t| CatalogTool {
                description: untrusted(t.description.as_deref().unwrap_or_default()),
                schema: Value::Object((*t.input_schema).clone()),
                name: t.name.into_owned(),
            })
            .collect();
        catalog.sort_by(|a, b| a.name.cmp(&b.name));
        server.catalog = Some(catalog);
    }
    Ok(())
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
        let result = tokio::time::timeout(server.timeout(), client.call_tool(request)).await;
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
        let mut value = json!({"content": result.content});
        if let Some(structured) = result.structured_content {
            value["structured"] = structured;
        }
        if result.is_error == Some(true) {
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
