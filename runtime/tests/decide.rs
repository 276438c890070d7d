//! `decide` over states folded from real event sequences: the agent loop's choices, crash
//! recovery, approvals, policy, budgets, the loop guard, cancellation.

use std::collections::BTreeMap;

use retrace_events::{
    BlobId, Decision, Event, EventKind, Head, Outcome, ProposedCall, RunId, Timestamp, Usage,
};
use retrace_replay::{State, apply};
use retrace_runtime::decide::{Agent, LOOP_WARNING, Next, ToolMeta, decide};
use retrace_runtime::policy::Policy;
use retrace_runtime::spec::{Action, Budgets, Rule};
use retrace_runtime::tools::{OnError, Tier};

/// A run being written event by event, with its state kept up to date.
struct Log {
    state: State,
    head: Option<Head>,
    clock: u64,
}

impl Log {
    fn start() -> Self {
        let mut log = Self {
            state: State::default(),
            head: None,
            clock: 1_000,
        };
        let blob = BlobId::of(b"task");
        log.push(EventKind::RunStarted {
            run: RunId::from_bytes([5; 16]),
            spec: blob,
            input: blob,
        });
        log
    }

    fn push(&mut self, kind: EventKind) -> u64 {
        self.clock += 10;
        let event = Event::after(self.head, Timestamp(self.clock), kind);
        apply(&mut self.state, &event).expect("a valid event");
        self.head = Some(event.head());
        event.seq
    }

    fn model_reply(&mut self, calls: &[(&str, &str, Option<&str>)]) {
        let asked = self.push(EventKind::ModelRequested {
            request: BlobId::of(b"req"),
            attempt: 1,
        });
        let usage = Usage {
            input_tokens: 100,
            output_tokens: 20,
            cost_micro_usd: 1_000,
            latency_ms: 5,
        };
        let replied = self.push(EventKind::ModelResponded {
            request_seq: asked,
            response: BlobId::of(b"reply"),
            usage,
        });
        if !calls.is_empty() {
            let calls = calls
                .iter()
                .map(|(id, tool, path)| ProposedCall {
                    call_id: (*id).into(),
                    tool: (*tool).into(),
                    args: BlobId::of(path.unwrap_or("{}").as_bytes()),
                    path: path.map(Into::into),
                })
                .collect();
            self.push(EventKind::ToolCallsProposed {
                response_seq: replied,
                calls,
            });
        }
    }

    fn run_tool(&mut self, id: &str, tool: &str, path: &str) {
        self.tool_result(id, tool, path, false);
    }

    fn tool_result(&mut self, id: &str, tool: &str, path: &str, is_error: bool) {
        self.push(EventKind::ToolRequested {
            call_id: id.into(),
            tool: tool.into(),
            args: BlobId::of(path.as_bytes()),
            idempotent: true,
        });
        self.push(EventKind::ToolReturned {
            call_id: id.into(),
            output: BlobId::of(b"ok"),
            is_error,
            duration_ms: 1,
        });
    }
}

fn agent(budgets: Budgets, rules: &[Rule]) -> Agent {
    let tools = BTreeMap::from([
        (
            "fs.read".to_owned(),
            ToolMeta {
                tier: Tier::Read,
                idempotent: true,
                on_error: OnError::Continue,
            },
        ),
        (
            "fs.write".to_owned(),
            ToolMeta {
                tier: Tier::Write,
                idempotent: true,
                on_error: OnError::Continue,
            },
        ),
        (
            "fs.edit".to_owned(),
            ToolMeta {
                tier: Tier::Write,
                idempotent: false,
                on_error: OnError::Continue,
            },
        ),
        (
            "mcp.search.query".to_owned(),
            ToolMeta {
                tier: Tier::Read,
                idempotent: false,
                on_error: OnError::Stop,
            },
        ),
    ]);
    Agent {
        budgets,
        policy: Policy::new(rules).expect("policy"),
        tools,
        routing: None,
        autonomy: Vec::new(),
    }
}

fn plain() -> Agent {
    agent(Budgets::default(), &[])
}

#[test]
fn the_basic_loop_calls_the_model_runs_allowed_tools_and_finishes_on_a_final_answer() {
    let mut log = Log::start();
    assert_eq!(decide(&plain(), &log.state), Next::CallModel { step: 0 });
    log.model_reply(&[("c1", "fs.read", Some("README.md"))]);
    let Next::RunTool {
        call_id,
        tool,
        rerun,
        ..
    } = decide(&plain(), &log.state)
    else {
        panic!("expected a tool run")
    };
    assert_eq!(
        (call_id.as_str(), tool.as_str(), rerun),
        ("c1", "fs.read", false)
    );
    log.run_tool("c1", "fs.read", "README.md");
    assert_eq!(decide(&plain(), &log.state), Next::CallModel { step: 1 });
    log.model_reply(&[]);
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::Finish {
            outcome: Outcome::Succeeded,
            ..
        }
    ));
    log.push(EventKind::RunFinished {
        outcome: Outcome::Succeeded,
        detail: BlobId::of(b"done"),
    });
    assert_eq!(decide(&plain(), &log.state), Next::Done);
}

#[test]
fn writes_ask_by_default_and_the_decision_is_honoured() {
    for (decision, approved) in [(Decision::Approved, true), (Decision::Denied, false)] {
        let mut log = Log::start();
        log.model_reply(&[("w1", "fs.write", Some("notes.md"))]);
        let Next::AskApproval { call, reason, .. } = decide(&plain(), &log.state) else {
            panic!("expected ask")
        };
        assert_eq!(call.call_id, "w1");
        assert!(reason.contains("default for write tools"), "{reason}");
        log.push(EventKind::ApprovalRequested {
            call_id: "w1".into(),
            request: BlobId::of(b"ask"),
        });
        assert!(matches!(decide(&plain(), &log.state), Next::Park { .. }));
        log.push(EventKind::ApprovalDecided {
            call_id: "w1".into(),
            decision,
            by: "ann".into(),
            note: None,
        });
        match decide(&plain(), &log.state) {
            Next::RunTool { call_id, .. } if approved => assert_eq!(call_id, "w1"),
            Next::Deny { reason, .. } if !approved => assert_eq!(reason, "denied by ann"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn policy_rules_and_unknown_tools_deny() {
    let rules = [Rule {
        tool: "fs.write".into(),
        path: Some("secrets/**".into()),
        command: None,
        url: None,
        action: Action::Deny,
        idempotent: None,
    }];
    let mut log = Log::start();
    log.model_reply(&[
        ("w1", "fs.write", Some("secrets/key")),
        ("x1", "net.fetch", None),
    ]);
    let Next::Deny { call, reason, .. } = decide(&agent(Budgets::default(), &rules), &log.state)
    else {
        panic!("expected deny")
    };
    assert_eq!(call.call_id, "w1");
    assert!(reason.contains("policy rule 0"), "{reason}");
    // the denial is recorded as a failed tool result; then the unknown tool is refused too
    log.push(EventKind::ToolRequested {
        call_id: "w1".into(),
        tool: "fs.write".into(),
        args: call.args,
        idempotent: true,
    });
    log.push(EventKind::ToolReturned {
        call_id: "w1".into(),
        output: BlobId::of(b"denied"),
        is_error: true,
        duration_ms: 0,
    });
    let Next::Deny { reason, .. } = decide(&plain(), &log.state) else {
        panic!("expected deny")
    };
    assert!(reason.contains("there is no tool `net.fetch`"), "{reason}");
}

#[test]
fn after_a_crash_model_calls_are_reissued_and_tools_rerun_only_if_idempotent() {
    let mut log = Log::start();
    let request = BlobId::of(b"the request");
    log.push(EventKind::ModelRequested {
        request,
        attempt: 1,
    });
    assert_eq!(
        decide(&plain(), &log.state),
        Next::ReissueModel {
            request,
            attempt: 1,
            step: 0
        }
    );

    let mut log = Log::start();
    log.model_reply(&[("r1", "fs.read", Some("a.txt"))]);
    log.push(EventKind::ToolRequested {
        call_id: "r1".into(),
        tool: "fs.read".into(),
        args: BlobId::of(b"a.txt"),
        idempotent: true,
    });
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::RunTool { rerun: true, .. }
    ));

    let mut log = Log::start();
    log.model_reply(&[("e1", "fs.edit", Some("a.txt"))]);
    log.push(EventKind::ToolRequested {
        call_id: "e1".into(),
        tool: "fs.edit".into(),
        args: BlobId::of(b"a.txt"),
        idempotent: false,
    });
    assert_eq!(
        decide(&plain(), &log.state),
        Next::MarkOutcomeUnknown {
            call_id: "e1".into()
        }
    );
    log.push(EventKind::ToolOutcomeUnknown {
        call_id: "e1".into(),
        reason: BlobId::of(b"crash"),
    });
    let Next::Park { reason } = decide(&plain(), &log.state) else {
        panic!("expected park")
    };
    assert!(reason.contains("outcome of e1 is unknown"), "{reason}");
}

/// `decide` with `budgets` must fail the run with a reason containing `needle`.
fn check(state: &State, budgets: Budgets, needle: &str) {
    match decide(&agent(budgets, &[]), state) {
        Next::Finish {
            outcome: Outcome::Failed,
            reason,
        } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a budget failure ({needle}), got {other:?}"),
    }
}

#[test]
fn budgets_end_the_run_with_a_clear_reason() {
    let mut log = Log::start();
    log.model_reply(&[("r1", "fs.read", Some("a"))]);
    log.run_tool("r1", "fs.read", "a");
    check(
        &log.state,
        Budgets {
            max_steps: Some(1),
            ..Budgets::default()
        },
        "max_steps = 1",
    );
    check(
        &log.state,
        Budgets {
            max_tokens: Some(100),
            ..Budgets::default()
        },
        "120 tokens",
    );
    check(
        &log.state,
        Budgets {
            max_cost_usd: Some(0.0001),
            ..Budgets::default()
        },
        "max_cost_usd",
    );
    // five events 10 ms apart after the start: 50 ms of recorded wall time
    log.clock += 5_000;
    log.push(EventKind::SignalReceived {
        name: "ping".into(),
        payload: BlobId::of(b""),
    });
    check(
        &log.state,
        Budgets {
            max_wall_secs: Some(1),
            ..Budgets::default()
        },
        "wall time",
    );
    assert_eq!(
        decide(
            &agent(
                Budgets {
                    max_steps: Some(5),
                    ..Budgets::default()
                },
                &[]
            ),
            &log.state
        ),
        Next::CallModel { step: 1 }
    );
}

#[test]
fn a_repeated_call_gets_one_warning_then_fails_the_run() {
    let budgets = Budgets {
        loop_limit: Some(3),
        ..Budgets::default()
    };
    let mut log = Log::start();
    for i in 0..3 {
        log.model_reply(&[(&format!("c{i}"), "fs.read", Some("same.txt"))]);
        log.run_tool(&format!("c{i}"), "fs.read", "same.txt");
    }
    let Next::WarnLoop { message } = decide(&agent(budgets.clone(), &[]), &log.state) else {
        panic!("expected a warning")
    };
    assert!(message.contains("fs.read"), "{message}");
    log.push(EventKind::SignalReceived {
        name: LOOP_WARNING.into(),
        payload: BlobId::of(message.as_bytes()),
    });
    assert_eq!(
        log.state.conversation.back().map(|m| m.seq),
        log.state.seq,
        "the warning is in the conversation"
    );
    assert_eq!(
        decide(&agent(budgets.clone(), &[]), &log.state),
        Next::CallModel { step: 3 }
    );
    log.model_reply(&[("c3", "fs.read", Some("same.txt"))]);
    log.run_tool("c3", "fs.read", "same.txt");
    let Next::Finish {
        outcome: Outcome::Failed,
        reason,
    } = decide(&agent(budgets, &[]), &log.state)
    else {
        panic!("expected failure")
    };
    assert!(reason.contains("loop"), "{reason}");
}

#[test]
fn a_cancel_signal_finishes_the_run_as_cancelled() {
    let mut log = Log::start();
    log.push(EventKind::SignalReceived {
        name: "cancel".into(),
        payload: BlobId::of(b""),
    });
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::Finish {
            outcome: Outcome::Cancelled,
            ..
        }
    ));
}

impl Log {
    fn model_failure(&mut self, transient: bool) {
        let asked = self.push(EventKind::ModelRequested {
            request: BlobId::of(b"req"),
            attempt: 1,
        });
        self.push(EventKind::ModelFailed {
            request_seq: asked,
            error: BlobId::of(b"error"),
            transient,
        });
    }
}

#[test]
fn transient_model_failures_are_retried_until_the_limit_and_a_permanent_one_fails_the_run() {
    let mut log = Log::start();
    for failures in 1..retrace_runtime::decide::MODEL_RETRIES {
        log.model_failure(true);
        assert_eq!(
            decide(&plain(), &log.state),
            Next::CallModel {
                step: u64::from(failures)
            },
            "after {failures} transient failures, ask again"
        );
    }
    log.model_failure(true);
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::Finish { outcome: Outcome::Failed, reason } if reason.contains("3 times in a row")
    ));

    // a reply resets the count
    let mut log = Log::start();
    log.model_failure(true);
    log.model_failure(true);
    log.model_reply(&[("c1", "fs.read", Some("a.txt"))]);
    log.run_tool("c1", "fs.read", "a.txt");
    log.model_failure(true);
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::CallModel { .. }
    ));

    let mut log = Log::start();
    log.model_failure(false);
    assert!(matches!(
        decide(&plain(), &log.state),
        Next::Finish { outcome: Outcome::Failed, reason } if reason.contains("retrying will not help")
    ));
}

#[test]
fn an_error_from_a_tool_whose_errors_stop_the_run_fails_it_before_the_next_call() {
    let agent = plain();
    let mut log = Log::start();
    log.model_reply(&[
        ("c1", "fs.read", Some("a.txt")),
        ("c2", "mcp.search.query", None),
        ("c3", "fs.read", Some("b.txt")),
    ]);
    // an error from a tool that continues: the next proposal is handled as usual
    log.tool_result("c1", "fs.read", "a.txt", true);
    assert_eq!(log.state.last_tool_error.as_deref(), Some("fs.read"));
    assert!(matches!(decide(&agent, &log.state), Next::RunTool { call_id, .. } if call_id == "c2"));
    // a success from the stopping tool changes nothing
    let mut ok = Log::start();
    ok.model_reply(&[("c2", "mcp.search.query", None)]);
    ok.tool_result("c2", "mcp.search.query", "{}", false);
    assert_eq!(ok.state.last_tool_error, None);
    assert_eq!(decide(&agent, &ok.state), Next::CallModel { step: 1 });
    // its error ends the run, the remaining proposal left alone
    log.tool_result("c2", "mcp.search.query", "{}", true);
    match decide(&agent, &log.state) {
        Next::Finish { outcome, reason } => {
            assert_eq!(outcome, Outcome::Failed);
            assert!(reason.contains("`mcp.search.query` failed"), "{reason}");
            assert!(reason.contains("on_error = \"stop\""), "{reason}");
        }
        other => panic!("expected the run to stop, got {other:?}"),
    }
}

#[test]
fn trust_levels_tighten_and_loosen_the_policy_but_never_for_destructive_tools_or_denials() {
    let trust = |text: &str| -> Vec<retrace_runtime::autonomy::TrustRule> {
        let table: toml::Table = toml::from_str(text).unwrap();
        table["autonomy"].clone().try_into().expect("trust rules")
    };
    let mut agent = agent(
        Budgets::default(),
        &[Rule {
            tool: "fs.edit".into(),
            path: None,
            command: None,
            url: None,
            action: Action::Deny,
            idempotent: None,
        }],
    );
    agent.tools.insert(
        "mcp.fs.rm".into(),
        ToolMeta {
            tier: Tier::Destructive,
            idempotent: false,
            on_error: OnError::Continue,
        },
    );
    agent.policy = Policy::new(&[
        Rule {
            tool: "fs.edit".into(),
            path: None,
            command: None,
            url: None,
            action: Action::Deny,
            idempotent: None,
        },
        Rule {
            tool: "mcp.fs.rm".into(),
            path: None,
            command: None,
            url: None,
            action: Action::Ask,
            idempotent: None,
        },
    ])
    .unwrap();
    agent.autonomy = trust(
        "[[autonomy]]\ntool = \"fs.read\"\nlevel = \"supervised\"\n\
         [[autonomy]]\ntool = \"*\"\nlevel = \"autonomous\"\n",
    );
    let next_for = |tool: &str| {
        let mut log = Log::start();
        log.model_reply(&[("c1", tool, Some("a.md"))]);
        decide(&agent, &log.state)
    };
    // supervised: asked although reads are allowed
    let Next::AskApproval {
        reason, autonomy, ..
    } = next_for("fs.read")
    else {
        panic!("a supervised read is asked about");
    };
    assert_eq!(autonomy, None);
    assert!(reason.contains("autonomy rule 0: supervised"), "{reason}");
    // autonomous: a write the policy asks about may be allowed by rule 1
    assert!(matches!(
        next_for("fs.write"),
        Next::AskApproval {
            autonomy: Some(1),
            ..
        }
    ));
    // a destructive tool is never promoted, a denial never loosened
    assert!(matches!(
        next_for("mcp.fs.rm"),
        Next::AskApproval { autonomy: None, .. }
    ));
    assert!(matches!(next_for("fs.edit"), Next::Deny { .. }));
}

#[test]
fn a_reused_call_id_does_not_inherit_an_earlier_approval() {
    // servers that number calls per reply send `call_0` every time
    let mut log = Log::start();
    log.model_reply(&[("call_0", "fs.write", Some("a.md"))]);
    log.push(EventKind::ApprovalRequested {
        call_id: "call_0".into(),
        request: BlobId::of(b"ask"),
    });
    log.push(EventKind::ApprovalDecided {
        call_id: "call_0".into(),
        decision: Decision::Approved,
        by: "ann".into(),
        note: None,
    });
    assert!(matches!(decide(&plain(), &log.state), Next::RunTool { .. }));
    log.run_tool("call_0", "fs.write", "a.md");
    log.model_reply(&[("call_0", "fs.write", Some("secret.md"))]);
    let Next::AskApproval { call, .. } = decide(&plain(), &log.state) else {
        panic!(
            "the second call_0 is asked about: {:?}",
            decide(&plain(), &log.state)
        );
    };
    assert_eq!(call.path.as_deref(), Some("secret.md"));
}
