//! What a compaction says: the instruction of a summary request, and how the summary is
//! shown to the model in place of the messages it replaces.

use retrace_providers::ModelReply;

/// Longest summary asked for, in words.
pub const SUMMARY_WORDS: u64 = 1_500;

/// The last message of a summary request (after the messages to summarize), asking for at
/// most [`SUMMARY_WORDS`] words, or fewer when the spec allows replies of only `max_reply`
/// tokens (three words for every five tokens), so the summary is not cut at the token
/// limit. Part of every summary request's record: changing it changes what new runs send,
/// never what a recorded one rebuilds.
pub fn instruction(max_reply: Option<u64>) -> String {
    let words = max_reply.map_or(SUMMARY_WORDS, |t| (t * 3 / 5).clamp(50, SUMMARY_WORDS));
    format!(
        "Context compaction: the messages above are about to leave your context window. Write \
         a summary that will replace them, so you can continue the task without them. Keep it \
         under {words} words and include, under these headings: Goal (the task, in your \
         words); Progress (what has been done and found, with file paths, identifiers and \
         numbers exactly as seen); Open tasks; Decisions (and why); Artifacts (every artifact \
         handle mentioned, with what it holds); Next step. Do not call any tool: reply with \
         the summary only."
    )
}

/// The summary message the model is shown, from the summarizing reply: its text, or, when
/// the model gave none (it called a tool instead), the `previous` summary (the text shown
/// before, if any) followed by a note that the last `evicted` messages left without one —
/// so an empty reply never loses what earlier summaries held. `total` is how many messages
/// have left the conversation in all.
pub fn summary_text(
    reply: &ModelReply,
    previous: Option<&str>,
    evicted: u64,
    total: u64,
) -> String {
    let text = reply.text.trim();
    if text.is_empty() {
        let note = format!(
            "[{total} earlier messages have left the context window; the last {evicted} could \
             not be summarized. Re-read what you need.]"
        );
        return after(previous, &note);
    }
    format!(
        "[Context summary of the {total} earlier messages of this task, which have left the \
         context window]\n{text}"
    )
}

/// The summary shown after a compaction that dropped `evicted` messages without a summary
/// call (`compaction = "drop_oldest"`): the `previous` summary, if any, then a note saying
/// so. `total` is how many messages have left the conversation in all.
pub fn dropped_text(previous: Option<&str>, evicted: u64, total: u64) -> String {
    let note = format!(
        "[{total} earlier messages have left the context window; the last {evicted} were \
         dropped without a summary. Re-read what you need.]"
    );
    after(previous, &note)
}

/// `note` after the `previous` summary, or as the summary when there is none.
fn after(previous: Option<&str>, note: &str) -> String {
    match previous {
        Some(previous) => format!("{previous}\n{note}"),
        None => format!("[Context summary] {note}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instruction_asks_for_what_a_reply_can_hold() {
        assert!(instruction(None).contains("under 1500 words"));
        assert!(instruction(Some(1_000)).contains("under 600 words"));
        assert!(instruction(Some(10)).contains("under 50 words"));
    }

    #[test]
    fn the_summary_says_what_it_replaces() {
        let reply = ModelReply {
            text: "  Goal: count lines. ".into(),
            ..ModelReply::default()
        };
        let shown = summary_text(&reply, None, 12, 40);
        assert!(shown.starts_with("[Context summary of the 40 earlier messages"));
        assert!(shown.ends_with("\nGoal: count lines."));
        let silent = summary_text(&ModelReply::default(), None, 12, 40);
        assert!(silent.contains("last 12 could not be summarized"));
        // a later reply without text keeps what the earlier summary held
        let kept = summary_text(&ModelReply::default(), Some(&shown), 5, 45);
        assert!(kept.starts_with(&shown), "{kept}");
        assert!(kept.ends_with("the last 5 could not be summarized. Re-read what you need.]"));
        let dropped = dropped_text(Some(&shown), 5, 45);
        assert!(dropped.starts_with(&shown) && dropped.contains("5 were dropped"));
    }
}
