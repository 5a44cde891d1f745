//! Affinity: soft keys prefer their last session and wait for it briefly; sticky keys
//! always get it; the per-shard map stays bounded and expires.

mod support;

use std::time::Duration;

use cdpmux::sim::SimConfig;
use cdpmux::{Affinity, Job, Pool};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);

async fn target_of(pool: &Pool, job: Job) -> String {
    pool.run(job, async |p| {
        p.evaluate_value("1").await?;
        Ok(p.target_id().to_owned())
    })
    .await
    .unwrap()
}

/// Holds the session of `key` busy until the sender fires; returns its target id.
async fn hold(
    pool: &Pool,
    affinity: Affinity,
) -> (oneshot::Sender<()>, String, tokio::task::JoinHandle<()>) {
    let held = support::hold_session(pool, Job::new().affinity(affinity)).await;
    (held.release, held.target, held.task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keeps_its_session() {
    let (_sim, pool) =
        support::sim_pool(SimConfig::default(), 1, |c| c.sessions_per_shard = 4).await;
    // Warm four sessions so there is a choice.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { target_of(&pool, Job::new()).await })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let first = target_of(&pool, Job::new().affinity(Affinity::soft("a.example"))).await;
    for _ in 0..5 {
        // Unkeyed work in between takes the most recently used idle session...
        target_of(&pool, Job::new()).await;
        // ...yet the key goes back to its own.
        assert_eq!(
            target_of(&pool, Job::new().affinity(Affinity::soft("a.example"))).await,
            first
        );
    }
    let s = pool.metrics().await;
    assert_eq!(s.counters.affinity_hits, 5);
    assert_eq!(s.counters.affinity_misses, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_affinity_waits_briefly_then_rebinds() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.affinity_wait = Duration::from_millis(100);
    })
    .await;
    let key = Affinity::soft("shop.example");
    let (release, held_target, holder) = hold(&pool, key.clone()).await;
    // Its session is busy: after the short wait, another session serves it.
    let other = target_of(&pool, Job::new().affinity(key.clone())).await;
    assert_ne!(other, held_target);
    release.send(()).unwrap();
    holder.await.unwrap();
    // The key is now bound to the session it used last.
    assert_eq!(target_of(&pool, Job::new().affinity(key)).await, other);
    let s = pool.metrics().await;
    assert_eq!(s.counters.affinity_misses, 2, "first use and the rebind");
    assert_eq!(s.counters.affinity_hits, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_affinity_waits_for_its_own_session() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 3;
        c.affinity_wait = Duration::from_millis(10);
    })
    .await;
    let key = Affinity::sticky("user-42");
    let (release, held_target, holder) = hold(&pool, key.clone()).await;
    let waiter = {
        let (pool, key) = (pool.clone(), key.clone());
        tokio::spawn(async move { target_of(&pool, Job::new().affinity(key)).await })
    };
    // It waits although other sessions could be opened.
    let s = support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 1).await;
    assert_eq!(s.gauges.waiting, 1);
    tokio::time::sleep(Duration::from_millis(50)).await; // well past affinity_wait
    assert!(
        !waiter.is_finished(),
        "a sticky request must not move to another session"
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, waiter).await.unwrap().unwrap(),
        held_target
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_stays_bounded_under_a_hundred_thousand_keys() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 2, |c| {
        c.sessions_per_shard = 16;
        c.affinity_capacity = 500;
        c.max_queue = 100_000;
    })
    .await;
    const KEYS: usize = 100_000;
    const CONCURRENCY: usize = 256;
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..KEYS).step_by(CONCURRENCY) {
                let job = Job::new().affinity(Affinity::soft(format!("host{i}.example")));
                pool.run(job, async |_p| Ok(())).await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    let s = pool.metrics().await;
    assert_eq!(s.counters.jobs_ok, KEYS as u64);
    assert!(
        s.gauges.affinity_keys <= 2 * 500,
        "{}",
        s.gauges.affinity_keys
    );
    assert_eq!(s.counters.affinity_misses, KEYS as u64, "every key was new");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_after_their_ttl() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.affinity_ttl = Duration::from_millis(100);
        c.health_interval = Duration::from_millis(50);
    })
    .await;
    for i in 0..10 {
        target_of(&pool, Job::new().affinity(Affinity::soft(format!("k{i}")))).await;
    }
    assert!(pool.metrics().await.gauges.affinity_keys > 0);
    let s = support::metrics_until(&pool, LIMIT, |s| s.gauges.affinity_keys == 0).await;
    assert_eq!(s.gauges.affinity_keys, 0);
    // An expired key is a miss again.
    target_of(&pool, Job::new().affinity(Affinity::soft("k0"))).await;
    assert_eq!(pool.metrics().await.counters.affinity_misses, 11);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
