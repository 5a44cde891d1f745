//! The hand-off line: callers waiting for a session, served in arrival order across the
//! pool, handed a session without a trip through a shard's loop where possible.
//!
//! Without this, every cycle under contention goes through its shard's loop more often
//! than it must (the request, the release, the grant to the next waiter), and each
//! shard serves only its own queue, so a shard whose thread is held up holds up its
//! callers while another shard serves later ones. Instead each shard has a [`Line`] of
//! callers, `acquire` and `run` alike:
//!
//! - While every session is out, the shard moves the heads of its wait queue there
//!   (plain requests: no affinity key, first attempt), in order, up to the first that is
//!   not plain.
//! - While its queue is empty and every session is out, the shard holds the line open,
//!   and a plain `Normal` request with the default deadlines joins at the back by
//!   itself, with no message to the shard. Its wait deadline is at least the pool's wait
//!   limit after the line opened, so the shard takes the line back into its queue, where
//!   its timers apply, when that much time has passed with the line open.
//! - A session that turns idle on its shard serves the line first (it holds the oldest
//!   requests), and while its own line is open (nothing queued there comes first) it
//!   serves whichever open line's first caller came earliest, its own or another
//!   shard's. A job runs on the session's shard, whichever line it waited in. A shard
//!   with sessions to spare takes callers from other shards' open lines, and a shard
//!   with callers in its line wakes such a shard.
//! - Dropping a lease whose session may be passed on pops the first caller still
//!   waiting, chosen the same way. An `acquire` caller gets a lease on the same session:
//!   the hand-off is recorded for the shard (an [`Outcome`] the shard reads before any
//!   event, so before anything the new holder sends). A `run` job goes to the session's
//!   shard, ahead of the session, which then runs it. A caller past its deadline is told
//!   so and skipped.
//! - A caller taken from another shard's line is recorded there as
//!   [`Outcome::Served`], so that shard forgets it. The lines of a pool thus drain as
//!   one queue, in arrival order.
//!
//! Callers who join and requests sent to the shards draw their ids from one counter per
//! pool ([`Line::next_id`], shared by a [`Line::family`]) when they ask, so arrival
//! order holds across both paths and all shards, and lines can be compared. The shard
//! takes everyone in the line back into its queue, each in its place, whenever order or a
//! deadline demands it: a higher class arrives, a deadline falls due with nobody
//! serving, the configuration changes, shutdown. A `run` caller who sees the line close
//! as it joins cannot take its job back out of the line: it asks the shard to take back
//! its line once more (`Msg::Reclaim`). Whether a session may be passed from one lease
//! to the next (`passable`) is the shard's call, made when it grants or learns of a
//! hand-off: the session must be fit for another use (alive, not due for retirement,
//! nobody waiting for it by affinity) and the configuration must not ask for work
//! between two holders (`Reset::AboutBlank`, per-key or per-job contexts).
//!
//! Checked by `loom-tests` (`handoff_races_reclaim`, `handoff_serves_another_shards_line`,
//! `handoff_skips_a_caller_who_left`, `joining_races_the_line_closing`,
//! `a_run_joining_as_the_line_closes_is_reclaimed`).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::TimeoutKind;
use crate::job::Job;
use crate::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, SegQueue};

/// A caller waiting in a shard's line: all of its request. `T` is what the caller wants
/// done with a session (in a pool: lend it to a waiting `acquire`, or run a `run` job on
/// it); the line never looks inside it.
pub struct Successor<T> {
    /// Its arrival number ([`Line::next_id`]), also its id in the shard's wait queue.
    pub id: u64,
    /// What it wants done with the session: lend it (an `acquire`'s reply channel) or
    /// run a job on it.
    pub tx: T,
    /// Its job (priority, deadlines).
    pub job: Job,
    /// When it asked.
    pub submitted: Instant,
    /// When its wait ends, and which deadline that is.
    pub deadline: (Instant, TimeoutKind),
    /// It joined by itself (the shard has no record of it).
    pub joined: bool,
}

/// What a releasing lease did with a caller it took from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Lease `lease`'s session went to `successor` after a wait of `waited`.
    Passed {
        /// The lease (its id stays with the session).
        lease: u64,
        /// The caller's id.
        successor: u64,
        /// How long it waited.
        waited: Duration,
        /// Its job's command deadline, if it set one.
        command_timeout: Option<Duration>,
        /// It had joined the line by itself.
        joined: bool,
        /// It waited in another shard's line.
        across: bool,
    },
    /// `successor` was taken out of this line by someone other than its shard: another
    /// shard's session served it, or a releasing lease sent its job to the session's
    /// shard. Recorded in its own line, for its shard to forget it.
    Served {
        /// The caller's id.
        successor: u64,
    },
    /// `successor` had left; the session went on to the next caller or to the shard.
    Left {
        /// The caller's id.
        successor: u64,
    },
    /// `successor`'s deadline had passed: it was told so, and the session went on.
    Expired {
        /// The caller's id.
        successor: u64,
        /// Which deadline.
        kind: TimeoutKind,
    },
}

/// What became of a caller's attempt to join the line by itself.
pub enum Join<T> {
    /// It waits in the line.
    Joined,
    /// The line was closed: ask the shard (the reply channel comes back).
    Closed(T),
    /// The line closed as it joined: it must withdraw (close its receiver, keep a lease
    /// that reached it, else ask the shard).
    Withdraw,
}

/// The callers a shard lets releasing leases serve directly, first come first served,
/// and what became of those taken out.
///
/// The shard moves the heads of its queue here, and while its queue is empty and every
/// session is out it holds the line `open`: plain `acquire` callers then join at the
/// back by themselves, without a message to the shard. Joining and closing are ordered
/// so that nobody is stranded: a caller pushes, then re-checks `open`; the shard closes,
/// then takes everyone back. Either the shard's drain finds the caller, or the caller
/// sees the line closed and withdraws.
pub struct Line<T> {
    waiting: SegQueue<Successor<T>>,
    /// The arrival numbers of the callers in `waiting`, in the order they were pushed:
    /// push `n` writes slot `n % ARRIVALS`, so the first caller's number is in slot
    /// `popped % ARRIVALS` (see [`Line::first`]).
    arrivals: Box<[AtomicU64]>,
    /// Callers pushed so far.
    pushed: AtomicU64,
    /// Callers taken out so far.
    popped: AtomicU64,
    outcomes: SegQueue<Outcome>,
    open: AtomicBool,
    /// Callers in `waiting` who joined by themselves.
    joined: AtomicUsize,
    /// Arrival numbers, for callers who join and for the shard's queue alike (shared by
    /// a pool's lines).
    ids: Arc<AtomicU64>,
}

/// Slots of a line's ring of arrival numbers. A line longer than this still works; past
/// this many callers, [`Line::first`] reads a later caller's number, so the line looks
/// younger than it is and other lines go first a little more often.
#[cfg(not(cdpmux_loom))]
const ARRIVALS: usize = 1024;
#[cfg(cdpmux_loom)]
const ARRIVALS: usize = 4;

impl<T> Default for Line<T> {
    fn default() -> Self {
        Line {
            waiting: SegQueue::new(),
            arrivals: (0..ARRIVALS).map(|_| AtomicU64::new(0)).collect(),
            pushed: AtomicU64::new(0),
            popped: AtomicU64::new(0),
            outcomes: SegQueue::new(),
            open: AtomicBool::new(false),
            joined: AtomicUsize::new(0),
            ids: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<T> Line<T> {
    /// `n` lines drawing arrival numbers from one counter, so that their callers have
    /// one order: a pool's lines, one per shard.
    pub fn family(n: usize) -> Vec<Arc<Line<T>>> {
        let ids = Arc::new(AtomicU64::new(0));
        (0..n)
            .map(|_| {
                Arc::new(Line {
                    ids: ids.clone(),
                    ..Line::default()
                })
            })
            .collect()
    }

    /// Adds a caller at the back (the shard, moving the head of its queue).
    pub fn push(&self, successor: Successor<T>) {
        let n = self.pushed.fetch_add(1, Ordering::Relaxed);
        self.arrivals[n as usize % ARRIVALS].store(successor.id, Ordering::Relaxed);
        self.waiting.push(successor);
    }

    /// Takes the first caller in the line (a releasing lease, or the shard with a
    /// session that turned idle).
    pub fn pop(&self) -> Option<Successor<T>> {
        let s = self.waiting.pop()?;
        self.popped.fetch_add(1, Ordering::Relaxed);
        if s.joined {
            self.joined.fetch_sub(1, Ordering::AcqRel);
        }
        Some(s)
    }

    /// The next arrival number: a caller joining, or a request as it is made (before it
    /// is sent to a shard), so all follow one order: the order they asked in.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Closes the line and takes everyone still in it, in order (the shard, to take
    /// them back into its queue).
    pub fn close_and_drain(&self) -> Vec<Successor<T>> {
        self.open.store(false, Ordering::SeqCst);
        // Pairs with the fence in `join`: a caller whose re-check still saw the line
        // open has its push visible to the pops below.
        fence(Ordering::SeqCst);
        std::iter::from_fn(|| self.pop()).collect()
    }

    /// Lets callers join by themselves, or stops them (the shard). Closing does not take
    /// anyone back; see [`close_and_drain`](Line::close_and_drain).
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }

    /// True while callers may join by themselves.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// The arrival number of the first caller in the line, if there is one. A hint for
    /// choosing between lines, nothing more: a push or pop racing it may make it a
    /// little off (the line may even turn out empty), and past [`ARRIVALS`] callers it
    /// reads a later one.
    pub(crate) fn first(&self) -> Option<u64> {
        let popped = self.popped.load(Ordering::Relaxed);
        if popped >= self.pushed.load(Ordering::Relaxed) || self.waiting.is_empty() {
            return None;
        }
        Some(self.arrivals[popped as usize % ARRIVALS].load(Ordering::Relaxed))
    }

    /// The arrival number of the last caller pushed, if anyone is in the line. A hint,
    /// like [`first`](Line::first).
    pub(crate) fn last(&self) -> Option<u64> {
        let pushed = self.pushed.load(Ordering::Relaxed);
        if self.popped.load(Ordering::Relaxed) >= pushed || pushed == 0 {
            return None;
        }
        Some(self.arrivals[(pushed - 1) as usize % ARRIVALS].load(Ordering::Relaxed))
    }

    /// Records what a releasing lease did with a caller it took from this line, for the
    /// shard to read before anything the new holder sends.
    pub fn record(&self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    /// Callers in the line, however they came (a hint while others push or pop).
    pub(crate) fn len(&self) -> usize {
        let popped = self.popped.load(Ordering::Relaxed);
        self.pushed.load(Ordering::Relaxed).saturating_sub(popped) as usize
    }

    /// Callers in the line who joined by themselves.
    pub fn joined(&self) -> usize {
        self.joined.load(Ordering::Acquire)
    }

    /// What releasing leases and callers did since the last call, in order (the shard,
    /// before it handles any message: a new holder's messages come after its hand-off).
    pub fn outcomes(&self) -> impl Iterator<Item = Outcome> + '_ {
        std::iter::from_fn(|| self.outcomes.pop())
    }

    /// A plain caller joins at the back if the line is open and holds fewer than `bound`
    /// callers (the pool's `max_queue`: the shard's queue is empty while the line is
    /// open).
    pub fn join(
        &self,
        job: &Job,
        submitted: Instant,
        deadline: (Instant, TimeoutKind),
        tx: T,
        bound: usize,
    ) -> Join<T> {
        if !self.open.load(Ordering::SeqCst) || self.len() >= bound {
            return Join::Closed(tx);
        }
        self.joined.fetch_add(1, Ordering::AcqRel);
        self.push(Successor {
            id: self.next_id(),
            tx,
            job: job.clone(),
            submitted,
            deadline,
            joined: true,
        });
        if crate::mutant::join_trusts_first_look() {
            return Join::Joined;
        }
        fence(Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            Join::Joined
        } else {
            Join::Withdraw
        }
    }
}

/// What a lease needs to pass its session on: the pool's lines, which one is its
/// shard's, and the session's `passable` flag.
pub struct Handoff<T> {
    pub(crate) lines: std::sync::Arc<[Arc<Line<T>>]>,
    pub(crate) shard: usize,
    pub(crate) passable: Arc<AtomicBool>,
}

impl<T> Clone for Handoff<T> {
    fn clone(&self) -> Self {
        Handoff {
            lines: self.lines.clone(),
            shard: self.shard,
            passable: self.passable.clone(),
        }
    }
}

impl<T> Handoff<T> {
    /// A lease on a session of shard `shard` (whose line is `lines[shard]`) with this
    /// `passable` flag.
    pub fn new(
        lines: std::sync::Arc<[Arc<Line<T>>]>,
        shard: usize,
        passable: Arc<AtomicBool>,
    ) -> Self {
        Handoff {
            lines,
            shard,
            passable,
        }
    }

    /// The line to serve next: the shard's own, unless the shard holds it open (nothing
    /// queued there comes first) and another open line's first caller came earlier.
    pub(crate) fn next_line(&self) -> &Line<T> {
        next_line(&self.lines, self.shard)
    }
}

/// The line a session of shard `shard` serves next: its own, unless the shard holds it
/// open (nothing queued there comes first) and another open line's first caller came
/// earlier. Releasing leases and sessions turning idle on their shard choose alike, so a
/// pool's open lines drain as one queue, in arrival order.
pub(crate) fn next_line<T>(lines: &[Arc<Line<T>>], shard: usize) -> &Line<T> {
    let own = &lines[shard];
    if lines.len() == 1 || !own.is_open() {
        return own;
    }
    let mut best = own;
    let mut best_first = own.first().unwrap_or(u64::MAX);
    for line in lines.iter() {
        if let Some(first) = line.first().filter(|f| *f < best_first) {
            if line.is_open() {
                best = line;
                best_first = first;
            }
        }
    }
    best
}

/// The line whose first caller came earliest, open or not, if anyone waits in one.
pub(crate) fn earliest_line<T>(lines: &[Arc<Line<T>>]) -> Option<usize> {
    let firsts = lines.iter().enumerate();
    let (i, _) = firsts
        .filter_map(|(i, line)| line.first().map(|first| (i, first)))
        .min_by_key(|(_, first)| *first)?;
    Some(i)
}

/// The open line of another shard than `shard` whose first caller came earliest, if any
/// caller waits in one: what a shard with sessions to spare helps with.
pub(crate) fn earliest_other<T>(lines: &[Arc<Line<T>>], shard: usize) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, line) in lines.iter().enumerate() {
        if i == shard || !line.is_open() {
            continue;
        }
        if let Some(first) = line.first() {
            if best.is_none_or(|(_, f)| first < f) {
                best = Some((i, first));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(all(test, not(cdpmux_loom)))]
mod tests {
    use super::*;

    /// Puts a caller with arrival number `id` at the back of `line`.
    fn arrive(line: &Line<()>, id: u64) {
        let now = Instant::now();
        line.push(Successor {
            id,
            tx: (),
            job: Job::new(),
            submitted: now,
            deadline: (now + Duration::from_secs(60), TimeoutKind::Wait),
            joined: false,
        });
    }

    /// Serves `n` callers the way a releasing lease on shard 0 chooses them; returns
    /// their arrival numbers in the order served.
    fn serve(handoff: &Handoff<()>, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| handoff.next_line().pop().expect("a caller waits").id)
            .collect()
    }

    #[test]
    fn open_lines_are_served_in_arrival_order_across_shards() {
        let lines: std::sync::Arc<[Arc<Line<()>>]> = Line::family(2).into();
        for line in lines.iter() {
            line.set_open(true);
        }
        // A run of arrivals on shard 0, then on shard 1, then shard 0 again: what
        // routing by load does when one shard's callers pile up.
        for id in (1..=5).chain(9..=10) {
            arrive(&lines[0], id);
        }
        for id in 6..=8 {
            arrive(&lines[1], id);
        }
        let handoff = Handoff::new(lines.clone(), 0, Arc::new(AtomicBool::new(true)));
        assert_eq!(serve(&handoff, 10), (1..=10).collect::<Vec<_>>());
        assert!(handoff.next_line().pop().is_none());
    }

    #[test]
    fn a_closed_own_line_is_served_first() {
        let lines: std::sync::Arc<[Arc<Line<()>>]> = Line::family(2).into();
        lines[1].set_open(true);
        arrive(&lines[0], 7);
        arrive(&lines[1], 3);
        // Shard 0 has closed its line (something queued there comes first): its
        // sessions serve only it.
        let handoff = Handoff::new(lines.clone(), 0, Arc::new(AtomicBool::new(true)));
        assert_eq!(serve(&handoff, 1), [7]);
    }

    #[test]
    fn a_line_longer_than_its_ring_is_still_served_whole() {
        let lines: std::sync::Arc<[Arc<Line<()>>]> = Line::family(2).into();
        for line in lines.iter() {
            line.set_open(true);
        }
        let total = ARRIVALS as u64 + 10;
        for id in 1..=total {
            arrive(&lines[1], id);
        }
        let handoff = Handoff::new(lines.clone(), 0, Arc::new(AtomicBool::new(true)));
        assert_eq!(
            serve(&handoff, total as usize),
            (1..=total).collect::<Vec<_>>()
        );
        assert!(lines[1].first().is_none());
    }
}
