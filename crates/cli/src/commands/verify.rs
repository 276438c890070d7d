//! `retrace verify [RUN]`: recompute every hash of a run (or all runs) and report the first
//! mismatch. Exit code 0 only if everything verifies.

use std::path::Path;
use std::process::ExitCode;

use retrace_store::{Store, VerifyOptions, verify_run};

use crate::store_access;

pub fn run(dir: &Path, run: Option<&str>, blobs: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let runs = match run {
        Some(prefix) => vec![store.resolve_run(prefix)?],
        None => store.runs()?.into_iter().map(|r| r.id).collect(),
    };
    let options = VerifyOptions { blobs };
    let mut failed = 0usize;
    for id in &runs {
        let report = verify_run(&store, id, options)?;
        let links = match &report.problem {
            None => retrace_store::tree::verify_links(&store, id)?,
            Some(_) => None,
        };
        if let Some(problem) = links {
            failed += 1;
            println!("FAIL {id}  broken link to a child run: {problem}");
            continue;
        }
        let linked = match &report.problem {
            None => retrace_store::tree::children(&store, id)?.len(),
            Some(_) => 0,
        };
        let links = match linked {
            0 => String::new(),
            1 => ", its link to 1 child run".to_owned(),
            n => format!(", its links to {n} child runs"),
        };
        match &report.problem {
            None => println!(
                "ok   {}  {} events, {} blobs verified{links}",
                id, report.events, report.blobs
            ),
            Some(problem) => {
                failed += 1;
                println!("FAIL {id}  first mismatch: {problem}");
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} runs failed verification", runs.len());
        return Ok(ExitCode::FAILURE);
    }
    if runs.is_empty() {
        println!("no runs to verify in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
