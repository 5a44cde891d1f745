//! How do I keep my crawler polite to each host without slowing the others down?
//!
//! Jobs keyed by host (`Affinity::from_url`) obey a per-host rule: at most so many at
//! once, and at least so long between two starts. One host gets a stricter rule at run
//! time (as a crawler would after reading its robots.txt `Crawl-delay`); its jobs wait
//! their turn beside the queue, so the other hosts' jobs never wait behind them.
//!
//! Run with `cargo run --example politeness` (the simulated browser: no Chromium needed).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{Affinity, Job, Politeness, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = SimBrowser::start(SimConfig::default())?;
    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(1)
        .sessions_per_shard(4)
        // Every host: at most 2 pages at once.
        .configure(|c| c.politeness = Politeness::new().max_in_flight(2))
        .build()
        .await?;
    // One host asked for 1 page every 250 ms.
    pool.set_politeness(
        "slow.example",
        Politeness::new()
            .max_in_flight(1)
            .interval(Duration::from_millis(250)),
    )?;

    let begin = Instant::now();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = Vec::new();
    for host in ["slow.example", "a.example", "b.example"] {
        for n in 0..4 {
            let url = format!("https://{host}/page/{n}");
            let job = Job::new().affinity(Affinity::from_url(&url)?);
            let (pool, starts) = (pool.clone(), starts.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(job, async move |page| {
                    starts.lock().unwrap().push((begin.elapsed(), url.clone()));
                    page.evaluate_value("1 + 1").await
                })
                .await
            }));
        }
    }
    for job in jobs {
        job.await??;
    }

    println!("start (ms)  url");
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    for (at, url) in starts {
        println!("{:>10}  {url}", at.as_millis());
    }
    let snap = pool.metrics().await;
    println!(
        "\n{} requests waited for their host's turn (throttled_total)",
        snap.counters.throttled
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
