//! One navigation, matched to itself: what `goto` waits for ([`WaitUntil`]), how
//! ([`GotoOptions`]), and what it returns ([`Navigation`]: final URL, status, headers,
//! MIME type, redirects).
//!
//! Owns: the pure [`Tracker`] that reads a page's events and decides when *this*
//! navigation (its `loaderId`, the main frame) has reached its condition, and the thin
//! async [`Page::goto_with`] around it. Never: takes an event without its frame and
//! loader into account (a `Page.loadEventFired` names neither, so it is never used: on a
//! reused page it may belong to an earlier navigation still in flight).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::protocol::Event;
use super::session::Page;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};

/// When [`Page::goto_with`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitUntil {
    /// The response is committed: the new document replaced the old one. Its
    /// subresources may not have started.
    Commit,
    /// The document is parsed (`DOMContentLoaded`); images, fonts and late scripts may
    /// still load.
    DomContentLoaded,
    /// The `load` event: every subresource the parser found is done. The default.
    #[default]
    Load,
    /// After `load`, no more than `max_inflight` of the page's own requests (those of
    /// its document, scripts' fetches included) were in flight for `idle`. A page that
    /// polls for ever never gets there: give it a bound with
    /// [`GotoOptions::timeout`].
    NetworkIdle {
        /// How long the page must stay quiet.
        idle: Duration,
        /// Requests that may stay in flight (long polls, analytics beacons).
        max_inflight: usize,
    },
}

impl WaitUntil {
    /// `NetworkIdle` with 500 ms of quiet and nothing in flight.
    pub fn network_idle() -> Self {
        WaitUntil::NetworkIdle {
            idle: Duration::from_millis(500),
            max_inflight: 0,
        }
    }
}

impl std::str::FromStr for WaitUntil {
    type Err = Error;

    /// Parses `commit`, `domcontentloaded`, `load` or `networkidle` (500 ms, nothing in
    /// flight), in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "commit" => Ok(WaitUntil::Commit),
            "domcontentloaded" => Ok(WaitUntil::DomContentLoaded),
            "load" => Ok(WaitUntil::Load),
            "networkidle" => Ok(WaitUntil::network_idle()),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "unknown wait-until {s:?}: use commit, domcontentloaded, load or networkidle"
                ),
            )),
        }
    }
}

/// How [`Page::goto_with`] navigates. `GotoOptions::default()` is what
/// [`Page::goto`] does: wait for `load`, follow no client-side redirect, the page's
/// command deadline.
#[derive(Debug, Clone, Default)]
pub struct GotoOptions {
    wait_until: WaitUntil,
    client_redirects: u32,
    client_redirect_window: Duration,
    timeout: Option<Duration>,
}

impl GotoOptions {
    /// The defaults: see [`GotoOptions`].
    pub fn new() -> Self {
        GotoOptions::default()
    }

    /// When to return.
    pub fn wait_until(mut self, wait_until: WaitUntil) -> Self {
        self.wait_until = wait_until;
        self
    }

    /// Follows up to `max` client-side redirects (a meta refresh, a script that sets
    /// `location`): after each navigation reaches its condition, waits up to `window`
    /// for the main frame to start another one, then waits for that one instead; one that
    /// starts earlier is followed at once. Each hop is recorded in
    /// [`Navigation::redirects`] with no status; one that Chromium starts twice (it
    /// does with a meta refresh under load) is one hop. A redirect scheduled later than
    /// `window` is not followed.
    ///
    /// Without it (and past `max`), a navigation that another one replaces before it
    /// reaches its condition returns when the next one starts, with what it got (its
    /// URL and response): it would never reach the condition.
    pub fn follow_client_redirects(mut self, max: u32, window: Duration) -> Self {
        self.client_redirects = max;
        self.client_redirect_window = window;
        self
    }

    /// The longest wait for the condition once `Page.navigate` has answered (default:
    /// the page's command deadline). Past it, `goto` fails with
    /// `Timeout(Event)`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The condition waited for.
    pub fn condition(&self) -> WaitUntil {
        self.wait_until
    }
}

/// One HTTP or client-side redirect a navigation went through.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redirect {
    /// The URL that redirected.
    pub url: String,
    /// Its HTTP status (301, 302, 307...); `None` for a client-side redirect (a meta
    /// refresh or a script).
    pub status: Option<u16>,
}

/// What a navigation returned: the main document's final response.
///
/// Status, headers and MIME type come from the page's `Network` events: they are `None`
/// / empty on a page opened without the `Network` domain (see
/// [`PageOptions::enable`](super::PageOptions)), and for a same-document navigation (a
/// fragment change), which loads nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Navigation {
    /// The URL the page ended on, after redirects.
    pub url: String,
    /// The main document's HTTP status.
    pub status: Option<u16>,
    /// Its response headers, as Chromium reports them (names as sent, several values of
    /// one name joined by newlines).
    pub headers: Vec<(String, String)>,
    /// Its MIME type (`text/html`).
    pub mime_type: Option<String>,
    /// The redirects on the way, first first; the last one's target is [`url`](Self::url).
    pub redirects: Vec<Redirect>,
}

impl Navigation {
    /// The value of response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// This navigation, or an [`ErrorKind::HttpStatus`](crate::ErrorKind::HttpStatus)
    /// error when the document answered 400 or above: the status and its `Retry-After`
    /// (seconds or an HTTP-date) travel with the error ([`Error::status`](crate::Error::status),
    /// [`Error::retry_after`](crate::Error::retry_after)). A `run` job that returns it
    /// (`page.goto(url).await?.error_for_status()?`) lets its
    /// [`RetryPolicy`](crate::RetryPolicy) retry 429 and 503, honouring `Retry-After`.
    pub fn error_for_status(self) -> crate::Result<Navigation> {
        match self.status {
            Some(status) if status >= 400 => {
                let now = std::time::SystemTime::now();
                let retry_after = self
                    .header("retry-after")
                    .and_then(|v| crate::retry::parse_retry_after(v, now));
                Err(crate::Error::http_status(&self.url, status, retry_after))
            }
            _ => Ok(self),
        }
    }
}

/// The events a [`Tracker`] reads; a navigation subscribes to them before it starts.
pub(crate) const NAVIGATION_EVENTS: &[&str] = &[
    "Page.lifecycleEvent",
    "Page.frameNavigated",
    "Network.requestWillBeSent",
    "Network.responseReceived",
    "Network.loadingFinished",
    "Network.loadingFailed",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    frame_id: String,
    loader_id: String,
    name: String,
}

#[derive(Deserialize)]
struct FrameNavigated {
    frame: NavigatedFrame,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NavigatedFrame {
    id: String,
    #[serde(default)]
    loader_id: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    url_fragment: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestWillBeSent {
    request_id: String,
    #[serde(default)]
    loader_id: String,
    #[serde(default)]
    frame_id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    request: RequestInfo,
    #[serde(default)]
    redirect_response: Option<Response>,
}

#[derive(Deserialize)]
struct RequestInfo {
    url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseReceived {
    request_id: String,
    response: Response,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    url: String,
    status: f64,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    mime_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestDone {
    request_id: String,
}

/// Follows one navigation of the main frame through the page's events (pure: `now` is
/// passed in). Invariant: only events naming this navigation's `loaderId` (and, for
/// frame events, the main frame) move it forward.
pub(crate) struct Tracker {
    wait: WaitUntil,
    frame: String,
    loader: String,
    committed: bool,
    dom_ready: bool,
    loaded: bool,
    /// The main document's request (its redirects keep the id).
    document: Option<String>,
    /// This navigation's requests not yet finished or failed.
    inflight: HashSet<String>,
    /// Since when the page has been quiet enough (`NetworkIdle`), once loaded.
    quiet_since: Option<Instant>,
    nav: Navigation,
    /// A navigation of the main frame that started after this one: a client-side
    /// redirect.
    next: Option<NextNavigation>,
    /// The URL this navigation was started for, when it is a followed client-side
    /// redirect.
    hop_url: Option<String>,
}

/// The main frame's navigation that followed the tracked one, as its document request
/// announced it.
struct NextNavigation {
    loader: String,
    url: String,
    request: String,
}

impl Tracker {
    /// Tracks the navigation `loader` of main frame `frame`, started for `url`.
    pub(crate) fn new(wait: WaitUntil, frame: &str, loader: &str, url: &str) -> Self {
        Tracker {
            wait,
            frame: frame.to_owned(),
            loader: loader.to_owned(),
            committed: false,
            dom_ready: false,
            loaded: false,
            document: None,
            inflight: HashSet::new(),
            quiet_since: None,
            nav: Navigation {
                url: url.to_owned(),
                ..Navigation::default()
            },
            next: None,
            hop_url: None,
        }
    }

    /// Reads one event of the page at `now`. Events of other loaders and frames, and
    /// events it cannot decode, change nothing.
    pub(crate) fn on_event(&mut self, event: &Event, now: Instant) {
        match event.method() {
            "Page.lifecycleEvent" => {
                let Ok(ev) = event.params::<Lifecycle>() else {
                    return;
                };
                if ev.frame_id != self.frame || ev.loader_id != self.loader {
                    return;
                }
                match ev.name.as_str() {
                    "init" | "commit" => self.committed = true,
                    "DOMContentLoaded" => {
                        self.committed = true;
                        self.dom_ready = true;
                    }
                    "load" => {
                        self.committed = true;
                        self.dom_ready = true;
                        self.loaded = true;
                    }
                    _ => {}
                }
            }
            "Page.frameNavigated" => {
                let Ok(ev) = event.params::<FrameNavigated>() else {
                    return;
                };
                let f = ev.frame;
                if f.id == self.frame && f.loader_id == self.loader {
                    self.committed = true;
                    if !f.url.is_empty() {
                        self.nav.url = f.url + f.url_fragment.as_deref().unwrap_or("");
                    }
                }
            }
            "Network.requestWillBeSent" => {
                let Ok(ev) = event.params::<RequestWillBeSent>() else {
                    return;
                };
                let document = ev.kind.as_deref() == Some("Document")
                    && ev.frame_id.as_deref() == Some(self.frame.as_str());
                if ev.loader_id != self.loader {
                    // Chromium sends the document requests itself, in the order they
                    // start, but forwards commit and lifecycle events from the renderer,
                    // which may be late: the next navigation's request can come before
                    // this one's commit. One that comes after this one's own request
                    // started after it; an earlier navigation's came before.
                    let started = self.committed || self.document.is_some();
                    if document && started && !ev.loader_id.is_empty() {
                        self.next.get_or_insert(NextNavigation {
                            loader: ev.loader_id,
                            url: ev.request.url,
                            request: ev.request_id,
                        });
                    }
                    return;
                }
                self.inflight.insert(ev.request_id.clone());
                if document {
                    self.document = Some(ev.request_id);
                    if let Some(from) = ev.redirect_response {
                        self.nav.redirects.push(Redirect {
                            url: from.url,
                            status: Some(from.status as u16),
                        });
                    }
                    self.nav.url = ev.request.url;
                }
            }
            "Network.responseReceived" => {
                let Ok(ev) = event.params::<ResponseReceived>() else {
                    return;
                };
                if self.document.as_deref() == Some(ev.request_id.as_str()) {
                    let r = ev.response;
                    self.nav.url = r.url;
                    self.nav.status = Some(r.status as u16);
                    self.nav.mime_type = r.mime_type;
                    self.nav.headers = r
                        .headers
                        .into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => (k, s),
                            other => (k, other.to_string()),
                        })
                        .collect();
                }
            }
            "Network.loadingFinished" | "Network.loadingFailed" => {
                if let Ok(ev) = event.params::<RequestDone>() {
                    self.inflight.remove(&ev.request_id);
                }
            }
            _ => {}
        }
        self.note_quiet(now);
    }

    fn note_quiet(&mut self, now: Instant) {
        let WaitUntil::NetworkIdle { max_inflight, .. } = self.wait else {
            return;
        };
        let quiet = self.loaded && self.inflight.len() <= max_inflight;
        match (quiet, self.quiet_since) {
            (true, None) => self.quiet_since = Some(now),
            (false, Some(_)) => self.quiet_since = None,
            _ => {}
        }
    }

    /// True once this navigation has reached its condition at `now`.
    pub(crate) fn done(&self, now: Instant) -> bool {
        match self.wait {
            WaitUntil::Commit => self.committed,
            WaitUntil::DomContentLoaded => self.dom_ready,
            WaitUntil::Load => self.loaded,
            WaitUntil::NetworkIdle { idle, .. } => self
                .quiet_since
                .is_some_and(|since| now.saturating_duration_since(since) >= idle),
        }
    }

    /// When the condition may be reached with no further event (`NetworkIdle`'s quiet
    /// period ending).
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match self.wait {
            WaitUntil::NetworkIdle { idle, .. } => self.quiet_since.map(|t| t + idle),
            _ => None,
        }
    }

    /// Switches to the main frame's next navigation, if one started after this one: a
    /// client-side redirect from the current URL. True if it switched.
    ///
    /// When the next navigation only starts this one again (see
    /// [`next_is_hop`](Self::next_is_hop)), it takes this one's place: no hop.
    pub(crate) fn follow_next(&mut self) -> bool {
        let hop = self.next_is_hop();
        let Some(next) = self.next.take() else {
            return false;
        };
        let mut redirects = std::mem::take(&mut self.nav.redirects);
        if hop {
            redirects.push(Redirect {
                url: std::mem::take(&mut self.nav.url),
                status: None,
            });
        }
        *self = Tracker::new(self.wait, &self.frame, &next.loader, &next.url);
        self.nav.redirects = redirects;
        self.hop_url = Some(next.url);
        // Its document request is already read: it is how the switch was seen. The
        // redirect after it may come before its commit too.
        self.inflight.insert(next.request.clone());
        self.document = Some(next.request);
        true
    }

    /// True when another navigation of the main frame has started.
    pub(crate) fn has_next(&self) -> bool {
        self.next.is_some()
    }

    /// False when following the next navigation adds no hop: this one is a followed
    /// redirect, not yet parsed, and the next one goes to the same URL. That is the
    /// page before it starting the same redirect again: under load Chromium 156 starts
    /// a meta refresh's navigation twice, the first one aborted, or committed and
    /// replaced at once. (A page that redirects to itself once parsed is a hop each
    /// time.)
    pub(crate) fn next_is_hop(&self) -> bool {
        match (&self.hop_url, &self.next) {
            (Some(url), Some(next)) => self.dom_ready || next.url != *url,
            _ => true,
        }
    }

    /// The client-side redirects recorded so far.
    pub(crate) fn hops(&self) -> usize {
        self.nav
            .redirects
            .iter()
            .filter(|r| r.status.is_none())
            .count()
    }

    /// What this navigation returned.
    pub(crate) fn into_navigation(self) -> Navigation {
        self.nav
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Navigated {
    frame_id: String,
    #[serde(default)]
    loader_id: Option<String>,
    #[serde(default)]
    error_text: Option<String>,
}

/// Chromium's answer for an HTTP error with an empty body: the response was received
/// (and is reported as the navigation's status), not a failure to load.
const HTTP_ERROR_PAGE: &str = "net::ERR_HTTP_RESPONSE_CODE_FAILURE";

impl Page {
    /// Navigates to `url` and waits for its `load` event: the same as
    /// [`goto_with`](Self::goto_with) with `GotoOptions::default()`.
    pub async fn goto(&self, url: &str) -> Result<Navigation> {
        self.goto_with(url, &GotoOptions::default()).await
    }

    /// Navigates to `url` and waits until *this* navigation (its `loaderId`, in the main
    /// frame) reaches `options`' condition; returns its final URL, HTTP status, headers,
    /// MIME type and redirects. An HTTP error status (404, 500) is a successful
    /// navigation: look at [`Navigation::status`].
    ///
    /// `Page.navigate` runs under the command deadline, the wait under
    /// [`GotoOptions::timeout`] (`Timeout(Event)` past it). A URL the page cannot load
    /// (refused connection, unknown host) is an [`ErrorKind::Navigation`] error whose
    /// message carries Chromium's `net::ERR_*` text; a malformed one is
    /// [`ErrorKind::InvalidInput`].
    ///
    /// Cancel-safe in the pool's sense: dropping the future stops waiting and leaves
    /// the page loading; a pool stops and resets a page whose job was interrupted.
    pub async fn goto_with(&self, url: &str, options: &GotoOptions) -> Result<Navigation> {
        url::Url::parse(url).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, format!("bad URL {url:?}")).with_source(e)
        })?;
        // Subscribed before the command: events that arrive before its reply are kept.
        let mut events = self.event_stream(NAVIGATION_EVENTS);
        let reply = self
            .call("Page.navigate", serde_json::json!({ "url": url }))
            .await?;
        let navigated: Navigated = serde_json::from_value(reply).map_err(|e| {
            Error::new(ErrorKind::Protocol, "bad Page.navigate reply").with_source(e)
        })?;
        if let Some(err) = navigated
            .error_text
            .filter(|t| !t.is_empty() && t != HTTP_ERROR_PAGE)
        {
            // A renderer killed mid-navigation answers ERR_ABORTED before its crash
            // event: a round trip turns that into SessionCrashed (retryable) on a dead
            // page.
            if err == "net::ERR_ABORTED" {
                self.call("Runtime.evaluate", serde_json::json!({ "expression": "0" }))
                    .await?;
            }
            return Err(Error::new(
                ErrorKind::Navigation,
                format!("could not load {url}: {err}"),
            ));
        }
        let Some(loader) = navigated.loader_id.filter(|l| !l.is_empty()) else {
            // A same-document navigation (a fragment): nothing loads.
            return Ok(Navigation {
                url: url.to_owned(),
                ..Navigation::default()
            });
        };
        let limit = options.timeout.unwrap_or_else(|| self.command_timeout());
        let deadline = crate::job::later(Instant::now(), limit);
        let mut tracker = Tracker::new(options.wait_until, &navigated.frame_id, &loader, url);
        // Set while waiting for a client-side redirect to start.
        let mut window_ends: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let follow = tracker.hops() < options.client_redirects as usize;
            if tracker.has_next() {
                if !follow && tracker.next_is_hop() {
                    // Replaced before (or after) reaching its condition: it never will
                    // now, so it ends here.
                    return Ok(tracker.into_navigation());
                }
                tracker.follow_next();
                window_ends = None;
                continue;
            }
            if tracker.done(now) {
                match window_ends {
                    None if follow => {
                        window_ends = Some(now + options.client_redirect_window);
                    }
                    Some(end) if now < end => {}
                    _ => return Ok(tracker.into_navigation()),
                }
            }
            let wake = [tracker.wake_at(), window_ends, Some(deadline)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
            if now >= deadline {
                return Err(Error::timeout(
                    TimeoutKind::Event,
                    format!("waiting for {:?} of {url}", options.wait_until),
                    limit,
                ));
            }
            tokio::select! {
                event = events.next() => tracker.on_event(&event?, Instant::now()),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
