//! `cdpmux bench`: the same job done two ways against one browser, in one run.
//!
//! - **fresh page** (the baseline): a new page per job on a plain connection, as a
//!   crawler without a pool does it: create a (visible) tab, attach, enable `Page`, do the
//!   job, close the tab;
//! - **pool**: `pool.run` on a [`Pool`] connected to that same browser, whose sessions
//!   are reused from job to job.
//!
//! Both arms run from one current-thread runtime (the plain connection is `!Send` and
//! needs a `LocalSet`), in blocks interleaved three times so drift hits both alike.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cdpmux::cdp::{Connection, ConnectionConfig, PageOptions};
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Page, Pool};
use serde::Serialize;

use crate::args::{BenchArgs, BenchJob};
use crate::browser::{BrowserSetup, Fatal};
use crate::stats::Percentiles;

/// Blocks per arm, interleaved.
const ROUNDS: usize = 3;
/// Pages of the demo site the navigate job cycles through.
const PAGES: usize = 200;
/// Commands in one batch of the batch job.
const BATCH: usize = 10;

/// Runs `cdpmux bench` on its own current-thread runtime.
pub fn run(args: BenchArgs) -> Result<(), Fatal> {
    let setup = BrowserSetup::prepare(&args.browser)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::failed(format!("could not start a runtime: {e}")))?;
    tokio::task::LocalSet::new().block_on(&runtime, bench(args, setup))
}

/// How one arm does a job.
enum Way<'a> {
    FreshPage(&'a Connection),
    Pool(&'a Pool),
}

/// One arm's measurements.
#[derive(Debug, Default, Serialize)]
struct ArmResult {
    jobs: u64,
    errors: u64,
    #[serde(flatten)]
    latency: Percentiles,
    jobs_per_s: f64,
    /// Pool sessions opened and reused during the measured blocks (0 for fresh pages).
    sessions_created: u64,
    sessions_reused: u64,
    reuse_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    #[serde(skip)]
    samples: Vec<f64>,
    #[serde(skip)]
    elapsed: Duration,
}

/// The whole result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct BenchReport {
    job: &'static str,
    concurrency: u32,
    count: u32,
    browser: String,
    fresh_page: ArmResult,
    pool: ArmResult,
    /// 1 - pool/fresh at each percentile.
    cut: Cut,
    /// Pool throughput / fresh-page throughput.
    throughput_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Cut {
    p50: f64,
    p95: f64,
    p99: f64,
}

async fn bench(args: BenchArgs, setup: BrowserSetup) -> Result<(), Fatal> {
    let site = match args.job {
        BenchJob::Navigate => Some(
            DemoSite::start(SiteConfig {
                pages: PAGES,
                // Steady pages: the bench measures the browser plumbing, not the site.
                slow_every: 0,
                heavy_every: 0,
                ..SiteConfig::default()
            })
            .map_err(|e| Fatal::failed(format!("could not start the demo site: {e}")))?,
        ),
        _ => None,
    };
    let (ws_url, launched) = setup.single().await?;
    let conn = Connection::connect(&ws_url, ConnectionConfig::default()).await?;
    let shards = match args.browser.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let sessions = match args.sessions {
        Some(n) => n as usize,
        None => (args.concurrency as usize).div_ceil(shards).max(1),
    };
    let pool = Pool::builder()
        .endpoint(ws_url.clone())
        .shards(shards)
        .sessions_per_shard(sessions)
        .configure(|c| c.max_queue = c.max_queue.max(args.concurrency as usize))
        .build()
        .await?;

    let lanes = args.concurrency as usize;
    let urls: Vec<String> = match &site {
        Some(site) => site.page_urls(),
        None => vec![String::new()],
    };
    let next = Cell::new(0usize);
    let ways = [Way::FreshPage(&conn), Way::Pool(&pool)];
    let mut arms = [ArmResult::default(), ArmResult::default()];

    let warmup = args.warmup.map_or(2 * lanes, |n| n as usize);
    for way in &ways {
        block(way, args.job, &urls, &next, lanes, warmup).await;
    }
    let total = args.count as usize;
    for round in 0..ROUNDS {
        let jobs = total / ROUNDS + usize::from(round < total % ROUNDS);
        for (way, arm) in ways.iter().zip(arms.iter_mut()) {
            let before = pool.metrics().await.counters;
            let part = block(way, args.job, &urls, &next, lanes, jobs).await;
            let after = pool.metrics().await.counters;
            arm.jobs += part.jobs;
            arm.errors += part.errors;
            arm.samples.extend(part.samples);
            arm.elapsed += part.elapsed;
            if arm.first_error.is_none() {
                arm.first_error = part.first_error;
            }
            if let Way::Pool(_) = way {
                arm.sessions_reused += after.sessions_reused.saturating_sub(before.sessions_reused);
                arm.sessions_created += after
                    .sessions_created
                    .saturating_sub(before.sessions_created);
            }
        }
    }
    for arm in &mut arms {
        let uses = arm.sessions_reused + arm.sessions_created;
        arm.reuse_rate = if uses > 0 {
            arm.sessions_reused as f64 / uses as f64
        } else {
            0.0
        };
        arm.latency = Percentiles::of(&arm.samples);
        arm.jobs_per_s = arm.jobs as f64 / arm.elapsed.as_secs_f64().max(1e-9);
    }
    let [fresh_page, pooled] = arms;
    let cut = |f: f64, p: f64| if f > 0.0 { 1.0 - p / f } else { 0.0 };
    let report = BenchReport {
        job: args.job.as_str(),
        concurrency: args.concurrency,
        count: args.count,
        browser: setup.description.clone(),
        cut: Cut {
            p50: cut(fresh_page.latency.p50_ms, pooled.latency.p50_ms),
            p95: cut(fresh_page.latency.p95_ms, pooled.latency.p95_ms),
            p99: cut(fresh_page.latency.p99_ms, pooled.latency.p99_ms),
        },
        throughput_ratio: if fresh_page.jobs_per_s > 0.0 {
            pooled.jobs_per_s / fresh_page.jobs_per_s
        } else {
            0.0
        },
        fresh_page,
        pool: pooled,
    };

    let shutdown = pool.shutdown(Duration::from_secs(5)).await;
    conn.close();
    if let Some(browser) = launched {
        let _ = browser.shutdown().await;
    }
    drop(site);
    shutdown?;

    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Fatal::failed(format!("could not encode the report: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", table(&report));
    }
    let errors = report.fresh_page.errors + report.pool.errors;
    if errors > 0 {
        return Err(Fatal::failed(format!(
            "{errors} jobs failed; the figures above are not to be trusted"
        )));
    }
    Ok(())
}

/// What one block measured.
#[derive(Default)]
struct Block {
    jobs: u64,
    errors: u64,
    samples: Vec<f64>,
    elapsed: Duration,
    first_error: Option<String>,
}

/// Runs `jobs` jobs from `lanes` concurrent loops.
async fn block(
    way: &Way<'_>,
    job: BenchJob,
    urls: &[String],
    next: &Cell<usize>,
    lanes: usize,
    jobs: usize,
) -> Block {
    let result = RefCell::new(Block::default());
    let issued = Cell::new(0usize);
    let started = Instant::now();
    let lane = || async {
        while issued.get() < jobs {
            issued.set(issued.get() + 1);
            let url = urls[next.get() % urls.len()].clone();
            next.set(next.get().wrapping_add(1));
            let t = Instant::now();
            let outcome = one_job(way, job, url).await;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let mut r = result.borrow_mut();
            r.jobs += 1;
            r.samples.push(ms);
            if let Err(e) = outcome {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    };
    let lanes: Vec<_> = (0..lanes.min(jobs.max(1))).map(|_| lane()).collect();
    futures_util::future::join_all(lanes).await;
    let mut r = result.into_inner();
    r.elapsed = started.elapsed();
    r
}

async fn one_job(way: &Way<'_>, job: BenchJob, url: String) -> cdpmux::Result<()> {
    match way {
        Way::FreshPage(conn) => {
            let page = conn
                .new_page(&PageOptions {
                    background: false,
                    ..PageOptions::default()
                })
                .await?;
            let outcome = on_page(&page, job, &url).await;
            page.close().await?;
            outcome
        }
        Way::Pool(pool) => {
            pool.run(Job::new(), async move |page| on_page(page, job, &url).await)
                .await
        }
    }
}

/// The job itself, the same in both arms.
async fn on_page(page: &Page, job: BenchJob, url: &str) -> cdpmux::Result<()> {
    match job {
        BenchJob::Navigate => {
            page.goto(url).await?;
            page.title().await?;
        }
        BenchJob::Evaluate => {
            page.evaluate_value("1+1").await?;
        }
        BenchJob::Batch => {
            let mut batch = page.batch();
            for i in 0..BATCH {
                batch.push_raw(
                    "Runtime.evaluate",
                    serde_json::json!({ "expression": format!("{i}+1"), "returnByValue": true }),
                );
            }
            let results = batch.run().await;
            for i in 0..results.len() {
                results.raw(i)?;
            }
        }
    }
    Ok(())
}

fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cdpmux bench: job {}, {} jobs per arm, concurrency {}, on {}",
        r.job, r.count, r.concurrency, r.browser
    );
    let _ = writeln!(
        out,
        "  {:<22}{:>6}{:>8}{:>10}{:>10}{:>10}{:>10}{:>8}",
        "arm", "jobs", "errors", "p50 ms", "p95 ms", "p99 ms", "jobs/s", "reuse"
    );
    for (name, arm) in [("fresh page per job", &r.fresh_page), ("pool", &r.pool)] {
        let _ = writeln!(
            out,
            "  {name:<22}{:>6}{:>8}{:>10.2}{:>10.2}{:>10.2}{:>10.1}{:>7.1}%",
            arm.jobs,
            arm.errors,
            arm.latency.p50_ms,
            arm.latency.p95_ms,
            arm.latency.p99_ms,
            arm.jobs_per_s,
            100.0 * arm.reuse_rate
        );
    }
    let _ = writeln!(
        out,
        "  {:<36}{:>9.1}%{:>9.1}%{:>9.1}%{:>9.2}x",
        "cut (1 - pool/fresh)",
        100.0 * r.cut.p50,
        100.0 * r.cut.p95,
        100.0 * r.cut.p99,
        r.throughput_ratio
    );
    for (name, arm) in [("fresh page", &r.fresh_page), ("pool", &r.pool)] {
        if let Some(e) = &arm.first_error {
            let _ = writeln!(out, "  first error ({name}): {e}");
        }
    }
    out
}
