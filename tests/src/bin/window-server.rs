//! The window server ([`retrace_tests::window_server`]) as a program, for scripts
//! (`benches/scripts/long_run.sh`):
//!
//!   window-server --window TOKENS --steps N --task TEXT [--port PORT] [--summary-delay-ms MS]
//!
//! Listens on `127.0.0.1:PORT` (default 0: any free port) and prints
//! `listening http://127.0.0.1:PORT` once ready; `GET /stats` (or `/stats?full`) answers the
//! figures so far as JSON, with `held_summaries`: the summary requests whose reply is being
//! held (`--summary-delay-ms`, or `POST /delay?summary_ms=MS` to change it while running). On SIGTERM or SIGINT it prints the figures as one JSON line to
//! stdout and exits.

use anyhow::{Context, bail};
use retrace_tests::window_server::{Config, WindowServer};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut window, mut steps, mut task) = (0u16, None, None, None);
    let mut delay_ms = 0u64;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse().context("--port")?,
            "--window" => window = Some(value()?.parse().context("--window")?),
            "--steps" => steps = Some(value()?.parse().context("--steps")?),
            "--task" => task = Some(value()?),
            "--summary-delay-ms" => delay_ms = value()?.parse().context("--summary-delay-ms")?,
            other => bail!(
                "unknown argument {other}; usage: window-server --window TOKENS --steps N --task TEXT [--port PORT] [--summary-delay-ms MS]"
            ),
        }
    }
    let config = Config {
        window: window.context("--window is required")?,
        steps: steps.context("--steps is required")?,
        task: task.context("--task is required")?,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server = WindowServer::bind(([127, 0, 0, 1], port).into(), config).await?;
    server.delay_summaries(std::time::Duration::from_millis(delay_ms));
    println!("listening {}", server.url(""));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("{}", server.stats().summary_json(false));
    Ok(())
}
