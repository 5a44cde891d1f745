//! Addresses of browsers cdpmux did not launch: a DevTools WebSocket URL, or an HTTP
//! DevTools address whose WebSocket URL is looked up at `/json/version`.
//!
//! The lookup is a deliberately tiny HTTP/1.1 client (one GET, `Connection: close`), so
//! no HTTP client crate is needed for one request per connect.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use crate::error::{Error, ErrorKind, Result, TimeoutKind};

const ACCEPTED_FORMS: &str = "expected `ws://host:port/devtools/browser/<id>` or \
     `http://host:port` (resolved through /json/version)";

/// The most we read of a `/json/version` answer; real ones are well under 1 KiB.
const MAX_RESPONSE: usize = 64 * 1024;

/// Where to find a running browser's DevTools endpoint.
///
/// ```
/// use cdpmux::browser::Endpoint;
///
/// let direct: Endpoint = "ws://127.0.0.1:9222/devtools/browser/abc".parse()?;
/// let lookup = Endpoint::parse("http://127.0.0.1:9222")?;
/// assert_eq!(lookup.to_string(), "http://127.0.0.1:9222");
/// assert!(Endpoint::parse("https://example.com").is_err());
/// # let _ = direct;
/// # Ok::<(), cdpmux::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// A browser WebSocket URL, used as given.
    WebSocket(String),
    /// `host:port` of a DevTools HTTP server (IPv6 hosts in brackets).
    Http { authority: String },
}

impl Endpoint {
    /// Parses `ws://host:port/...` (used as is) or `http://host:port` (resolved later
    /// through `GET /json/version`).
    ///
    /// Anything else (`wss://`, `https://`, an `http://` address without a port or with
    /// a path, garbage) fails with [`ErrorKind::InvalidInput`].
    pub fn parse(s: &str) -> Result<Endpoint> {
        let input = s.trim();
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid browser endpoint `{input}`: {why}; {ACCEPTED_FORMS}"),
            )
        };
        let url = Url::parse(input).map_err(|e| invalid(&e.to_string()))?;
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(invalid("no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not supported"));
        }
        match url.scheme() {
            "ws" => Ok(Endpoint {
                target: Target::WebSocket(input.to_string()),
            }),
            "http" => {
                // `Url` drops a port equal to the scheme default, so look for `:80` by hand.
                let port = url
                    .port()
                    .or_else(|| authority_of(input).ends_with(":80").then_some(80))
                    .ok_or_else(|| invalid("an http endpoint needs an explicit port"))?;
                if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid(
                        "an http endpoint takes no path (cdpmux asks /json/version itself)",
                    ));
                }
                Ok(Endpoint {
                    target: Target::Http {
                        authority: format!("{host}:{port}"),
                    },
                })
            }
            "wss" | "https" => Err(invalid("TLS endpoints are not supported")),
            other => Err(invalid(&format!("unsupported scheme `{other}`"))),
        }
    }

    /// The browser WebSocket URL: the URL itself for a `ws://` endpoint, else the
    /// `webSocketDebuggerUrl` from `GET /json/version`.
    ///
    /// Errors: [`ErrorKind::BrowserUnavailable`] when nothing listens there or the answer
    /// is not a DevTools one; [`ErrorKind::Timeout`]`(`[`TimeoutKind::Launch`]`)` when
    /// the lookup takes longer than `timeout`.
    pub async fn resolve(&self, timeout: Duration) -> Result<String> {
        match &self.target {
            Target::WebSocket(url) => Ok(url.clone()),
            Target::Http { authority } => {
                match tokio::time::timeout(timeout, fetch_ws_url(authority)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::timeout(
                        TimeoutKind::Launch,
                        format!("looking up http://{authority}/json/version"),
                        timeout,
                    )),
                }
            }
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Endpoint> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::WebSocket(url) => f.write_str(url),
            Target::Http { authority } => write!(f, "http://{authority}"),
        }
    }
}

/// The `host:port` part of `scheme://host:port/...`, as written.
fn authority_of(input: &str) -> &str {
    let rest = input.split_once("://").map_or(input, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

async fn fetch_ws_url(authority: &str) -> Result<String> {
    let origin = format!("http://{authority}/json/version");
    let unavailable = |why: String| {
        Error::new(
            ErrorKind::BrowserUnavailable,
            format!("{origin}: {why}; is a Chromium with --remote-debugging-port listening there?"),
        )
    };

    let mut stream = TcpStream::connect(authority).await.map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "connection refused".to_string()
        } else {
            "cannot connect".to_string()
        };
        unavailable(why).with_source(e)
    })?;
    let request = format!(
        "GET /json/version HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| unavailable("sending the request failed".into()).with_source(e))?;

    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| unavailable("reading the answer failed".into()).with_source(e))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(unavailable(format!(
                "the answer is larger than {MAX_RESPONSE} bytes"
            )));
        }
        // Do not rely on the server closing: stop once the declared body is in.
        if response_complete(&raw) {
            break;
        }
    }

    let body = response_body(&raw).map_err(unavailable)?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| unavailable("the answer is not JSON".into()).with_source(e))?;
    let ws_url = json
        .get("webSocketDebuggerUrl")
        .and_then(|v| v.as_str())
        .ok_or_else(|| unavailable("the answer has no webSocketDebuggerUrl".into()))?;
    match Endpoint::parse(ws_url) {
        Ok(Endpoint {
            target: Target::WebSocket(url),
        }) => Ok(url),
        _ => Err(unavailable(format!(
            "webSocketDebuggerUrl `{ws_url}` is not a ws:// URL"
        ))),
    }
}

/// Byte offset just past the `\r\n\r\n` that ends the header block.
fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The value of header `name` (case-insensitive) in a header block.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// True when the headers and a `Content-Length` body have fully arrived.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = header_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| raw.len() - end >= len)
}

/// Checks the status line and returns the body of a complete HTTP/1.x response.
fn response_body(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let end = header_end(raw).ok_or_else(|| {
        if raw.is_empty() {
            "the server closed the connection without answering".to_string()
        } else {
            "the answer is not an HTTP response".to_string()
        }
    })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("the answer is not an HTTP/1.x response".into());
    }
    match code {
        Some("200") => {}
        Some(code) => return Err(format!("answered HTTP {code}, expected 200")),
        None => return Err("the answer has no status code".into()),
    }
    let body = &raw[end..];
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body).ok_or_else(|| "the chunked body is malformed".into());
    }
    match header(&head, "content-length") {
        Some(value) => {
            let len: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length `{value}`"))?;
            body.get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "the body is shorter than its Content-Length".into())
        }
        None => Ok(body.to_vec()),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers ignored).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        let data = body.get(..size)?;
        out.extend_from_slice(data);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ws_as_is_and_http_with_port() {
        let ws = "ws://127.0.0.1:9222/devtools/browser/0d9c-aa";
        assert_eq!(Endpoint::parse(ws).unwrap().to_string(), ws);
        assert_eq!(
            Endpoint::parse(" http://localhost:9222/ ")
                .unwrap()
                .to_string(),
            "http://localhost:9222"
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:9222").unwrap().to_string(),
            "http://[::1]:9222"
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.2:80").unwrap().to_string(),
            "http://10.0.0.2:80"
        );
    }

    #[test]
    fn rejects_everything_else_naming_the_accepted_forms() {
        for bad in [
            "",
            "garbage",
            "127.0.0.1:9222",
            "wss://127.0.0.1:9222/devtools/browser/x",
            "https://127.0.0.1:9222",
            "http://127.0.0.1",
            "http://127.0.0.1:9222/json/version",
            "http://user:pw@127.0.0.1:9222",
            "ftp://127.0.0.1:21",
            "ws://",
            "http://:9222",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(err.message().contains("http://host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn reads_bodies_by_length_and_by_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert!(response_complete(plain));
        assert_eq!(response_body(plain).unwrap(), b"{}");
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}"
        ));

        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\n{\"\r\n3;x=y\r\na\":\r\n1\r\n1\r\n0\r\n\r\n";
        assert_eq!(response_body(chunked).unwrap(), b"{\"a\":1");
        assert!(dechunk(b"zz\r\n").is_none());
        assert!(dechunk(b"5\r\nab").is_none());
    }

    #[test]
    fn rejects_non_200_and_non_http() {
        let err = response_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err();
        assert!(err.contains("404"), "{err}");
        assert!(response_body(b"").is_err());
        assert!(response_body(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(response_body(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(response_body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }

    /// Properties of the `/json/version` reader, run with every `cargo test`.
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// `body` in chunked encoding, cut at `cuts` (offsets, any order), with optional
        /// chunk extensions and hex digits in either case.
        fn chunked(body: &[u8], cuts: &[usize], ext: bool, upper: bool) -> Vec<u8> {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            bounds.extend([0, body.len()]);
            bounds.sort_unstable();
            bounds.dedup();
            let mut out = Vec::new();
            for pair in bounds.windows(2) {
                let piece = &body[pair[0]..pair[1]];
                let size = if upper {
                    format!("{:X}", piece.len())
                } else {
                    format!("{:x}", piece.len())
                };
                out.extend_from_slice(size.as_bytes());
                if ext {
                    out.extend_from_slice(b";name=value");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }

        proptest! {
            #[test]
            fn a_valid_chunked_body_round_trips(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
                ext: bool,
                upper: bool,
            ) {
                let encoded = chunked(&body, &cuts, ext, upper);
                prop_assert_eq!(dechunk(&encoded), Some(body.clone()));
                let mut response =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                response.extend_from_slice(&encoded);
                prop_assert_eq!(response_body(&response), Ok(body));
            }

            #[test]
            fn a_content_length_body_round_trips(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                trailing in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut response =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                        .into_bytes();
                response.extend_from_slice(&body);
                prop_assert!(response_complete(&response));
                response.extend_from_slice(&trailing);
                prop_assert_eq!(response_body(&response), Ok(body));
            }

            #[test]
            fn no_input_panics_the_reader(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = response_complete(&raw);
                let _ = response_body(&raw);
                let _ = dechunk(&raw);
            }

            #[test]
            fn no_head_panics_the_reader(
                head in "[ -~\r\n]{0,200}",
                body in proptest::collection::vec(any::<u8>(), 0..128),
            ) {
                // Printable heads reach the header and chunk parsers far more often
                // than random bytes do.
                let mut raw = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n").into_bytes();
                raw.extend_from_slice(&body);
                let _ = response_complete(&raw);
                let _ = response_body(&raw);
            }

            #[test]
            fn truncated_chunked_bodies_are_refused(
                body in proptest::collection::vec(any::<u8>(), 1..512),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
                keep in any::<proptest::sample::Index>(),
            ) {
                let encoded = chunked(&body, &cuts, false, false);
                // Anything short of the final `0\r\n` chunk is incomplete.
                let cut = keep.index(encoded.len() - 5);
                prop_assert_eq!(dechunk(&encoded[..cut]), None);
            }
        }
    }
}
