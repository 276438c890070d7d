//! Timeline queries for the inspector and the CLI: counts per kind over a range, and a
//! run's lineage. (Events in a seq range come straight from `Store::events`, paged.)

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use retrace_events::{EventKind, RunId};
use retrace_store::{MAX_RANGE, Store};
use serde::Serialize;

use crate::fold::Error;

/// How many events of each kind fall in `seqs` of `run` (every kind listed, zeros included).
pub fn kind_counts(
    store: &(impl Store + ?Sized),
    run: &RunId,
    seqs: RangeInclusive<u64>,
) -> Result<BTreeMap<&'static str, u64>, Error> {
    let mut counts: BTreeMap<&'static str, u64> =
        EventKind::NAMES.iter().map(|n| (*n, 0)).collect();
    let end = (*seqs.end()).min(store.require_run(run)?.len().saturating_sub(1));
    let mut next = *seqs.start();
    while next <= end {
        let page = store.events(run, next..=end.min(next + MAX_RANGE - 1))?;
        let Some(last) = page.last().map(|(_, e)| e.seq) else {
            break;
        };
        for (_, event) in &page {
            *counts.entry(event.kind.name()).or_default() += 1;
        }
        next = last + 1;
    }
    Ok(counts)
}

/// Where a run comes from and what came from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lineage {
    /// Ancestors, nearest first: each run forked from and the last seq shared with it.
    pub ancestors: Vec<(RunId, u64)>,
    /// Runs forked directly from this one, with the seq each shares up to.
    pub forks: Vec<(RunId, u64)>,
}

/// The lineage of `run`.
pub fn lineage(store: &(impl Store + ?Sized), run: &RunId) -> Result<Lineage, Error> {
    let mut ancestors = Vec::new();
    let mut current = store.require_run(run)?;
    while let Some(origin) = current.origin {
        ancestors.push((origin.run, origin.at.seq));
        current = store.require_run(&origin.run)?;
    }
    let forks = store
        .forks_of(run)?
        .into_values()
        .filter_map(|r| r.origin.map(|o| (r.id, o.at.seq)))
        .collect();
    Ok(Lineage { ancestors, forks })
}
