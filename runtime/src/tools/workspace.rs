//! The workspace jail: every path a tool touches is resolved inside one root directory.
//!
//! A path is refused if it is absolute, if `..` would climb above the root, or if it reaches
//! outside through a symlink. The check canonicalises the deepest existing ancestor, so a
//! file that does not exist yet (for `fs.write`) is judged by the directory it would land in.
//! (A symlink swapped in between the check and the use is not defended against; tools run
//! for the agent, not against a concurrent attacker inside the workspace.)

use std::path::{Component, Path, PathBuf};

use super::ToolError;

/// A root directory that tool paths stay inside.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace rooted at `root` (which must exist).
    pub fn new(root: &Path) -> Result<Self, ToolError> {
        let root = root.canonicalize().map_err(|e| ToolError::Invalid {
            message: format!("workspace root {} is not usable: {e}", root.display()),
        })?;
        Ok(Self { root })
    }

    /// A workspace for declarations only: its root is empty, so every path resolves to a
    /// place no tool call would be allowed to touch.
    pub(crate) fn detached() -> Self {
        Self {
            root: PathBuf::new(),
        }
    }

    /// The root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve `path` (relative to the root) to a location inside the root.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, ToolError> {
        let refuse = |why: &str| ToolError::Refused {
            path: path.to_owned(),
            reason: why.to_owned(),
        };
        let given = Path::new(path);
        if given.is_absolute() || given.has_root() {
            return Err(refuse(
                "absolute paths are not allowed; use a path relative to the workspace",
            ));
        }
        // Lexical normalisation: `..` may not climb above the root.
        let mut relative = PathBuf::new();
        for component in given.components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !relative.pop() {
                        return Err(refuse("`..` leads outside the workspace"));
                    }
                }
                Component::Prefix(_) | Component::RootDir => {
                    return Err(refuse("absolute paths are not allowed"));
                }
            }
        }
        let full = self.root.join(&relative);
        // Symlinks: the deepest existing ancestor, canonicalised, must stay inside the root.
        let mut existing = full.as_path();
        while !existing.exists() && existing.symlink_metadata().is_err() {
            existing = existing.parent().unwrap_or(&self.root);
        }
        let real = existing
            .canonicalize()
            .map_err(|_| refuse("a symlink in the path points to nothing"))?;
        if !real.starts_with(&self.root) {
            return Err(refuse("a symlink leads outside the workspace"));
        }
        Ok(full)
    }

    /// `path` relative to the root, with `/` separators, for tool output.
    pub fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }
}
