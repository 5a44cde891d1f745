//! Knowing when the pool is quiet: no request routed to a shard and not yet answered.
//!
//! [`Quiet`] wakes [`Pool::idle`](crate::Pool::idle) callers when a shard's load gauge
//! falls to zero; they add the gauges up again and wait on if some other shard is busy.
//! While nobody waits, the request path pays one fence when a gauge reaches zero and
//! takes no lock: the `Notify` is touched only with a watcher present.
//!
//! The race between a watcher that checks the gauges and a request that leaves: each
//! side writes (the watcher count, the gauge), fences, then reads the other's word, so
//! at least one sees the other: the watcher sees zero, or the leaver sees the watcher
//! and wakes it (its `Notified` exists before the fence, so a wake-up after that point
//! is never lost).

use std::pin::pin;

use crate::sync::atomic::{fence, AtomicUsize, Ordering};

/// Wakes watchers of the pool's load when a gauge falls to zero.
#[derive(Default)]
pub(crate) struct Quiet {
    watchers: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quiet").finish_non_exhaustive()
    }
}

impl Quiet {
    /// A gauge just fell to zero: wake whoever waits for quiet, if anyone does.
    pub(crate) fn fell_to_zero(&self) {
        fence(Ordering::SeqCst); // pairs with the fence in `until`
        if self.watchers.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Resolves once `is_quiet()` holds, checking again after every gauge that falls to
    /// zero. Cancel-safe: dropping it only stops the watch.
    pub(crate) async fn until(&self, is_quiet: impl Fn() -> bool) {
        let _watching = Watching::new(&self.watchers);
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            fence(Ordering::SeqCst); // pairs with the fence in `fell_to_zero`
            if is_quiet() {
                return;
            }
            notified.await;
        }
    }
}

/// One watcher counted in; counted out on drop (however the watch ends).
struct Watching<'a>(&'a AtomicUsize);

impl<'a> Watching<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Watching(count)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
