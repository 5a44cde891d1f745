//! The shard's decisions: who gets the next session, when to open, retire, probe or lend
//! a page, when to offer a request to another shard. Events in, [`Action`]s out.
//!
//! No tokio, no sockets, no clock: every call takes `now` and the configuration the
//! shell loaded for this turn, and leaves what must be done in `actions` for the shell to
//! carry out. So every rule here can be driven in virtual time (see `tests`). The shell
//! reports back how each action went as another event (`opened`, `returned`,
//! `probed`...). What this module must never do: wait, spawn, or read the time.

mod handoff;
mod offered;
mod politeness;
mod recovery;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc as StdArc;

use tokio::time::Instant;

use super::holds::{hold_deadline, Holds};
use super::msg::{GrantTx, JobTask, Request, Work};
use super::sessions::{admit_at, general_room, room, PageHandle, Sessions};
use super::waiters::{SessionKey, Waiter, Waiters};
use crate::affinity::AffinityMap;
use crate::config::{Config, Isolation, Reset};
use crate::error::shutdown_error;
use crate::error::Error;
use crate::handoff::{Handoff, Line};
use crate::job::Priority;
use crate::job::{later, wait_deadline, wait_timeout_error, AffinityMode, Job};
use crate::metrics::{Gauges, ShardMetrics, ShardReport};
use crate::queue::Admit;
use crate::shard::throttle::Throttle;
use crate::steal::Overflow;
use crate::sync::atomic::Ordering;
use crate::sync::Arc;

/// What the shell must do.
pub(crate) enum Action<P> {
    /// Lend a session to an `acquire` caller as lease `lease`. The request's `job`,
    /// `submitted` and `attempts` come along in case the shell must put it back in line
    /// (its `before_job` hook failed).
    Grant {
        tx: GrantTx,
        lease: u64,
        handoff: Option<Handoff<Work>>,
        job: Job,
        submitted: Instant,
        attempts: u32,
    },
    /// Run a job on session `key`; report `returned` when it is done.
    Run {
        key: SessionKey,
        page: P,
        task: Box<dyn JobTask>,
        job: Job,
        submitted: Instant,
        attempts: u32,
        deadline: Instant,
    },
    /// Open a session (in `owner`'s context under `ContextPerKey`); report `opened` or
    /// `open_failed`.
    Open { owner: Option<StdArc<str>> },
    /// A session left the shard: close its target (and its own context).
    Close {
        page: P,
        browser: usize,
        own_context: Option<String>,
    },
    /// Stop a page interrupted mid-work; report `returned` (`Clean`, or `Dead`).
    Stop { key: SessionKey, page: P },
    /// Reset a page between jobs; report `returned` (`Reset`, or `Dead`).
    Reset { key: SessionKey, page: P },
    /// Probe an idle page; report `probed`.
    Probe { key: SessionKey, page: P },
    /// Answer a request with an error.
    Fail { work: Work, error: Error },
    /// Wake shard `i`: work waits for it in the overflow queues.
    Wake(usize),
}

/// How a session comes back from a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// Ready for the next job.
    Clean,
    /// Interrupted mid-work: stop it, then reuse it (or retire it if that fails).
    Interrupted,
    /// Known dead: retire and replace.
    Dead,
    /// Alive, but its job retries on a fresh page: retire and replace.
    Retire,
    /// Back from its between-jobs reset: idle now.
    Reset,
}

/// Where a keyed request's session is.
enum Bound {
    None,
    Idle(SessionKey),
    Busy(SessionKey),
}

/// The state the decisions need, and nothing else.
pub(crate) struct Plan<P> {
    shard: usize,
    shards: usize,
    pub(crate) sessions: Sessions<P>,
    pub(crate) waiters: Waiters,
    /// Per-key politeness: the requests held for their key's turn live here, not in
    /// `waiters` (see `politeness`).
    pub(crate) politeness: Throttle<Waiter>,
    affinity: AffinityMap<SessionKey>,
    /// Keys whose session is being opened (`ContextPerKey`: one at a time per key).
    opening: Vec<Option<StdArc<str>>>,
    leases: HashMap<u64, SessionKey>,
    next_lease: u64,
    /// The leases' hold deadlines.
    holds: Holds,
    /// Sessions lost to crashes or lost sockets and not yet replaced.
    lost: usize,
    shutting_down: bool,
    /// The line may open once the inbox is empty (see `open_line_if_allowed`).
    line_may_open: bool,
    overflow: Arc<Overflow<Request>>,
    /// Deadlines of the requests this shard offered to the others.
    offered: offered::Offered,
    lines: StdArc<[Arc<Line<Work>>]>,
    pub(crate) metrics: Rc<RefCell<ShardMetrics>>,
    actions: Vec<Action<P>>,
}

impl<P: PageHandle> Plan<P> {
    /// The plan of shard `shard` of `lines.len()`.
    pub(crate) fn new(
        shard: usize,
        lines: StdArc<[Arc<Line<Work>>]>,
        overflow: Arc<Overflow<Request>>,
        metrics: Rc<RefCell<ShardMetrics>>,
    ) -> Self {
        Plan {
            shard,
            shards: lines.len(),
            sessions: Sessions::default(),
            waiters: Waiters::new(lines[shard].clone()),
            politeness: Throttle::default(),
            affinity: AffinityMap::default(),
            opening: Vec::new(),
            leases: HashMap::new(),
            next_lease: 0,
            holds: Holds::default(),
            lost: 0,
            shutting_down: false,
            line_may_open: false,
            overflow,
            offered: offered::Offered::default(),
            lines,
            metrics,
            actions: Vec::new(),
        }
    }

    /// What the last events asked for, in order.
    #[cfg(test)]
    pub(crate) fn take_actions(&mut self) -> Vec<Action<P>> {
        std::mem::take(&mut self.actions)
    }

    /// Moves what the last events asked for into `into` (empty), keeping both buffers'
    /// room: the shell's hot path allocates nothing per event.
    pub(crate) fn swap_actions(&mut self, into: &mut Vec<Action<P>>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.actions, into);
    }

    /// The earliest deadline: a wait's (of a request here or of one this shard offered),
    /// a lease's hold, or the earliest time a throttled key may start again.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.waiters.next_deadline(),
            self.offered.next(),
            self.holds.next_deadline(),
            self.politeness.next_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The page of lease `lease`, if it is still held.
    pub(crate) fn lease_page(&self, lease: u64) -> Option<&P> {
        let key = self.leases.get(&lease)?;
        self.sessions.get(*key).map(|s| &s.page)
    }

    /// Why lease `lease` has no page for a call: taken back past its hold limit, or
    /// gone.
    pub(crate) fn lease_refusal(&self, lease: u64) -> Error {
        self.holds.refusal(lease)
    }

    /// Busy sessions (jobs, leases, probes, stops, resets).
    pub(crate) fn busy(&self) -> usize {
        self.sessions.busy
    }

    /// Whether a session of `browser` lives in `owner`'s context or is being opened for
    /// it (a context in use is never disposed).
    pub(crate) fn context_in_use(&self, browser: usize, owner: &StdArc<str>) -> bool {
        self.sessions
            .iter()
            .any(|(_, s)| s.browser == browser && s.owner.as_ref() == Some(owner))
            || self.opening.iter().any(|o| o.as_ref() == Some(owner))
    }

    // ---- requests ----

    /// A new, stolen or retried request: serve, park, queue or refuse it.
    pub(crate) fn submit(&mut self, request: Request, now: Instant, cfg: &Config) {
        if self.shutting_down {
            self.fail(request.work, shutdown_error());
            return;
        }
        if request.work.is_abandoned() {
            return;
        }
        let (deadline, kind) = wait_deadline(&request.job, request.submitted, cfg);
        if deadline <= now {
            self.metrics.borrow_mut().counters.timeout(kind);
            let error = wait_timeout_error(kind, &request.job, cfg);
            self.fail(request.work, error);
            return;
        }
        let priority = request.job.priority;
        let waiter = Waiter {
            request,
            deadline,
            kind,
        };
        let Some(waiter) = self.hold_if_throttled(waiter, now, cfg) else {
            return;
        };
        let Some(waiter) = self.route_by_affinity(waiter, now, cfg) else {
            return;
        };
        // Fast path: nobody waiting and a page free: no queue, no deadline entry.
        if self.waiters.queue_is_empty()
            && self.waiters.line_is_empty()
            && self.sessions.busy < room(cfg, priority)
        {
            let owner = owner_of(&waiter.request.job, cfg.isolation);
            if let Some(key) = self.take_idle(owner.as_ref(), now, cfg) {
                self.start(key, waiter.request, now, cfg);
                // That may have been the last free session: the line may open.
                self.update_open(cfg);
                return;
            }
        }
        // Requests held for their key's turn count against the bound too.
        let bound = cfg.max_queue.saturating_sub(self.politeness.held_len());
        match self.waiters.enqueue(waiter, bound) {
            Ok(()) => {
                // Someone in the line is of a lower class: the line goes back to the
                // queue so this request is served first.
                if self.waiters.line_has_below(priority) {
                    self.waiters.take_back_line();
                }
                self.pump(now, cfg);
            }
            Err(waiter) => {
                self.refuse_full(waiter, cfg);
                for id in self.waiters.take_dropped() {
                    self.politeness.left(id);
                }
            }
        }
    }

    /// Room for one more non-critical request, and nobody here waiting for it: the
    /// shard may take a request from the overflow queues.
    pub(crate) fn has_spare_capacity(&self, cfg: &Config) -> bool {
        self.waiters.queue_is_empty()
            && self.waiters.line_is_empty()
            && self.sessions.busy < general_room(cfg)
            && (!self.sessions.idle.is_empty() || self.sessions.live() < cfg.sessions_per_shard)
    }

    /// A request taken from the overflow queues.
    pub(crate) fn stolen(&mut self, request: Request, now: Instant, cfg: &Config) {
        self.metrics.borrow_mut().counters.steals += 1;
        self.submit(request, now, cfg);
    }

    /// Serves or parks a keyed request by its binding. Returns it when neither applies.
    fn route_by_affinity(&mut self, waiter: Waiter, now: Instant, cfg: &Config) -> Option<Waiter> {
        let Some(affinity) = waiter.request.job.affinity.clone() else {
            return Some(waiter);
        };
        let critical_ok = waiter.request.job.priority == Priority::Critical
            || self.sessions.busy < general_room(cfg);
        match self.bound_session(affinity.key(), now, cfg) {
            Bound::Idle(key) if critical_ok && self.waiters.queue_is_empty() => {
                self.sessions.take_idle_key(key);
                self.start(key, waiter.request, now, cfg);
                None
            }
            Bound::Busy(key) => {
                let until = match affinity.mode() {
                    AffinityMode::Sticky => waiter.deadline,
                    AffinityMode::Soft => waiter.deadline.min(later(now, cfg.affinity_wait)),
                };
                if self.waiters.queue_len() + self.waiters.parked_len() >= cfg.max_queue {
                    return Some(waiter); // the queue refuses it: QueueFull
                }
                // Its lease must give it back here, not pass it on.
                if let Some(s) = self.sessions.get(key) {
                    s.passable.store(false, Ordering::Release);
                }
                self.waiters.park(key, until, waiter);
                None
            }
            _ => Some(waiter),
        }
    }

    fn bound_session(&mut self, key: &str, now: Instant, cfg: &Config) -> Bound {
        let Some(session) = self.affinity.get(key, now.into_std(), cfg.affinity_ttl) else {
            return Bound::None;
        };
        match self.sessions.get(session) {
            Some(s) if s.page.is_alive() => {
                if self.sessions.idle.contains(&session) {
                    Bound::Idle(session)
                } else {
                    Bound::Busy(session)
                }
            }
            _ => Bound::None,
        }
    }

    /// Serves the queue (`serve_queue`), and again while held requests whose keys may
    /// start now join it. Run after every change of capacity, of the queue or of a
    /// key's turn.
    fn pump(&mut self, now: Instant, cfg: &Config) {
        // Keys whose turn came with this event go first: a request let in keeps its
        // arrival number, and is served in its place among the queued ones.
        self.release_throttled(now, cfg);
        loop {
            self.serve_queue(now, cfg);
            if !self.release_throttled(now, cfg) {
                break;
            }
        }
    }

    /// Serves waiters with idle sessions (the line first: it holds the oldest), opens
    /// sessions for the rest up to the limit, and offers movable waiters to other shards
    /// when saturated.
    fn serve_queue(&mut self, now: Instant, cfg: &Config) {
        self.serve_lines(now, cfg);
        while !self.waiters.queue_is_empty() && !self.shutting_down {
            let Some(admit) = admit_at(cfg, self.sessions.busy) else {
                break;
            };
            let owner = match self.waiters.peek(now, cfg.aging, admit) {
                Some(head) => owner_of(&head.job, cfg.isolation),
                None => break,
            };
            let Some(key) = self.take_idle(owner.as_ref(), now, cfg) else {
                self.open_for_queue(owner, cfg);
                break;
            };
            // Requests offered by a saturated shard wait longest: while this shard
            // serves, it takes them in (first, unless the local head outranks them), so
            // none is stranded when no shard ever has spare capacity again.
            if admit == Admit::All && cfg.isolation != Isolation::ContextPerKey {
                if let Some(request) = self.take_offered() {
                    let outranked = self
                        .waiters
                        .peek(now, cfg.aging, admit)
                        .is_some_and(|h| h.job.priority > request.job.priority);
                    self.sessions.idle.push(key);
                    if outranked {
                        // Queued here behind the local head, never lost.
                        self.requeue(request, cfg);
                    } else if !request.work.is_abandoned() {
                        self.sessions.take_idle_key(key);
                        self.start(key, request, now, cfg);
                    }
                    continue;
                }
            }
            let Some(w) = self.waiters.pop(now, cfg.aging, admit) else {
                self.sessions.idle.push(key);
                break;
            };
            if w.request.work.is_abandoned() {
                self.politeness.left(w.request.arrival);
                self.sessions.idle.push(key);
                continue;
            }
            self.start(key, w.request, now, cfg);
        }
        self.fill_line(now, cfg);
        self.overflow_if_saturated(cfg);
    }

    /// No idle session fits the queue's head: open what the queue needs, within the
    /// limit.
    fn open_for_queue(&mut self, owner: Option<StdArc<str>>, cfg: &Config) {
        let live = self.sessions.live();
        if cfg.isolation == Isolation::ContextPerKey {
            // One session at a time per key; at the limit, the least recently used idle
            // session (another key's) makes room.
            if self.opening.contains(&owner) {
                return;
            }
            if live >= cfg.sessions_per_shard {
                if self.sessions.idle.is_empty() {
                    return;
                }
                let victim = self.sessions.idle.remove(0);
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                self.forget(victim);
            }
            self.opening.push(owner.clone());
            self.open(owner);
            return;
        }
        let wanted = self
            .waiters
            .queue_len()
            .saturating_sub(self.sessions.creating);
        let room = cfg.sessions_per_shard.saturating_sub(live);
        for _ in 0..wanted.min(room) {
            self.open(None);
        }
    }

    /// One request from the overflow queues, counted as stolen.
    fn take_offered(&mut self) -> Option<Request> {
        if self.overflow.is_empty() {
            return None;
        }
        let request = self.overflow.take()?;
        self.metrics.borrow_mut().counters.steals += 1;
        Some(request)
    }

    /// Queues an admitted request whatever the bound (it keeps its arrival number).
    fn requeue(&mut self, request: Request, cfg: &Config) {
        let (deadline, kind) = wait_deadline(&request.job, request.submitted, cfg);
        self.waiters.requeue(Waiter {
            request,
            deadline,
            kind,
        });
    }

    /// Takes the most recently used idle session of `owner` that is still alive,
    /// retiring dead or expired ones on the way.
    fn take_idle(
        &mut self,
        owner: Option<&StdArc<str>>,
        now: Instant,
        cfg: &Config,
    ) -> Option<SessionKey> {
        let mut i = self.sessions.idle.len();
        while i > 0 {
            i -= 1;
            let key = self.sessions.idle[i];
            let Some(session) = self.sessions.get(key) else {
                self.sessions.idle.remove(i);
                continue;
            };
            if !session.page.is_alive() {
                tracing::debug!(shard = self.shard, "dropping a dead idle session");
                self.count_gone(&session.page);
                self.sessions.idle.remove(i);
                self.lost += 1;
                self.forget(key);
                continue;
            }
            if session.expired(cfg, now) {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                self.sessions.idle.remove(i);
                self.forget(key);
                continue;
            }
            if session.owner.as_ref() == owner {
                self.sessions.idle.remove(i);
                return Some(key);
            }
        }
        None
    }

    /// Removes a session that is neither idle nor busy any more; its target is closed
    /// and whoever waited for it by affinity takes another.
    fn forget(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.remove(key) {
            self.actions.push(Action::Close {
                page: s.page,
                browser: s.browser,
                own_context: s.own_context,
            });
        }
        self.waiters.unpark_all(key);
    }

    fn overflow_if_saturated(&mut self, cfg: &Config) {
        if self.waiters.queue_len() <= cfg.steal_watermark
            || !self.sessions.idle.is_empty()
            || self.sessions.live() < cfg.sessions_per_shard
            || self.shards < 2
        {
            return;
        }
        // Offer one request per parked shard: when every shard is saturated, moving
        // requests around only costs.
        while self.waiters.queue_len() > cfg.steal_watermark && self.overflow.has_parked() {
            // A request holding its key's ticket stays: its key's limits live here.
            let throttle = &self.politeness;
            let Some((priority, w)) = self
                .waiters
                .pop_newest_movable(|r| !throttle.has_ticket(r.arrival))
            else {
                break;
            };
            self.metrics.borrow_mut().counters.overflowed += 1;
            // Nobody's timer watches it in the overflow queues: this shard's does.
            self.offered.record(w.deadline);
            if let Some(shard) = self.overflow.push(priority.index(), w.request) {
                self.actions.push(Action::Wake(shard));
            }
        }
    }

    fn open(&mut self, owner: Option<StdArc<str>>) {
        self.sessions.creating += 1;
        self.actions.push(Action::Open { owner });
    }

    fn fail(&mut self, work: Work, error: Error) {
        self.actions.push(Action::Fail { work, error });
    }

    /// Hands session `key` to `request`.
    fn start(&mut self, key: SessionKey, request: Request, now: Instant, cfg: &Config) {
        self.sessions.busy += 1;
        let Some(s) = self.sessions.get_mut(key) else {
            unreachable!("a session taken from the idle list is in the slab");
        };
        let reused = s.uses > 0;
        s.uses += 1;
        s.last_used = now;
        s.page.set_uses(s.uses);
        s.page
            .set_command_timeout(request.job.command_timeout.unwrap_or(cfg.command_timeout));
        let page = s.page.clone();
        self.politeness
            .started(request.arrival, key, now, cfg.politeness);
        if let Some(affinity) = &request.job.affinity {
            let hit = self
                .affinity
                .get(affinity.key(), now.into_std(), cfg.affinity_ttl)
                == Some(key);
            let mut m = self.metrics.borrow_mut();
            if hit {
                m.counters.affinity_hits += 1;
            } else {
                m.counters.affinity_misses += 1;
            }
            self.affinity.bind(
                affinity.key_arc(),
                key,
                now.into_std(),
                cfg.affinity_capacity,
            );
        }
        {
            let mut m = self.metrics.borrow_mut();
            m.acquire_wait(now.saturating_duration_since(request.submitted));
            if reused {
                m.counters.sessions_reused += 1;
            }
        }
        match request.work {
            Work::Acquire(tx) => {
                self.next_lease += 1;
                let lease = self.next_lease;
                self.leases.insert(lease, key);
                if let Some(s) = self.sessions.get_mut(key) {
                    s.lease = Some(lease);
                }
                if let Some((until, limit)) = hold_deadline(&request.job, request.submitted, now) {
                    self.holds.hold(lease, until, limit);
                }
                self.update_passable(key, now, cfg);
                let handoff = handoff_allowed(cfg)
                    .then(|| self.sessions.get(key))
                    .flatten()
                    .map(|s| Handoff::new(self.lines.clone(), self.shard, s.passable.clone()));
                self.actions.push(Action::Grant {
                    tx,
                    lease,
                    handoff,
                    job: request.job,
                    submitted: request.submitted,
                    attempts: request.attempts,
                });
            }
            Work::Run(task) => {
                let limit = request.job.timeout.unwrap_or(cfg.job_timeout);
                self.actions.push(Action::Run {
                    key,
                    page,
                    task,
                    deadline: later(request.submitted, limit),
                    job: request.job,
                    submitted: request.submitted,
                    attempts: request.attempts,
                });
            }
        }
    }

    /// Counts a session that went away unasked: retired when its browser is being
    /// recycled (see `shard/draining.rs`), crashed otherwise.
    pub(crate) fn count_gone(&self, page: &P) {
        let mut m = self.metrics.borrow_mut();
        if page.is_retiring() {
            m.counters.sessions_retired += 1;
        } else {
            m.counters.sessions_crashed += 1;
        }
    }

    /// The shard's gauges and a copy of its metrics.
    pub(crate) fn report(&self) -> ShardReport {
        let mut by_class = self.waiters.by_class();
        for (n, held) in by_class.iter_mut().zip(self.politeness.held_by_class()) {
            *n += held;
        }
        ShardReport {
            metrics: self.metrics.borrow().clone(),
            gauges: Gauges {
                idle: self.sessions.idle.len() as u64,
                busy: self.sessions.busy as u64,
                creating: self.sessions.creating as u64,
                waiting: by_class.iter().sum::<usize>() as u64,
                waiting_by_class: by_class.map(|n| n as u64),
                affinity_keys: self.affinity.len() as u64,
                open_lines: u64::from(self.waiters.line().is_open()),
                ..Gauges::default() // the pool-level rows are the pool's to fill
            },
        }
    }
}

/// The key whose context a job's session must live in, if isolation asks for one.
fn owner_of(job: &Job, isolation: Isolation) -> Option<StdArc<str>> {
    match isolation {
        Isolation::ContextPerKey => job.affinity.as_ref().map(|a| a.key_arc().clone()),
        Isolation::Shared | Isolation::ContextPerJob => None,
    }
}

/// True when the configuration lets a session go from one lease to the next with
/// nothing done in between.
fn handoff_allowed(cfg: &Config) -> bool {
    cfg.lease_handoff && cfg.reset == Reset::None && cfg.isolation == Isolation::Shared
}
