//! What a compaction says: the instruction of a summary request, and how the summary is
//! shown to the model in place of the messages it replaces.

use retrace_providers::ModelReply;

/// The last message of a summary request (after the messages to summarize). Part of every
/// summary request's record: changing it changes what new runs send, never what a recorded
/// one rebuilds.
pub const INSTRUCTION: &str = "\
Context compaction: the messages above are about to leave your context window. Write a \
summary that will replace them, so you can continue the task without them. Keep it under \
1,500 words and include, under these headings: Goal (the task, in your words); Progress \
(what has been done and found, with file paths, identifiers and numbers exactly as seen); \
Open tasks; Decisions (and why); Artifacts (every artifact handle mentioned, with what it \
holds); Next step. Do not call any tool: reply with the summary only.";

/// The summary message the model is shown, from the summarizing reply: its text, or, when
/// the model gave none (it called a tool instead), a note that `evicted` messages left
/// without a summary. `total` is how many messages have left the conversation in all.
pub fn summary_text(reply: &ModelReply, evicted: u64, total: u64) -> String {
    let text = reply.text.trim();
    if text.is_empty() {
        return format!(
            "[Context summary: {total} earlier messages have left the context window; the \
             last {evicted} could not be summarized. Re-read what you need.]"
        );
    }
    format!(
        "[Context summary of the {total} earlier messages of this task, which have left the \
         context window]\n{text}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_it_replaces() {
        let reply = ModelReply {
            text: "  Goal: count lines. ".into(),
            ..ModelReply::default()
        };
        let shown = summary_text(&reply, 12, 40);
        assert!(shown.starts_with("[Context summary of the 40 earlier messages"));
        assert!(shown.ends_with("\nGoal: count lines."));
        let silent = summary_text(&ModelReply::default(), 12, 40);
        assert!(silent.contains("last 12 could not be summarized"));
    }
}
