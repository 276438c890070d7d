//! Determinism-test child: folds a run of a store and prints `seq state-hash` after every
//! event. Two processes must print the same lines.

use std::fmt::Write;

use anyhow::Context;
use retrace_replay::fold_stored;
use retrace_store::Store;
use retrace_store_sled::SledStore;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: fold_hashes STORE_DIR RUN")?;
    let run = args.next().context("usage: fold_hashes STORE_DIR RUN")?;
    let store = SledStore::open(&dir)?;
    let run = store.resolve_run(&run)?;
    let head = store.require_run(&run)?.head.context("empty run")?;
    let mut state = retrace_replay::State::default();
    let mut out = String::new();
    fold_stored(&store, &run, &mut state, head.seq, |state, _| {
        let _ = writeln!(out, "{} {}", state.seq.unwrap_or(0), state.hash());
        Ok(())
    })?;
    print!("{out}");
    Ok(())
}
