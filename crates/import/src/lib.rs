//! Other agents' recordings turned into retrace runs.
//!
//! One module per format reads a recording (bytes, no IO) into a [`Transcript`]: the task,
//! model calls with their replies, tool results, user messages and compactions, each with
//! what the source said beyond that (its `extra`), and a [`Report`] of the lines read and
//! skipped. [`write`] turns a transcript into a run's events in a store — request records,
//! replies, proposals, results, approvals for rejected calls — so an imported run verifies,
//! folds, shows and diffs like any other; the spec it records says it was imported, from
//! which files (their BLAKE3) and as which format.
//!
//! | format | source | module |
//! |---|---|---|
//! | `claude-code` | Claude Code session transcript (`~/.claude/projects/…/<session>.jsonl`) | [`claude_code`] |
//! | `codex` | Codex CLI rollout (`~/.codex/sessions/…/rollout-….jsonl`) | [`codex`] |
//! | `otel-genai` | OpenTelemetry GenAI spans (any-agent `AgentTrace` JSON) | [`otel_genai`] |
//! | `mini-swe-agent` | mini-swe-agent trajectory (`*.traj.json`, `mini-swe-agent-1`) | [`mini_swe_agent`] |
//!
//! Importers are tolerant: a line type they do not know is kept as an extra and counted, a
//! truncated last line is skipped and counted. What cannot be a recording of the format
//! (an empty file, another format, a broken line inside the file) is an error naming the
//! file and line, before anything is written.

pub mod claude_code;
pub mod codex;
mod detect;
mod jsonl;
pub mod mini_swe_agent;
pub mod otel_genai;
pub mod transcript;
pub mod write;

use std::fmt;
use std::str::FromStr;

pub use detect::detect;
pub use transcript::{Counts, Entry, Finish, ModelCall, Report, Step, ToolResult, Transcript};
pub use write::{Imported, write};

/// A recording's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Claude Code session transcript (JSONL).
    ClaudeCode,
    /// Codex CLI rollout (JSONL).
    Codex,
    /// OpenTelemetry GenAI spans (JSON).
    OtelGenai,
    /// mini-swe-agent trajectory (JSON).
    MiniSweAgent,
}

impl Format {
    /// Every format, in the order `--format` lists them.
    pub const ALL: [Format; 4] = [
        Format::ClaudeCode,
        Format::Codex,
        Format::OtelGenai,
        Format::MiniSweAgent,
    ];

    /// The name `--format` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Format::ClaudeCode => "claude-code",
            Format::Codex => "codex",
            Format::OtelGenai => "otel-genai",
            Format::MiniSweAgent => "mini-swe-agent",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format `{s}`; one of: {}, auto", names.join(", "))
            })
    }
}

/// One file of a recording.
#[derive(Clone, Debug)]
pub struct Source {
    /// Its name as given (shown in errors and recorded with the run).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Why a recording cannot be imported. Nothing is written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No bytes.
    #[error("{file} is empty: there is nothing to import")]
    Empty {
        /// The file.
        file: String,
    },
    /// A line is not JSON (and is not a truncated last line).
    #[error(
        "{file}:{line}: not a JSON line ({what}); a {format} recording has one JSON object per line"
    )]
    Line {
        /// The file.
        file: String,
        /// Line number, from 1.
        line: usize,
        /// The format expected.
        format: Format,
        /// The parser's message.
        what: String,
    },
    /// The file is not a recording of the format.
    #[error("{file} is not a recording of format {format}: {why}")]
    NotFormat {
        /// The file.
        file: String,
        /// The format expected.
        format: Format,
        /// What is missing or wrong.
        why: String,
    },
    /// A file given after the recording is not part of it.
    #[error("{file} is not part of this {format} recording: {why}")]
    Extra {
        /// The file.
        file: String,
        /// The format.
        format: Format,
        /// Why.
        why: String,
    },
    /// The format could not be told from the file.
    #[error(
        "cannot tell the format of {file}: {why}; give the format instead of `auto` (claude-code, codex, otel-genai, mini-swe-agent)"
    )]
    Undetected {
        /// The file.
        file: String,
        /// What was seen.
        why: String,
    },
    /// The recording holds no task and no model call.
    #[error("{file}: the {format} recording holds no model call and no task")]
    Nothing {
        /// The file.
        file: String,
        /// The format.
        format: Format,
    },
}

/// Read `sources` (one recording; Claude Code also takes its sub-agents' files) as `format`.
///
/// # Errors
/// [`ImportError`]: empty input, a broken line, another format, nothing to import.
pub fn parse(format: Format, sources: &[Source]) -> Result<Transcript, ImportError> {
    let first = sources.first().ok_or_else(|| ImportError::Empty {
        file: "(no file)".into(),
    })?;
    for source in sources {
        if source.bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ImportError::Empty {
                file: source.name.clone(),
            });
        }
    }
    if format != Format::ClaudeCode && sources.len() > 1 {
        return Err(ImportError::Extra {
            file: sources[1].name.clone(),
            format,
            why: "a recording of this format is one file; import each file on its own".into(),
        });
    }
    let transcript = match format {
        Format::ClaudeCode => claude_code::parse(sources)?,
        Format::Codex => codex::parse(first)?,
        Format::OtelGenai => otel_genai::parse(first)?,
        Format::MiniSweAgent => mini_swe_agent::parse(first)?,
    };
    let models = transcript
        .entries
        .iter()
        .filter(|e| matches!(e.step, Step::Model(_) | Step::ModelError { .. }))
        .count();
    if models == 0 && transcript.task.is_empty() {
        return Err(ImportError::Nothing {
            file: first.name.clone(),
            format,
        });
    }
    Ok(transcript)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (`2025-12-10T19:37:45.343Z`).
pub(crate) fn rfc3339_ms(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text.trim_end_matches('Z')))
        .ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok().and_then(plausible_ms)
}

/// The largest count (tokens) or amount (millionths of a dollar) a recording is taken to
/// say: 2^53, beyond which JSON numbers are not exact. Larger values (`1e300`, `inf`) are
/// cut to it, so sums stay exact and never overflow.
pub const LARGEST: u64 = 1 << 53;

/// The latest time a recording is taken to say: 9999-12-31T23:59:59.999Z, in milliseconds
/// since the Unix epoch (the last a timestamp is written with four year digits). A later
/// one (seconds taken for milliseconds, say) is treated as no time.
pub const LATEST_MS: u64 = 253_402_300_799_999;

/// `ms` if it is a time a recording can mean ([`LATEST_MS`]).
pub(crate) fn plausible_ms(ms: u64) -> Option<u64> {
    (ms <= LATEST_MS).then_some(ms)
}

/// A JSON number or a numeric string (tracers write both) as `u64`, at most [`LARGEST`].
pub(crate) fn number(value: Option<&serde_json::Value>) -> u64 {
    raw_number(value).min(LARGEST)
}

/// A JSON number or a numeric string as `u64`, uncapped (times in nanoseconds).
pub(crate) fn raw_number(value: Option<&serde_json::Value>) -> u64 {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().or_else(|| n.as_f64().map(whole)).unwrap_or(0)
        }
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// A cost in US dollars (a number or a numeric string; absent: 0).
pub(crate) fn usd(value: Option<&serde_json::Value>) -> f64 {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// US dollars as millionths of a dollar, rounded (once per call, so a call's parts are
/// summed first).
pub(crate) fn micro(usd: f64) -> u64 {
    whole(usd * 1e6).min(LARGEST)
}

/// `x` rounded to a whole `u64`: negatives and NaN are 0, beyond `u64::MAX` is `u64::MAX`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // clamped first; the bound is only compared
fn whole(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= u64::MAX as f64 {
        u64::MAX
    } else {
        x.round() as u64
    }
}
