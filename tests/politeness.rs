//! Per-host politeness through the public API, on the simulated browser: a throttled
//! host's jobs start at least its interval apart, and the other hosts' jobs do not wait
//! behind it (no head-of-line blocking in the shard's queue).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdpmux::{Affinity, ErrorKind, Job, Politeness, Pool};

const LIMIT: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_millis(200);

/// Each job's host, start and end.
type Log = Arc<Mutex<Vec<(&'static str, Instant, Instant)>>>;

/// Runs a job of `host` that records when it started and when it ended.
async fn visit(pool: Pool, host: &'static str, log: Log) {
    let job = Job::new().affinity(Affinity::soft(host));
    pool.run(job, async move |page| {
        let started = Instant::now();
        page.evaluate_value("1").await?;
        let ended = Instant::now();
        log.lock().unwrap().push((host, started, ended));
        Ok(())
    })
    .await
    .expect("every job succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hosts_one_throttled_its_starts_are_spaced_and_the_others_do_not_wait() {
    // One shard: every host's requests share one queue, where head-of-line blocking
    // would show. No health round: nothing but the throttled key's own wake-up may
    // start its next job (within its wait).
    let (_sim, pool) = support::sim_pool(cdpmux::sim::SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 4;
        c.health_interval = Duration::ZERO;
        c.wait_timeout = Duration::from_secs(10);
    })
    .await;
    pool.set_politeness(
        "slow.test",
        Politeness::new().max_in_flight(1).interval(INTERVAL),
    )
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = Vec::new();
    // The throttled host's jobs first: if they blocked the queue, everyone else would
    // wait behind them.
    let asked = Instant::now();
    for _ in 0..4 {
        jobs.push(tokio::spawn(visit(pool.clone(), "slow.test", log.clone())));
    }
    tokio::task::yield_now().await;
    for host in ["a.test", "b.test", "c.test"] {
        for _ in 0..5 {
            jobs.push(tokio::spawn(visit(pool.clone(), host, log.clone())));
        }
    }
    tokio::time::timeout(LIMIT, futures_util::future::join_all(jobs))
        .await
        .expect("the jobs end");

    let log = log.lock().unwrap().clone();
    let mut slow: Vec<Instant> = log
        .iter()
        .filter(|(h, _, _)| *h == "slow.test")
        .map(|(_, started, _)| *started)
        .collect();
    slow.sort();
    assert_eq!(slow.len(), 4);
    // The bound the mechanism gives, whatever the threads' scheduling: the k-th start
    // comes at least k-1 intervals after the first could (each start waits for the
    // previous one plus the interval, by the shard's clock, and the jobs were asked for
    // after `asked`), and a job's closure runs after its start. (Each pair's spacing on
    // the shard's own clock is checked in virtual time: src/shard/tests/politeness.rs.)
    for (k, started) in slow.iter().enumerate() {
        let earliest = asked + INTERVAL * k as u32;
        assert!(
            *started >= earliest,
            "throttled start {k} came {:?} after the jobs were asked for",
            *started - asked
        );
    }
    // Every other host's job was done before the throttled host's last start: none
    // waited for the throttled host's turn.
    let last_slow = slow[3];
    for (host, _, ended) in log.iter().filter(|(h, _, _)| *h != "slow.test") {
        assert!(
            *ended < last_slow,
            "a job of {host} waited behind the throttled host"
        );
    }
    let snap = pool.metrics().await;
    assert!(snap.counters.throttled >= 3, "{:?}", snap.counters);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_rule_limits_every_host_and_a_reset_key_gets_it_back() {
    let (_sim, pool) = support::sim_pool(cdpmux::sim::SimConfig::default(), 2, |c| {
        c.sessions_per_shard = 4;
        c.politeness = Politeness::new().max_in_flight(1);
    })
    .await;
    // Hold one job of the host: with one at a time, a second waits until it ends.
    let held = support::hold_session(&pool, Job::new().affinity(Affinity::soft("h.test"))).await;
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(Job::new().affinity(Affinity::soft("h.test")), async |p| {
                p.evaluate_value("1").await
            })
            .await
        })
    };
    // Another host is not held up meanwhile.
    tokio::time::timeout(
        LIMIT,
        pool.run(
            Job::new().affinity(Affinity::soft("other.test")),
            async |p| p.evaluate_value("1").await,
        ),
    )
    .await
    .expect("another host runs at once")
    .unwrap();
    let waiting = support::metrics_until(&pool, LIMIT, |s| s.counters.throttled >= 1).await;
    assert_eq!(waiting.counters.throttled, 1);
    assert!(!second.is_finished());
    let _ = held.release.send(());
    tokio::time::timeout(LIMIT, second)
        .await
        .expect("the second job runs once the first ends")
        .unwrap()
        .unwrap();
    held.task.await.unwrap();

    // Lifting the rule for the host at run time: two at once now.
    pool.set_politeness("h.test", Politeness::new()).unwrap();
    let a = support::hold_session(&pool, Job::new().affinity(Affinity::soft("h.test"))).await;
    let b = tokio::time::timeout(
        LIMIT,
        support::hold_session(&pool, Job::new().affinity(Affinity::soft("h.test"))),
    )
    .await
    .expect("a second job of the host runs while the first does");
    for h in [a, b] {
        let _ = h.release.send(());
        h.task.await.unwrap();
    }
    // And back to the default.
    pool.reset_politeness("h.test").unwrap();
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_and_a_stopped_pool_are_refused() {
    let (_sim, pool) = support::one_shard(1).await;
    let forever = Politeness::new().interval(Duration::from_secs(400 * 24 * 3600));
    let err = pool.set_politeness("k", forever).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("interval"), "{err}");
    let err = pool.reconfigure(|c| c.politeness = forever).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    let err = pool
        .set_politeness("k", Politeness::new().max_in_flight(1))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
}
