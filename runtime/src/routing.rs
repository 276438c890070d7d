//! Model routing: which of the spec's models answers the next model call, and why.
//!
//! A spec names several models (`[model]` is `main`; `[[models]]` adds others) and routes
//! between them:
//!
//! ```toml
//! [[models]]
//! name = "strong"                  # the name routing uses (not `main`)
//! provider = "openai"              # then the keys of [model]: model name, base_url, price…
//! model = "gpt-5"                  # the model as the provider knows it
//! base_url = "http://127.0.0.1:8081/v1"
//!
//! [routing]
//! default = "main"                 # when no rule matches (default `main`)
//! fallback = ["strong"]            # asked in order when the chosen model fails
//! retries = 3                      # transient failures of one model before the next
//! cooldown_secs = 60               # a model that failed over is skipped this long
//!
//! [[routing.rules]]                # first match wins; every condition given must hold
//! use = "strong"
//! after_tool_error = true          # the last tool result was an error
//! # first_steps = 3                #   the run's first N model steps
//! # after_compaction = true        #   the context was compacted since the last reply
//! # after_cut = true               #   the last reply was cut at its token limit
//! # budget_fraction = 0.8          #   tokens or cost passed this fraction of a budget
//! ```
//!
//! [`choose`] is a function of the run's state (and the last reply, for `after_cut`): the
//! executor records its choice as `model_routed` before the call's `model_requested`, and
//! `retrace check` computes it again and compares. Fallback: within one step, a model that
//! failed permanently, or transiently `retries` times, hands the step to the next model of
//! its chain (the chosen model, then `fallback` in order); when the chain is spent the run
//! fails ([`gave_up`]). A model whose last call failed, less than `cooldown_secs` (recorded
//! time) before the step, is skipped for the rest of its chain, so a model that is down does
//! not cost every step its retries.

use serde::{Deserialize, Serialize};

use retrace_events::reply::ModelReply;
use retrace_replay::State;

use crate::spec::{Budgets, Model};

/// The name `[model]` has in routing.
pub const MAIN: &str = "main";

/// A model of `[[models]]`: its name in routing and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedModel {
    /// The name rules and fallbacks use.
    pub name: String,
    /// Its settings, as `[model]` gives them.
    pub model: Model,
}

/// `[routing]`, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The model when no rule matches.
    #[serde(default = "main")]
    pub default: String,
    /// Models asked in order after the chosen one fails.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Transient failures of one model in a step before the next model is asked.
    #[serde(default = "retries")]
    pub retries: u32,
    /// Seconds a model that failed is skipped at the start of later steps.
    #[serde(default = "cooldown")]
    pub cooldown_secs: u64,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            default: main(),
            fallback: Vec::new(),
            retries: retries(),
            cooldown_secs: cooldown(),
            rules: Vec::new(),
        }
    }
}

fn main() -> String {
    MAIN.to_owned()
}

const fn retries() -> u32 {
    3
}

const fn cooldown() -> u64 {
    60
}

/// A routing rule: the model to use when every condition given holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The model.
    #[serde(rename = "use")]
    pub model: String,
    /// The run's first N model steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_steps: Option<u64>,
    /// The last tool result was an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_tool_error: bool,
    /// The context was compacted since the last reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_compaction: bool,
    /// The last reply stopped at its token limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_cut: bool,
    /// Tokens or cost passed this fraction (0–1) of `max_tokens` or `max_cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_fraction: Option<f64>,
}

impl Rule {
    /// The conditions, in words (`the first 3 steps and after a tool error`).
    fn conditions(&self) -> String {
        let mut said = Vec::new();
        match self.first_steps {
            Some(1) => said.push("the first step".to_owned()),
            Some(n) => said.push(format!("the first {n} steps")),
            None => {}
        }
        if self.after_tool_error {
            said.push("after a tool error".to_owned());
        }
        if self.after_compaction {
            said.push("after a compaction".to_owned());
        }
        if self.after_cut {
            said.push("after a reply cut at its token limit".to_owned());
        }
        if let Some(f) = self.budget_fraction {
            said.push(format!("past {:.0}% of a budget", f * 100.0));
        }
        if said.is_empty() {
            "always".to_owned()
        } else {
            said.join(" and ")
        }
    }

    fn holds(&self, state: &State, budgets: &Budgets, cut: bool) -> bool {
        self.first_steps.is_none_or(|n| state.totals.steps < n)
            && (!self.after_tool_error || state.last_tool_error.is_some())
            && (!self.after_compaction || state.compacted_since_reply)
            && (!self.after_cut || cut)
            && self
                .budget_fraction
                .is_none_or(|f| budget_passed(state, budgets, f))
    }
}

/// Whether tokens or cost passed `fraction` of their budget.
fn budget_passed(state: &State, budgets: &Budgets, fraction: f64) -> bool {
    let past = |spent: u64, max: f64| {
        #[allow(clippy::cast_precision_loss, reason = "a fraction of a budget")]
        let spent = spent as f64;
        max > 0.0 && spent >= max * fraction
    };
    #[allow(clippy::cast_precision_loss, reason = "a fraction of a budget")]
    let tokens = budgets
        .max_tokens
        .is_some_and(|max| past(state.totals.tokens(), max as f64));
    let cost = budgets
        .max_cost_usd
        .is_some_and(|max| past(state.totals.cost_micro_usd, max * 1e6));
    tokens || cost
}

/// The model the next call goes to, and why (what `model_routed` records).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The model's name in routing.
    pub model: String,
    /// The rule that chose it; `None` for the default, a retry or a fallback.
    pub rule: Option<u32>,
    /// Why, in words.
    pub reason: String,
}

impl Routing {
    /// Check the names: every model routing names exists (`models` are the names of
    /// `[[models]]`), rules' fractions are in 0–1. An error says which.
    pub fn check(&self, models: &[&str]) -> Result<(), String> {
        let known = |name: &str| name == MAIN || models.contains(&name);
        let names = std::iter::once(("default", &self.default))
            .chain(self.fallback.iter().map(|m| ("fallback", m)))
            .chain(self.rules.iter().map(|r| ("a rule's `use`", &r.model)));
        for (what, name) in names {
            if !known(name) {
                return Err(format!(
                    "[routing] {what} names the model `{name}`, which is not declared; models: {}",
                    std::iter::once(MAIN)
                        .chain(models.iter().copied())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if self.retries == 0 {
            return Err("[routing] retries must be at least 1".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.first_steps == Some(0) {
                return Err(format!(
                    "[[routing.rules]] {i}: first_steps must be at least 1 (a rule for no step never matches)"
                ));
            }
            if rule
                .budget_fraction
                .is_some_and(|f| !(0.0..=1.0).contains(&f))
            {
                return Err(format!(
                    "[[routing.rules]] {i}: budget_fraction must be between 0 and 1"
                ));
            }
        }
        Ok(())
    }

    /// The chain a step walks: its first model, then `fallback` in order (each once).
    fn chain(&self, first: &str) -> Vec<String> {
        let mut chain = vec![first.to_owned()];
        for model in &self.fallback {
            if !chain.contains(model) {
                chain.push(model.clone());
            }
        }
        chain
    }

    /// Whether `model` has failed for good in the current step: permanently once, or
    /// transiently `retries` times.
    fn spent(&self, state: &State, model: &str) -> Option<String> {
        let failures: Vec<bool> = state
            .models
            .step_failures
            .iter()
            .filter(|f| f.model == model)
            .map(|f| f.transient)
            .collect();
        if failures.iter().any(|transient| !transient) {
            Some(format!("{model} failed and retrying will not help"))
        } else if failures.len() >= self.retries as usize {
            Some(format!(
                "{model} failed {} times in a row (transient)",
                failures.len()
            ))
        } else {
            None
        }
    }

    /// Whether `model` failed less than `cooldown_secs` before the state's last event and
    /// has not replied since.
    fn cooling(&self, state: &State, model: &str) -> bool {
        let Some(totals) = state.models.by_model.get(model) else {
            return false;
        };
        let Some(failed) = totals.last_failed_at else {
            return false;
        };
        let replied_since = totals.last_replied_at.is_some_and(|r| r >= failed);
        let now = state.timing.last_at.unix_ms();
        !replied_since && now.saturating_sub(failed.unix_ms()) < self.cooldown_secs * 1_000
    }
}

/// Which model answers the next model call of a run in `state` under `routing`; `None`
/// when every model of the step's chain has failed for good (see [`gave_up`]). `last_reply`
/// is the run's last model reply (for `after_cut`), `budgets` the run's (for
/// `budget_fraction`).
pub fn choose(
    routing: &Routing,
    budgets: &Budgets,
    state: &State,
    last_reply: Option<&ModelReply>,
) -> Option<Route> {
    let failures = &state.models.step_failures;
    // a step that failed goes on from the model it started with
    let (first, rule, mut reason) = if let Some(failure) = failures.first() {
        (failure.model.clone(), None, None)
    } else {
        let cut = last_reply.is_some_and(is_cut);
        match routing
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.holds(state, budgets, cut))
        {
            Some((i, r)) => (
                r.model.clone(),
                u32::try_from(i).ok(),
                Some(format!("rule {i}: {}", r.conditions())),
            ),
            None => (
                routing.default.clone(),
                None,
                Some("the default".to_owned()),
            ),
        }
    };
    let chain = routing.chain(&first);
    let mut passed: Vec<String> = Vec::new();
    for (i, model) in chain.iter().enumerate() {
        let last = i + 1 == chain.len();
        if let Some(why) = routing.spent(state, model) {
            passed.push(why);
            continue;
        }
        if failures.is_empty() && !last && routing.cooling(state, model) {
            passed.push(format!(
                "{model} failed less than {} s ago and is cooling down",
                routing.cooldown_secs
            ));
            continue;
        }
        let reason = match (passed.is_empty(), reason.take()) {
            (true, Some(chosen)) => chosen,
            (true, None) => {
                let failed = failures.iter().filter(|f| f.model == *model).count();
                format!("retry {} of {model} after a transient failure", failed + 1)
            }
            (false, _) => format!("fallback: {}", passed.join("; ")),
        };
        return Some(Route {
            model: model.clone(),
            rule: if i == 0 { rule } else { None },
            reason,
        });
    }
    None
}

/// Why the run gives up on its models: every model of the current step's chain failed for
/// good. `None` while one is left (or the step has not failed).
pub fn gave_up(routing: &Routing, state: &State) -> Option<String> {
    let first = &state.models.step_failures.first()?.model;
    let chain = routing.chain(first);
    let spent: Option<Vec<String>> = chain.iter().map(|m| routing.spent(state, m)).collect();
    spent.map(|why| format!("every model failed: {}", why.join("; ")))
}

/// The blob of the run's last model reply, if the conversation holds one: what a rule's
/// `after_cut` reads (a [`ModelReply`]).
pub fn last_reply(state: &State) -> Option<retrace_events::BlobId> {
    state
        .conversation
        .iter()
        .rev()
        .find(|m| m.role == retrace_replay::Role::Assistant)
        .map(|m| m.content)
}

/// Whether a reply stopped at its token limit (`length` at OpenAI, `max_tokens` at
/// Anthropic).
pub fn is_cut(reply: &ModelReply) -> bool {
    matches!(reply.stop_reason.as_deref(), Some("length" | "max_tokens"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use retrace_events::Timestamp;
    use retrace_replay::{ModelTotals, StepFailure};

    fn routing(toml_text: &str) -> Routing {
        toml::from_str(toml_text).unwrap()
    }

    fn fail(state: &mut State, model: &str, transient: bool) {
        state.models.step_failures.push(StepFailure {
            model: model.into(),
            transient,
        });
    }

    #[test]
    fn rules_choose_by_step_and_by_the_last_tool_error_then_the_default() {
        let r = routing(
            r#"
            fallback = ["backup"]
            [[rules]]
            use = "strong"
            after_tool_error = true
            [[rules]]
            use = "cheap"
            first_steps = 2
            "#,
        );
        let budgets = Budgets::default();
        let mut state = State::default();
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(
            (route.model.as_str(), route.rule),
            ("cheap", Some(1)),
            "{route:?}"
        );
        assert_eq!(route.reason, "rule 1: the first 2 steps");
        state.totals.steps = 2;
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!((route.model.as_str(), route.rule), ("main", None));
        assert_eq!(route.reason, "the default");
        state.last_tool_error = Some("exec.run".into());
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.reason, "rule 0: after a tool error");
        assert_eq!(route.model, "strong");
    }

    #[test]
    fn a_step_falls_back_after_retries_or_a_permanent_failure_and_gives_up_when_spent() {
        let r = routing(r#"fallback = ["backup", "third"]"#);
        let budgets = Budgets::default();
        let mut state = State::default();
        fail(&mut state, "main", true);
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.model, "main");
        assert_eq!(route.reason, "retry 2 of main after a transient failure");
        fail(&mut state, "main", true);
        fail(&mut state, "main", true);
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.model, "backup");
        assert_eq!(
            route.reason,
            "fallback: main failed 3 times in a row (transient)"
        );
        assert_eq!(gave_up(&r, &state), None);
        fail(&mut state, "backup", false);
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.model, "third");
        assert!(
            route
                .reason
                .contains("backup failed and retrying will not help")
        );
        for _ in 0..3 {
            fail(&mut state, "third", true);
        }
        assert_eq!(choose(&r, &budgets, &state, None), None);
        assert!(
            gave_up(&r, &state)
                .unwrap()
                .starts_with("every model failed")
        );
    }

    #[test]
    fn a_model_that_failed_over_cools_down_then_is_asked_again() {
        let r = routing(r#"fallback = ["backup"]"#);
        let budgets = Budgets::default();
        let mut state = State::default();
        state.models.by_model.insert(
            "main".into(),
            ModelTotals {
                last_failed_at: Some(Timestamp(100_000)),
                ..ModelTotals::default()
            },
        );
        state.timing.last_at = Timestamp(130_000);
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.model, "backup");
        assert!(route.reason.contains("cooling down"), "{}", route.reason);
        state.timing.last_at = Timestamp(161_000);
        assert_eq!(choose(&r, &budgets, &state, None).unwrap().model, "main");
    }

    #[test]
    fn a_cut_reply_and_a_budget_fraction_are_conditions() {
        let r = routing(
            r#"
            [[rules]]
            use = "long"
            after_cut = true
            [[rules]]
            use = "cheap"
            budget_fraction = 0.5
            "#,
        );
        let budgets = Budgets {
            max_tokens: Some(1_000),
            ..Budgets::default()
        };
        let mut state = State::default();
        let cut: ModelReply =
            serde_json::from_value(serde_json::json!({"text": "…", "stop_reason": "length"}))
                .unwrap();
        assert_eq!(
            choose(&r, &budgets, &state, Some(&cut)).unwrap().model,
            "long"
        );
        assert_eq!(choose(&r, &budgets, &state, None).unwrap().model, "main");
        state.totals.input_tokens = 600;
        let route = choose(&r, &budgets, &state, None).unwrap();
        assert_eq!(route.model, "cheap");
        assert_eq!(route.reason, "rule 1: past 50% of a budget");
        assert!(
            routing(r#"fallback = ["nope"]"#)
                .check(&["backup"])
                .unwrap_err()
                .contains("`nope`, which is not declared; models: main, backup")
        );
    }
}
