//! The model client a spec asks for, and how long to wait before asking again after a
//! transient failure.

use std::time::Duration;

use retrace_providers::{HttpSettings, OpenAi, Provider, Scripted};

use crate::spec::{self, Spec};

/// Why no model client could be set up for a spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec's model settings do not work.
    #[error("[model] of agent `{agent}`: {message}")]
    Settings {
        /// The agent.
        agent: String,
        /// What is wrong.
        message: String,
    },
}

/// OpenAI's public API.
pub const OPENAI_URL: &str = "https://api.openai.com/v1";

/// The model client `spec` declares. HTTP providers read their key from the environment
/// variable the spec names, now.
pub fn provider(spec: &Spec) -> Result<Box<dyn Provider>, Error> {
    let fail = |message: String| Error::Settings {
        agent: spec.name.clone(),
        message,
    };
    let model = &spec.model;
    match model.provider {
        spec::Provider::Scripted => {
            let cassette = model
                .cassette
                .as_deref()
                .ok_or_else(|| fail("the scripted provider needs a cassette".into()))?;
            Ok(Box::new(
                Scripted::load(cassette).map_err(|e| fail(e.to_string()))?,
            ))
        }
        spec::Provider::Openai => {
            let mut settings = HttpSettings::new(model.base_url.as_deref().unwrap_or(OPENAI_URL));
            settings.api_key_env = model.api_key_env.clone().or_else(|| {
                model
                    .base_url
                    .is_none()
                    .then(|| "OPENAI_API_KEY".to_owned())
            });
            if let Some(secs) = model.timeout_secs {
                settings.total_timeout = Duration::from_secs(secs);
            }
            Ok(Box::new(
                OpenAi::new(settings).map_err(|e| fail(e.to_string()))?,
            ))
        }
        spec::Provider::Anthropic => Err(fail(
            "the anthropic provider is not available in this build yet; use \"openai\" (any OpenAI-compatible server) or \"scripted\"".into(),
        )),
    }
}

/// First wait after a transient failure; doubled after each further one.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long to wait before attempt `failures + 1`: exponential from [`BACKOFF_BASE`], with
/// `jitter` (in [0, 1]) taking off up to half so that many runs do not retry in step, and
/// never less than what the provider asked for with `Retry-After`.
pub fn backoff(failures: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let exponential = BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let jittered = exponential.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default().min(BACKOFF_MAX * 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        assert_eq!(backoff(1, 0.0, None), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.0, None), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0, None), Duration::from_secs(1));
        assert_eq!(backoff(30, 0.0, None), BACKOFF_MAX);
        assert_eq!(
            backoff(1, 0.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
