//! Autoscaling and browser recycling against real headless Chromium, through the public
//! API: a CPU hog started by the test shrinks the pool and its end lets it grow again;
//! a 300-page crawl that recycles its browser fails no job and leaves no process or
//! profile behind.
//!
//! Each test calls `support::require_browser()` first: with `CDPMUX_REQUIRE_BROWSER=1` a
//! missing browser fails the test, otherwise the test says SKIPPED and passes.
//!
//! The CPU test reads the machine's CPU (the cgroup's, else `/proc/stat`) and the
//! browser's process tree, as the autoscaler does in production: the hog's processes are
//! outside use, which shrinks the pool. Its second half needs the machine to have CPU to
//! spare once the hog stops, and waits for that (bounded).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::{Autoscale, Job, Pool, Recycle};

/// The bound on each phase.
const PHASE: Duration = Duration::from_secs(120);

/// Taken by each test for its whole run: the tests of this file never overlap. The
/// other test's browser would count as CPU used outside the hog test's pool, and keep
/// it shrunk after the hog stops.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Busy child processes, two per core, until dropped (killed and reaped then, also when
/// the test panics). Processes, not threads: the autoscaler counts this process's own
/// threads as the pool's work, and the hog must register as work outside the pool.
struct Hog {
    children: Vec<std::process::Child>,
}

impl Hog {
    fn start() -> Hog {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut hog = Hog {
            children: Vec::new(),
        };
        for _ in 0..2 * cores {
            let child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("start a CPU hog (sh)");
            hog.children.push(child);
        }
        hog
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_hog_shrinks_the_pool_and_its_end_lets_it_grow_again() {
    if !support::require_browser() {
        return;
    }
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut scaler = Autoscale::between(1, 8);
    scaler.interval = Duration::from_millis(250);
    scaler.settle = 2;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .configure(|c| {
            c.sessions_per_shard = 8;
            c.autoscale = Some(scaler);
        })
        .build()
        .await
        .expect("launch chromium");

    // Callers that keep requests waiting: each job holds its page while the page waits
    // on a browser timer, which costs the CPU next to nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (pool, stop) = (pool.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = pool
                    .run(Job::new(), async |page| {
                        page.evaluate_value("new Promise(r => setTimeout(() => r(1), 100))")
                            .await
                    })
                    .await;
                r.expect("a job under the autoscaler");
            }
        }));
    }

    let hog = Hog::start();
    let down = support::metrics_until(&pool, PHASE, |s| s.gauges.sessions_target < 8).await;
    assert!(
        down.gauges.sessions_target < 8,
        "no scale-down under the hog: {down:?}"
    );
    assert_eq!(down.gauges.reason_cpu, 1, "{down:?}");
    let low = down.gauges.sessions_target;
    drop(hog);

    let up = support::metrics_until(&pool, PHASE, |s| s.gauges.sessions_target > low).await;
    assert!(
        up.gauges.sessions_target > low,
        "no scale-up after the hog stopped (the machine may be busy with other work): {up:?}"
    );
    assert_eq!(up.gauges.reason_waiting, 1, "{up:?}");
    assert!(up.counters.scale_downs >= 1 && up.counters.scale_ups >= 1);

    stop.store(true, Ordering::Relaxed);
    for l in load {
        tokio::time::timeout(PHASE, l).await.unwrap().unwrap();
    }
    let end = pool.metrics().await;
    assert_eq!(end.counters.jobs_failed, 0, "{end:?}");
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// The `--user-data-dir` a browser process was started with.
fn profile_of(pid: u32) -> std::path::PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the browser's cmdline");
    cmdline
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .find_map(|a| a.strip_prefix("--user-data-dir="))
        .map(Into::into)
        .expect("a --user-data-dir flag")
}

/// True while process `pid` exists (a zombie counts: it is not reaped yet).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_during_a_300_page_crawl_fails_no_job_and_leaves_no_process() {
    if !support::require_browser() {
        return;
    }
    let _alone = ONE_AT_A_TIME.lock().await;
    let (base, server) =
        support::serve_html(vec![("/p", "<title>t</title><p>tiny</p>".to_owned())]).await;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .configure(|c| {
            c.sessions_per_shard = 3;
            // Pages are replaced every 5 jobs, so the crawl opens about 60 of them.
            c.max_uses = 5;
            c.health_interval = Duration::from_millis(100);
            c.recycle = Recycle::after_pages(20);
        })
        .build()
        .await
        .expect("launch chromium");
    let first = pool.browser_pids()[0];
    let profile = profile_of(first);
    assert!(profile.exists());

    let mut crawl = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..6 {
        let (pool, base, next) = (pool.clone(), base.clone(), next.clone());
        crawl.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 300 {
                    return results;
                }
                let url = format!("{base}/p?{i}");
                results.push(
                    pool.run(Job::new(), async move |page| {
                        page.goto(&url).await?;
                        page.evaluate_value("document.title").await
                    })
                    .await,
                );
            }
        });
    }
    let mut ok = 0;
    while let Some(results) = tokio::time::timeout(PHASE, crawl.join_next())
        .await
        .expect("the crawl ends")
    {
        for r in results.unwrap() {
            assert_eq!(r.expect("no job fails because of recycling"), "t");
            ok += 1;
        }
    }
    assert_eq!(ok, 300);

    let snap = pool.metrics().await;
    assert!(snap.counters.browsers_recycled >= 1, "{snap:?}");
    assert_eq!(snap.counters.jobs_failed, 0, "{snap:?}");
    assert_eq!(snap.counters.sessions_crashed, 0, "{snap:?}");
    assert_ne!(pool.browser_pids(), vec![first], "a replacement serves now");

    // The first browser drains, then is reaped and its profile removed.
    let deadline = tokio::time::Instant::now() + PHASE;
    while (exists(first) || profile.exists()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !exists(first),
        "the recycled browser {first} is still there"
    );
    assert!(
        !profile.exists(),
        "its profile {} is still there",
        profile.display()
    );

    let last = pool.browser_pids();
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
    for pid in last {
        assert!(!exists(pid), "browser {pid} outlived the pool");
    }
    server.abort();
}
