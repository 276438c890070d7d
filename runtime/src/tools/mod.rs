//! Tools: what an agent can do besides talking. Each tool declares its name, a JSON schema
//! for its arguments, a policy tier and whether running it twice is safe, and takes JSON
//! arguments to a JSON result. The built-ins: the `fs.*` tools in [`fs`], all confined to
//! one [`Workspace`]; `exec.run` ([`exec`], a sandboxed shell command); `web.fetch`
//! ([`web`], hosts of an allow-list); `user.ask` ([`ask`], a question that parks the run);
//! `task.set`/`task.update` ([`plan`], the agent's plan). WASM tools ([`wasm`]) run
//! untrusted code in the sandbox; MCP tools ([`mcp`]) come from MCP servers, their catalog
//! recorded with the run. The executor calls every kind the same way, through
//! [`Toolbox::call`], except the few it performs itself because they read or park the run
//! (`user.ask`, `task.*`, `artifact.read`).

pub mod ask;
pub mod exec;
pub mod fs;
pub mod mcp;
pub mod plan;
pub mod wasm;
pub mod web;
mod workspace;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use workspace::Workspace;

use crate::spec::Spec;

/// Policy tier of a tool: what kind of harm it could do. Defaults: read allowed, write ask,
/// network ask, exec ask, destructive deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Looks, changes nothing.
    Read,
    /// Changes files in the workspace.
    Write,
    /// Talks to the outside world.
    Network,
    /// Runs a program (sandboxed): may do anything the sandbox lets a process do.
    Exec,
    /// Deletes or overwrites beyond recovery.
    Destructive,
}

/// What an error from a tool does to the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The model is told, and the run goes on (the default).
    #[default]
    Continue,
    /// The run fails at once (e.g. a server the agent cannot do without).
    Stop,
}

impl OnError {
    /// Whether this is the default (left out of canonical specs, which keeps their bytes).
    pub fn is_continue(&self) -> bool {
        *self == Self::Continue
    }
}

/// What a tool declares about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolInfo {
    /// Namespaced name, e.g. `fs.read`.
    pub name: String,
    /// What it does (shown to the model).
    pub description: String,
    /// JSON schema of the arguments.
    pub schema: Value,
    /// Policy tier.
    pub tier: Tier,
    /// Whether re-running it after a crash is safe (same arguments, same effect).
    pub idempotent: bool,
    /// What an error from it does to the run.
    pub on_error: OnError,
    /// Where it comes from: `built-in`, `wasm <component> <blake3 prefix>`, or
    /// `mcp <server> (<command>)`.
    pub origin: String,
}

impl ToolInfo {
    /// The tool as offered to a model.
    pub fn def(&self) -> retrace_providers::ToolDef {
        retrace_providers::ToolDef {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.schema.clone(),
        }
    }
}

/// What a tool returned: its result, and whole outputs the result refers to by blob id
/// (stored before the result is recorded).
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The result (what the model sees, and the recorded outcome).
    pub value: Value,
    /// Bytes the result names by their [`retrace_events::BlobId`].
    pub attachments: Vec<Vec<u8>>,
}

pub use retrace_replay::preview::cut;

/// Why a tool call failed. The message is shown to the model (and recorded), so it says
/// what was wrong in terms the model can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema, or make no sense.
    #[error("invalid arguments: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The path is not allowed (outside the workspace).
    #[error("path `{path}` refused: {reason}")]
    Refused {
        /// The path asked for.
        path: String,
        /// Why.
        reason: String,
    },
    /// The operation failed (file missing, not found in file, IO error).
    #[error("{message}")]
    Failed {
        /// What happened.
        message: String,
    },
}

/// A built-in tool: runs in the runtime's process, blocking (the toolbox keeps it off the
/// async threads).
pub trait Tool: Send + Sync {
    /// Its declaration.
    fn info(&self) -> ToolInfo;
    /// Run it.
    fn call(&self, args: &Value) -> Result<Value, ToolError>;
}

/// The declaration of the built-in tool `name`, whatever kind it is; `None` if there is no
/// such built-in. What a tool declares does not depend on its settings or workspace.
pub fn builtin_info(name: &str) -> Option<ToolInfo> {
    match name {
        exec::TOOL => Some(exec::info()),
        web::TOOL => Some(web::info()),
        ask::TOOL => Some(ask::info()),
        _ => {
            plan::info(name).or_else(|| fs::builtin(&Workspace::detached(), name).map(|t| t.info()))
        }
    }
}

/// The built-ins a spec gets from what it declares rather than from `[tools] allow`:
/// `agent.delegate` when it has sub-agents, `skill.load` when it has skills.
pub fn declared(spec: &Spec) -> Vec<ToolInfo> {
    let mut infos = Vec::new();
    if !spec.agents.is_empty() {
        infos.push(crate::delegate::info(&spec.agents));
    }
    if !spec.skills.is_empty() {
        infos.push(crate::skills::info(&spec.skills));
    }
    infos
}

/// `- name: description` lines, each after a newline: how a tool's description lists what
/// it offers (sub-agents, skills).
pub fn listing<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    items.fold(String::new(), |mut out, (name, what)| {
        use std::fmt::Write;
        let _ = write!(out, "\n- {name}: {what}");
        out
    })
}

#[derive(Clone)]
enum Entry {
    Builtin(Arc<dyn Tool>),
    Exec(Arc<exec::Exec>),
    Web(Arc<web::WebSettings>),
    /// Performed by the executor (it reads or parks the run).
    Executor,
    Wasm(Arc<wasm::WasmTool>),
    Mcp(Arc<mcp::Connection>, String),
}

/// The tools an agent has, by name.
pub struct Toolbox {
    tools: BTreeMap<String, (ToolInfo, Entry)>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl Toolbox {
    /// The built-in tools named in `allow`, over `workspace`. Unknown names are an error.
    pub fn builtin(workspace: &Workspace, allow: &[String]) -> Result<Self, ToolError> {
        let mut tools = BTreeMap::new();
        for name in allow {
            let tool = fs::builtin(workspace, name).ok_or_else(|| ToolError::Invalid {
                message: format!("unknown tool `{name}`"),
            })?;
            let info = tool.info();
            tools.insert(info.name.clone(), (info, Entry::Builtin(Arc::from(tool))));
        }
        Ok(Self { tools })
    }

    /// Every tool `spec` declares: its built-ins, its WASM tools (compiled now, so a
    /// component that does not load stops the run before it starts) and the tools of its MCP
    /// servers' recorded catalogs (servers start on first call). `exec.run` with
    /// `sandbox = "kernel"` on a machine without the kernel sandbox is refused here.
    pub fn for_spec(spec: &Spec, workspace: &Workspace) -> Result<Self, ToolError> {
        let (files, others): (Vec<String>, Vec<String>) = spec
            .tools
            .iter()
            .cloned()
            .partition(|name| fs::builtin(workspace, name).is_some());
        let mut toolbox = Self::builtin(workspace, &files)?;
        for name in others {
            let unknown = || ToolError::Invalid {
                message: format!("unknown tool `{name}`"),
            };
            let tool = match name.as_str() {
                exec::TOOL => {
                    let settings = spec.exec.clone().unwrap_or_default();
                    settings
                        .available()
                        .map_err(|message| ToolError::Failed { message })?;
                    // the description says what its commands may do under these settings
                    let info = exec::info_for(&settings);
                    let tool = exec::Exec::new(settings, workspace.clone());
                    (info, Entry::Exec(Arc::new(tool)))
                }
                web::TOOL => {
                    let settings = spec.web.clone().ok_or_else(|| ToolError::Invalid {
                        message: "web.fetch needs `[web] allow = [hosts]` in the spec".into(),
                    })?;
                    (web::info(), Entry::Web(Arc::new(settings)))
                }
                _ => (builtin_info(&name).ok_or_else(unknown)?, Entry::Executor),
            };
            toolbox.tools.insert(name, tool);
        }
        for info in declared(spec) {
            let entry = if info.name == crate::skills::TOOL {
                Entry::Builtin(Arc::new(crate::skills::Load::new(spec.skills.clone())))
            } else {
                Entry::Executor
            };
            toolbox.tools.insert(info.name.clone(), (info, entry));
        }
        for manifest in &spec.wasm {
            let tool = wasm::WasmTool::new(manifest.clone(), workspace)?;
            let info = ToolInfo {
                name: manifest.name.clone(),
                description: manifest.description.clone(),
                schema: manifest.schema.clone(),
                tier: manifest.tier,
                idempotent: manifest.idempotent,
                on_error: manifest.on_error,
                origin: format!(
                    "wasm {} {}",
                    manifest.module.display(),
                    &manifest.module_blake3[..12]
                ),
            };
            toolbox
                .tools
                .insert(info.name.clone(), (info, Entry::Wasm(Arc::new(tool))));
        }
        for server in &spec.mcp {
            let catalog = server.catalog.as_ref().ok_or_else(|| ToolError::Invalid {
                message: format!(
                    "MCP server `{}`: its catalog was not discovered (tools::mcp::discover runs before a run starts)",
                    server.name
                ),
            })?;
            let connection = Arc::new(mcp::Connection::new(server.clone()));
            for tool in catalog {
                let info = ToolInfo {
                    name: server.tool_name(&tool.name),
                    description: tool.description.clone(),
                    schema: tool.schema.clone(),
                    tier: server.tier,
                    idempotent: server.idempotent,
                    on_error: server.on_error,
                    origin: format!("mcp {} ({})", server.name, server.endpoint()),
                };
                let entry = Entry::Mcp(Arc::clone(&connection), tool.name.clone());
                toolbox.tools.insert(info.name.clone(), (info, entry));
            }
        }
        Ok(toolbox)
    }

    /// A built-in tool by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        match self.tools.get(name) {
            Some((_, Entry::Builtin(tool))) => Some(Arc::clone(tool)),
            _ => None,
        }
    }

    /// Every tool's declaration, by name.
    pub fn infos(&self) -> Vec<ToolInfo> {
        self.tools.values().map(|(info, _)| info.clone()).collect()
    }

    /// Every tool the agent of `spec` is offered, in the order a request lists them: the
    /// toolbox's, by name, then `artifact.read` when the spec has a token budget (its tool
    /// results can be artifacts; the executor runs it, as it reads the store).
    pub fn offered(&self, spec: &Spec) -> Vec<ToolInfo> {
        let mut infos = self.infos();
        if spec.context.is_some() {
            infos.push(crate::context::artifact::info());
        }
        infos
    }

    /// Run tool `name` on `args`, whatever kind it is, without stalling other tasks.
    ///
    /// Arguments must be a JSON object (`null`, from a call recorded without any, is `{}`).
    /// Anything else, such as the raw text of arguments a model server sent that were not
    /// JSON (kept as a JSON string by the provider), is refused for every kind of tool with
    /// "arguments are not a JSON object", which the model reads as the call's result.
    pub async fn call(&self, name: &str, args: Value) -> Result<Output, ToolError> {
        let args = match args {
            Value::Null => Value::Object(serde_json::Map::new()),
            Value::Object(_) => args,
            other => {
                let shown = match &other {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                return Err(ToolError::Invalid {
                    message: format!(
                        "arguments are not a JSON object: {}; send the arguments as one JSON object that fits the tool's schema",
                        cut(&shown, 2000)
                    ),
                });
            }
        };
        match self.tools.get(name).map(|(_, entry)| entry.clone()) {
            Some(Entry::Builtin(tool)) => call_blocking(tool, args).await.map(|value| Output {
                value,
                attachments: Vec::new(),
            }),
            Some(Entry::Exec(tool)) => tool.call(&args).await,
            Some(Entry::Web(settings)) => web::fetch(&settings, &args).await,
            Some(Entry::Executor) => Err(ToolError::Failed {
                message: format!("`{name}` is performed by the executor, not the toolbox"),
            }),
            Some(Entry::Wasm(tool)) => tool.call(&args).await,
            Some(Entry::Mcp(connection, tool)) => connection.call(&tool, args).await,
            None => Err(ToolError::Failed {
                message: format!("there is no tool `{name}`"),
            }),
        }
    }
}

/// Run a built-in tool, which does blocking IO, without stalling other tasks. On a
/// multi-thread runtime it runs right here, tokio moving this worker's other tasks
/// elsewhere (`block_in_place`): handing it to the blocking pool and back costs two thread
/// wake-ups, which measured as much as the tool itself. Elsewhere it goes to the blocking
/// pool.
async fn call_blocking(tool: Arc<dyn Tool>, args: Value) -> Result<Value, ToolError> {
    let crashed = |why: String| ToolError::Failed {
        message: format!("the tool crashed: {why}"),
    };
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    if multi_thread {
        tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tool.call(&args)))
                .unwrap_or_else(|panic| Err(crashed(panic_message(&*panic))))
        })
    } else {
        tokio::task::spawn_blocking(move || tool.call(&args))
            .await
            .unwrap_or_else(|e| Err(crashed(e.to_string())))
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}
