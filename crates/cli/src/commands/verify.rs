//! `retrace verify [RUN]`: recompute every hash of a run (or all runs) and report the first
//! mismatch. Exit code 0 only if everything verifies; a run that cannot be read is one
//! `FAIL` line, and the others are still verified.

use std::path::Path;
use std::process::ExitCode;

use retrace_events::RunId;
use retrace_store::{Store, VerifyOptions, verify_run};

use crate::store_access;

pub fn run(dir: &Path, run: Option<&str>, blobs: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)
        .map_err(unopenable)?
        .store();
    let runs = match run {
        Some(prefix) => vec![store.resolve_run(prefix).map_err(in_verify)?],
        None => store
            .runs()
            .map_err(in_verify)?
            .into_iter()
            .map(|r| r.id)
            .collect(),
    };
    let options = VerifyOptions { blobs };
    let mut failed = 0usize;
    for id in &runs {
        // one run the store cannot read does not stop the others' verification
        match verify_one(&store, id, options) {
            Ok(line) => println!("ok   {id}  {line}"),
            Err(line) => {
                failed += 1;
                println!("FAIL {id}  {line}");
            }
        }
    }
    let damaged = report_kept_cuts(dir)?;
    if failed > 0 || damaged > 0 {
        let mut what = Vec::new();
        if failed > 0 {
            what.push(format!(
                "{failed} of {} runs failed verification",
                runs.len()
            ));
        }
        if damaged > 0 {
            what.push(format!(
                "{damaged} damaged segment record(s) were cut by recovery (see \
                 docs/guide/hardening.md, \"When recovery cuts a segment\")"
            ));
        }
        eprintln!("error: {}", what.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    if runs.is_empty() {
        println!("no runs to verify in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Print what recovery cut from the segments of the store in `dir` (a local store only) and
/// kept beside them; how many of those cuts were damage rather than a torn last write
/// ([`retrace_store_sled::segments::judge_cut`]).
fn report_kept_cuts(dir: &Path) -> anyhow::Result<usize> {
    let segments = dir.join(retrace_store_sled::layout::SEGMENTS_DIR);
    if !segments.is_dir() {
        return Ok(0);
    }
    let mut damaged = 0;
    for cut in retrace_store_sled::segments::kept_cuts(&segments)? {
        let (segment, at, bytes, kept) = (cut.segment, cut.at, cut.bytes, cut.path.display());
        match cut.damage {
            Some(damage) => {
                damaged += 1;
                println!(
                    "FAIL store  segment {segment}: the record at offset {at} is damaged: \
                     {damage}; recovery cut the {bytes} bytes from {at} on and kept them in \
                     {kept}: events stored after offset {at} may be missing"
                );
            }
            None => println!(
                "note store  recovery cut a torn last write ({bytes} bytes at offset {at} of \
                 segment {segment}), kept in {kept}"
            ),
        }
    }
    Ok(damaged)
}

/// Verify one run and its links to child runs: what was verified, or what is wrong.
fn verify_one(
    store: &(impl Store + ?Sized),
    id: &RunId,
    options: VerifyOptions,
) -> Result<String, String> {
    let unreadable = |e| format!("could not be read: {}", in_verify(e));
    let report = verify_run(store, id, options).map_err(unreadable)?;
    if let Some(problem) = &report.problem {
        return Err(format!("first mismatch: {problem}"));
    }
    if let Some(problem) = retrace_store::tree::verify_links(store, id).map_err(unreadable)? {
        return Err(format!("broken link to a child run: {problem}"));
    }
    let links = match retrace_store::tree::children(store, id)
        .map_err(unreadable)?
        .len()
    {
        0 => String::new(),
        1 => ", its link to 1 child run".to_owned(),
        n => format!(", its links to {n} child runs"),
    };
    Ok(format!(
        "{} events, {} blobs verified{links}",
        report.events, report.blobs
    ))
}

/// An error met while verifying, without the advice to run `retrace verify` that
/// [`retrace_store::Error::Corrupt`] gives elsewhere.
fn in_verify(e: retrace_store::Error) -> anyhow::Error {
    match e {
        retrace_store::Error::Corrupt { what } => anyhow::anyhow!("store data is corrupt: {what}"),
        e => e.into(),
    }
}

/// A store that does not open because its data is corrupt: said so, without the advice to
/// run `retrace verify`.
fn unopenable(e: anyhow::Error) -> anyhow::Error {
    use retrace_serve::client::AccessError;
    match e.downcast::<AccessError>() {
        Ok(AccessError::Open { dir, source })
            if matches!(*source, retrace_store::Error::Corrupt { .. }) =>
        {
            anyhow::anyhow!(
                "cannot open store {}, so it cannot be verified: {}",
                dir.display(),
                in_verify(*source)
            )
        }
        Ok(other) => other.into(),
        Err(e) => e,
    }
}
