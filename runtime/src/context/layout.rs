//! The budget arithmetic of a request: pure functions of token counts, no IO, no clock.
//!
//! [`plan`] decides, for the next request, whether it fits the budget as it is, or how many
//! of the oldest conversation messages must be compacted first; [`calibrate`] and
//! [`after_overflow`] turn what the provider counted (a reply's usage, an overflow error's
//! numbers) into the scale applied to retrace's own counts. Scales are integers in
//! thousandths (per mille), so every decision is exact and the same on every machine.

use retrace_replay::Role;

/// Scale when nothing has been reported yet: counts taken as they are.
pub const UNIT: u64 = 1_000;

/// Scales outside this range are clamped: a provider reporting a tenth or ten times of
/// retrace's count is misreporting, not tokenizing differently.
pub const SCALE_RANGE: (u64, u64) = (500, 8_000);

/// After a compaction the recent messages kept take at most this share (per mille) of the
/// request's limit, so the request drops well below the window, not just under it, and
/// the next compaction is many steps away.
pub const KEEP_PERMILLE: u64 = 250;

/// Tokens set aside for the instruction of a summary request.
pub const INSTRUCTION_TOKENS: u64 = 512;

/// What a request would hold, in retrace's own (uncalibrated) token counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measure {
    /// Everything before the conversation: system prompt, tools, pinned task, summary.
    pub fixed: u64,
    /// The conversation's messages, oldest first: who said each and its tokens.
    pub messages: Vec<(Role, u64)>,
}

impl Measure {
    /// Uncalibrated tokens of the whole request.
    pub fn total(&self) -> u64 {
        self.fixed + self.messages.iter().map(|(_, t)| t).sum::<u64>()
    }
}

/// What to do before the next model call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The request fits: send it.
    Send,
    /// Compact the oldest `evict` messages first (at least one; never leaving a tool result
    /// first, which would answer a call the model no longer sees).
    Compact {
        /// Messages to evict from the front of the conversation.
        evict: usize,
    },
    /// What cannot be compacted away is over the limit: the system prompt, tools, task and
    /// summary, or with them the oldest message, too large for a summary request to carry.
    TooLarge {
        /// Calibrated tokens of what cannot be compacted away.
        fixed: u64,
    },
}

pub use retrace_replay::request::scaled;

/// The plan for a request measuring `measure`, allowed `limit` calibrated tokens and at
/// most `max_messages` conversation messages, counts scaled by `scale`. A summary request
/// must fit too, so with `summarize` the evicted part is capped to what one summary
/// request can carry (a later compaction takes the rest).
pub fn plan(
    measure: &Measure,
    limit: u64,
    scale: u64,
    max_messages: usize,
    summarize: bool,
) -> Plan {
    let messages = &measure.messages;
    let total = scaled(measure.total(), scale);
    if total <= limit && messages.len() < max_messages {
        return Plan::Send;
    }
    let fixed = scaled(measure.fixed, scale);
    if fixed > limit {
        return Plan::TooLarge { fixed };
    }
    // a valid cut leaves no tool result first
    let valid = |n: usize| n == messages.len() || messages[n].0 != Role::Tool;
    // a limit is under `super::MAX_WINDOW` (10^9), so this cannot overflow
    let keep = limit * KEEP_PERMILLE / UNIT;
    let mut kept: u64 = 0;
    let mut from = messages.len();
    // the newest messages within `keep` and half the message cap
    while from > 0 {
        let next = kept + scaled(messages[from - 1].1, scale);
        if next > keep || messages.len() - from + 1 > max_messages / 2 {
            break;
        }
        kept = next;
        from -= 1;
    }
    let mut evict = from.max(1);
    while !valid(evict) {
        evict += 1;
    }
    if summarize {
        // what one summary request can carry after the fixed part and the instruction
        let room = limit.saturating_sub(fixed + INSTRUCTION_TOKENS);
        let mut carried = 0;
        let mut cap = 0;
        while cap < messages.len() {
            let next = carried + scaled(messages[cap].1, scale);
            if next > room {
                break;
            }
            carried = next;
            cap += 1;
        }
        while cap > 0 && !valid(cap) {
            cap -= 1;
        }
        if cap == 0 {
            // not even the oldest message (and what answers it) fits a summary request
            let first = messages.first().map_or(0, |(_, t)| scaled(*t, scale));
            return Plan::TooLarge {
                fixed: fixed.saturating_add(first),
            };
        }
        evict = evict.min(cap);
    }
    Plan::Compact { evict }
}

/// The scale after a reply: the provider counted `reported` tokens for a request retrace
/// measured at `measured` (uncalibrated). `previous` stays when either is unknown (0).
pub fn calibrate(previous: u64, measured: u64, reported: u64) -> u64 {
    if measured == 0 || reported == 0 {
        return previous;
    }
    clamp((u128::from(reported) * u128::from(UNIT)).div_ceil(u128::from(measured)))
}

/// The scale after the provider refused a request retrace measured at `measured` as over
/// its window: from the provider's count of it (`requested`) when the error gave one,
/// else at least enough to put it over the provider's `limit`, else a quarter more than
/// `previous`; with 5% to spare, as the next request is compacted against it.
pub fn after_overflow(
    previous: u64,
    measured: u64,
    requested: Option<u64>,
    limit: Option<u64>,
) -> u64 {
    let grown = previous * 5 / 4;
    let from = |tokens: u64| {
        (u128::from(tokens) * u128::from(UNIT) * 105 / 100).div_ceil(u128::from(measured.max(1)))
    };
    match (requested, limit) {
        (Some(requested), _) if measured > 0 => clamp(from(requested)),
        (None, Some(limit)) if measured > 0 => clamp(from(limit).max(u128::from(grown))),
        _ => clamp(u128::from(grown)),
    }
}

/// The limit after the provider refused a request as over its window: at most the share of
/// the refused request's calibrated tokens (`refused`), and of the provider's window when
/// the error named it (`window`), that the spec's own limit is of its window
/// (`spec_limit / spec_window`). So the next request is smaller than the refused one
/// whatever the error said, and the reserve keeps its share.
pub fn limit_after_overflow(
    limit: u64,
    refused: u64,
    window: Option<u64>,
    spec_limit: u64,
    spec_window: u64,
) -> u64 {
    let share = |tokens: u64| {
        u64::try_from(u128::from(tokens) * u128::from(spec_limit) / u128::from(spec_window.max(1)))
            .unwrap_or(u64::MAX)
    };
    let mut limit = limit.min(share(refused));
    if let Some(window) = window {
        limit = limit.min(share(window));
    }
    limit
}

fn clamp(scale: u128) -> u64 {
    u64::try_from(scale)
        .unwrap_or(u64::MAX)
        .clamp(SCALE_RANGE.0, SCALE_RANGE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(fixed: u64, messages: &[(Role, u64)]) -> Measure {
        Measure {
            fixed,
            messages: messages.to_vec(),
        }
    }

    use Role::{Assistant as A, Tool as T, User as U};

    #[test]
    fn a_request_within_the_limit_is_sent_as_it_is() {
        let m = measure(100, &[(U, 50), (A, 20), (T, 30)]);
        assert_eq!(m.total(), 200);
        assert_eq!(plan(&m, 200, UNIT, 256, true), Plan::Send);
        // the scale applies: 200 counted is 220 reported; the newest exchange (a call and
        // its result) is over the quarter kept, and a cut may not split it: all go
        assert_eq!(plan(&m, 219, 1_100, 256, false), Plan::Compact { evict: 3 });
        // (a summary request would not fit at all next to the instruction: too large)
        assert!(matches!(
            plan(&m, 219, 1_100, 256, true),
            Plan::TooLarge { .. }
        ));
    }

    #[test]
    fn compaction_keeps_the_newest_quarter_and_never_starts_with_a_tool_result() {
        // limit 300: keep 75 tokens of recent messages
        let m = measure(
            50,
            &[
                (U, 60),
                (A, 60),
                (T, 60),
                (A, 40),
                (T, 40),
                (A, 30),
                (T, 30),
            ],
        );
        // the newest within 75 are the last two (60); the cut before them is valid
        assert_eq!(plan(&m, 300, UNIT, 256, false), Plan::Compact { evict: 5 });
        // the kept part then fits well below the limit
        let kept: u64 = m.messages[5..].iter().map(|(_, t)| t).sum();
        assert!(m.fixed + kept <= 300 / 2);
    }

    #[test]
    fn a_summary_request_must_fit_so_a_big_backlog_is_compacted_in_parts() {
        // limit 1000, fixed 100, instruction 512 → a summary request carries 388 tokens
        let msgs: Vec<(Role, u64)> = (0..20)
            .map(|i| (if i % 2 == 0 { A } else { T }, 100))
            .collect();
        let m = measure(100, &msgs);
        let Plan::Compact { evict } = plan(&m, 1_000, UNIT, 256, true) else {
            panic!()
        };
        // 3 messages fit (300 ≤ 388), and the cut may not leave a tool result first: 2
        assert_eq!(evict, 2);
        // a summary request that could not carry even the oldest message is never sent
        let huge = measure(100, &[(U, 2_000), (A, 10)]);
        assert_eq!(
            plan(&huge, 1_000, UNIT, 256, true),
            Plan::TooLarge { fixed: 2_100 }
        );
        // dropping (no summary request) evicts down to the keep target at once
        let Plan::Compact { evict } = plan(&m, 1_000, UNIT, 256, false) else {
            panic!()
        };
        assert_eq!(evict, 18);
    }

    #[test]
    fn the_message_cap_compacts_even_when_tokens_fit() {
        let msgs: Vec<(Role, u64)> = (0..10).map(|_| (U, 1)).collect();
        let m = measure(0, &msgs);
        assert_eq!(plan(&m, 1_000, UNIT, 10, false), Plan::Compact { evict: 5 });
        assert_eq!(plan(&m, 1_000, UNIT, 11, false), Plan::Send);
    }

    #[test]
    fn what_cannot_be_compacted_away_is_too_large() {
        let m = measure(500, &[(U, 10)]);
        assert_eq!(
            plan(&m, 400, UNIT, 256, true),
            Plan::TooLarge { fixed: 500 }
        );
        assert_eq!(
            plan(&m, 400, 2_000, 256, true),
            Plan::TooLarge { fixed: 1_000 }
        );
    }

    #[test]
    fn calibration_follows_the_provider_s_count_within_bounds() {
        assert_eq!(calibrate(UNIT, 1_000, 1_250), 1_250);
        assert_eq!(calibrate(1_250, 0, 900), 1_250);
        assert_eq!(calibrate(1_250, 1_000, 0), 1_250);
        assert_eq!(calibrate(UNIT, 1_000, 100), SCALE_RANGE.0);
        assert_eq!(calibrate(UNIT, 3, 1_000_000), SCALE_RANGE.1);
    }

    #[test]
    fn an_overflow_scales_from_the_provider_s_numbers_with_margin() {
        // OpenAI: "…maximum context length is 32000 tokens. However, your messages resulted in 40000"
        assert_eq!(
            after_overflow(UNIT, 30_000, Some(40_000), Some(32_000)),
            1_400
        );
        // only the limit: at least over it
        assert_eq!(after_overflow(UNIT, 30_000, None, Some(32_000)), 1_250);
        assert_eq!(after_overflow(UNIT, 20_000, None, Some(32_000)), 1_680);
        // nothing: a quarter more
        assert_eq!(after_overflow(1_200, 30_000, None, None), 1_500);
    }

    #[test]
    fn after_an_overflow_the_limit_drops_below_what_was_refused_and_the_named_window() {
        // spec: window 64k, limit 48k (a quarter reserved)
        assert_eq!(
            limit_after_overflow(48_000, 17_000, Some(16_000), 48_000, 64_000),
            12_000
        );
        assert_eq!(
            limit_after_overflow(48_000, 20_000, None, 48_000, 64_000),
            15_000
        );
        // a limit learned before stays when lower
        assert_eq!(
            limit_after_overflow(9_000, 20_000, Some(16_000), 48_000, 64_000),
            9_000
        );
    }
}
