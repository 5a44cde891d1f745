//! How long does a caller wait for a session when 1,000 tasks share 50? cdpmux's
//! `Pool::acquire` against a `deadpool::managed` pool of the same sessions, on the
//! simulated browser (replies at once, so the pools' own costs dominate).
//!
//! Each of 1,000 tasks loops for a fixed time: acquire a session, run one command
//! (`Runtime.evaluate("1+1")`), release it. The acquire wait (from calling acquire to
//! holding the session) goes into an HDR histogram; throughput is cycles per second.
//!
//! How the deadpool arm is made fair: cdpmux pages are `!Send` and live on the thread
//! that opened them, and `deadpool::managed` needs `Send` objects (deadpool 0.13 has no
//! `!Send` pool). So its sessions live on *session host* threads, each a current-thread
//! runtime + `LocalSet` owning one cdpmux `Connection` to the same simulated browser, and
//! the pooled object is a `Send` handle (host channel + page id): a command goes to the
//! host over an unbounded channel and its answer comes back on a oneshot. That is the
//! same path a cdpmux [`Lease`](cdpmux::Lease) command takes to its shard, on the same
//! transport, so the arms differ only in how a session is handed out and given back
//! (cdpmux: its shard's wait queue and line, with a dropped lease serving the next caller
//! in line directly (`Config::lease_handoff`); deadpool: a semaphore and a mutexed queue
//! in the caller's thread). Each cdpmux layout (1 shard × 50, 2 shards × 25) is matched
//! by a deadpool pool with as many host threads holding as many sessions. The share of
//! lease cycles handed on directly (and of those, how many to a caller in another
//! shard's line) is printed after the table.
//!
//! Fairness: within each block, callers are ranked by when they asked and by when they
//! got their session; a caller's *displacement* is how many places the two ranks differ
//! (a strict first-come-first-served pool gives 0, give or take the few microseconds
//! between reading the clock and asking). The table shows its p99.9 and maximum.
//!
//! Both arms run on the same 2-worker multi-thread runtime, in blocks interleaved five
//! times (5 s per arm in all, 1 s with quick), after a warm-up that opens every session.
//!
//! A third arm per layout runs the same command through `Pool::run` (the fast path: the
//! closure runs on the shard that owns the page, so a cycle is one message each way);
//! its wait is measured from calling `run` to the closure starting. A fourth runs
//! `acquire` with `Config::lease_handoff` off: every release goes back through the shard,
//! which shows what the hand-off line buys.
//!
//! Run with `cargo bench --bench acquire_contention`; `CDPMUX_BENCH_QUICK=1` shortens
//! each block; `CDPMUX_BENCH_ONLY=<text>` runs only the arms whose name contains it (to
//! profile one arm alone).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdpmux::cdp::{Connection, ConnectionConfig, Page, PageOptions};
use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{Job, Pool};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

const TASKS: usize = 1000;
const SESSIONS: usize = 50;
const ROUNDS: usize = 5;

// ---- the deadpool arm's sessions -------------------------------------------------------

/// What a session host is asked to do.
enum HostCmd {
    /// Open a page; answer its id.
    Open(oneshot::Sender<cdpmux::Result<usize>>),
    /// Evaluate an expression on page `id`.
    Evaluate {
        id: usize,
        expression: &'static str,
        reply: oneshot::Sender<cdpmux::Result<serde_json::Value>>,
    },
}

/// Starts a thread that owns one connection to `ws_url` and the pages opened on it. It
/// stops when every sender of its channel is gone.
fn spawn_host(ws_url: String) -> (mpsc::UnboundedSender<HostCmd>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<HostCmd>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        tokio::task::LocalSet::new().block_on(&rt, async move {
            let conn = Connection::connect(&ws_url, ConnectionConfig::default())
                .await
                .expect("a session host connects to the simulated browser");
            let pages: Rc<RefCell<Vec<Rc<Page>>>> = Rc::default();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    HostCmd::Open(reply) => {
                        let (conn, pages) = (conn.clone(), pages.clone());
                        tokio::task::spawn_local(async move {
                            let page = conn.new_page(&PageOptions::default()).await;
                            let _ = reply.send(page.map(|page| {
                                let mut pages = pages.borrow_mut();
                                pages.push(Rc::new(page));
                                pages.len() - 1
                            }));
                        });
                    }
                    HostCmd::Evaluate {
                        id,
                        expression,
                        reply,
                    } => {
                        let page = pages.borrow()[id].clone();
                        tokio::task::spawn_local(async move {
                            let _ = reply.send(page.evaluate_value(expression).await);
                        });
                    }
                }
            }
        });
    });
    (tx, thread)
}

/// A `Send` handle to a page on a session host: what the deadpool arm pools.
struct RemoteSession {
    host: mpsc::UnboundedSender<HostCmd>,
    id: usize,
}

impl RemoteSession {
    async fn evaluate_value(&self, expression: &'static str) -> cdpmux::Result<serde_json::Value> {
        let (reply, rx) = oneshot::channel();
        self.host
            .send(HostCmd::Evaluate {
                id: self.id,
                expression,
                reply,
            })
            .expect("the session host runs");
        rx.await.expect("the session host answers")
    }
}

/// Opens sessions round-robin over the hosts.
struct SessionManager {
    hosts: Vec<mpsc::UnboundedSender<HostCmd>>,
    next: AtomicUsize,
}

impl managed::Manager for SessionManager {
    type Type = RemoteSession;
    type Error = cdpmux::Error;

    async fn create(&self) -> cdpmux::Result<RemoteSession> {
        let host = &self.hosts[self.next.fetch_add(1, Ordering::Relaxed) % self.hosts.len()];
        let (reply, rx) = oneshot::channel();
        host.send(HostCmd::Open(reply))
            .expect("the session host runs");
        let id = rx.await.expect("the session host answers")?;
        Ok(RemoteSession {
            host: host.clone(),
            id,
        })
    }

    async fn recycle(
        &self,
        session: &mut RemoteSession,
        _: &Metrics,
    ) -> RecycleResult<cdpmux::Error> {
        // As cheap as cdpmux's own check before reuse: is the owner still there?
        if session.host.is_closed() {
            return Err(RecycleError::message("the session host stopped"));
        }
        Ok(())
    }
}

// ---- the contest ------------------------------------------------------------------------

enum Contender {
    /// `pool.acquire` → `Lease` → command → drop: the convenience path.
    Cdpmux(Pool),
    /// `pool.run`: the fast path (the command runs on the shard that owns the page).
    CdpmuxRun(Pool),
    Deadpool(managed::Pool<SessionManager>),
}

impl Contender {
    /// One acquire + command + release; returns the acquire wait.
    async fn cycle(&self) -> Duration {
        let asked = Instant::now();
        let (waited, value) = match self {
            Contender::Cdpmux(pool) => {
                let lease = pool.acquire(Job::new()).await.expect("cdpmux acquire");
                let waited = asked.elapsed();
                (waited, lease.evaluate_value("1+1").await)
            }
            Contender::CdpmuxRun(pool) => pool
                .run(Job::new(), async move |page| {
                    let waited = asked.elapsed();
                    Ok((waited, page.evaluate_value("1+1").await))
                })
                .await
                .expect("cdpmux run"),
            Contender::Deadpool(pool) => {
                let session = pool.get().await.expect("deadpool get");
                let waited = asked.elapsed();
                (waited, session.evaluate_value("1+1").await)
            }
        };
        assert_eq!(value.expect("evaluate 1+1"), serde_json::json!(2));
        waited
    }
}

struct Arm {
    name: String,
    contender: Arc<Contender>,
    waits: Histogram<u64>,
    /// Places between each caller's arrival rank and its service rank.
    displacement: Histogram<u64>,
    cycles: u64,
    elapsed: Duration,
}

impl Arm {
    fn new(name: impl Into<String>, contender: Contender) -> Self {
        Arm {
            name: name.into(),
            contender: Arc::new(contender),
            waits: histogram(),
            displacement: histogram(),
            cycles: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn wait_ms(&self, quantile: f64) -> f64 {
        self.waits.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn throughput(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64()
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds (up to 10 minutes), or places in line.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

/// What one block measured.
struct Block {
    waits: Histogram<u64>,
    displacement: Histogram<u64>,
    cycles: u64,
    elapsed: Duration,
}

/// `TASKS` tasks cycle until `length` has passed; returns their acquire waits, how far
/// each caller was served out of arrival order, the number of cycles and the wall time
/// until the last one finished.
async fn block(contender: &Arc<Contender>, length: Duration) -> Block {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let contender = contender.clone();
            tokio::spawn(async move {
                // Plain microseconds here (since the block started, and waited), one
                // histogram per block after: a histogram per task would allocate and
                // fault in hundreds of MB inside the measurement.
                let mut cycles = Vec::with_capacity(256);
                while Instant::now() < deadline {
                    let asked = started.elapsed().as_micros() as u64;
                    let waited = contender.cycle().await.as_micros() as u64;
                    cycles.push((asked, waited));
                }
                cycles
            })
        })
        .collect();
    let mut cycles = Vec::new();
    for task in tasks {
        cycles.extend(task.await.expect("a contending task panicked"));
    }
    let elapsed = started.elapsed();
    let mut waits = histogram();
    for (_, waited) in &cycles {
        waits.saturating_record((*waited).max(1));
    }
    Block {
        waits,
        displacement: displacement(&mut cycles),
        cycles: cycles.len() as u64,
        elapsed,
    }
}

/// For each cycle (asked at, waited), how many places apart its rank by asking and its
/// rank by being served are.
fn displacement(cycles: &mut [(u64, u64)]) -> Histogram<u64> {
    cycles.sort_unstable_by_key(|(asked, _)| *asked);
    let mut by_service: Vec<usize> = (0..cycles.len()).collect();
    by_service.sort_by_key(|&i| cycles[i].0 + cycles[i].1);
    let mut places = histogram();
    for (served_rank, &asked_rank) in by_service.iter().enumerate() {
        places.saturating_record(served_rank.abs_diff(asked_rank) as u64);
    }
    places
}

/// Leases handed on so far by the pools of the lease arms: in all, and to callers in
/// another shard's line.
async fn handoffs(arms: &[Arm]) -> (u64, u64) {
    let (mut all, mut across) = (0, 0);
    for arm in arms {
        if let Contender::Cdpmux(pool) = &*arm.contender {
            let counters = pool.metrics().await.counters;
            all += counters.handoffs;
            across += counters.cross_shard_handoffs;
        }
    }
    (all, across)
}

/// A pool of `SESSIONS` over `shards` shards on `sim`, with or without the hand-off line.
async fn cdpmux_pool(sim: &SimBrowser, shards: usize, lease_handoff: bool) -> Pool {
    Pool::builder()
        .endpoint(sim.ws_url())
        .shards(shards)
        .sessions_per_shard(SESSIONS / shards)
        .configure(|c| {
            c.max_queue = TASKS;
            c.wait_timeout = Duration::from_secs(60);
            c.lease_handoff = lease_handoff;
        })
        .build()
        .await
        .expect("build a cdpmux pool on the simulated browser")
}

async fn run() {
    let quick = std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1");
    let length = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let sim = SimBrowser::start(SimConfig::default()).expect("start the simulated browser");

    let mut arms = Vec::new();
    let mut hosts = Vec::new();
    for shards in [1, 2] {
        let per_shard = SESSIONS / shards;
        let pool = cdpmux_pool(&sim, shards, true).await;
        arms.push(Arm::new(
            format!("cdpmux   {shards} shard(s) x {per_shard}"),
            Contender::Cdpmux(pool.clone()),
        ));
        arms.push(Arm::new(
            format!("cdpmux run {shards} shard(s) x {per_shard}"),
            Contender::CdpmuxRun(pool),
        ));
        // The same acquire without the hand-off line: every release goes back through
        // the shard (what the line must beat to earn its complexity).
        let pool = cdpmux_pool(&sim, shards, false).await;
        arms.push(Arm::new(
            format!("no line  {shards} shard(s) x {per_shard}"),
            Contender::Cdpmux(pool),
        ));
        let (senders, threads): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| spawn_host(sim.ws_url())).unzip();
        hosts.extend(threads);
        let manager = SessionManager {
            hosts: senders,
            next: AtomicUsize::new(0),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(SESSIONS)
            .build()
            .expect("build a deadpool pool");
        arms.push(Arm::new(
            format!("deadpool {shards} host(s)  x {per_shard}"),
            Contender::Deadpool(pool),
        ));
    }

    let only = std::env::var("CDPMUX_BENCH_ONLY").ok();
    if let Some(only) = &only {
        arms.retain(|arm| arm.name.contains(only));
    }
    println!(
        "acquire_contention: {TASKS} tasks, {SESSIONS} sessions, simulated browser (no reply \
         delay), {ROUNDS} interleaved blocks of {length:?} per arm{}",
        if quick { " (quick)" } else { "" }
    );
    // Warm-up: every session opened, every path exercised.
    for arm in &arms {
        block(&arm.contender, length / 5).await;
    }
    let handoffs_before = handoffs(&arms).await;
    for _ in 0..ROUNDS {
        for arm in &mut arms {
            let block = block(&arm.contender, length).await;
            arm.waits.add(&block.waits).expect("same bounds");
            arm.displacement
                .add(&block.displacement)
                .expect("same bounds");
            arm.cycles += block.cycles;
            arm.elapsed += block.elapsed;
        }
    }

    println!(
        "  {:<26} {:>10} {:>12} {:>12} {:>12} {:>12} {:>16}",
        "arm",
        "cycles/s",
        "wait p50 ms",
        "wait p95 ms",
        "wait p99 ms",
        "wait max ms",
        "displ p99.9/max"
    );
    for arm in &arms {
        println!(
            "  {:<26} {:>10.0} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>16}",
            arm.name,
            arm.throughput(),
            arm.wait_ms(0.50),
            arm.wait_ms(0.95),
            arm.wait_ms(0.99),
            arm.waits.max() as f64 / 1000.0,
            format!(
                "{}/{}",
                arm.displacement.value_at_quantile(0.999),
                arm.displacement.max()
            ),
        );
    }
    // How many lease cycles skipped the shard's loop on the way to the next caller.
    let (all, across) = handoffs(&arms).await;
    let (handed_on, across) = (all - handoffs_before.0, across - handoffs_before.1);
    let lease_cycles: u64 = arms
        .iter()
        .filter(|a| matches!(*a.contender, Contender::Cdpmux(_)) && !a.name.starts_with("no line"))
        .map(|a| a.cycles)
        .sum();
    if lease_cycles > 0 {
        println!(
            "  leases handed straight to the next caller: {handed_on} of {lease_cycles} \
             cycles ({:.1}%), {across} of them to another shard's line",
            100.0 * handed_on as f64 / lease_cycles as f64
        );
    }
    // Ratios only for whole layouts (lease, run, no line, deadpool in that order).
    let layouts = if only.is_some() { &[][..] } else { &arms[..] };
    for layout in layouts.chunks_exact(4) {
        let [lease, run, no_line, theirs] = layout else {
            continue;
        };
        for ours in [lease, run, no_line] {
            println!(
                "  {} vs deadpool: p99 ratio {:.2} (target <= 1.0), p50 ratio {:.2}, \
                 throughput ratio {:.2}",
                ours.name,
                ours.wait_ms(0.99) / theirs.wait_ms(0.99),
                ours.wait_ms(0.50) / theirs.wait_ms(0.50),
                ours.throughput() / theirs.throughput(),
            );
        }
    }

    for arm in arms {
        if let Ok(Contender::CdpmuxRun(pool)) = Arc::try_unwrap(arm.contender) {
            pool.shutdown(Duration::from_secs(5))
                .await
                .expect("shut a pool down");
        }
    }
    // The deadpool pools (and with them every sender) are gone: the hosts stop.
    for host in hosts {
        host.join().expect("a session host panicked");
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
        .block_on(run());
}
