//! Time and cost: where the run's time went and what it cost.
//!
//! - **Cumulative tokens and cost** over the run's time (`egui_plot`), as staircases from the
//!   step index's usage curve (kept by the background thread; at most [`CURVE_POINTS`] of
//!   its points drawn), with the cursor's time as a vertical line; a click goes to the
//!   model call nearest that time.
//! - **The waterfall**: one row per step (the step view's filter applies), its bar on one
//!   time axis from the run's first event to its newest; approvals are drawn as hollow gaps
//!   labelled with how long the run waited. Rows are a virtual list, so only the rows on
//!   screen are laid out, whatever the run's length. A click on a bar moves the cursor to
//!   that step.

use egui::Sense;
use egui_plot::{Line, Plot, PlotPoints, VLine};

use crate::app::Inspector;
use crate::cards::duration;
use crate::command::Command;
use crate::panels::colour;
use crate::source::Class;
use crate::steps::{StepIndex, StepKind};

/// Points of each usage curve drawn at most.
pub const CURVE_POINTS: usize = 1_000;
/// Width of the waterfall's label column.
const LABELS: f32 = 240.0;
/// Height of a waterfall row.
const ROW: f32 = 18.0;
/// Room kept right of the time axis's end.
const RIGHT: f32 = 56.0;
/// Narrowest bar drawn.
const MIN_BAR: f32 = 3.0;

/// The time view.
pub fn show(app: &mut Inspector, ui: &mut egui::Ui) {
    if app.selected.is_none() {
        ui.centered_and_justified(|ui| ui.label("Select a run on the left."));
        return;
    }
    if app.index.is_none() {
        ui.label("reading the run's steps...");
        return;
    }
    let shown = app.shown();
    // drawn from the index while commands are queued on the app: lent out for the frame
    let Some(index) = app.index.take() else {
        return;
    };
    usage_plots(app, ui, &index);
    ui.separator();
    app.index = Some(index);
    crate::step_view::filter_bar(app, ui);
    let Some(index) = app.index.take() else {
        return;
    };
    waterfall(app, ui, &index, &shown);
    app.index = Some(index);
}

/// Milliseconds since the run's first event as seconds on a plot's axis.
#[allow(clippy::cast_precision_loss)] // runs far shorter than 2^52 ms
fn seconds(index: &StepIndex, ms: u64) -> f64 {
    ms.saturating_sub(index.first_ms) as f64 / 1000.0
}

/// Cumulative tokens and cost over time, side by side.
fn usage_plots(app: &mut Inspector, ui: &mut egui::Ui, index: &StepIndex) {
    let curve = index.usage_curve(CURVE_POINTS);
    let cursor_ms = index.step_at(app.cursor).map(|i| index.steps[i].start_ms);
    if curve.is_empty() {
        ui.weak("no model call has been billed yet");
        return;
    }
    let last = curve.last().copied().unwrap_or(curve[0]);
    ui.label(format!(
        "{} tokens · {} over {} (model calls billed: {})",
        last.tokens,
        retrace_replay::describe::usd(last.cost_micro_usd),
        duration(index.last_ms.saturating_sub(index.first_ms)),
        index.usage.len()
    ));
    let height = 150.0;
    let width = (ui.available_width() - 8.0) / 2.0;
    // steps, not slopes: usage changes only when a call is billed, and stays flat while
    // the run waits; from the run's start to its newest event
    #[allow(clippy::cast_precision_loss)] // token counts and micro-dollars below 2^52
    let series = [
        (
            "cumulative tokens",
            stairs(index, &curve, |p| p.tokens as f64),
            colour(Class::Model),
        ),
        (
            "cumulative cost (USD)",
            stairs(index, &curve, |p| p.cost_micro_usd as f64 / 1e6),
            colour(Class::Approval),
        ),
    ];
    ui.horizontal(|ui| {
        for (name, points, c) in series {
            // headroom above the total, so that a round value above it labels the axis
            let top = points.last().map_or(0.0, |p| p[1]) * 1.2;
            let clicked = Plot::new(name)
                .width(width)
                .height(height)
                .include_y(0.0)
                .include_y(top)
                .allow_scroll(false)
                .allow_zoom(false)
                .allow_drag(false)
                .allow_boxed_zoom(false)
                .allow_double_click_reset(false)
                .x_axis_label("seconds since the run began")
                .y_axis_label(name)
                // a run's cost is often a fraction of a cent: as many decimals as it takes
                .y_axis_formatter(|mark, _| amount(mark.value))
                .y_axis_min_width(52.0)
                .show(ui, |plot| {
                    plot.line(
                        Line::new(name, PlotPoints::from(points))
                            .color(c)
                            .allow_band(false),
                    );
                    if let Some(ms) = cursor_ms {
                        plot.vline(VLine::new("cursor", seconds(index, ms)));
                    }
                    plot.response()
                        .clicked()
                        .then(|| plot.pointer_coordinate())
                        .flatten()
                })
                .inner;
            if let Some(at) = clicked {
                // the billed call nearest the time clicked
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let ms = index.first_ms + (at.x.max(0.0) * 1000.0) as u64;
                let k = index.usage.partition_point(|p| p.at_ms < ms);
                let nearest = [k.saturating_sub(1), k.min(index.usage.len() - 1)]
                    .into_iter()
                    .min_by_key(|&k| index.usage[k].at_ms.abs_diff(ms));
                if let Some(k) = nearest {
                    let seq = index.usage[k].seq;
                    let step = index.step_at(seq).map_or(seq, |i| index.steps[i].seq);
                    app.command(Command::MoveTo(step));
                }
            }
        }
    });
}

/// An axis value with as many decimals as its size needs (`0.000933`, `12.5`, `3400`).
fn amount(value: f64) -> String {
    let size = value.abs();
    let decimals = if size == 0.0 || size >= 100.0 {
        0
    } else if size >= 1.0 {
        2
    } else {
        // two significant digits
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let digits = (-size.log10()).ceil() as usize + 1;
        digits.min(8)
    };
    format!("{value:.decimals$}")
}

/// A cumulative curve as a staircase: flat from the run's start, a riser at each billed
/// call, flat to the run's newest event.
fn stairs(
    index: &StepIndex,
    curve: &[crate::steps::UsagePoint],
    y: impl Fn(&crate::steps::UsagePoint) -> f64,
) -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(curve.len() * 2 + 2);
    let mut level = 0.0;
    out.push([0.0, level]);
    for p in curve {
        let x = seconds(index, p.at_ms);
        out.push([x, level]);
        level = y(p);
        out.push([x, level]);
    }
    out.push([seconds(index, index.last_ms), level]);
    out
}

/// The waterfall: an axis, then one row per step shown.
fn waterfall(app: &mut Inspector, ui: &mut egui::Ui, index: &StepIndex, shown: &[usize]) {
    let span = index.last_ms.saturating_sub(index.first_ms).max(1);
    // room at the right for a bar that starts at the run's last moment and for the
    // label of a wait
    let bars = ui.available_width() - LABELS - 24.0 - RIGHT;
    axis(ui, span, bars);
    let at_cursor = index.step_at(app.cursor);
    // no rubber band: the offset set below may pass the end, and the rows must not slide
    ui.spacing_mut().scroll.kinetic.rubber_band = false;
    let mut area = egui::ScrollArea::vertical()
        .id_salt("waterfall")
        .auto_shrink([false, false]);
    if std::mem::take(&mut app.scroll_to_cursor)
        && let Some(step) = at_cursor
    {
        let k = shown.partition_point(|&i| i < step);
        #[allow(clippy::cast_precision_loss)] // rows of runs far below 2^24 steps
        let top = k as f32 * (ROW + ui.spacing().item_spacing.y);
        area = area.vertical_scroll_offset((top - ui.available_height() / 2.0).max(0.0));
    }
    area.show_rows(ui, ROW, shown.len(), |ui, range| {
        for &i in &shown[range] {
            bar_row(app, ui, index, i, (span, bars), at_cursor);
        }
    });
}

/// One step's row of the waterfall: its label, and its bar on the time axis (`span` ms
/// over `bars` points), highlighted when it holds the cursor.
fn bar_row(
    app: &mut Inspector,
    ui: &mut egui::Ui,
    index: &StepIndex,
    i: usize,
    (span, bars): (u64, f32),
    at_cursor: Option<usize>,
) {
    let step = index.steps[i];
    let (row, _) = ui.allocate_exact_size(egui::vec2(LABELS + bars + RIGHT, ROW), Sense::hover());
    let painter = ui.painter_at(row);
    let selected = Some(i) == at_cursor;
    if selected {
        painter.rect_filled(row, 0.0, ui.visuals().selection.bg_fill);
    }
    let class = if step.error {
        Class::Error
    } else {
        step.kind.class()
    };
    let name = index.name_of(&step).unwrap_or_default();
    let label = format!("#{} {} {name}", step.seq, step.kind.label());
    painter.text(
        row.left_center() + egui::vec2(4.0, 0.0),
        egui::Align2::LEFT_CENTER,
        &label,
        egui::FontId::monospace(11.0),
        colour(class),
    );
    #[allow(clippy::cast_precision_loss)]
    let x = |ms: u64| {
        row.left() + LABELS + bars * (ms.saturating_sub(index.first_ms)) as f32 / span as f32
    };
    let open = step.end.is_none();
    let end_ms = if open { index.last_ms } else { step.end_ms };
    // an open wait (nobody decided yet) runs off the axis's end: it goes on
    let x1 = if open && step.kind != StepKind::Model && step.kind != StepKind::Tool {
        row.right()
    } else {
        x(end_ms)
    };
    let (x0, x1) = (x(step.start_ms), x1.max(x(step.start_ms) + MIN_BAR));
    let bar = egui::Rect::from_min_max(
        egui::pos2(x0, row.top() + 3.0),
        egui::pos2(x1, row.bottom() - 3.0),
    );
    let waited = end_ms.saturating_sub(step.start_ms);
    if step.kind == StepKind::Approval {
        // a wait for a human: a hollow gap with its length, inside it if it fits
        painter.rect_stroke(
            bar,
            1.0,
            egui::Stroke::new(1.0, colour(Class::Approval)),
            egui::StrokeKind::Inside,
        );
        let text = if open {
            format!(
                "waiting since +{}",
                duration(step.start_ms.saturating_sub(index.first_ms))
            )
        } else {
            format!("waited {}", duration(waited))
        };
        let (at, align) = if bar.width() > 120.0 {
            (bar.center(), egui::Align2::CENTER_CENTER)
        } else {
            (
                egui::pos2(x1 + 4.0, row.center().y),
                egui::Align2::LEFT_CENTER,
            )
        };
        painter.text(
            at,
            align,
            text,
            egui::FontId::proportional(11.0),
            colour(Class::Approval),
        );
    } else {
        let fill = if open {
            colour(class).gamma_multiply(0.5)
        } else {
            colour(class)
        };
        painter.rect_filled(bar, 1.0, fill);
    }
    // the bar is a widget of its own: clickable, and named for screen readers
    let hit = bar.expand2(egui::vec2(2.0, 2.0));
    let response = ui.interact(hit, ui.scope_id().with(("bar", i)), Sense::click());
    let name = format!("bar #{} {}", step.seq, step.kind.label());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name.clone()));
    let response = response.on_hover_text(format!(
        "{label}: {}{}",
        duration(waited),
        if open { " so far" } else { "" }
    ));
    if response.clicked() {
        app.command(Command::MoveTo(step.seq));
    }
}

/// The time axis above the waterfall: ticks at round durations.
fn axis(ui: &mut egui::Ui, span: u64, bars: f32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(LABELS + bars + RIGHT, 16.0), Sense::hover());
    let painter = ui.painter_at(rect);
    // a label needs about 70 px
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let step = tick(span, ((bars / 70.0) as u64).max(3));
    let mut t = 0;
    while t <= span {
        #[allow(clippy::cast_precision_loss)]
        let x = rect.left() + LABELS + bars * t as f32 / span as f32;
        painter.vline(
            x,
            egui::Rangef::new(rect.bottom() - 4.0, rect.bottom()),
            (1.0, ui.visuals().weak_text_color()),
        );
        painter.text(
            egui::pos2(x + 2.0, rect.top()),
            egui::Align2::LEFT_TOP,
            format!("+{}", duration(t)),
            egui::FontId::proportional(10.0),
            ui.visuals().weak_text_color(),
        );
        t += step;
    }
    painter.text(
        rect.left_top(),
        egui::Align2::LEFT_TOP,
        "step",
        egui::FontId::proportional(10.0),
        ui.visuals().weak_text_color(),
    );
}

/// A round tick interval giving at most `most` ticks over `span` ms.
fn tick(span: u64, most: u64) -> u64 {
    const ROUND: [u64; 16] = [
        1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 3_600_000,
        21_600_000, 86_400_000,
    ];
    ROUND
        .into_iter()
        .find(|&r| span / r < most)
        .unwrap_or((span / most / 86_400_000 + 1) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn axis_values_keep_their_significant_digits() {
        assert_eq!(super::amount(0.0), "0");
        assert_eq!(super::amount(0.000_933), "0.00093");
        assert_eq!(super::amount(0.0006), "0.00060");
        assert_eq!(super::amount(12.5), "12.50");
        assert_eq!(super::amount(3400.0), "3400");
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick(40, 8), 10);
        assert_eq!(tick(7_000, 8), 1_000);
        assert_eq!(tick(3_600_000, 8), 600_000);
        assert_eq!(tick(98_000, 6), 30_000);
        assert!(30 * 86_400_000 / tick(30 * 86_400_000, 8) < 8);
    }
}
