//! WASM tools: untrusted code run in the [`retrace_sandbox`] host. A tool is a manifest
//! (TOML) next to a WASI preview 2 component:
//!
//! ```toml
//! name = "text.count"                  # namespaced; not fs.* or mcp.*
//! description = "Count lines and words of the files under a path."
//! module = "wordcount.wasm"            # relative to this manifest
//! tier = "read"                        # read | write | network | destructive
//! idempotent = true
//! on_error = "continue"                # continue (the model is told) | stop (the run fails)
//! env = ["LANG"]                       # host variables the guest may see (default none)
//!
//! [args]                               # JSON schema of the arguments, shown to the model
//! type = "object"
//! properties.path = { type = "string" }
//!
//! [limits]                             # all optional; these are the defaults
//! fuel = 5_000_000_000                 # ~ instructions
//! wall_ms = 10_000
//! memory_mb = 128
//! output_kb = 64                       # result kept inline; longer output is cut, the whole
//!                                      # of it kept as a blob the result names
//! max_output_mb = 16                   # writing more stops the tool
//!
//! [[preopen]]                          # directories the guest sees; nothing else
//! dir = "."                            # inside the agent's workspace
//! guest = "/data"
//! writable = false
//! ```
//!
//! The manifest, with the component's BLAKE3, becomes part of the spec a run records, so a
//! resumed run refuses a component that changed since the run started.
//!
//! Running one ([`WasmTool`], in `tool`) needs the runtime's default feature `wasm`; a build
//! without it reads manifests the same but refuses to build a toolbox holding one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{OnError, Tier};
use crate::spec;

/// A WASM tool as declared, resolved and checked: what a run records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Tool name.
    pub name: String,
    /// What it does (shown to the model).
    pub description: String,
    /// JSON schema of the arguments.
    pub schema: Value,
    /// Policy tier.
    pub tier: Tier,
    /// Whether re-running it after a crash is safe.
    pub idempotent: bool,
    /// What an error from it does to the run.
    #[serde(default, skip_serializing_if = "OnError::is_continue")]
    pub on_error: OnError,
    /// The component file (absolute).
    pub module: PathBuf,
    /// BLAKE3 of the component, hex.
    pub module_blake3: String,
    /// Limits.
    pub limits: Limits,
    /// Directories the guest sees.
    pub preopens: Vec<PreopenDir>,
    /// Host environment variables the guest sees.
    pub env: Vec<String>,
}

/// A WASM tool's limits, as written in its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel (about one unit per instruction).
    pub fuel: Option<u64>,
    /// Wall time, milliseconds.
    pub wall_ms: u64,
    /// Linear memory, MiB.
    pub memory_mb: u64,
    /// Output kept inline in the result, KiB.
    pub output_kb: u64,
    /// Output at which the tool is stopped, MiB.
    pub max_output_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: Some(5_000_000_000),
            wall_ms: 10_000,
            memory_mb: 128,
            output_kb: 64,
            max_output_mb: 16,
        }
    }
}

/// A directory of the workspace the guest sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreopenDir {
    /// Relative to the agent's workspace.
    pub dir: String,
    /// Its path inside the guest.
    pub guest: String,
    /// Whether the guest may change it.
    #[serde(default)]
    pub writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: toml::Spanned<String>,
    description: String,
    module: toml::Spanned<String>,
    tier: Tier,
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default = "empty_object")]
    args: Value,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    preopen: Vec<PreopenDir>,
}

fn empty_object() -> Value {
    json!({"type": "object"})
}

impl Manifest {
    /// Read and check the manifest at `path`: errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Self, spec::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| spec::Error::unreadable(path, "tool manifest", &e))?;
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            spec::Error::at(path, &text, span, message)
        };
        let raw: RawManifest =
            toml::from_str(&text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        let name = raw.name.get_ref();
        if let Err(why) = check_name(name) {
            return Err(at(Some(raw.name.span()), why));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let module = base.join(raw.module.get_ref());
        let bytes = std::fs::read(&module).map_err(|e| {
            at(
                Some(raw.module.span()),
                format!(
                    "cannot read the component {}: {e} ({})",
                    module.display(),
                    retrace_sandbox::BUILD_HINT
                ),
            )
        })?;
        for dir in &raw.preopen {
            if !dir.guest.starts_with('/') {
                return Err(at(
                    None,
                    format!(
                        "preopen `{}`: `guest` must be an absolute path inside the guest, e.g. \"/data\"",
                        dir.dir
                    ),
                ));
            }
        }
        if raw.limits.output_kb == 0 || raw.limits.memory_mb == 0 || raw.limits.wall_ms == 0 {
            return Err(at(
                None,
                "limits: wall_ms, memory_mb and output_kb must be above 0".into(),
            ));
        }
        Ok(Self {
            name: raw.name.into_inner(),
            description: raw.description,
            schema: raw.args,
            tier: raw.tier,
            idempotent: raw.idempotent,
            on_error: raw.on_error,
            module_blake3: blake3::hash(&bytes).to_hex().to_string(),
            module,
            limits: raw.limits,
            preopens: raw.preopen,
            env: raw.env,
        })
    }
}

/// Whether `name` may name a WASM tool.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.contains('.')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !valid {
        return Err(format!(
            "tool name `{name}` must be namespaced like `text.count` (lowercase letters, digits, `.`, `_`, `-`)"
        ));
    }
    if name.starts_with("fs.") || name.starts_with("mcp.") {
        return Err(format!(
            "tool name `{name}`: the `fs.` and `mcp.` namespaces are reserved"
        ));
    }
    Ok(())
}

#[cfg(feature = "wasm")]
mod tool;
#[cfg(feature = "wasm")]
pub use tool::WasmTool;
#[cfg(not(feature = "wasm"))]
mod unavailable;
#[cfg(not(feature = "wasm"))]
pub use unavailable::WasmTool;
