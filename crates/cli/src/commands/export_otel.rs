//! `retrace export-otel RUN… (-o FILE | --endpoint URL) [--no-content]`: runs as
//! OpenTelemetry GenAI traces ([`retrace_otel`]).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use retrace_otel::Options;

use crate::store_access;

pub fn run(
    dir: &Path,
    runs: &[String],
    output: Option<&Path>,
    endpoint: Option<&str>,
    content: bool,
) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let mut spans = Vec::new();
    for prefix in runs {
        let run = store.resolve_run(prefix)?;
        spans.extend(retrace_otel::run_spans(
            store.as_ref(),
            &run,
            Options { content },
        )?);
    }
    let count = spans.len();
    if let Some(endpoint) = endpoint {
        let client = retrace_providers::http::client_builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(retrace_otel::send(client, endpoint, spans))?;
        eprintln!(
            "sent {count} spans of {} runs to {}",
            runs.len(),
            retrace_otel::traces_url(endpoint)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let body = serde_json::to_string(&retrace_otel::to_otlp_json(spans))?;
    match output {
        Some(path) if path != Path::new("-") => {
            std::fs::write(path, body + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {count} spans of {} runs to {}",
                runs.len(),
                path.display()
            );
        }
        _ => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{body}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
