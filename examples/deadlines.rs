//! Does a request that waits for a page really give up at its own deadline? Every wait
//! has its own timer wherever the request waits: in its shard's queue, held for its
//! key's politeness, or offered to the other shards by a saturated one (the overflow
//! queues). Here every page is held, so each request waits until its `wait_timeout`,
//! then fails with `Timeout(Wait)`; once the pages come back, requests run again.
//!
//! Runs on the simulated browser: `cargo run --example deadlines`.

use std::time::{Duration, Instant};

use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{Affinity, ErrorKind, Job, Pool, TimeoutKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = SimBrowser::start(SimConfig::default())?;
    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(2)
        .sessions_per_shard(2)
        // A shard with anything waiting offers its movable requests to the others.
        .configure(|c| c.steal_watermark = 0)
        .build()
        .await?;

    // Hold every page of the pool.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.acquire(Job::new()).await?);
    }

    // Eight requests with soft affinity (movable between shards), each with its own wait.
    let asked = Instant::now();
    let waits: Vec<_> = (0..8u64)
        .map(|i| {
            let pool = pool.clone();
            let wait = Duration::from_millis(100 + 50 * i);
            let job = Job::new()
                .affinity(Affinity::soft(format!("site-{i}")))
                .wait_timeout(wait);
            tokio::spawn(async move {
                let result = pool.run(job, async |page| page.title().await).await;
                (wait, asked.elapsed(), result)
            })
        })
        .collect();
    for task in waits {
        let (wait, after, result) = task.await?;
        match result {
            Err(e) if e.kind() == ErrorKind::Timeout(TimeoutKind::Wait) => {
                println!("wait limit {wait:?}: gave up after {after:.0?} ({e})")
            }
            other => println!("wait limit {wait:?}: unexpected {other:?}"),
        }
    }

    // The pages come back: a request runs at once.
    drop(held);
    let title = pool
        .run(Job::new(), async |page| page.title().await)
        .await?;
    println!("after the pages came back: ran, title {title:?}");
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
