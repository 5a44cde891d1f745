//! Overflow work stealing: a shard that gets every key lends its movable requests to the
//! idle shard; sticky requests never move.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdpmux::sim::{Delay, SimConfig};
use cdpmux::{shard_for, Affinity, Job};

/// Keys that all route to shard 0 of 2.
fn keys_on_shard_zero(n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("host{i}.example"))
        .filter(|k| shard_for(k, 2) == 0)
        .take(n)
        .collect()
}

/// Runs `jobs` jobs with the given affinity constructor; counts where they ran.
async fn skewed_load(sticky: bool) -> ([usize; 2], cdpmux::Snapshot) {
    // Every command takes ~2 ms, so four sessions on one shard cannot keep up.
    let sim = SimConfig::default().with_reply_delay(Delay::Fixed(Duration::from_millis(2)));
    let (_sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 4;
        c.steal_watermark = 2;
    })
    .await;
    let ran_on = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let jobs: Vec<_> = keys_on_shard_zero(400)
        .into_iter()
        .map(|key| {
            let (pool, ran_on) = (pool.clone(), ran_on.clone());
            let affinity = if sticky {
                Affinity::sticky(&key)
            } else {
                Affinity::soft(&key)
            };
            tokio::spawn(async move {
                pool.run(Job::new().affinity(affinity), async move |page| {
                    ran_on[support::current_shard()].fetch_add(1, Ordering::Relaxed);
                    page.evaluate_value("1+1").await
                })
                .await
            })
        })
        .collect();
    for j in jobs {
        let v = tokio::time::timeout(Duration::from_secs(60), j)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap();
        assert_eq!(v, 2);
    }
    let snap = pool.metrics().await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    let ran = [0, 1].map(|i| ran_on[i].load(Ordering::Relaxed));
    (ran, snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_shard_steals_movable_requests() {
    let (ran, snap) = skewed_load(false).await;
    assert_eq!(ran[0] + ran[1], 400);
    assert!(
        ran[1] > 0,
        "shard 1 served none of shard 0's overflow: {ran:?}"
    );
    assert!(
        snap.counters.steals as usize >= ran[1],
        "every job on shard 1 was stolen"
    );
    assert!(snap.counters.overflowed >= snap.counters.steals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_requests_are_never_stolen() {
    let (ran, snap) = skewed_load(true).await;
    assert_eq!(ran, [400, 0]);
    assert_eq!(snap.counters.steals, 0);
    assert_eq!(snap.counters.overflowed, 0);
}
