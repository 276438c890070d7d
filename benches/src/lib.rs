//! Helpers for the bench binaries: latency samples and environment knobs.

use std::time::Duration;

use retrace_events::{RunId, Timestamp};
use retrace_store::{NewRun, Store};

/// Latency samples with percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Record one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Absorb another set.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0.0..=1.0) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i].as_secs_f64() * 1e3
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Median in milliseconds.
    pub fn median_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    /// 99th percentile in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }
}

/// A numeric environment variable, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where benchmarks put their stores: `RETRACE_BENCH_DIR`, else a temp dir in the current
/// directory (the disk the project lives on, not a tmpfs).
pub fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("RETRACE_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from("."), Into::into);
    tempfile::Builder::new()
        .prefix("retrace-bench-")
        .tempdir_in(base)
        .expect("bench dir")
}

/// Bytes of every file under `dir` (a closed store's size on disk).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    dir_size(&path)
                } else {
                    e.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

/// Create `run` in `store` with `len` valid events (the replay test kit's random walk), in
/// appends of 10,000.
pub fn write_run(store: &dyn Store, run: RunId, len: u64) {
    store
        .create_run(NewRun::new(run, Timestamp(0)))
        .expect("create");
    let events = retrace_replay::testkit::valid_run(7, run, len, false);
    let mut head = None;
    for batch in events.chunks(10_000) {
        head = Some(
            store
                .append(&run, head.map(|h: retrace_events::Head| h.id), batch)
                .expect("append"),
        );
    }
}
