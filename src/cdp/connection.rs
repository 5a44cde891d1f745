//! One WebSocket to a browser: a reader task, a writer task, and the state they share
//! with the sessions on it.
//!
//! Owns: the pending-call table, the outbox, the session registry and event waiters, and
//! the deadlines of calls answered straight to another thread ([`Waiter::Direct`]).
//! Never: shares that state with another thread (it is `Rc`/`RefCell`, pinned to the
//! `LocalSet` that connected), lets a bad frame close the socket, or leaves a call
//! pending once its socket, session or deadline is gone.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use chromiumoxide_types::Command;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::protocol::{
    classify, encode_call, Event, Frame, FrameText, MethodName, PendingCall, PendingTable, Reply,
    SessionSlot,
};
use super::session::{EventWaiter, Page, PageOptions};
use crate::metrics::ShardMetrics;
use crate::{Error, ErrorKind, Result, TimeoutKind};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Who hears a call's reply.
pub(crate) enum Waiter {
    /// The caller awaiting it ([`InFlight`]), which keeps its deadline and records it.
    Awaited(oneshot::Sender<Result<Reply>>),
    /// A caller on another thread (a lease holder), answered straight from the reader
    /// with no task in between: the connection keeps its deadline and records it.
    Direct {
        tx: oneshot::Sender<Result<Reply>>,
        started: Instant,
        timeout: Duration,
        metrics: Option<Rc<RefCell<ShardMetrics>>>,
    },
}

impl Waiter {
    /// Answers the call to `method` with `result`.
    fn send(self, method: &str, result: Result<Reply>) {
        match self {
            Waiter::Awaited(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Direct {
                tx,
                started,
                metrics,
                ..
            } => {
                if let Some(m) = metrics {
                    m.borrow_mut()
                        .command(method, started.elapsed(), result.is_ok(), false);
                }
                let _ = tx.send(result);
            }
        }
    }

    /// Fails a direct call whose deadline passed.
    fn time_out(self, method: &str) {
        if let Waiter::Direct {
            timeout, metrics, ..
        } = &self
        {
            if let Some(m) = metrics {
                m.borrow_mut().counters.timeout(TimeoutKind::Command);
            }
            let error = Error::timeout(TimeoutKind::Command, method, *timeout);
            self.send(method, Err(error));
        }
    }

    /// When a direct call's deadline passes.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Waiter::Direct {
                started, timeout, ..
            } => Some(*started + *timeout),
            Waiter::Awaited(_) => None,
        }
    }
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Deadline of one command unless the page sets its own. Default 30 s.
    pub command_timeout: Duration,
    /// Deadline of the WebSocket handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Most frames the writer sends before one flush. Default 1024.
    pub max_frames_per_flush: usize,
    /// Largest incoming message accepted (screenshots and big DOMs are large). Default 256 MiB.
    pub max_message_size: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frames_per_flush: 1024,
            max_message_size: 256 << 20,
        }
    }
}

/// Counters of one connection since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Socket flushes; `frames_out / flushes` is the mean number of frames per flush.
    pub flushes: u64,
    /// Most frames sent in one flush.
    pub max_frames_per_flush: u64,
    /// Frames that were not valid CDP (bad JSON, wrong shape, binary).
    pub malformed_frames: u64,
    /// Replies to ids nobody waits for (unknown, or given up on after a deadline).
    pub unknown_replies: u64,
    /// Events for sessions this connection does not know.
    pub unroutable_events: u64,
    /// Events received in all.
    pub events: u64,
    /// Calls waiting for a reply right now.
    pub pending_calls: u64,
}

/// A connection to one browser over one WebSocket, carrying any number of flat sessions.
///
/// Cheap to clone (a reference count); `!Send`. It must be created inside a tokio
/// [`LocalSet`](tokio::task::LocalSet), where it spawns its reader and writer tasks; the
/// pool's shards are such places. The socket closes when the last clone and the last
/// [`Page`] on it are dropped, or on [`close`](Connection::close).
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Rc<Shared>,
}

pub(crate) struct Shared {
    state: RefCell<State>,
    /// The shard's metrics, when this connection belongs to a pool.
    metrics: RefCell<Option<Rc<RefCell<ShardMetrics>>>>,
    /// Called when a session dies or the socket closes, so the owner can react at once.
    on_loss: RefCell<Option<Rc<dyn Fn()>>>,
    signals: Rc<Signals>,
    command_timeout: Duration,
    max_frames_per_flush: Cell<usize>,
}

/// Wake-ups between the handles and the IO tasks. Kept apart from `Shared` so the tasks
/// can hold it without keeping the connection alive.
#[derive(Default)]
struct Signals {
    wake_writer: Notify,
    stop_reader: Notify,
    /// A direct call with an earlier deadline than any before, or the end.
    deadline_moved: Notify,
    closing: Cell<bool>,
}

type Waiters = SmallVec<[EventWaiterEntry; 2]>;

struct EventWaiterEntry {
    id: u64,
    method: MethodName,
    tx: oneshot::Sender<Result<Event>>,
}

struct SessionState {
    session_id: Rc<str>,
    target_id: Rc<str>,
    /// Set once the session is known dead; every later call fails with it at once.
    dead: Option<Error>,
    /// Cleared when the session dies, before any of its calls hears of it.
    alive: Option<crate::sync::Arc<crate::sync::atomic::AtomicBool>>,
    waiters: Waiters,
}

impl SessionState {
    /// Marks the session dead (keeping the first reason): clears `alive` first, then
    /// fails its event waiters. True when it was alive until now.
    fn die(&mut self, why: &Error) -> bool {
        if let Some(alive) = &self.alive {
            alive.store(false, crate::sync::atomic::Ordering::Release);
        }
        for w in self.waiters.drain(..) {
            let _ = w.tx.send(Err(why.clone()));
        }
        let newly = self.dead.is_none();
        self.dead.get_or_insert_with(|| why.clone());
        newly
    }
}

#[derive(Default)]
struct State {
    pending: PendingTable<Waiter>,
    /// The earliest deadline of a direct call, when the deadline task wakes next.
    next_deadline: Option<Instant>,
    outbox: VecDeque<Message>,
    sessions: HashMap<SessionSlot, SessionState>,
    by_session_id: HashMap<Rc<str>, SessionSlot>,
    next_slot: SessionSlot,
    browser_waiters: Waiters,
    next_waiter: u64,
    /// Set once the socket is gone; every later call fails with it at once.
    closed: Option<Error>,
    stats: ConnectionStats,
}

impl Connection {
    /// Connects to a browser's DevTools WebSocket (`ws://127.0.0.1:PORT/devtools/browser/..`)
    /// and subscribes to target events, so crashes of its pages are noticed at once.
    ///
    /// Must run inside a tokio `LocalSet`.
    pub async fn connect(ws_url: &str, config: ConnectionConfig) -> Result<Connection> {
        let url = url::Url::parse(ws_url).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "bad DevTools URL {ws_url:?}: expected ws://host:port/devtools/browser/<id>"
                ),
            )
            .with_source(e)
        })?;
        if url.scheme() != "ws" {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("bad DevTools URL {ws_url:?}: only ws:// is supported"),
            ));
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        let handshake = tokio_tungstenite::connect_async_with_config(ws_url, Some(ws_config), true);
        let (ws, _) = tokio::time::timeout(config.connect_timeout, handshake)
            .await
            .map_err(|_| {
                Error::timeout(
                    TimeoutKind::Launch,
                    format!("connecting to {ws_url}"),
                    config.connect_timeout,
                )
            })?
            .map_err(|e| {
                Error::new(
                    ErrorKind::BrowserUnavailable,
                    format!("could not connect to the browser at {ws_url}; is it running?"),
                )
                .with_source(e)
            })?;

        let signals = Rc::new(Signals::default());
        let shared = Rc::new(Shared {
            state: RefCell::default(),
            metrics: RefCell::new(None),
            on_loss: RefCell::new(None),
            signals: signals.clone(),
            command_timeout: config.command_timeout,
            max_frames_per_flush: Cell::new(config.max_frames_per_flush.max(1)),
        });
        let (sink, stream) = ws.split();
        tokio::task::spawn_local(write_loop(Rc::downgrade(&shared), signals.clone(), sink));
        tokio::task::spawn_local(deadline_loop(Rc::downgrade(&shared), signals.clone()));
        tokio::task::spawn_local(read_loop(Rc::downgrade(&shared), signals, stream));

        let conn = Connection { shared };
        // Without discovery the browser never reports `Target.targetCrashed`.
        conn.call(
            "Target.setDiscoverTargets",
            serde_json::json!({ "discover": true, "filter": [{ "type": "page" }] }),
        )
        .await?;
        Ok(conn)
    }

    /// Opens a new page target and attaches a flat session to it.
    pub async fn new_page(&self, options: &PageOptions) -> Result<Page> {
        Page::open(self, options).await
    }

    /// Runs a typed browser-level command (no session), e.g. `GetVersionParams`.
    pub async fn execute<C: Command>(&self, cmd: C) -> Result<C::Response> {
        let timeout = self.shared.command_timeout;
        self.shared
            .call_decoded(None, cmd.identifier(), &cmd, timeout)
            .await
    }

    /// Runs a raw browser-level command and returns its `result` as JSON.
    pub async fn call(
        &self,
        method: impl Into<MethodName>,
        params: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let timeout = self.shared.command_timeout;
        self.shared
            .call_decoded(None, method.into(), &params, timeout)
            .await
    }

    /// Starts listening for a browser-level event (no session), e.g.
    /// `Target.targetCreated`. Registered now, so an event that arrives before the wait
    /// is awaited is not missed.
    pub fn wait_for_event(&self, method: impl Into<MethodName>) -> EventWaiter {
        self.shared.register_waiter(None, method.into())
    }

    /// Counters since the connection opened.
    pub fn stats(&self) -> ConnectionStats {
        let st = self.shared.state.borrow();
        ConnectionStats {
            pending_calls: st.pending.len() as u64,
            ..st.stats
        }
    }

    /// True once the socket is closed or broken; every call then fails at once.
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }

    /// Changes the most frames written before one flush (at least 1).
    pub fn set_max_frames_per_flush(&self, frames: usize) {
        self.shared.max_frames_per_flush.set(frames.max(1));
    }

    /// Closes the socket now: pending calls fail with `ConnectionClosed`.
    pub fn close(&self) {
        self.shared.fail_all(Error::new(
            ErrorKind::ConnectionClosed,
            "the connection was closed by its owner",
        ));
        self.shared.signals.closing.set(true);
        self.shared.signals.wake_writer.notify_one();
    }

    /// Records command latency and flush sizes into a shard's metrics.
    pub(crate) fn set_metrics(&self, metrics: Rc<RefCell<ShardMetrics>>) {
        *self.shared.metrics.borrow_mut() = Some(metrics);
    }

    /// Sends a browser-level command whose reply nobody waits for (cleanup on the way
    /// out: closing targets, disposing contexts).
    pub(crate) fn send_and_forget(&self, method: &'static str, params: serde_json::Value) {
        let _ = self.shared.enqueue(None, method.into(), &params, None);
    }

    /// Sets what to call when a session dies or the socket closes. It must not call
    /// back into this connection.
    pub(crate) fn set_on_loss(&self, on_loss: Rc<dyn Fn()>) {
        *self.shared.on_loss.borrow_mut() = Some(on_loss);
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.shared.command_timeout
    }
}

/// A call on the wire. Dropping it before the reply removes it from the pending table.
pub(crate) struct InFlight<'a> {
    shared: &'a Shared,
    session: Option<SessionSlot>,
    id: u64,
    method: MethodName,
    started: Instant,
    rx: oneshot::Receiver<Result<Reply>>,
    answered: bool,
}

impl InFlight<'_> {
    /// Waits for the reply up to `timeout`, and records the command in the metrics.
    pub(crate) async fn finish(mut self, timeout: Duration, batched: bool) -> Result<Reply> {
        let outcome = tokio::time::timeout(timeout, &mut self.rx).await;
        self.answered = matches!(outcome, Ok(Ok(_)));
        if let Some(m) = &*self.shared.metrics.borrow() {
            let ok = matches!(outcome, Ok(Ok(Ok(_))));
            let mut m = m.borrow_mut();
            m.command(&self.method, self.started.elapsed(), ok, batched);
            if outcome.is_err() {
                m.counters.timeout(TimeoutKind::Command);
            }
        }
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::ConnectionClosed,
                format!("{}: the connection dropped the call", self.method),
            )),
            Err(_) => {
                self.shared.stop_script(self.session);
                Err(Error::timeout(TimeoutKind::Command, &self.method, timeout))
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.state.borrow_mut().pending.cancel(self.id);
        }
    }
}

impl Shared {
    /// Sends one call and waits for its reply, its deadline, or the end of its session.
    pub(crate) async fn request<P: Serialize + ?Sized>(
        &self,
        session: Option<SessionSlot>,
        method: MethodName,
        params: &P,
        timeout: Duration,
    ) -> Result<Reply> {
        self.start_call(session, method, params)?
            .finish(timeout, false)
            .await
    }

    /// Sends one call and decodes its `result` into `T`.
    pub(crate) async fn call_decoded<P: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        session: Option<SessionSlot>,
        method: MethodName,
        params: &P,
        timeout: Duration,
    ) -> Result<T> {
        let reply = self
            .request(session, method.clone(), params, timeout)
            .await?;
        reply.decode(&method)
    }

    /// Queues a call without waiting: calls started back to back leave in one flush.
    pub(crate) fn start_call<P: Serialize + ?Sized>(
        &self,
        session: Option<SessionSlot>,
        method: MethodName,
        params: &P,
    ) -> Result<InFlight<'_>> {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        let id = self.enqueue(session, method.clone(), params, Some(Waiter::Awaited(tx)))?;
        Ok(InFlight {
            shared: self,
            session,
            id,
            method,
            started,
            rx,
            answered: false,
        })
    }

    /// Queues a call; `waiter` `None` means its reply is dropped (fire and forget). A
    /// call that cannot be sent fails, and its waiter hears why.
    pub(crate) fn enqueue<P: Serialize + ?Sized>(
        &self,
        session: Option<SessionSlot>,
        method: MethodName,
        params: &P,
        waiter: Option<Waiter>,
    ) -> Result<u64> {
        let mut st = self.state.borrow_mut();
        let queued = Self::session_id(&st, session, &method).and_then(|session_id| {
            encode_call(st.pending.next_id(), session_id.as_deref(), &method, params)
        });
        let frame = match queued {
            Ok(frame) => frame,
            Err(e) => {
                drop(st);
                if let Some(w) = waiter {
                    w.send(&method, Err(e.clone()));
                }
                return Err(e);
            }
        };
        let deadline = waiter.as_ref().and_then(Waiter::deadline);
        let id = st.pending.insert(session, method, waiter);
        st.outbox.push_back(Message::Text(frame.into()));
        let earlier = deadline.filter(|d| st.next_deadline.is_none_or(|next| *d < next));
        if earlier.is_some() {
            st.next_deadline = earlier;
        }
        drop(st);
        if earlier.is_some() {
            self.signals.deadline_moved.notify_one();
        }
        self.signals.wake_writer.notify_one();
        Ok(id)
    }

    /// The `sessionId` a call on `session` carries, or why it cannot be sent.
    fn session_id(
        st: &State,
        session: Option<SessionSlot>,
        method: &str,
    ) -> Result<Option<Rc<str>>> {
        if let Some(err) = &st.closed {
            return Err(err.clone());
        }
        let Some(slot) = session else {
            return Ok(None);
        };
        match st.sessions.get(&slot) {
            Some(s) => match &s.dead {
                Some(err) => Err(err.clone()),
                None => Ok(Some(s.session_id.clone())),
            },
            None => Err(Error::new(
                ErrorKind::SessionCrashed,
                format!("{method}: the page is closed"),
            )),
        }
    }

    /// Sends a call whose reply goes straight to `tx`, which may wait on another thread:
    /// no task waits for it here. The connection fails it once `timeout` has passed
    /// (and stops the script, as for any command deadline) and records it in the
    /// metrics. A call that cannot be sent fails at once.
    pub(crate) fn send_direct<P: Serialize + ?Sized>(
        &self,
        session: Option<SessionSlot>,
        method: MethodName,
        params: &P,
        timeout: Duration,
        tx: oneshot::Sender<Result<Reply>>,
    ) {
        let waiter = Waiter::Direct {
            tx,
            started: Instant::now(),
            timeout,
            metrics: self.metrics.borrow().clone(),
        };
        let _ = self.enqueue(session, method, params, Some(waiter));
    }

    /// After a command deadline on `session`: a hung renderer sends nothing, and this
    /// frees it for the next command.
    fn stop_script(&self, session: Option<SessionSlot>) {
        if session.is_some() {
            let _ = self.enqueue(
                session,
                "Runtime.terminateExecution".into(),
                &serde_json::json!({}),
                None,
            );
        }
    }

    /// Fails the direct calls whose deadline has passed; returns the earliest deadline
    /// left.
    fn expire_direct(&self, now: Instant) -> Option<Instant> {
        let mut st = self.state.borrow_mut();
        let mut next: Option<Instant> = None;
        let mut due = SmallVec::<[u64; 4]>::new();
        for (id, call) in st.pending.iter() {
            match call.waiter.as_ref().and_then(Waiter::deadline) {
                Some(at) if at <= now => due.push(id),
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        st.next_deadline = next;
        let calls: SmallVec<[_; 4]> = due
            .into_iter()
            .filter_map(|id| st.pending.complete(id))
            .collect();
        drop(st);
        for call in calls {
            self.stop_script(call.session);
            if let Some(w) = call.waiter {
                w.time_out(&call.method);
            }
        }
        next
    }

    /// Registers a flat session attached to `target_id`.
    pub(crate) fn add_session(&self, session_id: &str, target_id: &str) -> SessionSlot {
        let mut st = self.state.borrow_mut();
        let slot = st.next_slot;
        st.next_slot = st.next_slot.wrapping_add(1);
        let session_id: Rc<str> = session_id.into();
        st.by_session_id.insert(session_id.clone(), slot);
        st.sessions.insert(
            slot,
            SessionState {
                session_id,
                target_id: target_id.into(),
                dead: None,
                alive: None,
                waiters: Waiters::new(),
            },
        );
        slot
    }

    /// Has `alive` cleared when session `slot` dies, before any of its calls hears of
    /// it (whoever hands the session on learns of the death no later than its holder).
    pub(crate) fn watch_session(
        &self,
        slot: SessionSlot,
        alive: crate::sync::Arc<crate::sync::atomic::AtomicBool>,
    ) {
        if let Some(s) = self.state.borrow_mut().sessions.get_mut(&slot) {
            if s.dead.is_some() {
                alive.store(false, crate::sync::atomic::Ordering::Release);
            }
            s.alive = Some(alive);
        }
    }

    /// Forgets a session: its pending calls and waiters fail with `why`.
    pub(crate) fn remove_session(&self, slot: SessionSlot, why: &Error) {
        let mut st = self.state.borrow_mut();
        Self::kill_session(&mut st, slot, why);
        if let Some(s) = st.sessions.remove(&slot) {
            st.by_session_id.remove(&s.session_id);
        }
    }

    pub(crate) fn session_error(&self, slot: SessionSlot) -> Option<Error> {
        let st = self.state.borrow();
        match st.sessions.get(&slot) {
            Some(s) => s.dead.clone(),
            None => Some(Error::new(ErrorKind::SessionCrashed, "the page is closed")),
        }
    }

    pub(crate) fn register_waiter(
        self: &Rc<Self>,
        session: Option<SessionSlot>,
        method: MethodName,
    ) -> EventWaiter {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.borrow_mut();
        let id = st.next_waiter;
        st.next_waiter += 1;
        let refusal = match (&st.closed, session) {
            (Some(err), _) => Some(err.clone()),
            (None, None) => None,
            (None, Some(slot)) => match st.sessions.get(&slot) {
                Some(s) => s.dead.clone(),
                None => Some(Error::new(ErrorKind::SessionCrashed, "the page is closed")),
            },
        };
        let entry = EventWaiterEntry {
            id,
            method: method.clone(),
            tx,
        };
        match refusal {
            Some(err) => {
                let _ = entry.tx.send(Err(err));
            }
            None => {
                let list = match session {
                    None => &mut st.browser_waiters,
                    Some(slot) => match st.sessions.get_mut(&slot) {
                        Some(s) => &mut s.waiters,
                        None => unreachable!("checked above"),
                    },
                };
                list.push(entry);
            }
        }
        EventWaiter::new(Rc::downgrade(self), session, id, method, rx)
    }

    pub(crate) fn unregister_waiter(&self, session: Option<SessionSlot>, id: u64) {
        let mut st = self.state.borrow_mut();
        let list = match session {
            None => Some(&mut st.browser_waiters),
            Some(slot) => st.sessions.get_mut(&slot).map(|s| &mut s.waiters),
        };
        if let Some(list) = list {
            list.retain(|w| w.id != id);
        }
    }

    /// Fails everything on a socket that is gone, and refuses all later calls.
    fn fail_all(&self, why: Error) {
        let mut st = self.state.borrow_mut();
        if st.closed.is_some() {
            return;
        }
        for s in st.sessions.values_mut() {
            s.die(&why);
        }
        for call in st.pending.drain_all() {
            if let Some(w) = call.waiter {
                w.send(&call.method, Err(why.clone()));
            }
        }
        for w in st.browser_waiters.drain(..) {
            let _ = w.tx.send(Err(why.clone()));
        }
        st.outbox.clear();
        st.closed = Some(why);
        drop(st);
        self.report_loss();
    }

    fn report_loss(&self) {
        let on_loss = self.on_loss.borrow().clone();
        if let Some(f) = on_loss {
            f();
        }
    }

    /// Marks a session dead and fails its pending calls and waiters with `why`.
    /// Returns true when the session was alive until now.
    fn kill_session(st: &mut State, slot: SessionSlot, why: &Error) -> bool {
        let Some(s) = st.sessions.get_mut(&slot) else {
            return false;
        };
        let newly = s.die(why);
        for call in st.pending.drain_session(slot) {
            if let Some(w) = call.waiter {
                let error = Error::new(why.kind(), format!("{}: {}", call.method, why.message()));
                w.send(&call.method, Err(error));
            }
        }
        newly
    }

    fn dispatch(&self, text: FrameText) {
        let mut st = self.state.borrow_mut();
        st.stats.frames_in += 1;
        let frame = match classify(&text) {
            Ok(frame) => frame,
            Err(e) => {
                st.stats.malformed_frames += 1;
                tracing::warn!(error = %e, len = text.len(), "dropped a malformed CDP frame");
                return;
            }
        };
        match frame {
            Frame::Reply { id, outcome, .. } => match st.pending.complete(id) {
                None => {
                    st.stats.unknown_replies += 1;
                    tracing::debug!(id, "reply to an unknown or abandoned call");
                }
                Some(PendingCall { waiter: None, .. }) => {}
                Some(PendingCall {
                    waiter: Some(w),
                    method,
                    ..
                }) => {
                    drop(st);
                    let result = match outcome {
                        Ok(range) => Ok(Reply::new(text.clone(), range)),
                        Err(e) => Err(Error::protocol(&method, e.code, &e.message)),
                    };
                    w.send(&method, result);
                }
            },
            Frame::Event {
                method,
                session_id,
                params,
            } => {
                st.stats.events += 1;
                let params_json = &text[params.clone()];
                let slot = match session_id.as_deref() {
                    None => None,
                    Some(sid) => match st.by_session_id.get(sid) {
                        Some(slot) => Some(*slot),
                        None => {
                            st.stats.unroutable_events += 1;
                            tracing::debug!(%method, session = sid, "event for an unknown session");
                            return;
                        }
                    },
                };
                let event = || Event::new(text.clone(), &method, params.clone());
                let waiters = match slot {
                    None => &mut st.browser_waiters,
                    Some(slot) => match st.sessions.get_mut(&slot) {
                        Some(s) => &mut s.waiters,
                        None => return,
                    },
                };
                deliver(waiters, &method, event);
                let lost = match slot {
                    Some(slot) => on_session_event(&mut st, slot, &method, params_json),
                    None => on_browser_event(&mut st, &method, params_json),
                };
                drop(st);
                if lost {
                    self.report_loss();
                }
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: let the writer say goodbye and stop the tasks.
        self.signals.closing.set(true);
        self.signals.wake_writer.notify_one();
        self.signals.deadline_moved.notify_one();
    }
}

/// Hands an event to every waiter registered for its method.
fn deliver(waiters: &mut Waiters, method: &str, event: impl Fn() -> Event) {
    let mut i = 0;
    while i < waiters.len() {
        if waiters[i].method == method {
            let w = waiters.swap_remove(i);
            let _ = w.tx.send(Ok(event()));
        } else {
            i += 1;
        }
    }
}

/// Session events that mean the session is gone. Per CHROMIUM-FACTS.md, calls pending
/// on a crashed page are never answered, so they are failed here instead.
fn on_session_event(st: &mut State, slot: SessionSlot, method: &str, params: &str) -> bool {
    let why = match method {
        "Inspector.targetCrashed" => Error::new(
            ErrorKind::SessionCrashed,
            "the page's renderer crashed (Inspector.targetCrashed)",
        ),
        "Inspector.detached" => {
            #[derive(Deserialize)]
            struct Detached {
                #[serde(default)]
                reason: String,
            }
            let reason = parse::<Detached>(params)
                .map(|d| d.reason)
                .unwrap_or_default();
            Error::new(
                ErrorKind::SessionCrashed,
                format!("the page was detached (Inspector.detached: {reason})"),
            )
        }
        _ => return false,
    };
    Shared::kill_session(st, slot, &why)
}

/// Browser-level events about targets and sessions that end a session.
fn on_browser_event(st: &mut State, method: &str, params: &str) -> bool {
    #[derive(Deserialize)]
    struct TargetEvent {
        #[serde(rename = "targetId")]
        target_id: Option<String>,
        #[serde(rename = "sessionId")]
        session_id: Option<String>,
    }
    let (kind_of_end, by_target) = match method {
        "Target.targetCrashed" => ("crashed (Target.targetCrashed)", true),
        "Target.targetDestroyed" => ("was closed (Target.targetDestroyed)", true),
        "Target.detachedFromTarget" => ("was detached (Target.detachedFromTarget)", false),
        _ => return false,
    };
    let Some(ev) = parse::<TargetEvent>(params) else {
        st.stats.malformed_frames += 1;
        return false;
    };
    let slots: SmallVec<[SessionSlot; 2]> = if by_target {
        let Some(target) = ev.target_id else {
            return false;
        };
        st.sessions
            .iter()
            .filter(|(_, s)| *s.target_id == *target)
            .map(|(slot, _)| *slot)
            .collect()
    } else {
        let Some(sid) = ev.session_id else {
            return false;
        };
        st.by_session_id
            .get(sid.as_str())
            .copied()
            .into_iter()
            .collect()
    };
    let why = Error::new(ErrorKind::SessionCrashed, format!("the page {kind_of_end}"));
    let mut lost = false;
    for slot in slots {
        lost |= Shared::kill_session(st, slot, &why);
    }
    lost
}

fn parse<T: DeserializeOwned>(json: &str) -> Option<T> {
    serde_json::from_str(if json.is_empty() { "{}" } else { json }).ok()
}

async fn write_loop(weak: Weak<Shared>, signals: Rc<Signals>, mut sink: SplitSink<Ws, Message>) {
    let mut batch: Vec<Message> = Vec::new();
    'wake: loop {
        signals.wake_writer.notified().await;
        loop {
            let Some(shared) = weak.upgrade() else {
                break 'wake;
            };
            if signals.closing.get() && shared.state.borrow().outbox.is_empty() {
                break 'wake;
            }
            {
                let mut st = shared.state.borrow_mut();
                let n = st.outbox.len().min(shared.max_frames_per_flush.get());
                batch.extend(st.outbox.drain(..n));
            }
            if batch.is_empty() {
                continue 'wake;
            }
            let n = batch.len() as u64;
            let mut written = Ok(());
            for frame in batch.drain(..) {
                written = sink.feed(frame).await;
                if written.is_err() {
                    break;
                }
            }
            if written.is_ok() {
                written = sink.flush().await;
            }
            if let Err(e) = written {
                batch.clear();
                shared.fail_all(
                    Error::new(ErrorKind::ConnectionClosed, "the browser connection broke")
                        .with_source(e),
                );
                break 'wake;
            }
            if let Some(m) = &*shared.metrics.borrow() {
                m.borrow_mut().flush(n);
            }
            let mut st = shared.state.borrow_mut();
            st.stats.frames_out += n;
            st.stats.flushes += 1;
            st.stats.max_frames_per_flush = st.stats.max_frames_per_flush.max(n);
        }
    }
    let _ = sink.close().await;
    signals.stop_reader.notify_one();
}

/// Fails direct calls past their deadline ([`Waiter::Direct`]): sleeps until the
/// earliest deadline, or until an earlier one is queued, or the connection is dropped.
async fn deadline_loop(weak: Weak<Shared>, signals: Rc<Signals>) {
    loop {
        let next = match weak.upgrade() {
            Some(shared) => shared.expire_direct(Instant::now()),
            None => return,
        };
        if signals.closing.get() {
            return;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = signals.deadline_moved.notified() => {}
                }
            }
            None => signals.deadline_moved.notified().await,
        }
    }
}

async fn read_loop(weak: Weak<Shared>, signals: Rc<Signals>, mut stream: SplitStream<Ws>) {
    let stop = signals.stop_reader.notified();
    tokio::pin!(stop);
    let why = loop {
        let msg = tokio::select! {
            biased;
            msg = stream.next() => msg,
            _ = &mut stop => break Error::new(ErrorKind::ConnectionClosed, "the connection was closed"),
        };
        let Some(shared) = weak.upgrade() else {
            break Error::new(ErrorKind::ConnectionClosed, "the connection was dropped");
        };
        match msg {
            Some(Ok(Message::Text(text))) => shared.dispatch(text),
            Some(Ok(Message::Binary(_))) => {
                let mut st = shared.state.borrow_mut();
                // Counted in both, like a malformed text frame, so malformed <= frames_in.
                st.stats.frames_in += 1;
                st.stats.malformed_frames += 1;
                drop(st);
                tracing::warn!("dropped a binary frame: CDP frames are text");
            }
            Some(Ok(Message::Close(frame))) => {
                break Error::new(
                    ErrorKind::ConnectionClosed,
                    format!("the browser closed the connection ({frame:?})"),
                )
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => {
                break Error::new(ErrorKind::ConnectionClosed, "the browser connection broke")
                    .with_source(e)
            }
            None => {
                break Error::new(
                    ErrorKind::ConnectionClosed,
                    "the browser closed the connection",
                )
            }
        }
    };
    if let Some(shared) = weak.upgrade() {
        shared.fail_all(why);
    }
    signals.closing.set(true);
    signals.wake_writer.notify_one();
}
