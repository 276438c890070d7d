//! The context engine: what of a long run's history each model request carries.
//!
//! A request holds, in this order (stable, so a provider's prompt cache keeps hitting): the
//! system prompt and tool catalog, the pinned task (the run's input, never evicted), the
//! latest compaction summary, then the conversation since the last compaction. Before each
//! model call the executor measures that request ([`tokens`]) and asks the pure
//! [`layout::plan`] whether it fits `window_tokens - reserve_tokens`; when it does not, the
//! oldest messages are compacted first — summarized by a recorded model call, or dropped —
//! and a `context_compacted` event says so. Tool results over `inline_result_tokens` reach
//! the model as [`artifact`] previews with a handle it can page through with
//! `artifact.read`. Everything the engine decides is a function of the log (recorded
//! replies and their usage, blob bytes, a versioned tokenizer), so resume, fork, replay and
//! evals rebuild exactly the requests the run sent.
//!
//! The settings are the spec's `[context]` table ([`Context`]).

pub mod artifact;
pub mod compaction;
pub mod layout;
pub mod tokens;

use serde::{Deserialize, Serialize};

use crate::spec::Provider;

/// How the oldest messages leave the conversation when the next request would not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    /// A model call summarizes them (goal, progress, open tasks, decisions, artifact
    /// handles, next step); the summary is shown in their place.
    #[default]
    Summarize,
    /// They are dropped, with no model call (cheaper; the model loses what they said).
    DropOldest,
}

/// The spec's `[context]` table, resolved: every value set (see [`Context::resolve`] for
/// the defaults). All sizes are in tokens as the model's provider counts them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The model's context window: prompt and reply together.
    pub window_tokens: u64,
    /// Kept free in every request, for the reply and for a compaction's summary.
    pub reserve_tokens: u64,
    /// A tool result longer than this reaches the model as an artifact preview.
    pub inline_result_tokens: u64,
    /// How compaction evicts.
    pub compaction: Compaction,
    /// The model that writes summaries (same provider; default: the run's model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_model: Option<String>,
}

/// `[context]` as written: every key optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    window_tokens: Option<u64>,
    reserve_tokens: Option<u64>,
    inline_result_tokens: Option<u64>,
    compaction: Option<Compaction>,
    compaction_model: Option<String>,
}

impl From<&Context> for RawContext {
    /// A resolved context as a table giving every key.
    fn from(c: &Context) -> Self {
        Self {
            window_tokens: Some(c.window_tokens),
            reserve_tokens: Some(c.reserve_tokens),
            inline_result_tokens: Some(c.inline_result_tokens),
            compaction: Some(c.compaction),
            compaction_model: c.compaction_model.clone(),
        }
    }
}

/// The nominal window of the scripted provider (it has none; this keeps its runs on the
/// same code path as real ones).
pub const SCRIPTED_WINDOW: u64 = 128_000;

/// Smallest window retrace works with.
pub const MIN_WINDOW: u64 = 2_048;

/// Largest window accepted (a billion tokens: far beyond any model, and far from overflow in
/// the budget arithmetic).
pub const MAX_WINDOW: u64 = 1_000_000_000;

/// Context windows of well-known models, by name prefix (longest first wins), in tokens,
/// as their providers document them.
const KNOWN_WINDOWS: [(&str, u64); 27] = [
    ("gpt-4.1", 1_047_576),
    ("gpt-4.5", 128_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-1106", 128_000),
    ("gpt-4-0125", 128_000),
    ("gpt-4-vision", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-5", 400_000),
    ("o1-mini", 128_000),
    ("o1-preview", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("claude-", 200_000),
    ("llama3.1", 131_072),
    ("llama-3.1", 131_072),
    ("llama3.2", 131_072),
    ("llama-3.2", 131_072),
    ("llama3.3", 131_072),
    ("llama-3.3", 131_072),
    ("qwen2.5", 32_768),
    ("mistral-large", 128_000),
    ("deepseek-chat", 128_000),
    ("gemini-", 1_048_576),
];

/// The documented context window of `model`, if it is a well-known one. A provider prefix
/// (`openai/gpt-4o`) and case are ignored.
pub fn known_window(model: &str) -> Option<u64> {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    KNOWN_WINDOWS
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, window)| window)
}

impl Context {
    /// `[context]` resolved for `model` of `provider`, or what is wrong with it (in words,
    /// naming the key). Defaults: `window_tokens` the model's documented window
    /// ([`known_window`]; [`SCRIPTED_WINDOW`] for the scripted provider; required for any
    /// other model), `reserve_tokens` a quarter of the window but at most 32,768,
    /// `inline_result_tokens` an eighth of what is left but at most 8,192, `compaction`
    /// `summarize`.
    ///
    /// The reserve must hold the longest reply the spec allows (`max_tokens` or
    /// `max_completion_tokens` of `[model]`, given as `max_reply`): by default it is raised
    /// to that, and a `reserve_tokens` set below it is refused, since a provider counts the
    /// reply's room against the window and would refuse every request near the limit.
    pub fn resolve(
        raw: RawContext,
        provider: Provider,
        model: &str,
        max_reply: Option<u64>,
    ) -> Result<Self, String> {
        let window = match raw.window_tokens {
            Some(window) => window,
            None => match (known_window(model), provider) {
                (Some(window), _) => window,
                (None, Provider::Scripted) => SCRIPTED_WINDOW,
                (None, _) => {
                    return Err(format!(
                        "the context window of model `{model}` is not known to retrace: set \
                         `window_tokens` under [context] to the model's context size in tokens \
                         (e.g. `window_tokens = 32768` under `[context]`)"
                    ));
                }
            },
        };
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(format!(
                "[context] window_tokens = {window} is out of range ({MIN_WINDOW} to \
                 {MAX_WINDOW})"
            ));
        }
        let reserve = match (raw.reserve_tokens, max_reply) {
            (Some(reserve), Some(reply)) if reserve < reply => {
                return Err(format!(
                    "[context] reserve_tokens = {reserve} is less than the reply the spec \
                     allows ([model] max_tokens = {reply}); the provider counts that room \
                     against the window: raise reserve_tokens to at least {reply}, or lower \
                     max_tokens"
                ));
            }
            (Some(reserve), _) => reserve,
            (None, reply) => (window / 4).min(32_768).max(reply.unwrap_or(0)),
        };
        if reserve == 0 || reserve > window * 3 / 4 {
            return Err(format!(
                "[context] reserve_tokens = {reserve} leaves too little of the {window}-token \
                 window for the conversation: give it between 1 and {} tokens",
                window * 3 / 4
            ));
        }
        let usable = window - reserve;
        let inline = raw.inline_result_tokens.unwrap_or((usable / 8).min(8_192));
        if inline == 0 || inline > usable / 4 {
            return Err(format!(
                "[context] inline_result_tokens = {inline} must be between 1 and {} (a quarter \
                 of the {usable} tokens a request may hold), or one tool result could fill the \
                 window",
                usable / 4
            ));
        }
        if raw.compaction_model.as_deref().is_some_and(str::is_empty) {
            return Err("[context] compaction_model is empty; name a model or leave it out".into());
        }
        Ok(Self {
            window_tokens: window,
            reserve_tokens: reserve,
            inline_result_tokens: inline,
            compaction: raw.compaction.unwrap_or_default(),
            compaction_model: raw.compaction_model,
        })
    }

    /// Tokens a request may hold: `window_tokens - reserve_tokens`.
    pub fn limit(&self) -> u64 {
        self.window_tokens - self.reserve_tokens
    }

    /// Bytes of a tool result's text shown inline (about four bytes a token), above which it
    /// becomes an artifact preview.
    pub fn inline_bytes(&self) -> usize {
        usize::try_from(self.inline_result_tokens.saturating_mul(4)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_windows_match_by_longest_prefix_ignoring_case_and_provider_prefix() {
        assert_eq!(known_window("gpt-4o-mini"), Some(128_000));
        assert_eq!(known_window("gpt-4"), Some(8_192));
        assert_eq!(known_window("gpt-4-turbo-2024-04-09"), Some(128_000));
        assert_eq!(known_window("openai/GPT-4.1-mini"), Some(1_047_576));
        assert_eq!(known_window("claude-sonnet-4-5"), Some(200_000));
        assert_eq!(known_window("o1-mini"), Some(128_000));
        assert_eq!(known_window("gpt-4-1106-preview"), Some(128_000));
        assert_eq!(known_window("gpt-4.5-preview"), Some(128_000));
        assert_eq!(known_window("test-model"), None);
    }

    #[test]
    fn defaults_follow_the_window_and_unknown_models_must_say_theirs() {
        let c = Context::resolve(RawContext::default(), Provider::Openai, "gpt-4o", None).unwrap();
        assert_eq!(
            (c.window_tokens, c.reserve_tokens, c.inline_result_tokens),
            (128_000, 32_000, 8_192)
        );
        assert_eq!(c.limit(), 96_000);
        let raw = RawContext {
            window_tokens: Some(32_000),
            ..RawContext::default()
        };
        let c = Context::resolve(raw, Provider::Openai, "test-model", None).unwrap();
        assert_eq!((c.reserve_tokens, c.inline_result_tokens), (8_000, 3_000));
        let e = Context::resolve(RawContext::default(), Provider::Openai, "test-model", None);
        assert!(e.unwrap_err().contains("window_tokens"));
        let scripted =
            Context::resolve(RawContext::default(), Provider::Scripted, "demo", None).unwrap();
        assert_eq!(scripted.window_tokens, SCRIPTED_WINDOW);
    }

    #[test]
    fn the_reserve_holds_the_longest_reply_the_spec_allows() {
        let raw = |reserve| RawContext {
            window_tokens: Some(8_000),
            reserve_tokens: reserve,
            ..RawContext::default()
        };
        let c = Context::resolve(raw(None), Provider::Openai, "m", Some(3_500)).unwrap();
        assert_eq!(c.reserve_tokens, 3_500, "raised from a quarter (2,000)");
        let e = Context::resolve(raw(Some(2_000)), Provider::Openai, "m", Some(3_500));
        assert!(e.unwrap_err().contains("max_tokens = 3500"));
    }

    #[test]
    fn impossible_sizes_are_refused_naming_the_key() {
        let raw = |w, r, i| RawContext {
            window_tokens: Some(w),
            reserve_tokens: r,
            inline_result_tokens: i,
            ..RawContext::default()
        };
        let e = |raw| Context::resolve(raw, Provider::Openai, "m", None).unwrap_err();
        assert!(e(raw(1_000, None, None)).contains("window_tokens"));
        assert!(e(raw(u64::MAX, None, None)).contains("out of range"));
        assert!(e(raw(32_000, Some(30_000), None)).contains("reserve_tokens"));
        assert!(e(raw(32_000, None, Some(20_000))).contains("inline_result_tokens"));
    }
}
