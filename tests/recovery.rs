//! Recovery on the simulated browser: lost sockets, silent browsers, the circuit
//! breaker, crashes with retries, retirement and warm-up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{ErrorKind, Job, Pool, TimeoutKind};

const LIMIT: Duration = Duration::from_secs(20);

async fn eval(pool: &Pool, job: Job) -> cdpmux::Result<serde_json::Value> {
    pool.run(job, async |page| page.evaluate_value("1+1").await)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_and_nothing_hangs() {
    let (sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 2).await;
    assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);

    // A call in flight when the socket drops fails at once (its deadline is far off).
    sim.black_hole(Some("Runtime.evaluate"));
    let in_flight = {
        let pool = pool.clone();
        tokio::spawn(async move {
            eval(&pool, Job::new().command_timeout(Duration::from_secs(60))).await
        })
    };
    support::metrics_until(&pool, LIMIT, |s| s.gauges.busy == 1).await;
    sim.drop_connections();
    let err = tokio::time::timeout(LIMIT, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is_crash(), "{err:?}");
    sim.black_hole(None);

    // Later jobs succeed on a new socket.
    for _ in 0..5 {
        assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);
    }
    let s = pool.metrics().await;
    assert!(s.counters.reconnects >= 1, "{:?}", s.counters);
    assert_eq!(s.gauges.busy, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_never_answers_gives_deadline_errors() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.create_timeout = Duration::from_millis(200);
    })
    .await;
    sim.black_hole(Some("Target.createTarget"));
    let err = eval(&pool, Job::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Create), "{err}");
    sim.black_hole(None);
    assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);

    sim.black_hole(Some("Runtime.evaluate"));
    let err = eval(
        &pool,
        Job::new().command_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Command));
    sim.black_hole(None);
    assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);
    let s = pool.metrics().await;
    assert_eq!(s.counters.timeouts_create, 1);
    assert_eq!(s.counters.timeouts_command, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_then_closes() {
    let sim = SimBrowser::start(SimConfig::default()).unwrap();
    let target = sim.http_url().trim_start_matches("http://").to_owned();
    let flaky = support::Flaky::start(target).await;
    let pool = Pool::builder()
        .endpoint(flaky.ws_url(&sim.ws_url()))
        .shards(1)
        .configure(|c| {
            c.breaker_threshold = 2;
            c.reconnect_base = Duration::from_millis(300);
            c.reconnect_max = Duration::from_millis(300);
            c.health_interval = Duration::ZERO;
        })
        .build()
        .await
        .unwrap();
    assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);

    flaky.down();
    // Each failure is fast; once the breaker is open, requests fail without trying.
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let err = eval(&pool, Job::new()).await.unwrap_err();
        kinds.push(err.kind());
    }
    assert!(
        kinds
            .iter()
            .skip(1)
            .all(|k| *k == ErrorKind::BrowserUnavailable),
        "{kinds:?}"
    );

    flaky.up();
    // After the backoff the breaker lets a try through, which succeeds and closes it.
    let mut recovered = false;
    for _ in 0..100 {
        match eval(&pool, Job::new()).await {
            Ok(v) => {
                assert_eq!(v, 2);
                recovered = true;
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BrowserUnavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(recovered, "the breaker never closed");
    for _ in 0..3 {
        assert_eq!(eval(&pool, Job::new()).await.unwrap(), 2);
    }
    assert!(pool.metrics().await.counters.reconnects >= 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_run_the_job_again_on_a_fresh_session() {
    let sim = Arc::new(SimBrowser::start(SimConfig::default()).unwrap());
    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(1)
        .configure(|c| c.sessions_per_shard = 2)
        .build()
        .await
        .unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for round in 0..5u32 {
        let (sim, attempts) = (sim.clone(), attempts.clone());
        let v = pool
            .run(Job::new().retries(2), async move |page| {
                // The first attempt of each job crashes its page mid-job.
                if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 * round {
                    sim.crash_target(page.target_id());
                }
                page.evaluate_value("20+22").await
            })
            .await
            .unwrap();
        assert_eq!(v, 42);
    }
    let s = pool.metrics().await;
    assert_eq!(s.counters.retries(), 5);
    assert_eq!(s.counters.sessions_crashed, 5);
    assert_eq!(s.counters.jobs_ok, 5);
    // Without retries the crash reaches the caller.
    let sim2 = sim.clone();
    let err = pool
        .run(Job::new(), async move |page| {
            sim2.crash_target(page.target_id());
            page.evaluate_value("1").await
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionCrashed);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_idle_session_is_replaced_and_never_handed_out() {
    let (sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 3).await;
    // Three sessions, all idle: no job ends before all three hold a page, so the pool
    // must open three (the barrier's wait is bounded by the job deadline).
    let all_in = Arc::new(tokio::sync::Barrier::new(3));
    let jobs: Vec<_> = (0..3)
        .map(|_| {
            let (pool, all_in) = (pool.clone(), all_in.clone());
            tokio::spawn(async move {
                pool.run(Job::new(), async move |p| {
                    p.evaluate_value("1").await?;
                    all_in.wait().await;
                    Ok(p.target_id().to_owned())
                })
                .await
            })
        })
        .collect();
    let mut targets = Vec::new();
    for j in jobs {
        targets.push(j.await.unwrap().unwrap());
    }
    let before = support::metrics_until(&pool, LIMIT, |s| s.gauges.idle == 3).await;
    assert_eq!(before.gauges.idle, 3, "{before:?}");
    let doomed = sim.target_ids()[0].clone();
    sim.crash_target(&doomed);
    // Noticed at once (no job needed) and replaced in the background.
    let after = support::metrics_until(&pool, LIMIT, |s| {
        s.counters.sessions_crashed == 1 && s.gauges.idle == 3
    })
    .await;
    assert_eq!(after.counters.sessions_crashed, 1, "{after:?}");
    assert_eq!(after.gauges.idle, 3);
    assert_eq!(
        after.counters.sessions_created,
        before.counters.sessions_created + 1
    );
    for _ in 0..20 {
        let t = pool
            .run(Job::new(), async |p| Ok(p.target_id().to_owned()))
            .await
            .unwrap();
        assert_ne!(t, doomed, "a crashed session was handed out");
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A page whose renderer dies while the pool is still opening it was nobody's page yet:
/// the waiter it was opened for gets the next one, even with no retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_lost_while_opening_fails_no_waiter() {
    let (sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 1).await;
    // The opening stops at `Inspector.enable`, after the target exists.
    sim.black_hole(Some("Inspector.enable"));
    let job = {
        let pool = pool.clone();
        tokio::spawn(async move { eval(&pool, Job::new().retries(0)).await })
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    while sim.stats().black_holed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the opening never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let opening = sim.target_ids();
    assert_eq!(opening.len(), 1, "{opening:?}");
    sim.black_hole(None);
    sim.crash_target(&opening[0]);

    let answer = tokio::time::timeout(LIMIT, job).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), 2);
    let s = pool.metrics().await;
    assert_eq!(s.counters.session_create_failures, 1, "{:?}", s.counters);
    assert_eq!((s.counters.jobs_failed, s.counters.retries()), (0, 0));
    // The half-opened target is closed, not left behind in the browser.
    assert_eq!(sim.target_ids().len(), 1);
    assert!(!sim.target_ids().contains(&opening[0]));

    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_retire_by_uses_age_and_idleness() {
    // By uses.
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.max_uses = 3;
    })
    .await;
    for _ in 0..9 {
        eval(&pool, Job::new()).await.unwrap();
    }
    let s = pool.metrics().await;
    assert_eq!(s.counters.sessions_created, 3);
    assert_eq!(s.counters.sessions_retired, 3);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();

    // By idleness and age, enforced by the health round without any job.
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.idle_timeout = Duration::from_millis(100);
        c.health_interval = Duration::from_millis(50);
    })
    .await;
    eval(&pool, Job::new()).await.unwrap();
    let s = support::metrics_until(&pool, LIMIT, |s| s.counters.sessions_retired == 1).await;
    assert_eq!(s.counters.sessions_retired, 1);
    assert_eq!(s.gauges.live(), 0);
    // The close is sent as the session is retired; the browser handles it a moment later.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while sim.stats().targets != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sim.stats().targets, 0, "the retired target was closed");
    pool.reconfigure(|c| {
        c.idle_timeout = Duration::ZERO;
        c.max_lifetime = Duration::from_millis(100);
    })
    .unwrap();
    eval(&pool, Job::new()).await.unwrap();
    let s = support::metrics_until(&pool, LIMIT, |s| s.counters.sessions_retired == 2).await;
    assert_eq!(s.counters.sessions_retired, 2);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_keeps_sessions_warm_and_probes_them() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.min_idle = 3;
        c.health_interval = Duration::from_millis(50);
        c.probe_timeout = Duration::from_millis(100);
    })
    .await;
    // No job yet: the health round opens the warm sessions.
    let s = support::metrics_until(&pool, LIMIT, |s| s.gauges.idle == 3).await;
    assert_eq!(s.gauges.idle, 3);
    assert_eq!(s.counters.sessions_created, 3);
    // A probe that gets no answer retires the session; min_idle opens another.
    sim.black_hole(Some("Runtime.evaluate"));
    let s = support::metrics_until(&pool, LIMIT, |s| s.counters.sessions_crashed >= 3).await;
    assert!(s.counters.sessions_crashed >= 3, "{s:?}");
    sim.black_hole(None);
    let s =
        support::metrics_until(&pool, LIMIT, |s| s.gauges.idle == 3 && s.gauges.busy == 0).await;
    assert_eq!(s.gauges.idle, 3);
    assert!(s.counters.sessions_created >= 6);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_browsers_and_avoid_a_dead_one() {
    let a = SimBrowser::start(SimConfig::default().with_seed(1)).unwrap();
    let b = SimBrowser::start(SimConfig::default().with_seed(2)).unwrap();
    let pool = Pool::builder()
        .endpoint(a.ws_url())
        .endpoint(b.http_url()) // resolved through /json/version
        .shards(1)
        .configure(|c| {
            c.sessions_per_shard = 4;
            c.health_interval = Duration::ZERO;
            c.breaker_threshold = 1;
            c.reconnect_base = Duration::from_secs(30);
            c.reconnect_max = Duration::from_secs(30);
        })
        .build()
        .await
        .unwrap();
    // Four concurrent jobs open four sessions: two on each browser.
    let held: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| support::hold_session(&pool, Job::new())))
            .await;
    assert_eq!((a.stats().targets, b.stats().targets), (2, 2));
    for h in held {
        h.release.send(()).unwrap();
        h.task.await.unwrap();
    }
    // Browser b goes away: its sessions die, and new ones open on a only.
    drop(b);
    // Replacements open in the background: one tries b, fails and marks it down.
    let s = support::metrics_until(&pool, LIMIT, |s| {
        s.counters.sessions_crashed == 2 && s.gauges.creating == 0 && s.gauges.idle == 4
    })
    .await;
    assert_eq!(s.counters.sessions_crashed, 2, "{:?}", s.counters);
    assert_eq!(
        s.gauges.idle, 4,
        "replaced on the live browser: {:?}",
        s.gauges
    );
    let held: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| support::hold_session(&pool, Job::new())))
            .await;
    assert_eq!(
        a.stats().targets,
        4,
        "every new session on the live browser"
    );
    for h in held {
        h.release.send(()).unwrap();
        h.task.await.unwrap();
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Awaits a spawned request, which must be answered within [`LIMIT`] (a hang fails).
async fn answer<T: std::fmt::Debug>(
    what: &str,
    task: tokio::task::JoinHandle<cdpmux::Result<T>>,
) -> cdpmux::Result<T> {
    tokio::time::timeout(LIMIT, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
        .expect("the request's task")
}

fn assert_internal<T: std::fmt::Debug>(what: &str, r: cdpmux::Result<T>) {
    let err = r.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::Internal, "{what}: {err}");
    assert!(!err.is_retryable(), "{what}");
    assert!(err.to_string().contains("shard 0"), "{what}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_panics_fails_every_request_with_internal_and_shuts_down() {
    let (sim, pool) = support::one_shard(2).await;
    // Every deadline is an hour away: only the panic can end these requests in time.
    let hour = Duration::from_secs(3600);
    let patient = move || {
        Job::new()
            .wait_timeout(hour)
            .timeout(hour)
            .command_timeout(hour)
    };
    sim.black_hole(Some("Runtime.evaluate"));

    // A job in flight on one session; a lease command in flight on the other.
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { eval(&pool, patient()).await })
    };
    let mut lease = tokio::time::timeout(LIMIT, pool.acquire(patient()))
        .await
        .expect("acquire answers in time")
        .expect("a lease");
    lease.set_command_timeout(hour);
    let lease = Arc::new(lease);
    let leased_call = {
        let lease = lease.clone();
        tokio::spawn(async move { lease.evaluate_value("2+2").await })
    };
    // Both sessions out: a job and an acquire wait.
    let queued_run = {
        let pool = pool.clone();
        tokio::spawn(async move { eval(&pool, patient()).await })
    };
    let queued_acquire = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(patient()).await.map(drop) })
    };
    for _ in 0..2_000 {
        if sim.stats().black_holed == 2 && pool.load()[0] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.stats().black_holed, 2, "both calls reached the browser");
    assert_eq!(
        pool.load(),
        [3],
        "three requests unanswered (the lease's is answered)"
    );

    pool.inject_shard_panic(0);
    assert_internal("the running job", answer("the running job", running).await);
    assert_internal(
        "the lease's call",
        answer("the lease's call", leased_call).await,
    );
    assert_internal("the queued job", answer("the queued job", queued_run).await);
    assert_internal(
        "the queued acquire",
        answer("the queued acquire", queued_acquire).await,
    );

    // Requests sent to the dead shard later fail at once, the same way.
    let later = {
        let pool = pool.clone();
        tokio::spawn(async move { eval(&pool, patient()).await })
    };
    assert_internal("a later job", answer("a later job", later).await);
    let later_call = {
        let lease = lease.clone();
        tokio::spawn(async move { lease.evaluate_value("3+3").await })
    };
    assert_internal(
        "a later lease call",
        answer("a later lease call", later_call).await,
    );

    drop(lease);
    tokio::time::timeout(LIMIT, pool.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown returns with a dead shard")
        .expect("shutdown succeeds");
}
