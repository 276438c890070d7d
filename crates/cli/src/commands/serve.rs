//! `retrace serve`: run the daemon until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use retrace_serve::server::{Config, serve, terminated};

pub fn run(
    dir: &Path,
    workers: usize,
    http: Option<SocketAddr>,
    grace: u64,
) -> anyhow::Result<ExitCode> {
    let config = Config {
        store: dir.to_owned(),
        workers,
        http,
        token: std::env::var("RETRACE_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        grace: Duration::from_secs(grace),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, terminated(), |started| {
        println!(
            "retrace serve: store {}, {workers} workers, {} unfinished runs taken up",
            dir.display(),
            started.resumed
        );
        println!("listening on {}", started.socket.display());
        if let (Some(addr), Some(file)) = (started.http, &started.token_file) {
            println!("and on http://{addr} (bearer token in {})", file.display());
        }
    }))?;
    println!("retrace serve: stopped");
    Ok(ExitCode::SUCCESS)
}
