//! Autoscaling and the pool-level limits through the public API, on the simulated
//! browser: waiting requests grow the pool, outside work crowding a saturated CPU shrinks
//! it without touching pages in use, a CPU saturated by the pool's own work is climbed on
//! measured throughput (and a growth that lowers it is undone), the page cap, and the
//! low-memory refusal. The CPU and memory readings come from test hooks so that the
//! machine's own load cannot decide the outcome; the real Chromium run under a real CPU
//! hog is in `tests/autoscale_chromium.rs`.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdpmux::sim::SimConfig;
use cdpmux::{Autoscale, ErrorKind, Job, Lease, Pool, ScaleReason};

const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {LIMIT:?}"))
}

fn fast_scaler(min: usize, max: usize) -> Autoscale {
    let mut a = Autoscale::between(min, max);
    a.interval = Duration::from_millis(20);
    a.settle = 2;
    a
}

fn reason(snap: &cdpmux::Snapshot) -> Option<ScaleReason> {
    snap.gauges.scale_reason()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_grow_the_pool_and_outside_cpu_use_shrinks_it_retiring_idle_pages_only() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.autoscale = Some(fast_scaler(1, 6));
    })
    .await;
    pool.inject_cpu_sample(Some(0.1));
    pool.inject_memory_sample(Some(0.3));

    // Six callers want a page each; one page exists. They wait, so the pool grows.
    let mut callers = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move { pool.acquire(Job::new()).await }));
    }
    let mut leases: Vec<Lease> = Vec::new();
    for c in callers {
        leases.push(within("a lease", c).await.unwrap().expect("a lease"));
    }
    let grown = pool.metrics().await;
    assert_eq!(grown.gauges.sessions_target, 6, "{grown:?}");
    assert_eq!(reason(&grown), Some(ScaleReason::Waiting));
    assert!(grown.counters.scale_ups >= 1, "{grown:?}");

    // The CPU is saturated, half of it by work outside the pool: the target falls to
    // the minimum, but pages in use stay.
    pool.inject_outside_cpu_sample(Some(0.5));
    pool.inject_cpu_sample(Some(1.0));
    let shrunk = support::metrics_until(&pool, LIMIT, |s| s.gauges.sessions_target == 1).await;
    assert_eq!(shrunk.gauges.sessions_target, 1, "{shrunk:?}");
    assert_eq!(reason(&shrunk), Some(ScaleReason::Cpu));
    assert_eq!(
        shrunk.gauges.busy, 6,
        "pages in use are never retired: {shrunk:?}"
    );
    for lease in &leases {
        let two = within("a command on a held lease", lease.evaluate_value("1+1")).await;
        assert_eq!(two.unwrap(), serde_json::json!(2));
    }
    assert_eq!(pool.metrics().await.counters.sessions_crashed, 0);

    // Given back, the pages past the target are retired.
    drop(leases);
    let settled = support::metrics_until(&pool, LIMIT, |s| s.gauges.live() <= 1).await;
    assert!(settled.gauges.live() <= 1, "{settled:?}");
    assert_eq!(settled.counters.sessions_retired, 5, "{settled:?}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Callers that each run jobs in a loop until `stop`; a job takes 2 ms × the square of
/// the jobs running at once (a modelled page whose cost grows faster than the pages:
/// past one page, more pages lower throughput). Returns their handles.
fn contended_load(
    pool: &Pool,
    callers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let running = Arc::new(AtomicUsize::new(0));
    (0..callers)
        .map(|_| {
            let (pool, stop, running) = (pool.clone(), stop.clone(), running.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let running = running.clone();
                    pool.run(Job::new(), async move |_page| {
                        let n = running.fetch_add(1, Ordering::Relaxed) as u64 + 1;
                        tokio::time::sleep(Duration::from_millis(2 * n * n)).await;
                        running.fetch_sub(1, Ordering::Relaxed);
                        Ok(())
                    })
                    .await
                    .expect("a job");
                }
            })
        })
        .collect()
}

/// A one-shard pool from 1 to 6 pages on the simulated browser, its machine saturated
/// by its own work (forced readings: CPU 1.0, none of it outside, memory 0.3), so only
/// measured throughput may change its size; `cooldown` samples after a failed probe.
async fn saturated_by_own_work(cooldown: u32) -> (cdpmux::sim::SimBrowser, Pool) {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        let mut a = fast_scaler(1, 6);
        a.interval = Duration::from_millis(50);
        a.cooldown = cooldown;
        c.autoscale = Some(a);
    })
    .await;
    pool.inject_cpu_sample(Some(1.0));
    pool.inject_outside_cpu_sample(Some(0.0));
    pool.inject_memory_sample(Some(0.3));
    (sim, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_saturated_by_own_work_climbs_and_steps_back_when_growth_lowers_throughput() {
    // Once stepped back, it stays there for the rest of the test.
    let (_sim, pool) = saturated_by_own_work(100_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = contended_load(&pool, 8, &stop);

    // Eight callers wait on one page: the climb tries a bigger pool...
    let grown = support::metrics_until(&pool, LIMIT, |s| s.gauges.sessions_target > 1).await;
    assert!(grown.gauges.sessions_target > 1, "{grown:?}");
    assert_eq!(reason(&grown), Some(ScaleReason::Waiting), "{grown:?}");
    // ...measures less throughput after a step (the first windows may still include
    // pages opening, so which step is not fixed), and goes back to the size before it.
    let back =
        support::metrics_until(&pool, LIMIT, |s| reason(s) == Some(ScaleReason::Plateau)).await;
    assert_eq!(reason(&back), Some(ScaleReason::Plateau), "{back:?}");
    assert!(back.gauges.sessions_target < 6, "{back:?}");
    assert_eq!(back.counters.scale_downs, 1, "{back:?}");
    // It holds there through the cooldown: no probe, no other change.
    let ups = back.counters.scale_ups;
    let target = back.gauges.sessions_target;
    for _ in 0..5 {
        let snap = support::metrics_until(&pool, LIMIT, |s| {
            s.counters.jobs_ok > back.counters.jobs_ok + 20
        })
        .await;
        assert_eq!(
            (snap.gauges.sessions_target, snap.counters.scale_ups),
            (target, ups),
            "{snap:?}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    for l in load {
        within("a caller", l).await.unwrap();
    }
    assert_eq!(pool.metrics().await.counters.jobs_failed, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_saturated_by_own_work_grows_while_throughput_grows() {
    let (_sim, pool) = saturated_by_own_work(Autoscale::default().cooldown).await;
    // Each job holds its page 20 ms whatever the pool's size: more pages, more throughput.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..12 {
        let (pool, stop) = (pool.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                pool.run(Job::new(), async |_page| {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(())
                })
                .await
                .expect("a job");
            }
        }));
    }
    let top = support::metrics_until(&pool, LIMIT, |s| s.gauges.sessions_target == 6).await;
    assert_eq!(top.gauges.sessions_target, 6, "{top:?}");
    assert_eq!(reason(&top), Some(ScaleReason::Waiting), "{top:?}");
    assert_eq!(top.counters.scale_downs, 0, "{top:?}");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        within("a caller", l).await.unwrap();
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinning_a_size_turns_the_autoscaler_off() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.autoscale = Some(fast_scaler(1, 8));
    })
    .await;
    pool.inject_outside_cpu_sample(Some(0.5));
    pool.inject_cpu_sample(Some(1.0));
    let low = support::metrics_until(&pool, LIMIT, |s| s.gauges.sessions_target == 1).await;
    assert_eq!(low.gauges.sessions_target, 1, "{low:?}");
    pool.reconfigure(|c| {
        c.autoscale = None;
        c.sessions_per_shard = 5;
    })
    .unwrap();
    // The sampler reports the fixed size as its own; it never writes it back.
    let pinned = support::metrics_until(&pool, LIMIT, |s| s.gauges.sessions_target == 5).await;
    assert_eq!(pinned.gauges.sessions_target, 5, "{pinned:?}");
    assert_eq!(reason(&pinned), Some(ScaleReason::Start));
    assert_eq!(pool.config().sessions_per_shard, 5);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critically_low_memory_refuses_requests_with_overloaded() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.memory_refuse_above = 0.9;
    })
    .await;
    pool.inject_memory_sample(Some(0.97));
    let err = pool.acquire(Job::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(err.is_retryable());
    assert!(err.message().contains("memory"), "{err}");
    let err = pool
        .run(Job::new(), async |_page| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.overloaded, 2, "{snap:?}");
    assert_eq!(snap.gauges.memory_permille, 970);
    assert_eq!(snap.gauges.live(), 0, "no page was opened: {snap:?}");

    pool.inject_memory_sample(Some(0.5));
    let lease = within("a lease", pool.acquire(Job::new())).await.unwrap();
    drop(lease);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cap_bounds_fixed_sizes_and_the_autoscaler() {
    let sim = cdpmux::sim::SimBrowser::start(SimConfig::default()).unwrap();
    let err = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(2)
        .configure(|c| {
            c.sessions_per_shard = 8;
            c.max_pages = 10;
        })
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("max_pages"), "{err}");

    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(2)
        .configure(|c| {
            c.sessions_per_shard = 2;
            c.max_pages = 6;
        })
        .build()
        .await
        .unwrap();
    let err = pool.reconfigure(|c| c.sessions_per_shard = 4).unwrap_err();
    assert!(err.message().contains("max_pages"), "{err}");

    // Autoscaling up to 16 per shard under a cap of 6 pages: 3 per shard at most.
    pool.inject_cpu_sample(Some(0.1));
    pool.reconfigure(|c| c.autoscale = Some(fast_scaler(1, 16)))
        .unwrap();
    let mut callers = Vec::new();
    // Each caller holds its lease until released: which callers get the first pages
    // depends on how they spread over the shards, so none is awaited before that.
    let (release, released) = tokio::sync::watch::channel(false);
    for _ in 0..12 {
        let (pool, mut released) = (pool.clone(), released.clone());
        callers.push(tokio::spawn(async move {
            let lease = pool.acquire(Job::new()).await?;
            let _ = released.wait_for(|r| *r).await;
            drop(lease);
            Ok::<_, cdpmux::Error>(())
        }));
    }
    let capped = support::metrics_until(&pool, LIMIT, |s| {
        s.gauges.sessions_target == 3 && s.gauges.busy == 6
    })
    .await;
    assert_eq!(capped.gauges.sessions_target, 3, "{capped:?}");
    assert_eq!(
        (capped.gauges.busy, capped.gauges.waiting),
        (6, 6),
        "{capped:?}"
    );
    // The leases are given back: the waiting callers get the same pages.
    release.send_replace(true);
    for c in callers {
        within("a lease", c).await.unwrap().expect("a lease");
    }
    let snap = pool.metrics().await;
    assert!(snap.gauges.live() <= 6, "{snap:?}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
