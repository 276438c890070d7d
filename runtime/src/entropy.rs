//! The wall clock and fresh identifiers: the only non-deterministic inputs retrace has. Their
//! values enter the log as event data (`Event::at`, `RunStarted::run`) and are never re-read
//! on replay.

use std::time::{SystemTime, UNIX_EPOCH};

use retrace_events::{RunId, Timestamp};

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

/// A fresh run id: a UUIDv7, so ids sort roughly by creation time and never collide.
pub fn new_run_id() -> RunId {
    RunId::from_bytes(uuid::Uuid::now_v7().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_fresh_and_time_ordered() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_run_id();
        assert_ne!(a, b);
        assert!(a < b, "UUIDv7 ids sort by creation time");
        assert!(now().unix_ms() > 1_700_000_000_000);
    }
}
