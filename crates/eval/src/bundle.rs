//! Bundles: runs packed into one self-contained, verifiable file, for moving recorded runs
//! between stores (into a repository's eval corpus, onto a CI machine).
//!
//! A bundle is a zstd stream of bincode items: a header, then per run (parents before their
//! forks) its ref, its own events as stored (id and canonical bytes), and at the end every
//! blob the events refer to, directly or from inside other blobs (a request record naming
//! its messages, a tool result naming its full output), each with its id. Nothing in it is
//! trusted on the way in: [`read`] checks every event and blob against its id, every
//! event's chain to its parent and its run's recorded head, every fork's origin, and that
//! every blob referred to is there, and names the first item that fails. [`import`] writes
//! only a bundle that passed all of that, and skips runs the store already holds
//! identically, so importing twice changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use retrace_events::{
    BlobId, Event, EventId, Head, RunId, Timestamp, decode_event, decode_verified,
};
use retrace_store::{ForkOrigin, NewRun, RunInfo, Store};

/// First bytes of every bundle (inside the compression).
const MAGIC: &[u8; 16] = b"retrace-bundle\n\x01";
/// Events per append on import.
const APPEND: usize = 4_096;

/// One item of the stream.
#[derive(Debug, bincode::Encode, bincode::Decode)]
enum Item {
    /// A run: id, creation time, labels, origin (run, seq, event id) and head (seq, id).
    Run {
        id: [u8; 16],
        created_at: u64,
        meta: Vec<(String, String)>,
        origin: Option<([u8; 16], u64, [u8; 32])>,
        head: Option<(u64, [u8; 32])>,
    },
    /// One of the run's own events, as stored.
    Event {
        run: [u8; 16],
        seq: u64,
        id: [u8; 32],
        bytes: Vec<u8>,
    },
    /// A blob.
    Blob { id: [u8; 32], bytes: Vec<u8> },
    /// The end, with counts (a truncated file has none).
    End { runs: u64, events: u64, blobs: u64 },
}

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] retrace_store::Error),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a bundle, or not one this version reads.
    #[error("not a retrace bundle (or one of another version): {0}")]
    NotABundle(String),
    /// An item does not check out; nothing was imported.
    #[error("item {item}: {why}; the bundle is damaged or was tampered with, nothing was imported")]
    Bad {
        /// Its position in the stream (0 = the first after the header).
        item: u64,
        /// What is wrong.
        why: String,
    },
    /// A blob is larger than a bundle item may be ([`MAX_ITEM`]), so [`read`] would refuse
    /// any bundle carrying it: export stops rather than write one that cannot be imported.
    #[error(
        "blob {blob} is {bytes} bytes, over the {} MiB a bundle item may hold, so no bundle \
         can carry it; the export stopped, and its runs cannot be exported as a bundle",
        MAX_ITEM >> 20
    )]
    TooLarge {
        /// The blob.
        blob: BlobId,
        /// Its size in bytes.
        bytes: usize,
    },
    /// The store holds a run of the same id with other events.
    #[error(
        "run {run} is in the store with other events than the bundle's ({why}); nothing was imported"
    )]
    Conflict {
        /// The run.
        run: RunId,
        /// How they differ.
        why: String,
    },
}

/// What a bundle holds, checked.
#[derive(Debug)]
pub struct Bundle {
    runs: Vec<BundledRun>,
    blobs: BTreeMap<BlobId, Vec<u8>>,
}

#[derive(Debug)]
struct BundledRun {
    info: RunInfo,
    events: Vec<Event>,
}

/// What [`export`] wrote or [`import`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Runs written, or imported.
    pub runs: Vec<RunId>,
    /// Runs already in the store, identical (import only).
    pub skipped: Vec<RunId>,
    /// Events written, or imported.
    pub events: u64,
    /// Blobs written, or given to the store.
    pub blobs: u64,
}

impl Bundle {
    /// The runs in it, parents first.
    pub fn runs(&self) -> impl Iterator<Item = &RunInfo> {
        self.runs.iter().map(|r| &r.info)
    }
}

/// The largest item (a blob with its id, a run with its events) a bundle may hold.
pub const MAX_ITEM: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Write `runs` of `store` to `out` as a bundle, with every run they were forked from (a
/// fork's shared prefix lives in its origin), their child runs (`agent.delegate`: a run's
/// tree goes with it) and, if `with_forks`, every fork made of them.
pub fn export(
    store: &(impl Store + ?Sized),
    runs: &[RunId],
    with_forks: bool,
    out: impl Write,
) -> Result<Summary, Error> {
    let all = store.runs()?;
    let chosen = chosen_runs(store, &all, runs, with_forks)?;
    let mut out = zstd::Encoder::new(out, 9)?;
    out.write_all(MAGIC)?;
    let mut summary = Summary::default();
    let mut blobs: BTreeSet<BlobId> = BTreeSet::new();
    for info in parents_first(chosen) {
        put(
            &mut out,
            &Item::Run {
                id: *info.id.as_bytes(),
                created_at: info.created_at.0,
                meta: info
                    .meta
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                origin: info
                    .origin
                    .as_ref()
                    .map(|o| (*o.run.as_bytes(), o.at.seq, *o.at.id.as_bytes())),
                head: info.head.map(|h| (h.seq, *h.id.as_bytes())),
            },
        )?;
        summary.runs.push(info.id);
        summary.events += put_events(store, info, &mut out, &mut blobs)?;
    }
    summary.blobs = put_blobs(store, blobs, &mut out)?;
    put(
        &mut out,
        &Item::End {
            runs: summary.runs.len() as u64,
            events: summary.events,
            blobs: summary.blobs,
        },
    )?;
    out.finish()?.flush()?;
    Ok(summary)
}

/// `runs`, the runs they were forked from, and (`with_forks`) the forks made of them.
fn chosen_runs<'a>(
    store: &(impl Store + ?Sized),
    all: &'a [RunInfo],
    runs: &[RunId],
    with_forks: bool,
) -> Result<Vec<&'a RunInfo>, Error> {
    let by_id: BTreeMap<RunId, &RunInfo> = all.iter().map(|r| (r.id, r)).collect();
    let mut chosen: BTreeSet<RunId> = BTreeSet::new();
    for run in runs {
        let mut at = Some(store.require_run(run)?.id);
        while let Some(id) = at {
            chosen.insert(id);
            at = by_id
                .get(&id)
                .and_then(|r| r.origin.as_ref())
                .map(|o| o.run);
        }
    }
    // the child runs of delegate calls always (a run's tree is the run), and forks if
    // asked; of those too: repeat until nothing new comes in
    loop {
        let more: Vec<RunId> = all
            .iter()
            .filter(|r| !chosen.contains(&r.id))
            .filter(|r| {
                let child = r
                    .meta
                    .get("parent")
                    .and_then(|p| p.parse::<RunId>().ok())
                    .is_some_and(|p| chosen.contains(&p));
                let fork = with_forks && r.origin.as_ref().is_some_and(|o| chosen.contains(&o.run));
                child || fork
            })
            .map(|r| r.id)
            .collect();
        if more.is_empty() {
            break;
        }
        chosen.extend(more);
    }
    Ok(chosen
        .iter()
        .filter_map(|id| by_id.get(id).copied())
        .collect())
}

/// Write the run's own events as stored; the blobs they name go into `blobs`.
fn put_events(
    store: &(impl Store + ?Sized),
    info: &RunInfo,
    out: &mut impl Write,
    blobs: &mut BTreeSet<BlobId>,
) -> Result<u64, Error> {
    let Some(head) = info.head else {
        return Ok(0);
    };
    let mut written = 0;
    let mut from = info.own_from();
    while from <= head.seq {
        let upto = (from + APPEND as u64 - 1).min(head.seq);
        for stored in store.own_events(&info.id, from..=upto)? {
            let event = decode_event(&stored.bytes).map_err(|e| retrace_store::Error::Corrupt {
                what: format!("run {} seq {}: {e}", info.id, stored.seq),
            })?;
            blobs.extend(event.kind.blobs());
            put(
                out,
                &Item::Event {
                    run: *info.id.as_bytes(),
                    seq: stored.seq,
                    id: *stored.id.as_bytes(),
                    bytes: stored.bytes,
                },
            )?;
            written += 1;
        }
        from = upto + 1;
    }
    Ok(written)
}

/// Write `named` and the blobs those name (by id, as hex), transitively.
fn put_blobs(
    store: &(impl Store + ?Sized),
    named: BTreeSet<BlobId>,
    out: &mut impl Write,
) -> Result<u64, Error> {
    let mut todo: Vec<BlobId> = named.into_iter().collect();
    let mut done: BTreeSet<BlobId> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !done.insert(id) {
            continue;
        }
        let bytes = store
            .blob(&id)?
            .ok_or_else(|| retrace_store::Error::Corrupt {
                what: format!("blob {id}, which an exported event refers to, is missing"),
            })?;
        if bytes.len() > MAX_ITEM {
            return Err(Error::TooLarge {
                blob: id,
                bytes: bytes.len(),
            });
        }
        for inner in BlobId::mentioned_in(&bytes) {
            if !done.contains(&inner) && store.blob(&inner)?.is_some() {
                todo.push(inner);
            }
        }
        put(
            out,
            &Item::Blob {
                id: *id.as_bytes(),
                bytes,
            },
        )?;
    }
    Ok(done.len() as u64)
}

/// Runs ordered so that every fork comes after the run it was forked from.
fn parents_first(mut runs: Vec<&RunInfo>) -> Vec<&RunInfo> {
    runs.sort_by_key(|r| (r.created_at, r.id));
    let mut ordered = Vec::with_capacity(runs.len());
    let mut placed = BTreeSet::new();
    while !runs.is_empty() {
        let before = runs.len();
        runs.retain(|r| {
            let ready = r.origin.as_ref().is_none_or(|o| placed.contains(&o.run));
            if ready {
                ordered.push(*r);
                placed.insert(r.id);
            }
            !ready
        });
        if runs.len() == before {
            // an origin outside the set (export always adds them): keep the order given
            ordered.append(&mut runs);
        }
    }
    ordered
}

fn put(out: &mut impl Write, item: &Item) -> Result<(), Error> {
    bincode::encode_into_std_write(item, out, config())
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(())
}

/// Read and check a whole bundle (see the module docs); nothing is written anywhere.
pub fn read(input: impl Read) -> Result<Bundle, Error> {
    let mut input = zstd::Decoder::new(input)
        .map_err(|e| Error::NotABundle(format!("not zstd-compressed: {e}")))?;
    let mut magic = [0u8; 16];
    input
        .read_exact(&mut magic)
        .map_err(|e| Error::NotABundle(e.to_string()))?;
    if &magic != MAGIC {
        return Err(Error::NotABundle(
            "its header is not retrace-bundle v1".into(),
        ));
    }
    let mut reading = Reading::default();
    for item_no in 0u64.. {
        let bad = |why: String| Error::Bad { item: item_no, why };
        // each length an item claims is checked against MAX_ITEM before anything is
        // allocated for it: damaged bytes claiming terabytes are refused (found by fuzzing)
        let item: Item = bincode::decode_from_std_read(
            &mut input,
            bincode::config::standard().with_limit::<MAX_ITEM>(),
        )
        .map_err(|e| {
            bad(format!(
                "does not decode ({e}); the file is cut short or damaged, or holds an item \
                 over {} MiB",
                MAX_ITEM >> 20
            ))
        })?;
        if let Some(bundle) = reading.take(item).map_err(bad)? {
            return Ok(bundle);
        }
    }
    unreachable!("the item loop only ends by returning")
}

/// A bundle being read: what the items so far add up to.
#[derive(Default)]
struct Reading {
    runs: Vec<BundledRun>,
    blobs: BTreeMap<BlobId, Vec<u8>>,
    /// Each run's head as its `Run` item states it.
    heads: Vec<Option<Head>>,
}

impl Reading {
    /// Check and keep one item; the bundle once the end is reached.
    fn take(&mut self, item: Item) -> Result<Option<Bundle>, String> {
        match item {
            Item::Run {
                id,
                created_at,
                meta,
                origin,
                head,
            } => self.run(RunId::from_bytes(id), created_at, meta, origin, head)?,
            Item::Event {
                run,
                seq,
                id,
                bytes,
            } => self.event(RunId::from_bytes(run), seq, EventId::from_bytes(id), &bytes)?,
            Item::Blob { id, bytes } => {
                let id = BlobId::from_bytes(id);
                if BlobId::of(&bytes) != id {
                    return Err(format!(
                        "blob {id}: its bytes hash to {}",
                        BlobId::of(&bytes)
                    ));
                }
                self.blobs.insert(id, bytes);
            }
            Item::End {
                runs,
                events,
                blobs,
            } => return self.end(runs, events, blobs).map(Some),
        }
        Ok(None)
    }

    fn run(
        &mut self,
        id: RunId,
        created_at: u64,
        meta: Vec<(String, String)>,
        origin: Option<([u8; 16], u64, [u8; 32])>,
        head: Option<(u64, [u8; 32])>,
    ) -> Result<(), String> {
        if self.runs.iter().any(|r| r.info.id == id) {
            return Err(format!("run {id} appears twice"));
        }
        let origin = origin.map(|(run, seq, event)| ForkOrigin {
            run: RunId::from_bytes(run),
            at: Head {
                id: EventId::from_bytes(event),
                seq,
            },
        });
        if let Some(o) = &origin {
            check_origin(&self.runs, o).map_err(|why| format!("run {id}: {why}"))?;
        }
        self.heads.push(head.map(|(seq, id)| Head {
            id: EventId::from_bytes(id),
            seq,
        }));
        self.runs.push(BundledRun {
            info: RunInfo {
                id,
                head: origin.as_ref().map(|o| o.at),
                origin,
                created_at: Timestamp(created_at),
                meta: meta.into_iter().collect(),
            },
            events: Vec::new(),
        });
        Ok(())
    }

    fn event(&mut self, run: RunId, seq: u64, id: EventId, bytes: &[u8]) -> Result<(), String> {
        let last = self
            .runs
            .last_mut()
            .filter(|r| r.info.id == run)
            .ok_or_else(|| format!("an event of run {run} outside that run's items"))?;
        let event = decode_verified(&id, bytes).map_err(|e| format!("run {run} seq {seq}: {e}"))?;
        let expected = last.info.head;
        if event.seq != seq
            || event.seq != expected.map_or(0, |h| h.seq + 1)
            || event.parent != expected.map(|h| h.id)
        {
            return Err(format!(
                "run {run} seq {seq}: does not follow the event before it"
            ));
        }
        last.info.head = Some(event.head());
        last.events.push(event);
        Ok(())
    }

    fn end(&mut self, runs: u64, events: u64, blobs: u64) -> Result<Bundle, String> {
        let have_events: u64 = self.runs.iter().map(|r| r.events.len() as u64).sum();
        let have = (self.runs.len() as u64, have_events, self.blobs.len() as u64);
        if (runs, events, blobs) != have {
            return Err("the counts at the end do not match the items".into());
        }
        for (run, head) in self.runs.iter().zip(&self.heads) {
            if run.info.head != *head {
                return Err(format!(
                    "run {}: its events end elsewhere than its recorded head",
                    run.info.id
                ));
            }
        }
        let bundle = Bundle {
            runs: std::mem::take(&mut self.runs),
            blobs: std::mem::take(&mut self.blobs),
        };
        bundle.check_blobs()?;
        Ok(bundle)
    }
}

/// A fork's origin must be an event of a run before it in the bundle.
fn check_origin(runs: &[BundledRun], origin: &ForkOrigin) -> Result<(), String> {
    let parent = runs
        .iter()
        .find(|r| r.info.id == origin.run)
        .ok_or_else(|| {
            format!(
                "forked from run {}, which comes before it nowhere in the bundle",
                origin.run
            )
        })?;
    let at = origin.at.seq;
    let own = parent.info.origin.as_ref().map_or(0, |o| o.at.seq + 1);
    let matches = if at >= own {
        parent
            .events
            .get(usize::try_from(at - own).unwrap_or(usize::MAX))
            .is_some_and(|e| e.id() == origin.at.id)
    } else {
        // inside the parent's own shared prefix: its origin chain holds it
        check_origin(
            runs,
            &ForkOrigin {
                run: parent.info.origin.as_ref().map_or(origin.run, |o| o.run),
                at: origin.at,
            },
        )
        .is_ok()
    };
    if matches {
        Ok(())
    } else {
        Err(format!(
            "forked from run {} at seq {at}, but that run has another event there",
            origin.run
        ))
    }
}

impl Bundle {
    /// Every blob an event names is in the bundle.
    fn check_blobs(&self) -> Result<(), String> {
        for run in &self.runs {
            for event in &run.events {
                if let Some(missing) = event
                    .kind
                    .blobs()
                    .into_iter()
                    .find(|b| !self.blobs.contains_key(b))
                {
                    return Err(format!(
                        "run {} seq {} names blob {missing}, which is not in the bundle",
                        run.info.id, event.seq
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What [`copy`] copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Runs written, events, blobs (as in [`import`]'s summary).
    pub imported: Summary,
    /// Snapshots copied.
    pub snapshots: u64,
}

/// Copy every run of `from`, with the blobs its events name and every snapshot, into `to`
/// (e.g. an embedded store into PostgreSQL). The runs travel as a bundle through a pipe, so
/// they are checked on the way exactly as [`read`] checks a file; runs `to` already holds
/// identically are skipped, so copying again changes nothing. `to` is flushed at the end.
///
/// The checked bundle is held in memory before it is written (as `retrace import` does).
pub fn copy(from: &(impl Store + ?Sized), to: &(impl Store + ?Sized)) -> Result<Copied, Error> {
    let runs: Vec<RunId> = from.runs()?.iter().map(|r| r.id).collect();
    let (reader, writer) = std::io::pipe()?;
    let bundle = std::thread::scope(|s| {
        let exporter = s.spawn(move || export(from, &runs, true, std::io::BufWriter::new(writer)));
        let bundle = read(std::io::BufReader::new(reader));
        match exporter.join() {
            Ok(Ok(_)) => bundle,
            // the reader's error says more when it stopped first (the exporter then only
            // sees a closed pipe)
            Ok(Err(e)) => bundle.and(Err(e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    let imported = import(to, &bundle)?;
    let mut snapshots = 0;
    for at in from.snapshot_ids()? {
        if let Some(bytes) = from.snapshot(&at)? {
            to.put_snapshot(&at, &bytes)?;
            snapshots += 1;
        }
    }
    to.flush()?;
    Ok(Copied {
        imported,
        snapshots,
    })
}

/// Put a checked bundle into `store`: blobs, then runs parents first. A run the store holds
/// with the same head is skipped; one it holds with other events is a conflict, found
/// before anything is written.
pub fn import(store: &(impl Store + ?Sized), bundle: &Bundle) -> Result<Summary, Error> {
    let mut summary = Summary::default();
    for run in &bundle.runs {
        if let Some(held) = store.run(&run.info.id)? {
            if held.head != run.info.head || held.origin != run.info.origin {
                let seq = |h: Option<Head>| h.map_or("none".to_owned(), |h| h.seq.to_string());
                return Err(Error::Conflict {
                    run: run.info.id,
                    why: format!(
                        "the store's head is seq {}, the bundle's seq {}",
                        seq(held.head),
                        seq(run.info.head)
                    ),
                });
            }
            summary.skipped.push(run.info.id);
        }
    }
    for bytes in bundle.blobs.values() {
        store.put_blob(bytes)?;
        summary.blobs += 1;
    }
    for run in bundle
        .runs
        .iter()
        .filter(|r| !summary.skipped.contains(&r.info.id))
    {
        let mut new = match &run.info.origin {
            Some(origin) => NewRun::fork(run.info.id, run.info.created_at, *origin),
            None => NewRun::new(run.info.id, run.info.created_at),
        };
        new.meta.clone_from(&run.info.meta);
        store.create_run(new)?;
        for chunk in run.events.chunks(APPEND) {
            store.append(&run.info.id, chunk[0].parent, chunk)?;
            summary.events += chunk.len() as u64;
        }
        summary.runs.push(run.info.id);
    }
    Ok(summary)
}
