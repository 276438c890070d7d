//! # retrace-replay
//!
//! The pure replay core: `apply`, `fold`, state at any event, snapshots, state diff and
//! fork planning. It derives everything from the log read through the `Store` trait and does
//! no IO of its own, reads no clock and pulls in no async runtime (CI checks its dependency
//! tree).
//!
//! Status: the crate exists so the layer rule is enforced from day one; the state machine
//! arrives with the replay-core issue.
