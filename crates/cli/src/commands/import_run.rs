//! `retrace import-run FORMAT FILE… [--name N] [--json]`: another agent's recording as a
//! retrace run ([`retrace_import`]). Everything is read and checked before anything is
//! written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use retrace_import::{Format, Source};
use serde_json::json;

use crate::store_access;

pub fn run(
    dir: &Path,
    format: &str,
    files: &[PathBuf],
    name: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let sources = files
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Source {
                name: path.display().to_string(),
                bytes,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let format = match format {
        "auto" => retrace_import::detect(&sources[0])?,
        other => other.parse::<Format>().map_err(anyhow::Error::msg)?,
    };
    let transcript = retrace_import::parse(format, &sources)?;
    let counts = transcript.counts();
    let store = store_access::open_or_create(dir)?.store();
    let imported = retrace_import::write(
        store.as_ref(),
        &transcript,
        &sources,
        name,
        retrace_runtime::entropy::now(),
    )?;
    let report = &imported.report;
    if json {
        let out = json!({
            "run": imported.run.to_hex(),
            "created": imported.created,
            "format": format.name(),
            "events": imported.events,
            "counts": counts,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_report(format, &imported, &counts, files);
    Ok(ExitCode::SUCCESS)
}

/// The report, for a person.
#[allow(clippy::cast_precision_loss)] // millionths of a dollar: far below 2^52
fn print_report(
    format: Format,
    imported: &retrace_import::Imported,
    counts: &retrace_import::Counts,
    files: &[PathBuf],
) {
    let report = &imported.report;
    let what = if imported.created {
        "imported"
    } else {
        "already imported"
    };
    println!(
        "{what} {} as run {}: {} events",
        format.name(),
        imported.run,
        imported.events
    );
    println!(
        "  read         {} lines, {} bytes, from {}",
        report.lines,
        report.bytes,
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cost = if counts.cost_micro_usd > 0 {
        format!(", cost ${:.6}", counts.cost_micro_usd as f64 / 1e6)
    } else {
        String::new()
    };
    println!(
        "  model calls  {} (failed {}), tokens {} in / {} out{cost}",
        counts.model_calls, counts.model_errors, counts.input_tokens, counts.output_tokens
    );
    println!(
        "  tool calls   {}, errors {} (rejected by the user {}), without a result {}",
        counts.tool_calls, counts.tool_errors, counts.rejected, report.unanswered_calls
    );
    println!(
        "  also         user messages {}, compactions {}",
        counts.user_messages, counts.compactions
    );
    if !report.kept.is_empty() {
        let kept: Vec<String> = report
            .kept
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  kept as extras (no event kind): {}", kept.join(", "));
    }
    if report.skipped.is_empty() {
        println!("  skipped      nothing");
    } else {
        let skipped: Vec<String> = report
            .skipped
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  skipped      {}", skipped.join(", "));
    }
    if report.orphan_results > 0 {
        println!(
            "  {} results answered no call of the reply before them (kept as extras)",
            report.orphan_results
        );
    }
}
