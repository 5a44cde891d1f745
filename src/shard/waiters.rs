//! Every place a request can wait for a session on a shard, and the one deadline index
//! over them. (A keyed request held for its key's politeness turn waits for no session
//! yet: it is in `shard::throttle::Throttle`, with its own deadlines, until its key lets
//! it in here.)
//!
//! A waiting request is in exactly one of three places:
//! - the wait queue (priority, FIFO, aging: `queue`),
//! - parked for the busy session its affinity key is bound to (`parked`),
//! - the hand-off line, where freed sessions of any shard and releasing leases serve it
//!   in arrival order (`handoff`; this type keeps the shard's record of who it put
//!   there).
//!
//! Each has exactly one entry in `deadlines`, and the entry goes when the request leaves.
//! Only this type touches those fields, so the index cannot drift from the places: moving
//! a request is one method call here. Pure data: no IO, no clock (`now` comes in).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::msg::{Request, Work};
use crate::error::TimeoutKind;
use crate::handoff::{Line, Successor};
use crate::job::later;
use crate::job::Priority;
use crate::queue::{Admit, WaitQueue, Waiting};
use crate::sync::Arc;

/// The key of a session in its shard's slab.
pub(crate) type SessionKey = u64;

/// A request with its wait deadline and which deadline that is.
pub(crate) struct Waiter {
    pub(crate) request: Request,
    pub(crate) deadline: Instant,
    pub(crate) kind: TimeoutKind,
}

/// A wait deadline in the index, tagged with where its request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Queue(u64),
    Parked(SessionKey, u64),
    Line(u64),
    /// The line has been open for the pool's wait limit: callers who joined it by
    /// themselves may be due (see `handoff`).
    LineOpen,
}

/// A keyed request waiting for its busy session until `until`.
struct Parked {
    id: u64,
    until: Instant,
    waiter: Waiter,
}

/// The shard's record of a request it put in the line (the request itself is there).
struct Lined {
    priority: Priority,
    deadline: Instant,
}

/// What fell due in [`Waiters::expire`].
pub(crate) enum Due {
    /// Its wait is over: fail it with its deadline's kind.
    Failed(Waiter),
    /// Requests moved between places (the line went back to the queue, a soft-affinity
    /// wait ended): the shard should serve the queue again.
    Moved,
}

/// Every waiting request of a shard (see the module header).
pub(crate) struct Waiters {
    queue: WaitQueue<Waiter>,
    parked: HashMap<SessionKey, VecDeque<Parked>>,
    parked_count: usize,
    next_parked: u64,
    line: Arc<Line<Work>>,
    lined: HashMap<u64, Lined>,
    /// `lined` counted by class, `Low` first: the line's class questions in O(1).
    lined_by_class: [usize; 4],
    /// While the line is open to callers joining by themselves: when it must be taken
    /// back (the earliest deadline any of them can have).
    line_open_until: Option<Instant>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    /// Arrival numbers of requests dropped here because their callers left, for the
    /// plan to settle their keys' politeness (`take_dropped`).
    dropped: Vec<u64>,
}

impl Waiters {
    pub(crate) fn new(line: Arc<Line<Work>>) -> Self {
        Waiters {
            queue: WaitQueue::default(),
            parked: HashMap::new(),
            parked_count: 0,
            next_parked: 0,
            line,
            lined: HashMap::new(),
            lined_by_class: [0; 4],
            line_open_until: None,
            deadlines: BTreeSet::new(),
            dropped: Vec::new(),
        }
    }

    /// The shard's line.
    pub(crate) fn line(&self) -> &Arc<Line<Work>> {
        &self.line
    }

    /// The earliest deadline of any waiting request.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Nobody waits in the queue.
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Requests in the queue.
    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Requests parked for their affinity session.
    pub(crate) fn parked_len(&self) -> usize {
        self.parked_count
    }

    /// Nobody waits in the line, whether put there by the shard or joined by themselves.
    pub(crate) fn line_is_empty(&self) -> bool {
        self.lined.is_empty() && self.line.joined() == 0
    }

    /// Requests waiting per class, `Low` first (callers who joined the line by
    /// themselves count as `Normal`).
    pub(crate) fn by_class(&self) -> [usize; 4] {
        let mut by_class = self.queue.len_by_class();
        for (n, lined) in by_class.iter_mut().zip(self.lined_by_class) {
            *n += lined;
        }
        by_class[Priority::Normal.index()] += self.line.joined();
        for p in self.parked.values().flatten() {
            by_class[p.waiter.request.job.priority.index()] += 1;
        }
        by_class
    }

    // ---- the queue ----

    /// Queues `waiter` under its arrival number unless `bound` requests already wait;
    /// then drops abandoned ones and tries once more, or gives it back.
    // The refused request comes back whole, for its caller to hear why.
    #[allow(clippy::result_large_err)]
    pub(crate) fn enqueue(&mut self, waiter: Waiter, bound: usize) -> Result<(), Waiter> {
        let bound = bound.saturating_sub(self.parked_count + self.lined.len() + self.line.joined());
        let (id, priority, since) = (
            waiter.request.arrival,
            waiter.request.job.priority,
            waiter.request.submitted.into_std(),
        );
        let deadline = waiter.deadline;
        let pushed = match self.queue.push_with_id(id, priority, since, waiter, bound) {
            Ok(id) => Ok(id),
            Err(waiter) => {
                self.drop_abandoned();
                self.queue.push_with_id(id, priority, since, waiter, bound)
            }
        };
        let id = pushed?;
        self.deadlines.insert((deadline, Deadline::Queue(id)));
        Ok(())
    }

    /// Drops queued requests whose callers have left.
    fn drop_abandoned(&mut self) {
        let mut gone = Vec::new();
        self.queue.retain(|w| {
            let left = w.request.work.is_abandoned();
            if left {
                gone.push((w.deadline, Deadline::Queue(w.request.arrival)));
                self.dropped.push(w.request.arrival);
            }
            !left
        });
        for d in gone {
            self.deadlines.remove(&d);
        }
    }

    /// The class of the request [`pop`](Self::pop) would take, and its request.
    pub(crate) fn peek(&self, now: Instant, aging: Duration, admit: Admit) -> Option<&Request> {
        self.queue
            .peek(now.into_std(), aging, admit)
            .map(|w| &w.value.request)
    }

    /// Takes the request to serve next under `admit`.
    pub(crate) fn pop(&mut self, now: Instant, aging: Duration, admit: Admit) -> Option<Waiter> {
        let w = self.queue.pop(now.into_std(), aging, admit)?;
        Some(self.unindex(w))
    }

    /// Takes the newest movable request of the lowest class that `may_leave` lets go (to
    /// offer to another shard).
    pub(crate) fn pop_newest_movable(
        &mut self,
        may_leave: impl Fn(&Request) -> bool,
    ) -> Option<(Priority, Waiter)> {
        let w = self
            .queue
            .pop_newest_where(|w| w.request.job.is_movable() && may_leave(&w.request))?;
        let priority = w.priority;
        Some((priority, self.unindex(w)))
    }

    fn unindex(&mut self, w: Waiting<Waiter>) -> Waiter {
        self.deadlines
            .remove(&(w.value.deadline, Deadline::Queue(w.id)));
        w.value
    }

    // ---- parked for a session ----

    /// Parks `waiter` for session `session` until `until` (its own deadline if sticky, a
    /// short affinity wait if soft).
    pub(crate) fn park(&mut self, session: SessionKey, until: Instant, waiter: Waiter) {
        self.next_parked += 1;
        let id = self.next_parked;
        self.deadlines
            .insert((until, Deadline::Parked(session, id)));
        self.parked_count += 1;
        self.parked
            .entry(session)
            .or_default()
            .push_back(Parked { id, until, waiter });
    }

    /// True when someone waits for `session` by affinity.
    pub(crate) fn has_parked_for(&self, session: SessionKey) -> bool {
        self.parked.contains_key(&session)
    }

    /// Takes the first request still waiting for `session`, dropping abandoned ones.
    pub(crate) fn next_parked_for(&mut self, session: SessionKey) -> Option<Waiter> {
        loop {
            let list = self.parked.get_mut(&session)?;
            let Some(p) = list.pop_front() else {
                self.parked.remove(&session);
                return None;
            };
            if list.is_empty() {
                self.parked.remove(&session);
            }
            self.parked_count -= 1;
            self.deadlines
                .remove(&(p.until, Deadline::Parked(session, p.id)));
            if !p.waiter.request.work.is_abandoned() {
                return Some(p.waiter);
            }
            self.dropped.push(p.waiter.request.arrival);
        }
    }

    /// `session` is going away: whoever waited for it joins the queue (whatever its
    /// bound: they were admitted already).
    pub(crate) fn unpark_all(&mut self, session: SessionKey) {
        while let Some(w) = self.next_parked_for(session) {
            self.requeue(w);
        }
    }

    /// Puts an admitted request into the queue whatever its bound.
    pub(crate) fn requeue(&mut self, waiter: Waiter) {
        let _ = self.enqueue(waiter, usize::MAX);
    }

    // ---- the line ----

    /// Puts a plain request (no key, first attempt) into the line under its arrival
    /// number.
    pub(crate) fn line_up(&mut self, waiter: Waiter) {
        let Waiter {
            request,
            deadline,
            kind,
        } = waiter;
        let id = request.arrival;
        let priority = request.job.priority;
        let tx = request.work;
        if tx.is_abandoned() {
            return; // its caller left
        }
        self.deadlines.insert((deadline, Deadline::Line(id)));
        self.lined.insert(id, Lined { priority, deadline });
        self.lined_by_class[priority.index()] += 1;
        self.line.push(Successor {
            id,
            tx,
            job: request.job,
            submitted: request.submitted,
            deadline: (deadline, kind),
            joined: false,
        });
    }

    /// True when `request` must be served before the line's last caller: it outranks
    /// it, or is of its class and came earlier. (Callers who joined by themselves are
    /// `Normal`.) Lining it up would put it out of order.
    pub(crate) fn goes_before_line(&self, request: &Request) -> bool {
        let Some(last) = self.line.last() else {
            return false;
        };
        let class = self
            .lined
            .get(&last)
            .map_or(Priority::Normal, |e| e.priority);
        let priority = request.job.priority;
        priority > class || (priority == class && request.arrival < last)
    }

    /// A caller the shard put in the line is out of it (served, left or expired).
    pub(crate) fn out_of_line(&mut self, id: u64) {
        if let Some(e) = self.lined.remove(&id) {
            self.lined_by_class[e.priority.index()] -= 1;
            self.deadlines.remove(&(e.deadline, Deadline::Line(id)));
        }
    }

    /// Takes the first caller of the line (a session turned idle serves it first).
    pub(crate) fn pop_line(&mut self) -> Option<Successor<Work>> {
        let s = self.line.pop()?;
        self.out_of_line(s.id);
        Some(s)
    }

    /// Someone in the line is of a lower class than `priority`.
    pub(crate) fn line_has_below(&self, priority: Priority) -> bool {
        (self.line.joined() > 0 && priority > Priority::Normal)
            || self.lined_by_class[..priority.index()]
                .iter()
                .any(|n| *n > 0)
    }

    /// Every request the shard put in the line is `Normal` (callers who joined by
    /// themselves are).
    pub(crate) fn line_all_normal(&self) -> bool {
        let normal = Priority::Normal.index();
        self.lined_by_class[normal] == self.lined.len()
    }

    /// Every request the shard put in the line is at least `Normal`.
    pub(crate) fn line_all_normal_or_above(&self) -> bool {
        self.lined_by_class[Priority::Low.index()] == 0
    }

    /// Closes the line and takes everyone still in it back into the queue, each in its
    /// place by arrival number.
    pub(crate) fn take_back_line(&mut self) {
        let taken = self.line.close_and_drain();
        self.line_closed();
        for s in taken {
            self.out_of_line(s.id);
            if s.tx.is_abandoned() {
                continue; // its caller left
            }
            let (deadline, kind) = s.deadline;
            self.requeue(Waiter {
                request: Request {
                    job: s.job,
                    work: s.tx,
                    submitted: s.submitted,
                    arrival: s.id,
                    attempts: 0,
                },
                deadline,
                kind,
            });
        }
    }

    /// Opens the line to callers joining by themselves, who wait at most `limit` by the
    /// pool's deadlines: the line must be taken back by then.
    pub(crate) fn open_line(&mut self, now: Instant, limit: Duration) {
        if self.line.is_open() {
            return;
        }
        if self.line_open_until.is_none() {
            let until = later(now, limit);
            self.deadlines.insert((until, Deadline::LineOpen));
            self.line_open_until = Some(until);
        }
        self.line.set_open(true);
    }

    /// Stops callers joining by themselves; those already in keep their timer.
    pub(crate) fn stop_joining(&mut self) {
        self.line.set_open(false);
        if self.line.joined() == 0 {
            self.line_closed();
        }
    }

    fn line_closed(&mut self) {
        if let Some(until) = self.line_open_until.take() {
            self.deadlines.remove(&(until, Deadline::LineOpen));
        }
    }

    // ---- deadlines ----

    /// Takes the next deadline due by `now`: a request whose wait is over, or a move.
    /// `None` when nothing more is due.
    pub(crate) fn expire_one(&mut self, now: Instant) -> Option<Due> {
        let (at, tag) = *self.deadlines.first().filter(|(at, _)| *at <= now)?;
        self.deadlines.pop_first();
        Some(match tag {
            Deadline::Queue(id) => match self.queue.remove(id) {
                Some(w) => Due::Failed(w.value),
                None => Due::Moved,
            },
            Deadline::LineOpen => {
                // Into the queue, where each deadline has its timer.
                self.line_open_until = None;
                self.take_back_line();
                Due::Moved
            }
            Deadline::Line(id) => {
                // Still in the line: nobody released a lease since its deadline. The
                // line goes back to the queue, and this caller with it unless a lease has
                // just taken it.
                if let Some(e) = self.lined.remove(&id) {
                    self.lined_by_class[e.priority.index()] -= 1;
                }
                self.take_back_line();
                match self.queue.remove(id) {
                    Some(w) => {
                        self.deadlines
                            .remove(&(w.value.deadline, Deadline::Queue(id)));
                        Due::Failed(w.value)
                    }
                    None => Due::Moved,
                }
            }
            Deadline::Parked(session, id) => {
                let Some(w) = self.take_parked(session, id) else {
                    return Some(Due::Moved);
                };
                if w.deadline > at {
                    // Soft affinity: stop waiting for that session, take any.
                    self.requeue(w);
                    Due::Moved
                } else {
                    Due::Failed(w)
                }
            }
        })
    }

    /// Takes the request `id` parked for `session` (its deadline entry is gone already).
    fn take_parked(&mut self, session: SessionKey, id: u64) -> Option<Waiter> {
        let list = self.parked.get_mut(&session)?;
        let i = list.iter().position(|p| p.id == id)?;
        let p = list.remove(i)?;
        if list.is_empty() {
            self.parked.remove(&session);
        }
        self.parked_count -= 1;
        Some(p.waiter)
    }

    /// Arrival numbers of the requests dropped because their callers left, since the
    /// last call.
    pub(crate) fn take_dropped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.dropped)
    }

    /// Takes every waiting request, the line's included (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<Waiter> {
        self.take_back_line();
        self.deadlines.clear();
        let mut all: Vec<Waiter> = self.queue.drain().map(|w| w.value).collect();
        let parked = std::mem::take(&mut self.parked);
        self.parked_count = 0;
        all.extend(parked.into_values().flatten().map(|p| p.waiter));
        all
    }

    /// Checks that every waiting request has exactly one deadline entry and the index
    /// holds nothing else (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let expected = self.queue.len()
            + self.parked_count
            + self.lined.len()
            + usize::from(self.line_open_until.is_some());
        assert_eq!(self.deadlines.len(), expected, "deadline index out of step");
        assert_eq!(
            self.parked_count,
            self.parked.values().map(VecDeque::len).sum::<usize>()
        );
        let mut by_class = [0; 4];
        for e in self.lined.values() {
            by_class[e.priority.index()] += 1;
        }
        assert_eq!(by_class, self.lined_by_class, "line counts out of step");
    }
}

#[cfg(all(test, not(cdpmux_loom)))]
mod tests {
    use super::*;
    use crate::job::Job;
    use crate::sync::oneshot;

    fn waiter(arrival: u64, priority: Priority, now: Instant, wait: Duration) -> Waiter {
        let (tx, rx) = oneshot::channel();
        std::mem::forget(rx); // keep the caller "waiting"
        Waiter {
            request: Request {
                job: Job::new().priority(priority),
                work: Work::Acquire(tx),
                submitted: now,
                arrival,
                attempts: 0,
            },
            deadline: now + wait,
            kind: TimeoutKind::Wait,
        }
    }

    fn waiters() -> Waiters {
        Waiters::new(Arc::new(Line::default()))
    }

    #[test]
    fn every_place_keeps_one_deadline_and_expiry_fails_the_right_request() {
        let now = Instant::now();
        let mut w = waiters();
        w.enqueue(waiter(1, Priority::Normal, now, Duration::from_secs(5)), 10)
            .ok()
            .unwrap();
        w.park(
            7,
            now + Duration::from_secs(1),
            waiter(2, Priority::Normal, now, Duration::from_secs(9)),
        );
        w.line_up(waiter(3, Priority::Normal, now, Duration::from_secs(3)));
        w.check();
        assert_eq!(w.queue_len() + w.parked_len() + w.lined.len(), 3);

        // The soft affinity wait ends first: the parked request joins the queue.
        assert!(matches!(
            w.expire_one(now + Duration::from_secs(1)),
            Some(Due::Moved)
        ));
        assert!(w.expire_one(now + Duration::from_secs(1)).is_none());
        assert_eq!(w.queue_len(), 2);
        w.check();

        // The line's caller is due: the line comes back and it fails, alone.
        match w.expire_one(now + Duration::from_secs(3)) {
            Some(Due::Failed(f)) => assert_eq!(f.request.arrival, 3),
            _ => panic!("the lined-up caller must fail"),
        }
        w.check();
        match w.expire_one(now + Duration::from_secs(5)) {
            Some(Due::Failed(f)) => assert_eq!(f.request.arrival, 1),
            _ => panic!("the queued request must fail"),
        }
        assert_eq!(w.queue_len() + w.parked_len() + w.lined.len(), 1);
        w.check();
    }

    #[test]
    fn the_line_goes_back_into_the_queue_in_arrival_order() {
        let now = Instant::now();
        let mut w = waiters();
        let long = Duration::from_secs(60);
        w.enqueue(waiter(2, Priority::Normal, now, long), 10)
            .ok()
            .unwrap();
        w.line_up(waiter(1, Priority::Normal, now, long));
        w.line_up(waiter(3, Priority::Normal, now, long));
        w.take_back_line();
        w.check();
        let order: Vec<u64> = std::iter::from_fn(|| w.pop(now, Duration::ZERO, Admit::All))
            .map(|x| x.request.arrival)
            .collect();
        assert_eq!(order, [1, 2, 3]);
        w.check();
    }

    #[test]
    fn the_bound_counts_every_place() {
        let now = Instant::now();
        let long = Duration::from_secs(60);
        let mut w = waiters();
        w.park(1, now + long, waiter(1, Priority::Normal, now, long));
        w.line_up(waiter(2, Priority::Normal, now, long));
        assert!(w
            .enqueue(waiter(3, Priority::Normal, now, long), 2)
            .is_err());
        assert!(w.enqueue(waiter(3, Priority::Normal, now, long), 3).is_ok());
        w.check();
    }

    #[test]
    fn a_session_going_away_sends_its_parked_requests_to_the_queue() {
        let now = Instant::now();
        let long = Duration::from_secs(60);
        let mut w = waiters();
        w.park(4, now + long, waiter(5, Priority::High, now, long));
        w.park(4, now + long, waiter(6, Priority::High, now, long));
        w.unpark_all(4);
        assert!(!w.has_parked_for(4));
        assert_eq!(w.queue_len(), 2);
        w.check();
    }
}
