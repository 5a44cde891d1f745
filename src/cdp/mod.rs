//! The CDP transport: one WebSocket per browser, flat page sessions multiplexed over it.
//!
//! Layers, each importing only those above it in this list:
//! `protocol` (pure: ids, the pending-call table, frame classification);
//! `observer` (what the transport reports, for metrics); `events` (event waits);
//! `proxy_auth` (pure: what a page with proxy credentials answers to `Fetch` events);
//! `routing` (pure: the session registry, where an event goes, which events end a
//! session); `deadlines` (who hears a reply, direct-call deadlines); `socket` (the
//! WebSocket's handshake, writer and reader tasks, with `batching`, the pure rule for
//! when the writer flushes); `connection` ([`Connection`], the
//! thin async shell that ties them together around one socket); `batch` ([`Batch`], pipelined raw calls);
//! `intercept` ([`Interceptor`], a handler deciding each request a page sends);
//! `streams` ([`Events`], bounded event streams for callers, any thread);
//! `session` ([`Page`], one flat session, and opening it); `blocking` ([`Blocking`], what
//! a page never loads); `navigation` ([`Page::goto_with`], a navigation matched to its
//! own loader, and the [`Navigation`] it returns). All are `!Send`: they live on
//! the thread (and in the tokio `LocalSet`) that created them, which is what lets them
//! share state without locks.

// Public only for the fuzz targets and property tests (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod protocol;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod protocol;

mod batch;
mod batching;
mod blocking;
mod connection;
mod deadlines;
mod events;
mod intercept;
mod navigation;
mod observer;
mod proxy_auth;
mod routing;
mod session;
mod settings;
mod socket;
mod streams;

pub(crate) use batch::encode_params;
pub use batch::{Batch, BatchResults, Slot};
pub use batching::FlushPolicy;
pub use blocking::{Blocking, ResourceType};
pub use connection::{Connection, ConnectionConfig, ConnectionStats};
pub use events::EventWaiter;
pub use intercept::{Decision, FailReason, InterceptedRequest, Interceptor};
pub use navigation::{GotoOptions, Navigation, Redirect, WaitUntil};
pub(crate) use observer::TransportObserver;
pub use protocol::Event;
pub use proxy_auth::ProxyCredentials;
pub(crate) use session::{evaluated_value, EvaluateByValue, EVALUATE};
pub use session::{InterceptGuard, Page, PageOptions};
pub(crate) use streams::Feed;
pub use streams::{EventBuffer, EventOverflow, Events, TypedEvents};
