//! How do affinity keys and priorities change where and when my jobs run?
//!
//! 1. Affinity: jobs with the same key (a site, a tenant, a logged-in user) go to the same
//!    shard and, when it is free, the same warm tab; sticky keys always get their tab.
//! 2. Priority: when every tab is busy, waiting jobs are served by class (Critical, High,
//!    Normal, Low), first come first served within a class.
//!
//! Run with `cargo run --example affinity_and_priority` (needs Chromium:
//! `apt-get install -y chromium`, or set `CDPMUX_CHROME`).

use std::sync::Arc;
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Affinity, Job, Pool, Priority};
use tokio::sync::{mpsc, Notify};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: 20,
        slow_every: 0,
        ..SiteConfig::default()
    })?;
    let browser = Launch::new().launch().await?;

    // 1. Affinity, on a pool of 2 shards x 3 tabs.
    let pool = Pool::builder()
        .endpoint(browser.ws_url())
        .shards(2)
        .sessions_per_shard(3)
        .build()
        .await?;
    println!("affinity: key -> (shard, tab); the four keys run at once in each round");
    for round in 0..3 {
        let keyed = [
            ("shop-a", Affinity::soft("shop-a")),
            ("shop-b", Affinity::soft("shop-b")),
            ("user-42", Affinity::sticky("user-42")),
            // From a URL, the key is its host.
            ("from url", Affinity::from_url(&site.url("/p/1"))?),
        ];
        let jobs = keyed.into_iter().map(|(key, affinity)| {
            let url = site.url(&format!("/p/{round}"));
            let pool = pool.clone();
            async move {
                let placed = pool
                    .run(Job::new().affinity(affinity), async move |page| {
                        page.goto(&url).await?;
                        Ok((shard_of_this_thread(), short(page.target_id())))
                    })
                    .await;
                (key, placed)
            }
        });
        for (key, placed) in futures_util::future::join_all(jobs).await {
            let (shard, tab) = placed?;
            println!("  round {round}  {key:<8} -> shard {shard}, tab {tab}");
        }
    }
    let snapshot = pool.metrics().await;
    println!(
        "  affinity hits {}, misses {}",
        snapshot.counters.affinity_hits, snapshot.counters.affinity_misses
    );
    pool.shutdown(Duration::from_secs(5)).await?;

    // 2. Priority, on a pool of a single tab, so everything else has to wait.
    let pool = Pool::builder()
        .endpoint(browser.ws_url())
        .shards(1)
        .sessions_per_shard(1)
        .build()
        .await?;
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    // Occupies the only tab until `release` is notified.
    let blocker = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.run(Job::new(), async move |_page| {
                hold.notified().await;
                Ok(())
            })
            .await
        }
    });
    wait_until(&pool, |busy, _| busy == 1).await;

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let queued = [
        ("low #1", Priority::Low),
        ("normal", Priority::Normal),
        ("low #2", Priority::Low),
        ("critical", Priority::Critical),
        ("high", Priority::High),
    ];
    for (n, (name, priority)) in queued.into_iter().enumerate() {
        let (handle, served) = (pool.clone(), done_tx.clone());
        tokio::spawn(async move {
            // Noted when the job gets the tab, on the shard: the order of service.
            let job = async move |page: &cdpmux::Page| {
                let _ = served.send(name);
                page.evaluate_value("1+1").await
            };
            if let Err(e) = handle.run(Job::new().priority(priority), job).await {
                eprintln!("{name} failed: {e}");
            }
        });
        // Submit in this order: each waits in the queue before the next is sent.
        wait_until(&pool, |_, waiting| waiting == n as u64 + 1).await;
    }
    drop(done_tx);
    println!(
        "priority: submitted low #1, normal, low #2, critical, high while the only tab was busy"
    );
    release.notify_one();
    blocker.await??;
    let mut order = Vec::new();
    while let Some(name) = done_rx.recv().await {
        order.push(name);
    }
    println!("  served in order: {}", order.join(", "));
    pool.shutdown(Duration::from_secs(5)).await?;
    browser.shutdown().await?;
    Ok(())
}

/// Polls the pool's gauges until `ready(busy, waiting)` holds (or 10 s pass).
async fn wait_until(pool: &Pool, ready: impl Fn(u64, u64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let g = pool.metrics().await.gauges;
        if ready(g.busy, g.waiting) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The shard this job runs on.
fn shard_of_this_thread() -> String {
    cdpmux::current_shard().map_or("?".to_owned(), |s| s.to_string())
}

fn short(target_id: &str) -> String {
    target_id.chars().take(8).collect()
}
