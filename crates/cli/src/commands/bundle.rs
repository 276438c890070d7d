//! `retrace export RUN… [--with-forks] -o FILE` and `retrace import FILE`: runs packed into a
//! verifiable bundle (see `retrace_eval::bundle`) and loaded into another store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use retrace_eval::bundle;
use retrace_store::Store;

use crate::store_access;

pub fn export(
    dir: &Path,
    runs: &[String],
    with_forks: bool,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let ids = runs
        .iter()
        .map(|r| store.resolve_run(r))
        .collect::<Result<Vec<_>, _>>()?;
    // write beside the target and rename, so a failed export leaves no half a bundle
    let partial = file.with_extension("partial");
    let out = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let summary = match bundle::export(&store, &ids, with_forks, std::io::BufWriter::new(out)) {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e).with_context(|| format!("exporting to {}", file.display()));
        }
    };
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot move the bundle to {}", file.display()))?;
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    println!(
        "wrote {}: {} runs, {} events, {} blobs, {} bytes",
        file.display(),
        summary.runs.len(),
        summary.events,
        summary.blobs,
        size
    );
    for run in &summary.runs {
        println!("  {run}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import(dir: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let checked = bundle::read(std::io::BufReader::new(input))
        .with_context(|| format!("refusing {}", file.display()))?;
    let store = store_access::open_or_create(dir)?.store();
    let summary = bundle::import(&store, &checked)
        .with_context(|| format!("importing {}", file.display()))?;
    store.flush()?;
    println!(
        "imported {} runs ({} events) from {}; {} already in the store",
        summary.runs.len(),
        summary.events,
        file.display(),
        summary.skipped.len()
    );
    for run in &summary.runs {
        println!("  {run}");
    }
    Ok(ExitCode::SUCCESS)
}
