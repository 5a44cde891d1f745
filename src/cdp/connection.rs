//! One connection to a browser: the state its socket tasks and its sessions share, and
//! the calls made on it.
//!
//! Owns: the pending-call table, the outbox, the session registry and event waits (whose
//! rules live in [`routing`](super::routing) and [`events`](super::events)), awaited
//! calls ([`InFlight`]) and the direct-call deadlines (see
//! [`deadlines`](super::deadlines)). The socket's tasks live in
//! [`socket`](super::socket); what it does with paused requests, in `connection/paused`.
//! Pages and batches build on this layer; it knows nothing of them, nor of pools.
//! Never: shares that state with another thread (it is `Rc`/`RefCell`, pinned to the
//! `LocalSet` that connected), lets a bad frame close the socket, or leaves a call
//! pending once its socket, session or deadline is gone.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use chromiumoxide_types::Command;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::batching::FlushPolicy;
use super::deadlines::{self, DirectDeadlines, Waiter};
use super::events::{EventStream, EventWaiter, EventWaiters, Unregister, WaitEntry};
use super::observer::TransportObserver;
use super::protocol::{
    classify, encode_call, reply_id, Event, Frame, FrameText, MethodName, PendingCall,
    PendingTable, Reply, SessionSlot,
};
use super::routing::{Ending, EventRoute, Sessions};
pub use super::settings::{ConnectionConfig, ConnectionStats};
use super::socket::{self, Signals, Wire};
use super::streams::Feed;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::remote::Dial;

mod paused;

/// A connection to one browser over one WebSocket, carrying any number of flat sessions.
///
/// Cheap to clone (a reference count); `!Send`. It must be created inside a tokio
/// [`LocalSet`](tokio::task::LocalSet), where it spawns its reader and writer tasks; the
/// pool's shards are such places. The socket closes when the last clone and the last
/// [`Page`](super::Page) on it are dropped, or on [`close`](Connection::close).
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Rc<Shared>,
}

pub(crate) struct Shared {
    state: RefCell<State>,
    /// Who records commands and flushes (a shard's metrics, when this connection belongs
    /// to a pool).
    metrics: RefCell<Option<Rc<dyn TransportObserver>>>,
    /// Called when a session dies or the socket closes, so the owner can react at once.
    on_loss: RefCell<Option<Rc<dyn Fn()>>>,
    signals: Rc<Signals>,
    command_timeout: Duration,
    max_frames_per_flush: Cell<usize>,
    flush_policy: Cell<FlushPolicy>,
}

#[derive(Default)]
struct State {
    pending: PendingTable<Waiter>,
    /// When the deadline task wakes next.
    deadlines: DirectDeadlines,
    outbox: VecDeque<Message>,
    sessions: Sessions,
    browser_waiters: EventWaiters,
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
        Connection::dial(&Dial::url(ws_url), config).await
    }

    /// [`connect`](Self::connect) to what `dial` names: `ws://` or `wss://`, with extra
    /// handshake headers. Must run inside a tokio `LocalSet`.
    pub(crate) async fn dial(dial: &Dial, config: ConnectionConfig) -> Result<Connection> {
        let ws = socket::handshake(dial, config.connect_timeout, config.max_message_size).await?;
        let signals = Rc::new(Signals::default());
        let shared = Rc::new(Shared {
            state: RefCell::default(),
            metrics: RefCell::new(None),
            on_loss: RefCell::new(None),
            signals: signals.clone(),
            command_timeout: config.command_timeout,
            max_frames_per_flush: Cell::new(config.max_frames_per_flush.max(1)),
            flush_policy: Cell::new(config.flush_policy),
        });
        tokio::task::spawn_local(enforce_deadlines(Rc::downgrade(&shared), signals.clone()));
        socket::spawn(ws, Rc::downgrade(&shared), signals);

        let conn = Connection { shared };
        // Without discovery the browser never reports `Target.targetCrashed`.
        conn.call(
            "Target.setDiscoverTargets",
            serde_json::json!({ "discover": true, "filter": [{ "type": "page" }] }),
        )
        .await?;
        Ok(conn)
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

    /// Changes when the writer flushes; applies from its next flush.
    pub fn set_flush_policy(&self, policy: FlushPolicy) {
        self.shared.flush_policy.set(policy);
    }

    /// Closes the socket now: pending calls fail with `ConnectionClosed`.
    pub fn close(&self) {
        self.close_with(Error::new(
            ErrorKind::ConnectionClosed,
            "the connection was closed by its owner",
        ));
    }

    /// Closes the socket now: pending calls, waits and sessions fail with `why`.
    pub(crate) fn close_with(&self, why: Error) {
        self.shared.fail_all(why);
        self.shared.signals.closing.set(true);
        self.shared.signals.wake_writer.notify_one();
    }

    /// Reports command latency, command deadlines and flush sizes to `metrics` (a
    /// shard passes its `Rc<RefCell<ShardMetrics>>`).
    pub(crate) fn set_metrics(&self, metrics: Rc<dyn TransportObserver>) {
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
            m.command(&self.method, self.started.elapsed(), ok, batched);
            if outcome.is_err() {
                m.command_timed_out();
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
        let earlier = deadline.is_some_and(|at| st.deadlines.note(at));
        drop(st);
        if earlier {
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
        match session {
            None => Ok(None),
            Some(slot) => st.sessions.session_id(slot, method).map(Some),
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
        let (calls, next) = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let calls = st.deadlines.expire(&mut st.pending, now, Waiter::deadline);
            (calls, st.deadlines.next())
        };
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
        self.state.borrow_mut().sessions.add(session_id, target_id)
    }

    /// Has `alive` cleared when session `slot` dies, before any of its calls hears of
    /// it (whoever hands the session on learns of the death no later than its holder).
    pub(crate) fn watch_session(
        &self,
        slot: SessionSlot,
        alive: crate::sync::Arc<crate::sync::atomic::AtomicBool>,
    ) {
        if let Some(s) = self.state.borrow_mut().sessions.get_mut(slot) {
            s.watch(alive);
        }
    }

    /// Forgets a session: its pending calls and waiters fail with `why`.
    pub(crate) fn remove_session(&self, slot: SessionSlot, why: &Error) {
        let mut st = self.state.borrow_mut();
        Self::kill_session(&mut st, slot, why);
        st.sessions.remove(slot);
    }

    pub(crate) fn session_error(&self, slot: SessionSlot) -> Option<Error> {
        self.state.borrow().sessions.refusal(slot)
    }

    pub(crate) fn register_waiter(
        self: &Rc<Self>,
        session: Option<SessionSlot>,
        method: MethodName,
    ) -> EventWaiter {
        self.register(session, |registry, id| {
            WaitEntry::new(registry, session, id, method)
        })
    }

    /// Registers a buffered stream of every event of `methods` on `session`.
    pub(crate) fn register_stream(
        self: &Rc<Self>,
        session: SessionSlot,
        methods: &'static [&'static str],
    ) -> EventStream {
        self.register(Some(session), |registry, id| {
            WaitEntry::stream(registry, Some(session), id, methods)
        })
    }

    /// Registers a bounded stream of every event of `method` on `session` into `feed`.
    pub(crate) fn register_feed(
        &self,
        session: SessionSlot,
        method: MethodName,
        feed: crate::sync::Arc<Feed>,
    ) {
        let mut st = self.state.borrow_mut();
        let id = st.next_waiter;
        st.next_waiter += 1;
        let (entry, ()) = WaitEntry::feed(id, method, feed);
        Self::add_wait(&mut st, Some(session), entry);
    }

    /// The job on `session` ended: its streams end and its waits fail, so nothing it
    /// listened to reaches the next job.
    pub(crate) fn end_job(&self, session: SessionSlot) {
        if let Some(s) = self.state.borrow_mut().sessions.get_mut(session) {
            let why = Error::new(
                ErrorKind::SessionCrashed,
                "the job ended: its page went back to the pool",
            );
            s.waiters.end_job(&why);
        }
    }

    /// Registers the wait `make` builds, or refuses it at once on a dead session or a
    /// closed socket.
    fn register<H>(
        self: &Rc<Self>,
        session: Option<SessionSlot>,
        make: impl FnOnce(Weak<dyn Unregister>, u64) -> (WaitEntry, H),
    ) -> H {
        let mut st = self.state.borrow_mut();
        let id = st.next_waiter;
        st.next_waiter += 1;
        let registry: Weak<dyn Unregister> = Rc::downgrade(self) as Weak<dyn Unregister>;
        let (entry, handle) = make(registry, id);
        Self::add_wait(&mut st, session, entry);
        handle
    }

    /// Adds `entry` to `session`'s waits (the browser's for `None`), or refuses it at
    /// once on a dead session or a closed socket.
    fn add_wait(st: &mut State, session: Option<SessionSlot>, entry: WaitEntry) {
        let refusal = match (&st.closed, session) {
            (Some(err), _) => Some(err.clone()),
            (None, None) => None,
            (None, Some(slot)) => st.sessions.refusal(slot),
        };
        match (refusal, session) {
            (Some(err), _) => entry.refuse(err),
            (None, None) => st.browser_waiters.push(entry),
            (None, Some(slot)) => match st.sessions.get_mut(slot) {
                Some(s) => s.waiters.push(entry),
                None => unreachable!("a session without a refusal is registered"),
            },
        }
    }

    /// Fails everything on a socket that is gone, and refuses all later calls.
    fn fail_all(&self, why: Error) {
        let mut st = self.state.borrow_mut();
        if st.closed.is_some() {
            return;
        }
        for s in st.sessions.all_mut() {
            s.die(&why);
        }
        for call in st.pending.drain_all() {
            if let Some(w) = call.waiter {
                w.send(&call.method, Err(why.clone()));
            }
        }
        st.browser_waiters.fail_all(&why);
        st.outbox.clear();
        st.closed = Some(why);
        drop(st);
        self.report_loss();
    }

    /// Counts a frame that was not valid CDP, here and in the owner's metrics. Called
    /// with the state not borrowed.
    fn note_malformed(&self) {
        self.state.borrow_mut().stats.malformed_frames += 1;
        if let Some(m) = &*self.metrics.borrow() {
            m.malformed_frame();
        }
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
        let Some(s) = st.sessions.get_mut(slot) else {
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

    /// The connection's default command deadline.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Routes one incoming frame: a reply to its call, an event to its waits (and, when
    /// [`routing`](super::routing) says it ends sessions, their death).
    fn dispatch(&self, text: FrameText) {
        let mut st = self.state.borrow_mut();
        st.stats.frames_in += 1;
        let frame = match classify(&text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, len = text.len(), "dropped a malformed CDP frame");
                // A malformed reply to a call that waits fails it now: the browser has
                // answered, and nothing better will come before the deadline.
                let call = reply_id(&text).and_then(|id| st.pending.complete(id));
                drop(st);
                self.note_malformed();
                if let Some(PendingCall {
                    waiter: Some(w),
                    method,
                    ..
                }) = call
                {
                    let error = Error::new(
                        ErrorKind::Protocol,
                        format!("{method}: the browser's reply was not valid CDP ({e})"),
                    );
                    w.send(&method, Err(error));
                }
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
                let slot = match st.sessions.route(session_id.as_deref()) {
                    EventRoute::Browser => None,
                    EventRoute::Session(slot) => Some(slot),
                    EventRoute::Unroutable => {
                        st.stats.unroutable_events += 1;
                        tracing::debug!(%method, session = ?session_id, "event for an unknown session");
                        return;
                    }
                };
                let blocked = st.sessions.blocked(slot, &method, &text[params.clone()]);
                if let Some(blocked) = blocked {
                    drop(st);
                    self.blocked(slot, blocked, &text[params.clone()]);
                    st = self.state.borrow_mut();
                }
                let answer = st
                    .sessions
                    .proxy_answer(slot, &method, &text[params.clone()]);
                if let Some((reply, reply_params)) = answer {
                    drop(st);
                    let _ = self.enqueue(slot, reply.into(), &reply_params, None);
                    st = self.state.borrow_mut();
                }
                let event = || Event::new(text.clone(), &method, params.clone());
                let waiters = match slot {
                    None => &mut st.browser_waiters,
                    Some(slot) => match st.sessions.get_mut(slot) {
                        Some(s) => &mut s.waiters,
                        None => return,
                    },
                };
                let dropped = waiters.deliver(&method, event);
                let mut malformed = false;
                let lost = match st.sessions.ending(slot, &method, &text[params.clone()]) {
                    Ending::Nothing => false,
                    Ending::Malformed => {
                        malformed = true;
                        false
                    }
                    Ending::Sessions(slots, why) => {
                        let mut lost = false;
                        for slot in slots {
                            lost |= Self::kill_session(&mut st, slot, &why);
                        }
                        lost
                    }
                };
                drop(st);
                if dropped > 0 {
                    if let Some(m) = &*self.metrics.borrow() {
                        m.events_dropped(dropped);
                    }
                }
                if malformed {
                    self.note_malformed();
                }
                if lost {
                    self.report_loss();
                }
            }
        }
    }
}

impl Unregister for Shared {
    fn unregister(&self, session: Option<SessionSlot>, id: u64) {
        let mut st = self.state.borrow_mut();
        let list = match session {
            None => Some(&mut st.browser_waiters),
            Some(slot) => st.sessions.get_mut(slot).map(|s| &mut s.waiters),
        };
        if let Some(list) = list {
            list.remove(id);
        }
    }
}

impl Wire for Shared {
    fn has_outgoing(&self) -> bool {
        !self.state.borrow().outbox.is_empty()
    }

    fn outgoing_len(&self) -> usize {
        self.state.borrow().outbox.len()
    }

    fn max_hold(&self) -> Duration {
        self.flush_policy.get().max_hold()
    }

    fn take_outgoing(&self, batch: &mut Vec<Message>) {
        let mut st = self.state.borrow_mut();
        let n = st.outbox.len().min(self.max_frames_per_flush.get());
        batch.extend(st.outbox.drain(..n));
    }

    fn held(&self) {
        self.state.borrow_mut().stats.held_flushes += 1;
    }

    fn flushed(&self, frames: u64) {
        if let Some(m) = &*self.metrics.borrow() {
            m.flush(frames);
        }
        let mut st = self.state.borrow_mut();
        st.stats.frames_out += frames;
        st.stats.flushes += 1;
        st.stats.max_frames_per_flush = st.stats.max_frames_per_flush.max(frames);
    }

    fn received(&self, text: FrameText) {
        self.dispatch(text);
    }

    fn received_binary(&self) {
        // Counted in both, like a malformed text frame, so malformed <= frames_in.
        self.state.borrow_mut().stats.frames_in += 1;
        self.note_malformed();
    }

    fn lost(&self, why: Error) {
        self.fail_all(why);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: let the writer say goodbye and stop the tasks.
        self.signals.last_handle_gone();
    }
}

/// The deadline task of direct calls ([`Waiter::Direct`]); see [`deadlines`].
async fn enforce_deadlines(weak: Weak<Shared>, signals: Rc<Signals>) {
    deadlines::enforce(&signals.deadline_moved, |now| {
        let next = weak.upgrade()?.expire_direct(now);
        (!signals.closing.get()).then_some(next)
    })
    .await;
}
