//! A loopback HTTP/1.1 server for provider tests that speaks exactly the bytes a test
//! gives it: each connection reads one request (head and `content-length` body, kept for
//! the test to inspect) and answers with the next scripted [`Reply`], then closes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does with one connection.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Write these pieces, pausing between them (so events split across TCP reads), then
    /// close.
    Pieces(Vec<Vec<u8>>, Duration),
    /// Read the request and never answer.
    Hang,
    /// Check the request first, as a real API validates it: when the check returns a
    /// response (a whole HTTP answer, e.g. a 400 with the API's message), send that instead
    /// of the reply.
    Gate(fn(&Request) -> Option<Vec<u8>>, Box<Reply>),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    /// Request line and headers, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Request {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the request body is JSON")
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// Serve `replies`, one per connection, in order.
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            for reply in replies {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    let reply = match reply {
                        Reply::Gate(check, reply) => match check(&request) {
                            Some(refusal) => Reply::Pieces(vec![refusal], Duration::ZERO),
                            None => *reply,
                        },
                        other => other,
                    };
                    seen.lock().expect("lock").push(request);
                    match reply {
                        Reply::Hang => tokio::time::sleep(Duration::from_hours(1)).await,
                        Reply::Gate(..) => unreachable!("a gate was opened above"),
                        Reply::Pieces(pieces, pause) => {
                            for piece in pieces {
                                if socket.write_all(&piece).await.is_err() {
                                    return;
                                }
                                let _ = socket.flush().await;
                                tokio::time::sleep(pause).await;
                            }
                            let _ = socket.shutdown().await;
                        }
                    }
                });
            }
        });
        Self { addr, requests }
    }

    /// The base URL clients should use (`http://127.0.0.1:PORT{path}`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Request {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while bytes.len() < end + 4 + len {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&bytes[end + 4..]).into_owned();
            return Request { head, body };
        }
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return Request {
                head: String::from_utf8_lossy(&bytes).into_owned(),
                body: String::new(),
            };
        }
        bytes.extend_from_slice(&buf[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete HTTP response head.
pub fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// An SSE response: the head, then one `data:` event per item (and an `event:` line when
/// a name is given), all in one piece.
pub fn sse(events: &[(Option<&str>, String)]) -> Vec<u8> {
    let mut out = head("200 OK", &[("content-type", "text/event-stream")]);
    for (name, data) in events {
        if let Some(name) = name {
            out.extend_from_slice(format!("event: {name}\n").as_bytes());
        }
        out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
    }
    out
}

/// `bytes` cut into pieces of 1, 2, … 7, 1, 2, … bytes: lines, events and UTF-8 characters
/// split every which way, as a slow or chunking server would write them.
pub fn varied_split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let (mut at, mut size) = (0, 1);
    while at < bytes.len() {
        let end = (at + size).min(bytes.len());
        pieces.push(bytes[at..end].to_vec());
        at = end;
        size = size % 7 + 1;
    }
    pieces
}

/// `bytes` cut into pieces of `size` (to split events across writes).
pub fn split(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// The fake key the tests run with (set in `.cargo/config.toml`).
pub const KEY_ENV: &str = "RETRACE_TEST_API_KEY";

/// The key's value.
pub fn key() -> String {
    std::env::var(KEY_ENV).expect("RETRACE_TEST_API_KEY is set by .cargo/config.toml")
}

/// One chunk of an OpenAI chat-completions stream: `delta` for choice 0, and its
/// `finish_reason` when given (the `data:` of one SSE event).
pub fn openai_chunk(delta: &serde_json::Value, finish: Option<&str>) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
}

/// A streamed OpenAI chat-completions reply: `text`, then a call of `fs.read` on `read`'s
/// path (with `read`'s call id) if given, then the usage chunk when `usage` gives
/// `(prompt_tokens, completion_tokens)`, then `[DONE]`.
pub fn openai_reply(text: &str, read: Option<(&str, &str)>, usage: Option<(u64, u64)>) -> Reply {
    let mut events = vec![(
        None,
        openai_chunk(&serde_json::json!({"content": text}), None),
    )];
    if let Some((id, path)) = read {
        let call = serde_json::json!({"index": 0, "id": id, "type": "function",
            "function": {"name": "fs__read", "arguments": serde_json::json!({"path": path}).to_string()}});
        events.push((
            None,
            openai_chunk(&serde_json::json!({"tool_calls": [call]}), None),
        ));
    }
    let finish = if read.is_some() { "tool_calls" } else { "stop" };
    events.push((None, openai_chunk(&serde_json::json!({}), Some(finish))));
    if let Some((prompt, completion)) = usage {
        events.push((
            None,
            serde_json::json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})
                .to_string(),
        ));
    }
    events.push((None, "[DONE]".into()));
    Reply::Pieces(vec![sse(&events)], Duration::ZERO)
}
