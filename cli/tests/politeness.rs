//! `cdpmux crawl` being polite: `--per-host` and `--host-delay` throttle each host in
//! the pool, and `--robots` keeps the crawl off the pages a site's robots.txt disallows
//! and waits its Crawl-delay.
//!
//! Every run of the binary has a deadline; on expiry the child is killed and the test
//! fails. The robots.txt test needs Chromium (the simulated browser fetches nothing):
//! without it, it prints SKIPPED, or fails when `CDPMUX_REQUIRE_BROWSER=1` (CI).

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use cdpmux::sim::{DemoSite, SiteConfig};
use serde_json::Value;
use support::require_browser;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Longest one run of the binary may take.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Runs `cdpmux args` with `stdin`, within [`RUN_LIMIT`].
async fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdpmux"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the cdpmux binary");
    let mut pipe = child.stdin.take().expect("a stdin pipe");
    let text = stdin.to_owned();
    tokio::spawn(async move {
        let _ = pipe.write_all(text.as_bytes()).await;
    });
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("cdpmux did not end within {RUN_LIMIT:?}"))
        .expect("wait for cdpmux");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "cdpmux failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    out
}

/// The page lines of `path` and the metrics snapshot printed on stdout (with `-o`, the
/// summary and `--metrics json` go there).
fn lines_and_snapshot(path: &std::path::Path, out: &Output) -> (Vec<Value>, Value, String) {
    let written = std::fs::read_to_string(path).expect("the output file");
    let lines = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = &stdout[stdout.find("\n{").expect("a JSON snapshot")..];
    let snapshot = serde_json::from_str(json).expect("the snapshot is JSON");
    (lines, snapshot, stdout)
}

#[tokio::test]
async fn robots_txt_disallow_is_obeyed_and_its_crawl_delay_throttles_the_host() {
    if !require_browser() {
        return;
    }
    let site = DemoSite::start(SiteConfig {
        pages: 10,
        slow_every: 0,
        heavy_every: 0,
        assets: false,
        robots_txt: Some(
            "User-agent: *\nDisallow: /p/3\nDisallow: /p/7\nCrawl-delay: 0.05\n".to_owned(),
        ),
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let urls: String = site.page_urls().iter().map(|u| format!("{u}\n")).collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("out.jsonl");
    let out = run(
        &[
            "crawl",
            "-",
            "--robots",
            "--quiet",
            "--metrics",
            "json",
            "-o",
            output.to_str().expect("utf-8 path"),
        ],
        &urls,
    )
    .await;
    let (lines, snapshot, stdout) = lines_and_snapshot(&output, &out);
    let crawled: Vec<&str> = lines.iter().map(|l| l["url"].as_str().unwrap()).collect();
    assert_eq!(crawled.len(), 8, "{crawled:?}");
    assert!(lines.iter().all(|l| l["error"].is_null()), "{lines:?}");
    for path in ["/p/3", "/p/7"] {
        assert!(
            !crawled.iter().any(|u| u.ends_with(path)),
            "{path} was crawled"
        );
        assert_eq!(site.requests_for(path), 0, "{path} was fetched");
    }
    assert_eq!(
        site.requests_for("/robots.txt"),
        1,
        "robots.txt is fetched once"
    );
    assert!(stdout.contains("2 pages disallowed"), "{stdout}");
    // The Crawl-delay held the host's pages back in the pool.
    assert!(
        snapshot["counters"]["throttled"].as_u64().unwrap() > 0,
        "{snapshot}"
    );
}

#[tokio::test]
async fn per_host_and_host_delay_throttle_each_host_in_the_pool() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("out.jsonl");
    let out = run(
        &[
            "crawl",
            "--demo",
            "--sim",
            "--demo-pages",
            "8",
            "--per-host",
            "1",
            "--host-delay",
            "20ms",
            "--quiet",
            "--metrics",
            "json",
            "-o",
            output.to_str().expect("utf-8 path"),
        ],
        "",
    )
    .await;
    let (lines, snapshot, _) = lines_and_snapshot(&output, &out);
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l["error"].is_null()), "{lines:?}");
    // Every page is of one host (the demo site's): pages waited their turn.
    assert!(
        snapshot["counters"]["throttled"].as_u64().unwrap() > 0,
        "{snapshot}"
    );
}
