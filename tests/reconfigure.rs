//! Live configuration: limits change under load, invalid values are refused, and the
//! pool follows the new limits.

mod support;

use std::time::Duration;

use cdpmux::sim::{Delay, SimConfig};
use cdpmux::{ErrorKind, Job};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_limit_serves_waiters_at_once() {
    let (_sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 1).await;
    let held = support::hold_session(&pool, Job::new()).await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(Job::new(), async |p| p.evaluate_value("2+3").await)
                .await
        })
    };
    support::metrics_until(&pool, Duration::from_secs(10), |s| s.gauges.waiting == 1).await;

    pool.reconfigure(|c| c.sessions_per_shard = 2).unwrap();
    // Served while the holder still holds the first session.
    let v = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(v, 5);
    held.release.send(()).unwrap();
    held.task.await.unwrap();

    // Lowering retires the excess as sessions come back.
    pool.reconfigure(|c| c.sessions_per_shard = 1).unwrap();
    let s = support::metrics_until(&pool, Duration::from_secs(10), |s| s.gauges.live() == 1).await;
    assert_eq!(s.gauges.live(), 1, "{s:?}");
    assert_eq!(s.counters.sessions_retired, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_are_refused_and_the_old_ones_stay() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |_| {}).await;
    let before = pool.config();
    let err = pool.reconfigure(|c| c.sessions_per_shard = 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("sessions_per_shard"), "{err}");
    let err = pool
        .reconfigure(|c| c.critical_reserve = c.sessions_per_shard)
        .unwrap_err();
    assert!(err.message().contains("critical_reserve"), "{err}");
    assert_eq!(pool.config(), before);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_survive_limits_changing_under_them() {
    let sim = SimConfig::default().with_reply_delay(Delay::Uniform(
        Duration::from_micros(200),
        Duration::from_millis(2),
    ));
    let (_sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 2;
        c.max_queue = 1_000;
    })
    .await;
    let jobs: Vec<_> = (0..1_000u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.evaluate_value(&format!("{i}+1")).await
                })
                .await
            })
        })
        .collect();
    let changes = [8, 1, 4, 0, 3, 16, 2];
    let mut refused = 0;
    for limit in changes {
        tokio::task::yield_now().await;
        match pool.reconfigure(|c| {
            c.sessions_per_shard = limit;
            c.max_frames_per_flush = 1 + limit;
            // The writer's policy flips live too; no frame may be lost either way.
            c.flush_policy = if limit % 2 == 0 {
                cdpmux::cdp::FlushPolicy::adaptive(Duration::from_micros(200))
            } else {
                cdpmux::cdp::FlushPolicy::SelfClocking
            };
        }) {
            Ok(()) => assert_eq!(pool.config().sessions_per_shard, limit),
            Err(e) => {
                assert_eq!(limit, 0);
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                refused += 1;
            }
        }
        support::metrics_until(&pool, Duration::from_secs(10), |s| s.counters.jobs_ok > 0).await;
    }
    assert_eq!(refused, 1);
    for (i, j) in jobs.into_iter().enumerate() {
        let v = tokio::time::timeout(Duration::from_secs(60), j)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap();
        assert_eq!(v, i as u64 + 1);
    }
    let s = support::metrics_until(&pool, Duration::from_secs(10), |s| s.gauges.live() <= 4).await;
    assert_eq!(s.counters.jobs_ok, 1_000);
    assert!(s.gauges.live() <= 4, "at most 2 per shard remain: {s:?}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
