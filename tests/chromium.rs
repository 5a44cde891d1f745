//! The pool against a real headless Chromium, through the public API only: a thousand
//! concurrent navigate-and-read-title jobs on eight reused sessions, leases used from
//! another thread, including one whose holder panics, and a page whose reply is over the
//! message limit.
//!
//! Each test calls `support::require_browser()` first: with `CDPMUX_REQUIRE_BROWSER=1` a
//! missing browser fails the test, otherwise the test says SKIPPED and passes.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{ErrorKind, Job, Page, Pool};
use serde_json::json;

/// The bound on one step (a launch, a lease, a shutdown).
const STEP: Duration = Duration::from_secs(60);

async fn within<F: Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {limit:?}"))
}

fn demo_site(pages: usize) -> DemoSite {
    DemoSite::start(SiteConfig {
        pages,
        slow_every: 0,
        heavy_every: 0,
        // Bare pages: these tests are about sharing sessions, not about page weight.
        assets: false,
        ..SiteConfig::default()
    })
    .expect("start the demo site")
}

/// The pid of the browser a page lives in, as Chromium reports it.
async fn browser_pid(page: &Page) -> cdpmux::Result<u32> {
    let info = page
        .connection()
        .call("SystemInfo.getProcessInfo", json!({}))
        .await?;
    let pid = info["processInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["type"] == "browser")
        .and_then(|p| p["id"].as_u64());
    Ok(pid.expect("SystemInfo.getProcessInfo lists the browser process") as u32)
}

/// Live processes of the browser's process group (it leads its own group).
fn group_members(browser_pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after `(comm)`: state, ppid, pgrp.
                    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
                    let state = fields.next()?;
                    let pgrp = fields.nth(1)?.parse::<u32>().ok()?;
                    Some(state != "Z" && pgrp == browser_pid)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// What one job saw of the session it ran on.
struct Visit {
    title: String,
    /// The session was not in use by another job when this one started.
    exclusive_at_start: bool,
    /// The session was still marked as this job's when it ended.
    exclusive_at_end: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_share_eight_sessions() {
    if !support::require_browser() {
        return;
    }
    const JOBS: usize = 1000;
    const PAGES: usize = 200;
    const SESSIONS: u64 = 8;
    let site = demo_site(PAGES);
    let pool = within(
        "build the pool",
        STEP,
        Pool::builder()
            .launch(Launch::new())
            .shards(2)
            .sessions_per_shard(4)
            .configure(|c| {
                c.max_queue = JOBS;
                c.wait_timeout = Duration::from_secs(180);
                c.job_timeout = Duration::from_secs(240);
                c.command_timeout = Duration::from_secs(60);
            })
            .build(),
    )
    .await
    .expect("launch Chromium and build the pool");
    let pid = within(
        "ask for the browser pid",
        STEP,
        pool.run(Job::new(), async |page| browser_pid(page).await),
    )
    .await
    .expect("read the browser pid");
    let before = pool.metrics().await.counters;

    let in_use: Arc<Mutex<HashSet<String>>> = Arc::default();
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            let (pool, in_use) = (pool.clone(), in_use.clone());
            let url = site.url(&format!("/p/{}", i % PAGES));
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    let target = page.target_id().to_owned();
                    let exclusive_at_start = in_use.lock().unwrap().insert(target.clone());
                    let read = async {
                        page.goto(&url).await?;
                        page.title().await
                    }
                    .await;
                    let exclusive_at_end = in_use.lock().unwrap().remove(&target);
                    Ok(Visit {
                        title: read?,
                        exclusive_at_start,
                        exclusive_at_end,
                    })
                })
                .await
            })
        })
        .collect();
    let results = within(
        "run 1000 jobs",
        Duration::from_secs(300),
        futures_util::future::join_all(jobs),
    )
    .await;
    for (i, result) in results.into_iter().enumerate() {
        let visit = result
            .expect("the job's task did not panic")
            .unwrap_or_else(|e| panic!("job {i} failed: {e}"));
        assert_eq!(visit.title, DemoSite::title_of(i % PAGES), "job {i}");
        assert!(visit.exclusive_at_start, "job {i} got a session in use");
        assert!(visit.exclusive_at_end, "job {i}'s session was shared");
    }

    let snap = pool.metrics().await;
    let (c, b) = (snap.counters, before);
    let created = c.sessions_created - b.sessions_created;
    let reused = c.sessions_reused - b.sessions_reused;
    assert_eq!(c.jobs_ok - b.jobs_ok, JOBS as u64, "{c:?}");
    assert_eq!(c.jobs_failed, 0, "{c:?}");
    assert_eq!(reused + created, JOBS as u64, "{c:?}");
    assert!(
        c.sessions_created <= SESSIONS + c.sessions_crashed + c.sessions_retired,
        "at most one session per slot, plus replacements: {c:?}"
    );
    assert_eq!(snap.gauges.busy, 0);
    println!(
        "{JOBS} jobs: {created} sessions opened, {reused} reuses, job p50 {:.1} ms p99 {:.1} ms",
        snap.job.p50_ms, snap.job.p99_ms
    );

    assert!(
        group_members(pid).contains(&pid),
        "the browser runs before shutdown"
    );
    within("shutdown", STEP, pool.shutdown(Duration::from_secs(5)))
        .await
        .expect("shut the pool down");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the browser {pid} is gone and reaped when shutdown returns"
    );
    // The rest of its group got SIGKILL and is reaped by init, which gives no notice:
    // poll for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = group_members(pid);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "browser processes alive 10 s after shutdown: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `body` with a lease on a new thread with its own runtime, like a caller that
/// knows nothing of the pool's threads.
fn on_own_thread<T: Send + 'static>(
    pool: &Pool,
    body: impl AsyncFnOnce(cdpmux::Lease) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let pool = pool.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
            .block_on(async move {
                let lease = within("acquire", STEP, pool.acquire(Job::new()))
                    .await
                    .expect("acquire a lease");
                body(lease).await
            })
    })
}

/// Joins `thread` without blocking the runtime.
async fn join<T: Send + 'static>(thread: std::thread::JoinHandle<T>) -> std::thread::Result<T> {
    within(
        "join the lease thread",
        STEP * 2,
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await
    .expect("the joining task did not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_work_from_other_threads_and_return_on_drop_and_panic() {
    if !support::require_browser() {
        return;
    }
    let site = demo_site(3);
    // One session in all: each step below can only get it if the one before gave it back.
    let pool = within(
        "build the pool",
        STEP,
        Pool::builder()
            .launch(Launch::new())
            .shards(1)
            .sessions_per_shard(1)
            .configure(|c| c.wait_timeout = STEP)
            .build(),
    )
    .await
    .expect("launch Chromium and build the pool");

    let url = site.url("/p/1");
    let used = on_own_thread(&pool, async move |lease| {
        within("goto", STEP, lease.goto(&url)).await?;
        let title = within("title", STEP, lease.evaluate_value("document.title")).await?;
        let sum = within(
            "execute",
            STEP,
            lease.execute(EvaluateParams::new("20 + 22")),
        )
        .await?;
        // Errors decoded in the holder's thread: a script that throws, a method the
        // browser does not know.
        let thrown = within("throw", STEP, lease.evaluate_value("no_such_function()")).await;
        let unknown = within("unknown", STEP, lease.call("No.suchMethod", json!({}))).await;
        let kinds = [thrown, unknown].map(|r| r.map_err(|e| e.kind()));
        Ok::<_, cdpmux::Error>((title, sum.result.value, kinds))
    });
    let (title, sum, kinds) = join(used)
        .await
        .expect("the lease thread did not panic")
        .expect("the lease's commands succeed");
    assert_eq!(title, json!(DemoSite::title_of(1)));
    assert_eq!(sum, Some(json!(42)));
    assert_eq!(
        kinds,
        [Err(ErrorKind::Script), Err(ErrorKind::Protocol)],
        "a throwing script, an unknown method"
    );
    let snap = support::metrics_until(&pool, STEP, |s| s.gauges.busy == 0).await;
    assert_eq!(
        snap.gauges.busy, 0,
        "the dropped lease gave its session back"
    );

    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let panicked = on_own_thread(&pool, async move |lease| {
        // The lease is held (owned by this closure) until the panic unwinds it.
        let _ = held_tx.send(lease.shard());
        panic!("the lease holder fails");
    });
    within("the lease is held", STEP, held_rx)
        .await
        .expect("the lease thread got its lease");
    assert!(
        join(panicked).await.is_err(),
        "the lease thread panicked while holding the lease"
    );
    let snap = support::metrics_until(&pool, STEP, |s| s.gauges.busy == 0).await;
    assert_eq!(
        snap.gauges.busy, 0,
        "the unwound lease gave its session back"
    );

    // The single session serves again, from this runtime.
    let url = site.url("/p/2");
    let title = within(
        "a job after the panic",
        STEP,
        pool.run(Job::new(), async move |page| {
            page.goto(&url).await?;
            page.title().await
        }),
    )
    .await
    .expect("the pool still serves after a holder panicked");
    assert_eq!(title, DemoSite::title_of(2));
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.sessions_created, 1, "{:?}", snap.counters);
    assert_eq!(snap.gauges.busy, 0);
    within("shutdown", STEP, pool.shutdown(Duration::from_secs(5)))
        .await
        .expect("shut the pool down");
}

/// This process's peak resident set (`VmHWM` in /proc/self/status), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Issue 19, finding 5: a page that answers with a title over the message limit costs
/// one socket, not the process: only its job fails, the jobs on
/// the same socket run again on a fresh page, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_message_limit_fails_only_its_own_job() {
    if !support::require_browser() {
        return;
    }
    let before = peak_rss();
    let pool = within(
        "build",
        STEP,
        Pool::builder()
            .launch(Launch::new())
            .shards(1) // one socket for every job
            .configure(|c| {
                c.sessions_per_shard = 4;
                c.health_interval = Duration::from_millis(100);
                // Chromium never sends a 300 MB reply at all (the call just hangs until
                // its deadline; see docs/reliability.md): a 32 MiB limit and a 40 MB
                // title take the same road, over the limit.
                c.max_message_size = 32 << 20;
            })
            .build(),
    )
    .await
    .expect("build a pool on Chromium");

    // Three jobs whose first run waits on a promise that never settles (only the loss
    // of the socket can end it), and whose retry answers at once.
    let mut others = Vec::new();
    for i in 0..3u64 {
        let pool = pool.clone();
        let runs = Arc::new(AtomicU64::new(0));
        others.push(tokio::spawn(async move {
            let job = Job::new()
                .retries(2)
                .command_timeout(Duration::from_secs(600));
            let counted = runs.clone();
            let v = pool
                .run(job, async move |page| {
                    let script = match counted.fetch_add(1, Ordering::SeqCst) {
                        0 => "new Promise(() => {})".to_owned(),
                        _ => format!("{i} + 100"),
                    };
                    page.evaluate_value(&script).await
                })
                .await;
            (v, runs.load(Ordering::SeqCst))
        }));
    }
    let snap = support::metrics_until(&pool, STEP, |s| s.gauges.busy == 3).await;
    assert_eq!(snap.gauges.busy, 3, "the three jobs hold their pages");

    let t0 = std::time::Instant::now();
    let hostile = within(
        "the hostile job",
        STEP,
        pool.run(
            Job::new().command_timeout(Duration::from_secs(50)),
            async |page| {
                page.evaluate_value("document.title = 'x'.repeat(40 << 20); document.title")
                    .await
            },
        ),
    )
    .await;
    eprintln!("hostile job ended after {:?}", t0.elapsed());
    let err = hostile.expect_err("a 40 MB reply is over the limit");
    assert_eq!(err.kind(), ErrorKind::ConnectionClosed, "{err}");
    assert!(err.to_string().contains("over the 32 MiB limit"), "{err}");

    for (i, other) in others.into_iter().enumerate() {
        let (v, runs) = within("another job", STEP, other)
            .await
            .expect("the job's task");
        assert_eq!(v.expect("retried on a fresh page"), json!(i + 100));
        assert_eq!(runs, 2, "its first run was cut by the lost socket");
    }
    let snap = pool.metrics().await;
    assert!(snap.counters.reconnects >= 1, "{snap:?}");
    assert_eq!(snap.counters.retries(), 3, "{snap:?}");
    within("shutdown", STEP, pool.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();

    let after = peak_rss();
    eprintln!(
        "peak RSS {} MiB before, {} MiB after a 40 MB reply was refused",
        before >> 20,
        after >> 20
    );
    assert!(after < 2 << 30, "peak RSS {after} bytes");
}
