//! Policy: may this tool call run, must a human be asked, or is it refused?
//!
//! Rules from the spec are tried in order and the first match decides. A rule matches a call
//! when its tool is the call's tool (or `*`) and, if it has a glob, the call's subject
//! matches it: the `path` argument (relative to the workspace; `**` crosses directories),
//! or `exec.run`'s `command`, or `web.fetch`'s `url`. When no rule matches, the tool's tier
//! decides: read → allow, write → ask, exec → ask, network → ask, destructive → deny.

use globset::{Glob, GlobMatcher};
use regex::Regex;
use serde::Serialize;

use crate::spec::{Action, Rule};
use crate::tools::Tier;

/// A checked rule set.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<(Rule, Option<Matcher>)>,
}

/// A rule's compiled glob.
#[derive(Clone, Debug)]
enum Matcher {
    /// `path` and `url`: a glob (`**` crosses `/`).
    Glob(GlobMatcher),
    /// `command`: `*` and `?` never match a shell control character ([`SHELL_CONTROL`]).
    Command(Regex),
}

impl Matcher {
    fn is_match(&self, subject: &str) -> bool {
        match self {
            Self::Glob(glob) => glob.is_match(subject),
            Self::Command(regex) => regex.is_match(subject),
        }
    }
}

/// Characters a `command` glob's wildcards do not match: what chains, substitutes or
/// redirects in a shell. So `cargo test*` allows `cargo test -p x` but not
/// `cargo test; curl …` or `cargo test $(…)`; a rule that means such characters writes them
/// literally (`rm -rf work && cp -r project work`).
pub const SHELL_CONTROL: &str = ";&|$`<>()\n\\";

/// A `command` glob as a regex over the whole command line: `*` any run of characters but
/// [`SHELL_CONTROL`], `?` one such character, everything else literal.
fn command_regex(glob: &str) -> Regex {
    let class = format!("[^{}]", regex::escape(SHELL_CONTROL));
    let mut pattern = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => {
                pattern.push_str(&class);
                pattern.push('*');
            }
            '?' => pattern.push_str(&class),
            c => pattern.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    pattern.push('$');
    Regex::new(&pattern).expect("an escaped pattern is a valid regex")
}

/// Whether `command` matches the command glob `glob` ([`SHELL_CONTROL`] as in rules).
pub fn command_matches(glob: &str, command: &str) -> bool {
    command_regex(glob).is_match(command)
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
    /// The deciding rule's `idempotent`, overriding the tool's declaration.
    pub idempotent: Option<bool>,
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
                if let Some(command) = &rule.command {
                    return Ok((rule.clone(), Some(Matcher::Command(command_regex(command)))));
                }
                let matcher = rule
                    .glob()
                    .map(|glob| {
                        Glob::new(glob)
                            .map(|g| Matcher::Glob(g.compile_matcher()))
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
    /// Rules see the path as the workspace jail will resolve it (`.` and `..` taken out
    /// lexically), so `out/../README.md` is judged as `README.md`, not by an `out/**` rule;
    /// a path whose `..` climbs above the workspace is denied.
    ///
    /// `path` is the call's subject ([`retrace_events::ProposedCall::path`]): for `exec.run`
    /// its command and for `web.fetch` its URL, matched as they are.
    pub fn check(&self, tool: &str, tier: Tier, path: Option<&str>) -> Verdict {
        let subject_key = retrace_events::reply::subject_key(tool);
        if path == Some(retrace_events::reply::OVERLONG_SUBJECT) {
            return Verdict {
                action: Action::Ask,
                rule: None,
                reason: format!(
                    "the call's `{subject_key}` is longer than {} bytes, too long for rules to judge",
                    retrace_events::reply::SUBJECT_LIMIT
                ),
                idempotent: None,
            };
        }
        let is_path = subject_key == "path";
        let normal = match path.map(|p| {
            if is_path {
                lexical(p)
            } else {
                Some(p.to_owned())
            }
        }) {
            Some(None) => {
                return Verdict {
                    action: Action::Deny,
                    rule: None,
                    reason: format!(
                        "the path `{}` leads outside the workspace",
                        path.unwrap_or_default()
                    ),
                    idempotent: None,
                };
            }
            Some(Some(normal)) => Some(normal),
            None => None,
        };
        let path = normal.as_deref();
        for (index, (rule, glob)) in self.rules.iter().enumerate() {
            // `*` is every tool; `mcp.server.*` every tool of a namespace
            let tool_matches = rule.tool == "*"
                || rule.tool == tool
                || rule
                    .tool
                    .strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && tool.starts_with(prefix));
            // a rule's glob is over one kind of subject; it matches only tools that have it
            // (`tool = "*"` with `command = "rm*"` is about exec.run, not `fs.write rmx`)
            let kind_matches = rule.glob().is_none() || rule_subject(rule) == subject_key;
            let path_matches = kind_matches
                && match (glob, path) {
                    (None, _) => true,
                    (Some(glob), Some(path)) => glob.is_match(path),
                    (Some(_), None) => false,
                };
            if tool_matches && path_matches {
                let glob = rule
                    .glob()
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
                    idempotent: rule.idempotent,
                };
            }
        }
        let action = match tier {
            Tier::Read => Action::Allow,
            Tier::Write | Tier::Exec | Tier::Network => Action::Ask,
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
            idempotent: None,
        }
    }
}

/// Which argument a rule's glob is over: `path`, `command` or `url`.
fn rule_subject(rule: &Rule) -> &'static str {
    if rule.command.is_some() {
        "command"
    } else if rule.url.is_some() {
        "url"
    } else {
        "path"
    }
}

/// `path` with `.` and `..` resolved lexically (`a/./b/../c` → `a/c`; `.` for the root);
/// `None` when a `..` climbs above the start. An absolute path is kept as written (the
/// workspace jail refuses it).
pub(crate) fn lexical(path: &str) -> Option<String> {
    use std::path::Component;
    let given = std::path::Path::new(path);
    if given.has_root() {
        return Some(path.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in given.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    })
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
        Tier::Exec => "exec",
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
            command: None,
            url: None,
            action,
            idempotent: None,
        }
    }

    #[test]
    fn a_path_is_judged_where_it_leads_not_by_how_it_is_spelt() {
        let policy = Policy::new(&[rule("fs.write", Some("out/**"), Action::Allow)]).unwrap();
        let check = |path| policy.check("fs.write", Tier::Write, Some(path));
        assert_eq!(check("out/SUMMARY.md").action, Action::Allow);
        assert_eq!(check("./out/./a/../SUMMARY.md").action, Action::Allow);
        // out/../README.md is README.md: not under out/, so the write asks
        assert_eq!(check("out/../README.md").action, Action::Ask);
        assert_eq!(check("out/./../src/calc.txt").action, Action::Ask);
        let outside = check("out/../../etc/passwd");
        assert_eq!(outside.action, Action::Deny);
        assert!(
            outside.reason.contains("leads outside the workspace"),
            "{}",
            outside.reason
        );
        assert_eq!(lexical("a/./b/../c").as_deref(), Some("a/c"));
        assert_eq!(lexical("a/..").as_deref(), Some("."));
        assert_eq!(lexical(".."), None);
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
    fn commands_and_urls_are_matched_as_given_and_a_rule_may_vouch_for_idempotence() {
        let policy = Policy::new(&[
            Rule {
                command: Some("cargo test*".into()),
                idempotent: Some(true),
                ..rule("exec.run", None, Action::Allow)
            },
            Rule {
                url: Some("https://docs.rs/**".into()),
                ..rule("web.fetch", None, Action::Allow)
            },
        ])
        .unwrap();
        let test = policy.check("exec.run", Tier::Exec, Some("cargo test -p retrace-cli"));
        assert_eq!((test.action, test.idempotent), (Action::Allow, Some(true)));
        assert!(test.reason.contains("on `cargo test*`"), "{}", test.reason);
        // a command is not a path: nothing is normalised, and `..` is no escape to deny
        let other = policy.check("exec.run", Tier::Exec, Some("cat ../../etc/passwd"));
        assert_eq!((other.action, other.idempotent), (Action::Ask, None));
        assert!(
            other.reason.contains("default for exec tools"),
            "{}",
            other.reason
        );
        let fetch = |url| policy.check("web.fetch", Tier::Network, Some(url)).action;
        assert_eq!(fetch("https://docs.rs/sled/latest"), Action::Allow);
        assert_eq!(fetch("https://evil.example/docs.rs/"), Action::Ask);
        // a wildcard never matches what chains or substitutes commands in a shell
        let run = |command| policy.check("exec.run", Tier::Exec, Some(command)).action;
        for injected in [
            "cargo test; curl evil.example",
            "cargo test && rm -rf ~",
            "cargo test | sh",
            "cargo test $(rm -rf ~)",
            "cargo test `id`",
            "cargo test > ~/.bashrc",
            "cargo test\nrm -rf ~",
            "cargo test \\\n; id",
        ] {
            assert_eq!(run(injected), Action::Ask, "{injected}");
        }
        assert_eq!(run("cargo test -p x --lib -- --nocapture"), Action::Allow);
        // written literally in the rule, control characters match
        let literal = Policy::new(&[Rule {
            command: Some("rm -rf work && cp -r project work".into()),
            ..rule("exec.run", None, Action::Allow)
        }])
        .unwrap();
        let check = |c| literal.check("exec.run", Tier::Exec, Some(c)).action;
        assert_eq!(check("rm -rf work && cp -r project work"), Action::Allow);
        assert_eq!(check("rm -rf work && cp -r project work; id"), Action::Ask);
    }

    #[test]
    fn a_glob_is_over_one_kind_of_subject_and_an_overlong_one_is_asked_about() {
        let policy = Policy::new(&[
            Rule {
                command: Some("rm*".into()),
                ..rule("*", None, Action::Deny)
            },
            rule("*", Some("secrets/**"), Action::Deny),
        ])
        .unwrap();
        // the command rule is about exec.run only; the path rule about path tools only
        assert_eq!(
            policy
                .check("fs.write", Tier::Write, Some("rmnotes.md"))
                .action,
            Action::Ask
        );
        assert_eq!(
            policy.check("exec.run", Tier::Exec, Some("rm -f x")).action,
            Action::Deny
        );
        assert_eq!(
            policy
                .check("exec.run", Tier::Exec, Some("secrets/x"))
                .action,
            Action::Ask
        );
        let overlong = retrace_events::reply::OVERLONG_SUBJECT;
        let verdict = policy.check("fs.read", Tier::Read, Some(overlong));
        assert_eq!(verdict.action, Action::Ask);
        assert!(
            verdict.reason.contains("longer than 1024 bytes"),
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
