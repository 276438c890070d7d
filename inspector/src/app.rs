//! The inspector: what it holds between frames, the frame itself, and how commands change
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use retrace_events::RunId;
use retrace_store::Store;

use crate::command::{Command, stepped};
use crate::panels;
use crate::source::{Detail, DiffView, Host, PAGE, Reply, Request, Row, RunRow, Source};

/// What to show first: a run, and optionally an event of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// The run.
    pub run: Option<RunId>,
    /// The event (seq); the newest if not given.
    pub seq: Option<u64>,
}

/// What the window remembers between sessions (panel sizes are kept by egui itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// The store last opened (its path, as shown in the title).
    pub last_store: String,
    /// The run last shown there.
    pub last_run: Option<RunId>,
    /// "follow head" was on.
    pub follow_head: bool,
    /// "continue with the runtime" was on.
    pub continue_runs: bool,
}

/// The inspector's state between frames.
#[derive(Debug)]
pub struct Inspector {
    pub(crate) source: Source,
    /// The run list (`None` until it first arrives).
    pub(crate) runs: Option<Vec<RunRow>>,
    pub(crate) error: Option<String>,
    pub(crate) filter: String,
    /// The run shown, its length, and the cursor in it.
    pub(crate) selected: Option<RunId>,
    pub(crate) len: u64,
    pub(crate) cursor: u64,
    pub(crate) follow_head: bool,
    /// Timeline rows by page start.
    pub(crate) pages: BTreeMap<u64, Vec<Row>>,
    requested: BTreeSet<u64>,
    pub(crate) detail: Option<Detail>,
    /// Scroll the timeline to the cursor on the next frame.
    pub(crate) scroll_to_cursor: bool,
    /// What to show once the run list arrives.
    pending_target: Target,
    commands: Vec<Command>,
    /// When the run list was last asked for again (seconds of UI time).
    last_poll: f64,
    /// Those polls not answered yet (they do not make the inspector busy).
    polls: usize,
    /// Point A of a diff.
    pub(crate) mark: Option<(RunId, u64)>,
    /// The diff shown.
    pub(crate) diff: Option<DiffView>,
    /// The edit being made for a fork (`None`: not editing).
    pub(crate) edit: Option<String>,
    /// Continue a fork or a decided run with the runtime at once.
    pub(crate) continue_runs: bool,
    /// The note that goes with an approval decision.
    pub(crate) note: String,
    /// A free-text answer to the question the run waits on, being typed.
    pub(crate) answer_text: String,
    /// What the last action did.
    pub(crate) notice: Option<String>,
    /// Where events of each class fall in the selected run: `(len counted, bins)`.
    pub(crate) density: Option<(u64, Vec<[u32; crate::source::CLASSES]>)>,
    /// The run remembered from last time, opened if no target was given and it still exists.
    remembered_run: Option<RunId>,
    /// The detail's tab on model calls (kept as the cursor moves).
    pub(crate) tab: Tab,
}

/// The detail's tabs on a model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Tab {
    /// The event, its payloads and the state after it.
    #[default]
    Event,
    /// The request the model call sent.
    Request,
}

impl Inspector {
    /// An inspector over `store`, showing `target` once loaded; `wake` repaints the UI when
    /// data arrives from the background.
    pub fn new(
        store: Arc<dyn Store>,
        host: Arc<dyn Host>,
        target: Target,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let mut source = Source::spawn(store, host, wake);
        source.request(Request::Runs);
        Self {
            source,
            runs: None,
            error: None,
            filter: String::new(),
            selected: None,
            len: 0,
            cursor: 0,
            follow_head: false,
            pages: BTreeMap::new(),
            requested: BTreeSet::new(),
            detail: None,
            scroll_to_cursor: false,
            pending_target: target,
            commands: Vec::new(),
            last_poll: 0.0,
            polls: 0,
            mark: None,
            diff: None,
            edit: None,
            continue_runs: true,
            note: String::new(),
            answer_text: String::new(),
            notice: None,
            remembered_run: None,
            density: None,
            tab: Tab::Event,
        }
    }

    /// Take up remembered settings: the toggles, and the last run if this is the store it
    /// was in and no other target was given.
    pub fn restore(&mut self, settings: &Settings, store_label: &str) {
        self.follow_head = settings.follow_head;
        self.continue_runs = settings.continue_runs;
        if self.pending_target.run.is_none() && settings.last_store == store_label {
            self.remembered_run = settings.last_run;
        }
    }

    /// What to remember for next time.
    pub fn settings(&self, store_label: &str) -> Settings {
        Settings {
            last_store: store_label.to_owned(),
            last_run: self.selected,
            follow_head: self.follow_head,
            continue_runs: self.continue_runs,
        }
    }

    /// Whether data asked for is still on its way (tests wait for this to settle);
    /// background polls for growth do not count.
    pub fn busy(&self) -> bool {
        self.source.in_flight() > self.polls
    }

    /// The run shown and the cursor's seq.
    pub fn position(&self) -> Option<(RunId, u64)> {
        self.selected.map(|r| (r, self.cursor))
    }

    fn run_row(&self, run: RunId) -> Option<&RunRow> {
        self.runs.as_deref()?.iter().find(|r| r.id == run)
    }

    /// Queue a command (panels call this while drawing).
    pub(crate) fn command(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Draw one frame into `ui`, then apply what it asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.take_replies();
        panels::keyboard(self, ui);
        panels::top_bar(self, ui);
        egui::Panel::left("runs")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| panels::runs(self, ui));
        egui::Panel::right("detail")
            .resizable(true)
            .default_size(520.0)
            .min_size(380.0)
            .show(ui, |ui| panels::detail(self, ui));
        egui::CentralPanel::default().show(ui, |ui| panels::timeline(self, ui));
        let commands = std::mem::take(&mut self.commands);
        for command in commands {
            self.apply(command);
        }
        // a growing run shows up on the next poll
        if self.runs.is_some() {
            self.poll_for_growth(ui.ctx());
        }
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(500));
    }

    fn take_replies(&mut self) {
        for reply in self.source.poll() {
            match reply {
                Reply::Runs(Ok(runs)) => {
                    self.polls = self.polls.saturating_sub(1);
                    self.runs = Some(runs);
                    self.on_runs_loaded();
                }
                Reply::Runs(Err(e)) => {
                    self.polls = self.polls.saturating_sub(1);
                    self.error = Some(format!("could not list runs: {e}"));
                }
                Reply::Page { run, from, rows } => {
                    self.requested.remove(&from);
                    if Some(run) != self.selected {
                        continue;
                    }
                    match rows {
                        Ok(rows) => {
                            self.pages.insert(from, rows);
                        }
                        Err(e) => self.error = Some(format!("could not read events: {e}")),
                    }
                }
                Reply::Detail(detail) => match *detail {
                    Ok(d) if Some(d.run) == self.selected && d.seq == self.cursor => {
                        self.detail = Some(d);
                    }
                    Ok(_) => {}
                    Err(e) => self.error = Some(e),
                },
                Reply::Found { run, seq } => {
                    if Some(run) == self.selected {
                        match seq {
                            Some(seq) => self.move_to(seq),
                            None => self.error = Some("no such event in that direction".into()),
                        }
                    }
                }
                Reply::Density { run, len, bins } => {
                    if Some(run) == self.selected {
                        self.density = Some((len, bins));
                    }
                }
                Reply::Diff(diff) => match *diff {
                    Ok(diff) => self.diff = Some(diff),
                    Err(e) => self.error = Some(format!("could not compare: {e}")),
                },
                Reply::Forked(Ok(run)) => {
                    self.edit = None;
                    self.notice = Some(format!("forked run {}", run.short()));
                    // show the fork once the run list has it
                    self.pending_target = Target {
                        run: Some(run),
                        seq: Some(self.cursor),
                    };
                    self.source.request(Request::Runs);
                }
                Reply::Forked(Err(e)) => self.error = Some(format!("fork refused: {e}")),
                Reply::Decided(Ok(call)) => {
                    self.notice = Some(format!("decision on {call} recorded"));
                    self.note.clear();
                    self.follow_head = true;
                    self.source.request(Request::Runs);
                }
                Reply::Decided(Err(e)) => self.error = Some(format!("decision refused: {e}")),
                Reply::Answered(Ok((call, continued))) => {
                    self.notice = Some(match (continued, self.selected) {
                        (true, _) => format!("answer to {call} recorded; the run continues"),
                        (false, Some(run)) => format!(
                            "answer to {call} recorded; continue the run with \
                             `retrace resume {run}`"
                        ),
                        (false, None) => format!("answer to {call} recorded"),
                    });
                    self.answer_text.clear();
                    self.follow_head = true;
                    self.source.request(Request::Runs);
                }
                Reply::Answered(Err(e)) => self.error = Some(format!("answer refused: {e}")),
                Reply::Skipped => {}
            }
        }
    }

    /// The run list arrived: keep the selection current, or apply the start target.
    fn on_runs_loaded(&mut self) {
        if let Some(run) = self.pending_target.run.take() {
            if self.run_row(run).is_some() {
                let seq = self.pending_target.seq.take();
                self.select(run);
                self.move_to(seq.unwrap_or(u64::MAX)); // newest if not given
            } else {
                self.error = Some(format!("run {run} not found in this store"));
            }
            return;
        }
        if let Some(run) = self.remembered_run.take() {
            if self.run_row(run).is_some() {
                self.select(run);
                self.move_to(u64::MAX);
            }
            return;
        }
        if let Some(run) = self.selected {
            let len = self.run_row(run).map_or(0, |r| r.len);
            if len != self.len {
                self.len = len;
                // the last page may have grown
                let last_page = len.saturating_sub(1) / PAGE * PAGE;
                self.pages.remove(&last_page);
                if self.follow_head {
                    self.move_to(len.saturating_sub(1));
                }
                let counted = self.density.as_ref().map_or(0, |(n, _)| *n);
                if len > counted + counted / 100 {
                    self.request_density();
                }
            }
        }
    }

    /// Apply one command.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::SelectRun(run) => self.select(run),
            Command::MoveTo(seq) => self.move_to(seq),
            Command::Step(n) => self.move_to(stepped(self.cursor, n, self.len)),
            Command::Home => self.move_to(0),
            Command::End => self.move_to(self.len.saturating_sub(1)),
            Command::Jump { class, forward } => {
                if let Some(run) = self.selected {
                    self.source.request(Request::Find {
                        run,
                        from: self.cursor,
                        class,
                        forward,
                    });
                }
            }
            Command::FollowHead(on) => {
                self.follow_head = on;
                if on {
                    self.move_to(self.len.saturating_sub(1));
                }
            }
            Command::Refresh => self.source.request(Request::Runs),
            Command::MarkA => self.mark = self.position(),
            Command::DiffWithA => {
                if let (Some(a), Some(b)) = (self.mark, self.position()) {
                    self.source.request(Request::Diff { a, b });
                }
            }
            Command::CloseDiff => self.diff = None,
            Command::ShowRequest(on) => self.tab = if on { Tab::Request } else { Tab::Event },
            Command::StartEdit => {
                self.edit = self.detail.as_ref().map(|d| d.edit_template.clone());
            }
            Command::CancelEdit => self.edit = None,
            Command::Fork { edited } => {
                if let Some((run, seq)) = self.position() {
                    self.error = None;
                    self.source.request(Request::Fork {
                        run,
                        seq,
                        edit: if edited { self.edit.clone() } else { None },
                        resume: self.continue_runs,
                    });
                }
            }
            Command::Decide { call, approve } => {
                if let Some(run) = self.selected {
                    self.error = None;
                    self.source.request(Request::Decide {
                        run,
                        call,
                        decision: if approve {
                            retrace_events::Decision::Approved
                        } else {
                            retrace_events::Decision::Denied
                        },
                        note: (!self.note.trim().is_empty()).then(|| self.note.trim().to_owned()),
                        resume: self.continue_runs,
                    });
                }
            }
            Command::Answer { call, answer } => {
                if let Some(run) = self.selected {
                    self.error = None;
                    self.source.request(Request::Answer {
                        run,
                        call,
                        answer,
                        resume: self.continue_runs,
                    });
                }
            }
        }
    }

    fn select(&mut self, run: RunId) {
        self.selected = Some(run);
        self.len = self.run_row(run).map_or(0, |r| r.len);
        self.pages.clear();
        self.requested.clear();
        self.detail = None;
        self.error = None;
        self.cursor = 0;
        self.scroll_to_cursor = true;
        self.density = None;
        self.request_detail();
        self.request_density();
    }

    /// Bins in the density strip.
    const DENSITY_BINS: usize = 400;

    fn request_density(&mut self) {
        if let Some(run) = self.selected {
            self.source.request(Request::Density {
                run,
                bins: Self::DENSITY_BINS,
            });
        }
    }

    fn move_to(&mut self, seq: u64) {
        if self.selected.is_none() || self.len == 0 {
            return;
        }
        let seq = seq.min(self.len - 1);
        if seq != self.cursor || self.detail.is_none() {
            self.cursor = seq;
            self.request_detail();
        }
        self.scroll_to_cursor = true;
    }

    fn request_detail(&mut self) {
        if let Some(run) = self.selected
            && self.len > 0
        {
            self.source.request(Request::Detail {
                run,
                seq: self.cursor,
            });
        }
    }

    /// The row at `seq`, asking for its page if it has not arrived.
    pub(crate) fn row(&mut self, seq: u64) -> Option<&Row> {
        let from = seq / PAGE * PAGE;
        if !self.pages.contains_key(&from)
            && let Some(run) = self.selected
            && self.requested.insert(from)
        {
            self.source.request(Request::Page { run, from });
        }
        self.pages
            .get(&from)
            .and_then(|rows| rows.get(usize::try_from(seq - from).ok()?))
    }
}

impl Inspector {
    /// Ask for the run list again every half second, so runs that grow show it.
    fn poll_for_growth(&mut self, ctx: &egui::Context) {
        let now = ctx.input(|i| i.time);
        if now - self.last_poll >= 0.5 && self.polls == 0 {
            self.last_poll = now;
            self.polls += 1;
            self.source.request(Request::Runs);
        }
    }
}
