//! Many concurrent requests on the simulated browser: everything is served, correctly,
//! and nothing is lost.

mod support;

use std::time::Duration;

use cdpmux::sim::{Delay, SimConfig};
use cdpmux::Job;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_runs_all_complete() {
    const JOBS: u64 = 10_000;
    let sim = SimConfig::default().with_reply_delay(Delay::Uniform(
        Duration::from_micros(100),
        Duration::from_millis(2),
    ));
    let (_sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 32;
        c.max_queue = 10_000;
        c.wait_timeout = Duration::from_secs(120);
    })
    .await;

    let first_uses = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            let (pool, first_uses) = (pool.clone(), first_uses.clone());
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    if page.uses() == 1 {
                        first_uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    page.evaluate_value(&format!("{i}+1")).await
                })
                .await
            })
        })
        .collect();
    let mut sum = 0;
    for (i, job) in jobs.into_iter().enumerate() {
        let value = tokio::time::timeout(Duration::from_secs(120), job)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap();
        assert_eq!(value, i as u64 + 1, "job {i} got another job's answer");
        sum += 1;
    }
    assert_eq!(sum, JOBS);

    let snap = pool.metrics().await;
    assert_eq!(snap.counters.jobs_ok, JOBS);
    assert_eq!(snap.counters.jobs_failed, 0);
    assert_eq!(snap.job.count, JOBS, "one job-time sample per job");
    assert_eq!(
        snap.acquire_wait.count, JOBS,
        "one wait sample per acquisition"
    );
    assert!(snap.counters.sessions_created <= 64, "{:?}", snap.counters);
    assert_eq!(
        first_uses.load(std::sync::atomic::Ordering::Relaxed),
        snap.counters.sessions_created,
        "a job sees uses() == 1 exactly on a fresh page"
    );
    assert_eq!(
        snap.counters.sessions_reused + snap.counters.sessions_created,
        JOBS,
        "every acquisition is a reuse or a first use"
    );
    assert_eq!(snap.gauges.busy, 0);
    assert_eq!(snap.gauges.waiting, 0);
    assert_eq!(pool.load(), [0, 0], "load gauges return to zero");
    println!("{snap:?} reuse rate {:.4}", snap.reuse_rate());
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
