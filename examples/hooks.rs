//! How do I prepare every pooled page the same way (an init script, a user agent, a
//! viewport), and do something before and after each job? Lifecycle hooks on the pool
//! builder: `on_page_open` runs once per fresh page, `before_job` and `after_job` around
//! each `run` job, all on the shard that owns the page. A hook that fails retires its
//! page; the job, not started yet, gets another one.
//!
//! Run with `cargo run --example hooks` (needs Chromium: `apt-get install -y chromium`,
//! or set `CDPMUX_CHROME`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: 5,
        ..SiteConfig::default()
    })?;
    let jobs_done = Arc::new(AtomicU64::new(0));
    let counted = jobs_done.clone();
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(2)
        .on_page_open(async |page| {
            // Runs in every document the page loads from now on.
            let script = "Object.defineProperty(navigator, 'webdriver', { get: () => false }); \
                          window.__crawler = 'cdpmux-example';";
            page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": script }),
            )
            .await?;
            page.call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await?;
            page.call(
                "Network.setUserAgentOverride",
                json!({ "userAgent": "cdpmux-example/1.0" }),
            )
            .await?;
            page.call(
                "Network.setExtraHTTPHeaders",
                json!({ "headers": { "X-Crawler": "cdpmux-example" } }),
            )
            .await?;
            Ok(())
        })
        .before_job(async |page| {
            // A cheap check that the page still answers before a job gets it.
            page.evaluate_value("1").await.map(|_| ())
        })
        .after_job(async move |_page| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .build()
        .await?;

    for n in 1..=3 {
        let url = site.url(&format!("/p/{n}"));
        let seen = pool
            .run(Job::new(), async move |page| {
                page.goto(&url).await?;
                page.evaluate_value("[window.__crawler, navigator.userAgent, innerWidth]")
                    .await
            })
            .await?;
        println!("job {n} saw {seen}");
    }
    println!("after_job ran {} times", jobs_done.load(Ordering::Relaxed));
    let c = pool.metrics().await.counters;
    println!(
        "hook failures: open {}, before {}, after {}",
        c.hook_failures_open, c.hook_failures_before, c.hook_failures_after
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
