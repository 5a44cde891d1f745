//! Lifecycle hooks: `on_page_open` prepares every page a job sees (real Chromium),
//! `before_job` and `after_job` run around each job in order, and a failing hook retires
//! its page without failing a job, until it keeps failing (simulated browser).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::{Error, ErrorKind, Job, Pool, PoolBuilder};
use support::site::{Route, Site};

const LIMIT: Duration = Duration::from_secs(60);

/// A hook error, as a user's hook would return one.
fn refused(what: &str) -> Error {
    Error::hook(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_script_from_on_page_open_reaches_every_job_and_hooks_run_in_order() {
    if !support::require_browser() {
        return;
    }
    let site = Site::start(vec![("/page", Route::html("<p>page</p>"))]).await;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (open_log, before_log, after_log) = (log.clone(), log.clone(), log.clone());
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .on_page_open(async move |page| {
            page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                serde_json::json!({ "source": "window.__hooked = 'yes'" }),
            )
            .await?;
            open_log.lock().unwrap().push("open".into());
            Ok(())
        })
        .before_job(async move |_| {
            before_log.lock().unwrap().push("before".into());
            Ok(())
        })
        .after_job(async move |_| {
            after_log.lock().unwrap().push("after".into());
            Ok(())
        })
        .build()
        .await
        .expect("launch Chromium and build a pool");
    for _ in 0..2 {
        let url = site.url("/page");
        let log = log.clone();
        let hooked = tokio::time::timeout(
            LIMIT,
            pool.run(Job::new(), async move |page| {
                log.lock().unwrap().push("job".into());
                page.goto(&url).await?;
                page.evaluate_value("window.__hooked ?? null").await
            }),
        )
        .await
        .expect("the job ends")
        .expect("the job succeeds");
        assert_eq!(hooked, "yes", "the init script ran in the job's document");
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        ["open", "before", "job", "after", "before", "job", "after"],
        "one page, opened once, two jobs"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A pool of one shard and one session on a simulated browser, with `hooks` added.
async fn sim_pool(
    hooks: impl FnOnce(PoolBuilder) -> PoolBuilder,
) -> (cdpmux::sim::SimBrowser, Pool) {
    let sim = cdpmux::sim::SimBrowser::start(cdpmux::sim::SimConfig::default())
        .expect("start the simulated browser");
    let builder = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(1)
        .sessions_per_shard(1);
    let pool = hooks(builder)
        .build()
        .await
        .expect("build a pool on the simulated browser");
    (sim, pool)
}

/// Fails its first `n` calls, then succeeds.
fn fails_first(
    n: u32,
) -> (
    Arc<AtomicU32>,
    impl AsyncFn(&cdpmux::Page) -> cdpmux::Result<()> + Send + Sync + 'static,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let hook = async move |_: &cdpmux::Page| {
        if counted.fetch_add(1, Ordering::SeqCst) < n {
            Err(refused("not yet"))
        } else {
            Ok(())
        }
    };
    (calls, hook)
}

async fn uses_of_a_job(pool: &Pool) -> cdpmux::Result<u32> {
    tokio::time::timeout(LIMIT, pool.run(Job::new(), async |page| Ok(page.uses())))
        .await
        .expect("the job is answered in bounded time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_page_open_retires_pages_until_it_succeeds_and_fails_no_job() {
    let (hook_calls, hook) = fails_first(2);
    let (_sim, pool) = sim_pool(|b| b.on_page_open(hook)).await;
    assert_eq!(uses_of_a_job(&pool).await.unwrap(), 1, "a fresh page");
    assert_eq!(hook_calls.load(Ordering::SeqCst), 3);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.hook_failures_open, 2);
    assert_eq!(snap.counters.jobs_failed, 0);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_page_open_that_always_fails_fails_the_job_clearly() {
    let (hook_calls, hook) = fails_first(u32::MAX);
    let (_sim, pool) = sim_pool(|b| b.on_page_open(hook)).await;
    let err = uses_of_a_job(&pool).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert!(err.message().contains("on_page_open"), "{err}");
    assert!(
        err.message().contains("not yet"),
        "the hook's own error: {err}"
    );
    assert!(hook_calls.load(Ordering::SeqCst) >= 3);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_before_job_retires_the_page_and_the_job_runs_on_another() {
    let (hook_calls, hook) = fails_first(2);
    let (_sim, pool) = sim_pool(|b| b.before_job(hook)).await;
    assert_eq!(
        uses_of_a_job(&pool).await.unwrap(),
        1,
        "the job ran on the third page, fresh"
    );
    assert_eq!(hook_calls.load(Ordering::SeqCst), 3);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.hook_failures_before, 2);
    assert_eq!(snap.counters.jobs_failed, 0);
    assert!(snap.counters.sessions_created >= 3, "{:?}", snap.counters);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_job_that_always_fails_fails_the_job_which_never_ran() {
    let (_, hook) = fails_first(u32::MAX);
    let (_sim, pool) = sim_pool(|b| b.before_job(hook)).await;
    let ran = Arc::new(AtomicBool::new(false));
    let marker = ran.clone();
    let outcome = tokio::time::timeout(
        LIMIT,
        pool.run(Job::new(), async move |_| {
            marker.store(true, Ordering::SeqCst);
            Ok(())
        }),
    )
    .await
    .expect("the job is answered in bounded time");
    let err = outcome.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert!(err.message().contains("before_job"), "{err}");
    assert!(!ran.load(Ordering::SeqCst), "the job never ran");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_job_keeps_the_result_and_retires_the_page() {
    let (_, hook) = fails_first(1);
    let (_sim, pool) = sim_pool(|b| b.after_job(hook)).await;
    assert_eq!(uses_of_a_job(&pool).await.unwrap(), 1);
    assert_eq!(
        uses_of_a_job(&pool).await.unwrap(),
        1,
        "the first page was retired: the second job got a fresh one"
    );
    assert_eq!(
        uses_of_a_job(&pool).await.unwrap(),
        2,
        "the hook passed: the page is reused"
    );
    assert_eq!(pool.metrics().await.counters.hook_failures_after, 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_job_and_after_job_wrap_a_leases_hold() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (after_tx, mut after) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (before_log, after_log) = (log.clone(), log.clone());
    let (_sim, pool) = sim_pool(move |b| {
        b.before_job(async move |_| {
            before_log.lock().unwrap().push("before".into());
            Ok(())
        })
        .after_job(async move |_| {
            after_log.lock().unwrap().push("after".into());
            let _ = after_tx.send(());
            Ok(())
        })
    })
    .await;
    for _ in 0..2 {
        let lease = support::lease(&pool, LIMIT).await;
        lease.evaluate_value("1").await.unwrap();
        log.lock().unwrap().push("hold".into());
        drop(lease);
        tokio::time::timeout(LIMIT, after.recv())
            .await
            .expect("after_job runs once the lease is back")
            .expect("the hook is alive");
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log, ["before", "hold", "after", "before", "hold", "after"]);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.sessions_created, 1, "one page, reused");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_before_job_gives_the_lease_another_page_until_it_gives_up() {
    let (hook_calls, hook) = fails_first(2);
    let (_sim, pool) = sim_pool(|b| b.before_job(hook)).await;
    let lease = support::lease(&pool, LIMIT).await;
    lease.evaluate_value("1").await.unwrap();
    drop(lease);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 3);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.hook_failures_before, 2);
    assert!(snap.counters.sessions_created >= 3, "{:?}", snap.counters);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();

    let (_, always) = fails_first(u32::MAX);
    let (_sim, pool) = sim_pool(|b| b.before_job(always)).await;
    let err = tokio::time::timeout(LIMIT, pool.acquire(Job::new()))
        .await
        .expect("acquire is answered in bounded time")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert!(err.message().contains("before_job"), "{err}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_job_retires_a_leases_page() {
    let (_, hook) = fails_first(1);
    let (_sim, pool) = sim_pool(|b| b.after_job(hook)).await;
    drop(support::lease(&pool, LIMIT).await);
    // One session per shard: the second lease waits for the first page to be done with.
    let lease = support::lease(&pool, LIMIT).await;
    lease.evaluate_value("1").await.unwrap();
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.hook_failures_after, 1);
    assert_eq!(
        snap.counters.sessions_created, 2,
        "the first page was retired"
    );
    drop(lease);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
