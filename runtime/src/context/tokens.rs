//! Token counts of what a request carries, per provider family.
//!
//! OpenAI-style models are counted with their BPE (`tiktoken-rs`: `o200k_base` for the
//! GPT-4o/4.1/5 and o-series families, `cl100k_base` for GPT-4 and GPT-3.5, `o200k_base`
//! for any other model an OpenAI-compatible server runs, whose own tokenizer is unknown);
//! other providers get an estimate of one token per 3.5 bytes. Either way the count is a
//! pure function of the text and the tokenizer's [`Tokenizer::name`], which each request
//! record names, and the executor scales it by what the provider reported for the previous
//! request ([`super::layout::calibrate`]), so budgets track what the server counts.
//!
//! Message overheads follow OpenAI's published counting recipe (a few tokens per message
//! for its role and separators); they are small and the calibration absorbs the rest.

use retrace_providers::{ChatMessage, ToolDef};

use crate::spec::Provider;

/// Tokens added per message for its role and separators.
pub const PER_MESSAGE: u64 = 4;

/// Text longer than this is counted in pieces of about this many bytes (cut at a line end
/// where one is near): BPE merging is quadratic in the length of one unbroken piece, and a
/// 1 MB base64 blob must not stall a step. Counts differ from whole-text ones by a token
/// or two per piece.
const PIECE_BYTES: usize = 4_096;

/// A way of counting tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    /// OpenAI's `o200k_base` BPE.
    O200k,
    /// OpenAI's `cl100k_base` BPE.
    Cl100k,
    /// One token per 3.5 bytes of UTF-8, rounded up.
    Estimate,
}

impl Tokenizer {
    /// The tokenizer for `model` served by `provider`.
    pub fn for_model(provider: Provider, model: &str) -> Self {
        match provider {
            Provider::Openai => {
                let name = model
                    .rsplit('/')
                    .next()
                    .unwrap_or(model)
                    .to_ascii_lowercase();
                let older = ["gpt-4-", "gpt-3.5", "gpt-35"];
                if name == "gpt-4" || older.iter().any(|p| name.starts_with(p)) {
                    Self::Cl100k
                } else {
                    Self::O200k
                }
            }
            Provider::Anthropic | Provider::Scripted => Self::Estimate,
        }
    }

    /// Its name and version, as request records name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::O200k => "o200k_base",
            Self::Cl100k => "cl100k_base",
            Self::Estimate => "utf8/3.5",
        }
    }

    /// Tokens of `text`.
    pub fn count(self, text: &str) -> u64 {
        let mut total = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let piece = if rest.len() <= PIECE_BYTES {
                rest
            } else {
                let cut = crate::tools::cut(rest, PIECE_BYTES);
                match cut.rfind('\n') {
                    Some(nl) if nl >= PIECE_BYTES / 2 => &cut[..=nl],
                    _ if cut.is_empty() => &rest[..rest.chars().next().map_or(0, char::len_utf8)],
                    _ => cut,
                }
            };
            total += self.count_piece(piece);
            rest = &rest[piece.len()..];
        }
        total
    }

    fn count_piece(self, text: &str) -> u64 {
        let bpe = match self {
            Self::O200k => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            Self::Estimate => return (text.len() as u64 * 2).div_ceil(7),
        };
        bpe.encode_ordinary(text).len() as u64
    }

    /// Tokens of one message as sent: its text, tool calls (name and arguments), reasoning,
    /// and [`PER_MESSAGE`].
    pub fn message(self, message: &ChatMessage) -> u64 {
        PER_MESSAGE
            + match message {
                ChatMessage::User { content } => self.count(content),
                ChatMessage::Tool {
                    call_id, content, ..
                } => self.count(call_id) + self.count(content),
                ChatMessage::Assistant {
                    text,
                    tool_calls,
                    reasoning,
                } => {
                    self.count(text)
                        + tool_calls
                            .iter()
                            .map(|c| {
                                PER_MESSAGE
                                    + self.count(&c.id)
                                    + self.count(&c.name)
                                    + self.count(&c.arguments.to_string())
                            })
                            .sum::<u64>()
                        + reasoning
                            .iter()
                            .map(|r| {
                                self.count(&r.text)
                                    + r.signature.as_deref().map_or(0, |s| self.count(s))
                                    + r.redacted.as_deref().map_or(0, |s| self.count(s))
                            })
                            .sum::<u64>()
                }
            }
    }

    /// Tokens of the system prompt and the tool catalog.
    pub fn header(self, system: &str, tools: &[ToolDef]) -> u64 {
        PER_MESSAGE
            + self.count(system)
            + tools
                .iter()
                .map(|t| {
                    PER_MESSAGE
                        + self.count(&t.name)
                        + self.count(&t.description)
                        + self.count(&t.parameters.to_string())
                })
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_get_their_bpe_others_the_estimate() {
        assert_eq!(
            Tokenizer::for_model(Provider::Openai, "gpt-4o"),
            Tokenizer::O200k
        );
        assert_eq!(
            Tokenizer::for_model(Provider::Openai, "gpt-4-0613"),
            Tokenizer::Cl100k
        );
        assert_eq!(
            Tokenizer::for_model(Provider::Openai, "qwen2.5-7b"),
            Tokenizer::O200k
        );
        assert_eq!(
            Tokenizer::for_model(Provider::Anthropic, "claude-sonnet-4-5"),
            Tokenizer::Estimate
        );
    }

    #[test]
    fn counts_are_the_bpe_s_and_long_text_is_counted_in_pieces_close_to_whole() {
        // "hello world" is two tokens in both OpenAI encodings
        assert_eq!(Tokenizer::O200k.count("hello world"), 2);
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
        assert_eq!(Tokenizer::Estimate.count("1234567"), 2);
        assert_eq!(Tokenizer::Estimate.count(""), 0);
        let line = "The quick brown fox jumps over the lazy dog near the river bank.\n";
        let text = line.repeat(400);
        let pieces = Tokenizer::O200k.count(&text);
        let whole = tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(&text)
            .len() as u64;
        assert!(pieces.abs_diff(whole) <= whole / 100, "{pieces} vs {whole}");
        // an unbroken run of one character, multibyte, is still counted (and quickly)
        let blob = "é".repeat(50_000);
        assert!(Tokenizer::O200k.count(&blob) > 0);
    }

    #[test]
    fn a_message_counts_its_calls_and_overhead() {
        let user = ChatMessage::User {
            content: "hello world".into(),
        };
        assert_eq!(Tokenizer::O200k.message(&user), PER_MESSAGE + 2);
        let tool = ChatMessage::Tool {
            call_id: "c1".into(),
            content: "hello world".into(),
            is_error: false,
        };
        assert!(Tokenizer::O200k.message(&tool) > Tokenizer::O200k.message(&user));
    }
}
