//! `retrace audit [--since WHEN] [--who NAME] [--json]`: every human and automatic decision
//! across the store's runs (forks and child runs included), oldest first (by recorded time,
//! then run, then seq), each checked against the hash chain.
//!
//! Verification: each listed run is verified as `retrace verify` does (every event and blob
//! hash, the parent chain, the links to child runs); an automatic allow's evidence must name
//! an event of the named run that is a human's approval. An entry is `verified` only if its
//! run and all its evidence are. The command exits 1 if any listed entry is not.

mod entries;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as Slot;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use entries::{AUTONOMY, Entry, Evidence};
use retrace_events::{Decision, Event, EventId, EventKind, RunId};
use retrace_store::{MAX_RANGE, Store, VerifyOptions, verify_run};
use serde_json::Value;

use crate::store_access;

/// The options of `retrace audit`.
pub struct Options<'a> {
    /// Only decisions recorded at or after this: RFC 3339 (`2026-12-01T09:00:00Z`) or a
    /// duration back from now (`2h`, `7d`).
    pub since: Option<&'a str>,
    /// Only decisions by this name.
    pub who: Option<&'a str>,
    /// A JSON array instead of a table.
    pub json: bool,
}

/// A run's events with their ids, in seq order.
type Log = Vec<(EventId, Event)>;

/// What was read of one run: its decisions, and why its chain does not verify (if not).
struct Read {
    entries: Vec<Entry>,
    problem: Option<String>,
}

pub fn run(dir: &Path, options: &Options<'_>) -> anyhow::Result<ExitCode> {
    let since_ms = options.since.map(since).transpose()?;
    let store = store_access::open_existing(dir)?.store();
    let mut entries = Vec::new();
    let mut problems: BTreeMap<RunId, Option<String>> = BTreeMap::new();
    for info in store.runs()? {
        let read = read_run(store.as_ref(), &info);
        let listed: Vec<Entry> = read
            .entries
            .into_iter()
            .filter(|e| since_ms.is_none_or(|t| e.time_ms >= t))
            .filter(|e| options.who.is_none_or(|w| e.who.as_deref() == Some(w)))
            .collect();
        if !listed.is_empty() {
            problems.insert(info.id, read.problem);
            entries.extend(listed);
        }
    }
    // the runs evidence names, read once each
    let mut logs: BTreeMap<RunId, Log> = BTreeMap::new();
    for entry in &mut entries {
        let run: RunId = entry.run.parse().context("a run id the store listed")?;
        entry.problem = problems
            .get(&run)
            .cloned()
            .flatten()
            .or(entry.problem.take());
        for evidence in &mut entry.evidence {
            evidence.problem = check_evidence(store.as_ref(), evidence, &mut logs);
            evidence.verified = evidence.problem.is_none();
        }
        if entry.problem.is_none()
            && let Some(bad) = entry.evidence.iter().find(|e| !e.verified)
        {
            entry.problem = Some(format!(
                "evidence {}@{}: {}",
                bad.run,
                bad.event,
                bad.problem.as_deref().unwrap_or("does not verify")
            ));
        }
        entry.verified = entry.problem.is_none();
    }
    entries.sort_by(|a, b| (a.time_ms, &a.run, a.seq).cmp(&(b.time_ms, &b.run, b.seq)));
    if options.json {
        println!("{}", serde_json::to_string_pretty(&json_entries(&entries))?);
    } else {
        print_table(&entries, options.since.is_some() || options.who.is_some());
    }
    let failed = entries.iter().filter(|e| !e.verified).count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} decisions do not verify against the hash chain (see \
             `problem`); `retrace verify` names the first bad event of each run",
            entries.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: RFC 3339, or a duration back from now; in ms since the Unix epoch.
fn since(text: &str) -> anyhow::Result<u64> {
    let at = if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        at
    } else {
        let back = humantime::parse_duration(text).with_context(|| {
            format!(
                "--since `{text}`: give an RFC 3339 time (2026-12-01T09:00:00Z) or a \
                 duration back from now (90m, 2h, 7d)"
            )
        })?;
        let now = Duration::from_millis(retrace_runtime::entropy::now().unix_ms());
        SystemTime::UNIX_EPOCH + now.saturating_sub(back)
    };
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The decisions of run `info` (its whole log is read, a fork's shared prefix included, for
/// what its calls are); a log that cannot be read or does not verify is said in `problem`
/// (and what could be read is still listed).
fn read_run(store: &dyn Store, info: &retrace_store::RunInfo) -> Read {
    let mut problem = match verify_run(store, &info.id, VerifyOptions { blobs: true }) {
        Ok(report) => report.problem.map(|p| p.to_string()),
        Err(e) => Some(format!("cannot verify: {e}")),
    };
    if problem.is_none() {
        problem = match retrace_store::tree::verify_links(store, &info.id) {
            Ok(broken) => broken.map(|p| format!("broken link to a child run: {p}")),
            Err(e) => Some(format!("cannot check its links to child runs: {e}")),
        };
    }
    let (events, unreadable) = match log(store, &info.id) {
        Ok(read) => read,
        Err(e) => (Vec::new(), Some(format!("cannot read its log: {e}"))),
    };
    if let Some(unreadable) = unreadable {
        problem.get_or_insert(unreadable);
    }
    let blob = |id: &retrace_events::BlobId| -> Option<Value> {
        let bytes = store.blob(id).ok()??;
        serde_json::from_slice(&bytes).ok()
    };
    let entries = entries::decisions(&info.id.to_string(), info.own_from(), &events, &blob);
    Read { entries, problem }
}

/// Every event of `run` that decodes, in pages, and what did not decode (the first).
fn log(store: &dyn Store, run: &RunId) -> retrace_store::Result<(Log, Option<String>)> {
    let len = store.require_run(run)?.len();
    let (mut out, mut bad) = (Vec::new(), None);
    let mut next = 0;
    while next < len {
        let page = store.stored_events(run, next..=(next + MAX_RANGE - 1).min(len - 1))?;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        for stored in page {
            match retrace_events::decode_event(&stored.bytes) {
                Ok(event) => out.push((stored.id, event)),
                Err(e) => {
                    bad.get_or_insert_with(|| format!("run {run} seq {}: {e}", stored.seq));
                }
            }
        }
        next = last + 1;
    }
    Ok((out, bad))
}

/// Why `evidence` does not verify: the run is unknown, it has no such event, or the event
/// is not a human's approval. `None` when it verifies.
fn check_evidence(
    store: &dyn Store,
    evidence: &Evidence,
    logs: &mut BTreeMap<RunId, Log>,
) -> Option<String> {
    let Ok(run) = evidence.run.parse::<RunId>() else {
        return Some(format!("`{}` is not a run id", evidence.run));
    };
    let Ok(id) = evidence.event.parse::<EventId>() else {
        return Some(format!("`{}` is not an event id", evidence.event));
    };
    let events = match logs.entry(run) {
        Slot::Occupied(known) => known.into_mut(),
        Slot::Vacant(slot) => {
            if !matches!(store.run(&run), Ok(Some(_))) {
                return Some(format!("the store has no run {run}"));
            }
            match log(store, &run) {
                Ok((events, _)) => slot.insert(events),
                Err(e) => return Some(format!("cannot read run {run}: {e}")),
            }
        }
    };
    let event = events.iter().find(|(i, _)| *i == id);
    match event.map(|(_, e)| &e.kind) {
        None => Some(format!("run {run} has no event {id}")),
        Some(EventKind::ApprovalDecided {
            decision: Decision::Approved,
            by,
            ..
        }) if by != AUTONOMY => None,
        Some(EventKind::ApprovalDecided { .. }) => {
            Some(format!("event {id} of run {run} is not a human's approval"))
        }
        Some(other) => Some(format!(
            "event {id} of run {run} is a {}, not an approval",
            other.name()
        )),
    }
}

/// The JSON array `--json` prints: each entry with its time also as RFC 3339.
fn json_entries(entries: &[Entry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut value {
                fields.insert("time".into(), Value::String(rfc3339(e.time_ms)));
            }
            value
        })
        .collect()
}

/// `ms` as RFC 3339 (UTC, milliseconds); times past the year 9999 show as its end.
fn rfc3339(ms: u64) -> String {
    const LAST: u64 = 253_402_300_799_999;
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.min(LAST)))
        .to_string()
}

fn print_table(entries: &[Entry], filtered: bool) {
    if entries.is_empty() {
        println!(
            "{}",
            if filtered {
                "no decisions match"
            } else {
                "no decisions recorded"
            }
        );
        return;
    }
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let mut note = e.note.clone().unwrap_or_default();
            if !e.evidence.is_empty() {
                note = format!("{note} [evidence: {} events]", e.evidence.len());
            }
            if let Some(problem) = &e.problem {
                note = format!("{note} [{problem}]");
            }
            // an escalation reads as what was decided: the run went on, or was stopped
            let what = match (e.what, e.decision.as_deref()) {
                ("escalation", Some(decision)) => format!("escalation {decision}"),
                (what, _) => what.to_owned(),
            };
            [
                rfc3339(e.time_ms),
                e.who.clone().unwrap_or_else(|| "-".into()),
                what,
                e.run[..e.run.len().min(12)].to_owned(),
                e.seq.to_string(),
                e.call_id.clone().unwrap_or_else(|| "-".into()),
                e.tool.clone().unwrap_or_else(|| "-".into()),
                if e.verified { "yes" } else { "NO" }.to_owned(),
                note.trim().to_owned(),
            ]
        })
        .collect();
    let header = [
        "TIME", "WHO", "WHAT", "RUN", "SEQ", "CALL", "TOOL", "OK", "NOTE",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain(std::iter::once(header[c].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == 4 {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else if c + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
            if c + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Refuse `--who` names no decider could have.
pub fn check_who(who: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = who
        && let Err(e) = retrace_serve::auth::check_name(name)
    {
        bail!("--who: {e}");
    }
    Ok(())
}
