//! retrace runs as OpenTelemetry traces following the GenAI semantic conventions: one trace
//! per run, an `invoke_agent` root span, a `chat` span per model call, an `execute_tool`
//! span per tool call ([`spans`]), written as an OTLP JSON file or sent to a collector over
//! OTLP/HTTP ([`export`]). Every span names the run and the event it came from, so a trace
//! in any OpenTelemetry backend links back to the log.

pub mod export;
pub mod spans;

pub use export::{SendError, send, to_otlp_json, traces_url};
pub use spans::{Error, Options, Tracer, run_spans};

/// The span type [`Tracer`] and [`run_spans`] give and [`send`] takes.
pub use opentelemetry_sdk::trace::SpanData;
