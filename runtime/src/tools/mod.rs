//! Tools: what an agent can do besides talking. Each tool declares its name, a JSON schema
//! for its arguments, a policy tier and whether running it twice is safe, and takes JSON
//! arguments to a JSON result. The built-ins are the `fs.*` tools in [`fs`], all confined to
//! one [`Workspace`].

pub mod fs;
mod workspace;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

pub use workspace::Workspace;

/// Policy tier of a tool: what kind of harm it could do. Defaults: read allowed, write ask,
/// network ask, destructive deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Looks, changes nothing.
    Read,
    /// Changes files in the workspace.
    Write,
    /// Talks to the outside world.
    Network,
    /// Deletes or overwrites beyond recovery.
    Destructive,
}

/// What a tool declares about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolInfo {
    /// Namespaced name, e.g. `fs.read`.
    pub name: &'static str,
    /// What it does (shown to the model).
    pub description: &'static str,
    /// JSON schema of the arguments.
    pub schema: Value,
    /// Policy tier.
    pub tier: Tier,
    /// Whether re-running it after a crash is safe (same arguments, same effect).
    pub idempotent: bool,
}

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

/// A tool the runtime can call.
pub trait Tool: Send + Sync {
    /// Its declaration.
    fn info(&self) -> ToolInfo;
    /// Run it. Blocking; the executor runs tools off the async threads.
    fn call(&self, args: &Value) -> Result<Value, ToolError>;
}

/// The tools an agent has, by name.
pub struct Toolbox {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl Toolbox {
    /// The built-in tools named in `allow`, over `workspace`. Unknown names are an error.
    pub fn builtin(workspace: &Workspace, allow: &[String]) -> Result<Self, ToolError> {
        let mut tools: BTreeMap<&'static str, Arc<dyn Tool>> = BTreeMap::new();
        for name in allow {
            let tool = fs::builtin(workspace, name).ok_or_else(|| ToolError::Invalid {
                message: format!("unknown tool `{name}`"),
            })?;
            tools.insert(tool.info().name, Arc::from(tool));
        }
        Ok(Self { tools })
    }

    /// A tool by name (shared, so it can run on a blocking thread).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }

    /// Every tool's declaration, by name.
    pub fn infos(&self) -> Vec<ToolInfo> {
        self.tools.values().map(|t| t.info()).collect()
    }
}
