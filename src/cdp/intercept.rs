//! Request interception: a handler that decides, for each request a page is about to
//! send, whether it goes on (changed or not), is answered here, or fails.
//!
//! Owns: [`Interceptor`] (the handler and its deadline), what it is given
//! ([`InterceptedRequest`]) and what it answers ([`Decision`], [`FailReason`]), and the
//! installation of one interceptor on one page: each paused request is decided by a task
//! on the page's thread (`spawn_local`, no thread, no lock), and answered with the
//! `Fetch` command its decision names.
//! Never: sees a request the page's resource blocking fails (`routing` fails it first),
//! or leaves a request paused. A handler that does not answer within its deadline, a
//! decision Chromium refuses, and an interceptor removed while requests wait on it all
//! end in `Fetch.continueRequest` for the request, unchanged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use super::connection::Shared;
use super::protocol::SessionSlot;
use super::routing::PausedSink;

/// A boxed future that stays on the page's thread.
type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// A request a page paused before sending it (`Fetch.requestPaused`, request stage).
#[derive(Debug, Clone)]
pub struct InterceptedRequest {
    request_id: String,
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    post_data: Option<String>,
    resource_type: String,
}

impl InterceptedRequest {
    /// The request's URL (with its fragment, if any).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP method (`GET`, `POST`...).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request's headers as Chromium would send them, in its order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The value of header `name` (any case), if the request has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request's body, when it has one Chromium shows as text.
    pub fn post_data(&self) -> Option<&str> {
        self.post_data.as_deref()
    }

    /// CDP's `Network.ResourceType` of the request: `Document`, `Image`, `Script`,
    /// `XHR`, `Fetch`...
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// CDP's id of this paused request (`Fetch.RequestId`).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Reads a `Fetch.requestPaused` event's params; `None` when they are not CDP's.
    pub(crate) fn parse(params: &str) -> Option<InterceptedRequest> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Paused {
            request_id: String,
            request: Request,
            #[serde(default)]
            resource_type: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Request {
            url: String,
            #[serde(default)]
            url_fragment: Option<String>,
            method: String,
            #[serde(default)]
            headers: serde_json::Map<String, Value>,
            #[serde(default)]
            post_data: Option<String>,
        }
        let p: Paused = serde_json::from_str(params).ok()?;
        let headers = p
            .request
            .headers
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect();
        Some(InterceptedRequest {
            request_id: p.request_id,
            url: p.request.url + p.request.url_fragment.as_deref().unwrap_or(""),
            method: p.request.method,
            headers,
            post_data: p.request.post_data,
            resource_type: p.resource_type,
        })
    }
}

/// Why a failed request failed, as the page sees it (CDP's `Network.ErrorReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// `net::ERR_FAILED`.
    Failed,
    /// `net::ERR_ABORTED`.
    Aborted,
    /// `net::ERR_TIMED_OUT`.
    TimedOut,
    /// `net::ERR_ACCESS_DENIED`.
    AccessDenied,
    /// `net::ERR_CONNECTION_CLOSED`.
    ConnectionClosed,
    /// `net::ERR_CONNECTION_RESET`.
    ConnectionReset,
    /// `net::ERR_CONNECTION_REFUSED`.
    ConnectionRefused,
    /// `net::ERR_CONNECTION_ABORTED`.
    ConnectionAborted,
    /// `net::ERR_CONNECTION_FAILED`.
    ConnectionFailed,
    /// `net::ERR_NAME_NOT_RESOLVED`.
    NameNotResolved,
    /// `net::ERR_INTERNET_DISCONNECTED`.
    InternetDisconnected,
    /// `net::ERR_ADDRESS_UNREACHABLE`.
    AddressUnreachable,
    /// `net::ERR_BLOCKED_BY_CLIENT`.
    BlockedByClient,
    /// `net::ERR_BLOCKED_BY_RESPONSE`.
    BlockedByResponse,
}

impl FailReason {
    /// CDP's name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Failed => "Failed",
            FailReason::Aborted => "Aborted",
            FailReason::TimedOut => "TimedOut",
            FailReason::AccessDenied => "AccessDenied",
            FailReason::ConnectionClosed => "ConnectionClosed",
            FailReason::ConnectionReset => "ConnectionReset",
            FailReason::ConnectionRefused => "ConnectionRefused",
            FailReason::ConnectionAborted => "ConnectionAborted",
            FailReason::ConnectionFailed => "ConnectionFailed",
            FailReason::NameNotResolved => "NameNotResolved",
            FailReason::InternetDisconnected => "InternetDisconnected",
            FailReason::AddressUnreachable => "AddressUnreachable",
            FailReason::BlockedByClient => "BlockedByClient",
            FailReason::BlockedByResponse => "BlockedByResponse",
        }
    }
}

/// What an [`Interceptor`] decides for one paused request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Send the request, with any of its URL, headers (all of them, replacing the
    /// request's) or body changed; `None` keeps the request's own. A changed URL must
    /// keep the scheme; Chromium does not follow it as a redirect.
    Continue {
        /// Another URL.
        url: Option<String>,
        /// Every header the request is sent with, instead of its own.
        headers: Option<Vec<(String, String)>>,
        /// Another body.
        post_data: Option<Vec<u8>>,
    },
    /// Answer the request here: it never reaches the network.
    Fulfill {
        /// The HTTP status (200, 404...).
        status: u16,
        /// The response headers.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Vec<u8>,
    },
    /// Fail the request, as the network would have.
    Fail(FailReason),
}

impl Decision {
    /// Send the request as it is.
    pub fn proceed() -> Decision {
        Decision::Continue {
            url: None,
            headers: None,
            post_data: None,
        }
    }

    /// Answer with `status` and `body`, typed by a `Content-Type` header.
    pub fn fulfill(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Decision {
        Decision::Fulfill {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// The `Fetch` command that carries this decision out for `request_id`.
    pub(crate) fn command(&self, request_id: &str) -> (&'static str, Value) {
        fn pairs(headers: &[(String, String)]) -> Value {
            headers
                .iter()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect()
        }
        match self {
            Decision::Continue {
                url,
                headers,
                post_data,
            } => {
                let mut params = json!({ "requestId": request_id });
                if let Some(url) = url {
                    params["url"] = url.as_str().into();
                }
                if let Some(headers) = headers {
                    params["headers"] = pairs(headers);
                }
                if let Some(body) = post_data {
                    params["postData"] = base64(body).into();
                }
                ("Fetch.continueRequest", params)
            }
            Decision::Fulfill {
                status,
                headers,
                body,
            } => (
                "Fetch.fulfillRequest",
                json!({
                    "requestId": request_id,
                    "responseCode": status,
                    "responseHeaders": pairs(headers),
                    "body": base64(body),
                }),
            ),
            Decision::Fail(reason) => (
                "Fetch.failRequest",
                json!({ "requestId": request_id, "errorReason": reason.as_str() }),
            ),
        }
    }
}

/// Standard base64 with padding, as CDP's binary fields take it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The handler's erased type: one decision per paused request, on the page's thread.
trait Decide: Send + Sync {
    fn decide(&self, request: InterceptedRequest) -> LocalFuture<'_, Decision>;
}

impl<F> Decide for F
where
    F: AsyncFn(InterceptedRequest) -> Decision + Send + Sync,
{
    fn decide(&self, request: InterceptedRequest) -> LocalFuture<'_, Decision> {
        Box::pin(self(request))
    }
}

/// A request handler a page runs for every request it is about to send (documents,
/// images, scripts, XHR...), after its resource blocking: a blocked request never
/// reaches it.
///
/// Install it for one job with [`Page::intercept`](super::Page::intercept), or on every
/// page of a pool with [`PageOptions::intercept`](super::PageOptions::intercept). The
/// handler is async; it runs on the thread of the page (a pool's shard), one task per
/// request, so its future need not be `Send`. A request it does not answer within its
/// [`deadline`](Interceptor::deadline) is sent unchanged, and counted in
/// [`Counters::intercept_timeouts`](crate::metrics::Counters): a slow handler can slow
/// a page, never hang it.
///
/// Intercepting pauses every request of the page in the browser until its handler
/// answers (a round trip per request): it costs more than blocking, which needs none
/// for most requests. Use [`Blocking`](super::Blocking) to drop requests by type or URL.
///
/// ```no_run
/// use cdpmux::cdp::{Decision, FailReason, Interceptor};
/// let interceptor = Interceptor::new(async |request| {
///     if request.url().ends_with("/robots.txt") {
///         Decision::fulfill(200, "text/plain", "User-agent: *")
///     } else if request.resource_type() == "Image" {
///         Decision::Fail(FailReason::BlockedByClient)
///     } else {
///         Decision::proceed()
///     }
/// });
/// ```
#[derive(Clone)]
pub struct Interceptor {
    decide: Arc<dyn Decide>,
    deadline: Duration,
}

impl Interceptor {
    /// How long a handler has to answer one request unless set otherwise: 10 s.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

    /// An interceptor calling `handler` for each paused request.
    pub fn new<F>(handler: F) -> Interceptor
    where
        F: AsyncFn(InterceptedRequest) -> Decision + Send + Sync + 'static,
    {
        Interceptor {
            decide: Arc::new(handler),
            deadline: Self::DEFAULT_DEADLINE,
        }
    }

    /// Sets how long the handler has to answer one request; past it the request is sent
    /// unchanged (and counted). Default [`DEFAULT_DEADLINE`](Self::DEFAULT_DEADLINE).
    pub fn deadline(mut self, deadline: Duration) -> Interceptor {
        self.deadline = deadline;
        self
    }

    /// The handler's deadline per request.
    pub fn answer_deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptor")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The `Fetch.enable` an interceptor needs: every request, paused before it is sent;
/// on a page answering its proxy (`answers_proxy`), with challenges reported too (an
/// enable without them would leave the proxy's `407` to the page).
pub(crate) fn pause_everything(answers_proxy: bool) -> (&'static str, Value) {
    let params = if answers_proxy {
        super::proxy_auth::fetch_enable_params()
    } else {
        json!({ "patterns": [{ "urlPattern": "*", "requestStage": "Request" }] })
    };
    ("Fetch.enable", params)
}

/// Requests a page's interceptor has yet to answer: each with the task deciding it.
type Outstanding = Rc<RefCell<HashMap<String, AbortHandle>>>;

/// One interceptor installed on one page.
pub(crate) struct Installed {
    /// The page's default interceptor (its `PageOptions`), not a job's.
    pub(crate) is_default: bool,
    outstanding: Outstanding,
    conn: Weak<Shared>,
    slot: SessionSlot,
}

impl Installed {
    /// What the connection calls with each paused request's params for `interceptor`
    /// on session `slot`, and the installation that can end it.
    pub(crate) fn new(
        interceptor: &Interceptor,
        conn: &Rc<Shared>,
        slot: SessionSlot,
        is_default: bool,
    ) -> (PausedSink, Installed) {
        let outstanding = Outstanding::default();
        let weak = Rc::downgrade(conn);
        let sink = {
            let outstanding = outstanding.clone();
            let weak = weak.clone();
            let interceptor = interceptor.clone();
            move |params: &str| paused(&interceptor, &weak, slot, &outstanding, params)
        };
        let installed = Installed {
            is_default,
            outstanding,
            conn: weak,
            slot,
        };
        (Rc::new(sink), installed)
    }

    /// Ends the installation: every request still waiting on its handler is sent
    /// unchanged, and its handler's task dropped. (The caller has already taken the
    /// interceptor off the session, so nothing new arrives here.)
    pub(crate) fn end(self) {
        let waiting: Vec<(String, AbortHandle)> = self.outstanding.borrow_mut().drain().collect();
        let conn = self.conn.upgrade();
        for (request_id, task) in waiting {
            task.abort();
            if let Some(conn) = &conn {
                let (method, params) = Decision::proceed().command(&request_id);
                let _ = conn.enqueue(Some(self.slot), method.into(), &params, None);
            }
        }
    }
}

/// One request paused for `interceptor`: a task decides it, within the deadline.
fn paused(
    interceptor: &Interceptor,
    conn: &Weak<Shared>,
    slot: SessionSlot,
    outstanding: &Outstanding,
    params: &str,
) {
    let Some(request) = InterceptedRequest::parse(params) else {
        tracing::warn!("a Fetch.requestPaused event cdpmux could not read");
        let id = serde_json::from_str::<Value>(params)
            .ok()
            .and_then(|v| v["requestId"].as_str().map(str::to_owned));
        if let (Some(id), Some(conn)) = (id, conn.upgrade()) {
            let (method, params) = Decision::proceed().command(&id);
            let _ = conn.enqueue(Some(slot), method.into(), &params, None);
        }
        return;
    };
    let id = request.request_id.clone();
    let interceptor = interceptor.clone();
    let conn = conn.clone();
    let waiting = outstanding.clone();
    let key = id.clone();
    let task = tokio::task::spawn_local(async move {
        // A handler that panics is one that never answers, not one that hangs the page.
        let deciding = AssertUnwindSafe(interceptor.decide.decide(request)).catch_unwind();
        let decided = match tokio::time::timeout(interceptor.deadline, deciding).await {
            Ok(Ok(decision)) => Some(decision),
            Ok(Err(_)) => {
                tracing::warn!(request = %id, "an interceptor panicked; continuing");
                Some(Decision::proceed())
            }
            Err(_) => None,
        };
        // Whoever takes the request out of `outstanding` answers it, once.
        let Some(conn) = conn.upgrade() else { return };
        if waiting.borrow_mut().remove(&id).is_none() {
            return;
        }
        let decision = decided.unwrap_or_else(|| {
            conn.note_intercept_timeout();
            tracing::debug!(request = %id, "an interceptor missed its deadline; continuing");
            Decision::proceed()
        });
        let (method, params) = decision.command(&id);
        let timeout = conn.command_timeout();
        let answered = conn
            .request(Some(slot), method.into(), &params, timeout)
            .await;
        if let Err(e) = answered {
            if e.kind() == crate::error::ErrorKind::Protocol {
                // Chromium refused the decision (a bad header, a bad URL): the request
                // must not stay paused.
                tracing::warn!(error = %e, "an interceptor's decision was refused; continuing");
                let (method, params) = Decision::proceed().command(&id);
                let _ = conn.enqueue(Some(slot), method.into(), &params, None);
            }
        }
    });
    outstanding.borrow_mut().insert(key, task.abort_handle());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn a_paused_request_is_read_with_its_headers_and_fragment() {
        let params = r##"{"requestId":"interception-job-4.0","frameId":"F",
            "resourceType":"Document","request":{"url":"http://a.test/x","urlFragment":"#top",
            "method":"POST","headers":{"Accept":"text/html","X-N":"1"},"postData":"a=1",
            "initialPriority":"VeryHigh","referrerPolicy":"no-referrer"}}"##;
        let r = InterceptedRequest::parse(params).unwrap();
        assert_eq!(r.request_id(), "interception-job-4.0");
        assert_eq!(r.url(), "http://a.test/x#top");
        assert_eq!(r.method(), "POST");
        assert_eq!(r.header("accept"), Some("text/html"));
        assert_eq!(r.headers().len(), 2);
        assert_eq!(r.post_data(), Some("a=1"));
        assert_eq!(r.resource_type(), "Document");
        assert!(InterceptedRequest::parse(r#"{"requestId":"1"}"#).is_none());
    }

    #[test]
    fn each_decision_is_its_fetch_command() {
        let (m, p) = Decision::proceed().command("R");
        assert_eq!(
            (m, p),
            ("Fetch.continueRequest", json!({ "requestId": "R" }))
        );
        let changed = Decision::Continue {
            url: Some("http://b.test/".into()),
            headers: Some(vec![("X-Crawler".into(), "cdpmux".into())]),
            post_data: Some(b"foo".to_vec()),
        };
        let (m, p) = changed.command("R");
        assert_eq!(m, "Fetch.continueRequest");
        assert_eq!(p["url"], "http://b.test/");
        assert_eq!(
            p["headers"],
            json!([{ "name": "X-Crawler", "value": "cdpmux" }])
        );
        assert_eq!(p["postData"], "Zm9v");
        let (m, p) = Decision::fulfill(404, "text/html", "<p>gone</p>").command("R");
        assert_eq!(m, "Fetch.fulfillRequest");
        assert_eq!(p["responseCode"], 404);
        assert_eq!(p["body"], base64(b"<p>gone</p>"));
        assert_eq!(p["responseHeaders"][0]["name"], "Content-Type");
        let (m, p) = Decision::Fail(FailReason::ConnectionRefused).command("R");
        assert_eq!(m, "Fetch.failRequest");
        assert_eq!(p["errorReason"], "ConnectionRefused");
    }

    #[test]
    fn a_page_answering_its_proxy_pauses_everything_with_challenges_reported() {
        let (m, plain) = pause_everything(false);
        assert_eq!(m, "Fetch.enable");
        assert!(plain.get("handleAuthRequests").is_none());
        let (m, proxied) = pause_everything(true);
        assert_eq!(m, "Fetch.enable");
        assert_eq!(proxied["handleAuthRequests"], true);
        assert_eq!(proxied["patterns"], json!([{ "urlPattern": "*" }]));
    }
}
