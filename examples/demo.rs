//! The main demo: launches headless Chromium, serves a small generated site on
//! 127.0.0.1, and renders its pages through a cdpmux pool, printing what each step cost.
//!
//! Run with `scripts/demo.sh` (installs Chromium if missing) or
//! `cargo run --release --example demo -- [pages]`.

use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(60);
    let site = DemoSite::start(SiteConfig {
        pages,
        ..SiteConfig::default()
    })?;
    println!("demo site: {} ({pages} pages)", site.base_url());

    let t = Instant::now();
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .sessions_per_shard(4)
        .build()
        .await?;
    println!(
        "launched Chromium and {} shards in {:?}",
        pool.shards(),
        t.elapsed()
    );

    // One page first, to show the cost of a cold session against warm ones.
    let first = site.url("/p/0");
    let t = Instant::now();
    let title = pool
        .run(Job::new(), async move |page| {
            page.goto(&first).await?;
            page.title().await
        })
        .await?;
    println!(
        "first page (opens a session): {title:?} in {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let jobs: Vec<_> = site
        .page_urls()
        .into_iter()
        .map(|url| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                // One host here, so no affinity key: spread over both shards.
                let job = Job::new().timeout(Duration::from_secs(30));
                let title = pool
                    .run(job, async move |page| {
                        page.goto(&url).await?;
                        page.title().await
                    })
                    .await?;
                Ok::<_, cdpmux::Error>((title, started.elapsed()))
            })
        })
        .collect();
    let mut ok = 0;
    for (n, job) in jobs.into_iter().enumerate() {
        match job.await? {
            Ok((title, took)) => {
                ok += 1;
                if n < 5 || title != DemoSite::title_of(n) {
                    println!("  /p/{n}: {title:?} in {took:?}");
                }
            }
            Err(e) => println!("  /p/{n}: error: {e}"),
        }
    }
    let elapsed = t.elapsed();
    println!(
        "rendered {ok}/{pages} pages in {elapsed:?} ({:.1} pages/s)",
        ok as f64 / elapsed.as_secs_f64()
    );

    let snap = pool.metrics().await;
    println!(
        "sessions created {}, reused {} (reuse rate {:.1}%)",
        snap.counters.sessions_created,
        snap.counters.sessions_reused,
        100.0 * snap.reuse_rate()
    );
    println!(
        "job time p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; acquire wait p50 {:.2} ms, p99 {:.2} ms",
        snap.job.p50_ms, snap.job.p95_ms, snap.job.p99_ms, snap.acquire_wait.p50_ms, snap.acquire_wait.p99_ms
    );
    println!(
        "navigation command p50 {:.1} ms; session open p50 {:.1} ms",
        snap.command.navigation.p50_ms, snap.session_create.p50_ms
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    println!("shut down: targets closed, Chromium stopped");
    Ok(())
}
