//! `cdpmux crawl --frontier redis://...`: several crawl processes share one frontier in
//! Redis, against real Chromium. Each test starts its own `redis-server` on a free
//! loopback port (no persistence) and kills it when done, even on panic
//! (`scripts/ensure-redis.sh` installs the server). Without Chromium or `redis-server` a
//! test prints SKIPPED, and fails instead when `CDPMUX_REQUIRE_BROWSER=1` (CI).
//!
//! The pages come from several demo sites (the demo site is one `host:port`, and a shared
//! crawl partitions by site), listed in one URL file that every node reads.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use support::{browsers_of, live_members, skip_unless_required, GroupsGuard};
use tokio::process::{Child, Command};

/// Longest a whole crawl may take; past it the nodes are killed and the test fails.
const CRAWL_LIMIT: Duration = Duration::from_secs(300);
/// How long the browsers of a killed node may outlive it.
const DIE_WITHIN: Duration = Duration::from_secs(2);
/// Lease of the nodes in the tests: short, so the survivors reclaim a dead node's pages
/// soon.
const LEASE: &str = "2s";

/// True when Chromium and redis-server are there; see the module docs otherwise.
fn require_browser_and_redis() -> bool {
    let browser = Launch::new().find_executable().map(|_| ());
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("redis-server: {e} (run scripts/ensure-redis.sh)"));
    match browser.map_err(|e| e.to_string()).and(redis) {
        Ok(()) => true,
        Err(e) => skip_unless_required(&e),
    }
}

/// A `redis-server` of the test's own, killed (and reaped) on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn frontier(&self, name: &str) -> String {
        format!("redis://127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one command with `redis-cli`; its output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Demo sites with `pages` pages in all, bare (no assets, no slow or heavy pages), and
/// a file listing every page.
struct Sites {
    sites: Vec<DemoSite>,
    list: PathBuf,
}

impl Sites {
    fn start(count: usize, pages: usize, dir: &Path) -> Sites {
        let sites: Vec<DemoSite> = (0..count)
            .map(|_| {
                DemoSite::start(SiteConfig {
                    pages: pages / count,
                    slow_every: 0,
                    heavy_every: 0,
                    assets: false,
                    ..SiteConfig::default()
                })
                .expect("start a demo site")
            })
            .collect();
        // Interleaved, so every node's first lines span the sites.
        let mut urls = Vec::new();
        for i in 0..pages / count {
            for site in &sites {
                urls.push(site.url(&format!("/p/{i}")));
            }
        }
        let list = dir.join("urls.txt");
        std::fs::write(&list, urls.join("\n") + "\n").expect("write the URL list");
        Sites { sites, list }
    }

    fn all_pages(&self) -> BTreeSet<String> {
        self.sites.iter().flat_map(DemoSite::page_urls).collect()
    }
}

/// Starts one node of the crawl `frontier`, writing to `out`.
fn node(sites: &Sites, frontier: &str, name: &str, concurrency: u32, out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cdpmux"))
        .arg("crawl")
        .arg(&sites.list)
        .args(["--frontier", frontier, "--node", name, "--lease", LEASE])
        .args(["--concurrency", &concurrency.to_string(), "--sessions", "4"])
        .args(["--depth", "1", "--quiet", "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cdpmux")
}

/// The URL of every complete JSON line of `path` (a killed node's last line may be cut).
fn urls_in(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["url"].as_str().expect("a url").to_owned())
        .collect()
}

/// Waits for a node to end on its own; returns its stdout (the summary) and stderr.
async fn finish(child: Child, name: &str) -> (String, String) {
    let out = tokio::time::timeout(CRAWL_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not end within {CRAWL_LIMIT:?} (killed)"))
        .expect("wait for cdpmux");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name} ended with {}:\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_one_killed_and_crawl_every_page_once() {
    if !require_browser_and_redis() {
        return;
    }
    const PAGES: usize = 1000;
    let dir = tempfile::tempdir().expect("a temp dir");
    let redis = RedisServer::start();
    let sites = Sites::start(10, PAGES, dir.path());
    let all = sites.all_pages();
    let frontier = redis.frontier("three");

    let outs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("node{i}.jsonl")))
        .collect();
    let mut nodes: Vec<Option<Child>> = (0..3)
        .map(|i| Some(node(&sites, &frontier, &format!("n{i}"), 4, &outs[i])))
        .collect();

    // Kill the busiest node at about a third of the crawl.
    let started = Instant::now();
    let victim = loop {
        let counts: Vec<usize> = outs.iter().map(|o| urls_in(o).len()).collect();
        if counts.iter().sum::<usize>() >= PAGES / 3 {
            break (0..3).max_by_key(|&i| counts[i]).expect("three nodes");
        }
        assert!(
            started.elapsed() < CRAWL_LIMIT,
            "a third of the crawl not done within {CRAWL_LIMIT:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut browsers = Vec::new();
    for child in nodes.iter().flatten() {
        browsers.extend(browsers_of(child.id().expect("running")));
    }
    let _guard = GroupsGuard(browsers.clone());
    let mut killed = nodes[victim].take().expect("the victim runs");
    killed.start_kill().expect("SIGKILL the node");
    killed.wait().await.expect("reap the killed node");
    // What the dead node held: still in its in-flight list, or already put back (in one
    // step, all of it) if a survivor saw its lease run out; read both at once.
    let held: usize = redis
        .cli(&[
            "EVAL",
            "return redis.call('LLEN', KEYS[1]) + tonumber(redis.call('GET', KEYS[2]) or '0')",
            "2",
            &format!("cdpmux:three:inflight:n{victim}"),
            "cdpmux:three:reclaimed",
        ])
        .parse()
        .expect("EVAL answers a number");

    let mut summaries = Vec::new();
    for (i, child) in nodes.into_iter().enumerate() {
        if let Some(child) = child {
            summaries.push(finish(child, &format!("node n{i}")).await);
        }
    }

    // Every page is in some output; duplicates only from what the dead node held.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for out in &outs {
        for url in urls_in(out) {
            *seen.entry(url).or_default() += 1;
        }
    }
    let covered: BTreeSet<String> = seen.keys().cloned().collect();
    let missing: Vec<&String> = all.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "{} pages missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(covered, all, "no page outside the sites");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let reclaimed: usize = redis
        .cli(&["GET", "cdpmux:three:reclaimed"])
        .parse()
        .unwrap_or(0);
    eprintln!(
        "node n{victim} killed holding {held} pages; {reclaimed} reclaimed, {duplicates} \
         visited twice"
    );
    assert_eq!(
        reclaimed, held,
        "every page the dead node held was put back"
    );
    assert!(
        duplicates <= held,
        "{duplicates} duplicates, but the dead node held {held}"
    );
    for (stdout, _) in &summaries {
        assert!(
            stdout.contains(&format!("{reclaimed} reclaimed")),
            "the summary counts the reclaimed pages:\n{stdout}"
        );
    }
    assert_eq!(redis.cli(&["GET", "cdpmux:three:open"]), "0");

    // No browser of any node is left, the dead node's included.
    let gone = Instant::now();
    loop {
        let left: Vec<u32> = browsers.iter().flat_map(|&b| live_members(b)).collect();
        if left.is_empty() {
            break;
        }
        assert!(gone.elapsed() < DIE_WITHIN, "browsers still run: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same crawl on one node visits the same pages, each once.
    let single = dir.path().join("single.jsonl");
    let one = node(&sites, &redis.frontier("single"), "solo", 8, &single);
    finish(one, "the single node").await;
    let urls = urls_in(&single);
    let once: BTreeSet<String> = urls.iter().cloned().collect();
    assert_eq!(once.len(), urls.len(), "one node visits each page once");
    assert_eq!(once, covered, "one node crawls the same pages as three");
}

/// CPU time (user + system) of the children reaped so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage(2) writes into the struct we pass; zeroed is a valid start.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The numbers of a summary's `redis` line: round trips per page and % of page time.
fn redis_line(summary: &str) -> (f64, f64) {
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("redis "))
        .unwrap_or_else(|| panic!("no redis line in:\n{summary}"));
    let numbers: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[2])
}

/// Pages/s with 1, 2 and 3 nodes on 1,000 pages (10 sites) at concurrency 16 per node,
/// CPU per page, and what Redis costs per page. Not a test: run it by hand
/// (docs/scaling.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn bench_nodes() {
    if !require_browser_and_redis() {
        return;
    }
    const PAGES: usize = 1000;
    let dir = tempfile::tempdir().expect("a temp dir");
    let redis = RedisServer::start();
    let sites = Sites::start(10, PAGES, dir.path());
    println!(
        "| nodes | pages/s | CPU ms/page | Redis round trips/page | Redis time, % of page time |"
    );
    println!("|---|---|---|---|---|");
    for n in 1..=3 {
        let frontier = redis.frontier(&format!("bench{n}"));
        let cpu = children_cpu();
        let started = Instant::now();
        let nodes: Vec<Child> = (0..n)
            .map(|i| {
                let out = dir.path().join(format!("bench{n}-{i}.jsonl"));
                node(&sites, &frontier, &format!("b{i}"), 16, &out)
            })
            .collect();
        // On a loaded machine a page may fail (exit 1); the figures still hold.
        let mut lines = Vec::new();
        for child in nodes {
            let out = tokio::time::timeout(CRAWL_LIMIT, child.wait_with_output())
                .await
                .expect("a bench node ends in time")
                .expect("wait for cdpmux");
            let summary = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{}\n{summary}",
                out.status
            );
            lines.push(summary);
        }
        let wall = started.elapsed();
        let cpu = children_cpu() - cpu;
        let (mut trips, mut share) = (0.0, 0.0f64);
        for summary in &lines {
            let (t, s) = redis_line(summary);
            trips += t / n as f64;
            share = share.max(s);
        }
        println!(
            "| {n} | {:.1} | {:.1} | {trips:.2} | {share:.2}% (worst node) |",
            PAGES as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e3 / PAGES as f64,
        );
    }
}

/// Runs the binary with `args` (simulated browser, no Redis needed) to its end.
async fn run_sim(args: &[&str]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_cdpmux"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cdpmux");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("cdpmux ends within a minute")
        .expect("wait for cdpmux")
}

#[tokio::test]
async fn a_bad_frontier_address_is_refused_before_anything_starts() {
    for bad in [
        "http://127.0.0.1/x",
        "redis://127.0.0.1:6379",
        "redis://h/a b",
    ] {
        let out = run_sim(&["crawl", "--sim", "--demo", "--frontier", bad]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("redis://"),
            "{bad}: the message shows the form: {stderr}"
        );
    }
    let out = run_sim(&["crawl", "--sim", "--demo", "--node", "n1"]).await;
    assert_eq!(out.status.code(), Some(2), "--node needs --frontier");
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_start_and_leaves_the_output_alone() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&output, "kept\n").expect("write the old output");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let frontier = format!("redis://127.0.0.1:{port}/x");
    let out = run_sim(&[
        "crawl",
        "--sim",
        "--demo",
        "--frontier",
        &frontier,
        "-o",
        output.to_str().expect("a UTF-8 path"),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not reach Redis at redis://127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "kept\n");
}

/// `(url, error)` of every complete JSON line of `path`.
fn lines_in(path: &Path) -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["url"].as_str().expect("a url").to_owned(),
                v["error"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_by_a_signal_gives_its_pages_back() {
    if !require_browser_and_redis() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let redis = RedisServer::start();
    let sites = Sites::start(4, 200, dir.path());
    let frontier = redis.frontier("stop");
    let (out_a, out_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));

    let a = node(&sites, &frontier, "a", 2, &out_a);
    let started = Instant::now();
    while urls_in(&out_a).len() < 20 {
        assert!(started.elapsed() < CRAWL_LIMIT, "node a wrote no 20 lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = a.id().expect("node a runs") as libc::pid_t;
    // SAFETY: kill(2) with the pid of our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopped = tokio::time::timeout(CRAWL_LIMIT, a.wait_with_output())
        .await
        .expect("node a ends after its interrupt")
        .expect("wait for node a");
    let summary = String::from_utf8_lossy(&stopped.stdout);
    assert_eq!(stopped.status.code(), Some(130), "{summary}");
    // It left nothing leased and is no longer a live node.
    assert_eq!(redis.cli(&["LLEN", "cdpmux:stop:inflight:a"]), "0");
    assert_eq!(redis.cli(&["ZSCORE", "cdpmux:stop:nodes", "a"]), "");
    let released = redis.cli(&["GET", "cdpmux:stop:released"]);
    if released != "0" && !released.is_empty() {
        assert!(
            summary.contains(&format!("{released} unfinished URLs given back")),
            "{summary}"
        );
    }

    // Another node finishes the crawl: every page ok exactly once between the two (no
    // node died, so no duplicate), the pages a cut off included.
    let b = node(&sites, &frontier, "b", 4, &out_b);
    finish(b, "node b").await;
    let mut ok: HashMap<String, usize> = HashMap::new();
    for (url, error) in lines_in(&out_a).into_iter().chain(lines_in(&out_b)) {
        match error.as_deref() {
            None => *ok.entry(url).or_default() += 1,
            Some(kind) => assert_eq!(kind, "cancelled", "{url}"),
        }
    }
    let twice: Vec<&String> = ok.iter().filter(|(_, &n)| n > 1).map(|(u, _)| u).collect();
    assert!(twice.is_empty(), "pages visited twice: {twice:?}");
    let covered: BTreeSet<String> = ok.into_keys().collect();
    assert_eq!(covered, sites.all_pages(), "every page ok once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_redis_stops_the_node_with_a_clear_error() {
    if !require_browser_and_redis() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut redis = RedisServer::start();
    let sites = Sites::start(2, 200, dir.path());
    let out = dir.path().join("lost.jsonl");
    let child = node(&sites, &redis.frontier("lost"), "lost", 2, &out);
    let started = Instant::now();
    while urls_in(&out).len() < 10 {
        assert!(started.elapsed() < CRAWL_LIMIT, "no 10 lines written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.child.kill().expect("kill redis-server");
    let _ = redis.child.wait();
    let ended = tokio::time::timeout(CRAWL_LIMIT, child.wait_with_output())
        .await
        .expect("the node ends on its own")
        .expect("wait for the node");
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the shared frontier failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Every line written is whole, and the summary was printed.
    let text = std::fs::read_to_string(&out).expect("the output");
    assert_eq!(
        text.lines().count(),
        urls_in(&out).len(),
        "only whole lines"
    );
    assert!(String::from_utf8_lossy(&ended.stdout).contains("crawl summary"));
}
