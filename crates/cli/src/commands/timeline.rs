//! The live timeline of a drive, printed the same whether the run is driven in this process
//! (`run`, `resume`) or followed through retrace serve: one line per event, and the model's
//! streamed text between them on lines of their own, as `        │ text`.

use std::io::Write;

/// Where the timeline is: in a line of streamed text or not.
#[derive(Debug, Default)]
pub struct Timeline {
    streaming: bool,
}

impl Timeline {
    /// Print text the model streamed, continuing the text line under way.
    pub fn text(&mut self, text: &str) {
        if !self.streaming {
            print!("        │ ");
            self.streaming = true;
        }
        print!("{}", text.replace('\n', "\n        │ "));
        let _ = std::io::stdout().flush();
    }

    /// Print an event's line: `   SEQ  KIND                  SUMMARY`.
    pub fn event(&mut self, seq: u64, kind: &str, summary: &str) {
        self.end_text();
        println!("{seq:>6}  {kind:<20}  {summary}");
    }

    /// End a line of streamed text left open (a drive that stopped mid-reply), so what
    /// follows starts on a line of its own.
    pub fn end_text(&mut self) {
        if self.streaming {
            println!();
            self.streaming = false;
        }
    }
}
