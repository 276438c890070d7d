//! The stand-in for [`WasmTool`] in a build without the `wasm` feature: it cannot be built,
//! so a spec naming a WASM tool is refused with the reason, and nothing else changes.

use serde_json::Value;

use super::Manifest;
use crate::tools::{Output, ToolError, Workspace};

/// A WASM tool; in this build there are none (see [`WasmTool::new`]).
#[derive(Debug)]
pub struct WasmTool {
    manifest: Manifest,
    never: std::convert::Infallible,
}

impl WasmTool {
    /// Always [`ToolError::Invalid`]: this build of the runtime has no WASM host.
    #[allow(clippy::needless_pass_by_value)] // the signature of the `wasm` build's
    pub fn new(manifest: Manifest, _workspace: &Workspace) -> Result<Self, ToolError> {
        Err(ToolError::Invalid {
            message: format!(
                "WASM tool `{}`: this build of retrace has no WASM host (retrace-runtime was built without its `wasm` feature); use the `retrace` binary, which has it",
                manifest.name
            ),
        })
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Never called: no value of this type exists.
    #[allow(clippy::unused_async)]
    pub async fn call(&self, _args: &Value) -> Result<Output, ToolError> {
        match self.never {}
    }
}
