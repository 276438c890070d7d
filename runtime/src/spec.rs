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
//! # [model.params]                        # parameters passed through unchecked (below)
//! # repetition_penalty = 1.1
//! # HTTP providers (openai: any OpenAI-compatible server):
//! # base_url = "http://localhost:11434/v1" # default: the provider's public API
//! # api_key_env = "OPENAI_API_KEY"        # the variable holding the key, never the key;
//! #                                       # default OPENAI_API_KEY for the public API only
//! # timeout_secs = 600                    # whole call
//! # [model.price]                         # US dollars per million tokens, for cost budgets
//! # input_usd_per_mtok = 2.5
//! # output_usd_per_mtok = 10.0
//! # cache_read_usd_per_mtok = 0.25        # optional: prompt tokens read from the prompt
//! #                                       # cache (default: the input price)
//! # cache_write_usd_per_mtok = 3.125      # optional: prompt tokens written to it
//! #                                       # (Anthropic; default: the input price)
//!
//! [tools]
//! allow = ["fs.read", "fs.list", "fs.search", "fs.write", "fs.edit", "fs.append",
//!          "exec.run", "web.fetch", "user.ask", "task.set", "task.update"]
//! wasm = ["tools/count.toml"]            # WASM tool manifests (see `tools::wasm`)
//!
//! [[mcp]]                                 # MCP servers (see `tools::mcp`); tools are
//! name = "everything"                     # named mcp.<name>.<tool>
//! command = "npx"                         # stdio, or `url = "http://…/mcp"`
//! args = ["-y", "@modelcontextprotocol/server-everything"]
//!
//! [[policy]]                              # first match wins; defaults after the rules:
//! tool = "fs.write"                       #   read allow, write/exec/network ask,
//! path = "notes/**"                       #   destructive deny
//! action = "allow"                        # allow | ask | deny
//!
//! [[policy]]
//! tool = "exec.run"
//! command = "cargo test*"                 # exec.run: a glob over the command line
//! action = "allow"                        # (web.fetch: `url = "https://docs.rs/**"`)
//! idempotent = true                       # safe to re-run after a crash
//!
//! [exec]                                  # exec.run's sandbox and limits (all optional;
//! timeout_secs = 120                      #   see `tools::exec`)
//! network = false
//!
//! [web]                                   # web.fetch (required with it; see `tools::web`)
//! allow = ["docs.rs", "127.0.0.1:8080"]
//!
//! [budgets]                               # all optional
//! max_steps = 50
//! max_tokens = 200000
//! max_cost_usd = 1.0
//! max_wall_secs = 3600
//! loop_limit = 3                          # same tool call this many times in a row: stop
//! soft_max_tokens = 100000                # soft_max_{steps,tokens,cost_usd,wall_secs}:
//!                                         # park for a human (escalation), do not fail
//!
//! [[models]]                              # more models, and [routing] between them
//! name = "backup"                         # (see `crate::routing`)
//! provider = "openai"
//! model = "gpt-4o-mini"
//!
//! [[autonomy]]                            # trust levels (see `crate::autonomy`)
//! tool = "exec.run"
//! command = "cargo test*"
//! level = "semi"                          # supervised | semi | autonomous
//! promote_after = 20
//!
//! [context]                               # all optional (see `crate::context`)
//! window_tokens = 128000                  # the model's context size; known models have a
//!                                         # default, other HTTP models must give it
//! reserve_tokens = 32000                  # kept free for the reply and a summary
//! inline_result_tokens = 8192             # a longer tool result becomes an artifact
//! compaction = "summarize"                # summarize | drop_oldest
//! compaction_model = "gpt-4o-mini"        # who writes summaries (default: the model)
//! ```
//!
//! Keys of `[model]` that retrace does not read are the provider's parameters and go to it
//! as they are. A misspelt key of retrace's own (`cassete`, `api_key_evn`) or of a well-known
//! parameter (`temprature`) would then go to the server silently, so a key that is neither
//! [`MODEL_KEYS`] nor [`KNOWN_PARAMS`] but within a small edit distance of one is refused
//! with its line and column and a "did you mean". A parameter that really has such a name
//! goes under `[model.params]`, whose keys are passed through unchecked.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Tools the runtime knows by name (built-ins; WASM and MCP tools come later).
pub const BUILTIN_TOOLS: [&str; 11] = [
    "fs.list",
    "fs.read",
    "fs.search",
    "fs.write",
    "fs.edit",
    "fs.append",
    "exec.run",
    "web.fetch",
    "user.ask",
    "task.set",
    "task.update",
];

/// The keys of `[model]` that retrace reads itself.
pub const MODEL_KEYS: [&str; 8] = [
    "provider",
    "name",
    "cassette",
    "base_url",
    "api_key_env",
    "timeout_secs",
    "price",
    "params",
];

/// Well-known parameters of OpenAI-compatible and Anthropic chat APIs (and of common
/// OpenAI-compatible servers). Passed through like any other parameter; listed so that a
/// near miss of one is caught and a parameter close to another one is not mistaken for a
/// typo.
pub const KNOWN_PARAMS: [&str; 28] = [
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "min_tokens",
    "top_p",
    "top_k",
    "top_a",
    "min_p",
    "typical_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "stop",
    "stop_sequences",
    "seed",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "metadata",
    "reasoning_effort",
    "service_tier",
    "thinking",
    "store",
];

/// The word of `dictionary` that `word` is most likely a misspelling of: within a
/// Damerau-Levenshtein distance of 1 (words of 4 to 7 characters) or 2 (longer ones),
/// ignoring case and `-` for `_`. `None` when `word` is in `dictionary` or near none of it
/// (words under 4 characters are never taken for misspellings).
pub fn did_you_mean<'a>(
    word: &str,
    dictionary: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = match len {
        0..4 => return None,
        4..8 => 1,
        _ => 2,
    };
    let fold = |w: &str| w.to_lowercase().replace('-', "_");
    let folded = fold(word);
    let mut best: Option<(usize, &str)> = None;
    for candidate in dictionary {
        if candidate == word {
            return None;
        }
        let distance = strsim::damerau_levenshtein(&folded, &fold(candidate));
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, w)| w)
}

/// A serde message naming an unknown field or variant with the ones expected ("unknown
/// field `max_stepz`, expected one of `max_steps`, ...") with "; did you mean `max_steps`?"
/// added when one of those is close; any other message as it is.
fn with_suggestion(message: String) -> String {
    if !(message.starts_with("unknown field `") || message.starts_with("unknown variant `")) {
        return message;
    }
    // backquoted words: the unknown one first, then the expected ones
    let mut quoted = message.split('`').skip(1).step_by(2);
    let Some(word) = quoted.next() else {
        return message;
    };
    match did_you_mean(word, quoted) {
        Some(near) => format!("{message}; did you mean `{near}`?"),
        None => message,
    }
}

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
    /// The context engine's settings, resolved ([`crate::context::Context::resolve`]).
    /// `None` only in specs recorded before it existed: their runs keep the message
    /// window they had, with no token budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::Context>,
    /// `exec.run`'s settings (present when the agent has `exec.run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<crate::tools::exec::ExecSettings>,
    /// `web.fetch`'s settings (present when the agent has `web.fetch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<crate::tools::web::WebSettings>,
    /// Where a run imported from another agent's recording (`retrace import-run`) came
    /// from; `None` for runs retrace ran (absent from the canonical form, so specs recorded
    /// before it keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
    /// Sub-agents `agent.delegate` starts child runs of (`[[agents]]`, see
    /// [`crate::delegate`]), each with the spec its children start from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<crate::delegate::SubAgent>,
    /// `[delegation]`: children at once, levels below (`None`: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<crate::delegate::Delegation>,
    /// Skills `skill.load` gives (`skills = [dirs]`, see [`crate::skills`]), their text
    /// and BLAKE3 recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<crate::skills::Skill>,
    /// Hooks around tool calls (`[[hooks]]`, see [`crate::hooks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::Hook>,
    /// Models beside `[model]` (`[[models]]`, see [`crate::routing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::routing::NamedModel>,
    /// How model calls are routed between `[model]` and `models` (`None`: every call goes
    /// to `[model]` and records no `model_routed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::routing::Routing>,
    /// Trust levels (`[[autonomy]]`, see [`crate::autonomy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub autonomy: Vec<crate::autonomy::TrustRule>,
}

impl Spec {
    /// The settings of the model named `name` in routing (`main`: `[model]`).
    pub fn model_named(&self, name: &str) -> Option<&Model> {
        if name == crate::routing::MAIN {
            return Some(&self.model);
        }
        self.models
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.model)
    }
}

/// The origin of an imported run, recorded in its spec (so it is part of the run's hash
/// chain).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    /// The recording's format (`claude-code`, `codex`, `otel-genai`, `mini-swe-agent`).
    pub format: String,
    /// The files read, in order.
    pub files: Vec<ImportedFile>,
    /// What the source said about the whole session (header, settings, lines before the
    /// task): a blob holding a JSON array.
    pub session: retrace_events::BlobId,
    /// What the source said of each event beyond its fields: a blob holding a JSON object
    /// from seq (decimal) to the blob of that event's extra (a JSON array of the source's
    /// lines or fields).
    pub extras: retrace_events::BlobId,
    /// The import's report: lines read, kept as extras and skipped by type.
    pub report: serde_json::Value,
    /// The source agent's tools the run calls (sorted by name), as its requests offered
    /// them: the agent built from this spec knows them and offers them to a model, so an
    /// eval can serve their calls from the recording, or let a real model call them. A
    /// source that names tools without their schemas gets `{"type": "object"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<retrace_events::chat::ToolDef>,
}

/// A file an imported run was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedFile {
    /// Its name as given to the import.
    pub name: String,
    /// BLAKE3 of its bytes (hex).
    pub blake3: String,
    /// Its size in bytes.
    pub bytes: u64,
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

impl Model {
    /// The longest reply the parameters allow, in tokens ([`max_reply`]).
    pub fn max_reply(&self) -> Option<u64> {
        max_reply(&self.params)
    }
}

/// The longest reply `params` allow, in tokens: `max_tokens`, else `max_completion_tokens`
/// (OpenAI's newer name), if given as a number.
pub fn max_reply(params: &BTreeMap<String, serde_json::Value>) -> Option<u64> {
    ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|key| params.get(*key).and_then(serde_json::Value::as_u64))
}

/// US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens not served from the prompt cache.
    pub input_usd_per_mtok: f64,
    /// Per million output (completion) tokens.
    pub output_usd_per_mtok: f64,
    /// Per million prompt tokens read from the provider's prompt cache (e.g. a tenth of
    /// the input price at Anthropic, a half or a quarter at OpenAI); absent: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_usd_per_mtok: Option<f64>,
    /// Per million prompt tokens written to the provider's prompt cache (Anthropic:
    /// 1.25 × the input price for the five-minute cache); absent: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_usd_per_mtok: Option<f64>,
}

impl Price {
    /// The cost of the tokens of one reply, in millionths of a dollar: prompt tokens read
    /// from or written to the prompt cache at their prices (the input price when the spec
    /// gives none), the other prompt tokens at the input price, output at the output price.
    pub fn micro_usd(&self, usage: &retrace_events::reply::TokenUsage) -> u64 {
        let input = self.input_usd_per_mtok;
        let read = usage.cache_read_tokens;
        let write = usage.cache_write_tokens;
        // a provider reporting more cached than prompt tokens: the cached counts stand
        let uncached = usage
            .input_tokens
            .saturating_sub(read)
            .saturating_sub(write);
        // tokens × $/Mtok is exactly µ$; f64 is exact far beyond any real token count
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let cost = (uncached as f64 * input
            + read as f64 * self.cache_read_usd_per_mtok.unwrap_or(input)
            + write as f64 * self.cache_write_usd_per_mtok.unwrap_or(input)
            + usage.output_tokens as f64 * self.output_usd_per_mtok)
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

/// One policy rule: a tool (exact name or `*`), an optional glob over the call's subject
/// (`path`, or `command` for `exec.run`, or `url` for `web.fetch`), an action, and
/// optionally whether the calls it allows are safe to re-run after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Tool name, or `*` for any.
    pub tool: String,
    /// Glob over the call's `path` argument, relative to the workspace.
    pub path: Option<String>,
    /// Glob over an `exec.run` call's `command` (`*` matches any text, `/` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Glob over a `web.fetch` call's `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The decision.
    pub action: Action,
    /// Overrides the tool's own declaration for the calls this rule matches: `true` says
    /// re-running such a call after a crash is safe (e.g. `exec.run` of `cargo test`), so
    /// it is re-run instead of stopping the run as "outcome unknown".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
}

impl Rule {
    /// The rule's glob over the call's subject, if it has one (at most one is allowed).
    pub fn glob(&self) -> Option<&str> {
        self.path
            .as_deref()
            .or(self.command.as_deref())
            .or(self.url.as_deref())
    }
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
    /// Soft limit: model replies. Passing a soft limit parks the run for a human (an
    /// escalation) instead of failing it; each approval lets it go on to the next multiple
    /// of the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_steps: Option<u64>,
    /// Soft limit: input + output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_tokens: Option<u64>,
    /// Soft limit: cost in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_cost_usd: Option<f64>,
    /// Soft limit: wall time from the first event, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_wall_secs: Option<u64>,
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
    /// A serde "unknown field/variant" message gains a "did you mean" when a name it
    /// expects is close to the one given.
    pub fn at(file: &Path, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: with_suggestion(message),
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
    budgets: Option<Spanned<Budgets>>,
    #[serde(default)]
    mcp: Vec<Spanned<crate::tools::mcp::Server>>,
    context: Option<Spanned<crate::context::RawContext>>,
    exec: Option<Spanned<crate::tools::exec::ExecSettings>>,
    web: Option<Spanned<crate::tools::web::WebSettings>>,
    #[serde(default)]
    agents: Vec<Spanned<RawAgent>>,
    delegation: Option<Spanned<crate::delegate::Delegation>>,
    #[serde(default)]
    skills: Vec<Spanned<String>>,
    #[serde(default)]
    hooks: Vec<Spanned<crate::hooks::Hook>>,
    #[serde(default)]
    models: Vec<Spanned<toml::Table>>,
    routing: Option<Spanned<crate::routing::Routing>>,
    #[serde(default)]
    autonomy: Vec<Spanned<crate::autonomy::TrustRule>>,
}

/// The keys written `[[KEY]]` (arrays of tables).
const ARRAYS_OF_TABLES: [&str; 6] = ["policy", "mcp", "agents", "hooks", "models", "autonomy"];

/// Refuse `[autonomy]` (and the like) written as one table where the spec takes an array
/// of them (`[[autonomy]]`), at its position: the generic "expected a sequence" says
/// neither. A text that does not parse is left to the full parse to report.
fn arrays_of_tables(
    text: &str,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<(), Error> {
    let Ok(table) = toml::from_str::<BTreeMap<String, Spanned<toml::Value>>>(text) else {
        return Ok(());
    };
    for key in ARRAYS_OF_TABLES {
        if let Some(value) = table.get(key)
            && value.get_ref().is_table()
        {
            return Err(at(
                Some(value.span()),
                format!("[{key}] is a list: write each entry as [[{key}]]"),
            ));
        }
    }
    Ok(())
}

/// A `[[agents]]` entry as written: a spec file of its own, or what it changes of its
/// parent's ([`crate::delegate::Inline`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    description: String,
    spec: Option<String>,
    system: Option<String>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    model: Option<String>,
    cassette: Option<String>,
    budgets: Option<Budgets>,
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
    /// `[model.params]`: passed through unchecked.
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    /// Every other key: passed through once checked for near misses ([`model_keys`]).
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

// Only the keys of `[model]`, with where they are (and where the table is).
#[derive(Deserialize)]
#[allow(
    clippy::zero_sized_map_values,
    reason = "a TOML table's keys; its values are skipped, not read"
)]
struct ModelKeys {
    model: Option<Spanned<BTreeMap<Spanned<String>, serde::de::IgnoredAny>>>,
}

/// Refuse a key of `[model]` that is a near miss of one of retrace's or of a well-known
/// parameter ([`did_you_mean`]) at the key's position. Returns the span of the `[model]`
/// table, if the text has one. A text that does not parse is left to the full parse to
/// report.
fn model_keys(
    text: &str,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Option<Range<usize>>, Error> {
    let Ok(ModelKeys { model: Some(model) }) = toml::from_str::<ModelKeys>(text) else {
        return Ok(None);
    };
    let table = model.span();
    for key in model.into_inner().into_keys() {
        let name = key.get_ref();
        if MODEL_KEYS.contains(&name.as_str()) || KNOWN_PARAMS.contains(&name.as_str()) {
            continue;
        }
        let dictionary = MODEL_KEYS.iter().chain(KNOWN_PARAMS.iter()).copied();
        if let Some(near) = did_you_mean(name, dictionary) {
            let what = if MODEL_KEYS.contains(&near) {
                "a key of retrace's"
            } else {
                "a well-known provider parameter"
            };
            return Err(at(
                Some(key.span()),
                format!(
                    "unknown key `{name}` in [model]; did you mean `{near}` ({what})? Other \
                     keys are passed to the provider as parameters; if `{name}` really is \
                     one, put it under [model.params], which is passed through unchecked"
                ),
            ));
        }
    }
    Ok(Some(table))
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
    command: Option<String>,
    url: Option<String>,
    action: Action,
    idempotent: Option<bool>,
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
        let model_span = model_keys(text, &at)?;
        arrays_of_tables(text, &at)?;
        let raw: RawSpec =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        // Every path the run records is absolute, so a resume from any directory (or a
        // daemon started elsewhere) acts where the run started, never relative to itself.
        let base = absolute_dir_of(path);
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
        let policy = policy_rules(raw.policy, &known, &at)?;
        let (exec, web) = tool_settings(raw.exec, raw.web, &tools, &base, &at)?;
        let model = model(raw.model, "[model]", &base, model_span.clone(), &at)?;
        let context = context(
            raw.context,
            model.provider,
            &model.name,
            model.max_reply(),
            model_span.clone(),
            &at,
        )?;
        let models = named_models(raw.models, &base, &at)?;
        let routing = routing(raw.routing, &models, &at)?;
        let autonomy = autonomy(raw.autonomy, &known, &at)?;
        let budgets = budgets(raw.budgets, &at)?;
        Self {
            name: raw.name,
            system: raw.system,
            workspace: resolved(&base.join(raw.workspace.as_deref().unwrap_or("."))),
            model,
            tools,
            wasm,
            mcp,
            policy,
            budgets,
            context: Some(context),
            exec,
            web,
            imported: None,
            agents: Vec::new(),
            delegation: None,
            skills: Vec::new(),
            hooks: Vec::new(),
            models,
            routing,
            autonomy,
        }
        .with_team(
            raw.agents,
            raw.delegation,
            raw.skills,
            raw.hooks,
            &base,
            &at,
        )
    }

    /// The spec with its sub-agents, delegation settings, skills and hooks, checked
    /// (inline sub-agents inherit what the spec has so far, hooks and skills included).
    fn with_team(
        mut self,
        agents: Vec<Spanned<RawAgent>>,
        delegation: Option<Spanned<crate::delegate::Delegation>>,
        skills: Vec<Spanned<String>>,
        hooks: Vec<Spanned<crate::hooks::Hook>>,
        base: &Path,
        at: &dyn Fn(Option<Range<usize>>, String) -> Error,
    ) -> Result<Self, Error> {
        for dir in skills {
            let span = dir.span();
            let found = crate::skills::load_dir(&resolved(&base.join(dir.get_ref())))
                .map_err(|why| at(Some(span.clone()), why))?;
            for skill in found {
                name_shown_to_the_model("skill", &skill.name).map_err(|why| {
                    at(
                        Some(span.clone()),
                        format!("{}: {why}", skill.path.display()),
                    )
                })?;
                if self.skills.iter().any(|s| s.name == skill.name) {
                    return Err(at(
                        Some(span),
                        format!("two skills are named `{}`", skill.name),
                    ));
                }
                self.skills.push(skill);
            }
        }
        for hook in hooks {
            let span = hook.span();
            let mut hook = hook.into_inner();
            hook.check().map_err(|why| at(Some(span.clone()), why))?;
            if self.hooks.iter().any(|h| h.name == hook.name) {
                return Err(at(
                    Some(span),
                    format!("two hooks are named `{}`", hook.name),
                ));
            }
            hook.dir = base.to_path_buf();
            self.hooks.push(hook);
        }
        if let Some(given) = delegation {
            let span = given.span();
            let given = given.into_inner();
            given.check().map_err(|why| at(Some(span), why))?;
            self.delegation = Some(given);
        }
        let mut subs: Vec<crate::delegate::SubAgent> = Vec::new();
        for agent in agents {
            let span = agent.span();
            let raw = agent.into_inner();
            let refuse = |why: String| at(Some(span.clone()), why);
            if subs.iter().any(|a| a.name == raw.name) {
                return Err(refuse(format!("two sub-agents are named `{}`", raw.name)));
            }
            name_shown_to_the_model("sub-agent", &raw.name).map_err(&refuse)?;
            if raw.name.trim().is_empty() || raw.description.trim().is_empty() {
                return Err(refuse(
                    "a sub-agent needs a `name` and a `description` (what the model is told of it)"
                        .into(),
                ));
            }
            let spec = self.sub_agent_spec(&raw, base, at, &refuse)?;
            subs.push(crate::delegate::SubAgent {
                name: raw.name,
                description: raw.description,
                spec: Box::new(spec),
            });
        }
        self.agents = subs;
        Ok(self)
    }

    /// The spec a `[[agents]]` entry's children start from: its own file's, or the
    /// parent's with what the entry changes.
    fn sub_agent_spec(
        &self,
        raw: &RawAgent,
        base: &Path,
        at: &dyn Fn(Option<Range<usize>>, String) -> Error,
        refuse: &dyn Fn(String) -> Error,
    ) -> Result<Self, Error> {
        Ok(match (raw.spec.clone(), raw.system.clone()) {
            (Some(file), None)
                if raw.tools.is_empty()
                    && raw.model.is_none()
                    && raw.cassette.is_none()
                    && raw.budgets.is_none() =>
            {
                let path = resolved(&base.join(&file));
                let _loading = Loading::enter(&path).map_err(|chain| {
                    refuse(format!(
                        "sub-agent `{}`: spec {} refers back to itself through its sub-agents ({chain}); a sub-agent's spec may not declare its ancestors",
                        raw.name,
                        path.display()
                    ))
                })?;
                // the file's own errors name it; which sub-agent led there is said here
                Self::load(&path).map_err(|e| {
                    refuse(format!(
                        "sub-agent `{}`: its spec does not load: {e}",
                        raw.name
                    ))
                })?
            }
            (Some(_), _) => {
                return Err(refuse(format!(
                    "sub-agent `{}`: give either `spec = \"FILE\"` or the inline keys (system, tools, model, cassette, budgets), not both",
                    raw.name
                )));
            }
            (None, None) => {
                return Err(refuse(format!(
                    "sub-agent `{}` needs `system` (its system prompt) or `spec = \"FILE\"`",
                    raw.name
                )));
            }
            (None, Some(system)) => {
                let mut tools = Vec::new();
                for tool in raw.tools.clone() {
                    if !BUILTIN_TOOLS.contains(&tool.get_ref().as_str()) {
                        return Err(at(
                            Some(tool.span()),
                            format!(
                                "sub-agent `{}`: unknown tool `{}`; known tools: {}",
                                raw.name,
                                tool.get_ref(),
                                BUILTIN_TOOLS.join(", ")
                            ),
                        ));
                    }
                    tools.push(tool.into_inner());
                }
                tools.sort();
                tools.dedup();
                if raw.cassette.is_some() && self.model.provider != Provider::Scripted {
                    return Err(refuse(format!(
                        "sub-agent `{}`: `cassette` is for the scripted provider",
                        raw.name
                    )));
                }
                let mut spec = crate::delegate::inline_spec(
                    self,
                    crate::delegate::Inline {
                        name: raw.name.clone(),
                        system,
                        tools,
                        model: raw.model.clone(),
                        cassette: raw.cassette.as_ref().map(|c| resolved(&base.join(c))),
                        budgets: raw.budgets.clone(),
                    },
                );
                if spec.exec.is_none() && spec.tools.iter().any(|t| t == crate::tools::exec::TOOL) {
                    spec.exec = Some(crate::tools::exec::ExecSettings::default());
                }
                if spec.web.is_none() && spec.tools.iter().any(|t| t == crate::tools::web::TOOL) {
                    return Err(refuse(format!(
                        "sub-agent `{}` has `web.fetch` but the spec has no [web] allow list",
                        raw.name
                    )));
                }
                spec
            }
        })
    }

    /// The paths this spec holds that are relative, by what they are (`workspace`,
    /// `cassette`, an MCP server's `cwd`, a WASM tool's `module`): none for a spec loaded by
    /// [`Spec::load`]. A relative path in a recorded spec (from an older retrace, or a spec
    /// sent as JSON) would be taken relative to whoever resumes the run, so it is refused.
    pub fn relative_paths(&self) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        let mut check = |what: String, path: &Path| {
            if !path.is_absolute() {
                found.push((what, path.to_path_buf()));
            }
        };
        check("workspace".into(), &self.workspace);
        if let Some(cassette) = &self.model.cassette {
            check("[model] cassette".into(), cassette);
        }
        for server in &self.mcp {
            if let Some(cwd) = &server.cwd {
                check(format!("[[mcp]] {} cwd", server.name), cwd);
            }
        }
        for tool in &self.wasm {
            check(format!("WASM tool {} module", tool.name), &tool.module);
        }
        found
    }

    /// The store directory this process holds, once [`guard_store`] named it: every
    /// [`crate::Runner`] (a new run, a resume, a daemon's pickup) refuses a spec that
    /// [`Spec::keeps_out_of`] refuses for it.
    pub fn guarded_store() -> Option<&'static Path> {
        GUARDED_STORE.get().map(PathBuf::as_path)
    }

    /// Refuse a spec whose tools could reach the store at `store` (a directory, which may not
    /// exist yet): a workspace or `[exec]` read or write path that holds the store, or lies
    /// inside it. An agent that can rewrite its own log or read the daemon's token is not
    /// confined by that log. The message names both paths and what to do.
    pub fn keeps_out_of(&self, store: &Path) -> Result<(), String> {
        let store = resolved(&std::path::absolute(store).unwrap_or_else(|_| store.to_owned()));
        // what a command may read counts too: the store holds the daemon's token
        let reachable =
            std::iter::once(("workspace", &self.workspace)).chain(self.exec.iter().flat_map(|e| {
                e.write
                    .iter()
                    .map(|p| ("[exec] write path", p))
                    .chain(e.read.iter().map(|p| ("[exec] read path", p)))
            }));
        if self
            .exec
            .as_ref()
            .is_some_and(|e| e.sandbox == retrace_sandbox::process::Mode::Kernel)
        {
            let readable = retrace_sandbox::process::SYSTEM_READ
                .iter()
                .chain(&["/etc"]);
            if let Some(root) = readable.map(Path::new).find(|root| store.starts_with(root)) {
                return Err(format!(
                    "the store {} is under {}, which every exec.run command may read (the \
                     daemon's token is in the store); keep the store elsewhere (--store DIR)",
                    store.display(),
                    root.display()
                ));
            }
        }
        for (what, path) in reachable {
            let path = resolved(path);
            if store.starts_with(&path) || path.starts_with(&store) {
                return Err(format!(
                    "the {what} {} and the store {} overlap, so the agent could rewrite its own \
                     log; keep the store outside (--store DIR) or give another workspace",
                    path.display(),
                    store.display()
                ));
            }
        }
        Ok(())
    }

    /// Canonical bytes (canonical JSON): what the run's `run_started` refers to.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        retrace_events::to_canonical_json(self).expect("a Spec always serialises")
    }
}

/// The model's parameters: the other keys of `[model]` and `[model.params]` (a key in
/// both is refused).
/// `[model]` (or a `[[models]]` entry, `what`) as written, checked.
fn model(
    raw: RawModel,
    what: &str,
    base: &Path,
    span: Option<Range<usize>>,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Model, Error> {
    let cassette = raw.cassette.map(|c| resolved(&base.join(c)));
    if raw.provider == Provider::Scripted && cassette.is_none() {
        return Err(at(
            span,
            format!("the scripted provider needs `cassette = \"FILE\"` in {what}"),
        ));
    }
    let params = params(raw.other, raw.params, span, at)?;
    Ok(Model {
        provider: raw.provider,
        name: raw.name,
        cassette,
        base_url: raw.base_url,
        api_key_env: raw.api_key_env,
        timeout_secs: raw.timeout_secs,
        price: raw.price,
        params,
    })
}

/// `[[models]]` as written: each a `name` for routing and, as `model`, the provider's model
/// name, then the keys of `[model]`.
fn named_models(
    raw: Vec<Spanned<toml::Table>>,
    base: &Path,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Vec<crate::routing::NamedModel>, Error> {
    let mut models: Vec<crate::routing::NamedModel> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let fail = |message: String| at(Some(span.clone()), message);
        let mut table = entry.into_inner();
        let Some(toml::Value::String(name)) = table.remove("name") else {
            return Err(fail(
                "[[models]] needs `name = \"…\"`: the name routing uses".into(),
            ));
        };
        name_shown_to_the_model("model", &name).map_err(&fail)?;
        if name == crate::routing::MAIN || models.iter().any(|m| m.name == name) {
            return Err(fail(if name == crate::routing::MAIN {
                "a model of [[models]] is named `main`, which is [model]'s name".to_owned()
            } else {
                format!("two models are named `{name}`")
            }));
        }
        let Some(provider_name) = table.remove("model") else {
            return Err(fail(format!(
                "[[models]] `{name}` needs `model = \"…\"`: the model as the provider knows it"
            )));
        };
        table.insert("name".into(), provider_name);
        for key in table.keys() {
            let dictionary = MODEL_KEYS.iter().chain(KNOWN_PARAMS.iter()).copied();
            if !MODEL_KEYS.contains(&key.as_str())
                && !KNOWN_PARAMS.contains(&key.as_str())
                && let Some(near) = did_you_mean(key, dictionary)
            {
                return Err(fail(format!(
                    "unknown key `{key}` in [[models]] `{name}`; did you mean `{near}`? Other \
                     keys are passed to the provider; a parameter that really has this name \
                     goes under `params`"
                )));
            }
        }
        let raw: RawModel = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| fail(format!("[[models]] `{name}`: {}", e.message())))?;
        let model = model(
            raw,
            &format!("[[models]] `{name}`"),
            base,
            Some(span.clone()),
            at,
        )?;
        models.push(crate::routing::NamedModel { name, model });
    }
    Ok(models)
}

/// `[routing]`, checked against the models; a spec with `[[models]]` and no `[routing]`
/// routes every call to `main` (recording it).
fn routing(
    raw: Option<Spanned<crate::routing::Routing>>,
    models: &[crate::routing::NamedModel],
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Option<crate::routing::Routing>, Error> {
    let (routing, span) = match raw {
        Some(r) => {
            let span = r.span();
            (r.into_inner(), Some(span))
        }
        None if models.is_empty() => return Ok(None),
        None => (crate::routing::Routing::default(), None),
    };
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    routing.check(&names).map_err(|why| at(span, why))?;
    Ok(Some(routing))
}

/// `[[autonomy]]`, checked: each names a known tool (or `*`, or a namespace).
fn autonomy(
    raw: Vec<Spanned<crate::autonomy::TrustRule>>,
    known: &dyn Fn(&str) -> bool,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Vec<crate::autonomy::TrustRule>, Error> {
    raw.into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let span = rule.span();
            let rule = rule.into_inner();
            let namespace = rule
                .tool
                .strip_suffix('*')
                .is_some_and(|p| p.ends_with('.'));
            if rule.tool != "*" && !namespace && !known(&rule.tool) {
                return Err(at(
                    Some(span),
                    format!("[[autonomy]] {i}: unknown tool `{}`", rule.tool),
                ));
            }
            rule.check(i).map_err(|why| at(Some(span), why))?;
            Ok(rule)
        })
        .collect()
}

/// `[budgets]`, checked: limits are positive, and a soft limit lies below its hard one.
fn budgets(
    raw: Option<Spanned<Budgets>>,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Budgets, Error> {
    let Some(raw) = raw else {
        return Ok(Budgets::default());
    };
    let span = raw.span();
    let b = raw.into_inner();
    let fail = |message: String| Err(at(Some(span.clone()), message));
    let whole = [
        ("soft_max_steps", b.soft_max_steps, "max_steps", b.max_steps),
        (
            "soft_max_tokens",
            b.soft_max_tokens,
            "max_tokens",
            b.max_tokens,
        ),
        (
            "soft_max_wall_secs",
            b.soft_max_wall_secs,
            "max_wall_secs",
            b.max_wall_secs,
        ),
    ];
    for (soft, limit, hard, hard_limit) in whole {
        match (limit, hard_limit) {
            (Some(0), _) => {
                return fail(format!(
                    "[budgets] {soft} must be at least 1 (leave it out for none)"
                ));
            }
            (Some(s), Some(h)) if s >= h => {
                return fail(format!(
                    "[budgets] {soft} = {s} is not below {hard} = {h}: it would never ask"
                ));
            }
            _ => {}
        }
    }
    if b.soft_max_cost_usd
        .is_some_and(|u| !u.is_finite() || u <= 0.0)
    {
        return fail("[budgets] soft_max_cost_usd must be a positive number of US dollars".into());
    }
    if let (Some(s), Some(h)) = (b.soft_max_cost_usd, b.max_cost_usd)
        && s >= h
    {
        return fail(format!(
            "[budgets] soft_max_cost_usd = {s} is not below max_cost_usd = {h}: it would never ask"
        ));
    }
    Ok(b)
}

fn params(
    mut params: BTreeMap<String, serde_json::Value>,
    listed: BTreeMap<String, serde_json::Value>,
    model_span: Option<Range<usize>>,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<BTreeMap<String, serde_json::Value>, Error> {
    for (key, value) in listed {
        if params.contains_key(&key) {
            return Err(at(
                model_span,
                format!(
                    "parameter `{key}` is given both in [model] and in [model.params]; keep one"
                ),
            ));
        }
        params.insert(key, value);
    }
    Ok(params)
}

/// The policy rules as written, checked: each names a known tool (or `*`), matches at most
/// one argument (the one its tool has), and has a glob that parses.
fn policy_rules(
    raw: Vec<RawRule>,
    known: &dyn Fn(&str) -> bool,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<Vec<Rule>, Error> {
    let mut policy = Vec::new();
    let mut rule_spans = Vec::new();
    for rule in raw {
        rule_spans.push(rule.tool.span());
        let name = rule.tool.get_ref();
        if name != "*" && !known(name) {
            return Err(at(
                Some(rule.tool.span()),
                format!("policy rule for unknown tool `{name}`"),
            ));
        }
        let subjects = [
            ("path", rule.path.is_some()),
            ("command", rule.command.is_some()),
            ("url", rule.url.is_some()),
        ];
        let given: Vec<&str> = subjects
            .iter()
            .filter(|(_, g)| *g)
            .map(|(k, _)| *k)
            .collect();
        if given.len() > 1 {
            return Err(at(
                Some(rule.tool.span()),
                format!(
                    "policy rule gives both `{}` and `{}`; a rule matches one argument",
                    given[0], given[1]
                ),
            ));
        }
        if let Some(key) = given.first()
            && name != "*"
            && !name.ends_with('*')
            && *key != retrace_events::reply::subject_key(name)
        {
            return Err(at(
                Some(rule.tool.span()),
                format!(
                    "policy rule for `{name}` matches `{key}`, which `{name}` does not have; use `{}`",
                    retrace_events::reply::subject_key(name)
                ),
            ));
        }
        if rule.idempotent.is_some() && rule.action == Action::Deny {
            return Err(at(
                Some(rule.tool.span()),
                "`idempotent` on a deny rule means nothing: the calls it matches never run".into(),
            ));
        }
        policy.push(Rule {
            tool: rule.tool.into_inner(),
            path: rule.path,
            command: rule.command,
            url: rule.url,
            action: rule.action,
            idempotent: rule.idempotent,
        });
    }
    if let Err(e) = crate::policy::Policy::new(&policy) {
        return Err(at(rule_spans.get(e.index).cloned(), e.to_string()));
    }
    Ok(policy)
}

static GUARDED_STORE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Name the store directory this process holds (the CLI and `retrace serve` do, when they
/// open it), so no run of this process gets tools that reach it ([`Spec::keeps_out_of`]).
/// The first call wins.
pub fn guard_store(dir: &Path) {
    let _ = GUARDED_STORE.set(dir.to_path_buf());
}

/// Refuse a sub-agent's or skill's `name` that is not 1 to 64 letters, digits, `.`, `_` or
/// `-`: the model reads it in a tool's description and names it in calls.
fn name_shown_to_the_model(what: &str, name: &str) -> Result<(), String> {
    let fits = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}`: use 1 to 64 letters, digits, `.`, `_` or `-` (the model names it)"
        ))
    }
}

thread_local! {
    /// The sub-agent spec files being loaded on this thread, outermost first.
    static LOADING: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A sub-agent spec file being loaded: refused if it is loading already (a cycle), taken
/// off the stack when dropped.
struct Loading;

impl Loading {
    /// Enter `path`; `Err` holds the chain of files that lead back to it.
    fn enter(path: &Path) -> Result<Self, String> {
        LOADING.with(|stack| {
            let mut stack = stack.borrow_mut();
            if stack.iter().any(|p| p == path) {
                let chain: Vec<String> = stack
                    .iter()
                    .chain(std::iter::once(&path.to_path_buf()))
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(chain.join(" → "));
            }
            stack.push(path.to_path_buf());
            Ok(Self)
        })
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        LOADING.with(|stack| stack.borrow_mut().pop());
    }
}

/// `[exec]` and `[web]`, checked against the tools the agent has: each is present exactly
/// when its tool is (`[exec]` defaults; `[web]` must list hosts).
#[allow(clippy::type_complexity, reason = "two settings, each optional")]
fn tool_settings(
    exec: Option<Spanned<crate::tools::exec::ExecSettings>>,
    web: Option<Spanned<crate::tools::web::WebSettings>>,
    tools: &[String],
    base: &Path,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<
    (
        Option<crate::tools::exec::ExecSettings>,
        Option<crate::tools::web::WebSettings>,
    ),
    Error,
> {
    let has = |tool: &str| tools.iter().any(|t| t == tool);
    let exec = match exec {
        Some(given) if !has("exec.run") => {
            return Err(at(
                Some(given.span()),
                "[exec] is given but the agent does not have `exec.run` (add it to [tools] allow)"
                    .into(),
            ));
        }
        Some(given) => {
            let span = given.span();
            Some(
                given
                    .into_inner()
                    .resolve(base)
                    .map_err(|why| at(Some(span), why))?,
            )
        }
        None => has("exec.run").then(crate::tools::exec::ExecSettings::default),
    };
    let web = match web {
        Some(given) if !has("web.fetch") => {
            return Err(at(
                Some(given.span()),
                "[web] is given but the agent does not have `web.fetch` (add it to [tools] allow)"
                    .into(),
            ));
        }
        Some(given) => {
            let span = given.span();
            let web = given.into_inner();
            web.check().map_err(|why| at(Some(span), why))?;
            Some(web)
        }
        None if has("web.fetch") => {
            return Err(at(
                None,
                "`web.fetch` needs the hosts it may fetch from: add `[web]` with `allow = [\"host\", …]`"
                    .into(),
            ));
        }
        None => None,
    };
    Ok((exec, web))
}

/// `[context]` resolved for the model (refused where it is, or at `[model]` when a default
/// is missing).
fn context(
    raw: Option<Spanned<crate::context::RawContext>>,
    provider: Provider,
    model: &str,
    max_reply: Option<u64>,
    model_span: Option<Range<usize>>,
    at: &dyn Fn(Option<Range<usize>>, String) -> Error,
) -> Result<crate::context::Context, Error> {
    let (context, span) = match raw {
        Some(context) => {
            let span = context.span();
            (context.into_inner(), Some(span))
        }
        None => (crate::context::RawContext::default(), model_span),
    };
    crate::context::Context::resolve(context, provider, model, max_reply)
        .map_err(|why| at(span, why))
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
            server.cwd = Some(resolved(
                &base.join(server.cwd.as_deref().unwrap_or(Path::new("."))),
            ));
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

/// The directory of the file `path`, absolute (against the current directory), without
/// `.` components.
fn absolute_dir_of(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // `absolute` fails only on an empty path or an unreadable current directory; the path
    // as given is then the best there is (and `relative_paths` reports it)
    resolved(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// `path` with its symlinks resolved when it exists (so the run records where it really
/// acts, and a link changed later cannot move it), else without `.` components.
pub(crate) fn resolved(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| normalised(path))
}

/// `path` with `.` and `..` taken out lexically (a leading `..` of a relative path stays).
pub(crate) fn normalised(path: &Path) -> PathBuf {
    let mut clean = PathBuf::new();
    for part in path.components() {
        // `a/..` is `.` as written; through a symlink it may not be, which `resolved` and
        // the executor's check against the real path catch
        if part == std::path::Component::ParentDir
            && clean
                .components()
                .next_back()
                .is_some_and(|c| matches!(c, std::path::Component::Normal(_)))
        {
            clean.pop();
        } else {
            clean.push(part);
        }
    }
    if clean.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        clean
    }
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
        assert_eq!(spec.workspace, PathBuf::from("/agents"));
        assert!(spec.relative_paths().is_empty());
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
    fn exec_and_web_settings_are_checked_where_they_are_written() {
        let with = |tools: &str, extra: &str| {
            GOOD.replace("[\"fs.write\", \"fs.read\"]", tools)
                .replace("[budgets]", &format!("{extra}\n[budgets]"))
        };
        let exec = r#"["fs.write", "exec.run"]"#;
        let cases = [
            (
                with(exec, "[exec]\ntimeout_secs = 0"),
                "timeout_secs = 0: give 1 to",
            ),
            (
                with(exec, "[exec]\nmax_processes = 99999999"),
                "max_processes = 99999999",
            ),
            (with(exec, "[exec]\ntimeout = 5"), "unknown field `timeout`"),
            (
                with(exec, "[exec]\nwrite = [\"/\"]"),
                "would let commands write anywhere",
            ),
            (
                with(exec, "[exec]\nread = [\"/no/such/dir\"]"),
                "does not exist",
            ),
            (
                with(exec, "[exec]\nsandbox = \"firejail\""),
                "unknown variant `firejail`",
            ),
            (with(exec, "[exec]\nenv = [\"A-B\"]"), "not a variable name"),
            (
                with(r#"["fs.read"]"#, "[exec]\ntimeout_secs = 5"),
                "does not have `exec.run`",
            ),
            (
                with(r#"["fs.read", "web.fetch"]"#, ""),
                "add `[web]` with `allow",
            ),
            (with(r#"["web.fetch"]"#, "[web]\nallow = []"), "allow"),
            (
                with(
                    exec,
                    "[[policy]]\ntool = \"exec.run\"\npath = \"x\"\naction = \"allow\"",
                ),
                "matches `path`, which `exec.run` does not have; use `command`",
            ),
            (
                with(
                    exec,
                    "[[policy]]\ntool = \"exec.run\"\ncommand = \"x\"\nurl = \"y\"\naction = \"allow\"",
                ),
                "gives both `command` and `url`",
            ),
            (
                with(
                    exec,
                    "[[policy]]\ntool = \"exec.run\"\naction = \"deny\"\nidempotent = true",
                ),
                "`idempotent` on a deny rule",
            ),
        ];
        for (text, message) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains(message), "{message}: {err}");
            assert!(err.line > 0, "{err}");
        }
        // exec.run alone gets the defaults; web.fetch with hosts parses
        let spec = parse(&with(exec, "")).unwrap();
        assert_eq!(spec.exec, Some(crate::tools::exec::ExecSettings::default()));
        let spec = parse(&with(r#"["web.fetch"]"#, "[web]\nallow = [\"docs.rs\"]")).unwrap();
        assert_eq!(spec.web.map(|w| w.allow), Some(vec!["docs.rs".to_owned()]));
    }

    #[test]
    fn a_store_within_reach_of_the_agent_is_refused() {
        let spec = parse(GOOD).unwrap();
        let inside = spec
            .keeps_out_of(Path::new("/agents/.retrace"))
            .unwrap_err();
        assert!(inside.contains("could rewrite its own log"), "{inside}");
        assert!(
            spec.keeps_out_of(Path::new("/")).is_err(),
            "a store holding the workspace"
        );
        spec.keeps_out_of(Path::new("/var/lib/retrace")).unwrap();
        // what every command may read holds no store either, once commands run
        spec.keeps_out_of(Path::new("/opt/app/.retrace")).unwrap();
        let exec = parse(&GOOD.replace("\"fs.read\"]", "\"exec.run\"]")).unwrap();
        let system = exec
            .keeps_out_of(Path::new("/opt/app/.retrace"))
            .unwrap_err();
        assert!(
            system.contains("under /opt, which every exec.run command may read"),
            "{system}"
        );
    }

    #[test]
    fn a_spec_given_by_a_relative_path_records_absolute_paths() {
        let spec = Spec::parse(Path::new("agents/demo.toml"), GOOD).unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(spec.workspace, here.join("agents"));
        assert_eq!(
            spec.model.cassette,
            Some(here.join("agents/demo.cassette.json"))
        );
        assert!(spec.relative_paths().is_empty());
        let bare = Spec::parse(Path::new("demo.toml"), GOOD).unwrap();
        assert_eq!(bare.workspace, here);
        // a recorded spec from before paths were made absolute is told apart
        let mut old = spec;
        old.workspace = PathBuf::from("approval/workspace");
        assert_eq!(
            old.relative_paths(),
            vec![("workspace".to_owned(), PathBuf::from("approval/workspace"))]
        );
    }

    #[test]
    fn the_scripted_provider_needs_a_cassette() {
        let err = parse(&GOOD.replace("cassette = \"demo.cassette.json\"\n", "")).unwrap_err();
        assert!(err.message.contains("cassette"), "{err}");
        // pointed at the [model] table, not at 1:1
        assert_eq!((err.line, err.column), (5, 1), "{err}");
    }

    const HTTP: &str = r#"name = "remote"
system = "You are careful."

[model]
provider = "openai"
name = "gpt-4o-mini"
base_url = "http://localhost:11434/v1"
api_key_env = "LOCAL_KEY"
temperature = 0.2
"#;

    #[test]
    fn near_misses_of_model_keys_are_refused_at_the_key_with_a_suggestion() {
        let cases = [
            // (text, line, column, suggestion)
            (
                GOOD.replace("cassette = ", "cassete = "),
                8,
                1,
                "`cassette`",
            ),
            (
                HTTP.replace("api_key_env = ", "api_key_evn = "),
                8,
                1,
                "`api_key_env`",
            ),
            (
                HTTP.replace("temperature = ", "temprature = "),
                9,
                1,
                "`temperature`",
            ),
            (
                HTTP.replace("temperature = ", "Temperature = "),
                9,
                1,
                "`temperature`",
            ),
            (format!("{HTTP}max-tokens = 100\n"), 10, 1, "`max_tokens`"),
            (
                HTTP.replace("base_url = ", "  base_ur = "),
                7,
                3,
                "`base_url`",
            ),
            (
                HTTP.replace("provider = ", "provder = "),
                5,
                1,
                "`provider`",
            ),
            (format!("{HTTP}timeout_sec = 30\n"), 10, 1, "`timeout_secs`"),
        ];
        for (text, line, column, suggestion) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{err}");
            assert!(
                err.message.contains(&format!("did you mean {suggestion}")),
                "{err}"
            );
            assert!(err.message.contains("[model.params]"), "{err}");
        }
    }

    #[test]
    fn provider_parameters_pass_through_and_model_params_are_unchecked() {
        let text = format!(
            "{HTTP}max_tokens = 512\ntop_p = 0.9\ntop_k = 40\nseed = 7\nstop = [\"END\"]\n\
             repetition_penalty = 1.1\nnum_ctx = 8192\nx = 1\n\
             [model.params]\ntemprature_scale = 2\ntemprature = 3\n"
        );
        let spec = parse(&text).unwrap();
        let keys: Vec<&str> = spec.model.params.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "max_tokens",
                "num_ctx",
                "repetition_penalty",
                "seed",
                "stop",
                "temperature",
                "temprature",
                "temprature_scale",
                "top_k",
                "top_p",
                "x"
            ]
        );
        assert_eq!(spec.model.api_key_env.as_deref(), Some("LOCAL_KEY"));
        // one parameter given twice is refused
        let twice = format!("{HTTP}[model.params]\ntemperature = 0.5\n");
        let err = parse(&twice).unwrap_err();
        assert!(
            err.message
                .contains("both in [model] and in [model.params]"),
            "{err}"
        );
    }

    #[test]
    fn did_you_mean_takes_close_words_only() {
        let words = ["cassette", "temperature", "top_p", "top_k", "name"];
        assert_eq!(did_you_mean("casette", words), Some("cassette"));
        assert_eq!(did_you_mean("tempreature", words), Some("temperature"));
        assert_eq!(did_you_mean("nmae", words), Some("name"));
        assert_eq!(did_you_mean("top_k", words), None);
        assert_eq!(did_you_mean("top", words), None);
        assert_eq!(did_you_mean("num_ctx", words), None);
        assert_eq!(did_you_mean("casino", words), None);
    }

    #[test]
    fn unknown_keys_elsewhere_in_the_spec_get_a_suggestion() {
        let err = parse(&GOOD.replace("system = ", "sytem = ")).unwrap_err();
        assert_eq!((err.line, err.column), (3, 1), "{err}");
        assert!(err.message.contains("unknown field `sytem`"), "{err}");
        assert!(err.message.ends_with("did you mean `system`?"), "{err}");
        let err = parse(&GOOD.replace("action = \"allow\"", "action = \"alow\"")).unwrap_err();
        assert!(err.message.ends_with("did you mean `allow`?"), "{err}");
        // nothing close: no suggestion
        let err = parse(&GOOD.replace("max_steps = 10", "colour = 10")).unwrap_err();
        assert!(!err.message.contains("did you mean"), "{err}");
    }
    #[test]
    fn cache_reads_and_writes_are_charged_at_their_own_prices() {
        use retrace_events::reply::TokenUsage;
        let priced = |extra: &str| {
            let text = GOOD.replace(
                "[tools]",
                &format!(
                    "[model.price]\ninput_usd_per_mtok = 3.0\noutput_usd_per_mtok = 15.0\n{extra}\n[tools]"
                ),
            );
            parse(&text).map(|spec| spec.model.price.expect("a price"))
        };
        // Anthropic's Sonnet prices: reads at a tenth, five-minute writes at 1.25 ×
        let price = priced("cache_read_usd_per_mtok = 0.3\ncache_write_usd_per_mtok = 3.75")
            .expect("parses");
        assert_eq!(price.cache_read_usd_per_mtok, Some(0.3));
        assert_eq!(price.cache_write_usd_per_mtok, Some(3.75));
        // 10,000 prompt tokens: 8,000 read, 1,500 written, 500 neither; 200 out
        let usage = TokenUsage {
            input_tokens: 10_000,
            output_tokens: 200,
            cache_read_tokens: 8_000,
            cache_write_tokens: 1_500,
            ..TokenUsage::default()
        };
        // 500 × 3 + 8000 × 0.3 + 1500 × 3.75 + 200 × 15 µ$
        assert_eq!(price.micro_usd(&usage), 1_500 + 2_400 + 5_625 + 3_000);
        // no cache prices: every prompt token at the input price, as before
        let plain = priced("").expect("parses");
        assert_eq!(plain.micro_usd(&usage), 30_000 + 3_000);
        // only a read price: writes at the input price
        let reads = priced("cache_read_usd_per_mtok = 0.3").expect("parses");
        assert_eq!(reads.micro_usd(&usage), 1_500 + 2_400 + 4_500 + 3_000);
        // usage without cached tokens costs what it always did
        let uncached = TokenUsage {
            input_tokens: 1_900,
            output_tokens: 23,
            ..TokenUsage::default()
        };
        assert_eq!(price.micro_usd(&uncached), 5_700 + 345);
        // a price without cache keys serialises as before; a misspelt key is refused
        assert_eq!(
            serde_json::to_string(&plain).expect("json"),
            r#"{"input_usd_per_mtok":3.0,"output_usd_per_mtok":15.0}"#
        );
        let err = priced("cache_reads_usd_per_mtok = 0.3").unwrap_err();
        assert!(
            err.message
                .contains("unknown field `cache_reads_usd_per_mtok`"),
            "{err}"
        );
    }
}
