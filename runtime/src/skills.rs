//! Skills: instructions an agent loads when it needs them (`SKILL.md`).
//!
//! `skills = ["dir", …]` in the spec names directories: one holding a `SKILL.md` is a skill,
//! and each subdirectory of one holding a `SKILL.md` is a skill. A `SKILL.md` starts with
//! YAML front matter (the format of Anthropic's Agent Skills):
//!
//! ```markdown
//! ---
//! name: release-notes
//! description: How to write release notes for this project.
//! allowed-tools: [fs.read, fs.write]    # optional
//! ---
//! Start from the changelog; one line per change; …
//! ```
//!
//! The model sees each skill's name and description only, in the description of the
//! built-in `skill.load`; `skill.load {"name": …}` returns the whole text. The text is
//! read when the spec is loaded and recorded in the spec with its BLAKE3, so a resumed run,
//! a replay and a fork see the skill as the run did, whatever the file says now.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::tools::{OnError, Tier, Tool, ToolError, ToolInfo};

/// The tool's name.
pub const TOOL: &str = "skill.load";

/// The file a skill directory holds.
pub const FILE: &str = "SKILL.md";

/// Largest `SKILL.md` read (bytes): a skill is instructions, not data.
pub const MAX_BYTES: u64 = 256 * 1024;

/// A skill, as recorded in the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    /// Its name (front matter `name`).
    pub name: String,
    /// When to use it (front matter `description`): all the model sees before loading it.
    pub description: String,
    /// Tools its front matter lists as the ones it needs (`allowed-tools`), shown with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Where it was read from.
    pub path: PathBuf,
    /// BLAKE3 of the file's bytes (hex).
    pub blake3: String,
    /// The file's text after the front matter.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FrontMatter {
    name: String,
    description: String,
    #[serde(default)]
    allowed_tools: Option<Tools>,
    // other keys (license, metadata, …) are the skill's own business
}

/// `allowed-tools`: a YAML list, or one string of names separated by commas or spaces.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tools {
    List(Vec<String>),
    Text(String),
}

/// The skills under `dir`: `dir/SKILL.md`, or `dir/*/SKILL.md` in name order. Errors say
/// which file and what is wrong.
pub fn load_dir(dir: &Path) -> Result<Vec<Skill>, String> {
    let own = dir.join(FILE);
    if own.is_file() {
        return Ok(vec![load(&own)?]);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the skills directory {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(FILE))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "{} holds no {FILE} (neither itself nor any directory in it)",
            dir.display()
        ));
    }
    files.iter().map(|f| load(f)).collect()
}

/// The skill in the `SKILL.md` at `path`.
pub fn load(path: &Path) -> Result<Skill, String> {
    let fail = |what: String| format!("{}: {what}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .len();
    if size > MAX_BYTES {
        return Err(fail(format!(
            "{size} bytes; a skill may hold at most {MAX_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| fail("is not UTF-8".into()))?;
    let (front, body) = split_front_matter(&text).ok_or_else(|| {
        fail("has no front matter: it must start with a `---` line, then `name:` and `description:`, then `---`".into())
    })?;
    let front: FrontMatter =
        serde_yaml_ng::from_str(front).map_err(|e| fail(format!("front matter: {e}")))?;
    if front.name.trim().is_empty() || front.description.trim().is_empty() {
        return Err(fail(
            "front matter: `name` and `description` must not be empty".into(),
        ));
    }
    let allowed_tools = match front.allowed_tools {
        None => Vec::new(),
        Some(Tools::List(list)) => list,
        Some(Tools::Text(text)) => text
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    Ok(Skill {
        name: front.name.trim().to_owned(),
        description: front.description.trim().to_owned(),
        allowed_tools,
        path: path.to_path_buf(),
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        text: body.trim_start_matches(['\r', '\n']).to_owned(),
    })
}

/// The front matter and the rest of a text that starts with a `---` line and has a
/// closing `---` line.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text.strip_prefix("---")?;
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..at], &rest[at + line.len()..]));
        }
        at += line.len();
    }
    None
}

/// `skill.load` over the skills a spec recorded.
#[derive(Debug)]
pub struct Load {
    skills: Vec<Skill>,
}

impl Load {
    /// The tool over `skills`.
    pub fn new(skills: Vec<Skill>) -> Self {
        Self { skills }
    }
}

/// The tool's declaration: the skills' names and descriptions, never their text.
pub fn info(skills: &[Skill]) -> ToolInfo {
    let listed = crate::tools::listing(
        skills
            .iter()
            .map(|x| (x.name.as_str(), x.description.as_str())),
    );
    ToolInfo {
        name: TOOL.into(),
        description: format!(
            "Load a skill: instructions for a kind of task. Load one when the task calls for \
             it, then follow it. Skills:{listed}"
        ),
        schema: json!({
            "type": "object",
            "properties": {"name": {"type": "string", "enum": skills.iter().map(|s| s.name.clone()).collect::<Vec<_>>()}},
            "required": ["name"],
            "additionalProperties": false
        }),
        tier: Tier::Read,
        idempotent: true,
        on_error: OnError::Continue,
        origin: "built-in".into(),
    }
}

impl Tool for Load {
    fn info(&self) -> ToolInfo {
        info(&self.skills)
    }

    fn call(&self, args: &Value) -> Result<Value, ToolError> {
        let name = args
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError::Invalid {
                message: "give the skill's `name`".into(),
            })?;
        let skill =
            self.skills
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| ToolError::Invalid {
                    message: format!(
                        "there is no skill `{name}` (available: {})",
                        self.skills
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
        let mut out = json!({"name": skill.name, "text": skill.text});
        if !skill.allowed_tools.is_empty() {
            out["allowed_tools"] = json!(skill.allowed_tools);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_split_from_the_text() {
        assert_eq!(
            split_front_matter("---\nname: a\n---\nbody\n"),
            Some(("name: a\n", "body\n"))
        );
        assert_eq!(
            split_front_matter("---\r\nname: a\r\n---\r\nbody"),
            Some(("name: a\r\n", "body"))
        );
        assert_eq!(split_front_matter("name: a\n---\n"), None);
        assert_eq!(split_front_matter("---\nname: a\n"), None);
    }
}
