//! One shard: an OS thread running a current-thread tokio runtime and a `LocalSet`,
//! owning one connection per browser, its sessions, its wait queue and its metrics.
//!
//! Never blocks its thread; never shares state with other threads except through
//! messages (its inbox) and the overflow queues. Everything inside is `Rc`/`RefCell`,
//! borrowed only between `.await`s.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::cdp::{Connection, ConnectionConfig, Page, PageOptions};
use crate::config::Config;
use crate::job::Job;
use crate::metrics::{Gauges, ShardMetrics, ShardReport};
use crate::pool::Lease;
use crate::queue::{Admit, WaitQueue};
use crate::steal::Overflow;
use crate::sync::{Arc, LiveCell};
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
pub(crate) enum Work {
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
pub(crate) struct Request {
    pub(crate) job: Job,
    pub(crate) work: Work,
    pub(crate) submitted: Instant,
    /// Runs so far (retries after a lost session).
    pub(crate) attempts: u32,
}

impl Request {
    /// When waiting must end, and which deadline that is.
    fn wait_deadline(&self, cfg: &Config) -> (Instant, TimeoutKind) {
        let wait = self.submitted + self.job.wait_timeout.unwrap_or(cfg.wait_timeout);
        let job = self.submitted + self.job.timeout.unwrap_or(cfg.job_timeout);
        if job < wait {
            (job, TimeoutKind::Job)
        } else {
            (wait, TimeoutKind::Wait)
        }
    }
}

/// An operation a [`Lease`] asks its shard to run on its page.
pub(crate) enum LeaseOp {
    Call {
        method: String,
        params: serde_json::Value,
    },
    Goto(String),
    Evaluate(String),
}

/// Messages into a shard.
pub(crate) enum Msg {
    Submit(Request),
    LeaseOp {
        lease: u64,
        op: LeaseOp,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<serde_json::Value>>,
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
    pub(crate) config: Arc<LiveCell<Config>>,
    pub(crate) overflow: Arc<Overflow<Request>>,
    /// One wake-up per shard, fired when overflow work arrives for a parked shard.
    pub(crate) wakers: Arc<[Notify]>,
    pub(crate) inboxes: Arc<[mpsc::UnboundedSender<Msg>]>,
    pub(crate) browsers: Arc<[String]>,
    pub(crate) page_options: PageOptions,
}

type SessionKey = u64;

/// How a session comes back from a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Return {
    /// Ready for the next job.
    Clean,
    /// Interrupted mid-work: stop it, then reuse it (or retire it if that fails).
    Interrupted,
    /// Known dead: retire and replace.
    Dead,
}

struct Session {
    page: Rc<Page>,
    browser: usize,
    created: Instant,
    last_used: Instant,
    uses: u32,
    lease: Option<u64>,
}

struct Waiter {
    request: Request,
    deadline: Instant,
    kind: TimeoutKind,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionKey, Session>,
    /// Idle sessions, most recently used last.
    idle: Vec<SessionKey>,
    busy: usize,
    creating: usize,
    next_key: SessionKey,
    queue: WaitQueue<Waiter>,
    deadlines: BTreeSet<(Instant, u64)>,
    leases: HashMap<u64, SessionKey>,
    next_lease: u64,
    conns: Vec<Option<Connection>>,
    /// Sessions (open or opening) per browser, to spread new ones.
    per_browser: Vec<usize>,
    shutting_down: bool,
}

/// The shard's state and its handles to the outside.
pub(crate) struct Core {
    id: usize,
    shared: Shared,
    state: RefCell<State>,
    metrics: Rc<RefCell<ShardMetrics>>,
    /// Fired whenever busy sessions return (shutdown waits on it).
    returned: Notify,
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
    let metrics = Rc::new(RefCell::new(ShardMetrics::default()));
    let cfg = shared.config.load();
    let mut conns = Vec::new();
    for url in shared.browsers.iter() {
        match connect(url, &cfg, &metrics).await {
            Ok(c) => conns.push(Some(c)),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    let core = Rc::new(Core {
        id,
        state: RefCell::new(State {
            per_browser: vec![0; conns.len()],
            conns,
            ..State::default()
        }),
        shared,
        metrics,
        returned: Notify::new(),
    });
    let _ = ready.send(Ok(()));
    core.main_loop(&mut inbox).await;
}

async fn connect(
    url: &str,
    cfg: &Config,
    metrics: &Rc<RefCell<ShardMetrics>>,
) -> Result<Connection> {
    let conn = Connection::connect(
        url,
        ConnectionConfig {
            command_timeout: cfg.command_timeout,
            max_frames_per_flush: cfg.max_frames_per_flush,
            ..ConnectionConfig::default()
        },
    )
    .await?;
    conn.set_metrics(metrics.clone());
    Ok(conn)
}

impl Core {
    async fn main_loop(self: &Rc<Self>, inbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let far = || Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        loop {
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
            sleep.as_mut().reset(next_deadline.unwrap_or_else(far));
            tokio::select! {
                biased;
                msg = inbox.recv() => match msg {
                    Some(Msg::Shutdown { grace, done }) => {
                        self.shared.overflow.unpark(self.id);
                        self.shutdown(grace).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(msg) => self.handle(msg),
                    None => {
                        self.shared.overflow.unpark(self.id);
                        self.shutdown(Duration::ZERO).await;
                        return;
                    }
                },
                _ = self.shared.wakers[self.id].notified() => {}
                _ = &mut sleep, if next_deadline.is_some() => self.expire(Instant::now()),
            }
            if spare {
                self.shared.overflow.unpark(self.id);
            }
        }
    }

    fn handle(self: &Rc<Self>, msg: Msg) {
        match msg {
            Msg::Submit(request) => self.admit(request),
            Msg::LeaseOp {
                lease,
                op,
                timeout,
                reply,
            } => self.lease_op(lease, op, timeout, reply),
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
            for conn in st.conns.iter().flatten() {
                conn.set_max_frames_per_flush(cfg.max_frames_per_flush);
            }
            while st.sessions.len() > cfg.sessions_per_shard {
                let Some(key) = st.idle.pop() else { break };
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                Self::forget(&mut st, key);
            }
        }
        self.pump();
    }

    fn report(&self) -> ShardReport {
        let st = self.state.borrow();
        let by_class = st.queue.len_by_class();
        ShardReport {
            metrics: self.metrics.borrow().clone(),
            gauges: Gauges {
                idle: st.idle.len() as u64,
                busy: st.busy as u64,
                creating: st.creating as u64,
                waiting: st.queue.len() as u64,
                waiting_by_class: by_class.map(|n| n as u64),
            },
        }
    }

    /// Room for one more non-critical request, and nobody local waiting for it.
    fn has_spare_capacity(&self) -> bool {
        let cfg = self.shared.config.load();
        let st = self.state.borrow();
        if !st.queue.is_empty() {
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
            let err = wait_timeout_error(kind, &request, &cfg);
            request.work.fail(err);
            return;
        }
        let priority = request.job.priority;
        let waiter = Waiter {
            request,
            deadline,
            kind,
        };
        let pushed = {
            let mut st = self.state.borrow_mut();
            let since = waiter.request.submitted.into_std();
            match st.queue.push(priority, since, waiter, cfg.max_queue) {
                Ok(id) => Ok(id),
                Err(waiter) => {
                    // Full: first drop waiters whose callers have left, then try once more.
                    st.queue.retain(|w| !w.request.work.is_abandoned());
                    st.queue.push(priority, since, waiter, cfg.max_queue)
                }
            }
        };
        match pushed {
            Ok(id) => {
                self.state.borrow_mut().deadlines.insert((deadline, id));
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
            let Some(key) = self.take_idle(&mut st, &cfg) else {
                let live = st.sessions.len() + st.creating;
                let wanted = st.queue.len().saturating_sub(st.creating);
                let room = cfg.sessions_per_shard.saturating_sub(live);
                let to_open = wanted.min(room);
                drop(st);
                for _ in 0..to_open {
                    self.open_session(&cfg);
                }
                break;
            };
            let Some(w) = st.queue.pop(now.into_std(), cfg.aging, admit) else {
                st.idle.push(key);
                break;
            };
            st.deadlines.remove(&(w.value.deadline, w.id));
            if w.value.request.work.is_abandoned() {
                st.idle.push(key);
                continue;
            }
            drop(st);
            self.start(key, w.value.request);
        }
        self.overflow_if_saturated(&cfg);
    }

    /// Pops an idle session that is still alive, retiring dead or expired ones on the way.
    fn take_idle(&self, st: &mut State, cfg: &Config) -> Option<SessionKey> {
        while let Some(key) = st.idle.pop() {
            let session = &st.sessions[&key];
            if let Some(why) = session.page.dead_reason() {
                tracing::debug!(shard = self.id, error = %why, "dropping a dead idle session");
                self.metrics.borrow_mut().counters.sessions_crashed += 1;
                Self::forget(st, key);
                continue;
            }
            if expired(session, cfg, Instant::now()) {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                Self::forget(st, key);
                continue;
            }
            return Some(key);
        }
        None
    }

    /// Removes a session; dropping its page closes the target.
    fn forget(st: &mut State, key: SessionKey) {
        if let Some(s) = st.sessions.remove(&key) {
            st.per_browser[s.browser] -= 1;
        }
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
            st.deadlines.remove(&(w.value.deadline, w.id));
            self.metrics.borrow_mut().counters.overflowed += 1;
            let class = w.priority.index();
            if let Some(shard) = self.shared.overflow.push(class, w.value.request) {
                self.shared.wakers[shard].notify_one();
            }
        }
    }

    fn open_session(self: &Rc<Self>, cfg: &Config) {
        let browser = {
            let mut st = self.state.borrow_mut();
            let browser = (0..st.per_browser.len())
                .min_by_key(|b| {
                    (
                        st.conns[*b].as_ref().is_none_or(|c| c.is_closed()),
                        st.per_browser[*b],
                    )
                })
                .unwrap_or(0);
            st.creating += 1;
            st.per_browser[browser] += 1;
            browser
        };
        let timeout = cfg.create_timeout;
        let core = self.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            let opened = tokio::time::timeout(timeout, core.new_page(browser)).await;
            let mut st = core.state.borrow_mut();
            st.creating -= 1;
            match opened {
                Ok(Ok(page)) => {
                    core.metrics.borrow_mut().session_created(started.elapsed());
                    let key = st.next_key;
                    st.next_key += 1;
                    let now = Instant::now();
                    st.sessions.insert(
                        key,
                        Session {
                            page: Rc::new(page),
                            browser,
                            created: now,
                            last_used: now,
                            uses: 0,
                            lease: None,
                        },
                    );
                    st.idle.push(key);
                    drop(st);
                }
                Ok(Err(e)) => {
                    st.per_browser[browser] -= 1;
                    drop(st);
                    core.creation_failed(e);
                }
                Err(_) => {
                    st.per_browser[browser] -= 1;
                    drop(st);
                    core.metrics
                        .borrow_mut()
                        .counters
                        .timeout(TimeoutKind::Create);
                    core.creation_failed(Error::timeout(
                        TimeoutKind::Create,
                        "opening a session",
                        timeout,
                    ));
                }
            }
            core.pump();
        });
    }

    async fn new_page(&self, browser: usize) -> Result<Page> {
        let conn = self.state.borrow().conns[browser].clone();
        let conn = match conn {
            Some(c) if !c.is_closed() => c,
            _ => {
                // The socket is gone: reconnect once, on this creation's deadline.
                let cfg = self.shared.config.load();
                let c = connect(&self.shared.browsers[browser], &cfg, &self.metrics).await?;
                self.state.borrow_mut().conns[browser] = Some(c.clone());
                c
            }
        };
        conn.new_page(&self.shared.page_options).await
    }

    /// A session could not be opened: the oldest waiter of the highest class learns why,
    /// so errors surface instead of waiting out the deadline.
    fn creation_failed(&self, err: Error) {
        self.metrics.borrow_mut().counters.session_create_failures += 1;
        tracing::warn!(shard = self.id, error = %err, "could not open a session");
        let w = {
            let mut st = self.state.borrow_mut();
            let w = st
                .queue
                .pop(Instant::now().into_std(), Duration::ZERO, Admit::All);
            if let Some(w) = &w {
                st.deadlines.remove(&(w.value.deadline, w.id));
            }
            w
        };
        if let Some(w) = w {
            self.metrics.borrow_mut().counters.jobs_failed += 1;
            w.value.request.work.fail(err);
        }
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
            (s.page.clone(), reused)
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
                let lease = Lease::new(self.id, lease_id, self.shared.inboxes[self.id].clone());
                // If the caller left, the lease comes back in the error and its drop
                // sends the release message: the session is never lost.
                let _ = tx.send(Ok(lease));
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
            Self::forget(&mut st, key);
        } else if how == Return::Interrupted {
            // Still busy until stopped: nobody gets a page that is mid-load.
            let page = session.page.clone();
            drop(st);
            let core = self.clone();
            tokio::task::spawn_local(async move {
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
        } else {
            st.busy -= 1;
            let shrink = st.sessions.len() > cfg.sessions_per_shard;
            if shrink || expired(&st.sessions[&key], &cfg, now) {
                self.metrics.borrow_mut().counters.sessions_retired += 1;
                Self::forget(&mut st, key);
            } else {
                st.idle.push(key);
            }
        }
        drop(st);
        self.returned.notify_waiters();
        self.pump();
        if !self.shared.overflow.is_empty() {
            self.shared.wakers[self.id].notify_one();
        }
    }

    fn lease_op(
        self: &Rc<Self>,
        lease: u64,
        op: LeaseOp,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<serde_json::Value>>,
    ) {
        let page = {
            let st = self.state.borrow();
            st.leases
                .get(&lease)
                .and_then(|key| st.sessions.get(key))
                .map(|s| s.page.clone())
        };
        let Some(page) = page else {
            let _ = reply.send(Err(Error::new(
                ErrorKind::SessionCrashed,
                "the lease's session is gone",
            )));
            return;
        };
        tokio::task::spawn_local(async move {
            if let Some(t) = timeout {
                page.set_command_timeout(t);
            }
            let result = match op {
                LeaseOp::Call { method, params } => page.call(method, params).await,
                LeaseOp::Goto(url) => page.goto(&url).await.map(|()| serde_json::Value::Null),
                LeaseOp::Evaluate(expr) => page.evaluate_value(&expr).await,
            };
            let _ = reply.send(result);
        });
    }

    /// Fails the waiters whose deadline has passed.
    fn expire(&self, now: Instant) {
        let cfg = self.shared.config.load();
        loop {
            let w = {
                let mut st = self.state.borrow_mut();
                match st.deadlines.first().copied() {
                    Some((at, id)) if at <= now => {
                        st.deadlines.pop_first();
                        st.queue.remove(id)
                    }
                    _ => break,
                }
            };
            if let Some(w) = w {
                let kind = w.value.kind;
                if !w.value.request.work.is_abandoned() {
                    self.metrics.borrow_mut().counters.timeout(kind);
                    let err = wait_timeout_error(kind, &w.value.request, &cfg);
                    w.value.request.work.fail(err);
                }
            }
        }
    }

    async fn shutdown(self: &Rc<Self>, grace: Duration) {
        let waiters: Vec<_> = {
            let mut st = self.state.borrow_mut();
            st.shutting_down = true;
            st.deadlines.clear();
            st.queue.drain().collect()
        };
        for w in waiters {
            w.value.request.work.fail(shutdown_error());
        }
        while let Some(request) = self.shared.overflow.take() {
            request.work.fail(shutdown_error());
        }
        // Running jobs get the grace period to finish.
        let deadline = Instant::now() + grace;
        loop {
            let returned = self.returned.notified();
            if self.state.borrow().busy == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, returned).await.is_err() {
                break;
            }
        }
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
        let conns: Vec<_> = self.state.borrow_mut().conns.drain(..).flatten().collect();
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

fn wait_timeout_error(kind: TimeoutKind, request: &Request, cfg: &Config) -> Error {
    let (what, limit) = match kind {
        TimeoutKind::Job => ("job", request.job.timeout.unwrap_or(cfg.job_timeout)),
        _ => (
            "waiting for a session",
            request.job.wait_timeout.unwrap_or(cfg.wait_timeout),
        ),
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
