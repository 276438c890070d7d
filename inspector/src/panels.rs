//! The panels: each draws part of the [`Inspector`] and emits [`Command`]s; none changes
//! what it shows directly.
//!
//! - runs (left), top bar, timeline with scrubber and density strip (middle);
//! - detail (right): actions (diff, fork, edit; the approvals pending and the question the
//!   run waits on, with buttons that decide or answer), the event, and the state at the
//!   cursor — status and hash, the plan (items with their status), compactions, the
//!   conversation — or, on a model call, the request it sent.

use egui::{Color32, RichText};
use retrace_replay::plan::{ItemStatus, Plan};
use retrace_replay::{Answer, Asking, describe};
use serde_json::Value;

use crate::app::Inspector;
use crate::command::Command;
use crate::source::Class;

/// The width a run's row in the runs panel wraps at.
const RUN_ROW_WIDTH: f32 = 240.0;

/// Rows a page-up or page-down moves.
const PAGE_STEP: i64 = 20;

/// The colour of a class of event.
pub fn colour(class: Class) -> Color32 {
    match class {
        Class::Model => Color32::from_rgb(90, 150, 230),
        Class::Tool => Color32::from_rgb(90, 180, 110),
        Class::Approval => Color32::from_rgb(230, 160, 60),
        Class::Error => Color32::from_rgb(220, 80, 80),
        Class::Run => Color32::GRAY,
        Class::Context => Color32::from_rgb(180, 120, 230),
    }
}

/// The classes the density strip has a row for, top to bottom, with their legend names.
const STRIP: [(Class, &str); 5] = [
    (Class::Model, "model"),
    (Class::Tool, "tool"),
    (Class::Approval, "approval"),
    (Class::Error, "error"),
    (Class::Context, "compaction"),
];

/// Arrows step, Page Up/Down move a screenful, Home/End go to the ends — unless a text
/// field has the keyboard.
pub fn keyboard(app: &mut Inspector, ui: &egui::Ui) {
    if ui.ctx().egui_wants_keyboard_input() || app.selected.is_none() {
        return;
    }
    let keys = [
        (egui::Key::ArrowDown, Command::Step(1)),
        (egui::Key::ArrowUp, Command::Step(-1)),
        (egui::Key::PageDown, Command::Step(PAGE_STEP)),
        (egui::Key::PageUp, Command::Step(-PAGE_STEP)),
        (egui::Key::Home, Command::Home),
        (egui::Key::End, Command::End),
    ];
    for (key, command) in keys {
        // consumed: a label's text selection must not also move on them (it would scroll
        // the list to its own cursor, away from the one these keys move)
        let presses = ui.input_mut(|i| i.count_and_consume_key(egui::Modifiers::NONE, key));
        for _ in 0..presses {
            app.command(command.clone());
        }
    }
    // M, T, A, E, C: next model call, tool call, approval, error, compaction; with Shift,
    // the previous
    let jumps = [
        (egui::Key::M, Class::Model),
        (egui::Key::T, Class::Tool),
        (egui::Key::A, Class::Approval),
        (egui::Key::E, Class::Error),
        (egui::Key::C, Class::Context),
    ];
    // 1-4: the views, in the order of the switch
    let views = [
        egui::Key::Num1,
        egui::Key::Num2,
        egui::Key::Num3,
        egui::Key::Num4,
    ];
    for (key, view) in views.into_iter().zip(crate::app::View::ALL) {
        if ui.input(|i| i.key_pressed(key)) {
            app.command(Command::View(view));
        }
    }
    // n, N: the next and previous hit of the search
    let (next_hit, shift) = ui.input(|i| (i.key_pressed(egui::Key::N), i.modifiers.shift));
    if next_hit {
        app.command(Command::NextHit { forward: !shift });
    }
    for (key, class) in jumps {
        let (pressed, shift) = ui.input(|i| (i.key_pressed(key), i.modifiers.shift));
        if pressed {
            app.command(Command::Jump {
                class,
                forward: !shift,
            });
        }
    }
}

/// The bar above everything: the position, jumps, follow, refresh, and the last error.
pub fn top_bar(app: &mut Inspector, ui: &mut egui::Ui) {
    egui::Panel::top("bar").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.strong("retrace inspector");
            match app.position() {
                Some((run, seq)) => {
                    ui.monospace(format!("{}@{seq} of {}", run.short(), app.len));
                }
                None => {
                    ui.label("no run selected");
                }
            }
            back_to_parent(app, ui);
            ui.separator();
            for (class, name) in [
                (Class::Model, "model call"),
                (Class::Tool, "tool call"),
                (Class::Approval, "approval"),
                (Class::Error, "error"),
                (Class::Context, "compaction"),
            ] {
                if ui
                    .small_button(format!("< {name}"))
                    .on_hover_text(format!("previous {name}"))
                    .clicked()
                {
                    app.command(Command::Jump {
                        class,
                        forward: false,
                    });
                }
                if ui
                    .small_button(format!("{name} >"))
                    .on_hover_text(format!("next {name}"))
                    .clicked()
                {
                    app.command(Command::Jump {
                        class,
                        forward: true,
                    });
                }
            }
            ui.separator();
            let mut follow = app.follow_head;
            if ui.checkbox(&mut follow, "follow head").changed() {
                app.command(Command::FollowHead(follow));
            }
            if ui.button("refresh").clicked() {
                app.command(Command::Refresh);
            }
        });
        if let Some(error) = &app.error {
            ui.colored_label(colour(Class::Error), error);
        } else if let Some(notice) = &app.notice {
            ui.label(notice);
        }
    });
}

/// In a child run: a button back to the parent at the call that delegated to it (at the
/// parent's newest event until that call is found).
fn back_to_parent(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some((parent, call)) = &app.parent_call else {
        return;
    };
    let (label, seq) = match call {
        Some((seq, call)) => (format!("back to parent at {call}"), *seq),
        None => (format!("back to parent {}", parent.short()), u64::MAX),
    };
    if ui
        .button(label)
        .on_hover_text(format!(
            "show run {parent}, the run that delegated to this one"
        ))
        .clicked()
    {
        app.command(Command::Open { run: *parent, seq });
    }
}

/// The runs panel: every run with status, age, steps, tokens and cost; forks and child runs
/// under their parent; a text filter.
pub fn runs(app: &mut Inspector, ui: &mut egui::Ui) {
    ui.heading("Runs");
    ui.add(egui::TextEdit::singleline(&mut app.filter).hint_text("filter by name, id or status"));
    let Some(runs) = &app.runs else {
        ui.label("loading runs...");
        return;
    };
    if runs.is_empty() {
        ui.label("This store has no runs yet. Start one with `retrace run SPEC`.");
        return;
    }
    let filter = app.filter.to_lowercase();
    let visible: Vec<_> = runs
        .iter()
        .filter(|r| {
            filter.is_empty()
                || r.name.to_lowercase().contains(&filter)
                || r.agent
                    .as_ref()
                    .is_some_and(|a| a.to_lowercase().contains(&filter))
                || r.id.to_string().contains(&filter)
                || r.status.contains(&filter)
        })
        .cloned()
        .collect();
    egui::ScrollArea::vertical().show(ui, |ui| {
        // roots first, each followed by its forks and child runs (indented by depth)
        let mut order = Vec::new();
        let ids: Vec<_> = visible.iter().map(|r| r.id).collect();
        for root in visible
            .iter()
            .filter(|r| above(r).is_none_or(|p| !ids.contains(&p)))
        {
            push_tree(&visible, root, 0, &mut order);
        }
        for (run, depth) in order {
            let selected = app.selected == Some(run.id);
            // a child run by its sub-agent's name
            let name = match (&run.agent, run.name.is_empty()) {
                (Some(agent), _) => agent.as_str(),
                (None, true) => "run",
                (None, false) => &run.name,
            };
            let fork = match (run.parent, run.child_of) {
                (Some((p, seq)), _) => format!(" fork of {}@{seq}", p.short()),
                (None, Some(p)) => format!(" sub-agent of {}", p.short()),
                (None, None) => String::new(),
            };
            let text = format!(
                "{}{name} {}{fork}\n{} · {} events · {} steps · {} tokens · {}",
                "   ".repeat(depth),
                run.id.short(),
                run.status,
                run.len,
                run.steps,
                run.tokens,
                describe::usd(run.cost_micro_usd),
            );
            // a fixed wrap width: the panel's own width varies by a scrollbar, and the
            // rows' layout must not (snapshots compare it)
            let response = ui
                .scope(|ui| {
                    ui.set_max_width(RUN_ROW_WIDTH);
                    ui.selectable_label(selected, text)
                })
                .inner
                .on_hover_text(format!("created {}", describe::time(run.created_at)));
            if response.clicked() {
                app.command(Command::SelectRun(run.id));
            }
        }
    });
}

fn push_tree(
    runs: &[crate::source::RunRow],
    run: &crate::source::RunRow,
    depth: usize,
    out: &mut Vec<(crate::source::RunRow, usize)>,
) {
    out.push((run.clone(), depth));
    for child in runs.iter().filter(|r| above(r) == Some(run.id)) {
        push_tree(runs, child, depth + 1, out);
    }
}

/// The run a run is listed under: the one it was forked from, or the one that delegated
/// to it.
fn above(run: &crate::source::RunRow) -> Option<retrace_events::RunId> {
    run.parent.map(|(p, _)| p).or(run.child_of)
}

/// The switch between the views of the middle: steps, events, time and cost, run vs run.
pub fn view_switch(app: &mut Inspector, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        for (n, view) in (1..).zip(crate::app::View::ALL) {
            if ui
                .selectable_label(app.view == view, view.label())
                .on_hover_text(format!("key {n}"))
                .clicked()
                && app.view != view
            {
                app.command(Command::View(view));
            }
        }
    });
    ui.separator();
}

/// The timeline: a scrubber over the whole run and one row per event, only the visible
/// rows drawn (and loaded).
pub fn timeline(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(run) = app.selected else {
        ui.centered_and_justified(|ui| ui.label("Select a run on the left."));
        return;
    };
    if app.len == 0 {
        ui.label(format!("Run {run} has no events yet."));
        return;
    }
    let mut cursor = app.cursor;
    // the scrubber spans the panel: drag or click anywhere on it, or type a seq
    ui.spacing_mut().slider_width = (ui.available_width() - 110.0).max(100.0);
    let scrubber = egui::Slider::new(&mut cursor, 0..=app.len - 1)
        .text("seq")
        .clamping(egui::SliderClamping::Always);
    if ui.add(scrubber).changed() {
        app.command(Command::MoveTo(cursor));
    }
    density_strip(app, ui);
    ui.separator();
    // one line per row, whatever the width: the virtual list needs a fixed row height
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    // every row exactly this tall, so the virtual list knows where each one is
    let row_height = (ui.text_style_height(&egui::TextStyle::Monospace)
        + 2.0 * ui.spacing().button_padding.y)
        .max(ui.spacing().interact_size.y);
    let total = usize::try_from(app.len).unwrap_or(usize::MAX);
    let mut area = egui::ScrollArea::vertical().auto_shrink([false, false]);
    if std::mem::take(&mut app.scroll_to_cursor) {
        // put the cursor's row mid-view, whether or not it is drawn now
        #[allow(clippy::cast_precision_loss)] // row offsets of runs far below 2^24 rows
        let top = app.cursor as f32 * (row_height + ui.spacing().item_spacing.y);
        let offset = top - (ui.available_height() - row_height) / 2.0;
        area = area.vertical_scroll_offset(offset.max(0.0));
    }
    area.show_rows(ui, row_height, total, |ui, range| {
        for i in range {
            let seq = i as u64;
            let selected = seq == app.cursor;
            let (text, class) = match app.row(seq) {
                Some(row) => (
                    format!("#{seq:<7} {:<20} {}", row.kind, row.summary),
                    row.class,
                ),
                None => (format!("#{seq:<7} ..."), Class::Run),
            };
            let label = RichText::new(text).monospace().color(colour(class));
            let clicked = ui
                .allocate_ui_with_layout(
                    egui::vec2(ui.available_width(), row_height),
                    egui::Layout::left_to_right(egui::Align::Center),
                    |ui| ui.add(egui::Button::selectable(selected, label)).clicked(),
                )
                .inner;
            if clicked {
                app.command(Command::MoveTo(seq));
            }
        }
    });
}

/// Where model calls, tool calls, approvals and errors fall over the whole run: one row
/// per class, a mark where a bin holds any; the cursor as a line. Click to go there.
fn density_strip(app: &mut Inspector, ui: &mut egui::Ui) {
    let width = ui.spacing().slider_width;
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, 18.0), egui::Sense::click());
    legend(ui);
    let Some((len, bins)) = &app.density else {
        return;
    };
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
    #[allow(clippy::cast_precision_loss)] // bins and seqs of runs far below 2^24
    {
        let bin_width = rect.width() / bins.len() as f32;
        let row_height = rect.height() / STRIP.len() as f32;
        for (i, counts) in bins.iter().enumerate() {
            let x = rect.left() + i as f32 * bin_width;
            for (row, (class, _)) in STRIP.into_iter().enumerate() {
                if counts[class.index()] > 0 {
                    let y = rect.top() + row as f32 * row_height;
                    painter.rect_filled(
                        egui::Rect::from_min_size(
                            egui::pos2(x, y),
                            egui::vec2(bin_width.max(1.0), row_height - 0.5),
                        ),
                        0.0,
                        colour(class),
                    );
                }
            }
        }
        if *len > 0 {
            let x = rect.left() + rect.width() * app.cursor as f32 / *len as f32;
            painter.vline(x, rect.y_range(), (1.5, ui.visuals().strong_text_color()));
            if response.clicked()
                && let Some(pos) = response.interact_pointer_pos()
            {
                let fraction = ((pos.x - rect.left()) / rect.width()).clamp(0.0, 1.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let seq = (fraction * *len as f32) as u64;
                app.command(Command::MoveTo(seq.min(len - 1)));
            }
        }
    }
}

/// What the density strip's rows are: each class's name in its colour.
fn legend(ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.spacing_mut().item_spacing.x = 10.0;
        for (class, name) in STRIP {
            let (swatch, _) = ui.allocate_exact_size(egui::vec2(8.0, 8.0), egui::Sense::hover());
            ui.painter().rect_filled(swatch, 1.0, colour(class));
            ui.label(RichText::new(name).small().color(colour(class)));
        }
    });
}

/// The event at the cursor in full and the state after it; on a model call, a tab with
/// the request it sent.
pub fn detail(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(detail) = &app.detail else {
        if app.selected.is_some() {
            ui.label("loading...");
        }
        return;
    };
    let detail = detail.clone();
    egui::ScrollArea::vertical().show(ui, |ui| {
        diff_view(app, ui);
        actions(app, ui, &detail);
        ui.heading(format!("seq {} · {}", detail.seq, detail.kind));
        ui.label(&detail.summary);
        if let Some((hook, denied)) = &detail.hook {
            let c = if *denied {
                colour(Class::Error)
            } else {
                colour(Class::Tool)
            };
            ui.colored_label(c, RichText::new(hook).strong());
        }
        if let Some(child) = detail.child {
            ui.horizontal_wrapped(|ui| {
                ui.label(format!("child run {}", child.short()));
                if ui.button("open child run").clicked() {
                    app.command(Command::Open { run: child, seq: 0 });
                }
            });
        }
        ui.small(format!(
            "{} · event {}",
            describe::time(detail.at),
            &detail.id[..16.min(detail.id.len())]
        ));
        let show_request = tabs(app, ui, &detail);
        if show_request && let Some(request) = &detail.request {
            match request {
                Ok(request) => request_view(ui, request),
                Err(why) => {
                    ui.label(why);
                }
            }
            return;
        }
        if let Some(reply) = &detail.reply {
            reply_view(ui, reply);
        }
        egui::CollapsingHeader::new("Event and payloads")
            .default_open(true)
            .show(ui, |ui| json_tree(ui, "event", &detail.event, 0));
        ui.separator();
        ui.strong(format!(
            "state at seq {}: {} · hash {}",
            detail.seq,
            detail.status,
            &detail.state_hash[..16.min(detail.state_hash.len())]
        ));
        if let Some(plan) = &detail.plan {
            plan_view(ui, plan);
        }
        if detail.compactions > 0 || detail.summary_text.is_some() {
            ui.label(format!("compactions so far: {}", detail.compactions));
        }
        if let Some(summary) = &detail.summary_text {
            egui::CollapsingHeader::new("Summary (of the messages compacted so far)")
                .default_open(true)
                .show(ui, |ui| {
                    ui.label(summary);
                });
        }
        egui::CollapsingHeader::new(format!(
            "Conversation ({} messages)",
            detail.conversation.len()
        ))
        .default_open(true)
        .show(ui, |ui| {
            for (role, text) in &detail.conversation {
                ui.horizontal_wrapped(|ui| {
                    ui.strong(format!("{role}:"));
                    ui.label(text);
                });
            }
        });
        egui::CollapsingHeader::new("State")
            .default_open(false)
            .show(ui, |ui| json_tree(ui, "state", &detail.state, 0));
    });
}

/// The agent's plan in the state at the cursor: progress, then each item with its status
/// mark in the status's colour (done green, in progress blue, blocked red, pending grey).
fn plan_view(ui: &mut egui::Ui, plan: &Plan) {
    let (done, all) = plan.progress();
    egui::CollapsingHeader::new(format!("Plan {done} of {all} done"))
        .id_salt("plan")
        .default_open(true)
        .show(ui, |ui| {
            for (item, line) in plan.items.iter().zip(plan.lines()) {
                let colour = match item.status {
                    ItemStatus::Done => colour(Class::Tool),
                    ItemStatus::InProgress => colour(Class::Model),
                    ItemStatus::Blocked => colour(Class::Error),
                    ItemStatus::Pending => ui.visuals().weak_text_color(),
                };
                ui.label(RichText::new(line).color(colour));
            }
        });
}

/// The question the run waits on: its text, a button per choice, a text field when it
/// takes free text. Answers are recorded only at the run's newest event (where the run is
/// parked); earlier, the question is shown as part of the state.
fn question_view(
    app: &mut Inspector,
    ui: &mut egui::Ui,
    detail: &crate::source::Detail,
    asking: &Asking,
) {
    ui.separator();
    ui.strong("Question for you");
    ui.small(format!(
        "call {} (user.ask at #{})",
        asking.call_id, asking.seq
    ));
    let question = &asking.question;
    ui.label(RichText::new(&question.question).strong());
    if detail.seq + 1 < app.len {
        ui.weak("answer it at the run's newest event, if it still waits there");
        return;
    }
    answer_controls(app, ui, &asking.call_id, question);
    if !app.continue_runs {
        ui.weak("the answer is recorded; the run then goes on with `retrace resume`");
    }
}

/// A button per choice of `question` and, when it takes free text, a field "your answer"
/// with an "Answer" button: each answers the `user.ask` call `call`.
pub(crate) fn answer_controls(
    app: &mut Inspector,
    ui: &mut egui::Ui,
    call: &str,
    question: &retrace_replay::Question,
) {
    if !question.choices.is_empty() {
        ui.horizontal_wrapped(|ui| {
            for (i, choice) in question.choices.iter().enumerate() {
                if ui
                    .button(choice)
                    .on_hover_text(format!("answer with choice {}", i + 1))
                    .clicked()
                {
                    app.command(Command::Answer {
                        call: call.to_owned(),
                        answer: Answer::Choice(i + 1),
                    });
                }
            }
        });
    }
    if question.takes_text() {
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("your answer");
            ui.text_edit_singleline(&mut app.answer_text)
                .labelled_by(label.id);
            let typed = !app.answer_text.trim().is_empty();
            if ui.add_enabled(typed, egui::Button::new("Answer")).clicked() {
                app.command(Command::Answer {
                    call: call.to_owned(),
                    answer: Answer::Text(app.answer_text.trim().to_owned()),
                });
            }
        });
    }
}

/// The two tabs of the detail ("event and state", "request") when the event is a model
/// call or a compaction; whether the request tab is the one shown.
fn tabs(app: &mut Inspector, ui: &mut egui::Ui, detail: &crate::source::Detail) -> bool {
    if detail.request.is_none() {
        return false;
    }
    ui.horizontal(|ui| {
        let request = app.tab == crate::app::Tab::Request;
        if ui.selectable_label(!request, "event and state").clicked() {
            app.command(Command::ShowRequest(false));
        }
        if ui
            .selectable_label(request, "request")
            .on_hover_text("the request this model call sent, rebuilt from the log")
            .clicked()
        {
            app.command(Command::ShowRequest(true));
        }
    });
    ui.separator();
    app.tab == crate::app::Tab::Request
}

/// A message's text in the list: its first line, at most this many characters.
const SHORT: usize = 80;

/// A model call's request as sent: model, step, budget, whether it asks for a summary, the
/// system prompt and tools, then every message in order, marked pinned or new; a long
/// message opens to its whole text.
fn request_view(ui: &mut egui::Ui, request: &crate::source::RequestView) {
    ui.strong(format!(
        "request of model call #{} · step {} · attempt {}",
        request.seq, request.step, request.attempt
    ));
    ui.label(format!(
        "model {} · record {}",
        request.model, request.record
    ));
    if !request.params.is_empty() {
        ui.monospace(format!("params {}", request.params));
    }
    match &request.budget {
        Some(budget) => ui.label(budget),
        None => ui.weak("no context budget recorded (the run has no [context])"),
    };
    if let Some(n) = request.compacts {
        ui.colored_label(
            colour(Class::Context),
            format!("summary request: compacts {n} messages"),
        );
    }
    egui::CollapsingHeader::new("System prompt")
        .id_salt(("request system", request.seq))
        .default_open(false)
        .show(ui, |ui| {
            ui.label(&request.system);
        });
    ui.label(format!(
        "tools: {}",
        if request.tools.is_empty() {
            "(none)".to_owned()
        } else {
            request.tools.join(", ")
        }
    ));
    ui.separator();
    ui.strong(format!(
        "Messages ({} as sent; {} new since the previous model call)",
        request.messages.len(),
        request.new
    ));
    // one line per message, cut at the panel's edge; a long one opens to its whole text
    ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Truncate);
    for message in &request.messages {
        request_message(ui, request.seq, message);
    }
}

/// One message of a request on one line, marked; a long one opens to its whole text.
fn request_message(ui: &mut egui::Ui, seq: u64, message: &crate::source::RequestMessage) {
    use crate::source::Mark;
    let mark = match message.mark {
        Mark::Earlier => String::new(),
        other => format!(" · {}", other.label()),
    };
    let head = format!("{:>3} {}{mark}", message.n, message.role);
    let colour = match message.mark {
        Mark::PinnedTask | Mark::PinnedSummary => Some(colour(Class::Approval)),
        Mark::New => Some(colour(Class::Model)),
        Mark::Summarized | Mark::Instruction => Some(colour(Class::Context)),
        Mark::Earlier => None,
    };
    let mut body = message.text.clone();
    for call in &message.calls {
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str("-> ");
        body.push_str(call);
    }
    let first = body.lines().next().unwrap_or_default();
    let long =
        body.contains('\n') || first.chars().count() > SHORT || !message.reasoning.is_empty();
    let short = if first.chars().count() > SHORT {
        format!("{}…", first.chars().take(SHORT - 1).collect::<String>())
    } else if long {
        format!("{first} …")
    } else {
        first.to_owned()
    };
    let short = if short.is_empty() {
        "(empty)".to_owned()
    } else {
        short
    };
    let mut line = RichText::new(format!("{head}  {short}")).monospace();
    if let Some(c) = colour {
        line = line.color(c);
    }
    if long {
        // a header that truncates (a CollapsingHeader's does not), opened by its
        // arrow or by clicking the line
        let id = ui.make_persistent_id(("request message", seq, message.n));
        let state = |ui: &egui::Ui| {
            egui::collapsing_header::CollapsingState::load_with_default_open(ui.ctx(), id, false)
        };
        let (_, header, _) = state(ui)
            .show_header(ui, |ui| {
                ui.add(egui::Label::new(line).sense(egui::Sense::click()))
            })
            .body(|ui| {
                ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Wrap);
                for block in &message.reasoning {
                    ui.label(
                        RichText::new(format!("reasoning: {block}"))
                            .italics()
                            .weak(),
                    );
                }
                ui.label(&body);
            });
        if header.inner.clicked() {
            let mut open = state(ui);
            open.toggle(ui);
            open.store(ui.ctx());
        }
    } else {
        ui.horizontal(|ui| {
            ui.add_space(ui.spacing().indent);
            ui.label(line);
        });
    }
}

/// A model reply: its reasoning (folded away from the answer), the answer, the calls.
fn reply_view(ui: &mut egui::Ui, reply: &crate::source::ReplyView) {
    if !reply.reasoning.is_empty() {
        egui::CollapsingHeader::new(format!("Reasoning ({} blocks)", reply.reasoning.len()))
            .default_open(true)
            .show(ui, |ui| {
                for block in &reply.reasoning {
                    ui.label(RichText::new(block).italics().weak());
                }
            });
    }
    ui.horizontal_wrapped(|ui| {
        ui.strong("Answer:");
        if reply.answer.is_empty() {
            ui.weak("(no text)");
        } else {
            ui.label(&reply.answer);
        }
    });
    for call in &reply.calls {
        ui.horizontal_wrapped(|ui| {
            ui.strong("Calls:");
            ui.monospace(call);
        });
    }
}

/// Diff marks, fork (as is or edited), the approvals pending at the cursor and the question
/// the run waits on.
fn actions(app: &mut Inspector, ui: &mut egui::Ui, detail: &crate::source::Detail) {
    ui.horizontal_wrapped(|ui| {
        if ui
            .button("mark as A")
            .on_hover_text("remember this point to diff against")
            .clicked()
        {
            app.command(Command::MarkA);
        }
        let diff_label = match app.mark {
            Some((run, seq)) => format!("diff A ({}@{seq}) -> here", run.short()),
            None => "diff A -> here".to_owned(),
        };
        if ui
            .add_enabled(app.mark.is_some(), egui::Button::new(diff_label))
            .clicked()
        {
            app.command(Command::DiffWithA);
        }
        if ui
            .button("fork here")
            .on_hover_text("a new run sharing every event up to here")
            .clicked()
        {
            app.command(Command::Fork { edited: false });
        }
        if detail.editable
            && app.edit.is_none()
            && ui
                .button("edit and fork")
                .on_hover_text("a new run with this event's content changed")
                .clicked()
        {
            app.command(Command::StartEdit);
        }
        ui.checkbox(&mut app.continue_runs, "continue with the runtime");
    });
    if let Some(edit) = &mut app.edit {
        let label = ui.label("edited content (JSON)");
        ui.add(
            egui::TextEdit::multiline(edit)
                .code_editor()
                .desired_rows(6)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
        let valid = serde_json::from_str::<Value>(edit);
        ui.horizontal(|ui| {
            match &valid {
                Ok(_) => ui.label("valid JSON"),
                Err(e) => ui.colored_label(colour(Class::Error), format!("not JSON: {e}")),
            };
            if ui
                .add_enabled(valid.is_ok(), egui::Button::new("fork with edit"))
                .clicked()
            {
                app.command(Command::Fork { edited: true });
            }
            if ui.button("cancel").clicked() {
                app.command(Command::CancelEdit);
            }
        });
    }
    approvals_view(app, ui, detail);
    match &detail.question {
        Some(Ok(asking)) => question_view(app, ui, detail, asking),
        Some(Err(why)) => {
            ui.separator();
            ui.colored_label(colour(Class::Error), why);
        }
        None => {}
    }
    ui.separator();
}

/// The approvals pending at the cursor: decided from here only at the run's newest event.
fn approvals_view(app: &mut Inspector, ui: &mut egui::Ui, detail: &crate::source::Detail) {
    if !detail.approvals.is_empty() && detail.seq + 1 < app.len {
        // pending here, but the run went on: decided at its newest event, if still pending
        ui.separator();
        ui.strong("Pending approvals at this event");
        for (call, request) in &detail.approvals {
            ui.monospace(format!("{call}: {request}"));
        }
        ui.weak("decide them at the run's newest event, if they still wait there");
    } else if !detail.approvals.is_empty() {
        ui.separator();
        ui.strong("Pending approvals");
        let label = ui.label("note for the model");
        ui.text_edit_singleline(&mut app.note).labelled_by(label.id);
        for (call, request) in &detail.approvals {
            ui.horizontal_wrapped(|ui| {
                ui.monospace(format!("{call}: {request}"));
                if ui.button(format!("approve {call}")).clicked() {
                    app.command(Command::Decide {
                        call: call.clone(),
                        approve: true,
                    });
                }
                if ui.button(format!("deny {call}")).clicked() {
                    app.command(Command::Decide {
                        call: call.clone(),
                        approve: false,
                    });
                }
            });
        }
    }
}

/// The diff of two points, if one was asked for.
fn diff_view(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(diff) = &app.diff else {
        return;
    };
    let mut close = false;
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.strong(format!(
                "diff {}@{} -> {}@{}",
                diff.a.0.short(),
                diff.a.1,
                diff.b.0.short(),
                diff.b.1
            ));
            close = ui.button("close diff").clicked();
        });
        match diff.first_divergence {
            Some(seq) => ui.label(format!("first divergent event: #{seq}")),
            None => ui.label("the runs do not diverge (one is a prefix of the other)"),
        };
        ui.label(format!("{} state changes", diff.changes.len()));
        for (kind, path, old, new) in &diff.changes {
            let show = |v: &Option<Value>| v.as_ref().map_or("-".to_owned(), Value::to_string);
            let text = match kind {
                retrace_replay::ChangeKind::Added => format!("added {path}: {}", show(new)),
                retrace_replay::ChangeKind::Removed => format!("removed {path}: {}", show(old)),
                retrace_replay::ChangeKind::Changed => {
                    format!("changed {path}: {} -> {}", show(old), show(new))
                }
            };
            ui.monospace(text);
        }
    });
    if close {
        app.command(Command::CloseDiff);
    }
}

/// A JSON value as an expandable tree; objects and arrays open to the first level.
pub(crate) fn json_tree(ui: &mut egui::Ui, path: &str, value: &Value, depth: usize) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                leaf_or_branch(ui, &format!("{path}.{key}"), key, v, depth);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaf_or_branch(ui, &format!("{path}[{i}]"), &format!("[{i}]"), v, depth);
            }
        }
        other => {
            ui.monospace(other.to_string());
        }
    }
}

fn leaf_or_branch(ui: &mut egui::Ui, path: &str, key: &str, value: &Value, depth: usize) {
    match value {
        Value::Object(m) if !m.is_empty() => branch(ui, path, key, value, depth, m.len()),
        Value::Array(a) if !a.is_empty() => branch(ui, path, key, value, depth, a.len()),
        Value::String(s) => {
            ui.horizontal_wrapped(|ui| {
                ui.monospace(format!("{key}:"));
                ui.label(s);
            });
        }
        other => {
            ui.monospace(format!("{key}: {other}"));
        }
    }
}

fn branch(ui: &mut egui::Ui, path: &str, key: &str, value: &Value, depth: usize, n: usize) {
    egui::CollapsingHeader::new(format!("{key} ({n})"))
        .id_salt(path)
        .default_open(depth == 0)
        .show(ui, |ui| json_tree(ui, path, value, depth + 1));
}
