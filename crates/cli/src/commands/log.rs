//! `retrace log RUN [--from N] [--to N] [--json]`: the events of a run, one per line.

use std::path::Path;
use std::process::ExitCode;

use retrace_store::{MAX_RANGE, Store};

use crate::{output, store_access, target};

pub fn run(
    dir: &Path,
    run: &str,
    from: Option<u64>,
    to: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let head = target::resolve(&store, run)?;
    let (from, to) = (from.unwrap_or(0), to.unwrap_or(head.seq).min(head.seq));
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    let mut next = from;
    while next <= to {
        let page = store.events(&head.run, next..=to.min(next + MAX_RANGE - 1))?;
        let Some(last) = page.last().map(|(_, e)| e.seq) else {
            break;
        };
        for (id, event) in &page {
            if json {
                let mut line = serde_json::to_value(event)?;
                line["id"] = serde_json::json!(id);
                println!("{line}");
            } else {
                println!(
                    "{:>6}  {}  {:<20}  {}",
                    event.seq,
                    output::time(event.at),
                    event.kind.name(),
                    output::summary(event)
                );
            }
        }
        next = last + 1;
    }
    Ok(ExitCode::SUCCESS)
}
