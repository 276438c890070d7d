//! The inspector: what it holds between frames, the frame itself, and how commands change
//! it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use retrace_events::RunId;
use retrace_store::Store;

use crate::cards::Card;
use crate::command::{Command, stepped};
use crate::compare::Comparison;
use crate::search::Found;
use crate::source::{Detail, DiffView, Host, PAGE, Reply, Request, Row, RunRow, Source};
use crate::steps::{Filter, StepIndex};
use crate::{panels, step_view, time_view, versus_view};

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
    /// The view the middle of the window showed.
    #[serde(default)]
    pub view: View,
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
    /// What the middle of the window shows.
    pub(crate) view: View,
    /// The selected run's steps (`None` until first counted).
    pub(crate) index: Option<Arc<StepIndex>>,
    /// Which steps the step view and the waterfall show.
    pub(crate) step_filter: Filter,
    /// The positions of the steps that pass the filter, and the index length they are of.
    pub(crate) shown: (usize, Arc<[usize]>),
    /// Cards loaded, by step position.
    pub(crate) cards: HashMap<usize, Arc<Card>>,
    cards_requested: HashSet<usize>,
    /// Steps whose card could not be read: asked for again only when the index changes or
    /// on refresh.
    cards_failed: HashSet<usize>,
    /// A tool result being paged through.
    pub(crate) pager: Option<Pager>,
    /// The search being typed, and the last search's hits.
    pub(crate) query: String,
    pub(crate) found: Option<Found>,
    /// The run compared with the selected one, and the comparison once made.
    pub(crate) versus: Option<RunId>,
    pub(crate) comparison: Option<Arc<Comparison>>,
    /// Rendered Markdown's cache.
    pub(crate) markdown: egui_commonmark::CommonMarkCache,
    /// Where the step view's cards are and what it keeps in place.
    pub(crate) layout: step_view::Layout,
    /// For a child run shown: its parent, and the delegating call there once found (the
    /// seq of its step and its id).
    pub(crate) parent_call: Option<(RunId, Option<(u64, String)>)>,
}

/// What the middle of the window shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum View {
    /// One card per step (the default).
    #[default]
    Steps,
    /// One row per event.
    Events,
    /// The waterfall and the token and cost curves.
    Time,
    /// Two runs side by side.
    Versus,
}

impl View {
    /// Every view, in the order of the switch.
    pub const ALL: [View; 4] = [View::Steps, View::Events, View::Time, View::Versus];

    /// Its name on the switch.
    pub fn label(self) -> &'static str {
        match self {
            View::Steps => "steps",
            View::Events => "events",
            View::Time => "time and cost",
            View::Versus => "run vs run",
        }
    }
}

/// A page of a tool result shown in full.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pager {
    /// What it is the output of (the window's title).
    pub title: String,
    /// The output blob.
    pub blob: retrace_events::BlobId,
    /// First line shown (0-based).
    pub from: usize,
    /// The page's text, once arrived, and the lines in all.
    pub page: Option<(String, usize)>,
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
            view: View::Steps,
            index: None,
            step_filter: Filter::default(),
            shown: (0, Arc::from([])),
            cards: HashMap::new(),
            cards_requested: HashSet::new(),
            cards_failed: HashSet::new(),
            pager: None,
            query: String::new(),
            found: None,
            versus: None,
            comparison: None,
            markdown: egui_commonmark::CommonMarkCache::default(),
            layout: step_view::Layout::default(),
            parent_call: None,
        }
    }

    /// Take up remembered settings: the toggles, and the last run if this is the store it
    /// was in and no other target was given.
    pub fn restore(&mut self, settings: &Settings, store_label: &str) {
        self.follow_head = settings.follow_head;
        self.continue_runs = settings.continue_runs;
        self.view = settings.view;
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
            view: self.view,
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

    /// The last search's hits, if a search was made in the run shown.
    pub fn found(&self) -> Option<&Found> {
        self.found.as_ref()
    }

    /// The run-vs-run comparison shown, once made.
    pub fn comparison(&self) -> Option<&Comparison> {
        self.comparison.as_deref()
    }

    /// What the middle of the window shows.
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether the run shown has its steps counted and the card at the cursor read.
    pub fn steps_ready(&self) -> bool {
        self.index
            .as_ref()
            .and_then(|index| index.step_at(self.cursor))
            .is_some_and(|step| self.cards.contains_key(&step))
    }

    /// Steps in the run shown, as far as counted.
    pub fn step_count(&self) -> usize {
        self.index.as_ref().map_or(0, |index| index.steps.len())
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
        egui::CentralPanel::default().show(ui, |ui| {
            panels::view_switch(self, ui);
            match self.view {
                View::Steps => step_view::show(self, ui),
                View::Events => panels::timeline(self, ui),
                View::Time => time_view::show(self, ui),
                View::Versus => versus_view::show(self, ui),
            }
        });
        step_view::pager(self, ui);
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
                reply @ (Reply::Overview { .. }
                | Reply::Cards { .. }
                | Reply::Lines { .. }
                | Reply::Searched { .. }
                | Reply::ParentCall { .. }
                | Reply::Compared(_)) => self.take_story_reply(reply),
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

    /// A reply for the step, time and run-vs-run views.
    fn take_story_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Overview { run, index, bins } if Some(run) == self.selected => match index {
                Ok(index) => {
                    self.density = Some((index.scanned, bins));
                    self.take_index(index);
                }
                Err(e) => {
                    self.error = Some(format!(
                        "could not read the steps of run {}: {e} (refresh tries again)",
                        run.short()
                    ));
                }
            },
            Reply::Cards { run, cards } => {
                for (i, card) in cards {
                    self.cards_requested.remove(&i);
                    if Some(run) != self.selected {
                        continue;
                    }
                    match card {
                        // a card read from a step that has changed since (a call answered
                        // meanwhile) is not kept: it is asked for again
                        Ok(card) => {
                            let current = self.index.as_ref().and_then(|x| x.steps.get(i));
                            if current == Some(&card.head) {
                                self.cards.insert(i, Arc::new(card));
                            }
                        }
                        Err(e) => {
                            self.cards_failed.insert(i);
                            self.error = Some(format!("could not read step {i}: {e}"));
                        }
                    }
                }
            }
            Reply::Lines {
                blob,
                from,
                text,
                total,
            } => {
                if let Some(pager) = &mut self.pager
                    && pager.blob == blob
                    && pager.from == from
                {
                    pager.page = Some((text, total));
                }
            }
            Reply::Searched { run, found } if Some(run) == self.selected => {
                match found {
                    Ok(found) => {
                        // go to the first hit at or after the cursor
                        let at = found.hits.iter().find(|h| h.seq >= self.cursor);
                        if let Some(seq) = at.or(found.hits.first()).map(|h| h.seq) {
                            self.move_to(seq);
                        }
                        self.found = Some(found);
                    }
                    Err(e) => self.error = Some(format!("search failed: {e}")),
                }
            }
            Reply::ParentCall { child, at } if Some(child) == self.selected => match at {
                Ok(at) => {
                    if let Some((_, call)) = &mut self.parent_call {
                        *call = at;
                    }
                }
                Err(e) => self.error = Some(format!("could not read the parent run: {e}")),
            },
            Reply::Compared(comparison) => match *comparison {
                Ok(c) if Some(c.a) == self.selected && Some(c.b) == self.versus => {
                    self.comparison = Some(Arc::new(c));
                }
                Ok(_) => {}
                Err(e) => {
                    self.versus = None;
                    self.error = Some(format!("could not compare the runs: {e}"));
                }
            },
            _ => {}
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
                self.request_overview();
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
            Command::Refresh => {
                self.cards_failed.clear();
                self.source.request(Request::Runs);
                self.request_overview();
            }
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
            command @ (Command::View(_)
            | Command::Filter(_)
            | Command::ShowAll { .. }
            | Command::ClosePager
            | Command::Search(_)
            | Command::NextHit { .. }
            | Command::CompareWith(_)
            | Command::Open { .. }) => self.apply_story(command),
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

    /// Apply a command of the step, time and run-vs-run views.
    fn apply_story(&mut self, command: Command) {
        match command {
            Command::View(view) => {
                self.view = view;
                self.scroll_to_cursor = true;
            }
            Command::Filter(filter) => {
                self.step_filter = filter;
                self.shown = (usize::MAX, Arc::from([]));
                self.scroll_to_cursor = true;
            }
            Command::ShowAll { title, blob, from } => {
                self.pager = Some(Pager {
                    title,
                    blob,
                    from,
                    page: None,
                });
                self.source.request(Request::Lines { blob, from });
            }
            Command::ClosePager => self.pager = None,
            Command::Search(query) => {
                self.query.clone_from(&query);
                self.found = None;
                if let Some(run) = self.selected
                    && !query.trim().is_empty()
                {
                    self.source.request(Request::Search { run, query });
                }
            }
            Command::NextHit { forward } => {
                if let Some(seq) = self
                    .found
                    .as_ref()
                    .and_then(|f| f.next(self.cursor, forward))
                {
                    self.move_to(seq);
                }
            }
            Command::CompareWith(other) => {
                self.versus = other;
                self.comparison = None;
                if let (Some(a), Some(b)) = (self.selected, other) {
                    self.source.request(Request::Compare { a, b });
                }
            }
            Command::Open { run, seq } => {
                if self.selected == Some(run) {
                    self.move_to(seq);
                } else {
                    self.pending_target = Target {
                        run: Some(run),
                        seq: Some(seq),
                    };
                    self.source.request(Request::Runs);
                }
            }
            _ => {}
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
        self.index = None;
        self.shown = (usize::MAX, Arc::from([]));
        self.cards.clear();
        self.cards_requested.clear();
        self.layout = step_view::Layout::default();
        self.found = None;
        self.pager = None;
        self.comparison = None;
        self.versus = None;
        // a child run: where its parent delegated to it (the way back)
        self.parent_call = self
            .run_row(run)
            .and_then(|r| r.child_of)
            .map(|parent| (parent, None));
        if let Some((parent, _)) = self.parent_call {
            self.source
                .request(Request::ParentCall { parent, child: run });
        }
        self.request_detail();
        self.request_overview();
    }

    /// Bins in the density strip.
    const DENSITY_BINS: usize = 400;

    /// Ask for the step index (extended from the one held) and the density strip.
    fn request_overview(&mut self) {
        if let Some(run) = self.selected {
            self.source.request(Request::Overview {
                run,
                bins: Self::DENSITY_BINS,
                carry: self.index.clone(),
            });
        }
    }

    /// A newer step index arrived: cards of steps that changed (a call answered since)
    /// are read again.
    fn take_index(&mut self, index: Arc<StepIndex>) {
        if let Some(old) = &self.index {
            for (i, step) in old.steps.iter().enumerate() {
                if index.steps.get(i) != Some(step) {
                    self.cards.remove(&i);
                    self.cards_requested.remove(&i);
                    if let Some(h) = self.layout.heights.get_mut(i) {
                        *h = 0.0;
                    }
                }
            }
        }
        self.cards_failed.clear();
        self.layout.heights.resize(index.steps.len(), 0.0);
        self.layout.tops_valid = false;
        self.index = Some(index);
        // a step may have become an error without a new one starting: filter again
        self.shown = (usize::MAX, Arc::from([]));
    }

    /// The positions of the steps the filter lets through (recomputed when the index or the
    /// filter changed).
    pub(crate) fn shown(&mut self) -> Arc<[usize]> {
        let len = self.index.as_ref().map_or(0, |i| i.steps.len());
        if self.shown.0 != len {
            let shown: Vec<usize> = match &self.index {
                Some(index) if !self.step_filter.is_empty() => self.step_filter.apply(index),
                Some(index) => (0..index.steps.len()).collect(),
                None => Vec::new(),
            };
            self.shown = (len, Arc::from(shown));
            self.layout.tops_valid = false;
        }
        Arc::clone(&self.shown.1)
    }

    /// The card of step `i`, asking for it (with the others in `wanted`) if it has not
    /// arrived.
    pub(crate) fn want_cards(&mut self, wanted: &[usize]) {
        let Some((run, index)) = self.selected.zip(self.index.as_ref()) else {
            return;
        };
        let missing: Vec<_> = wanted
            .iter()
            .filter(|i| {
                !self.cards.contains_key(i)
                    && !self.cards_requested.contains(i)
                    && !self.cards_failed.contains(i)
            })
            .filter_map(|&i| index.steps.get(i).map(|s| (i, *s)))
            .collect();
        if missing.is_empty() {
            return;
        }
        // keep memory bounded on long runs: cards far from the screen are read again
        if self.cards.len() > 4_096 {
            self.cards.retain(|i, _| wanted.contains(i));
        }
        self.cards_requested.extend(missing.iter().map(|(i, _)| *i));
        self.source.request(Request::Cards {
            run,
            steps: missing,
        });
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
