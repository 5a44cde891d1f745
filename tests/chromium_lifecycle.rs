//! Session lifecycle on real Chromium: crashed and killed renderers, a killed browser,
//! context isolation of cookies, and hidden tabs that still run their timers.

mod support;

use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Affinity, ErrorKind, Isolation, Job, Pool};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(60);

async fn chromium_pool(sessions: usize, configure: impl FnOnce(&mut cdpmux::Config)) -> Pool {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(sessions)
        .configure(configure)
        .build()
        .await
        .expect("launch Chromium and build a pool")
}

/// Runs a job that signals once it is inside `page`, then waits on a 30 s promise.
fn long_job(
    pool: &Pool,
) -> (
    oneshot::Receiver<()>,
    tokio::task::JoinHandle<cdpmux::Result<serde_json::Value>>,
) {
    let (started_tx, started) = oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    let pool = pool.clone();
    let job = tokio::spawn(async move {
        pool.run(
            Job::new().command_timeout(Duration::from_secs(60)),
            async move |page| {
                page.evaluate_value("1").await?;
                let tx = started_tx.lock().unwrap().take();
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                page.evaluate_value("new Promise(r => setTimeout(r, 30000))")
                    .await
            },
        )
        .await
    });
    (started, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_page_fails_its_job_fast_and_the_pool_refills() {
    if !support::require_browser() {
        return;
    }
    let pool = chromium_pool(2, |_| {}).await;
    // Page.crash from inside the job, with a long call in flight on another task.
    let started = Instant::now();
    let err = pool
        .run(
            Job::new().command_timeout(Duration::from_secs(60)),
            async |page| {
                let pending = page.evaluate_value("new Promise(r => setTimeout(r, 30000))");
                let crash = async {
                    page.evaluate_value("1").await?;
                    page.call("Page.crash", serde_json::json!({})).await
                };
                let (pending, _) = tokio::join!(pending, crash);
                pending
            },
        )
        .await
        .unwrap_err();
    eprintln!(
        "Page.crash: job failed with {:?} after {:?}",
        err.kind(),
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");

    // Killing the renderer process by pid.
    let browser = pool.browser_pids()[0];
    let (in_page, job) = long_job(&pool);
    in_page.await.unwrap();
    let renderers = support::group_processes(browser, "--type=renderer");
    assert!(!renderers.is_empty());
    let killed = Instant::now();
    for pid in renderers {
        // SAFETY: plain signal to a process of the browser we launched.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let err = tokio::time::timeout(LIMIT, job)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    eprintln!(
        "renderer SIGKILL: job failed with {:?} after {:?}",
        err.kind(),
        killed.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");

    // The next job succeeds, and the pool is back to its size.
    let v = pool
        .run(Job::new(), async |page| page.evaluate_value("6*7").await)
        .await
        .unwrap();
    assert_eq!(v, 42);
    let s =
        support::metrics_until(&pool, LIMIT, |s| s.gauges.idle >= 1 && s.gauges.busy == 0).await;
    assert!(s.counters.sessions_crashed >= 2, "{:?}", s.counters);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_is_relaunched() {
    if !support::require_browser() {
        return;
    }
    let pool = chromium_pool(2, |c| {
        c.health_interval = Duration::from_millis(200);
        c.reconnect_base = Duration::from_millis(50);
        c.reconnect_max = Duration::from_millis(500);
    })
    .await;
    let first = pool.browser_pids()[0];
    let (in_page, job) = long_job(&pool);
    in_page.await.unwrap();
    let killed = Instant::now();
    // SAFETY: plain signal to the browser we launched.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let err = tokio::time::timeout(LIMIT, job)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    eprintln!(
        "browser SIGKILL: in-flight job failed with {:?} after {:?}",
        err.kind(),
        killed.elapsed()
    );
    assert!(err.is_crash(), "{err:?}");

    // Jobs submitted while it relaunches fail fast; then they succeed again.
    let mut recovered = None;
    for _ in 0..200 {
        match pool
            .run(Job::new(), async |page| page.evaluate_value("1+1").await)
            .await
        {
            Ok(v) => {
                assert_eq!(v, 2);
                recovered = Some(killed.elapsed());
                break;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::BrowserUnavailable
                            | ErrorKind::SessionCrashed
                            | ErrorKind::ConnectionClosed
                    ),
                    "{e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let recovered = recovered.expect("the pool served again after the browser was killed");
    eprintln!("browser SIGKILL: serving again after {recovered:?}");
    let second = pool.browser_pids()[0];
    assert_ne!(first, second, "a new browser process");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    for pid in [first, second] {
        assert!(
            support::group_processes(pid, "").is_empty(),
            "processes of {pid} left behind"
        );
    }
}

async fn cookie_seen_by_b(isolation: Isolation, url: &str) -> String {
    let pool = chromium_pool(2, |c| c.isolation = isolation).await;
    let (a, b) = (Affinity::soft("tenant-a"), Affinity::soft("tenant-b"));
    let url_a = url.to_owned();
    pool.run(Job::new().affinity(a), async move |page| {
        page.goto(&url_a).await?;
        page.evaluate_value("document.cookie = 'who=a; path=/'")
            .await
    })
    .await
    .unwrap();
    let url_b = url.to_owned();
    let seen = pool
        .run(Job::new().affinity(b), async move |page| {
            page.goto(&url_b).await?;
            page.evaluate_value("document.cookie").await
        })
        .await
        .unwrap();
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    seen.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_per_key_keeps_cookies_apart() {
    if !support::require_browser() {
        return;
    }
    let (base, server) = support::serve_html(vec![("/", "<title>c</title>".to_owned())]).await;
    let url = format!("{base}/");
    assert_eq!(cookie_seen_by_b(Isolation::ContextPerKey, &url).await, "");
    assert_eq!(cookie_seen_by_b(Isolation::Shared, &url).await, "who=a");
    server.abort();
}

/// Milliseconds from navigation start until the page's timer fired.
async fn timer_fired_after(pool: &Pool, url: &str) -> f64 {
    let url = url.to_owned();
    pool.run(Job::new(), async move |page| {
        page.goto(&url).await?;
        page.evaluate_value(
            "new Promise(r => { const done = () => r(window.readyAt); if (window.readyAt) return done(); \
             new MutationObserver(done).observe(document.getElementById('out'), {childList: true, subtree: true, characterData: true}); })",
        )
        .await
    })
    .await
    .unwrap()
    .as_f64()
    .expect("a time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_pooled_tabs_still_run_their_timers() {
    if !support::require_browser() {
        return;
    }
    let site = DemoSite::start(SiteConfig::default()).unwrap();
    let url = site.url("/timer/50");
    for throttled in [false, true] {
        let pool = Pool::builder()
            .launch(Launch::new().background_throttling(throttled))
            .shards(1)
            .sessions_per_shard(2)
            .build()
            .await
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(timer_fired_after(&pool, &url).await);
        }
        // The content the timer writes is there.
        let text = pool
            .run(Job::new(), async |page| {
                page.evaluate_value("document.getElementById('out').textContent")
                    .await
            })
            .await
            .unwrap();
        assert_eq!(text, "ready after 50 ms");
        eprintln!(
            "background tab, throttling {}: 50 ms timer fired after {times:?} ms",
            if throttled {
                "on"
            } else {
                "off (cdpmux default)"
            }
        );
        pool.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

/// The URLs of the page targets in the browser at `ws`.
async fn page_targets(ws: &str) -> Vec<String> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let conn = cdpmux::cdp::Connection::connect(ws, Default::default())
                .await
                .expect("an observer connects");
            let reply = conn
                .call("Target.getTargets", serde_json::json!({}))
                .await
                .expect("Target.getTargets");
            conn.close();
            reply["targetInfos"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["type"] == "page")
                .filter_map(|t| t["url"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .await
}

/// Openings cut off by their deadline in the middle of `Target.createTarget` leave no
/// page behind: the targets Chromium creates after the pool gave up are found by their
/// URL in a health round and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openings_cut_off_by_their_deadline_leave_no_target() {
    if !support::require_browser() {
        return;
    }
    let browser = Launch::new().launch().await.expect("launch Chromium");
    let ws = browser.ws_url().to_owned();
    let pool = Pool::builder()
        .endpoint(ws.clone())
        .shards(1)
        .sessions_per_shard(4)
        .configure(|c| c.health_interval = Duration::from_millis(100))
        .build()
        .await
        .expect("a pool on the launched browser");
    // The browser's own first tab; the pool has opened nothing yet.
    let before = page_targets(&ws).await;
    // Far below what opening a page takes (≈ 35 ms here).
    pool.reconfigure(|c| c.create_timeout = Duration::from_micros(500))
        .unwrap();
    for _ in 0..8 {
        let err = pool
            .run(Job::new(), async |page| page.evaluate_value("1").await)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Timeout(_) | ErrorKind::BrowserUnavailable
            ),
            "{err:?}"
        );
    }
    let s = pool.metrics().await;
    assert!(s.counters.session_create_failures >= 1, "{:?}", s.counters);
    assert_eq!(s.gauges.live(), 0);

    let deadline = Instant::now() + LIMIT;
    let mut now = page_targets(&ws).await;
    let most = now.len();
    while now != before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = page_targets(&ws).await;
    }
    assert_eq!(now, before, "pages left in the browser");
    eprintln!(
        "cut-off openings: {} failed; {} pages in the browser after them, {} in the end",
        s.counters.session_create_failures,
        most,
        now.len()
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    browser.shutdown().await.unwrap();
}
