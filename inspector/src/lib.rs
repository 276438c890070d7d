//! # retrace-inspector
//!
//! The egui/eframe time-travel inspector: a runs panel (forks and child runs under their
//! parent), a timeline with a scrubber and keyboard travel, and the event at the cursor with
//! its payloads and the state after it (status, the agent's plan, the conversation). A run
//! parked on approvals or on a `user.ask` question can be decided or answered from there; a
//! delegating call opens its child run, and a child run leads back to that call.
//!
//! - [`source`]: a background thread owns the store and answers requests; the UI thread
//!   never reads the store, so frames stay fluid on runs of any length (only visible rows
//!   are drawn, and only their pages loaded).
//! - [`command`]: panels emit commands while drawing; [`Inspector::ui`] applies them after
//!   the frame. The log changes only through the source's writes (fork, decide, answer),
//!   which call the same `retrace_replay` functions as the CLI.
//!
//! [`Inspector::ui`] draws one frame into any [`egui::Ui`]: [`run`] opens it in a native
//! window, tests drive it through `egui_kittest`.

pub mod app;
pub mod cards;
pub mod command;
pub mod compare;
mod panels;
pub mod search;
pub mod source;
mod step_view;
pub mod steps;
mod time_view;
mod versus_view;

use std::sync::Arc;

pub use app::{Inspector, Settings, Target, View};
pub use command::Command;
use retrace_store::Store;
pub use source::Host;

/// Open the inspector in a native window over `store` (titled with `label`, e.g. the
/// store's path) until the window is closed; `host` forks, decides and resumes runs.
pub fn run(
    store: Arc<dyn Store>,
    host: Arc<dyn Host>,
    label: &str,
    target: Target,
) -> Result<(), eframe::Error> {
    let label = label.to_owned();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(format!("retrace inspector — {label}"))
            .with_inner_size([1360.0, 820.0]),
        ..Default::default()
    };
    eframe::run_native(
        "retrace-inspector",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let mut inspector = Inspector::new(store, host, target, move || {
                ctx.request_repaint();
            });
            if let Some(settings) = cc
                .storage
                .and_then(|s| eframe::get_value::<Settings>(s, SETTINGS_KEY))
            {
                inspector.restore(&settings, &label);
            }
            Ok(Box::new(Window { inspector, label }))
        }),
    )
}

const SETTINGS_KEY: &str = "retrace-inspector";

/// The inspector in an eframe window, remembering its settings.
struct Window {
    inspector: Inspector,
    label: String,
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.inspector.ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, SETTINGS_KEY, &self.inspector.settings(&self.label));
    }
}
