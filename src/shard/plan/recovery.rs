//! The plan's decisions as sessions come and go: opened or failed, given back by a job,
//! a lease, a stop or a reset, probed, swept after a crash, retired by the health round,
//! and everything that waits when a deadline falls due or the pool shuts down.

use std::sync::Arc as StdArc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Action, Plan, Return};
use crate::config::{Config, Reset};
use crate::error::shutdown_error;
use crate::error::Error;
use crate::job::wait_timeout_error;
use crate::queue::Admit;
use crate::shard::sessions::{PageHandle, Session};
use crate::shard::waiters::{Due, SessionKey};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;

impl<P: PageHandle> Plan<P> {
    /// A session opened (for `owner`, on `browser`) after `took`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn opened(
        &mut self,
        owner: Option<StdArc<str>>,
        page: P,
        browser: usize,
        own_context: Option<String>,
        passable: Arc<AtomicBool>,
        took: Duration,
        now: Instant,
        cfg: &Config,
    ) {
        self.sessions.creating -= 1;
        self.done_opening(&owner);
        self.metrics.borrow_mut().session_created(took);
        self.lost = self.lost.saturating_sub(1);
        self.sessions.insert(Session {
            page,
            browser,
            created: now,
            last_used: now,
            uses: 0,
            lease: None,
            passable,
            owner,
            own_context,
        });
        self.pump(now, cfg);
    }

    /// A session could not be opened: the oldest waiter of the highest class learns why,
    /// so errors surface instead of waiting out the deadline.
    ///
    /// A page lost while it was being opened (its renderer crashed, or its socket
    /// dropped) is nobody's failure: the page was not any waiter's yet, so no waiter is
    /// failed and the pump opens another. Repeated losses count against the browser's
    /// breaker (the shell's) like any failed opening.
    pub(crate) fn open_failed(
        &mut self,
        owner: Option<StdArc<str>>,
        error: Error,
        now: Instant,
        cfg: &Config,
    ) {
        self.open_refused(owner, error, now);
        self.pump(now, cfg);
    }

    /// No browser could even be tried (every one is backing off): the same as a failed
    /// opening, but the queue is not served again now. The next capacity change, health
    /// round or deadline does that; serving it here would ask for another opening at
    /// once, and be refused at once, for every waiter in turn.
    pub(crate) fn open_refused(&mut self, owner: Option<StdArc<str>>, error: Error, now: Instant) {
        self.sessions.creating -= 1;
        self.done_opening(&owner);
        self.metrics.borrow_mut().counters.session_create_failures += 1;
        tracing::warn!(shard = self.shard, error = %error, "could not open a session");
        if !error.is_crash() {
            if let Some(w) = self.waiters.pop(now, Duration::ZERO, Admit::All) {
                self.politeness.left(w.request.arrival);
                self.metrics.borrow_mut().counters.jobs_failed += 1;
                self.fail(w.request.work, error);
            }
        }
    }

    pub(super) fn done_opening(&mut self, owner: &Option<StdArc<str>>) {
        if let Some(i) = self.opening.iter().position(|o| o == owner) {
            self.opening.swap_remove(i);
        }
    }

    /// Lease `lease` gave its session back to the shard.
    pub(crate) fn released(&mut self, lease: u64, now: Instant, cfg: &Config) {
        self.released_as(lease, Return::Clean, now, cfg);
    }

    /// Lease `lease`'s session comes back `how` (`Dead`: a hook failed on it).
    pub(crate) fn released_as(&mut self, lease: u64, how: Return, now: Instant, cfg: &Config) {
        self.holds.end(lease);
        let Some(key) = self.leases.remove(&lease) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(key) {
            s.lease = None;
        }
        self.returned(key, how, now, cfg);
    }

    /// A session comes back from a job, a lease, a stop or a reset.
    pub(crate) fn returned(&mut self, key: SessionKey, how: Return, now: Instant, cfg: &Config) {
        // Its job is over, whatever comes next for the page (a stop, a reset).
        self.politeness.finished(key);
        if self.shutting_down {
            // Shutdown closes every target itself.
            self.sessions.busy = self.sessions.busy.saturating_sub(1);
            self.forget(key);
            return;
        }
        let Some(session) = self.sessions.get_mut(key) else {
            self.sessions.busy -= 1;
            return;
        };
        session.last_used = now;
        let single_use = session.own_context.is_some();
        let expired = session.expired(cfg, now);
        if how == Return::Dead || !session.page.is_alive() {
            let page = session.page.clone();
            self.count_gone(&page);
            self.sessions.busy -= 1;
            self.lost += 1;
            self.forget(key);
            self.replenish(cfg);
        } else if how == Return::Retire {
            self.metrics.borrow_mut().counters.sessions_retired += 1;
            self.sessions.busy -= 1;
            self.lost += 1; // replaced now, ready for the retry
            self.forget(key);
            self.replenish(cfg);
        } else if how == Return::Interrupted {
            // Still busy until stopped: nobody gets a page that is mid-load or stuck in
            // a script.
            let page = session.page.clone();
            self.actions.push(Action::Stop { key, page });
            return;
        } else if how == Return::Clean && cfg.reset == Reset::AboutBlank && !single_use {
            // Reset after release, before the page counts as idle: never on the next
            // caller's path.
            let page = session.page.clone();
            self.actions.push(Action::Reset { key, page });
            return;
        } else {
            self.sessions.busy -= 1;
            let shrink = self.sessions.len() > cfg.sessions_per_shard;
            if shrink || single_use || expired {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                self.forget(key);
                if single_use {
                    // ContextPerJob: a fresh context replaces it, off the caller's path.
                    self.lost += 1;
                    self.replenish(cfg);
                }
            } else if let Some(w) = self.waiters.next_parked_for(key) {
                // Someone is waiting for this very session: an affinity hit.
                self.start(key, w.request, now, cfg);
            } else {
                self.sessions.idle.push(key);
            }
        }
        self.pump(now, cfg);
        if !self.overflow.is_empty() {
            self.actions.push(Action::Wake(self.shard));
        }
    }

    /// A health probe is done with an idle session.
    pub(crate) fn probed(&mut self, key: SessionKey, healthy: bool, now: Instant, cfg: &Config) {
        self.sessions.busy -= 1;
        self.sessions.probing -= 1;
        match self.sessions.get(key).map(|s| s.page.is_alive()) {
            None => {}
            Some(_) if self.shutting_down => self.forget(key),
            Some(true) if healthy => self.sessions.idle.push(key),
            Some(_) => {
                tracing::warn!(shard = self.shard, "idle session failed its health probe");
                self.metrics.borrow_mut().counters.sessions_crashed += 1;
                self.lost += 1;
                self.forget(key);
            }
        }
        self.replenish(cfg);
        self.pump(now, cfg);
    }

    /// A page died or a socket closed: drops idle sessions known dead, keeps leased dead
    /// pages from being handed on, and restores the pool's size.
    pub(crate) fn sweep(&mut self, now: Instant, cfg: &Config) {
        for (_, s) in self.sessions.iter() {
            if s.lease.is_some() && !s.page.is_alive() {
                s.passable.store(false, Ordering::Release);
            }
        }
        let dead: Vec<SessionKey> = self
            .sessions
            .idle
            .iter()
            .copied()
            .filter(|k| self.sessions.get(*k).is_none_or(|s| !s.page.is_alive()))
            .collect();
        if !dead.is_empty() {
            self.sessions.idle.retain(|k| !dead.contains(k));
            for key in dead {
                if let Some(s) = self.sessions.get(key) {
                    self.count_gone(&s.page);
                }
                self.lost += 1;
                self.forget(key);
            }
        }
        self.replenish(cfg);
        self.pump(now, cfg);
    }

    /// Opens sessions to replace lost ones and to keep `min_idle` warm, within the limit.
    pub(super) fn replenish(&mut self, cfg: &Config) {
        if self.shutting_down {
            return;
        }
        let s = &self.sessions;
        let warm = s.idle.len() + s.probing + s.creating;
        let warm_gap = cfg.min_idle.saturating_sub(warm);
        let replace = self.lost.saturating_sub(s.creating);
        let to_open = warm_gap
            .max(replace)
            .min(cfg.sessions_per_shard.saturating_sub(s.live()));
        for _ in 0..to_open {
            self.open(None);
        }
    }

    /// The periodic round: retire idle sessions past their age or idleness (keeping
    /// `min_idle`), probe the ones idle for a whole interval, refill.
    pub(crate) fn health(&mut self, now: Instant, cfg: &Config) {
        let idle = std::mem::take(&mut self.sessions.idle);
        let mut remaining = idle.len();
        for key in idle {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            let since_used = now.saturating_duration_since(s.last_used);
            let too_old = !cfg.max_lifetime.is_zero()
                && now.saturating_duration_since(s.created) >= cfg.max_lifetime;
            let too_idle = !cfg.idle_timeout.is_zero()
                && since_used >= cfg.idle_timeout
                && remaining > cfg.min_idle;
            let alive = s.page.is_alive();
            if too_old || too_idle || !alive {
                if alive {
                    self.metrics.borrow_mut().counters.sessions_retired += 1;
                } else {
                    let page = s.page.clone();
                    self.count_gone(&page);
                    self.lost += 1;
                }
                self.forget(key);
                remaining -= 1;
            } else if !cfg.health_interval.is_zero() && since_used >= cfg.health_interval {
                let page = s.page.clone();
                self.sessions.probing += 1;
                self.sessions.busy += 1;
                self.actions.push(Action::Probe { key, page });
            } else {
                self.sessions.idle.push(key);
            }
        }
        self.affinity.expire(now.into_std(), cfg.affinity_ttl);
        self.politeness.sweep(now);
        self.replenish(cfg);
        self.pump(now, cfg);
    }

    /// Fails the waiters whose deadline has passed; soft-affinity waiters whose short
    /// wait for their session ran out join the general queue instead.
    pub(crate) fn expire(&mut self, now: Instant, cfg: &Config) {
        // Releasing leases may have served, skipped or failed callers of the line.
        self.take_outcomes(now, cfg);
        let mut any = self.expire_throttled(now, cfg);
        while let Some(due) = self.waiters.expire_one(now) {
            any = true;
            if let Due::Failed(w) = due {
                self.politeness.left(w.request.arrival);
                if !w.request.work.is_abandoned() {
                    self.metrics.borrow_mut().counters.timeout(w.kind);
                    let error = wait_timeout_error(w.kind, &w.request.job, cfg);
                    self.fail(w.request.work, error);
                }
            }
        }
        // Leases held past their limit: their pages come back, their holders' later
        // calls fail.
        while let Some(lease) = self.holds.take_due(now) {
            self.take_back(lease, now, cfg);
        }
        any |= self.expire_offered(now, cfg);
        if any {
            self.pump(now, cfg);
        }
    }

    /// Lease `lease` was held past its limit: the page comes back as if from a job past
    /// its deadline (stopped, then reused), and the lease can no longer reach it.
    fn take_back(&mut self, lease: u64, now: Instant, cfg: &Config) {
        let Some(key) = self.leases.remove(&lease) else {
            return;
        };
        self.metrics
            .borrow_mut()
            .counters
            .timeout(crate::error::TimeoutKind::Job);
        if let Some(s) = self.sessions.get_mut(key) {
            s.lease = None;
            // Granted with a limit, it was never passable; and it is not the holder's now.
            s.passable.store(false, Ordering::Release);
        }
        self.returned(key, Return::Interrupted, now, cfg);
    }

    /// The live configuration changed: fewer sessions if asked, the line back into the
    /// queue (the pump lines up again what the new configuration allows).
    pub(crate) fn reconfigured(&mut self, now: Instant, cfg: &Config) {
        while self.sessions.len() > cfg.sessions_per_shard {
            let Some(key) = self.sessions.idle.pop() else {
                break;
            };
            self.metrics.borrow_mut().counters.sessions_retired += 1;
            self.forget(key);
        }
        self.waiters.take_back_line();
        self.politeness.touch_all();
        let leased: Vec<_> = self.leases.values().copied().collect();
        for key in leased {
            self.update_passable(key, now, cfg);
        }
        self.pump(now, cfg);
    }

    /// Shutdown begins: no session is passed on any more, and every waiting request
    /// (here and in the overflow queues) fails with `Shutdown`.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for (_, s) in self.sessions.iter() {
            s.passable.store(false, Ordering::Release);
        }
        for w in self.waiters.drain() {
            self.fail(w.request.work, shutdown_error());
        }
        for w in self.politeness.drain() {
            self.fail(w.request.work, shutdown_error());
        }
        while let Some(request) = self.overflow.take() {
            self.fail(request.work, shutdown_error());
        }
    }

    /// Every session's page, taken out for closing (the end of shutdown).
    pub(crate) fn close_all(&mut self) -> Vec<P> {
        self.leases.clear();
        self.holds.clear();
        self.sessions.drain().into_iter().map(|s| s.page).collect()
    }
}
