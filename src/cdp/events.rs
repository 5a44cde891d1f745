//! Waits for CDP events: the handles a caller holds ([`EventWaiter`] for one event,
//! [`EventStream`] for every event of a few methods, buffered; the bounded public
//! streams live in `streams`) and the list of registered waits an event is delivered to
//! ([`EventWaiters`]).
//!
//! Owns: handing one event to every wait registered for its method, failing waits when
//! their session or socket ends, ending them all when the page's job ends, and
//! unregistering a wait whose handle is dropped.
//! Never: reads a socket or looks at a connection's state; the connection keeps the
//! lists and is told of a dropped handle through [`Unregister`].

use std::fmt;
use std::rc::Weak;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Event, MethodName, SessionSlot};
use super::streams::{Feed, Pushed};
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::sync::Arc;

/// Whoever keeps the lists of waits: told when a handle is dropped unanswered.
pub(crate) trait Unregister {
    /// Forgets wait `id` on `session` (`None`: a browser-level wait).
    fn unregister(&self, session: Option<SessionSlot>, id: u64);
}

/// Where a registered wait's events go.
enum Sink {
    /// One event of `method`, then the wait is done.
    Once {
        method: MethodName,
        tx: oneshot::Sender<Result<Event>>,
    },
    /// Every event of these methods, buffered until read, while the handle lives.
    Stream {
        methods: &'static [&'static str],
        tx: mpsc::UnboundedSender<Result<Event>>,
    },
    /// Every event of `method`, into a caller's bounded stream (`streams`), until its
    /// holder leaves or the job ends.
    Feed { method: MethodName, feed: Arc<Feed> },
}

impl Sink {
    fn wants(&self, method: &str) -> bool {
        match self {
            Sink::Once { method: m, .. } => m == method,
            Sink::Stream { methods, .. } => methods.contains(&method),
            Sink::Feed { method: m, .. } => m == method,
        }
    }

    /// True when nobody will read what it gets any more.
    fn is_gone(&self) -> bool {
        match self {
            Sink::Feed { feed, .. } => feed.is_abandoned(),
            Sink::Once { .. } | Sink::Stream { .. } => false,
        }
    }

    fn fail(self, why: Error) {
        match self {
            Sink::Once { tx, .. } => {
                let _ = tx.send(Err(why));
            }
            Sink::Stream { tx, .. } => {
                let _ = tx.send(Err(why));
            }
            Sink::Feed { feed, .. } => feed.end(Some(why)),
        }
    }
}

/// One registered wait, as the connection keeps it.
pub(crate) struct WaitEntry {
    id: u64,
    sink: Sink,
}

impl WaitEntry {
    /// A new wait `id` for `method`: the entry to register, and the handle for the
    /// caller, which unregisters itself from `registry` when dropped.
    pub(crate) fn new(
        registry: Weak<dyn Unregister>,
        session: Option<SessionSlot>,
        id: u64,
        method: MethodName,
    ) -> (WaitEntry, EventWaiter) {
        let (tx, rx) = oneshot::channel();
        let entry = WaitEntry {
            id,
            sink: Sink::Once {
                method: method.clone(),
                tx,
            },
        };
        let handle = EventWaiter {
            registry,
            session,
            id,
            method,
            rx,
        };
        (entry, handle)
    }

    /// A new stream `id` of every event of `methods`: the entry to register, and the
    /// handle for the caller, which unregisters itself from `registry` when dropped.
    pub(crate) fn stream(
        registry: Weak<dyn Unregister>,
        session: Option<SessionSlot>,
        id: u64,
        methods: &'static [&'static str],
    ) -> (WaitEntry, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let entry = WaitEntry {
            id,
            sink: Sink::Stream { methods, tx },
        };
        let handle = EventStream {
            registry,
            session,
            id,
            rx,
            ended: false,
        };
        (entry, handle)
    }

    /// A new bounded stream `id` of every event of `method` into `feed`: the entry to
    /// register. Its holder reads `feed`; a gone holder is forgotten at the next event.
    pub(crate) fn feed(id: u64, method: MethodName, feed: Arc<Feed>) -> (WaitEntry, ()) {
        let entry = WaitEntry {
            id,
            sink: Sink::Feed { method, feed },
        };
        (entry, ())
    }

    /// Fails the wait at once instead of registering it.
    pub(crate) fn refuse(self, why: Error) {
        self.sink.fail(why);
    }
}

/// The waits registered on one session (or on the browser), in no particular order.
#[derive(Default)]
pub(crate) struct EventWaiters(SmallVec<[WaitEntry; 2]>);

impl EventWaiters {
    /// Registers a wait.
    pub(crate) fn push(&mut self, entry: WaitEntry) {
        self.0.push(entry);
    }

    /// Hands an event to every wait registered for `method`: a one-event wait hears it
    /// once and is removed, a stream keeps it buffered and stays. `event` is built only
    /// for a wait that takes it. Streams whose holder left are forgotten on the way.
    /// Returns how many events full bounded streams dropped.
    pub(crate) fn deliver(&mut self, method: &str, event: impl Fn() -> Event) -> u64 {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.0.len() {
            if self.0[i].sink.is_gone() {
                self.0.swap_remove(i);
                continue;
            }
            if !self.0[i].sink.wants(method) {
                i += 1;
                continue;
            }
            match &self.0[i].sink {
                Sink::Stream { tx, .. } => {
                    let _ = tx.send(Ok(event()));
                    i += 1;
                    continue;
                }
                Sink::Feed { feed, .. } => {
                    if feed.push(event()) == Pushed::Dropped {
                        dropped += 1;
                    }
                    i += 1;
                    continue;
                }
                Sink::Once { .. } => {}
            }
            if let Sink::Once { tx, .. } = self.0.swap_remove(i).sink {
                let _ = tx.send(Ok(event()));
            }
        }
        dropped
    }

    /// The page's job ended: every stream ends (a bounded one yields `None`, as its
    /// holder's job is over, not failed) and every wait fails with `why`, so no listener
    /// of one job hears the next job's events.
    pub(crate) fn end_job(&mut self, why: &Error) {
        for w in self.0.drain(..) {
            match w.sink {
                Sink::Feed { feed, .. } => feed.end(None),
                sink => sink.fail(why.clone()),
            }
        }
    }

    /// Fails every wait with `why` and empties the list.
    pub(crate) fn fail_all(&mut self, why: &Error) {
        for w in self.0.drain(..) {
            w.sink.fail(why.clone());
        }
    }

    /// Forgets wait `id`.
    pub(crate) fn remove(&mut self, id: u64) {
        self.0.retain(|w| w.id != id);
    }

    /// Waits registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A registered wait for one event; see [`Page::wait_for_event`](super::Page::wait_for_event).
/// Dropping it unregisters it.
pub struct EventWaiter {
    registry: Weak<dyn Unregister>,
    session: Option<SessionSlot>,
    id: u64,
    method: MethodName,
    rx: oneshot::Receiver<Result<Event>>,
}

impl EventWaiter {
    /// Waits for the event up to `timeout`. Fails at once if the page dies first.
    pub async fn wait(mut self, timeout: Duration) -> Result<Event> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::ConnectionClosed,
                format!("waiting for {}: the connection is gone", self.method),
            )),
            Err(_) => Err(Error::timeout(
                TimeoutKind::Event,
                format!("waiting for {}", self.method),
                timeout,
            )),
        }
    }
}

impl Drop for EventWaiter {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.unregister(self.session, self.id);
        }
    }
}

/// A registered subscription to every event of a few methods on one session, buffered
/// from the moment it is registered until read: events that arrive while its holder
/// awaits something else (a command's reply) are not lost. Dropping it unregisters it.
///
/// Cancel-safe: [`next`](Self::next) dropped before it returns loses no event.
pub(crate) struct EventStream {
    registry: Weak<dyn Unregister>,
    session: Option<SessionSlot>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Result<Event>>,
    /// Set once the stream failed (its session or socket ended).
    ended: bool,
}

impl EventStream {
    /// The next event, in arrival order. Fails (and keeps failing) once the page or the
    /// connection is gone.
    pub(crate) async fn next(&mut self) -> Result<Event> {
        if self.ended {
            return Err(Error::new(
                ErrorKind::ConnectionClosed,
                "the page's events ended (it died or its connection closed)",
            ));
        }
        match self.rx.recv().await {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            None => {
                self.ended = true;
                Err(Error::new(
                    ErrorKind::ConnectionClosed,
                    "the page's events ended: the connection is gone",
                ))
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.unregister(self.session, self.id);
        }
    }
}

impl fmt::Debug for EventWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWaiter")
            .field("method", &self.method)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::cdp::protocol::{classify, Frame, FrameText};

    /// A registry holding one list, as a connection holds one per session.
    #[derive(Default)]
    struct List(RefCell<EventWaiters>);

    impl Unregister for List {
        fn unregister(&self, _: Option<SessionSlot>, id: u64) {
            self.0.borrow_mut().remove(id);
        }
    }

    fn wait(list: &Rc<List>, id: u64, method: &'static str) -> EventWaiter {
        let registry: Weak<dyn Unregister> = Rc::downgrade(list) as Weak<dyn Unregister>;
        let (entry, handle) = WaitEntry::new(registry, Some(1), id, method.into());
        list.0.borrow_mut().push(entry);
        handle
    }

    fn event(text: &'static str) -> Event {
        let text: FrameText = text.into();
        let Frame::Event { method, params, .. } = classify(&text).unwrap() else {
            panic!("not an event")
        };
        Event::new(text.clone(), &method, params)
    }

    #[tokio::test]
    async fn an_event_reaches_every_wait_for_its_method_and_only_those() {
        let list = Rc::new(List::default());
        let a = wait(&list, 1, "Page.loadEventFired");
        let b = wait(&list, 2, "Page.loadEventFired");
        let other = wait(&list, 3, "Page.frameNavigated");
        let ev = event(r#"{"method":"Page.loadEventFired","params":{"timestamp":1}}"#);
        list.0
            .borrow_mut()
            .deliver("Page.loadEventFired", || ev.clone());
        assert_eq!(
            list.0.borrow().len(),
            1,
            "only the other method's wait is left"
        );
        let long = Duration::from_secs(60);
        assert_eq!(a.wait(long).await.unwrap().method(), "Page.loadEventFired");
        assert_eq!(b.wait(long).await.unwrap().method(), "Page.loadEventFired");
        drop(other);
        assert_eq!(
            list.0.borrow().len(),
            0,
            "a dropped handle unregisters itself"
        );
    }

    #[tokio::test]
    async fn failing_the_list_fails_each_wait_with_the_reason() {
        let list = Rc::new(List::default());
        let a = wait(&list, 1, "Page.loadEventFired");
        let why = Error::new(ErrorKind::SessionCrashed, "the page crashed");
        list.0.borrow_mut().fail_all(&why);
        let err = a.wait(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionCrashed);
        assert_eq!(list.0.borrow().len(), 0);
    }

    #[tokio::test]
    async fn a_stream_keeps_every_event_of_its_methods_in_order_until_dropped() {
        let list = Rc::new(List::default());
        let registry: Weak<dyn Unregister> = Rc::downgrade(&list) as Weak<dyn Unregister>;
        const METHODS: &[&str] = &["Page.lifecycleEvent", "Network.loadingFinished"];
        let (entry, mut stream) = WaitEntry::stream(registry, Some(1), 7, METHODS);
        list.0.borrow_mut().push(entry);
        let once = wait(&list, 8, "Page.lifecycleEvent");
        let a = event(r#"{"method":"Page.lifecycleEvent","params":{"name":"init"}}"#);
        let skip = event(r#"{"method":"Page.frameNavigated","params":{}}"#);
        let b = event(r#"{"method":"Network.loadingFinished","params":{"requestId":"1"}}"#);
        for ev in [&a, &skip, &b, &a] {
            list.0.borrow_mut().deliver(ev.method(), || ev.clone());
        }
        assert_eq!(
            list.0.borrow().len(),
            1,
            "the one-event wait left, the stream stays"
        );
        let long = Duration::from_secs(60);
        assert_eq!(
            once.wait(long).await.unwrap().method(),
            "Page.lifecycleEvent"
        );
        let got: Vec<String> = [
            stream.next().await.unwrap(),
            stream.next().await.unwrap(),
            stream.next().await.unwrap(),
        ]
        .iter()
        .map(|e| e.method().to_owned())
        .collect();
        assert_eq!(
            got,
            [
                "Page.lifecycleEvent",
                "Network.loadingFinished",
                "Page.lifecycleEvent"
            ]
        );
        let why = Error::new(ErrorKind::SessionCrashed, "the page crashed");
        list.0.borrow_mut().fail_all(&why);
        assert_eq!(
            stream.next().await.unwrap_err().kind(),
            ErrorKind::SessionCrashed
        );
        assert!(stream.next().await.is_err(), "an ended stream stays ended");
        let (entry, stream) = WaitEntry::stream(
            Rc::downgrade(&list) as Weak<dyn Unregister>,
            Some(1),
            9,
            METHODS,
        );
        list.0.borrow_mut().push(entry);
        drop(stream);
        assert_eq!(
            list.0.borrow().len(),
            0,
            "a dropped stream unregisters itself"
        );
    }

    #[tokio::test]
    async fn a_bounded_stream_counts_drops_ends_with_the_job_and_is_forgotten_once_left() {
        use crate::cdp::streams::{EventBuffer, EventOverflow, Events};
        use futures_util::StreamExt;
        let list = Rc::new(List::default());
        let add = |id| {
            let feed = Feed::new(EventBuffer::new(1, EventOverflow::DropNewest));
            let (entry, ()) = WaitEntry::feed(id, "X.y".into(), feed.clone());
            list.0.borrow_mut().push(entry);
            Events::new(feed, "X.y")
        };
        let mut kept = add(1);
        let left = add(2);
        let once = wait(&list, 3, "Page.loadEventFired");
        let ev = event(r#"{"method":"X.y","params":{}}"#);
        drop(left);
        let dropped = list.0.borrow_mut().deliver("X.y", || ev.clone());
        assert_eq!(dropped, 0, "one event fits");
        assert_eq!(
            list.0.borrow().len(),
            2,
            "the stream whose holder left is gone"
        );
        let dropped = list.0.borrow_mut().deliver("X.y", || ev.clone());
        assert_eq!((dropped, kept.dropped()), (1, 1), "the buffer was full");
        let why = Error::new(ErrorKind::SessionCrashed, "the job ended");
        list.0.borrow_mut().end_job(&why);
        assert_eq!(list.0.borrow().len(), 0);
        assert_eq!(kept.next().await.unwrap().unwrap().method(), "X.y");
        assert!(
            kept.next().await.is_none(),
            "ended with its job, not failed"
        );
        let err = once.wait(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::SessionCrashed,
            "a one-event wait fails"
        );
    }

    #[tokio::test]
    async fn a_refused_wait_fails_at_once() {
        let registry: Weak<dyn Unregister> = Weak::<List>::new();
        let (entry, handle) = WaitEntry::new(registry, None, 1, "X.y".into());
        entry.refuse(Error::new(ErrorKind::ConnectionClosed, "closed"));
        let err = handle.wait(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionClosed);
    }
}
