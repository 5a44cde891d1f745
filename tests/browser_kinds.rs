//! Both browser kinds (the full `chromium` and `chromium-headless-shell`) under the pool:
//! each launches, crawls the demo site with all its subresources, survives a crashed page,
//! and shuts down leaving no process of its group.
//!
//! With `CDPMUX_REQUIRE_BROWSER=1` (CI) a kind that is not installed fails its test;
//! `scripts/ensure-chromium.sh` installs both.

mod support;

use std::future::Future;
use std::time::Duration;

use cdpmux::browser::{BrowserKind, Launch};
use cdpmux::sim::{AssetKind, DemoSite, SiteConfig};
use cdpmux::{ErrorKind, Job, Pool};

const STEP: Duration = Duration::from_secs(60);
const PAGES: usize = 12;

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
                    let state = fields.next()?;
                    let pgrp = fields.nth(1)?.parse::<u32>().ok()?;
                    Some(state != "Z" && pgrp == pgid)
                })
                .unwrap_or(false)
        })
        .collect()
}

async fn launch_crawl_crash_and_shut_down(kind: BrowserKind) {
    if !support::require_browser_kind(kind) {
        return;
    }
    let site = DemoSite::start(SiteConfig {
        pages: PAGES,
        slow_every: 5,
        slow_delay: Duration::from_millis(200),
        heavy_every: 4,
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let pool = within(
        "build the pool",
        Pool::builder()
            .launch(Launch::new().kind(kind))
            .shards(1)
            .sessions_per_shard(2)
            .configure(|c| c.command_timeout = Duration::from_secs(30))
            .build(),
    )
    .await
    .unwrap_or_else(|e| panic!("launch {kind} and build a pool: {e}"));
    let pids = pool.browser_pids();
    assert_eq!(pids.len(), 1, "one launched browser");
    let pid = pids[0];
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the browser's executable");
    eprintln!("{kind}: browser pid {pid} runs {}", exe.display());
    if std::env::var_os("CDPMUX_CHROME").is_none_or(|v| v.is_empty()) {
        assert_eq!(BrowserKind::of_executable(&exe), kind, "{}", exe.display());
    }

    // A small crawl: every page has its title and its three links, and pulled every one
    // of its subresources from the site (the font included, found through a stylesheet).
    let jobs: Vec<_> = (0..PAGES)
        .map(|n| {
            let pool = pool.clone();
            let url = site.url(&format!("/p/{n}"));
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.goto(&url).await?;
                    let title = page.title().await?;
                    let links = page
                        .evaluate_value("document.querySelectorAll('a[href]').length")
                        .await?;
                    Ok((title, links))
                })
                .await
            })
        })
        .collect();
    let results = within("crawl", futures_util::future::join_all(jobs)).await;
    for (n, r) in results.into_iter().enumerate() {
        let (title, links) = r
            .expect("the job's task did not panic")
            .unwrap_or_else(|e| panic!("{kind}: /p/{n} failed: {e}"));
        assert_eq!(title, DemoSite::title_of(n), "{kind}");
        assert_eq!(links, 3, "{kind}: links on /p/{n}");
    }
    for n in 0..PAGES {
        for asset in site.assets_of(n) {
            assert!(
                site.requests_for(&asset.path) >= 1,
                "{kind}: {} ({:?}) of /p/{n} was never requested; requests: {:?}",
                asset.path,
                asset.kind,
                site.request_counts()
            );
        }
    }
    eprintln!(
        "{kind}: {} requests, {} for images, {} for the font",
        site.requests(),
        site.requests_of(AssetKind::Image),
        site.requests_of(AssetKind::Font)
    );

    // A crashed page fails its job as a crash, and the pool goes on with a new page.
    let err = within(
        "crash a page",
        pool.run(Job::new(), async |page| {
            page.evaluate_value("1").await?;
            let pending = page.evaluate_value("new Promise(r => setTimeout(r, 30000))");
            let crash = page.call("Page.crash", serde_json::json!({}));
            let (pending, _) = tokio::join!(pending, crash);
            pending
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{kind}: {err}");
    let title = within(
        "a job after the crash",
        pool.run(Job::new(), {
            let url = site.url("/p/1");
            async move |page| {
                page.goto(&url).await?;
                page.title().await
            }
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind}: the job after the crash failed: {e}"));
    assert_eq!(title, DemoSite::title_of(1));

    within("shutdown", pool.shutdown(Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("{kind}: shutdown: {e}"));
    // SIGKILLed members of the group are reaped by init, which gives no notice: poll,
    // bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = group_members(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: processes of the browser's group alive 10 s after shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headless_shell_launches_crawls_and_leaves_nothing() {
    launch_crawl_crash_and_shut_down(BrowserKind::Shell).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chromium_launches_crawls_and_leaves_nothing() {
    launch_crawl_crash_and_shut_down(BrowserKind::Chromium).await;
}
