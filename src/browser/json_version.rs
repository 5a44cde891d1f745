//! The `/json/version` lookup: one `GET` to a DevTools HTTP server (plain or TLS) that
//! answers where its browser WebSocket is.
//!
//! A deliberately tiny HTTP/1.1 client (one request, `Connection: close`), so no HTTP
//! client crate is needed for one request per connect. The response parsers are pure
//! and property-tested below.
//!
//! Never follows redirects and never reads more than `MAX_RESPONSE` bytes.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};

/// The most we read of a `/json/version` answer; real ones are well under 1 KiB.
const MAX_RESPONSE: usize = 64 * 1024;

/// One lookup: where to ask, how, and with which extra headers.
pub(super) struct Lookup<'a> {
    /// `host:port` as written in the endpoint (IPv6 hosts in brackets).
    pub(super) authority: &'a str,
    /// The host alone, for TLS name checks.
    pub(super) host: &'a str,
    /// `Some` for `https://`: the TLS configuration to use.
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    /// `?token=...` and the like, passed on as given (with its `?`), or empty.
    pub(super) query: &'a str,
    pub(super) headers: &'a [(String, String)],
}

impl Lookup<'_> {
    fn origin(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/json/version", self.authority)
    }

    /// The `webSocketDebuggerUrl` the server answers, as it wrote it.
    pub(super) async fn ws_url(&self) -> Result<String> {
        let origin = self.origin();
        let unavailable = |why: String| {
            Error::new(
                ErrorKind::BrowserUnavailable,
                format!(
                    "{origin}: {why}; is a Chromium with --remote-debugging-port listening there?"
                ),
            )
        };
        let tcp = TcpStream::connect(self.authority).await.map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused".to_string()
            } else {
                "cannot connect".to_string()
            };
            unavailable(why).with_source(e)
        })?;
        let mut request = format!(
            "GET /json/version{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             Connection: close\r\n",
            self.query, self.authority
        );
        for (name, value) in self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let raw = match &self.tls {
            Some(config) => {
                let stream = crate::remote::tls_connect(tcp, self.host, config.clone()).await?;
                exchange(stream, &request).await
            }
            None => exchange(tcp, &request).await,
        }
        .map_err(|(why, e)| match e {
            Some(e) => unavailable(why).with_source(e),
            None => unavailable(why),
        })?;

        let body = response_body(&raw).map_err(unavailable)?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unavailable("the answer is not JSON".into()).with_source(e))?;
        json.get("webSocketDebuggerUrl")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| unavailable("the answer has no webSocketDebuggerUrl".into()))
    }
}

type ExchangeError = (String, Option<std::io::Error>);

/// Sends `request` and reads the answer, up to `MAX_RESPONSE` bytes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::result::Result<Vec<u8>, ExchangeError> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ("sending the request failed".to_string(), Some(e)))?;
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify: what arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => 0,
            Err(e) => return Err(("reading the answer failed".to_string(), Some(e))),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err((
                format!("the answer is larger than {MAX_RESPONSE} bytes"),
                None,
            ));
        }
        // Do not rely on the server closing: stop once the declared body is in.
        if response_complete(&raw) {
            break;
        }
    }
    Ok(raw)
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
