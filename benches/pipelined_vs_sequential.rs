//! Does `page.batch()` pay? On real Chromium, 10 `Runtime.evaluate` commands on one page,
//! one at a time against one pipelined batch, interleaved in one run. Then the writer's
//! coalescing: frames per socket flush with 64 busy pages on one shard.
//!
//! `cargo bench --bench pipelined_vs_sequential` (`CDPMUX_BENCH_QUICK=1` for a short run).

use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::{Job, Pool};
use hdrhistogram::Histogram;

fn quick() -> bool {
    std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> cdpmux::Result<()> {
    let rounds: u64 = if quick() { 50 } else { 2_000 };
    let browser = Launch::new().launch().await?;
    let pool = Pool::builder()
        .endpoint(browser.ws_url())
        .shards(1)
        .sessions_per_shard(1)
        .build()
        .await?;

    // Both arms on the same page, alternating, so drift hits both alike.
    let (sequential, batched) = pool
        .run(
            Job::new().timeout(Duration::from_secs(600)),
            async move |page| {
                let mut seq = Histogram::<u64>::new(3).expect("histogram");
                let mut bat = Histogram::<u64>::new(3).expect("histogram");
                for round in 0..rounds + 50 {
                    let t = Instant::now();
                    for i in 0..10 {
                        let r = page
                            .execute(EvaluateParams::new(format!("{i}+{round}")))
                            .await?;
                        assert!(r.exception_details.is_none());
                    }
                    let seq_us = t.elapsed().as_micros() as u64;

                    let t = Instant::now();
                    let mut batch = page.batch();
                    let slots: Vec<_> = (0..10)
                        .map(|i| batch.push(EvaluateParams::new(format!("{i}+{round}"))))
                        .collect();
                    let results = batch.run().await;
                    for slot in slots {
                        results.get(slot)?;
                    }
                    let bat_us = t.elapsed().as_micros() as u64;
                    if round >= 50 {
                        seq.record(seq_us).expect("in range");
                        bat.record(bat_us).expect("in range");
                    }
                }
                Ok((seq, bat))
            },
        )
        .await?;

    println!("10 x Runtime.evaluate on one page, {rounds} rounds each (ms per 10 commands)");
    println!("{:<12} {:>8} {:>8} {:>8}", "arm", "p50", "p95", "p99");
    for (name, h) in [("sequential", &sequential), ("batch", &batched)] {
        println!(
            "{name:<12} {:>8.3} {:>8.3} {:>8.3}",
            ms(h, 0.5),
            ms(h, 0.95),
            ms(h, 0.99)
        );
    }
    let cut = |q| 1.0 - ms(&batched, q) / ms(&sequential, q);
    println!(
        "cut: {:.1}% at p50, {:.1}% at p99 (target >= 70%)",
        100.0 * cut(0.5),
        100.0 * cut(0.99)
    );

    pool.shutdown(Duration::from_secs(5)).await?;

    // 64 busy pages on one shard (a fresh pool, so its flush histogram holds only
    // this phase): how many frames does each flush carry?
    let pool = Pool::builder()
        .endpoint(browser.ws_url())
        .shards(1)
        .sessions_per_shard(64)
        .build()
        .await?;
    let run_for = Duration::from_secs(if quick() { 1 } else { 5 });
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(
                    Job::new().timeout(Duration::from_secs(120)),
                    async move |page| {
                        let end = Instant::now() + run_for;
                        let mut n = 0u64;
                        while Instant::now() < end {
                            page.evaluate_value("1+1").await?;
                            n += 1;
                        }
                        Ok(n)
                    },
                )
                .await
            })
        })
        .collect();
    let mut commands = 0;
    for w in workers {
        commands += w.await.expect("worker")?;
    }
    let after = pool.metrics().await;
    let f = after.frames_per_flush;
    println!(
        "64 busy pages: {commands} commands in {run_for:?} ({:.0}/s); frames per flush p50 {}, p99 {}, max {}, mean {:.2} (all flushes: {})",
        commands as f64 / run_for.as_secs_f64(),
        f.p50_frames,
        f.p99_frames,
        f.max_frames,
        f.mean_frames,
        f.flushes
    );
    println!(
        "sessions created {}, Runtime.evaluate p50 {:.3} ms, p99 {:.3} ms under that load",
        after.counters.sessions_created, after.command.runtime.p50_ms, after.command.runtime.p99_ms
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    browser.shutdown().await
}
