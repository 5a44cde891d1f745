//! The deadlines of the requests this shard offered to the others (the overflow queues,
//! `steal.rs`). A request waiting there is in no shard's queue, so no shard's deadline
//! index watches it; the shard that offered it keeps its deadline here, and when one
//! falls due, fails every offered request whose wait is over, wherever it came from.
//!
//! The queues are lock-free FIFOs with no removal from the middle: the sweep takes every
//! offered request and offers the live ones again in the order taken, so each class
//! stays first in, first out. A request taken by a shard meanwhile is that shard's (its
//! deadline entry there); the one kept here is then stale and its sweep finds nothing.
//! Never waits and never reads the clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::time::Instant;

use super::{Action, Plan};
use crate::config::Config;
use crate::job::{wait_deadline, wait_timeout_error};
use crate::shard::sessions::PageHandle;

/// Deadlines of requests offered by this shard, earliest first.
#[derive(Default)]
pub(crate) struct Offered {
    deadlines: BinaryHeap<Reverse<Instant>>,
}

impl Offered {
    /// A request due at `deadline` went to the overflow queues.
    pub(crate) fn record(&mut self, deadline: Instant) {
        self.deadlines.push(Reverse(deadline));
    }

    /// The earliest deadline of an offered request.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(at)| *at)
    }

    /// Forgets the deadlines due by `now`; true if there were any.
    fn take_due(&mut self, now: Instant) -> bool {
        let mut any = false;
        while self.deadlines.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.deadlines.pop();
            any = true;
        }
        any
    }
}

impl<P: PageHandle> Plan<P> {
    /// Fails the offered requests whose wait is over, if one of this shard's fell due.
    /// True if it looked.
    pub(super) fn expire_offered(&mut self, now: Instant, cfg: &Config) -> bool {
        if !self.offered.take_due(now) {
            return false;
        }
        let mut live = Vec::new();
        while let Some(request) = self.overflow.take() {
            if request.work.is_abandoned() {
                continue;
            }
            let (deadline, kind) = wait_deadline(&request.job, request.submitted, cfg);
            if deadline <= now {
                self.metrics.borrow_mut().counters.timeout(kind);
                let error = wait_timeout_error(kind, &request.job, cfg);
                self.fail(request.work, error);
            } else {
                live.push(request);
            }
        }
        for request in live {
            let class = request.job.priority.index();
            if let Some(shard) = self.overflow.push(class, request) {
                self.actions.push(Action::Wake(shard));
            }
        }
        true
    }
}
