//! The step view: the run as a story, one card per step (see [`crate::steps`]), with find
//! and filters above it and, when the run is parked, what it waits for with the controls
//! to decide or answer at the top.
//!
//! Cards differ in height, so the list is virtual by measured heights: every step has a
//! height (an estimate until its card is first drawn, then what it measured), the visible
//! ones are found by binary search over their running sums, and only those are drawn and
//! their cards loaded. The running sums are kept until a height or the filter changes, so
//! a frame walks every step only when a card on screen has changed height (about 0.5 ms at
//! half a million steps).

use std::fmt::Write as _;

use egui::RichText;
use retrace_replay::describe;

use crate::app::Inspector;
use crate::cards::{Body, Card, RESULT_LINES, clock, duration};
use crate::command::Command;
use crate::panels::{colour, json_tree};
use crate::source::Class;
use crate::steps::{Filter, StepHead, StepKind};

/// A card's height before it is first drawn.
const ESTIMATE: f32 = 96.0;
/// Space between cards.
const GAP: f32 = 6.0;
/// The width text wraps at inside a card at most, so snapshots and tests lay out the same
/// whatever the window (and a long line stays readable).
const TEXT_WIDTH: f32 = 640.0;

/// Where the step view's cards are, and what it keeps in place.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// Each step's card height as last drawn (0: not drawn yet), by step position.
    pub heights: Vec<f32>,
    /// Where each shown step's card begins (running sums of the heights, then the total),
    /// and whether that still holds.
    pub tops: Vec<f64>,
    pub tops_valid: bool,
    /// The step kept in place while the cards around it are measured.
    pub anchor: Option<usize>,
    /// The visible height and the scroll offset, as last drawn.
    pub viewport: f32,
    pub offset: f32,
}

impl Layout {
    /// Work out where each of the `shown` steps' cards begins, unless that still holds:
    /// running sums of the heights, kept until a height or the steps shown change (so a
    /// frame does not walk every step of a long run).
    fn measure_tops(&mut self, shown: &[usize]) {
        if self.tops_valid && self.tops.len() == shown.len() + 1 {
            return;
        }
        self.tops.clear();
        let mut y = 0.0f64;
        for &i in shown {
            self.tops.push(y);
            let h = self.heights.get(i).copied().unwrap_or_default();
            y += f64::from(if h > 0.0 { h } else { ESTIMATE } + GAP);
        }
        self.tops.push(y);
        self.tops_valid = true;
    }
}

/// The step view.
pub fn show(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(run) = app.selected else {
        ui.centered_and_justified(|ui| ui.label("Select a run on the left."));
        return;
    };
    find_bar(app, ui);
    filter_bar(app, ui);
    hits(app, ui);
    origin(app, ui, run);
    parked(app, ui);
    ui.separator();
    if app.index.is_none() {
        ui.label(format!("reading the steps of run {}...", run.short()));
        return;
    }
    cards(app, ui);
}

/// The find field, the hit count and `n`/`N` buttons.
pub(crate) fn find_bar(app: &mut Inspector, ui: &mut egui::Ui) {
    // wrapped: a row wider than the panel would widen every card below it
    ui.horizontal_wrapped(|ui| {
        let label = ui.label("find");
        let field = ui
            .add(
                egui::TextEdit::singleline(&mut app.query)
                    .hint_text("text, tool, arguments, results")
                    .desired_width((ui.available_width() - 120.0).clamp(120.0, 260.0)),
            )
            .labelled_by(label.id);
        if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            app.command(Command::Search(app.query.clone()));
        }
        if ui.button("search").clicked() {
            app.command(Command::Search(app.query.clone()));
        }
        if let Some(found) = &app.found {
            let more = if found.truncated { "+" } else { "" };
            ui.label(format!("{}{more} hits", found.hits.len()));
            if ui.small_button("previous hit").on_hover_text("N").clicked() {
                app.command(Command::NextHit { forward: false });
            }
            if ui.small_button("next hit").on_hover_text("n").clicked() {
                app.command(Command::NextHit { forward: true });
            }
        }
    });
}

/// The kinds shown, a tool to keep to, errors only.
pub(crate) fn filter_bar(app: &mut Inspector, ui: &mut egui::Ui) {
    let mut filter = app.step_filter.clone();
    ui.horizontal_wrapped(|ui| {
        ui.label("show");
        for kind in StepKind::ALL {
            let mut on = !filter.hidden.contains(&kind);
            if ui.checkbox(&mut on, kind.label()).changed() {
                if on {
                    filter.hidden.retain(|k| *k != kind);
                } else {
                    filter.hidden.push(kind);
                }
            }
        }
        let names = app
            .index
            .as_ref()
            .map(|i| i.names.clone())
            .unwrap_or_default();
        egui::ComboBox::new("tool filter", "tool")
            .selected_text(filter.tool.as_deref().unwrap_or("any tool"))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut filter.tool, None, "any tool");
                for name in names {
                    ui.selectable_value(&mut filter.tool, Some(name.clone()), name);
                }
            });
        ui.checkbox(&mut filter.errors_only, "errors only");
        if !filter.is_empty() && ui.small_button("clear filter").clicked() {
            filter = Filter::default();
        }
    });
    if filter != app.step_filter {
        app.command(Command::Filter(filter));
    }
}

/// The search's hits, each a link to its event.
fn hits(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(found) = &app.found else {
        return;
    };
    let id = ui.make_persistent_id("hits");
    let title = if found.hits.is_empty() {
        format!("no event holds \"{}\"", found.query)
    } else {
        format!("hits for \"{}\"", found.query)
    };
    let mut go = None;
    egui::CollapsingHeader::new(title)
        .id_salt(id)
        .default_open(true)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("hits list")
                .max_height(120.0)
                .show(ui, |ui| {
                    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
                    for hit in &found.hits {
                        let here = hit.seq == app.cursor;
                        let text = format!("#{} {}  {}", hit.seq, hit.kind, hit.snippet);
                        if ui
                            .selectable_label(here, RichText::new(text).monospace())
                            .clicked()
                        {
                            go = Some(hit.seq);
                        }
                    }
                });
        });
    if let Some(seq) = go {
        app.command(Command::MoveTo(seq));
    }
}

/// For a fork: where it was forked from, as a link (its log shares that run's events up to
/// that seq; its own steps follow).
fn origin(app: &mut Inspector, ui: &mut egui::Ui, run: retrace_events::RunId) {
    let parent = app
        .runs
        .as_deref()
        .and_then(|runs| runs.iter().find(|r| r.id == run))
        .and_then(|r| r.parent);
    if let Some((from, seq)) = parent
        && ui
            .link(format!(
                "a fork of {}@{seq}: its own steps follow #{seq}",
                from.short()
            ))
            .clicked()
    {
        app.command(Command::Open { run: from, seq });
    }
}

/// What a parked run waits for, with the controls to decide or answer, whatever the
/// cursor.
fn parked(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(index) = &app.index else {
        return;
    };
    // open approvals, and open `user.ask` calls with no approval pending
    let mut waiting: Vec<usize> = index.open_approvals().collect();
    if waiting.is_empty() {
        waiting.extend(
            index
                .steps
                .iter()
                .enumerate()
                .rev()
                .take(8)
                .filter_map(|(i, s)| {
                    (s.kind == StepKind::Tool
                        && s.end.is_none()
                        && index.name_of(s) == Some(retrace_replay::question::ASK_TOOL))
                    .then_some(i)
                }),
        );
    }
    let parked = app
        .selected
        .and_then(|run| app.runs.as_deref()?.iter().find(|r| r.id == run))
        .is_some_and(|r| r.status.starts_with("awaiting") || r.status.starts_with("asking"));
    if waiting.is_empty() || !parked {
        return;
    }
    waiting.sort_unstable();
    app.want_cards(&waiting);
    egui::Frame::group(ui.style())
        .fill(colour(Class::Approval).gamma_multiply(0.15))
        .show(ui, |ui| {
            ui.strong("This run waits for you");
            for i in waiting {
                let Some(card) = app.cards.get(&i).cloned() else {
                    ui.label("loading...");
                    continue;
                };
                waiting_for(app, ui, &card);
            }
        });
}

/// One thing a parked run waits for, and its controls.
fn waiting_for(app: &mut Inspector, ui: &mut egui::Ui, card: &Card) {
    match &card.body {
        Body::Approval {
            call_id, request, ..
        } => {
            // the controls first: what is asked may be long
            ui.label(format!("approval of {call_id} (#{})", card.head.seq));
            ui.horizontal_wrapped(|ui| {
                let label = ui.label("note");
                ui.text_edit_singleline(&mut app.note).labelled_by(label.id);
                if ui.button(format!("approve {call_id}")).clicked() {
                    app.command(Command::Decide {
                        call: call_id.clone(),
                        approve: true,
                    });
                }
                if ui.button(format!("deny {call_id}")).clicked() {
                    app.command(Command::Decide {
                        call: call_id.clone(),
                        approve: false,
                    });
                }
            });
            ui.monospace(request);
        }
        Body::Tool {
            call_id,
            question: Some(question),
            ..
        } => {
            ui.label(format!("an answer to {call_id} (#{})", card.head.seq));
            ui.label(RichText::new(&question.question).strong());
            crate::panels::answer_controls(app, ui, call_id, question);
        }
        _ => {}
    }
}

/// The cards of the steps shown, only those on screen drawn.
fn cards(app: &mut Inspector, ui: &mut egui::Ui) {
    let shown = app.shown();
    if shown.is_empty() {
        ui.label("No step passes the filter.");
        return;
    }
    app.layout.measure_tops(&shown);
    let tops = std::mem::take(&mut app.layout.tops);
    #[allow(clippy::cast_possible_truncation)] // positions far inside f32's range
    let top = |k: usize| tops[k] as f32;
    let total = top(shown.len());
    // the step holding the cursor, and the card shown for it (the next one shown when it
    // is filtered out)
    let cursor_step = app
        .index
        .as_ref()
        .and_then(|index| index.step_at(app.cursor));
    let at_cursor =
        cursor_step.map(|step| shown.partition_point(|&i| i < step).min(shown.len() - 1));
    // no scroll animation and no rubber band: a jump to a far step lands at once, and a
    // card does not slide away under the pointer that is about to click it (the offset set
    // below may pass the end as measured in the frame before, when cards grew since)
    ui.spacing_mut().scroll.kinetic.rubber_band = false;
    let mut area = egui::ScrollArea::vertical()
        .id_salt("steps")
        .animated(false)
        .auto_shrink([false, false]);
    // the cursor's card, when it is not on screen already, is brought near the top and
    // held there until the cards around it have been measured (their heights move it
    // while they go from estimated to drawn)
    if std::mem::take(&mut app.scroll_to_cursor)
        && let Some(k) = at_cursor
    {
        let (from, to) = (app.layout.offset, app.layout.offset + app.layout.viewport);
        let on_screen = top(k) >= from && top(k + 1) - GAP <= to;
        if !on_screen || app.layout.viewport == 0.0 {
            app.layout.anchor = Some(shown[k]);
        }
    }
    if let Some(step) = app.layout.anchor {
        let k = shown.partition_point(|&i| i < step).min(shown.len() - 1);
        // never past the end: an offset beyond it springs back slowly (rubber banding),
        // moving every card under the pointer
        let end = (total - app.layout.viewport).max(0.0);
        area = area.vertical_scroll_offset((top(k) - 40.0).clamp(0.0, end));
    }
    let mut measured = false;
    let mut loaded = true;
    let width = ui.available_width();
    let out = area.show_viewport(ui, |ui, viewport| {
        ui.set_height(total);
        ui.set_width(width - 16.0);
        let origin = ui.min_rect().min;
        let first = tops
            .partition_point(|&t| t <= f64::from(viewport.min.y))
            .saturating_sub(1)
            .min(shown.len() - 1);
        let last = tops[..shown.len()].partition_point(|&t| t < f64::from(viewport.max.y));
        let visible: Vec<usize> = shown[first..last.max(first)].to_vec();
        app.want_cards(&visible);
        for (k, &i) in (first..).zip(&visible) {
            // as tall as last drawn: the card's own click area must not reach the cards
            // below it (content may still grow past it; its height is measured again)
            let known = app.layout.heights.get(i).copied().unwrap_or_default();
            let rect = egui::Rect::from_min_size(
                origin + egui::vec2(0.0, top(k)),
                egui::vec2(width - 16.0, if known > 0.0 { known } else { ESTIMATE }),
            );
            let selected = Some(i) == cursor_step;
            let card = app.cards.get(&i).cloned();
            loaded &= card.is_some();
            // the card's own click is sensed beneath its widgets: a button in it still
            // gets its click, and a click on its margin moves the cursor to the step
            let response = ui
                .scope_builder(
                    // an id of the step's own, so that what was clicked in the last
                    // frame is the same card in this one whatever scrolled
                    egui::UiBuilder::new()
                        .id_salt(("card", i))
                        .max_rect(rect)
                        .sense(egui::Sense::click()),
                    |ui| {
                        if let Some(card) = &card {
                            card_frame(app, ui, card, selected);
                        } else if let Some(head) = app.index.as_ref().map(|x| x.steps[i]) {
                            placeholder(ui, &head, selected);
                        }
                    },
                )
                .response;
            if response.clicked()
                && let Some(head) = app.index.as_ref().map(|x| x.steps[i])
            {
                app.command(Command::MoveTo(head.seq));
            }
            let drawn = response.rect.height();
            if let Some(h) = app.layout.heights.get_mut(i)
                && card.is_some()
                && (*h - drawn).abs() > 0.5
            {
                *h = drawn;
                measured = true;
            }
        }
    });
    app.layout.tops = tops;
    app.layout.tops_valid &= !measured;
    app.layout.viewport = out.inner_rect.height();
    app.layout.offset = out.state.clamped_offset().y;
    if !measured && loaded {
        app.layout.anchor = None;
    }
}

/// A step whose card has not arrived yet.
fn placeholder(ui: &mut egui::Ui, head: &StepHead, selected: bool) {
    frame(ui, head.kind.class(), selected).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.label(
            RichText::new(format!("#{} {} ...", head.seq, head.kind.label()))
                .color(colour(head.kind.class())),
        );
        ui.add_space(ESTIMATE - 40.0);
    });
}

fn frame(ui: &egui::Ui, class: Class, selected: bool) -> egui::Frame {
    let stroke = if selected {
        egui::Stroke::new(2.0, ui.visuals().strong_text_color())
    } else {
        egui::Stroke::new(1.0, colour(class).gamma_multiply(0.6))
    };
    egui::Frame::group(ui.style())
        .stroke(stroke)
        .inner_margin(8.0)
        .fill(ui.visuals().faint_bg_color)
}

/// One card in its frame: a header (what, when, how long, where in the log) and its body.
pub(crate) fn card_frame(app: &mut Inspector, ui: &mut egui::Ui, card: &Card, selected: bool) {
    let head = card.head;
    let class = if head.error {
        Class::Error
    } else {
        head.kind.class()
    };
    let previous_ms = app
        .index
        .as_ref()
        .and_then(|x| card.step.checked_sub(1).map(|p| x.steps[p].start_ms))
        .unwrap_or(head.start_ms);
    frame(ui, class, selected).show(ui, |ui| {
        ui.set_width(ui.available_width());
        // the header is the card's handle: a click on its title or seqs goes to the step
        // (the body's text stays selectable)
        let handle = |ui: &mut egui::Ui, text: RichText| {
            ui.add(
                egui::Label::new(text)
                    .selectable(false)
                    .sense(egui::Sense::click()),
            )
            .clicked()
        };
        let clicked = ui
            .horizontal_wrapped(|ui| {
                let title = handle(ui, RichText::new(title(card)).strong().color(colour(class)));
                ui.weak(format!(
                    "{}, +{}",
                    clock(head.start_ms),
                    duration(head.start_ms.saturating_sub(previous_ms))
                ));
                let seqs = match head.end {
                    Some(end) if end != head.seq => format!("#{}–#{end}", head.seq),
                    _ => format!("#{}", head.seq),
                };
                let seqs = handle(ui, RichText::new(seqs).weak());
                title || seqs
            })
            .inner;
        if clicked {
            app.command(Command::MoveTo(head.seq));
        }
        ui.scope(|ui| {
            ui.set_max_width(TEXT_WIDTH.min(ui.available_width()));
            body(app, ui, card);
        });
        forks_here(app, ui, &head);
    });
}

/// A card's title: what the step is, in a few words.
pub(crate) fn title(card: &Card) -> String {
    match &card.body {
        Body::Model {
            model,
            attempt,
            compacted,
            ..
        } => {
            let what = if compacted.is_some() {
                "summary request"
            } else {
                "model call"
            };
            let retry = if *attempt > 1 {
                format!(" · attempt {attempt}")
            } else {
                String::new()
            };
            format!("{what} · {model}{retry}")
        }
        Body::Tool { tool, call_id, .. } => format!("{tool} · {call_id}"),
        Body::Approval { call_id, .. } => format!("approval of {call_id}"),
        Body::Fork { .. } => "fork".to_owned(),
        Body::Text { title, .. } => title.clone(),
    }
}

/// A card's content by kind of step.
fn body(app: &mut Inspector, ui: &mut egui::Ui, card: &Card) {
    let head = card.head;
    match &card.body {
        Body::Model { .. } => model_card(app, ui, card),
        Body::Tool { .. } => tool_card(app, ui, card),
        Body::Approval {
            request, decision, ..
        } => {
            ui.monospace(request);
            match decision {
                Some((d, by, note)) => {
                    let (word, c) = match d {
                        retrace_events::Decision::Approved => ("approved", colour(Class::Tool)),
                        retrace_events::Decision::Denied => ("denied", colour(Class::Error)),
                    };
                    ui.colored_label(
                        c,
                        format!(
                            "{word} by {by} after {}",
                            duration(head.end_ms - head.start_ms)
                        ),
                    );
                    if let Some(note) = note {
                        ui.label(format!("note: {note}"));
                    }
                }
                None if card.head.end.is_some() => {
                    ui.weak("not decided: the run ended first");
                }
                None => {
                    ui.colored_label(colour(Class::Approval), "waiting for a decision");
                }
            }
        }
        Body::Fork {
            from_run,
            from_seq,
            note,
        } => {
            if ui
                .link(format!("forked from {}@{from_seq}", from_run.short()))
                .clicked()
            {
                app.command(Command::Open {
                    run: *from_run,
                    seq: *from_seq,
                });
            }
            if let Some(note) = note {
                ui.monospace(first_lines(note, 8));
            }
        }
        Body::Text { text, error, .. } => {
            if !text.is_empty() {
                let text = first_lines(text, 16);
                if *error {
                    ui.colored_label(colour(Class::Error), text);
                } else {
                    ui.label(text);
                }
            }
        }
    }
}

/// The body of a model call's card.
fn model_card(app: &mut Inspector, ui: &mut egui::Ui, card: &Card) {
    let head = card.head;
    let Body::Model {
        text,
        reasoning,
        calls,
        usage,
        error,
        request_seq,
        compacted,
        route,
        ..
    } = &card.body
    else {
        return;
    };
    if let Some(route) = route {
        ui.weak(format!("routed to {route}"));
    }
    if let Some(u) = usage {
        ui.weak(format!(
            "{} in / {} out tokens · {} · {}",
            u.input_tokens,
            u.output_tokens,
            describe::usd(u.cost_micro_usd),
            duration(u.latency_ms)
        ));
    }
    if let Some(n) = compacted {
        ui.label(format!("compacted {n} messages into a summary"));
    }
    if let Some(error) = error {
        ui.colored_label(colour(Class::Error), format!("failed: {error}"));
    } else if head.end.is_none() {
        ui.weak("waiting for the model...");
    }
    if !reasoning.is_empty() {
        egui::CollapsingHeader::new(format!("reasoning ({} blocks)", reasoning.len()))
            .id_salt(("reasoning", card.step))
            .default_open(false)
            .show(ui, |ui| {
                for block in reasoning {
                    ui.label(RichText::new(block).italics().weak());
                }
            });
    }
    if !text.is_empty() {
        egui_commonmark::CommonMarkViewer::new().show(ui, &mut app.markdown, text);
    }
    for call in calls {
        ui.label(RichText::new(format!("calls {} ({})", call.name, call.id)).strong());
        ui.label(RichText::new(&call.args).monospace());
    }
    if ui
        .small_button("what the model saw")
        .on_hover_text("the request this call sent, rebuilt from the log")
        .clicked()
    {
        app.command(Command::MoveTo(*request_seq));
        app.command(Command::ShowRequest(true));
    }
}

/// The body of a tool call's card.
fn tool_card(app: &mut Inspector, ui: &mut egui::Ui, card: &Card) {
    let Body::Tool {
        call_id,
        args,
        duration_ms,
        question,
        child,
        ..
    } = &card.body
    else {
        return;
    };
    if let Some(ms) = duration_ms {
        ui.weak(format!("ran {}", duration(*ms)));
    }
    if let Some(q) = question {
        ui.label(RichText::new(format!("asks: {}", q.question)).strong());
    }
    if let Some((run, agent)) = child {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("child run {} ({agent})", run.short()));
            if ui
                .button("open child run")
                .on_hover_text(format!(
                    "show run {run}: the {agent} this call delegated to"
                ))
                .clicked()
            {
                app.command(Command::Open { run: *run, seq: 0 });
            }
        });
    }
    // arguments and result side by side; plain left-aligned columns (`ui.columns` lays
    // out justified, which would stretch the spaces of wrapped text and drop the JSON's
    // indentation), whole pixels wide so wrapping does not depend on rounding
    let half = ((ui.available_width() - ui.spacing().item_spacing.x) / 2.0).floor();
    ui.horizontal_top(|ui| {
        ui.vertical(|ui| {
            ui.set_width(half);
            ui.strong("arguments");
            if args.is_object() || args.is_array() {
                json_tree(ui, &format!("args {call_id}"), args, 0);
            } else {
                ui.monospace(crate::cards::text_of(args));
            }
        });
        ui.vertical(|ui| {
            ui.set_width(half);
            result_column(app, ui, card);
        });
    });
}

/// A tool call's result (or why there is none yet), folded after [`RESULT_LINES`] lines.
fn result_column(app: &mut Inspector, ui: &mut egui::Ui, card: &Card) {
    let Body::Tool {
        call_id,
        tool,
        output,
        unknown,
        ..
    } = &card.body
    else {
        return;
    };
    match (output, unknown) {
        (Some(out), _) => {
            let what = if out.is_error { "error" } else { "result" };
            let text = RichText::new(&out.head).monospace();
            ui.strong(what);
            if out.is_error {
                ui.label(text.color(colour(Class::Error)));
            } else {
                ui.label(text);
            }
            if out.lines > RESULT_LINES
                && ui
                    .small_button(format!(
                        "show all ({} lines, {} bytes)",
                        out.lines, out.bytes
                    ))
                    .clicked()
            {
                app.command(Command::ShowAll {
                    title: format!("{tool} {call_id}"),
                    blob: out.blob,
                    from: 0,
                });
            }
        }
        (None, Some(why)) => {
            ui.colored_label(colour(Class::Error), format!("outcome unknown: {why}"));
        }
        (None, None) if tool == retrace_replay::question::ASK_TOOL => {
            ui.colored_label(colour(Class::Approval), "waiting for an answer");
        }
        (None, None) => {
            ui.weak("running...");
        }
    }
}

/// Forks of this run made within this step, as links.
fn forks_here(app: &mut Inspector, ui: &mut egui::Ui, head: &StepHead) {
    let Some(run) = app.selected else {
        return;
    };
    let forks: Vec<_> = app
        .runs
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|r| r.parent.is_some_and(|(p, at)| p == run && head.covers(at)))
        .map(|r| (r.id, r.name.clone(), r.parent.map_or(0, |(_, at)| at)))
        .collect();
    for (fork, name, at) in forks {
        if ui
            .link(format!("forked here at #{at}: {name} {}", fork.short()))
            .clicked()
        {
            app.command(Command::Open {
                run: fork,
                seq: at + 1,
            });
        }
    }
}

/// The first `n` lines of `text`, with a note of how many more there are.
fn first_lines(text: &str, n: usize) -> String {
    let total = text.lines().count();
    if total <= n {
        return text.to_owned();
    }
    let mut out: String = text.lines().take(n).collect::<Vec<_>>().join("\n");
    let _ = write!(out, "\n… {} more lines", total - n);
    out
}

/// The tool result being paged through, in a window of its own.
pub fn pager(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(pager) = app.pager.clone() else {
        return;
    };
    let mut open = true;
    egui::Window::new(format!("output of {}", pager.title))
        .id(egui::Id::unique("retrace pager"))
        .open(&mut open)
        .default_size([640.0, 480.0])
        .show(ui.ctx(), |ui| match &pager.page {
            None => {
                ui.label("loading...");
            }
            Some((text, total)) => {
                let to = (pager.from + crate::cards::PAGE_LINES).min(*total);
                ui.horizontal(|ui| {
                    ui.label(format!("lines {}–{to} of {total}", pager.from + 1));
                    if ui
                        .add_enabled(pager.from > 0, egui::Button::new("previous page"))
                        .clicked()
                    {
                        app.command(Command::ShowAll {
                            title: pager.title.clone(),
                            blob: pager.blob,
                            from: pager.from.saturating_sub(crate::cards::PAGE_LINES),
                        });
                    }
                    if ui
                        .add_enabled(to < *total, egui::Button::new("next page"))
                        .clicked()
                    {
                        app.command(Command::ShowAll {
                            title: pager.title.clone(),
                            blob: pager.blob,
                            from: to,
                        });
                    }
                });
                egui::ScrollArea::both().show(ui, |ui| {
                    ui.label(RichText::new(text).monospace());
                });
            }
        });
    if !open {
        app.command(Command::ClosePager);
    }
}
