//! A flat page session: one page target, attached with `flatten: true`, every command
//! carrying its `sessionId` over the shared connection.
//!
//! Owns: opening a page (`Page::open`, public as [`Connection::new_page`]),
//! what a page offers on top of the connection's raw calls (typed commands, navigation,
//! evaluation, batches, event waits), which interceptor is on it (its own or a job's,
//! and `Fetch`'s patterns to match: see [`intercept`](super::intercept)), and closing
//! its target when it is closed or dropped. Never: touches the socket or the
//! pending-call table except through [`Connection`]'s calls; the connection below it
//! knows nothing of pages.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use chromiumoxide_types::{Command, MethodType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::batch::Batch;
use super::blocking::Blocking;
use super::connection::{Connection, InFlight};
use super::events::{EventStream, EventWaiter};
use super::intercept::{pause_everything, Installed, Interceptor};
use super::protocol::{MethodName, Reply, SessionSlot};
use super::streams::{EventBuffer, Events, Feed, TypedEvents};
use crate::error::{Error, ErrorKind, Result};

/// The method [`Page::evaluate_value`] calls.
pub(crate) const EVALUATE: &str = "Runtime.evaluate";

/// `Runtime.evaluate`'s parameters for [`Page::evaluate_value`]: the value comes back
/// by value, a promise is awaited.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EvaluateByValue<'a> {
    expression: &'a str,
    return_by_value: bool,
    await_promise: bool,
}

impl<'a> EvaluateByValue<'a> {
    pub(crate) fn new(expression: &'a str) -> Self {
        EvaluateByValue {
            expression,
            return_by_value: true,
            await_promise: true,
        }
    }
}

/// The value an [`EvaluateByValue`] call returned, or the exception it threw.
pub(crate) fn evaluated_value(expression: &str, reply: &Reply) -> Result<serde_json::Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Evaluated {
        #[serde(default)]
        result: Option<ByValue>,
        #[serde(default)]
        exception_details: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct ByValue {
        #[serde(default)]
        value: Option<serde_json::Value>,
    }
    let evaluated: Evaluated = reply.decode(EVALUATE)?;
    if let Some(exception) = evaluated.exception_details {
        let text = exception
            .pointer("/exception/description")
            .or_else(|| exception.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or("exception");
        return Err(Error::new(
            ErrorKind::Script,
            format!("{expression:?} threw: {text}"),
        ));
    }
    Ok(evaluated
        .result
        .and_then(|r| r.value)
        .unwrap_or(serde_json::Value::Null))
}

/// How a page is opened.
#[derive(Debug, Clone)]
pub struct PageOptions {
    /// Open it as a background (hidden) tab. Hidden tabs navigate faster; launch the
    /// browser without background throttling so their timers still run on time.
    /// Default `true`.
    pub background: bool,
    /// The browser context to open it in; `None` is the default context.
    pub browser_context_id: Option<String>,
    /// Domains to enable besides `Inspector` (always on, for crash events), e.g. `Page`
    /// (needed by [`Page::goto`]: with it, lifecycle events are switched on too) or
    /// `Runtime`. `Network` gives [`Page::goto`] the navigation's status, headers and
    /// redirects, and `NetworkIdle` the page's requests. Default: `["Page", "Network"]`.
    pub enable: Vec<&'static str>,
    /// What the page never loads, set up once when it opens (no round trip per job).
    /// Default: nothing. A job can ask for other blocking for itself
    /// ([`Job::block`](crate::job::Job::block)).
    pub block: Blocking,
    /// The request handler of every page, set up once when it opens: each request the
    /// page sends (and does not [`block`](Self::block)) is paused for it. A job can
    /// install its own for itself ([`Page::intercept`]); the page's comes back after.
    /// Default: none (requests are not paused).
    pub intercept: Option<Interceptor>,
    /// The URL the target is created with. Default `about:blank`. The pool gives each
    /// page it opens its own `about:blank#…` URL, so that a target whose creation reply
    /// was lost with its socket can still be found (by `Target.getTargets`) and closed.
    pub initial_url: String,
}

impl Default for PageOptions {
    fn default() -> Self {
        PageOptions {
            background: true,
            browser_context_id: None,
            enable: vec!["Page", "Network"],
            block: Blocking::none(),
            intercept: None,
            initial_url: "about:blank".to_owned(),
        }
    }
}

/// One page session. `!Send`: it lives on the thread of its [`Connection`].
///
/// Commands on it are multiplexed with every other session of the connection; each has
/// its own deadline ([`set_command_timeout`](Page::set_command_timeout)). When the page
/// crashes or its target goes away, every pending and later call fails at once with
/// [`ErrorKind::SessionCrashed`]. Dropping a `Page` closes its target.
pub struct Page {
    conn: Connection,
    slot: SessionSlot,
    session_id: Rc<str>,
    target_id: Rc<str>,
    command_timeout: Cell<Duration>,
    closed: Cell<bool>,
    uses: Cell<u32>,
    /// What the page blocks when no job asked for anything else.
    default_blocking: Blocking,
    /// What it blocks now; `None` when unknown (a change failed half-way).
    blocking: RefCell<Option<Blocking>>,
    /// The page's own interceptor ([`PageOptions::intercept`]).
    default_interceptor: Option<Interceptor>,
    /// The interceptor installed now, with its number (see [`InterceptGuard`]).
    intercept: RefCell<Option<(u64, Installed)>>,
    /// Numbers installations.
    installs: Cell<u64>,
    /// `Fetch` pauses every request (an interceptor's patterns, or the page answers its
    /// proxy), not only blocked types.
    pauses_all: Cell<bool>,
}

/// Keeps a job's [`Interceptor`] on its page: dropping it (or the job ending) takes the
/// interceptor off. Requests still waiting on the handler are sent unchanged, and the
/// page goes back to what it did before: its own interceptor, or pausing only what it
/// blocks, or nothing.
#[must_use = "dropping the guard ends the interception at once"]
pub struct InterceptGuard<'a> {
    page: &'a Page,
    id: u64,
}

impl Drop for InterceptGuard<'_> {
    fn drop(&mut self) {
        self.page.end_interception(Some(self.id));
    }
}

impl fmt::Debug for InterceptGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptGuard")
            .field("page", &self.page.target_id)
            .finish()
    }
}

#[derive(Deserialize)]
struct CreatedTarget {
    #[serde(rename = "targetId")]
    target_id: String,
}

#[derive(Deserialize)]
struct Attached {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// Closes a target whose session never came to be (the opening failed or was dropped).
struct CloseTargetOnDrop<'a> {
    conn: &'a Connection,
    target_id: Option<String>,
}

impl Drop for CloseTargetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(target_id) = self.target_id.take() {
            let _ = self.conn.shared.enqueue(
                None,
                "Target.closeTarget".into(),
                &serde_json::json!({ "targetId": target_id }),
                None,
            );
        }
    }
}

impl Connection {
    /// Opens a new page target and attaches a flat session to it.
    ///
    /// Defined with [`Page`], not with the connection: opening a page belongs to the
    /// session layer, which builds on the connection and not the other way round.
    pub async fn new_page(&self, options: &PageOptions) -> Result<Page> {
        Page::open(self, options).await
    }
}

impl Page {
    /// Opens a new page target on `conn` and attaches a flat session to it.
    pub(crate) async fn open(conn: &Connection, options: &PageOptions) -> Result<Page> {
        let mut create = serde_json::json!({
            "url": options.initial_url,
            "background": options.background,
        });
        if let Some(ctx) = &options.browser_context_id {
            create["browserContextId"] = ctx.as_str().into();
        }
        let target: CreatedTarget =
            serde_json::from_value(conn.call("Target.createTarget", create).await?).map_err(
                |e| Error::new(ErrorKind::Protocol, "bad Target.createTarget reply").with_source(e),
            )?;
        let mut guard = CloseTargetOnDrop {
            conn,
            target_id: Some(target.target_id),
        };
        let target_id = guard.target_id.clone().unwrap_or_default();
        let attached: Attached = serde_json::from_value(
            conn.call(
                "Target.attachToTarget",
                serde_json::json!({ "targetId": target_id, "flatten": true }),
            )
            .await?,
        )
        .map_err(|e| {
            Error::new(ErrorKind::Protocol, "bad Target.attachToTarget reply").with_source(e)
        })?;
        let slot = conn.shared.add_session(&attached.session_id, &target_id);
        guard.target_id = None;
        let page = Page {
            conn: conn.clone(),
            slot,
            session_id: attached.session_id.into(),
            target_id: target_id.into(),
            command_timeout: Cell::new(conn.command_timeout()),
            closed: Cell::new(false),
            uses: Cell::new(0),
            default_blocking: options.block.clone(),
            blocking: RefCell::new(None),
            default_interceptor: options.intercept.clone(),
            intercept: RefCell::new(None),
            installs: Cell::new(0),
            pauses_all: Cell::new(options.intercept.is_some()),
        };
        // Pipelined: all enables (and the blocking) go out before the first reply comes
        // back. Dropping `page` on failure (or cancellation) closes the target.
        let mut setup: Vec<(MethodName, serde_json::Value)> = std::iter::once("Inspector")
            .chain(options.enable.iter().copied().filter(|d| *d != "Inspector"))
            .map(|domain| (format!("{domain}.enable").into(), serde_json::json!({})))
            .collect();
        if options.enable.contains(&"Page") {
            // Lifecycle events name their frame and loader: `goto` matches them to its own
            // navigation.
            let on = serde_json::json!({ "enabled": true });
            setup.push(("Page.setLifecycleEventsEnabled".into(), on));
        }
        // The pool's blocking, in the same flight: the page blocks nothing yet. Commands
        // on a session run in order, so `Network.setBlockedURLs` follows `Network.enable`.
        page.note_blocking(&options.block);
        let blocking = options
            .block
            .commands(Some(&Blocking::none()), page.pauses_all.get());
        setup.extend(blocking.into_iter().map(|(m, p)| (m.into(), p)));
        if let Some(interceptor) = &options.intercept {
            page.install(interceptor, true);
            let (method, params) = pause_everything(false);
            setup.push((method.into(), params));
        }
        let calls = setup
            .into_iter()
            .map(|(method, params)| page.call(method, params));
        futures_util::future::try_join_all(calls).await?;
        *page.blocking.borrow_mut() = Some(options.block.clone());
        Ok(page)
    }

    /// Makes the page block exactly `blocking` from now on (see [`Blocking`]): a command
    /// for each part that changes (types, URL patterns), pipelined; none when it already
    /// does.
    ///
    /// Cancel-safe: dropped before it returns, or failed, the page's blocking is unknown
    /// and the next call sets all of it again.
    ///
    /// On a page that intercepts or answers its proxy's challenges (a pool's
    /// [`ContextOptions`](crate::identity::ContextOptions)), `Fetch` already pauses every
    /// request: a blocked type's are failed as they pause, and `Fetch` is left as it is.
    pub async fn set_blocking(&self, blocking: &Blocking) -> Result<()> {
        let was = self.blocking.borrow_mut().take();
        if was.as_ref() == Some(blocking) {
            *self.blocking.borrow_mut() = was;
            return Ok(());
        }
        // Failing what is paused is harmless before the patterns apply (nothing of the
        // type is paused yet) and needed from the moment they do; a request of a type no
        // longer blocked, paused meanwhile, is continued.
        self.note_blocking(blocking);
        let calls = blocking
            .commands(was.as_ref(), self.pauses_all.get())
            .into_iter()
            .map(|(method, params)| self.call(method, params));
        futures_util::future::try_join_all(calls).await?;
        *self.blocking.borrow_mut() = Some(blocking.clone());
        Ok(())
    }

    /// Tells the connection which paused requests `blocking` fails.
    fn note_blocking(&self, blocking: &Blocking) {
        self.conn.shared.set_pausing(self.slot, |p| {
            p.blocked_types = blocking.cdp_type_names().collect();
            p.owned |= blocking.pauses();
        });
    }

    /// Pauses every request this page sends for `interceptor` until the returned guard
    /// is dropped (see [`Interceptor`]). It replaces the interceptor the page had (its
    /// [`PageOptions::intercept`], which comes back with the guard's drop, or an earlier
    /// one of the job's). The page's resource blocking still applies first. Within a
    /// pool, the interception ends with the job at the latest: the next job never sees
    /// it.
    ///
    /// Cancel-safe: dropped before it returns, the page is as it was (a `Fetch.enable`
    /// that was already sent is undone).
    pub async fn intercept(&self, interceptor: Interceptor) -> Result<InterceptGuard<'_>> {
        let id = self.install(&interceptor, false);
        let guard = InterceptGuard { page: self, id };
        if !self.pauses_all.replace(true) {
            let (method, params) = pause_everything(self.answers_proxy());
            self.call(method, params).await?;
        }
        Ok(guard)
    }

    /// Puts `interceptor` on the page in place of the one it had, whose waiting
    /// requests are sent unchanged. Returns the installation's number.
    fn install(&self, interceptor: &Interceptor, is_default: bool) -> u64 {
        let (sink, installed) =
            Installed::new(interceptor, &self.conn.shared, self.slot, is_default);
        self.conn.shared.set_pausing(self.slot, |p| {
            p.interceptor = Some(sink);
            p.owned = true;
        });
        let id = self.installs.get() + 1;
        self.installs.set(id);
        let old = self.intercept.replace(Some((id, installed)));
        if let Some((_, old)) = old {
            old.end();
        }
        id
    }

    /// Takes a job's interceptor off (installation `id`, or whichever is on with
    /// `None`): the page's own comes back, or `Fetch` pauses only what the page blocks
    /// again (every request still on a page answering its proxy). Nothing to do when the
    /// page's own interceptor (or none) is on.
    pub(crate) fn end_interception(&self, id: Option<u64>) {
        let current = self
            .intercept
            .borrow()
            .as_ref()
            .map(|(i, installed)| (*i, installed.is_default));
        match current {
            Some((on, false)) if id.is_none_or(|id| id == on) => {}
            _ => return,
        }
        if let Some(own) = &self.default_interceptor {
            self.install(own, true);
            return;
        }
        self.conn
            .shared
            .set_pausing(self.slot, |p| p.interceptor = None);
        if let Some((_, installed)) = self.intercept.take() {
            installed.end();
        }
        if self.answers_proxy() {
            // Its `Fetch` pauses every request with challenges reported, as it must
            // stay: what nobody takes now is continued.
            return;
        }
        // Sent after the `continueRequest`s above: commands on a session run in order.
        let blocking = self.blocking.borrow().clone();
        let (method, params) = blocking
            .as_ref()
            .unwrap_or(&self.default_blocking)
            .fetch_command();
        let _ = self
            .conn
            .shared
            .enqueue(Some(self.slot), method.into(), &params, None);
        self.pauses_all.set(false);
    }

    /// Answers the proxy's `407` challenges with `credentials` from now on
    /// (`Fetch.enable` with `handleAuthRequests` and a pattern matching every request:
    /// Chromium answers challenges only for paused requests). A paused request is then
    /// failed if its type is blocked, given to the interceptor if there is one, else
    /// continued: each costs one round trip to cdpmux, answered as its event arrives.
    /// From now on every `Fetch.enable` the page sends keeps challenges reported, and it
    /// never sends `Fetch.disable`.
    ///
    /// Cancel-safe: dropped before it returns, the page answers challenges but may not
    /// pause requests yet.
    pub(crate) async fn answer_proxy_auth(
        &self,
        credentials: super::proxy_auth::ProxyCredentials,
    ) -> Result<()> {
        let auth = super::proxy_auth::ProxyAuth::new(credentials);
        self.conn.shared.set_pausing(self.slot, |p| {
            p.proxy_auth = Some(auth);
            p.owned = true;
        });
        self.pauses_all.set(true);
        let (method, params) = pause_everything(true);
        self.call(method, params).await.map(|_| ())
    }

    /// Whether the page answers its proxy's challenges (see `answer_proxy_auth`).
    fn answers_proxy(&self) -> bool {
        self.conn.shared.has_proxy_auth(self.slot)
    }

    /// What the page blocks when no job asks for anything else (its
    /// [`PageOptions::block`]).
    pub fn default_blocking(&self) -> &Blocking {
        &self.default_blocking
    }

    /// Puts the page's default blocking back if a job changed it. True when the page
    /// blocks its default again (or never stopped).
    pub(crate) async fn restore_blocking(&self) -> bool {
        self.set_blocking(&self.default_blocking).await.is_ok()
    }

    /// True when the page is known to block its default (no job changed it).
    pub(crate) fn blocks_default(&self) -> bool {
        self.blocking.borrow().as_ref() == Some(&self.default_blocking)
    }

    /// Subscribes to every event of `methods` on this page, buffered from now on.
    pub(crate) fn event_stream(&self, methods: &'static [&'static str]) -> EventStream {
        self.conn.shared.register_stream(self.slot, methods)
    }

    /// Streams every event of `method` on this page from now on (e.g.
    /// `Network.responseReceived`, with the `Network` domain enabled), buffering up to
    /// 1024 unread events and dropping newer ones past that; see [`Events`] for how it
    /// ends and counts drops. Any method is accepted: one the page never sends yields
    /// nothing. On a dead page the stream yields why, then ends.
    ///
    /// ```no_run
    /// # async fn demo(page: &cdpmux::Page) -> cdpmux::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut responses = page.events("Network.responseReceived");
    /// page.goto("https://example.com/").await?;
    /// if let Some(first) = responses.next().await {
    ///     println!("{}", first?.params_json());
    /// }
    /// println!("dropped: {}", responses.dropped());
    /// # Ok(()) }
    /// ```
    pub fn events(&self, method: &str) -> Events {
        self.events_into(method, EventBuffer::default())
    }

    /// [`events`](Self::events) with its own buffer size and overflow policy. Fails
    /// (`InvalidInput`) on a buffer of zero events.
    pub fn events_with(&self, method: &str, buffer: EventBuffer) -> Result<Events> {
        buffer.check()?;
        Ok(self.events_into(method, buffer))
    }

    /// Streams every event of type `T` (from `spider_chromiumoxide_cdp`, e.g.
    /// `EventLoadEventFired`) on this page from now on, decoded; otherwise as
    /// [`events`](Self::events).
    pub fn events_of<T: MethodType + DeserializeOwned>(&self) -> TypedEvents<T> {
        TypedEvents::new(self.events(&T::method_id()))
    }

    /// Registers a bounded stream of `method` (a buffer already checked).
    fn events_into(&self, method: &str, buffer: EventBuffer) -> Events {
        let feed = Feed::new(buffer);
        self.register_feed(method.to_owned().into(), feed.clone());
        Events::new(feed, method)
    }

    /// Feeds every event of `method` into `feed` (a lease's stream, read elsewhere).
    pub(crate) fn register_feed(&self, method: MethodName, feed: crate::sync::Arc<Feed>) {
        self.conn.shared.register_feed(self.slot, method, feed);
    }

    /// The page's job ended: its streams end, its event waits fail (see
    /// [`Events`]).
    pub(crate) fn end_job(&self) {
        self.conn.shared.end_job(self.slot);
    }

    /// Runs a typed command from `spider_chromiumoxide_cdp` on this page, e.g.
    /// `EvaluateParams::new("1+1")`, and decodes its typed response.
    pub async fn execute<C: Command>(&self, cmd: C) -> Result<C::Response> {
        let timeout = self.command_timeout.get();
        self.conn
            .shared
            .call_decoded(Some(self.slot), cmd.identifier(), &cmd, timeout)
            .await
    }

    /// Runs a raw command on this page and returns its `result` as JSON.
    pub async fn call(
        &self,
        method: impl Into<MethodName>,
        params: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let timeout = self.command_timeout.get();
        self.conn
            .shared
            .call_decoded(Some(self.slot), method.into(), &params, timeout)
            .await
    }

    /// Starts a pipelined batch of commands on this page.
    ///
    /// ```no_run
    /// # async fn demo(page: &cdpmux::Page) -> cdpmux::Result<()> {
    /// use cdpmux::js_protocol::runtime::EvaluateParams;
    /// let mut batch = page.batch();
    /// let a = batch.push(EvaluateParams::new("1+1"));
    /// let b = batch.push_raw("Runtime.evaluate", serde_json::json!({"expression": "2+2"}));
    /// let results = batch.run().await;
    /// assert_eq!(results.get(a)?.result.value, Some(serde_json::json!(2)));
    /// assert_eq!(results.get(b)?["result"]["value"], 4);
    /// # Ok(()) }
    /// ```
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(&self.conn, self.slot, &self.command_timeout)
    }

    pub(crate) fn start_call<P: serde::Serialize + ?Sized>(
        &self,
        method: MethodName,
        params: &P,
    ) -> Result<InFlight<'_>> {
        self.conn.shared.start_call(Some(self.slot), method, params)
    }

    /// Starts listening for an event of this page, e.g. `Page.loadEventFired`. It is
    /// registered now: call this before the command that causes the event.
    pub fn wait_for_event(&self, method: impl Into<MethodName>) -> EventWaiter {
        self.conn
            .shared
            .register_waiter(Some(self.slot), method.into())
    }

    /// Evaluates a JavaScript expression (promises are awaited) and returns its value as
    /// JSON. A thrown exception is an [`ErrorKind::Script`] error.
    pub async fn evaluate_value(&self, expression: &str) -> Result<serde_json::Value> {
        let reply = self
            .request(EVALUATE.into(), &EvaluateByValue::new(expression))
            .await?;
        evaluated_value(expression, &reply)
    }

    /// Sends a command whose reply goes straight to `tx` (see `Shared::send_direct`):
    /// for a lease holder on another thread, with no task waiting here.
    pub(crate) fn call_direct<P: Serialize + ?Sized>(
        &self,
        method: MethodName,
        params: &P,
        timeout: Duration,
        tx: oneshot::Sender<Result<Reply>>,
    ) {
        self.conn
            .shared
            .send_direct(Some(self.slot), method, params, timeout, tx);
    }

    /// Has `alive` cleared when this page's session dies, before any call on it hears
    /// of the death.
    pub(crate) fn watch(&self, alive: crate::sync::Arc<crate::sync::atomic::AtomicBool>) {
        self.conn.shared.watch_session(self.slot, alive);
    }

    /// Runs a command and returns its reply undecoded (for a caller that decodes it
    /// elsewhere: a lease decodes in its holder's thread, not the shard's).
    pub(crate) async fn request<P: Serialize + ?Sized>(
        &self,
        method: MethodName,
        params: &P,
    ) -> Result<Reply> {
        let timeout = self.command_timeout.get();
        self.conn
            .shared
            .request(Some(self.slot), method, params, timeout)
            .await
    }

    /// The page's `document.title`.
    pub async fn title(&self) -> Result<String> {
        match self.evaluate_value("document.title").await? {
            serde_json::Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    /// Closes the target (`Target.closeTarget`). Calls still pending on it fail.
    pub async fn close(self) -> Result<()> {
        self.closed.set(true);
        let closing = self.conn.call(
            "Target.closeTarget",
            serde_json::json!({ "targetId": &*self.target_id }),
        );
        let result = closing.await.map(|_| ());
        self.conn.shared.remove_session(
            self.slot,
            &Error::new(ErrorKind::SessionCrashed, "the page was closed"),
        );
        result
    }

    /// Records that the target was closed by other means, so drop sends nothing.
    pub(crate) fn mark_closed(&self) {
        self.closed.set(true);
    }

    /// How many pool jobs (runs and leases) this page has served, the current one
    /// included: 1 means a fresh page, more means a reused one. 0 outside a pool.
    pub fn uses(&self) -> u32 {
        self.uses.get()
    }

    pub(crate) fn set_uses(&self, uses: u32) {
        self.uses.set(uses);
    }

    /// Sets the deadline of each later command on this page.
    pub fn set_command_timeout(&self, timeout: Duration) {
        self.command_timeout.set(timeout);
    }

    /// The deadline of each command on this page.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout.get()
    }

    /// Why the page is unusable, if it is known dead (crashed, detached, closed).
    pub fn dead_reason(&self) -> Option<Error> {
        self.conn.shared.session_error(self.slot)
    }

    /// False once the page is known dead.
    pub fn is_alive(&self) -> bool {
        self.dead_reason().is_none()
    }

    /// The CDP target id.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// The CDP session id carried by every command.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The connection this page's commands travel on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if let Some((_, installed)) = self.intercept.take() {
            installed.end(); // the handlers' tasks stop with the page
        }
        if self.closed.get() {
            return;
        }
        // Fire and forget: a dropped page must not leave its target open in the browser.
        let _ = self.conn.shared.enqueue(
            None,
            "Target.closeTarget".into(),
            &serde_json::json!({ "targetId": &*self.target_id }),
            None,
        );
        self.conn.shared.remove_session(
            self.slot,
            &Error::new(ErrorKind::SessionCrashed, "the page was dropped"),
        );
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("target_id", &self.target_id)
            .field("session_id", &self.session_id)
            .finish()
    }
}
