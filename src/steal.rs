//! Overflow work stealing between shards.
//!
//! A saturated shard (waiters past the watermark, no idle session, at its limit) pushes
//! the requests that may move into one lock-free queue per priority class. A shard with
//! spare capacity takes from them, highest class first, one request at a time, before
//! it parks. Shards never block on these queues: they try to take, and otherwise park on
//! their own async wake-up, which `push` fires.
//!
//! The check-then-park race: a shard announces it is parking (sets its bit), then looks
//! at `queued` once more; a pusher counts its request in, pushes it, then looks at the
//! parked bits. A `SeqCst` fence sits between each side's write and its read, so at least
//! one sees the other: either the shard sees the request and does not park, or the pusher
//! sees the bit and wakes the shard. (`SeqCst` accesses alone would do in C11, but loom
//! models them as `AcqRel` and reports a lost wake-up; the fences are the form loom
//! checks, and cost little on these rare paths.) `loom-tests/` checks this.

use crate::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::SeqCst};
use crate::sync::SegQueue;

/// Most shards a pool may have (one bit each in the parked mask).
pub(crate) const MAX_SHARDS: usize = 64;

/// The shared overflow queues and the parked-shard mask.
pub struct Overflow<T> {
    /// One queue per priority class, `Low` first.
    classes: [SegQueue<T>; 4],
    /// Requests pushed and not yet taken; may briefly run ahead of the queues.
    queued: AtomicUsize,
    /// Bit `i` set: shard `i` has spare capacity and is parked (or about to).
    parked: AtomicU64,
}

impl<T> Default for Overflow<T> {
    fn default() -> Self {
        Overflow {
            classes: [
                SegQueue::new(),
                SegQueue::new(),
                SegQueue::new(),
                SegQueue::new(),
            ],
            queued: AtomicUsize::new(0),
            parked: AtomicU64::new(0),
        }
    }
}

impl<T> Overflow<T> {
    /// Offers a request of priority class `class` to other shards. Returns the shard to
    /// wake, if one was parked; the caller wakes it.
    pub fn push(&self, class: usize, request: T) -> Option<usize> {
        self.queued.fetch_add(1, SeqCst);
        self.classes[class].push(request);
        fence(SeqCst); // pairs with the fence in `prepare_park`
        self.claim_parked()
    }

    /// Takes the oldest request of the highest non-empty class.
    pub fn take(&self) -> Option<T> {
        if self.queued.load(SeqCst) == 0 {
            return None;
        }
        for class in self.classes.iter().rev() {
            if let Some(request) = class.pop() {
                self.queued.fetch_sub(1, SeqCst);
                return Some(request);
            }
        }
        None
    }

    /// Announces that `shard` is about to park with spare capacity. Returns `true` when
    /// requests are waiting: then the shard must not park, but take.
    pub fn prepare_park(&self, shard: usize) -> bool {
        let bit = 1u64 << shard;
        self.parked.fetch_or(bit, SeqCst);
        fence(SeqCst); // pairs with the fence in `push`

        // The re-check (module header): without it, a push that missed our bit is lost.
        let waiting = !crate::mutant::park_skips_recheck() && self.queued.load(SeqCst) > 0;
        if waiting {
            self.parked.fetch_and(!bit, SeqCst);
        }
        waiting
    }

    /// `shard` is awake again (or has no spare capacity): stop waking it.
    pub fn unpark(&self, shard: usize) {
        self.parked.fetch_and(!(1u64 << shard), SeqCst);
    }

    /// True when some shard is parked with spare capacity: only then is offering work
    /// worth it.
    pub fn has_parked(&self) -> bool {
        self.parked.load(SeqCst) != 0
    }

    /// Requests offered and not yet taken (approximate while a push is in progress).
    pub fn len(&self) -> usize {
        self.queued.load(SeqCst)
    }

    /// True when no request is on offer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clears one parked bit and returns its shard, for the caller to wake (a shard
    /// whose line has callers, for a parked shard to help with).
    pub(crate) fn claim_parked(&self) -> Option<usize> {
        let mut mask = self.parked.load(SeqCst);
        while mask != 0 {
            let shard = mask.trailing_zeros() as usize;
            let bit = 1u64 << shard;
            let before = self.parked.fetch_and(!bit, SeqCst);
            if before & bit != 0 {
                return Some(shard);
            }
            mask = before & !bit;
        }
        None
    }
}

#[cfg(all(test, not(cdpmux_loom)))]
mod tests {
    use super::*;

    #[test]
    fn highest_class_first_fifo_within() {
        let o = Overflow::default();
        o.push(0, "low1");
        o.push(2, "high1");
        o.push(0, "low2");
        o.push(2, "high2");
        let order: Vec<_> = std::iter::from_fn(|| o.take()).collect();
        assert_eq!(order, ["high1", "high2", "low1", "low2"]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_push_wakes_a_parked_shard_once() {
        let o = Overflow::default();
        assert!(!o.prepare_park(3));
        assert!(!o.prepare_park(1));
        assert_eq!(o.push(1, "a"), Some(1));
        assert_eq!(o.push(1, "b"), Some(3));
        assert_eq!(o.push(1, "c"), None);
        assert!(o.prepare_park(2), "work is waiting: do not park");
        o.unpark(2);
        assert_eq!(o.len(), 3);
    }
}
