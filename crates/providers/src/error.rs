//! `providers::Error`: every failure says whether retrying may help. Messages never contain
//! credentials.

use std::time::Duration;

/// A failed model call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Retrying may help: rate limits, server errors, dropped connections, timeouts.
    #[error("{provider}: {message} (transient; retrying may help)")]
    Transient {
        /// Which provider.
        provider: String,
        /// What happened.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help: bad request, bad credentials, unknown model, malformed reply.
    #[error("{provider}: {message}")]
    Permanent {
        /// Which provider.
        provider: String,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}
