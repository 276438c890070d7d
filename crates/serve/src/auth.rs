//! Who calls the API, and what they may do.
//!
//! A caller is a [`Caller`]: a name (recorded as `by` in the events it causes) and a
//! [`Role`]. The unix socket (owner only) and the single token of `serve.token` /
//! `RETRACE_API_TOKEN` are trusted as `admin`, and a request body's `by` names who decides,
//! as before roles existed. A tokens file ([`Tokens::load`], `retrace serve --tokens FILE`)
//! names several tokens, each with a role; a decision made with one is recorded under the
//! token's name, and a body naming someone else is refused.
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read: every `GET` route (runs, a run, its event stream, health), reads of the store route |
//! | `operator` | a viewer's, and start runs, approve/deny, answer, resolve, signal, cancel, resume |
//! | `admin` | everything: also fork, and writes through the store route (raw appends) |
//!
//! A token's secret is never read from the file itself, only from an environment variable
//! (`token_env`) or a file of its own (`token_file`); the daemon keeps only its BLAKE3
//! hash, and no message names a secret.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a caller may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only: `GET` routes, event streams, store reads.
    Viewer,
    /// A viewer's rights, and decisions on runs: start, approve, deny, answer, resolve,
    /// signal, cancel, resume.
    Operator,
    /// Everything.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        })
    }
}

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The name recorded as `by` (unless the caller is trusted to name someone).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Whether a request body's `by` is taken as who decides (the unix socket and the
    /// single token: whoever holds them is the store's owner); otherwise the caller's
    /// `name` is recorded and a different `by` is refused.
    pub vouches: bool,
}

impl Caller {
    /// The caller of the unix socket: the store's owner, who names themselves in `by`
    /// (`api` when they do not).
    pub fn socket() -> Self {
        Self {
            name: "api".into(),
            role: Role::Admin,
            vouches: true,
        }
    }

    /// Who is recorded as deciding when the request body says `claimed`: for a trusted
    /// caller, `claimed` (else its name); for a named token, its name.
    ///
    /// # Errors
    /// A named token's request claiming another name (`Err` is the message to answer with
    /// 403). The name itself is checked by [`check_name`], not here.
    pub fn decider(&self, claimed: Option<&str>) -> Result<String, String> {
        match claimed {
            None => Ok(self.name.clone()),
            Some(name) if self.vouches || name == self.name => Ok(name.to_owned()),
            Some(name) => Err(format!(
                "token `{}` decides as `{}`, not `{name}`: leave `by` out of the request (the \
                 token's name is recorded), or use `{name}`'s own token",
                self.name, self.name
            )),
        }
    }

    /// Whether the caller may do what needs `needed`.
    ///
    /// # Errors
    /// The message for a 403: who the caller is, what its role is, what is needed.
    pub fn may(&self, needed: Role, what: &str) -> Result<(), String> {
        if self.role >= needed {
            return Ok(());
        }
        Err(format!(
            "token `{}` has role `{}`, which may not {what}: that needs role `{needed}` or \
             higher (see the roles table in docs/guide/serve.md)",
            self.name, self.role
        ))
    }
}

/// Whether `name` may name a decider: 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
///
/// # Errors
/// The message saying what is wrong and what to use instead.
pub fn check_name(name: &str) -> Result<(), String> {
    if name == retrace_runtime::autonomy::BY {
        return Err(format!(
            "`{name}` is the name retrace records its automatic decisions under; no person or \
             token may decide as it"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a name for a decider: use 1–64 characters of A-Z, a-z, 0-9, `.`, \
             `_`, `@` and `-`",
            name.escape_debug()
        ))
    }
}

/// The tokens a daemon's HTTP listener takes, each with the caller it stands for. Only
/// hashes are kept.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(blake3::Hash, Caller)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(_, c)| c.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

/// Why a tokens file is refused. Messages name the file and the token (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a tokens file.
    #[error(
        "the tokens file {} is not valid: {message} (each `[[token]]` has `name`, `role` = \
         viewer|operator|admin, and `token_env = \"VAR\"` or `token_file = \"PATH\"`; a secret \
         is never written in this file)",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (from the TOML parser: line and field).
        message: String,
    },
    /// One token is wrong.
    #[error("the tokens file {}: token `{name}`: {message}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// The token's name.
        name: String,
        /// What is wrong, and what to do.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

/// Shortest secret taken, in bytes: a short token is guessed.
pub const MIN_SECRET: usize = 16;

impl Tokens {
    /// The one token of `serve.token` or `RETRACE_API_TOKEN`: an admin named
    /// `serve-token`, trusted to name who decides in `by`.
    pub fn single(secret: &str) -> Self {
        Self {
            entries: vec![(
                hash(secret.as_bytes()),
                Caller {
                    name: "serve-token".into(),
                    role: Role::Admin,
                    vouches: true,
                },
            )],
        }
    }

    /// Load a tokens file (TOML):
    ///
    /// ```toml
    /// [[token]]
    /// name = "ci-bot"            # recorded as `by`; 1–64 of A-Z a-z 0-9 . _ @ -
    /// role = "operator"          # viewer | operator | admin
    /// token_env = "CI_BOT_TOKEN" # or: token_file = "/etc/retrace/ci-bot.token"
    /// ```
    ///
    /// A relative `token_file` is taken from the tokens file's directory; a file's trailing
    /// newline is not part of the secret.
    ///
    /// # Errors
    /// An unreadable or malformed file; a token with a bad or repeated name, with neither
    /// or both of `token_env` and `token_file`, whose variable is unset, whose file cannot be
    /// read, whose secret is shorter than [`MIN_SECRET`] bytes, or which another token
    /// shares; a file with no token.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        if file.token.is_empty() {
            return Err(Error::Parse {
                path: path.to_owned(),
                message: "it names no `[[token]]`".into(),
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut entries: Vec<(blake3::Hash, Caller)> = Vec::new();
        for entry in file.token {
            let refuse = |message: String| Error::Token {
                path: path.to_owned(),
                name: entry.name.clone(),
                message,
            };
            check_name(&entry.name).map_err(&refuse)?;
            if entries.iter().any(|(_, c)| c.name == entry.name) {
                return Err(refuse("the name is given twice; names must differ".into()));
            }
            let secret = secret(&entry, base).map_err(&refuse)?;
            let hashed = hash(secret.as_bytes());
            if let Some((_, other)) = entries.iter().find(|(h, _)| *h == hashed) {
                return Err(refuse(format!(
                    "its secret is `{}`'s too; give each token its own",
                    other.name
                )));
            }
            entries.push((
                hashed,
                Caller {
                    name: entry.name,
                    role: entry.role,
                    vouches: false,
                },
            ));
        }
        Ok(Self { entries })
    }

    /// The caller whose token an `Authorization` header value (`Bearer SECRET`) carries.
    pub fn caller(&self, authorization: &[u8]) -> Option<&Caller> {
        let given = hash(authorization.strip_prefix(b"Bearer ")?);
        // `blake3::Hash` compares in constant time; every entry is compared
        let mut found = None;
        for (expected, caller) in &self.entries {
            if *expected == given {
                found = Some(caller);
            }
        }
        found
    }

    /// How many named tokens (from a tokens file) there are: 0 for the single token.
    pub fn named(&self) -> usize {
        self.entries.iter().filter(|(_, c)| !c.vouches).count()
    }
}

fn hash(secret: &[u8]) -> blake3::Hash {
    blake3::hash(secret)
}

/// The secret of `entry`, from its variable or its file (relative to `base`).
fn secret(entry: &Entry, base: &Path) -> Result<String, String> {
    let secret = match (&entry.token_env, &entry.token_file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            format!("`token_env = \"{var}\"`, but {var} is not set in the daemon's environment")
        })?,
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read its token_file {}: {e}", file.display()))?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        _ => {
            return Err(
                "give exactly one of `token_env = \"VAR\"` and `token_file = \"PATH\"`".into(),
            );
        }
    };
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "its secret is shorter than {MIN_SECRET} bytes; use a long random one (e.g. \
             `openssl rand -hex 32`)"
        ));
    }
    Ok(secret)
}

/// The role a request to a route of the API needs, and the route as the API's docs name it
/// (`POST /v1/runs/{run}/approve`): `GET`s are read-only; decisions on runs need an
/// operator; the rest (fork, anything new) an admin. The store route (`POST /v1/store`) is
/// checked per call by its handler ([`store_call_needs`]). `path` is one the router matched.
pub fn route_needs(method: &axum::http::Method, path: &str) -> (Role, String) {
    use axum::http::Method;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["v1", "runs", _, rest @ ..] => {
            let mut route = "/v1/runs/{run}".to_owned();
            for segment in rest {
                route.push('/');
                route.push_str(segment);
            }
            route
        }
        _ => path.to_owned(),
    };
    let needs = match (method, route.as_str()) {
        (&Method::GET, _) | (_, "/v1/store") => Role::Viewer,
        (
            &Method::POST,
            "/v1/runs"
            | "/v1/runs/{run}/approve"
            | "/v1/runs/{run}/answer"
            | "/v1/runs/{run}/resolve"
            | "/v1/runs/{run}/signal"
            | "/v1/runs/{run}/cancel"
            | "/v1/runs/{run}/resume",
        ) => Role::Operator,
        _ => Role::Admin,
    };
    (needs, format!("{method} {route}"))
}

/// The role a store call needs: reads a viewer, writes an admin (a raw append names any
/// decider, so it is not an operator's).
pub fn store_call_needs(call: &crate::wire::Call) -> Role {
    use crate::wire::Call;
    match call {
        Call::Run(_)
        | Call::Runs
        | Call::OwnEvents { .. }
        | Call::Blob(_)
        | Call::Snapshot(_)
        | Call::Stats
        | Call::SnapshotIds => Role::Viewer,
        Call::CreateRun { .. }
        | Call::SetRunMeta { .. }
        | Call::Append { .. }
        | Call::PutBlob(_)
        | Call::PutBlobs(_)
        | Call::PutSnapshot { .. }
        | Call::Flush => Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("tokens.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("a.b_c@d-e9").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("ünï").is_err());
    }

    #[test]
    fn a_tokens_file_gives_each_secret_its_caller_and_never_names_a_secret() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ops.token"), "ops-secret-0123456789\n").expect("w");
        let path = file(
            dir.path(),
            "[[token]]\nname = \"ops\"\nrole = \"operator\"\ntoken_file = \"ops.token\"\n\
             [[token]]\nname = \"view\"\nrole = \"viewer\"\ntoken_file = \"view.token\"\n",
        );
        std::fs::write(dir.path().join("view.token"), "view-secret-0123456789").expect("w");
        let tokens = Tokens::load(&path).expect("load");
        let ops = tokens.caller(b"Bearer ops-secret-0123456789").expect("ops");
        assert_eq!((ops.name.as_str(), ops.role), ("ops", Role::Operator));
        assert!(!ops.vouches);
        assert_eq!(
            tokens
                .caller(b"Bearer view-secret-0123456789")
                .map(|c| c.role),
            Some(Role::Viewer)
        );
        assert!(tokens.caller(b"Bearer nope").is_none());
        assert!(tokens.caller(b"ops-secret-0123456789").is_none());
        assert!(!format!("{tokens:?}").contains("secret"));

        // a short secret, a shared one, an inline one, a missing variable: refused, unnamed
        std::fs::write(dir.path().join("short"), "abc").expect("w");
        let bad = [
            "[[token]]\nname = \"a\"\nrole = \"admin\"\ntoken_file = \"short\"\n",
            "[[token]]\nname = \"a\"\nrole = \"admin\"\ntoken_file = \"ops.token\"\n\
             [[token]]\nname = \"b\"\nrole = \"admin\"\ntoken_file = \"ops.token\"\n",
            "[[token]]\nname = \"a\"\nrole = \"admin\"\ntoken = \"inline-secret-0123456789\"\n",
            "[[token]]\nname = \"a\"\nrole = \"admin\"\ntoken_env = \"RETRACE_TEST_UNSET_VAR\"\n",
            "[[token]]\nname = \"a b\"\nrole = \"admin\"\ntoken_file = \"ops.token\"\n",
            "[[token]]\nname = \"a\"\nrole = \"root\"\ntoken_file = \"ops.token\"\n",
        ];
        for text in bad {
            let e = Tokens::load(&file(dir.path(), text)).expect_err(text);
            let message = e.to_string();
            assert!(!message.contains("secret-0123456789"), "{message}");
            assert!(message.contains("tokens.toml"), "{message}");
        }
    }

    #[test]
    fn routes_need_their_roles() {
        use axum::http::Method;
        let needs = |m: &Method, p: &str| route_needs(m, p);
        assert_eq!(needs(&Method::GET, "/v1/runs/abc/events").0, Role::Viewer);
        assert_eq!(
            needs(&Method::POST, "/v1/runs/abc/approve"),
            (Role::Operator, "POST /v1/runs/{run}/approve".to_owned())
        );
        assert_eq!(needs(&Method::POST, "/v1/runs").0, Role::Operator);
        assert_eq!(needs(&Method::POST, "/v1/runs/abc/fork").0, Role::Admin);
        assert_eq!(needs(&Method::POST, "/v1/store").0, Role::Viewer);
    }

    #[test]
    fn roles_order_and_deciders() {
        let viewer = Caller {
            name: "v".into(),
            role: Role::Viewer,
            vouches: false,
        };
        let e = viewer.may(Role::Operator, "approve").expect_err("viewer");
        assert!(e.contains("`viewer`") && e.contains("`operator`"), "{e}");
        assert!(viewer.may(Role::Viewer, "read").is_ok());
        assert_eq!(viewer.decider(None).as_deref(), Ok("v"));
        assert_eq!(viewer.decider(Some("v")).as_deref(), Ok("v"));
        assert!(viewer.decider(Some("mallory")).is_err());
        let socket = Caller::socket();
        assert_eq!(socket.decider(Some("alice")).as_deref(), Ok("alice"));
        assert_eq!(socket.decider(None).as_deref(), Ok("api"));
    }
}
