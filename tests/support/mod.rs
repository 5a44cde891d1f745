//! Helpers shared by the integration tests; each test file uses a subset.
#![allow(dead_code)]

use std::time::Duration;

use cdpmux::browser::Launch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// True when a Chromium is available for real-browser tests.
///
/// Without one, panics when `CDPMUX_REQUIRE_BROWSER=1` (CI), else prints a loud SKIPPED
/// line and returns false, so a missing browser is never silent.
pub fn require_browser() -> bool {
    match Launch::default().find_executable() {
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

/// True when a browser of `kind` is installed; like [`require_browser`], a missing one
/// fails under `CDPMUX_REQUIRE_BROWSER=1` and is a loud SKIPPED line otherwise.
pub fn require_browser_kind(kind: cdpmux::browser::BrowserKind) -> bool {
    match Launch::new().kind(kind).find_executable() {
        Ok(exe) => {
            if std::env::var_os("CDPMUX_CHROME").is_some_and(|v| !v.is_empty()) {
                eprintln!(
                    "note: CDPMUX_CHROME={} overrides browser kind {kind}",
                    exe.display()
                );
            }
            true
        }
        Err(e) if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("CDPMUX_REQUIRE_BROWSER=1 but no {kind} browser is available: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no {kind} browser ({e})");
            false
        }
    }
}

/// Serves `pages` (path, HTML body) over plain HTTP on 127.0.0.1; any other path is a 404.
///
/// Returns the base URL (`http://127.0.0.1:<port>`, no trailing slash) and the server
/// task; abort the task to stop it. One request per connection (`Connection: close`).
pub async fn serve_html(pages: Vec<(&'static str, String)>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test HTTP server on 127.0.0.1");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let pages: std::sync::Arc<Vec<(&'static str, String)>> = std::sync::Arc::new(pages);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &pages)).await;
            });
        }
    });
    (base, server)
}

async fn answer(mut stream: TcpStream, pages: &[(&'static str, String)]) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    let page = pages
        .iter()
        .find(|(p, _)| *p == path)
        .filter(|_| method == "GET");
    let (status, body) = match page {
        Some((_, body)) => ("200 OK", body.as_str()),
        None => ("404 Not Found", "not found"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A simulated browser and a pool on it, for tests that need many sessions fast.
pub async fn sim_pool(
    sim: cdpmux::sim::SimConfig,
    shards: usize,
    configure: impl FnOnce(&mut cdpmux::Config),
) -> (cdpmux::sim::SimBrowser, cdpmux::Pool) {
    let browser = cdpmux::sim::SimBrowser::start(sim).expect("start the simulated browser");
    let pool = cdpmux::Pool::builder()
        .endpoint(browser.ws_url())
        .shards(shards)
        .configure(configure)
        .build()
        .await
        .expect("build a pool on the simulated browser");
    (browser, pool)
}

/// One shard of `sessions` sessions on a default simulated browser.
pub async fn one_shard(sessions: usize) -> (cdpmux::sim::SimBrowser, cdpmux::Pool) {
    sim_pool(cdpmux::sim::SimConfig::default(), 1, |c| {
        c.sessions_per_shard = sessions
    })
    .await
}

/// A plain lease, which must come within `limit`.
pub async fn lease(pool: &cdpmux::Pool, limit: Duration) -> cdpmux::Lease {
    tokio::time::timeout(limit, pool.acquire(cdpmux::Job::new()))
        .await
        .expect("acquire answers in time")
        .expect("a lease")
}

/// Polls the pool's metrics until `done` holds, for at most `limit`. Returns the last
/// snapshot; the caller asserts on it (so a timeout shows as a failed assertion).
pub async fn metrics_until(
    pool: &cdpmux::Pool,
    limit: Duration,
    done: impl Fn(&cdpmux::Snapshot) -> bool,
) -> cdpmux::Snapshot {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let snap = pool.metrics().await;
        if done(&snap) || tokio::time::Instant::now() >= deadline {
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded by `limit`) until nothing is busy, opening or waiting, and asserts it
/// (`context` names the case in the failure). Returns the last snapshot.
pub async fn settled(pool: &cdpmux::Pool, limit: Duration, context: &str) -> cdpmux::Snapshot {
    let snap = metrics_until(pool, limit, |s| {
        s.gauges.busy == 0 && s.gauges.creating == 0 && s.gauges.waiting == 0
    })
    .await;
    assert_eq!(
        (snap.gauges.busy, snap.gauges.creating, snap.gauges.waiting),
        (0, 0, 0),
        "{context}: {snap:?}"
    );
    snap
}

/// Waits (bounded) until the simulated browser holds exactly the pool's sessions, then
/// asserts it: none leaked, none half-closed.
pub async fn assert_targets_match_sessions(pool: &cdpmux::Pool, sim: &cdpmux::sim::SimBrowser) {
    let (mut targets, mut live) = (0, 0);
    for _ in 0..200 {
        targets = sim.stats().targets as u64;
        live = pool.metrics().await.gauges.live();
        if targets == live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(targets, live, "browser targets == pool sessions");
}

/// The shard a job runs on.
pub fn current_shard() -> usize {
    cdpmux::current_shard().expect("jobs run on shard threads")
}

/// A TCP forwarder on 127.0.0.1 that can be switched off (existing connections cut,
/// new ones refused by an immediate close) and on again, to simulate an unreachable
/// browser at a stable address.
pub struct Flaky {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Flaky {
    /// Forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                links2.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Flaky {
            port,
            up,
            links,
            accept,
        }
    }

    /// `ws://127.0.0.1:<port><path>` for a target `ws_url`'s path.
    pub fn ws_url(&self, target_ws_url: &str) -> String {
        let path = target_ws_url
            .splitn(4, '/')
            .nth(3)
            .expect("a ws:// URL with a path");
        format!("ws://127.0.0.1:{}/{path}", self.port)
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// Pids of live (not zombie) processes in process group `pgid` whose command line
/// contains `needle` (e.g. `--type=renderer`); all of the group's when `needle` is "".
pub fn group_processes(pgid: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" || fields[2].parse() != Ok(pgid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// A job holding one session until released; see [`hold_session`].
pub struct Held {
    /// Fire (or drop) to let the job finish.
    pub release: tokio::sync::oneshot::Sender<()>,
    /// The target id of the held page.
    pub target: String,
    /// The job; it ends soon after `release`.
    pub task: JoinHandle<()>,
}

/// Runs `job` and keeps its session busy until `Held::release` fires. Returns once the
/// job holds its page.
pub async fn hold_session(pool: &cdpmux::Pool, job: cdpmux::Job) -> Held {
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<String>();
    let held = std::sync::Mutex::new(Some(held));
    let started = std::sync::Mutex::new(Some(started));
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        pool.run(job, async move |page| {
            let s = started.lock().unwrap().take();
            if let Some(s) = s {
                let _ = s.send(page.target_id().to_owned());
            }
            let h = held.lock().unwrap().take();
            if let Some(h) = h {
                let _ = h.await;
            }
            Ok(())
        })
        .await
        .expect("the holding job succeeds");
    });
    let target = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the holding job starts in time")
        .expect("the holding job signals");
    Held {
        release,
        target,
        task,
    }
}
pub mod proxy;
pub mod site;
