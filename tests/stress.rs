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

/// Peak resident memory of this test process (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_in_four_classes_are_served_fifo_per_class_and_shard() {
    use std::future::Future;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Poll;

    use cdpmux::Priority;

    const REQUESTS: u64 = 10_000;
    let sim = SimConfig::default().with_reply_delay(Delay::Uniform(
        Duration::from_micros(100),
        Duration::from_millis(1),
    ));
    let (_sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 32; // 64 sessions in all
        c.max_queue = 10_000;
        c.wait_timeout = Duration::from_secs(120);
        // No stealing and no hand-off line (which serves the pool's lines as one queue,
        // in arrival order): a moved request would start on a shard it was not queued
        // on, and the order checked below is the order of each shard's own queue.
        c.steal_watermark = 1_000_000;
        c.lease_handoff = false;
    })
    .await;

    // (shard, class, submission number, start number) per request, recorded in the job.
    let started = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Vec::with_capacity(REQUESTS as usize)));
    let mut handles = Vec::with_capacity(REQUESTS as usize);
    let submitted_at = tokio::time::Instant::now();
    // One submitter, in order: each request is polled once, which sends it to its
    // shard's inbox, before the next is made; so inbox order is submission order.
    for seq in 0..REQUESTS {
        let class = Priority::ALL[(seq % 4) as usize];
        let (pool, started, log) = (pool.clone(), started.clone(), log.clone());
        let mut run = Box::pin(async move {
            pool.run(Job::new().priority(class), async move |page| {
                let order = started.fetch_add(1, Ordering::SeqCst);
                log.lock()
                    .unwrap()
                    .push((support::current_shard(), class, seq, order));
                let v = page.evaluate_value(&format!("{seq}+1")).await?;
                Ok((v, tokio::time::Instant::now()))
            })
            .await
        });
        std::future::poll_fn(|cx| {
            assert!(
                run.as_mut().poll(cx).is_pending(),
                "answered before queueing"
            );
            Poll::Ready(())
        })
        .await;
        handles.push((seq, class, tokio::spawn(run)));
    }

    let mut worst = [Duration::ZERO; 4];
    for (seq, class, handle) in handles {
        let (value, done) = tokio::time::timeout(Duration::from_secs(120), handle)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap_or_else(|e| panic!("request {seq} ({class:?}) failed: {e}"));
        assert_eq!(value, seq + 1, "request {seq} got another's answer");
        let waited = done - submitted_at;
        worst[class.index()] = worst[class.index()].max(waited);
    }

    let mut log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.len() as u64, REQUESTS, "every request ran exactly once");
    log.sort_by_key(|&(_, _, _, order)| order);
    let mut per_shard = [0u64; 2];
    for (shard, count) in per_shard.iter_mut().enumerate() {
        for class in Priority::ALL {
            let seqs: Vec<u64> = log
                .iter()
                .filter(|&&(s, c, _, _)| s == shard && c == class)
                .map(|&(_, _, seq, _)| seq)
                .collect();
            *count += seqs.len() as u64;
            if let Some(w) = seqs.windows(2).find(|w| w[0] > w[1]) {
                panic!(
                    "shard {shard}, {class:?}: request {} started before earlier request {}",
                    w[1], w[0]
                );
            }
        }
    }
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    let snap = pool.metrics().await;
    assert_eq!(snap.counters.jobs_ok, REQUESTS);
    assert_eq!(snap.counters.steals, 0);
    assert!(snap.counters.sessions_created <= 64, "{:?}", snap.counters);
    assert_eq!((snap.gauges.busy, snap.gauges.waiting), (0, 0));
    assert_eq!(pool.load(), [0, 0]);
    eprintln!(
        "10,000 requests, 4 classes, 64 sessions, 2 shards: per shard {per_shard:?}, \
         {} sessions opened, acquire wait p50 {:.1} ms p99 {:.1} ms max {:.1} ms; completed by (Low, Normal, High, Critical) {worst:?}; \
         peak RSS of the test process (pool, simulated browser and 10,000 tasks) {:.1} MiB",
        snap.counters.sessions_created,
        snap.acquire_wait.p50_ms,
        snap.acquire_wait.p99_ms,
        snap.acquire_wait.max_ms,
        peak_rss_mib()
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_on_chromium_are_all_served() {
    if !support::require_browser() {
        return;
    }
    const REQUESTS: u64 = 1_000;
    let pool = cdpmux::Pool::builder()
        .launch(cdpmux::browser::Launch::new())
        .shards(2)
        .sessions_per_shard(8)
        .configure(|c| {
            c.max_queue = 2_000;
            c.wait_timeout = Duration::from_secs(120);
        })
        .build()
        .await
        .expect("launch Chromium");
    let jobs: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.evaluate_value(&format!("{i}*2")).await
                })
                .await
            })
        })
        .collect();
    for (i, job) in jobs.into_iter().enumerate() {
        let v = tokio::time::timeout(Duration::from_secs(120), job)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(v, i as u64 * 2);
    }
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.jobs_ok, REQUESTS);
    assert!(snap.counters.sessions_created <= 16, "{:?}", snap.counters);
    assert_eq!((snap.gauges.busy, snap.gauges.waiting), (0, 0));
    eprintln!(
        "Chromium: 1,000 concurrent requests on 16 sessions: all served, acquire wait p99 {:.1} ms, job p99 {:.1} ms",
        snap.acquire_wait.p99_ms, snap.job.p99_ms
    );
    let pids = pool.browser_pids();
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    for pid in pids {
        assert!(
            support::group_processes(pid, "").is_empty(),
            "{pid} left processes"
        );
    }
}
