//! What does the pool measure, and how do I read it? Runs one workload twice on the same
//! Chromium: once with every tab retired after one job (`max_uses = 1`, as good as a fresh
//! page per job), once with tabs reused. Then prints the pool's metrics as a table, as
//! Prometheus text and as JSON, and the before/after comparison of the two runs.
//!
//! Run with `cargo run --release --example metrics` (needs Chromium:
//! `apt-get install -y chromium`, or set `CDPMUX_CHROME`).

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool, Snapshot};

const JOBS: usize = 40;
const CONCURRENCY: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: JOBS,
        slow_every: 0,
        heavy_every: 0,
        ..SiteConfig::default()
    })?;
    let browser = Launch::new().launch().await?;

    let before = workload(browser.ws_url(), &site, 1).await?;
    let after = workload(browser.ws_url(), &site, 0).await?;

    println!("== with reuse: the table (Display) ==\n{after}");

    println!("== Prometheus text (first lines; serve it from your /metrics handler) ==");
    for line in after.to_prometheus().lines().take(12) {
        println!("{line}");
    }

    println!("\n== JSON (serde) of the counters ==");
    println!("{}", serde_json::to_string_pretty(&after.counters)?);

    let cmp = after.compare(&before);
    println!("\n== before (max_uses = 1) / after (reuse) ==");
    println!(
        "job p50 {:.1} -> {:.1} ms ({:+.0}%), p95 {:.1} -> {:.1} ms, p99 {:.1} -> {:.1} ms ({:+.0}%)",
        cmp.job.p50_before_ms,
        cmp.job.p50_after_ms,
        -100.0 * cmp.job.p50_cut,
        cmp.job.p95_before_ms,
        cmp.job.p95_after_ms,
        cmp.job.p99_before_ms,
        cmp.job.p99_after_ms,
        -100.0 * cmp.job.p99_cut
    );
    println!(
        "reuse rate {:.0}% -> {:.0}%; a 30% cut at p50 and p99 {}",
        100.0 * cmp.reuse_rate_before,
        100.0 * cmp.reuse_rate_after,
        if cmp.target_met {
            "is met"
        } else {
            "is not met"
        }
    );
    browser.shutdown().await?;
    Ok(())
}

/// Navigates to every demo page through a fresh pool on `ws_url` and returns its metrics.
/// `max_uses` 1 retires each tab after one job; 0 keeps tabs.
async fn workload(ws_url: &str, site: &DemoSite, max_uses: u32) -> cdpmux::Result<Snapshot> {
    let pool = Pool::builder()
        .endpoint(ws_url)
        .shards(1)
        .sessions_per_shard(CONCURRENCY)
        .configure(|c| c.max_uses = max_uses)
        .build()
        .await?;
    let urls = site.page_urls();
    for chunk in urls.chunks(CONCURRENCY) {
        let jobs = chunk.iter().cloned().map(|url| {
            let pool = pool.clone();
            async move {
                pool.run(Job::new(), async move |page| {
                    page.goto(&url).await?;
                    page.title().await
                })
                .await
            }
        });
        for title in futures_util::future::join_all(jobs).await {
            title?;
        }
    }
    let snapshot = pool.metrics().await;
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(snapshot)
}
