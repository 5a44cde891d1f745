//! Deadlines of calls answered straight to another thread ("direct" calls).
//!
//! Why a second mechanism: a call awaited on the connection's thread (`InFlight`) already
//! has a task waiting for it, so its deadline is a timer on that task and costs nothing
//! here. A direct call has no task at all — its reply goes from the reader straight to a
//! lease holder on another thread, which is what makes lease commands cheap — so the
//! connection keeps those deadlines itself, with one task per connection that sleeps
//! until the earliest one. Merging the two would put a task wake-up (or a timer) back on
//! every direct call, or an index update on every awaited one.
//!
//! Owns: who hears a call's reply ([`Waiter`]: the awaiting task, or a direct caller with
//! its deadline), when the deadline task must wake next ([`DirectDeadlines`]), which
//! calls are overdue, and the task's loop ([`enforce`]).
//! Never: reads the clock outside [`enforce`], or takes a call out of the pending table
//! unless its deadline has passed; the connection fails what
//! [`DirectDeadlines::expire`] hands back.

use std::rc::Rc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tokio::sync::{oneshot, Notify};

use super::observer::TransportObserver;
use super::protocol::{PendingCall, PendingTable, Reply};
use crate::error::{Error, Result, TimeoutKind};

/// Who hears a call's reply.
pub(crate) enum Waiter {
    /// The caller awaiting it (`InFlight`), which keeps its deadline and records it.
    Awaited(oneshot::Sender<Result<Reply>>),
    /// A caller on another thread (a lease holder), answered straight from the reader
    /// with no task in between: the connection keeps its deadline and records it.
    Direct {
        tx: oneshot::Sender<Result<Reply>>,
        started: Instant,
        timeout: Duration,
        metrics: Option<Rc<dyn TransportObserver>>,
    },
}

impl Waiter {
    /// Answers the call to `method` with `result`.
    pub(crate) fn send(self, method: &str, result: Result<Reply>) {
        match self {
            Waiter::Awaited(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Direct {
                tx,
                started,
                metrics,
                ..
            } => {
                if let Some(m) = metrics {
                    m.command(method, started.elapsed(), result.is_ok(), false);
                }
                let _ = tx.send(result);
            }
        }
    }

    /// Fails a direct call whose deadline passed.
    pub(crate) fn time_out(self, method: &str) {
        if let Waiter::Direct {
            timeout, metrics, ..
        } = &self
        {
            if let Some(m) = metrics {
                m.command_timed_out();
            }
            let error = Error::timeout(TimeoutKind::Command, method, *timeout);
            self.send(method, Err(error));
        }
    }

    /// When a direct call's deadline passes.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Waiter::Direct {
                started, timeout, ..
            } => Some(crate::job::later_std(*started, *timeout)),
            Waiter::Awaited(_) => None,
        }
    }
}

/// When the deadline task wakes next. Invariant: no pending direct call's deadline is
/// earlier than `next` (calls answered early may leave `next` too early, never too late:
/// the task then wakes, finds nothing due, and sleeps again).
#[derive(Debug, Default)]
pub(crate) struct DirectDeadlines {
    next: Option<Instant>,
}

impl DirectDeadlines {
    /// Notes the deadline of a call just queued. True when it is earlier than the one
    /// the task sleeps toward: the task must be woken to sleep less.
    pub(crate) fn note(&mut self, at: Instant) -> bool {
        let earlier = self.next.is_none_or(|next| at < next);
        if earlier {
            self.next = Some(at);
        }
        earlier
    }

    /// Takes out of `pending` every call whose deadline (`deadline_of` its waiter; `None`
    /// for calls without one) is at or before `now`, and sets the next wake-up to the
    /// earliest deadline left.
    pub(crate) fn expire<T>(
        &mut self,
        pending: &mut PendingTable<T>,
        now: Instant,
        deadline_of: impl Fn(&T) -> Option<Instant>,
    ) -> SmallVec<[PendingCall<T>; 4]> {
        let mut next: Option<Instant> = None;
        let mut due = SmallVec::<[u64; 4]>::new();
        for (id, call) in pending.iter() {
            match call.waiter.as_ref().and_then(&deadline_of) {
                Some(at) if at <= now => due.push(id),
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.next = next;
        due.into_iter()
            .filter_map(|id| pending.complete(id))
            .collect()
    }

    /// When the task must wake next; `None` when no direct call is pending.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }
}

/// The deadline task: `expire(now)` fails what is due and returns the next deadline, or
/// `None` once the connection is gone or closing (the task then ends). Between calls it
/// sleeps until that deadline, or until `moved` says an earlier one was queued.
pub(crate) async fn enforce(
    moved: &Notify,
    mut expire: impl FnMut(Instant) -> Option<Option<Instant>>,
) {
    while let Some(next) = expire(Instant::now()) {
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = moved.notified() => {}
                }
            }
            None => moved.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A pending table whose waiters are their own deadlines (`None`: no deadline).
    fn table(deadlines: &[Option<Instant>]) -> PendingTable<Option<Instant>> {
        let mut t = PendingTable::default();
        for d in deadlines {
            t.insert(Some(1), "X.y".into(), Some(*d));
        }
        t
    }

    #[test]
    fn only_an_earlier_deadline_wakes_the_task() {
        let t0 = Instant::now();
        let mut d = DirectDeadlines::default();
        assert!(d.note(t0 + Duration::from_secs(30)), "the first one");
        assert!(!d.note(t0 + Duration::from_secs(40)), "a later one");
        assert!(!d.note(t0 + Duration::from_secs(30)), "an equal one");
        assert!(d.note(t0 + Duration::from_secs(5)), "an earlier one");
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn expiry_takes_the_overdue_calls_and_sleeps_until_the_next() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut pending = table(&[Some(t0 + s(1)), Some(t0 + s(3)), None, Some(t0 + s(2))]);
        let mut d = DirectDeadlines::default();
        d.note(t0 + s(1));

        let due = d.expire(&mut pending, t0 + s(2), |w| *w);
        let mut taken: Vec<_> = due.into_iter().map(|c| c.waiter.unwrap()).collect();
        taken.sort();
        assert_eq!(
            taken,
            [Some(t0 + s(1)), Some(t0 + s(2))],
            "due at or before now"
        );
        assert_eq!(d.next(), Some(t0 + s(3)));
        assert_eq!(
            pending.len(),
            2,
            "the later call and the one without a deadline"
        );

        assert!(d.expire(&mut pending, t0 + s(2), |w| *w).is_empty());
        assert_eq!(d.expire(&mut pending, t0 + s(9), |w| *w).len(), 1);
        assert_eq!(d.next(), None, "nothing left with a deadline");
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn calls_answered_before_their_deadline_leave_nothing_due() {
        let t0 = Instant::now();
        let mut pending = table(&[Some(t0 + Duration::from_secs(1))]);
        let mut d = DirectDeadlines::default();
        d.note(t0 + Duration::from_secs(1));
        let answered: Vec<u64> = pending.iter().map(|(id, _)| id).collect();
        for id in answered {
            pending.complete(id);
        }
        assert!(d
            .expire(&mut pending, t0 + Duration::from_secs(5), |w| *w)
            .is_empty());
        assert_eq!(d.next(), None);
    }
}
