//! How do I embed cdpmux in my own crawler? A small breadth-first crawler: it starts at
//! one page of a local demo site, renders each page in a pooled Chromium tab, reads the
//! title and the links in one script, and follows links on the same host until it has
//! seen a page budget.
//!
//! Run with `cargo run --release --example crawl -- [max_pages]` (needs Chromium:
//! `apt-get install -y chromium`, or set `CDPMUX_CHROME`).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Affinity, Job, Pool};
use tokio::task::JoinSet;

/// Pages rendered at once.
const CONCURRENCY: usize = 8;

/// What the crawler keeps of a page.
struct Visited {
    url: String,
    title: String,
    links: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let max_pages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(40);
    let site = DemoSite::start(SiteConfig::default())?;
    let start = site.url("/p/0");
    let host = url::Url::parse(&start)?
        .host_str()
        .unwrap_or_default()
        .to_owned();

    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .sessions_per_shard(4)
        .build()
        .await?;

    let started = Instant::now();
    let mut seen = HashSet::from([start.clone()]);
    let mut frontier = VecDeque::from([start]);
    let mut in_flight = JoinSet::new();
    let mut pages = 0;
    while pages < max_pages {
        // Keep CONCURRENCY pages rendering; the pool queues nothing beyond that.
        while in_flight.len() < CONCURRENCY {
            let Some(url) = frontier.pop_front() else {
                break;
            };
            in_flight.spawn(visit(pool.clone(), url));
        }
        let Some(done) = in_flight.join_next().await else {
            break; // nothing in flight and nothing left to visit
        };
        match done? {
            Ok(page) => {
                pages += 1;
                println!("{:>3} {} {:?}", pages, page.url, page.title);
                for link in page.links {
                    let link = without_fragment(&link);
                    let same_host =
                        url::Url::parse(&link).is_ok_and(|u| u.host_str() == Some(host.as_str()));
                    if same_host && seen.len() < max_pages && seen.insert(link.clone()) {
                        frontier.push_back(link);
                    }
                }
            }
            Err(e) => println!("    error ({:?}): {e}", e.kind()),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{pages} pages in {elapsed:.2?} ({:.1} pages/s)",
        pages as f64 / elapsed.as_secs_f64()
    );
    let snapshot = pool.metrics().await;
    println!(
        "reuse rate {:.1}%, job p50 {:.1} ms, p99 {:.1} ms",
        100.0 * snapshot.reuse_rate(),
        snapshot.job.p50_ms,
        snapshot.job.p99_ms
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}

/// Renders one page on a pooled tab: navigate, then read the title and every link in
/// one round trip. The closure runs on the shard that owns the tab.
async fn visit(pool: Pool, url: String) -> cdpmux::Result<Visited> {
    // Pages of one host share a shard and, when free, the same warm tab.
    let job = Job::new()
        .affinity(Affinity::from_url(&url)?)
        .timeout(Duration::from_secs(30))
        .retries(1);
    let target = url.clone();
    let found = pool
        .run(job, async move |page| {
            page.goto(&target).await?;
            page.evaluate_value(
                "({ title: document.title, \
                    links: Array.from(document.querySelectorAll('a[href]'), a => a.href) })",
            )
            .await
        })
        .await?;
    let links = found["links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Visited {
        url,
        title: found["title"].as_str().unwrap_or_default().to_owned(),
        links,
    })
}

fn without_fragment(url: &str) -> String {
    url.split('#').next().unwrap_or(url).to_owned()
}
