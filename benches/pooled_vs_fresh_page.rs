//! Does pooling pages pay on a real Chromium? A crawler's job (navigate to a local page,
//! wait for its load event, read its title) done two ways against the same browser:
//!
//! - **fresh page**: a new page per job through cdpmux's transport, as a crawler without
//!   a pool does it: `Target.createTarget` (a visible tab) + attach (flat) + `Page.enable`,
//!   navigate, wait for load, read the title, `Target.closeTarget`;
//! - **pool**: `pool.run(Job::new(), ..)` on a [`Pool`] connected to that same browser,
//!   whose sessions are reused from job to job (hidden tabs, the default), plus at
//!   concurrency 1 a pool of visible tabs for comparison.
//!
//! Both arms are driven from the same current-thread runtime, with 1 and 8 concurrent
//! loops, in blocks interleaved three times so drift hits every arm alike. Prints
//! p50/p95/p99 per job, throughput, the pool's reuse rate and the cut `1 - pool/fresh`.
//!
//! Run with `cargo bench --bench pooled_vs_fresh_page`; `CDPMUX_BENCH_QUICK=1` runs a few
//! jobs per arm only. Needs Chromium (`CDPMUX_CHROME` or `chromium` on `PATH`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::cdp::{Connection, ConnectionConfig, PageOptions};
use cdpmux::metrics::Counters;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};
use hdrhistogram::Histogram;

/// Pages of the demo site the jobs cycle through.
const PAGES: usize = 200;
/// Blocks per arm, interleaved.
const ROUNDS: usize = 3;
/// Sessions of each pool: enough for the highest concurrency.
const SESSIONS: usize = 8;

/// How one arm does a job.
enum Way<'a> {
    /// A new page per job on a plain connection.
    FreshPage(&'a Connection),
    /// A pooled, reused page.
    Pool(&'a Pool),
}

struct Arm<'a> {
    name: &'static str,
    way: Way<'a>,
    latency: Histogram<u64>,
    /// Wall time of the measured blocks.
    elapsed: Duration,
    jobs: u64,
    /// Pool sessions opened and reused during the measured blocks.
    created: u64,
    reused: u64,
    /// `document.visibilityState` of a pooled page after each block.
    visibility: BTreeSet<String>,
}

impl<'a> Arm<'a> {
    fn new(name: &'static str, way: Way<'a>) -> Self {
        Arm {
            name,
            way,
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds"),
            elapsed: Duration::ZERO,
            jobs: 0,
            created: 0,
            reused: 0,
            visibility: BTreeSet::new(),
        }
    }

    fn pool(&self) -> Option<&'a Pool> {
        match self.way {
            Way::Pool(pool) => Some(pool),
            Way::FreshPage(_) => None,
        }
    }

    fn p(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// One job: navigate to `url`, wait for load, read the title.
async fn job(way: &Way<'_>, url: String) -> cdpmux::Result<String> {
    match way {
        Way::FreshPage(conn) => {
            let page = conn
                .new_page(&PageOptions {
                    background: false,
                    ..PageOptions::default()
                })
                .await?;
            let title = async {
                page.goto(&url).await?;
                page.title().await
            }
            .await;
            page.close().await?;
            title
        }
        Way::Pool(pool) => {
            pool.run(Job::new(), async move |page| {
                page.goto(&url).await?;
                page.title().await
            })
            .await
        }
    }
}

/// Runs `jobs` jobs from `concurrency` loops; returns each job's latency and the wall time.
async fn block(
    way: &Way<'_>,
    site: &DemoSite,
    concurrency: usize,
    jobs: usize,
    next_page: &Cell<usize>,
) -> (Histogram<u64>, Duration) {
    let latency = RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("static"));
    let issued = Cell::new(0);
    let started = Instant::now();
    let lanes = (0..concurrency).map(|_| async {
        while issued.get() < jobs {
            issued.set(issued.get() + 1);
            let n = next_page.get() % PAGES;
            next_page.set(n + 1);
            let url = site.url(&format!("/p/{n}"));
            let t = Instant::now();
            let title = job(way, url)
                .await
                .unwrap_or_else(|e| panic!("a job on /p/{n} failed: {e}"));
            latency
                .borrow_mut()
                .saturating_record(t.elapsed().as_micros() as u64);
            assert_eq!(title, DemoSite::title_of(n), "wrong title for /p/{n}");
        }
    });
    futures_util::future::join_all(lanes).await;
    (latency.into_inner(), started.elapsed())
}

async fn counters(pool: Option<&Pool>) -> Counters {
    match pool {
        Some(pool) => pool.metrics().await.counters,
        None => Counters::default(),
    }
}

async fn compare(site: &DemoSite, arms: &mut [Arm<'_>], concurrency: usize, jobs: usize) {
    let next_page = Cell::new(0);
    let per_block = jobs.div_ceil(ROUNDS);
    // Warm-up: the pools open their sessions, the fresh arm and the site warm up.
    for arm in arms.iter() {
        block(&arm.way, site, concurrency, concurrency * 3, &next_page).await;
    }
    for _ in 0..ROUNDS {
        for arm in arms.iter_mut() {
            let before = counters(arm.pool()).await;
            let (latency, elapsed) =
                block(&arm.way, site, concurrency, per_block, &next_page).await;
            let after = counters(arm.pool()).await;
            arm.latency.add(&latency).expect("same bounds");
            arm.elapsed += elapsed;
            arm.jobs += per_block as u64;
            arm.created += after.sessions_created - before.sessions_created;
            arm.reused += after.sessions_reused - before.sessions_reused;
            if let Some(pool) = arm.pool() {
                let state = pool
                    .run(Job::new(), async |page| {
                        page.evaluate_value("document.visibilityState").await
                    })
                    .await
                    .expect("read the visibility state");
                arm.visibility
                    .insert(state.as_str().unwrap_or("?").to_owned());
            }
        }
    }
    report(arms, concurrency);
}

fn report(arms: &[Arm<'_>], concurrency: usize) {
    println!("\nconcurrency {concurrency}");
    println!(
        "  {:<22} {:>5} {:>8} {:>8} {:>8} {:>8}  {:>6}  tabs seen",
        "arm", "jobs", "p50 ms", "p95 ms", "p99 ms", "jobs/s", "reuse"
    );
    for arm in arms {
        let reuse = match arm.pool() {
            Some(_) => format!(
                "{:>5.1}%",
                100.0 * arm.reused as f64 / (arm.reused + arm.created).max(1) as f64
            ),
            None => "     -".to_owned(),
        };
        println!(
            "  {:<22} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {reuse}  {}",
            arm.name,
            arm.jobs,
            arm.p(0.50),
            arm.p(0.95),
            arm.p(0.99),
            arm.jobs as f64 / arm.elapsed.as_secs_f64(),
            arm.visibility.iter().cloned().collect::<Vec<_>>().join(","),
        );
    }
    let fresh = &arms[0];
    for arm in &arms[1..] {
        println!(
            "  cut ({} vs {}): p50 {:.1}%  p99 {:.1}%   (target: >= 55% at both)",
            arm.name,
            fresh.name,
            100.0 * (1.0 - arm.p(0.50) / fresh.p(0.50)),
            100.0 * (1.0 - arm.p(0.99) / fresh.p(0.99)),
        );
    }
}

async fn pool_on(ws_url: &str, background: bool) -> Pool {
    Pool::builder()
        .endpoint(ws_url)
        .shards(1)
        .sessions_per_shard(SESSIONS)
        .page_options(PageOptions {
            background,
            ..PageOptions::default()
        })
        .configure(|c| c.wait_timeout = Duration::from_secs(120))
        .build()
        .await
        .expect("build a pool on the launched browser")
}

async fn run() {
    let quick = std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1");
    let (jobs_c1, jobs_c8) = if quick { (21, 24) } else { (300, 800) };
    let site = DemoSite::start(SiteConfig {
        pages: PAGES,
        slow_every: 0,
        heavy_every: 0,
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let browser = Launch::new().launch().await.expect("launch Chromium");
    // Chromium's start-up burst (a webui renderer) would land on the first arm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let conn = Connection::connect(browser.ws_url(), ConnectionConfig::default())
        .await
        .expect("connect to Chromium");
    let hidden = pool_on(browser.ws_url(), true).await;
    let visible = pool_on(browser.ws_url(), false).await;
    println!(
        "pooled_vs_fresh_page: one Chromium (pid {}), demo site {}, pools of {SESSIONS} \
         sessions on 1 shard, {ROUNDS} interleaved blocks per arm{}",
        browser.pid(),
        site.base_url(),
        if quick { " (quick)" } else { "" }
    );

    let mut arms = [
        Arm::new("fresh page", Way::FreshPage(&conn)),
        Arm::new("pool (hidden tabs)", Way::Pool(&hidden)),
        Arm::new("pool (visible tabs)", Way::Pool(&visible)),
    ];
    compare(&site, &mut arms, 1, jobs_c1).await;
    // The visible-tab pool is shown at concurrency 1 only.
    let mut arms = [
        Arm::new("fresh page", Way::FreshPage(&conn)),
        Arm::new("pool (hidden tabs)", Way::Pool(&hidden)),
    ];
    compare(&site, &mut arms, 8, jobs_c8).await;

    for pool in [&hidden, &visible] {
        pool.shutdown(Duration::from_secs(5))
            .await
            .expect("shut a pool down");
    }
    conn.close();
    browser.shutdown().await.expect("stop Chromium");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // The fresh-page arm's `Connection` is `!Send`: it lives in this `LocalSet`.
    tokio::task::LocalSet::new().block_on(&rt, run());
}
