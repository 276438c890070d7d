//! The model client a spec asks for, and how long to wait before asking again after a
//! transient failure.

use std::time::Duration;

use retrace_providers::{Anthropic, HttpSettings, OpenAi, Provider, Scripted};

use crate::spec::{self, Spec};

/// Why no model client could be set up for a spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec's model settings do not work.
    #[error("{table} of agent `{agent}`: {message}")]
    Settings {
        /// The agent.
        agent: String,
        /// Which model: `[model]`, or ``[[models]] `NAME` ``.
        table: String,
        /// What is wrong.
        message: String,
    },
}

/// OpenAI's public API.
pub const OPENAI_URL: &str = "https://api.openai.com/v1";
/// Anthropic's public API.
pub const ANTHROPIC_URL: &str = "https://api.anthropic.com";

/// HTTP settings from the spec: its base URL (else `public`) and key variable (else, for
/// the public API only, `key_env`).
fn http_settings(model: &spec::Model, public: &str, key_env: &str) -> HttpSettings {
    let mut settings = HttpSettings::new(model.base_url.as_deref().unwrap_or(public));
    settings.api_key_env = model
        .api_key_env
        .clone()
        .or_else(|| model.base_url.is_none().then(|| key_env.to_owned()));
    if let Some(secs) = model.timeout_secs {
        settings.total_timeout = Duration::from_secs(secs);
    }
    settings
}

/// The model client `spec` declares. HTTP providers read their key from the environment
/// variable the spec names, now.
pub fn provider(spec: &Spec) -> Result<Box<dyn Provider>, Error> {
    client(&spec.name, "[model]", &spec.model)
}

/// The client of `model`, the model `table` (`[model]`, ``[[models]] `NAME` ``) of agent
/// `agent`.
pub fn client(agent: &str, table: &str, model: &spec::Model) -> Result<Box<dyn Provider>, Error> {
    let fail = |message: String| Error::Settings {
        agent: agent.to_owned(),
        table: table.to_owned(),
        message,
    };
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
        spec::Provider::Openai => Ok(Box::new(
            OpenAi::new(http_settings(model, OPENAI_URL, "OPENAI_API_KEY"))
                .map_err(|e| fail(e.to_string()))?,
        )),
        spec::Provider::Anthropic => Ok(Box::new(
            Anthropic::new(http_settings(model, ANTHROPIC_URL, "ANTHROPIC_API_KEY"))
                .map_err(|e| fail(e.to_string()))?,
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
