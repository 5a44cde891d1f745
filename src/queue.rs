//! The wait queue of one shard: pure data, no I/O, no clock of its own.
//!
//! Strict priority between classes, FIFO within a class, and aging: a waiter's class
//! rises by one for every `aging` it has waited, up to `High` (never `Critical`, so the
//! critical reserve stays for real critical work). Among the class heads the highest
//! effective class wins; on a tie the one waiting longest wins. Bounded: past the bound
//! a push is refused and the caller fails at once with `QueueFull`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::job::Priority;

/// One waiting request.
#[derive(Debug)]
pub(crate) struct Waiting<T> {
    /// Unique within the queue; orders the waiters of a class (arrival order).
    pub(crate) id: u64,
    /// When the request started waiting (kept across shards when it is stolen).
    pub(crate) since: Instant,
    pub(crate) priority: Priority,
    pub(crate) value: T,
}

/// Which classes may be served right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Any class.
    All,
    /// Only `Critical`: the remaining capacity is the critical reserve.
    CriticalOnly,
}

#[derive(Debug)]
pub(crate) struct WaitQueue<T> {
    /// One FIFO per class, indexed by `Priority::index`; ids increase front to back.
    classes: [VecDeque<Waiting<T>>; 4],
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue {
            classes: Default::default(),
        }
    }
}

impl<T> WaitQueue<T> {
    /// Adds a waiter after everyone present, unless `bound` are already waiting; then
    /// gives the value back. (The shard numbers its waiters itself: `push_with_id`.)
    #[cfg(test)]
    pub(crate) fn push(
        &mut self,
        priority: Priority,
        since: Instant,
        value: T,
        bound: usize,
    ) -> Result<u64, T> {
        let id = self
            .classes
            .iter()
            .filter_map(|q| q.back())
            .map(|w| w.id)
            .max()
            .unwrap_or(0)
            + 1;
        self.push_with_id(id, priority, since, value, bound)
    }

    /// Adds a waiter under an id from outside (ids order waiters of a class: a shard
    /// takes them from a counter its callers share, so they follow arrival), unless
    /// `bound` are already waiting.
    pub(crate) fn push_with_id(
        &mut self,
        id: u64,
        priority: Priority,
        since: Instant,
        value: T,
        bound: usize,
    ) -> Result<u64, T> {
        if self.len() >= bound {
            return Err(value);
        }
        self.put_back(Waiting {
            id,
            since,
            priority,
            value,
        });
        Ok(id)
    }

    /// Takes the waiter to serve next, if any may be served under `admit`.
    pub(crate) fn pop(
        &mut self,
        now: Instant,
        aging: Duration,
        admit: Admit,
    ) -> Option<Waiting<T>> {
        let class = self.next_class(now, aging, admit)?;
        self.classes[class].pop_front()
    }

    /// The waiter `pop` would take, left in place.
    pub(crate) fn peek(&self, now: Instant, aging: Duration, admit: Admit) -> Option<&Waiting<T>> {
        let class = self.next_class(now, aging, admit)?;
        self.classes[class].front()
    }

    fn next_class(&self, now: Instant, aging: Duration, admit: Admit) -> Option<usize> {
        let mut best: Option<(usize, Priority, Instant)> = None;
        for (class, q) in self.classes.iter().enumerate() {
            let Some(head) = q.front() else { continue };
            if admit == Admit::CriticalOnly && head.priority != Priority::Critical {
                continue;
            }
            let effective = effective_priority(head.priority, head.since, now, aging);
            let better = match best {
                None => true,
                Some((_, p, since)) => effective > p || (effective == p && head.since < since),
            };
            if better {
                best = Some((class, effective, head.since));
            }
        }
        best.map(|(class, _, _)| class)
    }

    /// Puts a waiter taken out earlier back in its old place (by its id), as if it had
    /// never left.
    pub(crate) fn put_back(&mut self, waiting: Waiting<T>) {
        let q = &mut self.classes[waiting.priority.index()];
        let i = q.partition_point(|w| w.id < waiting.id);
        q.insert(i, waiting);
    }

    /// Removes a waiter (its deadline passed or its caller left). O(log n) to find.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Waiting<T>> {
        for q in &mut self.classes {
            if let Ok(i) = q.binary_search_by_key(&id, |w| w.id) {
                return q.remove(i);
            }
        }
        None
    }

    /// Takes the newest waiter of the lowest class that satisfies `movable`: the one
    /// that loses least by being moved to another shard.
    pub(crate) fn pop_newest_where(&mut self, movable: impl Fn(&T) -> bool) -> Option<Waiting<T>> {
        for q in &mut self.classes {
            if let Some(i) = q.iter().rposition(|w| movable(&w.value)) {
                return q.remove(i);
            }
        }
        None
    }

    /// Drops every waiter for which `keep` is false; returns how many went.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let before = self.len();
        for q in &mut self.classes {
            q.retain(|w| keep(&w.value));
        }
        before - self.len()
    }

    /// Takes every waiter, highest class first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Waiting<T>> + '_ {
        self.classes.iter_mut().rev().flat_map(|q| q.drain(..))
    }

    pub(crate) fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.classes.iter().all(VecDeque::is_empty)
    }

    /// Waiting per class, `Low` first.
    pub(crate) fn len_by_class(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|i| self.classes[i].len())
    }
}

/// The class a waiter competes in after waiting since `since`.
pub(crate) fn effective_priority(
    base: Priority,
    since: Instant,
    now: Instant,
    aging: Duration,
) -> Priority {
    if base == Priority::Critical || aging.is_zero() {
        return base;
    }
    let steps = (now.saturating_duration_since(since).as_nanos() / aging.as_nanos()) as usize;
    let raised = (base.index() + steps).min(Priority::High.index());
    Priority::ALL[raised.max(base.index())]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_AGING: Duration = Duration::ZERO;

    fn drain_order(
        q: &mut WaitQueue<&'static str>,
        now: Instant,
        aging: Duration,
    ) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop(now, aging, Admit::All).map(|w| w.value)).collect()
    }

    #[test]
    fn fifo_within_a_class() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        for v in ["a", "b", "c", "d"] {
            q.push(Priority::Normal, t, v, 10).unwrap();
        }
        assert_eq!(drain_order(&mut q, t, NO_AGING), ["a", "b", "c", "d"]);
    }

    #[test]
    fn waiters_put_back_regain_their_places() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        for v in ["a", "b", "c", "d", "e"] {
            q.push(Priority::Normal, t, v, 10).unwrap();
        }
        let a = q.pop(t, NO_AGING, Admit::All).unwrap();
        let b = q.pop(t, NO_AGING, Admit::All).unwrap();
        q.push(Priority::Normal, t, "f", 10).unwrap();
        // An id from outside lands by its order, and removal by id still works.
        q.put_back(b);
        q.put_back(a);
        q.push_with_id(1_000, Priority::Normal, t, "g", 10).unwrap();
        assert_eq!(q.remove(1_000).map(|w| w.value), Some("g"));
        assert_eq!(
            drain_order(&mut q, t, NO_AGING),
            ["a", "b", "c", "d", "e", "f"]
        );
    }

    #[test]
    fn strict_priority_between_classes() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        q.push(Priority::Low, t, "low", 10).unwrap();
        q.push(Priority::Normal, t, "normal", 10).unwrap();
        q.push(Priority::Critical, t, "critical", 10).unwrap();
        q.push(Priority::High, t, "high", 10).unwrap();
        q.push(Priority::Normal, t, "normal2", 10).unwrap();
        assert_eq!(
            drain_order(&mut q, t, NO_AGING),
            ["critical", "high", "normal", "normal2", "low"]
        );
    }

    #[test]
    fn an_old_low_waiter_ages_past_newer_high_ones() {
        let t0 = Instant::now();
        let aging = Duration::from_secs(1);
        let mut q = WaitQueue::default();
        q.push(Priority::Low, t0, "old-low", 10).unwrap();
        let later = t0 + Duration::from_secs(5);
        q.push(Priority::High, later, "new-high", 10).unwrap();
        q.push(Priority::Critical, later, "critical", 10).unwrap();
        // Aging never reaches Critical; at High, the longer wait wins the tie.
        assert_eq!(
            drain_order(&mut q, later, aging),
            ["critical", "old-low", "new-high"]
        );
        // Without enough waiting, class order holds.
        let mut q = WaitQueue::default();
        q.push(Priority::Low, t0, "low", 10).unwrap();
        q.push(Priority::High, t0, "high", 10).unwrap();
        assert_eq!(
            drain_order(&mut q, t0 + Duration::from_millis(999), aging),
            ["high", "low"]
        );
    }

    #[test]
    fn effective_priority_steps_and_caps() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(effective_priority(Priority::Low, t, t, s), Priority::Low);
        assert_eq!(
            effective_priority(Priority::Low, t, t + s, s),
            Priority::Normal
        );
        assert_eq!(
            effective_priority(Priority::Low, t, t + 60 * s, s),
            Priority::High
        );
        assert_eq!(
            effective_priority(Priority::Critical, t, t + s, s),
            Priority::Critical
        );
        assert_eq!(
            effective_priority(Priority::Low, t + s, t, s),
            Priority::Low
        );
    }

    #[test]
    fn the_critical_reserve_admits_only_critical() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        q.push(Priority::High, t, "high", 10).unwrap();
        assert!(q.pop(t, NO_AGING, Admit::CriticalOnly).is_none());
        q.push(Priority::Critical, t, "critical", 10).unwrap();
        assert_eq!(
            q.pop(t, NO_AGING, Admit::CriticalOnly).unwrap().value,
            "critical"
        );
        assert_eq!(q.pop(t, NO_AGING, Admit::All).unwrap().value, "high");
    }

    #[test]
    fn the_bound_refuses_and_gives_the_value_back() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        q.push(Priority::Low, t, "a", 2).unwrap();
        q.push(Priority::High, t, "b", 2).unwrap();
        assert_eq!(q.push(Priority::Critical, t, "c", 2), Err("c"));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn removal_by_id_for_deadlines_and_cancellation() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        let a = q.push(Priority::Normal, t, "a", 10).unwrap();
        let b = q.push(Priority::Normal, t, "b", 10).unwrap();
        let c = q.push(Priority::Low, t, "c", 10).unwrap();
        assert_eq!(q.remove(b).unwrap().value, "b");
        assert!(q.remove(b).is_none(), "removed once");
        assert_eq!(q.remove(c).unwrap().value, "c");
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(t, NO_AGING, Admit::All).unwrap().id, a);
        assert!(q.is_empty());
    }

    #[test]
    fn moves_the_newest_movable_of_the_lowest_class() {
        let t = Instant::now();
        let mut q = WaitQueue::default();
        q.push(Priority::High, t, "high", 10).unwrap();
        q.push(Priority::Low, t, "low-movable", 10).unwrap();
        q.push(Priority::Low, t, "low-sticky", 10).unwrap();
        let moved = q.pop_newest_where(|v| !v.ends_with("sticky")).unwrap();
        assert_eq!(moved.value, "low-movable");
        assert_eq!(
            q.pop_newest_where(|v| v.ends_with("zzz")).map(|w| w.value),
            None
        );
        assert_eq!(q.len_by_class(), [1, 0, 1, 0]);
        assert_eq!(q.retain(|v| *v != "high"), 1);
        assert_eq!(q.drain().count(), 1);
    }
}
