//! One shard: an OS thread running a current-thread tokio runtime and a `LocalSet`,
//! owning one connection per browser, its sessions, its wait queue and its metrics.
//!
//! Never blocks its thread; never shares state with other threads except through
//! messages (its inbox) and the overflow queues. Everything inside is `Rc`/`RefCell`,
//! borrowed only between `.await`s.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::affinity::AffinityMap;
use crate::cdp::protocol::{MethodName, Reply};
use crate::cdp::{Connection, ConnectionConfig, Page, PageOptions};
use crate::config::{Config, Isolation, Reset};
use crate::fleet::Fleet;
use crate::handoff::{Handoff, Line, Outcome, Successor};
use crate::job::{AffinityMode, Job};
use crate::metrics::{Gauges, ShardMetrics, ShardReport};
use crate::pool::{Lease, LeaseLink};
use crate::queue::{Admit, WaitQueue, Waiting};
use crate::steal::Overflow;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{mpsc, oneshot, LiveCell};
use crate::{Error, ErrorKind, Result, TimeoutKind};

/// A boxed future that stays on the shard's thread.
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How one run of a job went.
pub(crate) enum Attempt {
    Ok,
    Failed(ErrorKind),
    /// The caller stopped waiting.
    Abandoned,
}

/// A `run` closure with its reply channel, type-erased so it can travel in a message.
pub(crate) trait JobTask: Send {
    /// Runs the job once on `page`, keeping its result for `finish`.
    fn run<'a>(&'a mut self, page: &'a Page) -> LocalFuture<'a, Attempt>;
    /// Sends the kept result to the caller.
    fn finish(self: Box<Self>);
    /// Sends `err` to the caller instead.
    fn fail(self: Box<Self>, err: Error);
    /// True when the caller no longer waits.
    fn is_abandoned(&self) -> bool;
}

/// What a request wants once it has a session.
pub enum Work {
    Run(Box<dyn JobTask>),
    Acquire(oneshot::Sender<Result<Lease>>),
}

impl Work {
    fn is_abandoned(&self) -> bool {
        match self {
            Work::Run(task) => task.is_abandoned(),
            Work::Acquire(tx) => tx.is_closed(),
        }
    }

    fn fail(self, err: Error) {
        match self {
            Work::Run(task) => task.fail(err),
            Work::Acquire(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// A request for a session. `Send`: it may move to another shard while it waits.
pub struct Request {
    pub job: Job,
    pub work: Work,
    pub submitted: Instant,
    /// Its arrival number ([`Line::next_id`](crate::handoff::Line::next_id)), drawn when
    /// it was made: its place among every request and line caller of the pool, whichever
    /// shard ends up serving it and however late its message is handled.
    pub arrival: u64,
    /// Runs so far (retries after a lost session).
    pub attempts: u32,
}

impl Request {
    /// When waiting must end, and which deadline that is.
    fn wait_deadline(&self, cfg: &Config) -> (Instant, TimeoutKind) {
        wait_deadline(&self.job, self.submitted, cfg)
    }
}

/// An operation a [`Lease`] asks its shard to run on its page. Its reply channel is
/// tokio's own, not the `sync` facade's: the connection answers it like any call, and no
/// protocol of ours rides on it.
pub(crate) enum LeaseOp {
    /// A command whose parameters the holder encoded; the reply goes back undecoded,
    /// for the holder to decode in its own thread.
    Call {
        method: MethodName,
        params: Box<RawValue>,
        reply: tokio::sync::oneshot::Sender<Result<Reply>>,
    },
    Goto {
        url: String,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

impl LeaseOp {
    /// Answers the holder with `error` instead.
    fn fail(self, error: Error) {
        match self {
            LeaseOp::Call { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            LeaseOp::Goto { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Messages into a shard.
pub enum Msg {
    Submit(Request),
    LeaseOp {
        lease: u64,
        op: LeaseOp,
        timeout: Option<Duration>,
    },
    Release {
        lease: u64,
    },
    Metrics(oneshot::Sender<ShardReport>),
    /// The live configuration changed.
    Reconfigured,
    Shutdown {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What a shard shares with the pool and the other shards. All `Send + Sync`.
pub(crate) struct Shared {
    pub(crate) config: crate::sync::Arc<LiveCell<Config>>,
    pub(crate) overflow: crate::sync::Arc<Overflow<Request>>,
    /// One wake-up per shard, fired when overflow work arrives for a parked shard.
    pub(crate) wakers: std::sync::Arc<[crate::sync::Notify]>,
    pub(crate) inboxes: std::sync::Arc<[mpsc::UnboundedSender<Msg>]>,
    pub(crate) fleet: std::sync::Arc<Fleet>,
    pub(crate) page_options: PageOptions,
    /// Every shard's line, one arrival counter for all (see `handoff`).
    pub(crate) lines: std::sync::Arc<[crate::sync::Arc<Line>]>,
}

/// This shard's socket to one browser, and that browser's health as seen from here.
#[derive(Default)]
struct Link {
    conn: Option<Connection>,
    /// The browser generation `conn` talks to (bumped when it is relaunched).
    generation: u64,
    /// Consecutive failures to connect or to open a session.
    failures: u32,
    /// No new attempt before this (backoff); past the breaker threshold the browser
    /// counts as down until then.
    retry_at: Option<Instant>,
    /// A connect attempt is running; others wait for it.
    connecting: bool,
    /// Targets of sessions lost with the socket: closed once a new socket reaches the
    /// same browser (a dropped client's pages stay open in Chromium).
    lost_targets: Vec<String>,
    /// Initial URLs of pages whose opening failed or was cancelled, maybe before the
    /// browser told us their target id, and when: the targets with these URLs are looked
    /// up and closed after a reconnect to the same browser and by every health round for
    /// `LOST_OPENING_WATCH` (a late `Target.createTarget` may still create one).
    lost_openings: Vec<(String, Instant)>,
}

impl Link {
    /// Looks for the targets of failed openings on `conn` and closes them (in the
    /// background; nothing to do without any).
    fn sweep_lost_openings(&self, conn: &Connection) {
        if self.lost_openings.is_empty() {
            return;
        }
        let urls = self.lost_openings.iter().map(|(u, _)| u.clone()).collect();
        tokio::task::spawn_local(close_lost_openings(conn.clone(), urls));
    }
}

type SessionKey = u64;

/// How long a failed opening's URL is looked for among the browser's targets.
const LOST_OPENING_WATCH: Duration = Duration::from_secs(10);

/// Most inbox messages handled per wake-up before the loop looks at its timers again.
const INBOX_BATCH: usize = 64;

/// How a session comes back from a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Return {
    /// Ready for the next job.
    Clean,
    /// Interrupted mid-work: stop it, then reuse it (or retire it if that fails).
    Interrupted,
    /// Known dead: retire and replace.
    Dead,
    /// Back from its between-jobs reset: idle now.
    Reset,
}

struct Session {
    page: Rc<Page>,
    browser: usize,
    created: Instant,
    last_used: Instant,
    uses: u32,
    lease: Option<u64>,
    /// Whether its lease may pass it straight to the next caller (see `handoff`).
    passable: crate::sync::Arc<AtomicBool>,
    /// The affinity key whose browser context it lives in (`ContextPerKey`).
    owner: Option<Arc<str>>,
    /// Its own browser context, disposed with it (`ContextPerJob`).
    own_context: Option<String>,
}

/// A browser context of one affinity key on one browser (`ContextPerKey`).
struct KeyContext {
    id: String,
    last_used: Instant,
}

/// The key whose context a job's session must live in, if isolation asks for one.
fn owner_of(job: &Job, isolation: Isolation) -> Option<Arc<str>> {
    match isolation {
        Isolation::ContextPerKey => job.affinity.as_ref().map(|a| a.key_arc().clone()),
        Isolation::Shared | Isolation::ContextPerJob => None,
    }
}

struct Waiter {
    request: Request,
    deadline: Instant,
    kind: TimeoutKind,
}

/// A request the shard moved from its queue into the line (the request itself is in the
/// line). Keyed by its queue id, which it keeps.
struct LineEntry {
    priority: crate::Priority,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionKey, Session>,
    /// Idle sessions, most recently used last.
    idle: Vec<SessionKey>,
    busy: usize,
    creating: usize,
    next_key: SessionKey,
    /// Pages opened so far (numbers each page's initial URL).
    openings: u64,
    queue: WaitQueue<Waiter>,
    /// Requests the shard put in the line (see `handoff`), by queue id; out of the line
    /// but not yet reported `Passed` counts too.
    line: HashMap<u64, LineEntry>,
    /// While the line is open to callers joining by themselves: when it must be taken
    /// back (the earliest deadline any of them can have).
    line_open_until: Option<Instant>,
    /// The line may open once the inbox is empty (see `open_line_if_allowed`).
    line_may_open: bool,
    deadlines: BTreeSet<(Instant, Deadline)>,
    leases: HashMap<u64, SessionKey>,
    next_lease: u64,
    links: Vec<Link>,
    /// Sessions (open or opening) per browser, to spread new ones.
    per_browser: Vec<usize>,
    /// Sessions lost to crashes or lost sockets and not yet replaced.
    lost: usize,
    /// Idle sessions out for a health probe (counted as busy).
    probing: usize,
    /// Which session each affinity key last used.
    affinity: AffinityMap<SessionKey>,
    /// Keys whose session is being opened (`ContextPerKey`: one at a time per key).
    opening: Vec<Option<Arc<str>>>,
    /// Browser contexts per (browser, key) under `ContextPerKey`.
    contexts: HashMap<(usize, Arc<str>), KeyContext>,
    /// Keyed requests waiting for their busy session, by session.
    preferred: HashMap<SessionKey, VecDeque<PreferredWaiter>>,
    preferred_count: usize,
    next_preferred: u64,
    /// Keyed requests that stopped waiting for their session; queued on the next pump.
    orphans: Vec<Waiter>,
    shutting_down: bool,
}

/// A wait deadline: of a queued request, or of a request waiting for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Queue(u64),
    Preferred(SessionKey, u64),
    Line(u64),
    /// The line has been open for the pool's wait limit: callers who joined it by
    /// themselves may be due (see `handoff`).
    LineOpen,
}

/// Where a keyed request's session is.
enum Preferred {
    None,
    /// Idle, at this index of the idle list.
    Idle(usize),
    Busy(SessionKey),
}

/// A keyed request waiting for its busy session until `until`.
struct PreferredWaiter {
    id: u64,
    until: Instant,
    waiter: Waiter,
}

/// Takes the request `id` waiting for `session` (its deadline entry is the caller's).
fn take_preferred(st: &mut State, session: SessionKey, id: u64) -> Option<Waiter> {
    let list = st.preferred.get_mut(&session)?;
    let i = list.iter().position(|p| p.id == id)?;
    let p = list.remove(i)?;
    if list.is_empty() {
        st.preferred.remove(&session);
    }
    st.preferred_count -= 1;
    Some(p.waiter)
}

/// Takes the first request still waiting for `session`, dropping abandoned ones.
fn next_preferred(st: &mut State, session: SessionKey) -> Option<Waiter> {
    loop {
        let list = st.preferred.get_mut(&session)?;
        let Some(p) = list.pop_front() else {
            st.preferred.remove(&session);
            return None;
        };
        st.preferred_count -= 1;
        st.deadlines
            .remove(&(p.until, Deadline::Preferred(session, p.id)));
        if !p.waiter.request.work.is_abandoned() {
            return Some(p.waiter);
        }
    }
}

/// Everything waiting for `session` (which is going away), deadlines removed.
fn drain_preferred(st: &mut State, session: SessionKey) -> Vec<Waiter> {
    let Some(list) = st.preferred.remove(&session) else {
        return Vec::new();
    };
    st.preferred_count -= list.len();
    list.into_iter()
        .map(|p| {
            st.deadlines
                .remove(&(p.until, Deadline::Preferred(session, p.id)));
            p.waiter
        })
        .collect()
}

/// The shard's state and its handles to the outside.
pub(crate) struct Core {
    id: usize,
    shared: Shared,
    state: RefCell<State>,
    metrics: Rc<RefCell<ShardMetrics>>,
    /// Fired whenever busy sessions return (shutdown waits on it).
    returned: Notify,
    /// Fired by a connection when a session dies or its socket closes.
    loss: Rc<Notify>,
    /// Fired when a connect attempt ends.
    link_settled: Notify,
    /// Random, so the initial URLs of this shard's pages are its own even with other
    /// pools on the same browser.
    tag: u64,
    /// Callers that releasing leases serve directly (see `handoff`).
    line: crate::sync::Arc<Line>,
}

thread_local! {
    static CURRENT_SHARD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The shard whose thread calls this: `Some(i)` inside a job run by
/// [`Pool::run`](crate::Pool::run), `None` elsewhere.
pub fn current_shard() -> Option<usize> {
    CURRENT_SHARD.get()
}

/// Starts shard `id` on its own thread. Reports on `ready` once its connections are up.
pub(crate) fn spawn(
    id: usize,
    shared: Shared,
    inbox: mpsc::UnboundedReceiver<Msg>,
    pin_core: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("cdpmux-shard-{id}"))
        .spawn(move || {
            CURRENT_SHARD.set(Some(id));
            if let Some(core) = pin_core {
                pin_to_core(core);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(id, shared, inbox, ready));
        })
}

fn pin_to_core(core: usize) {
    // SAFETY: `set` is a plain bitmask on the stack; sched_setaffinity reads it only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin shard thread to its core");
        }
    }
}

async fn run(
    id: usize,
    shared: Shared,
    mut inbox: mpsc::UnboundedReceiver<Msg>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    let browsers = shared.fleet.len();
    let line = shared.lines[id].clone();
    let core = Rc::new(Core {
        id,
        state: RefCell::new(State {
            per_browser: vec![0; browsers],
            links: (0..browsers).map(|_| Link::default()).collect(),
            ..State::default()
        }),
        shared,
        metrics: Rc::new(RefCell::new(ShardMetrics::default())),
        returned: Notify::new(),
        loss: Rc::new(Notify::new()),
        link_settled: Notify::new(),
        tag: fastrand::u64(..),
        line,
    });
    for browser in 0..browsers {
        if let Err(e) = core.connection(browser).await {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    core.main_loop(&mut inbox).await;
}

/// `base · 2^(failures-1)`, capped at `max`, times a jitter in [0.5, 1.5).
fn backoff(cfg: &Config, failures: u32) -> Duration {
    let exp = cfg
        .reconnect_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    exp.min(cfg.reconnect_max).mul_f64(0.5 + fastrand::f64())
}

impl Core {
    async fn main_loop(self: &Rc<Self>, inbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let far = || Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let health_every = |cfg: &Config| {
            if cfg.health_interval.is_zero() {
                Duration::from_secs(3600)
            } else {
                cfg.health_interval
            }
        };
        let health = tokio::time::sleep(health_every(&self.shared.config.load()));
        tokio::pin!(health);
        let mut stashed_shutdown: Option<(Duration, oneshot::Sender<()>)> = None;
        loop {
            if let Some((grace, done)) = stashed_shutdown.take() {
                self.shared.overflow.unpark(self.id);
                self.shutdown(grace, inbox).await;
                let _ = done.send(());
                return;
            }
            if self.state.borrow().shutting_down {
                return;
            }
            // Steal before parking: one request at a time, only with room to spare.
            let spare = self.has_spare_capacity();
            if spare {
                if let Some(request) = self.shared.overflow.take() {
                    self.metrics.borrow_mut().counters.steals += 1;
                    self.admit(request);
                    continue;
                }
                if self.shared.overflow.prepare_park(self.id) {
                    tokio::task::yield_now().await; // a push is landing right now
                    continue;
                }
            }
            let next_deadline = self.state.borrow().deadlines.first().map(|(at, _)| *at);
            // Re-arming the timer costs a trip through the time driver: only on a change.
            if next_deadline != armed {
                sleep.as_mut().reset(next_deadline.unwrap_or_else(far));
                armed = next_deadline;
            }
            tokio::select! {
                biased;
                msg = inbox.recv() => match msg {
                    Some(Msg::Shutdown { grace, done }) => {
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
                                    stashed_shutdown = Some((grace, done));
                                    break;
                                }
                                Ok(msg) => self.handle(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        self.shared.overflow.unpark(self.id);
                        self.shutdown(Duration::ZERO, inbox).await;
                        return;
                    }
                },
                _ = self.shared.wakers[self.id].notified() => {}
                _ = &mut sleep, if next_deadline.is_some() => {
                    armed = None; // fired: re-arm next turn even for the same instant
                    self.expire(Instant::now());
                }
                _ = self.loss.notified() => self.sweep(),
                _ = &mut health => {
                    self.health_check();
                    let next = Instant::now() + health_every(&self.shared.config.load());
                    health.as_mut().reset(next);
                }
            }
            if spare {
                self.shared.overflow.unpark(self.id);
            }
            if inbox.is_empty() {
                self.open_line_if_allowed();
            }
        }
    }

    fn handle(self: &Rc<Self>, msg: Msg) {
        // Hand-offs first: a lease's new holder sends nothing before its hand-off is
        // recorded.
        self.take_outcomes();
        match msg {
            Msg::Submit(request) => self.admit(request),
            Msg::LeaseOp { lease, op, timeout } => self.lease_op(lease, op, timeout),
            Msg::Release { lease } => {
                let key = self.state.borrow_mut().leases.remove(&lease);
                if let Some(key) = key {
                    if let Some(s) = self.state.borrow_mut().sessions.get_mut(&key) {
                        s.lease = None;
                    }
                    self.give_back(key, Return::Clean);
                }
            }
            Msg::Metrics(reply) => {
                let _ = reply.send(self.report());
            }
            Msg::Reconfigured => self.reconfigured(),
            Msg::Shutdown { .. } => unreachable!("handled by the main loop"),
        }
    }

    /// Applies a new configuration: flush cap, fewer sessions, then serve waiters.
    fn reconfigured(self: &Rc<Self>) {
        let cfg = self.shared.config.load();
        {
            let mut st = self.state.borrow_mut();
            for conn in st.links.iter().filter_map(|l| l.conn.as_ref()) {
                conn.set_max_frames_per_flush(cfg.max_frames_per_flush);
            }
            while st.sessions.len() > cfg.sessions_per_shard {
                let Some(key) = st.idle.pop() else { break };
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                Self::forget(&mut st, key);
            }
            // Back to the queue, in order; the pump lines up again what the new
            // configuration allows.
            self.take_back_line(&mut st);
            let now = Instant::now();
            let leased: Vec<_> = st.leases.values().copied().collect();
            for key in leased {
                update_passable(&st, key, &cfg, now);
            }
        }
        self.pump();
    }

    /// Records what releasing leases did with the callers they took from the line (see
    /// `handoff`) and tops the line up.
    fn take_outcomes(&self) {
        let mut outcomes = self.line.outcomes().peekable();
        if outcomes.peek().is_none() {
            return;
        }
        let cfg = self.shared.config.load();
        let mut st = self.state.borrow_mut();
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
                    self.passed(&mut st, &cfg, lease, successor, waited, command_timeout);
                    let counters = &mut self.metrics.borrow_mut().counters;
                    counters.joined_handoffs += u64::from(joined);
                    counters.cross_shard_handoffs += u64::from(across);
                }
                Outcome::Left { successor } | Outcome::Served { successor } => {
                    if let Some(e) = st.line.remove(&successor) {
                        st.deadlines
                            .remove(&(e.deadline, Deadline::Line(successor)));
                    }
                }
                Outcome::Expired { successor, kind } => {
                    if let Some(e) = st.line.remove(&successor) {
                        st.deadlines
                            .remove(&(e.deadline, Deadline::Line(successor)));
                    }
                    self.metrics.borrow_mut().counters.timeout(kind);
                }
            }
        }
        // No capacity changed hands, so no pump: only the line needs topping up.
        self.fill_line(&mut st, &cfg, Instant::now());
    }

    /// A lease passed its session to `successor`: the session's new use is counted and
    /// its command deadline is the new job's.
    fn passed(
        &self,
        st: &mut State,
        cfg: &Config,
        lease: u64,
        successor: u64,
        waited: Duration,
        command_timeout: Option<Duration>,
    ) {
        if let Some(e) = st.line.remove(&successor) {
            st.deadlines
                .remove(&(e.deadline, Deadline::Line(successor)));
        }
        let now = Instant::now();
        if let Some(key) = st.leases.get(&lease).copied() {
            if let Some(s) = st.sessions.get_mut(&key) {
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
            update_passable(st, key, cfg, now);
        }
    }

    /// Moves queue heads into the line while every session is out and leases are held
    /// (plain `acquire` requests only, in queue order), then opens or closes the line to
    /// callers joining by themselves.
    fn fill_line(&self, st: &mut State, cfg: &Config, now: Instant) {
        self.line_up_heads(st, cfg, now);
        self.update_open(st, cfg);
    }

    fn line_up_heads(&self, st: &mut State, cfg: &Config, now: Instant) {
        if !line_applies(st, cfg) {
            return;
        }
        let admit = admit_after_release(st, cfg);
        let plain = |r: &Request| matches!(r.work, Work::Acquire(_)) && r.job.affinity.is_none();
        // A request offered by a saturated shard first, one per turn, as in `pump`: the
        // sessions here go round without the pump, and it must not be stranded.
        if admit == Admit::All && !self.shared.overflow.is_empty() {
            if let Some(request) = self.shared.overflow.take() {
                self.metrics.borrow_mut().counters.steals += 1;
                let head = st.queue.peek(now.into_std(), cfg.aging, admit);
                let outranked = head.is_some_and(|h| h.priority > request.job.priority);
                let (deadline, kind) = request.wait_deadline(cfg);
                let waiter = Waiter {
                    request,
                    deadline,
                    kind,
                };
                if outranked || !plain(&waiter.request) {
                    st.orphans.push(waiter); // queued on the next pump
                } else {
                    self.line_up(st, waiter);
                }
            }
        }
        loop {
            let next_is_plain = st
                .queue
                .peek(now.into_std(), cfg.aging, admit)
                .is_some_and(|h| plain(&h.value.request));
            if !next_is_plain {
                break;
            }
            let Some(w) = st.queue.pop(now.into_std(), cfg.aging, admit) else {
                break;
            };
            st.deadlines
                .remove(&(w.value.deadline, Deadline::Queue(w.id)));
            self.line_up(st, w.value);
        }
    }

    /// Puts a plain `acquire` request into the line under its arrival number (its queue
    /// id too).
    fn line_up(&self, st: &mut State, waiter: Waiter) {
        let Waiter {
            request,
            deadline,
            kind,
        } = waiter;
        let id = request.arrival;
        let priority = request.job.priority;
        let Work::Acquire(tx) = request.work else {
            unreachable!("only acquire requests are lined up")
        };
        if tx.is_closed() {
            return; // its caller left
        }
        st.deadlines.insert((deadline, Deadline::Line(id)));
        st.line.insert(id, LineEntry { priority, deadline });
        self.line.push(Successor {
            id,
            tx,
            job: request.job,
            submitted: request.submitted,
            deadline: (deadline, kind),
            joined: false,
        });
    }

    /// Closes the line and takes everyone still in it back into the queue, each in its
    /// place by arrival number.
    fn take_back_line(&self, st: &mut State) {
        let taken = self.line.close_and_drain();
        Self::line_closed(st);
        for Successor {
            id,
            tx,
            job,
            submitted,
            deadline: (deadline, kind),
            ..
        } in taken
        {
            if let Some(e) = st.line.remove(&id) {
                st.deadlines.remove(&(e.deadline, Deadline::Line(id)));
            }
            if tx.is_closed() {
                continue; // its caller left
            }
            let request = Request {
                job,
                work: Work::Acquire(tx),
                submitted,
                arrival: id,
                attempts: 0,
            };
            st.deadlines.insert((deadline, Deadline::Queue(id)));
            st.queue.put_back(Waiting {
                id,
                since: submitted.into_std(),
                priority: request.job.priority,
                value: Waiter {
                    request,
                    deadline,
                    kind,
                },
            });
        }
    }

    /// Holds the line open for callers to join by themselves exactly while that keeps
    /// the order the queue would: nobody queued, every session out (one more would not
    /// be admitted for a `Normal` request otherwise), nobody below `Normal` in the line.
    fn update_open(&self, st: &mut State, cfg: &Config) {
        let open = line_applies(st, cfg)
            && st.queue.is_empty()
            && st.orphans.is_empty()
            && admit_after_release(st, cfg) == Admit::All
            && st
                .line
                .values()
                .all(|e| e.priority >= crate::Priority::Normal);
        st.line_may_open = open;
        if !open {
            self.line.set_open(false);
            // Callers who joined by themselves keep the timer until they are out.
            if self.line.joined() == 0 {
                Self::line_closed(st);
            }
        }
    }

    /// Opens the line if `update_open` allows it. Called only with the inbox empty: a
    /// request already sent to the shard must be queued (and lined up) before anyone
    /// joins the line behind its back.
    fn open_line_if_allowed(&self) {
        let mut st = self.state.borrow_mut();
        if !st.line_may_open || self.line.is_open() {
            return;
        }
        if st.line_open_until.is_none() {
            // Whoever joins from now on waits at most this long by the pool's deadlines.
            let cfg = self.shared.config.load();
            let until = Instant::now() + cfg.wait_timeout.min(cfg.job_timeout);
            st.deadlines.insert((until, Deadline::LineOpen));
            st.line_open_until = Some(until);
        }
        self.line.set_open(true);
    }

    /// The line is closed: its timer goes.
    fn line_closed(st: &mut State) {
        if let Some(until) = st.line_open_until.take() {
            st.deadlines.remove(&(until, Deadline::LineOpen));
        }
    }

    fn report(&self) -> ShardReport {
        let st = self.state.borrow();
        let mut by_class = st.queue.len_by_class();
        for e in st.line.values() {
            by_class[e.priority.index()] += 1;
        }
        by_class[crate::Priority::Normal.index()] += self.line.joined();
        let parked = st.preferred.values().flatten().map(|p| &p.waiter);
        for w in parked.chain(&st.orphans) {
            by_class[w.request.job.priority.index()] += 1;
        }
        ShardReport {
            metrics: self.metrics.borrow().clone(),
            gauges: Gauges {
                idle: st.idle.len() as u64,
                busy: st.busy as u64,
                creating: st.creating as u64,
                waiting: by_class.iter().sum::<usize>() as u64,
                waiting_by_class: by_class.map(|n| n as u64),
                affinity_keys: st.affinity.len() as u64,
                open_lines: u64::from(self.line.is_open()),
            },
        }
    }

    /// Room for one more non-critical request, and nobody local waiting for it.
    fn has_spare_capacity(&self) -> bool {
        let cfg = self.shared.config.load();
        let st = self.state.borrow();
        if !st.queue.is_empty() || !st.line.is_empty() || self.line.joined() > 0 {
            return false;
        }
        let live = st.sessions.len() + st.creating;
        st.busy < cfg.sessions_per_shard - cfg.critical_reserve
            && (!st.idle.is_empty() || live < cfg.sessions_per_shard)
    }

    /// Takes a new (or stolen, or retried) request: serve, queue or refuse it.
    pub(crate) fn admit(self: &Rc<Self>, request: Request) {
        if self.state.borrow().shutting_down {
            request.work.fail(shutdown_error());
            return;
        }
        if request.work.is_abandoned() {
            return;
        }
        let cfg = self.shared.config.load();
        let (deadline, kind) = request.wait_deadline(&cfg);
        let now = Instant::now();
        if deadline <= now {
            self.metrics.borrow_mut().counters.timeout(kind);
            let err = wait_timeout_error(kind, &request.job, &cfg);
            request.work.fail(err);
            return;
        }
        let priority = request.job.priority;
        let waiter = Waiter {
            request,
            deadline,
            kind,
        };
        let Some(waiter) = self.route_by_affinity(waiter, &cfg, now) else {
            return;
        };
        // Fast path: nobody waiting and a page free: no queue, no deadline entry.
        {
            let mut st = self.state.borrow_mut();
            let room = if priority == crate::Priority::Critical {
                cfg.sessions_per_shard
            } else {
                cfg.sessions_per_shard - cfg.critical_reserve
            };
            if st.queue.is_empty()
                && st.line.is_empty()
                && self.line.joined() == 0
                && st.busy < room
            {
                let owner = owner_of(&waiter.request.job, cfg.isolation);
                if let Some(key) = self.take_idle(&mut st, &cfg, owner.as_ref()) {
                    drop(st);
                    self.start(key, waiter.request);
                    // That may have been the last free session: the line may open.
                    self.update_open(&mut self.state.borrow_mut(), &cfg);
                    return;
                }
            }
        }
        let pushed = {
            let mut st = self.state.borrow_mut();
            let since = waiter.request.submitted.into_std();
            // Its arrival number places it among everyone in the queue and the line.
            let id = waiter.request.arrival;
            // Requests parked for their preferred session or in the line count against
            // the bound too.
            let bound = cfg
                .max_queue
                .saturating_sub(st.preferred_count + st.line.len());
            match st.queue.push_with_id(id, priority, since, waiter, bound) {
                Ok(id) => Ok(id),
                Err(waiter) => {
                    // Full: first drop waiters whose callers have left, then try once more.
                    st.queue.retain(|w| !w.request.work.is_abandoned());
                    st.queue.push_with_id(id, priority, since, waiter, bound)
                }
            }
        };
        match pushed {
            Ok(id) => {
                let mut st = self.state.borrow_mut();
                st.deadlines.insert((deadline, Deadline::Queue(id)));
                // Someone in the line is of a lower class: the line goes back to the
                // queue so this request is served first.
                let joined_below = self.line.joined() > 0 && priority > crate::Priority::Normal;
                if joined_below || st.line.values().any(|e| e.priority < priority) {
                    self.take_back_line(&mut st);
                }
                drop(st);
                self.pump();
            }
            Err(waiter) => {
                self.metrics.borrow_mut().counters.queue_full += 1;
                waiter.request.work.fail(Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "queue full ({} waiting on shard {}); raise max_queue, add sessions, or retry later",
                        cfg.max_queue, self.id
                    ),
                ));
            }
        }
    }

    /// Serves waiters with idle sessions, opens sessions for the rest (up to the limit),
    /// and offers movable waiters to other shards when saturated. Called after every
    /// change of capacity or of the queue.
    fn pump(self: &Rc<Self>) {
        let cfg = self.shared.config.load();
        let now = Instant::now();
        {
            // Requests that gave up on their preferred session: already admitted, so
            // they join the queue whatever its bound.
            let mut st = self.state.borrow_mut();
            for w in std::mem::take(&mut st.orphans) {
                let (id, priority, since, deadline) = (
                    w.request.arrival,
                    w.request.job.priority,
                    w.request.submitted.into_std(),
                    w.deadline,
                );
                if let Ok(id) = st.queue.push_with_id(id, priority, since, w, usize::MAX) {
                    st.deadlines.insert((deadline, Deadline::Queue(id)));
                }
            }
        }
        // A session is free: the line holds the oldest requests, so it is served first.
        loop {
            let mut st = self.state.borrow_mut();
            if st.shutting_down
                || st.idle.is_empty()
                || st.busy >= cfg.sessions_per_shard - cfg.critical_reserve
                || (st.line.is_empty() && self.line.joined() == 0)
            {
                break;
            }
            let Some(key) = self.take_idle(&mut st, &cfg, None) else {
                break;
            };
            let Some(s) = self.line.pop() else {
                st.idle.push(key);
                break;
            };
            if let Some(e) = st.line.remove(&s.id) {
                st.deadlines.remove(&(e.deadline, Deadline::Line(s.id)));
            }
            let (deadline, kind) = s.deadline;
            if s.tx.is_closed() || deadline <= now {
                st.idle.push(key);
                if !s.tx.is_closed() {
                    self.metrics.borrow_mut().counters.timeout(kind);
                    let limit = deadline.saturating_duration_since(s.submitted);
                    let _ = s.tx.send(Err(timeout_error(kind, limit)));
                }
                continue;
            }
            drop(st);
            let request = Request {
                job: s.job,
                work: Work::Acquire(s.tx),
                submitted: s.submitted,
                arrival: s.id,
                attempts: 0,
            };
            self.start(key, request);
        }
        loop {
            let mut st = self.state.borrow_mut();
            if st.queue.is_empty() || st.shutting_down {
                break;
            }
            let admit = if st.busy < cfg.sessions_per_shard - cfg.critical_reserve {
                Admit::All
            } else if st.busy < cfg.sessions_per_shard {
                Admit::CriticalOnly
            } else {
                break;
            };
            let owner = match st.queue.peek(now.into_std(), cfg.aging, admit) {
                Some(head) => owner_of(&head.value.request.job, cfg.isolation),
                None => break,
            };
            let Some(key) = self.take_idle(&mut st, &cfg, owner.as_ref()) else {
                let live = st.sessions.len() + st.creating;
                if cfg.isolation == Isolation::ContextPerKey {
                    // One session at a time per key; at the limit, the least recently
                    // used idle session (another key's) makes room.
                    if st.opening.contains(&owner) {
                        break;
                    }
                    if live >= cfg.sessions_per_shard {
                        if st.idle.is_empty() {
                            break;
                        }
                        let victim = st.idle.remove(0);
                        self.metrics.borrow_mut().counters.sessions_retired += 1;
                        Self::forget(&mut st, victim);
                    }
                    st.opening.push(owner.clone());
                    drop(st);
                    self.open_session(&cfg, owner);
                    break;
                }
                let wanted = st.queue.len().saturating_sub(st.creating);
                let room = cfg.sessions_per_shard.saturating_sub(live);
                let to_open = wanted.min(room);
                drop(st);
                for _ in 0..to_open {
                    self.open_session(&cfg, None);
                }
                break;
            };
            // Requests offered by a saturated shard wait longest: while this shard
            // serves, it takes them in (first, unless the local head outranks them), so
            // none is stranded when no shard ever has spare capacity again.
            if admit == Admit::All
                && cfg.isolation != Isolation::ContextPerKey
                && !self.shared.overflow.is_empty()
            {
                if let Some(request) = self.shared.overflow.take() {
                    self.metrics.borrow_mut().counters.steals += 1;
                    let head = st.queue.peek(now.into_std(), cfg.aging, admit);
                    let outranked = head.is_some_and(|h| h.priority > request.job.priority);
                    if request.work.is_abandoned() {
                        st.idle.push(key);
                    } else if outranked {
                        // Queued here behind the local head (next pump), never lost.
                        let (deadline, kind) = request.wait_deadline(&cfg);
                        st.orphans.push(Waiter {
                            request,
                            deadline,
                            kind,
                        });
                        st.idle.push(key);
                    } else {
                        drop(st);
                        self.start(key, request);
                    }
                    continue;
                }
            }
            let Some(w) = st.queue.pop(now.into_std(), cfg.aging, admit) else {
                st.idle.push(key);
                break;
            };
            st.deadlines
                .remove(&(w.value.deadline, Deadline::Queue(w.id)));
            if w.value.request.work.is_abandoned() {
                st.idle.push(key);
                continue;
            }
            drop(st);
            self.start(key, w.value.request);
        }
        self.fill_line(&mut self.state.borrow_mut(), &cfg, now);
        self.overflow_if_saturated(&cfg);
    }

    /// Takes the most recently used idle session of `owner` that is still alive,
    /// retiring dead or expired ones on the way.
    fn take_idle(
        &self,
        st: &mut State,
        cfg: &Config,
        owner: Option<&Arc<str>>,
    ) -> Option<SessionKey> {
        let now = Instant::now();
        let mut i = st.idle.len();
        while i > 0 {
            i -= 1;
            let key = st.idle[i];
            let session = &st.sessions[&key];
            if let Some(why) = session.page.dead_reason() {
                tracing::debug!(shard = self.id, error = %why, "dropping a dead idle session");
                self.metrics.borrow_mut().counters.sessions_crashed += 1;
                st.idle.remove(i);
                st.lost += 1;
                Self::forget(st, key);
                continue;
            }
            if expired(session, cfg, now) {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                st.idle.remove(i);
                Self::forget(st, key);
                continue;
            }
            if session.owner.as_ref() == owner {
                st.idle.remove(i);
                return Some(key);
            }
        }
        None
    }

    /// Removes a session; dropping its page closes the target (and a context of its
    /// own is disposed). Requests waiting for it will take another.
    fn forget(st: &mut State, key: SessionKey) {
        if let Some(s) = st.sessions.remove(&key) {
            st.per_browser[s.browser] -= 1;
            let Session {
                page,
                browser,
                own_context,
                ..
            } = s;
            let link = &mut st.links[browser];
            if link.conn.as_ref().is_none_or(|c| c.is_closed()) {
                link.lost_targets.push(page.target_id().to_owned());
            }
            drop(page);
            if let (Some(ctx), Some(conn)) = (own_context, st.links[browser].conn.as_ref()) {
                conn.send_and_forget(
                    "Target.disposeBrowserContext",
                    serde_json::json!({ "browserContextId": ctx }),
                );
            }
        }
        let waiting = drain_preferred(st, key);
        st.orphans.extend(waiting);
    }

    fn overflow_if_saturated(&self, cfg: &Config) {
        let mut st = self.state.borrow_mut();
        let live = st.sessions.len() + st.creating;
        if st.queue.len() <= cfg.steal_watermark
            || !st.idle.is_empty()
            || live < cfg.sessions_per_shard
            || self.shared.inboxes.len() < 2
        {
            return;
        }
        // Offer one request per parked shard: when every shard is saturated, moving
        // requests around only costs.
        while st.queue.len() > cfg.steal_watermark && self.shared.overflow.has_parked() {
            let Some(w) = st.queue.pop_newest_where(|w| w.request.job.is_movable()) else {
                break;
            };
            st.deadlines
                .remove(&(w.value.deadline, Deadline::Queue(w.id)));
            self.metrics.borrow_mut().counters.overflowed += 1;
            let class = w.priority.index();
            if let Some(shard) = self.shared.overflow.push(class, w.value.request) {
                self.shared.wakers[shard].notify_one();
            }
        }
    }

    /// Opens one session in the background on the healthiest, least used browser. With
    /// every browser down (breaker open), fails a waiter at once instead.
    fn open_session(self: &Rc<Self>, cfg: &Config, owner: Option<Arc<str>>) {
        let now = Instant::now();
        let browser = {
            let mut st = self.state.borrow_mut();
            let usable = |l: &Link| l.retry_at.is_none_or(|t| t <= now);
            // Prefer browsers with a live socket; a lost one is retried by the health
            // round (and here when no other is left).
            let browser = (0..st.links.len())
                .filter(|b| usable(&st.links[*b]))
                .min_by_key(|b| {
                    let link = &st.links[*b];
                    let lost = link.conn.as_ref().is_none_or(|c| c.is_closed());
                    (lost, link.failures, st.per_browser[*b])
                });
            if let Some(b) = browser {
                st.creating += 1;
                st.per_browser[b] += 1;
            }
            browser
        };
        let Some(browser) = browser else {
            self.state.borrow_mut().opening.retain(|o| *o != owner);
            self.creation_failed(Error::new(
                ErrorKind::BrowserUnavailable,
                "every browser is down (repeated connect or open failures); retrying with backoff",
            ));
            return;
        };
        let timeout = cfg.create_timeout;
        let isolation = cfg.isolation;
        let core = self.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            let opening = core.new_page(browser, isolation, owner.as_ref());
            let opened = tokio::time::timeout(timeout, opening).await;
            // A command deadline inside the opening is the opening's deadline to the
            // caller: report it as such.
            let opened = match opened {
                Ok(Err(e)) if e.kind() != ErrorKind::Timeout(TimeoutKind::Command) => Err(e),
                Ok(result) => result.map_err(|e| {
                    Error::new(
                        ErrorKind::Timeout(TimeoutKind::Create),
                        format!("opening a session: {}", e.message()),
                    )
                }),
                Err(_) => Err(Error::timeout(
                    TimeoutKind::Create,
                    "opening a session",
                    timeout,
                )),
            };
            if matches!(&opened, Err(e) if e.kind() == ErrorKind::Timeout(TimeoutKind::Create)) {
                core.metrics
                    .borrow_mut()
                    .counters
                    .timeout(TimeoutKind::Create);
            }
            let mut st = core.state.borrow_mut();
            st.creating -= 1;
            if let Some(i) = st.opening.iter().position(|o| *o == owner) {
                st.opening.swap_remove(i);
            }
            match opened {
                Ok((page, own_context)) => {
                    core.metrics.borrow_mut().session_created(started.elapsed());
                    st.links[browser].failures = 0;
                    st.lost = st.lost.saturating_sub(1);
                    let key = st.next_key;
                    st.next_key += 1;
                    let now = Instant::now();
                    // The page's death stops it being handed on before its holder hears.
                    let passable = crate::sync::Arc::<AtomicBool>::default();
                    page.watch(passable.clone());
                    st.sessions.insert(
                        key,
                        Session {
                            page: Rc::new(page),
                            browser,
                            created: now,
                            last_used: now,
                            uses: 0,
                            lease: None,
                            passable,
                            owner,
                            own_context,
                        },
                    );
                    st.idle.push(key);
                    drop(st);
                }
                Err(e) => {
                    st.per_browser[browser] -= 1;
                    if e.kind() != ErrorKind::BrowserUnavailable {
                        // Connect failures are counted by `connection` itself.
                        let cfg = core.shared.config.load();
                        note_failure(&mut st.links[browser], &cfg);
                    }
                    drop(st);
                    core.creation_failed(e);
                }
            }
            core.pump();
        });
    }

    /// Opens a page on `browser` in the context isolation asks for. Returns it with the
    /// context it owns alone, if any (disposed when the session goes).
    async fn new_page(
        &self,
        browser: usize,
        isolation: Isolation,
        owner: Option<&Arc<str>>,
    ) -> Result<(Page, Option<String>)> {
        let conn = self.connection(browser).await?;
        let mut options = self.shared.page_options.clone();
        options.initial_url = {
            let mut st = self.state.borrow_mut();
            st.openings += 1;
            format!(
                "about:blank#cdpmux-{}-{}-{}",
                self.tag, self.id, st.openings
            )
        };
        // Failed or cancelled (the creation deadline drops this future), the opening may
        // still have left a target whose id we never learned: it is looked up by its URL
        // later (`close_lost_openings`).
        let mut lost = LostOpening {
            core: self,
            browser,
            url: Some(options.initial_url.clone()),
        };
        let opened = self
            .new_page_on(&conn, browser, isolation, owner, options)
            .await;
        if opened.is_ok() {
            lost.url = None;
        }
        opened
    }

    async fn new_page_on(
        &self,
        conn: &Connection,
        browser: usize,
        isolation: Isolation,
        owner: Option<&Arc<str>>,
        mut options: PageOptions,
    ) -> Result<(Page, Option<String>)> {
        let own = match (isolation, owner) {
            (Isolation::ContextPerKey, Some(owner)) => {
                options.browser_context_id = Some(self.key_context(browser, conn, owner).await?);
                false
            }
            (Isolation::ContextPerJob, _) => {
                options.browser_context_id = Some(create_context(conn).await?);
                true
            }
            _ => false,
        };
        match conn.new_page(&options).await {
            Ok(page) => Ok((page, options.browser_context_id.filter(|_| own))),
            Err(e) => {
                match (own, &options.browser_context_id, owner) {
                    (true, Some(ctx), _) => conn.send_and_forget(
                        "Target.disposeBrowserContext",
                        serde_json::json!({ "browserContextId": ctx }),
                    ),
                    // The context may be gone (browser relaunched): make a new one next time.
                    (false, Some(_), Some(owner)) => {
                        self.state
                            .borrow_mut()
                            .contexts
                            .remove(&(browser, owner.clone()));
                    }
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// The browser context of `owner` on `browser`, created on first use. Past
    /// `max_contexts`, the least recently used context with no session is disposed.
    async fn key_context(
        &self,
        browser: usize,
        conn: &Connection,
        owner: &Arc<str>,
    ) -> Result<String> {
        let now = Instant::now();
        {
            let mut st = self.state.borrow_mut();
            if let Some(c) = st.contexts.get_mut(&(browser, owner.clone())) {
                c.last_used = now;
                return Ok(c.id.clone());
            }
        }
        let id = create_context(conn).await?;
        let cfg = self.shared.config.load();
        let mut st = self.state.borrow_mut();
        while st.contexts.len() >= cfg.max_contexts {
            let in_use = |st: &State, b: usize, o: &Arc<str>| {
                st.sessions
                    .values()
                    .any(|s| s.browser == b && s.owner.as_ref() == Some(o))
                    || st.opening.iter().any(|x| x.as_ref() == Some(o))
            };
            let victim = st
                .contexts
                .iter()
                .filter(|((b, o), _)| !in_use(&st, *b, o))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(c) = st.contexts.remove(&victim) {
                if let Some(conn) = st.links[victim.0].conn.as_ref() {
                    conn.send_and_forget(
                        "Target.disposeBrowserContext",
                        serde_json::json!({ "browserContextId": c.id }),
                    );
                }
            }
        }
        st.contexts.insert(
            (browser, owner.clone()),
            KeyContext {
                id: id.clone(),
                last_used: now,
            },
        );
        Ok(id)
    }

    /// This shard's live socket to `browser`: the open one, or a new one. Reconnects
    /// with exponential backoff and jitter; asks the supervisor to relaunch a launched
    /// browser that is unreachable.
    async fn connection(&self, browser: usize) -> Result<Connection> {
        loop {
            {
                let mut st = self.state.borrow_mut();
                let link = &mut st.links[browser];
                if let Some(c) = link.conn.as_ref().filter(|c| !c.is_closed()) {
                    return Ok(c.clone());
                }
                if let Some(at) = link.retry_at.filter(|at| *at > Instant::now()) {
                    return Err(Error::new(
                        ErrorKind::BrowserUnavailable,
                        format!(
                            "browser {browser} is unreachable ({} failures in a row); next try in {:?}",
                            link.failures,
                            at - Instant::now()
                        ),
                    ));
                }
                if !link.connecting {
                    link.connecting = true;
                    break;
                }
            }
            // Someone else is connecting: wait for their outcome, then look again.
            self.link_settled.notified().await;
        }
        let cfg = self.shared.config.load();
        let (url, generation) = self.shared.fleet.url(browser);
        let config = ConnectionConfig {
            command_timeout: cfg.command_timeout,
            max_frames_per_flush: cfg.max_frames_per_flush,
            connect_timeout: cfg.create_timeout,
            ..ConnectionConfig::default()
        };
        let had_one = self.state.borrow().links[browser].conn.is_some();
        let connected = Connection::connect(&url, config).await;
        let mut st = self.state.borrow_mut();
        let link = &mut st.links[browser];
        link.connecting = false;
        let result = match connected {
            Ok(conn) => {
                conn.set_metrics(self.metrics.clone());
                let loss = self.loss.clone();
                conn.set_on_loss(Rc::new(move || loss.notify_one()));
                let lost = std::mem::take(&mut link.lost_targets);
                if generation != link.generation {
                    link.lost_openings.clear();
                }
                link.sweep_lost_openings(&conn);
                if generation == link.generation {
                    // The same browser process: close what the old socket left open.
                    for target in lost {
                        conn.send_and_forget(
                            "Target.closeTarget",
                            serde_json::json!({ "targetId": target }),
                        );
                    }
                }
                link.conn = Some(conn.clone());
                link.generation = generation;
                link.failures = 0;
                link.retry_at = None;
                if had_one {
                    self.metrics.borrow_mut().counters.reconnects += 1;
                }
                Ok(conn)
            }
            Err(e) => {
                note_failure(link, &cfg);
                self.shared.fleet.request_relaunch(browser, generation);
                Err(Error::new(
                    ErrorKind::BrowserUnavailable,
                    format!("could not reach browser {browser} at {url}"),
                )
                .with_source(e))
            }
        };
        drop(st);
        self.link_settled.notify_waiters();
        result
    }

    /// Drops idle sessions known dead, then restores the pool's size in the background.
    fn sweep(self: &Rc<Self>) {
        {
            let mut st = self.state.borrow_mut();
            let dead: Vec<SessionKey> = st
                .idle
                .iter()
                .copied()
                .filter(|k| !st.sessions[k].page.is_alive())
                .collect();
            // A leased page that died goes back to the shard, never to the next caller.
            for s in st.sessions.values() {
                if s.lease.is_some() && !s.page.is_alive() {
                    s.passable.store(false, Ordering::Release);
                }
            }
            if !dead.is_empty() {
                st.idle.retain(|k| !dead.contains(k));
                for key in dead {
                    self.metrics.borrow_mut().counters.sessions_crashed += 1;
                    st.lost += 1;
                    Self::forget(&mut st, key);
                }
            }
        }
        self.replenish();
        self.pump();
    }

    /// Opens sessions to replace lost ones and to keep `min_idle` warm, within the limit.
    fn replenish(self: &Rc<Self>) {
        let cfg = self.shared.config.load();
        let to_open = {
            let st = self.state.borrow();
            if st.shutting_down {
                return;
            }
            let live = st.sessions.len() + st.creating;
            let warm = st.idle.len() + st.probing + st.creating;
            let warm_gap = cfg.min_idle.saturating_sub(warm);
            let replace = st.lost.saturating_sub(st.creating);
            warm_gap
                .max(replace)
                .min(cfg.sessions_per_shard.saturating_sub(live))
        };
        for _ in 0..to_open {
            self.open_session(&cfg, None);
        }
    }

    /// The periodic round: retire idle sessions past their age or idleness (keeping
    /// `min_idle`), probe the ones idle for a whole interval, refill.
    fn health_check(self: &Rc<Self>) {
        let cfg = self.shared.config.load();
        let now = Instant::now();
        for link in self.state.borrow_mut().links.iter_mut() {
            link.lost_openings
                .retain(|(_, at)| now.saturating_duration_since(*at) < LOST_OPENING_WATCH);
            if let Some(conn) = link.conn.clone().filter(|c| !c.is_closed()) {
                link.sweep_lost_openings(&conn);
            }
        }
        let to_probe: Vec<(SessionKey, Rc<Page>)> = {
            let mut st = self.state.borrow_mut();
            let mut keep = Vec::with_capacity(st.idle.len());
            let mut probe = Vec::new();
            let idle = std::mem::take(&mut st.idle);
            let mut remaining = idle.len();
            for key in idle {
                let s = &st.sessions[&key];
                let too_old = !cfg.max_lifetime.is_zero() && now - s.created >= cfg.max_lifetime;
                let too_idle = !cfg.idle_timeout.is_zero()
                    && now - s.last_used >= cfg.idle_timeout
                    && remaining > cfg.min_idle;
                if too_old || too_idle || !s.page.is_alive() {
                    if s.page.is_alive() {
                        self.metrics.borrow_mut().counters.sessions_retired += 1;
                    } else {
                        self.metrics.borrow_mut().counters.sessions_crashed += 1;
                        st.lost += 1;
                    }
                    Self::forget(&mut st, key);
                    remaining -= 1;
                } else if !cfg.health_interval.is_zero() && now - s.last_used >= cfg.health_interval
                {
                    probe.push((key, s.page.clone()));
                } else {
                    keep.push(key);
                }
            }
            st.idle = keep;
            st.probing += probe.len();
            st.busy += probe.len();
            st.affinity.expire(now.into_std(), cfg.affinity_ttl);
            probe
        };
        // Lost sockets reconnect in the background (when their backoff allows).
        let now = Instant::now();
        let retry: Vec<usize> = {
            let st = self.state.borrow();
            (0..st.links.len())
                .filter(|b| {
                    let l = &st.links[*b];
                    l.conn.as_ref().is_some_and(|c| c.is_closed())
                        && !l.connecting
                        && l.retry_at.is_none_or(|t| t <= now)
                })
                .collect()
        };
        for browser in retry {
            let core = self.clone();
            tokio::task::spawn_local(async move {
                if core.connection(browser).await.is_ok() {
                    core.replenish();
                    core.pump();
                }
            });
        }
        for (key, page) in to_probe {
            let core = self.clone();
            let limit = cfg.probe_timeout;
            tokio::task::spawn_local(async move {
                let probe = page.call("Runtime.evaluate", serde_json::json!({ "expression": "0" }));
                let healthy = matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(_)));
                drop(page);
                core.state.borrow_mut().probing -= 1;
                if !healthy {
                    tracing::warn!(
                        shard = core.id,
                        "idle session failed its health probe; retiring it"
                    );
                }
                core.give_back_probed(key, healthy);
            });
        }
        self.replenish();
        self.pump();
    }

    /// A session could not be opened: the oldest waiter of the highest class learns why,
    /// so errors surface instead of waiting out the deadline.
    ///
    /// A page lost while it was being opened (its renderer crashed, or its socket
    /// dropped) is nobody's failure: the page was not any waiter's yet, so no waiter is
    /// failed and the caller's pump opens another. Repeated losses count against the
    /// browser's breaker like any failed opening, so a browser that loses every page it
    /// opens ends, after `breaker_threshold` tries, in `BrowserUnavailable` for a waiter.
    fn creation_failed(self: &Rc<Self>, err: Error) {
        self.metrics.borrow_mut().counters.session_create_failures += 1;
        tracing::warn!(shard = self.id, error = %err, "could not open a session");
        if err.is_crash() {
            return;
        }
        let w = {
            let mut st = self.state.borrow_mut();
            let w = st
                .queue
                .pop(Instant::now().into_std(), Duration::ZERO, Admit::All);
            if let Some(w) = &w {
                st.deadlines
                    .remove(&(w.value.deadline, Deadline::Queue(w.id)));
            }
            w
        };
        let Some(w) = w else { return };
        let request = w.value.request;
        self.metrics.borrow_mut().counters.jobs_failed += 1;
        request.work.fail(err);
    }

    /// Hands session `key` to `request`.
    fn start(self: &Rc<Self>, key: SessionKey, request: Request) {
        let cfg = self.shared.config.load();
        let now = Instant::now();
        let (page, reused) = {
            let mut st = self.state.borrow_mut();
            st.busy += 1;
            let s = st.sessions.get_mut(&key).expect("idle key is live");
            let reused = s.uses > 0;
            s.uses += 1;
            s.last_used = now;
            let page = s.page.clone();
            page.set_uses(s.uses);
            if let Some(affinity) = &request.job.affinity {
                let hit = st
                    .affinity
                    .get(affinity.key(), now.into_std(), cfg.affinity_ttl)
                    == Some(key);
                let mut m = self.metrics.borrow_mut();
                if hit {
                    m.counters.affinity_hits += 1;
                } else {
                    m.counters.affinity_misses += 1;
                }
                st.affinity.bind(
                    affinity.key_arc(),
                    key,
                    now.into_std(),
                    cfg.affinity_capacity,
                );
            }
            (page, reused)
        };
        {
            let mut m = self.metrics.borrow_mut();
            m.acquire_wait(now - request.submitted);
            if reused {
                m.counters.sessions_reused += 1;
            }
        }
        page.set_command_timeout(request.job.command_timeout.unwrap_or(cfg.command_timeout));
        match request.work {
            Work::Acquire(tx) => {
                let lease_id = {
                    let mut st = self.state.borrow_mut();
                    st.next_lease += 1;
                    let id = st.next_lease;
                    st.leases.insert(id, key);
                    st.sessions.get_mut(&key).expect("live").lease = Some(id);
                    id
                };
                let handoff = {
                    let st = self.state.borrow();
                    update_passable(&st, key, &cfg, now);
                    handoff_allowed(&cfg).then(|| {
                        Handoff::new(
                            self.shared.lines.clone(),
                            self.id,
                            st.sessions[&key].passable.clone(),
                        )
                    })
                };
                grant_lease(
                    tx,
                    self.id,
                    lease_id,
                    &self.shared.inboxes[self.id],
                    handoff,
                );
            }
            Work::Run(task) => {
                let core = self.clone();
                let deadline = request.submitted + request.job.timeout.unwrap_or(cfg.job_timeout);
                let Request {
                    job,
                    submitted,
                    attempts,
                    ..
                } = request;
                tokio::task::spawn_local(async move {
                    core.run_job(key, page, job, task, submitted, attempts, deadline)
                        .await;
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_job(
        self: Rc<Self>,
        key: SessionKey,
        page: Rc<Page>,
        job: Job,
        mut task: Box<dyn JobTask>,
        submitted: Instant,
        attempts: u32,
        deadline: Instant,
    ) {
        // Returns the session even if this task is dropped (shutdown aborts it).
        let mut guard = ReturnOnDrop {
            core: self.clone(),
            key,
            how: Return::Interrupted,
        };
        let attempt = tokio::time::timeout_at(deadline, task.run(&page)).await;
        drop(page);
        let ok = matches!(attempt, Ok(Attempt::Ok));
        match attempt {
            Ok(Attempt::Ok) => {
                guard.how = Return::Clean;
                drop(guard);
                task.finish();
            }
            Ok(Attempt::Failed(kind)) => {
                let lost = matches!(
                    kind,
                    ErrorKind::SessionCrashed | ErrorKind::ConnectionClosed
                );
                guard.how = match kind {
                    ErrorKind::SessionCrashed | ErrorKind::ConnectionClosed => Return::Dead,
                    ErrorKind::Timeout(_) => Return::Interrupted,
                    _ => Return::Clean,
                };
                drop(guard);
                if lost && attempts < job.retries {
                    self.metrics.borrow_mut().counters.retries += 1;
                    self.admit(Request {
                        job,
                        work: Work::Run(task),
                        submitted,
                        // Its place in line went with the attempt that ran.
                        arrival: self.line.next_id(),
                        attempts: attempts + 1,
                    });
                    return;
                }
                task.finish();
            }
            Ok(Attempt::Abandoned) => {
                drop(guard);
            }
            Err(_) => {
                drop(guard);
                self.metrics.borrow_mut().counters.timeout(TimeoutKind::Job);
                let cfg = self.shared.config.load();
                task.fail(Error::timeout(
                    TimeoutKind::Job,
                    "job",
                    job.timeout.unwrap_or(cfg.job_timeout),
                ));
            }
        }
        self.metrics.borrow_mut().job_done(submitted.elapsed(), ok);
    }

    /// A session comes back from a job or lease.
    fn give_back(self: &Rc<Self>, key: SessionKey, how: Return) {
        let cfg = self.shared.config.load();
        let now = Instant::now();
        let mut st = self.state.borrow_mut();
        if st.shutting_down {
            // Shutdown closes every target itself; spawn nothing now.
            st.busy = st.busy.saturating_sub(1);
            Self::forget(&mut st, key);
            drop(st);
            self.returned.notify_waiters();
            return;
        }
        let Some(session) = st.sessions.get_mut(&key) else {
            st.busy -= 1;
            return;
        };
        session.last_used = now;
        let dead = how == Return::Dead || !session.page.is_alive();
        if dead {
            self.metrics.borrow_mut().counters.sessions_crashed += 1;
            st.busy -= 1;
            st.lost += 1;
            Self::forget(&mut st, key);
            drop(st);
            self.replenish();
            st = self.state.borrow_mut();
        } else if how == Return::Interrupted {
            // Still busy until stopped: nobody gets a page that is mid-load or stuck in
            // a script. A page that does not stop in time is retired.
            let page = session.page.clone();
            drop(st);
            let core = self.clone();
            tokio::task::spawn_local(async move {
                let _ =
                    page.start_call("Runtime.terminateExecution".into(), &serde_json::json!({}));
                let stopped = tokio::time::timeout(
                    Duration::from_secs(2),
                    page.call("Page.stopLoading", serde_json::json!({})),
                )
                .await;
                drop(page);
                let how = if matches!(stopped, Ok(Ok(_))) {
                    Return::Clean
                } else {
                    Return::Dead
                };
                core.give_back(key, how);
            });
            return;
        } else if how == Return::Clean
            && cfg.reset == Reset::AboutBlank
            && session.own_context.is_none()
        {
            // Reset after release, before the page counts as idle: never on the next
            // caller's path. A page that cannot reset is retired.
            let page = session.page.clone();
            drop(st);
            let core = self.clone();
            tokio::task::spawn_local(async move {
                let reset =
                    tokio::time::timeout(Duration::from_secs(5), page.goto("about:blank")).await;
                drop(page);
                let how = if matches!(reset, Ok(Ok(()))) {
                    Return::Reset
                } else {
                    Return::Dead
                };
                core.give_back(key, how);
            });
            return;
        } else {
            st.busy -= 1;
            let shrink = st.sessions.len() > cfg.sessions_per_shard;
            let single_use = st.sessions[&key].own_context.is_some();
            if shrink || single_use || expired(&st.sessions[&key], &cfg, now) {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                Self::forget(&mut st, key);
                if single_use {
                    // ContextPerJob: a fresh context replaces it, off the caller's path.
                    st.lost += 1;
                    drop(st);
                    self.replenish();
                    st = self.state.borrow_mut();
                }
            } else if let Some(w) = next_preferred(&mut st, key) {
                // Someone is waiting for this very session: an affinity hit.
                drop(st);
                self.start(key, w.request);
                self.pump();
                return;
            } else {
                st.idle.push(key);
            }
        }
        // (Not shutting down here, so nobody waits on `returned`.)
        drop(st);
        self.pump();
        if !self.shared.overflow.is_empty() {
            self.shared.wakers[self.id].notify_one();
        }
    }

    /// A health probe is done with an idle session.
    fn give_back_probed(self: &Rc<Self>, key: SessionKey, healthy: bool) {
        {
            let mut st = self.state.borrow_mut();
            st.busy -= 1;
            let alive = st.sessions.get(&key).map(|s| s.page.is_alive());
            match alive {
                None => {}
                Some(_) if st.shutting_down => Self::forget(&mut st, key),
                Some(true) if healthy => st.idle.push(key),
                Some(_) => {
                    self.metrics.borrow_mut().counters.sessions_crashed += 1;
                    st.lost += 1;
                    Self::forget(&mut st, key);
                }
            }
        }
        self.returned.notify_waiters();
        self.replenish();
        self.pump();
    }

    fn lease_op(self: &Rc<Self>, lease: u64, op: LeaseOp, timeout: Option<Duration>) {
        let session = {
            let st = self.state.borrow();
            st.leases
                .get(&lease)
                .and_then(|key| st.sessions.get(key))
                .map(|s| s.page.clone())
        };
        let Some(page) = session else {
            op.fail(Error::new(
                ErrorKind::SessionCrashed,
                "the lease's session is gone",
            ));
            return;
        };
        // A page that dies clears its `passable` before the holder hears of it
        // (`Page::watch`): the holder cannot hand it on.
        match op {
            // Straight to the socket, and the reply straight to the holder: no task
            // here (the connection keeps the deadline).
            LeaseOp::Call {
                method,
                params,
                reply,
            } => {
                let timeout = timeout.unwrap_or_else(|| page.command_timeout());
                page.call_direct(method, &*params, timeout, reply);
            }
            LeaseOp::Goto { url, reply } => {
                tokio::task::spawn_local(async move {
                    if let Some(t) = timeout {
                        page.set_command_timeout(t);
                    }
                    let _ = reply.send(page.goto(&url).await);
                });
            }
        }
    }

    /// Fails the waiters whose deadline has passed; soft-affinity waiters whose short
    /// wait for their session ran out join the general queue instead.
    fn expire(self: &Rc<Self>, now: Instant) {
        // Releasing leases may have served, skipped or failed callers of the line.
        self.take_outcomes();
        let cfg = self.shared.config.load();
        let mut moved = false;
        loop {
            let w = {
                let mut st = self.state.borrow_mut();
                match st.deadlines.first().copied() {
                    Some((at, tag)) if at <= now => {
                        st.deadlines.pop_first();
                        match tag {
                            Deadline::Queue(id) => st.queue.remove(id).map(|w| w.value),
                            Deadline::LineOpen => {
                                // Into the queue, where each deadline has its timer.
                                st.line_open_until = None;
                                self.take_back_line(&mut st);
                                moved = true;
                                None
                            }
                            Deadline::Line(id) => {
                                // Still in the line: nobody released a lease since its
                                // deadline. The line goes back to the queue (and this
                                // caller with it, unless a lease has just taken it).
                                self.take_back_line(&mut st);
                                let w = st.queue.remove(id).map(|w| w.value);
                                if let Some(w) = &w {
                                    st.deadlines.remove(&(w.deadline, Deadline::Queue(id)));
                                }
                                moved = true; // the line is topped up again
                                w
                            }
                            Deadline::Preferred(session, id) => {
                                let w = take_preferred(&mut st, session, id);
                                // A sticky waiter's deadline is its own; a soft one's is
                                // the shorter affinity wait.
                                match w {
                                    Some(w) if w.deadline > now => {
                                        // Soft: stop waiting for that session, take any.
                                        st.orphans.push(w);
                                        moved = true;
                                        None
                                    }
                                    w => w,
                                }
                            }
                        }
                    }
                    _ => break,
                }
            };
            if let Some(w) = w {
                let kind = w.kind;
                if !w.request.work.is_abandoned() {
                    self.metrics.borrow_mut().counters.timeout(kind);
                    let err = wait_timeout_error(kind, &w.request.job, &cfg);
                    w.request.work.fail(err);
                }
            }
        }
        if moved {
            self.pump();
        }
    }

    /// Where a keyed request should go: its bound session if idle (take it), or busy
    /// (wait for it), or nowhere yet.
    fn preferred(&self, st: &mut State, key: &str, cfg: &Config, now: Instant) -> Preferred {
        let Some(session) = st.affinity.get(key, now.into_std(), cfg.affinity_ttl) else {
            return Preferred::None;
        };
        match st.sessions.get(&session) {
            Some(s) if s.page.is_alive() => {
                if let Some(i) = st.idle.iter().position(|k| *k == session) {
                    Preferred::Idle(i)
                } else {
                    Preferred::Busy(session)
                }
            }
            _ => Preferred::None,
        }
    }

    /// Serves or parks a keyed request by its binding. Returns it when neither applies.
    fn route_by_affinity(
        self: &Rc<Self>,
        waiter: Waiter,
        cfg: &Config,
        now: Instant,
    ) -> Option<Waiter> {
        let Some(affinity) = waiter.request.job.affinity.clone() else {
            return Some(waiter);
        };
        let mut st = self.state.borrow_mut();
        let critical_ok = waiter.request.job.priority == crate::Priority::Critical
            || st.busy < cfg.sessions_per_shard - cfg.critical_reserve;
        match self.preferred(&mut st, affinity.key(), cfg, now) {
            Preferred::Idle(i) if critical_ok && st.queue.is_empty() => {
                let session = st.idle.remove(i);
                drop(st);
                self.start(session, waiter.request);
                None
            }
            Preferred::Busy(session) => {
                let until = match affinity.mode() {
                    AffinityMode::Sticky => waiter.deadline,
                    AffinityMode::Soft => waiter.deadline.min(now + cfg.affinity_wait),
                };
                if st.queue.len() + st.preferred_count >= cfg.max_queue {
                    return Some(waiter); // the queue push refuses it: QueueFull
                }
                // Its lease must give it back here, not pass it on.
                st.sessions[&session]
                    .passable
                    .store(false, Ordering::Release);
                st.next_preferred += 1;
                let id = st.next_preferred;
                st.deadlines
                    .insert((until, Deadline::Preferred(session, id)));
                st.preferred_count += 1;
                st.preferred
                    .entry(session)
                    .or_default()
                    .push_back(PreferredWaiter { id, until, waiter });
                None
            }
            _ => Some(waiter),
        }
    }

    /// Fails every waiter, gives running jobs and held leases `grace` to finish, then
    /// closes the inbox (answering what is left in it), every target and every socket.
    async fn shutdown(self: &Rc<Self>, grace: Duration, inbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let waiters: Vec<_> = {
            let mut st = self.state.borrow_mut();
            st.shutting_down = true;
            for s in st.sessions.values() {
                s.passable.store(false, Ordering::Release);
            }
            self.take_back_line(&mut st);
            st.deadlines.clear();
            let mut all: Vec<Waiter> = st.queue.drain().map(|w| w.value).collect();
            all.append(&mut st.orphans);
            let preferred = std::mem::take(&mut st.preferred);
            st.preferred_count = 0;
            all.extend(preferred.into_values().flatten().map(|p| p.waiter));
            all
        };
        for w in waiters {
            w.request.work.fail(shutdown_error());
        }
        while let Some(request) = self.shared.overflow.take() {
            request.work.fail(shutdown_error());
        }
        // Running jobs and held leases get the grace period to finish: a lease can still
        // run commands and come back; new requests are refused.
        let deadline = Instant::now() + grace;
        let mut inbox_open = true;
        loop {
            let returned = self.returned.notified();
            if self.state.borrow().busy == 0 {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = returned => {}
                msg = inbox.recv(), if inbox_open => match msg {
                    Some(msg @ (Msg::LeaseOp { .. } | Msg::Release { .. } | Msg::Metrics(_))) => {
                        self.handle(msg)
                    }
                    Some(msg) => refuse(msg),
                    None => inbox_open = false,
                },
            }
        }
        close_inbox(inbox).await;
        // Close every target, waiting a little for the browser to confirm.
        let pages: Vec<Rc<Page>> = {
            let mut st = self.state.borrow_mut();
            st.idle.clear();
            st.leases.clear();
            st.sessions.drain().map(|(_, s)| s.page).collect()
        };
        let closes = pages.iter().map(|page| {
            let conn = page.connection().clone();
            let target = serde_json::json!({ "targetId": page.target_id() });
            async move {
                let closing = conn.call("Target.closeTarget", target);
                let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
            }
        });
        futures_util::future::join_all(closes).await;
        for page in &pages {
            page.mark_closed();
        }
        drop(pages);
        let conns: Vec<_> = self
            .state
            .borrow_mut()
            .links
            .iter_mut()
            .filter_map(|l| l.conn.take())
            .collect();
        for c in conns {
            c.close();
        }
    }
}

/// Returns a session when a job's task ends, however it ends.
struct ReturnOnDrop {
    core: Rc<Core>,
    key: SessionKey,
    how: Return,
}

impl Drop for ReturnOnDrop {
    fn drop(&mut self) {
        self.core.give_back(self.key, self.how);
    }
}

/// True when a line is worth keeping: hand-off allowed, every session out (none idle,
/// none to open) and held by leases that could pass it on.
fn line_applies(st: &State, cfg: &Config) -> bool {
    handoff_allowed(cfg)
        && !st.shutting_down
        && st.idle.is_empty()
        && st.sessions.len() + st.creating >= cfg.sessions_per_shard
        && !st.leases.is_empty()
}

/// Whom the normal path would serve with a session just given back.
fn admit_after_release(st: &State, cfg: &Config) -> Admit {
    if st.busy.saturating_sub(1) < cfg.sessions_per_shard - cfg.critical_reserve {
        Admit::All
    } else {
        Admit::CriticalOnly
    }
}

/// True when the configuration lets a session go from one lease to the next with
/// nothing done in between.
fn handoff_allowed(cfg: &Config) -> bool {
    cfg.lease_handoff && cfg.reset == Reset::None && cfg.isolation == Isolation::Shared
}

/// Decides whether leased session `key` may go straight to the next caller: it must be
/// fit for another use, and nobody may be waiting for it by affinity.
fn update_passable(st: &State, key: SessionKey, cfg: &Config, now: Instant) {
    if let Some(s) = st.sessions.get(&key) {
        let ok = handoff_allowed(cfg)
            && !st.shutting_down
            && s.page.is_alive()
            && !expired(s, cfg, now)
            && !st.preferred.contains_key(&key)
            && st.sessions.len() <= cfg.sessions_per_shard;
        s.passable.store(ok, Ordering::Release);
    }
}

fn expired(s: &Session, cfg: &Config, now: Instant) -> bool {
    (cfg.max_uses > 0 && s.uses >= cfg.max_uses)
        || (!cfg.max_lifetime.is_zero() && now - s.created >= cfg.max_lifetime)
        || (!cfg.idle_timeout.is_zero() && now - s.last_used >= cfg.idle_timeout)
}

pub(crate) fn shutdown_error() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the pool is shutting down and takes no new requests",
    )
}

/// Hands lease `lease` on this shard's session to the caller waiting in `acquire`, who
/// may be leaving on another thread right now. If it has left, `send` gives the lease
/// back and dropping it sends `Release` to `inbox`: the session is never lost, and never
/// with two callers. Checked by `loom-tests` (`lease_grant`).
pub fn grant_lease(
    tx: oneshot::Sender<Result<Lease>>,
    shard: usize,
    lease: u64,
    inbox: &mpsc::UnboundedSender<Msg>,
    handoff: Option<Handoff>,
) {
    let link = LeaseLink {
        inbox: inbox.clone(),
        handoff,
    };
    let lease = Lease::new(shard, lease, link);
    #[cfg(not(cdpmux_loom_mutant))]
    let _ = tx.send(Ok(lease));
    // Seeded bug for the loom model: trusting an earlier `is_closed` and defusing the
    // lease `send` hands back (the caller left in between: the session is lost).
    #[cfg(cdpmux_loom_mutant)]
    if !tx.is_closed() {
        if let Err(Ok(lease)) = tx.send(Ok(lease)) {
            std::mem::forget(lease);
        }
    }
}

/// Closes a shutting-down shard's inbox and answers every message already in it, so no
/// request that made it into the inbox goes unanswered: a later send fails, and its
/// sender answers `Shutdown` itself. Checked by `loom-tests` (`shutdown`).
pub async fn close_inbox(inbox: &mut mpsc::UnboundedReceiver<Msg>) {
    #[cfg(not(cdpmux_loom_mutant))]
    {
        inbox.close();
        while let Some(msg) = inbox.recv().await {
            refuse(msg);
        }
    }
    // Seeded bug for the loom model: draining before closing misses a message sent in
    // between (dropped with the inbox: its caller gets no answer).
    #[cfg(cdpmux_loom_mutant)]
    {
        while let Ok(msg) = inbox.try_recv() {
            refuse(msg);
        }
        inbox.close();
    }
}

/// Answers a message that arrived after shutdown began.
fn refuse(msg: Msg) {
    match msg {
        Msg::Submit(request) => request.work.fail(shutdown_error()),
        Msg::LeaseOp { op, .. } => op.fail(shutdown_error()),
        Msg::Shutdown { done, .. } => {
            let _ = done.send(());
        }
        // `metrics` skips a shard that does not answer; shutdown closes every session,
        // leased or not.
        Msg::Metrics(_) | Msg::Release { .. } | Msg::Reconfigured => {}
    }
}

/// When a request submitted at `submitted` must stop waiting, and which deadline that is.
pub(crate) fn wait_deadline(job: &Job, submitted: Instant, cfg: &Config) -> (Instant, TimeoutKind) {
    let wait = submitted + job.wait_timeout.unwrap_or(cfg.wait_timeout);
    let whole = submitted + job.timeout.unwrap_or(cfg.job_timeout);
    if whole < wait {
        (whole, TimeoutKind::Job)
    } else {
        (wait, TimeoutKind::Wait)
    }
}

pub(crate) fn wait_timeout_error(kind: TimeoutKind, job: &Job, cfg: &Config) -> Error {
    let limit = match kind {
        TimeoutKind::Job => job.timeout.unwrap_or(cfg.job_timeout),
        _ => job.wait_timeout.unwrap_or(cfg.wait_timeout),
    };
    timeout_error(kind, limit)
}

/// The error of a request whose wait ended at its `kind` deadline, `limit` after it
/// asked.
pub(crate) fn timeout_error(kind: TimeoutKind, limit: Duration) -> Error {
    let what = match kind {
        TimeoutKind::Job => "job",
        _ => "waiting for a session",
    };
    let mut e = Error::timeout(kind, what, limit);
    if kind == TimeoutKind::Wait {
        e = Error::new(
            e.kind(),
            format!(
                "{}; all sessions stayed busy: add sessions or shards, or lower the load",
                e.message()
            ),
        );
    }
    e
}

/// One more failure of a browser: back off, exponentially and with jitter.
fn note_failure(link: &mut Link, cfg: &Config) {
    link.failures += 1;
    if link.failures >= cfg.breaker_threshold || link.conn.as_ref().is_none_or(|c| c.is_closed()) {
        link.retry_at = Some(Instant::now() + backoff(cfg, link.failures));
    }
}

/// Remembers the initial URL of a page whose opening failed or was cancelled, unless
/// disarmed (`url` taken) when the page opened.
struct LostOpening<'a> {
    core: &'a Core,
    browser: usize,
    url: Option<String>,
}

impl Drop for LostOpening<'_> {
    fn drop(&mut self) {
        if let Some(url) = self.url.take() {
            let mut st = self.core.state.borrow_mut();
            st.links[self.browser]
                .lost_openings
                .push((url, Instant::now()));
        }
    }
}

/// Closes the targets created with one of `urls`: pages whose opening failed or was
/// cancelled before the browser told us their id (a socket lost, a creation deadline
/// passed). None of them was ever handed out, so none has navigated away from its URL.
async fn close_lost_openings(conn: Connection, urls: Vec<String>) {
    let targets = match conn.call("Target.getTargets", serde_json::json!({})).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "could not list targets to close lost openings");
            return;
        }
    };
    let infos = targets["targetInfos"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for info in infos {
        let (Some(url), Some(id)) = (info["url"].as_str(), info["targetId"].as_str()) else {
            continue;
        };
        if urls.iter().any(|u| u == url) {
            conn.send_and_forget("Target.closeTarget", serde_json::json!({ "targetId": id }));
        }
    }
}

/// A new, empty browser context (its own cookies and storage).
async fn create_context(conn: &Connection) -> Result<String> {
    let reply = conn
        .call("Target.createBrowserContext", serde_json::json!({}))
        .await?;
    reply["browserContextId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Target.createBrowserContext returned no id",
            )
        })
}
