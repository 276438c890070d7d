//! `retrace diff A[@SEQ] B[@SEQ] [--json]`: where two runs part, and how the states at two
//! points differ.

use std::path::Path;
use std::process::ExitCode;

use retrace_replay::{ChangeKind, SnapshotPolicy, compare_runs, diff_states, state_at};
use serde_json::json;

use crate::{store_access, target};

pub fn run(dir: &Path, a: &str, b: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let store = store_access::open_existing(dir)?.store();
    let (a, b) = (target::resolve(&store, a)?, target::resolve(&store, b)?);
    let policy = SnapshotPolicy::default();
    let (sa, sb) = (
        state_at(&store, &a.run, a.seq, policy)?.state,
        state_at(&store, &b.run, b.seq, policy)?.state,
    );
    let changes = diff_states(&sa, &sb);
    let comparison = compare_runs(&store, &a.run, &b.run)?;
    if json_out {
        let out = json!({
            "a": {"run": a.run, "seq": a.seq, "state_hash": sa.hash().to_string()},
            "b": {"run": b.run, "seq": b.seq, "state_hash": sb.hash().to_string()},
            "runs": comparison,
            "changes": changes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "a: {}@{}   b: {}@{}",
        a.run.short(),
        a.seq,
        b.run.short(),
        b.seq
    );
    match &comparison.first_divergence {
        Some(d) => println!(
            "runs share {} events; they part at seq {} ({} vs {})",
            comparison.common_prefix,
            d.seq,
            d.a.short(),
            d.b.short()
        ),
        None if a.run == b.run => println!("same run"),
        None => println!(
            "runs share {} events; one is a prefix of the other ({} and {} events)",
            comparison.common_prefix, comparison.a_len, comparison.b_len
        ),
    }
    if changes.is_empty() {
        println!(
            "states are identical (hash {})",
            &sa.hash().to_string()[..12]
        );
    }
    for change in &changes {
        let show =
            |v: &Option<serde_json::Value>| v.as_ref().map(ToString::to_string).unwrap_or_default();
        match change.kind {
            ChangeKind::Added => println!("+ {} = {}", change.path, show(&change.new)),
            ChangeKind::Removed => println!("- {} = {}", change.path, show(&change.old)),
            ChangeKind::Changed => println!(
                "~ {}: {} -> {}",
                change.path,
                show(&change.old),
                show(&change.new)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
