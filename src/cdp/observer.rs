//! What the transport reports about its own work, for whoever measures it.
//!
//! Owns: the [`TransportObserver`] trait, the only way command latencies, command
//! deadlines, blocked requests and flush sizes leave the transport. Never: names a pool
//! or shard type; the pool's metrics implement this trait on their side
//! (`crate::metrics`).

use std::time::Duration;

/// Hears about every command a connection finishes and every flush it makes.
///
/// Called on the connection's thread, from inside the transport: an implementation must
/// not call back into the connection.
pub(crate) trait TransportObserver {
    /// A command to `method` finished after `latency`; `batched` when it was part of a
    /// [`Batch`](super::Batch).
    fn command(&self, method: &str, latency: Duration, ok: bool, batched: bool);

    /// A command passed its deadline (recorded besides its [`command`](Self::command)).
    fn command_timed_out(&self);

    /// A page's resource blocking failed one request (reported by Chromium's
    /// `Network.loadingFailed`, so only on pages with the `Network` domain on).
    fn blocked_request(&self);

    /// A request paused for an interceptor was continued because its handler did not
    /// answer in time.
    fn intercept_timed_out(&self);

    /// The writer sent `frames` frames in one flush.
    fn flush(&self, frames: u64);

    /// An incoming frame was not valid CDP and was dropped.
    fn malformed_frame(&self);

    /// Full event streams ([`Events`](super::Events)) dropped `n` events.
    fn events_dropped(&self, n: u64);
}
