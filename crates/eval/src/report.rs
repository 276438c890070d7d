//! Running a suite and reporting it: cases run concurrently (bounded by the suite's
//! `jobs`), each as a fork of its recording; the results as a terminal table, a JSON
//! report and JUnit XML for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use retrace_events::RunId;
use retrace_store::Store;
use serde::Serialize;

use crate::bundle;
use crate::case::{CaseReport, run_case};
use crate::suite::Suite;

/// How a suite went.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    /// The suite's name.
    pub suite: String,
    /// Its file.
    pub file: PathBuf,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Every case, in file order.
    pub cases: Vec<CaseReport>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl SuiteReport {
    /// Whether every case passed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// Why a suite could not run (a case that fails is a result, not this).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bundle could not be read or imported.
    #[error("{}:{line}: bundle {}: {source}", suite.display(), bundle.display())]
    Bundle {
        /// The suite file.
        suite: PathBuf,
        /// The case's line.
        line: usize,
        /// The bundle.
        bundle: PathBuf,
        /// Why.
        #[source]
        source: Box<bundle::Error>,
    },
    /// A case's recording is not in the store.
    #[error("{}:{line}: case `{case}`: {why}", suite.display())]
    Recording {
        /// The suite file.
        suite: PathBuf,
        /// The case's line.
        line: usize,
        /// The case.
        case: String,
        /// Why.
        why: String,
    },
}

/// Import the suite's bundles and find every case's recording (before any case runs, so a
/// missing recording stops the suite instead of failing cases one by one).
pub fn prepare(store: &dyn Store, suite: &Suite) -> Result<Vec<RunId>, Error> {
    let mut imported: BTreeMap<PathBuf, Vec<RunId>> = BTreeMap::new();
    let mut recordings = Vec::with_capacity(suite.cases.len());
    for case in &suite.cases {
        let from_bundle = match &case.bundle {
            Some(path) => {
                if !imported.contains_key(path) {
                    let runs = import_bundle(store, path).map_err(|source| Error::Bundle {
                        suite: suite.file.clone(),
                        line: case.line,
                        bundle: path.clone(),
                        source: Box::new(source),
                    })?;
                    imported.insert(path.clone(), runs);
                }
                imported[path].first().copied()
            }
            None => None,
        };
        let run = match (&case.run, from_bundle) {
            (Some(prefix), _) => store.resolve_run(prefix).map_err(|e| e.to_string()),
            (None, Some(run)) => Ok(run),
            (None, None) => Err("its bundle holds no runs".to_owned()),
        };
        recordings.push(run.map_err(|why| Error::Recording {
            suite: suite.file.clone(),
            line: case.line,
            case: case.name.clone(),
            why,
        })?);
    }
    Ok(recordings)
}

fn import_bundle(store: &dyn Store, path: &Path) -> Result<Vec<RunId>, bundle::Error> {
    let file = std::fs::File::open(path)?;
    let checked = bundle::read(std::io::BufReader::new(file))?;
    bundle::import(store, &checked)?;
    Ok(checked.runs().map(|r| r.id).collect())
}

/// Run every case of `suite` against its recording (from [`prepare`]), `suite.jobs` at a
/// time; `done` sees each case as it ends.
pub async fn run_suite(
    store: &dyn Store,
    suite: &Suite,
    recordings: &[RunId],
    done: &mut (dyn FnMut(&CaseReport) + Send),
) -> SuiteReport {
    let started = std::time::Instant::now();
    let mut cases: Vec<(usize, CaseReport)> =
        futures::stream::iter(suite.cases.iter().zip(recordings).enumerate())
            .map(|(i, (case, recording))| async move {
                let fork = retrace_runtime::entropy::new_run_id();
                (i, Box::pin(run_case(store, case, *recording, fork)).await)
            })
            .buffer_unordered(suite.jobs)
            .inspect(|(_, report)| done(report))
            .collect()
            .await;
    cases.sort_by_key(|(i, _)| *i);
    let cases: Vec<CaseReport> = cases.into_iter().map(|(_, r)| r).collect();
    let passed = cases.iter().filter(|c| c.passed).count();
    SuiteReport {
        suite: suite.name.clone(),
        file: suite.file.clone(),
        passed,
        failed: cases.len() - passed,
        cases,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The report as JUnit XML: one test suite, a test case per case, failures with their
/// reasons and the fork to inspect.
pub fn junit(report: &SuiteReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(report.suite.as_str());
    for case in &report.cases {
        let status = if case.passed {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(case.failures.join("; "));
            status
        };
        let mut test = TestCase::new(case.name.as_str(), status);
        test.set_classname(report.suite.as_str());
        test.set_time(std::time::Duration::from_millis(case.duration_ms));
        let fork = case
            .fork
            .map_or_else(|| "none".to_owned(), |f| f.to_string());
        test.set_system_out(format!(
            "fork {fork}; first divergence {}; steps {}; tokens {}",
            case.first_divergence
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            case.steps,
            case.tokens
        ));
        suite.add_test_case(test);
    }
    let mut junit = Report::new("retrace eval");
    junit.add_test_suite(suite);
    junit.to_string().unwrap_or_default()
}

/// The report as a terminal table, with each failure spelled out under its case.
pub fn table(report: &SuiteReport) -> String {
    use std::fmt::Write as _;
    let width = report
        .cases
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>9}  {:>5}  {:>8}  {:>10}  {:>8}  FORK\n",
        "CASE", "RESULT", "DIVERGES", "STEPS", "TOKENS", "COST", "Δ TOKENS"
    );
    for case in &report.cases {
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {:>9}  {:>5}  {:>8}  {:>10}  {:>+8}  {}",
            case.name,
            if case.passed { "pass" } else { "FAIL" },
            case.first_divergence
                .map_or_else(|| "-".to_owned(), |s| format!("@{s}")),
            case.steps,
            case.tokens,
            usd(case.cost_micro_usd),
            case.delta.tokens,
            case.fork.map_or_else(|| "-".to_owned(), |f| f.short()),
        );
        for failure in &case.failures {
            let _ = writeln!(out, "{:<width$}    - {failure}", "");
        }
    }
    let _ = write!(
        out,
        "{}: {} passed, {} failed in {:.1} s",
        report.suite,
        report.passed,
        report.failed,
        std::time::Duration::from_millis(report.duration_ms).as_secs_f64()
    );
    out
}

fn usd(micro: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let dollars = micro as f64 / 1e6;
    format!("${dollars:.6}")
}
