//! The `cdpmux` binary end to end: crawls and benches against real Chromium and the
//! simulated browser, and the failure modes a user meets first (no Chromium, bad input).
//!
//! Every run of the binary has a deadline; on expiry the child is killed (kill_on_drop)
//! and the test fails. Tests that need Chromium print a loud SKIPPED line without it, and
//! fail instead when `CDPMUX_REQUIRE_BROWSER=1` (CI).

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Longest any single run of the binary may take.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// True when Chromium is available; see the module docs for what happens without it.
fn require_browser() -> bool {
    match Launch::new().find_executable() {
        Ok(_) => true,
        Err(e) if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("CDPMUX_REQUIRE_BROWSER=1 but no browser is available: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no chromium ({e})");
            false
        }
    }
}

fn cdpmux(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdpmux"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to completion with `stdin` as its input, within [`RUN_LIMIT`].
async fn run(mut cmd: Command, stdin: Option<String>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start the cdpmux binary");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
        });
    }
    tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("cdpmux finished within the deadline (it was killed)")
        .expect("wait for cdpmux")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses every stdout line as JSON; fails on any line that is not.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "cdpmux failed ({}):\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// A port on 127.0.0.1 nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn page_number(url: &str) -> usize {
    url.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a demo page URL: {url}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_demo_writes_one_valid_line_per_page() {
    if !require_browser() {
        return;
    }
    let out = run(
        cdpmux(&["crawl", "--demo", "--concurrency", "16", "--quiet"]),
        None,
    )
    .await;
    assert_ok(&out);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 300, "one line per demo page");
    let mut seen = BTreeSet::new();
    for l in &lines {
        let url = l["url"].as_str().expect("url");
        let n = page_number(url);
        assert!(seen.insert(n), "page {n} crawled twice");
        assert_eq!(l["error"], Value::Null, "{l}");
        assert_eq!(l["title"], DemoSite::title_of(n), "{l}");
        assert_eq!(l["final_url"], url, "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["links"], 3, "{l}");
        assert!(l["html_bytes"].as_u64().is_some_and(|b| b > 100), "{l}");
        assert!(
            l["shard"].is_u64() && l["reused"].is_boolean() && l["ms"].is_number(),
            "{l}"
        );
    }
    assert!(
        lines.iter().filter(|l| l["reused"] == true).count() > 200,
        "sessions were reused"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("crawl summary") && stderr.contains("reuse rate"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_reports_bad_and_unreachable_urls_and_keeps_going() {
    if !require_browser() {
        return;
    }
    let site = DemoSite::start(SiteConfig {
        pages: 5,
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let refused = format!("http://127.0.0.1:{}/", closed_port());
    let input = [
        site.url("/p/0"),
        "not a url".to_owned(),
        refused.clone(),
        "ftp://127.0.0.1/file".to_owned(),
        "http://no-such-host.invalid/".to_owned(),
        site.url("/p/1#a-fragment"),
        site.url("/missing"),
        String::new(),
        "# a comment".to_owned(),
        site.url("/p/2"),
    ]
    .join("\n");
    let out = run(
        cdpmux(&["crawl", "-", "--quiet", "--timeout", "30s"]),
        Some(input),
    )
    .await;
    assert_ok(&out);
    let lines = json_lines(&out);
    let by_url = |u: &str| {
        lines
            .iter()
            .find(|l| l["url"] == u)
            .unwrap_or_else(|| panic!("no line for {u}:\n{}", text(&out.stdout)))
    };
    assert_eq!(lines.len(), 8, "{}", text(&out.stdout));
    for n in 0..3 {
        let l = by_url(&site.url(&format!("/p/{n}")));
        assert_eq!(l["title"], DemoSite::title_of(n), "{l}");
        assert_eq!(l["error"], Value::Null, "{l}");
    }
    assert_eq!(by_url("not a url")["error"], "invalid_input");
    assert_eq!(by_url("ftp://127.0.0.1/file")["error"], "invalid_input");
    assert_eq!(by_url(&refused)["error"], "navigation");
    assert_eq!(
        by_url("http://no-such-host.invalid/")["error"],
        "navigation"
    );
    let missing = by_url(&site.url("/missing"));
    assert_eq!(
        (&missing["status"], &missing["error"]),
        (&Value::from(404), &Value::Null)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid_input") && stderr.contains("navigation"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_follows_same_host_links_within_depth_and_budget() {
    if !require_browser() {
        return;
    }
    let site = DemoSite::start(SiteConfig {
        pages: 100,
        slow_every: 0,
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    // /p/0 links to /p/1, /p/3 and /p/5; depth 1 stops there.
    let out = run(
        cdpmux(&["crawl", "-", "--quiet", "--depth", "1"]),
        Some(site.url("/p/0")),
    )
    .await;
    assert_ok(&out);
    let pages: BTreeSet<(usize, u64)> = json_lines(&out)
        .iter()
        .map(|l| {
            (
                page_number(l["url"].as_str().expect("url")),
                l["depth"].as_u64().expect("depth"),
            )
        })
        .collect();
    assert_eq!(pages, BTreeSet::from([(0, 0), (1, 1), (3, 1), (5, 1)]));

    let out = run(
        cdpmux(&["crawl", "-", "--quiet", "--depth", "10", "--max-pages", "7"]),
        Some(site.url("/p/0")),
    )
    .await;
    assert_ok(&out);
    assert_eq!(json_lines(&out).len(), 7, "the page budget holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_a_table() {
    if !require_browser() {
        return;
    }
    let out = run(
        cdpmux(&[
            "bench",
            "--count",
            "12",
            "--concurrency",
            "2",
            "--warmup",
            "2",
        ]),
        None,
    )
    .await;
    assert_ok(&out);
    let table = text(&out.stdout);
    for expected in [
        "fresh page per job",
        "pool",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "jobs/s",
        "reuse",
        "cut",
    ] {
        assert!(
            table.contains(expected),
            "{expected:?} missing from:\n{table}"
        );
    }
}

#[tokio::test]
async fn bench_json_on_the_simulated_browser() {
    let out = run(
        cdpmux(&[
            "bench",
            "--sim",
            "--job",
            "batch",
            "--count",
            "30",
            "--concurrency",
            "4",
            "--json",
        ]),
        None,
    )
    .await;
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["job"], "batch");
    assert_eq!(report["fresh_page"]["jobs"], 30);
    assert_eq!(report["pool"]["jobs"], 30);
    assert_eq!(report["pool"]["errors"], 0);
    assert!(
        report["pool"]["reuse_rate"]
            .as_f64()
            .is_some_and(|r| r > 0.5),
        "{report}"
    );
    assert!(report["cut"]["p50"].is_number());
}

#[tokio::test]
async fn without_chromium_the_message_says_how_to_install_it() {
    let empty = tempfile::tempdir().expect("a temporary directory");
    for args in [
        &["crawl", "--demo"][..],
        &["bench"][..],
        &["crawl", "--demo", "--browser", "/nonexistent/chrome"][..],
    ] {
        let mut cmd = cdpmux(args);
        cmd.env("PATH", empty.path()).env_remove("CDPMUX_CHROME");
        let out = run(cmd, None).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("apt-get install -y chromium"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--sim"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn sim_crawl_reads_stdin_and_prints_metrics() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("out.jsonl");
    let out = run(
        cdpmux(&[
            "crawl",
            "--sim",
            "--quiet",
            "--affinity",
            "host",
            "--priority",
            "high",
            "--metrics",
            "json",
            "-o",
            output.to_str().expect("utf-8 path"),
        ]),
        Some("http://a.test/one\nhttp://b.test/two?title=Two\nhttp://a.test/one#dup\n\u{0}\u{7f}junk\n".into()),
    )
    .await;
    assert_ok(&out);
    let written = std::fs::read_to_string(&output).expect("the output file");
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{written}");
    let one = lines
        .iter()
        .find(|l| l["url"] == "http://a.test/one")
        .expect("a.test");
    assert_eq!(one["title"], "sim: /one");
    let two = lines
        .iter()
        .find(|l| l["url"] == "http://b.test/two?title=Two")
        .expect("b.test");
    assert_eq!(two["title"], "Two");
    assert!(lines.iter().any(|l| l["error"] == "invalid_input"));
    // With -o, the summary and the metrics go to stdout.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("crawl summary"), "{stdout}");
    let json = &stdout[stdout.find("\n{").expect("a JSON snapshot")..];
    let snapshot: Value = serde_json::from_str(json).expect("the snapshot is JSON");
    assert_eq!(snapshot["counters"]["jobs_ok"], 2);
}

#[tokio::test]
async fn metrics_are_served_while_the_crawl_runs() {
    let mut child = cdpmux(&[
        "crawl",
        "--sim",
        "--quiet",
        "--metrics-addr",
        "127.0.0.1:0",
        "-",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .expect("start cdpmux");
    let check = async {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"http://a.test/first\n")
            .await
            .expect("write a URL");
        stdin.flush().await.expect("flush");
        // The address line is printed before the first URL is read; the crawl then waits
        // for more input, so the server is certainly up while we ask.
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = stderr
                .next_line()
                .await
                .expect("read stderr")
                .expect("an address line");
            if let Some(rest) = line.strip_prefix("cdpmux: metrics at http://") {
                break rest.trim_end_matches("/metrics").to_owned();
            }
        };
        // Wait for the first page's line: its job is then counted in the metrics.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = stdout
            .next_line()
            .await
            .expect("read stdout")
            .expect("a JSON line");
        assert!(first.contains("http://a.test/first"), "{first}");

        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect to /metrics");
        // The server answers only a loopback Host with its own port.
        conn.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .await
            .expect("read the answer");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("cdpmux_jobs_total{outcome=\"ok\"}"),
            "{answer}"
        );

        drop(stdin); // end of input: the crawl finishes
        let rest = stdout.next_line().await.expect("read stdout");
        assert_eq!(rest, None, "nothing more on stdout");
        let status = child.wait().await.expect("wait for cdpmux");
        assert!(status.success(), "{status}");
    };
    tokio::time::timeout(RUN_LIMIT, check)
        .await
        .expect("the metrics check finished in time");
}

#[tokio::test]
async fn bad_usage_is_refused_with_a_reason() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["crawl", "--sim", "--isolation", "per-key", "-"],
            "--affinity host",
        ),
        (
            &["crawl", "--sim", "--metrics-addr", "0.0.0.0:9100", "-"],
            "only loopback",
        ),
        (
            &["crawl", "--sim", "/nonexistent/urls.txt"],
            "cannot read the URL list",
        ),
        (
            &["crawl", "--sim", "--concurrency", "0", "-"],
            "concurrency",
        ),
        (
            &["crawl", "--sim", "--timeout", "soon", "-"],
            "bad duration",
        ),
    ];
    for (args, expected) in cases {
        let out = run(cdpmux(args), None).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
