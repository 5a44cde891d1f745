//! Addresses of browsers cdpmux did not launch: a DevTools WebSocket URL (`ws://`,
//! `wss://`), or a DevTools HTTP address (`http://`, `https://`) whose WebSocket URL is
//! looked up at `/json/version` on every connect (a restarted browser has a new id);
//! with the headers, TLS trust and page capacity that go with it.
//!
//! Owns parsing and checking what a user wrote, and turning it into something to dial.
//! Never prints a header value or a query value (tokens): see `remote::redact`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::json_version::Lookup;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::remote::{redact, Dial};

const ACCEPTED_FORMS: &str = "expected `ws://host:port/devtools/browser/<id>` (or wss://) or \
     `http://host:port` (or https://, resolved through /json/version)";

/// Headers the WebSocket handshake or the lookup set themselves.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
];

/// Where to find a running browser's DevTools endpoint, and how to reach it.
///
/// `ws://` and `wss://` URLs are used as given. `http://host:port` and
/// `https://host:port` are looked up at `/json/version` on every (re)connect, so a
/// browser that restarted (and so has a new id) is found again. A query (`?token=...`)
/// is passed on to the lookup and to the WebSocket URL; [`header`](Self::header) adds
/// headers to both. Over TLS the [default roots](crate::browser::tls_client_config) are
/// trusted unless [`tls_config`](Self::tls_config) says otherwise.
///
/// ```
/// use cdpmux::browser::Endpoint;
///
/// let direct: Endpoint = "ws://127.0.0.1:9222/devtools/browser/abc".parse()?;
/// let lookup = Endpoint::parse("http://127.0.0.1:9222")?;
/// assert_eq!(lookup.to_string(), "http://127.0.0.1:9222");
/// let hosted = Endpoint::parse("wss://fleet.example:443/chromium?token=s3cret")?
///     .header("Authorization", "Bearer s3cret")?
///     .capacity(20);
/// assert_eq!(hosted.to_string(), "wss://fleet.example:443/chromium?token=***");
/// assert!(Endpoint::parse("ftp://example.com").is_err());
/// # let _ = direct;
/// # Ok::<(), cdpmux::Error>(())
/// ```
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
    headers: Vec<(String, String)>,
    capacity: Option<usize>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// A browser WebSocket URL (`ws://` or `wss://`), used as given.
    WebSocket(String),
    /// A DevTools HTTP server.
    Http {
        /// `https://`.
        tls: bool,
        /// The host alone (IPv6 in brackets).
        host: String,
        /// `host:port`.
        authority: String,
        /// `?...` as written, or empty.
        query: String,
    },
}

impl Endpoint {
    /// Parses `ws://` / `wss://host:port/...` (used as is) or `http://` /
    /// `https://host:port` (resolved on each connect through `GET /json/version`).
    ///
    /// Anything else (another scheme, an `http(s)://` address without a port or with a
    /// path, credentials in the URL, garbage) fails with [`ErrorKind::InvalidInput`].
    pub fn parse(s: &str) -> Result<Endpoint> {
        let input = s.trim();
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid browser endpoint `{}`: {why}; {ACCEPTED_FORMS}",
                    redact(input)
                ),
            )
        };
        let url = Url::parse(input).map_err(|e| invalid(&e.to_string()))?;
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(invalid("no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not supported (use Endpoint::header)",
            ));
        }
        let target = match url.scheme() {
            "ws" | "wss" => Target::WebSocket(input.to_string()),
            scheme @ ("http" | "https") => {
                let tls = scheme == "https";
                let default_port = if tls { ":443" } else { ":80" };
                // `Url` drops a port equal to the scheme default, so look for it by hand.
                let port = url
                    .port()
                    .or_else(|| {
                        authority_of(input)
                            .ends_with(default_port)
                            .then(|| url.port_or_known_default())
                            .flatten()
                    })
                    .ok_or_else(|| invalid("an http(s) endpoint needs an explicit port"))?;
                if url.path() != "/" || url.fragment().is_some() {
                    return Err(invalid(
                        "an http(s) endpoint takes no path (cdpmux asks /json/version itself)",
                    ));
                }
                Target::Http {
                    tls,
                    host: host.to_owned(),
                    authority: format!("{host}:{port}"),
                    query: url.query().map(|q| format!("?{q}")).unwrap_or_default(),
                }
            }
            other => return Err(invalid(&format!("unsupported scheme `{other}`"))),
        };
        Ok(Endpoint {
            target,
            headers: Vec::new(),
            capacity: None,
            tls: None,
        })
    }

    /// Adds a header to the `/json/version` lookup and the WebSocket handshake (an
    /// `Authorization`, an API key). May be called more than once.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a name that is not an HTTP token, a
    /// value with control characters, or a header the handshake sets itself (`Host`,
    /// `Connection`, `Upgrade`, `Sec-WebSocket-*`, ...).
    pub fn header(mut self, name: &str, value: &str) -> Result<Endpoint> {
        let invalid = |why: String| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("header `{name}` for endpoint {self}: {why}"),
            )
        };
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(is_tchar) {
            return Err(invalid("the name is not an HTTP header name".into()));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
            return Err(invalid("the handshake sets this header itself".into()));
        }
        if value
            .chars()
            .any(|c| (c.is_control() && c != '\t') || !c.is_ascii())
        {
            return Err(invalid(
                "the value must be printable ASCII (no line breaks)".into(),
            ));
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// The most pages the pool keeps open on this browser at once (default: no limit).
    ///
    /// New pages go to the browser with the most free capacity; a browser without a
    /// capacity counts as unlimited. Each shard gets a fixed share (`pages` split over
    /// the shards), so give at least one page per shard; the builder refuses 0.
    pub fn capacity(mut self, pages: usize) -> Endpoint {
        self.capacity = Some(pages);
        self
    }

    /// Trusts what `config` trusts (and presents its client certificate, if any) for
    /// `wss://` and `https://`, instead of the default Mozilla roots. Build one with
    /// [`tls_client_config`](crate::browser::tls_client_config) and a
    /// [`RootCertStore`](rustls::RootCertStore) holding your CA.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Endpoint {
        self.tls = Some(config);
        self
    }

    /// The page capacity set with [`capacity`](Self::capacity).
    pub fn page_capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// The browser WebSocket URL: the URL itself for a `ws(s)://` endpoint, else the
    /// `webSocketDebuggerUrl` from `GET /json/version` (`wss://` when looked up over
    /// `https://`, with the endpoint's query added when the answer has none).
    ///
    /// Errors: [`ErrorKind::BrowserUnavailable`] when nothing listens there or the answer
    /// is not a DevTools one; [`ErrorKind::Timeout`]`(`[`TimeoutKind::Launch`]`)` when
    /// the lookup takes longer than `timeout`.
    ///
    /// Cancel safe: dropping the future drops the lookup's connection.
    pub async fn resolve(&self, timeout: Duration) -> Result<String> {
        let (tls, host, authority, query) = match &self.target {
            Target::WebSocket(url) => return Ok(url.clone()),
            Target::Http {
                tls,
                host,
                authority,
                query,
            } => (*tls, host, authority, query),
        };
        let lookup = Lookup {
            authority,
            host,
            tls: tls.then(|| {
                self.tls
                    .clone()
                    .unwrap_or_else(crate::remote::default_config)
            }),
            query,
            headers: &self.headers,
        };
        let reported = match tokio::time::timeout(timeout, lookup.ws_url()).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::timeout(
                    TimeoutKind::Launch,
                    format!("looking up {self}/json/version"),
                    timeout,
                ))
            }
        };
        ws_url_from(&reported, tls, query).map_err(|why| {
            Error::new(
                ErrorKind::BrowserUnavailable,
                format!(
                    "{self}/json/version answered webSocketDebuggerUrl `{}`: {why}",
                    redact(&reported)
                ),
            )
        })
    }

    /// What to dial for this endpoint once resolved to `url`.
    pub(crate) fn dial(&self, url: String) -> Dial {
        Dial {
            url,
            headers: self.headers.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// The WebSocket URL to dial from what `/json/version` reported: over `https://` the
/// socket is TLS too (Chromium behind a TLS proxy reports `ws://`), and the endpoint's
/// query (a token) goes along unless the answer carries its own.
fn ws_url_from(reported: &str, tls: bool, query: &str) -> std::result::Result<String, String> {
    let mut url = Url::parse(reported).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err("not a ws:// or wss:// URL".into());
    }
    let rescheme = tls && url.scheme() == "ws";
    let add_query = url.query().is_none() && !query.is_empty();
    if !rescheme && !add_query {
        return Ok(reported.to_owned());
    }
    if rescheme {
        url.set_scheme("wss")
            .map_err(|()| "cannot switch it to wss://".to_string())?;
    }
    if add_query {
        url.set_query(Some(&query[1..]));
    }
    Ok(url.to_string())
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
            Target::WebSocket(url) => f.write_str(&redact(url)),
            Target::Http {
                tls,
                authority,
                query,
                ..
            } => {
                let scheme = if *tls { "https" } else { "http" };
                write!(f, "{}", redact(&format!("{scheme}://{authority}{query}")))
            }
        }
    }
}

/// Header values and query values are secrets: only their names are shown.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Endpoint")
            .field("address", &self.to_string())
            .field("headers", &names)
            .field("capacity", &self.capacity)
            .field("custom_tls", &self.tls.is_some())
            .finish()
    }
}

/// Two endpoints are equal when they reach the same address the same way (TLS
/// configurations compare by identity).
impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        self.target == other.target
            && self.headers == other.headers
            && self.capacity == other.capacity
            && match (&self.tls, &other.tls) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Endpoint {}

impl Hash for Endpoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.target.hash(state);
        self.headers.hash(state);
        self.capacity.hash(state);
    }
}

/// The `host:port` part of `scheme://host:port/...`, as written.
fn authority_of(input: &str) -> &str {
    let rest = input.split_once("://").map_or(input, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
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
        assert_eq!(
            Endpoint::parse("https://fleet.example:443?token=abc")
                .unwrap()
                .to_string(),
            "https://fleet.example:443?token=***"
        );
        let wss = "wss://127.0.0.1:9443/devtools/browser/x";
        assert_eq!(Endpoint::parse(wss).unwrap().to_string(), wss);
    }

    #[test]
    fn rejects_everything_else_naming_the_accepted_forms() {
        for bad in [
            "",
            "garbage",
            "127.0.0.1:9222",
            "https://127.0.0.1",
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
    fn headers_are_checked_and_never_shown() {
        let e = Endpoint::parse("ws://h:1/x").unwrap();
        let ok = e.clone().header("Authorization", "Bearer s3cret").unwrap();
        assert!(!format!("{ok:?} {ok}").contains("s3cret"));
        for (name, value) in [
            ("", "v"),
            ("Bad Name", "v"),
            ("X-Ok", "line\r\nInjected: 1"),
            ("X-Ok", "caf\u{e9}"),
            ("Host", "elsewhere"),
            ("sec-websocket-key", "x"),
            ("Upgrade", "h2c"),
        ] {
            let err = e.clone().header(name, value).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name:?}: {value:?}");
        }
    }

    #[test]
    fn the_looked_up_url_follows_the_endpoint() {
        let reported = "ws://127.0.0.1:9443/devtools/browser/id";
        assert_eq!(ws_url_from(reported, false, "").unwrap(), reported);
        assert_eq!(
            ws_url_from(reported, true, "").unwrap(),
            "wss://127.0.0.1:9443/devtools/browser/id"
        );
        assert_eq!(
            ws_url_from(reported, true, "?token=t").unwrap(),
            "wss://127.0.0.1:9443/devtools/browser/id?token=t"
        );
        // The browser's own query wins.
        let own = "wss://h:1/devtools/browser/id?token=fresh";
        assert_eq!(ws_url_from(own, true, "?token=t").unwrap(), own);
        assert!(ws_url_from("http://h:1/x", false, "").is_err());
        assert!(ws_url_from("nonsense", false, "").is_err());
    }
}
