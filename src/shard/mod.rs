//! One shard: an OS thread running a current-thread tokio runtime and a `LocalSet`,
//! owning one connection per browser, its sessions, its waiters and its metrics.
//!
//! This file is the IO shell around the shard's decisions (`plan`). Each turn of its
//! loop loads the configuration once, feeds one event at a time to the plan (a message,
//! a timer, a task's outcome), and carries out the actions the plan returns: spawning a
//! job, opening, stopping, resetting or probing a page, answering a caller. Every road
//! back into the plan goes through [`Shell::feed`].
//!
//! Never blocks its thread; never shares state with other threads except through
//! messages (its inbox), the overflow queues and the hand-off lines. Everything inside
//! is `Rc`/`RefCell`, borrowed only between `.await`s.
//!
//! A panic in the shard (a bug) does not leave callers waiting: it is caught, the shard
//! raises its `broken` flag before it answers anything else, fails what it can reach
//! with [`ErrorKind::Internal`] (sockets, its line), drops the rest (the pool turns
//! those closed reply channels into `Internal`), and then only answers its inbox:
//! requests and lease commands fail with `Internal` until shutdown.

mod draining;
mod holds;
mod hooked;
mod identities;
mod jobs;
mod lifecycle;
mod links;
pub(crate) mod msg;
mod outbox;
mod placement;
mod plan;
mod sessions;
mod thread;
mod throttle;
mod waiters;

#[cfg(all(test, not(cdpmux_loom)))]
mod tests;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc as StdArc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use self::identities::Identities;
pub(crate) use self::identities::{IdentityOp, Provider};
use self::jobs::RunArgs;
use self::lifecycle::Contexts;
use self::links::Links;
use self::msg::{grant_lease, LeaseOp, Msg, Request, Work};
pub(crate) use self::placement::share as capacity_share;
use self::plan::{Action, Plan};
use self::sessions::PageHandle;
pub use self::thread::current_shard;
pub(crate) use self::thread::spawn;
use self::thread::{fail_line, health_every, panic_message, Died};
use self::waiters::SessionKey;
use crate::cdp::{Page, PageOptions};
use crate::config::Config;
use crate::error::internal_error;
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::fleet::Fleet;
use crate::handoff::Line;
use crate::hooks::Hooks;
use crate::job::later;
use crate::metrics::ShardMetrics;
use crate::steal::Overflow;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{mpsc, oneshot, LiveCell};

/// Most inbox messages handled per wake-up before the loop looks at its timers again.
const INBOX_BATCH: usize = 64;

/// What a shard shares with the pool and the other shards. All `Send + Sync`.
pub(crate) struct Shared {
    pub(crate) config: crate::sync::Arc<LiveCell<Config>>,
    pub(crate) overflow: crate::sync::Arc<Overflow<Request>>,
    /// One wake-up per shard, fired when overflow work arrives for a parked shard.
    pub(crate) wakers: StdArc<[crate::sync::Notify]>,
    pub(crate) inboxes: StdArc<[mpsc::UnboundedSender<Msg>]>,
    pub(crate) fleet: StdArc<Fleet>,
    pub(crate) page_options: PageOptions,
    /// The pool's lifecycle hooks.
    pub(crate) hooks: Hooks,
    /// Every shard's line, one arrival counter for all (see `handoff`).
    pub(crate) lines: StdArc<[crate::sync::Arc<Line<Work>>]>,
    /// One flag per shard, raised when it died of a panic. Raised before the shard
    /// answers anything else, so a caller whose reply channel closed, after a round trip
    /// through that shard's inbox, knows whether it died (see `Pool`).
    pub(crate) broken: StdArc<[AtomicBool]>,
    /// The pool's per-key context options provider, if any (`ContextPerKey`).
    pub(crate) context_options: Option<Provider>,
}

impl PageHandle for Rc<Page> {
    fn is_alive(&self) -> bool {
        Page::is_alive(self) && !draining::holds(self)
    }

    fn is_retiring(&self) -> bool {
        draining::holds(self)
    }

    fn set_uses(&self, uses: u32) {
        Page::set_uses(self, uses);
    }

    fn set_command_timeout(&self, timeout: Duration) {
        Page::set_command_timeout(self, timeout);
    }
}

/// The shard's IO shell: its plan, sockets, contexts and the configuration of this turn.
struct Shell {
    id: usize,
    shared: Shared,
    plan: RefCell<Plan<Rc<Page>>>,
    /// The configuration of the loop's current turn (see `load_cfg`).
    cfg: RefCell<crate::sync::Arc<Config>>,
    /// The last live configuration held to this shard's page limit, and the result:
    /// the clamped copy is made once per reconfiguration, not once per turn.
    clamped: RefCell<Option<(crate::sync::Arc<Config>, crate::sync::Arc<Config>)>>,
    links: Links,
    contexts: Contexts,
    /// The identities of keys (`ContextPerKey`).
    identities: Identities,
    metrics: Rc<RefCell<ShardMetrics>>,
    /// Fired whenever busy sessions return during shutdown.
    returned: Notify,
    /// Fired by a connection when a session dies or its socket closes.
    loss: Rc<Notify>,
    /// When the main loop's timer is set to fire (the plan's deadline at its last turn).
    armed: Cell<Option<Instant>>,
    /// Fired when a feed outside the main loop (a job or page task) made a key's next
    /// start come due before `armed`: the loop re-arms its timer.
    rearm: Notify,
    /// Random, so the initial URLs of this shard's pages are its own even with other
    /// pools on the same browser.
    tag: u64,
    /// Pages opened so far (numbers each page's initial URL).
    openings: Cell<u64>,
    /// An empty action buffer kept for the next `feed`.
    spare: Cell<Option<Vec<Action<Rc<Page>>>>>,
    /// Set once the plan panicked: the shard is dead, and nothing feeds the plan again.
    dead: Cell<bool>,
    /// The panic the plan raised, for the main loop to carry on with.
    panic: RefCell<Option<Box<dyn Any + Send>>>,
    /// A shutdown taken from the inbox in a batch, for the next turn.
    stashed_shutdown: RefCell<Option<(Duration, oneshot::Sender<()>)>>,
    /// Set once the shard began to shut down.
    closing: Cell<bool>,
    /// The session a job task is giving back right now, and the next job the plan gave
    /// it, for that task to run (see `run_jobs`).
    handing_over: Cell<Option<SessionKey>>,
    handed: RefCell<Option<RunArgs>>,
    /// Job tasks spawned and not yet started.
    unstarted: Cell<usize>,
    /// `before_job` failures in a row on this shard (see `jobs`).
    before_job_failures: Cell<u32>,
    /// Replies of finished jobs, sent together (see `outbox`).
    outbox: Rc<outbox::Outbox>,
}

impl Shell {
    /// The configuration of this turn.
    fn cfg(&self) -> crate::sync::Arc<Config> {
        self.cfg.borrow().clone()
    }

    /// Loads the live configuration for this turn, with `sessions_per_shard` held to
    /// what this shard's share of the browsers' capacities allows.
    fn load_cfg(&self) {
        let loaded = self.shared.config.load();
        let cfg = match self.links.page_limit() {
            Some(limit) if limit < loaded.sessions_per_shard => {
                let mut cache = self.clamped.borrow_mut();
                match &*cache {
                    Some((from, to)) if crate::sync::Arc::ptr_eq(from, &loaded) => to.clone(),
                    _ => {
                        let to = crate::sync::Arc::new(placement::clamp(&loaded, limit));
                        *cache = Some((loaded, to.clone()));
                        to
                    }
                }
            }
            _ => loaded,
        };
        *self.cfg.borrow_mut() = cfg;
    }

    /// Feeds one event to the plan and carries out the actions it returns. The one way
    /// into the plan: messages, timers and the outcomes of spawned steps all come here.
    ///
    /// A panic in there (a bug) is caught, even in a spawned task where tokio would
    /// swallow it: the shard is marked dead at once, the plan is never fed again, and
    /// the main loop carries the panic on.
    fn feed(self: &Rc<Self>, event: impl FnOnce(&mut Plan<Rc<Page>>, Instant, &Config)) {
        if self.dead.get() {
            return;
        }
        let fed = std::panic::catch_unwind(AssertUnwindSafe(|| self.feed_plan(event)));
        if let Err(payload) = fed {
            self.mark_dead();
            *self.panic.borrow_mut() = Some(payload);
            self.loss.notify_one(); // wakes the main loop
        }
    }

    /// Raises the shard's flags; before anything else is answered (see `Shared::broken`).
    fn mark_dead(&self) {
        self.dead.set(true);
        self.shared.broken[self.id].store(true, Ordering::Release);
    }

    /// After a panic: fails what the shard can reach with `Internal` (calls on its
    /// sockets, so lease commands in flight; callers in its line), and returns the error
    /// for what reaches it later. What it cannot reach (its queue, jobs in flight) is
    /// dropped with the shard; the pool tells those callers `Internal` too.
    fn die(&self, payload: &(dyn Any + Send)) -> Died {
        self.mark_dead();
        let what = panic_message(payload);
        tracing::error!(
            shard = self.id,
            panic = what,
            "a shard panicked; its requests fail with `Internal`"
        );
        let why = internal_error(self.id, what);
        for d in draining::take_all() {
            d.conn.close();
        }
        for conn in self.links.take_all() {
            conn.close_with(why.clone());
        }
        let line = self.shared.lines[self.id].clone();
        fail_line(&line, &why);
        Died {
            why,
            line,
            shutdown: self
                .stashed_shutdown
                .borrow_mut()
                .take()
                .map(|(_, done)| done),
            closing: self.closing.get(),
        }
    }

    fn feed_plan(self: &Rc<Self>, event: impl FnOnce(&mut Plan<Rc<Page>>, Instant, &Config)) {
        let cfg = self.cfg();
        // A spare buffer, unless a feed further up the stack holds it.
        let mut actions = self.spare.take().unwrap_or_default();
        {
            let mut plan = self.plan.borrow_mut();
            let now = Instant::now();
            // Hand-offs first, before any event: a lease's new holder sends nothing
            // before its hand-off is recorded, and a caller another shard served is
            // forgotten before this one counts its line.
            plan.take_outcomes(now, &cfg);
            event(&mut plan, now, &cfg);
            plan.swap_actions(&mut actions);
            // A feed from a job or page task, while the loop waits, may make a key's
            // next start due before the loop's timer: the timer must move.
            if let Some(wake) = plan.politeness.next_wake() {
                if self.armed.get().is_none_or(|armed| wake < armed) {
                    self.rearm.notify_one();
                }
            }
        }
        for action in actions.drain(..) {
            self.execute(action, &cfg);
        }
        self.spare.set(Some(actions));
        if self.plan.borrow().is_shutting_down() {
            self.returned.notify_waiters();
        }
    }

    fn execute(self: &Rc<Self>, action: Action<Rc<Page>>, cfg: &Config) {
        match action {
            Action::Grant {
                tx,
                lease,
                handoff,
                job,
                submitted,
                attempts,
            } => {
                if self.shared.hooks.wrap_leases() {
                    self.grant_after_hook(tx, lease, job, submitted, attempts, cfg);
                } else {
                    grant_lease(tx, self.id, lease, &self.shared.inboxes[self.id], handoff);
                }
            }
            Action::Run {
                key,
                page,
                task,
                job,
                submitted,
                attempts,
                deadline,
            } => {
                let handing_over = self.handing_over.get();
                let run = RunArgs {
                    key,
                    page,
                    job,
                    task,
                    submitted,
                    attempts,
                    deadline,
                };
                // The session a job task is giving back goes straight on to the next job
                // in that same task: no spawn, and the job starts the moment it left the
                // line, before anything else on this thread runs.
                // Jobs start in the order the plan gave them out: not while a job spawned
                // earlier has yet to start, and nothing given out after a spawned one.
                self.handing_over.set(None);
                if handing_over == Some(key) && self.unstarted.get() == 0 {
                    *self.handed.borrow_mut() = Some(run);
                    return;
                }
                self.unstarted.set(self.unstarted.get() + 1);
                let shell = self.clone();
                tokio::task::spawn_local(async move {
                    shell.unstarted.set(shell.unstarted.get() - 1);
                    shell.run_jobs(run).await;
                });
            }
            Action::Open { owner } => self.open_session(owner),
            Action::Close {
                page,
                browser,
                own_context,
            } => {
                self.links.page_gone(browser, page.target_id());
                if let (Some(ctx), Some(conn)) = (own_context, self.links.live(browser)) {
                    identities::dispose_context(&conn, &ctx);
                }
                // Dropping the page closes its target.
            }
            Action::Stop { key, page } => {
                // A job interrupted or a lease taken back: its listeners end here.
                page.end_job();
                let shell = self.clone();
                tokio::task::spawn_local(async move {
                    let how = lifecycle::stop(page).await;
                    shell.feed(|p, now, cfg| p.returned(key, how, now, cfg));
                });
            }
            Action::Reset { key, page } => {
                let shell = self.clone();
                tokio::task::spawn_local(async move {
                    let how = lifecycle::reset(page).await;
                    shell.feed(|p, now, cfg| p.returned(key, how, now, cfg));
                });
            }
            Action::Probe { key, page } => {
                let shell = self.clone();
                let limit = cfg.probe_timeout;
                tokio::task::spawn_local(async move {
                    let healthy = lifecycle::probe(page, limit).await;
                    shell.feed(|p, now, cfg| p.probed(key, healthy, now, cfg));
                });
            }
            Action::Fail { work, error } => work.fail(error),
            Action::Wake(shard) => self.shared.wakers[shard].notify_one(),
        }
    }

    async fn main_loop(self: &Rc<Self>, inbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let far = || later(Instant::now(), Duration::from_secs(3600));
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        let health = tokio::time::sleep(health_every(&self.cfg()));
        tokio::pin!(health);
        loop {
            let panic = self.panic.borrow_mut().take();
            if let Some(payload) = panic {
                std::panic::resume_unwind(payload);
            }
            // One configuration for the whole turn.
            self.load_cfg();
            let cfg = self.cfg();
            let stashed = self.stashed_shutdown.borrow_mut().take();
            if let Some((grace, done)) = stashed {
                self.closing.set(true);
                self.shared.overflow.unpark(self.id);
                self.shutdown(grace, inbox).await;
                let _ = done.send(());
                return;
            }
            // Steal before parking: one request at a time, only with room to spare.
            let spare = self.plan.borrow().has_spare_capacity(&cfg);
            if spare {
                if let Some(request) = self.shared.overflow.take() {
                    self.feed(|p, now, cfg| p.stolen(request, now, cfg));
                    continue;
                }
                // Callers waiting in another shard's line: the earliest first.
                if self.plan.borrow().others_wait_in_line() {
                    let helped = Cell::new(false);
                    self.feed(|p, now, cfg| helped.set(p.help_lines(now, cfg)));
                    if helped.get() {
                        continue;
                    }
                }
                if self.shared.overflow.prepare_park(self.id) {
                    tokio::task::yield_now().await; // a push is landing right now
                    continue;
                }
            }
            let next_deadline = self.plan.borrow().next_deadline();
            // Re-arming the timer costs a trip through the time driver: only on a change.
            if next_deadline != self.armed.get() {
                sleep.as_mut().reset(next_deadline.unwrap_or_else(far));
                self.armed.set(next_deadline);
            }
            tokio::select! {
                biased;
                msg = inbox.recv() => match msg {
                    Some(Msg::Shutdown { grace, done }) => {
                        self.closing.set(true);
                        self.shared.overflow.unpark(self.id);
                        self.shutdown(grace, inbox).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(msg) => {
                        self.handle(msg);
                        // Take what else has arrived without another trip through select!.
                        for _ in 0..INBOX_BATCH {
                            match inbox.try_recv() {
                                Ok(Msg::Shutdown { grace, done }) => {
                                    *self.stashed_shutdown.borrow_mut() = Some((grace, done));
                                    break;
                                }
                                Ok(msg) => self.handle(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        self.closing.set(true);
                        self.shared.overflow.unpark(self.id);
                        self.shutdown(Duration::ZERO, inbox).await;
                        return;
                    }
                },
                _ = self.shared.wakers[self.id].notified() => {}
                _ = self.rearm.notified() => {}
                _ = &mut sleep, if next_deadline.is_some() => {
                    self.armed.set(None); // fired: re-arm next turn even for the same instant
                    self.feed(|p, now, cfg| p.expire(now, cfg));
                }
                _ = self.loss.notified() => self.feed(|p, now, cfg| p.sweep(now, cfg)),
                _ = &mut health => {
                    self.health_round();
                    health.as_mut().reset(later(Instant::now(), health_every(&self.cfg())));
                }
            }
            if spare {
                self.shared.overflow.unpark(self.id);
            }
            if inbox.is_empty() {
                self.feed(|p, now, cfg| p.open_line_if_allowed(now, cfg));
            }
        }
    }

    fn handle(self: &Rc<Self>, msg: Msg) {
        match msg {
            Msg::Submit(request) => self.feed(|p, now, cfg| p.submit(request, now, cfg)),
            Msg::LeaseOp { lease, op, timeout } => self.lease_op(lease, op, timeout),
            Msg::Release { lease } => self.release(lease),
            Msg::Reclaim => self.feed(|p, now, cfg| p.reclaim(now, cfg)),
            Msg::Metrics(reply) => {
                self.feed(|_, _, _| {}); // counts the hand-offs recorded so far
                let _ = reply.send(self.plan.borrow().report());
            }
            Msg::Reconfigured => {
                self.load_cfg();
                if self.links.retire_stale() {
                    // A browser was recycled: its idle pages here retire now.
                    self.feed(|p, now, cfg| p.sweep(now, cfg));
                }
                let (frames, policy) = (self.cfg().max_frames_per_flush, self.cfg().flush_policy);
                for conn in self.links.all_live() {
                    conn.set_max_frames_per_flush(frames);
                    conn.set_flush_policy(policy);
                }
                self.feed(|p, now, cfg| p.reconfigured(now, cfg));
            }
            Msg::Politeness { key, rule } => {
                self.feed(|p, now, cfg| p.set_politeness(key, rule, now, cfg))
            }
            Msg::Identity(op) => self.identity_op(op),
            Msg::InjectPanic => self.feed(|_, _, _| panic!("injected by the test hook")),
            Msg::Shutdown { .. } => unreachable!("handled by the main loop"),
        }
    }

    /// Runs a lease's command on its page: straight to the socket, and the reply
    /// straight to the holder (the connection keeps the deadline).
    fn lease_op(self: &Rc<Self>, lease: u64, op: LeaseOp, timeout: Option<Duration>) {
        let Some(page) = self.plan.borrow().lease_page(lease).cloned() else {
            op.fail(self.plan.borrow().lease_refusal(lease));
            return;
        };
        // A page that dies clears its `passable` before the holder hears of it
        // (`Page::watch`): the holder cannot hand it on.
        match op {
            LeaseOp::Call {
                method,
                params,
                reply,
            } => {
                let timeout = timeout.unwrap_or_else(|| page.command_timeout());
                page.call_direct(method, &*params, timeout, reply);
            }
            LeaseOp::Goto {
                url,
                options,
                reply,
            } => {
                tokio::task::spawn_local(async move {
                    if let Some(t) = timeout {
                        page.set_command_timeout(t);
                    }
                    let _ = reply.send(page.goto_with(&url, &options).await);
                });
            }
            LeaseOp::Batch { calls } => {
                // All queued in this turn: the writer sends them in one flush.
                let timeout = timeout.unwrap_or_else(|| page.command_timeout());
                for (method, params, reply) in calls {
                    page.call_direct(method, &*params, timeout, reply);
                }
            }
            LeaseOp::Events { method, feed } => page.register_feed(method, feed),
            LeaseOp::TargetId { reply } => {
                let _ = reply.send(Ok(page.target_id().to_owned()));
            }
        }
    }

    /// The periodic round: lost sockets reconnect, failed openings are swept, and the
    /// plan retires, probes and refills.
    fn health_round(self: &Rc<Self>) {
        for browser in self.links.health(Instant::now()) {
            let shell = self.clone();
            tokio::task::spawn_local(async move {
                let cfg = shell.cfg();
                if shell.links.connection(browser, &cfg).await.is_ok() {
                    shell.feed(|p, now, cfg| p.sweep(now, cfg));
                }
            });
        }
        self.feed(|p, now, cfg| p.health(now, cfg));
        self.finish_drains();
    }

    /// Closes this shard's sockets to recycled browsers that none of its pages uses any
    /// more, and tells the fleet, which reaps the old browser once every shard is done.
    fn finish_drains(&self) {
        let done = {
            let plan = self.plan.borrow();
            if plan.sessions.creating > 0 {
                return; // an opening may still land on an old socket
            }
            draining::finished(|conn| {
                plan.sessions
                    .iter()
                    .any(|(_, s)| Rc::ptr_eq(&s.page.connection().shared, &conn.shared))
            })
        };
        for d in done {
            d.conn.close();
            self.shared.fleet.drained(d.browser, d.generation);
        }
    }

    /// Opens one session in the background on the browser `placement` chooses (live,
    /// healthiest, most free capacity). With every browser down or full, the plan hears
    /// at once.
    fn open_session(self: &Rc<Self>, owner: Option<StdArc<str>>) {
        let Some(browser) = self.links.pick(Instant::now()) else {
            let error = Error::new(
                ErrorKind::BrowserUnavailable,
                "no browser can take a page: each is down (repeated connect or open failures, retrying with backoff) or at its capacity",
            );
            self.feed(|p, now, _| p.open_refused(owner, error, now));
            return;
        };
        let shell = self.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            let cfg = shell.cfg();
            let opened = shell.open_ready(browser, owner.as_ref(), &cfg).await;
            match opened {
                Ok((page, own_context)) => {
                    shell.links.opened(browser);
                    // The page's death stops it being handed on before its holder hears.
                    let passable = crate::sync::Arc::<AtomicBool>::default();
                    page.watch(passable.clone());
                    let took = started.elapsed();
                    let page = Rc::new(page);
                    shell.feed(move |p, now, cfg| {
                        p.opened(owner, page, browser, own_context, passable, took, now, cfg);
                    });
                }
                Err(e) => {
                    if e.kind() == ErrorKind::Timeout(TimeoutKind::Create) {
                        shell
                            .metrics
                            .borrow_mut()
                            .counters
                            .timeout(TimeoutKind::Create);
                    }
                    // Connect failures are counted by `connection` itself; a failing hook
                    // and options the browser refused are no fault of the browser's.
                    let counts = !matches!(
                        e.kind(),
                        ErrorKind::BrowserUnavailable | ErrorKind::Hook | ErrorKind::InvalidInput
                    );
                    shell
                        .links
                        .open_failed(browser, counts, &cfg, Instant::now());
                    shell.feed(move |p, now, cfg| p.open_failed(owner, e, now, cfg));
                }
            }
        });
    }

    /// Fails every waiter, gives running jobs and held leases `grace` to finish, then
    /// closes the inbox (answering what is left in it), every target and every socket.
    async fn shutdown(self: &Rc<Self>, grace: Duration, inbox: &mut mpsc::UnboundedReceiver<Msg>) {
        self.feed(|p, _, _| p.begin_shutdown());
        // Running jobs and held leases get the grace period to finish: a lease can still
        // run commands and come back; new requests are refused.
        let deadline = later(Instant::now(), grace);
        let mut inbox_open = true;
        loop {
            let returned = self.returned.notified();
            if self.plan.borrow().busy() == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = returned => {}
                msg = inbox.recv(), if inbox_open => match msg {
                    Some(msg @ (Msg::LeaseOp { .. }
                        | Msg::Release { .. }
                        | Msg::Reclaim
                        | Msg::Metrics(_))) => self.handle(msg),
                    Some(msg) => msg::refuse(msg),
                    None => inbox_open = false,
                },
            }
        }
        msg::close_inbox(inbox).await;
        // Every finished job is answered before the shard reports it has stopped.
        self.outbox.flush();
        // A caller who joined the line as it closed and whose `Reclaim` reached the inbox
        // before it closed is still there: it hears now. (One whose send failed answers
        // itself.)
        fail_line(&self.shared.lines[self.id], &crate::error::shutdown_error());
        let pages = self.plan.borrow_mut().close_all();
        lifecycle::close_all(pages).await;
        for d in draining::take_all() {
            d.conn.close();
        }
        for conn in self.links.take_all() {
            conn.close();
        }
    }
}
