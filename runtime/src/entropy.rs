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

/// A fresh run id: 122 random bits (UUIDv4). Random leading digits keep short prefixes
/// unambiguous (a time-ordered id would make runs created together share their first ten
/// digits); listings sort by the recorded creation time instead.
pub fn new_run_id() -> RunId {
    RunId::from_bytes(uuid::Uuid::new_v4().into_bytes())
}

/// A fresh secret (an API token): 244 random bits from the OS, as 64 hex digits.
pub fn secret_token() -> String {
    format!(
        "{:032x}{:032x}",
        uuid::Uuid::new_v4().as_u128(),
        uuid::Uuid::new_v4().as_u128()
    )
}

/// A number in [0, 1) for retry jitter (from a fresh UUID's random bits).
pub fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75; // 53 random bits
    #[allow(clippy::cast_precision_loss)]
    let unit = bits as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_fresh_and_differ_early() {
        let ids: Vec<RunId> = (0..64).map(|_| new_run_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        // with random leading bits, 64 ids are told apart by the 12-digit short form
        assert_eq!(
            retrace_events::unique_prefix_len(&ids),
            retrace_events::SHORT_HEX_LEN
        );
        assert!(now().unix_ms() > 1_700_000_000_000);
    }
}
