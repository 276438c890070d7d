//! # retrace-inspector
//!
//! The egui/eframe time-travel inspector. Panels emit commands; the log changes only by
//! appending events through the store or the runtime.
//!
//! Status: placeholder until the inspector issue (egui/eframe 0.37 are added then, to keep
//! today's build small).
