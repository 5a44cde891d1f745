//! How long each lease may be held: the deadline index over a shard's leases with a hold
//! limit ([`Job::max_hold`](crate::Job::max_hold), or the job's `timeout`), and the
//! leases taken back at their deadline until their holder lets go.
//!
//! Pure data: no IO, no clock (`now` comes in). The plan asks it when a lease falls due
//! and takes the page back itself; a lease is in `until` at most once and has exactly
//! one entry in `index` while it is.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::job::{later, Job};

/// The hold deadline of a lease granted at `now` for `job` (submitted at `submitted`)
/// and the limit it comes from: `max_hold` from the grant, else the job's `timeout` from
/// submission (as for a `run` job); `None` when the job sets neither.
pub(crate) fn hold_deadline(
    job: &Job,
    submitted: Instant,
    now: Instant,
) -> Option<(Instant, Duration)> {
    match (job.max_hold, job.timeout) {
        (Some(hold), _) => Some((later(now, hold), hold)),
        (None, Some(limit)) => Some((later(submitted, limit), limit)),
        (None, None) => None,
    }
}

/// The shard's leases with a hold limit (see the module header).
#[derive(Default)]
pub(crate) struct Holds {
    until: HashMap<u64, (Instant, Duration)>,
    index: BTreeSet<(Instant, u64)>,
    /// Leases taken back, with their limit, until their holder lets go (for the error
    /// its later calls get).
    taken_back: HashMap<u64, Duration>,
}

impl Holds {
    /// Lease `lease` may be held until `until` (`limit` after it began).
    pub(crate) fn hold(&mut self, lease: u64, until: Instant, limit: Duration) {
        self.end(lease);
        self.until.insert(lease, (until, limit));
        self.index.insert((until, lease));
    }

    /// True when lease `lease` has a hold limit (it must come back through the shard,
    /// which starts the next holder's limit).
    pub(crate) fn is_limited(&self, lease: u64) -> bool {
        self.until.contains_key(&lease)
    }

    /// Lease `lease` came back (or never had a limit): forgets it.
    pub(crate) fn end(&mut self, lease: u64) {
        if let Some((until, _)) = self.until.remove(&lease) {
            self.index.remove(&(until, lease));
        }
        self.taken_back.remove(&lease);
    }

    /// The earliest hold deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.index.first().map(|(at, _)| *at)
    }

    /// A lease whose deadline is at or before `now`, now counted as taken back.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, lease) = self.index.first()?;
        if at > now {
            return None;
        }
        self.index.remove(&(at, lease));
        let (_, limit) = self.until.remove(&lease)?;
        self.taken_back.insert(lease, limit);
        Some(lease)
    }

    /// Why a call on lease `lease` cannot run: held past its limit, or its page is gone.
    pub(crate) fn refusal(&self, lease: u64) -> Error {
        match self.taken_back.get(&lease) {
            Some(limit) => Error::timeout(
                TimeoutKind::Job,
                format!(
                    "lease {lease} was held past its limit and the pool took its page back \
                     (Job::max_hold or Job::timeout); acquire another lease"
                ),
                *limit,
            ),
            None => Error::new(ErrorKind::SessionCrashed, "the lease's session is gone"),
        }
    }

    /// Forgets everything (shutdown closes every page).
    pub(crate) fn clear(&mut self) {
        self.until.clear();
        self.index.clear();
        self.taken_back.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_fall_due_in_deadline_order_and_are_then_refused_as_taken_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut holds = Holds::default();
        holds.hold(1, t0 + 3 * s, 3 * s);
        holds.hold(2, t0 + s, s);
        holds.hold(3, t0 + 2 * s, 2 * s);
        holds.end(3); // given back in time
        assert_eq!(holds.next_deadline(), Some(t0 + s));
        assert_eq!(holds.take_due(t0), None);
        assert_eq!(holds.take_due(t0 + 5 * s), Some(2));
        assert_eq!(holds.take_due(t0 + 5 * s), Some(1));
        assert_eq!(holds.take_due(t0 + 5 * s), None);
        assert_eq!(holds.next_deadline(), None);
        let err = holds.refusal(1);
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Job));
        assert!(err.to_string().contains("took its page back"), "{err}");
        assert_eq!(holds.refusal(3).kind(), ErrorKind::SessionCrashed);
        holds.end(1); // its holder let go at last
        assert_eq!(holds.refusal(1).kind(), ErrorKind::SessionCrashed);
    }

    #[test]
    fn the_limit_is_max_hold_from_the_grant_else_the_timeout_from_submission() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let granted = t0 + 5 * s;
        assert_eq!(hold_deadline(&Job::new(), t0, granted), None);
        let by_timeout = Job::new().timeout(10 * s);
        assert_eq!(
            hold_deadline(&by_timeout, t0, granted),
            Some((t0 + 10 * s, 10 * s))
        );
        let both = Job::new().timeout(10 * s).max_hold(2 * s);
        assert_eq!(
            hold_deadline(&both, t0, granted),
            Some((granted + 2 * s, 2 * s))
        );
    }
}
