//! Event streams handed to callers: [`Events`] (every event of one method, raw) and
//! [`TypedEvents`] (the same, decoded into a `spider_chromiumoxide_cdp` event type), each
//! over a bounded buffer with an explicit [`EventOverflow`] policy and a count of what it
//! dropped.
//!
//! Owns: the buffer between the connection, which pushes events on the page's shard, and
//! the stream's holder, on any thread ([`Feed`]); how a stream ends. Never: reads a
//! socket, blocks, or takes a lock: the buffer is a lock-free ring (`crossbeam-queue`'s
//! `ArrayQueue`, already a dependency) with an atomic waker, so a slow holder never holds
//! up the shard. The connection keeps the registrations (`events`), and forgets one whose
//! holder is gone at the page's next event.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chromiumoxide_types::MethodType;
use crossbeam_queue::ArrayQueue;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use serde::de::DeserializeOwned;

use super::protocol::Event;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Arc;

/// What a full stream buffer does with one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventOverflow {
    /// Keep what is buffered and drop the new event: the stream shows every event from
    /// its start up to the moment it fell behind, then the ones after it caught up.
    #[default]
    DropNewest,
    /// Drop the oldest buffered event to make room: the stream shows the latest events.
    DropOldest,
}

/// How a stream buffers events its holder has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBuffer {
    /// How many unread events it keeps (at least 1). Default 1024.
    pub capacity: usize,
    /// What happens to one more. Default [`EventOverflow::DropNewest`].
    pub overflow: EventOverflow,
}

impl Default for EventBuffer {
    fn default() -> Self {
        EventBuffer {
            capacity: 1024,
            overflow: EventOverflow::DropNewest,
        }
    }
}

impl EventBuffer {
    /// A buffer of `capacity` events that drops per `overflow`.
    pub fn new(capacity: usize, overflow: EventOverflow) -> Self {
        EventBuffer { capacity, overflow }
    }

    /// Rejects a buffer that could hold nothing.
    pub(crate) fn check(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "an event stream's buffer needs room for at least one event (capacity 0)",
            ));
        }
        Ok(())
    }
}

/// What [`Feed::push`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Buffered,
    /// One event was dropped (the new one or the oldest, per the policy).
    Dropped,
}

/// The buffer between the connection (one pusher, on the page's shard) and one stream
/// holder (anywhere). Invariant: after `ended` is set nothing more is pushed, so a holder
/// that sees `ended` and then an empty buffer has seen every event.
pub(crate) struct Feed {
    events: ArrayQueue<Event>,
    overflow: EventOverflow,
    dropped: AtomicU64,
    /// Why the stream ended badly (the page died, the socket closed); read once.
    failure: ArrayQueue<Error>,
    ended: AtomicBool,
    /// The holder is gone (dropped the stream, or gave its lease back): push nothing more.
    abandoned: AtomicBool,
    waker: AtomicWaker,
}

impl Feed {
    /// A feed buffering per `buffer` (already checked).
    pub(crate) fn new(buffer: EventBuffer) -> Arc<Feed> {
        Arc::new(Feed {
            events: ArrayQueue::new(buffer.capacity.max(1)),
            overflow: buffer.overflow,
            dropped: AtomicU64::new(0),
            failure: ArrayQueue::new(1),
            ended: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// Buffers `event` for the holder, dropping per the policy when full.
    pub(crate) fn push(&self, event: Event) -> Pushed {
        let pushed = match self.overflow {
            EventOverflow::DropNewest => match self.events.push(event) {
                Ok(()) => Pushed::Buffered,
                Err(_) => Pushed::Dropped,
            },
            EventOverflow::DropOldest => match self.events.force_push(event) {
                None => Pushed::Buffered,
                Some(_) => Pushed::Dropped,
            },
        };
        if pushed == Pushed::Dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.waker.wake();
        pushed
    }

    /// Ends the stream: after what is buffered, the holder reads `why` (if any), then
    /// the end.
    pub(crate) fn end(&self, why: Option<Error>) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        if let Some(why) = why {
            let _ = self.failure.push(why);
        }
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// True once the holder is gone: the connection forgets the registration.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// The holder is gone, or no longer allowed to read (its lease went back).
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.end(None);
    }
}

/// Every event of one method on one page, from the moment it was registered, as a
/// [`Stream`] of `Result<Event>`; see [`Page::events`](super::Page::events) and
/// [`Lease::events`](crate::Lease::events).
///
/// - **Bounded**: it buffers up to [`EventBuffer::capacity`] unread events; past that it
///   drops per [`EventOverflow`] and counts what it dropped ([`dropped`](Self::dropped);
///   the pool counts them too, as `events_dropped`).
/// - **Ends** (yields `None`) when its job ends: the `run` closure returned or was
///   cancelled, the lease was dropped or taken back. When the page dies or its socket
///   closes first, it yields what it buffered, then one `Err` saying why, then `None`.
/// - Any method name is accepted; a method the page never sends yields nothing.
/// - `Send`: it may be read on any thread. Dropping it unregisters it (the page forgets
///   it at its next event).
///
/// Cancel-safe: a `next()` dropped before it returns loses no event.
pub struct Events {
    feed: Arc<Feed>,
    method: Box<str>,
    done: bool,
}

impl Events {
    pub(crate) fn new(feed: Arc<Feed>, method: &str) -> Self {
        Events {
            feed,
            method: method.into(),
            done: false,
        }
    }

    /// The method this stream listens to.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// How many events the buffer dropped so far (it was full).
    pub fn dropped(&self) -> u64 {
        self.feed.dropped.load(Ordering::Relaxed)
    }

    /// The first event still to read, waiting up to `timeout`: what
    /// [`EventWaiter::wait`](super::EventWaiter::wait) is for a page, for a stream (a
    /// lease's [`wait_for_event`](crate::Lease::wait_for_event)).
    ///
    /// Fails with `Timeout(Event)` after `timeout`, with why the stream ended if it
    /// ended badly, and with `SessionCrashed` if it ended with its job.
    ///
    /// Cancel-safe: dropping the future drops the stream, losing what it buffered.
    pub async fn wait(mut self, timeout: Duration) -> Result<Event> {
        let next = std::future::poll_fn(|cx| Pin::new(&mut self).poll_next(cx));
        match tokio::time::timeout(timeout, next).await {
            Ok(Some(item)) => item,
            Ok(None) => Err(Error::new(
                ErrorKind::SessionCrashed,
                format!(
                    "waiting for {}: the job ended (its page went back to the pool)",
                    self.method
                ),
            )),
            Err(_) => Err(Error::timeout(
                TimeoutKind::Event,
                format!("waiting for {}", self.method),
                timeout,
            )),
        }
    }

    fn take(&mut self) -> Poll<Option<Result<Event>>> {
        if let Some(event) = self.feed.events.pop() {
            return Poll::Ready(Some(Ok(event)));
        }
        if !self.feed.ended.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Ended: nothing more is pushed, but something may have landed just before.
        if let Some(event) = self.feed.events.pop() {
            return Poll::Ready(Some(Ok(event)));
        }
        self.done = true;
        Poll::Ready(self.feed.failure.pop().map(Err))
    }
}

impl Stream for Events {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.take() {
            return Poll::Ready(item);
        }
        // Registered before looking again: a push between the two looks wakes us.
        self.feed.waker.register(cx.waker());
        self.take()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.feed.abandon();
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("method", &self.method)
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// [`Events`] of one typed event from `spider_chromiumoxide_cdp` (for example
/// `EventResponseReceived`), each decoded into `T`; see
/// [`Page::events_of`](super::Page::events_of).
///
/// Yields `Err(Protocol)` for an event whose params do not decode (and goes on), and
/// otherwise behaves as [`Events`]: bounded, counted drops, ends with its job.
///
/// Cancel-safe: a `next()` dropped before it returns loses no event.
pub struct TypedEvents<T> {
    raw: Events,
    _type: PhantomData<fn() -> T>,
}

impl<T: MethodType + DeserializeOwned> TypedEvents<T> {
    pub(crate) fn new(raw: Events) -> Self {
        TypedEvents {
            raw,
            _type: PhantomData,
        }
    }

    /// The CDP method of `T`, e.g. `Network.responseReceived`.
    pub fn method_name() -> String {
        T::method_id().to_string()
    }

    /// How many events the buffer dropped so far (it was full).
    pub fn dropped(&self) -> u64 {
        self.raw.dropped()
    }

    /// The stream undecoded.
    pub fn into_raw(self) -> Events {
        self.raw
    }
}

impl<T: DeserializeOwned> Stream for TypedEvents<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.raw)
            .poll_next(cx)
            .map(|item| item.map(|event| event.and_then(|e| e.params::<T>())))
    }
}

impl<T> fmt::Debug for TypedEvents<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::cdp::protocol::{classify, Frame, FrameText};

    fn event(n: u32) -> Event {
        let text: FrameText = format!(r#"{{"method":"X.y","params":{{"n":{n}}}}}"#).into();
        let Frame::Event { method, params, .. } = classify(&text).unwrap() else {
            panic!("not an event")
        };
        Event::new(text.clone(), &method, params)
    }

    fn n(item: Option<Result<Event>>) -> u64 {
        let v: serde_json::Value = item.unwrap().unwrap().params().unwrap();
        v["n"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_first_events_and_counts_the_rest() {
        let feed = Feed::new(EventBuffer::new(2, EventOverflow::DropNewest));
        let mut events = Events::new(feed.clone(), "X.y");
        let pushed: Vec<Pushed> = (1..=4).map(|i| feed.push(event(i))).collect();
        assert_eq!(pushed[1], Pushed::Buffered);
        assert_eq!(pushed[2], Pushed::Dropped);
        assert_eq!(events.dropped(), 2);
        assert_eq!(n(events.next().await), 1);
        assert_eq!(n(events.next().await), 2);
        feed.end(None);
        assert!(events.next().await.is_none(), "ended without an error");
        assert!(events.next().await.is_none(), "and stays ended");
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_latest_events() {
        let feed = Feed::new(EventBuffer::new(2, EventOverflow::DropOldest));
        let mut events = Events::new(feed.clone(), "X.y");
        for i in 1..=5 {
            feed.push(event(i));
        }
        assert_eq!(events.dropped(), 3);
        assert_eq!(n(events.next().await), 4);
        assert_eq!(n(events.next().await), 5);
    }

    #[tokio::test]
    async fn a_failed_stream_yields_its_buffer_then_the_reason_then_ends() {
        let feed = Feed::new(EventBuffer::default());
        let mut events = Events::new(feed.clone(), "X.y");
        feed.push(event(1));
        feed.end(Some(Error::new(ErrorKind::SessionCrashed, "crashed")));
        feed.end(None); // a second end changes nothing
        assert_eq!(n(events.next().await), 1);
        let err = events.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionCrashed);
        assert!(events.next().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_holder_wakes_on_a_push_from_another_thread() {
        let feed = Feed::new(EventBuffer::default());
        let mut events = Events::new(feed.clone(), "X.y");
        let pusher = std::thread::spawn(move || {
            feed.push(event(7));
            feed.end(None);
        });
        assert_eq!(n(events.next().await), 7);
        assert!(events.next().await.is_none());
        pusher.join().unwrap();
    }

    #[tokio::test]
    async fn dropping_the_stream_abandons_the_feed() {
        let feed = Feed::new(EventBuffer::default());
        let events = Events::new(feed.clone(), "X.y");
        assert!(!feed.is_abandoned());
        drop(events);
        assert!(feed.is_abandoned());
    }

    #[tokio::test]
    async fn wait_times_out_or_reports_the_end() {
        let feed = Feed::new(EventBuffer::new(1, EventOverflow::DropNewest));
        let events = Events::new(feed.clone(), "X.y");
        let err = events.wait(Duration::from_millis(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Event));
        let feed = Feed::new(EventBuffer::new(1, EventOverflow::DropNewest));
        let events = Events::new(feed.clone(), "X.y");
        feed.end(None);
        let err = events.wait(Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionCrashed);
    }

    #[test]
    fn a_buffer_of_nothing_is_refused() {
        let err = EventBuffer::new(0, EventOverflow::DropOldest)
            .check()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(EventBuffer::default().check().is_ok());
    }
}
