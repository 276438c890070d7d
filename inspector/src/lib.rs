//! # retrace-inspector
//!
//! The egui/eframe time-travel inspector: a runs panel (forks under their parent), a
//! timeline with a scrubber and keyboard travel, and the event at the cursor with its
//! payloads and the state after it.
//!
//! - [`source`]: a background thread owns the store and answers requests; the UI thread
//!   never reads the store, so frames stay fluid on runs of any length (only visible rows
//!   are drawn, and only their pages loaded).
//! - [`command`]: panels emit commands while drawing; [`Inspector::ui`] applies them after
//!   the frame. Nothing here changes the log.
//!
//! [`Inspector::ui`] draws one frame into any [`egui::Ui`]: [`run`] opens it in a native
//! window, tests drive it through `egui_kittest`.

pub mod app;
pub mod command;
mod panels;
pub mod source;

use std::sync::Arc;

pub use app::{Inspector, Target};
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
            Ok(Box::new(Inspector::new(store, host, target, move || {
                ctx.request_repaint();
            })))
        }),
    )
}
