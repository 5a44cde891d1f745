//! Remote browsers that come and go: Chromium processes the test launches itself on fixed
//! loopback ports and reaches through `http://127.0.0.1:<port>` endpoints (one down when
//! the pool is built, one killed and restarted with a new id mid-crawl); `wss://` and
//! `https://` through a TLS-terminating proxy the test runs with its own CA, carrying a
//! token and a header; and page capacities on simulated browsers.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::browser::{rustls, tls_client_config, Endpoint, Launch};
use cdpmux::{ErrorKind, Job, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(90);

/// The URL of the tab Chromium opens at startup: not one of the pool's pages.
const FIRST_TAB: &str = "about:blank#first-tab";

/// A Chromium the test runs as a "remote" browser: its own process group, a fixed port
/// (so a restart is at the same address), a fresh profile each start.
struct RemoteChromium {
    port: u16,
    child: Option<Child>,
    profile: Option<tempfile::TempDir>,
}

impl RemoteChromium {
    fn new(port: u16) -> RemoteChromium {
        RemoteChromium {
            port,
            child: None,
            profile: None,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let exe = Launch::new().find_executable().expect("a chromium");
        let profile = tempfile::tempdir().expect("a profile dir");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--remote-debugging-address=127.0.0.1",
        ])
        .arg(format!("--remote-debugging-port={}", self.port))
        .arg(format!("--user-data-dir={}", profile.path().display()));
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--no-sandbox"); // Chromium refuses to run sandboxed as root
        }
        cmd.arg(FIRST_TAB)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        self.child = Some(cmd.spawn().expect("spawn chromium"));
        self.profile = Some(profile);
    }

    /// SIGKILLs the whole process group and reaps the browser.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            let pgid = child.id();
            for _ in 0..500 {
                if support::group_processes(pgid, "").is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.profile = None;
    }

    /// The browser's id once its DevTools server answers (bounded).
    async fn wait_up(&self) -> String {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Some(v) = get_json(self.port, "/json/version").await {
                let ws = v["webSocketDebuggerUrl"].as_str().expect("a ws url");
                return ws.rsplit('/').next().unwrap().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium on port {} did not come up",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Page targets that are the pool's (all but the first tab).
    async fn pool_pages(&self) -> usize {
        let Some(list) = get_json(self.port, "/json/list").await else {
            return 0;
        };
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "page")
            .filter_map(|t| t["url"].as_str())
            // Chromium's own pages (a new-tab page it may open) are not the pool's.
            .filter(|url| *url != FIRST_TAB && !url.starts_with("chrome"))
            .count()
    }
}

impl Drop for RemoteChromium {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error of a build that must fail.
fn refused(built: cdpmux::Result<Pool>, why: &str) -> cdpmux::Error {
    match built {
        Ok(_) => panic!("the build succeeded; expected: {why}"),
        Err(e) => e,
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// `GET path` on the DevTools HTTP server at `port`; `None` when nothing answers.
/// Reads by `Content-Length`: Chromium keeps the connection open after answering.
async fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            raw.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&raw);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })?;
            if body.len() >= length {
                return serde_json::from_str(&body[..length]).ok();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Runs `n` crawl jobs, `in_flight` at a time, each with retries; returns how many
/// succeeded and the first errors.
async fn crawl(pool: &Pool, urls: &[String], n: usize, in_flight: usize) -> (usize, Vec<String>) {
    let mut set = tokio::task::JoinSet::new();
    let (mut ok, mut errors) = (0, Vec::new());
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < in_flight {
            let url = urls[next % urls.len()].clone();
            let pool = pool.clone();
            set.spawn(async move {
                let job = Job::new().retries(5).timeout(Duration::from_secs(60));
                pool.run(job, async move |page| {
                    page.goto(&url).await?;
                    page.title().await
                })
                .await
            });
            next += 1;
        }
        match set.join_next().await.expect("a job").expect("the job task") {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, errors)
}

/// Crawls in rounds until `done` holds (bounded by `LIMIT`), asserting no job fails.
async fn crawl_until<F, Fut>(pool: &Pool, urls: &[String], what: &str, done: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut jobs = 0;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        let (ok, errors) = crawl(pool, urls, 12, 6).await;
        assert!(errors.is_empty(), "{what}: jobs lost: {errors:?}");
        jobs += ok;
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_browsers_restart_and_join_late_without_losing_jobs() {
    if !support::require_browser() {
        return;
    }
    let pages: Vec<(&'static str, String)> = ["/a", "/b", "/c", "/d", "/e", "/f"]
        .into_iter()
        .map(|p| (p, format!("<title>page {p}</title><p>{p}</p>")))
        .collect();
    let (base, _server) = support::serve_html(pages.clone()).await;
    let urls: Vec<String> = pages.iter().map(|(p, _)| format!("{base}{p}")).collect();

    let mut a = RemoteChromium::new(free_port());
    let mut b = RemoteChromium::new(free_port());
    let mut late = RemoteChromium::new(free_port());
    a.start();
    b.start();
    a.wait_up().await;
    let first_b = b.wait_up().await;

    // `late` is down: the build succeeds on the two that answer.
    let pool = Pool::builder()
        .endpoint(format!("http://127.0.0.1:{}", a.port))
        .endpoint(format!("http://127.0.0.1:{}", b.port))
        .endpoint(format!("http://127.0.0.1:{}", late.port))
        .shards(2)
        .sessions_per_shard(3)
        .configure(|c| {
            // Pages retire often, so new ones keep being placed (on the emptiest browser).
            c.max_uses = 3;
            c.health_interval = Duration::from_millis(100);
            c.reconnect_base = Duration::from_millis(50);
            c.reconnect_max = Duration::from_millis(300);
        })
        .build()
        .await
        .expect("the pool builds while one endpoint is down");
    let mut jobs = 0;
    let (ok, errors) = crawl(&pool, &urls, 24, 6).await;
    assert!(errors.is_empty(), "jobs lost: {errors:?}");
    jobs += ok;
    assert_eq!(late.pool_pages().await, 0);

    // The late browser comes up: the pool finds it and opens pages on it.
    late.start();
    late.wait_up().await;
    jobs += crawl_until(&pool, &urls, "pages on the late browser", || async {
        late.pool_pages().await > 0
    })
    .await;

    // Kill `b` in the middle of a crawl; its jobs run again elsewhere.
    let crawling = {
        let (pool, urls) = (pool.clone(), urls.clone());
        tokio::spawn(async move { crawl(&pool, &urls, 60, 6).await })
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    while b.pool_pages().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "b never had pages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.kill();
    let (ok, errors) = crawling.await.expect("the crawl task");
    assert!(errors.is_empty(), "jobs lost while b died: {errors:?}");
    jobs += ok;

    // Restarted at the same address with a new id: used again, no pool restart.
    b.start();
    let second_b = b.wait_up().await;
    assert_ne!(first_b, second_b, "a restarted browser has a new id");
    jobs += crawl_until(&pool, &urls, "pages on the restarted browser", || async {
        b.pool_pages().await > 0
    })
    .await;
    assert!(jobs >= 24 + 60, "{jobs} jobs");

    // Every target on the browsers is a session of the pool, and the reverse.
    support::settled(&pool, LIMIT, "after the crawl").await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let targets = a.pool_pages().await + b.pool_pages().await + late.pool_pages().await;
        let live = pool.metrics().await.gauges.live() as usize;
        if targets == live {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "browser targets {targets} != pool sessions {live}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = pool.metrics().await;
    assert!(snap.counters.reconnects > 0, "{snap:?}");
    pool.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    // Shutdown closes the pool's pages on the remote browsers (Chromium drops a closed
    // target from its list a moment after it answers).
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let left = a.pool_pages().await + b.pool_pages().await + late.pool_pages().await;
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} pages left after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_build_with_no_browser_answering_names_each_one() {
    let (p1, p2) = (free_port(), free_port());
    let built = Pool::builder()
        .endpoint(format!("http://127.0.0.1:{p1}"))
        .endpoint(format!("http://127.0.0.1:{p2}"))
        .shards(1)
        .build()
        .await;
    let err = refused(built, "no browser answers");
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable, "{err}");
    let text = err.to_string();
    for p in [p1, p2] {
        assert!(text.contains(&format!("http://127.0.0.1:{p}")), "{text}");
    }
    assert!(text.contains("connection refused"), "{text}");
}

#[tokio::test]
async fn bad_capacities_are_refused_at_build() {
    let sim = cdpmux::sim::SimBrowser::start(Default::default()).unwrap();
    let zero = Endpoint::parse(&sim.ws_url()).unwrap().capacity(0);
    let built = Pool::builder().endpoint_with(zero).build().await;
    let err = refused(built, "a refused build");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("capacity 0"), "{err}");

    let one = Endpoint::parse(&sim.ws_url()).unwrap().capacity(1);
    let built = Pool::builder().endpoint_with(one).shards(2).build().await;
    let err = refused(built, "a refused build");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("fewer shards"), "{err}");
}

#[tokio::test]
async fn pages_are_spread_by_free_capacity() {
    let small = cdpmux::sim::SimBrowser::start(Default::default()).unwrap();
    let big = cdpmux::sim::SimBrowser::start(Default::default()).unwrap();
    let pool = Pool::builder()
        .endpoint_with(Endpoint::parse(&small.ws_url()).unwrap().capacity(1))
        .endpoint_with(Endpoint::parse(&big.ws_url()).unwrap().capacity(3))
        .shards(1)
        .sessions_per_shard(8)
        .build()
        .await
        .unwrap();
    // Hold as many leases as the browsers have room for: the emptiest browser gets
    // each new page (ties to the first), so the big one holds three.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(support::lease(&pool, LIMIT).await);
    }
    assert_eq!((small.stats().targets, big.stats().targets), (1, 3));
    // A fifth request waits for a page to come back instead of opening one over
    // capacity.
    let fifth = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(Job::new()).await }
    });
    let snap = support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 1).await;
    assert_eq!(
        (snap.gauges.waiting, snap.gauges.live()),
        (1, 4),
        "{snap:?}"
    );
    assert_eq!((small.stats().targets, big.stats().targets), (1, 3));
    drop(held.pop());
    let fifth = tokio::time::timeout(LIMIT, fifth)
        .await
        .expect("the fifth is served in time")
        .unwrap()
        .expect("a lease");
    assert_eq!((small.stats().targets, big.stats().targets), (1, 3));
    drop(fifth);
    drop(held);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// What the proxy saw: the head of every request it forwarded.
type Heads = Arc<Mutex<Vec<String>>>;

/// A TLS-terminating proxy on 127.0.0.1: accepts TLS with `cert`, reads the request head
/// (recorded in the returned list), and forwards it and everything after to `backend`.
async fn tls_proxy(
    backend: u16,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (u16, Heads, tokio::task::JoinHandle<()>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Heads::default();
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // a client that does not trust us
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let Ok(mut browser) = TcpStream::connect(("127.0.0.1", backend)).await else {
                    return;
                };
                if browser.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut browser).await;
            });
        }
    });
    (port, heads, task)
}

#[tokio::test]
async fn wss_and_https_through_a_tls_proxy_carry_the_token_and_header() {
    if !support::require_browser() {
        return;
    }
    let mut chromium = RemoteChromium::new(free_port());
    chromium.start();
    let id = chromium.wait_up().await;

    // A CA of our own, and the proxy's certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let (proxy, heads, _task) = tls_proxy(chromium.port, vec![cert.der().clone()], private).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let trust = Arc::new(tls_client_config(roots));

    let title = |pool: Pool| async move {
        let t = pool
            .run(Job::new(), async move |page| {
                page.evaluate_value("'via ' + 'tls'").await
            })
            .await
            .expect("a job through the proxy");
        pool.shutdown(Duration::from_secs(5)).await.unwrap();
        t
    };

    // https:// lookup, then wss:// to what it answers, both with the token and header.
    let endpoint = Endpoint::parse(&format!("https://127.0.0.1:{proxy}?token=s3cret"))
        .unwrap()
        .header("X-Fleet-Key", "k-42")
        .unwrap()
        .tls_config(trust.clone());
    let pool = Pool::builder()
        .endpoint_with(endpoint)
        .shards(1)
        .sessions_per_shard(1)
        .build()
        .await
        .expect("a pool through the TLS proxy");
    assert_eq!(title(pool).await, serde_json::json!("via tls"));
    {
        let seen = heads.lock().unwrap();
        let lookup = seen
            .iter()
            .find(|h| h.starts_with("GET /json/version?token=s3cret "))
            .unwrap_or_else(|| panic!("no lookup with the token in {seen:?}"));
        assert!(lookup.contains("X-Fleet-Key: k-42"), "{lookup}");
        let upgrade = seen
            .iter()
            .find(|h| h.starts_with(&format!("GET /devtools/browser/{id}?token=s3cret ")))
            .unwrap_or_else(|| panic!("no WebSocket with the token in {seen:?}"));
        assert!(
            upgrade.to_ascii_lowercase().contains("upgrade: websocket"),
            "{upgrade}"
        );
        assert!(
            upgrade.to_ascii_lowercase().contains("x-fleet-key: k-42"),
            "{upgrade}"
        );
    }

    // wss:// given directly.
    let direct = Endpoint::parse(&format!(
        "wss://127.0.0.1:{proxy}/devtools/browser/{id}?token=t2"
    ))
    .unwrap()
    .tls_config(trust);
    let pool = Pool::builder()
        .endpoint_with(direct)
        .shards(1)
        .sessions_per_shard(1)
        .build()
        .await
        .expect("a pool on a wss:// URL");
    assert_eq!(title(pool).await, serde_json::json!("via tls"));
    assert!(heads
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.starts_with(&format!("GET /devtools/browser/{id}?token=t2 "))));

    // Without our CA the default roots refuse the proxy, and the error says so; the
    // token does not appear in it.
    let untrusted = Endpoint::parse(&format!("https://127.0.0.1:{proxy}?token=s3cret")).unwrap();
    let built = Pool::builder()
        .endpoint_with(untrusted)
        .shards(1)
        .build()
        .await;
    let err = refused(built, "an untrusted certificate");
    assert_eq!(err.kind(), ErrorKind::BrowserUnavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains("TLS"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn a_connect_dropped_half_way_does_not_block_the_next_one() {
    // A browser that accepts the socket and then stops answering: the connect attempt
    // outlives the opening's deadline, which drops it half way. Once the browser
    // answers again, the next attempt must start (and not wait forever for the dropped
    // one to finish).
    let sim = cdpmux::sim::SimBrowser::start(Default::default()).unwrap();
    let pool = Pool::builder()
        .endpoint(sim.http_url())
        .shards(1)
        .sessions_per_shard(1)
        .configure(|c| {
            c.create_timeout = Duration::from_millis(300);
            c.reconnect_base = Duration::from_millis(20);
            c.reconnect_max = Duration::from_millis(100);
            c.health_interval = Duration::ZERO; // only openings reconnect
        })
        .build()
        .await
        .unwrap();
    let job = || Job::new().wait_timeout(Duration::from_secs(2));
    pool.run(job(), async move |page| page.evaluate_value("1").await)
        .await
        .expect("a job before the browser hangs");

    // Connecting ends with `Target.setDiscoverTargets`, which now gets no answer.
    sim.black_hole(Some("Target.setDiscoverTargets"));
    sim.drop_connections();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut failed = 0;
    while failed < 3 {
        assert!(tokio::time::Instant::now() < deadline, "jobs kept working");
        let r = pool
            .run(job(), async move |page| page.evaluate_value("1").await)
            .await;
        if r.is_err() {
            failed += 1;
        }
    }

    sim.black_hole(None);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let r = pool
            .run(job(), async move |page| page.evaluate_value("1").await)
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached again: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // the backoff is running
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
