//! Tools from MCP servers, through the official Rust SDK (`rmcp`). A spec declares servers:
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
//! ```
//!
//! At the start of a run the catalog of every server is discovered ([`discover`]) and
//! becomes part of the spec the run records, so a resumed run, a replay or an eval sees
//! exactly the tools the run saw, even if the server changed since. Descriptions and
//! schemas come from a process we do not control: they are cut to a bounded size, marked as
//! coming from the server, and names that do not fit `[A-Za-z0-9_-]` are left out.
//!
//! A server is started on the first call and kept for the run's other calls. If it fails to
//! start, crashes mid-call or times out, the call is a recorded tool error naming the server;
//! the process is killed and the next call starts a fresh one. Dropping the toolbox kills
//! every server it started.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Output, Tier, ToolError, cut};

/// Longest tool description kept from a server.
pub const MAX_DESCRIPTION: usize = 1024;

/// An MCP server as a spec declares it, with the catalog discovered at run start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Its namespace: tools are `mcp.<name>.<tool>`.
    pub name: String,
    /// Program to start (found on `PATH`).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for it (besides `PATH` and `HOME`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory (relative paths: to the spec's directory, which is also the
    /// default).
    #[serde(default)]
    pub cwd: Option<std::path::PathBuf>,
    /// Tier of its tools.
    #[serde(default = "network")]
    pub tier: Tier,
    /// Whether its tools may be re-run after a crash.
    #[serde(default)]
    pub idempotent: bool,
    /// Seconds allowed per call.
    #[serde(default = "thirty")]
    pub timeout_secs: u64,
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

/// Start `server` as a child process and complete the MCP handshake.
async fn connect(server: &Server) -> Result<Client, Error> {
    let fail = |why: String| Error {
        server: server.name.clone(),
        why,
    };
    let mut command = tokio::process::Command::new(&server.command);
    command
        .args(&server.args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
        )
        .envs(&server.env)
        .kill_on_drop(true);
    if let Some(cwd) = &server.cwd {
        command.current_dir(cwd);
    }
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot start `{}`: {e}", server.command)))?;
    let started = tokio::time::timeout(server.timeout(), ().serve(transport)).await;
    match started {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(fail(format!(
            "`{}` started but the MCP handshake failed: {e}",
            server.command
        ))),
        Err(_) => Err(fail(format!(
            "`{}` did not complete the MCP handshake within {} s",
            server.command, server.timeout_secs
        ))),
    }
}

impl Server {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
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
        let client = connect(server).await?;
        let listed = tokio::time::timeout(server.timeout(), client.list_all_tools()).await;
        let _ = client.cancel().await;
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                return Err(Error {
                    server: server.name.clone(),
                    why: format!("listing its tools failed: {e}"),
                });
            }
            Err(_) => {
                return Err(Error {
                    server: server.name.clone(),
                    why: format!("listing its tools took over {} s", server.timeout_secs),
                });
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
    client: Mutex<Option<Client>>,
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
        let client = slot.as_ref().expect("connected just above");
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = tokio::time::timeout(server.timeout(), client.call_tool(request)).await;
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                *slot = None;
                return Err(failed(format!("the call of `{tool}` failed: {e}")));
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
        // rmcp stops its child from a tokio task; outside a runtime, give it one so the
        // server is killed rather than left behind.
        let Some(client) = self.client.get_mut().take() else {
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
