//! The plan driven in virtual time: events in, actions checked, no sockets, no sleeping.
//!
//! A [`Harness`] stands in for the shell: it carries out the plan's actions the way the
//! shell would (grants reach their callers, jobs start, pages open when told), with a
//! clock that only moves when a test says so.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::msg::{grant_lease, Attempt, Grant, JobTask, LocalFuture, Msg, Request, Work};
use super::plan::{Action, Plan, Return};
use super::sessions::PageHandle;
use super::waiters::SessionKey;
use crate::config::{Config, Isolation};
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::handoff::Line;
use crate::job::{Affinity, Job, Priority};
use crate::metrics::ShardMetrics;
use crate::steal::Overflow;
use crate::sync::atomic::AtomicBool;
use crate::sync::{mpsc, oneshot, Arc};

mod across_shards;
mod holds;
mod politeness;

/// A page that is alive until the test says otherwise.
#[derive(Clone, Default)]
struct FakePage(Rc<Cell<bool>>);

impl FakePage {
    fn new() -> Self {
        FakePage(Rc::new(Cell::new(true)))
    }
    fn crash(&self) {
        self.0.set(false);
    }
}

impl PageHandle for FakePage {
    fn is_alive(&self) -> bool {
        self.0.get()
    }
    fn set_uses(&self, _: u32) {}
    fn set_command_timeout(&self, _: Duration) {}
}

/// A `run` job that reports its answer: the harness finishes it as it starts.
struct FakeTask {
    id: u64,
    answered: std_mpsc::Sender<(u64, Option<ErrorKind>)>,
}

impl JobTask for FakeTask {
    fn run<'a>(&'a mut self, _: &'a crate::cdp::Page) -> LocalFuture<'a, Attempt> {
        unreachable!("the harness never runs a job's future")
    }
    fn finish(self: Box<Self>) {
        let _ = self.answered.send((self.id, None));
    }
    fn fail(self: Box<Self>, err: Error) {
        let _ = self.answered.send((self.id, Some(err.kind())));
    }
    fn gave_up(&mut self, _: u32) {}
    fn is_abandoned(&self) -> bool {
        false
    }
    fn abandoned(&mut self) -> LocalFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// A session the harness holds: a running job's, or a lease's.
enum Holder {
    Job,
    Lease(Grant),
}

struct Harness {
    plan: Plan<FakePage>,
    cfg: Config,
    now: Instant,
    /// The pool's lines: arrival numbers come from their one counter, as in `Pool`.
    lines: std::sync::Arc<[Arc<Line<Work>>]>,
    /// Pages asked for and not yet opened, by owner.
    to_open: VecDeque<Option<std::sync::Arc<str>>>,
    /// Sessions out, by key.
    out: Vec<(SessionKey, FakePage, Holder)>,
    /// Pages closed (retired or dead).
    closed: usize,
    /// `acquire` callers by arrival number.
    callers: Vec<(u64, oneshot::Receiver<crate::error::Result<Grant>>)>,
    /// Who got a session, in order (acquire and run alike).
    served: Vec<u64>,
    /// Errors callers got, by arrival number.
    failed: Vec<(u64, ErrorKind)>,
    answered: std_mpsc::Receiver<(u64, Option<ErrorKind>)>,
    answered_tx: std_mpsc::Sender<(u64, Option<ErrorKind>)>,
    inbox: mpsc::UnboundedSender<Msg>,
    _inbox_rx: mpsc::UnboundedReceiver<Msg>,
    wakes: Vec<usize>,
}

fn config(sessions: usize) -> Config {
    Config {
        sessions_per_shard: sessions,
        critical_reserve: 0,
        min_idle: 0,
        lease_handoff: false,
        ..Config::default()
    }
}

impl Harness {
    fn new(cfg: Config) -> Self {
        Self::shard_of(
            0,
            Line::family(1).into(),
            Arc::new(Overflow::default()),
            cfg,
        )
    }

    fn shard_of(
        shard: usize,
        lines: std::sync::Arc<[Arc<Line<Work>>]>,
        overflow: Arc<Overflow<Request>>,
        cfg: Config,
    ) -> Self {
        let metrics = Rc::new(std::cell::RefCell::new(ShardMetrics::default()));
        let (answered_tx, answered) = std_mpsc::channel();
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        Harness {
            plan: Plan::new(shard, lines.clone(), overflow, metrics),
            cfg,
            now: Instant::now(),
            lines,
            to_open: VecDeque::new(),
            out: Vec::new(),
            closed: 0,
            callers: Vec::new(),
            served: Vec::new(),
            failed: Vec::new(),
            answered,
            answered_tx,
            inbox,
            _inbox_rx: inbox_rx,
            wakes: Vec::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let (now, cfg) = (self.now, self.cfg.clone());
        self.plan.expire(now, &cfg);
        self.settle();
    }

    fn request(&mut self, job: Job, run: bool) -> (u64, Request) {
        let id = self.lines[0].next_id();
        let work = if run {
            Work::Run(Box::new(FakeTask {
                id,
                answered: self.answered_tx.clone(),
            }))
        } else {
            let (tx, rx) = oneshot::channel();
            self.callers.push((id, rx));
            Work::Acquire(tx)
        };
        let request = Request {
            job,
            work,
            submitted: self.now,
            arrival: id,
            attempts: 0,
        };
        (id, request)
    }

    /// A caller asks; returns its arrival number.
    fn ask(&mut self, job: Job) -> u64 {
        let (id, request) = self.request(job, true);
        let (now, cfg) = (self.now, self.cfg.clone());
        self.plan.take_outcomes(now, &cfg);
        self.plan.submit(request, now, &cfg);
        self.settle();
        id
    }

    fn acquire(&mut self, job: Job) -> u64 {
        let (id, request) = self.request(job, false);
        let (now, cfg) = (self.now, self.cfg.clone());
        self.plan.take_outcomes(now, &cfg);
        self.plan.submit(request, now, &cfg);
        self.settle();
        id
    }

    /// Carries out the plan's actions, as the shell would.
    fn settle(&mut self) {
        loop {
            let actions = self.plan.take_actions();
            if actions.is_empty() {
                // The turn is over and nothing else is in the inbox: the line may open.
                let (now, cfg) = (self.now, self.cfg.clone());
                self.plan.open_line_if_allowed(now, &cfg);
                break;
            }
            for action in actions {
                match action {
                    Action::Grant {
                        tx, lease, handoff, ..
                    } => {
                        grant_lease(tx, 0, lease, &self.inbox, handoff);
                    }
                    Action::Run {
                        key, page, task, ..
                    } => {
                        task.finish();
                        self.out.push((key, page, Holder::Job));
                    }
                    Action::Open { owner } => self.to_open.push_back(owner),
                    Action::Close { .. } => self.closed += 1,
                    Action::Stop { key, .. } => {
                        let (now, cfg) = (self.now, self.cfg.clone());
                        self.plan.returned(key, Return::Clean, now, &cfg);
                    }
                    Action::Reset { key, .. } => {
                        let (now, cfg) = (self.now, self.cfg.clone());
                        self.plan.returned(key, Return::Reset, now, &cfg);
                    }
                    Action::Probe { key, page } => {
                        let (now, cfg) = (self.now, self.cfg.clone());
                        self.plan.probed(key, page.is_alive(), now, &cfg);
                    }
                    Action::Fail { work, error } => work.fail(error),
                    Action::Wake(shard) => self.wakes.push(shard),
                }
            }
        }
        self.collect();
    }

    /// Reads what callers got.
    fn collect(&mut self) {
        while let Ok((id, err)) = self.answered.try_recv() {
            match err {
                None => self.served.push(id),
                Some(kind) => self.failed.push((id, kind)),
            }
        }
        let mut i = 0;
        while i < self.callers.len() {
            match self.callers[i].1.try_recv() {
                Ok(Ok(grant)) => {
                    let id = self.callers.remove(i).0;
                    self.served.push(id);
                    self.out
                        .push((grant.lease, FakePage::new(), Holder::Lease(grant)));
                }
                Ok(Err(e)) => {
                    let id = self.callers.remove(i).0;
                    self.failed.push((id, e.kind()));
                }
                Err(_) => i += 1,
            }
        }
    }

    /// Opens every page asked for.
    fn open_all(&mut self) {
        while let Some(owner) = self.to_open.pop_front() {
            let (now, cfg) = (self.now, self.cfg.clone());
            let passable = Arc::new(AtomicBool::new(false));
            self.plan.opened(
                owner,
                FakePage::new(),
                0,
                None,
                passable,
                Duration::ZERO,
                now,
                &cfg,
            );
            self.settle();
        }
    }

    /// The first page asked for fails to open with `error`.
    fn fail_open(&mut self, error: Error) {
        let owner = self.to_open.pop_front().expect("an opening was asked for");
        let (now, cfg) = (self.now, self.cfg.clone());
        self.plan.open_failed(owner, error, now, &cfg);
        self.settle();
    }

    /// The oldest session out comes back `how`.
    fn give_back(&mut self, how: Return) {
        let (key, _page, holder) = self.out.remove(0);
        let (now, cfg) = (self.now, self.cfg.clone());
        self.plan.take_outcomes(now, &cfg);
        match holder {
            Holder::Job => self.plan.returned(key, how, now, &cfg),
            Holder::Lease(mut grant) => {
                drop(grant.take_link());
                self.plan.released(grant.lease, now, &cfg);
            }
        }
        self.settle();
    }

    fn served(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.served)
    }

    /// Checks what must hold after every event.
    fn check(&self) {
        self.plan.waiters.check();
        self.plan.politeness.check(self.cfg.politeness);
        let s = &self.plan.sessions;
        let mut idle = s.idle.clone();
        idle.sort_unstable();
        idle.dedup();
        assert_eq!(idle.len(), s.idle.len(), "a session is idle twice");
        assert!(s.idle.iter().all(|k| s.get(*k).is_some()));
        assert_eq!(
            s.idle.len() + s.busy,
            s.len(),
            "idle + busy must be every open session"
        );
        assert!(
            s.live() <= self.cfg.sessions_per_shard,
            "over the session limit"
        );
    }
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn priority_between_classes_fifo_within() {
    let mut h = Harness::new(config(1));
    let first = h.ask(Job::new());
    h.open_all();
    assert_eq!(h.served(), [first]);
    let low = h.ask(Job::new().priority(Priority::Low));
    let a = h.ask(Job::new());
    let high = h.ask(Job::new().priority(Priority::High));
    let b = h.ask(Job::new());
    for _ in 0..4 {
        h.give_back(Return::Clean);
        h.check();
    }
    assert_eq!(h.served(), [high, a, b, low]);
}

#[test]
fn aging_lifts_a_waiting_low_request_above_newer_normal_ones() {
    let mut h = Harness::new(Config {
        aging: SEC,
        ..config(1)
    });
    h.ask(Job::new());
    h.open_all();
    h.served();
    let low = h.ask(Job::new().priority(Priority::Low));
    h.advance(3 * SEC);
    let normal = h.ask(Job::new());
    h.give_back(Return::Clean);
    h.give_back(Return::Clean);
    assert_eq!(h.served(), [low, normal]);
}

#[test]
fn the_critical_reserve_is_kept_for_critical_requests() {
    let mut h = Harness::new(Config {
        critical_reserve: 1,
        ..config(2)
    });
    let a = h.ask(Job::new());
    h.open_all();
    let b = h.ask(Job::new());
    h.open_all();
    // One session busy of two, one reserved: the Normal request waits even though a
    // page could be opened; a Critical one is served.
    assert_eq!(h.served(), [a]);
    let critical = h.ask(Job::new().priority(Priority::Critical));
    h.open_all();
    assert_eq!(h.served(), [critical]);
    h.give_back(Return::Clean);
    assert!(
        h.served().is_empty(),
        "one busy of two: still only the reserve free"
    );
    h.give_back(Return::Clean);
    assert_eq!(h.served(), [b]);
    h.check();
}

#[test]
fn every_deadline_kind_fails_its_request_in_virtual_time() {
    let mut h = Harness::new(Config {
        wait_timeout: 2 * SEC,
        ..config(1)
    });
    h.ask(Job::new());
    h.open_all();
    let waits = h.ask(Job::new());
    let job_limit = h.ask(Job::new().timeout(SEC));
    let own_wait = h.ask(Job::new().wait_timeout(3 * SEC));
    let acquirer = h.acquire(Job::new().wait_timeout(SEC + SEC / 2));
    h.advance(SEC);
    assert_eq!(
        h.failed,
        [(job_limit, ErrorKind::Timeout(TimeoutKind::Job))]
    );
    h.advance(SEC);
    let mut due = h.failed[1..].to_vec();
    due.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(
        due,
        [
            (waits, ErrorKind::Timeout(TimeoutKind::Wait)),
            (acquirer, ErrorKind::Timeout(TimeoutKind::Wait))
        ]
    );
    h.advance(SEC);
    assert_eq!(
        h.failed[3],
        (own_wait, ErrorKind::Timeout(TimeoutKind::Wait))
    );
    h.check();
}

#[test]
fn a_soft_affinity_request_waits_briefly_for_its_session_then_takes_another() {
    let mut h = Harness::new(Config {
        affinity_wait: SEC,
        ..config(2)
    });
    let key = || Job::new().affinity(Affinity::soft("example.com"));
    let first = h.ask(key());
    h.open_all();
    assert_eq!(h.served(), [first]);
    // Its session is busy: the next keyed request waits for it, not for a new page.
    let second = h.ask(key());
    assert!(h.to_open.is_empty());
    h.give_back(Return::Clean);
    assert_eq!(h.served(), [second]);
    assert_eq!(h.plan.metrics.borrow().counters.affinity_hits, 1);
    // Busy again: this one gives up on it after the affinity wait and gets a new page.
    let third = h.ask(key());
    h.advance(SEC);
    h.open_all();
    assert_eq!(h.served(), [third]);
    h.check();
}

#[test]
fn a_sticky_request_waits_for_its_own_session_until_its_deadline() {
    let mut h = Harness::new(Config {
        affinity_wait: SEC,
        wait_timeout: 5 * SEC,
        ..config(2)
    });
    let sticky = || Job::new().affinity(Affinity::sticky("login"));
    h.ask(sticky());
    h.open_all();
    h.served();
    let waiting = h.ask(sticky());
    h.advance(3 * SEC);
    assert!(h.served().is_empty() && h.to_open.is_empty());
    h.give_back(Return::Clean);
    assert_eq!(h.served(), [waiting]);
    let late = h.ask(sticky());
    h.advance(5 * SEC);
    assert_eq!(h.failed, [(late, ErrorKind::Timeout(TimeoutKind::Wait))]);
    h.check();
}

#[test]
fn sessions_retire_by_uses_age_and_idleness_keeping_min_idle() {
    let mut h = Harness::new(Config {
        max_uses: 2,
        ..config(1)
    });
    h.ask(Job::new());
    h.open_all();
    h.give_back(Return::Clean);
    h.ask(Job::new());
    h.give_back(Return::Clean);
    assert_eq!(h.closed, 1, "retired after its second use");
    h.check();

    let mut h = Harness::new(Config {
        idle_timeout: 10 * SEC,
        health_interval: Duration::ZERO,
        min_idle: 1,
        ..config(3)
    });
    for _ in 0..3 {
        h.ask(Job::new());
        h.open_all();
    }
    for _ in 0..3 {
        h.give_back(Return::Clean);
    }
    h.now += 11 * SEC;
    let (now, cfg) = (h.now, h.cfg.clone());
    h.plan.health(now, &cfg);
    h.settle();
    assert_eq!(h.closed, 2, "idle ones retire, min_idle stays warm");
    assert_eq!(h.plan.sessions.idle.len(), 1);

    let mut h = Harness::new(Config {
        max_lifetime: 5 * SEC,
        health_interval: Duration::ZERO,
        ..config(1)
    });
    h.ask(Job::new());
    h.open_all();
    h.give_back(Return::Clean);
    h.now += 5 * SEC;
    let (now, cfg) = (h.now, h.cfg.clone());
    h.plan.health(now, &cfg);
    h.settle();
    assert_eq!(h.closed, 1, "too old");
    h.check();
}

#[test]
fn a_crash_while_busy_is_replaced_and_while_opening_fails_nobody() {
    let mut h = Harness::new(config(1));
    h.ask(Job::new());
    h.open_all();
    let waiting = h.ask(Job::new());
    h.give_back(Return::Dead);
    assert_eq!(h.closed, 1);
    assert_eq!(h.to_open.len(), 1, "a replacement is opened");
    // The replacement's renderer crashes while it opens: nobody's failure.
    h.fail_open(Error::new(ErrorKind::SessionCrashed, "renderer gone"));
    assert!(h.failed.is_empty());
    assert_eq!(h.to_open.len(), 1, "and another is tried");
    h.open_all();
    assert_eq!(h.served()[1..], [waiting]);
    h.check();

    // A real opening failure tells the oldest waiter why.
    let mut h = Harness::new(config(1));
    let asked = h.ask(Job::new());
    h.fail_open(Error::new(ErrorKind::BrowserUnavailable, "down"));
    assert_eq!(h.failed, [(asked, ErrorKind::BrowserUnavailable)]);
}

#[test]
fn a_dead_idle_session_is_never_handed_out() {
    let mut h = Harness::new(config(1));
    h.ask(Job::new());
    h.open_all();
    let (_, page, _) = h.out.first().map(|(k, p, _)| (*k, p.clone(), ())).unwrap();
    h.give_back(Return::Clean);
    page.crash();
    let next = h.ask(Job::new());
    assert!(
        h.served()[1..].is_empty(),
        "the dead page was not given out"
    );
    h.open_all();
    assert_eq!(h.served(), [next]);
    h.check();
}

#[test]
fn shutdown_fails_the_waiters_and_takes_back_held_leases() {
    let mut h = Harness::new(config(1));
    let holder = h.acquire(Job::new());
    h.open_all();
    assert_eq!(h.served(), [holder]);
    let waiter = h.acquire(Job::new());
    h.plan.begin_shutdown();
    h.settle();
    assert_eq!(h.failed, [(waiter, ErrorKind::Shutdown)]);
    assert_eq!(h.plan.busy(), 1, "the lease is still held");
    h.give_back(Return::Clean);
    assert_eq!(h.plan.busy(), 0);
    assert_eq!(h.closed, 1, "its page is closed, not kept");
    let late = h.ask(Job::new());
    assert_eq!(h.failed[1], (late, ErrorKind::Shutdown));
}

#[test]
fn context_per_key_opens_one_session_at_a_time_per_key() {
    let mut h = Harness::new(Config {
        isolation: Isolation::ContextPerKey,
        ..config(4)
    });
    h.ask(Job::new().affinity(Affinity::soft("a")));
    h.ask(Job::new().affinity(Affinity::soft("a")));
    assert_eq!(h.to_open.len(), 1);
    h.check();
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    Ask {
        priority: u8,
        key: Option<u8>,
        sticky: bool,
        wait: u8,
    },
    Acquire,
    Open,
    FailOpen(bool),
    GiveBack(u8),
    Crash,
    Advance(u8),
    Health,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, proptest::option::of(0u8..3), any::<bool>(), 1u8..20)
            .prop_map(|(priority, key, sticky, wait)| Step::Ask { priority, key, sticky, wait }),
        2 => Just(Step::Acquire),
        3 => Just(Step::Open),
        1 => any::<bool>().prop_map(Step::FailOpen),
        4 => (0u8..4).prop_map(Step::GiveBack),
        1 => Just(Step::Crash),
        2 => (1u8..10).prop_map(Step::Advance),
        1 => Just(Step::Health),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random event sequences: a session is never in two places, idle + busy + opening
    /// stay within the limit, the deadline index never drifts, and once the shard shuts
    /// down every request has been answered exactly once.
    #[test]
    fn random_events_keep_the_plan_sound(steps in proptest::collection::vec(step(), 1..80)) {
        random_events(steps, crate::politeness::Politeness::new())?;
    }

    /// The same with every key throttled: held requests are answered too, and no key
    /// goes over its limit.
    #[test]
    fn random_events_keep_the_plan_sound_with_politeness(
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let rule = crate::politeness::Politeness::new()
            .max_in_flight(1)
            .interval(Duration::from_millis(400));
        random_events(steps, rule)?;
    }
}

/// Runs `steps` against one shard whose keys get `politeness` (see the proptests).
fn random_events(
    steps: Vec<Step>,
    politeness: crate::politeness::Politeness,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(Config {
        critical_reserve: 1,
        affinity_wait: SEC,
        wait_timeout: 10 * SEC,
        max_uses: 3,
        politeness,
        ..config(3)
    });
    let mut asked = Vec::new();
    for s in steps {
        match s {
            Step::Ask {
                priority,
                key,
                sticky,
                wait,
            } => {
                let mut job = Job::new()
                    .priority(Priority::ALL[priority as usize])
                    .wait_timeout(Duration::from_millis(500) * u32::from(wait));
                if let Some(k) = key {
                    let k = format!("k{k}");
                    job = job.affinity(if sticky {
                        Affinity::sticky(k)
                    } else {
                        Affinity::soft(k)
                    });
                }
                asked.push(h.ask(job));
            }
            Step::Acquire => asked.push(h.acquire(Job::new())),
            Step::Open => h.open_all(),
            Step::FailOpen(lost) if !h.to_open.is_empty() => {
                let kind = if lost {
                    ErrorKind::SessionCrashed
                } else {
                    ErrorKind::BrowserUnavailable
                };
                h.fail_open(Error::new(kind, "injected"));
            }
            Step::FailOpen(_) => {}
            Step::GiveBack(how) if !h.out.is_empty() => {
                let how = [
                    Return::Clean,
                    Return::Interrupted,
                    Return::Dead,
                    Return::Clean,
                ][how as usize];
                h.give_back(how);
            }
            Step::GiveBack(_) => {}
            Step::Crash => {
                if let Some(key) = h.plan.sessions.idle.first().copied() {
                    if let Some(s) = h.plan.sessions.get(key) {
                        s.page.crash();
                    }
                    let (now, cfg) = (h.now, h.cfg.clone());
                    h.plan.sweep(now, &cfg);
                    h.settle();
                }
            }
            Step::Advance(n) => h.advance(Duration::from_millis(300) * u32::from(n)),
            Step::Health => {
                let (now, cfg) = (h.now, h.cfg.clone());
                h.plan.health(now, &cfg);
                h.settle();
            }
        }
        h.check();
    }
    h.plan.begin_shutdown();
    h.settle();
    while !h.out.is_empty() {
        h.give_back(Return::Clean);
    }
    h.collect();
    let mut answered: Vec<u64> = h
        .served
        .iter()
        .copied()
        .chain(h.failed.iter().map(|(id, _)| *id))
        .collect();
    answered.sort_unstable();
    let before = answered.len();
    answered.dedup();
    prop_assert_eq!(before, answered.len(), "a request was answered twice");
    prop_assert_eq!(answered, asked, "a request was never answered");
    prop_assert_eq!(h.plan.busy(), 0);
    Ok(())
}

#[test]
fn the_pools_message_limit_defaults_to_the_transports() {
    assert_eq!(
        Config::default().max_message_size,
        crate::cdp::ConnectionConfig::DEFAULT_MAX_MESSAGE_SIZE
    );
}
