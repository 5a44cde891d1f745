//! Retrying `run` jobs (issue 16, item 5): backoff spacing, `Retry-After`, the job's own
//! deadline, cancellation while a retry waits, fresh or pooled pages (simulated browser,
//! where timing must be forced); and against real Chromium, where Chromium decides: a
//! server answering 503 with `Retry-After` twice, and a refused connection.
//!
//! Timing is checked by order and by lower bounds only (a sleep never ends early), never
//! by an upper threshold.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::{ErrorKind, Job, Navigation, Pool, RetryCause, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bound on one step: a hang shows as a failed test, not a stuck one.
const STEP: Duration = Duration::from_secs(60);

/// The error a page answering `status` (with `Retry-After: retry_after`) makes.
fn answered(status: u16, retry_after: Option<&str>) -> cdpmux::Error {
    let mut nav = Navigation::default();
    nav.url = "http://site.test/".into();
    nav.status = Some(status);
    if let Some(value) = retry_after {
        nav.headers.push(("Retry-After".into(), value.into()));
    }
    nav.error_for_status().expect_err("an error status")
}

/// When each attempt started, shared with the job.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<Instant>>>);

impl Attempts {
    /// Records an attempt; returns its number, 1 for the first.
    fn start(&self) -> usize {
        let mut a = self.0.lock().unwrap();
        a.push(Instant::now());
        a.len()
    }

    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn retries_back_off_exponentially_and_then_succeed() {
    let (_sim, pool) = support::one_shard(1).await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let base = Duration::from_millis(100);
    let policy = RetryPolicy::new(3)
        .backoff(base, Duration::from_secs(10))
        .jitter(0.0);
    let got = tokio::time::timeout(
        STEP,
        pool.run(Job::new().retry(policy), async move |_page| {
            match seen.start() {
                n @ (1 | 2) => Err(answered(if n == 1 { 503 } else { 429 }, None)),
                n => Ok(n),
            }
        }),
    )
    .await
    .expect("the job ends")
    .expect("the third attempt succeeds");
    assert_eq!(got, 3);
    let t = attempts.times();
    assert!(t[1] - t[0] >= base, "first wait {:?}", t[1] - t[0]);
    assert!(
        t[2] - t[1] >= 2 * base,
        "second wait doubles: {:?}",
        t[2] - t[1]
    );
    let c = pool.metrics().await.counters;
    assert_eq!((c.retries_http_status, c.retries()), (2, 2));
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured_over_a_shorter_backoff() {
    let (_sim, pool) = support::one_shard(1).await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let policy = RetryPolicy::new(1).backoff(Duration::from_millis(1), Duration::from_millis(1));
    let got = tokio::time::timeout(
        STEP,
        pool.run(Job::new().retry(policy), async move |_page| {
            match seen.start() {
                1 => Err(answered(503, Some("1"))),
                n => Ok(n),
            }
        }),
    )
    .await
    .expect("the job ends");
    assert_eq!(got.unwrap(), 2);
    let t = attempts.times();
    assert!(
        t[1] - t[0] >= Duration::from_secs(1),
        "waited {:?}",
        t[1] - t[0]
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_retry_that_would_outlast_the_jobs_deadline_is_not_made() {
    let (_sim, pool) = support::one_shard(1).await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    // The site asks for 30 s; the job has 2 s in all: it fails now, with the site's answer.
    let job = Job::new()
        .timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(5).max_retry_after(Duration::from_secs(60)));
    let err = tokio::time::timeout(
        STEP,
        pool.run(job, async move |_page| -> cdpmux::Result<()> {
            seen.start();
            Err(answered(503, Some("30")))
        }),
    )
    .await
    .expect("the job ends")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HttpStatus, "{err}");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(attempts.times().len(), 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_retry_waiting_out_its_backoff_holds_no_page_and_ends_with_its_caller() {
    // One page: another job runs while the first waits out its retry.
    let (_sim, pool) = support::one_shard(1).await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    // Held by the job's closure: dropped when the job is.
    let token = Arc::new(());
    let held = token.clone();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let failed_tx = Mutex::new(Some(failed_tx));
    let policy = RetryPolicy::new(1).backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    let job = Job::new().timeout(Duration::from_secs(7200)).retry(policy);
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(job, async move |_page| -> cdpmux::Result<()> {
                let _held = &held;
                seen.start();
                if let Some(tx) = failed_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                Err(answered(503, None))
            })
            .await
        })
    };
    failed_rx.await.expect("the first attempt ran");
    let other = tokio::time::timeout(STEP, pool.run(Job::new(), async |_page| Ok(7)))
        .await
        .expect("another job gets the page while the first waits to retry");
    assert_eq!(other.unwrap(), 7);
    assert_eq!(attempts.times().len(), 1, "still waiting out its backoff");
    // Dropping the caller's future ends the waiting retry: the job is dropped with it.
    waiting.abort();
    let _ = waiting.await;
    let dropped = async {
        while Arc::strong_count(&token) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, dropped)
        .await
        .expect("the waiting retry ends when its caller leaves");
    assert_eq!(attempts.times().len(), 1, "it never ran again");
    tokio::time::timeout(STEP, pool.idle())
        .await
        .expect("the pool is idle");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_fresh_page_retry_runs_on_another_page() {
    for fresh in [false, true] {
        let (_sim, pool) = support::one_shard(1).await;
        let pages = Arc::new(Mutex::new(Vec::new()));
        let seen = pages.clone();
        let policy = RetryPolicy::new(1)
            .backoff(Duration::from_millis(1), Duration::from_millis(1))
            .fresh_page(fresh);
        let got = tokio::time::timeout(
            STEP,
            pool.run(Job::new().retry(policy), async move |page| {
                let mut p = seen.lock().unwrap();
                p.push(page.target_id().to_string());
                if p.len() == 1 {
                    return Err(answered(503, None));
                }
                Ok(())
            }),
        )
        .await
        .expect("the job ends");
        got.unwrap();
        let p = pages.lock().unwrap().clone();
        assert_eq!(p.len(), 2);
        // One page in the pool: the pooled retry gets it back; a fresh one does not.
        assert_eq!(p[0] != p[1], fresh, "fresh_page({fresh}): {p:?}");
        pool.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn a_job_of_its_own_policy_retries_only_its_causes() {
    let (_sim, pool) = support::one_shard(1).await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let policy = RetryPolicy::new(3).only(&[RetryCause::Crash]);
    let err = tokio::time::timeout(
        STEP,
        pool.run(
            Job::new().retry(policy),
            async move |_page| -> cdpmux::Result<()> {
                seen.start();
                Err(answered(503, None))
            },
        ),
    )
    .await
    .expect("the job ends")
    .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(attempts.times().len(), 1);
    // A bad policy is refused before anything runs.
    let bad = pool
        .run(
            Job::new().retry(RetryPolicy::new(1).jitter(2.0)),
            async |_page| Ok(()),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

// ---- real Chromium ----

async fn chromium_pool() -> Pool {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .configure(|c| c.command_timeout = Duration::from_secs(20))
        .build()
        .await
        .expect("launch Chromium and build a pool")
}

/// Answers `/flaky` with 503 and `Retry-After: 1` the first `failures` times, then 200;
/// anything else is a 404. Returns its URL and the count of `/flaky` requests.
async fn flaky_site(failures: usize) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/flaky", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(0usize));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let hits = counted.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let flaky = request.starts_with(b"GET /flaky ");
                let n = if flaky {
                    let mut h = hits.lock().unwrap();
                    *h += 1;
                    *h
                } else {
                    0
                };
                let head = match (flaky, n <= failures) {
                    (false, _) => "404 Not Found\r\n".to_string(),
                    (true, true) => "503 Service Unavailable\r\nRetry-After: 1\r\n".to_string(),
                    (true, false) => "200 OK\r\n".to_string(),
                };
                let body = "<title>flaky</title>";
                let response = format!(
                    "HTTP/1.1 {head}Content-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_a_503_with_retry_after_twice_then_200_succeeds_on_the_third_attempt() {
    if !support::require_browser() {
        return;
    }
    let (url, hits) = flaky_site(2).await;
    let pool = chromium_pool().await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let policy = RetryPolicy::new(3).backoff(Duration::from_millis(10), Duration::from_millis(10));
    let status = tokio::time::timeout(
        STEP,
        pool.run(Job::new().retry(policy), async move |page| {
            seen.start();
            let nav = page.goto(&url).await?.error_for_status()?;
            Ok(nav.status)
        }),
    )
    .await
    .expect("the job ends")
    .expect("the third attempt gets the page");
    assert_eq!(status, Some(200));
    assert_eq!(*hits.lock().unwrap(), 3);
    let t = attempts.times();
    assert_eq!(t.len(), 3);
    for pair in t.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(1),
            "Retry-After: 1 honoured"
        );
    }
    let c = pool.metrics().await.counters;
    assert_eq!(c.retries_http_status, 2);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_a_refused_connection_is_retried_then_fails_clearly() {
    if !support::require_browser() {
        return;
    }
    // A port nobody listens on: bound, then closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let pool = chromium_pool().await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let policy = RetryPolicy::new(2).backoff(Duration::from_millis(50), Duration::from_millis(50));
    let err = tokio::time::timeout(
        STEP,
        pool.run(Job::new().retry(policy), async move |page| {
            seen.start();
            page.goto(&url).await
        }),
    )
    .await
    .expect("the job ends")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Navigation, "{err}");
    let text = err.to_string();
    assert!(text.contains("net::ERR_CONNECTION_REFUSED"), "{text}");
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    assert_eq!(attempts.times().len(), 3);
    let c = pool.metrics().await.counters;
    assert_eq!(c.retries_navigation, 2);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
