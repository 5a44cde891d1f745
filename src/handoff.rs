//! Handing a leased session straight to the next caller, in the releasing caller's thread.
//!
//! Without this, a [`Lease`] going back costs two trips through its shard's loop: the
//! `Release` message, then the grant to the next waiter. Under contention the shard
//! instead moves the heads of its wait queue (plain `acquire` requests only) into its
//! [`Line`] ahead of time, up to one per held lease. Dropping a lease whose session may
//! be passed on pops the first caller still waiting there, records the hand-off for the
//! shard (an [`Outcome`] the shard reads before it handles any message, so before
//! anything the new holder sends), and hands it a lease on the same session, without
//! waking the shard's thread on the way. The shard keeps the
//! rest of each request (its job, deadline and position) and takes everyone still in the
//! line back into its queue whenever order demands it: a higher class arrives, a deadline
//! passes, a session turns idle, the configuration changes, shutdown.
//!
//! Whether a session may be passed on (`passable`) is the shard's call, made when it
//! grants or learns of a hand-off: the session must be fit for another use (alive, not
//! due for retirement, nobody waiting for it by affinity) and the configuration must not
//! ask for work between two holders (`Reset::AboutBlank`, per-key or per-job contexts).
//! Checked by `loom-tests` (`handoff_races_reclaim`, `handoff_skips_a_caller_who_left`).

use tokio::time::Instant;

use crate::pool::Lease;
use crate::shard::Msg;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{mpsc, oneshot, Arc, SegQueue};
use crate::Result;

/// A caller waiting in a shard's line: its queue id and where its lease goes.
pub struct Successor {
    /// The request's id in its shard's wait queue (kept while it is in the line).
    pub id: u64,
    /// The waiting `acquire`'s reply channel.
    pub tx: oneshot::Sender<Result<Lease>>,
}

/// What a releasing lease did with a caller it took from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Lease `lease`'s session went to `successor`, whose wait ended at `at`.
    Passed {
        /// The lease (its id stays with the session).
        lease: u64,
        /// The caller's queue id.
        successor: u64,
        /// When it got the session.
        at: Instant,
    },
    /// `successor` had left; the session went on to the next caller or to the shard.
    Left {
        /// The caller's queue id.
        successor: u64,
    },
}

/// The callers a shard lets releasing leases serve directly, first come first served,
/// and what became of those taken out.
#[derive(Default)]
pub struct Line {
    waiting: SegQueue<Successor>,
    outcomes: SegQueue<Outcome>,
}

impl Line {
    /// What releasing leases did since the last call, in order (the shard, before it
    /// handles any message: a new holder's messages come after its hand-off).
    pub fn outcomes(&self) -> impl Iterator<Item = Outcome> + '_ {
        std::iter::from_fn(|| self.outcomes.pop())
    }

    /// Adds a caller at the back (the shard, moving the head of its queue).
    pub fn push(&self, successor: Successor) {
        self.waiting.push(successor);
    }

    /// Takes everyone still in the line, in order (the shard, to take them back).
    pub fn drain(&self) -> Vec<Successor> {
        std::iter::from_fn(|| self.waiting.pop()).collect()
    }
}

/// What a lease needs to pass its session on: the shard's line and the session's
/// `passable` flag.
#[derive(Clone)]
pub struct Handoff {
    line: Arc<Line>,
    passable: Arc<AtomicBool>,
}

impl Handoff {
    /// A lease on a session with this `passable` flag, served from `line`.
    pub fn new(line: Arc<Line>, passable: Arc<AtomicBool>) -> Self {
        Handoff { line, passable }
    }
}

/// Gives lease `lease`'s session back: to the first caller in the line who still waits
/// (recorded for the shard first, as [`Outcome::Passed`], so it is there before anything
/// the new holder sends), or else to the shard (`Release`). A
/// caller who leaves the line as the lease reaches it hands the lease back, and the next
/// one is tried; the session is never lost, and never held twice.
pub fn return_session(
    shard: usize,
    lease: u64,
    inbox: &mpsc::UnboundedSender<Msg>,
    handoff: Option<&Handoff>,
) {
    if let Some(h) = handoff.filter(|h| h.passable.load(Ordering::Acquire)) {
        while let Some(next) = h.line.waiting.pop() {
            let left = Outcome::Left { successor: next.id };
            if next.tx.is_closed() {
                h.line.outcomes.push(left);
                continue;
            }
            let passed = Outcome::Passed {
                lease,
                successor: next.id,
                at: Instant::now(),
            };
            let lease = Lease::new(shard, lease, inbox.clone(), Some(h.clone()));
            #[cfg(not(cdpmux_loom_mutant))]
            {
                h.line.outcomes.push(passed);
                match next.tx.send(Ok(lease)) {
                    Ok(()) => return,
                    // It left just now: the lease is ours again; try the next one. (The
                    // shard has counted a use for it already: harmless, and rare.)
                    Err(lease) => {
                        if let Ok(lease) = lease {
                            lease.defuse();
                        }
                    }
                }
            }
            // Seeded bug for the loom model: handing the lease over before telling the
            // shard lets the new holder's commands overtake the `Passed`.
            #[cfg(cdpmux_loom_mutant)]
            {
                match next.tx.send(Ok(lease)) {
                    Ok(()) => {
                        h.line.outcomes.push(passed);
                        return;
                    }
                    Err(lease) => {
                        if let Ok(lease) = lease {
                            lease.defuse();
                        }
                        h.line.outcomes.push(left);
                    }
                }
            }
        }
    }
    let _ = inbox.send(Msg::Release { lease });
}
