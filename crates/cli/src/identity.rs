//! Who decides: the name recorded as `by` on a human decision (approve, deny, answer,
//! cancel, signal, resolve). [`decider`] is the one place it is picked: `--as NAME`, else
//! `$USER`, else `cli`.

use anyhow::bail;

/// The decider's name: `as_name` (from `--as`), else `$USER`, else `cli`. A name is 1–64
/// characters of `A-Z a-z 0-9 . _ @ -`.
///
/// # Errors
/// A malformed `--as` name, or a malformed `$USER` when no `--as` is given.
pub fn decider(as_name: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = as_name {
        if let Err(e) = retrace_serve::auth::check_name(name) {
            bail!("--as: {e}");
        }
        return Ok(name.to_owned());
    }
    match std::env::var("USER") {
        Ok(user) if !user.is_empty() => {
            if let Err(e) = retrace_serve::auth::check_name(&user) {
                bail!("$USER: {e}; say who decides with --as NAME");
            }
            Ok(user)
        }
        _ => Ok("cli".to_owned()),
    }
}
