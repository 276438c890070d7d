//! Run vs run: pick a second run (the fork's origin, one of its forks, an eval replay, any
//! run), then see both runs' steps side by side (see [`crate::compare`]): the last shared
//! steps, the first divergence marked, and in each differing pair the words that changed —
//! struck through in red on the left, in green on the right.

use std::fmt::Write as _;

use egui::text::LayoutJob;
use egui::{Color32, RichText, TextFormat};
use retrace_events::RunId;

use crate::app::Inspector;
use crate::cards::{Body, Card};
use crate::command::Command;
use crate::compare::{Pair, Piece};
use crate::panels::colour;
use crate::source::Class;
use crate::step_view::title;

/// Removed words.
const REMOVED: Color32 = Color32::from_rgb(120, 40, 40);
/// Added words.
const ADDED: Color32 = Color32::from_rgb(40, 100, 50);
/// Widest a column gets (text wraps there however wide the window).
const COLUMN: f32 = 520.0;
/// Lines of a field a row shows.
const FIELD_LINES: usize = 10;
/// Bytes of a changed field a row shows.
const FIELD_BYTES: usize = 2_000;

/// The run-vs-run view.
pub fn show(app: &mut Inspector, ui: &mut egui::Ui) {
    let Some(run) = app.selected else {
        ui.centered_and_justified(|ui| ui.label("Select a run on the left."));
        return;
    };
    pick(app, ui, run);
    ui.separator();
    let Some(comparison) = app.comparison.clone() else {
        if app.versus.is_some() {
            ui.label("comparing...");
        } else {
            ui.label("Pick a run to compare this one with.");
        }
        return;
    };
    let name = |id: RunId| {
        app.runs
            .as_deref()
            .and_then(|runs| runs.iter().find(|r| r.id == id))
            .map_or_else(|| id.short(), |r| format!("{} {}", r.name, id.short()))
    };
    ui.label(format!(
        "left: {}   right: {}",
        name(comparison.a),
        name(comparison.b)
    ));
    match comparison.divergence {
        Some(seq) => ui.label(format!(
            "{} steps shared; the logs part at #{seq}",
            comparison.shared
        )),
        None => ui.label(format!(
            "{} steps shared; one run's log is a prefix of the other's",
            comparison.shared
        )),
    };
    if comparison.truncated {
        ui.weak(format!(
            "showing the first {} steps after the shared ones",
            crate::compare::MAX_ROWS
        ));
    }
    let (a, b) = (comparison.a, comparison.b);
    egui::ScrollArea::vertical()
        .id_salt("versus")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            if comparison.shared > crate::compare::CONTEXT {
                ui.weak(format!(
                    "… {} earlier shared steps",
                    comparison.shared - crate::compare::CONTEXT
                ));
            }
            // whole pixels, so that a column's wrap width never depends on rounding
            let column = ((ui.available_width() - 32.0) / 2.0).floor().min(COLUMN);
            for (k, pair) in comparison.rows.iter().enumerate() {
                if Some(k) == comparison.first_difference {
                    ui.colored_label(colour(Class::Error), "first divergence:");
                }
                row(app, ui, pair, (a, b), column);
            }
        });
}

/// The run to compare with: suggested first the fork's origin and the run's forks.
fn pick(app: &mut Inspector, ui: &mut egui::Ui, run: RunId) {
    let runs = app.runs.clone().unwrap_or_default();
    let here = runs.iter().find(|r| r.id == run);
    let mut related: Vec<_> = runs
        .iter()
        .filter(|r| {
            r.id != run
                && (here.and_then(|h| h.parent).map(|(p, _)| p) == Some(r.id)
                    || r.parent.map(|(p, _)| p) == Some(run))
        })
        .collect();
    let others: Vec<_> = runs
        .iter()
        .filter(|r| r.id != run && !related.iter().any(|x| x.id == r.id))
        .collect();
    related.extend(others);
    let label = |id: RunId| {
        runs.iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.short(), |r| format!("{} {}", r.name, id.short()))
    };
    let mut chosen = app.versus;
    ui.horizontal_wrapped(|ui| {
        // as wide as leaves room for its label: a wider row would widen the whole view
        egui::ComboBox::new("versus run", "compared with the run shown")
            .selected_text(chosen.map_or_else(|| "choose a run".to_owned(), label))
            .width((ui.available_width() - 190.0).clamp(120.0, 320.0))
            .show_ui(ui, |ui| {
                for r in &related {
                    let relation = match (here.and_then(|h| h.parent), r.parent) {
                        (Some((p, _)), _) if p == r.id => " (its origin)",
                        (_, Some((p, _))) if p == run => " (a fork of it)",
                        _ => "",
                    };
                    ui.selectable_value(
                        &mut chosen,
                        Some(r.id),
                        format!("{}{relation}", label(r.id)),
                    );
                }
            });
        if app.versus.is_some() && ui.button("stop comparing").clicked() {
            chosen = None;
        }
    });
    if chosen != app.versus {
        app.command(Command::CompareWith(chosen));
    }
}

/// One aligned pair: the left run's step, the right run's, changed words marked.
fn row(app: &mut Inspector, ui: &mut egui::Ui, pair: &Pair, (a, b): (RunId, RunId), width: f32) {
    let stroke = if pair.differs() {
        egui::Stroke::new(1.5, colour(Class::Error))
    } else {
        egui::Stroke::new(1.0, ui.visuals().weak_text_color())
    };
    egui::Frame::group(ui.style())
        .stroke(stroke)
        .show(ui, |ui| {
            ui.horizontal_top(|ui| {
                for (side, card, run) in [(0, &pair.left, a), (1, &pair.right, b)] {
                    ui.vertical(|ui| {
                        ui.set_width(width);
                        ui.set_max_width(width);
                        match card {
                            None => {
                                ui.weak("(no step here)");
                            }
                            Some(card) => column(app, ui, card, pair, side, run),
                        }
                    });
                }
            });
        });
}

/// One side of a pair.
fn column(
    app: &mut Inspector,
    ui: &mut egui::Ui,
    card: &Card,
    pair: &Pair,
    side: usize,
    run: RunId,
) {
    let shared = if pair.shared { " · shared" } else { "" };
    let heading = format!("#{} {}{shared}", card.head.seq, title(card));
    if ui
        .link(RichText::new(heading).color(colour(card.head.kind.class())))
        .clicked()
    {
        // the step in its run, read as a story
        app.command(Command::View(crate::app::View::Steps));
        app.command(Command::Open {
            run,
            seq: card.head.seq,
        });
    }
    if pair.changes.is_empty() {
        ui.label(cut(&summary(card), FIELD_LINES));
        return;
    }
    for change in &pair.changes {
        ui.weak(change.field);
        let pieces = if side == 0 {
            &change.left
        } else {
            &change.right
        };
        ui.label(marked(ui, pieces, side == 0));
    }
}

/// A field's pieces as one text, changed pieces marked.
fn marked(ui: &egui::Ui, pieces: &[Piece], removed: bool) -> LayoutJob {
    let font = egui::TextStyle::Body.resolve(ui.style());
    let plain = TextFormat::simple(font.clone(), ui.visuals().text_color());
    let mut changed = TextFormat::simple(font, Color32::WHITE);
    changed.background = if removed { REMOVED } else { ADDED };
    if removed {
        changed.strikethrough = egui::Stroke::new(1.0, Color32::WHITE);
    }
    let mut job = LayoutJob::default();
    // a long field is cut: the steps open in full from their headings
    let mut room = FIELD_BYTES;
    for (is_changed, text) in pieces {
        if room == 0 {
            job.append("…", 0.0, plain.clone());
            break;
        }
        let text = retrace_replay::preview::cut(text, room);
        room -= text.len();
        job.append(
            text,
            0.0,
            if *is_changed {
                changed.clone()
            } else {
                plain.clone()
            },
        );
    }
    job
}

/// What a step shows when it is the same on both sides.
fn summary(card: &Card) -> String {
    match &card.body {
        Body::Model { text, calls, .. } => {
            let mut out = text.clone();
            for call in calls {
                let _ = write!(
                    out,
                    "\ncalls {} {}",
                    call.name,
                    call.args.replace('\n', " ")
                );
            }
            out
        }
        Body::Tool { args, output, .. } => format!(
            "{}\n= {}",
            args,
            output.as_ref().map_or("...", |o| o.head.as_str())
        ),
        Body::Approval { decision, .. } => decision.as_ref().map_or_else(
            || "waiting".to_owned(),
            |(d, by, _)| format!("{d:?} by {by}"),
        ),
        Body::Fork {
            from_run, from_seq, ..
        } => {
            format!("forked from {}@{from_seq}", from_run.short())
        }
        Body::Text { text, .. } => text.clone(),
    }
}

fn cut(text: &str, lines: usize) -> String {
    let mut out: Vec<&str> = text.lines().take(lines).collect();
    if text.lines().count() > lines {
        out.push("…");
    }
    out.join("\n")
}
