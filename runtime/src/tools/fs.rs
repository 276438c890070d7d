//! The built-in file tools, confined to a [`Workspace`]:
//!
//! | tool | does | tier | idempotent |
//! |---|---|---|---|
//! | `fs.list` | entries under a directory (optionally recursive) | read | yes |
//! | `fs.read` | a file's text, optionally a line range | read | yes |
//! | `fs.search` | lines matching a substring or regex across files | read | yes |
//! | `fs.write` | create or overwrite a file | write | yes (same args, same file) |
//! | `fs.edit` | replace an exact snippet in a file | write | no (the snippet is gone after) |
//! | `fs.append` | add text at the end of a file | write | no (twice appends twice) |
//!
//! Results are deterministic (sorted), so a re-run or a replay sees the same output.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{OnError, Tier, Tool, ToolError, ToolInfo, Workspace};

/// The origin of every built-in tool.
pub(crate) const BUILT_IN: &str = "built-in";

/// Largest file `fs.read` returns whole; larger files need a line range.
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// Files larger than this are skipped by `fs.search`.
pub const MAX_SEARCH_FILE_BYTES: u64 = 4 << 20;

/// The built-in tool called `name`, if there is one.
pub fn builtin(workspace: &Workspace, name: &str) -> Option<Box<dyn Tool>> {
    let ws = workspace.clone();
    Some(match name {
        "fs.list" => Box::new(List(ws)),
        "fs.read" => Box::new(Read(ws)),
        "fs.search" => Box::new(Search(ws)),
        "fs.write" => Box::new(Write(ws)),
        "fs.edit" => Box::new(Edit(ws)),
        "fs.append" => Box::new(Append(ws)),
        _ => return None,
    })
}

fn parse<T: DeserializeOwned>(args: &Value) -> Result<T, ToolError> {
    serde_json::from_value(args.clone()).map_err(|e| ToolError::Invalid {
        message: e.to_string(),
    })
}

fn failed(what: &str, path: &str, e: &std::io::Error) -> ToolError {
    ToolError::Failed {
        message: format!("{what} `{path}`: {e}"),
    }
}

/// Create the directories `path` will live in.
fn create_parent(path: &Path, shown: &str) -> Result<(), ToolError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent)
            .map_err(|e| failed("cannot create the directory of", shown, &e)),
        None => Ok(()),
    }
}

fn read_text(path: &Path, shown: &str) -> Result<String, ToolError> {
    let bytes = std::fs::read(path).map_err(|e| failed("cannot read", shown, &e))?;
    String::from_utf8(bytes).map_err(|_| ToolError::Failed {
        message: format!("`{shown}` is not UTF-8 text"),
    })
}

struct List(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default = "thousand")]
    max_entries: usize,
}

fn dot() -> String {
    ".".into()
}

const fn thousand() -> usize {
    1_000
}

impl Tool for List {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.list".into(),
            description: "List files and directories under a directory of the workspace.".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "directory, relative to the workspace", "default": "."},
                    "recursive": {"type": "boolean", "default": false},
                    "max_entries": {"type": "integer", "minimum": 1, "default": 1000}
                },
                "additionalProperties": false
            }),
            tier: Tier::Read,
            idempotent: true,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let args: ListArgs = parse(args)?;
        let dir = self.0.resolve(&args.path)?;
        if !dir.is_dir() {
            return Err(ToolError::Failed {
                message: format!("`{}` is not a directory", args.path),
            });
        }
        let walker = walkdir::WalkDir::new(&dir)
            .min_depth(1)
            .max_depth(if args.recursive { usize::MAX } else { 1 })
            .sort_by_file_name();
        let mut entries = Vec::new();
        let mut truncated = false;
        for entry in walker {
            let entry = entry.map_err(|e| ToolError::Failed {
                message: e.to_string(),
            })?;
            if entries.len() == args.max_entries {
                truncated = true;
                break;
            }
            let kind = if entry.path_is_symlink() {
                "symlink"
            } else if entry.file_type().is_dir() {
                "dir"
            } else {
                "file"
            };
            let size = entry.metadata().map_or(0, |m| m.len());
            entries.push(json!({"path": self.0.display(entry.path()), "kind": kind, "size": size}));
        }
        Ok(json!({"entries": entries, "truncated": truncated}))
    }
}

struct Read(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    start_line: Option<usize>,
    end_line: Option<usize>,
}

impl Tool for Read {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.read".into(),
            description:
                "Read a text file of the workspace, whole or a range of lines (1-based, inclusive)."
                    .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
            tier: Tier::Read,
            idempotent: true,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let args: ReadArgs = parse(args)?;
        let path = self.0.resolve(&args.path)?;
        let ranged = args.start_line.is_some() || args.end_line.is_some();
        let size = std::fs::metadata(&path)
            .map_err(|e| failed("cannot read", &args.path, &e))?
            .len();
        if size > MAX_READ_BYTES && !ranged {
            return Err(ToolError::Failed {
                message: format!(
                    "`{}` is {size} bytes, more than {MAX_READ_BYTES}; read it in line ranges",
                    args.path
                ),
            });
        }
        let text = read_text(&path, &args.path)?;
        let total = text.lines().count();
        let start = args.start_line.unwrap_or(1).max(1);
        let end = args.end_line.unwrap_or(total).min(total);
        if start > end && total > 0 {
            return Err(ToolError::Invalid {
                message: format!("lines {start} to {end} are not a range of a {total}-line file"),
            });
        }
        let content = if ranged {
            text.lines()
                .skip(start - 1)
                .take(end + 1 - start)
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        Ok(
            json!({"path": args.path, "content": content, "total_lines": total, "start_line": start, "end_line": end}),
        )
    }
}

struct Search(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    pattern: String,
    #[serde(default)]
    regex: bool,
    #[serde(default = "dot")]
    path: String,
    #[serde(default = "two_hundred")]
    max_matches: usize,
}

const fn two_hundred() -> usize {
    200
}

impl Tool for Search {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.search".into(),
            description: "Find lines containing a substring (or matching a regex) in the workspace's text files.".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "regex": {"type": "boolean", "default": false},
                    "path": {"type": "string", "default": "."},
                    "max_matches": {"type": "integer", "minimum": 1, "default": 200}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
            tier: Tier::Read,
            idempotent: true,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let args: SearchArgs = parse(args)?;
        let regex = if args.regex {
            Some(Regex::new(&args.pattern).map_err(|e| ToolError::Invalid {
                message: format!("bad regex: {e}"),
            })?)
        } else {
            None
        };
        let root = self.0.resolve(&args.path)?;
        let mut matches = Vec::new();
        let mut truncated = false;
        // Symlinks are not followed, so the walk stays in the workspace.
        'files: for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
            let Ok(entry) = entry else { continue };
            let too_big = entry
                .metadata()
                .map_or(true, |m| m.len() > MAX_SEARCH_FILE_BYTES);
            if !entry.file_type().is_file() || too_big {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            if bytes.iter().take(8_192).any(|b| *b == 0) {
                continue; // binary
            }
            let text = String::from_utf8_lossy(&bytes);
            for (n, line) in text.lines().enumerate() {
                let hit = regex
                    .as_ref()
                    .map_or_else(|| line.contains(&args.pattern), |re| re.is_match(line));
                if hit {
                    if matches.len() == args.max_matches {
                        truncated = true;
                        break 'files;
                    }
                    matches.push(
                        json!({"path": self.0.display(entry.path()), "line": n + 1, "text": line}),
                    );
                }
            }
        }
        Ok(json!({"matches": matches, "truncated": truncated}))
    }
}

struct Write(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

impl Tool for Write {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.write".into(),
            description:
                "Create or overwrite a text file of the workspace (parent directories are created)."
                    .into(),
            schema: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
                "additionalProperties": false
            }),
            tier: Tier::Write,
            idempotent: true,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let args: WriteArgs = parse(args)?;
        let path = self.0.resolve(&args.path)?;
        if path.is_dir() {
            return Err(ToolError::Failed {
                message: format!("`{}` is a directory", args.path),
            });
        }
        create_parent(&path, &args.path)?;
        std::fs::write(&path, &args.content).map_err(|e| failed("cannot write", &args.path, &e))?;
        Ok(json!({"path": args.path, "bytes_written": args.content.len()}))
    }
}

struct Edit(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old: String,
    new: String,
    #[serde(default = "one")]
    count: usize,
}

const fn one() -> usize {
    1
}

impl Tool for Edit {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.edit".into(),
            description: "Replace an exact snippet of a workspace file. `old` must occur exactly `count` times (default 1).".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "old": {"type": "string", "minLength": 1},
                    "new": {"type": "string"},
                    "count": {"type": "integer", "minimum": 1, "default": 1}
                },
                "required": ["path", "old", "new"],
                "additionalProperties": false
            }),
            tier: Tier::Write,
            idempotent: false,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let args: EditArgs = parse(args)?;
        if args.old.is_empty() {
            return Err(ToolError::Invalid {
                message: "`old` must not be empty".into(),
            });
        }
        let path = self.0.resolve(&args.path)?;
        let text = read_text(&path, &args.path)?;
        let found = text.matches(&args.old).count();
        if found != args.count {
            return Err(ToolError::Failed {
                message: format!(
                    "`old` occurs {found} times in `{}`, expected {}; quote more context to make it unique",
                    args.path, args.count
                ),
            });
        }
        let edited = text.replace(&args.old, &args.new);
        std::fs::write(&path, &edited).map_err(|e| failed("cannot write", &args.path, &e))?;
        Ok(json!({"path": args.path, "replacements": found}))
    }
}

struct Append(Workspace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendArgs {
    path: String,
    text: String,
}

impl Tool for Append {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "fs.append".into(),
            description: "Add text at the end of a workspace file (created if missing, with its directories).".into(),
            schema: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                "required": ["path", "text"],
                "additionalProperties": false
            }),
            tier: Tier::Write,
            idempotent: false,
            on_error: OnError::Continue,
            origin: BUILT_IN.into(),
        }
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        use std::io::Write as _;
        let args: AppendArgs = parse(args)?;
        let path = self.0.resolve(&args.path)?;
        create_parent(&path, &args.path)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| failed("cannot open", &args.path, &e))?;
        file.write_all(args.text.as_bytes())
            .map_err(|e| failed("cannot append to", &args.path, &e))?;
        file.sync_data()
            .map_err(|e| failed("cannot sync", &args.path, &e))?;
        Ok(json!({"path": args.path, "bytes_appended": args.text.len()}))
    }
}
