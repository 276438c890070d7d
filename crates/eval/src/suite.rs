//! Eval suites: a TOML file of cases, each a recorded run replayed as a fork with today's
//! code and, optionally, another prompt, model or budget, then judged by expectations.
//!
//! ```toml
//! name = "tidy"                       # default: the file's stem
//! jobs = 4                            # cases run at once (default 4)
//!
//! [[case]]
//! name = "summarises the readme"
//! bundle = "runs/tidy.bundle"         # imported into the store first (relative to this file)
//! run = "160b9618"                    # run id or prefix (default: the bundle's first run)
//! fork_at = 0                         # share events 0..=fork_at with the recording (default 0)
//! unmatched_tools = "fail"            # a call the recording does not have: fail | live
//!
//! [case.override]                     # all optional
//! system = "You are terse."
//! provider = "scripted"               # scripted | openai | anthropic
//! model = "demo"
//! cassette = "replies.json"           # relative to this file
//! workspace = "workspace"             # relative to this file (a bundle from another
//!                                     # machine names that machine's directories)
//! base_url = "http://localhost:11434/v1"
//! params = { temperature = 0 }
//! budgets = { max_steps = 10 }
//!
//! [case.expect]                       # all optional
//! identical = true                    # every event as recorded, timing aside (default true)
//! outcome = "succeeded"               # default succeeded
//! output_contains = ["README"]
//! output_regex = "(?i)summary"
//! output_json = { "/words" = 86 }     # JSON pointer → value, in the output parsed as JSON
//! tools = ["fs.list", "fs.read"]      # the tool calls, in order
//! tool_set = ["fs.read"]              # the tools called, in any order and number
//! must_call = ["fs.write"]
//! must_not_call = ["fs.edit"]
//! no_denied_approvals = true
//! max_steps = 10
//! max_tokens = 5000
//! max_cost_usd = 0.01
//! ```
//!
//! Errors name the file, line and column.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use retrace_runtime::spec::{Budgets, Error, Provider, line_col};
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

/// Cases run at once unless the suite says otherwise.
pub const DEFAULT_JOBS: usize = 4;

/// A checked suite. Paths are absolute (resolved against the suite file's directory).
#[derive(Clone, Debug)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Cases run at once.
    pub jobs: usize,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its name (unique in the suite).
    pub name: String,
    /// 1-based line of its `[[case]]`, for reports.
    pub line: usize,
    /// A bundle to import first.
    pub bundle: Option<PathBuf>,
    /// The recorded run, as written (an id or prefix); `None`: the bundle's first run.
    pub run: Option<String>,
    /// Last event shared with the recording.
    pub fork_at: u64,
    /// What to do with a tool call the recording does not have.
    pub unmatched_tools: Unmatched,
    /// Changes to the recorded spec.
    pub overrides: Overrides,
    /// What must hold.
    pub expect: Expect,
}

/// What to do with a tool call that does not match the recording's next call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// The case fails (nothing runs).
    #[default]
    Fail,
    /// Run the tool for real.
    Live,
}

/// Changes to the recorded spec for a case.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// System prompt.
    pub system: Option<String>,
    /// Provider.
    pub provider: Option<Provider>,
    /// Model name.
    pub model: Option<String>,
    /// Cassette (scripted provider).
    pub cassette: Option<PathBuf>,
    /// The agent's workspace (a bundle recorded elsewhere names a directory of that
    /// machine).
    pub workspace: Option<PathBuf>,
    /// API base URL.
    pub base_url: Option<String>,
    /// Variable holding the API key.
    pub api_key_env: Option<String>,
    /// Model parameters, merged over the recorded ones.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Budgets, replacing the recorded ones.
    pub budgets: Option<Budgets>,
    /// The context budget (`[context]`, keys as in a spec), replacing the recorded one.
    pub context: Option<retrace_runtime::context::RawContext>,
}

impl Overrides {
    /// `spec` with these changes. A case that changes the model, the provider, the
    /// parameters or the context resolves the context budget again: from the case's
    /// `context` table if it has one, else from the new model's defaults when the model or
    /// provider changed (the recorded window belongs to the recorded model), else from the
    /// recorded budget (checked against the new parameters' `max_tokens`). `Err` says why
    /// that cannot be done (a model whose window is not known, with no
    /// `context.window_tokens` given; a reserve under `max_tokens`).
    pub fn apply(
        &self,
        spec: &retrace_runtime::spec::Spec,
    ) -> Result<retrace_runtime::spec::Spec, String> {
        let mut spec = spec.clone();
        if let Some(system) = &self.system {
            spec.system.clone_from(system);
        }
        if let Some(provider) = self.provider {
            spec.model.provider = provider;
        }
        if let Some(model) = &self.model {
            spec.model.name.clone_from(model);
        }
        if let Some(cassette) = &self.cassette {
            spec.model.cassette = Some(cassette.clone());
        }
        if let Some(workspace) = &self.workspace {
            spec.workspace.clone_from(workspace);
        }
        if let Some(url) = &self.base_url {
            spec.model.base_url = Some(url.clone());
        }
        if let Some(var) = &self.api_key_env {
            spec.model.api_key_env = Some(var.clone());
        }
        spec.model
            .params
            .extend(self.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(budgets) = &self.budgets {
            spec.budgets = budgets.clone();
        }
        let remodelled = self.provider.is_some()
            || self.model.is_some()
            || !self.params.is_empty()
            || self.context.is_some();
        if let (true, Some(recorded)) = (remodelled, &spec.context) {
            let raw = match &self.context {
                Some(raw) => raw.clone(),
                None if self.provider.is_some() || self.model.is_some() => {
                    retrace_runtime::context::RawContext::default()
                }
                None => recorded.into(),
            };
            let context = retrace_runtime::context::Context::resolve(
                raw,
                spec.model.provider,
                &spec.model.name,
                spec.model.max_reply(),
            )
            .map_err(|why| format!("the case's override: {why}"))?;
            spec.context = Some(context);
        }
        Ok(spec)
    }
}

/// What a case's run must show.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every event as recorded, timing aside.
    #[serde(default = "yes")]
    pub identical: bool,
    /// How the run ends.
    #[serde(default = "succeeded")]
    pub outcome: retrace_events::Outcome,
    /// Texts the final output contains.
    #[serde(default)]
    pub output_contains: Vec<String>,
    /// A regex the final output matches.
    #[serde(default, with = "serde_regex")]
    pub output_regex: Option<regex::Regex>,
    /// JSON pointer → value, in the final output parsed as JSON.
    #[serde(default)]
    pub output_json: BTreeMap<String, Value>,
    /// The tool calls, in order.
    pub tools: Option<Vec<String>>,
    /// The tools called, in any order and number.
    pub tool_set: Option<Vec<String>>,
    /// Tools that must be called.
    #[serde(default)]
    pub must_call: Vec<String>,
    /// Tools that must not be called.
    #[serde(default)]
    pub must_not_call: Vec<String>,
    /// No approval may be denied.
    #[serde(default)]
    pub no_denied_approvals: bool,
    /// At most this many model replies.
    pub max_steps: Option<u64>,
    /// At most this many tokens, in and out.
    pub max_tokens: Option<u64>,
    /// At most this cost.
    pub max_cost_usd: Option<f64>,
}

impl Default for Expect {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn yes() -> bool {
    true
}

fn succeeded() -> retrace_events::Outcome {
    retrace_events::Outcome::Succeeded
}

/// Regexes read as strings, checked when the suite is read.
mod serde_regex {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<regex::Regex>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        regex::Regex::new(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("output_regex: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    jobs: Option<Spanned<usize>>,
    #[serde(default, rename = "case")]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    bundle: Option<String>,
    run: Option<String>,
    #[serde(default)]
    fork_at: u64,
    #[serde(default)]
    unmatched_tools: Unmatched,
    #[serde(default, rename = "override")]
    overrides: Overrides,
    #[serde(default)]
    expect: Expect,
}

impl Suite {
    /// Read and check the suite at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::unreadable(path, "suite", &e))?;
        Self::parse(path, &text)
    }

    /// Check `text` as the suite file `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let at = |span: Option<Range<usize>>, message: String| Error::at(path, text, span, message);
        let raw: RawSuite =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let jobs = match raw.jobs {
            Some(jobs) if *jobs.get_ref() == 0 => {
                return Err(at(Some(jobs.span()), "jobs must be at least 1".into()));
            }
            Some(jobs) => jobs.into_inner(),
            None => DEFAULT_JOBS,
        };
        if raw.cases.is_empty() {
            return Err(at(
                None,
                "the suite has no cases: add [[case]] tables".into(),
            ));
        }
        let mut cases: Vec<Case> = Vec::new();
        for raw_case in raw.cases {
            let span = raw_case.span();
            let (line, _) = line_col(text, span.start);
            let case = raw_case.into_inner();
            if cases.iter().any(|c| c.name == case.name) {
                return Err(at(
                    Some(span),
                    format!("two cases are named `{}`", case.name),
                ));
            }
            if case.bundle.is_none() && case.run.is_none() {
                return Err(at(
                    Some(span),
                    format!(
                        "case `{}` names no recording: give `run = \"ID\"` or `bundle = \"FILE\"`",
                        case.name
                    ),
                ));
            }
            let mut overrides = case.overrides;
            overrides.cassette = overrides.cassette.map(|c| base.join(c));
            overrides.workspace = overrides.workspace.map(|w| base.join(w));
            cases.push(Case {
                name: case.name,
                line,
                bundle: case.bundle.map(|b| base.join(b)),
                run: case.run,
                fork_at: case.fork_at,
                unmatched_tools: case.unmatched_tools,
                overrides,
                expect: case.expect,
            });
        }
        let name = raw.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "suite".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Self {
            name,
            file: path.to_path_buf(),
            jobs,
            cases,
        })
    }
}

#[cfg(test)]
mod override_tests {
    use super::*;

    fn spec(model: &str, extra: &str) -> retrace_runtime::spec::Spec {
        let text = format!(
            "name = \"a\"\nsystem = \"s\"\n[model]\nprovider = \"openai\"\nname = \"{model}\"\n\
             {extra}"
        );
        retrace_runtime::spec::Spec::parse(Path::new("/tmp/agent.toml"), &text).expect("spec")
    }

    fn overrides(text: &str) -> Overrides {
        toml::from_str(text).expect("overrides")
    }

    #[test]
    fn a_new_model_gets_its_own_window_and_a_params_change_keeps_the_recorded_one() {
        let recorded = spec("gpt-4.1", "");
        let window = |s: &retrace_runtime::spec::Spec| s.context.as_ref().unwrap().window_tokens;
        assert_eq!(window(&recorded), 1_047_576);
        let gpt4 = overrides("model = \"gpt-4\"").apply(&recorded).unwrap();
        assert_eq!(window(&gpt4), 8_192);
        // an unknown model must say its window
        let e = overrides("model = \"local-llm\"")
            .apply(&recorded)
            .unwrap_err();
        assert!(e.contains("window_tokens"), "{e}");
        let local = overrides("model = \"local-llm\"\ncontext = { window_tokens = 16000 }")
            .apply(&recorded)
            .unwrap();
        assert_eq!(window(&local), 16_000);
        // only a parameter: the recorded budget stays, checked against the new max_tokens
        let custom = spec("test-model", "[context]\nwindow_tokens = 32000\n");
        let warmer = overrides("params = { temperature = 1 }")
            .apply(&custom)
            .unwrap();
        assert_eq!(warmer.context, custom.context);
        let e = overrides("params = { max_tokens = 20000 }")
            .apply(&custom)
            .unwrap_err();
        assert!(e.contains("reserve_tokens"), "{e}");
    }
}
