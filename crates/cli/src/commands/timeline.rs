//! The live timeline of a drive, printed the same whether the run is driven in this process
//! (`run`, `resume`) or followed through retrace serve: one line per event, and the model's
//! streamed text between them on lines of their own, as `        │ text`.
//!
//! Output goes through a buffer, not a `write` per text delta: on a terminal the buffer is
//! flushed at most every [`TEXT_FLUSH`] while text streams, and at every event line; into a
//! pipe or file only at event lines (or when the buffer fills). The bytes are the same
//! either way. Callers print nothing else to stdout while a `Timeline` is alive without
//! calling [`Timeline::end_text`] first, which flushes; dropping it flushes too.

use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::time::{Duration, Instant};

/// How long streamed text may wait in the buffer on a terminal.
pub const TEXT_FLUSH: Duration = Duration::from_millis(50);

/// Where the timeline is (in a line of streamed text or not), and its buffered output.
#[derive(Debug)]
pub struct Timeline<W: Write = Stdout> {
    out: BufWriter<W>,
    streaming: bool,
    /// A person is watching: flush streamed text every [`TEXT_FLUSH`], not only at events.
    interactive: bool,
    /// When the buffer was last written out (None: not yet).
    flushed: Option<Instant>,
}

impl Default for Timeline {
    fn default() -> Self {
        let stdout = std::io::stdout();
        let interactive = stdout.is_terminal();
        Self::new(stdout, interactive)
    }
}

impl<W: Write> Timeline<W> {
    /// A timeline writing to `out`; `interactive` when `out` is a terminal.
    pub fn new(out: W, interactive: bool) -> Self {
        Self {
            out: BufWriter::with_capacity(16 * 1024, out),
            streaming: false,
            interactive,
            flushed: None,
        }
    }

    /// Print text the model streamed, continuing the text line under way.
    pub fn text(&mut self, text: &str) {
        self.text_at(text, Instant::now());
    }

    /// [`Timeline::text`] at time `now` (tests set the clock).
    fn text_at(&mut self, text: &str, now: Instant) {
        if !self.streaming {
            let _ = self.out.write_all("        │ ".as_bytes());
            self.streaming = true;
        }
        let _ = self
            .out
            .write_all(text.replace('\n', "\n        │ ").as_bytes());
        if self.interactive
            && self
                .flushed
                .is_none_or(|at| now.duration_since(at) >= TEXT_FLUSH)
        {
            self.flush(now);
        }
    }

    /// Print an event's line: `   SEQ  KIND                  SUMMARY`, and write out what
    /// is buffered, so each event shows (and reaches a pipe) as it happens.
    pub fn event(&mut self, seq: u64, kind: &str, summary: &str) {
        self.close_text();
        let _ = writeln!(self.out, "{seq:>6}  {kind:<20}  {summary}");
        self.flush(Instant::now());
    }

    /// End a line of streamed text left open (a drive that stopped mid-reply), so what
    /// follows starts on a line of its own; and write out what is buffered, so output
    /// printed after this (not through the timeline) comes after it.
    pub fn end_text(&mut self) {
        self.close_text();
        self.flush(Instant::now());
    }

    fn close_text(&mut self) {
        if self.streaming {
            let _ = self.out.write_all(b"\n");
            self.streaming = false;
        }
    }

    fn flush(&mut self, now: Instant) {
        let _ = self.out.flush();
        self.flushed = Some(now);
    }
}

impl<W: Write> Drop for Timeline<W> {
    /// Nothing buffered is lost when a drive ends early (an error returned past the caller).
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::{TEXT_FLUSH, Timeline};
    use std::cell::RefCell;
    use std::io::Write;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    /// Records each write it is given, as the syscalls stdout would make.
    #[derive(Clone, Default)]
    struct Writes(Rc<RefCell<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Writes {
        fn count(&self) -> usize {
            self.0.borrow().len()
        }
        fn text(&self) -> String {
            String::from_utf8(self.0.borrow().concat()).unwrap_or_default()
        }
    }

    /// One step's worth: 60 deltas of one word, then two events.
    fn step(timeline: &mut Timeline<Writes>, start: Instant, gap: Duration) -> Instant {
        let mut now = start;
        for i in 0..60 {
            timeline.text_at(&format!("word{i} "), now);
            now += gap;
        }
        timeline.event(1, "model_replied", "60 words");
        timeline.event(2, "tool_called", "fs.list");
        now
    }

    #[test]
    fn into_a_pipe_text_is_written_at_events_only() {
        let writes = Writes::default();
        let mut timeline = Timeline::new(writes.clone(), false);
        step(&mut timeline, Instant::now(), Duration::from_millis(100));
        drop(timeline);
        // slow deltas make no difference: one write per event line
        assert_eq!(writes.count(), 2, "{:?}", writes.0.borrow());
        assert!(writes.text().starts_with("        │ word0 word1 "));
        assert!(writes.text().ends_with("word59 \n     1  model_replied         60 words\n     2  tool_called           fs.list\n"));
    }

    #[test]
    fn on_a_terminal_text_is_written_at_most_every_50_ms() {
        let writes = Writes::default();
        let mut timeline = Timeline::new(writes.clone(), true);
        let start = Instant::now();
        // (events read the real clock; the deltas' clock runs ahead of it)
        // 60 deltas 10 ms apart: the first shows at once, then one write per 50 ms
        step(&mut timeline, start, Duration::from_millis(10));
        let text_writes = writes.count() - 2;
        assert!(
            (12..=13).contains(&text_writes),
            "{text_writes} writes for 600 ms of text"
        );
        // 60 deltas all at once: the first shows, the rest wait for the event
        let before = writes.count();
        step(&mut timeline, Instant::now() + TEXT_FLUSH, Duration::ZERO);
        assert_eq!(writes.count() - before, 3);
    }

    #[test]
    fn the_bytes_are_the_same_as_unbuffered_and_nothing_is_lost_on_drop() {
        let writes = Writes::default();
        let mut timeline = Timeline::new(writes.clone(), false);
        timeline.text_at("a\nb", Instant::now());
        timeline.event(3, "run_finished", "ok");
        timeline.text_at("cut off", Instant::now());
        assert!(!writes.text().contains("cut off"));
        drop(timeline);
        assert_eq!(
            writes.text(),
            "        │ a\n        │ b\n     3  run_finished          ok\n        │ cut off"
        );
        let writes = Writes::default();
        let mut timeline = Timeline::new(writes.clone(), false);
        timeline.text_at("left open", Instant::now());
        timeline.end_text();
        assert_eq!(writes.text(), "        │ left open\n");
    }
}
