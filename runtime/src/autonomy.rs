//! Graduated autonomy: how far the agent is trusted with a kind of call, and promotion from
//! its recorded track record.
//!
//! ```toml
//! [[autonomy]]                  # first match wins; a rule matches like a [[policy]] rule
//! tool = "exec.run"             # a tool, `*`, or a namespace `mcp.fs.*` (default `*`)
//! command = "cargo test*"       # optional glob over the subject (path, command or url)
//! level = "semi"                # supervised | semi | autonomous
//! promote_after = 20            # semi: human approvals in a row that allow without asking
//!
//! [[autonomy]]
//! tier = "write"                # or every tool of a risk tier
//! level = "supervised"
//! ```
//!
//! Levels act on what the policy decided ([`crate::policy`]):
//!
//! - `supervised`: a call the policy allows is asked about all the same;
//! - `semi`: a call the policy asks about is allowed without asking once the **track record**
//!   holds `promote_after` human approvals of matching calls, with no denial since;
//! - `autonomous`: a call the policy asks about is allowed without asking.
//!
//! Hard limits are never loosened: a call the policy denies, and any call of a
//! `destructive` tool, is never promoted.
//!
//! The track record ([`track_record`]) is read from the store: every human decision
//! (`approval_decided` whose `by` is not [`BY`]) on a matching call, in runs of the same
//! agent name (`meta.name`), this run's earlier ones included, ordered by recorded time
//! (then run and seq). Approvals count from the last denial on. An automatic allow is
//! recorded as the approval request (its blob gains `autonomy`: the rule, the count and the
//! approvals it rests on, as run and event ids) and, in the same append, an approval `by`
//! [`BY`]: so replay, `retrace check` and `retrace audit` read the decision and its evidence
//! instead of computing them again, and each piece of evidence can be checked against its
//! run's hash chain.

use std::collections::HashMap;

use globset::{Glob, GlobMatcher};
use retrace_events::{BlobId, Decision, EventId, EventKind, RunId, Timestamp};
use retrace_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::tools::Tier;

/// Who an automatic decision is recorded as.
pub const BY: &str = "autonomy";

/// A trust level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Always ask.
    Supervised,
    /// Ask until the track record promotes.
    Semi,
    /// Do not ask.
    Autonomous,
}

/// An `[[autonomy]]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    /// Tool name, `*`, or `namespace.*`.
    #[serde(default = "any_tool")]
    pub tool: String,
    /// Only tools of this tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Glob over a `path` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Glob over `exec.run`'s command (`*` never matches shell control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Glob over `web.fetch`'s URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The level.
    pub level: Level,
    /// `semi`: approvals in a row that promote (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_after: Option<u32>,
}

fn any_tool() -> String {
    "*".to_owned()
}

/// Approvals that promote a `semi` rule when it does not say.
pub const PROMOTE_AFTER: u32 = 20;

impl TrustRule {
    /// The glob over the call's subject, if any.
    pub fn glob(&self) -> Option<&str> {
        self.path
            .as_deref()
            .or(self.command.as_deref())
            .or(self.url.as_deref())
    }

    /// Approvals that promote.
    pub fn promote_after(&self) -> u32 {
        self.promote_after.unwrap_or(PROMOTE_AFTER)
    }

    /// Whether the rule is about a call of `tool` (of `tier`) whose subject is `subject`.
    pub fn matches(&self, tool: &str, tier: Tier, subject: Option<&str>) -> bool {
        let tool_matches = self.tool == "*"
            || self.tool == tool
            || self
                .tool
                .strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && tool.starts_with(prefix));
        let tier_matches = self.tier.is_none_or(|t| t == tier);
        let subject_matches = match (self.glob(), subject) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(glob), Some(subject)) => {
                if self.command.is_some() {
                    crate::policy::command_matches(glob, subject)
                } else if self.path.is_some() {
                    // judged where it leads, as the policy does: `notes/../x` is `x`, and a
                    // path climbing out of the workspace matches nothing
                    crate::policy::lexical(subject)
                        .is_some_and(|p| compiled(glob).is_some_and(|g| g.is_match(&p)))
                } else {
                    compiled(glob).is_some_and(|g| g.is_match(subject))
                }
            }
        };
        tool_matches && tier_matches && subject_matches
    }

    /// Check the rule: at most one glob, each valid; `promote_after` only on `semi`.
    pub fn check(&self, index: usize) -> Result<(), String> {
        let globs = [&self.path, &self.command, &self.url]
            .iter()
            .filter(|g| g.is_some())
            .count();
        if globs > 1 {
            return Err(format!(
                "[[autonomy]] {index}: give at most one of `path`, `command` and `url`"
            ));
        }
        if let Some(glob) = self.path.as_deref().or(self.url.as_deref())
            && let Err(e) = Glob::new(glob)
        {
            return Err(format!(
                "[[autonomy]] {index}: bad glob `{glob}`: {}",
                e.kind()
            ));
        }
        if self.promote_after.is_some() && self.level != Level::Semi {
            return Err(format!(
                "[[autonomy]] {index}: promote_after is for level = \"semi\""
            ));
        }
        if self.promote_after == Some(0) {
            return Err(format!(
                "[[autonomy]] {index}: promote_after must be at least 1"
            ));
        }
        Ok(())
    }
}

fn compiled(glob: &str) -> Option<GlobMatcher> {
    Glob::new(glob).ok().map(|g| g.compile_matcher())
}

/// The first rule of `rules` about the call, with its index.
pub fn rule_for<'a>(
    rules: &'a [TrustRule],
    tool: &str,
    tier: Tier,
    subject: Option<&str>,
) -> Option<(usize, &'a TrustRule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(tool, tier, subject))
}

/// A human decision on a call, as the track record reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// When it was recorded.
    pub at: Timestamp,
    /// The run.
    pub run: RunId,
    /// Its seq.
    pub seq: u64,
    /// The `approval_decided` event.
    pub event: EventId,
    /// Approved or denied.
    pub decision: Decision,
}

/// What a track record comes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The rule (its index in `[[autonomy]]`).
    pub rule: usize,
    /// Approvals since the last denial.
    pub approvals: u32,
    /// The approvals needed.
    pub needed: u32,
    /// The approvals counted: run and event.
    pub evidence: Vec<(RunId, EventId)>,
    /// The last denial, which reset the count.
    pub reset_by: Option<(RunId, EventId)>,
}

impl Evidence {
    /// Whether the record promotes.
    pub fn promotes(&self) -> bool {
        self.approvals >= self.needed
    }

    /// As recorded in the approval request's `autonomy` (run and event ids in hex).
    pub fn to_json(&self, rule: &TrustRule) -> Value {
        let pair = |(run, event): &(RunId, EventId)| json!({"run": run.to_string(), "event": event.to_string()});
        json!({
            "rule": self.rule,
            "tool": rule.tool,
            "pattern": rule.glob(),
            "level": rule.level,
            "approvals": self.approvals,
            "needed": self.needed,
            "evidence": self.evidence.iter().map(pair).collect::<Vec<_>>(),
            "reset_by": self.reset_by.as_ref().map(pair),
        })
    }
}

/// The track record of `decided` (in any order) for `rule`: pure and deterministic.
pub fn evaluate(rule_index: usize, rule: &TrustRule, mut decided: Vec<Decided>) -> Evidence {
    decided.sort_by_key(|d| (d.at, d.run, d.seq));
    let reset = decided.iter().rposition(|d| d.decision == Decision::Denied);
    let since = reset.map_or(0, |i| i + 1);
    let evidence: Vec<(RunId, EventId)> =
        decided[since..].iter().map(|d| (d.run, d.event)).collect();
    Evidence {
        rule: rule_index,
        approvals: u32::try_from(evidence.len()).unwrap_or(u32::MAX),
        needed: rule.promote_after(),
        evidence,
        reset_by: reset.map(|i| (decided[i].run, decided[i].event)),
    }
}

/// Every human decision on calls `rule` matches, in runs of agent `agent` in `store`.
/// `tier_of` gives a tool's tier (a tool the agent does not know is skipped).
pub fn track_record(
    store: &dyn Store,
    agent: &str,
    rule: &TrustRule,
    tier_of: &dyn Fn(&str) -> Option<Tier>,
) -> Result<Vec<Decided>, retrace_store::Error> {
    let mut decided = Vec::new();
    for info in store.runs()? {
        if info.meta.get("name").map(String::as_str) != Some(agent) || info.is_empty() {
            continue;
        }
        // a fork's shared prefix is its origin's record: each decision counts once, in the
        // run that recorded it, but a request in the prefix may be decided in the fork
        let own_from = info.own_from();
        let events = store.events(&info.id, 0..=info.len().saturating_sub(1))?;
        let mut asked: HashMap<String, BlobId> = HashMap::default();
        for (id, event) in events {
            match event.kind {
                EventKind::ApprovalRequested { call_id, request } => {
                    asked.insert(call_id, request);
                }
                EventKind::ApprovalDecided {
                    call_id,
                    decision,
                    by,
                    ..
                } => {
                    // one decision per request: a retry of a call in doubt is not a second
                    // approval of it; automatic ones and a fork's shared ones do not count
                    let Some(request) = asked.remove(&call_id) else {
                        continue;
                    };
                    if by == BY || event.seq < own_from {
                        continue;
                    }
                    let Some(bytes) = store.blob(&request)? else {
                        continue;
                    };
                    let request: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let Some(tool) = request.get("tool").and_then(Value::as_str) else {
                        continue;
                    };
                    let Some(tier) = tier_of(tool) else {
                        continue;
                    };
                    let key = retrace_events::reply::subject_key(tool);
                    let subject = request
                        .get("args")
                        .and_then(|a| a.get(key))
                        .and_then(Value::as_str);
                    if rule.matches(tool, tier, subject) {
                        decided.push(Decided {
                            at: event.at,
                            run: info.id,
                            seq: event.seq,
                            event: id,
                            decision,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> TrustRule {
        toml::from_str(text).unwrap()
    }

    fn decided(at: u64, decision: Decision) -> Decided {
        Decided {
            at: Timestamp(at),
            run: RunId::from_bytes([u8::try_from(at % 7).unwrap(); 16]),
            seq: at,
            event: EventId::from_bytes([u8::try_from(at % 251).unwrap(); 32]),
            decision,
        }
    }

    #[test]
    fn approvals_count_from_the_last_denial_in_recorded_order() {
        let r = rule(
            "tool = \"exec.run\"\ncommand = \"cargo test*\"\nlevel = \"semi\"\npromote_after = 3",
        );
        let approved = |at| decided(at, Decision::Approved);
        let record = evaluate(0, &r, vec![approved(5), approved(1), approved(3)]);
        assert_eq!((record.approvals, record.promotes()), (3, true));
        assert_eq!(record.evidence[0].1, approved(1).event);
        let record = evaluate(
            0,
            &r,
            vec![
                approved(1),
                approved(2),
                decided(4, Decision::Denied),
                approved(6),
            ],
        );
        assert_eq!((record.approvals, record.promotes()), (1, false));
        assert_eq!(
            record.reset_by.unwrap().1,
            decided(4, Decision::Denied).event
        );
    }

    #[test]
    fn rules_match_by_tool_tier_and_subject() {
        let r = rule("tool = \"exec.run\"\ncommand = \"cargo test*\"\nlevel = \"semi\"");
        assert!(r.matches("exec.run", Tier::Exec, Some("cargo test -p x")));
        assert!(!r.matches("exec.run", Tier::Exec, Some("cargo test; rm -rf ~")));
        assert!(!r.matches("exec.run", Tier::Exec, None));
        let notes = rule("tool = \"fs.write\"\npath = \"notes/**\"\nlevel = \"semi\"");
        assert!(notes.matches("fs.write", Tier::Write, Some("./notes/a/../b.md")));
        assert!(!notes.matches("fs.write", Tier::Write, Some("notes/../CHANGES.md")));
        assert!(!notes.matches("fs.write", Tier::Write, Some("notes/../../x")));
        let tier = rule("tier = \"write\"\nlevel = \"supervised\"");
        assert!(tier.matches("fs.write", Tier::Write, Some("a.md")));
        assert!(!tier.matches("fs.read", Tier::Read, Some("a.md")));
        let bad = rule("tool = \"fs.write\"\nlevel = \"autonomous\"\npromote_after = 3");
        assert!(
            bad.check(0)
                .unwrap_err()
                .contains("promote_after is for level")
        );
    }
}
