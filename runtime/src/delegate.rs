//! `agent.delegate`: sub-agents as durable child runs.
//!
//! A spec declares sub-agents (`[[agents]]`); the model hands one a brief with
//! `agent.delegate {"agent": NAME, "brief": TEXT}`, and the call starts a **child run**: its
//! own log, resumable, inspectable and forkable like any run. The child's id is derived from
//! the call ([`retrace_events::RunId::child`]) and recorded (`child_started`) in the same
//! append as the call's intent, before the child exists, so a resumed parent re-attaches to
//! the same child and never starts a second one. The child's final answer is the call's
//! result; its totals join the parent's (`child_finished`), so the parent's budgets cap the
//! whole tree.
//!
//! ```toml
//! [[agents]]
//! name = "reader"                           # what the model names in agent.delegate
//! description = "Reads files and reports."  # what the model is told about it
//! system = "You read files and report facts."
//! tools = ["fs.read", "fs.list"]            # built-ins (default: none)
//! cassette = "reader.cassette.json"         # scripted model: its own cassette
//! # model = "gpt-4o-mini"                   # another model of the same provider
//! # [agents.budgets]                        # its own limits (default: the parent's)
//! # max_steps = 10
//!
//! [[agents]]
//! name = "coder"
//! description = "Edits code."
//! spec = "coder.toml"                       # or a whole spec of its own
//!
//! [delegation]                              # optional
//! max_parallel = 4                          # children of one reply running at once
//! max_depth = 1                             # children may not delegate (2: they may, …)
//! ```
//!
//! An inline sub-agent runs in the parent's workspace with the parent's model settings,
//! policy, hooks, skills and `[exec]`/`[web]` settings, and only the built-ins it lists.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::{Budgets, Spec};
use crate::tools::{OnError, Tier, ToolInfo};

/// The tool's name.
pub const TOOL: &str = "agent.delegate";

/// Children of one reply run at once by default.
pub const MAX_PARALLEL: u32 = 4;

/// A sub-agent: what the model is told of it, and the spec its child runs follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubAgent {
    /// Its name (what `agent.delegate`'s `agent` names).
    pub name: String,
    /// What it is for (shown to the model).
    pub description: String,
    /// The spec a child run of it starts with (before [`child_spec`] caps its budgets).
    pub spec: Box<Spec>,
}

/// `[delegation]`: how children run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// Children of one reply's delegate calls run at once, at most (≥ 1).
    #[serde(default = "max_parallel")]
    pub max_parallel: u32,
    /// Levels of delegation below this agent: 1, its children may not delegate; 2, they
    /// may, and theirs may not; … (≥ 1, ≤ 4).
    #[serde(default = "max_depth")]
    pub max_depth: u32,
}

impl Default for Delegation {
    fn default() -> Self {
        Self {
            max_parallel: MAX_PARALLEL,
            max_depth: 1,
        }
    }
}

fn max_parallel() -> u32 {
    MAX_PARALLEL
}

fn max_depth() -> u32 {
    1
}

impl Delegation {
    /// Refuse settings that make no sense, saying which.
    pub fn check(&self) -> Result<(), String> {
        if self.max_parallel == 0 {
            return Err("[delegation] max_parallel must be at least 1".into());
        }
        if !(1..=4).contains(&self.max_depth) {
            return Err("[delegation] max_depth must be between 1 and 4".into());
        }
        Ok(())
    }
}

/// The delegate calls pending in `state` (requested, not answered: their children run, or
/// ran when the drive stopped), in the order they were requested: seq of the request, call
/// id, arguments.
pub fn pending(state: &retrace_replay::State) -> Vec<(u64, &str, retrace_events::BlobId)> {
    let mut calls: Vec<(u64, &str, retrace_events::BlobId)> = state
        .pending
        .iter()
        .filter_map(|(call_id, p)| match p {
            retrace_replay::Pending::Tool {
                seq, tool, args, ..
            } if tool == TOOL => Some((*seq, call_id.as_str(), *args)),
            _ => None,
        })
        .collect();
    calls.sort_unstable();
    calls
}

/// A delegate call's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brief {
    /// The sub-agent's name.
    pub agent: String,
    /// Its task.
    pub brief: String,
}

impl Brief {
    /// The call's arguments as a brief for one of `agents`, or what is wrong (told to the
    /// model as the call's error).
    pub fn parse<'a>(args: &Value, agents: &'a [SubAgent]) -> Result<(Self, &'a SubAgent), String> {
        let brief: Self = serde_json::from_value(args.clone()).map_err(|e| {
            format!("invalid arguments: {e}; give {{\"agent\": NAME, \"brief\": TEXT}}")
        })?;
        if brief.brief.trim().is_empty() {
            return Err(
                "invalid arguments: the brief is empty; say what the sub-agent should do".into(),
            );
        }
        let agent = agents
            .iter()
            .find(|a| a.name == brief.agent)
            .ok_or_else(|| {
                format!(
                    "there is no sub-agent `{}` (available: {})",
                    brief.agent,
                    agents
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        Ok((brief, agent))
    }
}

/// The tool as the model sees it: one entry per sub-agent in its description.
pub fn info(agents: &[SubAgent]) -> ToolInfo {
    let listed = crate::tools::listing(
        agents
            .iter()
            .map(|x| (x.name.as_str(), x.description.as_str())),
    );
    ToolInfo {
        name: TOOL.into(),
        description: format!(
            "Hand a self-contained task to a sub-agent, which works on it in a run of its own \
             and answers with its final report (the call's result). Several calls in one reply \
             run at once. Sub-agents:{listed}"
        ),
        schema: json!({
            "type": "object",
            "properties": {
                "agent": {"type": "string", "enum": agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                          "description": "which sub-agent"},
                "brief": {"type": "string", "description": "the task, with everything the sub-agent needs to know"}
            },
            "required": ["agent", "brief"],
            "additionalProperties": false
        }),
        // its effects are the child's, each under the child's policy
        tier: Tier::Read,
        // a re-run re-attaches to the same child (its id is derived from the call)
        idempotent: true,
        on_error: OnError::Continue,
        origin: "built-in".into(),
    }
}

/// The spec child run of `agent` starts with, delegated by a run of `parent` that has
/// spent `spent` (tokens, micro-USD) of its budgets and `elapsed_secs` of its wall time:
/// the sub-agent's budgets capped by what the parent has left (so a parent's budget caps
/// its tree), and the parent's sub-agents when `[delegation] max_depth` allows another
/// level.
pub fn child_spec(parent: &Spec, agent: &SubAgent, spent: (u64, u64), elapsed_secs: u64) -> Spec {
    let mut spec = (*agent.spec).clone();
    let (tokens, micro_usd) = spent;
    let cap = |own: Option<u64>, parent: Option<u64>, used: u64| match (own, parent) {
        (own, Some(max)) => Some(own.unwrap_or(u64::MAX).min(max.saturating_sub(used))),
        (own, None) => own,
    };
    let b = &parent.budgets;
    spec.budgets.max_tokens = cap(spec.budgets.max_tokens, b.max_tokens, tokens);
    spec.budgets.max_wall_secs = cap(spec.budgets.max_wall_secs, b.max_wall_secs, elapsed_secs);
    if let Some(max) = b.max_cost_usd {
        #[allow(
            clippy::cast_precision_loss,
            reason = "dollars, far below 2^52 micro-USD"
        )]
        let left = (max - micro_usd as f64 / 1e6).max(0.0);
        spec.budgets.max_cost_usd =
            Some(spec.budgets.max_cost_usd.map_or(left, |own| own.min(left)));
    }
    // the levels below the parent bound the whole tree, whatever a sub-agent's own spec says
    let delegation = parent.delegation.unwrap_or_default();
    if delegation.max_depth <= 1 {
        spec.agents.clear();
        spec.delegation = None;
        return spec;
    }
    let left = delegation.max_depth - 1;
    if spec.agents.is_empty() {
        spec.agents.clone_from(&parent.agents);
        spec.delegation = Some(Delegation {
            max_depth: left,
            ..delegation
        });
    } else {
        let own = spec.delegation.unwrap_or_default();
        spec.delegation = Some(Delegation {
            max_depth: own.max_depth.min(left),
            ..own
        });
    }
    spec
}

/// What an inline `[[agents]]` entry changes of its parent's spec.
#[derive(Clone, Debug, Default)]
pub struct Inline {
    /// Its name.
    pub name: String,
    /// Its system prompt.
    pub system: String,
    /// Its built-in tools (checked, sorted).
    pub tools: Vec<String>,
    /// Another model name of the parent's provider.
    pub model: Option<String>,
    /// Another cassette (scripted), resolved.
    pub cassette: Option<std::path::PathBuf>,
    /// Its own budgets (default: the parent's).
    pub budgets: Option<Budgets>,
}

/// The spec of an inline sub-agent of `parent`: the parent's, with `inline`'s name, system
/// prompt, tools, model and budgets, no WASM or MCP tools and no sub-agents of its own.
pub fn inline_spec(parent: &Spec, inline: Inline) -> Spec {
    let mut spec = parent.clone();
    spec.name = inline.name;
    spec.system = inline.system;
    spec.tools = inline.tools;
    spec.wasm.clear();
    spec.mcp.clear();
    spec.agents.clear();
    spec.delegation = None;
    spec.imported = None;
    if !spec.tools.iter().any(|t| t == crate::tools::exec::TOOL) {
        spec.exec = None;
    }
    if !spec.tools.iter().any(|t| t == crate::tools::web::TOOL) {
        spec.web = None;
    }
    if let Some(model) = inline.model {
        spec.model.name = model;
    }
    if let Some(cassette) = inline.cassette {
        spec.model.cassette = Some(cassette);
    }
    if let Some(budgets) = inline.budgets {
        spec.budgets = budgets;
    }
    spec
}
