//! Does a long crawl leak? Crawls a local demo site on real Chromium for a while
//! (`SOAK_SECONDS`, default 600) with 16 workers on 2 shards x 8 sessions, and every
//! `SOAK_SAMPLE_SECONDS` (default 10) prints this process's RSS, Chromium's PSS, the
//! browser's open page targets and the pool's sessions. At the end it shuts the pool down
//! and checks no Chromium process (zombies included) is left. Run by `scripts/soak.sh`.
//!
//! Exit status: 0 when targets always matched the pool's sessions and nothing was left
//! behind, 1 otherwise.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};

const WORKERS: usize = 16;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// A `kB` field of a `/proc` status-like file, in MiB.
fn kb_field(path: &str, field: &str) -> f64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Process ids in group `pgid` and whether each is a zombie.
fn group(pgid: u32) -> Vec<(u32, bool)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f.len() > 2 && f[2].parse() == Ok(pgid)).then_some((pid, f[0] == "Z"))
        })
        .collect()
}

/// Page targets the browser has open, from `Target.getTargets`.
async fn open_pages(pool: &Pool) -> cdpmux::Result<u64> {
    let lease = pool.acquire(Job::new()).await?;
    let targets = lease
        .call("Target.getTargets", serde_json::json!({}))
        .await?;
    Ok(targets["targetInfos"].as_array().map_or(0, |t| {
        t.iter().filter(|t| t["type"] == "page").count() as u64
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let duration = env_secs("SOAK_SECONDS", 600);
    let every = env_secs("SOAK_SAMPLE_SECONDS", 10);
    let site = DemoSite::start(SiteConfig::default())?;
    let urls = Arc::new(site.page_urls());
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .sessions_per_shard(8)
        .build()
        .await?;
    let browser = pool.browser_pids()[0];

    // Pages not owned by the pool (the tab Chromium opens at start), counted while the
    // pool holds only the sampling lease's page.
    let extra = open_pages(&pool).await? - pool.metrics().await.gauges.live();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (pool, urls, stop, ok, failed) = (
            pool.clone(),
            urls.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                let url = urls[n % urls.len()].clone();
                n += WORKERS;
                let r = pool
                    .run(Job::new().retries(1), async move |page| {
                        page.goto(&url).await?;
                        page.title().await
                    })
                    .await;
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("job failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let start = Instant::now();
    let mut mismatches = 0;
    let mut rss_first = None;
    let mut rss_max: f64 = 0.0;
    println!("t_s,rss_mib,chromium_pss_mib,chromium_procs,open_pages,pool_sessions,creating,jobs_ok,jobs_failed");
    loop {
        tokio::time::sleep(every.min(duration.saturating_sub(start.elapsed()))).await;
        let rss = kb_field("/proc/self/status", "VmRSS:");
        let procs = group(browser);
        let pss: f64 = procs
            .iter()
            .map(|(pid, _)| kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:"))
            .sum();
        let before = pool.metrics().await.gauges;
        let pages = open_pages(&pool).await? - extra;
        let after = pool.metrics().await.gauges;
        // A session being opened has its target before it counts as live.
        let low = before.live().min(after.live());
        let high = before.live().max(after.live()) + before.creating.max(after.creating);
        if !(low..=high).contains(&pages) {
            mismatches += 1;
        }
        rss_first.get_or_insert(rss);
        rss_max = rss_max.max(rss);
        println!(
            "{:.0},{rss:.1},{pss:.1},{},{pages},{},{},{},{}",
            start.elapsed().as_secs_f64(),
            procs.len(),
            after.live(),
            after.creating,
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        if start.elapsed() >= duration {
            break;
        }
    }

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let snap = pool.metrics().await;
    let pids = pool.browser_pids();
    pool.shutdown(Duration::from_secs(10)).await?;
    let mut left = Vec::new();
    for _ in 0..100 {
        left = pids.iter().flat_map(|&p| group(p)).collect::<Vec<_>>();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "SOAK {:.0} s: {} jobs ok, {} failed; RSS {:.1} MiB first sample, {:.1} MiB peak, {:.1} MiB last; \
         target/session mismatches {mismatches}; sessions created {}, crashed {}; reuse rate {:.4}; \
         job p50 {:.1} ms p99 {:.1} ms; processes left after shutdown {:?}",
        start.elapsed().as_secs_f64(),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        rss_first.unwrap_or(0.0),
        rss_max,
        kb_field("/proc/self/status", "VmRSS:"),
        snap.counters.sessions_created,
        snap.counters.sessions_crashed,
        snap.reuse_rate(),
        snap.job.p50_ms,
        snap.job.p99_ms,
        left
    );
    if mismatches > 0 || !left.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
