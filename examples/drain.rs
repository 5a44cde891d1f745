//! How do I stop a crawl without losing the work already asked for? `pool.drain(deadline)`
//! refuses new requests at once, lets everything queued and running finish (retries
//! included), then shuts the pool down. `pool.idle()` waits for a quiet moment without
//! stopping anything: between two batches, say.
//!
//! Runs on the simulated browser: `cargo run --example drain`.

use std::time::Duration;

use cdpmux::sim::{Delay, SimBrowser, SimConfig};
use cdpmux::{Job, Pool};

// One thread: `yield_now` then lets every spawned task (the jobs, the drain) take its
// first step before `main` goes on.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every command takes ~5 ms, so the jobs queue up behind each other.
    let sim = SimBrowser::start(
        SimConfig::default().with_reply_delay(Delay::Fixed(Duration::from_millis(5))),
    )?;
    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(2)
        .sessions_per_shard(2)
        .build()
        .await?;

    // A first batch; wait for the pool to be quiet, without stopping it.
    let batch = spawn_jobs(&pool, 20);
    pool.idle().await;
    println!("first batch done: {} ok", count_ok(batch).await);

    // A second batch, then drain while it runs.
    let batch = spawn_jobs(&pool, 50);
    tokio::task::yield_now().await; // let every job ask for a page
    let draining = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain(Duration::from_secs(30)).await })
    };
    tokio::task::yield_now().await; // the drain has begun
    if let Err(e) = pool.run(Job::new(), async |_page| Ok(())).await {
        println!("a new request during the drain: {e}");
    }
    draining.await??;
    println!(
        "second batch done: {} ok; the pool is down",
        count_ok(batch).await
    );
    Ok(())
}

type Batch = Vec<tokio::task::JoinHandle<cdpmux::Result<serde_json::Value>>>;

fn spawn_jobs(pool: &Pool, n: usize) -> Batch {
    (0..n)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.evaluate_value(&format!("{i} * 2")).await
                })
                .await
            })
        })
        .collect()
}

async fn count_ok(batch: Batch) -> usize {
    let mut ok = 0;
    for job in batch {
        if matches!(job.await, Ok(Ok(_))) {
            ok += 1;
        }
    }
    ok
}
