//! Waits for CDP events: the handle a caller holds ([`EventWaiter`]) and the list of
//! registered waits an event is delivered to ([`EventWaiters`]).
//!
//! Owns: handing one event to every wait registered for its method, failing waits when
//! their session or socket ends, and unregistering a wait whose handle is dropped.
//! Never: reads a socket or looks at a connection's state; the connection keeps the
//! lists and is told of a dropped handle through [`Unregister`].

use std::fmt;
use std::rc::Weak;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::protocol::{Event, MethodName, SessionSlot};
use crate::error::{Error, ErrorKind, Result, TimeoutKind};

/// Whoever keeps the lists of waits: told when a handle is dropped unanswered.
pub(crate) trait Unregister {
    /// Forgets wait `id` on `session` (`None`: a browser-level wait).
    fn unregister(&self, session: Option<SessionSlot>, id: u64);
}

/// One registered wait, as the connection keeps it.
pub(crate) struct WaitEntry {
    id: u64,
    method: MethodName,
    tx: oneshot::Sender<Result<Event>>,
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
            method: method.clone(),
            tx,
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

    /// Fails the wait at once instead of registering it.
    pub(crate) fn refuse(self, why: Error) {
        let _ = self.tx.send(Err(why));
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

    /// Hands an event to every wait registered for `method`; each hears it once and is
    /// removed. `event` is built only for a wait that takes it.
    pub(crate) fn deliver(&mut self, method: &str, event: impl Fn() -> Event) {
        let mut i = 0;
        while i < self.0.len() {
            if self.0[i].method == method {
                let w = self.0.swap_remove(i);
                let _ = w.tx.send(Ok(event()));
            } else {
                i += 1;
            }
        }
    }

    /// Fails every wait with `why` and empties the list.
    pub(crate) fn fail_all(&mut self, why: &Error) {
        for w in self.0.drain(..) {
            let _ = w.tx.send(Err(why.clone()));
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
    async fn a_refused_wait_fails_at_once() {
        let registry: Weak<dyn Unregister> = Weak::<List>::new();
        let (entry, handle) = WaitEntry::new(registry, None, 1, "X.y".into());
        entry.refuse(Error::new(ErrorKind::ConnectionClosed, "closed"));
        let err = handle.wait(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionClosed);
    }
}
