//! Callers that give up at any point leak nothing: after a storm of dropped `run` and
//! `acquire` futures, every session is idle again and the browser holds exactly the
//! pool's sessions.

mod support;

use std::time::Duration;

use cdpmux::sim::{Delay, SimConfig};
use cdpmux::{ErrorKind, Job, TimeoutKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callers_leave_no_session_behind() {
    let sim = SimConfig::default()
        .with_seed(7)
        .with_reply_delay(Delay::Uniform(Duration::ZERO, Duration::from_millis(3)));
    let (sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 4;
        c.max_queue = 10_000;
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(11);
    let mut tasks = Vec::new();
    for i in 0..2_000u64 {
        let pool = pool.clone();
        // Give up after 0-6 ms: before queueing, while waiting, mid-command, or never.
        let patience = Duration::from_micros(rng.u64(0..6_000));
        let kind = rng.u8(0..3);
        tasks.push(tokio::spawn(async move {
            match kind {
                0 => {
                    let run = pool.run(Job::new(), async move |page| {
                        page.evaluate_value(&format!("{i}+0")).await?;
                        page.evaluate_value("1+1").await
                    });
                    tokio::time::timeout(patience, run).await.is_err()
                }
                1 => {
                    let acquire = async {
                        let lease = pool.acquire(Job::new()).await?;
                        lease.evaluate_value("2+2").await
                    };
                    tokio::time::timeout(patience, acquire).await.is_err()
                }
                _ => {
                    // Patient ones must always succeed.
                    let v = pool
                        .run(Job::new(), async move |page| {
                            page.evaluate_value(&format!("{i}+1")).await
                        })
                        .await
                        .expect("a patient job succeeds");
                    assert_eq!(v, i + 1);
                    false
                }
            }
        }));
    }
    let mut gave_up = 0;
    for t in tasks {
        gave_up += tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("bounded")
            .unwrap() as usize;
    }
    // The storm really cancelled callers mid-way (not all, not none).
    assert!(gave_up > 100 && gave_up < 1_400, "gave up: {gave_up}");
    // Interrupted sessions are being stopped; wait for them to come back.
    let snap = support::metrics_until(&pool, Duration::from_secs(20), |s| {
        s.gauges.busy == 0 && s.gauges.creating == 0 && s.gauges.waiting == 0
    })
    .await;
    assert_eq!(snap.gauges.busy, 0, "{snap:?}");
    assert_eq!(snap.gauges.waiting, 0);
    assert!(snap.gauges.idle <= 8, "never more than the limit: {snap:?}");
    support::assert_targets_match_sessions(&pool, &sim).await;
    assert_eq!(pool.load(), [0, 0]);

    // And the pool still serves.
    let v = pool
        .run(Job::new(), async |page| page.evaluate_value("40+2").await)
        .await
        .unwrap();
    assert_eq!(v, 42);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sim.stats().targets, 0, "shutdown closes every target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_is_cancelled_and_its_page_reused() {
    let (sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 1).await;
    sim.black_hole(Some("Runtime.evaluate"));
    let err = pool
        .run(
            Job::new().timeout(Duration::from_millis(200)),
            async |page| page.evaluate_value("1+1").await,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Job));
    sim.black_hole(None);
    // The page was stopped and kept: the next job reuses it.
    let v = pool
        .run(Job::new(), async |page| page.evaluate_value("1+2").await)
        .await
        .unwrap();
    assert_eq!(v, 3);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.sessions_created, 1);
    assert_eq!(snap.counters.sessions_reused, 1);
    assert_eq!(snap.counters.timeouts_job, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
