//! `retrace migrate --from STORE --to STORE`: copy a whole store (through the bundle
//! format, so every event and blob is checked on the way), then verify every run on both
//! sides and compare their heads.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use retrace_eval::bundle;
use retrace_store::{Store, VerifyOptions, verify_run};

use crate::store_access;

pub fn run(from: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let source = store_access::open_existing(from)?;
    if source.daemon().is_some() {
        bail!(
            "{} is held by `retrace serve`; stop it first, so that no run moves while it is copied",
            from.display()
        );
    }
    if let retrace_serve::Access::Shared(store) = &source {
        let held =
            retrace_store_postgres::Leases::new(store, "migrate", Duration::from_secs(1)).held()?;
        if let Some((run, worker)) = held.first() {
            bail!(
                "{} runs of {} are being driven ({run} by {worker}, …); stop the workers first, \
                 so that no run moves while it is copied",
                held.len(),
                from.display()
            );
        }
    }
    let source = source.store();
    let target = store_access::open_or_create(to)?;
    if target.daemon().is_some() {
        bail!("{} is held by `retrace serve`; stop it first", to.display());
    }
    let target = target.store();
    let started = Instant::now();
    let copied = bundle::copy(&source, &target)?;
    let copy_time = started.elapsed();
    println!(
        "copied {} runs ({} already there), {} events, {} blobs, {} snapshots in {:.1} s",
        copied.imported.runs.len(),
        copied.imported.skipped.len(),
        copied.imported.events,
        copied.imported.blobs,
        copied.snapshots,
        copy_time.as_secs_f64()
    );

    let mut verified = 0usize;
    let mut failed = Vec::new();
    let runs = source.runs()?;
    for info in &runs {
        let here = verify_run(&source, &info.id, VerifyOptions::default())?;
        let there = verify_run(&target, &info.id, VerifyOptions::default())?;
        let copied_head = target.run(&info.id)?.and_then(|r| r.head);
        match (&here.problem, &there.problem) {
            (None, None) if copied_head == info.head && there.events == here.events => {
                verified += 1;
            }
            (_, Some(problem)) => failed.push(format!("{}: the copy fails: {problem}", info.id)),
            (Some(problem), _) => failed.push(format!("{}: the source fails: {problem}", info.id)),
            _ => failed.push(format!(
                "{}: the copy's head differs from the source's",
                info.id
            )),
        }
    }
    for line in &failed {
        println!("FAIL {line}");
    }
    println!(
        "verified {verified} of {} runs on both sides ({:.1} s in all)",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {} runs differ after the copy", failed.len());
        Ok(ExitCode::FAILURE)
    }
}
