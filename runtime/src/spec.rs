//! Agent specs: the TOML file that declares an agent (model, system prompt, tools, policy,
//! budgets, workspace), checked with errors that name the file, line and column, and a
//! canonical JSON form stored as a blob that the run's first event refers to — so a run
//! always knows exactly what it ran with.
//!
//! ```toml
//! name = "summarise"                      # required
//! system = "You are a careful assistant." # required
//! workspace = "."                         # root of the fs.* tools, relative to this file
//!
//! [model]                                 # required
//! provider = "scripted"                   # scripted | openai | anthropic
//! name = "demo"
//! cassette = "summarise.cassette.json"    # scripted only, relative to this file
//! temperature = 0.2                       # optional parameters, passed through
//! max_tokens = 1024
//! # HTTP providers (openai: any OpenAI-compatible server):
//! # base_url = "http://localhost:11434/v1" # default: the provider's public API
//! # api_key_env = "OPENAI_API_KEY"        # the variable holding the key, never the key;
//! #                                       # default OPENAI_API_KEY for the public API only
//! # timeout_secs = 600                    # whole call
//! # [model.price]                         # US dollars per million tokens, for cost budgets
//! # input_usd_per_mtok = 2.5
//! # output_usd_per_mtok = 10.0
//!
//! [tools]
//! allow = ["fs.read", "fs.list", "fs.search", "fs.write", "fs.edit", "fs.append"]
//! wasm = ["tools/count.toml"]            # WASM tool manifests (see `tools::wasm`)
//!
//! [[mcp]]                                 # MCP servers (see `tools::mcp`); tools are
//! name = "everything"                     # named mcp.<name>.<tool>
//! command = "npx"                         # stdio, or `url = "http://…/mcp"`
//! args = ["-y", "@modelcontextprotocol/server-everything"]
//!
//! [[policy]]                              # first match wins; defaults after the rules:
//! tool = "fs.write"                       #   read allow, write ask, destructive deny
//! path = "notes/**"
//! action = "allow"                        # allow | ask | deny
//!
//! [budgets]                               # all optional
//! max_steps = 50
//! max_tokens = 200000
//! max_cost_usd = 1.0
//! max_wall_secs = 3600
//! loop_limit = 3                          # same tool call this many times in a row: stop
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Tools the runtime knows by name (built-ins; WASM and MCP tools come later).
pub const BUILTIN_TOOLS: [&str; 6] = [
    "fs.list",
    "fs.read",
    "fs.search",
    "fs.write",
    "fs.edit",
    "fs.append",
];

/// A checked agent spec. Paths are absolute (resolved against the spec file's directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The agent's name.
    pub name: String,
    /// System prompt.
    pub system: String,
    /// Root directory of the fs tools.
    pub workspace: PathBuf,
    /// Which model, how.
    pub model: Model,
    /// Built-in tools the agent may call, sorted.
    pub tools: Vec<String>,
    /// WASM tools, as their manifests declared them (with each component's BLAKE3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wasm: Vec<crate::tools::wasm::Manifest>,
    /// MCP servers, each with the catalog discovered when the run started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<crate::tools::mcp::Server>,
    /// Policy rules, in order.
    pub policy: Vec<Rule>,
    /// Limits.
    pub budgets: Budgets,
}

/// Model settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Provider kind.
    pub provider: Provider,
    /// Model name as the provider knows it.
    pub name: String,
    /// For the scripted provider: the cassette to play.
    pub cassette: Option<PathBuf>,
    /// HTTP providers: where the API is (`None`: the provider's public API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// HTTP providers: the environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// HTTP providers: seconds allowed for a whole call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Prices, to turn token usage into cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Other parameters (temperature, max_tokens, ...), passed through to the provider.
    pub params: BTreeMap<String, serde_json::Value>,
}

/// US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input_usd_per_mtok: f64,
    /// Per million output (completion) tokens.
    pub output_usd_per_mtok: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, in millionths of a dollar.
    pub fn micro_usd(&self, input: u64, output: u64) -> u64 {
        // tokens × $/Mtok is exactly µ$; f64 is exact far beyond any real token count
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let cost = (input as f64 * self.input_usd_per_mtok
            + output as f64 * self.output_usd_per_mtok)
            .round()
            .max(0.0) as u64;
        cost
    }
}

/// Supported providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Plays a cassette: offline, deterministic.
    Scripted,
    /// OpenAI-compatible chat completions.
    Openai,
    /// Anthropic messages.
    Anthropic,
}

/// What a policy rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run the tool.
    Allow,
    /// Ask a human first (the run parks).
    Ask,
    /// Refuse; the model is told.
    Deny,
}

/// One policy rule: a tool (exact name or `*`), an optional path glob, an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Tool name, or `*` for any.
    pub tool: String,
    /// Glob over the call's `path` argument, relative to the workspace.
    pub path: Option<String>,
    /// The decision.
    pub action: Action,
}

/// Limits; `None` means unlimited. Unknown keys are refused: a misspelt budget must not
/// silently mean "unlimited".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Model replies.
    pub max_steps: Option<u64>,
    /// Input + output tokens.
    pub max_tokens: Option<u64>,
    /// Cost in US dollars.
    pub max_cost_usd: Option<f64>,
    /// Wall time from the first event.
    pub max_wall_secs: Option<u64>,
    /// Identical consecutive tool calls tolerated.
    pub loop_limit: Option<u64>,
}

/// A spec that does not check out: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct Error {
    /// The spec file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The problem.
    pub message: String,
}

impl Error {
    /// The problem `message` at byte range `span` of `text`, the contents of `file` (line 1,
    /// column 1 when no span is known). Every TOML file retrace reads reports this way.
    pub fn at(file: &Path, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    }

    /// `file` (a `what`: "spec", "suite", "tool manifest") could not be read.
    pub fn unreadable(file: &Path, what: &str, e: &std::io::Error) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the {what}: {e}"),
        }
    }
}

// The file as written: spans kept for error messages, unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    system: String,
    workspace: Option<String>,
    model: RawModel,
    tools: Option<RawTools>,
    #[serde(default)]
    policy: Vec<RawRule>,
    #[serde(default)]
    budgets: Budgets,
    #[serde(default)]
    mcp: Vec<Spanned<crate::tools::mcp::Server>>,
}

#[derive(Deserialize)]
struct RawModel {
    provider: Provider,
    name: String,
    cassette: Option<String>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    timeout_secs: Option<u64>,
    price: Option<Price>,
    #[serde(flatten)]
    params: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    wasm: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    tool: Spanned<String>,
    path: Option<String>,
    action: Action,
}

impl Spec {
    /// Read and check the spec at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::unreadable(path, "spec", &e))?;
        Self::parse(path, &text)
    }

    /// Check `text` as the spec file `path` (which anchors relative paths and names errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let at = |span: Option<Range<usize>>, message: String| Error::at(path, text, span, message);
        let raw: RawSpec =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let (allow, wasm_paths) = raw.tools.map(|t| (t.allow, t.wasm)).unwrap_or_default();
        let mut tools = Vec::new();
        for tool in allow {
            if !BUILTIN_TOOLS.contains(&tool.get_ref().as_str()) {
                return Err(at(
                    Some(tool.span()),
                    format!(
                        "unknown tool `{}`; known tools: {}",
                        tool.get_ref(),
                        BUILTIN_TOOLS.join(", ")
                    ),
                ));
            }
            tools.push(tool.into_inner());
        }
        tools.sort();
        tools.dedup();
        let mut wasm: Vec<crate::tools::wasm::Manifest> = Vec::new();
        for manifest in wasm_paths {
            let loaded = crate::tools::wasm::Manifest::load(&base.join(manifest.get_ref()))?;
            if wasm.iter().any(|m| m.name == loaded.name) {
                return Err(at(
                    Some(manifest.span()),
                    format!("two WASM tools are named `{}`", loaded.name),
                ));
            }
            wasm.push(loaded);
        }
        let mcp = mcp_servers(raw.mcp, &base, &at)?;
        let known = |name: &str| {
            BUILTIN_TOOLS.contains(&name)
                || wasm.iter().any(|m| m.name == name)
                // MCP tools are known once discovered: a rule may name any tool of a
                // declared server, or all of them (`mcp.<server>.*`)
                || mcp
                    .iter()
                    .any(|m| name.starts_with(&format!("mcp.{}.", m.name)))
        };
        let mut policy = Vec::new();
        let mut rule_spans = Vec::new();
        for rule in raw.policy {
            rule_spans.push(rule.tool.span());
            let name = rule.tool.get_ref();
            if name != "*" && !known(name) {
                return Err(at(
                    Some(rule.tool.span()),
                    format!("policy rule for unknown tool `{name}`"),
                ));
            }
            policy.push(Rule {
                tool: rule.tool.into_inner(),
                path: rule.path,
                action: rule.action,
            });
        }
        if let Err(e) = crate::policy::Policy::new(&policy) {
            return Err(at(rule_spans.get(e.index).cloned(), e.to_string()));
        }
        let cassette = raw.model.cassette.map(|c| base.join(c));
        if raw.model.provider == Provider::Scripted && cassette.is_none() {
            return Err(at(
                None,
                "the scripted provider needs `cassette = \"FILE\"` in [model]".to_owned(),
            ));
        }
        Ok(Self {
            name: raw.name,
            system: raw.system,
            workspace: base.join(raw.workspace.as_deref().unwrap_or(".")),
            model: Model {
                provider: raw.model.provider,
                name: raw.model.name,
                cassette,
                base_url: raw.model.base_url,
                api_key_env: raw.model.api_key_env,
                timeout_secs: raw.model.timeout_secs,
                price: raw.model.price,
                params: raw.model.params,
            },
            tools,
            wasm,
            mcp,
            policy,
            budgets: raw.budgets,
        })
    }

    /// Canonical bytes (canonical JSON): what the run's `run_started` refers to.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        retrace_events::to_canonical_json(self).expect("a Spec always serialises")
    }
}

/// The declared MCP servers, checked, their working directories resolved against `base`.
fn mcp_servers(
    raw: Vec<Spanned<crate::tools::mcp::Server>>,
    base: &Path,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Vec<crate::tools::mcp::Server>, Error> {
    let mut mcp: Vec<crate::tools::mcp::Server> = Vec::new();
    for server in raw {
        let span = server.span();
        let mut server = server.into_inner();
        server.check().map_err(|why| at(Some(span.clone()), why))?;
        if server.command.is_some() {
            server.cwd = Some(base.join(server.cwd.as_deref().unwrap_or(Path::new("."))));
        }
        if mcp.iter().any(|m| m.name == server.name) {
            return Err(at(
                Some(span),
                format!("two MCP servers are named `{}`", server.name),
            ));
        }
        mcp.push(server);
    }
    Ok(mcp)
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "summarise"
system = "You are careful."

[model]
provider = "scripted"
name = "demo"
cassette = "demo.cassette.json"
temperature = 0.2

[tools]
allow = ["fs.write", "fs.read"]

[[policy]]
tool = "fs.write"
path = "notes/**"
action = "allow"

[budgets]
max_steps = 10
"#;

    fn parse(text: &str) -> Result<Spec, Error> {
        Spec::parse(Path::new("/agents/demo.toml"), text)
    }

    #[test]
    fn a_good_spec_parses_with_paths_resolved() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.tools, vec!["fs.read", "fs.write"]);
        assert_eq!(spec.workspace, PathBuf::from("/agents/."));
        assert_eq!(
            spec.model.cassette,
            Some(PathBuf::from("/agents/demo.cassette.json"))
        );
        assert_eq!(spec.model.params["temperature"], serde_json::json!(0.2));
        assert_eq!(spec.budgets.max_steps, Some(10));
        assert_eq!(spec.policy[0].action, Action::Allow);
        // canonical bytes are stable and sorted
        assert_eq!(
            spec.to_canonical_bytes(),
            parse(GOOD).unwrap().to_canonical_bytes()
        );
        assert!(retrace_events::is_canonical_json(
            &spec.to_canonical_bytes()
        ));
    }

    #[test]
    fn bad_specs_name_file_line_and_problem() {
        let cases = [
            (
                GOOD.replace("max_steps = 10", "max_stepz = 10"),
                20,
                "unknown field `max_stepz`",
            ),
            (
                GOOD.replace("\"fs.read\"]", "\"fs.raed\"]"),
                12,
                "unknown tool `fs.raed`",
            ),
            (
                GOOD.replace("name = \"summarise\"\n", ""),
                1,
                "missing field `name`",
            ),
            (
                GOOD.replace("max_steps = 10", "max_steps = \"ten\""),
                20,
                "invalid type",
            ),
            (
                GOOD.replace("tool = \"fs.write\"", "tool = \"rm.rf\""),
                15,
                "unknown tool `rm.rf`",
            ),
            (
                GOOD.replace("action = \"allow\"", "action = \"maybe\""),
                17,
                "unknown variant `maybe`",
            ),
        ];
        for (text, line, message) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.line, line, "{err}");
            assert!(err.message.contains(message), "{err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("/agents/demo.toml:{line}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_scripted_provider_needs_a_cassette() {
        let err = parse(&GOOD.replace("cassette = \"demo.cassette.json\"\n", "")).unwrap_err();
        assert!(err.message.contains("cassette"), "{err}");
    }
}
