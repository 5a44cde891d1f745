//! Simulated browser faults during a crawl: dropped sockets, replies that never come, slow
//! replies, malformed frames, unknown events and crash storms, injected at moments driven
//! by job completions. Every request gets an answer of an expected kind, nothing panics,
//! no job is handed a session the pool knows is dead, and afterwards the pool is
//! consistent (no busy session, browser targets == pool sessions) and still serves.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdpmux::sim::{Delay, SimBrowser, SimConfig};
use cdpmux::{ErrorKind, Job, Pool, TimeoutKind};
use tokio::sync::mpsc;

/// Bound of one whole crawl; a hang fails the test instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(90);

/// What a crawl saw: one answer per job, and how many jobs were handed a dead page.
struct Outcome {
    answers: Vec<cdpmux::Result<u64>>,
    dead_handouts: u64,
}

impl Outcome {
    fn errors(&self) -> impl Iterator<Item = &cdpmux::Error> {
        self.answers.iter().filter_map(|a| a.as_ref().err())
    }

    fn failed(&self) -> usize {
        self.errors().count()
    }
}

/// Runs `jobs` concurrent jobs (each evaluates `i+1` and checks the answer) and calls
/// `fault(n)` after the n-th completion when `n % every == 0`.
async fn crawl(
    pool: &Pool,
    jobs: u64,
    job: impl Fn() -> Job,
    every: u64,
    mut fault: impl FnMut(u64),
) -> Outcome {
    let dead = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for i in 0..jobs {
        let (pool, dead, done_tx, job) = (pool.clone(), dead.clone(), done_tx.clone(), job());
        tokio::spawn(async move {
            let answer = pool
                .run(job, async move |page| {
                    if !page.is_alive() {
                        dead.fetch_add(1, Ordering::SeqCst);
                    }
                    let v = page.evaluate_value(&format!("{i}+1")).await?;
                    Ok(v.as_u64().expect("a number"))
                })
                .await;
            let _ = done_tx.send((i, answer));
        });
    }
    drop(done_tx);
    let mut answers: Vec<Option<cdpmux::Result<u64>>> = (0..jobs).map(|_| None).collect();
    let mut completed = 0;
    tokio::time::timeout(LIMIT, async {
        while let Some((i, answer)) = done_rx.recv().await {
            if let Ok(v) = &answer {
                assert_eq!(*v, i + 1, "job {i} got another job's answer");
            }
            answers[i as usize] = Some(answer);
            completed += 1;
            if completed % every == 0 && completed < jobs {
                fault(completed);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {completed} of {jobs} jobs answered within {LIMIT:?}"));
    Outcome {
        answers: answers
            .into_iter()
            .map(|a| a.expect("every job answers"))
            .collect(),
        dead_handouts: dead.load(Ordering::SeqCst),
    }
}

/// Waits (bounded) until nothing is busy, opening or waiting, then checks the browser's
/// targets equal the pool's sessions (targets left by failed openings are found by their
/// URL and closed after a reconnect or by a health round: docs/reliability.md, bug 1), the
/// load gauges are zero and a job still succeeds. Returns the last snapshot.
async fn assert_consistent(pool: &Pool, sim: &SimBrowser) -> cdpmux::Snapshot {
    support::settled(pool, Duration::from_secs(20), "after the faults").await;
    // Up to two default health rounds.
    let mut targets = 0;
    for _ in 0..1_000 {
        targets = sim.stats().targets as u64;
        if targets == pool.metrics().await.gauges.live() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let live = pool.metrics().await.gauges.live();
    assert_eq!(targets, live, "browser targets == pool sessions");
    assert!(pool.load().iter().all(|&l| l == 0), "{:?}", pool.load());
    serves_again(pool).await;
    pool.metrics().await
}

/// Checks the pool serves a job, once a circuit breaker opened by the faults has let a
/// try through (its backoff is at most `reconnect_max`).
async fn serves_again(pool: &Pool) {
    for _ in 0..300 {
        match pool
            .run(Job::new(), async |page| page.evaluate_value("40+2").await)
            .await
        {
            Ok(v) => {
                assert_eq!(v, 42);
                return;
            }
            Err(e) => {
                assert!(
                    e.kind() == ErrorKind::BrowserUnavailable || e.is_crash(),
                    "{e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("the pool never served again");
}

fn kinds(outcome: &Outcome) -> Vec<ErrorKind> {
    let mut kinds: Vec<ErrorKind> = outcome.errors().map(|e| e.kind()).collect();
    kinds.dedup();
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_drops_mid_crawl_fail_only_the_calls_on_them() {
    let sim = SimConfig::default()
        .with_seed(1)
        .with_reply_delay(Delay::Uniform(Duration::ZERO, Duration::from_millis(2)));
    let (sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 4;
        c.max_queue = 10_000;
        c.reconnect_base = Duration::from_millis(5);
        c.reconnect_max = Duration::from_millis(50);
    })
    .await;
    let mut drops = 0;
    let out = crawl(
        &pool,
        2_000,
        || Job::new().retries(2),
        200,
        |_| {
            sim.drop_connections();
            drops += 1;
        },
    )
    .await;
    let lost = |k: ErrorKind| {
        matches!(
            k,
            ErrorKind::ConnectionClosed | ErrorKind::SessionCrashed | ErrorKind::BrowserUnavailable
        )
    };
    assert!(out.errors().all(|e| lost(e.kind())), "{:?}", kinds(&out));
    assert_eq!(out.dead_handouts, 0, "a job was handed a dead session");
    let snap = assert_consistent(&pool, &sim).await;
    assert!(snap.counters.reconnects >= drops, "{:?}", snap.counters);
    eprintln!(
        "socket drops: {drops} drops over 2000 jobs, {} failed after retries(2), {} retries, {} reconnects, 0 orphaned targets",
        out.failed(),
        snap.counters.retries(),
        snap.counters.reconnects
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_never_come_end_in_deadline_errors() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 2, |c| {
        c.sessions_per_shard = 4;
        c.probe_timeout = Duration::from_millis(100);
        c.create_timeout = Duration::from_millis(200);
        // Above create_timeout: a session opening's own calls have this deadline too, and
        // it would win (reported as a command timeout; docs/reliability.md, finding 2).
        c.command_timeout = Duration::from_secs(1);
    })
    .await;
    let job = || Job::new().command_timeout(Duration::from_millis(100));
    // Commands swallowed: every job ends with a deadline, or with BrowserUnavailable at
    // once after the circuit breaker has counted the silent browser as down.
    sim.black_hole(Some("Runtime.evaluate"));
    let out = crawl(&pool, 100, job, u64::MAX, |_| {}).await;
    assert_eq!(out.failed(), 100);
    assert!(
        out.errors().all(|e| matches!(
            e.kind(),
            ErrorKind::Timeout(TimeoutKind::Command | TimeoutKind::Create)
                | ErrorKind::BrowserUnavailable
        )),
        "{:?}",
        kinds(&out)
    );
    sim.black_hole(None);
    assert_consistent(&pool, &sim).await;

    // Session opening swallowed: new sessions time out, jobs get a deadline error or,
    // once the breaker opens, BrowserUnavailable at once. Nothing waits forever.
    pool.reconfigure(|c| c.max_uses = 1).unwrap(); // force a new session per job
    sim.black_hole(Some("Target.createTarget"));
    let out = crawl(&pool, 40, job, u64::MAX, |_| {}).await;
    assert!(
        out.errors().all(|e| matches!(
            e.kind(),
            ErrorKind::Timeout(TimeoutKind::Create | TimeoutKind::Wait)
                | ErrorKind::BrowserUnavailable
        )),
        "{:?}",
        kinds(&out)
    );
    assert!(out.failed() > 0, "no job needed a new session");
    sim.black_hole(None);
    pool.reconfigure(|c| c.max_uses = 0).unwrap();
    assert_consistent(&pool, &sim).await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_are_served_or_cut_by_their_deadline() {
    let sim = SimConfig::default().with_reply_delay(Delay::Fixed(Duration::from_millis(20)));
    let (sim, pool) = support::sim_pool(sim, 2, |c| c.sessions_per_shard = 8).await;
    // Slow but within every deadline: all served.
    let out = crawl(&pool, 300, Job::new, u64::MAX, |_| {}).await;
    assert_eq!(out.failed(), 0, "{:?}", kinds(&out));

    // Slower than some command deadlines: each job either succeeds or times out.
    sim.set_reply_delay(Delay::Uniform(
        Duration::from_millis(1),
        Duration::from_millis(80),
    ));
    let out = crawl(
        &pool,
        300,
        || Job::new().command_timeout(Duration::from_millis(40)),
        u64::MAX,
        |_| {},
    )
    .await;
    assert!(
        out.errors()
            .all(|e| e.kind() == ErrorKind::Timeout(TimeoutKind::Command)),
        "{:?}",
        kinds(&out)
    );
    eprintln!(
        "slow replies (1-80 ms, 40 ms deadline): {} of 300 timed out",
        out.failed()
    );
    // About half the replies are slower than the deadline: if none timed out, deadlines
    // never fired; if all did, they cut replies that were in time. With 300 draws either
    // way by chance has odds below 1e-80.
    assert!(
        out.failed() > 0,
        "no reply of up to 80 ms was cut by a 40 ms deadline"
    );
    assert!(
        out.failed() < 300,
        "every job timed out, fast replies included"
    );
    sim.set_reply_delay(Delay::None);
    assert_consistent(&pool, &sim).await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_unknown_events_never_break_a_connection() {
    let sim = SimConfig::default()
        .with_reply_delay(Delay::Uniform(Duration::ZERO, Duration::from_millis(1)));
    let (sim, pool) = support::sim_pool(sim, 2, |c| c.sessions_per_shard = 8).await;
    let mut bursts = 0;
    let out = crawl(&pool, 2_000, Job::new, 50, |_| {
        sim.send_malformed(20);
        sim.send_unknown_events(20);
        bursts += 1;
    })
    .await;
    assert_eq!(out.failed(), 0, "{:?}", kinds(&out));
    // Proof the garbage arrived: of every 20 frames `send_malformed` cycles through, 14
    // are not valid CDP (see `garbage` in tests/transport.rs), on each connection.
    let conns = sim.stats().connections as u64;
    assert_eq!(conns, 2, "one connection per shard");
    let want = bursts * conns * 14;
    let snap = support::metrics_until(&pool, LIMIT, |s| s.counters.malformed_frames >= want).await;
    assert_eq!(
        snap.counters.malformed_frames, want,
        "every malformed frame counted"
    );

    // A malformed reply to a call that waits fails that call at once with a protocol
    // error (not its deadline: an hour here), and nothing else.
    sim.mangle_replies(Some("Runtime.evaluate"));
    let job = || Job::new().command_timeout(Duration::from_secs(3600));
    let err = pool
        .run(job(), async |page| page.evaluate_value("1+1").await)
        .await
        .expect_err("its reply was malformed");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("not valid CDP"), "{err}");
    sim.mangle_replies(None);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.malformed_frames, want + 1);

    let snap = assert_consistent(&pool, &sim).await;
    assert_eq!(snap.counters.reconnects, 0, "a connection was dropped");
    assert_eq!(snap.counters.sessions_crashed, 0);
    eprintln!("garbage: {bursts} bursts of 20 malformed frames + 20 unknown events per connection and session ({want} malformed counted), 0 of 2000 jobs lost");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storms_are_absorbed_by_retries_and_the_pool_refills() {
    let sim = SimConfig::default()
        .with_seed(3)
        .with_crash_delay(Duration::from_millis(1))
        .with_reply_delay(Delay::Uniform(Duration::ZERO, Duration::from_millis(2)));
    let (sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 4;
        c.max_queue = 10_000;
        c.health_interval = Duration::from_millis(50);
    })
    .await;
    let full = 8;
    let mut rng = fastrand::Rng::with_seed(5);
    let mut crashed = 0;
    let out = crawl(
        &pool,
        2_000,
        || Job::new().retries(3),
        40,
        |_| {
            // A storm: three renderers at once.
            let ids = sim.target_ids();
            for _ in 0..3.min(ids.len()) {
                sim.crash_target(&ids[rng.usize(..ids.len())]);
                crashed += 1;
            }
        },
    )
    .await;
    assert_eq!(out.dead_handouts, 0, "a job was handed a dead session");
    assert!(
        out.errors().all(|e| e.kind() == ErrorKind::SessionCrashed),
        "{:?}",
        kinds(&out)
    );
    let snap = support::metrics_until(&pool, Duration::from_secs(20), |s| {
        s.gauges.idle == full && s.gauges.busy == 0
    })
    .await;
    assert_eq!(snap.gauges.idle, full, "the pool refills: {snap:?}");
    let snap = assert_consistent(&pool, &sim).await;
    assert!(snap.counters.sessions_crashed > 0);
    eprintln!(
        "crash storm: {crashed} crashes injected over 2000 jobs, {} sessions crashed, {} retries, {} failed after retries(3)",
        snap.counters.sessions_crashed,
        snap.counters.retries(),
        out.failed()
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_mixed_still_answers_every_request() {
    let sim = SimConfig::default()
        .with_seed(9)
        .with_crash_delay(Duration::from_millis(1));
    let (sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 6;
        c.max_queue = 10_000;
        c.command_timeout = Duration::from_millis(150);
        c.probe_timeout = Duration::from_millis(100);
        c.create_timeout = Duration::from_millis(300);
        c.health_interval = Duration::from_millis(50);
        c.reconnect_base = Duration::from_millis(5);
        c.reconnect_max = Duration::from_millis(50);
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(13);
    let mut injected = [0u32; 6];
    let out = crawl(
        &pool,
        3_000,
        || Job::new().retries(2),
        30,
        |_| {
            // Undo the previous window's hold, then inject one fault.
            sim.black_hole(None);
            let fault = rng.usize(..6);
            injected[fault] += 1;
            match fault {
                0 => sim.drop_connections(),
                1 => {
                    if let Some(id) = rng.choice(sim.target_ids()) {
                        sim.crash_target(&id);
                    }
                }
                2 => sim.black_hole(Some("Runtime.evaluate")),
                3 => sim.set_reply_delay(Delay::Uniform(
                    Duration::ZERO,
                    Duration::from_millis(rng.u64(1..200)),
                )),
                4 => sim.send_malformed(10),
                _ => sim.send_unknown_events(10),
            }
        },
    )
    .await;
    sim.black_hole(None);
    sim.set_reply_delay(Delay::None);
    assert_eq!(out.dead_handouts, 0, "a job was handed a dead session");
    assert!(
        out.errors().all(|e| matches!(
            e.kind(),
            ErrorKind::SessionCrashed
                | ErrorKind::ConnectionClosed
                | ErrorKind::BrowserUnavailable
                | ErrorKind::Timeout(_)
        )),
        "{:?}",
        kinds(&out)
    );
    assert_consistent(&pool, &sim).await;
    eprintln!(
        "0 orphaned targets; mixed faults [drop, crash, black hole, slow, malformed, unknown] = {injected:?} over 3000 jobs: {} failed with an expected error, none unanswered",
        out.failed()
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_targets_of_a_dropped_socket_are_closed() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 4;
        c.reconnect_base = Duration::from_millis(5);
    })
    .await;
    let out = crawl(&pool, 200, Job::new, 50, |_| sim.drop_connections()).await;
    assert!(out.errors().all(|e| e.is_crash()), "{:?}", kinds(&out));
    assert_consistent(&pool, &sim).await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sim.stats().targets, 0, "shutdown leaves no target behind");
}
