//! The plan's side of the hand-off line (see `handoff`): which queued `acquire` requests
//! go into the line, when callers may join it by themselves, what releasing leases did
//! with the callers they served, and whether a leased session may be passed on.

use std::time::Duration;

use tokio::time::Instant;

use super::{handoff_allowed, Plan};
use crate::config::Config;
use crate::handoff::Outcome;
use crate::job::wait_deadline;
use crate::queue::Admit;
use crate::shard::msg::{Request, Work};
use crate::shard::sessions::{admit_after_release, PageHandle};
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

    /// Moves queue heads into the line while every session is out and leases are held
    /// (plain `acquire` requests only, in queue order), then opens or closes the line to
    /// callers joining by themselves.
    pub(super) fn fill_line(&mut self, now: Instant, cfg: &Config) {
        self.line_up_heads(now, cfg);
        self.update_open(cfg);
    }

    fn line_up_heads(&mut self, now: Instant, cfg: &Config) {
        if !self.line_applies(cfg) {
            return;
        }
        let admit = admit_after_release(cfg, self.sessions.busy);
        let plain = |r: &Request| matches!(r.work, Work::Acquire(_)) && r.job.affinity.is_none();
        // A request offered by a saturated shard first, one per turn, as in `pump`: the
        // sessions here go round without the pump, and it must not be stranded.
        if admit == Admit::All {
            if let Some(request) = self.take_offered() {
                let outranked = self
                    .waiters
                    .peek(now, cfg.aging, admit)
                    .is_some_and(|h| h.job.priority > request.job.priority);
                if outranked || !plain(&request) {
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
        while self.waiters.peek(now, cfg.aging, admit).is_some_and(plain) {
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

    /// True when a line is worth keeping: hand-off allowed, every session out (none
    /// idle, none to open) and held by leases that could pass it on.
    pub(super) fn line_applies(&self, cfg: &Config) -> bool {
        handoff_allowed(cfg)
            && !self.shutting_down
            && self.sessions.idle.is_empty()
            && self.sessions.live() >= cfg.sessions_per_shard
            && !self.leases.is_empty()
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
                && self.sessions.len() <= cfg.sessions_per_shard;
            s.passable.store(ok, Ordering::Release);
        }
    }
}
