//! Helpers shared by the tests that drive the `retrace` binary.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};

/// The `retrace` binary against `store`, with no store from the environment.
pub fn command(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retrace"));
    cmd.arg("--store").arg(store).env_remove("RETRACE_STORE");
    cmd
}

/// Run `retrace --store STORE ARGS…` to completion.
pub fn retrace(store: &Path, args: &[&str]) -> Output {
    command(store)
        .args(args)
        .output()
        .expect("run the retrace binary")
}

/// Everything the process printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
