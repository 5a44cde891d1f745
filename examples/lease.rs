//! When do I take a `Lease` instead of `pool.run`? When the code driving the page is not
//! one closure: a flow of steps spread over your own functions, threads or runtimes.
//! A lease holds one pooled page until it is dropped; every command on it runs on the
//! shard that owns the page.
//!
//! Run with `cargo run --example lease` (needs Chromium: `apt-get install -y chromium`,
//! or set `CDPMUX_CHROME`).

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool, Priority};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: 10,
        ..SiteConfig::default()
    })?;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(2)
        .build()
        .await?;

    // Take a page. The job's wait deadline bounds how long we queue for it.
    let mut lease = pool
        .acquire(
            Job::new()
                .priority(Priority::High)
                .wait_timeout(Duration::from_secs(10)),
        )
        .await?;
    lease.set_command_timeout(Duration::from_secs(15));
    println!("leased a page on shard {}", lease.shard());

    // Step 1: navigate. State stays on this page between steps.
    lease.goto(&site.url("/p/3")).await?;
    lease
        .evaluate_value("sessionStorage.setItem('step', 'one done'); true")
        .await?;

    // Step 2, from another thread and another runtime: a lease is Send.
    let lease = std::thread::spawn(move || -> cdpmux::Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let step = lease
                .evaluate_value("sessionStorage.getItem('step')")
                .await?;
            println!("step 2 (another thread) reads back {step}");
            Ok::<_, cdpmux::Error>(())
        })?;
        Ok(lease)
    })
    .join()
    .map_err(|_| "the step-2 thread panicked")??;

    // Step 3: typed commands and raw ones both work on a lease.
    let typed = lease
        .execute(EvaluateParams::new("document.querySelectorAll('a').length"))
        .await?;
    println!(
        "links on the page (typed command): {:?}",
        typed.result.value
    );
    let raw = lease
        .call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": "document.title", "returnByValue": true }),
        )
        .await?;
    println!("title (raw command): {}", raw["result"]["value"]);

    // Step 4: what a page offers, a lease offers: a pipelined batch, the title, the
    // target id, and event streams (registered before the commands sent after them).
    let mut batch = lease.batch();
    let links = batch.push_raw(
        "Runtime.evaluate",
        serde_json::json!({ "expression": "document.links.length", "returnByValue": true }),
    );
    let url = batch.push(EvaluateParams::new("location.href"));
    let results = batch.run().await;
    println!(
        "batch: {} links at {:?}; title {:?}; target {}",
        results.get(links)?["result"]["value"],
        results.get(url)?.result.value,
        lease.title().await?,
        lease.target_id().await?,
    );
    let load = lease.wait_for_event("Page.loadEventFired");
    lease.goto(&site.url("/p/4")).await?;
    let load = load.wait(Duration::from_secs(15)).await?;
    println!("loaded: {}", load.params_json());

    // Give the page back. Dropping the lease does the same, even during a panic; its
    // event streams end then.
    lease.release();

    // A forgotten lease cannot keep a page forever: `max_hold` bounds the hold. Past
    // it, the pool takes the page back and the lease's calls fail with Timeout(Job).
    let bounded = pool
        .acquire(Job::new().max_hold(Duration::from_millis(300)))
        .await?;
    let mut ends = bounded.events("Page.lifecycleEvent");
    while futures_util::StreamExt::next(&mut ends).await.is_some() {}
    let late = bounded.evaluate_value("1").await;
    println!(
        "after max_hold: {}",
        late.err().map(|e| e.to_string()).unwrap_or_default()
    );
    drop(bounded);

    let snapshot = pool.metrics().await;
    println!(
        "sessions created {}, busy now {}",
        snapshot.counters.sessions_created, snapshot.gauges.busy
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
