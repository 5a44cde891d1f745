//! A tiny HTTP/1.1 responder for `--metrics-addr`: `GET /metrics` answers the pool's
//! Prometheus text, anything else a 404 or 405. One request per connection.
//!
//! It binds loopback addresses only (checked when the flag is parsed) and never trusts
//! its input: the request head is capped in size and time, and nothing from it is echoed.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Longest a client gets to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Binds `addr`; the returned listener's address has the real port when `addr` had 0.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    debug_assert!(addr.ip().is_loopback());
    TcpListener::bind(addr).await
}

/// Answers requests on `listener` until the task is aborted; `body` renders the metrics.
pub async fn serve<F, Fut>(listener: TcpListener, body: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = String> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: give up on this one, keep serving.
            tokio::task::yield_now().await;
            continue;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLIENT_DEADLINE, answer(stream, body)).await;
        });
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, body: F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut request_line = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let metrics = body().await;
            let shown = if method == "HEAD" {
                ""
            } else {
                metrics.as_str()
            };
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                shown,
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(&mut stream, "404 Not Found", "text/plain", "see /metrics\n").await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET /metrics only\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        // Tolerant: a server that refuses a request may reset the connection.
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, || async {
            "cdpmux_jobs_total 3\n".to_owned()
        }));
        let check = async {
            let ok = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            assert!(ok.contains("version=0.0.4"));
            assert!(ok.ends_with("\r\n\r\ncdpmux_jobs_total 3\n"), "{ok}");
            let missing = request(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
            assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
            let post = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
            assert!(post.starts_with("HTTP/1.1 405"), "{post}");
            let huge = [
                b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
                &[b'a'; MAX_HEAD + 10],
            ]
            .concat();
            let big = request(addr, &huge).await;
            assert!(big.is_empty() || big.starts_with("HTTP/1.1 431"), "{big}");
            // A client that sends nothing and hangs up gets nothing, and the server goes on.
            drop(TcpStream::connect(addr).await.unwrap());
            let again = request(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
            assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        };
        tokio::time::timeout(Duration::from_secs(20), check)
            .await
            .expect("the metrics server answered in time");
        server.abort();
    }
}
