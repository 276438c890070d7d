//! `retrace serve`: run the daemon until SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use retrace_serve::server::{Config, serve, terminated};

use crate::cli::ServeArgs;

pub fn run(store: &Path, options: ServeArgs) -> anyhow::Result<ExitCode> {
    let workers = options.workers;
    let config = Config {
        workers,
        http: options.http,
        token: std::env::var("RETRACE_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        tokens: options.tokens.clone(),
        grace: Duration::from_secs(options.grace),
        socket: options.socket,
        worker: options.worker,
        lease_ttl: options.lease_ttl,
        otlp_endpoint: options.otlp_endpoint.clone(),
        otlp_no_content: options.otlp_no_content,
        ..Config::new(store)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, terminated(), |started| {
        let shown = match &started.worker {
            Some(worker) => format!("worker `{worker}` of a shared store"),
            None => format!("store {}", store.display()),
        };
        println!(
            "retrace serve: {shown}, {workers} runs at once, {} unfinished runs taken up",
            started.resumed
        );
        if let Some(socket) = &started.socket {
            println!("listening on {}", socket.display());
        }
        match (started.http, &started.token_file) {
            (Some(addr), _) if started.named_tokens > 0 => {
                println!(
                    "and on http://{addr} ({} named tokens from {})",
                    started.named_tokens,
                    options
                        .tokens
                        .as_deref()
                        .unwrap_or(Path::new("?"))
                        .display()
                );
            }
            (Some(addr), Some(file)) => {
                println!("and on http://{addr} (bearer token in {})", file.display());
            }
            (Some(addr), None) => {
                println!("listening on http://{addr} (bearer token from RETRACE_API_TOKEN)");
            }
            _ => {}
        }
    }))?;
    println!("retrace serve: stopped");
    Ok(ExitCode::SUCCESS)
}
