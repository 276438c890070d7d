//! Where a PostgreSQL store is: a libpq URL, its password from the environment, and a
//! form of it that is safe to show.

use std::str::FromStr;

/// The environment variable the password is read from (libpq's own name for it).
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// Whether `s` names a PostgreSQL store (`postgres://…` or `postgresql://…`) rather than
/// a directory.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A parsed PostgreSQL URL with the password from [`PASSWORD_ENV`].
#[derive(Clone)]
pub struct Target {
    pub(crate) config: tokio_postgres::Config,
    shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Target").field(&self.shown).finish()
    }
}

impl std::fmt::Display for Target {
    /// The URL without password or query: `postgres://user@host:port/db`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL libpq would take.
    #[error(
        "{shown} is not a PostgreSQL URL: {reason}; expected postgres://USER@HOST:PORT/DATABASE"
    )]
    Malformed {
        /// The URL, password removed.
        shown: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL carries a password.
    #[error(
        "{shown}: the URL holds a password; remove it and set {PASSWORD_ENV} instead \
         (a URL shows in process lists, shell history and logs)"
    )]
    PasswordInUrl {
        /// The URL, password removed.
        shown: String,
    },
}

impl Target {
    /// Parse `url`, taking the password from [`PASSWORD_ENV`] when set.
    ///
    /// # Errors
    /// [`TargetError`] when the URL does not parse or holds a password.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        Self::parse_with_password(url, std::env::var(PASSWORD_ENV).ok())
    }

    /// Parse `url` with an explicit password (`None`: connect without one).
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn parse_with_password(url: &str, password: Option<String>) -> Result<Self, TargetError> {
        let shown = redact(url);
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| TargetError::Malformed {
                shown: shown.clone(),
                // the driver's message names the option, never its value
                reason: e.to_string(),
            })?;
        if config.get_password().is_some() {
            return Err(TargetError::PasswordInUrl { shown });
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("retrace");
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        // a connection that died silently (a dropped NAT entry, a failover) is noticed in
        // about half a minute, not the system's two hours: the live tail reconnects
        config.keepalives_idle(std::time::Duration::from_secs(15));
        config.keepalives_interval(std::time::Duration::from_secs(5));
        config.keepalives_retries(3);
        Ok(Self { config, shown })
    }

    /// The driver's configuration (password included: never print it).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// This target with `options` (libpq's `options`, e.g. `-c search_path=team_a`) set.
    #[must_use]
    pub fn with_options(mut self, options: &str) -> Self {
        self.config.options(options);
        self
    }
}

/// `url` without password, for messages: of the query only `options` is kept (it names
/// the schema, which tells two stores in one database apart).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let options: Vec<(String, String)> = parsed
                .query_pairs()
                .filter(|(k, _)| k == "options")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            parsed.set_query(None);
            if !options.is_empty() {
                parsed.query_pairs_mut().extend_pairs(options);
            }
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "the --store value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_without_being_repeated() {
        let err = Target::parse_with_password("postgres://me:hunter2@db:5432/x", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PGPASSWORD"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("postgres://me@db:5432/x"), "{text}");
    }

    #[test]
    fn the_password_comes_from_the_environment_and_is_never_shown() {
        let target = Target::parse_with_password(
            "postgres://me@db/x?sslmode=disable",
            Some("s3cret".into()),
        )
        .unwrap();
        assert_eq!(target.config().get_password(), Some(&b"s3cret"[..]));
        assert_eq!(target.to_string(), "postgres://me@db/x");
        let schema = Target::parse_with_password(
            "postgres://me@db/x?password=no&options=-c%20search_path%3Dteam_a",
            None,
        );
        assert!(
            matches!(schema, Err(TargetError::PasswordInUrl { ref shown }) if !shown.contains("no"))
        );
        let schema = Target::parse_with_password(
            "postgres://me@db/x?sslmode=disable&options=-c%20search_path%3Dteam_a",
            None,
        )
        .unwrap();
        assert_eq!(
            schema.to_string(),
            "postgres://me@db/x?options=-c+search_path%3Dteam_a"
        );
        assert!(!format!("{target:?}").contains("s3cret"));
    }

    #[test]
    fn malformed_urls_are_explained() {
        let err =
            Target::parse_with_password("postgres://me@db/x?bogus_option=1", None).unwrap_err();
        assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
        assert!(is_postgres_url("postgresql://h/d") && !is_postgres_url("/var/store"));
    }
}
