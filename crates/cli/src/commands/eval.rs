//! `retrace eval SUITE`: run an eval suite (see `retrace_eval::suite`) with a live progress
//! bar, print its table, and write the JSON and JUnit reports asked for.
//!
//! Exit status: 0 when every case passes, 2 when a case fails, 1 when the suite cannot run
//! (a bad suite file, a missing recording or bundle).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use retrace_eval::report::{junit, prepare, run_suite, table};
use retrace_eval::suite::Suite;

use crate::store_access;

pub fn run(
    dir: &Path,
    suite_path: &Path,
    jobs: Option<usize>,
    json: Option<&Path>,
    junit_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut suite = Suite::load(suite_path)?;
    if let Some(jobs) = jobs {
        suite.jobs = jobs.max(1);
    }
    let store = store_access::open_or_create(dir)?.store();
    let recordings = prepare(&store, &suite)?;
    // hidden when stderr is not a terminal (CI logs get the table only)
    let bar = ProgressBar::new(suite.cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} cases  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut failed = 0;
    let report = runtime.block_on(run_suite(&store, &suite, &recordings, &mut |case| {
        if !case.passed {
            failed += 1;
        }
        bar.set_message(format!("{failed} failed; last: {}", case.name));
        bar.inc(1);
    }));
    bar.finish_and_clear();
    println!("{}", table(&report));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = junit_path {
        std::fs::write(path, junit(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
