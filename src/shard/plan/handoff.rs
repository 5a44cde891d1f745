//! The plan's side of the hand-off line (see `handoff`): which queued requests go into
//! the line, when callers may join it by themselves, which line a session turning idle
//! serves (its own, or the pool's earliest caller), what releasing leases did with the
//! callers they served, and whether a leased session may be passed on.

use std::time::Duration;

use tokio::time::Instant;

use super::{handoff_allowed, Plan};
use crate::config::{Config, Isolation};
use crate::error::{shutdown_error, timeout_error};
use crate::handoff::{earliest_line, earliest_other, Outcome, Successor};
use crate::job::wait_deadline;
use crate::queue::Admit;
use crate::shard::msg::{Request, Work};
use crate::shard::sessions::{admit_after_release, general_room, PageHandle};
use crate::shard::waiters::{SessionKey, Waiter};
use crate::sync::atomic::Ordering;

impl<P: PageHandle> Plan<P> {
    /// Records what releasing leases did with the callers they took from the line, and
    /// tops the line up. Run before any message: a new holder's messages come after its
    /// hand-off.
    pub(crate) fn take_outcomes(&mut self, now: Instant, cfg: &Config) {
        let outcomes: Vec<Outcome> = self.waiters.line().outcomes().collect();
        if outcomes.is_empty() {
            return;
        }
        for outcome in outcomes {
            match outcome {
                Outcome::Passed {
                    lease,
                    successor,
                    waited,
                    command_timeout,
                    joined,
                    across,
                } => {
                    self.waiters.out_of_line(successor);
                    self.passed(lease, waited, command_timeout, now, cfg);
                    let counters = &mut self.metrics.borrow_mut().counters;
                    counters.joined_handoffs += u64::from(joined);
                    counters.cross_shard_handoffs += u64::from(across);
                }
                Outcome::Left { successor } | Outcome::Served { successor } => {
                    self.waiters.out_of_line(successor);
                }
                Outcome::Expired { successor, kind } => {
                    self.waiters.out_of_line(successor);
                    self.metrics.borrow_mut().counters.timeout(kind);
                }
            }
        }
        // No capacity changed hands, so no pump: only the line needs topping up.
        self.fill_line(now, cfg);
    }

    /// A lease passed its session on: the session's new use is counted and its command
    /// deadline is the new job's.
    fn passed(
        &mut self,
        lease: u64,
        waited: Duration,
        command_timeout: Option<Duration>,
        now: Instant,
        cfg: &Config,
    ) {
        let Some(key) = self.leases.get(&lease).copied() else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(key) {
            s.uses += 1;
            s.last_used = now;
            s.page.set_uses(s.uses);
            s.page
                .set_command_timeout(command_timeout.unwrap_or(cfg.command_timeout));
            let mut m = self.metrics.borrow_mut();
            m.counters.sessions_reused += 1;
            m.counters.handoffs += 1;
            m.acquire_wait(waited);
        }
        self.update_passable(key, now, cfg);
    }

    /// Moves queue heads into the line while every session is out (plain requests only,
    /// in queue order), then opens or closes the line to callers joining by themselves,
    /// and wakes a shard with sessions to spare if callers wait here.
    pub(super) fn fill_line(&mut self, now: Instant, cfg: &Config) {
        self.line_up_heads(now, cfg);
        self.update_open(cfg);
        if self.shards > 1 && !self.waiters.line_is_empty() && self.overflow.has_parked() {
            if let Some(shard) = self.overflow.claim_parked() {
                self.actions.push(super::Action::Wake(shard));
            }
        }
    }

    /// Serves the lines with idle sessions, first come first served: this shard's line,
    /// or while nothing is queued here and its line holds only `Normal` callers (nothing
    /// of its own comes first) the pool's line whose first caller came earliest.
    /// (Whoever waits in this shard's queue comes after its line: see `line_up_heads`.)
    /// Unlike a releasing lease, the shard knows its own queue, and another shard's line
    /// holds that shard's oldest requests whether it is open or not.
    pub(super) fn serve_lines(&mut self, now: Instant, cfg: &Config) {
        while !self.shutting_down
            && !self.sessions.idle.is_empty()
            && self.sessions.busy < general_room(cfg)
        {
            let own_first = self.shards == 1
                || !self.waiters.queue_is_empty()
                || !self.waiters.line_all_normal();
            let from = if own_first {
                self.shard
            } else {
                earliest_line(&self.lines).unwrap_or(self.shard)
            };
            if from == self.shard && self.waiters.line_is_empty() {
                break;
            }
            let Some(key) = self.take_idle(None, now, cfg) else {
                break;
            };
            let Some(s) = self.pop_line_of(from) else {
                self.sessions.idle.push(key);
                break;
            };
            match self.admit_from_line(s, now) {
                Some(request) => self.start(key, request, now, cfg),
                None => self.sessions.idle.push(key),
            }
        }
    }

    /// Takes the first caller of shard `from`'s line. Another shard's caller that shard
    /// put there is recorded as served, for it to forget.
    fn pop_line_of(&mut self, from: usize) -> Option<Successor<Work>> {
        if from == self.shard {
            return self.waiters.pop_line();
        }
        let line = &self.lines[from];
        let s = line.pop()?;
        if !s.joined {
            line.record(Outcome::Served { successor: s.id });
        }
        self.metrics.borrow_mut().counters.cross_shard_handoffs += 1;
        Some(s)
    }

    /// The request of a caller taken from a line, unless it left or its wait is over
    /// (then it hears so).
    fn admit_from_line(&mut self, s: Successor<Work>, now: Instant) -> Option<Request> {
        if s.tx.is_abandoned() {
            return None;
        }
        let (deadline, kind) = s.deadline;
        if deadline <= now {
            self.metrics.borrow_mut().counters.timeout(kind);
            let limit = deadline.saturating_duration_since(s.submitted);
            self.fail(s.tx, timeout_error(kind, limit));
            return None;
        }
        Some(Request {
            job: s.job,
            work: s.tx,
            submitted: s.submitted,
            arrival: s.id,
            attempts: 0,
        })
    }

    /// A shard with sessions to spare takes the earliest caller waiting in another
    /// shard's open line, as it takes offered requests. False when there was none.
    pub(crate) fn help_lines(&mut self, now: Instant, cfg: &Config) -> bool {
        if self.shards < 2 || !self.has_spare_capacity(cfg) {
            return false;
        }
        let Some(from) = earliest_other(&self.lines, self.shard) else {
            return false;
        };
        let Some(s) = self.pop_line_of(from) else {
            return false;
        };
        if let Some(request) = self.admit_from_line(s, now) {
            self.submit(request, now, cfg);
        }
        true
    }

    /// Some other shard's open line has a caller waiting (a hint: see `help_lines`).
    pub(crate) fn others_wait_in_line(&self) -> bool {
        self.shards > 1 && earliest_other(&self.lines, self.shard).is_some()
    }

    /// A `run` caller joined the line as it closed: whoever is in the line now comes
    /// back into the queue (or, shutting down, hears so), so nobody is stranded there.
    pub(crate) fn reclaim(&mut self, now: Instant, cfg: &Config) {
        if self.shutting_down {
            for s in self.waiters.line().close_and_drain() {
                self.waiters.out_of_line(s.id);
                self.fail(s.tx, shutdown_error());
            }
            return;
        }
        if self.waiters.line().is_open() {
            return; // the line is served as it is
        }
        self.waiters.take_back_line();
        self.pump(now, cfg);
    }

    fn line_up_heads(&mut self, now: Instant, cfg: &Config) {
        if !self.line_applies(cfg) {
            return;
        }
        let admit = admit_after_release(cfg, self.sessions.busy);
        let plain = |r: &Request| r.job.affinity.is_none() && r.attempts == 0;
        // A request offered by a saturated shard first, one per turn, as in `pump`: the
        // sessions here go round without the pump, and it must not be stranded.
        if admit == Admit::All {
            if let Some(request) = self.take_offered() {
                let outranked = self
                    .waiters
                    .peek(now, cfg.aging, admit)
                    .is_some_and(|h| h.job.priority > request.job.priority);
                if outranked || !plain(&request) || self.waiters.goes_before_line(&request) {
                    self.requeue(request, cfg);
                } else {
                    let (deadline, kind) = wait_deadline(&request.job, request.submitted, cfg);
                    self.waiters.line_up(Waiter {
                        request,
                        deadline,
                        kind,
                    });
                }
            }
        }
        let mut merged = false;
        while let Some(next) = self
            .waiters
            .peek(now, cfg.aging, admit)
            .filter(|r| plain(r))
        {
            // A head that must be served before the line's last caller (a job a releasing
            // lease sent back, a request offered by another shard): the line comes back
            // into the queue, which puts everyone in order, and is lined up again.
            if self.waiters.goes_before_line(next) {
                if merged {
                    break;
                }
                merged = true;
                self.waiters.take_back_line();
                continue;
            }
            let Some(w) = self.waiters.pop(now, cfg.aging, admit) else {
                break;
            };
            self.waiters.line_up(w);
        }
    }

    /// Holds the line open for callers to join by themselves exactly while that keeps
    /// the order the queue would: nobody queued, every session out (one more would not
    /// be admitted for a `Normal` request otherwise), nobody below `Normal` in the line.
    pub(super) fn update_open(&mut self, cfg: &Config) {
        let open = self.line_applies(cfg)
            && self.waiters.queue_is_empty()
            && admit_after_release(cfg, self.sessions.busy) == Admit::All
            && self.waiters.line_all_normal_or_above();
        self.line_may_open = open;
        if !open {
            self.waiters.stop_joining();
        }
    }

    /// Opens the line if `update_open` allows it. Called only with the inbox empty: a
    /// request already sent to the shard must be queued (and lined up) before anyone
    /// joins the line behind its back.
    pub(crate) fn open_line_if_allowed(&mut self, now: Instant, cfg: &Config) {
        if self.line_may_open {
            self.waiters
                .open_line(now, cfg.wait_timeout.min(cfg.job_timeout));
        }
    }

    /// True when a line is worth keeping: the line switched on and every session out
    /// (none idle, none to open, none opening: a request waiting for an opening stays
    /// in the queue, where a failed opening answers it). Sessions serve the line as they
    /// come back (to the shard, or from a lease straight to the next `acquire` caller
    /// where that is allowed).
    pub(super) fn line_applies(&self, cfg: &Config) -> bool {
        cfg.lease_handoff
            && cfg.isolation != Isolation::ContextPerKey
            && !self.shutting_down
            && self.sessions.idle.is_empty()
            && self.sessions.creating == 0
            && self.sessions.live() >= cfg.sessions_per_shard
    }

    /// Decides whether leased session `key` may go straight to the next caller: it must
    /// be fit for another use, and nobody may be waiting for it by affinity.
    pub(super) fn update_passable(&self, key: SessionKey, now: Instant, cfg: &Config) {
        if let Some(s) = self.sessions.get(key) {
            let ok = handoff_allowed(cfg)
                && !self.shutting_down
                && s.page.is_alive()
                && !s.expired(cfg, now)
                && !self.waiters.has_parked_for(key)
                && !s.lease.is_some_and(|l| self.holds.is_limited(l))
                // Its key's politeness counts the job until the shard sees it end.
                && !self.politeness.is_running(key)
                && self.sessions.len() <= cfg.sessions_per_shard;
            s.passable.store(ok, Ordering::Release);
        }
    }
}
