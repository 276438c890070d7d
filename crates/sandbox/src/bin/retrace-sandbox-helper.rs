//! The sandbox helper alone, for the crate's tests: `retrace-sandbox-helper __sandbox-exec
//! <confinement JSON> -- <program> <args…>` (the `retrace` binary does the same).

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_none_or(|a| a != retrace_sandbox::process::HELPER_ARG)
    {
        eprintln!(
            "usage: retrace-sandbox-helper {} <confinement JSON> -- <program> <args…>",
            retrace_sandbox::process::HELPER_ARG
        );
        std::process::exit(2);
    }
    retrace_sandbox::process::helper_main(std::env::args_os().skip(2).collect())
}
