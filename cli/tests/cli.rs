//! The `cdpmux` binary end to end: crawls and benches against real Chromium and the
//! simulated browser, and the failure modes a user meets first (no Chromium, bad input).
//!
//! Every run of the binary has a deadline; on expiry the child is killed (kill_on_drop)
//! and the test fails. Tests that need Chromium print a loud SKIPPED line without it, and
//! fail instead when `CDPMUX_REQUIRE_BROWSER=1` (CI).

mod support;

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::Duration;

use cdpmux::sim::{DemoSite, SiteConfig};
use serde_json::Value;
use support::require_browser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Longest any single run of the binary may take.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// Longest a run that must end promptly (closed output, interrupt) may take: far above
/// what it needs, far below what the bugs these runs catch take (forever, or minutes).
const PROMPT_LIMIT: Duration = Duration::from_secs(60);

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
async fn run(cmd: Command, stdin: Option<String>) -> Output {
    run_within(cmd, stdin, RUN_LIMIT).await
}

/// Waits for `child` within `limit`; past it the child is killed and the test fails.
async fn finish_within(child: tokio::process::Child, limit: Duration) -> Output {
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("cdpmux did not end within {limit:?} (it was killed)"))
        .expect("wait for cdpmux")
}

/// Sends `signal` to `child`.
fn signal(child: &tokio::process::Child, signal: libc::c_int) {
    let pid = child.id().expect("the child is running") as libc::pid_t;
    // SAFETY: kill(2) with the pid of our own child, which we have not reaped yet.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// Runs `cmd` to completion with `stdin` as its input, within `limit`.
async fn run_within(mut cmd: Command, stdin: Option<String>, limit: Duration) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start the cdpmux binary");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
        });
    }
    finish_within(child, limit).await
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
    assert_exit(out, 0);
}

/// The run ended with exit code `code`, and nothing panicked.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "cdpmux ended with {}:\nstderr: {}",
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
    // Some pages failed, some did not: exit 1.
    assert_exit(&out, 1);
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
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("3 queued; dropped: 0 outside --follow"),
        "{stderr}"
    );

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
    // The junk line failed as invalid input: exit 1.
    assert_exit(&out, 1);
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
    let cases: [(&[&str], &str); 6] = [
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
        (
            &["crawl", "--sim", "--timeout", "10000000000000000000s", "-"],
            "is too long",
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

#[tokio::test]
async fn a_closed_stdout_ends_the_crawl_quietly() {
    // `cdpmux crawl --demo --sim | head -1`: the reader leaves after one line.
    let mut child = cdpmux(&["crawl", "--demo", "--sim", "--quiet"])
        .spawn()
        .expect("start cdpmux");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = stdout.next_line().await.expect("read stdout");
    assert!(first.is_some_and(|l| l.contains("\"url\"")), "a first line");
    drop(stdout);
    let out = finish_within(child, PROMPT_LIMIT).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("could not write"), "quietly: {stderr}");
}

#[tokio::test]
async fn a_full_disk_ends_the_crawl_with_an_error() {
    let out = run_within(
        cdpmux(&["crawl", "--demo", "--sim", "--quiet", "-o", "/dev/full"]),
        None,
        PROMPT_LIMIT,
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not write the output to /dev/full"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_failed_start_leaves_the_output_file_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("results.jsonl");
    std::fs::write(&output, "earlier results\n").expect("write the old results");
    let mut cmd = cdpmux(&[
        "crawl",
        "--demo",
        "-o",
        output.to_str().expect("utf-8 path"),
    ]);
    cmd.env("PATH", dir.path()).env_remove("CDPMUX_CHROME");
    let out = run(cmd, None).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&output).expect("the output file"),
        "earlier results\n",
        "a crawl that never started kept the earlier results"
    );
}

#[tokio::test]
async fn the_output_may_not_be_the_input() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let urls = dir.path().join("urls.txt");
    let linked = dir.path().join("same-inode.txt");
    std::fs::write(&urls, "http://a.test/one\n").expect("write the URL list");
    std::fs::hard_link(&urls, &linked).expect("a hard link");
    let urls_arg = urls.to_str().expect("utf-8 path");
    let linked_arg = linked.to_str().expect("utf-8 path");
    for (args, stdin) in [
        (vec!["crawl", "--sim", urls_arg, "-o", urls_arg], None),
        (vec!["crawl", "--sim", urls_arg, "-o", linked_arg], None),
        (vec!["crawl", "--sim", "-", "-o", urls_arg], Some(&urls)),
    ] {
        let mut cmd = cdpmux(&args);
        if let Some(path) = stdin {
            cmd.stdin(std::fs::File::open(path).expect("open the URL list"));
        }
        let out = run(cmd, None).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is also the input"), "{args:?}: {stderr}");
        assert_eq!(
            std::fs::read_to_string(&urls).expect("the URL list"),
            "http://a.test/one\n",
            "{args:?}: the input is untouched"
        );
    }
}

#[tokio::test]
async fn a_signal_before_the_pool_is_built_is_handled() {
    // An endpoint that accepts and never answers: the CLI waits in the pool build, which
    // it reaches only after installing its signal handlers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let child = cdpmux(&["crawl", "--endpoint", &endpoint, "--quiet", "-"])
            .spawn()
            .expect("start cdpmux");
        let (_conn, _) = tokio::time::timeout(PROMPT_LIMIT, listener.accept())
            .await
            .expect("cdpmux asks the endpoint")
            .expect("accept");
        signal(&child, sig);
        let out = finish_within(child, PROMPT_LIMIT).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "signal {sig}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_interrupt_ends_a_deep_crawl_without_new_pages() {
    if !require_browser() {
        return;
    }
    // Every page takes two seconds (ample time to deliver the signal before a page in
    // flight finishes), and each links to three more: without a stop the crawl goes on
    // for minutes.
    let site = DemoSite::start(SiteConfig {
        pages: 300,
        slow_every: 1,
        slow_delay: Duration::from_secs(2),
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let mut child = cdpmux(&[
        "crawl",
        "-",
        "--quiet",
        "--depth",
        "50",
        "--concurrency",
        "3",
        "--timeout",
        "10m",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .expect("start cdpmux");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", site.url("/p/0")).as_bytes())
        .await
        .expect("write the seed");
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(PROMPT_LIMIT, stdout.next_line())
        .await
        .expect("a first page within the limit")
        .expect("read stdout")
        .expect("a first line");
    // /p/0 is done; /p/1, /p/3 and /p/5 are now in flight.
    signal(&child, libc::SIGINT);
    let mut lines = vec![first];
    let rest = async {
        while let Some(line) = stdout.next_line().await.expect("read stdout") {
            lines.push(line);
        }
    };
    tokio::time::timeout(PROMPT_LIMIT, rest)
        .await
        .expect("the crawl ended within the limit");
    let out = finish_within(child, PROMPT_LIMIT).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let mut urls = BTreeSet::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(urls.insert(v["url"].to_string()), "two lines for {line}");
    }
    assert!(
        lines.len() <= 4,
        "no page starts after the interrupt: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cut_off_by_an_interrupt_are_marked_cancelled() {
    if !require_browser() {
        return;
    }
    // Pages slower than the grace period: an interrupt must not wait for them.
    let site = DemoSite::start(SiteConfig {
        pages: 10,
        slow_every: 1,
        slow_delay: Duration::from_secs(600),
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let input: String = (0..4)
        .map(|n| site.url(&format!("/p/{n}")) + "\n")
        .collect();
    let mut child = cdpmux(&[
        "crawl",
        "-",
        "--quiet",
        "--concurrency",
        "4",
        "--timeout",
        "20m",
        "--command-timeout",
        "20m",
    ])
    .stdin(Stdio::piped())
    .spawn()
    .expect("start cdpmux");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write URLs");
    drop(stdin);
    // Wait until the browser asked for all four pages: every one of them has started.
    let started = async {
        while site.requests() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PROMPT_LIMIT, started)
        .await
        .expect("the four pages started");
    signal(&child, libc::SIGINT);
    let out = finish_within(child, PROMPT_LIMIT).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "one line per started page: {lines:#?}");
    let urls: BTreeSet<_> = lines.iter().map(|l| l["url"].to_string()).collect();
    assert_eq!(urls.len(), 4, "{lines:#?}");
    for l in &lines {
        assert_eq!(l["error"], "cancelled", "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_where_no_page_succeeds_exits_3() {
    if !require_browser() {
        return;
    }
    let input: String = (0..3)
        .map(|n| format!("http://127.0.0.1:{}/{n}\n", closed_port()))
        .collect();
    let out = run(cdpmux(&["crawl", "-", "--quiet"]), Some(input)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no page succeeded"), "{stderr}");
    assert_eq!(json_lines(&out).len(), 3);
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 33,
        "a PNG is more than its header: {} bytes",
        png.len()
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_keeps_rendered_html_and_screenshots() {
    if !require_browser() {
        return;
    }
    let site = DemoSite::start(SiteConfig {
        pages: 3,
        slow_every: 0,
        heavy_every: 0,
        ..SiteConfig::default()
    })
    .expect("start the demo site");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (shots, html_dir) = (dir.path().join("shots"), dir.path().join("html/nested"));
    let input = (0..3)
        .map(|n| site.url(&format!("/p/{n}")))
        .collect::<Vec<_>>()
        .join("\n");
    let out = run(
        cdpmux(&[
            "crawl",
            "-",
            "--quiet",
            "--html",
            "--save-html",
            html_dir.to_str().unwrap(),
            "--screenshot",
            shots.to_str().unwrap(),
        ]),
        Some(input),
    )
    .await;
    assert_ok(&out);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{}", text(&out.stdout));
    for line in &lines {
        let n: usize = line["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // The rendered DOM: the title, the three links, and the images the page pulled.
        let html = line["html"]
            .as_str()
            .unwrap_or_else(|| panic!("no html in {line}"));
        assert!(html.starts_with("<html"), "{html}");
        assert!(
            html.contains(&format!("<title>{}</title>", DemoSite::title_of(n))),
            "{html}"
        );
        assert_eq!(html.matches("<a href").count(), 3, "{html}");
        assert_eq!(line["html_truncated"], false, "{line}");
        assert_eq!(line["html_bytes"], html.len() as u64, "{line}");
        let saved = std::path::Path::new(line["html_file"].as_str().unwrap());
        assert_eq!(saved.parent(), Some(html_dir.as_path()));
        assert_eq!(std::fs::read_to_string(saved).unwrap(), html);

        let shot = &line["screenshot"];
        let file = std::path::Path::new(shot["file"].as_str().unwrap_or_else(|| panic!("{line}")));
        assert_eq!(file.parent(), Some(shots.as_path()));
        let (w, h) = png_size(&std::fs::read(file).unwrap());
        // Headless Chromium's device pixel ratio is 1: the PNG is the viewport's size.
        assert_eq!(
            (w, h),
            (
                shot["width"].as_u64().unwrap() as u32,
                shot["height"].as_u64().unwrap() as u32
            ),
            "{line}"
        );
        assert!(w >= 100 && h >= 100, "a real viewport, not a stub: {w}x{h}");
    }
    let names: BTreeSet<_> = std::fs::read_dir(&shots)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "one PNG per page: {names:?}");

    // The cap cuts the HTML (and says so); the headless shell takes screenshots too.
    let out = run(
        cdpmux(&[
            "crawl",
            "-",
            "--quiet",
            "--html",
            "--max-html-bytes",
            "100",
            "--browser-kind",
            "shell",
            "--screenshot",
            shots.to_str().unwrap(),
        ]),
        Some(site.url("/p/1")),
    )
    .await;
    assert_ok(&out);
    let line = &json_lines(&out)[0];
    assert_eq!(line["html"].as_str().unwrap().len(), 100, "{line}");
    assert_eq!(line["html_truncated"], true, "{line}");
    assert!(line.get("html_file").is_none(), "{line}");
    let shot = &line["screenshot"];
    let (w, h) = png_size(&std::fs::read(shot["file"].as_str().unwrap()).unwrap());
    assert_eq!(
        (w as u64, h as u64),
        (
            shot["width"].as_u64().unwrap(),
            shot["height"].as_u64().unwrap()
        )
    );
}

/// Crawls `site`'s pages with `extra` options; returns each page's (title, links), in
/// page order, after checking every line is a 200 on its own URL.
async fn crawl_titles_and_links(site: &DemoSite, extra: &[&str]) -> Vec<(Value, Value)> {
    let urls = site.page_urls();
    let mut args = vec!["crawl", "-", "--quiet", "--concurrency", "4"];
    args.extend_from_slice(extra);
    let out = run(cdpmux(&args), Some(urls.join("\n"))).await;
    assert_ok(&out);
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), urls.len(), "{}", text(&out.stdout));
    lines.sort_by_key(|l| page_number(l["url"].as_str().unwrap()));
    lines
        .iter()
        .map(|l| {
            let url = l["url"].as_str().unwrap();
            assert_eq!(l["error"], Value::Null, "{l}");
            assert_eq!(
                (&l["status"], l["final_url"].as_str()),
                (&Value::from(200), Some(url))
            );
            (l["title"].clone(), l["links"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_profile_never_fetches_what_it_blocks_and_reads_the_same_pages() {
    use cdpmux::sim::AssetKind;
    if !require_browser() {
        return;
    }
    let config = SiteConfig {
        pages: 6,
        slow_every: 0,
        heavy_every: 0,
        ..SiteConfig::default()
    };
    // Each crawl gets its own site, so its request counts are its own.
    let plain_site = DemoSite::start(config.clone()).expect("start the demo site");
    let plain = crawl_titles_and_links(&plain_site, &[]).await;
    for kind in [
        AssetKind::Image,
        AssetKind::Font,
        AssetKind::Stylesheet,
        AssetKind::Script,
    ] {
        assert!(
            plain_site.requests_of(kind) > 0,
            "a default crawl loads {kind:?}: {:?}",
            plain_site.request_counts()
        );
    }

    let fast_site = DemoSite::start(config.clone()).expect("start the demo site");
    let fast = crawl_titles_and_links(&fast_site, &["--profile", "fast"]).await;
    assert_eq!(fast, plain, "the same titles and link counts");
    for kind in [AssetKind::Image, AssetKind::Font, AssetKind::Stylesheet] {
        assert_eq!(
            fast_site.requests_of(kind),
            0,
            "--profile fast fetched {kind:?}: {:?}",
            fast_site.request_counts()
        );
    }
    assert!(
        fast_site.requests_of(AssetKind::Script) > 0,
        "scripts still run: {:?}",
        fast_site.request_counts()
    );

    // --block alone, scripts too, on chromium, waiting for the load event.
    let bare_site = DemoSite::start(config).expect("start the demo site");
    let bare = crawl_titles_and_links(
        &bare_site,
        &[
            "--block",
            "images,fonts,media,stylesheets,scripts",
            "--wait-until",
            "load",
            "--browser-kind",
            "chromium",
        ],
    )
    .await;
    assert_eq!(bare, plain);
    let counts = bare_site.request_counts();
    // The browser's own `/favicon.ico` request is not the page's: Chromium may send it
    // through a path the page's blocking does not see.
    assert!(
        counts
            .keys()
            .all(|path| path.starts_with("/p/") || path == "/favicon.ico"),
        "only the pages themselves were fetched: {counts:?}"
    );
}
