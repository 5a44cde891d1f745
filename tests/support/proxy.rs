//! A forward HTTP proxy and a site that remembers what it was sent, both on 127.0.0.1,
//! for identity tests: the proxy counts what passes through it and may demand
//! `Proxy-Authorization`; the site keeps each request's head.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Reads one request head (up to the blank line); `None` if the peer closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The value of header `name` in `head`, if present.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A forward proxy for plain-HTTP absolute-URI requests (`GET http://host/path`).
pub struct ForwardProxy {
    port: u16,
    passed: Arc<Mutex<Vec<String>>>,
    challenged: Arc<AtomicU64>,
    server: JoinHandle<()>,
}

impl ForwardProxy {
    /// Starts the proxy; with `credentials`, a request without the matching
    /// `Proxy-Authorization: Basic ...` gets a `407`.
    pub async fn start(credentials: Option<(&str, &str)>) -> ForwardProxy {
        use base64_free::encode;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let expected = credentials.map(|(u, p)| format!("Basic {}", encode(&format!("{u}:{p}"))));
        let passed = Arc::new(Mutex::new(Vec::new()));
        let challenged = Arc::new(AtomicU64::new(0));
        let (p2, c2) = (passed.clone(), challenged.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (expected, passed, challenged) = (expected.clone(), p2.clone(), c2.clone());
                tokio::spawn(async move {
                    let relay = relay(stream, expected, passed, challenged);
                    let _ = tokio::time::timeout(Duration::from_secs(30), relay).await;
                });
            }
        });
        ForwardProxy {
            port,
            passed,
            challenged,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests forwarded to their origin.
    pub fn passed(&self) -> u64 {
        self.passed.lock().unwrap().len() as u64
    }

    /// Whether a request for `path` (on any host) was forwarded.
    pub fn passed_path(&self, path: &str) -> bool {
        let passed = self.passed.lock().unwrap();
        passed.iter().any(|url| {
            let rest = url.strip_prefix("http://").unwrap_or(url);
            rest.find('/').map(|i| &rest[i..]) == Some(path)
        })
    }

    /// Requests answered with `407` (no or wrong credentials).
    pub fn challenged(&self) -> u64 {
        self.challenged.load(Ordering::SeqCst)
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves one client connection: one request, answered or forwarded, then closed.
async fn relay(
    mut client: TcpStream,
    expected: Option<String>,
    passed: Arc<Mutex<Vec<String>>>,
    challenged: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await else {
        return Ok(());
    };
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if let Some(expected) = &expected {
        if header(&head, "Proxy-Authorization") != Some(expected.as_str()) {
            challenged.fetch_add(1, Ordering::SeqCst);
            let body = "proxy credentials needed";
            let response = format!(
                "HTTP/1.1 407 Proxy Authentication Required\r\n\
                 Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await?;
            return client.shutdown().await;
        }
    }
    let Some(rest) = target.strip_prefix("http://") else {
        let response =
            "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    passed.lock().unwrap().push(target.to_owned());
    let mut origin = TcpStream::connect(authority).await?;
    let mut forwarded = format!("{method} {path} HTTP/1.1\r\n");
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !name.starts_with("proxy-") && name != "connection" {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    origin.write_all(forwarded.as_bytes()).await?;
    tokio::io::copy(&mut origin, &mut client).await?;
    client.shutdown().await
}

/// A site that answers every GET with `body` and keeps every request's head.
pub struct RecordingSite {
    base: String,
    heads: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

impl RecordingSite {
    pub async fn start(body: &'static str) -> RecordingSite {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind site");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h2 = heads.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let heads = h2.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    heads.lock().unwrap().push(head);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        RecordingSite {
            base,
            heads,
            server,
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The heads of the requests for `path` so far.
    pub fn heads_for(&self, path: &str) -> Vec<String> {
        let prefix = format!("GET {path} ");
        let heads = self.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

impl Drop for RecordingSite {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Base64 for the `Basic` header, written here to need no crate.
mod base64_free {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
