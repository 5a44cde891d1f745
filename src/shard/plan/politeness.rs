//! The plan's side of per-key politeness (see `crate::politeness`): which keyed requests
//! are held for their key's turn instead of queued, when held ones go into the queue,
//! and the run-time rules a crawler sets per key.
//!
//! A held request is not in the queue, so it stands in front of nobody; a request let in
//! holds its key's ticket and is served by the queue's usual rules. It never leaves the
//! shard while it holds the ticket (`overflow_if_saturated` keeps it), so the key's
//! limits hold on the one shard its hash picks. No IO, no clock.

use std::sync::Arc as StdArc;

use tokio::time::Instant;

use super::Plan;
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::job::wait_timeout_error;
use crate::politeness::Politeness;
use crate::shard::sessions::PageHandle;
use crate::shard::waiters::Waiter;

impl<P: PageHandle> Plan<P> {
    /// Holds `waiter` if its key may not let it in now (its key is at its limit, or its
    /// next start is ahead); gives it back otherwise, with its key's ticket if the key
    /// is limited.
    pub(super) fn hold_if_throttled(
        &mut self,
        waiter: Waiter,
        now: Instant,
        cfg: &Config,
    ) -> Option<Waiter> {
        if self.politeness.is_off(cfg.politeness) {
            return Some(waiter);
        }
        let Some(key) = waiter
            .request
            .job
            .affinity
            .as_ref()
            .map(|a| a.key_arc().clone())
        else {
            return Some(waiter);
        };
        let id = waiter.request.arrival;
        if self.politeness.admit(&key, id, now, cfg.politeness) {
            return Some(waiter);
        }
        let waiting =
            self.waiters.queue_len() + self.waiters.parked_len() + self.politeness.held_len();
        if waiting >= cfg.max_queue {
            self.refuse_full(waiter, cfg);
            return None;
        }
        self.metrics.borrow_mut().counters.throttled += 1;
        let (priority, since, deadline) = (
            waiter.request.job.priority,
            waiter.request.submitted,
            waiter.deadline,
        );
        self.politeness
            .hold(&key, id, priority, since, deadline, waiter);
        None
    }

    /// Fails a request the queue's bound refuses.
    pub(super) fn refuse_full(&mut self, waiter: Waiter, cfg: &Config) {
        self.politeness.left(waiter.request.arrival);
        self.metrics.borrow_mut().counters.queue_full += 1;
        let error = Error::new(
            ErrorKind::QueueFull,
            format!(
                "queue full ({} waiting on shard {}); raise max_queue, add sessions, or retry later",
                cfg.max_queue, self.shard
            ),
        );
        self.fail(waiter.request.work, error);
    }

    /// Moves the held requests whose keys may let them in now into the queue (or to
    /// their key's session), in each key's order. True when any moved.
    pub(super) fn release_throttled(&mut self, now: Instant, cfg: &Config) -> bool {
        for id in self.waiters.take_dropped() {
            self.politeness.left(id);
        }
        let mut any = false;
        while let Some(waiter) = self.politeness.release(now, cfg.aging, cfg.politeness) {
            any = true;
            if waiter.request.work.is_abandoned() {
                self.politeness.left(waiter.request.arrival);
                continue;
            }
            if let Some(waiter) = self.route_by_affinity(waiter, now, cfg) {
                // Admitted when it was held: the bound does not refuse it now.
                self.waiters.requeue(waiter);
            }
        }
        any
    }

    /// Fails the held requests whose wait is over. True when any was due.
    pub(super) fn expire_throttled(&mut self, now: Instant, cfg: &Config) -> bool {
        let mut any = false;
        while let Some(w) = self.politeness.expire_one(now) {
            any = true;
            if !w.request.work.is_abandoned() {
                self.metrics.borrow_mut().counters.timeout(w.kind);
                let error = wait_timeout_error(w.kind, &w.request.job, cfg);
                self.fail(w.request.work, error);
            }
        }
        any || self.politeness.next_wake().is_some_and(|at| at <= now)
    }

    /// Sets `key`'s own politeness rule (`None`: back to the pool's default), and lets
    /// in what the new rule allows.
    pub(crate) fn set_politeness(
        &mut self,
        key: StdArc<str>,
        rule: Option<Politeness>,
        now: Instant,
        cfg: &Config,
    ) {
        self.politeness.set(key, rule);
        self.pump(now, cfg);
    }
}
