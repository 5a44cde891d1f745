//! The wait queue through the public API, on the simulated browser: priority order,
//! FIFO within a class, the critical reserve, the bound and the wait deadline.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::sim::SimConfig;
use cdpmux::{ErrorKind, Job, Pool, Priority, TimeoutKind};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);

/// Occupies one session until the returned sender fires (or is dropped).
async fn block_one_session(
    pool: &Pool,
    job: Job,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let held = support::hold_session(pool, job).await;
    (held.release, held.task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_by_priority_then_fifo() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.aging = Duration::ZERO;
    })
    .await;
    let (release, blocker) = block_one_session(&pool, Job::new()).await;

    let order = Arc::new(Mutex::new(Vec::new()));
    let submitted = [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("critical-1", Priority::Critical),
        ("low-2", Priority::Low),
        ("high-1", Priority::High),
        ("normal-2", Priority::Normal),
        ("critical-2", Priority::Critical),
    ];
    let jobs: Vec<_> = submitted
        .iter()
        .map(|(name, priority)| {
            let (pool, order, name, priority) =
                (pool.clone(), order.clone(), name.to_string(), *priority);
            async move {
                pool.run(Job::new().priority(priority), async move |_page| {
                    order.lock().unwrap().push(name.clone());
                    Ok(())
                })
                .await
            }
        })
        .collect();
    // join_all polls its futures in order on the first poll: they enqueue in order.
    let all = tokio::spawn(futures_util::future::join_all(jobs));
    let snap = support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 7).await;
    assert_eq!(snap.gauges.waiting, 7, "all jobs queued behind the blocker");
    assert_eq!(snap.waiting(Priority::Low), 2);

    release.send(()).unwrap();
    for r in tokio::time::timeout(LIMIT, all).await.unwrap().unwrap() {
        r.unwrap();
    }
    blocker.await.unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        [
            "critical-1",
            "critical-2",
            "high-1",
            "normal-1",
            "normal-2",
            "low-1",
            "low-2"
        ]
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.max_queue = 2;
    })
    .await;
    let (release, blocker) = block_one_session(&pool, Job::new()).await;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(Job::new(), async |_p| Ok(())).await })
        })
        .collect();
    support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 2).await;

    let refused = pool.run(Job::new(), async |_p| Ok(())).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::QueueFull);
    assert!(refused.message().contains("max_queue"), "{refused}");
    let refused = pool.acquire(Job::new()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::QueueFull);

    release.send(()).unwrap();
    for w in waiting {
        tokio::time::timeout(LIMIT, w)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    blocker.await.unwrap();
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.queue_full, 2);
    assert_eq!(snap.counters.jobs_ok, 3);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_deadline_fails_the_waiter() {
    let (_sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 1).await;
    let (release, blocker) = block_one_session(&pool, Job::new()).await;

    let err = pool
        .run(
            Job::new().wait_timeout(Duration::from_millis(100)),
            async |_p| Ok(()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Wait));
    let err = pool
        .acquire(Job::new().wait_timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Wait));
    // The whole-job deadline also bounds the wait, and says so.
    let err = pool
        .run(Job::new().timeout(Duration::from_millis(100)), async |_p| {
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Job));

    release.send(()).unwrap();
    blocker.await.unwrap();
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.timeouts_wait, 2);
    assert_eq!(snap.counters.timeouts_job, 1);
    assert_eq!(snap.gauges.waiting, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critical_reserve_is_for_critical_only() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.critical_reserve = 1;
    })
    .await;
    let (release, blocker) = block_one_session(&pool, Job::new()).await;

    // One session is free, but it is the reserve: a normal job may not take it...
    let err = pool
        .run(
            Job::new().wait_timeout(Duration::from_millis(150)),
            async |_p| Ok(()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Wait));
    // ...and a critical one may.
    let v = pool
        .run(Job::new().priority(Priority::Critical), async |page| {
            page.evaluate_value("20+22").await
        })
        .await
        .unwrap();
    assert_eq!(v, 42);

    release.send(()).unwrap();
    blocker.await.unwrap();
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_everyone() {
    let (_sim, pool) =
        support::sim_pool(SimConfig::default(), 2, |c| c.sessions_per_shard = 1).await;
    let (release, blocker) =
        block_one_session(&pool, Job::new().affinity(cdpmux::Affinity::sticky("a"))).await;
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(
                    Job::new().affinity(cdpmux::Affinity::sticky("a")),
                    async |_p| Ok(()),
                )
                .await
            })
        })
        .collect();
    support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 20).await;
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown(Duration::from_secs(5)).await })
    };
    for w in waiting {
        let err = tokio::time::timeout(LIMIT, w)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Shutdown);
    }
    // New requests are refused at once.
    let err = pool.run(Job::new(), async |_p| Ok(())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
    // The running job gets its grace period and finishes.
    release.send(()).unwrap();
    blocker.await.unwrap();
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A lease held when shutdown starts keeps working through the grace period, and giving
/// it back ends the shutdown at once instead of at the end of the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_at_shutdown_works_through_the_grace_and_ends_it() {
    let (_sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 1).await;
    let lease = pool.acquire(Job::new()).await.unwrap();
    let shutdown = {
        let pool = pool.clone();
        // Far longer than LIMIT: only the lease's return can end it in time.
        tokio::spawn(async move { pool.shutdown(Duration::from_secs(600)).await })
    };
    // Once new requests are refused, shutdown has begun.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match pool.run(Job::new(), async |_p| Ok(())).await {
            Err(e) if e.kind() == ErrorKind::Shutdown => break,
            _ => assert!(tokio::time::Instant::now() < deadline, "never refused"),
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        assert_eq!(lease.evaluate_value("6*7").await.unwrap(), 42);
    }
    drop(lease);
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("shutdown waited out its grace although the lease came back")
        .unwrap()
        .unwrap();
}
