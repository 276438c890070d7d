//! Questions to a human: the built-in `user.ask`. Its call parks the run
//! ([`crate::Status::AwaitingAnswer`]) with nothing held; [`answer_question`] — the one way
//! the CLI (`retrace answer`), the daemon and the inspector answer — records the answer as
//! the call's `tool_returned`, which the model reads as the tool's result and which a fork
//! can replace with another answer. The time is the caller's (this crate reads no clock).
//!
//! Arguments (JSON): `{"question": "…", "choices"?: ["…", …], "allow_text"?: bool}` — with
//! no choices, the answer is free text; with choices, free text only if `allow_text`.
//!
//! The recorded result: `{"answer": "…", "choice"?: N, "by": "…"}` (`choice` 1-based, when
//! a choice was picked; `answer` is then the choice's text).

use retrace_events::{Event, EventKind, Head, RunId, Timestamp, canonical_json};
use retrace_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::fold::Error;
use crate::snapshot::{SnapshotPolicy, state_at_head};
use crate::{Pending, Status};

/// The built-in tool that asks a human.
pub const ASK_TOOL: &str = "user.ask";
/// Most choices a question offers.
pub const MAX_CHOICES: usize = 20;
/// Longest question, choice or answer, in bytes.
pub const MAX_TEXT: usize = 4_000;

/// A question, as its call's arguments give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// What is asked.
    pub question: String,
    /// Answers to pick from (none: free text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Whether free text is accepted beside the choices.
    #[serde(default)]
    pub allow_text: bool,
}

impl Question {
    /// The question a call's `args` ask; errors say what is wrong, for the model.
    pub fn from_args(args: &Value) -> Result<Self, String> {
        let q: Self = serde_json::from_value(args.clone()).map_err(|e| e.to_string())?;
        if q.question.trim().is_empty() {
            return Err("`question` is empty".to_owned());
        }
        if q.choices.len() > MAX_CHOICES {
            return Err(format!(
                "{} choices; at most {MAX_CHOICES}",
                q.choices.len()
            ));
        }
        for text in std::iter::once(&q.question).chain(&q.choices) {
            if text.len() > MAX_TEXT {
                return Err(format!(
                    "a text of {} bytes; at most {MAX_TEXT}",
                    text.len()
                ));
            }
        }
        if q.choices.iter().any(|c| c.trim().is_empty()) {
            return Err("a choice is empty".to_owned());
        }
        Ok(q)
    }

    /// Whether a free-text answer is accepted.
    pub fn takes_text(&self) -> bool {
        self.choices.is_empty() || self.allow_text
    }

    /// The recorded result for `answer` by `by`, or why the answer does not fit.
    pub fn result(&self, answer: &Answer, by: &str) -> Result<Value, String> {
        match answer {
            Answer::Choice(n) => {
                let Some(text) = n.checked_sub(1).and_then(|i| self.choices.get(i)) else {
                    return Err(if self.choices.is_empty() {
                        "the question has no choices; answer with text".to_owned()
                    } else {
                        format!(
                            "choice {n} does not exist; pick 1 to {}",
                            self.choices.len()
                        )
                    });
                };
                Ok(json!({"answer": text, "choice": n, "by": by}))
            }
            Answer::Text(text) => {
                if !self.takes_text() {
                    return Err(format!(
                        "the question takes one of its {} choices, not free text",
                        self.choices.len()
                    ));
                }
                if text.trim().is_empty() {
                    return Err("the answer is empty".to_owned());
                }
                if text.len() > MAX_TEXT {
                    return Err(format!(
                        "the answer is {} bytes; at most {MAX_TEXT}",
                        text.len()
                    ));
                }
                Ok(json!({"answer": text, "by": by}))
            }
        }
    }
}

/// A human's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The N-th choice, from 1.
    Choice(usize),
    /// Free text.
    Text(String),
}

/// Why an answer was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The run is not waiting for an answer.
    #[error("run {run} asks no question now (its status: {status})")]
    NotAsking {
        /// The run.
        run: RunId,
        /// Where it stands.
        status: String,
    },
    /// Another call is asking.
    #[error("run {run} is asking `{asking}`, not `{asked}`")]
    OtherCall {
        /// The run.
        run: RunId,
        /// The call named.
        asked: String,
        /// The call asking.
        asking: String,
    },
    /// The answer does not fit the question.
    #[error("run {run}, question `{call}`: {why}")]
    Unfit {
        /// The run.
        run: RunId,
        /// The question's call.
        call: String,
        /// Why.
        why: String,
    },
    /// Reading or writing the store failed.
    #[error(transparent)]
    Replay(#[from] Error),
}

impl From<retrace_store::Error> for AnswerError {
    fn from(e: retrace_store::Error) -> Self {
        Self::Replay(Error::Store(e))
    }
}

/// A question a run waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asking {
    /// The `user.ask` call.
    pub call_id: String,
    /// Seq of its `tool_requested`.
    pub seq: u64,
    /// What it asks.
    pub question: Question,
}

/// The question `run` is waiting on, if any.
pub fn pending_question(
    store: &(impl Store + ?Sized),
    run: &RunId,
) -> Result<Option<Asking>, AnswerError> {
    let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
    let Status::AwaitingAnswer { call_id } = &state.status else {
        return Ok(None);
    };
    let Some(Pending::Tool { args, seq, .. }) = state.pending.get(call_id) else {
        return Ok(None);
    };
    let question = store
        .blob(args)?
        .ok_or_else(|| format!("its arguments blob {args} is missing from the store"))
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .and_then(|v| Question::from_args(&v))
        .map_err(|why| AnswerError::Unfit {
            run: *run,
            call: call_id.clone(),
            why: format!("its arguments are not a question: {why}"),
        })?;
    Ok(Some(Asking {
        call_id: call_id.clone(),
        seq: *seq,
        question,
    }))
}

/// Record `answer`, by `by`, at `at`, to the question `run` is waiting on (which must be
/// `call` if given). Returns the call answered and the run's new head.
pub fn answer_question(
    store: &(impl Store + ?Sized),
    run: &RunId,
    call: Option<&str>,
    answer: &Answer,
    by: &str,
    at: Timestamp,
) -> Result<(String, Head), AnswerError> {
    let Some(Asking {
        call_id,
        seq,
        question,
    }) = pending_question(store, run)?
    else {
        let state = state_at_head(store, run, SnapshotPolicy::default())?.state;
        return Err(AnswerError::NotAsking {
            run: *run,
            status: crate::describe::status(&state.status),
        });
    };
    if let Some(asked) = call
        && asked != call_id
    {
        return Err(AnswerError::OtherCall {
            run: *run,
            asked: asked.to_owned(),
            asking: call_id,
        });
    }
    let result = question
        .result(answer, by)
        .map_err(|why| AnswerError::Unfit {
            run: *run,
            call: call_id.clone(),
            why,
        })?;
    let output = store.put_blob(&canonical_json(&result))?;
    let head = store.require_run(run)?.head;
    // how long the human took, from the question's recorded time
    let asked_at = store.event_at(run, seq)?.map_or(at, |(_, e)| e.at);
    let event = Event::after(
        head,
        at,
        EventKind::ToolReturned {
            call_id: call_id.clone(),
            output,
            is_error: false,
            duration_ms: at.unix_ms().saturating_sub(asked_at.unix_ms()),
        },
    );
    let new_head = store.append(run, head.map(|h| h.id), &[event])?;
    Ok((call_id, new_head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_fit_the_question() {
        let q =
            Question::from_args(&json!({"question": "Which topic?", "choices": ["wasm", "sled"]}))
                .unwrap();
        assert_eq!(
            q.result(&Answer::Choice(2), "ann").unwrap(),
            json!({"answer": "sled", "choice": 2, "by": "ann"})
        );
        assert!(
            q.result(&Answer::Choice(3), "ann")
                .unwrap_err()
                .contains("pick 1 to 2")
        );
        assert!(q.result(&Answer::Choice(0), "ann").is_err());
        assert!(
            q.result(&Answer::Text("x".into()), "ann")
                .unwrap_err()
                .contains("not free text")
        );
        let open = Question::from_args(&json!({"question": "Why?"})).unwrap();
        assert_eq!(
            open.result(&Answer::Text("because".into()), "bo").unwrap(),
            json!({"answer": "because", "by": "bo"})
        );
        assert!(
            open.result(&Answer::Choice(1), "bo")
                .unwrap_err()
                .contains("no choices")
        );
        assert!(Question::from_args(&json!({"question": " "})).is_err());
        assert!(
            Question::from_args(&json!({"prompt": "x"}))
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
