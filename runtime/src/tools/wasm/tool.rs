//! A WASM tool ready to call: its component compiled in the process's [`Sandbox`], its
//! preopens resolved in the agent's workspace.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use retrace_events::BlobId;
use retrace_sandbox::{Call, Module, Preopen, Sandbox};
use serde_json::{Value, json};

use super::Manifest;
use crate::tools::{Output, ToolError, Workspace, cut};

/// The process's sandbox (one engine, one compiled-component cache). Compiled code is also
/// cached on disk under `$RETRACE_WASM_CACHE` (default `~/.cache/retrace/wasmtime`; `off`
/// disables it).
fn sandbox() -> Result<&'static Sandbox, ToolError> {
    static SANDBOX: OnceLock<Result<Sandbox, String>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let dir = match std::env::var_os("RETRACE_WASM_CACHE") {
                Some(v) if v == "off" => None,
                Some(v) => Some(PathBuf::from(v)),
                None => std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                    .map(|d| d.join("retrace/wasmtime")),
            };
            Sandbox::new(dir.as_deref()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ToolError::Failed { message: e.clone() })
}

/// A WASM tool ready to call.
#[derive(Debug)]
pub struct WasmTool {
    manifest: Manifest,
    module: Module,
    preopens: Vec<Preopen>,
    env: Vec<(String, String)>,
}

impl WasmTool {
    /// Compile (or take from the cache) `manifest`'s component and resolve its preopens
    /// inside `workspace`. The component must still be the one the manifest recorded.
    pub fn new(manifest: Manifest, workspace: &Workspace) -> Result<Self, ToolError> {
        let setup = |why: String| ToolError::Invalid {
            message: format!("WASM tool `{}`: {why}", manifest.name),
        };
        let module = sandbox()?
            .load(&manifest.module)
            .map_err(|e| setup(e.to_string()))?;
        if module.blake3() != manifest.module_blake3 {
            return Err(setup(format!(
                "{} changed since the spec was read (recorded BLAKE3 {}, now {}); a run continues only with the component it started with",
                manifest.module.display(),
                &manifest.module_blake3[..12],
                &module.blake3()[..12]
            )));
        }
        let mut preopens = Vec::new();
        for dir in &manifest.preopens {
            let host = workspace
                .resolve(&dir.dir)
                .map_err(|e| setup(e.to_string()))?;
            if !host.is_dir() {
                return Err(setup(format!(
                    "preopen `{}` is not a directory of the workspace",
                    dir.dir
                )));
            }
            preopens.push(Preopen {
                host,
                guest: dir.guest.clone(),
                writable: dir.writable,
            });
        }
        let env = manifest
            .env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
            .collect();
        Ok(Self {
            manifest,
            module,
            preopens,
            env,
        })
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Run it on `args`: JSON in on stdin, JSON out on stdout. Output longer than the
    /// manifest's `output_kb` comes back cut, naming the blob that holds all of it.
    pub async fn call(&self, args: &Value) -> Result<Output, ToolError> {
        let limits = self.manifest.limits;
        let stdin = serde_json::to_vec(args).map_err(|e| ToolError::Invalid {
            message: e.to_string(),
        })?;
        let call = Call {
            stdin: &stdin,
            limits: retrace_sandbox::Limits {
                fuel: limits.fuel,
                wall: Duration::from_millis(limits.wall_ms),
                memory_bytes: limits.memory_mb << 20,
                output_bytes: usize::try_from(limits.max_output_mb << 20).unwrap_or(usize::MAX),
            },
            preopens: &self.preopens,
            env: &self.env,
        };
        let out = sandbox()?
            .run(&self.module, call)
            .await
            .map_err(|e| ToolError::Failed {
                message: e.to_string(),
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.exit_code != 0 {
            let why = if out.stderr.trim().is_empty() {
                stdout.trim()
            } else {
                out.stderr.trim()
            };
            return Err(ToolError::Failed {
                message: format!("exited with code {}: {}", out.exit_code, cut(why, 4096)),
            });
        }
        let inline = usize::try_from(limits.output_kb << 10).unwrap_or(usize::MAX);
        if out.stdout.len() > inline {
            let blob = BlobId::of(&out.stdout);
            return Ok(Output {
                value: json!({
                    "truncated": true,
                    "bytes": out.stdout.len(),
                    "preview": cut(&stdout, inline),
                    "full_output": blob.to_string(),
                }),
                attachments: vec![out.stdout],
            });
        }
        let value = serde_json::from_str(&stdout).map_err(|e| ToolError::Failed {
            message: format!(
                "the tool's output is not JSON ({e}): {}",
                cut(stdout.trim(), 200)
            ),
        })?;
        Ok(Output {
            value,
            attachments: Vec::new(),
        })
    }
}
