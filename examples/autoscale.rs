//! How do I let the pool size itself, and retire its browser now and then?
//!
//! A crawl of the demo site on a pool that starts at 2 pages per shard and may grow to
//! 12 while requests wait and more pages add throughput (on a CPU the browser saturates
//! by itself, it probes a size up or down and keeps it only if throughput paid for the
//! change in pages; it shrinks when other work crowds the CPU or memory is short), with
//! its browser replaced after 20 pages opened (pages are replaced every 5 jobs, so that
//! happens during the crawl). After each batch it prints the autoscaler's target, why it
//! last changed, and the browsers recycled so far. On a machine whose CPU is busy with
//! other work the pool stays small and the crawl is slow: requests wait (for up to
//! `wait_timeout` and `job_timeout`, set long here) instead of piling pages on a
//! saturated CPU.
//!
//! Run with `cargo run --release --example autoscale` (needs Chromium:
//! `apt-get install -y chromium`, or set `CDPMUX_CHROME`).

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Autoscale, Job, Pool, Recycle, ScaleReason};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig::default())?;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .configure(|c| {
            c.sessions_per_shard = 2; // the starting size
            c.autoscale = Some(Autoscale::between(1, 12));
            c.max_pages = 20; // never more than 20 pages in all
            c.max_uses = 5;
            c.recycle = Recycle::after_pages(20);
            c.wait_timeout = Duration::from_secs(600);
            c.job_timeout = Duration::from_secs(600); // counts the wait too
        })
        .build()
        .await?;

    for batch in 0..5 {
        let jobs = (0..40).map(|i| {
            let pool = pool.clone();
            let url = site.url(&format!("/p/{}", (batch * 40 + i) % site.config().pages));
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.goto(&url).await?;
                    page.title().await
                })
                .await
            })
        });
        let mut failed = 0;
        for job in futures_util::future::join_all(jobs).await {
            match job {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    failed += 1;
                    eprintln!("  failed: {e}");
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("  panicked: {e}");
                }
            }
        }
        let m = pool.metrics().await;
        let g = &m.gauges;
        let reason = match g.scale_reason() {
            Some(ScaleReason::Waiting) => "requests waiting",
            Some(ScaleReason::Cpu) => "cpu crowded by other work",
            Some(ScaleReason::Memory) => "memory short",
            Some(ScaleReason::Idle) => "pages idle",
            Some(ScaleReason::Limit) => "a limit",
            Some(ScaleReason::Plateau) => "more pages did not pay",
            _ => "start",
        };
        println!(
            "batch {batch}: 40 pages, {failed} failed; target {} per shard ({reason}), {} pages open, {} browsers recycled, memory {:.1}%",
            g.sessions_target,
            g.live() + g.creating,
            m.counters.browsers_recycled,
            g.memory_permille as f64 / 10.0,
        );
    }
    pool.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}
