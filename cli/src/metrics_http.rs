//! The `--metrics-addr` server: `GET /metrics` answers the pool's Prometheus text, any
//! other path a 404, any other method a 405. HTTP parsing is hyper's (HTTP/1 only).
//!
//! It binds loopback addresses only (checked when the flag is parsed) and trusts nothing
//! from a client: the request head is capped in size and in the time it may take to
//! arrive, a connection lives at most [`Limits::connection_deadline`], at most
//! [`Limits::max_connections`] are served at once (further ones are closed at accept),
//! and a `Host` other than a loopback name with this server's port is refused, so a web
//! page cannot read the metrics through DNS rebinding. Nothing from a request is echoed.
//! Accept errors (out of file descriptors) back off instead of spinning.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What a client may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time a client gets to send its whole request head.
    pub header_read_timeout: Duration,
    /// Longest a connection lives, reading the answer included.
    pub connection_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A scraper needs one; a few spare for people with curl.
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            connection_deadline: Duration::from_secs(10),
        }
    }
}

/// Largest request head read (hyper's minimum buffer is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// Backoff after a failed accept: from the first to the last, doubling.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    serve_with(listener, body, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with<F, Fut>(listener: TcpListener, body: F, limits: Limits)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = String> + Send,
{
    let port = listener.local_addr().map_or(0, |a| a.port());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut failures = 0u32;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(_) => {
                // EMFILE and friends persist until something closes: wait, do not spin.
                failures = failures.saturating_add(1);
                tokio::time::sleep(accept_backoff(failures)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: closed at once, never queued
            continue;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(answer(req, port, body).await) }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_deadline, connection).await;
            drop(slot);
        });
    }
}

/// The pause after `failures` accept errors in a row (1 or more).
fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ACCEPT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

/// True for `Host: 127.0.0.1:PORT`, `localhost:PORT` or `[::1]:PORT` with our port.
fn host_allowed(host: Option<&HeaderValue>, port: u16) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((name, host_port)) = host.rsplit_once(':') else {
        return false;
    };
    let name_ok = name == "127.0.0.1" || name == "[::1]" || name.eq_ignore_ascii_case("localhost");
    name_ok && host_port.parse::<u16>() == Ok(port)
}

async fn answer<F, Fut>(req: Request<Incoming>, port: u16, body: F) -> Response<Full<Bytes>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    if !host_allowed(req.headers().get(HOST), port) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host must be 127.0.0.1:{port}, localhost:{port} or [::1]:{port}\n"),
        );
    }
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    if !is_read {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "see /metrics\n".into());
    }
    // hyper sends no body for HEAD, keeping the length.
    let mut response = Response::new(Full::new(Bytes::from(body().await)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Every test's whole run is bounded by this.
    const TEST_LIMIT: Duration = Duration::from_secs(30);

    async fn start(limits: Limits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_with(
            listener,
            || async { "cdpmux_jobs_total 3\n".to_owned() },
            limits,
        ));
        (addr, server)
    }

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        // Tolerant: a server that refuses a request may reset the connection.
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(path: &str, host: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    }

    /// Reads until the server closes `s` (EOF or reset); the test limit bounds it.
    async fn closed_by_server(s: &mut TcpStream) {
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    #[tokio::test]
    async fn serves_prometheus_text_and_refuses_the_rest() {
        let (addr, server) = start(Limits::default()).await;
        let host = format!("127.0.0.1:{}", addr.port());
        let check = async {
            let ok = request(addr, &get("/metrics", &host)).await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            assert!(
                ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
                "{ok}"
            );
            assert!(ok.ends_with("\r\n\r\ncdpmux_jobs_total 3\n"), "{ok}");
            let head = request(
                addr,
                format!("HEAD /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
            let query = request(addr, &get("/metrics?x=1", &host)).await;
            assert!(query.starts_with("HTTP/1.1 200"), "{query}");
            let missing = request(addr, &get("/other", &host)).await;
            assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
            let post = request(
                addr,
                format!("POST /metrics HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            assert!(post.starts_with("HTTP/1.1 405"), "{post}");
            assert!(post.contains("allow: GET, HEAD"), "{post}");
            let huge = [
                format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nX: ").as_bytes(),
                &[b'a'; MAX_HEAD + 10],
            ]
            .concat();
            let big = request(addr, &huge).await;
            assert!(big.is_empty() || big.starts_with("HTTP/1.1 431"), "{big}");
            let garbage = request(addr, b"\x16\x03\x01garbage\r\n\r\n").await;
            assert!(
                garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
                "{garbage}"
            );
            // A client that sends nothing and hangs up gets nothing; the server goes on.
            drop(TcpStream::connect(addr).await.unwrap());
            let again = request(addr, &get("/metrics", &host)).await;
            assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        };
        tokio::time::timeout(TEST_LIMIT, check)
            .await
            .expect("the metrics server answered in time");
        server.abort();
    }

    #[tokio::test]
    async fn only_loopback_hosts_with_our_port_are_served() {
        let (addr, server) = start(Limits::default()).await;
        let port = addr.port();
        let check = async {
            for host in [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("LOCALHOST:{port}"),
                format!("[::1]:{port}"),
            ] {
                let ok = request(addr, &get("/metrics", &host)).await;
                assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
            }
            for host in [
                "evil.test".to_owned(),
                format!("evil.test:{port}"),
                format!("127.0.0.1:{}", port.wrapping_add(1)),
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
                format!("127.0.0.2:{port}"),
                format!("localhost.evil.test:{port}"),
                String::new(),
            ] {
                let refused = request(addr, &get("/metrics", &host)).await;
                assert!(refused.starts_with("HTTP/1.1 4"), "{host:?}: {refused}");
                assert!(
                    !refused.contains("cdpmux_jobs_total"),
                    "{host:?}: {refused}"
                );
            }
            let no_host = request(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
            assert!(
                no_host.starts_with("HTTP/1.") && no_host.contains(" 421 "),
                "{no_host}"
            );
        };
        tokio::time::timeout(TEST_LIMIT, check)
            .await
            .expect("in time");
        server.abort();
    }

    #[tokio::test]
    async fn idle_connections_past_the_cap_are_closed_and_scrapes_resume() {
        let limits = Limits {
            max_connections: 4,
            // Long enough that only the cap can close the extra connections below.
            header_read_timeout: Duration::from_secs(600),
            connection_deadline: Duration::from_secs(600),
        };
        let (addr, server) = start(limits).await;
        let host = format!("127.0.0.1:{}", addr.port());
        let check = async {
            let mut idle = Vec::new();
            for _ in 0..limits.max_connections {
                idle.push(TcpStream::connect(addr).await.unwrap());
            }
            // Each extra one is closed by the server right away, in accept order.
            for _ in 0..10 {
                let mut extra = TcpStream::connect(addr).await.unwrap();
                closed_by_server(&mut extra).await;
            }
            // A scrape while every slot is held is refused, not queued behind them.
            let mut refused = TcpStream::connect(addr).await.unwrap();
            let _ = refused.write_all(&get("/metrics", &host)).await;
            closed_by_server(&mut refused).await;
            // Once the idle ones go, scrapes are served again.
            drop(idle);
            loop {
                let ok = request(addr, &get("/metrics", &host)).await;
                if ok.starts_with("HTTP/1.1 200") {
                    break;
                }
                assert!(ok.is_empty(), "{ok}");
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(TEST_LIMIT, check)
            .await
            .expect("a fresh scrape was served once the idle connections left");
        server.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_at_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, server) = start(limits).await;
        let check = async {
            let mut silent = TcpStream::connect(addr).await.unwrap();
            silent
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            closed_by_server(&mut silent).await;
        };
        tokio::time::timeout(TEST_LIMIT, check)
            .await
            .expect("the silent client was dropped");
        server.abort();
    }

    mod props {
        use super::super::*;
        use crate::args::parse_loopback_addr;
        use proptest::prelude::*;

        /// Host headers: loopback names, other names and junk, with or without a port.
        fn host_header() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                Just("127.0.0.1".to_owned()),
                Just("localhost".to_owned()),
                Just("[::1]".to_owned()),
                "[a-zA-Z0-9.:\\[\\]-]{0,24}",
                any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
            ];
            let port = prop_oneof![Just(None), any::<u16>().prop_map(Some)];
            (name, port).prop_map(|(name, port)| match port {
                Some(port) => format!("{name}:{port}"),
                None => name,
            })
        }

        proptest! {
            #[test]
            fn every_accepted_host_is_loopback_with_our_port(
                host in host_header(),
                port in any::<u16>(),
            ) {
                let Ok(value) = HeaderValue::from_str(&host) else { return Ok(()) };
                if host_allowed(Some(&value), port) {
                    let (name, got) = host.rsplit_once(':').unwrap();
                    prop_assert_eq!(got.parse::<u16>(), Ok(port));
                    let ip: std::net::IpAddr = if name.eq_ignore_ascii_case("localhost") {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        name.trim_start_matches('[').trim_end_matches(']').parse().unwrap()
                    };
                    prop_assert!(ip.is_loopback(), "{}", host);
                }
            }

            #[test]
            fn our_own_addresses_are_always_accepted(port in any::<u16>()) {
                for name in ["127.0.0.1", "localhost", "[::1]"] {
                    let value = HeaderValue::from_str(&format!("{name}:{port}")).unwrap();
                    prop_assert!(host_allowed(Some(&value), port));
                }
            }

            #[test]
            fn every_accepted_metrics_address_is_loopback(addr in "\\PC{0,40}") {
                if let Ok(socket) = parse_loopback_addr(&addr) {
                    prop_assert!(socket.ip().is_loopback(), "{} -> {}", addr, socket);
                }
            }

            #[test]
            fn every_accepted_ip_address_is_loopback(
                ip in any::<std::net::IpAddr>(),
                port in any::<u16>(),
            ) {
                let addr = std::net::SocketAddr::new(ip, port).to_string();
                match parse_loopback_addr(&addr) {
                    Ok(socket) => prop_assert!(socket.ip().is_loopback()),
                    Err(_) => prop_assert!(!ip.is_loopback(), "{} refused", addr),
                }
            }
        }
    }

    #[test]
    fn accept_errors_back_off_doubling_to_a_cap() {
        assert_eq!(accept_backoff(1), ACCEPT_BACKOFF_MIN);
        assert_eq!(accept_backoff(2), ACCEPT_BACKOFF_MIN * 2);
        let mut last = Duration::ZERO;
        for failures in 1..100 {
            let pause = accept_backoff(failures);
            assert!(pause >= last && pause > Duration::ZERO, "{failures}");
            assert!(pause <= ACCEPT_BACKOFF_MAX);
            last = pause;
        }
        assert_eq!(accept_backoff(u32::MAX), ACCEPT_BACKOFF_MAX);
    }
}
