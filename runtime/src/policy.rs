//! Policy: may this tool call run, must a human be asked, or is it refused?
//!
//! Rules from the spec are tried in order and the first match decides. A rule matches a call
//! when its tool is the call's tool (or `*`) and, if it has a `path` glob, the call has a
//! `path` argument matching it (relative to the workspace; `**` crosses directories). When
//! no rule matches, the tool's tier decides: read → allow, write → ask, network → ask,
//! destructive → deny.

use globset::{Glob, GlobMatcher};
use serde::Serialize;

use crate::spec::{Action, Rule};
use crate::tools::Tier;

/// A checked rule set.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<(Rule, Option<GlobMatcher>)>,
}

/// The decision on one call, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allow, ask or deny.
    pub action: Action,
    /// Which rule decided (its index in the spec), or `None` for the tier default.
    pub rule: Option<usize>,
    /// In words, for approval requests and denials.
    pub reason: String,
}

/// A rule whose path glob does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy rule {index} (tool `{tool}`): bad path glob `{glob}`: {message}")]
pub struct Error {
    /// 0-based rule index.
    pub index: usize,
    /// The rule's tool.
    pub tool: String,
    /// The glob.
    pub glob: String,
    /// What is wrong with it.
    pub message: String,
}

impl Policy {
    /// Compile the spec's rules.
    pub fn new(rules: &[Rule]) -> Result<Self, Error> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let matcher = rule
                    .path
                    .as_deref()
                    .map(|glob| {
                        Glob::new(glob)
                            .map(|g| g.compile_matcher())
                            .map_err(|e| Error {
                                index,
                                tool: rule.tool.clone(),
                                glob: glob.to_owned(),
                                message: e.kind().to_string(),
                            })
                    })
                    .transpose()?;
                Ok((rule.clone(), matcher))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self { rules })
    }

    /// Decide on a call of `tool` (of `tier`) whose `path` argument, if any, is `path`.
    pub fn check(&self, tool: &str, tier: Tier, path: Option<&str>) -> Verdict {
        let path = path.map(|p| p.trim_start_matches("./"));
        for (index, (rule, glob)) in self.rules.iter().enumerate() {
            // `*` is every tool; `mcp.server.*` every tool of a namespace
            let tool_matches = rule.tool == "*"
                || rule.tool == tool
                || rule
                    .tool
                    .strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && tool.starts_with(prefix));
            let path_matches = match (glob, path) {
                (None, _) => true,
                (Some(glob), Some(path)) => glob.is_match(path),
                (Some(_), None) => false,
            };
            if tool_matches && path_matches {
                let glob = rule
                    .path
                    .as_deref()
                    .map(|g| format!(" on `{g}`"))
                    .unwrap_or_default();
                return Verdict {
                    action: rule.action,
                    rule: Some(index),
                    reason: format!(
                        "policy rule {index}: {} `{}`{glob}",
                        action_word(rule.action),
                        rule.tool
                    ),
                };
            }
        }
        let action = match tier {
            Tier::Read => Action::Allow,
            Tier::Write | Tier::Network => Action::Ask,
            Tier::Destructive => Action::Deny,
        };
        Verdict {
            action,
            rule: None,
            reason: format!(
                "default for {} tools: {}",
                tier_word(tier),
                action_word(action)
            ),
        }
    }
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Ask => "ask",
        Action::Deny => "deny",
    }
}

fn tier_word(tier: Tier) -> &'static str {
    match tier {
        Tier::Read => "read",
        Tier::Write => "write",
        Tier::Network => "network",
        Tier::Destructive => "destructive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tool: &str, path: Option<&str>, action: Action) -> Rule {
        Rule {
            tool: tool.into(),
            path: path.map(Into::into),
            action,
        }
    }

    #[test]
    fn first_matching_rule_wins_then_tier_defaults() {
        let policy = Policy::new(&[
            rule("fs.write", Some("notes/**"), Action::Allow),
            rule("fs.write", Some("**/*.lock"), Action::Deny),
            rule("*", Some("secrets/**"), Action::Deny),
        ])
        .unwrap();
        let check = |tool, tier, path| policy.check(tool, tier, path).action;
        assert_eq!(
            check("fs.write", Tier::Write, Some("notes/a/b.md")),
            Action::Allow
        );
        assert_eq!(
            check("fs.write", Tier::Write, Some("./notes/b.md")),
            Action::Allow
        );
        assert_eq!(
            check("fs.write", Tier::Write, Some("Cargo.lock")),
            Action::Deny
        );
        assert_eq!(
            check("fs.read", Tier::Read, Some("secrets/key.pem")),
            Action::Deny
        );
        // no rule: the tier decides
        assert_eq!(
            check("fs.write", Tier::Write, Some("src/main.rs")),
            Action::Ask
        );
        assert_eq!(
            check("fs.read", Tier::Read, Some("src/main.rs")),
            Action::Allow
        );
        assert_eq!(check("http.fetch", Tier::Network, None), Action::Ask);
        assert_eq!(check("fs.rm", Tier::Destructive, None), Action::Deny);
        // a path rule does not match a call without a path
        assert_eq!(check("fs.list", Tier::Read, None), Action::Allow);
        let verdict = policy.check("fs.write", Tier::Write, Some("Cargo.lock"));
        assert_eq!(verdict.rule, Some(1));
        assert!(
            verdict
                .reason
                .contains("rule 1: deny `fs.write` on `**/*.lock`"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn a_bad_glob_is_refused_with_its_rule() {
        let err = Policy::new(&[rule("fs.write", Some("notes/[a"), Action::Allow)]).unwrap_err();
        assert_eq!(err.index, 0);
        assert!(
            err.to_string().contains("bad path glob `notes/[a`"),
            "{err}"
        );
    }
}
