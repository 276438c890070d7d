//! The reference MCP server over streamable HTTP, for the tests of retrace's HTTP MCP
//! client: [`HttpServer`] runs `server-everything streamableHttp` on a loopback port, and
//! [`Tap`] forwards connections to it while keeping every byte the client sent (to check
//! which headers went out).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nobody listens on now (the kernel's pick, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `server-everything` serving streamable HTTP at `http://127.0.0.1:<port>/mcp`; SIGKILLed
/// when dropped.
#[derive(Debug)]
pub struct HttpServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl HttpServer {
    /// Start one on `port`, its environment carrying `marker` (`KEY=VALUE`), and wait until
    /// it accepts connections.
    pub fn start(port: u16, marker: &str) -> Self {
        let (key, value) = marker.split_once('=').expect("marker is KEY=VALUE");
        let child = Command::new("node")
            .arg(crate::mcp_server_everything())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .env(key, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node (Node.js is needed for the MCP tests)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server-everything did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    /// Its MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// SIGKILL it and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP forwarder to `127.0.0.1:<to>` that keeps what clients sent.
#[derive(Debug)]
pub struct Tap {
    /// The port to connect to instead.
    pub port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    /// Forward connections to port `to` (for the rest of the test process).
    pub fn to(to: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tap");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let kept = Arc::clone(&kept);
                let (client_in, server_out) = (client.try_clone(), server.try_clone());
                let (Ok(client_in), Ok(server_out)) = (client_in, server_out) else {
                    continue;
                };
                std::thread::spawn(move || pump(client_in, server_out, Some(&kept)));
                std::thread::spawn(move || pump(server, client, None));
            }
        });
        Self { port, seen }
    }

    /// Everything clients sent so far, as text.
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("tap lock")).into_owned()
    }
}

/// Copy `from` to `to` until either side closes, keeping a copy in `keep`.
fn pump(mut from: TcpStream, mut to: TcpStream, keep: Option<&Mutex<Vec<u8>>>) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        if let Some(keep) = keep {
            keep.lock()
                .expect("tap lock")
                .extend_from_slice(&buffer[..n]);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
