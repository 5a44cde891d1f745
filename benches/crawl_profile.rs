//! What does the crawl profile buy over a naive client and over the pool's defaults?
//! The same crawl (navigate to a demo page, read its title and link count) three ways,
//! on the demo site with its stylesheets, scripts, font and images (issue 15):
//!
//! - **(a) fresh page**: the naive client on `chromium`: a new target per URL
//!   (`Target.createTarget`, a visible tab), navigate, wait for load, read, close;
//! - **(b) pool, defaults**: `pool.run` on `chromium`, `goto` waiting for load, nothing
//!   blocked;
//! - **(c) pool, crawl profile**: the headless shell when installed (`BrowserKind::Auto`),
//!   images, fonts, media and stylesheets blocked, `goto` done at DOMContentLoaded.
//!
//! Each arm has its own browser; the arms run in blocks interleaved over several rounds so
//! drift hits them alike. Per arm: pages/s, page p50/p99, the browser's CPU seconds per
//! page (utime + stime of its process group, reaped children included, from `/proc`), its
//! largest RSS (VmRSS summed over the group, after each block), errors, and for the pools
//! from their own metrics: page-open time as a share of job time, the wait-timeout rate
//! and frames per flush. Titles and link counts are compared across the arms.
//!
//! `cargo bench --bench crawl_profile`; `CDPMUX_BENCH_QUICK=1` runs a few pages per arm.
//! Needs Chromium (`chromium-headless-shell` for arm (c) to differ in browser).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdpmux::browser::{BrowserKind, Launch};
use cdpmux::cdp::{Connection, ConnectionConfig, PageOptions};
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Blocking, GotoOptions, Job, Pool, ResourceType, Snapshot, WaitUntil};
use hdrhistogram::Histogram;

/// Pages in flight at once, in every arm.
const CONCURRENCY: usize = 16;
/// Blocks per arm, interleaved.
const ROUNDS: usize = 3;
/// What a page is read for: its title and its link count.
const READ: &str = "[document.title, document.querySelectorAll('a[href]').length]";

/// How one arm visits a page.
enum Way<'a> {
    /// A new target per URL on a plain connection.
    FreshPage(&'a Connection),
    /// A pooled page, navigated with these options.
    Pool(&'a Pool, GotoOptions),
}

/// What a page showed: title and link count.
type Seen = (String, u64);

async fn visit(way: &Way<'_>, url: String) -> cdpmux::Result<Seen> {
    let value = match way {
        Way::FreshPage(conn) => {
            let page = conn
                .new_page(&PageOptions {
                    background: false,
                    ..PageOptions::default()
                })
                .await?;
            let read = async {
                page.goto(&url).await?;
                page.evaluate_value(READ).await
            }
            .await;
            page.close().await?;
            read?
        }
        Way::Pool(pool, goto) => {
            let goto = goto.clone();
            pool.run(Job::new(), async move |page| {
                page.goto_with(&url, &goto).await?;
                page.evaluate_value(READ).await
            })
            .await?
        }
    };
    Ok((
        value[0].as_str().unwrap_or_default().to_owned(),
        value[1].as_u64().unwrap_or_default(),
    ))
}

/// One arm's browser process group and totals over its measured blocks.
struct Arm<'a> {
    name: &'static str,
    way: Way<'a>,
    /// The browser's pid, which is also its process group.
    browser: u32,
    latency: Histogram<u64>,
    elapsed: Duration,
    pages: u64,
    errors: u64,
    first_error: Option<String>,
    /// Errors by kind.
    error_kinds: BTreeMap<String, u64>,
    cpu_ticks: u64,
    max_rss_kb: u64,
    /// Summed from the pool's snapshots around each block.
    open_ms: f64,
    job_ms: f64,
    wait_timeouts: u64,
    flushes: f64,
    frames: f64,
    /// What each page showed, by page number.
    seen: BTreeMap<usize, Seen>,
}

impl<'a> Arm<'a> {
    fn new(name: &'static str, way: Way<'a>, browser: u32) -> Self {
        Arm {
            name,
            way,
            browser,
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds"),
            elapsed: Duration::ZERO,
            pages: 0,
            errors: 0,
            first_error: None,
            error_kinds: BTreeMap::new(),
            cpu_ticks: 0,
            max_rss_kb: 0,
            open_ms: 0.0,
            job_ms: 0.0,
            wait_timeouts: 0,
            flushes: 0.0,
            frames: 0.0,
            seen: BTreeMap::new(),
        }
    }

    fn pool(&self) -> Option<&'a Pool> {
        match self.way {
            Way::Pool(pool, _) => Some(pool),
            Way::FreshPage(_) => None,
        }
    }

    fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_s_per_page(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.cpu_ticks as f64 / hz / self.pages.max(1) as f64
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Runs one block of `pages` pages from [`CONCURRENCY`] loops, `next` giving the page
    /// numbers; records everything when `measured`.
    async fn block(&mut self, site: &DemoSite, pages: usize, next: &Cell<usize>, measured: bool) {
        let before = snapshot(self.pool()).await;
        let cpu_before = cpu_ticks(self.browser);
        let latency = RefCell::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap());
        let results = RefCell::new(Vec::new());
        let issued = Cell::new(0);
        let way = &self.way;
        let started = Instant::now();
        let lanes = (0..CONCURRENCY).map(|_| async {
            while issued.get() < pages {
                issued.set(issued.get() + 1);
                let n = next.get() % site.config().pages;
                next.set(n + 1);
                let t = Instant::now();
                let result = visit(way, site.url(&format!("/p/{n}"))).await;
                latency
                    .borrow_mut()
                    .saturating_record(t.elapsed().as_micros() as u64);
                results.borrow_mut().push((n, result));
            }
        });
        futures_util::future::join_all(lanes).await;
        let elapsed = started.elapsed();
        if !measured {
            return;
        }
        let after = snapshot(self.pool()).await;
        self.cpu_ticks += cpu_ticks(self.browser).saturating_sub(cpu_before);
        self.max_rss_kb = self.max_rss_kb.max(rss_kb(self.browser));
        self.latency.add(latency.into_inner()).expect("same bounds");
        self.elapsed += elapsed;
        for (n, result) in results.into_inner() {
            self.pages += 1;
            match result {
                Ok(seen) => {
                    self.seen.insert(n, seen);
                }
                Err(e) => {
                    self.errors += 1;
                    *self
                        .error_kinds
                        .entry(format!("{:?}", e.kind()))
                        .or_default() += 1;
                    self.first_error
                        .get_or_insert_with(|| format!("/p/{n}: {e}"));
                }
            }
        }
        if let (Some(b), Some(a)) = (before, after) {
            let total = |l: &cdpmux::metrics::Latency| l.count as f64 * l.mean_ms;
            self.open_ms += total(&a.session_create) - total(&b.session_create);
            self.job_ms += total(&a.job) - total(&b.job);
            self.wait_timeouts += a.counters.timeouts_wait - b.counters.timeouts_wait;
            let frames =
                |s: &Snapshot| s.frames_per_flush.flushes as f64 * s.frames_per_flush.mean_frames;
            self.flushes += (a.frames_per_flush.flushes - b.frames_per_flush.flushes) as f64;
            self.frames += frames(&a) - frames(&b);
        }
    }
}

async fn snapshot(pool: Option<&Pool>) -> Option<Snapshot> {
    Some(pool?.metrics().await)
}

/// The fields after `(comm)` in `/proc/<pid>/stat` of every live process in group `pgrp`.
fn group_stats(pgrp: u32) -> Vec<(u32, Vec<u64>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After `(comm)`: state, ppid, pgrp, ... (the state is not a number: 0).
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            (fields.get(2) == Some(&(pgrp as u64))).then_some((pid, fields))
        })
        .collect()
}

/// CPU ticks of the group: utime + stime of the live processes, and cutime + cstime,
/// the ticks of their children already reaped (renderers of closed tabs).
fn cpu_ticks(pgrp: u32) -> u64 {
    group_stats(pgrp)
        .iter()
        .map(|(_, f)| f.get(11..15).map_or(0, |t| t.iter().sum::<u64>()))
        .sum()
}

/// VmRSS of the group in KiB (pages shared between processes count once per process).
fn rss_kb(pgrp: u32) -> u64 {
    group_stats(pgrp)
        .iter()
        .filter_map(|(pid, _)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

async fn pool_of(kind: BrowserKind, block: Blocking) -> Pool {
    Pool::builder()
        .launch(Launch::new().kind(kind))
        .shards(2)
        .sessions_per_shard(CONCURRENCY / 2)
        .page_options(PageOptions {
            block,
            ..PageOptions::default()
        })
        .build()
        .await
        .expect("build a pool")
}

fn report(arms: &[Arm<'_>], quick: bool) {
    println!(
        "\ncrawl_profile: concurrency {CONCURRENCY}, {ROUNDS} interleaved rounds{}",
        if quick { " (quick)" } else { "" }
    );
    println!(
        "  {:<28} {:>5} {:>7} {:>8} {:>8} {:>9} {:>8} {:>6} {:>7} {:>8} {:>7}",
        "arm",
        "pages",
        "pages/s",
        "p50 ms",
        "p99 ms",
        "CPU s/pg",
        "RSS MiB",
        "errors",
        "open %",
        "wait-to %",
        "fr/flush"
    );
    for arm in arms {
        let pool_only = |v: String| {
            if arm.pool().is_some() {
                v
            } else {
                "-".to_owned()
            }
        };
        println!(
            "  {:<28} {:>5} {:>7.2} {:>8.0} {:>8.0} {:>9.3} {:>8.0} {:>6} {:>7} {:>8} {:>7}",
            arm.name,
            arm.pages,
            arm.pages_per_s(),
            arm.ms(0.50),
            arm.ms(0.99),
            arm.cpu_s_per_page(),
            arm.max_rss_kb as f64 / 1024.0,
            arm.errors,
            pool_only(format!("{:.2}", 100.0 * arm.open_ms / arm.job_ms.max(1e-9))),
            pool_only(format!(
                "{:.2}",
                100.0 * arm.wait_timeouts as f64 / arm.pages.max(1) as f64
            )),
            pool_only(format!("{:.2}", arm.frames / arm.flushes.max(1.0))),
        );
        if let Some(e) = &arm.first_error {
            println!("    errors {:?}; first: {e}", arm.error_kinds);
        }
    }
    let [a, b, c] = arms else {
        unreachable!("three arms")
    };
    println!(
        "  (c)/(a): {:.2}x pages/s, {:.2}x CPU per page   (target: >= 3x pages/s)",
        c.pages_per_s() / a.pages_per_s(),
        c.cpu_s_per_page() / a.cpu_s_per_page()
    );
    println!(
        "  (c)/(b): {:.2}x pages/s, {:.2}x CPU per page   (target: >= 1.5x pages/s)",
        c.pages_per_s() / b.pages_per_s(),
        c.cpu_s_per_page() / b.cpu_s_per_page()
    );
    let differing: Vec<usize> = a
        .seen
        .iter()
        .filter(|(n, seen)| {
            [b, c]
                .iter()
                .any(|arm| arm.seen.get(*n).is_some_and(|other| other != *seen))
        })
        .map(|(n, _)| *n)
        .collect();
    let compared = a
        .seen
        .keys()
        .filter(|n| b.seen.contains_key(n) && c.seen.contains_key(n))
        .count();
    println!(
        "  titles and link counts: {} of {compared} pages read by every arm differ {differing:?}",
        differing.len()
    );
}

async fn run() {
    let quick = std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1");
    let per_arm = if quick { 48 } else { 300 };
    let site = DemoSite::start(SiteConfig::default()).expect("start the demo site");

    let naive = Launch::new()
        .kind(BrowserKind::Chromium)
        .launch()
        .await
        .expect("launch Chromium");
    let conn = Connection::connect(naive.ws_url(), ConnectionConfig::default())
        .await
        .expect("connect to Chromium");
    let defaults = pool_of(BrowserKind::Chromium, Blocking::none()).await;
    let profile = pool_of(
        BrowserKind::Auto,
        Blocking::none().resources([
            ResourceType::Image,
            ResourceType::Font,
            ResourceType::Media,
            ResourceType::Stylesheet,
        ]),
    )
    .await;
    let pid = |pool: &Pool| pool.browser_pids().first().copied().expect("a browser pid");
    let profile_kind = if std::path::Path::new("/proc")
        .join(pid(&profile).to_string())
        .join("exe")
        .read_link()
        .is_ok_and(|exe| BrowserKind::of_executable(&exe) == BrowserKind::Shell)
    {
        "(c) pool, profile (shell)"
    } else {
        "(c) pool, profile (chromium)"
    };
    let mut arms = [
        Arm::new(
            "(a) fresh page, chromium",
            Way::FreshPage(&conn),
            naive.pid(),
        ),
        Arm::new(
            "(b) pool, defaults",
            Way::Pool(&defaults, GotoOptions::new()),
            pid(&defaults),
        ),
        Arm::new(
            profile_kind,
            Way::Pool(
                &profile,
                GotoOptions::new().wait_until(WaitUntil::DomContentLoaded),
            ),
            pid(&profile),
        ),
    ];
    println!(
        "crawl_profile: demo site {} ({} pages, assets on), {per_arm} pages per arm",
        site.base_url(),
        site.config().pages
    );

    // Every arm's pages start at the same page number in each round, so each arm reads
    // the same pages.
    let per_block = per_arm / ROUNDS;
    for arm in arms.iter_mut() {
        arm.block(&site, CONCURRENCY * 2, &Cell::new(0), false)
            .await;
    }
    for round in 0..ROUNDS {
        for arm in arms.iter_mut() {
            let next = Cell::new(round * per_block);
            arm.block(&site, per_block, &next, true).await;
        }
    }
    report(&arms, quick);

    for pool in [&defaults, &profile] {
        pool.shutdown(Duration::from_secs(5))
            .await
            .expect("shut a pool down");
    }
    conn.close();
    naive.shutdown().await.expect("stop Chromium");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // The fresh-page arm's `Connection` is `!Send`: it lives in this `LocalSet`.
    tokio::task::LocalSet::new().block_on(&rt, run());
}
