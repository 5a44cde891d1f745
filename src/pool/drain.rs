//! Ending a pool gracefully: [`Pool::drain`] refuses new requests, lets everything queued
//! and running finish, then shuts the pool down; [`Pool::idle`] waits for a quiet moment
//! without stopping anything.
//!
//! Owns the two flags a drain sets, and the errors a drained request sees. Never takes a
//! lock on the request path: a request reads one flag; `idle` is woken by the load gauges
//! (see `idle.rs`).

use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::sync::atomic::{AtomicBool, Ordering};

/// Whether a drain has begun, and whether its deadline passed.
#[derive(Default)]
pub(super) struct DrainState {
    /// Set by `drain`: new requests are refused, the ones in flight go on.
    draining: AtomicBool,
    /// Set when a drain's deadline passed: what it stopped hears so.
    expired: AtomicBool,
}

impl Pool {
    /// Refuses a new request while the pool drains.
    pub(super) fn refuse_if_draining(&self) -> Result<()> {
        if self.inner.drain.draining.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Shutdown,
                "the pool is draining and takes no new requests",
            ));
        }
        Ok(())
    }

    /// A `Shutdown` error of a request a drain stopped at its deadline says so.
    pub(super) fn explain_drain(&self, e: Error) -> Error {
        if e.is_shutdown() && self.inner.drain.expired.load(Ordering::Acquire) {
            return Error::new(
                ErrorKind::Shutdown,
                "the pool's drain deadline passed before this request finished; it was stopped",
            );
        }
        e
    }

    /// Resolves when no request is queued or running: every [`run`](Pool::run) and
    /// [`acquire`](Pool::acquire) call has returned (a job waiting out a retry's backoff
    /// counts as running). A lease already granted is its holder's and does not count.
    /// Resolves at once on a quiet pool; call it again to wait for the next quiet moment.
    ///
    /// Cancel safety: dropping the future only stops the wait. It costs nothing while
    /// requests come and go: it wakes only when a shard's count falls to zero.
    pub async fn idle(&self) {
        self.inner.gauges.quiet().await;
    }

    /// Drains the pool, then shuts it down: new requests are refused at once
    /// ([`ErrorKind::Shutdown`], "the pool is draining"), every request already queued
    /// or running goes on to finish (with its retries), and once none is left the pool
    /// shuts down as [`shutdown`](Pool::shutdown) does, giving held leases what is left
    /// of `deadline`. A request made on another thread just as the drain begins is either
    /// finished or refused with [`ErrorKind::Shutdown`], never left waiting.
    ///
    /// If `deadline` passes first, the requests still queued or running are stopped and
    /// fail with [`ErrorKind::Shutdown`] saying the drain's deadline passed, and `drain`
    /// returns a [`TimeoutKind::Drain`](crate::TimeoutKind::Drain) error after the pool
    /// is down.
    ///
    /// Cancel safety: dropping the future leaves the pool refusing new requests; the
    /// requests in flight go on. Call [`shutdown`](Pool::shutdown) to finish the job.
    pub async fn drain(&self, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        self.inner.drain.draining.store(true, Ordering::Release);
        let finished = tokio::time::timeout(deadline, self.idle()).await.is_ok();
        if !finished {
            self.inner.drain.expired.store(true, Ordering::Release);
        }
        let rest = deadline.saturating_sub(started.elapsed());
        self.shutdown(rest).await?;
        if finished {
            return Ok(());
        }
        let e = Error::timeout(TimeoutKind::Drain, "drain", deadline);
        Err(Error::new(
            e.kind(),
            format!(
                "{}: the requests still queued or running were stopped; give the drain longer",
                e.message()
            ),
        ))
    }
}
